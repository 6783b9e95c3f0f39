"""A fake Gemini REST server for tests (stdlib only, loopback only).

It speaks the subset of the Gemini Developer API that google-genai 3.6.1 uses for
``models.generate_content``, ``models.generate_content_stream`` and
``models.count_tokens``, so the REAL SDK can be pointed at it::

    with FakeGemini(api_key="test-key") as srv:
        client = genai.Client(api_key="test-key",
                              http_options=types.HttpOptions(base_url=srv.base_url))
        # or: monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", srv.base_url)
        srv.enqueue(Text("hello", chunks=3, usage=Usage(prompt=10, candidates=5)))
        srv.enqueue(Fault.rate_limit(retry_delay_s=1.5))
        srv.script(lambda req: Call("read_file", {"path": "a.py"}))  # after the queue is empty
        ...
        srv.requests            # every RecordedRequest, in arrival order
        srv.usage_sent()        # Usage summed over every usageMetadata the server wrote

Routes: ``POST /{v1|v1beta|v1alpha}/models/{model}:generateContent``,
``:streamGenerateContent`` (SSE when ``?alt=sse``, else one JSON array, as Google
does) and ``:countTokens``. Anything else -> 404 with a Google-shaped JSON error.
A wrong or missing key (``x-goog-api-key`` header or ``?key=``) -> 400
INVALID_ARGUMENT "API key not valid. Please pass a valid API key." (what Google
returns for a bad key; for a *missing* key Google actually answers 403
PERMISSION_DENIED, but the SDK never sends a request without one).

Reply selection for generate/stream requests: first the FIFO queue filled by
``enqueue``; when it is empty the handler given to ``script`` (which may return
``None`` to fall back to the default); the default echoes a short text.
``countTokens`` never consumes the queue: it answers ``{"totalTokens": N}`` with
N = ceil(chars of all text parts / 4).

Usage on streams: the real API puts a partial ``usageMetadata`` (the prompt's
``promptTokenCount`` / ``totalTokenCount``) on intermediate chunks. By default this
server puts NO usage on intermediate chunks and the full final usage on the LAST
chunk only, so summing ``usage_metadata`` over chunks, or taking the last chunk's,
both give exactly what ``usage_sent()`` reports. ``partial_usage=True`` (on Text,
Json, Calls, ``Fault.cut_stream``) sends the partial usage on every chunk, as the real
API does: then a stream cut before its last chunk still carried usage, which is why
"no finish reason and no usage" can never be the test for a cut. Zero-valued optional
fields (cached, thoughts, tool_use) are omitted, as the real API does, so the SDK
shows them as ``None``.

How a stream ends (the endings Clutch must tell apart; issue 18). Wire format: the
REST reference of ``models.streamGenerateContent`` (GenerateContentResponse per SSE
``data:`` event; ``Candidate.finishReason`` is set on the last chunk only; FinishReason
values STOP, MAX_TOKENS, SAFETY, RECITATION, MALFORMED_FUNCTION_CALL,
UNEXPECTED_TOOL_CALL, ...) and the SDK source read for this, google-genai 3.6.1 in
``site-packages/google/genai/``: ``_api_client.py`` ``_iter_response_stream`` (splits
the body on blank lines, strips ``data: ``, and simply stops at EOF: a close-delimited
body cut short is indistinguishable from a normal end), ``models.py``
``generate_content_stream`` (``:streamGenerateContent?alt=sse``, one
GenerateContentResponse yielded per event), ``types.py`` ``FinishReason`` and
``Part.thought_signature`` (bytes; base64 in JSON).

- normal: the last chunk has ``finishReason: "STOP"`` and the final usage.
- no finish reason: ``Text(..., finish_reason=None)`` -- the chunked body ends properly,
  the last chunk has usage but no finishReason (seen from the real API: gemini-cli #9397).
- a cut: ``Fault.cut_stream(mode="abort")`` (incomplete chunked body: the HTTP client
  raises) or ``mode="eof"`` (close-delimited: the SDK just stops yielding).
- ``finish_reason="MAX_TOKENS"`` with the text so far; ``Fault.empty_candidate("no_parts",
  finish_reason="MAX_TOKENS")`` when thinking used the whole limit.
- ``Fault.empty_candidate("no_content", finish_reason="MALFORMED_FUNCTION_CALL")``: what
  Gemini sends when the model's function call could not be parsed (no content).
- ``trailing_signature=<base64>``: after the reply's parts, one more chunk whose only
  part is ``{"text": "", "thoughtSignature": ...}`` carrying the finishReason (reported
  for Gemini 3 streams: the signature of the turn's function call comes on its own).

Bookkeeping: ``replies`` / ``usage_sent()`` are updated just BEFORE the bytes that
carry them are written, so a test that has received a response can assert on them
without racing the server thread. A ``Fault.slow`` whose client gave up is recorded
(``completed=False``) only when its sleep ends.
"""

from __future__ import annotations

import json
import math
import re
import select
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Optional, Union
from urllib.parse import parse_qs

__all__ = [
    "FakeGemini", "RecordedRequest", "SentReply", "Usage",
    "Text", "Json", "Call", "Calls", "Raw", "Fault", "Reply",
    "count_text_tokens",
]

ROUTE = re.compile(
    r"^/(?P<version>v1|v1beta|v1alpha)/models/(?P<model>[^/:]+)"
    r":(?P<rpc>generateContent|streamGenerateContent|countTokens)$"
)

# HTTP status -> google.rpc.Code name, as Google's REST errors spell them.
STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "NOT_IMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
DEFAULT_MESSAGES = {
    400: "Request contains an invalid argument.",
    401: "Request had invalid authentication credentials.",
    403: "The caller does not have permission",
    404: "Requested entity was not found.",
    429: "Resource has been exhausted (e.g. check quota).",
    500: "An internal error has occurred. Please retry or report in "
         "https://developers.generativeai.google/guide/troubleshooting",
    502: "Bad gateway.",
    503: "The model is overloaded. Please try again later.",
    504: "The service is currently unavailable.",
}
BAD_KEY_MESSAGE = "API key not valid. Please pass a valid API key."

RETRY_INFO_TYPE = "type.googleapis.com/google.rpc.RetryInfo"
QUOTA_FAILURE_TYPE = "type.googleapis.com/google.rpc.QuotaFailure"
ERROR_INFO_TYPE = "type.googleapis.com/google.rpc.ErrorInfo"

OPENAPI_TYPES = {"TYPE_UNSPECIFIED", "STRING", "NUMBER", "INTEGER", "BOOLEAN", "ARRAY", "OBJECT", "NULL"}
JSON_SCHEMA_TYPES = {"string", "number", "integer", "boolean", "array", "object", "null"}

SAFETY_RATINGS = [
    {"category": "HARM_CATEGORY_HATE_SPEECH", "probability": "NEGLIGIBLE"},
    {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": True},
    {"category": "HARM_CATEGORY_HARASSMENT", "probability": "NEGLIGIBLE"},
    {"category": "HARM_CATEGORY_SEXUALLY_EXPLICIT", "probability": "NEGLIGIBLE"},
]


# --------------------------------------------------------------------------- usage

@dataclass
class Usage:
    """Token counts; ``to_json()`` gives Google's ``usageMetadata``.

    ``total`` = prompt + candidates + thoughts + tool_use (cached tokens are a
    subset of the prompt tokens, as in the real API, so they are not added).
    """
    prompt: int = 0
    candidates: int = 0
    cached: int = 0
    thoughts: int = 0
    tool_use: int = 0

    @property
    def total(self) -> int:
        return self.prompt + self.candidates + self.thoughts + self.tool_use

    def to_json(self) -> dict:
        d = {"promptTokenCount": self.prompt, "candidatesTokenCount": self.candidates,
             "totalTokenCount": self.total}
        if self.cached:
            d["cachedContentTokenCount"] = self.cached
        if self.thoughts:
            d["thoughtsTokenCount"] = self.thoughts
        if self.tool_use:
            d["toolUsePromptTokenCount"] = self.tool_use
        return d

    def __add__(self, other: "Usage") -> "Usage":
        return Usage(self.prompt + other.prompt, self.candidates + other.candidates,
                     self.cached + other.cached, self.thoughts + other.thoughts,
                     self.tool_use + other.tool_use)

    def as_dict(self) -> dict:
        """Field names as the SDK's ``usage_metadata`` spells them."""
        return {"prompt_token_count": self.prompt, "candidates_token_count": self.candidates,
                "cached_content_token_count": self.cached, "thoughts_token_count": self.thoughts,
                "tool_use_prompt_token_count": self.tool_use, "total_token_count": self.total}


def count_text_tokens(text: str) -> int:
    """The fake tokenizer: ceil(len(text) / 4)."""
    return (len(text) + 3) // 4


def _texts(obj: Any) -> list[str]:
    """Every ``"text"`` string value found anywhere in obj (parts, system instruction...)."""
    out: list[str] = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == "text" and isinstance(v, str):
                out.append(v)
            else:
                out.extend(_texts(v))
    elif isinstance(obj, list):
        for v in obj:
            out.extend(_texts(v))
    return out


# --------------------------------------------------------------------------- requests

@dataclass(frozen=True)
class RecordedRequest:
    method: str                       # "POST"
    path: str                         # "/v1beta/models/gemini-2.5-flash:generateContent"
    query: dict                       # {"alt": "sse"} (single values)
    headers: dict                     # lowercased keys
    body: Any                         # parsed JSON, or None when absent / not JSON
    model: Optional[str]              # "gemini-2.5-flash" (None for an unknown route)
    rpc: Optional[str]                # "generateContent" | "streamGenerateContent" | "countTokens" | None
    api_version: Optional[str] = None  # "v1" | "v1beta" | "v1alpha"
    raw_body: bytes = b""

    @property
    def api_key(self) -> Optional[str]:
        return self.headers.get("x-goog-api-key") or self.query.get("key")

    @property
    def contents(self) -> list:
        return (self.body or {}).get("contents") or []

    @property
    def prompt_text(self) -> str:
        """All text of contents + systemInstruction, joined by newlines."""
        b = self.body or {}
        return "\n".join(_texts(b.get("systemInstruction")) + _texts(b.get("contents")))

    @property
    def last_user_text(self) -> str:
        for c in reversed(self.contents):
            if c.get("role", "user") == "user":
                t = "".join(_texts(c))
                if t:
                    return t
        return ""

    @property
    def function_declarations(self) -> list[dict]:
        """Every declared function, in either accepted spelling."""
        out = []
        for tool in (self.body or {}).get("tools") or []:
            out.extend(tool.get("functionDeclarations") or tool.get("function_declarations") or [])
        return out

    @property
    def tool_names(self) -> list[str]:
        return [d.get("name") for d in self.function_declarations]


# --------------------------------------------------------------------------- replies

@dataclass
class Text:
    """A text answer. Streamed: split into ``chunks`` pieces (usage on the last)."""
    text: str
    chunks: int = 1
    usage: Optional[Usage] = None          # None -> estimated from request/response text
    finish_reason: Optional[str] = "STOP"  # None: the last chunk has no finishReason (a cut)
    chunk_delay: float = 0.0               # seconds slept between streamed chunks
    partial_usage: bool = False            # every chunk carries usage (see the docstring)
    trailing_signature: Optional[str] = None  # a last {"text": "", "thoughtSignature": ...}


@dataclass
class Json:
    """A text part holding ``json.dumps(obj)`` (structured output)."""
    obj: Any
    chunks: int = 1
    usage: Optional[Usage] = None
    finish_reason: Optional[str] = "STOP"
    chunk_delay: float = 0.0
    partial_usage: bool = False
    trailing_signature: Optional[str] = None


@dataclass
class Calls:
    """One or more functionCall parts, optionally preceded by a text part."""
    calls: list                             # [(name, args_dict), ...]
    text: Optional[str] = None
    usage: Optional[Usage] = None
    finish_reason: Optional[str] = "STOP"
    chunk_delay: float = 0.0
    partial_usage: bool = False
    trailing_signature: Optional[str] = None  # streamed as a last chunk of its own


class Call(Calls):
    """A single functionCall part: ``Call("write_file", {"path": "a.py"}, text=None, usage=None)``."""

    def __init__(self, name: str, args: Optional[dict] = None, text: Optional[str] = None,
                 usage: Optional[Usage] = None, finish_reason: Optional[str] = "STOP",
                 trailing_signature: Optional[str] = None, partial_usage: bool = False):
        super().__init__([(name, args or {})], text=text, usage=usage, finish_reason=finish_reason,
                         trailing_signature=trailing_signature, partial_usage=partial_usage)


@dataclass
class Raw:
    """Escape hatch: exactly this status, body (dict/list -> JSON, str/bytes as is) and headers."""
    status: int = 200
    body: Any = None
    headers: dict = field(default_factory=dict)


@dataclass
class Fault:
    """A failure mode. Build with the class methods, not directly."""
    kind: str
    status: int = 200
    message: Optional[str] = None
    retry_delay_s: Optional[float] = None
    via: str = "retry_info"
    seconds: float = 0.0
    then: Any = None
    after_chunks: int = 0
    text: str = ""
    mode: str = "abort"
    shape: str = "no_parts"
    finish_reason: str = "STOP"
    usage: Optional[Usage] = None

    @classmethod
    def rate_limit(cls, retry_delay_s: float = 1.0, via: str = "retry_info",
                   message: Optional[str] = None) -> "Fault":
        """429 RESOURCE_EXHAUSTED. via="retry_info": error.details holds a QuotaFailure and a
        RetryInfo {"retryDelay": "<retry_delay_s>s"}; via="retry_after": a ``Retry-After``
        header (integer seconds, ceil) and no RetryInfo; via="both": both."""
        if via not in ("retry_info", "retry_after", "both"):
            raise ValueError(f"via={via!r}")
        return cls("rate_limit", status=429, retry_delay_s=retry_delay_s, via=via,
                   message=message or "You exceeded your current quota, please check your plan "
                                      "and billing details.")

    @classmethod
    def server_error(cls, status: int = 500, message: Optional[str] = None) -> "Fault":
        if not 500 <= status < 600:
            raise ValueError("server_error needs a 5xx status")
        return cls("error", status=status, message=message)

    @classmethod
    def client_error(cls, status: int = 400, message: Optional[str] = None) -> "Fault":
        if not 400 <= status < 500:
            raise ValueError("client_error needs a 4xx status")
        return cls("error", status=status, message=message)

    @classmethod
    def slow(cls, seconds: float, then: Any = None) -> "Fault":
        """Sleep ``seconds`` before answering with ``then`` (default: the default reply).
        If the client hung up meanwhile, nothing is written and no usage is counted."""
        return cls("slow", seconds=seconds, then=then)

    @classmethod
    def cut_stream(cls, after_chunks: int = 2, text: str = "partial answer that never ends",
                   mode: str = "abort", partial_usage: bool = False) -> "Fault":
        """Stream ``after_chunks`` text chunks of ``text`` (no finishReason; no usage, or with
        ``partial_usage`` the partial usageMetadata the real API puts on every chunk), then:
        mode="abort": the body is chunked and the socket is closed without the final
        zero-length chunk -> the HTTP client sees an incomplete body and raises
        (httpx2.RemoteProtocolError with google-genai 3.6.1; see the tests);
        mode="eof": the body is close-delimited, so closing looks like a normal end ->
        the SDK just stops yielding: a silently truncated stream with no finish_reason.
        For a non-stream request it behaves like abort: headers with Content-Length, half a body."""
        if mode not in ("abort", "eof"):
            raise ValueError(f"mode={mode!r}")
        return cls("cut_stream", after_chunks=after_chunks, text=text, mode=mode,
                   usage=Usage() if partial_usage else None)

    @classmethod
    def stream_error(cls, after_chunks: int = 1, status: int = 503, text: str = "partial",
                     message: Optional[str] = None) -> "Fault":
        """SSE: ``after_chunks`` good chunks then a ``data: {"error": {...}}`` event (Google does
        this when a stream fails after it started). Non-stream: the plain error."""
        return cls("stream_error", status=status, after_chunks=after_chunks, text=text,
                   message=message)

    @classmethod
    def malformed_json(cls) -> "Fault":
        """200 whose body is not JSON; on SSE one ``data:`` line that is not JSON."""
        return cls("malformed_json")

    @classmethod
    def empty_candidate(cls, shape: str = "no_parts", finish_reason: str = "STOP",
                        usage: Optional[Usage] = None) -> "Fault":
        """shape="no_candidates": {"candidates": [], "usageMetadata"}; "no_parts": a candidate
        whose content is {"role": "model"} with no parts (what Gemini 2.5 sends when thinking
        eats max_output_tokens, with finish_reason="MAX_TOKENS"); "no_content": a candidate
        with finishReason only."""
        if shape not in ("no_candidates", "no_parts", "no_content"):
            raise ValueError(f"shape={shape!r}")
        return cls("empty_candidate", shape=shape, finish_reason=finish_reason, usage=usage)

    @classmethod
    def safety_blocked(cls, usage: Optional[Usage] = None) -> "Fault":
        """A candidate with finishReason "SAFETY", safetyRatings, and no content."""
        return cls("safety_blocked", finish_reason="SAFETY", usage=usage)

    @classmethod
    def prompt_blocked(cls, reason: str = "SAFETY", usage: Optional[Usage] = None) -> "Fault":
        """No candidates; promptFeedback {"blockReason": reason, "safetyRatings": [...]}."""
        return cls("prompt_blocked", finish_reason=reason, usage=usage)


Reply = Union[Text, Json, Calls, Raw, Fault]
Handler = Callable[[RecordedRequest], Optional[Reply]]


@dataclass(frozen=True)
class SentReply:
    """What the server wrote for one request (``FakeGemini.replies``)."""
    rpc: Optional[str]
    model: Optional[str]
    status: int
    kind: str                          # "text", "json", "calls", "raw", fault kind, "error", "count_tokens"...
    usage: Optional[Usage]             # the usageMetadata written, if any
    chunks: int = 0                    # SSE events written (0 for non-stream)
    completed: bool = True             # False when the client hung up / the stream was cut


def google_error(status: int, message: Optional[str] = None, details: Optional[list] = None) -> dict:
    err = {"code": status, "message": message or DEFAULT_MESSAGES.get(status, "Error."),
           "status": STATUS_NAMES.get(status, "UNKNOWN")}
    if details:
        err["details"] = details
    return {"error": err}


def _split(text: str, n: int) -> list[str]:
    n = max(1, n)
    if len(text) < n:
        return [text] + [""] * (n - 1) if text else [""] * n
    size, rem = divmod(len(text), n)
    out, i = [], 0
    for k in range(n):
        j = i + size + (1 if k < rem else 0)
        out.append(text[i:j])
        i = j
    return out


class _Cut(Exception):
    """Raised inside the handler to drop the connection."""


# --------------------------------------------------------------------------- server

class FakeGemini:
    """A scripted Gemini REST server on 127.0.0.1:<free port>, in a daemon thread."""

    def __init__(self, api_key: Optional[str] = "test-key", known_models: Optional[set] = None,
                 validate: bool = True):
        self.api_key = api_key               # None: accept any key
        self.known_models = set(known_models) if known_models else None
        self.validate = validate             # 400 on a malformed tools / contents body
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._replies: list[SentReply] = []
        self._queue: list[Reply] = []
        self._handler: Optional[Handler] = None
        self._stopping = threading.Event()
        self._conns: set = set()
        self._httpd: Optional[ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None
        self.handler_errors: list[BaseException] = []   # exceptions raised while answering
        self._generation = 0                 # bumped by reset(): late writers of old requests are ignored

    # ---- lifecycle
    def start(self) -> "FakeGemini":
        if self._httpd is not None:
            return self
        self._stopping.clear()
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), _RequestHandler)
        httpd.daemon_threads = True
        httpd.fake = self  # type: ignore[attr-defined]
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-gemini", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopping.set()                 # wakes Fault.slow sleepers
        httpd.shutdown()
        httpd.server_close()
        with self._lock:
            conns = list(self._conns)
        for c in conns:                      # kept-alive client connections
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread:
            self._thread.join(timeout=2)

    def __enter__(self) -> "FakeGemini":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # ---- scripting
    def script(self, handler: Optional[Handler]) -> None:
        """handler(req) -> Reply (or None for the default reply); used when the queue is empty."""
        self._handler = handler

    def enqueue(self, *replies: Reply) -> None:
        """FIFO replies, consumed one per generate/stream request, before the handler."""
        with self._lock:
            self._queue.extend(replies)

    def pending(self) -> int:
        with self._lock:
            return len(self._queue)

    def reset(self) -> None:
        """Forget requests, replies, queue and handler."""
        with self._lock:
            self._requests.clear()
            self._replies.clear()
            self._queue.clear()
            self._handler = None
            self.handler_errors.clear()
            self._generation += 1

    # ---- inspection
    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def requests_for(self, model: Optional[str] = None, rpc: Optional[str] = None) -> list[RecordedRequest]:
        return [r for r in self.requests
                if (model is None or r.model == model.removeprefix("models/"))
                and (rpc is None or r.rpc == rpc)]

    @property
    def replies(self) -> list[SentReply]:
        with self._lock:
            return list(self._replies)

    def usage_sent(self, model: Optional[str] = None) -> Usage:
        """Sum of every usageMetadata the server wrote (optionally for one model)."""
        total = Usage()
        for r in self.replies:
            if r.usage is not None and (model is None or r.model == model.removeprefix("models/")):
                total = total + r.usage
        return total

    # ---- internals used by the handler
    def _record(self, req: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(req)

    def _sent(self, rep: SentReply, generation: int) -> None:
        with self._lock:
            if generation == self._generation:
                self._replies.append(rep)

    def _next_reply(self, req: RecordedRequest) -> Reply:
        with self._lock:
            if self._queue:
                return self._queue.pop(0)
            handler = self._handler
        reply = handler(req) if handler else None
        return reply if reply is not None else self.default_reply(req)

    @staticmethod
    def default_reply(req: RecordedRequest) -> Reply:
        return Text("echo: " + req.last_user_text[:80])


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeGemini/1.0"

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    @property
    def fake(self) -> FakeGemini:
        return self.server.fake  # type: ignore[attr-defined]

    def setup(self) -> None:
        super().setup()
        # Small writes (SSE events, the chunked terminator) must not wait for delayed ACKs.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.fake._lock:
            self.fake._conns.add(self.connection)

    def handle(self) -> None:
        try:
            super().handle()
        except OSError:  # the client dropped a kept-alive connection: not an error
            self.close_connection = True

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.fake._lock:
                self.fake._conns.discard(self.connection)

    # ---- entry points
    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def _handle(self) -> None:
        try:
            self._dispatch()
        except (_Cut, BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            self.close_connection = True
        except Exception as e:  # a bug in a test's handler or reply: answer 500, keep it for the test
            with self.fake._lock:
                self.fake.handler_errors.append(e)
            self.close_connection = True
            try:
                self._json(500, google_error(500, f"fake server error: {e!r}"))
            except OSError:
                pass

    def _record_sent(self, rep: SentReply) -> None:
        self.fake._sent(rep, self._gen)

    def _dispatch(self) -> None:
        self._gen = self.fake._generation
        path, _, qs = self.path.partition("?")
        query = {k: v[0] for k, v in parse_qs(qs, keep_blank_values=True).items()}
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw) if raw else None
            body_ok = True
        except ValueError:
            body, body_ok = None, False
        m = ROUTE.match(path) if self.command == "POST" else None
        req = RecordedRequest(
            method=self.command, path=path, query=query,
            headers={k.lower(): v for k, v in self.headers.items()}, body=body,
            model=m["model"] if m else None, rpc=m["rpc"] if m else None,
            api_version=m["version"] if m else None, raw_body=raw)
        fake = self.fake
        fake._record(req)

        if not m:
            return self._error(req, 404, f"Route {self.command} {path} not found.", kind="no_route")
        if fake.api_key is not None and req.api_key != fake.api_key:
            return self._error(req, 400, BAD_KEY_MESSAGE, kind="bad_key", details=[
                {"@type": ERROR_INFO_TYPE, "reason": "API_KEY_INVALID",
                 "domain": "googleapis.com", "metadata": {"service": "generativelanguage.googleapis.com"}}])
        if not body_ok:
            return self._error(req, 400, "Invalid JSON payload received.", kind="bad_body")
        if fake.known_models is not None and req.model not in fake.known_models:
            return self._error(req, 404, f"models/{req.model} is not found for API version "
                               f"{req.api_version}, or is not supported for {req.rpc}.", kind="no_model")
        if fake.validate:
            problem = _validate(body or {})
            if problem:
                return self._error(req, 400, problem, kind="invalid")
        if req.rpc == "countTokens":
            n = count_text_tokens("".join(_texts(body)))
            self._record_sent(SentReply(req.rpc, req.model, 200, "count_tokens", None))
            return self._json(200, {"totalTokens": n})

        reply = fake._next_reply(req)
        stream = req.rpc == "streamGenerateContent"
        sse = stream and req.query.get("alt") == "sse"
        self._reply(req, reply, stream, sse)

    # ---- replies
    def _reply(self, req: RecordedRequest, reply: Reply, stream: bool, sse: bool) -> None:
        fake = self.fake
        if isinstance(reply, Fault):
            k = reply.kind
            if k == "slow":
                if fake._stopping.wait(reply.seconds) or self._client_gone():
                    self._record_sent(SentReply(req.rpc, req.model, 0, "slow", None, completed=False))
                    raise _Cut()
                return self._reply(req, reply.then if reply.then is not None else fake.default_reply(req),
                                   stream, sse)
            if k == "rate_limit":
                details, headers = [], {}
                if reply.via in ("retry_info", "both"):
                    details = [
                        {"@type": QUOTA_FAILURE_TYPE, "violations": [{
                            "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
                            "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
                            "quotaDimensions": {"location": "global", "model": req.model},
                            "quotaValue": "10"}]},
                        {"@type": RETRY_INFO_TYPE, "retryDelay": f"{reply.retry_delay_s:g}s"},
                    ]
                if reply.via in ("retry_after", "both"):
                    headers["Retry-After"] = str(math.ceil(reply.retry_delay_s or 0))
                return self._error(req, 429, reply.message, kind="rate_limit", details=details,
                                   headers=headers)
            if k == "error":
                return self._error(req, reply.status, reply.message, kind="error")
            if k == "stream_error":
                if not sse:
                    return self._error(req, reply.status, reply.message, kind="error")
                events = [self._chunk(req, [{"text": p}]) for p in _split(reply.text, reply.after_chunks)] \
                    if reply.after_chunks else []
                events.append(google_error(reply.status, reply.message))
                self._sse(req, events, "stream_error", None)
                return
            if k == "malformed_json":
                self._record_sent(SentReply(req.rpc, req.model, 200, "malformed_json", None))
                if sse:
                    self._sse_raw([b'data: {"candidates": [{"content": {"parts": [{"text": "oops"'
                                   b'}]}}]  <- not json\r\n\r\n'])
                else:
                    self._send(200, b'{"candidates": [{"content": <html>Bad Gateway</html>',
                               "application/json")
                return
            if k == "cut_stream":
                return self._cut(req, reply, sse)
            if k in ("empty_candidate", "safety_blocked", "prompt_blocked"):
                usage = reply.usage or Usage(prompt=count_text_tokens(req.prompt_text))
                if k == "empty_candidate":
                    if reply.shape == "no_candidates":
                        obj = {"candidates": []}
                    elif reply.shape == "no_parts":
                        obj = {"candidates": [{"content": {"role": "model"},
                                               "finishReason": reply.finish_reason, "index": 0}]}
                    else:
                        obj = {"candidates": [{"finishReason": reply.finish_reason, "index": 0}]}
                elif k == "safety_blocked":
                    obj = {"candidates": [{"finishReason": "SAFETY", "index": 0,
                                           "safetyRatings": SAFETY_RATINGS}]}
                else:
                    obj = {"promptFeedback": {"blockReason": reply.finish_reason,
                                              "safetyRatings": SAFETY_RATINGS}}
                obj["usageMetadata"] = usage.to_json()
                obj["modelVersion"] = req.model
                obj["responseId"] = uuid.uuid4().hex[:22]
                return self._complete(req, [obj], k, usage, stream, sse)
            raise ValueError(f"unknown fault {k}")

        if isinstance(reply, Raw):
            body = reply.body
            if isinstance(body, (dict, list)):
                data, ctype = json.dumps(body).encode(), "application/json; charset=UTF-8"
            else:
                data = body.encode() if isinstance(body, str) else (body or b"")
                ctype = reply.headers.get("Content-Type", "application/json; charset=UTF-8")
            self._record_sent(SentReply(req.rpc, req.model, reply.status, "raw", None))
            self._send(reply.status, data, ctype, {k: v for k, v in reply.headers.items()
                                                   if k.lower() != "content-type"})
            return

        # Text / Json / Calls
        if isinstance(reply, (Text, Json)):
            text = reply.text if isinstance(reply, Text) else json.dumps(reply.obj)
            pieces = _split(text, reply.chunks if sse or stream else 1)
            parts_per_chunk = [[{"text": p}] for p in pieces]
            kind = "text" if isinstance(reply, Text) else "json"
            out_tokens = count_text_tokens(text)
            delay = reply.chunk_delay
        elif isinstance(reply, Calls):
            calls = [{"functionCall": {"name": n, "args": a or {}}} for n, a in reply.calls]
            parts = ([{"text": reply.text}] if reply.text else []) + calls
            parts_per_chunk = [parts]
            kind = "calls"
            out_tokens = count_text_tokens((reply.text or "") + json.dumps(calls))
            delay = reply.chunk_delay
        else:
            raise TypeError(f"not a reply: {reply!r}")
        if reply.trailing_signature is not None:   # Gemini 3: the signature on its own part
            parts_per_chunk.append([{"text": "", "thoughtSignature": reply.trailing_signature}])
        usage = reply.usage or Usage(prompt=count_text_tokens(req.prompt_text), candidates=out_tokens)
        if not stream:  # one response: all parts together
            parts_per_chunk = [[p for ps in parts_per_chunk for p in ps]]
            parts_per_chunk = [_merge_text(parts_per_chunk[0])]
        chunks = []
        for i, ps in enumerate(parts_per_chunk):
            last = i == len(parts_per_chunk) - 1
            # the real API's intermediate chunks carry the prompt's usage so far
            partial = Usage(prompt=usage.prompt, cached=usage.cached) if reply.partial_usage else None
            chunks.append(self._chunk(req, ps, reply.finish_reason if last else None,
                                      usage if last else partial))
        self._complete(req, chunks, kind, usage, stream, sse, delay)

    @staticmethod
    def _chunk(req: RecordedRequest, parts: list, finish: Optional[str] = None,
               usage: Optional[Usage] = None) -> dict:
        cand: dict = {"content": {"role": "model", "parts": parts}, "index": 0}
        if finish:
            cand["finishReason"] = finish
        obj: dict = {"candidates": [cand]}
        if usage is not None:
            obj["usageMetadata"] = usage.to_json()
        obj["modelVersion"] = req.model
        obj["responseId"] = "fake-" + str(id(req))
        return obj

    def _complete(self, req, chunks: list, kind: str, usage: Optional[Usage], stream: bool,
                  sse: bool, delay: float = 0.0) -> None:
        if sse:
            self._sse(req, chunks, kind, usage, delay)
        elif stream:  # streamGenerateContent without alt=sse: Google sends one JSON array
            self._record_sent(SentReply(req.rpc, req.model, 200, kind, usage, len(chunks)))
            self._json(200, chunks)
        else:
            self._record_sent(SentReply(req.rpc, req.model, 200, kind, usage))
            self._json(200, chunks[0])

    def _error(self, req, status: int, message: Optional[str], kind: str,
               details: Optional[list] = None, headers: Optional[dict] = None) -> None:
        self._record_sent(SentReply(req.rpc, req.model, status, kind, None))
        self._json(status, google_error(status, message, details), headers)

    def _cut(self, req: RecordedRequest, reply: Fault, sse: bool) -> None:
        pieces = _split(reply.text, max(1, reply.after_chunks))[: reply.after_chunks]
        partial = (Usage(prompt=count_text_tokens(req.prompt_text))
                   if reply.usage is not None and pieces else None)
        events = [self._chunk(req, [{"text": p}], usage=partial) for p in pieces]
        self._record_sent(SentReply(req.rpc, req.model, 200, "cut_stream", partial, len(events),
                                  completed=False))
        if not sse:
            data = json.dumps(events[0] if req.rpc == "generateContent" and events else events).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json; charset=UTF-8")
            self.send_header("Content-Length", str(len(data) + 100))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
        else:
            chunked = reply.mode == "abort"
            self._sse_headers(chunked=chunked)
            for ev in events:
                self._write_event(json.dumps(ev).encode(), chunked)
        self._abort_socket()

    # ---- low level
    def _json(self, status: int, obj: Any, headers: Optional[dict] = None) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json; charset=UTF-8", headers)

    def _send(self, status: int, data: bytes, ctype: str, headers: Optional[dict] = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _sse_headers(self, chunked: bool = True) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        if chunked:  # the connection stays reusable (keep-alive) once the 0-chunk is sent
            self.send_header("Transfer-Encoding", "chunked")
        else:  # close-delimited body (HTTP/1.1 allows it with Connection: close)
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()

    def _write_event(self, payload: bytes, chunked: bool = True) -> None:
        self._write_body(b"data: " + payload + b"\r\n\r\n", chunked)

    def _write_body(self, data: bytes, chunked: bool = True) -> None:
        if chunked:
            data = b"%x\r\n%s\r\n" % (len(data), data)
        self.wfile.write(data)
        self.wfile.flush()

    def _end_chunked(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _sse(self, req, events: list, kind: str, usage: Optional[Usage], delay: float = 0.0) -> None:
        self._sse_headers()
        for i, ev in enumerate(events):
            if i and delay:
                time.sleep(delay)
            if i == len(events) - 1:
                # Recorded before the last event is written, so the client can never see the
                # final usage before usage_sent() includes it.
                self._record_sent(SentReply(req.rpc, req.model, 200, kind, usage, len(events)))
            self._write_event(json.dumps(ev).encode())
        self._end_chunked()

    def _sse_raw(self, payloads: list[bytes]) -> None:
        self._sse_headers()
        for p in payloads:
            self._write_body(p)
        self._end_chunked()

    def _client_gone(self) -> bool:
        """True when the client closed its end (e.g. after its own timeout)."""
        try:
            r, _, _ = select.select([self.connection], [], [], 0)
            return bool(r) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _abort_socket(self) -> None:
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        raise _Cut()


def _merge_text(parts: list) -> list:
    """Join adjacent text parts (a non-stream response has one text part)."""
    out: list = []
    for p in parts:
        if "text" in p and len(p) == 1 and out and "text" in out[-1] and len(out[-1]) == 1:
            out[-1] = {"text": out[-1]["text"] + p["text"]}
        else:
            out.append(dict(p))
    return out


# --------------------------------------------------------------------------- validation

def _validate(body: dict) -> Optional[str]:
    """A few of the checks Google makes; returns an error message or None."""
    if not isinstance(body, dict):
        return "Invalid JSON payload received. Expected an object."
    contents = body.get("contents")
    if contents is not None and not isinstance(contents, list):
        return "Invalid JSON payload received. Invalid value at 'contents'."
    for i, c in enumerate(contents or []):
        if not isinstance(c, dict) or not isinstance(c.get("parts", []), list):
            return f"Invalid value at 'contents[{i}]'."
        if c.get("role") not in (None, "user", "model", "function", "tool"):
            return f"Please use a valid role: user, model. (contents[{i}].role={c.get('role')!r})"
    tools = body.get("tools") or []
    if not isinstance(tools, list):
        return "Invalid value at 'tools'."
    for t_i, tool in enumerate(tools):
        decls = tool.get("functionDeclarations", tool.get("function_declarations")) or []
        for d_i, d in enumerate(decls):
            where = f"tools[{t_i}].function_declarations[{d_i}]"
            if not d.get("name"):
                return f"* GenerateContentRequest.{where}.name: Name cannot be empty."
            params = d.get("parameters")
            js = d.get("parametersJsonSchema", d.get("parameters_json_schema"))
            if params is not None and js is not None:
                return (f"* GenerateContentRequest.{where}: parameters and parameters_json_schema "
                        "cannot both be set.")
            if params is not None:
                bad = _check_schema(params, OPENAPI_TYPES, f"{where}.parameters")
                if bad:
                    return bad
            if js is not None:
                bad = _check_schema(js, JSON_SCHEMA_TYPES, f"{where}.parameters_json_schema")
                if bad:
                    return bad
    return None


def _check_schema(schema: Any, allowed: set, where: str) -> Optional[str]:
    if not isinstance(schema, dict):
        return f"Invalid value at '{where}'."
    typ = schema.get("type")
    types_ = typ if isinstance(typ, list) else [typ] if typ is not None else []
    for t in types_:
        if t not in allowed:
            return f"Invalid value at '{where}.type' ({t!r})."
    for name, sub in (schema.get("properties") or {}).items():
        bad = _check_schema(sub, allowed, f"{where}.properties[{name}]")
        if bad:
            return bad
    if isinstance(schema.get("items"), dict):
        return _check_schema(schema["items"], allowed, f"{where}.items")
    return None
