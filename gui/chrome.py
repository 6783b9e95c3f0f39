"""The window's chrome: menus, status bar, the notification strip (top edge toolbar), global
shortcuts, modal arbitration (one modal at a time, approvals first), fonts and the style.

GUI thread only. State: none of its own; reads and updates the `AppState`.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from imgui_bundle import ImVec2, ImVec4, hello_imgui, imgui
from imgui_bundle import icons_fontawesome_4 as fa

from gui.dialogs.approval import approval_modal
from gui.dialogs.files import (SAVE_TITLE, WORKSPACE_TITLE, load_recent, open_workspace_dialog,
                               save_modal, workspace_modal)
from gui.dialogs.proposal import proposal_modal
from gui.dialogs.settings import open_settings, settings_modal
from gui.dialogs.shortcuts import shortcuts_modal
from gui.panels.comms import ask_export_comms
from gui.state import AppState
from gui.theme import (AMBER, DEJAVU_MONO, DEJAVU_SANS, NOTICE_COLOURS, NOTICE_ICONS, WHITE,
                       WINDOWS, fmt_cost, short)


MODAL_TITLES = {"approval": "Approval", "proposal": "Proposed tracks", "settings": "Settings",
                "shortcuts": "Keyboard shortcuts", "save": SAVE_TITLE, "workspace": WORKSPACE_TITLE}


def choose_modal(app: AppState) -> None:
    """One modal at a time; an open one is never pre-empted. Approvals first."""
    if app.modal.current is not None:
        return
    pending = app.approvals.waiting()
    if pending and not app.approvals.deferred:
        app.modal.requests.add("approval")
    if app.modal.proposal is None:
        app.modal.requests.discard("proposal")
    for name in ("approval", "proposal", "settings", "shortcuts", "save", "workspace"):
        if name in app.modal.requests:
            if name == "approval" and (not pending or app.approvals.deferred):
                app.modal.requests.discard(name)
                continue
            app.modal.requests.discard(name)
            app.modal.current = name
            imgui.open_popup(MODAL_TITLES[name])
            return


def global_shortcuts(app: AppState) -> None:
    route = imgui.InputFlags_.route_global
    if imgui.shortcut(imgui.Key.f1, route):
        if app.modal.current is None:
            app.modal.request("shortcuts")
    if imgui.shortcut(imgui.Key.mod_ctrl | imgui.Key.comma, route) and app.modal.current is None:
        open_settings(app)
    if imgui.shortcut(imgui.Key.mod_ctrl | imgui.Key.o, route) and app.modal.current is None:
        open_workspace_dialog(app)
    if imgui.shortcut(imgui.Key.mod_ctrl | imgui.Key.q, route):
        app.exit_requested = True
    if imgui.shortcut(imgui.Key.mod_ctrl | imgui.Key.mod_shift | imgui.Key.r, route):
        app.approvals.deferred = False
        app.modal.request("approval")
    if app.modal.current is None:
        keys = [imgui.Key._1, imgui.Key._2, imgui.Key._3, imgui.Key._4, imgui.Key._5, imgui.Key._6,
                imgui.Key._7]
        for key, name in zip(keys, WINDOWS):
            if imgui.shortcut(imgui.Key.mod_ctrl | key, route):
                app.focus_window(name)


def show_gui(app: AppState) -> None:
    """The main callback: modals and shortcuts (the panels are dockable windows)."""
    global_shortcuts(app)
    choose_modal(app)
    if app.modal.current == "approval":
        approval_modal(app)
    elif app.modal.current == "proposal":
        proposal_modal(app)
    elif app.modal.current == "settings":
        settings_modal(app)
    elif app.modal.current == "shortcuts":
        shortcuts_modal(app)
    elif app.modal.current == "save":
        save_modal(app)
    elif app.modal.current == "workspace":
        workspace_modal(app)
    if app.modal.current is not None and not imgui.is_popup_open(MODAL_TITLES[app.modal.current]):
        app.modal.current = None        # closed by ImGui itself


def notification_strip(app: AppState) -> None:
    """The top edge toolbar: the newest unread error or warning, where the user is looking."""
    active = app.active_notices()
    pending = len(app.approvals.waiting())
    if pending:
        imgui.push_style_color(imgui.Col_.button, ImVec4(0.55, 0.38, 0.05, 1))
        if imgui.button(f"{fa.ICON_FA_BELL} {pending} approval{'s' if pending != 1 else ''} waiting"
                        "###strip-approvals"):
            app.approvals.deferred = False
            app.modal.request("approval")
        imgui.pop_style_color()
        imgui.same_line()
    if not active:
        hint = "Ready." if not app.ops else " · ".join(sorted({op.label for op in app.ops})) + "…"
        imgui.text_disabled(f"{hint}   Ctrl+Enter plans the epic · F1 shortcuts")
        return
    n = active[-1]
    colour = NOTICE_COLOURS.get(n.level, WHITE)
    imgui.text_colored(colour, NOTICE_ICONS.get(n.level, ""))
    imgui.same_line()
    msg = short(n.message, 180)
    imgui.text_colored(colour, msg)
    if len(n.message) > 180:
        imgui.set_item_tooltip(n.message)
    imgui.same_line()
    imgui.text_disabled(time.strftime("%H:%M:%S", time.localtime(n.ts)))
    imgui.same_line()
    if imgui.small_button("Dismiss###strip-dismiss"):
        app.dismiss([n])
    if len(active) > 1:
        # "Dismiss all" first, and the list opens under "N more": it covered "Dismiss all"
        imgui.same_line()
        if imgui.small_button("Dismiss all###strip-dismiss-all"):
            app.dismiss(active)
        imgui.same_line()
        if imgui.small_button(f"{len(active) - 1} more###strip-more"):
            imgui.open_popup("notices")
        below = ImVec2(imgui.get_item_rect_min().x, imgui.get_item_rect_max().y + 2)
        if imgui.is_popup_open("notices"):
            imgui.set_next_window_pos(below, imgui.Cond_.appearing)
    if imgui.begin_popup("notices"):
        # the list's own "Dismiss all": while it is open, a click outside only closes it
        if imgui.small_button("Dismiss all###notices-dismiss-all"):
            app.dismiss(active)
            imgui.close_current_popup()
        imgui.separator()
        for k, x in enumerate(reversed(active[-40:])):
            imgui.push_id(k)
            if imgui.small_button(fa.ICON_FA_TIMES):
                app.dismiss([x])
            imgui.set_item_tooltip("Dismiss this one")
            imgui.pop_id()
            imgui.same_line()
            imgui.text_colored(NOTICE_COLOURS.get(x.level, WHITE),
                               f"{time.strftime('%H:%M:%S', time.localtime(x.ts))}  {short(x.message, 160)}")
            if len(x.message) > 160:
                imgui.set_item_tooltip(x.message)
        imgui.end_popup()


def show_menus(app: AppState) -> None:
    if imgui.begin_menu("File"):
        if imgui.menu_item_simple(f"{fa.ICON_FA_FOLDER_OPEN} Open workspace…###Open workspace", "Ctrl+O"):
            open_workspace_dialog(app)
        if imgui.begin_menu("Open recent"):
            if app.recent is None:
                load_recent(app)
                imgui.text_disabled("(reading…)")
            others = [ws for ws in app.recent or [] if Path(ws) != app.workspace.resolve()]
            if app.recent is not None and not others:
                imgui.text_disabled("(none yet)")
            for ws in others:
                if imgui.menu_item_simple(f"{ws}###recent-{ws}"):
                    open_workspace_dialog(app)
                    if app.modal.path_prompt is not None:
                        app.modal.path_prompt.path = ws
            imgui.end_menu()
        imgui.separator()
        if imgui.menu_item_simple(f"{fa.ICON_FA_DOWNLOAD} Export comms log (JSONL)…###Export comms log (JSONL)"):
            ask_export_comms(app)
        if imgui.menu_item_simple(f"{fa.ICON_FA_COG} Settings…", "Ctrl+,"):
            open_settings(app)
        imgui.separator()
        if imgui.menu_item_simple("Quit", "Ctrl+Q"):
            app.exit_requested = True
        imgui.end_menu()
    hello_imgui.show_view_menu(hello_imgui.get_runner_params())
    if imgui.begin_menu("Help"):
        if imgui.menu_item_simple("Keyboard shortcuts", "F1"):
            app.modal.request("shortcuts")
        if imgui.begin_menu("Activity log"):
            for ts, level, msg in app.activity[-30:]:
                imgui.text_colored(NOTICE_COLOURS.get(level, WHITE),
                                   f"{time.strftime('%H:%M:%S', time.localtime(ts))} {short(msg, 120)}")
            imgui.end_menu()
        imgui.end_menu()
    pending = len(app.approvals.waiting())
    if pending:
        imgui.push_style_color(imgui.Col_.text, AMBER)
        if imgui.menu_item_simple(f"{fa.ICON_FA_BELL} {pending} waiting for approval"):
            app.approvals.deferred = False
            app.modal.request("approval")
        imgui.pop_style_color()


def show_status(app: AppState) -> None:
    w = app.workers
    imgui.text(f"FPS {imgui.get_io().framerate:.0f}")
    imgui.same_line()
    imgui.text_disabled("|")
    imgui.same_line()
    imgui.text(f"Workers {w.get('active', 0)}/{w.get('cap', 0)}")
    imgui.same_line()
    imgui.text_disabled("|")
    imgui.same_line()
    imgui.text(f"Queued {w.get('queued', 0)}")
    imgui.same_line()
    imgui.text_disabled("|")
    imgui.same_line()
    pending = len(app.approvals.waiting())
    if pending:
        imgui.text_colored(AMBER, f"{fa.ICON_FA_BELL} {pending} approval{'s' if pending != 1 else ''} waiting")
    else:
        imgui.text_disabled("No approvals waiting")
    imgui.same_line()
    imgui.text_disabled("|")
    imgui.same_line()
    imgui.text(f"Cost {fmt_cost(app.usage.total.cost_usd)}")
    imgui.same_line()
    # every provider some tier runs on ("anthropic + ollama"), as the Epic panel lists them
    providers = " + ".join(app.engine.settings.providers_in_use())
    imgui.text_disabled(f"| {providers} · {app.workspace}")


def load_fonts(app: AppState) -> None:
    """The default font (DroidSans + Font Awesome icons), with DejaVu Sans merged in behind it
    for arrows, check marks, box drawing and the rest; DejaVu Sans Mono for streams and JSON."""
    hello_imgui.imgui_default_settings.load_default_font_with_font_awesome_icons()
    size = 15.0
    if not os.path.exists(DEJAVU_SANS):
        app.font_notice = (f"{DEJAVU_SANS} is missing: arrows and symbols in model output may show "
                           f"as '?'. Install fonts-dejavu-core.")
        return
    hello_imgui.load_font(DEJAVU_SANS, size,
                          hello_imgui.FontLoadingParams(merge_to_last_font=True, inside_assets=False))
    if os.path.exists(DEJAVU_MONO):
        app.mono_font = hello_imgui.load_font(DEJAVU_MONO, size - 1,
                                              hello_imgui.FontLoadingParams(inside_assets=False))
        hello_imgui.load_font(DEJAVU_SANS, size - 1,
                              hello_imgui.FontLoadingParams(merge_to_last_font=True, inside_assets=False))
        hello_imgui.load_font("fonts/fontawesome-webfont.ttf", size - 1,
                              hello_imgui.FontLoadingParams(merge_to_last_font=True))


def setup_style() -> None:
    hello_imgui.imgui_default_settings.setup_default_imgui_style()
    tweaked = hello_imgui.ImGuiTweakedTheme()
    tweaked.theme = hello_imgui.ImGuiTheme_.darcula_darker
    tweaked.tweaks.rounding = 4.0
    hello_imgui.apply_tweaked_theme(tweaked)
    # The theme's windows and popups are slightly translucent: a dialog, a menu or a drop-down
    # showed the table behind it through its text (issue 20, defect 1). Opaque backgrounds.
    style = imgui.get_style()
    for col in (imgui.Col_.window_bg, imgui.Col_.popup_bg, imgui.Col_.menu_bar_bg):
        c = style.color_(col)
        style.set_color_(col, ImVec4(c.x, c.y, c.z, 1.0))

