"""AgentSession: one agent's history, the tool loop, the rules for how each answer ended, and
usage tagged into the comms log.

Threads: one session is driven by one executor thread at a time (its agent's); it reaches the
GUI and the event loop only through `emit` (the engine's thread-safe emitter). State owned: the
session's history, usage, counters and `last_finish`.
"""
from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from events import Event, StreamChunk, UsageEvent
from models import Price, Usage, cost_of
from providers.base import (Cancelled, Finish, Message, ModelRequest, ModelResponse, Provider,
                            ProviderError, RetryFn, RoundLimit, ToolCall, ToolReturn,
                            estimate_tokens)
from providers.comms import CommsLog
from providers.endings import CONTINUE_PROMPT, Action, EndingRules, EndingTracker
from providers.secrets import Scrubber


@dataclass
class ToolOutcome:
    """What the tool handler did with a call: the result the model sees, and the arguments that
    actually ran (after the user's edits)."""
    result: dict[str, Any]
    args: dict[str, Any]


ToolHandler = Callable[[ToolCall], ToolOutcome]


class AgentSession:
    """One agent: its own history, the tool loop, usage tagged into the comms log.

    `last_finish` is how the model's last answer ended (a `Finish`); after send() returns it is
    always `Finish.STOP` (`ended_normally` is True): every other ending is handled by the rules
    of providers/endings.py (asked again, continued) or raised as a ProviderError naming it.

    Tool results and stream text pass through `scrubber` (the comms log's, plus the
    provider's own key), so no piece of a key reaches the model, the stream or the log.
    """

    def __init__(self, provider: Provider, *, tier: str, model: str, stream_id: str, system: str,
                 comms: CommsLog, price: Price, track_id: str = "", ticket_id: str = "",
                 tools: Sequence[Any] = (), tool_handler: ToolHandler | None = None,
                 max_rounds: int = 12, emit: Callable[[Event], Any] | None = None,
                 before_request: Callable[["AgentSession"], None] | None = None,
                 step_gate: Callable[["AgentSession", int], None] | None = None,
                 cancel: threading.Event | None = None,
                 response_schema: type[BaseModel] | None = None,
                 context_window: int = 1_048_576,
                 on_retry: RetryFn | None = None,
                 max_output_tokens: int | None = None,
                 endings: EndingRules | None = None,
                 scrubber: Scrubber | None = None):
        self.provider = provider
        self.on_retry = on_retry
        self.tier = tier
        self.model = model
        self.stream_id = stream_id
        self.system = system
        self.comms = comms
        self.price = price
        self.track_id = track_id
        self.ticket_id = ticket_id
        self.tools = tuple(tools)
        self.tool_handler = tool_handler
        self.max_rounds = max_rounds
        self.emit = emit
        self.before_request = before_request
        self.step_gate = step_gate
        self.cancel = cancel
        self.response_schema = response_schema
        self.context_window = context_window
        self.max_output_tokens = max_output_tokens
        self.endings = endings or EndingRules()
        if scrubber is None:
            scrubber = getattr(comms, "scrubber", None)
            if scrubber is None:
                scrubber = Scrubber()
            own = getattr(provider, "scrubber", None)
            if isinstance(own, Scrubber) and own:
                scrubber = scrubber.merged(own)
        self.scrubber = scrubber
        self.history: list[Message] = []
        self.usage = Usage()
        self.last_prompt_tokens = 0
        self.streamed_chars = 0
        self.rounds = 0
        self.last_finish: Finish | None = None     # how the last answer ended
        self.requests_failed = 0                   # cut / refused calls booked as failures
        self._sent_upto = 0                        # history messages already in a request log
        self._held = ""                            # stream text held back by the scrub

    @property
    def ended_normally(self) -> bool:
        """The model's last answer ended normally (STOP, or tool calls)."""
        return self.last_finish is not None and self.last_finish.normal

    # -- helpers ----------------------------------------------------------------------------
    def _tags(self) -> dict[str, str]:
        return {"tier": self.tier, "stream_id": self.stream_id, "track_id": self.track_id,
                "ticket_id": self.ticket_id, "provider": self.provider.name, "model": self.model}

    def log(self, kind: str, direction: str = "", usage: Usage | None = None,
            **data: Any) -> dict[str, Any]:
        if self.scrubber is not getattr(self.comms, "scrubber", None) and self.scrubber:
            data = self.scrubber.scrub_obj(data)      # secrets the comms log does not know
        return self.comms.record(kind, direction=direction, usage=usage, data=data, **self._tags())

    def _check_cancel(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled(f"{self.stream_id} cancelled by the user")

    def _on_chunk(self, text: str) -> None:
        self._check_cancel()
        if not text:
            return
        self.streamed_chars += len(text)
        if self.emit is None:
            return
        if self.scrubber:
            # a key piece may straddle two chunks: scrub with what was held back, and hold
            # back the tail that could begin one (a few characters, until the next chunk)
            text = self.scrubber.scrub(self._held + text)
            k = self.scrubber.held_suffix(text)
            text, self._held = (text[:-k], text[-k:]) if k else (text, "")
            if not text:
                return
        self.emit(StreamChunk(stream_id=self.stream_id, text=text))

    def _flush_stream(self) -> None:
        """Emit what the stream scrub held back (at the end of an answer or a tool step)."""
        if self._held and self.emit is not None:
            held, self._held = self._held, ""
            self.emit(StreamChunk(stream_id=self.stream_id, text=held))

    def _on_retry(self, info: dict[str, Any]) -> None:
        self.log("retry", direction="-", **info)
        if self.on_retry is not None:
            self.on_retry(info)

    # -- the loop ---------------------------------------------------------------------------
    def send(self, text: str) -> str:
        """Send a user message and run the tool loop until the model answers without tool
        calls, with a normal end. Returns the final text. Raises ProviderError (naming the
        ending when the answer did not end normally), Cancelled, RoundLimit."""
        self.history.append(Message(role="user", text=text))
        self._sent_upto = len(self.history) - 1
        tracker = EndingTracker(self.endings, tier=self.tier, stream_id=self.stream_id,
                                worker=bool(self.tools), structured=self.response_schema is not None)
        for _ in range(self.max_rounds):
            self._check_cancel()
            if self.before_request is not None:
                self.before_request(self)
            if self.rounds > 0 and self.step_gate is not None:
                self.step_gate(self, self.rounds)
            resp, action = self._answer(tracker)
            self.rounds += 1
            if self.scrubber:                 # the answer is kept, returned, sent back: scrubbed
                resp.text = self.scrubber.scrub(resp.text)
            self.history.append(Message(role="model", text=resp.text,
                                        tool_calls=list(resp.tool_calls),
                                        thought_signature=resp.thought_signature))
            if action is Action.CONTINUE:
                self.history.append(Message(role="user", text=CONTINUE_PROMPT))
                continue
            if not resp.tool_calls:
                return resp.text
            self._run_tools(resp.tool_calls)
        raise RoundLimit(f"{self.stream_id} stopped after {self.max_rounds} rounds without a "
                         f"final answer (raise 'max tool rounds' in Settings if the work needs more)")

    def _answer(self, tracker: EndingTracker) -> tuple[ModelResponse, Action]:
        """One turn's answer, asked again as the ending rules say. Returns the response to keep
        and whether it is accepted or to be continued; raises when the rules give up."""
        limit = self.max_output_tokens
        again = False
        while True:
            if again:                       # a retry is a request too: the budget gate sees it
                self._check_cancel()
                if self.before_request is not None:
                    self.before_request(self)
            again = True
            try:
                resp = self._request(limit)
            except ProviderError as e:
                self.last_finish = e.finish
                decision = tracker.on_error(e)
                if decision.action is not Action.RETRY:
                    raise
                self._note(decision.note)
                continue
            self.last_finish = resp.finish
            decision = tracker.on_response(resp, limit)
            if decision.action is Action.FAIL:
                error = decision.error or ProviderError(
                    f"{self.stream_id}: the answer ended with {resp.finish_reason}",
                    finish=resp.finish)
                self.log("error", direction="-", error=error.message, finish=str(resp.finish))
                raise error
            if decision.action is Action.RETRY:
                limit = decision.max_output_tokens
                self._note(decision.note)
                continue
            if decision.action is Action.CONTINUE:
                self._note(decision.note)
            return resp, decision.action

    def _note(self, note: str) -> None:
        """A line on the stream saying why the turn is asked again (the text shown stays)."""
        if note:
            self._on_chunk(note)

    def _request(self, limit: int | None) -> ModelResponse:
        """One model call: logged, its usage booked (a failed call's as a failed request)."""
        req = ModelRequest(tier=self.tier, model=self.model, system=self.system,
                           messages=list(self.history), tools=self.tools,
                           response_schema=self.response_schema, stream_id=self.stream_id,
                           track_id=self.track_id, ticket_id=self.ticket_id,
                           max_output_tokens=limit)
        new = [m.to_dict() for m in self.history[self._sent_upto:]]
        req_data: dict[str, Any] = {"round": self.rounds, "messages": new}
        if self.rounds == 0 and self._sent_upto == 0:
            req_data["system"] = self.system
        if limit:
            req_data["max_output_tokens"] = limit
        self.log("request", direction="out", **req_data)
        self._sent_upto = len(self.history)
        streamed_before = self.streamed_chars
        try:
            resp = self.provider.generate(req, self._on_chunk, self._on_retry)
        except ProviderError as e:
            e.streamed = e.streamed or self.streamed_chars > streamed_before
            if self.scrubber:
                e.message = self.scrubber.scrub(e.message)
                e.args = (e.message,)
            cost = None
            if e.usage is not None:          # a cut or refused call still cost its tokens
                cost = e.usage.model_copy(update={"cost_usd": cost_of(e.usage, self.price),
                                                  "requests": max(e.usage.requests, 1)})
                self.usage = self.usage + cost
                self.requests_failed += 1
            self.log("error", direction="in", usage=cost, error=e.message, status=e.status,
                     streamed=e.streamed, failed=True,
                     finish=str(e.finish) if e.finish is not None else None)
            raise
        finally:
            self._flush_stream()
        usage = resp.usage.model_copy(update={
            "cost_usd": cost_of(resp.usage, self.price),
            "requests": max(resp.usage.requests, 1)})
        self.usage = self.usage + usage
        self.last_prompt_tokens = usage.input_tokens
        self.log("response", direction="in", usage=usage, text=resp.text,
                 tool_calls=[{"id": c.id, "name": c.name, "args": c.args}
                             for c in resp.tool_calls],
                 finish_reason=resp.finish_reason, finish=str(resp.finish))
        if self.emit is not None:
            self.emit(UsageEvent(tier=self.tier, stream_id=self.stream_id,
                                 track_id=self.track_id, ticket_id=self.ticket_id,
                                 model=self.model, usage=usage))
        return resp

    def _run_tools(self, calls: list[ToolCall]) -> None:
        if self.tool_handler is None:
            raise ProviderError(f"{self.stream_id}: the model called tools but this agent "
                                f"has none")
        returns = []
        for call in calls:
            self._check_cancel()
            self.log("tool_call", direction="-", id=call.id, name=call.name, args=call.args)
            self._on_chunk(f"\n→ {call.name}({_brief_args(call.args)})\n")
            outcome = self.tool_handler(call)
            result = self.scrubber.scrub_obj(outcome.result) if self.scrubber else outcome.result
            self.log("tool_result", direction="-", id=call.id, name=call.name,
                     args=outcome.args, result=_clip_result(result))
            self._on_chunk(_brief_result(ToolOutcome(result, outcome.args)) + "\n")
            self._flush_stream()
            returns.append(ToolReturn(call_id=call.id, name=call.name, result=result))
        self.history.append(Message(role="tool", tool_returns=returns))


def _brief_args(args: dict[str, Any], limit: int = 120) -> str:
    """One line of a tool call's arguments for the stream: long strings are shortened."""
    parts = []
    for k, v in args.items():
        if isinstance(v, str):
            one = v.replace("\n", "⏎")
            v = one if len(one) <= 60 else f"{one[:40]}… ({len(v)} chars)"
            parts.append(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}")
        else:
            parts.append(f"{k}={json.dumps(v, default=str)[:60]}")
    text = ", ".join(parts)
    return text if len(text) <= limit else text[:limit] + "…"


def _brief_result(outcome: ToolOutcome) -> str:
    r = outcome.result
    if r.get("rejected"):
        return f"  ✗ {r.get('error', 'rejected')}"
    if not r.get("ok", True):
        return f"  ✗ {str(r.get('error', ''))[:200]}"
    out = str(r.get("output", ""))
    first = out.strip().splitlines()[0] if out.strip() else "ok"
    code = f" (exit {r['exit_code']})" if r.get("exit_code") is not None else ""
    more = f" … {len(out)} chars" if len(out) > len(first) + 1 else ""
    return f"  ✓ {first[:160]}{code}{more}"


def _clip_result(result: dict[str, Any], limit: int = 4000) -> dict[str, Any]:
    out = {}
    for k, v in result.items():
        if isinstance(v, str) and len(v) > limit:
            out[k] = v[:limit] + f"... [{len(v) - limit} more characters]"
        else:
            out[k] = v
    return out


def get_history_bleed_stats(session: AgentSession) -> dict[str, Any]:
    """How much of the context window the session's history uses, by role, and the headroom.

    `used_tokens` is the provider-reported prompt size of the last request when there is one
    (exact), else the estimate; `level` is green below 60 %, amber below 85 %, red above."""
    by_role = {"system": estimate_tokens(session.system), "user": 0, "model": 0, "tool": 0}
    for m in session.history:
        t = estimate_tokens(m.text)
        for c in m.tool_calls:
            t += estimate_tokens(json.dumps(c.args, default=str)) + 4
        for r in m.tool_returns:
            t += estimate_tokens(json.dumps(r.result, default=str)) + 4
        by_role[m.role] = by_role.get(m.role, 0) + t
    estimated = sum(by_role.values())
    used = session.last_prompt_tokens or estimated
    limit = session.context_window
    ratio = used / limit if limit else 1.0
    return {"stream_id": session.stream_id, "context_window": limit, "used_tokens": used,
            "estimated_tokens": estimated, "reported_prompt_tokens": session.last_prompt_tokens,
            "headroom_tokens": max(limit - used, 0), "utilisation": ratio,
            "level": "green" if ratio < 0.6 else "amber" if ratio < 0.85 else "red",
            "by_role": by_role, "messages": len(session.history)}
