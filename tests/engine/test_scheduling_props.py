"""Property: any valid DAG runs every ticket exactly once, never before its dependencies,
with at most W workers at a time (measured inside the provider, on the real engine)."""
from __future__ import annotations

import threading
import time

from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from ai_client import ModelResponse
from conftest import fast_settings
from models import Ticket, TrackProposal, Usage


@st.composite
def dag_and_workers(draw):
    n = draw(st.integers(1, 14))
    ts = []
    for i in range(n):
        deps = draw(st.lists(st.integers(0, i - 1), unique=True, max_size=min(i, 3))) if i else []
        ts.append(Ticket(id=f"T-{i + 1:03d}", description=f"t{i}",
                         depends_on=[f"T-{d + 1:03d}" for d in deps]))
    order = draw(st.permutations(ts))
    return list(order), draw(st.integers(1, 4))


class Probe:
    """Tier 3 answers at once (one call per worker); records spans and concurrency."""
    name = "probe"

    def __init__(self):
        self.lock = threading.Lock()
        self.active = 0
        self.max_active = 0
        self.spans = {}
        self.calls = {}

    def generate(self, req, on_chunk, on_retry=None):
        with self.lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            self.calls[req.ticket_id] = self.calls.get(req.ticket_id, 0) + 1
            start = time.monotonic()
        time.sleep(0.003)
        on_chunk("done")
        with self.lock:
            self.active -= 1
            self.spans[req.ticket_id] = (start, time.monotonic())
        return ModelResponse(text="done", usage=Usage(input_tokens=1, output_tokens=1,
                                                      total_tokens=2, requests=1))


@given(dag_and_workers())
@hsettings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_valid_dag_schedules_each_ticket_once_in_order_within_the_cap(tmp_path_factory, case):
    from multi_agent_conductor import ConductorEngine
    tickets, w = case
    ws = tmp_path_factory.mktemp("ws")
    probe = Probe()
    with ConductorEngine(ws, fast_settings(max_workers=w), provider=probe,
                         auto_approve=True) as eng:
        [tr] = eng.accept_tracks([TrackProposal(title="P", goal="g",
                                                acceptance_criteria=["c"])]).result(10)
        eng.set_tickets(tr.id, tickets).result(10)
        track = eng.start_track(tr.id).result(30)
        spawns = [e["ticket_id"] for e in eng.comms.entries() if e["kind"] == "spawn"]
    assert all(t.status == "completed" for t in track.tickets)
    assert sorted(spawns) == sorted(t.id for t in tickets)          # exactly once
    assert all(probe.calls[t.id] == 1 for t in tickets)
    assert probe.max_active <= w                                     # at most W at a time
    for t in tickets:                                                # never before its deps
        for d in t.depends_on:
            assert probe.spans[t.id][0] >= probe.spans[d][1]


@st.composite
def dag_and_steps(draw):
    ts, _w = draw(dag_and_workers())
    steps = draw(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 13),
                                    st.sampled_from(["completed", "failed", "skipped", "todo"])),
                          max_size=40))
    return ts, steps


@given(dag_and_steps())
@hsettings(max_examples=300, deadline=None)
def test_ready_set_agrees_with_ready_tickets(case):
    """The scheduler's incremental ready set (a heap, re-checked on take) must give, at every
    step, n of the tickets models.ready_tickets gives, the one heading the longest chain of
    dependents first (ties in the track's order), and its count."""
    from models import Track, ready_tickets
    from multi_agent_conductor import _ReadySet
    tickets, steps = case
    track = Track(id="t", title="t", tickets=tickets)
    rs = _ReadySet(track)

    def chain(tid: str) -> int:         # the longest chain of tickets waiting on tid, by brute force
        return 1 + max((chain(t.id) for t in track.tickets if tid in t.depends_on), default=0)
    order = {t.id: (-chain(t.id), i) for i, t in enumerate(track.tickets)}
    running: list[Ticket] = []
    for n, pick, outcome in steps:
        expected = sorted(ready_tickets(track.tickets), key=lambda t: order[t.id])
        assert rs.count() == len(expected)
        taken = rs.take(n)
        assert [t.id for t in taken] == [t.id for t in expected[:n]]
        for t in taken:                     # started, as _run_track does
            t.status = "in_progress"
        running += taken
        if running:                         # one stops running: only it and its dependents
            t = running.pop(pick % len(running))
            t.status = "completed" if outcome == "todo" else outcome
            rs.touch(t.id)
        if outcome == "todo" and pick % 5 == 0:   # any other change: a full rescan
            done = [k for k in track.tickets if k.status in ("failed", "skipped")]
            if done:
                done[0].status = "todo"
                rs.rescan()
    assert rs.count(full=True) == len(ready_tickets(track.tickets))
