"""The pool of a track's spare worktrees: a finished ticket's tree, or one made ahead while the
person reads the plan, waits there detached, so the next ticket's set-up checks out only the
files that differ instead of every file of the repository. A mixin of WorktreeDirs
(worktrees_dirs.py), which owns the paths, the locks and the git runner these use.

Threads: the tidy thread (recycling, filling), the engine's threads as they claim a tree
(WorktreeDirs.claim) and the one that closes it (draining). State: none of its own.
"""
from __future__ import annotations

import functools
import os
import pathlib
import secrets
import threading


def serial(method):
    """Run under the instance's admin lock: git's worktree administration (``git worktree
    add``/``remove``/``list``, .git/worktrees/*) is not safe to change from two threads at once
    (a parallel add fails reading the other's half-made ``commondir``), and two tickets must
    never take the same pooled tree."""
    @functools.wraps(method)
    def run(self, *args, **kw):
        with self._admin:
            return method(self, *args, **kw)
    return run


def making_dir(pool: pathlib.Path) -> pathlib.Path:
    """Where a pooled tree is written before it joins ``pool`` (beside it; no ticket id starts
    with "_", so neither name is a ticket's)."""
    return pool.with_name("_making")


class TreePool:
    """Mixin of WorktreeDirs: recycle a tree into a pool, fill a pool, drain it."""

    # -- recycling: a finished ticket's tree becomes the next ticket's, so set-up checks out
    # -- only the files that differ instead of every file of the repository ------------------

    def recycle(self, path: pathlib.Path, pool: pathlib.Path, lib=None) -> bool:
        """Move the (clean) worktree at ``path`` into ``pool``, detached from its branch, its
        ignored files (caches, build output) removed. False (and nothing done) when it is
        not a clean worktree of this repository. The administration lock is held for the
        move only, so a ticket claiming a tree meanwhile does not wait for this one's tidying.
        One ``git status`` and the move; ``git clean`` only when ignored files are there, the
        detach in-process through ``lib`` (a LibGit) when given."""
        if not self.holds(path):
            return False
        proc = self.git.run("status", "--porcelain=v1", "-z", "--untracked-files=all",
                            "--ignored", cwd=path, check=False)
        if proc.returncode != 0:
            return False
        entries = [e for e in proc.stdout.decode("utf-8", "surrogateescape").split("\0") if e]
        if any(not e.startswith("!! ") for e in entries):
            return False                 # uncommitted work: never recycled (nor dropped)
        if not (lib is not None and lib.detach(path)):
            self.git.run("switch", "-q", "--detach", cwd=path)
        if entries:
            self.git.run("clean", "-ffdxq", cwd=path)
        pool.mkdir(parents=True, exist_ok=True)
        dest = pool / f"{secrets.token_hex(4)}"
        with self._admin:
            self.git.run("worktree", "move", str(path), str(dest))
        return True

    def fill_pool(self, pool: pathlib.Path, tip: str, count: int) -> int:
        """Add detached worktrees at ``tip`` to ``pool`` until it holds ``count``; how many
        it holds. A tree is moved into the pool only once its files are written, so a
        ticket never claims a half-made one."""
        with self._filling:
            pool.mkdir(parents=True, exist_ok=True)
            have = len(list(pool.iterdir()))
            while have < count:
                name = f"{os.getpid()}-{threading.get_ident()}-{secrets.token_hex(4)}"
                making = making_dir(pool) / name
                making.parent.mkdir(parents=True, exist_ok=True)
                self.fresh(making, "--detach", tip, urgent=False)
                with self._admin:
                    self.git.run("worktree", "move", str(making), str(pool / name))
                have = len(list(pool.iterdir()))
            return have

    @serial
    def drain_pool(self, pool: pathlib.Path) -> None:
        """Remove every pooled worktree, and any a killed run left half-made (their files were
        all committed or discarded, or never were a ticket's)."""
        for d in (pool, making_dir(pool)):
            if d.is_dir():
                for entry in sorted(d.iterdir()):
                    gone = self.git.run("worktree", "remove", "--force", "--force", str(entry),
                                        check=False)    # one process for a tree git knows
                    if gone.returncode != 0 or entry.exists():
                        self.remove(entry, discard=True)
                if d.is_dir() and not any(d.iterdir()):
                    d.rmdir()
                    self._drop_empty_parents(d)
