"""Gemini helpers that need no SDK: the key from the environment, what one streamed attempt
received, how a failure is described, and the server's requested delays (RetryInfo,
Retry-After).

Threads: the executor thread running GeminiProvider.generate(). `GeminiAttempt` and
`GeminiFailure` are per-call objects owned by that thread; the rest is pure functions and
constants.
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from models import Usage
from providers.base import ChunkFn, Finish, Message, MissingApiKey, ModelRequest
from providers.sdk_retry import parse_retry_after_s

KEY_VARS = ("GEMINI_API_KEY", "GOOGLE_API_KEY")
MISSING_KEY_MESSAGE = (
    "No Gemini API key: set the GEMINI_API_KEY (or GOOGLE_API_KEY) environment variable and "
    "start Clutch again, or choose the offline provider in Settings.")
# HTTP statuses worth another attempt, and the reason a retry entry gives for each.
RETRY_STATUSES = MappingProxyType({408: "timeout", 429: "rate_limited", 500: "server_error",
                                   502: "server_error", 503: "server_error",
                                   504: "server_error"})
# Finish reasons that mean a filter stopped the answer (not "the model had nothing to say").
BLOCK_FINISH = frozenset({"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT",
                                  "SPII", "IMAGE_SAFETY", "IMAGE_PROHIBITED_CONTENT",
                                  "IMAGE_RECITATION"})


def gemini_api_key_from_env(environ: Any = None) -> str:
    """The Gemini key from GEMINI_API_KEY, else GOOGLE_API_KEY. Raises MissingApiKey."""
    env = os.environ if environ is None else environ
    for var in KEY_VARS:
        key = (env.get(var) or "").strip()
        if key:
            return key
    raise MissingApiKey(MISSING_KEY_MESSAGE)


class StreamCut(Exception):
    """The stream ended without a finish reason: the server stopped sending (gemini-cli #9397)
    or a close-delimited body was cut short (the SDK sees a normal end). Either way the
    answer is not whole."""


class CallbackRaised(Exception):
    """on_chunk raised (Cancelled, or anything else): re-raised as is, never classified as a
    provider failure or retried."""

    def __init__(self, exc: BaseException):
        super().__init__(repr(exc))
        self.exc = exc


@dataclass
class GeminiAttempt:
    """What one streamed attempt received so far."""
    chars: int = 0                          # text characters forwarded to on_chunk
    texts: list[str] = field(default_factory=list)
    calls: list[tuple[Any, Any]] = field(default_factory=list)   # (FunctionCall, signature)
    # thought signatures that came on parts other than a function call (a trailing empty
    # text part, a thought part), in order
    stray_signatures: list[bytes] = field(default_factory=list)
    usage: Any = None                       # the last usage_metadata seen (partial or final)
    finish: str | None = None
    block_reason: str | None = None
    chunks: int = 0


@dataclass
class GeminiFailure:
    message: str
    # rate_limited | server_error | timeout | stream_cut | network | malformed
    reason: str = ""
    finish: Finish | None = None            # CUT: the answer broke off (AgentSession's to retry)
    status: int | None = None
    retryable: bool = False
    streamed: bool = False
    server_delay: float | None = None


def enum_name(v: Any) -> str | None:
    if v is None:
        return None
    name = getattr(v, "value", None) or getattr(v, "name", None) or str(v)
    return str(name)


def parse_duration_s(v: Any) -> float | None:
    """google.protobuf.Duration as JSON ("1.5s") or as {"seconds", "nanos"}."""
    try:
        if isinstance(v, str):
            return max(0.0, float(v.strip().rstrip("s")))
        if isinstance(v, dict):
            return max(0.0, float(v.get("seconds", 0)) + float(v.get("nanos", 0)) / 1e9)
        if isinstance(v, (int, float)):
            return max(0.0, float(v))
    except (TypeError, ValueError):
        return None
    return None


def server_delay(e: BaseException) -> float | None:
    """The wait a 429 asks for: google.rpc.RetryInfo in the error body, else Retry-After."""
    details = getattr(e, "details", None)
    err = details.get("error") if isinstance(details, dict) else None
    if isinstance(err, dict):
        for d in err.get("details") or []:
            if isinstance(d, dict) and str(d.get("@type", "")).endswith("google.rpc.RetryInfo"):
                delay = parse_duration_s(d.get("retryDelay"))
                if delay is not None:
                    return delay
    headers = getattr(getattr(e, "response", None), "headers", None)
    if headers:
        try:
            items = list(headers.items())
        except (AttributeError, TypeError):
            items = []
        for k, v in items:
            if str(k).lower() == "retry-after" and v:
                return parse_retry_after_s(str(v))
    return None


def is_httpx_error(e: BaseException, *names: str) -> bool:
    """True when e is one of httpx's (or its fork httpx2's) exception classes named `names`
    (the SDK uses whichever is installed; neither is imported here)."""
    for cls in type(e).__mro__:
        if cls.__name__ in names and cls.__module__.split(".")[0] in ("httpx", "httpx2"):
            return True
    return False


def plain_json(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


# ---------------------------------------------------------------------------------------------
# one streamed chunk in, the request out (the SDK's `types` module is passed in: never imported
# here)
# ---------------------------------------------------------------------------------------------

def take_chunk(chunk: Any, st: GeminiAttempt, on_chunk: ChunkFn) -> None:
    """One GenerateContentResponse of the stream into `st`; its text to on_chunk."""
    if chunk.usage_metadata is not None:
        st.usage = chunk.usage_metadata          # every chunk may carry (partial) usage: keep last
    feedback = chunk.prompt_feedback
    if feedback is not None and feedback.block_reason:
        st.block_reason = enum_name(feedback.block_reason)
    for cand in (chunk.candidates or [])[:1]:
        if cand.finish_reason:
            st.finish = enum_name(cand.finish_reason)
        parts = (cand.content.parts if cand.content is not None else None) or []
        for part in parts:
            signature = part.thought_signature
            if part.function_call is not None:
                st.calls.append((part.function_call, signature))
                continue
            if signature:                        # e.g. {"text": "", "thoughtSignature": ...}
                st.stray_signatures.append(signature)
            if part.thought:                     # thinking summaries are not the answer
                continue
            if part.text:
                st.texts.append(part.text)
                st.chars += len(part.text)
                try:
                    on_chunk(part.text)
                except Exception as e:  # noqa: BLE001 -- re-raised unchanged by generate()
                    raise CallbackRaised(e) from e


def usage_of(um: Any) -> Usage:
    """usage_metadata -> Usage (one request)."""
    if um is None:
        return Usage(requests=1)
    return Usage(input_tokens=um.prompt_token_count or 0,
                 output_tokens=um.candidates_token_count or 0,
                 cached_tokens=um.cached_content_token_count or 0,
                 thoughts_tokens=um.thoughts_token_count or 0,
                 tool_use_tokens=um.tool_use_prompt_token_count or 0,
                 total_tokens=um.total_token_count or 0,
                 requests=1)


def wire_id(call_id: str, name: str) -> str | None:
    """The id to send back: the API's own, or None for one we generated ("name-n")."""
    if not call_id or re.fullmatch(re.escape(name) + r"-\d+", call_id):
        return None
    return call_id


def build_contents(types: Any, messages: Sequence[Message]) -> list[Any]:
    """user text -> user Content; model turn -> model Content (text + function calls, each
    with its thought signature; a turn's stray signature on its text part); tool returns ->
    ONE user Content with a function_response per call of that turn."""
    out = []
    for m in messages:
        if m.role == "user":
            if m.text:
                out.append(types.Content(role="user", parts=[types.Part(text=m.text)]))
        elif m.role == "model":
            sig = m.thought_signature
            parts = ([types.Part(text=m.text, thought_signature=sig)]
                     if m.text or (sig and not m.tool_calls) else [])
            for c in m.tool_calls:
                parts.append(types.Part(
                    function_call=types.FunctionCall(name=c.name, args=plain_json(c.args),
                                                     id=wire_id(c.id, c.name)),
                    thought_signature=c.thought_signature))
            if parts:
                out.append(types.Content(role="model", parts=parts))
        elif m.role == "tool":
            parts = [types.Part(function_response=types.FunctionResponse(
                name=r.name, response=plain_json(r.result), id=wire_id(r.call_id, r.name)))
                for r in m.tool_returns]
            if m.text:
                parts.append(types.Part(text=m.text))
            if parts:
                out.append(types.Content(role="user", parts=parts))
        else:
            raise ValueError(f"unknown message role {m.role!r}")
    return out


def build_config(types: Any, request: ModelRequest) -> Any:
    # Tool calls go back to AgentSession (approvals, the comms log): the SDK never runs one.
    kw: dict[str, Any] = {
        "automatic_function_calling": types.AutomaticFunctionCallingConfig(disable=True)}
    if request.system:
        kw["system_instruction"] = request.system
    if request.max_output_tokens:
        kw["max_output_tokens"] = int(request.max_output_tokens)
    if request.response_schema is not None:
        kw["response_mime_type"] = "application/json"
        kw["response_json_schema"] = request.response_schema.model_json_schema()
    if request.tools:
        kw["tools"] = [types.Tool(function_declarations=[
            types.FunctionDeclaration(name=t.name, description=t.description,
                                      parameters_json_schema=plain_json(t.parameters))
            for t in request.tools])]
    return types.GenerateContentConfig(**kw)
