"""Tiers on different providers at once, sharing one comms log (what the engine will do once
it asks a ProviderPool for each tier's provider): Tier 1 on Anthropic, Tier 2 on OpenAI, two
Tier 3 workers in parallel on Ollama, Tier 4 offline. Usage per tier, per ticket and in total
stays exact, token for token, each entry tagged with its provider, each cost from its own
vendor's prices (the local model's 0).
"""
from __future__ import annotations

import threading

from ai_client import AgentSession, CommsLog, ProviderPool, ToolOutcome
from models import EpicPlan, Settings, TrackPlan
from tests.fakes.fake_anthropic import AJson, AUsage, FakeAnthropic
from tests.fakes.fake_openai import FakeOpenAI, OCalls, OJson, OText, OUsage
from tools import TOOL_SPECS

OPENAI_KEY = "sk-proj-FAKE-mixed-0123456789abcdef"
ANTHROPIC_KEY = "sk-ant-api03-FAKE-mixed-0123456789"


def test_per_tier_usage_is_exact_across_providers(tmp_path, monkeypatch):
    with FakeAnthropic(api_key=ANTHROPIC_KEY) as claude, \
            FakeOpenAI(api_key=OPENAI_KEY) as gpt, FakeOpenAI(api_key=None) as local:
        monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
        monkeypatch.setenv("OPENAI_BASE_URL", gpt.base_url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
        monkeypatch.setenv("ANTHROPIC_BASE_URL", claude.root)
        monkeypatch.setenv("OLLAMA_HOST", local.root)
        settings = Settings(provider="offline", offline_pace_s=0.0,
                            tier_providers={"Tier 1": "anthropic", "Tier 2": "openai",
                                            "Tier 3": "ollama"},
                            tier_models={"Tier 3": "qwen2.5-coder:7b"})
        pool = ProviderPool(settings)
        comms = CommsLog(tmp_path / "comms.jsonl")

        def session(tier, sid, schema=None, ticket="", **kw):
            model = settings.model_for(tier)
            provider = pool.for_tier(tier)
            return AgentSession(provider, tier=tier, model=model, stream_id=sid, system=tier,
                                comms=comms, price=settings.price_for(model, provider.name),
                                response_schema=schema, ticket_id=ticket, **kw)

        claude.enqueue(AJson({"tracks": [{"title": "t", "goal": "g",
                                          "acceptance_criteria": ["a"]}]},
                             usage=AUsage(input=50, output=30, cache_read=2000,
                                          cache_creation=300)))
        session("Tier 1", "Tier 1 (Orchestrator)", EpicPlan).send("plan")
        gpt.enqueue(OJson({"tickets": [{"id": "T-001", "description": "d"}]},
                          usage=OUsage(prompt=900, completion=120, cached=512, reasoning=64)))
        session("Tier 2", "Tier 2 (Tech Lead): t", TrackPlan).send("tickets")

        def answer(req):
            msgs = req.body["messages"]
            tid = "T-001" if "T-001" in msgs[1]["content"] else "T-002"
            if not any(m["role"] == "tool" for m in msgs):
                return OCalls([("read_file", {"path": "README.md"})],
                              usage=OUsage(prompt=700 if tid == "T-001" else 710,
                                           completion=20))
            return OText(f"{tid} done", usage=OUsage(prompt=800, completion=9, cached=640))
        local.script(answer)
        errors = []

        def worker(tid):
            try:
                s = session("Tier 3", f"Tier 3 (Worker): {tid}", ticket=tid, tools=TOOL_SPECS,
                            tool_handler=lambda c: ToolOutcome({"ok": True, "output": "#"},
                                                               c.args))
                assert s.send(f"TICKET {tid}: go") == f"{tid} done"
            except BaseException as e:      # reported below: the test fails on it
                errors.append(e)
        threads = [threading.Thread(target=worker, args=(t,)) for t in ("T-001", "T-002")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == []
        session("Tier 4", "Tier 4 (QA): T-001", ticket="T-001").send("diagnose")
        pool.close()

    by_tier = comms.usage_by("tier")
    t1, t2, t3, t4 = (by_tier[t] for t in ("Tier 1", "Tier 2", "Tier 3", "Tier 4"))
    assert (t1.input_tokens, t1.cached_tokens, t1.cache_write_tokens, t1.output_tokens) == \
        (2350, 2000, 300, 30)
    assert (t2.input_tokens, t2.cached_tokens, t2.thoughts_tokens, t2.output_tokens) == \
        (900, 512, 64, 56)
    assert (t3.input_tokens, t3.cached_tokens, t3.output_tokens, t3.requests) == \
        (700 + 710 + 800 * 2, 640 * 2, 20 * 2 + 9 * 2, 4)
    assert t4.requests == 1 and t4.cost_usd == 0
    by_ticket = comms.usage_by("ticket")
    assert by_ticket["T-002"].input_tokens == 710 + 800
    assert comms.total() == t1 + t2 + t3 + t4
    # each cost at its own vendor's prices; the local model is free
    assert t1.cost_usd == (50 * 5.0 + 2000 * 0.5 + 300 * 6.25 + 30 * 25.0) / 1e6
    assert abs(t2.cost_usd - (388 * 0.25 + 512 * 0.025 + 120 * 2.0) / 1e6) < 1e-12
    assert t3.cost_usd == 0
    providers = {e["tier"]: e["provider"] for e in comms.entries() if e["kind"] == "response"}
    assert providers == {"Tier 1": "anthropic", "Tier 2": "openai", "Tier 3": "ollama",
                         "Tier 4": "offline"}
    text = (tmp_path / "comms.jsonl").read_text()
    assert OPENAI_KEY not in text and ANTHROPIC_KEY not in text
