"""The Tickets panel: before a run, an editable table of the track's tickets (validated as a
DAG as you type); during and after, the run table with Retry / Skip / Cancel / Revert, and under
it the selected ticket's details (gui.panels.ticket_detail: branch, merge, attempts, checks, diff).

GUI thread only. State: `app.tickets.drafts` (the user's unsaved ticket edits).
"""
from __future__ import annotations

import concurrent.futures
import json
from collections.abc import Callable
from typing import Any

from imgui_bundle import ImVec2, ImVec4, imgui
from imgui_bundle import icons_fontawesome_4 as fa

from gui.panels.graph import ticket_graph
from gui.panels.ticket_detail import detail_pane, select_ticket
from gui.records import TicketDraft, TicketRow
from gui.state import AppState
from gui.theme import AMBER, DIM, RED, STATUS_COLOURS, WHITE, describe_error, em, fmt_cost
from gui.widgets import long_text, panel_error, status_text, waiting_for_you
from models import (DagError, Ticket, Track, dag_problems, file_overlap_warnings, stream_tier3,
                    ticket_action_refusal)


def ticket_sig(tickets: list[Ticket]) -> str:
    return json.dumps([[t.id, t.description, t.depends_on, t.target_files] for t in tickets])


def split_list(s: str) -> list[str]:
    return [p.strip() for p in s.replace(";", ",").split(",") if p.strip()]


def draft_tickets(draft: TicketDraft) -> list[Ticket]:
    out = []
    for r in draft.rows:
        base = r.original.model_copy(deep=True) if r.original is not None else Ticket(
            id=r.id, description=r.description or "(no description)")
        base.description = r.description
        base.depends_on = split_list(r.depends)
        base.target_files = split_list(r.files)
        out.append(base)
    return out


def validate_draft(draft: TicketDraft) -> None:
    tickets = draft_tickets(draft)
    problems = dag_problems(tickets)
    problems += [f"{r.id} has no description" for r in draft.rows if not r.description.strip()]
    draft.problems = problems
    draft.warnings = file_overlap_warnings(tickets) if not problems else []


def make_draft(track: Track) -> TicketDraft:
    rows = [TicketRow(t.id, t.description, ", ".join(t.depends_on), ", ".join(t.target_files),
                      t.model_copy(deep=True)) for t in track.tickets]
    d = TicketDraft(track.id, rows, ticket_sig(track.tickets))
    validate_draft(d)
    return d


def save_draft(app: AppState, draft: TicketDraft, then: Callable[[], None] | None = None) -> None:
    validate_draft(draft)
    if draft.problems:
        return
    tickets = draft_tickets(draft)

    def done(track: Track) -> None:
        app.tickets.dirty = True
        app.tickets.drafts.pop(draft.track_id, None)
        app.notify("info", f"tickets of {draft.track_id} saved")
        if then is not None:
            then()

    try:
        fut = app.engine.set_tickets(draft.track_id, tickets)
    except DagError as e:
        draft.problems = list(e.problems)
        return
    except Exception as e:  # noqa: BLE001
        app.notify("error", f"Save tickets: {describe_error(e)}", "Tickets")
        return
    app.track_op("Save tickets", fut, "Tickets", done)


def next_ticket_id(app: AppState, draft: TicketDraft) -> str:
    n = 0
    ids = [r.id for r in draft.rows] + [k.id for t in app.tickets.tracks for k in t.tickets]
    for i in ids:
        if i.startswith("T-") and i[2:].isdigit():
            n = max(n, int(i[2:]))
    return f"T-{n + 1:03d}"


def editable(app: AppState, t: Track) -> bool:
    return (not app.engine.is_running(t.id) and t.status in ("new", "planned")
            and all(k.status == "todo" for k in t.tickets))


def panel_tickets(app: AppState) -> None:
    panel_error(app, "Tickets")
    t = app.tickets.track_by_id(app.tickets.selected_track)
    if t is None:
        imgui.text_disabled("Select a track in the Tracks window.")
        return
    status_text(t.status)
    imgui.same_line()
    long_text(t.title, f"title-{t.id}", max_lines=1)
    if not t.tickets:
        imgui.text_disabled("No tickets yet: Plan tickets (Tier 2) in the Tracks window.")
        return
    if imgui.begin_tab_bar("tickets-tabs"):
        if imgui.begin_tab_item_simple("List"):
            app.tickets.tab_graph = False
            if editable(app, t):
                ticket_editor(app, t)
            else:
                ticket_table(app, t)
            imgui.end_tab_item()
        if imgui.begin_tab_item_simple("Graph"):
            app.tickets.tab_graph = True
            ticket_graph(app, t)
            imgui.end_tab_item()
        imgui.end_tab_bar()


def ticket_editor(app: AppState, t: Track) -> None:
    draft = app.tickets.drafts.get(t.id)
    if draft is None or (not draft.dirty and draft.base != ticket_sig(t.tickets)):
        draft = app.tickets.drafts[t.id] = make_draft(t)
    imgui.text_disabled("Before start: edit descriptions, dependencies (ticket ids, comma "
                        "separated) and target files.")
    flags = (imgui.TableFlags_.row_bg | imgui.TableFlags_.borders_inner_v | imgui.TableFlags_.resizable
             | imgui.TableFlags_.scroll_y)
    problem_ids = {p.split(" ", 1)[0] for p in draft.problems}
    for p in draft.problems:
        if p.startswith("cycle: "):
            problem_ids |= {x.strip() for x in p[7:].split("->")}
    changed = False
    remove: int | None = None
    avail = imgui.get_content_region_avail().y
    reserve = (len(draft.problems) + len(draft.warnings) + 3) * imgui.get_frame_height_with_spacing()
    if imgui.begin_table("ticket-edit", 5, flags, ImVec2(-1, max(avail - reserve, em(0, 6).y))):
        imgui.table_setup_scroll_freeze(0, 1)
        imgui.table_setup_column("ID", imgui.TableColumnFlags_.width_fixed, em(4).x)
        imgui.table_setup_column("Description", imgui.TableColumnFlags_.width_stretch, 3.0)
        imgui.table_setup_column("Depends on", imgui.TableColumnFlags_.width_stretch, 1.2)
        imgui.table_setup_column("Target files", imgui.TableColumnFlags_.width_stretch, 1.6)
        imgui.table_setup_column("", imgui.TableColumnFlags_.width_fixed, em(1.8).x)
        imgui.table_headers_row()
        for i, r in enumerate(draft.rows):
            imgui.push_id(r.id)
            imgui.table_next_row()
            imgui.table_next_column()
            bad = r.id in problem_ids
            imgui.text_colored(RED if bad else WHITE, r.id)
            imgui.table_next_column()
            imgui.set_next_item_width(-1)
            c, r.description = imgui.input_text("##desc", r.description)
            if (imgui.is_item_hovered(imgui.HoveredFlags_.delay_short) and not imgui.is_item_active()
                    and imgui.calc_text_size(r.description).x > imgui.get_item_rect_size().x - 8):
                imgui.set_item_tooltip(r.description)      # cut in its box: the whole text
            changed |= c
            imgui.table_next_column()
            imgui.set_next_item_width(-1)
            if bad:
                imgui.push_style_color(imgui.Col_.frame_bg, ImVec4(0.45, 0.1, 0.1, 1))
            c, r.depends = imgui.input_text("##deps", r.depends)
            if bad:
                imgui.pop_style_color()
                imgui.set_item_tooltip("\n".join(p for p in draft.problems if r.id in p))
            changed |= c
            imgui.table_next_column()
            imgui.set_next_item_width(-1)
            c, r.files = imgui.input_text("##files", r.files)
            changed |= c
            imgui.table_next_column()
            if imgui.small_button(fa.ICON_FA_TRASH):
                remove = i
            imgui.set_item_tooltip(f"Remove {r.id}")
            imgui.pop_id()
        imgui.end_table()
    if remove is not None:
        draft.rows.pop(remove)
        changed = True
    if changed:
        draft.dirty = True
        validate_draft(draft)
    for p in draft.problems:
        imgui.text_colored(RED, f"{fa.ICON_FA_TIMES_CIRCLE} {p}")
    for w in draft.warnings:
        imgui.text_colored(AMBER, f"{fa.ICON_FA_EXCLAMATION_TRIANGLE} {w}")
    if imgui.button(f"{fa.ICON_FA_PLUS} Add ticket###Add ticket"):
        draft.rows.append(TicketRow(next_ticket_id(app, draft), "", "", ""))
        draft.dirty = True
        validate_draft(draft)
    imgui.same_line()
    imgui.begin_disabled(not draft.dirty or bool(draft.problems) or app.busy("Save tickets"))
    if imgui.button(f"{fa.ICON_FA_SAVE} Save tickets###Save tickets"):
        save_draft(app, draft)
    imgui.end_disabled()
    imgui.same_line()
    imgui.begin_disabled(not draft.dirty)
    if imgui.button("Discard edits"):
        app.tickets.drafts.pop(t.id, None)
    imgui.end_disabled()
    if draft.dirty:
        imgui.same_line()
        imgui.text_colored(AMBER, "unsaved edits (Start saves them first)")


def ticket_table(app: AppState, t: Track) -> None:
    eng = app.engine
    flags = (imgui.TableFlags_.row_bg | imgui.TableFlags_.borders_inner_v | imgui.TableFlags_.resizable
             | imgui.TableFlags_.scroll_y)
    shown = any(k.id == app.detail.ticket_id for k in t.tickets)
    height = max(imgui.get_content_region_avail().y * 0.4, em(0, 6).y) if shown else -1
    if not imgui.begin_table("ticket-run", 6, flags, ImVec2(-1, height)):
        return
    imgui.table_setup_scroll_freeze(0, 1)
    imgui.table_setup_column("ID", imgui.TableColumnFlags_.width_fixed, em(3.3).x)
    imgui.table_setup_column("Status", imgui.TableColumnFlags_.width_fixed, em(7.6).x)
    imgui.table_setup_column("Description", imgui.TableColumnFlags_.width_stretch, 3.0)
    imgui.table_setup_column("Depends on", imgui.TableColumnFlags_.width_fixed, em(6).x)
    imgui.table_setup_column("Cost", imgui.TableColumnFlags_.width_fixed, em(3.2).x)
    imgui.table_setup_column("Actions", imgui.TableColumnFlags_.width_fixed, em(13.6).x)
    imgui.table_headers_row()
    status = {k.id: k.status for k in t.tickets}
    for k in t.tickets:
        imgui.push_id(k.id)
        imgui.table_next_row()
        imgui.table_next_column()
        sid = stream_tier3(k.id)
        clicked, _ = imgui.selectable(k.id, app.detail.ticket_id == k.id)
        if clicked:
            app.tickets.selected_ticket = k.id     # the same selection as a click in the graph
            select_ticket(app, k)
        if clicked and sid in app.streams.views:
            app.streams.selected["Tier 3"] = sid
            app.streams.tab_request = "Tier 3"
            app.streams.follow_activity = False
        imgui.set_item_tooltip("Show its details (branch, checks, diff) and its stream")
        imgui.table_next_column()
        if not waiting_for_you(app, k.id, app.approvals.waiting_for(ticket_id=k.id)):
            status_text(k.status)
        if k.attempts > 1:
            imgui.text_colored(AMBER, f"attempt {k.attempts}")
        imgui.table_next_column()
        files = "files: " + ", ".join(k.target_files) if k.target_files else ""
        long_text(k.description, f"desc-{k.id}", max_lines=1, more=files)
        why = k.blocked_reason or (k.result if k.status in ("completed", "failed") else "")
        if why:   # a failure's reason (a Tier 4 diagnosis) wrapped, a result on a line; all on hover
            bad = k.status in ("failed", "blocked")
            long_text(why, f"why-{k.id}", RED if bad else DIM, 3 if bad else 1)
        imgui.table_next_column()
        for j, d in enumerate(k.depends_on):
            if j:
                imgui.same_line(0, 0)
                imgui.text(", ")
                imgui.same_line(0, 0)
            imgui.text_colored(STATUS_COLOURS.get(status.get(d, ""), RED), d)
        if not k.depends_on:
            imgui.text_disabled("—")
        imgui.table_next_column()
        u = app.usage.ticket.get(k.id)
        imgui.text(fmt_cost(u.cost_usd) if u else "—")
        imgui.table_next_column()
        if ticket_action_button("Retry", k, "retry"):
            app.command("Retry", eng.retry_ticket, k.id, panel="Tickets",
                           on_done=lambda f, app=app: watch_track_future(app, f))
        imgui.same_line()
        if ticket_action_button("Skip", k, "skip"):
            app.command("Skip", eng.skip_ticket, k.id, panel="Tickets")
        imgui.same_line()
        if ticket_action_button("Cancel", k, "cancel"):
            app.command("Cancel ticket", eng.cancel_ticket, k.id, panel="Tickets")
        imgui.same_line()
        revert_button(app, t, k)
        imgui.pop_id()
    imgui.end_table()
    if shown:
        detail_pane(app, t)


def ticket_action_button(label: str, k: Ticket, action: str) -> bool:
    """A small button for a ticket action, greyed out with the rule's reason as its tooltip
    when the ticket's status does not allow it (models.ticket_action_refusal)."""
    refusal = ticket_action_refusal(k.status, action, ticket_id=k.id, commit_sha=k.commit_sha)
    imgui.begin_disabled(refusal is not None)
    clicked = imgui.small_button(label)
    imgui.end_disabled()
    if refusal is not None and imgui.is_item_hovered(imgui.HoveredFlags_.allow_when_disabled):
        imgui.set_tooltip(refusal)
    return clicked and refusal is None


def revert_button(app: AppState, t: Track, k: Ticket) -> None:
    """Revert: undo a completed ticket's commit with `git revert` (a new commit; the ticket
    goes back to todo), once the person confirms in a popup. Greyed out, with the reason as
    its tooltip, when the ticket has nothing to revert or its track is running; a revert git
    refuses (a conflict with later changes) comes back as an error on the strip."""
    refusal = ticket_action_refusal(k.status, "revert", ticket_id=k.id, commit_sha=k.commit_sha)
    if refusal is None and app.engine.is_running(t.id):
        refusal = f"{t.id} is running: pause it and let its workers finish first"
    busy = app.busy(f"Revert {k.id}")
    imgui.begin_disabled(refusal is not None or busy)
    if imgui.small_button("Revert"):
        imgui.open_popup("revert-confirm")
    imgui.end_disabled()
    if imgui.is_item_hovered(imgui.HoveredFlags_.allow_when_disabled):
        imgui.set_tooltip(refusal or ("reverting..." if busy else
                                      f"Undo commit {k.commit_sha[:12]} with git revert"))
    if imgui.begin_popup("revert-confirm"):
        imgui.text(f"Revert {k.id}?")
        imgui.text_disabled(f"git revert {k.commit_sha[:12]}: a new commit undoes its changes; "
                            f"{k.id} goes back to todo.")
        if imgui.button("Yes, revert###Confirm revert"):
            def done(sha: str, app: AppState = app, tid: str = k.id) -> None:
                app.tickets.dirty = True
                app.notify("info", f"{tid} reverted by commit {sha}")
            app.command(f"Revert {k.id}", app.engine.revert_ticket, k.id, panel="Tickets",
                        on_done=done)
            imgui.close_current_popup()
        imgui.same_line()
        if imgui.button("Cancel###Cancel revert"):
            imgui.close_current_popup()
        imgui.end_popup()


def watch_track_future(app: AppState, fut: Any) -> None:
    app.tickets.dirty = True
    if isinstance(fut, concurrent.futures.Future) and not any(op.future is fut for op in app.ops):
        app.track_op("Run track", fut, "Tracks")

