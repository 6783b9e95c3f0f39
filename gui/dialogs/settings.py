"""The Settings dialog: a draft of every setting, validated on Save, saved off the GUI thread.
Its providers section (provider and model per tier, endpoints, keys present, the Ollama
server's models) is `gui.dialogs.settings_providers`.

GUI thread only (the save runs on the background pool). State: `app.modal.settings_draft`,
`app.modal.settings_errors`.
"""
from __future__ import annotations

import json
from typing import Any

from imgui_bundle import ImVec2, imgui
from imgui_bundle import icons_fontawesome_4 as fa
from pydantic import ValidationError

from gui.dialogs.settings_providers import open_settings, providers_section
from gui.panels.epic import apply_settings
from gui.panels.tickets import split_list
from gui.state import AppState
from gui.theme import RED, em, validation_messages
from gui.widgets import begin_sized_modal, help_marker
from models import Settings, endpoint_problems

__all__ = ("open_settings", "settings_modal")


def settings_modal(app: AppState) -> None:
    def discard() -> None:
        app.modal.settings_draft = None
    if not begin_sized_modal("Settings", 58, 46, 0.9, on_close=discard):
        return
    # Escape closes the dialog without saving (issue 20, defect 7), unless it is editing a
    # field, where Escape reverts that field first, or a drop-down is open, which it closes
    escape = (imgui.is_key_pressed(imgui.Key.escape, False) and not imgui.is_any_item_active()
              and not app.modal.settings_popup_above)
    d = app.modal.settings_draft
    if d is None:
        app.modal.current = None
        imgui.close_current_popup()
        imgui.end_popup()
        return
    footer = imgui.get_frame_height_with_spacing() * (1.4 + len(app.modal.settings_errors))
    imgui.begin_child("body", ImVec2(0, -footer))
    imgui.push_item_width(em(16).x)
    providers_section(app, d)
    imgui.separator_text("Prices (USD per million tokens)")
    if imgui.begin_table("prices", 4, imgui.TableFlags_.borders_inner_v | imgui.TableFlags_.row_bg):
        for c in ("Model", "Input", "Output", "Cached"):
            imgui.table_setup_column(c)
        imgui.table_headers_row()
        for model, price in d["prices"].items():
            imgui.push_id(model)
            imgui.table_next_row()
            imgui.table_next_column()
            imgui.align_text_to_frame_padding()
            imgui.text(model)
            for k in ("input", "output", "cached"):
                imgui.table_next_column()
                imgui.set_next_item_width(-1)
                _c, price[k] = imgui.input_double(f"##{k}", float(price.get(k, 0.0)), 0.0, 0.0, "%.3f")
            imgui.pop_id()
        imgui.end_table()
    imgui.separator_text("Budgets")
    _c, d["budget_usd"] = imgui.input_double("Budget (USD)", float(d["budget_usd"]), 0.5, 5.0, "%.2f")
    _c, d["budget_tokens"] = imgui.input_int("Budget (tokens)", int(d["budget_tokens"]), 10000, 100000)
    imgui.text_disabled("0 = no limit. Reaching a budget pauses and asks.")
    imgui.separator_text("Approvals")
    a = d["approvals"]
    for key, label in (("spawn", "Worker spawns"), ("read_tools", "Read-only tools"),
                       ("write_tools", "File writes"), ("shell", "Shell commands")):
        opts = ["ask", "auto"]
        i = opts.index(a[key]) if a[key] in opts else 0
        _c, i = imgui.combo(label, i, opts)
        a[key] = opts[i]
    _c, a["shell_allowlist"] = imgui.input_text("Shell allowlist", a["shell_allowlist"])
    help_marker("First words of commands that run without asking, comma separated (e.g. ls, cat)")
    imgui.separator_text("Run")
    _c, d["max_workers"] = imgui.input_int("Max workers", int(d["max_workers"]))
    _c, d["max_tool_rounds"] = imgui.input_int("Max tool rounds", int(d["max_tool_rounds"]))
    _c, d["tier2_read_rounds"] = imgui.input_int("Tier 2 reading rounds", int(d["tier2_read_rounds"]))
    help_marker("Before planning a track, Tier 2 may read files (read-only tools) for this many "
                "rounds; 0 = it plans from the repository map alone")
    _c, d["step_mode"] = imgui.checkbox("Step mode", bool(d["step_mode"]))
    _c, d["git_commits"] = imgui.checkbox("Git commit per ticket", bool(d["git_commits"]))
    _c, d["offline_pace_s"] = imgui.input_double("Offline pace (s per chunk)", float(d["offline_pace_s"]),
                                                 0.01, 0.1, "%.3f")
    imgui.pop_item_width()
    imgui.end_child()
    app.modal.settings_popup_above = imgui.is_popup_open("", imgui.PopupFlags_.any_popup_id)
    for err in app.modal.settings_errors:
        imgui.text_colored(RED, f"{fa.ICON_FA_TIMES_CIRCLE} {err}")
    saving = app.busy("Save settings")
    imgui.begin_disabled(saving)
    if imgui.button(f"{fa.ICON_FA_SAVE} Save###Save", em(8, 0)):
        data = json.loads(json.dumps(d))
        data["approvals"]["shell_allowlist"] = split_list(d["approvals"]["shell_allowlist"])
        try:
            s = Settings.model_validate(data)
        except ValidationError as e:
            app.modal.settings_errors = validation_messages(e)
        else:
            app.modal.settings_errors = endpoint_problems(s)
        if not app.modal.settings_errors:
            def saved(_r: Any) -> None:
                app.notify("info", "settings saved to .clutch/config.toml")
                app.workers["cap"] = s.max_workers
            apply_settings(app, s, on_done=saved)
            app.modal.settings_draft = None
    imgui.end_disabled()
    imgui.same_line()
    if imgui.button("Cancel", em(8, 0)):
        app.modal.settings_draft = None
    if escape:
        app.modal.settings_draft = None
    if app.modal.settings_draft is None:
        app.modal.current = None
        imgui.close_current_popup()
    imgui.end_popup()

