"""Settings in .clutch/config.toml: missing, round trip, corrupt or invalid files moved aside
with defaults in use, API keys refused."""
from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from conductor_store import ConductorStore
from models import Settings


@pytest.fixture
def store(tmp_path: Path) -> ConductorStore:
    return ConductorStore(tmp_path / "ws")


def test_settings_missing_then_round_trip(store: ConductorStore):
    assert store.load_settings() == (Settings(), [])
    s = Settings(provider="gemini", max_workers=8, budget_usd=2.5, step_mode=True)
    s.approvals.shell_allowlist = ["pytest", "ls"]
    s.gemini.base_url = "http://127.0.0.1:9999"
    store.save_settings(s)
    assert tomllib.loads(store.settings_path().read_text())["max_workers"] == 8
    assert (store.clutch_dir / ".gitignore").read_text() == "*\n"
    assert store.load_settings() == (s, [])


def _assert_moved_aside(store: ConductorStore, original: str, notices: list[str]) -> Path:
    assert not store.settings_path().exists()
    backups = list(store.clutch_dir.glob("config.toml.bad-*"))
    assert len(backups) == 1 and backups[0].read_text() == original
    assert len(notices) == 1 and str(backups[0]) in notices[0]
    return backups[0]


def test_corrupt_config_is_backed_up_and_defaults_used(store: ConductorStore):
    store.clutch_dir.mkdir(parents=True)
    original = 'provider = "gemini"\nmax_workers = = 3\nstep_mode = true\n'
    store.settings_path().write_text(original)
    settings, notices = store.load_settings()
    assert settings == Settings()
    _assert_moved_aside(store, original, notices)
    assert "invalid TOML" in notices[0] and "line 2" in notices[0]


@pytest.mark.parametrize("text, named", [
    ("max_workers = 0\n", "max_workers"),
    ('provider = "mistral"\n', "provider"),
    ("max_workerz = 3\n", "max_workerz"),
    ("[gemini]\ntimeout = 3\n", "gemini.timeout"),
])
def test_invalid_config_values_are_backed_up(store: ConductorStore, text: str, named: str):
    store.clutch_dir.mkdir(parents=True)
    store.settings_path().write_text(text)
    settings, notices = store.load_settings()
    assert settings == Settings()
    _assert_moved_aside(store, text, notices)
    assert named in notices[0]


@pytest.mark.parametrize("text, field_name", [
    ('provider = "gemini"\n[gemini]\napi_key = "AIzaSyTOP-SECRET-VALUE"\n', "gemini.api_key"),
    ('token = "AIzaSyTOP-SECRET-VALUE"\n', "token"),
    ('google_api_key = "AIzaSyTOP-SECRET-VALUE"\n', "google_api_key"),
])
def test_config_with_an_api_key_is_refused(store: ConductorStore, text: str, field_name: str):
    store.clutch_dir.mkdir(parents=True)
    store.settings_path().write_text(text)
    settings, notices = store.load_settings()
    assert settings == Settings()                   # not loaded, not even provider = "gemini"
    _assert_moved_aside(store, text, notices)
    assert field_name in notices[0] and "GEMINI_API_KEY" in notices[0]
    assert "TOP-SECRET" not in notices[0]


def test_budget_tokens_is_not_mistaken_for_a_secret(store: ConductorStore):
    store.clutch_dir.mkdir(parents=True)
    store.settings_path().write_text("budget_tokens = 5000\n")
    settings, notices = store.load_settings()
    assert notices == [] and settings.budget_tokens == 5000
