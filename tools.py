"""The tools layer's door: worker tools, the path sandbox, the command sandbox, git.

A Tier 3 worker acts on a workspace (the user's repository, or a ticket's worktree) only
through the six tools in ``TOOL_SPECS``, run by a :class:`Workspace`: paths are checked and
opened without ever following a symlink out of the root (``toolbox.paths``); shell commands
run inside bubblewrap with the root writable, the rest read-only, ``.clutch`` hidden, ``.git``
read-only, no network and no view of Clutch's processes (``toolbox.sandbox``), under the
settings' time limit and a cancel event (``toolbox.shell``). The code lives in the
``toolbox`` package; this module keeps the public names every other layer imports.

Threads: whichever calls (the engine's executor threads, the GUI for ``diff_preview``).
State: none at module level.
"""
from __future__ import annotations

from toolbox.errors import SandboxError, ToolError
from toolbox.git import GitRepo
from toolbox.preview import diff_preview
from toolbox.sandbox import NOT_FOUND_MESSAGE, SANDBOX_MODES, SandboxStatus
from toolbox.shell import clamp_timeout
from toolbox.specs import TOOL_SPECS, ToolResult, ToolSpec, tool_spec
from toolbox.repomap import RepoMap, failure_files, project_documents, ticket_files
from toolbox.workspace import Workspace
from toolbox.worktrees import TrackBranches, drain_pool
from toolbox.worktrees_model import (ConflictSide, GitRunner, MergeResult, TrackBranch, WorktreeError,
                                     WorktreeInfo)

__all__ = (
    "SandboxError", "ToolError", "ToolSpec", "TOOL_SPECS", "tool_spec", "ToolResult",
    "Workspace", "diff_preview", "GitRepo", "SandboxStatus", "SANDBOX_MODES", "NOT_FOUND_MESSAGE",
    "clamp_timeout", "TrackBranches", "TrackBranch", "MergeResult", "ConflictSide", "WorktreeInfo",
    "WorktreeError", "GitRunner", "drain_pool", "RepoMap", "project_documents", "ticket_files",
    "failure_files",
)
