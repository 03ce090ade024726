"""Training you can watch: trace probe inputs while a feedback model trains.

`TraceCallback(inputs)` is a Keras callback: it traces the model on the same
probe inputs (`fbx.trace`) before training and after every `every`-th epoch,
and `fbx.explore(callback)` plays the traces with an epoch slider.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import keras
import numpy as np
import pandas as pd

__all__ = ["TraceCallback"]


class TraceCallback(keras.callbacks.Callback):
    """Trace probe inputs at the end of each epoch, to watch the dynamics form.

    The model is traced (`fbx.trace`, inference mode) on `inputs` when
    training starts (epoch 0: the untrained model), after every `every`-th
    epoch, and after the last epoch. Epochs count the epochs completed,
    across calls to `fit`.

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
        from fbexplorer.trace import trace

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
        if self._epochs not in self.frames:
            self._record()

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
        if not self.frames:
            raise ValueError(
                "fbx.TraceCallback has recorded nothing yet. Expected a fit with the callback "
                "first: model.fit(..., callbacks=[callback]). Received: a callback never used in fit."
            )
        parts = []
        for epoch, df in self.frames.items():
            df = df.copy()
            df.insert(0, "epoch", np.int32(epoch))
            parts.append(df)
        return pd.concat(parts, ignore_index=True)
