"""The worktree directories under ``<repo>/.clutch/worktrees/``: add, check, reuse, recreate,
remove, and keep ``.clutch/`` out of git through ``info/exclude``.

Threads: the engine's executor threads, several at once (one per ticket): git serialises its
own metadata writes; this module adds no lock of its own except around the exclude file.
State: :class:`WorktreeDirs` owns the repository's paths and that lock; :class:`TrackRecords`
one JSON file per track; ``revert_in_scratch`` a throw-away worktree while it runs.
"""
from __future__ import annotations

import contextlib
import json
import os
import pathlib
import secrets
import shutil
import threading
import time

from toolbox.worktrees_pool import TreePool, serial as _serial
from toolbox.worktrees_model import (POOL_DIR, WORKTREES_DIR, GitRunner, WorktreeError,
                                     WorktreeInfo, gitdir_named, merged_ref, repair_branch, said,
                                     same_path, ticket_branch, track_branch)


def _registered_marker(admin: pathlib.Path) -> pathlib.Path | None:
    """The tree's ``.git`` a registration's ``gitdir`` file names (relative: to ``admin``),
    resolved; None when it is empty, unreadable or not a path."""
    try:
        named = (admin / "gitdir").read_text("utf-8", "replace").strip()
        return (admin / named).resolve() if named else None
    except (OSError, ValueError):
        return None


def _initializing(admin: pathlib.Path) -> bool:
    """Whether the worktree registered in ``admin`` is locked "initializing": git's mark while
    `git worktree add` writes it, and :meth:`WorktreeDirs.fresh`'s until its files are."""
    try:
        return "initializing" in (admin / "locked").read_text("utf-8", "replace")
    except OSError:            # no lock file: not being made
        return False


class WorktreeDirs(TreePool):
    """Linked worktrees of the repository at ``top`` (its top-level directory). Changes to
    the worktree administration are serialised by ``_admin`` (see ``serial`` in
    worktrees_pool.py)."""

    def __init__(self, git: GitRunner, top: pathlib.Path, common_dir: pathlib.Path):
        self.git = git
        self.top = top
        self.common_dir = common_dir
        self.base_dir = top.joinpath(*WORKTREES_DIR)
        self._exclude_lock = threading.Lock()
        self._admin = threading.RLock()
        self._filling = threading.Lock()     # one pool filled at a time: never over-filled
        self._writing = _Turns()             # one new tree's files written at a time

    # -- .clutch/ is ignored without touching the user's .gitignore ----------------------------

    def ensure_excluded(self) -> None:
        exclude = self.common_dir / "info" / "exclude"
        with self._exclude_lock:
            text = exclude.read_text("utf-8", "replace") if exclude.exists() else ""
            lines = {ln.strip() for ln in text.splitlines()}
            if lines & {".clutch/", "/.clutch/", ".clutch", "/.clutch"}:
                return
            exclude.parent.mkdir(parents=True, exist_ok=True)
            with open(exclude, "a", encoding="utf-8") as f:
                if text and not text.endswith("\n"):
                    f.write("\n")
                f.write("# Clutch's own files and worktrees (added by Clutch)\n.clutch/\n")

    # -- one worktree ------------------------------------------------------------------------

    def _registered_trees(self, track_id: str, pooled: bool):
        """(tree, its administrative directory) for each of the track's tickets' trees whose
        ``.git`` names one of this repository's, and with ``pooled`` its pooled trees too
        (not the ones being made)."""
        trees = self.base_dir / track_id
        for parent in (trees, trees / POOL_DIR) if pooled else (trees,):
            for tree in sorted(parent.iterdir()) if parent.is_dir() else ():
                admin = self.admin_dir(tree) if not tree.name.startswith("_") else None
                if admin is not None:
                    yield tree, admin

    @_serial
    def clear_stale_locks(self, track_id: str) -> list[pathlib.Path]:
        """Remove the lock files a killed run left on the track's own refs and in its
        tickets' trees' administrative directories (git and libgit2 leave ``X.lock`` when
        killed while moving X, and every later move of X fails on it); the removed paths.
        Only as the track starts: no other Clutch works on this workspace (its lock), and
        no ticket of the track has started in this one. Pooled trees and trees being made
        ("_" names) may be in use by the tidy thread and are left alone."""
        places = [self.common_dir / "refs" / "heads" / f"{track_branch(track_id)}.lock"]
        for ref in (f"refs/heads/{ticket_branch(track_id, '')}",
                    f"refs/heads/{repair_branch(track_id, '')}", merged_ref(track_id, "")):
            d = self.common_dir / ref
            if d.is_dir():
                places += d.rglob("*.lock")
        for _tree, admin in self._registered_trees(track_id, pooled=False):
            places += [admin / "index.lock", admin / "HEAD.lock"]
        removed = [p for p in places if p.is_file()]
        for p in removed:
            p.unlink()
        return removed

    @_serial
    def repair_links(self, track_id: str) -> list[pathlib.Path]:
        """Point back at its tree every registration of the track's trees (pooled ones too)
        that lost its path: a ``git worktree move`` killed midway can leave the
        administrative ``gitdir`` file empty or naming the old place. git still works in the
        tree (it finds it by its ``.git`` file), but lists it as prunable, so a later ``git
        worktree prune`` would drop a live tree's registration, and libgit2 takes the
        process's working directory for it. ``git worktree repair`` rewrites such files from
        the trees' side; the trees repaired. Only as the track starts (see
        clear_stale_locks)."""
        found = [tree for tree, admin in self._registered_trees(track_id, pooled=True)
                 if _registered_marker(admin) != (tree / ".git").resolve()]
        if found:
            with self._admin:
                self.git.run("worktree", "repair", *map(str, found))
        return found

    @_serial
    def drop_half_made(self) -> list[pathlib.Path]:
        """Remove every tree of Clutch's whose making a killed run cut short: its registration
        is locked "initializing" (git's own mark while it adds a tree, and :meth:`fresh`'s
        until the files are written), and git may not even read it (a kill inside `git
        worktree add` can leave its ``commondir`` empty, and from then on `git worktree list`,
        `prune` and `remove` all fail in the person's repository too). Only a registration
        whose tree lies in Clutch's worktree directory and whose tree's ``.git`` names it
        back (so a worker that rewrote its own registration cannot aim this at another
        tree); such a tree was never given to a worker. Only when no Clutch works on the
        workspace (as the engine starts, under the workspace lock). The trees removed."""
        admins = self.common_dir / "worktrees"
        base = self.base_dir.resolve()
        dropped = []
        for admin in sorted(admins.iterdir()) if admins.is_dir() else ():
            if not _initializing(admin):
                continue
            marker = _registered_marker(admin)
            if marker is None or marker.name != ".git" or not marker.parent.is_relative_to(base):
                continue
            tree = marker.parent
            if tree.exists() and self.admin_dir(tree) != admin.resolve():
                continue
            shutil.rmtree(tree, ignore_errors=True)
            shutil.rmtree(admin)
            self._drop_empty_parents(tree)
            dropped.append(tree)
        return dropped

    def admin_dir(self, tree: pathlib.Path) -> pathlib.Path | None:
        """The directory where git keeps the worktree ``tree``'s HEAD, index and lock, read
        from the tree's ``.git`` file without a git process; None when that file does not
        name one of this repository's own (a worker can rewrite its tree's ``.git``: nothing
        outside ``<common dir>/worktrees/`` is ever read or touched through it)."""
        admin = gitdir_named(tree)
        admins = (self.common_dir / "worktrees").resolve()
        return admin if admin is not None and admin.parent == admins else None

    def half_made(self, tree: pathlib.Path) -> bool:
        """Whether ``tree`` is a worktree whose files were still being written when its
        maker was killed: git keeps a tree it is adding locked "initializing" until its
        checkout is done, and :meth:`fresh` keeps its own locked so until its ``reset
        --hard`` is. Such a tree was never given to a worker; its missing files must never
        be read as deletions. One file read, no git process (this is on a ticket's set-up)."""
        admin = self.admin_dir(tree)
        return admin is not None and _initializing(admin)

    def holds(self, path: pathlib.Path) -> bool:
        """Whether ``path`` is a linked worktree (its ``.git`` a file) inside Clutch's own
        worktree directory: the only trees Clutch stages, commits in, or recycles."""
        return (path / ".git").is_file() and path.resolve().is_relative_to(self.base_dir)

    def find(self, path: pathlib.Path) -> WorktreeInfo | None:
        return next((w for w in self.git.worktrees() if same_path(w.path, path)
                     or w.path == path), None)

    def healthy(self, path: pathlib.Path, branch: str) -> bool:
        """Registered, present, not half-made, and on ``branch``."""
        info = self.find(path)
        if info is None or info.prunable or info.branch != branch:
            return False
        if not (path / ".git").is_file():
            return False
        if info.locked and "initializing" in info.lock_reason:
            return False  # `git worktree add` locks while it checks out: killed midway
        proc = self.git.run("rev-parse", "--show-toplevel", cwd=path, check=False)
        return proc.returncode == 0 and same_path(pathlib.Path(proc.stdout.decode().strip()), path)

    def claim(self, pool: pathlib.Path, path: pathlib.Path, branch: str | None, start: str,
              lib=None) -> bool:
        """The quick way to a new tree (nothing at ``path`` yet): a pooled worktree moved to
        ``path`` and switched to a new ``branch`` at ``start`` (a ref or commit; detached at it
        when ``branch`` is None), which rewrites only the files that differ (in-process
        through ``lib``, a LibGit, when it may); one or two git processes, the
        administration lock held for the move. False when there is no pooled tree, or
        ``branch`` already exists and is checked out elsewhere: then :meth:`add` makes it."""
        if path.exists() or not pool.is_dir():
            return False
        with self._admin:
            for entry in sorted(pool.iterdir()):
                moved = self.git.run("worktree", "move", str(entry), str(path), check=False)
                if moved.returncode == 0:
                    break     # else another thread took it, or it is broken: cleanup drops it
            else:
                return False
        return self.switch(path, branch, start, lib)

    def switch(self, path: pathlib.Path, branch: str | None, start: str, lib=None) -> bool:
        """The clean tree at ``path`` put on a new ``branch`` at ``start`` (detached at it when
        ``branch`` is None), only differing files rewritten; in-process when ``lib`` may.
        False when git refuses (the branch exists and is checked out elsewhere)."""
        if lib is not None and lib.switch_tree(path, branch, start):
            return True
        if branch is None:
            made = self.git.run("checkout", "-q", "-f", "--detach", start, cwd=path, check=False,
                                writes_tree=True)
            return made.returncode == 0
        made = self.git.run("checkout", "-q", "-f", "-b", branch, start, cwd=path, check=False,
                            writes_tree=True)
        if made.returncode != 0:       # the branch exists (a retry): the tree goes onto it
            made = self.git.run("checkout", "-q", "-f", branch, "--", cwd=path, check=False,
                                writes_tree=True)
        return made.returncode == 0

    def switch_prepared(self, path: pathlib.Path, branch: str, start: str, lib=None,
                        report: list | None = None) -> bool:
        """The tree prepared for a ticket (its HEAD detached: no worker has had it) put on
        the ticket's new ``branch`` at ``start``, only differing files rewritten; False, with
        nothing changed, when its HEAD is on a branch (the ticket's own tree, resumed) or git
        refuses. In-process when ``lib`` may (one read of the tree's repository; ``report``:
        see LibGit.switch_tree)."""
        if lib is not None:
            done = lib.switch_tree(path, branch, start, detached_only=True, report=report)
            if done is None:      # on a branch
                return False
            if done:
                return True
        return self.detached(path) and self.switch(path, branch, start)

    def detached(self, path: pathlib.Path) -> bool:
        """Whether the worktree at ``path`` has a detached HEAD (a tree prepared for a ticket
        that has not started: no branch yet), asked of git (libgit2's answer comes with its
        switch: see switch_prepared)."""
        return self.git.run("symbolic-ref", "-q", "HEAD", cwd=path, check=False).returncode == 1

    @_serial
    def add(self, path: pathlib.Path, branch: str, start: str | None,
            pool: pathlib.Path | None = None) -> pathlib.Path:
        """A worktree at ``path`` on ``branch``: reused when healthy, else cleared away and
        made again (``branch`` created at ``start`` when it does not exist yet), from a
        recycled worktree in ``pool`` when there is one (a checkout of only what differs)."""
        if self.healthy(path, branch):
            return path
        self.remove(path, discard=False, keep_files=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        exists = self.git.rev(f"refs/heads/{branch}") is not None
        if exists:
            holder = next((w for w in self.git.worktrees() if w.branch == branch), None)
            if holder is not None and not holder.main:
                self._drop_registration(holder)
        if not exists and start is None:
            raise WorktreeError(f"branch {branch} does not exist and no start was given")
        if pool is not None and self.claim(pool, path, branch, start or branch):
            return path
        if path.exists():     # a pooled tree was taken, and git would not switch it
            raise WorktreeError(f"git would not check out {branch} in the pooled worktree now "
                                f"at {path}; remove that directory and retry")
        # here (a resumed or retried ticket) git writes the files under the administration
        # lock, marking the tree "initializing" itself: never `fresh`, whose turn for
        # writing is taken before that lock (the other order could deadlock)
        if exists:
            self.git.run("worktree", "add", "-q", str(path), branch, writes_tree=True)
        else:
            self.git.run("worktree", "add", "-q", "-b", branch, str(path), start,
                         writes_tree=True)
        return path

    def fresh(self, path: pathlib.Path, *what: str, urgent: bool = True) -> None:
        """``git worktree add`` in two steps, so the administration lock is held only while
        git registers the tree, not while it writes every file of the repository: the tree
        is added locked ("initializing", as git itself marks a tree it is still making, which
        :meth:`healthy` never takes) and without files, then filled and unlocked. One tree
        is written at a time, in the order they were asked for (the ready tickets heading
        the longest chains first): the first one is ready as soon as it can be, rather than
        all of them late, sharing the disk and the cores. A tree a ticket waits for
        (``urgent``) goes before trees made ahead of need. Lock order: the writing turn,
        then the administration lock; never called with the administration lock held."""
        args = list(what)
        branch_args = args[:2] if args[0] == "-b" else []
        rest = args[2:] if branch_args else args
        with self._writing.turn(urgent):
            with self._admin:
                self.git.run("worktree", "add", "-q", "--no-checkout", "--lock", "--reason",
                             "initializing", *branch_args, str(path), *rest)
            try:
                self.git.run("reset", "-q", "--hard", cwd=path, writes_tree=True)
            except WorktreeError as e:
                # half written, from the repository's own commit (nothing of anyone's in it):
                # removed, not left locked "initializing" until the track's cleanup
                try:
                    self.remove(path, discard=True)
                except WorktreeError as left:
                    raise WorktreeError(f"{e}; the half-written worktree {path} could not be "
                                        f"removed either: {left}") from e
                raise
            self._unlock(path)

    def _unlock(self, path: pathlib.Path) -> None:
        """``git worktree unlock``: what it does (git 2.39, builtin/worktree.c) is delete the
        registration's ``locked`` file, here without a git process (2 ms on a new tree's
        set-up; git also reads every tree's registration first). Through git when the tree's
        ``.git`` names no registration of this repository's."""
        admin = self.admin_dir(path)
        if admin is None:
            with self._admin:  # like every worktree command, unlock reads all the trees' files
                self.git.run("worktree", "unlock", str(path))
            return
        try:       # already gone (unlocked by hand meanwhile): the tree is complete all the same
            (admin / "locked").unlink(missing_ok=True)
        except OSError as e:
            raise WorktreeError(f"could not unlock the worktree {path}: {e}") from e

    def _drop_registration(self, info: WorktreeInfo) -> None:
        """Forget a worktree git still lists elsewhere (a moved repository, a stale entry)."""
        if info.locked:
            self.git.run("worktree", "unlock", str(info.path), check=False)
        if info.path.exists():
            self.remove(info.path, discard=False, keep_files=True)
        else:
            self.git.run("worktree", "prune")

    @_serial
    def prune(self) -> None:
        """``git worktree prune``, serialised with every other change to the administration:
        git creates a new tree's ``.git/worktrees/<name>/`` a moment before it writes the
        ``locked`` file that keeps prune away, and a prune in that moment deletes it (the
        ``worktree add`` then fails: "could not open .../locked for writing")."""
        self.git.run("worktree", "prune")

    def dirty(self, path: pathlib.Path) -> list[str]:
        """Uncommitted paths (untracked included, ignored not) in the worktree at ``path``."""
        proc = self.git.run("status", "--porcelain=v1", "-z", "--untracked-files=all", cwd=path)
        entries = [e for e in proc.stdout.decode("utf-8", "surrogateescape").split("\0") if e]
        return [e[3:] for e in entries if len(e) > 3]

    @_serial
    def remove(self, path: pathlib.Path, discard: bool, keep_files: bool = False) -> None:
        """Remove the worktree at ``path``. Uncommitted changes there are refused unless
        ``discard``; with ``keep_files`` a directory git cannot remove cleanly (a half-made
        or unregistered one) is moved to ``.clutch/lost+found/`` instead of deleted."""
        info = self.find(path)
        if info is not None and info.prunable:
            self.git.run("worktree", "prune")
            info = None
        if info is not None:
            if info.locked:
                self.git.run("worktree", "unlock", str(path), check=False)
            if not discard and (path / ".git").is_file():
                try:
                    changed = self.dirty(path)
                except WorktreeError:
                    if not keep_files:
                        raise
                    # a tree git cannot read (a process killed in `git worktree add`): what
                    # is in it is set aside below, never dropped
                    changed = ["(unreadable)"]
                if changed and not keep_files:
                    shown = ", ".join(changed[:5]) + (" ..." if len(changed) > 5 else "")
                    raise WorktreeError(
                        f"the worktree {path} has uncommitted changes ({shown}); commit them "
                        f"(commit_ticket) or pass discard=True to drop them")
                if changed:
                    self._set_aside(path)
            proc = self.git.run("worktree", "remove", "--force", "--force", str(path), check=False)
            if proc.returncode != 0 and path.exists():
                if keep_files and any(path.iterdir()):
                    self._set_aside(path)
                shutil.rmtree(path)
                self.git.run("worktree", "prune")
        elif path.exists():
            if keep_files and any(path.iterdir()):
                self._set_aside(path)
            shutil.rmtree(path)
        self._drop_empty_parents(path)

    def _drop_empty_parents(self, path: pathlib.Path) -> None:
        parent = path.parent
        while parent != self.base_dir and parent.is_relative_to(self.base_dir):
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent

    def _set_aside(self, path: pathlib.Path) -> None:
        """Copy a directory's files to ``.clutch/lost+found/`` (nothing a worker wrote is lost)."""
        rel = path.relative_to(self.base_dir) if path.is_relative_to(self.base_dir) else path.name
        stamp = time.strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3)
        dest = self.top / ".clutch" / "lost+found" / f"{str(rel).replace('/', '__')}-{stamp}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(path, dest, symlinks=True, ignore=shutil.ignore_patterns(".git"))

    def delete_branch(self, branch: str) -> None:
        if self.git.rev(f"refs/heads/{branch}") is None:
            return
        proc = self.git.run("branch", "-D", "-q", branch, check=False)
        if proc.returncode != 0 and self.git.rev(f"refs/heads/{branch}") is not None:
            raise WorktreeError(f"could not delete branch {branch}: {said(proc)}")


class _Turns:
    """One holder at a time; a waiter marked urgent goes before every waiter that is not."""

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._busy = False
        self._urgent = 0

    @contextlib.contextmanager
    def turn(self, urgent: bool):
        with self._cv:
            self._urgent += urgent
            try:
                self._cv.wait_for(lambda: not self._busy and (urgent or self._urgent == 0))
            finally:
                self._urgent -= urgent
            self._busy = True
        try:
            yield
        finally:
            with self._cv:
                self._busy = False
                self._cv.notify_all()


def revert_in_scratch(git: GitRunner, dirs: WorktreeDirs, tip: str, commit: str,
                      target: str) -> str:
    """``git revert`` of ``commit`` on top of ``tip`` in a throw-away detached worktree; the
    new commit (no branch moves). A conflict: WorktreeError naming the files."""
    scratch = dirs.base_dir / "_scratch" / f"revert-{os.getpid()}-{threading.get_ident()}"
    dirs.remove(scratch, discard=True)
    scratch.parent.mkdir(parents=True, exist_ok=True)
    with dirs._admin:        # no prune of this process's in that moment (WorktreeDirs.prune)
        git.run("worktree", "add", "-q", "--detach", str(scratch), tip, writes_tree=True)
    try:
        parents = git.out("rev-list", "--parents", "-n", "1", commit).split()[1:]
        mainline = ["-m", "1"] if len(parents) > 1 else []
        proc = git.run("revert", "--no-edit", *mainline, commit, cwd=scratch, check=False,
                       identity=True)
        if proc.returncode != 0:
            unmerged = git.run("diff", "--name-only", "--diff-filter=U", cwd=scratch,
                               check=False).stdout.decode("utf-8", "replace").split()
            detail = (f"conflicts with later changes in {', '.join(unmerged)}" if unmerged
                      else f"failed: {said(proc)}")
            raise WorktreeError(f"reverting {commit[:12]} on {target} {detail}; nothing was "
                                f"changed")
        return git.out("rev-parse", "HEAD", cwd=scratch)
    finally:
        dirs.remove(scratch, discard=True)


class TrackRecords:
    """``<base_dir>/<track_id>.track.json``: a track's base branch and commit and where it
    merged, written atomically (temp file + os.replace)."""

    def __init__(self, base_dir: pathlib.Path):
        self.base_dir = base_dir

    def path(self, track_id: str) -> pathlib.Path:
        return self.base_dir / f"{track_id}.track.json"

    def read(self, track_id: str) -> dict | None:
        p = self.path(track_id)
        if not p.exists():
            return None
        try:
            data = json.loads(p.read_text("utf-8"))
        except (OSError, ValueError) as e:
            raise WorktreeError(f"the track record {p} cannot be read ({e}); delete it and start "
                                f"the track again") from e
        if not isinstance(data, dict) or not isinstance(data.get("base_sha"), str):
            raise WorktreeError(f"the track record {p} has no base_sha; delete it and start the "
                                f"track again")
        return data

    def write(self, track_id: str, data: dict) -> None:
        p = self.path(track_id)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(f".tmp-{os.getpid()}-{threading.get_ident()}")
        tmp.write_text(json.dumps(data, indent=1) + "\n", "utf-8")
        os.replace(tmp, p)
