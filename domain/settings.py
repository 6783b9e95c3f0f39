"""Settings (.clutch/config.toml) and the shell approval policy and rules.

Part of the models layer (door: models.py); imports nothing of ours but its siblings.
Pure data and functions: any thread, no state of its own.
"""
from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from domain.core import TIERS, Tier
from domain.usage import DEFAULT_PRICES, Price

# ---------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------

ProviderName = Literal["offline", "gemini", "openai", "ollama", "anthropic"]
PROVIDER_NAMES: tuple[str, ...] = ("offline", "gemini", "openai", "ollama", "anthropic")

# Each provider's model per tier, until the person picks others (Settings.<provider>.models;
# Gemini's are Settings.models).
DEFAULT_MODELS: dict[str, dict[str, str]] = {
    "gemini": {"Tier 1": "gemini-2.5-pro", "Tier 2": "gemini-2.5-flash",
               "Tier 3": "gemini-2.5-flash-lite", "Tier 4": "gemini-2.5-flash-lite"},
    "openai": {"Tier 1": "gpt-5", "Tier 2": "gpt-5-mini", "Tier 3": "gpt-5-mini",
               "Tier 4": "gpt-5-nano"},
    "anthropic": {"Tier 1": "claude-opus-4-5", "Tier 2": "claude-sonnet-4-5",
                  "Tier 3": "claude-sonnet-4-5", "Tier 4": "claude-haiku-4-5"},
    "ollama": {"Tier 1": "qwen2.5-coder:7b", "Tier 2": "qwen2.5-coder:7b",
               "Tier 3": "qwen2.5-coder:7b", "Tier 4": "qwen2.5-coder:7b"},
}


class _HttpProviderSettings(BaseModel):
    """What every HTTP provider (OpenAI-compatible, Anthropic) shares: timeouts and retries."""
    timeout_s: float = Field(default=120.0, gt=0)
    max_retries: int = Field(default=5, ge=0, le=50)
    retry_initial_delay_s: float = Field(default=1.0, ge=0)
    retry_max_delay_s: float = Field(default=60.0, ge=0)


class OpenAISettings(_HttpProviderSettings):
    base_url: str = ""          # empty: the SDK's own OPENAI_BASE_URL, else api.openai.com/v1
    models: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_MODELS["openai"]))
    # OpenAI's own API wants max_completion_tokens (reasoning models refuse max_tokens); some
    # compatible servers know only max_tokens
    max_tokens_param: Literal["max_completion_tokens", "max_tokens"] = "max_completion_tokens"


class OllamaSettings(_HttpProviderSettings):
    host: str = ""              # empty: OLLAMA_HOST, else http://127.0.0.1:11434
    models: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_MODELS["ollama"]))
    timeout_s: float = Field(default=600.0, gt=0)       # a local model may load for minutes
    max_retries: int = Field(default=2, ge=0, le=50)


class AnthropicSettings(_HttpProviderSettings):
    base_url: str = ""          # empty: the SDK's own ANTHROPIC_BASE_URL, else its default
    models: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_MODELS["anthropic"]))
    # the Messages API requires max_tokens on every request: this when the agent sets none
    max_output_tokens: int = Field(default=16_000, ge=1, le=128_000)
    prompt_caching: bool = True  # cache_control on the shared prefix (tools, system)


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
    provider: ProviderName = "offline"     # every tier's provider, unless tier_providers says
    # one tier on another provider: {"Tier 3": "ollama"}
    tier_providers: dict[Tier, ProviderName] = Field(default_factory=dict)
    # one tier on a model of its own (on its provider): {"Tier 3": "qwen2.5-coder:7b"}
    tier_models: dict[Tier, str] = Field(default_factory=dict)
    # Gemini's model per tier (each other provider's are in its own settings)
    models: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_MODELS["gemini"]))
    prices: dict[str, Price] = Field(
        default_factory=lambda: {k: Price(**v) for k, v in DEFAULT_PRICES.items()})
    gemini: GeminiSettings = Field(default_factory=GeminiSettings)
    openai: OpenAISettings = Field(default_factory=OpenAISettings)
    ollama: OllamaSettings = Field(default_factory=OllamaSettings)
    anthropic: AnthropicSettings = Field(default_factory=AnthropicSettings)
    offline_pace_s: float = Field(default=0.01, ge=0.0, le=5.0)  # seconds between streamed chunks
    offline_latency_s: float = Field(default=0.0, ge=0.0, le=60.0)  # fixed latency per call
    max_workers: int = Field(default=4, ge=1, le=MAX_WORKERS)
    max_tool_rounds: int = Field(default=12, ge=1, le=200)
    # Tier 2 may read files (read_file, list_dir, search_files) for this many rounds before
    # it plans a track (one more request per round); 0 = it plans from the repository map
    # focused on the track, which it always gets (issue 19)
    tier2_read_rounds: int = Field(default=0, ge=0, le=20)
    budget_usd: float = Field(default=0.0, ge=0.0)       # 0 = no limit
    budget_tokens: int = Field(default=0, ge=0)          # 0 = no limit
    step_mode: bool = False
    approvals: ApprovalPolicy = Field(default_factory=ApprovalPolicy)
    git_commits: bool = True
    # in a git workspace, each ticket works in a worktree of its own on
    # clutch-ticket/<track>/<ticket>, merged into clutch/<track> in DAG order
    worktrees: bool = True
    merge_tracks: bool = True      # false: a finished track's branch is left for a pull request
    verify_command: str = ""       # run in the ticket's tree before it may complete ("" = none)
    max_repairs: int = Field(default=2, ge=0, le=10)   # repair sessions after a failed check
    context_window: int = Field(default=1_048_576, ge=1024)
    shell_timeout_s: float = Field(default=60.0, gt=0)      # a model may ask for less, never more
    sandbox: Literal["bwrap", "none"] = "bwrap"            # "none": commands run unsandboxed
    sandbox_network: bool = False                          # commands may reach the network
    api_port: int = Field(default=0, ge=0, le=65535)

    def provider_for(self, tier: str) -> str:
        """The provider that runs `tier`: its own (tier_providers), else the default."""
        return self.tier_providers.get(tier) or self.provider   # type: ignore[call-overload]

    def models_of(self, provider: str) -> dict[str, str]:
        """A provider's model per tier (Gemini's: `models`)."""
        if provider == "gemini":
            return self.models
        own = getattr(self, provider, None)
        return own.models if isinstance(own, _HttpProviderSettings) else {}

    def model_for(self, tier: str, override: str | None = None) -> str:
        """The model that runs `tier`: the ticket's override, else the tier's own model, else
        its provider's model for the tier. "offline" on the offline provider."""
        provider = self.provider_for(tier)
        if provider == "offline":
            return "offline"
        return (override or self.tier_models.get(tier)   # type: ignore[call-overload]
                or self.models_of(provider).get(tier)
                or DEFAULT_MODELS.get(provider, {}).get(tier) or "gemini-2.5-flash")

    def providers_in_use(self) -> list[str]:
        """Every provider some tier runs on, in tier order."""
        out: list[str] = []
        for tier in TIERS:
            p = self.provider_for(tier)
            if p not in out:
                out.append(p)
        return out

    def price_for(self, model: str, provider: str | None = None) -> Price:
        """The price of `model` (the longest known prefix of its name); a local model (the
        offline or ollama provider) costs nothing, whatever its name."""
        if provider in ("offline", "ollama"):
            return Price()
        if model in self.prices:
            return self.prices[model]
        # "gemini-2.5-flash-001" -> the longest known prefix
        best = ""
        for name in self.prices:
            if model.startswith(name) and len(name) > len(best):
                best = name
        return self.prices[best] if best else Price()
