"""Plan tasks <-> tickets: which ticket each task of plan.md is, and the default dependencies.

A task's ticket id is, in this order: the id written on its line (`Task: T-001 ...`, `[id: x]`,
from plans older Clutch versions wrote); the id of a known ticket (state.toml's at load, the
track's at save) with the same text; the next unmatched known ticket in order (its text was
edited); else `<PREFIX>-<position>`. Load and save use the same function, so they agree.

Default dependencies follow plan order: each task waits for the task before it (so a phase's
first task waits for the previous phase's last one, its manual-verification checkpoint).

Pure functions; no thread affinity, no state.
"""
from __future__ import annotations

from collections.abc import Sequence

from store.names import one_line
from store.plan import PlanTask


def _first(text: str) -> str:
    return one_line(text.split("\n", 1)[0])


def match_ids(tasks: Sequence[PlanTask], known: Sequence[tuple[str, str]], prefix: str
              ) -> tuple[list[str], list[tuple[int, str]]]:
    """(the ticket id of each task, [(task index, duplicate explicit id)] read under a new id).
    `known`: (ticket id, description) of tickets known from elsewhere, in their order."""
    ids: list[str | None] = [None] * len(tasks)
    taken: set[str] = set()
    dups: list[tuple[int, str]] = []
    for i, t in enumerate(tasks):
        if t.explicit_id is not None:
            if t.explicit_id in taken:
                dups.append((i, t.explicit_id))
            else:
                ids[i] = t.explicit_id
                taken.add(t.explicit_id)
    free = [(kid, desc) for kid, desc in known if kid not in taken]
    by_text: dict[str, list[int]] = {}
    by_first: dict[str, list[int]] = {}
    for k, (_, desc) in enumerate(free):
        by_text.setdefault(desc, []).append(k)
        by_first.setdefault(_first(desc), []).append(k)
    used: set[int] = set()
    for table, key in ((by_text, lambda t: t.text), (by_first, lambda t: _first(t.text))):
        for i, t in enumerate(tasks):
            if ids[i] is not None or (i, t.explicit_id) in dups:
                continue
            for k in table.get(key(t), ()):
                if k not in used:
                    used.add(k)
                    ids[i] = free[k][0]
                    taken.add(free[k][0])
                    break
    rest = iter(k for k in range(len(free)) if k not in used)
    for i, t in enumerate(tasks):
        if ids[i] is None and (i, t.explicit_id) not in dups:
            k = next(rest, None)
            if k is not None:
                used.add(k)
                ids[i] = free[k][0]
                taken.add(free[k][0])
    explicit = {t.explicit_id for t in tasks if t.explicit_id}
    for i in range(len(tasks)):
        if ids[i] is None:
            cand, n = f"{prefix}-{i + 1}", 2
            while cand in taken or cand in explicit:
                cand = f"{prefix}-{i + 1}-{n}"
                n += 1
            ids[i] = cand
            taken.add(cand)
    return [x for x in ids if x is not None], dups


def plan_order_deps(ids: Sequence[str]) -> list[list[str]]:
    """Each task waits for the one before it in the plan."""
    return [[ids[i - 1]] if i else [] for i in range(len(ids))]
