"""The reads of the in-process worktree layer (libgit2 through pygit2): what a ref names,
ancestry, where a branch is checked out, a tree's HEAD and its files, what differs between two
commits, and the track's diff for the merge approval. `LibGit` (worktrees_libgit.py) adds the
writes; its docstring says where libgit2 is used and where git itself is asked. Each read
answers as git would, or returns None or NotImplemented and the caller asks git;
tests/toolbox/test_worktrees_libgit.py checks them against git itself.

Threads: any; a pygit2 Repository is opened per call and never shared between threads. State:
none of its own (`top`, `plain` and `diff_drivers` are LibGit's).
"""
from __future__ import annotations

import logging
import pathlib

from toolbox.worktrees_model import gitdir_named

log = logging.getLogger(__name__)

_LIST_INDEX_BYTES = 16_384   # an index of about 200 files: above it `git ls-files` is quicker


class LibGitReads:
    """The reads of LibGit (its base): ``top``, ``plain`` and ``diff_drivers`` are set by
    LibGit's constructor."""

    top: pathlib.Path
    plain: bool
    diff_drivers: bool

    @staticmethod
    def _differing(repo, commit) -> list[str] | None:
        """The paths whose entries differ between the worktree's HEAD commit and ``commit``
        (both sides of a rename or a type change); None when HEAD names no commit."""
        import pygit2
        try:
            head = repo.head.peel(pygit2.Commit)
        except (pygit2.GitError, KeyError, ValueError):
            return None
        deltas = repo.diff(head.tree, commit.tree).deltas
        return sorted({p for d in deltas for p in (d.old_file.path, d.new_file.path)})

    def changed_since(self, tree: pathlib.Path, commit: str) -> tuple[str, list[str]] | None:
        """(the commit the worktree's HEAD names, the paths, relative to the repository's
        top, whose entries differ between ``commit`` and it); None when libgit2 cannot
        tell. Reads commits only, not the tree's files."""
        import pygit2
        try:
            repo = pygit2.Repository(str(tree))
            head = repo.head.peel(pygit2.Commit)
            paths = self._differing(repo, repo[commit].peel(pygit2.Commit))
        except (pygit2.GitError, KeyError, ValueError) as e:
            log.info(f"libgit2 cannot compare {tree} with {commit} ({e})")
            return None
        return None if paths is None else (str(head.id), paths)

    def rev(self, where: pathlib.Path, ref: str):
        """The commit ``ref`` names in the repository or worktree at ``where`` (``git
        rev-parse --verify ref^{commit}``), None when it names none; NotImplemented when
        libgit2 cannot tell (then git is asked)."""
        repo = self._open(where)
        return NotImplemented if repo is None else self._commit_of(repo, ref)

    def is_ancestor(self, where: pathlib.Path, a: str, b: str):
        """``git merge-base --is-ancestor a b``; NotImplemented when libgit2 cannot tell."""
        import pygit2
        repo = self._open(where)
        if repo is None:
            return NotImplemented
        ta, tb = self._commit_of(repo, a), self._commit_of(repo, b)
        if ta is NotImplemented or tb is NotImplemented or ta is None or tb is None:
            return NotImplemented         # git's error names the missing revision
        try:
            return ta == tb or repo.descendant_of(tb, ta)
        except (pygit2.GitError, KeyError, ValueError):
            return NotImplemented

    @staticmethod
    def _tree_repo(where: pathlib.Path):
        """The repository of the work tree holding ``where``, opened to read or write its
        files; None when libgit2 places that work tree anywhere else than the directory whose
        ``.git`` names this repository. A linked tree's administrative ``gitdir`` file
        emptied by a killed ``git worktree move`` makes libgit2 take the process's working
        directory for its work tree (git itself still finds the tree by its ``.git`` file):
        a checkout there would write into whatever directory Clutch was started from, and
        staging would commit its files. The caller asks git instead."""
        import pygit2
        repo = pygit2.Repository(str(where))
        if not repo.workdir:
            return None
        top = pathlib.Path(repo.workdir).resolve()
        if not pathlib.Path(where).resolve().is_relative_to(top):
            return None
        marker, admin = top / ".git", pathlib.Path(repo.path).resolve()
        named = marker.resolve() if marker.is_dir() else gitdir_named(top)
        return repo if named == admin else None

    @staticmethod
    def _open(where: pathlib.Path):
        """The repository or worktree at ``where``; None when libgit2 cannot open it (e.g. it
        is not one: git's own message then says why)."""
        import pygit2
        try:
            return pygit2.Repository(str(where))
        except (pygit2.GitError, KeyError, ValueError):
            return None

    @staticmethod
    def _commit_of(repo, ref: str):
        import pygit2
        try:
            return str(repo.revparse_single(f"{ref}^{{commit}}").id)
        except (KeyError, ValueError, pygit2.InvalidSpecError):
            return None                   # names nothing (or not a commit)
        except pygit2.GitError:
            return NotImplemented

    def head_branch(self, where: pathlib.Path):
        """The branch checked out in the work tree at ``where`` (short name), None when HEAD
        is detached; NotImplemented when libgit2 cannot tell."""
        import pygit2
        try:
            repo = pygit2.Repository(str(where))
            return None if repo.head_is_detached else repo.head.shorthand
        except (pygit2.GitError, KeyError, ValueError) as e:
            log.warning(f"libgit2 cannot read the HEAD of {where} ({e}); asking git")
            return NotImplemented

    def checked_out(self, branch: str):
        """The work tree that has ``branch`` checked out (the main one or a linked one that is
        not prunable), None when none has; NotImplemented when libgit2 cannot tell."""
        import pygit2
        ref = f"refs/heads/{branch}"
        try:
            repo = pygit2.Repository(str(self.top))
            main = pathlib.Path(repo.workdir) if repo.workdir else None
            if main is not None and not repo.head_is_unborn and \
                    not repo.head_is_detached and repo.head.name == ref:
                return main.resolve()
            for name in repo.list_worktrees():
                wt = repo.lookup_worktree(name)
                if wt.is_prunable:
                    continue
                other = pygit2.Repository(wt.path)
                if not other.head_is_detached and not other.head_is_unborn and \
                        other.head.name == ref:
                    return pathlib.Path(wt.path).resolve()
            return None
        except (pygit2.GitError, KeyError, ValueError) as e:
            log.warning(f"libgit2 cannot tell where {branch} is checked out ({e}); asking git")
            return NotImplemented

    def listed_files(self, where: pathlib.Path) -> list[str] | None:
        """What ``git ls-files --cached --others --exclude-standard`` lists in the worktree
        directory ``where`` (the index's files and the untracked ones .gitignore leaves),
        relative to it; None when libgit2 cannot tell or git is quicker (then git is
        asked). Walking the index from Python costs ~4 us a file, a git process ~1.5 ms plus
        ~0.2 us a file: git wins from about 250 files (300: 2.0 ms against 1.7; 10,000: 47
        against 10), so only a small index is read here."""
        import pygit2
        from pygit2.enums import FileStatus
        try:
            repo = self._tree_repo(where)
            if repo is None:
                log.warning(f"libgit2 puts the work tree of {where} elsewhere; asking git")
                return None
            if pathlib.Path(repo.path, "index").stat().st_size > _LIST_INDEX_BYTES:
                return None
            top = pathlib.Path(repo.workdir).resolve()
            names = [e.path for e in repo.index]
            names += sorted(p for p, f in repo.status(untracked_files="all").items()
                            if f & FileStatus.WT_NEW)
        except (pygit2.GitError, KeyError, ValueError, TypeError, OSError) as e:
            log.warning(f"libgit2 cannot list the files of {where} ({e}); asking git")
            return None
        sub = pathlib.Path(where).resolve()      # inside `top` (see _tree_repo)
        if sub == top:
            return names
        prefix = sub.relative_to(top).as_posix() + "/"
        return [n[len(prefix):] for n in names if n.startswith(prefix)]

    def diff(self, a: str, b: str) -> str | None:
        """``git diff a..b`` between two commits, in-process: the same patch text, renames
        found as git's ``diff.renames`` says (only the "similarity index" percentage is
        libgit2's own). None where git must write it: a repository with a filter, a textconv
        or an external diff command, or one libgit2 cannot read."""
        if not self.plain or self.diff_drivers:
            return None
        import pygit2
        try:
            repo = pygit2.Repository(str(self.top))
            old, new = self._commit_of(repo, a), self._commit_of(repo, b)
            if not isinstance(old, str) or not isinstance(new, str):
                return None
            d = repo.diff(old, new)
            d.find_similar()
            return d.patch or ""
        except (pygit2.GitError, KeyError, ValueError) as e:
            log.warning(f"libgit2 cannot diff {a}..{b} ({e}); asking git")
            return None
