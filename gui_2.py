"""Clutch, the desktop app: `main()`, the runner parameters and the docking layout.

The app itself lives in the `gui/` package, shaped like imgui-bundle's
`demos_immapp/demo_docking.py`: `gui.state.AppState` (made of sub-states), each dockable
window a plain function `panel(app)` in `gui/panels/`, the modals in `gui/dialogs/`, the
per-frame work in `gui.frame`, menus, status bar, notification strip and shortcuts in
`gui.chrome`. This door keeps the names the CLI, the tests and the benchmarks import.

Threads. Everything here runs on the GUI thread, which never blocks:
- once per frame (`pre_new_frame`) the engine's inbox is drained into the app state;
- engine commands return a Future, polled each frame (`future.done()`), never waited on; their
  errors come back through `future.exception()` and are shown on the notification strip;
- work that is not an engine command (settings I/O, an edit preview, an export) runs on the
  app's small background pool and is polled the same way;
- the engine wakes an idle window through `engine.inbox.on_put = hello_imgui.request_refresh`.
Nothing here touches asyncio. State owned here: none (the `AppState` passed in owns it all).
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imgui_bundle import ImVec2, hello_imgui, imgui, imgui_md, immapp

from gui import pacing
from gui.chrome import (load_fonts, notification_strip, setup_style, show_gui, show_menus,
                        show_status)
from gui.dialogs.files import remember_workspace
from gui.dialogs.approval import (approval_fields, approval_payload, current_approval,
                                  preview_heading, resolve_front)
from gui.frame import apply_event, guarded, per_frame, shielded
from gui.panels.approvals import panel_approvals
from gui.panels.comms import panel_comms
from gui.panels.epic import apply_settings, panel_epic
from gui.panels.streams import ensure_loaded, panel_streams, stream_text_view
from gui.panels.tickets import panel_tickets
from gui.panels.tracks import panel_tracks
from gui.panels.usage import panel_usage
from gui.records import ApprovalEdit, StreamView
from gui.state import AppState
from gui.theme import APP_TITLE, DEJAVU_SANS, STREAM_KEEP_CHARS, WRAP_COLS, describe_error

if TYPE_CHECKING:
    from multi_agent_conductor import ConductorEngine

__all__ = ["AppState", "ApprovalEdit", "StreamView", "STREAM_KEEP_CHARS", "WRAP_COLS",
           "apply_event", "apply_settings", "approval_fields", "approval_payload",
           "current_approval", "ensure_loaded", "preview_heading", "hello_imgui", "main", "make_engine",
           "resolve_front", "runner_params", "stream_text_view"]

log = logging.getLogger("clutch.gui")


def docking_splits() -> list[hello_imgui.DockingSplit]:
    """
    ┌──────────┬───────────────────────┬────────────┐
    │ Epic     │ Tickets               │ Approvals  │
    │──────────│                       │────────────│
    │ Tracks   │───────────────────────│ Usage      │
    │          │ Streams | Comms       │            │
    └──────────┴───────────────────────┴────────────┘
    """
    def split(initial: str, new: str, direction: imgui.Dir, ratio: float) -> hello_imgui.DockingSplit:
        s = hello_imgui.DockingSplit()
        s.initial_dock, s.new_dock, s.direction, s.ratio = initial, new, direction, ratio
        return s
    return [
        # ratios that fit 1280x720 as well as 1600x1000 (issue 20, defect 12): the centre keeps
        # ~55 % of the width (stream text >= 400 px beside the stream list) and Tickets about
        # half the height (five rows and more)
        split("MainDockSpace", "LeftSpace", imgui.Dir.left, 0.24),
        split("MainDockSpace", "RightSpace", imgui.Dir.right, 0.33),
        split("LeftSpace", "LeftBottomSpace", imgui.Dir.down, 0.58),
        split("MainDockSpace", "CenterBottomSpace", imgui.Dir.down, 0.46),
        split("RightSpace", "RightBottomSpace", imgui.Dir.down, 0.74),
    ]


def dockable_windows(app: AppState) -> list[hello_imgui.DockableWindow]:
    def window(label: str, space: str, fn: Callable[[AppState], None]) -> hello_imgui.DockableWindow:
        w = hello_imgui.DockableWindow()
        w.label = label
        w.dock_space_name = space
        w.gui_function = lambda: guarded(app, label, fn)
        w.can_be_closed = False
        return w
    return [
        window("Epic", "LeftSpace", panel_epic),
        window("Tracks", "LeftBottomSpace", panel_tracks),
        window("Tickets", "MainDockSpace", panel_tickets),
        window("Streams", "CenterBottomSpace", panel_streams),
        window("Comms", "CenterBottomSpace", panel_comms),
        window("Approvals", "RightSpace", panel_approvals),
        window("Usage", "RightBottomSpace", panel_usage),
    ]


def docking_params(app: AppState) -> hello_imgui.DockingParams:
    dp = hello_imgui.DockingParams()
    dp.docking_splits = docking_splits()
    dp.dockable_windows = dockable_windows(app)
    return dp


def runner_params(app: AppState, *, ini_disable: bool = False, headless: bool = False,
                  msaa: int | None = None, size: tuple[int, int] = (1600, 1000)
                  ) -> tuple[hello_imgui.RunnerParams, immapp.AddOnsParams]:
    rp = hello_imgui.RunnerParams()
    rp.app_window_params.window_title = f"{APP_TITLE} — {app.workspace.name}"
    rp.app_window_params.window_geometry.size = size
    rp.app_window_params.restore_previous_geometry = not ini_disable
    rp.imgui_window_params.menu_app_title = APP_TITLE
    rp.imgui_window_params.default_imgui_window_type = \
        hello_imgui.DefaultImGuiWindowType.provide_full_screen_dock_space
    rp.imgui_window_params.show_menu_bar = True
    rp.imgui_window_params.show_menu_app = False
    rp.imgui_window_params.show_menu_view = False
    rp.imgui_window_params.show_status_bar = True
    rp.imgui_window_params.show_status_fps = False
    rp.imgui_window_params.remember_status_bar_settings = False
    rp.callbacks.show_menus = shielded(app, "menu bar", lambda: show_menus(app))
    rp.callbacks.show_status = shielded(app, "status bar", lambda: show_status(app))
    rp.callbacks.show_gui = lambda: guarded(app, "dialog", show_gui)
    rp.callbacks.pre_new_frame = shielded(app, "frame update", lambda: per_frame(app))
    rp.callbacks.load_additional_fonts = shielded(app, "font loading", lambda: load_fonts(app))
    rp.callbacks.setup_imgui_style = shielded(app, "style", setup_style)
    strip = hello_imgui.EdgeToolbarOptions()
    strip.size_em = 2.0
    strip.window_padding_em = ImVec2(0.5, 0.35)
    rp.callbacks.add_edge_toolbar(hello_imgui.EdgeToolbarType.top, shielded(app, "notification strip", lambda: notification_strip(app)), strip)
    rp.docking_params = docking_params(app)
    pacing.configure(rp)
    rp.fps_idling.enable_idling = not headless
    if ini_disable:
        rp.ini_disable = True
    else:
        rp.ini_folder_type = hello_imgui.IniFolderType.absolute_path
        rp.ini_filename = str(app.workspace / ".clutch" / "clutch.ini")

    def post_init() -> None:
        if headless:
            # the null renderer has no texture support flag: "font atlas is not built" otherwise
            imgui.get_io().backend_flags |= imgui.BackendFlags_.renderer_has_textures
        app.engine.inbox.on_put = hello_imgui.request_refresh
        if app.font_notice:
            app.notify("warning", app.font_notice)

    def before_exit() -> None:
        app.engine.inbox.on_put = None

    rp.callbacks.post_init = shielded(app, "start-up", post_init)
    rp.callbacks.before_exit = shielded(app, "shut-down", before_exit)
    if headless:
        rp.platform_backend_type = hello_imgui.PlatformBackendType.null
        rp.renderer_backend_type = hello_imgui.RendererBackendType.null
        # the null runner never destroys the ImGui context; the test engine needs it gone first
        rp.callbacks.before_exit_post_cleanup = lambda: imgui.destroy_context()
    if msaa is None:
        msaa = pacing.MSAA_SAMPLES
    if not headless:
        o = hello_imgui.OpenGlOptions()
        o.anti_aliasing_samples = msaa
        rp.renderer_backend_options.open_gl_options = o
    addons = immapp.AddOnsParams()
    addons.with_implot = True
    addons.with_markdown = True
    md = imgui_md.MarkdownOptions()
    if os.path.exists(DEJAVU_SANS):
        md.font_options.merge_fonts = [DEJAVU_SANS]
    addons.with_markdown_options = md
    return rp, addons


def make_engine(workspace: str | os.PathLike, provider: str | None,
                settings: Any = None) -> tuple[ConductorEngine, list[str]]:
    """The engine on `workspace`: its saved settings, or `settings` (the command line's
    overrides already applied), or the saved ones with every tier on `provider`."""
    from conductor_store import ConductorStore
    from multi_agent_conductor import ConductorEngine
    ws = Path(workspace).expanduser()
    notices: list[str] = []
    if settings is None and provider:
        settings, notices = ConductorStore(ws).load_settings()
        settings = settings.model_copy(update={"provider": provider})
    return ConductorEngine(ws, settings), notices


def start_api(app: AppState, starter: Callable[[Any], Any]) -> None:
    """Start the automation API for this app's engine with `starter` (the CLI hands in
    hook_server.start_for_engine: the API is a layer beside the GUI, so the GUI never imports
    it). A failure is a notice; the app runs without the API."""
    try:
        app.api_server = starter(app.engine)
    except Exception as e:  # noqa: BLE001 - reported on the strip; the app runs without it
        app.notify("error", f"The automation API did not start: {describe_error(e)}")
        return
    # a workspace switch (File → Open workspace) serves the new engine from then on
    app.api_restart = lambda: (stop_api(app), start_api(app, starter))
    where = getattr(app.api_server, "url", None) or getattr(app.api_server, "port", None)
    app.notify("info", f"automation API started{f' at {where}' if where else ''}")


def stop_api(app: AppState) -> None:
    srv = app.api_server
    if srv is None:
        return
    for name in ("stop", "close", "shutdown"):
        fn = getattr(srv, name, None)
        if callable(fn):
            try:
                fn()
            except Exception as e:  # noqa: BLE001
                log.warning("stopping the API: %s", e)
            break


def main(workspace: str | os.PathLike = ".", api: Callable[[Any], Any] | None = None,
         provider: str | None = None, lock: Any = None,
         locker: Callable[[Path], Any] | None = None, settings: Any = None) -> int:
    """The desktop app on a workspace: build the engine, run the window, close the engine
    (which saves its state). SIGTERM and Ctrl+C in the terminal close the window cleanly.
    `lock`: the workspace's lock the caller holds; `locker(path)`: takes another workspace's
    lock (File → Open workspace), raising with a message when another Clutch holds it.
    `settings`: the command line's (e.g. --tier-provider) over the saved ones."""
    try:
        engine, notices = make_engine(workspace, provider, settings)
    except Exception as e:  # noqa: BLE001 - a bad workspace or settings: one line, no traceback
        print(f"clutch: {describe_error(e)}", file=sys.stderr, flush=True)
        return 2
    engine.start()
    app = AppState(engine)
    app.workspace_lock, app.lock_workspace = lock, locker
    for n in notices:
        app.notify("warning", n)
    if api is not None:
        start_api(app, api)
    remember_workspace(app)          # first in File → Open recent
    rp, addons = runner_params(app)

    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        def on_signal(_sig: int, _frame: Any) -> None:
            app.exit_requested = True      # picked up at the next frame: a clean exit
            try:
                hello_imgui.request_refresh()
            except RuntimeError:
                pass
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, on_signal)
    code = 0
    try:
        immapp.run(rp, addons)
        if app.interrupted is not None:
            raise app.interrupted       # Ctrl+C or the like, caught in a callback (see interrupt)
    except RuntimeError as e:
        if app.frame > 0:
            raise
        # no frame at all: no display, no OpenGL... one clear line instead of a traceback
        print(f"clutch: cannot open the window: {e}", file=sys.stderr, flush=True)
        code = 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        stop_api(app)
        app.engine.close()             # the workspace open now (File → Open may have switched)
        engine.close()
        if app.workspace_lock is not None and app.workspace_lock is not lock:
            app.workspace_lock.release()   # a workspace opened here; the caller releases its own
        app.close()
    return code

