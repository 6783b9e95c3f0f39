"""A ticket's life: started and finished on the loop, lived on one executor thread.

Threads: `_start_ticket` and `_ticket_done` run on the conductor (loop) thread; `_ticket_life`
(spawn approval, the worker, the commit, Tier 4 on failure), `run_worker_lifecycle` and
`_commit` on the ticket's executor thread, which reaches the loop only through its emitter
(put_threadsafe) and one call_soon_threadsafe when it ends. State owned: each running
ticket's cancel event (`_cancel_flags`, under the track lock); the files each worker wrote
(`_written`, under `_written_lock`); git commits are serialised by `_git_lock`. A running
ticket's own fields are set by its thread under the track lock before it reports back.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import traceback
from collections.abc import Callable

import prompts
from ai_client import Cancelled
from engine.errors import BudgetExceeded, NoChange, StepStopped, describe
from events import ErrorEvent, StreamEnd
from models import (ApprovalRequest, SpawnPayload, Ticket, Track, stream_tier3, stream_tier4,
                    tick_subtasks)
from tools import TOOL_SPECS


class TicketLife:
    """Mixin of ConductorEngine: one ticket from its spawn approval to its final status."""

    def _start_ticket(self, track: Track, ticket: Ticket, on_done: Callable[[str], None]) -> None:
        """Loop thread: take a worker slot, mark the ticket running, and hand its whole life
        (spawn approval, worker, commit, QA) to one executor thread. The thread reports back
        once, through call_soon_threadsafe, to `_ticket_done`: one hop out and one back per
        ticket, and no task or future chain on the loop for it."""
        loop = asyncio.get_running_loop()
        self.cap.take()
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
            if ticket.checkpoint:       # a phase's manual verification: the person's, no worker
                self._checkpoint_life(track, ticket, cancel)
                return
            # the worker's context (issue 19): labelled sections, the ticket last; the
            # person sees and edits them at the spawn, and what is approved is what is sent
            sections = self._worker_sections(track, ticket)
            with self._lock:
                prompt = next(s.text for s in sections if s.kind == "ticket")
                context = ""
                model = self.settings.model_for("Tier 3", ticket.model_override)
                step = ticket.step_mode or self.settings.step_mode
                retry_count = ticket.retry_count
                description = ticket.description
            if self.settings.approvals.spawn == "ask":
                asked = SpawnPayload(prompt=prompt, context=context, model=model,
                                     description=description, attempt=retry_count + 1,
                                     sections=sections)
                decision = self.approvals.ask_from_thread(ApprovalRequest(
                    kind="spawn", title=f"Spawn a worker for {ticket.id}", stream_id=sid,
                    track_id=track.id, ticket_id=ticket.id, payload=asked))
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
                    sections = decision.payload.request_sections(asked)
                    prompt = decision.payload.prompt
                    context = decision.payload.context
                    if decision.payload.model and self.settings.provider_for("Tier 3") != "offline":
                        model = decision.payload.model
            if sections:        # the request is the sections, in order (system kept apart)
                prompt, context = prompts.render_sections(sections)[1], ""
                self._note_context(sid, sections)
            if cancel.is_set():
                raise Cancelled(f"{ticket.id} cancelled by the user")
            # queued, not written: it goes out with the worker's first request record
            self.comms.record("spawn", tier="Tier 3", stream_id=sid, track_id=track.id,
                              ticket_id=ticket.id, provider=self.provider("Tier 3").name, model=model,
                              direction="-", data={"prompt": prompt, "context": context,
                                                   "retry_count": retry_count,
                                                   "sections": prompts.section_summary(sections)},
                              wait=False)
            result = self.run_worker_lifecycle(track.id, ticket.id, prompt, context, model,
                                               cancel, step, retry_count)
            with self._written_lock:
                files = sorted(self._written.pop(ticket.id, set()))
            sha = self._commit(ticket, files)
            if self._git is not None and not sha:
                # Evidence for a tick: in a git workspace a task is ticked only with the SHA
                # of the commit that did it; no change, no commit, and the task stays open.
                raise NoChange(f"the worker changed no file, so there is nothing to show for "
                               f"{ticket.id}: the task stays open (its answer: "
                               f"{self._scrub(result).strip()[:300]!r})")
            with self._lock:
                ticket.result = self._scrub(result)[-4000:]
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
            reason = self._scrub(describe(e))
            trace = self._scrub(traceback.format_exc()[-4000:])
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
                        ticket.result = "QA: " + self._scrub(diagnosis)
                except Exception as qa_err:
                    emit(ErrorEvent(message=f"Tier 4 could not diagnose {ticket.id}: "
                                            f"{describe(qa_err)}",
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
                ticket.blocked_reason = self._scrub(f"internal error: {describe(exc)}")
            self.cap.free()
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

    def run_worker_lifecycle(self, track_id: str, ticket_id: str, prompt: str, context: str,
                             model: str, cancel: threading.Event, step_mode: bool = False,
                             retry_count: int = 0) -> str:
        """One stateless Tier 3 worker: a fresh session, the tool loop, the final summary.
        Runs in an executor thread; reaches the queue only through put_threadsafe."""
        sid = stream_tier3(ticket_id)
        emit = self._emitter()
        session = self._session_for(
            "Tier 3", sid, prompts.TIER3_SYSTEM, track_id=track_id, ticket_id=ticket_id,
            model_override=model if self.settings.provider_for("Tier 3") != "offline" else None,
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
