"""A fake OpenAI Chat Completions server (and Ollama's /api/tags) for tests, loopback only, so
the REAL `openai` SDK can be pointed at it::

    with FakeOpenAI(api_key="sk-test-...") as srv:
        client = openai.OpenAI(api_key=..., base_url=srv.base_url)     # srv.root + "/v1"
        srv.enqueue(OText("hello", chunks=3, usage=OUsage(prompt=10, completion=5)))
        srv.enqueue(OFault.rate_limit(retry_after=1.5))
        srv.script(lambda req: OCalls([("read_file", {"path": "a.py"})]))

Wire format, from the API reference (platform.openai.com/docs/api-reference/chat/create and
/chat-streaming: "data-only server-sent events ... terminated by a `data: [DONE]` message";
`stream_options.include_usage`: "an additional chunk will be streamed before the data: [DONE]
message. The usage field on this chunk shows the token usage statistics for the entire
request, and the choices field will always be an empty array. All other chunks will also
include a usage field, but with a null value") and from the SDK read for it, openai 3.57.0 in
site-packages/openai/: `_streaming.py` Stream.__stream__ (stops at `[DONE]`; a `data:` object
with an "error" key raises APIError; EOF without [DONE] simply ends iteration, so a
close-delimited body cut short looks like a normal end), `types/chat/chat_completion_chunk.py`
(ChoiceDeltaToolCall.index / id / function.name / function.arguments),
`types/completion_usage.py` (prompt_tokens_details.cached_tokens / cache_write_tokens,
completion_tokens_details.reasoning_tokens), `_client.py` _make_status_error (400/401/429/5xx
-> BadRequestError/AuthenticationError/RateLimitError/InternalServerError, body["error"]),
`_base_client.py` (retry-after-ms, retry-after headers).

Quirks reproduced:
- the first chunk's delta is {"role": "assistant", "content": "", "refusal": null};
- with include_usage every chunk has "usage": null and the LAST chunk has "choices": [] and
  the usage; without it no chunk has usage. `usage_on_finish=True` puts the usage on the
  finish chunk instead (llama.cpp's server does this);
- tool calls: the first delta of a call has index, id, type and the name with arguments "";
  the arguments follow in pieces (`arg_chunks`) carrying only the index; parallel calls are
  interleaved piece by piece (`interleave=True`);
- errors are {"error": {"message", "type", "param", "code"}}; a bad key answers 401
  invalid_api_key whose message quotes the first 14 characters of the key sent (the real one
  quotes a masked prefix and suffix: the provider must scrub what comes back);
- `json_schema=False` answers 400 to response_format json_schema, as servers without
  structured outputs do ("'response_format' of type 'json_schema' is not supported ...").

Ollama: GET /api/tags answers {"models": [...]} (docs.ollama.com/api#list-local-models); the
Chat Completions route is the same (Ollama's /v1 is OpenAI-compatible; it needs no key:
api_key=None accepts any).
"""
from __future__ import annotations

import json
import math
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Optional

from tests.fakes.sse_server import FakeServer, Recorded, count_tokens, split

__all__ = ["FakeOpenAI", "OUsage", "OText", "OJson", "OCalls", "OFault", "Recorded",
           "OLLAMA_MODELS"]

OLLAMA_MODELS = [
    {"name": "qwen2.5-coder:7b", "model": "qwen2.5-coder:7b",
     "modified_at": "2026-11-30T10:00:00Z", "size": 4683087332, "digest": "dae161e27b0e",
     "details": {"format": "gguf", "family": "qwen2", "families": ["qwen2"],
                 "parameter_size": "7.6B", "quantization_level": "Q4_K_M"}},
    {"name": "llama3.2:3b", "model": "llama3.2:3b", "modified_at": "2026-11-29T10:00:00Z",
     "size": 2019393189, "digest": "a80c4f17acd5",
     "details": {"format": "gguf", "family": "llama", "families": ["llama"],
                 "parameter_size": "3.2B", "quantization_level": "Q4_K_M"}},
]


@dataclass
class OUsage:
    prompt: int = 0
    completion: int = 0          # includes reasoning, as OpenAI counts it
    cached: int = 0
    reasoning: int = 0
    cache_write: int = 0

    @property
    def total(self) -> int:
        return self.prompt + self.completion

    def to_json(self) -> dict:
        pd = {"cached_tokens": self.cached, "audio_tokens": 0}
        if self.cache_write:
            pd["cache_write_tokens"] = self.cache_write
        return {"prompt_tokens": self.prompt, "completion_tokens": self.completion,
                "total_tokens": self.total, "prompt_tokens_details": pd,
                "completion_tokens_details": {"reasoning_tokens": self.reasoning,
                                              "audio_tokens": 0,
                                              "accepted_prediction_tokens": 0,
                                              "rejected_prediction_tokens": 0}}

    def __add__(self, o: "OUsage") -> "OUsage":
        return OUsage(self.prompt + o.prompt, self.completion + o.completion,
                      self.cached + o.cached, self.reasoning + o.reasoning,
                      self.cache_write + o.cache_write)


@dataclass
class OText:
    text: str
    chunks: int = 3
    usage: Optional[OUsage] = None
    finish: Optional[str] = "stop"        # None: no finish_reason ever (the stream ends)
    usage_on_finish: bool = False
    refusal: Optional[str] = None


@dataclass
class OJson:
    obj: Any
    chunks: int = 3
    usage: Optional[OUsage] = None
    finish: Optional[str] = "stop"


@dataclass
class OCalls:
    calls: list                            # [(name, args dict | raw str)]
    text: Optional[str] = None
    arg_chunks: int = 3
    interleave: bool = True
    usage: Optional[OUsage] = None
    finish: Optional[str] = "tool_calls"


@dataclass
class OFault:
    kind: str
    status: int = 200
    message: str = ""
    type: str = ""
    code: Optional[str] = None
    retry_after: Optional[float] = None
    header: str = "retry-after"
    after_chunks: int = 0
    text: str = ""
    mode: str = "abort"
    headers: dict = field(default_factory=dict)

    @classmethod
    def rate_limit(cls, retry_after: float = 1.0, header: str = "retry-after") -> "OFault":
        """429 rate_limit_exceeded with `retry-after` (seconds, ceil) or `retry-after-ms`."""
        return cls("error", 429, "Rate limit reached for gpt-5-mini in organization org-fake on "
                   "tokens per min (TPM): Limit 30000, Used 30000, Requested 1200. Please try "
                   "again in 1.5s.", "tokens", "rate_limit_exceeded", retry_after, header)

    @classmethod
    def error(cls, status: int, message: str, type: str = "invalid_request_error",
              code: Optional[str] = None) -> "OFault":
        return cls("error", status, message, type, code)

    @classmethod
    def cut(cls, after_chunks: int = 2, text: str = "partial answer that never",
            mode: str = "abort") -> "OFault":
        """`after_chunks` content chunks, then: abort -> an incomplete chunked body (the
        HTTP client raises); eof -> a close-delimited body that just ends (no finish_reason,
        no [DONE]: the SDK stops iterating as if all was well)."""
        return cls("cut", after_chunks=after_chunks, text=text, mode=mode)

    @classmethod
    def stream_error(cls, after_chunks: int = 1, text: str = "partial",
                     message: str = "The server had an error while processing your request. "
                                    "Sorry about that!") -> "OFault":
        """Content chunks, then `data: {"error": {...}}` (the SDK raises APIError)."""
        return cls("stream_error", message=message, type="server_error",
                   after_chunks=after_chunks, text=text)


class FakeOpenAI(FakeServer):
    name = "fake-openai"

    def __init__(self, api_key: Optional[str] = "sk-test", json_schema: bool = True,
                 models: Optional[list] = None):
        super().__init__()
        self.api_key = api_key               # None: any key, or none (Ollama)
        self.json_schema = json_schema
        self.ollama_models = OLLAMA_MODELS if models is None else models
        self.sent: list[OUsage] = []         # usage of every reply written, in order

    @property
    def base_url(self) -> str:
        return self.root + "/v1"

    def on_reset(self) -> None:
        self.sent = []

    def usage_sent(self) -> OUsage:
        total = OUsage()
        for u in self.sent:
            total = total + u
        return total

    def default_reply(self, req: Recorded) -> Any:
        msgs = (req.body or {}).get("messages") or []
        last = next((m.get("content") for m in reversed(msgs) if m.get("role") == "user"), "")
        return OText(f"echo: {last}")

    # ---- routing
    def route(self, h, req: Recorded) -> None:
        if req.method == "GET" and req.path == "/api/tags":
            return h.send_json(200, {"models": self.ollama_models})
        if req.method != "POST" or req.path != "/v1/chat/completions":
            return h.send_json(404, _err(f"Invalid URL ({req.method} {req.path})",
                                         "invalid_request_error"))
        auth = req.headers.get("authorization", "")
        if self.api_key is not None and auth != f"Bearer {self.api_key}":
            sent = auth.removeprefix("Bearer ")
            return h.send_json(401, _err(f"Incorrect API key provided: {sent[:14]}****. You "
                                         f"can find your API key at https://platform.openai."
                                         f"com/account/api-keys.", "invalid_request_error",
                                         code="invalid_api_key"))
        body = req.body or {}
        if not isinstance(body.get("messages"), list) or not body.get("model"):
            return h.send_json(400, _err("you must provide a model parameter and messages",
                                         "invalid_request_error"))
        for i, m in enumerate(body["messages"]):
            if m.get("role") == "tool" and not m.get("tool_call_id"):
                return h.send_json(400, _err(f"Missing parameter 'tool_call_id' at "
                                             f"messages[{i}].", "invalid_request_error",
                                             param=f"messages.[{i}].tool_call_id"))
        rf = body.get("response_format") or {}
        if rf.get("type") == "json_schema" and not self.json_schema:
            return h.send_json(400, _err("Invalid parameter: 'response_format' of type "
                                         "'json_schema' is not supported with this model.",
                                         "invalid_request_error", param="response_format"))
        reply = self.next_reply(req)
        self._answer(h, req, body, reply)

    def _answer(self, h, req: Recorded, body: dict, reply: Any) -> None:
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        if isinstance(reply, OFault):
            if reply.kind == "error":
                headers = dict(reply.headers)
                if reply.retry_after is not None:
                    headers[reply.header] = (str(math.ceil(reply.retry_after))
                                             if reply.header == "retry-after"
                                             else str(int(reply.retry_after * 1000)))
                return h.send_json(reply.status, _err(reply.message, reply.type,
                                                      code=reply.code), headers)
            events = [self._chunk(body, {"role": "assistant", "content": ""}, usage_null=include_usage)]
            events += [self._chunk(body, {"content": p}, usage_null=include_usage)
                       for p in split(reply.text, reply.after_chunks)[:reply.after_chunks]]
            if reply.kind == "stream_error":
                events.append({"error": {"message": reply.message, "type": reply.type,
                                         "param": None, "code": None}})
                return self._sse(h, events)
            chunked = reply.mode == "abort"
            h.sse_start(chunked=chunked)
            for ev in events:
                h.write(b"data: " + json.dumps(ev).encode() + b"\n\n", chunked)
            h.abort()
        if not body.get("stream"):
            return h.send_json(400, _err("this fake serves streamed requests only",
                                         "invalid_request_error"))
        prompt = count_tokens(json.dumps(body.get("messages")))
        deltas: list[dict] = [{"role": "assistant", "content": "", "refusal": None}]
        if isinstance(reply, (OText, OJson)):
            text = reply.text if isinstance(reply, OText) else json.dumps(reply.obj)
            if isinstance(reply, OText) and reply.refusal:
                deltas.append({"refusal": reply.refusal})
            else:
                deltas += [{"content": p} for p in split(text, reply.chunks)]
            out = count_tokens(text)
        elif isinstance(reply, OCalls):
            if reply.text:
                deltas.append({"content": reply.text})
            pieces = []
            for i, (name, args) in enumerate(reply.calls):
                raw = args if isinstance(args, str) else json.dumps(args)
                first = {"index": i, "id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
                         "function": {"name": name, "arguments": ""}}
                rest = [{"index": i, "function": {"arguments": p}}
                        for p in split(raw, reply.arg_chunks)]
                pieces.append([first] + rest)
            if reply.interleave:
                order = [p[k] for k in range(max(map(len, pieces))) for p in pieces if k < len(p)]
            else:
                order = [x for p in pieces for x in p]
            deltas += [{"tool_calls": [tc]} for tc in order]
            out = count_tokens((reply.text or "") + json.dumps(reply.calls))
        else:
            raise TypeError(f"not a reply: {reply!r}")
        usage = reply.usage or OUsage(prompt=prompt, completion=out)
        finish = reply.finish
        on_finish = isinstance(reply, OText) and reply.usage_on_finish
        events = [self._chunk(body, d, usage_null=include_usage) for d in deltas]
        if finish is not None:
            fin = self._chunk(body, {}, finish=finish, usage_null=include_usage and not on_finish)
            if on_finish:
                fin["usage"] = usage.to_json()
            events.append(fin)
        if include_usage and not on_finish and finish is not None:
            last = self._chunk(body, None)
            last["usage"] = usage.to_json()
            events.append(last)
        if finish is not None and (include_usage or on_finish):
            self.sent.append(usage)
        self._sse(h, events)

    @staticmethod
    def _chunk(body: dict, delta: Optional[dict], finish: Optional[str] = None,
               usage_null: bool = False) -> dict:
        c: dict = {"id": "chatcmpl-fake", "object": "chat.completion.chunk",
                   "created": int(time.time()), "model": body.get("model"),
                   "system_fingerprint": "fp_fake", "service_tier": "default",
                   "choices": [] if delta is None else [
                       {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
        if usage_null:
            c["usage"] = None
        return c

    @staticmethod
    def _sse(h, events: list) -> None:
        h.sse_start()
        for ev in events:
            h.write(b"data: " + json.dumps(ev).encode() + b"\n\n")
        h.write(b"data: [DONE]\n\n")
        h.sse_end()


def _err(message: str, type: str, code: Optional[str] = None, param: Optional[str] = None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}
