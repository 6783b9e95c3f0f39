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

import hashlib
import json
import os
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
                 streamed: bool = False, retry_after: float | None = None):
        super().__init__(message)
        self.message = message
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


def request_text(req: ModelRequest) -> str:
    parts = [req.system]
    for m in req.messages:
        parts.append(m.text)
        for c in m.tool_calls:
            parts.append(json.dumps({"name": c.name, "args": c.args}, sort_keys=True))
        for r in m.tool_returns:
            parts.append(json.dumps(r.result, sort_keys=True, default=str))
    if req.tools:
        parts.append(json.dumps([{"name": t.name, "description": t.description,
                                  "parameters": t.parameters} for t in req.tools], sort_keys=True))
    return "\n".join(parts)


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
        inp = estimate_tokens(request_text(request))
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

    def generate(self, request: ModelRequest, on_chunk: ChunkFn,
                 on_retry: RetryFn | None = None) -> ModelResponse:
        out = self._fn(request)
        if isinstance(out, str):
            inp, o = estimate_tokens(request_text(request)), estimate_tokens(out)
            out = ModelResponse(text=out, usage=Usage(input_tokens=inp, output_tokens=o,
                                                      total_tokens=inp + o, requests=1),
                                model=request.model)
        if out.text:
            on_chunk(out.text)
        return out


# === GEMINI PROVIDER (google-genai, imported lazily) ===
# === END GEMINI PROVIDER ===


# ---------------------------------------------------------------------------------------------
# The comms log
# ---------------------------------------------------------------------------------------------

class CommsLog:
    """Thread-safe, append-only record of every model call and tool step.

    Each entry: seq, ts, kind (spawn, request, response, tool_call, tool_result, approval,
    retry, error, log), direction, tier, stream_id, track_id, ticket_id, provider, model, usage,
    data. Appended to `path` as one JSON line each and flushed. Usage sums per tier, track,
    ticket and stream are updated on append, so reading them is O(number of keys).
    """

    def __init__(self, path: str | os.PathLike | None = None):
        self._lock = threading.Lock()
        self._entries: list[dict[str, Any]] = []
        self._sums: dict[str, dict[str, Usage]] = {"tier": {}, "track": {}, "ticket": {},
                                                    "stream": {}}
        self._total = Usage()
        self.path = Path(path) if path else None
        self.set_aside: list[str] = []   # torn or unparsable lines found when opening
        self._file = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.path.exists():
                self._load_existing()
            self._file = open(self.path, "a", encoding="utf-8")

    def _load_existing(self) -> None:
        assert self.path is not None
        raw = self.path.read_bytes()
        good_end = raw.rfind(b"\n") + 1
        lines = raw[:good_end].split(b"\n")
        bad: list[bytes] = []
        for ln in lines:
            if not ln.strip():
                continue
            try:
                entry = json.loads(ln)
                if not isinstance(entry, dict):
                    raise ValueError("not an object")
            except ValueError:
                bad.append(ln)
                continue
            self._add(entry)
        if good_end < len(raw):
            bad.append(raw[good_end:])
        if bad:
            aside = self.path.with_name(self.path.name + f".set-aside-{int(time.time())}")
            with open(aside, "ab") as f:
                for b in bad:
                    f.write(b + b"\n")
            self.set_aside = [b.decode("utf-8", "replace") for b in bad]
            # keep only the complete, parsable lines in the log itself
            tmp = self.path.with_name(self.path.name + ".tmp")
            with open(tmp, "w", encoding="utf-8") as f:
                for e in self._entries:
                    f.write(json.dumps(e, ensure_ascii=False) + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)

    def _add(self, entry: dict[str, Any]) -> None:
        self._entries.append(entry)
        u = entry.get("usage")
        if u:
            usage = Usage(**u)
            self._total = self._total + usage
            for key, field_name in (("tier", "tier"), ("track", "track_id"),
                                    ("ticket", "ticket_id"), ("stream", "stream_id")):
                k = entry.get(field_name) or ""
                if k:
                    d = self._sums[key]
                    d[k] = d.get(k, Usage()) + usage

    def record(self, kind: str, *, tier: str = "", stream_id: str = "", track_id: str = "",
               ticket_id: str = "", provider: str = "", model: str = "", direction: str = "",
               usage: Usage | None = None, data: dict[str, Any] | None = None) -> dict[str, Any]:
        with self._lock:
            entry = {"seq": len(self._entries) + 1, "ts": round(time.time(), 6), "kind": kind,
                     "direction": direction, "tier": tier, "stream_id": stream_id,
                     "track_id": track_id, "ticket_id": ticket_id, "provider": provider,
                     "model": model, "usage": usage.model_dump() if usage else None,
                     "data": data or {}}
            self._add(entry)
            if self._file is not None:
                self._file.write(json.dumps(entry, ensure_ascii=False, default=str) + "\n")
                self._file.flush()
            return entry

    def entries(self, since: int = 0) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._entries[since:])

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def usage_by(self, key: str) -> dict[str, Usage]:
        """key: "tier", "track", "ticket" or "stream"."""
        with self._lock:
            return dict(self._sums[key])

    def usage_by_tier(self) -> dict[str, Usage]:
        return self.usage_by("tier")

    def total(self) -> Usage:
        with self._lock:
            return self._total

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def usage_from_entries(entries: Sequence[dict[str, Any]], key: str = "tier") -> dict[str, Usage]:
    """Sum usage over entries by a tag, from scratch (for checking the incremental sums)."""
    field_name = {"tier": "tier", "track": "track_id", "ticket": "ticket_id",
                  "stream": "stream_id"}[key]
    out: dict[str, Usage] = {}
    for e in entries:
        if e.get("usage") and e.get(field_name):
            k = e[field_name]
            out[k] = out.get(k, Usage()) + Usage(**e["usage"])
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
                self.log("error", direction="in", error=e.message, status=e.status,
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
                outcome = self.tool_handler(call)
                self.log("tool_result", direction="-", id=call.id, name=call.name,
                         args=outcome.args, result=_clip_result(outcome.result))
                returns.append(ToolReturn(call_id=call.id, name=call.name, result=outcome.result))
            self.history.append(Message(role="tool", tool_returns=returns))
        raise RoundLimit(f"{self.stream_id} stopped after {self.max_rounds} rounds without a "
                         f"final answer (raise 'max tool rounds' in Settings if the work needs more)")


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

