"""Take the README's screenshots: the app mid-run, at 1600x1000 (docs/screenshot.png) and at
1280x720 (docs/screenshot-1280x720.png).

    .venv/bin/python docs/screenshots.py            # needs Xvfb (make install)

Each size runs in its own process on an Xvfb of its own: the real app (gui_2.runner_params,
no MSAA as the app draws), the offline engine on a throw-away workspace; the test engine types
an epic, accepts the plan, plans and starts the first track, approves the first spawn and the
first file write through their dialogs, then lets the workers run (approvals set to auto) and
captures the window while workers of both tracks stream, each in its own worktree of a small
git repository.

Threads: the main thread of each process (the window); the engine's own threads. State: none
beyond the throw-away workspace.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIZES = {(1600, 1000): ROOT / "docs" / "screenshot.png",
         (1280, 720): ROOT / "docs" / "screenshot-1280x720.png"}
EPIC = "Add a /health endpoint to the HTTP server: version, uptime and status, with tests and docs"


def demo_repository(ws: Path) -> None:
    """A small git repository: an HTTP server, its test, a README (each ticket gets a worktree)."""
    (ws / "README.md").write_text("# demo service\n\nA tiny HTTP service.\n")
    (ws / "server.py").write_text(
        "from http.server import BaseHTTPRequestHandler, HTTPServer\n\n\n"
        "class Handler(BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n        self.send_response(200)\n        self.end_headers()\n"
        "        self.wfile.write(b'hello')\n\n\n"
        "def serve(port: int = 8000) -> None:\n    HTTPServer(('', port), Handler).serve_forever()\n")
    (ws / "tests").mkdir()
    (ws / "tests" / "test_server.py").write_text("import server\n\n\ndef test_handler():\n"
                                               "    assert server.Handler\n")
    env = {**os.environ, "GIT_AUTHOR_NAME": "demo", "GIT_AUTHOR_EMAIL": "demo@example.com",
           "GIT_COMMITTER_NAME": "demo", "GIT_COMMITTER_EMAIL": "demo@example.com"}
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "demo service"]):
        subprocess.run(["git", "-C", str(ws), *args], check=True, env=env, capture_output=True)


def child(width: int, height: int, out: str) -> None:
    sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "gui")]
    import gui_2
    from conftest import fast_settings
    from gui_support import run_app_test, wait_until
    from imgui_bundle import imgui
    from imgui_bundle.immapp import testing
    from multi_agent_conductor import ConductorEngine

    ws = Path(tempfile.mkdtemp(prefix="clutch-shot-"))
    demo_repository(ws)
    eng = ConductorEngine(ws, fast_settings(offline_pace_s=0.0, max_workers=3,
                                            git_commits=True)).start()
    app = gui_2.AppState(eng)

    def t(ctx) -> None:
        ctx.yield_(3)
        ctx.item_click("//Epic/##epic")
        ctx.key_chars(EPIC)
        ctx.key_press(imgui.Key.mod_ctrl | imgui.Key.enter)
        wait_until(ctx, lambda: app.modal.current == "proposal", 30, "the proposal")
        ctx.item_click("//Proposed tracks/###Accept")
        wait_until(ctx, lambda: app.tickets.selected_track and not app.busy("Accept tracks"), 10, "a track")
        tid = app.tickets.selected_track
        ctx.item_click("//Tracks/###Plan tickets (Tier 2)")
        wait_until(ctx, lambda: (t := app.tickets.track_by_id(tid)) and t.tickets, 30, "tickets")
        for other in app.tickets.tracks:       # the docs track too, so workers run side by side
            if other.id != tid:
                eng.plan_track(other.id).result(30)
        ctx.item_click("//Tracks/###Start")
        wait_until(ctx, lambda: app.approvals.edit and app.approvals.edit.request.kind == "spawn", 20, "a spawn")
        ctx.item_click("//Approval/###Approve")
        wait_until(ctx, lambda: app.approvals.edit and app.approvals.edit.request.kind == "tool", 20, "a write")
        s = eng.settings
        gui_2.apply_settings(app, s.model_copy(update={"offline_pace_s": 0.12, "approvals": s.approvals.model_copy(
            update={"spawn": "auto", "write_tools": "auto", "shell": "auto"})}))
        ctx.item_click("//Approval/###Approve")
        for other in app.tickets.tracks:
            if other.id != tid:
                eng.start_track(other.id)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if app.modal.current == "approval" and app.approvals.waiting():
                ctx.item_click("//Approval/###Approve")
            streaming = [v for v in app.streams.views.values()
                         if v.state == "streaming" and v.stream_id.startswith("Tier 3")]
            if len(streaming) >= 2 and app.modal.current is None:
                break
            time.sleep(0.02)
            ctx.yield_()
        deadline = time.monotonic() + 1.5      # let the streams fill a little
        while time.monotonic() < deadline:
            time.sleep(0.02)
            ctx.yield_()
        ctx.yield_(2)
        testing.capture(ctx, out)

    try:
        run_app_test(app, t, headless=False, msaa=0, size=(width, height))
    finally:
        eng.close()
        app.close()
        shutil.rmtree(ws, ignore_errors=True)


def main() -> int:
    sys.path[:0] = [str(ROOT / "tests" / "gui")]
    from gui_support import Xvfb
    x = Xvfb("1920x1200x24")
    try:
        for (w, h), out in SIZES.items():
            p = subprocess.run([sys.executable, __file__, "--child", str(w), str(h), str(out)],
                               env={**os.environ, **x.env}, capture_output=True,
                               text=True, timeout=180)
            if p.returncode != 0:
                print(p.stdout[-3000:], p.stderr[-3000:], file=sys.stderr)
                return 1
            print(f"wrote {out} ({w}x{h})")
    finally:
        x.close()
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        child(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
    else:
        raise SystemExit(main())
