"""Stream lines reflowed to the pane's width (issue 20, defect 12: the stream text was a strip
~110 px wide with a horizontal scrollbar; a Tier 4 diagnosis was cut mid-sentence).

A `StreamView` keeps its text as rows (split on newlines, hard-wrapped at `WRAP_COLS` on
arrival). `Reflow` maps those rows to display lines of at most `cols` characters, breaking at a
space where one is in the second half of the line (else mid-word, as a terminal does), without
copying the text: it keeps only the running count of display lines per row, extended as rows
arrive and rebuilt when the width changes; the visible lines are cut from their rows at draw
time. So a frame costs the new rows plus the ~40 visible lines, whatever the stream's size.

GUI thread only. State: each `Reflow` owns its counts (one per stream, in `StreamsState`).
"""
from __future__ import annotations

from array import array
from bisect import bisect_right


def breaks(row: str, cols: int) -> list[int]:
    """Start offsets of the display lines of `row` wrapped at `cols` characters."""
    starts = [0]
    n = len(row)
    s = 0
    while n - s > cols:
        cut = row.rfind(" ", s + cols // 2, s + cols + 1)
        s = cut + 1 if cut > s else s + cols
        starts.append(s)
    return starts


def count_lines(row: str, cols: int) -> int:
    if len(row) <= cols:
        return 1
    return len(breaks(row, cols))


def line_of(row: str, starts: list[int], k: int) -> str:
    end = starts[k + 1] if k + 1 < len(starts) else len(row)
    return row[starts[k]:end].rstrip(" ") if k + 1 < len(starts) else row[starts[k]:end]


class Reflow:
    """Display lines of a list of rows at a width of `cols` characters."""

    __slots__ = ("cols", "rows", "cum", "counted")

    def __init__(self) -> None:
        self.cols = 0
        self.rows: list[str] | None = None
        self.cum = array("q")     # cum[i]: display lines of rows[0..i]
        self.counted = 0          # rows counted (the last may have grown since)

    def sync(self, rows: list[str], n_rows: int, cols: int) -> int:
        """Bring the counts up to the first `n_rows` of `rows` at `cols`; returns the number of
        display lines."""
        cols = max(cols, 8)
        if cols != self.cols or rows is not self.rows or n_rows < self.counted:
            self.cols, self.rows, self.cum, self.counted = cols, rows, array("q"), 0
        if self.counted:                       # the last counted row may have grown
            i = self.counted - 1
            base = self.cum[i - 1] if i else 0
            self.cum[i] = base + count_lines(rows[i], cols)
        total = self.cum[-1] if self.cum else 0
        for i in range(self.counted, n_rows):
            total += count_lines(rows[i], cols)
            self.cum.append(total)
        self.counted = n_rows
        return total

    @property
    def total(self) -> int:
        return self.cum[-1] if self.cum else 0

    def row(self, j: int) -> str:
        """The whole row display line `j` is part of (its colour follows the row's)."""
        assert self.rows is not None
        return self.rows[bisect_right(self.cum, j)]

    def line(self, j: int) -> str:
        """Display line `j` (0 <= j < total)."""
        assert self.rows is not None
        i = bisect_right(self.cum, j)
        k = j - (self.cum[i - 1] if i else 0)
        row = self.rows[i]
        if len(row) <= self.cols:
            return row
        return line_of(row, breaks(row, self.cols), k)
