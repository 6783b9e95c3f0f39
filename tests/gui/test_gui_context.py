"""The spawn dialog's context (issue 19), in the real app under imgui's test engine: the worker's
context is shown as sections with their tokens; the person drops a file, adds one by path (a
bad path is an inline error) and approves; the worker's first request (the comms log holds it)
lacks the dropped file and holds the added one. The Usage panel's context view then lists the
worker's sections."""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from conftest import fast_settings
from gui_support import click_start, run_app_test, wait_until

import gui_2
from models import Ticket, TrackProposal, stream_tier3

pytestmark = pytest.mark.timeout(300)

UTIL = "def add(a, b):\n    return a + b\n\n\ndef scale_vector(v, k):\n    return [x * k for x in v]\n"
APP = "from util import add, scale_vector\n\n\ndef main():\n    print(add(1, 2), scale_vector([1], 3))\n"


def small_repo(ws: Path) -> None:
    (ws / "util.py").write_text(UTIL)
    (ws / "app.py").write_text(APP)
    (ws / "notes.md").write_text("Multiply must accept floats (notes-7c1d).\n")
    for args in (["init", "-q", "-b", "main"], ["add", "-A"],
                 ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"]):
        subprocess.run(["git", "-C", str(ws), *args], check=True, capture_output=True)


def test_a_file_dropped_from_a_spawns_context_never_reaches_the_worker(workspace):
    from multi_agent_conductor import ConductorEngine
    small_repo(workspace)
    eng = ConductorEngine(workspace, fast_settings()).start()
    app = gui_2.AppState(eng)
    [track] = eng.accept_tracks([TrackProposal(title="Core: multiply", goal="g",
                                               acceptance_criteria=["c"])]).result(10)
    eng.set_tickets(track.id, [Ticket(id="T-001", description="Add multiply(a, b) to util.py.",
                                      target_files=["util.py"],
                                      context_requirements=["app.py"])]).result(10)
    seen: dict = {}

    def spawn_edit():
        e = app.approvals.edit if app.modal.current == "approval" else None
        return e if e is not None and e.request.kind == "spawn" else None

    def t(ctx):
        ctx.yield_(3)
        app.tickets.selected_track = track.id
        click_start(ctx, app)
        e = wait_until(ctx, spawn_edit, 20, "the spawn approval")
        ctx.yield_(2)
        seen["before"] = [(s.label, s.tokens) for s in e.sections]
        # drop app.py's skeleton: its section and its line in the ticket go
        ctx.item_click("//Approval/**/app.py/###Drop")
        ctx.yield_(2)
        seen["after_drop"] = [s.label for s in e.sections]
        seen["prompt_after_drop"] = e.fields["prompt"]
        # a path that is not in the workspace: an inline error, nothing added
        ctx.item_click("//Approval/##add-path")
        ctx.key_chars("no/such_file.py")
        ctx.item_click("//Approval/###Add file")
        wait_until(ctx, lambda: e.error, 10, "the inline error")
        seen["bad_path"] = e.error
        seen["after_bad"] = [s.label for s in e.sections]
        # a real file: added before the ticket
        ctx.item_click("//Approval/##add-path")
        ctx.key_chars_replace("notes.md")
        ctx.item_click("//Approval/###Add file")
        wait_until(ctx, lambda: any(s.path == "notes.md" for s in e.sections), 10, "notes.md")
        seen["after_add"] = [s.label for s in e.sections]
        ctx.item_click("//Approval/###Approve")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not ctx.is_error():
            if eng.track(track.id).status in ("completed", "failed") and not eng.is_running(track.id):
                break
            if app.modal.current == "approval" and app.approvals.waiting():
                ctx.item_click("//Approval/###Approve")
            time.sleep(0.01)
            ctx.yield_()
        # the Usage panel's context view of the worker
        app.focus_window("Usage")
        app.usage.bleed_stream = stream_tier3("T-001")
        app.usage.bleed_pinned = True
        app.usage.bleed_read_at = 0.0
        ctx.yield_(5)
        seen["usage_view"] = [s.label for s in app.usage.context]

    try:
        run_app_test(app, t)
    finally:
        eng.close()
        app.close()
    before = [label for label, _ in seen["before"]]
    assert before == ["System prompt", "Repository map (focused on the ticket's files)",
                      "Skeleton: app.py", "File: util.py", "Ticket T-001"], before
    assert all(tokens > 0 for _, tokens in seen["before"])
    assert "Skeleton: app.py" not in seen["after_drop"]
    assert "- app.py" not in seen["prompt_after_drop"]
    assert "no/such_file.py" in seen["bad_path"] and seen["after_bad"] == seen["after_drop"]
    assert seen["after_add"][-2:] == ["File: notes.md", "Ticket T-001"]
    assert eng.track(track.id).tickets[0].status == "completed"
    entries = eng.comms.entries()
    first = next(x for x in entries if x["kind"] == "request" and x["ticket_id"] == "T-001")
    text = first["data"]["messages"][0]["text"]
    assert "SKELETON app.py" not in text and "- app.py" not in text     # dropped: never sent
    assert "notes-7c1d" in text and "FILE util.py:" in text
    assert seen["usage_view"] == seen["after_add"]
