"""The offline model: deterministic, local, no key, no network.

Threads: the executor thread of the agent that calls generate(); one provider is shared by
every agent. State owned: the pacing settings (fixed) and a ToolsTextCache (safe to share).
"""
from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from models import Usage
from providers.base import (ChunkFn, ModelRequest, ModelResponse, RetryFn, ToolCall,
                            ToolsTextCache, estimate_tokens)

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
        self._request_text = ToolsTextCache()

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
