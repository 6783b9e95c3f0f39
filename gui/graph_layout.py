"""The ticket graph's layout: layers by dependency depth, left to right, with edges that never
cross a node (issue 20, defect 11: boxes of parallel tickets touched or overlapped, edges ran
behind boxes).

A small Sugiyama-style layout, in plain geometry (no imgui, so it is tested on its own):
1. layer = dependency depth (a ticket with no dependencies is in layer 0; otherwise one more than
   its deepest dependency), so every edge points right;
2. an edge that spans several layers gets a waypoint ("dummy") in each layer it passes: a slot
   of its own in that layer's column, so it crosses the column where no node is;
3. the order in each layer is improved by barycentre sweeps (down and up) to cut crossings;
4. every item gets its own vertical slot in its column (nodes `node_h`, waypoints `lane_h`,
   `gap` apart): nodes never overlap; an edge is a curve inside the gap between two columns
   (a cubic Bézier whose control points lie in the gap stays in the gap) and a straight line
   through each column it crosses, at its own slot: it never crosses a node.

Thread: any (pure functions). State: none (a `GraphLayout` is a value).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence


@dataclass(frozen=True)
class Box:
    x: float
    y: float
    w: float
    h: float

    def contains(self, px: float, py: float) -> bool:
        return self.x <= px <= self.x + self.w and self.y <= py <= self.y + self.h

    def overlaps(self, o: Box) -> bool:
        return (self.x < o.x + o.w and o.x < self.x + self.w
                and self.y < o.y + o.h and o.y < self.y + self.h)


@dataclass
class Edge:
    src: str
    dst: str
    # out-port, then (in, out) at each waypoint, then the target's in-port: the segments
    # points[0]->points[1], points[2]->points[3]... are curves in a gap between columns; the
    # ones between (points[1], points[2])... are straight lines through a column.
    points: list[tuple[float, float]]


@dataclass
class GraphLayout:
    nodes: dict[str, Box] = field(default_factory=dict)
    edges: list[Edge] = field(default_factory=list)
    layers: list[list[str]] = field(default_factory=list)   # node ids and waypoint ids, in order
    width: float = 0.0
    height: float = 0.0
    cyclic: list[tuple[str, str]] = field(default_factory=list)   # edges not drawn (a cycle)


def depths(deps: dict[str, Sequence[str]]) -> dict[str, int]:
    """Layer of each node: 0 without dependencies, else 1 + the deepest dependency. Unknown
    dependencies are ignored; a cycle is cut where it is found (its nodes still get a layer)."""
    depth: dict[str, int] = {}
    for start in deps:
        if start in depth:
            continue
        # iterative DFS (a long chain must not hit Python's recursion limit)
        stack: list[tuple[str, int]] = [(start, 0)]
        on_path: set[str] = {start}
        while stack:
            node, i = stack[-1]
            ds = [d for d in deps[node] if d in deps]
            if i < len(ds):
                stack[-1] = (node, i + 1)
                d = ds[i]
                if d not in depth and d not in on_path:
                    on_path.add(d)
                    stack.append((d, 0))
                continue
            depth[node] = 1 + max((depth[d] for d in ds if d in depth), default=-1)
            on_path.discard(node)
            stack.pop()
    return depth


def _order_layers(layers: list[list[str]], preds: dict[str, list[str]],
                  succs: dict[str, list[str]], sweeps: int = 4) -> None:
    """Barycentre heuristic, in place: each item moves towards the mean position of its
    neighbours in the previous layer (down sweeps) or the next one (up sweeps). Ties keep the
    current order, so the result is deterministic."""
    def sweep(rng: Iterable[int], neighbours: dict[str, list[str]], ref_step: int) -> None:
        for li in rng:
            ref = {n: i for i, n in enumerate(layers[li + ref_step])}
            cur = layers[li]

            def key(item: tuple[int, str]) -> tuple[float, int]:
                i, n = item
                ps = [ref[p] for p in neighbours.get(n, ()) if p in ref]
                return (sum(ps) / len(ps) if ps else float(i), i)
            layers[li] = [n for _i, n in sorted(enumerate(cur), key=key)]
    for _ in range(sweeps):
        sweep(range(1, len(layers)), preds, -1)
        sweep(range(len(layers) - 2, -1, -1), succs, +1)


def layout(deps: dict[str, Sequence[str]], *, node_w: float, node_h: float, lane_h: float,
           col_gap: float, gap: float, margin: float = 8.0) -> GraphLayout:
    """Place every node of the DAG `deps` (id -> the ids it depends on), in the given order
    for ties. See the module docstring."""
    depth = depths(deps)
    n_layers = 1 + max(depth.values(), default=-1)
    layers: list[list[str]] = [[] for _ in range(n_layers)]
    for nid in deps:
        layers[depth[nid]].append(nid)
    preds: dict[str, list[str]] = {}
    succs: dict[str, list[str]] = {}
    chains: list[tuple[str, str, list[str]]] = []     # (src, dst, waypoint ids)
    cyclic: list[tuple[str, str]] = []
    for dst, ds in deps.items():
        for src in ds:
            if src not in deps:
                continue
            if depth[src] >= depth[dst]:
                cyclic.append((src, dst))
                continue
            prev = src
            way: list[str] = []
            for li in range(depth[src] + 1, depth[dst]):
                w = f"\0{src}->{dst}@{li}"
                layers[li].append(w)
                way.append(w)
                succs.setdefault(prev, []).append(w)
                preds.setdefault(w, []).append(prev)
                prev = w
            succs.setdefault(prev, []).append(dst)
            preds.setdefault(dst, []).append(prev)
            chains.append((src, dst, way))
    _order_layers(layers, preds, succs)

    out = GraphLayout(layers=layers, cyclic=cyclic)
    ys: dict[str, float] = {}           # centre line of each item
    col_h = []
    for items in layers:
        h = sum(node_h if not i.startswith("\0") else lane_h for i in items) + gap * max(len(items) - 1, 0)
        col_h.append(h)
    total_h = max(col_h, default=0.0)
    for li, items in enumerate(layers):
        x = margin + li * (node_w + col_gap)
        y = margin + (total_h - col_h[li]) / 2        # each column centred on the tallest
        for i in items:
            h = lane_h if i.startswith("\0") else node_h
            if not i.startswith("\0"):
                out.nodes[i] = Box(x, y, node_w, node_h)
            ys[i] = y + h / 2
            y += h + gap
    for src, dst, way in chains:
        s, d = out.nodes[src], out.nodes[dst]
        pts = [(s.x + s.w, ys[src])]
        for w in way:
            li = int(w.rsplit("@", 1)[1])
            x = margin + li * (node_w + col_gap)
            pts += [(x, ys[w]), (x + node_w, ys[w])]
        pts.append((d.x, ys[dst]))
        out.edges.append(Edge(src, dst, pts))
    out.width = margin * 2 + n_layers * node_w + max(n_layers - 1, 0) * col_gap
    out.height = margin * 2 + total_h
    return out


def bezier(p0: tuple[float, float], p3: tuple[float, float], steps: int = 12
           ) -> list[tuple[float, float]]:
    """The curve drawn between two columns (horizontal tangents at both ends), as points: its
    control points share the ends' x range, so it stays inside the gap."""
    (x0, y0), (x3, y3) = p0, p3
    dx = (x3 - x0) * 0.5
    c1, c2 = (x0 + dx, y0), (x3 - dx, y3)
    out = []
    for k in range(steps + 1):
        t = k / steps
        a, b, c, d = (1 - t) ** 3, 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t ** 2, t ** 3
        out.append((a * x0 + b * c1[0] + c * c2[0] + d * x3, a * y0 + b * c1[1] + c * c2[1] + d * y3))
    return out


def edge_path(e: Edge, steps: int = 12) -> list[tuple[float, float]]:
    """The whole edge as a polyline: curves in the gaps, straight lines through columns."""
    pts: list[tuple[float, float]] = []
    for i in range(0, len(e.points) - 1, 2):
        seg = bezier(e.points[i], e.points[i + 1], steps)
        pts += seg if not pts else seg[1:]
        if i + 2 < len(e.points):
            pts.append(e.points[i + 2])
    return pts
