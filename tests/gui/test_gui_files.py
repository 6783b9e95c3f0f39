"""Paths the person chooses (issue 20): exports went to a fixed path with no save dialog, and
there was no way to open or switch a workspace from the File menu. Now "Save as" for exports,
and File → Open workspace with a recent list, which switches honestly: refused while work is
under way (saying what), otherwise the app shows the new workspace's engine and closes the old
one. Driven through the real app by the test engine (null backend, offline model; no zenity or
kdialog here, so the in-app path field is what a person uses)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from conftest import fast_settings
from gui_support import run_app_test, wait_until

import gui_2
from gui import recent
from gui.dialogs.files import check_save_path, check_workspace
from imgui_bundle import imgui
from models import Ticket, TrackProposal

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def config_dir(tmp_path, monkeypatch):
    d = tmp_path / "config"
    monkeypatch.setenv("CLUTCH_CONFIG_DIR", str(d))
    return d


def make_app(ws, **kw):
    from multi_agent_conductor import ConductorEngine
    eng = ConductorEngine(ws, fast_settings(**kw)).start()
    return eng, gui_2.AppState(eng)


def test_export_goes_where_the_person_says(workspace, tmp_path, config_dir):
    eng, app = make_app(workspace)
    out_dir = tmp_path / "chosen"
    out_dir.mkdir()
    target = out_dir / "my-export.jsonl"
    target.write_text("old\n")
    seen = {}

    def t(ctx):
        ctx.item_click("//Epic/##epic")
        ctx.key_chars("Export me")
        ctx.key_press(imgui.Key.mod_ctrl | imgui.Key.enter)
        wait_until(ctx, lambda: app.modal.current == "proposal", 20, "the proposal")
        ctx.item_click("//Proposed tracks/Cancel")
        app.focus_window("Comms")
        ctx.yield_(2)
        ctx.item_click("//Comms/###Export JSONL")
        wait_until(ctx, lambda: app.modal.current == "save", 5, "Save as")
        ctx.yield_(2)
        ctx.item_click("//Save as/##path")
        ctx.key_chars_replace(str(tmp_path / "no-such-folder" / "x.jsonl"))
        ctx.yield_(2)
        ctx.item_click("//Save as/###Save")                 # greyed out: nothing happens
        ctx.yield_(2)
        seen["missing"] = (app.modal.current, app.comms.last_export, app.busy("Export comms"))
        ctx.item_click("//Save as/##path")
        ctx.key_chars_replace(str(target))
        ctx.yield_(2)
        ctx.item_click("//Save as/###Save")
        wait_until(ctx, lambda: app.comms.last_export, 10, "the export")
        seen["path"] = app.comms.last_export
        seen["rows"] = len(app.comms.filtered)

    try:
        run_app_test(app, t)
    finally:
        eng.close()
        app.close()
    assert seen["missing"] == ("save", "", False)
    assert seen["path"] == str(target)
    lines = [json.loads(x) for x in target.read_text().splitlines()]
    assert len(lines) == seen["rows"] > 0 and "old" not in target.read_text()


def test_save_and_workspace_paths_are_checked(tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    (tmp_path / "f.txt").write_text("x")
    assert check_save_path(ws, "  ")[1].startswith("Write the path")
    assert "is a folder" in check_save_path(ws, str(tmp_path))[1]
    assert "does not exist" in check_save_path(ws, str(tmp_path / "nope" / "a.jsonl"))[1]
    assert check_save_path(ws, "out.jsonl") == (ws / "out.jsonl", "")      # from the workspace
    assert "does not exist" in check_workspace(ws, str(tmp_path / "nope"))[1]
    assert "is a file" in check_workspace(ws, str(tmp_path / "f.txt"))[1]
    assert "not an absolute path" in check_workspace(ws, "relative/dir")[1]
    assert "open now" in check_workspace(ws, str(ws))[1]
    assert check_workspace(ws, str(tmp_path)) == (tmp_path, "")


def test_the_recent_list_is_kept_atomically_and_a_bad_one_is_set_aside(tmp_path):
    f = tmp_path / "c" / "recent.json"
    assert recent.load_recent(f) == ([], "")
    for ws in ("/a", "/b", "/a"):
        recent.remember(f, ws)
    assert recent.load_recent(f) == (["/a", "/b"], "")
    f.write_text("{not json")
    items, notice = recent.load_recent(f)
    assert items == [] and "not valid" in notice and (tmp_path / "c" / "recent.json.bad").exists()


def test_open_workspace_refuses_while_a_run_is_active_then_switches(workspace, tmp_path, config_dir):
    other = tmp_path / "other"
    other.mkdir()
    (other / "README.md").write_text("# other\n")
    eng, app = make_app(workspace, offline_pace_s=0.0)
    [track] = eng.accept_tracks([TrackProposal(title="Busy", goal="g", acceptance_criteria=["ok"])]).result(30)
    eng.set_tickets(track.id, [Ticket(id="T-001", description="Write a.py", target_files=["a.py"])]).result(30)
    recent.remember(recent.recent_file(), other)              # known from an earlier session
    # one Clutch per workspace: the app holds its workspace's lock, as `clutch` takes it
    from conductor_store import WorkspaceLock
    app.workspace_lock = WorkspaceLock(workspace).acquire("clutch")
    app.lock_workspace = lambda p: WorkspaceLock(p).acquire("clutch")
    elsewhere = WorkspaceLock(other).acquire("clutch serve")   # another Clutch has it, for now
    seen = {}

    def t(ctx):
        eng.start_track(track.id)                             # waits for the spawn approval
        wait_until(ctx, lambda: app.modal.current == "approval", 10, "the spawn approval")
        ctx.item_click("//Approval/Decide later")
        ctx.yield_(2)
        ctx.key_press(imgui.Key.mod_ctrl | imgui.Key.o)
        wait_until(ctx, lambda: app.modal.current == "workspace" and app.recent is not None, 5,
                   "Open workspace with its recent list")
        ctx.yield_(2)
        seen["recent"] = list(app.recent)
        ref = str(other.resolve()).replace("/", "\\/")        # "/" separates a ref's parts
        ctx.item_click(f"//Open workspace/**/###recent-{ref}")
        ctx.item_click("//Open workspace/###Open")
        ctx.yield_(3)
        seen["refused"] = app.modal.path_prompt.error if app.modal.path_prompt else ""
        seen["still"] = app.engine is eng
        ctx.item_click("//Open workspace/Cancel")
        ctx.yield_(2)
        seen["cancelled"] = (app.modal.current, app.modal.path_prompt)
        # let the run end: reject the spawn; the track stops with nothing running
        app.approvals.deferred = False
        app.modal.request("approval")
        wait_until(ctx, lambda: app.modal.current == "approval", 5, "the approval again")
        ctx.item_click("//Approval/###Reject")
        wait_until(ctx, lambda: not eng.busy(), 20, "the run to stop")
        ctx.key_press(imgui.Key.mod_ctrl | imgui.Key.o)
        wait_until(ctx, lambda: app.modal.current == "workspace", 5, "Open workspace again")
        ctx.item_click("//Open workspace/##folder")
        ctx.key_chars_replace(str(other / "missing"))
        ctx.item_click("//Open workspace/###Open")
        ctx.yield_(2)
        seen["bad"] = app.modal.path_prompt.error
        ctx.item_click("//Open workspace/##folder")
        ctx.key_chars_replace(str(other))
        ctx.item_click("//Open workspace/###Open")
        wait_until(ctx, lambda: app.modal.path_prompt and app.modal.path_prompt.error
                   and not app.busy("Open workspace"), 10, "the refusal: another Clutch has it")
        seen["locked"] = app.modal.path_prompt.error
        seen["still2"] = app.engine is eng
        elsewhere.release()
        ctx.item_click("//Open workspace/###Open")
        wait_until(ctx, lambda: app.engine is not eng, 20, "the switch")
        wait_until(ctx, lambda: app.modal.current is None and not app.ops, 10, "the dialog to close")
        ctx.yield_(3)
        seen["workspace"] = app.workspace
        seen["tracks"] = [t.id for t in app.tickets.tracks]
        seen["streams"] = list(app.streams.views)
        seen["popup_open"] = imgui.is_popup_open("Open workspace")
        # the app works on the new workspace: plan an epic there
        ctx.item_click("//Epic/##epic")
        ctx.key_chars("Another epic")
        ctx.key_press(imgui.Key.mod_ctrl | imgui.Key.enter)
        wait_until(ctx, lambda: app.modal.current == "proposal", 20, "a proposal in the new workspace")
        ctx.item_click("//Proposed tracks/Cancel")

    try:
        run_app_test(app, t)
        held = app.workspace_lock
    finally:
        app.engine.close()
        eng.close()
        app.close()
    assert seen["recent"][0] == str(other.resolve())
    assert seen["still"] and "Not switched" in seen["refused"] and "running" in seen["refused"], seen["refused"]
    assert seen["cancelled"] == (None, None)
    assert "does not exist" in seen["bad"]
    assert seen["still2"] and "clutch serve" in seen["locked"], seen["locked"]
    # the new workspace is held by the app, the old one given back
    with pytest.raises(Exception, match="clutch"):
        WorkspaceLock(other).acquire("probe")
    WorkspaceLock(workspace).acquire("probe").release()
    assert seen["workspace"] == other and seen["tracks"] == [] and not seen["popup_open"]
    assert eng._closed, "the old engine was not closed (its state not saved)"
    assert recent.load_recent(recent.recent_file())[0][0] == str(other.resolve())
    assert (other / "conductor").is_dir()
    held.release()
