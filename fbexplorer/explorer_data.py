"""What the explorer computes from a trace, apart from its widgets.

`ExplorerData` holds a trace as arrays `{node: (epoch, sample, t, unit)}`,
the stateful comparison (computed when first asked for), what fills each
node's box (`node_stats`), the state's phase portrait (`Portrait`: a
`fbx.pca_project` fitted over every sample and epoch, and the fixed points
in its plane) and the page the browser view draws (`page`, the `data`
trait of `fbexplorer.view.ExplorerView`, documented in `explorer.js`).
It needs no widget: `fbx.explore`'s `Explorer` reads its sliders and
pickers and hands their values to these methods.
"""

from __future__ import annotations

import json
import types
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fbexplorer.portrait_marks import PortraitMarks, attractor_marks, portrait_marks
from fbexplorer.portraits import (
    Projection,
    fixed_point_values,
    nonfinite_note,
    nonfinite_steps,
    pca_project,
)
from fbexplorer.view import decode, encode

__all__ = [
    "COLOUR_BY",
    "PAGE_BUDGET",
    "ExplorerData",
    "OfflinePages",
    "Portrait",
    "add_page",
    "blocks",
    "census_panel",
    "fit_portrait",
    "nonfinite_warning",
    "offline_pages",
    "targets_by_output",
    "training_panel",
]

COLOUR_BY = ("mean", "norm", "unit")  # what can fill a node's box
TRACK_UNITS = 8  # the units of an input, target or output the track draws


def _order_key(frame: pd.DataFrame, samples, n_t: int, n_u: int) -> tuple[list, np.ndarray]:
    """(epochs, one int64 key per row: node, epoch, sample, t, unit), built in place."""
    key = frame["node"].cat.codes.to_numpy().astype(np.int64)
    epochs = []
    if "epoch" in frame:
        epochs = sorted(int(e) for e in pd.unique(frame["epoch"]))
        key *= len(epochs)
        key += np.searchsorted(epochs, frame["epoch"].to_numpy())
    n_s = len(samples)
    key *= n_s
    sample = frame["sample"].to_numpy()
    key += sample if list(samples) == list(range(n_s)) else np.searchsorted(samples, sample)
    key *= n_t
    key += frame["t"].to_numpy()
    key *= n_u
    key += frame["unit"].to_numpy()
    return epochs, key


def blocks(frame: pd.DataFrame, columns, samples) -> tuple[list, dict]:
    """(epochs, {column: {node: array (epoch, sample, t, unit)}}) from a tidy frame.

    `samples` lists the frame's sample ids in the order the arrays hold them.
    The rows' order key is built in place in one int64 array (a trace's rows
    are already in order, so the columns are then reshaped, not copied): the
    explorer's memory on top of the frame is about 17 bytes per row.
    """
    codes = frame["node"].cat.codes.to_numpy()
    names = list(frame["node"].cat.categories)
    n_s, n_t = len(samples), int(frame["t"].max()) + 1
    epochs, key = _order_key(frame, samples, n_t, int(frame["unit"].max()) + 1)
    n_e = max(len(epochs), 1)
    order = None if np.all(key[1:] > key[:-1]) else np.argsort(key, kind="stable")
    del key
    counts = np.bincount(codes, minlength=len(names))
    starts = np.concatenate([[0], np.cumsum(counts)])
    out = {}
    for column in columns:
        flat = frame[column].to_numpy()
        flat = flat if order is None else flat[order]
        out[column] = {
            name: flat[starts[i] : starts[i + 1]].reshape(n_e, n_s, n_t, -1)
            for i, name in enumerate(names)
            if counts[i]
        }
    return epochs, out


def nonfinite_warning(arrays: Mapping[str, np.ndarray], steps: int) -> str | None:
    """What `fbx.explore` warns where the arrays `(epoch, sample, t, unit)` hold
    NaN or inf (a diverging model); None where every value is finite."""
    bad = {}
    for name, data in arrays.items():
        if np.issubdtype(data.dtype, np.inexact):
            count, first = nonfinite_steps(data.reshape((-1,) + data.shape[2:]))
            if count:
                bad[name] = (count, first)
    if not bad:
        return None
    first = min(f for _, f in bad.values())
    count = max(c for c, _ in bad.values())
    return (
        f"fbx.explore: the nodes {list(bad)} hold NaN or inf from t={first} (at most "
        f"{count} of {steps} steps in one node); the view draws the finite values, with "
        f"gaps, and each title names the steps."
    )


@dataclass
class Portrait:
    """The model's states on 2 principal components, over every epoch and sample.

    Attributes:
        projection: the `fbx.Projection` (fitted over every sample and epoch,
            so the axes stay put while the epoch slider moves).
        states: `{state name: (epoch, sample, t, *shape)}`, the values projected.
        coords: `(epoch, sample, t, 2)`.
        fixed: `(points, 2)`, the fixed points in the same plane (None without).
        stable: `(points,)` bools (None without fixed points).
        epoch: the epoch index the fixed points belong to (the last one: they
            are of the model's weights now), None without fixed points.
        marks: what the tab draws of the dynamics at `epoch`
            (`fbexplorer.portrait_marks`: kinds, hover text, orbits, saddles'
            arrows, a census's attractors), as JSON, or None.
        census: per epoch index, what a `TraceCallback` found with that
            epoch's weights (`census_panel`), or None where it searched nothing.
    """

    projection: Projection
    states: dict
    coords: np.ndarray
    fixed: np.ndarray | None = None
    stable: np.ndarray | None = None
    epoch: int | None = None
    marks: dict | None = None
    census: list | None = None

    def panel(self, row: int) -> dict:
        """The portrait tab's data for sample row `row` (see `explorer.js`)."""
        data = {
            "nodes": list(self.projection.nodes),
            "variance": [float(r) for r in self.projection.explained_variance_ratio],
            "coords": encode(self.coords[:, row]),
        }
        if self.fixed is not None:
            data.update(
                fixed=encode(self.fixed),
                stable=[bool(b) for b in self.stable],
                fixed_epoch=int(self.epoch),
            )
        if self.marks is not None:
            data["marks"] = [{"epoch": int(self.epoch), **self.marks}]
        if self.census is not None:
            data["census"] = self.census
        return data


def fit_portrait(
    model,
    values: Mapping[str, np.ndarray],
    size: tuple[int, int, int],
    fixed_points=None,
    attractors=None,
) -> Portrait | None:
    """The portrait of `values` `{node: (epoch, sample, t, ...)}`, or None.

    `size` is `(epochs, samples, steps)` (1 epoch without epochs).
    The states among them (the model's feedback names and cell states, as
    floats), each step's values concatenated, are projected with
    `fbx.pca_project`. None without at least 2 units of state and 3 points,
    where `fixed_points` (drawn on the portrait) is a ValueError.
    `attractors` (a `fbx.attractors` census) are drawn beside them.
    """
    specs = [s for s in model.graph.specs if s.name in values]
    specs = [s for s in specs if np.issubdtype(np.asarray(values[s.name]).dtype, np.floating)]
    units = sum(int(np.prod(s.shape, dtype=np.int64)) for s in specs)
    n_e, n_s, n_t = size
    if units < 2 or n_e * n_s * n_t < 3:
        if fixed_points is not None or attractors is not None:
            raise ValueError(
                "fbx.explore: fixed_points are drawn on the portrait of the model's state, "
                "which needs at least 2 units of state (feedback names, cell states) in "
                f"the trace. Received: the states {[s.name for s in specs]}, "
                f"{units} unit{'s' * (units != 1)}. "
                "Leave fixed_points out, or trace the states (a TraceCallback with nodes=None)."
            )
        return None
    states = {
        s.name: np.asarray(values[s.name]).reshape((n_e, n_s, n_t) + tuple(s.shape)) for s in specs
    }
    names = list(states)
    flat = {n: a.reshape((n_e * n_s, n_t) + a.shape[3:]) for n, a in states.items()}
    coords, projection = pca_project(flat, 2, nodes=names)
    portrait = Portrait(projection, states, coords.reshape(n_e, n_s, n_t, 2))
    if fixed_points is not None:
        shapes = [tuple(a.shape[3:]) for a in states.values()]
        points, stable = fixed_point_values(fixed_points, names, shapes, "explore")
        portrait.fixed = projection.transform(points) if len(stable) else np.zeros((0, 2))
        portrait.stable = stable
        portrait.marks = portrait_marks(fixed_points, projection, "explore").to_json()
    if attractors is not None:
        found = attractor_marks(attractors, projection, "explore")
        portrait.marks = portrait.marks or PortraitMarks(np.zeros((0, 2))).to_json()
        portrait.marks["attractors"] = PortraitMarks(None, attractors=found).to_json()["attractors"]
    if portrait.marks is not None:
        portrait.epoch = n_e - 1  # with a TraceCallback: the last epoch's weights
    return portrait


def _finite(values) -> list:
    """Floats for JSON: NaN and inf as None."""
    return [float(v) if np.isfinite(v) else None for v in np.asarray(values, float)]


def census_panel(projection: Projection, found: Mapping, shapes) -> dict:
    """What one epoch's search found, in the portrait's plane (see `explorer.js`).

    `found` is `{"fixed_points": FixedPoints, "attractors": Attractors}` (either
    may be missing); `shapes` the shapes of `projection.nodes`. Fixed points
    carry `stability`, `slow`, `spectral_radius` and `tau`; attractors (one
    state each) `kind`, `period` and `share`.
    """
    out = {}
    names = list(projection.nodes)
    for kind, result in found.items():
        rows = result.frame
        flag = rows["stable"] if "stable" in rows else np.zeros(len(rows), bool)
        stand_in = types.SimpleNamespace(states=result.states, frame={"stable": flag})
        points, _ = fixed_point_values(stand_in, names, shapes, "explore")
        entry = {"points": encode(projection.transform(points) if len(rows) else np.zeros((0, 2)))}
        if kind == "fixed_points":
            entry.update(
                stability=[str(v) for v in rows["stability"]],
                slow=[bool(v) for v in rows["slow"]],
                spectral_radius=_finite(rows["spectral_radius"]),
                tau=_finite(rows["tau"]),
            )
        else:
            entry.update(
                kind=[str(v) for v in rows["kind"]],
                period=_finite(rows["period"].astype("float64")),
                share=_finite(rows["share"]),
            )
        out[kind] = entry
    return out


def training_panel(logs: Mapping[int, Mapping], epochs) -> dict | None:
    """The training tab's data: Keras's logs per epoch, and the epochs recorded.

    Returns `{"epochs": [E'], "metrics": {name: [E' values]}, "recorded":
    [epoch numbers traced]}` (NaN and inf as None), or None without logs.
    """
    if not logs:
        return None
    numbers = sorted(logs)
    names = list(dict.fromkeys(k for e in numbers for k in logs[e]))
    metrics = {
        n: _finite([_as_float(logs[e].get(n)) for e in numbers])
        for n in names
        if all(isinstance(_as_float(logs[e].get(n)), float) for e in numbers)
    }
    return {"epochs": numbers, "metrics": metrics, "recorded": [int(e) for e in epochs]}


def _as_float(value):
    if value is None:
        return float("nan")
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


class ExplorerData:
    """A trace as the explorer shows it: arrays, fills, the portrait and the page.

    Args:
        model: the `FeedbackModel` traced.
        frame: the tidy trace (`fbx.trace`, or a `TraceCallback`'s frames joined,
            with an `epoch` column).
        comparison: the `fbx.compare_stateful` frame, a function that computes
            it (called when first needed), or None (the stateful view is off).
        chunks: the number of chunks of the comparison.
        fixed_points: a `fbx.fixed_points` result drawn on the portrait, or None.
        states: `{state name: (epoch, sample, t, ...)}` the portrait needs that
            the frame lacks.
        census: `{epoch: {"fixed_points": ..., "attractors": ...}}`, what a
            `TraceCallback` found at each recorded epoch (drawn on the portrait).
        logs: `{epoch: {name: value}}`, Keras's logs (the training tab).
        stacklevel: where the warning about NaN or inf points, counted from
            the caller of this constructor.
        attractors: a `fbx.attractors` census drawn on the portrait, or None.
        targets: what the outputs should be, `{output name: (sample, t, ...)}`
            (rows are sample ids), or one array for a single output; drawn in
            the track above the trajectories, beside the inputs and outputs.

    Attributes:
        samples: the frame's sample ids, sorted (an array's sample axis).
        epochs: the epoch numbers (empty without an `epoch` column).
        length: the number of steps.
        nodes: the node names, in the frame's order.
        portrait: the `Portrait`, or None (fewer than 2 units of state).
    """

    def __init__(
        self,
        model,
        frame: pd.DataFrame,
        comparison: pd.DataFrame | Callable | None = None,
        chunks: int = 1,
        *,
        fixed_points=None,
        states: Mapping[str, np.ndarray] | None = None,
        census: Mapping[int, Mapping] | None = None,
        logs: Mapping[int, Mapping] | None = None,
        stacklevel: int = 1,
        attractors=None,
        targets=None,
    ):
        self.model, self.frame, self.chunks = model, frame, chunks
        self.logs = dict(logs or {})
        self.fixed_points, self.attractors = fixed_points, attractors
        self._comparison = comparison
        self.samples = sorted(int(s) for s in pd.unique(frame["sample"]))
        self.epochs, found = blocks(frame, ["value"], self.samples)
        self.arrays = {"value": found["value"]}
        self.nodes = list(found["value"])
        self.length = int(frame["t"].max()) + 1
        self._stats = {}
        message = nonfinite_warning(found["value"], self.length)
        if message:
            warnings.warn(message, stacklevel=stacklevel + 1)
        size = (max(len(self.epochs), 1), len(self.samples), self.length)
        values = {**(states or {}), **found["value"]}
        self.portrait = fit_portrait(model, values, size, fixed_points, attractors)
        self.targets = targets_by_output(model, targets)
        if census and self.portrait is not None:
            self._add_census(census)

    def _add_census(self, census: Mapping[int, Mapping]):
        """Each recorded epoch's census in the portrait's plane; without `fixed_points=`
        the newest epoch's fixed points are the portrait's `fixed`."""
        portrait = self.portrait
        shapes = [tuple(a.shape[3:]) for a in portrait.states.values()]
        portrait.census = [
            census_panel(portrait.projection, census[e], shapes) if census.get(e) else None
            for e in self.epochs
        ]
        searched = [i for i, e in enumerate(self.epochs) if "fixed_points" in census.get(e, {})]
        if self.fixed_points is None and searched:
            entry = portrait.census[searched[-1]]["fixed_points"]
            portrait.fixed = decode(entry["points"], (-1, 2))
            portrait.stable = np.array([s == "stable" for s in entry["stability"]], bool)
            portrait.epoch = searched[-1]

    def draw_more(self, attractors=None, targets=None):
        """Add a census's attractors to the portrait and targets to the track."""
        if attractors is not None and self.portrait is not None:
            self.attractors = attractors
            found = attractor_marks(attractors, self.portrait.projection, "explore")
            marks = self.portrait.marks or PortraitMarks(np.zeros((0, 2))).to_json()
            marks["attractors"] = PortraitMarks(None, attractors=found).to_json()["attractors"]
            self.portrait.marks = marks
            if self.portrait.epoch is None:
                self.portrait.epoch = max(len(self.epochs), 1) - 1
        if targets is not None:
            self.targets = targets_by_output(self.model, targets)

    # ------------------------------------------------------------ arrays
    @property
    def projection(self) -> Projection | None:
        """The portrait's `fbx.Projection` (None without a portrait)."""
        return self.portrait.projection if self.portrait is not None else None

    @property
    def has_comparison(self) -> bool:
        """Whether the stateful view is on (its frame computed or not yet)."""
        return self._comparison is not None

    @property
    def comparison(self) -> pd.DataFrame | None:
        """The `compare_stateful` frame (None where the stateful view is off)."""
        if callable(self._comparison):
            self._comparison = self._comparison()
        return self._comparison

    def drop_comparison(self):
        """Turn the stateful view off (its frame would not fit in memory)."""
        self._comparison = None

    def column(self, column: str) -> dict:
        """`{node: (epoch, sample, t, unit)}` of `column`: `"value"` (the trace),
        or `"stateful"` / `"stateless"` / `"difference"` (the comparison)."""
        if column not in self.arrays:
            _, found = blocks(self.comparison, ["stateful", "stateless"], self.samples)
            self.arrays.update(found)
            self.arrays["difference"] = {
                n: found["stateful"][n] - found["stateless"][n] for n in found["stateful"]
            }
        return self.arrays[column]

    def values(self, node: str, column: str = "value", epoch_index: int = 0) -> np.ndarray:
        """One node's values `(sample, t, unit)` at one epoch (an index into `epochs`)."""
        return self.column(column)[node][epoch_index]

    def epoch_index(self, epoch: int) -> int:
        """The index of an epoch number in `epochs`; a ValueError names the traced ones."""
        if epoch not in self.epochs:
            raise ValueError(
                f"Explorer.values: no epoch {epoch!r} was traced. Expected one of "
                f"{self.epochs or 'none (this explorer has no epochs)'}. Received: epoch={epoch!r}"
            )
        return self.epochs.index(epoch)

    def node_stats(self, row: int, by: str, unit: int = 0) -> np.ndarray:
        """`(epoch, node, t)`: what fills each node's box for sample row `row`.

        `by` is "mean" or "norm" of the units, or "unit" (unit `unit`; a node
        with fewer units is NaN, left unfilled). NaN and inf stay unfilled.
        """
        key = (row, by, unit if by == "unit" else None)
        if key not in self._stats:
            rows = []
            for data in self.arrays["value"].values():
                data = data[:, row].astype(np.float32)
                with np.errstate(over="ignore", invalid="ignore"):
                    if by == "mean":
                        rows.append(data.mean(-1))
                    elif by == "norm":
                        rows.append(np.sqrt((data**2).sum(-1)))
                    elif unit < data.shape[-1]:
                        rows.append(data[..., unit])
                    else:
                        rows.append(np.full(data.shape[:2], np.nan, np.float32))
            self._stats[key] = np.stack(rows, axis=1)
        return self._stats[key]

    # -------------------------------------------------------------- page
    @staticmethod
    def runs(mode: str) -> list[tuple[str, bool]]:
        """(column, dashed) of the lines a mode ("stateless", "stateful") shows."""
        if mode == "stateful":
            return [("stateful", False), ("stateless", True)]
        return [("value", False)]

    def page(
        self, node: str, sample: int, *, mode: str, by: str, unit: int, edges: Iterable[str]
    ) -> dict:
        """The view's `data`: every frame of `node` and `sample` (see `explorer.js`).

        `mode` is "stateless" or "stateful", `by` one of `COLOUR_BY` (with
        `unit` for "unit"), `edges` the names of the delayed edges drawn (they
        get widths).
        """
        row = self.samples.index(sample)
        runs = [
            {"name": column, "dash": dashed, "values": encode(self.column(column)[node][:, row])}
            for column, dashed in self.runs(mode)
        ]
        stateful = mode == "stateful"
        return {
            "length": self.length,
            "epochs": list(self.epochs),
            "node": node,
            "sample": sample,
            "units": int(self.arrays["value"][node].shape[-1]),
            "title": self.title(node, row, stateful),
            "runs": runs,
            "difference": stateful,
            "boundaries": list(self.comparison.attrs["boundaries"]) if stateful else [],
            "colour": self.colour(row, by, unit),
            "size": self.edge_widths(row, edges),
            "panels": self.panels(row),
        }

    def title(self, node: str, row: int, stateful: bool) -> str:
        """The view's title: node, sample, the comparison's runs and where it is not finite."""
        title = f"{node}, sample {self.samples[row]}"
        if stateful:
            title += f": {self.chunks} chunks, stateful (solid) and stateless (dashed)"
        count, first = nonfinite_steps(self.arrays["value"][node][:, row])
        if count:
            title += f" ({nonfinite_note(count, first, self.length)}; drawn where finite)"
        return title

    def colour(self, row: int, by: str, unit: int) -> dict:
        """What fills the boxes and its scale: symmetric about 0, from 0 for norms."""
        fill = self.node_stats(row, by, unit)
        finite = fill[np.isfinite(fill)]
        top = float(np.abs(finite).max()) if finite.size else 1.0
        return {
            "by": f"unit {unit}" if by == "unit" else f"{by} of the units",
            "names": list(self.nodes),
            "values": encode(fill),
            "range": [0.0 if by == "norm" else -top, top],
        }

    def edge_widths(self, row: int, edges: Iterable[str]) -> dict | None:
        """The norms that set the delayed edges' widths, and their largest; None
        where no edge drawn is a traced node."""
        picked = [self.nodes.index(n) for n in set(edges) if n in self.nodes]
        if not picked:
            return None
        norms = self.node_stats(row, "norm")
        widths = norms[:, picked]
        widths = widths[np.isfinite(widths)]
        top = float(widths.max()) if widths.size else 1.0
        return {"values": encode(norms), "max": top or 1.0}

    def panels(self, row: int) -> dict:
        """Data of the panels beyond trajectories and heatmap: `{panel name: JSON}`.

        Each key is a panel of `explorer.js`'s `PANELS` table, which shows its
        tab only when its data is here: "portrait" (`Portrait.panel`) and
        "training" (`training_panel`: Keras's logs, with a `TraceCallback`).
        """
        out = {} if self.portrait is None else {"portrait": self.portrait.panel(row)}
        training = training_panel(self.logs, self.epochs)
        if training is not None:
            out["training"] = training
        track = self.track(row)
        if track:
            out["track"] = track
        return out

    def track(self, row: int) -> list:
        """The input / target / output track above the trajectories, for sample row
        `row`: `[{name, role, units, epochs, values}]`, `values` `(E, T, U)` with
        `epochs` (outputs change with training), else `(1, T, U)`; at most
        `TRACK_UNITS` units each."""
        inputs = getattr(getattr(self.model, "graph", None), "input_names", [])
        outputs = list(getattr(self.model, "output_names", []))
        out = []
        for role, names in (("input", inputs), ("output", outputs)):
            for name in names:
                if name in self.nodes:
                    a = self.arrays["value"][name][:, row, :, :TRACK_UNITS]
                    a = a[:1] if role == "input" else a
                    out.append(_track(name, role, a, role == "output"))
                if role == "output" and name in self.targets:
                    rows = self.targets[name]
                    sample = self.samples[row]
                    if 0 <= sample < len(rows):
                        a = np.asarray(rows[sample], "float32").reshape(self.length, -1)
                        out.append(_track(name, "target", a[None, :, :TRACK_UNITS], False))
        return out


def _track(name: str, role: str, values: np.ndarray, epochs: bool) -> dict:
    return {
        "name": name,
        "role": role,
        "units": int(values.shape[-1]),
        "epochs": epochs,
        "values": encode(values),
    }


def targets_by_output(model, targets) -> dict:
    """`{output name: array (sample, t, ...)}` from what `fit` takes as `y`: one array
    for a single output, or a dict by output name (names of other outputs are refused)."""
    if targets is None:
        return {}
    outputs = list(getattr(model, "output_names", []))
    if not isinstance(targets, Mapping):
        if len(outputs) != 1:
            raise ValueError(
                f"fbx.explore: targets for a model with outputs {outputs} is a dict "
                f"{{output name: array (samples, T, ...)}}. Received: {type(targets).__name__}"
            )
        targets = {outputs[0]: targets}
    unknown = [n for n in targets if n not in outputs]
    if unknown:
        raise ValueError(
            f"fbx.explore: targets name outputs of the model, among {outputs}. "
            f"Received: targets for {unknown}"
        )
    return {n: np.asarray(v) for n, v in targets.items()}


# ---------------------------------------------------------- offline pages
PAGE_BUDGET = 2_000_000  # bytes of the data a saved page holds, by default
_PER_SAMPLE = ("colour", "size", "panels")  # what depends on the sample only
_PER_NODE = ("node", "sample", "units", "title", "runs")  # on the node and the sample


@dataclass
class OfflinePages:
    """Every page a saved explorer can switch to, with no kernel (see `explorer.js`).

    Attributes:
        state: `{"nodes", "samples", "node", "sample", "common", "by_sample":
            {sample: {colour, size, panels}}, "by_node": {node: {sample: {node,
            sample, units, title, runs}}}, "graphs": {node: graph}}`; a page is
            `common | by_sample[s] | by_node[n][s]`, and `graphs[n]` its drawing.
        nodes, samples: what was kept, in order.
        left_out: `(nodes, samples)` that did not fit the budget.
        size: bytes of `state` as JSON.
    """

    state: dict
    nodes: list
    samples: list
    left_out: tuple
    size: int


def _size(value) -> int:
    return len(json.dumps(value))


def offline_pages(
    data: ExplorerData,
    nodes: list,
    samples: list,
    graph: Callable[[str], dict],
    *,
    budget: int,
    **page,
) -> OfflinePages:
    """The pages of `nodes` x `samples` (the first of each, the one shown, always kept),
    as many as fit in `budget` bytes: every node for the samples kept, samples in order
    while they fit; where one sample with every node is too much, nodes in order.

    `graph(node)` draws the graph for a node; `page` holds `mode`, `by`, `unit` and
    `edges` as `ExplorerData.page` takes them.
    """
    first = data.page(nodes[0], samples[0], **page)
    common = {k: v for k, v in first.items() if k not in _PER_SAMPLE + _PER_NODE}
    state = {"common": common, "by_sample": {}, "by_node": {}, "graphs": {}}
    used = _size(state)
    node_cost = {}  # a node's graph and first page: what keeping it costs at least
    kept_nodes, kept_samples = [], []
    for node in nodes:
        part = data.page(node, samples[0], **page) if node != nodes[0] else first
        drawing = graph(node)
        cost = _size(drawing) + _size({k: part[k] for k in _PER_NODE})
        if kept_nodes and used + cost + _size(first["colour"]) * 2 > budget:
            break
        node_cost[node] = part
        state["graphs"][node] = drawing
        kept_nodes.append(node)
        used += cost
    for sample in samples:
        parts = {
            n: (node_cost[n] if sample == samples[0] else data.page(n, sample, **page))
            for n in kept_nodes
        }
        shared = {k: parts[kept_nodes[0]][k] for k in _PER_SAMPLE}
        cost = _size(shared) + sum(_size({k: p[k] for k in _PER_NODE}) for p in parts.values()) * (
            sample != samples[0]
        )
        if kept_samples and used + cost > budget:
            break
        state["by_sample"][str(sample)] = shared
        for n, p in parts.items():
            state["by_node"].setdefault(n, {})[str(sample)] = {k: p[k] for k in _PER_NODE}
        kept_samples.append(sample)
        used += cost
    state.update(nodes=kept_nodes, samples=kept_samples, node=nodes[0], sample=samples[0])
    left_out = (
        [n for n in nodes if n not in kept_nodes],
        [s for s in samples if s not in kept_samples],
    )
    return OfflinePages(state, kept_nodes, kept_samples, left_out, _size(state))


def add_page(pages: Mapping, page: Mapping, graph: Mapping, options: Mapping, budget: int) -> dict:
    """`pages` (as `OfflinePages.state`, with `options`: the pickers' nodes and samples)
    with `page` and its `graph` added: a new dict, what a notebook keeps of the pages
    explored. A page of other settings (mode, colouring, epochs) starts the pages
    afresh; one that would take them past `budget` bytes is left out."""
    common = {k: v for k, v in page.items() if k not in _PER_SAMPLE + _PER_NODE}
    key = json.dumps([common, page["colour"]["by"]])
    if pages.get("key") != key:
        pages = {"key": key, "common": common, "by_sample": {}, "by_node": {}, "graphs": {}}
    node, sample = page["node"], str(page["sample"])
    out = {
        **pages,
        "options": dict(options),
        "by_sample": {**pages["by_sample"], sample: {k: page[k] for k in _PER_SAMPLE}},
        "by_node": {
            **pages["by_node"],
            node: {**pages["by_node"].get(node, {}), sample: {k: page[k] for k in _PER_NODE}},
        },
        "graphs": {**pages["graphs"], node: dict(graph)},
    }
    return out if _size(out) <= budget or len(out["by_node"]) == 1 else dict(pages)
