"""A FeedbackModel as a dynamical system: fixed points, Jacobians, gradients through time.

The state of a feedback network is the loop's whole carry, named as
`initial_state`, `get_states` and `return_state` name it: every delayed edge
by its name, a delay-k edge as its last k values (oldest first), and every
cell's states (`lstm/h`, `lstm/c`, a nested model's `inner/loop`). One step
of the network, with its inputs held, is a map `F` of that state:

    F(s): feed each edge's oldest value to `net.step_model` (with the inputs
          and constants), drop it from the history, append the new source.

This module builds `F` from the documented pieces only (`net.step_model`,
`net.graph.specs`), not from how the engine stores its loop state.

`fixed_points` finds states with `F(s) = s` by minimising
`q(s) = 1/2 |F(s) - s|^2` from many starting states at once (Adam, in one
compiled loop), as FixedPointFinder (Golub & Sussillo 2018) does for a single
cell, and linearises `F` there. `gradient_flow` gives `dL/d(node at step t)`
for every node `fbx.trace` knows, in one compiled backward pass.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import keras
import numpy as np
import pandas as pd
from keras import ops

from fbexplorer import _carried_state
from fbexplorer._call_inputs import check_data
from fbexplorer._keras import compiled_loss, nodes_by_depth
from fbexplorer._loop import time_loop
from fbexplorer.escaping import plotly_text
from fbexplorer.graph import pack
from fbexplorer.memory import (
    ADAM_VECTORS,
    JACOBIAN_MATRICES,
    LM_MATRICES,
    check_memory,
    format_bytes,
    memory_budget,
)
from fbexplorer.tracing import (
    _batch_index,
    _catalog,
    _check_model,
    _Prepared,
    _run_windows,
    _tidy,
    check_size,
    node_units,
    resolve_nodes,
)

__all__ = ["FixedPoints", "fixed_points", "gradient_flow", "gradient_norms", "plot_gradient_norms"]


# ------------------------------------------------------------ backend glue
def _backend() -> str:
    return keras.backend.backend()


def _compile(fn):
    if _backend() == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, autograph=False)
    if _backend() == "jax":
        import jax

        return jax.jit(fn)
    return fn


def _grad(fn):
    """`s -> d fn(s) / ds` for a scalar function of one tensor."""
    if _backend() == "jax":
        import jax

        return jax.grad(fn)
    if _backend() == "tensorflow":
        import tensorflow as tf

        def grad(s):
            with tf.GradientTape() as tape:
                tape.watch(s)
                y = fn(s)
            return tape.gradient(y, s)

        return grad
    raise ValueError(
        f"fbexplorer.dynamics needs the TensorFlow or JAX backend. Received: {_backend()}."
    )


def _jacobian_fn(fn):
    """`s -> (fn(s), dfn/ds)` for a per-row map `fn: (P, D) -> (P, D)`; the
    Jacobian is `(P, D, D)`."""
    if _backend() == "jax":
        import jax

        def jac(s):
            def one(x):
                return fn(x[None])[0]

            return fn(s), jax.vmap(jax.jacfwd(one))(s)

        return jac
    import tensorflow as tf

    def jac(s):
        with tf.GradientTape() as tape:
            tape.watch(s)
            y = fn(s)
        return y, tape.batch_jacobian(y, s)

    return jac


# ---------------------------------------------------------- the state map
@dataclass
class _Layout:
    """Where each state lies in the flat state vector (specs order, C order)."""

    names: list
    shapes: list  # per-sample history shapes: (k, *shape), or shape for delay 1
    delays: list
    dtypes: list
    offsets: list = field(default_factory=list)
    sizes: list = field(default_factory=list)

    def __post_init__(self):
        start = 0
        for shape in self.shapes:
            n = int(np.prod(shape, dtype=np.int64))
            self.offsets.append(start)
            self.sizes.append(n)
            start += n
        self.size = start

    def split(self, flat):
        """`(P, D)` -> one `(P, k, *shape)` tensor per state."""
        out = []
        for o, n, shape, k in zip(self.offsets, self.sizes, self.shapes, self.delays):
            full = (k,) + tuple(shape) if k == 1 else tuple(shape)
            out.append(ops.reshape(flat[:, o : o + n], (-1,) + full))
        return out

    def join(self, histories):
        return ops.concatenate([ops.reshape(h, (ops.shape(h)[0], -1)) for h in histories], axis=1)

    def to_dict(self, flat: np.ndarray) -> dict:
        return {
            name: flat[:, o : o + n].reshape((-1,) + tuple(shape))
            for name, o, n, shape in zip(self.names, self.offsets, self.sizes, self.shapes)
        }

    def from_dict(self, states: Mapping, points: int) -> np.ndarray:
        return np.concatenate(
            [np.asarray(states[n], "float32").reshape(points, -1) for n in self.names], axis=1
        )


def _layout(net) -> _Layout:
    specs = net.graph.specs
    return _Layout(
        names=[s.name for s in specs],
        shapes=[tuple(s.shape) if s.delay == 1 else (s.delay,) + tuple(s.shape) for s in specs],
        delays=[s.delay for s in specs],
        dtypes=[s.dtype for s in specs],
    )


def _state_map(net, layout: _Layout):
    """`F(flat, held)` on flat states `(P, D)`, the inputs and constants `held`
    (unbatched, in model order)."""
    sm = net.step_model
    n_out = net.graph.n_outputs

    def step(flat, held):
        points = ops.shape(flat)[0]
        hists = layout.split(flat)
        feeds = [ops.broadcast_to(v[None], (points,) + tuple(v.shape)) for v in held]
        feeds += [ops.cast(h[:, 0], d) for h, d in zip(hists, layout.dtypes)]
        outs = sm(feeds, training=False)
        outs = list(outs) if isinstance(outs, (list, tuple)) else [outs]
        sources = outs[n_out:]
        new = [
            ops.concatenate([h[:, 1:], ops.cast(src, flat.dtype)[:, None]], axis=1)
            for h, src in zip(hists, sources)
        ]
        return layout.join(new)

    return step


class _Search:
    """The compiled pieces of the search for one model: `q`, the Jacobian, a
    chunk of Levenberg-Marquardt or Adam steps. The held inputs are
    arguments, so a second search (other inputs, other starts) reuses them.
    """

    LM_CHUNK, ADAM_CHUNK = 10, 100

    def __init__(self, net, layout):
        self.step = _state_map(net, layout)
        self._fns = {}

    def q(self, s, held):
        r = self.step(s, held) - s
        return 0.5 * ops.sum(r * r, axis=1)

    def fn(self, name):
        if name not in self._fns:
            self._fns[name] = _compile(getattr(self, f"_{name}"))
        return self._fns[name]

    def _q(self, s, held):
        return self.q(s, held)

    def _jacobian(self, s, held):
        return _jacobian_fn(lambda x: self.step(x, held))(s)[1]

    def _newton(self, s, lam, held):
        """Levenberg-Marquardt steps, each point with its own damping: Newton's
        method on `F(s) - s` near a fixed point (quadratic convergence),
        gradient descent on `q` far from one."""
        jac = _jacobian_fn(lambda x: self.step(x, held))
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

        return ops.fori_loop(0, self.LM_CHUNK, body, (s, lam))

    def _adam(self, s, m, v, t0, learning_rate, held):
        grad = _grad(lambda x: ops.sum(self.q(x, held)))
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

        return ops.fori_loop(0, self.ADAM_CHUNK, body, (s, m, v))


def _search(net, layout) -> _Search:
    """The model's `_Search`, kept on the model on TensorFlow (whose compiled
    functions read the weights when they run; JAX's would keep the weights
    they were traced with)."""
    if _backend() != "tensorflow":
        return _Search(net, layout)
    cache = net.__dict__.get("_fbx_search")
    if cache is None:
        cache = _Search(net, layout)
        object.__setattr__(net, "_fbx_search", cache)
    return cache


# ------------------------------------------------------------ the inputs
def _held_inputs(net, inputs, what: str) -> list:
    """One timestep's value per per-step input and constant, checked, in model order."""
    g = net.graph
    names = g.input_names + g.constant_names
    if not isinstance(inputs, Mapping):
        if len(names) != 1:
            raise ValueError(
                f"fbx.{what}: model '{net.name}' has the inputs {names}; give one value for "
                f"each, as a dict by name. Received: {type(inputs).__name__}."
            )
        inputs = {names[0]: inputs}
    unknown = [k for k in inputs if k not in names]
    if unknown:
        raise ValueError(
            f"fbx.{what}: model '{net.name}' has no input '{unknown[0]}'. Expected one "
            f"timestep's value for each of the per-step inputs {g.input_names} and the "
            f"constants {g.constant_names}."
        )
    missing = [n for n in names if n not in inputs]
    if missing:
        raise ValueError(
            f"fbx.{what}: input '{missing[0]}' is missing. Expected one timestep's value "
            f"for each of {names}."
        )
    held = []
    for i, name in enumerate(names):
        ref = net.step_model.inputs[i]
        want = tuple(ref.shape[1:])
        value = np.asarray(inputs[name])
        if value.shape != want:
            raise ValueError(
                f"fbx.{what}: input '{name}' is held at one value of shape {want}, without "
                f"batch or time axes. Received shape {value.shape}."
                + (" Take one step and sample, as in X[0, 0]." if value.ndim > len(want) else "")
            )
        with np.errstate(over="ignore"):  # a value beyond the dtype becomes inf, refused below
            value = value.astype(ref.dtype)
        if np.issubdtype(value.dtype, np.inexact):
            bad = ~np.isfinite(value)
            if bad.any():
                first = tuple(int(i) for i in np.argwhere(bad)[0])
                raise ValueError(
                    f"fbx.{what}: input '{name}' holds NaN or inf ({int(bad.sum())} of "
                    f"{bad.size} values as {value.dtype}, the first at index {first}); the "
                    f"step has no fixed points with it. Hold finite values."
                )
        held.append(ops.convert_to_tensor(value))
    return held


def _check_has_state(net, what: str):
    if not net.graph.specs:
        raise ValueError(
            f"fbx.{what}: model '{net.name}' has no feedback, so it has no state: each step "
            f"depends on its inputs only. Expected a FeedbackModel with a Feedback, a "
            f"delayed edge or a cell."
        )


# ------------------------------------------------------------ the result
class FixedPoints:
    """Fixed (and slow) points of a feedback network, with its linearisation there.

    Made by `fbx.fixed_points`; a result that can be sliced and read without
    the model.

    Attributes:
        frame: a DataFrame, one row per point (index `point`), with `q`
            (`1/2 |F(s) - s|^2`), `stable` (spectral radius below 1),
            `spectral_radius`, `n_unstable` (eigenvalues of modulus above 1)
            and `slow` (q above `tolerance`, kept by `slow_tolerance`).
        states: `{state name: array (points, *shape)}`, or
            `(points, k, *shape)` for a delay-k edge (oldest first): pass one
            point as `initial_state` to start the model there.
        eigenvalues: `(points, state size)` complex, by decreasing modulus.
        flat: `(points, state size)`: the states as one vector each, in the
            order of `names` (each history oldest first, C order); the rows
            and columns of `jacobian(i)` follow it.
        names: the state names, in the order of `flat`.
        inputs: the held inputs and constants, `{name: array}`.
        settings: every setting of the search, as used.
        n_starts, n_converged: starting states, and how many ended below the
            tolerance (before merging duplicates).
    """

    def __init__(self, flat, q, jacobians, layout, inputs, settings, n_starts, n_converged):
        self.flat = np.asarray(flat)
        self._jacobians = np.asarray(jacobians)
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
        self.frame = pd.DataFrame(
            {
                "q": q,
                "stable": radius < 1.0,
                "spectral_radius": radius,
                "n_unstable": (np.abs(self.eigenvalues) > 1.0).sum(axis=1),
                "slow": q > self.settings["tolerance"],
            },
            index=pd.RangeIndex(len(q), name="point"),
        )
        self.states = layout.to_dict(self.flat)

    def __len__(self) -> int:
        return len(self.flat)

    def __repr__(self) -> str:
        n_stable = int(self.frame["stable"].sum())
        return (
            f"FixedPoints({len(self)} points, {n_stable} stable, {len(self) - n_stable} "
            f"unstable; from {self.n_starts} starts, {self.n_converged} converged)"
        )

    def jacobian(self, i: int) -> np.ndarray:
        """`dF/ds` at point `i`, `(state size, state size)`, by autodiff.

        Rows and columns follow `flat`: for a delay-k edge its history, whose
        shift (each value moves one slot older) shows as identity blocks.
        """
        if not -len(self) <= i < len(self):
            raise ValueError(
                f"FixedPoints.jacobian: point {i} is out of range; there are {len(self)} points."
            )
        return self._jacobians[i]

    def select(self, which) -> FixedPoints:
        """A FixedPoints of some points: a boolean mask or indices, as in
        `fp.select(fp.frame.stable)`."""
        which = np.asarray(which)
        index = np.flatnonzero(which) if which.dtype == bool else which.astype(int).reshape(-1)
        return FixedPoints(
            self.flat[index],
            self.frame["q"].to_numpy()[index],
            self._jacobians[index],
            self._layout,
            self.inputs,
            self.settings,
            self.n_starts,
            self.n_converged,
        )

    def initial_state(self, i: int) -> dict:
        """Point `i` as `initial_state` for a call: `{name: (1, ...)}`."""
        return {name: value[i : i + 1] for name, value in self.states.items()}


# ------------------------------------------------------------- the search
def _visited_starts(net, initial, layout: _Layout, rng, n_starts: int) -> np.ndarray:
    """`n_starts` full states the model passes through on `initial`, `(n_starts, D)`,
    drawn at random among those whose values are finite."""
    specs = net.graph.specs
    catalog = _catalog(net)
    names = [s.name for s in specs]
    prep = _Prepared(net, initial, None, None, None, None, False, "fixed_points")
    size = (prep.batch, prep.length, node_units(net, names))
    remedy = "Pass fewer or shorter sequences as initial= (or leave it out)"
    check_size("fbx.fixed_points", "trace_arrays", net, names, size, remedy)
    arrays, _ = _run_windows(net, prep, names, [(0, prep.length)], prep.slots, False)
    length = prep.length
    k_max = max(s.delay for s in specs)
    # The history before step t: a delayed edge's values fed at t .. t+k-1; a
    # cell's state handed on by step t-1.
    times = np.arange(1, length - k_max + 1)
    if times.size == 0:
        raise ValueError(
            f"fbx.fixed_points: `initial` has {length} steps; the longest delay is {k_max}, "
            f"so at least {k_max + 1} steps are needed to read a whole state from it."
        )
    finite = np.ones((prep.batch, times.size), bool)  # (sample, time) of finite states
    for spec, arr in zip(specs, arrays):
        ok = np.isfinite(arr.reshape(arr.shape[0], arr.shape[1], -1)).all(axis=2)
        if catalog[spec.name][0] == "state":
            finite &= ok[:, times - 1]
        else:
            window = np.lib.stride_tricks.sliding_window_view(ok, spec.delay, axis=1)
            finite &= window[:, times].all(axis=2)
    candidates = np.flatnonzero(finite.reshape(-1))
    if not candidates.size:
        raise ValueError(
            f"fbx.fixed_points: the model's state is NaN or inf at every step of `initial` "
            f"({prep.batch} samples x {length} steps): the model diverges there. Pass initial= "
            f"data on which it stays finite, or leave initial out to start from [-1, 1]."
        )
    # As if every visited state were stacked (sample-major) and n_starts drawn.
    if candidates.size == finite.size:
        rows = rng.integers(0, candidates.size, n_starts)
    else:
        rows = candidates[rng.integers(0, candidates.size, n_starts)]
    sample, at = np.divmod(rows, times.size)
    at = times[at]
    parts = []
    for spec, arr in zip(specs, arrays):
        if catalog[spec.name][0] == "state":
            h = arr[sample, at - 1][:, None]
        else:
            h = np.stack([arr[sample, at + j] for j in range(spec.delay)], axis=1)
        parts.append(h.reshape(n_starts, -1))
    return np.concatenate(parts, axis=1).astype("float32")


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
    circle.

    Args:
        model: a `FeedbackModel` with at least one delayed edge or cell.
        inputs: one timestep's value for each per-step input and constant,
            `{name: array}` without batch or time axes (an array alone for a
            model of one input), held at every step.
        initial: data as for a call (a batch of sequences): the search starts
            from states the model visits on it, plus `noise`. Without it,
            from states drawn uniformly from [-1, 1].
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
        seed: the random seed for choosing and perturbing the starts.

    The settings are checked (counts positive integers, tolerances finite
    and positive), NaN or inf held inputs and weights are refused, and the
    starts from `initial` are drawn among the finite states it visits. The
    memory of the search (about 12 matrices of the state's size squared per
    start for "newton"; for "adam", 6 per point found, for its Jacobian) is
    estimated first and refused above the budget (`fbx.set_memory_budget`)
    with one line saying what to pass (`n_starts=`, `method="adam"`).

    Returns:
        A `FixedPoints`: `.frame` (`q`, `stable`, `spectral_radius`,
        `n_unstable`, `slow`), `.states`, `.eigenvalues`, `.jacobian(i)`,
        `.settings` (these arguments, as used).

    Example:
        >>> fp = fbx.fixed_points(net, {"x": np.zeros(5, "float32")}, initial=X)
        >>> fp.frame[fp.frame.stable]
        >>> net(X[:1, :30] * 0, initial_state=fp.initial_state(0))  # starts at a point
    """
    _check_model(model, "fixed_points")
    _check_has_state(model, "fixed_points")
    held = _held_inputs(model, inputs, "fixed_points")
    _check_settings(
        n_starts=n_starts,
        iterations=iterations,
        tolerance=tolerance,
        slow_tolerance=slow_tolerance,
        learning_rate=learning_rate,
        noise=noise,
        dedupe_tolerance=dedupe_tolerance,
    )
    if method not in ("newton", "adam"):
        raise ValueError(
            f"fbx.fixed_points: method must be 'newton' or 'adam'. Received: {method!r}"
        )
    _check_finite_weights(model, "fixed_points")
    if iterations is None:
        iterations = 200 if method == "newton" else 5000
    layout = _layout(model)
    _check_search_memory(n_starts, layout.size, method)
    rng = np.random.default_rng(seed)
    if initial is not None:
        starts = _visited_starts(model, initial, layout, rng, n_starts)
    else:
        starts = rng.uniform(-1.0, 1.0, (n_starts, layout.size)).astype("float32")
    starts = starts + rng.normal(0.0, noise, starts.shape).astype("float32")
    search = _search(model, layout)
    flat, q, done = _run_search(search, starts, held, method, iterations, tolerance, learning_rate)
    bound = tolerance if slow_tolerance is None else max(tolerance, slow_tolerance)
    ok = np.isfinite(q) & (q < bound)
    n_converged = int(np.sum(q < tolerance))
    idx = np.flatnonzero(ok)
    idx = idx[dedupe_points(flat[idx], q[idx], dedupe_tolerance)] if idx.size else idx
    flat, q = flat[idx], q[idx]
    if len(flat):
        _check_jacobian_memory(len(flat), layout.size)
        jac = ops.convert_to_numpy(search.fn("jacobian")(ops.convert_to_tensor(flat), held))
    else:
        jac = np.zeros((0, layout.size, layout.size), "float32")
    settings = {
        "n_starts": int(n_starts),
        "noise": float(noise),
        "tolerance": float(tolerance),
        "slow_tolerance": None if slow_tolerance is None else float(slow_tolerance),
        "method": method,
        "iterations": int(iterations),
        "iterations_run": int(done),
        "learning_rate": float(learning_rate),
        "dedupe_tolerance": float(dedupe_tolerance),
        "seed": seed,
        "initial": "visited" if initial is not None else "uniform",
    }
    names = model.graph.input_names + model.graph.constant_names
    held_np = {n: ops.convert_to_numpy(v) for n, v in zip(names, held)}
    return FixedPoints(flat, q, jac, layout, held_np, settings, n_starts, n_converged)


def _run_search(search, starts, held, method, iterations, tolerance, learning_rate):
    """Chunks of Levenberg-Marquardt or Adam steps from `starts` until every
    point is below the tolerance or none improves: `(states, q, steps run)`."""
    q_fn = search.fn("q")
    s = ops.convert_to_tensor(starts)
    q_prev = ops.convert_to_numpy(q_fn(s, held)).astype("float64")
    if method == "newton":
        chunk, run = search.LM_CHUNK, search.fn("newton")
        carry = [ops.full((len(starts),), 1e-2, "float32")]
    else:
        chunk, run = search.ADAM_CHUNK, search.fn("adam")
        carry = [ops.zeros_like(s), ops.zeros_like(s)]
    done = 0
    while done < iterations:
        if method == "newton":
            s, *carry = run(s, *carry, held)
        else:
            t0 = ops.convert_to_tensor(done, "int32")
            s, *carry = run(s, *carry, t0, ops.convert_to_tensor(learning_rate, s.dtype), held)
        done += chunk
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


def _check_jacobian_memory(points: int, size: int):
    """Refuse the Jacobians of more distinct points than the memory budget holds."""
    need = JACOBIAN_MATRICES * 4 * size * size * points
    detail = (
        f"the Jacobians of the {points:,} distinct points found, {JACOBIAN_MATRICES} matrices of "
        f"{size:,} x {size:,} floats each"
    )
    remedy = "Pass fewer n_starts=, a larger dedupe_tolerance= or a smaller slow_tolerance="
    check_memory("fbx.fixed_points", need, detail, remedy)


# --------------------------------------------------------- gradient flow
def _perturbed_step(sm, targets: dict, training=False):
    """The step model's graph, replayed with `perturbation[i]` added to the
    tensor `targets[i]` (by id): the same layers, so the same weights."""
    from fbexplorer._keras import call_node as _call

    depths = sorted(nodes_by_depth(sm), reverse=True)

    def call(feeds, perturbations):
        values = {}

        def put(tensor, value):
            i = targets.get(id(tensor))
            values[id(tensor)] = value if i is None else value + perturbations[i]

        for tensor, value in zip(sm.inputs, feeds):
            put(tensor, value)
        for depth in depths:
            for node in nodes_by_depth(sm)[depth]:
                if node.is_input or any(id(x) not in values for x in node.input_tensors):
                    continue
                args, kwargs = node.arguments.fill_in(values)
                out = _call(node.operation, args, kwargs, training)
                for tensor, value in zip(node.outputs, keras.tree.flatten(out)):
                    put(tensor, value)
        return [values[id(t)] for t in sm.outputs]

    return call


def _checked_targets(model, inputs, targets, samples, batch: int):
    """The targets, checked against the inputs as `fit` checks them, cut to `samples`."""
    check_data(model, inputs, targets)  # fit's message for targets of another length
    for target in keras.tree.flatten(targets):
        got = tuple(np.shape(target))
        if not got or got[0] != batch:
            raise ValueError(
                f"fbx.gradient_flow: the targets must hold one entry per input sample, "
                f"{batch}. Received: targets of shape {got}."
            )
    if samples is None:
        return targets
    index = _batch_index(samples, batch, "gradient_flow")
    return keras.tree.map_structure(lambda v: np.asarray(v)[index], targets)


def _loss_fn(model, targets, loss):
    """`L(y_pred)`, a scalar: the compiled loss, `loss=`, or the last step's sum."""
    if loss is not None:
        fn = keras.losses.get(loss) if isinstance(loss, str) else loss
        if targets is None:
            return lambda y: ops.sum(fn(y))
        return lambda y: ops.mean(fn(targets, y))
    if targets is not None:
        compiled = compiled_loss(model)
        if compiled is None:
            raise ValueError(
                f"fbx.gradient_flow: targets were given, but model '{model.name}' is not "
                f"compiled with a loss. Call model.compile(loss=...) first, or pass loss=."
            )
        return lambda y: compiled(targets, y)
    return None  # the sum of the outputs at the last step


def gradient_flow(
    model,
    inputs,
    targets=None,
    *,
    loss=None,
    nodes: str | Sequence[str] | None = None,
    samples: int | Sequence[int] | None = None,
) -> pd.DataFrame:
    """How much a loss depends on each node at each step: `dL/d(node at t)`.

    The model runs over `inputs` from its initial values (inference mode),
    with a zero perturbation added to every chosen node at every step; one
    compiled backward pass gives the gradient of `L` with respect to all the
    perturbations at once, which is `dL/d(node at step t)`. How those shrink
    or grow as `t` moves back from the end shows vanishing or exploding
    gradients (`fbx.gradient_norms`, `fbx.plot_gradient_norms`).

    Args:
        model: a `FeedbackModel`.
        inputs: the inputs as for a call (no ground truth for teacher forcing).
        targets: what the outputs should be, as for `fit`: `L` is then the
            model's compiled loss (or `loss`).
        loss: a loss (a Keras loss name or `loss(y_true, y_pred)`), in place
            of the compiled one; without targets, a function `loss(y_pred)`
            returning the value to differentiate.
        nodes: node names as for `fbx.trace` (default: every per-step input,
            delayed value, layer and cell state of a float dtype).
        samples: as for `fbx.trace`: the loss is then over these samples.

    With neither targets nor loss, `L` is the sum of every output at the last
    step (over the samples too, so each sample's gradients are its own).
    Targets are checked as `fit` checks them; a run whose estimated memory
    is above the budget (`fbx.set_memory_budget`) is refused before it starts.

    Returns:
        A DataFrame with columns `sample, t, node, unit, gradient`, laid out
        as `fbx.trace`'s (`unit` flattens a node's features in C order).

    Example:
        >>> g = fbx.gradient_flow(net, X[:8], Y[:8])
        >>> fbx.plot_gradient_norms(fbx.gradient_norms(g))
    """
    _check_model(model, "gradient_flow")
    names = resolve_nodes(model, nodes, "gradient_flow")
    catalog = _catalog(model)
    if nodes is None:
        names = [n for n in names if "float" in str(catalog[n][1].dtype)]
    else:
        bad = [n for n in names if "float" not in str(catalog[n][1].dtype)]
        if bad:
            raise ValueError(
                f"fbx.gradient_flow: node '{bad[0]}' has dtype {catalog[bad[0]][1].dtype}; "
                f"gradients exist for float nodes only."
            )
    prep = _Prepared(model, inputs, samples, None, None, None, False, "gradient_flow")
    if prep.teachers:
        raise ValueError(
            f"fbx.gradient_flow: inputs hold ground truth for {list(prep.teachers)}; "
            f"gradient flow follows the model's own feedback. Leave it out."
        )
    size = (prep.batch, prep.length, node_units(model, names))
    remedy = "Pass samples= or nodes= (or a shorter sequence) to differentiate less"
    check_size("fbx.gradient_flow", "gradient_flow", model, names, size, remedy)
    if targets is not None:
        targets = _checked_targets(model, inputs, targets, samples, prep.full_batch)
    loss_of = _loss_fn(model, targets, loss)
    g = model.graph
    sm = model.step_model
    n_in, n_out = len(g.input_names), g.n_outputs
    batch, length = prep.batch, prep.length
    replay = _perturbed_step(sm, {id(catalog[n][1]): i for i, n in enumerate(names)})
    shapes = [tuple(catalog[n][1].shape[1:]) for n in names]
    dtypes = [catalog[n][1].dtype for n in names]
    out_specs = [(t.dtype, (None,) + tuple(t.shape[1:])) for t in sm.outputs[:n_out]]
    # The initial values (a cell's own get_initial_state included), (batch, k, *shape).
    starts = [ops.moveaxis(h, 0, 1) for h in _carried_state.start_histories(model, batch)]

    def forward(seqs, consts, perturbations):
        time_major = [ops.moveaxis(s, 1, 0) for s in seqs]
        if model.go_backwards:
            time_major = [ops.flip(s, axis=0) for s in time_major]

        def step(xs, carry):
            feeds = list(xs[:n_in]) + list(consts) + [h[:, 0] for h in carry]
            outs = replay(feeds, list(xs[n_in:]))
            new = [
                ops.concatenate([h[:, 1:], ops.cast(src, h.dtype)[:, None]], axis=1)
                for h, src in zip(carry, outs[n_out:])
            ]
            return outs[:n_out], new

        ys, _ = time_loop(step, time_major + list(perturbations), starts, length, out_specs)
        ys = [ops.moveaxis(y, 0, 1) for y in ys]
        if loss_of is None:
            return sum(ops.sum(ops.cast(y[:, -1], "float32")) for y in ys)
        pred = ys if model.return_sequences else [y[:, -1] for y in ys]
        return loss_of(pack(pred, g.output_structure))

    zeros = [ops.zeros((length, batch) + s, d) for s, d in zip(shapes, dtypes)]
    if keras.backend.backend() == "jax":
        import jax

        grads = jax.jit(jax.grad(lambda p, s, c: forward(s, c, p)))(zeros, prep.seqs, prep.consts)
    else:
        import tensorflow as tf

        @functools.partial(tf.function, autograph=False)
        def run(seqs, consts, perturbations):
            with tf.GradientTape() as tape:
                tape.watch(perturbations)
                value = forward(seqs, consts, perturbations)
            return tape.gradient(
                value, perturbations, unconnected_gradients=tf.UnconnectedGradients.ZERO
            )

        grads = run(list(prep.seqs), list(prep.consts), zeros)
    arrays = [np.moveaxis(ops.convert_to_numpy(gr), 0, 1) for gr in grads]
    return _tidy(names, [[a] for a in arrays], prep.index, columns=("gradient",))


def gradient_norms(df: pd.DataFrame) -> pd.DataFrame:
    """The size of the gradient at each step: one row per node and `t`.

    Args:
        df: a frame from `fbx.gradient_flow`.

    Returns:
        A DataFrame with columns `node, t, norm`: the Euclidean norm of
        `dL/d(node at t)` over the node's units, averaged over the samples.
        Against `t`, it shrinks geometrically back from the loss where
        gradients vanish, and grows where they explode.
    """
    missing = [c for c in ("sample", "t", "node", "gradient") if c not in df.columns]
    if missing:
        raise ValueError(
            f"fbx.gradient_norms expects a frame from fbx.gradient_flow; column "
            f"'{missing[0]}' is missing. Columns: {list(df.columns)}."
        )
    sq = df.assign(sq=np.square(df["gradient"].astype("float64")))
    per = np.sqrt(sq.groupby(["node", "sample", "t"], observed=True, sort=False)["sq"].sum())
    out = per.groupby(level=["node", "t"], observed=True, sort=False).mean()
    out = out.rename("norm").reset_index().sort_values(["node", "t"], kind="stable")
    return out.reset_index(drop=True)


def plot_gradient_norms(df: pd.DataFrame, *, title: str | None = None):
    """The gradient norm per step, one line per node, on a log scale.

    Args:
        df: a frame from `fbx.gradient_flow`, or its `fbx.gradient_norms`.
        title: the figure title.

    Returns:
        A `plotly.graph_objects.Figure`: x is the step `t`, y the norm (log).
    """
    import plotly.graph_objects as go

    norms = df if "norm" in df.columns else gradient_norms(df)
    fig = go.Figure()
    for node in pd.unique(norms["node"].astype(str)):
        rows = norms[norms["node"].astype(str) == node]
        fig.add_trace(
            go.Scatter(
                x=rows["t"].to_numpy(),
                y=rows["norm"].to_numpy(),
                mode="lines",
                name=plotly_text(node),
            )
        )
    fig.update_layout(
        title=title or "gradient norm per step",
        xaxis_title="t",
        yaxis_title="|dL/d node|",
        yaxis_type="log",
        template="plotly_white",
    )
    return fig
