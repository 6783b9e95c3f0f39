"""Clutch, the desktop app: one AppState, one plain function per panel, hello_imgui docking.

The shape follows imgui-bundle's `demos_immapp/demo_docking.py`: an `AppState` class, each
dockable window a function `panel(app)`, the docking splits and windows built by small
functions, menus and status bar as callbacks, and `main()` assembling the RunnerParams.

Threads. Everything here runs on the GUI thread, which never blocks:
- once per frame (`pre_new_frame`) the engine's inbox is drained into the app state;
- engine calls that return a Future are polled each frame (`future.done()`), never waited on;
  their errors come back through `future.exception()` and are shown to the user;
- engine calls that may wait on the engine's loop (retry/skip/cancel, settings I/O, export) run
  on a small background pool of our own, and are polled the same way;
- the engine wakes an idle window through `engine.inbox.on_put = hello_imgui.request_refresh`.
Nothing here touches asyncio.
"""
from __future__ import annotations

import concurrent.futures
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from imgui_bundle import ImVec2, ImVec4, hello_imgui, imgui, immapp
from imgui_bundle import icons_fontawesome_4 as fa
from imgui_bundle import imgui_md
from imgui_bundle import imgui_node_editor as ed
from imgui_bundle import implot
from pydantic import ValidationError

import events as ev
from models import (TIERS, ApprovalEditError, ApprovalRequest, Approved, BudgetPayload, DagError,
                    Denied, Settings, ShellPayload, SpawnPayload, StepPayload, Ticket, ToolPayload,
                    Track, TrackProposal, Usage, dag_problems, edit_payload,
                    file_overlap_warnings, stream_tier3, tier_of_stream, ticket_action_refusal)
from models import ApprovalPayload as ApprovalPayloadT

log = logging.getLogger("clutch.gui")

APP_TITLE = "Clutch"
DEJAVU_SANS = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
DEJAVU_MONO = "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf"
WRAP_COLS = 160            # stream rows are hard-wrapped at this many characters on arrival
STREAM_KEEP_CHARS = 4096   # a stream ended and off screen keeps its rows up to this size
MAX_EVENTS_PER_FRAME = 20_000
MAX_NOTICES = 300
MARKDOWN_LIMIT = 100_000   # characters: above this a stream is not offered as markdown

WINDOWS = ("Epic", "Tracks", "Tickets", "Streams", "Approvals", "Usage", "Comms")
# multi-line inputs wrap their text (ImGui 1.92), so long lines stay readable and editable
WRAP = getattr(imgui.InputTextFlags_, "word_wrap", 0)

# ---------------------------------------------------------------------------------------------
# colours
# ---------------------------------------------------------------------------------------------
GREY = ImVec4(0.62, 0.64, 0.68, 1.0)
BLUE = ImVec4(0.35, 0.65, 1.0, 1.0)
GREEN = ImVec4(0.35, 0.85, 0.45, 1.0)
RED = ImVec4(1.0, 0.38, 0.35, 1.0)
AMBER = ImVec4(1.0, 0.72, 0.25, 1.0)
PURPLE = ImVec4(0.72, 0.55, 0.95, 1.0)
DIM = ImVec4(0.45, 0.46, 0.5, 1.0)
WHITE = ImVec4(0.92, 0.93, 0.95, 1.0)

STATUS_COLOURS: dict[str, ImVec4] = {
    # tickets
    "todo": GREY, "in_progress": BLUE, "completed": GREEN, "failed": RED, "blocked": AMBER,
    "skipped": PURPLE, "cancelled": DIM,
    # tracks
    "new": GREY, "planned": WHITE, "paused": AMBER, "needs_attention": AMBER,
    # streams
    "idle": GREY, "streaming": BLUE, "done": GREEN,
}
STATUS_ICONS: dict[str, str] = {
    "todo": fa.ICON_FA_DOT_CIRCLE, "in_progress": fa.ICON_FA_SPINNER, "completed": fa.ICON_FA_CHECK,
    "failed": fa.ICON_FA_TIMES, "blocked": fa.ICON_FA_BAN, "skipped": fa.ICON_FA_FORWARD,
    "cancelled": fa.ICON_FA_STOP, "new": fa.ICON_FA_STAR, "planned": fa.ICON_FA_LIST,
    "paused": fa.ICON_FA_PAUSE, "streaming": fa.ICON_FA_SPINNER, "done": fa.ICON_FA_CHECK,
    "idle": fa.ICON_FA_DOT_CIRCLE, "needs_attention": fa.ICON_FA_EXCLAMATION,
}
TIER_COLOURS = {"Tier 1": ImVec4(0.95, 0.75, 0.3, 1), "Tier 2": ImVec4(0.45, 0.8, 1.0, 1),
                "Tier 3": ImVec4(0.5, 0.9, 0.55, 1), "Tier 4": ImVec4(0.9, 0.55, 0.9, 1)}
LEVEL_COLOURS = {"green": GREEN, "amber": AMBER, "red": RED}
NOTICE_COLOURS = {"error": RED, "warning": AMBER, "info": BLUE}
NOTICE_ICONS = {"error": fa.ICON_FA_TIMES_CIRCLE, "warning": fa.ICON_FA_EXCLAMATION_TRIANGLE,
                "info": fa.ICON_FA_INFO_CIRCLE}

SHORTCUTS: list[tuple[str, str]] = [
    ("Ctrl+Enter", "Epic: plan the epic (Tier 1). Approval dialog: approve (with your edits)"),
    ("Escape", "Approval dialog: jump to the reject reason (Enter there rejects)"),
    ("Ctrl+Shift+Enter", "Approval dialog: approve all pending requests, once"),
    ("Ctrl+Shift+R", "Open the next pending approval"),
    ("Ctrl+,", "Settings"),
    ("Ctrl+1 … Ctrl+7", "Focus Epic, Tracks, Tickets, Streams, Approvals, Usage, Comms"),
    ("F1", "This list of shortcuts"),
    ("Ctrl+Q", "Quit (the engine saves its state)"),
]


def em(x: float, y: float = 0.0) -> ImVec2:
    return hello_imgui.em_to_vec2(x, y)


def fmt_tokens(n: int) -> str:
    if n >= 1_000_000:
        return f"{n / 1e6:.2f}M"
    if n >= 10_000:
        return f"{n / 1e3:.1f}k"
    return str(n)


def fmt_cost(usd: float) -> str:
    if usd == 0:
        return "$0"
    return f"${usd:.4f}" if usd < 1 else f"${usd:,.2f}"


def short(text: str, n: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def describe_error(e: BaseException) -> str:
    """A sentence for the user: the message, with the type only when the message is bare."""
    problems = getattr(e, "problems", None)
    if problems:
        return "; ".join(str(p) for p in problems)
    msg = str(e).strip()
    name = type(e).__name__
    if not msg:
        return name
    if name in ("EngineError", "DagError", "PlanError", "ProviderError", "MissingApiKey",
                "BudgetExceeded", "ApprovalNotFound", "ApprovalAlreadyResolved", "StoreError"):
        return msg
    return f"{name}: {msg}"


def validation_messages(e: ValidationError) -> list[str]:
    out = []
    for err in e.errors():
        loc = ".".join(str(p) for p in err.get("loc", ())) or "(settings)"
        out.append(f"{loc}: {err.get('msg', '')}")
    return out


# =============================================================================================
#    Application state
# =============================================================================================

class CommsRow(NamedTuple):
    """What the comms table shows of one entry (strings shared between rows)."""
    seq: int
    ts: float
    tier: str
    stream_id: str
    direction: str
    kind: str
    model: str
    tokens: int | None

    @classmethod
    def of(cls, e: dict[str, Any], i: int) -> CommsRow:
        def s(key: str) -> str:
            v = e.get(key)
            return sys.intern(v) if isinstance(v, str) else ""
        u = e.get("usage")
        tokens = u.get("total_tokens") if isinstance(u, dict) else None
        ts = e.get("ts")
        return cls(e.get("seq") if isinstance(e.get("seq"), int) else i + 1,
                   float(ts) if isinstance(ts, (int, float)) else 0.0,
                   s("tier"), s("stream_id"), s("direction"), s("kind"), s("model"),
                   int(tokens) if isinstance(tokens, (int, float)) else None)


class StreamView:
    """One stream's text as display rows, extended incrementally as chunks arrive: never
    re-split per frame, so a multi-megabyte stream costs the same per frame as a short one."""

    __slots__ = ("stream_id", "rows", "state", "chars", "follow", "markdown", "_md_cache",
                 "last_chunk_at", "at_bottom", "jump_to_end", "unloaded")

    def __init__(self, stream_id: str) -> None:
        self.stream_id = stream_id
        self.rows: list[str] = [""]
        self.state = "idle"
        self.chars = 0
        self.follow = True          # auto-scroll while at the bottom
        self.at_bottom = True
        self.jump_to_end = False
        self.markdown = False
        self._md_cache: tuple[int, str] = (-1, "")
        self.last_chunk_at = 0.0
        self.unloaded = False       # rows dropped; the engine has the text (see unload)

    def unload(self) -> None:
        """Drop the rows of a stream nobody is looking at; `load()` brings them back from the
        engine. Chunks fed meanwhile are only counted."""
        self.rows = [""]
        self._md_cache = (-1, "")
        self.unloaded = True

    def load(self, text: str) -> None:
        """`text`: the engine's text of this stream, which may already hold chunks the GUI has
        not drained yet: only the `chars` fed so far are taken, the rest arrives as chunks."""
        seen, self.chars, self.rows, self.unloaded = self.chars, 0, [""], False
        self.feed(text[:seen])

    def feed(self, text: str) -> None:
        if not text:
            return
        self.chars += len(text)
        if self.unloaded:
            return
        if "\t" in text or "\r" in text:
            text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\t", "    ")
        parts = text.split("\n")
        rows = self.rows
        rows[-1] += parts[0]
        if len(rows[-1]) > WRAP_COLS:
            self._wrap_last()
        for p in parts[1:]:
            rows.append(p)
            if len(p) > WRAP_COLS:
                self._wrap_last()

    def _wrap_last(self) -> None:
        rows = self.rows
        line = rows.pop()
        while len(line) > WRAP_COLS:
            cut = line.rfind(" ", WRAP_COLS // 2, WRAP_COLS)
            cut = cut + 1 if cut > 0 else WRAP_COLS
            rows.append(line[:cut])
            line = line[cut:]
        rows.append(line)

    @property
    def line_count(self) -> int:
        return len(self.rows) if self.rows[-1] else len(self.rows) - 1

    def text(self) -> str:
        """The whole text (joined on demand, cached by length: for markdown and copy)."""
        if self._md_cache[0] != self.chars:
            self._md_cache = (self.chars, "\n".join(self.rows))
        return self._md_cache[1]


@dataclass
class Notice:
    level: str          # "error" | "warning" | "info"
    message: str
    panel: str = ""     # the window it belongs to ("" = global)
    ts: float = field(default_factory=time.time)
    dismissed: bool = False


@dataclass
class Op:
    """Work in flight: a Future polled each frame."""
    label: str
    future: concurrent.futures.Future
    panel: str = ""
    on_done: Callable[[Any], None] | None = None
    on_error: Callable[[BaseException], None] | None = None
    started: float = field(default_factory=time.monotonic)


@dataclass
class ProposalRow:
    title: str
    goal: str
    criteria: str      # one per line


@dataclass
class TicketRow:
    id: str
    description: str
    depends: str       # comma separated
    files: str         # comma separated
    original: Ticket | None = None


@dataclass
class TicketDraft:
    track_id: str
    rows: list[TicketRow]
    base: str          # signature of the tickets the draft was made from
    dirty: bool = False
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass
class ApprovalEdit:
    request: ApprovalRequest
    fields: dict[str, str]
    original: dict[str, str]
    error: str = ""
    reason: str = ""
    preview: str = ""
    focus_reason: bool = False


class AppState:
    """Everything the panels show. Touched on the GUI thread only."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.workspace = Path(engine.workspace)
        self.started = time.time()
        self.frame = 0
        self.exit_requested = False
        self.bg = concurrent.futures.ThreadPoolExecutor(max_workers=2,
                                                        thread_name_prefix="clutch-gui-bg")
        self.ops: list[Op] = []
        self.notices: list[Notice] = []
        self.activity: list[tuple[float, str, str]] = []   # (ts, level, message): the log
        self.panel_errors: dict[str, str] = {}
        # epic
        self.epic_text = ""
        self.planning = False
        # tracks and tickets
        self.tracks: list[Track] = []
        self.tracks_dirty = True
        self.tracks_read_at = 0.0
        self.selected_track: str | None = None
        self.drafts: dict[str, TicketDraft] = {}
        self.track_edit: dict[str, str] | None = None
        self.tickets_tab_graph = False
        self.doc_cache: dict[str, tuple[float, str]] = {}
        self.doc_checked: dict[str, float] = {}
        # proposal
        self.proposal: list[ProposalRow] | None = None
        self.proposal_epic = ""
        self.proposal_error = ""
        # approvals
        self.approvals: list[ApprovalRequest] = []
        self.approvals_dirty = True
        self.approvals_read_at = 0.0
        self.answered: set[str] = set()
        self.approval_edit: ApprovalEdit | None = None
        self.approvals_deferred = False
        # streams
        self.streams: dict[str, StreamView] = {}
        self.stream_tab = "Tier 1"
        self.stream_selected: dict[str, str] = {}
        self.streams_swept_at = 0.0
        self.follow_activity = True
        self.last_active_stream = ""
        self.last_tab_switch = 0.0
        self.tab_request: str | None = None
        # usage
        self.usage_tier: dict[str, Usage] = {}
        self.usage_track: dict[str, Usage] = {}
        self.usage_ticket: dict[str, Usage] = {}
        self.usage_total = Usage()
        self.usage_read_at = 0.0
        self.usage_dirty = True
        self.usage_series: dict[str, tuple[list[float], list[float]]] = {}
        self._plot_cache: dict[str, Any] = {}
        self.bleed_stream = ""
        self.bleed_pinned = False
        self.bleed: dict[str, Any] | None = None
        self.bleed_read_at = 0.0
        # workers
        self.workers = {"active": 0, "cap": engine.settings.max_workers, "queued": 0}
        # comms
        # one short row per comms entry (what the table shows and filters on); the entry
        # itself stays in the log's file and is read back for the detail pane and exports
        self.comms: list[CommsRow] = []
        self.comms_filtered: list[int] = []
        self.comms_filter_tier = "All"
        self.comms_filter_stream = "All"
        self.comms_filter_kind = "All"
        self.comms_selected: int | None = None
        self.comms_detail: tuple[int, str] = (-1, "")
        self.comms_follow = True
        self.comms_streams: list[str] = []
        self.comms_kinds: list[str] = []
        self.last_export = ""
        # settings
        self.settings_draft: dict[str, Any] | None = None
        self.settings_errors: list[str] = []
        # modal arbitration: one modal at a time
        self.modal: str | None = None
        self.modal_request: set[str] = set()
        # fonts
        self.mono_font: imgui.ImFont | None = None
        self.font_notice = ""
        # graph
        self.graph_editor: Any = None
        self.graph_ids: dict[str, int] = {}
        self.graph_sig = ""
        self.graph_navigate_at = -1
        # extra (api server)
        self.api_server: Any = None
        self._seed_from_engine()

    # -- start-up -------------------------------------------------------------------------
    def _seed_from_engine(self) -> None:
        eng = self.engine
        try:
            info = eng.streams.info()
        except Exception:   # an engine without streams yet
            info = {}
        for sid, i in info.items():
            v = self.view(sid)
            try:
                v.feed(eng.streams.text(sid))
            except KeyError:
                pass
            v.state = i.get("state", "idle")
        if getattr(eng, "proposal", None) is not None:
            self.open_proposal(getattr(eng, "last_epic", ""), [t.model_dump() for t in eng.proposal.tracks])

    # -- helpers --------------------------------------------------------------------------
    def view(self, stream_id: str) -> StreamView:
        v = self.streams.get(stream_id)
        if v is None:
            v = self.streams[stream_id] = StreamView(stream_id)
            tier = tier_of_stream(stream_id)
            self.stream_selected.setdefault(tier, stream_id)
        return v

    def notify(self, level: str, message: str, panel: str = "") -> None:
        message = message.strip() or "(no message)"
        self.activity.append((time.time(), level, message))
        if len(self.activity) > 2000:
            del self.activity[:500]
        if level == "info":
            return
        # the same message again: bring it back instead of stacking copies
        for n in self.notices:
            if n.message == message and n.level == level:
                n.ts, n.dismissed = time.time(), False
                break
        else:
            self.notices.append(Notice(level, message, panel))
            if len(self.notices) > MAX_NOTICES:
                del self.notices[: len(self.notices) - MAX_NOTICES]
        if panel:
            self.panel_errors[panel] = message

    def active_notices(self) -> list[Notice]:
        return [n for n in self.notices if not n.dismissed]

    def track_op(self, label: str, future: concurrent.futures.Future, panel: str = "",
                 on_done: Callable[[Any], None] | None = None,
                 on_error: Callable[[BaseException], None] | None = None) -> Op:
        op = Op(label, future, panel, on_done, on_error)
        self.ops.append(op)
        return op

    def background(self, label: str, fn: Callable[..., Any], *args: Any, panel: str = "",
                   on_done: Callable[[Any], None] | None = None, **kw: Any) -> Op:
        """Run a call that may wait (on disk, or on the engine's loop) off the GUI thread."""
        return self.track_op(label, self.bg.submit(fn, *args, **kw), panel, on_done)

    def busy(self, label: str) -> bool:
        return any(op.label == label for op in self.ops)

    def call(self, label: str, fn: Callable[..., Any], *args: Any, panel: str = "",
             on_done: Callable[[Any], None] | None = None, **kw: Any) -> Any:
        """Call an engine method that returns at once (maybe a Future). Errors raised at once
        (EngineError, DagError...) are shown, never raised."""
        try:
            result = fn(*args, **kw)
        except Exception as e:  # noqa: BLE001 - every engine refusal is shown to the user
            self.notify("error", f"{label}: {describe_error(e)}", panel)
            return None
        if panel:
            self.panel_errors.pop(panel, None)
        if isinstance(result, concurrent.futures.Future):
            self.track_op(label, result, panel, on_done)
        elif on_done is not None:
            on_done(result)
        return result

    def track_by_id(self, track_id: str | None) -> Track | None:
        for t in self.tracks:
            if t.id == track_id:
                return t
        return None

    def request_modal(self, name: str) -> None:
        self.modal_request.add(name)

    def focus_window(self, name: str) -> None:
        try:
            hello_imgui.get_runner_params().docking_params.focus_dockable_window(name)
        except RuntimeError:
            pass

    def open_proposal(self, epic: str, tracks: list[dict[str, Any]]) -> None:
        self.proposal_epic = epic
        self.proposal = [ProposalRow(str(t.get("title", "")), str(t.get("goal", "")),
                                     "\n".join(str(c) for c in t.get("acceptance_criteria", [])))
                         for t in tracks]
        self.proposal_error = ""
        self.request_modal("proposal")

    def close(self) -> None:
        self.bg.shutdown(wait=False, cancel_futures=True)


# =============================================================================================
#    Each frame: drain the inbox, poll futures, refresh cached engine state
# =============================================================================================

def drain_inbox(app: AppState) -> int:
    events = app.engine.inbox.drain(MAX_EVENTS_PER_FRAME)
    for e in events:
        apply_event(app, e)
    if len(app.engine.inbox):
        hello_imgui.request_refresh()   # more to do next frame
    return len(events)


def panel_for_stream(stream_id: str) -> str:
    tier = tier_of_stream(stream_id) if stream_id else ""
    return {"Tier 1": "Epic", "Tier 2": "Tracks", "Tier 3": "Tickets", "Tier 4": "Tickets"}.get(tier, "")


def apply_event(app: AppState, e: Any) -> None:
    if isinstance(e, ev.StreamChunk):
        v = app.view(e.stream_id)
        v.feed(e.text)
        v.state = "streaming"
        v.last_chunk_at = time.monotonic()
        app.last_active_stream = e.stream_id
    elif isinstance(e, ev.StreamEnd):
        app.view(e.stream_id).state = e.state
    elif isinstance(e, (ev.StatusChange, ev.TrackChanged)):
        app.tracks_dirty = True
        if isinstance(e, ev.StatusChange) and e.status == "failed" and e.reason:
            what = e.ticket_id or e.track_id
            app.notify("error", f"{what} failed: {e.reason}", "Tickets")
    elif isinstance(e, ev.UsageEvent):
        app.usage_dirty = True
        xs, ys = app.usage_series.setdefault(e.tier, ([], []))
        xs.append(max(e.ts - app.started, 0.0))
        ys.append((ys[-1] if ys else 0.0) + e.usage.total_tokens)
        app._plot_cache.pop(e.tier, None)
    elif isinstance(e, ev.ApprovalRequested):
        if e.request.id not in app.answered and all(r.id != e.request.id for r in app.approvals):
            app.approvals.append(e.request)
            app.approvals.sort(key=lambda r: r.created_at)
        app.approvals_dirty = True
    elif isinstance(e, ev.ApprovalResolved):
        app.approvals = [r for r in app.approvals if r.id != e.approval_id]
        app.approvals_dirty = True
    elif isinstance(e, ev.ErrorEvent):
        app.notify("error", e.message, panel_for_stream(e.stream_id))
    elif isinstance(e, ev.LogEvent):
        level = e.level if e.level in ("info", "warning", "error") else "info"
        app.notify(level, e.message)
    elif isinstance(e, ev.ProposalReady):
        app.planning = False
        app.open_proposal(e.epic, list(e.tracks))
    elif isinstance(e, ev.WorkersChanged):
        app.workers = {"active": e.active, "cap": e.cap, "queued": e.queued}


def poll_ops(app: AppState) -> None:
    still = []
    for op in app.ops:
        if not op.future.done():
            still.append(op)
            continue
        if op.future.cancelled():
            continue
        exc = op.future.exception()
        if exc is not None:
            if op.on_error is not None:
                op.on_error(exc)
            app.notify("error", f"{op.label}: {describe_error(exc)}", op.panel)
            continue
        if op.panel and app.panel_errors.get(op.panel, "").startswith(op.label):
            app.panel_errors.pop(op.panel, None)
        if op.on_done is not None:
            try:
                op.on_done(op.future.result())
            except Exception as e:  # noqa: BLE001 - a follow-up that fails is shown, not raised
                app.notify("error", f"{op.label}: {describe_error(e)}", op.panel)
    app.ops = still


def refresh_state(app: AppState) -> None:
    eng = app.engine
    now = time.monotonic()
    if now - app.streams_swept_at > 5.0:
        unload_idle_streams(app, now)
        app.streams_swept_at = now
    if app.tracks_dirty or now - app.tracks_read_at > 1.0:
        app.tracks = eng.tracks()
        app.tracks_dirty = False
        app.tracks_read_at = now
        if app.selected_track is None and app.tracks and not app.busy("Accept tracks"):
            # the first track not finished yet (accepting tracks selects the first new one)
            app.selected_track = next((t.id for t in app.tracks if t.status != "completed"),
                                      app.tracks[0].id)
        if app.selected_track is not None and app.track_by_id(app.selected_track) is None:
            app.selected_track = app.tracks[-1].id if app.tracks else None
    if app.approvals_dirty or now - app.approvals_read_at > 0.5:
        pending = [r for r in eng.pending_approvals() if r.id not in app.answered]
        pending.sort(key=lambda r: r.created_at)
        app.approvals = pending
        app.approvals_dirty = False
        app.approvals_read_at = now
    if app.usage_dirty or now - app.usage_read_at > 1.0:
        app.usage_tier = eng.usage("tier")
        app.usage_track = eng.usage("track")
        app.usage_ticket = eng.usage("ticket")
        total = Usage()
        for u in app.usage_tier.values():
            total = total + u
        app.usage_total = total
        app.usage_dirty = False
        app.usage_read_at = now
    n = len(eng.comms)
    if n > len(app.comms):
        start = len(app.comms)
        for i, entry in enumerate(eng.comms.entries(start), start):
            row = CommsRow.of(entry, i)
            app.comms.append(row)
            if row.stream_id and row.stream_id not in app.comms_streams:
                app.comms_streams.append(row.stream_id)
            if row.kind and row.kind not in app.comms_kinds:
                app.comms_kinds.append(row.kind)
            if comms_matches(app, row):
                app.comms_filtered.append(i)


def per_frame(app: AppState) -> None:
    """pre_new_frame callback: state first, then every panel renders from it."""
    app.frame += 1
    if app.exit_requested:
        hello_imgui.get_runner_params().app_shall_exit = True
    try:
        drain_inbox(app)
        poll_ops(app)
        refresh_state(app)
    except Exception as e:  # noqa: BLE001 - a bug here must not take the window down
        log.exception("updating the app state failed")
        app.notify("error", f"Updating the view failed: {describe_error(e)} (details in the log)")
    if app.ops:
        hello_imgui.request_refresh()   # keep polling while work is in flight


def guarded(app: AppState, name: str, fn: Callable[[AppState], None]) -> None:
    """Run one panel; if it raises, recover ImGui's stacks, show the message, keep the app up."""
    state = imgui.internal.ErrorRecoveryState()
    imgui.internal.error_recovery_store_state(state)
    try:
        fn(app)
    except Exception as e:  # noqa: BLE001 - one broken panel must not close the others
        log.exception("the %s panel failed", name)
        io = imgui.get_io()
        keep = io.config_error_recovery_enable_assert
        io.config_error_recovery_enable_assert = False
        try:
            imgui.internal.error_recovery_try_to_recover_state(state)
        finally:
            io.config_error_recovery_enable_assert = keep
        app.notify("error", f"The {name} panel failed: {describe_error(e)} (details in the log)",
                   name if name in WINDOWS else "")


# =============================================================================================
#    Small widgets
# =============================================================================================

def status_text(status: str) -> None:
    colour = STATUS_COLOURS.get(status, GREY)
    imgui.text_colored(colour, f"{STATUS_ICONS.get(status, '')} {status.replace('_', ' ')}")


def coloured_progress(fraction: float, colour: ImVec4, overlay: str, width: float = -1.0) -> None:
    imgui.push_style_color(imgui.Col_.plot_histogram, colour)
    imgui.progress_bar(max(0.0, min(1.0, fraction)), ImVec2(width, 0), overlay)
    imgui.pop_style_color()


def help_marker(text: str) -> None:
    imgui.same_line()
    imgui.text_disabled("(?)")
    imgui.set_item_tooltip(text)


def panel_error(app: AppState, panel: str) -> None:
    """The last error shown for this panel, with a dismiss button."""
    msg = app.panel_errors.get(panel)
    if not msg:
        return
    imgui.push_style_color(imgui.Col_.text, RED)
    imgui.text_wrapped(f"{fa.ICON_FA_TIMES_CIRCLE} {msg}")
    imgui.pop_style_color()
    imgui.push_id(f"dismiss-{panel}")
    if imgui.small_button("Dismiss"):
        app.panel_errors.pop(panel, None)
    imgui.pop_id()
    imgui.separator()


def mono_push(app: AppState) -> bool:
    if app.mono_font is not None:
        imgui.push_font(app.mono_font, 0.0)
        return True
    return False


def mono_pop(pushed: bool) -> None:
    if pushed:
        imgui.pop_font()


def diff_view(app: AppState, text: str, height: float) -> None:
    """A unified diff (or any text) with + and - lines coloured, clipped to what is visible."""
    lines = text.splitlines() or ["(empty)"]
    imgui.begin_child("##diff", ImVec2(-1, height), imgui.ChildFlags_.borders,
                      imgui.WindowFlags_.horizontal_scrollbar)
    pushed = mono_push(app)
    clipper = imgui.ListClipper()
    clipper.begin(len(lines))
    while clipper.step():
        for i in range(clipper.display_start, clipper.display_end):
            ln = lines[i]
            if ln.startswith("+") and not ln.startswith("+++"):
                imgui.text_colored(GREEN, ln)
            elif ln.startswith("-") and not ln.startswith("---"):
                imgui.text_colored(RED, ln)
            elif ln.startswith("@@"):
                imgui.text_colored(BLUE, ln)
            else:
                imgui.text_unformatted(ln)
    mono_pop(pushed)
    imgui.end_child()


# =============================================================================================
#    Panels
# =============================================================================================

# -- Epic ------------------------------------------------------------------------------------

def plan_epic(app: AppState) -> None:
    if app.busy("Plan epic"):
        return
    epic = app.epic_text

    def done(plan: Any) -> None:
        app.planning = False

    def failed(_e: BaseException) -> None:
        app.planning = False

    try:
        fut = app.engine.plan_epic(epic)
    except Exception as e:  # noqa: BLE001 - EngineError for an empty or huge epic
        app.notify("error", f"Plan epic: {describe_error(e)}", "Epic")
        return
    app.panel_errors.pop("Epic", None)
    app.planning = True
    app.track_op("Plan epic", fut, "Epic", done, failed)
    app.stream_tab, app.tab_request = "Tier 1", "Tier 1"


def apply_settings(app: AppState, settings: Settings, label: str = "Save settings",
                   panel: str = "", on_done: Callable[[Any], None] | None = None) -> None:
    app.background(label, app.engine.update_settings, settings, panel=panel, on_done=on_done)


def quick_setting(app: AppState, **update: Any) -> None:
    """Apply one setting from the Epic panel (validated; saved to config.toml)."""
    data = app.engine.settings.model_dump()
    for k, v in update.items():
        data[k] = v
    try:
        s = Settings.model_validate(data)
    except ValidationError as e:
        app.notify("error", "Settings: " + "; ".join(validation_messages(e)), "Epic")
        return
    app.workers["cap"] = s.max_workers
    apply_settings(app, s, "Apply setting", "Epic")


def api_key_status() -> tuple[bool, str]:
    for name in ("GEMINI_API_KEY", "GOOGLE_API_KEY"):
        if os.environ.get(name):
            return True, f"present ({name})"
    return False, "missing: set GEMINI_API_KEY or GOOGLE_API_KEY before starting Clutch"


def panel_epic(app: AppState) -> None:
    panel_error(app, "Epic")
    imgui.text("Describe what you want built (a sentence or a paragraph):")
    flags = imgui.InputTextFlags_.enter_returns_true | WRAP
    avail = imgui.get_content_region_avail()
    h = max(em(0, 5).y, min(avail.y * 0.35, em(0, 12).y))
    entered, app.epic_text = imgui.input_text_multiline("##epic", app.epic_text, ImVec2(-1, h), flags)
    epic_active = imgui.is_item_active() or imgui.is_item_focused()
    ctrl_enter = entered and imgui.get_io().key_ctrl
    if not epic_active and imgui.is_window_focused(imgui.FocusedFlags_.root_and_child_windows):
        ctrl_enter = ctrl_enter or imgui.shortcut(imgui.Key.mod_ctrl | imgui.Key.enter)
    planning = app.busy("Plan epic")
    imgui.begin_disabled(planning)
    clicked = imgui.button(f"{fa.ICON_FA_SITEMAP} Plan epic (Tier 1)###Plan epic (Tier 1)")
    imgui.end_disabled()
    imgui.set_item_tooltip("Ctrl+Enter in the epic box")
    if (clicked or ctrl_enter) and not planning:
        plan_epic(app)
    imgui.same_line()
    if planning:
        imgui.text_colored(BLUE, f"{fa.ICON_FA_SPINNER} Tier 1 is planning…")
    else:
        imgui.text_disabled(f"{len(app.epic_text):,} characters")

    s = app.engine.settings
    imgui.spacing()
    imgui.separator_text("Run settings")
    imgui.push_item_width(em(11).x)
    providers = ["offline", "gemini"]
    idx = providers.index(s.provider) if s.provider in providers else 0
    changed, idx = imgui.combo("Provider", idx, providers)
    if changed and providers[idx] != s.provider:
        quick_setting(app, provider=providers[idx])
    if s.provider == "gemini":
        ok, what = api_key_status()
        imgui.push_style_color(imgui.Col_.text, GREEN if ok else RED)
        imgui.text_wrapped(f"API key {what}")
        imgui.pop_style_color()
    else:
        imgui.text_disabled("The offline model: no key, no network, free.")
    for tier in TIERS:
        model = s.models.get(tier, "")
        imgui.push_id(tier)
        changed, model = imgui.input_text(f"{tier} model", model)
        if imgui.is_item_deactivated_after_edit():
            models = dict(s.models)
            models[tier] = model.strip()
            quick_setting(app, models=models)
        imgui.pop_id()
    if s.provider == "offline":
        imgui.text_disabled("(model names apply to the gemini provider)")
    changed, step = imgui.checkbox("Step mode (ask before every worker step)", s.step_mode)
    if changed:
        quick_setting(app, step_mode=step)
    _c, workers = imgui.slider_int("Max workers", s.max_workers, 1, 16)
    if imgui.is_item_deactivated_after_edit():
        quick_setting(app, max_workers=workers)
    _c, budget = imgui.input_double("Budget (USD, 0 = none)", s.budget_usd, 0.5, 5.0, "%.2f")
    if imgui.is_item_deactivated_after_edit():
        quick_setting(app, budget_usd=max(0.0, budget))
    imgui.pop_item_width()
    if app.busy("Apply setting"):
        imgui.text_disabled("Saving…")


# -- Tracks ----------------------------------------------------------------------------------

def track_dir(app: AppState, track_id: str) -> Path:
    store = getattr(app.engine, "store", None)
    base = getattr(store, "tracks_dir", None)
    return Path(base) / track_id if base else app.workspace / "conductor" / "tracks" / track_id


def read_doc(app: AppState, path: Path) -> str:
    """A track's spec.md or plan.md, re-read at most once a second when it changed."""
    key = str(path)
    now = time.monotonic()
    cached = app.doc_cache.get(key)
    if cached is not None and now - app.doc_checked.get(key, 0.0) < 1.0:
        return cached[1]
    app.doc_checked[key] = now
    try:
        mtime = path.stat().st_mtime
    except OSError:
        return ""
    if cached is None or cached[0] != mtime:
        try:
            app.doc_cache[key] = (mtime, path.read_text(encoding="utf-8", errors="replace"))
        except OSError as e:
            app.doc_cache[key] = (mtime, f"(cannot read {path}: {e})")
    return app.doc_cache[key][1]


def plan_track(app: AppState, track_id: str) -> None:
    app.call("Plan tickets", app.engine.plan_track, track_id, panel="Tracks",
             on_done=lambda _t: setattr(app, "tracks_dirty", True))
    app.tab_request = "Tier 2"


def start_track(app: AppState, track_id: str) -> None:
    draft = app.drafts.get(track_id)
    if draft is not None and draft.dirty:
        # save the user's ticket edits first, then start
        if draft.problems:
            app.notify("error", "Start: fix the ticket problems first (see Tickets)", "Tickets")
            return
        save_draft(app, draft, then=lambda: start_track(app, track_id))
        return
    app.call("Run track", app.engine.start_track, track_id, panel="Tracks",
             on_done=lambda t: app.notify("info", f"track {t.id} finished: {t.status}"))
    app.tracks_dirty = True


def panel_tracks(app: AppState) -> None:
    eng = app.engine
    panel_error(app, "Tracks")
    if app.proposal is not None and app.modal != "proposal":
        imgui.text_colored(AMBER, f"{fa.ICON_FA_INBOX} Tier 1 proposed {len(app.proposal)} track(s).")
        imgui.same_line()
        if imgui.button("Review proposal"):
            app.request_modal("proposal")
    if not app.tracks:
        imgui.text_disabled("No tracks yet: plan an epic in the Epic window.")
        return
    flags = (imgui.TableFlags_.row_bg | imgui.TableFlags_.borders_inner_v | imgui.TableFlags_.resizable
             | imgui.TableFlags_.scroll_y | imgui.TableFlags_.sizing_stretch_prop)
    avail = imgui.get_content_region_avail()
    table_h = min(avail.y * 0.45, (len(app.tracks) + 1.5) * imgui.get_frame_height_with_spacing())
    if imgui.begin_table("tracks", 4, flags, ImVec2(-1, max(table_h, em(0, 4).y))):
        imgui.table_setup_scroll_freeze(0, 1)
        imgui.table_setup_column("Track", imgui.TableColumnFlags_.width_stretch, 3.0)
        imgui.table_setup_column("Status", imgui.TableColumnFlags_.width_fixed, em(6.5).x)
        imgui.table_setup_column("Tickets done", imgui.TableColumnFlags_.width_fixed, em(5.5).x)
        imgui.table_setup_column("Cost", imgui.TableColumnFlags_.width_fixed, em(4).x)
        imgui.table_headers_row()
        for t in app.tracks:
            imgui.table_next_row()
            imgui.table_next_column()
            sel = t.id == app.selected_track
            clicked, _ = imgui.selectable(f"{t.title}##{t.id}", sel,
                                          imgui.SelectableFlags_.span_all_columns)
            if clicked:
                app.selected_track = t.id
            imgui.set_item_tooltip(f"{t.title}\n{t.id}\n\n{t.goal}")
            imgui.table_next_column()
            running = eng.is_running(t.id)
            status_text("paused" if eng.is_paused(t.id) and running else t.status)
            imgui.table_next_column()
            done, total = t.progress()
            colour = RED if t.status == "failed" else GREEN if t.status == "completed" else BLUE
            coloured_progress(done / total if total else 0.0, colour,
                              f"{done}/{total}" if total else "no tickets")
            imgui.table_next_column()
            u = app.usage_track.get(t.id)
            imgui.text(fmt_cost(u.cost_usd) if u else "—")
        imgui.end_table()

    t = app.track_by_id(app.selected_track)
    if t is None:
        return
    running = eng.is_running(t.id)
    paused = eng.is_paused(t.id)
    imgui.separator_text(short(t.title, 80))
    imgui.text_disabled(t.id)
    planning = app.busy("Plan tickets")
    imgui.begin_disabled(running or planning)
    if imgui.button(f"{fa.ICON_FA_LIST_OL} Plan tickets (Tier 2)###Plan tickets (Tier 2)"):
        plan_track(app, t.id)
    imgui.end_disabled()
    imgui.same_line()
    imgui.begin_disabled(running or not t.tickets or t.status == "completed")
    if imgui.button(f"{fa.ICON_FA_PLAY} Start###Start"):
        start_track(app, t.id)
    imgui.end_disabled()
    imgui.same_line()
    imgui.begin_disabled(not running or paused)
    if imgui.button(f"{fa.ICON_FA_PAUSE} Pause###Pause"):
        app.call("Pause", eng.pause_track, t.id, panel="Tracks")
        app.tracks_dirty = True
    imgui.end_disabled()
    imgui.same_line()
    imgui.begin_disabled(not (paused or t.status == "paused"))
    if imgui.button(f"{fa.ICON_FA_FORWARD} Resume###Resume"):
        app.call("Resume", eng.resume_track, t.id, panel="Tracks")
        app.tracks_dirty = True
    imgui.end_disabled()
    if planning:
        imgui.same_line()
        imgui.text_colored(BLUE, f"{fa.ICON_FA_SPINNER} Tier 2 is planning…")

    if imgui.begin_tab_bar("track-docs"):
        if imgui.begin_tab_item_simple("Spec"):
            doc = read_doc(app, track_dir(app, t.id) / "spec.md")
            imgui.begin_child("spec", ImVec2(0, 0))
            imgui_md.render(doc or f"# {t.title}\n\n{t.goal}")
            imgui.end_child()
            imgui.end_tab_item()
        if imgui.begin_tab_item_simple("Plan"):
            doc = read_doc(app, track_dir(app, t.id) / "plan.md")
            imgui.begin_child("plan", ImVec2(0, 0))
            imgui_md.render(doc or "_No plan yet: plan tickets (Tier 2)._")
            imgui.end_child()
            imgui.end_tab_item()
        if imgui.begin_tab_item_simple("Edit"):
            track_editor(app, t, running)
            imgui.end_tab_item()
        imgui.end_tab_bar()


def track_editor(app: AppState, t: Track, running: bool) -> None:
    ed_ = app.track_edit
    if ed_ is None or ed_.get("id") != t.id:
        ed_ = app.track_edit = {"id": t.id, "title": t.title, "goal": t.goal,
                                "criteria": "\n".join(t.acceptance_criteria)}
    _c, ed_["title"] = imgui.input_text("Title", ed_["title"])
    _c, ed_["goal"] = imgui.input_text_multiline("Goal", ed_["goal"], em(0, 4) + ImVec2(-em(6).x, 0), WRAP)
    _c, ed_["criteria"] = imgui.input_text_multiline("Acceptance\ncriteria", ed_["criteria"],
                                                     em(0, 5) + ImVec2(-em(6).x, 0), WRAP)
    if imgui.button("Save track"):
        crit = [c.strip() for c in ed_["criteria"].splitlines() if c.strip()]
        app.call("Save track", app.engine.update_track, t.id, title=ed_["title"], goal=ed_["goal"],
                 acceptance_criteria=crit, panel="Tracks",
                 on_done=lambda _t: app.notify("info", f"track {t.id} saved"))
    imgui.same_line()
    if imgui.button("Revert"):
        app.track_edit = None


# -- Proposal modal --------------------------------------------------------------------------

def begin_sized_modal(title: str, width_em: float, height_em: float, max_height: float) -> bool:
    """A resizable modal centred on first appearance, at most 90 % wide and `max_height` of
    the viewport high. True when open (call imgui.end_popup() then)."""
    vp = imgui.get_main_viewport()
    imgui.set_next_window_size(ImVec2(min(em(width_em).x, vp.work_size.x * 0.9),
                                      min(em(0, height_em).y, vp.work_size.y * max_height)),
                               imgui.Cond_.appearing)
    imgui.set_next_window_pos(vp.get_center(), imgui.Cond_.appearing, ImVec2(0.5, 0.5))
    opened, _ = imgui.begin_popup_modal(title, None)
    return opened


def proposal_modal(app: AppState) -> None:
    rows = app.proposal
    if not begin_sized_modal("Proposed tracks", 60, 40, 0.85):
        return
    if rows is None:
        imgui.close_current_popup()
        app.modal = None
        imgui.end_popup()
        return
    imgui.text_wrapped(f"Tier 1 proposes {len(rows)} track(s) for: {short(app.proposal_epic, 200)}")
    imgui.text_disabled("Edit titles, goals and acceptance criteria (one per line); remove what you do not want.")
    footer = imgui.get_frame_height_with_spacing() * (2.2 if app.proposal_error else 1.3)
    imgui.begin_child("body", ImVec2(0, -footer))
    remove: int | None = None
    for i, row in enumerate(rows):
        imgui.push_id(f"track{i}")
        imgui.separator_text(f"Track {i + 1}")
        imgui.set_next_item_width(-em(9).x)
        _c, row.title = imgui.input_text("Title", row.title)
        _c, row.goal = imgui.input_text_multiline("Goal", row.goal, ImVec2(-em(9).x, em(0, 3.2).y), WRAP)
        _c, row.criteria = imgui.input_text_multiline("Acceptance criteria", row.criteria,
                                                      ImVec2(-em(9).x, em(0, 4.2).y), WRAP)
        if imgui.button(f"{fa.ICON_FA_TRASH} Remove track###Remove track"):
            remove = i
        imgui.pop_id()
    if remove is not None:
        rows.pop(remove)
    imgui.end_child()
    if app.proposal_error:
        imgui.push_style_color(imgui.Col_.text, RED)
        imgui.text_wrapped(app.proposal_error)
        imgui.pop_style_color()
    accepting = app.busy("Accept tracks")
    imgui.begin_disabled(not rows or accepting)
    if imgui.button(f"{fa.ICON_FA_CHECK} Accept###Accept", em(8, 0)):
        accept_proposal(app)
    imgui.end_disabled()
    imgui.same_line()
    if imgui.button("Cancel", em(8, 0)):
        app.proposal = None
        app.modal = None
        imgui.close_current_popup()
    if not rows:
        imgui.same_line()
        imgui.text_colored(AMBER, "No track left: Cancel, or plan the epic again.")
    if app.proposal is None or (app.modal != "proposal"):
        imgui.close_current_popup()
    imgui.end_popup()


def accept_proposal(app: AppState) -> None:
    rows = app.proposal or []
    props: list[TrackProposal] = []
    problems: list[str] = []
    for i, r in enumerate(rows, 1):
        crit = [c.strip() for c in r.criteria.splitlines() if c.strip()]
        try:
            props.append(TrackProposal(title=r.title.strip(), goal=r.goal.strip(),
                                       acceptance_criteria=crit))
        except ValidationError as e:
            problems += [f"track {i}: {m}" for m in validation_messages(e)]
    if problems:
        app.proposal_error = "Not accepted: " + "; ".join(problems)
        return

    def done(tracks: list[Track]) -> None:
        app.tracks_dirty = True
        if tracks:
            app.selected_track = tracks[0].id
        app.notify("info", f"accepted {len(tracks)} track(s)")

    def failed(e: BaseException) -> None:
        app.proposal_error = describe_error(e)

    try:
        fut = app.engine.accept_tracks(props)
    except Exception as e:  # noqa: BLE001
        app.proposal_error = describe_error(e)
        return
    app.track_op("Accept tracks", fut, "Tracks", done, failed)
    app.proposal = None
    app.modal = None


# -- Tickets ---------------------------------------------------------------------------------

def ticket_sig(tickets: list[Ticket]) -> str:
    return json.dumps([[t.id, t.description, t.depends_on, t.target_files] for t in tickets])


def split_list(s: str) -> list[str]:
    return [p.strip() for p in s.replace(";", ",").split(",") if p.strip()]


def draft_tickets(draft: TicketDraft) -> list[Ticket]:
    out = []
    for r in draft.rows:
        base = r.original.model_copy(deep=True) if r.original is not None else Ticket(
            id=r.id, description=r.description or "(no description)")
        base.description = r.description
        base.depends_on = split_list(r.depends)
        base.target_files = split_list(r.files)
        out.append(base)
    return out


def validate_draft(draft: TicketDraft) -> None:
    tickets = draft_tickets(draft)
    problems = dag_problems(tickets)
    problems += [f"{r.id} has no description" for r in draft.rows if not r.description.strip()]
    draft.problems = problems
    draft.warnings = file_overlap_warnings(tickets) if not problems else []


def make_draft(track: Track) -> TicketDraft:
    rows = [TicketRow(t.id, t.description, ", ".join(t.depends_on), ", ".join(t.target_files),
                      t.model_copy(deep=True)) for t in track.tickets]
    d = TicketDraft(track.id, rows, ticket_sig(track.tickets))
    validate_draft(d)
    return d


def save_draft(app: AppState, draft: TicketDraft, then: Callable[[], None] | None = None) -> None:
    validate_draft(draft)
    if draft.problems:
        return
    tickets = draft_tickets(draft)

    def done(track: Track) -> None:
        app.tracks_dirty = True
        app.drafts.pop(draft.track_id, None)
        app.notify("info", f"tickets of {draft.track_id} saved")
        if then is not None:
            then()

    try:
        fut = app.engine.set_tickets(draft.track_id, tickets)
    except DagError as e:
        draft.problems = list(e.problems)
        return
    except Exception as e:  # noqa: BLE001
        app.notify("error", f"Save tickets: {describe_error(e)}", "Tickets")
        return
    app.track_op("Save tickets", fut, "Tickets", done)


def next_ticket_id(app: AppState, draft: TicketDraft) -> str:
    n = 0
    ids = [r.id for r in draft.rows] + [k.id for t in app.tracks for k in t.tickets]
    for i in ids:
        if i.startswith("T-") and i[2:].isdigit():
            n = max(n, int(i[2:]))
    return f"T-{n + 1:03d}"


def editable(app: AppState, t: Track) -> bool:
    return (not app.engine.is_running(t.id) and t.status in ("new", "planned")
            and all(k.status == "todo" for k in t.tickets))


def panel_tickets(app: AppState) -> None:
    panel_error(app, "Tickets")
    t = app.track_by_id(app.selected_track)
    if t is None:
        imgui.text_disabled("Select a track in the Tracks window.")
        return
    imgui.text(f"{short(t.title, 70)}")
    imgui.same_line()
    status_text(t.status)
    if not t.tickets:
        imgui.text_disabled("No tickets yet: Plan tickets (Tier 2) in the Tracks window.")
        return
    if imgui.begin_tab_bar("tickets-tabs"):
        if imgui.begin_tab_item_simple("List"):
            app.tickets_tab_graph = False
            if editable(app, t):
                ticket_editor(app, t)
            else:
                ticket_table(app, t)
            imgui.end_tab_item()
        if imgui.begin_tab_item_simple("Graph"):
            app.tickets_tab_graph = True
            ticket_graph(app, t)
            imgui.end_tab_item()
        imgui.end_tab_bar()


def ticket_editor(app: AppState, t: Track) -> None:
    draft = app.drafts.get(t.id)
    if draft is None or (not draft.dirty and draft.base != ticket_sig(t.tickets)):
        draft = app.drafts[t.id] = make_draft(t)
    imgui.text_disabled("Before start: edit descriptions, dependencies (ticket ids, comma "
                        "separated) and target files.")
    flags = (imgui.TableFlags_.row_bg | imgui.TableFlags_.borders_inner_v | imgui.TableFlags_.resizable
             | imgui.TableFlags_.scroll_y)
    problem_ids = {p.split(" ", 1)[0] for p in draft.problems}
    for p in draft.problems:
        if p.startswith("cycle: "):
            problem_ids |= {x.strip() for x in p[7:].split("->")}
    changed = False
    remove: int | None = None
    avail = imgui.get_content_region_avail().y
    reserve = (len(draft.problems) + len(draft.warnings) + 3) * imgui.get_frame_height_with_spacing()
    if imgui.begin_table("ticket-edit", 5, flags, ImVec2(-1, max(avail - reserve, em(0, 6).y))):
        imgui.table_setup_scroll_freeze(0, 1)
        imgui.table_setup_column("ID", imgui.TableColumnFlags_.width_fixed, em(4).x)
        imgui.table_setup_column("Description", imgui.TableColumnFlags_.width_stretch, 3.0)
        imgui.table_setup_column("Depends on", imgui.TableColumnFlags_.width_stretch, 1.2)
        imgui.table_setup_column("Target files", imgui.TableColumnFlags_.width_stretch, 1.6)
        imgui.table_setup_column("", imgui.TableColumnFlags_.width_fixed, em(1.8).x)
        imgui.table_headers_row()
        for i, r in enumerate(draft.rows):
            imgui.push_id(r.id)
            imgui.table_next_row()
            imgui.table_next_column()
            bad = r.id in problem_ids
            imgui.text_colored(RED if bad else WHITE, r.id)
            imgui.table_next_column()
            imgui.set_next_item_width(-1)
            c, r.description = imgui.input_text("##desc", r.description)
            changed |= c
            imgui.table_next_column()
            imgui.set_next_item_width(-1)
            if bad:
                imgui.push_style_color(imgui.Col_.frame_bg, ImVec4(0.45, 0.1, 0.1, 1))
            c, r.depends = imgui.input_text("##deps", r.depends)
            if bad:
                imgui.pop_style_color()
                imgui.set_item_tooltip("\n".join(p for p in draft.problems if r.id in p))
            changed |= c
            imgui.table_next_column()
            imgui.set_next_item_width(-1)
            c, r.files = imgui.input_text("##files", r.files)
            changed |= c
            imgui.table_next_column()
            if imgui.small_button(fa.ICON_FA_TRASH):
                remove = i
            imgui.set_item_tooltip(f"Remove {r.id}")
            imgui.pop_id()
        imgui.end_table()
    if remove is not None:
        draft.rows.pop(remove)
        changed = True
    if changed:
        draft.dirty = True
        validate_draft(draft)
    for p in draft.problems:
        imgui.text_colored(RED, f"{fa.ICON_FA_TIMES_CIRCLE} {p}")
    for w in draft.warnings:
        imgui.text_colored(AMBER, f"{fa.ICON_FA_EXCLAMATION_TRIANGLE} {w}")
    if imgui.button(f"{fa.ICON_FA_PLUS} Add ticket###Add ticket"):
        draft.rows.append(TicketRow(next_ticket_id(app, draft), "", "", ""))
        draft.dirty = True
        validate_draft(draft)
    imgui.same_line()
    imgui.begin_disabled(not draft.dirty or bool(draft.problems) or app.busy("Save tickets"))
    if imgui.button(f"{fa.ICON_FA_SAVE} Save tickets###Save tickets"):
        save_draft(app, draft)
    imgui.end_disabled()
    imgui.same_line()
    imgui.begin_disabled(not draft.dirty)
    if imgui.button("Discard edits"):
        app.drafts.pop(t.id, None)
    imgui.end_disabled()
    if draft.dirty:
        imgui.same_line()
        imgui.text_colored(AMBER, "unsaved edits (Start saves them first)")


def ticket_table(app: AppState, t: Track) -> None:
    eng = app.engine
    flags = (imgui.TableFlags_.row_bg | imgui.TableFlags_.borders_inner_v | imgui.TableFlags_.resizable
             | imgui.TableFlags_.scroll_y)
    if not imgui.begin_table("ticket-run", 6, flags, ImVec2(-1, -1)):
        return
    imgui.table_setup_scroll_freeze(0, 1)
    imgui.table_setup_column("ID", imgui.TableColumnFlags_.width_fixed, em(3.3).x)
    imgui.table_setup_column("Status", imgui.TableColumnFlags_.width_fixed, em(6.3).x)
    imgui.table_setup_column("Description", imgui.TableColumnFlags_.width_stretch, 3.0)
    imgui.table_setup_column("Depends on", imgui.TableColumnFlags_.width_fixed, em(6).x)
    imgui.table_setup_column("Cost", imgui.TableColumnFlags_.width_fixed, em(3.2).x)
    imgui.table_setup_column("Actions", imgui.TableColumnFlags_.width_fixed, em(10.2).x)
    imgui.table_headers_row()
    status = {k.id: k.status for k in t.tickets}
    for k in t.tickets:
        imgui.push_id(k.id)
        imgui.table_next_row()
        imgui.table_next_column()
        sid = stream_tier3(k.id)
        clicked, _ = imgui.selectable(k.id, app.stream_selected.get("Tier 3") == sid)
        if clicked and sid in app.streams:
            app.stream_selected["Tier 3"] = sid
            app.tab_request = "Tier 3"
            app.follow_activity = False
        imgui.set_item_tooltip("Show its stream")
        imgui.table_next_column()
        status_text(k.status)
        imgui.table_next_column()
        imgui.text_unformatted(short(k.description, 120))
        imgui.set_item_tooltip(k.description + ("\nfiles: " + ", ".join(k.target_files) if k.target_files else ""))
        why = k.blocked_reason or (k.result if k.status in ("completed", "failed") else "")
        if why:
            imgui.set_item_tooltip(why[-1500:])
            imgui.text_colored(RED if k.status in ("failed", "blocked") else DIM, short(why, 110))
        imgui.table_next_column()
        for j, d in enumerate(k.depends_on):
            if j:
                imgui.same_line(0, 0)
                imgui.text(", ")
                imgui.same_line(0, 0)
            imgui.text_colored(STATUS_COLOURS.get(status.get(d, ""), RED), d)
        if not k.depends_on:
            imgui.text_disabled("—")
        imgui.table_next_column()
        u = app.usage_ticket.get(k.id)
        imgui.text(fmt_cost(u.cost_usd) if u else "—")
        imgui.table_next_column()
        if ticket_action_button("Retry", k, "retry"):
            app.background("Retry", eng.retry_ticket, k.id, panel="Tickets",
                           on_done=lambda f, app=app: watch_track_future(app, f))
        imgui.same_line()
        if ticket_action_button("Skip", k, "skip"):
            app.background("Skip", eng.skip_ticket, k.id, panel="Tickets")
        imgui.same_line()
        if ticket_action_button("Cancel", k, "cancel"):
            app.background("Cancel ticket", eng.cancel_ticket, k.id, panel="Tickets")
        imgui.pop_id()
    imgui.end_table()


def ticket_action_button(label: str, k: Ticket, action: str) -> bool:
    """A small button for a ticket action, greyed out with the rule's reason as its tooltip
    when the ticket's status does not allow it (models.ticket_action_refusal)."""
    refusal = ticket_action_refusal(k.status, action, ticket_id=k.id, commit_sha=k.commit_sha)
    imgui.begin_disabled(refusal is not None)
    clicked = imgui.small_button(label)
    imgui.end_disabled()
    if refusal is not None and imgui.is_item_hovered(imgui.HoveredFlags_.allow_when_disabled):
        imgui.set_tooltip(refusal)
    return clicked and refusal is None


def watch_track_future(app: AppState, fut: Any) -> None:
    app.tracks_dirty = True
    if isinstance(fut, concurrent.futures.Future) and not any(op.future is fut for op in app.ops):
        app.track_op("Run track", fut, "Tracks")


# -- ticket graph (imgui-node-editor) ---------------------------------------------------------

def graph_editor(app: AppState) -> Any:
    if app.graph_editor is None:
        cfg = ed.Config()
        cfg.settings_file = None       # we lay the nodes out ourselves: nothing to save
        app.graph_editor = ed.create_editor(cfg)
    return app.graph_editor


def graph_id(app: AppState, ticket_id: str) -> int:
    n = app.graph_ids.get(ticket_id)
    if n is None:
        n = app.graph_ids[ticket_id] = len(app.graph_ids) + 1
    return n


def topo_depths(tickets: list[Ticket]) -> dict[str, int]:
    by_id = {t.id: t for t in tickets}
    depth: dict[str, int] = {}
    visiting: set[str] = set()

    def d(tid: str) -> int:
        if tid in depth:
            return depth[tid]
        if tid in visiting or tid not in by_id:
            return 0
        visiting.add(tid)
        val = 1 + max((d(x) for x in by_id[tid].depends_on if x in by_id), default=-1)
        visiting.discard(tid)
        depth[tid] = val
        return val

    for t in tickets:
        d(t.id)
    return depth


def ticket_graph(app: AppState, t: Track) -> None:
    tickets = t.tickets
    imgui.text_disabled("Nodes by status, left to right by dependency depth. Right-drag pans, "
                        "the wheel zooms, F fits.")
    sig = t.id + "|" + json.dumps([[k.id, k.depends_on] for k in tickets])
    relayout = sig != app.graph_sig
    prev = ed.get_current_editor()
    ed.set_current_editor(graph_editor(app))
    ed.begin("ticket-graph", ImVec2(0, 0))
    depths = topo_depths(tickets)
    rows_at: dict[int, int] = {}
    for k in tickets:
        n = graph_id(app, k.id)
        colour = STATUS_COLOURS.get(k.status, GREY)
        ed.push_style_color(ed.StyleColor.node_border, colour)
        ed.push_style_color(ed.StyleColor.node_bg, ImVec4(colour.x * 0.25, colour.y * 0.25,
                                                          colour.z * 0.25, 0.95))
        nid = ed.NodeId(n * 4)
        if relayout:
            dep = depths.get(k.id, 0)
            row = rows_at.get(dep, 0)
            rows_at[dep] = row + 1
            ed.set_node_position(nid, ImVec2(dep * em(12.5).x, row * em(0, 4.6).y))
        ed.begin_node(nid)
        ed.begin_pin(ed.PinId(n * 4 + 1), ed.PinKind.input)
        imgui.text(fa.ICON_FA_CARET_RIGHT)
        ed.end_pin()
        imgui.same_line()
        imgui.text_colored(colour, f"{k.id} {STATUS_ICONS.get(k.status, '')} {k.status.replace('_', ' ')}")
        imgui.same_line()
        ed.begin_pin(ed.PinId(n * 4 + 2), ed.PinKind.output)
        imgui.text(fa.ICON_FA_CARET_RIGHT)
        ed.end_pin()
        imgui.text_unformatted(short(k.description, 24))
        if k.target_files:
            imgui.text_disabled(short(", ".join(Path(f).name for f in k.target_files), 24))
        ed.end_node()
        ed.pop_style_color(2)
    li = 0
    ids = {k.id for k in tickets}
    for k in tickets:
        for d in k.depends_on:
            if d not in ids:
                continue
            li += 1
            src = graph_id(app, d)
            colour = STATUS_COLOURS.get(next((x.status for x in tickets if x.id == d), ""), GREY)
            ed.link(ed.LinkId(1_000_000 + li), ed.PinId(src * 4 + 2), ed.PinId(graph_id(app, k.id) * 4 + 1),
                    colour, 2.0)
    if relayout:
        app.graph_sig = sig
        app.graph_navigate_at = app.frame + 2
    if app.frame == app.graph_navigate_at:
        ed.navigate_to_content(0.0)
    ed.end()
    if prev is not None:
        ed.set_current_editor(prev)


# -- Streams ---------------------------------------------------------------------------------

def stream_text_view(app: AppState, v: StreamView) -> None:
    """Only the visible rows are submitted (ListClipper); auto-scroll only when at the bottom."""
    imgui.begin_child("##text", ImVec2(-1, -1), imgui.ChildFlags_.borders,
                      imgui.WindowFlags_.horizontal_scrollbar)
    pushed = mono_push(app)
    if v.markdown and v.chars <= MARKDOWN_LIMIT:
        mono_pop(pushed)
        pushed = False
        imgui_md.render(v.text())
    else:
        rows = v.rows
        n = len(rows) if rows[-1] else len(rows) - 1
        clipper = imgui.ListClipper()
        clipper.begin(max(n, 0), imgui.get_text_line_height_with_spacing())
        while clipper.step():
            for i in range(clipper.display_start, clipper.display_end):
                imgui.text_unformatted(rows[i])
        if n == 0:
            imgui.text_disabled("(no output yet)")
    # Auto-scroll only when already at the bottom: the scroll limit is still last frame's, so
    # "at the bottom" means "was at the bottom before this frame's new text".
    v.at_bottom = imgui.get_scroll_y() >= imgui.get_scroll_max_y() - 2.0
    if v.jump_to_end or (v.follow and v.at_bottom):
        imgui.set_scroll_here_y(1.0)
        v.jump_to_end = False
    mono_pop(pushed)
    imgui.end_child()


def ensure_loaded(app: AppState, v: StreamView) -> None:
    """A stream about to be drawn whose rows were dropped: read its text back."""
    if not v.unloaded:
        return
    try:
        v.load(app.engine.streams.text(v.stream_id))
    except (KeyError, OSError, UnicodeDecodeError) as e:
        v.load("")
        v.feed(f"(cannot read this stream back: {describe_error(e)})")


def unload_idle_streams(app: AppState, now: float) -> None:
    """Keep memory to the streams in use: the rows of a stream that ended a while ago and is
    not on screen are dropped (the engine keeps its text, on disk)."""
    shown = set(app.stream_selected.values())
    for sid, v in app.streams.items():
        if (not v.unloaded and v.state != "streaming" and sid not in shown
                and v.chars > STREAM_KEEP_CHARS and now - v.last_chunk_at > 10.0):
            v.unload()


def stream_header(app: AppState, v: StreamView) -> None:
    ensure_loaded(app, v)
    imgui.text_colored(TIER_COLOURS.get(tier_of_stream(v.stream_id), WHITE), v.stream_id)
    imgui.same_line()
    status_text(v.state)
    imgui.align_text_to_frame_padding()
    imgui.text_disabled(f"{v.line_count:,} lines, {v.chars:,} chars")
    imgui.same_line()
    _c, v.follow = imgui.checkbox("Auto-scroll", v.follow)
    imgui.set_item_tooltip("Follow new text while the view is at the bottom; scroll up to read "
                           "in peace")
    if not v.at_bottom:
        imgui.same_line()
        if imgui.small_button(f"{fa.ICON_FA_ARROW_DOWN} End###End"):
            v.jump_to_end = True
    imgui.same_line()
    imgui.begin_disabled(v.chars > MARKDOWN_LIMIT)
    _c, v.markdown = imgui.checkbox("Markdown", v.markdown)
    imgui.end_disabled()
    imgui.same_line()
    if imgui.small_button("Copy"):
        imgui.set_clipboard_text(v.text())


def streams_of_tier(app: AppState, tier: str) -> list[str]:
    return [sid for sid in app.streams if tier_of_stream(sid) == tier]


def panel_streams(app: AppState) -> None:
    # follow activity: switch to the tier that is talking, at most every 1.5 s
    if app.follow_activity and app.last_active_stream:
        sid = app.last_active_stream
        tier = tier_of_stream(sid)
        now = time.monotonic()
        if app.stream_selected.get(tier) != sid or app.stream_tab != tier:
            if now - app.last_tab_switch > 1.5:
                app.stream_selected[tier] = sid
                if app.stream_tab != tier:
                    app.tab_request = tier
                app.last_tab_switch = now
    _c, app.follow_activity = imgui.checkbox("Follow activity", app.follow_activity)
    imgui.set_item_tooltip("Show the stream that is talking now")
    imgui.same_line()
    active = [v for v in app.streams.values() if v.state == "streaming"]
    imgui.text_disabled(f"{len(app.streams)} streams, {len(active)} streaming")
    request, app.tab_request = app.tab_request, None
    if not imgui.begin_tab_bar("stream-tiers"):
        return
    for tier in TIERS:
        sids = streams_of_tier(app, tier)
        label = {"Tier 1": "Tier 1 (Orchestrator)", "Tier 2": "Tier 2 (Tech Lead)",
                 "Tier 3": "Tier 3 (Workers)", "Tier 4": "Tier 4 (QA)"}[tier]
        busy = any(app.streams[s].state == "streaming" for s in sids)
        flags = imgui.TabItemFlags_.set_selected if request == tier else 0
        opened = imgui.begin_tab_item_simple(f"{label} {'●' if busy else ''}###{tier}", flags)
        if not opened:
            continue
        app.stream_tab = tier
        if not sids:
            imgui.text_disabled(f"Nothing from {tier} yet.")
        elif tier == "Tier 1":
            v = app.streams[sids[0]]
            stream_header(app, v)
            stream_text_view(app, v)
        else:
            stream_list_and_view(app, tier, sids)
        imgui.end_tab_item()
    imgui.end_tab_bar()


def stream_list_and_view(app: AppState, tier: str, sids: list[str]) -> None:
    sel = app.stream_selected.get(tier)
    if sel not in sids:
        sel = app.stream_selected[tier] = sids[0]
    imgui.begin_child("list", ImVec2(em(15).x, -1), imgui.ChildFlags_.borders | imgui.ChildFlags_.resize_x)
    for sid in sids:
        v = app.streams[sid]
        colour = STATUS_COLOURS.get(v.state, GREY)
        imgui.push_style_color(imgui.Col_.text, colour)
        label = sid.split(": ", 1)[1] if tier == "Tier 2" and ": " in sid else sid
        clicked, _ = imgui.selectable(f"{STATUS_ICONS.get(v.state, '')} {label}###{sid}", sid == sel)
        imgui.pop_style_color()
        if clicked:
            app.stream_selected[tier] = sid
            app.follow_activity = False
        imgui.set_item_tooltip(f"{sid}: {v.state}, {v.chars:,} chars")
    imgui.end_child()
    imgui.same_line()
    imgui.begin_group()
    v = app.streams[app.stream_selected[tier]]
    imgui.push_id(v.stream_id)
    stream_header(app, v)
    stream_text_view(app, v)
    imgui.pop_id()
    imgui.end_group()


# -- Approvals -------------------------------------------------------------------------------

def approval_fields(req: ApprovalRequest) -> dict[str, str]:
    """The editable fields of a request's typed payload, as the text the dialog edits."""
    p = req.payload
    if isinstance(p, SpawnPayload):
        return {"prompt": p.prompt, "context": p.context, "model": p.model}
    if isinstance(p, ToolPayload):
        return {"args": json.dumps(p.args, indent=2, ensure_ascii=False)}
    if isinstance(p, ShellPayload):
        return {"command": p.command, "cwd": p.cwd}
    if isinstance(p, BudgetPayload):
        return {"budget_usd": str(p.budget_usd), "budget_tokens": str(p.budget_tokens)}
    return {}


def approval_payload(edit: ApprovalEdit) -> tuple[ApprovalPayloadT | None, str]:
    """The edited typed payload to send (None = as requested), or an error to show."""
    req, f = edit.request, edit.fields
    if f == edit.original:
        return None, ""
    changes: dict[str, Any] = {}
    if req.kind == "spawn":
        changes = {"prompt": f["prompt"], "context": f["context"], "model": f["model"]}
    elif req.kind == "tool":
        try:
            args = json.loads(f["args"])
        except json.JSONDecodeError as e:
            return None, f"The arguments are not valid JSON: {e.msg} (line {e.lineno}, column {e.colno}). Nothing was sent."
        if not isinstance(args, dict):
            return None, "The arguments must be a JSON object ({...}). Nothing was sent."
        changes = {"args": args}
    elif req.kind == "shell":
        if not f["command"].strip():
            return None, "The command is empty. Reject instead, or write a command."
        changes = {"command": f["command"], "cwd": f["cwd"].strip() or "."}
    elif req.kind == "budget":
        try:
            changes = {"budget_usd": float(f["budget_usd"]),
                       "budget_tokens": int(float(f["budget_tokens"]))}
        except ValueError:
            return None, "The new budget must be numbers. Nothing was sent."
    else:
        return None, ""
    try:
        return edit_payload(req.payload, changes), ""
    except ApprovalEditError as e:
        return None, f"{str(e)[:1].upper()}{str(e)[1:]}. Nothing was sent."


def current_approval(app: AppState) -> ApprovalEdit | None:
    pending = [r for r in app.approvals if r.id not in app.answered]
    if not pending:
        app.approval_edit = None
        return None
    front = pending[0]
    if app.approval_edit is None or app.approval_edit.request.id != front.id:
        fields = approval_fields(front)
        preview = front.payload.preview if isinstance(front.payload, ToolPayload) else ""
        app.approval_edit = ApprovalEdit(front, dict(fields), dict(fields), preview=preview)
    return app.approval_edit


def resolve_front(app: AppState, approved: bool, *, all_pending: bool = False) -> bool:
    edit = app.approval_edit
    if edit is None:
        return False
    req = edit.request
    payload = None
    if approved:
        payload, err = approval_payload(edit)
        if err:
            edit.error = err
            return False
    decision = (Approved(payload=payload) if approved
                else Denied(reason=edit.reason.strip() or "rejected by the user"))
    try:
        app.engine.resolve(req.id, decision)
    except Exception as e:  # noqa: BLE001 - answered elsewhere, or cancelled meanwhile
        app.notify("warning", f"Approval {req.id}: {describe_error(e)}", "Approvals")
    app.answered.add(req.id)
    verb = "approved" + (" with edits" if payload else "") if approved else "rejected"
    app.notify("info", f"{req.title}: {verb}")
    if all_pending:
        try:
            n = app.engine.approve_all()
        except Exception as e:  # noqa: BLE001
            app.notify("error", f"Approve all: {describe_error(e)}", "Approvals")
            n = 0
        for r in app.approvals:
            app.answered.add(r.id)
        app.notify("info", f"approved {n + 1} pending request(s), once")
    app.approvals = [r for r in app.approvals if r.id not in app.answered]
    app.approval_edit = None
    app.approvals_dirty = True
    return True


def approval_editor(app: AppState, edit: ApprovalEdit, esc: bool) -> bool:
    """The kind-specific editor. Returns True when Ctrl+Enter was pressed in a text field."""
    req, f = edit.request, edit.fields
    ctrl_enter = False
    ml = imgui.InputTextFlags_.enter_returns_true | WRAP

    def multiline(label: str, key: str, lines: float, mono: bool = True) -> None:
        nonlocal ctrl_enter
        pushed = mono_push(app) if mono else False
        entered, text = imgui.input_text_multiline(label, f[key], ImVec2(-1, em(0, lines).y), ml)
        mono_pop(pushed)
        if esc and text != f[key]:
            text = f[key]          # Escape reverts an active field in ImGui: keep the user's edit
        f[key] = text
        if entered and imgui.get_io().key_ctrl:
            ctrl_enter = True

    if req.kind == "spawn":
        imgui.text(f"Ticket {req.ticket_id}")
        imgui.same_line()
        imgui.text_disabled(f"track {req.track_id}")
        desc = req.payload.description if isinstance(req.payload, SpawnPayload) else ""
        if desc:
            imgui.text_wrapped(desc)
        imgui.set_next_item_width(em(18).x)
        _c, f["model"] = imgui.input_text("Model", f["model"])
        imgui.text("Prompt")
        multiline("##Prompt", "prompt", 11)
        imgui.text("Context")
        multiline("##Context", "context", 4)
    elif req.kind == "tool":
        tool = req.payload.tool if isinstance(req.payload, ToolPayload) else ""
        imgui.text(f"Tool: {tool}")
        imgui.same_line()
        imgui.text_disabled(f"ticket {req.ticket_id}")
        imgui.text("Arguments (JSON)")
        multiline("##Arguments", "args", 8)
        if edit.preview or tool in ("write_file", "edit_file"):
            imgui.text("What it changes" + (" (as requested)" if f != edit.original else ""))
            imgui.same_line()
            if imgui.small_button("Preview my edit"):
                refresh_preview(app, edit)
            diff_view(app, edit.preview or "(no preview)", em(0, 10).y)
    elif req.kind == "shell":
        imgui.text(f"Shell command for {req.ticket_id}")
        imgui.text("Script")
        multiline("##Script", "command", 5)
        imgui.set_next_item_width(em(24).x)
        _c, f["cwd"] = imgui.input_text("Working directory", f["cwd"])
    elif isinstance(req.payload, StepPayload):
        imgui.text(f"{req.ticket_id}: round {req.payload.round} done. Its last words:")
        imgui.begin_child("last", ImVec2(-1, em(0, 8).y), imgui.ChildFlags_.borders)
        imgui.text_wrapped(req.payload.last or "(nothing)")
        imgui.end_child()
        imgui.text_disabled("Approve continues to the next step; Reject stops the worker.")
    elif isinstance(req.payload, BudgetPayload):
        p = req.payload
        imgui.text_colored(AMBER, f"Spent {fmt_cost(p.spent_usd)} of {fmt_cost(p.budget_usd)}; "
                                  f"{fmt_tokens(p.spent_tokens)} of "
                                  f"{fmt_tokens(p.budget_tokens)} tokens.")
        imgui.text_disabled("Raise the budget above what is spent and approve to go on (0 = no limit).")
        imgui.set_next_item_width(em(12).x)
        _c, f["budget_usd"] = imgui.input_text("New budget (USD)", f["budget_usd"])
        imgui.set_next_item_width(em(12).x)
        _c, f["budget_tokens"] = imgui.input_text("New budget (tokens)", f["budget_tokens"])
    return ctrl_enter


def refresh_preview(app: AppState, edit: ApprovalEdit) -> None:
    payload, err = approval_payload(edit)
    if err:
        edit.error = err
        return
    shown = payload or edit.request.payload
    if not isinstance(shown, ToolPayload):
        return
    args, tool = shown.args, shown.tool

    def work() -> str:
        from tools import diff_preview
        return diff_preview(app.engine.ws, tool, args)

    def done(text: str) -> None:
        edit.preview = text or "(no change)"
    app.background("Preview", work, panel="Approvals", on_done=done)


def approval_modal(app: AppState) -> None:
    edit = current_approval(app)
    vp = imgui.get_main_viewport()
    w = min(em(64).x, vp.work_size.x * 0.92)
    imgui.set_next_window_size_constraints(ImVec2(w, 0), ImVec2(w, vp.work_size.y * 0.92))
    imgui.set_next_window_pos(vp.get_center(), imgui.Cond_.always, ImVec2(0.5, 0.5))
    opened, _ = imgui.begin_popup_modal("Approval", None, imgui.WindowFlags_.always_auto_resize)
    if not opened:
        return
    if edit is None or app.approvals_deferred:
        app.modal = None
        imgui.close_current_popup()
        imgui.end_popup()
        return
    req = edit.request
    pending = [r for r in app.approvals if r.id not in app.answered]
    esc = imgui.is_key_pressed(imgui.Key.escape)
    kind_colour = {"spawn": BLUE, "tool": AMBER, "shell": RED, "step": GREY, "budget": PURPLE}
    imgui.text_colored(kind_colour.get(req.kind, WHITE), f"{fa.ICON_FA_HAND_PAPER} {req.kind.upper()}")
    imgui.same_line()
    imgui.text(req.title)
    imgui.same_line()
    imgui.text_disabled(f"(1 of {len(pending)} pending)")
    imgui.separator()
    ctrl_enter = approval_editor(app, edit, esc)
    imgui.separator()
    if edit.error:
        imgui.push_style_color(imgui.Col_.text, RED)
        imgui.text_wrapped(f"{fa.ICON_FA_TIMES_CIRCLE} {edit.error}")
        imgui.pop_style_color()
    edited = edit.fields != edit.original
    approve = imgui.button(f"{fa.ICON_FA_CHECK} Approve" + (" with my edits" if edited else "") + "###Approve",
                           em(12, 0))
    imgui.set_item_tooltip("Ctrl+Enter")
    no_text_active = not imgui.is_any_item_active()
    if no_text_active and imgui.shortcut(imgui.Key.mod_ctrl | imgui.Key.enter, imgui.InputFlags_.route_global):
        approve = True
    approve = approve or ctrl_enter
    all_clicked = False
    if len(pending) > 1:
        imgui.same_line()
        all_clicked = imgui.button(f"Approve all {len(pending)} pending###Approve all")
        imgui.set_item_tooltip("Approves every request waiting now, once (not a standing grant). "
                               "Ctrl+Shift+Enter")
    if imgui.shortcut(imgui.Key.mod_ctrl | imgui.Key.mod_shift | imgui.Key.enter,
                      imgui.InputFlags_.route_global) and len(pending) > 1:
        all_clicked = True
    imgui.same_line()
    if imgui.button("Decide later"):
        app.approvals_deferred = True
    imgui.set_item_tooltip("Hide this dialog; the request keeps waiting (Approvals window, "
                           "or Ctrl+Shift+R, reopens it)")
    imgui.text("Reason")
    imgui.same_line()
    if esc or edit.focus_reason:
        imgui.set_keyboard_focus_here()
        edit.focus_reason = False
    imgui.set_next_item_width(-em(9).x)
    entered, edit.reason = imgui.input_text_with_hint("##Reason", "why (sent to the agent)", edit.reason,
                                                      imgui.InputTextFlags_.enter_returns_true)
    imgui.same_line()
    reject = imgui.button(f"{fa.ICON_FA_TIMES} Reject###Reject", em(8, 0)) or entered
    imgui.set_item_tooltip("Escape jumps to the reason; Enter there rejects")
    done = False
    if reject:
        done = resolve_front(app, False)
    elif all_clicked:
        done = resolve_front(app, True, all_pending=True)
    elif approve:
        done = resolve_front(app, True)
    if done or app.approvals_deferred:
        app.modal = None
        imgui.close_current_popup()
    imgui.end_popup()


def panel_approvals(app: AppState) -> None:
    panel_error(app, "Approvals")
    pending = [r for r in app.approvals if r.id not in app.answered]
    if not pending:
        imgui.text_colored(GREEN, f"{fa.ICON_FA_CHECK} Nothing waiting for you.")
        imgui.text_disabled("Spawns, file writes and shell commands ask here first.")
        return
    imgui.text_colored(AMBER, f"{fa.ICON_FA_BELL} {len(pending)} waiting")
    imgui.same_line()
    if imgui.button("Review next"):
        app.approvals_deferred = False
        app.request_modal("approval")
    if len(pending) > 1:
        imgui.same_line()
    if len(pending) > 1 and imgui.button(f"Approve all {len(pending)} pending###panel-approve-all"):
        try:
            n = app.engine.approve_all()
            app.notify("info", f"approved {n} pending request(s), once")
        except Exception as e:  # noqa: BLE001
            app.notify("error", f"Approve all: {describe_error(e)}", "Approvals")
        for r in pending:
            app.answered.add(r.id)
        app.approvals = []
        app.approvals_dirty = True
    flags = imgui.TableFlags_.row_bg | imgui.TableFlags_.scroll_y | imgui.TableFlags_.borders_inner_v
    if imgui.begin_table("approvals", 3, flags, ImVec2(-1, -1)):
        imgui.table_setup_column("Kind", imgui.TableColumnFlags_.width_fixed, em(4).x)
        imgui.table_setup_column("Request", imgui.TableColumnFlags_.width_stretch)
        imgui.table_setup_column("Waiting", imgui.TableColumnFlags_.width_fixed, em(4).x)
        imgui.table_headers_row()
        now = time.time()
        for r in pending:
            imgui.table_next_row()
            imgui.table_next_column()
            imgui.text(r.kind)
            imgui.table_next_column()
            imgui.text_unformatted(short(r.title, 90))
            if r.kind == "shell":
                imgui.set_item_tooltip(str(r.payload.command if isinstance(r.payload, ShellPayload) else ""))
            imgui.table_next_column()
            imgui.text(f"{int(now - r.created_at)} s")
        imgui.end_table()


# -- Usage -----------------------------------------------------------------------------------

USAGE_COLS = ("In", "Out", "Cached", "Thoughts", "Total", "Req.", "Cost")
USAGE_TIPS = "In: input (prompt) tokens · Out: output tokens · Cached: cached input tokens · " \
    "Thoughts: thinking tokens · Total: all tokens · Req.: model requests · Cost: USD"


def usage_row(name: str, u: Usage) -> None:
    imgui.table_next_row()
    imgui.table_next_column()
    imgui.text_unformatted(name)
    for val in (u.input_tokens, u.output_tokens, u.cached_tokens, u.thoughts_tokens, u.total_tokens):
        imgui.table_next_column()
        imgui.text(fmt_tokens(val))
    imgui.table_next_column()
    imgui.text(str(u.requests))
    imgui.table_next_column()
    imgui.text(fmt_cost(u.cost_usd))


def usage_table(table_id: str, first: str, rows: list[tuple[str, Usage]], total: Usage | None = None,
                first_em: float = 3.5) -> None:
    flags = imgui.TableFlags_.row_bg | imgui.TableFlags_.borders_inner_v | imgui.TableFlags_.sizing_fixed_fit
    if imgui.begin_table(table_id, 1 + len(USAGE_COLS), flags):
        imgui.table_setup_column(first, imgui.TableColumnFlags_.width_fixed, em(first_em).x)
        for c in USAGE_COLS:
            imgui.table_setup_column(c)
        imgui.table_headers_row()
        if imgui.is_item_hovered():
            imgui.set_tooltip(USAGE_TIPS)
        for name, u in rows:
            usage_row(name, u)
        if total is not None:
            usage_row("Total", total)
        imgui.end_table()


def usage_plot(app: AppState) -> None:
    if not any(xs for xs, _ys in app.usage_series.values()):
        imgui.text_disabled("The plot of cumulative tokens per tier starts with the first model call.")
        return
    try:
        import numpy as np
    except ImportError:
        imgui.text_disabled("(the plot needs numpy: pip install numpy)")
        return
    now = max(time.time() - app.started, 0.0)
    top = max((ys[-1] for _xs, ys in app.usage_series.values() if ys), default=1.0)
    if implot.begin_plot("Cumulative tokens per tier", ImVec2(-1, em(0, 12).y)):
        implot.setup_axes("seconds since start", "tokens")
        implot.setup_axes_limits(0.0, max(now, 1.0) * 1.02, 0.0, top * 1.1, implot.Cond_.always)
        for tier in TIERS:
            series = app.usage_series.get(tier)
            if not series or not series[0]:
                continue
            xs, ys = series
            arr = app._plot_cache.get(tier)
            if arr is None or len(arr[0]) != len(xs) + 2:
                # a step line from 0, each call's tokens landing at once, held until now
                arr = app._plot_cache[tier] = (np.array([0.0, *xs, now], dtype=np.float64),
                                               np.array([0.0, *ys, ys[-1]], dtype=np.float64))
            arr[0][-1] = now
            spec = implot.Spec(line_color=TIER_COLOURS[tier], line_weight=2.0)
            implot.plot_stairs(tier, arr[0], arr[1], spec)
        implot.end_plot()


def panel_usage(app: AppState) -> None:
    s = app.engine.settings
    tiers = [(t, app.usage_tier.get(t, Usage())) for t in TIERS]
    usage_table("usage-tier", "Tier", tiers, app.usage_total)
    # budget
    total = app.usage_total
    if s.budget_usd:
        frac = total.cost_usd / s.budget_usd
        coloured_progress(frac, RED if frac >= 1 else AMBER if frac > 0.8 else GREEN,
                          f"budget {fmt_cost(total.cost_usd)} of {fmt_cost(s.budget_usd)}")
    else:
        imgui.text_disabled(f"Spent {fmt_cost(total.cost_usd)}; no USD budget set (Epic or Settings).")
    if s.budget_tokens:
        frac = total.total_tokens / s.budget_tokens
        coloured_progress(frac, RED if frac >= 1 else AMBER if frac > 0.8 else GREEN,
                          f"tokens {fmt_tokens(total.total_tokens)} of {fmt_tokens(s.budget_tokens)}")
    usage_plot(app)
    context_budget(app)
    if imgui.collapsing_header("Per track"):
        names = {t.id: t.title for t in app.tracks}
        usage_table("usage-track", "Track", [(short(names.get(k, k), 18), u)
                                             for k, u in sorted(app.usage_track.items())], first_em=9)
    if imgui.collapsing_header("Per ticket"):
        usage_table("usage-ticket", "Ticket", sorted(app.usage_ticket.items()))


def context_budget(app: AppState) -> None:
    imgui.separator_text("Context window of an agent")
    sids = list(app.streams)
    if not sids:
        imgui.text_disabled("No agent has run yet.")
        return
    looking_at = app.stream_selected.get(app.stream_tab)
    if app.bleed_stream not in sids or (not app.bleed_pinned and looking_at and looking_at != app.bleed_stream):
        app.bleed_stream = looking_at or sids[0]
        app.bleed_read_at = 0.0
    imgui.set_next_item_width(em(18).x)
    if imgui.begin_combo("Agent", app.bleed_stream):
        for sid in sids:
            if imgui.selectable(sid, sid == app.bleed_stream)[0]:
                app.bleed_stream = sid
                app.bleed_pinned = True
                app.bleed_read_at = 0.0
        imgui.end_combo()
    imgui.set_item_tooltip("Follows the stream selected in Streams until you pick one here")
    if app.bleed_pinned:
        imgui.same_line()
        if imgui.small_button("Follow Streams"):
            app.bleed_pinned = False
    now = time.monotonic()
    if now - app.bleed_read_at > 0.5:
        try:
            app.bleed = app.engine.bleed_stats(app.bleed_stream)
        except Exception as e:  # noqa: BLE001
            app.bleed = {"error": describe_error(e)}
        app.bleed_read_at = now
    b = app.bleed
    if not b:
        imgui.text_disabled("No session for this agent (not started, or from an earlier run).")
        return
    if "error" in b:
        imgui.text_colored(RED, b["error"])
        return
    colour = LEVEL_COLOURS.get(str(b.get("level")), GREY)
    used, limit = int(b.get("used_tokens", 0)), int(b.get("context_window", 1))
    coloured_progress(float(b.get("utilisation", 0.0)), colour,
                      f"{fmt_tokens(used)} of {fmt_tokens(limit)} ({100 * float(b.get('utilisation', 0)):.1f}%)")
    roles = b.get("by_role", {})
    imgui.text_disabled("  ".join(f"{k} {fmt_tokens(int(v))}" for k, v in roles.items())
                        + f"  · headroom {fmt_tokens(int(b.get('headroom_tokens', 0)))}")


# -- Comms -----------------------------------------------------------------------------------

def comms_matches(app: AppState, e: CommsRow) -> bool:
    if app.comms_filter_tier != "All" and e.tier != app.comms_filter_tier:
        return False
    if app.comms_filter_stream != "All" and e.stream_id != app.comms_filter_stream:
        return False
    if app.comms_filter_kind != "All" and e.kind != app.comms_filter_kind:
        return False
    return True


def refilter_comms(app: AppState) -> None:
    app.comms_filtered = [i for i, e in enumerate(app.comms) if comms_matches(app, e)]


def filter_combo(label: str, current: str, options: list[str], width_em: float) -> tuple[bool, str]:
    changed = False
    imgui.set_next_item_width(em(width_em).x)
    if imgui.begin_combo(label, current):
        for o in ["All", *options]:
            if imgui.selectable(o, o == current)[0] and o != current:
                current, changed = o, True
        imgui.end_combo()
    return changed, current


def export_comms(app: AppState) -> None:
    chosen = list(app.comms_filtered)
    comms = app.engine.comms
    out_dir = app.workspace / ".clutch" / "exports"
    path = out_dir / f"comms-{time.strftime('%Y%m%d-%H%M%S')}.jsonl"

    def work() -> str:
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            step, lo, part = 5000, -5000, []  # read back from the log a slice at a time
            for i in chosen:                  # ascending
                if not lo <= i < lo + step:
                    lo = i
                    part = comms.entries(lo, lo + step)
                f.write(json.dumps(part[i - lo], ensure_ascii=False, default=str) + "\n")
        os.replace(tmp, path)
        return str(path)

    def done(p: str) -> None:
        app.last_export = p
        app.notify("info", f"exported {len(chosen)} comms entries to {p}")
    app.background("Export comms", work, panel="Comms", on_done=done)


def panel_comms(app: AppState) -> None:
    panel_error(app, "Comms")
    c1, app.comms_filter_tier = filter_combo("Tier", app.comms_filter_tier, list(TIERS), 6)
    imgui.same_line()
    c2, app.comms_filter_stream = filter_combo("Stream", app.comms_filter_stream, app.comms_streams, 15)
    imgui.same_line()
    c3, app.comms_filter_kind = filter_combo("Kind", app.comms_filter_kind, app.comms_kinds, 7)
    if c1 or c2 or c3:
        refilter_comms(app)
    if imgui.button(f"{fa.ICON_FA_DOWNLOAD} Export JSONL###Export JSONL"):
        export_comms(app)
    imgui.set_item_tooltip("Writes the entries shown (after the filters) to "
                           "<workspace>/.clutch/exports/comms-<time>.jsonl")
    imgui.same_line()
    _c, app.comms_follow = imgui.checkbox("Follow", app.comms_follow)
    imgui.same_line()
    imgui.text_disabled(f"{len(app.comms_filtered):,} of {len(app.comms):,} entries")
    imgui.set_item_tooltip(str(app.engine.comms.path or "(in memory)"))
    if app.last_export:
        imgui.text_colored(GREEN, f"Exported to {app.last_export}")
    avail = imgui.get_content_region_avail()
    detail_h = em(0, 9).y if app.comms_selected is not None else 0.0
    flags = (imgui.TableFlags_.row_bg | imgui.TableFlags_.borders_inner_v | imgui.TableFlags_.resizable
             | imgui.TableFlags_.scroll_y | imgui.TableFlags_.scroll_x | imgui.TableFlags_.sizing_fixed_fit)
    if imgui.begin_table("comms", 8, flags, ImVec2(-1, max(avail.y - detail_h, em(0, 5).y))):
        imgui.table_setup_scroll_freeze(0, 1)
        for name, w in (("#", 3.2), ("Time", 4.6), ("Tier", 3.4), ("Stream", 11.5), ("Dir", 2.2),
                        ("Kind", 5.5), ("Model", 8.0), ("Tokens", 3.8)):
            imgui.table_setup_column(name, imgui.TableColumnFlags_.width_fixed, em(w).x)
        imgui.table_headers_row()
        rows = app.comms_filtered
        clipper = imgui.ListClipper()
        clipper.begin(len(rows))
        while clipper.step():
            for r in range(clipper.display_start, clipper.display_end):
                i = rows[r]
                e = app.comms[i]
                imgui.table_next_row()
                imgui.table_next_column()
                clicked, _ = imgui.selectable(f"{e.seq}##c{i}", app.comms_selected == i,
                                              imgui.SelectableFlags_.span_all_columns)
                if clicked:
                    app.comms_selected = i
                imgui.table_next_column()
                imgui.text(time.strftime("%H:%M:%S", time.localtime(e.ts)))
                imgui.table_next_column()
                imgui.text_colored(TIER_COLOURS.get(e.tier, GREY), e.tier)
                imgui.table_next_column()
                imgui.text_unformatted(e.stream_id)
                imgui.table_next_column()
                imgui.text(e.direction)
                imgui.table_next_column()
                imgui.text(e.kind)
                imgui.table_next_column()
                imgui.text(e.model)
                imgui.table_next_column()
                imgui.text(fmt_tokens(e.tokens) if e.tokens is not None else "")
        if app.comms_follow and imgui.get_scroll_y() >= imgui.get_scroll_max_y() - 2:
            imgui.set_scroll_here_y(1.0)
        imgui.end_table()
    if app.comms_selected is not None and app.comms_selected < len(app.comms):
        i = app.comms_selected
        if app.comms_detail[0] != i:
            try:
                [entry] = app.engine.comms.entries(i, i + 1)
                text = json.dumps(entry, indent=2, ensure_ascii=False, default=str)
            except (OSError, ValueError) as e:
                text = f"cannot read entry {i + 1} back from the comms log: {e}"
            app.comms_detail = (i, text)
        pushed = mono_push(app)
        imgui.input_text_multiline("##detail", app.comms_detail[1], ImVec2(-1, -1),
                                   imgui.InputTextFlags_.read_only)
        mono_pop(pushed)


# -- Settings modal --------------------------------------------------------------------------

def open_settings(app: AppState) -> None:
    app.settings_draft = app.engine.settings.model_dump()
    app.settings_draft["approvals"]["shell_allowlist"] = ", ".join(
        app.settings_draft["approvals"].get("shell_allowlist", []))
    app.settings_errors = []
    app.request_modal("settings")


def settings_modal(app: AppState) -> None:
    if not begin_sized_modal("Settings", 50, 42, 0.9):
        return
    d = app.settings_draft
    if d is None:
        app.modal = None
        imgui.close_current_popup()
        imgui.end_popup()
        return
    footer = imgui.get_frame_height_with_spacing() * (1.4 + len(app.settings_errors))
    imgui.begin_child("body", ImVec2(0, -footer))
    imgui.push_item_width(em(16).x)
    imgui.separator_text("Provider")
    providers = ["offline", "gemini"]
    idx = providers.index(d["provider"]) if d["provider"] in providers else 0
    _c, idx = imgui.combo("Provider", idx, providers)
    d["provider"] = providers[idx]
    ok, what = api_key_status()
    imgui.text("API key:")
    imgui.same_line()
    imgui.text_colored(GREEN if ok else (RED if d["provider"] == "gemini" else GREY), what)
    imgui.text_disabled("Keys come from the environment only; Clutch never stores or shows them.")
    _c, d["gemini"]["base_url"] = imgui.input_text("Base URL", d["gemini"]["base_url"])
    help_marker("Empty: the SDK default (or GOOGLE_GEMINI_BASE_URL)")
    imgui.separator_text("Models per tier")
    for tier in TIERS:
        _c, d["models"][tier] = imgui.input_text(tier, d["models"].get(tier, ""))
    imgui.separator_text("Prices (USD per million tokens)")
    if imgui.begin_table("prices", 4, imgui.TableFlags_.borders_inner_v | imgui.TableFlags_.row_bg):
        for c in ("Model", "Input", "Output", "Cached"):
            imgui.table_setup_column(c)
        imgui.table_headers_row()
        for model, price in d["prices"].items():
            imgui.push_id(model)
            imgui.table_next_row()
            imgui.table_next_column()
            imgui.align_text_to_frame_padding()
            imgui.text(model)
            for k in ("input", "output", "cached"):
                imgui.table_next_column()
                imgui.set_next_item_width(-1)
                _c, price[k] = imgui.input_double(f"##{k}", float(price.get(k, 0.0)), 0.0, 0.0, "%.3f")
            imgui.pop_id()
        imgui.end_table()
    imgui.separator_text("Budgets")
    _c, d["budget_usd"] = imgui.input_double("Budget (USD)", float(d["budget_usd"]), 0.5, 5.0, "%.2f")
    _c, d["budget_tokens"] = imgui.input_int("Budget (tokens)", int(d["budget_tokens"]), 10000, 100000)
    imgui.text_disabled("0 = no limit. Reaching a budget pauses and asks.")
    imgui.separator_text("Approvals")
    a = d["approvals"]
    for key, label in (("spawn", "Worker spawns"), ("read_tools", "Read-only tools"),
                       ("write_tools", "File writes"), ("shell", "Shell commands")):
        opts = ["ask", "auto"]
        i = opts.index(a[key]) if a[key] in opts else 0
        _c, i = imgui.combo(label, i, opts)
        a[key] = opts[i]
    _c, a["shell_allowlist"] = imgui.input_text("Shell allowlist", a["shell_allowlist"])
    help_marker("First words of commands that run without asking, comma separated (e.g. ls, cat)")
    imgui.separator_text("Run")
    _c, d["max_workers"] = imgui.input_int("Max workers", int(d["max_workers"]))
    _c, d["max_tool_rounds"] = imgui.input_int("Max tool rounds", int(d["max_tool_rounds"]))
    _c, d["step_mode"] = imgui.checkbox("Step mode", bool(d["step_mode"]))
    _c, d["git_commits"] = imgui.checkbox("Git commit per ticket", bool(d["git_commits"]))
    _c, d["offline_pace_s"] = imgui.input_double("Offline pace (s per chunk)", float(d["offline_pace_s"]),
                                                 0.01, 0.1, "%.3f")
    imgui.pop_item_width()
    imgui.end_child()
    for err in app.settings_errors:
        imgui.text_colored(RED, f"{fa.ICON_FA_TIMES_CIRCLE} {err}")
    saving = app.busy("Save settings")
    imgui.begin_disabled(saving)
    if imgui.button(f"{fa.ICON_FA_SAVE} Save###Save", em(8, 0)):
        data = json.loads(json.dumps(d))
        data["approvals"]["shell_allowlist"] = split_list(d["approvals"]["shell_allowlist"])
        try:
            s = Settings.model_validate(data)
        except ValidationError as e:
            app.settings_errors = validation_messages(e)
        else:
            app.settings_errors = []

            def saved(_r: Any) -> None:
                app.notify("info", "settings saved to .clutch/config.toml")
                app.workers["cap"] = s.max_workers
            apply_settings(app, s, on_done=saved)
            app.settings_draft = None
    imgui.end_disabled()
    imgui.same_line()
    if imgui.button("Cancel", em(8, 0)):
        app.settings_draft = None
    if app.settings_draft is None:
        app.modal = None
        imgui.close_current_popup()
    imgui.end_popup()


def shortcuts_modal(app: AppState) -> None:
    imgui.set_next_window_pos(imgui.get_main_viewport().get_center(), imgui.Cond_.appearing, ImVec2(0.5, 0.5))
    opened, _ = imgui.begin_popup_modal("Keyboard shortcuts", None, imgui.WindowFlags_.always_auto_resize)
    if not opened:
        return
    if imgui.begin_table("keys", 2, imgui.TableFlags_.row_bg | imgui.TableFlags_.borders_inner_v):
        for k, what in SHORTCUTS:
            imgui.table_next_row()
            imgui.table_next_column()
            imgui.text_colored(BLUE, k)
            imgui.table_next_column()
            imgui.text(what)
        imgui.end_table()
    closing = not imgui.is_window_appearing() and (imgui.is_key_pressed(imgui.Key.f1, False)
                                                   or imgui.is_key_pressed(imgui.Key.escape, False))
    if imgui.button("Close", em(8, 0)) or closing:
        app.modal = None
        imgui.close_current_popup()
    imgui.end_popup()


# =============================================================================================
#    Global GUI: modals, shortcuts, notification strip, menus, status bar
# =============================================================================================

MODAL_TITLES = {"approval": "Approval", "proposal": "Proposed tracks", "settings": "Settings",
                "shortcuts": "Keyboard shortcuts"}


def choose_modal(app: AppState) -> None:
    """One modal at a time; an open one is never pre-empted. Approvals first."""
    if app.modal is not None:
        return
    pending = [r for r in app.approvals if r.id not in app.answered]
    if pending and not app.approvals_deferred:
        app.modal_request.add("approval")
    if app.proposal is None:
        app.modal_request.discard("proposal")
    for name in ("approval", "proposal", "settings", "shortcuts"):
        if name in app.modal_request:
            if name == "approval" and (not pending or app.approvals_deferred):
                app.modal_request.discard(name)
                continue
            app.modal_request.discard(name)
            app.modal = name
            imgui.open_popup(MODAL_TITLES[name])
            return


def global_shortcuts(app: AppState) -> None:
    route = imgui.InputFlags_.route_global
    if imgui.shortcut(imgui.Key.f1, route):
        if app.modal is None:
            app.request_modal("shortcuts")
    if imgui.shortcut(imgui.Key.mod_ctrl | imgui.Key.comma, route) and app.modal is None:
        open_settings(app)
    if imgui.shortcut(imgui.Key.mod_ctrl | imgui.Key.q, route):
        app.exit_requested = True
    if imgui.shortcut(imgui.Key.mod_ctrl | imgui.Key.mod_shift | imgui.Key.r, route):
        app.approvals_deferred = False
        app.request_modal("approval")
    if app.modal is None:
        keys = [imgui.Key._1, imgui.Key._2, imgui.Key._3, imgui.Key._4, imgui.Key._5, imgui.Key._6,
                imgui.Key._7]
        for key, name in zip(keys, WINDOWS):
            if imgui.shortcut(imgui.Key.mod_ctrl | key, route):
                app.focus_window(name)


def show_gui(app: AppState) -> None:
    """The main callback: modals and shortcuts (the panels are dockable windows)."""
    global_shortcuts(app)
    choose_modal(app)
    if app.modal == "approval":
        approval_modal(app)
    elif app.modal == "proposal":
        proposal_modal(app)
    elif app.modal == "settings":
        settings_modal(app)
    elif app.modal == "shortcuts":
        shortcuts_modal(app)
    if app.modal is not None and not imgui.is_popup_open(MODAL_TITLES[app.modal]):
        app.modal = None        # closed by ImGui itself


def notification_strip(app: AppState) -> None:
    """The top edge toolbar: the newest unread error or warning, where the user is looking."""
    active = app.active_notices()
    pending = len([r for r in app.approvals if r.id not in app.answered])
    if pending:
        imgui.push_style_color(imgui.Col_.button, ImVec4(0.55, 0.38, 0.05, 1))
        if imgui.button(f"{fa.ICON_FA_BELL} {pending} approval{'s' if pending != 1 else ''} waiting"
                        "###strip-approvals"):
            app.approvals_deferred = False
            app.request_modal("approval")
        imgui.pop_style_color()
        imgui.same_line()
    if not active:
        hint = "Ready." if not app.ops else " · ".join(sorted({op.label for op in app.ops})) + "…"
        imgui.text_disabled(f"{hint}   Ctrl+Enter plans the epic · F1 shortcuts")
        return
    n = active[-1]
    colour = NOTICE_COLOURS.get(n.level, WHITE)
    imgui.text_colored(colour, NOTICE_ICONS.get(n.level, ""))
    imgui.same_line()
    msg = short(n.message, 180)
    imgui.text_colored(colour, msg)
    if len(n.message) > 180:
        imgui.set_item_tooltip(n.message)
    imgui.same_line()
    imgui.text_disabled(time.strftime("%H:%M:%S", time.localtime(n.ts)))
    imgui.same_line()
    if imgui.small_button("Dismiss###strip-dismiss"):
        n.dismissed = True
    if len(active) > 1:
        imgui.same_line()
        if imgui.small_button(f"{len(active) - 1} more###strip-more"):
            imgui.open_popup("notices")
        imgui.same_line()
        if imgui.small_button("Dismiss all###strip-dismiss-all"):
            for x in active:
                x.dismissed = True
    if imgui.begin_popup("notices"):
        for x in reversed(active[-40:]):
            imgui.text_colored(NOTICE_COLOURS.get(x.level, WHITE),
                               f"{time.strftime('%H:%M:%S', time.localtime(x.ts))}  {short(x.message, 160)}")
        imgui.end_popup()


def show_menus(app: AppState) -> None:
    if imgui.begin_menu("File"):
        if imgui.menu_item_simple(f"{fa.ICON_FA_DOWNLOAD} Export comms log (JSONL)###Export comms log (JSONL)"):
            export_comms(app)
        if imgui.menu_item_simple(f"{fa.ICON_FA_COG} Settings…", "Ctrl+,"):
            open_settings(app)
        imgui.separator()
        if imgui.menu_item_simple("Quit", "Ctrl+Q"):
            app.exit_requested = True
        imgui.end_menu()
    hello_imgui.show_view_menu(hello_imgui.get_runner_params())
    if imgui.begin_menu("Help"):
        if imgui.menu_item_simple("Keyboard shortcuts", "F1"):
            app.request_modal("shortcuts")
        if imgui.begin_menu("Activity log"):
            for ts, level, msg in app.activity[-30:]:
                imgui.text_colored(NOTICE_COLOURS.get(level, WHITE),
                                   f"{time.strftime('%H:%M:%S', time.localtime(ts))} {short(msg, 120)}")
            imgui.end_menu()
        imgui.end_menu()
    pending = len([r for r in app.approvals if r.id not in app.answered])
    if pending:
        imgui.push_style_color(imgui.Col_.text, AMBER)
        if imgui.menu_item_simple(f"{fa.ICON_FA_BELL} {pending} waiting for approval"):
            app.approvals_deferred = False
            app.request_modal("approval")
        imgui.pop_style_color()


def show_status(app: AppState) -> None:
    w = app.workers
    imgui.text(f"FPS {imgui.get_io().framerate:.0f}")
    imgui.same_line()
    imgui.text_disabled("|")
    imgui.same_line()
    imgui.text(f"Workers {w.get('active', 0)}/{w.get('cap', 0)}")
    imgui.same_line()
    imgui.text_disabled("|")
    imgui.same_line()
    imgui.text(f"Queued {w.get('queued', 0)}")
    imgui.same_line()
    imgui.text_disabled("|")
    imgui.same_line()
    pending = len([r for r in app.approvals if r.id not in app.answered])
    if pending:
        imgui.text_colored(AMBER, f"{fa.ICON_FA_BELL} {pending} approval{'s' if pending != 1 else ''} waiting")
    else:
        imgui.text_disabled("No approvals waiting")
    imgui.same_line()
    imgui.text_disabled("|")
    imgui.same_line()
    imgui.text(f"Cost {fmt_cost(app.usage_total.cost_usd)}")
    imgui.same_line()
    imgui.text_disabled(f"| {app.engine.settings.provider} · {app.workspace}")


# =============================================================================================
#    Fonts, layout, runner params
# =============================================================================================

def load_fonts(app: AppState) -> None:
    """The default font (DroidSans + Font Awesome icons), with DejaVu Sans merged in behind it
    for arrows, check marks, box drawing and the rest; DejaVu Sans Mono for streams and JSON."""
    hello_imgui.imgui_default_settings.load_default_font_with_font_awesome_icons()
    size = 15.0
    if not os.path.exists(DEJAVU_SANS):
        app.font_notice = (f"{DEJAVU_SANS} is missing: arrows and symbols in model output may show "
                           f"as '?'. Install fonts-dejavu-core.")
        return
    hello_imgui.load_font(DEJAVU_SANS, size,
                          hello_imgui.FontLoadingParams(merge_to_last_font=True, inside_assets=False))
    if os.path.exists(DEJAVU_MONO):
        app.mono_font = hello_imgui.load_font(DEJAVU_MONO, size - 1,
                                              hello_imgui.FontLoadingParams(inside_assets=False))
        hello_imgui.load_font(DEJAVU_SANS, size - 1,
                              hello_imgui.FontLoadingParams(merge_to_last_font=True, inside_assets=False))
        hello_imgui.load_font("fonts/fontawesome-webfont.ttf", size - 1,
                              hello_imgui.FontLoadingParams(merge_to_last_font=True))


def docking_splits() -> list[hello_imgui.DockingSplit]:
    """
    ┌──────────┬───────────────────────┬────────────┐
    │ Epic     │ Tickets               │ Approvals  │
    │──────────│                       │────────────│
    │ Tracks   │───────────────────────│ Usage      │
    │          │ Streams | Comms       │            │
    └──────────┴───────────────────────┴────────────┘
    """
    def split(initial: str, new: str, direction: imgui.Dir, ratio: float) -> hello_imgui.DockingSplit:
        s = hello_imgui.DockingSplit()
        s.initial_dock, s.new_dock, s.direction, s.ratio = initial, new, direction, ratio
        return s
    return [
        split("MainDockSpace", "LeftSpace", imgui.Dir.left, 0.26),
        split("MainDockSpace", "RightSpace", imgui.Dir.right, 0.40),
        split("LeftSpace", "LeftBottomSpace", imgui.Dir.down, 0.58),
        split("MainDockSpace", "CenterBottomSpace", imgui.Dir.down, 0.55),
        split("RightSpace", "RightBottomSpace", imgui.Dir.down, 0.74),
    ]


def dockable_windows(app: AppState) -> list[hello_imgui.DockableWindow]:
    def window(label: str, space: str, fn: Callable[[AppState], None]) -> hello_imgui.DockableWindow:
        w = hello_imgui.DockableWindow()
        w.label = label
        w.dock_space_name = space
        w.gui_function = lambda: guarded(app, label, fn)
        w.can_be_closed = False
        return w
    return [
        window("Epic", "LeftSpace", panel_epic),
        window("Tracks", "LeftBottomSpace", panel_tracks),
        window("Tickets", "MainDockSpace", panel_tickets),
        window("Streams", "CenterBottomSpace", panel_streams),
        window("Comms", "CenterBottomSpace", panel_comms),
        window("Approvals", "RightSpace", panel_approvals),
        window("Usage", "RightBottomSpace", panel_usage),
    ]


def docking_params(app: AppState) -> hello_imgui.DockingParams:
    dp = hello_imgui.DockingParams()
    dp.docking_splits = docking_splits()
    dp.dockable_windows = dockable_windows(app)
    return dp


def setup_style() -> None:
    hello_imgui.imgui_default_settings.setup_default_imgui_style()
    tweaked = hello_imgui.ImGuiTweakedTheme()
    tweaked.theme = hello_imgui.ImGuiTheme_.darcula_darker
    tweaked.tweaks.rounding = 4.0
    hello_imgui.apply_tweaked_theme(tweaked)


def runner_params(app: AppState, *, ini_disable: bool = False, headless: bool = False,
                  msaa: int | None = None, size: tuple[int, int] = (1600, 1000)
                  ) -> tuple[hello_imgui.RunnerParams, immapp.AddOnsParams]:
    rp = hello_imgui.RunnerParams()
    rp.app_window_params.window_title = f"{APP_TITLE} — {app.workspace.name}"
    rp.app_window_params.window_geometry.size = size
    rp.app_window_params.restore_previous_geometry = not ini_disable
    rp.imgui_window_params.menu_app_title = APP_TITLE
    rp.imgui_window_params.default_imgui_window_type = \
        hello_imgui.DefaultImGuiWindowType.provide_full_screen_dock_space
    rp.imgui_window_params.show_menu_bar = True
    rp.imgui_window_params.show_menu_app = False
    rp.imgui_window_params.show_menu_view = False
    rp.imgui_window_params.show_status_bar = True
    rp.imgui_window_params.show_status_fps = False
    rp.imgui_window_params.remember_status_bar_settings = False
    rp.callbacks.show_menus = lambda: show_menus(app)
    rp.callbacks.show_status = lambda: show_status(app)
    rp.callbacks.show_gui = lambda: guarded(app, "dialog", show_gui)
    rp.callbacks.pre_new_frame = lambda: per_frame(app)
    rp.callbacks.load_additional_fonts = lambda: load_fonts(app)
    rp.callbacks.setup_imgui_style = setup_style
    strip = hello_imgui.EdgeToolbarOptions()
    strip.size_em = 2.0
    strip.window_padding_em = ImVec2(0.5, 0.35)
    rp.callbacks.add_edge_toolbar(hello_imgui.EdgeToolbarType.top, lambda: notification_strip(app), strip)
    rp.docking_params = docking_params(app)
    rp.fps_idling.enable_idling = not headless
    if ini_disable:
        rp.ini_disable = True
    else:
        rp.ini_folder_type = hello_imgui.IniFolderType.absolute_path
        rp.ini_filename = str(app.workspace / ".clutch" / "clutch.ini")

    def post_init() -> None:
        if headless:
            # the null renderer has no texture support flag: "font atlas is not built" otherwise
            imgui.get_io().backend_flags |= imgui.BackendFlags_.renderer_has_textures
        app.engine.inbox.on_put = hello_imgui.request_refresh
        if app.font_notice:
            app.notify("warning", app.font_notice)

    def before_exit() -> None:
        app.engine.inbox.on_put = None
        if app.graph_editor is not None:
            ed.destroy_editor(app.graph_editor)
            app.graph_editor = None

    rp.callbacks.post_init = post_init
    rp.callbacks.before_exit = before_exit
    if headless:
        rp.platform_backend_type = hello_imgui.PlatformBackendType.null
        rp.renderer_backend_type = hello_imgui.RendererBackendType.null
        # the null runner never destroys the ImGui context; the test engine needs it gone first
        rp.callbacks.before_exit_post_cleanup = lambda: imgui.destroy_context()
    if msaa is not None:
        o = hello_imgui.OpenGlOptions()
        o.anti_aliasing_samples = msaa
        rp.renderer_backend_options.open_gl_options = o
    addons = immapp.AddOnsParams()
    addons.with_implot = True
    addons.with_markdown = True
    md = imgui_md.MarkdownOptions()
    if os.path.exists(DEJAVU_SANS):
        md.font_options.merge_fonts = [DEJAVU_SANS]
    addons.with_markdown_options = md
    return rp, addons


# =============================================================================================
#    main
# =============================================================================================

def make_engine(workspace: str | os.PathLike, provider: str | None) -> tuple[Any, list[str]]:
    from conductor_store import ConductorStore
    from multi_agent_conductor import ConductorEngine
    ws = Path(workspace).expanduser()
    notices: list[str] = []
    settings = None
    if provider:
        settings, notices = ConductorStore(ws).load_settings()
        settings = settings.model_copy(update={"provider": provider})
    return ConductorEngine(ws, settings), notices


def start_api(app: AppState) -> None:
    try:
        import hook_server  # type: ignore[import-not-found]
    except Exception as e:  # noqa: BLE001 - another module; the app runs without it
        app.notify("warning", f"The automation API is not available: cannot import hook_server ({e})")
        return
    start = getattr(hook_server, "start_for_engine", None)
    if start is None:
        app.notify("warning", "The automation API is not available: hook_server has no start_for_engine()")
        return
    try:
        app.api_server = start(app.engine)
    except Exception as e:  # noqa: BLE001
        app.notify("error", f"The automation API did not start: {describe_error(e)}")
        return
    where = getattr(app.api_server, "url", None) or getattr(app.api_server, "port", None)
    app.notify("info", f"automation API started{f' at {where}' if where else ''}")


def stop_api(app: AppState) -> None:
    srv = app.api_server
    if srv is None:
        return
    for name in ("stop", "close", "shutdown"):
        fn = getattr(srv, name, None)
        if callable(fn):
            try:
                fn()
            except Exception as e:  # noqa: BLE001
                log.warning("stopping the API: %s", e)
            break


def main(workspace: str | os.PathLike = ".", api: bool = False, provider: str | None = None) -> int:
    """The desktop app on a workspace: build the engine, run the window, close the engine
    (which saves its state). SIGTERM and Ctrl+C in the terminal close the window cleanly."""
    import sys
    try:
        engine, notices = make_engine(workspace, provider)
    except Exception as e:  # noqa: BLE001 - a bad workspace or settings: one line, no traceback
        print(f"clutch: {describe_error(e)}", file=sys.stderr, flush=True)
        return 2
    engine.start()
    app = AppState(engine)
    for n in notices:
        app.notify("warning", n)
    if api:
        start_api(app)
    rp, addons = runner_params(app)

    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        def on_signal(_sig: int, _frame: Any) -> None:
            app.exit_requested = True      # picked up at the next frame: a clean exit
            try:
                hello_imgui.request_refresh()
            except RuntimeError:
                pass
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, on_signal)
    code = 0
    try:
        immapp.run(rp, addons)
    except RuntimeError as e:
        if app.frame > 0:
            raise
        # no frame at all: no display, no OpenGL... one clear line instead of a traceback
        print(f"clutch: cannot open the window: {e}", file=sys.stderr, flush=True)
        code = 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        stop_api(app)
        engine.close()
        app.close()
    return code


if __name__ == "__main__":
    import sys
    raise SystemExit(main(sys.argv[1] if len(sys.argv) > 1 else "."))
