"""Frames: CPU time per frame of the real panels, 8 workers streaming, 10 MB of text across the
streams against the same panels at 10 KB.

Each configuration runs in its own process (the null backend keeps ImGui state per process):
- a real ConductorEngine (offline provider) with one track of 8 tickets T-001..T-008, and the
  real app: `gui_2.AppState(engine)`, `gui_2.runner_params(app, headless=True)` (hello_imgui's
  null platform and renderer: the panels run, nothing is drawn), `immapp.run(rp, addons)` as
  `gui_2.main` does;
- before the first frame, the 8 worker streams "Tier 3 (Worker): T-00k" are filled through
  `gui_2.apply_event` with StreamChunks of realistic text (lines of 10-220 characters) totalling
  10 MB (1.25 MB each) or 10 KB;
- while frames run, 8 executor threads keep streaming through the engine's real event path
  (`engine._emitter()`: put_threadsafe -> queue -> pump -> inbox), 60 chunks of 24 characters
  per second each; the GUI drains the inbox each frame as always;
- the Streams window is focused (its Tier 3 tab shows the stream that is talking), so the
  stream text view is on screen the whole time.
CPU time per frame = the GUI thread's `time.thread_time()` between consecutive `pre_new_frame`
callbacks (all of a frame's Python and ImGui work, nothing of the other threads), over 600
frames after 60 warm-up frames, the frames paced at 60 Hz as in a real window.

Targets: median <= 4 ms, p99 <= 16.7 ms (10 MB); ratio of medians 10 MB / 10 KB <= 1.5.
"""
from __future__ import annotations

import _common  # noqa: F401  (sets sys.path: repository root first)

import json
import os
import random
import subprocess
import sys
import threading
import time

from _common import HERE, TempWorkspace, bench_settings, header, median, new_track, percentile, \
    report, summary

WARMUP = 60
FRAMES = 600
STREAMS = 8
TARGET_MED_MS = 4.0
TARGET_P99_MS = 16.7
TARGET_RATIO = 1.5


def text_block(rng: random.Random, n_chars: int) -> str:
    words = ("the worker reads src/core.py and writes a patch for the failing test; "
             "def compute(x): return x * 2  # edge cases checked next, then pytest -q "
             "Traceback (most recent call last): File \"app.py\", line 42, in main").split()
    out, size = [], 0
    while size < n_chars:
        line_len = rng.choice((10, 40, 80, 80, 120, 220))
        line, ln = [], 0
        while ln < line_len:
            w = rng.choice(words)
            line.append(w)
            ln += len(w) + 1
        s = " ".join(line) + "\n"
        out.append(s)
        size += len(s)
    return "".join(out)[:n_chars]


def child(total_chars: int) -> None:
    import events as ev
    import gui_2
    from imgui_bundle import hello_imgui, immapp
    from models import Ticket, stream_tier3
    from multi_agent_conductor import ConductorEngine

    rng = random.Random(11)
    with TempWorkspace() as ws:
        eng = ConductorEngine(ws, bench_settings(), auto_approve=True)
        eng.start()
        try:
            new_track(eng, [Ticket(id=f"T-{i:03d}", description=f"Implement part {i}",
                                   target_files=[f"src/p{i}.py"]) for i in range(1, STREAMS + 1)])
            app = gui_2.AppState(eng)
            rp, addons = gui_2.runner_params(app, ini_disable=True, headless=True)
            per_stream = total_chars // STREAMS
            sids = [stream_tier3(f"T-{i:03d}") for i in range(1, STREAMS + 1)]
            for sid in sids:
                text = text_block(rng, per_stream)
                for k in range(0, len(text), 4096):
                    gui_2.apply_event(app, ev.StreamChunk(stream_id=sid, text=text[k:k + 4096]))
            assert sum(app.streams.views[s].chars for s in sids) == per_stream * STREAMS

            stop = threading.Event()
            emit = eng._emitter()

            def stream(sid: str) -> None:
                piece = text_block(random.Random(sid), 24 * 600)
                i = 0
                while not stop.is_set():
                    emit(ev.StreamChunk(stream_id=sid, text=piece[i:i + 24]))
                    i = (i + 24) % len(piece)
                    time.sleep(1 / 60)
            threads = [eng._executor.submit(stream, sid) for sid in sids]

            times: list[float] = []
            last = [None]
            calls: dict[str, int] = {}
            prev_pre = rp.callbacks.pre_new_frame

            tick = [time.perf_counter()]

            def pre_new_frame() -> None:
                # pace the frames at 60 Hz like a real window (sleeping is not CPU time), so
                # each frame drains what 8 streams produce in 16.7 ms
                tick[0] += 1 / 60
                d = tick[0] - time.perf_counter()
                if d > 0:
                    time.sleep(d)
                else:
                    tick[0] = time.perf_counter()
                t = time.thread_time()
                if last[0] is not None:
                    times.append(t - last[0])
                last[0] = t
                if app.frame == 5:
                    hello_imgui.get_runner_params().docking_params.focus_dockable_window(
                        "Streams")
                if len(times) >= WARMUP + FRAMES:
                    hello_imgui.get_runner_params().app_shall_exit = True
                prev_pre()
            rp.callbacks.pre_new_frame = pre_new_frame
            for w in rp.docking_params.dockable_windows:
                def wrap(fn=w.gui_function, name=w.label):
                    calls[name] = calls.get(name, 0) + 1
                    fn()
                w.gui_function = wrap
            try:
                immapp.run(rp, addons)
            finally:
                stop.set()
                for f in threads:
                    f.result(10)
            frame_ms = [x * 1000 for x in times[WARMUP:]]
            shown = {k: v for k, v in calls.items() if v >= FRAMES // 2}
            print(json.dumps({"frame_ms": frame_ms, "shown": shown,
                              "chars": sum(app.streams.views[s].chars for s in sids),
                              "rows": sum(len(app.streams.views[s].rows) for s in sids)}), flush=True)
        finally:
            app.close() if "app" in locals() else None
            eng.close()


def run_child(total: int) -> dict:
    p = subprocess.run([sys.executable, __file__, "--child", str(total)], capture_output=True,
                       text=True, timeout=600, env=dict(os.environ, DISPLAY=""))
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"frames child failed (rc={p.returncode}): {p.stderr[-3000:]}")
    return json.loads(lines[-1])


def main() -> int:
    print(f"bench/frames.py: the real panels on the null backend, {STREAMS} workers streaming; "
          f"{os.cpu_count()} CPUs; load {os.getloadavg()[0]:.2f}")
    res = {}
    for label, total in (("10 KB", 10_000), ("10 MB", 10_000_000)):
        header(f"{label} across {STREAMS} streams, {FRAMES} frames")
        r = res[label] = run_child(total)
        ms = r["frame_ms"]
        print(f"  {r['chars']:,} characters in {r['rows']:,} display rows; windows drawn every "
              f"frame: {', '.join(sorted(r['shown']))}")
        report(f"CPU per frame median ({label})", median(ms), "ms",
               target=TARGET_MED_MS if label == "10 MB" else None, fmt="{:.3f}")
        report(f"CPU per frame p99 ({label})", percentile(ms, 99), "ms",
               target=TARGET_P99_MS if label == "10 MB" else None, fmt="{:.3f}",
               note=f"max {max(ms):.2f} ms")
    header("10 MB against 10 KB")
    a, b = res["10 MB"]["frame_ms"], res["10 KB"]["frame_ms"]
    report("ratio of medians 10 MB / 10 KB", median(a) / median(b), "x", target=TARGET_RATIO,
           fmt="{:.3f}")
    report("ratio of p99s 10 MB / 10 KB", percentile(a, 99) / percentile(b, 99), "x",
           fmt="{:.3f}")
    return summary("bench/frames.py")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        child(int(sys.argv[2]))
    else:
        raise SystemExit(main())
