"""Soak: 200 tickets, 8 workers, the offline model at full speed, every approval answered by a
test thread in random order. No deadlock; everything completes; every approval reaches the
right worker exactly once. (bench/soak.py runs the same for minutes and reports memory.)"""
from __future__ import annotations

import random
import threading
import time

from conftest import fast_settings
from models import Approved, Denied, Ticket, TrackProposal


def soak_tickets(n: int, seed: int) -> list[Ticket]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        deps = sorted({f"T-{rng.randrange(max(i - 12, 0), i) + 1:03d}" for _ in range(rng.randint(0, 2))}) if i else []
        out.append(Ticket(id=f"T-{i + 1:03d}", description=f"soak ticket {i + 1}",
                          target_files=[f"soak/f{i + 1:03d}.txt"], depends_on=deps))
    return out


def test_soak_200_tickets_8_workers_random_order_approvals(workspace):
    from multi_agent_conductor import ConductorEngine
    rng = random.Random(7)
    answered: dict[str, int] = {}
    kinds: dict[str, int] = {}
    stop = threading.Event()
    with ConductorEngine(workspace, fast_settings(max_workers=8), auto_approve=False) as eng:
        def approver():
            while not stop.is_set():
                pending = eng.pending_approvals()
                rng.shuffle(pending)                      # answer in random order
                for req in pending[: rng.randint(1, 4)]:
                    answered[req.id] = answered.get(req.id, 0) + 1
                    kinds[req.kind] = kinds.get(req.kind, 0) + 1
                    # edit some shell commands so we can check each reached the right worker
                    payload = None
                    if req.kind == "shell":
                        payload = {"command": f"echo ran-for-{req.ticket_id}", "cwd": "."}
                    eng.resolve(req.id, Approved(edits=payload))
                time.sleep(0.001)
        th = threading.Thread(target=approver, daemon=True)
        th.start()
        [tr] = eng.accept_tracks([TrackProposal(title="Soak", goal="g",
                                                acceptance_criteria=["c"])]).result(10)
        eng.set_tickets(tr.id, soak_tickets(200, 3)).result(10)
        t0 = time.monotonic()
        track = eng.start_track(tr.id).result(timeout=240)   # no deadlock
        elapsed = time.monotonic() - t0
        stop.set()
        th.join(5)
        entries = eng.comms.entries()
    assert all(t.status == "completed" for t in track.tickets), \
        [(t.id, t.status, t.blocked_reason) for t in track.tickets if t.status != "completed"]
    assert all(n == 1 for n in answered.values())             # each answered exactly once
    assert kinds["spawn"] == 200 and kinds["shell"] == 200 and kinds["tool"] >= 400
    decisions = [e for e in entries if e["kind"] == "approval"]
    assert len(decisions) == len(answered)
    # the edited command ran in the worker it was meant for, and only there
    for e in entries:
        if e["kind"] == "tool_result" and e["data"]["name"] == "run_shell":
            assert e["data"]["result"]["output"].strip() == f"ran-for-{e['ticket_id']}"
    print(f"soak: 200 tickets in {elapsed:.1f}s")


def test_memory_stays_flat_when_the_same_work_runs_again(workspace):
    """The work done must not grow memory: comms entries and stream text live in their files
    (read back on demand), finished agents keep only their context figures. A 40-ticket track
    is run five times; Python's traced memory, over the runs after the first, may grow only by
    the log's index (8 bytes an entry) and noise, besides one step of the interpreter's own."""
    import gc
    import tracemalloc
    from multi_agent_conductor import ConductorEngine
    with ConductorEngine(workspace, fast_settings(max_workers=8), auto_approve=True) as eng:
        [tr] = eng.accept_tracks([TrackProposal(title="Again", goal="g",
                                                acceptance_criteria=["c"])]).result(30)
        sizes = []
        entries = []
        tracemalloc.start()
        try:
            for _ in range(5):
                eng.set_tickets(tr.id, soak_tickets(40, 3)).result(30)
                track = eng.start_track(tr.id).result(120)
                assert all(t.status == "completed" for t in track.tickets)
                deadline = time.monotonic() + 10       # the last streams' spills, off the loop
                while any(eng.streams._parts.get(s) for s, i in eng.streams.info().items()
                          if i["state"] != "streaming") and time.monotonic() < deadline:
                    time.sleep(0.05)
                del track
                eng.inbox.drain()          # as the GUI does every frame (a consumer's job)
                gc.collect()
                sizes.append(tracemalloc.get_traced_memory()[0])
                entries.append(len(eng.comms))
        finally:
            tracemalloc.stop()
        text = eng.streams.text("Tier 3 (Worker): T-001")
        assert text.count("T-001") >= 5, "every run's text is still readable, from disk"
        log_bytes = eng.comms.path.stat().st_size
    # Growth with the work shows in every run; one step in one run does not (CPython's
    # interned-string table doubles once it is full: 1.9 MB at once, in whichever run crosses
    # its threshold, e.g. the fifth when the GUI tests were collected in the same session).
    # So the largest run-to-run step is left out, and held to a bound of its own.
    steps = [b - a for a, b in zip(sizes, sizes[1:])]
    growth = sum(steps) - max(steps)
    index = (entries[-1] - entries[0]) * 8
    assert log_bytes > 400_000
    assert growth < index + 100_000, (
        f"memory grew {growth:,} bytes over three of four runs that wrote "
        f"{entries[-1] - entries[0]:,} log entries: {sizes}")
    assert max(steps) < 4_000_000, f"one run added {max(steps):,} bytes: {sizes}"
