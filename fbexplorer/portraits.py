"""Phase portraits: trajectories of a network's state on its principal components.

`pca_project` fits principal components to the chosen nodes' values, all
nodes of one step concatenated into one vector, over every sample and step;
it returns the coordinates and a `Projection` that projects more points (a
fixed point, another run) into the same space. `portrait` draws the result:
one line per sample, coloured by time, with fixed points on top (stable
filled, unstable hollow). Numpy's SVD does the work, on one BLAS thread.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from threadpoolctl import ThreadpoolController

from fbexplorer import recording
from fbexplorer.escaping import plotly_text

__all__ = [
    "Projection",
    "fixed_point_values",
    "nonfinite_note",
    "nonfinite_steps",
    "pca_project",
    "portrait",
]

COLORSCALE = "Viridis"
FIXED_POINT_COLOR = "#d62728"
ATTRACTOR_COLOR = "#333333"


@dataclass(frozen=True)
class Projection:
    """Principal components of some nodes' values, and the means they are taken from.

    Attributes:
        nodes: the node names, in the order their units are concatenated.
        shapes: each node's per-step shape (what follows `(samples, T)`).
        mean: `(units,)`, the mean of the concatenated vector.
        components: `(dims, units)`, orthonormal rows, by decreasing
            variance; each row's largest entry (in absolute value) is
            positive.
        explained_variance: `(dims,)`, the variance along each component
            (divided by the number of points minus one, as scikit-learn's
            `PCA.explained_variance_`).
        explained_variance_ratio: `(dims,)`, each component's share of the
            total variance.
    """

    nodes: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    mean: np.ndarray
    components: np.ndarray
    explained_variance: np.ndarray
    explained_variance_ratio: np.ndarray

    @property
    def dims(self) -> int:
        return len(self.components)

    def transform(self, arrays: Mapping[str, np.ndarray]) -> np.ndarray:
        """Project values of the same nodes: `{node: array (..., *shape)}`.

        Every node's array has the same leading axes (e.g. `(samples, T)`,
        or `(points,)` for fixed points); the result is `(..., dims)`.
        """
        data = _concatenate(arrays, self.nodes, self.shapes, "Projection.transform")
        return (data - self.mean) @ self.components.T


def _concatenate(arrays, nodes, shapes, what: str) -> np.ndarray:
    """`(..., units)`: each node's values flattened and joined along the last axis."""
    missing = [n for n in nodes if n not in arrays]
    if missing:
        raise ValueError(
            f"fbx.{what}: no values for node '{missing[0]}'. Expected every node of "
            f"{list(nodes)}. Received: {list(arrays)}."
        )
    parts, lead = [], None
    for n, shape in zip(nodes, shapes):
        a = np.asarray(arrays[n], dtype=np.float64)
        k = a.ndim - len(shape)
        if k < 0 or a.shape[k:] != tuple(shape) or (lead is not None and a.shape[:k] != lead):
            expected = ("(..., " + ", ".join(map(str, shape)) + ")") if shape else "(...)"
            raise ValueError(
                f"fbx.{what}: node '{n}' must have shape {expected}, with the same leading "
                f"axes as the other nodes. Received shape {a.shape}."
            )
        lead = a.shape[:k]
        parts.append(a.reshape(lead + (-1,)))
    return np.concatenate(parts, axis=-1)


def _check_dims(dims, what: str):
    if isinstance(dims, bool) or dims not in (2, 3):
        raise ValueError(f"fbx.{what}: expected dims=2 or dims=3. Received: dims={dims!r}")


def pca_project(
    arrays: Mapping[str, np.ndarray],
    dims: int = 2,
    *,
    nodes: Sequence[str] | None = None,
) -> tuple[np.ndarray, Projection]:
    """Principal components of chosen nodes' values over every sample and step.

    Each step's values of all `nodes` are flattened and concatenated into
    one vector; the components are fitted to those vectors over every
    sample and step (numpy SVD of the centred data, as scikit-learn's `PCA`
    computes them, with a fixed sign per component).

    Args:
        arrays: `{node: array (samples, T, *shape)}`, as
            `fbx.trace(..., as_arrays=True)` returns.
        dims: the number of components, 2 or 3.
        nodes: the nodes to use, in order (default: every node of `arrays`).

    Points with a NaN or inf value (a diverging model) are left out of the
    fit; their coordinates are NaN.

    Returns:
        `(coords, projection)`: `coords` is `(samples, T, dims)`;
        `projection` a `Projection`, whose `transform` projects more values
        of the same nodes (a fixed point, another run) into the same space.

    Example:
        >>> arrays = fbx.trace(net, seq, nodes=["loop"], as_arrays=True)
        >>> coords, pca = fbx.pca_project(arrays, dims=2)
        >>> pca.explained_variance_ratio
    """
    return _fit(arrays, dims, nodes, "pca_project")


def _fit(arrays, dims, nodes, what):
    _check_dims(dims, what)
    if not isinstance(arrays, Mapping) or not arrays:
        raise ValueError(
            f"fbx.{what} expects a dict {{node: array (samples, T, ...)}}, as "
            f"fbx.trace(..., as_arrays=True) returns. Received: {type(arrays).__name__}"
        )
    nodes = list(arrays) if nodes is None else [nodes] if isinstance(nodes, str) else list(nodes)
    if not nodes:
        raise ValueError(f"fbx.{what}: `nodes` is empty. Name at least one node, or pass None.")
    missing = [n for n in nodes if n not in arrays]
    if missing:
        raise ValueError(
            f"fbx.{what}: no node '{missing[0]}' in the arrays. Nodes: {list(arrays)}."
        )
    shapes = []
    for n in nodes:
        a = np.asarray(arrays[n])
        if a.ndim < 2:
            raise ValueError(
                f"fbx.{what}: node '{n}' must be (samples, T, ...). Received shape {a.shape}."
            )
        shapes.append(tuple(a.shape[2:]))
    data = _concatenate(arrays, nodes, shapes, what)
    samples, steps, units = data.shape
    if units < dims:
        raise ValueError(
            f"fbx.{what}: the nodes {nodes} have {units} unit{'s' * (units != 1)} in all, "
            f"fewer than dims={dims}. Add nodes" + (", or use dims=2." if units == 2 else ".")
        )
    flat = data.reshape(-1, units)
    finite = np.isfinite(flat).all(axis=1)
    fit = flat if finite.all() else flat[finite]
    if len(fit) < dims + 1:
        if len(fit) < len(flat):
            steps_bad, first = nonfinite_steps(data)
            raise ValueError(
                f"fbx.{what}: the nodes {nodes} are NaN or inf at {steps_bad} of {steps} steps "
                f"(from t={first}), leaving {len(fit)} finite point{'s' * (len(fit) != 1)} "
                f"(samples x steps), too few to fit {dims} components. Trace the steps before "
                f"the model diverges."
            )
        raise ValueError(
            f"fbx.{what}: {len(flat)} points (samples x steps) cannot fit {dims} "
            f"components; trace at least {dims + 1} steps."
        )
    mean = fit.mean(axis=0)
    with _one_blas_thread():
        _, s, vt = np.linalg.svd(fit - mean, full_matrices=False)
        vt = vt[:dims]
        biggest = np.argmax(np.abs(vt), axis=1)
        vt = vt * np.sign(vt[np.arange(dims), biggest])[:, None]
        with np.errstate(invalid="ignore", over="ignore"):  # rows not finite: NaN below
            coords = (flat - mean) @ vt.T
    coords[~finite] = np.nan  # NaN where the state is not finite, not +-inf
    variance = s**2 / (len(fit) - 1)
    total = variance.sum()
    ratio = variance[:dims] / total if total > 0 else np.zeros(dims)
    projection = Projection(
        nodes=tuple(nodes),
        shapes=tuple(shapes),
        mean=mean,
        components=vt,
        explained_variance=variance[:dims],
        explained_variance_ratio=ratio,
    )
    return coords.reshape(samples, steps, dims), projection


def nonfinite_steps(data: np.ndarray) -> tuple[int, int | None]:
    """`(count, first)`: the steps `t` at which `data` `(samples, T, ...)` holds
    a NaN or inf in any sample, and the first of them (None if none)."""
    data = np.asarray(data)
    bad = ~np.isfinite(data.reshape(data.shape[0], data.shape[1], -1)).all(axis=2).all(axis=0)
    steps = np.flatnonzero(bad)
    return len(steps), (int(steps[0]) if len(steps) else None)


def nonfinite_note(count: int, first, steps: int) -> str:
    """`"NaN or inf at 88 of 100 steps, from t=12"`: what a figure says of a diverging run."""
    return f"NaN or inf at {count} of {steps} step{'s' * (steps != 1)}, from t={first}"


@functools.cache
def _blas() -> ThreadpoolController:
    return ThreadpoolController()


def _one_blas_thread():
    """A context in which numpy's BLAS and LAPACK run on one thread.

    A trace's SVD is small. With the cores busy (TensorFlow's threads, other
    processes), OpenBLAS's threads wait for one another, and one thread is
    faster (docs/performance.md, The explorer).
    """
    return _blas().limit(limits=1, user_api="blas")


# ------------------------------------------------------------ fixed points
def fixed_point_values(fixed_points, nodes, shapes, what: str):
    """`({node: (points, *shape)}, stable (points,))` from a fixed-points result.

    Reads `fixed_points.states` (`{state name: (points, *shape)}`, or
    `(points, k, *shape)` for a delay-k edge, whose newest entry is taken)
    and `fixed_points.frame["stable"]`.
    """
    states = getattr(fixed_points, "states", None)
    frame = getattr(fixed_points, "frame", None)
    if not isinstance(states, Mapping) or frame is None or "stable" not in frame:
        raise ValueError(
            f"fbx.{what}: fixed_points must be a result of fbx.fixed_points (with `.states` "
            f"and `.frame['stable']`). Received: {type(fixed_points).__name__}"
        )
    stable = np.asarray(frame["stable"], dtype=bool)
    values = {}
    for n, shape in zip(nodes, shapes):
        if n not in states:
            raise ValueError(
                f"fbx.{what}: node '{n}' has no state in the fixed points. States: "
                f"{list(states)}. Choose nodes among the states (feedback names such as "
                f"'loop', cell states such as 'lstm/h'), or leave fixed_points out."
            )
        a = np.asarray(states[n])
        if a.shape[1:] == tuple(shape):
            values[n] = a
        elif a.ndim == len(shape) + 2 and a.shape[2:] == tuple(shape):
            values[n] = a[:, -1]  # a delay-k history, oldest first: all equal at a fixed point
        else:
            raise ValueError(
                f"fbx.{what}: the fixed points' state '{n}' has shape {a.shape}, but the "
                f"trace's '{n}' is {tuple(shape)} per step. Expected (points, "
                f"{', '.join(map(str, shape))}) or (points, k, ...) for a delay-k edge."
            )
        if len(values[n]) != len(stable):
            raise ValueError(
                f"fbx.{what}: the fixed points' state '{n}' has {len(values[n])} points, "
                f"but .frame has {len(stable)} rows."
            )
    return values, stable


# ------------------------------------------------------------------ public
def _is_model(obj) -> bool:
    return hasattr(obj, "step_model") and hasattr(obj, "graph")


def portrait(
    trace_or_model,
    inputs=None,
    *,
    nodes: str | Sequence[str] | None = None,
    dims: int = 2,
    fixed_points=None,
    samples: int | Sequence[int] | None = None,
    projection: Projection | None = None,
    title: str | None = None,
    attractors=None,
):
    """The trajectories of chosen nodes on their principal components.

    Each step's values of the chosen nodes, concatenated, are one point of
    the state space; `pca_project` finds the `dims` principal components of
    those points over every sample and step, and each sample becomes one
    line through them, coloured by time. Fixed points, when given, are
    projected into the same space: stable ones as filled circles, unstable
    ones hollow, marginal ones (a line attractor's) as hollow squares and
    slow points as hollow diamonds. NaN or inf values (a diverging model) leave gaps: the
    components are fitted to the finite points, and the title (and a
    warning) names the steps that are not. Its memory is estimated first
    and refused above the budget (`fbx.set_memory_budget`).

    Args:
        trace_or_model: a `FeedbackModel` (traced on `inputs`), a frame from
            `fbx.trace`, or its `as_arrays=True` dict.
        inputs: the model's inputs, as for a call (with a model only).
        nodes: a node name or a list of them. Default: with a model, its
            state names (`model.feedback_names`: feedbacks such as `"loop"`,
            cell states such as `"lstm/h"`); with a trace, the fixed points'
            state names if given, else every node of the trace. With fixed
            points, every node must be one of their states.
        dims: 2 or 3.
        fixed_points: a result of `fbx.fixed_points` (any object with
            `.states`, `{state name: (points, *shape)}` or `(points, k,
            *shape)` for a delay-k edge, and `.frame["stable"]`, one row per
            point). A delay-k edge's point is its newest history entry (all
            k are equal at a fixed point). Each point's hover names its
            stability, spectral radius, time constant `tau` and which output
            reads its slowest mode best; orbits of `period=k > 1` are drawn
            closed, and each saddle's unstable directions (eigenvectors of
            modulus above 1) as short arrows both ways.
        attractors: a result of `fbx.attractors` (a census): a cross per
            attractor (its kind, share and largest Lyapunov exponent on hover),
            each cycle as a closed orbit; divergent ones are left out.
        samples: with a model, as for `fbx.trace`; with a trace, the samples
            to use (a count of leading samples, or a list: `sample` values
            of a frame, rows of a dict). The components are fitted to these.
        projection: a `Projection` of the same nodes to draw in (e.g. one
            fitted to another run, to compare two portraits on the same
            axes); default: one fitted here.
        title: the figure title.

    Returns:
        A `plotly.graph_objects.Figure`: one line per sample (named `sample
        i`, `meta` holding the sample and its time steps), coloured by `t`
        with a colour bar (markers in 2-D, the line itself in 3-D); then,
        with fixed points, a trace `stable fixed points` (symbol `circle`),
        one `unstable fixed points` (`circle-open`), and where there are
        any, `marginal fixed points` (`square-open`: `frame.stability` is
        "marginal", as along a line attractor) and `slow points`
        (`diamond-open`: `frame.slow`), each point's row of
        `fixed_points.frame` in `customdata`; then `orbit i (period k)`
        lines (legend group `cycles`), `unstable directions` (segments with
        arrowheads), and with `attractors`, `attractors` (`x-thin-open`,
        rows of `attractors.frame` in `customdata`) and their cycles. Axes are `PC1 (x% of
        variance)`. `fbx.pca_project` gives the projection itself.

    Example:
        >>> fbx.portrait(net, seq, nodes=["loop"], dims=3)
        >>> fbx.portrait(fbx.trace(net, seq, as_arrays=True), nodes="loop", fixed_points=fps)
    """
    import plotly.graph_objects as go

    what = "portrait"
    _check_dims(dims, what)
    if isinstance(nodes, str):
        nodes = [nodes]
    if _is_model(trace_or_model):
        arrays, ids, chosen = _model_arrays(trace_or_model, inputs, nodes, samples, what)
    else:
        arrays, ids, chosen = _trace_arrays(
            trace_or_model, inputs, nodes, samples, _first(fixed_points, attractors), what
        )
    coords, projection = _projected(arrays, dims, chosen, projection, what)
    fig = go.Figure()
    note = _diverged(coords, chosen, what)
    _add_trajectories(fig, coords, ids, dims)
    if fixed_points is not None:
        _add_fixed_points(fig, fixed_points, projection, dims, what)
    if attractors is not None:
        _add_attractors(fig, attractors, projection, dims, what)
    _lay_out(fig, projection, chosen, dims, title, note)
    return fig


def _model_arrays(model, inputs, nodes, samples, what: str):
    """`(arrays, sample ids, node names)`: the model traced on `inputs`, within the budget."""
    from fbexplorer.tracing import trace

    if inputs is None and not model.graph.constant_names:
        raise ValueError(
            f"fbx.{what}: traces model '{model.name}' on `inputs`; pass them, as for a "
            f"call. Received: inputs=None"
        )
    if nodes is None and not model.feedback_names:
        raise ValueError(
            f"fbx.{what}: model '{model.name}' has no feedback, so it has no state to "
            f"draw (by default a portrait draws the state). Pass nodes=[...] to draw "
            f"other nodes, among {recording.resolve_nodes(model, None, what=what)}."
        )
    wanted = nodes if nodes is not None else model.feedback_names
    chosen = recording.resolve_nodes(model, wanted, what=what)
    count, steps, units = recording.planned_size(model, inputs, chosen, samples=samples, what=what)
    _check_memory(chosen, count, steps, units)
    arrays = trace(model, inputs, chosen, samples=samples, as_arrays=True)
    ids = _sample_ids(samples, len(next(iter(arrays.values()))))
    return arrays, ids, chosen


def _trace_arrays(trace, inputs, nodes, samples, fixed_points, what: str):
    """`(arrays, sample ids, node names)` read from a trace frame or dict, cut to `samples`."""
    if inputs is not None:
        raise ValueError(
            f"fbx.{what}: `inputs` is for a model; a trace is already traced. "
            f"Received: inputs of type {type(inputs).__name__}"
        )
    known = recording.trace_nodes(trace, what=what)
    if nodes is None:
        states = getattr(fixed_points, "states", None)
        nodes = list(states) if isinstance(states, Mapping) else known
    chosen = list(dict.fromkeys(nodes))
    if not chosen:
        raise ValueError(f"fbx.{what}: `nodes` is empty. Name at least one node.")
    arrays, ids = recording.node_arrays(trace, chosen, what=what)
    if samples is not None:
        rows = _select(ids, samples, what)
        arrays = {n: a[rows] for n, a in arrays.items()}
        ids = ids[rows]
    first = np.shape(arrays[chosen[0]])
    units = sum(int(np.prod(np.shape(arrays[n])[2:], dtype=np.int64)) for n in chosen)
    _check_memory(chosen, first[0], first[1] if len(first) > 1 else 1, units)
    return arrays, ids, chosen


def _projected(arrays, dims: int, chosen, projection, what: str):
    """`(coords (samples, T, dims), projection)`: fitted here, or in the one given."""
    if projection is None:
        return _fit(arrays, dims, chosen, what)
    if list(projection.nodes) != chosen or projection.dims != dims:
        raise ValueError(
            f"fbx.{what}: the projection is of nodes {list(projection.nodes)} in "
            f"{projection.dims} dims; this portrait asks for {chosen} in {dims}. "
            f"Pass the same nodes and dims, or leave projection out."
        )
    return projection.transform(arrays), projection


def _add_trajectories(fig, coords, ids, dims: int):
    """One line per sample, coloured by `t` (a colour bar on the first)."""
    import plotly.graph_objects as go

    steps = coords.shape[1]
    t = np.arange(steps)
    scale = {"colorscale": COLORSCALE, "cmin": 0, "cmax": max(steps - 1, 1)}
    for i, sample in enumerate(ids):
        c = coords[i]
        bar = {"showscale": True, "colorbar": {"title": {"text": "t"}}} if i == 0 else {}
        common = {
            "mode": "lines+markers" if dims == 2 else "lines",
            "name": f"sample {int(sample)}",
            "text": [f"sample {int(sample)}, t={k}" for k in t],
            "hoverinfo": "text",
            "meta": {"sample": int(sample), "t": t.tolist()},
        }
        if dims == 2:
            fig.add_trace(
                go.Scatter(
                    x=c[:, 0],
                    y=c[:, 1],
                    line={"color": "rgba(120, 120, 120, 0.35)", "width": 1},
                    marker={"color": t, "size": 5, **scale, **bar},
                    **common,
                )
            )
        else:
            fig.add_trace(
                go.Scatter3d(
                    x=c[:, 0],
                    y=c[:, 1],
                    z=c[:, 2],
                    line={"color": t, "width": 4, **scale, **bar},
                    **common,
                )
            )


def _add_fixed_points(fig, fixed_points, projection, dims: int, what: str):
    """The fixed points in the same space (`fbexplorer.portrait_marks`): stable filled,
    unstable hollow, marginal ones hollow squares, slow points hollow diamonds, each
    hover naming its stability, spectral radius, tau and read-out; orbits of period
    > 1 closed; a saddle's unstable directions as short arrows."""
    from fbexplorer.portrait_marks import portrait_marks

    marks = portrait_marks(fixed_points, projection, what)
    kinds = np.asarray(marks.kinds, dtype=object)
    for label, kind, symbol in (
        ("stable fixed points", "stable", "circle"),
        ("unstable fixed points", "unstable", "circle-open"),
        ("marginal fixed points", "marginal", "square-open"),
        ("slow points", "slow", "diamond-open"),
    ):
        rows = np.flatnonzero(kinds == kind)
        if len(rows):
            text = [info_text(marks.info[r], "slow" if kind == "slow" else "fixed") for r in rows]
            _add_points(fig, marks.points[rows], label, symbol, rows, text, dims)
    for row, orbit in marks.orbits:
        closed = np.concatenate([orbit, orbit[:1]])
        _add_line(fig, closed, f"orbit {row} (period {len(orbit)})", dims, "cycles")
    if marks.arrows:
        _add_arrows(fig, marks.arrows, fig_span(fig, dims), dims)


def _add_attractors(fig, attractors, projection, dims: int, what: str):
    """A census's attractors: a cross per attractor, cycles as closed orbits."""
    from fbexplorer.portrait_marks import attractor_marks

    found = attractor_marks(attractors, projection, what)
    if len(found["points"]):
        text = [info_text(i, "attractor") for i in found["info"]]
        rows = [i["row"] for i in found["info"]]
        _add_points(
            fig,
            found["points"],
            "attractors",
            "x-thin-open",
            rows,
            text,
            dims,
            color=ATTRACTOR_COLOR,
        )
    for row, orbit in found["orbits"]:
        closed = np.concatenate([orbit, orbit[:1]])
        _add_line(
            fig,
            closed,
            f"attractor {row}: cycle of period {len(orbit)}",
            dims,
            "attractor cycles",
            color=ATTRACTOR_COLOR,
        )


def info_text(info: dict, what: str) -> str:
    """A point's hover text: `fixed point 2: unstable, spectral radius 1.31, tau -3.7 steps`."""
    parts = [info.get("stability") or info.get("kind")]
    for key, label in (
        ("spectral_radius", "spectral radius"),
        ("tau", "tau"),
        ("share", "share"),
        ("max_lyapunov", "max Lyapunov"),
    ):
        value = info.get(key)
        if value is not None:
            number = value if isinstance(value, str) else f"{value:.4g}"
            parts.append(f"{label} {number}" + (" steps" if key == "tau" else ""))
    if (info.get("period") or 1) > 1:
        parts.append(f"period {info['period']:.0f}")
    if info.get("readout"):
        parts.append(plotly_text(info["readout"]))  # it names an output: text, not markup
    return f"{what} {info['row']}: " + ", ".join(str(p) for p in parts if p)


def _add_points(fig, p, label, symbol, rows, text, dims, color=None):
    import plotly.graph_objects as go

    color = color or FIXED_POINT_COLOR
    marker = {
        "symbol": symbol,
        "size": 11 if dims == 2 else 6,
        "color": color,
        "line": {"color": color, "width": 2},
    }
    xyz = {"x": p[:, 0], "y": p[:, 1]}
    cls = go.Scatter
    if dims == 3:
        xyz["z"], cls = p[:, 2], go.Scatter3d
    fig.add_trace(
        cls(
            mode="markers",
            name=label,
            marker=marker,
            customdata=list(rows),
            hovertext=text,
            hoverinfo="text",
            **xyz,
        )
    )


def _add_line(fig, p, name, dims, group, color=None):
    import plotly.graph_objects as go

    line = {"color": color or FIXED_POINT_COLOR, "width": 2}
    xyz = {"x": p[:, 0], "y": p[:, 1]}
    cls = go.Scatter
    if dims == 3:
        xyz["z"], cls = p[:, 2], go.Scatter3d
    fig.add_trace(
        cls(mode="lines", name=name, line=line, legendgroup=group, hoverinfo="name", **xyz)
    )


def fig_span(fig, dims: int) -> float:
    """The largest extent of the trajectories drawn so far, along any axis."""
    spans = []
    for trace in fig.data:
        for axis in "xyz"[:dims]:
            values = getattr(trace, axis, None)
            if values is None:
                continue
            values = np.asarray(values, "float64").reshape(-1)
            values = values[np.isfinite(values)]
            if values.size:
                spans.append(values.max() - values.min())
    return max(spans) if spans else 1.0


def _add_arrows(fig, arrows, span: float, dims: int):
    """Each saddle's unstable directions: a short segment each way, an arrowhead at its end."""
    import plotly.graph_objects as go

    length = 0.08 * (span or 1.0)
    segments = []
    for _, start, d in arrows:
        for sense in (1, -1):
            segments += [start, start + sense * length * d, np.full(dims, np.nan)]
    p = np.asarray(segments)[:, :dims]
    xyz = {"x": p[:, 0], "y": p[:, 1]}
    if dims == 3:
        fig.add_trace(
            go.Scatter3d(
                mode="lines",
                name="unstable directions",
                z=p[:, 2],
                line={"color": FIXED_POINT_COLOR, "width": 3},
                **xyz,
            )
        )
        return
    fig.add_trace(
        go.Scatter(
            mode="lines+markers",
            name="unstable directions",
            hoverinfo="name",
            line={"color": FIXED_POINT_COLOR, "width": 1.5},
            marker={
                "symbol": ["circle", "arrow", "circle"] * (len(p) // 3),
                "angleref": "previous",
                "size": [0, 10, 0] * (len(p) // 3),
                "color": FIXED_POINT_COLOR,
            },
            **xyz,
        )
    )


def _lay_out(fig, projection, chosen, dims: int, title, note):
    """Axis titles (each component's share of the variance), the title and the meta."""
    labels = [
        f"PC{k + 1} ({100 * r:.1f}% of variance)"
        for k, r in enumerate(projection.explained_variance_ratio)
    ]
    head = title or f"Portrait of {plotly_text(', '.join(chosen))}"
    if note:
        head += f" ({note}; drawn where finite)"
    if dims == 2:
        fig.update_layout(xaxis_title=labels[0], yaxis_title=labels[1])
    else:
        fig.update_layout(
            scene={"xaxis_title": labels[0], "yaxis_title": labels[1], "zaxis_title": labels[2]}
        )
    fig.update_layout(
        title=head,
        template="plotly_white",
        legend={"orientation": "h", "y": -0.15},
        meta={
            "nodes": chosen,
            "explained_variance_ratio": projection.explained_variance_ratio.tolist(),
        },
    )


def _check_memory(nodes, samples: int, steps: int, units: int):
    """Refuse a portrait whose trace, SVD and figure would not fit in the memory budget."""
    from fbexplorer.memory import PER_VALUE, PORTRAIT_PER_POINT, check_memory, values_detail

    need = PER_VALUE["portrait"] * samples * steps * units
    need += PORTRAIT_PER_POINT * samples * steps
    detail = values_detail(samples, steps, units, len(nodes))
    check_memory("fbx.portrait", need, detail, "Pass samples= or nodes= to draw less")


def _diverged(coords: np.ndarray, nodes, what: str) -> str | None:
    """Where the state is NaN or inf: a note for the title (and a warning), or None."""
    count, first = nonfinite_steps(coords)
    if not count:
        return None
    note = nonfinite_note(count, first, coords.shape[1])
    warnings.warn(
        f"fbx.{what}: the nodes {list(nodes)} are {note}; the portrait draws the finite "
        f"steps, with gaps.",
        stacklevel=3,
    )
    return note


def _sample_ids(samples, n: int) -> np.ndarray:
    """The sample indices a model trace used (as `fbx.trace`'s `samples=`)."""
    if samples is None or (
        isinstance(samples, (int, np.integer)) and not isinstance(samples, bool)
    ):
        return np.arange(n)
    return np.asarray(samples)


def _select(ids: np.ndarray, samples, what: str) -> np.ndarray:
    """Rows of a trace for `samples`: a count of leading samples, or a list of ids."""
    if isinstance(samples, (int, np.integer)) and not isinstance(samples, bool):
        if not 1 <= samples <= len(ids):
            raise ValueError(
                f"fbx.{what}: samples={samples} asks for the first {samples} samples, but the "
                f"trace has {len(ids)}. Give 1 to {len(ids)}, or a list of samples."
            )
        return np.arange(int(samples))
    wanted = [samples] if isinstance(samples, str) or np.ndim(samples) == 0 else list(samples)
    if not wanted:
        raise ValueError(f"fbx.{what}: `samples` is empty. Name at least one sample.")
    rows = []
    for s in wanted:
        hit = np.flatnonzero(ids == s)
        if len(hit) != 1:
            raise ValueError(
                f"fbx.{what}: sample {s!r} is not in the trace. Samples: {[int(i) for i in ids]}."
            )
        rows.append(int(hit[0]))
    return np.asarray(rows)


def _first(*results):
    """The first result given (None where none is): whose states name the default nodes."""
    return next((r for r in results if r is not None), None)
