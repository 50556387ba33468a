"""Make a JSON value that is valid against a JSON schema (tool arguments, json_schema replies).

Covers what tool and structured-output schemas use: types, enums, consts, defaults,
nested objects and arrays, ``$ref`` into ``$defs``/``definitions``, ``anyOf``/``oneOf``
(first non-null branch), ``allOf`` (merged), string formats and numeric bounds. Not a
general solver: ``pattern`` and ``not`` are ignored.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["sample_json"]

_MAX_DEPTH = 12
_FORMATS = {
    "date-time": "2026-01-06T12:00:00Z",
    "date": "2026-01-06",
    "time": "12:00:00Z",
    "email": "sabia@example.com",
    "uri": "https://example.com/sabia",
    "url": "https://example.com/sabia",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "ipv4": "127.0.0.1",
    "hostname": "example.com",
}


def sample_json(schema: Mapping[str, Any] | bool) -> Any:
    """A deterministic value valid against ``schema``.

    >>> sample_json({"type": "object", "properties": {"n": {"type": "integer", "maximum": 3}},
    ...              "required": ["n"]})
    {'n': 3}
    """
    return _Sampler(schema if isinstance(schema, Mapping) else {}).value(schema, "", 0, 0)


class _Sampler:
    def __init__(self, root: Mapping[str, Any]) -> None:
        self.root = root

    def resolve(self, schema: Mapping[str, Any]) -> Mapping[str, Any]:
        seen = 0
        while "$ref" in schema and seen < 32:
            ref = schema["$ref"]
            target: Any = self.root
            if isinstance(ref, str) and ref.startswith("#"):
                for part in ref.lstrip("#").split("/"):
                    if part:
                        part = part.replace("~1", "/").replace("~0", "~")
                        target = target.get(part, {}) if isinstance(target, Mapping) else {}
            else:
                target = {}
            rest = {k: v for k, v in schema.items() if k != "$ref"}
            schema = {**target, **rest} if isinstance(target, Mapping) else rest
            seen += 1
        return schema

    def value(self, schema: Any, key: str, depth: int, variant: int) -> Any:
        if schema is True or not isinstance(schema, Mapping):
            return f"{key or 'texto'} de exemplo"
        schema = self.resolve(schema)
        if "const" in schema:
            return schema["const"]
        if "default" in schema:
            return schema["default"]
        if isinstance(schema.get("enum"), list) and schema["enum"]:
            enum = schema["enum"]
            return enum[variant % len(enum)]
        for combo in ("anyOf", "oneOf"):
            options = schema.get(combo)
            if isinstance(options, list) and options:
                resolved = [self.resolve(o) if isinstance(o, Mapping) else o for o in options]
                pick = next((o for o in resolved if not _is_null(o)), resolved[0])
                base = {k: v for k, v in schema.items() if k != combo}
                chosen = {**base, **pick} if isinstance(pick, Mapping) else pick
                return self.value(chosen, key, depth, variant)
        if isinstance(schema.get("allOf"), list):
            merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
            for part in schema["allOf"]:
                part = self.resolve(part) if isinstance(part, Mapping) else {}
                for k, v in part.items():
                    if k in ("properties", "$defs", "definitions") and isinstance(v, Mapping):
                        merged[k] = {**merged.get(k, {}), **v}
                    elif k == "required":
                        merged[k] = [*merged.get(k, []), *v]
                    else:
                        merged.setdefault(k, v)
            return self.value(merged, key, depth, variant)
        kind = schema.get("type")
        if isinstance(kind, list):
            kind = next((t for t in kind if t != "null"), "null")
        if kind is None:
            if "properties" in schema or "additionalProperties" in schema:
                kind = "object"
            elif "items" in schema or "prefixItems" in schema:
                kind = "array"
            else:
                kind = "string"
        if kind == "object":
            return self.object(schema, depth, variant)
        if kind == "array":
            return self.array(schema, key, depth)
        if kind == "integer":
            return _integer(schema, variant)
        if kind == "number":
            return _number(schema, variant)
        if kind == "boolean":
            return variant % 2 == 0
        if kind == "null":
            return None
        return _string(schema, key, variant)

    def object(self, schema: Mapping[str, Any], depth: int, variant: int) -> dict[str, Any]:
        props = schema.get("properties") or {}
        required = list(schema.get("required") or [])
        names = required if depth >= _MAX_DEPTH else [*props, *(r for r in required if r not in props)]
        out = {name: self.value(props.get(name, {}), name, depth + 1, variant) for name in names}
        extra = schema.get("additionalProperties")
        want = int(schema.get("minProperties") or 0)
        i = 0
        while len(out) < want:
            name = f"campo_{i}"
            i += 1
            if name not in out:
                sub = extra if isinstance(extra, Mapping) else {}
                out[name] = self.value(sub, name, depth + 1, variant)
        return out

    def array(self, schema: Mapping[str, Any], key: str, depth: int) -> list[Any]:
        prefix = schema.get("prefixItems")
        items = schema.get("items", {})
        if isinstance(items, list):  # draft-4 tuple form
            prefix, items = items, schema.get("additionalItems", {})
        low = int(schema.get("minItems") or 0)
        high = schema.get("maxItems")
        count = max(low, 1 if depth < _MAX_DEPTH else 0, len(prefix or ()))
        if high is not None:
            count = min(count, int(high))
        out = []
        for i in range(count):
            sub = prefix[i] if prefix and i < len(prefix) else items
            out.append(self.value(sub, key, depth + 1, i))
        return out


def _is_null(schema: Any) -> bool:
    return isinstance(schema, Mapping) and (
        schema.get("type") == "null" or schema.get("const", 0) is None
    )


def _string(schema: Mapping[str, Any], key: str, variant: int) -> str:
    fmt = schema.get("format")
    text = _FORMATS.get(fmt, "") if isinstance(fmt, str) else ""
    if not text:
        text = f"{key or 'texto'} de exemplo, ação"
        if variant:
            text += f" {variant}"
    low, high = int(schema.get("minLength") or 0), schema.get("maxLength")
    if len(text) < low:
        text += "x" * (low - len(text))
    if high is not None:
        text = text[: int(high)]
    return text


def _integer(schema: Mapping[str, Any], variant: int) -> int:
    low, high = -math.inf, math.inf
    if isinstance(schema.get("minimum"), int | float):
        low = math.ceil(schema["minimum"])
    if _num(schema.get("exclusiveMinimum")):
        low = max(low, math.floor(schema["exclusiveMinimum"]) + 1)
    if isinstance(schema.get("maximum"), int | float):
        high = math.floor(schema["maximum"])
    if _num(schema.get("exclusiveMaximum")):
        high = min(high, math.ceil(schema["exclusiveMaximum"]) - 1)
    value = int(min(max(42 + variant, low), high))
    mult = schema.get("multipleOf")
    if isinstance(mult, int) and mult > 0 and value % mult:
        up = value + mult - value % mult
        value = up if up <= high else value - value % mult
    return value


def _number(schema: Mapping[str, Any], variant: int) -> float | int:
    mult: Any = schema.get("multipleOf")
    if _num(mult) and float(mult).is_integer():
        return _integer({**schema, "multipleOf": int(mult)}, variant)
    low: float = schema.get("minimum", -math.inf)
    high: float = schema.get("maximum", math.inf)
    ex_low = schema.get("exclusiveMinimum") if _num(schema.get("exclusiveMinimum")) else None
    ex_high = schema.get("exclusiveMaximum") if _num(schema.get("exclusiveMaximum")) else None
    if ex_low is not None:
        low = max(low, ex_low)
    if ex_high is not None:
        high = min(high, ex_high)
    value: float = 3.5 + variant
    excluded = (ex_low, ex_high)
    if _num(mult):
        if low <= 0 <= high and 0 not in excluded:
            return 0
        k = math.floor(low / mult) + 1 if math.isfinite(low) else math.ceil(high / mult) - 1
        step: float = k * mult
        return step
    if low <= value <= high and value not in excluded:
        return value
    if math.isfinite(low) and math.isfinite(high):
        return (low + high) / 2
    return low + 1 if math.isfinite(low) else high - 1


def _num(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
