"""Checks: the evidence a ticket needs before it may be `completed` (issue 18).

After a worker's final answer, in the ticket's own tree and sandbox: (1) the model's last turn
ended normally (STOP or the provider's equivalent; AgentSession raises on every other ending,
so a turn that reached here and did not end normally is a bug we report, not a pass); (2) every
target file the ticket names exists; (3) the verify command passes, when one is set (the
track's own, else `verify_command` in the settings; `clutch run --verify`). The command's output
streams into the worker's stream. In a ticket's own worktree, what the command leaves behind
(caches, reports, a formatter's edits) is removed after it: the commit holds the worker's work. A failure is a CheckReport the repair loop hands to Tier 4
and then to the next attempt.

`propose_verify_command` reads the project's own conventions (a Conductor workflow.md or
tech-stack.md naming its test command; `pytest` when the repository has Python tests) for the
person to accept; it is never applied on its own.

Track acceptance: when a track's last ticket is merged, the verify command runs on the merged
whole (the track branch, in a worktree of its own; or the shared directory); a failure goes to
Tier 4, whose diagnosis becomes a fix ticket depending on every other ticket, which the person
sees at its spawn approval (`--yes` accepts), at most `max_repairs` times; then the track fails.

Threads: `_check_ticket` runs on the ticket's executor thread; `_accept_track` on the loop
(its command and Tier 4 on the executor); `propose_verify_command` on any thread (it reads a
few small files). State owned: none.
"""
from __future__ import annotations

import asyncio
import dataclasses
import pathlib
import re
import threading

from engine.errors import describe
from events import ErrorEvent, StreamChunk, TrackChanged
from models import SATISFIED_STATES, Ticket, Track, stream_tier3, stream_tier4
from tools import Workspace, WorktreeError

ACCEPT_PREFIX = "Acceptance fix:"

_FENCE_CMD = re.compile(r"`{1,3}(?:bash|sh|shell|console)?\s*\n?\s*\$?\s*"
                        r"((?:python3? -m pytest|pytest|npm (?:run )?test|yarn test|pnpm test|"
                        r"go test|cargo test|make test|tox|nox)[^`\n]*)`{0,3}")
_MAX_DOC = 200_000
_TARGETS_LINE = re.compile(r"(?m)^TARGET FILES:[ \t]*(.*)$")


@dataclasses.dataclass(frozen=True)
class CheckReport:
    """The checks of one attempt: each line says what was checked and how it went."""
    ok: bool
    lines: tuple[str, ...]
    failed: str = ""          # the first check that failed, in words
    output: str = ""          # the verify command's output (its tail)

    def text(self) -> str:
        out = "\n".join(self.lines)
        if self.output:
            out += "\n--- verify command output (tail) ---\n" + self.output[-4000:]
        return out


def propose_verify_command(root: str | pathlib.Path) -> tuple[str, str]:
    """(command, where it came from) the project's own documents suggest, or ("", "")."""
    root = pathlib.Path(root)
    for doc in ("conductor/workflow.md", "conductor/tech-stack.md"):
        path = root / doc
        try:
            if not path.is_file() or path.stat().st_size > _MAX_DOC:
                continue
            text = path.read_text("utf-8", "replace")
        except OSError:
            continue          # unreadable: the next source may still say
        m = _FENCE_CMD.search(text)
        if m:
            return m.group(1).strip().rstrip("`").strip(), doc
    has_tests = (root / "tests").is_dir() or any(root.glob("test_*.py"))
    if has_tests and (any(root.glob("*.py")) or (root / "pyproject.toml").exists()
                      or (root / "tests").is_dir()):
        return "python3 -m pytest -q", "the repository has tests"
    return "", ""


def _rel(path: str) -> str | None:
    """A target file's path inside the tree, or None when it names none (absolute, .., '')."""
    p = path.strip().split(" (")[0].strip().strip("`'\"")
    if not p or p.startswith("/") or ".." in pathlib.PurePosixPath(p).parts:
        return None
    return p


class Checks:
    """Mixin of ConductorEngine: the checks before `completed`."""

    def _verify_command_for(self, track: Track) -> str:
        with self._lock:
            own = track.verify_command
        return (own if own is not None else self.settings.verify_command).strip()

    def _check_ticket(self, track: Track, ticket: Ticket, ws: Workspace, ended_normally: bool,
                      finish: str, cancel: threading.Event, prompt: str) -> CheckReport:
        """The checks of one attempt. The target files checked are those the approved prompt's
        TARGET FILES line names (a person who edits a target there meant it)."""
        sid = stream_tier3(ticket.id)
        emit = self._emitter()
        lines: list[str] = []
        failed = ""
        if ended_normally:
            lines.append(f"✓ the model's last turn ended normally ({finish})")
        else:
            failed = f"the model's last turn did not end normally ({finish or 'no finish reason'})"
            lines.append("✗ " + failed)
        named = _TARGETS_LINE.search(prompt)      # the ticket's TARGET FILES, as approved
        if named is not None:
            listed = named.group(1).strip()
            targets = [] if listed in ("", "(none named)") else \
                [x.strip() for x in listed.split(",") if x.strip()]
        else:
            with self._lock:
                targets = [t for t in ticket.target_files if t in prompt]
        missing = []
        for t in targets:
            rel = _rel(t)
            if rel is not None and not (ws.root / rel).exists():
                missing.append(rel)
        if missing:
            what = f"target file(s) missing: {', '.join(missing)}"
            lines.append("✗ " + what)
            failed = failed or what
        elif targets:
            lines.append(f"✓ every target file exists ({len(targets)})")
        output = ""
        cmd = self._verify_command_for(track)
        if cmd and not failed:
            emit(StreamChunk(stream_id=sid, text=f"\n  ▶ verify: {cmd}\n"))
            own_tree = self._in_worktrees(track)
            if own_tree:       # the worker's work, staged: what the command leaves is not it
                self._tb.git.run("add", "-A", cwd=ws.root)
            res = ws.execute("run_shell", {"command": cmd}, cancel=cancel)
            if own_tree:       # caches and reports the command wrote (__pycache__, .pytest_cache,
                # a formatter's edits) go: the ticket's commit holds what its worker wrote
                self._tb.git.run("checkout", "-q", "--", ":/", cwd=ws.root)
                self._tb.git.run("clean", "-fdq", "--", ":/", cwd=ws.root)
            output = self._scrub(res.output or res.error or "")
            if output:
                emit(StreamChunk(stream_id=sid, text=output[-4000:].rstrip("\n") + "\n"))
            if res.ok:
                lines.append(f"✓ verify command passed: {cmd}")
            else:
                what = (f"verify command failed (exit code {res.exit_code}): {cmd}"
                        if res.exit_code is not None else f"verify command could not run: "
                                                           f"{res.error or cmd}")
                lines.append("✗ " + what)
                failed = what
        elif cmd:
            lines.append(f"· verify command not run (an earlier check failed): {cmd}")
        report = CheckReport(ok=not failed, lines=tuple(lines), failed=failed, output=output)
        emit(StreamChunk(stream_id=sid, text="\n  checks:\n" + "".join(
            f"    {line}\n" for line in report.lines)))
        return report

    async def _accept_track(self, track: Track) -> str:
        """"passed", "fix" (a fix ticket joined the track: run it) or "failed"."""
        cmd = self._verify_command_for(track)
        with self._lock:
            done = [k for k in track.tickets if k.status in SATISFIED_STATES]
            fixes = sum(1 for k in track.tickets if k.description.startswith(ACCEPT_PREFIX))
            if not cmd or len(done) != len(track.tickets) or not any(
                    k.status == "completed" and not k.checkpoint for k in done):
                return "passed"
        loop = asyncio.get_running_loop()
        ok, output = await loop.run_in_executor(self._executor, self._run_acceptance, track, cmd)
        sid = stream_tier4(f"{track.id} acceptance")
        if ok:
            self._emit(StreamChunk(stream_id=sid, text=f"✓ acceptance: `{cmd}` passed on "
                                                       f"{track.branch or 'the workspace'}\n"))
            return "passed"
        what = f"track {track.id}'s acceptance check `{cmd}` failed on its merged work"
        if fixes >= self.settings.max_repairs:
            self._emit(ErrorEvent(message=f"{what}, and {fixes} fix ticket(s) did not mend it: "
                                          f"the track fails", track_id=track.id))
            return "failed"
        try:
            diagnosis = await loop.run_in_executor(self._executor, self.run_qa, track.id,
                                                   f"{track.id} acceptance", what, output)
        except Exception as e:       # no diagnosis: the fix ticket carries the output itself
            diagnosis = f"(Tier 4 could not diagnose: {describe(e)})"
        fix = Ticket(id=f"T-{self._next_ticket_number():03d}",
                     description=(f"{ACCEPT_PREFIX} make `{cmd}` pass on the track's merged "
                                  f"work. Tier 4: {self._scrub(diagnosis).strip()[:1500]}"),
                     depends_on=[k.id for k in track.tickets if k.status == "completed"])
        with self._lock:
            track.tickets = [*track.tickets, fix]
        self._save(track)
        self._emit(TrackChanged(track_id=track.id))
        return "fix"

    def _run_acceptance(self, track: Track, cmd: str) -> tuple[bool, str]:
        """Executor thread: the verify command on the track branch's tip (in a worktree made
        for it and removed after), or in the shared directory."""
        if not (self._tb is not None and track.branch):
            res = self.ws.execute("run_shell", {"command": cmd})
            return res.ok, self._scrub(res.output or res.error or "")
        probe = f"ACCEPT-{self._next_ticket_number()}"
        try:
            path = self._tb.ticket_worktree(track.id, probe)
            res = self._tree_workspace(path).execute("run_shell", {"command": cmd})
            return res.ok, self._scrub(res.output or res.error or "")
        except WorktreeError as e:
            return False, f"the acceptance check could not run: {e}"
        finally:
            try:
                self._tb.cleanup_ticket(track.id, probe, discard=True)
            except WorktreeError as e:
                self._emitter()(ErrorEvent(message=f"could not remove the acceptance worktree "
                                                   f"of {track.id}: {e}", track_id=track.id))
