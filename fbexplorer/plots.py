"""Plotly figures of trajectories: one node over time, stateful against stateless,
units against time as a heatmap."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from fbexplorer.escaping import plotly_text
from fbexplorer.recording import node_arrays, trace_nodes

__all__ = ["plot_comparison", "plot_heatmap", "plot_trace", "similarity_order"]

BOUNDARY_STYLE = {"color": "rgba(80, 80, 80, 0.6)", "width": 1, "dash": "dot"}


def _palette():
    import plotly.colors

    return plotly.colors.qualitative.Plotly


def _pick_node(df: pd.DataFrame, node: str | None, what: str) -> str:
    nodes = [str(n) for n in pd.unique(df["node"].astype(object))]
    if not nodes:
        raise ValueError(f"fbx.{what}: the frame is empty.")
    if node is None:
        return nodes[0]
    if node not in nodes:
        raise ValueError(f"fbx.{what}: no node '{node}' in the frame. Nodes: {nodes}.")
    return node


def _as_list(value, what: str, name: str, available) -> list:
    if value is None:
        return list(available)
    chosen = [value] if np.isscalar(value) else list(value)
    missing = [v for v in chosen if v not in set(available)]
    if missing:
        raise ValueError(
            f"fbx.{what}: {name} {missing[0]!r} is not in the frame for this node. "
            f"Available: {list(available)}."
        )
    return chosen


def _check_columns(df, columns, what: str, source: str):
    missing = [c for c in columns if c not in getattr(df, "columns", [])]
    if missing:
        raise ValueError(
            f"fbx.{what} expects a frame from fbx.{source}; column '{missing[0]}' is missing."
        )


def plot_trace(
    df: pd.DataFrame,
    node: str | None = None,
    units: int | Sequence[int] | None = None,
    samples: int | Sequence[int] | None = None,
    *,
    title: str | None = None,
):
    """Lines over time of one node of a trace: one line per unit (and sample).

    Args:
        df: a frame from `fbx.trace`.
        node: the node to plot (default: the first in the frame).
        units: a unit or list of units (default: every unit of the node).
        samples: a sample or list of samples (default: the first sample in
            the frame); with several, each unit gets one line per sample.
        title: the figure title (default: the node's name).

    Returns:
        A `plotly.graph_objects.Figure`; x is the step `t`, y the value.

    Example:
        >>> fbx.plot_trace(fbx.trace(net, seq), node="d3", units=[0, 1])
    """
    import plotly.graph_objects as go

    _check_columns(df, ["sample", "t", "node", "unit", "value"], "plot_trace", "trace")
    node = _pick_node(df, node, "plot_trace")
    sub = df[df["node"].astype(object) == node]
    all_samples = sorted(pd.unique(sub["sample"]))
    if samples is None:
        samples = all_samples[:1]
    samples = _as_list(samples, "plot_trace", "sample", all_samples)
    units = _as_list(units, "plot_trace", "unit", sorted(pd.unique(sub["unit"])))
    sub = sub[sub["sample"].isin(samples) & sub["unit"].isin(units)]
    colors = _palette()
    fig = go.Figure()
    for s in samples:
        rows = sub[sub["sample"] == s]
        for j, u in enumerate(units):
            line = rows[rows["unit"] == u].sort_values("t")
            label = f"unit {u}" if len(samples) == 1 else f"sample {s}, unit {u}"
            fig.add_trace(
                go.Scatter(
                    x=line["t"].to_numpy(),
                    y=line["value"].to_numpy(),
                    mode="lines",
                    name=label,
                    legendgroup=f"unit {u}",
                    line={"color": colors[j % len(colors)]},
                    meta={"node": node, "sample": int(s), "unit": int(u)},
                )
            )
    sample_text = f"sample {samples[0]}" if len(samples) == 1 else f"{len(samples)} samples"
    fig.update_layout(
        title=title or f"{plotly_text(node)} ({sample_text})",
        xaxis_title="t",
        yaxis_title="value",
        template="plotly_white",
    )
    return fig


def plot_comparison(
    cmp: pd.DataFrame,
    node: str | None = None,
    units: int | Sequence[int] | None = None,
    sample: int | None = None,
    *,
    title: str | None = None,
):
    """Stateful against stateless trajectories of one node, chunk boundaries marked.

    The top panel shows both runs (stateful solid, stateless dashed, one
    colour per unit), the bottom panel their difference; a dotted vertical
    line marks each chunk boundary, between the last step of one chunk and
    the first of the next.

    Args:
        cmp: a frame from `fbx.compare_stateful`.
        node: the node to plot (default: the first in the frame).
        units: a unit or list of units (default: every unit of the node).
        sample: the sample to plot (default: the first in the frame).
        title: the figure title (default: the node's name).

    Returns:
        A `plotly.graph_objects.Figure` with three lines per unit (stateful,
        stateless, difference) and one vertical line shape per boundary.

    Example:
        >>> fbx.plot_comparison(fbx.compare_stateful(net, seq, chunks=4), node="d3")
    """
    from plotly.subplots import make_subplots

    need = ["sample", "t", "chunk", "node", "unit", "stateful", "stateless", "difference"]
    _check_columns(cmp, need, "plot_comparison", "compare_stateful")
    node = _pick_node(cmp, node, "plot_comparison")
    sub = cmp[cmp["node"].astype(object) == node]
    samples = sorted(pd.unique(sub["sample"]))
    sample = _as_list(sample, "plot_comparison", "sample", samples)[0]
    units = _as_list(units, "plot_comparison", "unit", sorted(pd.unique(sub["unit"])))
    sub = sub[(sub["sample"] == sample) & sub["unit"].isin(units)]
    fig = make_subplots(
        rows=2,
        cols=1,
        shared_xaxes=True,
        row_heights=[0.65, 0.35],
        vertical_spacing=0.06,
        subplot_titles=("stateful (solid) and stateless (dashed)", "stateful - stateless"),
    )
    _add_comparison_lines(fig, sub, node, units, sample)
    _mark_boundaries(fig, cmp)
    fig.update_layout(
        title=title or f"{plotly_text(node)}: stateful vs stateless (sample {sample})",
        template="plotly_white",
    )
    fig.update_xaxes(title_text="t", row=2, col=1)
    return fig


def _add_comparison_lines(fig, sub: pd.DataFrame, node: str, units, sample):
    """Three lines per unit of `sub` (one node and sample): stateful and
    stateless in the top panel, their difference below, one colour per unit."""
    import plotly.graph_objects as go

    colors = _palette()
    for j, u in enumerate(units):
        line = sub[sub["unit"] == u].sort_values("t")
        color = colors[j % len(colors)]
        t = line["t"].to_numpy()
        for kind, dash, row in (
            ("stateful", "solid", 1),
            ("stateless", "dash", 1),
            ("difference", "solid", 2),
        ):
            fig.add_trace(
                go.Scatter(
                    x=t,
                    y=line[kind].to_numpy(),
                    mode="lines",
                    name=f"unit {u} {kind}",
                    legendgroup=f"unit {u}",
                    showlegend=kind != "difference",
                    line={"color": color, "dash": dash},
                    meta={"node": node, "sample": int(sample), "unit": int(u), "run": kind},
                ),
                row=row,
                col=1,
            )


def _mark_boundaries(fig, cmp: pd.DataFrame):
    """A dotted vertical line between the last step of each chunk and the first of the next."""
    starts = cmp.groupby("chunk")["t"].min().sort_index().to_numpy()[1:]
    for start in starts:
        fig.add_shape(
            type="line",
            x0=float(start) - 0.5,
            x1=float(start) - 0.5,
            xref="x",
            y0=0,
            y1=1,
            yref="paper",
            line=BOUNDARY_STYLE,
            name=f"boundary {int(start)}",
        )


# ----------------------------------------------------------------- heatmaps
def similarity_order(values) -> np.ndarray:
    """An order of units that puts similar time courses next to each other.

    A greedy chain on the correlation of the units' time courses: it starts
    at the unit least correlated with the others in total and then
    repeatedly appends the unplaced unit most correlated with the last one
    placed. Identical (or perfectly correlated) units therefore end up side
    by side. Units that never change (no correlation defined) come last, in
    index order. Numpy only; memory grows as units squared.

    Args:
        values: an array `(units, T)`: one time course per row.

    Returns:
        The unit indices, int64, in display order.

    Example:
        >>> fbx.similarity_order(np.stack([a, b, a]))  # units 0 and 2 adjacent
    """
    z = np.asarray(values, dtype=np.float64)
    if z.ndim != 2:
        raise ValueError(
            f"fbx.similarity_order expects an array (units, T). Received shape {z.shape}."
        )
    z = z - z.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(z, axis=1)
    moving = np.flatnonzero(norm > 1e-12 * max(1.0, float(norm.max(initial=0.0))))
    still = np.setdiff1d(np.arange(len(z)), moving)
    if len(moving) <= 2:
        return np.concatenate([moving, still]).astype(np.int64)
    unit = z[moving] / norm[moving, None]
    corr = unit @ unit.T
    np.fill_diagonal(corr, -np.inf)
    total = np.where(np.isinf(corr), 0.0, corr).sum(axis=1)
    current = int(np.argmin(total))
    placed = np.zeros(len(moving), bool)
    chain = [current]
    placed[current] = True
    for _ in range(len(moving) - 1):
        row = np.where(placed, -np.inf, corr[current])
        current = int(np.argmax(row))
        placed[current] = True
        chain.append(current)
    return np.concatenate([moving[chain], still]).astype(np.int64)


def _sample_row(ids: np.ndarray, sample) -> int:
    """The row of `sample` among a trace's sample ids (None: the first)."""
    if sample is None:
        return 0
    hits = np.flatnonzero(ids == sample) if np.isscalar(sample) else []
    if isinstance(sample, bool) or len(hits) != 1:
        raise ValueError(
            f"fbx.plot_heatmap: sample {sample!r} is not in the trace. Samples: "
            f"{[int(i) for i in ids]}."
        )
    return int(hits[0])


def _unit_order(order, matrix: np.ndarray, node: str) -> np.ndarray:
    """`plot_heatmap`'s rows: `order` of the units of `matrix` (units, T), int64."""
    n_units = matrix.shape[0]
    if isinstance(order, str) and order == "similarity":
        chosen = similarity_order(matrix)
    elif order is None or (isinstance(order, str) and order == "index"):
        chosen = np.arange(n_units)
    elif not isinstance(order, str) and np.ndim(order) == 1 and len(order) > 0:
        chosen = np.asarray(order)
        bad = [u for u in chosen.tolist() if not isinstance(u, int) or not 0 <= u < n_units]
        if bad or len(set(chosen.tolist())) != len(chosen):
            raise ValueError(
                f"fbx.plot_heatmap: order lists unit indices 0 to {n_units - 1} of node "
                f"'{node}', each at most once. Received: order={list(order)!r}"
            )
    else:
        raise ValueError(
            f"fbx.plot_heatmap: order is 'similarity', 'index', None or a list of unit "
            f"indices. Received: order={order!r}"
        )
    return np.asarray(chosen, dtype=np.int64)


def plot_heatmap(
    trace,
    node: str | None = None,
    sample: int | None = None,
    *,
    order: str | Sequence[int] | None = "similarity",
    title: str | None = None,
):
    """One node of a trace as a heatmap: units (rows) against time (columns).

    Args:
        trace: a frame from `fbx.trace`, or its `as_arrays=True` dict.
        node: the node to show (default: the first in the trace).
        sample: the sample to show (default: the first). For a frame, a
            value of its `sample` column; for a dict, a row of the arrays.
        order: the rows' order: `"similarity"` (default; units with similar
            time courses side by side, see `fbx.similarity_order`),
            `"index"` or None (unit 0 at the top), or a list of unit indices
            (shown in that order; a subset shows only those).
        title: the figure title (default: the node and sample).

    Returns:
        A `plotly.graph_objects.Figure` with one `Heatmap`: `z` is
        `(units, T)` in the chosen order, `y` the unit indices (flattened in
        C order for spatial maps, as in a trace frame) as labels, `x` the
        step; the colours are centred on 0. `fig.data[0].meta["order"]` is
        the order of the units.

    Example:
        >>> fbx.plot_heatmap(fbx.trace(net, seq), node="d3", sample=0)
    """
    import plotly.graph_objects as go

    nodes = trace_nodes(trace, what="plot_heatmap")
    if not nodes:
        raise ValueError("fbx.plot_heatmap: the trace is empty.")
    node = nodes[0] if node is None else node
    arrays, ids = node_arrays(trace, [node], what="plot_heatmap")
    values = arrays[node]
    row = _sample_row(ids, sample)
    matrix = values[row].reshape(values.shape[1], -1).T  # (units, T)
    chosen = _unit_order(order, matrix, node)
    sample_id = int(ids[row])
    fig = go.Figure(
        go.Heatmap(
            z=matrix[chosen],
            x=np.arange(matrix.shape[1]),
            y=[str(u) for u in chosen],
            colorscale="RdBu",
            reversescale=True,
            zmid=0,
            colorbar={"title": {"text": "value"}},
            hovertemplate="t=%{x}<br>unit %{y}<br>%{z:.4g}<extra></extra>",
            meta={"node": node, "sample": sample_id, "order": chosen.tolist()},
        )
    )
    fig.update_layout(
        title=title or f"{plotly_text(node)} (sample {sample_id})",
        xaxis_title="t",
        yaxis={"title": {"text": "unit"}, "type": "category", "autorange": "reversed"},
        template="plotly_white",
    )
    return fig
