"""The explorer: a feedback model's graph, a time scrubber and its trajectories.

`explore(model, inputs)` traces the model once (`fbx.trace`) and shows, in
one widget: the cyclic graph with the chosen node highlighted (`fbx.draw`), a
node and a sample picker, a Play button linked in the browser to a step
slider, a plotly figure of the node's units over time with a marker at the
current step, and the values at that step. Every frame is computed up front,
so scrubbing only moves the marker and rewrites the readout.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence

import graphviz
import ipywidgets as widgets
import numpy as np
import pandas as pd
import plotly.colors
import plotly.graph_objects as go

from fbexplorer.draw import draw
from fbexplorer.engine import FeedbackModel
from fbexplorer.plots import BOUNDARY_STYLE
from fbexplorer.trace import compare_stateful, trace, wide

__all__ = ["Explorer", "explore"]

_MARKER = {"color": "#d95f02", "width": 2}
_READOUT_UNITS = 32  # units listed in the readout; the figure shows them all


class Explorer(widgets.VBox):
    """The widget `fbx.explore` returns; see `explore` for what it shows.

    Its parts are public, so code can drive it as a user would:
    `graph` (HTML holding the drawing's SVG), `node`, `sample` (Dropdowns),
    `play` (Play), `step` (IntSlider), `mode` (ToggleButtons), `figure`
    (a plotly `FigureWidget`; `layout.shapes[0]` is the time marker),
    `readout` (HTML). `links` holds the browser-side link from `play` to
    `step`; `frame` is the trace, `comparison` the `compare_stateful` frame
    (None where the stateful view is off).
    """

    def __init__(self, model, frame: pd.DataFrame, comparison: pd.DataFrame | None, chunks):
        self.model = model
        self.frame = frame
        self.comparison = comparison
        self.chunks = chunks
        self._arrays = {}  # (node, column) -> array (sample, t, unit)
        self._svg = True  # False once `dot` turned out to be missing
        nodes = list(frame["node"].cat.categories)
        self._samples = sorted(int(s) for s in pd.unique(frame["sample"]))
        length = int(frame["t"].max()) + 1

        self.graph = widgets.HTML(layout=widgets.Layout(overflow="auto"))
        self.graph_view = None  # graphviz-anywidget, where `dot` is missing
        fed_back = [n for n in model.feedback_names if n in nodes]  # the loop's own signal
        self.node = widgets.Dropdown(
            options=nodes, value=(fed_back or nodes)[0], description="node"
        )
        self.sample = widgets.Dropdown(
            options=[(f"sample {s}", s) for s in self._samples], description="sample"
        )
        self.mode = widgets.ToggleButtons(
            options=["stateless", "stateful"],
            value="stateless",
            disabled=comparison is None,
            tooltips=self._mode_tooltips(),
        )
        self.play = widgets.Play(min=0, max=length - 1, interval=200, description="play")
        self.step = widgets.IntSlider(
            min=0, max=length - 1, description="t", layout=widgets.Layout(width="420px")
        )
        self.links = [widgets.jslink((self.play, "value"), (self.step, "value"))]
        self.figure = go.FigureWidget(
            layout={
                "template": "plotly_white",
                "height": 340,
                "margin": {"t": 40, "b": 40, "l": 50, "r": 20},
                "xaxis": {"title": {"text": "t"}},
                "yaxis": {"title": {"text": "value"}},
            }
        )
        self.readout = widgets.HTML()

        self._show_graph()
        self._show_figure()
        for widget, handler in (
            (self.node, self._on_node),
            (self.sample, self._on_data),
            (self.mode, self._on_data),
            (self.step, self._on_step),
        ):
            widget.observe(handler, "value")
        graph_parts = [self.graph] + ([self.graph_view] if self.graph_view is not None else [])
        super().__init__(
            [
                *graph_parts,
                widgets.HBox([self.node, self.sample, self.mode]),
                widgets.HBox([self.play, self.step]),
                self.figure,
                self.readout,
            ]
        )

    # ---------------------------------------------------------------- data
    def values(self, node: str, column: str = "value") -> np.ndarray:
        """One node's values as an array (sample, t, unit), samples in `sample`'s order.

        `column` is `"value"` (the trace), or `"stateful"` / `"stateless"` /
        `"difference"` (the comparison, where the stateful view is on).
        """
        key = (node, column)
        if key not in self._arrays:
            source = self.frame if column == "value" else self.comparison
            table = wide(source, node=node, values=column)
            self._arrays[key] = table.to_numpy().reshape(len(self._samples), -1, table.shape[1])
        return self._arrays[key]

    def _runs(self) -> list[tuple[str, str]]:
        """(column, dash) of the lines the current mode shows."""
        if self.mode.value == "stateful":
            return [("stateful", "solid"), ("stateless", "dash")]
        return [("value", "solid")]

    def _mode_tooltips(self) -> list[str]:
        if self.comparison is None:
            why = "a model without feedback" if not self.model.feedback_names else "one chunk"
            off = f"Off: with {why}, stateful and stateless runs agree."
            return [off, off]
        return [
            "The whole sequence in one call (fbx.trace).",
            f"The sequence in {self.chunks} chunks, state carried across them (solid), "
            "against each chunk started afresh (dashed) (fbx.compare_stateful).",
        ]

    # -------------------------------------------------------------- drawing
    def _show_graph(self):
        diagram = self._diagram(self.node.value)
        if self._svg:
            try:
                self.graph.value = diagram.pipe(format="svg", encoding="utf-8")
                return
            except graphviz.ExecutableNotFound:  # no `dot`: render in the browser
                self._svg = False
                try:
                    self.graph_view = diagram.to_widget()
                except ImportError:
                    self.graph_view = None
        note = (
            "Graphviz's <code>dot</code> program is not installed, so the drawing is "
            "{where}. For SVG here, install Graphviz (<code>apt-get install graphviz</code>, "
            "<code>brew install graphviz</code> or <code>conda install graphviz</code>)."
        )
        if self.graph_view is not None:
            self.graph_view.dot_source = diagram.source
            self.graph.value = "<p>" + note.format(where="rendered in the browser below") + "</p>"
        else:
            self.graph.value = (
                "<p>" + note.format(where="shown as DOT text") + "</p>"
                f"<pre>{html.escape(diagram.source)}</pre>"
            )

    def _diagram(self, name: str):
        """`fbx.draw` with the node highlighted; trace's `d1#1` / `d1[0]` mark `d1`."""
        base = re.sub(r"(#\d+)?(\[\d+\])?$", "", name)
        for highlight in dict.fromkeys([name, base]):
            try:
                return draw(self.model, highlight=highlight)
            except ValueError:
                continue
        return draw(self.model)

    # --------------------------------------------------------------- figure
    def _show_figure(self):
        node, sample = self.node.value, self.sample.value
        row = self._samples.index(sample)
        colours = plotly.colors.qualitative.Plotly
        lines = []
        for column, dash in self._runs():
            data = self.values(node, column)[row]
            for u in range(data.shape[1]):
                lines.append(
                    go.Scatter(
                        x=np.arange(data.shape[0]),
                        y=data[:, u],
                        mode="lines",
                        name=f"unit {u}" + ("" if column == "value" else f" {column}"),
                        legendgroup=f"unit {u}",
                        line={"color": colours[u % len(colours)], "dash": dash},
                        meta={"node": node, "sample": sample, "unit": u, "run": column},
                    )
                )
        shapes = [self._marker()]
        if self.mode.value == "stateful":
            for start in self.comparison.attrs["boundaries"]:
                shapes.append(
                    dict(
                        type="line",
                        x0=start - 0.5,
                        x1=start - 0.5,
                        y0=0,
                        y1=1,
                        yref="paper",
                        line=BOUNDARY_STYLE,
                    )
                )
        title = f"{node}, sample {sample}"
        if self.mode.value == "stateful":
            title += f": {self.chunks} chunks, stateful (solid) and stateless (dashed)"
        self.figure.data = ()
        self.figure.add_traces(lines)
        with self.figure.batch_update():  # assigned, not merged into the old shapes
            self.figure.layout.shapes = shapes
            self.figure.layout.title.text = title
        self._show_readout()

    def _marker(self) -> dict:
        t = self.step.value
        return dict(type="line", x0=t, x1=t, y0=0, y1=1, yref="paper", line=_MARKER)

    def _show_readout(self):
        node, t = self.node.value, self.step.value
        row = self._samples.index(self.sample.value)
        columns = [c for c, _ in self._runs()]
        if columns == ["stateful", "stateless"]:
            columns.append("difference")
        data = [self.values(node, c)[row, t] for c in columns]
        units = data[0].shape[0]
        head = "".join(f"<th>{c}</th>" for c in columns)
        body = "".join(
            f"<tr><td>{u}</td>" + "".join(f"<td>{d[u]:.6g}</td>" for d in data) + "</tr>"
            for u in range(min(units, _READOUT_UNITS))
        )
        more = f"<p>... {units - _READOUT_UNITS} more units</p>" if units > _READOUT_UNITS else ""
        self.readout.value = (
            f"<b>{html.escape(node)}</b> at t={t}, sample {self.sample.value}"
            f'<table style="line-height:1.3;font-size:12px">'
            f"<tr><th>unit</th>{head}</tr>{body}</table>{more}"
        )

    # ------------------------------------------------------------- observers
    def _on_node(self, change):
        self._show_graph()
        self._show_figure()

    def _on_data(self, change):
        self._show_figure()

    def _on_step(self, change):
        with self.figure.batch_update():
            self.figure.layout.shapes[0].update(x0=change.new, x1=change.new)
        self._show_readout()


def explore(
    model,
    inputs,
    *,
    nodes: str | Sequence[str] | None = None,
    samples: int | Sequence[int] | None = None,
    initial_state: Mapping | None = None,
    chunks: int | None = None,
) -> Explorer:
    """An interactive view of a feedback model's trajectories, for Jupyter.

    The model is traced once (`fbx.trace`); the widget then shows the cyclic
    graph with the chosen node highlighted, a node picker (layers, per-step
    inputs, delayed values, cell states, named as `fbx.trace` names them), a
    sample picker, a Play button and a step slider linked in the browser
    (Play needs no kernel round trip), a plotly figure with one line per
    unit of the node over time and a vertical marker at the current step,
    and a table of the node's values at that step. It opens on the first
    fed-back value (the loop's own signal).

    The `stateless` / `stateful` toggle: "stateless" shows the trace, the
    whole sequence in one call. "stateful" shows `fbx.compare_stateful` with
    the sequence cut into `chunks` chunks: solid lines carry every delayed
    value and cell state from one chunk into the next (what a `stateful=True`
    model computes when fed the chunks one call after another), dashed lines
    start each chunk afresh (a stateless model fed the same chunks); dotted
    lines mark the boundaries. Where the dashed lines leave the solid ones,
    the network's memory of earlier chunks matters. Both runs start from
    the initial values (or `initial_state`), not a stateful model's carried
    state, which the trace does start from. The toggle is off when the two
    runs must agree: a model without feedback, or a single chunk.

    Args:
        model: a `FeedbackModel`.
        inputs: the inputs as for a call (an array, a list, or a dict by name).
        nodes: node names to offer (default: every node `fbx.trace` records).
        samples: the number of leading samples, or a list of sample indices,
            as for `fbx.trace` (default: the whole batch; a large batch makes
            a large trace).
        initial_state: `{feedback name: value}`, as for a call.
        chunks: the number of chunks of the stateful view (default: 2 for
            sequences of 2 steps or more; 1 turns the view off).

    Returns:
        An `Explorer` (an `ipywidgets.VBox`): the last expression of a cell
        displays it.

    Example:
        >>> ex = fbx.explore(net, X[:4], nodes=["d1", "d3", "loop", "out"])
        >>> ex  # doctest: +SKIP
        >>> ex.node.value = "loop"; ex.step.value = 5   # as if clicked
    """
    if not isinstance(model, FeedbackModel):
        raise ValueError(
            f"fbx.explore expects a FeedbackModel. Received: {type(model).__name__}. "
            f"Build one with fbx.FeedbackModel(inputs, outputs, feedback=...)."
        )
    if isinstance(samples, np.ndarray) and samples.ndim == 1:
        samples = samples.tolist()
    if isinstance(samples, (list, tuple)):
        samples = list(dict.fromkeys(samples))  # one line per sample, shown once
    frame = trace(model, inputs, nodes, samples=samples, initial_state=initial_state)
    length = int(frame["t"].max()) + 1
    if chunks is None:
        chunks = 2 if length >= 2 else 1
    comparison = None
    # compare_stateful checks `chunks` and names it when it is out of range.
    if model.feedback_names and chunks != 1:
        names = list(frame["node"].cat.categories)
        comparison = compare_stateful(
            model, inputs, chunks, names, samples=samples, initial_state=initial_state
        )
    return Explorer(model, frame, comparison, chunks)
