"""The engine's door: `ConductorEngine`, the facade the GUI, the CLI and the API call, over the
`engine/` package that holds the code (see docs and DESIGN.md):

- `engine.context`   the conductor thread, its asyncio loop, the event queue and pump
- `engine.approvals` ApprovalBroker: ask, resolve, approve-all, typed payload checks
- `engine.scheduler` the DAG scheduler (`engine.ready.ReadySet`)
- `engine.ticket`    a ticket's life on its executor thread; `engine.toolcalls` its tool calls
- `engine.agents`    agent sessions, Tier 4 QA, step and budget gates, the key scrubber
- `engine.writer`    the write-behind track writer
- `engine.planning`  Tier 1 and Tier 2, accepting and editing tracks
- `engine.curation`  each tier's context sections (the repository map, files, documents)
- `engine.actions`   retry, skip, cancel, revert (each returns a future)
- `engine.track_setup` a track's verify command; `git init` for a plain workspace
- `engine.reads`     the typed read API (stream text, comms entries, previews, files)
- `engine.history`   every session of the workspace: usage over all of them, an earlier
  session's comms entries and streams, the last epic
- `engine.cap`, `engine.sessions`, `engine.streams`: the worker cap, the session registry,
  the stream buffers, each with its own lock.

Threads: any thread (GUI, CLI, API) calls the public methods, which are thread-safe and never
block on the loop: every command returns a `concurrent.futures.Future` (or raises EngineError
at once for a request it refuses). State owned here: the track registry (`_tracks`) and the
tickets in it, the run futures, the paused set and the cancel events, all under the track lock
(`_lock`); the settings and the provider under `_provider_lock`. Everything else belongs to
the part named above.
"""
from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import secrets
import threading
import time
from pathlib import Path
from typing import Any

from ai_client import (CommsLog, Provider, ProviderError, ProviderPool, SessionHistory,
                       list_ollama_models, ollama_host)
from conductor_store import ConductorStore
from engine.actions import TicketActions
from engine.agents import Agents
from engine.approvals import ApprovalBroker
from engine.cap import WorkerCap
from engine.context import LoopContext
from engine.history import HistoryReads
from engine.curation import Curation
from engine.errors import (MAX_EPIC_CHARS, ApprovalAlreadyResolved, ApprovalNotFound,
                           BudgetExceeded, EngineError, StepStopped)
from engine.planning import Planning
from engine.ready import ReadySet
from engine.scheduler import Scheduler
from engine.sessions import SessionRegistry
from engine.streams import StreamBuffers
from engine.ticket import TicketLife
from engine.checkpoint import CheckpointGate
from engine.branches import Branches
from engine.preparing import Preparing
from engine.track_branch import TrackBranching
from engine.checks import Checks, CheckReport, propose_verify_command
from engine.toolcalls import ToolCalls
from engine.track_setup import TrackSetup
from engine.reads import Reads
from engine.writer import TrackWriter
from events import AsyncEventQueue, Inbox
from models import (MAX_WORKERS, ApprovalDecision, ApprovalRequest, EpicPlan, Settings, Track)
from tools import GitRepo, Workspace

_ReadySet = ReadySet          # the name the scheduling tests and bench notes used

__all__ = ("ConductorEngine", "EngineError", "ApprovalNotFound", "ApprovalAlreadyResolved",
           "BudgetExceeded", "StepStopped", "StreamBuffers", "ReadySet", "MAX_EPIC_CHARS",
           "ApprovalBroker", "WorkerCap", "SessionRegistry", "CheckReport",
           "propose_verify_command", "ProviderError")


class ConductorEngine(LoopContext, TrackWriter, Planning, Curation, Scheduler, TicketLife,
                      CheckpointGate, Branches, Preparing, TrackBranching, Checks, ToolCalls, Agents,
                      TicketActions, TrackSetup, Reads, HistoryReads):
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
        self._repomap: Any = None               # toolbox.RepoMap, built on the first plan
        self._repomap_lock = threading.Lock()
        self._tree_maps: dict[str, Any] = {}      # worktree id -> its last RepoMap
        if settings is None:
            settings, notices = self.store.load_settings()
            self.notices.extend(notices)
        self.settings = settings
        self._provider = provider      # the default tier's, once asked for (the scrubber's key)
        self._providers = ProviderPool(settings, fixed=provider)   # one provider per name
        self._provider_lock = threading.Lock()
        self._scrub_cache: tuple[Any, Any] | None = None
        self.inbox = inbox if inbox is not None else Inbox()
        self.ws = Workspace(self.workspace, shell_timeout_s=settings.shell_timeout_s,
                            sandbox=settings.sandbox, sandbox_network=settings.sandbox_network)
        self.session_id, self.session_dir = self._session(session_id, resume)
        self.comms = CommsLog(self.session_dir / "comms.jsonl")
        if self.comms.set_aside:
            self.notices.append(f"{len(self.comms.set_aside)} torn or unreadable comms-log "
                                f"line(s) were set aside next to {self.comms.path}")
        self.streams = StreamBuffers(self.session_dir / "streams.txt")
        # the earlier sessions' logs, read back on demand (engine.history)
        self.history = SessionHistory(self.session_dir.parent, self.session_id)
        self._spill_queued = False
        self._closed = False
        self.approvals = ApprovalBroker(self.comms, self._emit, lambda: self._closed,
                                        auto_approve)
        self.cap = WorkerCap(settings.max_workers)
        self._sessions = SessionRegistry()
        self._lock = threading.RLock()      # the track registry: tracks, tickets, runs
        self._tracks: dict[str, Track] = {}
        self._load_tracks()
        self._cancel_flags: dict[str, threading.Event] = {}
        self._running: dict[str, concurrent.futures.Future[Track]] = {}
        self._paused: set[str] = set()
        self._wakes: dict[str, asyncio.Event] = {}
        self._written_lock = threading.Lock()
        self._written: dict[str, set[str]] = {}   # ticket id -> paths its worker wrote
        self._budget_lock = threading.Lock()
        self.proposal: EpicPlan | None = None
        self.last_epic = ""
        self._git: GitRepo | None = None
        self._git_lock = threading.Lock()
        if settings.git_commits:
            self._git, reason = GitRepo.detect(self.workspace, clean=not settings.worktrees)
            if self._git is None:
                self.notices.append(f"Git commits per ticket are off: {reason}")
        self._init_branches()
        status = self.ws.sandbox_status()
        if not status.ready:
            self.notices.append(status.message)
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
        self._workers_reported: tuple[int, int, int] | None = None
        # the track writer's state (engine.writer; loop thread)
        self._dirty: set[str] = set()
        self._dirty_failed: set[str] = set()
        self._last_snaps: collections.OrderedDict[str, Track] = collections.OrderedDict()
        self._writer: asyncio.Task[None] | None = None
        self._writers: set[asyncio.Task[None]] = set()
        self._save_gen = 0           # bumped by each _save (loop thread)
        self._saved_gen = 0          # every change up to this generation is on disk
        self._pass_done: asyncio.Future[None] | None = None   # resolved after each write pass
        self._pace: asyncio.Future[None] | None = None   # the writer's pause between passes
        self._save_waiters: collections.deque[tuple[int, Any]] = collections.deque()
        # the scheduler's state (engine.scheduler; loop thread)
        self._ready_sets: dict[str, ReadySet] = {}
        self._queued: dict[str, int] = {}

    def _session(self, session_id: str | None, resume: bool) -> tuple[str, Path]:
        root = self.store.sessions_dir()
        root.mkdir(parents=True, exist_ok=True)
        if session_id is None and resume:
            existing = sorted(p.name for p in root.iterdir() if (p / "comms.jsonl").exists())
            session_id = existing[-1] if existing else None
        if session_id is None:
            # the start time to the millisecond first: ids sort in the order sessions began,
            # even when two begin within a second (the history and --resume read them so)
            now = time.time()
            session_id = (time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
                          + f"{int(now * 1000) % 1000:03d}-" + secrets.token_hex(2))
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

    def _get(self, track_id: str) -> Track:
        with self._lock:
            t = self._tracks.get(track_id)
        if t is None:
            raise EngineError(f"no track {track_id!r}")
        return t

    # -- provider, settings, the worker cap ---------------------------------------------------
    @property
    def auto_approve(self) -> bool:
        return self.approvals.auto_approve

    @auto_approve.setter
    def auto_approve(self, value: bool) -> None:
        self.approvals.auto_approve = bool(value)

    def provider(self, tier: str | None = None) -> Provider:
        """The provider that runs `tier` (settings.provider_for), the default one for None;
        built on first use and shared by every tier on it (ProviderPool)."""
        p = self._providers.for_tier(tier)
        if tier is None:
            with self._provider_lock:
                self._provider = p
        return p

    def ollama_models(self, host: str | None = None, timeout_s: float = 3.0
                      ) -> tuple[str, list[dict[str, Any]]]:
        """(the Ollama server's address, the models it has): GET {host}/api/tags, where host is
        the given one, else Settings.ollama.host, else OLLAMA_HOST, else 127.0.0.1:11434.
        BLOCKS up to timeout_s: call it off the GUI thread (the GUI's background pool, an API
        handler). Raises ProviderError with a sentence when no server answers there."""
        configured = self.settings.ollama.host if host is None else host
        return ollama_host(configured), list_ollama_models(configured, timeout_s=timeout_s)

    def update_settings(self, settings: Settings, save: bool = True) -> None:
        """Replace the settings (thread-safe). A provider change takes effect for new agents."""
        with self._provider_lock:
            # providers whose own settings changed are rebuilt for new agents; running agents
            # keep theirs (and its open client) until they end
            self._providers.update(settings)
            self.settings = settings
        self.cap.set_cap(settings.max_workers)
        if save:
            self.store.save_settings(settings)
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self._wake_all)

    def _close_provider(self) -> None:
        """Drop the provider and close its HTTP client (at engine close only)."""
        self._provider = None
        self._providers.close()

    def set_max_workers(self, n: int) -> None:
        """The worker cap for this session (not saved). Out of 1..MAX_WORKERS is an error."""
        if not 1 <= int(n) <= MAX_WORKERS:
            raise EngineError(f"max_workers must be between 1 and {MAX_WORKERS}, not {n}")
        self.update_settings(self.settings.model_copy(update={"max_workers": int(n)}),
                             save=False)

    def note_rate_limited(self, retry_after: float) -> None:
        """A provider hit a rate limit: halve the worker cap until it has passed."""
        self.cap.note_rate_limited(retry_after)

    # -- approvals (the broker's face) --------------------------------------------------------
    async def ask(self, req: ApprovalRequest) -> ApprovalDecision:
        """Await the person's decision on a request (loop thread)."""
        return await self.approvals.ask(req)

    def ask_from_thread(self, req: ApprovalRequest) -> ApprovalDecision:
        """Block an executor thread until the person decides."""
        return self.approvals.ask_from_thread(req)

    def resolve(self, approval_id: str, decision: ApprovalDecision) -> None:
        """Answer an approval (any thread); see ApprovalBroker.resolve."""
        self.approvals.resolve(approval_id, decision)

    def approve_all(self, source: str = "user") -> int:
        """Approve every request pending right now, once. Not a standing grant."""
        return self.approvals.approve_all(source)
