"""Scrubbing secrets (API keys) out of text: the whole key, and any 12-character piece of it.

A key can leak in pieces: a 20-character prefix in an error message, a line of a file that
holds half of it. `Scrubber(secrets).scrub(text)` replaces every run of 12 or more characters
that also occurs in one of the secrets with `[redacted]`.

How it stays fast on a megabyte of text: a run of at least 12 characters of a secret always
covers one whole 6-character block of that secret taken at an offset that is a multiple of 6
(blocks at offsets 0, 6, 12, ...; any 12 consecutive characters hold one of them). So the text
is scanned once, by one compiled regex of those few blocks (a 39-character key has 6), and only
where a block occurs is the match grown left and right against the secret, character by
character. Text without any block costs a few C-level substring searches (one per block,
faster than the regex on a miss) and no allocation.

Secrets shorter than 12 characters are matched whole; shorter than 8 are ignored (test stubs;
scrubbing a 3-character "key" would blank ordinary words).

Threads: any. A Scrubber is immutable after construction (its tables are built in __init__ and
never changed), so one is shared by every thread. State owned: none beyond those tables.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

WINDOW = 12                 # a piece of a secret this long or longer is scrubbed
MIN_SECRET = 8              # shorter secrets are ignored
REDACTED = "[redacted]"
_BLOCK = WINDOW // 2
KEY_VARS = ("GEMINI_API_KEY", "GOOGLE_API_KEY", "OPENAI_API_KEY", "ANTHROPIC_API_KEY")


class Scrubber:
    """Removes any 12-character (or longer) substring of the given secrets from text."""

    __slots__ = ("_secrets", "_short", "_blocks", "_re", "_needles")

    def __init__(self, secrets: Iterable[str | None] = ()):
        seen: list[str] = []
        for s in secrets:
            s = (s or "").strip()
            if len(s) >= MIN_SECRET and s not in seen:
                seen.append(s)
        self._secrets: tuple[str, ...] = tuple(seen)
        # whole-match secrets (8..11 characters), longest first
        self._short = tuple(sorted((s for s in seen if len(s) < WINDOW), key=len, reverse=True))
        # block text -> [(secret, offset of the block in the secret)]
        blocks: dict[str, list[tuple[str, int]]] = {}
        for s in seen:
            if len(s) < WINDOW:
                continue
            for off in range(0, len(s) - _BLOCK + 1, _BLOCK):
                blocks.setdefault(s[off:off + _BLOCK], []).append((s, off))
        self._blocks = blocks
        alts = sorted(blocks, key=len, reverse=True) + list(self._short)
        self._re = re.compile("|".join(map(re.escape, alts))) if alts else None
        self._needles = tuple(alts)   # `in` checks first: faster than the regex on a miss

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None,
                 extra: Iterable[str | None] = ()) -> "Scrubber":
        """A scrubber for the provider keys in the environment (and `extra` secrets)."""
        env: Mapping[str, Any] = os.environ if environ is None else environ
        return cls([*(env.get(v) for v in KEY_VARS), *extra])

    def __bool__(self) -> bool:
        return self._re is not None

    def __repr__(self) -> str:                    # never shows a secret
        return f"Scrubber({len(self._secrets)} secret(s))"

    def with_secrets(self, more: Iterable[str | None]) -> "Scrubber":
        """A new scrubber for these secrets and `more` (this one is unchanged)."""
        return Scrubber([*self._secrets, *more])

    def merged(self, other: "Scrubber") -> "Scrubber":
        """A new scrubber for this one's secrets and `other`'s."""
        return Scrubber([*self._secrets, *other._secrets])

    def scrub(self, text: str) -> str:
        """`text` with every run of >= 12 characters of a secret (and every whole short
        secret) replaced by [redacted]. Returns `text` itself when there is nothing to do."""
        rx = self._re
        if rx is None or not text:
            return text
        for needle in self._needles:
            if needle in text:
                break
        else:
            return text
        spans: list[tuple[int, int]] = []
        pos = 0
        n = len(text)
        while True:
            m = rx.search(text, pos)
            if m is None:
                break
            a, b = m.span()
            hit = m.group()
            best = (a, b) if hit in self._short else None
            for secret, off in self._blocks.get(hit, ()):
                lo, hi = a, b
                i = off - 1
                while i >= 0 and lo > 0 and text[lo - 1] == secret[i]:
                    lo -= 1
                    i -= 1
                j = off + _BLOCK
                while j < len(secret) and hi < n and text[hi] == secret[j]:
                    hi += 1
                    j += 1
                if hi - lo >= WINDOW and (best is None or hi - lo > best[1] - best[0]):
                    best = (lo, hi)
            if best is not None:
                if spans and best[0] <= spans[-1][1]:
                    spans[-1] = (min(spans[-1][0], best[0]), max(spans[-1][1], best[1]))
                else:
                    spans.append(best)
                pos = max(best[1], a + 1)
            else:
                pos = a + 1
        if not spans:
            return text
        out: list[str] = []
        last = 0
        for lo, hi in spans:
            out.append(text[last:lo])
            out.append(REDACTED)
            last = hi
        out.append(text[last:])
        return "".join(out)

    def held_suffix(self, text: str) -> int:
        """How many characters at the end of `text` could begin a piece of a secret that the
        next chunk of a stream completes: the longest suffix (under 12 characters) that occurs
        in a secret. A stream holds them back until the next chunk or its end."""
        if self._re is None or not text:
            return 0
        for k in range(min(WINDOW - 1, len(text)), 0, -1):
            tail = text[-k:]
            if any(tail in s for s in self._secrets):
                return k
        return 0

    def scrub_obj(self, obj: Any) -> Any:
        """Strings scrubbed anywhere inside dicts, lists and tuples (a new object where
        something changed; the input is never modified)."""
        if self._re is None:
            return obj
        if isinstance(obj, str):
            return self.scrub(obj)
        if isinstance(obj, dict):
            return {k: self.scrub_obj(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return type(obj)(self.scrub_obj(v) for v in obj)
        return obj
