"""Continuation: how the fixed points of a feedback network move as one input changes.

`continuation` holds the model's inputs fixed, as `fbx.fixed_points` does,
and lets one of them take a sequence of values. The fixed points at the first
value come from a full search; at each next value the search starts from the
points of the last one (plus a few fresh starts), so each point is followed
along its branch. Where a branch appears, ends or changes stability it reads
the multipliers (the eigenvalues of `dF/ds`) to name the bifurcation; a
`Continuation` holds the result and draws the bifurcation diagram.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from keras import ops

from fbexplorer import recording
from fbexplorer.escaping import plotly_text
from fbexplorer.fixed_point_search import fixed_points, reusing_search
from fbexplorer.linearisation import MARGINAL_TOLERANCE
from fbexplorer.state_map import check_has_state, held_inputs, output_map, state_layout

__all__ = ["Continuation", "continuation"]

_KINDS = ["fold", "period-doubling", "hopf", "branch"]
GATE = 4.0  # a branch moves at most this many times its last step (or the median one)
BLOCK = 16  # later searches start from a multiple of this many states: few shapes to compile


def continuation(
    model,
    inputs,
    *,
    vary,
    initial=None,
    n_starts: int = 64,
    fresh: int = 8,
    noise: float = 1e-3,
    tolerance: float = 1e-10,
    dedupe_tolerance: float = 1e-3,
    marginal_tolerance: float = MARGINAL_TOLERANCE,
    method: str = "newton",
    seed: int = 0,
) -> Continuation:
    """Fixed points of a feedback network followed as one input changes.

    The inputs are held as for `fbx.fixed_points`; the input named in `vary`
    takes each of its values in turn. At the first value the search starts
    from `n_starts` states (visited on `initial`, or uniform in [-1, 1]); at
    each next value from every point of the last value, plus `fresh` new
    uniform starts, so that branches that appear are found too; from the
    first point of each branch that appears, a search one value back looks
    for it there (and on, while it finds it), so that a branch found late
    is followed back to where it begins. Each point is matched to the nearest point of the last value (closest pairs first;
    a pair further apart than 4 times the branch's last step and the median
    step is no match): a `branch` is a point followed from value to value.

    Bifurcations are read where a branch appears, ends or changes stability
    (its spectral radius crosses 1), interpolated between the two values
    around it: `"fold"`, two branches that end (or appear) together, close to
    each other, with a real multiplier on either side of +1 (a saddle-node:
    the value extrapolated where that multiplier reaches 1, from the last two
    values of each); `"period-doubling"`, a multiplier crossing -1;
    `"hopf"`, a complex pair crossing the unit circle (in maps, the
    Neimark-Sacker bifurcation); `"branch"`, anything else (a pitchfork or a
    transcritical point: a multiplier crossing +1 on a branch that goes on,
    branches that appear or end alone).

    What it cannot tell: it sees the points at the grid values only. Branches
    that appear and end between two values are missed, and a bifurcation's
    value is an interpolation (linear for stability changes, square-root
    for folds), good to a fraction of the grid step; two bifurcations between
    the same two values are told apart only by their branches. A branch
    that the search from the last value's points misses at one value "ends"
    there (its later part is followed back only if a fresh start finds it). At a value exactly on a bifurcation `q` is flat (a cubic, at a
    pitchfork) and the search may return a smear of near points there: keep
    grid values off the bifurcations you know. A cycle that is born (period doubling, Hopf) is not followed:
    search `fbx.fixed_points(..., period=k)` or run `fbx.attractors` past it.

    Args:
        model: a `FeedbackModel` with at least one delayed edge or cell.
        inputs: one timestep's value for each per-step input and constant,
            `{name: array}` as for `fbx.fixed_points`, but for the varied
            one (`{}` when it is the only input; a value given for it here
            is not used).
        vary: `{name: values}`, one input and its values `(n, *shape)` (the
            input's shape without batch or time axes; `(n,)` for an input of
            one number), in order.
        initial: as for `fbx.fixed_points`, for the first value's search.
        n_starts: the first value's starts. Later searches start from the
            last value's points and `fresh` more, repeated (with `noise`)
            up to a multiple of 16.
        fresh: new uniform starts at each later value.
        noise: as for `fbx.fixed_points`, at every value.
        tolerance: as for `fbx.fixed_points`, at every value.
        dedupe_tolerance: as for `fbx.fixed_points`, at every value.
        marginal_tolerance: as for `fbx.fixed_points`, at every value.
        method: as for `fbx.fixed_points`, at every value.
        seed: as for `fbx.fixed_points`, at every value.

    Returns:
        A `Continuation`: `.frame` (a row per point and value: `step`,
        `value`, `branch`, `q`, `stable`, `stability`, `spectral_radius`,
        `tau`, `n_unstable`), `.bifurcations`, `.states`, `.eigenvalues`,
        `.outputs`, `.figure()`.

    Example:
        >>> x = np.linspace(-1, 1, 5)[:, None] * np.ones(5, "float32")  # 5 values of x
        >>> c = fbx.continuation(net, {}, vary={"x": x}, n_starts=8)
        >>> table = c.frame[["step", "branch", "stability", "spectral_radius"]]
        >>> c.bifurcations.columns.tolist()
        ['value', 'step', 'kind', 'event', 'branch', 'other', 'multiplier']
        >>> fig = c.figure(unit=0)    # x's step across (5 numbers), loop[0] up
    """
    recording.check_model(model, what="continuation")
    check_has_state(model, "continuation")
    name, values = _checked_vary(model, vary)
    _check_count("n_starts", n_starts, 1)
    _check_count("fresh", fresh, 0)
    if not isinstance(inputs, Mapping):
        raise ValueError(
            f"fbx.continuation: `inputs` holds the other inputs fixed, a dict by name ({{}} "
            f"when '{name}' is the only one). Received: {type(inputs).__name__}."
        )
    held = [held_inputs(model, {**inputs, name: value}, "continuation") for value in values]
    layout = state_layout(model)
    settings = dict(
        noise=noise,
        tolerance=tolerance,
        dedupe_tolerance=dedupe_tolerance,
        marginal_tolerance=marginal_tolerance,
        method=method,
    )
    search = _Searcher(model, inputs, name, values, settings, layout, seed)
    with reusing_search(model):
        found = search.forward(initial, n_starts, fresh)
        branches = search.extend_back(found)
    outputs = _outputs(model, layout, found, held)
    return Continuation(name, values, found, branches, outputs, settings | {"seed": seed})


class _Searcher:
    """The searches at each value: forward from the last value's points, then
    back from the points of branches that appear, to find them where they
    were missed."""

    def __init__(self, model, inputs, name, values, settings, layout, seed):
        self.model, self.inputs, self.name, self.values = model, inputs, name, values
        self.settings, self.layout, self.seed = settings, layout, seed
        self.rng = np.random.default_rng(seed)

    def at(self, j: int, starts=None, *, initial=None, n_starts=None):
        """`fixed_points` at value `j`, from `starts` (flat) or as asked."""
        if starts is not None:
            initial, n_starts = self.layout.to_dict(starts), len(starts)
        held = {**self.inputs, self.name: self.values[j]}
        seed = self.seed + j
        return fixed_points(
            self.model, held, initial=initial, n_starts=n_starts, seed=seed, **self.settings
        )

    def forward(self, initial, n_starts: int, fresh: int) -> list:
        """`[[FixedPoints]]`: each value's search, seeded from the last value's points."""
        found = [[self.at(0, initial=initial, n_starts=n_starts)]]
        for j in range(1, len(self.values)):
            found.append([self.at(j, _seeds(found[-1][0].flat, self.layout.size, fresh, self.rng))])
        return found

    def extend_back(self, found) -> list:
        """Searches one value back from each branch's first point, as long as
        they find points not yet listed there; the branches, matched again."""
        tolerance = self.settings["dedupe_tolerance"]
        tried = set()
        for _ in range(len(self.values)):
            flats = [_flat(f) for f in found]
            branches = _branches(flats, tolerance)
            seeds = {}
            for j in range(1, len(flats)):
                firsts = ~np.isin(branches[j], branches[j - 1])
                for i in np.flatnonzero(firsts):
                    if (j, i) not in tried:  # points are appended: indices hold
                        tried.add((j, i))
                        seeds.setdefault(j - 1, []).append(flats[j][i])
            added = False
            for j, points in seeds.items():
                fp = self.at(j, _seeds(np.stack(points), self.layout.size, 0, self.rng))
                new = _new_points(fp.flat, flats[j], tolerance)
                if new.any():
                    found[j].append(fp.select(new))
                    added = True
            if not added:
                return branches
        return _branches([_flat(f) for f in found], tolerance)


def _flat(fps) -> np.ndarray:
    return np.concatenate([fp.flat for fp in fps])


def _new_points(candidates, listed, tolerance: float) -> np.ndarray:
    """Which candidates lie further than `tolerance` from every listed point."""
    if not len(listed):
        return np.ones(len(candidates), bool)
    dist = np.linalg.norm(candidates[:, None].astype("float64") - listed[None], axis=2)
    return dist.min(axis=1) > tolerance


# ------------------------------------------------------------------ checks
def _checked_vary(model, vary):
    """`(name, values)` of `vary`, checked: one input of the model, values `(n, *shape)`."""
    g = model.graph
    names = g.input_names + g.constant_names
    if not isinstance(vary, Mapping) or len(vary) != 1:
        got = list(vary) if isinstance(vary, Mapping) else type(vary).__name__
        raise ValueError(
            f"fbx.continuation: `vary` is one input and its values, {{name: values}}, one of "
            f"{names}. Received: {got}"
        )
    ((name, values),) = vary.items()
    if name not in names:
        raise ValueError(
            f"fbx.continuation: model '{model.name}' has no input '{name}' to vary. "
            f"Expected one of its per-step inputs {g.input_names} or constants "
            f"{g.constant_names}."
        )
    shape = tuple(model.step_model.inputs[names.index(name)].shape[1:])
    values = np.asarray(values)
    if values.shape[1:] != shape and shape == (1,) and values.ndim == 1:
        values = values[:, None]
    if values.ndim != len(shape) + 1 or values.shape[1:] != shape or len(values) < 1:
        raise ValueError(
            f"fbx.continuation: the values of '{name}' are (n, *shape), one timestep's value "
            f"{shape} per step of the continuation, in order. Received shape {values.shape}."
        )
    return name, values


def _check_count(name: str, value, least: int):
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if not ok or value < least:
        raise ValueError(
            f"fbx.continuation: `{name}` is a number of starts, an integer >= {least}. "
            f"Received: {name}={value!r}"
        )


# ------------------------------------------------------------------ tracking
def _seeds(points, size: int, fresh: int, rng) -> np.ndarray:
    """The next value's starts: every point of the last value and `fresh` uniform
    states, cycled up to the next multiple of `BLOCK` (so that the compiled
    search sees few batch sizes)."""
    new = rng.uniform(-1.0, 1.0, (fresh, size)).astype("float32")
    seeds = np.concatenate([points.astype("float32"), new])
    total = BLOCK * max(1, -(-len(seeds) // BLOCK))
    return np.resize(seeds, (total, size)) if len(seeds) else np.zeros((total, size), "float32")


def _branches(flats, tolerance: float) -> list:
    """The branch of each point at each value: a list of `(points,)` int arrays."""
    out = [np.arange(len(flats[0]))]
    last_step = {}  # branch -> distance moved at its last match
    counter = len(flats[0])
    for prev, new, prev_ids in zip(flats[:-1], flats[1:], out):
        ids = np.full(len(new), -1)
        if len(prev) and len(new):
            dist = np.linalg.norm(prev[:, None].astype("float64") - new[None], axis=2)
            pairs = _greedy_pairs(dist)
            median = float(np.median([dist[a, b] for a, b in pairs])) if pairs else 0.0
            moved = {}
            for a, b in pairs:
                ref = last_step.get(int(prev_ids[a]), np.inf)  # a new branch: no bound yet
                if dist[a, b] <= max(GATE * ref, GATE * median, 10 * tolerance):
                    ids[b] = prev_ids[a]
                    moved[int(prev_ids[a])] = dist[a, b]
            last_step = moved
        for b in np.flatnonzero(ids < 0):
            ids[b], counter = counter, counter + 1
        out.append(ids)
    return out


def _greedy_pairs(dist) -> list:
    """`(row, column)` pairs, closest first, each row and column used once."""
    used_a, used_b, pairs = set(), set(), []
    for flat in np.argsort(dist, axis=None, kind="stable"):
        a, b = np.unravel_index(flat, dist.shape)
        if a not in used_a and b not in used_b:
            used_a.add(a)
            used_b.add(b)
            pairs.append((int(a), int(b)))
    return pairs


def _outputs(model, layout, found, held) -> dict:
    """`{output: (rows, *shape)}`: the read-out at each point, value after value."""
    outputs = output_map(model, layout)
    names = model.graph.output_names
    got = {n: [] for n in names}
    for fp, h in ((fp, h) for fps, h in zip(found, held) for fp in fps):
        if len(fp):
            values = outputs(ops.convert_to_tensor(fp.flat), h)
            for n, v in zip(names, values):
                got[n].append(ops.convert_to_numpy(v))
    shapes = {n: tuple(t.shape[1:]) for n, t in zip(names, model.step_model.outputs)}
    return {
        n: np.concatenate(v) if v else np.zeros((0,) + shapes[n], "float32") for n, v in got.items()
    }


# ------------------------------------------------------------------ the result
class Continuation:
    """Fixed points followed along one input's values (made by `fbx.continuation`).

    Attributes:
        frame: a DataFrame, a row per point and value (index `row`): `step`
            (the index into `values`), `value` (the input's value, when it
            has one number), `branch` (the point followed from value to
            value), and as `FixedPoints.frame` has them `q`, `stable`,
            `stability`, `spectral_radius`, `tau`, `n_unstable`.
        bifurcations: a DataFrame, a row per event: `value` (interpolated;
            NaN for an input of several numbers), `step` (the same as a
            fractional index into `values`), `kind` ("fold",
            "period-doubling", "hopf", "branch"), `event` ("appears",
            "ends", "stability"), `branch`, `other` (a fold's second branch,
            else -1) and `multiplier` (the eigenvalue that crosses, or the one
            nearest +1 where a branch appears or ends).
        states: `{state name: (rows, *shape)}`, row by row.
        flat: `(rows, state size)`, the states as one vector each.
        eigenvalues: `(rows, state size)`, by decreasing modulus.
        outputs: `{output name: (rows, *shape)}`: the read-out at each point.
        values: the varied input's values `(n, *shape)`; `input`: its name.
        names: the state names, in the order of `flat`.
        settings: the search's settings, as used at every value.
        points: the `FixedPoints` of each value, a list per value (its
            search, then any search back from a branch found later).
    """

    def __init__(self, name, values, found, branches, outputs, settings):
        self.input = name
        self.values = np.asarray(values)
        self.points = [list(fps) for fps in found]
        self.settings = dict(settings)
        found = [(j, fp) for j, fps in enumerate(found) for fp in fps]
        self.names = list(found[0][1].names)
        self.flat = np.concatenate([fp.flat for _, fp in found])
        self.eigenvalues = np.concatenate([fp.eigenvalues for _, fp in found])
        self.outputs = outputs
        frames = [fp.frame.assign(step=j) for j, fp in found]
        frame = pd.concat(frames, ignore_index=True)
        frame["branch"] = np.concatenate(branches)
        scalar = self.values[0].size == 1
        if scalar:
            frame["value"] = self.values.reshape(len(self.values))[frame["step"]]
        first = ["step"] + ["value"] * scalar + ["branch"]
        columns = ["q", "stable", "stability", "spectral_radius", "tau", "n_unstable"]
        self.frame = frame[first + columns].rename_axis("row")
        self.states = {k: np.concatenate([fp.states[k] for _, fp in found]) for k in self.names}
        self.bifurcations = _bifurcations(self)

    def __len__(self) -> int:
        return len(self.frame)

    def __repr__(self) -> str:
        kinds = self.bifurcations["kind"].value_counts()
        told = ", ".join(f"{kinds[k]} {k}" for k in _KINDS if kinds.get(k, 0))
        n, b = len(self), self.frame["branch"].nunique()
        return (
            f"Continuation('{self.input}' over {len(self.values)} values: {n} "
            f"point{'s' * (n != 1)} on {b} branch{'es' * (b != 1)}; "
            f"{told or 'no bifurcations'})"
        )

    def position(self, step) -> float:
        """The input's value at a fractional `step` (linear between values), or
        NaN for an input of several numbers."""
        if self.values[0].size != 1:
            return float("nan")
        flat = self.values.reshape(len(self.values)).astype("float64")
        return float(np.interp(step, np.arange(len(flat)), flat))

    def figure(self, unit: int = 0, *, state: str | None = None, output: str | None = None):
        """The bifurcation diagram (plotly): the input's value (its step for an
        input of several numbers) across, one number of each point up: unit
        `unit` of state `state` (default the first state), or of output
        `output`'s read-out (flattened). Stable points solid, the others
        dashed; the bifurcations marked and named.
        """
        import plotly.graph_objects as go

        y, label = self._heights(unit, state, output)
        scalar = "value" in self.frame
        x = self.frame["value" if scalar else "step"].to_numpy()
        fig, shown = go.Figure(), set()
        for b, rows in self.frame.groupby("branch").groups.items():
            rows = np.asarray(rows)
            stable = self.frame["stable"].to_numpy()[rows]
            for start, stop in _runs(stable):
                part = rows[start : stop + 1 + (stop + 1 < len(rows))]
                kind = "stable" if stable[start] else "unstable"
                fig.add_trace(
                    go.Scatter(
                        x=x[part],
                        y=y[part],
                        mode="lines+markers",
                        line={"dash": "solid" if stable[start] else "dash", "color": "#1f77b4"},
                        marker={"size": 4},
                        name=kind,
                        legendgroup=kind,
                        showlegend=kind not in shown,
                        hovertemplate=f"branch {int(b)}<extra></extra>",
                    )
                )
                shown.add(kind)
        self._mark_bifurcations(fig, y, scalar)
        fig.update_layout(
            xaxis_title=plotly_text(self.input if scalar else f"step of {self.input}"),
            yaxis_title=plotly_text(label),
            title="bifurcation diagram: stable solid, unstable dashed",
        )
        return fig

    def _heights(self, unit, state, output):
        """The number drawn up for each row, and its label."""
        if output is not None:
            if output not in self.outputs:
                raise ValueError(
                    f"Continuation.figure: `output` is one of {list(self.outputs)}. "
                    f"Received: output={output!r}"
                )
            values, label = self.outputs[output], output
        else:
            state = self.names[0] if state is None else state
            if state not in self.states:
                raise ValueError(
                    f"Continuation.figure: `state` is one of {self.names}. "
                    f"Received: state={state!r}"
                )
            values, label = self.states[state], state
        values = values.reshape(len(values), -1)
        if not -values.shape[1] <= unit < values.shape[1]:
            raise ValueError(
                f"Continuation.figure: `unit` indexes the {values.shape[1]} numbers of "
                f"'{label}'. Received: unit={unit!r}"
            )
        return values[:, unit], f"{label}[{unit}]"

    def _mark_bifurcations(self, fig, y, scalar: bool):
        import plotly.graph_objects as go

        events = self.bifurcations
        if not len(events):
            return
        heights = [
            np.mean([y[self._row_of(b, s)] for b in (a, o) if b >= 0])  # a fold: between
            for a, o, s in zip(events["branch"], events["other"], events["step"])
        ]
        fig.add_trace(
            go.Scatter(
                x=events["value" if scalar else "step"],
                y=heights,
                mode="markers+text",
                marker={"symbol": "x", "size": 9, "color": "#d62728"},
                text=list(events["kind"]),
                textposition="top center",
                name="bifurcations",
            )
        )

    def _row_of(self, branch, step) -> int:
        """The branch's row nearest the fractional `step`."""
        rows = self.frame.index[self.frame["branch"] == branch]
        steps = self.frame["step"].to_numpy()[rows]
        return int(rows[np.argmin(np.abs(steps - step))])


def _runs(flags) -> list:
    """`(start, stop)` of each run of equal flags, inclusive."""
    cuts = np.flatnonzero(np.diff(flags.astype(int))) + 1
    starts = np.concatenate([[0], cuts])
    stops = np.concatenate([cuts - 1, [len(flags) - 1]])
    return list(zip(starts, stops))


# ------------------------------------------------------------- bifurcations
def _bifurcations(c: Continuation) -> pd.DataFrame:
    """Every event along the branches, as `Continuation.bifurcations` lists it."""
    frame, last = c.frame, len(c.values) - 1
    margin = c.settings["marginal_tolerance"]
    rows = []
    ends, starts = {}, {}
    for b, index in frame.groupby("branch").groups.items():
        index = np.asarray(index)
        steps = frame["step"].to_numpy()[index]
        rows += _stability_events(c, int(b), index, margin)
        if steps[-1] < last:
            ends.setdefault(int(steps[-1]), []).append((int(b), index[::-1]))
        if steps[0] > 0:
            starts.setdefault(int(steps[0]) - 1, []).append((int(b), index))
    for j, group in ends.items():
        rows += _end_events(c, group, j, +1, "ends")
    for j, group in starts.items():
        rows += _end_events(c, group, j, -1, "appears")
    columns = ["value", "step", "kind", "event", "branch", "other", "multiplier"]
    out = pd.DataFrame(rows, columns=columns)
    out["value"] = [c.position(s) for s in out["step"]]
    out = out.sort_values(["step", "branch"], kind="stable").reset_index(drop=True)
    out["kind"] = pd.Categorical(out["kind"], categories=_KINDS)
    return out


def _stability_events(c, branch: int, index, margin: float) -> list:
    """Where the branch's spectral radius crosses 1 (beyond the marginal band)."""
    radius = c.frame["spectral_radius"].to_numpy()[index]
    steps = c.frame["step"].to_numpy()[index]
    side = np.where(radius > 1 + margin, 1, np.where(radius < 1 - margin, -1, 0))
    events, last = [], None
    for i in np.flatnonzero(side):
        if last is not None and side[i] != side[last]:
            r0, r1 = radius[last] - 1.0, radius[i] - 1.0
            at = steps[last] + (steps[i] - steps[last]) * r0 / (r0 - r1)
            outer = index[i] if side[i] > 0 else index[last]
            mult = c.eigenvalues[outer, 0]
            kind = _crossing_kind(mult)
            events.append((np.nan, at, kind, "stability", branch, -1, mult))
        last = i
    return events


def _crossing_kind(multiplier) -> str:
    if abs(multiplier.imag) > 1e-6 * max(1.0, abs(multiplier)):
        return "hopf"
    return "period-doubling" if multiplier.real < 0 else "branch"


def _end_events(c, group, j: int, sign: int, event: str) -> list:
    """Branches that end after step `j` (`sign` +1) or appear after it (-1):
    folds where two of them meet, the others "branch". `group` holds each
    branch and its rows, nearest the event first."""
    near = {b: _near_one(c.eigenvalues[rows[0]]) for b, rows in group}
    pairs = _fold_pairs(c, group, near)
    paired = {b for pair in pairs for b in pair}
    events = []
    for a, b in pairs:
        at = np.mean([_fold_step(c, rows, near[x], j, sign) for x, rows in group if x in (a, b)])
        events.append((np.nan, at, "fold", event, a, b, near[a]))
    for b, _ in group:
        if b not in paired:
            events.append((np.nan, j + 0.5, "branch", event, b, -1, near[b]))
    return events


def _near_one(eigenvalues):
    """The real eigenvalue nearest +1 (NaN if none is real)."""
    real = eigenvalues[np.abs(eigenvalues.imag) <= 1e-6 * np.maximum(1.0, np.abs(eigenvalues))]
    if not len(real):
        return complex("nan")
    return complex(real[np.argmin(np.abs(real.real - 1.0))].real)


def _fold_pairs(c, group, near) -> list:
    """Mutually nearest branches of `group` with real multipliers on either side of +1."""
    if len(group) < 2:
        return []
    ids = [b for b, _ in group]
    flat = np.stack([c.flat[rows[0]] for _, rows in group]).astype("float64")
    dist = np.linalg.norm(flat[:, None] - flat[None], axis=2)
    np.fill_diagonal(dist, np.inf)
    nearest = np.argmin(dist, axis=1)
    pairs = []
    for i, k in enumerate(nearest):
        a, b = ids[i], ids[k]
        across = (near[a].real - 1.0) * (near[b].real - 1.0) < 0
        if i < k and nearest[k] == i and across:
            pairs.append((a, b))
    return pairs


def _fold_step(c, rows, multiplier, j: int, sign: int) -> float:
    """Where the multiplier nearest +1 reaches 1 past step `j` (toward `j + 1`
    for a branch that ends there, `sign` +1; from `j + 1` back toward `j` for
    one that appears), from the last two rows: `(lambda - 1)^2` is linear in
    the input near a fold. Clamped between the two steps; half way without
    two rows."""
    if len(rows) < 2 or np.isnan(multiplier.real):
        return j + 0.5
    g1 = (multiplier.real - 1.0) ** 2
    g0 = (_near_one(c.eigenvalues[rows[1]]).real - 1.0) ** 2
    if not np.isfinite(g0) or g0 <= g1:
        return j + 0.5
    steps = c.frame["step"].to_numpy()
    s1, s0 = steps[rows[0]], steps[rows[1]]
    at = s1 + (s1 - s0) * g1 / (g0 - g1)
    return float(np.clip(at, j, j + 1))
