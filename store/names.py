"""Track ids, short names, SHAs and small text helpers. Pure functions: no thread affinity, no
state."""
from __future__ import annotations

import datetime as _dt
import re
import unicodedata

from store.errors import StoreError

DEFAULT_PHASE = "Implementation"
HEX_RE = re.compile(r"[0-9a-fA-F]{7,40}")
_STOP_WORDS = frozenset({"a", "an", "the", "and", "or", "of", "to", "for", "in", "on", "with",
                         "into", "from", "by", "at", "as", "is", "be"})


def one_line(text: str) -> str:
    return " ".join(text.split())


def strip_blank(lines: list[str]) -> list[str]:
    start, end = 0, len(lines)
    while start < end and not lines[start].strip():
        start += 1
    while end > start and not lines[end - 1].strip():
        end -= 1
    return lines[start:end]


def shortname(title: str) -> str:
    ascii_title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode("ascii")
    words = re.findall(r"[a-z0-9]+", ascii_title.lower())
    words = [w for w in words if w not in _STOP_WORDS] or words
    out = ""
    for w in words[:4]:
        cand = f"{out}_{w}" if out else w
        if len(cand) > 30:
            break
        out = cand
    if not out and words:
        out = words[0][:30]
    return out or "track"


def id_prefix(track_id: str) -> str:
    """"health_endpoint_20261124" -> "HE": the prefix of generated ticket ids."""
    core = re.sub(r"_\d{8}(?:_\d+)?$", "", track_id)
    core = re.sub(r"^\d{8}_", "", core)
    words = [w for w in re.split(r"[^A-Za-z0-9]+", core) if w and w[0].isascii() and w[0].isalpha()]
    return "".join(w[0].upper() for w in words[:4]) or "T"


def date_from_track_id(track_id: str) -> str:
    m = re.search(r"(?:^|_)(\d{4})(\d{2})(\d{2})(?:_|$)", track_id)
    if not m:
        return ""
    try:
        d = _dt.date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    except ValueError:
        return ""
    return f"{d.isoformat()}T00:00:00Z"


def short_sha(sha: str) -> str:
    s = sha.strip()
    return s[:7] if HEX_RE.fullmatch(s) else ""


def phase_label(phase: str) -> str:
    return one_line(phase) or DEFAULT_PHASE


def check_track_id(track_id: str) -> None:
    if (not isinstance(track_id, str) or not track_id.strip() or track_id in (".", "..")
            or track_id.startswith((".", "_")) or any(c in track_id for c in "/\\\0")
            or track_id != track_id.strip()):
        raise StoreError(f"invalid track id {track_id!r}: it must be a plain folder name "
                         f"(no slashes, not starting with '.' or '_')")
