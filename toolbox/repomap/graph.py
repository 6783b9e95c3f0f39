"""The import graph between mapped files, and the ranking of files for a task.

Threads: any (pure functions over the entries they are given). State: none.

Ranking follows Aider's repository map in spirit, not in code: what the task names comes first
(files named in the text or given as focus, then files defining identifiers the text mentions),
then the files those import and the files importing them, nearest first (a breadth-first walk
of the import graph, both directions), then the rest by how many files import them (a cheap
stand-in for PageRank's "central files") and by path.
"""
from __future__ import annotations

import posixpath
import re
from collections import defaultdict, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from toolbox.repomap.outline import Outline

JS_EXTS = (".ts", ".tsx", ".js", ".jsx", ".mjs", ".cjs", ".mts", ".cts")
SOURCE_ROOTS = ("src/", "lib/", "python/")


@dataclass(frozen=True, slots=True)
class RankedFile:
    path: str
    reason: str


@dataclass(frozen=True, slots=True)
class ImportGraph:
    imports: Mapping[str, tuple[str, ...]]      # file -> files it imports
    importers: Mapping[str, tuple[str, ...]]    # file -> files importing it


def _module_index(paths: Iterable[str]) -> dict[str, str]:
    """Dotted Python module name -> file, also with a leading src/ or lib/ dropped."""
    index: dict[str, str] = {}
    for p in paths:
        if not p.endswith((".py", ".pyi")):
            continue
        stem = p[:-3] if p.endswith(".py") else p[:-4]
        if stem.endswith("/__init__"):
            stem = stem[:-9]
        names = [stem.replace("/", ".")]
        for root in SOURCE_ROOTS:
            if p.startswith(root):
                names.append(stem[len(root):].replace("/", "."))
        for n in names:
            if n and (n not in index or p.endswith(".py")):
                index.setdefault(n, p)
    return index


def _resolve_python(src: str, imp: str, index: Mapping[str, str]) -> str | None:
    name, _, member = imp.partition(":")
    if name.startswith("."):
        level = len(name) - len(name.lstrip("."))
        pkg = posixpath.dirname(src)
        for _ in range(level - 1):
            pkg = posixpath.dirname(pkg)
        rest = name[level:]
        base = pkg.replace("/", ".") if pkg else ""
        name = ".".join(x for x in (base, rest) if x)
        for root in SOURCE_ROOTS:
            r = root[:-1]
            if name.startswith(r + "."):
                name = name[len(r) + 1:]
    if not name:
        return None
    candidates = [f"{name}.{member}", name] if member else [name]
    src_dir = posixpath.dirname(src).replace("/", ".")
    for cand in candidates:
        if src_dir and f"{src_dir}.{cand}" in index:   # a sibling module (tests/helpers.py)
            return index[f"{src_dir}.{cand}"]
        if cand in index:
            return index[cand]
    return None


def _resolve_other(src: str, imp: str, files: set[str], by_suffix: Mapping[str, list[str]]
                   ) -> str | None:
    if imp.startswith("mod:"):   # rust `mod x;`
        d = posixpath.dirname(src)
        for cand in (posixpath.join(d, imp[4:] + ".rs"), posixpath.join(d, imp[4:], "mod.rs")):
            if cand in files:
                return cand
        return None
    if imp.startswith("use:"):   # rust `use crate::a::b::C`
        parts = [p for p in re.split(r"::", imp[4:].split("{")[0]) if p and p not in
                 ("crate", "self", "super")]
        for n in range(len(parts), 0, -1):
            stem = "/".join(parts[:n])
            for cand in (f"src/{stem}.rs", f"src/{stem}/mod.rs"):
                if cand in files:
                    return cand
        return None
    if imp.startswith("."):      # JS/TS relative import or C include next to the file
        base = posixpath.normpath(posixpath.join(posixpath.dirname(src), imp))
        if base in files:
            return base
        for ext in JS_EXTS:
            if base + ext in files:
                return base + ext
            if f"{base}/index{ext}" in files:
                return f"{base}/index{ext}"
        return None
    near = posixpath.normpath(posixpath.join(posixpath.dirname(src), imp))
    if near in files:            # #include "x.h" beside the file
        return near
    if "/" in imp or "." in imp: # Go package path, Java class, include path: match by suffix
        key = imp.replace(".", "/") if imp.count(".") > 1 and "/" not in imp else imp
        hits = by_suffix.get(key) or by_suffix.get(key + ".java")
        if hits:
            return hits[0]
    return None


def build_graph(outlines: Mapping[str, Outline]) -> ImportGraph:
    """Resolve every file's imports to files of the same map; unresolved ones (the standard
    library, third-party packages) are left out."""
    files = set(outlines)
    index = _module_index(files)
    by_suffix: dict[str, list[str]] = defaultdict(list)
    for p in files:
        if not p.endswith((".py", ".pyi")):
            parts = p.split("/")
            for i in range(1, min(len(parts), 4)):
                by_suffix["/".join(parts[-i - 1:])].append(p)     # a/b.h, pkg/x.java
            if p.endswith(".go"):
                by_suffix["/".join(parts[-3:-1])].append(p)       # go: .../pkg/name
                by_suffix[parts[-2] if len(parts) > 1 else ""].append(p)
    imports: dict[str, tuple[str, ...]] = {}
    importers: dict[str, list[str]] = defaultdict(list)
    for src, out in outlines.items():
        if not out.imports:
            continue
        py = src.endswith((".py", ".pyi"))
        found: dict[str, None] = {}
        for imp in out.imports:
            dst = (_resolve_python(src, imp, index) if py
                   else _resolve_other(src, imp, files, by_suffix))
            if dst and dst != src:
                found[dst] = None
        if found:
            imports[src] = tuple(found)
            for dst in found:
                importers[dst].append(src)
    return ImportGraph(imports, {k: tuple(v) for k, v in importers.items()})


_PATHLIKE = re.compile(r"[\w./\-]+")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{2,}")


def mentioned_files(text: str, paths: Iterable[str]) -> list[str]:
    """Files the text names, in the order it names them: an exact relative path ('src/a.py'),
    or a file name that is unique enough ('util.py' matches every util.py, up to three)."""
    if not text:
        return []
    pathset = set(paths)
    by_name: dict[str, list[str]] = defaultdict(list)
    for p in pathset:
        by_name[posixpath.basename(p)].append(p)
    out: dict[str, None] = {}
    for m in _PATHLIKE.finditer(text):
        tok = m.group(0).strip("./-") if not m.group(0).startswith("./") else m.group(0)[2:]
        tok = tok.rstrip(".")
        if not tok:
            continue
        if tok in pathset:
            out[tok] = None
        elif "." in tok and "/" not in tok and 0 < len(by_name.get(tok, ())) <= 3:
            for p in sorted(by_name[tok], key=lambda p: (p.count("/"), p)):
                out[p] = None
        elif "/" in tok:
            hits = [p for p in by_name.get(posixpath.basename(tok), ()) if p.endswith("/" + tok)]
            if len(hits) == 1:
                out[hits[0]] = None
    return list(out)


def mentioned_identifiers(text: str) -> list[str]:
    return list(dict.fromkeys(_IDENT.findall(text or "")))


def rank(outlines: Mapping[str, Outline], graph: ImportGraph, focus: Sequence[str] = (),
         text: str = "") -> list[RankedFile]:
    """Every mapped file once, most relevant to the task first (see the module docstring)."""
    order: dict[str, str] = {}
    for p in focus:
        if p in outlines:
            order.setdefault(p, "named by the task")
    for p in mentioned_files(text, outlines):
        order.setdefault(p, "named by the task")
    idents = set(mentioned_identifiers(text))
    if idents:
        definers: dict[str, list[str]] = defaultdict(list)
        for path, out in outlines.items():
            for s in out.symbols:
                if s.name in idents:
                    definers[s.name].append(path)
        for name in sorted(definers, key=lambda n: (len(definers[n]), n)):
            if len(definers[name]) <= 5:
                for p in sorted(definers[name]):
                    order.setdefault(p, f"defines {name}")
    seeds = list(order)
    seen = set(seeds)
    queue = deque((p, 0) for p in seeds)
    while queue:
        node, dist = queue.popleft()
        if dist >= 3:
            continue
        nxt = ([(d, f"imported by {node}") for d in graph.imports.get(node, ())]
               + [(s, f"imports {node}") for s in graph.importers.get(node, ())])
        nxt.sort(key=lambda t: (-len(graph.importers.get(t[0], ())), t[0]))
        for p, why in nxt:
            if p not in seen:
                seen.add(p)
                order[p] = why
                queue.append((p, dist + 1))
    rest = sorted((p for p in outlines if p not in seen),
                  key=lambda p: (-len(graph.importers.get(p, ())), not outlines[p].symbols,
                                 p.count("/"), p))
    ranked = [RankedFile(p, why) for p, why in order.items()]
    ranked.extend(RankedFile(p, "") for p in rest)
    return ranked
