"""Merging without a checkout: ``git merge-tree --write-tree``, ``commit-tree`` and one atomic
``update-ref`` transaction; the conflict sides a person reads; the conflict-marker scan.

Threads: whichever calls (the engine's executor threads). State: none; every function takes
the :class:`GitRunner` of the repository it works on.
"""
from __future__ import annotations

import pathlib
import re

from toolbox.worktrees_model import (SIDE_LIMIT, ConflictSide, GitRunner, MergeResult,
                                     WorktreeError, merged_ref, said, ticket_branch,
                                     track_branch)

_MARKER_RE = re.compile(rb"^(<{7}|>{7}|\|{7})( |$)", re.MULTILINE)


def merge_tree(g: GitRunner, ours: str, theirs: str) -> tuple[str, dict[str, dict[int, str]]]:
    """(tree, conflicts) of merging ``theirs`` into ``ours``; conflicts maps each path to its
    index stages {1: base oid, 2: ours oid, 3: theirs oid} (a missing stage: no such file)."""
    proc = g.run("merge-tree", "--write-tree", "-z", "--no-messages", ours, theirs, check=False)
    if proc.returncode not in (0, 1):
        raise WorktreeError(f"git merge-tree {ours[:12]} {theirs[:12]} failed: {said(proc)}")
    fields = proc.stdout.decode("utf-8", "surrogateescape").split("\0")
    tree = fields[0].strip()
    conflicts: dict[str, dict[int, str]] = {}
    for entry in fields[1:]:
        if "\t" not in entry:
            continue
        meta, path = entry.split("\t", 1)
        _mode, oid, stage = meta.split(" ")
        conflicts.setdefault(path, {})[int(stage)] = oid
    if proc.returncode == 1 and not conflicts:
        raise WorktreeError(f"git merge-tree reported a conflict it did not list: {said(proc)}")
    return tree, conflicts


def _blob_text(g: GitRunner, oid: str | None) -> tuple[str | None, bool]:
    if oid is None:
        return None, False
    data = g.run("cat-file", "blob", oid).stdout
    binary = b"\0" in data[:8000]
    if binary:
        return f"[binary, {len(data)} bytes, blob {oid[:12]}]", True
    text = data[:SIDE_LIMIT].decode("utf-8", "replace")
    if len(data) > SIDE_LIMIT:
        text += f"\n[... {len(data) - SIDE_LIMIT} more bytes not shown; blob {oid[:12]}]"
    return text, False


def conflict_sides(g: GitRunner, conflicts: dict[str, dict[int, str]]) -> dict[str, ConflictSide]:
    sides: dict[str, ConflictSide] = {}
    for path, stages in conflicts.items():
        base, b1 = _blob_text(g, stages.get(1))
        ours, b2 = _blob_text(g, stages.get(2))
        theirs, b3 = _blob_text(g, stages.get(3))
        sides[path] = ConflictSide(path, base, ours, theirs, binary=b1 or b2 or b3)
    return sides


def conflict_result(g: GitRunner, conflicts: dict[str, dict[int, str]], what: str,
                    into: str) -> MergeResult:
    paths = tuple(sorted(conflicts))
    shown = ", ".join(paths[:5]) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")
    return MergeResult(sha=None, how="conflict", conflict=True, paths=paths,
                       sides=conflict_sides(g, conflicts),
                       message=f"merging {what} into {into} conflicts in {shown}; {into} is "
                               f"unchanged and both sides are kept")


def tree_of(g: GitRunner, commit: str) -> str:
    return g.out("rev-parse", f"{commit}^{{tree}}")


def commit_tree(g: GitRunner, tree: str, parents: list[str], message: str,
                author_of: str | None = None) -> str:
    """A commit object (no ref moves) by Clutch; the author of ``author_of`` kept if given."""
    env: dict[str, str] = {}
    if author_of:
        name, email, date = g.out("log", "-1", "--format=%an%x00%ae%x00%aD", author_of).split("\0")
        env = {"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email, "GIT_AUTHOR_DATE": date}
    args = ["commit-tree", tree]
    for p in parents:
        args += ["-p", p]
    return g.out(*args, "-F", "-", identity=True, input=message.encode("utf-8"), env=env)


def update_refs(g: GitRunner, updates: list[tuple[str, str, str | None]]) -> None:
    """Move every (ref, new, expected old; None: whatever it holds now) in one
    transaction: all move or none does (a ref that moved meanwhile fails the whole set)."""
    lines = ["start"]
    for ref, new, old in updates:
        lines.append(f"update {ref} {new} {old}" if old else f"update {ref} {new}")
    lines += ["prepare", "commit", ""]
    proc = g.run("update-ref", "--stdin", input="\n".join(lines).encode(), check=False)
    if proc.returncode != 0:
        raise WorktreeError(f"could not move {', '.join(r for r, _, _ in updates)}: {said(proc)}")


def message_of(g: GitRunner, fork: str, tip: str) -> str:
    """The ticket's commit message; several commits become one message listing them all."""
    shas = g.out("rev-list", "--reverse", f"{fork}..{tip}").split()
    if len(shas) == 1:
        return g.out("log", "-1", "--format=%B", shas[0]) + "\n"
    subjects = g.out("log", "--reverse", "--format=- %s", f"{fork}..{tip}")
    first = g.out("log", "-1", "--format=%s", shas[-1])
    return f"{first}\n\n{len(shas)} commits squashed onto the track:\n{subjects}\n"


def files_with_markers(root: pathlib.Path, paths: list[str]) -> list[str]:
    """The text files among ``paths`` (relative to ``root``) still holding a conflict marker
    line (<<<<<<<, >>>>>>> or |||||||)."""
    marked = []
    for rel in paths:
        p = root / rel
        if not p.is_file() or p.is_symlink():
            continue
        data = p.read_bytes()
        if b"\0" in data[:8000]:
            continue
        if _MARKER_RE.search(data):
            marked.append(rel)
    return marked


def checked_out_in(g: GitRunner, branch: str) -> pathlib.Path | None:
    """The work tree that has ``branch`` checked out, if any."""
    if g.reads is not None:
        found = g.reads.checked_out(branch)
        if found is not NotImplemented:
            return found
    for wt in g.worktrees():
        if wt.branch == branch and not wt.prunable:
            return wt.path
    return None


def advance_branch(g: GitRunner, branch: str, new: str, old: str,
                   what: str) -> MergeResult | None:
    """Move ``branch`` from ``old`` to ``new`` (a descendant of ``old``). Checked out
    somewhere: ``git merge --ff-only`` in that tree, so git itself refuses to overwrite any
    uncommitted or untracked file (a refusal comes back as a MergeResult, nothing touched).
    Not checked out: a compare-and-swap of the ref. None when the branch moved."""
    where = checked_out_in(g, branch)
    if where is None:
        update_refs(g, [(f"refs/heads/{branch}", new, old)])
        return None
    head = g.rev("HEAD", cwd=where)
    if head != old:
        return MergeResult(sha=None, how="refused", merged_into=branch,
                           message=f"{branch} moved while Clutch was merging {what} (now at "
                                   f"{(head or '?')[:12]}); nothing was changed, merge again")
    proc = g.run("merge", "--ff-only", "--no-edit", "-q", new, cwd=where, check=False,
                 identity=True)
    if proc.returncode != 0:
        return MergeResult(sha=None, how="refused", merged_into=branch,
                           message=f"Clutch did not merge {what} into {branch}: the merge would "
                                   f"overwrite changes in {where} that are not committed, so "
                                   f"nothing was changed and {what} is kept. Commit or stash "
                                   f"them, then merge again. git says: {said(proc)}")
    if g.rev("HEAD", cwd=where) != new:
        raise WorktreeError(f"git merge --ff-only in {where} did not move {branch} to {new[:12]}")
    return None


def diff_between(g: GitRunner, a: str, b: str) -> tuple[list[str], str]:
    """(files changed, unified diff with binary patches) from commit ``a`` to ``b``."""
    names = g.run("diff", "--name-only", "-z", a, b).stdout
    files = [f for f in names.decode("utf-8", "surrogateescape").split("\0") if f]
    diff = g.run("diff", "--no-color", "--no-ext-diff", "--binary", a, b).stdout
    return files, diff.decode("utf-8", "replace")


def ticket_merged(g: GitRunner, track_id: str, ticket_id: str) -> bool:
    """Whether deleting the ticket's branch loses nothing: it is gone, recorded as merged, or
    contained in the track branch."""
    tip = g.rev(f"refs/heads/{ticket_branch(track_id, ticket_id)}")
    if tip is None or g.rev(merged_ref(track_id, ticket_id)):
        return True
    track_tip = g.rev(f"refs/heads/{track_branch(track_id)}")
    return track_tip is not None and g.is_ancestor(tip, track_tip)


def drop_merged_refs(g: GitRunner, track_id: str, ticket_id: str | None = None) -> None:
    """Forget that a ticket (or every ticket of the track) was merged (caller holds the lock)."""
    if ticket_id is not None:
        refs = [merged_ref(track_id, ticket_id)] if g.rev(merged_ref(track_id, ticket_id)) else []
    else:
        refs = g.out("for-each-ref", "--format=%(refname)",
                     f"refs/clutch/merged/{track_id}/").split()
    for ref in refs:
        g.run("update-ref", "-d", ref)
