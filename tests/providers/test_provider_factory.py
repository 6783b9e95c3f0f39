"""A provider and a model per tier: Settings, make_provider(settings, tier), ProviderPool, the
CLI's --provider / --tier-provider, prices per provider, keys present (names, never values).
"""
from __future__ import annotations

import argparse

import pytest

from ai_client import (AnthropicProvider, MissingApiKey, OfflineProvider, OpenAIChatProvider,
                       ProviderPool, keys_present, make_provider, parse_tier_provider)
from models import Price, Settings, Usage, cost_of

OPENAI_KEY = "sk-proj-FAKE-factory-0123456789abcdef"
ANTHROPIC_KEY = "sk-ant-api03-FAKE-factory-0123456789"


@pytest.fixture
def keys(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)


MIXED = dict(provider="anthropic", tier_providers={"Tier 2": "openai", "Tier 3": "ollama",
                                                   "Tier 4": "offline"},
             tier_models={"Tier 3": "qwen2.5-coder:7b"})


def test_each_tier_gets_its_own_provider_and_model(keys):
    s = Settings(**MIXED)
    built = {t: make_provider(s, t) for t in ("Tier 1", "Tier 2", "Tier 3", "Tier 4")}
    assert isinstance(built["Tier 1"], AnthropicProvider)
    assert isinstance(built["Tier 2"], OpenAIChatProvider) and built["Tier 2"].name == "openai"
    assert isinstance(built["Tier 3"], OpenAIChatProvider) and built["Tier 3"].name == "ollama"
    assert "127.0.0.1:11434/v1" in repr(built["Tier 3"])
    assert isinstance(built["Tier 4"], OfflineProvider)
    assert isinstance(make_provider(s), AnthropicProvider)          # no tier: the default
    assert [s.model_for(t) for t in ("Tier 1", "Tier 2", "Tier 3", "Tier 4")] == [
        "claude-opus-4-5", "gpt-5-mini", "qwen2.5-coder:7b", "offline"]
    assert s.model_for("Tier 2", "gpt-4.1") == "gpt-4.1"           # a ticket's own model
    assert s.providers_in_use() == ["anthropic", "openai", "ollama", "offline"]
    for p in built.values():
        getattr(p, "close", lambda: None)()


def test_a_missing_key_names_the_tier_s_provider(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    s = Settings(provider="offline", tier_providers={"Tier 1": "openai"})
    assert isinstance(make_provider(s, "Tier 3"), OfflineProvider)
    with pytest.raises(MissingApiKey, match="OPENAI_API_KEY"):
        make_provider(s, "Tier 1")


def test_settings_refuse_what_is_not_a_tier_or_a_provider():
    with pytest.raises(ValueError, match="Tier 9"):
        Settings(tier_providers={"Tier 9": "ollama"})
    with pytest.raises(ValueError, match="mistral"):
        Settings(tier_providers={"Tier 3": "mistral"})
    with pytest.raises(ValueError):
        Settings(provider="mistral")


def test_the_pool_shares_one_provider_per_name_and_rebuilds_on_change(keys):
    pool = ProviderPool(Settings(**MIXED))
    a = pool.for_tier("Tier 1")
    assert pool.for_tier("Tier 1") is a
    o = pool.for_tier("Tier 2")
    assert pool.for_tier(None) is a
    s2 = Settings(**MIXED).model_copy(update={"tier_providers": {"Tier 2": "anthropic"}})
    pool.update(s2)
    assert pool.for_tier("Tier 2") is a                 # now on anthropic, the same client
    changed = s2.model_copy(update={"anthropic": s2.anthropic.model_copy(
        update={"base_url": "http://127.0.0.1:9"})})
    pool.update(changed)
    b = pool.for_tier("Tier 1")
    assert b is not a and "127.0.0.1:9" in repr(b)
    assert not a._client.is_closed()        # retired, not closed: running agents keep it
    pool.close()                            # every client it made, retired ones too
    assert a._client.is_closed() and b._client.is_closed() and o._client.is_closed()
    fixed = OfflineProvider(pace_s=0)
    assert ProviderPool(Settings(**MIXED), fixed=fixed).for_tier("Tier 2") is fixed


@pytest.mark.parametrize("spec,want", [
    ("Tier 3=ollama:qwen2.5-coder:7b", ("Tier 3", "ollama", "qwen2.5-coder:7b")),
    ("tier1=anthropic", ("Tier 1", "anthropic", None)),
    ("2 = openai:gpt-4.1", ("Tier 2", "openai", "gpt-4.1")),
])
def test_tier_provider_specs(spec, want):
    assert parse_tier_provider(spec) == want


@pytest.mark.parametrize("spec,msg", [
    ("Tier 3 ollama", "no '='"), ("Tier 5=ollama", "not a tier"),
    ("Tier 3=mistral:7b", "unknown provider 'mistral'"),
])
def test_bad_tier_provider_specs_say_what_is_wrong(spec, msg):
    with pytest.raises(ValueError, match=msg):
        parse_tier_provider(spec)


def test_cli_flags_set_all_tiers_then_one(tmp_path):
    import cli
    ns = argparse.Namespace(provider="openai", tier_provider=["Tier 3=ollama:qwen2.5-coder:7b"],
                            max_workers=None, pace=None, step=False)
    s, _ = cli._settings(tmp_path, ns)
    assert s.provider == "openai" and s.tier_providers == {"Tier 3": "ollama"}
    assert s.model_for("Tier 3") == "qwen2.5-coder:7b" and s.model_for("Tier 1") == "gpt-5"
    args = cli._parser().parse_args(["run", "--provider", "anthropic", "--tier-provider",
                                     "Tier 4=offline", "--epic", "x"])
    assert args.provider == "anthropic" and args.tier_provider == ["Tier 4=offline"]
    bad = argparse.Namespace(provider=None, tier_provider=["Tier 3=nope"], max_workers=None,
                             pace=None, step=False)
    with pytest.raises(ValueError, match="unknown provider 'nope'"):
        cli._settings(tmp_path, bad)


def test_prices_per_provider_local_models_are_free():
    s = Settings()
    assert s.price_for("qwen2.5-coder:7b", "ollama") == Price()
    assert s.price_for("gpt-5", "ollama") == Price()                 # a local copy costs 0
    assert s.price_for("gpt-5-mini-2025-08-07", "openai").input == 0.25
    assert s.price_for("claude-sonnet-4-5-20250929", "anthropic").cache_write == 3.75
    assert s.price_for("claude-opus-4-1", "anthropic").input == 15.0
    assert s.price_for("deepseek-chat", "openai").cached == 0.028
    # a cache write costs its own rate; without one it is priced as input
    u = Usage(input_tokens=1000, cached_tokens=200, cache_write_tokens=300, output_tokens=10)
    assert cost_of(u, Price(input=3, output=15, cached=0.3, cache_write=3.75)) == \
        pytest.approx((500 * 3 + 200 * 0.3 + 300 * 3.75 + 10 * 15) / 1e6)
    assert cost_of(u, Price(input=3, output=15, cached=0.3)) == \
        pytest.approx((800 * 3 + 200 * 0.3 + 10 * 15) / 1e6)


def test_keys_present_names_never_values(monkeypatch):
    env = {"OPENAI_API_KEY": OPENAI_KEY, "ANTHROPIC_API_KEY": " ", "GEMINI_API_KEY": ""}
    got = keys_present(env)
    assert got == {"GEMINI_API_KEY": False, "GOOGLE_API_KEY": False, "OPENAI_API_KEY": True,
                   "ANTHROPIC_API_KEY": False}
    assert OPENAI_KEY not in repr(got)


def test_importing_the_door_imports_no_sdk():
    import subprocess
    import sys
    code = ("import sys, ai_client; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('openai', 'anthropic') or m.startswith('google.genai')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=__import__("pathlib").Path(__file__).resolve().parents[2],
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
