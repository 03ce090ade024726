"""Keras cells inside the step graph behave as in keras.layers.RNN: their own
initial state, dropout inside StackedRNNCells, and a clear error for a cell
whose state shape is not fixed."""

import keras
import numpy as np
import pytest
from keras import ops

import fbexplorer as fbx


class OnesStartCell(keras.layers.Layer):
    """h_t = tanh(x_t W + h_{t-1}); starts from ones, not zeros."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.state_size = units

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(input_shape[-1], self.units), name="kernel")

    def call(self, inputs, states):
        h = ops.tanh(ops.matmul(inputs, self.kernel) + states[0])
        return h, [h]

    def get_initial_state(self, batch_size=None):
        return [ops.ones((batch_size, self.units), self.compute_dtype)]


def test_cell_starts_from_its_get_initial_state(rng):
    X = rng.normal(size=(2, 5, 3)).astype("float32")
    x = keras.Input((3,), name="x")
    cell = OnesStartCell(4, name="ones")
    net = fbx.FeedbackModel(x, fbx.cell(cell)(x))
    ref = keras.layers.RNN(OnesStartCell(4), return_sequences=True)
    ref(X)
    ref.set_weights(cell.get_weights())
    np.testing.assert_allclose(np.asarray(net(X)), np.asarray(ref(X)), atol=1e-5)
    # An explicit initial value still wins.
    net0 = fbx.FeedbackModel(x, fbx.cell(cell, initial="ones")(x))
    assert np.asarray(net0(X)).shape == (2, 5, 4)


def stacked():
    return keras.layers.StackedRNNCells(
        [
            keras.layers.LSTMCell(4, dropout=0.3, recurrent_dropout=0.2),
            keras.layers.GRUCell(3, dropout=0.25, recurrent_dropout=0.1),
        ]
    )


def test_stacked_cells_with_dropout_as_keras_rnn(rng):
    X = rng.normal(size=(4, 6, 3)).astype("float32")
    x = keras.Input((3,), name="x")
    cells = stacked()
    y = fbx.cell(cells)(x)
    net = fbx.FeedbackModel(x, keras.layers.Dense(1, name="head")(y))
    ref = keras.layers.RNN(stacked(), return_sequences=True)
    ref(X)
    ref.set_weights(cells.get_weights())
    head = net.get_layer("head")
    want = np.asarray(ref(X)) @ head.get_weights()[0] + head.get_weights()[1]
    np.testing.assert_allclose(np.asarray(net(X)), want, atol=1e-5)
    # In training every cell draws one mask per sequence, as keras.layers.RNN does.
    out = np.asarray(net(X, training=True))
    assert out.shape == (4, 6, 1) and np.isfinite(out).all()
    net.compile(keras.optimizers.Adam(0.01), "mse")
    loss = net.fit(X, np.zeros((4, 6, 1)), epochs=2, verbose=0).history["loss"]
    assert np.isfinite(loss).all()


def test_cell_without_fixed_state_shape_is_refused():
    x = keras.Input((5, 5, 2), name="frame")
    from keras.src.layers.rnn.conv_lstm import ConvLSTMCell

    cell = ConvLSTMCell(rank=2, filters=3, kernel_size=3, name="conv_lstm")
    with pytest.raises(ValueError, match=r"fbx.cell\('conv_lstm'\).*state_size=-1"):
        fbx.cell(cell)(x)
