"""The hot path of the worktree layer in-process (libgit2 through pygit2): a ticket's landing
(staging, its commit, the fast-forward or one-commit rebase onto its track, the refs moved in
one transaction), switching a pooled or prepared tree, and (in its base, LibGitReads, in
worktrees_libgit_reads.py) the reads asked most often.

Why: each ``git`` process costs 3-5 ms on a 2-core machine (more while workers run their own
commands), and landing a ticket with the git command took 4 processes for a fast-forward and
10 for a rebase, every one on the critical path of the ticket's dependents. Here the same
steps take a few milliseconds in all (bench/README.md, "A worktree per ticket").

What runs here, and only where it is exactly what git would do: reading refs, ancestry, where
a branch is checked out and a tree's files; creating a track's branch; staging a worktree's
changes and checking out a tree, where the repository configures no filter driver and no
sparse checkout (``plain``: elsewhere ``git add -A`` and ``git checkout`` run, so clean and
smudge filters such as LFS apply) and the checkout changes no ``.gitattributes``; the
commit of a worktree's index; a fast-forward; a rebase of a single commit onto the track
when the two sides changed different paths (then a three-way merge has nothing to decide);
a ticket's staged index landed straight on the track under the same condition (the track's
new tree written directory by directory from its tip along the ticket's paths: no index
file and no commit of the ticket's own on the critical path; `settle` resets the worktree
to the result later, off it); the compare-and-swap of the track branch, the ticket branch
and the merged marker in one libgit2 transaction. Everything else returns None (or
NotImplemented, or False) and the caller takes the git-command path: two sides touching one
path (git's own merge decides it), a file on one side where the other has a directory, a
conflict, several commits, nothing to merge, a repository pygit2 cannot open (reftable
refs, an extension libgit2 does not know), or pygit2 not installed.
tests/toolbox/test_worktrees_libgit.py checks each against git itself.

Threads: any; a pygit2 Repository is opened per call and never shared between threads
(libgit2's rule), and a transaction is used on the thread that made it. State: the
repository's path and whether it is ``plain``.
"""
from __future__ import annotations

import logging
import pathlib
import threading

from toolbox.worktrees_libgit_reads import LibGitReads
from toolbox.worktrees_model import CLUTCH_EMAIL, CLUTCH_NAME, MergeResult

log = logging.getLogger(__name__)

_LAND_TRIES = 3    # landings racing for one track: each loser reads the new tip and tries again


class LibGit(LibGitReads):
    """In-process git on the repository whose top-level directory is ``top``. ``plain``: the
    repository configures no filter driver (LFS and the like run only in git) and no sparse
    checkout, so libgit2 may also write a worktree's files exactly as git would. ``moves``:
    the lock Clutch's git-command merges hold while they read and move the track (given by
    TrackBranches); landing here writes its objects without it and takes it only to move the
    refs, so a ticket landing is never queued behind another one's object writing."""

    def __init__(self, top: pathlib.Path, plain: bool = False,
                 moves: threading.Lock | None = None, diff_drivers: bool = False):
        self.top = pathlib.Path(top)
        self.plain = plain
        self.diff_drivers = diff_drivers      # textconv, a diff command: only git runs them
        self._moves = moves if moves is not None else threading.Lock()

    @classmethod
    def open(cls, top: pathlib.Path, moves: threading.Lock | None = None) -> "LibGit | None":
        """A LibGit for ``top``, or None when pygit2 is missing or cannot read the repository
        (the git-command path is then the only one)."""
        try:
            import pygit2
        except ImportError:
            log.info("pygit2 is not installed: tickets land through the git command")
            return None
        try:
            config = pygit2.Repository(str(top)).config
            names = [e.name.lower() for e in config]
            sparse = any(n == "core.sparsecheckout" for n in names) and \
                config.get_bool("core.sparseCheckout")
        except (pygit2.GitError, KeyError, ValueError) as e:
            log.info(f"libgit2 cannot open {top} ({e}): tickets land through the git command")
            return None
        filters = any(n.startswith("filter.") and n.rsplit(".", 1)[-1] in
                      ("clean", "smudge", "process") for n in names)
        drivers = any(n == "diff.external" or (n.startswith("diff.") and n.rsplit(".", 1)[-1]
                                                in ("textconv", "command")) for n in names)
        return cls(top, plain=not (filters or sparse), moves=moves, diff_drivers=drivers)

    def switch_tree(self, tree: pathlib.Path, branch: str | None, start_ref: str,
                    detached_only: bool = False, report: list | None = None) -> bool | None:
        """A clean worktree put on a new ``branch`` at ``start_ref``'s commit (detached at it
        when ``branch`` is None), its files rewritten where they differ: ``git checkout -f
        -b`` in-process. False, with nothing changed, when that is not for libgit2 here (see
        ``plain``), the branch exists already or the start is missing: the caller uses the
        git command. The tree is clean (a pooled or prepared tree, which no worker has
        touched), so only the paths that differ between its commit and the start are looked
        at: on 10,000 files that is 11 ms instead of the 34 of a whole-tree checkout. False
        too when the switch changes a ``.gitattributes``, or the tree's HEAD names no commit
        (every file would be new): libgit2 would apply the attributes of the tree it leaves,
        git those of the tree it arrives at.
        ``detached_only``: only a tree whose HEAD is detached (one prepared for a ticket
        that has not started) is switched; None, with nothing changed, when it is on a
        branch (the same repository read once, on a ticket's set-up). ``report``: a switch
        from one commit to another appends (that commit, the paths that differ, relative to
        the repository's top) to it."""
        if not self.plain:
            return False
        import pygit2
        from pygit2.enums import CheckoutStrategy
        try:
            repo = self._tree_repo(tree)
            if repo is None:
                log.warning(f"libgit2 puts the work tree of {tree} elsewhere; using git")
                return False
            if detached_only and not repo.head_is_detached:
                return None
            start = repo.references.get(start_ref)
            if start is None or (branch is not None and
                                 repo.references.get(f"refs/heads/{branch}") is not None):
                return False
            commit = repo[start.target]
            before = None if repo.head_is_unborn else str(repo.head.target)
            paths = self._differing(repo, commit)
            if paths is None or any(p.rsplit("/", 1)[-1] == ".gitattributes" for p in paths):
                return False     # libgit2 would apply the attributes of the tree it leaves
            if paths:            # literal paths: a name such as "a[1].py" is not a pattern
                repo.checkout_tree(commit, paths=paths, strategy=CheckoutStrategy.FORCE |
                                   CheckoutStrategy.DISABLE_PATHSPEC_MATCH)
            if branch is None:
                repo.set_head(commit.id)
            else:
                repo.branches.local.create(branch, commit)
                repo.set_head(f"refs/heads/{branch}")
            if report is not None and before is not None:
                report.append((before, paths))
            return True
        except (pygit2.GitError, KeyError, ValueError) as e:
            log.warning(f"in-process checkout in {tree} failed ({e}); using the git command")
            return False

    def create_branch(self, branch: str, sha: str) -> bool:
        """A new branch at ``sha``; False (nothing made) when it exists or libgit2 cannot."""
        import pygit2
        try:
            pygit2.Repository(str(self.top)).references.create(f"refs/heads/{branch}", sha)
            return True
        except (pygit2.GitError, KeyError, ValueError) as e:   # AlreadyExistsError included
            log.info(f"libgit2 did not create {branch} ({e}); asking git")
            return False

    @staticmethod
    def _sig():
        import pygit2
        return pygit2.Signature(CLUTCH_NAME, CLUTCH_EMAIL)

    def detach(self, tree: pathlib.Path) -> bool:
        """The worktree's HEAD detached at its commit (``git switch --detach``); False when
        this did not happen here."""
        import pygit2
        try:
            repo = pygit2.Repository(str(tree))
            repo.set_head(repo.head.target)
            return True
        except (pygit2.GitError, KeyError, ValueError) as e:
            log.warning(f"in-process detach in {tree} failed ({e}); using the git command")
            return False

    def delete_branches(self, names: list[str]) -> bool:
        """Delete those of the branches that exist (``git branch -D``: their reflogs too);
        False when this could not be done here (nothing deleted)."""
        import pygit2
        try:
            repo = pygit2.Repository(str(self.top))
            refs = [r for r in (repo.references.get(f"refs/heads/{n}") for n in names) if r]
            for ref in refs:
                ref.delete()
            return True
        except (pygit2.GitError, KeyError, ValueError) as e:
            log.warning(f"in-process branch delete failed ({e}); using the git command")
            return False

    def stage_all(self, worktree: pathlib.Path, write: bool = True):
        """``git add -A`` in-process (every change staged, deletions too, .gitignore
        respected), only where ``plain`` (no filter driver: git's clean filters, such as LFS,
        run only in git); the worktree's pygit2 Repository, its index staged (for
        `commit_index` or `land_staged` on the same thread: not opened and read again), or
        None when it was not done here. ``write``: the index file is written too (without it
        only the Repository holds the staging, for a landing that needs no index file)."""
        if not self.plain:
            return None
        import pygit2
        try:
            repo = self._tree_repo(worktree)
            if repo is None:
                log.warning(f"libgit2 puts the work tree of {worktree} elsewhere; using git")
                return None
            index = repo.index
            index.add_all()
            if write:
                index.write()
            return repo
        except (pygit2.GitError, KeyError, ValueError) as e:
            log.warning(f"in-process staging in {worktree} failed ({e}); using the git command")
            return None

    def write_index(self, repo) -> bool:
        """The index `stage_all(write=False)` staged, written to its file; False (logged)
        when libgit2 could not: the caller stages with git then."""
        import pygit2
        try:
            repo.index.write()
            return True
        except (pygit2.GitError, OSError) as e:
            log.warning(f"could not write the index of {repo.workdir} ({e}); using git add")
            return False

    def commit_index(self, worktree: pathlib.Path, message: str,
                     land: tuple[str, str] | None = None,
                     staged=None) -> str | MergeResult | None:
        """Commit the worktree's index (as ``git add -A`` left it) on its branch, as Clutch;
        the commit's SHA, "" when the index holds no change, None when this cannot be done
        here (HEAD not on a branch, an index libgit2 cannot write, the branch moved). With
        ``land`` = (track ref, merged marker ref), the commit is landed too, in the same
        transaction that moves the ticket's branch, and the MergeResult is returned: as a
        fast-forward when the track still sits where the ticket started, else as the rebase
        `land` would make (other tickets landed meanwhile: at 4 workers most landings). When
        the rebase is not for libgit2 (see `_rebase`), only the ticket's branch moves and its
        SHA is returned, for the git command to merge. ``staged``: the Repository
        `stage_all` returned for this worktree, on this thread (else it is opened here)."""
        import pygit2
        try:
            repo = staged if staged is not None else pygit2.Repository(str(worktree))
            head = repo.head
            if not head.name.startswith("refs/heads/"):
                return None
            parent = head.target
            tree = repo.index.write_tree()
            if tree == repo[parent].tree_id:
                return ""
            sig = self._sig()
            new = repo.create_commit(None, sig, sig, message, tree, [parent])
            if land is not None:
                landed = self._land_new(repo, head.name, parent, new, *land)
                if landed is not None:
                    return landed
            if not self._move(repo, [(head.name, new, parent)]):
                return None
            return str(new)
        except (pygit2.GitError, KeyError, ValueError) as e:
            log.warning(f"in-process commit in {worktree} failed ({e}); using the git command")
            return None

    def land_staged(self, repo, message: str, track_ref: str,
                    marker: str) -> MergeResult | str | None:
        """The ticket's staged index (``repo``: what `stage_all` returned, on this thread)
        landed on the track as one commit on its tip, without a commit of the ticket's own:
        the tree the track would get from that commit's rebase is built from the track tip
        by writing only the directories of the ticket's paths, and the track and the merged
        marker move in one transaction. Neither the index file nor the ticket's branch is
        written, so the worktree is left with its change uncommitted: `settle` brings it to
        the landed commit, off the critical path (the MergeResult says ``settle``).
        "" when the index holds no change. None, with nothing moved, when this is not the way:
        HEAD not on a branch, a conflicted index, a track that does not descend from where
        the ticket started, the two sides touching one path or a file and a directory of one
        name (git's merge decides those), or the track moving under us ``_LAND_TRIES`` times;
        the caller then commits on the ticket's branch and merges as before."""
        import pygit2
        from pygit2.enums import DeltaStatus
        try:
            head = repo.head
            index = repo.index
            if not head.name.startswith("refs/heads/") or index.conflicts is not None:
                return None
            parent = repo[head.target]
            mine: dict[str, tuple | None] = {}
            for d in index.diff_to_tree(parent.tree).deltas:
                if d.status == DeltaStatus.DELETED:
                    mine[d.old_file.path] = None
                else:
                    mine[d.new_file.path] = (d.new_file.id, d.new_file.mode)
            if not mine:
                return ""
            for _ in range(_LAND_TRIES):
                track = repo.references.get(track_ref)
                if track is None:
                    return None
                tip = repo[track.target]
                if tip.id != parent.id:
                    if not repo.descendant_of(tip.id, parent.id):
                        return None
                    theirs = _changed(repo, parent.tree, tip.tree)
                    if theirs & mine.keys() or _dirs(theirs) & mine.keys() or \
                            _dirs(mine) & theirs:
                        return None
                tree = _apply(repo, tip.tree, mine)
                if tree is None:
                    tree = repo.TreeBuilder().write()      # the ticket emptied the repository
                sig = self._sig()
                onto = repo.create_commit(None, sig, sig, message, tree, [tip.id])
                if self._move(repo, [(track_ref, onto, tip.id), (marker, onto, None)]):
                    return MergeResult(sha=str(onto), settle=True,
                                       how="fast-forward" if tip.id == parent.id else "rebase",
                                       merged_into=track_ref.removeprefix("refs/heads/"))
            return None
        except _NotHere:
            return None
        except (pygit2.GitError, KeyError, ValueError) as e:
            log.warning(f"in-process landing from {repo.workdir} failed ({e}); committing "
                        f"on the ticket's branch instead")
            return None

    def settle(self, tree: pathlib.Path, sha: str) -> bool:
        """A tree `land_staged` left with its change uncommitted, put on the commit that
        landed it (``sha``): its branch moved there, index and files reset to it (``git reset
        --hard``: only the paths the track gained since the ticket started are written). False,
        with nothing changed, when the tree's HEAD is not an ancestor of ``sha`` (someone
        moved it) or libgit2 cannot: the caller then removes the tree, whose change is on the
        track already."""
        import pygit2
        from pygit2.enums import ResetMode
        try:
            repo = self._tree_repo(tree)
            if repo is None or repo.head_is_unborn:
                return False
            target = repo[sha]
            if not repo.descendant_of(target.id, repo.head.target):
                return False
            repo.reset(target.id, ResetMode.HARD)
            return True
        except (pygit2.GitError, KeyError, ValueError) as e:
            log.warning(f"could not put {tree} on its landed commit {sha[:12]} ({e})")
            return False

    def _land_new(self, repo, branch: str, parent, new, track_ref: str,
                  marker: str) -> MergeResult | None:
        """The ticket's new commit ``new`` (on ``parent``) landed on the track with the move
        of the ticket's ``branch``, in one transaction; None when it was not (the track moved
        between reading and locking it ``_LAND_TRIES`` times, or the rebase is git's to
        make): nothing moved then."""
        for _ in range(_LAND_TRIES):
            track = repo.references.get(track_ref)
            if track is None:
                return None
            tip = track.target
            if tip == parent:
                onto, how = new, "fast-forward"
            else:
                onto, how = self._rebase(repo, tip, repo[new]), "rebase"
                if onto is None:
                    return None
            if self._move(repo, [(branch, new, parent), (track_ref, onto, tip),
                                 (marker, onto, None)]):
                return MergeResult(sha=str(onto), how=how,
                                   merged_into=track_ref.removeprefix("refs/heads/"))
            mine = repo.references.get(branch)
            if mine is None or mine.target != parent:
                return None       # the ticket's own branch moved: not ours to land
        return None

    def land(self, track_ref: str, ticket_ref: str, merged_ref: str) -> MergeResult | None:
        """Put the ticket branch's one new commit onto the track branch: a fast-forward when
        it sits on the track tip, else a rebase when the track and the ticket changed
        different paths since the ticket forked. None: the git command must do it (see the
        module's docstring)."""
        import pygit2
        try:
            repo = pygit2.Repository(str(self.top))
            for _ in range(_LAND_TRIES):    # the track moved under us: land on its new tip
                track = repo.references.get(track_ref)
                ticket = repo.references.get(ticket_ref)
                if track is None or ticket is None:
                    return None
                tip, commit = track.target, repo[ticket.target]
                if commit.parent_ids == [tip]:
                    new, how = commit.id, "fast-forward"
                else:
                    new = self._rebase(repo, tip, commit)
                    if new is None:
                        return None
                    how = "rebase"
                if self._move(repo, [(track_ref, new, tip), (merged_ref, new, None)]):
                    return MergeResult(sha=str(new), how=how,
                                       merged_into=track_ref.removeprefix("refs/heads/"))
            return None
        except (pygit2.GitError, KeyError, ValueError) as e:
            log.warning(f"in-process merge of {ticket_ref} failed ({e}); using the git command")
            return None

    def _rebase(self, repo, tip, commit):
        """The commit replayed on ``tip``, when that is a merge with nothing to decide."""
        if len(commit.parent_ids) != 1:
            return None
        fork = commit.parent_ids[0]
        if repo.merge_base(tip, commit.id) != fork:
            return None
        base_tree, tip_tree = repo[fork].tree, repo[tip].tree
        if _changed(repo, base_tree, tip_tree) & _changed(repo, base_tree, commit.tree):
            return None                      # both sides touched a path: git's merge decides
        index = repo.merge_trees(base_tree, tip_tree, commit.tree)
        if index.conflicts is not None:
            return None                      # e.g. a file on one side, a directory on the other
        tree = index.write_tree(repo)
        if tree == tip_tree.id:
            return None                      # nothing to merge: the git path says so
        return repo.create_commit(None, commit.author, self._sig(), commit.message, tree, [tip])

    def _move(self, repo, updates) -> bool:
        """Move every (ref, new, expected old; None: whatever it holds) in one transaction,
        after locking them all, with ``moves`` held (only for the transaction); False
        (nothing moved) when one no longer holds its expected value, or another process's
        transaction holds its lock (git's ref locks are not waited for). (The reflog names
        the repository's configured identity, or libgit2's "unknown": pygit2 1.21 cannot pass
        a signature to a transaction.)"""
        import pygit2
        try:
            with self._moves, repo.transaction() as txn:
                for ref, _new, _old in updates:
                    try:
                        txn.lock_ref(ref)
                    except pygit2.GitError as e:   # someone else is moving it
                        raise _Moved(f"{ref} (locked: {e})") from e
                for ref, _new, old in updates:
                    now = repo.references.get(ref)
                    if old is not None and (now is None or now.target != old):
                        raise _Moved(ref)
                for ref, new, _old in updates:
                    txn.set_target(ref, new, message="clutch: land ticket")
        except _Moved as e:
            log.info(f"{e} moved while Clutch was landing a ticket: the git command redoes it")
            return False
        return True


class _Moved(Exception):
    """A ref changed between reading and locking it (the transaction is rolled back)."""


class _NotHere(Exception):
    """A file and a directory of one name between the two sides: git's merge decides it."""


def _changed(repo, a, b) -> set[str]:
    """The paths that differ between trees ``a`` and ``b`` (both names of a rename)."""
    return {p for d in repo.diff(a, b).deltas for p in (d.old_file.path, d.new_file.path)}


def _dirs(paths) -> set[str]:
    """Every directory above the paths ("a/b/c" -> "a", "a/b")."""
    return {p[:i] for p in paths for i, ch in enumerate(p) if ch == "/"}


def _apply(repo, tree, changes: dict[str, tuple | None]):
    """``tree`` with ``changes`` made (path -> (blob id, mode), None: removed): the id of the
    tree written, None when nothing is left in it. Only the directories on the changed paths
    are read and written; a directory emptied goes, as git keeps no empty tree. Raises
    _NotHere where a change needs a file where the tree has a directory or the other way."""
    import pygit2
    here: dict[str, tuple | None] = {}
    below: dict[str, dict[str, tuple | None]] = {}
    for path, entry in changes.items():
        name, sep, rest = path.partition("/")
        if sep:
            below.setdefault(name, {})[rest] = entry
        else:
            here[name] = entry
    if here.keys() & below.keys():
        raise _NotHere()
    built = repo.TreeBuilder(tree) if tree is not None else repo.TreeBuilder()
    for name, entry in here.items():
        old = tree[name] if tree is not None and name in tree else None
        if old is not None and old.type_str == "tree":
            raise _NotHere()
        if entry is not None:
            built.insert(name, entry[0], entry[1])
        elif old is not None:
            built.remove(name)
    for name, sub in below.items():
        old = tree[name] if tree is not None and name in tree else None
        if old is not None and old.type_str != "tree":
            raise _NotHere()
        new = _apply(repo, old, sub)
        if new is not None:
            built.insert(name, new, pygit2.enums.FileMode.TREE)
        elif old is not None:
            built.remove(name)
    return built.write() if len(built) else None
