"""The app's state: `AppState` made of sub-states, one per concern, each with its helpers.

GUI thread only. Nothing here is touched by another thread: the engine reaches the GUI through
its inbox (drained in `gui.frame`), and work off the GUI thread comes back as a
`concurrent.futures.Future` polled each frame (`AppState.ops`).

State owned here:
- `ApprovalsState`: the pending requests as last read, which ones the user answered, the
  dialog's edit, "decide later"; `waiting()` is the one place that says what waits.
- `StreamsState`: one `StreamView` per stream, the tab and the stream shown per tier.
- `TicketsState`: the tracks as last read, the selection, ticket drafts, the track editor,
  the spec/plan cache, the graph editor's ids.
- `UsageState`: token usage per tier/track/ticket, the plot's series, the context gauge.
- `CommsState`: one short row per comms entry, the filters, the selection.
- `ModalState`: which modal is open or asked for, the proposal and the settings draft (and
  the Ollama models listed for it).
- `HistoryState` (gui.history): the workspace's earlier sessions, the one the Comms panel
  shows, its streams.
- `TicketDetailState`: the ticket shown in the Tickets window's details pane, its diff as
  last fetched (off the frame), the file the diff view jumps to.
- `SetupState`: whether tickets get worktrees (and whether `git init` can help), the verify
  command the project suggests, the person's verify-command draft.
- `AppState`: the above, plus notices, work in flight, and the two ways to run work:
  `command()` for an engine command (returns a Future) and `background()` for anything else.
"""
from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imgui_bundle import hello_imgui, imgui

from gui import engine_reads, pacing
from gui.history import HistoryState
from gui.records import (ApprovalEdit, CommsRow, DiffPick, Notice, Op, PathPrompt, ProposalRow,
                         StreamView, TicketDraft)
from gui.theme import MAX_NOTICES, STREAM_KEEP_CHARS, describe_error
from models import ApprovalRequest, Track, Usage, tier_of_stream

if TYPE_CHECKING:
    from multi_agent_conductor import ConductorEngine


def same_failure(a: str, b: str) -> bool:
    """Two messages that tell one failure with different lead-ins ("Plan epic: X" and
    "Tier 1 could not plan the epic: X"): what follows one's first ": " ends the other."""
    for x, y in ((a, b), (b, a)):
        core = x.split(": ", 1)[1] if ": " in x else ""
        if len(core) >= 20 and y.endswith(core):
            return True
    return False


class ApprovalsState:
    """Approval requests waiting for the user, and the dialog's edit of the front one."""

    def __init__(self) -> None:
        self.pending: list[ApprovalRequest] = []   # as last read from the engine (or its events)
        self.answered: set[str] = set()            # ids the user answered (the engine may lag)
        self.edit: ApprovalEdit | None = None
        self.deferred = False                      # "Decide later": the dialog stays closed
        self.diff_pick = DiffPick()                # the file selected in a merge's diff
        self.dirty = True
        self.read_at = 0.0

    def waiting(self) -> list[ApprovalRequest]:
        """The requests still waiting for the user, oldest first: the one place this is decided."""
        return [r for r in self.pending if r.id not in self.answered]

    def waiting_for(self, *, ticket_id: str = "", track_id: str = "",
                    stream_id: str = "") -> list[ApprovalRequest]:
        """The requests waiting for the user that hold up this ticket, track or stream."""
        return [r for r in self.waiting()
                if (ticket_id and r.ticket_id == ticket_id) or (track_id and r.track_id == track_id)
                or (stream_id and r.stream_id == stream_id)]

    def replace(self, requests: list[ApprovalRequest]) -> None:
        self.pending = sorted((r for r in requests if r.id not in self.answered),
                              key=lambda r: r.created_at)
        self.dirty = False

    def add(self, request: ApprovalRequest) -> None:
        if request.id not in self.answered and all(r.id != request.id for r in self.pending):
            self.pending.append(request)
            self.pending.sort(key=lambda r: r.created_at)
        self.dirty = True

    def remove(self, approval_id: str) -> None:
        self.pending = [r for r in self.pending if r.id != approval_id]
        self.dirty = True

    def mark_answered(self, ids: list[str] | set[str]) -> None:
        self.answered.update(ids)
        self.pending = self.waiting()
        self.dirty = True

    def reopen(self) -> None:
        """Undo "decide later"; the caller asks for the dialog."""
        self.deferred = False


class StreamsState:
    """The streams' text as display rows, and what the Streams window shows."""

    def __init__(self) -> None:
        self.views: dict[str, StreamView] = {}
        self.tab = "Tier 1"
        self.selected: dict[str, str] = {}      # tier -> the stream shown for it
        self.tab_request: str | None = None     # a tab to select at the next frame
        self.follow_activity = True
        self.last_active = ""
        self.last_tab_switch = 0.0
        self.swept_at = 0.0

    def view(self, stream_id: str) -> StreamView:
        v = self.views.get(stream_id)
        if v is None:
            v = self.views[stream_id] = StreamView(stream_id)
            self.selected.setdefault(tier_of_stream(stream_id), stream_id)
        return v

    def of_tier(self, tier: str) -> list[str]:
        return [sid for sid in self.views if tier_of_stream(sid) == tier]

    def show(self, tier: str, stream_id: str, *, by_user: bool = True) -> None:
        """Select `stream_id` for its tier and switch the tab to it at the next frame; a user's
        choice turns "follow activity" off so it is not taken away again."""
        self.selected[tier] = stream_id
        self.tab_request = tier
        if by_user:
            self.follow_activity = False

    def unload_idle(self, now: float) -> None:
        """Keep memory to the streams in use: the rows of a stream that ended a while ago and
        is not on screen are dropped (the engine keeps its text, on disk)."""
        shown = set(self.selected.values())
        for sid, v in self.views.items():
            if (not v.unloaded and v.state != "streaming" and sid not in shown
                    and v.chars > STREAM_KEEP_CHARS and now - v.last_chunk_at > 10.0):
                v.unload()


class TicketsState:
    """Tracks and tickets as last read, the selection, and the user's unsaved edits."""

    def __init__(self) -> None:
        self.tracks: list[Track] = []
        self.dirty = True
        self.read_at = 0.0
        self.selected_track: str | None = None
        self.drafts: dict[str, TicketDraft] = {}
        self.track_edit: dict[str, str] | None = None
        self.tab_graph = False
        self.doc_cache: dict[str, tuple[float, str]] = {}
        self.doc_checked: dict[str, float] = {}
        self.graph_layout: tuple[str, Any] | None = None   # (signature, gui.graph_layout.GraphLayout)
        self.selected_ticket: str | None = None            # clicked in the graph

    def track_by_id(self, track_id: str | None) -> Track | None:
        for t in self.tracks:
            if t.id == track_id:
                return t
        return None


class UsageState:
    """Token usage and cost, the plot's series, and the context-window gauge. `tier`, `track`,
    `ticket` and `total` cover every session of the workspace (`scope == "all"`, once the
    earlier sessions' figures are read: `earlier`) or this session only (`"current"`);
    `session_total` is always this session's (the budget is per session)."""

    def __init__(self) -> None:
        self.tier: dict[str, Usage] = {}
        self.track: dict[str, Usage] = {}
        self.ticket: dict[str, Usage] = {}
        self.total = Usage()
        self.session_total = Usage()
        self.scope = "all"
        self.earlier: Any = None        # the earlier sessions' usage (engine.earlier_usage())
        self.dirty = True
        self.read_at = 0.0
        self.series: dict[str, tuple[list[float], list[float]]] = {}
        self.plot_cache: dict[str, Any] = {}
        self.bleed_stream = ""
        self.bleed_pinned = False
        self.bleed: dict[str, Any] | None = None
        self.bleed_read_at = 0.0
        self.context: list[Any] = []     # that agent's context sections (models.SectionInfo)

    def set_totals(self, tier: dict[str, Usage], track: dict[str, Usage],
                   ticket: dict[str, Usage]) -> None:
        """This session's figures (the engine's live sums), with the earlier sessions' added
        when the scope is "all"."""
        total = Usage()
        for u in tier.values():
            total = total + u
        self.session_total = total
        e = self.earlier
        if self.scope == "all" and e is not None:
            tier, track, ticket = (_added(e.by["tier"], tier), _added(e.by["track"], track),
                                   _added(e.by["ticket"], ticket))
            total = e.total + total
        self.tier, self.track, self.ticket = tier, track, ticket
        self.total = total
        self.dirty = False

    def add_point(self, tier: str, at: float, tokens: int) -> None:
        xs, ys = self.series.setdefault(tier, ([], []))
        xs.append(max(at, 0.0))
        ys.append((ys[-1] if ys else 0.0) + tokens)
        self.plot_cache.pop(tier, None)
        self.dirty = True


def _added(a: dict[str, Usage], b: dict[str, Usage]) -> dict[str, Usage]:
    """Two usage dicts added key by key."""
    out = dict(a)
    for k, u in b.items():
        out[k] = out[k] + u if k in out else u
    return out


class CommsState:
    """One short row per comms entry (the entry itself stays in the log's file), the filters
    and the selection."""

    def __init__(self) -> None:
        self.rows: list[CommsRow] = []
        self.filtered: list[int] = []
        self.filter_tier = "All"
        self.filter_stream = "All"
        self.filter_kind = "All"
        self.selected: int | None = None
        self.detail: tuple[int, str] = (-1, "")          # the opened entry's JSON
        self.detail_fields: list[tuple[str, str]] = []   # ... as readable fields
        self.follow = True
        self.streams: list[str] = []
        self.kinds: list[str] = []
        self.last_export = ""
        # None: the running session's log (read through the engine); else an earlier
        # session's (gui.history), whose rows were read on the background pool
        self.log: Any = None

    def matches(self, e: CommsRow) -> bool:
        return ((self.filter_tier == "All" or e.tier == self.filter_tier)
                and (self.filter_stream == "All" or e.stream_id == self.filter_stream)
                and (self.filter_kind == "All" or e.kind == self.filter_kind))

    def refilter(self) -> None:
        self.filtered = [i for i, e in enumerate(self.rows) if self.matches(e)]

    def append(self, entries: list[dict[str, Any]]) -> None:
        start = len(self.rows)
        for i, entry in enumerate(entries, start):
            row = CommsRow.of(entry, i)
            self.rows.append(row)
            if row.stream_id and row.stream_id not in self.streams:
                self.streams.append(row.stream_id)
            if row.kind and row.kind not in self.kinds:
                self.kinds.append(row.kind)
            if self.matches(row):
                self.filtered.append(i)


class OllamaListing:
    """The models the Ollama server has, for the Settings dialog: listed on the background pool
    (GET /api/tags through the engine), never in the frame. `state`: "" (not asked), "listing",
    "listed" or "failed" (then `message` says why, e.g. that no server answers)."""

    def __init__(self) -> None:
        self.state = ""
        self.host = ""                  # the address asked
        self.models: list[dict[str, Any]] = []
        self.message = ""


class ModalState:
    """One modal at a time: the open one, the ones asked for, and what they edit."""

    def __init__(self) -> None:
        self.current: str | None = None
        self.requests: set[str] = set()
        self.proposal: list[ProposalRow] | None = None
        self.proposal_count = 0                      # how many tracks Tier 1 proposed
        self.proposal_removed: list[tuple[int, ProposalRow]] = []   # for "Undo remove"
        self.proposal_scroll_to_end = False          # a track was added: show it
        self.proposal_epic = ""
        self.proposal_error = ""
        self.settings_draft: dict[str, Any] | None = None
        self.settings_errors: list[str] = []
        self.ollama = OllamaListing()
        # a drop-down of the Settings dialog was open last frame: Escape closes that, not the
        # dialog (whose draft would be lost)
        self.settings_popup_above = False
        self.path_prompt: PathPrompt | None = None   # "Save as" or "Open workspace"

    def request(self, name: str) -> None:
        self.requests.add(name)

    def open_proposal(self, epic: str, tracks: list[dict[str, Any]]) -> None:
        self.proposal_epic = epic
        self.proposal = [ProposalRow(str(t.get("title", "")), str(t.get("goal", "")),
                                     "\n".join(str(c) for c in t.get("acceptance_criteria", [])))
                         for t in tracks]
        self.proposal_count = len(self.proposal)
        self.proposal_removed = []
        self.proposal_error = ""
        self.request("proposal")


class TicketDetailState:
    """The details pane of one ticket: its diff is fetched off the frame and kept with the key
    it was fetched for (ticket, commit, branch, status), so it is fetched again only when that
    changes."""

    def __init__(self) -> None:
        self.ticket_id: str | None = None
        self.diff_key: tuple[str, ...] = ()
        self.diff: dict[str, Any] | None = None
        self.diff_error = ""
        self.pick = DiffPick()                 # the file selected in its diff, a pending jump
        self.tab_request: str | None = None    # a tab of the pane to select at the next frame


class SetupState:
    """How work is checked and kept: the engine's answer about worktrees (re-read off the frame
    when asked), the project's suggested verify command, the person's verify-command draft."""

    def __init__(self) -> None:
        self.git: dict[str, Any] | None = None       # engine.git_setup(), as last read
        self.git_stale = True
        self.suggestion: tuple[str, str] | None = None   # engine.verify_suggestion()
        self.verify_draft: dict[str, Any] | None = None  # {"id", "own", "command", "base"}


class AppState:
    """Everything the panels show, as sub-states; notices and work in flight."""

    def __init__(self, engine: ConductorEngine) -> None:
        self.engine = engine
        self.workspace = Path(engine_reads.workspace(engine))
        self.started = time.time()
        self.frame = 0
        self.exit_requested = False
        self.last_input_at = 0.0          # when the person last touched the app (gui.pacing)
        self.bg = concurrent.futures.ThreadPoolExecutor(max_workers=2,
                                                        thread_name_prefix="clutch-gui-bg")
        self.ops: list[Op] = []
        self.notices: list[Notice] = []
        self.activity: list[tuple[float, str, str]] = []   # (ts, level, message): the log
        self.panel_errors: dict[str, str] = {}
        self.epic_text = ""
        self.planning = False
        self.workers = {"active": 0, "cap": engine.settings.max_workers, "queued": 0}
        self.approvals = ApprovalsState()
        self.streams = StreamsState()
        self.tickets = TicketsState()
        self.usage = UsageState()
        self.comms = CommsState()
        self.modal = ModalState()
        self.history = HistoryState()
        self.detail = TicketDetailState()
        self.setup = SetupState()
        self.mono_font: imgui.ImFont | None = None
        self.font_notice = ""
        self.api_server: Any = None
        self.interrupted: BaseException | None = None   # see gui.frame.interrupt
        self.recent: list[str] | None = None            # recent workspaces (gui.recent), once read
        self.api_restart: Callable[[], None] | None = None   # set when the API runs beside the app
        self.workspace_lock: Any = None                     # the workspace's lock, when cli took it
        self.lock_workspace: Callable[[Path], Any] | None = None   # cli's: take another one's lock
        self._seed_from_engine()

    # what a workspace switch keeps: the process's, not the workspace's
    KEEP_ON_SWITCH = ("bg", "ops", "notices", "activity", "frame", "exit_requested", "mono_font",
                      "font_notice", "api_server", "api_restart", "interrupted", "recent",
                      "last_input_at", "workspace_lock", "lock_workspace")

    def switch_engine(self, engine: ConductorEngine) -> None:
        """Show another workspace's engine: every per-workspace part of the state starts afresh
        (whoever added it), the process's parts (KEEP_ON_SWITCH) stay. The caller closes the
        old engine."""
        kept = {k: self.__dict__[k] for k in self.KEEP_ON_SWITCH if k in self.__dict__}
        self.__init__(engine)          # type: ignore[misc]  # a fresh state on the new engine
        self.bg.shutdown(wait=False)   # the new pool never ran anything: keep the old one
        self.__dict__.update(kept)

    def _seed_from_engine(self) -> None:
        eng = self.engine
        for sid, state in engine_reads.stream_states(eng).items():
            v = self.streams.view(sid)
            v.feed(engine_reads.stream_text(eng, sid))
            v.state = state
        proposal = engine_reads.open_proposal(eng)
        if proposal is not None:
            self.modal.open_proposal(*proposal)

    # -- notices ----------------------------------------------------------------------------
    def notify(self, level: str, message: str, panel: str = "") -> None:
        message = message.strip() or "(no message)"
        self.activity.append((time.time(), level, message))
        if len(self.activity) > 2000:
            del self.activity[:500]
        if level == "info":
            return
        # the same message again, or the same failure told twice (the engine's event and the
        # command's error, each with its own lead-in: issue 20, defect 14): bring it back
        # instead of stacking copies
        for n in self.notices:
            if n.level == level and (n.message == message
                                     or (not n.dismissed and same_failure(n.message, message))):
                n.ts, n.dismissed = time.time(), False
                message = n.message
                break
        else:
            self.notices.append(Notice(level, message, panel))
            if len(self.notices) > MAX_NOTICES:
                del self.notices[: len(self.notices) - MAX_NOTICES]
        if panel:
            self.panel_errors[panel] = message

    def active_notices(self) -> list[Notice]:
        return [n for n in self.notices if not n.dismissed]

    def dismiss(self, notices: list[Notice]) -> None:
        """The person dismissed these: gone from the strip and from the windows that show the
        same message (issue 20, defect 14: "Dismiss all" left the Epic window's copy)."""
        gone = set()
        for n in notices:
            n.dismissed = True
            gone.add(n.message)
        for panel, msg in list(self.panel_errors.items()):
            if msg in gone:
                del self.panel_errors[panel]

    def dismiss_panel_error(self, panel: str) -> None:
        """A window's error dismissed there: its copy on the strip goes too."""
        msg = self.panel_errors.pop(panel, None)
        if msg is not None:
            self.dismiss([n for n in self.active_notices() if n.message == msg])

    # -- work in flight ---------------------------------------------------------------------
    def track_op(self, label: str, future: concurrent.futures.Future, panel: str = "",
                 on_done: Callable[[Any], None] | None = None,
                 on_error: Callable[[BaseException], None] | None = None) -> Op:
        op = Op(label, future, panel, on_done, on_error)
        self.ops.append(op)
        pacing.wake_on_done(future)
        return op

    def command(self, label: str, fn: Callable[..., Any], *args: Any, panel: str = "",
                on_done: Callable[[Any], None] | None = None,
                on_error: Callable[[BaseException], None] | None = None, **kw: Any) -> bool:
        """Run an engine command: it returns a Future at once, polled each frame (never waited
        on). A refusal raised at once (EngineError, DagError...) and a failure the Future
        reports later are both shown on the notification strip (and the panel), never raised.
        A command that returns a plain value is taken as already done. True when accepted."""
        try:
            result = fn(*args, **kw)
        except Exception as e:  # noqa: BLE001 - every engine refusal is shown to the user
            if on_error is not None:
                on_error(e)
            self.notify("error", f"{label}: {describe_error(e)}", panel)
            return False
        if panel:
            self.panel_errors.pop(panel, None)
        if isinstance(result, concurrent.futures.Future):
            self.track_op(label, result, panel, on_done, on_error)
        elif on_done is not None:
            on_done(result)
        return True

    def background(self, label: str, fn: Callable[..., Any], *args: Any, panel: str = "",
                   on_done: Callable[[Any], None] | None = None, **kw: Any) -> Op:
        """Run work that is not an engine command and may wait (disk, a preview) off the GUI
        thread; its result or error comes back like a command's."""
        return self.track_op(label, self.bg.submit(fn, *args, **kw), panel, on_done)

    def busy(self, label: str) -> bool:
        return any(op.label == label for op in self.ops)

    def focus_window(self, name: str) -> None:
        try:
            hello_imgui.get_runner_params().docking_params.focus_dockable_window(name)
        except RuntimeError:
            pass   # no runner (tests without a window): nothing to focus

    def close(self) -> None:
        self.bg.shutdown(wait=False, cancel_futures=True)
