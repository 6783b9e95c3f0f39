"""A Conductor phase's "User Manual Verification" task is the person's checkpoint, never a
worker's; and in a git workspace a task is ticked only with the commit that did it."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

from ai_client import FunctionProvider, ModelResponse, ToolCall
from conftest import Approver
from models import Approved, CheckpointPayload, Denied

PLAN = """# Implementation Plan

## Phase 1: Greeting
- [ ] Task: Write greet.py with a greet() function
- [ ] Task: Conductor - User Manual Verification 'Phase 1: Greeting' (Protocol in workflow.md)

## Phase 2: Docs
- [ ] Task: Describe greet() in the README
"""


def git(ws: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(ws), *args], check=True, capture_output=True,
                          text=True).stdout


def project(ws: Path) -> str:
    """A git repository holding a Conductor track as the extension writes it."""
    tid = "greeting_20261203"
    folder = ws / "conductor" / "tracks" / tid
    folder.mkdir(parents=True)
    (ws / "conductor" / "tracks.md").write_text(
        "# Project Tracks\n\n---\n\n- [ ] **Track: Say hello properly**\n"
        f"*Link: [./tracks/{tid}/](./tracks/{tid}/)*\n")
    (folder / "plan.md").write_text(PLAN)
    (folder / "spec.md").write_text("# Specification\n\n## Overview\nSay hello.\n")
    git(ws, "init", "-q", "-b", "main")
    git(ws, "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A")
    git(ws, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    return tid


def writer(req):
    """A worker that writes one file per ticket, then says it is done."""
    if any(m.role == "tool" for m in req.messages):
        return ModelResponse(text="done")
    tid = req.ticket_id or "x"
    return ModelResponse(text="writing", tool_calls=[ToolCall(
        id="c1", name="write_file",
        args={"path": f"out/{tid}.txt", "content": f"work of {tid}\n"})])


def test_the_person_verifies_a_phase_and_it_gets_its_checkpoint(make_engine, workspace):
    tid = project(workspace)
    eng = make_engine(provider=FunctionProvider(writer), auto_approve=False, git_commits=True)
    asked = []

    def decide(r):
        if isinstance(r.payload, CheckpointPayload):
            asked.append(r.payload)
        return Approved()
    track = Approver.run_track(eng, tid, decide)
    by_text = {k.description.split(" '")[0]: k for k in track.tickets}
    check = next(k for k in track.tickets if k.checkpoint)
    assert check.status == "completed" and check.commit_sha
    assert len(asked) == 1 and asked[0].phase and "greet.py" in asked[0].tasks[0]
    assert [k.status for k in track.tickets] == ["completed"] * 3, by_text
    plan = (workspace / "conductor/tracks" / tid / "plan.md").read_text()
    assert re.search(rf"^## Phase 1: Greeting \[checkpoint: {check.commit_sha[:7]}\]$", plan, re.M)
    assert re.search(rf"^- \[x\] Task: Conductor - User Manual Verification .* {check.commit_sha[:7]}$",
                     plan, re.M), plan
    log = git(workspace, "log", "--no-merges", "--format=%s")
    assert "conductor(checkpoint): Checkpoint end of phase" in log
    # no worker ran for the checkpoint: only two worker commits and the checkpoint's (the
    # tickets' commits came from the track branch, merged in when the track completed)
    assert log.count("\n") == 4


def test_a_rejected_checkpoint_keeps_the_phase_open_with_the_reason(make_engine, workspace):
    tid = project(workspace)
    eng = make_engine(provider=FunctionProvider(writer), auto_approve=False, git_commits=True)
    track = Approver.run_track(eng, tid, lambda r: Denied(reason="the greeting is rude")
                               if isinstance(r.payload, CheckpointPayload) else Approved())
    check = next(k for k in track.tickets if k.checkpoint)
    assert check.status == "failed" and "the greeting is rude" in check.blocked_reason
    assert track.tickets[2].status == "blocked"          # phase 2 waits for the checkpoint
    plan = (workspace / "conductor/tracks" / tid / "plan.md").read_text()
    assert "[checkpoint:" not in plan
    assert re.search(r"^- \[ \] Task: Conductor - User Manual Verification", plan, re.M)


def test_a_worker_that_changes_nothing_leaves_its_task_open(make_engine, workspace):
    tid = project(workspace)
    eng = make_engine(provider=FunctionProvider(lambda req: "all done, trust me"),
                      git_commits=True)
    track = eng.start_track(tid).result(60)
    first = track.tickets[0]
    assert first.status == "failed" and "changed no file" in first.blocked_reason
    assert not first.commit_sha
    plan = (workspace / "conductor/tracks" / tid / "plan.md").read_text()
    assert "- [x]" not in plan
