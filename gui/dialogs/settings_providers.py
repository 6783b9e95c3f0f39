"""The Settings dialog's providers section, and opening the dialog: the default provider, each
tier's provider and model, each provider's endpoint and whether its key is in the environment
(by variable name: a key's value is never read into the GUI, let alone shown), and the models
a local Ollama server has (GET /api/tags through `engine.ollama_models`, on the background
pool, never in the frame; a clear message when no server answers).

This is the one place the providers and models are changed; the Epic panel shows the same
choices read-only (`gui.panels.epic.provider_summary`) and sends the person here.

GUI thread only. State: the draft's provider fields (`app.modal.settings_draft`, a dump of
the settings with each tier's own model folded into its provider's table, so that a tier's
model is edited in one place) and `app.modal.ollama` (the listing); the listing's result
comes back through `AppState.ops`.
"""
from __future__ import annotations

from typing import Any

from imgui_bundle import imgui
from imgui_bundle import icons_fontawesome_4 as fa

from gui.state import AppState
from gui.theme import GREEN, GREY, RED, em
from gui.widgets import help_marker
from models import (DEFAULT_MODELS, PROVIDER_NAMES, PROVIDER_URL_FIELDS, TIER_ROLES, TIERS, endpoint_note,
                    folded, key_status)
from multi_agent_conductor import ProviderError

DEFAULT = "default"
ENDPOINT_LABELS = {"gemini": "Gemini base URL", "openai": "OpenAI base URL",
                   "anthropic": "Anthropic base URL", "ollama": "Ollama host"}
LIST_LABEL = "List Ollama models"


def open_settings(app: AppState) -> None:
    d = folded(app.engine.settings).model_dump()
    d["approvals"]["shell_allowlist"] = ", ".join(d["approvals"].get("shell_allowlist", []))
    app.modal.settings_draft = d
    app.modal.settings_errors = []
    app.modal.request("settings")
    if "ollama" in used_providers(d) and app.modal.ollama.state in ("", "failed"):
        list_ollama(app, d["ollama"]["host"])


# -- the draft -------------------------------------------------------------------------------
def provider_of(d: dict[str, Any], tier: str) -> str:
    return d["tier_providers"].get(tier) or d["provider"]


def used_providers(d: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for tier in TIERS:
        p = provider_of(d, tier)
        if p not in out:
            out.append(p)
    return out


def model_table(d: dict[str, Any], provider: str) -> dict[str, str]:
    """The draft's model-per-tier table of a provider (Gemini's is the top-level `models`)."""
    return d["models"] if provider == "gemini" else d[provider]["models"]


def set_tier_provider(d: dict[str, Any], tier: str, choice: str) -> None:
    before = provider_of(d, tier)
    if choice == DEFAULT:
        d["tier_providers"].pop(tier, None)
    else:
        d["tier_providers"][tier] = choice
    if provider_of(d, tier) != before:
        d["tier_models"].pop(tier, None)    # it named a model of the provider it had


# -- the Ollama listing ----------------------------------------------------------------------
def _fetch(engine: Any, host: str) -> tuple[bool, str, list[dict[str, Any]]]:
    """(listed, message, models): runs on the background pool. No server there is an answer
    the dialog shows (not an error for the notification strip)."""
    try:
        root, models = engine.ollama_models(host)
    except ProviderError as e:
        return False, str(e), []
    if not models:
        return True, (f"the Ollama server at {root} has no models yet: `ollama pull "
                      f"qwen2.5-coder:7b`"), []
    return True, f"{len(models)} model(s) at {root}", models


def list_ollama(app: AppState, host: str) -> None:
    o = app.modal.ollama
    if o.state == "listing":
        return
    o.state, o.host, o.message = "listing", host, ""

    def done(result: tuple[bool, str, list[dict[str, Any]]]) -> None:
        ok, o.message, o.models = result
        o.state = "listed" if ok else "failed"

    def failed(e: BaseException) -> None:   # a bug, not "no server": also on the strip
        o.state, o.message, o.models = "failed", f"{type(e).__name__}: {e}", []

    app.track_op(LIST_LABEL, app.bg.submit(_fetch, app.engine, host), "", done, failed)


# -- drawing ---------------------------------------------------------------------------------
def providers_section(app: AppState, d: dict[str, Any]) -> None:
    imgui.separator_text("Providers and models")
    imgui.text_disabled("What the next run uses, per tier. The Epic panel shows the same; "
                        "agents already running keep theirs.")
    names = list(PROVIDER_NAMES)
    idx = names.index(d["provider"]) if d["provider"] in names else 0
    _c, idx = imgui.combo("Default provider", idx, names)
    d["provider"] = names[idx]
    help_marker("Every tier's provider, unless the tier has its own below")
    flags = imgui.TableFlags_.borders_inner_v | imgui.TableFlags_.row_bg | \
        imgui.TableFlags_.sizing_stretch_prop
    if imgui.begin_table("tiers", 3, flags):
        imgui.table_setup_column("Tier", imgui.TableColumnFlags_.width_fixed, em(9).x)
        imgui.table_setup_column("Provider", imgui.TableColumnFlags_.width_fixed, em(10).x)
        imgui.table_setup_column("Model")
        imgui.table_headers_row()
        for tier in TIERS:
            _tier_row(app, d, tier)
        imgui.end_table()
    _endpoints(app, d)


def _tier_row(app: AppState, d: dict[str, Any], tier: str) -> None:
    imgui.table_next_row()
    imgui.table_next_column()
    imgui.align_text_to_frame_padding()
    imgui.text(f"{tier} ({TIER_ROLES[tier]})")
    imgui.table_next_column()
    options = [f"{DEFAULT} ({d['provider']})", *PROVIDER_NAMES]
    own = d["tier_providers"].get(tier)
    i = 1 + list(PROVIDER_NAMES).index(own) if own in PROVIDER_NAMES else 0
    imgui.set_next_item_width(-1)
    changed, i = imgui.combo(f"##provider {tier}", i, options)
    if changed:
        set_tier_provider(d, tier, DEFAULT if i == 0 else PROVIDER_NAMES[i - 1])
        if provider_of(d, tier) == "ollama" and app.modal.ollama.state in ("", "failed"):
            list_ollama(app, d["ollama"]["host"])
    imgui.table_next_column()
    p = provider_of(d, tier)
    if p == "offline":
        imgui.align_text_to_frame_padding()
        imgui.text_disabled("offline (the embedded model: no key, no network, free)")
        return
    table = model_table(d, p)
    picker = p == "ollama"
    imgui.set_next_item_width(-(imgui.get_frame_height() + imgui.get_style().item_spacing.x)
                              if picker else -1)
    hint = f"empty: {DEFAULT_MODELS.get(p, {}).get(tier, 'the default')}"
    _c, table[tier] = imgui.input_text_with_hint(f"##model {tier}", hint, table.get(tier, ""))
    if picker:
        imgui.same_line()
        _ollama_picker(app, table, tier)


def _ollama_picker(app: AppState, table: dict[str, str], tier: str) -> None:
    """A drop-down of the models the server has, beside the model's text field."""
    o = app.modal.ollama
    if imgui.begin_combo(f"##ollama models {tier}", "", imgui.ComboFlags_.no_preview
                         | imgui.ComboFlags_.popup_align_left):
        if o.state == "listing":
            imgui.text_disabled("Listing the server's models…")
        elif not o.models:
            imgui.text_colored(RED if o.state == "failed" else GREY,
                               o.message or "not listed yet: see the Ollama host below")
        for m in o.models:
            name = str(m.get("name") or "")
            if imgui.selectable(name, table.get(tier) == name)[0]:
                table[tier] = name
            detail = " ".join(x for x in (m.get("parameter_size"), m.get("quantization")) if x)
            if detail:
                imgui.same_line()
                imgui.text_disabled(detail)
        imgui.end_combo()
    imgui.set_item_tooltip("The models the Ollama server has")


def _endpoints(app: AppState, d: dict[str, Any]) -> None:
    imgui.separator_text("Endpoints and keys")
    imgui.text_disabled("Keys come from the environment only; Clutch never stores or shows "
                        "them (only the names of the variables that hold them).")
    used = used_providers(d)
    for p in ("gemini", "openai", "anthropic", "ollama"):
        k = key_status(p)
        imgui.align_text_to_frame_padding()
        imgui.text(p)
        imgui.same_line(em(6).x)
        colour = GREEN if k.needed and k.ok else (RED if p in used and not k.ok else GREY)
        imgui.text_colored(colour, k.describe() + ("" if p in used else " · not in use"))
        section, field = PROVIDER_URL_FIELDS[p]
        imgui.set_next_item_width(-em(9).x)
        _c, d[section][field] = imgui.input_text_with_hint(ENDPOINT_LABELS[p],
                                                           endpoint_note(p), d[section][field])
        if p == "ollama":
            _ollama_status(app, d)


def _ollama_status(app: AppState, d: dict[str, Any]) -> None:
    o = app.modal.ollama
    listing = o.state == "listing"
    imgui.begin_disabled(listing)
    if imgui.button(f"{fa.ICON_FA_SYNC} {LIST_LABEL}###{LIST_LABEL}"):
        list_ollama(app, d["ollama"]["host"])
    imgui.end_disabled()
    imgui.same_line()
    if listing:
        imgui.text_colored(GREY, f"{fa.ICON_FA_SPINNER} asking {o.host or 'the default host'}…")
    elif o.state == "failed":
        imgui.push_style_color(imgui.Col_.text, RED)
        imgui.text_wrapped(o.message)
        imgui.pop_style_color()
    elif o.state == "listed":
        names = ", ".join(str(m.get("name")) for m in o.models)
        imgui.text_wrapped(o.message + (f": {names}" if names else ""))
    else:
        imgui.text_disabled("not listed yet")
