"""LSTM, GRU and SimpleRNN written as Dense layers plus Feedback equal Keras's own."""

import keras
import numpy as np
from keras import ops

import fbexplorer as fbx

B, T, D, U = 3, 9, 4, 6


def _keras_seq(layer, x):
    return np.asarray(layer(x))


def test_lstm_as_feedback_graph_equals_keras_lstm(rng):
    x_seq = rng.normal(size=(B, T, D)).astype("float32")
    ref = keras.layers.LSTM(U, return_sequences=True)
    expected = _keras_seq(ref, x_seq)
    kernel, recurrent, bias = ref.get_weights()

    x = keras.Input((D,), name="x")
    h_prev = fbx.Feedback((U,), name="h")
    c_prev = fbx.Feedback((U,), name="c")
    zx = keras.layers.Dense(4 * U, name="kernel")(x)
    zh = keras.layers.Dense(4 * U, use_bias=False, name="recurrent")(h_prev)
    i, f, g, o = ops.split(zx + zh, 4, axis=-1)
    c = ops.sigmoid(f) * c_prev + ops.sigmoid(i) * ops.tanh(g)
    h = ops.sigmoid(o) * ops.tanh(c)
    net = fbx.FeedbackModel(x, h, feedback={"h": h, "c": c})
    net.step_model.get_layer("kernel").set_weights([kernel, bias])
    net.step_model.get_layer("recurrent").set_weights([recurrent])

    np.testing.assert_allclose(np.asarray(net(x_seq)), expected, atol=1e-5)


def test_gru_reset_after_as_feedback_graph_equals_keras_gru(rng):
    x_seq = rng.normal(size=(B, T, D)).astype("float32")
    ref = keras.layers.GRU(U, return_sequences=True, reset_after=True)
    expected = _keras_seq(ref, x_seq)
    kernel, recurrent, bias = ref.get_weights()  # bias: (2, 3U)

    x = keras.Input((D,), name="x")
    h_prev = fbx.Feedback((U,), name="h")
    mx = keras.layers.Dense(3 * U, name="kernel")(x)
    mh = keras.layers.Dense(3 * U, name="recurrent")(h_prev)
    xz, xr, xh = ops.split(mx, 3, axis=-1)
    hz, hr, hh = ops.split(mh, 3, axis=-1)
    z = ops.sigmoid(xz + hz)
    r = ops.sigmoid(xr + hr)
    cand = ops.tanh(xh + r * hh)
    h = z * h_prev + (1.0 - z) * cand
    net = fbx.FeedbackModel(x, h, feedback={"h": h})
    net.step_model.get_layer("kernel").set_weights([kernel, bias[0]])
    net.step_model.get_layer("recurrent").set_weights([recurrent, bias[1]])

    np.testing.assert_allclose(np.asarray(net(x_seq)), expected, atol=1e-5)


def test_simple_rnn_as_feedback_graph_equals_keras_simple_rnn(rng):
    x_seq = rng.normal(size=(B, T, D)).astype("float32")
    ref = keras.layers.SimpleRNN(U, return_sequences=True)
    expected = _keras_seq(ref, x_seq)
    kernel, recurrent, bias = ref.get_weights()

    x = keras.Input((D,), name="x")
    h_prev = fbx.Feedback((U,), name="h")
    pre = keras.layers.Add()(
        [
            keras.layers.Dense(U, name="kernel")(x),
            keras.layers.Dense(U, use_bias=False, name="recurrent")(h_prev),
        ]
    )
    h = keras.layers.Activation("tanh")(pre)
    net = fbx.FeedbackModel(x, h, feedback={"h": h})
    net.step_model.get_layer("kernel").set_weights([kernel, bias])
    net.step_model.get_layer("recurrent").set_weights([recurrent])

    np.testing.assert_allclose(np.asarray(net(x_seq)), expected, atol=1e-5)


def test_nested_lstm_cell_equals_keras_lstm_layer(rng):
    x_seq = rng.normal(size=(B, T, D)).astype("float32")
    x = keras.Input((D,), name="x")
    h = fbx.cell(keras.layers.LSTMCell(U, name="lstm"))(x)
    y = keras.layers.Dense(2, name="head")(h)
    net = fbx.FeedbackModel(x, y, return_state=True)
    assert net.feedback_names == ["lstm/h", "lstm/c"]

    ref = keras.layers.LSTM(U, return_sequences=True, return_state=True)
    ref(x_seq)
    ref.set_weights(net.step_model.get_layer("lstm").get_weights())
    seq, h_last, c_last = ref(x_seq)
    head = net.step_model.get_layer("head")
    expected = np.asarray(head(seq))

    out, states = net(x_seq)
    np.testing.assert_allclose(np.asarray(out), expected, atol=1e-5)
    np.testing.assert_allclose(np.asarray(states["lstm/h"]), np.asarray(h_last), atol=1e-5)
    np.testing.assert_allclose(np.asarray(states["lstm/c"]), np.asarray(c_last), atol=1e-5)


def test_nested_gru_cell_inside_outer_feedback_loop(rng):
    """A GRUCell whose input includes the network's own output from t-1."""
    x_seq = rng.normal(size=(B, T, D)).astype("float32")
    x = keras.Input((D,), name="x")
    y_prev = fbx.Feedback((2,), name="y")
    gru = keras.layers.GRUCell(U, name="gru")
    h = fbx.cell(gru)(keras.layers.Concatenate()([x, y_prev]))
    head = keras.layers.Dense(2, name="head")
    y = head(h)
    net = fbx.FeedbackModel(x, y, feedback={"y": y})
    got = np.asarray(net(x_seq))

    # Reference: Keras's cell applied by hand, step by step.
    h_t = np.zeros((B, U), "float32")
    y_t = np.zeros((B, 2), "float32")
    expected = []
    for t in range(T):
        inp = np.concatenate([x_seq[:, t], y_t], -1)
        out, [h_t] = gru(inp, [h_t])
        y_t = np.asarray(head(out))
        h_t = np.asarray(h_t)
        expected.append(y_t)
    np.testing.assert_allclose(got, np.stack(expected, 1), atol=1e-5)


def test_stacked_cells_equal_keras_stacked_rnn(rng):
    """StackedRNNCells (nested state_size) inside the loop."""
    x_seq = rng.normal(size=(B, T, D)).astype("float32")
    stacked = keras.layers.StackedRNNCells(
        [keras.layers.LSTMCell(U), keras.layers.GRUCell(3)], name="stack"
    )
    x = keras.Input((D,), name="x")
    net = fbx.FeedbackModel(x, fbx.cell(stacked)(x), return_state=True)
    assert net.feedback_names == ["stack/state0", "stack/state1", "stack/state2"]
    ref = keras.layers.RNN(stacked, return_sequences=True)  # the same cells and weights
    out, states = net(x_seq)
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref(x_seq)), atol=1e-5)
    assert [states[n].shape for n in net.feedback_names] == [(B, U), (B, U), (B, 3)]
