"""The person's set-up of checks and git (engine.track_setup): a track's own verify command,
saved with the track and refused while it runs; `git init` for a plain workspace, after which
the next track's tickets work in worktrees; clear errors for bad input and a failing git."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ai_client import FunctionProvider, ModelResponse, ToolCall
from conftest import wait_for
from models import ApprovalPolicy, Ticket, TrackProposal
from multi_agent_conductor import ConductorEngine, EngineError


def git(ws: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(ws), *args], check=True, capture_output=True,
                          text=True).stdout


def one_ticket(eng, path: str = "src/m.py") -> str:
    [track] = eng.accept_tracks([TrackProposal(title="Core", goal="g",
                                               acceptance_criteria=["c"])]).result(10)
    eng.set_tickets(track.id, [Ticket(id="T-001", description=f"write {path}",
                                      target_files=[path])]).result(10)
    return track.id


def writer() -> FunctionProvider:
    def fn(req):
        if not any(m.role == "model" for m in req.messages):
            return ModelResponse(text="w", tool_calls=[ToolCall(
                id="w", name="write_file", args={"path": "src/m.py", "content": "x = 1\n"})])
        return ModelResponse(text="done")
    return FunctionProvider(fn)


def test_a_tracks_verify_command_is_saved_and_reloaded(make_engine, workspace):
    eng = make_engine()
    tid = one_ticket(eng)
    assert eng.track(tid).verify_command is None
    t = eng.set_verify_command(tid, "  python3 -m compileall -q src  ").result(10)
    assert t.verify_command == "python3 -m compileall -q src"
    assert eng._verify_command_for(eng._get(tid)) == "python3 -m compileall -q src"
    eng.set_verify_command(tid, "").result(10)          # "" = none for this track
    assert eng.track(tid).verify_command == ""
    eng.set_verify_command(tid, "pytest -q").result(10)
    eng.close()
    again = ConductorEngine(workspace).start()
    try:
        assert again.track(tid).verify_command == "pytest -q"
        again.set_verify_command(tid, None).result(10)   # back to the settings'
    finally:
        again.close()
    third = ConductorEngine(workspace).start()
    try:
        assert third.track(tid).verify_command is None
    finally:
        third.close()


def test_bad_verify_commands_are_refused_with_a_reason(make_engine):
    eng = make_engine()
    tid = one_ticket(eng)
    with pytest.raises(EngineError, match="limit is 2,000"):
        eng.set_verify_command(tid, "x" * 2001)
    with pytest.raises(EngineError, match="text or None"):
        eng.set_verify_command(tid, 3)                  # type: ignore[arg-type]
    with pytest.raises(EngineError, match="no track"):
        eng.set_verify_command("nope", "pytest")
    assert eng.track(tid).verify_command is None


def test_the_verify_command_cannot_change_while_the_track_runs(make_engine):
    eng = make_engine(auto_approve=False)               # the spawn waits: the track runs
    tid = one_ticket(eng)
    run = eng.start_track(tid)
    wait_for(lambda: eng.pending_approvals(), 10, what="the spawn approval")
    with pytest.raises(EngineError, match="is running"):
        eng.set_verify_command(tid, "pytest")
    eng.cancel_ticket("T-001")
    run.result(20)
    assert eng.set_verify_command(tid, "pytest").result(10).verify_command == "pytest"


def test_the_suggested_verify_command_comes_from_the_project(make_engine, workspace):
    eng = make_engine()
    assert eng.verify_suggestion() == ("", "")
    (workspace / "tests").mkdir()
    (workspace / "tests" / "test_x.py").write_text("def test_x():\n    pass\n")
    cmd, where = eng.verify_suggestion()
    assert "pytest" in cmd and where


def test_git_init_turns_a_plain_directory_into_worktrees_for_the_next_track(make_engine,
                                                                           workspace):
    (workspace / "notes.txt").write_text("mine\n")
    eng = make_engine(provider=writer(), git_commits=True)
    assert not eng.worktrees_on
    setup = eng.git_setup()
    assert setup["worktrees"] is False and setup["can_init"] is True
    assert "not inside a git work tree" in setup["reason"]
    sha = eng.init_git().result(30)
    assert sha and eng.worktrees_on
    assert eng.git_setup() == {"worktrees": True, "can_init": False, "reason": ""}
    assert not any(n.startswith("Tickets share the workspace") for n in eng.notices)
    tracked = git(workspace, "ls-files").split()
    assert {"notes.txt", "README.md"} <= set(tracked)
    assert not any(p.startswith(".clutch") for p in tracked)
    with pytest.raises(EngineError, match="already"):
        eng.init_git()
    # the next track runs in worktrees: its own branch, merged into the person's branch
    tid = one_ticket(eng)
    track = eng.start_track(tid).result(60)
    assert track.status == "completed", track.tickets[0].blocked_reason
    assert track.branch == f"clutch/{tid}" and track.merged_into
    assert git(workspace, "show", f"{track.merged_into}:src/m.py") == "x = 1\n"
    assert (workspace / "notes.txt").read_text() == "mine\n"


def test_git_init_in_a_repository_without_commits_makes_the_first_one(make_engine, workspace):
    git(workspace, "init", "-q")
    eng = make_engine(git_commits=True)
    assert not eng.worktrees_on and eng.git_setup()["can_init"] is True
    eng.init_git().result(30)
    assert eng.worktrees_on
    assert len(git(workspace, "log", "--format=%H").split()) == 1


def test_a_failing_git_init_says_what_git_said(make_engine, workspace):
    (workspace / ".git").write_text("this is not a git directory\n")
    eng = make_engine(git_commits=True)
    assert not eng.worktrees_on
    with pytest.raises(EngineError, match="git .* failed"):
        eng.init_git().result(30)
    assert not eng.worktrees_on
    assert (workspace / ".git").read_text() == "this is not a git directory\n"


def test_git_init_is_refused_while_a_track_runs(make_engine, workspace):
    eng = make_engine(git_commits=True, auto_approve=False)
    tid = one_ticket(eng)
    run = eng.start_track(tid)
    wait_for(lambda: eng.pending_approvals(), 10, what="the spawn approval")
    with pytest.raises(EngineError, match="is running"):
        eng.init_git()
    eng.cancel_ticket("T-001")
    run.result(20)
    assert not (workspace / ".git").exists()


def test_with_git_off_in_the_settings_init_is_not_offered(make_engine):
    eng = make_engine(git_commits=False)
    s = eng.git_setup()
    assert s == {"worktrees": False, "can_init": False,
                 "reason": "git commits are off in the settings"}
