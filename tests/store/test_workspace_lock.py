"""One Clutch per workspace: the store's flock, across real processes."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conductor_store import WorkspaceBusy, WorkspaceLock

ROOT = Path(__file__).resolve().parents[2]

HOLD = ("import sys, time; sys.path.insert(0, sys.argv[1]); "
        "from conductor_store import WorkspaceLock; "
        "lock = WorkspaceLock(sys.argv[2]).acquire('clutch serve'); "
        "print('held', flush=True); time.sleep(60)")


def holder(ws: Path) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(ROOT), str(ws)],
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_a_second_holder_is_refused_naming_the_first_and_its_api(tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    p = holder(ws)
    try:
        with pytest.raises(WorkspaceBusy) as e:
            WorkspaceLock(ws).acquire("clutch run")
        msg = str(e.value)
        assert f"pid {p.pid}" in msg and "clutch serve" in msg and "serves no API" in msg
        assert e.value.holder["pid"] == p.pid
        # with the holder's api.json, the message gives its address; another pid's is ignored
        api = ws / ".clutch" / "api.json"
        api.write_text(json.dumps({"pid": p.pid, "url": "http://127.0.0.1:4567", "port": 4567}))
        with pytest.raises(WorkspaceBusy) as e:
            WorkspaceLock(ws).acquire("clutch run")
        assert "http://127.0.0.1:4567" in str(e.value)
        api.write_text(json.dumps({"pid": p.pid + 1, "url": "http://127.0.0.1:9"}))
        with pytest.raises(WorkspaceBusy) as e:
            WorkspaceLock(ws).acquire("clutch run")
        assert "127.0.0.1:9" not in str(e.value)
    finally:
        p.kill()
        p.wait()


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    p = holder(ws)
    with pytest.raises(WorkspaceBusy):
        WorkspaceLock(ws).acquire("clutch")
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    lock = WorkspaceLock(ws).acquire("clutch")        # the kernel released it with the process
    try:
        info = json.loads((ws / ".clutch" / "clutch.lock").read_text())
        assert info["pid"] == os.getpid() and info["command"] == "clutch" and info["started"]
    finally:
        lock.release()


def test_release_gives_the_workspace_back_and_one_process_may_not_lock_twice_by_accident(tmp_path):
    lock = WorkspaceLock(tmp_path).acquire("clutch")
    assert lock.held and lock.acquire("clutch") is lock       # idempotent on the same object
    # a second lock object in the same process is a second open file description: refused
    with pytest.raises(WorkspaceBusy):
        WorkspaceLock(tmp_path).acquire("clutch")
    lock.release()
    assert not lock.held
    with WorkspaceLock(tmp_path).acquire("clutch") as again:
        assert again.held


def test_commands_a_worker_starts_do_not_inherit_the_lock(tmp_path):
    lock = WorkspaceLock(tmp_path).acquire("clutch")
    child = subprocess.Popen(["sleep", "30"], close_fds=False)   # even without close_fds
    try:
        lock.release()
        t0 = time.monotonic()
        WorkspaceLock(tmp_path).acquire("clutch").release()      # the child holds nothing
        assert time.monotonic() - t0 < 1
    finally:
        child.kill()
        child.wait()
