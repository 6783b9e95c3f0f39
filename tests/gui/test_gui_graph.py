"""Issue 20, defect 11: the Graph tab. Boxes of parallel tickets touched or overlapped, edges ran
behind boxes, labels were cut with no way to read them. Now a layered layout by dependency depth
(gui.graph_layout) with no overlap and no edge through a box, full labels on hover, a click
selects the ticket. The layout is checked as geometry on many DAGs; the tab through the real app
(test engine, null backend)."""
from __future__ import annotations

import random

import pytest

from conftest import fast_settings
from gui_support import run_app_test, wait_until

import events as ev
import gui_2
from gui.graph_layout import Box, depths, edge_path, layout
from models import Ticket, TrackProposal, stream_tier3

pytestmark = pytest.mark.timeout(300)

SIZES = dict(node_w=210.0, node_h=58.0, lane_h=10.0, col_gap=52.0, gap=10.0, margin=8.0)


def random_deps(n: int, seed: int) -> dict[str, list[str]]:
    rng = random.Random(seed)
    ids = [f"T-{i:03d}" for i in range(1, n + 1)]
    return {t: rng.sample(ids[:i], rng.randint(0, min(3, i))) if i else []
            for i, t in enumerate(ids)}


def inside(b: Box, x: float, y: float, eps: float = 0.5) -> bool:
    return b.x + eps < x < b.x + b.w - eps and b.y + eps < y < b.y + b.h - eps


def check_layout(deps: dict[str, list[str]]) -> None:
    lay = layout(deps, **SIZES)
    assert set(lay.nodes) == set(deps)
    d = depths(deps)
    boxes = list(lay.nodes.items())
    for i, (a, ba) in enumerate(boxes):
        assert ba.x == pytest.approx(SIZES["margin"] + d[a] * (SIZES["node_w"] + SIZES["col_gap"]))
        for b, bb in boxes[i + 1:]:
            assert not ba.overlaps(bb), f"{a} and {b} overlap: {ba} {bb}"
    n_edges = sum(len([x for x in v if x in deps]) for v in deps.values())
    assert len(lay.edges) == n_edges and not lay.cyclic
    for e in lay.edges:
        path = edge_path(e, steps=24)
        assert path[0][0] == lay.nodes[e.src].x + lay.nodes[e.src].w      # leaves its source
        assert path[-1][0] == lay.nodes[e.dst].x                           # enters its target
        assert all(x1 >= x0 - 1e-6 for (x0, _), (x1, _) in zip(path, path[1:]))   # left to right
        # dense samples along every segment, none inside any box
        for (x0, y0), (x1, y1) in zip(path, path[1:]):
            for k in range(9):
                x, y = x0 + (x1 - x0) * k / 8, y0 + (y1 - y0) * k / 8
                for nid, b in boxes:
                    assert not inside(b, x, y), f"edge {e.src}->{e.dst} crosses {nid} at {(x, y)}"
    assert lay.width >= max(b.x + b.w for _, b in boxes) and lay.height >= max(b.y + b.h for _, b in boxes)


def test_parallel_tickets_and_long_edges_never_touch_a_box():
    # the offline planner's shape: one root, three parallel, one joining two of them, and an
    # edge from the root past the middle layer (the one that ran behind a box before)
    check_layout({"T-001": [], "T-002": ["T-001"], "T-003": ["T-001"], "T-005": ["T-001"],
                  "T-004": ["T-002", "T-003"], "T-006": ["T-001", "T-004"]})
    # eight parallel tickets under one root, and a wide fan-in
    check_layout({"R": [], **{f"P{i}": ["R"] for i in range(8)}, "J": [f"P{i}" for i in range(8)]})


@pytest.mark.parametrize("seed", range(12))
def test_random_dags_lay_out_without_overlap_or_crossing(seed):
    check_layout(random_deps(random.Random(seed).randint(2, 60), seed))


def test_a_long_chain_and_a_cycle_do_not_break_the_layout():
    chain = {f"C{i}": [f"C{i - 1}"] if i else [] for i in range(3000)}
    assert depths(chain)["C2999"] == 2999                   # no recursion limit
    lay = layout({"A": ["B"], "B": ["A"], "C": []}, **SIZES)
    assert len(lay.nodes) == 3 and len(lay.cyclic) == 1       # said, not drawn through a box


def test_graph_tab_hover_shows_the_full_label_and_a_click_selects_the_ticket(workspace):
    from multi_agent_conductor import ConductorEngine
    eng = ConductorEngine(workspace, fast_settings()).start()
    long_desc = ("Implement the retry policy of the HTTP client with exponential backoff, "
                 "jitter and a per-host budget, and document every knob in the README")
    [track] = eng.accept_tracks([TrackProposal(title="Graph", goal="g",
                                               acceptance_criteria=["ok"])]).result(30)
    eng.set_tickets(track.id, [
        Ticket(id="T-001", description="Create the package skeleton", target_files=["src/a.py"]),
        Ticket(id="T-002", description=long_desc, depends_on=["T-001"], target_files=["src/retry.py"]),
        Ticket(id="T-003", description="Helpers", depends_on=["T-001"]),
        Ticket(id="T-004", description="Tests", depends_on=["T-002", "T-003", "T-001"]),
    ]).result(30)
    app = gui_2.AppState(eng)
    gui_2.apply_event(app, ev.StreamChunk(stream_id=stream_tier3("T-002"), text="working\n"))
    seen = {}

    def t(ctx):
        from imgui_bundle import imgui
        wait_until(ctx, lambda: app.tickets.selected_track == track.id, 5, "the track")
        ctx.item_click("//Tickets/tickets-tabs/Graph")
        ctx.yield_(3)
        lay = app.tickets.graph_layout[1]
        seen["nodes"] = sorted(lay.nodes)
        ctx.mouse_move("//Tickets/**/###node-T-002")
        ctx.yield_(3)
        tip = ctx.get_window_by_ref("//##Tooltip_00")
        seen["tooltip"] = tip is not None and tip.active
        from gui.panels.graph import fit
        seen["fit"] = fit(long_desc, 150.0)
        seen["fit_w"] = imgui.calc_text_size(seen["fit"]).x
        ctx.item_click("//Tickets/**/###node-T-002")
        ctx.yield_(2)
        seen["selected"] = app.tickets.selected_ticket
        seen["stream"] = app.streams.selected.get("Tier 3")
        seen["tab_request_or_tab"] = app.streams.tab_request or app.streams.tab
        ctx.item_click("//Tickets/**/###node-T-004")
        ctx.yield_(2)
        seen["selected2"] = app.tickets.selected_ticket

    try:
        run_app_test(app, t)
    finally:
        eng.close()
        app.close()
    assert not [n.message for n in app.notices if "failed" in n.message]
    assert seen["nodes"] == ["T-001", "T-002", "T-003", "T-004"]
    assert seen["tooltip"], "hovering a ticket shows no tooltip with its full text"
    assert seen["fit"].endswith("…") and seen["fit_w"] <= 150.0
    assert seen["selected"] == "T-002" and seen["stream"] == stream_tier3("T-002")
    assert seen["tab_request_or_tab"] == "Tier 3"
    assert seen["selected2"] == "T-004"
