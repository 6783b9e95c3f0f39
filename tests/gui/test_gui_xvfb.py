"""The real app window under Xvfb (glfw + OpenGL through Mesa's llvmpipe), one app per process.

- the whole flow in a real window, with a screenshot of every pane on the way, written to
  artifacts/screenshots/ at the repository root (git-ignored);
- `gui_2.main()` as `clutch` runs it: SIGTERM makes a clean exit, the engine saves its state and
  the docking layout is remembered in <workspace>/.clutch/clutch.ini.

A missing Xvfb is a set-up failure (`make install` installs it), never a skip.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gui_support import ARTIFACTS, ROOT, Xvfb

pytestmark = pytest.mark.xvfb

EXPECTED = ["start", "proposal", "tickets_editor", "tickets_graph", "approval_spawn",
            "approval_write", "approval_shell", "midrun", "usage", "comms", "streams_tier1",
            "settings", "shortcuts", "error"]


@pytest.fixture(scope="module")
def display_env():
    if os.environ.get("DISPLAY"):
        yield {}
        return
    x = Xvfb("1600x1000x24")
    try:
        yield x.env
    finally:
        x.close()


def child_env(display_env: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env.update(display_env)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "gui"), env.get("PYTHONPATH", "")])
    for k in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_GEMINI_BASE_URL"):
        env.pop(k, None)
    return env


def test_every_pane_in_a_real_window(display_env, tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "README.md").write_text("# demo workspace\n")
    out = ARTIFACTS
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.png"):
        old.unlink()
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "gui" / "gui_support.py"), "scenario",
                           str(out), str(ws)], env=child_env(display_env), cwd=tmp_path,
                          capture_output=True, text=True, timeout=150)
    assert proc.returncode == 0, (proc.stdout[-4000:], proc.stderr[-4000:])
    shots = json.loads((out / "shots.json").read_text())
    names = [Path(p).stem.split("_", 1)[1] for p in shots]
    assert names == EXPECTED
    for p in shots:
        size = Path(p).stat().st_size
        # a blank or black 1600x1000 frame compresses to a few kB; a rendered pane is far larger
        assert size > 40_000, (p, size)
    # nothing was written to the current directory (ini files, node editor settings)
    assert not list(tmp_path.glob("*.ini")) and not list(tmp_path.glob("*.json"))


def test_main_sigterm_exits_cleanly_and_remembers_the_layout(display_env, tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    code = ("import sys, gui_2, hook_server; sys.exit(gui_2.main(workspace=sys.argv[1], api=hook_server.start_for_engine))")
    proc = subprocess.Popen([sys.executable, "-c", code, str(ws)], env=child_env(display_env),
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        sessions = ws / ".clutch" / "sessions"
        while time.monotonic() < deadline and proc.poll() is None:
            if sessions.is_dir() and any(sessions.iterdir()):
                break
            time.sleep(0.05)
        time.sleep(2.0)      # a few frames in the real window
        assert proc.poll() is None, proc.communicate(timeout=5)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, (out[-3000:], err[-3000:])
    assert "Traceback" not in err, err[-3000:]
    ini = ws / ".clutch" / "clutch.ini"
    assert ini.exists(), list((ws / ".clutch").iterdir())
    text = ini.read_text(errors="replace")
    assert "Streams" in text and "Approvals" in text
    assert not list(tmp_path.glob("*.ini"))
