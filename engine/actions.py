"""Per-ticket actions of the person: retry, skip, cancel, revert.

Threads: the public methods are called from any thread (GUI, API, CLI). Each checks the
request against `models.ticket_action_refusal` at once (an EngineError says why not) and
returns a `concurrent.futures.Future`; none of them waits for the loop. The work runs on the
conductor (loop) thread; a revert's git call on an executor thread. State owned: none; tickets
change under the track lock (`_lock`).
"""
from __future__ import annotations

import asyncio
import concurrent.futures

from engine.errors import EngineError, copy_track
from events import TrackChanged
from models import Ticket, Track, stream_tier3, ticket_action_refusal
from tools import ToolError


def _done(value: object = None) -> concurrent.futures.Future:
    fut: concurrent.futures.Future = concurrent.futures.Future()
    fut.set_result(value)
    return fut


class TicketActions:
    """Mixin of ConductorEngine: what the person may do to one ticket."""

    def _find(self, ticket_id: str) -> tuple[Track, Ticket]:
        with self._lock:
            for t in self._tracks.values():
                for k in t.tickets:
                    if k.id == ticket_id:
                        return t, k
        raise EngineError(f"no ticket {ticket_id!r}")

    def _refuse(self, ticket: Ticket, action: str) -> None:
        refusal = ticket_action_refusal(ticket.status, action, ticket_id=ticket.id,
                                        commit_sha=ticket.commit_sha)
        if refusal:
            raise EngineError(refusal)

    def retry_ticket(self, ticket_id: str) -> concurrent.futures.Future[Track]:
        """Put a failed, cancelled, skipped or blocked ticket back to todo and run its track.
        The future completes once that is done and on disk and the track runs, with a copy of
        the track then; `track_run(track_id)` gives the future of the run itself."""
        track, ticket = self._find(ticket_id)
        self._refuse(ticket, "retry")
        return self.submit(self._retry(track, ticket))

    async def _retry(self, track: Track, ticket: Ticket) -> Track:
        with self._lock:
            ticket.status = "todo"
            ticket.blocked_reason = ""
            ticket.retry_count += 1
            ticket.attempts = 0          # a retry is a fresh run: attempt 1 again, no old brief
            ticket.checks = ticket.diagnosis = ""
            self._unblock(track)
        self._save(track)
        await self._flush()
        self._status(track, ticket)
        self._emit(TrackChanged(track_id=track.id))
        self._wake_all()
        with self._lock:
            run = self._running.get(track.id)
        if run is None or run.done():
            run = self.start_track(track.id)
            while track.status != "in_progress" and not run.done():
                await asyncio.sleep(0)        # the run's first step marks the track running
        with self._lock:
            return copy_track(track)

    def skip_ticket(self, ticket_id: str,
                    reason: str = "skipped by the user") -> concurrent.futures.Future[None]:
        """Mark a ticket skipped (its dependents may go on). Done once it is on disk."""
        track, ticket = self._find(ticket_id)
        self._refuse(ticket, "skip")
        return self.submit(self._set_status(track, ticket, "skipped", reason))

    def cancel_ticket(self, ticket_id: str,
                      reason: str = "cancelled by the user") -> concurrent.futures.Future[None]:
        """Cancel a ticket. A running one is told at once (its command's whole process tree
        ends, its questions are withdrawn) and ends as cancelled on its own thread; the future
        is done when it has been told. A waiting one is marked cancelled, on disk."""
        track, ticket = self._find(ticket_id)
        self._refuse(ticket, "cancel")
        with self._lock:
            flag = self._cancel_flags.get(ticket_id)
        if flag is not None:         # running: the worker stops at its next chunk or round
            flag.set()
            self.approvals.cancel_for(ticket_id, reason)
            return _done()
        return self.submit(self._set_status(track, ticket, "cancelled", reason))

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

    def revert_ticket(self, ticket_id: str) -> concurrent.futures.Future[str]:
        """Revert a completed ticket's commit; the future gives the revert's short SHA. Refused
        at once (EngineError) when git commits are off, the ticket is not completed or has no
        commit, or its track is running; through the future when git cannot revert it (a
        conflict with later changes: git's revert is aborted and the ticket stays completed)."""
        track, ticket = self._find(ticket_id)
        if self._git is None:
            raise EngineError("git commits are off for this workspace, so there is nothing to revert")
        self._refuse(ticket, "revert")
        if self.is_running(track.id):
            raise EngineError(f"track {track.id} is running; pause it and let its workers "
                              f"finish before reverting a ticket")
        return self.submit(self._revert(track, ticket))

    def _git_revert(self, track: Track, ticket_id: str, sha: str) -> str:
        """Revert `sha`: in the person's tree (shared-directory mode); in worktree mode on the
        track branch, or, once the track was merged, on the branch it was merged into, whose
        track branch then goes (a retried ticket starts a fresh one from the person's branch,
        so its work is merged again rather than lost behind the revert)."""
        if self._tb is not None and track.branch:
            if not track.merged_into:
                new = self._tb.revert_ticket(track.id, sha)
                self._tb.forget_merge(track.id, ticket_id)
                return new
            new = self._tb.revert_ticket(track.id, sha, on=track.merged_into)
            self._tb.cleanup_track(track.id, keep_branch=False, discard=True)
            with self._lock:
                track.branch = track.merged_into = ""
            return new
        assert self._git is not None
        with self._git_lock:
            return self._git.revert(sha)

    async def _revert(self, track: Track, ticket: Ticket) -> str:
        loop = asyncio.get_running_loop()
        try:
            new_sha = await loop.run_in_executor(self._executor, self._git_revert,
                                                 track, ticket.id, ticket.commit_sha)
        except ToolError as e:
            # git said no (the revert conflicts with later changes, the commit is gone): a
            # refusal with git's reason; git aborted the revert, so nothing changed
            raise EngineError(f"cannot revert {ticket.id}: {e}") from e
        with self._lock:
            old = ticket.commit_sha
            ticket.status = "todo"
            ticket.commit_sha = ""
            ticket.result = f"reverted: commit {old} undone by {new_sha}"
            # a completed track has work again: paused, so Resume (or Start) runs the ticket
            reopened = track.status == "completed"
            if reopened:
                track.status = "paused"
        self.comms.record("status", tier="Tier 3", stream_id=stream_tier3(ticket.id),
                          track_id=track.id, ticket_id=ticket.id, direction="-",
                          data={"status": "todo", "reason": ticket.result}, wait=False)
        self._save(track)
        await self._flush()
        self._status(track, ticket)
        if reopened:
            self._status(track, None)
        self._emit(TrackChanged(track_id=track.id))
        return new_sha
