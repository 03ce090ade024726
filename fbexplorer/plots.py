"""Plotly figures of trajectories: one node over time, stateful against stateless."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

__all__ = ["plot_comparison", "plot_trace"]

BOUNDARY_STYLE = {"color": "rgba(80, 80, 80, 0.6)", "width": 1, "dash": "dot"}


def _palette():
    import plotly.colors

    return plotly.colors.qualitative.Plotly


def _pick_node(df: pd.DataFrame, node: str | None, what: str) -> str:
    nodes = [str(n) for n in pd.unique(df["node"].astype(str))]
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
    sub = df[df["node"].astype(str) == node]
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
        title=title or f"{node} ({sample_text})",
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
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    need = ["sample", "t", "chunk", "node", "unit", "stateful", "stateless", "difference"]
    _check_columns(cmp, need, "plot_comparison", "compare_stateful")
    node = _pick_node(cmp, node, "plot_comparison")
    sub = cmp[cmp["node"].astype(str) == node]
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
    fig.update_layout(
        title=title or f"{node}: stateful vs stateless (sample {sample})",
        template="plotly_white",
    )
    fig.update_xaxes(title_text="t", row=2, col=1)
    return fig
