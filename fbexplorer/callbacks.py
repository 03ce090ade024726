"""Training you can watch: trace probe inputs while a feedback model trains.

`TraceCallback(inputs)` is a Keras callback: it traces the model on the same
probe inputs (`fbx.trace`) before training and after every `every`-th epoch,
and `fbx.explore(callback)` plays the traces with an epoch slider. When
training starts it estimates the memory its traces will take over the fit's
epochs (`fbexplorer.memory`) and refuses, before the first epoch, above the
budget. It keeps Keras's logs (loss and metrics) of every epoch and, where
asked (`fixed_points=`, `attractors=`), the fixed points or the attractors of
each recorded epoch; an explorer shown before `fit` listens (`listen`) and
shows each recorded epoch while `fit` runs.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Mapping, Sequence

import keras
import numpy as np
import pandas as pd

from fbexplorer.memory import PER_VALUE, check_memory, values_detail

__all__ = ["CENSUS_KINDS", "TraceCallback", "checked_choice", "join_frames", "recorded_rows"]

CENSUS_KINDS = ("fixed_points", "attractors")  # what each recorded epoch can be searched for


class TraceCallback(keras.callbacks.Callback):
    """Trace probe inputs at the end of each epoch, to watch the dynamics form.

    The model is traced (`fbx.trace`, inference mode) on `inputs` when
    training starts (epoch 0: the untrained model), after every `every`-th
    epoch, and after the last epoch. Epochs count the epochs completed,
    across calls to `fit`. Every trace is kept, so the recording grows with
    the epochs: when a fit starts, the callback estimates what its traces
    will take by the fit's last epoch and, above the memory budget
    (`fbx.set_memory_budget`), stops the fit before its first epoch with
    one line saying what to pass (`every=`, `samples=`, `nodes=`).

    Args:
        inputs: the probe inputs, as for a call (an array, a list or a dict).
        every: trace after every `every`-th epoch (an integer >= 1).
        nodes: node names, as for `fbx.trace` (default: every node).
        samples: as for `fbx.trace` (default: the whole probe batch).
        initial_state: `{feedback name: value}`, as for a call.
        fixed_points: settings of `fbx.fixed_points`, `{"inputs": held inputs,
            **keywords}`, to search each recorded epoch's fixed points with
            the weights of that epoch (None: no search).
        attractors: settings of `fbx.attractors`, likewise (None: no census).

    Attributes:
        frames: `{epoch: trace frame}`, in the order recorded.
        frame: every trace in one frame, with an `epoch` column first.
        logs: `{epoch: {name: value}}`, Keras's logs at the end of each epoch
            (loss and metrics), every epoch, recorded or not.
        census: `{epoch: {"fixed_points": FixedPoints, "attractors":
            Attractors}}` for each recorded epoch, as asked.
        seconds: `{epoch: (trace s, census s)}`, what each recording took.

    Recording (with an explorer listening) adds to an epoch the trace, the
    search where asked, and the update of the widget; benchmarks/live.py
    measures them.

    Example:
        >>> watch = fbx.TraceCallback(X[:2], every=2)
        >>> ex = fbx.explore(watch)  # doctest: +SKIP
        >>> net.fit(X, Y, epochs=20, callbacks=[watch])  # doctest: +SKIP
        >>> # the explorer, shown before fit, showed each recorded epoch as it came
    """

    def __init__(
        self,
        inputs,
        every: int = 1,
        nodes: str | Sequence[str] | None = None,
        *,
        samples: int | Sequence[int] | None = None,
        initial_state: Mapping | None = None,
        fixed_points: Mapping | None = None,
        attractors: Mapping | None = None,
    ):
        super().__init__()
        if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
            raise ValueError(
                f"fbx.TraceCallback: `every` is a number of epochs, an integer >= 1. "
                f"Received: every={every!r}"
            )
        self.inputs = inputs
        self.every = int(every)
        self.nodes = nodes
        self.samples = samples
        self.initial_state = initial_state
        self.searches = {
            kind: census_settings(kind, settings)
            for kind, settings in zip(CENSUS_KINDS, (fixed_points, attractors))
            if settings is not None
        }
        self.frames: dict[int, pd.DataFrame] = {}
        self.logs: dict[int, dict] = {}
        self.census: dict[int, dict] = {}
        self.seconds: dict[int, tuple[float, float]] = {}
        self._listeners: list[Callable] = []
        self._epochs = 0  # epochs completed, across calls to fit

    def listen(self, listener: Callable) -> None:
        """Call `listener(epoch)` after each epoch recorded (what a live explorer does)."""
        if listener not in self._listeners:
            self._listeners.append(listener)

    def unlisten(self, listener: Callable) -> None:
        """Stop calling `listener`."""
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _record(self):
        from fbexplorer.tracing import trace

        start = time.perf_counter()
        self.frames[self._epochs] = trace(
            self.model,
            self.inputs,
            self.nodes,
            samples=self.samples,
            initial_state=self.initial_state,
        )
        traced = time.perf_counter()
        if self.searches:
            self.census[self._epochs] = self._search()
        self.seconds[self._epochs] = (traced - start, time.perf_counter() - traced)
        for listener in list(self._listeners):
            listener(self._epochs)

    def _search(self) -> dict:
        """The fixed points and attractors asked for, with the weights of now."""
        from fbexplorer.census import attractors
        from fbexplorer.fixed_point_search import fixed_points

        found = {}
        for kind, settings in self.searches.items():
            search = fixed_points if kind == "fixed_points" else attractors
            keywords = dict(settings)
            found[kind] = search(self.model, keywords.pop("inputs"), **keywords)
        return found

    def on_train_begin(self, logs=None):
        from fbexplorer.engine import FeedbackModel

        if not isinstance(self.model, FeedbackModel):
            raise ValueError(
                f"fbx.TraceCallback traces a FeedbackModel. Received: a "
                f"{type(self.model).__name__} in fit. Pass the callback to a FeedbackModel's fit."
            )
        self._check_memory(int((self.params or {}).get("epochs") or 1))
        if self._epochs not in self.frames:
            self._record()

    def _traces_to_come(self, epochs: int) -> int:
        """How many traces a fit of `epochs` epochs adds: at its start, every
        `every`-th epoch, and at its end."""
        first, last = self._epochs, self._epochs + epochs
        count = int(first not in self.frames)
        count += last // self.every - first // self.every
        return count + int(last % self.every != 0)

    def _check_memory(self, epochs: int):
        """Refuse a fit whose traces would take more than the memory budget."""
        from fbexplorer.recording import planned_size, resolve_nodes

        names = resolve_nodes(self.model, self.nodes, what="TraceCallback")
        size = planned_size(
            self.model, self.inputs, names, samples=self.samples, what="TraceCallback"
        )
        per_trace = size[0] * size[1] * size[2]
        kept = sum(len(df) for df in self.frames.values())
        traces = self._traces_to_come(epochs)
        need = PER_VALUE["recording"] * (kept + traces * per_trace)
        need += PER_VALUE["trace"] * per_trace  # the trace being made
        detail = f"{traces} traces over {epochs} epochs, each of " + values_detail(
            *size, len(names)
        )
        if kept:
            detail += f", besides the {len(self.frames)} kept"
        remedy = f"Pass every= (now {self.every}), samples= or nodes= to record less, or fit fewer epochs"
        check_memory("fbx.TraceCallback", need, detail, remedy)

    def on_epoch_end(self, epoch, logs=None):
        self._epochs += 1
        self.logs[self._epochs] = {k: _number(v) for k, v in (logs or {}).items()}
        if self._epochs % self.every == 0:
            self._record()

    def on_train_end(self, logs=None):
        if self._epochs not in self.frames:
            self._record()

    @property
    def frame(self) -> pd.DataFrame:
        """Every trace in one frame: `fbx.trace`'s columns with `epoch` (int32) first."""
        return join_frames(self.frames)


def _number(value):
    """A log value as a Python float (Keras hands scalars, arrays or tensors)."""
    try:
        return float(np.asarray(value))
    except (TypeError, ValueError):
        return value


def census_settings(kind: str, settings) -> dict:
    """`TraceCallback`'s `fixed_points=` or `attractors=`, checked: a mapping with
    the held `inputs` and keywords of `fbx.fixed_points` / `fbx.attractors`."""
    from fbexplorer.census import attractors
    from fbexplorer.fixed_point_search import fixed_points

    search = fixed_points if kind == "fixed_points" else attractors
    known = [n for n in inspect.signature(search).parameters if n not in ("model", "inputs")]
    unknown = (
        [k for k in settings if k not in [*known, "inputs"]]
        if isinstance(settings, Mapping)
        else []
    )
    if not isinstance(settings, Mapping) or "inputs" not in settings or unknown:
        got = (
            f"{kind}={settings!r}"
            if not isinstance(settings, Mapping)
            else (f"{kind} with the keys {sorted(settings)}")
        )
        raise ValueError(
            f"fbx.TraceCallback: `{kind}` holds the settings of fbx.{kind} for each recorded "
            f"epoch: a dict with 'inputs' (the held inputs) and keywords among {known}. "
            f"Received: {got}"
        )
    return dict(settings)


def join_frames(frames: Mapping, rows: list | None = None) -> pd.DataFrame:
    """The traces `{epoch: frame}` in one frame with an `epoch` column first;
    `rows` (from `recorded_rows`) keeps some rows of each."""
    if not frames:
        raise ValueError(
            "fbx.TraceCallback has recorded nothing yet. Expected a fit with the callback "
            "first: model.fit(..., callbacks=[callback]). Received: a callback never used in fit."
        )
    rows = rows or [None] * len(frames)
    parts = [df if keep is None else df[keep] for df, keep in zip(frames.values(), rows)]
    lengths = [len(df) for df in parts]
    out = pd.concat(parts, ignore_index=True)
    del parts
    out.insert(0, "epoch", np.repeat(np.asarray(list(frames), np.int32), lengths))
    if any(keep is not None for keep in rows):
        out["node"] = out["node"].cat.remove_unused_categories()
    return out


def recorded_rows(frames: Mapping, nodes=None, samples=None) -> list:
    """Per frame, the boolean rows of the chosen nodes and samples, as
    `fbx.explore(callback, nodes=..., samples=...)` shows them: `nodes` a
    name or list of names, `samples` a count of leading recorded samples or
    a list of sample indices. None where every row is kept."""
    if not frames:
        return []
    if nodes is None and samples is None:
        return [None] * len(frames)
    first = next(iter(frames.values()))
    known = [str(n) for n in first["node"].cat.categories]
    ids = sorted(int(s) for s in pd.unique(first["sample"]))
    nodes, samples = checked_choice(
        nodes, samples, known, ids, what="fbx.explore", holder="the TraceCallback recorded"
    )
    rows = []
    for df in frames.values():
        keep = np.ones(len(df), bool)
        if nodes is not None:
            keep &= df["node"].isin(nodes).to_numpy()
        if samples is not None:
            keep &= df["sample"].isin(samples).to_numpy()
        rows.append(keep)
    return rows


def checked_choice(nodes, samples, known: list, ids: list, *, what: str, holder: str):
    """`(nodes, samples)` as lists (None where not given), checked against the
    `known` nodes and the sample `ids`: `nodes` a name or list of names,
    `samples` a count of leading samples or a list of sample indices. `holder`
    names what holds them in the message ("the TraceCallback recorded")."""
    if nodes is not None:
        nodes = [nodes] if isinstance(nodes, str) else list(nodes)
        unknown = [n for n in nodes if n not in known] or ([] if nodes else [""])
        if unknown:
            raise ValueError(
                f"{what}: {holder} no node '{unknown[0]}'. Expected "
                f"nodes among {known}. Received: nodes={nodes!r}"
            )
    if samples is not None:
        given = samples
        if isinstance(samples, (int, np.integer)) and not isinstance(samples, bool):
            samples = ids[: int(samples)] if 1 <= samples <= len(ids) else []
        samples = np.asarray(samples).reshape(-1).tolist()
        if not samples or any(not isinstance(s, int) or s not in ids for s in samples):
            raise ValueError(
                f"{what}: {holder} the samples {ids}; `samples` is a "
                f"number of them (1 to {len(ids)}) or a list of some. Received: "
                f"samples={given!r}"
            )
    return nodes, samples
