"""Data models shared by every layer: tickets, tracks, proposals, usage, settings, approvals.

Nothing here imports anything of ours. The DAG helpers are pure functions over tickets.
"""
from __future__ import annotations

import fnmatch
import heapq
from collections.abc import Callable, Sequence
import re
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (BaseModel, ConfigDict, Field, ValidationError, computed_field,
                      field_validator)

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
    # a plan's "User Manual Verification" task: a person checks the phase (no worker runs it);
    # approved -> a checkpoint commit, the task ticked, [checkpoint: sha] on the phase heading
    checkpoint: bool = False

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


ShellDecision = Literal["allow", "ask", "deny"]
SHELL_DECISIONS: tuple[str, ...] = ("allow", "ask", "deny")   # from the loosest to the strictest
_SHELL_PROGRAM_RE = re.compile(r"[A-Za-z0-9_.+/-]+")
MAX_SHELL_PATTERN = 200        # characters in one glob of a shell rule
MAX_SHELL_PATTERNS = 64        # globs in one list of a shell rule


def _check_glob(pattern: Any, where: str) -> str:
    if not isinstance(pattern, str):
        raise ValueError(f"{where}: {pattern!r} must be a text glob such as \"--dry-run\" or \"tests/*\"")
    if not pattern:
        raise ValueError(f"{where}: an empty pattern matches only an empty argument; remove it")
    if len(pattern) > MAX_SHELL_PATTERN:
        raise ValueError(f"{where}: pattern is {len(pattern)} characters; at most {MAX_SHELL_PATTERN}")
    bad = next((c for c in pattern if not c.isprintable()), None)
    if bad is not None:
        raise ValueError(f"{where}: pattern {pattern!r} contains the control or invisible character "
                         f"U+{ord(bad):04X}")
    return pattern


def _glob_list(v: Any, where: str) -> list[str]:
    if not isinstance(v, list):
        raise ValueError(f"{where} must be a list of globs, e.g. [\"status\"], not {v!r}")
    if len(v) > MAX_SHELL_PATTERNS:
        raise ValueError(f"{where} has {len(v)} patterns; at most {MAX_SHELL_PATTERNS}")
    return [_check_glob(p, f"{where}[{i}]") for i, p in enumerate(v)]


class ShellRule(BaseModel):
    """One hand-written shell rule: `[[approvals.rules]]` in .clutch/config.toml.

    It applies to a command when the program (the first word) is `program`, the leading
    arguments match `args` in order, some argument matches a glob of `args_any` (when given),
    every argument matches one glob of `args_allow` (when given) and none matches a glob of
    `args_forbid`. Globs are fnmatch-style (`*`, `?`, `[...]`,
    case-sensitive; `*` also matches `/`): no regular expressions, so no pattern can be slow.
    Where several rules apply, the strictest decision wins: deny > ask > allow. A pure value:
    any thread may read it.
    """
    model_config = ConfigDict(extra="forbid", frozen=True)

    program: str
    decision: ShellDecision
    args: list[str] = Field(default_factory=list)
    args_any: list[str] = Field(default_factory=list)
    args_allow: list[str] = Field(default_factory=list)
    args_forbid: list[str] = Field(default_factory=list)
    reason: str = ""

    @field_validator("program", mode="before")
    @classmethod
    def _plain_program(cls, v: Any) -> str:
        if not isinstance(v, str) or not _SHELL_PROGRAM_RE.fullmatch(v.strip() or "!"):
            raise ValueError(f"program {v!r} must be one plain command name (letters, digits, "
                             f"_ . + / -), e.g. \"git\" or \"pytest\"")
        return v.strip()

    @field_validator("args", "args_any", "args_allow", "args_forbid", mode="before")
    @classmethod
    def _globs(cls, v: Any, info: Any) -> list[str]:
        return _glob_list(v, info.field_name)

    @field_validator("reason")
    @classmethod
    def _one_line(cls, v: str) -> str:
        if len(v) > 300 or any(not c.isprintable() for c in v):
            raise ValueError("reason must be one line of at most 300 printable characters")
        return v.strip()

    def applies_to(self, argv: Sequence[str]) -> bool:
        """True when this rule covers the command `argv` (program first)."""
        if not argv or argv[0] != self.program:
            return False
        rest = argv[1:]
        if len(rest) < len(self.args):
            return False
        if not all(fnmatch.fnmatchcase(a, p) for a, p in zip(rest, self.args)):
            return False
        if self.args_any and not any(fnmatch.fnmatchcase(a, p) for a in rest for p in self.args_any):
            return False
        if self.args_allow and not all(any(fnmatch.fnmatchcase(a, p) for p in self.args_allow)
                                       for a in rest):
            return False
        return not any(fnmatch.fnmatchcase(a, p) for a in rest for p in self.args_forbid)

    def describe(self) -> str:
        """The rule as a person wrote it, on one line: `program = "git", args = ["push"], ...`."""
        parts = [f"program = {self.program!r}"]
        for name in ("args", "args_any", "args_allow", "args_forbid"):
            if getattr(self, name):
                parts.append(f"{name} = {getattr(self, name)!r}")
        parts.append(f"decision = {self.decision!r}")
        text = ", ".join(parts).replace("'", '"')
        return f"{text} ({self.reason})" if self.reason else text


# Programs the built-in rules of toolbox/rules.py look into (their options can run other
# programs or write anywhere). Without that evaluator, shell_allowed never lets them through.
# tests/toolbox/test_rules.py checks that this list covers every program the rules know.
SHELL_GUARDED_PROGRAMS = frozenset({
    "git", "find", "pytest", "py.test", "sed", "awk", "gawk", "mawk", "nawk", "tar", "rsync",
    "zip", "sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "fish", "csh", "tcsh",
    "node", "nodejs", "deno", "bun", "perl", "ruby", "php", "lua", "luajit", "Rscript", "R",
    "osascript", "tclsh", "wish", "make", "gmake",
    "env", "xargs", "nice", "nohup", "setsid", "timeout", "stdbuf", "time", "watch", "sudo",
    "doas", "su", "runuser", "pkexec", "chroot", "unshare", "nsenter", "flock", "strace",
    "ltrace", "taskset", "ionice", "chrt", "script", "expect", "busybox", "parallel", "ssh",
    "gdb", "valgrind", "firejail", "bwrap", "systemd-run", "at", "batch", "crontab", "sg",
    "newgrp", "vi", "vim", "nvim", "view", "ex", "ed", "emacs", "nano", "less", "more", "man",
    "exec", "eval", "source", ".", "command", "builtin", "enable", "trap", "alias", "hash",
    "export", "declare", "typeset", "local", "readonly", "set", "shopt", "ulimit", "fc",
    "coproc", "select", "function", "if", "then", "else", "elif", "fi", "for", "while",
    "until", "do", "done", "case", "esac", "in",
})
_SHELL_GUARDED_FAMILY_RE = re.compile(r"(python|pypy|pip|perl|ruby|node|lua)[0-9.]*")
# a command the fallback (no evaluator) may judge: plain words, single spaces
_PLAIN_COMMAND_RE = re.compile(r"[A-Za-z0-9_.,:=+/@%-]+(?: [A-Za-z0-9_.,:=+/@%-]+)*")


def shell_program_guarded(program: str) -> bool:
    """True for a program whose options the built-in rules (toolbox/rules.py) look into."""
    name = program.rsplit("/", 1)[-1]
    return name in SHELL_GUARDED_PROGRAMS or bool(_SHELL_GUARDED_FAMILY_RE.fullmatch(name))


def _pathlike(word: str) -> bool:
    """A word that may name a path outside the workspace, or Clutch's or git's own files
    (judged without knowing the workspace)."""
    if ".." in word or ".clutch" in word or ".git" in word:
        return True
    if word.startswith("-"):
        return "/" in word
    return any(word[i] == "/" and (i == 0 or word[i - 1] in "=:,@") for i in range(len(word)))


class ApprovalPolicy(BaseModel):
    spawn: Literal["ask", "auto"] = "ask"
    read_tools: Literal["ask", "auto"] = "auto"
    write_tools: Literal["ask", "auto"] = "ask"
    shell: Literal["ask", "auto"] = "ask"
    # Shorthand: each entry is the rule {program = X, decision = "allow"}, listed after `rules`;
    # the built-in rules (toolbox/rules.py) still apply to it.
    shell_allowlist: list[str] = Field(default_factory=list)
    # [[approvals.rules]]: see ShellRule and the README's "Approval rules".
    rules: list[ShellRule] = Field(default_factory=list)

    @field_validator("shell_allowlist")
    @classmethod
    def _plain_words(cls, v: list[str]) -> list[str]:
        out = []
        for w in v:
            w = w.strip()
            if not _SHELL_PROGRAM_RE.fullmatch(w or "!"):
                raise ValueError(f"shell allowlist entry {w!r} must be one plain command name "
                                 f"(letters, digits, _ . + / -), e.g. 'pytest' or 'ls'")
            out.append(w)
        return out

    @field_validator("rules", mode="before")
    @classmethod
    def _rules_named(cls, v: Any) -> list[ShellRule]:
        """Each rule validated on its own, so an error names the rule (its number and program)."""
        if not isinstance(v, list):
            raise ValueError(f"approvals.rules must be a list of tables ([[approvals.rules]]), "
                             f"not {type(v).__name__}")
        out: list[ShellRule] = []
        for i, raw in enumerate(v, 1):
            if isinstance(raw, ShellRule):
                out.append(raw)
                continue
            name = f"rule {i}"
            if isinstance(raw, dict) and isinstance(raw.get("program"), str):
                name += f" (program = {raw['program']!r})"
            if not isinstance(raw, dict):
                raise ValueError(f"{name}: must be a table with program and decision, "
                                 f"not {raw!r}")
            try:
                out.append(ShellRule.model_validate(raw))
            except ValueError as e:   # pydantic's ValidationError: re-raised with the rule named
                errs = getattr(e, "errors", None)
                details = ("; ".join(f"{'.'.join(str(x) for x in err.get('loc', ())) or 'rule'}: "
                                     f"{err.get('msg', 'invalid')}"
                                     for err in errs(include_url=False, include_input=False))
                           if callable(errs) else str(e))
                raise ValueError(f"{name}: {details}") from e
        return out

    def shell_rules(self) -> list[tuple[str, ShellRule]]:
        """Every user rule with its name for the approval dialog: `rules` first, then the
        allowlist's shorthand entries."""
        named = [(f"rule {i} in config.toml: {r.describe()}", r) for i, r in enumerate(self.rules, 1)]
        named += [(f"shell_allowlist entry {w!r}", ShellRule(program=w, decision="allow"))
                  for w in self.shell_allowlist]
        return named

    def shell_allowed(self, command: str,
                      evaluate: Callable[[str, ApprovalPolicy], Any] | None = None) -> bool:
        """True when the command may run without asking under this policy.

        `evaluate` is toolbox.rules' evaluator bound to a workspace (it returns a RuleMatch);
        with it, this is `evaluate(command, self).decision == "allow"`. Without it (this layer
        cannot import the tools layer), the answer is never looser than the evaluator's: only
        plain words (no quotes, no shell syntax), no word that may name a path outside the
        workspace, no program the built-in rules look into, and an allow rule with no ask or
        deny rule beside it."""
        if evaluate is not None:
            return getattr(evaluate(command, self), "decision", None) == "allow"
        if self.shell == "auto" and not any(r.decision == "deny" for r in self.rules):
            return True
        if not isinstance(command, str) or not _PLAIN_COMMAND_RE.fullmatch(command):
            return False
        argv = command.split(" ")
        if shell_program_guarded(argv[0]) or "=" in argv[0] or any(_pathlike(w) for w in argv):
            return False
        if self.shell == "auto":
            return not any(r.decision == "deny" and r.applies_to(argv) for r in self.rules)
        decisions = [r.decision for _, r in self.shell_rules() if r.applies_to(argv)]
        return bool(decisions) and max(decisions, key=SHELL_DECISIONS.index) == "allow"


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
    shell_timeout_s: float = Field(default=60.0, gt=0)      # a model may ask for less, never more
    sandbox: Literal["bwrap", "none"] = "bwrap"            # "none": commands run unsandboxed
    sandbox_network: bool = False                          # commands may reach the network
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
# Ticket status rules: the one place that says what a person may do with a ticket
# ---------------------------------------------------------------------------------------------

TicketAction = Literal["retry", "skip", "cancel", "revert"]


def ticket_action_refusal(status: str, action: str, *, ticket_id: str = "ticket",
                          commit_sha: str = "") -> str | None:
    """Why `action` is not allowed on a ticket in `status` (a sentence), or None when it is.

    The engine raises it, the API answers it with 409, the GUI shows it as the tooltip of a
    greyed-out button and the CLI prints it: one rule, one sentence, everywhere."""
    if action == "retry":
        if status in RETRYABLE_STATES:
            return None
        return (f"{ticket_id} is {status}: only a failed, cancelled, blocked or skipped ticket "
                f"can be retried")
    if action == "skip":
        if status == "in_progress":
            return f"{ticket_id} is in_progress: cancel it first to skip it"
        if status == "completed":
            return f"{ticket_id} is already completed"
        if status == "skipped":
            return f"{ticket_id} is already skipped"
        return None
    if action == "cancel":
        if status in CANCELLABLE_STATES:
            return None
        return f"{ticket_id} is already {status}"
    if action == "revert":
        if status != "completed":
            return f"{ticket_id} is {status}: only a completed ticket can be reverted"
        if not commit_sha:
            return f"{ticket_id} has no commit to revert"
        return None
    raise ValueError(f"unknown ticket action {action!r}")


# A ticket in one of these states may be retried (back to todo, one more attempt).
RETRYABLE_STATES = frozenset({"failed", "cancelled", "blocked", "skipped"})
# A ticket in one of these states may be cancelled (a blocked one waits on a failure).
CANCELLABLE_STATES = frozenset({"todo", "in_progress", "blocked"})
# Dependencies in these states block their dependents.
BLOCKING_STATES = frozenset({"failed", "cancelled", "blocked"})


def can_retry(status: str) -> bool:
    return ticket_action_refusal(status, "retry") is None


def can_skip(status: str) -> bool:
    return ticket_action_refusal(status, "skip") is None


def can_cancel(status: str) -> bool:
    return ticket_action_refusal(status, "cancel") is None


def can_revert(status: str, commit_sha: str) -> bool:
    return ticket_action_refusal(status, "revert", commit_sha=commit_sha) is None


# ---------------------------------------------------------------------------------------------
# Approvals: requests, payloads and decisions are typed data
# ---------------------------------------------------------------------------------------------
# One payload class per kind, told apart by `kind` (as pydantic-ai's deferred tools tell
# ToolApproved from ToolDenied). The engine builds them, the GUI and the CLI edit them as typed
# objects, the API validates JSON against them. An edit is a partial dict merged over the
# request's payload by `edit_payload`, which refuses what may not change with a sentence.

ApprovalKind = Literal["spawn", "tool", "shell", "step", "budget", "checkpoint", "merge",
                       "repair"]


class ApprovalEditError(ValueError):
    """An edited payload the request cannot take; the approval stays pending."""


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # Fields a person may change in the dialog; the rest are shown, not edited.
    EDITABLE: ClassVar[tuple[str, ...]] = ()

    def check_edit(self, original: "_Payload") -> None:
        """Refuse an edit that makes no sense for this kind (raises ApprovalEditError)."""


class SpawnPayload(_Payload):
    """A worker is about to start: its prompt, context and model are the person's to edit."""
    kind: Literal["spawn"] = "spawn"
    prompt: str
    context: str = ""
    model: str = ""
    description: str = ""           # the ticket's text, shown beside the prompt
    attempt: int = 1                # 2, 3, … for a repair session
    EDITABLE: ClassVar[tuple[str, ...]] = ("prompt", "context", "model")

    def check_edit(self, original: _Payload) -> None:
        if not self.prompt.strip():
            raise ApprovalEditError("the edited prompt is empty: a worker needs its ticket")


class ToolPayload(_Payload):
    """A mutating file tool call; `args` is editable, the tool is not."""
    kind: Literal["tool"] = "tool"
    tool: str
    args: dict[str, Any] = Field(default_factory=dict)
    preview: str = ""               # a unified diff of what the call would change
    EDITABLE: ClassVar[tuple[str, ...]] = ("args",)

    def check_edit(self, original: _Payload) -> None:
        if isinstance(original, ToolPayload) and self.tool != original.tool:
            raise ApprovalEditError(f"an approval cannot change which tool runs "
                                    f"({original.tool} → {self.tool}); reject it instead")


class ShellPayload(_Payload):
    """A shell command: the command and its folder are editable; `rule` says why it asks."""
    kind: Literal["shell"] = "shell"
    command: str
    cwd: str = "."
    timeout_s: float | None = None  # what the command will be given (the setting's, or less)
    rule: str = ""                  # the approval rule that matched, in words
    argument: str = ""              # the word of the command that rule is about, if any
    EDITABLE: ClassVar[tuple[str, ...]] = ("command", "cwd", "timeout_s")

    def check_edit(self, original: _Payload) -> None:
        if not self.command.strip():
            raise ApprovalEditError("the edited command is empty; reject the call instead")
        if self.timeout_s is not None and self.timeout_s <= 0:
            raise ApprovalEditError("the edited timeout must be a positive number of seconds")


class StepPayload(_Payload):
    """Step mode: a worker finished a round; continue to the next?"""
    kind: Literal["step"] = "step"
    round: int
    last: str = ""                  # the worker's last words


class BudgetPayload(_Payload):
    """The budget is reached; raising it (editable) lets the work go on."""
    kind: Literal["budget"] = "budget"
    spent_usd: float = 0.0
    budget_usd: float = 0.0
    spent_tokens: int = 0
    budget_tokens: int = 0
    EDITABLE: ClassVar[tuple[str, ...]] = ("budget_usd", "budget_tokens")


class CheckpointPayload(_Payload):
    """A phase's manual verification: the person checks the phase's work."""
    kind: Literal["checkpoint"] = "checkpoint"
    phase: str
    tasks: list[str] = Field(default_factory=list)
    commits: list[str] = Field(default_factory=list)
    verify_output: str = ""


class MergePayload(_Payload):
    """A finished track's branch is about to be merged into the person's branch."""
    kind: Literal["merge"] = "merge"
    branch: str
    into: str
    diff: str = ""
    tickets: list[dict[str, Any]] = Field(default_factory=list)


class RepairPayload(_Payload):
    """A failed check: Tier 4's diagnosis (editable) goes to a fresh worker session."""
    kind: Literal["repair"] = "repair"
    attempt: int
    check: str = ""
    output: str = ""
    diagnosis: str = ""
    EDITABLE: ClassVar[tuple[str, ...]] = ("diagnosis",)


ApprovalPayload = Annotated[
    SpawnPayload | ToolPayload | ShellPayload | StepPayload | BudgetPayload | CheckpointPayload
    | MergePayload | RepairPayload,
    Field(discriminator="kind")]

PAYLOAD_CLASSES: dict[str, type[_Payload]] = {
    "spawn": SpawnPayload, "tool": ToolPayload, "shell": ShellPayload, "step": StepPayload,
    "budget": BudgetPayload, "checkpoint": CheckpointPayload, "merge": MergePayload,
    "repair": RepairPayload,
}

_PY_TYPES: dict[str, tuple[type, ...]] = {"str": (str,), "int": (int,), "float": (int, float),
                                          "dict": (dict,), "list": (list,), "bool": (bool,)}


def _edit_type_error(name: str, annotation: Any, value: Any) -> str | None:
    """The sentence for a value of the wrong JSON type, or None when it fits."""
    text = getattr(annotation, "__name__", None) or str(annotation)
    names = [n for n in ("str", "int", "float", "dict", "list", "bool") if n in text]
    if not names or value is None and "None" in text:
        return None
    allowed = tuple(t for n in names for t in _PY_TYPES[n])
    if isinstance(value, bool) and bool not in allowed:
        allowed_ok = False
    else:
        allowed_ok = isinstance(value, allowed)
    if allowed_ok:
        return None
    return (f"{name!r} in the edited payload must be {' or '.join(names)}, "
            f"not {type(value).__name__}")


def edit_payload(original: _Payload, edit: Mapping[str, Any] | _Payload | None) -> _Payload:
    """The payload a person approved: `edit` (a partial dict, or a whole payload of the same
    kind) merged over `original`. Raises ApprovalEditError with a sentence for a bad edit."""
    if edit is None:
        return original
    if isinstance(edit, _Payload):
        if type(edit) is not type(original):
            raise ApprovalEditError(f"a {original.kind} approval cannot be answered with a "
                                    f"{getattr(edit, 'kind', '?')} payload")
        edit = edit.model_dump()
    if not isinstance(edit, Mapping):
        raise ApprovalEditError("an edited payload must be an object")
    cls = type(original)
    fields = cls.model_fields
    merged = original.model_dump()
    for key, value in edit.items():
        if key == "kind":
            if value != original.kind:
                raise ApprovalEditError(f"an approval cannot change its kind "
                                        f"({original.kind} → {value})")
            continue
        if key not in fields:
            raise ApprovalEditError(f"{key!r} is not part of a {original.kind} approval "
                                    f"(it has: {', '.join(k for k in fields if k != 'kind')})")
        problem = _edit_type_error(key, fields[key].annotation, value)
        if problem:
            raise ApprovalEditError(problem)
        if value != merged.get(key) and key not in cls.EDITABLE and key != "tool":
            raise ApprovalEditError(f"{key!r} of a {original.kind} approval is shown, not "
                                    f"edited" + (f" (editable: {', '.join(cls.EDITABLE)})"
                                                 if cls.EDITABLE else ""))
        merged[key] = value
    try:
        new = cls.model_validate(merged)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise ApprovalEditError(f"{where!r} in the edited payload: {first.get('msg')}") from None
    new.check_edit(original)
    return new


class ApprovalRequest(BaseModel):
    id: str = Field(default_factory=lambda: "A-" + uuid.uuid4().hex[:10])
    title: str
    stream_id: str = ""
    track_id: str = ""
    ticket_id: str = ""
    payload: ApprovalPayload
    created_at: float = Field(default_factory=time.time)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def kind(self) -> str:
        """The payload's kind ("spawn", "tool", …): one source of truth."""
        return self.payload.kind


class Approved(BaseModel):
    """Yes: run it. A person's edit arrives as a whole typed `payload` (the GUI edits typed
    objects) or as partial `edits` (a dict of changed fields, as the API and the CLI send); the
    engine merges and checks either (`edit_payload`), and the decision it hands on carries the
    final typed payload in `payload` (None: as requested)."""
    kind: Literal["approved"] = "approved"
    payload: ApprovalPayload | None = None
    edits: dict[str, Any] | None = None
    reason: str = ""
    source: str = "user"

    @property
    def approved(self) -> bool:
        return True


class Denied(BaseModel):
    """No, with the person's reason (it reaches the model as the call's result)."""
    kind: Literal["denied"] = "denied"
    reason: str = ""
    source: str = "user"

    @property
    def approved(self) -> bool:
        return False

    @property
    def payload(self) -> None:
        return None


ApprovalDecision = Annotated[Approved | Denied, Field(discriminator="kind")]


def decide(approved: bool, *, payload: _Payload | None = None, reason: str = "",
           source: str = "user") -> Approved | Denied:
    """An Approved or a Denied from the yes/no a dialog, the CLI or the API gives."""
    if approved:
        return Approved(payload=payload, reason=reason, source=source)
    return Denied(reason=reason, source=source)


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
