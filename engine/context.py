"""LoopContext: the conductor thread and its asyncio loop, the event queue and its pump, the
emit and status helpers, start and close.

Threads: `start`/`close`/`submit` are called from any thread; `_pump`, `_emit`, `_status`,
`_apply` and `_workers_changed` run on the conductor (loop) thread; `_emitter()` hands an
executor thread an emit that goes through `put_threadsafe` (run_coroutine_threadsafe).
State owned: the loop, the queue, the conductor thread, the spill flag and the last worker figures
reported (loop thread only).
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Any

from engine.errors import EngineError, describe
from events import (AsyncEventQueue, ErrorEvent, Event, LogEvent, StatusChange, StreamChunk, StreamEnd,
                    WorkersChanged, put_threadsafe)
from models import Ticket, Track, ready_tickets

log = logging.getLogger("clutch.conductor")


class LoopContext:
    """Mixin of ConductorEngine: the loop's life and the event path."""

    def start(self) -> Any:
        if self._thread is not None:
            return self
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self.loop = loop
            self.approvals.loop = loop
            self._queue = AsyncEventQueue(loop)
            self._pump_task = loop.create_task(self._pump())
            loop.call_soon(ready.set)
            try:
                loop.run_forever()
            finally:
                pending = [t for t in asyncio.all_tasks(loop)
                           if not t.done() and t not in self._writers]
                for t in pending:
                    t.cancel()
                if pending:
                    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                # Writers are not cancelled: a pass cut short would lose the changes it had
                # taken. Let every writer (also one a cancelled task just started by saving)
                # finish; then write whatever is left.
                for _ in range(10):
                    writers = [t for t in self._writers if not t.done()]
                    if not writers:
                        break
                    loop.run_until_complete(asyncio.gather(*writers, return_exceptions=True))
                self._flush_sync()
                loop.close()

        self._thread = threading.Thread(target=run, name="clutch-conductor", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the conductor's event loop did not start")
        for n in self.notices:
            self.inbox.put(LogEvent(message=n, level="warning"))
        _freeze_startup_heap()
        self._tidy_left_trees()
        return self

    def close(self) -> None:
        if self._closed:
            return
        try:
            self.settle()       # finished tracks' worktrees are gone before the app is
        except EngineError as e:
            log.warning(f"closing with worktrees still being removed: {e}")
        self._closed = True
        self._setups.close()
        with self._lock:
            for flag in self._cancel_flags.values():
                flag.set()
        loop = self.loop
        if loop is not None and not loop.is_closed():
            # reject pending approvals so blocked executor threads return
            fut = asyncio.run_coroutine_threadsafe(self._shutdown(), loop)
            try:
                fut.result(timeout=10)
            except concurrent.futures.TimeoutError:
                log.warning("conductor shutdown took more than 10 s; stopping the loop anyway")
            loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=10)
        # Workers see their cancel flag at the next chunk or round; do not wait for a model
        # call in flight (the state they would have changed is already saved as interrupted).
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._io.shutdown(wait=True)
        self._git_pool.shutdown(wait=False, cancel_futures=True)
        # a tree being prepared is finished before the unused ones are removed (pending ones
        # are dropped), so no half-made tree is left behind
        self._prep_pool.shutdown(wait=True, cancel_futures=True)
        self._tidy_pool.shutdown(wait=True, cancel_futures=True)
        self._drain_unused_pools()
        self.comms.close()
        with self._provider_lock:
            self._close_provider()

    async def _shutdown(self) -> None:
        self.approvals.deny_all_closing()
        await self._flush()
        await self._drain_queue_once()

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def submit(self, coro: Coroutine[Any, Any, Any]) -> concurrent.futures.Future[Any]:
        """Run a coroutine on the conductor's loop from any thread."""
        if self.loop is None or self._closed:
            coro.close()
            raise RuntimeError("the engine is not running (call start() first)")
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    # -- events --------------------------------------------------------------------------------
    async def _pump(self) -> None:
        """Move events from the asyncio queue to the inbox, batching what is already queued."""
        assert self._queue is not None
        while True:
            evt = await self._queue.get()
            batch = [evt]
            while not self._queue.empty() and len(batch) < 4096:
                batch.append(self._queue.get_nowait())
            self._apply(batch)
            self.inbox.put_many(batch)

    async def _drain_queue_once(self) -> None:
        assert self._queue is not None
        self._queue.move_staged()       # events executor threads put that are not queued yet
        batch: list[Event] = []
        while not self._queue.empty():
            batch.append(self._queue.get_nowait())
        if batch:
            self._apply(batch)
            self.inbox.put_many(batch)

    def _apply(self, batch: list[Event]) -> None:
        for e in batch:
            if isinstance(e, StreamChunk):
                self.streams.append(e.stream_id, e.text)
            elif isinstance(e, StreamEnd):
                self.streams.set_state(e.stream_id, e.state)
                if not self._closed and not self._spill_queued:
                    # Ended streams' text goes to the file, off the loop, in one write for all
                    # that ended in the next half second.
                    self._spill_queued = True
                    asyncio.get_running_loop().call_later(0.5, self._queue_spill)

    def _queue_spill(self) -> None:
        if self._closed:
            return
        self._io.submit(self._spill).add_done_callback(self._spilled)

    def _spill(self) -> int:
        self._spill_queued = False      # a stream ending from now on queues another spill
        return self.streams.spill()

    def _spilled(self, fut: concurrent.futures.Future[int]) -> None:
        """A spill failed (disk full?): the text stays in memory; the user is told."""
        if fut.cancelled() or fut.exception() is None:
            return
        msg = f"could not move finished streams' text to disk: {describe(fut.exception())}"
        self.notices.append(msg)
        self.inbox.put(LogEvent(message=msg, level="warning"))

    def _emit(self, evt: Event) -> None:
        """Emit from the loop thread."""
        assert self._queue is not None
        self._queue.put_nowait(evt)

    def _emitter(self) -> Callable[[Event], Any]:
        """An emit function for executor threads: through run_coroutine_threadsafe only."""
        loop, queue = self.loop, self._queue
        if loop is None or queue is None:
            raise RuntimeError("no conductor loop: start() the engine before running agents")

        def emit(evt: Event) -> Any:
            return put_threadsafe(queue, evt, loop)
        return emit

    def _status(self, track: Track, ticket: Ticket | None, reason: str = "") -> None:
        if ticket is None:
            self._emit(StatusChange(track_id=track.id, ticket_id="", status=track.status,
                                    reason=reason))
        else:
            self._emit(StatusChange(track_id=track.id, ticket_id=ticket.id, status=ticket.status,
                                    reason=self._scrub(reason or ticket.blocked_reason)))

    def _queued_count(self) -> int:
        """Ready tickets waiting for a worker slot, over the tracks being run. A track being
        scheduled keeps its own count up to date; others are counted from their tickets."""
        with self._lock:
            return sum(self._queued[tid] if tid in self._queued else len(ready_tickets(t.tickets))
                       for tid, t in self._tracks.items()
                       if tid in self._running and not self._running[tid].done())

    def _workers_changed(self) -> None:
        """Report the worker figures when they differ from the last report (loop thread)."""
        now = (self.cap.active, self.cap.effective(), self._queued_count())
        if now != self._workers_reported:
            self._workers_reported = now
            self._emit(WorkersChanged(active=now[0], cap=now[1], queued=now[2]))

    def _fail_stream(self, stream_id: str, message: str, track_id: str = "",
                     ticket_id: str = "", emit: Callable[[Event], Any] | None = None) -> None:
        """An error on a stream, and its end. `emit`: an executor thread's emitter; the loop's
        own put by default. The message is scrubbed of keys."""
        emit = emit or self._emit
        emit(ErrorEvent(message=self._scrub(message), stream_id=stream_id, track_id=track_id,
                        ticket_id=ticket_id))
        emit(StreamEnd(stream_id=stream_id, state="failed"))


def _freeze_startup_heap() -> None:
    """Once per process, as the first engine starts: what is alive by then (the modules, the
    GUI's included, and the engine: 62,000 objects as the app opens a workspace) is moved out
    of the cyclic garbage collector's reach (`gc.freeze`). A full collection otherwise walks
    all of it whenever enough new objects have piled up, holding the GIL throughout: 34 ms on
    this 2-core machine (21 ms in the engine alone), a stall of the window and of every
    worker's set-up alike. Those objects are still freed when nothing refers to them any
    more; only a reference cycle among them is never collected (they live as long as the
    app). An SDK a provider loads later is not frozen."""
    if gc.get_freeze_count() == 0:
        gc.freeze()
