"""Deterministic reply text, tokenisation and token counts for the emulator.

Everything here is a pure function of its arguments (no ``hash()``, no clocks), so a
reply is the same in every process and every run.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Any

__all__ = [
    "cut_at_stop",
    "derived_tokens",
    "message_text",
    "prompt_token_counts",
    "reply_seed",
    "resolve_model",
    "split_fragments",
    "tokenize",
]

# Sentences with the accents a client must pass through unharmed (ã, ç, é, á, ô, à).
_POOL = (
    "O sabiá canta na palmeira ao amanhecer.",
    "A inteligência artificial ajuda a resumir textos longos.",
    "Em São Paulo, a previsão é de chuva forte à tarde.",
    "Esta é uma resposta gerada pelo emulador da Maritaca.",
    "O coração da cidade bate mais forte durante o carnaval.",
    "Não há informação suficiente para uma conclusão definitiva.",
    "A tradução preserva o sentido e a fluência do original.",
    "Os modelos Sabiá foram treinados com muito texto em português.",
    "Você pode pedir uma explicação mais detalhada a qualquer momento.",
    "A função retorna a soma dos elementos da lista.",
    "Bom dia! Como posso ajudar você hoje?",
    "A região amazônica abriga uma enorme diversidade de espécies.",
    "O pão de queijo é típico de Minas Gerais.",
    "Avô e avó contaram histórias até o anoitecer.",
)
_POOL_WORDS = tuple(tuple(s.split()) for s in _POOL)
_TOKEN_RE = re.compile(r"\s*\S+")
_DATED_RE = re.compile(r"-\d{4}-\d{2}-\d{2}$")


def message_text(message: Mapping[str, Any]) -> str:
    """The text of an OpenAI-format message: string content, text parts, tool-call args."""
    content = message.get("content")
    parts: list[str] = []
    if isinstance(content, str):
        parts.append(content)
    elif isinstance(content, list):
        parts.extend(str(p.get("text", "")) for p in content if isinstance(p, dict))
    for call in message.get("tool_calls") or ():
        if isinstance(call, dict):
            fn = call.get("function") or {}
            parts.append(f"{fn.get('name', '')} {fn.get('arguments', '')}")
    return " ".join(parts)


def reply_seed(messages: Sequence[Mapping[str, Any]]) -> int:
    """Seed of the derived reply: a stable hash of the last user message's text.

    With no user message, all messages are hashed instead.
    """
    users = [m for m in messages if isinstance(m, Mapping) and m.get("role") == "user"]
    if users:
        key = message_text(users[-1])
    else:
        key = json.dumps(list(messages), sort_keys=True, ensure_ascii=False, default=str)
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")


@lru_cache(maxsize=256)
def derived_tokens(seed: int, n_tokens: int) -> tuple[str, ...]:
    """``n_tokens`` words of Portuguese picked by ``seed``; every word but the first
    carries its leading space, so ``"".join(tokens)`` is the reply text."""
    rng = random.Random(seed)
    words: list[str] = []
    while len(words) < n_tokens:
        words.extend(_POOL_WORDS[rng.randrange(len(_POOL_WORDS))])
    del words[n_tokens:]
    return tuple(w if i == 0 else " " + w for i, w in enumerate(words))


def tokenize(text: str) -> list[str]:
    """Split a fixed reply into word tokens (leading whitespace kept) that join back exactly."""
    tokens = _TOKEN_RE.findall(text)
    rest = len("".join(tokens))
    if rest < len(text):  # trailing whitespace
        if tokens:
            tokens[-1] += text[rest:]
        else:
            tokens = [text]
    return tokens


def cut_at_stop(tokens: Sequence[str], stop: Iterable[str]) -> list[str]:
    """Tokens up to (not including) the first occurrence of any stop string; the token
    the stop string starts in is kept partially."""
    text = "".join(tokens)
    cut = min((i for s in stop if s and (i := text.find(s)) >= 0), default=-1)
    if cut < 0:
        return list(tokens)
    out: list[str] = []
    pos = 0
    for tok in tokens:
        if pos + len(tok) <= cut:
            out.append(tok)
            pos += len(tok)
            continue
        if cut > pos:
            out.append(tok[: cut - pos])
        break
    return out


def split_fragments(text: str) -> list[str]:
    """Split a JSON string into 3-6 fragments for streaming (fewer when it is shorter)."""
    if not text:
        return []
    parts = min(max(3, min(6, len(text) // 12)), len(text))
    size, extra = divmod(len(text), parts)
    out, pos = [], 0
    for i in range(parts):
        end = pos + size + (1 if i < extra else 0)
        out.append(text[pos:end])
        pos = end
    return out


def prompt_token_counts(messages: Sequence[Mapping[str, Any]]) -> list[int]:
    """Cumulative prompt tokens after each message: whitespace words + 3 per message."""
    total, out = 0, []
    for m in messages:
        total += len(message_text(m).split()) + 3
        out.append(total)
    return out


def resolve_model(requested: str, suffix: str) -> str:
    """The name the server reports: ``sabia-4`` -> ``sabia-4-2026-01-06`` (dated names kept)."""
    if not suffix or _DATED_RE.search(requested):
        return requested
    return requested + suffix
