"""ConductorEngine: the asyncio loop thread, the event queue, approvals, Tier 1-4 runs, the DAG
scheduler.

Threads (see DESIGN.md):
- the conductor thread runs the asyncio loop: schedulers, approval futures, the event pump,
  the state writer;
- executor threads run blocking model calls and tools (Tier 1/2 planning; each Tier 3 ticket's
  whole life, `_ticket_life`: spawn approval, `run_worker_lifecycle`, commit, Tier 4 QA) and
  reach the loop only through `events.put_threadsafe(queue, evt, loop)`,
  `run_coroutine_threadsafe` (approvals) and one `call_soon_threadsafe` when a ticket ends;
- any other thread (GUI, CLI, API) calls the public methods below, which are thread-safe and
  never block on the loop (they return `concurrent.futures.Future`s).

Track and ticket objects are mutated under `self._lock`: on the loop thread, except a running
ticket's own fields, which its thread sets (result, final status) before it reports back; the
loop then saves, frees the slot and schedules. Readers on other threads take copies under the
same lock (`tracks()`, `track()`).
"""
from __future__ import annotations

import array
import asyncio
import collections
import concurrent.futures
import heapq
import logging
import re
import secrets
import threading
import time
import traceback
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import prompts
from ai_client import (AgentSession, Cancelled, CommsLog, PlanError, Provider, ProviderError,
                       ToolCall, ToolOutcome, get_history_bleed_stats, make_provider,
                       run_structured)
from conductor_store import ConductorStore, StoreError
from events import (ApprovalRequested, ApprovalResolved, AsyncEventQueue, ErrorEvent, Event,
                    Inbox, LogEvent, ProposalReady, StatusChange, StreamChunk, StreamEnd,
                    TrackChanged, WorkersChanged, put_threadsafe)
from models import (MAX_WORKERS, ApprovalDecision, ApprovalEditError, ApprovalRequest, Approved,
                    BLOCKING_STATES, BudgetPayload, DagError, Denied, EpicPlan, ShellPayload,
                    SpawnPayload, StepPayload, ToolPayload, ticket_action_refusal, edit_payload,
                    SATISFIED_STATES, Settings, Ticket, Track, TrackPlan, TrackProposal, Usage,
                    dag_problems, file_overlap_warnings, ready_tickets, stream_tier1,
                    stream_tier2, stream_tier3, stream_tier4, tick_subtasks, tickets_from_plan)
from tools import TOOL_SPECS, GitRepo, Workspace, diff_preview, tool_spec

log = logging.getLogger("clutch.conductor")

MAX_EPIC_CHARS = 100_000


class EngineError(Exception):
    """A request the engine refuses, with a message for the user."""


class ApprovalNotFound(KeyError):
    def __str__(self) -> str:  # KeyError quotes its argument; keep the sentence readable
        return str(self.args[0]) if self.args else "approval not found"


class ApprovalAlreadyResolved(EngineError):
    pass


class BudgetExceeded(Exception):
    pass


class StepStopped(Exception):
    pass


class _ReadySet:
    """The tickets of one running track that may start now, kept incrementally (loop thread).

    `take(n)` gives the first n tickets, in the track's order, of what
    `models.ready_tickets(track.tickets)` would return, and `count()` how many there are,
    without scanning the whole track each time: a ticket that stops running only re-checks
    itself and its dependents (`touch`); anything else that changes statuses goes through
    `ConductorEngine._wake_all`, which asks for a full rescan (`rescan`). Ready tickets wait
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
        self._pos = {t.id: i for i, t in enumerate(self._tickets)}
        self._dependents: dict[str, list[str]] = {}
        for t in self._tickets:
            for d in t.depends_on:
                self._dependents.setdefault(d, []).append(t.id)
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
            self._heap = [(i, t.id) for i, t in enumerate(self._tickets)  # type: ignore[arg-type]
                          if self._ok(t)]                 # already in order: a valid heap
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
        """Up to n ready tickets, first in the track's order, removed from the set."""
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

    def count(self, full: bool = False) -> int:
        """How many tickets are ready now (`full`: after rescanning the whole track)."""
        if full:
            self._full = True
        self._refresh()
        return len(self._ready)


class StreamBuffers:
    """Text and state of every stream, thread-safe. Appended by the event pump.

    With a `spill_path`, `spill()` (called off the loop after streams end) appends the text
    of every ended stream to that one file, in a single write, and drops it from memory; the
    stream remembers where its pieces are, and `text()` reads them back. So memory holds only
    what is streaming now, however long the session; a retried ticket's stream keeps its
    earlier attempts on disk."""

    def __init__(self, spill_path: Path | None = None) -> None:
        self._lock = threading.Lock()
        self._parts: dict[str, list[str]] = {}   # text not in the file yet
        self._len: dict[str, int] = {}
        self._state: dict[str, str] = {}
        self._spill_path = spill_path
        # stream -> its pieces in the file, flat: byte offset, bytes, characters, ... (24 bytes
        # a piece: memory grows by that per stream that ended, not by its text)
        self._pieces: dict[str, array.array] = {}
        # bytes of complete pieces in the file; a file there already (a resumed session) is
        # kept as it is and new pieces go after it
        self._file_size = spill_path.stat().st_size if spill_path and spill_path.exists() else 0
        self._spill_lock = threading.Lock()      # one spill at a time

    def append(self, stream_id: str, text: str) -> None:
        with self._lock:
            self._parts.setdefault(stream_id, []).append(text)
            self._len[stream_id] = self._len.get(stream_id, 0) + len(text)
            self._state[stream_id] = "streaming"

    def set_state(self, stream_id: str, state: str) -> None:
        with self._lock:
            self._parts.setdefault(stream_id, [])
            self._len.setdefault(stream_id, 0)
            self._state[stream_id] = state

    def spill(self) -> int:
        """Move the text of every stream that is not streaming to the file, in one write, and
        drop it from memory (any thread; disk I/O). Returns the streams moved. Nothing to do
        without a spill_path. A failed write raises and keeps the text in memory (the next
        spill writes over what it left)."""
        if self._spill_path is None:
            return 0
        with self._spill_lock:
            with self._lock:
                todo = [(sid, len(parts), "".join(parts)) for sid, parts in self._parts.items()
                        if parts and self._state.get(sid) != "streaming"]
                start = self._file_size
            if not todo:
                return 0
            blobs = [text.encode("utf-8") for _, _, text in todo]
            with open(self._spill_path, "r+b" if start else "wb") as f:
                f.seek(start)
                f.truncate()
                f.write(b"".join(blobs))
            with self._lock:
                off = start
                for (sid, k, text), blob in zip(todo, blobs):
                    self._parts[sid] = self._parts[sid][k:]      # appended while we wrote
                    self._pieces.setdefault(sid, array.array("Q")).extend(
                        (off, len(blob), len(text)))
                    off += len(blob)
                self._file_size = off
            return len(todo)

    def text(self, stream_id: str, offset: int = 0) -> str:
        with self._lock:
            if stream_id not in self._parts:
                raise KeyError(stream_id)
            parts = self._parts[stream_id]
            if len(parts) > 1:
                parts = self._parts[stream_id] = ["".join(parts)]
            tail = parts[0] if parts else ""
            flat = self._pieces.get(stream_id)
            pieces = list(zip(flat[0::3], flat[1::3], flat[2::3])) if flat else []
        out: list[str] = []
        if pieces:
            assert self._spill_path is not None
            # the file only grows; a piece's bytes never change once recorded
            with open(self._spill_path, "rb") as f:
                for off, nbytes, nchars in pieces:
                    if offset >= nchars:
                        offset -= nchars
                        continue
                    f.seek(off)
                    out.append(f.read(nbytes).decode("utf-8")[offset:])
                    offset = 0
        out.append(tail[offset:])
        return "".join(out)

    def info(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {sid: {"length": self._len.get(sid, 0), "state": self._state.get(sid, "idle")}
                    for sid in self._len}


class ConductorEngine:
    """The whole hierarchy, headless. Use as a context manager, or call start()/close()."""

    def __init__(self, workspace: str | Path, settings: Settings | None = None, *,
                 provider: Provider | None = None, inbox: Inbox | None = None,
                 auto_approve: bool = False, session_id: str | None = None,
                 resume: bool = False):
        self.workspace = Path(workspace).expanduser().resolve()
        if not self.workspace.is_dir():
            raise EngineError(f"workspace {self.workspace} is not a directory")
        self.store = ConductorStore(self.workspace)
        self.store.ensure_layout()
        self.notices: list[str] = []
        if settings is None:
            settings, notices = self.store.load_settings()
            self.notices.extend(notices)
        self.settings = settings
        self._provider = provider
        self._provider_lock = threading.Lock()
        self.inbox = inbox if inbox is not None else Inbox()
        self.auto_approve = auto_approve
        self.ws = Workspace(self.workspace, shell_timeout_s=settings.shell_timeout_s)
        self.session_id, self.session_dir = self._session(session_id, resume)
        self.comms = CommsLog(self.session_dir / "comms.jsonl")
        if self.comms.set_aside:
            self.notices.append(f"{len(self.comms.set_aside)} torn or unreadable comms-log "
                                f"line(s) were set aside next to {self.comms.path}")
        self.streams = StreamBuffers(self.session_dir / "streams.txt")
        self._spill_queued = False
        self._lock = threading.RLock()
        self._tracks: dict[str, Track] = {}
        self._load_tracks()
        self._pending: dict[str, tuple[ApprovalRequest, asyncio.Future[ApprovalDecision]]] = {}
        # ids of approvals answered lately, so a second answer is told so (the oldest are
        # forgotten: a very late second answer is told the approval is not pending)
        self._resolved: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._cancel_flags: dict[str, threading.Event] = {}
        self._running: dict[str, concurrent.futures.Future[Track]] = {}
        self._paused: set[str] = set()
        self._wakes: dict[str, asyncio.Event] = {}
        self._active = 0
        self._cap = settings.max_workers
        self._rate_limited_until = 0.0
        self._sessions: dict[str, AgentSession] = {}
        self._written: dict[str, set[str]] = {}   # ticket id -> paths its worker wrote
        self._budget_lock = threading.Lock()
        self.proposal: EpicPlan | None = None
        self.last_epic = ""
        self._git: GitRepo | None = None
        self._git_lock = threading.Lock()
        if settings.git_commits:
            self._git, reason = GitRepo.detect(self.workspace)
            if self._git is None:
                self.notices.append(f"Git commits per ticket are off: {reason}")
        self.loop: asyncio.AbstractEventLoop | None = None
        self._queue: AsyncEventQueue | None = None
        self._thread: threading.Thread | None = None
        self._pump_task: asyncio.Task[None] | None = None
        # a thread per running ticket (its whole life, waiting for its spawn approval included)
        # and room beside them for Tier 1/2 planning, so a full house never queues a plan
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=MAX_WORKERS + 16, thread_name_prefix="clutch-exec")
        self._io = concurrent.futures.ThreadPoolExecutor(max_workers=1,
                                                         thread_name_prefix="clutch-io")
        self._dirty: set[str] = set()
        self._last_snaps: collections.OrderedDict[str, Track] = collections.OrderedDict()
        self._workers_reported: tuple[int, int, int] | None = None
        self._dirty_failed: set[str] = set()
        self._writer: asyncio.Task[None] | None = None
        self._ready_sets: dict[str, _ReadySet] = {}   # per track being scheduled
        self._queued: dict[str, int] = {}             # its ready tickets waiting for a slot
        self._save_gen = 0           # bumped by each _save (loop thread)
        self._saved_gen = 0          # every change up to this generation is on disk
        self._pass_done: asyncio.Future[None] | None = None   # resolved after each write pass
        self._pace: asyncio.Future[None] | None = None   # the writer's pause between passes
        # (save generation, report) to call once that generation is on disk: completions
        self._save_waiters: collections.deque[tuple[int, Callable[[], None]]] = collections.deque()
        self._writers: set[asyncio.Task[None]] = set()
        self._closed = False

    # =========================================================================================
    # lifecycle
    # =========================================================================================
    def _session(self, session_id: str | None, resume: bool) -> tuple[str, Path]:
        root = self.store.sessions_dir()
        root.mkdir(parents=True, exist_ok=True)
        if session_id is None and resume:
            existing = sorted(p.name for p in root.iterdir() if (p / "comms.jsonl").exists())
            session_id = existing[-1] if existing else None
        if session_id is None:
            session_id = time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)
        d = root / session_id
        d.mkdir(parents=True, exist_ok=True)
        return session_id, d

    def _load_tracks(self) -> None:
        tracks, problems = self.store.load_tracks()
        for p in problems:
            self.notices.append(str(p))
        for t in tracks:
            for tk in t.tickets:
                if tk.status == "in_progress":     # interrupted: start again
                    tk.status = "todo"
                    tk.assigned_to = ""
            if t.status == "in_progress":
                t.status = "paused" if any(tk.status == "todo" for tk in t.tickets) else t.status
            self._tracks[t.id] = t

    def start(self) -> "ConductorEngine":
        if self._thread is not None:
            return self
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self.loop = loop
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
        return self

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
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
        self.comms.close()
        with self._provider_lock:
            self._close_provider()

    async def _shutdown(self) -> None:
        for aid, (_req, fut) in list(self._pending.items()):
            if not fut.done():
                fut.set_result(Denied(reason="the app is closing", source="engine"))
        self._pending.clear()
        await self._flush()
        await self._drain_queue_once()

    def __enter__(self) -> "ConductorEngine":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def submit(self, coro: Coroutine[Any, Any, Any]) -> concurrent.futures.Future[Any]:
        """Run a coroutine on the conductor's loop from any thread."""
        if self.loop is None or self._closed:
            coro.close()
            raise RuntimeError("the engine is not running (call start() first)")
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    # =========================================================================================
    # events
    # =========================================================================================
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
        msg = f"could not move finished streams' text to disk: {_describe(fut.exception())}"
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
                                    reason=reason or ticket.blocked_reason))

    def _queued_count(self) -> int:
        """Ready tickets waiting for a worker slot, over the tracks being run. A track being
        scheduled keeps its own count up to date; others are counted from their tickets."""
        with self._lock:
            return sum(self._queued[tid] if tid in self._queued else len(ready_tickets(t.tickets))
                       for tid, t in self._tracks.items()
                       if tid in self._running and not self._running[tid].done())

    def _workers_changed(self) -> None:
        """Report the worker figures when they differ from the last report (loop thread)."""
        now = (self._active, self.effective_cap(), self._queued_count())
        if now != self._workers_reported:
            self._workers_reported = now
            self._emit(WorkersChanged(active=now[0], cap=now[1], queued=now[2]))

    # =========================================================================================
    # provider, settings
    # =========================================================================================
    def provider(self) -> Provider:
        with self._provider_lock:
            if self._provider is None:
                self._provider = make_provider(self.settings)
            return self._provider

    def update_settings(self, settings: Settings, save: bool = True) -> None:
        """Replace the settings (thread-safe). A provider change takes effect for new agents."""
        with self._provider_lock:
            if (settings.provider != self.settings.provider
                    or settings.gemini != self.settings.gemini
                    or settings.offline_pace_s != self.settings.offline_pace_s
                    or settings.offline_latency_s != self.settings.offline_latency_s):
                # running agents keep the old provider (and its open client) until they end
                self._provider = None
            self.settings = settings
        with self._lock:
            self._cap = settings.max_workers
        if save:
            self.store.save_settings(settings)
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self._wake_all)

    def _close_provider(self) -> None:
        """Drop the provider and close its HTTP client (at engine close only)."""
        p, self._provider = self._provider, None
        close = getattr(p, "close", None)
        if callable(close):
            close()

    def set_max_workers(self, n: int) -> None:
        """The worker cap for this session (not saved). Out of 1..MAX_WORKERS is an error."""
        if not 1 <= int(n) <= MAX_WORKERS:
            raise EngineError(f"max_workers must be between 1 and {MAX_WORKERS}, not {n}")
        self.update_settings(self.settings.model_copy(update={"max_workers": int(n)}),
                             save=False)

    def effective_cap(self) -> int:
        cap = self._cap
        if time.monotonic() < self._rate_limited_until:
            cap = max(1, cap // 2)
        return cap

    def note_rate_limited(self, retry_after: float) -> None:
        """A provider hit a rate limit: halve the worker cap until it has passed."""
        with self._lock:
            self._rate_limited_until = max(self._rate_limited_until,
                                           time.monotonic() + max(retry_after, 1.0) * 2)

    # =========================================================================================
    # approvals
    # =========================================================================================
    async def ask(self, req: ApprovalRequest) -> ApprovalDecision:
        """Await the user's decision on a request (loop thread)."""
        if self.auto_approve:
            decision: ApprovalDecision = Approved(reason="--yes", source="auto")
            self._record_decision(req, decision)
            return decision
        fut: asyncio.Future[ApprovalDecision] = asyncio.get_running_loop().create_future()
        with self._lock:
            self._pending[req.id] = (req, fut)
        self._emit(ApprovalRequested(request=req))
        try:
            decision = await fut
        finally:
            with self._lock:
                self._pending.pop(req.id, None)
        self._record_decision(req, decision)
        self._emit(ApprovalResolved(approval_id=req.id, decision=decision))
        return decision

    def _record_decision(self, req: ApprovalRequest, d: ApprovalDecision) -> None:
        tier = "Tier 3" if req.ticket_id else "Tier 1"
        self.comms.record("approval", tier=tier, stream_id=req.stream_id, track_id=req.track_id,
                          ticket_id=req.ticket_id, direction="-",
                          data={"approval_id": req.id, "kind": req.kind, "title": req.title,
                                "approved": d.approved, "reason": d.reason, "source": d.source,
                                "requested": req.payload.model_dump(),
                                "edited": d.payload.model_dump() if d.payload else None},
                          wait=False)

    def ask_from_thread(self, req: ApprovalRequest) -> ApprovalDecision:
        """Block an executor thread until the user decides. The app closing answers for the
        user: rejected, "the app is closing" (the question was cut off with its loop)."""
        if self.loop is None:
            raise RuntimeError("no conductor loop to ask for approval on")
        try:
            return asyncio.run_coroutine_threadsafe(self.ask(req), self.loop).result()
        except concurrent.futures.CancelledError:
            if not self._closed:
                raise
            return Denied(reason="the app is closing", source="engine")

    def pending_approvals(self) -> list[ApprovalRequest]:
        with self._lock:
            return [req for req, _ in self._pending.values() if req.id not in self._resolved]

    def resolve(self, approval_id: str, decision: ApprovalDecision) -> None:
        """Answer an approval (thread-safe). An Approved decision's `edits` (a partial dict, as
        the API and the CLI send) or `payload` (a whole typed payload, as the GUI sends) is
        merged over the request's payload and checked; a bad edit raises EngineError and the
        approval stays pending. Raises ApprovalNotFound for an unknown id and
        ApprovalAlreadyResolved when it was answered before."""
        with self._lock:
            if approval_id in self._resolved:
                raise ApprovalAlreadyResolved(f"approval {approval_id} was already answered")
            item = self._pending.get(approval_id)
            if item is None:
                raise ApprovalNotFound(f"no pending approval {approval_id}")
            req, fut = item
            if isinstance(decision, Approved) and (decision.payload is not None
                                                   or decision.edits is not None):
                try:
                    final = edit_payload(req.payload, decision.payload)
                    final = edit_payload(final, decision.edits)
                    final.check_edit(req.payload)
                except ApprovalEditError as e:
                    raise EngineError(str(e)) from None   # refused: still pending
                decision = decision.model_copy(update={"payload": final})
            self._resolved[approval_id] = None
            while len(self._resolved) > 4096:
                self._resolved.popitem(last=False)
        assert self.loop is not None

        def settle() -> None:
            if not fut.done():
                fut.set_result(decision)
        self.loop.call_soon_threadsafe(settle)

    def approve_all(self, source: str = "user") -> int:
        """Approve every request pending right now, once. Not a standing grant."""
        n = 0
        for req in self.pending_approvals():
            try:
                self.resolve(req.id, Approved(source=source, reason="approve all"))
                n += 1
            except (ApprovalNotFound, ApprovalAlreadyResolved):
                continue   # answered meanwhile by someone else: that answer stands
        return n

    def _cancel_approvals_for(self, ticket_id: str, reason: str) -> None:
        for req in self.pending_approvals():
            if req.ticket_id == ticket_id:
                try:
                    self.resolve(req.id, Denied(reason=reason, source="engine"))
                except (ApprovalNotFound, ApprovalAlreadyResolved):
                    continue

    # =========================================================================================
    # reading state (any thread)
    # =========================================================================================
    def tracks(self) -> list[Track]:
        with self._lock:
            return [_copy_track(t) for t in self._tracks.values()]

    def track(self, track_id: str) -> Track:
        with self._lock:
            t = self._tracks.get(track_id)
            if t is None:
                raise EngineError(f"no track {track_id!r}")
            return _copy_track(t)

    def is_running(self, track_id: str) -> bool:
        with self._lock:
            f = self._running.get(track_id)
            return f is not None and not f.done()

    def is_paused(self, track_id: str) -> bool:
        with self._lock:
            return track_id in self._paused

    def workers(self) -> dict[str, int]:
        return {"active": self._active, "cap": self.effective_cap(),
                "queued": self._queued_count()}

    def usage(self, key: str = "tier") -> dict[str, Usage]:
        return self.comms.usage_by(key)

    def bleed_stats(self, stream_id: str) -> dict[str, Any] | None:
        with self._lock:
            s = self._sessions.get(stream_id)
        if s is None or isinstance(s, dict):      # a finished agent keeps its last figures
            return s
        return get_history_bleed_stats(s)

    def _retire(self, session: AgentSession) -> None:
        """An agent finished: keep its context-window figures, drop its history."""
        stats = get_history_bleed_stats(session)
        with self._lock:
            if self._sessions.get(session.stream_id) is session:
                self._sessions[session.stream_id] = stats  # type: ignore[assignment]

    def summary(self) -> dict[str, Any]:
        """The JSON summary the CLI prints."""
        return {
            "session_dir": str(self.session_dir),
            "tracks": [{"id": t.id, "title": t.title, "status": t.status,
                        "tickets": [{"id": k.id, "status": k.status,
                                     **({"reason": k.blocked_reason} if k.blocked_reason else {})}
                                    for k in t.tickets]}
                       for t in self.tracks()],
            "usage": {tier: u.summary() for tier, u in sorted(self.usage("tier").items())},
            "streams": {sid: i["length"] for sid, i in sorted(self.streams.info().items())},
        }

    # =========================================================================================
    # Tier 1: plan an epic
    # =========================================================================================
    def plan_epic(self, epic: str) -> concurrent.futures.Future[EpicPlan]:
        epic = epic if isinstance(epic, str) else ""
        if not epic.strip():
            raise EngineError("The epic is empty: describe what you want built, in a sentence "
                              "or a paragraph.")
        if len(epic) > MAX_EPIC_CHARS:
            raise EngineError(f"The epic is {len(epic):,} characters; the limit is "
                              f"{MAX_EPIC_CHARS:,}. Put long material in a file in the "
                              f"workspace and refer to it.")
        return self.submit(self._plan_epic(epic))

    def _listing(self) -> str:
        try:
            return self.ws.list_dir(".")[:4000]
        except OSError as e:
            return f"(could not list the workspace: {e})"

    async def _plan_epic(self, epic: str) -> EpicPlan:
        loop = asyncio.get_running_loop()
        sid = stream_tier1()
        if self.streams.info().get(sid, {}).get("length"):
            self._emit(StreamChunk(stream_id=sid, text="\n\n--- new epic ---\n"))
        system, user = prompts.tier1_messages(epic, self._listing())
        self.last_epic = epic

        def work() -> EpicPlan:
            session = self._session_for("Tier 1", sid, system, EpicPlan)
            try:
                plan = run_structured(session, user, EpicPlan, prompts.REPAIR_USER)
            finally:
                self._retire(session)
            assert isinstance(plan, EpicPlan)
            return plan

        try:
            plan = await loop.run_in_executor(self._executor, work)
        except Exception as e:
            self._fail_stream(sid, f"Tier 1 could not plan the epic: {_describe(e)}")
            raise
        self._emit(StreamEnd(stream_id=sid, state="done"))
        self.proposal = plan
        self._emit(ProposalReady(epic=epic, tracks=tuple(t.model_dump() for t in plan.tracks)))
        return plan

    def _fail_stream(self, stream_id: str, message: str, track_id: str = "",
                     ticket_id: str = "", emit: Callable[[Event], Any] | None = None) -> None:
        """An error on a stream, and its end. `emit`: an executor thread's emitter; the loop's
        own put by default."""
        emit = emit or self._emit
        emit(ErrorEvent(message=message, stream_id=stream_id, track_id=track_id,
                        ticket_id=ticket_id))
        emit(StreamEnd(stream_id=stream_id, state="failed"))

    def _session_for(self, tier: str, stream_id: str, system: str, schema: Any = None, *,
                     track_id: str = "", ticket_id: str = "", model_override: str | None = None,
                     **kw: Any) -> AgentSession:
        """A fresh session (executor thread)."""
        s = self.settings
        model = s.model_for(tier, model_override)
        session = AgentSession(self.provider(), tier=tier, model=model, stream_id=stream_id,
                               system=system, comms=self.comms, price=s.price_for(model),
                               track_id=track_id, ticket_id=ticket_id, emit=self._emitter(),
                               before_request=self._budget_gate, response_schema=schema,
                               max_rounds=s.max_tool_rounds, context_window=s.context_window,
                               on_retry=self._on_provider_retry, **kw)
        with self._lock:
            self._sessions[stream_id] = session
        return session

    def _on_provider_retry(self, info: dict[str, Any]) -> None:
        if info.get("status") == 429:
            self.note_rate_limited(float(info.get("delay_s") or 1.0))
            if self.loop is not None:
                self.loop.call_soon_threadsafe(self._workers_changed)

    # =========================================================================================
    # tracks: accept, edit, Tier 2
    # =========================================================================================
    def accept_tracks(self, proposals: list[TrackProposal]) -> concurrent.futures.Future[list[Track]]:
        props = [p if isinstance(p, TrackProposal) else TrackProposal.model_validate(p)
                 for p in proposals]
        if not props:
            raise EngineError("no tracks to accept: keep at least one, or cancel")
        return self.submit(self._accept(props))

    async def _accept(self, props: list[TrackProposal]) -> list[Track]:
        out = []
        now = _now_iso()
        for p in props:
            tid = self.store.new_track_id(p.title)
            track = Track(id=tid, title=p.title.strip(), goal=p.goal.strip(),
                          acceptance_criteria=[c.strip() for c in p.acceptance_criteria if c.strip()],
                          status="new", created_at=now, updated_at=now)
            await asyncio.get_running_loop().run_in_executor(self._io, self.store.create_track,
                                                             track)
            with self._lock:
                self._tracks[tid] = track
            self._emit(TrackChanged(track_id=tid))
            self._emit(LogEvent(message=f"track {tid} created: {track.title}"))
            out.append(_copy_track(track))
        self.proposal = None
        return out

    def update_track(self, track_id: str, *, title: str | None = None, goal: str | None = None,
                     acceptance_criteria: list[str] | None = None) -> concurrent.futures.Future[Track]:
        return self.submit(self._update_track(track_id, title, goal, acceptance_criteria))

    async def _update_track(self, track_id: str, title: str | None, goal: str | None,
                            criteria: list[str] | None) -> Track:
        track = self._get(track_id)
        with self._lock:
            if title is not None:
                if not title.strip():
                    raise EngineError("a track's title must not be empty")
                track.title = title.strip()
            if goal is not None:
                track.goal = goal.strip()
            if criteria is not None:
                track.acceptance_criteria = [c.strip() for c in criteria if c.strip()]
        self._save(track)
        await self._flush()
        self._emit(TrackChanged(track_id=track_id))
        return _copy_track(track)

    def _get(self, track_id: str) -> Track:
        with self._lock:
            t = self._tracks.get(track_id)
        if t is None:
            raise EngineError(f"no track {track_id!r}")
        return t

    def _save(self, track: Track) -> None:
        """Mark a track for writing (loop thread). Writes are coalesced and done by one IO
        thread, so a burst of status changes costs one write and the loop never waits on
        disk. `await self._flush()` where the caller's result must be on disk."""
        with self._lock:
            track.updated_at = _now_iso()
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
                                              f"{_describe(e)}; it is kept in memory"))
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
            await loop.run_in_executor(self._io, self._write_snapshots, snaps)
            took = time.monotonic() - started
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
                timer = loop.call_later(max(3 * took, 0.3), _settle, pace)
                try:
                    await pace
                finally:
                    timer.cancel()
                    self._pace = None

    def _snapshot(self, track: Track) -> Track:
        """The track copied for the writer (loop thread), sharing the previous snapshot's
        copy of every ticket that has not changed since: a pass over a 1,000-ticket track
        where a few tickets changed copies those few. Only the last few tracks are kept."""
        snap = _copy_track(track, self._last_snaps.pop(track.id, None))
        self._last_snaps[track.id] = snap
        while len(self._last_snaps) > 8:
            self._last_snaps.popitem(last=False)
        return snap

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
                _settle(self._pace)
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
            snaps = [_copy_track(self._tracks[i]) for i in ids if i in self._tracks]
        self._write_snapshots(snaps)

    def plan_track(self, track_id: str) -> concurrent.futures.Future[Track]:
        self._get(track_id)
        if self.is_running(track_id):
            raise EngineError(f"track {track_id} is running; pause it and let it finish "
                              f"before planning it again")
        return self.submit(self._plan_track(track_id))

    def _next_ticket_number(self) -> int:
        n = 0
        with self._lock:
            for t in self._tracks.values():
                for k in t.tickets:
                    m = re.fullmatch(r"T-(\d+)", k.id)
                    if m:
                        n = max(n, int(m.group(1)))
        return n + 1

    async def _plan_track(self, track_id: str) -> Track:
        loop = asyncio.get_running_loop()
        track = self._get(track_id)
        sid = stream_tier2(track_id)
        first = self._next_ticket_number()
        system, user = prompts.tier2_messages(track.title, track.goal, track.acceptance_criteria,
                                              first, self._listing())

        def check(plan: Any) -> None:
            problems = dag_problems(tickets_from_plan(plan))
            if problems:
                raise ValueError("the ticket graph is invalid: " + "; ".join(problems))

        def work() -> TrackPlan:
            session = self._session_for("Tier 2", sid, system, TrackPlan, track_id=track_id)
            try:
                plan = run_structured(session, user, TrackPlan, prompts.REPAIR_USER, check)
            finally:
                self._retire(session)
            assert isinstance(plan, TrackPlan)
            return plan

        try:
            plan = await loop.run_in_executor(self._executor, work)
        except Exception as e:
            self._fail_stream(sid, f"Tier 2 could not plan track {track_id}: {_describe(e)}",
                              track_id=track_id)
            raise
        tickets = self._unique_ids(tickets_from_plan(plan), track_id)
        with self._lock:
            track.tickets = tickets
            track.status = "planned"
        self._save(track)
        await self._flush()
        self._emit(StreamEnd(stream_id=sid, state="done"))
        for w in file_overlap_warnings(tickets):
            self._emit(LogEvent(message=f"{track_id}: {w}", level="warning"))
        self._emit(TrackChanged(track_id=track_id))
        self._status(track, None)
        return _copy_track(track)

    def _unique_ids(self, tickets: list[Ticket], track_id: str) -> list[Ticket]:
        """Ticket ids name streams, so they must be unique across the workspace: renumber any
        that another track already uses, rewriting dependencies to match."""
        with self._lock:
            taken = {k.id for tid, t in self._tracks.items() if tid != track_id for k in t.tickets}
        if not taken & {t.id for t in tickets}:
            return tickets
        n = self._next_ticket_number()
        rename: dict[str, str] = {}
        for t in tickets:
            if t.id in taken or t.id in rename.values():
                while f"T-{n:03d}" in taken:
                    n += 1
                rename[t.id] = f"T-{n:03d}"
                n += 1
        return [t.model_copy(update={"id": rename.get(t.id, t.id),
                                     "depends_on": [rename.get(d, d) for d in t.depends_on]})
                for t in tickets]

    def set_tickets(self, track_id: str, tickets: list[Ticket]) -> concurrent.futures.Future[Track]:
        """Replace a track's tickets (the user's edits before start). Raises DagError."""
        tickets = [t if isinstance(t, Ticket) else Ticket.model_validate(t) for t in tickets]
        problems = dag_problems(tickets)
        if problems:
            raise DagError(problems)
        if self.is_running(track_id):
            raise EngineError(f"track {track_id} is running: pause it and wait for its workers "
                              f"before editing its tickets")
        with self._lock:
            other = {k.id for tid, t in self._tracks.items() if tid != track_id for k in t.tickets}
        clash = sorted(other & {t.id for t in tickets})
        if clash:
            raise DagError([f"ticket id {c!r} is already used by another track" for c in clash])
        return self.submit(self._set_tickets(track_id, tickets))

    async def _set_tickets(self, track_id: str, tickets: list[Ticket]) -> Track:
        track = self._get(track_id)
        with self._lock:
            track.tickets = tickets
            if track.status == "new":
                track.status = "planned"
        self._save(track)
        await self._flush()
        self._emit(TrackChanged(track_id=track_id))
        return _copy_track(track)

    # =========================================================================================
    # running a track: the scheduler
    # =========================================================================================
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
        track = self._get(track_id)
        wake = self._wakes[track_id] = asyncio.Event()
        running: dict[str, Ticket] = {}      # tickets whose worker thread has not reported back
        with self._lock:
            track.status = "in_progress"
            for t in track.tickets:
                if t.status == "in_progress":       # left over from an interrupted run
                    t.status = "todo"
        self._save(track)
        self._status(track, None)
        # Incremental: the ready set re-checks only what changed, and a finished ticket reports
        # itself through a callback, so an iteration costs O(what changed), not O(tickets).
        ready_set = self._ready_sets[track_id] = _ReadySet(track)
        finished: list[str] = []

        def on_done(tid: str) -> None:
            finished.append(tid)
            wake.set()
        try:
            while True:
                paused = track_id in self._paused
                if not paused:
                    free = self.effective_cap() - self._active
                    for t in ready_set.take(free) if free > 0 else ():
                        if t.id in running:
                            continue
                        running[t.id] = t
                        self._start_ticket(track, t, on_done)
                self._queued[track_id] = ready_set.count()
                self._workers_changed()
                if not running:
                    if paused:
                        wake.clear()
                        await wake.wait()
                        continue
                    if not ready_set.count(full=True):
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
            self._wakes.pop(track_id, None)
            self._ready_sets.pop(track_id, None)
            self._queued.pop(track_id, None)
        with self._lock:
            states = {t.status for t in track.tickets}
            if track_id in self._paused:
                track.status = "paused"
            elif states <= SATISFIED_STATES:
                track.status = "completed"
            else:
                track.status = "failed"
        self._save(track)
        await self._flush()
        self._status(track, None)
        self._workers_changed()
        return _copy_track(track)

    # -- one ticket: started and finished on the loop, lived in its executor thread -----------
    def _start_ticket(self, track: Track, ticket: Ticket, on_done: Callable[[str], None]) -> None:
        """Loop thread: take a worker slot, mark the ticket running, and hand its whole life
        (spawn approval, worker, commit, QA) to one executor thread. The thread reports back
        once, through call_soon_threadsafe, to `_ticket_done`: one hop out and one back per
        ticket, and no task or future chain on the loop for it."""
        loop = asyncio.get_running_loop()
        self._active += 1
        with self._lock:
            ticket.status = "in_progress"
            ticket.blocked_reason = ""
            ticket.assigned_to = stream_tier3(ticket.id)
            cancel = self._cancel_flags[ticket.id] = threading.Event()
        self._save(track)
        self._status(track, ticket)

        def back(fut: concurrent.futures.Future[None]) -> None:
            try:
                loop.call_soon_threadsafe(self._ticket_done, track, ticket, fut, on_done)
            except RuntimeError:
                if not self._closed:
                    raise
                # The app closed while this worker ran: the loop is gone, and the ticket was
                # saved as interrupted (todo) when its track's scheduler stopped.
        self._executor.submit(self._ticket_life, track, ticket, cancel).add_done_callback(back)

    def _ticket_life(self, track: Track, ticket: Ticket, cancel: threading.Event) -> None:
        """Executor thread: one ticket from its spawn approval to its final status. Every
        failure ends as the ticket's status with the reason (and a Tier 4 diagnosis); the
        loop saves and reports it in `_ticket_done`."""
        sid = stream_tier3(ticket.id)
        emit = self._emitter()
        try:
            with self._lock:
                prompt = prompts.tier3_prompt(ticket.id, ticket.description, track.title,
                                              ticket.target_files, ticket.depends_on)
                context = prompts.tier3_context(ticket.context_requirements)
                model = self.settings.model_for("Tier 3", ticket.model_override)
                step = ticket.step_mode or self.settings.step_mode
                retry_count = ticket.retry_count
                description = ticket.description
            if self.settings.approvals.spawn == "ask":
                decision = self.ask_from_thread(ApprovalRequest(
                    kind="spawn", title=f"Spawn a worker for {ticket.id}", stream_id=sid,
                    track_id=track.id, ticket_id=ticket.id,
                    payload=SpawnPayload(prompt=prompt, context=context, model=model,
                                         description=description,
                                         attempt=retry_count + 1)))
                if not decision.approved:
                    with self._lock:
                        if self._closed:      # rejected because the app is closing: interrupted
                            ticket.status = "todo"
                            ticket.blocked_reason = ""
                        elif cancel.is_set():  # withdrawn by cancel_ticket: cancelled, not skipped
                            ticket.status = "cancelled"
                            ticket.blocked_reason = decision.reason or "cancelled by the user"
                        else:
                            ticket.status = "skipped"
                            ticket.blocked_reason = ("spawn rejected" + (
                                f": {decision.reason}" if decision.reason else ""))
                    return
                if isinstance(decision.payload, SpawnPayload):
                    prompt = decision.payload.prompt
                    context = decision.payload.context
                    if decision.payload.model and self.settings.provider != "offline":
                        model = decision.payload.model
            if cancel.is_set():
                raise Cancelled(f"{ticket.id} cancelled by the user")
            # queued, not written: it goes out with the worker's first request record
            self.comms.record("spawn", tier="Tier 3", stream_id=sid, track_id=track.id,
                              ticket_id=ticket.id, provider=self.provider().name, model=model,
                              direction="-", data={"prompt": prompt, "context": context,
                                                   "retry_count": retry_count},
                              wait=False)
            result = self.run_worker_lifecycle(track.id, ticket.id, prompt, context, model,
                                               cancel, step, retry_count)
            with self._lock:
                files = sorted(self._written.pop(ticket.id, set()))
            sha = self._commit(ticket, files)
            with self._lock:
                ticket.result = result[-4000:]
                ticket.status = "completed"
                ticket.description = tick_subtasks(ticket.description)
                if sha:
                    ticket.commit_sha = sha
        except (Cancelled, StepStopped) as e:     # the user's cancel, or "stop" at a step
            with self._lock:
                if self._closed:        # the app is closing (which also cuts off a step
                    ticket.status = "todo"   # question): interrupted, not cancelled
                    ticket.blocked_reason = ""
                else:
                    ticket.status = "cancelled"
                    ticket.blocked_reason = str(e)
            emit(StreamEnd(stream_id=sid, state="cancelled"))
        except Exception as e:   # every worker failure ends as a failed ticket with the reason
            reason = _describe(e)
            trace = traceback.format_exc()[-4000:]
            closing = self._closed      # e.g. the budget question cut off: interrupted, no QA
            with self._lock:
                ticket.status = "todo" if closing else "failed"
                ticket.blocked_reason = "" if closing else reason
            # the log first: when the app is closing, the loop (and so the stream) may be gone
            self.comms.record("error", tier="Tier 3", stream_id=sid, track_id=track.id,
                              ticket_id=ticket.id, direction="-",
                              data={"error": reason, "trace": trace})
            self._fail_stream(sid, f"{ticket.id} {'interrupted' if closing else 'failed'}: "
                                   f"{reason}", track.id, ticket.id, emit=emit)
            if not isinstance(e, BudgetExceeded) and not closing:
                try:
                    diagnosis = self.run_qa(track.id, ticket.id,
                                            f"the worker stopped with an error: {reason}", trace)
                    with self._lock:
                        ticket.result = "QA: " + diagnosis
                except Exception as qa_err:
                    emit(ErrorEvent(message=f"Tier 4 could not diagnose {ticket.id}: "
                                            f"{_describe(qa_err)}",
                                    stream_id=stream_tier4(ticket.id), track_id=track.id,
                                    ticket_id=ticket.id))

    def _ticket_done(self, track: Track, ticket: Ticket, fut: concurrent.futures.Future[None],
                     on_done: Callable[[str], None]) -> None:
        """Loop thread: a ticket's thread ended. Free its slot, block what depends on a failure,
        save, wake the scheduler; report the status (a completion once it is on disk: a
        completed ticket is never run again)."""
        sid = stream_tier3(ticket.id)
        # a work item cancelled before it started (the executor shutting down): interrupted
        exc = None if fut.cancelled() else fut.exception()
        blocked: list[Ticket] = []
        with self._lock:
            if fut.cancelled():
                ticket.status = "todo"
                ticket.blocked_reason = ""
            elif exc is not None:   # _ticket_life ends every failure itself: this is a bug
                ticket.status = "failed"
                ticket.blocked_reason = f"internal error: {_describe(exc)}"
            self._active -= 1
            self._cancel_flags.pop(ticket.id, None)
            if ticket.status in ("failed", "cancelled"):
                blocked = self._block_dependents(track, ticket)
        if exc is not None:
            self._fail_stream(sid, f"{ticket.id} failed: {ticket.blocked_reason}", track.id,
                              ticket.id)
            self.comms.record("error", tier="Tier 3", stream_id=sid, track_id=track.id,
                              ticket_id=ticket.id, direction="-",
                              data={"error": ticket.blocked_reason,
                                    "trace": "".join(traceback.format_exception(exc))[-4000:]},
                              wait=False)
        self._save(track)
        # The slot is free and dependents are re-checked now, while the completion is written
        # (one write then covers many completions, and the disk is off the critical path).
        self._wake_after(track, ticket)
        on_done(ticket.id)

        def report() -> None:
            self.comms.record("status", tier="Tier 3", stream_id=sid, track_id=track.id,
                              ticket_id=ticket.id, direction="-",
                              data={"status": ticket.status, "reason": ticket.blocked_reason,
                                    "commit": ticket.commit_sha}, wait=False)
            self._status(track, ticket)
            for other in blocked:
                self._status(track, other)
        if ticket.status == "completed":
            self._after_save(report)
        else:
            report()

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

    # -- the worker, in an executor thread -----------------------------------------------------
    def run_worker_lifecycle(self, track_id: str, ticket_id: str, prompt: str, context: str,
                             model: str, cancel: threading.Event, step_mode: bool = False,
                             retry_count: int = 0) -> str:
        """One stateless Tier 3 worker: a fresh session, the tool loop, the final summary.
        Runs in an executor thread; reaches the queue only through put_threadsafe."""
        sid = stream_tier3(ticket_id)
        emit = self._emitter()
        session = self._session_for(
            "Tier 3", sid, prompts.TIER3_SYSTEM, track_id=track_id, ticket_id=ticket_id,
            model_override=model if self.settings.provider != "offline" else None,
            tools=TOOL_SPECS, tool_handler=lambda call: self._handle_tool(session, call),
            step_gate=self._step_gate if step_mode else None, cancel=cancel)
        text = prompt + ("\n" + context if context else "")
        try:
            final = session.send(text)
        finally:
            self._retire(session)
            # the handler closes over the session: without this cycle, the session, its history
            # and its cancel flag are freed now, not by a later garbage collection
            session.tool_handler = None
        emit(StreamEnd(stream_id=sid, state="done"))
        if retry_count:
            session.log("log", message=f"retry {retry_count} finished")
        return final

    def _handle_tool(self, session: AgentSession, call: ToolCall) -> ToolOutcome:
        args = dict(call.args) if isinstance(call.args, dict) else {}
        try:
            spec = tool_spec(call.name)
        except KeyError as e:
            return ToolOutcome({"ok": False, "error": str(e).strip("'\"")}, args)
        policy = self.settings.approvals
        if spec.kind == "read":
            ask = policy.read_tools == "ask"
        elif spec.kind == "write":
            ask = policy.write_tools == "ask"
        else:
            command = str(args.get("command", ""))
            ask = not policy.shell_allowed(command)
        edited = False
        if ask and not self.auto_approve:
            payload: ShellPayload | ToolPayload
            if spec.kind == "shell":
                payload = ShellPayload(command=str(args.get("command", "")),
                                       cwd=str(args.get("cwd", ".")))
                title = f"{session.ticket_id} wants to run a shell command"
            else:
                payload = ToolPayload(tool=call.name, args=args,
                                      preview=diff_preview(self.ws, call.name, args))
                title = f"{session.ticket_id} wants to call {call.name}"
            decision = self.ask_from_thread(ApprovalRequest(
                title=title, stream_id=session.stream_id, track_id=session.track_id,
                ticket_id=session.ticket_id, payload=payload))
            if not decision.approved:
                return ToolOutcome({"ok": False, "rejected": True,
                                    "error": "the user rejected this call" +
                                             (f": {decision.reason}" if decision.reason else "")},
                                   args)
            final = decision.payload
            if final is not None:
                if isinstance(final, ShellPayload):
                    new_args = dict(args)
                    new_args["command"] = final.command
                    new_args["cwd"] = final.cwd
                elif isinstance(final, ToolPayload):
                    new_args = dict(final.args)
                else:
                    raise EngineError(f"a {final.kind} payload cannot answer a tool call")
                edited = new_args != args
                args = new_args
        res = self.ws.execute(call.name, args)
        if spec.kind == "write" and res.ok and isinstance(args.get("path"), str):
            with self._lock:
                self._written.setdefault(session.ticket_id, set()).add(args["path"])
        result = res.to_dict()
        if edited:
            result["note"] = "the user edited the arguments before running; these ran: " + \
                _short_json(args)
        if call.name == "run_shell" and not res.ok and res.exit_code is not None:
            try:
                result["qa_diagnosis"] = self.run_qa(
                    session.track_id, session.ticket_id,
                    f"`{args.get('command', '')}` exited with code {res.exit_code}",
                    res.output or res.error)
            except Cancelled:
                raise
            except Exception as e:
                self._emitter()(ErrorEvent(message=f"Tier 4 could not diagnose: {_describe(e)}",
                                           stream_id=stream_tier4(session.ticket_id),
                                           track_id=session.track_id,
                                           ticket_id=session.ticket_id))
        return ToolOutcome(result, args)

    def run_qa(self, track_id: str, ticket_id: str, what: str, output: str) -> str:
        """Tier 4: a stateless diagnosis of a failure (executor thread)."""
        sid = stream_tier4(ticket_id)
        system, user = prompts.tier4_messages(ticket_id, what, output)
        session = self._session_for("Tier 4", sid, system, track_id=track_id, ticket_id=ticket_id)
        session.max_rounds = 1
        try:
            text = session.send(user)
        finally:
            self._retire(session)
        self._emitter()(StreamEnd(stream_id=sid, state="done"))
        return text

    def _step_gate(self, session: AgentSession, round_no: int) -> None:
        last = next((m.text for m in reversed(session.history) if m.role == "model"), "")
        d = self.ask_from_thread(ApprovalRequest(
            title=f"{session.ticket_id}: continue to step {round_no + 1}?",
            stream_id=session.stream_id, track_id=session.track_id, ticket_id=session.ticket_id,
            payload=StepPayload(round=round_no, last=last[-2000:])))
        if not d.approved:
            raise StepStopped(f"stopped before step {round_no + 1} by the user"
                              + (f": {d.reason}" if d.reason else ""))

    def _budget_gate(self, session: AgentSession) -> None:
        """Before each request: pause and ask when the epic's budget is reached."""
        def over() -> bool:
            s = self.settings
            if not s.budget_usd and not s.budget_tokens:
                return False         # no budget: no need to read the log's total (its lock)
            total = self.comms.total()
            return bool((s.budget_usd and total.cost_usd >= s.budget_usd)
                        or (s.budget_tokens and total.total_tokens >= s.budget_tokens))
        if not over():
            return
        with self._budget_lock:      # one question at a time, however many workers hit it
            if not over():
                return
            s, total = self.settings, self.comms.total()
            d = self.ask_from_thread(ApprovalRequest(
                title="Budget reached: raise it to continue",
                stream_id=session.stream_id, track_id=session.track_id,
                ticket_id=session.ticket_id,
                payload=BudgetPayload(spent_usd=round(total.cost_usd, 6),
                                      budget_usd=s.budget_usd, spent_tokens=total.total_tokens,
                                      budget_tokens=s.budget_tokens)))
            if not d.approved:
                raise BudgetExceeded("the budget is reached and the user chose to stop"
                                     + (f": {d.reason}" if d.reason else ""))
            p = d.payload if isinstance(d.payload, BudgetPayload) else None
            new_usd = float(p.budget_usd) if p else s.budget_usd
            new_tokens = int(p.budget_tokens) if p else s.budget_tokens
            if (new_usd and new_usd <= total.cost_usd) or (new_tokens and new_tokens <= total.total_tokens):
                raise BudgetExceeded("the budget was approved but not raised above what is spent")
            self.update_settings(s.model_copy(update={"budget_usd": new_usd,
                                                      "budget_tokens": new_tokens}))

    def _commit(self, ticket: Ticket, files: list[str]) -> str:
        """Commit exactly the files this ticket's worker wrote. Commits are serialised and
        stage only those paths, so a parallel worker's half-written files never ride along."""
        if self._git is None or not files:
            return ""
        first_line = ticket.description.strip().splitlines()[0] if ticket.description.strip() else ""
        with self._git_lock:
            return self._git.commit_paths(files, f"{ticket.id}: {first_line[:64]}\n\n"
                                                 f"Clutch worker for ticket {ticket.id}.")

    # =========================================================================================
    # per-ticket actions
    # =========================================================================================
    def _find(self, ticket_id: str) -> tuple[Track, Ticket]:
        with self._lock:
            for t in self._tracks.values():
                for k in t.tickets:
                    if k.id == ticket_id:
                        return t, k
        raise EngineError(f"no ticket {ticket_id!r}")

    def retry_ticket(self, ticket_id: str) -> concurrent.futures.Future[Track] | None:
        track, ticket = self._find(ticket_id)
        refusal = ticket_action_refusal(ticket.status, "retry", ticket_id=ticket_id)
        if refusal:
            raise EngineError(refusal)
        fut = self.submit(self._retry(track, ticket))
        fut.result(timeout=10)
        if not self.is_running(track.id):
            return self.start_track(track.id)
        return self._running.get(track.id)

    async def _retry(self, track: Track, ticket: Ticket) -> None:
        with self._lock:
            ticket.status = "todo"
            ticket.blocked_reason = ""
            ticket.retry_count += 1
            self._unblock(track)
        self._save(track)
        await self._flush()
        self._status(track, ticket)
        self._emit(TrackChanged(track_id=track.id))
        self._wake_all()

    def skip_ticket(self, ticket_id: str, reason: str = "skipped by the user") -> None:
        track, ticket = self._find(ticket_id)
        refusal = ticket_action_refusal(ticket.status, "skip", ticket_id=ticket_id)
        if refusal:
            raise EngineError(refusal)
        self.submit(self._set_status(track, ticket, "skipped", reason)).result(timeout=10)

    def cancel_ticket(self, ticket_id: str, reason: str = "cancelled by the user") -> None:
        track, ticket = self._find(ticket_id)
        refusal = ticket_action_refusal(ticket.status, "cancel", ticket_id=ticket_id)
        if refusal:
            raise EngineError(refusal)
        with self._lock:
            flag = self._cancel_flags.get(ticket_id)
        if flag is not None:         # running: the worker stops at its next chunk or round
            flag.set()
            self._cancel_approvals_for(ticket_id, reason)
            return
        self.submit(self._set_status(track, ticket, "cancelled", reason)).result(timeout=10)

    async def _set_status(self, track: Track, ticket: Ticket, status: str, reason: str) -> None:
        with self._lock:
            if ticket.status == "in_progress":
                raise EngineError(f"{ticket.id} started meanwhile; cancel it instead")
            ticket.status = status  # type: ignore[assignment]
            ticket.blocked_reason = reason
            if status == "skipped":
                self._unblock(track)
            else:
                self._block_dependents(track, ticket)
        self._save(track)
        await self._flush()
        self._status(track, ticket)
        self._emit(TrackChanged(track_id=track.id))
        self._wake_all()

    def revert_ticket(self, ticket_id: str) -> str:
        """Revert a completed ticket's commit; returns the revert's short SHA."""
        _track, ticket = self._find(ticket_id)
        if self._git is None:
            raise EngineError("git commits are off for this workspace, so there is nothing to revert")
        refusal = ticket_action_refusal(ticket.status, "revert", ticket_id=ticket_id,
                                        commit_sha=ticket.commit_sha)
        if refusal:
            raise EngineError(refusal)
        if self.is_running(_track.id):
            raise EngineError(f"track {_track.id} is running; pause it and let its workers "
                              f"finish before reverting a ticket")
        with self._git_lock:
            new_sha = self._git.revert(ticket.commit_sha)
        self.submit(self._reverted(_track, ticket, new_sha)).result(timeout=10)
        return new_sha

    async def _reverted(self, track: Track, ticket: Ticket, new_sha: str) -> None:
        with self._lock:
            old = ticket.commit_sha
            ticket.status = "todo"
            ticket.commit_sha = ""
            ticket.result = f"reverted: commit {old} undone by {new_sha}"
        self.comms.record("status", tier="Tier 3", stream_id=stream_tier3(ticket.id),
                          track_id=track.id, ticket_id=ticket.id, direction="-",
                          data={"status": "todo", "reason": ticket.result}, wait=False)
        self._save(track)
        await self._flush()
        self._status(track, ticket)
        self._emit(TrackChanged(track_id=track.id))


_ATOMIC = (str, int, float, bool, type(None))


def _copy_value(v: Any) -> Any:
    if isinstance(v, _ATOMIC):
        return v
    if type(v) is list and all(isinstance(x, _ATOMIC) for x in v):
        return list(v)
    import copy
    return copy.deepcopy(v)


def _copy_track(track: Track, prev: Track | None = None) -> Track:
    """A deep copy of a track for the writer, equal to `model_copy(deep=True)` but cheaper (it
    runs on the loop thread for every write pass): immutable values are shared, lists of them
    copied, anything else deep-copied; a ticket equal to its copy in `prev` (an earlier
    snapshot, never mutated) is not copied again but shared."""
    old = {t.id: t for t in prev.tickets} if prev is not None else {}
    tickets = []
    for t in track.tickets:
        c = old.get(t.id)
        if c is None or c.__dict__ != t.__dict__:
            c = t.__copy__()         # pydantic's shallow copy: its own __dict__ and fields set
            d = c.__dict__
            for k, v in d.items():
                if not isinstance(v, _ATOMIC):
                    d[k] = _copy_value(v)
        tickets.append(c)
    update = {k: _copy_value(v) for k, v in track.__dict__.items()
              if k != "tickets" and not isinstance(v, _ATOMIC)}
    update["tickets"] = tickets
    return track.model_copy(update=update)


def _settle(fut: "asyncio.Future[None]") -> None:
    if not fut.done():
        fut.set_result(None)


def _describe(e: BaseException) -> str:
    if isinstance(e, (ProviderError, PlanError, EngineError, BudgetExceeded, DagError)):
        return str(e)
    return f"{type(e).__name__}: {e}"


def _short_json(obj: Any, limit: int = 500) -> str:
    import json
    s = json.dumps(obj, ensure_ascii=False, default=str)
    return s if len(s) <= limit else s[:limit] + "…"


def _now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
