"""The engine's history reads: every session of the workspace (this one and the earlier ones,
whose comms logs stay on disk), usage summed over all of them, an earlier session's comms
entries and streams, and the last epic planned.

Threads: any thread but the GUI's frame: these read log files (the API's pool threads, the
GUI's background pool, the CLI). State owned: none here; the `SessionHistory` (self.history,
providers.history) owns its cache under its own lock, and the running session's figures come
from the comms log (its own lock).
"""
from __future__ import annotations

import datetime
import operator
from typing import Any

from ai_client import SessionLog, combine_usage, stream_texts
from models import Usage

SCOPES = ("all", "current")


class HistoryReads:
    """Mixin of ConductorEngine: the workspace's sessions, for the API, the GUI and the CLI."""

    def sessions(self) -> list[dict[str, Any]]:
        """Every session with entries, oldest first, the running one last-but-not-least
        (`current: true`, `ended: null`): id, started, ended, entries, tickets, tokens, cost,
        usage, damaged lines. Reads the logs (cached by size and mtime)."""
        self.comms.flush()           # this session's queued lines, so its figures are whole
        return [s.describe(current=s.session_id == self.session_id)
                for s in self.history.summaries(include_current=True)]

    def usage_report(self, scope: str = "all") -> dict[str, Any]:
        """Usage per tier, track and ticket (`{key: {name: Usage}}`) and `"total"` (a Usage):
        over every session of the workspace (`scope="all"`: the earlier sessions' logs in
        session order, then this one's live sums) or this session only (`"current"`)."""
        if scope not in SCOPES:
            raise ValueError(f"session scope must be 'all' or 'current', not {scope!r}")
        keys = ("tier", "track", "ticket")
        if scope == "current":
            out: dict[str, Any] = {k: self.comms.usage_by(k) for k in keys}
            out["total"] = self.comms.total()
            return out
        earlier = self.history.earlier_usage()
        out = {k: combine_usage([earlier.by[k], self.comms.usage_by(k)]) for k in keys}
        cur = self.comms.total()
        out["total"] = Usage.model_construct(**{
            f: operator.add(getattr(earlier.total, f), getattr(cur, f))
            for f in Usage.model_fields})
        return out

    def earlier_usage(self) -> Any:
        """Usage over the earlier sessions only (providers.history.EarlierUsage): `.by[key]`,
        `.total`, `.sessions`. The GUI adds this session's live figures to it."""
        return self.history.earlier_usage()

    def session_log(self, session_id: str) -> SessionLog:
        """A session's comms log to read entry by entry. KeyError: no such session;
        ValueError: not a session id."""
        if session_id == self.session_id:
            self.comms.flush()
        return self.history.open(session_id)

    def session_streams(self, session_id: str) -> dict[str, str]:
        """A session's streams' text, rebuilt from its comms log (stream id -> text)."""
        return stream_texts(self.session_log(session_id))

    def planned_before(self, epic: str) -> bool:
        """Whether the run this session continues (`--resume` reopens the newest session)
        already planned ``epic`` into tracks: its log records that epic, and tracks were
        created after its first entry. Then resuming must not plan the epic again, even when
        every one of those tracks completed (a run killed after its last merge): that would
        make the same change twice. False when the run was stopped before any track was
        accepted (killed during Tier 1, or a different epic)."""
        self.comms.flush()
        s = self.history.summary(self.session_id)
        if s.first_ts is None or s.epic.strip() != epic.strip():
            return False
        with self._lock:
            created = [t.created_at for t in self._tracks.values() if t.created_at]
        for c in created:
            try:
                when = datetime.datetime.fromisoformat(c).timestamp()
            except ValueError:
                continue       # a track file written by hand: its date says nothing here
            if when >= s.first_ts - 1:     # created_at is to the second
                return True
        return False

    def remembered_epic(self) -> str:
        """The epic planned last: in this session, else in the newest earlier one ("")."""
        return self.last_epic or self.history.last_epic()
