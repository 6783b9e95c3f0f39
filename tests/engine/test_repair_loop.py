"""Done means done (issue 18): a ticket completes only when its checks pass in its own tree;
a failed check goes to Tier 4 and to a fresh worker (attempt 2, 3, ...) through the spawn gate;
broken work never reaches the track branch or the person's branch; a killed run resumes at
the right attempt."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from ai_client import FunctionProvider, ModelResponse, ToolCall
from conftest import Approver, git, wait_for
from models import Approved, Denied, SpawnPayload, Ticket, TrackProposal

ROOT = Path(__file__).resolve().parents[2]
VERIFY = "python3 -m compileall -q src"
BROKEN = "def f(:\n    return 1\n"
GOOD = "def f():\n    return 1\n"


def repo(ws: Path) -> None:
    git(ws, "init", "-q", "-b", "main")
    (ws / "src").mkdir()
    (ws / "src" / "__init__.py").write_text("")
    git(ws, "add", "-A")
    git(ws, "commit", "-qm", "init")


def model(good_from: int, qa: str = "Tier 4: line 1 has a syntax error: `def f(:` lacks a ')'"):
    """A worker that writes broken code until attempt `good_from` (0: never good)."""
    seen: list = []

    def fn(req):
        if req.tier == "Tier 4":
            seen.append(("Tier 4", req.messages[-1].text))
            return ModelResponse(text=qa)
        first = req.messages[0].text
        attempt = 1
        for n in range(2, 12):
            if f"REPAIR, ATTEMPT {n}" in first:
                attempt = n
        if not any(m.role == "model" for m in req.messages):
            seen.append(("Tier 3", first))
            good = good_from and attempt >= good_from
            return ModelResponse(text="writing", tool_calls=[ToolCall(
                id="w", name="write_file", args={"path": "src/m.py",
                                                 "content": GOOD if good else BROKEN})])
        return ModelResponse(text="done")
    return FunctionProvider(fn), seen


def track_with(eng) -> str:
    [track] = eng.accept_tracks([TrackProposal(title="Core: m", goal="g",
                                               acceptance_criteria=["c"])]).result(10)
    eng.set_tickets(track.id, [Ticket(id="T-001", description="write src/m.py",
                                      target_files=["src/m.py"])]).result(10)
    return track.id


def on_any_branch(ws: Path, text: str) -> list[str]:
    """The branches whose history holds a version of a file containing `text`."""
    out = []
    for b in git(ws, "branch", "--format=%(refname:short)").split():
        if text in git(ws, "log", "-p", b):
            out.append(b)
    return out


def test_a_broken_first_attempt_is_repaired_and_only_good_code_reaches_the_branches(
        make_engine, workspace):
    repo(workspace)
    prov, seen = model(good_from=2)
    eng = make_engine(provider=prov, git_commits=True, verify_command=VERIFY, max_repairs=2)
    tid = track_with(eng)
    track = eng.start_track(tid).result(60)
    t = track.tickets[0]
    assert t.status == "completed" and t.attempts == 2, (t.status, t.blocked_reason, t.checks)
    assert "verify command passed" in t.checks
    assert [s[0] for s in seen] == ["Tier 3", "Tier 4", "Tier 3"]
    assert "SyntaxError" in seen[1][1] or "invalid syntax" in seen[1][1] or "def f(:" in seen[1][1]
    repair_prompt = seen[2][1]
    assert "REPAIR, ATTEMPT 2" in repair_prompt and "lacks a ')'" in repair_prompt
    assert git(workspace, "show", "main:src/m.py") == GOOD
    eng.settle()          # the finished track's trees and branches go after it reports
    assert on_any_branch(workspace, "+def f(:") == []            # broken code on no branch
    # each attempt is its own spawn in the log, with its own cost in the ticket's usage
    spawns = [e for e in eng.comms.entries() if e["kind"] == "spawn"]
    assert [e["data"]["attempt"] for e in spawns] == [1, 2]
    assert eng.usage("tier")["Tier 4"].requests >= 1
    stream = eng.stream_text("Tier 3 (Worker): T-001")
    assert "attempt 2 of 3" in stream and "✗ verify command failed" in stream


def test_a_ticket_that_never_passes_fails_with_the_diagnosis_and_its_work_on_its_branch_only(
        make_engine, workspace):
    repo(workspace)
    prov, seen = model(good_from=0)
    eng = make_engine(provider=prov, git_commits=True, verify_command=VERIFY, max_repairs=1)
    tid = track_with(eng)
    track = eng.start_track(tid).result(60)
    t = track.tickets[0]
    assert t.status == "failed" and t.attempts == 2
    assert "verify command failed" in t.blocked_reason and "lacks a ')'" in t.blocked_reason
    assert track.status == "failed" and not track.merged_into
    eng.settle()
    assert on_any_branch(workspace, "+def f(:") == [f"clutch-ticket/{tid}/T-001"]
    assert [s[0] for s in seen] == ["Tier 3", "Tier 4", "Tier 3", "Tier 4"]


def test_the_person_edits_the_diagnosis_before_the_repair_spawns(make_engine, workspace):
    repo(workspace)
    prov, seen = model(good_from=2)
    eng = make_engine(provider=prov, git_commits=True, verify_command=VERIFY,
                      auto_approve=False)
    tid = track_with(eng)
    asked = []

    def decide(req):
        if isinstance(req.payload, SpawnPayload) and req.payload.attempt == 2:
            asked.append(req.payload)
            return Approved(edits={"diagnosis": "The person says: close the parenthesis."})
        return Approved()
    track = Approver.run_track(eng, tid, decide)
    assert track.tickets[0].status == "completed"
    assert "lacks a ')'" in asked[0].diagnosis and "verify command failed" in asked[0].check
    assert "The person says: close the parenthesis." in seen[-1][1]
    assert "lacks a ')'" not in seen[-1][1]


def test_the_person_stops_after_the_first_attempt(make_engine, workspace):
    repo(workspace)
    prov, seen = model(good_from=2)
    eng = make_engine(provider=prov, git_commits=True, verify_command=VERIFY,
                      auto_approve=False)
    tid = track_with(eng)
    track = Approver.run_track(eng, tid, lambda r: Denied(reason="I will fix it myself")
                               if isinstance(r.payload, SpawnPayload) and r.payload.attempt == 2
                               else Approved())
    t = track.tickets[0]
    assert t.status == "failed" and t.attempts == 1
    assert "repair stopped by the person after attempt 1" in t.blocked_reason
    assert "I will fix it myself" in t.blocked_reason
    assert [s[0] for s in seen] == ["Tier 3", "Tier 4"]


def test_missing_target_file_and_an_abnormal_ending_fail_the_checks(make_engine, workspace):
    """No verify command: the target file must still exist; a worker that wrote elsewhere is
    repaired, and with no repairs left the ticket fails naming the missing file."""
    repo(workspace)

    def fn(req):
        if req.tier == "Tier 4":
            return ModelResponse(text="the file was written under the wrong name")
        if not any(m.role == "model" for m in req.messages):
            return ModelResponse(text="w", tool_calls=[ToolCall(
                id="w", name="write_file", args={"path": "src/other.py", "content": GOOD})])
        return ModelResponse(text="done")
    eng = make_engine(provider=FunctionProvider(fn), git_commits=True, max_repairs=0)
    tid = track_with(eng)
    t = eng.start_track(tid).result(60).tickets[0]
    assert t.status == "failed" and "target file(s) missing: src/m.py" in t.blocked_reason


RESUME_CHILD = textwrap.dedent("""
    import sys, time
    sys.path[:0] = [{root!r}, {tests!r}, {here!r}]
    from conftest import fast_settings
    from test_repair_loop import model, track_with
    from multi_agent_conductor import ConductorEngine
    prov, seen = model(good_from=0)
    eng = ConductorEngine({ws!r}, fast_settings(git_commits=True, verify_command={verify!r}),
                          provider=prov, auto_approve=False)
    eng.start()
    tid = track_with(eng)
    eng.approvals.approve_all()
    fut = eng.start_track(tid)
    while True:          # approve the first spawn and its tools; leave the repair's waiting
        for r in eng.approvals.pending():
            if getattr(r.payload, "attempt", 1) == 1 or r.payload.kind != "spawn":
                eng.resolve(r.id, __import__("models").Approved())
        time.sleep(0.02)
""")


def test_kill_9_between_attempts_resumes_at_the_next_attempt(make_engine, workspace):
    repo(workspace)
    child = subprocess.Popen([sys.executable, "-c", RESUME_CHILD.format(
        root=str(ROOT), tests=str(ROOT / "tests"), here=str(Path(__file__).parent),
        ws=str(workspace), verify=VERIFY)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)

    def saved_attempt_one():
        files = list((workspace / "conductor" / "tracks").glob("*/state.toml")) \
            if (workspace / "conductor" / "tracks").is_dir() else []
        return files and "attempts = 1" in files[0].read_text() and \
            "diagnosis = " in files[0].read_text()
    try:
        wait_for(saved_attempt_one, timeout=60, what="attempt 1 saved with its diagnosis")
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait(10)
    prov, seen = model(good_from=2)
    eng = make_engine(provider=prov, git_commits=True, verify_command=VERIFY)
    [track] = eng.tracks()
    track = eng.start_track(track.id).result(60)
    t = track.tickets[0]
    assert t.status == "completed" and t.attempts == 2, (t.status, t.blocked_reason)
    first = [s for s in seen if s[0] == "Tier 3"][0][1]
    assert "REPAIR, ATTEMPT 2" in first and "lacks a ')'" in first   # the saved diagnosis
    assert git(workspace, "show", "main:src/m.py") == GOOD
    eng.settle()          # the finished track's trees go after it reports
    wts = [x for x in git(workspace, "worktree", "list", "--porcelain").splitlines()
           if x.startswith("worktree ")]
    assert wts == [f"worktree {workspace.resolve()}"]


def test_a_track_whose_merged_work_fails_its_check_gets_a_fix_ticket_before_it_completes(
        make_engine, workspace):
    """Each ticket passes alone; together they break the verify command (a.txt and b.txt may
    not both exist): Tier 4's diagnosis becomes a fix ticket after both, and only once it
    passes does the track complete and reach main."""
    repo(workspace)
    verify = "test ! -e a.txt || test ! -e b.txt"

    def fn(req):
        if req.tier == "Tier 4":
            return ModelResponse(text="a.txt and b.txt may not both exist: remove b.txt")
        first = req.messages[0].text
        if any(m.role == "model" for m in req.messages):
            return ModelResponse(text="done")
        if "Acceptance fix:" in first:
            assert "remove b.txt" in first
            return ModelResponse(text="removing", tool_calls=[ToolCall(
                id="r", name="run_shell", args={"command": "rm b.txt"})])
        name = "a.txt" if req.ticket_id == "T-001" else "b.txt"
        return ModelResponse(text="w", tool_calls=[ToolCall(
            id="w", name="write_file", args={"path": name, "content": "x\n"})])
    eng = make_engine(provider=FunctionProvider(fn), git_commits=True, verify_command=verify)
    [track] = eng.accept_tracks([TrackProposal(title="Core: ab", goal="g",
                                               acceptance_criteria=["c"])]).result(10)
    eng.set_tickets(track.id, [Ticket(id="T-001", description="a", target_files=["a.txt"]),
                               Ticket(id="T-002", description="b", target_files=["b.txt"])]
                    ).result(10)
    track = eng.start_track(track.id).result(60)
    assert [k.id for k in track.tickets] == ["T-001", "T-002", "T-003"]
    fix = track.tickets[2]
    assert fix.description.startswith("Acceptance fix:") and fix.depends_on == ["T-001", "T-002"]
    assert [k.status for k in track.tickets] == ["completed"] * 3
    assert track.status == "completed" and track.merged_into == "main"
    files = git(workspace, "ls-tree", "--name-only", "main").split()
    assert "a.txt" in files and "b.txt" not in files


def test_retry_after_a_failed_repair_loop_starts_again_at_attempt_one(make_engine, workspace):
    repo(workspace)
    prov, seen = model(good_from=0)
    eng = make_engine(provider=prov, git_commits=True, verify_command=VERIFY, max_repairs=0)
    tid = track_with(eng)
    t = eng.start_track(tid).result(60).tickets[0]
    assert t.status == "failed" and t.attempts == 1
    eng.retry_ticket("T-001").result(30)
    wait_for(lambda: eng.track(tid).ticket("T-001").status == "failed"
             and eng.track(tid).ticket("T-001").retry_count == 1, timeout=60, what="the retry")
    t = eng.track(tid).ticket("T-001")
    assert t.attempts == 1 and "REPAIR" not in [s for s in seen if s[0] == "Tier 3"][-1][1]


def test_what_the_verify_command_leaves_behind_is_not_committed(make_engine, workspace):
    """compileall writes src/__pycache__/*.pyc and the command may touch tracked files: the
    ticket's commit holds only what its worker wrote."""
    repo(workspace)
    prov, _ = model(good_from=1)
    eng = make_engine(provider=prov, git_commits=True,
                      verify_command=VERIFY + " && echo touched >> src/__init__.py")
    tid = track_with(eng)
    t = eng.start_track(tid).result(60).tickets[0]
    assert t.status == "completed", (t.blocked_reason, t.checks)
    assert git(workspace, "show", "--name-only", "--format=", t.commit_sha).split() == ["src/m.py"]
    assert git(workspace, "show", "main:src/__init__.py") == ""
