"""AnthropicProvider alone: the REAL `anthropic` SDK against the fake Messages API server on
127.0.0.1 (tests/fakes/fake_anthropic.py), which checks requests as the API does (roles
alternate, every tool_result answers a tool_use, at most 4 cache_control blocks). Faults go
through the retry loop with `sleep` injected.
"""
from __future__ import annotations

import json

import pytest

from ai_client import (AgentSession, AnthropicProvider, CommsLog, Finish, Message,
                       MissingApiKey, ModelRequest, ToolOutcome, ToolReturn,
                       make_provider)
from models import AnthropicSettings, EpicPlan, Settings, cost_of
from tests.fakes.fake_anthropic import AFault, AJson, AText, ATools, AUsage, FakeAnthropic
from tests.fakes.calls import PLAN, Sleeps, fail, request, run
from tools import TOOL_SPECS

KEY = "sk-ant-api03-FAKE-provider-0123456789abcdef"
MODEL = "claude-haiku-4-5"


@pytest.fixture(scope="module")
def _srv():
    with FakeAnthropic(api_key=KEY) as s:
        yield s


@pytest.fixture
def srv(_srv):
    _srv.reset()
    yield _srv
    assert _srv.handler_errors == []


@pytest.fixture
def sleeps():
    return Sleeps()


@pytest.fixture
def provider(srv, sleeps):
    p = AnthropicProvider(KEY, srv.root, max_retries=2, initial_delay_s=0.5, max_delay_s=10.0,
                          max_output_tokens=4096, sleep=sleeps, rand=lambda: 1.0)
    yield p
    p.close()


def req(text="hello there", *, model=MODEL, **kw) -> ModelRequest:
    return request(text, model=model, **kw)


# ---------------------------------------------------------------------------------------------
# streaming, usage, caching, request shape
# ---------------------------------------------------------------------------------------------

def test_text_streams_past_pings_and_the_prefix_is_cached(srv, provider):
    srv.enqueue(AText("The quick brown fox jumps.", chunks=4))
    resp, rec = run(provider, req("hi"))
    assert rec.chunks == ["The qui", "ck brow", "n fox ", "jumps."]
    assert resp.text == "The quick brown fox jumps." and resp.finish is Finish.STOP
    [r] = srv.requests
    assert r.path == "/v1/messages" and r.headers["anthropic-version"]
    b = r.body
    assert b["stream"] is True and b["max_tokens"] == 4096 and b["model"] == MODEL
    assert b["system"] == [{"type": "text", "text": "be terse",
                            "cache_control": {"type": "ephemeral"}}]
    assert b["messages"] == [{"role": "user", "content": [
        {"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}]}]


def test_usage_counts_every_prompt_token_and_prices_cache_writes(srv, provider):
    srv.enqueue(AText("ok", usage=AUsage(input=30, output=120, cache_read=2048,
                                         cache_creation=512, thinking=20), delta_input=True))
    resp, _ = run(provider, req())
    u = resp.usage
    assert (u.input_tokens, u.cached_tokens, u.cache_write_tokens, u.output_tokens,
            u.thoughts_tokens, u.total_tokens) == (2590, 2048, 512, 100, 20, 2710)
    price = Settings().price_for("claude-haiku-4-5-20251001")
    assert (price.input, price.cached, price.cache_write) == (1.0, 0.10, 1.25)
    assert cost_of(u, price) == pytest.approx((30 * 1.0 + 2048 * 0.10 + 512 * 1.25
                                               + 120 * 5.0) / 1e6)


def test_parallel_tool_use_with_split_input_json(srv, provider):
    calls = [("write_file", {"path": "a.py", "content": "print('hi')\n"}),
             ("run_shell", {"command": "python a.py"})]
    srv.enqueue(ATools(calls, text="Writing then running.", json_chunks=4))
    resp, rec = run(provider, req(tier="Tier 3", tools=TOOL_SPECS))
    assert [(c.name, c.args) for c in resp.tool_calls] == calls
    assert all(c.id.startswith("toolu_") for c in resp.tool_calls)
    assert resp.finish is Finish.TOOL_CALLS and rec.text == "Writing then running."
    tools = srv.requests[0].body["tools"]
    assert [t["name"] for t in tools] == [s.name for s in TOOL_SPECS]
    assert tools[-1]["cache_control"] == {"type": "ephemeral"}
    assert all("cache_control" not in t for t in tools[:-1])


def test_tool_results_echo_tool_use_ids_in_one_user_turn(srv, provider):
    srv.enqueue(ATools([("read_file", {"path": "a"}), ("read_file", {"path": "b"})]))
    first, _ = run(provider, req(tier="Tier 3", tools=TOOL_SPECS))
    history = [Message("user", "go"), Message("model", "", tool_calls=first.tool_calls),
               Message("tool", tool_returns=[
                   ToolReturn(first.tool_calls[0].id, "read_file", {"ok": True, "output": "A"}),
                   ToolReturn(first.tool_calls[1].id, "read_file",
                              {"ok": False, "error": "no such file"})]),
               Message("user", "and now finish")]
    srv.enqueue(AText("done"))
    resp, _ = run(provider, req(tier="Tier 3", tools=TOOL_SPECS, messages=history))
    assert resp.text == "done"                      # the fake accepted the history
    msgs = srv.requests[1].body["messages"]
    assert [m["role"] for m in msgs] == ["user", "assistant", "user"]
    uses = [b["id"] for b in msgs[1]["content"] if b["type"] == "tool_use"]
    results = [b for b in msgs[2]["content"] if b["type"] == "tool_result"]
    assert [r["tool_use_id"] for r in results] == uses == [c.id for c in first.tool_calls]
    assert json.loads(results[0]["content"]) == {"ok": True, "output": "A"}
    assert results[1]["is_error"] is True and "is_error" not in results[0]
    assert msgs[2]["content"][-1] == {"type": "text", "text": "and now finish",
                                      "cache_control": {"type": "ephemeral"}}


def test_requests_reuse_one_connection(srv, provider):
    for i in range(3):
        srv.enqueue(AText(f"answer {i}"))
        assert run(provider, req())[0].text == f"answer {i}"
    assert len({r.client_port for r in srv.requests}) == 1


def test_structured_output_is_a_forced_tool_with_the_plan_schema(srv, provider):
    srv.enqueue(AJson(PLAN, json_chunks=5))
    resp, rec = run(provider, req(tier="Tier 1", schema=EpicPlan))
    assert json.loads(resp.text) == PLAN and resp.finish is Finish.STOP
    assert rec.text == resp.text and len(rec.chunks) == 5     # the JSON shown as it streams
    b = srv.requests[0].body
    assert b["tool_choice"] == {"type": "tool", "name": "submit_epic_plan"}
    [tool] = b["tools"]
    assert tool["input_schema"] == EpicPlan.model_json_schema()


# ---------------------------------------------------------------------------------------------
# faults
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["eof", "abort"])
def test_a_cut_stream_is_never_an_answer(srv, provider, mode):
    srv.enqueue(AFault.cut(after_chunks=2, text="I wrote the file and", mode=mode))
    e, rec = fail(provider, req())
    assert e.finish is Finish.CUT and e.streamed and rec.text == "I wrote the file and"
    assert e.usage is not None and e.usage.input_tokens > 0    # the partial usage is booked


def test_an_overloaded_event_mid_stream_is_a_cut_and_before_text_a_retry(srv, provider):
    srv.enqueue(AFault.stream_error(after_chunks=1, text="part"))
    e, _ = fail(provider, req())
    assert e.finish is Finish.CUT and "Overloaded" in e.message
    srv.enqueue(AFault.stream_error(after_chunks=0), AText("fine"))
    resp, rec = run(provider, req())
    assert resp.text == "fine" and [r["status"] for r in rec.retries] == [529]


def test_stop_reason_max_tokens(srv, provider):
    srv.enqueue(AText("half an ans", stop="max_tokens", usage=AUsage(input=9, output=5)))
    resp, _ = run(provider, req(limit=5))
    assert resp.finish is Finish.MAX_TOKENS and resp.text == "half an ans"
    assert srv.requests[0].body["max_tokens"] == 5


def test_no_stop_reason_is_a_cut(srv, provider):
    srv.enqueue(AText("looks complete", stop=None))
    e, _ = fail(provider, req())
    assert e.finish is Finish.CUT


def test_429_and_529_wait_what_the_server_asks(srv, provider, sleeps):
    srv.enqueue(AFault.rate_limit(retry_after=4), AFault.overloaded(retry_after=2),
                AText("after the waits"))
    resp, rec = run(provider, req())
    assert resp.text == "after the waits"
    assert [(r["status"], r["reason"], r["delay_s"]) for r in rec.retries] == [
        (429, "rate_limited", 4.0), (529, "overloaded", 2.0)]
    assert sum(sleeps) == pytest.approx(6.0)


def test_a_retry_after_beyond_the_longest_wait_is_not_waited_for(srv, provider, sleeps):
    srv.enqueue(AFault.rate_limit(retry_after=600))
    e, rec = fail(provider, req(), match="asks to wait 600 s")
    assert e.status == 429 and e.retryable and sleeps == [] and rec.retries == []


def test_a_400_is_reported_with_the_api_message(srv, provider):
    srv.enqueue(AFault.error(400, "invalid_request_error",
                             "prompt is too long: 210000 tokens > 200000 maximum"))
    e, rec = fail(provider, req())
    assert e.status == 400 and not e.retryable and rec.retries == []
    assert "prompt is too long: 210000 tokens > 200000 maximum" in e.message


def test_a_bad_key_is_a_401_named_without_the_key(srv):
    wrong = "sk-ant-api03-WRONG-0123456789abcdef"
    p = AnthropicProvider(wrong, srv.root, sleep=Sleeps())
    e, _ = fail(p, req())
    p.close()
    assert e.status == 401 and "authentication_error" in e.message
    assert wrong not in e.message and wrong not in repr(p)


def test_a_refusal_is_safety(srv, provider):
    srv.enqueue(AText("I won't", stop="refusal"))
    e, _ = fail(provider, req())
    assert e.finish is Finish.SAFETY


# ---------------------------------------------------------------------------------------------
# keys, settings, the session
# ---------------------------------------------------------------------------------------------

def test_key_from_the_environment_base_url_from_settings_or_the_sdk(srv, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(MissingApiKey, match="ANTHROPIC_API_KEY"):
        make_provider(Settings(provider="anthropic"))
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    p = make_provider(Settings(provider="anthropic",
                               anthropic=AnthropicSettings(base_url=srv.root)))
    assert p.generate(req("a"), lambda t: None).text == "echo: a"
    p.close()
    monkeypatch.setenv("ANTHROPIC_BASE_URL", srv.root)
    p = make_provider(Settings(provider="anthropic"))
    assert p.generate(req("b"), lambda t: None).text == "echo: b"
    p.close()


def test_a_session_round_trip_with_exact_usage_and_no_key_on_disk(srv, provider, tmp_path):
    comms = CommsLog(tmp_path / "comms.jsonl")
    srv.enqueue(ATools([("read_file", {"path": "README.md"})],
                       usage=AUsage(input=20, output=40, cache_creation=1500)),
                AText("done", usage=AUsage(input=35, output=12, cache_read=1500)))
    s = AgentSession(provider, tier="Tier 3", model=MODEL, stream_id="Tier 3 (Worker): T-1",
                     system="work", comms=comms,
                     price=Settings().price_for(MODEL, "anthropic"), tools=TOOL_SPECS,
                     tool_handler=lambda c: ToolOutcome({"ok": True, "output": KEY}, c.args))
    assert s.send("go") == "done" and s.ended_normally
    u = s.usage
    assert (u.input_tokens, u.cached_tokens, u.cache_write_tokens, u.output_tokens,
            u.requests) == (3055, 1500, 1500, 52, 2)
    assert KEY not in (tmp_path / "comms.jsonl").read_text()
    assert KEY[:14] not in json.dumps([r.body for r in srv.requests])
