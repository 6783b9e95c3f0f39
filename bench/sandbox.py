"""Sandbox: the start cost of a shell command in bubblewrap vs without, side by side.

The same Workspace.run_shell("true") call, on the same git workspace (with a .git and a
.clutch, so every mount the sandbox makes is made), alternately with sandbox = "bwrap" and
sandbox = "none", N rounds each in one run. The start cost is the wall time of the whole call:
path checks, bwrap's namespaces and mounts, bash, collection and the kill of the tree. The
extra cost of the sandbox is the difference of the medians; the ratio is bwrap / none.
Also: `python -S -c pass` each way, the kind of command a worker runs most.

Target: the sandbox adds < 50 ms per command (median).
"""
from __future__ import annotations

import _common  # noqa: F401  (sets sys.path: repository root first)

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import header, median, percentile, report, summary

ROUNDS = 60


def _workspace(tmp: Path) -> Path:
    ws = tmp / "ws"
    ws.mkdir()
    subprocess.run(["git", "init", "-q", str(ws)], check=True)
    (ws / ".clutch").mkdir()
    (ws / ".clutch" / "config.toml").write_text("")
    (ws / "app.py").write_text("print('hi')\n")
    return ws


def _time(ws, command: str, rounds: int) -> list[float]:
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        r = ws.run_shell(command)
        times.append((time.perf_counter() - t) * 1000.0)
        if not r.ok:
            raise SystemExit(f"{command!r} failed: {r.error} {r.output}")
    return times


def main() -> int:
    from tools import Workspace

    header(f"Sandbox start cost per command ({ROUNDS} rounds each, interleaved)")
    with tempfile.TemporaryDirectory() as d:
        root = _workspace(Path(d))
        boxed = Workspace(root, sandbox="bwrap")
        bare = Workspace(root, sandbox="none")
        status = boxed.sandbox_status()
        print(status.message)
        if not status.ready:
            print("no working bwrap here: nothing to compare", file=sys.stderr)
            return 1
        for w in (boxed, bare):  # warm: the probe, bash and the page cache
            _time(w, "true", 3)
        figures: dict[str, dict[str, list[float]]] = {}
        for command in ("true", f"{sys.executable} -S -c pass"):
            rounds = ROUNDS if command == "true" else ROUNDS // 3
            b: list[float] = []
            n: list[float] = []
            for _ in range(rounds):  # interleaved, so load on the machine hits both alike
                b += _time(boxed, command, 1)
                n += _time(bare, command, 1)
            figures[command] = {"bwrap": b, "none": n}
        for command, f in figures.items():
            mb, mn = median(f["bwrap"]), median(f["none"])
            shown = command.replace(sys.executable, "python")
            print(f"\n`{shown}`: bwrap median {mb:.1f} ms (p90 {percentile(f['bwrap'], 90):.1f}), "
                  f"none median {mn:.1f} ms (p90 {percentile(f['none'], 90):.1f}), "
                  f"ratio bwrap/none {mb / mn:.2f}")
            label = command if command == "true" else "python -S -c pass"
            report(f"sandbox cost per command ({label})", mb - mn, "ms", target=50.0, fmt="{:,.1f}")
    return summary("sandbox")


if __name__ == "__main__":
    raise SystemExit(main())
