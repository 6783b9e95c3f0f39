"""The repository map: each mapped file's definitions, ranked for a task, cut to a token budget.

Threads: any (a `RepoMap` locks itself). State: none at module level; a `RepoMap` owns its
entries and its cache file.

Used by the planners (Tier 1 and 2 see the map focused on what the epic or track names), the
worker spawn (a ticket's context files as skeletons, its target files in full when small) and
QA (the files a failure touches). See `toolbox.repomap.context` for those assemblies.
"""
from toolbox.repomap.context import (
    PROJECT_DOCUMENTS, failure_files, project_documents, ticket_files,
)
from toolbox.repomap.graph import ImportGraph, RankedFile, build_graph, mentioned_files, rank
from toolbox.repomap.listing import list_files, looks_binary
from toolbox.repomap.mapper import RefreshStats, RepoMap
from toolbox.repomap.scan import FileEntry
from toolbox.repomap.outline import Outline, Symbol, language_of, outline_python
from toolbox.repomap.render import estimate_tokens, render_ranked, skeleton

__all__ = [
    "PROJECT_DOCUMENTS", "FileEntry", "ImportGraph", "Outline", "RankedFile", "RefreshStats",
    "RepoMap", "Symbol", "build_graph", "estimate_tokens", "failure_files", "language_of",
    "list_files", "looks_binary", "mentioned_files", "outline_python", "project_documents",
    "rank", "render_ranked", "skeleton", "ticket_files",
]
