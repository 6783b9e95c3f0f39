"""Typed events, the conductor's asyncio event queue, and the thread-safe inbox a consumer drains.

The path of every event: a producer (a coroutine on the conductor's loop, or an executor thread
through `put_threadsafe`) -> `AsyncEventQueue` (owned by the loop) -> the engine's pump coroutine
-> `Inbox.put` -> a consumer (the GUI each frame, the CLI, the API's SSE stream) drains it.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from models import ApprovalDecision, ApprovalRequest, Usage


@dataclass(frozen=True, slots=True)
class Event:
    ts: float = field(default_factory=time.time, kw_only=True)

    @property
    def type(self) -> str:
        return type(self).__name__

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"type": self.type}
        for k, v in asdict(self).items():
            d[k] = v
        for k in ("usage", "request", "decision"):
            obj = getattr(self, k, None)
            if obj is not None and hasattr(obj, "model_dump"):
                d[k] = obj.model_dump()
        return d


@dataclass(frozen=True, slots=True)
class StreamChunk(Event):
    stream_id: str
    text: str


@dataclass(frozen=True, slots=True)
class StreamEnd(Event):
    stream_id: str
    state: str  # "done" | "failed" | "cancelled"


@dataclass(frozen=True, slots=True)
class StatusChange(Event):
    """A ticket's (ticket_id set) or a track's (ticket_id empty) status changed."""
    track_id: str
    ticket_id: str
    status: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class UsageEvent(Event):
    tier: str
    stream_id: str
    track_id: str
    ticket_id: str
    model: str
    usage: Usage


@dataclass(frozen=True, slots=True)
class ApprovalRequested(Event):
    request: ApprovalRequest


@dataclass(frozen=True, slots=True)
class ApprovalResolved(Event):
    approval_id: str
    decision: ApprovalDecision


@dataclass(frozen=True, slots=True)
class ErrorEvent(Event):
    message: str
    stream_id: str = ""
    track_id: str = ""
    ticket_id: str = ""


@dataclass(frozen=True, slots=True)
class LogEvent(Event):
    message: str
    level: str = "info"  # "info" | "warning" | "error"


@dataclass(frozen=True, slots=True)
class ProposalReady(Event):
    """Tier 1 answered: tracks await the user's review."""
    epic: str
    tracks: tuple[dict[str, Any], ...]


@dataclass(frozen=True, slots=True)
class TrackChanged(Event):
    """A track's structure changed (created, tickets planned or edited): re-read it."""
    track_id: str


@dataclass(frozen=True, slots=True)
class WorkersChanged(Event):
    active: int
    cap: int
    queued: int


class AsyncEventQueue:
    """An asyncio.Queue owned by one event loop.

    On the loop's own thread, `await put(evt)` or `put_nowait(evt)`. From any other thread,
    `put_threadsafe(evt, loop)` with the loop handed over explicitly: it goes through
    `loop.call_soon_threadsafe` (one call per batch of events put meanwhile; a bounded queue
    uses `asyncio.run_coroutine_threadsafe` per event), never touching the queue from the
    wrong thread.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, maxsize: int = 0):
        if loop is None:
            raise RuntimeError("AsyncEventQueue needs the event loop that owns it")
        self.loop = loop
        self._queue: asyncio.Queue[Event] = asyncio.Queue(maxsize)
        # Events put from other threads wait here until one loop callback moves them all into
        # the queue: one call_soon_threadsafe per batch instead of one coroutine per event.
        self._staged: list[Event] = []
        self._staged_lock = threading.Lock()
        self._staged_fut: concurrent.futures.Future[None] | None = None

    async def put(self, evt: Event) -> None:
        await self._queue.put(evt)

    def put_nowait(self, evt: Event) -> None:
        self._require_loop_thread()
        self._queue.put_nowait(evt)

    async def get(self) -> Event:
        return await self._queue.get()

    def get_nowait(self) -> Event:
        self._require_loop_thread()
        return self._queue.get_nowait()

    def empty(self) -> bool:
        return self._queue.empty()

    def qsize(self) -> int:
        return self._queue.qsize()

    def put_threadsafe(self, evt: Event, loop: asyncio.AbstractEventLoop | None
                       ) -> "asyncio.Future[None] | Any":
        """Put from a thread that is not the loop's. Returns the concurrent future."""
        return put_threadsafe(self, evt, loop)

    def _stage(self, evt: Event) -> "concurrent.futures.Future[None]":
        """Any thread: append to the staging batch; the first put of a batch schedules its
        move into the queue with `loop.call_soon_threadsafe`. Returns the batch's future, done
        once the event is in the queue. Order is kept: one FIFO, moved whole, in order."""
        with self._staged_lock:
            self._staged.append(evt)
            fut = self._staged_fut
            if fut is not None:
                return fut
            fut = self._staged_fut = concurrent.futures.Future()
        try:
            self.loop.call_soon_threadsafe(self.move_staged)
        except RuntimeError:        # the loop closed meanwhile: drop the batch, say so
            with self._staged_lock:
                if self._staged_fut is fut:
                    self._staged.clear()
                    self._staged_fut = None
            err = RuntimeError("the conductor's event loop is closed")
            fut.set_exception(err)
            raise err from None
        return fut

    def move_staged(self) -> int:
        """Loop thread: move every event staged by other threads into the queue, in order."""
        with self._staged_lock:
            batch, self._staged = self._staged, []
            fut, self._staged_fut = self._staged_fut, None
        put = self._queue.put_nowait
        for e in batch:
            put(e)
        if fut is not None and not fut.done():
            fut.set_result(None)
        return len(batch)

    def _require_loop_thread(self) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not self.loop:
            raise RuntimeError("put_nowait/get_nowait called off the queue's loop thread; "
                               "use put_threadsafe(evt, loop) from other threads")


def put_threadsafe(queue: AsyncEventQueue, evt: Event, loop: asyncio.AbstractEventLoop | None):
    """The one way an executor thread reaches the queue. A missing or closed loop is an error."""
    if loop is None:
        raise RuntimeError("no event loop given: executor threads must be handed the "
                           "conductor's loop to put events")
    if loop is not queue.loop:
        raise RuntimeError("the loop given is not the loop that owns this queue")
    if loop.is_closed():
        raise RuntimeError("the conductor's event loop is closed")
    if queue._queue.maxsize:        # bounded: each put may have to wait for room
        return asyncio.run_coroutine_threadsafe(queue.put(evt), loop)
    return queue._stage(evt)        # batched: one loop.call_soon_threadsafe per batch


class Inbox:
    """A thread-safe FIFO the engine fills and a consumer drains (the GUI once per frame).

    `subscribe()` gives additional independent inboxes (the API's SSE clients); each receives
    every event put after it subscribed. `on_put` is called after each put (the GUI wires
    `hello_imgui.request_refresh` there so an idle window wakes up).
    """

    def __init__(self, maxlen: int | None = None):
        self._lock = threading.Lock()
        self._items: deque[Event] = deque(maxlen=maxlen)
        self._subscribers: dict[int, deque[Event]] = {}
        self._ids = itertools.count(1)
        self._cond = threading.Condition(self._lock)
        self.on_put: Callable[[], None] | None = None
        self.total_put = 0

    def put(self, evt: Event) -> None:
        self.put_many((evt,))

    def put_many(self, evts: tuple[Event, ...] | list[Event]) -> None:
        if not evts:
            return
        with self._cond:
            self._items.extend(evts)
            for q in self._subscribers.values():
                q.extend(evts)
            self.total_put += len(evts)
            self._cond.notify_all()
        cb = self.on_put
        if cb is not None:
            cb()

    def drain(self, max_items: int | None = None) -> list[Event]:
        with self._lock:
            if max_items is None or max_items >= len(self._items):
                out = list(self._items)
                self._items.clear()
            else:
                out = [self._items.popleft() for _ in range(max_items)]
        return out

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    # -- subscribers (independent readers) ---------------------------------------------------
    def subscribe(self) -> int:
        with self._lock:
            sid = next(self._ids)
            self._subscribers[sid] = deque(maxlen=100_000)
            return sid

    def unsubscribe(self, sid: int) -> None:
        with self._lock:
            self._subscribers.pop(sid, None)

    def drain_subscriber(self, sid: int, timeout: float | None = None) -> list[Event]:
        """Events for one subscriber; waits up to `timeout` seconds when there are none."""
        with self._cond:
            q = self._subscribers.get(sid)
            if q is None:
                raise KeyError(f"no subscriber {sid}")
            if not q and timeout:
                self._cond.wait(timeout)
                q = self._subscribers.get(sid)
                if q is None:
                    return []
            out = list(q)
            q.clear()
            return out
