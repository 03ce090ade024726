"""Positions of our own for a large unrolled drawing, so that its cost grows linearly.

`dot` lays the unrolled strip out in ranks. A delayed edge from step t-k into
step t crosses every rank between its ends; `dot` puts a virtual node on each
rank crossed and places them all with network simplex, whose time grows with
the square of their number. A chain of n layers, each fed back into an earlier
one, has about n such edges of length about n per step: on a 2-core machine
0.5 s at 10 edges, 74 s at 30 (3 steps). Above a size (`dot_work`), the
drawing takes its geometry from here instead: the step graph is ranked and
ordered once (longest path, a few barycenter sweeps), every step is a copy of
it shifted along the strip, and every edge gets its route, as Graphviz's
`pos` attributes (`layout=nop2`: Graphviz draws what it is given). Time and
size are linear in nodes, edges and steps.

The geometry works in "along" (the strip's direction, `rankdir`) and "side"
(across it, row by row) coordinates, turned into Graphviz's points at the
end. A step's nodes sit on a grid of ranks and rows. Between two ranks lies
a gap that no box enters: an edge leaves its tail into the gap after it and
reaches its head from the gap before it, each on a slot of its own in the
gap. An edge between neighbouring ranks crosses the gap; a longer forward
edge (or one back, into a layer called twice) runs in a lane below the rows
of its step; a delayed edge in a lane
above the steps. Lanes are handed out so that edges sharing one do not
overlap. Sizes are estimated from the labels, generously (Graphviz measures
the text itself when it draws).
"""

from __future__ import annotations

import heapq
import math
import re

__all__ = ["Strip", "cyclic_work", "dot_work", "label_size", "rank_and_order"]

_CHAR, _LINE = 6.0, 12.5  # points per character and per line of a 10 pt label, generous
_MIN_W, _MIN_H = 54.0, 36.0  # Graphviz's smallest box, 0.75 x 0.5 inch
_PAD_W, _PAD_H = 18.0, 10.0  # the label's margins and the border
_RANKSEP, _NODESEP, _STEP_GAP = 32.0, 18.0, 56.0
_SLOT = 8.0  # between two edges running side by side in a gap
_LANE = 16.0  # between two lanes: room for a 9 pt label
_ARROW = 7.0  # the arrowhead's length at arrowsize 0.7
_PAD, _LABEL = 10.0, 22.0  # a cluster's margin, and the room for its label


def label_size(label: str, ellipse: bool = False) -> tuple:
    """(width, height) in points that Graphviz draws a 10 pt label's node at, or less."""
    lines = [re.sub(r"\\(.)", r"\1", line) for line in re.split(r"\\[nlr]", label)]
    width = max(_MIN_W, max(len(line) for line in lines) * _CHAR + _PAD_W)
    height = max(_MIN_H, len(lines) * _LINE + _PAD_H)
    if ellipse:  # the ellipse around the text's box
        width, height = width * math.sqrt(2), height * math.sqrt(2)
    return width, height


def rank_and_order(nodes: list, edges: list, sweeps: int = 4) -> tuple:
    """({node: rank}, {node: row}) of a graph whose `nodes` are in topological order.

    Ranks by longest path from the sources, a source moved up next to the
    first node that reads it; rows by barycenter sweeps, alternately on the
    nodes before and after. An edge against the order (a layer called
    twice is one node: `shared -> shared`) is left out. Time
    O(sweeps (V + E) log V).
    """
    order = {n: i for i, n in enumerate(nodes)}
    preds = {n: [] for n in nodes}
    succs = {n: [] for n in nodes}
    for tail, head in edges:
        if order[tail] < order[head]:
            preds[head].append(tail)
            succs[tail].append(head)
    rank = {}
    for n in nodes:
        rank[n] = 1 + max((rank[p] for p in preds[n]), default=-1)
    for n in nodes:
        if not preds[n] and succs[n]:
            rank[n] = min(rank[s] for s in succs[n]) - 1
    low = min(rank.values(), default=0)
    layers = {}
    for n in nodes:
        rank[n] -= low
        layers.setdefault(rank[n], []).append(n)
    row = {n: float(i) for layer in layers.values() for i, n in enumerate(layer)}
    for sweep in range(sweeps):
        near = preds if sweep % 2 == 0 else succs
        for r in sorted(layers, reverse=sweep % 2 == 1):
            mean = {n: sum(row[m] for m in near[n]) / len(near[n]) for n in layers[r] if near[n]}
            layers[r].sort(key=lambda n: (mean.get(n, row[n]), row[n]))
            row.update((n, float(i)) for i, n in enumerate(layers[r]))
    return rank, {n: int(i) for n, i in row.items()}


def dot_work(rank: dict, delayed: list, n_ranks: int, unroll: int) -> int:
    """About how many virtual nodes `dot` places for the delayed edges of the strip.

    `delayed` holds (tail, head, delay) of the step graph's delayed edges;
    each is drawn once per step it reaches, from step t-k or an initial value.
    """
    work = 0
    for tail, head, delay in delayed:
        for t in range(unroll):
            if t >= delay:  # from the tail at step t - delay
                work += abs(delay * (n_ranks + 1) + rank[head] - rank[tail])
            else:  # from an initial value, one rank before step 0
                work += t * (n_ranks + 1) + rank[head] + 1
    return work


def cyclic_work(rank: dict, delayed: list) -> int:
    """The same for the cyclic view: each delayed edge once, across the ranks it spans."""
    return sum(abs(rank[head] - rank[tail]) + 1 for tail, head, _ in delayed)


def _lanes(intervals: list) -> dict:
    """A lane for each (start, end, key), so that intervals in one lane do not overlap."""
    lane_of, free, ends, count = {}, [], [], 0
    for start, end, key in sorted((min(a, b), max(a, b), key) for a, b, key in intervals):
        while ends and ends[0][0] < start:
            heapq.heappush(free, heapq.heappop(ends)[1])
        lane = heapq.heappop(free) if free else count
        count = max(count, lane + 1)
        lane_of[key] = lane
        heapq.heappush(ends, (end + _LANE, lane))
    return lane_of


def _bezier(points: list, end) -> str:
    """Graphviz's `pos` for a polyline (cubic pieces), its arrowhead ending at `end`."""
    out = [points[0]]
    for a, b in zip(points, points[1:]):
        out += [(a[0] + (b[0] - a[0]) / 3, a[1] + (b[1] - a[1]) / 3)]
        out += [(a[0] + 2 * (b[0] - a[0]) / 3, a[1] + 2 * (b[1] - a[1]) / 3), b]
    return "e,{:.1f},{:.1f} ".format(*end) + " ".join("{:.1f},{:.1f}".format(*p) for p in out)


def _placed(pos: str, size, rim: float = 0.0) -> dict:
    # At least this size (the estimate is generous), so that edges end on the border.
    width, height = (size[0] - 2 * rim) / 72, (size[1] - 2 * rim) / 72
    return {"pos": pos, "width": f"{width:.2f}", "height": f"{height:.2f}"}


class Strip:
    """The unrolled strip's geometry, in Graphviz's points (y upwards).

    Args:
        rankdir: "LR", "RL", "TB" or "BT".
        nodes: the step graph's nodes, in topological order.
        forward: its edges, (tail, head).
        sizes: {node: (width, height)}, its outer border's.
        delayed: its delayed edges, (tail, head, delay, spec indices), once each.
        initial: {(spec index, t): (width, height)} of the initial values drawn,
            in drawing order.
        unroll: the number of steps.
        rims: {node: points} between a node's outer border and its box, where
            it is drawn with more than one border (`peripheries`).
        cyclic: one step, its delayed edges from its nodes back into it
            (`cyclic_edge`), for the cyclic view.
    """

    def __init__(
        self, rankdir, nodes, forward, sizes, delayed, initial, unroll, rims=None, cyclic=False
    ):
        self.rankdir, self.sizes, self.delayed = rankdir, sizes, delayed
        self.rims = rims or {}
        self.initial = {key: k for k, key in enumerate(initial)}
        self.initial_sizes = list(initial.values())
        self.rank, self.row = rank_and_order(nodes, forward)
        across = rankdir in ("LR", "RL")
        self._along = {n: s[0] if across else s[1] for n, s in sizes.items()}
        self._init_along = [s[0] if across else s[1] for s in self.initial_sizes]
        self._init_side = [s[1] if across else s[0] for s in self.initial_sizes]
        self._n_ranks = max(self.rank.values(), default=-1) + 1
        self._slots = self._gap_slots(forward)
        self._place_ranks()
        side = max((s[1] if across else s[0] for s in sizes.values()), default=_MIN_H)
        self._half = side / 2
        self._pitch = side + _NODESEP
        self._init_pitch = max(self._init_side, default=0.0) + _NODESEP
        skips = [(a, b) for a, b in forward if self.rank[b] != self.rank[a] + 1]
        self._forward_lanes = _lanes(
            [
                (self._exit(a, ("fx", e)), self._entry(b, ("fe", e)), e)
                for e, (a, b) in enumerate(skips)
            ]
        )
        self._skip = {edge: e for e, edge in enumerate(skips)}
        rows = max(self.row.values(), default=0) + 1
        self._lowest = (rows - 1) * self._pitch + self._half  # the rows' far side
        self._bottom = self._lowest + _LANE * len(set(self._forward_lanes.values()))
        # Lanes of delayed edges, outside the steps; a label beside each.
        self._lane = _LANE if across else 2 * _LANE  # across a vertical lane: a word's width
        self._top = -self._half - _PAD - (_LABEL if across else 0.0) - self._lane / 2
        intervals = self._cyclic_intervals() if cyclic else self._delayed_intervals(unroll)
        self._delayed_lanes = _lanes(list(intervals))

    # ----------------------------------------------------------- along the strip
    def _gap_slots(self, forward) -> dict:
        """{gap: {key: slot}}: who runs in each gap, and where.

        Gaps: ("rank", r) after rank r of a step, ("step",) between two steps,
        ("initial",) between the initial values and step 0.
        """
        slots = {}

        def use(gap, key):
            keys = slots.setdefault(gap, {})
            keys.setdefault(key, len(keys))

        for e, (a, b) in enumerate((a, b) for a, b in forward if self.rank[b] != self.rank[a] + 1):
            use(self._exit_gap(a), ("fx", e))
            use(self._entry_gap(b, 0), ("fe", e))  # in step 0
            use(self._entry_gap(b, 1), ("fe", e))  # in a later step
        for k in range(len(self.initial)):
            use(("initial",), ("ix", k))
        for g, (tail, head, _, _) in enumerate(self.delayed):
            use(self._exit_gap(tail), ("dx", g))
            use(self._entry_gap(head, 0), ("de", g))  # from an initial value
            use(self._entry_gap(head, 1), ("de", g))  # from an earlier step
        return slots

    def _width(self, gap, least) -> float:
        return max(least, _SLOT * (len(self._slots.get(gap, ())) + 1))

    def _place_ranks(self):
        """Each rank's centre along a step, the step's length, the initial column's place."""
        extent = [0.0] * self._n_ranks
        for n, r in self.rank.items():
            extent[r] = max(extent[r], self._along[n])
        self._extent, self._at = extent, []
        for r in range(self._n_ranks):
            edge = (
                self._at[-1] + extent[r - 1] / 2 + self._width(("rank", r - 1), _RANKSEP)
                if r
                else 0.0
            )
            self._at.append(edge + extent[r] / 2)
        self._length = self._at[-1] + extent[-1] / 2 if extent else 0.0
        self._step_gap = self._width(("step",), _STEP_GAP)
        init_gap = self._width(("initial",), _STEP_GAP)
        self._init_at = -init_gap - max(self._init_along, default=0.0) / 2
        self._init_gap = (-init_gap, 0.0)

    def _start(self, t: int) -> float:
        return t * (self._length + self._step_gap)

    def _slot(self, gap, key, t: int) -> float:
        """Where `key` runs in `gap` of step t, along the strip."""
        if gap == ("initial",):
            low, high = self._init_gap
        elif gap == ("step",):  # the gap before step t
            low, high = self._start(t) - self._step_gap, self._start(t)
        else:
            r = gap[1]
            low = self._start(t) + self._at[r] + self._extent[r] / 2
            high = self._start(t) + self._at[r + 1] - self._extent[r + 1] / 2
        keys = self._slots[gap]
        return low + (keys[key] + 1) * (high - low) / (len(keys) + 1)

    def _exit_gap(self, node):
        """The gap an edge leaves `node` into: the one after its rank."""
        last = self.rank[node] == self._n_ranks - 1
        return ("step",) if last else ("rank", self.rank[node])

    def _entry_gap(self, node, t):
        """The gap an edge reaches `node` at step t from: the one before its rank."""
        if self.rank[node] == 0:
            return ("step",) if t > 0 else ("initial",)
        return ("rank", self.rank[node] - 1)

    def _exit(self, node, key, t=0) -> float:
        gap = self._exit_gap(node)
        return self._slot(gap, key, t + 1 if gap == ("step",) else t)

    def _entry(self, node, key, t=0) -> float:
        return self._slot(self._entry_gap(node, t), key, t)

    def _delayed_intervals(self, unroll):
        """(start, end, key) along the strip of every delayed edge that takes a lane."""
        for g, (tail, head, delay, specs) in enumerate(self.delayed):
            for t in range(unroll):
                end = self._entry(head, ("de", g), t)
                if t >= delay:
                    if not self._direct(tail, head, delay):
                        yield self._exit(tail, ("dx", g), t - delay), end, (g, t, None)
                    continue
                for i in specs:
                    k = self.initial[(i, t)]
                    if self._entry_gap(head, t) != ("initial",):
                        yield self._slot(("initial",), ("ix", k), 0), end, (g, t, i)

    def _cyclic_intervals(self):
        for g, (tail, head, _, _) in enumerate(self.delayed):
            yield self._exit(tail, ("dx", g)), self._entry(head, ("de", g)), (g, 0, None)

    def _direct(self, tail, head, delay) -> bool:
        """Whether the edge leaves and arrives in one gap (the one between two steps)."""
        return delay == 1 and self._exit_gap(tail) == ("step",) == self._entry_gap(head, 1)

    # ------------------------------------------------------------------ geometry
    def _point(self, along: float, side: float) -> tuple:
        if self.rankdir == "LR":
            return along, -side
        if self.rankdir == "RL":
            return -along, -side
        return side, (along if self.rankdir == "BT" else -along)

    def _pos(self, along: float, side: float) -> str:
        return "{:.1f},{:.1f}".format(*self._point(along, side))

    def _centre(self, node, t: int) -> float:
        return self._start(t) + self._at[self.rank[node]]

    def _side(self, node) -> float:
        return self.row[node] * self._pitch

    def _ends(self, tail, t0, head, t1) -> tuple:
        """(along, side) of the tail's far side at step t0 and the head's near side at t1."""
        a0 = self._centre(tail, t0) + self._along[tail] / 2
        a1 = self._centre(head, t1) - self._along[head] / 2
        return (a0, self._side(tail)), (a1, self._side(head))

    def _route(self, points: list, label=None) -> dict:
        """`pos` (and `lp`, the label's place) of an edge through `points`; the
        last is where its arrowhead touches the head."""
        *body, end = points
        body.append((end[0] - _ARROW, end[1]))
        body = [p for i, p in enumerate(body) if i == 0 or p != body[i - 1]]
        attrs = {"pos": _bezier([self._point(*p) for p in body], self._point(*end))}
        if label is not None:
            attrs["lp"] = self._pos(*label)
        return attrs

    def _lane_route(self, start, end, x0, x1, lane) -> dict:
        points = [start, (x0, start[1]), (x0, lane), (x1, lane), (x1, end[1]), end]
        return self._route(points, ((x0 + x1) / 2, lane - self._lane / 2 + 1.0))

    def node(self, name, t: int) -> dict:
        """A step node's centre at step t and its size, as Graphviz's attributes."""
        place = self._pos(self._centre(name, t), self._side(name))
        return _placed(place, self.sizes[name], self.rims.get(name, 0.0))

    def initial_node(self, key) -> dict:
        """An initial value's centre and size; `key` is (spec index, t)."""
        k = self.initial[key]
        return _placed(self._pos(self._init_at, k * self._init_pitch), self.initial_sizes[k])

    def forward(self, tail, head, t: int) -> dict:
        """The route of a forward edge inside step t."""
        start, end = self._ends(tail, t, head, t)
        e = self._skip.get((tail, head))
        if e is None:  # neighbouring ranks: straight across the gap between them
            r = self.rank[tail]
            b0 = self._start(t) + self._at[r] + self._extent[r] / 2
            b1 = self._start(t) + self._at[r + 1] - self._extent[r + 1] / 2 - _ARROW
            return self._route([start, (b0, start[1]), (b1, end[1]), end])
        lane = self._lowest + _LANE * (self._forward_lanes[e] + 1)
        x0, x1 = self._exit(tail, ("fx", e), t), self._entry(head, ("fe", e), t)
        return self._route([start, (x0, start[1]), (x0, lane), (x1, lane), (x1, end[1]), end])

    def delayed_edge(self, g: int, t: int) -> dict:
        """The route of delayed edge `g` (an index into `delayed`) from step t-k into step t."""
        tail, head, delay, _ = self.delayed[g]
        start, end = self._ends(tail, t - delay, head, t)
        x0 = self._exit(tail, ("dx", g), t - delay)
        if self._direct(tail, head, delay):
            points = [start, (x0, start[1]), (x0, end[1]), end]
            return self._route(points, (x0, min(start[1], end[1]) - 8.0))
        x1 = self._entry(head, ("de", g), t)
        lane = self._top - self._lane * self._delayed_lanes[(g, t, None)]
        return self._lane_route(start, end, x0, x1, lane)

    def cyclic_edge(self, g: int) -> dict:
        """The route of delayed edge `g` in the cyclic view: from its tail back (or on)
        to its head, in a lane above the step."""
        tail, head, _, _ = self.delayed[g]
        start, end = self._ends(tail, 0, head, 0)
        x0, x1 = self._exit(tail, ("dx", g)), self._entry(head, ("de", g))
        lane = self._top - self._lane * self._delayed_lanes[(g, 0, None)]
        return self._lane_route(start, end, x0, x1, lane)

    def initial_edge(self, i: int, t: int, g: int) -> dict:
        """The route from spec i's initial value at t into delayed edge g's head at step t."""
        head = self.delayed[g][1]
        k = self.initial[(i, t)]
        start = (self._init_at + self._init_along[k] / 2, k * self._init_pitch)
        end = (self._centre(head, t) - self._along[head] / 2, self._side(head))
        x0 = self._slot(("initial",), ("ix", k), 0)
        if self._entry_gap(head, t) == ("initial",):
            points = [start, (x0, start[1]), (x0, end[1]), end]
            return self._route(points, (x0, min(start[1], end[1]) - 8.0))
        x1 = self._entry(head, ("de", g), t)
        lane = self._top - self._lane * self._delayed_lanes[(g, t, i)]
        return self._lane_route(start, end, x0, x1, lane)

    def _box(self, a0, a1, s0, s1) -> str:
        """Graphviz's `bb` of a cluster, with room for its label at the top."""
        if self.rankdir in ("LR", "RL"):
            s0 -= _LABEL
        elif self.rankdir == "TB":
            a0 -= _LABEL
        else:
            a1 += _LABEL
        corners = [self._point(a, s) for a in (a0, a1) for s in (s0, s1)]
        xs, ys = [c[0] for c in corners], [c[1] for c in corners]
        return f"{min(xs):.1f},{min(ys):.1f},{max(xs):.1f},{max(ys):.1f}"

    def step_box(self, t: int) -> str:
        """The cluster of step t."""
        start = self._start(t)
        return self._box(
            start - _PAD, start + self._length + _PAD, -self._half - _PAD, self._bottom + _PAD
        )

    def initial_box(self) -> str:
        """The cluster of the initial values."""
        along = max(self._init_along, default=0.0) / 2 + _PAD
        side = max(self._init_side, default=0.0) / 2 + _PAD
        last = (len(self._init_side) - 1) * self._init_pitch
        return self._box(self._init_at - along, self._init_at + along, -side, last + side)
