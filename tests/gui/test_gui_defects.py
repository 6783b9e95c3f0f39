"""Issue 20's defects 1, 2, 7 and 9, each driven through the real app by the test engine (null
backend, offline model). Each of these failed before its fix."""
from __future__ import annotations

import time

import pytest

from conftest import fast_settings
from gui_support import check, run_app_test, wait_until

import events as ev
import gui_2
from imgui_bundle import imgui
from models import ApprovalRequest, ToolPayload

pytestmark = pytest.mark.timeout(300)


def make_app(workspace, **kw):
    from multi_agent_conductor import ConductorEngine
    eng = ConductorEngine(workspace, fast_settings(**kw)).start()
    return eng, gui_2.AppState(eng)


def run(eng, app, t):
    try:
        run_app_test(app, t)
    finally:
        eng.close()
        app.close()


def test_dialogs_popups_and_menus_are_opaque(workspace):
    """Defect 1: the Comms table showed through an approval's diff, Settings, drop-downs, menus."""
    eng, app = make_app(workspace)
    seen = {}

    def t(ctx):
        ctx.yield_(2)
        style = imgui.get_style()
        seen["popup"] = style.color_(imgui.Col_.popup_bg).w
        seen["window"] = style.color_(imgui.Col_.window_bg).w
        seen["child"] = style.color_(imgui.Col_.child_bg).w

    run(eng, app, t)
    assert seen["popup"] == 1.0, f"popups, modals, menus and drop-downs are see-through (alpha {seen['popup']})"
    assert seen["window"] == 1.0, f"windows are see-through (alpha {seen['window']})"


def test_follow_activity_does_not_take_a_chosen_tab_back(workspace):
    """Defect 2: after a run, clicking "Tier 3 (Workers)" snapped back to the tier that spoke last."""
    eng, app = make_app(workspace)
    seen = {}
    t3, t1 = "Tier 3 (Worker): T-001", "Tier 1 (Orchestrator)"
    for sid in (t3, t1):                                 # Tier 1 spoke last; both have ended
        gui_2.apply_event(app, ev.StreamChunk(stream_id=sid, text="hello\n"))
        gui_2.apply_event(app, ev.StreamEnd(stream_id=sid, state="done"))

    def t(ctx):
        app.focus_window("Streams")
        ctx.yield_(3)
        ctx.item_click("//Streams/stream-tiers/###Tier 3")
        ctx.yield_(2)
        deadline = time.monotonic() + 2.5                # past the 1.5 s between switches
        while time.monotonic() < deadline:
            time.sleep(0.05)
            ctx.yield_()
        seen["tab"] = app.streams.tab
        # a stream that starts talking is followed again (while following is on)
        app.streams.follow_activity = True
        gui_2.apply_event(app, ev.StreamChunk(stream_id="Tier 2 (Tech Lead): track-1", text="planning"))
        wait_until(ctx, lambda: app.streams.tab == "Tier 2", 5, "the tab of the stream that talks")
        seen["followed"] = app.streams.tab

    run(eng, app, t)
    assert seen["tab"] == "Tier 3", "the chosen tab was taken back by 'Follow activity'"
    assert seen["followed"] == "Tier 2"


def test_escape_and_a_close_button_close_settings(workspace):
    """Defect 7: Escape did not close Settings, and it had no close button."""
    eng, app = make_app(workspace)
    seen = {}

    def t(ctx):
        ctx.key_press(imgui.Key.mod_ctrl | imgui.Key.comma)
        wait_until(ctx, lambda: app.modal.current == "settings", 5, "the Settings dialog")
        ctx.yield_(2)
        ctx.key_press(imgui.Key.escape)
        ctx.yield_(3)
        seen["after_escape"] = (app.modal.current, app.modal.settings_draft is None)
        ctx.key_press(imgui.Key.mod_ctrl | imgui.Key.comma)
        wait_until(ctx, lambda: app.modal.current == "settings", 5, "the Settings dialog again")
        ctx.yield_(2)
        check(ctx, "//Settings/#CLOSE")
        ctx.item_click("//Settings/#CLOSE")
        ctx.yield_(3)
        seen["after_close"] = (app.modal.current, app.modal.settings_draft is None)

    run(eng, app, t)
    assert seen["after_escape"] == (None, True)
    assert seen["after_close"] == (None, True)
    assert eng.settings.max_workers == fast_settings().max_workers     # nothing saved


def test_preview_my_edit_says_what_it_shows(workspace, monkeypatch):
    """Defect 9: after "Preview my edit" the heading still said "(as requested)"."""
    (workspace / "a.txt").write_text("one\n", encoding="utf-8")
    eng, app = make_app(workspace)
    req = ApprovalRequest(title="write a.txt", ticket_id="T-001",
                          payload=ToolPayload(tool="write_file", args={"path": "a.txt", "content": "two\n"},
                                              preview="(as requested)"))
    monkeypatch.setattr(eng, "pending_approvals", lambda: [req])
    seen = {}

    def t(ctx):
        wait_until(ctx, lambda: app.modal.current == "approval" and app.approvals.edit, 5, "the approval")
        edit = app.approvals.edit
        seen["start"] = gui_2.preview_heading(edit)
        ctx.item_click("//Approval/##Content")
        ctx.key_press(imgui.Key.mod_ctrl | imgui.Key.a)
        ctx.key_chars("three\n")
        ctx.yield_(2)
        seen["edited"] = gui_2.preview_heading(edit)
        ctx.item_click("//Approval/Preview my edit")
        wait_until(ctx, lambda: "three" in edit.preview, 10, "the preview of the edit")
        ctx.yield_(2)
        seen["previewed"] = gui_2.preview_heading(edit)
        seen["preview"] = edit.preview
        app.approvals.deferred = True                    # leave it unanswered
        ctx.yield_(2)

    run(eng, app, t)
    assert seen["start"] == "What it changes"
    assert "as requested" in seen["edited"]
    assert "as requested" not in seen["previewed"] and "your edit" in seen["previewed"], seen["previewed"]
    assert "+three" in seen["preview"]
