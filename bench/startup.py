"""Startup: process start -> first rendered frame of the real app under Xvfb, 5 cold runs.

Each run is a fresh process on a fresh, empty workspace (no ini file, no conductor/ folder),
with the bytecode cache an install leaves (measured too without it, as this sandbox runs with
PYTHONDONTWRITEBYTECODE=1 and so compiles our ~9,000 lines at every start):
`python bench/_startup_child.py WS`, which runs `cli.main(["--workspace", WS])` exactly as the
`clutch` command does, with hello_imgui's `after_swap` callback hooked to report the moment the
first frame was rendered and swapped, and the modules imported by then. Startup = that moment
minus the moment the parent spawned the process (the child's /proc start time agrees).
For scale, the same is measured for a minimal hello_imgui app (one text widget): the floor the
platform sets on this machine.

Targets: median <= 0.8 s; google.genai not imported before the first frame.
"""
from __future__ import annotations

import _common  # noqa: F401  (sets sys.path: repository root first)

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import HERE, ROOT, header, median, percentile, report, summary

RUNS = 5
TARGET_S = 0.8
MINIMAL = r"""
import json, sys, time
from imgui_bundle import hello_imgui, imgui
def gui(): imgui.text("hello")
def after_swap():
    print(json.dumps({"first_frame_wall": time.time()}), flush=True)
    hello_imgui.get_runner_params().app_shall_exit = True
rp = hello_imgui.RunnerParams()
rp.callbacks.show_gui = gui
rp.callbacks.after_swap = after_swap
rp.app_window_params.window_geometry.size = (1280, 1000)
rp.ini_disable = True
hello_imgui.run(rp)
"""


def start_xvfb() -> tuple[subprocess.Popen | None, str]:
    if shutil.which("Xvfb") is None:
        return None, ""
    for n in range(90, 140):
        if os.path.exists(f"/tmp/.X11-unix/X{n}") or os.path.exists(f"/tmp/.X{n}-lock"):
            continue
        p = subprocess.Popen(["Xvfb", f":{n}", "-screen", "0", "1280x1000x24", "-nolisten", "tcp"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            if os.path.exists(f"/tmp/.X11-unix/X{n}"):
                return p, f":{n}"
            if p.poll() is not None:
                break
            time.sleep(0.05)
        p.kill()
    return None, ""


def one_run(cmd: list[str], display: str, cwd: str, pycache: str | None = None) -> dict:
    """pycache: a bytecode cache folder (as after an install, which compiles the .pyc files);
    None: the environment as it is (here PYTHONDONTWRITEBYTECODE=1: every start compiles)."""
    env = dict(os.environ, DISPLAY=display)
    if pycache is not None:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = pycache
    for k in ("GEMINI_API_KEY", "GOOGLE_API_KEY"):
        env.pop(k, None)
    t0 = time.time()
    p = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=120)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"no first frame (rc={p.returncode}): {p.stderr[-2000:]}")
    out = json.loads(lines[0])
    out["startup"] = out["first_frame_wall"] - t0
    if "proc_start_wall" in out:
        out["startup_proc"] = out["first_frame_wall"] - out["proc_start_wall"]
    return out


def main() -> int:
    print(f"bench/startup.py: {RUNS} cold runs of the real app under Xvfb; {os.cpu_count()} CPUs; "
          f"load {os.getloadavg()[0]:.2f}")
    xvfb, display = start_xvfb()
    if xvfb is None:
        print("Xvfb is not available: install it (make install) to run this benchmark")
        return 0
    try:
        py = sys.executable
        header("minimal hello_imgui app (the platform's floor)")
        floor = []
        with tempfile.TemporaryDirectory() as d:
            for _ in range(RUNS):
                floor.append(one_run([py, "-c", MINIMAL], display, d)["startup"])
        report("minimal app: start -> first frame, median", median(floor), "s", fmt="{:.3f}",
               note="runs " + ", ".join(f"{x:.3f}" for x in floor))

        pycache = tempfile.mkdtemp(prefix="clutch-pycache-")
        child = [py, str(HERE / "_startup_child.py")]

        def app_runs(cache: str | None) -> list[dict]:
            out = []
            for _ in range(RUNS):
                ws = tempfile.mkdtemp(prefix="clutch-startup-")
                try:
                    out.append(one_run(child + [ws], display, ws, cache))
                finally:
                    shutil.rmtree(ws, ignore_errors=True)
            return out

        header(f"the real app, no bytecode cache (this machine sets PYTHONDONTWRITEBYTECODE=1, "
               f"so every start compiles our modules), {RUNS} cold runs")
        nocache = [r["startup"] for r in app_runs(None)]
        report("app, compiling at start: median", median(nocache), "s", fmt="{:.3f}",
               note="runs " + ", ".join(f"{x:.3f}" for x in nocache))
        header(f"the real app (cli.main --workspace <fresh dir>) with its bytecode cache, as "
               f"after an install; {RUNS} cold runs (fresh process, fresh workspace)")
        ws = tempfile.mkdtemp(prefix="clutch-startup-")
        try:       # one untimed run writes the cache, as the first start after install would
            one_run(child + [ws], display, ws, pycache)
        finally:
            shutil.rmtree(ws, ignore_errors=True)
        runs = app_runs(pycache)
        shutil.rmtree(pycache, ignore_errors=True)
        st = [r["startup"] for r in runs]
        report("app: start -> first frame, median", median(st), "s", target=TARGET_S,
               fmt="{:.3f}", note="runs " + ", ".join(f"{x:.3f}" for x in st))
        report("app: start -> first frame, worst of 5", max(st), "s", fmt="{:.3f}")
        report("app: /proc start -> first frame, median",
               median([r["startup_proc"] for r in runs]), "s", fmt="{:.3f}")
        report("app / minimal app (medians)", median(st) / median(floor), "x", fmt="{:.2f}")
        mid = sorted(runs, key=lambda r: r["startup"])[len(runs) // 2]
        print("  phases of the median run (seconds after the process started):")
        for name, t in sorted(mid["marks"].items(), key=lambda kv: kv[1]):
            print(f"    {t - mid['proc_start_wall']:6.3f}  {name}")
        print(f"    {mid['first_frame_wall'] - mid['proc_start_wall']:6.3f}  first frame swapped")
        mods = set(runs[-1]["modules"])
        genai = sorted(m for m in mods if m == "google.genai" or m.startswith("google.genai."))
        heavy = [m for m in ("google.genai", "google", "httpx", "pydantic", "numpy", "tomllib",
                             "tomli_w", "hook_server", "http.server", "asyncio")
                 if m in mods]
        print(f"  modules at the first frame: {len(mods)}; of note: {', '.join(heavy)}")
        ok = not genai
        report("google.genai modules imported before the first frame", len(genai), "",
               target=0, fmt="{:.0f}", note="none" if ok else ", ".join(genai[:5]))
    finally:
        xvfb.terminate()
        xvfb.wait(5)
    return summary("bench/startup.py")


if __name__ == "__main__":
    raise SystemExit(main())
