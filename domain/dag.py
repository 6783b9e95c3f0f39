"""Pure helpers over a ticket graph: problems, order, readiness, critical path, overlaps.

Part of the models layer (door: models.py); imports nothing of ours but its siblings.
Pure data and functions: any thread, no state of its own.
"""
from __future__ import annotations

import heapq
import re
from collections.abc import Iterable, Mapping


from domain.core import SATISFIED_STATES, Ticket, TrackPlan

# ---------------------------------------------------------------------------------------------
# DAG helpers
# ---------------------------------------------------------------------------------------------

class DagError(ValueError):
    """An invalid ticket graph. `problems` lists every problem found, each a sentence."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))


def dag_problems(tickets: Iterable[Ticket]) -> list[str]:
    """Every problem in the graph: duplicate ids, unknown dependencies, self-dependencies, cycles.

    Cycles are reported with their path, e.g. "cycle: T-1 -> T-2 -> T-1".
    """
    tickets = list(tickets)
    problems: list[str] = []
    ids: dict[str, int] = {}
    for t in tickets:
        ids[t.id] = ids.get(t.id, 0) + 1
    for tid, n in ids.items():
        if n > 1:
            problems.append(f"duplicate ticket id {tid!r} ({n} tickets)")
    for t in tickets:
        for d in t.depends_on:
            if d == t.id:
                problems.append(f"{t.id} depends on itself")
            elif d not in ids:
                problems.append(f"{t.id} depends on unknown ticket {d!r}")
    problems.extend(_cycles(tickets, ids))
    return problems


def _cycles(tickets: list[Ticket], ids: Mapping[str, int]) -> list[str]:
    graph = {t.id: [d for d in t.depends_on if d in ids and d != t.id] for t in tickets}
    WHITE, GREY, BLACK = 0, 1, 2
    colour = {tid: WHITE for tid in graph}
    found: list[str] = []
    seen_cycles: set[frozenset[str]] = set()
    for root in graph:
        if colour[root] != WHITE:
            continue
        # iterative DFS keeping the path, so a 1,000-deep chain does not hit the recursion limit
        stack: list[tuple[str, int]] = [(root, 0)]
        path: list[str] = [root]
        colour[root] = GREY
        while stack:
            node, i = stack[-1]
            deps = graph[node]
            if i < len(deps):
                stack[-1] = (node, i + 1)
                nxt = deps[i]
                if colour[nxt] == WHITE:
                    colour[nxt] = GREY
                    stack.append((nxt, 0))
                    path.append(nxt)
                elif colour[nxt] == GREY:
                    cyc = path[path.index(nxt):]
                    key = frozenset(cyc)
                    if key not in seen_cycles:
                        seen_cycles.add(key)
                        # path follows "depends on" edges; print in execution order
                        order = list(reversed(cyc))
                        found.append("cycle: " + " -> ".join(order + [order[0]]))
            else:
                colour[node] = BLACK
                stack.pop()
                path.pop()
    return found


def validate_dag(tickets: Iterable[Ticket]) -> None:
    problems = dag_problems(tickets)
    if problems:
        raise DagError(problems)


def topological_order(tickets: Iterable[Ticket]) -> list[str]:
    """Kahn's algorithm, ties broken by the tickets' order. Raises DagError on a bad graph."""
    tickets = list(tickets)
    validate_dag(tickets)
    pos = {t.id: i for i, t in enumerate(tickets)}
    indeg = {t.id: len(set(t.depends_on)) for t in tickets}
    dependents: dict[str, list[str]] = {t.id: [] for t in tickets}
    for t in tickets:
        for d in set(t.depends_on):
            dependents[d].append(t.id)
    heap = [(pos[tid], tid) for tid, n in indeg.items() if n == 0]
    heapq.heapify(heap)
    out: list[str] = []
    while heap:
        _, tid = heapq.heappop(heap)
        out.append(tid)
        for nxt in dependents[tid]:
            indeg[nxt] -= 1
            if indeg[nxt] == 0:
                heapq.heappush(heap, (pos[nxt], nxt))
    return out


def ready_tickets(tickets: Iterable[Ticket]) -> list[Ticket]:
    """Tickets that may start now: todo, every dependency completed or skipped."""
    tickets = list(tickets)
    status = {t.id: t.status for t in tickets}
    return [t for t in tickets
            if t.status == "todo" and all(status.get(d) in SATISFIED_STATES for d in t.depends_on)]


def critical_path(tickets: Iterable[Ticket], durations: Mapping[str, float] | None = None
                  ) -> tuple[float, list[str]]:
    """Longest path through the DAG by duration (default 1 per ticket): (length, ticket ids)."""
    tickets = list(tickets)
    by_id = {t.id: t for t in tickets}
    best: dict[str, tuple[float, str | None]] = {}
    for tid in topological_order(tickets):
        d = durations.get(tid, 1.0) if durations else 1.0
        prev = max(((best[p][0], p) for p in by_id[tid].depends_on), default=(0.0, None))
        best[tid] = (prev[0] + d, prev[1])
    if not best:
        return 0.0, []
    end = max(best, key=lambda k: best[k][0])
    length = best[end][0]
    path: list[str] = []
    cur: str | None = end
    while cur is not None:
        path.append(cur)
        cur = best[cur][1]
    return length, list(reversed(path))


def _ancestors(tickets: list[Ticket]) -> dict[str, set[str]]:
    by_id = {t.id: t for t in tickets}
    anc: dict[str, set[str]] = {}
    for tid in topological_order(tickets):
        s: set[str] = set()
        for d in by_id[tid].depends_on:
            s.add(d)
            s |= anc[d]
        anc[tid] = s
    return anc


def file_overlap_warnings(tickets: Iterable[Ticket]) -> list[str]:
    """Two tickets that may run in parallel (neither depends on the other, transitively) yet
    name the same target file. Returns [] for an invalid graph (its problems come first)."""
    tickets = list(tickets)
    if dag_problems(tickets):
        return []
    anc = _ancestors(tickets)
    owners: dict[str, list[str]] = {}
    for t in tickets:
        for f in dict.fromkeys(_norm_path(p) for p in t.target_files):
            owners.setdefault(f, []).append(t.id)
    warnings = []
    for f, ids in owners.items():
        for i, a in enumerate(ids):
            for b in ids[i + 1:]:
                if a not in anc[b] and b not in anc[a]:
                    warnings.append(f"{a} and {b} may run in parallel and both target {f}")
    return warnings


def _norm_path(p: str) -> str:
    p = p.strip().replace("\\", "/")
    while p.startswith("./"):
        p = p[2:]
    return p


_OPEN_SUBTASK = re.compile(r"^(\s*[-*] )\[[ ~]\]", re.M)


def tick_subtasks(description: str) -> str:
    """Mark a ticket's sub-task lines ("- [ ] step", kept in its description) done."""
    if "[" not in description:          # no sub-task lines: skip the regex (once per ticket)
        return description
    return _OPEN_SUBTASK.sub(r"\1[x]", description)


def tickets_from_plan(plan: TrackPlan) -> list[Ticket]:
    return [Ticket(id=p.id, description=p.description, target_files=list(p.target_files),
                   context_requirements=list(p.context_requirements),
                   depends_on=list(p.depends_on)) for p in plan.tickets]
