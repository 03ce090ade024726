"""Fixed points of a feedback network: where one step leaves the state unchanged.

`fixed_points` finds states with `F(s) = s` (`F`, the step as a map of the
state: `fbexplorer.state_map`) by minimising `q(s) = 1/2 |F(s) - s|^2` from
many starting states at once (Levenberg-Marquardt or Adam, in one compiled
loop), as FixedPointFinder (Golub & Sussillo 2018) does for a single cell,
and linearises `F` there; a `FixedPoints` holds the result.
"""

from __future__ import annotations

import contextlib

import keras
import numpy as np
import pandas as pd
from keras import ops

from fbexplorer import recording
from fbexplorer.linearisation import (
    MARGINAL_TOLERANCE,
    chain,
    chain_inputs,
    eigen_decomposition,
    stability_labels,
    time_constants,
)
from fbexplorer.memory import (
    ADAM_VECTORS,
    JACOBIAN_MATRICES,
    LM_MATRICES,
    check_memory,
    format_bytes,
    memory_budget,
)
from fbexplorer.orbits import distinct_orbits
from fbexplorer.saddle_connections import check_states, connections
from fbexplorer.starting_states import starting_states
from fbexplorer.state_map import (
    check_has_state,
    compile_fn,
    grad_fn,
    held_inputs,
    input_jacobian_fn,
    jacobian_fn,
    output_map,
    state_layout,
    state_map,
)

__all__ = ["FixedPoints", "dedupe_points", "fixed_points", "reusing_search"]


# --------------------------------------------------------- the compiled search
class _Search:
    """The compiled pieces of the search for one model and period `k`: `q` of
    `F^k`, one compiled call of several Levenberg-Marquardt or Adam steps on it
    (`LM_PER_CALL`, `ADAM_PER_CALL`), and one step `F` with its Jacobians
    (`dF/ds`, `dF/du`), which `fixed_points` chains along each orbit. The held
    inputs are arguments, so a second search (other inputs, other starts)
    reuses them.
    """

    LM_PER_CALL, ADAM_PER_CALL = 10, 100

    def __init__(self, net, layout, period: int = 1):
        self.step = state_map(net, layout)
        self.outputs = output_map(net, layout)
        self.period = int(period)
        self._fns = {}

    def step_k(self, s, held):
        """`F^k(s)`: `k` steps with the inputs held."""
        if self.period == 1:
            return self.step(s, held)
        return ops.fori_loop(0, self.period, lambda i, x: self.step(x, held), s)

    def jacobian_k(self, held):
        """`s -> (F^k(s), dF^k/ds)`: the chain rule along the `k` steps."""
        one = jacobian_fn(lambda x: self.step(x, held))
        if self.period == 1:
            return one

        def body(i, carry):
            x, acc = carry
            fx, jx = one(x)
            return fx, ops.matmul(jx, acc)

        return lambda s: ops.fori_loop(1, self.period, body, one(s))

    def q(self, s, held):
        r = self.step_k(s, held) - s
        return 0.5 * ops.sum(r * r, axis=1)

    def fn(self, name):
        if name not in self._fns:
            self._fns[name] = compile_fn(getattr(self, f"_{name}"))
        return self._fns[name]

    def _q(self, s, held):
        return self.q(s, held)

    def _step(self, s, held):
        return self.step(s, held)

    def _jacobian(self, s, held):
        return jacobian_fn(lambda x: self.step(x, held))(s)[1]

    def _readouts(self, s, held):
        """`dG/ds` of each output `G` (flattened) at each point, `(P, M, D)`."""

        def one(j):
            return jacobian_fn(
                lambda x: ops.reshape(self.outputs(x, held)[j], (ops.shape(x)[0], -1))
            )

        return [one(j)(s)[1] for j in range(len(self.outputs(s, held)))]

    def _input_jacobians(self, s, held):
        """`dF/du` at each point for each held input of a floating dtype, each
        `(P, D, *shape)`."""

        def one(i):
            return input_jacobian_fn(lambda u: self.step(s, held[:i] + [u] + held[i + 1 :]))

        return [one(i)(held[i]) for i in _floating(held)]

    def _newton(self, s, lam, held):
        """Levenberg-Marquardt steps, each point with its own damping: Newton's
        method on `F(s) - s` near a fixed point (quadratic convergence),
        gradient descent on `q` far from one."""
        jac = self.jacobian_k(held)
        eye = ops.eye(ops.shape(s)[1], dtype=s.dtype)

        def body(i, carry):
            s, lam = carry
            f, j = jac(s)
            r = f - s
            a = j - eye[None]
            at = ops.transpose(a, (0, 2, 1))
            h = ops.matmul(at, a) + lam[:, None, None] * eye[None]
            g = ops.matmul(at, r[:, :, None])
            new = s - ops.solve(h, g)[:, :, 0]
            better = self.q(new, held) < 0.5 * ops.sum(r * r, axis=1)
            s = ops.where(better[:, None], new, s)
            lam = ops.where(better, ops.maximum(lam / 3.0, 1e-12), ops.minimum(lam * 4.0, 1e12))
            return s, lam

        return ops.fori_loop(0, self.LM_PER_CALL, body, (s, lam))

    def _adam(self, s, m, v, t0, learning_rate, held):
        grad = grad_fn(lambda x: ops.sum(self.q(x, held)))
        b1, b2, eps = 0.9, 0.999, 1e-8

        def body(i, carry):
            s, m, v = carry
            g = grad(s)
            t = ops.cast(t0 + i + 1, s.dtype)
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            m_hat = m / (1 - b1**t)
            v_hat = v / (1 - b2**t)
            return s - learning_rate * m_hat / (ops.sqrt(v_hat) + eps), m, v

        return ops.fori_loop(0, self.ADAM_PER_CALL, body, (s, m, v))


def _search(net, layout, period: int = 1) -> _Search:
    """The model's `_Search` for `period`, kept on the model on TensorFlow
    (whose compiled functions read the weights when they run; JAX's would
    keep the weights they were traced with, unless `reusing_search` says so)."""
    if keras.backend.backend() != "tensorflow" and "_fbx_search" not in net.__dict__:
        return _Search(net, layout, period)
    cache = net.__dict__.get("_fbx_search")
    if cache is None:
        cache = {}
        object.__setattr__(net, "_fbx_search", cache)
    if period not in cache:
        cache[period] = _Search(net, layout, period)
    return cache[period]


# ------------------------------------------------------------ the result
_STABILITY = ["stable", "marginal", "unstable"]


class FixedPoints:
    """Fixed (and slow) points of a feedback network, with its linearisation there.

    Made by `fbx.fixed_points`; a result that can be sliced and read without
    the model.

    Attributes:
        frame: a DataFrame, one row per point (index `point`), with `period`
            (1, or the `period=` searched: one row per orbit), `q`
            (`1/2 |F(s) - s|^2`), `stable` (True only where `stability` is
            "stable"), `stability` ("stable": spectral radius below
            `1 - marginal_tolerance`; "marginal": within `marginal_tolerance`
            of 1, as on a line attractor; "unstable": above
            `1 + marginal_tolerance`), `spectral_radius`, `tau` (the
            slowest mode's time constant in steps, `-1 / ln(spectral_radius)`:
            inf at 1; negative above 1, where `|tau|` is the time in which the
            fastest-growing mode grows by e), `n_unstable`
            (eigenvalues of modulus above `1 + marginal_tolerance`) and
            `slow` (q above `tolerance`, kept by `slow_tolerance`).
        states: `{state name: array (points, *shape)}`, or
            `(points, k, *shape)` for a delay-k edge (oldest first): pass one
            point as `initial_state` to start the model there.
        eigenvalues: `(points, state size)` complex, by decreasing modulus.
        flat: `(points, state size)`: the states as one vector each, in the
            order of `names` (each history oldest first, C order); the rows
            and columns of `jacobian(i)` follow it.
        names: the state names, in the order of `flat`.
        period: the number of steps after which each point returns (the
            `period=` searched); the linearisation is that of `F^period`.
        inputs: the held inputs and constants, `{name: array}`.
        settings: every setting of the search, as used.
        n_starts, n_converged: starting states, and how many ended below the
            tolerance (before merging duplicates).
    """

    def __init__(
        self,
        flat,
        q,
        jacobians,
        *,
        layout,
        inputs,
        settings,
        n_starts,
        n_converged,
        input_jacobians=None,
        orbits=None,
        readouts=None,
    ):
        self.flat = np.asarray(flat)
        self._orbits = self.flat[:, None] if orbits is None else np.asarray(orbits)
        self.period = int(self._orbits.shape[1])
        self._jacobians = np.asarray(jacobians)
        self._input_jacobians = {k: np.asarray(v) for k, v in (input_jacobians or {}).items()}
        self._readouts = {k: np.asarray(v) for k, v in (readouts or {}).items()}
        self._layout = layout
        self.names = list(layout.names)
        self.inputs = dict(inputs)
        self.settings = dict(settings)
        self.n_starts = int(n_starts)
        self.n_converged = int(n_converged)
        eig = np.linalg.eigvals(self._jacobians) if len(self.flat) else np.zeros((0, layout.size))
        order = np.argsort(-np.abs(eig), axis=1, kind="stable")
        self.eigenvalues = np.take_along_axis(eig, order, axis=1)
        radius = np.abs(self.eigenvalues[:, 0]) if layout.size else np.zeros(len(self.flat))
        q = np.asarray(q, "float64")
        margin = self.settings.get("marginal_tolerance", MARGINAL_TOLERANCE)
        stability = stability_labels(radius, margin)
        self.frame = pd.DataFrame(
            {
                "period": np.full(len(q), self.period),
                "q": q,
                "stable": stability == "stable",
                "stability": pd.Categorical(stability, categories=_STABILITY),
                "spectral_radius": radius,
                "tau": time_constants(radius),
                "n_unstable": (np.abs(self.eigenvalues) > 1.0 + margin).sum(axis=1),
                "slow": q > self.settings["tolerance"],
            },
            index=pd.RangeIndex(len(q), name="point"),
        )
        self.states = layout.to_dict(self.flat)

    def __len__(self) -> int:
        return len(self.flat)

    def __repr__(self) -> str:
        counts = self.frame["stability"].value_counts()
        labels = ", ".join(f"{counts[label]} {label}" for label in _STABILITY if counts[label])
        what = "point" if self.period == 1 else "orbit"
        what = f"{what}{'s' * (len(self) != 1)}"
        what += f" of period {self.period}" if self.period > 1 else ""
        return (
            f"FixedPoints({len(self)} {what}{', ' if labels else ''}{labels}; "
            f"from {self.n_starts} starts, {self.n_converged} converged)"
        )

    def jacobian(self, i: int) -> np.ndarray:
        """`dF/ds` at point `i`, `(state size, state size)`, by autodiff.

        Rows and columns follow `flat`: for a delay-k edge its history, whose
        shift (each value moves one slot older) shows as identity blocks.
        """
        self._check_point(i, "jacobian")
        return self._jacobians[i]

    def eigenvectors(self, i: int):
        """`(values, right, left)`: the modes of the linearisation at point `i`.

        `values` `(D,)` complex, by decreasing modulus (as `eigenvalues[i]`);
        `right` `(D, D)`, its columns the right eigenvectors (unit norm):
        `J @ right = right @ diag(values)`; `left` `(D, D)`, its rows the
        left eigenvectors: `left @ J = diag(values) @ left`, scaled so that
        `left @ right = I`. A perturbation `d` of the state evolves as
        `J^t d = sum_m values[m]^t (left[m] @ d) right[:, m]`: `left[m]`
        selects what of `d` mode `m` keeps (the selection vector of Mante et
        al. 2013), `right[:, m]` is the direction it keeps it in. Rows and
        columns follow `flat`. Computed in float64 from `jacobian(i)`; for a
        defective `J` (a Jordan block) `right` is near singular.

        Example:
            >>> fp = fbx.fixed_points(net, {"x": np.zeros(5, "float32")}, n_starts=8)
            >>> values, right, left = fp.eigenvectors(0)
            >>> slowest = right[:, 0]   # the direction along which the state relaxes last
        """
        self._check_point(i, "eigenvectors")
        return eigen_decomposition(self._jacobians[i])

    def input_jacobian(self, i: int) -> dict:
        """`{name: dF/du}` at point `i`, for each held input and constant of a
        floating dtype: how one step's state moves per unit of that input,
        held at its value in `inputs`. Each is `(D, *shape)`: rows follow
        `flat` (the state), the other axes the input's own shape (without
        batch or time), so for an input of shape `(m,)` it is the `(D, m)`
        matrix `B` of `F(s + d, u + du) ~ s + J d + B du`.

        Example:
            >>> fp = fbx.fixed_points(net, {"x": np.zeros(5, "float32")}, n_starts=8)
            >>> fp.input_jacobian(0)["x"].shape   # (state size, 5): net's input x has 5 units
            (5, 5)
        """
        self._check_point(i, "input_jacobian")
        return {name: value[i] for name, value in self._input_jacobians.items()}

    def _check_point(self, i, what: str):
        n = len(self)
        integer = isinstance(i, (int, np.integer)) and not isinstance(i, bool)
        if not integer or not -n <= i < n:
            raise ValueError(
                f"FixedPoints.{what}: `i` is a point's row in .frame, an integer from {-n} "
                f"to {n - 1} ({n} point{'s' * (n != 1)}). Received: i={i!r}"
            )

    def select(self, which) -> FixedPoints:
        """A FixedPoints of some points: a boolean mask or indices, as in
        `fp.select(fp.frame.stable)`."""
        which = np.asarray(which)
        index = np.flatnonzero(which) if which.dtype == bool else which.astype(int).reshape(-1)
        return FixedPoints(
            self.flat[index],
            self.frame["q"].to_numpy()[index],
            self._jacobians[index],
            layout=self._layout,
            inputs=self.inputs,
            settings=self.settings,
            n_starts=self.n_starts,
            n_converged=self.n_converged,
            input_jacobians={k: v[index] for k, v in self._input_jacobians.items()},
            orbits=self._orbits[index],
            readouts={k: v[index] for k, v in self._readouts.items()},
        )

    def readout_alignment(self, i: int, modes: int = 3) -> pd.DataFrame:
        """How each output reads the slowest modes at point `i`: a DataFrame
        with a row per output unit and mode, columns `output`, `unit` (the
        index into the output's flattened values), `mode` (0 the slowest),
        `eigenvalue` and `alignment`: `|w . r| / (|w| |r|)`, the cosine of
        the angle between the unit's read-out direction `w = dy/ds` (the
        gradient of the output, at the step that starts from the point, with
        respect to that state) and the mode's right eigenvector `r`. 1: the
        output reads that mode alone; 0: it is blind to it. NaN where the
        output does not depend on the state (`w = 0`).

        Example:
            >>> fp = fbx.fixed_points(net, {"x": np.zeros(5, "float32")}, n_starts=8)
            >>> table = fp.readout_alignment(0, modes=2)   # out's 5 units x 2 modes
        """
        self._check_point(i, "readout_alignment")
        values, right, _ = self.eigenvectors(i)
        modes = min(int(modes), len(values))
        rows = []
        for name, w in self._readouts.items():
            w = w[i].astype("float64")
            norm = np.linalg.norm(w, axis=1)
            dots = np.abs(w @ right[:, :modes]) / np.where(norm == 0, np.nan, norm)[:, None]
            for unit in range(len(w)):
                for m in range(modes):
                    rows.append((name, unit, m, values[m], dots[unit, m]))
        columns = ["output", "unit", "mode", "eigenvalue", "alignment"]
        return pd.DataFrame(rows, columns=columns)

    def linearisation_error(self, model, i: int, *, scale: float = 1e-3, n: int = 8, seed=0):
        """How well `J` predicts the model's own step near point `i`: for `n`
        random perturbations `d` of norm `scale`, `|F^k(s + d) - F^k(s) - J d| / |d|`
        (`k` the period, `F` one step of `model` with `inputs` held), `(n,)`.
        Of the order of `scale` where the linearisation holds (the step's
        curvature), of the order of 1 where it does not.

        Example:
            >>> fp = fbx.fixed_points(net, {"x": np.zeros(5, "float32")}, n_starts=8)
            >>> bool(fp.linearisation_error(net, 0).max() < 0.01)
            True
        """
        self._check_point(i, "linearisation_error")
        layout = check_states(self, model, "linearisation_error")
        step = state_map(model, layout)
        held = [ops.convert_to_tensor(value) for value in self.inputs.values()]
        rng = np.random.default_rng(seed)
        d = rng.normal(size=(int(n), layout.size))
        d *= scale / np.linalg.norm(d, axis=1, keepdims=True)
        s = self.flat[i].astype("float64")
        x = ops.convert_to_tensor(np.concatenate([s[None], s + d]).astype(self.flat.dtype))
        for _ in range(self.period):
            x = step(x, held)
        moved = ops.convert_to_numpy(x).astype("float64")
        linear = d @ self._jacobians[i].astype("float64").T
        return np.linalg.norm(moved[1:] - moved[0] - linear, axis=1) / scale

    def connections(
        self,
        model,
        *,
        nudge: float = 1e-3,
        steps: int = 1000,
        tolerance: float | None = None,
        settle_tolerance: float = 1e-6,
        saddles=None,
    ) -> pd.DataFrame:
        """Which points each saddle connects: from each point with an unstable
        mode, `model` is run (with `inputs` held) from the point nudged by
        `nudge` along + and - each unstable eigenvector (a complex pair: its real
        and imaginary parts), all at once in one compiled loop, until it lands
        within `tolerance` (default `nudge / 10`) of a listed point, settles
        elsewhere (moving less than `settle_tolerance` over a period), diverges,
        or has run `steps` steps. `saddles`: the rows to nudge from (default:
        every point with an unstable mode).

        Returns a DataFrame, one row per nudge: `saddle`, `direction` (`"+0"`,
        `"-0"`: mode and sign; `"+1re"`, `"-1im"` for a complex pair's parts),
        `mode`, `part`, `sign`, `eigenvalue`, `attractor` (the row of the point
        reached, <NA> for none), `outcome` ("landed", "elsewhere", "unsettled",
        "divergent"), `steps`, `distance`; `fbx.connection_graph(fp, frame)` draws
        it. See `fbexplorer.saddle_connections.connections`.

        Example:
            >>> fp = fbx.fixed_points(net, {"x": np.zeros(5, "float32")}, n_starts=8)
            >>> links = fp.connections(net)
            >>> list(links.columns[:2]), list(links.columns[6:9])
            (['saddle', 'direction'], ['attractor', 'outcome', 'steps'])
        """
        return connections(
            self,
            model,
            nudge=nudge,
            steps=steps,
            tolerance=tolerance,
            settle_tolerance=settle_tolerance,
            saddles=saddles,
        )

    def orbit(self, i: int) -> dict:
        """The states of orbit `i` in order, `{name: (period, *shape)}`: its
        row's state, then each step's (`F(s)`, ..., `F^(k-1)(s)`); one state
        (`(1, *shape)`) for a fixed point. A delay-k edge's entries are
        `(period, k, *shape)`.

        Example:
            >>> fp = fbx.fixed_points(net, {"x": np.zeros(5, "float32")}, n_starts=8)
            >>> fp.orbit(0)["loop"].shape
            (1, 5)
        """
        self._check_point(i, "orbit")
        return self._layout.to_dict(self._orbits[i])

    def initial_state(self, i: int) -> dict:
        """Point `i` as `initial_state` for a call: `{name: (1, ...)}`."""
        return {name: value[i : i + 1] for name, value in self.states.items()}


# ------------------------------------------------------------- the search
def dedupe_points(flat, q, tol):
    """Indices of distinct points, lowest q first among near ones.

    Greedy, as a quadratic scan would be: in order of increasing `q`, a point
    is kept unless a kept point lies within `tol` (Euclidean). Only kept
    points in the neighbouring cells of a grid over 3 orthonormal
    projections of the points (cells of side `tol`) can lie that close, since
    a projection shortens distances: each point is compared with those alone.
    """
    n, size = flat.shape
    if n == 0:
        return np.zeros(0, int)
    dims = min(3, size)
    basis, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(size, dims)))
    projected = flat.astype(np.float64) @ basis
    # Cells of side >= tol (with a margin for rounding in the projection): any
    # larger side is exact too, and keeps the cell numbers well inside int64.
    side = max(tol * 1.001, float(np.abs(projected).max()) / 2**40, 1e-300)
    cells = np.floor(projected / side).astype(np.int64)
    offsets = np.array(np.meshgrid(*[[-1, 0, 1]] * dims, indexing="ij")).reshape(dims, -1).T
    grid: dict = {}
    keep = []
    for i in np.argsort(q, kind="stable"):
        near = [j for off in offsets for j in grid.get(tuple(cells[i] + off), ())]
        if near and np.min(np.linalg.norm(flat[near] - flat[i], axis=1)) <= tol:
            continue
        keep.append(i)
        grid.setdefault(tuple(cells[i]), []).append(i)
    return np.asarray(sorted(keep), int)


def fixed_points(
    model,
    inputs,
    *,
    initial=None,
    n_starts: int = 256,
    noise: float = 0.01,
    tolerance: float = 1e-10,
    slow_tolerance: float | None = None,
    method: str = "newton",
    iterations: int | None = None,
    learning_rate: float = 0.01,
    dedupe_tolerance: float = 1e-3,
    marginal_tolerance: float = MARGINAL_TOLERANCE,
    period: int = 1,
    seed: int = 0,
) -> FixedPoints:
    """Fixed points of a feedback network with its inputs held.

    One step of the network maps its state `s` (every delayed edge's
    history and every cell's state) to `F(s)`. Starting from `n_starts`
    states at once, the search minimises `q(s) = 1/2 |F(s) - s|^2` in one
    compiled loop; the points with `q` below `tolerance` are fixed points
    (below `slow_tolerance`, slow points), and near duplicates are merged.
    At each, the Jacobian `dF/ds` (autodiff) and its eigenvalues tell
    stability: a point is stable when every eigenvalue lies inside the unit
    circle, marginal when the largest modulus is within `marginal_tolerance`
    of 1 (where float rounding could tip the label either way).

    Args:
        model: a `FeedbackModel` with at least one delayed edge or cell.
        inputs: one timestep's value for each per-step input and constant,
            `{name: array}` without batch or time axes (an array alone for a
            model of one input), held at every step.
        initial: data as for a call (a batch of sequences): the search starts
            from states the model visits on it, plus `noise`. Or states by
            name, `{state name: (n, *shape)}` as `.states` holds them (of a
            `FixedPoints` or of `fbx.attractors`), cycled to `n_starts`, plus
            `noise`. Without it, from states drawn uniformly from [-1, 1].
        n_starts: the number of starting states.
        noise: the standard deviation of Gaussian noise added to them.
        tolerance: `q` below which a point is fixed.
        slow_tolerance: a looser bound: points with `q` below it are kept too,
            marked `slow` (slow points). Default: fixed points only.
        method: `"newton"`: Levenberg-Marquardt steps, each point with its own
            damping (Newton's method near a fixed point, so `q` falls to
            float precision in a few steps; it solves a `state size` square
            system per point and step, fine up to a few thousand numbers of
            state). `"adam"`: Adam on `q`, as FixedPointFinder does: only
            gradients, for large states, but slow to reach a tight tolerance.
        iterations: the most steps (default 200 for "newton", 5000 for
            "adam"). The search stops early once every point is below the
            tolerance or no point improves.
        learning_rate: Adam's step size (`method="adam"`).
        dedupe_tolerance: points closer than this (Euclidean norm of the state
            difference) are one point; the one of lowest `q` is kept.
        marginal_tolerance: a point whose spectral radius lies within this of
            1 is labelled `"marginal"` (neither stable nor unstable: a line
            attractor's eigenvalue 1 comes out as 0.9999999 or 1.0000001 by
            float rounding alone), and eigenvalues count as unstable
            (`n_unstable`) only above `1 + marginal_tolerance`. Default 1e-3.
        period: `k` finds periodic orbits instead: states with `F^k(s) = s`
            of least period `k` (points of a period dividing `k`, fixed
            points included, are left out: their `F^d(s)` lies within
            `dedupe_tolerance` of `s`), one row per orbit (its `k` states are
            one orbit, not `k` points), with `.orbit(i)` its states in order.
            `q`, `jacobian(i)`, `eigenvalues` (the orbit's Floquet
            multipliers), `stability`, `tau` and `input_jacobian(i)` are then
            those of the `k`-step map `F^k` at the row's state. Each step of
            the search costs `k` steps of the model.
        seed: the random seed for choosing and perturbing the starts.

    The settings are checked (counts positive integers, tolerances finite
    and positive), NaN or inf held inputs and weights are refused, and the
    starts from `initial` are drawn among the finite states it visits. The
    memory of the search (about 12 matrices of the state's size squared per
    start for "newton"; for "adam", 6 per point found, for its Jacobian) is
    estimated first and refused above the budget (`fbx.set_memory_budget`)
    with one line saying what to pass (`n_starts=`, `method="adam"`).

    Returns:
        A `FixedPoints`: `.frame` (`period`, `q`, `stable`, `stability`,
        `spectral_radius`, `tau`, `n_unstable`, `slow`), `.eigenvectors(i)`,
        `.input_jacobian(i)`, `.orbit(i)`, `.states`, `.eigenvalues`, `.jacobian(i)`,
        `.settings` (these arguments, as used).

    Example:
        >>> fp = fbx.fixed_points(net, {"x": np.zeros(5, "float32")}, initial=X)
        >>> fp.frame[fp.frame.stable]
        >>> net(X[:1, :30] * 0, initial_state=fp.initial_state(0))  # starts at a point
    """
    recording.check_model(model, what="fixed_points")
    check_has_state(model, "fixed_points")
    held = held_inputs(model, inputs, "fixed_points")
    settings = _checked_settings(
        model,
        n_starts=n_starts,
        noise=noise,
        tolerance=tolerance,
        slow_tolerance=slow_tolerance,
        method=method,
        iterations=iterations,
        learning_rate=learning_rate,
        dedupe_tolerance=dedupe_tolerance,
        marginal_tolerance=marginal_tolerance,
        period=period,
        seed=seed,
        initial="visited" if initial is not None else "uniform",
    )
    layout = state_layout(model)
    _check_search_memory(n_starts, layout.size, method)
    rng = np.random.default_rng(seed)
    starts = starting_states(model, initial, layout, rng, n_starts, noise, what="fixed_points")
    search = _search(model, layout, settings["period"])
    flat, q, settings["iterations_run"] = _run_search(search, starts, held, settings)
    n_converged = int(np.sum(q < tolerance))
    bound = tolerance if slow_tolerance is None else max(tolerance, slow_tolerance)
    idx = _distinct(flat, q, bound, dedupe_tolerance)
    orbits = _orbits(search, flat[idx], held, settings["period"])
    if settings["period"] > 1:
        same = max(dedupe_tolerance, float(np.sqrt(2 * tolerance)))
        keep = distinct_orbits(orbits, q[idx], same)
        idx, orbits = idx[keep], orbits[keep]
    names = model.graph.input_names + model.graph.constant_names
    graph = model.graph
    outputs = sum(int(np.prod(t.shape[1:])) for t in model.step_model.outputs[: graph.n_outputs])
    jacobians, input_jacobians = _linearise(search, orbits[:, :-1], held, names, outputs)
    readouts = _readouts(search, flat[idx], held, model.graph.output_names)
    return FixedPoints(
        flat[idx],
        q[idx],
        jacobians,
        layout=layout,
        inputs={n: ops.convert_to_numpy(v) for n, v in zip(names, held)},
        settings=settings,
        n_starts=n_starts,
        n_converged=n_converged,
        input_jacobians=input_jacobians,
        orbits=orbits[:, :-1],
        readouts=readouts,
    )


def _checked_settings(model, **values) -> dict:
    """The search's settings, checked (counts, tolerances, the method, the weights) and
    as used (`iterations` defaulted per method), as `FixedPoints.settings` keeps them."""
    _check_settings(**{k: values[k] for k in _SETTINGS})
    method = values["method"]
    if method not in ("newton", "adam"):
        raise ValueError(
            f"fbx.fixed_points: method must be 'newton' or 'adam'. Received: {method!r}"
        )
    _check_finite_weights(model, "fixed_points")
    iterations = values["iterations"]
    if iterations is None:
        iterations = 200 if method == "newton" else 5000
    slow = values["slow_tolerance"]
    return {
        "n_starts": int(values["n_starts"]),
        "noise": float(values["noise"]),
        "tolerance": float(values["tolerance"]),
        "slow_tolerance": None if slow is None else float(slow),
        "method": method,
        "iterations": int(iterations),
        "iterations_run": 0,  # set once the search has run
        "learning_rate": float(values["learning_rate"]),
        "dedupe_tolerance": float(values["dedupe_tolerance"]),
        "marginal_tolerance": float(values["marginal_tolerance"]),
        "period": int(values["period"]),
        "seed": values["seed"],
        "initial": values["initial"],
    }


def _distinct(flat, q, bound: float, dedupe_tolerance: float) -> np.ndarray:
    """Indices of the finite points with `q` below `bound`, near duplicates merged."""
    idx = np.flatnonzero(np.isfinite(q) & (q < bound))
    return idx[dedupe_points(flat[idx], q[idx], dedupe_tolerance)] if idx.size else idx


def _orbits(search, flat, held, period: int) -> np.ndarray:
    """Each point's orbit `s, F(s), ..., F^k(s)`, `(points, k + 1, D)`."""
    out = [np.asarray(flat)]
    if len(flat):
        s = ops.convert_to_tensor(flat)
        for _ in range(period):
            s = search.fn("step")(s, held)
            out.append(ops.convert_to_numpy(s))
    else:
        out *= period + 1
    return np.stack(out, axis=1)


def _linearise(search, orbits, held, names, outputs: int):
    """`dF^k/ds` `(points, D, D)` and `{name: dF^k/du (points, D, *shape)}` for
    the held inputs of a floating dtype, chained along each orbit `(points, k,
    D)` from one step's Jacobians at each state, within the memory budget (with
    the read-outs' `dG/ds`, `outputs` rows each)."""
    points, period, size = orbits.shape
    which = _floating(held)
    shapes = {i: tuple(held[i].shape) for i in which}
    if not points:
        zeros = {names[i]: np.zeros((0, size) + shapes[i], "float32") for i in which}
        return np.zeros((0, size, size), "float32"), zeros
    inputs = sum(int(np.prod(v.shape)) for v in held)
    _check_jacobian_memory(points, size, inputs + outputs, period)
    flat = ops.convert_to_tensor(orbits.reshape(points * period, size))
    jac = ops.convert_to_numpy(search.fn("jacobian")(flat, held))
    jac = jac.reshape(points, period, size, size)
    got = search.fn("input_jacobians")(flat, held) if which else []
    by_input = {
        names[i]: chain_inputs(
            jac, ops.convert_to_numpy(v).reshape((points, period, size) + shapes[i])
        )
        for i, v in zip(which, got)
    }
    return chain(jac), by_input


def _readouts(search, flat, held, names) -> dict:
    """`{output: dG/ds (points, M, D)}`, each output flattened to `M` numbers."""
    if not len(flat):
        return {name: np.zeros((0, 0, flat.shape[1]), "float32") for name in names}
    got = search.fn("readouts")(ops.convert_to_tensor(flat), held)
    return {name: ops.convert_to_numpy(v) for name, v in zip(names, got)}


def _floating(held) -> list:
    """The indices of the held inputs of a floating dtype (those with a derivative)."""
    return [i for i, v in enumerate(held) if "float" in keras.backend.standardize_dtype(v.dtype)]


def _run_search(search, starts, held, settings: dict):
    """Calls of several Levenberg-Marquardt or Adam steps from `starts` until every
    point is below the tolerance or none improves: `(states, q, steps run)`."""
    method, iterations = settings["method"], settings["iterations"]
    tolerance, learning_rate = settings["tolerance"], settings["learning_rate"]
    q_fn = search.fn("q")
    s = ops.convert_to_tensor(starts)
    q_prev = ops.convert_to_numpy(q_fn(s, held)).astype("float64")
    if method == "newton":
        per_call, run = search.LM_PER_CALL, search.fn("newton")
        carry = [ops.full((len(starts),), 1e-2, "float32")]
    else:
        per_call, run = search.ADAM_PER_CALL, search.fn("adam")
        carry = [ops.zeros_like(s), ops.zeros_like(s)]
    done = 0
    while done < iterations:
        if method == "newton":
            s, *carry = run(s, *carry, held)
        else:
            t0 = ops.convert_to_tensor(done, "int32")
            s, *carry = run(s, *carry, t0, ops.convert_to_tensor(learning_rate, s.dtype), held)
        done += per_call
        q = ops.convert_to_numpy(q_fn(s, held)).astype("float64")
        moving = (q < q_prev * (1 - 1e-3)) & (q >= tolerance)
        q_prev = q
        if not np.any(moving):
            break
    return ops.convert_to_numpy(s), q_prev, done


# What each setting of fixed_points is, for its messages.
_SETTINGS = {
    "n_starts": ("the number of starting states", "an integer >= 1"),
    "iterations": ("the most steps of the search", "an integer >= 1, or None"),
    "tolerance": ("the q below which a point is fixed", "a finite number > 0"),
    "slow_tolerance": ("the q below which a slow point is kept", "a finite number > 0, or None"),
    "learning_rate": ("Adam's step size", "a finite number > 0"),
    "noise": ("the spread of the noise added to the starts", "a finite number >= 0"),
    "dedupe_tolerance": ("the distance below which two points are one", "a finite number >= 0"),
    "period": (
        "the number of steps after which a state returns (1: fixed points)",
        "an integer >= 1",
    ),
    "marginal_tolerance": (
        "the distance of the spectral radius from 1 within which a point is marginal",
        "a finite number >= 0",
    ),
}


def _check_settings(**values):
    """Refuse a count that is no positive integer, a tolerance that is no finite
    positive number: the search would otherwise return no point, silently."""
    for name, value in values.items():
        role, kind = _SETTINGS[name]
        if value is None and "None" in kind:
            continue
        if kind.startswith("an integer"):
            ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 1
        else:
            ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
                value, bool
            )
            ok = ok and np.isfinite(value) and (value >= 0 if ">= 0" in kind else value > 0)
        if not ok:
            raise ValueError(
                f"fbx.fixed_points: `{name}` is {role}, {kind}. Received: {name}={value!r}"
            )


def _check_finite_weights(net, what: str):
    """Refuse a model whose step has a NaN or inf weight (a diverged training)."""
    for weight in net.step_model.weights:
        value = ops.convert_to_numpy(weight)
        if not np.issubdtype(value.dtype, np.floating):
            continue
        bad = ~np.isfinite(value)
        if bad.any():
            raise ValueError(
                f"fbx.{what}: weight '{weight.path}' of model '{net.name}' holds NaN or inf "
                f"({int(bad.sum())} of {bad.size} values), so the step has no fixed points "
                f"to find. Restore finite weights (a diverged training leaves NaN: reload a "
                f"checkpoint, or train with a lower learning rate)."
            )


def _check_search_memory(n_starts: int, size: int, method: str):
    """Refuse a search whose Jacobians (n_starts x size^2 floats, and the
    Levenberg-Marquardt systems) would not fit in the memory budget."""
    matrix = 4 * size * size
    adam = ADAM_VECTORS * 4 * size * n_starts + JACOBIAN_MATRICES * matrix
    square = f"{size:,} x {size:,} floats, the state's size squared"
    if method == "adam":
        detail = f"{n_starts:,} starts, then {JACOBIAN_MATRICES} matrices of {square}, per point"
        remedy = "Search a model with a smaller state (shorter delays, fewer units)"
        check_memory("fbx.fixed_points", adam, detail, remedy)
        return
    per_start = LM_MATRICES * matrix
    fits = int(memory_budget() // per_start)
    adam_hint = f'method="adam" (gradients only: about {format_bytes(adam)})'
    remedy = f"Pass n_starts={fits} or fewer, or {adam_hint}" if fits else f"Pass {adam_hint}"
    detail = f"{n_starts:,} starts, each with {LM_MATRICES} matrices of {square}"
    check_memory("fbx.fixed_points", n_starts * per_start, detail, remedy)


def _check_jacobian_memory(points: int, size: int, inputs: int = 0, period: int = 1):
    """Refuse the Jacobians of more distinct points than the memory budget holds:
    per point, those of each of the `period` steps, and `dF/du` and `dG/ds` (`inputs`
    columns: the numbers held as inputs and returned as outputs)."""
    matrices = JACOBIAN_MATRICES + period - 1
    need = 4 * size * (matrices * size + inputs) * points
    detail = (
        f"the Jacobians of the {points:,} distinct points found, {matrices} matrices of "
        f"{size:,} x {size:,} floats each"
        + (f" and {size:,} x {inputs:,} for the inputs and outputs" if inputs else "")
    )
    remedy = "Pass fewer n_starts=, a larger dedupe_tolerance= or a smaller slow_tolerance="
    check_memory("fbx.fixed_points", need, detail, remedy)


# ------------------------------------------------- one search for many calls
@contextlib.contextmanager
def reusing_search(model):
    """Within the block, `fixed_points` on `model` reuses one compiled search
    (per period) on every backend, as it always does on TensorFlow: many
    searches with other held inputs or starts (of one count) are traced
    once. On JAX the compiled search keeps the weights it was traced with:
    do not change them inside the block. `fbx.continuation` uses it.
    """
    if keras.backend.backend() == "tensorflow" or "_fbx_search" in model.__dict__:
        yield
        return
    object.__setattr__(model, "_fbx_search", {})
    try:
        yield
    finally:
        model.__dict__.pop("_fbx_search", None)
