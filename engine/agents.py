"""Agents: a fresh session per agent, its retirement, Tier 4 QA, the step and budget gates,
and the key scrubber for what the engine itself shows or stores.

Threads: everything here runs on executor threads (the agent's own), except `_scrub`, which
any thread may call. State owned: none of its own; sessions live in the SessionRegistry
(`_sessions`, its own lock), the budget question is asked one at a time (`_budget_lock`).
"""
from __future__ import annotations

from typing import Any

import prompts
from ai_client import AgentSession, Scrubber
from engine.errors import BudgetExceeded, StepStopped
from events import StreamEnd
from models import ApprovalRequest, BudgetPayload, StepPayload, stream_tier4


class Agents:
    """Mixin of ConductorEngine: agent sessions and the gates they pass before each step."""

    def _session_for(self, tier: str, stream_id: str, system: str, schema: Any = None, *,
                     track_id: str = "", ticket_id: str = "", model_override: str | None = None,
                     **kw: Any) -> AgentSession:
        """A fresh session (executor thread)."""
        s = self.settings
        model = s.model_for(tier, model_override)
        session = AgentSession(self.provider(tier), tier=tier, model=model, stream_id=stream_id,
                               system=system, comms=self.comms,
                               price=s.price_for(model, s.provider_for(tier)),
                               track_id=track_id, ticket_id=ticket_id, emit=self._emitter(),
                               before_request=self._budget_gate, response_schema=schema,
                               max_rounds=s.max_tool_rounds, context_window=s.context_window,
                               on_retry=self._on_provider_retry, **kw)
        self._sessions.add(session)
        return session

    def _retire(self, session: AgentSession) -> None:
        """An agent finished: keep its context-window figures, drop its history."""
        self._sessions.retire(session)

    def _on_provider_retry(self, info: dict[str, Any]) -> None:
        if info.get("status") == 429:
            self.cap.note_rate_limited(float(info.get("delay_s") or 1.0))
            if self.loop is not None:
                self.loop.call_soon_threadsafe(self._workers_changed)

    def _scrubber(self) -> Scrubber:
        """The comms log's scrubber (the environment's keys) with the provider's own key."""
        provider = self._provider
        cached = self._scrub_cache        # (provider, scrubber): one tuple, swapped whole
        if cached is not None and cached[0] is provider:
            return cached[1]
        base = self.comms.scrubber
        own = getattr(provider, "scrubber", None)   # a provider without a key has none
        s = base.merged(own) if isinstance(own, Scrubber) else base
        self._scrub_cache = (provider, s)
        return s

    def _scrub(self, text: str) -> str:
        """Text the engine shows, stores or sends to a model, with every key piece removed."""
        s = self._scrubber()
        return s.scrub(text) if s and text else text

    def run_qa(self, track_id: str, ticket_id: str, what: str, output: str) -> str:
        """Tier 4: a stateless diagnosis of a failure (executor thread). What it reads (a
        command's output, a trace) is scrubbed of keys before the model sees it. It also reads
        the files the failure touches (issue 19: those the output names, then the ticket's
        target files), as sections before the failure."""
        sid = stream_tier4(ticket_id)
        sections = self._qa_sections(track_id, ticket_id, self._scrub(what), self._scrub(output))
        self._note_context(sid, sections)
        system, user = prompts.render_sections(sections)
        session = self._session_for("Tier 4", sid, system, track_id=track_id, ticket_id=ticket_id)
        session.max_rounds = 1
        try:
            text = session.send(user)
        finally:
            self._retire(session)
        self._emitter()(StreamEnd(stream_id=sid, state="done"))
        return text

    def _step_gate(self, session: AgentSession, round_no: int) -> None:
        last = next((m.text for m in reversed(session.history) if m.role == "model"), "")
        d = self.approvals.ask_from_thread(ApprovalRequest(
            title=f"{session.ticket_id}: continue to step {round_no + 1}?",
            stream_id=session.stream_id, track_id=session.track_id, ticket_id=session.ticket_id,
            payload=StepPayload(round=round_no, last=last[-2000:])))
        if not d.approved:
            raise StepStopped(f"stopped before step {round_no + 1} by the user"
                              + (f": {d.reason}" if d.reason else ""))

    def _budget_gate(self, session: AgentSession) -> None:
        """Before each request: pause and ask when the epic's budget is reached."""
        def over() -> bool:
            s = self.settings
            if not s.budget_usd and not s.budget_tokens:
                return False         # no budget: no need to read the log's total (its lock)
            total = self.comms.total()
            return bool((s.budget_usd and total.cost_usd >= s.budget_usd)
                        or (s.budget_tokens and total.total_tokens >= s.budget_tokens))
        if not over():
            return
        with self._budget_lock:      # one question at a time, however many workers hit it
            if not over():
                return
            s, total = self.settings, self.comms.total()
            d = self.approvals.ask_from_thread(ApprovalRequest(
                title="Budget reached: raise it to continue",
                stream_id=session.stream_id, track_id=session.track_id,
                ticket_id=session.ticket_id,
                payload=BudgetPayload(spent_usd=round(total.cost_usd, 6),
                                      budget_usd=s.budget_usd, spent_tokens=total.total_tokens,
                                      budget_tokens=s.budget_tokens)))
            if not d.approved:
                raise BudgetExceeded("the budget is reached and the user chose to stop"
                                     + (f": {d.reason}" if d.reason else ""))
            p = d.payload if isinstance(d.payload, BudgetPayload) else None
            new_usd = float(p.budget_usd) if p else s.budget_usd
            new_tokens = int(p.budget_tokens) if p else s.budget_tokens
            if (new_usd and new_usd <= total.cost_usd) or (new_tokens and new_tokens <= total.total_tokens):
                raise BudgetExceeded("the budget was approved but not raised above what is spent")
            self.update_settings(s.model_copy(update={"budget_usd": new_usd,
                                                      "budget_tokens": new_tokens}))
