"""Soak: 200 tickets, 8 workers, the offline model at full speed, every approval answered by a
test thread in random order. No deadlock; everything completes; every approval reaches the
right worker exactly once. (bench/soak.py runs the same for minutes and reports memory.)"""
from __future__ import annotations

import random
import threading
import time

from conftest import fast_settings
from models import ApprovalDecision, Ticket, TrackProposal


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
                    eng.resolve(req.id, ApprovalDecision(approved=True, payload=payload))
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
