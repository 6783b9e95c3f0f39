"""`RepoMap`: one workspace's repository map, kept up to date incrementally.

Threads: any; every public method takes the instance's lock, so the conductor thread and worker
threads may share one map. State it owns: the entries of the last refresh (path -> size,
mtime, content digest, outline), the import graph derived from them, the tree-sitter grammars it
loaded, and the on-disk cache file (by default `<root>/.clutch/cache/repomap.json`), which it
alone writes (atomically: temp file + os.replace).

A refresh lists the files (git or a walk), stats each one, and re-reads only those whose size or
mtime changed (or whose mtime was too recent to trust); a re-read file whose content digest is
unchanged keeps its outline, so only edited files are parsed again.
"""
from __future__ import annotations

import json
import logging
import os
import stat as statmod
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from toolbox.repomap import graph as graphmod
from toolbox.repomap.listing import kept, list_files
from toolbox.repomap.outline import Grammars, Outline, pack, unpack
from toolbox.repomap.scan import FileEntry, Job, scan_all
from toolbox.repomap.render import render_ranked, skeleton

log = logging.getLogger(__name__)

CACHE_VERSION = 1
# An mtime this close to the scan may be given again to a later write in the same clock tick
# (same size too: the change would be missed), so such a file is read again next refresh.
RACY_NS = 2_000_000_000       # whole-second timestamps (FAT, HFS+, some network filesystems)
FINE_RACY_NS = 50_000_000     # sub-second ones (ext4, xfs, btrfs, APFS, NTFS): ticks of 1-16 ms


def racy(now_ns: int, mtime_ns: int) -> bool:
    """Whether a file with this mtime, seen at ``now_ns``, must be read again next time. A
    timestamp with a fraction of a second comes from a filesystem that keeps one, whose clock
    ticks every few milliseconds: 50 ms is well past its tick. A whole second may be a
    filesystem that keeps only seconds (or two): 2 s. A freshly checked-out worktree is then
    trusted a moment after its checkout, not read twice."""
    window = RACY_NS if mtime_ns % 1_000_000_000 == 0 else FINE_RACY_NS
    return now_ns - mtime_ns < window


@dataclass(frozen=True, slots=True)
class RefreshStats:
    files: int           # files in the map (binary ones excluded)
    binary: int          # binary files left out
    reused: int          # unchanged by stat: not read
    read: int            # read from disk
    parsed: int          # outlined (new or changed content)
    seconds: float


class RepoMap:
    """The repository map of one directory. Create one per workspace and keep it."""

    def __init__(self, root: str | os.PathLike[str], *, cache_path: Path | None = None,
                 persist: bool = True, seed: "RepoMap | None" = None,
                 same_files: bool = False,
                 lister: "Callable[[Path], list[str] | None] | None" = None) -> None:
        """seed: another map of the same repository (a ticket's worktree seeded with the
        workspace's map): on the first refresh a file whose content digest equals the seed's
        entry for the same path keeps that outline, so only files that differ are parsed.
        same_files: the seed mapped these very files (the same worktree, since moved or
        switched to another commit), so its stats are trusted as a refresh trusts its own:
        only files whose size or mtime changed are read.
        lister: lists the files instead of `git ls-files` (names as git would give them);
        it may return None, and the usual listing is used.
        Give a worktree's map persist=False (or a cache_path outside it): the cache file must
        not appear in the worker's tree."""
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise NotADirectoryError(f"cannot map {self.root}: not a directory")
        self.cache_path = cache_path or self.root / ".clutch" / "cache" / "repomap.json"
        self.persist = persist
        self._lock = threading.RLock()
        self._grammars = Grammars()
        self._entries: dict[str, FileEntry] = {}
        if seed is not None and same_files:
            self._entries = dict(seed.entries())
        elif seed is not None:  # stats differ (a checkout's mtimes are new): digests decide
            self._entries = {p: e._replace(racy=True) for p, e in seed.entries().items()}
        self._loaded = False
        self._lister = lister
        self._graph: graphmod.ImportGraph | None = None
        self.last_stats: RefreshStats | None = None

    # ------------------------------------------------------------------ building

    def refresh(self, only: Iterable[str] | None = None) -> RefreshStats:
        """Bring the map up to date with the files on disk; returns what it had to do.
        ``only``: the paths (relative to the root) that can have changed since the map was
        last up to date, when the caller knows that nothing else was written: a tree no one
        else writes, switched by Clutch from one commit to another (the paths differing
        between the two). Then only they are looked at; the rest is kept as it is, without
        listing or stat-ing the tree, and an entry whose mtime was too recent to trust stays
        marked so, for the next whole refresh (on 10,000 files, most of a ticket's set-up)."""
        with self._lock:
            t0 = time.perf_counter()
            if not self._loaded:
                self._load_cache()
            old = self._entries
            if only is not None:
                names = kept(only)
            else:
                listed = self._lister(self.root) if self._lister is not None else None
                names = kept(listed) if listed is not None else list_files(self.root)
            now_ns = time.time_ns()
            new: dict[str, FileEntry] = {}
            if only is not None:
                looked = set(names)
                new = {p: e for p, e in old.items() if p not in looked}
            reused = read = parsed = 0
            root = str(self.root) + os.sep
            jobs: list[Job] = []
            for rel in names:
                try:
                    st = os.lstat(root + rel)
                except OSError:
                    continue            # tracked by git but deleted since
                if not statmod.S_ISREG(st.st_mode):
                    continue            # symlinks (which may point outside), sockets, ...
                prev = old.get(rel)
                if (prev is not None and not prev.racy and prev.size == st.st_size
                        and prev.mtime_ns == st.st_mtime_ns):
                    new[rel] = prev
                    reused += 1
                    continue
                jobs.append(Job(rel, st.st_size, st.st_mtime_ns, prev.digest if prev else "",
                                racy(now_ns, st.st_mtime_ns)))
            for job, res in zip(jobs, scan_all(root, jobs, self._grammars)):
                read += res.read
                parsed += res.parsed
                if res.entry is None:    # same content: keep the outline, note the new stat
                    prev = old[job.rel]
                    new[job.rel] = FileEntry(job.rel, job.size, job.mtime_ns, prev.digest,
                                             prev.outline, prev.binary, job.racy)
                else:
                    new[job.rel] = res.entry
            if only is not None:      # in the order a listing gives, as a whole refresh
                new = ({p: new[p] for p in old} if new.keys() == old.keys()
                       else dict(sorted(new.items())))
            binary = sum(1 for e in new.values() if e.binary)
            dirty = bool(jobs) or new.keys() != old.keys()
            self._entries = new
            if dirty:
                self._graph = None
                if self.persist:
                    self._save_cache()
            stats = RefreshStats(len(new) - binary, binary, reused, read, parsed,
                                 time.perf_counter() - t0)
            self.last_stats = stats
            return stats

    # ------------------------------------------------------------------ the cache file

    def _load_cache(self) -> None:
        self._loaded = True
        if self._entries:      # seeded from another map
            return
        try:
            raw = self.cache_path.read_text("utf-8")
        except FileNotFoundError:
            return
        except OSError as e:
            log.warning("repository map cache %s unreadable (%s); rebuilding", self.cache_path, e)
            return
        try:
            doc = json.loads(raw)
            if doc.get("version") != CACHE_VERSION or doc.get("root") != str(self.root):
                return
            entries: dict[str, FileEntry] = {}
            for rel, (size, mtime, digest, binary, packed) in doc["files"].items():
                entries[rel] = FileEntry(rel, int(size), int(mtime), str(digest),
                                         unpack(packed), bool(binary))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            log.warning("repository map cache %s is damaged (%s); rebuilding", self.cache_path, e)
            return
        self._entries = entries

    def _save_cache(self) -> None:
        files = {}
        for rel, e in self._entries.items():
            if e.racy:
                continue            # re-read next time rather than trust a fresh mtime
            files[rel] = (e.size, e.mtime_ns, e.digest, int(e.binary), pack(e.outline))
        doc = {"version": CACHE_VERSION, "root": str(self.root), "files": files}
        try:
            self.cache_path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.cache_path.parent, prefix=".repomap.",
                                       suffix=".tmp")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(doc, f, separators=(",", ":"))
            os.replace(tmp, self.cache_path)
        except OSError as e:
            log.warning("repository map cache not saved to %s: %s", self.cache_path, e)

    # ------------------------------------------------------------------ reading the map

    def _ensure(self) -> None:
        if self.last_stats is None:
            self.refresh()

    def outlines(self) -> dict[str, Outline]:
        """path -> outline of every mapped (non-binary) file, as of the last refresh."""
        with self._lock:
            self._ensure()
            return {p: e.outline for p, e in self._entries.items() if not e.binary}

    def graph(self) -> graphmod.ImportGraph:
        with self._lock:
            self._ensure()
            if self._graph is None:
                self._graph = graphmod.build_graph(self.outlines())
            return self._graph

    def ranked(self, focus: Sequence[str] = (), text: str = "") -> list[graphmod.RankedFile]:
        """Every mapped file, most relevant to the task (focus files, the text) first."""
        with self._lock:
            return graphmod.rank(self.outlines(), self.graph(), focus, text)

    def mentioned_files(self, text: str) -> list[str]:
        """Mapped files the text names ('util.py', 'src/app/main.ts'), in the order named."""
        with self._lock:
            return graphmod.mentioned_files(text, self.outlines())

    def render(self, focus: Sequence[str] = (), text: str = "", budget_tokens: int = 1024,
               exclude: Iterable[str] = ()) -> str:
        """The map as prompt text: ranked for the task, cut to budget_tokens; the paths in
        `exclude` are left out (e.g. files another worker is changing right now)."""
        with self._lock:
            outs = self.outlines()
            ranked = graphmod.rank(outs, self.graph(), focus, text)
            hidden = frozenset(exclude)
            if hidden:
                ranked = [rf for rf in ranked if rf.path not in hidden]
            return render_ranked(ranked, outs, budget_tokens)

    def skeleton(self, path: str) -> str:
        """One mapped file's definitions with line numbers; KeyError names an unknown path."""
        with self._lock:
            outs = self.outlines()
            if path not in outs:
                raise KeyError(f"{path} is not in the repository map of {self.root}")
            return skeleton(path, outs[path])

    def entries(self) -> dict[str, FileEntry]:
        with self._lock:
            self._ensure()
            return dict(self._entries)

    def symbols_named(self, names: Iterable[str]) -> dict[str, list[str]]:
        """name -> files defining it, for the names asked about."""
        wanted = set(names)
        found: dict[str, list[str]] = {n: [] for n in wanted}
        for path, out in self.outlines().items():
            for s in out.symbols:
                if s.name in wanted:
                    found[s.name].append(path)
        return found
