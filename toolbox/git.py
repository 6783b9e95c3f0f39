"""GitRepo: the workspace's git work tree, one commit per ticket.

Threads: any executor thread; ``commit_paths`` and ``revert`` are serialised per instance by
its lock, the only state it owns (with the resolved root). git runs on the host, outside the
command sandbox, with the API keys and git's repository-redirecting variables dropped.
"""
from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess
import threading

from toolbox.errors import SandboxError, ToolError
from toolbox.paths import check_path

SECRET_ENV_VARS = ("GEMINI_API_KEY", "GOOGLE_API_KEY")
_SHA_RE = re.compile(r"^[0-9a-fA-F]{4,40}$")


class GitRepo:
    """A git work tree at ``root``. ``commit_paths`` and ``revert`` are serialised per instance."""

    _GIT_TIMEOUT_S = 120.0

    def __init__(self, root: pathlib.Path):
        self.root = pathlib.Path(root).resolve()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"GitRepo({str(self.root)!r})"

    @staticmethod
    def _env() -> dict[str, str]:
        drop = set(SECRET_ENV_VARS) | {"GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE",
                                        "GIT_OBJECT_DIRECTORY", "GIT_PREFIX"}
        env = {k: v for k, v in os.environ.items() if k not in drop}
        env["GIT_TERMINAL_PROMPT"] = "0"
        return env

    @staticmethod
    def _run_git(root: pathlib.Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        git = shutil.which("git")
        if git is None:
            raise ToolError("git is not installed (not found on PATH)")
        try:
            proc = subprocess.run([git, "-C", str(root), *args], stdin=subprocess.DEVNULL,
                                  capture_output=True, env=GitRepo._env(),
                                  timeout=GitRepo._GIT_TIMEOUT_S)
        except subprocess.TimeoutExpired as e:
            raise ToolError(f"git {args[0]} did not finish within {GitRepo._GIT_TIMEOUT_S:g}s") from e
        if check and proc.returncode != 0:
            msg = (proc.stderr or proc.stdout).decode("utf-8", "replace").strip()
            sub = next((a for a in args if not a.startswith("-") and "=" not in a), "")
            raise ToolError(f"git {sub} failed (exit {proc.returncode}): {msg}")
        return proc

    def _git(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self._run_git(self.root, *args, check=check)

    @staticmethod
    def detect(root, clean: bool = True) -> tuple["GitRepo | None", str]:
        """(repo, "") for a git work tree whose tracked files are unchanged (any work tree when
        not ``clean``: in worktree mode workers never commit in the person's tree); else
        (None, reason). Untracked files do not make the tree dirty: commits stage only the
        paths named."""
        root = pathlib.Path(root)
        if shutil.which("git") is None:
            return None, "git is not installed (not found on PATH)"
        if not root.is_dir():
            return None, f"{str(root)!r} is not a directory"
        proc = GitRepo._run_git(root, "rev-parse", "--is-inside-work-tree", check=False)
        if proc.returncode != 0 or proc.stdout.strip() != b"true":
            said = proc.stderr.decode("utf-8", "replace").strip().splitlines()
            detail = f" (git says: {said[0]})" if said and "not a git repository" not in said[0] else ""
            return None, f"{str(root)!r} is not inside a git work tree{detail}"
        if not clean:
            return GitRepo(root), ""
        try:
            status = GitRepo._run_git(root, "status", "--porcelain=v1", "-z", "--untracked-files=no")
        except ToolError as e:
            return None, f"cannot read the git status of {str(root)!r}: {e}"
        entries = [e for e in status.stdout.decode("utf-8", "replace").split("\0") if e]
        dirty: list[str] = []
        skip_next = False
        for entry in entries:
            if skip_next:  # the source path of a rename/copy
                skip_next = False
                continue
            code, name = entry[:2], entry[3:]
            if "R" in code or "C" in code:
                skip_next = True
            dirty.append(name)
        if dirty:
            shown = ", ".join(dirty[:5]) + (f" and {len(dirty) - 5} more" if len(dirty) > 5 else "")
            return None, (f"the git work tree has uncommitted changes ({shown}); commit or stash "
                          f"them so that Clutch can commit each ticket on its own")
        return GitRepo(root), ""

    def _identity(self) -> list[str]:
        args: list[str] = []
        if self._git("config", "user.name", check=False).stdout.strip() == b"":
            args += ["-c", "user.name=Clutch"]
        if self._git("config", "user.email", check=False).stdout.strip() == b"":
            args += ["-c", "user.email=clutch@localhost"]
        return args

    def _short_head(self) -> str:
        return self._git("rev-parse", "--short", "HEAD").stdout.decode().strip()

    def commit_checkpoint(self, message: str) -> str:
        """An empty commit recording a person's verification of a phase (the Conductor
        extension's checkpoint commit); returns its short SHA."""
        if not isinstance(message, str) or not message.strip():
            raise ToolError("commit_checkpoint: the commit message is empty")
        with self._lock:
            self._git(*self._identity(), "commit", "-q", "--allow-empty", "--no-verify",
                      "-m", message)
            return self._short_head()

    def commit_paths(self, paths: list[str], message: str) -> str:
        """Stage only ``paths`` (added, modified or deleted), commit them, return the short SHA;
        "" when none of them changed."""
        if isinstance(paths, str):
            raise TypeError("commit_paths takes a list of paths, not one string")
        if not isinstance(message, str) or not message.strip():
            raise ToolError("commit_paths: the commit message is empty")
        clean: list[str] = []
        for p in paths:
            parts = check_path(p, write=True)
            if not parts:
                raise SandboxError(f"commit_paths: {p!r} names the whole workspace; give file paths")
            clean.append("/".join(parts))
        if not clean:
            return ""
        with self._lock:
            # Index entries (incl. deleted files) and untracked, not-ignored files under the paths.
            listed = self._git("--literal-pathspecs", "ls-files", "-z", "--cached", "--others",
                               "--exclude-standard", "--", *clean)
            known = sorted({e for e in listed.stdout.decode("utf-8", "surrogateescape").split("\0") if e})
            if not known:
                return ""
            self._git("--literal-pathspecs", "add", "-A", "--", *known)
            changed = self._git("--literal-pathspecs", "diff", "--cached", "--quiet", "--", *known,
                                check=False)
            if changed.returncode == 0:
                return ""
            if changed.returncode != 1:
                raise ToolError(f"git diff --cached failed: {changed.stderr.decode('utf-8', 'replace')}")
            self._git(*self._identity(), "--literal-pathspecs", "commit", "-q",
                      "-m", message, "--only", "--", *known)
            return self._short_head()

    def revert(self, sha: str) -> str:
        """``git revert --no-edit sha``; the new commit's short SHA. On conflict the revert is
        aborted and ToolError names the conflicting files."""
        if not isinstance(sha, str) or not _SHA_RE.match(sha):
            raise ToolError(f"revert: {sha!r} is not a commit SHA (4 to 40 hex digits)")
        with self._lock:
            proc = self._git(*self._identity(), "revert", "--no-edit", sha, check=False)
            if proc.returncode == 0:
                return self._short_head()
            msg = (proc.stderr or proc.stdout).decode("utf-8", "replace").strip()
            conflicts = self._git("diff", "--name-only", "--diff-filter=U", check=False)
            files = [f for f in conflicts.stdout.decode("utf-8", "replace").splitlines() if f]
            in_progress = self._git("rev-parse", "-q", "--verify", "REVERT_HEAD", check=False)
            if in_progress.returncode == 0:
                self._git("revert", "--abort")
            if files:
                raise ToolError(f"reverting {sha} conflicts with later changes in "
                                f"{', '.join(files[:5])}; the revert was aborted and nothing changed")
            raise ToolError(f"git revert {sha} failed: {msg}")
