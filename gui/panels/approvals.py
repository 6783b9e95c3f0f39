"""The Approvals panel: what waits for the user, with Review next and Approve all.

GUI thread only. State: none of its own; reads `app.approvals`.
"""
from __future__ import annotations

import time

from imgui_bundle import ImVec2, imgui
from imgui_bundle import icons_fontawesome_4 as fa

from gui.state import AppState
from gui.theme import AMBER, GREEN, describe_error, em
from gui.widgets import long_text, panel_error
from models import ShellPayload


def panel_approvals(app: AppState) -> None:
    panel_error(app, "Approvals")
    pending = app.approvals.waiting()
    if not pending:
        imgui.text_colored(GREEN, f"{fa.ICON_FA_CHECK} Nothing waiting for you.")
        imgui.text_disabled("Spawns, file writes and shell commands ask here first.")
        return
    imgui.text_colored(AMBER, f"{fa.ICON_FA_BELL} {len(pending)} waiting")
    imgui.same_line()
    if imgui.button("Review next"):
        app.approvals.deferred = False
        app.modal.request("approval")
    if len(pending) > 1:
        imgui.same_line()
    if len(pending) > 1 and imgui.button(f"Approve all {len(pending)} pending###panel-approve-all"):
        try:
            n = app.engine.approve_all()
            app.notify("info", f"approved {n} pending request(s), once")
        except Exception as e:  # noqa: BLE001
            app.notify("error", f"Approve all: {describe_error(e)}", "Approvals")
        for r in pending:
            app.approvals.answered.add(r.id)
        app.approvals.pending = []
        app.approvals.dirty = True
    flags = imgui.TableFlags_.row_bg | imgui.TableFlags_.scroll_y | imgui.TableFlags_.borders_inner_v
    if imgui.begin_table("approvals", 3, flags, ImVec2(-1, -1)):
        imgui.table_setup_column("Kind", imgui.TableColumnFlags_.width_fixed, em(4).x)
        imgui.table_setup_column("Request", imgui.TableColumnFlags_.width_stretch)
        imgui.table_setup_column("Waiting", imgui.TableColumnFlags_.width_fixed, em(4).x)
        imgui.table_headers_row()
        now = time.time()
        for r in pending:
            imgui.table_next_row()
            imgui.table_next_column()
            imgui.text(r.kind)
            imgui.table_next_column()
            command = r.payload.command if isinstance(r.payload, ShellPayload) else ""
            long_text(r.title, f"request-{r.id}", max_lines=2, more=command)
            imgui.table_next_column()
            imgui.text(f"{int(now - r.created_at)} s")
        imgui.end_table()

