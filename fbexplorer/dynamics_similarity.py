"""Comparing networks' dynamics: how far apart are the dynamics of several networks?

Three comparisons, each giving a square, symmetric `DataFrame` of pairwise
dissimilarities with a zero diagonal (`compare_dynamics`), and a picture of
them (`mds_figure`, classical multidimensional scaling):

- `"spectral"`: DSA's spectral comparison (Ostrow et al. 2023). Each network's
  traces on the same probe inputs are delay-embedded (a Hankel matrix of
  `n_delays` consecutive steps), a linear operator is fitted to them by Hankel
  DMD (PyDMD: the best linear map from each embedded step to the next, in the
  embedding's `rank` leading singular directions, as HAVOK DMD does), and the
  operators' eigenvalues, points in the complex plane, are compared by the
  2-Wasserstein distance (POT) between the uniform distributions on them.
  Eigenvalues do not change with the basis, so two networks whose dynamics
  differ by a change of coordinates are zero apart.
- `"dsa"`: full DSA, Procrustes analysis over vector fields, through the
  package `dsa-metric` (`import DSA`; it needs PyTorch): an optional extra,
  imported only when asked for.
- `"topology"`: fixed-point topology (Maheswaranathan et al. 2019): each
  network's fixed points counted by their number of unstable dimensions,
  and where the saddles' connections are known (`FixedPoints.connections`),
  the saddles counted by the number of distinct points they lead to; the
  distance is the L1 norm of the difference of these counts.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from types import SimpleNamespace

import numpy as np
import pandas as pd

from fbexplorer import recording
from fbexplorer.escaping import plotly_text
from fbexplorer.memory import check_memory, values_detail

__all__ = [
    "METHODS",
    "classical_mds",
    "compare_dynamics",
    "delay_embedding",
    "dmd_eigenvalues",
    "eigenvalue_distance",
    "mds_figure",
    "stored_fixed_points",
    "topology_counts",
]

METHODS = ("spectral", "dsa", "topology")
WHAT = "compare_dynamics"


# ------------------------------------------------------------------ public
def compare_dynamics(
    networks,
    inputs=None,
    *,
    method: str = "spectral",
    nodes: str | Sequence[str] | None = None,
    samples: int | Sequence[int] | None = None,
    skip: int = 0,
    n_delays: int = 10,
    rank: int | float | None = None,
    held=None,
    fixed_point_options: Mapping | None = None,
    dsa_options: Mapping | None = None,
) -> pd.DataFrame:
    """Pairwise dissimilarities between networks' dynamics.

    Args:
        networks: `{name: network}` or a list (named 0, 1, ...). For
            `"spectral"` and `"dsa"` each network is a `FeedbackModel`
            (traced on `inputs` at `nodes`), a trace of one (a frame from
            `fbx.trace` or its `as_arrays=True` dict: its nodes side by
            side), or an array `(samples, T, units)`. For `"topology"`, a
            `FixedPoints` (from `fbx.fixed_points`), a pair `(FixedPoints,
            its connections frame)`, or a `FeedbackModel`, whose fixed points
            are then searched with `held` inputs (and, where `FixedPoints`
            has `connections`, its saddles followed).
        inputs: the probe inputs, one batch of sequences as for a call, the
            same for every model. Each sample is one trajectory: the fitted
            operator maps each step to the next within a sample, never
            across samples. The operator describes the traces, so for
            autonomous dynamics probe with pulses followed by silence.
            For `"topology"`, the search starts from states visited on them.
        method: `"spectral"`, `"dsa"` or `"topology"` (see the module).
        nodes: the nodes traced (default: each model's state, its feedback
            names); their units side by side.
        samples: the samples traced, as for `fbx.trace`.
        skip: steps dropped at the start of each trace (a transient).
        n_delays: the steps in each delay embedding (1: the state alone).
        rank: the operator's rank: an int (at most the embedding's numerical
            rank), a fraction in (0, 1) (the fewest singular directions with
            that share of the embedding's energy), or None (the optimal hard
            threshold of Gavish and Donoho, as PyDMD's `svd_rank=0`).
        held: `"topology"` on models: the held inputs as for
            `fbx.fixed_points` (default: zeros).
        fixed_point_options: `"topology"` on models: more keywords for
            `fbx.fixed_points` (`n_starts`, `tolerance`, ...).
        dsa_options: `"dsa"`: more keywords for `DSA.DSA` (`iters`, `lr`,
            `score_method`: `"angular"` unless given, ...).

    Returns:
        A DataFrame `(n, n)`, index and columns the networks' names, symmetric
        with zeros on the diagonal. `"spectral"`: the 2-Wasserstein distance
        between eigenvalue sets (DSA's own `"wasserstein"` score is
        `rank * W2**2`); `"dsa"`: DSA's score (angular by default);
        `"topology"`: an L1 distance between counts.

    Example:
        >>> d = fbx.compare_dynamics({"a": net, "b": net2}, X, n_delays=2, rank=4)
        >>> d.shape
        (2, 2)
        >>> fig = fbx.mds_figure(d, colour={"a": "trained", "b": "untrained"})
    """
    names, items = _named(networks)
    _check_settings(method, skip, n_delays, rank)
    if method == "topology":
        counts = [topology_counts(*_topology(x, inputs, held, fixed_point_options)) for x in items]
        values = _l1_matrix(counts)
    else:
        data = [_trajectories(x, inputs, nodes, samples, skip, n_delays) for x in items]
        for name, d in zip(names, data):
            _check_trajectories(d, n_delays, f"network {name!r}: ")
        if method == "spectral":
            eig = [dmd_eigenvalues(d, n_delays=n_delays, rank=rank) for d in data]
            values = _pairwise(eig, eigenvalue_distance)
        else:
            values = _dsa_matrix(data, n_delays, rank, dsa_options)
    return _frame(values, names)


def delay_embedding(data, n_delays: int) -> np.ndarray:
    """`(samples, T - n_delays + 1, n_delays * units)`: each step's next
    `n_delays` values side by side, oldest first (a Hankel matrix per sample)."""
    data = np.asarray(data, "float64")
    steps = data.shape[1] - n_delays + 1
    return np.concatenate([data[:, i : i + steps] for i in range(n_delays)], axis=2)


def dmd_eigenvalues(data, *, n_delays: int = 10, rank: int | float | None = None) -> np.ndarray:
    """The eigenvalues of the linear operator fitted to delay-embedded traces.

    `data` is `(samples, T, units)`; each sample is delay-embedded
    (`delay_embedding`), and PyDMD's `DMD` fits the map from each embedded
    step to the next (pairs within a sample only) in the embedding's `rank`
    leading singular directions (see `compare_dynamics` for `rank`).
    Returns the eigenvalues, complex, by decreasing modulus.
    """
    pydmd = _extra("pydmd", "PyDMD")
    compute_rank = pydmd.utils.compute_rank
    data = np.asarray(data, "float64")
    _check_trajectories(data, n_delays)
    embedded = delay_embedding(data, n_delays)
    before = embedded[:, :-1].reshape(-1, embedded.shape[2]).T
    after = embedded[:, 1:].reshape(-1, embedded.shape[2]).T
    with warnings.catch_warnings():
        # PyDMD notes the condition number, and a noise-level optimal rank raised to 1
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        numerical = int(np.linalg.matrix_rank(before))
        if numerical == 0:
            raise ValueError(
                f"fbx.{WHAT}: the traces are 0 at every step: there are no dynamics to fit "
                f"an operator to. Probe with inputs that move the state."
            )
        chosen = max(1, min(int(compute_rank(before, 0 if rank is None else rank)), numerical))
        eig = np.asarray(pydmd.DMD(svd_rank=chosen).fit(before, after).eigs)
    return eig[np.argsort(-np.abs(eig), kind="stable")]


def eigenvalue_distance(a, b) -> float:
    """The 2-Wasserstein distance between uniform distributions on two sets of
    eigenvalues (points of the complex plane), by exact optimal transport (POT):
    `sqrt(min over plans P of sum P_ij |a_i - b_j|^2)`. Sets of equal size are
    matched one to one."""
    ot = _extra("ot", "POT")
    a, b = np.ravel(np.asarray(a, complex)), np.ravel(np.asarray(b, complex))
    pa, pb = np.stack([a.real, a.imag], 1), np.stack([b.real, b.imag], 1)
    cost = ot.dist(pa, pb, metric="sqeuclidean")
    wa, wb = np.full(len(a), 1.0 / len(a)), np.full(len(b), 1.0 / len(b))
    return float(np.sqrt(max(ot.emd2(wa, wb, cost), 0.0)))


def topology_counts(fixed_points, connections=None) -> pd.Series:
    """A network's fixed-point topology as counts: `points/unstable=k`, the
    points with `k` unstable dimensions (`.frame.n_unstable`), and, given
    `connections` (the frame of `FixedPoints.connections(model)`: `saddle`
    and `attractor` columns), `saddles/attractors=m`, the saddles whose
    unstable directions lead to `m` distinct points."""
    frame = getattr(fixed_points, "frame", None)
    if not isinstance(frame, pd.DataFrame) or "n_unstable" not in frame:
        raise ValueError(
            f"fbx.{WHAT}: method='topology' compares fixed points: a FixedPoints from "
            f"fbx.fixed_points (or a FeedbackModel). Received: {type(fixed_points).__name__}"
        )
    counts = frame["n_unstable"].astype(int).value_counts()
    out = {f"points/unstable={k}": int(v) for k, v in counts.items()}
    edges = _checked_connections(connections)
    if edges is not None:
        reached = edges.dropna(subset=["attractor"]).groupby("saddle")["attractor"].nunique()
        reached = reached.reindex(pd.unique(edges["saddle"]), fill_value=0)
        for m, v in reached.value_counts().items():
            out[f"saddles/attractors={int(m)}"] = int(v)
    return pd.Series(out, dtype="int64").sort_index()


def stored_fixed_points(results: Mapping, name):
    """A network's fixed points as a sweep stored them (`Population.results(i)`'s
    `"fixed_points"` frame), readable by `topology_counts`."""
    frame = results.get("fixed_points")
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(
            f"fbx.{WHAT}: method='topology' without inputs reads the fixed points the sweep "
            f"found, but network {name!r} has none: the sweep ran without the "
            f"'fixed_points' analysis. Pass inputs= to search them, or sweep with it."
        )
    return SimpleNamespace(frame=frame)


def classical_mds(distances, dims: int = 2) -> np.ndarray:
    """`(n, dims)` coordinates whose Euclidean distances approximate
    `distances` (classical MDS, Torgerson: the top eigenvectors of the doubly
    centred squared distances; exact when the distances are Euclidean in
    `dims` dimensions). Dimensions with no positive eigenvalue are zero."""
    d = np.asarray(distances, "float64")
    n = len(d)
    centre = np.eye(n) - np.full((n, n), 1.0 / n)
    gram = -0.5 * centre @ (d**2) @ centre
    values, vectors = np.linalg.eigh((gram + gram.T) / 2)
    order = np.argsort(values)[::-1][:dims]
    coords = vectors[:, order] * np.sqrt(np.clip(values[order], 0.0, None))
    if coords.shape[1] < dims:
        coords = np.pad(coords, ((0, 0), (0, dims - coords.shape[1])))
    return coords


def mds_figure(distances: pd.DataFrame, colour=None, *, hover=None, title: str | None = None):
    """A plotly scatter of the networks placed by classical MDS of `distances`
    (a frame from `compare_dynamics`), coloured by `colour`: `{name: value}`,
    a Series indexed by name (its name titles the legend), or a list in the
    frame's order. Numbers with more than 8 distinct values get a colour
    scale, anything else one colour per value. Hovering a point names the
    network, followed by `hover[name]` where given (`{name: text}`)."""
    import plotly.graph_objects as go

    _check_square(distances, "mds_figure")
    extra = dict(hover or {})
    names = [f"{n}: {extra[n]}" if n in extra else str(n) for n in distances.index]
    coords = classical_mds(distances.to_numpy(), 2)
    values = _colour_values(colour, distances.index)
    fig = go.Figure()
    if values is not None and _continuous(values):
        marker = {"size": 10, "color": values, "showscale": True}
        fig.add_trace(_scatter(go, coords, names, marker=marker))
    elif values is not None:
        for v in dict.fromkeys(values):
            keep = np.asarray([x == v for x in values])
            label = plotly_text(str(v))
            fig.add_trace(_scatter(go, coords[keep], np.asarray(names)[keep], name=label))
    else:
        fig.add_trace(_scatter(go, coords, names))
    fig.update_layout(
        title=plotly_text(title or "Networks by the dissimilarity of their dynamics (MDS)"),
        xaxis_title="MDS 1", yaxis_title="MDS 2", template="plotly_white",
        legend_title_text="" if values is None else plotly_text(_colour_name(colour)),
    )  # fmt: skip
    return fig


def _extra(module: str, package: str):
    """`module`, imported, or an ImportError naming the extra that installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(
            f"fbx.{WHAT}: the spectral comparison needs {package} (import {module}), which "
            f"is not installed. Install it with pip install 'fbexplorer[sweep]'."
        ) from None


# ------------------------------------------------------------- networks in
def _named(networks) -> tuple[list, list]:
    if isinstance(networks, Mapping):
        names, items = list(networks), list(networks.values())
    elif isinstance(networks, Sequence) and not isinstance(networks, str):
        names, items = list(range(len(networks))), list(networks)
    else:
        raise ValueError(
            f"fbx.{WHAT} expects networks as a dict {{name: network}} or a list. "
            f"Received: {type(networks).__name__}"
        )
    if len(items) < 2:
        raise ValueError(
            f"fbx.{WHAT} compares at least 2 networks. Received: {len(items)} network"
            f"{'s' * (len(items) != 1)}"
        )
    return names, items


def _is_model(x) -> bool:
    return hasattr(x, "graph") and hasattr(x, "step_model")


def _trajectories(item, inputs, nodes, samples, skip, n_delays) -> np.ndarray:
    """`(samples, T - skip, units)` float64 from a model, a trace or an array."""
    if _is_model(item):
        from fbexplorer.tracing import trace

        if inputs is None:
            raise ValueError(
                f"fbx.{WHAT}: traces model '{item.name}' on the probe `inputs`; pass them "
                f"(one batch of sequences, as for a call). Received: inputs=None"
            )
        if nodes is None and not item.feedback_names:
            raise ValueError(
                f"fbx.{WHAT}: model '{item.name}' has no feedback, so it has no state whose "
                f"dynamics to compare (by default its state is traced). Pass nodes=[...] "
                f"to compare other nodes."
            )
        wanted = nodes if nodes is not None else item.feedback_names
        arrays = trace(item, inputs, wanted, samples=samples, as_arrays=True)
    elif isinstance(item, (Mapping, pd.DataFrame)):
        wanted = recording.trace_nodes(item, what=WHAT) if nodes is None else nodes
        wanted = [wanted] if isinstance(wanted, str) else list(wanted)
        arrays, _ = recording.node_arrays(item, wanted, what=WHAT)
    else:
        arrays = {"data": np.asarray(item)}
        if arrays["data"].ndim != 3:
            raise ValueError(
                f"fbx.{WHAT}: a network is a FeedbackModel, a trace, or an array (samples, T, "
                f"units). Received: {type(item).__name__} of shape {np.shape(item)}"
            )
    parts = [np.asarray(a).reshape(a.shape[0], a.shape[1], -1) for a in arrays.values()]
    _check_size(parts, n_delays)
    return np.concatenate(parts, axis=2).astype("float64")[:, skip:]


def _check_size(parts, n_delays: int):
    samples, steps = parts[0].shape[:2]
    units = sum(p.shape[2] for p in parts)
    detail = values_detail(samples, steps, units, len(parts))
    detail += f", embedded over {n_delays} step{'s' * (n_delays != 1)}"
    # float64: the traces, and their embedding (n_delays times as wide) before and after
    need = 8.0 * samples * steps * units * (1 + 2 * n_delays)
    remedy = "Pass samples=, nodes= or a smaller n_delays to compare less"
    check_memory(f"fbx.{WHAT}", need, detail, remedy)


def _check_trajectories(data, n_delays, which: str = ""):
    if data.ndim != 3 or data.shape[1] < n_delays + 1 or data.shape[2] == 0:
        raise ValueError(
            f"fbx.{WHAT}: {which}fitting an operator with n_delays={n_delays} needs traces "
            f"(samples, T, units) of at least n_delays + 1 = {n_delays + 1} steps (after "
            f"skip). Received shape {data.shape}. Trace more steps or lower n_delays."
        )
    if not np.isfinite(data).all():
        raise ValueError(
            f"fbx.{WHAT}: {which}the traces hold NaN or inf (a diverging network?); the "
            f"operator is fitted to finite values only. Probe with shorter or smaller inputs."
        )


def _check_settings(method, skip, n_delays, rank):
    if method not in METHODS:
        raise ValueError(
            f"fbx.{WHAT}: method is one of {list(METHODS)}. Received: method={method!r}"
        )
    for name, value, low in (("skip", skip, 0), ("n_delays", n_delays, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(
                f"fbx.{WHAT}: {name} is an integer of at least {low}. Received: {name}={value!r}"
            )
    good_int = isinstance(rank, (int, np.integer)) and not isinstance(rank, bool) and rank >= 1
    good_float = isinstance(rank, float) and 0.0 < rank < 1.0
    if not (rank is None or good_int or good_float):
        raise ValueError(
            f"fbx.{WHAT}: rank is an int of at least 1, a fraction of energy in (0, 1), or "
            f"None (the optimal hard threshold). Received: rank={rank!r}"
        )


# ---------------------------------------------------------------- methods
def _pairwise(items, distance) -> np.ndarray:
    n = len(items)
    out = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            out[i, j] = out[j, i] = distance(items[i], items[j])
    return out


def _l1_matrix(counts) -> np.ndarray:
    table = pd.DataFrame(counts).fillna(0).to_numpy(float)
    return np.abs(table[:, None, :] - table[None, :, :]).sum(axis=2)


def _topology(item, inputs, held, options):
    """`(fixed points, connections or None)` of a network given for the topology:
    a model (searched, and its saddles followed where `connections` exists), a
    `FixedPoints`, or a pair `(FixedPoints, connections frame)`."""
    if isinstance(item, tuple) and len(item) == 2:
        return item
    if not _is_model(item):
        return item, None
    fp = _fixed_points(item, inputs, held, options)
    follow = getattr(fp, "connections", None)  # FixedPoints.connections, where it exists
    saddles = len(fp) and bool((fp.frame["n_unstable"] > 0).any())
    return fp, (follow(item) if callable(follow) and saddles else None)


def _fixed_points(item, inputs, held, options):
    from fbexplorer.fixed_point_search import fixed_points

    if held is None:
        held = {
            name: np.zeros(tuple(ref.shape[1:]), ref.dtype)
            for name, ref in zip(
                item.graph.input_names + item.graph.constant_names, item.step_model.inputs
            )
        }
    return fixed_points(item, held, initial=inputs, **dict(options or {}))


def _checked_connections(edges):
    if edges is None:
        return None
    if not isinstance(edges, pd.DataFrame) or not {"saddle", "attractor"} <= set(edges):
        raise ValueError(
            f"fbx.{WHAT}: connections is the frame of FixedPoints.connections(model), with "
            f"the columns 'saddle' and 'attractor'. Received: {type(edges).__name__}"
        )
    return edges


def _dsa_matrix(data, n_delays, rank, options) -> np.ndarray:
    try:
        from DSA import DSA
    except ImportError:
        raise ImportError(
            f"fbx.{WHAT}: method='dsa' needs the package dsa-metric (import DSA, with "
            f"PyTorch), which is not installed. Install it with pip install "
            f"'fbexplorer[dsa]', or use method='spectral'."
        ) from None
    # dsa-metric's own default score is its spectral "wasserstein": full DSA is "angular"
    kwargs = {"n_delays": n_delays, "rank": rank if isinstance(rank, int) else None}
    kwargs = {**kwargs, "score_method": "angular", **dict(options or {})}
    scores = np.asarray(DSA(list(data), **kwargs).fit_score(), "float64")
    scores = (scores + scores.T) / 2
    np.fill_diagonal(scores, 0.0)
    return scores


def _frame(values, names) -> pd.DataFrame:
    index = pd.Index(names, name="network")
    return pd.DataFrame(values, index=index, columns=index.rename("other"))


# ------------------------------------------------------------------ figure
def _check_square(distances, what):
    ok = isinstance(distances, pd.DataFrame) and distances.shape[0] == distances.shape[1]
    ok = ok and list(distances.index) == list(distances.columns)
    if not ok:
        raise ValueError(
            f"fbx.{what} expects a square DataFrame of dissimilarities, rows and columns "
            f"the same networks, as fbx.compare_dynamics returns. Received: "
            f"{type(distances).__name__} of shape {np.shape(distances)}"
        )


def _colour_values(colour, index):
    if colour is None:
        return None
    if isinstance(colour, (Mapping, pd.Series)):
        missing = [n for n in index if n not in colour]
        if missing:
            raise ValueError(
                f"fbx.mds_figure: colour has no value for network {missing[0]!r}. "
                f"Give one for each of {list(index)}."
            )
        return [colour[n] for n in index]
    values = list(colour)
    if len(values) != len(index):
        raise ValueError(
            f"fbx.mds_figure: colour gives one value per network, {len(index)} in all. "
            f"Received: {len(values)} values"
        )
    return values


def _colour_name(colour) -> str:
    return str(getattr(colour, "name", None) or "")


def _continuous(values) -> bool:
    numbers = all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool)
                  for v in values)  # fmt: skip
    return numbers and len(set(values)) > 8


def _scatter(go, coords, names, **kwargs):
    return go.Scatter(
        x=coords[:, 0],
        y=coords[:, 1],
        mode="markers",
        marker=kwargs.pop("marker", {"size": 10}),
        text=[plotly_text(n) for n in names],
        hovertemplate="%{text}<extra></extra>",
        **kwargs,
    )
