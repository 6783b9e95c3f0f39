"""Plan tasks <-> tickets: which ticket each task of plan.md is, and the default dependencies.

A task's ticket id is, in this order: the id written on its line (`Task: T-001 ...`, `[id: x]`,
from plans older Clutch versions wrote); the id of a known ticket (state.toml's at load, the
track's at save) with the same text; the first unmatched known ticket whose text is mostly the same
(its text was edited by hand); else `<PREFIX>-<position>`. Load and save use the same function, so they agree.

Default dependencies follow plan order: each task waits for the task before it (so a phase's
first task waits for the previous phase's last one, its manual-verification checkpoint).

Pure functions; no thread affinity, no state.
"""
from __future__ import annotations

from collections.abc import Sequence
from difflib import SequenceMatcher

from store.names import DEFAULT_PHASE, one_line, phase_label
from store.plan import PlanTask


def _first(text: str) -> str:
    return one_line(text.split("\n", 1)[0])


def _similar(a: str, b: str) -> bool:
    m = SequenceMatcher(None, a.lower(), b.lower(), autojunk=False)
    return m.real_quick_ratio() >= 0.6 and m.quick_ratio() >= 0.6 and m.ratio() >= 0.6


def _same_place(t: PlanTask, k: tuple[str, str, str]) -> bool:
    return ((t.explicit_id is None or t.explicit_id == k[0]) and t.text == k[1]
            and (t.phase == (k[2] or DEFAULT_PHASE) or t.phase == k[2]
                 or phase_label(t.phase) == phase_label(k[2])))


def match_ids(tasks: Sequence[PlanTask], known: Sequence[tuple[str, str, str]], prefix: str
              ) -> tuple[list[str], list[tuple[int, str]]]:
    """(the ticket id of each task, [(task index, duplicate explicit id)] read under a new id).
    `known`: (ticket id, description, phase) of tickets known from elsewhere, in their order.
    Among tickets with the same text, one in the task's phase is taken first."""
    if len(tasks) == len(known) and all(_same_place(t, k) for t, k in zip(tasks, known)):
        # task i is ticket i (the usual save): what the full matching below gives, in O(n)
        return [k[0] for k in known], []
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
    free = [k for k in known if k[0] not in taken]
    by_text: dict[str, list[int]] = {}
    by_first: dict[str, list[int]] = {}
    for k, (_, desc, _) in enumerate(free):
        by_text.setdefault(desc, []).append(k)
        by_first.setdefault(_first(desc), []).append(k)
    used: set[int] = set()
    skip = {i for i, _ in dups}

    def take(i: int, k: int) -> None:
        used.add(k)
        ids[i] = free[k][0]
        taken.add(free[k][0])

    for table, key in ((by_text, lambda t: t.text), (by_first, lambda t: _first(t.text))):
        for i, t in enumerate(tasks):
            if ids[i] is not None or i in skip:
                continue
            cands = [k for k in table.get(key(t), ()) if k not in used]
            if cands:
                label = phase_label(t.phase)
                take(i, next((k for k in cands if phase_label(free[k][2]) == label), cands[0]))
    for i, t in enumerate(tasks):       # text edited by hand: the first still-unmatched ticket
        if ids[i] is not None or i in skip:   # whose text is mostly the same
            continue
        for k in range(len(free)):
            if k not in used and _similar(_first(t.text), _first(free[k][1])):
                take(i, k)
                break
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
