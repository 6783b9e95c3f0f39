"""The ticket graph (imgui-node-editor): nodes by status, laid out by dependency depth.

GUI thread only. State: `app.tickets.graph_*` (the editor context and node ids).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from imgui_bundle import ImVec2, ImVec4, imgui
from imgui_bundle import icons_fontawesome_4 as fa
from imgui_bundle import imgui_node_editor as ed

from gui.state import AppState
from gui.theme import GREY, STATUS_COLOURS, STATUS_ICONS, em, short
from models import Ticket, Track


def graph_editor(app: AppState) -> Any:
    if app.tickets.graph_editor is None:
        cfg = ed.Config()
        cfg.settings_file = None       # we lay the nodes out ourselves: nothing to save
        app.tickets.graph_editor = ed.create_editor(cfg)
    return app.tickets.graph_editor


def graph_id(app: AppState, ticket_id: str) -> int:
    n = app.tickets.graph_ids.get(ticket_id)
    if n is None:
        n = app.tickets.graph_ids[ticket_id] = len(app.tickets.graph_ids) + 1
    return n


def topo_depths(tickets: list[Ticket]) -> dict[str, int]:
    by_id = {t.id: t for t in tickets}
    depth: dict[str, int] = {}
    visiting: set[str] = set()

    def d(tid: str) -> int:
        if tid in depth:
            return depth[tid]
        if tid in visiting or tid not in by_id:
            return 0
        visiting.add(tid)
        val = 1 + max((d(x) for x in by_id[tid].depends_on if x in by_id), default=-1)
        visiting.discard(tid)
        depth[tid] = val
        return val

    for t in tickets:
        d(t.id)
    return depth


def ticket_graph(app: AppState, t: Track) -> None:
    tickets = t.tickets
    imgui.text_disabled("Nodes by status, left to right by dependency depth. Right-drag pans, "
                        "the wheel zooms, F fits.")
    sig = t.id + "|" + json.dumps([[k.id, k.depends_on] for k in tickets])
    relayout = sig != app.tickets.graph_sig
    prev = ed.get_current_editor()
    ed.set_current_editor(graph_editor(app))
    ed.begin("ticket-graph", ImVec2(0, 0))
    depths = topo_depths(tickets)
    rows_at: dict[int, int] = {}
    for k in tickets:
        n = graph_id(app, k.id)
        colour = STATUS_COLOURS.get(k.status, GREY)
        ed.push_style_color(ed.StyleColor.node_border, colour)
        ed.push_style_color(ed.StyleColor.node_bg, ImVec4(colour.x * 0.25, colour.y * 0.25,
                                                          colour.z * 0.25, 0.95))
        nid = ed.NodeId(n * 4)
        if relayout:
            dep = depths.get(k.id, 0)
            row = rows_at.get(dep, 0)
            rows_at[dep] = row + 1
            ed.set_node_position(nid, ImVec2(dep * em(12.5).x, row * em(0, 4.6).y))
        ed.begin_node(nid)
        ed.begin_pin(ed.PinId(n * 4 + 1), ed.PinKind.input)
        imgui.text(fa.ICON_FA_CARET_RIGHT)
        ed.end_pin()
        imgui.same_line()
        imgui.text_colored(colour, f"{k.id} {STATUS_ICONS.get(k.status, '')} {k.status.replace('_', ' ')}")
        imgui.same_line()
        ed.begin_pin(ed.PinId(n * 4 + 2), ed.PinKind.output)
        imgui.text(fa.ICON_FA_CARET_RIGHT)
        ed.end_pin()
        imgui.text_unformatted(short(k.description, 24))
        if k.target_files:
            imgui.text_disabled(short(", ".join(Path(f).name for f in k.target_files), 24))
        ed.end_node()
        ed.pop_style_color(2)
    li = 0
    ids = {k.id for k in tickets}
    for k in tickets:
        for d in k.depends_on:
            if d not in ids:
                continue
            li += 1
            src = graph_id(app, d)
            colour = STATUS_COLOURS.get(next((x.status for x in tickets if x.id == d), ""), GREY)
            ed.link(ed.LinkId(1_000_000 + li), ed.PinId(src * 4 + 2), ed.PinId(graph_id(app, k.id) * 4 + 1),
                    colour, 2.0)
    if relayout:
        app.tickets.graph_sig = sig
        app.tickets.graph_navigate_at = app.frame + 2
    if app.frame == app.tickets.graph_navigate_at:
        ed.navigate_to_content(0.0)
    ed.end()
    if prev is not None:
        ed.set_current_editor(prev)

