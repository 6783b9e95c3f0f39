"""The unified diff the approval dialog shows for write_file and edit_file.

Threads: any (the engine's loop thread or the GUI asks for it); reads through the workspace's
walk and writes nothing. State: none.
"""
from __future__ import annotations

import difflib
from typing import TYPE_CHECKING

from toolbox.errors import NotFound, SandboxError, ToolError
from toolbox.files import apply_edit
from toolbox.paths import BINARY_SNIFF_BYTES, check_path
from toolbox.specs import tool_spec, validate_args

if TYPE_CHECKING:
    from toolbox.workspace import Workspace


def unified_diff(old: str, new: str, path: str, *, new_file: bool) -> str:
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




def diff_preview(workspace: Workspace, name: str, args: dict) -> str:
    """For the approval dialog: the unified diff that ``write_file``/``edit_file`` would make
    (or a clear text saying why it cannot be made). Other tools: ""."""
    if name not in ("write_file", "edit_file"):
        return ""
    try:
        clean = validate_args(tool_spec(name), args)
        path = clean["path"]
        check_path(path, write=True)
        try:
            data, _parts = workspace._read_bytes(path, write=True)
            exists = True
        except NotFound:
            if name == "edit_file":
                raise
            data, exists = b"", False
        if b"\x00" in data[:BINARY_SNIFF_BYTES]:
            return (f"cannot preview {name}: {path!r} is a binary file ({len(data)} bytes); "
                    f"{name} would replace it with text")
        old_text = data.decode("utf-8", errors="replace")
        if name == "write_file":
            new_text = clean["content"]
        else:
            new_text = apply_edit(old_text, clean["old"], clean["new"], path)
    except SandboxError as e:
        return f"cannot preview {name}: refused: {e}"
    except ToolError as e:
        return f"cannot preview {name}: {e}"
    return unified_diff(old_text, new_text, path, new_file=not exists)

