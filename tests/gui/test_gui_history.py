"""Issue 20, defects 4 and 5, through the real app (test engine, null backend, offline model):
after a restart the Usage window, the Tickets costs, the Comms window (a session picker, an
earlier session's entries and streams) and the epic come back from the earlier session's log;
a completed ticket has a Revert button that undoes its commit on a real git repository, and a
revert that conflicts is refused with git's reason and changes nothing."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from conftest import fast_settings
from gui_support import check, run_app_test, wait_until

import gui_2
from ai_client import OfflineProvider
from models import Ticket, TrackProposal

pytestmark = pytest.mark.timeout(300)

EPIC = "A greeting CLI that says hello, with a test"


def engine(workspace: Path, **kw):
    from multi_agent_conductor import ConductorEngine
    # the offline model priced as Gemini's models are, so costs are real sums
    return ConductorEngine(workspace, fast_settings(provider="gemini", **kw),
                           provider=OfflineProvider(pace_s=0), auto_approve=True).start()


def first_session(workspace: Path) -> dict:
    """An epic planned and one track run, then the app closed: what it showed."""
    eng = engine(workspace)
    try:
        eng.plan_epic(EPIC).result(30)
        [tr] = eng.accept_tracks(eng.current_proposal()[1].tracks[:1]).result(30)
        eng.plan_track(tr.id).result(30)
        track = eng.start_track(tr.id).result(60)
        assert all(k.status == "completed" for k in track.tickets)
        return {"id": eng.session_id, "track": tr.id, "entries": len(eng.comms),
                "usage": eng.usage_report("current"), "tickets": [k.id for k in track.tickets]}
    finally:
        eng.close()


def test_a_restart_keeps_usage_comms_streams_and_the_epic(workspace):
    before = first_session(workspace)
    eng = engine(workspace)
    app = gui_2.AppState(eng)
    seen: dict = {}
    old = before["id"]

    def t(ctx):
        wait_until(ctx, lambda: app.usage.earlier is not None and not app.usage.dirty, 20,
                   "the earlier sessions' usage")
        ctx.yield_(3)
        seen["total"] = app.usage.total
        seen["tier"] = dict(app.usage.tier)
        seen["ticket"] = dict(app.usage.ticket)
        wait_until(ctx, lambda: app.epic_text, 10, "the epic")
        seen["epic"] = app.epic_text
        # the Usage window's scope: this session only, then every session again
        app.focus_window("Usage")
        ctx.yield_(2)
        ctx.item_click("//Usage/This session")
        ctx.yield_(3)
        seen["current_total"] = app.usage.total
        ctx.item_click("//Usage/All sessions")
        ctx.yield_(3)
        seen["all_again"] = app.usage.total
        # Comms: the session picker opens the earlier session's log
        app.focus_window("Comms")
        ctx.yield_(2)
        seen["live_rows"] = len(app.comms.rows)
        ctx.item_click("//Comms/Session")
        wait_until(ctx, lambda: app.history.sessions_read and ctx.item_exists(f"//$FOCUSED/###{old}"),
                   10, "the earlier session in the picker")
        ctx.item_click(f"//$FOCUSED/###{old}")
        wait_until(ctx, lambda: app.history.picked == old, 20, "the earlier session's entries")
        ctx.yield_(2)
        seen["old_rows"] = len(app.comms.rows)
        app.comms.selected = 1                         # as a click on its second row does
        ctx.yield_(2)
        seen["detail"] = app.comms.detail[1]
        # its streams, rebuilt from the log
        ctx.item_click("//Comms/Streams")
        wait_until(ctx, lambda: app.history.streams, 20, "the earlier session's streams")
        app.history.stream_pick = f"Tier 3 (Worker): {before['tickets'][0]}"
        ctx.yield_(3)
        seen["stream"] = app.history.streams[app.history.stream_pick]
        seen["stream_ids"] = sorted(app.history.streams)
        # back to this session: its own (live) rows again
        ctx.item_click("//Comms/Entries")
        ctx.item_click("//Comms/Session")
        ctx.yield_(2)
        ctx.item_click("//$FOCUSED/###this")
        ctx.yield_(3)
        seen["back"] = (app.history.picked, app.comms.log, len(app.comms.rows))
        # the empty Streams window leads to the last session's streams
        app.focus_window("Streams")
        ctx.yield_(2)
        ctx.item_click("//Streams/stream-tiers/###Tier 3")
        ctx.yield_(2)
        ctx.item_click("//Streams/**/Read the last session's streams")
        wait_until(ctx, lambda: app.history.picked == old and app.history.streams, 20,
                   "the last session's streams from the Streams window")
        seen["from_streams"] = app.history.view

    try:
        run_app_test(app, t)
    finally:
        eng.close()
        app.close()
    u = before["usage"]
    assert seen["total"] == u["total"] and seen["total"].cost_usd > 0
    assert seen["tier"] == u["tier"] and seen["ticket"] == u["ticket"]
    assert set(seen["ticket"]) == set(before["tickets"])        # the Tickets window's costs
    assert seen["epic"] == EPIC
    assert seen["current_total"].total_tokens == 0 and seen["all_again"] == u["total"]
    assert seen["old_rows"] == before["entries"] and seen["live_rows"] < before["entries"]
    assert '"seq": 2' in seen["detail"]                         # read back from the old log
    assert "→ write_file(" in seen["stream"] and "✓" in seen["stream"]
    assert "Tier 1 (Orchestrator)" in seen["stream_ids"]
    assert seen["back"][0] == "" and seen["back"][1] is None
    assert seen["from_streams"] == "streams"


def git(ws: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(ws), *args], capture_output=True, text=True,
                          check=True).stdout


def test_revert_button_undoes_a_tickets_commit_and_a_conflict_changes_nothing(workspace):
    git(workspace, "init", "-q")
    git(workspace, "config", "user.email", "t@example.com")
    git(workspace, "config", "user.name", "T")
    git(workspace, "add", "-A")
    git(workspace, "commit", "-qm", "init")
    eng = engine(workspace, git_commits=True)
    [tr] = eng.accept_tracks([TrackProposal(title="Core: greeting", goal="g",
                                            acceptance_criteria=["c"])]).result(10)
    eng.set_tickets(tr.id, [Ticket(id="T-001", description="first", target_files=["a.py"]),
                            Ticket(id="T-002", description="second",
                                   target_files=["b.py"])]).result(10)
    track = eng.start_track(tr.id).result(60)
    assert [k.status for k in track.tickets] == ["completed", "completed"]
    sha1, sha2 = (k.commit_sha for k in track.tickets)
    # the person changes a.py after the run: undoing T-001 now conflicts
    (workspace / "a.py").write_text("# the person's own version\n")
    git(workspace, "commit", "-qam", "mine")
    app = gui_2.AppState(eng)
    seen: dict = {}

    def t(ctx):
        wait_until(ctx, lambda: app.tickets.selected_track == tr.id, 10, "the track")
        app.focus_window("Tickets")
        ctx.yield_(3)
        check(ctx, "//Tickets/**/T-002/Revert")
        ctx.item_click("//Tickets/**/T-002/Revert")
        ctx.yield_(2)
        ctx.item_click("//$FOCUSED/###Confirm revert")
        wait_until(ctx, lambda: eng.track(tr.id).ticket("T-002").status == "todo", 20,
                   "the revert of T-002")
        wait_until(ctx, lambda: not app.busy("Revert T-002"), 10, "the revert's answer")
        seen["b_after_revert"] = (workspace / "b.py").exists()
        seen["notices"] = [n.message for n in app.notices]
        ctx.item_click("//Tickets/**/T-001/Revert")
        ctx.yield_(2)
        ctx.item_click("//$FOCUSED/###Confirm revert")
        wait_until(ctx, lambda: any("conflict" in n.message for n in app.active_notices()), 20,
                   "the conflict's message")
        seen["conflict"] = [n.message for n in app.active_notices() if "conflict" in n.message]
        seen["panel_error"] = app.panel_errors.get("Tickets", "")
        # the reverted ticket's track has work again: Resume runs it
        seen["track_status"] = eng.track(tr.id).status
        ctx.item_click("//Tracks/###Resume")
        wait_until(ctx, lambda: eng.track(tr.id).ticket("T-002").status == "completed", 30,
                   "T-002 done again")
        wait_until(ctx, lambda: not eng.is_running(tr.id), 10, "the run's end")

    try:
        run_app_test(app, t)
    finally:
        eng.close()
        app.close()
    log = git(workspace, "log", "--format=%s%n%b")
    assert f"This reverts commit {sha2}" in log
    assert seen["b_after_revert"] is False and seen["track_status"] == "paused"
    assert (workspace / "b.py").exists() and eng.track(tr.id).status == "completed"
    k1 = eng.track(tr.id).ticket("T-001")
    assert k1.status == "completed" and k1.commit_sha == sha1          # nothing changed
    assert (workspace / "a.py").read_text() == "# the person's own version\n"
    assert git(workspace, "status", "--porcelain", "--untracked-files=no") == ""
    [msg] = seen["conflict"]
    assert msg.startswith("Revert T-001: cannot revert T-001: ") and "a.py" in msg, msg
    assert "Revert T-001" in seen["panel_error"]
