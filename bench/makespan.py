"""Makespan of a 24-ticket DAG on the offline model with W workers, against its lower bound.

The real engine (`ConductorEngine`, auto_approve=True, git_commits=False) runs a hand-built
24-ticket DAG (a main chain of 8; a fan-out of 6 off its second ticket with two fan-ins of 3; a
second chain of 4; 4 independent tickets) on `OfflineProvider(pace_s=0, latency_s=L)`. Each
offline worker makes 5 model calls (L each) and runs its tools: list_dir, write_file,
edit_file, `python3 -m py_compile`.

Definitions (all from the comms log of the run itself):
- work(t)  = ts(the ticket's last Tier 3 `response` entry) - ts(its `spawn` entry): the
             worker's own duration, model calls and tools included;
- makespan = start_track() called -> the track's future resolved;
- lower bound = max(critical path by work(t), sum(work) / W);
- ratio = makespan / lower bound (target <= 1.05). Everything the scheduler adds (waiting to
  start a ready ticket, saving state, commits, approvals, events) is in the makespan only.
Also printed: the makespan an ideal greedy list scheduler (zero overhead, the engine's ticket
order) would reach with the same work(t): it shows how much of the gap is the DAG's shape; and,
for W > 1, each link of the critical path (a ticket's last answer to its dependent's spawn:
landing, set-up and the spawn's context), where the worktrees' cost sits.

Each W runs three ways, each the median of ROUNDS runs: in a plain directory; in a git
repository with a worktree per ticket (the first trees made as the track starts, since the
track is not planned by Tier 2 here and no tree was prepared while a person read it; a
dependent's tree prepared while the tickets it waits for work; each ticket's commit and its
merge into the track branch before its dependents start; the track merged into the person's
branch at the end: all of it inside the makespan; the trees removed after the track reports,
as the app does, outside it); and in the plain directory with the ready tickets taken in
track order instead of longest chain of dependents first (the scheduler before issue 17), to
show what that order is worth. Every run's workspace is removed when the benchmark ends, not
before the next run (see TempWorkspace: on an ext4 without a journal a removal slows the file
creation of the minutes after it).
"""
from __future__ import annotations

import _common  # noqa: F401  (sets sys.path: repository root first)

import contextlib
import heapq
import os
import subprocess
import time

from _common import (TempWorkspace, bench_settings, disk_create_ms, filesystem_line, header,
                     new_track, report, summary)

LATENCY_S = 0.05
WORKERS = (1, 4, 8)
TARGET = 1.05
ROUNDS = 3          # runs per figure (the median is reported): one run varies by a few percent


def dag():
    from models import Ticket

    def t(tid, deps=()):
        return Ticket(id=tid, description=f"Implement {tid.lower()}",
                      target_files=[f"src/{tid.lower().replace('-', '_')}.py"],
                      depends_on=list(deps))
    ts = []
    # the main chain of 8 (listed first, so a free slot always goes to it)
    ts += [t("M-1")] + [t(f"M-{i}", [f"M-{i - 1}"]) for i in range(2, 9)]
    # a fan-out of 6 off M-2, then two fan-ins of 3
    ts += [t(f"F-{i}", ["M-2"]) for i in range(1, 7)]
    ts += [t("F-7", ["F-1", "F-2", "F-3"]), t("F-8", ["F-4", "F-5", "F-6"])]
    # a second chain of 4
    ts += [t("S-1"), t("S-2", ["S-1"]), t("S-3", ["S-2"]), t("S-4", ["S-3"])]
    # 4 independent tickets
    ts += [t(f"I-{i}") for i in range(1, 5)]
    assert len(ts) == 24
    return ts


def greedy(tickets, work: dict[str, float], w: int) -> float:
    """Ideal list scheduling: whenever a worker is free, start the first ready ticket in the
    track's order; zero overhead."""
    deps = {t.id: set(t.depends_on) for t in tickets}
    order = [t.id for t in tickets]
    done: set[str] = set()
    started: set[str] = set()
    running: list[tuple[float, str]] = []
    now = 0.0
    while len(done) < len(order):
        for tid in order:
            if len(running) >= w:
                break
            if tid not in started and deps[tid] <= done:
                started.add(tid)
                heapq.heappush(running, (now + work[tid], tid))
        now, tid = heapq.heappop(running)
        done.add(tid)
        while running and running[0][0] <= now:
            done.add(heapq.heappop(running)[1])
    return now


@contextlib.contextmanager
def track_order():
    """The scheduler as it was: ready tickets in the track's order."""
    import engine.ready as ready
    old = ready.priority
    ready.priority = lambda tickets, dependents: {t.id: (0, i) for i, t in enumerate(tickets)}
    try:
        yield
    finally:
        ready.priority = old


def git_repo(ws) -> None:
    env = dict(os.environ, GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@b", GIT_COMMITTER_NAME="b",
               GIT_COMMITTER_EMAIL="b@b")
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "init"]):
        subprocess.run(["git", "-C", str(ws), *args], check=True, env=env, capture_output=True)


def run(w: int, worktrees: bool = False,
        later: contextlib.ExitStack | None = None) -> dict[str, float]:
    """One run; its workspace removed when ``later`` closes (see TempWorkspace), else at once."""
    from ai_client import OfflineProvider
    from models import critical_path
    from multi_agent_conductor import ConductorEngine

    tickets = dag()
    with TempWorkspace(later=later) as ws:
        if worktrees:
            git_repo(ws)
        eng = ConductorEngine(ws, bench_settings(max_workers=w, git_commits=worktrees),
                              provider=OfflineProvider(pace_s=0, latency_s=LATENCY_S),
                              auto_approve=True)
        eng.start()
        try:
            tid = new_track(eng, tickets)
            t0 = time.time()
            track = eng.start_track(tid).result(600)
            t1 = time.time()
            entries = eng.comms.entries()
            assert eng.worktrees_on == worktrees
            if worktrees:
                assert track.merged_into == "main", track.merged_into
        finally:
            eng.close()
    assert all(k.status == "completed" for k in track.tickets), \
        [(k.id, k.status, k.blocked_reason) for k in track.tickets]
    spawn: dict[str, float] = {}
    last_resp: dict[str, float] = {}
    for e in entries:
        if e["tier"] != "Tier 3":
            continue
        if e["kind"] == "spawn":
            spawn[e["ticket_id"]] = e["ts"]
        elif e["kind"] == "response":
            last_resp[e["ticket_id"]] = e["ts"]
    work = {k: last_resp[k] - spawn[k] for k in spawn}
    assert len(work) == 24, sorted(work)
    cp, path = critical_path(tickets, work)
    total = sum(work.values())
    lb = max(cp, total / w)
    makespan = t1 - t0
    first_spawn = min(spawn.values()) - t0
    # a link: from a ticket's last answer to its dependent's spawn (landing, set-up, approval)
    links = [spawn[b] - last_resp[a] for a, b in zip(path, path[1:])]
    return {"link_list": links, "links": sum(links),
            "makespan": makespan, "lb": lb, "cp": cp, "total": total, "path": path,
            "greedy": greedy(tickets, work, w), "first_spawn": first_spawn,
            "tail": t1 - max(last_resp.values()),
            "work_med": sorted(work.values())[12]}


def median_run(w: int, rounds: int, **kw) -> dict:
    """`rounds` runs; the one with the median ratio (all ratios kept under "ratios")."""
    runs = sorted((run(w, **kw) for _ in range(rounds)), key=lambda r: r["makespan"] / r["lb"])
    best = dict(runs[len(runs) // 2])
    best["ratios"] = [r["makespan"] / r["lb"] for r in runs]
    return best


def main() -> int:
    with contextlib.ExitStack() as later:   # every workspace removed at the end, not between
        return measure(later)              # runs (see TempWorkspace)


def measure(later: contextlib.ExitStack) -> int:
    print(f"bench/makespan.py: 24-ticket DAG, OfflineProvider(pace_s=0, latency_s={LATENCY_S}), "
          f"auto-approve; {os.cpu_count()} CPUs; load {os.getloadavg()[0]:.2f}; each figure "
          f"the median of {ROUNDS} runs")
    print("work(t) = last Tier 3 response ts - spawn ts (comms log); "
          "lower bound = max(critical path, sum(work)/W)")
    print(f"{filesystem_line()}; the disk at the start: 2,000 empty files created in "
          f"{disk_create_ms(later=later):.0f} ms (worktrees do a few dozen creates and renames "
          f"per link)")
    for w in WORKERS:
        header(f"W = {w}")
        r = median_run(w, ROUNDS, later=later)
        wt = median_run(w, ROUNDS, worktrees=True, later=later)
        with track_order():
            old = median_run(w, ROUNDS, later=later)
        print(f"  work per ticket: median {r['work_med'] * 1000:.0f} ms, sum {r['total']:.2f} s; "
              f"critical path {r['cp']:.2f} s ({' -> '.join(r['path'])}); "
              f"sum/W {r['total'] / w:.2f} s")
        print(f"  first spawn {r['first_spawn'] * 1000:.1f} ms after start_track; ideal greedy "
              f"schedule {r['greedy']:.2f} s ({r['greedy'] / r['lb']:.3f} x the bound)")
        print(f"  worktrees: first spawn {wt['first_spawn'] * 1000:.1f} ms after start_track, "
              f"last answer to track done {wt['tail'] * 1000:.1f} ms (plain: "
              f"{r['tail'] * 1000:.1f} ms); ratios of the {ROUNDS} runs: "
              f"{' '.join(f'{x:.3f}' for x in wt['ratios'])}")
        if w > 1:     # with one worker a link also holds every other ticket run meanwhile
            print(f"  links on the critical path (a ticket's last answer to its dependent's "
                  f"spawn): "
                  f"{' '.join(f'{x * 1000:.0f}' for x in wt['link_list'])} ms, "
                  f"{wt['links'] * 1000:.0f} ms in all (plain: "
                  f"{' '.join(f'{x * 1000:.0f}' for x in r['link_list'])} ms, "
                  f"{r['links'] * 1000:.0f} ms)")
        report(f"makespan W={w}", r["makespan"], "s", fmt="{:.3f}")
        report(f"lower bound W={w}", r["lb"], "s", fmt="{:.3f}")
        report(f"makespan / lower bound W={w}", r["makespan"] / r["lb"], "", target=TARGET,
               fmt="{:.3f}")
        report(f"makespan / ideal greedy W={w}", r["makespan"] / r["greedy"], "", fmt="{:.3f}",
               note="the engine's own overhead")
        report(f"worktrees: makespan W={w}", wt["makespan"], "s", fmt="{:.3f}")
        report(f"worktrees: makespan / lower bound W={w}", wt["makespan"] / wt["lb"], "",
               target=TARGET, fmt="{:.3f}", note="set-up, commits and merges included")
        report(f"track order: makespan W={w}", old["makespan"], "s", fmt="{:.3f}",
               note=f"longest chain first: {r['makespan'] / old['makespan']:.3f} x this")
    print(f"the disk at the end: 2,000 empty files created in {disk_create_ms(later=later):.0f} ms")
    return summary("bench/makespan.py")


if __name__ == "__main__":
    raise SystemExit(main())
