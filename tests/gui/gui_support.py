"""Helpers for the GUI tests: run the real app (gui_2) under imgui's test engine.

`run_app_test(app, test_fn)` runs the app's own RunnerParams (gui_2.runner_params) with the test
engine on top (imgui_bundle.immapp.testing.run). On the null backend (headless=True) no display
is needed; platform-facts section 3 lists the two workarounds, which gui_2.runner_params applies
when headless. The test function runs on the test engine's coroutine thread while the GUI
thread waits, so it may read the app state; between `ctx.yield_()` calls the engine's own
threads progress.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts" / "screenshots"


def run_app_test(app: Any, test_fn: Callable[[Any], None], *, headless: bool = True,
                 msaa: int | None = None, size: tuple[int, int] = (1600, 1000),
                 configure: Callable[[Any], None] | None = None) -> None:
    """`configure(runner_params)`, if given, may wrap the app's callbacks (e.g. ScreenText)."""
    import gui_2
    from imgui_bundle.immapp import testing
    rp, addons = gui_2.runner_params(app, ini_disable=True, headless=headless, msaa=msaa, size=size)
    rp.fps_idling.enable_idling = False
    if configure is not None:
        configure(rp)

    def register_tests() -> None:
        # fast mode counts simulated time: our own deadlines (wait_until) bound the tests instead
        from imgui_bundle import hello_imgui, imgui
        io = imgui.test_engine.get_io(hello_imgui.get_imgui_test_engine())
        io.config_watchdog_warning = 600.0
        io.config_watchdog_kill_test = 900.0
    rp.callbacks.register_tests = register_tests
    try:
        testing.run(test_function=test_fn, runner_params=rp, add_ons_params=addons,
                    run_speed=testing.TestRunSpeed.fast)
    finally:
        restore_signal_handlers()
        if app.interrupted is not None:
            # pytest-timeout's exception (or Ctrl+C), caught in a callback so that it did not
            # unwind through hello_imgui (which aborted the whole run): raised here instead
            raise app.interrupted


def restore_signal_handlers() -> None:
    """The test engine installs its crash handler for SIGPIPE, SIGSEGV, SIGABRT... and leaves it
    installed after the app is gone; the next socket write to a closed peer (any later test's
    HTTP server) then ran that handler on freed state and the whole suite died with SIGSEGV.
    Put back what Python had: SIGPIPE ignored (so a write raises BrokenPipeError), and
    faulthandler for the fatal signals when it was on (pytest turns it on)."""
    import faulthandler
    import signal
    import sys
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    for sig in (signal.SIGSEGV, signal.SIGABRT, signal.SIGFPE, signal.SIGBUS, signal.SIGILL):
        signal.signal(sig, signal.SIG_DFL)
    if faulthandler.is_enabled():
        faulthandler.enable(file=sys.__stderr__, all_threads=True)


def click_start(ctx: Any, app: Any) -> None:
    """Click the selected track's Start once the Tracks panel has settled: the workspace's git
    state and the suggested checks are read off the frame, and what they show when they
    arrive (the shared-directory notice above the button) moves it. Clicked too early, under
    load, the test engine's mouse missed the button as it moved."""
    wait_until(ctx, lambda: app.setup.git is not None and app.setup.suggestion is not None
               and not app.busy("Read workspace git") and not app.busy("Suggest verify command"),
               20, "the workspace's git state")
    ctx.yield_(2)
    ctx.item_click("//Tracks/###Start")


def wait_until(ctx: Any, pred: Callable[[], Any], timeout: float = 20.0, what: str = "condition",
               poll: float = 0.002) -> Any:
    """Yield frames until pred() is truthy (the engine runs on its own threads meanwhile)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(poll)          # let the engine's threads work between frames
        if ctx.is_error():
            raise AssertionError(f"the test engine reported an error while waiting for {what} "
                                 f"(see its log above)")
        v = pred()
        if v:
            return v
        ctx.yield_()
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def check(ctx: Any, ref: str) -> None:
    """Fail with a clear message if the test engine cannot find an item."""
    if not ctx.item_exists(ref):
        raise AssertionError(f"the GUI has no item {ref!r}")


def free_display() -> int:
    for n in range(90, 200):
        if not os.path.exists(f"/tmp/.X11-unix/X{n}") and not os.path.exists(f"/tmp/.X{n}-lock"):
            return n
    raise RuntimeError("no free X display number between :90 and :199")


class Xvfb:
    """An Xvfb server of our own (the tests never skip for want of one: a missing Xvfb is a
    set-up failure, fixed by `make install`)."""

    def __init__(self, size: str = "1600x1000x24") -> None:
        exe = shutil.which("Xvfb")
        if exe is None:
            raise RuntimeError("Xvfb is not installed: run `make install` (it installs the apt "
                               "packages xvfb, libgl1-mesa-dri...) to run the real-window GUI tests")
        self.display = free_display()
        self.proc = subprocess.Popen([exe, f":{self.display}", "-screen", "0", size, "-nolisten", "tcp"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        sock = f"/tmp/.X11-unix/X{self.display}"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RuntimeError(f"Xvfb exited at start: {err[-2000:]}")
            if os.path.exists(sock):
                s = socket.socket(socket.AF_UNIX)
                try:
                    s.connect(sock)
                    return
                except OSError:
                    pass
                finally:
                    s.close()
            time.sleep(0.05)
        self.close()
        raise RuntimeError("Xvfb did not start within 10 s")

    @property
    def env(self) -> dict[str, str]:
        return {"DISPLAY": f":{self.display}"}

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@contextlib.contextmanager
def window_display(size: str = "1600x1000x24"):
    """A display for the windows this process opens: the DISPLAY that is set, or an Xvfb of our
    own (set as DISPLAY) for the duration."""
    if os.environ.get("DISPLAY"):
        yield
        return
    x = Xvfb(size)
    os.environ["DISPLAY"] = x.env["DISPLAY"]
    try:
        yield
    finally:
        os.environ.pop("DISPLAY", None)
        x.close()


# ---------------------------------------------------------------------------------------------
# The Xvfb scenario: one app per process (run as `python tests/gui_support.py scenario OUT WS`)
# ---------------------------------------------------------------------------------------------

EPIC = ("Add a /health endpoint to the HTTP server → it reports the version, uptime and "
        "“ok ✓” — with tests, and a short note in the docs (é, ü, ─│┌┐).")


def xvfb_scenario(out_dir: str, workspace: str) -> None:
    """Drive the whole flow in a real window and capture each pane on the way."""
    import sys
    sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "gui")]
    import gui_2
    from conftest import fast_settings
    from imgui_bundle import imgui
    from imgui_bundle.immapp import testing
    from multi_agent_conductor import ConductorEngine

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    eng = ConductorEngine(workspace, fast_settings(offline_pace_s=0.0, max_workers=3)).start()
    app = gui_2.AppState(eng)
    shots: list[str] = []

    def shot(ctx: Any, name: str) -> None:
        ctx.yield_(1)
        p = str(out / f"{len(shots) + 1:02d}_{name}.png")
        print(f"[{time.monotonic() - t0:6.2f}s] {name}", flush=True)
        testing.capture(ctx, p)
        shots.append(p)

    def approve_front(ctx: Any) -> None:
        pending = app.approvals.waiting()
        if app.modal.current == "approval" and pending:
            ctx.item_click("//Approval/###Approve all" if len(pending) > 1 else "//Approval/###Approve")

    t0 = time.monotonic()

    def t(ctx: Any) -> None:
        ctx.yield_(5)
        shot(ctx, "start")
        ctx.item_click("//Epic/##epic")
        ctx.key_chars(EPIC)
        ctx.key_press(imgui.Key.mod_ctrl | imgui.Key.enter)
        wait_until(ctx, lambda: app.modal.current == "proposal", 30, "the proposal")
        shot(ctx, "proposal")
        ctx.item_click("//Proposed tracks/###Accept")
        wait_until(ctx, lambda: app.tickets.selected_track and not app.busy("Accept tracks"), 10, "a track")
        tid = app.tickets.selected_track
        ctx.item_click("//Tracks/###Plan tickets (Tier 2)")
        wait_until(ctx, lambda: (t := app.tickets.track_by_id(tid)) and t.tickets, 30, "tickets")
        ctx.yield_(2)
        shot(ctx, "tickets_editor")
        ctx.item_click("//Tickets/tickets-tabs/Graph")
        ctx.yield_(3)
        shot(ctx, "tickets_graph")
        ctx.item_click("//Tickets/tickets-tabs/List")
        ctx.item_click("//Tracks/###Start")
        wait_until(ctx, lambda: app.approvals.edit and app.approvals.edit.request.kind == "spawn", 20, "spawn")
        shot(ctx, "approval_spawn")
        ctx.item_click("//Approval/###Approve")
        wait_until(ctx, lambda: app.approvals.edit and app.approvals.edit.request.kind == "tool"
                   and app.approvals.edit.request.payload.kind == "tool" and app.approvals.edit.request.payload.tool == "write_file", 20, "a write")
        shot(ctx, "approval_write")
        ctx.item_click("//Approval/###Approve")
        wait_until(ctx, lambda: app.approvals.edit and app.approvals.edit.request.kind == "tool", 20, "an edit")
        ctx.item_click("//Approval/###Approve")
        wait_until(ctx, lambda: app.approvals.edit and app.approvals.edit.request.kind == "shell", 20, "shell")
        shot(ctx, "approval_shell")
        ctx.item_click("//Approval/###Approve")
        # from here on, as a user who trusts this track: nothing asks (Settings > Approvals)
        s = eng.settings
        # and the offline model streams slower, to show several workers talking at once
        gui_2.apply_settings(app, s.model_copy(update={"offline_pace_s": 0.04, "approvals": s.approvals.model_copy(
            update={"spawn": "auto", "write_tools": "auto", "shell": "auto"})}))
        # let several workers run; capture mid-run with streams flowing
        deadline = time.monotonic() + 60
        midrun = False
        while time.monotonic() < deadline:
            if eng.track(tid).status in ("completed", "failed") and not eng.is_running(tid):
                break
            streaming = [v for v in app.streams.views.values()
                         if v.state == "streaming" and v.stream_id.startswith("Tier 3")]
            if not midrun and len(streaming) >= 3 and app.modal.current is None:
                shot(ctx, "midrun")
                midrun = True
            elif app.modal.current == "approval" and len(app.approvals.pending) >= 2 and "approval_several" not in str(shots):
                shot(ctx, "approval_several")
                approve_front(ctx)
            else:
                approve_front(ctx)
            time.sleep(0.02)
            ctx.yield_()
        if not midrun:
            shot(ctx, "midrun")
        app.focus_window("Usage")
        ctx.yield_(2)
        shot(ctx, "usage")
        app.focus_window("Comms")
        if app.comms.filtered:
            app.comms.selected = app.comms.filtered[min(5, len(app.comms.filtered) - 1)]
        ctx.yield_(2)
        shot(ctx, "comms")
        app.focus_window("Streams")
        app.streams.tab_request = "Tier 1"
        app.streams.follow_activity = False
        ctx.yield_(2)
        shot(ctx, "streams_tier1")
        ctx.key_press(imgui.Key.mod_ctrl | imgui.Key.comma)
        wait_until(ctx, lambda: app.modal.current == "settings", 5, "settings")
        shot(ctx, "settings")
        ctx.item_click("//Settings/Cancel")
        ctx.key_press(imgui.Key.f1)
        wait_until(ctx, lambda: app.modal.current == "shortcuts", 5, "shortcuts")
        shot(ctx, "shortcuts")
        ctx.item_click("//Keyboard shortcuts/Close")
        # an error, as the user sees it
        ctx.item_click("//Epic/##epic")
        ctx.key_chars_replace("")
        ctx.item_click("//Epic/###Plan epic (Tier 1)")
        shot(ctx, "error")

    try:
        run_app_test(app, t, headless=False, msaa=0)
    finally:
        eng.close()
        app.close()
    (out / "shots.json").write_text(json.dumps(shots, indent=1))


if __name__ == "__main__":
    import json
    import sys
    if len(sys.argv) == 4 and sys.argv[1] == "scenario":
        xvfb_scenario(sys.argv[2], sys.argv[3])
    else:
        print("usage: gui_support.py scenario OUT_DIR WORKSPACE", file=sys.stderr)
        raise SystemExit(2)
