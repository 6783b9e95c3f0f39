"""Tracks other tools can read, and a git commit per ticket."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import fast_settings
from models import Ticket, TrackProposal

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests/fixtures/conductor_project"


def git(ws, *args):
    return subprocess.run(["git", "-C", str(ws), *args], capture_output=True, text=True,
                          check=True).stdout


def init_repo(ws: Path):
    git(ws, "init", "-q")
    git(ws, "config", "user.email", "t@example.com")
    git(ws, "config", "user.name", "T")
    git(ws, "add", "-A")
    git(ws, "commit", "-qm", "init")


def run_track(ws, ts, **kw):
    from multi_agent_conductor import ConductorEngine
    eng = ConductorEngine(ws, fast_settings(git_commits=True, **kw), auto_approve=True).start()
    [tr] = eng.accept_tracks([TrackProposal(title="Core: greeting", goal="g",
                                            acceptance_criteria=["c"])]).result(10)
    eng.set_tickets(tr.id, ts).result(10)
    return eng, eng.start_track(tr.id).result(60)


def test_a_commit_per_ticket_with_only_its_files_and_the_sha_in_plan_md(workspace):
    init_repo(workspace)
    ts = [Ticket(id="T-001", description="first", target_files=["a.py"]),
          Ticket(id="T-002", description="second", target_files=["b.py"]),
          Ticket(id="T-003", description="third", target_files=["c.md"], depends_on=["T-001"])]
    eng, track = run_track(workspace, ts, max_workers=3)
    try:
        assert all(t.status == "completed" for t in track.tickets)
        log = git(workspace, "log", "--format=%h %s")
        for t in track.tickets:
            assert t.commit_sha and re.fullmatch(r"[0-9a-f]{7,}", t.commit_sha)
            assert f"{t.commit_sha[:7]}" in log and f"{t.id}:" in log
            files = git(workspace, "show", "--name-only", "--format=", t.commit_sha).split()
            assert files == t.target_files, (t.id, files)   # only its own files
        plan = (workspace / "conductor/tracks" / track.id / "plan.md").read_text()
        for t in track.tickets:
            assert re.search(rf"^- \[x\] Task: {re.escape(t.description)} {t.commit_sha[:7]}$", plan,
                             re.M), plan
        # revert one ticket's commit: its file is gone, the ticket goes back to todo
        sha = eng.revert_ticket("T-002").result(30)
        assert sha and not (workspace / "b.py").exists()
        t2 = eng.track(track.id).ticket("T-002")
        assert t2.status == "todo" and not t2.commit_sha
    finally:
        eng.close()


def test_dirty_tree_disables_commits_in_the_shared_directory_with_a_notice(workspace):
    """Without worktrees, workers would commit in the person's own tree: a dirty one turns
    commits off, and says so."""
    init_repo(workspace)
    (workspace / "README.md").write_text("changed, not committed\n")
    eng, track = run_track(workspace, [Ticket(id="T-001", description="x", target_files=["a.py"])],
                           worktrees=False)
    try:
        assert any("Git commits per ticket are off" in n and "README.md" in n for n in eng.notices)
        assert track.tickets[0].status == "completed" and not track.tickets[0].commit_sha
        assert git(workspace, "rev-list", "--count", "HEAD").strip() == "1"
    finally:
        eng.close()


def test_a_dirty_tree_is_no_obstacle_with_worktrees_and_is_left_as_it_was(workspace):
    """With worktrees, workers never touch the person's tree: the ticket is committed on the
    track branch, merged in, and the person's uncommitted README survives byte for byte."""
    init_repo(workspace)
    (workspace / "README.md").write_text("changed, not committed\n")
    eng, track = run_track(workspace, [Ticket(id="T-001", description="x", target_files=["a.py"])])
    try:
        assert not any("Git commits per ticket are off" in n for n in eng.notices)
        assert track.tickets[0].status == "completed" and track.tickets[0].commit_sha
        assert track.merged_into and (workspace / "a.py").exists()
        assert (workspace / "README.md").read_text() == "changed, not committed\n"
        assert git(workspace, "rev-list", "--count", "HEAD").strip() == "2"
    finally:
        eng.close()


def test_non_git_workspace_runs_without_commits(workspace):
    eng, track = run_track(workspace, [Ticket(id="T-001", description="x", target_files=["a.py"])])
    try:
        assert any("Git commits per ticket are off" in n for n in eng.notices)
        assert track.tickets[0].status == "completed"
    finally:
        eng.close()


def _clutch(*args):
    env = {k: v for k, v in os.environ.items() if k not in ("GEMINI_API_KEY", "GOOGLE_API_KEY")}
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], capture_output=True,
                          text=True, timeout=120, cwd=ROOT, env=env, stdin=subprocess.DEVNULL)


def test_a_hand_written_conductor_project_loads_and_runs(tmp_path):
    ws = tmp_path / "proj"
    shutil.copytree(FIXTURE, ws)
    p = _clutch("tracks", "--workspace", str(ws), "--json")
    assert p.returncode == 0, p.stderr
    tracks = {t["id"]: t for t in json.loads(p.stdout)["tracks"]}
    assert set(tracks) == {"user_auth_20250114", "fix_login_redirect_20250120"}
    ua = tracks["user_auth_20250114"]
    done_before = [k["id"] for k in ua["tickets"] if k["status"] == "completed"]
    assert len(done_before) == 3

    r = _clutch("run", "--workspace", str(ws), "--track", "user_auth_20250114", "--yes",
                "--json", "--pace", "0")
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads(r.stdout)
    [t] = [t for t in summary["tracks"] if t["id"] == "user_auth_20250114"]
    assert t["status"] == "completed" and all(k["status"] == "completed" for k in t["tickets"])
    entries = [json.loads(l) for l in
               (Path(summary["session_dir"]) / "comms.jsonl").read_text().splitlines()]
    spawned = {e["ticket_id"] for e in entries if e["kind"] == "spawn"}
    assert not spawned & set(done_before)            # done tasks stay done
    # every open task got a worker but the phase's manual verification: that is the person's
    # checkpoint (approved here by --yes), never a worker's
    manual = {"UA-6"}       # plan.md line 23: "User Manual Verification 'Endpoints'"
    assert spawned == {k["id"] for k in t["tickets"]} - set(done_before) - manual
    # a Conductor user reads what we wrote: every task ticked, metadata completed
    plan = (ws / "conductor/tracks/user_auth_20250114/plan.md").read_text()
    assert "[ ]" not in plan.split("## Phase 2")[1] and "[~]" not in plan
    meta = json.loads((ws / "conductor/tracks/user_auth_20250114/metadata.json").read_text())
    assert meta["status"] == "completed"
    registry = (ws / "conductor/tracks.md").read_text()
    assert "[x] **Track: User authentication**" in registry
    # the other track was not touched
    assert "## [ ] Track: Fix the login redirect loop" in registry
