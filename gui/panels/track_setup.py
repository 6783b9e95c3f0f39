"""In the Tracks window: how a track's work is checked and kept.

- `shared_dir_notice`: outside git, a notice that tickets share the workspace directory (so
  parallel tickets see each other's changes), with "Initialize git here" (`engine.init_git`:
  git init and a first commit, on the engine's executor thread; its error shown if it fails).
- `verify_line`: the verify command the selected track's tickets will be checked with, shown
  before it starts, with the project's suggestion and a "Use" button when it has none.
- `verify_editor`: the track's own verify command in the Edit tab (or the settings'), saved
  through `engine.set_verify_command` (refused by the engine while the track runs).

GUI thread only; the engine's answers that run git or read files (`git_setup`,
`verify_suggestion`) come from the GUI's background pool. State: `app.setup`.
"""
from __future__ import annotations

from typing import Any

from imgui_bundle import imgui
from imgui_bundle import icons_fontawesome_4 as fa

from gui import engine_reads
from gui.state import AppState
from gui.theme import AMBER, BLUE, GREEN, em, short
from models import Track

INIT_LABEL = "Initialize git here"


def refresh_setup(app: AppState) -> None:
    """Read the engine's worktree state and the suggested verify command off the frame, once
    (and again after `git init`)."""
    st = app.setup
    if st.git_stale and not app.busy("Read workspace git"):
        st.git_stale = False

        def got(result: dict[str, Any]) -> None:
            st.git = result
        app.background("Read workspace git", engine_reads.git_setup, app.engine, on_done=got)
    if st.suggestion is None and not app.busy("Suggest verify command"):
        st.suggestion = ("", "")

        def suggested(result: tuple[str, str]) -> None:
            st.suggestion = (str(result[0]), str(result[1]))
        app.background("Suggest verify command", engine_reads.verify_suggestion, app.engine,
                       on_done=suggested)


def shared_dir_notice(app: AppState) -> None:
    refresh_setup(app)
    g = app.setup.git
    if g is None or g.get("worktrees"):
        return
    imgui.push_style_color(imgui.Col_.text, AMBER)
    imgui.text_wrapped(f"{fa.ICON_FA_EXCLAMATION_TRIANGLE} Tickets share the workspace "
                       f"directory: parallel tickets can see each other's half-written changes.")
    imgui.pop_style_color()
    reason = str(g.get("reason") or "")
    if reason:
        if len(reason) <= 60:
            imgui.text_disabled(f"Why: {reason}.")
        else:
            imgui.text_disabled("Why? (hover)")
            imgui.set_item_tooltip(reason)
    if g.get("can_init"):
        busy = app.busy(INIT_LABEL)
        imgui.begin_disabled(busy)
        if imgui.button(f"{fa.ICON_FA_CODE_BRANCH} {INIT_LABEL}###{INIT_LABEL}"):
            init_git(app)
        imgui.end_disabled()
        imgui.set_item_tooltip("git init, then a first commit of the workspace as it is "
                               "(Clutch's own .clutch/ is left out). Each ticket then works in "
                               "a git worktree of its own, merged into its track's branch.")
        if busy:
            imgui.same_line()
            imgui.text_colored(BLUE, "making the repository…")
    imgui.separator()


def init_git(app: AppState) -> None:
    def done(sha: str) -> None:
        app.setup.git_stale = True
        app.notify("info", f"git repository initialised (first commit {sha})")

    def failed(_e: BaseException) -> None:
        app.setup.git_stale = True          # the command's error is shown on the strip
    app.command(INIT_LABEL, app.engine.init_git, panel="Tracks", on_done=done, on_error=failed)


def effective_verify(app: AppState, t: Track) -> tuple[str, str]:
    """(command, whose): the track's own, or the settings'."""
    if t.verify_command is not None:
        return t.verify_command, "this track's own"
    return app.engine.settings.verify_command, "from the settings"


def save_verify(app: AppState, t: Track, command: str | None) -> None:
    def done(_track: Track) -> None:
        app.tickets.dirty = True
        app.setup.verify_draft = None
        app.notify("info", f"verify command of {t.id} saved")
    app.command("Save verify command", app.engine.set_verify_command, t.id, command,
                panel="Tracks", on_done=done)


def branch_line(t: Track) -> None:
    """The track's git branch and where it was merged, beside its id."""
    if not t.branch:
        return
    imgui.same_line()
    imgui.text_colored(GREEN, f"{fa.ICON_FA_CODE_BRANCH} {t.branch}")
    if t.merged_into:
        imgui.same_line()
        imgui.text_colored(BLUE, f"merged into {t.merged_into}")


def verify_line(app: AppState, t: Track, running: bool) -> None:
    """What each ticket of the track must pass before it may complete, seen before Start."""
    cmd, whose = effective_verify(app, t)
    imgui.text_disabled("Checks:")
    imgui.same_line()
    if cmd.strip():
        imgui.text_colored(GREEN, f"{fa.ICON_FA_CHECK_SQUARE} {short(cmd, 70)}")
        imgui.set_item_tooltip(f"verify command ({whose}), run in each ticket's tree:\n{cmd}")
        imgui.same_line()
        imgui.text_disabled(f"({whose})")
        return
    imgui.text_disabled("turn ended, target files exist; no verify command")
    sug, where = app.setup.suggestion or ("", "")
    if sug:
        imgui.text_colored(BLUE, f"{fa.ICON_FA_LIGHTBULB} Suggested: {short(sug, 40)}")
        imgui.set_item_tooltip(f"{sug}\n(from {where})")
        imgui.same_line()
        imgui.begin_disabled(running or app.busy("Save verify command"))
        if imgui.small_button("Use###Use suggested verify"):
            save_verify(app, t, sug)
        imgui.end_disabled()
        if running and imgui.is_item_hovered(imgui.HoveredFlags_.allow_when_disabled):
            imgui.set_tooltip("The track is running; pause it and let its workers finish first")


def verify_editor(app: AppState, t: Track, running: bool) -> None:
    """The track's own verify command (or the settings'), with the project's suggestion."""
    st = app.setup
    d = st.verify_draft
    base = (t.verify_command is not None, t.verify_command or "")
    if d is None or d["id"] != t.id or (not d["dirty"] and d["base"] != base):
        d = st.verify_draft = {"id": t.id, "own": base[0], "command": base[1], "base": base,
                               "dirty": False}
    imgui.separator_text("Checks before a ticket completes")
    imgui.begin_disabled(running)
    changed, d["own"] = imgui.checkbox("This track has its own verify command", d["own"])
    d["dirty"] |= changed
    sug, where = st.suggestion or ("", "")
    if d["own"]:
        imgui.set_next_item_width(-em(5).x)
        changed, d["command"] = imgui.input_text_with_hint(
            "Command###Verify command", sug or "a shell command run in the ticket's tree; empty = none",
            d["command"])
        d["dirty"] |= changed
    else:
        s = app.engine.settings.verify_command
        imgui.text_disabled(f"Uses the settings' verify command: {s or '(none)'}")
    if sug:
        imgui.text_disabled(f"Suggested ({where}): {short(sug, 60)}")
        imgui.same_line()
        if imgui.small_button("Use###Use suggestion in editor"):
            d["own"], d["command"], d["dirty"] = True, sug, True
    imgui.end_disabled()
    now = (d["own"], d["command"].strip() if d["own"] else "")
    imgui.begin_disabled(running or now == (base[0], base[1].strip() if base[0] else "")
                         or app.busy("Save verify command"))
    if imgui.button("Save verify command"):
        save_verify(app, t, d["command"].strip() if d["own"] else None)
    imgui.end_disabled()
    if running:
        imgui.same_line()
        imgui.text_colored(AMBER, "the track is running: pause it and let it finish to change this")
