"""The Epic panel: the epic text, Plan epic (Tier 1), what the next run uses (each tier's
provider and model, read-only: Settings is where they change), and the run settings most often
changed.

GUI thread only. State: `app.epic_text`, `app.planning` (and settings drafts it sends).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from imgui_bundle import ImVec2, imgui
from imgui_bundle import icons_fontawesome_4 as fa
from pydantic import ValidationError

from gui.dialogs.settings_providers import open_settings
from gui.state import AppState
from gui.theme import BLUE, GREY, RED, WRAP, em, validation_messages
from gui.widgets import panel_error, quick_ctrl_enter
from models import Settings, key_status, tier_choices


def plan_epic(app: AppState) -> None:
    if app.busy("Plan epic"):
        return
    epic = app.epic_text

    def done(plan: Any) -> None:
        app.planning = False

    def failed(_e: BaseException) -> None:
        app.planning = False

    # an empty or huge epic is refused at once (EngineError): shown, nothing in flight
    if not app.command("Plan epic", app.engine.plan_epic, epic, panel="Epic", on_done=done,
                       on_error=failed):
        return
    app.planning = True
    app.streams.tab, app.streams.tab_request = "Tier 1", "Tier 1"


def apply_settings(app: AppState, settings: Settings, label: str = "Save settings",
                   panel: str = "", on_done: Callable[[Any], None] | None = None) -> None:
    app.background(label, app.engine.update_settings, settings, panel=panel, on_done=on_done)


def quick_setting(app: AppState, **update: Any) -> None:
    """Apply one setting from the Epic panel (validated; saved to config.toml)."""
    data = app.engine.settings.model_dump()
    for k, v in update.items():
        data[k] = v
    try:
        s = Settings.model_validate(data)
    except ValidationError as e:
        app.notify("error", "Settings: " + "; ".join(validation_messages(e)), "Epic")
        return
    app.workers["cap"] = s.max_workers
    apply_settings(app, s, "Apply setting", "Epic")


def provider_summary(app: AppState) -> None:
    """What the next run uses, per tier, read-only: the settings the engine runs on (the same
    choices the Settings dialog edits, the only place they change), and a key a tier needs
    that the environment lacks."""
    s = app.engine.settings
    imgui.separator_text("Providers and models")
    choices = tier_choices(s)
    flags = imgui.TableFlags_.sizing_fixed_fit | imgui.TableFlags_.row_bg
    if imgui.begin_table("next run", 3, flags):
        for c in choices:
            imgui.table_next_row()
            imgui.table_next_column()
            imgui.text(f"{c.tier} ({c.role})")
            imgui.table_next_column()
            imgui.text_colored(BLUE if c.own_provider else GREY, c.provider)
            imgui.table_next_column()
            imgui.text(c.model)
        imgui.end_table()
    for provider in s.providers_in_use():
        k = key_status(provider)
        if not k.ok:
            tiers = ", ".join(c.tier for c in choices if c.provider == provider)
            imgui.push_style_color(imgui.Col_.text, RED)
            imgui.text_wrapped(f"{provider} ({tiers}): {k.describe()}")
            imgui.pop_style_color()
    if imgui.button(f"{fa.ICON_FA_COG} Change in Settings…###Change providers"):
        open_settings(app)
    imgui.same_line()
    imgui.text_disabled("(Ctrl+,) the one place they are changed")


def panel_epic(app: AppState) -> None:
    panel_error(app, "Epic")
    imgui.text("Describe what you want built (a sentence or a paragraph):")
    flags = imgui.InputTextFlags_.enter_returns_true | WRAP
    avail = imgui.get_content_region_avail()
    h = max(em(0, 5).y, min(avail.y * 0.35, em(0, 12).y))
    before = app.epic_text
    entered, app.epic_text = imgui.input_text_multiline("##epic", app.epic_text, ImVec2(-1, h), flags)
    epic_active = imgui.is_item_active() or imgui.is_item_focused()
    ctrl_enter = entered and imgui.get_io().key_ctrl
    if epic_active and quick_ctrl_enter():
        # Ctrl released within the frame Enter went down: ImGui saw a plain Enter and put a
        # newline in; the person pressed Ctrl+Enter (issue 20, defect 8). Take it back, plan.
        if app.epic_text != before:
            app.epic_text = before
            # the box's own copy still holds the newline: let it go, so that it is read anew
            # from app.epic_text when the person clicks into it again
            imgui.internal.clear_active_id()
        ctrl_enter = True
    if not epic_active and imgui.is_window_focused(imgui.FocusedFlags_.root_and_child_windows):
        ctrl_enter = ctrl_enter or imgui.shortcut(imgui.Key.mod_ctrl | imgui.Key.enter)
    planning = app.busy("Plan epic")
    imgui.begin_disabled(planning)
    clicked = imgui.button(f"{fa.ICON_FA_SITEMAP} Plan epic (Tier 1)###Plan epic (Tier 1)")
    imgui.end_disabled()
    imgui.set_item_tooltip("Ctrl+Enter in the epic box")
    if (clicked or ctrl_enter) and not planning:
        plan_epic(app)
    imgui.same_line()
    if planning:
        imgui.text_colored(BLUE, f"{fa.ICON_FA_SPINNER} Tier 1 is planning…")
    else:
        imgui.text_disabled(f"{len(app.epic_text):,} characters")

    s = app.engine.settings
    imgui.spacing()
    provider_summary(app)
    imgui.separator_text("Run settings")
    imgui.push_item_width(em(11).x)
    changed, step = imgui.checkbox("Step mode (ask before every worker step)", s.step_mode)
    if changed:
        quick_setting(app, step_mode=step)
    _c, workers = imgui.slider_int("Max workers", s.max_workers, 1, 16)
    if imgui.is_item_deactivated_after_edit():
        quick_setting(app, max_workers=workers)
    _c, budget = imgui.input_double("Budget (USD, 0 = none)", s.budget_usd, 0.5, 5.0, "%.2f")
    if imgui.is_item_deactivated_after_edit():
        quick_setting(app, budget_usd=max(0.0, budget))
    imgui.pop_item_width()
    if app.busy("Apply setting"):
        imgui.text_disabled("Saving…")

