"""OpenAIChatProvider alone: the REAL `openai` SDK against the fake Chat Completions server on
127.0.0.1 (tests/fakes/fake_openai.py). What the SDK sent is asserted from the recorded
requests; every fault goes through the provider's retry loop with `sleep` injected, so no test
waits for a real backoff (the requested waits are recorded and checked).
"""
from __future__ import annotations

import json
import threading

import pytest

from ai_client import (AgentSession, Cancelled, CommsLog, Finish, Message, MissingApiKey,
                       ModelRequest, OpenAIChatProvider, ProviderError, ToolOutcome,
                       ToolReturn, list_ollama_models, make_provider, ollama_host)
from models import EpicPlan, OpenAISettings, Price, Settings, TrackPlan
from tests.fakes.fake_openai import FakeOpenAI, OCalls, OFault, OJson, OText, OUsage
from tests.fakes.calls import PLAN, Sleeps, fail, request, run
from tools import TOOL_SPECS

KEY = "sk-proj-FAKE-openai-provider-0123456789abcdef"
MODEL = "gpt-5-mini"


@pytest.fixture(scope="module")
def _srv():
    with FakeOpenAI(api_key=KEY) as s:
        yield s


@pytest.fixture
def srv(_srv):
    _srv.reset()
    _srv.json_schema = True
    yield _srv
    assert _srv.handler_errors == []


@pytest.fixture
def sleeps():
    return Sleeps()


@pytest.fixture
def provider(srv, sleeps):
    p = OpenAIChatProvider(KEY, srv.base_url, max_retries=2, initial_delay_s=0.5,
                           max_delay_s=10.0, sleep=sleeps, rand=lambda: 1.0)
    yield p
    p.close()


def req(text="hello there", *, model=MODEL, **kw) -> ModelRequest:
    return request(text, model=model, **kw)


# ---------------------------------------------------------------------------------------------
# streaming, usage, request shape
# ---------------------------------------------------------------------------------------------

def test_text_streams_in_order_and_the_request_asks_for_usage(srv, provider):
    srv.enqueue(OText("The quick brown fox jumps.", chunks=4))
    resp, rec = run(provider, req("hi", limit=300))
    assert rec.chunks == ["The qui", "ck brow", "n fox ", "jumps."]
    assert resp.text == "The quick brown fox jumps." and resp.finish is Finish.STOP
    [r] = srv.requests
    assert r.path == "/v1/chat/completions"
    assert r.headers["authorization"] == f"Bearer {KEY}"
    assert r.body["stream"] is True and r.body["stream_options"] == {"include_usage": True}
    assert r.body["messages"] == [{"role": "system", "content": "be terse"},
                                  {"role": "user", "content": "hi"}]
    assert r.body["max_completion_tokens"] == 300 and "tools" not in r.body


def test_usage_is_exact_from_the_last_chunk(srv, provider):
    srv.enqueue(OText("ok", usage=OUsage(prompt=1200, completion=300, cached=1024,
                                         reasoning=256, cache_write=64)))
    resp, _ = run(provider, req())
    u = resp.usage
    assert (u.input_tokens, u.cached_tokens, u.thoughts_tokens, u.output_tokens,
            u.cache_write_tokens, u.total_tokens, u.requests) == (1200, 1024, 256, 44, 64,
                                                                  1500, 1)
    assert u.output_tokens + u.thoughts_tokens == 300          # completion_tokens, as billed


def test_usage_on_the_finish_chunk_as_llama_cpp_sends_it(srv, provider):
    srv.enqueue(OText("ok", usage=OUsage(prompt=11, completion=3), usage_on_finish=True))
    resp, _ = run(provider, req())
    assert (resp.usage.input_tokens, resp.usage.output_tokens) == (11, 3)


def test_parallel_tool_calls_split_and_interleaved_are_assembled(srv, provider):
    calls = [("write_file", {"path": "a.py", "content": "print('hi')\n" * 3}),
             ("run_shell", {"command": "python a.py"}),
             ("read_file", {"path": "b.txt"})]
    srv.enqueue(OCalls(calls, text="Writing, running, reading.", arg_chunks=5))
    resp, rec = run(provider, req(tier="Tier 3", tools=TOOL_SPECS))
    assert [(c.name, c.args) for c in resp.tool_calls] == [(n, a) for n, a in calls]
    assert len({c.id for c in resp.tool_calls}) == 3
    assert all(c.id.startswith("call_") for c in resp.tool_calls)
    assert resp.finish is Finish.TOOL_CALLS and rec.text == "Writing, running, reading."
    decl = srv.requests[0].body["tools"]
    assert [t["function"]["name"] for t in decl] == [s.name for s in TOOL_SPECS]
    assert all(t["type"] == "function" for t in decl)


def test_tool_results_echo_each_call_id(srv, provider):
    srv.enqueue(OCalls([("read_file", {"path": "a"}), ("read_file", {"path": "b"})]))
    first, _ = run(provider, req(tier="Tier 3", tools=TOOL_SPECS))
    history = [Message("user", "go"), Message("model", "", tool_calls=first.tool_calls),
               Message("tool", tool_returns=[ToolReturn(c.id, c.name, {"ok": True,
                                                                       "output": c.args["path"]})
                                             for c in first.tool_calls])]
    srv.enqueue(OText("done"))
    run(provider, req(tier="Tier 3", tools=TOOL_SPECS, messages=history))
    msgs = srv.requests[1].body["messages"]
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "tool", "tool"]
    sent_ids = [tc["id"] for tc in msgs[2]["tool_calls"]]
    assert sent_ids == [c.id for c in first.tool_calls]
    assert [m["tool_call_id"] for m in msgs[3:]] == sent_ids
    assert json.loads(msgs[3]["content"]) == {"ok": True, "output": "a"}
    assert json.loads(msgs[2]["tool_calls"][1]["function"]["arguments"]) == {"path": "b"}


def test_structured_output_sends_the_plan_schema_strict(srv, provider):
    srv.enqueue(OJson(PLAN, chunks=5))
    resp, rec = run(provider, req(tier="Tier 1", schema=EpicPlan))
    assert json.loads(resp.text) == PLAN and rec.text == resp.text
    rf = srv.requests[0].body["response_format"]
    assert rf["type"] == "json_schema" and rf["json_schema"]["name"] == "EpicPlan"
    assert rf["json_schema"]["strict"] is True
    schema = rf["json_schema"]["schema"]
    track = schema["$defs"]["TrackProposal"]
    assert track["additionalProperties"] is False
    assert track["required"] == ["title", "goal", "acceptance_criteria"]
    assert schema["additionalProperties"] is False


def test_json_mode_fallback_for_a_server_without_json_schema(srv, provider):
    srv.json_schema = False
    srv.enqueue(OJson(PLAN))
    resp, rec = run(provider, req(tier="Tier 1", model="local-7b", schema=EpicPlan))
    assert json.loads(resp.text) == PLAN
    first, second = srv.requests
    assert first.body["response_format"]["type"] == "json_schema"
    assert second.body["response_format"] == {"type": "json_object"}
    system = second.body["messages"][0]["content"]
    assert system.startswith("be terse") and '"title": "TrackProposal"' in system
    assert [r["reason"] for r in rec.retries] == ["fallback_json_mode"]
    assert "json_schema" in rec.retries[0]["error"]
    # remembered: the next structured request for that model goes straight to JSON mode
    srv.enqueue(OJson({"tickets": [{"id": "T-001", "description": "x"}]}))
    run(provider, req(tier="Tier 2", model="local-7b", schema=TrackPlan))
    assert srv.requests[2].body["response_format"] == {"type": "json_object"}
    assert len(srv.requests) == 3


# ---------------------------------------------------------------------------------------------
# faults
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["eof", "abort"])
def test_a_cut_stream_is_never_an_answer(srv, provider, mode):
    srv.enqueue(OFault.cut(after_chunks=2, text="I wrote the file and", mode=mode))
    e, rec = fail(provider, req())
    assert e.finish is Finish.CUT and e.streamed
    assert rec.text == "I wrote the file and"
    assert "cut after 20 characters" in e.message
    assert len(srv.requests) == 1                  # the session asks again, not the provider


def test_an_error_event_mid_stream_is_a_cut(srv, provider):
    srv.enqueue(OFault.stream_error(after_chunks=1, text="part"))
    e, _ = fail(provider, req())
    assert e.finish is Finish.CUT and "The server had an error" in e.message


def test_finish_length_is_max_tokens(srv, provider):
    srv.enqueue(OText("half an ans", finish="length", usage=OUsage(prompt=9, completion=5)))
    resp, _ = run(provider, req(limit=5))
    assert resp.finish is Finish.MAX_TOKENS and resp.text == "half an ans"
    assert resp.usage.output_tokens == 5


def test_no_finish_reason_is_a_cut_even_with_done(srv, provider):
    srv.enqueue(OText("looks complete", finish=None))
    e, _ = fail(provider, req())
    assert e.finish is Finish.CUT


@pytest.mark.parametrize("header", ["retry-after", "retry-after-ms"])
def test_429_waits_what_the_server_asks(srv, provider, sleeps, header):
    srv.enqueue(OFault.rate_limit(retry_after=3.0, header=header), OText("after the wait"))
    resp, rec = run(provider, req())
    assert resp.text == "after the wait"
    [r] = rec.retries
    assert (r["status"], r["reason"], r["delay_s"]) == (429, "rate_limited", 3.0)
    assert "Rate limit reached" in r["error"]
    assert sum(sleeps) == pytest.approx(3.0)


def test_server_errors_are_retried_then_given_up(srv, provider, sleeps):
    srv.enqueue(*[OFault.error(503, "The engine is currently overloaded, please try again "
                                    "later", "server_error")] * 3)
    e, rec = fail(provider, req(), match="gave up after 3 attempts")
    assert e.status == 503 and e.retryable
    assert "The engine is currently overloaded" in e.message
    assert [r["attempt"] for r in rec.retries] == [1, 2]
    assert sleeps == [0.5, 0.5, 0.5]             # 0.5 s, then 1 s in two slices


def test_a_400_is_reported_with_the_api_message_and_not_retried(srv, provider):
    srv.enqueue(OFault.error(400, "This model's maximum context length is 128000 tokens. "
                                  "However, your messages resulted in 130001 tokens.",
                             code="context_length_exceeded"))
    e, rec = fail(provider, req())
    assert e.status == 400 and not e.retryable and rec.retries == []
    assert "maximum context length is 128000 tokens" in e.message


def test_a_bad_key_is_a_401_whose_echo_of_the_key_is_scrubbed(srv):
    wrong = "sk-proj-WRONG-key-abcdefghijklmnop"
    p = OpenAIChatProvider(wrong, srv.base_url, sleep=Sleeps())
    e, _ = fail(p, req())
    p.close()
    assert e.status == 401 and "Incorrect API key provided" in e.message
    assert wrong[:14] not in e.message and "[redacted]" in e.message
    assert KEY not in repr(p) and wrong not in repr(p)


def test_malformed_tool_arguments_are_malformed(srv, provider):
    srv.enqueue(OCalls([("read_file", '{"path": "a.py"')]))       # never closed
    resp, _ = run(provider, req(tier="Tier 3", tools=TOOL_SPECS))
    assert resp.finish is Finish.MALFORMED and resp.tool_calls == []


def test_a_refusal_is_safety(srv, provider):
    srv.enqueue(OText("", refusal="I can't help with that."))
    e, _ = fail(provider, req(schema=EpicPlan))
    assert e.finish is Finish.SAFETY and "I can't help with that." in e.message


def test_a_connection_refused_is_retried_and_named(sleeps):
    p = OpenAIChatProvider(KEY, "http://127.0.0.1:9/v1", max_retries=1, sleep=sleeps)
    e, rec = fail(p, req(), match="could not connect to openai at http://127.0.0.1:9/v1")
    p.close()
    assert [r["reason"] for r in rec.retries] == ["network"]


def test_cancel_between_chunks(srv, provider):
    srv.enqueue(OText("one two three four", chunks=4))
    seen = []

    def on_chunk(t):
        if t:
            seen.append(t)
            raise Cancelled("cancelled by the user")
    with pytest.raises(Cancelled):
        provider.generate(req(), on_chunk)
    assert len(seen) == 1


def test_a_finished_stream_gives_its_connection_back(srv, provider):
    # the sync SDK closes a stream's response at [DONE] unread; the provider reads the rest,
    # so requests reuse one kept-alive connection instead of a new handshake each
    for i in range(4):
        srv.enqueue(OText(f"answer {i} " * 30, chunks=10, usage_on_finish=i % 2 == 1))
        assert run(provider, req())[0].text == f"answer {i} " * 30
    assert len({r.client_port for r in srv.requests}) == 1


def test_one_provider_serves_threads_in_parallel(srv, provider):
    srv.script(lambda r: OText("answer to " + r.body["messages"][-1]["content"], chunks=3))
    out: dict[int, str] = {}

    def one(i):
        out[i] = provider.generate(req(f"q{i}"), lambda t: None).text
    threads = [threading.Thread(target=one, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert out == {i: f"answer to q{i}" for i in range(6)}


# ---------------------------------------------------------------------------------------------
# keys, settings, the session, Ollama
# ---------------------------------------------------------------------------------------------

def test_key_from_the_environment_and_base_url_from_settings_or_the_sdk(srv, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(MissingApiKey, match="OPENAI_API_KEY"):
        make_provider(Settings(provider="openai"))
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    p = make_provider(Settings(provider="openai", openai=OpenAISettings(base_url=srv.base_url)))
    assert p.generate(req("a"), lambda t: None).text == "echo: a"
    p.close()
    monkeypatch.setenv("OPENAI_BASE_URL", srv.base_url)          # the SDK's own variable
    p = make_provider(Settings(provider="openai"))
    assert p.generate(req("b"), lambda t: None).text == "echo: b"
    p.close()


def test_a_session_logs_exact_usage_and_never_the_key(srv, provider, tmp_path):
    comms = CommsLog(tmp_path / "comms.jsonl")
    srv.enqueue(OCalls([("read_file", {"path": "README.md"})],
                       usage=OUsage(prompt=500, completion=40, cached=256)),
                OText(f"done; the key was {KEY}", usage=OUsage(prompt=700, completion=12,
                                                               cached=512)))
    s = AgentSession(provider, tier="Tier 3", model=MODEL, stream_id="Tier 3 (Worker): T-1",
                     system="work", comms=comms, price=Price(input=0.25, output=2.0,
                                                             cached=0.025),
                     tools=TOOL_SPECS,
                     tool_handler=lambda c: ToolOutcome({"ok": True, "output": KEY}, c.args))
    answer = s.send("go")
    assert KEY not in answer and s.ended_normally
    u = s.usage
    assert (u.input_tokens, u.cached_tokens, u.output_tokens, u.requests) == (1200, 768, 52, 2)
    assert u.cost_usd == pytest.approx((432 * 0.25 + 768 * 0.025 + 52 * 2.0) / 1e6)
    assert KEY not in (tmp_path / "comms.jsonl").read_text()
    assert KEY[:14] not in json.dumps([r.body for r in srv.requests])   # the tool result too


def test_ollama_lists_its_models_and_runs_without_a_key(monkeypatch):
    with FakeOpenAI(api_key=None) as local:
        monkeypatch.setenv("OLLAMA_HOST", f"127.0.0.1:{local.port}")
        models = list_ollama_models()
        assert [m["name"] for m in models] == ["llama3.2:3b", "qwen2.5-coder:7b"]
        assert models[1]["parameter_size"] == "7.6B"
        p = make_provider(Settings(provider="ollama"), "Tier 3")
        assert p.name == "ollama"
        assert p.generate(req("x", model="qwen2.5-coder:7b"), lambda t: None).text == "echo: x"
        p.close()
        r = local.requests[-1]
        assert r.path == "/v1/chat/completions" and r.body["model"] == "qwen2.5-coder:7b"


def test_ollama_without_a_server_says_so():
    with pytest.raises(ProviderError, match=r"no Ollama server answers at "
                                            r"http://127.0.0.1:9 .*ollama serve"):
        list_ollama_models("http://127.0.0.1:9", timeout_s=1.0)


def test_ollama_host_forms():
    env: dict[str, str] = {}
    assert ollama_host("", env) == "http://127.0.0.1:11434"
    assert ollama_host("", {"OLLAMA_HOST": "0.0.0.0"}) == "http://127.0.0.1:11434"
    assert ollama_host("", {"OLLAMA_HOST": "gpu-box:8080"}) == "http://gpu-box:8080"
    assert ollama_host("https://ollama.example.com", env) == "https://ollama.example.com:443"
    assert ollama_host("http://127.0.0.1:11500/", env) == "http://127.0.0.1:11500"
