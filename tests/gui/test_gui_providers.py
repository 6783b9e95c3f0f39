"""Providers in the GUI (issue 21): Settings shows and changes the provider and model per tier,
each provider's endpoint and whether its key is present (by name, never a value), and lists
the models a local Ollama server has (a loopback fake of GET /api/tags that answers as
Ollama's API reference documents it), saying so when no server answers; the Epic panel shows
the same choices read-only and sends the person to Settings.

The real app on the null backend, driven by imgui's test engine. What reached the screen is
read with ImGui's own text log (`ScreenText`: every label, text and input field's content
rendered in a frame), so "no key value on screen" is checked on what was drawn.
"""
from __future__ import annotations

import time
import tomllib
from pathlib import Path

import pytest

from conftest import fast_settings
from gui_support import check, run_app_test, wait_until

import gui_2
from imgui_bundle import imgui
from tests.fakes.fake_openai import FakeOpenAI

pytestmark = pytest.mark.timeout(300)

OPENAI_KEY = "sk-proj-GUIKEYVALUE-abcdefghijklmnopqrstuvwxyz012345"
ANTHROPIC_KEY = "sk-ant-api03-GUIKEYVALUE-ZYXWVUTSRQPONMLKJIH9876543210"


class ScreenText:
    """Everything ImGui drew in one frame, as text: `grab(ctx)` renders a frame with ImGui's
    log on around each of the app's window functions (the menus, every dockable window, the
    dialogs; ImGui ends a log at the end of each root window, and appends to the file) and
    returns what was logged: every label, text and input field's content drawn."""

    def __init__(self, path: Path):
        self.path = path
        self.want = False

    def _logged(self, fn):
        def wrapped():
            if self.want:
                imgui.log_to_file(-1, str(self.path))
            try:
                if fn is not None:
                    fn()
            finally:
                if self.want:
                    imgui.log_finish()
        return wrapped

    def configure(self, rp) -> None:
        rp.callbacks.show_menus = self._logged(rp.callbacks.show_menus)
        rp.callbacks.show_status = self._logged(rp.callbacks.show_status)
        rp.callbacks.show_gui = self._logged(rp.callbacks.show_gui)
        windows = list(rp.docking_params.dockable_windows)
        for w in windows:
            w.gui_function = self._logged(w.gui_function)
        rp.docking_params.dockable_windows = windows
        last = rp.callbacks.before_imgui_render

        def done():
            if last is not None:
                last()
            self.want = False
        rp.callbacks.before_imgui_render = done

    def grab(self, ctx) -> str:
        self.path.unlink(missing_ok=True)
        self.want = True
        ctx.yield_(2)
        assert not self.want and self.path.exists(), "the frame's text was not captured"
        return self.path.read_text(encoding="utf-8", errors="replace")


def body(ctx) -> str:
    """The Settings dialog's scrolling body (a child window: its items are reached through
    its own name, Settings/body_<id>, with the "/" escaped)."""
    return f"//Settings\\/body_{ctx.get_id('//Settings/body'):08X}"


PROVIDERS = ["offline", "gemini", "openai", "ollama", "anthropic"]
TIER_CHOICES = ["default", *PROVIDERS]


def pick(ctx, combo: str, item: str, options: list[str] | None = None) -> None:
    """Open a combo and click one of its items. Its list is the popup window "##Combo_00";
    imgui.combo() pushes each item's index as an id ($$N), begin_combo() lists add none."""
    ctx.item_click(combo)
    ctx.yield_()
    ref = (f"//##Combo_00/{item}" if options is None
           else f"//##Combo_00/$${options.index(item)}/{item}")
    if not ctx.item_exists(ref):
        raise AssertionError(f"{combo!r} offers no {item!r} ({ref})")
    ctx.item_click(ref)
    ctx.yield_()


def make_app(workspace: Path, **kw):
    from multi_agent_conductor import ConductorEngine
    eng = ConductorEngine(workspace, fast_settings(**kw)).start()
    return eng, gui_2.AppState(eng)


def test_settings_per_tier_providers_ollama_models_and_keys_by_name(workspace, monkeypatch,
                                                                    tmp_path):
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
    screen = ScreenText(tmp_path / "screen.txt")
    seen: dict = {}
    with FakeOpenAI(api_key=None) as ollama:
        port = ollama.port
        monkeypatch.setenv("OLLAMA_HOST", f"127.0.0.1:{port}")
        eng, app = make_app(workspace)

        def t(ctx):
            seen["epic_before"] = screen.grab(ctx)
            ctx.key_press(imgui.Key.mod_ctrl | imgui.Key.comma)
            wait_until(ctx, lambda: app.modal.current == "settings", 5, "the Settings dialog")
            seen["listed_at_open"] = app.modal.ollama.state     # nothing uses ollama yet
            pick(ctx, body(ctx) + "/Default provider", "anthropic", PROVIDERS)
            pick(ctx, body(ctx) + "/tiers/##provider Tier 3", "ollama", TIER_CHOICES)
            wait_until(ctx, lambda: app.modal.ollama.state == "listed", 10,
                       "the Ollama server's models")
            pick(ctx, body(ctx) + "/tiers/##ollama models Tier 3", "llama3.2:3b")
            pick(ctx, body(ctx) + "/tiers/##provider Tier 4", "openai", TIER_CHOICES)
            ctx.item_click(body(ctx) + "/tiers/##model Tier 4")
            ctx.key_chars_replace("gpt-5-mini")
            ctx.yield_(2)
            # Escape in an open drop-down closes the drop-down, not the dialog and its edits
            ctx.item_click(body(ctx) + "/tiers/##provider Tier 2")
            ctx.yield_(2)
            ctx.key_press(imgui.Key.escape)
            ctx.yield_(3)
            seen["after_escape"] = (app.modal.current, (app.modal.settings_draft or {}).get(
                "tier_providers"))
            seen["dialog"] = screen.grab(ctx)
            seen["requests"] = [r.path for r in ollama.requests]
            ctx.item_click("//Settings/###Save")
            wait_until(ctx, lambda: app.modal.current is None and not app.busy("Save settings"),
                       5, "the saved settings")
            ctx.yield_(3)
            seen["epic_after"] = screen.grab(ctx)
            check(ctx, "//Epic/###Change providers")
            seen["epic_has_combo"] = ctx.item_exists("//Epic/Provider")
            ctx.item_click("//Epic/###Change providers")
            wait_until(ctx, lambda: app.modal.current == "settings", 5, "Settings from the Epic")
            seen["draft_tier3"] = (app.modal.settings_draft["tier_providers"].get("Tier 3"),
                                   app.modal.settings_draft["ollama"]["models"]["Tier 3"])
            ctx.item_click("//Settings/Cancel")
            ctx.yield_(2)

        try:
            run_app_test(app, t, configure=screen.configure)
        finally:
            eng.close()
            app.close()

    s = eng.settings
    assert seen["after_escape"] == ("settings", {"Tier 3": "ollama", "Tier 4": "openai"})
    assert seen["listed_at_open"] == ""
    assert seen["requests"] == ["/api/tags"]            # listed once, when Tier 3 chose ollama
    got = {t: (s.provider_for(t), s.model_for(t)) for t in ("Tier 1", "Tier 2", "Tier 3", "Tier 4")}
    assert got == {"Tier 1": ("anthropic", "claude-opus-4-5"),
                   "Tier 2": ("anthropic", "claude-sonnet-4-5"),
                   "Tier 3": ("ollama", "llama3.2:3b"), "Tier 4": ("openai", "gpt-5-mini")}
    cfg_text = (workspace / ".clutch" / "config.toml").read_text()
    cfg = tomllib.loads(cfg_text)
    assert cfg["tier_providers"] == {"Tier 3": "ollama", "Tier 4": "openai"}
    dialog = seen["dialog"]
    # keys by name, never a value (nor any 12 characters of one), on screen or on disk
    for key in (OPENAI_KEY, ANTHROPIC_KEY):
        for text in (dialog, seen["epic_before"], seen["epic_after"], cfg_text):
            assert not any(key[i:i + 12] in text for i in range(len(key) - 11))
    assert "key present (OPENAI_API_KEY)" in dialog
    assert "key present (ANTHROPIC_API_KEY)" in dialog
    assert "key missing: set GEMINI_API_KEY or GOOGLE_API_KEY before starting Clutch" in dialog
    assert "no key needed (local)" in dialog
    assert f"2 model(s) at http://127.0.0.1:{port}: llama3.2:3b, qwen2.5-coder:7b" in dialog
    assert f"empty: OLLAMA_HOST = 127.0.0.1:{port}" in dialog       # the host's hint
    # the Epic panel: the same choices, read-only, before and after
    assert "Tier 1 (Orchestrator)" in seen["epic_before"] and "offline" in seen["epic_before"]
    after = seen["epic_after"]
    for tier, (provider, model) in got.items():
        row = next((ln for ln in after.splitlines() if f"| {tier} (" in ln), "")
        assert [c.strip() for c in row.strip(" |").split("|")][1:] == [provider, model], \
            (tier, row, after)
    assert "| anthropic + ollama + openai · " in after      # the status bar: every provider
    assert "| offline · " in seen["epic_before"]
    assert not seen["epic_has_combo"]
    assert seen["draft_tier3"] == ("ollama", "llama3.2:3b")


def test_settings_says_when_no_ollama_server_answers(workspace, tmp_path):
    screen = ScreenText(tmp_path / "screen.txt")
    seen: dict = {}
    eng, app = make_app(workspace, provider="ollama")

    def t(ctx):
        ctx.key_press(imgui.Key.mod_ctrl | imgui.Key.comma)
        wait_until(ctx, lambda: app.modal.current == "settings", 5, "the Settings dialog")
        # every tier on ollama: listed at once, from the default host (nothing listens on :9
        # below; the default :11434 may or may not answer on a developer's machine)
        wait_until(ctx, lambda: app.modal.ollama.state in ("listed", "failed"), 10, "a listing")
        ctx.item_click(body(ctx) + "/Ollama host")
        ctx.key_chars_replace("http://127.0.0.1:9")
        ctx.item_click(body(ctx) + "/###List Ollama models")
        wait_until(ctx, lambda: app.modal.ollama.state == "failed"
                   and app.modal.ollama.host == "http://127.0.0.1:9", 10, "the failed listing")
        ctx.yield_(2)
        seen["dialog"] = screen.grab(ctx)
        seen["strip"] = [n.message for n in app.notices]
        # a base URL the SDK could not use is refused on Save, with the reason, as the API does
        ctx.item_click(body(ctx) + "/OpenAI base URL")
        ctx.key_chars_replace("api.example.com/v1")
        ctx.item_click("//Settings/###Save")
        ctx.yield_(2)
        seen["refused"] = (app.modal.current, list(app.modal.settings_errors))
        ctx.item_click(body(ctx) + "/OpenAI base URL")
        ctx.key_chars_replace("")
        ctx.item_click("//Settings/###Save")
        wait_until(ctx, lambda: app.modal.current is None and not app.busy("Save settings"), 5,
                   "the saved settings")

    try:
        run_app_test(app, t, configure=screen.configure)
    finally:
        eng.close()
        app.close()
    assert "no Ollama server answers at http://127.0.0.1:9" in seen["dialog"]
    assert "ollama serve" in seen["dialog"]
    # an answer shown where it was asked for, not an error on the notification strip
    assert not any("Ollama" in n for n in seen["strip"]), seen["strip"]
    assert seen["refused"] == ("settings", ["endpoints.openai: 'api.example.com/v1' must start "
                                            "with http:// or https://"])
    assert eng.settings.ollama.host == "http://127.0.0.1:9" and eng.settings.openai.base_url == ""


class SlowOllama(FakeOpenAI):
    """An Ollama server that takes its time to answer GET /api/tags."""
    delay_s = 1.5

    def route(self, h, req):
        if req.path == "/api/tags":
            time.sleep(self.delay_s)
        return super().route(h, req)


def test_the_ollama_listing_never_holds_up_a_frame(workspace, monkeypatch):
    seen: dict = {}
    with SlowOllama(api_key=None) as ollama:
        monkeypatch.setenv("OLLAMA_HOST", ollama.root)
        eng, app = make_app(workspace, provider="ollama")

        def t(ctx):
            ctx.key_press(imgui.Key.mod_ctrl | imgui.Key.comma)
            wait_until(ctx, lambda: app.modal.current == "settings", 5, "the Settings dialog")
            t0 = time.monotonic()
            ctx.yield_(20)                           # 20 frames while the server thinks
            seen["frames_s"] = time.monotonic() - t0
            seen["state_meanwhile"] = app.modal.ollama.state
            wait_until(ctx, lambda: app.modal.ollama.state == "listed", 10, "the listing")
            seen["models"] = [m["name"] for m in app.modal.ollama.models]
            ctx.item_click("//Settings/Cancel")

        try:
            run_app_test(app, t)
        finally:
            eng.close()
            app.close()
    assert seen["state_meanwhile"] == "listing"
    assert seen["frames_s"] < SlowOllama.delay_s / 2, seen
    assert seen["models"] == ["llama3.2:3b", "qwen2.5-coder:7b"]


def test_the_epic_panel_says_which_tiers_lack_a_key(workspace, tmp_path, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
    screen = ScreenText(tmp_path / "screen.txt")
    seen: dict = {}
    eng, app = make_app(workspace, provider="openai", tier_providers={"Tier 1": "anthropic",
                                                                     "Tier 4": "offline"})

    def t(ctx):
        ctx.yield_(3)
        seen["epic"] = screen.grab(ctx)

    try:
        run_app_test(app, t, configure=screen.configure)
    finally:
        eng.close()
        app.close()
    text = seen["epic"]
    assert ("openai (Tier 2, Tier 3): key missing: set OPENAI_API_KEY before starting Clutch"
            in text), text
    assert "anthropic (" not in text                # its key is set: no warning
    assert "| Tier 4 (QA) | offline | offline |" in text
    assert not any(ANTHROPIC_KEY[i:i + 12] in text for i in range(len(ANTHROPIC_KEY) - 11))


# ---------------------------------------------------------------------------------------------
# In a real window (Xvfb): screenshots of the Settings dialog's providers and the Epic panel's
# summary, with a mixed set-up (artifacts/screenshots/providers/*.png; look at them)
# ---------------------------------------------------------------------------------------------

def providers_scenario(out_dir: str, workspace: str) -> None:
    """One app per process (run as `python tests/gui/test_gui_providers.py scenario OUT WS`)."""
    import os
    from imgui_bundle.immapp import testing
    from models import with_providers
    out = Path(out_dir)
    with FakeOpenAI(api_key=None) as ollama:
        os.environ["OLLAMA_HOST"] = f"127.0.0.1:{ollama.port}"
        os.environ["ANTHROPIC_API_KEY"] = ANTHROPIC_KEY
        s = with_providers(fast_settings(), provider="anthropic",
                           tiers={"Tier 3": {"provider": "ollama", "model": "qwen2.5-coder:7b"},
                                  "Tier 4": {"provider": "openai"}})
        from multi_agent_conductor import ConductorEngine
        eng = ConductorEngine(workspace, s).start()
        app = gui_2.AppState(eng)
        shots = []

        def t(ctx):
            ctx.yield_(5)
            shots.append(str(out / "providers_epic.png"))
            testing.capture(ctx, shots[-1])
            ctx.item_click("//Epic/###Change providers")
            wait_until(ctx, lambda: app.modal.ollama.state == "listed", 10, "the listing")
            ctx.yield_(3)
            shots.append(str(out / "providers_settings.png"))
            testing.capture(ctx, shots[-1])
            pick(ctx, body(ctx) + "/tiers/##ollama models Tier 3", "llama3.2:3b")
            ctx.item_click(body(ctx) + "/tiers/##ollama models Tier 3")
            ctx.yield_(2)
            shots.append(str(out / "providers_ollama_models.png"))
            testing.capture(ctx, shots[-1])
            ctx.key_press(imgui.Key.escape)
            ctx.item_click("//Settings/Cancel")

        try:
            run_app_test(app, t, headless=False, msaa=0)
        finally:
            eng.close()
            app.close()
    (out / "providers_shots.json").write_text(__import__("json").dumps(shots))


@pytest.mark.xvfb
def test_providers_in_a_real_window(tmp_path):
    import json
    import os
    import subprocess
    import sys
    from gui_support import ARTIFACTS, ROOT, Xvfb
    ws = tmp_path / "ws"
    ws.mkdir()
    out = ARTIFACTS / "providers"        # test_gui_xvfb empties ARTIFACTS/*.png, not this
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.png"):
        old.unlink()
    x = None if os.environ.get("DISPLAY") else Xvfb("1600x1000x24")
    try:
        env = dict(os.environ)
        env.update(x.env if x else {})
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "tests"),
                                             str(ROOT / "tests" / "gui")])
        proc = subprocess.run([sys.executable, __file__, "scenario", str(out), str(ws)],
                              env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    finally:
        if x:
            x.close()
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    shots = json.loads((out / "providers_shots.json").read_text())
    assert [Path(p).name for p in shots] == ["providers_epic.png", "providers_settings.png",
                                             "providers_ollama_models.png"]
    for p in shots:
        assert Path(p).stat().st_size > 40_000, p      # a rendered window, not a blank frame


if __name__ == "__main__":
    import sys
    if len(sys.argv) == 4 and sys.argv[1] == "scenario":
        sys.path[:0] = [str(Path(__file__).resolve().parents[2])]
        providers_scenario(sys.argv[2], sys.argv[3])
    else:
        print("usage: test_gui_providers.py scenario OUT_DIR WORKSPACE", file=sys.stderr)
        raise SystemExit(2)
