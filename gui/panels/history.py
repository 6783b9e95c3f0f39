"""The history parts of the Comms, Usage and Streams panels: the session picker (which
session's log the Comms panel shows), an earlier session's streams rebuilt from its log, the
Usage panel's scope (every session of the workspace, or this one) and its table of sessions,
and the Streams window's way to the last session's streams.

GUI thread only. State: `app.history` (gui.history.HistoryState) and `app.usage.scope`; file
reads run on the background pool (gui.history).
"""
from __future__ import annotations

from imgui_bundle import ImVec2, imgui

from gui import history
from gui.state import AppState
from gui.theme import AMBER, em, fmt_cost, fmt_tokens, short
from gui.widgets import mono_pop, mono_push

THIS_SESSION = "This session"


def _label(s: dict) -> str:
    started = (s.get("started") or "")[:16].replace("T", " ")
    n = len(s.get("tickets") or [])
    return (f"{started or s.get('id', '?')} · {n} ticket{'s' if n != 1 else ''} · "
            f"{fmt_tokens(int(s.get('tokens') or 0))} tok · {fmt_cost(float(s.get('cost') or 0))}"
            f"###{s.get('id')}")


def _tooltip(s: dict, then: str = "") -> str:
    """A session's details: entries, times, and its damaged log lines if any."""
    lines = [f"{s.get('id')}: {int(s.get('entries') or 0):,} entries",
             f"from {s.get('started') or '—'} to {s.get('ended') or 'now'}"]
    if s.get("damaged_lines"):
        lines.append(f"{s['damaged_lines']} damaged log line(s), not counted:")
        lines += [f"  line {d.get('line')}: {d.get('reason')}" for d in s.get("damaged") or []]
    if then:
        lines.append(then)
    return "\n".join(lines)


def session_picker(app: AppState) -> bool:
    """The Comms panel's session picker. Returns True when it drew an earlier session's
    streams in place of the entries table (the caller then draws nothing more)."""
    h = app.history
    eng = app.engine
    earlier = list(reversed(h.earlier(eng.session_id)))      # newest first
    shown = next((s for s in earlier if s.get("id") == h.picked), None)
    preview = THIS_SESSION if shown is None else _label(shown).split("###")[0]
    imgui.set_next_item_width(em(24).x)
    if imgui.begin_combo("Session", preview):
        if imgui.is_window_appearing():
            history.refresh_sessions(app)
        if imgui.selectable(f"{THIS_SESSION} ({eng.session_id})###this", not h.picked)[0]:
            history.pick(app, "")
        for s in earlier:
            if imgui.selectable(_label(s), s.get("id") == h.picked)[0]:
                history.pick(app, str(s.get("id")))
            imgui.set_item_tooltip(_tooltip(s))
        if not earlier:
            imgui.text_disabled("No earlier session in this workspace yet."
                                if h.sessions_read else "Reading the sessions...")
        imgui.end_combo()
    imgui.set_item_tooltip("Which session's comms log to show: this one, or an earlier one "
                           "(read from .clutch/sessions/<id>/comms.jsonl)")
    if h.opening:
        imgui.same_line()
        imgui.text_disabled(f"opening {h.opening}...")
    if not h.picked:
        return False
    imgui.same_line()
    if imgui.radio_button("Entries", h.view == "entries"):
        h.view = "entries"
    imgui.same_line()
    if imgui.radio_button("Streams", h.view == "streams"):
        h.view = "streams"
    log = app.comms.log
    if log is not None and log.damaged:
        imgui.same_line()
        imgui.text_colored(AMBER, f"{log.damaged} damaged line(s) skipped")
        imgui.set_item_tooltip("Lines of this log that are not whole JSON entries (a crash "
                               "mid-write, an edit by hand); the rest is shown")
    if h.view != "streams":
        return False
    earlier_streams(app)
    return True


def earlier_streams(app: AppState) -> None:
    """An earlier session's streams, rebuilt from its comms log: pick one, read it."""
    h = app.history
    if h.streams is None:
        history.load_streams(app)
        imgui.text_disabled("Reading the session's streams...")
        return
    if not h.streams:
        imgui.text_disabled("No agent spoke in this session.")
        return
    imgui.set_next_item_width(em(24).x)
    if imgui.begin_combo("Stream", h.stream_pick):
        for sid in h.streams:
            if imgui.selectable(sid, sid == h.stream_pick)[0]:
                h.stream_pick = sid
        imgui.end_combo()
    imgui.same_line()
    imgui.text_disabled(f"{len(h.streams.get(h.stream_pick, '')):,} characters, rebuilt "
                        f"from the session's log")
    lines = history.stream_lines(app)
    pushed = mono_push(app)
    if imgui.begin_child("earlier-stream", ImVec2(-1, -1), imgui.ChildFlags_.borders,
                         imgui.WindowFlags_.horizontal_scrollbar):
        clipper = imgui.ListClipper()
        clipper.begin(len(lines))
        while clipper.step():
            for i in range(clipper.display_start, clipper.display_end):
                imgui.text_unformatted(lines[i])
    imgui.end_child()
    mono_pop(pushed)


def usage_scope(app: AppState) -> None:
    """The Usage panel's choice: every session of the workspace, or this one."""
    u = app.usage
    n = u.earlier.sessions if u.earlier is not None else 0
    if imgui.radio_button("All sessions", u.scope == "all"):
        u.scope, u.dirty = "all", True
    imgui.set_item_tooltip("Usage and cost summed over every session of this workspace (the "
                           "earlier ones read from their comms logs)")
    imgui.same_line()
    if imgui.radio_button("This session", u.scope == "current"):
        u.scope, u.dirty = "current", True
    imgui.same_line()
    if u.earlier is None:
        imgui.text_disabled("(reading earlier sessions...)")
    else:
        imgui.text_disabled(f"({n} earlier session{'s' if n != 1 else ''})")


def sessions_table(app: AppState) -> None:
    """Every session of the workspace with its figures; a click opens it in Comms."""
    h = app.history
    history.refresh_sessions(app, older_than=5.0)     # while shown, kept fresh
    if not h.sessions_read:
        imgui.text_disabled("Reading the sessions...")
        return
    flags = imgui.TableFlags_.row_bg | imgui.TableFlags_.borders_inner_v | imgui.TableFlags_.sizing_fixed_fit
    if not imgui.begin_table("usage-sessions", 5, flags):
        return
    for name in ("Session", "Started", "Tickets", "Tokens", "Cost"):
        imgui.table_setup_column(name)
    imgui.table_headers_row()
    for s in reversed(h.sessions):
        sid = str(s.get("id"))
        current = sid == app.engine.session_id
        imgui.table_next_row()
        imgui.table_next_column()
        label = f"{short(sid, 24)}{' (this one)' if current else ''}##sess-{sid}"
        if imgui.selectable(label, sid == h.picked or (current and not h.picked),
                            imgui.SelectableFlags_.span_all_columns)[0]:
            history.pick(app, "" if current else sid)
            app.focus_window("Comms")
        imgui.set_item_tooltip(_tooltip(s, "Click to open its log in the Comms window."))
        imgui.table_next_column()
        imgui.text((s.get("started") or "—")[:19].replace("T", " "))
        imgui.table_next_column()
        imgui.text(str(len(s.get("tickets") or [])))
        imgui.table_next_column()
        tokens = app.usage.session_total.total_tokens if current else int(s.get("tokens") or 0)
        imgui.text(fmt_tokens(tokens))
        imgui.table_next_column()
        cost = app.usage.session_total.cost_usd if current else float(s.get("cost") or 0)
        imgui.text(fmt_cost(cost))
    imgui.end_table()
    if imgui.small_button("Refresh##sessions"):
        history.refresh_sessions(app)


def earlier_streams_link(app: AppState) -> None:
    """Where a tier has said nothing yet in this session: a button to the last earlier
    session's streams (shown in the Comms window, rebuilt from that session's log)."""
    earlier = app.history.earlier(app.engine.session_id)
    if not earlier:
        return
    last = str(earlier[-1].get("id"))
    if imgui.small_button("Read the last session's streams"):
        history.pick(app, last, view="streams")
        app.focus_window("Comms")
    imgui.set_item_tooltip(f"Session {last}, rebuilt from its comms log, in the Comms window "
                           f"(any earlier session: Comms > Session)")
