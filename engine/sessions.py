"""SessionRegistry: the agent session of each stream, and the last figures of finished ones.

Threads: executor threads register and retire sessions; any thread reads the context-window
figures (`bleed_stats`) and the context sections. State owned: stream id -> live AgentSession,
or the figures (a dict) a finished agent left, and stream id -> the label, kind and tokens of
each section its last request was built from (issue 19: the Usage panel's context view; the
texts are in the comms log's request), under its own lock. A finished agent's history is
dropped at once.
"""
from __future__ import annotations

import threading
from typing import Any

from ai_client import AgentSession, get_history_bleed_stats
from models import ContextSection, SectionInfo


class SessionRegistry:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sessions: dict[str, AgentSession | dict[str, Any]] = {}
        self._contexts: dict[str, tuple[SectionInfo, ...]] = {}

    def add(self, session: AgentSession) -> None:
        with self._lock:
            self._sessions[session.stream_id] = session

    def retire(self, session: AgentSession) -> None:
        """An agent finished: keep its context-window figures, drop its history."""
        stats = get_history_bleed_stats(session)
        with self._lock:
            if self._sessions.get(session.stream_id) is session:
                self._sessions[session.stream_id] = stats

    def get(self, stream_id: str) -> AgentSession | dict[str, Any] | None:
        with self._lock:
            return self._sessions.get(stream_id)

    def __getitem__(self, stream_id: str) -> AgentSession | dict[str, Any]:
        with self._lock:
            return self._sessions[stream_id]

    def bleed_stats(self, stream_id: str) -> dict[str, Any] | None:
        s = self.get(stream_id)
        if s is None or isinstance(s, dict):      # a finished agent keeps its last figures
            return s
        return get_history_bleed_stats(s)

    def note_context(self, stream_id: str, sections: list[ContextSection]) -> None:
        """What an agent's request was built from (the sections as sent, after any edit)."""
        infos = tuple(s.info() for s in sections)
        with self._lock:
            self._contexts[stream_id] = infos

    def context(self, stream_id: str) -> list[SectionInfo]:
        with self._lock:
            return list(self._contexts.get(stream_id, ()))

    def contexts(self) -> dict[str, list[SectionInfo]]:
        """Every stream's last context, in the order the agents were started."""
        with self._lock:
            return {sid: list(secs) for sid, secs in self._contexts.items()}
