"""Scale: a 1,000-ticket DAG (validation, scheduling) and a 100,000-entry comms log (usage sums,
memory).

1. DAG helpers on 1,000 tickets (random DAG, seed 7, fan-in <= 3 from the previous 50 tickets,
   listed shuffled): dag_problems, topological_order, critical_path, file_overlap_warnings —
   median of 5 runs, per ticket. Target <= 1 ms per ticket (all four together).
2. Scheduling overhead: the same 1,000 tickets run through the real ConductorEngine (auto-approve,
   no git, default max_workers=4) with a FunctionProvider that answers at once with a final text
   and no tool calls. Wall time of start_track -> result, divided by 1,000, nothing subtracted;
   the median of 3 runs, each in a fresh engine and workspace (all three printed), with the
   garbage of the run before collected first (outside the timing).
   Target <= 1 ms per ticket.
3. Comms log of 100,000 entries, recorded through CommsLog.record (to a JSON-lines file, as the
   engine does) by replaying the entry mix of a real offline run over 1,000 tickets in 10 tracks:
   time of usage_by(tier/track/ticket/stream) and total() (kept incrementally: what the app reads), of a
   from-scratch usage_from_entries(entries, "tier") (a check; no target), of re-opening the log from disk; memory of holding it
   (tracemalloc of the re-opened log; the process's peak RSS). Targets: sums <= 50 ms; <= 200 MB.
"""
from __future__ import annotations

import _common  # noqa: F401  (sets sys.path: repository root first)

import gc
import os
import resource
import statistics
import time
import tracemalloc

from _common import (TempWorkspace, bench_settings, gc_quiet, header, new_track, random_dag,
                     report, summary)

N_TICKETS = 1_000
N_ENTRIES = 100_000
SEED = 7


def timeit(fn, repeat: int = 5) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        with gc_quiet():
            t0 = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def dag_helpers() -> None:
    from models import critical_path, dag_problems, file_overlap_warnings, topological_order
    tickets = random_dag(N_TICKETS, SEED)
    header(f"DAG helpers on {N_TICKETS:,} tickets (median of 5)")
    total = 0.0
    for name, fn in (("dag_problems", lambda: dag_problems(tickets)),
                     ("topological_order", lambda: topological_order(tickets)),
                     ("critical_path", lambda: critical_path(tickets)),
                     ("file_overlap_warnings", lambda: file_overlap_warnings(tickets))):
        dt, out = timeit(fn)
        total += dt
        extra = ""
        if name == "critical_path":
            extra = f"length {out[0]:.0f} tickets"
        elif name == "file_overlap_warnings":
            extra = f"{len(out):,} warnings"
        elif name == "dag_problems":
            assert out == [], out
        report(f"{name} per ticket", dt / N_TICKETS * 1000, "ms", fmt="{:.4f}", note=extra)
    report("validation + order + path + overlaps per ticket", total / N_TICKETS * 1000, "ms",
           target=1.0, fmt="{:.4f}")


SCHED_RUNS = 3


def _thread_cpu() -> dict[str, float]:
    """CPU seconds (user + system) so far of the engine's threads, by role."""
    import threading
    tick = os.sysconf("SC_CLK_TCK")
    out = {"event loop": 0.0, "IO thread": 0.0, "executor threads": 0.0}
    for th in threading.enumerate():
        role = ("event loop" if th.name == "clutch-conductor" else
                "IO thread" if th.name.startswith("clutch-io") else
                "executor threads" if th.name.startswith("clutch-exec") else None)
        if role is None or th.native_id is None:
            continue
        try:
            with open(f"/proc/self/task/{th.native_id}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[role] += (int(fields[11]) + int(fields[12])) / tick
    return out


def _schedule_once(tickets) -> tuple[float, float, float, dict[str, float]]:
    """(set-up s, wall s, process CPU s, CPU s by engine thread) of one run of `tickets`
    through a fresh engine."""
    from ai_client import FunctionProvider
    from multi_agent_conductor import ConductorEngine
    provider = FunctionProvider(lambda req: "done", name="instant")
    with TempWorkspace() as ws:
        eng = ConductorEngine(ws, bench_settings(), provider=provider, auto_approve=True)
        eng.start()
        try:
            t0 = time.perf_counter()
            tid = new_track(eng, tickets)
            t_set = time.perf_counter() - t0
            # the previous run's engine is garbage now: collect it here, not inside this run
            gc.collect()
            c0 = time.process_time()
            th0 = _thread_cpu()
            t0 = time.perf_counter()
            track = eng.start_track(tid).result(900)
            wall = time.perf_counter() - t0
            cpu = time.process_time() - c0
            th1 = _thread_cpu()
        finally:
            eng.close()
    bad = [(k.id, k.status) for k in track.tickets if k.status != "completed"]
    assert not bad, bad[:5]
    return t_set, wall, cpu, {k: th1[k] - th0.get(k, 0.0) for k in th1}


def scheduling() -> None:
    header(f"scheduling {N_TICKETS:,} tickets through the engine (instant provider, "
           f"max_workers=4), {SCHED_RUNS} runs")
    runs = [_schedule_once(random_dag(N_TICKETS, SEED)) for _ in range(SCHED_RUNS)]
    walls = [r[1] for r in runs]
    mid = runs[walls.index(statistics.median(walls))]
    report("accept + set_tickets (validate, save) per ticket", mid[0] / N_TICKETS * 1000, "ms",
           fmt="{:.3f}")
    report("start_track -> done, wall per ticket (median)", mid[1] / N_TICKETS * 1000, "ms",
           target=1.0, fmt="{:.3f}",
           note=f"runs {', '.join(f'{w / N_TICKETS * 1000:.3f}' for w in walls)} ms; "
                f"median run's process CPU {mid[2] / N_TICKETS * 1000:.3f} ms per ticket")
    print("  CPU per ticket by engine thread in the median run (ms): "
          + ", ".join(f"{k} {v / N_TICKETS * 1000:.2f}" for k, v in mid[3].items())
          + " (the executor threads run each worker's agent session: its request/response "
            "records, usage, stream; the event loop schedules, records spawn/status, copies "
            "changed tickets for the writer; the IO thread writes state)")


def _templates() -> list[dict]:
    """The entry mix of a real offline run (one 6-ticket track, one worker each)."""
    from ai_client import OfflineProvider
    from models import Ticket
    from multi_agent_conductor import ConductorEngine
    ts = [Ticket(id=f"T-{i:03d}", description=f"Implement part {i}",
                 target_files=[f"src/p{i}.py"], depends_on=[f"T-{i - 1:03d}"] if i > 1 else [])
          for i in range(1, 7)]
    with TempWorkspace() as ws:
        eng = ConductorEngine(ws, bench_settings(max_workers=2),
                              provider=OfflineProvider(pace_s=0), auto_approve=True)
        eng.start()
        try:
            eng.start_track(new_track(eng, ts)).result(120)
            return eng.comms.entries()
        finally:
            eng.close()


def comms_log() -> None:
    from ai_client import CommsLog, usage_from_entries
    from models import Usage, stream_tier1, stream_tier2, stream_tier3, stream_tier4
    templates = _templates()
    header(f"comms log of {N_ENTRIES:,} entries (the entry mix of a real offline run, "
           f"{len(templates)} entries replayed over {N_TICKETS:,} tickets in 10 tracks)")
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with TempWorkspace() as ws:
        path = ws / "comms.jsonl"
        log = CommsLog(path)
        tiers = ("Tier 1", "Tier 2", "Tier 3", "Tier 3", "Tier 3", "Tier 3", "Tier 4")
        t0 = time.perf_counter()
        for i in range(N_ENTRIES):
            tpl = templates[i % len(templates)]
            ticket = f"T-{(i // len(templates)) % N_TICKETS + 1:04d}"
            track = f"track_{(i // 997) % 10}"
            tier = tiers[i % len(tiers)]
            sid = {"Tier 1": stream_tier1(), "Tier 2": stream_tier2(track),
                   "Tier 3": stream_tier3(ticket), "Tier 4": stream_tier4(ticket)}[tier]
            u = tpl.get("usage")
            log.record(tpl["kind"], tier=tier, stream_id=sid, track_id=track,
                       ticket_id=ticket if tier in ("Tier 3", "Tier 4") else "",
                       provider="offline", model="offline", direction=tpl["direction"],
                       usage=Usage(**u) if u else None, data=tpl["data"])
        t_rec = time.perf_counter() - t0
        report("record() per entry", t_rec / N_ENTRIES * 1e6, "us", fmt="{:.1f}",
               note=f"{t_rec:.2f} s for {N_ENTRIES:,}; file {path.stat().st_size / 1e6:.0f} MB")
        for key in ("tier", "track", "ticket", "stream"):
            dt, out = timeit(lambda: log.usage_by(key), repeat=21)
            report(f"usage_by({key!r}) (incremental)", dt * 1000, "ms", target=50.0,
                   fmt="{:.3f}", note=f"{len(out):,} keys")
        dt, _ = timeit(log.total, repeat=21)
        report("total() (incremental)", dt * 1000, "ms", target=50.0, fmt="{:.4f}")
        # peak RSS of building and holding the log (before the bench decodes every entry
        # into dicts for the from-scratch sums below, which the app never does)
        rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        entries = log.entries()
        dt, scratch = timeit(lambda: usage_from_entries(entries, "tier"), repeat=5)
        assert scratch == log.usage_by("tier"), "incremental and from-scratch sums differ"
        report("usage_from_entries(all, 'tier') (from scratch)", dt * 1000, "ms",
               fmt="{:.1f}", note="a check, not what the app reads; equal to the incremental "
                                  "sums")
        dt, _ = timeit(lambda: usage_from_entries(entries, "ticket"), repeat=5)
        report("usage_from_entries(all, 'ticket') (from scratch)", dt * 1000, "ms", fmt="{:.1f}")
        del entries
        log.close()
        del log
        # the memory of holding the log: re-open it from disk under tracemalloc
        tracemalloc.start()
        t0 = time.perf_counter()
        log2 = CommsLog(path)
        t_open = time.perf_counter() - t0
        cur, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert len(log2) == N_ENTRIES
        report("re-open the log from disk", t_open, "s", fmt="{:.2f}",
               note="under tracemalloc, which slows it down")
        report("memory held by the log (tracemalloc)", cur / 2**20, "MB", target=200.0,
               fmt="{:.1f}", note=f"peak while loading {peak / 2**20:.1f} MB; "
                                  f"{cur / N_ENTRIES:.0f} bytes per entry")
        log2.close()
    report("process peak RSS while recording the log", rss1, "MB", target=200.0, fmt="{:.1f}",
           note=f"{rss0:.0f} MB before the log was built")


def main() -> int:
    print(f"bench/scale.py: {os.cpu_count()} CPUs; load {os.getloadavg()[0]:.2f}")
    dag_helpers()
    comms_log()
    scheduling()
    return summary("bench/scale.py")


if __name__ == "__main__":
    raise SystemExit(main())
