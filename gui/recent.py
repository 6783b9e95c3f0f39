"""The recent workspaces (File → Open workspace): a short list kept in the user's config folder,
`$CLUTCH_CONFIG_DIR` or `$XDG_CONFIG_HOME/clutch` or `~/.config/clutch`, as `recent.json`.

Written atomically (a temporary file, then `os.replace`); a list that cannot be read is kept
aside as `recent.json.bad` (never silently overwritten) and the app starts a new one, saying so.

Threads: any (plain functions on a path; the app calls them on its background pool). State:
none (the file is the state).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

MAX_RECENT = 12


def recent_file() -> Path:
    base = os.environ.get("CLUTCH_CONFIG_DIR")
    if base:
        return Path(base).expanduser() / "recent.json"
    xdg = os.environ.get("XDG_CONFIG_HOME")
    root = Path(xdg).expanduser() if xdg else Path.home() / ".config"
    return root / "clutch" / "recent.json"


def load_recent(path: Path) -> tuple[list[str], str]:
    """(workspaces, most recent first; a notice for the person, or "")."""
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return [], ""
    except OSError as e:
        return [], f"The recent workspaces could not be read ({path}): {e.strerror or e}"
    try:
        data = json.loads(raw)
        items = data.get("workspaces") if isinstance(data, dict) else None
        if not isinstance(items, list) or not all(isinstance(x, str) for x in items):
            raise ValueError("no list of workspace paths in it")
    except ValueError as e:
        bad = path.with_name(path.name + ".bad")
        os.replace(path, bad)
        return [], f"The recent workspaces list {path} was not valid ({e}); kept as {bad}."
    return items[:MAX_RECENT], ""


def remember(path: Path, workspace: str | os.PathLike[str]) -> list[str]:
    """Put `workspace` first in the list at `path` (written atomically); returns the list."""
    ws = str(Path(workspace).expanduser().resolve())
    items, _notice = load_recent(path)
    items = [ws] + [x for x in items if x != ws]
    items = items[:MAX_RECENT]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"workspaces": items}, indent=1), encoding="utf-8")
    os.replace(tmp, path)
    return items
