"""The API's settings routes over a real engine: per-tier providers read and changed (and saved
to .clutch/config.toml, and used by the engine's ProviderPool), clear 400s for bad names, the
Ollama model list from a loopback fake of /api/tags, and never a key value in an answer."""
from __future__ import annotations

import json
import tomllib

import pytest

import hook_server
from hook_server import ApiClient, ApiError
from tests.fakes.fake_openai import FakeOpenAI

KEY = "sk-proj-SETTINGSROUTESECRET-0123456789abcdefXYZ"


@pytest.fixture
def api(make_engine):
    eng = make_engine()
    srv = hook_server.start_for_engine(eng)
    try:
        yield eng, ApiClient.from_workspace(eng.workspace)
    finally:
        srv.stop()


def status_of(fn, *a, **kw):
    with pytest.raises(ApiError) as e:
        fn(*a, **kw)
    return e.value.status, str(e.value)


def test_get_settings_and_providers(api, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    eng, c = api
    whole = c.settings()
    assert whole["settings"]["provider"] == "offline" and whole["settings"]["max_workers"] == 4
    view = c.provider_settings()
    assert view == whole["providers"]
    assert view["provider"] == "offline"
    assert view["tiers"]["Tier 1"] == {"provider": "offline", "model": "offline",
                                       "own_provider": False, "role": "Orchestrator"}
    assert view["providers"]["openai"]["key"] == {"names": ["OPENAI_API_KEY"],
                                                  "present": ["OPENAI_API_KEY"], "ok": True}
    assert view["providers"]["anthropic"]["key"]["ok"] is False
    assert KEY[:12] not in json.dumps(whole)


def test_put_changes_tiers_saves_and_the_engine_uses_them(api):
    eng, c = api
    view = c.set_providers(provider="anthropic",
                           tiers={"Tier 3": {"provider": "ollama", "model": "llama3.2:3b"},
                                  "tier 4": {"provider": "openai"}},
                           endpoints={"ollama": "http://127.0.0.1:9"})
    tiers = {t: (v["provider"], v["model"]) for t, v in view["tiers"].items()}
    assert tiers == {"Tier 1": ("anthropic", "claude-opus-4-5"),
                     "Tier 2": ("anthropic", "claude-sonnet-4-5"),
                     "Tier 3": ("ollama", "llama3.2:3b"), "Tier 4": ("openai", "gpt-5-nano")}
    s = eng.settings
    assert (s.provider_for("Tier 3"), s.model_for("Tier 3")) == ("ollama", "llama3.2:3b")
    assert s.ollama.host == "http://127.0.0.1:9"
    saved = tomllib.loads((eng.workspace / ".clutch" / "config.toml").read_text())
    assert saved["provider"] == "anthropic"
    assert saved["tier_providers"] == {"Tier 3": "ollama", "Tier 4": "openai"}
    assert saved["ollama"]["models"]["Tier 3"] == "llama3.2:3b"
    # the engine builds Tier 3's provider from it (ollama needs no key)
    assert eng.provider("Tier 3").name == "ollama"
    # back to the default provider
    view = c.set_providers(tiers={"Tier 3": {"provider": "default"}})
    assert view["tiers"]["Tier 3"]["provider"] == "anthropic"
    assert view["tiers"]["Tier 3"]["own_provider"] is False


@pytest.mark.parametrize("body,message", [
    ({"provider": "mistral"}, "provider: unknown provider 'mistral': choose one of offline, "
                              "gemini, openai, ollama, anthropic"),
    ({"tiers": {"Tier 9": {"provider": "ollama"}}}, "'Tier 9' is not a tier: use \"Tier 1\""),
    ({"tiers": {"Tier 3": {"provider": "gpt"}}}, "tiers.Tier 3.provider: unknown provider 'gpt'"),
    ({"tiers": ["Tier 3"]}, "field 'tiers' must be an object, not an array"),
    ({"provider": 3}, "field 'provider' must be a string, not a number"),
    ({"providers": "gemini"}, "unknown field(s) 'providers': send provider, tiers, endpoints"),
    ({}, "nothing to change"),
    ({"endpoints": {"openai": "localhost:8080"}}, "must start with http:// or https://"),
])
def test_bad_changes_are_400_and_change_nothing(api, body, message):
    eng, c = api
    before = eng.settings
    status, text = status_of(c.request, "PUT", "/settings/providers", body)
    assert status == 400 and message in text, text
    assert eng.settings == before
    assert not (eng.workspace / ".clutch" / "config.toml").exists() or \
        "mistral" not in (eng.workspace / ".clutch" / "config.toml").read_text()


def test_wrong_method_and_no_body(api):
    _eng, c = api
    assert status_of(c.request, "POST", "/settings/providers", {"provider": "gemini"})[0] == 405
    status, text = status_of(c.request, "PUT", "/settings/providers")
    assert status == 400 and "JSON object body" in text


def test_ollama_models_from_the_server(api):
    eng, c = api
    with FakeOpenAI(api_key=None) as local:
        got = c.ollama_models(local.root)
        assert got["host"] == local.root
        assert [m["name"] for m in got["models"]] == ["llama3.2:3b", "qwen2.5-coder:7b"]
        assert got["models"][1]["parameter_size"] == "7.6B"
        # the settings' host when none is given
        c.set_providers(endpoints={"ollama": f"127.0.0.1:{local.port}"})
        assert [m["name"] for m in c.ollama_models()["models"]] == ["llama3.2:3b",
                                                                     "qwen2.5-coder:7b"]
        assert [r.path for r in local.requests] == ["/api/tags", "/api/tags"]


def test_ollama_models_when_no_server_answers(api):
    _eng, c = api
    status, text = status_of(c.ollama_models, "http://127.0.0.1:9")
    assert status == 502
    assert "no Ollama server answers at http://127.0.0.1:9" in text and "ollama serve" in text
