"""Rendering a ranked map to text that fits a token budget, and one file's skeleton.

Threads: any. State: none.

Unlike Aider, which binary-searches how many ranked tags fit because its tree rendering is not
additive, each file here renders to its own block, so a greedy pass is exact: blocks are taken in
rank order while they fit; once a file's block no longer fits, the files after it are listed by
path alone while those fit; a last line counts what was left out. The text never exceeds the
budget under `estimate_tokens`, the same one-token-per-four-characters estimate the offline
provider and the context sections use.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

from toolbox.repomap.graph import RankedFile
from toolbox.repomap.outline import Outline


def estimate_tokens(text: str) -> int:
    """One token per four characters, rounded up (ai_client.estimate_tokens' rule)."""
    return -(-len(text) // 4)


def file_block(path: str, out: Outline, reason: str = "") -> str:
    """`path:` (with why it is in the map, when the ranking says) then one indented line per
    definition; an outline error is noted in place. No blank lines: a map is one paragraph."""
    lines = [f"{path}: ({reason})" if reason else f"{path}:"]
    if out.error:
        lines.append(f"  ({out.error})")
    for s in out.symbols:
        lines.append("  " * (s.depth + 1) + s.signature)
    return "\n".join(lines) + "\n"


def skeleton(path: str, out: Outline) -> str:
    """Every definition of one file with its line number, for a worker's context files."""
    if out.error:
        return f"# {path}: {out.error}\n"
    if not out.symbols:
        return f"# {path}: no definitions\n"
    return "".join(f"{'    ' * s.depth}{s.signature}  # line {s.line}\n" for s in out.symbols)


def render_ranked(ranked: Sequence[RankedFile], outlines: Mapping[str, Outline],
                  budget_tokens: int) -> str:
    if budget_tokens <= 0:
        raise ValueError(f"a map needs a positive token budget, got {budget_tokens}")
    limit = budget_tokens * 4          # estimate_tokens(t) <= budget  <=>  len(t) <= 4 * budget
    parts: list[str] = []
    chars = 0
    paths_only = False
    for rf in ranked:
        block = f"{rf.path}\n" if paths_only else file_block(rf.path, outlines[rf.path], rf.reason)
        if chars + len(block) > limit and not paths_only:
            paths_only = True
            block = f"{rf.path}\n"
        if chars + len(block) > limit:
            break
        parts.append(block)
        chars += len(block)
    left = len(ranked) - len(parts)
    if left:
        while parts:
            note = f"(… {left} more files not shown)\n"
            if chars + len(note) <= limit:
                parts.append(note)
                break
            chars -= len(parts.pop())
            left += 1
    return "".join(parts)
