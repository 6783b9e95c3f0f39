"""run_shell: start a command (sandboxed by bubblewrap unless the settings chose "none"),
collect its output, enforce the time limit, honour a cancel event, and kill its whole
process tree when it ends, times out or is cancelled.

- The time limit is the workspace's setting; a model may ask for less, never more (a longer
  request is cut to the setting, and the result says so). The result carries ``timeout_s``.
- ``cancel`` (a ``threading.Event``): once set, the command's whole tree is killed within
  ``_POLL_S`` plus the kill (well under a second), and the result says it was cancelled.
- The command runs at niceness ``WORKER_NICENESS`` (through ``nice``, inherited by all it
  starts), below the app's own threads.
- Nothing outlives the command. Under bwrap the command runs in its own PID namespace whose
  init dies with bwrap (``--die-with-parent``), so the kernel kills everything in it, however
  it detached (``nohup``, ``&``, ``setsid``, double fork). Under ``sandbox = "none"`` the
  command's process group is killed when the shell exits; a process that called ``setsid``
  leaves that group and survives (a documented limit of running unsandboxed).

Threads: the calling executor thread, plus one short-lived daemon reader thread per command
that drains the output pipe into an :class:`_OutputBuffer` (owned by that command alone).
"""
from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import threading
import time
from typing import TYPE_CHECKING

from toolbox.errors import ToolError
from toolbox.sandbox import SANDBOX_HOME, bwrap_argv, clean_env
from toolbox.specs import ToolResult

if TYPE_CHECKING:
    from toolbox.workspace import Workspace

_POLL_S = 0.05
_DRAIN_AFTER_KILL_S = 1.0
# Workers' commands (their tests, builds, verify commands) run at this niceness: when eight of
# them saturate the cores, the window, the engine and its git work (which decides when the
# next ticket may start) still get the CPU first. On an idle machine it changes nothing.
WORKER_NICENESS = 10


class _OutputBuffer:
    """Keeps the first and last ``cap`` bytes of a stream and counts the rest."""

    def __init__(self, cap: int):
        self.cap = cap
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0
        self.dropped = 0  # bytes between head and tail that were not kept

    def drain(self, stream) -> None:
        with stream:
            self._drain(stream.fileno())

    def _drain(self, fileno: int) -> None:
        while True:
            chunk = os.read(fileno, 65536)
            if not chunk:
                return
            self.total += len(chunk)
            room = self.cap - len(self.head)
            if room > 0:
                self.head += chunk[:room]
                chunk = chunk[room:]
            if chunk:
                self.tail += chunk
                excess = len(self.tail) - self.cap
                if excess > 0:
                    del self.tail[:excess]
                    self.dropped += excess

    def text(self, limit: int) -> str:
        keep_head = limit // 2
        keep_tail = limit - keep_head
        head, tail, dropped = bytes(self.head), bytes(self.tail), self.dropped
        if dropped == 0:
            text = (head + tail).decode("utf-8", errors="replace")
            if len(text) > limit:
                cut = len(text) - keep_head - keep_tail
                text = (text[:keep_head] + f"\n[... {cut} characters cut from the middle of the "
                        f"output ({len(text)} characters in all; the limit is {limit}) ...]\n"
                        + text[-keep_tail:])
        else:
            first = head.decode("utf-8", errors="replace")[:keep_head]
            last = tail.decode("utf-8", errors="replace")[-keep_tail:]
            shown = len(first.encode("utf-8", "replace")) + len(last.encode("utf-8", "replace"))
            text = (first + f"\n[... about {max(0, self.total - shown)} bytes cut from the middle "
                    f"of the output ({self.total} bytes in all; the limit is {limit} characters) ...]\n"
                    + last)
        # NUL bytes would end the text early in C-string consumers (the GUI): make them visible.
        return text.replace("\x00", "\ufffd")



def clamp_timeout(requested: object, setting: float) -> tuple[float, str]:
    """(the limit a command runs under, a note when the request was cut to the setting)."""
    if requested is None:
        return setting, ""
    if isinstance(requested, bool) or not isinstance(requested, (int, float)) \
            or not requested > 0 or requested != requested:
        raise ToolError(f"run_shell: timeout must be a positive number of seconds, got {requested!r}")
    if requested > setting:
        return setting, (f"[the command asked for a timeout of {requested:g}s; the workspace's "
                         f"limit is {setting:g}s, so it ran under {setting:g}s]")
    return float(requested), ""


def run_shell(ws: Workspace, command: str, cwd: str = ".", timeout: float | None = None,
              cancel: threading.Event | None = None) -> ToolResult:
    """Run ``command`` with bash in ``cwd`` (inside the workspace) under the command sandbox.

    Raises ToolError for bad arguments, and when the sandbox cannot run (bwrap missing or
    failing and the settings did not choose "none"): never runs a command unsandboxed
    unless told to."""
    if not isinstance(command, str) or not command.strip():
        raise ToolError("run_shell: command is empty")
    if "\x00" in command:
        raise ToolError("run_shell: command contains a NUL byte")
    limit_s, note = clamp_timeout(timeout, ws.shell_timeout_s)
    if cancel is not None and not hasattr(cancel, "is_set"):
        raise TypeError(f"run_shell: cancel must be a threading.Event, got {type(cancel).__name__}")
    status = ws.sandbox_status()
    if not status.ready:
        raise ToolError(f"run_shell refused: {status.message}")
    bash = shutil.which("bash")
    if bash is None:
        raise ToolError("run_shell needs bash, and bash was not found on PATH")
    if cancel is not None and cancel.is_set():
        return ToolResult(ok=False, error="command was cancelled before it started",
                          timeout_s=limit_s)
    fd, st, parts = ws._open_existing(cwd, what="cwd")
    try:
        if not stat.S_ISDIR(st.st_mode):
            raise ToolError(f"cwd {cwd!r} is not a directory")
        if status.mode == "bwrap":
            # Inside the sandbox everything but the root is read-only, so a cwd swapped for a
            # symlink after the check could only lead somewhere read-only or hidden.
            argv = bwrap_argv(status.bwrap, ws.root, ws.root.joinpath(*parts),
                              network=ws.sandbox_network, hide=ws.sandbox_hide,
                              disable_userns=status.disable_userns) + [bash, "-c", command]
            env, proc_cwd = clean_env(SANDBOX_HOME, "/tmp"), "/"
        else:
            argv, env = [bash, "-c", command], clean_env(os.environ.get("HOME", "/"))
            # chdir happens in the child before exec, through the checked fd: no path lookup.
            proc_cwd = f"/proc/self/fd/{fd}"
            if not os.path.isdir(proc_cwd):
                proc_cwd = str(ws.root.joinpath(*parts))
        nice = shutil.which("nice")
        if nice is not None:     # see WORKER_NICENESS
            argv = [nice, "-n", str(WORKER_NICENESS), *argv]
        try:
            proc = subprocess.Popen(argv, cwd=proc_cwd, env=env, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        except OSError as e:
            raise ToolError(f"run_shell could not start {argv[0]}: {e.strerror}") from e
    finally:
        os.close(fd)
    result = _collect(proc, limit_s, ws.output_limit, cancel)
    result.timeout_s = limit_s
    if note:
        result.output = (result.output + ("\n" if result.output and not result.output.endswith("\n")
                                          else "") + note)
    return result


def _exited(pid: int) -> bool:
    """True once ``pid`` has exited, without reaping it (so its pid, the group id, stays ours)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the command's process group. Under bwrap that is bwrap itself, whose death
    takes the PID namespace and everything in it down. Call it before reaping ``proc``."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # the whole group had already exited: nothing left to kill


def _collect(proc: subprocess.Popen, limit_s: float, output_limit: int,
             cancel: threading.Event | None) -> ToolResult:
    buf = _OutputBuffer(output_limit * 4)  # bytes kept at each end (4 bytes per character at most)
    assert proc.stdout is not None
    reader = threading.Thread(target=buf.drain, args=(proc.stdout,), daemon=True,
                              name="run_shell-output")
    started = time.monotonic()
    deadline = started + limit_s
    reader.start()
    ended = ""  # "timeout" | "cancel" | ""
    nap = 0.001  # the output closes a moment before the process can be waited for
    while not _exited(proc.pid):
        if cancel is not None and cancel.is_set():
            ended = "cancel"
            break
        if time.monotonic() >= deadline:
            ended = "timeout"
            break
        if reader.is_alive():
            reader.join(_POLL_S)
        else:  # the command closed its output (or ended): look again soon, then less often
            time.sleep(nap)
            nap = min(_POLL_S, nap * 2)
    # The shell is not reaped yet, so its pid (the group id) cannot have been reused: kill
    # what is left of the group (everything, on timeout or cancel; background processes the
    # command left behind, when it ended by itself).
    _kill_tree(proc)
    reader.join(_DRAIN_AFTER_KILL_S)
    code = proc.wait()
    elapsed = time.monotonic() - started
    output = buf.text(output_limit)
    if reader.is_alive():
        # A process that left the command's process group (setsid, unsandboxed only) still
        # holds the pipe; the reader ends (and closes it) when that process exits.
        output += ("\n[a process that left the command's process group still holds its "
                   "output open; output after this point is not shown]")
    if ended == "timeout":
        return ToolResult(ok=False, output=output, exit_code=code,
                          error=f"command timed out after {limit_s:g}s; its whole process tree was killed")
    if ended == "cancel":
        return ToolResult(ok=False, output=output, exit_code=code,
                          error=(f"command was cancelled after {elapsed:.1f}s; its whole process "
                                 f"tree was killed"))
    if code == 0:
        return ToolResult(ok=True, output=output, exit_code=0)
    if code < 0:
        return ToolResult(ok=False, output=output, exit_code=code,
                          error=f"command was killed by signal {-code}")
    return ToolResult(ok=False, output=output, exit_code=code, error=f"command exited with code {code}")
