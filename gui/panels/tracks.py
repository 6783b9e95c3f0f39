"""The Tracks panel: the table of tracks, the selected track's actions (plan tickets, start,
pause, resume), its spec and plan, and the track editor.

GUI thread only. State: `app.tickets` (selection, track editor, spec/plan cache).
"""
from __future__ import annotations

import time
from pathlib import Path

from imgui_bundle import ImVec2, imgui, imgui_md
from imgui_bundle import icons_fontawesome_4 as fa

from gui import engine_reads
from gui.panels.tickets import save_draft
from gui.panels.track_setup import branch_line, shared_dir_notice, verify_editor, verify_line
from gui.state import AppState
from gui.theme import AMBER, BLUE, GREEN, RED, WRAP, em, fmt_cost
from gui.widgets import coloured_progress, long_text, panel_error, status_text, waiting_for_you
from models import Track


def track_dir(app: AppState, track_id: str) -> Path:
    return engine_reads.track_dir(app.engine, track_id)


def read_doc(app: AppState, path: Path) -> str:
    """A track's spec.md or plan.md, re-read at most once a second when it changed."""
    key = str(path)
    now = time.monotonic()
    cached = app.tickets.doc_cache.get(key)
    if cached is not None and now - app.tickets.doc_checked.get(key, 0.0) < 1.0:
        return cached[1]
    app.tickets.doc_checked[key] = now
    try:
        mtime = path.stat().st_mtime
    except OSError:
        return ""
    if cached is None or cached[0] != mtime:
        try:
            app.tickets.doc_cache[key] = (mtime, path.read_text(encoding="utf-8", errors="replace"))
        except OSError as e:
            app.tickets.doc_cache[key] = (mtime, f"(cannot read {path}: {e})")
    return app.tickets.doc_cache[key][1]


def plan_track(app: AppState, track_id: str) -> None:
    app.command("Plan tickets", app.engine.plan_track, track_id, panel="Tracks",
             on_done=lambda _t: setattr(app, "tracks_dirty", True))
    app.streams.tab_request = "Tier 2"


def start_track(app: AppState, track_id: str) -> None:
    draft = app.tickets.drafts.get(track_id)
    if draft is not None and draft.dirty:
        # save the user's ticket edits first, then start
        if draft.problems:
            app.notify("error", "Start: fix the ticket problems first (see Tickets)", "Tickets")
            return
        save_draft(app, draft, then=lambda: start_track(app, track_id))
        return
    app.command("Run track", app.engine.start_track, track_id, panel="Tracks",
             on_done=lambda t: app.notify("info", f"track {t.id} finished: {t.status}"))
    app.tickets.dirty = True


def panel_tracks(app: AppState) -> None:
    eng = app.engine
    panel_error(app, "Tracks")
    if app.modal.proposal is not None and app.modal.current != "proposal":
        imgui.text_colored(AMBER, f"{fa.ICON_FA_INBOX} Tier 1 proposed {len(app.modal.proposal)} track(s).")
        imgui.same_line()
        if imgui.button("Review proposal"):
            app.modal.request("proposal")
    shared_dir_notice(app)
    if not app.tickets.tracks:
        imgui.text_disabled("No tracks yet: plan an epic in the Epic window.")
        return
    flags = (imgui.TableFlags_.row_bg | imgui.TableFlags_.borders_inner_v | imgui.TableFlags_.resizable
             | imgui.TableFlags_.scroll_y | imgui.TableFlags_.sizing_stretch_prop)
    avail = imgui.get_content_region_avail()
    table_h = min(avail.y * 0.45, (len(app.tickets.tracks) + 1.5) * imgui.get_frame_height_with_spacing())
    if imgui.begin_table("tracks", 4, flags, ImVec2(-1, max(table_h, em(0, 4).y))):
        imgui.table_setup_scroll_freeze(0, 1)
        # the track's name keeps the larger share in a narrow pane (1280x720: issue 20, 12)
        imgui.table_setup_column("Track", imgui.TableColumnFlags_.width_stretch, 3.0)
        imgui.table_setup_column("Status", imgui.TableColumnFlags_.width_stretch, 2.0)
        imgui.table_setup_column("Done", imgui.TableColumnFlags_.width_fixed, em(4.2).x)
        imgui.table_setup_column("Cost", imgui.TableColumnFlags_.width_fixed, em(3.2).x)
        imgui.table_headers_row()
        for t in app.tickets.tracks:
            imgui.table_next_row()
            imgui.table_next_column()
            sel = t.id == app.tickets.selected_track
            imgui.set_next_item_allow_overlap()      # the row's "waiting for you" is clickable
            clicked, _ = imgui.selectable(f"{t.title}##{t.id}", sel,
                                          imgui.SelectableFlags_.span_all_columns)
            if clicked:
                app.tickets.selected_track = t.id
            imgui.set_item_tooltip(f"{t.title}\n{t.id}\n\n{t.goal}")
            imgui.table_next_column()
            running = eng.is_running(t.id)
            if not waiting_for_you(app, t.id, app.approvals.waiting_for(track_id=t.id)):
                status_text("paused" if eng.is_paused(t.id) and running else t.status)
            imgui.table_next_column()
            done, total = t.progress()
            colour = RED if t.status == "failed" else GREEN if t.status == "completed" else BLUE
            coloured_progress(done / total if total else 0.0, colour,
                              f"{done}/{total}" if total else "no tickets")
            imgui.table_next_column()
            u = app.usage.track.get(t.id)
            imgui.text(fmt_cost(u.cost_usd) if u else "—")
        imgui.end_table()

    t = app.tickets.track_by_id(app.tickets.selected_track)
    if t is None:
        return
    running = eng.is_running(t.id)
    paused = eng.is_paused(t.id)
    imgui.separator()
    long_text(t.title, f"title-{t.id}", max_lines=2)
    imgui.text_disabled(t.id)
    branch_line(t)
    planning = app.busy("Plan tickets")
    imgui.begin_disabled(running or planning)
    if imgui.button(f"{fa.ICON_FA_LIST_OL} Plan tickets (Tier 2)###Plan tickets (Tier 2)"):
        plan_track(app, t.id)
    imgui.end_disabled()
    imgui.same_line()
    imgui.begin_disabled(running or not t.tickets or t.status == "completed")
    if imgui.button(f"{fa.ICON_FA_PLAY} Start###Start"):
        start_track(app, t.id)
    imgui.end_disabled()
    imgui.same_line()
    imgui.begin_disabled(not running or paused)
    if imgui.button(f"{fa.ICON_FA_PAUSE} Pause###Pause"):
        app.command("Pause", eng.pause_track, t.id, panel="Tracks")
        app.tickets.dirty = True
    imgui.end_disabled()
    imgui.same_line()
    imgui.begin_disabled(not (paused or t.status == "paused"))
    if imgui.button(f"{fa.ICON_FA_FORWARD} Resume###Resume"):
        app.command("Resume", eng.resume_track, t.id, panel="Tracks")
        app.tickets.dirty = True
    imgui.end_disabled()
    if planning:
        imgui.same_line()
        imgui.text_colored(BLUE, f"{fa.ICON_FA_SPINNER} Tier 2 is planning…")
    verify_line(app, t, running)

    if imgui.begin_tab_bar("track-docs"):
        if imgui.begin_tab_item_simple("Spec"):
            doc = read_doc(app, track_dir(app, t.id) / "spec.md")
            imgui.begin_child("spec", ImVec2(0, 0))
            imgui_md.render(doc or f"# {t.title}\n\n{t.goal}")
            imgui.end_child()
            imgui.end_tab_item()
        if imgui.begin_tab_item_simple("Plan"):
            doc = read_doc(app, track_dir(app, t.id) / "plan.md")
            imgui.begin_child("plan", ImVec2(0, 0))
            imgui_md.render(doc or "_No plan yet: plan tickets (Tier 2)._")
            imgui.end_child()
            imgui.end_tab_item()
        if imgui.begin_tab_item_simple("Edit"):
            track_editor(app, t, running)
            imgui.end_tab_item()
        imgui.end_tab_bar()


def track_editor(app: AppState, t: Track, running: bool) -> None:
    ed_ = app.tickets.track_edit
    if ed_ is None or ed_.get("id") != t.id:
        ed_ = app.tickets.track_edit = {"id": t.id, "title": t.title, "goal": t.goal,
                                "criteria": "\n".join(t.acceptance_criteria)}
    _c, ed_["title"] = imgui.input_text("Title", ed_["title"])
    _c, ed_["goal"] = imgui.input_text_multiline("Goal", ed_["goal"], em(0, 4) + ImVec2(-em(6).x, 0), WRAP)
    _c, ed_["criteria"] = imgui.input_text_multiline("Acceptance\ncriteria", ed_["criteria"],
                                                     em(0, 5) + ImVec2(-em(6).x, 0), WRAP)
    if imgui.button("Save track"):
        crit = [c.strip() for c in ed_["criteria"].splitlines() if c.strip()]
        app.command("Save track", app.engine.update_track, t.id, title=ed_["title"], goal=ed_["goal"],
                 acceptance_criteria=crit, panel="Tracks",
                 on_done=lambda _t: app.notify("info", f"track {t.id} saved"))
    imgui.same_line()
    if imgui.button("Revert"):
        app.tickets.track_edit = None
    verify_editor(app, t, running)

