"""search_files: a regular-expression search that cannot hang the app.

Patterns run on RE2 (``google-re2``), whose matching time is linear in the text: no pattern
can backtrack exponentially (``^(\\w+\\s?)*$`` on a sentence ending in a period takes
microseconds). RE2 has no lookarounds and no backreferences; such a pattern is a clear tool
error. Each line is searched up to ``SEARCH_LINE_CHARS`` characters (longer lines are
searched in their first part, and the note says how many), and the whole search stops after
``SEARCH_TIME_BUDGET_S`` seconds with a note.

Threads: the calling executor thread. State: one :class:`_SearchState` per call.
"""
from __future__ import annotations

import fnmatch
import os
import re
import stat
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from toolbox.errors import ToolError
from toolbox.paths import BINARY_SNIFF_BYTES, display, is_clutch_name, is_git_name

if TYPE_CHECKING:
    from toolbox.workspace import Workspace

SEARCH_MAX_MATCHES = 200
SEARCH_MAX_FILE_BYTES = 5 * 1024 * 1024
SEARCH_MAX_FILES = 50_000
SEARCH_MAX_DEPTH = 200
SEARCH_SHOWN_CHARS = 300
SEARCH_LINE_CHARS = 10_000
SEARCH_TIME_BUDGET_S = 10.0


def compile_pattern(pattern: object) -> Any:
    """The RE2 program for ``pattern``, or a ToolError the model can act on."""
    if not isinstance(pattern, str) or pattern == "":
        raise ToolError("search_files: pattern must be a non-empty regular expression")
    import re2  # google-re2; imported here so that importing the tools stays cheap

    options = re2.Options()
    options.log_errors = False  # the error comes back to the model, not to stderr
    try:
        return re2.compile(pattern, options)
    except re2.error as e:
        detail = e.args[0].decode("utf-8", "replace") if e.args and isinstance(e.args[0], bytes) \
            else str(e)
    try:
        re.compile(pattern)
    except re.error:
        raise ToolError(f"invalid regular expression {pattern!r}: {detail}") from None
    raise ToolError(f"search_files: the pattern {pattern!r} is not supported ({detail}): patterns "
                    f"use RE2 syntax, which runs in linear time and has no lookarounds ((?=...), "
                    f"(?<=...)), no backreferences (\\1) and no possessive quantifiers") from None


@dataclass
class _SearchState:
    rx: Any
    glob: str
    deadline: float
    files: int = 0
    binary: int = 0
    large: int = 0
    symlinks: int = 0
    git_dirs: int = 0
    clutch_dirs: int = 0
    too_deep: int = 0
    long_lines: int = 0
    full: bool = False
    too_many_files: bool = False
    out_of_time: bool = False
    matches: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)

    @property
    def done(self) -> bool:
        if not self.out_of_time and time.monotonic() > self.deadline:
            self.out_of_time = True
        return self.full or self.too_many_files or self.out_of_time


def search_files(ws: Workspace, pattern: str, path: str = ".", glob: str = "*") -> str:
    """'file:line: text' for each line matching ``pattern`` under ``path``, with notes on
    what was not searched; ToolError for a pattern RE2 does not support."""
    rx = compile_pattern(pattern)
    if not isinstance(glob, str) or glob == "":
        raise ToolError("search_files: glob must be a non-empty pattern such as '*' or '*.py'")
    fd, st, parts = ws._open_existing(path)
    state = _SearchState(rx=rx, glob=glob, deadline=time.monotonic() + SEARCH_TIME_BUDGET_S)
    try:
        if stat.S_ISDIR(st.st_mode):
            _search_dir(ws, fd, parts, state, 0)
        elif stat.S_ISREG(st.st_mode):
            state.files += 1
            _search_fd(fd, "/".join(parts), state)
        else:
            raise ToolError(f"{path!r} is neither a file nor a directory")
    finally:
        os.close(fd)
    notes: list[str] = []
    if state.out_of_time:
        notes.append(f"the search stopped after {SEARCH_TIME_BUDGET_S:g}s, before the end; the "
                     f"matches above are only those found so far: give a narrower path or glob")
    if state.full:
        notes.append(f"stopped after {SEARCH_MAX_MATCHES} matches; narrow the pattern, path or glob")
    if state.too_many_files:
        notes.append(f"stopped after {SEARCH_MAX_FILES} files; give a narrower path")
    if state.binary:
        notes.append(f"{state.binary} binary file(s) not searched")
    if state.large:
        notes.append(f"{state.large} file(s) over {SEARCH_MAX_FILE_BYTES} bytes not searched")
    if state.symlinks:
        notes.append(f"{state.symlinks} symlink(s) not followed")
    if state.git_dirs:
        notes.append(".git directories not searched")
    if state.clutch_dirs:
        notes.append(".clutch (Clutch's own files) not searched")
    if state.long_lines:
        notes.append(f"{state.long_lines} line(s) longer than {SEARCH_LINE_CHARS} characters "
                     f"searched in their first {SEARCH_LINE_CHARS} characters only")
    if state.too_deep:
        notes.append(f"{state.too_deep} directories deeper than {SEARCH_MAX_DEPTH} levels not searched")
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
        if chars + len(m) + 1 > ws.output_limit:
            notes.insert(0, f"{len(state.matches) - i} more matches not shown (output limit)")
            break
        out.append(m)
        chars += len(m) + 1
    return "\n".join(out) + "".join(f"\n[{n}]" for n in notes)


def _search_dir(ws: Workspace, fd: int, rel: list[str], state: _SearchState, depth: int) -> None:
    if depth > SEARCH_MAX_DEPTH:
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
            if is_git_name(entry.name):
                state.git_dirs += 1
            elif is_clutch_name(entry.name):
                state.clutch_dirs += 1
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
        if state.files > SEARCH_MAX_FILES:
            state.too_many_files = True
            return
        ws._between_check_and_use(tuple(rel), entry.name, "open")
        try:
            ffd = os.open(entry.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                          dir_fd=fd)
        except OSError as e:
            state.unreadable.append(f"{display(relpath)} ({e.strerror})")
            continue
        try:
            _search_fd(ffd, relpath, state)
        finally:
            os.close(ffd)
    for name in subdirs:
        if state.done:
            return
        ws._between_check_and_use(tuple(rel), name, "open directory")
        try:
            dfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
        except OSError as e:
            state.unreadable.append(f"{display('/'.join(rel + [name]))}/ ({e.strerror})")
            continue
        try:
            _search_dir(ws, dfd, rel + [name], state, depth + 1)
        finally:
            os.close(dfd)


def _search_fd(fd: int, relpath: str, state: _SearchState) -> None:
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        return
    if st.st_size > SEARCH_MAX_FILE_BYTES:
        state.large += 1
        return
    chunks = []
    while True:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            break
        chunks.append(chunk)
    data = b"".join(chunks)
    if b"\x00" in data[:BINARY_SNIFF_BYTES]:
        state.binary += 1
        return
    shown = display(relpath)
    lines = data.decode("utf-8", errors="replace").split("\n")
    if lines[-1] == "":
        lines.pop()  # the end of the last line, not a line of its own
    for lineno, line in enumerate(lines, 1):
        line = line.rstrip("\r")
        if len(line) > SEARCH_LINE_CHARS:
            state.long_lines += 1
            line = line[:SEARCH_LINE_CHARS]
        if state.rx.search(line):
            if len(line) > SEARCH_SHOWN_CHARS:
                line = line[:SEARCH_SHOWN_CHARS] + " [...]"
            state.matches.append(f"{shown}:{lineno}: {line}")
            if len(state.matches) >= SEARCH_MAX_MATCHES:
                state.full = True
                return
        if lineno % 4096 == 0 and state.done:
            return
