"""The keyboard shortcuts dialog (F1).

GUI thread only. State: none.
"""
from __future__ import annotations

from imgui_bundle import ImVec2, imgui

from gui.state import AppState
from gui.theme import BLUE, SHORTCUTS, em


def shortcuts_modal(app: AppState) -> None:
    imgui.set_next_window_pos(imgui.get_main_viewport().get_center(), imgui.Cond_.appearing, ImVec2(0.5, 0.5))
    opened, _ = imgui.begin_popup_modal("Keyboard shortcuts", None, imgui.WindowFlags_.always_auto_resize)
    if not opened:
        return
    if imgui.begin_table("keys", 2, imgui.TableFlags_.row_bg | imgui.TableFlags_.borders_inner_v):
        for k, what in SHORTCUTS:
            imgui.table_next_row()
            imgui.table_next_column()
            imgui.text_colored(BLUE, k)
            imgui.table_next_column()
            imgui.text(what)
        imgui.end_table()
    closing = not imgui.is_window_appearing() and (imgui.is_key_pressed(imgui.Key.f1, False)
                                                   or imgui.is_key_pressed(imgui.Key.escape, False))
    if imgui.button("Close", em(8, 0)) or closing:
        app.modal.current = None
        imgui.close_current_popup()
    imgui.end_popup()

