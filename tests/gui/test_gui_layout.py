"""Issue 20, defect 12: at 1280x720 the Tickets window showed one row with its headers cut, the
stream text was ~110 px wide and the stream tab names were cut. In a real window (Xvfb +
llvmpipe, the app's own docking layout, no remembered ini) at 1280x720 and 1600x1000: Tickets
shows at least five whole rows even with an error shown above them, the stream text is at least
400 px wide, every stream tab shows its whole name, and a long stream line (a Tier 4 diagnosis)
is reflowed to the pane's width instead of running off it."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from gui_support import ARTIFACTS, ROOT, Xvfb

from gui.reflow import Reflow, breaks

pytestmark = pytest.mark.xvfb

CHILD = r'''
import json, sys, time
sys.path[:0] = [ROOT, ROOT + "/tests", ROOT + "/tests/gui"]
import gui_2
import events as ev
from conftest import fast_settings
from gui_support import run_app_test, wait_until
from imgui_bundle import ImVec2, imgui
from imgui_bundle.immapp import testing
from models import Ticket, TrackProposal, stream_tier3
from multi_agent_conductor import ConductorEngine
import gui.panels.streams as streams_mod
import gui.panels.tickets as tickets_mod

W, H = SIZE
eng = ConductorEngine(WS, fast_settings()).start()
[track] = eng.accept_tracks([TrackProposal(title="Layout", goal="g", acceptance_criteria=["ok"])]).result(30)
tickets = [Ticket(id=f"T-{i:03d}", description=f"Implement part {i} of the retry policy and its tests",
                  depends_on=["T-001"] if i > 1 else [], target_files=[f"src/p{i}.py"],
                  status="completed", result=f"Done with T-{i:03d}. Files: src/p{i}.py")
           for i in range(1, 9)]
eng.set_tickets(track.id, tickets).result(30)
app = gui_2.AppState(eng)
diag = ("Diagnosis: the test imports core_health_endpoint from src but the package has no "
        "__init__.py, so the import fails before any assertion runs; add the file, then run "
        "pytest -q again and check that the version string matches pyproject.toml exactly. ") * 2
for sid, text in ((stream_tier3("T-002"), "working\n" * 30), ("Tier 4 (QA): T-002", diag + "\n")):
    gui_2.apply_event(app, ev.StreamChunk(stream_id=sid, text=text))
    gui_2.apply_event(app, ev.StreamEnd(stream_id=sid, state="done"))
app.notify("error", "T-003 failed: the verify command exited with code 1 (pytest -q)", "Tickets")
seen = {"text_w": [], "rows": [], "cols": None}
orig_view, orig_btn = streams_mod.stream_text_view, tickets_mod.ticket_action_button

def view(a, v):
    seen["text_w"].append(imgui.get_content_region_avail().x)
    orig_view(a, v)
    if v.stream_id.startswith("Tier 4"):
        seen["cols"] = v.reflow.cols
        seen["lines"] = [v.reflow.line(j) for j in range(v.reflow.total)]
        seen["char_w"] = imgui.calc_text_size("M").x if a.mono_font is None else None
streams_mod.stream_text_view = view

def button(label, k, action):
    if label == "Retry":
        p = imgui.get_cursor_screen_pos()
        lh = imgui.get_text_line_height_with_spacing()
        # the row (two lines: description and result) is wholly visible
        seen["rows"].append(bool(imgui.is_rect_visible(ImVec2(p.x, p.y + 2 * lh - 2), ImVec2(p.x + 1, p.y + 2 * lh - 1))))
    return orig_btn(label, k, action)
tickets_mod.ticket_action_button = button

def t(ctx):
    wait_until(ctx, lambda: app.tickets.selected_track == track.id, 5, "the track")
    app.focus_window("Streams")
    app.streams.show("Tier 3", stream_tier3("T-002"))
    ctx.yield_(4)
    seen["rows"].clear(); seen["text_w"].clear()
    ctx.yield_(1)
    seen["visible_rows"] = sum(seen["rows"])
    seen["t3_text_w"] = min(seen["text_w"])
    tabs = {}
    for tier, label in (("Tier 1", "Tier 1 (Orchestrator)"), ("Tier 2", "Tier 2 (Tech Lead)"),
                        ("Tier 3", "Tier 3 (Workers)"), ("Tier 4", "Tier 4 (QA)")):
        info = ctx.item_info(f"//Streams/stream-tiers/###{tier}")
        tabs[tier] = (info.rect_full.get_width(), imgui.calc_text_size(label).x)
    seen["tabs"] = tabs
    app.streams.show("Tier 4", "Tier 4 (QA): T-002")
    ctx.yield_(4)
    seen["t4_text_w"] = min(seen["text_w"][-2:])
    testing.capture(ctx, OUT)

try:
    run_app_test(app, t, headless=False, msaa=0, size=(W, H))
finally:
    eng.close(); app.close()
seen.pop("rows"); seen.pop("text_w")
print(json.dumps(seen), flush=True)
'''


@pytest.fixture(scope="module")
def display():
    x = Xvfb("1920x1200x24")
    try:
        yield x.env
    finally:
        x.close()


def run_child(display, tmp_path, size):
    ws = tmp_path / "ws"
    ws.mkdir()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    out = ARTIFACTS / f"layout_{size[0]}x{size[1]}.png"
    code = (CHILD.replace("ROOT", repr(str(ROOT))).replace("WS", repr(str(ws)))
            .replace("SIZE", repr(size)).replace("OUT", repr(str(out))))
    p = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, **display), cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    # the test engine's log shares stdout (colour codes, no newline before our line)
    lines = [ln[ln.index('{"'):] for ln in p.stdout.splitlines() if '{"' in ln]
    assert p.returncode == 0 and lines, (p.stdout[-3000:], p.stderr[-3000:])
    return json.loads(lines[-1])


@pytest.mark.parametrize("size", [(1280, 720), (1600, 1000)])
def test_the_layout_fits_the_window(display, tmp_path, size):
    seen = run_child(display, tmp_path, size)
    assert seen["visible_rows"] >= 5, f"Tickets shows {seen['visible_rows']} whole rows at {size}"
    assert seen["t3_text_w"] >= 400, f"the stream text is {seen['t3_text_w']:.0f} px wide at {size}"
    assert seen["t4_text_w"] >= 400
    for tier, (w, text_w) in seen["tabs"].items():
        assert w >= text_w, f"the {tier} tab is cut: {w:.0f} px for {text_w:.0f} px of name"
    # the diagnosis is reflowed to the pane: several lines, none wider than the pane, nothing lost
    lines, cols = seen["lines"], seen["cols"]
    assert len(lines) > 2 and all(len(ln) <= cols for ln in lines), (cols, lines)
    assert " ".join(ln.strip() for ln in lines).split() == " ".join(lines).split()


def test_reflow_keeps_every_character_and_follows_growth():
    rows = ["short", "x" * 95, "word " * 40, ""]
    rf = Reflow()
    assert rf.sync(rows, 3, 30) == 1 + 4 + 7
    text = "".join(rf.line(j) for j in range(1, 5))
    assert text == "x" * 95
    words = [rf.line(j) for j in range(5, 12)]
    assert all(len(w) <= 30 for w in words) and " ".join(words).split() == ("word " * 40).split()
    rows[2] += " tail"                         # the last counted row grows; a new row arrives
    rows.append("new row")
    assert rf.sync(rows, 5, 30) == rf.total and rf.line(rf.total - 1) == "new row"
    assert rf.sync(rows, 5, 60) < 1 + 4 + 8 + 2     # wider: fewer lines, rebuilt
    assert breaks("a" * 10, 4) == [0, 4, 8]
