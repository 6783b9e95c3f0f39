"""A fake Anthropic Messages API server for tests, loopback only, so the REAL `anthropic` SDK
can be pointed at it::

    with FakeAnthropic(api_key="sk-ant-test-...") as srv:
        client = anthropic.Anthropic(api_key=..., base_url=srv.root)
        srv.enqueue(AText("hello", chunks=3, usage=AUsage(input=10, output=5, cache_read=4)))
        srv.enqueue(AFault.overloaded(retry_after=1))

Wire format, from the API reference (docs.anthropic.com/en/api/messages-streaming: "Each
server-sent event includes a named event type and associated JSON data"; the flow is
message_start, then per content block content_block_start / one or more content_block_delta
/ content_block_stop, then message_delta (stop_reason; "the token counts shown in the usage
field of the message_delta event are cumulative"), then message_stop; "Event streams may also
include any number of ping events"; "we may occasionally send errors in the event stream",
e.g. `event: error` with {"type": "error", "error": {"type": "overloaded_error", ...}}; tool
inputs stream as input_json_delta `partial_json` strings; /en/api/errors: 429
rate_limit_error, 529 overloaded_error, 401 authentication_error, 400 invalid_request_error,
bodies {"type": "error", "error": {"type", "message"}, "request_id"}; rate limits answer a
`retry-after` header) and from the SDK read for it, anthropic 2.16.0 in
site-packages/anthropic/: `_streaming.py` Stream.__stream__ (skips `ping` and events with no
name, raises `_make_status_error` on `event: error` with the 200 response, ends quietly at EOF),
`_error_classes.py` (429 -> RateLimitError, 529 -> OverloadedError, by status and error type),
`types/usage.py` / `message_delta_usage.py` (input_tokens, cache_read_input_tokens,
cache_creation_input_tokens, output_tokens, output_tokens_details.thinking_tokens),
`_client.py` (ANTHROPIC_BASE_URL; this SDK version sends the key as `Authorization: Bearer`
(`_api_key_auth`), older ones and the docs' curl examples as `x-api-key`: both are accepted).

Quirks reproduced: a `ping` right after message_start and between deltas; message_start's
usage has output_tokens 1 (the real API's placeholder) and message_delta's the final count;
`delta_input=True` repeats the cumulative input counts in message_delta, as newer API versions
do; a tool_use block starts with input {} and its JSON arrives split (`json_chunks`); the
request is checked as the API checks it (max_tokens required, roles alternating, every
tool_result answering a tool_use of the previous turn, at most 4 cache_control blocks).
"""
from __future__ import annotations

import json
import math
import uuid
from dataclasses import dataclass
from typing import Any, Optional

from tests.fakes.sse_server import FakeServer, Recorded, count_tokens, split

__all__ = ["FakeAnthropic", "AUsage", "AText", "AJson", "ATools", "AFault", "Recorded"]


@dataclass
class AUsage:
    input: int = 0               # uncached input tokens (the API's input_tokens)
    output: int = 0
    cache_read: int = 0
    cache_creation: int = 0
    thinking: int = 0            # part of output (output_tokens_details.thinking_tokens)

    def __add__(self, o: "AUsage") -> "AUsage":
        return AUsage(self.input + o.input, self.output + o.output,
                      self.cache_read + o.cache_read, self.cache_creation + o.cache_creation,
                      self.thinking + o.thinking)


@dataclass
class AText:
    text: str
    chunks: int = 3
    usage: Optional[AUsage] = None
    stop: Optional[str] = "end_turn"       # None: no message_delta (the stream just ends)
    delta_input: bool = False


@dataclass
class AJson:
    """The forced plan tool's input (structured output)."""
    obj: Any
    json_chunks: int = 3
    usage: Optional[AUsage] = None
    stop: Optional[str] = "tool_use"


@dataclass
class ATools:
    calls: list                            # [(name, args dict | raw str)]
    text: Optional[str] = None
    json_chunks: int = 3
    usage: Optional[AUsage] = None
    stop: Optional[str] = "tool_use"


@dataclass
class AFault:
    kind: str
    status: int = 200
    type: str = ""
    message: str = ""
    retry_after: Optional[float] = None
    after_chunks: int = 0
    text: str = ""
    mode: str = "abort"

    @classmethod
    def rate_limit(cls, retry_after: float = 1.0) -> "AFault":
        return cls("error", 429, "rate_limit_error",
                   "This request would exceed the rate limit for your organization of 50,000 "
                   "input tokens per minute.", retry_after)

    @classmethod
    def overloaded(cls, retry_after: Optional[float] = None) -> "AFault":
        return cls("error", 529, "overloaded_error", "Overloaded", retry_after)

    @classmethod
    def error(cls, status: int, type: str, message: str) -> "AFault":
        return cls("error", status, type, message)

    @classmethod
    def cut(cls, after_chunks: int = 2, text: str = "partial answer that never",
            mode: str = "abort") -> "AFault":
        """message_start, a text block's first `after_chunks` deltas, then the connection
        drops (abort: incomplete chunked body; eof: close-delimited, looks like an end)."""
        return cls("cut", after_chunks=after_chunks, text=text, mode=mode)

    @classmethod
    def stream_error(cls, after_chunks: int = 1, text: str = "partial",
                     type: str = "overloaded_error", message: str = "Overloaded") -> "AFault":
        return cls("stream_error", type=type, message=message, after_chunks=after_chunks,
                   text=text)


class FakeAnthropic(FakeServer):
    name = "fake-anthropic"

    def __init__(self, api_key: Optional[str] = "sk-ant-test"):
        super().__init__()
        self.api_key = api_key
        self.sent: list[AUsage] = []

    def on_reset(self) -> None:
        self.sent = []

    def usage_sent(self) -> AUsage:
        total = AUsage()
        for u in self.sent:
            total = total + u
        return total

    def default_reply(self, req: Recorded) -> Any:
        msgs = (req.body or {}).get("messages") or []
        last = ""
        for m in reversed(msgs):
            texts = [b.get("text", "") for b in m.get("content", []) if isinstance(b, dict)
                     and b.get("type") == "text"] if isinstance(m.get("content"), list) else \
                [m.get("content") or ""]
            if m.get("role") == "user" and any(texts):
                last = "".join(texts)
                break
        return AText(f"echo: {last}")

    # ---- routing
    def route(self, h, req: Recorded) -> None:
        if req.method != "POST" or req.path != "/v1/messages":
            return h.send_json(404, _err("not_found_error", "Not found"))
        sent = req.headers.get("x-api-key") or req.headers.get("authorization", "").removeprefix(
            "Bearer ")
        if self.api_key is not None and sent != self.api_key:
            return h.send_json(401, _err("authentication_error", "invalid x-api-key"))
        if not req.headers.get("anthropic-version"):
            return h.send_json(400, _err("invalid_request_error",
                                         "anthropic-version: header is required"))
        body = req.body or {}
        bad = _validate(body)
        if bad:
            return h.send_json(400, _err("invalid_request_error", bad))
        self._answer(h, body, self.next_reply(req))

    def _answer(self, h, body: dict, reply: Any) -> None:
        model = body.get("model")
        prompt = count_tokens(json.dumps([body.get("system"), body.get("tools"),
                                          body.get("messages")]))
        if isinstance(reply, AFault):
            if reply.kind == "error":
                headers = ({"retry-after": str(math.ceil(reply.retry_after))}
                           if reply.retry_after is not None else {})
                return h.send_json(reply.status, _err(reply.type, reply.message), headers)
            usage = AUsage(input=prompt)
            chunked = reply.kind == "stream_error" or reply.mode == "abort"
            h.sse_start(chunked=chunked)
            events = [_start(model, usage, None), ("content_block_start", {
                "type": "content_block_start", "index": 0,
                "content_block": {"type": "text", "text": ""}})]
            events += [_text_delta(0, p) for p in split(reply.text, reply.after_chunks)
                       [:reply.after_chunks]]
            if reply.kind == "stream_error":
                events.append(("error", {"type": "error", "error": {"type": reply.type,
                                                                    "message": reply.message}}))
            for name, data in events:
                h.write(_event(name, data), chunked)
            if reply.kind == "stream_error":
                return h.sse_end()
            h.abort()
        if isinstance(reply, (AText, AJson, ATools)):
            events: list = []
            blocks: list = []           # (index, kind, payload)
            if isinstance(reply, AText):
                blocks.append(("text", reply.text, reply.chunks))
                out = count_tokens(reply.text)
            elif isinstance(reply, AJson):
                name = (body.get("tool_choice") or {}).get("name") or "submit"
                blocks.append(("tool_use", (name, json.dumps(reply.obj)), reply.json_chunks))
                out = count_tokens(json.dumps(reply.obj))
            else:
                if reply.text:
                    blocks.append(("text", reply.text, 1))
                for name, args in reply.calls:
                    raw = args if isinstance(args, str) else json.dumps(args)
                    blocks.append(("tool_use", (name, raw), reply.json_chunks))
                out = count_tokens((reply.text or "") + json.dumps(reply.calls))
            usage = reply.usage or AUsage(input=prompt, output=out)
            events.append(_start(model, usage, None))
            events.append(("ping", {"type": "ping"}))
            for i, (kind, payload, n) in enumerate(blocks):
                if kind == "text":
                    events.append(("content_block_start", {
                        "type": "content_block_start", "index": i,
                        "content_block": {"type": "text", "text": ""}}))
                    for k, p in enumerate(split(payload, n)):
                        events.append(_text_delta(i, p))
                        if k == 0:
                            events.append(("ping", {"type": "ping"}))
                else:
                    name, raw = payload
                    events.append(("content_block_start", {
                        "type": "content_block_start", "index": i,
                        "content_block": {"type": "tool_use", "id": f"toolu_{uuid.uuid4().hex[:24]}",
                                          "name": name, "input": {}}}))
                    for p in split(raw, n):
                        events.append(("content_block_delta", {
                            "type": "content_block_delta", "index": i,
                            "delta": {"type": "input_json_delta", "partial_json": p}}))
                events.append(("content_block_stop", {"type": "content_block_stop", "index": i}))
            if reply.stop is not None:
                du: dict = {"output_tokens": usage.output}
                if usage.thinking:
                    du["output_tokens_details"] = {"thinking_tokens": usage.thinking}
                if getattr(reply, "delta_input", False):
                    du.update(input_tokens=usage.input,
                              cache_read_input_tokens=usage.cache_read,
                              cache_creation_input_tokens=usage.cache_creation)
                events.append(("message_delta", {"type": "message_delta", "delta": {
                    "stop_reason": reply.stop, "stop_sequence": None}, "usage": du}))
                events.append(("message_stop", {"type": "message_stop"}))
                self.sent.append(usage)
            h.sse_start()
            for name, data in events:
                h.write(_event(name, data))
            return h.sse_end()
        raise TypeError(f"not a reply: {reply!r}")


def _event(name: str, data: dict) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


def _start(model: Any, usage: AUsage, stop: Optional[str]) -> tuple:
    return ("message_start", {"type": "message_start", "message": {
        "id": f"msg_{uuid.uuid4().hex[:24]}", "type": "message", "role": "assistant",
        "content": [], "model": model, "stop_reason": stop, "stop_sequence": None,
        "usage": {"input_tokens": usage.input, "cache_creation_input_tokens":
                  usage.cache_creation, "cache_read_input_tokens": usage.cache_read,
                  "output_tokens": 1, "service_tier": "standard"}}})


def _text_delta(index: int, text: str) -> tuple:
    return ("content_block_delta", {"type": "content_block_delta", "index": index,
                                    "delta": {"type": "text_delta", "text": text}})


def _err(type: str, message: str) -> dict:
    return {"type": "error", "error": {"type": type, "message": message},
            "request_id": f"req_{uuid.uuid4().hex[:24]}"}


def _validate(body: dict) -> Optional[str]:
    """Some of the checks the Messages API makes, with its wording."""
    if not body.get("model"):
        return "model: Field required"
    if not isinstance(body.get("max_tokens"), int):
        return "max_tokens: Field required"
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        return "messages: Field required"
    if msgs[0].get("role") != "user":
        return "messages: first message must use the \"user\" role"
    breakpoints = 0
    for blk in (body.get("system") or []) + (body.get("tools") or []):
        breakpoints += isinstance(blk, dict) and "cache_control" in blk
    prev_tool_ids: set = set()
    for i, m in enumerate(msgs):
        if i and msgs[i - 1].get("role") == m.get("role"):
            return (f"messages: roles must alternate between \"user\" and \"assistant\", but "
                    f"found multiple \"{m.get('role')}\" roles in a row")
        content = m.get("content")
        blocks = content if isinstance(content, list) else [{"type": "text", "text": content}]
        ids = set()
        for j, b in enumerate(blocks):
            breakpoints += "cache_control" in b
            if b.get("type") == "text" and not b.get("text"):
                return f"messages.{i}.content.{j}.text: text content blocks must be non-empty"
            if b.get("type") == "tool_use":
                ids.add(b.get("id"))
            if b.get("type") == "tool_result" and b.get("tool_use_id") not in prev_tool_ids:
                return (f"messages.{i}.content.{j}: unexpected `tool_use_id` found in "
                        f"`tool_result` blocks: {b.get('tool_use_id')}. Each `tool_result` "
                        f"block must have a corresponding `tool_use` block in the previous "
                        f"message.")
        prev_tool_ids = ids
    if breakpoints > 4:
        return (f"A maximum of 4 blocks with cache_control may be provided. Found "
                f"{breakpoints}.")
    return None
