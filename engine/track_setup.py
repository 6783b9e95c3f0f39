"""The person's set-up of how work is checked and kept: a track's own verify command (issue 18)
and turning a plain directory into a git repository, so tickets get worktrees (issue 17).

Threads: the public methods are called from any thread (the GUI, the API, the CLI).
`set_verify_command` and `init_git` refuse a bad request at once (EngineError) and return a
`concurrent.futures.Future`; their work runs on the conductor (loop) thread, git's on an
executor thread. `verify_suggestion` and `git_setup` read files or run git and block for a
few milliseconds: callers on the GUI thread run them on a background pool. State owned: none
of its own; a track's `verify_command` changes under the track lock, the engine's git and
worktree handles (`_git`, `_tb`) are swapped under it only while no track runs.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import os
import pathlib
import shutil
import subprocess
from typing import Any

from engine.checks import propose_verify_command
from engine.errors import EngineError, copy_track
from events import LogEvent, TrackChanged
from models import Track
from tools import GitRepo, TrackBranches

MAX_VERIFY_CHARS = 2000
_SHARED_PREFIXES = ("Tickets share the workspace directory", "Git commits per ticket are off")


class TrackSetup:
    """Mixin of ConductorEngine: a track's verify command; `git init` for the workspace."""

    # -- a track's verify command -----------------------------------------------------------

    def set_verify_command(self, track_id: str,
                           command: str | None) -> concurrent.futures.Future[Track]:
        """The track's own verify command: a string (run in each ticket's tree before it may
        complete; "" = no verify command for this track), or None to use the settings'
        `verify_command`. Refused while the track runs (its tickets are being checked against
        the current one). The future gives a copy of the track once it is on disk."""
        if command is not None and not isinstance(command, str):
            raise EngineError(f"the verify command must be text or None, not "
                              f"{type(command).__name__}")
        if command is not None:
            command = command.strip()
            if len(command) > MAX_VERIFY_CHARS:
                raise EngineError(f"the verify command is {len(command):,} characters; the "
                                  f"limit is {MAX_VERIFY_CHARS:,}. Put a long script in a file "
                                  f"in the workspace and run that")
            if "\0" in command:
                raise EngineError("the verify command contains a NUL character")
        self._get(track_id)
        self._refuse_running(track_id)
        return self.submit(self._set_verify(track_id, command))

    def _refuse_running(self, track_id: str) -> None:
        if self.is_running(track_id):
            raise EngineError(f"track {track_id} is running; its tickets are checked with the "
                              f"current verify command. Pause it and let its workers finish "
                              f"before changing it")

    async def _set_verify(self, track_id: str, command: str | None) -> Track:
        track = self._get(track_id)
        with self._lock:
            self._refuse_running(track_id)
            track.verify_command = command
        self._save(track)
        await self._flush()
        self._emit(TrackChanged(track_id=track_id))
        return copy_track(track)

    def verify_suggestion(self) -> tuple[str, str]:
        """(command, where it came from) the project's own documents suggest ("", "" when
        none): a Conductor workflow.md or tech-stack.md naming it, or pytest when the
        repository has tests. Reads files: call it off the GUI thread."""
        return propose_verify_command(self.workspace)

    # -- git for a plain directory -----------------------------------------------------------

    def git_setup(self) -> dict[str, Any]:
        """Whether tickets get worktrees and, when they do not, whether `init_git` can help:
        {"worktrees": bool, "can_init": bool, "reason": str}. `can_init` is true when git is
        installed, the settings want git and worktrees, and the workspace is not inside a git
        work tree or its repository has no commit yet. Runs git: call it off the GUI thread."""
        if self.worktrees_on:
            return {"worktrees": True, "can_init": False, "reason": ""}
        s = self.settings
        if not s.git_commits:
            return {"worktrees": False, "can_init": False,
                    "reason": "git commits are off in the settings"}
        if not s.worktrees:
            return {"worktrees": False, "can_init": False,
                    "reason": "worktrees are off in the settings"}
        tb = TrackBranches(self.workspace)
        can = shutil.which("git") is not None and self.workspace.is_dir() and (
            tb.top is None or tb.git.rev("HEAD") is None)
        return {"worktrees": False, "can_init": bool(can), "reason": tb.reason}

    def init_git(self) -> concurrent.futures.Future[str]:
        """`git init` in the workspace (unless it is in a repository already) and a first
        commit of what is there, with Clutch's own `.clutch/` kept out through
        `.git/info/exclude`; then tickets get worktrees, from the next track started. Refused
        while a track runs. The future gives the first commit's short SHA."""
        if shutil.which("git") is None:
            raise EngineError("git is not installed (not found on PATH); install git to give "
                              "each ticket a worktree of its own")
        with self._lock:
            running = [tid for tid, f in self._running.items() if not f.done()]
        if running:
            raise EngineError(f"track {running[0]} is running; let it finish before turning "
                              f"the workspace into a git repository")
        if self.worktrees_on:
            raise EngineError("the workspace is a git repository already and tickets get "
                              "worktrees of their own")
        return self.submit(self._init_git())

    async def _init_git(self) -> str:
        loop = asyncio.get_running_loop()
        sha = await loop.run_in_executor(self._executor, _git_init_and_commit, self.workspace)
        s = self.settings
        git, why_git = GitRepo.detect(self.workspace, clean=not s.worktrees)
        tb, why_tb = TrackBranches.detect(self.workspace)
        with self._lock:
            running = [tid for tid, f in self._running.items() if not f.done()]
            if not running and tb is not None and s.git_commits and s.worktrees:
                self._git = git
                self._tb = tb
                self.notices[:] = [n for n in self.notices if not n.startswith(_SHARED_PREFIXES)]
                switched = True
            else:
                switched = False
        if switched:
            self._emit(LogEvent(message=f"git repository ready (first commit {sha}): each "
                                        f"ticket of the next track started gets its own "
                                        f"worktree", level="info"))
        else:
            why = (f"track {running[0]} started meanwhile" if running else
                   why_tb or why_git or "the settings keep worktrees off")
            self._emit(LogEvent(message=f"git repository ready (first commit {sha}), but this "
                                        f"session keeps tickets in the shared directory "
                                        f"({why}); reopen the workspace to use worktrees",
                                level="warning"))
        return sha


def _git_init_and_commit(root: Any) -> str:
    """Executor thread: `git init` (when `root` is in no repository), `.clutch/` excluded, and
    a first commit of everything else there (an empty one if there is nothing); its short SHA.
    A failure is an EngineError quoting git."""
    # git needs no key of ours: a small environment, with the repository redirections dropped
    env = {k: v for k, v in os.environ.items()
           if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "XDG_CONFIG_HOME")}
    env["GIT_TERMINAL_PROMPT"] = "0"

    def git(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        try:
            proc = subprocess.run(["git", "-C", str(root), *args], capture_output=True,
                                  text=True, env=env, stdin=subprocess.DEVNULL, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise EngineError(f"git {args[0]} could not run: {e}") from e
        if check and proc.returncode != 0:
            said = (proc.stderr or proc.stdout).strip()
            raise EngineError(f"git {args[0]} failed (exit {proc.returncode}): "
                              f"{said or '(no message)'}")
        return proc

    inside = git("rev-parse", "--is-inside-work-tree", check=False)
    if inside.returncode != 0 or inside.stdout.strip() != "true":
        git("init", "-q")
    common = git("rev-parse", "--git-common-dir").stdout.strip()
    exclude = pathlib.Path(root, common) / "info" / "exclude"    # an absolute `common` wins
    text = exclude.read_text("utf-8", "replace") if exclude.exists() else ""
    listed = {x.strip() for x in text.splitlines()}
    if not {".clutch/", "/.clutch/", ".clutch", "/.clutch"} & listed:
        exclude.parent.mkdir(parents=True, exist_ok=True)
        with open(exclude, "a", encoding="utf-8") as f:
            if text and not text.endswith("\n"):
                f.write("\n")
            f.write("# Clutch's own files and worktrees (added by Clutch)\n.clutch/\n")
    ident: list[str] = []
    if not git("config", "user.name", check=False).stdout.strip():
        ident += ["-c", "user.name=Clutch"]
    if not git("config", "user.email", check=False).stdout.strip():
        ident += ["-c", "user.email=clutch@localhost"]
    if git("rev-parse", "-q", "--verify", "HEAD", check=False).returncode == 0:
        raise EngineError("the repository has commits already; nothing to initialise")
    git("add", "-A")
    git(*ident, "commit", "-q", "--allow-empty", "--no-verify", "-m",
        "Initial commit (made by Clutch, so each ticket can work in a git worktree)")
    return git("rev-parse", "--short", "HEAD").stdout.strip()
