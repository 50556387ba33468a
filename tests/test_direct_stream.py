"""The fast streaming paths report exactly what langchain-core's would.

``ChatMaritaca.stream``/``astream`` (``maritaca._model_run``) and a chain's
``stream``/``astream`` (``chains._direct``) skip langchain-core's per-token layers.
Callback handlers, tracers and ``astream_events`` clients must not see the difference:
each test runs the fast path and langchain-core's own code side by side on the emulator
and compares every callback (names, run tree, tags, metadata, inputs, outputs, tokens)
and every chunk, sync and async.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any
from uuid import UUID

import pytest
from conftest import emulator_model, wait_disconnected
from langchain_core.callbacks import AsyncCallbackHandler, BaseCallbackHandler
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder, PromptTemplate
from langchain_core.runnables import RunnableLambda

from chains import _lcel_private, build_qa_chain, build_story_chain
from chains._direct import DirectChain
from chains._parsers import InlineStrOutputParser
from maritaca.testing import MaritacaEmulator, Scenario


class Recorder(BaseCallbackHandler):
    """Every callback, with run ids numbered in order of appearance."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []
        self._ids: dict[UUID, int] = {}

    def _add(self, event: str, run_id: UUID, parent_run_id: UUID | None, **data: Any) -> None:
        parent = None if parent_run_id is None else self._ids.setdefault(parent_run_id,
                                                                         len(self._ids))
        self.events.append((event, self._ids.setdefault(run_id, len(self._ids)), parent,
                            data))

    def on_chain_start(self, serialized: Any, inputs: Any, *, run_id: UUID,
                       parent_run_id: UUID | None = None, **kw: Any) -> None:
        self._add("chain_start", run_id, parent_run_id, inputs=inputs, **kw)

    def on_chain_end(self, outputs: Any, *, run_id: UUID, parent_run_id: UUID | None = None,
                     **kw: Any) -> None:
        self._add("chain_end", run_id, parent_run_id, outputs=outputs, **kw)

    def on_chain_error(self, error: BaseException, *, run_id: UUID,
                       parent_run_id: UUID | None = None, **kw: Any) -> None:
        self._add("chain_error", run_id, parent_run_id, error=repr(error), **kw)

    def on_chat_model_start(self, serialized: Any, messages: Any, *, run_id: UUID,
                            parent_run_id: UUID | None = None, **kw: Any) -> None:
        self._add("chat_model_start", run_id, parent_run_id, serialized=serialized,
                  messages=messages, **kw)

    def on_llm_new_token(self, token: Any, *, run_id: UUID, parent_run_id: UUID | None = None,
                         **kw: Any) -> None:
        self._add("token", run_id, parent_run_id, token=token, **kw)

    def on_llm_end(self, response: Any, *, run_id: UUID, parent_run_id: UUID | None = None,
                   **kw: Any) -> None:
        self._add("llm_end", run_id, parent_run_id, response=response, **kw)

    def on_llm_error(self, error: BaseException, *, run_id: UUID,
                     parent_run_id: UUID | None = None, **kw: Any) -> None:
        self._add("llm_error", run_id, parent_run_id, error=repr(error), **kw)


class AsyncTokens(AsyncCallbackHandler):
    """An async handler that is not run inline: langchain-core gathers it per token."""

    def __init__(self) -> None:
        self.tokens: list[Any] = []

    async def on_llm_new_token(self, token: Any, **kwargs: Any) -> None:
        self.tokens.append(token)


def normalised(value: Any) -> str:
    """``value``'s repr without what differs between two emulators and two runs."""
    text = repr(value)
    text = re.sub(r"lc_run--[0-9a-f-]{36}", "lc_run--ID", text)
    text = re.sub(r"chatcmpl-[0-9a-f]+", "chatcmpl-ID", text)
    text = re.sub(r"UUID\('[0-9a-f-]{36}'\)", "UUID(ID)", text)
    text = re.sub(r" at 0x[0-9a-f]+>", " at ADDRESS>", text)  # a fake model's iterator
    return re.sub(r"127\.0\.0\.1:\d+", "HOST", text)


def _model_run(fast: bool, sync: bool, scenario: Scenario | None,
               reply_tokens: int = 8) -> tuple[str, str, list[Any], str]:
    """One model stream, the fast way or langchain-core's, sync or async (on a loop of
    its own): its chunks, callbacks, async handler's tokens and error."""
    with MaritacaEmulator(reply_tokens=reply_tokens) as emulator:  # fresh: same ids
        if scenario is not None:
            emulator.enqueue(scenario)
        model = emulator_model(emulator)
        recorder, tokens = Recorder(), AsyncTokens()
        config = {"callbacks": [recorder, tokens], "tags": ["t"], "metadata": {"m": 1}}
        chunks: list[Any] = []
        error = ""
        try:
            if sync:
                stream = (model.stream("Olá", config) if fast
                          else BaseChatModel.stream(model, "Olá", config))
                chunks.extend(stream)
            else:
                astream = (model.astream("Olá", config) if fast
                           else BaseChatModel.astream(model, "Olá", config))
                chunks.extend(asyncio.run(_collect(astream)))
        except Exception as exc:  # noqa: BLE001 - the error is part of what is compared
            error = repr(exc)
        return normalised(chunks), normalised(recorder.events), tokens.tokens, normalised(error)


async def _collect(stream: Any) -> list[Any]:
    return [item async for item in stream]


@pytest.mark.parametrize("sync", [True, False], ids=["sync", "async"])
@pytest.mark.parametrize("scenario", [None, Scenario.drop(after_chunks=3),
                                      Scenario.unauthorized(),
                                      Scenario.error_event(after_chunks=2)],
                         ids=["ok", "broken-off", "401", "error-event"])
def test_model_stream_reports_what_langchain_core_reports(
        scenario: Scenario | None, sync: bool) -> None:
    fast = _model_run(True, sync, scenario)
    reference = _model_run(False, sync, scenario)
    assert fast == reference
    chunks, events, tokens, error = fast
    assert ("llm_error" in events) == (error != normalised(""))
    if scenario is None:
        assert len(tokens) == 9  # eight tokens and the closing chunk's empty one


@pytest.mark.parametrize("sync", [True, False], ids=["sync", "async"])
def test_a_long_answer_adds_up_to_langchain_cores_result(sync: bool) -> None:
    """The direct run adds its chunks up a batch at a time: the same ``on_llm_end``."""
    fast = _model_run(True, sync, None, reply_tokens=300)
    assert fast == _model_run(False, sync, None, reply_tokens=300)
    assert fast[1].count("'llm_end'") == 1 and len(fast[2]) == 301


def _chain_run(build: Any, value: dict[str, str], fast: bool, sync: bool,
               scenario: Scenario | None = None) -> tuple[str, str]:
    """One chain stream, the direct way or LCEL's, sync or async: chunks and callbacks."""
    with MaritacaEmulator(reply_tokens=8) as emulator:
        if scenario is not None:
            emulator.enqueue(scenario)
        chain = build(emulator_model(emulator))
        recorder = Recorder()
        config = {"callbacks": [recorder], "tags": ["t"], "metadata": {"m": 1},
                  "run_name": "named"}
        chunks: list[Any] = []
        try:
            if sync:
                chunks.extend(chain.stream(value, config) if fast
                              else RunnableLambda.stream(chain.bound, value, config))
            else:
                chunks.extend(asyncio.run(_collect(
                    chain.astream(value, config) if fast
                    else RunnableLambda.astream(chain.bound, value, config))))
        except Exception as exc:  # noqa: BLE001 - the error is part of what is compared
            chunks.append(repr(exc))
        return normalised(chunks), normalised(recorder.events)


both_ways = pytest.mark.parametrize("sync", [True, False], ids=["sync", "async"])


@both_ways
@pytest.mark.parametrize("scenario", [None, Scenario.drop(after_chunks=3),
                                      Scenario.server_error()],
                         ids=["ok", "broken-off", "500"])
def test_chain_stream_has_lcels_run_tree(scenario: Scenario | None, sync: bool) -> None:
    fast = _chain_run(build_story_chain, {"topic": "Brasil"}, True, sync, scenario)
    assert fast == _chain_run(build_story_chain, {"topic": "Brasil"}, False, sync, scenario)
    chunks, events = fast
    if scenario is not None:  # the failure reaches the runs that had started
        assert events.count("'chain_error'") == (3 if "drop" in repr(scenario) else 2)
        return
    # the chain, its sequence, prompt, model and parser: five runs, as LCEL reports them
    for name in ("'named'", "'RunnableSequence'", "'ChatPromptTemplate'", "'ChatMaritaca'",
                 "'InlineStrOutputParser'", "'seq:step:3'"):
        assert name in events


@both_ways
def test_invalid_input_fails_the_run_as_lcel_does(sync: bool) -> None:
    fast = _chain_run(build_story_chain, {"topic": "   "}, True, sync)
    assert fast == _chain_run(build_story_chain, {"topic": "   "}, False, sync)
    assert "chain_error" in fast[1] and "topic" in fast[0]


@both_ways
def test_a_prompt_step_that_streams_has_lcels_run_tree(sync: bool) -> None:
    """Q&A picks its prompt in a lambda, a streaming step of its own in LCEL (its run
    starts before its input is known): the direct run reports it the same way."""
    value = {"question": "Quem escreveu Dom Casmurro?", "context": "Machado de Assis."}
    fast = _chain_run(build_qa_chain, value, True, sync)
    assert fast == _chain_run(build_qa_chain, value, False, sync)
    assert "'defers_inputs': False" in fast[1] and "chain_error" not in fast[1]


class _ShoutingPrompt(ChatPromptTemplate):
    """A template whose own ``invoke`` changes its input: the direct path must call it."""

    def invoke(self, input: Any, config: Any = None, **kwargs: Any) -> Any:
        return super().invoke({"topic": input["topic"].upper()}, config, **kwargs)

    async def ainvoke(self, input: Any, config: Any = None, **kwargs: Any) -> Any:
        return await super().ainvoke({"topic": input["topic"].upper()}, config, **kwargs)


class _StoppingPrompt(ChatPromptTemplate):
    def invoke(self, input: Any, config: Any = None, **kwargs: Any) -> Any:
        raise StopIteration

    async def ainvoke(self, input: Any, config: Any = None, **kwargs: Any) -> Any:
        raise StopIteration


def _template_run(prompt: ChatPromptTemplate, direct: bool, sync: bool) -> tuple[str, str]:
    model = GenericFakeChatModel(messages=iter([AIMessage("Era uma vez no Brasil")]))
    chain = DirectChain(name="c", inner=prompt | model | InlineStrOutputParser(),
                        prepare=lambda value, config: (value, config))
    recorder = Recorder()
    config: Any = {"callbacks": [recorder], "tags": ["t"]}
    chunks: list[Any] = []
    try:
        if sync:
            chunks.extend(chain.stream({"topic": "Brasil"}, config) if direct
                          else RunnableLambda.stream(chain, {"topic": "Brasil"}, config))
        else:
            chunks.extend(asyncio.run(_collect(
                chain.astream({"topic": "Brasil"}, config) if direct
                else RunnableLambda.astream(chain, {"topic": "Brasil"}, config))))
    except Exception as exc:  # noqa: BLE001 - the error is part of what is compared
        chunks.append(repr(exc))
    return normalised(chunks), normalised(recorder.events)


@both_ways
@pytest.mark.parametrize("kind", [_ShoutingPrompt, _StoppingPrompt], ids=["own-invoke", "stops"])
def test_a_template_prompt_is_invoked_whole_as_lcel_runs_it(kind: Any, sync: bool) -> None:
    """A template streams by one ``invoke``: the direct path calls it (its own override
    included) and fails as LCEL does, ``StopIteration`` turned into a ``RuntimeError``."""
    prompt = kind.from_messages([("human", "{topic}")])
    direct = _template_run(prompt, True, sync)
    assert direct == _template_run(prompt, False, sync)
    if kind is _ShoutingPrompt:
        assert "BRASIL" in direct[1]
    else:
        assert "RuntimeError" in direct[0] and "'StopIteration()'" not in direct[1]


def _stop() -> str:
    raise StopIteration


_PLAIN_TEMPLATES = {
    # the template's own tags and metadata join the run's
    "tagged": lambda: ChatPromptTemplate.from_messages([("human", "{topic}")]).model_copy(
        update={"tags": ["molde"], "metadata": {"versao": 2}}),
    # the template refuses the input (a variable it needs is missing)
    "refuses": lambda: ChatPromptTemplate.from_messages([("human", "{tema}")]),
    # formatting raises StopIteration (a partial variable's function)
    "stops": lambda: ChatPromptTemplate.from_messages(
        [("human", "{topic} {extra}")]).partial(extra=_stop),
}


@both_ways
@pytest.mark.parametrize("kind", sorted(_PLAIN_TEMPLATES))
def test_a_plain_templates_run_is_lcels(kind: str, sync: bool) -> None:
    """A template that is ``BasePromptTemplate``'s own (most are) is run by the direct
    path itself, without LCEL's task and signature checks: it reports what LCEL
    reports, its failures included."""
    prompt = _PLAIN_TEMPLATES[kind]()
    assert _lcel_private.plain_prompt_template(prompt)
    direct = _template_run(prompt, True, sync)
    assert direct == _template_run(prompt, False, sync)
    chunks, events = direct
    if kind == "tagged":
        assert "'molde'" in events and "'versao': 2" in events and "'Brasil'" in chunks
    elif kind == "refuses":
        assert "KeyError" in chunks and "missing variables" in chunks
    else:
        assert "RuntimeError" in chunks and "chain_error" in events


class _LockedPrompt(ChatPromptTemplate):
    """A template whose async formatting waits, under an anyio lock (as I/O would)."""

    async def aformat_prompt(self, **kwargs: Any) -> Any:
        async with _LOCK[0]:
            await asyncio.sleep(0)
            return self.format_prompt(**kwargs)


_LOCK: list[Any] = []


def test_only_langchains_own_plain_templates_are_run_by_the_direct_path() -> None:
    human = ("human", "{topic}")
    assert _lcel_private.plain_prompt_template(ChatPromptTemplate.from_messages(
        [("system", "Conte histórias."), MessagesPlaceholder("historico"), human]))
    assert _lcel_private.plain_prompt_template(PromptTemplate.from_template("{topic}"))
    image = ChatPromptTemplate.from_messages([("human", [
        {"type": "text", "text": "{topic}"},
        {"type": "image_url", "image_url": "{imagem}"}])])  # formats on a worker thread
    for other in (_LockedPrompt.from_messages([human]), image):
        assert not _lcel_private.plain_prompt_template(other)


async def test_a_template_that_waits_to_format_runs_as_lcel_runs_it() -> None:
    import anyio

    _LOCK[:] = [anyio.Lock()]
    prompt = _LockedPrompt.from_messages([("human", "{topic}")])
    model = GenericFakeChatModel(messages=iter([AIMessage("Era uma vez")]))
    chain = DirectChain(name="c", inner=prompt | model | InlineStrOutputParser(),
                        prepare=lambda value, config: (value, config))
    assert "".join([text async for text in chain.astream({"topic": "Brasil"})]) \
        == "Era uma vez"
    assert not _LOCK[0].locked()


def test_other_shapes_stream_through_lcel() -> None:
    """A chain that is not ``prompt | model | InlineStrOutputParser`` takes LCEL's path."""
    with MaritacaEmulator(reply_tokens=4) as emulator:
        inner = ChatPromptTemplate.from_messages([("human", "{topic}")]) | emulator_model(
            emulator) | StrOutputParser()
        chain = DirectChain(name="plain", inner=inner, prepare=lambda value, config: (
            value, config))
        assert chain._steps is None
        assert chain.stream({"topic": "x"}).gi_code.co_qualname.startswith("RunnableLambda.")
        text = "".join(chain.stream({"topic": "x"}))
        assert text and text == "".join(RunnableLambda.stream(chain, {"topic": "x"}))


async def test_astream_events_sees_every_step() -> None:
    with MaritacaEmulator(reply_tokens=4) as emulator:
        chain = build_story_chain(emulator_model(emulator))
        kinds = [event["event"] async for event in
                 chain.astream_events({"topic": "Brasil"}, version="v2")]
    assert kinds.count("on_chat_model_stream") == 5  # four tokens and the closing chunk
    assert kinds.count("on_parser_stream") == 4 and kinds.count("on_chain_stream") == 8


async def test_leaving_early_closes_the_upstream() -> None:
    with MaritacaEmulator(reply_tokens=400) as emulator:
        emulator.enqueue(Scenario.token_delay(0.01))
        chain = build_story_chain(emulator_model(emulator))
        recorder = Recorder()
        stream = chain.astream({"topic": "Brasil"}, {"callbacks": [recorder]})
        async for _ in stream:
            break
        left = time.monotonic()
        await stream.aclose()
        # every step's run has ended when aclose returns, innermost first, as in a sync run
        ends = [(e[0], e[3].get("error")) for e in recorder.events if "error" in e[0]]
        assert ends == [("chain_error", "GeneratorExit()"), ("llm_error", "GeneratorExit()"),
                        ("chain_error", "GeneratorExit()"), ("chain_error", "GeneratorExit()")]
        await asyncio.to_thread(wait_disconnected, emulator.requests[-1], left)


def test_breaking_out_of_a_sync_chain_stream_closes_the_upstream() -> None:
    """The sync direct path closes every step at once, the model's request included (LCEL's
    sync stream leaves the model's stream to the garbage collector), and reports the
    interruption as LCEL's async stream does: each open run ends in ``GeneratorExit``."""
    with MaritacaEmulator(reply_tokens=400) as emulator:
        emulator.enqueue(Scenario.token_delay(0.01))
        chain = build_story_chain(emulator_model(emulator))
        recorder = Recorder()
        for _ in chain.stream({"topic": "Brasil"}, {"callbacks": [recorder]}):
            break
        wait_disconnected(emulator.requests[-1], time.monotonic())
        assert emulator.requests[-1].chunks_sent < 50
    ends = [(e[0], e[3].get("error")) for e in recorder.events if "error" in e[0]]
    assert ends == [("chain_error", "GeneratorExit()"), ("llm_error", "GeneratorExit()"),
                    ("chain_error", "GeneratorExit()"), ("chain_error", "GeneratorExit()")]


def _lcel_twin(chain: Any) -> Any:
    """The same chain as a plain ``RunnableLambda``: LCEL's stream, for comparison."""
    direct = chain.bound
    return RunnableLambda(direct.func, afunc=direct.afunc, name=direct.name).with_types(
        input_type=chain.custom_input_type, output_type=str)


async def _events(build: Any, lcel: bool, **filters: Any) -> str:
    with MaritacaEmulator(reply_tokens=5) as emulator:
        chain = build(emulator_model(emulator))
        if lcel:
            chain = _lcel_twin(chain)
        events = [{**event, "parent_ids": len(event["parent_ids"])} async for event in
                  chain.astream_events({"topic": "Brasil"}, {"tags": ["t"]}, version="v2",
                                       **filters)]
    ids: dict[str, int] = {}
    for event in events:
        event["run_id"] = ids.setdefault(event["run_id"], len(ids))
    return normalised(events)


@pytest.mark.parametrize("filters", [{}, {"include_types": ["chat_model", "parser"]},
                                     {"exclude_names": ["RunnableSequence"]}],
                         ids=["all", "include", "exclude"])
async def test_astream_events_are_lcels(filters: dict[str, Any]) -> None:
    direct = await _events(build_story_chain, False, **filters)
    assert direct == await _events(build_story_chain, True, **filters)
    assert "on_parser_stream" in direct


async def _events_and_tasks(inline: bool, monkeypatch: pytest.MonkeyPatch,
                             log: bool = False) -> tuple[list[str], int]:
    """A direct chain's ``astream_events`` (or ``astream_log``), normalised, and how many
    asyncio tasks the call made; ``inline=False``: each event dispatched as langchain-core
    does for a handler not ``run_inline``."""
    if not inline:
        monkeypatch.setattr(_lcel_private, "_INLINE_SAFE", frozenset())
    made = 0

    def counting(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        nonlocal made
        made += 1
        return asyncio.Task(coro, loop=loop, **kwargs)

    loop = asyncio.get_running_loop()
    with MaritacaEmulator(reply_tokens=5) as emulator:
        chain = build_story_chain(emulator_model(emulator))
        loop.set_task_factory(counting)
        try:
            if log:
                seen = [normalised(patch.ops) async for patch in chain.astream_log({"topic": "x"})]
            else:
                seen = [normalised({**event, "run_id": "", "parent_ids": len(event["parent_ids"])})
                        async for event in chain.astream_events({"topic": "x"}, version="v2")]
        finally:
            loop.set_task_factory(None)
    ids = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
    times = r"\d{4}-\d\d-\d\dT[\d:.]+\+00:00"
    return [re.sub(times, "TIME", re.sub(ids, "ID", item)) for item in seen], made


@pytest.mark.parametrize("log", [False, True], ids=["astream_events", "astream_log"])
async def test_langchains_streaming_handlers_are_awaited_in_place(
        log: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """``astream_events``'/``astream_log``'s handler gets each event in place, not in a task
    (or on a thread) of its own: the same events, a dozen and more tasks fewer a call."""
    inline = await _events_and_tasks(True, monkeypatch, log)
    dispatched = await _events_and_tasks(False, monkeypatch, log)
    assert inline[0] == dispatched[0] and len(inline[0]) > 10
    assert inline[1] <= dispatched[1] - 12


def test_only_langchains_own_streaming_handlers_are_marked_inline() -> None:
    """A handler of the caller's own (even one built on langchain-core's) keeps the
    dispatch it asked for."""
    from langchain_core.tracers.event_stream import _AstreamEventsCallbackHandler

    class Mine(_AstreamEventsCallbackHandler):
        pass

    for handler, inline in ((_AstreamEventsCallbackHandler(), True), (Mine(), False)):
        _lcel_private.inline_streaming_handler([Recorder(), handler])
        assert handler.run_inline is inline


async def _log(lcel: bool) -> list[str]:
    """The chain's ``astream_log`` patches, without times and ids."""
    with MaritacaEmulator(reply_tokens=5) as emulator:
        chain = build_story_chain(emulator_model(emulator))
        chain = _lcel_twin(chain) if lcel else chain
        ops = [normalised(patch.ops) async for patch in chain.astream_log({"topic": "Brasil"})]
    ops = [re.sub(r"\d{4}-\d\d-\d\dT[\d:.]+\+00:00", "TIME", op) for op in ops]
    return [re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "ID", op)
            for op in ops]


async def test_astream_log_is_lcels() -> None:
    assert await _log(False) == await _log(True)


@both_ways
def test_a_long_chain_answer_adds_up_to_lcels(sync: bool) -> None:
    """The parser's run adds its input up a batch at a time: the same inputs reported."""
    def run(fast: bool) -> tuple[int, str, str]:
        with MaritacaEmulator(reply_tokens=300) as emulator:
            chain = build_story_chain(emulator_model(emulator))
            recorder = Recorder()
            config = {"callbacks": [recorder], "configurable": {"max_tokens": 400}}
            if sync:
                chunks = list(chain.stream({"topic": "Brasil"}, config) if fast
                              else RunnableLambda.stream(chain.bound, {"topic": "Brasil"}, config))
            else:
                chunks = asyncio.run(_collect(
                    chain.astream({"topic": "Brasil"}, config) if fast
                    else RunnableLambda.astream(chain.bound, {"topic": "Brasil"}, config)))
            return len(chunks), normalised(chunks), normalised(recorder.events)

    fast = run(True)
    assert fast == run(False)
    assert fast[0] >= 300 and "'parser'" in fast[2]
