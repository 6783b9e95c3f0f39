"""The approval dialog: the front request's typed payload as editable fields, Approve (with
edits), Approve all, Decide later, Reject with a reason; and the rules that turn the fields
back into a typed payload (`approval_payload`).

GUI thread only (the edit preview's diff is computed on the background pool). State:
`app.approvals.edit`.
"""
from __future__ import annotations

import json
from typing import Any

from imgui_bundle import ImVec2, imgui
from imgui_bundle import icons_fontawesome_4 as fa

from gui import engine_reads
from gui.dialogs.merge import MERGE_WIDTH_EM, merge_view, repair_view
from gui.dialogs.spawn_context import context_sections_editor, spawn_changes
from gui.records import ApprovalEdit
from gui.state import AppState
from gui.theme import (AMBER, BLUE, GREEN, GREY, PURPLE, RED, WHITE, WRAP, describe_error, em, fmt_cost,
                       fmt_tokens)
from gui.widgets import diff_view, mono_pop, mono_push
from models import (ApprovalEditError, ApprovalRequest, Approved, BudgetPayload,
                    CheckpointPayload, Denied, MergePayload, ShellPayload, SpawnPayload, StepPayload,
                    ToolPayload, edit_payload)
from models import ApprovalPayload as ApprovalPayloadT


# the arguments of file tools edited as plain text, in this order (the rest, if any, as JSON)
FILE_TEXT_ARGS: dict[str, tuple[str, ...]] = {"write_file": ("path", "content"),
                                              "edit_file": ("path", "old", "new")}
TEXT_LABELS = {"content": "Content", "old": "Replace this text", "new": "With this text"}


def approval_fields(req: ApprovalRequest) -> dict[str, str]:
    """The editable fields of a request's typed payload, as the text the dialog edits."""
    p = req.payload
    if isinstance(p, SpawnPayload):
        return {"prompt": p.prompt, "context": p.context, "model": p.model,
                "diagnosis": p.diagnosis}
    if isinstance(p, ToolPayload):
        names = FILE_TEXT_ARGS.get(p.tool, ())
        if names and all(isinstance(p.args.get(n), str) for n in names):
            # a file's text is edited as text, not as one escaped JSON line (issue 20)
            fields = {n: p.args[n] for n in names}
            rest = {k: v for k, v in p.args.items() if k not in names}
            if rest:
                fields["args"] = json.dumps(rest, indent=2, ensure_ascii=False)
            return fields
        return {"args": json.dumps(p.args, indent=2, ensure_ascii=False)}
    if isinstance(p, ShellPayload):
        return {"command": p.command, "cwd": p.cwd}
    if isinstance(p, BudgetPayload):
        return {"budget_usd": str(p.budget_usd), "budget_tokens": str(p.budget_tokens)}
    return {}


def approval_payload(edit: ApprovalEdit) -> tuple[ApprovalPayloadT | None, str]:
    """The edited typed payload to send (None = as requested), or an error to show."""
    req, f = edit.request, edit.fields
    if not edit.edited:
        return None, ""
    changes: dict[str, Any] = {}
    if req.kind == "spawn":
        changes = spawn_changes(edit)
        changes["diagnosis"] = f["diagnosis"]
    elif req.kind == "tool":
        args: Any = {}
        if "args" in f:
            try:
                args = json.loads(f["args"])
            except json.JSONDecodeError as e:
                return None, f"The arguments are not valid JSON: {e.msg} (line {e.lineno}, column {e.colno}). Nothing was sent."
            if not isinstance(args, dict):
                return None, "The arguments must be a JSON object ({...}). Nothing was sent."
        tool = req.payload.tool if isinstance(req.payload, ToolPayload) else ""
        for name in FILE_TEXT_ARGS.get(tool, ()):
            if name in f:
                args[name] = f[name]
        if "path" in f and not f["path"].strip():
            return None, "The path is empty. Write the file's path, or reject. Nothing was sent."
        changes = {"args": args}
    elif req.kind == "shell":
        if not f["command"].strip():
            return None, "The command is empty. Reject instead, or write a command."
        changes = {"command": f["command"], "cwd": f["cwd"].strip() or "."}
    elif req.kind == "budget":
        try:
            changes = {"budget_usd": float(f["budget_usd"]),
                       "budget_tokens": int(float(f["budget_tokens"]))}
        except ValueError:
            return None, "The new budget must be numbers. Nothing was sent."
    else:
        return None, ""
    try:
        return edit_payload(req.payload, changes), ""
    except ApprovalEditError as e:
        return None, f"{str(e)[:1].upper()}{str(e)[1:]}. Nothing was sent."


def current_approval(app: AppState) -> ApprovalEdit | None:
    pending = app.approvals.waiting()
    if not pending:
        app.approvals.edit = None
        return None
    front = pending[0]
    if app.approvals.edit is None or app.approvals.edit.request.id != front.id:
        fields = approval_fields(front)
        preview = front.payload.preview if isinstance(front.payload, ToolPayload) else ""
        app.approvals.edit = ApprovalEdit(front, dict(fields), dict(fields), preview=preview)
    return app.approvals.edit


def resolve_front(app: AppState, approved: bool, *, all_pending: bool = False) -> bool:
    edit = app.approvals.edit
    if edit is None:
        return False
    req = edit.request
    payload = None
    if approved:
        payload, err = approval_payload(edit)
        if err:
            edit.error = err
            return False
    decision = (Approved(payload=payload) if approved
                else Denied(reason=edit.reason.strip() or "rejected by the user"))
    try:
        app.engine.resolve(req.id, decision)
    except Exception as e:  # noqa: BLE001 - answered elsewhere, or cancelled meanwhile
        app.notify("warning", f"Approval {req.id}: {describe_error(e)}", "Approvals")
    app.approvals.answered.add(req.id)
    verb = "approved" + (" with edits" if payload else "") if approved else "rejected"
    app.notify("info", f"{req.title}: {verb}")
    if all_pending:
        try:
            n = app.engine.approve_all()
        except Exception as e:  # noqa: BLE001
            app.notify("error", f"Approve all: {describe_error(e)}", "Approvals")
            n = 0
        for r in app.approvals.pending:
            app.approvals.answered.add(r.id)
        app.notify("info", f"approved {n + 1} pending request(s), once")
    app.approvals.pending = app.approvals.waiting()
    app.approvals.edit = None
    app.approvals.dirty = True
    return True


def approval_editor(app: AppState, edit: ApprovalEdit, esc: bool) -> bool:
    """The kind-specific editor. Returns True when Ctrl+Enter was pressed in a text field."""
    req, f = edit.request, edit.fields
    ctrl_enter = False
    ml = imgui.InputTextFlags_.enter_returns_true | WRAP

    def multiline(label: str, key: str, lines: float, mono: bool = True, width: float = -1,
                  wrap: bool = True) -> None:
        nonlocal ctrl_enter
        pushed = mono_push(app) if mono else False
        flags = ml if wrap else imgui.InputTextFlags_.enter_returns_true
        entered, text = imgui.input_text_multiline(label, f[key], ImVec2(width, em(0, lines).y), flags)
        mono_pop(pushed)
        if esc and text != f[key]:
            text = f[key]          # Escape reverts an active field in ImGui: keep the user's edit
        f[key] = text
        if entered and imgui.get_io().key_ctrl:
            ctrl_enter = True

    if req.kind == "spawn":
        imgui.text(f"Ticket {req.ticket_id}")
        imgui.same_line()
        imgui.text_disabled(f"track {req.track_id}")
        desc = req.payload.description if isinstance(req.payload, SpawnPayload) else ""
        if desc:
            imgui.text_wrapped(desc)
        repair_view(edit, multiline)
        imgui.set_next_item_width(em(18).x)
        _c, f["model"] = imgui.input_text("Model", f["model"])
        if edit.sections_original:      # the worker's context as sections (issue 19)
            context_sections_editor(app, edit, multiline)
            imgui.text("Ticket (sent last)")
            multiline("##Prompt", "prompt", 8)
        else:
            imgui.text("Prompt")
            multiline("##Prompt", "prompt", 11)
            imgui.text("Context")
            multiline("##Context", "context", 4)
    elif req.kind == "tool" and any(n in f for n in TEXT_LABELS):
        file_editor(app, edit, multiline)
    elif req.kind == "tool":
        tool = req.payload.tool if isinstance(req.payload, ToolPayload) else ""
        imgui.text(f"Tool: {tool}")
        imgui.same_line()
        imgui.text_disabled(f"ticket {req.ticket_id}")
        imgui.text("Arguments (JSON)")
        multiline("##Arguments", "args", 8)
        if edit.preview or tool in ("write_file", "edit_file"):
            imgui.text(preview_heading(edit))
            imgui.same_line()
            if imgui.small_button("Preview my edit"):
                refresh_preview(app, edit)
            diff_view(app, edit.preview or "(no preview)", em(0, 10).y)
    elif req.kind == "shell":
        imgui.text(f"Shell command for {req.ticket_id}")
        imgui.text("Script")
        multiline("##Script", "command", 5)
        imgui.set_next_item_width(em(24).x)
        _c, f["cwd"] = imgui.input_text("Working directory", f["cwd"])
        if isinstance(req.payload, ShellPayload):
            p = req.payload
            if p.timeout_s is not None:
                imgui.text_disabled(f"Time limit: {p.timeout_s:g} s (the setting's; a model may "
                                    f"ask for less, never more)")
            if p.rule:
                imgui.text_colored(AMBER, "Why it asks: " + p.rule
                                   + (f" ({p.argument})" if p.argument else ""))
    elif isinstance(req.payload, MergePayload):
        merge_view(app, req.payload, imgui.get_main_viewport().work_size.y * 0.92)
    elif isinstance(req.payload, CheckpointPayload):
        p = req.payload
        imgui.text(f"Phase {p.phase!r} is done. Check it by hand, as the plan's workflow says:")
        imgui.begin_child("tasks", ImVec2(-1, em(0, 8).y), imgui.ChildFlags_.borders)
        for line in p.tasks or ["(no tasks)"]:
            imgui.text_wrapped(line)
        for c in p.commits:
            imgui.text_disabled(c)
        imgui.end_child()
        imgui.text_disabled("Approve: a checkpoint commit, the task ticked, [checkpoint: sha] on "
                            "the phase. Reject with a reason: the phase stays open.")
    elif isinstance(req.payload, StepPayload):
        imgui.text(f"{req.ticket_id}: round {req.payload.round} done. Its last words:")
        imgui.begin_child("last", ImVec2(-1, em(0, 8).y), imgui.ChildFlags_.borders)
        imgui.text_wrapped(req.payload.last or "(nothing)")
        imgui.end_child()
        imgui.text_disabled("Approve continues to the next step; Reject stops the worker.")
    elif isinstance(req.payload, BudgetPayload):
        p = req.payload
        imgui.text_colored(AMBER, f"Spent {fmt_cost(p.spent_usd)} of {fmt_cost(p.budget_usd)}; "
                                  f"{fmt_tokens(p.spent_tokens)} of "
                                  f"{fmt_tokens(p.budget_tokens)} tokens.")
        imgui.text_disabled("Raise the budget above what is spent and approve to go on (0 = no limit).")
        imgui.set_next_item_width(em(12).x)
        _c, f["budget_usd"] = imgui.input_text("New budget (USD)", f["budget_usd"])
        imgui.set_next_item_width(em(12).x)
        _c, f["budget_tokens"] = imgui.input_text("New budget (tokens)", f["budget_tokens"])
    return ctrl_enter


def footer_height(edit: ApprovalEdit) -> float:
    """What the dialog draws under the editor: separators, an error, the buttons, the reason."""
    fh = imgui.get_frame_height_with_spacing()
    return 2 * fh + 2 * imgui.get_style().item_spacing.y + 6 + (2 * fh if edit.error else 0)


def file_editor(app: AppState, edit: ApprovalEdit, multiline: Any) -> None:
    """A file write or edit: the path on one line, the text in multi-line editors as plain
    text, and the unified diff under them, the two sharing the dialog's height."""
    req, f = edit.request, edit.fields
    tool = req.payload.tool if isinstance(req.payload, ToolPayload) else ""
    imgui.text(f"Tool: {tool}")
    imgui.same_line()
    imgui.text_disabled(f"ticket {req.ticket_id}")
    imgui.set_next_item_width(-em(4).x)
    _c, path = imgui.input_text("Path", f["path"])
    if not imgui.is_key_pressed(imgui.Key.escape):   # Escape reverts a field in ImGui: keep the edit
        f["path"] = path
    fh = imgui.get_frame_height_with_spacing()
    if "args" in f:
        imgui.text("Other arguments (JSON)")
        multiline("##Arguments", "args", 3)
    texts = [n for n in ("content", "old", "new") if n in f]
    free = (imgui.get_content_region_avail().y - footer_height(edit) - fh
            - 2 * imgui.get_style().item_spacing.y)
    edit_h = max(em(0, 5).y, free * 0.45)
    diff_h = max(em(0, 5).y, free - edit_h)
    lines = em(0, 1).y
    width = (imgui.get_content_region_avail().x - imgui.get_style().item_spacing.x * (len(texts) - 1)) / len(texts)
    for i, name in enumerate(texts):
        if i:
            imgui.same_line()
        imgui.begin_group()
        n_lines = f[name].count("\n") + (0 if f[name].endswith("\n") or not f[name] else 1)
        imgui.text(f"{TEXT_LABELS[name]}")
        imgui.same_line()
        imgui.text_disabled(f"{n_lines} line{'s' if n_lines != 1 else ''}, {len(f[name]):,} characters")
        multiline(f"##{TEXT_LABELS[name].split()[0]}", name, (edit_h - fh) / lines, width=width,
                  wrap=False)
        imgui.end_group()
    imgui.text(preview_heading(edit))
    imgui.same_line()
    if imgui.small_button("Preview my edit"):
        refresh_preview(app, edit)
    diff_view(app, edit.preview or "(no preview)", diff_h)


def preview_heading(edit: ApprovalEdit) -> str:
    """What the diff under it shows: the request as made, or the user's edit (issue 20, 9)."""
    if edit.preview_of is not None:
        if edit.fields == edit.preview_of:
            return "What it changes (with your edit)"
        return "What it changes (your earlier edit: Preview my edit again)"
    if edit.fields != edit.original:
        return "What it changes (as requested, not your edit: Preview my edit)"
    return "What it changes"


def refresh_preview(app: AppState, edit: ApprovalEdit) -> None:
    payload, err = approval_payload(edit)
    if err:
        edit.error = err
        return
    shown = payload or edit.request.payload
    if not isinstance(shown, ToolPayload):
        return
    args, tool, ticket_id = shown.args, shown.tool, edit.request.ticket_id

    def work() -> str:
        return engine_reads.diff_preview(app.engine, tool, args, ticket_id)

    shown_fields = dict(edit.fields)

    def done(text: str) -> None:
        edit.preview = text or "(no change)"
        edit.preview_of = shown_fields if shown_fields != edit.original else None
    app.background("Preview", work, panel="Approvals", on_done=done)


def approval_modal(app: AppState) -> None:
    edit = current_approval(app)
    vp = imgui.get_main_viewport()
    wide = edit is not None and edit.request.kind == "merge"
    w = min(em(MERGE_WIDTH_EM if wide else 64).x, vp.work_size.x * 0.92)
    imgui.set_next_window_size_constraints(ImVec2(w, 0), ImVec2(w, vp.work_size.y * 0.92))
    imgui.set_next_window_pos(vp.get_center(), imgui.Cond_.always, ImVec2(0.5, 0.5))
    flags = imgui.WindowFlags_.always_auto_resize
    if edit is not None and any(n in edit.fields for n in TEXT_LABELS):
        # a file's text and its diff: the dialog takes the height (and more width) and they
        # share it
        w = min(em(84).x, vp.work_size.x * 0.92)
        imgui.set_next_window_size_constraints(ImVec2(w, 0), ImVec2(w, vp.work_size.y * 0.92))
        imgui.set_next_window_size(ImVec2(w, vp.work_size.y * 0.9), imgui.Cond_.always)
        flags = imgui.WindowFlags_.none
    opened, _ = imgui.begin_popup_modal("Approval", None, flags)
    if not opened:
        return
    if edit is None or app.approvals.deferred:
        app.modal.current = None
        imgui.close_current_popup()
        imgui.end_popup()
        return
    req = edit.request
    pending = app.approvals.waiting()
    esc = imgui.is_key_pressed(imgui.Key.escape)
    kind_colour = {"spawn": BLUE, "tool": AMBER, "shell": RED, "step": GREY, "budget": PURPLE,
                   "merge": GREEN}
    imgui.text_colored(kind_colour.get(req.kind, WHITE), f"{fa.ICON_FA_HAND_PAPER} {req.kind.upper()}")
    imgui.same_line()
    imgui.text(req.title)
    imgui.same_line()
    imgui.text_disabled(f"(1 of {len(pending)} pending)")
    imgui.separator()
    ctrl_enter = approval_editor(app, edit, esc)
    imgui.separator()
    if edit.error:
        imgui.push_style_color(imgui.Col_.text, RED)
        imgui.text_wrapped(f"{fa.ICON_FA_TIMES_CIRCLE} {edit.error}")
        imgui.pop_style_color()
    edited = edit.edited
    approve = imgui.button(f"{fa.ICON_FA_CHECK} Approve" + (" with my edits" if edited else "") + "###Approve",
                           em(12, 0))
    imgui.set_item_tooltip("Ctrl+Enter")
    no_text_active = not imgui.is_any_item_active()
    if no_text_active and imgui.shortcut(imgui.Key.mod_ctrl | imgui.Key.enter, imgui.InputFlags_.route_global):
        approve = True
    approve = approve or ctrl_enter
    all_clicked = False
    if len(pending) > 1:
        imgui.same_line()
        all_clicked = imgui.button(f"Approve all {len(pending)} pending###Approve all")
        imgui.set_item_tooltip("Approves every request waiting now, once (not a standing grant). "
                               "Ctrl+Shift+Enter")
    if imgui.shortcut(imgui.Key.mod_ctrl | imgui.Key.mod_shift | imgui.Key.enter,
                      imgui.InputFlags_.route_global):
        # "approve all waiting": with one waiting, that one (it did nothing, issue 20, 6)
        if len(pending) > 1:
            all_clicked = True
        else:
            approve = True
    imgui.same_line()
    if imgui.button("Decide later"):
        app.approvals.deferred = True
    imgui.set_item_tooltip("Hide this dialog; the request keeps waiting (Approvals window, "
                           "or Ctrl+Shift+R, reopens it)")
    imgui.text("Reason")
    imgui.same_line()
    if esc or edit.focus_reason:
        imgui.set_keyboard_focus_here()
        edit.focus_reason = False
    imgui.set_next_item_width(-em(9).x)
    entered, edit.reason = imgui.input_text_with_hint("##Reason", "why (sent to the agent)", edit.reason,
                                                      imgui.InputTextFlags_.enter_returns_true)
    imgui.same_line()
    reject = imgui.button(f"{fa.ICON_FA_TIMES} Reject###Reject", em(8, 0)) or entered
    imgui.set_item_tooltip("Escape jumps to the reason; Enter there rejects")
    done = False
    if reject:
        done = resolve_front(app, False)
    elif all_clicked:
        done = resolve_front(app, True, all_pending=True)
    elif approve:
        done = resolve_front(app, True)
    if done or app.approvals.deferred:
        app.modal.current = None
        imgui.close_current_popup()
    imgui.end_popup()

