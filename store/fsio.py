"""File I/O for the store: atomic writes (temp file + fsync + os.replace), reads that keep a
text file's BOM so an edit writes it back byte for byte, and copies aside of corrupt files.

Runs on whichever thread calls the store (the engine's I/O executor, the CLI, tests); owns no
state: every function works on the paths it is given.
"""
from __future__ import annotations

import datetime as _dt
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from store.errors import StoreError

BOM = "\ufeff"


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def stamp() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Temp file in the same directory, fsync, os.replace: the file is old or new, never half."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise StoreError(f"cannot write {path}: {e}") from e
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise StoreError(f"cannot write {path}: {e}") from e
        raise


def write_if_changed(path: Path, text: str) -> bool:
    data = text.encode("utf-8")
    if read_bytes(path) == data:
        return False
    atomic_write_bytes(path, data)
    return True


def write_if_absent(path: Path, text: str) -> bool:
    if path.exists():
        return False
    atomic_write_bytes(path, text.encode("utf-8"))
    return True


def read_bytes(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise StoreError(f"cannot read {path}: {e}") from e


@dataclass
class Text:
    """A text file as read: its text without a BOM, and whether it had one."""
    text: str
    bom: bool = False

    def encode(self, text: str) -> bytes:
        return ((BOM if self.bom else "") + text).encode("utf-8")


def decode(raw: bytes) -> Text:
    """UTF-8 bytes -> Text (raises UnicodeDecodeError)."""
    s = raw.decode("utf-8")
    if s.startswith(BOM):
        return Text(s[1:], True)
    return Text(s, False)


def aside_path(path: Path) -> Path:
    base = f"{path.name}.bad-{stamp()}"
    cand = path.with_name(base)
    n = 2
    while cand.exists():
        cand = path.with_name(f"{base}-{n}")
        n += 1
    return cand


def copy_aside(path: Path) -> Path:
    dest = aside_path(path)
    try:
        shutil.copy2(path, dest)
    except OSError as e:
        raise StoreError(f"cannot keep a copy of {path} as {dest} before overwriting it: {e}") from e
    return dest


def read_for_edit(path: Path) -> Text | None:
    """An existing file we may edit: None if absent or not UTF-8 text (then it is not edited;
    a caller that must replace it copies it aside first)."""
    raw = read_bytes(path)
    if raw is None:
        return None
    try:
        return decode(raw)
    except UnicodeDecodeError:
        return None
