"""The Comms panel: every model request and response as a filterable table (clipped), an
entry's JSON read back from the log, and the JSONL export (on the background pool).

GUI thread only (the export's file writing runs on the app's background pool). State:
`app.comms`.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from imgui_bundle import ImVec2, imgui
from imgui_bundle import icons_fontawesome_4 as fa

from gui import engine_reads
from gui.dialogs.files import ask_save_path
from gui.state import AppState
from gui.theme import GREEN, GREY, TIER_COLOURS, em, fmt_tokens
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
    eng = app.engine
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
                    part = engine_reads.comms_entries(eng, lo, lo + step)
                f.write(json.dumps(part[i - lo], ensure_ascii=False, default=str) + "\n")
        os.replace(tmp, path)
        return str(path)

    def done(p: str) -> None:
        app.comms.last_export = p
        app.notify("info", f"exported {len(chosen)} comms entries to {p}")
    app.background("Export comms", work, panel="Comms", on_done=done)


def panel_comms(app: AppState) -> None:
    panel_error(app, "Comms")
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
    imgui.set_item_tooltip(engine_reads.comms_path(app.engine))
    if app.comms.last_export:
        imgui.text_colored(GREEN, f"Exported to {app.comms.last_export}")
    avail = imgui.get_content_region_avail()
    detail_h = em(0, 9).y if app.comms.selected is not None else 0.0
    flags = (imgui.TableFlags_.row_bg | imgui.TableFlags_.borders_inner_v | imgui.TableFlags_.resizable
             | imgui.TableFlags_.scroll_y | imgui.TableFlags_.scroll_x | imgui.TableFlags_.sizing_fixed_fit)
    if imgui.begin_table("comms", 8, flags, ImVec2(-1, max(avail.y - detail_h, em(0, 5).y))):
        imgui.table_setup_scroll_freeze(0, 1)
        for name, w in (("#", 3.2), ("Time", 4.6), ("Tier", 3.4), ("Stream", 11.5), ("Dir", 2.2),
                        ("Kind", 5.5), ("Model", 8.0), ("Tokens", 3.8)):
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
                imgui.table_next_column()
                imgui.text(time.strftime("%H:%M:%S", time.localtime(e.ts)))
                imgui.table_next_column()
                imgui.text_colored(TIER_COLOURS.get(e.tier, GREY), e.tier)
                imgui.table_next_column()
                imgui.text_unformatted(e.stream_id)
                imgui.table_next_column()
                imgui.text(e.direction)
                imgui.table_next_column()
                imgui.text(e.kind)
                imgui.table_next_column()
                imgui.text(e.model)
                imgui.table_next_column()
                imgui.text(fmt_tokens(e.tokens) if e.tokens is not None else "")
        if app.comms.follow and imgui.get_scroll_y() >= imgui.get_scroll_max_y() - 2:
            imgui.set_scroll_here_y(1.0)
        imgui.end_table()
    if app.comms.selected is not None and app.comms.selected < len(app.comms.rows):
        i = app.comms.selected
        if app.comms.detail[0] != i:
            try:
                [entry] = engine_reads.comms_entries(app.engine, i, i + 1)
                text = json.dumps(entry, indent=2, ensure_ascii=False, default=str)
            except (OSError, ValueError) as e:
                text = f"cannot read entry {i + 1} back from the comms log: {e}"
            app.comms.detail = (i, text)
        pushed = mono_push(app)
        imgui.input_text_multiline("##detail", app.comms.detail[1], ImVec2(-1, -1),
                                   imgui.InputTextFlags_.read_only)
        mono_pop(pushed)

