"""The engine's read API: copies of tracks, worker figures, usage, approvals pending, stream
text, comms entries, an edit's preview and the workspace's files, for the GUI, the API and
the CLI, so none of them reaches into the engine's parts.

Threads: any; every method is thread-safe (it copies under the owning part's lock, or reads a
part that is itself thread-safe). State owned: none.
"""
from __future__ import annotations

import concurrent.futures
import os
from pathlib import Path
from typing import Any

from engine.errors import EngineError, copy_track
from models import ApprovalRequest, EpicPlan, Track, Usage
from tools import SandboxStatus
from tools import diff_preview as _diff_preview

_SKIP_DIRS = frozenset({".git", ".clutch", "node_modules", "__pycache__", ".venv", "venv",
                        ".mypy_cache", ".pytest_cache", ".ruff_cache", ".tox"})


class Reads:
    """Mixin of ConductorEngine: read-only views, safe from any thread."""

    # -- tracks and workers --------------------------------------------------------------------
    def tracks(self) -> list[Track]:
        with self._lock:
            return [copy_track(t) for t in self._tracks.values()]

    def track(self, track_id: str) -> Track:
        with self._lock:
            t = self._tracks.get(track_id)
            if t is None:
                raise EngineError(f"no track {track_id!r}")
            return copy_track(t)

    def track_dir(self, track_id: str) -> Path:
        """The folder of a track's Conductor files (spec.md, plan.md, ...)."""
        return Path(self.store.tracks_dir) / track_id

    def is_running(self, track_id: str) -> bool:
        with self._lock:
            f = self._running.get(track_id)
            return f is not None and not f.done()

    def track_run(self, track_id: str) -> concurrent.futures.Future[Track] | None:
        """The future of the track's current (or last) run: it completes with the track when
        nothing more can run. None when the track was never started in this session."""
        with self._lock:
            return self._running.get(track_id)

    def busy(self) -> list[str]:
        """What is under way, in words (empty when nothing is): tracks running, workers at
        work, approvals waiting. Switching the app to another workspace waits for none of it,
        so it is refused while this is not empty."""
        with self._lock:
            running = [tid for tid, f in self._running.items() if not f.done()]
        out = [f"track {tid} is running" for tid in running]
        if self.cap.active:
            out.append(f"{self.cap.active} worker{'s' if self.cap.active != 1 else ''} at work")
        waiting = len(self.pending_approvals())
        if waiting:
            out.append(f"{waiting} approval{'s' if waiting != 1 else ''} waiting")
        return out

    def is_paused(self, track_id: str) -> bool:
        with self._lock:
            return track_id in self._paused

    def workers(self) -> dict[str, int]:
        return {"active": self.cap.active, "cap": self.cap.effective(),
                "queued": self._queued_count()}

    def effective_cap(self) -> int:
        return self.cap.effective()

    def current_proposal(self) -> tuple[str, EpicPlan] | None:
        """The epic and the Tier 1 plan waiting to be accepted, or None."""
        plan, epic = self.proposal, self.last_epic
        return (epic, plan) if plan is not None else None

    def pending_approvals(self) -> list[ApprovalRequest]:
        return self.approvals.pending()

    # -- usage and the comms log ---------------------------------------------------------------
    def usage(self, key: str = "tier") -> dict[str, Usage]:
        return self.comms.usage_by(key)

    def usage_total(self) -> Usage:
        return self.comms.total()

    def bleed_stats(self, stream_id: str) -> dict[str, Any] | None:
        return self._sessions.bleed_stats(stream_id)

    def comms_count(self) -> int:
        """How many entries the comms log holds."""
        return len(self.comms)

    def comms_entries(self, since: int = 0, until: int | None = None) -> list[dict[str, Any]]:
        """Comms-log entries [since, until) (read back from disk when no longer in memory)."""
        return self.comms.entries(since, until)

    def comms_path(self) -> Path | None:
        """The comms log's file (None for a log kept in memory)."""
        return self.comms.path

    # -- streams -------------------------------------------------------------------------------
    def stream_text(self, stream_id: str, offset: int = 0) -> str:
        """A stream's text from `offset` characters. KeyError for a stream that has not begun
        (the API answers 404); OSError when its ended text cannot be read back from disk."""
        return self.streams.text(stream_id, offset)

    def stream_info(self) -> dict[str, dict[str, Any]]:
        """Every stream's length (characters) and state ("streaming", "done", ...)."""
        return self.streams.info()

    # -- the workspace -------------------------------------------------------------------------
    def diff_preview(self, tool: str, args: dict[str, Any], ticket_id: str = "") -> str:
        """What a write or edit call would change, as a unified diff (or why it cannot), in
        the ticket's own tree when it has one."""
        return _diff_preview(self._ws_for(ticket_id) if ticket_id else self.ws, tool, args)

    def workspace_files(self, limit: int = 5000) -> list[str]:
        """Up to `limit` files of the workspace, relative, sorted, without VCS, cache and
        Clutch folders (for pickers of context and target files)."""
        if limit <= 0:
            raise EngineError(f"limit must be positive, not {limit}")
        out: list[str] = []
        root = str(self.workspace)
        for d, dirs, files in os.walk(root):
            dirs[:] = sorted(x for x in dirs if x not in _SKIP_DIRS)
            rel = os.path.relpath(d, root)
            for f in sorted(files):
                out.append(f if rel == "." else f"{rel}/{f}".replace(os.sep, "/"))
                if len(out) >= limit:
                    return out
        return out

    def sandbox_status(self) -> SandboxStatus:
        """Whether worker commands can run, and how (bwrap, or none), or why not."""
        return self.ws.sandbox_status()

    def summary(self) -> dict[str, Any]:
        """The JSON summary the CLI prints."""
        return {
            "session_dir": str(self.session_dir),
            "tracks": [{"id": t.id, "title": t.title, "status": t.status,
                        "branch": t.branch or None, "merged_into": t.merged_into or None,
                        "tickets": [{"id": k.id, "status": k.status, "attempts": k.attempts,
                                     "commit": k.commit_sha or None,
                                     "reason": k.blocked_reason or None,
                                     **({"branch": k.branch} if k.branch else {}),
                                     **({"checks": k.checks} if k.checks else {})}
                                    for k in t.tickets]}
                       for t in self.tracks()],
            "usage": {tier: u.summary() for tier, u in sorted(self.usage("tier").items())},
            "streams": {sid: i["length"] for sid, i in sorted(self.streams.info().items())},
        }
