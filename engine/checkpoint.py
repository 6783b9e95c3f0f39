"""A phase's manual verification: the person's checkpoint, never a worker's.

A Conductor plan ends each phase with "User Manual Verification '<phase>'": the person checks
the phase by hand. Such a task (`Ticket.checkpoint`, set by the store) is not a worker ticket.
When it is ready (plan order: the rest of its phase is done), its executor thread asks the
person (an approval of kind `checkpoint`: the phase, its tasks and their commits). Approved ->
a checkpoint commit, the task ticked with its SHA, `[checkpoint: sha]` on the phase heading.
Rejected with a reason -> the phase stays open (the task fails with the reason, so the next
phase waits). `--yes` approves.

Threads: `_checkpoint_life` runs on the ticket's executor thread (it is called from
`_ticket_life`), reaching the loop only through the approvals broker's `ask_from_thread` and
the emitter. State owned: none of its own; the ticket's fields are set under the track lock.
"""
from __future__ import annotations

import threading

from engine.errors import describe
from events import ErrorEvent, StreamChunk, StreamEnd
from models import ApprovalRequest, CheckpointPayload, Ticket, Track, stream_tier3


class CheckpointGate:
    """Mixin of ConductorEngine: the person's verification of a phase."""

    def _checkpoint_life(self, track: Track, ticket: Ticket, cancel: threading.Event) -> None:
        sid = stream_tier3(ticket.id)
        emit = self._emitter()
        with self._lock:
            phase = ticket.phase
            others = [t for t in track.tickets
                      if t.phase == phase and t.id != ticket.id and not t.checkpoint]
            tasks = [f"[{'x' if t.status == 'completed' else ' '}] "
                     f"{(t.description.strip().splitlines() or [''])[0]}" for t in others]
            commits = [f"{t.id}: {t.commit_sha}" for t in others if t.commit_sha]
        where = (f" Its work is on branch {track.branch} (`git switch {track.branch}` to try "
                 f"it); it reaches your branch when the track is merged."
                 if track.branch else "")
        emit(StreamChunk(stream_id=sid, text=f"Phase {phase!r} is done: waiting for you to "
                                              f"verify it by hand.{where}\n"))
        decision = self.approvals.ask_from_thread(ApprovalRequest(
            title=f"Verify phase {phase!r} by hand", stream_id=sid, track_id=track.id,
            ticket_id=ticket.id,
            payload=CheckpointPayload(phase=phase, tasks=tasks, commits=commits)))
        if not decision.approved:
            with self._lock:
                if self._closed:
                    ticket.status, ticket.blocked_reason = "todo", ""
                elif cancel.is_set():
                    ticket.status = "cancelled"
                    ticket.blocked_reason = decision.reason or "cancelled by the user"
                else:
                    ticket.status = "failed"
                    ticket.blocked_reason = (f"phase {phase!r} not verified: "
                                             f"{decision.reason or 'rejected by the person'}")
            emit(StreamEnd(stream_id=sid, state="cancelled" if cancel.is_set() else "error"))
            return
        sha = ""
        if self._git is not None:
            with self._git_lock:
                sha = self._git.commit_checkpoint(
                    f"conductor(checkpoint): Checkpoint end of phase {phase}\n\n"
                    f"Verified by the person in Clutch ({decision.source}).")
        with self._lock:
            ticket.status = "completed"
            ticket.commit_sha = sha
            ticket.result = f"verified by the person ({decision.source})" + (
                f"; checkpoint {sha}" if sha else "")
        if sha and phase:
            try:
                self.store.checkpoint_phase(track.id, phase, sha)
            except Exception as e:   # the commit stands; the missing heading tag is reported
                msg = (f"{track.id}: could not tag phase {phase!r} with [checkpoint: {sha}]: "
                       f"{describe(e)}")
                self.notices.append(msg)
                emit(ErrorEvent(message=msg, stream_id=sid, track_id=track.id,
                                ticket_id=ticket.id))
        emit(StreamChunk(stream_id=sid, text=f"✓ phase {phase!r} verified"
                                              + (f"; checkpoint {sha}\n" if sha else "\n")))
        emit(StreamEnd(stream_id=sid, state="done"))
