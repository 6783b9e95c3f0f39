"""Per-tier providers as a person sees and changes them (models.with_providers and friends):
the model each tier runs on stays what the engine will use, bad names get sentences that say
what is accepted, and no key value is ever part of what is shown."""
from __future__ import annotations

import json

import pytest

from models import (DEFAULT_MODELS, Settings, endpoint_problems, folded, key_status,
                    normalize_tier, providers_view, safe_url, tier_choices, with_providers)

KEY = "sk-ant-api03-VERYSECRETVALUE-0123456789abcdef"


def models_of_tiers(s: Settings) -> dict[str, tuple[str, str]]:
    return {c.tier: (c.provider, c.model) for c in tier_choices(s)}


def test_tier_choices_are_what_the_engine_runs():
    s = Settings(provider="anthropic", tier_providers={"Tier 3": "ollama"},
                 tier_models={"Tier 3": "llama3.2:3b"})
    got = models_of_tiers(s)
    assert got == {"Tier 1": ("anthropic", "claude-opus-4-5"),
                   "Tier 2": ("anthropic", "claude-sonnet-4-5"),
                   "Tier 3": ("ollama", "llama3.2:3b"),
                   "Tier 4": ("anthropic", "claude-haiku-4-5")}
    for tier, (p, m) in got.items():
        assert (s.provider_for(tier), s.model_for(tier)) == (p, m)


def test_folding_tier_models_keeps_every_tiers_model():
    s = Settings(provider="gemini", tier_providers={"Tier 3": "ollama", "Tier 4": "offline"},
                 tier_models={"Tier 3": "llama3.2:3b", "Tier 1": "gemini-3-pro",
                              "Tier 4": "kept-for-later"})
    f = folded(s)
    assert models_of_tiers(f) == models_of_tiers(s)
    assert f.ollama.models["Tier 3"] == "llama3.2:3b" and f.models["Tier 1"] == "gemini-3-pro"
    assert f.tier_models == {"Tier 4": "kept-for-later"}      # nothing lost


def test_with_providers_sets_a_tier_and_its_model():
    s = Settings(provider="gemini")
    s2 = with_providers(s, provider="anthropic",
                        tiers={"tier3": {"provider": "ollama", "model": "qwen2.5-coder:14b"},
                               "4": {"model": "claude-3-5-haiku"}})
    assert models_of_tiers(s2) == {"Tier 1": ("anthropic", "claude-opus-4-5"),
                                   "Tier 2": ("anthropic", "claude-sonnet-4-5"),
                                   "Tier 3": ("ollama", "qwen2.5-coder:14b"),
                                   "Tier 4": ("anthropic", "claude-3-5-haiku")}
    assert s2.tier_providers == {"Tier 3": "ollama"}
    # back to the default provider: the tier follows it again, with that provider's model
    s3 = with_providers(s2, tiers={"Tier 3": None})
    assert models_of_tiers(s3)["Tier 3"] == ("anthropic", "claude-sonnet-4-5")
    # the ollama model chosen before is remembered in ollama's own table
    s4 = with_providers(s3, tiers={"Tier 3": {"provider": "ollama"}})
    assert models_of_tiers(s4)["Tier 3"] == ("ollama", "qwen2.5-coder:14b")
    assert s == Settings(provider="gemini")                 # the input is never changed


def test_a_tier_that_changes_provider_drops_the_other_providers_model():
    s = Settings(provider="gemini", tier_providers={"Tier 3": "ollama"},
                 tier_models={"Tier 3": "llama3.2:3b"})
    s2 = with_providers(s, tiers={"Tier 3": {"provider": "openai"}})
    assert models_of_tiers(s2)["Tier 3"] == ("openai", DEFAULT_MODELS["openai"]["Tier 3"])


@pytest.mark.parametrize("kw,message", [
    (dict(provider="mistral"), "provider: unknown provider 'mistral': choose one of offline, "
                               "gemini, openai, ollama, anthropic"),
    (dict(tiers={"Tier 9": {"provider": "ollama"}}), "tiers: 'Tier 9' is not a tier: use "
                                                      "\"Tier 1\" (Orchestrator)"),
    (dict(tiers={"Worker": {"provider": "ollama"}}), "'Worker' is not a tier"),
    (dict(tiers={"Tier 3": {"provider": "llama"}}), "tiers.Tier 3.provider: unknown provider "
                                                     "'llama': choose one of offline, gemini, "
                                                     "openai, ollama, anthropic, default"),
    (dict(tiers={"Tier 3": {"provider": "ollama", "modle": "x"}}), "unknown field(s) 'modle'"),
    (dict(tiers={"Tier 3": {"model": ""}}), "tiers.Tier 3.model: must be a non-empty model"),
    (dict(tiers={"Tier 3": "ollama"}), "tiers.Tier 3: must be an object"),
    (dict(provider="offline", tiers={"Tier 2": {"model": "gpt-5"}}),
     "Tier 2 runs on the offline provider, whose one model is \"offline\""),
    (dict(endpoints={"openai": "api.example.com/v1"}), "must start with http:// or https://"),
    (dict(endpoints={"offline": "http://x"}), "the offline provider has no endpoint"),
    (dict(endpoints={"claude": "http://x"}), "endpoints: unknown provider 'claude'"),
    (dict(endpoints={"ollama": 11434}), "must be a URL string"),
])
def test_bad_changes_say_what_is_accepted(kw, message):
    with pytest.raises(ValueError) as e:
        with_providers(Settings(), **kw)
    assert message in str(e.value)


def test_every_problem_is_reported_at_once():
    with pytest.raises(ValueError) as e:
        with_providers(Settings(), provider="x", tiers={"Tier 7": {}, "Tier 1": {"provider": "y"}})
    msg = str(e.value)
    assert "provider: unknown provider 'x'" in msg and "'Tier 7' is not a tier" in msg
    assert "tiers.Tier 1.provider: unknown provider 'y'" in msg


def test_normalize_tier_forms():
    assert [normalize_tier(x) for x in ("Tier 1", "tier2", " TIER 3 ", "4")] == \
        ["Tier 1", "Tier 2", "Tier 3", "Tier 4"]
    assert normalize_tier(4) == "Tier 4"
    for bad in ("Tier 0", "Tier 5", "", "tier", None, True, "Tier 3x"):
        with pytest.raises(ValueError, match="is not a tier"):
            normalize_tier(bad)


def test_endpoints_are_set_and_cleared():
    s = with_providers(Settings(), endpoints={"ollama": "gpu-box:11434",
                                              "openai": " https://openrouter.ai/api/v1 "})
    assert s.ollama.host == "gpu-box:11434" and s.openai.base_url == "https://openrouter.ai/api/v1"
    assert with_providers(s, endpoints={"openai": ""}).openai.base_url == ""


def test_key_status_names_only():
    env = {"ANTHROPIC_API_KEY": KEY, "GOOGLE_API_KEY": "  ", "OPENAI_API_KEY": ""}
    a = key_status("anthropic", env)
    assert a.ok and a.present == ("ANTHROPIC_API_KEY",) and "ANTHROPIC_API_KEY" in a.describe()
    g = key_status("gemini", env)
    assert not g.ok and g.describe() == ("key missing: set GEMINI_API_KEY or GOOGLE_API_KEY "
                                         "before starting Clutch")
    assert key_status("ollama", env).ok and not key_status("ollama", env).needed
    assert key_status("ollama", env).describe() == "no key needed (local)"


def test_the_providers_view_never_holds_a_key_value():
    env = {"ANTHROPIC_API_KEY": KEY, "OPENAI_API_KEY": KEY[::-1],
           "OPENAI_BASE_URL": f"https://user:{KEY}@proxy.example.com/v1?token={KEY}"}
    s = Settings(provider="anthropic", tier_providers={"Tier 3": "ollama"})
    view = providers_view(s, env)
    text = json.dumps(view)
    assert KEY[:12] not in text and KEY[::-1][:12] not in text
    assert view["providers"]["anthropic"]["key"] == {"names": ["ANTHROPIC_API_KEY"],
                                                     "present": ["ANTHROPIC_API_KEY"], "ok": True}
    assert view["providers"]["openai"]["endpoint_note"] == \
        "empty: OPENAI_BASE_URL = https://proxy.example.com/v1"
    assert view["tiers"]["Tier 3"] == {"provider": "ollama", "model": "qwen2.5-coder:7b",
                                       "own_provider": True, "role": "Worker"}
    assert view["providers"]["ollama"]["in_use"] and not view["providers"]["gemini"]["in_use"]


def test_safe_url_drops_credentials():
    assert safe_url("http://u:p@h:1/x?k=v#f") == "http://h:1/x"
    assert safe_url("gpu-box:11434") == "gpu-box:11434"


def test_endpoint_problems_of_settings_edited_as_a_whole():
    assert endpoint_problems(Settings()) == []
    s = Settings(openai={"base_url": "localhost:8080/v1"}, ollama={"host": "gpu-box:11434"},
                 anthropic={"base_url": "https://gw.example.com "})
    assert endpoint_problems(s) == ["endpoints.openai: 'localhost:8080/v1' must start with "
                                    "http:// or https://"]
