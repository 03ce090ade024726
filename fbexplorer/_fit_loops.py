"""Keras's data loops (`fit`, `predict`, `evaluate` and the `*_on_batch`
methods) for a FeedbackModel, each with the engine's checks first.

Each checks the data against the model (Keras traces its step function for
loosened shapes, so the call's own checks would not see a new feature size)
and fixes a stateful model's batch size, before Keras runs. `FeedbackModel`
takes them from the `CheckedLoops` mixin, ahead of `keras.Model`.
"""

from __future__ import annotations

import warnings

from fbexplorer import _carried_state
from fbexplorer._call_inputs import check_data

__all__ = ["CheckedLoops"]


class CheckedLoops:
    """`keras.Model`'s data loops, the data checked and the carried state
    prepared first (a mixin: `class FeedbackModel(CheckedLoops, keras.Model)`)."""

    def fit(self, x=None, y=None, batch_size=None, *args, **kwargs):
        check_data(self, x, y)
        shuffle = args[5] if len(args) > 5 else kwargs.get("shuffle", True)
        if self.stateful and shuffle and not _carried_state.first_dim(x)[1]:
            warnings.warn(
                f"{self._label()} is stateful, and fit shuffles the samples "
                f"(shuffle=True, the default): each batch then continues the state of "
                f"other sequences than its own. Pass shuffle=False to carry each "
                f"sequence's state into its next batch.",
                stacklevel=2,
            )
        _carried_state.prepare_batches(self, x, batch_size)
        return super().fit(x, y, batch_size, *args, **kwargs)

    def predict(self, x, batch_size=None, *args, **kwargs):
        check_data(self, x)
        _carried_state.prepare_batches(self, x, batch_size)
        return super().predict(x, batch_size, *args, **kwargs)

    def evaluate(self, x=None, y=None, batch_size=None, *args, **kwargs):
        check_data(self, x, y)
        _carried_state.prepare_batches(self, x, batch_size)
        return super().evaluate(x, y, batch_size, *args, **kwargs)

    def train_on_batch(self, x, y=None, *args, **kwargs):
        check_data(self, x, y)
        _carried_state.prepare_batches(self, x, None, whole=True)
        return super().train_on_batch(x, y, *args, **kwargs)

    def test_on_batch(self, x, y=None, *args, **kwargs):
        check_data(self, x, y)
        _carried_state.prepare_batches(self, x, None, whole=True)
        return super().test_on_batch(x, y, *args, **kwargs)

    def predict_on_batch(self, x):
        check_data(self, x)
        _carried_state.prepare_batches(self, x, None, whole=True)
        return super().predict_on_batch(x)
