"""The chains there are: the built-in files, and every ``*.yaml`` of the chain directories.

A chain is one YAML file (``chain_file``); its name is the file's name. ``CHAINS`` holds
the built-ins (``prompts/story.yaml``, ``qa.yaml``, ``summarize.yaml``, ``chat.yaml``);
``chain_specs(dirs)`` adds those of ``dirs`` (a file may replace a built-in of the same
name: the log says so). Each ``ChainSpec`` is what every face needs to know of a chain:
name, title, description, example, input type, main field, version (a short hash of the
file) and output kind; ``spec.build(model)`` makes its runnable::

    from chains import chain_specs
    for spec in chain_specs(["minhas-cadeias"]).values():
        print(spec.name, spec.version, spec.title)

``load_chain(name_or_path)`` gives one chain's runnable (``MARITACA_CHAINS_DIR`` is
searched like the server searches it).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import partial
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Literal, Protocol

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import Runnable
from pydantic import BaseModel, ValidationError

from .chain_file import ChainFile, ChainFileError, Problem, read_chain_file
from .chain_runtime import build_chain, input_model

__all__ = ["BUILTIN_NAMES", "CHAINS", "CHAINS_DIR_VARIABLE", "ChainBuilder", "ChainSpec",
           "build_chains", "builtin_dir", "chain_specs", "load_chain", "load_spec"]

logger = logging.getLogger("chains")

BUILTIN_NAMES = ("story", "qa", "summarize", "chat")
CHAINS_DIR_VARIABLE = "MARITACA_CHAINS_DIR"
_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
# the server's own top-level paths: a chain of that name would shadow or be shadowed
RESERVED_NAMES = frozenset({"docs", "docs-assets", "healthz", "livez", "readyz", "login",
                            "logout", "metrics", "ui", "v1", "openapi", "static"})


class ChainBuilder(Protocol):
    """What every chain builder is: a model (default ``ChatMaritaca()``) and the model's
    context size in tokens (default: the catalogue's), to a streaming chain."""

    def __call__(self, model: BaseChatModel | None = None, *,
                 context_tokens: int | None = None) -> Runnable[Any, Any]: ...


@dataclass(frozen=True)
class ChainSpec:
    """One chain: ``name`` is its route; ``main_field`` the input field a plain text
    fills; title, description and example are for people (pt-BR); ``version`` is a
    short hash of its file; ``output_kind`` is ``text`` or ``json``."""

    name: str
    title: str
    description: str
    input_type: type[BaseModel]
    build: ChainBuilder
    example: dict[str, Any] = field(default_factory=dict)
    main_field: str = ""
    version: str = ""
    output_kind: Literal["text", "json"] = "text"
    source: str = ""
    file: ChainFile | None = None


def builtin_dir() -> Traversable:
    """The folder of the built-in chain files, inside the installed ``chains`` package."""
    return resources.files("chains") / "prompts"


def spec_of(name: str, file: ChainFile) -> ChainSpec:
    """The spec of the chain ``file`` describes, served as ``name``; its example must be
    a valid input (ChainFileError otherwise)."""
    if not _NAME.match(name):
        raise ChainFileError(file.source, [Problem(
            key="", message=f"{name!r} cannot name a chain (it becomes the route /{name}): "
                            f"rename the file to lower-case letters, digits, - and _, "
                            f"starting with a letter")])
    if name in RESERVED_NAMES:
        raise ChainFileError(file.source, [Problem(
            key="", message=f"/{name} is one of the server's own routes: rename the file "
                            f"(e.g. {name}-chain.yaml)")])
    input_type = input_model(name, file)
    try:
        input_type.model_validate(file.example)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(map(str, ("example", *first["loc"])))
        raise ChainFileError(file.source, [Problem(
            key=where, message=f"the example is not a valid input ({first['msg']}): "
                               f"fix it to match inputs")]) from None
    return ChainSpec(name=name, title=file.title, description=file.description,
                     input_type=input_type,
                     build=partial(build_chain, name, file, input_type=input_type),
                     example=dict(file.example), main_field=file.main_field,
                     version=file.version, output_kind=file.output_kind,
                     source=file.source, file=file)


def load_spec(path: str | Path | Traversable, name: str | None = None) -> ChainSpec:
    """One chain file's spec, named after the file unless ``name`` is given."""
    file = read_chain_file(path)
    return spec_of(name or Path(str(path)).name.removesuffix(".yaml"), file)


def _builtins() -> dict[str, ChainSpec]:
    return {name: load_spec(builtin_dir() / f"{name}.yaml") for name in BUILTIN_NAMES}


CHAINS: dict[str, ChainSpec] = _builtins()


def _dirs_from_environment() -> list[str]:
    return [d for d in os.environ.get(CHAINS_DIR_VARIABLE, "").split(":") if d]


def chain_specs(dirs: Iterable[str | Path] | None = None) -> dict[str, ChainSpec]:
    """The built-ins and every ``*.yaml`` of ``dirs`` (in order; a later file of the same
    name replaces an earlier one, built-ins included). Raises ChainFileError on the first
    broken file, or a missing directory: nothing is served half-read."""
    specs = dict(CHAINS)
    for directory in dirs or ():
        folder = Path(directory)
        if not folder.is_dir():
            raise ChainFileError(str(folder), [Problem(
                key="", message="no such directory: create it (maritaca-chains new NAME "
                                "--dir DIR) or fix the path")])
        for path in sorted(folder.glob("*.yaml")):
            if path.name.endswith(".cases.yaml"):
                continue  # eval cases beside the chains, not chains
            spec = load_spec(path)
            if spec.name in specs:
                logger.warning("chain file %s replaces the %s chain %s", path,
                               "built-in" if spec.name in CHAINS and specs[spec.name] is
                               CHAINS[spec.name] else "earlier", specs[spec.name].source)
            specs[spec.name] = spec
    return specs


def load_chain(name_or_path: str | Path, model: BaseChatModel | None = None, *,
               chains_dirs: Iterable[str | Path] | None = None,
               context_tokens: int | None = None) -> Runnable[Any, Any]:
    """The runnable of one chain: a ``*.yaml`` path, or a name among the built-ins and
    ``chains_dirs`` (default: ``MARITACA_CHAINS_DIR``, ``:``-separated), on ``model``
    (default ``ChatMaritaca()``) - the same runnable the server serves."""
    text = str(name_or_path)
    if text.endswith((".yaml", ".yml")):
        spec = load_spec(Path(text))
    else:
        specs = chain_specs(_dirs_from_environment() if chains_dirs is None else chains_dirs)
        if text not in specs:
            raise KeyError(f"no chain named {text!r}: the chains are {sorted(specs)} "
                           f"(add a directory with {CHAINS_DIR_VARIABLE} or chains_dirs)")
        spec = specs[text]
    return spec.build(model, context_tokens=context_tokens)


def build_chains(model: BaseChatModel | None = None, *, context_tokens: int | None = None,
                 specs: dict[str, ChainSpec] | None = None) -> dict[str, Runnable[Any, Any]]:
    """Every chain of ``specs`` (default: the built-ins) on ``model`` (default
    ``ChatMaritaca()``); ``context_tokens`` overrides the model's context size (e.g.
    4096 for the embedded backend)."""
    return {name: spec.build(model, context_tokens=context_tokens)
            for name, spec in (CHAINS if specs is None else specs).items()}
