"""Data models shared by every layer: tickets, tracks, proposals, usage, settings, approvals.

Nothing here imports anything of ours. The DAG helpers are pure functions over tickets.
"""
from __future__ import annotations

import heapq
import re
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic import computed_field

TicketStatus = Literal["todo", "in_progress", "completed", "failed", "blocked", "skipped", "cancelled"]
TrackStatus = Literal["new", "planned", "in_progress", "paused", "completed", "failed", "cancelled",
                      "needs_attention"]
Tier = Literal["Tier 1", "Tier 2", "Tier 3", "Tier 4"]
TIERS: tuple[str, ...] = ("Tier 1", "Tier 2", "Tier 3", "Tier 4")

# A ticket in one of these states will not run again unless the user asks (retry).
TERMINAL_TICKET_STATES = frozenset({"completed", "failed", "blocked", "skipped", "cancelled"})
# Dependencies in these states let a dependent run.
SATISFIED_STATES = frozenset({"completed", "skipped"})


# ---------------------------------------------------------------------------------------------
# Stream ids (stable, tested; see DESIGN.md)
# ---------------------------------------------------------------------------------------------

def stream_tier1() -> str:
    return "Tier 1 (Orchestrator)"


def stream_tier2(track_id: str) -> str:
    return f"Tier 2 (Tech Lead): {track_id}"


def stream_tier3(ticket_id: str) -> str:
    return f"Tier 3 (Worker): {ticket_id}"


def stream_tier4(ticket_id: str) -> str:
    return f"Tier 4 (QA): {ticket_id}"


def tier_of_stream(stream_id: str) -> str:
    """"Tier 3 (Worker): T-001" -> "Tier 3"."""
    return stream_id.split(" (", 1)[0]


# ---------------------------------------------------------------------------------------------
# Tickets and tracks
# ---------------------------------------------------------------------------------------------

class Ticket(BaseModel):
    model_config = ConfigDict(validate_assignment=False)

    id: str
    description: str
    status: TicketStatus = "todo"
    assigned_to: str = ""
    target_files: list[str] = Field(default_factory=list)
    context_requirements: list[str] = Field(default_factory=list)
    depends_on: list[str] = Field(default_factory=list)
    blocked_reason: str = ""
    step_mode: bool = False
    retry_count: int = 0
    model_override: str | None = None
    result: str = ""
    commit_sha: str = ""
    phase: str = ""

    @field_validator("id")
    @classmethod
    def _id_not_blank(cls, v: str) -> str:
        v = v.strip()
        if not v:
            raise ValueError("ticket id must not be empty")
        return v


class Track(BaseModel):
    id: str
    title: str
    goal: str = ""
    acceptance_criteria: list[str] = Field(default_factory=list)
    tickets: list[Ticket] = Field(default_factory=list)
    status: TrackStatus = "new"
    type: str = "feature"
    created_at: str = ""
    updated_at: str = ""
    problems: list[str] = Field(default_factory=list)  # load problems shown to the user

    def ticket(self, ticket_id: str) -> Ticket:
        for t in self.tickets:
            if t.id == ticket_id:
                return t
        raise KeyError(f"track {self.id} has no ticket {ticket_id!r}")

    def progress(self) -> tuple[int, int]:
        done = sum(1 for t in self.tickets if t.status in SATISFIED_STATES)
        return done, len(self.tickets)


# ---------------------------------------------------------------------------------------------
# Tier outputs (structured output schemas)
# ---------------------------------------------------------------------------------------------

class TrackProposal(BaseModel):
    """One track as Tier 1 proposes it."""
    title: str = Field(min_length=1, max_length=200)
    goal: str = Field(min_length=1)
    acceptance_criteria: list[str] = Field(min_length=1)


class EpicPlan(BaseModel):
    """Tier 1's whole answer."""
    tracks: list[TrackProposal] = Field(min_length=1, max_length=12)


class TicketProposal(BaseModel):
    """One ticket as Tier 2 proposes it."""
    id: str = Field(min_length=1, max_length=40)
    description: str = Field(min_length=1)
    target_files: list[str] = Field(default_factory=list)
    context_requirements: list[str] = Field(default_factory=list)
    depends_on: list[str] = Field(default_factory=list)


class TrackPlan(BaseModel):
    """Tier 2's whole answer."""
    tickets: list[TicketProposal] = Field(min_length=1, max_length=200)


# ---------------------------------------------------------------------------------------------
# Context sections (what each tier's request is made of; prompts.tier*_sections builds them)
# ---------------------------------------------------------------------------------------------

ContextKind = Literal["system", "document", "map", "epic", "track", "ticket", "file", "skeleton",
                      "failure", "note"]


def estimate_tokens(text: str) -> int:
    """One token per four characters, rounded up: the offline provider's rule, used to show a
    section's size before any provider has counted it."""
    return -(-len(text) // 4)


class ContextSection(BaseModel):
    """One labelled part of an agent's context: the system prompt, a project document, the
    repository map, a file (in full or as a skeleton), the ticket. `shared` marks the parts that
    many requests have in common; they come first so providers' prompt caches can reuse them.
    `tokens` is derived from the text, so an edited section never shows a stale count."""
    model_config = ConfigDict(frozen=True)

    label: str = Field(min_length=1, max_length=300)
    kind: ContextKind
    text: str
    path: str | None = None
    shared: bool = False

    @computed_field  # type: ignore[prop-decorator]
    @property
    def tokens(self) -> int:
        return estimate_tokens(self.text)

    def with_text(self, text: str) -> "ContextSection":
        """The same section with the person's edited text."""
        return self.model_copy(update={"text": text})


# ---------------------------------------------------------------------------------------------
# Usage
# ---------------------------------------------------------------------------------------------

class Usage(BaseModel):
    """Token usage as the provider reported it, plus cost. Adds up with `+`."""
    model_config = ConfigDict(frozen=True)

    input_tokens: int = 0       # prompt tokens (includes cached)
    output_tokens: int = 0      # candidates tokens
    cached_tokens: int = 0
    thoughts_tokens: int = 0
    tool_use_tokens: int = 0
    total_tokens: int = 0
    requests: int = 0
    cost_usd: float = 0.0

    def __add__(self, other: Usage) -> Usage:
        if not isinstance(other, Usage):
            return NotImplemented
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cached_tokens=self.cached_tokens + other.cached_tokens,
            thoughts_tokens=self.thoughts_tokens + other.thoughts_tokens,
            tool_use_tokens=self.tool_use_tokens + other.tool_use_tokens,
            total_tokens=self.total_tokens + other.total_tokens,
            requests=self.requests + other.requests,
            cost_usd=self.cost_usd + other.cost_usd,
        )

    def summary(self) -> dict[str, Any]:
        """The shape the CLI prints and the API serves."""
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cached_tokens": self.cached_tokens,
            "thoughts_tokens": self.thoughts_tokens,
            "tool_use_tokens": self.tool_use_tokens,
            "total_tokens": self.total_tokens,
            "requests": self.requests,
            "cost_usd": round(self.cost_usd, 6),
        }


class Price(BaseModel):
    """USD per million tokens."""
    input: float = 0.0
    output: float = 0.0
    cached: float = 0.0


# Published list prices (USD per 1M tokens, prompts up to 200k) as of 2026; user-editable in
# Settings. The offline model is free.
DEFAULT_PRICES: dict[str, dict[str, float]] = {
    "offline": {"input": 0.0, "output": 0.0, "cached": 0.0},
    "gemini-2.5-pro": {"input": 1.25, "output": 10.0, "cached": 0.31},
    "gemini-2.5-flash": {"input": 0.30, "output": 2.50, "cached": 0.075},
    "gemini-2.5-flash-lite": {"input": 0.10, "output": 0.40, "cached": 0.025},
}


def cost_of(usage: Usage, price: Price) -> float:
    """Cost of one call: uncached input, cached input at its own rate, output plus thoughts."""
    uncached = max(usage.input_tokens - usage.cached_tokens, 0) + usage.tool_use_tokens
    out = usage.output_tokens + usage.thoughts_tokens
    return (uncached * price.input + usage.cached_tokens * price.cached + out * price.output) / 1e6


# ---------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------

class GeminiSettings(BaseModel):
    base_url: str = ""          # empty: the SDK's own GOOGLE_GEMINI_BASE_URL or its default
    api_version: str = ""       # empty: the SDK's default
    timeout_s: float = 120.0
    max_retries: int = 5
    retry_initial_delay_s: float = 1.0
    retry_max_delay_s: float = 60.0


class ApprovalPolicy(BaseModel):
    spawn: Literal["ask", "auto"] = "ask"
    read_tools: Literal["ask", "auto"] = "auto"
    write_tools: Literal["ask", "auto"] = "ask"
    shell: Literal["ask", "auto"] = "ask"
    # Simple shell commands (no ; & | ` $ ( ) < > or line breaks) whose first word is listed
    # here run without asking. Anything compound always asks.
    shell_allowlist: list[str] = Field(default_factory=list)

    @field_validator("shell_allowlist")
    @classmethod
    def _plain_words(cls, v: list[str]) -> list[str]:
        out = []
        for w in v:
            w = w.strip()
            if not re.fullmatch(r"[A-Za-z0-9_.+/-]+", w or "!"):
                raise ValueError(f"shell allowlist entry {w!r} must be one plain command name "
                                 f"(letters, digits, _ . + / -), e.g. 'pytest' or 'ls'")
            out.append(w)
        return out

    def shell_allowed(self, command: str) -> bool:
        """True when the command may run without asking under this policy."""
        if self.shell == "auto":
            return True
        if not command.strip() or any(c in command for c in ";&|`$()<>\n\r\\"):
            return False
        return command.split(maxsplit=1)[0] in self.shell_allowlist


MAX_WORKERS = 64     # parallel Tier 3 workers at most (each holds one thread while it runs)


class Settings(BaseModel):
    provider: Literal["offline", "gemini"] = "offline"
    models: dict[str, str] = Field(default_factory=lambda: {
        "Tier 1": "gemini-2.5-pro",
        "Tier 2": "gemini-2.5-flash",
        "Tier 3": "gemini-2.5-flash-lite",
        "Tier 4": "gemini-2.5-flash-lite",
    })
    prices: dict[str, Price] = Field(
        default_factory=lambda: {k: Price(**v) for k, v in DEFAULT_PRICES.items()})
    gemini: GeminiSettings = Field(default_factory=GeminiSettings)
    offline_pace_s: float = Field(default=0.01, ge=0.0, le=5.0)  # seconds between streamed chunks
    offline_latency_s: float = Field(default=0.0, ge=0.0, le=60.0)  # fixed latency per call
    max_workers: int = Field(default=4, ge=1, le=MAX_WORKERS)
    max_tool_rounds: int = Field(default=12, ge=1, le=200)
    budget_usd: float = Field(default=0.0, ge=0.0)       # 0 = no limit
    budget_tokens: int = Field(default=0, ge=0)          # 0 = no limit
    step_mode: bool = False
    approvals: ApprovalPolicy = Field(default_factory=ApprovalPolicy)
    git_commits: bool = True
    context_window: int = Field(default=1_048_576, ge=1024)
    shell_timeout_s: float = Field(default=60.0, gt=0)
    api_port: int = Field(default=0, ge=0, le=65535)

    def model_for(self, tier: str, override: str | None = None) -> str:
        if self.provider == "offline":
            return "offline"
        return override or self.models.get(tier) or "gemini-2.5-flash"

    def price_for(self, model: str) -> Price:
        if model in self.prices:
            return self.prices[model]
        # "gemini-2.5-flash-001" -> the longest known prefix
        best = ""
        for name in self.prices:
            if model.startswith(name) and len(name) > len(best):
                best = name
        return self.prices[best] if best else Price()


# ---------------------------------------------------------------------------------------------
# Approvals: requests and decisions are data
# ---------------------------------------------------------------------------------------------

ApprovalKind = Literal["spawn", "tool", "shell", "step", "budget"]


class ApprovalRequest(BaseModel):
    id: str = Field(default_factory=lambda: "A-" + uuid.uuid4().hex[:10])
    kind: ApprovalKind
    title: str
    stream_id: str = ""
    track_id: str = ""
    ticket_id: str = ""
    # spawn: {"prompt", "context", "model"}; tool: {"tool", "args"};
    # shell: {"command", "cwd"}; step: {"round", "summary"}; budget: {"spent_usd", ...}
    payload: dict[str, Any] = Field(default_factory=dict)
    created_at: float = Field(default_factory=time.time)


class ApprovalDecision(BaseModel):
    approved: bool
    payload: dict[str, Any] | None = None   # edited payload; None = as requested
    reason: str = ""
    source: str = "user"


# ---------------------------------------------------------------------------------------------
# DAG helpers
# ---------------------------------------------------------------------------------------------

class DagError(ValueError):
    """An invalid ticket graph. `problems` lists every problem found, each a sentence."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))


def dag_problems(tickets: Iterable[Ticket]) -> list[str]:
    """Every problem in the graph: duplicate ids, unknown dependencies, self-dependencies, cycles.

    Cycles are reported with their path, e.g. "cycle: T-1 -> T-2 -> T-1".
    """
    tickets = list(tickets)
    problems: list[str] = []
    ids: dict[str, int] = {}
    for t in tickets:
        ids[t.id] = ids.get(t.id, 0) + 1
    for tid, n in ids.items():
        if n > 1:
            problems.append(f"duplicate ticket id {tid!r} ({n} tickets)")
    for t in tickets:
        for d in t.depends_on:
            if d == t.id:
                problems.append(f"{t.id} depends on itself")
            elif d not in ids:
                problems.append(f"{t.id} depends on unknown ticket {d!r}")
    problems.extend(_cycles(tickets, ids))
    return problems


def _cycles(tickets: list[Ticket], ids: Mapping[str, int]) -> list[str]:
    graph = {t.id: [d for d in t.depends_on if d in ids and d != t.id] for t in tickets}
    WHITE, GREY, BLACK = 0, 1, 2
    colour = {tid: WHITE for tid in graph}
    found: list[str] = []
    seen_cycles: set[frozenset[str]] = set()
    for root in graph:
        if colour[root] != WHITE:
            continue
        # iterative DFS keeping the path, so a 1,000-deep chain does not hit the recursion limit
        stack: list[tuple[str, int]] = [(root, 0)]
        path: list[str] = [root]
        colour[root] = GREY
        while stack:
            node, i = stack[-1]
            deps = graph[node]
            if i < len(deps):
                stack[-1] = (node, i + 1)
                nxt = deps[i]
                if colour[nxt] == WHITE:
                    colour[nxt] = GREY
                    stack.append((nxt, 0))
                    path.append(nxt)
                elif colour[nxt] == GREY:
                    cyc = path[path.index(nxt):]
                    key = frozenset(cyc)
                    if key not in seen_cycles:
                        seen_cycles.add(key)
                        # path follows "depends on" edges; print in execution order
                        order = list(reversed(cyc))
                        found.append("cycle: " + " -> ".join(order + [order[0]]))
            else:
                colour[node] = BLACK
                stack.pop()
                path.pop()
    return found


def validate_dag(tickets: Iterable[Ticket]) -> None:
    problems = dag_problems(tickets)
    if problems:
        raise DagError(problems)


def topological_order(tickets: Iterable[Ticket]) -> list[str]:
    """Kahn's algorithm, ties broken by the tickets' order. Raises DagError on a bad graph."""
    tickets = list(tickets)
    validate_dag(tickets)
    pos = {t.id: i for i, t in enumerate(tickets)}
    indeg = {t.id: len(set(t.depends_on)) for t in tickets}
    dependents: dict[str, list[str]] = {t.id: [] for t in tickets}
    for t in tickets:
        for d in set(t.depends_on):
            dependents[d].append(t.id)
    heap = [(pos[tid], tid) for tid, n in indeg.items() if n == 0]
    heapq.heapify(heap)
    out: list[str] = []
    while heap:
        _, tid = heapq.heappop(heap)
        out.append(tid)
        for nxt in dependents[tid]:
            indeg[nxt] -= 1
            if indeg[nxt] == 0:
                heapq.heappush(heap, (pos[nxt], nxt))
    return out


def ready_tickets(tickets: Iterable[Ticket]) -> list[Ticket]:
    """Tickets that may start now: todo, every dependency completed or skipped."""
    tickets = list(tickets)
    status = {t.id: t.status for t in tickets}
    return [t for t in tickets
            if t.status == "todo" and all(status.get(d) in SATISFIED_STATES for d in t.depends_on)]


def critical_path(tickets: Iterable[Ticket], durations: Mapping[str, float] | None = None
                  ) -> tuple[float, list[str]]:
    """Longest path through the DAG by duration (default 1 per ticket): (length, ticket ids)."""
    tickets = list(tickets)
    by_id = {t.id: t for t in tickets}
    best: dict[str, tuple[float, str | None]] = {}
    for tid in topological_order(tickets):
        d = durations.get(tid, 1.0) if durations else 1.0
        prev = max(((best[p][0], p) for p in by_id[tid].depends_on), default=(0.0, None))
        best[tid] = (prev[0] + d, prev[1])
    if not best:
        return 0.0, []
    end = max(best, key=lambda k: best[k][0])
    length = best[end][0]
    path: list[str] = []
    cur: str | None = end
    while cur is not None:
        path.append(cur)
        cur = best[cur][1]
    return length, list(reversed(path))


def _ancestors(tickets: list[Ticket]) -> dict[str, set[str]]:
    by_id = {t.id: t for t in tickets}
    anc: dict[str, set[str]] = {}
    for tid in topological_order(tickets):
        s: set[str] = set()
        for d in by_id[tid].depends_on:
            s.add(d)
            s |= anc[d]
        anc[tid] = s
    return anc


def file_overlap_warnings(tickets: Iterable[Ticket]) -> list[str]:
    """Two tickets that may run in parallel (neither depends on the other, transitively) yet
    name the same target file. Returns [] for an invalid graph (its problems come first)."""
    tickets = list(tickets)
    if dag_problems(tickets):
        return []
    anc = _ancestors(tickets)
    owners: dict[str, list[str]] = {}
    for t in tickets:
        for f in dict.fromkeys(_norm_path(p) for p in t.target_files):
            owners.setdefault(f, []).append(t.id)
    warnings = []
    for f, ids in owners.items():
        for i, a in enumerate(ids):
            for b in ids[i + 1:]:
                if a not in anc[b] and b not in anc[a]:
                    warnings.append(f"{a} and {b} may run in parallel and both target {f}")
    return warnings


def _norm_path(p: str) -> str:
    p = p.strip().replace("\\", "/")
    while p.startswith("./"):
        p = p[2:]
    return p


_OPEN_SUBTASK = re.compile(r"^(\s*[-*] )\[[ ~]\]", re.M)


def tick_subtasks(description: str) -> str:
    """Mark a ticket's sub-task lines ("- [ ] step", kept in its description) done."""
    if "[" not in description:          # no sub-task lines: skip the regex (once per ticket)
        return description
    return _OPEN_SUBTASK.sub(r"\1[x]", description)


def tickets_from_plan(plan: TrackPlan) -> list[Ticket]:
    return [Ticket(id=p.id, description=p.description, target_files=list(p.target_files),
                   context_requirements=list(p.context_requirements),
                   depends_on=list(p.depends_on)) for p in plan.tickets]
