"""The path sandbox: every path a tool is given must stay inside the workspace root.

How a path is checked and opened
--------------------------------
1. *Lexical check* (:func:`check_path`): the path must be a non-empty, relative, valid UTF-8
   string without NUL bytes, backslashes, drive letters, a leading ``~``, or any ``..``
   component; no component longer than 255 bytes and the whole no longer than 4096 bytes.
   No component may name ``.clutch`` (Clutch's own settings, API token and logs: off limits
   to every tool), and for writes none may name a ``.git`` directory (both compared
   case-insensitively, ignoring the tricks that make other file systems treat a name as
   ``.git``).
2. *Walk* (:meth:`PathWalker._locate`): the path is never handed to the kernel as a whole.
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
workspace (or leads into ``.clutch``, or, for a write, into ``.git``), and otherwise walks the
resulting path again from the root with the same ``O_NOFOLLOW`` opens. At most 40 links are
followed for one path. Writes replace the file atomically (a temporary file in the same
directory, then ``rename``), so a final component swapped for a symlink at the last moment is
replaced itself, never its target, and a hard link to a file elsewhere is never written
through.

Known limits (documented, not silently assumed away): a hard link inside the workspace to a
file outside it can be read (creating one needs access to that file already); a directory
moved out of the workspace by another process while a tool holds it open is still used for
that one call.

Threads: any. A :class:`PathWalker` holds only its immutable root; every call opens and
closes its own descriptors.
"""
from __future__ import annotations

import errno
import os
import pathlib
import re
import secrets
import stat

from toolbox.errors import NotFound, SandboxError, ToolError

MAX_PATH_BYTES = 4096
MAX_NAME_BYTES = 255
BINARY_SNIFF_BYTES = 8192
_MAX_SYMLINK_HOPS = 40
_MAX_RACE_RETRIES = 8
# Code points that HFS+ ignores in names, so ".g\u200cit" is ".git" there (git guards the same).
_HFS_IGNORABLE = frozenset(
    [0x200C, 0x200D, 0x200E, 0x200F, 0x202A, 0x202B, 0x202C, 0x202D, 0x202E,
     0x206A, 0x206B, 0x206C, 0x206D, 0x206E, 0x206F, 0xFEFF])
_DRIVE_RE = re.compile(r"^[A-Za-z]:")


def display(s: str) -> str:
    """A name as printable text, even if it came from the file system with undecodable bytes."""
    return s.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _folded(name: str) -> str:
    return "".join(ch for ch in name if ord(ch) not in _HFS_IGNORABLE).casefold().rstrip(" .")


def is_git_name(name: str) -> bool:
    """True when ``name`` is, or a file system could take it for, ``.git``."""
    return _folded(name) in (".git", "git~1")


def is_clutch_name(name: str) -> bool:
    """True when ``name`` is, or a case-insensitive file system could take it for, ``.clutch``."""
    return _folded(name) == ".clutch"


def git_refusal(where: str) -> SandboxError:
    return SandboxError(f"{where!r} is inside a .git directory: workers may not write git's internal "
                        f"files; change the working tree instead and let Clutch commit")


def clutch_refusal(where: str) -> SandboxError:
    return SandboxError(f"{where!r} is inside .clutch, Clutch's own settings, token and logs: it is "
                        f"off limits to the worker's tools (reading, listing, searching and writing)")


def check_path(path: object, *, what: str = "path", write: bool = False) -> list[str]:
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
        if is_clutch_name(comp):
            raise clutch_refusal(path)
        if write and is_git_name(comp):
            raise git_refusal(path)
        parts.append(comp)
    return parts


def normalize_abs(target: str) -> list[str]:
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



class PathWalker:
    """The workspace root and the fd-based walk every file tool goes through.

    ``root`` is resolved once and never changes. The walk holds no state between calls."""

    def __init__(self, root: str | os.PathLike):
        try:
            resolved = pathlib.Path(root).resolve(strict=True)
        except (OSError, RuntimeError) as e:
            raise SandboxError(f"workspace root {os.fspath(root)!r} cannot be used: {e}") from e
        if not resolved.is_dir():
            raise SandboxError(f"workspace root {str(resolved)!r} is not a directory")
        self.root: pathlib.Path = resolved

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
        where = display("/".join(done + [name]))
        outside = SandboxError(f"{where!r} is a symbolic link to {display(target)!r}, which is "
                               f"outside the workspace")
        if target.startswith("/"):
            tparts = normalize_abs(target)
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
        pending = check_path(path, what=what, write=write)
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
                if is_clutch_name(name):
                    raise clutch_refusal("/".join(done + [name]))
                if write and is_git_name(name):
                    raise git_refusal("/".join(done + [name]))
                where = display("/".join(done + [name]))

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
                    raise NotFound(f"no such directory: {where!r}") from None
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
                where = display("/".join(parts))
                self._between_check_and_use(tuple(parts[:-1]), name, "open")
                try:
                    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                                 dir_fd=parent)
                except FileNotFoundError:
                    raise NotFound(f"no such file or directory: {where!r}") from None
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
            where = display("/".join(parts))
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
