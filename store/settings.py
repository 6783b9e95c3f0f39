"""Settings in `<workspace>/.clutch/config.toml`: read with every problem turned into a notice
(the bad file moved aside, defaults used), written atomically. API keys are never read from
or written to this file. Runs on the caller's thread; owns no state.
"""
from __future__ import annotations

import os
import tomllib
import typing
from pathlib import Path
from typing import Any

import tomli_w
from pydantic import BaseModel, ValidationError

from models import Settings
from store.errors import StoreError
from store.fsio import aside_path, atomic_write_bytes
from store.state import format_validation_error

_SECRET_NAMES = frozenset({"api_key", "apikey", "token", "secret", "password"})
_SECRET_SUFFIXES = ("_key", "_token", "_secret", "_password", "apikey")


def _is_secret_key(key: str) -> bool:
    k = key.lower()
    return k in _SECRET_NAMES or k.endswith(_SECRET_SUFFIXES)


def secret_keys(data: Any, prefix: str = "") -> list[str]:
    found: list[str] = []
    if isinstance(data, dict):
        for k, v in data.items():
            name = f"{prefix}{k}"
            if _is_secret_key(str(k)):
                found.append(name)
            found += secret_keys(v, name + ".")
    elif isinstance(data, list):
        for i, v in enumerate(data):
            found += secret_keys(v, f"{prefix[:-1]}[{i}]." if prefix else f"[{i}].")
    return found


def _model_class(ann: Any) -> type[BaseModel] | None:
    return ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None


def unknown_keys(model: type[BaseModel], data: Any, prefix: str = "") -> list[str]:
    if not isinstance(data, dict):
        return []   # a wrong type is reported by validation
    out: list[str] = []
    for k, v in data.items():
        info = model.model_fields.get(k)
        if info is None:
            out.append(f"{prefix}{k}")
            continue
        sub = _model_class(info.annotation)
        if sub is not None:
            out += unknown_keys(sub, v, f"{prefix}{k}.")
        elif typing.get_origin(info.annotation) is dict and isinstance(v, dict):
            args = typing.get_args(info.annotation)
            vsub = _model_class(args[1]) if len(args) == 2 else None
            if vsub is not None:
                for kk, vv in v.items():
                    out += unknown_keys(vsub, vv, f"{prefix}{k}.{kk}.")
    return out


def load_settings(path: Path) -> tuple[Settings, list[str]]:
    """Settings from config.toml; on any problem the file is moved aside and defaults used."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return Settings(), []
    except OSError as e:
        return Settings(), [f"{path}: cannot read settings ({e.strerror or e}); using defaults"]
    reason: str | None = None
    data: dict[str, Any] = {}
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        reason = f"not UTF-8 text (byte {e.start})"
    except tomllib.TOMLDecodeError as e:
        reason = f"invalid TOML: {e}"
    if reason is None:
        secrets = secret_keys(data)
        if secrets:
            reason = (f"contains key-like field(s) {', '.join(secrets)}: API keys are never "
                      f"read from this file; set GEMINI_API_KEY or GOOGLE_API_KEY in the "
                      f"environment instead")
    if reason is None:
        unknown = unknown_keys(Settings, data)
        if unknown:
            reason = f"unknown setting(s) {', '.join(unknown)}"
    if reason is None:
        try:
            return Settings.model_validate(data), []
        except ValidationError as e:
            reason = f"invalid value(s): {format_validation_error(e)}"
    dest = aside_path(path)
    try:
        os.rename(path, dest)
    except OSError as e:
        raise StoreError(f"{path}: {reason}; and it could not be moved aside to {dest}: {e}") from e
    return Settings(), [f"{path}: {reason}. The file was moved to {dest}; default settings "
                        f"are in use."]


def save_settings(path: Path, settings: Settings) -> None:
    data = settings.model_dump(mode="json", exclude_none=True)
    atomic_write_bytes(path, tomli_w.dumps(data).encode("utf-8"))
