"""The issue's contract, from outside: `clutch run --provider openai|ollama|anthropic --yes
--json` completes a whole run (Tier 1 plans, Tier 2 makes tickets, Tier 3 workers call tools)
through the REAL SDKs against the loopback fakes, and the summary's usage equals what the
server sent, token for token, by the definitions of providers/openai_wire.usage_of and
providers/anthropic_messages.usage_of. The key is on no file of the run.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.fakes.fake_anthropic import AJson, AText, ATools, AUsage, FakeAnthropic
from tests.fakes.fake_openai import FakeOpenAI, OCalls, OJson, OText, OUsage

ROOT = Path(__file__).resolve().parents[2]
OPENAI_KEY = "sk-proj-FAKE-run-key-0123456789abcdefghij"
ANTHROPIC_KEY = "sk-ant-api03-FAKE-run-key-0123456789abcdef"
TIERS = ("Tier 1", "Tier 2", "Tier 3")


def clutch(ws: Path, provider: str, env: dict) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items()
         if not k.startswith(("OPENAI_", "ANTHROPIC_", "GEMINI_", "GOOGLE_", "OLLAMA_"))}
    e.update(env)
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), "run", "--epic",
                           "Write one greeting note per ticket.", "--workspace", str(ws),
                           "--provider", provider, "--yes", "--json", "--max-workers", "2"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT, env=e,
                          stdin=subprocess.DEVNULL)


class Script:
    """The fake model: answers by tier (read from the system prompt, as a model would) and
    tallies the usage it sent per tier."""

    def __init__(self, usage_for):
        self.lock = threading.Lock()
        self.sent: dict[str, list] = {t: [] for t in TIERS}
        self.usage_for = usage_for             # (tier, round) -> the usage to send

    def tier(self, system: str) -> str:
        for tier, head in (("Tier 1", "You are Tier 1"), ("Tier 2", "You are Tier 2"),
                           ("Tier 3", "You are a Tier 3 worker")):
            if system.startswith(head):
                return tier
        raise AssertionError(f"a request from no tier: {system[:80]!r}")

    def answer(self, system: str, first_user: str, rounds: int, text, calls, json_reply):
        tier = self.tier(system)
        usage = self.usage_for(tier, rounds)
        with self.lock:
            self.sent[tier].append(usage)
        if tier == "Tier 1":
            return json_reply({"tracks": [{"title": "Greeting notes",
                                           "goal": "Write a greeting note per ticket.",
                                           "acceptance_criteria": ["each note exists"]}]},
                              usage)
        if tier == "Tier 2":
            return json_reply({"tickets": [
                {"id": "T-001", "description": "Write out/T-001.txt",
                 "target_files": ["out/T-001.txt"]},
                {"id": "T-002", "description": "Write out/T-002.txt",
                 "target_files": ["out/T-002.txt"], "depends_on": ["T-001"]}]}, usage)
        tid = "T-001" if "TICKET T-001" in first_user else "T-002"
        if rounds == 0:
            return calls([("write_file", {"path": f"out/{tid}.txt",
                                          "content": f"hello from {tid}\n"})],
                         f"{tid}: writing the note.", usage)
        return text(f"{tid} done: wrote out/{tid}.txt.", usage)


def _openai_handler(script: Script):
    def handle(req):
        msgs = req.body["messages"]
        first = next((m["content"] for m in msgs if m["role"] == "user"), "")
        rounds = sum(1 for m in msgs if m["role"] == "assistant")
        return script.answer(msgs[0]["content"], first, rounds,
                             lambda t, u: OText(t, usage=u),
                             lambda c, t, u: OCalls(c, text=t, usage=u),
                             lambda o, u: OJson(o, usage=u))
    return handle


def _anthropic_handler(script: Script):
    def handle(req):
        msgs = req.body["messages"]
        first = msgs[0]["content"]
        first = "".join(b.get("text", "") for b in first) if isinstance(first, list) else first
        rounds = sum(1 for m in msgs if m["role"] == "assistant")
        return script.answer(req.body["system"][0]["text"], first, rounds,
                             lambda t, u: AText(t, usage=u),
                             lambda c, t, u: ATools(c, text=t, usage=u),
                             lambda o, u: AJson(o, usage=u))
    return handle


def _check_run(p: subprocess.CompletedProcess, ws: Path, expected: dict, key: str | None):
    assert p.returncode == 0, p.stderr[-3000:]
    summary = json.loads(p.stdout)
    assert [t["status"] for t in summary["tracks"]] == ["completed"]
    assert [k["status"] for k in summary["tracks"][0]["tickets"]] == ["completed"] * 2
    for tid in ("T-001", "T-002"):
        assert (ws / "out" / f"{tid}.txt").read_text() == f"hello from {tid}\n"
    for tier in TIERS:
        got = {k: summary["usage"][tier][k] for k in expected[tier]}
        assert got == expected[tier], tier
    if key:
        for f in ws.rglob("*"):
            if f.is_file():
                assert key.encode() not in f.read_bytes(), f
    return summary


def _openai_expected(sent: dict) -> dict:
    out = {}
    for tier, us in sent.items():
        out[tier] = {"input_tokens": sum(u.prompt for u in us),
                     "cached_tokens": sum(u.cached for u in us),
                     "thoughts_tokens": sum(u.reasoning for u in us),
                     "output_tokens": sum(u.completion - u.reasoning for u in us),
                     "total_tokens": sum(u.total for u in us), "requests": len(us)}
    return out


@pytest.mark.parametrize("provider", ["openai", "ollama"])
def test_clutch_run_on_an_openai_compatible_server(tmp_path, provider):
    key = OPENAI_KEY if provider == "openai" else None
    script = Script(lambda tier, rnd: OUsage(prompt=300 + 10 * rnd, completion=80, cached=128,
                                             reasoning=24 if tier == "Tier 1" else 0))
    with FakeOpenAI(api_key=key) as srv:
        srv.script(_openai_handler(script))
        env = ({"OPENAI_API_KEY": OPENAI_KEY, "OPENAI_BASE_URL": srv.base_url}
               if provider == "openai" else {"OLLAMA_HOST": srv.root})
        p = clutch(tmp_path / "ws", provider, env)
        assert srv.handler_errors == []
        bodies = [r.body for r in srv.requests]
    summary = _check_run(p, tmp_path / "ws", _openai_expected(script.sent), key)
    assert all(b["stream"] and b["stream_options"] == {"include_usage": True} for b in bodies)
    t1 = bodies[0]
    assert t1["response_format"]["type"] == "json_schema"
    assert t1["response_format"]["json_schema"]["name"] == "EpicPlan"
    # the worker's second request echoes the call's id in its tool message
    second = next(b for b in bodies if any(m["role"] == "tool" for m in b["messages"]))
    call = next(m for m in second["messages"] if m["role"] == "assistant")["tool_calls"][0]
    tool = next(m for m in second["messages"] if m["role"] == "tool")
    assert tool["tool_call_id"] == call["id"] and call["function"]["name"] == "write_file"
    local = summary["usage"]["Tier 3"]["cost_usd"]
    assert (local == 0) == (provider == "ollama")       # a local model costs nothing


def test_clutch_run_on_anthropic(tmp_path):
    script = Script(lambda tier, rnd: AUsage(input=40 + rnd, output=70, cache_read=1024 * rnd,
                                             cache_creation=0 if rnd else 1024))
    with FakeAnthropic(api_key=ANTHROPIC_KEY) as srv:
        srv.script(_anthropic_handler(script))
        p = clutch(tmp_path / "ws", "anthropic",
                   {"ANTHROPIC_API_KEY": ANTHROPIC_KEY, "ANTHROPIC_BASE_URL": srv.root})
        assert srv.handler_errors == []
        bodies = [r.body for r in srv.requests]
    expected = {tier: {"input_tokens": sum(u.input + u.cache_read + u.cache_creation for u in us),
                       "cached_tokens": sum(u.cache_read for u in us),
                       "cache_write_tokens": sum(u.cache_creation for u in us),
                       "output_tokens": sum(u.output for u in us),
                       "requests": len(us)}
                for tier, us in script.sent.items()}
    summary = _check_run(p, tmp_path / "ws", expected, ANTHROPIC_KEY)
    assert summary["usage"]["Tier 1"]["cost_usd"] > 0
    t1 = bodies[0]
    assert t1["tool_choice"] == {"type": "tool", "name": "submit_epic_plan"}
    assert t1["tools"][0]["input_schema"]["title"] == "EpicPlan"
    assert t1["system"][0]["cache_control"] == {"type": "ephemeral"}
    second = next(b for b in bodies if len(b["messages"]) == 3)
    use = [blk for blk in second["messages"][1]["content"] if blk["type"] == "tool_use"][0]
    result = second["messages"][2]["content"][0]
    assert result["type"] == "tool_result" and result["tool_use_id"] == use["id"]


def test_clutch_run_with_a_provider_per_tier(tmp_path):
    """Tier 1 and 2 on Anthropic, the Tier 3 workers on a local OpenAI-compatible server
    (Ollama): each tier's requests reach its own server, and each tier's usage is exactly what
    its server sent (a local model costs nothing)."""
    a_script = Script(lambda tier, rnd: AUsage(input=50 + rnd, output=60, cache_read=0,
                                               cache_creation=0))
    o_script = Script(lambda tier, rnd: OUsage(prompt=200 + 5 * rnd, completion=40, cached=64,
                                               reasoning=0))
    ws = tmp_path / "ws"
    with FakeAnthropic(api_key=ANTHROPIC_KEY) as claude, FakeOpenAI(api_key=None) as local:
        claude.script(_anthropic_handler(a_script))
        local.script(_openai_handler(o_script))
        e = {k: v for k, v in os.environ.items()
             if not k.startswith(("OPENAI_", "ANTHROPIC_", "GEMINI_", "GOOGLE_", "OLLAMA_"))}
        e.update({"ANTHROPIC_API_KEY": ANTHROPIC_KEY, "ANTHROPIC_BASE_URL": claude.root,
                  "OLLAMA_HOST": local.root})
        p = subprocess.run([sys.executable, str(ROOT / "cli.py"), "run", "--epic",
                            "Write one greeting note per ticket.", "--workspace", str(ws),
                            "--provider", "anthropic", "--tier-provider",
                            "Tier 3=ollama:qwen2.5-coder:7b", "--yes", "--json",
                            "--max-workers", "2"], capture_output=True, text=True, timeout=120,
                           cwd=ROOT, env=e, stdin=subprocess.DEVNULL)
        assert claude.handler_errors == [] and local.handler_errors == []
        local_models = {r.body["model"] for r in local.requests}
    assert [len(a_script.sent[t]) > 0 for t in TIERS] == [True, True, False]
    assert [len(o_script.sent[t]) > 0 for t in TIERS] == [False, False, True]
    assert local_models == {"qwen2.5-coder:7b"}
    expected = {"Tier 1": {"input_tokens": sum(u.input for u in a_script.sent["Tier 1"]),
                           "output_tokens": sum(u.output for u in a_script.sent["Tier 1"])},
                "Tier 2": {"input_tokens": sum(u.input for u in a_script.sent["Tier 2"]),
                           "output_tokens": sum(u.output for u in a_script.sent["Tier 2"])},
                "Tier 3": {"input_tokens": sum(u.prompt for u in o_script.sent["Tier 3"]),
                           "cached_tokens": sum(u.cached for u in o_script.sent["Tier 3"]),
                           "requests": len(o_script.sent["Tier 3"])}}
    summary = _check_run(p, ws, expected, ANTHROPIC_KEY)
    assert summary["usage"]["Tier 3"]["cost_usd"] == 0 < summary["usage"]["Tier 1"]["cost_usd"]
