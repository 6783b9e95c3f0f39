"""Launcher used by bench/startup.py (not a benchmark): runs the real app exactly as the
`clutch` console script does (`cli.main(["--workspace", WS])`), with one hook: `immapp.run` is
wrapped so that, after the first frame has been rendered and swapped (hello_imgui's
`after_swap` callback), it prints one JSON line to stdout — the wall-clock time of that moment,
the process's own start time (from /proc/self/stat), and the modules imported so far — and asks
the app to exit. Nothing else of the app is changed.
"""
from __future__ import annotations

import json
import os
import sys
import time


def _process_start_wall() -> float:
    """This process's start, as a wall-clock time (Linux: /proc/self/stat field 22)."""
    with open("/proc/self/stat") as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2:].split()
    start_ticks = int(fields[19])                        # field 22 overall
    hz = os.sysconf(os.sysconf_names["SC_CLK_TCK"])
    with open("/proc/uptime") as f:
        uptime = float(f.read().split()[0])
    boot_wall = time.time() - uptime
    return boot_wall + start_ticks / hz


def main() -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.environ.get("CLUTCH_BENCH_ROOT") or os.path.dirname(here)
    sys.path[:] = [root] + [p for p in sys.path if os.path.abspath(p or ".") != here]
    ws = sys.argv[1]
    from imgui_bundle import hello_imgui, immapp

    real_run = immapp.run
    state = {"done": False}
    marks: dict[str, float] = {}

    def run(rp, *args, **kw):
        marks["immapp.run called"] = time.time()
        prev = rp.callbacks.after_swap
        prev_init = rp.callbacks.post_init

        def post_init() -> None:
            marks["post_init (window, GL, fonts ready)"] = time.time()
            if prev_init is not None:
                prev_init()
        rp.callbacks.post_init = post_init

        def after_swap() -> None:
            if prev is not None:
                prev()
            if state["done"]:
                return
            state["done"] = True
            t = time.time()
            mods = sorted(m for m in sys.modules)
            print(json.dumps({"first_frame_wall": t, "proc_start_wall": _process_start_wall(),
                              "marks": marks, "modules": mods}), flush=True)
            hello_imgui.get_runner_params().app_shall_exit = True
        rp.callbacks.after_swap = after_swap
        return real_run(rp, *args, **kw)

    immapp.run = run
    marks["imgui_bundle imported"] = time.time()
    import cli
    import gui_2                  # what cli.main imports first; timed here as its own phase
    marks["cli + gui_2 imported"] = time.time()
    real_make_engine = gui_2.make_engine

    def make_engine(*a, **kw):
        out = real_make_engine(*a, **kw)
        marks["engine built (multi_agent_conductor imported)"] = time.time()
        return out
    gui_2.make_engine = make_engine
    return cli.main(["--workspace", ws])


if __name__ == "__main__":
    raise SystemExit(main())
