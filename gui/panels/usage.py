"""The Usage panel: tokens and cost per tier, track and ticket (over every session of the
workspace, or this one: gui.panels.history), the budget bars, the cumulative tokens plot
(implot), an agent's context window gauge and its context sections (issue 19), and the
sessions.

GUI thread only. State: `app.usage`.
"""
from __future__ import annotations

import time

from imgui_bundle import ImVec2, imgui, implot

from gui.panels.history import sessions_table, usage_scope
from gui.state import AppState
from gui.theme import (AMBER, GREEN, GREY, LEVEL_COLOURS, RED, TIER_COLOURS, describe_error, em,
                       fmt_cost, fmt_tokens, short)
from gui.widgets import coloured_progress
from models import TIERS, Usage


USAGE_COLS = ("In", "Out", "Cached", "Thoughts", "Total", "Req.", "Cost")


USAGE_TIPS = "In: input (prompt) tokens · Out: output tokens · Cached: cached input tokens · " \
    "Thoughts: thinking tokens · Total: all tokens · Req.: model requests · Cost: USD"


def usage_row(name: str, u: Usage) -> None:
    imgui.table_next_row()
    imgui.table_next_column()
    imgui.text_unformatted(name)
    for val in (u.input_tokens, u.output_tokens, u.cached_tokens, u.thoughts_tokens, u.total_tokens):
        imgui.table_next_column()
        imgui.text(fmt_tokens(val))
    imgui.table_next_column()
    imgui.text(str(u.requests))
    imgui.table_next_column()
    imgui.text(fmt_cost(u.cost_usd))


def usage_table(table_id: str, first: str, rows: list[tuple[str, Usage]], total: Usage | None = None,
                first_em: float = 3.5) -> None:
    flags = imgui.TableFlags_.row_bg | imgui.TableFlags_.borders_inner_v | imgui.TableFlags_.sizing_fixed_fit
    if imgui.begin_table(table_id, 1 + len(USAGE_COLS), flags):
        imgui.table_setup_column(first, imgui.TableColumnFlags_.width_fixed, em(first_em).x)
        for c in USAGE_COLS:
            imgui.table_setup_column(c)
        imgui.table_headers_row()
        if imgui.is_item_hovered():
            imgui.set_tooltip(USAGE_TIPS)
        for name, u in rows:
            usage_row(name, u)
        if total is not None:
            usage_row("Total", total)
        imgui.end_table()


def usage_plot(app: AppState) -> None:
    if not any(xs for xs, _ys in app.usage.series.values()):
        imgui.text_disabled("The plot of cumulative tokens per tier starts with the first model call.")
        return
    try:
        import numpy as np
    except ImportError:
        imgui.text_disabled("(the plot needs numpy: pip install numpy)")
        return
    now = max(time.time() - app.started, 0.0)
    top = max((ys[-1] for _xs, ys in app.usage.series.values() if ys), default=1.0)
    if implot.begin_plot("Cumulative tokens per tier", ImVec2(-1, em(0, 12).y)):
        implot.setup_axes("seconds since start", "tokens")
        implot.setup_axes_limits(0.0, max(now, 1.0) * 1.02, 0.0, top * 1.1, implot.Cond_.always)
        for tier in TIERS:
            series = app.usage.series.get(tier)
            if not series or not series[0]:
                continue
            xs, ys = series
            arr = app.usage.plot_cache.get(tier)
            if arr is None or len(arr[0]) != len(xs) + 2:
                # a step line from 0, each call's tokens landing at once, held until now
                arr = app.usage.plot_cache[tier] = (np.array([0.0, *xs, now], dtype=np.float64),
                                               np.array([0.0, *ys, ys[-1]], dtype=np.float64))
            arr[0][-1] = now
            spec = implot.Spec(line_color=TIER_COLOURS[tier], line_weight=2.0)
            implot.plot_stairs(tier, arr[0], arr[1], spec)
        implot.end_plot()


def panel_usage(app: AppState) -> None:
    s = app.engine.settings
    usage_scope(app)
    tiers = [(t, app.usage.tier.get(t, Usage())) for t in TIERS]
    usage_table("usage-tier", "Tier", tiers, app.usage.total)
    # budget (per session: the engine checks this session's spending against it)
    total = app.usage.session_total
    if s.budget_usd:
        frac = total.cost_usd / s.budget_usd
        coloured_progress(frac, RED if frac >= 1 else AMBER if frac > 0.8 else GREEN,
                          f"budget {fmt_cost(total.cost_usd)} of {fmt_cost(s.budget_usd)}")
    else:
        imgui.text_disabled(f"Spent {fmt_cost(total.cost_usd)}; no USD budget set (Epic or Settings).")
    if s.budget_tokens:
        frac = total.total_tokens / s.budget_tokens
        coloured_progress(frac, RED if frac >= 1 else AMBER if frac > 0.8 else GREEN,
                          f"tokens {fmt_tokens(total.total_tokens)} of {fmt_tokens(s.budget_tokens)}")
    usage_plot(app)
    context_budget(app)
    if imgui.collapsing_header("Per track"):
        names = {t.id: t.title for t in app.tickets.tracks}
        usage_table("usage-track", "Track", [(short(names.get(k, k), 18), u)
                                             for k, u in sorted(app.usage.track.items())], first_em=9)
    if imgui.collapsing_header("Per ticket"):
        usage_table("usage-ticket", "Ticket", sorted(app.usage.ticket.items()))
    if imgui.collapsing_header("Per session"):
        sessions_table(app)


def context_budget(app: AppState) -> None:
    imgui.separator_text("Context window of an agent")
    sids = list(app.streams.views)
    if not sids:
        imgui.text_disabled("No agent has run yet.")
        return
    looking_at = app.streams.selected.get(app.streams.tab)
    if app.usage.bleed_stream not in sids or (not app.usage.bleed_pinned and looking_at and looking_at != app.usage.bleed_stream):
        app.usage.bleed_stream = looking_at or sids[0]
        app.usage.bleed_read_at = 0.0
    imgui.set_next_item_width(em(18).x)
    if imgui.begin_combo("Agent", app.usage.bleed_stream):
        for sid in sids:
            if imgui.selectable(sid, sid == app.usage.bleed_stream)[0]:
                app.usage.bleed_stream = sid
                app.usage.bleed_pinned = True
                app.usage.bleed_read_at = 0.0
        imgui.end_combo()
    imgui.set_item_tooltip("Follows the stream selected in Streams until you pick one here")
    if app.usage.bleed_pinned:
        imgui.same_line()
        if imgui.small_button("Follow Streams"):
            app.usage.bleed_pinned = False
    now = time.monotonic()
    if now - app.usage.bleed_read_at > 0.5:
        try:
            app.usage.bleed = app.engine.bleed_stats(app.usage.bleed_stream)
            app.usage.context = app.engine.context_sections(app.usage.bleed_stream)
        except Exception as e:  # noqa: BLE001
            app.usage.bleed = {"error": describe_error(e)}
        app.usage.bleed_read_at = now
    bleed_gauge(app)
    context_view(app)


def context_view(app: AppState) -> None:
    """What the agent was sent, section by section (issue 19): label, kind, tokens, and
    whether it is part of the shared prefix a provider's cache can reuse."""
    secs = app.usage.context
    if not secs:
        imgui.text_disabled("No context sections for this agent yet.")
        return
    total = sum(s.tokens for s in secs)
    shared = 0
    for s in secs:
        if not s.shared:
            break
        shared += s.tokens
    imgui.text(f"Its context: {len(secs)} sections, {fmt_tokens(total)} tokens")
    imgui.same_line()
    imgui.text_disabled(f"(shared prefix {fmt_tokens(shared)})")
    flags = (imgui.TableFlags_.row_bg | imgui.TableFlags_.borders_inner_v
             | imgui.TableFlags_.sizing_fixed_fit)
    if imgui.begin_table("context-sections", 3, flags):
        imgui.table_setup_column("Section", imgui.TableColumnFlags_.width_stretch)
        imgui.table_setup_column("Tokens")
        imgui.table_setup_column("Shared")
        imgui.table_headers_row()
        for s in secs:
            imgui.table_next_row()
            imgui.table_next_column()
            imgui.text_unformatted(s.label)
            imgui.table_next_column()
            imgui.text(fmt_tokens(s.tokens))
            imgui.table_next_column()
            imgui.text_disabled("shared" if s.shared else "")
        imgui.end_table()


def bleed_gauge(app: AppState) -> None:
    b = app.usage.bleed
    if not b:
        imgui.text_disabled("No session for this agent (not started, or from an earlier run).")
        return
    if "error" in b:
        imgui.text_colored(RED, b["error"])
        return
    colour = LEVEL_COLOURS.get(str(b.get("level")), GREY)
    used, limit = int(b.get("used_tokens", 0)), int(b.get("context_window", 1))
    coloured_progress(float(b.get("utilisation", 0.0)), colour,
                      f"{fmt_tokens(used)} of {fmt_tokens(limit)} ({100 * float(b.get('utilisation', 0)):.1f}%)")
    roles = b.get("by_role", {})
    imgui.text_disabled("  ".join(f"{k} {fmt_tokens(int(v))}" for k, v in roles.items())
                        + f"  · headroom {fmt_tokens(int(b.get('headroom_tokens', 0)))}")

