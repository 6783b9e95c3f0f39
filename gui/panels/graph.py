"""The ticket graph: one box per ticket, coloured by status, in layers by dependency depth
(`gui.graph_layout`: no two boxes overlap, no edge crosses a box), each label cut to its box
with the full text on hover; a click selects the ticket (and shows its stream).

Drawn with ImGui's draw list in a scrolling child window (the layout is ours, so nothing can
move a box onto another). Only what is visible is drawn, so a graph of hundreds of tickets
costs what the visible part does.

GUI thread only. State: `app.tickets.graph_layout` (the layout, cached by the tickets'
dependencies and the font size) and `app.tickets.selected_ticket`.
"""
from __future__ import annotations

import json
from pathlib import Path

from imgui_bundle import ImVec2, ImVec4, imgui

from gui.graph_layout import GraphLayout, depths, edge_path, layout
from gui.state import AppState
from gui.theme import AMBER, GREY, STATUS_COLOURS, STATUS_ICONS, WHITE, em, short
from models import Ticket, Track, stream_tier3

NODE_W_EM = 14.0
NODE_W_MIN_EM = 9.0
NODE_H_LINES = 3


def fit(text: str, width: float) -> str:
    """`text` on one line, cut with "…" to fit `width` pixels."""
    text = " ".join(text.split())
    if imgui.calc_text_size(text).x <= width:
        return text
    lo, hi = 0, len(text)
    while lo < hi:                      # the longest prefix that fits with the ellipsis
        mid = (lo + hi + 1) // 2
        if imgui.calc_text_size(text[:mid] + "…").x <= width:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo].rstrip() + "…"


def graph_layout(app: AppState, t: Track, avail_w: float) -> GraphLayout:
    """The layout, cached; boxes as wide as the pane allows (between NODE_W_MIN_EM and
    NODE_W_EM) so that a few layers fit without scrolling."""
    line = imgui.get_text_line_height_with_spacing()
    pad = em(0.5).x
    gap = em(3.5).x
    n_layers = 1 + max(depths({k.id: list(k.depends_on) for k in t.tickets}).values(), default=0)
    node_w = (avail_w - 2 * pad - (n_layers - 1) * gap) / max(n_layers, 1) - 2
    node_w = float(int(max(em(NODE_W_MIN_EM).x, min(em(NODE_W_EM).x, node_w))))
    sig = json.dumps([t.id, line, node_w, [[k.id, k.depends_on] for k in t.tickets]])
    cached = app.tickets.graph_layout
    if cached is not None and cached[0] == sig:
        return cached[1]
    lay = layout({k.id: list(k.depends_on) for k in t.tickets}, node_w=node_w,
                 node_h=NODE_H_LINES * line + pad, lane_h=line * 0.6, col_gap=gap,
                 gap=em(0.7).x, margin=pad)
    app.tickets.graph_layout = (sig, lay)
    return lay


def u32(c: ImVec4, alpha: float | None = None) -> int:
    return imgui.get_color_u32(ImVec4(c.x, c.y, c.z, c.w if alpha is None else alpha))


def ticket_tooltip(k: Ticket) -> None:
    imgui.begin_tooltip()
    imgui.push_text_wrap_pos(em(36).x)
    imgui.text_colored(STATUS_COLOURS.get(k.status, GREY), f"{k.id} · {k.status.replace('_', ' ')}")
    imgui.text_unformatted(k.description or "(no description)")
    if k.depends_on:
        imgui.text_disabled("depends on: " + ", ".join(k.depends_on))
    if k.target_files:
        imgui.text_disabled("files: " + ", ".join(k.target_files))
    why = k.blocked_reason or (k.result if k.status in ("completed", "failed") else "")
    if why:
        imgui.text_disabled(short(why, 400))
    imgui.text_disabled("Click to select it (and show its stream)")
    imgui.pop_text_wrap_pos()
    imgui.end_tooltip()


def select_ticket(app: AppState, ticket_id: str) -> None:
    app.tickets.selected_ticket = ticket_id
    sid = stream_tier3(ticket_id)
    if sid in app.streams.views:
        app.streams.show("Tier 3", sid)


def ticket_graph(app: AppState, t: Track) -> None:
    tickets = t.tickets
    by_id = {k.id: k for k in tickets}
    imgui.text_disabled("Left to right by dependency depth. Hover a ticket for its full text; "
                        "click it to select it.")
    lay = graph_layout(app, t, imgui.get_content_region_avail().x - imgui.get_style().scrollbar_size)
    if lay.cyclic:
        imgui.text_colored(AMBER, "Not drawn (a dependency cycle): "
                           + ", ".join(f"{a} → {b}" for a, b in lay.cyclic))
    selected = app.tickets.selected_ticket if app.tickets.selected_ticket in by_id else None
    detail_h = imgui.get_frame_height_with_spacing() * (2 if selected else 0)
    imgui.begin_child("##graph", ImVec2(-1, -detail_h), imgui.ChildFlags_.borders,
                      imgui.WindowFlags_.horizontal_scrollbar)
    origin = imgui.get_cursor_screen_pos()
    dl = imgui.get_window_draw_list()

    def at(x: float, y: float) -> ImVec2:
        return ImVec2(origin.x + x, origin.y + y)

    clip_min, clip_max = dl.get_clip_rect_min(), dl.get_clip_rect_max()
    for e in lay.edges:
        xs = [p[0] for p in e.points]
        ys = [p[1] for p in e.points]
        if (origin.x + max(xs) < clip_min.x or origin.x + min(xs) > clip_max.x
                or origin.y + max(ys) < clip_min.y or origin.y + min(ys) > clip_max.y):
            continue
        src = by_id.get(e.src)
        colour = u32(STATUS_COLOURS.get(src.status if src else "", GREY), 0.85)
        pts = [at(x, y) for x, y in edge_path(e)]
        dl.add_polyline(pts, colour, 2.0, 0)
        end = pts[-1]
        a = em(0.45).x
        dl.add_triangle_filled(end, ImVec2(end.x - a * 1.4, end.y - a), ImVec2(end.x - a * 1.4, end.y + a),
                               colour)
    line = imgui.get_text_line_height_with_spacing()
    pad = em(0.5).x
    for k in tickets:
        box = lay.nodes.get(k.id)
        if box is None:
            continue
        p0, p1 = at(box.x, box.y), at(box.x + box.w, box.y + box.h)
        if not imgui.is_rect_visible(p0, p1):
            continue                   # off screen: neither drawn nor clickable
        imgui.set_cursor_screen_pos(p0)
        clicked = imgui.invisible_button(f"###node-{k.id}", ImVec2(box.w, box.h))
        hovered = imgui.is_item_hovered()
        if clicked:
            select_ticket(app, k.id)
            selected = k.id
        colour = STATUS_COLOURS.get(k.status, GREY)
        dl.add_rect_filled(p0, p1, u32(ImVec4(colour.x * 0.22, colour.y * 0.22, colour.z * 0.22, 1.0)), 4.0)
        thick = 3.0 if k.id == selected else (2.0 if hovered else 1.2)
        dl.add_rect(p0, p1, u32(WHITE if k.id == selected else colour), 4.0, thick)
        inner = box.w - 2 * pad
        head = fit(f"{k.id} {STATUS_ICONS.get(k.status, '')} {k.status.replace('_', ' ')}", inner)
        dl.add_text(ImVec2(p0.x + pad, p0.y + pad / 2), u32(colour), head)
        dl.add_text(ImVec2(p0.x + pad, p0.y + pad / 2 + line), u32(WHITE),
                    fit(k.description or "(no description)", inner))
        files = ", ".join(Path(f).name for f in k.target_files)
        if files:
            dl.add_text(ImVec2(p0.x + pad, p0.y + pad / 2 + 2 * line), u32(GREY), fit(files, inner))
        if hovered:
            ticket_tooltip(k)
    imgui.set_cursor_screen_pos(origin)
    imgui.dummy(ImVec2(lay.width, lay.height))
    imgui.end_child()
    if selected:
        k = by_id[selected]
        imgui.text_colored(STATUS_COLOURS.get(k.status, GREY), f"{k.id} · {k.status.replace('_', ' ')}")
        imgui.same_line()
        imgui.text_unformatted(fit(k.description, max(imgui.get_content_region_avail().x, em(4).x)))
        imgui.set_item_tooltip(k.description)
        deps = ", ".join(k.depends_on) or "nothing"
        imgui.text_disabled(fit(f"depends on {deps}; files: {', '.join(k.target_files) or '—'}",
                                max(imgui.get_content_region_avail().x, em(4).x)))
