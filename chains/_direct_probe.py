"""The check, run once at import, that a chain's direct stream is LCEL's stream.

``chains._direct`` re-does what LCEL's streaming transforms report, from LCEL internals a
langchain-core release may change without notice (``chains._lcel_private``).
``probe_matches`` builds probe ``prompt | model | parser`` chains on a fake chat model,
streams it the direct way and LCEL's way, sync and async, on valid and on invalid input
(refused before the steps, or by the template),
with each kind of prompt step the chains use, and compares every chunk and every callback (names, run tree, tags, inputs, outputs).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable, RunnableConfig, RunnableLambda

from maritaca.run_probe import Recorder, plain, reports_match

from ._parsers import InlineStrOutputParser

__all__ = ["prepare_probe", "probe_matches", "probe_prompt", "probe_values"]

_VALID, _INVALID = {"topic": "Brasil"}, {"topic": ""}  # the second one fails in prepare
_NO_TOPIC = {"assunto": "Brasil"}  # passes prepare, fails the template's own validation


def probe_values(*, valid: bool = True) -> dict[str, str]:
    """A probe chain's input: one its ``prepare_probe`` takes, or one it refuses."""
    return dict(_VALID if valid else _INVALID)


def prepare_probe(value: Any, config: RunnableConfig) -> tuple[dict[str, str], RunnableConfig]:
    """A probe chain's ``prepare``: refuses an empty topic (``ValueError``); a missing
    one is left to the template."""
    if not value.get("topic", "(the template asks)"):
        raise ValueError("topic is empty")
    return value, config


def probe_prompt() -> Runnable[Any, Any]:
    """A probe chain's template prompt."""
    return ChatPromptTemplate.from_messages([("human", "{topic}")])


def _prompts() -> tuple[Runnable[Any, Any], ...]:
    """A prompt step of each kind the chains use: a template (run as one ``invoke``) and
    a lambda that picks one (a streaming step of its own)."""
    template = probe_prompt()
    return template, RunnableLambda(lambda values: template.invoke(values),
                                    name="ChatPromptTemplate")


def _runs_of(direct_chain: type[Any]) -> Callable[[Callable[..., list[Any]]], list[Any]]:
    def runs(stream: Callable[..., list[Any]]) -> list[Any]:
        """What ``stream(chain, input, config)`` yields and reports, for valid and for
        invalid input."""
        seen = []
        template, lambda_prompt = _prompts()
        # invalid input fails before any step runs, a missing topic in the prompt step:
        # one prompt kind shows each
        for value, prompt in ((_VALID, template), (_VALID, lambda_prompt),
                              (_INVALID, template), (_NO_TOPIC, template)):
            model = GenericFakeChatModel(messages=iter([AIMessage("Era uma vez no Brasil")]))
            inner = prompt | model | InlineStrOutputParser()
            chain = direct_chain(name="probe", inner=inner, prepare=prepare_probe)
            recorder = Recorder()
            config = {"callbacks": [recorder], "tags": ["probe"], "metadata": {"probe": 1}}
            chunks: list[Any] = []
            try:
                chunks.extend(stream(chain, value, config))
            except (ValueError, KeyError) as error:
                chunks.append(error)
            seen.append(plain((chunks, recorder.events)))
        return seen

    return runs


def probe_matches(direct_chain: type[Any]) -> bool:
    """Whether ``direct_chain``'s ``_direct_stream``/``_direct_astream`` report exactly
    what LCEL's ``RunnableLambda.stream``/``astream`` of the same chain report."""
    return reports_match(
        _runs_of(direct_chain),
        lambda chain, value, config: chain._direct_stream(value, config),
        lambda chain, value, config: RunnableLambda.stream(chain, value, config),
        lambda chain, value, config: chain._direct_astream(value, config),
        lambda chain, value, config: RunnableLambda.astream(chain, value, config))
