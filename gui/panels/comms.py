"""The Comms panel: every model request and response as a filterable table (clipped), an
entry's JSON read back from the log, and the JSONL export (on the background pool).

GUI thread only (the export's file writing runs on the app's background pool). State:
`app.comms`.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any
from pathlib import Path

from imgui_bundle import ImVec2, imgui
from imgui_bundle import icons_fontawesome_4 as fa

from gui import history
from gui.panels.history import session_picker
from gui.dialogs.files import ask_save_path
from gui.state import AppState
from gui.records import CommsRow
from gui.theme import GREEN, GREY, RED, TIER_COLOURS, em, fmt_tokens
from gui.widgets import filter_combo, mono_pop, mono_push, panel_error
from models import TIERS


def default_export_path(app: AppState) -> Path:
    return app.workspace / ".clutch" / "exports" / f"comms-{time.strftime('%Y%m%d-%H%M%S')}.jsonl"


def ask_export_comms(app: AppState) -> None:
    """"Save as" for the export, with the default path filled in (the exports folder is made
    first so that the default is a valid choice)."""
    default = default_export_path(app)
    try:
        default.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        app.notify("warning", f"Cannot make {default.parent}: {e.strerror or e}", "Comms")
    ask_save_path(app, "Export the comms entries shown (JSONL)", default,
                  lambda p: export_comms(app, p))


def export_comms(app: AppState, path: Path | None = None) -> None:
    chosen = list(app.comms.filtered)
    read = history.entries_reader(app)     # the session shown now (this one or an earlier one)
    path = path if path is not None else default_export_path(app)
    out_dir = path.parent

    def work() -> str:
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            step, lo, part = 5000, -5000, []  # read back from the log a slice at a time
            for i in chosen:                  # ascending
                if not lo <= i < lo + step:
                    lo = i
                    part = read(lo, lo + step)
                f.write(json.dumps(part[i - lo], ensure_ascii=False, default=str) + "\n")
        os.replace(tmp, path)
        return str(path)

    def done(p: str) -> None:
        app.comms.last_export = p
        app.notify("info", f"exported {len(chosen)} comms entries to {p}")
    app.background("Export comms", work, panel="Comms", on_done=done)


def panel_comms(app: AppState) -> None:
    panel_error(app, "Comms")
    if session_picker(app):         # an earlier session's streams are shown instead
        return
    c1, app.comms.filter_tier = filter_combo("Tier", app.comms.filter_tier, list(TIERS), 6)
    imgui.same_line()
    c2, app.comms.filter_stream = filter_combo("Stream", app.comms.filter_stream, app.comms.streams, 15)
    imgui.same_line()
    c3, app.comms.filter_kind = filter_combo("Kind", app.comms.filter_kind, app.comms.kinds, 7)
    if c1 or c2 or c3:
        app.comms.refilter()
    if imgui.button(f"{fa.ICON_FA_DOWNLOAD} Export JSONL…###Export JSONL"):
        ask_export_comms(app)
    imgui.set_item_tooltip("Writes the entries shown (after the filters) to a file you choose "
                           "(by default <workspace>/.clutch/exports/comms-<time>.jsonl)")
    imgui.same_line()
    _c, app.comms.follow = imgui.checkbox("Follow", app.comms.follow)
    imgui.same_line()
    imgui.text_disabled(f"{len(app.comms.filtered):,} of {len(app.comms.rows):,} entries")
    imgui.set_item_tooltip(history.comms_path(app))
    if app.comms.last_export:
        imgui.text_colored(GREEN, f"Exported to {app.comms.last_export}")
    avail = imgui.get_content_region_avail()
    detail_h = max(avail.y * 0.42, em(0, 9).y) if app.comms.selected is not None else 0.0
    flags = (imgui.TableFlags_.row_bg | imgui.TableFlags_.borders_inner_v | imgui.TableFlags_.resizable
             | imgui.TableFlags_.scroll_y | imgui.TableFlags_.scroll_x | imgui.TableFlags_.sizing_fixed_fit)
    if imgui.begin_table("comms", len(COMMS_COLUMNS), flags,
                         ImVec2(-1, max(avail.y - detail_h, em(0, 5).y))):
        imgui.table_setup_scroll_freeze(0, 1)
        for name, w in COMMS_COLUMNS:
            imgui.table_setup_column(name, imgui.TableColumnFlags_.width_fixed, em(w).x)
        imgui.table_headers_row()
        rows = app.comms.filtered
        clipper = imgui.ListClipper()
        clipper.begin(len(rows))
        while clipper.step():
            for r in range(clipper.display_start, clipper.display_end):
                i = rows[r]
                e = app.comms.rows[i]
                imgui.table_next_row()
                imgui.table_next_column()
                clicked, _ = imgui.selectable(f"{e.seq}##c{i}", app.comms.selected == i,
                                              imgui.SelectableFlags_.span_all_columns)
                if clicked:
                    app.comms.selected = i
                for (name, _w), text in zip(COMMS_COLUMNS[1:], comms_cells(e)[1:]):
                    imgui.table_next_column()
                    if name == "Tier":
                        imgui.text_colored(TIER_COLOURS.get(e.tier, GREY), text)
                    elif name == "Decision" and text.startswith(("rejected", "exit", "failed",
                                                                 "refused")):
                        imgui.text_colored(RED, text)
                    else:
                        imgui.text_unformatted(text)
                    if name in ("Stream", "Tool", "Decision") and text and imgui.is_item_hovered():
                        imgui.set_tooltip(text)
        if app.comms.follow and imgui.get_scroll_y() >= imgui.get_scroll_max_y() - 2:
            imgui.set_scroll_here_y(1.0)
        imgui.end_table()
    if app.comms.selected is not None and app.comms.selected < len(app.comms.rows):
        comms_detail(app, app.comms.selected)


# (header, width in em) of the table's columns; `comms_cells` gives a row's text in this order
COMMS_COLUMNS = (("#", 3.2), ("Time", 4.6), ("Tier", 3.4), ("Kind", 5.5), ("Tool", 6.5),
                 ("Decision", 9.0), ("Stream", 11.5), ("Dir", 2.2), ("Model", 8.0),
                 ("Tokens", 3.8))


def comms_cells(e: CommsRow) -> list[str]:
    return [str(e.seq), time.strftime("%H:%M:%S", time.localtime(e.ts)), e.tier, e.kind, e.tool,
            e.decision, e.stream_id, e.direction, e.model,
            fmt_tokens(e.tokens) if e.tokens is not None else ""]


def local_time(ts: Any) -> str:
    """An entry's time as the person reads a clock: local, to the millisecond, with the zone."""
    if not isinstance(ts, (int, float)) or ts <= 0:
        return "(no time recorded)"
    lt = time.localtime(ts)
    return time.strftime("%Y-%m-%d %H:%M:%S", lt) + f".{int(ts * 1000) % 1000:03d} " + \
        time.strftime("%Z", lt)


def field_text(v: Any) -> str:
    if isinstance(v, str):
        return v
    return json.dumps(v, indent=2, ensure_ascii=False, default=str)


def detail_fields(entry: dict[str, Any], row: CommsRow) -> list[tuple[str, str]]:
    """One comms entry as readable (name, value) pairs: the time local, the tags, what was
    decided, the usage in words, then every field of its data (text as text, the rest as
    indented JSON). Nothing of the entry is left out."""
    out = [("Time", local_time(entry.get("ts"))), ("Entry", f"#{entry.get('seq', row.seq)}")]
    for key, name in (("kind", "Kind"), ("direction", "Direction"), ("tier", "Tier"),
                      ("stream_id", "Stream"), ("track_id", "Track"), ("ticket_id", "Ticket"),
                      ("provider", "Provider"), ("model", "Model")):
        if entry.get(key):
            out.append((name, str(entry[key])))
    if row.tool:
        out.append(("Tool", row.tool))
    if row.decision:
        out.append(("Decision", row.decision))
    u = entry.get("usage")
    if isinstance(u, dict):
        parts = [f"{k.replace('_tokens', '').replace('_', ' ')} {v:,}" for k, v in u.items()
                 if k.endswith("_tokens") and isinstance(v, int) and v]
        cost = u.get("cost_usd")
        out.append(("Usage", ", ".join(parts) + (f"; ${cost:.6f}" if isinstance(cost, (int, float)) and cost else "")
                    or "none"))
    data = entry.get("data")
    if isinstance(data, dict):
        for k, v in data.items():
            if v is None or v == "" or v == [] or v == {}:
                continue
            out.append((k.replace("_", " ").capitalize(), field_text(v)))
    known = {"seq", "ts", "kind", "direction", "tier", "stream_id", "track_id", "ticket_id",
             "provider", "model", "usage", "data"}
    for k, v in entry.items():
        if k not in known and v not in (None, "", [], {}):
            out.append((k, field_text(v)))
    return out


def comms_detail(app: AppState, i: int) -> None:
    """The opened entry, read back from the log: readable fields, the raw JSON folded away."""
    if app.comms.detail[0] != i:
        try:
            [entry] = history.comms_entries(app, i, i + 1)
            text = json.dumps(entry, indent=2, ensure_ascii=False, default=str)
            fields = detail_fields(entry, app.comms.rows[i])
        except (OSError, ValueError) as e:
            text = f"cannot read entry {i + 1} back from the comms log: {e}"
            fields = [("Error", text)]
        app.comms.detail = (i, text)
        app.comms.detail_fields = fields
    imgui.begin_child("##entry", ImVec2(-1, -1), imgui.ChildFlags_.borders)
    if imgui.small_button("Close###close-entry"):
        app.comms.selected = None
    imgui.same_line()
    if imgui.small_button("Copy JSON"):
        imgui.set_clipboard_text(app.comms.detail[1])
    flags = imgui.TableFlags_.borders_inner_h | imgui.TableFlags_.sizing_stretch_prop
    if imgui.begin_table("entry-fields", 2, flags):
        imgui.table_setup_column("Field", imgui.TableColumnFlags_.width_fixed, em(6.5).x)
        imgui.table_setup_column("Value", imgui.TableColumnFlags_.width_stretch)
        for name, value in app.comms.detail_fields:
            imgui.table_next_row()
            imgui.table_next_column()
            imgui.text_disabled(name)
            imgui.table_next_column()
            if "\n" in value and value.lstrip().startswith(("{", "[")):
                pushed = mono_push(app)
                imgui.text_unformatted(value)
                mono_pop(pushed)
            else:
                imgui.text_wrapped(value)
        imgui.end_table()
    if imgui.collapsing_header("Raw JSON"):
        pushed = mono_push(app)
        lines = app.comms.detail[1].count("\n") + 2
        imgui.input_text_multiline("##detail", app.comms.detail[1],
                                   ImVec2(-1, min(lines, 40) * imgui.get_text_line_height()),
                                   imgui.InputTextFlags_.read_only)
        mono_pop(pushed)
    imgui.end_child()
