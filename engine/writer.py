"""TrackWriter: the write-behind saver of tracks' state (`plan.md`, `state.toml`, metadata).

Threads: `_save`, `_after_save`, `_flush` and the writer task run on the conductor (loop)
thread; the writes themselves (`_write_snapshots`) on the one IO thread, after the critical
steps in flight (engine/setups.py); `_flush_sync` on the conductor thread as the loop stops.
State owned (loop thread only): the dirty track ids, the
save generations (asked / on disk), the waiters for a generation, the writer task and its
pacing future, the last snapshots; `_dirty_failed` (tracks whose save failed) is also touched
by the IO thread, under the track lock.
"""
from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable

from conductor_store import StoreError
from engine.errors import copy_track, describe, now_iso, settle
from events import ErrorEvent
from models import Track


class TrackWriter:
    """Mixin of ConductorEngine: coalesced, paced writes of changed tracks."""

    def _save(self, track: Track) -> None:
        """Mark a track for writing (loop thread). Writes are coalesced and done by one IO
        thread, so a burst of status changes costs one write and the loop never waits on
        disk. `await self._flush()` where the caller's result must be on disk."""
        with self._lock:
            track.updated_at = now_iso()
        self._dirty.add(track.id)
        self._save_gen += 1
        if self._writer is None or self._writer.done():
            self._writer = self._new_writer()

    def _new_writer(self) -> asyncio.Task[None]:
        """The writer task, strongly referenced until done (the loop keeps only weak ones)."""
        task = asyncio.get_running_loop().create_task(self._write_dirty())
        self._writers.add(task)
        task.add_done_callback(self._writers.discard)
        return task

    async def _write_dirty(self) -> None:
        try:
            await self._write_passes()
        except BaseException as e:       # the tickets waiting on a pass learn why, and so do we
            done, self._pass_done = self._pass_done, None
            if done is not None and not done.done():
                if isinstance(e, asyncio.CancelledError):
                    done.cancel()
                else:
                    done.set_exception(e)
            if not isinstance(e, asyncio.CancelledError):
                self._emit(ErrorEvent(message=f"could not write the tracks' state: "
                                              f"{describe(e)}; it is kept in memory"))
            # what waited to be reported after this write is reported now: the write's own
            # failure is the error above, and a status must not go unreported
            waiting, self._save_waiters = self._save_waiters, collections.deque()
            for _gen, report in waiting:
                report()
            raise

    def _after_save(self, report: Callable[[], None]) -> None:
        """Loop thread: call `report` once every change made so far is on disk (at once when
        it already is). The writer calls it after the pass that covers those changes."""
        target = self._save_gen
        idle = self._writer is None or self._writer.done()
        # on disk already; or nothing left to write though the generation lags: a pass failed
        # after taking the changes (its error was reported), and no later pass will come
        if self._saved_gen >= target or (idle and not self._dirty):
            report()
            return
        self._save_waiters.append((target, report))
        if idle:
            self._writer = self._new_writer()

    async def _write_passes(self) -> None:
        loop = asyncio.get_running_loop()
        while self._dirty:
            gen = self._save_gen          # this pass writes every change up to here
            started = time.monotonic()
            ids = sorted(self._dirty)
            self._dirty.clear()
            with self._lock:
                snaps = [self._snapshot(self._tracks[i]) for i in ids if i in self._tracks]
            waited = await loop.run_in_executor(self._io, self._write_after_setups, snaps)
            took = time.monotonic() - started - waited
            self._saved_gen = gen
            waiting = self._save_waiters
            while waiting and waiting[0][0] <= gen:    # targets only grow: oldest first
                waiting.popleft()[1]()
            done, self._pass_done = self._pass_done, None
            if done is not None and not done.done():
                done.set_result(None)
            if took > 0.005 and self._dirty and not self._closed:
                # A big track takes long to copy, render and write: keep the IO thread (and the
                # GIL it holds while rendering) at most about a quarter busy, and passes at
                # least 300 ms apart; what changes meanwhile goes into the next pass. Only
                # reports of completions wait for it (a finished ticket's slot and dependents
                # are free at once); a caller of _flush (a finished track, a user's action)
                # cuts the pause short. Small tracks (< 5 ms a pass) are never delayed.
                pace = self._pace = loop.create_future()
                timer = loop.call_later(max(3 * took, 0.3), settle, pace)
                try:
                    await pace
                finally:
                    timer.cancel()
                    self._pace = None

    def _snapshot(self, track: Track) -> Track:
        """The track copied for the writer (loop thread), sharing the previous snapshot's
        copy of every ticket that has not changed since: a pass over a 1,000-ticket track
        where a few tickets changed copies those few. Only the last few tracks are kept."""
        snap = copy_track(track, self._last_snaps.pop(track.id, None))
        self._last_snaps[track.id] = snap
        while len(self._last_snaps) > 8:
            self._last_snaps.popitem(last=False)
        return snap

    def _write_after_setups(self, snaps: list[Track]) -> float:
        """IO thread: the pass, once no critical step is in flight (a landing, a dependent's
        tree and context: engine/setups.py; at most BACKGROUND_WAIT_S): rendering and
        writing a track holds the GIL those steps need, and nothing waits for it but
        reports of completions and flushes (and not for a track's merge: setups.py). The
        seconds it waited."""
        waited = self._setups.wait(writer=True)
        self._write_snapshots(snaps)
        return waited

    def _write_snapshots(self, snaps: list[Track]) -> None:
        # The log first: what the state files say happened (a spawn, a completion) is never
        # newer on disk than the comms lines about it (the loop queues its lines unwritten).
        self.comms.flush()
        for snap in snaps:
            try:
                self.store.save_track(snap)
            except (OSError, StoreError) as e:   # disk full, permissions: keep it in memory
                self.inbox.put(ErrorEvent(message=f"could not save track {snap.id}: {e}; the "
                                                  f"state is kept in memory and saved on the "
                                                  f"next change", track_id=snap.id))
                self.notices.append(f"save failed for {snap.id}: {e}")
                with self._lock:
                    self._dirty_failed.add(snap.id)

    async def _flush(self) -> None:
        """Wait until every change made so far is on disk. Changes made meanwhile (other
        tickets starting or finishing) do not keep it waiting: it waits for the write pass
        that covers its own changes, not for the writer to run out of work."""
        loop = asyncio.get_running_loop()
        target = self._save_gen
        while self._saved_gen < target:
            if self._writer is None or self._writer.done():
                if not self._dirty:
                    return
                self._writer = self._new_writer()
            if self._pace is not None:        # someone waits: no pause before the next pass
                settle(self._pace)
            if self._pass_done is None or self._pass_done.done():
                self._pass_done = loop.create_future()
            # one future for every waiter: the writer resolves it after each pass, or sets its
            # exception if it fails (which then raises here)
            await self._pass_done

    def _flush_sync(self) -> None:
        """Write whatever is still dirty, from the conductor thread as the loop stops."""
        ids = sorted(self._dirty | self._dirty_failed)
        self._dirty.clear()
        with self._lock:
            snaps = [copy_track(self._tracks[i]) for i in ids if i in self._tracks]
        self._write_snapshots(snaps)
