"""The explorer: a feedback model's graph lit by its values, played over time.

`explore(model, inputs)` traces the model once (`fbx.trace`) and shows, in
one widget: node, sample and colour pickers, a Play button and a step slider,
and the browser-side view (`fbexplorer.view.ExplorerView`): the cyclic graph
with every node's box filled by its value at step t and every delayed edge as
wide as the value it carries, a colour legend, an unrolled window of steps
around t, the chosen node's trajectories, a units x time heatmap and the
phase portrait of the model's state (with fixed points, where given) as
tabs, and a table of its values at t. All frames of the chosen node and
sample go to the browser once; Play and the slider are linked to the view
in the browser, so playback needs no kernel. `explore(callback)` shows what a
`TraceCallback` recorded during training, with an epoch slider.
"""

from __future__ import annotations

import contextlib
import functools
import html
import re
import warnings
from collections.abc import Callable, Mapping, Sequence

import graphviz
import ipywidgets as widgets
import numpy as np
import pandas as pd

from fbexplorer._atomic import write_text
from fbexplorer.callbacks import TraceCallback, checked_choice, join_frames, recorded_rows
from fbexplorer.drawing import draw
from fbexplorer.engine import FeedbackModel
from fbexplorer.explorer_data import COLOUR_BY, PAGE_BUDGET, ExplorerData, add_page, offline_pages
from fbexplorer.explorer_figures import panel_figure
from fbexplorer.memory import (
    PER_VALUE,
    check_memory,
    format_bytes,
    over_budget,
    values_detail,
)
from fbexplorer.recording import check_size, node_units, planned_size, resolve_nodes
from fbexplorer.static_export import ExportFigure
from fbexplorer.tracing import chunk_bounds, compare_stateful, trace
from fbexplorer.view import ExplorerView, graph_targets, standalone_html, unrolled_targets

__all__ = ["Explorer", "explore", "recorded_frame"]


class Explorer(widgets.VBox):
    """The widget `fbx.explore` returns.

    The trajectories tab draws one line per unit of the chosen node, with a
    marker at t. The portrait tab shows the model's state (every feedback
    value and cell state, concatenated) on its 2 principal components
    (`fbx.pca_project`, fitted over every traced sample and epoch, so the
    axes stay fixed), one line for the chosen sample, a marker at t, and
    the fixed points in the same plane (stable filled, unstable hollow); a
    model without feedback has no portrait. The "unrolled" box swaps the
    graph for `window` steps around t drawn unrolled (`fbx.draw(...,
    unroll=window)`), the current step framed. All frames of the chosen
    node and sample go to the browser once: Play, the slider and the epoch
    slider redraw there, with no kernel round trip.

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

    Its parts are public, so code can drive it as a user would: `node`,
    `sample` (Dropdowns), `colour` (Dropdown: "mean", "norm" or "unit") and
    `unit` (the unit for "unit"), `mode` (ToggleButtons), `play` (Play),
    `step` (IntSlider), `epoch` (IntSlider, or None without a
    `TraceCallback`), and `view` (the `ExplorerView` that draws in the
    browser: graph, legend, tabs, readout); `note` and `graph_view` show
    the drawing where Graphviz's `dot` is missing. `links` holds the browser-side
    links (Play to `step`, `step` to `view.t`, `epoch` to `view.epoch`), and
    `picker_links` the node and sample pickers' to the view (`view.pages` keeps
    the pages explored: a notebook exported with its widget state switches
    between them with no kernel).
    `data` is what the widgets show, computed without them
    (`fbexplorer.explorer_data.ExplorerData`).
    `frame` is the trace, `comparison` the `compare_stateful` frame
    (computed when the stateful view is first opened; None where it is off).
    `projection` is the `fbx.Projection` of the portrait tab (the model's
    states on 2 principal components, fitted over every sample and epoch;
    None where there is no portrait), `fixed_points` the `FixedPoints` it
    draws (or None).
    """

    def __init__(
        self,
        model,
        frame: pd.DataFrame,
        comparison: pd.DataFrame | Callable | None,
        chunks,
        *,
        window: int = 5,
        off_reason: str | None = None,
        fixed_points=None,
        states: Mapping[str, np.ndarray] | None = None,
        off_note: str | None = None,
        recording: tuple | None = None,
    ):
        self.model, self.frame, self.chunks = model, frame, chunks
        self.fixed_points = fixed_points
        self._off_reason = off_reason
        self._off_note = off_note  # why the stateful view is off, in full
        self._window = window
        self._comparison_source = comparison  # a frame, a function that computes it, or None
        self._recording = recording  # (TraceCallback, nodes, samples): live while it records
        self.note = widgets.HTML()
        super().__init__([self.note])
        if frame is None:  # a TraceCallback before fit: the widget waits for its first trace
            self.note.value = (
                "<p>Waiting for the first trace: fit with this callback, "
                "<code>model.fit(..., callbacks=[callback])</code>; each recorded epoch "
                "shows here while it trains.</p>"
            )
        else:
            self._build(states)
        if recording is not None:
            recording[0].listen(self._on_record)

    def _build(self, states=None):
        """Make the pickers, the sliders and the view from `frame`."""
        callback = self._recording[0] if self._recording else None
        # stacklevel 5: the NaN warning points at fbx.explore's caller (explore, _explore_*,
        # __init__, here)
        self.data = ExplorerData(
            self.model,
            self.frame,
            self._comparison_source,
            self.chunks,
            fixed_points=self.fixed_points,
            states=states,
            census=callback.census if callback else None,
            logs=callback.logs if callback else None,
            stacklevel=5,
        )
        self.data.draw_more(*getattr(self, "_more", (None, None)))
        self.window = max(1, min(int(self._window), self.data.length))
        self.note.value = ""  # no longer waiting
        self.graph_view = None  # graphviz-anywidget, where `dot` is missing
        self._svg = True  # False once `dot` turned out to be missing
        self._make_pickers()
        self._make_time()
        self._show_graph()
        self._send_page()
        self._observe()
        time_row = [self.play, self.step] + ([self.epoch] if self.epoch is not None else [])
        graph_parts = [self.note] + ([self.graph_view] if self.graph_view is not None else [])
        self.children = [
            widgets.HBox([self.node, self.sample, self.mode]),
            widgets.HBox([self.colour, self.unit]),
            widgets.HBox(time_row),
            *graph_parts,
            self.view,
        ]

    def _on_record(self, epoch: int):
        """A `TraceCallback` recorded `epoch`: show it (while `fit` runs, the
        kernel sends the widget's changes as they are made). The epoch slider
        grows and moves to the new epoch, unless it was moved off the newest."""
        callback, nodes, samples = self._recording
        try:
            self.frame = recorded_frame(callback, nodes, samples)
        except ValueError as error:  # over the memory budget now: stop, say why
            callback.unlisten(self._on_record)
            self.note.value = f"<p>Stopped showing new epochs: {html.escape(str(error))}</p>"
            return
        if self.model is None or not hasattr(self, "data"):
            self.model = callback.model
            self._build()
            return
        before = self.data
        self.data = ExplorerData(
            self.model,
            self.frame,
            None,
            1,
            fixed_points=self.fixed_points,
            census=callback.census,
            logs=callback.logs,
        )
        self.data.draw_more(before.attractors, before.targets)  # as explore(...) drew them
        # The slider grows; the view (explorer.js) moves it to the new epoch where it
        # showed the newest: the kernel, busy in fit, hears of the user's moves only after.
        # Its index is not sent back: that would undo a move the kernel has not heard of.
        index = self.epoch.index
        lock = getattr(self.epoch, "_lock_property", None)  # ipywidgets' own no-echo lock
        with lock(index=index) if lock else contextlib.nullcontext(), self.epoch.hold_sync():
            self.epoch.options = [(str(e), i) for i, e in enumerate(self.data.epochs)]
            self.epoch.index = index
        self._send_page()

    def _make_pickers(self):
        """The node, sample, mode, colour and unit pickers."""
        data = self.data
        fed_back = [n for n in self.model.feedback_names if n in data.nodes]  # the loop's signal
        self.node = widgets.Dropdown(
            options=data.nodes, value=(fed_back or data.nodes)[0], description="node"
        )
        self.sample = widgets.Dropdown(
            options=[(f"sample {s}", s) for s in data.samples], description="sample"
        )
        self.mode = widgets.ToggleButtons(
            options=["stateless", "stateful"],
            value="stateless",
            disabled=not data.has_comparison,
            tooltips=self._mode_tooltips(),
        )
        self.colour = widgets.Dropdown(options=list(COLOUR_BY), value="mean", description="fill by")
        self.unit = widgets.BoundedIntText(
            value=0,
            min=0,
            max=max(a.shape[-1] for a in data.arrays["value"].values()) - 1,
            description="unit",
            disabled=True,
            layout=widgets.Layout(width="140px"),
        )

    def _make_time(self):
        """Play, the step and epoch sliders, the view, and their links in the browser."""
        length, epochs = self.data.length, self.data.epochs
        self.play = widgets.Play(min=0, max=length - 1, interval=100, description="play")
        self.step = widgets.IntSlider(
            min=0, max=length - 1, description="t", layout=widgets.Layout(width="420px")
        )
        self.epoch = None
        if epochs:
            self.epoch = widgets.SelectionSlider(
                options=[(str(e), i) for i, e in enumerate(epochs)],
                value=len(epochs) - 1,
                description="epoch",
                layout=widgets.Layout(width="320px"),
            )
        self.view = ExplorerView(epoch=self.epoch.index if self.epoch is not None else 0)
        self.links = [
            widgets.jslink((self.play, "value"), (self.step, "value")),
            widgets.jslink((self.step, "value"), (self.view, "t")),
        ]
        if self.epoch is not None:
            self.links.append(widgets.jslink((self.epoch, "index"), (self.view, "epoch")))
        # The pickers' choice, for a page with no kernel (the view switches between the
        # pages explored); linked once the pickers are made.
        self.view.node_index, self.view.sample_index = self.node.index, self.sample.index
        self.picker_links = [
            widgets.jslink((self.node, "index"), (self.view, "node_index")),
            widgets.jslink((self.sample, "index"), (self.view, "sample_index")),
        ]

    def _observe(self):
        for widget, handler in (
            (self.node, self._on_node),
            (self.sample, self._on_data),
            (self.mode, self._on_mode),
            (self.colour, self._on_colour),
            (self.unit, self._on_data),
        ):
            widget.observe(handler, "value")
        self.view.observe(self._on_unrolled, "unrolled")
        self.view.observe(self._on_selected, "selected")

    # ---------------------------------------------------------------- data
    @property
    def comparison(self) -> pd.DataFrame | None:
        """The `compare_stateful` frame (None where the stateful view is off)."""
        return self.data.comparison

    @property
    def projection(self):
        """The portrait's `fbx.Projection` (None where there is no portrait)."""
        return self.data.projection

    def values(self, node: str, column: str = "value", epoch: int | None = None) -> np.ndarray:
        """One node's values as an array (sample, t, unit), samples in `sample`'s order.

        `column` is `"value"` (the trace), or `"stateful"` / `"stateless"` /
        `"difference"` (the comparison, where the stateful view is on).
        `epoch` is an epoch number a `TraceCallback` recorded (default: the
        epoch slider's).
        """
        return self.data.values(node, column, self._epoch_index(epoch))

    def _epoch_index(self, epoch) -> int:
        if epoch is None:
            return self.epoch.index if self.epoch is not None else 0
        return self.data.epoch_index(epoch)

    def _mode_tooltips(self) -> list[str]:
        if not self.data.has_comparison and self._off_note:
            return [f"Off: {self._off_note}"] * 2
        if not self.data.has_comparison:
            why = self._off_reason or (
                "a model without feedback" if not self.model.feedback_names else "one chunk"
            )
            off = f"Off: with {why}, stateful and stateless runs agree."
            return [off, off]
        return [
            "The whole sequence in one call (fbx.trace).",
            f"The sequence in {self.chunks} chunks, state carried across them (solid), "
            "against each chunk started afresh (dashed) (fbx.compare_stateful).",
        ]

    def _edges(self) -> list[str]:
        """The delayed edges drawn (they get widths)."""
        edges = [n for n, t in self.view.graph.get("targets", {}).items() if t["kind"] == "edge"]
        edges += [
            n for n, _, kind, _ in self.view.unrolled_graph.get("targets", []) if kind == "edge"
        ]
        return edges

    def _send_page(self):
        """Hand the view the page of the current node, sample, mode and colouring,
        and keep it among the pages explored (what an exported notebook switches to)."""
        page = self.data.page(
            self.node.value,
            self.sample.value,
            mode=self.mode.value,
            by=self.colour.value,
            unit=self.unit.value,
            edges=self._edges(),
        )
        options = {"nodes": list(self.data.nodes), "samples": list(self.data.samples)}
        with self.view.hold_sync():
            self.view.data = page
            self.view.pages = add_page(self.view.pages, page, self.view.graph, options, PAGE_BUDGET)

    # -------------------------------------------------------------- drawing
    def _show_graph(self):
        diagram = self._diagram(self.node.value)
        if self._svg:
            try:
                svg = diagram.pipe(format="svg", encoding="utf-8")
                self.view.graph = {"svg": svg, "targets": graph_targets(svg, self.data.nodes)}
                return
            except graphviz.ExecutableNotFound:  # no `dot`: render in the browser
                self._svg = False
                try:
                    self.graph_view = diagram.to_widget()
                except ImportError:
                    self.graph_view = None
        note = (
            "Graphviz's <code>dot</code> program is not installed, so the drawing is "
            "{where}, without the values. For the graph lit by the values, install "
            "Graphviz (<code>apt-get install graphviz</code>, "
            "<code>brew install graphviz</code> or <code>conda install graphviz</code>)."
        )
        if self.graph_view is not None:
            self.graph_view.dot_source = diagram.source
            self.note.value = "<p>" + note.format(where="rendered in the browser below") + "</p>"
        else:
            self.note.value = (
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

    def _show_unrolled(self):
        """The unrolled drawing of `window` steps, once (the view shifts its labels)."""
        if self.view.unrolled_graph or not self._svg:
            return
        try:
            svg = draw(self.model, unroll=self.window).pipe(format="svg", encoding="utf-8")
        except graphviz.ExecutableNotFound:
            return
        targets = unrolled_targets(svg, self.data.nodes, self.window)
        self.view.unrolled_graph = {"svg": svg, **targets}
        self._send_page()  # the delayed edges it adds get their widths

    def figure(self, panel: str | None = None):
        """A static plotly figure of a panel at the current node, sample and step.

        For papers: `ex.figure().write_image("d3.svg")` (PNG, SVG, PDF through
        kaleido and a Chrome or Chromium; one browser is kept for the process,
        so a figure after the first takes well under a second, a failed one
        is retried with a fresh browser, and a missing browser is named in
        one line: `fbexplorer.static_export`). `panel` is "trajectories",
        "heatmap" or "portrait" (default: the open tab). The portrait is
        `fbx.portrait` in the tab's projection, at the epoch slider's epoch,
        with the fixed points and a marker at the current step.

        Returns:
            A `plotly.graph_objects.Figure` (an `ExportFigure`).
        """
        figure = panel_figure(
            self.data,
            panel or self.view.panel,
            self.node.value,
            self.sample.value,
            self.step.value,
            mode=self.mode.value,
            epoch_index=self._epoch_index(None),
        )
        return ExportFigure(figure)

    def save_html(
        self,
        path,
        *,
        nodes: str | Sequence[str] | None = None,
        samples: int | Sequence[int] | None = None,
        max_bytes: int = PAGE_BUDGET,
    ) -> str:
        """Write the explorer to one HTML file that plays offline, with no kernel.

        The file holds every node and every sample of the explorer (or those
        of `nodes` and `samples`), each with every step and epoch, with node
        and sample pickers, in the current mode and colouring; the drawings
        (cyclic, each node highlighted, and unrolled), the script and its own
        Play button and sliders; it needs no server and no network. The node
        and sample shown come first; above `max_bytes` of data the page keeps
        every node for as many samples as fit (or, where one sample with
        every node is too much, as many nodes as fit), and a warning names
        what it left out and what to pass. The page is written whole or not
        at all (to a temporary file beside `path`, then moved over it), so
        that an interrupted save leaves the page that was there.

        Args:
            path: the file to write.
            nodes: a node name or names to keep (default: every node).
            samples: a number of leading samples or a list of sample ids to
                keep (default: every sample).
            max_bytes: the most bytes of data the page holds (default 2 MB).

        Returns:
            The path written.
        """
        self._show_unrolled()
        order, picks = self._offline_choice(nodes, samples)
        pages = offline_pages(
            self.data,
            order,
            picks,
            self._node_graph,
            budget=int(max_bytes),
            mode=self.mode.value,
            by=self.colour.value,
            unit=self.unit.value,
            edges=self._edges(),
        )
        left_nodes, left_samples = pages.left_out
        if left_nodes or left_samples:
            message = offline_note(pages, order, picks, max_bytes)
            pages.state["note"] = message.split(";")[0]
            warnings.warn(message, stacklevel=2)
        title = f"{self.model.name}: {self.node.value}, sample {self.sample.value}"
        page = standalone_html(self.view, title=title, t=self.step.value, pages=pages.state)
        # Whole or not at all: an interrupted save leaves the page that was there.
        return write_text(path, page)

    def _offline_choice(self, nodes, samples) -> tuple[list, list]:
        """The nodes and samples a saved page keeps, the ones shown first; checked."""
        known, ids = self.data.nodes, self.data.samples
        nodes, samples = checked_choice(
            nodes, samples, known, ids, what="Explorer.save_html", holder="this explorer has"
        )
        nodes = list(dict.fromkeys([self.node.value, *(nodes or known)]))
        samples = list(dict.fromkeys([self.sample.value, *(samples or ids)]))
        return nodes, samples

    def _node_graph(self, node: str) -> dict:
        """The cyclic drawing with `node` highlighted, as the view's `graph` holds it."""
        if node == self.node.value or not self._svg:
            return dict(self.view.graph)
        svg = self._diagram(node).pipe(format="svg", encoding="utf-8")
        return {"svg": svg, "targets": graph_targets(svg, self.data.nodes)}

    # ------------------------------------------------------------- observers
    def _on_node(self, change):
        self._show_graph()
        self._send_page()

    def _on_data(self, change):
        self._send_page()

    def _on_mode(self, change):
        try:
            self._send_page()
        except ValueError as error:  # the comparison would not fit in memory now
            if change.new != "stateful":
                raise
            self.data.drop_comparison()
            self._off_note = str(error)
            self.mode.tooltips = self._mode_tooltips()
            self.mode.value = "stateless"
            self.mode.disabled = True

    def _on_colour(self, change):
        self.unit.disabled = change.new != "unit"
        self._send_page()

    def _on_unrolled(self, change):
        if change.new:
            self._show_unrolled()

    def _on_selected(self, change):
        """A node clicked in the graph: the node picker shows it."""
        if change.new in self.node.options:
            self.node.value = change.new

    def draw_more(self, attractors=None, targets=None) -> Explorer:
        """Draw a census's attractors on the portrait and targets in the track; returns self."""
        if not hasattr(self, "data"):  # a TraceCallback before fit: drawn once built
            self._more = (attractors, targets)
        elif attractors is not None or targets is not None:
            self.data.draw_more(attractors, targets)
            self._send_page()
        return self


def explore(
    model,
    inputs=None,
    *,
    nodes: str | Sequence[str] | None = None,
    samples: int | Sequence[int] | None = None,
    initial_state: Mapping | None = None,
    chunks: int | None = None,
    window: int = 5,
    fixed_points=None,
    attractors=None,
    targets=None,
) -> Explorer:
    """An interactive view of a feedback model's trajectories, for Jupyter.

    The model is traced once (`fbx.trace`); the widget then shows the cyclic
    graph with every node's box filled, on a diverging scale, by its value
    at step t (the mean of its units, their norm, or one unit: `fill by`),
    each delayed edge as wide as the norm of the value it carries, and a
    legend. Below: a node picker (nodes named as `fbx.trace` names them; it
    opens on the first fed-back value, the loop's own signal), a sample
    picker, a Play button and a step slider, tabs with the chosen node's
    trajectories, a units x time heatmap and the phase portrait of the
    model's state, and a table of its values at t; an "unrolled" box, and a
    `stateless` / `stateful` toggle that compares runs over `chunks` chunks
    (`Explorer` says what each part shows). Play and the sliders redraw in
    the browser, with no kernel round trip.

    `explore(callback)` shows what a `fbx.TraceCallback` recorded while the
    model trained, with an epoch slider beside the time slider (`nodes=` and
    `samples=` pick part of the recording).

    Memory: the explorer holds every traced value (samples x steps x units
    of every node). Above the memory budget (`fbx.set_memory_budget`) it
    refuses, before tracing, with one line that says what to pass
    (`samples=`, `nodes=`); where the stateful view would not fit beside it,
    the toggle is off and its tooltip says why. NaN and inf (a diverging
    model) are drawn as gaps: a warning and each view's title name the steps.

    Args:
        model: a `FeedbackModel`, or a `TraceCallback` that has recorded.
        inputs: the inputs as for a call (an array, a list, or a dict by name);
            None with a `TraceCallback`.
        nodes: node names to offer (default: every node `fbx.trace` records;
            with a `TraceCallback`, every node it recorded).
        samples: the number of leading samples, or a list of sample indices,
            as for `fbx.trace` (default: the whole batch; a large batch makes
            a large trace); with a `TraceCallback`, of the recorded samples.
        initial_state: `{feedback name: value}`, as for a call.
        chunks: the number of chunks of the stateful view (default: 2 for
            sequences of 2 steps or more; 1 turns the view off).
        window: the number of steps the unrolled view draws.
        fixed_points: a result of `fbx.fixed_points` for this model, drawn on
            the portrait (with a `TraceCallback`, at the last epoch: the
            weights they were found for).
        attractors: a result of `fbx.attractors` for this model, drawn on the
            portrait (a cross per attractor, cycles as closed orbits).
        targets: what the outputs should be, as `fit`'s `y` (one array
            `(samples, T, ...)` for a single output, or a dict by output
            name), drawn in the track above the trajectories with the inputs
            and outputs.

    Returns:
        An `Explorer` (an `ipywidgets.VBox`): the last expression of a cell
        displays it; `.save_html(path)` writes a page that plays offline.

    Example:
        >>> ex = fbx.explore(net, X[:4], nodes=["d1", "d3", "loop", "out"])
        >>> ex  # doctest: +SKIP
        >>> ex.node.value = "loop"; ex.step.value = 5   # as if clicked
    """
    if isinstance(model, TraceCallback):
        found = _explore_recording(model, inputs, nodes, samples, window, fixed_points)
        return found.draw_more(attractors, targets)
    _check_explore_arguments(model, inputs, window, fixed_points)
    if isinstance(samples, np.ndarray) and samples.ndim == 1:
        samples = samples.tolist()
    if isinstance(samples, (list, tuple)):
        samples = list(dict.fromkeys(samples))  # one line per sample, shown once
    found = _explore_model(
        model, inputs, nodes, samples, initial_state, chunks, window, fixed_points
    )
    return found.draw_more(attractors, targets)


def _explore_model(model, inputs, nodes, samples, initial_state, chunks, window, fixed_points):
    """`fbx.explore(model, inputs)`, its arguments checked: the trace, the
    stateful comparison (a function, called when the view first opens) and
    the states the portrait needs."""
    names = resolve_nodes(model, nodes, what="explore")
    size = planned_size(model, inputs, names, samples=samples, what="explore")
    if chunks is None:
        chunks = 2 if size[1] >= 2 else 1
    stateful = bool(model.feedback_names) and chunks != 1
    if stateful:
        chunk_bounds(size[1], chunks)  # names `chunks` when it is out of range, now
    stateful_off = _check_explore_memory(model, names, size, stateful)
    frame = trace(model, inputs, names, samples=samples, initial_state=initial_state)
    comparison = None
    if stateful and stateful_off is None:
        comparison = functools.partial(
            compare_stateful,
            model,
            inputs,
            chunks,
            names,
            samples=samples,
            initial_state=initial_state,
        )
    return Explorer(
        model,
        frame,
        comparison,
        chunks,
        window=window,
        fixed_points=fixed_points,
        states=_untraced_states(model, inputs, names, samples, initial_state),
        off_note=stateful_off,
    )


def _check_explore_arguments(model, inputs, window, fixed_points):
    """`fbx.explore(model, inputs)`'s arguments, each refused with what to pass."""
    if not isinstance(model, FeedbackModel):
        raise ValueError(
            f"fbx.explore expects a FeedbackModel or a fbx.TraceCallback. Received: "
            f"{type(model).__name__}. Build one with fbx.FeedbackModel(inputs, outputs, feedback=...)."
        )
    if inputs is None:
        raise ValueError(
            "fbx.explore(model, inputs) needs the inputs to trace. Received: inputs=None."
        )
    if fixed_points is not None:
        _check_fixed_points(model, fixed_points)
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 1:
        raise ValueError(
            f"fbx.explore: `window` is the number of steps the unrolled view draws, an "
            f"integer >= 1. Received: window={window!r}"
        )


def _untraced_states(model, inputs, names, samples, initial_state) -> dict:
    """The states the portrait needs that `names` left out, traced, samples in
    sorted order: `{state name: (1, sample, t, ...)}`."""
    missing = [n for n in model.feedback_names if n not in set(names)]
    if not missing:
        return {}
    arrays = trace(
        model, inputs, missing, samples=samples, initial_state=initial_state, as_arrays=True
    )
    order = np.argsort(samples, kind="stable") if isinstance(samples, list) else slice(None)
    return {n: a[order][None] for n, a in arrays.items()}


def _check_explore_memory(model, names, size, stateful: bool) -> str | None:
    """Refuse an explorer above the memory budget; None, or why the stateful
    view (computed when first opened) is off: it would not fit beside it."""
    samples, steps, _ = size
    state_units = node_units(model, model.feedback_names)
    portrait = PER_VALUE["explore_portrait"] * samples * steps * state_units
    remedy = "Pass samples= or nodes= to explore less"
    need = check_size(
        names, size, what="fbx.explore", kind="explore", remedy=remedy, extra=portrait
    )
    if not stateful:
        return None
    more = PER_VALUE["stateful_view"] * samples * steps * size[2]
    detail = "with the explorer's own, for " + values_detail(*size, len(names))
    remedy += " (or chunks=1 to leave the view out)"
    return over_budget("the stateful view", need + more, detail, remedy)


def _explore_recording(callback, inputs, nodes, samples, window, fixed_points) -> Explorer:
    """`fbx.explore(callback)`: the recorded traces (some nodes and samples of
    them), joined, with an epoch slider; it shows each epoch recorded later
    as it comes (before `fit`, it waits for the first)."""
    if inputs is not None:
        raise ValueError(
            "fbx.explore(callback) shows the inputs the TraceCallback traced; it takes "
            f"no inputs. Received: inputs of type {type(inputs).__name__}. "
            "Pass the probe inputs to fbx.TraceCallback(inputs) instead."
        )
    frame = recorded_frame(callback, nodes, samples) if callback.frames else None
    if fixed_points is not None and callback.model is not None:
        _check_fixed_points(callback.model, fixed_points)
    return Explorer(
        callback.model,
        frame,
        None,
        1,
        window=window,
        off_reason="traces taken during training",
        fixed_points=fixed_points,
        recording=(callback, nodes, samples),
    )


def recorded_frame(callback, nodes=None, samples=None) -> pd.DataFrame:
    """The callback's traces joined (some nodes and samples of them), refused
    above the memory budget."""
    rows = recorded_rows(callback.frames, nodes, samples)
    count = sum(
        len(df) if keep is None else int(keep.sum())
        for df, keep in zip(callback.frames.values(), rows)
    )
    check_memory(
        "fbx.explore",
        PER_VALUE["explore_recording"] * count,
        f"{count:,} recorded values in {len(rows)} traces",
        "Pass nodes= or samples= to explore part of the recording",
    )
    return join_frames(callback.frames, rows)


def _check_fixed_points(model, fixed_points):
    """Fixed points of this model's states (by name), as `fbx.fixed_points` returns them."""
    states = getattr(fixed_points, "states", None)
    frame = getattr(fixed_points, "frame", None)
    if not isinstance(states, Mapping) or frame is None or "stable" not in frame:
        raise ValueError(
            "fbx.explore: fixed_points is a result of fbx.fixed_points (with `.states` and "
            f"`.frame['stable']`). Received: {type(fixed_points).__name__}"
        )
    expected = list(getattr(model, "feedback_names", []))
    if sorted(states) != sorted(expected):
        name = getattr(model, "name", model)
        raise ValueError(
            f"fbx.explore: fixed_points are not of model '{name}'. Expected fixed points of "
            f"its states {expected}. Received: fixed points of the states {list(states)}. "
            f"Find them with fbx.fixed_points({name}, inputs)."
        )


def offline_note(pages, nodes: list, samples: list, budget: int) -> str:
    """What `Explorer.save_html` warns when a page keeps less than asked."""
    left_nodes, left_samples = pages.left_out
    return (
        f"Explorer.save_html kept {len(pages.nodes)} of {len(nodes)} nodes and "
        f"{len(pages.samples)} of {len(samples)} samples, to stay within the page budget "
        f"of {format_bytes(budget)}; left out the nodes {left_nodes} and the samples "
        f"{left_samples}. Pass nodes= and samples= to choose what to keep, or a larger "
        f"max_bytes=."
    )
