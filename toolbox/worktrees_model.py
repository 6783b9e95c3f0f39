"""The data of the worktree layer: its error, results, names and the git runner it shares.

Pure definitions plus :class:`GitRunner`, a stateless wrapper around one ``git`` process per
call (two of its questions answered in-process when it is given a LibGit). Threads: any
(nothing here holds mutable state; a runner only remembers its root and its LibGit).
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
import re
import shutil
import subprocess

from toolbox.errors import ToolError
from toolbox.git import GitRepo

# Clutch's identity on every commit it makes (workers' tickets, rebases, merges, reverts).
CLUTCH_NAME = "Clutch"
CLUTCH_EMAIL = "clutch@localhost"
WORKTREES_DIR = (".clutch", "worktrees")
POOL_DIR = "_pool"                     # ids start with a letter or digit: no ticket is "_pool"
CONFLICT_SUFFIX = "@conflict"          # ids never contain "@", so this cannot name a ticket
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_GIT_TIMEOUT_S = 300.0
SIDE_LIMIT = 256 * 1024                # bytes of each side of a conflict shown to a person


class WorktreeError(ToolError):
    """A worktree or branch operation that could not be done; the message carries git's."""


def check_id(value, what: str) -> str:
    """A track or ticket id usable in a branch name and a directory name, else WorktreeError."""
    if not isinstance(value, str) or not _ID_RE.match(value) or ".." in value \
            or value.endswith((".", ".lock")):
        raise WorktreeError(
            f"{what} {value!r} cannot name a git branch or a directory: use 1 to 100 letters, "
            f"digits, '.', '_' or '-', starting with a letter or digit, without '..' and not "
            f"ending in '.' or '.lock'")
    return value


def check_count(count) -> int:
    """A pool size: an integer from 0 to 64 (WorktreeError otherwise)."""
    if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= 64:
        raise WorktreeError(f"prewarm: count must be an integer from 0 to 64, got {count!r}")
    return count


def track_branch(track_id: str) -> str:
    return f"clutch/{track_id}"


def ticket_branch(track_id: str, ticket_id: str) -> str:
    # git cannot hold both clutch/T and clutch/T/K, hence a separate namespace for tickets.
    return f"clutch-ticket/{track_id}/{ticket_id}"


def repair_branch(track_id: str, ticket_id: str) -> str:
    return f"clutch-repair/{track_id}/{ticket_id}"


def merged_ref(track_id: str, ticket_id: str) -> str:
    """The commit on the track branch that carries a ticket's change (hidden ref)."""
    return f"refs/clutch/merged/{track_id}/{ticket_id}"


@dataclasses.dataclass(frozen=True)
class TrackBranch:
    """``clutch/<track_id>``: started at ``base_sha``, the commit checked out then, on the
    user's branch ``base`` (None when HEAD was detached)."""
    track_id: str
    branch: str
    base: str | None
    base_sha: str
    head: str


@dataclasses.dataclass(frozen=True)
class ConflictSide:
    """One conflicting path: its text in the merge base, ours (the branch merged into) and
    theirs (the branch merged in); None where that side has no such file (deleted/added)."""
    path: str
    base: str | None
    ours: str | None
    theirs: str | None
    binary: bool = False


@dataclasses.dataclass(frozen=True)
class MergeResult:
    """What a merge did. ``sha``: the commit that carries the change on the target branch
    (None when nothing was merged). ``how``: fast-forward, rebase, merge, already merged,
    nothing to merge, up-to-date, conflict or refused. On a conflict or a refusal the target
    branch is untouched; ``paths``/``sides`` name the conflict, ``message`` says why.
    ``settle``: the ticket's worktree still holds its change uncommitted (landed straight from
    its index): `TrackBranches.settle_landed` puts it on ``sha`` before it is reused."""
    sha: str | None
    how: str
    conflict: bool = False
    paths: tuple[str, ...] = ()
    sides: dict[str, ConflictSide] = dataclasses.field(default_factory=dict)
    merged_into: str | None = None
    message: str = ""
    settle: bool = False

    @property
    def ok(self) -> bool:
        return not self.conflict and self.how != "refused"


@dataclasses.dataclass(frozen=True)
class WorktreeInfo:
    """One entry of ``git worktree list --porcelain``."""
    path: pathlib.Path
    head: str | None
    branch: str | None        # short name (no refs/heads/), None when detached
    locked: bool
    prunable: bool
    main: bool
    lock_reason: str = ""


class GitRunner:
    """Runs git in ``root`` (or a given cwd) with secrets and redirecting variables dropped.
    ``reads`` (a LibGit, optional) answers :meth:`rev` and :meth:`is_ancestor` in-process
    (the commonest questions, and each would be a git process); it says when it cannot, and
    git answers then."""

    def __init__(self, root: pathlib.Path, reads=None):
        self.root = root
        self.reads = reads

    @staticmethod
    def env(identity: bool = False) -> dict[str, str]:
        env = GitRepo._env()
        env["LC_ALL"] = "C"            # git's messages are parsed in a few places
        if identity:
            env.update(GIT_AUTHOR_NAME=CLUTCH_NAME, GIT_AUTHOR_EMAIL=CLUTCH_EMAIL,
                       GIT_COMMITTER_NAME=CLUTCH_NAME, GIT_COMMITTER_EMAIL=CLUTCH_EMAIL)
        return env

    def run(self, *args: str, cwd: pathlib.Path | None = None, check: bool = True,
            identity: bool = False, input: bytes | None = None,
            env: dict[str, str] | None = None,
            writes_tree: bool = False) -> subprocess.CompletedProcess:
        """git ``args``. ``writes_tree``: the command may write a whole tree of Clutch's own
        (a new worktree's files), so git checks out on every core (``checkout.workers=0``;
        git itself stays sequential under 100 files). Creating files is the cost there, and
        on a slow disk two workers took a 10,000-file tree from 5.7-7.4 s to 1.8-2.1 s. The
        person's own tree keeps their setting."""
        git = shutil.which("git")
        if git is None:
            raise WorktreeError("git is not installed (not found on PATH)")
        full_env = self.env(identity)
        if env:
            full_env.update(env)
        parallel = ("-c", "checkout.workers=0") if writes_tree else ()
        cmd = [git, "-C", str(cwd or self.root), "-c", "core.quotepath=off",
               "-c", "commit.gpgsign=false", *parallel, *args]
        try:
            proc = subprocess.run(cmd, input=input, capture_output=True, env=full_env,
                                  stdin=None if input is not None else subprocess.DEVNULL,
                                  timeout=_GIT_TIMEOUT_S)
        except subprocess.TimeoutExpired as e:
            raise WorktreeError(f"git {args[0]} did not finish within {_GIT_TIMEOUT_S:g}s") from e
        if check and proc.returncode != 0:
            raise WorktreeError(f"git {' '.join(args[:2])} failed (exit {proc.returncode}): "
                                f"{said(proc)}")
        return proc

    def out(self, *args: str, cwd: pathlib.Path | None = None, identity: bool = False,
            input: bytes | None = None, env: dict[str, str] | None = None) -> str:
        return self.run(*args, cwd=cwd, identity=identity, input=input,
                        env=env).stdout.decode("utf-8", "surrogateescape").strip()

    def rev(self, ref: str, cwd: pathlib.Path | None = None) -> str | None:
        """The commit ``ref`` names, or None when it names none."""
        if self.reads is not None:
            found = self.reads.rev(cwd or self.root, ref)
            if found is not NotImplemented:
                return found
        proc = self.run("rev-parse", "-q", "--verify", "--end-of-options", f"{ref}^{{commit}}",
                        cwd=cwd, check=False)
        return proc.stdout.decode().strip() if proc.returncode == 0 else None

    def is_ancestor(self, a: str, b: str) -> bool:
        if self.reads is not None:
            found = self.reads.is_ancestor(self.root, a, b)
            if found is not NotImplemented:
                return found
        proc = self.run("merge-base", "--is-ancestor", a, b, check=False)
        if proc.returncode in (0, 1):
            return proc.returncode == 0
        raise WorktreeError(f"git merge-base --is-ancestor {a} {b} failed: {said(proc)}")

    def worktrees(self) -> list[WorktreeInfo]:
        text = self.run("worktree", "list", "--porcelain", "-z").stdout.decode(
            "utf-8", "surrogateescape")
        found: list[WorktreeInfo] = []
        for block in text.split("\0\0"):
            fields = [f for f in block.split("\0") if f]
            if not fields or not fields[0].startswith("worktree "):
                continue
            info = {"path": fields[0][len("worktree "):], "head": None, "branch": None,
                    "locked": False, "prunable": False, "bare": False, "lock_reason": ""}
            for f in fields[1:]:
                key, _, value = f.partition(" ")
                if key == "HEAD":
                    info["head"] = value
                elif key == "branch":
                    info["branch"] = value.removeprefix("refs/heads/")
                elif key in ("locked", "prunable", "bare"):
                    info[key] = True
                    if key == "locked":
                        info["lock_reason"] = value
            found.append(WorktreeInfo(pathlib.Path(info["path"]), info["head"], info["branch"],
                                      info["locked"], info["prunable"], main=not found,
                                      lock_reason=info["lock_reason"]))
        return found


def said(proc: subprocess.CompletedProcess) -> str:
    """git's own words from a finished process (stderr, else stdout), on one or more lines."""
    text = (proc.stderr or proc.stdout or b"").decode("utf-8", "replace").strip()
    return text or f"no message (exit {proc.returncode})"


def same_path(a: pathlib.Path, b: pathlib.Path) -> bool:
    try:
        return os.path.realpath(a) == os.path.realpath(b)
    except OSError:
        return False


def gitdir_named(tree: pathlib.Path) -> pathlib.Path | None:
    """The administrative directory a linked work tree's ``.git`` file names (``gitdir:``,
    relative to the tree when `worktree.useRelativePaths` wrote it so, as git reads it),
    resolved; None when ``.git`` is not such a file (a directory, a symlink, unreadable, or
    not naming a path). Read without a git process."""
    marker = tree / ".git"
    if marker.is_symlink() or not marker.is_file():
        return None
    try:
        text = marker.read_text("utf-8", "replace").strip()
        if not text.startswith("gitdir:"):
            return None
        return (tree / text.removeprefix("gitdir:").strip()).resolve()
    except (OSError, ValueError):    # a NUL byte, a loop of links: names nothing
        return None
