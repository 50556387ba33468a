"""The served chains with their conversations: every ``history: thread`` chain runs in
the thread its config names (``threaded_chain``)."""

from __future__ import annotations

from typing import Any

from langchain_core.runnables import Runnable

from chains import ChainSpec
from maritaca.models import get_model_info

from .chain import threaded_chain
from .store import ThreadStore

__all__ = ["DEFAULT_CONTEXT_TOKENS", "with_threads"]

DEFAULT_CONTEXT_TOKENS = 8_192  # a model outside the catalogue


def with_threads(chains: dict[str, Runnable[Any, Any]], specs: dict[str, ChainSpec],
                 store: ThreadStore, *, history_tokens: int | None, model_name: str,
                 context_tokens: int | None) -> dict[str, Runnable[Any, Any]]:
    """``chains``, its conversation chains wrapped to run in threads of ``store``."""
    info = get_model_info(model_name)
    context = context_tokens or (info.context_length if info else DEFAULT_CONTEXT_TOKENS)
    out = dict(chains)
    for name, spec in specs.items():
        if spec.file is None or spec.file.history != "thread" or name not in chains:
            continue
        out[name] = threaded_chain(chains[name], store, input_type=spec.input_type,
                                   main_field=spec.main_field, name=name,
                                   history_tokens=history_tokens, context_tokens=context,
                                   answer_tokens=spec.file.largest_budget())
    return out
