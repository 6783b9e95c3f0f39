"""One Clutch per workspace: an exclusive `flock` on `<workspace>/.clutch/clutch.lock`, held
for the life of the process that runs the engine (the app, `clutch run`, `clutch serve`).

Two runs on one workspace made duplicate tracks and ran reopened tickets twice (issue 15,
point 6). The second one now stops at once with `WorkspaceBusy`, whose message names the
holder's pid, what it runs, when it started and its API address (from `.clutch/api.json` when
that file is the holder's). Reading (`clutch tracks`) takes no lock.

The kernel releases a flock when its holder dies, however it dies (`kill -9` included), so a
lock left by a killed process is simply taken over; the pid written in the file is only there
for the message. The descriptor is opened close-on-exec, so no command a worker starts (and no
process it leaves behind) inherits the lock.

Threads: acquire and release run on the caller's thread (cli.py's main thread). State it owns:
the open lock file descriptor, kept until `release()` or the process ends.
"""
from __future__ import annotations

import datetime
import json
import os
import sys
from pathlib import Path
from typing import Any

from store.errors import StoreError

LOCK_FILE = "clutch.lock"


class WorkspaceBusy(StoreError):
    """Another Clutch holds this workspace. `holder` is what it wrote about itself."""

    def __init__(self, message: str, holder: dict[str, Any]):
        super().__init__(message)
        self.holder = holder


def lock_path(workspace: str | os.PathLike) -> Path:
    return Path(workspace) / ".clutch" / LOCK_FILE


class WorkspaceLock:
    """`WorkspaceLock(ws).acquire("clutch run")`; hold it (keep the object) while the engine
    runs; `release()` or process exit ends it. Also a context manager."""

    def __init__(self, workspace: str | os.PathLike):
        self.workspace = Path(workspace)
        self.path = lock_path(workspace)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, command: str) -> "WorkspaceLock":
        """Take the lock or raise WorkspaceBusy (another process holds it) or StoreError (the
        lock file cannot be made). `command` names this process in the other's message."""
        if self._fd is not None:
            return self
        if sys.platform == "win32":    # pragma: no cover - Clutch runs on Linux and macOS
            raise StoreError("the workspace lock needs fcntl (Linux or macOS)")
        import fcntl
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise StoreError(f"cannot create the workspace lock {self.path}: {e}") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = read_holder(self.workspace)
            raise WorkspaceBusy(busy_message(self.workspace, holder), holder) from None
        except OSError as e:
            os.close(fd)
            raise StoreError(f"cannot lock the workspace ({self.path}): {e}") from e
        info = {"pid": os.getpid(), "command": command,
                "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                "process_start": _process_start(os.getpid())}
        try:
            data = (json.dumps(info) + "\n").encode("utf-8")
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0)
        except OSError as e:
            os.close(fd)
            raise StoreError(f"cannot write the workspace lock {self.path}: {e}") from e
        self._fd = fd
        return self

    def release(self) -> None:
        """Give the workspace back (the file stays; its content describes the last holder)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)        # closing the only descriptor releases the flock

    def __enter__(self) -> "WorkspaceLock":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def read_holder(workspace: str | os.PathLike) -> dict[str, Any]:
    """What the lock's holder wrote about itself ({} while it is still writing), plus its
    API address when `.clutch/api.json` belongs to the same pid."""
    holder: dict[str, Any] = {}
    try:
        raw = lock_path(workspace).read_text(encoding="utf-8")
        obj = json.loads(raw) if raw.strip() else {}
        if isinstance(obj, dict):
            holder = obj
    except (OSError, ValueError):
        holder = {}      # unreadable or half-written: the message says the pid is unknown
    api: Any = None
    try:
        api = json.loads((Path(workspace) / ".clutch" / "api.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        api = None       # no API running (or not readable): the message says so
    if isinstance(api, dict) and api.get("pid") == holder.get("pid") and api.get("url"):
        holder["api_url"] = api["url"]
    return holder


def busy_message(workspace: str | os.PathLike, holder: dict[str, Any]) -> str:
    who = f"pid {holder['pid']}" if holder.get("pid") else "a process still starting (no pid yet)"
    about = [f"`{holder['command']}`"] if holder.get("command") else []
    if holder.get("started"):
        about.append(f"started {holder['started']}")
    if about:
        who += f" ({', '.join(about)})"
    api = (f"its API is at {holder['api_url']} (token in .clutch/api.json)"
           if holder.get("api_url") else "it serves no API")
    return (f"another Clutch is already running on {workspace}: {who}; {api}. One Clutch per "
            f"workspace: use that one or stop it first (`clutch tracks` still reads the "
            f"workspace).")


def _process_start(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc/<pid>/stat field 22): with
    the pid, it names one process even after the pid is reused. None where there is no /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None
