"""Bad input: schemathesis over the server's OpenAPI schema, and hypothesis-made chain
inputs on /invoke and /stream of every chain. Nothing may answer 5xx, and nothing may hang;
and every answer is what the schema says (schemathesis' full check set, ``--checks all``:
documented statuses, media types and bodies, schema-valid requests accepted and
schema-violating ones refused).

The app runs in-process (schemathesis' ASGI client) over the emulator. CI size: a few
hundred requests; ``pytest --soak``: thousands.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import CHECKS
from starlette.testclient import TestClient

from chains import CHAINS
from maritaca.testing import MaritacaEmulator
from maritaca_chains import create_app
from maritaca_chains.settings import ServerSettings
from tests.conftest import LOOPBACK, emulator_model, loopback_client

CI_EXAMPLES, SOAK_EXAMPLES = 4, 40  # per API operation (55 operations)
# make test replays the same examples every run (a red CI names a reproducible bug);
# make soak (explore=True) tries new ones each time
CHAIN_CI_EXAMPLES, CHAIN_SOAK_EXAMPLES = 60, 600  # per chain, each sent to /invoke and /stream
SLOWEST_S = 10.0  # any single request slower than this counts as a hang
STATS: Counter[str] = Counter()
# The 500s this fuzzing found (non-UTF-8 bodies, NaN/Infinity, lone surrogates,
# "config": null, /batch inputs not a list) are fixed in server.JSONBodyGuard and
# pinned by the plain tests at the end of this file.


def _reset_sse_event() -> None:
    """sse-starlette 1.x keeps one exit Event per process, bound to the first loop that
    used it; the ASGI test client may run each call on a fresh loop."""
    from sse_starlette.sse import AppStatus

    AppStatus.should_exit_event = None


@pytest.fixture(scope="module")
def fuzz_emulator() -> Iterator[MaritacaEmulator]:
    with MaritacaEmulator(reply_tokens=6, max_records=2000) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def fuzz_app(fuzz_emulator: MaritacaEmulator) -> Any:
    return create_app(ServerSettings(_env_file=None),  # type: ignore[call-arg]
                      model=emulator_model(fuzz_emulator))


def from_loopback(app: Any) -> Any:
    """``app`` as reached from 127.0.0.1: schemathesis' ASGI client says its address is
    ``testclient``, which is not loopback, so without this every route would answer 403
    and nothing behind the access guard would be fuzzed."""
    async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            scope = {**scope, "client": LOOPBACK}
        await app(scope, receive, send)

    return asgi


@pytest.fixture(scope="module")
def api_schema(fuzz_app: Any) -> Any:
    return schemathesis.openapi.from_asgi("/openapi.json", from_loopback(fuzz_app))


def _problems(response: Any, elapsed: float) -> list[str]:
    """What is wrong with one answer: a 5xx, a hang, an unterminated or internal stream."""
    STATS[f"{response.status_code // 100}xx"] += 1
    found = []
    if response.status_code >= 500:
        found.append(f"HTTP {response.status_code}: {response.text[:300]}")
    if elapsed > SLOWEST_S:
        found.append(f"took {elapsed:.1f} s")
    body = response.text
    if "text/event-stream" in response.headers.get("content-type", ""):
        if "event: end" not in body and "event: error" not in body \
                and "data: [DONE]" not in body and 'data: {"error"' not in body:
            found.append(f"stream without end or error event: {body[-300:]}")
        for line in body.splitlines():  # the /v1 and AI SDK faces' errors
            if line.startswith('data: {"error"') and '"server_error"' in line \
                    or line.startswith('data: {"type":"error"') and "Internal" in line:
                found.append(f"error {line[:300]}")
        for block in body.replace("\r\n", "\n").split("\n\n"):
            if block.startswith("event: error"):
                data = json.loads(block.split("data: ", 1)[1])
                if data.get("status_code", 500) >= 500 or data.get("type") == "internal":
                    found.append(f"error event {data}")
    return found


def _fuzz_operations(api_schema: Any, examples: int, explore: bool = False) -> None:
    """Every operation of the schema, with valid and invalid generated requests.

    Driven by hand rather than with ``schema.parametrize()``: schemathesis' pytest
    plugin reads ``Item._nodeid``, which pytest 9 no longer has.
    """
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) > 30, "the schema lost its chain routes"
    bad: dict[str, str] = {}
    for operation in operations:
        strategy = (operation.as_strategy(GenerationMode.POSITIVE)
                    | operation.as_strategy(GenerationMode.NEGATIVE))

        @settings(max_examples=examples, deadline=None, database=None, derandomize=not explore,
                  suppress_health_check=list(HealthCheck))
        @given(case=strategy)
        def run(case: Any) -> None:
            _reset_sse_event()
            what = f"{case.method} {case.formatted_path} body={case.body!r:.200}"
            started = time.monotonic()
            try:
                response = case.call()
                problems = _problems(response, time.monotonic() - started)
            except Exception as exc:  # the app raised: a 500 on a real server
                STATS["5xx"] += 1
                problems = [f"unhandled {type(exc).__name__}: {exc}"]
            else:
                problems += _schema_lies(case, response)
            for problem in problems:
                bad.setdefault(problem[:120], what)

        run()
        STATS["operations"] += 1
    assert STATS["2xx"] > len(operations) / 2, "most operations were refused every time: " \
        "is the fuzzing client still let in (loopback)?"
    report(bad)


def _chain_input_refused(case: Any, response: Any) -> bool:
    """What no JSON schema can say: on the faces that fill a chain's main field from
    the last user message (``/v1/chat/completions``, ``/<chain>/ai-sdk``), a body the
    schema allows can still carry an input its chain refuses (an empty topic, no user
    message, a field the chain lacks). That is a 422 naming the chain's input, as
    their schemas' descriptions say; any other refusal of valid data still fails."""
    if response.status_code != 422:
        return False
    body = response.json()
    if case.operation.path == "/v1/chat/completions":
        param = body["error"]["param"] or ""
        return param == "messages" or param.split(".")[0] == "input"
    if case.operation.path.endswith("/ai-sdk"):
        return all(d["loc"][:2] in (["body", "messages"], ["body", "input"])
                   for d in body["detail"])
    return False


def _schema_lies(case: Any, response: Any) -> list[str]:
    """Where the answer is not what the schema says (every schemathesis check)."""
    try:
        case.validate_response(response, checks=CHECKS.get_all())
    except BaseException as exc:  # a FailureGroup, or one Failure
        failures = [f for f in getattr(exc, "exceptions", [exc])
                    # a body over the size cap is refused before its shape is looked at
                    if not (response.status_code == 413
                            and type(f).__name__ == "AcceptedNegativeData")
                    and not (type(f).__name__ == "RejectedPositiveData"
                             and _chain_input_refused(case, response))]
        return [f"{type(f).__name__}: {str(f).strip().splitlines()[0]} "
                f"(HTTP {response.status_code}: {response.text[:400]})" for f in failures]
    return []


def report(bad: dict[str, str]) -> None:
    """Fails naming every problem found and the request that showed it (run with -s to
    see how many requests the fuzzing made so far)."""
    print(f"\nfuzz requests by status class: {dict(STATS)}")
    assert not bad, "\n".join(f"{p}\n    <- {w}" for p, w in bad.items())


def test_openapi_operations_never_5xx(api_schema: Any) -> None:
    _fuzz_operations(api_schema, CI_EXAMPLES)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_openapi_operations_never_5xx_soak(api_schema: Any) -> None:
    _fuzz_operations(api_schema, SOAK_EXAMPLES, explore=True)


# ------------------------------------------------------------------- chain inputs

_text = st.text(max_size=40) | st.text(min_size=490, max_size=520) \
    | st.sampled_from(["", " ", "\x00", "\ud800", "Brasil", "{topic}", "{{x}}", "é" * 501])
_scalar = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _text
_json = st.recursive(_scalar, lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=6)


def chain_inputs(name: str) -> st.SearchStrategy[Any]:
    """Mostly input-shaped objects with odd values, sometimes anything at all."""
    main = CHAINS[name].main_field
    others = [f for f in CHAINS[name].input_type.model_fields if f != main]
    shaped = st.fixed_dictionaries(
        {main: _text}, optional={f: _text | _scalar for f in others} | {"surprise": _json})
    return shaped | _json


_configs = st.none() | st.fixed_dictionaries({}, optional={
    "configurable": st.dictionaries(
        st.sampled_from(["model", "temperature", "max_tokens", "api_key", "base_url", "x"]),
        _scalar | st.sampled_from(["sabia-4", "sabiazinho-4"]), max_size=3),
    "tags": st.lists(_text, max_size=2), "run_name": _text, "metadata": _json,
})


@pytest.fixture(scope="module")
def test_client(fuzz_app: Any) -> Iterator[TestClient]:
    with loopback_client(fuzz_app, raise_server_exceptions=True) as http:
        yield http


def _post(http: TestClient, path: str, payload: dict[str, Any], bad: dict[str, str]) -> None:
    _reset_sse_event()
    try:
        content = json.dumps(payload)
    except ValueError:  # e.g. an integer too long to print: not an HTTP request at all
        return
    started = time.monotonic()
    try:
        response = http.post(path, content=content,
                             headers={"content-type": "application/json"})
        problems = _problems(response, time.monotonic() - started)
    except Exception as exc:  # the app raised: a 500 on a real server
        STATS["5xx"] += 1
        problems = [f"unhandled {type(exc).__name__}: {exc}"]
    for problem in problems:
        bad.setdefault(problem[:120], f"POST {path} {content[:300]}")


def _fuzz_chain(http: TestClient, name: str, examples: int, explore: bool = False) -> None:
    bad: dict[str, str] = {}

    @settings(max_examples=examples, deadline=None, database=None, derandomize=not explore,
              suppress_health_check=list(HealthCheck))
    @given(value=chain_inputs(name), config=_configs)
    def run(value: Any, config: Any) -> None:
        payload = {"input": value, **({"config": config} if config is not None else {})}
        _post(http, f"/{name}/invoke", payload, bad)
        _post(http, f"/{name}/stream", payload, bad)

    run()
    report(bad)


@pytest.mark.parametrize("name", list(CHAINS))
def test_chain_inputs_never_5xx(test_client: TestClient, name: str) -> None:
    _fuzz_chain(test_client, name, CHAIN_CI_EXAMPLES)


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("name", list(CHAINS))
def test_chain_inputs_never_5xx_soak(test_client: TestClient, name: str) -> None:
    _fuzz_chain(test_client, name, CHAIN_SOAK_EXAMPLES, explore=True)


# ------------------------------------------------------- the bugs found, pinned

@pytest.mark.parametrize("path", ["/story/invoke", "/story/stream", "/story/batch",
                                  "/qa/text"])
def test_non_utf8_body_is_4xx(test_client: TestClient, path: str) -> None:
    _reset_sse_event()
    response = test_client.post(path, content=b"\xf5\x80",
                                headers={"content-type": "application/json"})
    assert response.status_code == 422


def test_nan_in_input_is_4xx(test_client: TestClient) -> None:
    response = test_client.post("/qa/invoke", content=b'{"input": {"question": "p", '
                                b'"context": Infinity}}',
                                headers={"content-type": "application/json"})
    assert response.status_code == 422


def test_lone_surrogate_in_input_is_not_5xx(test_client: TestClient) -> None:
    response = test_client.post("/story/invoke", content=b'{"input": {"topic": "\\ud800"}}',
                                headers={"content-type": "application/json"})
    assert response.status_code < 500


@pytest.mark.parametrize("inputs", [1.5, None])
def test_batch_inputs_not_a_list_is_4xx(test_client: TestClient, inputs: Any) -> None:
    response = test_client.post("/story/batch", json={"inputs": inputs})
    assert response.status_code == 422



@pytest.mark.parametrize("configurable", [False, 0, [], ""])
def test_a_run_with_configurable_not_an_object_is_4xx(test_client: TestClient,
                                                       configurable: Any) -> None:
    """Found by the soak: ``"configurable": false`` was taken for no configurable."""
    response = test_client.post("/story/runs", json={"input": {"topic": "Brasil"},
                                                     "config": {"configurable": configurable}})
    assert response.status_code == 422, response.text
