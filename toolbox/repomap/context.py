"""What goes into each tier's context besides the map: the project's own documents, a ticket's
files (in full when small, as skeletons otherwise), the files a failure touches.

Threads: any (reads files; a `RepoMap` locks itself). State: none.

These return plain path -> text mappings; `prompts.tier*_sections` turns them into labelled
sections with token counts. Nothing here raises on a missing file: a named file that does not
exist is reported in `missing` so the prompt can say so instead of telling a worker to read it.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from toolbox.repomap.mapper import RepoMap
from toolbox.repomap.outline import language_of
from toolbox.repomap.render import estimate_tokens

# In the order a planner should read them: what the product is, how it is built, how work goes.
PROJECT_DOCUMENTS = ("conductor/product.md", "conductor/product-guidelines.md",
                     "conductor/tech-stack.md", "conductor/workflow.md",
                     "README.md", "README.rst", "README.txt", "README")
DOCUMENT_TOKEN_LIMIT = 3000
FULL_TEXT_TOKEN_LIMIT = 2000


def _read_text(path: Path, limit_tokens: int) -> str | None:
    try:
        data = path.read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None
    text = data.decode("utf-8", "replace")
    if estimate_tokens(text) > limit_tokens:
        cut = limit_tokens * 4
        text = text[:cut] + f"\n[… cut: {len(text) - cut} more characters in {path.name}]\n"
    return text


def project_documents(root: str | Path, limit_tokens: int = DOCUMENT_TOKEN_LIMIT
                      ) -> dict[str, str]:
    """The project's own documents that exist (Conductor's product, tech stack and workflow,
    the README), path -> text, each cut to limit_tokens. Only the first README form found."""
    root = Path(root).resolve()
    out: dict[str, str] = {}
    for rel in PROJECT_DOCUMENTS:
        if rel.startswith("README") and any(k.startswith("README") for k in out):
            continue
        path = root / rel
        if path.is_symlink() and not path.resolve().is_relative_to(root):
            continue            # never bring a file from outside the workspace into a prompt
        text = _read_text(path, limit_tokens)
        if text is not None and text.strip():
            out[rel] = text
    return out


@dataclass
class TicketFiles:
    full: dict[str, str] = field(default_factory=dict)        # path -> whole text
    skeletons: dict[str, str] = field(default_factory=dict)   # path -> definitions
    missing: list[str] = field(default_factory=list)          # named but not in the workspace
    binary: list[str] = field(default_factory=list)           # there, but not text: not shown


def ticket_files(repomap: RepoMap, target_files: Sequence[str], context_files: Sequence[str],
                 full_limit_tokens: int = FULL_TEXT_TOKEN_LIMIT) -> TicketFiles:
    """A worker's files: target files in full when under full_limit_tokens (else their
    skeleton), code context files as skeletons, other context files (documents) in full, cut
    to the limit; files that do not exist are listed as missing (a target file may be new)."""
    outs = repomap.outlines()
    binaries = {p for p, e in repomap.entries().items() if e.binary}
    res = TicketFiles()
    for rel in dict.fromkeys([*target_files, *context_files]):
        if rel in binaries:
            res.binary.append(rel)
    for rel in dict.fromkeys(target_files):
        if rel in binaries:
            continue
        if rel not in outs:
            res.missing.append(rel)
            continue
        text = _read_text(repomap.root / rel, full_limit_tokens)
        if text is not None and "[… cut:" not in text:
            res.full[rel] = text
        else:
            res.skeletons[rel] = repomap.skeleton(rel)
    for rel in dict.fromkeys(context_files):
        if rel in res.full or rel in res.skeletons or rel in binaries:
            continue
        if rel not in outs:
            res.missing.append(rel)
        elif language_of(rel) is None:      # a document or data file has no skeleton: its text
            text = _read_text(repomap.root / rel, full_limit_tokens)
            if text is not None:
                res.full[rel] = text
        else:
            res.skeletons[rel] = repomap.skeleton(rel)
    return res


_TRACE_PATH = re.compile(r"(?:File \")?(/?(?:[\w.\-]+/)*[\w.\-]+\.[A-Za-z]{1,5})(?:\"|:| line)")


def failure_files(repomap: RepoMap, output: str, ticket_targets: Sequence[str] = (),
                  limit_tokens: int = FULL_TEXT_TOKEN_LIMIT) -> dict[str, str]:
    """The files a failure touches: those its output names (tracebacks, `path:line:` messages,
    absolute paths inside the workspace), then the ticket's target files; path -> text."""
    outs = repomap.outlines()
    root = str(repomap.root) + "/"
    named: dict[str, None] = {}
    for m in _TRACE_PATH.finditer(output or ""):
        p = m.group(1)
        if p.startswith(root):
            p = p[len(root):]
        elif p.startswith("/"):
            continue
        if p in outs:
            named[p] = None
    for p in repomap.mentioned_files(output or ""):
        named.setdefault(p, None)
    for p in ticket_targets:
        if p in outs:
            named.setdefault(p, None)
    result: dict[str, str] = {}
    for p in named:
        text = _read_text(repomap.root / p, limit_tokens)
        if text is not None:
            result[p] = text
    return result
