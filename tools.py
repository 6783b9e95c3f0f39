"""The worker tools and the workspace sandbox.

A Tier 3 worker acts on the user's repository only through the six tools in ``TOOL_SPECS``,
run by a :class:`Workspace`. Every path a tool is given (and ``run_shell``'s ``cwd``) must
stay inside the workspace root.

How a path is checked and opened
--------------------------------
1. *Lexical check* (:func:`_check_path`): the path must be a non-empty, relative, valid UTF-8
   string without NUL bytes, backslashes, drive letters, a leading ``~``, or any ``..``
   component; no component longer than 255 bytes and the whole no longer than 4096 bytes.
   For writes, no component may name a ``.git`` directory (compared case-insensitively, and
   ignoring the tricks that make other file systems treat a name as ``.git``).
2. *Walk* (:meth:`Workspace._locate`): the path is never handed to the kernel as a whole.
   Starting from a file descriptor of the root, each directory component is opened with
   ``os.open(name, O_DIRECTORY | O_NOFOLLOW, dir_fd=parent)`` and the final component with
   ``O_NOFOLLOW``. The kernel therefore never follows a symlink for us: if a component is
   swapped for a symlink between our check and our use, the open fails (``ELOOP``) and the
   walk starts again, meeting the symlink as such.

Symlink policy
--------------
Symlinks that stay inside the workspace are followed, safely: when the walk meets a symlink
it reads the link (``readlink`` relative to the directory fd), computes the target path
itself (relative targets against the real directory holding the link, absolute targets
against the resolved workspace root), refuses it with :class:`SandboxError` if it leaves the
workspace (or, for a write, leads into ``.git``), and otherwise walks the resulting path
again from the root with the same ``O_NOFOLLOW`` opens. At most 40 links are followed for
one path. ``search_files`` never follows symlinks while it walks a tree (it reports how many
it passed by). Writes replace the file atomically (a temporary file in the same directory,
then ``rename``), so a final component swapped for a symlink at the last moment is replaced
itself, never its target, and a hard link to a file elsewhere is never written through.

Known limits (documented, not silently assumed away): a hard link inside the workspace to a
file outside it can be read (creating one needs access to that file already); a directory
moved out of the workspace by another process while a tool holds it open is still used for
that one call; on systems without ``/proc/self/fd`` ``run_shell`` passes the checked
directory's path to the child, which leaves a short race window.
"""
from __future__ import annotations

import difflib
import errno
import fnmatch
import os
import pathlib
import re
import secrets
import shutil
import signal
import stat
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Any

__all__ = (
    "SandboxError", "ToolError", "ToolSpec", "TOOL_SPECS", "tool_spec", "ToolResult",
    "Workspace", "diff_preview", "GitRepo",
)

MAX_PATH_BYTES = 4096
MAX_NAME_BYTES = 255
_MAX_SYMLINK_HOPS = 40
_MAX_RACE_RETRIES = 8
_BINARY_SNIFF_BYTES = 8192
_SEARCH_MAX_MATCHES = 200
_SEARCH_MAX_FILE_BYTES = 5 * 1024 * 1024
_SEARCH_MAX_FILES = 50_000
_SEARCH_MAX_DEPTH = 200
_SEARCH_LINE_CHARS = 300
_MAX_SHELL_TIMEOUT_S = 24 * 3600.0
_SECRET_ENV_VARS = ("GEMINI_API_KEY", "GOOGLE_API_KEY")
# Code points that HFS+ ignores in names, so ".g\u200cit" is ".git" there (git guards the same).
_HFS_IGNORABLE = frozenset(
    [0x200C, 0x200D, 0x200E, 0x200F, 0x202A, 0x202B, 0x202C, 0x202D, 0x202E,
     0x206A, 0x206B, 0x206C, 0x206D, 0x206E, 0x206F, 0xFEFF])
_DRIVE_RE = re.compile(r"^[A-Za-z]:")
_SHA_RE = re.compile(r"^[0-9a-fA-F]{4,40}$")


class SandboxError(ValueError):
    """A path or cwd that escapes the workspace, or is otherwise refused."""


class ToolError(Exception):
    """A tool-level failure other than the sandbox (file missing, no match, ...)."""


class _NotFound(ToolError):
    """The file or directory a tool was asked about does not exist."""


# ---------------------------------------------------------------------------------------------
# Tool specs
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ToolSpec:
    """One tool as offered to a model. ``parameters`` is a JSON schema; treat it as read-only."""
    name: str
    description: str
    parameters: dict = field(hash=False)
    kind: str  # "read" | "write" | "shell"

    @property
    def mutating(self) -> bool:
        return self.kind != "read"


def _schema(properties: dict, required: list[str]) -> dict:
    return {"type": "object", "properties": properties, "required": required}


_PATH_DOC = "Path relative to the workspace root, with '/' between components (no '..', no absolute paths)."

TOOL_SPECS: tuple[ToolSpec, ...] = (
    ToolSpec(
        name="read_file",
        description=("Read a text file of the workspace. Returns the lines [offset, offset+limit) "
                     "exactly as they are in the file, with a note at the end when more lines follow."),
        parameters=_schema({
            "path": {"type": "string", "description": _PATH_DOC},
            "offset": {"type": "integer", "description": "First line to return, counted from 0 (default 0)."},
            "limit": {"type": "integer", "description": "Most lines to return (default 2000)."},
        }, ["path"]),
        kind="read",
    ),
    ToolSpec(
        name="list_dir",
        description=("List a directory of the workspace: one entry per line, sorted, directories "
                     "with a trailing '/', symlinks as 'name -> target'."),
        parameters=_schema({
            "path": {"type": "string", "description": _PATH_DOC + " Default '.', the workspace root."},
        }, []),
        kind="read",
    ),
    ToolSpec(
        name="search_files",
        description=("Search files for a Python regular expression. Returns 'file:line: text' lines "
                     "(at most 200). Binary files, symlinks and .git directories are not searched."),
        parameters=_schema({
            "pattern": {"type": "string", "description": "Python regular expression matched against each line."},
            "path": {"type": "string", "description": "File or directory to search. " + _PATH_DOC + " Default '.'."},
            "glob": {"type": "string", "description": ("Only files whose name matches this glob, e.g. '*.py' "
                                                       "(matched against the path from the workspace root if it "
                                                       "contains '/'). Default '*'.")},
        }, ["pattern"]),
        kind="read",
    ),
    ToolSpec(
        name="write_file",
        description=("Create or overwrite a file with the given content (parent directories are "
                     "created). Files inside .git cannot be written."),
        parameters=_schema({
            "path": {"type": "string", "description": _PATH_DOC},
            "content": {"type": "string", "description": "The complete new content of the file."},
        }, ["path", "content"]),
        kind="write",
    ),
    ToolSpec(
        name="edit_file",
        description=("Replace one exact occurrence of 'old' with 'new' in a file. 'old' must match "
                     "the file exactly once (whitespace included); add surrounding lines if it is ambiguous."),
        parameters=_schema({
            "path": {"type": "string", "description": _PATH_DOC},
            "old": {"type": "string", "description": "The exact text to replace; must occur exactly once."},
            "new": {"type": "string", "description": "The replacement text."},
        }, ["path", "old", "new"]),
        kind="write",
    ),
    ToolSpec(
        name="run_shell",
        description=("Run a bash command in the workspace. stdout and stderr are combined and clamped; "
                     "the result carries the exit code. The command is killed when it times out."),
        parameters=_schema({
            "command": {"type": "string", "description": "The bash script to run (bash -c)."},
            "cwd": {"type": "string", "description": "Directory to run in. " + _PATH_DOC + " Default '.'."},
            "timeout": {"type": "number", "description": "Seconds before the command is killed (default: the workspace's)."},
        }, ["command"]),
        kind="shell",
    ),
)


def tool_spec(name: str) -> ToolSpec:
    for spec in TOOL_SPECS:
        if spec.name == name:
            return spec
    known = ", ".join(s.name for s in TOOL_SPECS)
    raise KeyError(f"unknown tool {name!r}; the tools are: {known}")


@dataclass
class ToolResult:
    ok: bool
    output: str = ""
    error: str = ""
    exit_code: int | None = None  # run_shell only

    def to_dict(self) -> dict:
        d: dict[str, Any] = {"ok": self.ok, "output": self.output, "error": self.error}
        if self.exit_code is not None:
            d["exit_code"] = self.exit_code
        return d


# ---------------------------------------------------------------------------------------------
# Lexical path checks
# ---------------------------------------------------------------------------------------------

def _display(s: str) -> str:
    """A name as printable text, even if it came from the file system with undecodable bytes."""
    return s.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _is_git_name(name: str) -> bool:
    """True when ``name`` is, or a file system could take it for, ``.git``."""
    cleaned = "".join(ch for ch in name if ord(ch) not in _HFS_IGNORABLE).casefold().rstrip(" .")
    return cleaned in (".git", "git~1")


def _git_refusal(where: str) -> SandboxError:
    return SandboxError(f"{where!r} is inside a .git directory: workers may not write git's internal "
                        f"files; change the working tree instead and let Clutch commit")


def _check_path(path: object, *, what: str = "path", write: bool = False) -> list[str]:
    """Check a workspace-relative path lexically; return its components ('.' and '' dropped)."""
    if not isinstance(path, str):
        raise SandboxError(f"{what} must be a string, got {type(path).__name__}")
    if path == "":
        raise SandboxError(f"{what} is empty; use '.' for the workspace root")
    if "\x00" in path:
        raise SandboxError(f"{what} {path!r} contains a NUL byte, which no file name can hold")
    bad = next((c for c in path if ord(c) < 0x20 or ord(c) == 0x7F), None)
    if bad is not None:
        raise SandboxError(f"{what} {path!r} contains a control character ({bad!r}); file names "
                           f"with line breaks or control characters are refused, since they "
                           f"are almost always a mistake in the arguments")
    try:
        encoded = path.encode("utf-8")
    except UnicodeEncodeError:
        raise SandboxError(f"{what} {path!r} is not valid UTF-8 (it holds an undecodable byte or a "
                           f"lone surrogate); give the name as UTF-8 text") from None
    if len(encoded) > MAX_PATH_BYTES:
        raise SandboxError(f"{what} is too long ({len(encoded)} bytes; the limit is {MAX_PATH_BYTES})")
    if "\\" in path:
        raise SandboxError(f"{what} {path!r} contains a backslash: Windows-style paths are not "
                           f"supported; separate components with '/' and stay inside the workspace")
    if _DRIVE_RE.match(path):
        raise SandboxError(f"{what} {path!r} looks like a Windows drive path; give a path relative "
                           f"to the workspace root")
    if path.startswith("/"):
        raise SandboxError(f"{what} {path!r} is absolute; give a path relative to the workspace root")
    raw = path.split("/")
    if raw[0].startswith("~"):
        raise SandboxError(f"{what} {path!r} starts with '~': home directories are outside the "
                           f"workspace; give a path relative to the workspace root")
    parts: list[str] = []
    for comp in raw:
        if comp == "..":
            raise SandboxError(f"{what} {path!r} contains '..': paths may not climb out of a "
                               f"directory; write it relative to the workspace root without '..'")
        if len(comp.encode("utf-8")) > MAX_NAME_BYTES:
            raise SandboxError(f"{what} has a component of {len(comp.encode('utf-8'))} bytes; the "
                               f"limit is {MAX_NAME_BYTES}")
        if comp in ("", "."):
            continue
        if write and _is_git_name(comp):
            raise _git_refusal(path)
        parts.append(comp)
    return parts


def _normalize_abs(target: str) -> list[str]:
    out: list[str] = []
    for comp in target.split("/"):
        if comp in ("", "."):
            continue
        if comp == "..":
            if out:
                out.pop()
            continue
        out.append(comp)
    return out


def _count_occurrences(text: str, old: str) -> int:
    """Occurrences of ``old`` in ``text``, overlapping ones included."""
    count, start = 0, text.find(old)
    while start != -1:
        count += 1
        start = text.find(old, start + 1)
    return count


def _apply_edit(text: str, old: str, new: str, path: str) -> str:
    if old == "":
        raise ToolError("'old' is empty: give the exact text to replace (use write_file to create "
                        "or overwrite a whole file)")
    count = _count_occurrences(text, old)
    if count == 0:
        hint = ""
        if "\r\n" in text and "\n" in old and "\r\n" not in old:
            hint = " (the file uses CRLF line endings; 'old' uses LF)"
        raise ToolError(f"'old' text was not found in {path}{hint}; it must match the file exactly, "
                        f"whitespace and indentation included: read the file and copy the text")
    if count > 1:
        raise ToolError(f"'old' text matches {count} times in {path}; it must match exactly once: "
                        f"include more surrounding lines to make it unique")
    return text.replace(old, new, 1)


def _unified_diff(old: str, new: str, path: str, *, new_file: bool) -> str:
    if old == new and not new_file:
        return "(no changes: the new content is identical to the current file)"

    def lines(text: str) -> list[str]:
        out = text.splitlines(keepends=True)
        if out and not out[-1].endswith(("\n", "\r")):
            out[-1] += "\n\\ No newline at end of file\n"
        return out

    diff = difflib.unified_diff(lines(old), lines(new),
                                fromfile="/dev/null" if new_file else f"a/{path}",
                                tofile=f"b/{path}")
    text = "".join(diff)
    if not text:
        return f"(new empty file {path})"
    return text


# ---------------------------------------------------------------------------------------------
# Argument validation (execute)
# ---------------------------------------------------------------------------------------------

def _validate_args(spec: ToolSpec, args: object) -> dict:
    if not isinstance(args, dict):
        raise ToolError(f"{spec.name}: the arguments must be a JSON object, got {type(args).__name__}")
    props: dict = spec.parameters["properties"]
    unknown = sorted(str(k) for k in args if k not in props)
    if unknown:
        raise ToolError(f"{spec.name}: unexpected argument(s) {', '.join(map(repr, unknown))}; "
                        f"{spec.name} takes: {', '.join(props)}")
    clean: dict[str, Any] = {}
    for key, prop in props.items():
        value = args.get(key)
        if value is None:
            if key in spec.parameters["required"]:
                raise ToolError(f"{spec.name}: missing required argument {key!r}")
            continue
        typ = prop["type"]
        if typ == "string":
            if not isinstance(value, str):
                raise ToolError(f"{spec.name}: argument {key!r} must be a string, got "
                                f"{type(value).__name__} ({value!r:.60})")
        elif typ == "integer":
            # Providers may send JSON numbers as floats (Gemini does): accept 5.0 as 5.
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ToolError(f"{spec.name}: argument {key!r} must be an integer, got "
                                f"{type(value).__name__} ({value!r:.60})")
        elif typ == "number":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ToolError(f"{spec.name}: argument {key!r} must be a number, got "
                                f"{type(value).__name__} ({value!r:.60})")
        else:  # pragma: no cover - a spec bug, not a user error
            raise AssertionError(f"unsupported schema type {typ!r} in {spec.name}")
        clean[key] = value
    return clean


# ---------------------------------------------------------------------------------------------
# The workspace
# ---------------------------------------------------------------------------------------------

class Workspace:
    """The workspace root and the tools that act inside it. Safe to share between threads."""

    def __init__(self, root: str | os.PathLike, *, shell_timeout_s: float = 60.0,
                 output_limit: int = 20_000):
        try:
            resolved = pathlib.Path(root).resolve(strict=True)
        except (OSError, RuntimeError) as e:
            raise SandboxError(f"workspace root {os.fspath(root)!r} cannot be used: {e}") from e
        if not resolved.is_dir():
            raise SandboxError(f"workspace root {str(resolved)!r} is not a directory")
        if isinstance(shell_timeout_s, bool) or not isinstance(shell_timeout_s, (int, float)) \
                or not shell_timeout_s > 0:
            raise ValueError(f"shell_timeout_s must be a positive number, got {shell_timeout_s!r}")
        if isinstance(output_limit, bool) or not isinstance(output_limit, int) or output_limit < 200:
            raise ValueError(f"output_limit must be an integer of at least 200, got {output_limit!r}")
        self.root: pathlib.Path = resolved
        self.shell_timeout_s = float(shell_timeout_s)
        self.output_limit = output_limit

    def __repr__(self) -> str:
        return f"Workspace({str(self.root)!r})"

    # -- the walk -----------------------------------------------------------------------------

    def _between_check_and_use(self, parent: tuple[str, ...], name: str, action: str) -> None:
        """Test seam: called after a component was checked and right before it is opened (or
        replaced). Does nothing; tests override it to swap components for symlinks there."""

    def _open_root(self) -> int:
        try:
            return os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            raise ToolError(f"cannot open the workspace root {str(self.root)!r}: {e.strerror}") from e

    def _link_parts(self, done: list[str], name: str, target: str) -> list[str]:
        """The workspace-relative components a symlink at done/name points to, or SandboxError."""
        where = _display("/".join(done + [name]))
        outside = SandboxError(f"{where!r} is a symbolic link to {_display(target)!r}, which is "
                               f"outside the workspace")
        if target.startswith("/"):
            tparts = _normalize_abs(target)
            rparts = list(self.root.parts[1:])
            if tparts[:len(rparts)] != rparts:
                raise outside
            return tparts[len(rparts):]
        rel = list(done)
        for comp in target.split("/"):
            if comp in ("", "."):
                continue
            if comp == "..":
                if not rel:
                    raise outside
                rel.pop()
            else:
                rel.append(comp)
        return rel

    def _locate(self, path: object, *, what: str = "path", write: bool = False,
                create_dirs: bool = False, lenient: bool = False) -> tuple[int, list[str]]:
        """Walk ``path`` from the root without letting the kernel follow any symlink.

        Returns ``(fd, parts)``: ``parts`` are the real components (symlinks resolved) and
        ``fd`` is an open descriptor of the directory holding ``parts[-1]`` (the caller
        closes it). The final component is not a symlink when checked and may not exist.
        ``parts == []`` means the root itself, and ``fd`` is then the root. ``lenient``
        (for :meth:`resolve`) ends the walk at a missing or non-directory component and
        returns the rest of the path as given.
        """
        pending = _check_path(path, what=what, write=write)
        root_fd = self._open_root()
        cur = os.dup(root_fd)
        done: list[str] = []
        hops = 0
        steps = 0
        try:
            while True:
                steps += 1
                if steps > 10_000:
                    raise ToolError(f"{what} {path!r} kept changing while it was being walked; try again")
                if not pending:
                    fd, cur = cur, -1
                    return fd, done
                name = pending[0]
                if write and _is_git_name(name):
                    raise _git_refusal("/".join(done + [name]))
                where = _display("/".join(done + [name]))

                def follow() -> None:
                    nonlocal cur, done, pending, hops
                    hops += 1
                    if hops > _MAX_SYMLINK_HOPS:
                        raise SandboxError(f"{what} {path!r}: too many levels of symbolic links "
                                           f"(more than {_MAX_SYMLINK_HOPS}); is there a symlink loop?")
                    try:
                        target = os.readlink(name, dir_fd=cur)
                    except (FileNotFoundError, NotADirectoryError):
                        return  # removed since it was seen: the next pass looks again
                    except OSError as e:
                        if e.errno == errno.EINVAL:
                            return  # no longer a symlink: the next pass looks again
                        raise ToolError(f"cannot read the symbolic link {where!r}: {e.strerror}") from e
                    pending = self._link_parts(done, name, target) + pending[1:]
                    os.close(cur)
                    cur = -1
                    cur = os.dup(root_fd)
                    done = []

                if len(pending) == 1:
                    try:
                        st = os.stat(name, dir_fd=cur, follow_symlinks=False)
                    except FileNotFoundError:
                        st = None
                    except OSError as e:
                        raise ToolError(f"cannot inspect {where!r}: {e.strerror}") from e
                    if st is not None and stat.S_ISLNK(st.st_mode):
                        follow()
                        continue
                    fd, cur = cur, -1
                    return fd, done + [name]
                self._between_check_and_use(tuple(done), name, "open directory")
                try:
                    nfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                                  dir_fd=cur)
                except FileNotFoundError:
                    if lenient:
                        fd, cur = cur, -1
                        return fd, done + pending
                    if create_dirs:
                        try:
                            os.mkdir(name, 0o777, dir_fd=cur)
                        except FileExistsError:
                            continue  # created concurrently: the next pass opens (or follows) it
                        except OSError as e:
                            raise ToolError(f"cannot create directory {where!r}: {e.strerror}") from e
                        continue
                    raise _NotFound(f"no such directory: {where!r}") from None
                except OSError as e:
                    try:
                        st = os.stat(name, dir_fd=cur, follow_symlinks=False)
                    except FileNotFoundError:
                        continue  # vanished since the open: look again
                    if stat.S_ISLNK(st.st_mode):
                        follow()
                        continue
                    if lenient:
                        fd, cur = cur, -1
                        return fd, done + pending
                    if not stat.S_ISDIR(st.st_mode):
                        raise ToolError(f"{where!r} is not a directory") from None
                    raise ToolError(f"cannot open directory {where!r}: {e.strerror}") from e
                os.close(cur)
                cur = nfd
                done.append(name)
                pending = pending[1:]
        finally:
            if cur != -1:
                os.close(cur)
            os.close(root_fd)

    def _open_existing(self, path: object, *, what: str = "path",
                       write: bool = False) -> tuple[int, os.stat_result, list[str]]:
        """Open an existing file or directory inside the workspace (O_NOFOLLOW, non-blocking).

        Returns ``(fd, fstat, real parts)``; the caller closes ``fd``."""
        for _ in range(_MAX_RACE_RETRIES):
            parent, parts = self._locate(path, what=what, write=write)
            if not parts:
                return parent, os.fstat(parent), parts
            try:
                name = parts[-1]
                where = _display("/".join(parts))
                self._between_check_and_use(tuple(parts[:-1]), name, "open")
                try:
                    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                                 dir_fd=parent)
                except FileNotFoundError:
                    raise _NotFound(f"no such file or directory: {where!r}") from None
                except OSError as e:
                    if e.errno in (errno.ELOOP, errno.EMLINK):
                        continue  # became a symlink after the check: walk again and judge it
                    raise ToolError(f"cannot open {where!r}: {e.strerror}") from e
            finally:
                os.close(parent)
            try:
                return fd, os.fstat(fd), parts
            except OSError:
                os.close(fd)
                raise
        raise SandboxError(f"{what} {path!r} kept being replaced by a symbolic link while it was "
                           f"being opened; refusing")

    def resolve(self, path: str) -> pathlib.Path:
        """The absolute path inside the root that ``path`` names, symlinks resolved.

        Raises SandboxError when the path is refused or leads outside. The path need not
        exist. Use it for display and checks only: the tools never open this path as a
        whole (that would reopen the time-of-check/time-of-use window)."""
        fd, parts = self._locate(path, lenient=True)
        os.close(fd)
        return self.root.joinpath(*parts)

    def _open_regular(self, path: str, *, write: bool = False) -> tuple[int, os.stat_result, list[str]]:
        fd, st, parts = self._open_existing(path, write=write)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            if stat.S_ISDIR(st.st_mode):
                raise ToolError(f"{path!r} is a directory (use list_dir)")
            raise ToolError(f"{path!r} is not a regular file")
        return fd, st, parts

    def _read_bytes(self, path: str, *, write: bool = False) -> tuple[bytes, list[str]]:
        fd, _st, parts = self._open_regular(path, write=write)
        with os.fdopen(fd, "rb") as f:
            return f.read(), parts

    def _write_bytes(self, path: str, data: bytes) -> list[str]:
        parent, parts = self._locate(path, write=True, create_dirs=True)
        try:
            if not parts:
                raise ToolError(f"{path!r} is the workspace root directory; give a file path")
            name = parts[-1]
            where = _display("/".join(parts))
            try:
                st = os.stat(name, dir_fd=parent, follow_symlinks=False)
            except FileNotFoundError:
                st = None
            if st is not None and stat.S_ISDIR(st.st_mode):
                raise ToolError(f"{where!r} is a directory; give a file path")
            # (a symlink cannot be here: _locate resolved it; if one appears from now on, the
            # rename below replaces the link itself, never its target)
            if st is not None and not stat.S_ISREG(st.st_mode) and not stat.S_ISLNK(st.st_mode):
                raise ToolError(f"{where!r} is not a regular file")
            tmp = f".clutch-tmp-{secrets.token_hex(8)}"
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                             0o666, dir_fd=parent)
            except OSError as e:
                raise ToolError(f"cannot write {where!r}: {e.strerror}") from e
            try:
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view):]
                    if st is not None and stat.S_ISREG(st.st_mode):
                        os.fchmod(fd, stat.S_IMODE(st.st_mode))
                finally:
                    os.close(fd)
                self._between_check_and_use(tuple(parts[:-1]), name, "replace")
                os.replace(tmp, name, src_dir_fd=parent, dst_dir_fd=parent)
            except BaseException as e:
                os.unlink(tmp, dir_fd=parent)
                if isinstance(e, OSError):
                    raise ToolError(f"cannot write {where!r}: {e.strerror}") from e
                raise
            return parts
        finally:
            os.close(parent)

    # -- the tools ----------------------------------------------------------------------------

    def read_file(self, path: str, offset: int = 0, limit: int = 2000) -> str:
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise ToolError(f"read_file: offset must be an integer >= 0, got {offset!r}")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ToolError(f"read_file: limit must be an integer >= 1, got {limit!r}")
        fd, st, _parts = self._open_regular(path)
        with os.fdopen(fd, "rb") as f:
            head = f.read(_BINARY_SNIFF_BYTES)
            if b"\x00" in head:
                raise ToolError(f"{path!r} looks like a binary file (it contains NUL bytes; "
                                f"{st.st_size} bytes); read_file only reads text")
            f.seek(0)
            out: list[str] = []
            chars = 0
            total = 0
            stop: int | None = None  # first line not shown
            clipped_line = False
            for raw in f:
                total += 1
                index = total - 1
                if index < offset or stop is not None:
                    continue
                if index >= offset + limit:
                    stop = index
                    continue
                line = raw.decode("utf-8", errors="replace")
                if chars + len(line) > self.output_limit:
                    if not out:  # a single very long line: show its start
                        out.append(line[:self.output_limit] + "\n")
                        clipped_line = True
                        stop = index + 1
                    else:
                        stop = index
                    continue
                out.append(line)
                chars += len(line)
        if offset and offset >= total:
            raise ToolError(f"offset {offset} is past the end of {path!r} ({total} lines)")
        text = "".join(out)
        if stop is not None and stop < total or clipped_line:
            if text and not text.endswith("\n"):
                text += "\n"
            note = f"[showing lines {offset + 1}-{stop or total} of {total}"
            if clipped_line:
                note += f"; line {offset + 1} was cut to {self.output_limit} characters"
            if stop is not None and stop < total:
                note += f"; call read_file with offset={stop} to read on"
            text += note + "]"
        return text

    def list_dir(self, path: str = ".") -> str:
        fd, st, parts = self._open_existing(path)
        try:
            if not stat.S_ISDIR(st.st_mode):
                raise ToolError(f"{path!r} is not a directory (use read_file)")
            with os.scandir(fd) as it:
                entries = sorted(it, key=lambda e: e.name)
            lines: list[str] = []
            for entry in entries:
                name = _display(entry.name)
                if entry.is_symlink():
                    lines.append(f"{name} -> {_display(os.readlink(entry.name, dir_fd=fd))}")
                elif entry.is_dir(follow_symlinks=False):
                    lines.append(name + "/")
                else:
                    lines.append(name)
        finally:
            os.close(fd)
        if not lines:
            return f"(empty directory: {path})"
        out: list[str] = []
        chars = 0
        for i, line in enumerate(lines):
            if chars + len(line) + 1 > self.output_limit:
                out.append(f"[... {len(lines) - i} more entries not shown (output limit "
                           f"{self.output_limit} characters); list a subdirectory instead]")
                break
            out.append(line)
            chars += len(line) + 1
        return "\n".join(out)

    def search_files(self, pattern: str, path: str = ".", glob: str = "*") -> str:
        if not isinstance(pattern, str) or pattern == "":
            raise ToolError("search_files: pattern must be a non-empty regular expression")
        try:
            rx = re.compile(pattern)
        except re.error as e:
            raise ToolError(f"invalid regular expression {pattern!r}: {e}") from None
        if not isinstance(glob, str) or glob == "":
            raise ToolError("search_files: glob must be a non-empty pattern such as '*' or '*.py'")
        fd, st, parts = self._open_existing(path)
        state = _SearchState(rx=rx, glob=glob)
        try:
            if stat.S_ISDIR(st.st_mode):
                self._search_dir(fd, parts, state, 0)
            elif stat.S_ISREG(st.st_mode):
                state.files += 1
                self._search_fd(fd, "/".join(parts), state)
            else:
                raise ToolError(f"{path!r} is neither a file nor a directory")
        finally:
            os.close(fd)
        notes: list[str] = []
        if state.full:
            notes.append(f"stopped after {_SEARCH_MAX_MATCHES} matches; narrow the pattern, path or glob")
        if state.too_many_files:
            notes.append(f"stopped after {_SEARCH_MAX_FILES} files; give a narrower path")
        if state.binary:
            notes.append(f"{state.binary} binary file(s) not searched")
        if state.large:
            notes.append(f"{state.large} file(s) over {_SEARCH_MAX_FILE_BYTES} bytes not searched")
        if state.symlinks:
            notes.append(f"{state.symlinks} symlink(s) not followed")
        if state.git_dirs:
            notes.append(".git directories not searched")
        if state.too_deep:
            notes.append(f"{state.too_deep} directories deeper than {_SEARCH_MAX_DEPTH} levels not searched")
        if state.unreadable:
            shown = "; ".join(state.unreadable[:5])
            more = f" and {len(state.unreadable) - 5} more" if len(state.unreadable) > 5 else ""
            notes.append(f"{len(state.unreadable)} unreadable: {shown}{more}")
        if not state.matches:
            text = f"no matches for {pattern!r} in {path!r} ({state.files} file(s) searched)"
            return text + "".join(f"\n[{n}]" for n in notes)
        out: list[str] = []
        chars = 0
        for i, m in enumerate(state.matches):
            if chars + len(m) + 1 > self.output_limit:
                notes.insert(0, f"{len(state.matches) - i} more matches not shown (output limit)")
                break
            out.append(m)
            chars += len(m) + 1
        return "\n".join(out) + "".join(f"\n[{n}]" for n in notes)

    def _search_dir(self, fd: int, rel: list[str], state: _SearchState, depth: int) -> None:
        if depth > _SEARCH_MAX_DEPTH:
            state.too_deep += 1
            return
        with os.scandir(fd) as it:
            entries = sorted(it, key=lambda e: e.name)
        subdirs: list[str] = []
        for entry in entries:
            if state.done:
                return
            if entry.is_symlink():
                state.symlinks += 1
                continue
            if entry.is_dir(follow_symlinks=False):
                if _is_git_name(entry.name):
                    state.git_dirs += 1
                else:
                    subdirs.append(entry.name)
                continue
            if not entry.is_file(follow_symlinks=False):
                continue
            relpath = "/".join(rel + [entry.name])
            target = relpath if "/" in state.glob else entry.name
            if not fnmatch.fnmatchcase(target, state.glob):
                continue
            state.files += 1
            if state.files > _SEARCH_MAX_FILES:
                state.too_many_files = True
                return
            self._between_check_and_use(tuple(rel), entry.name, "open")
            try:
                ffd = os.open(entry.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                              dir_fd=fd)
            except OSError as e:
                state.unreadable.append(f"{_display(relpath)} ({e.strerror})")
                continue
            try:
                self._search_fd(ffd, relpath, state)
            finally:
                os.close(ffd)
        for name in subdirs:
            if state.done:
                return
            self._between_check_and_use(tuple(rel), name, "open directory")
            try:
                dfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except OSError as e:
                state.unreadable.append(f"{_display('/'.join(rel + [name]))}/ ({e.strerror})")
                continue
            try:
                self._search_dir(dfd, rel + [name], state, depth + 1)
            finally:
                os.close(dfd)

    def _search_fd(self, fd: int, relpath: str, state: _SearchState) -> None:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return
        if st.st_size > _SEARCH_MAX_FILE_BYTES:
            state.large += 1
            return
        chunks = []
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
        data = b"".join(chunks)
        if b"\x00" in data[:_BINARY_SNIFF_BYTES]:
            state.binary += 1
            return
        shown = _display(relpath)
        for lineno, line in enumerate(data.decode("utf-8", errors="replace").split("\n"), 1):
            line = line.rstrip("\r")
            if state.rx.search(line):
                if len(line) > _SEARCH_LINE_CHARS:
                    line = line[:_SEARCH_LINE_CHARS] + " [...]"
                state.matches.append(f"{shown}:{lineno}: {line}")
                if len(state.matches) >= _SEARCH_MAX_MATCHES:
                    state.full = True
                    return

    def write_file(self, path: str, content: str) -> str:
        if not isinstance(content, str):
            raise ToolError(f"write_file: content must be a string, got {type(content).__name__}")
        try:
            data = content.encode("utf-8")
        except UnicodeEncodeError:
            raise ToolError("write_file: content is not valid Unicode text (it holds a lone "
                            "surrogate); it cannot be written as UTF-8") from None
        parts = self._write_bytes(path, data)
        real = "/".join(parts)
        via = f" (through a symlink: {_display(real)})" if real != "/".join(_check_path(path)) else ""
        return f"wrote {len(data)} bytes to {path}{via}"

    def edit_file(self, path: str, old: str, new: str) -> str:
        for name, value in (("old", old), ("new", new)):
            if not isinstance(value, str):
                raise ToolError(f"edit_file: {name} must be a string, got {type(value).__name__}")
        _check_path(path, write=True)
        data, _parts = self._read_bytes(path, write=True)
        if b"\x00" in data[:_BINARY_SNIFF_BYTES]:
            raise ToolError(f"{path!r} looks like a binary file (it contains NUL bytes); edit_file "
                            f"only edits text")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ToolError(f"{path!r} is not valid UTF-8 (byte {e.start}); editing it as text "
                            f"would corrupt it") from None
        updated = _apply_edit(text, old, new, path)
        try:
            encoded = updated.encode("utf-8")
        except UnicodeEncodeError:
            raise ToolError("edit_file: new is not valid Unicode text (it holds a lone surrogate)") from None
        self._write_bytes(path, encoded)
        return (f"edited {path}: replaced 1 occurrence ({old.count(chr(10)) + 1} line(s) -> "
                f"{new.count(chr(10)) + 1} line(s))")

    def run_shell(self, command: str, cwd: str = ".", timeout: float | None = None) -> ToolResult:
        if not isinstance(command, str) or not command.strip():
            raise ToolError("run_shell: command is empty")
        if "\x00" in command:
            raise ToolError("run_shell: command contains a NUL byte")
        limit_s = self.shell_timeout_s if timeout is None else timeout
        if isinstance(limit_s, bool) or not isinstance(limit_s, (int, float)) or not limit_s > 0:
            raise ToolError(f"run_shell: timeout must be a positive number of seconds, got {timeout!r}")
        if limit_s > _MAX_SHELL_TIMEOUT_S:
            raise ToolError(f"run_shell: timeout must be at most {_MAX_SHELL_TIMEOUT_S:g} seconds, "
                            f"got {timeout!r}")
        bash = shutil.which("bash")
        if bash is None:
            raise ToolError("run_shell needs bash, and bash was not found on PATH")
        env = {k: v for k, v in os.environ.items()
               if k not in _SECRET_ENV_VARS and k not in ("PWD", "OLDPWD")}
        fd, st, parts = self._open_existing(cwd, what="cwd")
        try:
            if not stat.S_ISDIR(st.st_mode):
                raise ToolError(f"cwd {cwd!r} is not a directory")
            # chdir happens in the child before exec, through the checked fd: no path lookup.
            proc_cwd = f"/proc/self/fd/{fd}"
            if not os.path.isdir(proc_cwd):
                proc_cwd = str(self.root.joinpath(*parts))
            try:
                proc = subprocess.Popen([bash, "-c", command], cwd=proc_cwd, env=env,
                                        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, start_new_session=True)
            except OSError as e:
                raise ToolError(f"run_shell could not start bash: {e.strerror}") from e
        finally:
            os.close(fd)
        return self._collect(proc, float(limit_s))

    def _collect(self, proc: subprocess.Popen, limit_s: float) -> ToolResult:
        cap = self.output_limit * 4  # bytes kept at each end (4 bytes per character at most)
        buf = _OutputBuffer(cap)
        assert proc.stdout is not None
        reader = threading.Thread(target=buf.drain, args=(proc.stdout,), daemon=True,
                                  name="run_shell-output")
        deadline = time.monotonic() + limit_s
        reader.start()
        timed_out = False
        reader.join(limit_s)
        if reader.is_alive():
            timed_out = True
        else:
            try:
                proc.wait(timeout=max(0.01, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                timed_out = True
        if timed_out:
            # The shell is not reaped yet, so its pid (the group id) cannot have been reused.
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                reader.join(0)  # the whole group had already exited: nothing left to kill
            reader.join(2)
        code = proc.wait()
        output = buf.text(self.output_limit)
        if reader.is_alive():
            # A process that left the group (setsid) still holds the pipe; the reader thread
            # ends (and closes the pipe) when it exits. Its later output is not shown.
            output += ("\n[a process that left the command's process group still holds its "
                       "output open; output after this point is not shown]")
        if timed_out:
            return ToolResult(ok=False, output=output, exit_code=code,
                              error=(f"command timed out after {limit_s:g}s; its process group "
                                     f"was killed"))
        if code == 0:
            return ToolResult(ok=True, output=output, exit_code=0)
        if code < 0:
            err = f"command was killed by signal {-code}"
        else:
            err = f"command exited with code {code}"
        return ToolResult(ok=False, output=output, exit_code=code, error=err)

    # -- dispatch -----------------------------------------------------------------------------

    def execute(self, name: str, args: dict) -> ToolResult:
        """Run a tool by name. Tool-level failures come back as ``ok=False`` with a message."""
        try:
            spec = tool_spec(name)
        except KeyError as e:
            return ToolResult(ok=False, error=e.args[0])
        try:
            clean = _validate_args(spec, args)
            if name == "run_shell":
                return self.run_shell(**clean)
            method = getattr(self, name)
            return ToolResult(ok=True, output=method(**clean))
        except SandboxError as e:
            return ToolResult(ok=False, error=f"refused: {e}")
        except ToolError as e:
            return ToolResult(ok=False, error=str(e))
        except OSError as e:
            where = f" ({_display(str(e.filename))})" if e.filename is not None else ""
            return ToolResult(ok=False, error=f"{name} failed: {e.strerror or e}{where}")


@dataclass
class _SearchState:
    rx: re.Pattern
    glob: str
    files: int = 0
    binary: int = 0
    large: int = 0
    symlinks: int = 0
    git_dirs: int = 0
    too_deep: int = 0
    full: bool = False
    too_many_files: bool = False

    def __post_init__(self) -> None:
        self.matches: list[str] = []
        self.unreadable: list[str] = []

    @property
    def done(self) -> bool:
        return self.full or self.too_many_files


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


# ---------------------------------------------------------------------------------------------
# Approval-dialog preview
# ---------------------------------------------------------------------------------------------

def diff_preview(workspace: Workspace, name: str, args: dict) -> str:
    """For the approval dialog: the unified diff that ``write_file``/``edit_file`` would make
    (or a clear text saying why it cannot be made). Other tools: ""."""
    if name not in ("write_file", "edit_file"):
        return ""
    try:
        clean = _validate_args(tool_spec(name), args)
        path = clean["path"]
        _check_path(path, write=True)
        try:
            data, _parts = workspace._read_bytes(path, write=True)
            exists = True
        except _NotFound:
            if name == "edit_file":
                raise
            data, exists = b"", False
        if b"\x00" in data[:_BINARY_SNIFF_BYTES]:
            return (f"cannot preview {name}: {path!r} is a binary file ({len(data)} bytes); "
                    f"{name} would replace it with text")
        old_text = data.decode("utf-8", errors="replace")
        if name == "write_file":
            new_text = clean["content"]
        else:
            new_text = _apply_edit(old_text, clean["old"], clean["new"], path)
    except SandboxError as e:
        return f"cannot preview {name}: refused: {e}"
    except ToolError as e:
        return f"cannot preview {name}: {e}"
    return _unified_diff(old_text, new_text, path, new_file=not exists)


# ---------------------------------------------------------------------------------------------
# Git: one commit per ticket
# ---------------------------------------------------------------------------------------------

class GitRepo:
    """A git work tree at ``root``. ``commit_paths`` and ``revert`` are serialised per instance."""

    _GIT_TIMEOUT_S = 120.0

    def __init__(self, root: pathlib.Path):
        self.root = pathlib.Path(root).resolve()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"GitRepo({str(self.root)!r})"

    @staticmethod
    def _env() -> dict[str, str]:
        drop = set(_SECRET_ENV_VARS) | {"GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE",
                                        "GIT_OBJECT_DIRECTORY", "GIT_PREFIX"}
        env = {k: v for k, v in os.environ.items() if k not in drop}
        env["GIT_TERMINAL_PROMPT"] = "0"
        return env

    @staticmethod
    def _run_git(root: pathlib.Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        git = shutil.which("git")
        if git is None:
            raise ToolError("git is not installed (not found on PATH)")
        try:
            proc = subprocess.run([git, "-C", str(root), *args], stdin=subprocess.DEVNULL,
                                  capture_output=True, env=GitRepo._env(),
                                  timeout=GitRepo._GIT_TIMEOUT_S)
        except subprocess.TimeoutExpired as e:
            raise ToolError(f"git {args[0]} did not finish within {GitRepo._GIT_TIMEOUT_S:g}s") from e
        if check and proc.returncode != 0:
            msg = (proc.stderr or proc.stdout).decode("utf-8", "replace").strip()
            sub = next((a for a in args if not a.startswith("-") and "=" not in a), "")
            raise ToolError(f"git {sub} failed (exit {proc.returncode}): {msg}")
        return proc

    def _git(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self._run_git(self.root, *args, check=check)

    @staticmethod
    def detect(root) -> tuple["GitRepo | None", str]:
        """(repo, "") for a git work tree whose tracked files are unchanged; else (None, reason).

        Untracked files do not make the tree dirty: commits stage only the paths named."""
        root = pathlib.Path(root)
        if shutil.which("git") is None:
            return None, "git is not installed (not found on PATH)"
        if not root.is_dir():
            return None, f"{str(root)!r} is not a directory"
        proc = GitRepo._run_git(root, "rev-parse", "--is-inside-work-tree", check=False)
        if proc.returncode != 0 or proc.stdout.strip() != b"true":
            said = proc.stderr.decode("utf-8", "replace").strip().splitlines()
            detail = f" (git says: {said[0]})" if said and "not a git repository" not in said[0] else ""
            return None, f"{str(root)!r} is not inside a git work tree{detail}"
        try:
            status = GitRepo._run_git(root, "status", "--porcelain=v1", "-z", "--untracked-files=no")
        except ToolError as e:
            return None, f"cannot read the git status of {str(root)!r}: {e}"
        entries = [e for e in status.stdout.decode("utf-8", "replace").split("\0") if e]
        dirty: list[str] = []
        skip_next = False
        for entry in entries:
            if skip_next:  # the source path of a rename/copy
                skip_next = False
                continue
            code, name = entry[:2], entry[3:]
            if "R" in code or "C" in code:
                skip_next = True
            dirty.append(name)
        if dirty:
            shown = ", ".join(dirty[:5]) + (f" and {len(dirty) - 5} more" if len(dirty) > 5 else "")
            return None, (f"the git work tree has uncommitted changes ({shown}); commit or stash "
                          f"them so that Clutch can commit each ticket on its own")
        return GitRepo(root), ""

    def _identity(self) -> list[str]:
        args: list[str] = []
        if self._git("config", "user.name", check=False).stdout.strip() == b"":
            args += ["-c", "user.name=Clutch"]
        if self._git("config", "user.email", check=False).stdout.strip() == b"":
            args += ["-c", "user.email=clutch@localhost"]
        return args

    def _short_head(self) -> str:
        return self._git("rev-parse", "--short", "HEAD").stdout.decode().strip()

    def commit_paths(self, paths: list[str], message: str) -> str:
        """Stage only ``paths`` (added, modified or deleted), commit them, return the short SHA;
        "" when none of them changed."""
        if isinstance(paths, str):
            raise TypeError("commit_paths takes a list of paths, not one string")
        if not isinstance(message, str) or not message.strip():
            raise ToolError("commit_paths: the commit message is empty")
        clean: list[str] = []
        for p in paths:
            parts = _check_path(p, write=True)
            if not parts:
                raise SandboxError(f"commit_paths: {p!r} names the whole workspace; give file paths")
            clean.append("/".join(parts))
        if not clean:
            return ""
        with self._lock:
            # Index entries (incl. deleted files) and untracked, not-ignored files under the paths.
            listed = self._git("--literal-pathspecs", "ls-files", "-z", "--cached", "--others",
                               "--exclude-standard", "--", *clean)
            known = sorted({e for e in listed.stdout.decode("utf-8", "surrogateescape").split("\0") if e})
            if not known:
                return ""
            self._git("--literal-pathspecs", "add", "-A", "--", *known)
            changed = self._git("--literal-pathspecs", "diff", "--cached", "--quiet", "--", *known,
                                check=False)
            if changed.returncode == 0:
                return ""
            if changed.returncode != 1:
                raise ToolError(f"git diff --cached failed: {changed.stderr.decode('utf-8', 'replace')}")
            self._git(*self._identity(), "--literal-pathspecs", "commit", "-q",
                      "-m", message, "--only", "--", *known)
            return self._short_head()

    def revert(self, sha: str) -> str:
        """``git revert --no-edit sha``; the new commit's short SHA. On conflict the revert is
        aborted and ToolError names the conflicting files."""
        if not isinstance(sha, str) or not _SHA_RE.match(sha):
            raise ToolError(f"revert: {sha!r} is not a commit SHA (4 to 40 hex digits)")
        with self._lock:
            proc = self._git(*self._identity(), "revert", "--no-edit", sha, check=False)
            if proc.returncode == 0:
                return self._short_head()
            msg = (proc.stderr or proc.stdout).decode("utf-8", "replace").strip()
            conflicts = self._git("diff", "--name-only", "--diff-filter=U", check=False)
            files = [f for f in conflicts.stdout.decode("utf-8", "replace").splitlines() if f]
            in_progress = self._git("rev-parse", "-q", "--verify", "REVERT_HEAD", check=False)
            if in_progress.returncode == 0:
                self._git("revert", "--abort")
            if files:
                raise ToolError(f"reverting {sha} conflicts with later changes in "
                                f"{', '.join(files[:5])}; the revert was aborted and nothing changed")
            raise ToolError(f"git revert {sha} failed: {msg}")
