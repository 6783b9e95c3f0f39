"""Issues 17 and 18 in the real window (glfw + OpenGL under Xvfb), driven by imgui's test
engine: the merge approval of a finished track, a completed ticket's diff, a repaired ticket's
attempts, checks and diagnosis (with the verify command set in the Tracks window and the
diagnosis edited in the repair's spawn dialog), and "Initialize git here" outside git.

Real git repositories; a FunctionProvider stands in for the model. What happened is asserted
from git, the engine and the disk; screenshots of each view go to
artifacts/screenshots-branches/ (git-ignored) to look at.
"""
from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest

from conftest import fast_settings, git
from gui_support import ARTIFACTS, check, run_app_test, wait_until, window_display

import gui_2
from ai_client import FunctionProvider, ModelResponse, ToolCall
from imgui_bundle.immapp import testing
from models import ApprovalPolicy, MergePayload, SpawnPayload, Ticket, TrackProposal, Usage

pytestmark = [pytest.mark.xvfb, pytest.mark.timeout(300)]

SHOTS = ARTIFACTS.parent / "screenshots-branches"
VERIFY = "python3 -m compileall -q src"
BROKEN = "def f(:\n    return 1\n"
GOOD = "def f():\n    return 1\n"
DIAG_EDIT = "The person says: close the parenthesis after f( and keep the body."


@pytest.fixture(scope="module", autouse=True)
def display():
    """A real X display for the module (an Xvfb of our own unless one is set)."""
    with window_display():
        yield


def repo(ws: Path) -> None:
    git(ws, "init", "-q", "-b", "main")
    (ws / "src").mkdir()
    (ws / "src" / "__init__.py").write_text("")
    git(ws, "add", "-A")
    git(ws, "commit", "-qm", "init")


def usage() -> Usage:
    return Usage(input_tokens=1200, output_tokens=300, total_tokens=1500, requests=1)


def writer(broken_until: int = 0, seen: list | None = None) -> FunctionProvider:
    """Each ticket's worker writes src/<ticket>.py; broken code before attempt `broken_until`."""
    seen = seen if seen is not None else []

    def fn(req):
        if req.tier == "Tier 4":
            seen.append(("Tier 4", req.messages[-1].text))
            return ModelResponse(text="Tier 4: line 1 has a syntax error: `def f(:` lacks a ')'",
                                 usage=usage(), model=req.model)
        first = req.messages[0].text
        attempt = max([int(n) for n in re.findall(r"REPAIR, ATTEMPT (\d+)", first)] or [1])
        if not any(m.role == "model" for m in req.messages):
            seen.append(("Tier 3", first))
            name = "m" if broken_until else req.ticket_id.lower().replace("-", "_")
            good = attempt >= broken_until
            return ModelResponse(text="writing", usage=usage(), model=req.model, tool_calls=[ToolCall(
                id="w", name="write_file", args={"path": f"src/{name}.py",
                                                 "content": GOOD if good else BROKEN})])
        return ModelResponse(text="done", usage=usage(), model=req.model)
    return FunctionProvider(fn)


def engine(ws: Path, provider, **kw):
    from multi_agent_conductor import ConductorEngine
    base = dict(git_commits=True, provider="gemini", approvals=ApprovalPolicy(spawn="auto", write_tools="auto",
                                                           shell="auto"))
    base.update(kw)
    eng = ConductorEngine(ws, fast_settings(**base), provider=provider, auto_approve=False)
    return eng.start()


def two_tickets(eng) -> str:
    [track] = eng.accept_tracks([TrackProposal(title="Core: a and b", goal="g",
                                               acceptance_criteria=["c"])]).result(10)
    eng.set_tickets(track.id, [
        Ticket(id="T-001", description="write src/t_001.py", target_files=["src/t_001.py"]),
        Ticket(id="T-002", description="write src/t_002.py", target_files=["src/t_002.py"],
               depends_on=["T-001"])]).result(10)
    return track.id


def shot(ctx, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    ctx.yield_(2)
    p = SHOTS / f"{name}.png"
    testing.capture(ctx, str(p))
    return p


def run(eng, app, t):
    try:
        run_app_test(app, t, headless=False, msaa=0)
    finally:
        eng.close()
        app.close()
    broken = [n.message for n in app.notices if "panel failed" in n.message
              or "The dialog" in n.message]
    assert not broken, broken


def front(app):
    return app.approvals.edit.request if app.modal.current == "approval" and app.approvals.edit else None


def test_merge_approval_is_read_and_approved_and_the_branch_gets_the_commits(workspace):
    repo(workspace)
    eng = engine(workspace, writer())
    tid = two_tickets(eng)
    app = gui_2.AppState(eng)
    seen: dict = {}

    def t(ctx):
        wait_until(ctx, lambda: app.tickets.selected_track == tid, 10, "the track selected")
        ctx.item_click("//Tracks/###Start")
        req = wait_until(ctx, lambda: (r := front(app)) is not None and r.kind == "merge" and r,
                         60, "the merge approval")
        ctx.yield_(3)
        seen["payload"] = req.payload
        seen["shot"] = shot(ctx, "merge_approval")
        # the diff's file list jumps to a file
        check(ctx, "//Approval/**/###file-1")
        ctx.item_click("//Approval/**/###file-1")
        ctx.yield_(2)
        seen["picked"] = app.approvals.diff_pick.selected
        ctx.item_click("//Approval/###Approve")
        wait_until(ctx, lambda: eng.track(tid).merged_into, 30, "the track merged")
        app.tickets.dirty = True
        wait_until(ctx, lambda: (x := app.tickets.track_by_id(tid)) and x.merged_into, 10,
                   "the panel to know")
        seen["tracks_shot"] = shot(ctx, "track_merged")

    run(eng, app, t)
    p = seen["payload"]
    assert isinstance(p, MergePayload)
    assert (p.branch, p.into) == (f"clutch/{tid}", "main")
    assert [k["id"] for k in p.tickets] == ["T-001", "T-002"]
    assert all(k["commit"] and k["status"] == "completed" for k in p.tickets)
    assert all(k["cost_usd"] > 0 for k in p.tickets), p.tickets
    assert "+def f():" in p.diff and "src/t_001.py" in p.diff and "src/t_002.py" in p.diff
    assert seen["picked"] == "src/t_002.py"
    # the person's branch got both tickets' commits, and its working tree the files
    log = git(workspace, "log", "--format=%s", "main")
    assert "T-001" in log and "T-002" in log
    assert git(workspace, "show", "main:src/t_001.py") == GOOD
    assert (workspace / "src" / "t_002.py").read_text() == GOOD
    track = eng.track(tid)
    assert track.merged_into == "main" and track.status == "completed"
    for k in track.tickets:
        assert k.commit_sha and k.commit_sha[:7] in git(workspace, "log", "--format=%h %H", "main")
    # the dialog was drawn (a blank frame compresses to a few kB)
    assert seen["shot"].stat().st_size > 40_000


def test_a_completed_tickets_diff_opens_in_the_tickets_window(workspace):
    repo(workspace)
    eng = engine(workspace, writer(), merge_tracks=False)
    tid = two_tickets(eng)
    app = gui_2.AppState(eng)
    seen: dict = {}

    def t(ctx):
        wait_until(ctx, lambda: app.tickets.selected_track == tid, 10, "the track selected")
        ctx.item_click("//Tracks/###Start")
        wait_until(ctx, lambda: eng.track(tid).status == "completed" and not eng.is_running(tid),
                   60, "the track to finish")
        app.tickets.dirty = True
        wait_until(ctx, lambda: all(k.status == "completed"
                                    for k in app.tickets.track_by_id(tid).tickets), 10, "the table")
        ctx.item_click("//Tickets/**/T-002/T-002")
        wait_until(ctx, lambda: app.detail.diff is not None, 20, "the diff read from git")
        ctx.yield_(3)
        seen["diff"] = dict(app.detail.diff)
        ctx.item_click("//Tickets/**/###file-0")
        ctx.yield_(2)
        seen["picked"] = app.detail.pick.selected
        seen["shot"] = shot(ctx, "ticket_diff")

    run(eng, app, t)
    d = seen["diff"]
    k = eng.track(tid).ticket("T-002")
    assert d["ticket_id"] == "T-002" and d["files"] == ["src/t_002.py"]
    assert "+def f():" in d["diff"] and "t_001" not in d["diff"]
    assert d["commit"] == k.commit_sha and k.merge
    assert seen["picked"] == "src/t_002.py"
    # the track was not merged (merging is off): the person's branch is as it was
    assert "T-002" not in git(workspace, "log", "--format=%s", "main")
    assert seen["shot"].stat().st_size > 40_000


def test_a_repaired_ticket_shows_its_attempts_checks_and_diagnosis(workspace):
    repo(workspace)
    calls: list = []
    eng = engine(workspace, writer(broken_until=2, seen=calls), merge_tracks=False,
                 approvals=ApprovalPolicy(spawn="ask", write_tools="auto", shell="auto"))
    [track] = eng.accept_tracks([TrackProposal(title="Core: m", goal="g",
                                               acceptance_criteria=["c"])]).result(10)
    tid = track.id
    eng.set_tickets(tid, [Ticket(id="T-001", description="write src/m.py",
                                 target_files=["src/m.py"])]).result(10)
    app = gui_2.AppState(eng)
    seen: dict = {}

    def t(ctx):
        wait_until(ctx, lambda: app.tickets.selected_track == tid, 10, "the track selected")
        # the verify command, set in the track's Edit tab
        ctx.item_click("//Tracks/track-docs/Edit")
        ctx.yield_(2)
        ctx.item_click("//Tracks/**/This track has its own verify command")
        ctx.item_click("//Tracks/**/###Verify command")
        ctx.key_chars(VERIFY)
        ctx.yield_()
        ctx.item_click("//Tracks/**/Save verify command")
        wait_until(ctx, lambda: eng.track(tid).verify_command == VERIFY, 10, "the verify command")
        seen["edit_shot"] = shot(ctx, "verify_command")
        ctx.item_click("//Tracks/###Start")
        r = wait_until(ctx, lambda: (r := front(app)) is not None and r.kind == "spawn" and r, 30,
                       "the first spawn")
        assert r.payload.attempt == 1
        ctx.item_click("//Approval/###Approve")
        r = wait_until(ctx, lambda: (r := front(app)) is not None and r.kind == "spawn"
                       and r.payload.attempt == 2 and r, 60, "the repair's spawn")
        seen["repair"] = r.payload
        ctx.yield_(3)
        seen["repair_shot"] = shot(ctx, "repair_spawn")
        ctx.item_click("//Approval/##Diagnosis")
        ctx.key_press(imgui_key("mod_ctrl") | imgui_key("a"))
        ctx.key_chars(DIAG_EDIT)
        ctx.yield_()
        seen["edited"] = app.approvals.edit.fields["diagnosis"]
        ctx.item_click("//Approval/###Approve")
        wait_until(ctx, lambda: eng.track(tid).ticket("T-001").status == "completed"
                   and not eng.is_running(tid), 60, "the repaired ticket")
        app.tickets.dirty = True
        wait_until(ctx, lambda: app.tickets.track_by_id(tid).ticket("T-001").attempts == 2, 10,
                   "the table")
        ctx.item_click("//Tickets/**/T-001/T-001")
        wait_until(ctx, lambda: app.detail.diff is not None, 20, "the ticket's reads")
        seen["read"] = dict(app.detail.diff)
        ctx.item_click("//Tickets/**/###Checks")
        ctx.yield_(2)
        seen["checks_shot"] = shot(ctx, "repaired_checks")
        ctx.item_click("//Tickets/**/Diagnosis")
        ctx.yield_(2)
        seen["diag_shot"] = shot(ctx, "repaired_diagnosis")
        seen["detail"] = app.detail.ticket_id

    run(eng, app, t)
    rp = seen["repair"]
    assert isinstance(rp, SpawnPayload) and rp.attempt == 2
    assert "✗ verify command failed" in rp.check and "lacks a ')'" in rp.diagnosis
    assert seen["edited"] == DIAG_EDIT
    k = eng.track(tid).ticket("T-001")
    assert k.status == "completed" and k.attempts == 2
    assert "✓ verify command passed" in k.checks and k.diagnosis == DIAG_EDIT
    # the repair worker was given the person's diagnosis, not Tier 4's
    last_worker = [c for c in calls if c[0] == "Tier 3"][-1][1]
    assert DIAG_EDIT in last_worker and "lacks a ')'" not in last_worker
    assert seen["detail"] == "T-001"
    # what each attempt cost, and Tier 4's diagnosis, read from the comms log
    costs = seen["read"]["attempt_costs"]
    assert sorted(costs) == [1, 2] and all(c > 0 for c in costs.values())
    assert seen["read"]["qa_cost"] > 0
    assert seen["read"]["files"] and "src/m.py" in seen["read"]["files"]
    # saved with the track: a reopened engine has it
    assert "python3 -m compileall -q src" in (eng.track_dir(tid) / "state.toml").read_text()
    for name in ("edit_shot", "repair_shot", "checks_shot", "diag_shot"):
        assert seen[name].stat().st_size > 40_000, name


def imgui_key(name: str):
    from imgui_bundle import imgui
    return getattr(imgui.Key, name)


def test_outside_git_the_notice_offers_git_init_and_tickets_get_worktrees(workspace):
    (workspace / "notes.txt").write_text("the person's own file\n")
    eng = engine(workspace, writer())
    assert not eng.worktrees_on
    app = gui_2.AppState(eng)
    seen: dict = {}

    def t(ctx):
        wait_until(ctx, lambda: ctx.item_exists("//Tracks/###Initialize git here"), 10,
                   "the notice's button")
        seen["shot"] = shot(ctx, "shared_directory_notice")
        ctx.item_click("//Tracks/###Initialize git here")
        wait_until(ctx, lambda: eng.worktrees_on, 20, "worktrees on")
        wait_until(ctx, lambda: app.setup.git and app.setup.git.get("worktrees"), 10,
                   "the notice gone")
        ctx.yield_(3)
        seen["button_after"] = ctx.item_exists("//Tracks/###Initialize git here")

    run(eng, app, t)
    assert seen["button_after"] is False
    tracked = git(workspace, "ls-files").split()
    assert "notes.txt" in tracked and "README.md" in tracked
    assert not any(p.startswith(".clutch") for p in tracked)
    assert len(git(workspace, "log", "--format=%H").split()) == 1
    assert (workspace / "notes.txt").read_text() == "the person's own file\n"


def test_a_failing_git_init_shows_gits_reason_in_the_tracks_window(workspace):
    (workspace / ".git").write_text("this is not a git directory\n")
    eng = engine(workspace, writer())
    app = gui_2.AppState(eng)
    seen: dict = {}

    def t(ctx):
        wait_until(ctx, lambda: ctx.item_exists("//Tracks/###Initialize git here"), 10,
                   "the notice's button")
        ctx.item_click("//Tracks/###Initialize git here")
        seen["error"] = wait_until(ctx, lambda: app.panel_errors.get("Tracks"), 20,
                                   "the error in the Tracks window")
        seen["shot"] = shot(ctx, "git_init_failed")

    run(eng, app, t)
    assert seen["error"].startswith("Initialize git here:") and "git" in seen["error"]
    assert "failed" in seen["error"] or "invalid" in seen["error"]
    assert not eng.worktrees_on
    assert (workspace / ".git").read_text() == "this is not a git directory\n"


def test_the_projects_suggested_verify_command_is_shown_before_start_and_used(workspace):
    repo(workspace)
    (workspace / "tests").mkdir()
    (workspace / "tests" / "test_m.py").write_text("def test_m():\n    pass\n")
    eng = engine(workspace, writer())
    [track] = eng.accept_tracks([TrackProposal(title="Core: m", goal="g",
                                               acceptance_criteria=["c"])]).result(10)
    eng.set_tickets(track.id, [Ticket(id="T-001", description="write src/m.py",
                                      target_files=["src/m.py"])]).result(10)
    app = gui_2.AppState(eng)
    seen: dict = {}

    def t(ctx):
        wait_until(ctx, lambda: app.tickets.selected_track == track.id, 10, "the track")
        wait_until(ctx, lambda: ctx.item_exists("//Tracks/###Use suggested verify"), 10,
                   "the suggestion")
        seen["suggestion"] = app.setup.suggestion
        seen["shot"] = shot(ctx, "verify_suggested")
        ctx.item_click("//Tracks/###Use suggested verify")
        wait_until(ctx, lambda: eng.track(track.id).verify_command, 10, "the command saved")

    run(eng, app, t)
    cmd, where = seen["suggestion"]
    assert "pytest" in cmd and "tests" in where
    assert eng.track(track.id).verify_command == cmd


def test_a_conflict_is_shown_with_both_sides_and_the_ticket_names_it(workspace):
    repo(workspace)
    both_started = threading.Barrier(2, timeout=30)    # both from the same base: a conflict

    def fn(req):
        if req.tier == "Tier 4":
            return ModelResponse(text="Tier 4: both tickets wrote src/same.py", usage=usage(),
                                 model=req.model)
        if not any(m.role == "model" for m in req.messages):
            both_started.wait()
            body = f"who = {req.ticket_id!r}\n"
            return ModelResponse(text="w", usage=usage(), model=req.model, tool_calls=[ToolCall(
                id="w", name="write_file", args={"path": "src/same.py", "content": body})])
        return ModelResponse(text="done", usage=usage(), model=req.model)
    eng = engine(workspace, FunctionProvider(fn), max_workers=2)
    [track] = eng.accept_tracks([TrackProposal(title="Core: same", goal="g",
                                               acceptance_criteria=["c"])]).result(10)
    tid = track.id
    eng.set_tickets(tid, [Ticket(id=f"T-00{i}", description="write src/same.py",
                                 target_files=["src/same.py"]) for i in (1, 2)]).result(10)
    app = gui_2.AppState(eng)
    seen: dict = {}

    def t(ctx):
        wait_until(ctx, lambda: app.tickets.selected_track == tid, 10, "the track")
        ctx.item_click("//Tracks/###Start")
        r = wait_until(ctx, lambda: (r := front(app)) is not None and r.kind == "spawn"
                       and r.payload.attempt == 0 and r, 60, "the conflict's repair spawn")
        seen["spawn"] = r.payload
        seen["spawn_shot"] = shot(ctx, "conflict_spawn")
        ctx.item_click("//Approval/##Reason")
        ctx.key_chars("I will resolve it myself")
        ctx.item_click("//Approval/###Reject")
        wait_until(ctx, lambda: not eng.is_running(tid), 60, "the track to stop")
        app.tickets.dirty = True
        failed = wait_until(ctx, lambda: next((k for k in app.tickets.track_by_id(tid).tickets
                                               if k.status == "failed"), None), 10, "the failure")
        ctx.item_click(f"//Tickets/**/{failed.id}/{failed.id}")
        ctx.yield_(3)
        seen["failed"] = failed
        seen["shot"] = shot(ctx, "conflict_ticket")

    run(eng, app, t)
    assert not [n.message for n in app.notices if "Tier 4 could not" in n.message]
    sp = seen["spawn"]
    assert sp.description == "conflict in src/same.py"
    assert "who = 'T-001'" in sp.context and "who = 'T-002'" in sp.context     # both sides
    k = eng.track(tid).ticket(seen["failed"].id)
    assert k.merge == "conflict in src/same.py"
    assert "conflict" in k.blocked_reason and "src/same.py" in k.blocked_reason
    # the other side is intact on the track branch; neither side was dropped
    other = "T-001" if k.id == "T-002" else "T-002"
    assert git(workspace, "show", f"clutch/{tid}:src/same.py") == f"who = {other!r}\n"
    assert f"who = {k.id!r}" in git(workspace, "log", "-p", f"clutch-ticket/{tid}/{k.id}")
