"""Crash and resume: a headless run killed with SIGKILL at seeded random moments (20 in a
plain directory, 12 in a git repository), each followed by `--resume`. Nothing completed is
run again, the comms log stays parseable, plan.md and state.toml agree, and every run ends
with every ticket completed; in git, merged into main with nothing of the person's lost."""
from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from conftest import git

ROOT = Path(__file__).resolve().parents[2]
EPIC = "Add a health endpoint and its tests"


def _env():
    e = dict(os.environ)
    e.pop("GEMINI_API_KEY", None)
    e.pop("GOOGLE_API_KEY", None)
    return e


def _start(ws: Path, resume: bool) -> subprocess.Popen:
    args = [sys.executable, str(ROOT / "cli.py"), "run", "--epic", EPIC, "--workspace", str(ws),
            "--yes", "--json", "--pace", "0.001", "--max-workers", "4"]
    if resume:
        args.append("--resume")
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT,
                            env=_env())


def _comms(ws: Path) -> list[dict]:
    sessions = sorted((ws / ".clutch/sessions").iterdir())
    entries = []
    for s in sessions:
        raw = (s / "comms.jsonl").read_bytes()
        complete = raw[:raw.rfind(b"\n") + 1]
        for line in complete.splitlines():
            entries.append(json.loads(line))          # every complete line parses
    return entries


PERSONS_EDIT = b"# the person's edit, not committed \xe2\x9c\x93\nfrom app import main\n"


def _git_workspace(ws: Path) -> str:
    """A repository with history and the person's uncommitted edit; its HEAD."""
    git(ws, "init", "-q", "-b", "main")
    (ws / "app.py").write_text("def main():\n    return 'ok'\n")
    (ws / "README.md").write_text("# service\n")
    git(ws, "add", "-A")
    git(ws, "commit", "-qm", "first")
    (ws / "run.py").write_text("from app import main\n")
    git(ws, "add", "-A")
    git(ws, "commit", "-qm", "second")
    (ws / "run.py").write_bytes(PERSONS_EDIT)
    return git(ws, "rev-parse", "HEAD").strip()


def _git_intact(ws: Path, head: str, i: int) -> None:
    """After a resumed run in a git workspace: every track merged into main, no worktree
    left, the person's edit byte for byte, and no commit of the run deleting a file (a ticket
    that committed a tree its killed run had not finished writing would)."""
    assert git(ws, "worktree", "list", "--porcelain").count("worktree ") == 1, i
    assert (ws / "run.py").read_bytes() == PERSONS_EDIT, i
    deleted = git(ws, "log", "--diff-filter=D", "--name-only", "--format=", f"{head}..main")
    assert not deleted.split(), (i, deleted)


def _one(tmp_path: Path, i: int, delay: float, in_git: bool = False) -> None:
    ws = tmp_path / f"ws{i}"
    ws.mkdir()
    head = _git_workspace(ws) if in_git else ""
    p = _start(ws, resume=False)
    time.sleep(delay)
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)
    # every complete line written so far parses, even right after the kill
    before = _comms(ws) if (ws / ".clutch/sessions").exists() else []
    completed_before = {e["ticket_id"] for e in before
                        if e["kind"] == "status" and e["data"]["status"] == "completed"}
    n_before = len(before)
    torn = [s for s in (ws / ".clutch/sessions").iterdir()
            if (s / "comms.jsonl").exists() and (s / "comms.jsonl").read_bytes()
            and not (s / "comms.jsonl").read_bytes().endswith(b"\n")] \
        if (ws / ".clutch/sessions").exists() else []
    q = _start(ws, resume=True)
    out, _ = q.communicate(timeout=120)
    assert q.returncode == 0, f"resume {i} failed"
    summary = json.loads(out)
    assert summary["tracks"], f"resume {i}: no tracks"
    for t in summary["tracks"]:
        assert t["status"] == "completed", (i, t)
        assert all(k["status"] == "completed" for k in t["tickets"]), (i, t)
        assert t["merged_into"] == ("main" if in_git else None), (i, t)
    if in_git:
        _git_intact(ws, head, i)
    entries = _comms(ws)
    for sdir in torn:    # a torn last line was set aside, not fatal, and the log is whole
        assert list(sdir.glob("comms.jsonl.set-aside-*")), f"resume {i}: torn line not kept"
        assert (sdir / "comms.jsonl").read_bytes().endswith(b"\n")
    # nothing completed before the kill was spawned again after it
    respawned = [e["ticket_id"] for e in entries[n_before:] if e["kind"] == "spawn"]
    assert not (set(respawned) & completed_before), (i, set(respawned) & completed_before)
    # every ticket completed exactly once in the log
    done = [e["ticket_id"] for e in entries
            if e["kind"] == "status" and e["data"]["status"] == "completed"]
    assert len(done) == len(set(done)), f"resume {i}: a ticket completed twice"
    # plan.md and state.toml agree, track by track
    for t in summary["tracks"]:
        d = ws / "conductor/tracks" / t["id"]
        state = tomllib.loads((d / "state.toml").read_text())
        plan = (d / "plan.md").read_text()
        ticks = re.findall(r"^\s*- \[x\] ", plan, re.M)
        assert len(ticks) == len(t["tickets"]), (i, t["id"])
        assert plan.count("[ ]") == 0 and plan.count("[~]") == 0
        states = {k["id"]: k["status"] for k in state["tickets"]}
        assert states == {k["id"]: "completed" for k in t["tickets"]}, (i, t["id"])
        assert state["track"]["status"] == "completed"
        for k in t["tickets"]:
            desc = next(s["description"] for s in state["tickets"] if s["id"] == k["id"])
            assert re.search(rf"^- \[x\] Task: {re.escape(desc.splitlines()[0])}", plan, re.M), \
                (i, k["id"])


def test_sigkill_at_20_random_moments_then_resume(tmp_path):
    rng = random.Random(20261124)
    ws = tmp_path / "ws"
    ws.mkdir()
    # how long does a whole run take here? kill somewhere inside that window
    t0 = time.monotonic()
    p = _start(ws, resume=False)
    out, _ = p.communicate(timeout=120)
    full = time.monotonic() - t0
    assert p.returncode == 0
    window = max(full, 0.6)

    delays = [rng.uniform(0.05, window) for _ in range(20)]
    # two at a time (the machine has two cores); each kill has its own workspace
    with ThreadPoolExecutor(2) as pool:
        done = list(pool.map(lambda a: _one(tmp_path, *a), enumerate(delays)))
    assert len(done) == 20


def test_sigkill_at_12_random_moments_in_a_git_workspace_then_resume(tmp_path):
    """The same in a git repository, where each ticket works in a worktree of its own and
    lands on the track branch: a kill can fall while a tree is written, between a landing
    and the save of the ticket's state, or while the track merges into main. (Killing
    runs at random found two defects: a half-written tree reused, whose commit deleted the
    person's file, and a landed ticket run again on top of itself. Their windows are narrow,
    so each has a deterministic test of its own, in tests/toolbox/test_worktrees.py and
    tests/engine/test_worktree_runs.py.)"""
    rng = random.Random(20261203)
    ws = tmp_path / "ws"
    ws.mkdir()
    _git_workspace(ws)
    t0 = time.monotonic()
    p = _start(ws, resume=False)
    p.communicate(timeout=120)
    full = time.monotonic() - t0
    assert p.returncode == 0
    window = max(full, 0.6)
    delays = [rng.uniform(0.05, window) for _ in range(12)]
    with ThreadPoolExecutor(2) as pool:
        done = list(pool.map(lambda a: _one(tmp_path, *a, in_git=True), enumerate(delays)))
    assert len(done) == 12
