"""How the direct path runs a chain's prompt step, reporting it as LCEL does.

``chains._direct`` streams ``prompt | model | parser`` itself; the prompt step is run
one of three ways (``DirectChain`` decides once per chain):

- a plain template (``lcel.plain_prompt_template``: langchain-core's own chat or text
  template) by ``run_prompt``/``arun_prompt``, which re-do ``BasePromptTemplate.invoke``
  and ``ainvoke`` (LCEL's ``_call_with_config``) without their per-call costs: LCEL
  looks at the formatting function's signature on every call and, async, formats in a
  task of its own and reports the end through another (two tasks and two trips through
  the event loop, 3.4% of a short ``/stream`` request's instructions: BENCHMARKS.md,
  issue 26, fifteenth pass);
- another step that streams as ``Runnable`` does, one ``invoke`` of its whole input
  (``invoked_whole``), by its own ``invoke``/``ainvoke`` (``invoked``), without the two
  generator layers of a stream around it;
- anything else streamed, as LCEL streams it (in ``chains._direct``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.config import (
    ensure_config,
    get_async_callback_manager_for_config,
    get_callback_manager_for_config,
    patch_config,
    set_config_context,
)

from maritaca.run_end import report_end

from . import _lcel_private as lcel

__all__ = ["arun_prompt", "invoked", "invoked_whole", "run_prompt"]


def invoked_whole(step: Runnable[Any, Any]) -> bool:
    """Whether ``step`` streams a single value in by ``invoke``-ing it, as ``Runnable``'s
    own ``transform``/``stream`` (and their async twins) do."""
    kind = type(step)
    return all(getattr(kind, name) is getattr(Runnable, name)
               for name in ("transform", "stream", "atransform", "astream"))


def invoked(invoke: Callable[[Any, RunnableConfig], Any], value: Any,
            config: RunnableConfig) -> Any:
    """``invoke(value, config)`` (a step's ``invoke``), failing as the step's
    ``transform`` would: a ``StopIteration`` it raises becomes the ``RuntimeError`` a
    generator turns it into (``ainvoke`` is a coroutine, which does the same by itself)."""
    try:
        return invoke(value, config)
    except StopIteration as stop:
        raise RuntimeError("generator raised StopIteration") from stop


def run_prompt(prompt: Any, values: dict[str, str], config: RunnableConfig) -> Any:
    """``prompt.invoke(values, config)`` for a template (``lcel.plain_prompt_template``),
    as ``BasePromptTemplate.invoke`` and LCEL's ``_call_with_config`` run it, without
    their look at the formatting function's signature."""
    config = ensure_config(config)
    if prompt.metadata:
        config["metadata"] = {**config["metadata"], **prompt.metadata}
    if prompt.tags:
        config["tags"] += prompt.tags
    run = get_callback_manager_for_config(config).on_chain_start(
        lcel.prompt_serialized(prompt), values, run_type="prompt",
        name=config.get("run_name") or prompt.get_name(), run_id=config.pop("run_id", None))
    try:
        with set_config_context(patch_config(config, callbacks=run.get_child())) as context:
            output = context.run(lcel.format_prompt, prompt, values)
    except BaseException as error:
        run.on_chain_error(error)
        raise
    run.on_chain_end(output)
    return output


async def arun_prompt(prompt: Any, values: dict[str, str], config: RunnableConfig) -> Any:
    """``run_prompt`` for async runs, as ``ainvoke`` runs it. A plain template's async
    formatting is its sync formatting, run here in place (LCEL gives it a task), failing
    as the coroutine would; the end is reported in place when it can be (``report_end``)."""
    config = ensure_config(config)
    if prompt.metadata:
        config["metadata"].update(prompt.metadata)
    if prompt.tags:
        config["tags"].extend(prompt.tags)
    run = await get_async_callback_manager_for_config(config).on_chain_start(
        lcel.prompt_serialized(prompt), values, run_type="prompt",
        name=config.get("run_name") or prompt.get_name(), run_id=config.pop("run_id", None))
    try:
        with set_config_context(patch_config(config, callbacks=run.get_child())) as context:
            output = context.run(_formatted_as_coroutine, prompt, values)
    except BaseException as error:
        await report_end(run.on_chain_error, error)
        raise
    await report_end(run.on_chain_end, output)
    return output


def _formatted_as_coroutine(prompt: Any, values: dict[str, str]) -> Any:
    """``lcel.format_prompt``, failing as the template's ``ainvoke`` coroutine would: a
    ``StopIteration`` becomes the ``RuntimeError`` a coroutine turns it into."""
    try:
        return lcel.format_prompt(prompt, values)
    except StopIteration as stop:
        raise RuntimeError("coroutine raised StopIteration") from stop
