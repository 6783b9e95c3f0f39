"""The provider seam: messages, requests, responses, how a turn ended, errors, token estimates.

Every provider (offline, function, Gemini, the next ones) speaks these types, and reports how
each answer ended as a `Finish` on the response (or on the ProviderError that cut it), so the
rules for each ending live once, in providers/endings.py, not once per vendor.

Threads: any. Everything here is plain data; `ToolsTextCache` is the only object with state
(its last rendered tools), replaced by one reference assignment, safe to share.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from pydantic import BaseModel

from models import Usage


class Finish(StrEnum):
    """How a model's answer ended, in every provider's terms.

    STOP and TOOL_CALLS are the normal endings (the model finished its turn); every other one
    means the answer is not whole and must never be taken as a final answer.
    """
    STOP = "stop"                   # a natural end (Gemini STOP, OpenAI stop, end_turn)
    TOOL_CALLS = "tool_calls"       # the turn ends with tool calls to run
    MAX_TOKENS = "max_tokens"       # the output token limit cut the answer
    CUT = "cut"                     # the stream ended without a finish reason (or broke off)
    MALFORMED = "malformed"         # the model produced a function call the API could not parse
    SAFETY = "safety"               # a filter stopped the answer (or blocked the prompt)
    OTHER = "other"                 # any other reason the provider gave

    @property
    def normal(self) -> bool:
        return self in (Finish.STOP, Finish.TOOL_CALLS)


# ---------------------------------------------------------------------------------------------
# Messages, requests, responses, errors
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    args: dict[str, Any]
    # Gemini 3 needs a function call's thought signature sent back with it in the history.
    thought_signature: bytes | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class ToolReturn:
    call_id: str
    name: str
    result: dict[str, Any]


@dataclass
class Message:
    role: str  # "user" | "model" | "tool"
    text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_returns: list[ToolReturn] = field(default_factory=list)
    # A model turn's thought signature that came on a part other than a function call (e.g. a
    # trailing empty text part) in a turn with no function call: sent back on its text.
    thought_signature: bytes | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"role": self.role}
        if self.text:
            d["text"] = self.text
        if self.tool_calls:
            d["tool_calls"] = [{"id": c.id, "name": c.name, "args": c.args} for c in self.tool_calls]
        if self.tool_returns:
            d["tool_returns"] = [{"id": r.call_id, "name": r.name, "result": r.result}
                                 for r in self.tool_returns]
        return d


class ToolDecl(Protocol):
    name: str
    description: str
    parameters: dict[str, Any]


@dataclass
class ModelRequest:
    tier: str
    model: str
    system: str
    messages: list[Message]
    tools: Sequence[Any] = ()                     # ToolDecl-shaped objects
    response_schema: type[BaseModel] | None = None
    stream_id: str = ""
    track_id: str = ""
    ticket_id: str = ""
    max_output_tokens: int | None = None          # None: the provider's default


@dataclass
class ModelResponse:
    text: str
    tool_calls: list[ToolCall] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    model: str = ""
    finish_reason: str = "STOP"                   # the provider's own word, for the comms log
    # How the answer ended in every provider's terms; None: from finish_reason and tool_calls
    # (STOP -> STOP, or TOOL_CALLS when there are calls; MAX_TOKENS; anything else OTHER).
    finish: Finish | None = None
    thought_signature: bytes | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.finish is None:
            raw = (self.finish_reason or "").upper()
            self.finish = (Finish.MAX_TOKENS if raw in ("MAX_TOKENS", "LENGTH") else
                           Finish.MALFORMED if raw == "MALFORMED_FUNCTION_CALL" else
                           Finish.OTHER if raw not in ("STOP", "") else
                           Finish.TOOL_CALLS if self.tool_calls else Finish.STOP)
        else:
            self.finish = Finish(self.finish)


class ProviderError(Exception):
    """A model call failed. `retryable` says whether trying again could help; `streamed` that
    some text had already reached the stream when it failed; `usage` what the failed call
    still cost (a cut stream's partial usage), when the API said."""

    def __init__(self, message: str, *, status: int | None = None, retryable: bool = False,
                 streamed: bool = False, retry_after: float | None = None,
                 usage: Usage | None = None, finish: Finish | None = None):
        super().__init__(message)
        # how the answer ended when the error is an ending (CUT, MAX_TOKENS, MALFORMED,
        # SAFETY); None for a failed call (HTTP error, bad key, network)
        self.finish = Finish(finish) if finish is not None else None
        self.message = message
        self.usage = usage          # what the failed call still cost, when the API said
        self.status = status
        self.retryable = retryable
        self.streamed = streamed
        self.retry_after = retry_after


class MissingApiKey(ProviderError):
    pass


class Cancelled(Exception):
    """The user cancelled the agent (checked between chunks and between rounds)."""


class RoundLimit(Exception):
    pass


class PlanError(Exception):
    """Tier 1/2 output that is not a valid plan, after the repair round."""


ChunkFn = Callable[[str], None]
RetryFn = Callable[[dict[str, Any]], None]


class Provider(Protocol):
    name: str

    def generate(self, request: ModelRequest, on_chunk: ChunkFn,
                 on_retry: RetryFn | None = None) -> ModelResponse: ...


def estimate_tokens(text: str) -> int:
    """A deterministic estimate: one token per four characters, rounded up."""
    return (len(text) + 3) // 4


def tools_text(tools: Sequence[Any]) -> str:
    return json.dumps([{"name": t.name, "description": t.description,
                        "parameters": t.parameters} for t in tools], sort_keys=True)


def request_text(req: ModelRequest, tools_json: str | None = None) -> str:
    """The whole request as text (what the offline estimates count). `tools_json`: the
    caller's `tools_text(req.tools)`, if it has it already."""
    parts = [req.system]
    for m in req.messages:
        parts.append(m.text)
        for c in m.tool_calls:
            parts.append(json.dumps({"name": c.name, "args": c.args}, sort_keys=True))
        for r in m.tool_returns:
            parts.append(json.dumps(r.result, sort_keys=True, default=str))
    if req.tools:
        parts.append(tools_json if tools_json is not None else tools_text(req.tools))
    return "\n".join(parts)


class ToolsTextCache:
    """The tool declarations' JSON for the last tools sequence seen: agents pass the same
    sequence on every request, and rendering it is most of an offline token estimate."""

    def __init__(self) -> None:
        self._last: tuple[Sequence[Any], str] | None = None

    def __call__(self, req: ModelRequest) -> str:
        last = self._last                      # one read: another thread may replace it
        if last is not None and last[0] is req.tools:
            return request_text(req, last[1])
        text = tools_text(req.tools) if req.tools else None
        if text is not None:
            self._last = (req.tools, text)
        return request_text(req, text)
