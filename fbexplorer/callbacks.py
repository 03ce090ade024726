"""Training you can watch: trace probe inputs while a feedback model trains.

`TraceCallback(inputs)` is a Keras callback: it traces the model on the same
probe inputs (`fbx.trace`) before training and after every `every`-th epoch,
and `fbx.explore(callback)` plays the traces with an epoch slider. When
training starts it estimates the memory its traces will take over the fit's
epochs (`fbexplorer.memory`) and refuses, before the first epoch, above the
budget.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import keras
import numpy as np
import pandas as pd

from fbexplorer.memory import PER_VALUE, check_memory, values_detail

__all__ = ["TraceCallback", "join_frames", "recorded_rows"]


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

    Attributes:
        frames: `{epoch: trace frame}`, in the order recorded.
        frame: every trace in one frame, with an `epoch` column first.

    Example:
        >>> watch = fbx.TraceCallback(X[:2], every=2)
        >>> net.fit(X, Y, epochs=20, callbacks=[watch])  # doctest: +SKIP
        >>> fbx.explore(watch)  # doctest: +SKIP
    """

    def __init__(
        self,
        inputs,
        every: int = 1,
        nodes: str | Sequence[str] | None = None,
        *,
        samples: int | Sequence[int] | None = None,
        initial_state: Mapping | None = None,
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
        self.frames: dict[int, pd.DataFrame] = {}
        self._epochs = 0  # epochs completed, across calls to fit

    def _record(self):
        from fbexplorer.tracing import trace

        self.frames[self._epochs] = trace(
            self.model,
            self.inputs,
            self.nodes,
            samples=self.samples,
            initial_state=self.initial_state,
        )

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
        if self._epochs % self.every == 0:
            self._record()

    def on_train_end(self, logs=None):
        if self._epochs not in self.frames:
            self._record()

    @property
    def frame(self) -> pd.DataFrame:
        """Every trace in one frame: `fbx.trace`'s columns with `epoch` (int32) first."""
        return join_frames(self.frames)


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
    if nodes is not None:
        nodes = [nodes] if isinstance(nodes, str) else list(nodes)
        unknown = [n for n in nodes if n not in known] or ([] if nodes else [""])
        if unknown:
            raise ValueError(
                f"fbx.explore: the TraceCallback recorded no node '{unknown[0]}'. Expected "
                f"nodes among {known}. Received: nodes={nodes!r}"
            )
    if samples is not None:
        given = samples
        if isinstance(samples, (int, np.integer)) and not isinstance(samples, bool):
            samples = ids[: int(samples)] if 1 <= samples <= len(ids) else []
        samples = np.asarray(samples).reshape(-1).tolist()
        if not samples or any(not isinstance(s, int) or s not in ids for s in samples):
            raise ValueError(
                f"fbx.explore: the TraceCallback recorded the samples {ids}; `samples` is a "
                f"number of them (1 to {len(ids)}) or a list of some. Received: "
                f"samples={given!r}"
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
