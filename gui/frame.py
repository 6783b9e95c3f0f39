"""The per-frame work, before any panel draws: drain the engine's inbox into the app state,
poll the operations in flight, re-read what changed (tracks, approvals, usage, comms); and
`guarded`, which runs one panel so that a bug in it never takes the window down.

GUI thread only (hello_imgui's `pre_new_frame` and the window callbacks). State: none of its
own; it updates the `AppState` it is given.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from imgui_bundle import hello_imgui, imgui

from gui import engine_reads, history, pacing
from gui.state import AppState
from gui.theme import MAX_EVENTS_PER_FRAME, WINDOWS, describe_error
from models import tier_of_stream
import events as ev


log = logging.getLogger("clutch.gui")


def drain_inbox(app: AppState) -> int:
    events = app.engine.inbox.drain(MAX_EVENTS_PER_FRAME)
    for e in events:
        apply_event(app, e)
    if len(app.engine.inbox):
        hello_imgui.request_refresh()   # more to do next frame
    return len(events)


def panel_for_stream(stream_id: str) -> str:
    tier = tier_of_stream(stream_id) if stream_id else ""
    return {"Tier 1": "Epic", "Tier 2": "Tracks", "Tier 3": "Tickets", "Tier 4": "Tickets"}.get(tier, "")


def apply_event(app: AppState, e: Any) -> None:
    if isinstance(e, ev.StreamChunk):
        v = app.streams.view(e.stream_id)
        v.feed(e.text)
        v.state = "streaming"
        v.last_chunk_at = time.monotonic()
        app.streams.last_active = e.stream_id
    elif isinstance(e, ev.StreamEnd):
        app.streams.view(e.stream_id).state = e.state
    elif isinstance(e, (ev.StatusChange, ev.TrackChanged)):
        app.tickets.dirty = True
        if isinstance(e, ev.StatusChange) and e.status == "failed" and e.reason:
            what = e.ticket_id or e.track_id
            app.notify("error", f"{what} failed: {e.reason}", "Tickets")
    elif isinstance(e, ev.UsageEvent):
        app.usage.add_point(e.tier, e.ts - app.started, e.usage.total_tokens)
    elif isinstance(e, ev.ApprovalRequested):
        app.approvals.add(e.request)
    elif isinstance(e, ev.ApprovalResolved):
        app.approvals.remove(e.approval_id)
    elif isinstance(e, ev.ErrorEvent):
        app.notify("error", e.message, panel_for_stream(e.stream_id))
    elif isinstance(e, ev.LogEvent):
        level = e.level if e.level in ("info", "warning", "error") else "info"
        app.notify(level, e.message)
    elif isinstance(e, ev.ProposalReady):
        app.planning = False
        app.modal.open_proposal(e.epic, list(e.tracks))
    elif isinstance(e, ev.WorkersChanged):
        app.workers = {"active": e.active, "cap": e.cap, "queued": e.queued}


def poll_ops(app: AppState) -> None:
    still = []
    for op in app.ops:
        if not op.future.done():
            still.append(op)
            continue
        if op.future.cancelled():
            continue
        exc = op.future.exception()
        if exc is not None:
            if op.on_error is not None:
                op.on_error(exc)
            app.notify("error", f"{op.label}: {describe_error(exc)}", op.panel)
            continue
        if op.panel and app.panel_errors.get(op.panel, "").startswith(op.label):
            app.panel_errors.pop(op.panel, None)
        if op.on_done is not None:
            try:
                op.on_done(op.future.result())
            except Exception as e:  # noqa: BLE001 - a follow-up that fails is shown, not raised
                app.notify("error", f"{op.label}: {describe_error(e)}", op.panel)
    app.ops = still


def refresh_state(app: AppState) -> None:
    eng = app.engine
    now = time.monotonic()
    if now - app.streams.swept_at > 5.0:
        app.streams.unload_idle(now)
        app.streams.swept_at = now
    if app.tickets.dirty or now - app.tickets.read_at > 1.0:
        app.tickets.tracks = eng.tracks()
        app.tickets.dirty = False
        app.tickets.read_at = now
        if app.tickets.selected_track is None and app.tickets.tracks and not app.busy("Accept tracks"):
            # the first track not finished yet (accepting tracks selects the first new one)
            app.tickets.selected_track = next((t.id for t in app.tickets.tracks if t.status != "completed"),
                                      app.tickets.tracks[0].id)
        if app.tickets.selected_track is not None and app.tickets.track_by_id(app.tickets.selected_track) is None:
            app.tickets.selected_track = app.tickets.tracks[-1].id if app.tickets.tracks else None
    if app.approvals.dirty or now - app.approvals.read_at > 0.5:
        app.approvals.replace(eng.pending_approvals())
        app.approvals.read_at = now
    if app.usage.dirty or now - app.usage.read_at > 1.0:
        app.usage.set_totals(eng.usage("tier"), eng.usage("track"), eng.usage("ticket"))
        app.usage.read_at = now
    history.start(app)       # once: the earlier sessions' figures, read off this thread
    comms = history.live_comms(app)   # the running session's rows, shown or not
    n = engine_reads.comms_count(eng)
    if n > len(comms.rows):
        comms.append(engine_reads.comms_entries(eng, len(comms.rows)))


def typing_burst(types: list[int]) -> bool:
    """True when the queued input events are only typing: characters, each with at most its
    key's down and up (plus one key left over from the frame before). ImGui's input trickling
    takes one such character per frame (a key that goes down and up within a frame stops the
    queue), so at 10 FPS a typed sentence appeared over seconds (issue 20, defect 8). For a
    burst like this, processing the whole queue in one frame loses nothing: a character does
    not need its key's press, and any other key (Enter, Backspace, Ctrl...) adds a down/up
    pair without a character, which makes it no burst, and trickling keeps every press.
    Only the events' types can be read from Python, not their keys: a frame that also holds a
    Shift (a capital) is taken for no burst and trickles, one character more per frame until
    the rest of the queue is a burst again."""
    key, text = int(imgui.internal.InputEventType.key), int(imgui.internal.InputEventType.text)
    texts = sum(1 for t in types if t == text)
    keys = sum(1 for t in types if t == key)
    return texts >= 2 and keys + texts == len(types) and keys <= 2 * texts + 1


def input_trickling() -> None:
    """Before ImGui reads this frame's input queue (PollEvents has filled it): trickle unless
    the queue is a typing burst (`typing_burst`)."""
    queue = imgui.get_current_context().input_events_queue
    imgui.get_io().config_input_trickle_event_queue = not typing_burst([int(e.type) for e in queue])


def per_frame(app: AppState) -> None:
    """pre_new_frame callback: state first, then every panel renders from it."""
    app.frame += 1
    input_trickling()
    if app.exit_requested:
        hello_imgui.get_runner_params().app_shall_exit = True
    try:
        drain_inbox(app)
        poll_ops(app)
        refresh_state(app)
    except Exception as e:  # noqa: BLE001 - a bug here must not take the window down
        log.exception("updating the app state failed")
        app.notify("error", f"Updating the view failed: {describe_error(e)} (details in the log)")
    # no frame per frame while work is in flight: a finished operation wakes the window
    # (pacing.wake_on_done); frames are capped while streaming unless the person is at it
    app.last_input_at = pacing.pace(app.last_input_at)


def guarded(app: AppState, name: str, fn: Callable[[AppState], None]) -> None:
    """Run one panel; if it raises, recover ImGui's stacks, show the message, keep the app up.
    An interruption (Ctrl+C, a test's time limit) also recovers the stacks, then closes the app
    cleanly (see `interrupt`): it must never unwind through ImGui's C++ frames."""
    state = imgui.internal.ErrorRecoveryState()
    imgui.internal.error_recovery_store_state(state)
    try:
        fn(app)
    except BaseException as e:  # noqa: BLE001 - one broken panel must not close the others
        io = imgui.get_io()
        keep = io.config_error_recovery_enable_assert
        io.config_error_recovery_enable_assert = False
        try:
            imgui.internal.error_recovery_try_to_recover_state(state)
        finally:
            io.config_error_recovery_enable_assert = keep
        if not isinstance(e, Exception):
            interrupt(app, e)
            return
        log.exception("the %s panel failed", name)
        app.notify("error", f"The {name} panel failed: {describe_error(e)} (details in the log)",
                   name if name in WINDOWS else "")


def interrupt(app: AppState, e: BaseException) -> None:
    """A KeyboardInterrupt or a test runner's timeout raised inside a callback C++ called: kept
    on the app (re-raised by whoever ran the window, once it has closed) and the window asked
    to close. Raised through hello_imgui instead, it would leave the test engine's coroutine
    running and the ImGui context alive, and the process aborts (SIGABRT)."""
    if app.interrupted is None:
        app.interrupted = e
    app.exit_requested = True
    try:
        hello_imgui.get_runner_params().app_shall_exit = True
    except RuntimeError:
        log.warning("interrupted with no window running: %s", describe_error(e))


def shielded(app: AppState, name: str, fn: Callable[[], None]) -> Callable[[], None]:
    """A runner callback that lets nothing propagate into hello_imgui's C++ frames: an error is
    logged and shown on the strip, an interruption closes the window (`interrupt`)."""
    def run() -> None:
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - shown on the strip, details in the log
            log.exception("the %s callback failed", name)
            app.notify("error", f"The {name} failed: {describe_error(e)} (details in the log)")
        except BaseException as e:  # noqa: BLE001 - re-raised once the window has closed
            interrupt(app, e)
    return run
