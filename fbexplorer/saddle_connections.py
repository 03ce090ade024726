"""Which attractors each saddle connects: the topology of a network's fixed points.

A saddle's unstable modes lead away from it; where they lead tells how the
fixed points hang together (Maheswaranathan et al. 2019: the saddles between
a flip-flop's memories). `connections` nudges each point that has an unstable
mode along + and - each unstable eigenvector (a complex pair: along its real
and its imaginary part) and runs the step `F` (`fbexplorer.state_map`) from
every nudged state at once, in one compiled loop, until each run lands: on a
listed point, somewhere else (it settles), nowhere (the step cap), or it
diverges. `connection_graph` draws the result with graphviz.
"""

from __future__ import annotations

import graphviz
import numpy as np
import pandas as pd
from keras import ops

from fbexplorer.escaping import dot_id, dot_text, dot_tooltip
from fbexplorer.memory import check_memory
from fbexplorer.state_map import compile_fn, state_layout, state_map

__all__ = ["OUTCOMES", "check_states", "connection_graph", "connections"]

# How a nudged run ends: on a listed point; settled where no point is listed;
# still moving after `steps`; past 1e6 in size or NaN.
OUTCOMES = ["landed", "elsewhere", "unsettled", "divergent"]
BOUND = 1e6
_LANDED, _SETTLED, _UNSETTLED, _DIVERGED = 1, 2, 0, 3


def check_states(fp, model, what: str):
    """Refuse a model whose states are not those `fp`'s points were found for."""
    layout = state_layout(model)
    if layout.names != fp.names or layout.size != fp.flat.shape[1]:
        raise ValueError(
            f"FixedPoints.{what}: model '{model.name}' has the states {layout.names} "
            f"({layout.size} numbers); these points are states {fp.names} "
            f"({fp.flat.shape[1]} numbers). Pass the model they were found for."
        )
    return layout


# ------------------------------------------------------------ the nudges
def _nudges(fp, margin: float, saddles):
    """`(rows, directions)`: a row per nudge (saddle, mode, part, sign, eigenvalue)
    and its unit direction `(n, D)` float64, from the unstable right eigenvectors."""
    rows, directions = [], []
    unstable = fp.frame["n_unstable"].to_numpy() > 0
    for i in np.flatnonzero(unstable) if saddles is None else [s for s in saddles if unstable[s]]:
        values, right, _ = fp.eigenvectors(int(i))
        for m, value in enumerate(values):
            if abs(value) <= 1.0 + margin or value.imag < 0:  # a pair's conjugate: once
                continue
            parts = [("real", right[:, m].real)]
            if value.imag > 0:
                parts.append(("imag", right[:, m].imag))
            for part, v in parts:
                v = v / np.linalg.norm(v)
                for sign in (1, -1):
                    rows.append((int(i), m, part, sign, complex(value)))
                    directions.append(sign * v)
    return rows, np.asarray(directions, "float64").reshape(len(rows), fp.flat.shape[1])


def _direction_text(mode: int, part: str, sign: int, complex_pair: bool) -> str:
    """`+0`, `-0` for a real mode; `+1re`, `-1im` for a complex pair's parts."""
    suffix = ("re" if part == "real" else "im") if complex_pair else ""
    return f"{'+' if sign > 0 else '-'}{mode}{suffix}"


# ------------------------------------------------------------ the runs
def _run_fn(step, period: int, steps: int, tolerance: float, settle: float):
    """The compiled runs: `(starts (P, D), targets (N, D), held)` -> `(states at
    the end, steps run, how each ended, its last move over a period)`. A run stops once it is within
    `tolerance` of a target, or moves less than `settle` over a period, or leaves
    the bound; the others go on, up to `steps`."""

    def run(s, targets, held):
        n = ops.shape(s)[0]

        def cond(t, s, anchor, done, count, code, last):
            return ops.logical_and(t < steps, ops.logical_not(ops.all(done)))

        def body(t, s, anchor, done, count, code, last):
            new = step(s, held)
            t = t + 1
            diff = new[:, None, :] - targets[None]
            near = ops.any(ops.sqrt(ops.sum(diff * diff, axis=2)) <= tolerance, axis=1)
            check = ops.equal(t % period, 0)
            moved = ops.sqrt(ops.sum((new - anchor) ** 2, axis=1))
            settled = ops.logical_and(check, moved <= settle)
            anchor = ops.where(check, new, anchor)
            finite = ops.all(ops.isfinite(new), axis=1)
            bad = ops.logical_or(
                ops.logical_not(finite),
                ops.max(ops.abs(ops.where(ops.isfinite(new), new, 0.0)), axis=1) > BOUND,
            )
            stop = ops.logical_and(ops.logical_not(done), near | settled | bad)
            how = ops.where(bad, _DIVERGED, ops.where(near, _LANDED, _SETTLED))
            code = ops.where(stop, how, code)
            count = ops.where(stop, t, count)
            last = ops.where(stop, moved, last)
            s = ops.where(done[:, None], s, new)
            return t, s, anchor, ops.logical_or(done, stop), count, code, last

        zeros = ops.zeros((n,), "int32")
        start = (ops.convert_to_tensor(0, "int32"), s, s, ops.zeros((n,), "bool"), zeros, zeros)
        carry = start + (ops.zeros((n,), s.dtype),)
        _, s, _, done, count, code, last = ops.while_loop(cond, body, carry)
        return s, ops.where(done, count, steps), code, last

    return compile_fn(run)


def _targets(fp) -> tuple[np.ndarray, np.ndarray]:
    """The states a run lands on at once: each stable or marginal point's orbit
    states, `(N, D)`, and the point each is of, `(N,)`."""
    keep = np.flatnonzero(fp.frame["stability"].to_numpy() != "unstable")
    orbits = [fp.orbit(int(i)) for i in keep]
    flat = [np.concatenate([o[n].reshape(fp.period, -1) for n in fp.names], axis=1) for o in orbits]
    size = fp.flat.shape[1]
    states = np.concatenate(flat, axis=0) if flat else np.zeros((0, size), "float32")
    return states.astype("float32"), np.repeat(keep, fp.period)


def _all_states(fp) -> tuple[np.ndarray, np.ndarray]:
    """Every point's orbit states `(N, D)` float64, and the point each is of."""
    orbits = [fp.orbit(i) for i in range(len(fp))]
    flat = [np.concatenate([o[n].reshape(fp.period, -1) for n in fp.names], axis=1) for o in orbits]
    size = fp.flat.shape[1]
    states = np.concatenate(flat, axis=0) if flat else np.zeros((0, size))
    return states.astype("float64"), np.repeat(np.arange(len(fp)), fp.period)


def _nearest(ends: np.ndarray, moved: np.ndarray, fp, tolerance: float):
    """The point each end has reached (the nearest; -1 for none), and the distance
    to it. Reached: within `tolerance`, or, for a stable point of spectral radius
    `r`, within `tolerance + moved / (1 - r)`: a run that settled while still
    converging on it, as slowly as its slowest mode lets it, moving `moved` over
    the last period, has at most that far to go."""
    states, owner = _all_states(fp)
    if not len(states):
        return np.full(len(ends), -1), np.full(len(ends), np.nan)
    gap = np.stack([np.linalg.norm(states - e, axis=1) for e in ends.astype("float64")])
    radius = fp.frame["spectral_radius"].to_numpy("float64")[owner]
    stable = fp.frame["stable"].to_numpy()[owner]
    reach = np.where(stable, 1.0 / np.where(stable, 1.0 - radius, 1.0), 0.0)
    within = gap <= tolerance + np.asarray(moved, "float64")[:, None] * reach[None]
    gap_within = np.where(within, gap, np.inf)
    best = gap_within.argmin(axis=1)
    found = np.isfinite(gap_within[np.arange(len(ends)), best])
    best = np.where(found, best, gap.argmin(axis=1))
    distance = gap[np.arange(len(ends)), best]
    return np.where(found, owner[best], -1), distance


# ------------------------------------------------------------ the entry point
def connections(
    fp,
    model,
    *,
    nudge: float = 1e-3,
    steps: int = 1000,
    tolerance: float | None = None,
    settle_tolerance: float = 1e-6,
    saddles=None,
) -> pd.DataFrame:
    """Where each saddle's unstable modes lead: `FixedPoints.connections`.

    From each point of `fp` with an unstable mode (`n_unstable >= 1`: saddles,
    and sources), the state is nudged by `nudge` (Euclidean) along + and - each
    unstable right eigenvector (for a complex pair, along its real and its
    imaginary part: four nudges), and `model`'s step, with `fp.inputs` held, is
    run from all the nudged states at once in one compiled loop, each until it
    lands: within `tolerance` of a stable or marginal point of `fp` (of a state
    of its orbit, for a `period=k` result), or settled (moving less than
    `settle_tolerance` over `fp.period` steps), or past 1e6 in size or NaN, or
    after `steps` steps. A settled run is matched to the nearest point of `fp`
    (a saddle too: a run may end on another saddle's stable manifold) within
    `tolerance`, or, for a stable point of spectral radius `r`, within
    `tolerance + moved / (1 - r)` (`moved`: its last move over a period): a run
    on a slow stable point settles before it is within `tolerance`, and has
    at most that far to go. `saddles`: the rows of the points to nudge (default: every
    point with an unstable mode; a listed point without one adds no row).

    Returns:
        A DataFrame, one row per nudge: `saddle` (the point's row in
        `fp.frame`), `direction` (`"+0"`, `"-0"`: mode 0 (the fastest-growing)
        and the nudge's sign; `"+1re"`, `"-1im"`: the real or imaginary part of a
        complex pair's mode 1), `mode`, `part` ("real" or "imag"), `sign`,
        `eigenvalue`, `attractor` (the row of the point reached, <NA> where
        none), `outcome` ("landed" on a listed point, "elsewhere": settled where
        no point is listed, "unsettled": still moving after `steps` (a cycle, or
        chaos, or a slow escape: more `steps=`), "divergent"), `steps` (the steps
        run until it landed) and `distance` (to the nearest listed state at the
        end). `fbx.connection_graph(fp, frame)` draws it.
    """
    layout = check_states(fp, model, "connections")
    names = model.graph.input_names + model.graph.constant_names
    if names != list(fp.inputs):
        raise ValueError(
            f"FixedPoints.connections: model '{model.name}' has the inputs {names}; these "
            f"points were found with the inputs {list(fp.inputs)} held. Pass the model they "
            f"were found for."
        )
    tolerance = nudge / 10 if tolerance is None else tolerance
    _check_settings(
        nudge=nudge, steps=steps, tolerance=tolerance, settle_tolerance=settle_tolerance
    )
    saddles = _check_saddles(saddles, len(fp))
    margin = fp.settings.get("marginal_tolerance", 1e-3)
    rows, directions = _nudges(fp, margin, saddles)
    targets, _ = _targets(fp)
    _check_memory(len(rows), len(targets), layout.size)
    if rows:
        saddles = np.array([r[0] for r in rows])
        starts = (fp.flat[saddles].astype("float64") + nudge * directions).astype("float32")
        held = [ops.convert_to_tensor(v) for v in fp.inputs.values()]
        run = _run_fn(state_map(model, layout), fp.period, int(steps), tolerance, settle_tolerance)
        ends, count, code, moved = (
            ops.convert_to_numpy(v)
            for v in run(ops.convert_to_tensor(starts), ops.convert_to_tensor(targets), held)
        )
    else:
        ends = np.zeros((0, layout.size), "float32")
        count = code = np.zeros(0, int)
        moved = np.zeros(0)
    point, distance = _nearest(ends, moved, fp, tolerance)
    stopped = (code == _LANDED) | (code == _SETTLED)
    landed = stopped & (point >= 0)
    outcome = np.where(code == _DIVERGED, "divergent", "unsettled").astype(object)
    outcome[stopped] = np.where(landed[stopped], "landed", "elsewhere")
    return _frame(rows, point, landed, outcome, count, distance)


def _frame(rows, point, landed, outcome, count, distance) -> pd.DataFrame:
    pairs = [r[4].imag != 0 for r in rows]
    return pd.DataFrame(
        {
            "saddle": np.array([r[0] for r in rows], int),
            "direction": [_direction_text(r[1], r[2], r[3], p) for r, p in zip(rows, pairs)],
            "mode": np.array([r[1] for r in rows], int),
            "part": [r[2] for r in rows],
            "sign": np.array([r[3] for r in rows], int),
            "eigenvalue": np.array([r[4] for r in rows], complex),
            "attractor": pd.array(
                [int(p) if ok else pd.NA for p, ok in zip(point, landed)], dtype="Int64"
            ),
            "outcome": pd.Categorical(list(outcome), categories=OUTCOMES),
            "steps": np.asarray(count, int),
            "distance": np.asarray(distance, "float64"),
        }
    )


# ------------------------------------------------------------ the checks
_SETTINGS = {
    "nudge": ("the distance of each nudge from the saddle", "a finite number > 0"),
    "steps": ("the most steps of each run", "an integer >= 1"),
    "tolerance": ("the distance within which a run has landed on a point", "a finite number > 0"),
    "settle_tolerance": ("the largest move over a period of a settled run", "a finite number > 0"),
}


def _check_settings(**values):
    for name, value in values.items():
        role, kind = _SETTINGS[name]
        number = isinstance(value, (int, float, np.integer, np.floating))
        number = number and not isinstance(value, bool)
        if kind.startswith("an integer"):
            ok = number and isinstance(value, (int, np.integer)) and value >= 1
        else:
            ok = number and bool(np.isfinite(value)) and value > 0
        if not ok:
            raise ValueError(
                f"FixedPoints.connections: `{name}` is {role}, {kind}. Received: {name}={value!r}"
            )


def _check_saddles(saddles, n: int):
    """`saddles` as a list of rows, checked; None stays None (every saddle)."""
    if saddles is None:
        return None
    values = list(np.atleast_1d(np.asarray(saddles, dtype=object)))
    ok = all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) and -n <= v < n for v in values
    )
    if not ok:
        raise ValueError(
            f"FixedPoints.connections: `saddles` are points' rows in .frame, integers from "
            f"{-n} to {n - 1} ({n} point{'s' * (n != 1)}). Received: saddles={saddles!r}"
        )
    return sorted({int(v) % n for v in values})


def _check_memory(runs: int, targets: int, size: int):
    """Each step compares every run with every target state: `runs x targets x
    size` numbers, besides the runs' own states."""
    need = 4 * size * (3 * runs * max(targets, 1) + 6 * runs)
    detail = (
        f"{runs:,} nudged runs, each compared with {targets:,} stable states of "
        f"{size:,} numbers at every step"
    )
    remedy = "Pass a few saddles at a time, as in fp.connections(model, saddles=[0, 3])"
    check_memory("FixedPoints.connections", need, detail, remedy)


# ------------------------------------------------------------ the drawing
_FILL = {"stable": "#d9f0d3", "marginal": "#fff2cc", "unstable": "#f4cccc"}


def connection_graph(fp, links: pd.DataFrame) -> graphviz.Digraph:
    """The saddle-to-attractor graph of `links` (from `fp.connections(model)`).

    A node per point that `links` names (its row, stability and spectral
    radius; filled by stability), and one per other end ("elsewhere",
    "unsettled", "divergent"); an arrow from each saddle to where its nudges
    lead, labelled with the directions (`+0, -0`). Every text reaches DOT
    through `fbexplorer.escaping` (ids of plain characters, labels escaped).

    Example:
        >>> fp = fbx.fixed_points(net, {"x": np.zeros(5, "float32")}, n_starts=8)
        >>> dot = fbx.connection_graph(fp, fp.connections(net))   # displays in Jupyter
        >>> dot.source.startswith("digraph connections")
        True
    """
    dot = graphviz.Digraph(
        name="connections",
        graph_attr={"rankdir": "LR", "fontsize": "11"},
        node_attr={"shape": "box", "style": "rounded,filled", "fontsize": "10"},
        edge_attr={"fontsize": "9", "arrowsize": "0.7"},
    )
    frame = fp.frame
    ends = [int(a) for a in links["attractor"].dropna()]
    for i in sorted(set(int(s) for s in links["saddle"]) | set(ends)):
        row = frame.loc[i]
        dot.node(
            dot_id(f"point-{i}"),
            label=dot_text(
                f"point {i}", str(row["stability"]), f"radius {row['spectral_radius']:.3g}"
            ),
            tooltip=dot_tooltip(f"point {i}: {row['stability']}, n_unstable {row['n_unstable']}"),
            fillcolor=_FILL.get(str(row["stability"]), "white"),
        )
    edges: dict = {}
    for _, r in links.iterrows():
        head = f"point-{int(r['attractor'])}" if pd.notna(r["attractor"]) else str(r["outcome"])
        edges.setdefault((f"point-{int(r['saddle'])}", head), []).append(str(r["direction"]))
    for outcome in sorted({head for _, head in edges if not head.startswith("point-")}):
        dot.node(dot_id(outcome), label=dot_text(outcome), shape="ellipse", fillcolor="white")
    for (tail, head), directions in edges.items():
        dot.edge(
            dot_id(tail),
            dot_id(head),
            label=dot_text(", ".join(directions)),
            tooltip=dot_tooltip(*directions),
        )
    return dot
