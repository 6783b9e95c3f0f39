"""The exceptions of the tools layer. Pure definitions: no threads, no state."""
from __future__ import annotations


class SandboxError(ValueError):
    """A path or cwd that escapes the workspace, or is otherwise refused."""


class ToolError(Exception):
    """A tool-level failure other than the sandbox (file missing, no match, ...)."""


class NotFound(ToolError):
    """The file or directory a tool was asked about does not exist."""
