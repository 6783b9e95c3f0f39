"""Worktrees: a ticket's worktree set-up and teardown on a 10,000-file repository, side by side
with what the same machine does without Clutch in the same run.

A repository of 10,000 small files (100 directories, ~120 bytes each, one commit) is made once.
Then, ROUNDS times, alternating (every tree made in the rounds first, every tree removed
after them, each timed where it happens; see the comment in `main`):
- clutch fresh: `TrackBranches.ticket_worktree` (set-up: a full checkout on its own branch),
  one file written, `commit_ticket` + `merge_ticket` (the ticket's commit onto the track
  branch, no checkout), `cleanup_ticket` (teardown: worktree and branch removed, with
  `discard=True` as the engine calls it once a ticket has landed: the landing committed
  everything, so no `git status` is read first);
- clutch recycled: the same, but set-up takes a finished ticket's worktree from the track's
  pool (checks out only what differs) and teardown puts it back (`recycle=True`): what a
  track's second and later tickets cost;
- git add/remove: `git worktree add -b` + `git worktree remove --force` (the floor for a full
  checkout: what Clutch's set-up and teardown are built on);
- git add on every core: the same with `-c checkout.workers=0` (git's parallel checkout, which
  Clutch's own checkouts of a whole tree use);
- git --no-checkout: `git worktree add --no-checkout` + remove (metadata only, no files);
- cp -r: a plain copy of the working tree (no .git) + `rm -rf`;
- create 10,000 empty files: one thread, os.open(O_CREAT) + close in 100 directories (removed
  at the end, untimed): the disk's own floor for a tree of that many files at that moment (on this
  machine it varies from 0.2 s to 8 s between runs; a full checkout cannot beat it by more
  than the number of cores).

Target: set-up + teardown < 1 s per ticket (median), fresh and recycled. The merge is
reported on its own. After the run `git worktree list` must show only the main tree.
"""
from __future__ import annotations

import _common  # noqa: F401  (sets sys.path: repository root first)

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from _common import empty_files, filesystem_line, header, median, percentile, report, summary

FILES = 10_000
ROUNDS = 5
TARGET_S = 1.0


def git(repo: Path, *args: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@x", GIT_COMMITTER_NAME="b",
               GIT_COMMITTER_EMAIL="b@x")
    subprocess.run(["git", "-C", str(repo), *args], check=True, env=env,
                   stdout=subprocess.DEVNULL)


def make_repo(root: Path) -> Path:
    repo = root / "repo"
    for i in range(FILES):
        d = repo / f"pkg{i % 100:02d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"mod{i:05d}.py").write_text(f"# module {i}\nVALUE_{i} = {i}\n\ndef f{i}():\n"
                                          f"    return VALUE_{i} * 2\n")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "10,000 files")
    return repo


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> int:
    from toolbox.worktrees import TrackBranches

    header(f"Worktree set-up and teardown, {FILES:,} files, {ROUNDS} rounds (median, p90)")
    tmp = Path(tempfile.mkdtemp(prefix="clutch-bench-wt-"))
    try:
        t0 = time.perf_counter()
        repo = make_repo(tmp)
        print(f"(repository made in {time.perf_counter() - t0:.1f} s; {filesystem_line(tmp)})")
        tb = TrackBranches(repo)
        tb.start_track("bench")
        tb.start_track("fresh")       # a second track: its pool stays empty
        times: dict[str, list[float]] = {k: [] for k in (
            "clutch fresh set-up", "clutch fresh teardown", "clutch fresh total",
            "clutch recycled set-up", "clutch recycled teardown", "clutch recycled total",
            "clutch commit+merge", "git add", "git remove", "git add on every core",
            "git --no-checkout add+remove", "cp -r + rm -rf", "create 10,000 empty files")}

        def set_up(tid: str, track: str) -> Path:
            t = timed(lambda: tb.ticket_worktree(track, tid))
            wt = tb.worktree_path(track, tid)
            (wt / f"new_{tid}.py").write_text("X = 1\n")

            def commit_merge():
                tb.commit_ticket(wt, f"{tid}: work")
                assert tb.merge_ticket(track, tid).ok
            times["clutch commit+merge"].append(timed(commit_merge))
            return t

        tb.ticket_worktree("bench", "prime")                 # the pool's first tree
        tb.cleanup_ticket("bench", "prime", recycle=True, keep_branch=True)
        # Everything that writes a tree first, everything that removes one after (each timed
        # where it happens): on an ext4 without a journal a removal slows every file created
        # in the minutes after it (bench/disk.py), so interleaved, each set-up measured the
        # removals before it rather than itself. A track's first trees are made as it starts
        # and removed as it ends, the same order.
        fresh_setup: list[float] = []
        for r in range(ROUNDS):
            fresh_setup.append(set_up(f"F-{r}", "fresh"))
            setup = set_up(f"R-{r}", "bench")       # a pooled tree: moved, not removed
            teardown = timed(lambda: tb.cleanup_ticket("bench", f"R-{r}", recycle=True,
                                                       discard=True))
            times["clutch recycled set-up"].append(setup)
            times["clutch recycled teardown"].append(teardown)
            times["clutch recycled total"].append(setup + teardown)
            times["git add"].append(timed(lambda: git(
                repo, "worktree", "add", "-q", "-b", f"plain-{r}", str(tmp / f"plain-{r}"),
                "main")))
            times["git add on every core"].append(timed(lambda: git(
                repo, "-c", "checkout.workers=0", "worktree", "add", "-q", "-b", f"par-{r}",
                str(tmp / f"par-{r}"), "main")))
            times["create 10,000 empty files"].append(timed(
                lambda: empty_files(tmp / f"empty-{r}", FILES)))
            times["git --no-checkout add+remove"].append(timed(lambda: git(
                repo, "worktree", "add", "-q", "--no-checkout", "-b", f"bare-{r}",
                str(tmp / f"bare-{r}"), "main")))
            times["cp -r + rm -rf"].append(timed(lambda: shutil.copytree(
                repo, tmp / f"side-{r}", ignore=shutil.ignore_patterns(".git", ".clutch"))))
        for r in range(ROUNDS):
            teardown = timed(lambda: tb.cleanup_ticket("fresh", f"F-{r}", discard=True))
            times["clutch fresh set-up"].append(fresh_setup[r])
            times["clutch fresh teardown"].append(teardown)
            times["clutch fresh total"].append(fresh_setup[r] + teardown)
            times["git remove"].append(timed(lambda: git(
                repo, "worktree", "remove", "--force", str(tmp / f"plain-{r}"))))
            git(repo, "worktree", "remove", "--force", str(tmp / f"par-{r}"))
            times["git --no-checkout add+remove"][r] += timed(lambda: git(
                repo, "worktree", "remove", "--force", str(tmp / f"bare-{r}")))
            times["cp -r + rm -rf"][r] += timed(lambda: shutil.rmtree(tmp / f"side-{r}"))
        for name, values in times.items():
            target = TARGET_S if name.endswith(" total") and name.startswith("clutch") else None
            report(f"{name} per ticket", median(values), "s", target=target,
                   note=f"p90 {percentile(values, 90):.3f} s")
        tb.cleanup_track("bench", discard=True)
        tb.cleanup_track("fresh", discard=True)
        left = subprocess.run(["git", "-C", str(repo), "worktree", "list"], capture_output=True,
                              text=True).stdout.strip().splitlines()
        print(f"worktrees left after teardown: {len(left) - 1} (besides the main tree)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return summary("worktrees")


if __name__ == "__main__":
    raise SystemExit(main())
