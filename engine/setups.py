"""SetUps: the critical steps in flight that background git work gives way to.

Between a ticket's last answer and its dependent's first request lie the steps every link of
the critical path pays for in worktree mode: the ticket's landing (its commit merged into the
track branch), the dependent's tree switched to the result, and its context built from that
tree. Putting the landed ticket's tree back in the pool and preparing trees for later tickets
run at the same moment otherwise, on two cores, and each of their git processes and each of
their Python steps (which hold the GIL for up to its switch interval) slows those steps. They
are wanted soon, not now: they wait here until no such step is in flight, and at most
`BACKGROUND_WAIT_S`, so a long set-up (a first checkout of a large repository) never starves
them.

Keys: ``land:<ticket>`` from the moment a ticket's checks pass (its landing follows; the
save of its checks asked for then would otherwise start first, and its pass of the state
writer, 10-20 ms of Python, slowed the landing about twofold) until its track's scheduler has
started what the landing made ready (or the ticket ended without landing); ``<ticket>`` from
a ticket's start until its context is built (before its spawn question waits for the person:
the person's reading time is background time; a phase's checkpoint, which has no set-up, ends
it at once); ``start:<track>`` from a track's start (its branch made, its first state write
asked for) until its first ready tickets have started, so that write waits for their set-up
too; ``merge:<track>`` from the moment a track's last ticket has landed (nothing left to
start) until the track reports, its merge into the person's branch made and its state
written (ended while a person reads the merge's question). A job preparing a tree for a
ticket does not wait once that ticket is in set-up itself: the ticket is waiting for it. The
state writer does not wait for a merge (``writer=True``): the merge's result needs a write
after it anyway, and the write of the track's end overlaps the merge's git process.

Threads: `begin` and `end` on any thread (the loop's, a ticket's), never blocking; `wait` on
the background threads only. State owned: the keys in flight, under the condition's lock.
"""
from __future__ import annotations

import threading
import time

BACKGROUND_WAIT_S = 0.25    # the longest a background job waits for the critical steps
MERGE = "merge:"            # a track's merge into the person's branch: ``MERGE + track id``


class SetUps:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._busy: set[str] = set()
        self._closed = False

    def begin(self, key: str) -> None:
        with self._cond:
            self._busy.add(key)

    def end(self, key: str) -> None:
        """Idempotent: a key ended twice (or never begun) is no error."""
        with self._cond:
            if key in self._busy:
                self._busy.discard(key)
                self._cond.notify_all()     # the writer may go while merges remain

    def close(self) -> None:
        """The app is closing: nothing waits any more."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def busy(self) -> frozenset[str]:
        with self._cond:
            return frozenset(self._busy)

    def wait(self, for_ticket: str = "", timeout: float | None = None,
             writer: bool = False) -> float:
        """Background thread: return once no critical step is in flight (or ``for_ticket``,
        the ticket this job prepares for, is in set-up and so waits for the job; for the
        state ``writer``, none but merges), the app closes, or ``timeout``
        (BACKGROUND_WAIT_S) passes. The seconds waited."""
        if timeout is None:
            timeout = BACKGROUND_WAIT_S
        t0 = time.monotonic()

        def free() -> bool:
            if self._closed or (for_ticket != "" and for_ticket in self._busy):
                return True
            return all(writer and k.startswith(MERGE) for k in self._busy)
        with self._cond:
            self._cond.wait_for(free, timeout)
        return time.monotonic() - t0
