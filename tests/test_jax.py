"""The engine on the JAX backend.

These tests carry the `jax` marker: they run in `make test`'s second pytest,
`KERAS_BACKEND=jax pytest -m jax` (Keras picks its backend at import), and
tests/conftest.py leaves them out of the TensorFlow run.
"""

import os
import re
import warnings

import keras
import numpy as np
import pytest
from test_error_catalogue import catalogue

import fbexplorer as fbx

pytestmark = pytest.mark.jax


@pytest.fixture(autouse=True)
def _on_jax():
    assert keras.backend.backend() == "jax"
    keras.utils.set_random_seed(0)


def test_forward_and_predict_equal_numpy():
    x = keras.Input((5,), name="x")
    loop = fbx.Feedback((5,), name="loop", delay=2)
    h1 = keras.layers.Dense(5, activation="tanh", name="d1")(keras.layers.Concatenate()([x, loop]))
    d2 = keras.layers.Dense(5, activation="tanh", name="d2")(h1)
    h3 = keras.layers.Dense(5, activation="tanh", name="d3")(d2)
    net = fbx.FeedbackModel(x, h3, feedback={"loop": h3})
    seq = np.random.default_rng(0).normal(size=(3, 8, 5)).astype("float32")
    W = {n: net.step_model.get_layer(n).get_weights() for n in ("d1", "d2", "d3")}

    def d(n, v):
        return np.tanh(v @ W[n][0] + W[n][1])

    hist, ys = [np.zeros((3, 5))] * 2, []
    for t in range(8):
        h = d("d3", d("d2", d("d1", np.concatenate([seq[:, t], hist[0]], -1))))
        ys.append(h)
        hist = hist[1:] + [h]
    np.testing.assert_allclose(np.asarray(net(seq)), np.stack(ys, 1), atol=1e-5)
    np.testing.assert_allclose(net.predict(seq, verbose=0), np.stack(ys, 1), atol=1e-5)


def running_sum():
    xi = keras.Input((1,), name="x")
    total = fbx.Feedback((1,), name="total")
    y = keras.layers.Dense(1)(keras.layers.Concatenate()([xi, total]))
    return xi, y


def test_fit_learns_a_running_sum_and_a_stateful_twin_continues_it():
    xi, y = running_sum()
    acc = fbx.FeedbackModel(xi, y, feedback={"total": y})
    X = np.random.default_rng(1).uniform(-1, 1, size=(256, 10, 1)).astype("float32")
    acc.compile(keras.optimizers.Adam(0.03), "mse")
    loss = acc.fit(X, np.cumsum(X, 1), epochs=40, batch_size=32, verbose=0).history["loss"]
    assert loss[-1] < 1e-3, loss[-1]

    st = fbx.FeedbackModel(xi, y, feedback={"total": y}, stateful=True)
    whole = np.asarray(acc(X[:4]))
    parts = np.concatenate([np.asarray(st(X[:4, :5])), np.asarray(st(X[:4, 5:]))], 1)
    np.testing.assert_allclose(parts, whole, atol=1e-5)


def test_lstm_cell_equals_keras_lstm():
    xi = keras.Input((1,), name="x")
    X = np.random.default_rng(1).uniform(-1, 1, size=(2, 10, 1)).astype("float32")
    c = fbx.cell(keras.layers.LSTMCell(4, name="lstm"))(xi)
    lstm = fbx.FeedbackModel(xi, c)
    ref = keras.layers.LSTM(4, return_sequences=True)
    ref(X)
    ref.set_weights(lstm.step_model.get_layer("lstm").get_weights())
    np.testing.assert_allclose(np.asarray(lstm(X)), np.asarray(ref(X)), atol=1e-5)


def batch_data():
    return np.random.default_rng(2).normal(loc=2.0, size=(16, 5, 3)).astype("float32")


def test_batch_normalization_in_the_loop_in_training():
    xb = keras.Input((3,), name="x")
    pb = fbx.Feedback((3,), name="prev")
    bn = keras.layers.BatchNormalization(momentum=0.9)
    hb = bn(keras.layers.Add()([xb, pb]))
    bnet = fbx.FeedbackModel(xb, hb, feedback={"prev": hb})
    Xb = batch_data()
    out = np.asarray(bnet(Xb, training=True))
    mm, v, expected = np.zeros(3), np.zeros((16, 3)), []
    for t in range(5):
        z = Xb[:, t] + v
        v = (z - z.mean(0)) / np.sqrt(z.var(0) + bn.epsilon)
        mm = 0.9 * mm + 0.1 * z.mean(0)
        expected.append(v)
    np.testing.assert_allclose(out, np.stack(expected, 1), atol=1e-4)
    np.testing.assert_allclose(np.asarray(bn.moving_mean), mm, atol=1e-5)
    bnet.compile("adam", "mse")
    bnet.fit(Xb, Xb, epochs=1, verbose=0)
    assert np.abs(np.asarray(bn.moving_mean) - mm).max() > 1e-4  # fit updated it


def test_dropout_in_the_loop_and_in_a_cell():
    xb = keras.Input((3,), name="x")
    Xb = batch_data()
    d = keras.layers.Dropout(0.5)(keras.layers.Dense(8)(xb))
    dnet = fbx.FeedbackModel(xb, d)
    zeros = np.asarray(dnet(np.ones((32, 4, 3), "float32"), training=True)) == 0
    assert 0.3 < zeros.mean() < 0.7 and not (zeros[:, 0] == zeros[:, 1]).all()
    dnet.compile("adam", "mse")
    assert np.isfinite(dnet.fit(Xb, np.zeros((16, 5, 8)), verbose=0).history["loss"][0])

    cell = keras.layers.LSTMCell(4, dropout=0.5, recurrent_dropout=0.3, name="lstm_dp")
    lnet = fbx.FeedbackModel(xb, fbx.cell(cell)(xb))
    a, b = np.asarray(lnet(Xb, training=True)), np.asarray(lnet(Xb, training=True))
    assert np.abs(a - b).max() > 1e-3  # fresh masks each call
    lnet.compile("adam", "mse")
    assert np.isfinite(lnet.fit(Xb, np.zeros((16, 5, 4)), verbose=0).history["loss"][0])


def test_fixed_points_and_gradient_flow_equal_closed_forms():
    """x_t = A x_{t-3} + u has its fixed point (I - A)^-1 u in every slot,
    spectral radius rho(A)^(1/3); for h_t = w h_{t-1} + x_t, dh_T/dx_t = w^(T-1-t)."""
    u = keras.Input((2,), name="u")
    lag = fbx.Feedback((2,), name="lag", delay=3)
    A = keras.layers.Dense(2, use_bias=False)
    lin = keras.layers.Add()([A(lag), u])
    lnet = fbx.FeedbackModel(u, lin, feedback={"lag": lin})
    a = np.array([[0.5, 0.2], [0.0, -0.3]], "float32")
    A.kernel.assign(a.T)
    fp = fbx.fixed_points(lnet, {"u": np.ones(2, "float32")}, n_starts=4)
    star = np.linalg.solve(np.eye(2) - a, np.ones(2))
    np.testing.assert_allclose(fp.states["lag"][0], np.tile(star, (3, 1)), atol=1e-4)
    assert len(fp) == 1 and abs(fp.frame["spectral_radius"][0] - 0.5 ** (1 / 3)) < 1e-5

    w = keras.layers.Dense(1, use_bias=False)
    sx = keras.Input((1,), name="x")
    sl = fbx.Feedback((1,), name="s")
    sh = keras.layers.Add()([w(sl), sx])
    snet = fbx.FeedbackModel(sx, sh, feedback={"s": sh})
    w.kernel.assign([[0.5]])
    g = fbx.gradient_flow(snet, np.ones((1, 5, 1), "float32"), nodes="x")
    np.testing.assert_allclose(g["gradient"], 0.5 ** np.arange(4, -1, -1), rtol=1e-6)


# ---------------------------------------------------------------- stateful on JAX
# A stateful model through Keras's compiled fit / predict / evaluate on JAX: the
# carried histories ride in its non-trainable variables, as Keras's JAX trainer
# threads them through stateless_call and writes them back.
def build(**kw):
    keras.utils.set_random_seed(0)
    x = keras.Input((3,), name="x")
    loop = fbx.Feedback((4,), name="loop", delay=2)
    h = keras.layers.Dense(4, activation="tanh", name="h")(keras.layers.Concatenate()([x, loop]))
    c = fbx.cell(keras.layers.GRUCell(4, name="gru"))(h)
    return fbx.FeedbackModel(x, keras.layers.Dense(2, name="y")(c), feedback={"loop": h}, **kw)


def raises(fn, *words):
    """The one-line text of the ValueError that fn raises, which has all `words`."""
    with pytest.raises(ValueError) as info:
        fn()
    assert all(w in str(info.value) for w in words), str(info.value)
    return " ".join(re.sub(r"\x1b\[[0-9;]*m", "", str(info.value)).split())


def same_states(net, expected):
    got = net.get_states()
    assert set(got) == {"loop", "gru/h"}
    for k, v in got.items():
        np.testing.assert_allclose(v, np.asarray(expected[k]), atol=1e-5, err_msg=k)


def halves(a):
    """8 samples from 4: steps 0-5, then steps 6-11."""
    return np.concatenate([a[:, :6], a[:, 6:]])


@pytest.fixture
def stateful():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(4, 12, 3)).astype("float32")
    Y = rng.normal(size=(4, 12, 2)).astype("float32")
    ref = build(return_state=True)  # stateless: the whole sequence in one call
    net = build(stateful=True, name="net")
    net.set_weights(ref.get_weights())
    return net, ref, X, Y


def test_stateful_predict_and_evaluate_carry_state(stateful):
    net, ref, X, Y = stateful
    whole, whole_states = ref(X)
    whole = np.asarray(whole)
    # predict: batch 2 (the second halves) continues batch 1's state ...
    out = net.predict(halves(X), batch_size=4, verbose=0)
    np.testing.assert_allclose(np.concatenate([out[:4], out[4:]], 1), whole, atol=1e-5)
    same_states(net, whole_states)
    # ... and one call continues the last.
    net.reset_states()
    parts = [net.predict(X[:, i : i + 6], batch_size=4, verbose=0) for i in (0, 6)]
    np.testing.assert_allclose(np.concatenate(parts, 1), whole, atol=1e-5)
    # evaluate: the loss of the whole sequence's outputs, and its final state.
    net.reset_states()
    net.compile(loss="mse")
    loss = net.evaluate(halves(X), halves(Y), batch_size=4, verbose=0)
    np.testing.assert_allclose(loss, np.mean((whole - Y) ** 2), rtol=1e-5)
    same_states(net, whole_states)
    # reset_states: start again from the initial values, also at a new batch size.
    net.reset_states(batch_size=2)
    got = net.predict(halves(X[:2]), batch_size=2, verbose=0)
    np.testing.assert_allclose(got, halves(whole[:2]), atol=1e-5)


def test_stateful_fit_carries_state_and_is_not_saved(stateful, tmp_path):
    import jax

    net, ref, X, Y = stateful
    # fit: each batch starts where the previous one ended. The reference: SGD
    # by hand, one batch at a time, the state handed on with initial_state.
    net.compile(keras.optimizers.SGD(0.1), "mse")
    start = net.get_weights()
    net.fit(halves(X), halves(Y), batch_size=4, shuffle=False, verbose=0)

    def loss_and_state(trainable, x, y, state):
        (pred, final), _ = ref.stateless_call(
            trainable, ref.non_trainable_variables, x, initial_state=state
        )
        return keras.ops.mean((pred - y) ** 2), final

    trainable, state = [v.value for v in ref.trainable_variables], None
    for t in (slice(0, 6), slice(6, 12)):
        grad = jax.value_and_grad(loss_and_state, has_aux=True)
        (_, state), grads = grad(trainable, X[:, t], Y[:, t], state)
        trainable = [w - 0.1 * g for w, g in zip(trainable, grads)]
    for v, w in zip(net.trainable_variables, trainable):
        np.testing.assert_allclose(np.asarray(v), np.asarray(w), atol=1e-5, err_msg=v.path)
    same_states(net, state)
    assert max(np.abs(a - b).max() for a, b in zip(net.get_weights(), start)) > 1e-3

    # The carried state is not a weight: neither saved nor loaded, as a stateful
    # keras.layers.LSTM's states are not.
    assert [w.path for w in net.weights] == [w.path for w in ref.weights]
    assert {"net/loop_state", "net/gru_h_state"} <= {v.path for v in net.non_trainable_variables}
    path = os.path.join(tmp_path, "net.keras")
    net.save(path)
    back = keras.saving.load_model(path)
    raises(back.get_states, "has no carried state")
    ref.set_weights(net.get_weights())
    np.testing.assert_allclose(
        back.predict(X[:, :6], batch_size=4, verbose=0),
        np.asarray(ref(X[:, :6])[0]),
        atol=1e-5,
    )


def test_stateful_checks_and_compiled_functions(stateful):
    import jax

    net, ref, X, Y = stateful
    net(X)  # the batch size: 4
    # TensorFlow's checks, on JAX.
    raises(
        lambda: net.predict(X[:2], batch_size=2, verbose=0), "batch size 4", "received a batch of 2"
    )
    raises(lambda: net(X[:2]), "batch size 4", "received a batch of 2")
    raises(
        lambda: net.predict(np.concatenate([X, X[:2]]), batch_size=4, verbose=0),
        "last batch of 2",
    )
    net.compile("sgd", "mse")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        net.fit(X, Y, batch_size=4, verbose=0)
    assert any("fit shuffles the samples" in str(w.message) for w in caught)
    # A compiled function of one's own: the documented error, and stateless_call
    # hands the state back with the non-trainable variables.
    documented = catalogue()["stateful-inside-jax-jit"].split(": ", 1)[1]
    got = raises(lambda: jax.jit(net)(X), "compiled JAX function", "stateless_call")
    assert documented in got
    net.reset_states()
    run = jax.jit(net.stateless_call)
    trainable = [v.value for v in net.trainable_variables]
    y0, nt = run(trainable, [v.value for v in net.non_trainable_variables], X[:, :6])
    y1, _ = run(trainable, nt, X[:, 6:])
    ref.set_weights(net.get_weights())
    np.testing.assert_allclose(np.concatenate([y0, y1], 1), np.asarray(ref(X)[0]), atol=1e-5)
    # Nested in a functional model, whose own compiled predict threads it.
    net.reset_states()
    i = keras.Input((None, 3))
    outer = keras.Model(i, keras.layers.Dense(2, name="o")(net(i)))
    parts = [outer.predict(X[:, t : t + 6], batch_size=4, verbose=0) for t in (0, 6)]
    plain = build()
    plain.set_weights(net.get_weights())
    expected = np.asarray(outer.get_layer("o")(plain(X)))
    np.testing.assert_allclose(np.concatenate(parts, 1), expected, atol=1e-5)
