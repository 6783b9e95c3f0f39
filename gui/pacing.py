"""Frame pacing: how often the window draws, so that an idle app costs what a bare window does.

Under software GL (Mesa's llvmpipe: a VM, a remote desktop, a laptop without drivers) every
frame drawn is CPU time, and the app draws about twice what a bare hello_imgui window draws.
So it draws only when something changed:
- idle, nothing touching it: hello_imgui's idling at `IDLE_FPS` frames per second (enough for
  the "waiting 12 s" counters; user input and engine events wake it at once: glfw wakes on
  input, the engine's inbox calls `request_refresh` on each put, a finished operation calls it
  through `wake_on_done`);
- while agents stream and nobody touches the app: at most `STREAM_FPS` frames per second
  (text appearing 20 times a second reads as live; 8 workers' chunks would otherwise ask for
  a frame each, hundreds a second);
- while the person types, scrolls or moves the mouse, and for `INPUT_GRACE_S` after: full speed
  (vsync on a real display).
No MSAA: ImGui anti-aliases its own lines, shapes and text, so multisampling only multiplies
the cost of each pixel.

GUI thread only (`wake_on_done`'s callback runs on whichever thread completes the future and
only calls `hello_imgui.request_refresh`, which is documented as callable from any thread).
State owned here: none (the last input time lives in `AppState.last_input_at`).
"""
from __future__ import annotations

import concurrent.futures
import logging
import time
from typing import Any

from imgui_bundle import hello_imgui, imgui

log = logging.getLogger("clutch.gui")

IDLE_FPS = 3.0
STREAM_FPS = 20.0
INPUT_GRACE_S = 2.0
MSAA_SAMPLES = 0


def configure(rp: hello_imgui.RunnerParams) -> None:
    """The runner's idling: on, at IDLE_FPS."""
    rp.fps_idling.enable_idling = True
    rp.fps_idling.fps_idle = IDLE_FPS


def user_input_now() -> bool:
    """The person is doing something this frame: the mouse moved, scrolled or is pressed, a
    key is held, or a widget is active (typing, dragging)."""
    io = imgui.get_io()
    d = io.mouse_delta
    return bool(d.x or d.y or io.mouse_wheel or io.mouse_wheel_h or imgui.is_any_mouse_down()
                or imgui.is_any_item_active() or len(io.input_queue_characters)
                or io.key_ctrl or io.key_shift or io.key_alt)


def pace(last_input_at: float, now: float | None = None) -> float:
    """Per frame: set the frame-rate cap from the last input time; returns the new input time."""
    now = time.monotonic() if now is None else now
    try:
        if user_input_now():
            last_input_at = now
    except Exception as e:  # noqa: BLE001 - pacing must never break a frame; logged
        log.warning("reading the input state for frame pacing failed: %s", e)
        return last_input_at
    rp = hello_imgui.get_runner_params()
    if not rp.fps_idling.enable_idling:     # tests and benchmarks drive every frame themselves
        rp.fps_idling.fps_max = 0.0
        return last_input_at
    rp.fps_idling.fps_max = 0.0 if now - last_input_at < INPUT_GRACE_S else STREAM_FPS
    return last_input_at


def wake_on_done(future: concurrent.futures.Future[Any]) -> None:
    """Draw a frame as soon as `future` completes (its result is polled at that frame), instead
    of drawing every frame while it runs."""
    def wake(_f: concurrent.futures.Future[Any]) -> None:
        try:
            hello_imgui.request_refresh()
        except RuntimeError:
            pass     # the window is gone: nothing to draw
    future.add_done_callback(wake)
