"""ApprovalBroker: every question the engine puts to the person, and its answer.

Threads: `ask` runs on the loop thread (it awaits the answer's future); `ask_from_thread`
blocks an executor thread on it; `resolve`, `approve_all`, `pending` and `cancel_for` are
called from any thread (GUI, API, CLI) and settle the future on the loop through
`call_soon_threadsafe`. State owned: the pending requests with their futures, and the ids
answered lately, under its own lock (`_lock`); nothing else takes it.
"""
from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import threading
from collections.abc import Callable
from typing import Any

from ai_client import CommsLog
from engine.errors import ApprovalAlreadyResolved, ApprovalNotFound, EngineError
from events import ApprovalRequested, ApprovalResolved, Event
from models import (ApprovalDecision, ApprovalEditError, ApprovalRequest, Approved, Denied,
                    edit_payload)

_REMEMBERED = 4096
_CLOSED_POLL_S = 0.5      # how often a blocked thread looks whether the app has closed


class ApprovalBroker:
    def __init__(self, comms: CommsLog, emit: Callable[[Event], Any],
                 closed: Callable[[], bool], auto_approve: bool = False) -> None:
        self._comms = comms
        self._emit = emit                 # the loop thread's emit
        self._closed = closed
        self.auto_approve = auto_approve
        self.loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._pending: dict[str, tuple[ApprovalRequest, asyncio.Future[ApprovalDecision]]] = {}
        # ids of approvals answered lately, so a second answer is told so (the oldest are
        # forgotten: a very late second answer is told the approval is not pending)
        self._resolved: collections.OrderedDict[str, None] = collections.OrderedDict()

    async def ask(self, req: ApprovalRequest) -> ApprovalDecision:
        """Await the person's decision on a request (loop thread)."""
        if self.auto_approve:
            decision: ApprovalDecision = Approved(reason="--yes", source="auto")
            self._record(req, decision)
            return decision
        fut: asyncio.Future[ApprovalDecision] = asyncio.get_running_loop().create_future()
        with self._lock:
            self._pending[req.id] = (req, fut)
        self._emit(ApprovalRequested(request=req))
        try:
            decision = await fut
        finally:
            with self._lock:
                self._pending.pop(req.id, None)
        self._record(req, decision)
        self._emit(ApprovalResolved(approval_id=req.id, decision=decision))
        return decision

    def _record(self, req: ApprovalRequest, d: ApprovalDecision) -> None:
        tier = "Tier 3" if req.ticket_id else "Tier 1"
        self._comms.record("approval", tier=tier, stream_id=req.stream_id, track_id=req.track_id,
                           ticket_id=req.ticket_id, direction="-",
                           data={"approval_id": req.id, "kind": req.kind, "title": req.title,
                                 "approved": d.approved, "reason": d.reason, "source": d.source,
                                 "requested": req.payload.model_dump(),
                                 "edited": d.payload.model_dump() if d.payload else None},
                           wait=False)

    def ask_from_thread(self, req: ApprovalRequest) -> ApprovalDecision:
        """Block an executor thread until the person decides. The app closing answers for
        them: rejected, "the app is closing" (the question was cut off with its loop)."""
        if self.loop is None:
            raise RuntimeError("no conductor loop to ask for approval on")
        question = self.ask(req)
        try:
            fut = asyncio.run_coroutine_threadsafe(question, self.loop)
        except RuntimeError:            # the loop is closed already: the question never went
            question.close()
            if self._closed():
                return Denied(reason="the app is closing", source="engine")
            raise
        while True:
            try:
                return fut.result(timeout=_CLOSED_POLL_S)
            except concurrent.futures.TimeoutError:
                # a question posted as the loop stopped is never run, so never answered: the
                # app closing answers it, or this thread would hold the interpreter's exit
                if self._closed() and (self.loop.is_closed() or not self.loop.is_running()):
                    fut.cancel()
                    question.close()    # its loop is gone: closed, not left never awaited
                    return Denied(reason="the app is closing", source="engine")
            except concurrent.futures.CancelledError:
                if not self._closed():
                    raise
                return Denied(reason="the app is closing", source="engine")

    def pending(self) -> list[ApprovalRequest]:
        with self._lock:
            return [req for req, _ in self._pending.values() if req.id not in self._resolved]

    def resolve(self, approval_id: str, decision: ApprovalDecision) -> None:
        """Answer an approval (any thread). An Approved decision's `edits` (a partial dict, as
        the API and the CLI send) or `payload` (a whole typed payload, as the GUI sends) is
        merged over the request's payload and checked; a bad edit raises EngineError and the
        approval stays pending. Raises ApprovalNotFound for an unknown id and
        ApprovalAlreadyResolved when it was answered before."""
        with self._lock:
            if approval_id in self._resolved:
                raise ApprovalAlreadyResolved(f"approval {approval_id} was already answered")
            item = self._pending.get(approval_id)
            if item is None:
                raise ApprovalNotFound(f"no pending approval {approval_id}")
            req, fut = item
            if isinstance(decision, Approved) and (decision.payload is not None
                                                   or decision.edits is not None):
                try:
                    final = edit_payload(req.payload, decision.payload)
                    final = edit_payload(final, decision.edits)
                    final.check_edit(req.payload)
                except ApprovalEditError as e:
                    raise EngineError(str(e)) from None   # refused: still pending
                decision = decision.model_copy(update={"payload": final})
            self._resolved[approval_id] = None
            while len(self._resolved) > _REMEMBERED:
                self._resolved.popitem(last=False)
        assert self.loop is not None

        def settle() -> None:
            if not fut.done():
                fut.set_result(decision)
        self.loop.call_soon_threadsafe(settle)

    def approve_all(self, source: str = "user") -> int:
        """Approve every request pending right now, once. Not a standing grant."""
        n = 0
        for req in self.pending():
            try:
                self.resolve(req.id, Approved(source=source, reason="approve all"))
                n += 1
            except (ApprovalNotFound, ApprovalAlreadyResolved):
                continue   # answered meanwhile by someone else: that answer stands
        return n

    def cancel_for(self, ticket_id: str, reason: str) -> None:
        """Deny every pending question of one ticket (its cancel)."""
        for req in self.pending():
            if req.ticket_id == ticket_id:
                try:
                    self.resolve(req.id, Denied(reason=reason, source="engine"))
                except (ApprovalNotFound, ApprovalAlreadyResolved):
                    continue   # answered meanwhile: the worker sees its cancel flag anyway

    def deny_all_closing(self) -> None:
        """Loop thread, at shutdown: every pending question is rejected so blocked threads
        return."""
        with self._lock:
            items = list(self._pending.values())
            self._pending.clear()
        for _req, fut in items:
            if not fut.done():
                fut.set_result(Denied(reason="the app is closing", source="engine"))
