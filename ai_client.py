"""Providers, agent sessions with the tool loop, the comms log, token and cost accounting.

- `Provider` is the model seam: `generate(request, on_chunk, on_retry) -> ModelResponse`, blocking,
  called from executor threads. `OfflineProvider` is the embedded deterministic model;
  `FunctionProvider` wraps a plain function (tests); `GeminiProvider` talks to google-genai.
- `AgentSession` owns one agent's history and runs the tool loop.
- `CommsLog` is the one record of every call; usage sums per tier/track/ticket are kept
  incrementally from tagged entries, so they stay exact when workers run in parallel.

Imports: models, events only. Tool declarations arrive as data (objects with `name`,
`description`, `parameters`), so this module knows nothing of tools.py.
"""
from __future__ import annotations

import array
import hashlib
import json
import operator as _operator
import os
from functools import reduce as _reduce
from itertools import repeat as _repeat
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ValidationError

from events import Event, StreamChunk, UsageEvent
from models import Price, Usage, cost_of


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


@dataclass
class ModelResponse:
    text: str
    tool_calls: list[ToolCall] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    model: str = ""
    finish_reason: str = "STOP"


class ProviderError(Exception):
    """A model call failed. `retryable` says whether trying again could help; `streamed` that
    some text had already reached the stream when it failed."""

    def __init__(self, message: str, *, status: int | None = None, retryable: bool = False,
                 streamed: bool = False, retry_after: float | None = None,
                 usage: Usage | None = None):
        super().__init__(message)
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


class _ToolsTextCache:
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


# ---------------------------------------------------------------------------------------------
# The offline model
# ---------------------------------------------------------------------------------------------

_STOP_WORDS = frozenset("a an the and or of to for in on with its it their our your add make "
                        "create implement build write new into from by as at be is are this that "
                        "then".split())


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def _slug(text: str, max_words: int = 3) -> str:
    ws = [w for w in _words(text) if w not in _STOP_WORDS] or _words(text) or ["work"]
    return "_".join(ws[:max_words])[:32].strip("_") or "work"


def _digest(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8", "replace")).digest()[:8], "big")


class OfflineProvider:
    """A deterministic local model. Same request in, same answer out.

    Tier 1 -> 2 or 3 tracks; Tier 2 -> a 4-6 ticket DAG with real parallelism; Tier 3 -> a worker
    that lists, reads, writes, edits and runs one shell command, then summarises; Tier 4 -> a
    diagnosis. It reads the prompts' section markers the way a model reads prose, so an edited
    prompt changes what it does. Streams in chunks `pace_s` apart, after `latency_s`.
    """

    name = "offline"

    def __init__(self, pace_s: float = 0.01, latency_s: float = 0.0, chunk_chars: int = 24,
                 sleep: Callable[[float], None] = time.sleep):
        self.pace_s = pace_s
        self.latency_s = latency_s
        self.chunk_chars = max(1, chunk_chars)
        self._sleep = sleep
        self._request_text = _ToolsTextCache()

    def generate(self, request: ModelRequest, on_chunk: ChunkFn,
                 on_retry: RetryFn | None = None) -> ModelResponse:
        if self.latency_s:
            self._sleep(self.latency_s)
        if request.tier == "Tier 1":
            text, calls = self._tier1(request), []
        elif request.tier == "Tier 2":
            text, calls = self._tier2(request), []
        elif request.tier == "Tier 3":
            text, calls = self._tier3(request)
        else:
            text, calls = self._tier4(request), []
        n = self.chunk_chars
        for i in range(0, len(text), n):
            on_chunk(text[i:i + n])
            if self.pace_s:
                self._sleep(self.pace_s)
        out_text = text + "".join(json.dumps({"name": c.name, "args": c.args}) for c in calls)
        inp = estimate_tokens(self._request_text(request))
        out = estimate_tokens(out_text)
        usage = Usage(input_tokens=inp, output_tokens=out, total_tokens=inp + out, requests=1)
        return ModelResponse(text=text, tool_calls=calls, usage=usage, model="offline",
                             finish_reason="STOP")

    # -- Tier 1 -----------------------------------------------------------------------------
    @staticmethod
    def _section(text: str, name: str) -> str:
        m = re.search(rf"^{re.escape(name)}:[ \t]*(.*?)(?=^\s*$|^[A-Z][A-Z0-9 -]+(?: \([^)\n]*\))?:|\Z)",
                      text, re.M | re.S)
        return m.group(1).strip() if m else ""

    def _tier1(self, req: ModelRequest) -> str:
        user = req.messages[0].text if req.messages else ""
        epic = self._section(user, "EPIC") or user.strip() or "the epic"
        subject = " ".join(epic.split()[:12])
        subject_l = subject[0].lower() + subject[1:] if subject else subject
        slug = _slug(epic)
        h = _digest(epic)
        tracks = [
            {"title": f"Core: {subject}"[:120],
             "goal": f"Implement the heart of the epic: {epic.strip()[:400]}",
             "acceptance_criteria": [f"The {slug.replace('_', ' ')} code exists under src/",
                                     "Every new module compiles",
                                     "Changes are limited to the files the tickets name"]},
            {"title": f"Tests: {subject}"[:120],
             "goal": f"Cover {subject_l} with automated tests.",
             "acceptance_criteria": ["A test module exercises the new code",
                                     "The tests compile"]},
        ]
        if h % 2 == 0 or len(epic) > 200:
            tracks.append({"title": f"Docs: {subject}"[:120],
                           "goal": f"Explain {subject_l} to the next developer.",
                           "acceptance_criteria": ["A markdown page describes the change"]})
        return json.dumps({"tracks": tracks}, indent=1, ensure_ascii=False)

    # -- Tier 2 -----------------------------------------------------------------------------
    def _tier2(self, req: ModelRequest) -> str:
        user = req.messages[0].text if req.messages else ""
        title = self._section(user, "TRACK") or "work"
        try:
            first = int(self._section(user, "FIRST TICKET NUMBER") or "1")
        except ValueError:
            first = 1
        slug = _slug(title)
        n = 4 + _digest(title) % 3
        ids = [f"T-{first + i:03d}" for i in range(n)]
        specs = [
            (f"Create the package skeleton for {slug}", [f"src/{slug}/__init__.py"], [], []),
            (f"Implement the core logic of {slug}", [f"src/{slug}/core.py"], [0], ["README.md"]),
            (f"Implement the helpers of {slug}", [f"src/{slug}/helpers.py"], [0], []),
            (f"Add tests for {slug}", [f"tests/test_{slug}.py"], [1, 2], []),
            (f"Document {slug}", [f"docs/{slug}.md"], [0], []),
            (f"Write the change notes for {slug}", [f"docs/{slug}_changes.md"], [3, 4], []),
        ][:n]
        tickets = [{"id": ids[i], "description": d, "target_files": files,
                    "context_requirements": ctx, "depends_on": [ids[j] for j in deps]}
                   for i, (d, files, deps, ctx) in enumerate(specs)]
        return json.dumps({"tickets": tickets}, indent=1, ensure_ascii=False)

    # -- Tier 3 -----------------------------------------------------------------------------
    def _tier3(self, req: ModelRequest) -> tuple[str, list[ToolCall]]:
        first = req.messages[0].text if req.messages else ""
        m = re.search(r"^TICKET\s+(\S+?):\s*(.*)$", first, re.M)
        ticket_id = m.group(1) if m else "T-?"
        description = m.group(2).strip() if m else first.strip()[:200]
        targets_raw = self._section(first, "TARGET FILES")
        targets = [t.strip() for t in targets_raw.split(",")
                   if t.strip() and not t.strip().startswith("(")]
        context = re.findall(r"^- (\S+)$", self._section(first, "CONTEXT FILES"), re.M)
        turn = sum(1 for msg in req.messages if msg.role == "model")
        prefix = f"c{turn}"

        def call(i: int, name: str, **args: Any) -> ToolCall:
            return ToolCall(id=f"{ticket_id}-{prefix}-{i}", name=name, args=args)

        if turn == 0:
            calls = [call(0, "list_dir", path=".")]
            calls += [call(i + 1, "read_file", path=c) for i, c in enumerate(context)]
            return (f"Ticket {ticket_id}: {description}\nI'll look at the workspace first.\n",
                    calls)
        if turn == 1:
            if not targets:
                return "No target files are named; nothing to write.\n", [
                    call(0, "run_shell", command="ls -la")]
            calls = [call(i, "write_file", path=t, content=_offline_file(t, ticket_id, description))
                     for i, t in enumerate(targets)]
            return f"Writing {', '.join(targets)}.\n", calls
        if turn == 2 and targets:
            t = targets[0]
            return f"Marking {t} as reviewed.\n", [
                call(0, "edit_file", path=t, old="STATUS: draft", new="STATUS: reviewed")]
        if turn == 3 and targets:
            py = [t for t in targets if t.endswith(".py")]
            cmd = ("python3 -m py_compile " + " ".join(_shell_quote(p) for p in py) + " && echo compiled"
                   if py else "wc -l " + " ".join(_shell_quote(t) for t in targets))
            return "Checking the result.\n", [call(0, "run_shell", command=cmd)]
        # final answer: summarise what the tools said
        problems = []
        for msg in req.messages:
            for r in msg.tool_returns:
                if not r.result.get("ok", True):
                    problems.append(f"{r.name}: {str(r.result.get('error', ''))[:160]}")
        summary = f"Done with {ticket_id}. Files: {', '.join(targets) or '(none)'}."
        if problems:
            summary += " Problems seen: " + "; ".join(problems)
        return summary + "\n", []

    # -- Tier 4 -----------------------------------------------------------------------------
    def _tier4(self, req: ModelRequest) -> str:
        user = req.messages[0].text if req.messages else ""
        out = self._section(user, "OUTPUT")
        what = self._section(user, f"FAILURE IN TICKET {req.ticket_id}") or user[:200]
        lines = [ln for ln in out.splitlines() if ln.strip()]
        last = lines[-1].strip() if lines else "(no output)"
        hint = "a missing file or command" if re.search(r"not found|No such file", out) else \
            "a syntax or runtime error in the code" if re.search(r"Error|Traceback", out) else \
            "a failing check"
        return (f"Diagnosis: the step failed on {hint}. Last line: {last[:200]}\n"
                f"Next steps: 1) read the full output of: {what.strip()[:160]} "
                f"2) fix the file it names 3) run the check again.\n")


def _shell_quote(s: str) -> str:
    return "'" + s.replace("'", "'\\''") + "'"


def _offline_file(path: str, ticket_id: str, description: str) -> str:
    name = Path(path).stem
    if path.endswith(".py"):
        if Path(path).name.startswith("test_"):
            return (f'"""Tests written by {ticket_id}: {description}"""\n# STATUS: draft\n\n\n'
                    f"def test_{_slug(name, 4)}_smoke():\n    assert True is not False\n")
        ident = re.sub(r"\W", "_", name) or "module"
        return (f'"""{description}\n\nWritten by {ticket_id}.\n"""\n# STATUS: draft\n\n\n'
                f"def {ident}_info() -> dict:\n"
                f'    return {{"ticket": "{ticket_id}", "module": "{ident}"}}\n')
    if path.endswith(".md"):
        return f"# {description}\n\nSTATUS: draft\n\nWritten by {ticket_id}.\n"
    return f"{description}\nSTATUS: draft\nWritten by {ticket_id}\n"


class FunctionProvider:
    """A provider backed by a plain function `fn(request) -> ModelResponse | str` (tests)."""

    def __init__(self, fn: Callable[[ModelRequest], ModelResponse | str], name: str = "function"):
        self._fn = fn
        self.name = name
        self._request_text = _ToolsTextCache()

    def generate(self, request: ModelRequest, on_chunk: ChunkFn,
                 on_retry: RetryFn | None = None) -> ModelResponse:
        out = self._fn(request)
        if isinstance(out, str):
            inp, o = estimate_tokens(self._request_text(request)), estimate_tokens(out)
            out = ModelResponse(text=out, usage=Usage(input_tokens=inp, output_tokens=o,
                                                      total_tokens=inp + o, requests=1),
                                model=request.model)
        if out.text:
            on_chunk(out.text)
        return out


# === GEMINI PROVIDER (google-genai, imported lazily) ===

_GEMINI_KEY_VARS = ("GEMINI_API_KEY", "GOOGLE_API_KEY")
_MISSING_KEY_MESSAGE = (
    "No Gemini API key: set the GEMINI_API_KEY (or GOOGLE_API_KEY) environment variable and "
    "start Clutch again, or choose the offline provider in Settings.")
# HTTP statuses worth another attempt, and the reason a retry entry gives for each.
_GEMINI_RETRY_STATUSES = {408: "timeout", 429: "rate_limited", 500: "server_error",
                          502: "server_error", 503: "server_error", 504: "server_error"}
# Finish reasons that mean a filter stopped the answer (not "the model had nothing to say").
_GEMINI_BLOCK_FINISH = frozenset({"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT",
                                  "SPII", "IMAGE_SAFETY", "IMAGE_PROHIBITED_CONTENT",
                                  "IMAGE_RECITATION"})
_NOT_RETRIED_SHOWN = "not retried because text had already been shown"


def gemini_api_key_from_env(environ: Any = None) -> str:
    """The Gemini key from GEMINI_API_KEY, else GOOGLE_API_KEY. Raises MissingApiKey."""
    env = os.environ if environ is None else environ
    for var in _GEMINI_KEY_VARS:
        key = (env.get(var) or "").strip()
        if key:
            return key
    raise MissingApiKey(_MISSING_KEY_MESSAGE)


class _StreamCut(Exception):
    """The stream ended without a finish reason (a close-delimited body cut short)."""


class _CallbackRaised(Exception):
    """on_chunk raised (Cancelled, or anything else): re-raised as is, never classified as a
    provider failure or retried."""

    def __init__(self, exc: BaseException):
        super().__init__(repr(exc))
        self.exc = exc


@dataclass
class _GeminiAttempt:
    """What one streamed attempt received so far."""
    chars: int = 0                          # text characters forwarded to on_chunk
    texts: list[str] = field(default_factory=list)
    calls: list[tuple[Any, Any]] = field(default_factory=list)   # (FunctionCall, signature)
    usage: Any = None                       # the last usage_metadata seen
    finish: str | None = None
    block_reason: str | None = None
    chunks: int = 0


@dataclass
class _GeminiFailure:
    message: str
    # rate_limited | server_error | timeout | stream_cut | network | malformed
    reason: str = ""
    status: int | None = None
    retryable: bool = False
    streamed: bool = False
    server_delay: float | None = None


def _enum_name(v: Any) -> str | None:
    if v is None:
        return None
    name = getattr(v, "value", None) or getattr(v, "name", None) or str(v)
    return str(name)


def _parse_duration_s(v: Any) -> float | None:
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


def _parse_retry_after_s(v: str) -> float | None:
    """A Retry-After header: delta-seconds or an HTTP date."""
    v = v.strip()
    try:
        return max(0.0, float(v))
    except ValueError:
        pass
    import email.utils
    try:
        when = email.utils.parsedate_to_datetime(v)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _gemini_server_delay(e: BaseException) -> float | None:
    """The wait a 429 asks for: google.rpc.RetryInfo in the error body, else Retry-After."""
    details = getattr(e, "details", None)
    err = details.get("error") if isinstance(details, dict) else None
    if isinstance(err, dict):
        for d in err.get("details") or []:
            if isinstance(d, dict) and str(d.get("@type", "")).endswith("google.rpc.RetryInfo"):
                delay = _parse_duration_s(d.get("retryDelay"))
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
                return _parse_retry_after_s(str(v))
    return None


def _is_httpx_error(e: BaseException, *names: str) -> bool:
    """True when e is one of httpx's (or its fork httpx2's) exception classes named `names`
    (the SDK uses whichever is installed; neither is imported here)."""
    for cls in type(e).__mro__:
        if cls.__name__ in names and cls.__module__.split(".")[0] in ("httpx", "httpx2"):
            return True
    return False


def _plain_json(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


class GeminiProvider:
    """Gemini through google-genai: streaming for every tier, structured output (JSON schema)
    when the request has a `response_schema` (Tier 1 and 2), function calling with automatic
    function calling disabled when it has tools (Tier 3 and 4).

    google-genai is imported here, on construction, never when ai_client is imported. One
    `genai.Client` per provider, shared by every executor thread: its httpx client's connection
    pool is thread-safe, the SDK's retry state (tenacity) is kept per thread, and each request
    is built from options that are not mutated after construction.

    Retries — the split between the SDK and this class:
    - The SDK's `HttpRetryOptions` is set to attempts=1 (off). It would retry 408/429/5xx and
      transport errors, but it ignores google.rpc.RetryInfo and Retry-After (it would hammer a
      rate-limited API), it only covers opening the response (not a stream that fails after it
      started), it cannot know whether text already reached the user, and its retries would be
      invisible to the comms log.
    - This class runs the one retry loop: up to `max_retries` retries after the first attempt.
      Before each wait it calls `on_retry({"attempt", "status", "delay_s", "error", "reason",
      "max_attempts", "model"})` (AgentSession logs it as a "retry" entry; the engine lowers its
      worker cap on status 429). `attempt` is the 1-based number of the attempt that failed.
      * 429: waits max(server delay, capped exponential backoff with jitter): never less than
        RetryInfo.retryDelay (or Retry-After). A server delay above `max_delay_s` is not waited
        for: ProviderError(status=429, retryable=True, retry_after=delay).
      * 408, 500, 502, 503, 504: backoff `initial_delay_s * 2**(n-1)` capped at `max_delay_s`,
        jittered into [50 %, 100 %] of that.
      * a timeout, a connection error, or a stream cut before any text was streamed in this
        attempt: retried with backoff. After text was streamed: ProviderError(streamed=True,
        retryable=False) saying how many characters were shown — a retry would show them twice.
      * a response that is not valid JSON: retried once (if nothing was streamed).
      * other 4xx (400, 401, 403, 404...): not retried; ProviderError with the API's message
        and status. A blocked prompt, a safety-stopped or empty answer: not retried either.
    - The wait is slept in slices of at most 0.5 s through the injectable `sleep`, calling
      `on_chunk("")` between slices: an empty chunk shows nothing, but lets AgentSession check
      whether the user cancelled the agent meanwhile.

    The API key is never logged, put in a message, a comms entry or this object's repr; error
    text from the SDK is scrubbed of it before it becomes a ProviderError.
    """

    name = "gemini"
    _SLEEP_SLICE_S = 0.5

    def __init__(self, api_key: str | None, base_url: str | None = None,
                 api_version: str | None = None, timeout_s: float = 120.0,
                 max_retries: int = 5, initial_delay_s: float = 1.0, max_delay_s: float = 60.0,
                 sleep: Callable[[float], None] = time.sleep,
                 rand: Callable[[], float] | None = None):
        key = (api_key or "").strip()
        if not key:
            raise MissingApiKey(_MISSING_KEY_MESSAGE)
        import random

        from google import genai
        from google.genai import types
        self._types = types
        self.base_url = base_url or None          # None: GOOGLE_GEMINI_BASE_URL or the default
        self.api_version = api_version or None    # None: the SDK's default (v1)
        self.timeout_s = float(timeout_s)
        self.max_retries = max(0, int(max_retries))
        self.initial_delay_s = max(0.0, float(initial_delay_s))
        self.max_delay_s = max(self.initial_delay_s, float(max_delay_s))
        self._sleep = sleep
        self._rand = rand or random.random
        self._key = key
        http = types.HttpOptions(
            base_url=self.base_url, api_version=self.api_version,
            timeout=max(1, int(round(self.timeout_s * 1000))),          # milliseconds
            retry_options=types.HttpRetryOptions(attempts=1))            # retries are ours
        self._client = genai.Client(api_key=key, vertexai=False, http_options=http)

    @classmethod
    def from_settings(cls, settings: Any, *, sleep: Callable[[float], None] = time.sleep
                      ) -> "GeminiProvider":
        """From Settings.gemini, with the key from the environment. Raises MissingApiKey."""
        key = gemini_api_key_from_env()
        g = settings.gemini
        return cls(api_key=key, base_url=g.base_url or None, api_version=g.api_version or None,
                   timeout_s=g.timeout_s, max_retries=g.max_retries,
                   initial_delay_s=g.retry_initial_delay_s, max_delay_s=g.retry_max_delay_s,
                   sleep=sleep)

    def __repr__(self) -> str:
        return (f"GeminiProvider(base_url={self.base_url or '(SDK default)'!r}, "
                f"api_version={self.api_version or '(SDK default)'!r}, "
                f"timeout_s={self.timeout_s:g}, max_retries={self.max_retries})")

    def close(self) -> None:
        self._client.close()

    # -- the call ---------------------------------------------------------------------------
    def generate(self, request: ModelRequest, on_chunk: ChunkFn,
                 on_retry: RetryFn | None = None) -> ModelResponse:
        contents = self._contents(request.messages)
        config = self._config(request)
        attempt = 0
        malformed_retried = False
        while True:
            attempt += 1
            st = _GeminiAttempt()
            try:
                return self._attempt(request, contents, config, on_chunk, st)
            except _CallbackRaised as cb:
                raise cb.exc from None
            except (Cancelled, ProviderError):
                raise
            except Exception as e:  # noqa: BLE001 -- classified below, none swallowed
                f = self._classify(e, st)
            if not f.retryable:
                raise self._error(f, retryable=False)
            if f.reason == "malformed":
                if malformed_retried:
                    raise self._error(f, retryable=False)
                malformed_retried = True
            if attempt > self.max_retries:
                f.message += f" (gave up after {attempt} attempts)"
                raise self._error(f, retryable=True)
            if f.server_delay is not None and f.server_delay > self.max_delay_s:
                f.message += (f"; the server asks to wait {f.server_delay:g} s, longer than the "
                              f"longest retry delay allowed ({self.max_delay_s:g} s), so it "
                              f"was not retried")
                raise self._error(f, retryable=True)
            delay = self._backoff(attempt, f.server_delay)
            if on_retry is not None:
                on_retry({"attempt": attempt, "status": f.status, "delay_s": round(delay, 3),
                          "error": self._scrub(f.message), "reason": f.reason,
                          "max_attempts": self.max_retries + 1, "model": request.model})
            self._wait(delay, on_chunk)

    def _attempt(self, request: ModelRequest, contents: list[Any], config: Any,
                 on_chunk: ChunkFn, st: _GeminiAttempt) -> ModelResponse:
        stream = self._client.models.generate_content_stream(
            model=request.model, contents=contents, config=config)
        try:
            for chunk in stream:
                st.chunks += 1
                self._take(chunk, st, on_chunk)
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
        if st.block_reason:
            raise ProviderError(f"Gemini blocked the prompt ({st.block_reason}); nothing was "
                                f"generated. Rephrase the request or leave out the content it "
                                f"objects to.", usage=self._usage(st.usage))
        if st.finish is None and st.usage is None:
            # A complete answer ends with a finish reason and usage; without both, the body
            # was cut short (a close-delimited stream looks like a normal end to the SDK).
            raise _StreamCut("the stream ended without a finish reason")
        finish = st.finish or "FINISH_REASON_UNSPECIFIED"
        if st.finish in _GEMINI_BLOCK_FINISH:
            after = f" after {st.chars} characters" if st.chars else ""
            raise ProviderError(f"Gemini's {st.finish} filter blocked the answer{after} (finish "
                                f"reason {st.finish}); not retried", streamed=st.chars > 0,
                                usage=self._usage(st.usage))
        text = "".join(st.texts)
        prior = sum(len(m.tool_calls) for m in request.messages)
        calls = []
        for i, (fc, signature) in enumerate(st.calls):
            name = fc.name or ""
            call = ToolCall(id=fc.id or f"{name}-{prior + i}", name=name,
                            args=dict(fc.args or {}))
            if signature:
                call = ToolCall(id=call.id, name=call.name, args=call.args,
                                thought_signature=signature)
            calls.append(call)
        if not text and not calls:
            raise ProviderError(f"the model returned an empty answer (finish reason "
                                f"{finish})", usage=self._usage(st.usage))
        return ModelResponse(text=text, tool_calls=calls, usage=self._usage(st.usage),
                             model=request.model, finish_reason=finish)

    @staticmethod
    def _take(chunk: Any, st: _GeminiAttempt, on_chunk: ChunkFn) -> None:
        if chunk.usage_metadata is not None:
            st.usage = chunk.usage_metadata          # chunks may carry partial usage: keep last
        feedback = chunk.prompt_feedback
        if feedback is not None and feedback.block_reason:
            st.block_reason = _enum_name(feedback.block_reason)
        for cand in (chunk.candidates or [])[:1]:
            if cand.finish_reason:
                st.finish = _enum_name(cand.finish_reason)
            parts = (cand.content.parts if cand.content is not None else None) or []
            for part in parts:
                if part.thought:                     # thinking summaries are not the answer
                    continue
                if part.function_call is not None:
                    st.calls.append((part.function_call, part.thought_signature))
                elif part.text:
                    st.texts.append(part.text)
                    st.chars += len(part.text)
                    try:
                        on_chunk(part.text)
                    except Exception as e:  # noqa: BLE001 -- re-raised unchanged by generate()
                        raise _CallbackRaised(e) from e

    @staticmethod
    def _usage(um: Any) -> Usage:
        if um is None:
            return Usage(requests=1)
        return Usage(input_tokens=um.prompt_token_count or 0,
                     output_tokens=um.candidates_token_count or 0,
                     cached_tokens=um.cached_content_token_count or 0,
                     thoughts_tokens=um.thoughts_token_count or 0,
                     tool_use_tokens=um.tool_use_prompt_token_count or 0,
                     total_tokens=um.total_token_count or 0,
                     requests=1)

    # -- the request ------------------------------------------------------------------------
    @staticmethod
    def _wire_id(call_id: str, name: str) -> str | None:
        """The id to send back: the API's own, or None for one we generated ("name-n")."""
        if not call_id or re.fullmatch(re.escape(name) + r"-\d+", call_id):
            return None
        return call_id

    def _contents(self, messages: Sequence[Message]) -> list[Any]:
        """user text -> user Content; model turn -> model Content (text + function calls);
        tool returns -> ONE user Content with a function_response per call of that turn."""
        types = self._types
        out = []
        for m in messages:
            if m.role == "user":
                if m.text:
                    out.append(types.Content(role="user", parts=[types.Part(text=m.text)]))
            elif m.role == "model":
                parts = [types.Part(text=m.text)] if m.text else []
                for c in m.tool_calls:
                    parts.append(types.Part(
                        function_call=types.FunctionCall(name=c.name, args=_plain_json(c.args),
                                                         id=self._wire_id(c.id, c.name)),
                        thought_signature=getattr(c, "thought_signature", None)))
                if parts:
                    out.append(types.Content(role="model", parts=parts))
            elif m.role == "tool":
                parts = [types.Part(function_response=types.FunctionResponse(
                    name=r.name, response=_plain_json(r.result), id=self._wire_id(r.call_id, r.name)))
                    for r in m.tool_returns]
                if m.text:
                    parts.append(types.Part(text=m.text))
                if parts:
                    out.append(types.Content(role="user", parts=parts))
            else:
                raise ValueError(f"unknown message role {m.role!r}")
        return out

    def _config(self, request: ModelRequest) -> Any:
        types = self._types
        # Tool calls go back to AgentSession (approvals, the comms log): the SDK never runs one.
        kw: dict[str, Any] = {
            "automatic_function_calling": types.AutomaticFunctionCallingConfig(disable=True)}
        if request.system:
            kw["system_instruction"] = request.system
        if request.response_schema is not None:
            kw["response_mime_type"] = "application/json"
            kw["response_json_schema"] = request.response_schema.model_json_schema()
        if request.tools:
            kw["tools"] = [types.Tool(function_declarations=[
                types.FunctionDeclaration(name=t.name, description=t.description,
                                          parameters_json_schema=_plain_json(t.parameters))
                for t in request.tools])]
        return types.GenerateContentConfig(**kw)

    # -- failures and waiting ---------------------------------------------------------------
    def _scrub(self, text: str) -> str:
        # (a key shorter than 8 characters is a test stub; real keys are ~39 characters)
        return text.replace(self._key, "[api key]") if len(self._key) >= 8 else text

    def _error(self, f: _GeminiFailure, *, retryable: bool) -> ProviderError:
        return ProviderError(self._scrub(f.message), status=f.status, retryable=retryable,
                             streamed=f.streamed, retry_after=f.server_delay)

    def _classify(self, e: BaseException, st: _GeminiAttempt) -> _GeminiFailure:
        from google.genai import errors
        shown = st.chars > 0
        if isinstance(e, errors.APIError):
            code = e.code if isinstance(e.code, int) else None
            what = " ".join(str(x) for x in (code, e.status) if x)
            msg = f"Gemini API error {what}: {e.message or e}"
            if shown:
                return _GeminiFailure(
                    f"Gemini reported an error after {st.chars} characters had been streamed "
                    f"({what}: {e.message or e}); {_NOT_RETRIED_SHOWN}", status=code,
                    streamed=True)
            reason = _GEMINI_RETRY_STATUSES.get(code or 0)
            if reason is None:
                return _GeminiFailure(msg, status=code)
            delay = _gemini_server_delay(e) if code == 429 else None
            return _GeminiFailure(msg, reason=reason, status=code, retryable=True,
                                  server_delay=delay)
        if _is_httpx_error(e, "TimeoutException"):
            if shown:
                return _GeminiFailure(
                    f"the stream stalled for more than {self.timeout_s:g} s after {st.chars} "
                    f"characters; {_NOT_RETRIED_SHOWN}", streamed=True)
            return _GeminiFailure(f"no answer from Gemini within {self.timeout_s:g} s",
                                  reason="timeout", retryable=True)
        if _is_httpx_error(e, "ConnectError"):
            return _GeminiFailure(f"could not connect to Gemini at "
                                  f"{self.base_url or 'the default endpoint'}: {e}",
                                  reason="network", retryable=not shown, streamed=shown)
        if isinstance(e, _StreamCut) or _is_httpx_error(e, "TransportError"):
            if shown:
                return _GeminiFailure(f"the stream was cut after {st.chars} characters; "
                                      f"{_NOT_RETRIED_SHOWN}", streamed=True)
            return _GeminiFailure(f"the stream was cut before any text arrived ({e})",
                                  reason="stream_cut", retryable=True)
        if isinstance(e, ValueError):
            msg = f"Gemini sent a response that could not be read as JSON ({e})"
            if shown:
                return _GeminiFailure(f"{msg} after {st.chars} characters; {_NOT_RETRIED_SHOWN}",
                                      streamed=True)
            return _GeminiFailure(msg, reason="malformed", retryable=True)
        return _GeminiFailure(f"the Gemini call failed: {type(e).__name__}: {e}",
                              streamed=shown)

    def _backoff(self, attempt: int, server_delay: float | None) -> float:
        base = min(self.max_delay_s, self.initial_delay_s * 2 ** (attempt - 1))
        delay = base * (0.5 + 0.5 * self._rand())
        if server_delay is not None:
            delay = max(delay, server_delay)
        return delay

    def _wait(self, delay: float, on_chunk: ChunkFn) -> None:
        on_chunk("")                              # cancelled meanwhile? (raises Cancelled)
        remaining = delay
        while remaining > 1e-9:
            step = min(remaining, self._SLEEP_SLICE_S)
            self._sleep(step)
            remaining -= step
            on_chunk("")


# === END GEMINI PROVIDER ===


# ---------------------------------------------------------------------------------------------
# The comms log
# ---------------------------------------------------------------------------------------------

# Characters str.splitlines() (and many JSONL readers) treat as line breaks, which
# json.dumps(ensure_ascii=False) leaves raw: escaped so one entry is always one line.
_LINE_BREAKS = {c: f"\\u{c:04x}" for c in (0x0B, 0x0C, 0x1C, 0x1D, 0x1E, 0x85, 0x2028, 0x2029)}
_LINE_BREAK_RE = re.compile("[" + "".join(map(chr, _LINE_BREAKS)) + "]")


_USAGE_FIELDS = tuple(Usage.model_fields)   # the last one, cost_usd, is the float


class CommsLog:
    """Thread-safe, append-only record of every model call and tool step.

    Each entry: seq, ts, kind (spawn, request, response, tool_call, tool_result, approval,
    retry, error, log), direction, tier, stream_id, track_id, ticket_id, provider, model, usage,
    data. Appended to `path` as one JSON line each. Usage sums per tier, track, ticket and
    stream are updated on append, so reading them is O(number of keys).

    With a path, memory does not grow with the entries' size: the log keeps each entry's byte
    offset in the file (8 bytes an entry) and `entries()` reads the ones asked for back from
    the file, so callers get exactly what is on disk. Without a path the lines are kept in
    memory.

    Writing is a group commit: record() encodes its line outside the lock and queues it under
    `_lock` (no I/O there, so readers and other writers never wait on the disk), then under
    `_write_lock` writes every queued line in one os.write, unless a thread before it already
    wrote its line. The file stays in seq order; with wait=True (the default) a line is in
    the file (the OS's) before record() returns.
    """

    def __init__(self, path: str | os.PathLike | None = None):
        self._lock = threading.Lock()
        self._n = 0                                # entries
        self._lines: list[str] | None = None       # the entries, when there is no file
        self._offsets = array.array("Q")           # each entry's byte offset in the file
        self._size = 0                             # file size once every queued line is written
        # Usage sums per tier, track, ticket and stream, and in total: each a list of the
        # Usage fields' running sums (added in entry order, so the same floats as adding Usage
        # objects), with the Usage built from it cached until the sum changes.
        self._sums: dict[str, dict[str, list[Any]]] = {"tier": {}, "track": {}, "ticket": {},
                                                       "stream": {}}
        self._built: dict[str, dict[str, Usage]] = {"tier": {}, "track": {}, "ticket": {},
                                                    "stream": {}}
        self._total_sum: list[Any] = [0] * (len(_USAGE_FIELDS) - 1) + [0.0]
        self._total: Usage | None = Usage()
        self.path = Path(path) if path else None
        self.set_aside: list[str] = []   # torn or unparsable lines found when opening
        self._write_lock = threading.Lock()
        self._pending: list[bytes] = []  # queued lines (with their newline), oldest first,
        self._pending_first = 0          # ... the first one being entry number _pending_first
        self._head_written = 0           # bytes of _pending[0] a failed write already wrote
        self._fd: int | None = None
        if self.path is None:
            self._lines = []
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            self._load_existing()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                           0o644)
        self._size = os.fstat(self._fd).st_size
        self._pending_first = self._n

    def _load_existing(self) -> None:
        """Index the file line by line (memory: the offsets, not the file). Torn or unparsable
        lines are copied to a set-aside file and the log rewritten without them."""
        assert self.path is not None
        bad: list[bytes] = []
        pos = 0
        with open(self.path, "rb") as f:
            for ln in f:
                start, pos = pos, pos + len(ln)
                if not ln.endswith(b"\n"):          # a torn last line (a crash mid-write)
                    bad.append(ln)
                    break
                if not ln.strip():
                    continue
                try:
                    entry = json.loads(ln)
                    if not isinstance(entry, dict):
                        raise ValueError("not an object")
                except ValueError:
                    bad.append(ln.rstrip(b"\n"))
                    continue
                self._offsets.append(start)
                self._n += 1
                self._add_usage(entry)
        if not bad:
            return
        aside = self.path.with_name(self.path.name + f".set-aside-{int(time.time())}")
        with open(aside, "ab") as f:
            for b in bad:
                f.write(b + b"\n")
        self.set_aside = [b.decode("utf-8", "replace") for b in bad]
        # keep only the complete, parsable lines in the log itself
        tmp = self.path.with_name(self.path.name + ".tmp")
        offsets, self._offsets = self._offsets, array.array("Q")
        with open(self.path, "rb") as src, open(tmp, "wb") as f:
            for off in offsets:
                src.seek(off)
                self._offsets.append(f.tell())
                f.write(src.readline().strip() + b"\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def _add_usage(self, entry: dict[str, Any]) -> None:
        """An entry read back from the file: its usage into the sums."""
        u = entry.get("usage")
        if u:
            usage = Usage(**u)
            self._add_sums([getattr(usage, f) for f in _USAGE_FIELDS], entry)

    def _add_sums(self, vals: list[Any], entry: dict[str, Any]) -> None:
        add = _operator.add            # field by field, in C (the same additions, in order)
        self._total_sum[:] = map(add, self._total_sum, vals)
        self._total = None        # built again when read
        for key, field_name in (("tier", "tier"), ("track", "track_id"),
                                ("ticket", "ticket_id"), ("stream", "stream_id")):
            k = entry.get(field_name) or ""
            if k:
                sums = self._sums[key]
                cur = sums.get(k)
                if cur is None:
                    cur = [0] * (len(vals) - 1) + [0.0]
                sums[k] = list(map(add, cur, vals))
                self._built[key].pop(k, None)

    def record(self, kind: str, *, tier: str = "", stream_id: str = "", track_id: str = "",
               ticket_id: str = "", provider: str = "", model: str = "", direction: str = "",
               usage: Usage | None = None, data: dict[str, Any] | None = None,
               wait: bool = True) -> dict[str, Any]:
        """Append one entry. With `wait` (the default) the line is in the file when this
        returns. Without, this does no I/O at all (the event loop's records): the line is
        queued and written with the next record that waits, or by `flush()`."""
        # the usage as model_dump() gives it (same keys, same order), without pydantic's cost
        vals = [getattr(usage, f) for f in _USAGE_FIELDS] if usage is not None else None
        entry = {"seq": 0, "ts": 0.0, "kind": kind, "direction": direction, "tier": tier,
                 "stream_id": stream_id, "track_id": track_id, "ticket_id": ticket_id,
                 "provider": provider, "model": model,
                 "usage": dict(zip(_USAGE_FIELDS, vals)) if vals is not None else None,
                 "data": data or {}}
        # Encoded outside the lock (other threads record meanwhile); seq and ts, the first two
        # keys, are spliced in under it, where the work is a few appends and additions.
        rest = json.dumps(entry, ensure_ascii=False, default=str)
        if _LINE_BREAK_RE.search(rest):        # rare: translate() walks every character
            rest = rest.translate(_LINE_BREAKS)
        rest_b = (rest[rest.index('"kind"'):] + "\n").encode("utf-8")
        with self._lock:
            self._n += 1
            seq = self._n
            ts = round(time.time(), 6)
            entry["seq"], entry["ts"] = seq, ts
            data_b = b'{"seq": %d, "ts": %r, ' % (seq, ts) + rest_b
            if vals is not None:
                self._add_sums(vals, entry)
            if self._lines is not None:
                self._lines.append(data_b[:-1].decode("utf-8"))
                return entry
            self._offsets.append(self._size)
            self._size += len(data_b)
            self._pending.append(data_b)
            if self._fd is None:          # closed: kept in memory until read
                return entry
        if wait:
            with self._write_lock:
                self._write_pending(seq)
        return entry

    def flush(self) -> None:
        """Write every line queued so far (any thread; disk I/O)."""
        with self._write_lock:
            self._write_pending(self._n)

    def _write_pending(self, upto: int) -> None:
        """Under _write_lock: write the queued lines, if entry number `upto` is not yet in the
        file. A failed write (disk full) raises; what it did not write stays queued, first."""
        with self._lock:
            if self._pending_first >= upto or self._fd is None:
                return
            batch = list(self._pending)
            skip = self._head_written
        out = b"".join(batch)
        done = skip
        try:
            while done < len(out):
                done += os.write(self._fd, memoryview(out)[done:])
        finally:
            with self._lock:
                # drop the lines written in full; remember how much of the next one went out
                k, acc = 0, 0
                while k < len(batch) and acc + len(batch[k]) <= done:
                    acc += len(batch[k])
                    k += 1
                del self._pending[:k]
                self._pending_first += k
                self._head_written = done - acc

    def entries(self, since: int = 0, until: int | None = None) -> list[dict[str, Any]]:
        """Entries [since:until] (0-based, like a slice), decoded: fresh dicts on each call."""
        with self._lock:
            n = self._n
            lo, hi, _ = slice(since, until).indices(n)
            if hi <= lo:
                return []
            if self._lines is not None:
                lines: list[Any] = self._lines[lo:hi]
                return [json.loads(ln) for ln in lines]
            first = self._pending_first
            from_file = (lo, min(hi, first)) if lo < first else None
            queued = self._pending[max(lo, first) - first:hi - first] if hi > first else []
            if from_file is not None:
                a, b = from_file
                start = self._offsets[a]
                end = self._offsets[b] if b < n else self._size   # b <= first: all written
        out: list[dict[str, Any]] = []
        if from_file is not None:
            assert self.path is not None
            with open(self.path, "rb") as f:
                f.seek(start)
                raw = f.read(end - start)
            out = [json.loads(ln) for ln in raw.split(b"\n") if ln.strip()]
            if len(out) != from_file[1] - from_file[0]:
                raise ValueError(f"comms log {self.path} changed on disk while it was open: "
                                 f"expected {from_file[1] - from_file[0]} entries at byte "
                                 f"{start}, found {len(out)}")
        out += [json.loads(ln) for ln in queued]
        return out

    def __len__(self) -> int:
        with self._lock:
            return self._n

    def usage_by(self, key: str) -> dict[str, Usage]:
        """key: "tier", "track", "ticket" or "stream"."""
        with self._lock:
            built = self._built[key]
            if len(built) != len(self._sums[key]):
                for k, sums in self._sums[key].items():
                    if k not in built:
                        built[k] = Usage.model_construct(**dict(zip(_USAGE_FIELDS, sums)))
            return dict(built)

    def usage_by_tier(self) -> dict[str, Usage]:
        return self.usage_by("tier")

    def total(self) -> Usage:
        with self._lock:
            if self._total is None:
                self._total = Usage.model_construct(**dict(zip(_USAGE_FIELDS, self._total_sum)))
            return self._total

    def close(self) -> None:
        """Write what is queued and close the file. Entries recorded afterwards are kept in
        memory (and readable) but not written."""
        with self._write_lock:
            if self._fd is None:
                return
            try:
                self._write_pending(self._n)
            finally:
                with self._lock:
                    fd, self._fd = self._fd, None
                os.close(fd)


def usage_from_entries(entries: Sequence[dict[str, Any]], key: str = "tier") -> dict[str, Usage]:
    """Sum usage over entries by a tag, from scratch (for checking the incremental sums)."""
    field_name = {"tier": "tier", "track": "track_id", "ticket": "ticket_id",
                  "stream": "stream_id"}[key]
    # Group the usage dicts by key, then sum each field of a group left to right with plain
    # numbers (the same additions in the same order, so the same floats, as adding Usage
    # objects one by one). A group holding anything but exactly the expected numbers is summed
    # the old way, through Usage(**u), so it validates (and raises) as before.
    groups: dict[str, list[dict[str, Any]]] = {}
    for e in entries:
        u = e.get("usage")
        if u:
            k = e.get(field_name)
            if k:
                g = groups.get(k)
                if g is None:
                    groups[k] = [u]
                else:
                    g.append(u)
    fields = Usage.model_fields
    names = tuple(fields)
    expected = tuple(float if fields[n].annotation is float else int for n in names)
    out: dict[str, Usage] = {}
    for k, g in groups.items():
        sums: dict[str, Any] = {}
        for n, t in zip(names, expected):
            col = list(map(dict.get, g, _repeat(n)))
            if set(map(type, col)) != {t}:
                break
            sums[n] = _reduce(_operator.add, col, t())
        else:
            out[k] = Usage(**sums)
            continue
        total = Usage()
        for u in g:
            total = total + Usage(**u)
        out[k] = total
    return out


# ---------------------------------------------------------------------------------------------
# Agent sessions
# ---------------------------------------------------------------------------------------------

@dataclass
class ToolOutcome:
    """What the tool handler did with a call: the result the model sees, and the arguments that
    actually ran (after the user's edits)."""
    result: dict[str, Any]
    args: dict[str, Any]


ToolHandler = Callable[[ToolCall], ToolOutcome]


class AgentSession:
    """One agent: its own history, the tool loop, usage tagged into the comms log.

    Thread use: one session is driven by one thread at a time (its executor thread).
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
                 on_retry: RetryFn | None = None):
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
        self.history: list[Message] = []
        self.usage = Usage()
        self.last_prompt_tokens = 0
        self.streamed_chars = 0
        self.rounds = 0

    # -- helpers ----------------------------------------------------------------------------
    def _tags(self) -> dict[str, str]:
        return {"tier": self.tier, "stream_id": self.stream_id, "track_id": self.track_id,
                "ticket_id": self.ticket_id, "provider": self.provider.name, "model": self.model}

    def log(self, kind: str, direction: str = "", usage: Usage | None = None,
            **data: Any) -> dict[str, Any]:
        return self.comms.record(kind, direction=direction, usage=usage, data=data, **self._tags())

    def _check_cancel(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled(f"{self.stream_id} cancelled by the user")

    def _on_chunk(self, text: str) -> None:
        self._check_cancel()
        if not text:
            return
        self.streamed_chars += len(text)
        if self.emit is not None:
            self.emit(StreamChunk(stream_id=self.stream_id, text=text))

    def _on_retry(self, info: dict[str, Any]) -> None:
        self.log("retry", direction="-", **info)
        if self.on_retry is not None:
            self.on_retry(info)

    # -- the loop ---------------------------------------------------------------------------
    def send(self, text: str) -> str:
        """Send a user message and run the tool loop until the model answers without tool
        calls. Returns the final text. Raises ProviderError, Cancelled, RoundLimit."""
        self.history.append(Message(role="user", text=text))
        sent_upto = len(self.history) - 1
        for _ in range(self.max_rounds):
            self._check_cancel()
            if self.before_request is not None:
                self.before_request(self)
            if self.rounds > 0 and self.step_gate is not None:
                self.step_gate(self, self.rounds)
            req = ModelRequest(tier=self.tier, model=self.model, system=self.system,
                               messages=list(self.history), tools=self.tools,
                               response_schema=self.response_schema, stream_id=self.stream_id,
                               track_id=self.track_id, ticket_id=self.ticket_id)
            new = [m.to_dict() for m in self.history[sent_upto:]]
            req_data: dict[str, Any] = {"round": self.rounds, "messages": new}
            if self.rounds == 0 and sent_upto == 0:
                req_data["system"] = self.system
            self.log("request", direction="out", **req_data)
            sent_upto = len(self.history)
            streamed_before = self.streamed_chars
            try:
                resp = self.provider.generate(req, self._on_chunk, self._on_retry)
            except Cancelled:
                raise
            except ProviderError as e:
                e.streamed = e.streamed or self.streamed_chars > streamed_before
                cost = None
                if e.usage is not None and e.usage.total_tokens:   # a refused answer still costs
                    cost = e.usage.model_copy(update={"cost_usd": cost_of(e.usage, self.price)})
                    self.usage = self.usage + cost
                self.log("error", direction="in", usage=cost, error=e.message, status=e.status,
                         streamed=e.streamed)
                raise
            self.rounds += 1
            usage = resp.usage.model_copy(update={
                "cost_usd": cost_of(resp.usage, self.price),
                "requests": max(resp.usage.requests, 1)})
            self.usage = self.usage + usage
            self.last_prompt_tokens = usage.input_tokens
            self.log("response", direction="in", usage=usage, text=resp.text,
                     tool_calls=[{"id": c.id, "name": c.name, "args": c.args}
                                 for c in resp.tool_calls],
                     finish_reason=resp.finish_reason)
            if self.emit is not None:
                self.emit(UsageEvent(tier=self.tier, stream_id=self.stream_id,
                                     track_id=self.track_id, ticket_id=self.ticket_id,
                                     model=self.model, usage=usage))
            self.history.append(Message(role="model", text=resp.text,
                                        tool_calls=list(resp.tool_calls)))
            if not resp.tool_calls:
                return resp.text
            if self.tool_handler is None:
                raise ProviderError(f"{self.stream_id}: the model called tools but this agent "
                                    f"has none")
            returns = []
            for call in resp.tool_calls:
                self._check_cancel()
                self.log("tool_call", direction="-", id=call.id, name=call.name, args=call.args)
                self._on_chunk(f"\n→ {call.name}({_brief_args(call.args)})\n")
                outcome = self.tool_handler(call)
                self.log("tool_result", direction="-", id=call.id, name=call.name,
                         args=outcome.args, result=_clip_result(outcome.result))
                self._on_chunk(_brief_result(outcome) + "\n")
                returns.append(ToolReturn(call_id=call.id, name=call.name, result=outcome.result))
            self.history.append(Message(role="tool", tool_returns=returns))
        raise RoundLimit(f"{self.stream_id} stopped after {self.max_rounds} rounds without a "
                         f"final answer (raise 'max tool rounds' in Settings if the work needs more)")


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


_JSON_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.S)


def parse_structured(text: str, schema: type[BaseModel]) -> BaseModel:
    """Parse a model's JSON answer (bare, or in a ```json fence) against a schema.
    Raises ValueError with a message fit for the repair round."""
    candidate = text.strip()
    m = _JSON_FENCE.search(candidate)
    if m:
        candidate = m.group(1).strip()
    if not candidate:
        raise ValueError("the answer was empty")
    try:
        obj = json.loads(candidate)
    except json.JSONDecodeError as e:
        raise ValueError(f"the answer is not JSON ({e.msg} at line {e.lineno} column {e.colno})")
    try:
        return schema.model_validate(obj)
    except ValidationError as e:
        errs = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}"
                         for err in e.errors()[:8])
        raise ValueError(f"the JSON does not match the schema: {errs}")


def run_structured(session: AgentSession, text: str, schema: type[BaseModel], repair: str,
                   extra_check: Callable[[BaseModel], None] | None = None) -> BaseModel:
    """Ask for structured output; one repair round with the validation error; then PlanError.

    `repair` is the repair message template, with an `{error}` field (prompts.REPAIR_USER)."""
    answer = session.send(text)
    try:
        result = parse_structured(answer, schema)
        if extra_check is not None:
            extra_check(result)
        return result
    except ValueError as first:
        session.log("error", direction="-", error=f"invalid output: {first}", repair=True)
        answer = session.send(repair.format(error=first))
        try:
            result = parse_structured(answer, schema)
            if extra_check is not None:
                extra_check(result)
            return result
        except ValueError as second:
            session.log("error", direction="-", error=f"invalid output after repair: {second}")
            raise PlanError(f"{session.tier} answered twice with output that is not a valid "
                            f"plan. First: {first}. After repair: {second}") from None


# ---------------------------------------------------------------------------------------------
# Context window use
# ---------------------------------------------------------------------------------------------

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


def make_provider(settings: Any) -> Provider:
    """The provider the settings name. Raises MissingApiKey for Gemini without a key."""
    if settings.provider == "offline":
        return OfflineProvider(pace_s=settings.offline_pace_s,
                               latency_s=settings.offline_latency_s)
    if settings.provider == "gemini":
        return GeminiProvider.from_settings(settings)  # type: ignore[name-defined]  # noqa: F821
    raise ValueError(f"unknown provider {settings.provider!r} (choose offline or gemini)")

