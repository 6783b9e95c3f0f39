"""The Streams panel: one tab per tier, each agent's streamed text (clipped to what is visible,
auto-scrolling only at the bottom), following the agent that is talking if asked to.

GUI thread only. State: `app.streams` (views, tab, selection, follow activity).
"""
from __future__ import annotations

import time

from imgui_bundle import ImVec2, ImVec4, imgui, imgui_md
from imgui_bundle import icons_fontawesome_4 as fa

from gui import engine_reads
from gui.panels.history import earlier_streams_link
from gui.records import StreamView
from gui.state import AppState
from gui.theme import (AMBER, GREY, MARKDOWN_LIMIT, RED, STATUS_COLOURS, STATUS_ICONS,
                       TIER_COLOURS, WHITE, describe_error, em)
from gui.widgets import mono_pop, mono_push, status_text, waiting_for_you
from models import TIERS, ApprovalRequest, tier_of_stream


def row_colour(row: str) -> ImVec4 | None:
    """A tool step's outcome in colour: a failure (a command that exited non-zero, a refused
    or rejected call) red, the person's edit of a call amber (issue 20, defect 3)."""
    if row.startswith("  ✗"):
        return RED
    if row.startswith("  ✎"):
        return AMBER
    return None


def stream_text_view(app: AppState, v: StreamView) -> None:
    """Only the visible lines are submitted (ListClipper), reflowed to the pane's width
    (gui.reflow); auto-scroll only when at the bottom."""
    imgui.begin_child("##text", ImVec2(-1, -1), imgui.ChildFlags_.borders,
                      imgui.WindowFlags_.always_vertical_scrollbar)
    pushed = mono_push(app)
    if v.markdown and v.chars <= MARKDOWN_LIMIT:
        mono_pop(pushed)
        pushed = False
        imgui_md.render(v.markdown_text())
    else:
        n = v.line_count
        cols = int(imgui.get_content_region_avail().x / max(imgui.calc_text_size("M").x, 1.0))
        total = v.reflow.sync(v.rows, n, cols)
        clipper = imgui.ListClipper()
        clipper.begin(total, imgui.get_text_line_height_with_spacing())
        while clipper.step():
            for j in range(clipper.display_start, clipper.display_end):
                text = v.reflow.line(j)
                colour = row_colour(v.reflow.row(j))    # a failure red, an edit amber
                if colour is None:
                    imgui.text_unformatted(text)
                else:
                    imgui.text_colored(colour, text)
        if n == 0:
            imgui.text_disabled("(no output yet)")
    # Auto-scroll only when already at the bottom: the scroll limit is still last frame's, so
    # "at the bottom" means "was at the bottom before this frame's new text".
    v.at_bottom = imgui.get_scroll_y() >= imgui.get_scroll_max_y() - 2.0
    if v.jump_to_end or (v.follow and v.at_bottom):
        imgui.set_scroll_here_y(1.0)
        v.jump_to_end = False
    mono_pop(pushed)
    imgui.end_child()


def ensure_loaded(app: AppState, v: StreamView) -> None:
    """A stream about to be drawn whose rows were dropped: read its text back."""
    if not v.unloaded:
        return
    try:
        v.load(engine_reads.stream_text(app.engine, v.stream_id))
    except (OSError, UnicodeDecodeError) as e:
        v.load("")
        v.feed(f"(cannot read this stream back: {describe_error(e)})")


def stream_waits(app: AppState, stream_id: str) -> list[ApprovalRequest]:
    """The approvals this stream's agent waits on (a worker's spawn is asked on its stream)."""
    return app.approvals.waiting_for(stream_id=stream_id)


def stream_header(app: AppState, v: StreamView) -> None:
    ensure_loaded(app, v)
    imgui.text_colored(TIER_COLOURS.get(tier_of_stream(v.stream_id), WHITE), v.stream_id)
    imgui.same_line()
    if not waiting_for_you(app, v.stream_id, stream_waits(app, v.stream_id)):
        status_text(v.state)
    imgui.align_text_to_frame_padding()
    imgui.text_disabled(f"{v.line_count:,} lines, {v.chars:,} chars")
    imgui.same_line()
    _c, v.follow = imgui.checkbox("Auto-scroll", v.follow)
    imgui.set_item_tooltip("Follow new text while the view is at the bottom; scroll up to read "
                           "in peace")
    if not v.at_bottom:
        imgui.same_line()
        if imgui.small_button(f"{fa.ICON_FA_ARROW_DOWN} End###End"):
            v.jump_to_end = True
    imgui.same_line()
    imgui.begin_disabled(v.chars > MARKDOWN_LIMIT)
    _c, v.markdown = imgui.checkbox("Markdown", v.markdown)
    imgui.end_disabled()
    imgui.same_line()
    if imgui.small_button("Copy"):
        imgui.set_clipboard_text(v.text())


def panel_streams(app: AppState) -> None:
    # follow activity: switch to the tier that is talking now, at most every 1.5 s. Only while
    # it talks: once it has ended, the tab the user picks stays (issue 20, defect 2)
    talking = app.streams.views.get(app.streams.last_active)
    if app.streams.follow_activity and talking is not None and talking.state == "streaming":
        sid = talking.stream_id
        tier = tier_of_stream(sid)
        now = time.monotonic()
        if app.streams.selected.get(tier) != sid or app.streams.tab != tier:
            if now - app.streams.last_tab_switch > 1.5:
                app.streams.selected[tier] = sid
                if app.streams.tab != tier:
                    app.streams.tab_request = tier
                app.streams.last_tab_switch = now
    for r in app.approvals.waiting():
        if r.stream_id:       # an agent waiting on the person has a tab even before it speaks
            app.streams.view(r.stream_id)
    _c, app.streams.follow_activity = imgui.checkbox("Follow activity", app.streams.follow_activity)
    imgui.set_item_tooltip("Show the stream that is talking now")
    imgui.same_line()
    active = [v for v in app.streams.views.values() if v.state == "streaming"]
    imgui.text_disabled(f"{len(app.streams.views)} streams, {len(active)} streaming")
    request, app.streams.tab_request = app.streams.tab_request, None
    # tabs keep their whole names and scroll when the pane is narrow (never cut to "Tier 1 (Or…")
    if not imgui.begin_tab_bar("stream-tiers", imgui.TabBarFlags_.fitting_policy_scroll):
        return
    for tier in TIERS:
        sids = app.streams.of_tier(tier)
        label = {"Tier 1": "Tier 1 (Orchestrator)", "Tier 2": "Tier 2 (Tech Lead)",
                 "Tier 3": "Tier 3 (Workers)", "Tier 4": "Tier 4 (QA)"}[tier]
        busy = any(app.streams.views[s].state == "streaming" for s in sids)
        waits = any(stream_waits(app, s) for s in sids)
        mark = fa.ICON_FA_BELL if waits else "●" if busy else ""
        flags = imgui.TabItemFlags_.set_selected if request == tier else 0
        opened = imgui.begin_tab_item_simple(f"{label} {mark}###{tier}", flags)
        if waits:
            imgui.set_item_tooltip("An agent here waits for your approval")
        if not opened:
            continue
        app.streams.tab = tier
        if not sids:
            imgui.text_disabled(f"Nothing from {tier} yet.")
            earlier_streams_link(app)
        elif tier == "Tier 1":
            v = app.streams.views[sids[0]]
            stream_header(app, v)
            stream_text_view(app, v)
        else:
            stream_list_and_view(app, tier, sids)
        imgui.end_tab_item()
    imgui.end_tab_bar()


def stream_list_and_view(app: AppState, tier: str, sids: list[str]) -> None:
    sel = app.streams.selected.get(tier)
    if sel not in sids:
        sel = app.streams.selected[tier] = sids[0]
    # the list takes at most a quarter of the pane: the text beside it gets the rest (at
    # 1280x720, at least 400 px; issue 20, defect 12); names show whole in their tooltip
    list_w = max(em(6).x, min(em(15).x, imgui.get_content_region_avail().x * 0.25))
    imgui.begin_child("list", ImVec2(list_w, -1), imgui.ChildFlags_.borders | imgui.ChildFlags_.resize_x)
    for sid in sids:
        v = app.streams.views[sid]
        waits = bool(stream_waits(app, sid))
        colour = AMBER if waits else STATUS_COLOURS.get(v.state, GREY)
        imgui.push_style_color(imgui.Col_.text, colour)
        label = sid.split(": ", 1)[1] if ": " in sid else sid   # the tab names the tier
        icon = fa.ICON_FA_BELL if waits else STATUS_ICONS.get(v.state, '')
        clicked, _ = imgui.selectable(f"{icon} {label}###{sid}", sid == sel)
        imgui.pop_style_color()
        if clicked:
            app.streams.selected[tier] = sid
            app.streams.follow_activity = False
        imgui.set_item_tooltip(f"{sid}: {'waiting for you' if waits else v.state}, {v.chars:,} chars")
    imgui.end_child()
    imgui.same_line()
    imgui.begin_group()
    v = app.streams.views[app.streams.selected[tier]]
    imgui.push_id(v.stream_id)
    stream_header(app, v)
    stream_text_view(app, v)
    imgui.pop_id()
    imgui.end_group()

