"""Errors and load problems of the store. Pure data: no thread affinity, no state."""
from __future__ import annotations

from dataclasses import dataclass


class StoreError(Exception):
    """A store operation failed; the message names the file and what went wrong."""


class TrackExistsError(StoreError):
    """create_track() on a track whose folder already exists."""


@dataclass
class LoadProblem:
    """Something wrong in a file we loaded anyway: shown to the user, never fatal."""
    path: str
    line: int | None
    message: str

    def __str__(self) -> str:
        if self.line is None:
            return f"{self.path}: {self.message}"
        return f"{self.path}:{self.line}: {self.message}"
