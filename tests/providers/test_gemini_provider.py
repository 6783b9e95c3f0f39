"""GeminiProvider alone: the REAL google-genai SDK against the fake Gemini server on 127.0.0.1.

What the SDK sent is asserted from the server's recorded requests; every fault of
tests/fakes/fake_gemini.py is driven through the provider's retry loop, with `sleep` injected
so no test waits for a real backoff (the requested durations are recorded and checked).
"""
from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading

import pytest

from conftest import run_threads
from ai_client import (Cancelled, Finish, GeminiProvider, Message, MissingApiKey, ModelRequest,
                       ProviderError, ToolCall, ToolReturn, make_provider)
from models import EpicPlan, GeminiSettings, Settings, TrackPlan, Usage
from tests.fakes.fake_gemini import (BAD_KEY_MESSAGE, Call, Calls, FakeGemini, Fault, Json, Raw,
                                     Text)
from tests.fakes.fake_gemini import Usage as SentUsage
from tools import TOOL_SPECS

KEY = "AIzaFAKE-provider-test-key-0123456789"
FLASH = "gemini-2.5-flash"
LITE = "gemini-2.5-flash-lite"


# ---------------------------------------------------------------------------------------------
# fixtures and helpers
# ---------------------------------------------------------------------------------------------

class Sleeps(list):
    """An injected sleep: records every requested duration, sleeps for none of them."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


class Recorder:
    """on_chunk and on_retry for one call."""

    def __init__(self, srv: FakeGemini | None = None):
        self.chunks: list[str] = []
        self.retries: list[dict] = []
        self.replies_seen_at_chunk: list[int] = []
        self._srv = srv

    def on_chunk(self, text: str) -> None:
        if text:                       # "" is the provider's cancellation heartbeat
            self.chunks.append(text)
            if self._srv is not None:
                self.replies_seen_at_chunk.append(len(self._srv.replies))

    def on_retry(self, info: dict) -> None:
        self.retries.append(info)

    @property
    def text(self) -> str:
        return "".join(self.chunks)


@pytest.fixture(scope="module")
def _sleeps():
    return Sleeps()


@pytest.fixture
def sleeps(_sleeps):
    _sleeps.clear()
    return _sleeps


def _new_provider(srv: FakeGemini, sleeps: Sleeps, **kw) -> GeminiProvider:
    args = dict(api_key=KEY, base_url=srv.base_url, timeout_s=5.0, max_retries=3,
                initial_delay_s=0.01, max_delay_s=5.0, sleep=sleeps)
    args.update(kw)
    return GeminiProvider(**args)


@pytest.fixture(scope="module")
def _provider(_server, _sleeps):
    # Building a genai.Client costs ~0.15 s (its SSL context): the default one is shared.
    p = _new_provider(_server, _sleeps)
    yield p
    p.close()


@pytest.fixture
def provider(srv, sleeps, _provider):
    return _provider


@pytest.fixture
def make(srv, sleeps):
    """A provider with other settings than the shared one."""
    made = []

    def make(**kw) -> GeminiProvider:
        p = _new_provider(srv, sleeps, **kw)
        made.append(p)
        return p
    yield make
    for p in made:
        p.close()


def req(text="hello there", *, tier="Tier 4", model=FLASH, system="be terse", messages=None,
        tools=(), schema=None) -> ModelRequest:
    return ModelRequest(tier=tier, model=model, system=system,
                        messages=messages if messages is not None else [Message("user", text)],
                        tools=tools, response_schema=schema)


def sse(*events: dict) -> Raw:
    """A hand-written SSE body (for shapes the fake's replies do not produce)."""
    body = b"".join(b"data: " + json.dumps(e).encode() + b"\r\n\r\n" for e in events)
    return Raw(200, body, headers={"Content-Type": "text/event-stream"})


def run(provider, request, srv=None):
    rec = Recorder(srv)
    resp = provider.generate(request, rec.on_chunk, rec.on_retry)
    return resp, rec


def fail(provider, request, match=None):
    rec = Recorder()
    with pytest.raises(ProviderError, match=match) as ei:
        provider.generate(request, rec.on_chunk, rec.on_retry)
    return ei.value, rec


# ---------------------------------------------------------------------------------------------
# streaming, usage, request shapes
# ---------------------------------------------------------------------------------------------

def test_text_streams_chunk_by_chunk_in_order(srv, provider):
    srv.enqueue(Text("alpha beta gamma delta epsilon", chunks=4, chunk_delay=0.05,
                     usage=SentUsage(prompt=9, candidates=8)))
    resp, rec = run(provider, req(), srv)
    assert rec.chunks == ["alpha be", "ta gamma", " delta ", "epsilon"]
    assert resp.text == rec.text == "alpha beta gamma delta epsilon"
    # forwarded as they came: the first chunks reached on_chunk before the server had even
    # written (and recorded) its last event
    assert rec.replies_seen_at_chunk[0] == 0
    assert resp.finish_reason == "STOP" and resp.model == FLASH and resp.tool_calls == []
    (r,) = srv.requests
    assert (r.rpc, r.model, r.api_version, r.query) == ("streamGenerateContent", FLASH, "v1",
                                                        {"alt": "sse"})
    assert r.api_key == KEY
    assert r.body["contents"] == [{"role": "user", "parts": [{"text": "hello there"}]}]
    assert r.body["systemInstruction"]["parts"] == [{"text": "be terse"}]
    assert "tools" not in r.body and r.body["generationConfig"] == {}
    assert rec.retries == []


def test_usage_maps_all_six_fields(srv, provider):
    srv.enqueue(Text("x", usage=SentUsage(prompt=100, candidates=20, cached=30, thoughts=7,
                                          tool_use=5)))
    resp, _ = run(provider, req())
    assert resp.usage == Usage(input_tokens=100, output_tokens=20, cached_tokens=30,
                               thoughts_tokens=7, tool_use_tokens=5, total_tokens=132,
                               requests=1)
    # fields the API omits (None in the SDK) are 0
    srv.enqueue(Text("y", usage=SentUsage(prompt=4, candidates=1)))
    resp, _ = run(provider, req())
    assert resp.usage == Usage(input_tokens=4, output_tokens=1, total_tokens=5, requests=1)


def test_usage_is_the_last_chunks_not_a_sum(srv, provider):
    def chunk(text, usage=None, finish=None):
        cand = {"content": {"role": "model", "parts": [{"text": text}]}, "index": 0}
        if finish:
            cand["finishReason"] = finish
        ev = {"candidates": [cand]}
        if usage:
            ev["usageMetadata"] = usage
        return ev
    srv.enqueue(sse(chunk("a", {"promptTokenCount": 50}),
                    chunk("b", {"promptTokenCount": 50, "candidatesTokenCount": 1,
                                "totalTokenCount": 51}),
                    chunk("c", {"promptTokenCount": 50, "candidatesTokenCount": 3,
                                "totalTokenCount": 53}, finish="STOP")))
    resp, rec = run(provider, req())
    assert rec.chunks == ["a", "b", "c"]
    assert resp.usage == Usage(input_tokens=50, output_tokens=3, total_tokens=53, requests=1)


@pytest.mark.parametrize("schema", [EpicPlan, TrackPlan])
def test_structured_output_request_shape(srv, provider, schema):
    obj = ({"tracks": [{"title": "t", "goal": "g", "acceptance_criteria": ["c"]}]}
           if schema is EpicPlan else {"tickets": [{"id": "T-001", "description": "d"}]})
    srv.enqueue(Json(obj, chunks=3))
    resp, rec = run(provider, req("plan it", tier="Tier 1", model="gemini-2.5-pro",
                                  schema=schema))
    assert len(rec.chunks) == 3
    assert schema.model_validate_json(resp.text) == schema.model_validate(obj)
    (r,) = srv.requests
    gc = r.body["generationConfig"]
    assert gc["responseMimeType"] == "application/json"
    assert gc["responseJsonSchema"] == schema.model_json_schema()
    assert gc["responseJsonSchema"]["required"] == [next(iter(schema.model_fields))]
    assert "tools" not in r.body


def test_tool_declarations_come_from_tool_specs_and_calls_are_parsed(srv, provider):
    srv.enqueue(Calls([("write_file", {"path": "a.py", "content": "x = 1\n"}),
                       ("run_shell", {"command": "python -m py_compile a.py"})],
                      text="Writing a.py, then checking it.",
                      usage=SentUsage(prompt=300, candidates=40)))
    resp, rec = run(provider, req("TICKET T-001: do it", tier="Tier 3", model=LITE,
                                  tools=TOOL_SPECS))
    assert rec.chunks == ["Writing a.py, then checking it."]
    assert resp.text == "Writing a.py, then checking it."
    assert resp.tool_calls == [
        ToolCall(id="write_file-0", name="write_file", args={"path": "a.py", "content": "x = 1\n"}),
        ToolCall(id="run_shell-1", name="run_shell",
                 args={"command": "python -m py_compile a.py"})]
    (r,) = srv.requests
    assert r.tool_names == [s.name for s in TOOL_SPECS]
    for decl, spec in zip(r.function_declarations, TOOL_SPECS):
        assert decl["description"] == spec.description
        assert decl["parameters_json_schema"] == spec.parameters     # lowercase JSON schema
        assert "parameters" not in decl
    assert "responseMimeType" not in r.body["generationConfig"]
    # the SDK never runs a tool itself: automatic function calling is off
    from google.genai import types
    from providers.gemini_wire import build_config
    config = build_config(types, req(tier="Tier 3", tools=TOOL_SPECS))
    assert config.automatic_function_calling.disable is True


def test_function_responses_go_back_in_one_user_turn(srv, provider):
    tools_req = req("TICKET T-007: write two files", tier="Tier 3", model=LITE, tools=TOOL_SPECS)
    srv.enqueue(Calls([("write_file", {"path": "a.txt", "content": "A"}),
                       ("write_file", {"path": "b.txt", "content": "B"})], text="Writing both."),
                Text("Both files written.", chunks=2))
    first, _ = run(provider, tools_req)
    assert [c.id for c in first.tool_calls] == ["write_file-0", "write_file-1"]
    history = [Message("user", "TICKET T-007: write two files"),
               Message("model", first.text, tool_calls=first.tool_calls),
               Message("tool", tool_returns=[
                   ToolReturn(c.id, c.name, {"ok": True, "output": f"wrote {c.args['path']}"})
                   for c in first.tool_calls])]
    second, rec = run(provider, req(tier="Tier 3", model=LITE, tools=TOOL_SPECS,
                                    messages=history))
    assert second.text == "Both files written." and second.tool_calls == []
    body = srv.requests[1].body
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "TICKET T-007: write two files"}]},
        {"role": "model", "parts": [
            {"text": "Writing both."},
            {"functionCall": {"name": "write_file", "args": {"path": "a.txt", "content": "A"}}},
            {"functionCall": {"name": "write_file", "args": {"path": "b.txt", "content": "B"}}}]},
        {"role": "user", "parts": [
            {"functionResponse": {"name": "write_file",
                                  "response": {"ok": True, "output": "wrote a.txt"}}},
            {"functionResponse": {"name": "write_file",
                                  "response": {"ok": True, "output": "wrote b.txt"}}}]},
    ]
    # the third round's generated ids continue the numbering: unique within the session
    srv.enqueue(Call("list_dir", {"path": "."}))
    third, _ = run(provider, req(tier="Tier 3", model=LITE, tools=TOOL_SPECS,
                                 messages=history + [Message("model", second.text),
                                                     Message("user", "one more thing")]))
    assert [c.id for c in third.tool_calls] == ["list_dir-2"]


def test_api_call_ids_and_thought_signatures_round_trip(srv, provider):
    sig = base64.b64encode(b"opaque-signature").decode()
    srv.enqueue(sse({"candidates": [{"index": 0, "finishReason": "STOP", "content": {
        "role": "model", "parts": [
            {"functionCall": {"id": "call-9f2", "name": "read_file", "args": {"path": "a.py"}},
             "thoughtSignature": sig}]}}],
        "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 2,
                          "totalTokenCount": 5}}),
                Text("done"))
    first, _ = run(provider, req(tier="Tier 3", model=LITE, tools=TOOL_SPECS))
    assert first.tool_calls == [ToolCall(id="call-9f2", name="read_file", args={"path": "a.py"})]
    history = [Message("user", "hello there"), Message("model", "", tool_calls=first.tool_calls),
               Message("tool", tool_returns=[ToolReturn("call-9f2", "read_file", {"ok": True})])]
    run(provider, req(tier="Tier 3", model=LITE, tools=TOOL_SPECS, messages=history))
    model_turn, tool_turn = srv.requests[1].body["contents"][1:]
    assert model_turn == {"role": "model", "parts": [{
        "functionCall": {"id": "call-9f2", "name": "read_file", "args": {"path": "a.py"}},
        "thoughtSignature": sig}]}
    assert tool_turn["parts"][0]["functionResponse"]["id"] == "call-9f2"


# ---------------------------------------------------------------------------------------------
# key, base URL, API version, import cost
# ---------------------------------------------------------------------------------------------

def test_missing_key_is_a_clear_message(monkeypatch):
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    for build in (lambda: GeminiProvider.from_settings(Settings(provider="gemini")),
                  lambda: make_provider(Settings(provider="gemini")),
                  lambda: GeminiProvider(api_key="  ")):
        with pytest.raises(MissingApiKey) as ei:
            build()
        msg = str(ei.value)
        assert "GEMINI_API_KEY" in msg and "GOOGLE_API_KEY" in msg and "offline" in msg
        assert isinstance(ei.value, ProviderError) and ei.value.retryable is False


def test_key_from_either_variable(srv, monkeypatch):
    settings = Settings(provider="gemini", gemini=GeminiSettings(base_url=srv.base_url))
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.setenv("GOOGLE_API_KEY", KEY)
    assert GeminiProvider.from_settings(settings).generate(req("ping"), lambda s: None).text \
        == "echo: ping"
    monkeypatch.setenv("GEMINI_API_KEY", "AIzaWRONG-but-preferred-000000")
    with pytest.raises(ProviderError) as ei:          # GEMINI_API_KEY wins
        GeminiProvider.from_settings(settings).generate(req("ping"), lambda s: None)
    assert ei.value.status == 400 and BAD_KEY_MESSAGE in ei.value.message
    assert srv.requests[-1].api_key == "AIzaWRONG-but-preferred-000000"


def test_base_url_from_settings_else_the_sdk_env(srv, monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    with FakeGemini(api_key=KEY) as env_srv:
        monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", env_srv.base_url)
        from_settings = make_provider(Settings(provider="gemini",
                                               gemini=GeminiSettings(base_url=srv.base_url)))
        assert from_settings.generate(req("a"), lambda s: None).text == "echo: a"
        assert len(srv.requests) == 1 and env_srv.requests == []
        from_env = make_provider(Settings(provider="gemini"))     # base_url "": the SDK's env
        assert from_env.base_url is None
        assert from_env.generate(req("b"), lambda s: None).text == "echo: b"
        assert len(srv.requests) == 1 and len(env_srv.requests) == 1


@pytest.mark.parametrize("version", ["", "v1beta"])
def test_api_version_from_settings(srv, monkeypatch, version):
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    p = GeminiProvider.from_settings(Settings(provider="gemini", gemini=GeminiSettings(
        base_url=srv.base_url, api_version=version)))
    p.generate(req(), lambda s: None)
    assert srv.requests[0].path == f"/{version or 'v1'}/models/{FLASH}:streamGenerateContent"


def test_timeout_and_retry_settings_reach_the_provider(monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    p = GeminiProvider.from_settings(Settings(provider="gemini", gemini=GeminiSettings(
        timeout_s=7.5, max_retries=2, retry_initial_delay_s=0.25, retry_max_delay_s=3)))
    assert (p.timeout_s, p.max_retries, p.initial_delay_s, p.max_delay_s) == (7.5, 2, 0.25, 3)
    assert p._client._api_client._http_options.timeout == 7500           # milliseconds
    assert KEY not in repr(p)


def test_importing_ai_client_does_not_import_google_genai():
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", "import ai_client"],
                         capture_output=True, text=True, cwd=str(_root()), timeout=60)
    assert out.returncode == 0, out.stderr
    assert "ai_client" in out.stderr and "google.genai" not in out.stderr


def _root():
    from pathlib import Path
    return Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------------------------------
# faults: retried ones
# ---------------------------------------------------------------------------------------------

def test_429_with_retry_info_waits_the_servers_delay(srv, provider, sleeps):
    srv.enqueue(Fault.rate_limit(retry_delay_s=1.5), Text("recovered"))
    resp, rec = run(provider, req())
    assert resp.text == "recovered"
    assert [r.status for r in srv.replies] == [429, 200]
    (info,) = rec.retries
    assert info["status"] == 429 and info["reason"] == "rate_limited" and info["attempt"] == 1
    assert info["delay_s"] >= 1.5 and "exceeded your current quota" in info["error"]
    # the real delay was requested of sleep (in slices), never less than the server asked
    assert sum(sleeps) == pytest.approx(info["delay_s"]) and sum(sleeps) >= 1.5
    assert max(sleeps) <= GeminiProvider._SLEEP_SLICE_S


def test_429_with_retry_after_header(srv, provider, sleeps):
    srv.enqueue(Fault.rate_limit(retry_delay_s=2.2, via="retry_after"), Text("ok"))
    resp, rec = run(provider, req())
    assert resp.text == "ok"
    (info,) = rec.retries
    assert info["status"] == 429 and info["delay_s"] >= 3.0          # Retry-After: 3
    assert sum(sleeps) >= 3.0


def test_429_asking_longer_than_the_max_delay_is_not_waited_for(srv, make, sleeps):
    p = make(max_delay_s=2.0)
    srv.enqueue(Fault.rate_limit(retry_delay_s=30), Text("never"))
    e, rec = fail(p, req(), match="asks to wait 30 s")
    assert (e.status, e.retryable, e.retry_after) == (429, True, 30.0)
    assert rec.retries == [] and sleeps == [] and len(srv.requests) == 1


@pytest.mark.parametrize("status", [500, 503])
def test_server_errors_are_retried_and_recover(srv, provider, status):
    srv.enqueue(Fault.server_error(status), Text("fine now"))
    resp, rec = run(provider, req())
    assert resp.text == "fine now" and len(srv.requests) == 2
    assert [(i["status"], i["reason"]) for i in rec.retries] == [(status, "server_error")]


def test_backoff_is_exponential_capped_and_jittered(srv, make, sleeps):
    p = make(initial_delay_s=0.1, max_delay_s=0.25, max_retries=4, rand=lambda: 1.0)
    srv.enqueue(*[Fault.server_error(503)] * 4, Text("fifth time lucky"))
    resp, rec = run(p, req())
    assert resp.text == "fifth time lucky"
    assert [i["delay_s"] for i in rec.retries] == [0.1, 0.2, 0.25, 0.25]
    assert [i["attempt"] for i in rec.retries] == [1, 2, 3, 4]
    low = make(initial_delay_s=0.1, max_delay_s=0.25, rand=lambda: 0.0)
    srv.enqueue(Fault.server_error(500), Text("ok"))
    _, rec = run(low, req())
    assert rec.retries[0]["delay_s"] == 0.05            # jitter: between half and all of it


def test_gives_up_after_max_retries(srv, make):
    p = make(max_retries=2)
    srv.enqueue(*[Fault.server_error(503, message="The model is overloaded.")] * 3, Text("late"))
    e, rec = fail(p, req(), match="gave up after 3 attempts")
    assert "503" in e.message and "The model is overloaded." in e.message
    assert e.status == 503 and e.retryable is True and len(srv.requests) == 3
    assert len(rec.retries) == 2


def test_timeout_with_nothing_streamed_is_retried(srv, make):
    p = make(timeout_s=0.5)
    srv.enqueue(Fault.slow(1.0), Text("second try"))
    resp, rec = run(p, req())
    assert resp.text == "second try" and len(srv.requests) == 2
    (info,) = rec.retries
    assert info["reason"] == "timeout" and info["status"] is None
    assert "within 0.5 s" in info["error"]


def test_stream_cut_before_any_text_is_a_cut_for_the_session(srv, provider):
    # not retried here: the session asks the turn again (test_endings.py), with the ending named
    srv.enqueue(Fault.cut_stream(after_chunks=0), Text("whole"))
    e, rec = fail(provider, req(), match="the stream was cut before any text arrived")
    assert (e.finish, e.retryable, e.streamed) == (Finish.CUT, True, False)
    assert len(srv.requests) == 1 and rec.retries == []


def test_malformed_json_is_retried_once(srv, provider):
    srv.enqueue(Fault.malformed_json(), Text("readable"))
    resp, rec = run(provider, req())
    assert resp.text == "readable" and [i["reason"] for i in rec.retries] == ["malformed"]
    srv.reset()
    srv.enqueue(Fault.malformed_json(), Fault.malformed_json(), Text("never"))
    e, rec = fail(provider, req(), match="could not be read as JSON")
    assert len(srv.requests) == 2 and len(rec.retries) == 1 and e.retryable is False


def test_connection_refused_is_retried_then_reported(make, sleeps):
    with FakeGemini(api_key=KEY) as gone:
        url = gone.base_url
    p = make(base_url=url, max_retries=1)
    e, rec = fail(p, req(), match="could not connect to Gemini at http://127.0.0.1")
    assert [i["reason"] for i in rec.retries] == ["network"]


# ---------------------------------------------------------------------------------------------
# faults: not retried
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("status,name", [(400, "INVALID_ARGUMENT"), (401, "UNAUTHENTICATED"),
                                         (403, "PERMISSION_DENIED"), (404, "NOT_FOUND")])
def test_client_errors_are_not_retried(srv, provider, sleeps, status, name):
    srv.enqueue(Fault.client_error(status, message=f"the API says no ({status})"), Text("never"))
    e, rec = fail(provider, req())
    assert e.status == status and e.retryable is False and e.streamed is False
    assert e.message == f"Gemini API error {status} {name}: the API says no ({status})"
    assert len(srv.requests) == 1 and rec.retries == [] and sleeps == []


def test_bad_key_message_never_contains_the_key(srv, make):
    p = make(api_key="AIzaNOT-the-right-key-0000000000")
    e, _ = fail(p, req())
    assert e.status == 400 and BAD_KEY_MESSAGE in e.message
    assert "AIzaNOT" not in e.message and "AIzaNOT" not in repr(p)


def test_stream_cut_after_text_is_a_cut(srv, provider):
    srv.enqueue(Fault.cut_stream(after_chunks=2, text="partial answer"), Text("never"))
    e, rec = fail(provider, req())
    assert rec.text == "partial answer"
    assert e.message.startswith("the stream was cut after 14 characters (RemoteProtocolError")
    assert e.message.endswith("; the answer is incomplete")
    assert (e.finish, e.streamed, e.retryable) == (Finish.CUT, True, True)
    assert len(srv.requests) == 1 and rec.retries == []


def test_silently_truncated_stream_after_text_is_a_cut(srv, provider):
    srv.enqueue(Fault.cut_stream(after_chunks=2, text="half of it", mode="eof"), Text("never"))
    e, rec = fail(provider, req(), match=r"cut after 10 characters \(no finish reason\)")
    assert rec.text == "half of it" and e.streamed and e.finish is Finish.CUT
    assert len(srv.requests) == 1


def test_no_finish_reason_is_a_cut_although_every_chunk_had_usage(srv, provider):
    srv.enqueue(Text("all of it?", chunks=3, finish_reason=None, partial_usage=True,
                     usage=SentUsage(prompt=40, candidates=3)), Text("never"))
    e, rec = fail(provider, req(), match=r"cut after 10 characters \(no finish reason\)")
    assert rec.text == "all of it?" and e.finish is Finish.CUT
    # the partial usage of the broken call travels with the error (booked as a failed call)
    assert (e.usage.input_tokens, e.usage.output_tokens, e.usage.requests) == (40, 3, 1)


def test_timeout_after_text_is_a_cut(srv, make):
    p = make(timeout_s=0.5)
    srv.enqueue(Text("first, then silence", chunks=2, chunk_delay=2.0), Text("never"))
    e, rec = fail(p, req(), match="cut after 10 characters \\(the stream stalled for more "
                                  "than 0.5 s\\)")
    assert rec.text == "first, the" and (e.streamed, e.finish) == (True, Finish.CUT)
    assert len(srv.requests) == 1


def test_error_mid_stream_after_text_is_a_cut(srv, provider):
    srv.enqueue(Fault.stream_error(after_chunks=1, status=503, text="some text"), Text("never"))
    e, rec = fail(provider, req(), match="cut after 9 characters \\(Gemini reported 503")
    assert rec.text == "some text" and e.status == 503 and e.streamed
    assert e.finish is Finish.CUT and len(srv.requests) == 1


@pytest.mark.parametrize("shape,finish", [("no_content", "STOP"), ("no_parts", "OTHER")])
def test_empty_candidate_is_a_clear_error(srv, provider, shape, finish):
    srv.enqueue(Fault.empty_candidate(shape, finish_reason=finish), Text("never"))
    e, rec = fail(provider, req())
    assert e.message == f"the model returned an empty answer (finish reason {finish})"
    assert len(srv.requests) == 1 and not e.retryable and rec.retries == []


def test_no_candidates_at_all_is_a_cut(srv, provider):
    srv.enqueue(Fault.empty_candidate("no_candidates"), Text("never"))
    e, _ = fail(provider, req(), match="no finish reason")
    assert e.finish is Finish.CUT and len(srv.requests) == 1


@pytest.mark.parametrize("shape", ["no_parts", "no_content"])
def test_max_tokens_with_nothing_is_a_response_that_says_so(srv, provider, shape):
    # thinking can use the whole output limit: an empty MAX_TOKENS answer is reported, not
    # raised, so the session can ask again with more room (endings.py)
    srv.enqueue(Fault.empty_candidate(shape, finish_reason="MAX_TOKENS"), Text("never"))
    resp, _ = run(provider, req())
    assert (resp.text, resp.tool_calls, resp.finish) == ("", [], Finish.MAX_TOKENS)
    assert resp.finish_reason == "MAX_TOKENS"


def test_safety_blocked_answer(srv, provider):
    srv.enqueue(Fault.safety_blocked(), Text("never"))
    e, _ = fail(provider, req(), match="SAFETY filter blocked the answer")
    assert not e.retryable and len(srv.requests) == 1


@pytest.mark.parametrize("reason", ["SAFETY", "PROHIBITED_CONTENT"])
def test_blocked_prompt(srv, provider, reason):
    srv.enqueue(Fault.prompt_blocked(reason=reason), Text("never"))
    e, _ = fail(provider, req(), match=f"Gemini blocked the prompt \\({reason}\\)")
    assert not e.retryable and len(srv.requests) == 1


# ---------------------------------------------------------------------------------------------
# threads and cancellation
# ---------------------------------------------------------------------------------------------

def test_one_provider_shared_by_parallel_threads(srv, provider):
    srv.script(lambda r: Text(f"answer to {r.last_user_text}", chunks=3))
    results: dict[int, str] = {}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            chunks: list[str] = []
            resp = provider.generate(req(f"question {i}"), chunks.append)
            assert "".join(chunks) == resp.text
            results[i] = resp.text
        except BaseException as e:  # noqa: BLE001 -- reported below
            errors.append(e)
    run_threads(work, 8, timeout=20)
    assert errors == []
    assert results == {i: f"answer to question {i}" for i in range(8)}


def test_cancel_during_a_backoff_stops_waiting(srv, make, sleeps):
    p = make(max_delay_s=60)
    srv.enqueue(Fault.rate_limit(retry_delay_s=20), Text("never"))
    cancel = threading.Event()

    def on_chunk(text: str) -> None:
        if cancel.is_set():
            raise Cancelled("cancelled by the user")

    def on_retry(info: dict) -> None:
        cancel.set()
    with pytest.raises(Cancelled):
        p.generate(req(), on_chunk, on_retry)
    assert sum(sleeps) < 1.0 and len(srv.requests) == 1


@pytest.mark.parametrize("exc", [Cancelled("cancelled by the user"), ValueError("a GUI bug")])
def test_an_exception_from_on_chunk_propagates_unchanged(srv, provider, exc):
    srv.enqueue(Text("one two three", chunks=3), Text("never"))
    retries: list[dict] = []

    def on_chunk(text: str) -> None:
        if text:
            raise exc
    with pytest.raises(type(exc)) as ei:
        provider.generate(req(), on_chunk, retries.append)
    assert ei.value is exc                     # not wrapped, not classified as "malformed"
    assert retries == [] and len(srv.requests) == 1
