"""Shared helpers for the benchmarks in bench/ (not a benchmark itself: `make bench` must skip
files whose name starts with `_`).

Every benchmark imports this module first: `from _common import ...` works because each
script puts the repository root first on sys.path (so `import events` finds the engine's
events.py, not bench/events.py) and bench/ second.
"""
from __future__ import annotations

import contextlib
import gc
import math
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

HERE = Path(__file__).resolve().parent
# CLUTCH_BENCH_ROOT=/path/to/another/checkout measures that tree's modules with these same
# scripts (how the "before" figures in bench/README.md were taken).
ROOT = Path(os.environ.get("CLUTCH_BENCH_ROOT") or HERE.parent).resolve()


def setup_path() -> None:
    """Repository root first, bench/ second (idempotent)."""
    for p in (str(HERE), str(HERE.parent), str(ROOT)):
        while p in sys.path:
            sys.path.remove(p)
    sys.path.insert(0, str(ROOT))
    sys.path.insert(1, str(HERE))
    # never reach a real API from a benchmark
    for k in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_GEMINI_BASE_URL"):
        os.environ.pop(k, None)


setup_path()


# ---------------------------------------------------------------------------------------------
# statistics and reporting
# ---------------------------------------------------------------------------------------------

def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); nan for no values."""
    if not values:
        return math.nan
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(q / 100.0 * len(s)) - 1))
    return s[k]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


_results: list[tuple[str, bool]] = []


def header(title: str) -> None:
    print(f"\n## {title}")


def report(name: str, value: float, unit: str, *, target: float | None = None,
           higher_is_better: bool = False, fmt: str = "{:,.3f}", note: str = "") -> bool:
    """Print one figure with its target and the ratio value/target. Returns whether it met it."""
    line = f"{name:<46} {fmt.format(value):>14} {unit:<10}"
    ok = True
    if target is not None:
        ok = value >= target if higher_is_better else value <= target
        ratio = f"{value / target:.3f}" if target else "-"
        rel = ">=" if higher_is_better else "<="
        line += f" target {rel} {fmt.format(target)} {unit}  ratio {ratio}  " \
                f"{'PASS' if ok else 'MISS'}"
        _results.append((name, ok))
    if note:
        line += f"  ({note})"
    print(line, flush=True)
    return ok


def summary(bench: str) -> int:
    """Print the pass/miss summary; always returns 0 (benchmarks report, they do not fail)."""
    missed = [n for n, ok in _results if not ok]
    print(f"\n{bench}: {len(_results) - len(missed)}/{len(_results)} targets met"
          + (f"; MISSED: {', '.join(missed)}" if missed else ""), flush=True)
    return 0


# ---------------------------------------------------------------------------------------------
# engines
# ---------------------------------------------------------------------------------------------

class TempWorkspace:
    """A throw-away workspace directory with a README, removed on exit; or, given ``later``
    (an ExitStack the benchmark closes when it ends), removed then: on an ext4 without a
    journal every file created in the minutes after a removal pays for the inodes it freed
    (bench/disk.py), so a run would measure the removal of the run before it, which a
    person's repository never has between two tickets."""

    def __init__(self, prefix: str = "clutch-bench-",
                 later: contextlib.ExitStack | None = None):
        self.path = Path(tempfile.mkdtemp(prefix=prefix))
        self.later = later
        (self.path / "README.md").write_text("# bench workspace\n")

    def __enter__(self) -> Path:
        return self.path

    def __exit__(self, *exc: object) -> None:
        if self.later is not None:
            self.later.callback(shutil.rmtree, self.path, ignore_errors=True)
        else:
            shutil.rmtree(self.path, ignore_errors=True)


def empty_files(root: Path, count: int) -> None:
    """``count`` empty files in 100 folders under ``root``: what a checkout of that many files
    cannot cost less than on this disk (file creation, not data)."""
    per = max(count // 100, 1)
    for d in range(100):
        (root / f"d{d:02d}").mkdir(parents=True)
        for i in range(per):
            os.close(os.open(root / f"d{d:02d}" / f"f{i:04d}", os.O_WRONLY | os.O_CREAT, 0o644))


def disk_create_ms(count: int = 2000, later: contextlib.ExitStack | None = None) -> float:
    """Milliseconds to create ``count`` empty files where the benchmarks' workspaces go (the
    temporary directory); printed beside figures that write files, since on a shared VM the
    same disk can be many times slower from one hour to the next. ``later``: as for
    TempWorkspace (the files are removed when it closes, not now)."""
    import time
    with TempWorkspace("clutch-bench-disk-", later) as root:
        t0 = time.perf_counter()
        empty_files(root / "files", count)
        return (time.perf_counter() - t0) * 1000


def filesystem(path: str | Path | None = None) -> tuple[str, str, bool | None]:
    """(mount point, type, has a journal) of the filesystem holding ``path`` (default: the
    temporary directory, where the benchmarks' workspaces go). The journal is read from
    `/sys/fs/ext4/<device>/journal_task` ("<none>" without one); None when unknown."""
    p = os.path.realpath(path or tempfile.gettempdir())
    mount, kind, dev = "/", "?", ""
    try:
        with open("/proc/self/mounts", encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError:          # not Linux: the type is not known, nothing is warned of
        return p, "?", None
    for line in lines:
        fields = line.split()
        point = fields[1].replace("\\040", " ")
        if (p == point or p.startswith(point.rstrip("/") + "/")) and len(point) >= len(mount):
            mount, kind, dev = point, fields[2], fields[0]
    journal = None
    if kind == "ext4":
        try:
            task = Path(f"/sys/fs/ext4/{os.path.basename(dev)}/journal_task").read_text().strip()
            journal = task != "<none>"
        except OSError:
            journal = None
    return mount, kind, journal


def filesystem_line(path: str | Path | None = None) -> str:
    """One line for a benchmark's header: where its files go, and a warning when that is an
    ext4 without a journal. There, every new inode is checked against each inode of its block
    group freed in the last 1 to 6 minutes (`recently_deleted()` in fs/ext4/ialloc.c, only run
    when the filesystem has no journal), so after a test suite or a benchmark deletes a few
    thousand files, creating files costs up to 0.8 ms each instead of 0.02 (`bench/disk.py`
    shows it; `bench/on_journaled_ext4.sh` measures on an ext4 with a journal instead)."""
    mount, kind, journal = filesystem(path)
    has = "" if journal is None else ", journal" if journal else ", NO journal"
    line = f"workspaces on {mount} ({kind}{has})"
    if kind == "ext4" and journal is False:
        line += ("; file creation here slows many-fold for minutes after files are deleted, "
                 "see bench/README.md")
    return line


def bench_settings(**kw):
    from models import ApprovalPolicy, Settings
    base = dict(offline_pace_s=0.0, git_commits=False,
                approvals=ApprovalPolicy(spawn="auto", read_tools="auto", write_tools="auto",
                                         shell="auto"))
    base.update(kw)
    return Settings(**base)


def new_track(engine, tickets, title: str = "Bench track") -> str:
    from models import TrackProposal
    [track] = engine.accept_tracks([TrackProposal(title=title, goal="bench",
                                                  acceptance_criteria=["runs"])]).result(30)
    engine.set_tickets(track.id, tickets).result(60)
    return track.id


def random_dag(n: int, seed: int, max_fan_in: int = 3, window: int = 50) -> list:
    """n tickets in a random DAG: each depends on 0..max_fan_in earlier tickets, drawn from
    the previous `window` tickets (realistic locality), listed in a shuffled order."""
    import random
    from models import Ticket
    rng = random.Random(seed)
    ts = []
    for i in range(n):
        lo = max(0, i - window)
        k = rng.randint(0, min(max_fan_in, i - lo)) if i else 0
        deps = rng.sample(range(lo, i), k) if k else []
        ts.append(Ticket(id=f"T-{i + 1:04d}", description=f"ticket {i + 1}",
                         target_files=[f"src/m{i % 97}.py"],
                         depends_on=[f"T-{d + 1:04d}" for d in deps]))
    rng.shuffle(ts)
    return ts


def gc_quiet():
    """Context: collect, then disable the GC for a timed section."""
    class _Q:
        def __enter__(self):
            gc.collect()
            self.was = gc.isenabled()
            gc.disable()

        def __exit__(self, *exc):
            if self.was:
                gc.enable()
    return _Q()


def fmt_list(xs: Iterable[str]) -> str:
    return ", ".join(xs)
