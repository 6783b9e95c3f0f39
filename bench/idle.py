"""Idle: the app's CPU use in a real window when nothing happens, and with 8 workers streaming,
side by side with a bare hello_imgui window of the same size, in the same run.

Each window is its own process on one Xvfb server of our own (1600x1000, Mesa's llvmpipe:
software GL, so every rendered pixel is CPU time), started together and measured over the same
seconds:
- `bare`: a hello_imgui window with one line of text and every default (idling at 9 fps, MSAA 8);
- `bare-msaa0`: the same without multisampling (what the app renders with: ImGui anti-aliases
  its own lines and text, so MSAA buys it nothing);
- `app`: the real app as `clutch` runs it (`gui_2.runner_params(app)`, the offline engine, a
  track of 8 tickets on screen), nobody touching it;
- `app-stream`: the same app while 8 workers stream through the engine's real event path
  (`engine._emitter()`: put_threadsafe -> queue -> pump -> inbox -> request_refresh), 60 chunks
  of 24 characters per second each, the Streams window showing Tier 3.
CPU = the child's own user + system time (`os.times()`, every thread: glfw, llvmpipe's render
threads, the engine) over MEASURE seconds after WARMUP seconds (past hello_imgui's 3 s of full
speed after the window opens), as a percentage of one core; frames = frames drawn meanwhile.

Target: the idle app within 1.2x of the bare window (the default one; its MSAA-0 twin printed
beside it for a like-for-like view of what one frame costs).
"""
from __future__ import annotations

import _common  # noqa: F401  (sets sys.path: repository root first)

import json
import os
import subprocess
import sys
import threading
import time

from _common import ROOT, TempWorkspace, bench_settings, header, new_track, report, summary

sys.path.insert(2, str(ROOT / "tests" / "gui"))
from gui_support import Xvfb  # noqa: E402  (the GUI tests' own Xvfb server)

SIZE = (1600, 1000)
WARMUP = 5.0
MEASURE = 10.0
WORKERS = 8
TARGET_RATIO = 1.2


# ---------------------------------------------------------------------------------------------
# children: one window each
# ---------------------------------------------------------------------------------------------

def measure_window(rp, on_frame=None) -> dict:
    """Run the window; count frames and CPU between WARMUP and WARMUP + MEASURE seconds."""
    from imgui_bundle import hello_imgui
    t0 = time.monotonic()
    mark: dict = {}
    frames = [0]
    prev = rp.callbacks.pre_new_frame

    def pre_new_frame() -> None:
        now = time.monotonic() - t0
        if now >= WARMUP and "t" not in mark:
            mark["t"], mark["cpu"] = time.monotonic(), os.times()
        if "t" in mark:
            frames[0] += 1
        if now >= WARMUP + MEASURE:
            if "end" not in mark:
                mark["end"], mark["cpu_end"] = time.monotonic(), os.times()
            hello_imgui.get_runner_params().app_shall_exit = True
        if on_frame is not None:
            on_frame()
        if prev is not None:
            prev()
    rp.callbacks.pre_new_frame = pre_new_frame

    # an idle window gets no frame for up to 1/fps_idle s: a timer wakes it at the end
    def wake() -> None:
        while "end" not in mark:
            time.sleep(0.05)
            if time.monotonic() - t0 >= WARMUP + MEASURE:
                hello_imgui.request_refresh()
    threading.Thread(target=wake, daemon=True).start()
    return mark, frames


def result(mark: dict, frames: list[int], **extra) -> None:
    a, b = mark["cpu"], mark["cpu_end"]
    wall = mark["end"] - mark["t"]
    cpu = (b.user + b.system) - (a.user + a.system)
    print(json.dumps({"cpu_pct": 100.0 * cpu / wall, "fps": frames[0] / wall, **extra}), flush=True)


def child_bare(msaa: int | None) -> None:
    from imgui_bundle import hello_imgui, imgui
    rp = hello_imgui.RunnerParams()
    rp.app_window_params.window_title = "bare"
    rp.app_window_params.window_geometry.size = SIZE
    rp.ini_disable = True
    rp.callbacks.show_gui = lambda: imgui.text("Hello, world")
    if msaa is not None:
        o = hello_imgui.OpenGlOptions()
        o.anti_aliasing_samples = msaa
        rp.renderer_backend_options.open_gl_options = o
    mark, frames = measure_window(rp)
    hello_imgui.run(rp)
    result(mark, frames)


def child_app(stream: bool) -> None:
    import events as ev
    import gui_2
    from imgui_bundle import immapp
    from models import Ticket, stream_tier3
    from multi_agent_conductor import ConductorEngine

    with TempWorkspace() as ws:
        eng = ConductorEngine(ws, bench_settings(), auto_approve=True)
        eng.start()
        app = None
        stop = threading.Event()
        threads = []
        try:
            new_track(eng, [Ticket(id=f"T-{i:03d}", description=f"Implement part {i} of the service",
                                   target_files=[f"src/p{i}.py"]) for i in range(1, WORKERS + 1)])
            app = gui_2.AppState(eng)
            rp, addons = gui_2.runner_params(app)       # as gui_2.main runs it
            sids = [stream_tier3(f"T-{i:03d}") for i in range(1, WORKERS + 1)]
            emit = eng._emitter()

            def worker(sid: str) -> None:
                line = f"{sid} reads src/core.py and writes a patch for the failing test\n"
                i = 0
                while not stop.is_set():
                    emit(ev.StreamChunk(stream_id=sid, text=line[i % len(line):][:24]))
                    i += 24
                    time.sleep(1 / 60)

            def on_frame() -> None:
                if app.frame == 3:
                    app.focus_window("Streams")
                    if stream:
                        for sid in sids:
                            threads.append(eng._executor.submit(worker, sid))
            mark, frames = measure_window(rp, on_frame)
            immapp.run(rp, addons)
            stop.set()
            for f in threads:
                f.result(10)
            chars = sum(v.chars for s, v in app.streams.views.items() if s in sids)
            result(mark, frames, chars=chars)
        finally:
            stop.set()
            if app is not None:
                app.close()
            eng.close()


# ---------------------------------------------------------------------------------------------
# the parent: an Xvfb of our own, children side by side
# ---------------------------------------------------------------------------------------------

def side_by_side(display: str, kinds: list[str]) -> dict[str, dict]:
    env = dict(os.environ, DISPLAY=display)
    procs = {k: subprocess.Popen([sys.executable, __file__, "--child", k], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 cwd=_common.HERE)
             for k in kinds}
    out = {}
    for k, p in procs.items():
        so, se = p.communicate(timeout=120)
        lines = [ln for ln in so.splitlines() if ln.startswith("{")]
        if p.returncode != 0 or not lines:
            raise RuntimeError(f"idle child {k} failed (rc={p.returncode}): {se[-3000:]}")
        out[k] = json.loads(lines[-1])
    return out


def main() -> int:
    print(f"bench/idle.py: windows of {SIZE[0]}x{SIZE[1]} under Xvfb + llvmpipe, side by side; "
          f"{os.cpu_count()} CPUs; load {os.getloadavg()[0]:.2f}")
    x = Xvfb("1920x1200x24")      # the GUI tests' own (tests/gui/gui_support.py)
    try:
        header(f"idle: nobody touches the windows ({MEASURE:.0f} s after {WARMUP:.0f} s)")
        r = side_by_side(x.env["DISPLAY"], ["bare", "bare-msaa0", "app"])
        for k in ("bare", "bare-msaa0", "app"):
            report(f"{k}: CPU (% of a core)", r[k]["cpu_pct"], "%", fmt="{:.1f}",
                   note=f"{r[k]['fps']:.1f} frames/s")
        report("idle app / bare window", r["app"]["cpu_pct"] / r["bare"]["cpu_pct"], "x",
               target=TARGET_RATIO, fmt="{:.2f}")
        report("idle app / bare window without MSAA",
               r["app"]["cpu_pct"] / r["bare-msaa0"]["cpu_pct"], "x", fmt="{:.2f}")
        header(f"{WORKERS} workers streaming (60 chunks/s each) against the idle bare window")
        s = side_by_side(x.env["DISPLAY"], ["bare", "app-stream"])
        report("bare: CPU (% of a core)", s["bare"]["cpu_pct"], "%", fmt="{:.1f}",
               note=f"{s['bare']['fps']:.1f} frames/s")
        report("app, 8 workers streaming: CPU", s["app-stream"]["cpu_pct"], "%", fmt="{:.1f}",
               note=f"{s['app-stream']['fps']:.1f} frames/s, "
                    f"{s['app-stream']['chars']:,} characters shown")
        report("streaming app / bare window", s["app-stream"]["cpu_pct"] / s["bare"]["cpu_pct"],
               "x", fmt="{:.2f}")
    finally:
        x.close()
    return summary("bench/idle.py")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        kind = sys.argv[2]
        if kind == "bare":
            child_bare(None)
        elif kind == "bare-msaa0":
            child_bare(0)
        elif kind in ("app", "app-stream"):
            child_app(kind == "app-stream")
        else:
            raise SystemExit(f"unknown child {kind!r}")
    else:
        raise SystemExit(main())
