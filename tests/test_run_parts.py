"""The parts of one run (fbexplorer/_run.py): a run that raises leaves no
cell dropout mask behind; the loop's layout and chunks."""

import keras
import numpy as np
import pytest

import fbexplorer as fbx


class Boom(keras.layers.Layer):
    """Raises in the loop when `armed` (after the run made its dropout masks)."""

    armed = False

    def call(self, x):
        if self.armed:
            raise RuntimeError("boom")
        return x


def test_a_loop_that_raises_leaves_no_dropout_mask_on_the_cell():
    x = keras.Input((2,), name="x")
    cell = keras.layers.LSTMCell(3, dropout=0.5, recurrent_dropout=0.5, name="lstm")
    boom = Boom(name="boom")
    net = fbx.FeedbackModel(x, boom(fbx.cell(cell)(x)), hoist=False)
    X = np.ones((2, 4, 2), "float32")
    Boom.armed = True
    try:
        with pytest.raises(RuntimeError, match="boom"):
            net(X, training=True)
    finally:
        Boom.armed = False
    # The masks belonged to the failed run's graph: none is left for the next.
    assert cell._dropout_mask is None and cell._recurrent_dropout_mask is None
    out = np.asarray(net(X, training=True))
    assert out.shape == (2, 4, 3) and np.isfinite(out).all()
