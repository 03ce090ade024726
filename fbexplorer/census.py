"""The attractors of a feedback network, from free runs of its step: a census.

`attractors` holds the inputs, runs the step as a map of the state
(`fbexplorer.state_map`) from many starting states at once, in one compiled
loop, and classifies where each run ends: a fixed point, a cycle of some
period, a continuum of fixed (or slow) points such as a line or a plane
attractor, or an irregular (chaotic) orbit; `Attractors` holds the result.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from keras import ops

from fbexplorer import recording
from fbexplorer.fixed_point_search import dedupe_points, fixed_points
from fbexplorer.memory import check_memory
from fbexplorer.starting_states import is_state_dict, starting_states
from fbexplorer.state_map import (
    check_has_state,
    compile_fn,
    held_inputs,
    state_layout,
    state_map,
)

__all__ = ["Attractors", "attractors"]

# A state whose values exceed this (or become NaN or inf) has diverged.
BOUND = 1e6
# The distance between the two nearby runs that estimate the largest Lyapunov exponent.
SEPARATION = 1e-4
# A continuum's dimension: the singular values of a neighbourhood's spread above this
# fraction of the largest, in NEIGHBOURS nearest endpoints (the median over endpoints).
RANK_FRACTION = 0.2
NEIGHBOURS = 12
# The endpoints each one is linked to when testing whether they form one continuum.
LINKS = 8


# ------------------------------------------------------------------ the result
class Attractors:
    """The attractors a feedback network's free runs end on, with the inputs held.

    Made by `fbx.attractors`; a result that can be read without the model.

    Attributes:
        frame: a DataFrame, one row per attractor (index `attractor`), largest
            share first: `kind` ("fixed", "cycle", "continuum", "irregular",
            or "divergent" for runs whose state grows past 1e6 or becomes NaN),
            `period` (1 for a fixed point or continuum, the cycle's period,
            <NA> otherwise), `dimension` (0 for a point or cycle, the
            continuum's dimension, <NA> otherwise), `share` (the fraction of
            starts that end there; the shares sum to 1), `starts` (how many),
            `max_lyapunov` (the largest Lyapunov exponent, natural log per
            step, averaged over the runs that end there).
        states: one point of each attractor, `{state name: (attractors, *shape)}`,
            `(attractors, k, *shape)` for a delay-k edge (oldest first), as
            `initial_state` takes them: for a cycle one of its states, for a
            continuum the endpoint nearest its mean.
        labels: `(starts,)`, the attractor (row) each run ends on.
        starts, endpoints: `{state name: (starts, *shape)}`, where each run
            started and where it ended (after `steps + 2 max_period` steps).
        names: the state names; inputs: the held inputs and constants;
        settings: every setting, as used.
    """

    def __init__(self, frame, flat, orbits, labels, runs, *, layout, inputs, settings):
        self.frame = frame
        self.flat = np.asarray(flat)
        self._orbits = orbits
        self._layout = layout
        self.labels = np.asarray(labels)
        self.names = list(layout.names)
        self.inputs = dict(inputs)
        self.settings = dict(settings)
        self.states = layout.to_dict(self.flat)
        self.starts = layout.to_dict(np.asarray(runs[0]))
        self.endpoints = layout.to_dict(np.asarray(runs[1]))

    def __len__(self) -> int:
        return len(self.frame)

    def __repr__(self) -> str:
        kinds = self.frame["kind"].value_counts()
        listed = ", ".join(f"{n} {k}" for k, n in kinds.items())
        return f"Attractors({len(self)}: {listed}; from {len(self.labels)} starts)"

    def orbit(self, i: int) -> dict:
        """The states of attractor `i`'s cycle in order, `{name: (period, *shape)}`
        (one state for a fixed point)."""
        return self._layout.to_dict(self._orbits[i])

    def initial_state(self, i: int) -> dict:
        """Attractor `i`'s point as `initial_state` for a call: `{name: (1, ...)}`."""
        return {name: value[i : i + 1] for name, value in self.states.items()}

    def refine(self, model, *, period: int = 1, **kwargs):
        """Exact points or orbits near the attractors, by `fbx.fixed_points`.

        `period=1` (the default): `fbx.fixed_points(model, inputs, initial=self.states,
        ...)`, one start per attractor without noise unless `kwargs` say otherwise:
        a fixed point or a continuum's point comes back with its Jacobian and
        stability; a cycle's point is no fixed point, and is kept only if one lies
        near. `period=k`: the census's cycles of period `k`, refined as periodic
        orbits, `fbx.fixed_points(..., period=k)` seeded at one state of each (one
        row per orbit, `.orbit(i)` its states, the eigenvalues its multipliers).
        Either way one `FixedPoints`; `refine_all` gives one per period listed.

        Example:
            >>> census = fbx.attractors(net, {"x": np.zeros(5, "float32")}, starts=16)
            >>> points = census.refine(net)   # exact fixed points near the attractors
            >>> cycles = [census.refine(net, period=k) for k in census.periods() if k > 1]
        """
        kwargs.setdefault("noise", 0.0)
        if period == 1:
            kwargs.setdefault("n_starts", len(self))
            return fixed_points(model, self.inputs, initial=self.states, **kwargs)
        periods = self.periods()
        integer = isinstance(period, (int, np.integer)) and not isinstance(period, bool)
        if not integer or period not in periods:
            raise ValueError(
                f"Attractors.refine: `period` is the period of the cycles to refine, 1 for "
                f"the fixed points or one of the periods the census lists, {periods}. "
                f"Received: period={period!r}"
            )
        rows = np.flatnonzero((self.frame["kind"] == "cycle") & (self.frame["period"] == period))
        kwargs.setdefault("n_starts", len(rows))
        seeds = {name: value[rows] for name, value in self.states.items()}
        return fixed_points(model, self.inputs, initial=seeds, period=int(period), **kwargs)

    def periods(self) -> list:
        """The periods the census lists: 1 where it has a fixed point or continuum,
        then each cycle's, ascending."""
        kinds, found = self.frame["kind"], set()
        if kinds.isin(["fixed", "continuum"]).any():
            found.add(1)
        found.update(int(p) for p in self.frame["period"][kinds == "cycle"])
        return sorted(found)

    def refine_all(self, model, **kwargs) -> dict:
        """`{period: FixedPoints}`: `refine(model, period=k, **kwargs)` for each
        period the census lists (`periods()`), fixed points under 1.

        Example:
            >>> census = fbx.attractors(net, {"x": np.zeros(5, "float32")}, starts=16)
            >>> refined = census.refine_all(net)   # e.g. {1: FixedPoints(...), 2: ...}
            >>> sorted(refined) == census.periods()
            True
        """
        return {k: self.refine(model, period=k, **kwargs) for k in self.periods()}


# --------------------------------------------------------------- the census
def attractors(
    model,
    inputs,
    *,
    initial=None,
    starts: int = 256,
    steps: int = 1000,
    max_period: int = 16,
    tolerance: float = 1e-5,
    slow_tolerance: float | None = None,
    noise: float = 0.01,
    dedupe_tolerance: float = 1e-3,
    seed: int = 0,
) -> Attractors:
    """A census of the attractors of a feedback network with its inputs held.

    One step of the network maps its state `s` (every delayed edge's
    history and every cell's state) to `F(s)`. From `starts` states at once,
    `F` is run `steps` times in one compiled loop, then `2 max_period` more
    steps are recorded, and each run is classified from them:

    - period `p`: the least `p <= max_period` with `|s[t+p] - s[t]| <=
      tolerance` over the recorded steps (the largest difference of any
      number, against `tolerance` times the run's largest absolute value
      where that is above 1); `p = 1` is a fixed point, `p > 1` a cycle.
      Runs on one cycle (or point) closer than `dedupe_tolerance`
      (Euclidean) are one attractor.
    - "continuum": fixed endpoints (or slow ones, moving less than
      `slow_tolerance` a step) that are distinct but connected: each is
      linked to its nearest endpoints when the points at 1/4, 1/2 and 3/4 of
      the way between them are fixed (or slow) too; a linked set of more
      than one distinct endpoint is a continuum, such as a line or plane
      attractor. Its `dimension` is the rank of the endpoints' local spread
      (the median, over its endpoints, of how many singular values of the 12
      nearest endpoints' spread exceed 0.2 times the largest).
    - "irregular": no period up to `max_period`; runs whose recorded ranges
      overlap are one attractor. A positive `max_lyapunov` says chaos; a
      negative one a longer cycle or a run still converging (more `steps=`).
    - "divergent": the state passed 1e6 in size, or became NaN or inf.

    `max_lyapunov` is estimated from two nearby runs (Benettin's method):
    beside each run, a copy 1e-4 away is run too; the log of their distance's
    growth each step is averaged over the second half of the `steps`, and the
    copy is put back to 1e-4 away (times the state's norm, when above 1)
    along the difference after every step. Steps where the state is no longer
    finite are left out (NaN if none is left).

    Args:
        model: a `FeedbackModel` with at least one delayed edge or cell.
        inputs: one timestep's value for each per-step input and constant,
            `{name: array}` without batch or time axes, held at every step
            (as for `fbx.fixed_points`).
        initial: data as for a call: the runs start from states the model
            visits on it, plus `noise`; or states by name `{state name: (n,
            *shape)}`; without it, from states drawn uniformly from [-1, 1].
        starts: the number of runs.
        steps: the steps run before the recording (at least 2).
        max_period: the longest period looked for.
        tolerance: the largest change over a period of a settled run.
        slow_tolerance: runs that move less than this a step (and have not
            settled) count as slow points for the continua. Default: none.
        noise: the standard deviation of Gaussian noise added to the starts.
        dedupe_tolerance: endpoints (or cycles) closer than this are one.
        seed: the random seed for the starts, their noise and the copies.

    Returns:
        An `Attractors`: `.frame` (`kind`, `period`, `dimension`, `share`,
        `starts`, `max_lyapunov`), `.states`, `.labels`, `.endpoints`,
        `.orbit(i)`, `.initial_state(i)`, and `.refine(model)`, which seeds
        `fbx.fixed_points` at the attractors' points for exact fixed points
        and their linearisation (`.refine(model, period=k)`: the cycles of
        period `k` as exact periodic orbits; `.refine_all(model)`: every
        period, `{period: FixedPoints}`).

    Example:
        >>> census = fbx.attractors(net, {"x": np.zeros(5, "float32")}, starts=64)
        >>> census.frame            # kind, period, dimension, share, max_lyapunov
        >>> fp = census.refine(net)  # exact fixed points, seeded at the attractors
    """
    recording.check_model(model, what="attractors")
    check_has_state(model, "attractors")
    held = held_inputs(model, inputs, "attractors")
    settings = _checked_settings(
        starts=starts,
        steps=steps,
        max_period=max_period,
        tolerance=tolerance,
        slow_tolerance=slow_tolerance,
        noise=noise,
        dedupe_tolerance=dedupe_tolerance,
    )
    layout = state_layout(model)
    settings.update(seed=seed, initial=_initial_kind(initial, layout))
    window = 2 * max_period + 1
    _check_period_work(starts, layout.size, max_period)
    _check_census_memory(starts, layout.size, window)
    rng = np.random.default_rng(seed)
    begin = starting_states(model, initial, layout, rng, starts, noise, what="attractors")
    step = state_map(model, layout)
    record, lyapunov = _simulate(step, begin, rng, held, steps, window)
    frame, flat, orbits, labels = _classify(step, held, record, lyapunov, settings)
    names = model.graph.input_names + model.graph.constant_names
    return Attractors(
        frame,
        flat,
        orbits,
        labels,
        (begin, record[-1]),
        layout=layout,
        inputs={n: ops.convert_to_numpy(v) for n, v in zip(names, held)},
        settings=settings,
    )


def _initial_kind(initial, layout) -> str:
    """Where the starts come from, as `settings["initial"]` says."""
    if initial is None:
        return "uniform"
    return "states" if is_state_dict(initial, layout) else "visited"


# ------------------------------------------------------------ the simulation
def _simulate(step, begin, rng, held, steps: int, window: int):
    """Run `F` `steps` times from `begin` beside copies `SEPARATION` away, then record
    `window` states: `(record (window, P, D) float64, max_lyapunov (P,))`."""
    direction = rng.normal(size=begin.shape)
    direction /= np.maximum(np.linalg.norm(direction, axis=1, keepdims=True), 1e-30)
    measured = max(1, steps // 2)

    def run(s, v, held):
        def apart(s):  # the copies' distance: SEPARATION, relative to a large state
            return SEPARATION * ops.maximum(1.0, ops.sqrt(ops.sum(s * s, axis=1)))

        def body(i, carry):
            s, u, before, total, count = carry
            s, u = step(s, held), step(u, held)
            diff = u - s
            d = ops.sqrt(ops.sum(diff * diff, axis=1))
            safe = ops.maximum(d, 1e-30)
            growth = ops.log(safe / before)
            counted = ops.logical_and(i >= steps - measured, ops.isfinite(growth))
            total = total + ops.where(counted, growth, ops.zeros_like(growth))
            count = count + ops.cast(counted, count.dtype)
            after = apart(s)
            u = s + ops.where((d > 0)[:, None], diff * (after / safe)[:, None], after[:, None] * v)
            return s, u, after, total, count

        zero = ops.zeros((ops.shape(s)[0],), s.dtype)
        first = apart(s)
        carry = (s, s + first[:, None] * v, first, zero, zero)
        s, _, _, total, count = ops.fori_loop(0, steps, body, carry)

        def record(i, buffer):
            return ops.concatenate([buffer[1:], step(buffer[-1], held)[None]], axis=0)

        buffer = ops.broadcast_to(s[None], (window,) + tuple(s.shape))
        return ops.fori_loop(0, window - 1, record, buffer), total / count

    record, total = compile_fn(run)(
        ops.convert_to_tensor(begin), ops.convert_to_tensor(direction.astype("float32")), held
    )
    return ops.convert_to_numpy(record).astype("float64"), ops.convert_to_numpy(total)


def _periods(record: np.ndarray, tolerance: float, max_period: int) -> np.ndarray:
    """The least period of each run over the recorded steps, 0 for none, `(P,)`.

    Periods are tried in ascending order, each only on the runs still without one
    whose state returns within the tolerance after it (`s[p]` near `s[0]`): a run
    of period `p` is checked over the whole record once, most others not at all."""
    scale = np.maximum(1.0, np.abs(record).max(axis=(0, 2)))
    period = np.zeros(record.shape[1], int)
    for p in range(1, max_period + 1):
        open_ = np.flatnonzero(period == 0)
        returns = np.abs(record[p, open_] - record[0, open_]).max(axis=1)
        open_ = open_[returns <= tolerance * scale[open_]]
        if open_.size:
            runs = record[:, open_]
            change = runs[p:] - runs[:-p]
            change = np.abs(change, out=change).max(axis=(0, 2))  # within the 28 bytes a number
            period[open_[change <= tolerance * scale[open_]]] = p
    return period


# ---------------------------------------------------------- the classification
def _classify(step, held, record, lyapunov, settings):
    """Group the runs into attractors: `(frame, flat points, orbits, labels)`."""
    last = record[-1]
    diverged = ~np.isfinite(record).all(axis=(0, 2)) | (
        np.nan_to_num(np.abs(record), nan=np.inf).max(axis=(0, 2)) > BOUND
    )
    period = np.where(
        diverged, -1, _periods(np.nan_to_num(record), settings["tolerance"], settings["max_period"])
    )
    moving = np.abs(record[-1] - record[-2]).max(axis=1)
    slow = settings["slow_tolerance"]
    settled = (period == 1) | ((period == 0) & (slow is not None) & (moving <= (slow or 0)))
    bound = max(settings["tolerance"], slow or 0.0)
    groups = []  # (kind, period, dimension, member indices, flat point, orbit)
    groups += _fixed_groups(step, held, last, np.flatnonzero(settled), bound, settings)
    cycling = np.flatnonzero((period > 1) & ~diverged)
    groups += _cycle_groups(record, cycling, period, settings["dedupe_tolerance"])
    groups += _irregular_groups(record, np.flatnonzero(~settled & (period == 0)), lyapunov)
    if diverged.any():
        members = np.flatnonzero(diverged)
        groups.append(("divergent", None, None, members, last[members[0]], last[members[:1]]))
    groups.sort(key=lambda g: -len(g[3]))
    labels = np.zeros(record.shape[1], int)
    for i, g in enumerate(groups):
        labels[g[3]] = i
    total = record.shape[1]
    frame = pd.DataFrame(
        {
            "kind": [g[0] for g in groups],
            "period": pd.array([g[1] for g in groups], dtype="Int64"),
            "dimension": pd.array([g[2] for g in groups], dtype="Int64"),
            "share": [len(g[3]) / total for g in groups],
            "starts": [len(g[3]) for g in groups],
            "max_lyapunov": [float(np.mean(lyapunov[g[3]])) for g in groups],
        },
        index=pd.RangeIndex(len(groups), name="attractor"),
    )
    flat = np.array([g[4] for g in groups], "float32").reshape(len(groups), record.shape[2])
    return frame, flat, [np.asarray(g[5], "float32") for g in groups], labels


def _fixed_groups(step, held, last, members, bound: float, settings):
    """Settled runs: isolated fixed points, and continua of distinct linked endpoints."""
    if not members.size:
        return []
    points = last[members]
    distinct = points[dedupe_points(points, np.zeros(len(points)), settings["dedupe_tolerance"])]
    nearest = _distances(points, distinct).argmin(axis=1)
    component = _linked(step, held, distinct, bound)
    groups = []
    for c in np.unique(component):
        inside = np.flatnonzero(component == c)
        who = members[np.isin(nearest, inside)]
        if len(inside) == 1:
            point = distinct[inside[0]]
            groups.append(("fixed", 1, 0, who, point, point[None]))
            continue
        spread = distinct[inside]
        centre = spread[np.argmin(np.linalg.norm(spread - spread.mean(axis=0), axis=1))]
        groups.append(("continuum", 1, _dimension(spread), who, centre, centre[None]))
    return groups


def _distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances `(len(a), len(b))`."""
    square = (a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2.0 * a @ b.T
    return np.sqrt(np.maximum(square, 0.0))


def _linked(step, held, points: np.ndarray, bound: float) -> np.ndarray:
    """Components of the endpoints, each linked to its `LINKS` nearest when the points
    1/4, 1/2 and 3/4 of the way between them are fixed (or slow) too."""
    n = len(points)
    if n == 1:
        return np.zeros(1, int)
    near = _distances(points, points)
    np.fill_diagonal(near, np.inf)
    a = np.repeat(np.arange(n), min(LINKS, n - 1))
    b = np.argsort(near, axis=1, kind="stable")[:, : min(LINKS, n - 1)].reshape(-1)
    between = np.concatenate([points[a] + f * (points[b] - points[a]) for f in (0.25, 0.5, 0.75)])
    between = between.astype("float32")
    moved = ops.convert_to_numpy(step(ops.convert_to_tensor(between), held)) - between
    scale = np.maximum(1.0, np.abs(between).max(axis=1))
    still = (np.abs(moved).max(axis=1) <= bound * scale).reshape(3, -1).all(axis=0)
    return _components(n, a[still], b[still])


def _components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Connected components of `n` nodes with edges `a[i] - b[i]`: a label per node."""
    label = np.arange(n)
    while True:
        low = np.minimum(label[a], label[b])
        new = label.copy()
        np.minimum.at(new, a, low)
        np.minimum.at(new, b, low)
        new = new[new]
        if np.array_equal(new, label):
            return label
        label = new


def _dimension(points: np.ndarray) -> int:
    """The rank of the local spread: the median over the points of how many singular
    values of their `NEIGHBOURS` nearest points' spread exceed `RANK_FRACTION` of
    the largest."""
    k = min(len(points), NEIGHBOURS)
    nearest = np.argsort(_distances(points, points), axis=1, kind="stable")[:, :k]
    local = points[nearest]
    local = local - local.mean(axis=1, keepdims=True)
    values = np.linalg.svd(local, compute_uv=False)
    ranks = (values > RANK_FRACTION * values[:, :1]).sum(axis=1)
    return max(1, int(np.round(np.median(ranks))))


def _cycle_groups(record, members, period, tolerance: float):
    """Runs on one cycle (one of its states within `tolerance`) are one attractor."""
    found = []  # [period, orbit (p, D), members]
    for i in members:
        p = period[i]
        orbit = record[:p, i]
        for known in found:
            if known[0] == p and np.linalg.norm(known[1] - orbit[0], axis=1).min() <= tolerance:
                known[2].append(i)
                break
        else:
            found.append([p, orbit, [i]])
    return [("cycle", int(p), 0, np.array(m), orbit[0], orbit) for p, orbit, m in found]


def _irregular_groups(record, members, lyapunov):
    """Unsettled runs whose ranges overlap (transitively) are one attractor. The range
    of a converging run (negative exponent) reaches as far as it still goes: its last
    step times `1 / (1 - exp(exponent))`, at most the spread of all unsettled runs."""
    if not members.size:
        return []
    runs = record[:, members]
    low, high = runs.min(axis=0), runs.max(axis=0)
    spread = float((high.max(axis=0) - low.min(axis=0)).max())
    rate = np.exp(np.minimum(np.nan_to_num(lyapunov[members], nan=0.0), 0.0))
    last = np.abs(runs[-1] - runs[-2]).max(axis=1)
    reach = np.where(rate < 1.0, np.minimum(last / np.maximum(1.0 - rate, 1e-12), spread), 0.0)
    low, high = low - reach[:, None], high + reach[:, None]
    label = np.arange(len(members))  # merged row by row: no list of all the pairs
    for i in range(len(members)):
        overlap = (low[i] <= high).all(axis=1) & (low <= high[i]).all(axis=1)
        joined = np.isin(label, np.unique(label[overlap]))
        label[joined] = label[joined].min()
        if label.max() == 0:  # all one already
            break
    groups = []
    for c in np.unique(label):
        who = members[label == c]
        point = record[-1, who[0]]
        groups.append(("irregular", None, None, who, point, point[None]))
    return groups


# ---------------------------------------------------------------- the settings
_SETTINGS = {
    "starts": ("the number of runs", "an integer >= 1"),
    "steps": ("the steps run before the recording", "an integer >= 1"),
    "max_period": ("the longest period looked for", "an integer >= 1"),
    "tolerance": ("the largest change over a period of a settled run", "a finite number > 0"),
    "slow_tolerance": ("the largest step of a slow point", "a finite number > 0, or None"),
    "noise": ("the spread of the noise added to the starts", "a finite number >= 0"),
    "dedupe_tolerance": ("the distance below which two endpoints are one", "a finite number >= 0"),
}


def _checked_settings(**values) -> dict:
    """The settings, checked: counts positive integers, tolerances finite numbers."""
    for name, value in values.items():
        role, kind = _SETTINGS[name]
        if value is None and "None" in kind:
            continue
        number = isinstance(value, (int, float, np.integer, np.floating))
        number = number and not isinstance(value, bool)
        if kind.startswith("an integer"):
            ok = number and isinstance(value, (int, np.integer)) and value >= 1
        else:
            ok = number and np.isfinite(value) and (value >= 0 if ">= 0" in kind else value > 0)
        if not ok:
            raise ValueError(
                f"fbx.attractors: `{name}` is {role}, {kind}. Received: {name}={value!r}"
            )
    counts = ("starts", "steps", "max_period")
    return {
        k: None if v is None else int(v) if k in counts else float(v) for k, v in values.items()
    }


def _check_census_memory(starts: int, size: int, window: int):
    """Refuse a census whose recorded states (and their comparisons) would not fit in
    the memory budget: about 28 bytes per recorded number, and the endpoints' distances."""
    need = 28 * window * starts * size + 16 * starts * starts + 40 * LINKS * starts * size
    detail = f"{starts:,} starts x {window} recorded states x {size:,} numbers of state"
    remedy = "Pass fewer starts= or a smaller max_period="
    check_memory("fbx.attractors", need, detail, remedy)


# The most numbers the period search may compare, at worst (every run returning
# near its start after every period): about a minute of numpy on one core.
PERIOD_WORK = 10**11


def _check_period_work(starts: int, size: int, max_period: int):
    """Refuse a `max_period` whose search would compare more than `PERIOD_WORK`
    numbers at worst (`max_period` periods x `2 max_period + 1` recorded states x
    the runs' numbers): the work grows as its square, whatever the memory."""
    per = starts * size
    work = max_period * (2 * max_period + 1) * per
    if work <= PERIOD_WORK:
        return
    fits = int((np.sqrt(1 + 8 * PERIOD_WORK / per) - 1) / 4) if per <= PERIOD_WORK else 0
    raise ValueError(
        f"fbx.attractors: `max_period` is the longest period looked for; each period up to "
        f"it is compared over 2 max_period + 1 recorded states of every run, about "
        f"{float(work):.1e} numbers for {starts:,} starts x {size:,} numbers of state, more "
        f"than {float(PERIOD_WORK):.0e}. Pass max_period={max(fits, 1)} or less, or fewer "
        f"starts=. Received: max_period={max_period}"
    )
