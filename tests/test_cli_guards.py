"""Process-level guards of the `clutch` command (issue 15): one Clutch per workspace, and the
key in the environment unreadable by other processes of the user."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EPIC = "Add a health endpoint and its tests"


def clutch_env(**extra: str) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if k not in ("GEMINI_API_KEY", "GOOGLE_API_KEY")}
    e.update(extra)
    return e


def start(*args: str, env=None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "cli.py"), *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env or clutch_env())


def wait_for_lock_holder(ws: Path, pid: int, timeout: float = 20) -> None:
    lock = ws / ".clutch" / "clutch.lock"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if json.loads(lock.read_text()).get("pid") == pid:
                return
        except (OSError, ValueError):
            pass           # not written yet: keep waiting
        time.sleep(0.02)
    raise AssertionError(f"pid {pid} never took the workspace lock")


def test_two_runs_at_once_the_second_stops_naming_the_first_and_nothing_is_duplicated(tmp_path):
    ws = tmp_path / "ws"
    first = start("run", "--epic", EPIC, "--workspace", str(ws), "--yes", "--json",
                  "--pace", "0.02", "--max-workers", "2")
    try:
        wait_for_lock_holder(ws, first.pid)
        t0 = time.monotonic()
        second = subprocess.run([sys.executable, str(ROOT / "cli.py"), "run", "--epic", EPIC,
                                 "--workspace", str(ws), "--yes", "--json", "--pace", "0"],
                                cwd=ROOT, capture_output=True, text=True, timeout=60,
                                env=clutch_env())
        assert time.monotonic() - t0 < 10                  # stops at once, runs nothing
        assert second.returncode == 3, second.stderr
        assert f"pid {first.pid}" in second.stderr and "clutch run" in second.stderr
        assert "another Clutch is already running" in second.stderr
        assert "Traceback" not in second.stderr and second.stdout == ""
        # `clutch tracks` still reads while the first one runs
        tracks = subprocess.run([sys.executable, str(ROOT / "cli.py"), "tracks", "--workspace",
                                 str(ws), "--json"], cwd=ROOT, capture_output=True, text=True,
                                timeout=60, env=clutch_env())
        assert tracks.returncode == 0, tracks.stderr
        out, err = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 0, err[-3000:]
    summary = json.loads(out)
    on_disk = sorted(p.name for p in (ws / "conductor" / "tracks").iterdir() if p.is_dir())
    assert on_disk == sorted(t["id"] for t in summary["tracks"])   # the first run's, only
    ids = [k["id"] for t in summary["tracks"] for k in t["tickets"]]
    assert len(ids) == len(set(ids))
    sessions = list((ws / ".clutch" / "sessions").iterdir())
    assert len(sessions) == 1                          # the second never started an engine


def test_serve_refuses_a_busy_workspace_naming_the_holders_api_and_a_killed_holder_is_replaced(
        tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    first = start("serve", "--workspace", str(ws), "--port", "0")
    second = None
    try:
        url = json.loads(first.stdout.readline())["url"]
        busy = subprocess.run([sys.executable, str(ROOT / "cli.py"), "serve", "--workspace",
                               str(ws)], cwd=ROOT, capture_output=True, text=True, timeout=60,
                              env=clutch_env())
        assert busy.returncode == 3
        assert f"pid {first.pid}" in busy.stderr and url in busy.stderr, busy.stderr
        os.kill(first.pid, signal.SIGKILL)                # its lock dies with it
        first.wait()
        second = start("serve", "--workspace", str(ws), "--port", "0")
        info = json.loads(second.stdout.readline())
        assert info["url"]
        holder = json.loads((ws / ".clutch" / "clutch.lock").read_text())
        assert holder["pid"] == second.pid and holder["command"] == "clutch serve"
    finally:
        for p in (first, second):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(30)


def _as_unprivileged() -> list[str]:
    """Root reads every /proc/<pid>/environ (CAP_SYS_PTRACE); run both sides as `nobody`."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    assert setpriv, "running the tests as root needs setpriv (util-linux) for this test"
    return [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]


def _system_python() -> str:
    """A Python that `nobody` may execute (the venv's may live under /root), with the venv's
    packages on its path."""
    if os.geteuid() != 0:
        return sys.executable
    for cand in ("/usr/bin/python3.11", "/usr/bin/python3", "/usr/local/bin/python3.11"):
        if os.access(cand, os.X_OK):
            return cand
    raise AssertionError("running the tests as root needs a system python3.11 for this test")


READER = ("import sys\n"
          "try:\n"
          "    data = open(f'/proc/{sys.argv[1]}/environ', 'rb').read()\n"
          "    print('READ', b'CLUTCH_TEST_SECRET_KEY' in data)\n"
          "except PermissionError:\n"
          "    print('DENIED')\n")


@pytest.fixture
def open_tmp():
    """A temporary directory `nobody` may use (pytest's own tmp_path is private to root)."""
    d = Path(tempfile.mkdtemp(prefix="clutch-dumpable-"))
    os.chmod(d, 0o777)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_another_process_of_the_user_cannot_read_the_key_from_clutchs_environ(open_tmp):
    import site
    tmp_path = open_tmp
    wrap, py = _as_unprivileged(), _system_python()
    ws = tmp_path / "ws"
    ws.mkdir()
    os.chmod(ws, 0o777)
    paths = os.pathsep.join([str(ROOT), *site.getsitepackages()])
    env = clutch_env(GEMINI_API_KEY="CLUTCH_TEST_SECRET_KEY-abcdefghijklmnop",
                     PYTHONPATH=paths, HOME=str(tmp_path))

    def read_environ(pid: int) -> str:
        r = subprocess.run([*wrap, py, "-c", READER, str(pid)], capture_output=True, text=True,
                           timeout=30, env=clutch_env())
        return r.stdout.strip() or r.stderr

    # the control: a plain process of the same user with the key is readable, so the check
    # below can fail
    plain = subprocess.Popen([*wrap, py, "-c", "import time; print('up', flush=True); "
                              "time.sleep(30)"], stdout=subprocess.PIPE, text=True, env=env)
    try:
        plain.stdout.readline()
        assert read_environ(plain.pid) == "READ True"
    finally:
        plain.kill()
        plain.wait()

    serve = subprocess.Popen([*wrap, py, str(ROOT / "cli.py"), "serve", "--workspace", str(ws),
                              "--port", "0"], cwd=tmp_path, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = serve.stdout.readline()
        assert line.startswith("{"), serve.stderr.read() if serve.poll() is not None else line
        assert read_environ(serve.pid) == "DENIED"
    finally:
        serve.send_signal(signal.SIGTERM)
        try:
            serve.wait(30)
        finally:
            if serve.poll() is None:
                serve.kill()


def test_the_app_on_a_busy_workspace_stops_before_opening_a_window(tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    holder = start("serve", "--workspace", str(ws), "--port", "0")
    try:
        url = json.loads(holder.stdout.readline())["url"]
        env = clutch_env()
        env.pop("DISPLAY", None)                        # it must not get as far as a window
        app = subprocess.run([sys.executable, str(ROOT / "cli.py"), "--workspace", str(ws)],
                             cwd=ROOT, capture_output=True, text=True, timeout=60, env=env)
        assert app.returncode == 3, app.stderr
        assert f"pid {holder.pid}" in app.stderr and url in app.stderr
        assert "clutch serve" in app.stderr and "Traceback" not in app.stderr
    finally:
        holder.send_signal(signal.SIGTERM)
        holder.wait(30)
