"""Training: learning through the feedback, XLA, Dropout/BatchNorm, a compiled loop."""

import keras
import numpy as np
import pytest

import fbexplorer as fbx


def running_sum_net():
    x = keras.Input((1,), name="x")
    total = fbx.Feedback((1,), name="total")
    y = keras.layers.Dense(1, name="acc")(keras.layers.Concatenate()([x, total]))
    return fbx.FeedbackModel(x, y, feedback={"total": y})


@pytest.mark.slow
@pytest.mark.parametrize("jit", [False, True])
def test_learns_running_sum_through_feedback(rng, jit):
    X = rng.uniform(-1, 1, size=(512, 10, 1)).astype("float32")
    Y = np.cumsum(X, axis=1)
    net = running_sum_net()
    net.compile(keras.optimizers.Adam(0.03), "mse", jit_compile=jit)
    net.fit(X, Y, batch_size=64, epochs=60, verbose=0)
    Xt = rng.uniform(-1, 1, size=(128, 10, 1)).astype("float32")
    mse = float(np.mean((net.predict(Xt, verbose=0) - np.cumsum(Xt, 1)) ** 2))
    assert mse < 1e-3, mse


def test_the_loop_is_traced_not_run_in_python(rng):
    """The step graph runs a constant number of times (traces), whatever T is:
    in fit, predict and direct calls alike."""
    counts = []
    for T in (20, 80):
        net = running_sum_net()
        calls = []

        def counted(*args, _original=net.step_model.call, _calls=calls, **kwargs):
            _calls.append(1)
            return _original(*args, **kwargs)

        net.step_model.call = counted
        X = rng.normal(size=(16, T, 1)).astype("float32")
        net.compile("sgd", "mse")
        net.fit(X, X, batch_size=8, epochs=2, verbose=0)
        net.predict(X, batch_size=8, verbose=0)
        net(X)  # a direct call compiles its loop too
        net(X[:, : T // 2])
        counts.append(len(calls))
    assert counts[0] == counts[1] and counts[0] < 10, counts


def dropout_net(rate=0.5):
    x = keras.Input((8,), name="x")
    prev = fbx.Feedback((8,), name="prev")
    h = keras.layers.Dense(8, activation="tanh", name="h")(keras.layers.Add()([x, prev]))
    d = keras.layers.Dropout(rate, name="drop")(h)
    return fbx.FeedbackModel(x, d, feedback={"prev": d})


def test_dropout_honours_training_flag(rng):
    net = dropout_net()
    X = rng.normal(size=(4, 6, 8)).astype("float32")
    infer = np.asarray(net(X, training=False))
    w, b = net.step_model.get_layer("h").get_weights()
    v, expected = np.zeros((4, 8)), []
    for t in range(6):
        v = np.tanh((X[:, t] + v) @ w + b)
        expected.append(v)
    np.testing.assert_allclose(infer, np.stack(expected, 1), atol=1e-5)
    train = np.asarray(net(X, training=True))
    zeros = train == 0.0
    assert 0.3 < zeros.mean() < 0.7
    # A fresh mask each step, not one mask repeated over time.
    assert not (zeros[:, 0] == zeros[:, 1]).all()


def test_batch_normalization_inside_the_loop(rng):
    x = keras.Input((3,), name="x")
    prev = fbx.Feedback((3,), name="prev")
    bn = keras.layers.BatchNormalization(momentum=0.9, name="bn")
    h = bn(keras.layers.Add()([x, prev]))
    net = fbx.FeedbackModel(x, h, feedback={"prev": h})
    X = rng.normal(loc=2.0, size=(16, 5, 3)).astype("float32")
    out = np.asarray(net(X, training=True))

    # numpy: batch statistics per step, one moving-average update per step.
    mm, mv = np.zeros(3), np.ones(3)
    v, expected = np.zeros((16, 3)), []
    for t in range(5):
        z = X[:, t] + v
        mean, var = z.mean(0), z.var(0)
        v = (z - mean) / np.sqrt(var + bn.epsilon)
        mm, mv = 0.9 * mm + 0.1 * mean, 0.9 * mv + 0.1 * var
        expected.append(v)
    np.testing.assert_allclose(out, np.stack(expected, 1), atol=1e-4)
    np.testing.assert_allclose(np.asarray(bn.moving_mean), mm, atol=1e-5)
    np.testing.assert_allclose(np.asarray(bn.moving_variance), mv, atol=1e-5)

    # Inference uses the moving statistics and updates nothing.
    infer = np.asarray(net(X, training=False))
    v = np.zeros((16, 3))
    for t in range(5):
        v = (X[:, t] + v - mm) / np.sqrt(mv + bn.epsilon)
    np.testing.assert_allclose(infer[:, -1], v, atol=1e-4)
    np.testing.assert_allclose(np.asarray(bn.moving_mean), mm, atol=1e-5)


@pytest.mark.slow
def test_fit_with_xla_and_nested_cell(rng):
    x = keras.Input((2,), name="x")
    h = fbx.cell(keras.layers.LSTMCell(8, name="lstm"))(x)
    y = keras.layers.Dense(1)(h)
    net = fbx.FeedbackModel(x, y, return_sequences=False)
    net.compile("adam", "mse", jit_compile=True)
    X = rng.normal(size=(32, 12, 2)).astype("float32")
    Y = X.sum(axis=(1, 2))[:, None]
    losses = net.fit(X, Y, epochs=15, verbose=0).history["loss"]
    assert losses[-1] < losses[0]


@pytest.mark.slow
def test_fit_a_constants_only_model(rng):
    """An input seen for several steps (as an image is), refined by feedback."""
    img = keras.Input((4,), name="img")
    prev = fbx.Feedback((3,), name="prev")
    h = keras.layers.Dense(3, activation="tanh")(keras.layers.Concatenate()([img, prev]))
    y = keras.layers.Dense(1)(h)
    net = fbx.FeedbackModel([], y, constants=[img], feedback={"prev": h}, steps=4)
    X = rng.normal(size=(64, 4)).astype("float32")
    Y = np.repeat(X.sum(1, keepdims=True)[:, None], 4, axis=1)  # (64, 4, 1)
    net.compile(keras.optimizers.Adam(0.05), "mse")
    losses = net.fit(X, Y, epochs=30, verbose=0).history["loss"]
    assert losses[-1] < 0.5 * losses[0]
    assert net.predict(X, verbose=0).shape == (64, 4, 1)


def test_cell_dropout_matches_keras_rnn(rng):
    """LSTMCell(dropout=..., recurrent_dropout=...) inside the loop behaves as
    in keras.layers.RNN: one mask per sequence, training flag honoured."""
    cell = keras.layers.LSTMCell(4, dropout=0.5, recurrent_dropout=0.5, name="lstm")
    x = keras.Input((3,), name="x")
    net = fbx.FeedbackModel(x, fbx.cell(cell)(x))
    ref = keras.layers.RNN(cell, return_sequences=True)

    # The same masks for both: a fixed pattern per feature (and per gate, as
    # LSTMCell asks for one mask per gate), scaled as Keras does.
    def fixed_mask(step_input, rate):
        width = step_input.shape[-1]

        def mask(k):
            keep = (np.arange(width) + k) % 2 == 0
            return keras.ops.ones_like(step_input) * np.where(keep, 1 / (1 - rate), 0.0)

        count = getattr(cell, "dropout_mask_count", None)
        return mask(0) if count is None else [mask(k) for k in range(count)]

    cell._create_dropout_mask = fixed_mask
    X = rng.normal(size=(2, 6, 3)).astype("float32")
    train = np.asarray(net(X, training=True))
    np.testing.assert_allclose(train, np.asarray(ref(X, training=True)), atol=1e-5)
    infer = np.asarray(net(X, training=False))
    np.testing.assert_allclose(infer, np.asarray(ref(X, training=False)), atol=1e-5)
    assert np.abs(train - infer).max() > 1e-3
    del cell._create_dropout_mask
    net.compile("adam", "mse")  # and it trains, call after call
    net.fit(X, np.zeros((2, 6, 4)), epochs=2, verbose=0)
    assert np.isfinite(np.asarray(net(X, training=True))).all()
