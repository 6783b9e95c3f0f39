"""The GUI's view of the workspace's history: the earlier sessions (their figures, as the
engine reads them from their comms logs), the session the Comms panel shows, and that
session's streams rebuilt from its log.

GUI thread, except the functions marked "background pool", which `AppState.background` runs
off the GUI thread (they read log files; the frame never waits for them) and whose results
come back through the op's future. State owned: `HistoryState` (GUI thread only); a
`CommsState` built on the background pool for an earlier session is handed over whole by the
future and touched by nobody else before.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gui import engine_reads

if TYPE_CHECKING:
    from gui.state import AppState, CommsState
    from multi_agent_conductor import ConductorEngine

READ_BATCH = 2000       # entries read from an earlier log per step


class HistoryState:
    """The earlier sessions as last read, and which one the Comms panel shows."""

    def __init__(self) -> None:
        self.started = False              # the first reads (usage, sessions, epic) asked for
        self.sessions: list[dict[str, Any]] = []    # engine.sessions(), oldest first
        self.sessions_read = False
        self.sessions_asked_at = 0.0       # time.monotonic() of the last read asked for
        self.picked = ""                  # "" = the running session; else an earlier one's id
        self.opening = ""                 # the session being read for the Comms panel
        self.view = "entries"             # what Comms shows of an earlier session: or "streams"
        self.live: CommsState | None = None   # the running session's rows while another shows
        self.streams: dict[str, str] | None = None   # the picked session's streams, once read
        self.stream_pick = ""
        self.stream_lines: tuple[str, list[str]] = ("", [])   # the picked stream, split once

    def earlier(self, current_id: str) -> list[dict[str, Any]]:
        return [s for s in self.sessions if s.get("id") != current_id]


def start(app: AppState) -> None:
    """Once, at the first frame: read the earlier sessions' usage, the session list and the
    last epic on the background pool."""
    h = app.history
    if h.started:
        return
    h.started = True
    eng = app.engine
    app.background("Read earlier sessions' usage", eng.earlier_usage, panel="Usage",
                   on_done=lambda e: _got_earlier_usage(app, e))
    refresh_sessions(app)
    app.background("Read the last epic", eng.remembered_epic,
                   on_done=lambda text: _got_epic(app, text))


def _got_earlier_usage(app: AppState, earlier: Any) -> None:
    app.usage.earlier = earlier
    app.usage.dirty = True


def _got_epic(app: AppState, text: str) -> None:
    if text and not app.epic_text:          # never over what the person typed meanwhile
        app.epic_text = text


def refresh_sessions(app: AppState, older_than: float = 0.0) -> None:
    """Read the session list again (background pool), unless a read is on its way or the
    last one was asked for less than `older_than` seconds ago."""
    if app.busy("Read sessions") or \
            time.monotonic() - app.history.sessions_asked_at < older_than:
        return

    app.history.sessions_asked_at = time.monotonic()

    def done(sessions: list[dict[str, Any]]) -> None:
        app.history.sessions = sessions
        app.history.sessions_read = True
    app.background("Read sessions", app.engine.sessions, panel="Comms", on_done=done)


def pick(app: AppState, session_id: str, view: str = "entries") -> None:
    """Show `session_id` in the Comms panel ("" or the running session's id: the live log),
    its entries or (`view="streams"`) its streams. An earlier session's entries are read on
    the background pool; the panel switches when they are in."""
    h = app.history
    if not session_id or session_id == app.engine.session_id:
        h.opening = ""
        if h.live is not None:
            app.comms, h.live = h.live, None
        h.picked, h.streams, h.view = "", None, "entries"
        return
    if session_id == h.picked:
        h.view = view
        return
    if session_id == h.opening:
        return
    h.opening = session_id

    def done(comms: CommsState) -> None:
        if h.opening != session_id:         # another session was picked meanwhile
            return
        h.opening = ""
        if h.live is None:
            h.live = app.comms
        app.comms = comms
        h.picked, h.streams, h.stream_pick, h.view = session_id, None, "", view
        h.stream_lines = ("", [])

    def failed(_e: BaseException) -> None:
        if h.opening == session_id:
            h.opening = ""
    op = app.background(f"Open session {session_id}", read_session, app.engine, session_id,
                        panel="Comms", on_done=done)
    op.on_error = failed


def read_session(engine: ConductorEngine, session_id: str) -> CommsState:
    """Background pool: an earlier session's comms rows, as a CommsState of its own whose
    `log` reads the entries back."""
    from gui.state import CommsState       # gui.state imports this module
    log = engine.session_log(session_id)
    comms = CommsState()
    comms.log = log
    comms.follow = False
    for lo in range(0, len(log), READ_BATCH):
        comms.append(log.entries(lo, lo + READ_BATCH))
    return comms


def load_streams(app: AppState) -> None:
    """Rebuild the picked session's streams from its log (background pool)."""
    h = app.history
    sid = h.picked
    label = f"Read streams of {sid}"
    if not sid or h.streams is not None or app.busy(label):
        return

    def done(streams: dict[str, str]) -> None:
        if h.picked == sid:
            h.streams = streams
            h.stream_pick = next(iter(streams), "")
    app.background(label, app.engine.session_streams, sid, panel="Comms", on_done=done)


def stream_lines(app: AppState) -> list[str]:
    """The picked stream's lines, split once per pick."""
    h = app.history
    if h.stream_lines[0] != h.stream_pick:
        text = (h.streams or {}).get(h.stream_pick, "")
        h.stream_lines = (h.stream_pick, text.splitlines() or [""])
    return h.stream_lines[1]


def live_comms(app: AppState) -> CommsState:
    """The running session's comms rows, whether the panel shows them or an earlier session's."""
    return app.history.live if app.history.live is not None else app.comms


def comms_entries(app: AppState, since: int = 0, until: int | None = None) -> list[dict[str, Any]]:
    """Entries of the session the Comms panel shows (the running one through the engine, an
    earlier one from its log file)."""
    return entries_reader(app)(since, until)


def entries_reader(app: AppState) -> Callable[[int, int | None], list[dict[str, Any]]]:
    """A reader of the shown session's entries, fixed now (for work on the background pool,
    which must not look at `app.comms` later)."""
    log, eng = app.comms.log, app.engine
    if log is not None:
        return log.entries
    return lambda since, until: engine_reads.comms_entries(eng, since, until)


def comms_path(app: AppState) -> str:
    log = app.comms.log
    return str(log.path) if log is not None else engine_reads.comms_path(app.engine)
