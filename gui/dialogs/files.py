"""Paths the person chooses: the "Save as" dialog for exports and File → Open workspace (with
the recent list), and the workspace switch itself.

Both dialogs are in-app (a path field, checked as you type) with "Browse…" opening the system's
own dialog (portable_file_dialogs: zenity or kdialog on Linux) when there is one; it is polled
each frame (`ready(0)`), never waited on. Switching the workspace is refused while anything is
under way (a track running, a worker at work, an approval waiting, an operation in flight): the
dialog says what, and nothing changes. Otherwise the new workspace's engine starts on the
background pool; only when it is up is the app switched to it (a fresh state for the new
workspace) and the old engine closed (which saves its state); a failure leaves the app where it
was, with the message.

GUI thread only (the engine's start and close, and the recent list's file, run on the app's
background pool). State: `app.modal.path_prompt` (a `PathPrompt`), `app.recent`.
"""
from __future__ import annotations

import ctypes
import os
import shutil
from pathlib import Path
from typing import Any

import imgui_bundle
from imgui_bundle import hello_imgui, imgui
from imgui_bundle import icons_fontawesome_4 as fa
from imgui_bundle import portable_file_dialogs as pfd

from gui import recent
from gui.records import PathPrompt
from gui.state import AppState
from gui.theme import AMBER, APP_TITLE, GREY, RED, describe_error, em
from gui.widgets import begin_sized_modal

SAVE_TITLE = "Save as"
WORKSPACE_TITLE = "Open workspace"


def native_dialogs() -> str:
    """The program portable_file_dialogs would use on this machine ("" when there is none)."""
    if os.name == "nt" or os.uname().sysname == "Darwin":
        return "system"
    for exe in ("zenity", "kdialog", "matedialog", "qarma"):
        if shutil.which(exe):
            return exe
    return ""


# -- checks (plain functions: tested on their own) -----------------------------------------------

def check_save_path(workspace: Path, text: str) -> tuple[Path | None, str]:
    """The file to write, or why not. A relative path is taken from the workspace."""
    text = text.strip()
    if not text:
        return None, "Write the path of the file to save."
    p = Path(text).expanduser()
    if not p.is_absolute():
        p = workspace / p
    if p.is_dir():
        return None, f"{p} is a folder: add a file name."
    if not p.parent.is_dir():
        return None, f"The folder {p.parent} does not exist."
    if not os.access(p.parent, os.W_OK):
        return None, f"The folder {p.parent} is not writable."
    return p, ""


def check_workspace(current: Path, text: str) -> tuple[Path | None, str]:
    """The folder to open as a workspace, or why not."""
    text = text.strip()
    if not text:
        return None, "Write the folder of a workspace (a repository, or an empty folder)."
    p = Path(text).expanduser()
    if not p.is_absolute():
        return None, f"{text!r} is not an absolute path (start it with / or ~)."
    if not p.exists():
        return None, f"{p} does not exist."
    if not p.is_dir():
        return None, f"{p} is a file, not a folder."
    if not os.access(p, os.W_OK):
        return None, (f"{p} is not writable: Clutch keeps its state in {p / 'conductor'} and "
                      f"{p / '.clutch'}.")
    if p.resolve() == current.resolve():
        return None, "That is the workspace open now."
    return p, ""


# the app's own housekeeping, which a switch does not cut off
HOUSEKEEPING = frozenset({"Open workspace", "Recent workspaces", "Remember workspace",
                          "Close the previous workspace", "Close the unused engine"})


def under_way(app: AppState) -> list[str]:
    """What a workspace switch would cut off (empty when nothing)."""
    out = list(app.engine.busy())
    out += [f"{op.label} in progress" for op in app.ops
            if op.label not in HOUSEKEEPING and not op.future.done()]
    if app.planning:
        out.append("Tier 1 is planning")
    return out


# -- opening the dialogs -------------------------------------------------------------------------

def ask_save_path(app: AppState, title: str, default: Path, on_choose: Any) -> None:
    """Open "Save as" with `default` filled in; `on_choose(path)` writes the file."""
    app.modal.path_prompt = PathPrompt("save", title, str(default), on_choose)
    app.modal.request("save")


def open_workspace_dialog(app: AppState) -> None:
    app.modal.path_prompt = PathPrompt("workspace", "Open workspace", "", None)
    load_recent(app)
    app.modal.request("workspace")


def load_recent(app: AppState) -> None:
    if app.busy("Recent workspaces"):
        return
    path = recent.recent_file()

    def done(res: tuple[list[str], str]) -> None:
        app.recent, notice = res
        if notice:
            app.notify("warning", notice)
    app.background("Recent workspaces", recent.load_recent, path, on_done=done)


def remember_workspace(app: AppState) -> None:
    def done(items: list[str]) -> None:
        app.recent = items
    app.background("Remember workspace", recent.remember, recent.recent_file(), app.workspace,
                   on_done=done)


# -- the modals ----------------------------------------------------------------------------------

def browse_button(p: PathPrompt) -> None:
    tool = native_dialogs()
    imgui.same_line()
    imgui.begin_disabled(not tool or p.native is not None)
    if imgui.button(f"{fa.ICON_FA_FOLDER_OPEN} Browse…###Browse"):
        start = p.path.strip() or str(Path.home())
        if p.kind == "save":
            p.native = pfd.save_file(p.title, start)
        else:
            p.native = pfd.select_folder(p.title, start)
    imgui.end_disabled()
    if not tool and imgui.is_item_hovered(imgui.HoveredFlags_.allow_when_disabled):
        imgui.set_tooltip("No system file dialog on this machine (zenity or kdialog): type the "
                          "path.")
    if p.native is not None and p.native.ready(0):
        chosen = p.native.result()
        p.native = None
        if chosen:
            p.path = chosen


def close_prompt(app: AppState) -> None:
    p = app.modal.path_prompt
    if p is not None and p.native is not None:
        p.native.kill()
    app.modal.path_prompt = None
    app.modal.current = None
    imgui.close_current_popup()


def save_modal(app: AppState) -> None:
    p = app.modal.path_prompt
    if not begin_sized_modal(SAVE_TITLE, 52, 13, 0.6, on_close=lambda: close_prompt(app)):
        return
    if p is None:
        close_prompt(app)
        imgui.end_popup()
        return
    imgui.text(p.title)
    imgui.set_next_item_width(-em(7).x)
    if imgui.is_window_appearing():
        imgui.set_keyboard_focus_here()
    changed, p.path = imgui.input_text("##path", p.path)
    if changed:
        p.replace_ok = False
    browse_button(p)
    path, err = check_save_path(app.workspace, p.path)
    if err:
        imgui.text_colored(RED, f"{fa.ICON_FA_TIMES_CIRCLE} {err}")
    elif path is not None and path.exists():
        imgui.text_colored(AMBER, f"{fa.ICON_FA_EXCLAMATION_TRIANGLE} {path} exists: Save "
                                  f"replaces it.")
    else:
        imgui.text_disabled(f"Saves to {path}")
    imgui.separator()
    imgui.begin_disabled(path is None)
    save = imgui.button(f"{fa.ICON_FA_SAVE} Save###Save", em(8, 0))
    imgui.end_disabled()
    enter = imgui.is_key_pressed(imgui.Key.enter) and path is not None
    imgui.same_line()
    cancel = imgui.button("Cancel") or imgui.is_key_pressed(imgui.Key.escape)
    if (save or enter) and path is not None:
        on_choose = p.on_choose
        close_prompt(app)
        on_choose(path)
    elif cancel:
        close_prompt(app)
    imgui.end_popup()


def workspace_modal(app: AppState) -> None:
    p = app.modal.path_prompt
    if not begin_sized_modal(WORKSPACE_TITLE, 56, 24, 0.8, on_close=lambda: close_prompt(app)):
        return
    if p is None:
        close_prompt(app)
        imgui.end_popup()
        return
    imgui.text_disabled(f"Open now: {app.workspace}")
    busy = under_way(app)
    if busy:
        imgui.push_text_wrap_pos(0)
        imgui.text_colored(AMBER, f"{fa.ICON_FA_EXCLAMATION_TRIANGLE} Not while work is under "
                                  f"way here: {'; '.join(busy)}. Let it finish, or pause or "
                                  f"cancel it, then open another workspace.")
        imgui.pop_text_wrap_pos()
    imgui.text("Folder")
    imgui.same_line()
    imgui.set_next_item_width(-em(7).x)
    if imgui.is_window_appearing():
        imgui.set_keyboard_focus_here()
    changed, p.path = imgui.input_text("##folder", p.path)
    if changed:
        p.error = ""
    browse_button(p)
    imgui.text("Recent")
    avail = imgui.get_content_region_avail().y - 3 * imgui.get_frame_height_with_spacing()
    imgui.begin_child("recent", imgui.ImVec2(-1, max(avail, em(0, 4).y)), imgui.ChildFlags_.borders)
    items = app.recent or []
    if not items:
        imgui.text_disabled("(none yet)" if app.recent is not None else "(reading…)")
    open_now: str | None = None
    for ws in items:
        here = Path(ws) == app.workspace.resolve()
        gone = not os.path.isdir(ws)
        if here or gone:
            imgui.push_style_color(imgui.Col_.text, GREY)
        clicked, _ = imgui.selectable(f"{ws}{'  (open now)' if here else ''}"
                                      f"{'  (missing)' if gone else ''}###recent-{ws}", p.path == ws,
                                      imgui.SelectableFlags_.allow_double_click)
        if here or gone:
            imgui.pop_style_color()
        if clicked:
            p.path, p.error = ws, ""
            if imgui.is_mouse_double_clicked(0):
                open_now = ws
    imgui.end_child()
    if p.error:
        imgui.push_text_wrap_pos(0)
        imgui.text_colored(RED, f"{fa.ICON_FA_TIMES_CIRCLE} {p.error}")
        imgui.pop_text_wrap_pos()
    go = imgui.button(f"{fa.ICON_FA_FOLDER_OPEN} Open###Open", em(8, 0)) or open_now is not None
    go = go or (imgui.is_key_pressed(imgui.Key.enter) and bool(p.path.strip()))
    imgui.same_line()
    cancel = imgui.button("Cancel") or imgui.is_key_pressed(imgui.Key.escape)
    if app.busy("Open workspace"):
        imgui.same_line()
        imgui.text_disabled("starting its engine…")
    if go and not app.busy("Open workspace"):
        busy = under_way(app)
        target, err = check_workspace(app.workspace, p.path)
        if busy:
            p.error = (f"Not switched: {'; '.join(busy)}. Let it finish, or pause or cancel it, "
                       f"then open another workspace.")
        elif err:
            p.error = err
        else:
            switch_workspace(app, target)
    elif cancel:
        close_prompt(app)
    imgui.end_popup()


# -- the switch ----------------------------------------------------------------------------------

def retitle_window(title: str) -> bool:
    """Set the window's title (hello_imgui has no call for it once the window is open): glfw's
    own glfwSetWindowTitle, in the libglfw imgui-bundle ships and runs on. False when there is
    no glfw window (the null backend of tests, another platform backend)."""
    try:
        addr = hello_imgui.get_glfw_window_address()
    except RuntimeError:
        return False
    lib_path = Path(imgui_bundle.__file__).parent / "libglfw.so.3"
    if not addr or not lib_path.exists():
        return False
    lib = ctypes.CDLL(str(lib_path))       # the copy already loaded: the same glfw state
    lib.glfwSetWindowTitle.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    lib.glfwSetWindowTitle(ctypes.c_void_p(addr), title.encode("utf-8"))
    return True


def switch_workspace(app: AppState, target: Path) -> None:
    """Take `target`'s lock (one Clutch per workspace: another process holding it is a refusal
    naming it) and start an engine on it (background pool); once it is up, switch the app to
    it, close the old engine and give the old workspace's lock back. A failure leaves
    everything as it was, with the message."""
    locker = app.lock_workspace
    prompt = app.modal.path_prompt

    def start() -> tuple[Any, Any]:
        from multi_agent_conductor import ConductorEngine
        new_lock = locker(target) if locker is not None else None
        try:
            eng = ConductorEngine(target, None)
            try:
                return eng.start(), new_lock
            except BaseException:
                eng.close()
                raise
        except BaseException:
            if new_lock is not None:
                new_lock.release()
            raise

    def started(res: tuple[Any, Any]) -> None:
        new, new_lock = res
        old, old_lock = app.engine, app.workspace_lock
        busy = under_way(app)
        cancelled = app.modal.path_prompt is not prompt     # the dialog was closed meanwhile
        if busy or cancelled:          # keep the old workspace
            def drop() -> None:
                new.close()
                if new_lock is not None:
                    new_lock.release()
            app.background("Close the unused engine", drop)
            if cancelled:
                app.notify("info", f"Opening {target} was cancelled; {app.workspace} stays open")
            elif app.modal.path_prompt is not None:
                app.modal.path_prompt.error = f"Not switched: {'; '.join(busy)}."
            return
        old.inbox.on_put = None
        app.switch_engine(new)
        app.modal.current = "workspace"    # drawn once more with no prompt: it closes itself
        if new_lock is not None:
            app.workspace_lock = new_lock
        new.inbox.on_put = hello_imgui.request_refresh
        try:
            rp = hello_imgui.get_runner_params()
            if not rp.ini_disable:     # the layout is remembered per workspace
                rp.ini_filename = str(app.workspace / ".clutch" / "clutch.ini")
        except RuntimeError:
            pass                       # no window (a test driving the state alone)

        def close_old() -> None:
            old.close()                # saves its state
            if new_lock is not None and old_lock is not None:
                old_lock.release()
        app.background("Close the previous workspace", close_old)
        retitle_window(f"{APP_TITLE} — {app.workspace.name}")
        if app.api_restart is not None:
            app.api_restart()
        remember_workspace(app)
        app.notify("info", f"Opened the workspace {app.workspace}")

    def failed(e: BaseException) -> None:
        if app.modal.path_prompt is not None:
            app.modal.path_prompt.error = f"{target} could not be opened: {describe_error(e)}"
    op = app.background("Open workspace", start, on_done=started)
    op.on_error = failed
