"""Static plotly figures of the explorer's panels, for papers (`Explorer.figure`).

Each is drawn from an `ExplorerData` and a selection (node, sample, step,
mode, epoch), with no widget: the trajectories (one line per unit, and per
run in the stateful view), the units x time heatmap (`fbx.plot_heatmap`) and
the portrait (`fbx.portrait` in the data's projection, the fixed points with
their hover, orbits and saddles' arrows, a census's attractors, a marker at
the step).
"""

from __future__ import annotations

from fbexplorer.escaping import plotly_text
from fbexplorer.explorer_data import ExplorerData
from fbexplorer.plots import plot_heatmap
from fbexplorer.portraits import portrait

__all__ = ["MARK", "PANELS", "panel_figure"]

PANELS = ("trajectories", "heatmap", "portrait")
MARK = "#d95f02"  # the marker at t, as explorer.js draws it


def panel_figure(
    data: ExplorerData,
    panel: str,
    node: str,
    sample: int,
    t: int,
    *,
    mode: str = "stateless",
    epoch_index: int = 0,
):
    """A `plotly.graph_objects.Figure` of one panel of `PANELS` at one node,
    sample (an id of `data.samples`), step and epoch (an index into
    `data.epochs`); `mode` ("stateless" or "stateful") picks the runs."""
    if panel not in PANELS:
        raise ValueError(
            f"Explorer.figure: panel is one of {list(PANELS)}. Received: panel={panel!r}"
        )
    row = data.samples.index(sample)
    if panel == "portrait":
        return _portrait_figure(data, sample, row, t, epoch_index)
    title = f"{plotly_text(node)}, sample {sample}"
    if panel == "heatmap":
        figure = _heatmap_figure(data, node, row, title, mode, epoch_index)
    else:
        figure = _trajectories_figure(data, node, row, title, mode, epoch_index)
    figure.add_vline(x=t, line={"color": MARK, "width": 2})
    return figure


def _heatmap_figure(data: ExplorerData, node: str, row: int, title: str, mode: str, e: int):
    """`fbx.plot_heatmap` of the mode's first run, units in index order as the tab shows them."""
    column = data.runs(mode)[0][0]
    figure = plot_heatmap(
        {node: data.values(node, column, e)},
        node,
        sample=row,
        order="index",
        title=title + ("" if column == "value" else f", {column}"),
    )
    figure.update_layout(template="plotly_white", xaxis_title="t", yaxis_title="unit")
    return figure


def _trajectories_figure(data: ExplorerData, node: str, row: int, title: str, mode: str, e: int):
    """One line per unit (and run, dashed for the stateless one in the stateful view)."""
    import plotly.graph_objects as go

    figure = go.Figure(layout={"template": "plotly_white", "title": {"text": title}})
    for column, dashed in data.runs(mode):
        values = data.values(node, column, e)[row]
        for u in range(values.shape[1]):
            figure.add_scatter(
                y=values[:, u],
                mode="lines",
                name=f"unit {u}" + ("" if column == "value" else f" {column}"),
                line={"dash": "dash" if dashed else "solid"},
            )
    figure.update_layout(xaxis_title="t", yaxis_title="value")
    return figure


def _portrait_figure(data: ExplorerData, sample: int, row: int, t: int, e: int):
    """`fbx.portrait` of one sample at epoch index `e`, in the data's projection."""
    found = data.portrait
    if found is None:
        raise ValueError(
            f"Explorer.figure: model '{data.model.name}' has no portrait here: it needs at "
            f"least 2 units of state (feedback names, cell states) in the trace. "
            f"Received: panel='portrait'. Use 'trajectories' or 'heatmap'."
        )
    nodes = list(found.projection.nodes)
    shown = found.fixed is not None and e == found.epoch
    title = f"Portrait of {plotly_text(', '.join(nodes))}, sample {sample}"
    if data.epochs:
        title += f", epoch {data.epochs[e]}"
    figure = portrait(
        {n: a[e, row : row + 1] for n, a in found.states.items()},
        nodes=nodes,
        projection=found.projection,
        fixed_points=data.fixed_points if shown else None,
        attractors=data.attractors if e == found.epoch else None,
        title=title,
    )
    figure.data[0].name = f"sample {sample}"
    figure.data[0].text = [f"sample {sample}, t={k}" for k in range(len(figure.data[0].x))]
    x, y = found.coords[e, row, t]
    figure.add_scatter(
        x=[x],
        y=[y],
        mode="markers",
        name=f"t={t}",
        marker={"color": MARK, "size": 13, "symbol": "x"},
    )
    return figure
