"""`clutch run` on a real git repository (issues 17 and 18, the contract tested from outside):
branches and commits in the JSON, the person's edit kept, --no-merge, --verify with repairs,
and kill -9 then --resume leaving no worktree behind."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import git
from test_cli import ROOT, clutch

EPIC = "Add multiply(a, b) to util.py with a test in tests/test_util.py"


def repo(tmp_path: Path) -> Path:
    """A repository with history, a second branch and an uncommitted edit."""
    ws = tmp_path / "repo"
    ws.mkdir()
    git(ws, "init", "-q", "-b", "main")
    (ws / "util.py").write_text("def add(a, b):\n    return a + b\n")
    (ws / "app.py").write_text("from util import add\n")
    git(ws, "add", "-A")
    git(ws, "commit", "-qm", "first")
    git(ws, "branch", "feature-x")
    (ws / "tests").mkdir()
    (ws / "tests" / "test_util.py").write_text("from util import add\n\n\ndef test_add():\n"
                                               "    assert add(1, 2) == 3\n")
    git(ws, "add", "-A")
    git(ws, "commit", "-qm", "tests")
    (ws / "app.py").write_text("from util import add  # the person's edit, not committed\n")
    return ws


def worktrees(ws: Path) -> list[str]:
    return [x for x in git(ws, "worktree", "list", "--porcelain").splitlines()
            if x.startswith("worktree ")]


def test_a_run_reports_branches_and_commits_and_keeps_the_persons_edit(tmp_path):
    ws = repo(tmp_path)
    before = (ws / "app.py").read_bytes()
    head = git(ws, "rev-parse", "main").strip()
    p = clutch("run", "--epic", EPIC, "--workspace", str(ws), "--yes", "--json", "--pace", "0")
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout)
    assert out["tracks"]
    for t in out["tracks"]:
        assert t["branch"] == f"clutch/{t['id']}" and t["merged_into"] == "main"
        for k in t["tickets"]:
            assert k["status"] == "completed" and k["attempts"] == 1 and k["reason"] is None
            git(ws, "merge-base", "--is-ancestor", k["commit"], t["branch"])
            git(ws, "merge-base", "--is-ancestor", k["commit"], "main")
    assert (ws / "app.py").read_bytes() == before
    assert worktrees(ws) == [f"worktree {ws.resolve()}"]
    # the planner read the code: util.py itself gained multiply, on main, no invented package
    assert sorted(git(ws, "diff", "--name-only", head, "main").split()) == \
        ["tests/test_util.py", "util.py"]
    assert "def multiply(a, b)" in git(ws, "show", "main:util.py")


def test_no_merge_leaves_the_track_branch_and_the_persons_branch_as_it_was(tmp_path):
    ws = repo(tmp_path)
    head = git(ws, "rev-parse", "main")
    p = clutch("run", "--epic", EPIC, "--workspace", str(ws), "--yes", "--json", "--pace", "0",
               "--no-merge")
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout)
    assert git(ws, "rev-parse", "main") == head
    for t in out["tracks"]:
        assert t["merged_into"] is None and git(ws, "rev-parse", t["branch"]) != head


def test_a_verify_command_that_never_passes_fails_the_run_with_the_reason(tmp_path):
    ws = repo(tmp_path)
    head = git(ws, "rev-parse", "main")
    p = clutch("run", "--epic", EPIC, "--workspace", str(ws), "--yes", "--json", "--pace", "0",
               "--verify", "python3 -c 'raise SystemExit(4)'", "--max-repairs", "1")
    assert p.returncode == 1, p.stderr[-3000:]
    out = json.loads(p.stdout)
    tickets = [k for t in out["tracks"] for k in t["tickets"]]
    failed = [k for k in tickets if k["status"] == "failed"]
    assert failed and all(k["attempts"] == 2 for k in failed)
    assert all("verify command failed (exit code 4)" in k["reason"] for k in failed)
    assert all(k["status"] in ("failed", "blocked") for k in tickets)
    assert all(k["reason"] for k in tickets)
    assert git(ws, "rev-parse", "main") == head           # nothing reached the person's branch
    assert worktrees(ws) == [f"worktree {ws.resolve()}"]


def test_a_bad_verify_or_max_repairs_is_a_usage_error(tmp_path):
    ws = repo(tmp_path)
    p = clutch("run", "--epic", EPIC, "--workspace", str(ws), "--yes", "--max-repairs", "11")
    assert p.returncode == 2 and "--max-repairs must be from 0 to 10" in p.stderr
    p = clutch("run", "--epic", EPIC, "--workspace", str(ws), "--yes", "--verify", "  ")
    assert p.returncode == 2 and "--verify needs a command" in p.stderr


def test_kill_9_mid_run_then_resume_finishes_and_leaves_no_worktree(tmp_path):
    ws = repo(tmp_path)
    head = git(ws, "rev-parse", "main").strip()
    env = dict(os.environ)
    env.pop("GEMINI_API_KEY", None)
    proc = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "run", "--epic", EPIC,
                             "--workspace", str(ws), "--yes", "--json", "--pace", "0.05"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT,
                            env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(worktrees(ws)) < 2:
            time.sleep(0.05)
        assert len(worktrees(ws)) >= 2, "no ticket worktree appeared"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    p = clutch("run", "--resume", "--workspace", str(ws), "--yes", "--json", "--pace", "0")
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout)
    assert all(t["status"] == "completed" and t["merged_into"] == "main" for t in out["tracks"])
    assert worktrees(ws) == [f"worktree {ws.resolve()}"]
    assert git(ws, "diff", "--name-only", head, "main").split()
