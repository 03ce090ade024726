"""The time loop compiled by XLA (`FeedbackModel(loop_jit=...)`) computes what the plain loop computes.

Twins share one step graph and differ only in `loop_jit`; outputs, final
states and gradients must agree to 1e-5 whatever the engine chooses.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import fbexplorer as fbx
from fbexplorer import _loop


@pytest.fixture(autouse=True)
def loops_compiled(monkeypatch):
    """Records, for each loop traced with jit, whether XLA compiled it (or it fell back)."""
    seen = []
    check = _loop._closes_over_graph_tensors

    def spy(concrete):
        falls_back = check(concrete)
        seen.append(not falls_back)
        return falls_back

    monkeypatch.setattr(_loop, "_closes_over_graph_tensors", spy)
    return seen


def twins(build, other=True, **kwargs):
    """The same step graph as two models: loop_jit=False and loop_jit=`other`."""
    keras.utils.set_random_seed(0)
    net = build(loop_jit=False, **kwargs)
    return [net, fbx.FeedbackModel(step_graph=net.graph, loop_jit=other, **kwargs)]


def small_net(**kwargs):
    """The README's d1 -> d2 -> d3 -> d1 net, with a delay-2 edge and a constant."""
    x = keras.Input((2,), name="x")
    c = keras.Input((3,), name="c")
    loop = fbx.Feedback((4,), name="loop")
    old = fbx.Feedback((4,), name="old", delay=2, initial="learned")
    h1 = keras.layers.Dense(4, activation="tanh", name="d1")(
        keras.layers.Concatenate()([x, loop, old, c])
    )
    h3 = keras.layers.Dense(4, activation="tanh", name="d3")(
        keras.layers.Dense(4, activation="tanh", name="d2")(h1)
    )
    y = keras.layers.Dense(1, name="out")(h3)
    return fbx.FeedbackModel(x, y, constants=[c], feedback={"loop": h3, "old": h1}, **kwargs)


def cell_net(**kwargs):
    x = keras.Input((3,), name="x")
    h = fbx.cell(keras.layers.LSTMCell(5, name="lstm"))(x)
    return fbx.FeedbackModel(x, keras.layers.Dense(2, name="y")(h), **kwargs)


def data(rng, batch=3, steps=6):
    return {
        "x": rng.normal(size=(batch, steps, 2)).astype("float32"),
        "c": rng.normal(size=(batch, 3)).astype("float32"),
    }


def grads(net, inputs, target, **call):
    with tf.GradientTape() as tape:
        out = net(inputs, training=True, **call)
        loss = tf.reduce_sum(tf.cast(out, "float32") * target)
    return tape.gradient(loss, net.trainable_variables)


def assert_all_close(a, b):
    for u, v in zip(a, b):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("options", [{}, {"go_backwards": True}, {"mask": True}])
def test_small_net_outputs_and_gradients_equal_the_plain_loop(rng, options, loops_compiled):
    options = dict(options)
    masked = options.pop("mask", False)
    nets = twins(small_net, **options)
    inputs = data(rng)
    call = {"mask": rng.random((3, 6)) < 0.7} if masked else {}
    target = rng.normal(size=(3, 6, 1)).astype("float32")
    ref_out = np.asarray(nets[0](inputs, **call))
    ref_grads = grads(nets[0], inputs, target, **call)
    for net in nets[1:]:
        np.testing.assert_allclose(np.asarray(net(inputs, **call)), ref_out, atol=1e-5)
        assert_all_close(grads(net, inputs, target, **call), ref_grads)
    # The gradient reaches every weight, the learned initial value included.
    assert all(np.abs(np.asarray(g)).max() > 0 for g in ref_grads)
    assert loops_compiled and all(loops_compiled)  # XLA ran the twins' loops


def test_cell_and_teacher_forcing_equal_the_plain_loop(rng):
    nets = twins(cell_net)
    x = rng.normal(size=(2, 5, 3)).astype("float32")
    target = rng.normal(size=(2, 5, 2)).astype("float32")
    ref_grads = grads(nets[0], x, target)
    for net in nets[1:]:
        np.testing.assert_allclose(np.asarray(net(x)), np.asarray(nets[0](x)), atol=1e-5)
        assert_all_close(grads(net, x, target), ref_grads)
    nets = twins(small_net)
    feed = dict(data(rng), loop=rng.normal(size=(3, 6, 4)).astype("float32"))
    target = rng.normal(size=(3, 6, 1)).astype("float32")
    ref_grads = grads(nets[0], feed, target)
    assert_all_close(grads(nets[1], feed, target), ref_grads)


def test_fit_with_loop_jit_auto_equals_fit_without(rng, loops_compiled):
    nets = twins(small_net, other="auto")
    steps = _loop.AUTO_JIT_MIN_STEPS  # long enough for "auto" to compile the loop
    inputs = data(rng, batch=8, steps=steps)
    y = rng.normal(size=(8, steps, 1)).astype("float32")
    start = nets[0].get_weights()
    for net in nets:
        net.set_weights(start)
        net.compile(keras.optimizers.SGD(0.1), "mse")
        net.fit(inputs, y, batch_size=4, epochs=2, shuffle=False, verbose=0)
    assert max(np.abs(a - b).max() for a, b in zip(nets[0].get_weights(), start)) > 1e-3
    for net in nets[1:]:
        assert_all_close(net.get_weights(), nets[0].get_weights())
        np.testing.assert_allclose(
            net.predict(inputs, verbose=0), nets[0].predict(inputs, verbose=0), atol=1e-5
        )
    assert loops_compiled and all(loops_compiled)


def test_the_choice():
    keras.utils.set_random_seed(0)
    small = small_net()
    assert _loop.loop_jit_for("auto", small.step_model, length=100)
    assert not _loop.loop_jit_for("auto", small.step_model, length=5)  # too short to pay
    assert not _loop.loop_jit_for("auto", small.step_model, length=None)  # unknown length
    assert _loop.loop_jit_for(True, small.step_model, length=5)
    assert not _loop.loop_jit_for(False, small.step_model, length=100)
    # An LSTM-sized step stays out of XLA under "auto" (measured slower), not when forced.
    x = keras.Input((32,))
    big = fbx.FeedbackModel(x, fbx.cell(keras.layers.LSTMCell(128))(x))
    assert _loop.loop_weights(big.step_model) == 32 * 512 + 128 * 512 + 512
    assert not _loop.loop_jit_for("auto", big.step_model, length=100)
    assert _loop.loop_jit_for(True, big.step_model, length=100)
    # In training, a loop part that draws random numbers runs without XLA.
    x = keras.Input((3,))
    loop = fbx.Feedback((3,), name="loop")
    h = keras.layers.Dropout(0.5)(keras.layers.Dense(3)(keras.layers.Add()([x, loop])))
    noisy = fbx.FeedbackModel(x, h, feedback={"loop": h})
    assert _loop.loop_jit_for(True, noisy.step_model, training=False)
    assert not _loop.loop_jit_for(True, noisy.step_model, training=True)


def test_dropout_in_training_keeps_plain_loop_results(rng):
    """With Dropout in the loop, training runs the plain loop: the same draws as loop_jit=False."""

    def build(**kwargs):
        x = keras.Input((3,), name="x")
        loop = fbx.Feedback((3,), name="loop")
        d = keras.layers.Dense(3, name="d")(keras.layers.Concatenate()([x, loop]))
        h = keras.layers.Dropout(0.5, seed=1, name="drop")(d)
        return fbx.FeedbackModel(x, h, feedback={"loop": h}, hoist=False, **kwargs)

    nets = twins(build)
    x = rng.normal(size=(2, 4, 3)).astype("float32")
    target = rng.normal(size=(2, 4, 3)).astype("float32")
    seed = nets[0].step_model.get_layer("drop").seed_generator.state
    start = np.asarray(seed.value)
    results = []
    for net in nets:
        seed.assign(start)  # the same draws for both
        results.append(grads(net, x, target))
    assert_all_close(results[1], results[0])
    # Inference draws nothing: the loop is compiled, and equals the plain loop.
    np.testing.assert_allclose(np.asarray(nets[1](x)), np.asarray(nets[0](x)), atol=1e-5)


def test_config_round_trip_and_bad_value():
    keras.utils.set_random_seed(0)
    net = small_net(loop_jit=True)
    assert net.get_config()["loop_jit"] is True
    clone = fbx.FeedbackModel.from_config(net.get_config())
    assert clone.loop_jit is True
    assert small_net().loop_jit == "auto"
    with pytest.raises(ValueError, match="loop_jit must be True, False or 'auto'"):
        small_net(loop_jit="always")
