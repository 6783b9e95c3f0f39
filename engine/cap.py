"""WorkerCap: how many Tier 3 workers run, how many may, and the rate-limit halving.

Threads: the loop thread takes and frees slots (`take`, `free`); any thread reads the figures,
changes the cap (settings) or notes a rate limit (an executor thread, on a 429). State owned:
the active count, the configured cap and the rate-limit deadline, under its own lock.
"""
from __future__ import annotations

import threading
import time


class WorkerCap:
    def __init__(self, cap: int) -> None:
        self._lock = threading.Lock()
        self._active = 0
        self._cap = cap
        self._rate_limited_until = 0.0

    @property
    def active(self) -> int:
        return self._active

    def take(self) -> None:
        with self._lock:
            self._active += 1

    def free(self) -> None:
        with self._lock:
            self._active -= 1

    def set_cap(self, cap: int) -> None:
        with self._lock:
            self._cap = cap

    def effective(self) -> int:
        """The cap now: halved (at least 1) while a provider's rate limit lasts."""
        with self._lock:
            cap, until = self._cap, self._rate_limited_until
        if time.monotonic() < until:
            cap = max(1, cap // 2)
        return cap

    def free_slots(self) -> int:
        return self.effective() - self._active

    def note_rate_limited(self, retry_after: float) -> None:
        """A provider hit a rate limit: halve the cap until twice its retry-after has passed."""
        with self._lock:
            self._rate_limited_until = max(self._rate_limited_until,
                                           time.monotonic() + max(retry_after, 1.0) * 2)
