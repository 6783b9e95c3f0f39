"""GUI tests: the real app (gui_2) driven by imgui's test engine on hello_imgui's null backend
(no display), on the offline model. Assertions about what ran come from the engine's state,
the comms log and the disk, not from the GUI's own text.

Also, panel logic that needs no window is tested directly, or with a bare imgui context.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from conftest import fast_settings
from gui_support import check, run_app_test, wait_until

import gui_2
from imgui_bundle import imgui
from models import ApprovalRequest, BudgetPayload, ShellPayload, SpawnPayload, ToolPayload

# The whole flows run the real app with many workers: on a loaded 2-core machine they can pass
# the suite's 120 s. Their own waits (wait_until) bound them; this is the backstop.
pytestmark = pytest.mark.timeout(600)

CTRL_ENTER = imgui.Key.mod_ctrl | imgui.Key.enter
PROMPT_MARK = "User note from the GUI: keep it tiny (prompt-edit-7f3a)."
ARGS_MARK = "# args-edit-91c2: edited in the approval dialog"


def make_app(workspace: Path, **settings_kw):
    from multi_agent_conductor import ConductorEngine
    eng = ConductorEngine(workspace, fast_settings(**settings_kw)).start()
    return eng, gui_2.AppState(eng)


def front(app):
    edit = gui_2.current_approval(app) if app.modal.current == "approval" else None
    return edit


def wait_front(ctx, app, pred, what, timeout=20.0):
    return wait_until(ctx, lambda: (e := front(app)) is not None and pred(e.request) and e, timeout, what)


# ---------------------------------------------------------------------------------------------
# the whole flow, through the GUI
# ---------------------------------------------------------------------------------------------

def test_full_flow_edits_reach_the_engine(workspace):
    eng, app = make_app(workspace, max_workers=2)
    seen: dict = {}

    def t(ctx):
        # 1. the epic, planned with Ctrl+Enter from the epic box
        ctx.item_click("//Epic/##epic")
        # a planner that reads the code plans what the epic names: the code first, then its
        # two test files (both after it), and the docs as a track of their own
        ctx.key_chars("Build a tiny greeting library in greeting.py → greet(name) ✓, with tests "
                      "in tests/test_greeting.py and tests/test_cli.py, and document it")
        ctx.key_press(CTRL_ENTER)
        wait_until(ctx, lambda: app.modal.current == "proposal", 20, "the proposal dialog")
        seen["proposed"] = len(app.modal.proposal)
        # 2. edit the first track's title, remove the others, accept
        ctx.item_click("//Proposed tracks/**/track0/Title")
        ctx.key_chars_replace("Greeting core (edited in review)")
        while len(app.modal.proposal) > 1 and not ctx.is_error():
            ctx.item_click("//Proposed tracks/**/track1/###Remove track")
        ctx.item_click("//Proposed tracks/###Accept")
        wait_until(ctx, lambda: app.tickets.selected_track and not app.busy("Accept tracks"), 10, "the accepted track")
        tid = app.tickets.selected_track
        seen["tid"] = tid
        # 3. plan tickets (Tier 2), see them in the Tickets window, list and graph
        ctx.item_click("//Tracks/###Plan tickets (Tier 2)")
        wait_until(ctx, lambda: (t := app.tickets.track_by_id(tid)) and t.tickets, 20, "Tier 2's tickets")
        ctx.yield_(3)
        check(ctx, "//Tickets/tickets-tabs/Graph")
        ctx.item_click("//Tickets/tickets-tabs/Graph")
        ctx.yield_(4)
        seen["graph_nodes"] = len(app.tickets.graph_layout[1].nodes)
        ctx.item_click("//Tickets/tickets-tabs/List")
        # 4. start
        ctx.item_click("//Tracks/###Start")
        # 5. the spawn: edit the prompt, approve
        e = wait_front(ctx, app, lambda r: r.kind == "spawn", "the first spawn approval")
        first_ticket = e.request.ticket_id
        seen["first_ticket"] = first_ticket
        prompt = e.fields["prompt"] + "\n\n" + PROMPT_MARK
        ctx.item_click("//Approval/##Prompt")
        ctx.key_chars_replace(prompt)
        ctx.item_click("//Approval/###Approve")
        # 6. the first file write, edited as plain text (issue 20): an empty path first (an
        # inline error, nothing sent, the edit kept), then a line added at the end of its content
        e = wait_front(ctx, app, lambda r: r.kind == "tool" and r.payload.tool == "write_file",
                       "the first write_file approval")
        path = e.fields["path"]
        ctx.item_click("//Approval/Path")
        ctx.key_chars_replace("")
        ctx.item_click("//Approval/###Approve")
        ctx.yield_(2)
        seen["json_error"] = app.approvals.edit.error if app.approvals.edit else ""
        seen["json_kept"] = app.approvals.edit.fields["path"] if app.approvals.edit else "?"
        seen["still_pending"] = any(r.id == e.request.id for r in eng.pending_approvals())
        ctx.item_click("//Approval/Path")
        ctx.key_chars_replace(path)
        seen["write_path"] = path
        ctx.item_click("//Approval/##Content")
        ctx.key_press(imgui.Key.mod_ctrl | imgui.Key.end)
        ctx.key_chars(ARGS_MARK + "\n")
        ctx.yield_(1)
        seen["content_edit"] = app.approvals.edit.fields["content"]
        ctx.item_click("//Approval/###Approve")
        # 7. the edit_file: approve with the keyboard (Ctrl+Enter)
        e = wait_front(ctx, app, lambda r: r.kind == "tool" and r.payload.tool == "edit_file",
                       "the edit_file approval")
        ctx.key_press(CTRL_ENTER)
        # 8. the shell command: Escape jumps to the reason, Enter rejects
        e = wait_front(ctx, app, lambda r: r.kind == "shell", "the shell approval")
        seen["shell_command"] = e.request.payload.command
        ctx.key_press(imgui.Key.escape)
        ctx.key_chars("not now, thanks")
        ctx.key_press(imgui.Key.enter)
        wait_until(ctx, lambda: e.request.id not in {r.id for r in eng.pending_approvals()}, 5,
                   "the shell rejection")
        # 9. two spawns wait at once (T-001 done, two slots): "Approve all 2 pending", once
        wait_until(ctx, lambda: app.modal.current == "approval" and len(eng.pending_approvals()) >= 2
                   and len(app.approvals.waiting()) >= 2, 20,
                   "two pending spawns")
        seen["all_ids"] = {r.id for r in eng.pending_approvals()}
        ctx.item_click("//Approval/###Approve all")
        wait_until(ctx, lambda: not (seen["all_ids"] & {r.id for r in eng.pending_approvals()}), 5,
                   "approve all")
        # the rest: "Approve all N pending" when several wait, else Approve
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and not ctx.is_error():
            tr = eng.track(tid)
            if tr.status in ("completed", "failed") and not eng.is_running(tid):
                break
            if app.modal.current == "approval":
                pending = app.approvals.waiting()
                if len(pending) > 1:
                    ctx.item_click("//Approval/###Approve all")
                    seen["approve_all"] = seen.get("approve_all", 0) + 1
                elif pending:
                    ctx.item_click("//Approval/###Approve")
            ctx.yield_()
        seen["final"] = eng.track(tid).status
        ctx.yield_(5)
        # 10. the Streams pane: every worker has an entry with text
        app.focus_window("Streams")
        ctx.yield_(2)
        ctx.item_uncheck("//Streams/Follow activity")
        ctx.item_click("//Streams/stream-tiers/###Tier 3")
        ctx.yield_(2)
        for k in eng.track(tid).tickets:
            sid = f"Tier 3 (Worker): {k.id}"
            check(ctx, f"//Streams/**/###{sid}")
            ctx.item_click(f"//Streams/**/###{sid}")
            ctx.yield_(1)
            seen.setdefault("streams", {})[sid] = (app.streams.selected.get("Tier 3"),
                                                    app.streams.views[sid].chars, app.streams.views[sid].line_count)
        # 11. the Usage pane
        app.focus_window("Usage")
        ctx.yield_(3)
        seen["usage"] = {tier: u.total_tokens for tier, u in app.usage.tier.items()}

    t0 = time.monotonic()
    try:
        run_app_test(app, t)      # returns when the test is done: the app exits by itself
    finally:
        eng.close()
        app.close()
    elapsed = time.monotonic() - t0

    tid, first = seen["tid"], seen["first_ticket"]
    assert seen["proposed"] >= 2
    assert seen["graph_nodes"] == len(eng.track(tid).tickets) >= 3
    track = eng.track(tid)
    assert track.title == "Greeting core (edited in review)"
    assert seen["final"] == "completed", track.model_dump_json(indent=1)
    # an empty path: an inline error, nothing sent, the user's edit kept
    assert "path is empty" in seen["json_error"]
    assert seen["json_kept"] == ""
    assert seen["content_edit"].endswith(ARGS_MARK + "\n") and "\\n" not in seen["content_edit"]
    assert seen["still_pending"]
    entries = eng.comms.entries()
    # the edited prompt is what the worker received
    reqs = [x for x in entries if x["kind"] == "request" and x["ticket_id"] == first]
    assert reqs and PROMPT_MARK in reqs[0]["data"]["messages"][0]["text"]
    spawn = [x for x in entries if x["kind"] == "spawn" and x["ticket_id"] == first]
    assert spawn and PROMPT_MARK in spawn[0]["data"]["prompt"]
    # the edited arguments are what ran, and what is on disk
    writes = [x for x in entries if x["kind"] == "tool_result" and x["ticket_id"] == first
              and x["data"]["name"] == "write_file"]
    assert writes and ARGS_MARK in writes[0]["data"]["args"]["content"]
    assert ARGS_MARK in (workspace / seen["write_path"]).read_text()
    # the rejected command did not run
    shells = [x for x in entries if x["kind"] == "tool_result" and x["ticket_id"] == first
              and x["data"]["name"] == "run_shell"]
    assert shells and shells[0]["data"]["result"].get("rejected") is True
    assert "exit_code" not in shells[0]["data"]["result"]
    assert "not now, thanks" in shells[0]["data"]["result"]["error"]
    # every worker's stream has content in the Streams pane, the same as the engine's
    assert set(seen["streams"]) == {f"Tier 3 (Worker): {k.id}" for k in track.tickets}
    for sid, (selected, chars, lines) in seen["streams"].items():
        assert selected == sid
        assert chars > 0 and lines > 0
        assert chars == len(eng.streams.text(sid))
    # "Approve all" approved exactly the requests pending then, once, each recorded
    approvals = {x["data"]["approval_id"]: x["data"] for x in entries if x["kind"] == "approval"}
    for aid in seen["all_ids"]:
        assert approvals[aid]["approved"] is True
    assert any(a["reason"] == "approve all" for a in approvals.values())
    # Usage: Tier 1, 2 and 3 non-zero
    for tier in ("Tier 1", "Tier 2", "Tier 3"):
        assert seen["usage"].get(tier, 0) > 0, seen["usage"]
    assert elapsed < 45


def test_retry_a_ticket_from_the_tickets_window(workspace):
    from models import ApprovalPolicy
    eng, app = make_app(workspace, max_workers=4,
                        approvals=ApprovalPolicy(write_tools="auto", shell="auto"))
    seen = {}

    def t(ctx):
        ctx.item_click("//Epic/##epic")
        ctx.key_chars("A small thing")
        ctx.key_press(CTRL_ENTER)
        wait_until(ctx, lambda: app.modal.current == "proposal", 20, "the proposal")
        ctx.item_click("//Proposed tracks/###Accept")
        wait_until(ctx, lambda: app.tickets.selected_track and not app.busy("Accept tracks"), 10, "a track")
        tid = seen["tid"] = app.tickets.selected_track
        ctx.item_click("//Tracks/###Plan tickets (Tier 2)")
        wait_until(ctx, lambda: app.tickets.track_by_id(tid) and app.tickets.track_by_id(tid).tickets, 20, "tickets")
        ctx.item_click("//Tracks/###Start")
        e = wait_front(ctx, app, lambda r: r.kind == "spawn", "the first spawn")
        first = seen["first"] = e.request.ticket_id
        ctx.item_click("//Approval/##Reason")
        ctx.key_chars("not this one")
        ctx.item_click("//Approval/###Reject")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not ctx.is_error():
            if not eng.is_running(tid) and not app.busy("Run track"):
                break
            if app.modal.current == "approval":
                pending = app.approvals.waiting()
                ctx.item_click("//Approval/###Approve all" if len(pending) > 1 else "//Approval/###Approve")
            ctx.yield_()
        ctx.yield_(3)
        seen["skipped"] = eng.track(tid).ticket(first).status
        ctx.item_click(f"//Tickets/**/{first}/Retry")
        wait_front(ctx, app, lambda r: r.kind == "spawn" and r.ticket_id == first, "the retried spawn")
        ctx.item_click("//Approval/###Approve")
        wait_until(ctx, lambda: eng.track(tid).ticket(first).status == "completed", 20, "the retry")

    try:
        run_app_test(app, t)
    finally:
        eng.close()
        app.close()
    k = eng.track(seen["tid"]).ticket(seen["first"])
    assert seen["skipped"] == "skipped"
    assert k.status == "completed" and k.retry_count == 1


# ---------------------------------------------------------------------------------------------
# errors, settings, shortcuts
# ---------------------------------------------------------------------------------------------

def test_errors_show_where_the_user_looks(workspace):
    import events
    eng, app = make_app(workspace)
    seen = {}

    def t(ctx):
        # an empty epic: the engine refuses at once (EngineError)
        ctx.item_click("//Epic/###Plan epic (Tier 1)")
        ctx.yield_(2)
        seen["epic_error"] = app.panel_errors.get("Epic", "")
        seen["strip"] = [n.message for n in app.active_notices()]
        check(ctx, "//Epic/dismiss-Epic/Dismiss")
        # an engine ErrorEvent and a warning LogEvent reach the strip
        eng.inbox.put(events.ErrorEvent(message="T-009 failed: boom → ✗", stream_id="Tier 3 (Worker): T-009"))
        eng.inbox.put(events.LogEvent(message="config.toml was unreadable; defaults used", level="warning"))
        ctx.yield_(3)
        seen["notices"] = [(n.level, n.message) for n in app.active_notices()]
        seen["tickets_error"] = app.panel_errors.get("Tickets", "")
        check(ctx, "**/###strip-dismiss")
        ctx.item_click("**/###strip-dismiss-all")
        ctx.yield_(2)
        seen["after_dismiss"] = len(app.active_notices())
        # a failing future (plan_track on a track id that vanished) is shown, not raised
        app.command("Plan tickets", eng.plan_track, "no-such-track", panel="Tracks")
        ctx.yield_(2)
        seen["tracks_error"] = app.panel_errors.get("Tracks", "")

    try:
        run_app_test(app, t)
    finally:
        eng.close()
        app.close()
    assert "epic is empty" in seen["epic_error"]
    assert any("epic is empty" in m for m in seen["strip"])
    assert ("error", "T-009 failed: boom → ✗") in seen["notices"]
    assert ("warning", "config.toml was unreadable; defaults used") in seen["notices"]
    assert "boom" in seen["tickets_error"]
    assert seen["after_dismiss"] == 0
    assert "no track" in seen["tracks_error"]


def test_a_failing_panel_is_reported_and_the_app_stays_up(workspace, monkeypatch):
    def broken(app):
        imgui.push_id("half-done")
        imgui.begin_child("child")
        raise ValueError("this panel is broken on purpose")
    monkeypatch.setattr(gui_2, "panel_usage", broken)
    eng, app = make_app(workspace)
    seen = {}

    def t(ctx):
        app.focus_window("Usage")
        ctx.yield_(5)
        seen["notices"] = [n.message for n in app.active_notices()]
        ctx.item_click("//Epic/##epic")          # the other panels still work
        ctx.key_chars("still alive")
        ctx.yield_(2)
        seen["epic"] = app.epic_text

    try:
        run_app_test(app, t)
    finally:
        eng.close()
        app.close()
    assert any("The Usage panel failed: ValueError: this panel is broken on purpose" in m
               for m in seen["notices"]), seen["notices"]
    assert seen["epic"] == "still alive"


def test_engine_notices_at_start_reach_the_strip(workspace):
    from multi_agent_conductor import ConductorEngine
    (workspace / ".clutch").mkdir()
    (workspace / ".clutch" / "config.toml").write_text("this is [not toml\n")
    eng = ConductorEngine(workspace).start()       # settings from the workspace: a notice
    app = gui_2.AppState(eng)
    seen = {}

    def t(ctx):
        wait_until(ctx, lambda: app.active_notices(), 5, "the start-up notice")
        seen["notices"] = [(n.level, n.message) for n in app.active_notices()]

    try:
        run_app_test(app, t)
    finally:
        eng.close()
        app.close()
    assert eng.notices
    assert ("warning", eng.notices[0]) in seen["notices"]


def test_missing_api_key_and_proposal_validation_are_shown(workspace, monkeypatch):
    for k in ("GEMINI_API_KEY", "GOOGLE_API_KEY"):
        monkeypatch.delenv(k, raising=False)
    eng, app = make_app(workspace, provider="gemini")
    seen = {}

    def t(ctx):
        ctx.item_click("//Epic/##epic")
        ctx.key_chars("Anything at all")
        ctx.item_click("//Epic/###Plan epic (Tier 1)")
        wait_until(ctx, lambda: not app.busy("Plan epic"), 20, "the plan to fail")
        ctx.yield_(2)
        seen["epic_error"] = app.panel_errors.get("Epic", "")
        seen["strip"] = [n.message for n in app.active_notices()]
        # a proposal with an emptied title is refused inline, the dialog stays open
        app.modal.open_proposal("an epic", [{"title": "A", "goal": "g", "acceptance_criteria": ["c"]}])
        wait_until(ctx, lambda: app.modal.current == "proposal", 5, "the proposal dialog")
        ctx.item_click("//Proposed tracks/**/track0/Title")
        ctx.key_chars_replace("")
        ctx.item_click("//Proposed tracks/###Accept")
        ctx.yield_(2)
        seen["proposal_error"] = app.modal.proposal_error
        seen["still_open"] = app.modal.current == "proposal"
        seen["tracks"] = len(eng.tracks())
        ctx.item_click("//Proposed tracks/Cancel")
        ctx.yield_(2)
        seen["closed"] = app.modal.current is None and app.modal.proposal is None

    try:
        run_app_test(app, t)
    finally:
        eng.close()
        app.close()
    assert "No Gemini API key" in seen["epic_error"], seen
    assert any("GEMINI_API_KEY" in m for m in seen["strip"])
    assert "track 1: title" in seen["proposal_error"]
    assert seen["still_open"] and seen["tracks"] == 0 and seen["closed"]


def test_comms_export_and_filters(workspace):
    eng, app = make_app(workspace)
    seen = {}

    def t(ctx):
        ctx.item_click("//Epic/##epic")
        ctx.key_chars("Export me")
        ctx.key_press(CTRL_ENTER)
        wait_until(ctx, lambda: app.modal.current == "proposal", 20, "the proposal")
        ctx.item_click("//Proposed tracks/Cancel")
        app.focus_window("Comms")
        ctx.yield_(3)
        seen["all"] = len(app.comms.filtered)
        app.comms.filter_kind = "response"
        app.comms.refilter()
        ctx.yield_(2)
        seen["responses"] = len(app.comms.filtered)
        first = app.comms.filtered[-1]      # the table follows the newest entries
        app.comms.selected = first          # as a click on its row does
        ctx.yield_(2)
        seen["selected"] = app.comms.selected
        seen["detail"] = json.loads(app.comms.detail[1])
        seen["entry"] = eng.comms.entries(first, first + 1)[0]
        ctx.item_click("//Comms/###Export JSONL")
        wait_until(ctx, lambda: app.modal.current == "save", 5, "the Save as dialog")
        ctx.yield_(2)
        ctx.item_click("//Save as/###Save")          # the default path, as offered
        wait_until(ctx, lambda: app.comms.last_export or [n.message for n in app.notices], 5, "the export")
        seen["notices"] = [n.message for n in app.notices]
        seen["path"] = app.comms.last_export

    try:
        run_app_test(app, t)
    finally:
        eng.close()
        app.close()
    assert seen["path"], seen["notices"]
    path = Path(seen["path"])
    assert path.parent == workspace / ".clutch" / "exports" and path.name.startswith("comms-")
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert len(lines) == seen["responses"] >= 1 and seen["all"] > seen["responses"]
    assert all(x["kind"] == "response" for x in lines)
    # the detail pane shows the whole entry, read back from the log's file
    assert seen["detail"] == seen["entry"] == lines[-1] and seen["entry"]["data"]["text"]


def test_settings_validation_and_save(workspace):
    eng, app = make_app(workspace)
    seen = {}

    def t(ctx):
        ctx.key_press(imgui.Key.mod_ctrl | imgui.Key.comma)
        wait_until(ctx, lambda: app.modal.current == "settings", 5, "the settings dialog")
        ctx.item_input_value("//Settings/**/Max workers", 0)
        ctx.item_click("//Settings/###Save")
        ctx.yield_(2)
        seen["errors"] = list(app.modal.settings_errors)
        seen["open"] = app.modal.current == "settings"
        ctx.item_input_value("//Settings/**/Max workers", 3)
        ctx.item_click("//Settings/**/Shell allowlist")
        ctx.key_chars_replace("ls, cat")
        ctx.item_click("//Settings/###Save")
        wait_until(ctx, lambda: eng.settings.max_workers == 3 and not app.busy("Save settings"), 5,
                   "the saved settings")
        seen["closed"] = app.modal.current is None
        # F1: the shortcuts
        ctx.key_press(imgui.Key.f1)
        wait_until(ctx, lambda: app.modal.current == "shortcuts", 5, "the shortcuts dialog")
        check(ctx, "//Keyboard shortcuts/Close")
        ctx.item_click("//Keyboard shortcuts/Close")
        ctx.yield_(2)
        seen["shortcuts_closed"] = app.modal.current is None

    try:
        run_app_test(app, t)
    finally:
        eng.close()
        app.close()
    assert any(e.startswith("max_workers") for e in seen["errors"]), seen["errors"]
    assert seen["open"] and seen["closed"] and seen["shortcuts_closed"]
    cfg = (workspace / ".clutch" / "config.toml").read_text()
    assert "max_workers = 3" in cfg
    assert eng.settings.approvals.shell_allowlist == ["ls", "cat"]
    assert "KEY" not in cfg.upper().replace("TOKENS", "")   # never an API key on disk


def test_ticket_edits_are_validated_inline_and_saved(workspace):
    eng, app = make_app(workspace)
    seen = {}

    def t(ctx):
        ctx.item_click("//Epic/##epic")
        ctx.key_chars("Add a health endpoint and its tests")   # the code, then its test
        ctx.item_click("//Epic/###Plan epic (Tier 1)")
        wait_until(ctx, lambda: app.modal.current == "proposal", 20, "the proposal")
        ctx.item_click("//Proposed tracks/###Accept")
        wait_until(ctx, lambda: app.tickets.selected_track and not app.busy("Accept tracks"), 10, "a track")
        tid = app.tickets.selected_track
        ctx.item_click("//Tracks/###Plan tickets (Tier 2)")
        wait_until(ctx, lambda: app.tickets.track_by_id(tid) and app.tickets.track_by_id(tid).tickets, 20, "tickets")
        ctx.yield_(3)
        draft = app.tickets.drafts[tid]
        second = draft.rows[1].id
        first = draft.rows[0].id
        # an unknown dependency, typed into the second ticket's "depends on"
        ref = f"//Tickets/**/{second}/##deps"
        ctx.item_click(ref)
        ctx.key_chars_replace("T-999")
        ctx.yield_(2)
        seen["unknown"] = list(app.tickets.drafts[tid].problems)
        # a cycle: the first ticket depends on the second, which depends on the first
        ctx.key_chars_replace(first)
        ctx.item_click(f"//Tickets/**/{first}/##deps")
        ctx.key_chars_replace(second)
        ctx.yield_(2)
        seen["cycle"] = list(app.tickets.drafts[tid].problems)
        ctx.key_chars_replace("")
        ctx.item_click(f"//Tickets/**/{second}/##desc")
        ctx.key_chars_replace("Implement the core, edited in the GUI")
        ctx.yield_(2)
        seen["fixed"] = list(app.tickets.drafts[tid].problems)
        ctx.item_click("//Tickets/**/###Save tickets")
        wait_until(ctx, lambda: tid not in app.tickets.drafts or not app.tickets.drafts[tid].dirty, 5, "the save")
        seen["tid"], seen["second"] = tid, second

    try:
        run_app_test(app, t)
    finally:
        eng.close()
        app.close()
    assert any("unknown ticket 'T-999'" in p for p in seen["unknown"]), seen["unknown"]
    assert any(p.startswith("cycle:") for p in seen["cycle"]), seen["cycle"]
    assert seen["fixed"] == []
    t = eng.track(seen["tid"])
    assert t.ticket(seen["second"]).description == "Implement the core, edited in the GUI"


# ---------------------------------------------------------------------------------------------
# pure logic and bare-context panels (no window)
# ---------------------------------------------------------------------------------------------

def test_stream_view_extends_rows_incrementally():
    v = gui_2.StreamView("Tier 3 (Worker): T-001")
    for piece in ["Hel", "lo\nwor", "ld → ✓\n", "\tindented\r\n", "x" * 400]:
        v.feed(piece)
    assert v.rows[:3] == ["Hello", "world → ✓", "    indented"]
    assert all(len(r) <= gui_2.WRAP_COLS for r in v.rows)
    assert "".join(v.rows[3:]) == "x" * 400
    assert v.chars == 3 + 6 + 7 + 11 + 400


def test_an_unloaded_stream_view_comes_back_as_it_was():
    """Rows of a stream off screen are dropped and read back from the engine's text, which may
    already hold chunks the GUI has not drained: the view must end exactly as one that never
    dropped anything."""
    chunks = ["first line\n", "sec", "ond → ✓\n", "y" * 500, "\nthird\n", "late one\n"]
    kept, dropped = gui_2.StreamView("s"), gui_2.StreamView("s")
    for c in chunks[:3]:
        kept.feed(c)
        dropped.feed(c)
    dropped.unload()
    assert dropped.rows == [""] and dropped.chars == kept.chars
    for c in chunks[3:5]:                       # arrive while nobody looks
        kept.feed(c)
        dropped.feed(c)
    engine_text = "".join(chunks)               # the engine already has the late chunk
    dropped.load(engine_text)
    kept.feed(chunks[5])
    dropped.feed(chunks[5])                     # ... which the GUI drains afterwards
    assert dropped.rows == kept.rows and dropped.chars == kept.chars == len(engine_text)


def test_idle_streams_off_screen_are_unloaded_and_drawn_again(workspace):
    eng, app = make_app(workspace)
    try:
        on_screen, idle = app.streams.view("Tier 3 (Worker): T-1"), app.streams.view("Tier 3 (Worker): T-2")
        for v in (on_screen, idle):
            v.feed("z" * (gui_2.STREAM_KEEP_CHARS + 10))
            v.state = "done"
        app.streams.selected["Tier 3"] = on_screen.stream_id
        app.streams.unload_idle(time.monotonic() + 60)
        assert idle.unloaded and not on_screen.unloaded
        eng.streams.append(idle.stream_id, "z" * (gui_2.STREAM_KEEP_CHARS + 10))
        gui_2.ensure_loaded(app, idle)
        assert not idle.unloaded and "".join(idle.rows) == "z" * (gui_2.STREAM_KEEP_CHARS + 10)
    finally:
        eng.close()
        app.close()


def test_approval_payload_rules():
    req = ApprovalRequest(title="t", payload=ToolPayload(tool="write_file",
                                                        args={"path": "a.py", "content": "x\n\"q\"\n"}))
    fields = gui_2.approval_fields(req)
    assert fields == {"path": "a.py", "content": 'x\n"q"\n'}     # plain text, not escaped JSON
    edit = gui_2.ApprovalEdit(req, dict(fields), dict(fields))
    assert gui_2.approval_payload(edit) == (None, "")            # unchanged: as requested
    edit.fields["path"] = " "
    assert "path is empty" in gui_2.approval_payload(edit)[1]
    edit.fields.update(path="a.py", content="y")
    assert gui_2.approval_payload(edit) == (ToolPayload(tool="write_file", args={"path": "a.py", "content": "y"}), "")
    other = ApprovalRequest(title="t", payload=ToolPayload(tool="fetch", args={"url": "u"}))
    f0 = gui_2.approval_fields(other)
    e0 = gui_2.ApprovalEdit(other, dict(f0), dict(f0))
    e0.fields["args"] = "[1, 2]"
    assert "JSON object" in gui_2.approval_payload(e0)[1]
    e0.fields["args"] = '{"url": "v"}'
    assert gui_2.approval_payload(e0) == (ToolPayload(tool="fetch", args={"url": "v"}), "")
    edf = ApprovalRequest(title="t", payload=ToolPayload(tool="edit_file",
                                                       args={"path": "a.py", "old": "a", "new": "b", "count": 1}))
    f1 = gui_2.approval_fields(edf)
    assert f1["old"] == "a" and f1["new"] == "b" and json.loads(f1["args"]) == {"count": 1}
    e1 = gui_2.ApprovalEdit(edf, dict(f1), dict(f1))
    e1.fields["new"] = "c\nd"
    assert gui_2.approval_payload(e1)[0].args == {"path": "a.py", "old": "a", "new": "c\nd", "count": 1}
    shell = ApprovalRequest(title="s", payload=ShellPayload(command="ls", cwd="."))
    f = gui_2.approval_fields(shell)
    e2 = gui_2.ApprovalEdit(shell, dict(f), dict(f))
    e2.fields["command"] = "  "
    assert "empty" in gui_2.approval_payload(e2)[1]
    budget = ApprovalRequest(title="b", payload=BudgetPayload(spent_usd=1.2, budget_usd=1.0,
                                                                spent_tokens=10, budget_tokens=0))
    f = gui_2.approval_fields(budget)
    e3 = gui_2.ApprovalEdit(budget, dict(f), dict(f))
    e3.fields["budget_usd"] = "two dollars"
    assert "numbers" in gui_2.approval_payload(e3)[1]
    e3.fields["budget_usd"] = "2.5"
    assert gui_2.approval_payload(e3) == (BudgetPayload(spent_usd=1.2, budget_usd=2.5,
                                                          spent_tokens=10, budget_tokens=0), "")
    spawn = ApprovalRequest(title="s", payload=SpawnPayload(prompt="p", context="", model="m"))
    f = gui_2.approval_fields(spawn)
    e4 = gui_2.ApprovalEdit(spawn, dict(f), dict(f))
    e4.fields["prompt"] = "p, edited"
    assert gui_2.approval_payload(e4) == (SpawnPayload(prompt="p, edited", context="", model="m"), "")


@pytest.fixture
def bare_imgui():
    ctx = imgui.create_context()
    io = imgui.get_io()
    io.display_size = imgui.ImVec2(1200, 800)
    io.delta_time = 1 / 60
    io.backend_flags |= imgui.BackendFlags_.renderer_has_textures
    io.set_ini_filename(None)          # no imgui.ini in the current directory
    yield ctx
    imgui.destroy_context(ctx)


def test_stream_pane_cost_does_not_grow_with_the_stream(bare_imgui, monkeypatch):
    """A multi-megabyte stream costs about the same per frame as a short one (ListClipper over
    rows extended on arrival), and new text follows only when the view is at the bottom."""
    monkeypatch.setattr(gui_2.hello_imgui, "em_to_vec2", lambda x, y: imgui.ImVec2(x * 15, y * 15))
    app = type("A", (), {"mono_font": None})()
    short_v, big_v = gui_2.StreamView("s"), gui_2.StreamView("b")
    short_v.feed("line → ✓\n" * 50)
    chunk = "".join(f"row {i} of a long stream: lorem ipsum dolor sit amet\n" for i in range(1000))
    for _ in range(100):                                   # ~5 MB in 100 chunks
        big_v.feed(chunk)
    assert big_v.chars > 5_000_000

    def frames(v, n=60):
        t0 = time.perf_counter()
        for _ in range(n):
            imgui.new_frame()
            imgui.set_next_window_pos(imgui.ImVec2(0, 0))
            imgui.set_next_window_size(imgui.ImVec2(900, 600))
            imgui.begin("S")
            gui_2.stream_text_view(app, v)
            imgui.end()
            imgui.render()
        return (time.perf_counter() - t0) / n

    frames(short_v, 5)
    t_short = frames(short_v)
    frames(big_v, 5)
    t_big = frames(big_v)
    assert t_big < max(4 * t_short, 0.004), (t_short, t_big)
    # it follows the end while at the bottom...
    assert big_v.at_bottom
    big_v.feed("one more line\n")
    frames(big_v, 2)
    assert big_v.at_bottom
    # ...and after the user scrolls up, new text does not pull the view down
    io = imgui.get_io()
    io.add_mouse_pos_event(400, 300)
    frames(big_v, 1)
    io.add_mouse_wheel_event(0.0, 10.0)
    frames(big_v, 2)
    assert not big_v.at_bottom
    for _ in range(5):
        big_v.feed("more text\n" * 20)
        frames(big_v, 1)
    assert not big_v.at_bottom


def test_an_interruption_inside_the_window_closes_it_cleanly(workspace, monkeypatch):
    """pytest-timeout's exception (or Ctrl+C) raised while a panel draws used to unwind through
    hello_imgui's C++ frames and abort the whole run (SIGABRT, "ImGuiTestEngine_CrashHandler()
    Crashed while running 'auto'"). Now the window closes, the exception comes back to the
    caller, and the next app in the same process runs."""
    class TimeUp(BaseException):
        pass
    frames = []

    def interrupting(app):
        frames.append(app.frame)
        if len(frames) == 3:
            raise TimeUp("time is up")
    monkeypatch.setattr(gui_2, "panel_usage", interrupting)
    eng, app = make_app(workspace)
    try:
        with pytest.raises(TimeUp, match="time is up"):
            run_app_test(app, lambda ctx: ctx.yield_(200))
    finally:
        eng.close()
        app.close()
    assert app.exit_requested and len(frames) >= 3
    monkeypatch.undo()
    eng2, app2 = make_app(workspace)
    seen = {}
    try:
        def t(ctx):
            ctx.item_click("//Epic/##epic")
            ctx.key_chars("next run")
            seen["epic"] = app2.epic_text
        run_app_test(app2, t)
    finally:
        eng2.close()
        app2.close()
    assert seen["epic"] == "next run"


def test_a_write_to_a_closed_socket_after_a_gui_run_is_an_error_not_a_crash(workspace):
    """The test engine's crash handler stayed installed for SIGPIPE after the app closed: the
    next write to a closed socket (a later test's fake HTTP server) crashed the whole suite
    with SIGSEGV. After a run, such a write raises BrokenPipeError as Python intends."""
    import socket
    eng, app = make_app(workspace)
    try:
        run_app_test(app, lambda ctx: ctx.yield_(2))
    finally:
        eng.close()
        app.close()
    a, b = socket.socketpair()
    b.close()
    with pytest.raises((BrokenPipeError, ConnectionResetError)):
        for _ in range(100):
            a.sendall(b"x" * 65536)
    a.close()
