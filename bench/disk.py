"""The disk under the benchmarks: does creating files slow down after files are deleted?

Why this exists: on the machine the worktree figures were taken on, creating 10,000 empty
files took 0.2 s in one hour and 8 s in the next. `perf record -g` on such a run put 85 % of
the time in the kernel's ext4 inode allocator: `find_inode_bit` -> `recently_deleted` ->
`find_get_block_common` / `ext4_get_group_desc`. On an ext4 *without a journal* (that
machine's root filesystem: `/sys/fs/ext4/vda/journal_task` reads `<none>`), each new inode is
first checked against every free inode of its block group whose deletion time is under 60 s
old (360 s while its inode-table block is dirty) and skips them, so the cost of a create grows
with how many files were deleted in the last minutes: by a test suite, a `git worktree
remove`, or this script. With a journal the check is not made.

ROUNDS times: create FILES empty files in 100 folders (one thread, `os.open(O_CREAT)`), then
delete them; each round's create time is printed, on the temporary directory's filesystem
(where every benchmark's workspace goes) and, side by side in the same run, on /dev/shm
(tmpfs, where nothing of the kind happens). `bench/on_journaled_ext4.sh .venv/bin/python
bench/disk.py` runs it on a loop-mounted ext4 with a journal (root).

Figure: the last round's create time over the first's ("slow-down after deletions"). No
target: it describes the machine, not Clutch.
"""
from __future__ import annotations

import _common  # noqa: F401  (sets sys.path: repository root first)

import os
import shutil
import tempfile
import time
from pathlib import Path

from _common import empty_files, filesystem_line, header, report, summary

FILES = 10_000
ROUNDS = 8


def cycle(root: Path) -> list[float]:
    out = []
    for r in range(ROUNDS):
        where = root / f"round-{r}"
        t0 = time.perf_counter()
        empty_files(where, FILES)
        out.append(time.perf_counter() - t0)
        shutil.rmtree(where)
    return out


def main() -> int:
    places = [("temporary directory", None)]
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        places.append(("/dev/shm", "/dev/shm"))
    for name, base in places:
        header(f"{name}: create {FILES:,} empty files, delete them, {ROUNDS} times")
        print(filesystem_line(base))
        root = Path(tempfile.mkdtemp(prefix="clutch-bench-disk-", dir=base))
        try:
            times = cycle(root)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        print("  create per round: " + " ".join(f"{t:.2f}" for t in times) + " s")
        report(f"{name}: first round", times[0], "s", fmt="{:.3f}")
        report(f"{name}: last round", times[-1], "s", fmt="{:.3f}")
        report(f"{name}: slow-down after deletions", times[-1] / times[0], "x", fmt="{:.1f}")
    return summary("bench/disk.py")


if __name__ == "__main__":
    raise SystemExit(main())
