"""Reading and outlining files for a map refresh, in this process or spread over processes.

Threads: the caller's (a `RepoMap` refresh, under its lock); `scan_batch` also runs in the
worker processes of a large cold build. State: none at module level; each call gets or makes
the `Grammars` it uses.

A cold build of a large repository is bound by `ast.parse` (about 0.25 ms for a 100-line module),
so when more than `PARALLEL_MIN_FILES` files need reading and the machine has more than one
core, the files are split over a process pool (forkserver, or spawn where there is none: never a
plain fork of this multi-threaded app, which could inherit a lock another thread holds), each
worker reading, hashing and outlining its share.
"""
from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import NamedTuple

from toolbox.repomap.listing import SNIFF_BYTES, binary_by_name, looks_binary
from toolbox.repomap.outline import Grammars, Outline, language_of, outline, pack, unpack

log = logging.getLogger(__name__)

MAX_OUTLINE_BYTES = 1_000_000
PARALLEL_MIN_FILES = 1500
TEXT_EXTENSIONS = frozenset({
    ".md", ".rst", ".txt", ".toml", ".json", ".yaml", ".yml", ".cfg", ".ini", ".csv", ".tsv",
    ".html", ".htm", ".css", ".scss", ".xml", ".svg", ".lock", ".sh", ".bash", ".mk", ".sql",
    ".gitignore", ".gitattributes", ".env", ".conf", ".proto", ".graphql", ".rb", ".php",
})


class FileEntry(NamedTuple):
    path: str
    size: int
    mtime_ns: int
    digest: str          # "" when the file was listed without reading its content
    outline: Outline
    binary: bool = False
    racy: bool = False   # mtime too recent to trust: read again next refresh


@dataclass(frozen=True, slots=True)
class Job:
    rel: str
    size: int
    mtime_ns: int
    prev_digest: str
    racy: bool


@dataclass(frozen=True, slots=True)
class Scanned:
    entry: FileEntry | None   # None: content unchanged (digest == prev_digest), keep the old one
    read: int
    parsed: int


def scan_file(root: str, job: Job, grammars: Grammars) -> Scanned:
    """Read (when needed), hash and outline one file; never raises on content or I/O."""
    rel = job.rel

    def entry(out: Outline = Outline(), digest: str = "", binary: bool = False,
              racy: bool = job.racy) -> FileEntry:
        return FileEntry(rel, job.size, job.mtime_ns, digest, out, binary, racy)

    if binary_by_name(rel):
        return Scanned(entry(binary=True), 0, 0)
    lang = language_of(rel)
    ext = os.path.splitext(rel)[1].lower()
    if lang is None and (ext in TEXT_EXTENSIONS or job.size == 0):
        return Scanned(entry(), 0, 0)
    try:
        with open(os.path.join(root, rel), "rb") as f:
            data = f.read(MAX_OUTLINE_BYTES + 1) if lang else f.read(SNIFF_BYTES)
    except OSError as e:
        return Scanned(entry(Outline(error=f"cannot read: {e.strerror}"), racy=True), 0, 0)
    if looks_binary(data):
        return Scanned(entry(binary=True), 1, 0)
    if lang is None:
        return Scanned(entry(), 1, 0)
    if len(data) > MAX_OUTLINE_BYTES:
        return Scanned(entry(Outline(error=f"too large to outline ({job.size} bytes)")), 1, 0)
    digest = hashlib.blake2b(data, digest_size=16).hexdigest()
    if digest == job.prev_digest:
        return Scanned(None, 1, 0)
    try:
        out = outline(rel, data, grammars)
    except Exception as e:  # a parser bug must cost one file's symbols, not the whole map
        log.exception("repository map: outlining %s failed", rel)
        # ... and only until the next refresh: no digest, so the file is outlined again then
        # (a failure that was the moment's, not the file's, does not stay in the map)
        return Scanned(entry(Outline(error=f"outline failed: {type(e).__name__}: {e}"),
                             racy=True), 1, 1)
    return Scanned(entry(out, digest), 1, 1)


def scan_batch(root: str, jobs: Sequence[Job]) -> list[tuple]:
    """A worker process's share of a large build (its own grammars), outlines packed as strings:
    pickling ~100,000 named tuples back costs more than the parsing saved."""
    grammars = Grammars()
    out: list[tuple] = []
    for j in jobs:
        r = scan_file(root, j, grammars)
        e = r.entry
        out.append((None if e is None else (*e[:4], pack(e.outline), e.binary, e.racy),
                    r.read, r.parsed))
    return out


def _from_plain(t: tuple) -> Scanned:
    e, read, parsed = t
    if e is None:
        return Scanned(None, read, parsed)
    path, size, mtime, digest, out, binary, racy = e
    return Scanned(FileEntry(path, size, mtime, digest, unpack(out), binary, racy), read, parsed)


def scan_all(root: str, jobs: Sequence[Job], grammars: Grammars) -> list[Scanned]:
    """Every job's result, in order; over a process pool when the build is large."""
    cores = os.cpu_count() or 1
    if len(jobs) < PARALLEL_MIN_FILES or cores < 2:
        return [scan_file(root, j, grammars) for j in jobs]
    import multiprocessing
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    n = min(cores, 8)
    size = -(-len(jobs) // (n * 4))
    chunks = [jobs[i:i + size] for i in range(0, len(jobs), size)]
    try:
        with ProcessPoolExecutor(max_workers=n,
                                 mp_context=ctx) as pool:
            results: list[Scanned] = []
            for part in pool.map(scan_batch, [root] * len(chunks), chunks):
                results.extend(map(_from_plain, part))
            return results
    except (OSError, RuntimeError) as e:   # no processes on this machine: do it here, say so
        log.warning("repository map: process pool unavailable (%s); scanning in-process", e)
        return [scan_file(root, j, grammars) for j in jobs]
