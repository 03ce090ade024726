"""Every combination of mask, go_backwards, unroll, return_sequences and delay
against one numpy reference loop, plus gradients against Keras's own LSTM."""

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

import fbexplorer as fbx

B, T = 3, 6


def build(delay, **kwargs):
    x = keras.Input((2,), name="x")
    fb = fbx.Feedback((3,), name="fb", delay=delay)
    h = keras.layers.Dense(3, activation="tanh", name="h")(keras.layers.Concatenate()([x, fb]))
    y = keras.layers.Dense(1, name="y")(h)
    return fbx.FeedbackModel(x, y, feedback={"fb": h}, **kwargs)


def reference(net, X, mask, delay, backwards, sequences):
    wh, bh = net.step_model.get_layer("h").get_weights()
    wy, by = net.step_model.get_layer("y").get_weights()
    order = range(T - 1, -1, -1) if backwards else range(T)
    out = np.zeros((B, T, 1))
    for i in range(B):
        hist, prev = [np.zeros(3)] * delay, np.zeros(1)
        for k, t in enumerate(order):
            if mask is None or mask[i, t]:
                h = np.tanh(np.concatenate([X[i, t], hist[0]]) @ wh + bh)
                hist = hist[1:] + [h]
                prev = h @ wy + by
            out[i, k] = prev
    return out if sequences else out[:, -1]


CASES = list(itertools.product([False, True], [False, True], [False, True], [False, True], [1, 2]))


@pytest.mark.parametrize("masked,backwards,unroll,sequences,delay", CASES)
def test_combination(rng, masked, backwards, unroll, sequences, delay):
    net = build(delay, go_backwards=backwards, unroll=unroll, return_sequences=sequences)
    X = rng.normal(size=(B, T, 2)).astype("float32")
    mask = None
    if masked:
        mask = np.ones((B, T), bool)
        mask[0, 4:] = False  # trailing padding
        mask[1, :2] = False  # leading padding
        mask[2, 3] = False  # a hole
    got = np.asarray(net(X, mask=mask))
    np.testing.assert_allclose(got, reference(net, X, mask, delay, backwards, sequences), atol=1e-5)


def test_gradients_equal_keras_lstm(rng):
    """Backpropagation through the loop equals Keras's LSTM, weight by weight."""
    U, D = 5, 3
    X = tf.constant(rng.normal(size=(B, T, D)).astype("float32"))
    ref = keras.layers.LSTM(U, return_sequences=True)
    ref(X)
    kernel, recurrent, bias = ref.get_weights()

    x = keras.Input((D,), name="x")
    h_prev = fbx.Feedback((U,), name="h")
    c_prev = fbx.Feedback((U,), name="c")
    z = keras.layers.Dense(4 * U, name="k")(x) + keras.layers.Dense(
        4 * U, use_bias=False, name="r"
    )(h_prev)
    i, f, g, o = ops.split(z, 4, axis=-1)
    c = ops.sigmoid(f) * c_prev + ops.sigmoid(i) * ops.tanh(g)
    h = ops.sigmoid(o) * ops.tanh(c)
    net = fbx.FeedbackModel(x, h, feedback={"h": h, "c": c})
    net.step_model.get_layer("k").set_weights([kernel, bias])
    net.step_model.get_layer("r").set_weights([recurrent])

    target = tf.constant(rng.normal(size=(B, T, U)).astype("float32"))

    def grads(model, variables):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(model(X) - target))
        return tape.gradient(loss, variables)

    gk, gr, gb = grads(ref, ref.trainable_variables)
    k_dense, r_dense = net.step_model.get_layer("k"), net.step_model.get_layer("r")
    fk, fb_, fr = grads(net, [k_dense.kernel, k_dense.bias, r_dense.kernel])
    np.testing.assert_allclose(np.asarray(fk), np.asarray(gk), atol=1e-4)
    np.testing.assert_allclose(np.asarray(fr), np.asarray(gr), atol=1e-4)
    np.testing.assert_allclose(np.asarray(fb_), np.asarray(gb), atol=1e-4)


def test_integer_token_inputs_with_embedding(rng):
    """Per-step integer tokens through an Embedding, with the previous output fed back."""
    tok = keras.Input((), dtype="int32", name="tok")
    prev = fbx.Feedback((4,), name="prev")
    e = keras.layers.Embedding(10, 4, name="emb")(tok)
    h = keras.layers.Dense(4, activation="tanh", name="h")(keras.layers.Add()([e, prev]))
    net = fbx.FeedbackModel(tok, h, feedback={"prev": h})
    toks = rng.integers(0, 10, size=(B, T))
    got = np.asarray(net(toks))
    emb = net.step_model.get_layer("emb").get_weights()[0]
    w, b = net.step_model.get_layer("h").get_weights()
    v, expected = np.zeros((B, 4)), []
    for t in range(T):
        v = np.tanh((emb[toks[:, t]] + v) @ w + b)
        expected.append(v)
    np.testing.assert_allclose(got, np.stack(expected, 1), atol=1e-5)


def test_single_step_and_single_sample(rng):
    net = build(1)
    X = rng.normal(size=(1, 1, 2)).astype("float32")
    np.testing.assert_allclose(np.asarray(net(X)), reference_1(net, X), atol=1e-5)


def reference_1(net, X):
    wh, bh = net.step_model.get_layer("h").get_weights()
    wy, by = net.step_model.get_layer("y").get_weights()
    h = np.tanh(np.concatenate([X[0, 0], np.zeros(3)]) @ wh + bh)
    return (h @ wy + by).reshape(1, 1, 1)
