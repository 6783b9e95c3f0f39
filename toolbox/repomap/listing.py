"""Which files a repository map covers: `git ls-files` in a git repository, a pruned walk otherwise.

Threads: any (pure functions; one `git` subprocess per call in a git repository).
State: none.

In a git repository the listing is what git tracks plus untracked files that `.gitignore` does
not exclude (`git ls-files --cached --others --exclude-standard`), so what a person ignores never
reaches a prompt. Elsewhere a walk skips version-control folders, `.clutch/`, virtual
environments, `node_modules` and caches. Either way Conductor's track state (`conductor/tracks/`,
`tracks.md`) is left out: it is the planners' bookkeeping, not code. Binary files are recognised by extension here (no read)
and by a NUL byte in their first block when they are read (see `looks_binary`).
"""
from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable
from pathlib import Path

SKIP_DIRS = frozenset({
    ".git", ".hg", ".svn", ".clutch", ".venv", "venv", "env", ".env", "node_modules",
    "__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache", ".tox", ".nox", "dist",
    "build", ".idea", ".vscode", "target", ".gradle", ".next", "site-packages",
})

BINARY_EXTENSIONS = frozenset({
    ".png", ".jpg", ".jpeg", ".gif", ".bmp", ".ico", ".webp", ".tif", ".tiff", ".psd",
    ".pdf", ".zip", ".gz", ".tgz", ".bz2", ".xz", ".zst", ".7z", ".rar", ".tar", ".jar",
    ".war", ".whl", ".egg", ".so", ".dylib", ".dll", ".exe", ".bin", ".o", ".a", ".lib",
    ".obj", ".class", ".pyc", ".pyo", ".pyd", ".wasm", ".mp3", ".mp4", ".wav", ".ogg",
    ".flac", ".avi", ".mov", ".mkv", ".webm", ".ttf", ".otf", ".woff", ".woff2", ".eot",
    ".sqlite", ".db", ".npy", ".npz", ".pkl", ".pickle", ".parquet", ".h5", ".onnx", ".pt",
})

SNIFF_BYTES = 8192


def looks_binary(head: bytes) -> bool:
    """True when the first block of a file holds a NUL byte (how git and grep decide)."""
    return b"\0" in head[:SNIFF_BYTES]


def binary_by_name(rel: str) -> bool:
    return os.path.splitext(rel)[1].lower() in BINARY_EXTENSIONS


# Conductor's track registry and each track's plan, spec, metadata and state: the planners'
# own bookkeeping (rewritten on every tick, with temp files while it saves), not the code; the
# project's documents (product.md, tech-stack.md, workflow.md) reach Tier 1 on their own.
CONDUCTOR_STATE = ("conductor/tracks/", "conductor/archive/")
CONDUCTOR_STATE_FILES = frozenset({"conductor/tracks.md"})


def _skipped(rel: str) -> bool:
    return (any(part in SKIP_DIRS for part in rel.split("/")[:-1])
            or rel.startswith(CONDUCTOR_STATE) or rel in CONDUCTOR_STATE_FILES)


def is_git_repository(root: Path) -> bool:
    return (root / ".git").exists()


def git_files(root: Path) -> list[str]:
    """Tracked files plus untracked ones `.gitignore` does not exclude, as POSIX paths.

    Raises RuntimeError with git's own message when git fails (a broken repository is the
    person's to see, not a reason to map something else silently)."""
    proc = subprocess.run(
        ["git", "-c", "core.quotepath=off", "ls-files", "-z", "--cached", "--others",
         "--exclude-standard"],
        cwd=root, capture_output=True, timeout=60, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"git ls-files failed in {root}: "
                           f"{proc.stderr.decode('utf-8', 'replace').strip()}")
    return kept(raw.decode("utf-8", "surrogateescape") for raw in proc.stdout.split(b"\0")
                if raw)


def kept(names: Iterable[str]) -> list[str]:
    """The listed names a map considers, in order, each once: what is skipped (virtual
    environments, caches, Conductor's track state, Clutch's own files) left out."""
    seen: set[str] = set()
    out: list[str] = []
    for rel in names:
        if rel in seen or _skipped(rel) or rel.startswith(".clutch/"):
            continue
        seen.add(rel)
        out.append(rel)
    return out


def walk_files(root: Path) -> list[str]:
    """Every file under root outside the skipped folders, as sorted POSIX paths."""
    out: list[str] = []
    root_s = str(root)
    for dirpath, dirnames, filenames in os.walk(root_s):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.endswith(".egg-info"))
        rel_dir = os.path.relpath(dirpath, root_s)
        prefix = "" if rel_dir == "." else rel_dir.replace(os.sep, "/") + "/"
        out.extend(rel for f in sorted(filenames) if not _skipped(rel := prefix + f))
    return out


def list_files(root: Path) -> list[str]:
    """The files under root a map considers (the scan then leaves binary ones out)."""
    return git_files(root) if is_git_repository(root) else walk_files(root)
