"""Scheduler: running a track's ticket DAG under the worker cap, pausing and resuming it.

Threads: `start_track`, `pause_track`, `resume_track` are called from any thread (they return
futures or hand work to the loop with call_soon_threadsafe); `_run_track`, the wake-ups and
the blocking rules run on the conductor (loop) thread. State owned (loop thread): each running
track's ReadySet (`_ready_sets`), its wake event (`_wakes`) and its queued count (`_queued`);
under the track lock (`_lock`): the run futures (`_running`) and the paused set (`_paused`).
"""
from __future__ import annotations

import asyncio
import concurrent.futures

from engine.errors import EngineError, copy_track
from engine.ready import ReadySet
from engine.setups import MERGE
from models import BLOCKING_STATES, SATISFIED_STATES, DagError, Ticket, Track, dag_problems


class Scheduler:
    """Mixin of ConductorEngine: the DAG scheduler."""

    def start_track(self, track_id: str) -> concurrent.futures.Future[Track]:
        """Run the track's tickets; the future completes when nothing more can run."""
        track = self._get(track_id)
        if not track.tickets:
            raise EngineError(f"track {track_id} has no tickets yet: plan it (Tier 2) first")
        problems = dag_problems(track.tickets)
        if problems:
            raise DagError(problems)
        with self._lock:
            f = self._running.get(track_id)
            if f is not None and not f.done():
                raise EngineError(f"track {track_id} is already running")
            self._paused.discard(track_id)
            fut = self.submit(self._run_track(track_id))
            self._running[track_id] = fut
        return fut

    def run_track(self, track_id: str) -> Track:
        """Blocking convenience: start and wait."""
        return self.start_track(track_id).result()

    def pause_track(self, track_id: str) -> None:
        """Start no new workers on this track; running ones finish their ticket."""
        track = self._get(track_id)
        with self._lock:
            self._paused.add(track_id)
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self._mark_paused, track)

    def _mark_paused(self, track: Track) -> None:
        if track.id in self._paused and track.status == "in_progress":
            with self._lock:
                track.status = "paused"
            self._save(track)
            self._status(track, None)
        self._wake_all()

    def resume_track(self, track_id: str) -> concurrent.futures.Future[Track] | None:
        track = self._get(track_id)
        with self._lock:
            self._paused.discard(track_id)
            running = self._running.get(track_id)
            if running is not None and not running.done():
                if self.loop is not None:
                    self.loop.call_soon_threadsafe(self._mark_resumed, track)
                return running
        return self.start_track(track_id)

    def _mark_resumed(self, track: Track) -> None:
        if track.status == "paused":
            with self._lock:
                track.status = "in_progress"
            self._save(track)
            self._status(track, None)
        self._wake_all()

    def _wake_all(self) -> None:
        """Statuses may have changed anywhere: every running track rescans, and wakes."""
        for rs in self._ready_sets.values():
            rs.rescan()
        for w in self._wakes.values():
            w.set()

    def _wake_after(self, track: Track, ticket: Ticket) -> None:
        """A ticket stopped running: its track re-checks it and its dependents only; every
        track wakes (a worker slot may be free)."""
        rs = self._ready_sets.get(track.id)
        if rs is not None:
            rs.touch(ticket.id)
        for w in self._wakes.values():
            w.set()

    async def _run_track(self, track_id: str) -> Track:
        try:
            return await self._track_life(track_id)
        finally:        # however it ended, background git no longer waits for its merge
            self._setups.end(MERGE + track_id)

    async def _track_life(self, track_id: str) -> Track:
        track = self._get(track_id)
        wake = self._wakes[track_id] = asyncio.Event()
        running: dict[str, Ticket] = {}      # tickets whose worker thread has not reported back
        with self._lock:
            track.status = "in_progress"
            for t in track.tickets:
                if t.status == "in_progress":       # left over from an interrupted run
                    t.status = "todo"
        merging = MERGE + track_id          # its end: the merge, the last write (setups.py)
        starting = f"start:{track_id}"     # the branch and the first set-ups: the state
        if self._tb is not None:          # write asked for here waits for them (setups.py)
            self._setups.begin(starting)
        self._save(track)
        self._status(track, None)
        try:
            await self._start_branch(track)
        except BaseException:
            self._setups.end(starting)
            raise
        # Incremental: the ready set re-checks only what changed, and a finished ticket reports
        # itself through a callback, so an iteration costs O(what changed), not O(tickets).
        ready_set = self._ready_sets[track_id] = ReadySet(track)
        finished: list[str] = []
        landed: list[str] = []      # finished since the last start of ready tickets
        accepted = True

        def on_done(tid: str) -> None:
            finished.append(tid)
            wake.set()
        try:
            while True:
                paused = track_id in self._paused
                if not paused:
                    free = self.cap.free_slots()
                    batch = [t for t in (ready_set.take(free) if free > 0 else ())
                             if t.id not in running]
                    after = self._lead_first(track, batch, ready_set)
                    for t in batch:
                        running[t.id] = t
                        self._start_ticket(track, t, on_done,
                                           after=after if t is not batch[0] else None)
                ending = not running and not paused and not ready_set.count(full=True)
                if ending and self._in_worktrees(track):     # before the landings' keys end:
                    self._setups.begin(merging)    # the track's merge is the critical step now
                for tid in landed:     # what they made ready has started: background git goes
                    self._setups.end(f"land:{tid}")
                landed.clear()
                self._setups.end(starting)
                self._queued[track_id] = ready_set.count()
                self._workers_changed()
                if not running:
                    if paused:
                        wake.clear()
                        await wake.wait()
                        continue
                    if ending:
                        if self._closed:
                            break
                        verdict = await self._accept_track(track)
                        if verdict == "fix":      # a fix ticket joined the track: run it
                            self._setups.end(merging)
                            ready_set.rescan()
                            continue
                        accepted = verdict == "passed"
                        break
                    # ready, but every slot is held by other tracks: wait for one
                    wake.clear()
                    await wake.wait()
                    continue
                if not finished:
                    wake.clear()
                    await wake.wait()
                for tid in finished:
                    running.pop(tid, None)
                landed.extend(finished)
                finished.clear()
        finally:
            if running:      # stopped early (cancelled as the app closes): interrupted tickets
                with self._lock:
                    for t in running.values():
                        if t.status == "in_progress":
                            t.status = "todo"
                            t.blocked_reason = ""
                        flag = self._cancel_flags.get(t.id)
                        if flag is not None:
                            flag.set()
                self._save(track)
            for t in track.tickets:         # none is left in flight by a stop
                self._setups.end(f"land:{t.id}")
            self._setups.end(starting)
            self._wakes.pop(track_id, None)
            self._ready_sets.pop(track_id, None)
            self._queued.pop(track_id, None)
        with self._lock:
            states = {t.status for t in track.tickets}
            if track_id in self._paused:
                track.status = "paused"
            elif states <= SATISFIED_STATES and accepted:
                track.status = "completed"
            else:
                track.status = "failed"
        self._save(track)
        # its worktrees go unless a worker still runs (the app closing: they are reused on resume)
        tidy = await self._finish_branch(track, clean=not running and not self._closed
                                         and track.status != "paused")
        self._save(track)
        try:
            await self._flush()
        finally:
            if tidy is not None:   # after the last write, before the report (`settle` sees it)
                tidy()
        self._status(track, None)
        self._workers_changed()
        return copy_track(track)


    def _block_dependents(self, track: Track, failed: Ticket) -> list[Ticket]:
        """Every ticket downstream of a failed or cancelled one is blocked, with the reason.
        Returns the tickets it blocked."""
        blocked: list[Ticket] = []
        by_dep: dict[str, list[Ticket]] = {}
        for t in track.tickets:
            for d in t.depends_on:
                by_dep.setdefault(d, []).append(t)
        stack = [failed.id]
        while stack:
            cur = stack.pop()
            for t in by_dep.get(cur, []):
                if t.status == "todo":
                    t.status = "blocked"
                    t.blocked_reason = f"depends on {failed.id}, which {failed.status}"
                    stack.append(t.id)
                    blocked.append(t)
        return blocked

    def _unblock(self, track: Track) -> None:
        """Blocked tickets whose dependencies are no longer failed go back to todo."""
        changed = True
        while changed:
            changed = False
            status = {t.id: t.status for t in track.tickets}
            for t in track.tickets:
                if t.status == "blocked" and not any(
                        status.get(d) in BLOCKING_STATES for d in t.depends_on):
                    t.status = "todo"
                    t.blocked_reason = ""
                    changed = True

