"""A ticket's life: started and finished on the loop, lived on one executor thread.

Threads: `_start_ticket` and `_ticket_done` run on the conductor (loop) thread; `_ticket_life`
(its worktree, the spawn gate and the attempts: worker, checks, Tier 4 and a repair worker
while checks fail; then the commit and its merge), `run_worker_lifecycle` and `_commit` on the
ticket's executor thread, which reaches the loop only through its emitter
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
from typing import Any

import prompts
from ai_client import Cancelled
from engine.branches import LEAD_WAIT_S
from engine.errors import BudgetExceeded, ChecksFailed, NoChange, StepStopped, describe
from events import ErrorEvent, StreamChunk, StreamEnd
from models import (ApprovalRequest, ContextSection, SpawnPayload, Ticket, Track, stream_tier3,
                    stream_tier4, tick_subtasks)
from tools import TOOL_SPECS


class TicketLife:
    """Mixin of ConductorEngine: one ticket from its spawn approval to its final status."""

    def _start_ticket(self, track: Track, ticket: Ticket, on_done: Callable[[str], None],
                      after: threading.Event | None = None) -> None:
        """Loop thread: take a worker slot, mark the ticket running, and hand its whole life
        (spawn approval, worker, commit, QA) to one executor thread. The thread reports back
        once, through call_soon_threadsafe, to `_ticket_done`: one hop out and one back per
        ticket, and no task or future chain on the loop for it. ``after``: a more critical
        ticket started with it, whose set-up goes first (see `_lead_first`)."""
        loop = asyncio.get_running_loop()
        self.cap.take()
        if self._in_worktrees(track):
            self._setups.begin(ticket.id)   # until its context is built (`_followers_go`)
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
        self._executor.submit(self._ticket_life, track, ticket, cancel,
                              after).add_done_callback(back)

    def _ticket_life(self, track: Track, ticket: Ticket, cancel: threading.Event,
                     after: threading.Event | None = None) -> None:
        """Executor thread: one ticket from its spawn approval to its final status. Every
        failure ends as the ticket's status with the reason (and a Tier 4 diagnosis); the
        loop saves and reports it in `_ticket_done`. In worktree mode the ticket works in its
        own tree; work that does not complete is kept on the ticket's branch only."""
        sid = stream_tier3(ticket.id)
        emit = self._emitter()
        tree: list[Any] = []          # the ticket's worktree, once open (until it is landed)
        try:
            if ticket.checkpoint:       # a phase's manual verification: the person's, no worker
                self._followers_go(ticket.id)    # and no set-up: nothing waits on the person
                self._checkpoint_life(track, ticket, cancel)
                return
            if self._resolved_by_person(track, ticket) or self._landed_before(track, ticket):
                emit(StreamEnd(stream_id=sid, state="done"))   # a retry after their own merge,
                return                                         # or a resume after the landing
            if after is not None:        # a more critical ticket's set-up goes first
                after.wait(LEAD_WAIT_S)
            if not self._attempts(track, ticket, cancel, tree):
                return       # refused: its tree (made before the question) goes in `finally`
            message = self._commit_message(ticket)
            if tree:
                sha = self._land(track, ticket, tree[0], cancel, message)
                if sha:
                    tree.clear()          # merged; its tree goes to the pool
            else:
                with self._written_lock:
                    files = sorted(self._written.pop(ticket.id, set()))
                sha = self._commit(ticket, files, message)
            if (self._git is not None or self._in_worktrees(track)) and not sha:
                # Evidence for a tick: in a git workspace a task is ticked only with the SHA
                # of the commit that did it; no change, no commit, and the task stays open.
                raise NoChange(f"the worker changed no file, so there is nothing to show for "
                               f"{ticket.id}: the task stays open (its answer: "
                               f"{self._scrub(ticket.result).strip()[:300]!r})")
            with self._lock:
                ticket.status = "completed"
                ticket.description = tick_subtasks(ticket.description)
                if sha:
                    ticket.commit_sha = sha
            emit(StreamEnd(stream_id=sid, state="done"))
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
            self._ticket_failed(track, ticket, e)
        finally:
            self._followers_go(ticket.id)
            self._close_worktree(ticket)
            if tree and not self._closed:    # not completed: its work stays on its own branch
                self._set_aside(track, ticket, tree[0], ticket.status)

    def _ticket_failed(self, track: Track, ticket: Ticket, e: Exception) -> None:
        sid = stream_tier3(ticket.id)
        emit = self._emitter()
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
        if isinstance(e, (BudgetExceeded, ChecksFailed)) or closing:
            return                   # a failed check was diagnosed already
        try:
            diagnosis = self.run_qa(track.id, ticket.id,
                                    f"the worker stopped with an error: {reason}", trace)
            with self._lock:
                ticket.result = "QA: " + self._scrub(diagnosis)
                ticket.diagnosis = self._scrub(diagnosis)
        except Exception as qa_err:
            emit(ErrorEvent(message=f"Tier 4 could not diagnose {ticket.id}: "
                                    f"{describe(qa_err)}",
                            stream_id=stream_tier4(ticket.id), track_id=track.id,
                            ticket_id=ticket.id))

    def _attempts(self, track: Track, ticket: Ticket, cancel: threading.Event,
                  tree: list[Any]) -> bool:
        """The worker, then the checks; a failed check goes to Tier 4 and to a fresh worker
        (attempt 2, 3, ...) through the spawn gate, up to 1 + max_repairs attempts. True when
        an attempt passed its checks; False when a spawn was refused (the status is set).
        ChecksFailed when the last attempt failed too."""
        max_attempts = 1 + self.settings.max_repairs
        with self._lock:
            attempt = ticket.attempts + 1     # > 1 when a killed run resumes between attempts
            check, diagnosis = (ticket.checks, ticket.diagnosis) if ticket.attempts else ("", "")
            if not ticket.attempts:
                ticket.checks = ticket.diagnosis = ""
        while True:
            if attempt > max_attempts:
                raise ChecksFailed(f"the checks failed after {attempt - 1} attempt(s); "
                                   f"Tier 4: {diagnosis or '(no diagnosis)'}")
            if not tree and self._in_worktrees(track):
                # the worker is shown the files of the tree it will edit (the track branch)
                tree.append(self._open_worktree(track, ticket))
            spawn = self._spawn_gate(track, ticket, cancel, attempt, check, diagnosis,
                                     tree[0] if tree else None)
            if spawn is None:
                return False
            prompt, context, model, step, retry_count, sections = spawn
            if cancel.is_set():
                raise Cancelled(f"{ticket.id} cancelled by the user")
            sid = stream_tier3(ticket.id)
            # queued, not written: it goes out with the worker's first request record
            self.comms.record("spawn", tier="Tier 3", stream_id=sid, track_id=track.id,
                              ticket_id=ticket.id, provider=self.provider("Tier 3").name,
                              model=model, direction="-",
                              data={"prompt": prompt, "context": context,
                                    "retry_count": retry_count, "attempt": attempt,
                                    "sections": prompts.section_summary(sections)},
                              wait=False)
            if attempt > 1:
                self._emitter()(StreamChunk(stream_id=sid, text=f"\n── attempt {attempt} of "
                                                               f"{max_attempts} ──\n"))
            result, ended, finish = self._run_worker(track.id, ticket.id, prompt, context, model,
                                                     cancel, step, retry_count)
            with self._lock:
                ticket.result = self._scrub(result)[-4000:]
            report = self._check_ticket(track, ticket, self._ws_for(ticket.id), ended, finish,
                                        cancel, prompt)
            with self._lock:
                ticket.attempts = attempt
                ticket.checks = report.text()[-4000:]
            if report.ok:
                if tree:     # its landing starts now: the state write asked for here waits
                    self._setups.begin(f"land:{ticket.id}")   # for it (engine/setups.py)
                self._save_soon(track)
                return True
            if cancel.is_set():
                raise Cancelled(f"{ticket.id} cancelled by the user")
            try:
                diagnosis = self._scrub(self.run_qa(
                    track.id, ticket.id, f"attempt {attempt} of {ticket.id} failed its checks: "
                                         f"{report.failed}", report.text()))
            except Cancelled:
                raise
            except Exception as qa_err:   # no diagnosis: the repair gets the check's report
                diagnosis = f"(Tier 4 could not diagnose: {describe(qa_err)})"
                self._emitter()(ErrorEvent(message=f"Tier 4 could not diagnose {ticket.id}: "
                                                   f"{describe(qa_err)}",
                                           stream_id=stream_tier4(ticket.id),
                                           track_id=track.id, ticket_id=ticket.id))
            with self._lock:
                ticket.diagnosis = diagnosis
            self._save_soon(track)        # a killed run resumes at the next attempt
            check = report.text()
            if attempt >= max_attempts:
                raise ChecksFailed(f"{report.failed} (after {attempt} attempt"
                                   f"{'s' if attempt > 1 else ''}); Tier 4: {diagnosis}")
            attempt += 1

    def _spawn_gate(self, track: Track, ticket: Ticket, cancel: threading.Event, attempt: int,
                    check: str, diagnosis: str, root: Any
                    ) -> tuple[str, str, str, bool, int, list[ContextSection]] | None:
        """The person's spawn approval of one attempt: the worker's context as labelled
        sections (issue 19: the ticket last; a repair's failed check and Tier 4's diagnosis
        just before it), editable; what is approved is what is sent. (prompt, context, model,
        step mode, retry count, sections), or None when refused (the ticket's status then
        says why)."""
        sid = stream_tier3(ticket.id)
        sections = self._worker_sections(track, ticket, root=self._tb.workspace_path(root)
                                         if root is not None and self._tb is not None else None)
        self._followers_go(ticket.id)      # set up: the tickets started with it go on
        if attempt > 1:
            sections = _with_repair(sections, attempt, check, diagnosis)
        with self._lock:
            prompt = next(s.text for s in sections if s.kind == "ticket")
            model = self.settings.model_for("Tier 3", ticket.model_override)
            step = ticket.step_mode or self.settings.step_mode
            retry_count = ticket.retry_count
            description = ticket.description
        if self.settings.approvals.spawn == "ask":
            title = (f"Spawn a worker for {ticket.id}" if attempt == 1 else
                     f"Repair {ticket.id}: spawn attempt {attempt}")
            asked = SpawnPayload(prompt=prompt, context="", model=model, description=description,
                                 attempt=attempt, check=check, diagnosis=diagnosis,
                                 sections=sections)
            decision = self.approvals.ask_from_thread(ApprovalRequest(
                kind="spawn", title=title, stream_id=sid, track_id=track.id,
                ticket_id=ticket.id, payload=asked))
            if not decision.approved:
                self._refused(ticket, cancel, attempt, diagnosis, decision.reason)
                return None
            p = decision.payload
            if isinstance(p, SpawnPayload):
                sections = p.request_sections(asked) or sections
                if attempt > 1 and p.diagnosis != diagnosis:     # the person's brief wins
                    diagnosis = p.diagnosis
                    sections = _with_repair(sections, attempt, check, diagnosis)
                if p.model and self.settings.provider_for("Tier 3") != "offline":
                    model = p.model
        if attempt > 1:
            with self._lock:
                ticket.diagnosis = diagnosis      # as the person left it
        self._note_context(sid, sections)
        # the request is the sections, in order (the system prompt kept apart)
        return prompts.render_sections(sections)[1], "", model, step, retry_count, sections

    def _refused(self, ticket: Ticket, cancel: threading.Event, attempt: int, diagnosis: str,
                 reason: str) -> None:
        with self._lock:
            if self._closed:      # rejected because the app is closing: interrupted
                ticket.status = "todo"
                ticket.blocked_reason = ""
            elif cancel.is_set():  # withdrawn by cancel_ticket: cancelled, not skipped
                ticket.status = "cancelled"
                ticket.blocked_reason = reason or "cancelled by the user"
            elif attempt > 1:      # the person stopped the repairs
                ticket.status = "failed"
                ticket.blocked_reason = self._scrub(
                    f"repair stopped by the person after attempt {attempt - 1}"
                    + (f" ({reason})" if reason else "") + f"; Tier 4: {diagnosis}")
            else:
                ticket.status = "skipped"
                ticket.blocked_reason = "spawn rejected" + (f": {reason}" if reason else "")

    def _save_soon(self, track: Track) -> None:
        """Executor thread: have the loop save the track (its writer batches saves)."""
        loop = self.loop
        if loop is not None and not self._closed:
            try:
                loop.call_soon_threadsafe(self._save, track)
            except RuntimeError:
                if not self._closed:
                    raise

    def _commit_message(self, ticket: Ticket) -> str:
        first_line = ticket.description.strip().splitlines()[0] if ticket.description.strip() else ""
        return f"{ticket.id}: {first_line[:64]}\n\nClutch worker for ticket {ticket.id}.\n"

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
        self._followers_go(ticket.id)    # one cancelled before it ran releases them too
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
        """One stateless Tier 3 worker; its final answer (see `_run_worker`); its stream ends."""
        final = self._run_worker(track_id, ticket_id, prompt, context, model, cancel, step_mode,
                                 retry_count)[0]
        self._emitter()(StreamEnd(stream_id=stream_tier3(ticket_id), state="done"))
        return final

    def _run_worker(self, track_id: str, ticket_id: str, prompt: str, context: str,
                    model: str, cancel: threading.Event, step_mode: bool = False,
                    retry_count: int = 0) -> tuple[str, bool, str]:
        """One stateless Tier 3 worker: a fresh session, the tool loop, the final summary;
        (final answer, whether its last turn ended normally, how it ended). The stream goes
        on (the checks and the merge report into it); the ticket's life ends it. Runs in an
        executor thread; reaches the queue only through put_threadsafe."""
        sid = stream_tier3(ticket_id)
        session = self._session_for(
            "Tier 3", sid, prompts.TIER3_SYSTEM, track_id=track_id, ticket_id=ticket_id,
            model_override=model if self.settings.provider_for("Tier 3") != "offline" else None,
            tools=TOOL_SPECS, tool_handler=lambda call: self._handle_tool(session, call),
            step_gate=self._step_gate if step_mode else None, cancel=cancel)
        text = prompt + ("\n" + context if context else "")
        try:
            final = session.send(text)
            ended = session.ended_normally
            finish = str(session.last_finish or "")
        finally:
            self._retire(session)
            # the handler closes over the session: without this cycle, the session, its history
            # and its cancel flag are freed now, not by a later garbage collection
            session.tool_handler = None
        if retry_count:
            session.log("log", message=f"retry {retry_count} finished")
        return final, ended, finish

    def _commit(self, ticket: Ticket, files: list[str], message: str) -> str:
        """Shared-directory mode: commit exactly the files this ticket's worker wrote. Commits
        are serialised and stage only those paths, so a parallel worker's half-written files
        never ride along."""
        if self._git is None or not files:
            return ""
        with self._git_lock:
            return self._git.commit_paths(files, message)

    # =========================================================================================
    # per-ticket actions


REPAIR_LABEL = "Repair: the failed check and Tier 4's diagnosis"


def _with_repair(sections: list[ContextSection], attempt: int, check: str,
                 diagnosis: str) -> list[ContextSection]:
    """The sections with the repair brief just before the ticket (one, replacing any)."""
    out = [s for s in sections if s.label != REPAIR_LABEL]
    at = next((i for i, s in enumerate(out) if s.kind == "ticket"), len(out))
    out.insert(at, prompts.make_section(REPAIR_LABEL, "failure",
                                        prompts.repair_section(attempt, check, diagnosis)))
    return out
