"""read_file, list_dir, write_file and edit_file: the file tools, as functions of a workspace.

Threads: any (the calling executor thread). State: none; each call opens, reads or writes
through the workspace's fd-based walk and closes what it opened.
"""
from __future__ import annotations

import os
import stat
from typing import TYPE_CHECKING

from toolbox.errors import ToolError
from toolbox.paths import BINARY_SNIFF_BYTES, check_path, display

if TYPE_CHECKING:
    from toolbox.workspace import Workspace

# read_file counts the lines after its window only while the bytes it reads stay under this
# margin; past it, the note says how many bytes the file has instead of how many lines.
READ_COUNT_MARGIN_BYTES = 8 * 1024 * 1024
_SKIP_CHUNK = 1 << 16


def count_occurrences(text: str, old: str) -> int:
    """Occurrences of ``old`` in ``text``, overlapping ones included."""
    count, start = 0, text.find(old)
    while start != -1:
        count += 1
        start = text.find(old, start + 1)
    return count


def apply_edit(text: str, old: str, new: str, path: str) -> str:
    if old == "":
        raise ToolError("'old' is empty: give the exact text to replace (use write_file to create "
                        "or overwrite a whole file)")
    count = count_occurrences(text, old)
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



def _next_line(f, keep: int, skip_budget: int) -> tuple[bytes, int, bool] | None:
    """The next line of ``f``: ``(its first keep bytes, bytes consumed, whether the line's end
    was reached)``; None at the end of the file. At most ``keep`` bytes are held and at most
    ``skip_budget`` more are read past them; the rest of a longer line is left unread."""
    chunk = f.readline(keep) if keep > 0 else f.readline(min(_SKIP_CHUNK, max(1, skip_budget)))
    if not chunk:
        return None
    kept = chunk if keep > 0 else b""
    consumed = len(chunk)
    while not chunk.endswith(b"\n"):
        room = skip_budget - (consumed - len(kept))
        if room <= 0:
            return kept, consumed, False
        chunk = f.readline(min(_SKIP_CHUNK, room))
        if not chunk:
            break
        consumed += len(chunk)
    return kept, consumed, True


def read_file(ws: Workspace, path: str, offset: int = 0, limit: int = 2000) -> str:
    """Lines [offset, offset+limit) of a text file, clamped to the workspace's output limit.

    Memory and reading stay bounded: a shown line is held up to 4 bytes per character of the
    limit; lines before the window are skipped in 64 KiB chunks; after the window, lines are
    counted for the note only while the bytes read stay under ``READ_COUNT_MARGIN_BYTES``."""
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise ToolError(f"read_file: offset must be an integer >= 0, got {offset!r}")
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ToolError(f"read_file: limit must be an integer >= 1, got {limit!r}")
    fd, st, _parts = ws._open_regular(path)
    cap = ws.output_limit
    keep = cap * 4 + 4  # decodes to more than ``cap`` characters: enough to know a line is cut
    out: list[str] = []
    chars = 0
    index = 0                # lines consumed so far
    stop: int | None = None  # first line not shown
    clipped_line = False
    counted_all = True       # False: reading stopped before the end of the file
    after = 0                # bytes read after the window closed
    with os.fdopen(fd, "rb") as f:
        if b"\x00" in f.read(BINARY_SNIFF_BYTES):
            raise ToolError(f"{path!r} looks like a binary file (it contains NUL bytes; "
                            f"{st.st_size} bytes); read_file only reads text")
        f.seek(0)
        while True:
            if stop is None and index >= offset + limit:
                stop = index
            in_window = stop is None and index >= offset
            budget = (READ_COUNT_MARGIN_BYTES - after) if stop is not None or in_window \
                else 1 << 62
            if budget <= 0:
                counted_all = False
                break
            item = _next_line(f, keep if in_window else 0, budget)
            if item is None:
                break
            raw, consumed, ended = item
            if stop is not None:
                after += consumed
            elif in_window:
                line = raw.decode("utf-8", errors="replace")
                if chars + len(line) <= cap and ended:
                    out.append(line)
                    chars += len(line)
                elif not out:  # a single very long line: show its start
                    out.append(line[:cap].rstrip("\n") + "\n")
                    clipped_line = True
                    stop = index + 1
                    after += consumed - len(raw)
                else:
                    stop = index
                    after += consumed
            if not ended:
                counted_all = False
                break
            index += 1
    total = index
    if counted_all and offset and offset >= total:
        raise ToolError(f"offset {offset} is past the end of {path!r} ({total} lines)")
    text = "".join(out)
    more = stop is not None and (stop < total or not counted_all)
    if more or clipped_line:
        if text and not text.endswith("\n"):
            text += "\n"
        shown_to = stop if stop is not None else total
        if counted_all:
            note = f"[showing lines {offset + 1}-{shown_to} of {total}"
        else:
            note = (f"[showing lines {offset + 1}-{shown_to}; the rest of the file ({st.st_size} "
                    f"bytes in all) was not read")
        if clipped_line:
            note += f"; line {offset + 1} was cut to {cap} characters"
        if more:
            note += f"; call read_file with offset={stop} to read on"
        text += note + "]"
    return text


def list_dir(ws: Workspace, path: str = ".") -> str:
    fd, st, parts = ws._open_existing(path)
    try:
        if not stat.S_ISDIR(st.st_mode):
            raise ToolError(f"{path!r} is not a directory (use read_file)")
        with os.scandir(fd) as it:
            entries = sorted(it, key=lambda e: e.name)
        lines: list[str] = []
        for entry in entries:
            name = display(entry.name)
            if entry.is_symlink():
                lines.append(f"{name} -> {display(os.readlink(entry.name, dir_fd=fd))}")
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
        if chars + len(line) + 1 > ws.output_limit:
            out.append(f"[... {len(lines) - i} more entries not shown (output limit "
                       f"{ws.output_limit} characters); list a subdirectory instead]")
            break
        out.append(line)
        chars += len(line) + 1
    return "\n".join(out)

def write_file(ws: Workspace, path: str, content: str) -> str:
    if not isinstance(content, str):
        raise ToolError(f"write_file: content must be a string, got {type(content).__name__}")
    try:
        data = content.encode("utf-8")
    except UnicodeEncodeError:
        raise ToolError("write_file: content is not valid Unicode text (it holds a lone "
                        "surrogate); it cannot be written as UTF-8") from None
    parts = ws._write_bytes(path, data)
    real = "/".join(parts)
    via = f" (through a symlink: {display(real)})" if real != "/".join(check_path(path)) else ""
    return f"wrote {len(data)} bytes to {path}{via}"

def edit_file(ws: Workspace, path: str, old: str, new: str) -> str:
    for name, value in (("old", old), ("new", new)):
        if not isinstance(value, str):
            raise ToolError(f"edit_file: {name} must be a string, got {type(value).__name__}")
    check_path(path, write=True)
    data, _parts = ws._read_bytes(path, write=True)
    if b"\x00" in data[:BINARY_SNIFF_BYTES]:
        raise ToolError(f"{path!r} looks like a binary file (it contains NUL bytes); edit_file "
                        f"only edits text")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ToolError(f"{path!r} is not valid UTF-8 (byte {e.start}); editing it as text "
                        f"would corrupt it") from None
    updated = apply_edit(text, old, new, path)
    try:
        encoded = updated.encode("utf-8")
    except UnicodeEncodeError:
        raise ToolError("edit_file: new is not valid Unicode text (it holds a lone surrogate)") from None
    ws._write_bytes(path, encoded)
    return (f"edited {path}: replaced 1 occurrence ({old.count(chr(10)) + 1} line(s) -> "
            f"{new.count(chr(10)) + 1} line(s))")
