"""Shared fixtures: engines on the offline model in a temporary workspace."""
from __future__ import annotations

import os
import sys
import subprocess
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
# tests/gui/gui_support.py (the app under the test engine, Xvfb) is shared with other layers'
# tests (test_api_e2e uses its Xvfb): importable from any test directory
if str(ROOT / "tests" / "gui") not in sys.path:
    sys.path.append(str(ROOT / "tests" / "gui"))

# Tests never reach a real API: no key leaks in from the developer's shell.
for _k in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_GEMINI_BASE_URL", "OPENAI_API_KEY",
           "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL",
           "OLLAMA_HOST"):
    os.environ.pop(_k, None)

from models import Settings  # noqa: E402


# -- the fake Gemini server, for the modules that talk to it through the real SDK ------------

@pytest.fixture(scope="module")
def _server(request):
    """One FakeGemini per test module, accepting that module's KEY."""
    from tests.fakes.fake_gemini import FakeGemini
    with FakeGemini(api_key=request.module.KEY) as s:
        yield s


@pytest.fixture
def srv(_server):
    """The module's fake server, reset before and after each test; a handler error fails it."""
    _server.reset()
    yield _server
    assert _server.handler_errors == []
    _server.reset()


def fast_settings(**kw) -> Settings:
    base = dict(offline_pace_s=0.0, git_commits=False)
    base.update(kw)
    return Settings(**base)


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "README.md").write_text("# demo workspace\n")
    return ws


@pytest.fixture
def make_engine(workspace):
    from multi_agent_conductor import ConductorEngine
    engines = []

    def make(provider=None, auto_approve=True, ws=None, **settings_kw):
        eng = ConductorEngine(ws or workspace, fast_settings(**settings_kw), provider=provider,
                              auto_approve=auto_approve)
        eng.start()
        engines.append(eng)
        return eng
    yield make
    for e in engines:
        e.close()


def run_threads(fn, n, timeout=60.0):
    """Run fn(0) .. fn(n - 1) in n threads at once and wait for all; a thread still running at
    the deadline fails the test (a hang is a failure, not a stuck suite)."""
    threads = [threading.Thread(target=fn, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    stuck = [t.name for t in threads if t.is_alive()]
    assert not stuck, f"threads still running after {timeout}s: {stuck}"


def wait_for(pred, timeout=10.0, interval=0.01, what="condition"):
    """Poll until pred() is truthy; fail with a message at the deadline (no bare sleeps)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Approver(threading.Thread):
    """Answers an engine's approvals from a test thread with a policy function
    `decide(request) -> Approved | Denied`."""

    def __init__(self, engine, decide):
        super().__init__(daemon=True)
        self.engine, self.decide = engine, decide
        self.stop = threading.Event()
        self.seen = []

    def run(self):
        answered = set()
        while not self.stop.is_set():
            for req in self.engine.pending_approvals():
                if req.id in answered:
                    continue
                answered.add(req.id)
                self.seen.append(req)
                self.engine.resolve(req.id, self.decide(req))
            time.sleep(0.002)

    @classmethod
    def run_track(cls, engine, track_id, decide, timeout=60):
        """Run a track to its end with `decide` answering every approval; the track."""
        ap = cls(engine, decide)
        ap.start()
        try:
            return engine.start_track(track_id).result(timeout)
        finally:
            ap.stop.set()


def git(ws, *args: str) -> str:
    """git in the repository at `ws` as a person (tests' own repositories); its stdout.
    A failing git fails the test with git's own message."""
    return subprocess.run(["git", "-c", "user.name=Person", "-c", "user.email=person@example.com",
                           "-C", str(ws), *args], check=True, capture_output=True,
                          text=True).stdout
