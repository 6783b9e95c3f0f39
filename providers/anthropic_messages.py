"""AnthropicProvider: Claude through the official `anthropic` SDK's Messages API, streamed
(imported lazily, on construction).

Threads: any executor thread; one provider (and its `anthropic.Anthropic` client, whose
httpx2 pool is thread-safe) is shared by every agent. State owned: the client and the
settings, fixed after construction; each call's progress lives in a MessagesAttempt local to
the calling thread.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from models import Usage
from providers.base import (ChunkFn, Finish, Message, MissingApiKey, ModelRequest,
                            ModelResponse, ProviderError, RetryFn, ToolCall)
from providers.sdk_retry import (Attempt, RetryPolicy, StreamCut, classify_sdk_error,
                                 emit_text, key_from_env, run_with_retries)
from providers.sdk_heap import sdk_import
from providers.secrets import Scrubber

MISSING_KEY_MESSAGE = (
    "No Anthropic API key: set the ANTHROPIC_API_KEY environment variable (and "
    "ANTHROPIC_BASE_URL for another endpoint) and start Clutch again, or choose another "
    "provider in Settings.")
_EPHEMERAL = MappingProxyType({"type": "ephemeral"})
# stop_reason -> Finish
_FINISH = MappingProxyType({"end_turn": Finish.STOP, "stop_sequence": Finish.STOP,
                            "tool_use": Finish.TOOL_CALLS, "max_tokens": Finish.MAX_TOKENS,
                            "refusal": Finish.SAFETY})


@dataclass
class MessagesAttempt(Attempt):
    """What one streamed Messages attempt received so far."""
    texts: list[str] = field(default_factory=list)
    # content block index -> [kind, id, name, partial_json pieces]
    blocks: dict[int, list[Any]] = field(default_factory=dict)
    start: Any = None                  # message_start's usage
    last: Any = None                   # the last message_delta's usage (cumulative)
    stop_reason: str | None = None


class AnthropicProvider:
    """The Messages API, streamed (`messages.create(stream=True)`: raw events).

    - Events: message_start (the prompt's usage), content_block_start / _delta / _stop
      (text_delta; input_json_delta pieces of a tool_use block's input, assembled and parsed at
      its end; thinking blocks are not the answer), message_delta (stop_reason and the
      cumulative usage), message_stop; `ping` and unknown events are skipped (by the SDK or
      here); an `error` event raises (the SDK maps it to its status class).
    - Tools (Tier 3/4): tool_use blocks become ToolCalls with the API's ids; tool returns go
      back as one user message of tool_result blocks echoing each tool_use_id.
    - Structured output (Tier 1/2): one tool whose input_schema is the plan's schema, forced
      with tool_choice; its input (streamed as input_json_delta, shown as it comes) is the
      answer's text.
    - Prompt caching: cache_control ephemeral on the last tool, on the system prompt and on
      the last message, so the shared prefix (tools, system: the project's documents and the
      repository map live there) and a worker's growing history are read from the cache.
    - Usage, exact: input_tokens = input_tokens + cache_read_input_tokens +
      cache_creation_input_tokens (every prompt token); cached_tokens = cache_read;
      cache_write_tokens = cache_creation; output_tokens = output_tokens (thinking included,
      as billed) minus output_tokens_details.thinking_tokens, which are thoughts_tokens.
    - Endings: end_turn / stop_sequence -> STOP, tool_use -> TOOL_CALLS (STOP for the forced
      plan tool), max_tokens -> MAX_TOKENS, refusal -> ProviderError(SAFETY), anything else
      OTHER; no stop_reason before the stream ends (or a break) -> ProviderError(CUT).
    - Retries: 429 and 529 (overloaded) and 408/409/5xx with the server's retry-after, an
      overloaded_error event before any text too; other 4xx: the API's own message.
    """

    name = "anthropic"

    def __init__(self, api_key: str | None, base_url: str | None = None, *,
                 timeout_s: float = 120.0, max_retries: int = 5, initial_delay_s: float = 1.0,
                 max_delay_s: float = 60.0, max_output_tokens: int = 16_000,
                 prompt_caching: bool = True, sleep: Callable[[float], None] = time.sleep,
                 rand: Callable[[], float] | None = None):
        key = (api_key or "").strip()
        if not key:
            raise MissingApiKey(MISSING_KEY_MESSAGE)
        with sdk_import("anthropic"):                  # lazily: only when this provider is built
            import anthropic
        self.base_url = base_url or None               # None: ANTHROPIC_BASE_URL or the default
        self.timeout_s = float(timeout_s)
        self.max_output_tokens = int(max_output_tokens)
        self.prompt_caching = prompt_caching
        self.policy = RetryPolicy(max_retries=max(0, int(max_retries)),
                                  initial_delay_s=max(0.0, float(initial_delay_s)),
                                  max_delay_s=max(float(initial_delay_s), float(max_delay_s)),
                                  sleep=sleep, rand=rand)
        self.scrubber = Scrubber([key])
        self._client = anthropic.Anthropic(api_key=key, base_url=self.base_url,
                                           timeout=self.timeout_s, max_retries=0)
        self._where = str(self._client.base_url)

    @classmethod
    def from_settings(cls, settings: Any, *, sleep: Callable[[float], None] = time.sleep
                      ) -> "AnthropicProvider":
        """Key from ANTHROPIC_API_KEY; base URL from Settings.anthropic.base_url, else the
        SDK's ANTHROPIC_BASE_URL. Raises MissingApiKey."""
        key = key_from_env("ANTHROPIC_API_KEY", MISSING_KEY_MESSAGE)
        a = settings.anthropic
        return cls(key, a.base_url or None, timeout_s=a.timeout_s, max_retries=a.max_retries,
                   initial_delay_s=a.retry_initial_delay_s, max_delay_s=a.retry_max_delay_s,
                   max_output_tokens=a.max_output_tokens, prompt_caching=a.prompt_caching,
                   sleep=sleep)

    def __repr__(self) -> str:
        return (f"AnthropicProvider(base_url={self._where!r}, timeout_s={self.timeout_s:g}, "
                f"max_retries={self.policy.max_retries})")

    def close(self) -> None:
        self._client.close()

    # -- the call ---------------------------------------------------------------------------
    def generate(self, request: ModelRequest, on_chunk: ChunkFn,
                 on_retry: RetryFn | None = None) -> ModelResponse:
        kw = self.params(request)
        return run_with_retries(
            lambda st: self._attempt(request, kw, on_chunk, st),   # type: ignore[arg-type]
            lambda e, st: classify_sdk_error(e, st, vendor="anthropic", where=self._where,
                                             timeout_s=self.timeout_s),
            policy=self.policy, scrubber=self.scrubber, model=request.model,
            on_chunk=on_chunk, on_retry=on_retry, new_attempt=MessagesAttempt)

    def params(self, request: ModelRequest) -> dict[str, Any]:
        """The messages.create arguments for a request."""
        cache = self.prompt_caching
        kw: dict[str, Any] = {"model": request.model, "stream": True,
                              "max_tokens": int(request.max_output_tokens
                                                or self.max_output_tokens),
                              "messages": build_messages(request.messages, cache)}
        if request.system:
            block: dict[str, Any] = {"type": "text", "text": request.system}
            if cache:
                block["cache_control"] = dict(_EPHEMERAL)
            kw["system"] = [block]
        tools = build_tools(request.tools)
        if request.response_schema is not None:
            name = plan_tool_name(request)
            tools = [{"name": name, "description": (
                        f"Submit your whole answer as the input of this tool: one "
                        f"{request.response_schema.__name__}."),
                      "input_schema": request.response_schema.model_json_schema()}]
            kw["tool_choice"] = {"type": "tool", "name": name}
        if tools:
            if cache:
                tools[-1] = {**tools[-1], "cache_control": dict(_EPHEMERAL)}
            kw["tools"] = tools
        return kw

    def _attempt(self, request: ModelRequest, kw: dict[str, Any], on_chunk: ChunkFn,
                 st: MessagesAttempt) -> ModelResponse:
        structured = request.response_schema is not None
        stream = self._client.messages.create(**kw)
        try:
            for event in stream:
                take_event(event, st, on_chunk, structured)
        finally:
            stream.close()
        st.usage = usage_of(st.start, st.last)
        if st.stop_reason is None:
            raise StreamCut("the stream ended without a stop_reason")
        finish = _FINISH.get(st.stop_reason, Finish.OTHER)
        if finish is Finish.SAFETY:
            raise ProviderError(f"Claude declined to answer (stop_reason refusal) after "
                                f"{st.chars} characters; not retried", streamed=st.chars > 0,
                                usage=st.usage, finish=Finish.SAFETY)
        calls, bad = _calls(st)
        if structured:
            text = "".join(st.texts)          # the plan tool's input, as streamed
            if finish is Finish.TOOL_CALLS:
                finish = Finish.STOP
            calls = []
        else:
            text = "".join(st.texts)
            if bad:
                return ModelResponse(text=text, usage=st.usage, model=request.model,
                                     finish_reason="malformed_tool_input",
                                     finish=Finish.MALFORMED)
            if finish is Finish.STOP and calls:
                finish = Finish.TOOL_CALLS
            if finish is Finish.TOOL_CALLS and not calls:
                finish = Finish.MALFORMED
        if not text and not calls and finish is Finish.STOP:
            raise ProviderError(f"the model returned an empty answer (stop_reason "
                                f"{st.stop_reason})", usage=st.usage, finish=Finish.OTHER)
        return ModelResponse(text=text, tool_calls=calls, usage=st.usage, model=request.model,
                             finish_reason=st.stop_reason, finish=finish)


# ---------------------------------------------------------------------------------------------
# the request (no SDK needed)
# ---------------------------------------------------------------------------------------------

def plan_tool_name(request: ModelRequest) -> str:
    assert request.response_schema is not None
    return "submit_" + "".join(f"_{c.lower()}" if c.isupper() else c
                               for c in request.response_schema.__name__).lstrip("_")


def build_tools(tools: Sequence[Any]) -> list[dict[str, Any]]:
    return [{"name": t.name, "description": t.description,
             "input_schema": json.loads(json.dumps(t.parameters, default=str))} for t in tools]


def build_messages(messages: Sequence[Message], cache: bool) -> list[dict[str, Any]]:
    """Our history as Messages API turns: user text and tool results (tool_result blocks
    echoing each tool_use_id) are user turns, a model turn is an assistant turn of text and
    tool_use blocks; consecutive turns of one role are merged (the API alternates roles).
    With `cache`, the last block carries cache_control (the history so far is cached)."""
    out: list[dict[str, Any]] = []

    def add(role: str, blocks: list[dict[str, Any]]) -> None:
        if not blocks:
            return
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})

    for m in messages:
        if m.role == "user":
            add("user", [{"type": "text", "text": m.text}] if m.text else [])
        elif m.role == "model":
            blocks: list[dict[str, Any]] = [{"type": "text", "text": m.text}] if m.text else []
            blocks += [{"type": "tool_use", "id": c.id, "name": c.name,
                        "input": json.loads(json.dumps(c.args, default=str))}
                       for c in m.tool_calls]
            add("assistant", blocks)
        elif m.role == "tool":
            blocks = [{"type": "tool_result", "tool_use_id": r.call_id,
                       "content": json.dumps(r.result, default=str),
                       **({"is_error": True} if r.result.get("ok") is False
                          or r.result.get("rejected") else {})}
                      for r in m.tool_returns]
            if m.text:
                blocks.append({"type": "text", "text": m.text})
            add("user", blocks)
        else:
            raise ValueError(f"unknown message role {m.role!r}")
    if cache and out:
        last = out[-1]["content"][-1]
        out[-1]["content"][-1] = {**last, "cache_control": dict(_EPHEMERAL)}
    return out


# ---------------------------------------------------------------------------------------------
# the stream
# ---------------------------------------------------------------------------------------------

def take_event(event: Any, st: MessagesAttempt, on_chunk: ChunkFn, structured: bool) -> None:
    """One raw stream event into `st`; answer text (or the plan tool's JSON) to on_chunk."""
    kind = getattr(event, "type", None)
    if kind == "content_block_delta":
        d = event.delta
        dk = getattr(d, "type", None)
        if dk == "text_delta":
            if d.text:
                emit_text(d.text, st, st.texts, on_chunk)
        elif dk == "input_json_delta":
            slot = st.blocks.get(event.index)
            if slot is not None and d.partial_json:
                slot[3].append(d.partial_json)
                if structured:
                    emit_text(d.partial_json, st, st.texts, on_chunk)
    elif kind == "content_block_start":
        b = event.content_block
        if getattr(b, "type", None) == "tool_use":
            st.blocks[event.index] = ["tool_use", b.id, b.name, []]
        elif getattr(b, "type", None) == "text" and getattr(b, "text", ""):
            emit_text(b.text, st, st.texts, on_chunk)
    elif kind == "message_start":
        st.start = event.message.usage
        st.usage = usage_of(st.start, None)
    elif kind == "message_delta":
        st.last = event.usage
        st.usage = usage_of(st.start, st.last)
        if event.delta.stop_reason:
            st.stop_reason = event.delta.stop_reason


def _n(obj: Any, name: str) -> int | None:
    v = getattr(obj, name, None) if obj is not None else None
    return v if isinstance(v, int) else None


def usage_of(start: Any, last: Any) -> Usage:
    """message_start's usage with the last message_delta's (cumulative) over it."""
    def pick(name: str) -> int:
        v = _n(last, name)
        return v if v is not None else (_n(start, name) or 0)
    read, written = pick("cache_read_input_tokens"), pick("cache_creation_input_tokens")
    inp = pick("input_tokens") + read + written
    out = pick("output_tokens")
    details = getattr(last, "output_tokens_details", None) or getattr(
        start, "output_tokens_details", None)
    thinking = _n(details, "thinking_tokens") or 0
    return Usage(input_tokens=inp, output_tokens=max(out - thinking, 0), cached_tokens=read,
                 cache_write_tokens=written, thoughts_tokens=thinking, total_tokens=inp + out,
                 requests=1)


def _calls(st: MessagesAttempt) -> tuple[list[ToolCall], bool]:
    calls = []
    for index in sorted(st.blocks):
        _, call_id, name, pieces = st.blocks[index]
        raw = "".join(pieces).strip() or "{}"
        try:
            args = json.loads(raw)
        except ValueError:
            return [], True
        if not isinstance(args, dict):
            return [], True
        calls.append(ToolCall(id=call_id, name=name, args=args))
    return calls, False
