"""ReadySet: the tickets of one running track that may start now, kept incrementally.

Threads: the conductor (asyncio loop) thread only; the scheduler of one track owns its
ReadySet. State owned: the index of the track's tickets (by id, position, dependents), the
candidates to re-check, and the heap of ready tickets. It reads the tickets' statuses, which
the scheduler changes under the engine's track lock on the same thread.
"""
from __future__ import annotations

import heapq

from models import SATISFIED_STATES, Ticket, Track


class ReadySet:
    """The tickets of one running track that may start now, kept incrementally (loop thread).

    `take(n)` gives n of the tickets `models.ready_tickets(track.tickets)` would return, the
    one heading the longest chain of dependents first (the critical path: starting it early
    shortens the makespan), ties in the track's order (`priority`); `count()` says how many,
    without scanning the whole track each time: a ticket that stops running only re-checks
    itself and its dependents (`touch`); anything else that changes statuses goes through
    the scheduler's `_wake_all`, which asks for a full rescan (`rescan`). Ready tickets wait
    in a heap by position; each is re-checked against its dependencies' current statuses when
    taken, so a stale entry is dropped, never started.
    """

    def __init__(self, track: Track):
        self.track = track
        self._tickets: list[Ticket] | None = None
        self._full = True
        self._candidates: set[str] = set()
        self._ready: set[str] = set()
        self._heap: list[tuple[int, str]] = []
        self._index()

    def _index(self) -> None:
        self._tickets = self.track.tickets
        self._by_id = {t.id: t for t in self._tickets}
        self._dependents: dict[str, list[str]] = {}
        for t in self._tickets:
            for d in t.depends_on:
                self._dependents.setdefault(d, []).append(t.id)
        self._pos = priority(self._tickets, self._dependents)
        self._full = True

    def rescan(self) -> None:
        self._full = True

    def touch(self, ticket_id: str) -> None:
        self._candidates.add(ticket_id)
        self._candidates.update(self._dependents.get(ticket_id, ()))

    def _ok(self, t: Ticket) -> bool:
        if t.status != "todo":
            return False
        by_id = self._by_id
        for d in t.depends_on:
            dt = by_id.get(d)
            if dt is None or dt.status not in SATISFIED_STATES:
                return False
        return True

    def _refresh(self) -> None:
        if self.track.tickets is not self._tickets:     # replaced meanwhile: index again
            self._index()
        if self._full:
            self._full = False
            self._candidates.clear()
            self._heap = [(self._pos[t.id], t.id) for t in self._tickets  # type: ignore[union-attr]
                          if self._ok(t)]
            heapq.heapify(self._heap)
            self._ready = {tid for _, tid in self._heap}
            return
        for tid in self._candidates:
            t = self._by_id.get(tid)
            if t is not None and self._ok(t):
                if tid not in self._ready:
                    self._ready.add(tid)
                    heapq.heappush(self._heap, (self._pos[tid], tid))
            else:
                self._ready.discard(tid)      # its heap entry is skipped when reached
        self._candidates.clear()

    def take(self, n: int) -> list[Ticket]:
        """Up to n ready tickets, longest chain of dependents first, removed from the set."""
        self._refresh()
        out: list[Ticket] = []
        heap = self._heap
        while heap and len(out) < n:
            _, tid = heapq.heappop(heap)
            if tid not in self._ready:
                continue                      # stale: no longer ready, or taken
            self._ready.discard(tid)
            t = self._by_id[tid]
            if self._ok(t):
                out.append(t)
        return out

    def chain(self, ticket_id: str) -> int:
        """The length of the longest chain of tickets waiting on ``ticket_id`` (itself
        included): what orders the ready tickets."""
        return -self._pos[ticket_id][0]

    def count(self, full: bool = False) -> int:
        """How many tickets are ready now (`full`: after rescanning the whole track)."""
        if full:
            self._full = True
        self._refresh()
        return len(self._ready)



def priority(tickets: list[Ticket], dependents: dict[str, list[str]]) -> dict[str, tuple[int, int]]:
    """Each ticket's place in the ready heap: (minus the length of the longest chain of
    tickets that wait on it, its position in the track). A ticket in a cycle (the scheduler
    refuses those before it runs) counts its chain as far as the cycle."""
    chain: dict[str, int] = {}
    for t in reversed(tickets):
        stack = [(t.id, False)]
        while stack:
            tid, done = stack.pop()
            if tid in chain and not done:
                continue
            if done:
                chain[tid] = 1 + max((chain.get(d, 0) for d in dependents.get(tid, ())), default=0)
                continue
            chain[tid] = 0                    # visiting: a cycle back here counts as 0
            stack.append((tid, True))
            stack.extend((d, False) for d in dependents.get(tid, ()) if d not in chain)
    return {t.id: (-chain.get(t.id, 1), i) for i, t in enumerate(tickets)}
