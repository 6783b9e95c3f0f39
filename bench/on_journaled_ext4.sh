#!/bin/sh
# Run a benchmark with its workspaces on an ext4 *with* a journal, the filesystem a Linux
# desktop is most likely to have, when the machine's own temporary directory is something else
# (on an ext4 without one, file creation slows many-fold for minutes after files are deleted:
# see bench/disk.py and bench/README.md).
#
#   bench/on_journaled_ext4.sh .venv/bin/python bench/makespan.py
#
# Needs root (mkfs, a loop mount). A sparse 4 GiB image is made in /var/tmp, mounted, and the
# command runs with TMPDIR inside it; the mount and the image are removed afterwards, whatever
# the command's outcome, and its exit status is returned.
set -eu
if [ "$#" -eq 0 ]; then
    echo "usage: $0 COMMAND [ARG...]" >&2
    exit 2
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "$0: needs root (mkfs.ext4 and a loop mount)" >&2
    exit 2
fi
img=$(mktemp /var/tmp/clutch-bench-ext4.XXXXXX)
mnt=$(mktemp -d /var/tmp/clutch-bench-mnt.XXXXXX)
cleanup() {
    umount "$mnt" 2>/dev/null || true
    rmdir "$mnt" 2>/dev/null || true
    rm -f "$img"
}
trap cleanup EXIT INT TERM
truncate -s 4G "$img"
mkfs.ext4 -q -F -O has_journal -i 4096 "$img"   # an inode per 4 KiB: bench/worktrees.py keeps ~200,000 files until it ends
mount -o loop "$img" "$mnt"
mkdir "$mnt/tmp"
chmod 1777 "$mnt/tmp"
echo "TMPDIR=$mnt/tmp (a loop-mounted ext4 with a journal)" >&2
status=0
TMPDIR="$mnt/tmp" "$@" || status=$?
exit "$status"
