"""The Workspace facade: the root a worker acts in and the six tools, run by name.

A Tier 3 worker acts only through the tools in ``TOOL_SPECS``, run by :meth:`Workspace.execute`.
Paths go through the path sandbox (``toolbox.paths``); commands through the command sandbox
(``toolbox.sandbox``, bubblewrap) with the time limit of the settings and a cancel event.

Threads: any; a Workspace is shared by the engine's executor threads. State it owns: the
resolved root and its settings (immutable after construction), and the result of the sandbox
probe, computed once on first use under a lock and then read-only.
"""
from __future__ import annotations

import os
import pathlib
import threading
from typing import Iterable

from toolbox import files, search, shell
from toolbox.errors import SandboxError, ToolError
from toolbox.paths import PathWalker, display
from toolbox.sandbox import SANDBOX_MODES, SandboxStatus, probe
from toolbox.specs import ToolResult, tool_spec, validate_args


class Workspace(PathWalker):
    """The workspace root and the tools that act inside it. Safe to share between threads.

    ``root`` is where the tools act (the user's repository today, a ticket's git worktree
    later). ``sandbox`` is the settings' ``sandbox`` ("bwrap" or "none"), ``sandbox_network``
    whether commands may use the network, ``sandbox_hide`` more paths commands must not see
    (the user's ``.clutch`` when the root is a worktree elsewhere); ``root/.clutch`` is
    always hidden. ``shell_timeout_s`` is the most a command may run. ``probed``: the status
    another Workspace's probe found with the same ``sandbox`` and ``sandbox_network`` (what
    bwrap can do does not depend on the root), so a ticket's worktree does not start bwrap
    once more to learn it."""

    def __init__(self, root: str | os.PathLike, *, shell_timeout_s: float = 60.0,
                 output_limit: int = 20_000, sandbox: str = "bwrap",
                 sandbox_network: bool = False,
                 sandbox_hide: Iterable[str | os.PathLike] = (),
                 probed: SandboxStatus | None = None):
        super().__init__(root)
        if isinstance(shell_timeout_s, bool) or not isinstance(shell_timeout_s, (int, float)) \
                or not shell_timeout_s > 0:
            raise ValueError(f"shell_timeout_s must be a positive number, got {shell_timeout_s!r}")
        if isinstance(output_limit, bool) or not isinstance(output_limit, int) or output_limit < 200:
            raise ValueError(f"output_limit must be an integer of at least 200, got {output_limit!r}")
        if sandbox not in SANDBOX_MODES:
            raise ValueError(f"sandbox must be one of {', '.join(map(repr, SANDBOX_MODES))}, "
                             f"got {sandbox!r}")
        if not isinstance(sandbox_network, bool):
            raise ValueError(f"sandbox_network must be true or false, got {sandbox_network!r}")
        hide: list[pathlib.Path] = []
        for p in ([sandbox_hide] if isinstance(sandbox_hide, (str, os.PathLike)) else sandbox_hide):
            path = pathlib.Path(p)
            if not path.is_absolute():
                raise ValueError(f"sandbox_hide takes absolute paths, got {os.fspath(p)!r}")
            hide.append(path)
        self.shell_timeout_s = float(shell_timeout_s)
        self.output_limit = output_limit
        self.sandbox = sandbox
        self.sandbox_network = sandbox_network
        self.sandbox_hide: tuple[pathlib.Path, ...] = tuple(hide)
        if probed is not None and (not isinstance(probed, SandboxStatus)
                                   or probed.mode != sandbox):
            raise ValueError(f"probed must be the SandboxStatus of a {sandbox!r} sandbox, got "
                             f"{probed!r}")
        self._status: SandboxStatus | None = probed
        self._status_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Workspace({str(self.root)!r})"

    # -- the command sandbox ------------------------------------------------------------------

    def sandbox_status(self) -> SandboxStatus:
        """Whether commands can run, and a line saying how (or why not). The first call probes
        bwrap (tens of milliseconds); later calls return the cached result."""
        with self._status_lock:
            if self._status is None:
                self._status = probe(self.sandbox, network=self.sandbox_network)
            return self._status

    # -- the tools ----------------------------------------------------------------------------

    def read_file(self, path: str, offset: int = 0, limit: int = 2000) -> str:
        return files.read_file(self, path, offset, limit)

    def list_dir(self, path: str = ".") -> str:
        return files.list_dir(self, path)

    def search_files(self, pattern: str, path: str = ".", glob: str = "*") -> str:
        return search.search_files(self, pattern, path, glob)

    def write_file(self, path: str, content: str) -> str:
        return files.write_file(self, path, content)

    def edit_file(self, path: str, old: str, new: str) -> str:
        return files.edit_file(self, path, old, new)

    def run_shell(self, command: str, cwd: str = ".", timeout: float | None = None,
                  cancel: threading.Event | None = None) -> ToolResult:
        """Run ``command`` in the command sandbox. ``timeout`` may shorten the workspace's
        limit, never lengthen it; setting ``cancel`` kills the command's whole process tree."""
        return shell.run_shell(self, command, cwd, timeout, cancel)

    # -- dispatch -----------------------------------------------------------------------------

    def execute(self, name: str, args: dict, *, cancel: threading.Event | None = None) -> ToolResult:
        """Run a tool by name. Tool-level failures come back as ``ok=False`` with a message.
        ``cancel`` reaches run_shell (the other tools finish in bounded time)."""
        try:
            spec = tool_spec(name)
        except KeyError as e:
            return ToolResult(ok=False, error=e.args[0])
        try:
            clean = validate_args(spec, args)
            if name == "run_shell":
                return self.run_shell(**clean, cancel=cancel)
            method = getattr(self, name)
            return ToolResult(ok=True, output=method(**clean))
        except SandboxError as e:
            return ToolResult(ok=False, error=f"refused: {e}")
        except ToolError as e:
            return ToolResult(ok=False, error=str(e))
        except OSError as e:
            where = f" ({display(str(e.filename))})" if e.filename is not None else ""
            return ToolResult(ok=False, error=f"{name} failed: {e.strerror or e}{where}")
