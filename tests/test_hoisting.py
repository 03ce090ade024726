"""Hoisting: the step's non-recurrent part runs once outside the loop, with the
same results as the plain loop (`hoist=False`), outputs and gradients.

Each hoisted model is compared with a twin that shares its step graph (so its
layers and weights) and runs everything in the loop. The plain loop is checked
against numpy and a step-by-step oracle elsewhere (test_engine.py,
test_properties.py); here it is the reference.
"""

import functools

import keras
import numpy as np
import pytest
import random_graphs
import tensorflow as tf
from helpers import examples, readme_network, seq
from hypothesis import given
from hypothesis import strategies as st

import fbexplorer as fbx
from fbexplorer import _run

ATOL = 1e-5


# Everything that can be hoisted is: the default ("auto") keeps a widening
# per-step part in the loop (tested below).
hoisted_model = functools.partial(fbx.FeedbackModel, hoist=True)


def twin(net, **overrides):
    """A model on the same step graph (the same layers), without hoisting."""
    config = net.get_config()
    config.pop("step_graph")
    config.pop("name")
    config.update(hoist=False, **overrides)
    other = fbx.FeedbackModel(step_graph=net.graph, **config)
    for name, w in net._initial.items():
        other._initial[name].assign(w)
    return other


def flat(value):
    return [np.asarray(v) for v in keras.tree.flatten(value)]


def assert_same(a, b, atol=ATOL):
    a, b = flat(a), flat(b)
    assert len(a) == len(b)
    for u, v in zip(a, b):
        np.testing.assert_allclose(u, v, rtol=1e-5, atol=atol)


def outputs_and_grads(net, inputs, training=False, **call):
    with tf.GradientTape() as tape:
        out = net(inputs, training=training, **call)
        loss = sum(tf.reduce_sum(tf.square(o) * 0.37) for o in flat(out))
    variables = net.trainable_variables
    grads = tape.gradient(loss, variables)
    grads = [np.zeros(v.shape) if g is None else np.asarray(g) for g, v in zip(grads, variables)]
    return out, grads


def check(net, inputs, training=False, **call):
    """The hoisted model equals its plain twin, outputs and gradients."""
    assert net._hoist_plan() is not None, "nothing was hoisted"
    plain = twin(net)
    out_h, grads_h = outputs_and_grads(net, inputs, training, **call)
    out_p, grads_p = outputs_and_grads(plain, inputs, training, **call)
    assert_same(out_h, out_p)
    assert len(grads_h) == len(grads_p) > 0
    for g, p in zip(grads_h, grads_p):
        np.testing.assert_allclose(g, p, rtol=1e-4, atol=ATOL)
    return out_h


# ---------------------------------------------------------------- the models
def seed_network(**kw):
    return readme_network(model=hoisted_model, **kw)


def lstm_dense_feedback(d=3, u=5, concat=False, **kw):
    x = keras.Input((d,), name="x")
    h_prev = fbx.Feedback((u,), name="h")
    c_prev = fbx.Feedback((u,), name="c")
    if concat:
        z = keras.layers.Dense(4 * u, name="gates")(keras.layers.Concatenate()([x, h_prev]))
    else:
        z = keras.layers.Dense(4 * u, name="wx")(x) + keras.layers.Dense(
            4 * u, use_bias=False, name="wh"
        )(h_prev)
    i, f, g, o = keras.ops.split(z, 4, axis=-1)
    c = keras.ops.sigmoid(f) * c_prev + keras.ops.sigmoid(i) * keras.ops.tanh(g)
    h = keras.ops.sigmoid(o) * keras.ops.tanh(c)
    return hoisted_model(x, h, feedback={"h": h, "c": c}, **kw)


def cell_model(cell, **kw):
    x = keras.Input((3,), name="x")
    e = keras.layers.Dense(6, activation="relu", name="enc")(x)
    y = fbx.cell(cell)(e)
    return hoisted_model(x, keras.layers.Dense(2, name="head")(y), **kw)


def conv_top_down(**kw):
    img = keras.Input((8, 8, 2), name="img")
    top = fbx.Feedback((4, 4, 4), name="top")
    c1 = keras.layers.Conv2D(3, 3, padding="same", activation="relu", name="conv1")(img)
    back = keras.layers.Conv2DTranspose(3, 3, strides=2, padding="same", name="back")(top)
    c2 = keras.layers.Conv2D(4, 3, strides=2, padding="same", activation="tanh", name="conv2")(
        keras.layers.Add()([c1, back])
    )
    y = keras.layers.Dense(3, name="head")(keras.layers.GlobalAveragePooling2D()(c2))
    return hoisted_model(inputs=[], outputs=y, constants=img, feedback={"top": c2}, steps=4, **kw)


def several_ios(**kw):
    """Two inputs, a constant, three outputs (one purely per-step), two edges."""
    x1 = keras.Input((3,), name="x1")
    x2 = keras.Input((2,), name="x2")
    ctx = keras.Input((4,), name="ctx")
    fb = fbx.Feedback((5,), name="fb", delay=2, initial="ones")
    enc = keras.layers.Dense(5, activation="tanh", name="enc")(ctx)
    a = keras.layers.Dense(5, name="a")(keras.layers.Concatenate()([x1, x2]))
    mix = keras.layers.Add(name="mix")([a, enc])
    h = keras.layers.Dense(5, activation="tanh", name="h")(
        keras.layers.Concatenate()([mix, fb, enc])
    )
    late = fbx.delayed(mix, delay=1, name="late")
    y = keras.layers.Dense(2, name="y")(keras.layers.Concatenate()([h, late]))
    echo = keras.layers.Dense(3, name="echo")(x1)
    return hoisted_model(
        [x1, x2],
        {"y": y, "echo": echo, "h": h},
        constants=[ctx],
        feedback={"fb": h},
        **kw,
    )


def several_inputs(rng, batch=3, steps=7):
    return {
        "x1": rng.normal(size=(batch, steps, 3)).astype("float32"),
        "x2": rng.normal(size=(batch, steps, 2)).astype("float32"),
        "ctx": rng.normal(size=(batch, 4)).astype("float32"),
    }


# ------------------------------------------------------------------- tests
def test_seed_network(rng):
    net = seed_network()
    assert net._hoist_plan().hoisted == ["d1"]  # x's half of d1's kernel
    check(net, seq(3, 7, 1, rng=rng))


@pytest.mark.parametrize("concat", [False, True])
def test_lstm_as_dense_and_feedback(rng, concat):
    net = lstm_dense_feedback(concat=concat)
    assert ("gates" if concat else "wx") in net._hoist_plan().hoisted
    check(net, seq(3, 7, 3, rng=rng), training=True)


@pytest.mark.parametrize(
    "cell",
    [lambda: keras.layers.LSTMCell(4, name="lstm"), lambda: keras.layers.GRUCell(4, name="gru")],
)
def test_keras_cells(rng, cell):
    net = cell_model(cell())
    assert net._hoist_plan().hoisted == ["enc"]
    check(net, seq(3, 7, 3, rng=rng))


def test_conv_top_down_with_constant_image(rng):
    net = conv_top_down()
    assert net._hoist_plan().hoisted == ["conv1"]
    check(net, rng.normal(size=(2, 8, 8, 2)).astype("float32"))


def test_several_inputs_outputs_constants_and_delays(rng):
    net = several_ios()
    hoisted = net._hoist_plan().hoisted
    assert {"enc", "a", "mix", "echo", "h"} <= set(hoisted) and "y" not in hoisted
    check(net, several_inputs(rng))


def test_masks_teacher_forcing_initial_state(rng):
    net = several_ios()
    inputs = several_inputs(rng)
    check(net, inputs, mask=rng.uniform(size=(3, 7)) > 0.3)
    truth = dict(inputs, fb=rng.normal(size=(3, 7, 5)).astype("float32"))
    check(net, truth)
    check(net, truth, training=True)  # teacher_forcing=1.0: always the truth
    check(net, inputs, initial_state={"fb": rng.normal(size=(3, 2, 5)).astype("float32")})


@pytest.mark.parametrize(
    "options",
    [{"go_backwards": True}, {"unroll": True}, {"return_sequences": False, "return_state": True}],
)
def test_options(rng, options):
    check(several_ios(**options), several_inputs(rng))
    check(lstm_dense_feedback(concat=True, **options), seq(3, 7, 3, rng=rng))


def test_batch_normalization_stays_in_the_loop(rng):
    """BN takes statistics per step: it and everything after it stay in the loop."""
    x = keras.Input((3,), name="x")
    prev = fbx.Feedback((4,), name="prev")
    p = keras.layers.Dense(4, name="proj")(x)
    bn = keras.layers.BatchNormalization(momentum=0.5, name="bn")
    n = keras.layers.Dense(4, name="after_bn")(bn(p))
    h = keras.layers.Add()([n, prev])
    net = hoisted_model(x, h, feedback={"prev": h})
    assert net._hoist_plan().hoisted == ["proj"]
    X = seq(8, 7, 3, rng=rng) + 2.0
    start = bn.get_weights()
    out_h = np.asarray(net(X, training=True))
    stats_h = bn.get_weights()
    bn.set_weights(start)
    out_p = np.asarray(twin(net)(X, training=True))
    assert_same(out_h, out_p)
    assert_same(stats_h, bn.get_weights())
    # Each step's own batch statistics: BN over the projected step 0 alone.
    z = np.asarray(p._keras_history.operation(X[:, 0]))
    expected = (z - z.mean(0)) / np.sqrt(z.var(0) + bn.epsilon)
    head = net.step_model.get_layer("after_bn")
    np.testing.assert_allclose(out_h[:, 0], np.asarray(head(expected)), atol=1e-4)


def test_dropout_hoisted_draws_fresh_masks_per_step(rng):
    x = keras.Input((4,), name="x")
    prev = fbx.Feedback((16,), name="prev")
    dropped = keras.layers.Dropout(0.5, name="drop")(keras.layers.Dense(16, name="p")(x))
    h = keras.layers.Add()([dropped, keras.layers.Dense(16, use_bias=False, name="r")(prev)])
    net = hoisted_model(x, [dropped, h], feedback={"prev": h})
    assert net._hoist_plan().hoisted == ["p", "drop"]
    X = np.abs(seq(64, 6, 4, rng=rng)) + 0.1
    check(net, X)  # inference: no dropout, identical
    d, _ = net(X, training=True)
    zeros = np.asarray(d) == 0
    assert 0.4 < zeros.mean() < 0.6
    assert 0.4 < (zeros[:, 0] != zeros[:, 1]).mean() < 0.6  # independent per step
    kept = np.asarray(net(X, training=False)[0])
    np.testing.assert_allclose(np.asarray(d)[~zeros], 2 * kept[~zeros], rtol=1e-5, atol=1e-5)


def test_stateful_chunks(rng):
    net = several_ios(stateful=True)
    plain = twin(net)
    inputs = several_inputs(rng, steps=8)
    for lo, hi in ((0, 3), (3, 8)):
        chunk = {k: (v[:, lo:hi] if v.ndim == 3 else v) for k, v in inputs.items()}
        assert_same(net(chunk), plain(chunk))
    assert_same(net.get_states(), plain.get_states())


def test_generate_and_trace(rng):
    net = lstm_dense_feedback(d=5, u=5, concat=True)
    X = seq(2, 4, 5, rng=rng)
    a = net.generate(X, 3, feed={"x": 0})
    b = twin(net).generate(X, 3, feed={"x": 0})
    assert_same(a, b)
    # The trace (its probe hoisted too) sees the hoisted run's values: the gates
    # at step t are Dense([x_t, h_{t-1}]), h from the hoisted call.
    df = fbx.trace(net, X, nodes=["gates"])
    gates = fbx.wide(df, node="gates").to_numpy().reshape(2, 4, 20)
    h = np.asarray(net(X))
    dense = net.step_model.get_layer("gates")
    prev = np.concatenate([np.zeros((2, 1, 5), "float32"), h[:, :-1]], 1)
    expected = np.asarray(dense(np.concatenate([X, prev], -1).reshape(8, 10))).reshape(2, 4, 20)
    np.testing.assert_allclose(gates, expected, atol=1e-5)


def test_hoisted_layer_runs_once_per_call_on_all_steps(rng):
    """Proof of hoisting: unrolled over T steps, the hoisted layer is called once,
    on time * batch rows; without hoisting, T times on batch rows."""
    calls = []

    class Counted(keras.layers.Dense):
        def call(self, inputs):
            calls.append(tuple(inputs.shape))
            return super().call(inputs)

    x = keras.Input((3,), name="x")
    prev = fbx.Feedback((4,), name="prev")
    h = keras.layers.Dense(4, activation="tanh", name="rec")(
        keras.layers.Add()([Counted(4, name="proj")(x), prev])
    )
    net = hoisted_model(x, h, feedback={"prev": h}, unroll=True)
    assert net._hoist_plan().hoisted == ["proj"]
    X = keras.ops.convert_to_tensor(seq(2, 5, 3, rng=rng))

    def run(model):  # the loop itself, not the cached compiled function
        slots = model._initial_slots(2, None, [X])
        return model._run([X], [], {}, None, slots, None, training=False)[0][0]

    calls.clear()
    out = run(net)
    assert calls == [(10, 3)]
    calls.clear()
    ref = run(twin(net))
    assert calls == [(2, 3)] * 5
    assert_same(out, ref)


def test_auto_keeps_a_widening_projection_in_the_loop(rng):
    """The default hoists per-step work only where the loop then reads no more
    numbers per step than the inputs hold: not an LSTM's 4 * units gates; and
    a read-out only where the loop emits no more numbers per step than it
    outputs: not the seed network's Dense(8 -> 1)."""
    for net in [
        seed_network(hoist="auto"),
        lstm_dense_feedback(hoist="auto"),
        lstm_dense_feedback(concat=True, hoist="auto"),
    ]:
        assert net.hoist == "auto" and net._hoist_plan() is None


def test_auto_hoists_constants_and_narrowing_encoders(rng):
    x = keras.Input((16,), name="x")
    ctx = keras.Input((6,), name="ctx")
    loop = fbx.Feedback((4,), name="loop")
    enc = keras.layers.Dense(3, activation="relu", name="enc")(x)  # 16 -> 3: narrows
    cenc = keras.layers.Dense(5, name="cenc")(ctx)  # a constant's encoder
    h = keras.layers.Dense(4, activation="tanh", name="h")(
        keras.layers.Concatenate()([enc, cenc, loop])
    )
    net = fbx.FeedbackModel(x, h, constants=ctx, feedback={"loop": h})
    assert net.hoist == "auto"
    assert set(net._hoist_plan().hoisted) == {"enc", "cenc", "h"}  # h: its kernel split
    check(net, [rng.normal(size=(3, 6, 16)).astype("float32"), rng.normal(size=(3, 6))])

    # The loop reads `wide` (40 numbers a step for 16 inputs): per-step work
    # stays in the loop; the constant's encoder and rows are still hoisted.
    wide = keras.layers.Dense(40, name="wide")(x)
    m = keras.layers.Multiply()([wide, keras.layers.Dense(40, name="r")(loop)])
    g = keras.layers.Dense(4, name="g")(keras.layers.Concatenate()([m, cenc]))
    net = fbx.FeedbackModel(x, g, constants=ctx, feedback={"loop": g})
    assert net._hoist_plan().hoisted == ["cenc", "g"]  # g: only the constant's rows
    check(net, [rng.normal(size=(3, 6, 16)).astype("float32"), rng.normal(size=(3, 6))])


def test_hoist_must_be_true_false_or_auto():
    with pytest.raises(
        ValueError, match="hoist must be True, False or 'auto'. Received: hoist='yes'"
    ):
        seed_network(hoist="yes")


def test_hoist_option_saved_and_loaded(rng, tmp_path):
    net = several_ios()
    inputs = several_inputs(rng)
    expected = net(inputs)
    net.save(tmp_path / "h.keras")
    loaded = keras.saving.load_model(tmp_path / "h.keras")
    assert loaded.hoist is True and loaded._hoist_plan() is not None
    assert_same(loaded(inputs), expected)
    off = twin(net)
    off.save(tmp_path / "p.keras")
    loaded = keras.saving.load_model(tmp_path / "p.keras")
    assert loaded.hoist is False and loaded._hoist_plan() is None
    assert_same(loaded(inputs), expected)


BATCH_MIXERS = {
    "marked": (lambda m: m, lambda z: z),
    "mean": (lambda m: m - keras.ops.mean(m, axis=0), lambda z: z - z.mean(0)),
    "mean_keepdims": (
        lambda m: m - keras.ops.mean(m, axis=0, keepdims=True),
        lambda z: z - z.mean(0, keepdims=True),
    ),
    "cumsum": (lambda m: keras.ops.cumsum(m, axis=-2), lambda z: np.cumsum(z, 0)),
}


@pytest.mark.parametrize("mixer", sorted(BATCH_MIXERS))
def test_what_mixes_the_batch_stays_in_the_loop(rng, mixer):
    """A layer marked `_fbx_hoist = False`, and ops along the batch axis, run per
    step: each step's batch statistics, as a numpy loop computes them."""
    op, reference = BATCH_MIXERS[mixer]
    x = keras.Input((3,), name="x")
    prev = fbx.Feedback((3,), name="prev")
    layer = keras.layers.Dense(3, name="proj")
    if mixer == "marked":
        layer._fbx_hoist = False
    h = keras.layers.Add()([op(layer(x)), prev])
    net = hoisted_model(x, h, feedback={"prev": h})
    plan = net._hoist_plan()
    assert plan is None if mixer == "marked" else plan.hoisted == ["proj"]
    X = seq(3, 7, 3, rng=rng)
    W, b = layer.get_weights()
    p, expected = np.zeros((3, 3)), []
    for t in range(7):
        p = reference(X[:, t] @ W + b) + p
        expected.append(p)
    np.testing.assert_allclose(np.asarray(net(X)), np.stack(expected, 1), atol=1e-5)


def test_random_graphs_hoisted_equal_plain():
    """Over random graphs, each with a read-out (`echo`), everything hoisted
    that can be (the pre part and the post part) equals the plain loop,
    outputs and gradients, with and without a mask, forwards and backwards,
    with the loop under XLA or not (both twins)."""
    post_parts = []

    @examples(20)
    @given(
        recipe=random_graphs.recipes(max_ops=5),
        masked=st.booleans(),
        backwards=st.booleans(),
        jit=st.booleans(),
    )
    def hoisted_equal_plain(recipe, masked, backwards, jit):
        keras.backend.clear_session()
        keras.utils.set_random_seed(0)
        net = random_graphs.build(
            recipe, echo=True, go_backwards=backwards, hoist=True, loop_jit=jit
        )
        post_parts.append(bool(post_names(net)))
        rng = np.random.default_rng(0)
        xs = [rng.normal(size=(2, 5, d)).astype("float32") for d in recipe["inputs"]]
        cs = [rng.normal(size=(2, d)).astype("float32") for d in recipe["constants"]]
        mask = rng.uniform(size=(2, 5)) > 0.3 if masked else None
        plain = twin(net)
        out_h, grads_h = outputs_and_grads(net, xs + cs, mask=mask)
        out_p, grads_p = outputs_and_grads(plain, xs + cs, mask=mask)
        assert_same(out_h, out_p)
        for g, p in zip(grads_h, grads_p):
            np.testing.assert_allclose(g, p, rtol=1e-4, atol=ATOL, err_msg=str(recipe))

    hoisted_equal_plain()
    assert sum(post_parts) >= 10, post_parts  # most graphs had a post part


@pytest.mark.jax
def test_hoisting_on_jax():
    """On JAX, a hoisted model (pre part with dropout, a constant, a post part)
    equals its plain twin, outputs and jax.grad gradients, and fits."""
    import jax

    assert keras.backend.backend() == "jax"
    keras.utils.set_random_seed(0)
    x = keras.Input((3,), name="x")
    ctx = keras.Input((2,), name="ctx")
    h_prev = fbx.Feedback((4,), name="h")
    enc = keras.layers.Dense(4, name="enc")(ctx)
    drop = keras.layers.Dropout(0.5, name="drop")(keras.layers.Dense(4, name="p")(x))
    z = keras.layers.Dense(4, activation="tanh", name="gates")(
        keras.layers.Concatenate()([drop, enc, h_prev])
    )
    bn = keras.layers.BatchNormalization(name="bn")(z)
    read = keras.layers.Dense(6, name="read")(keras.layers.Concatenate(name="cat")([z, x]))
    net = fbx.FeedbackModel(x, [bn, read], constants=ctx, feedback={"h": z}, hoist=True)
    assert set(net._hoist_plan().hoisted) == {"enc", "p", "drop", "gates"}
    assert [n.operation.name for n in net._hoist_plan().post_nodes] == ["cat", "read"]
    cfg = net.get_config()
    cfg.pop("step_graph")
    cfg.pop("name")
    plain = fbx.FeedbackModel(step_graph=net.graph, **dict(cfg, hoist=False))
    rng = np.random.default_rng(0)
    X = rng.normal(size=(4, 6, 3)).astype("float32")
    C = rng.normal(size=(4, 2)).astype("float32")
    for a, b in zip(net([X, C]), plain([X, C])):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
    M = rng.uniform(size=(4, 6)) > 0.3
    M[0, :2] = False
    for a, b in zip(net([X, C], mask=M), plain([X, C], mask=M)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)

    def loss(model, trainable):
        def f(values):
            fixed = [v.value for v in model.non_trainable_variables]
            out, _ = model.stateless_call(values, fixed, [X, C])
            return sum((o**2).sum() for o in out)

        return jax.grad(f)([v.value for v in trainable])

    gh, gp = loss(net, net.trainable_variables), loss(plain, plain.trainable_variables)
    for a, b in zip(gh, gp):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
    net.compile("adam", "mse")
    hist = net.fit([X, C], [np.zeros((4, 6, 4)), np.zeros((4, 6, 6))], epochs=2, verbose=0)
    assert np.isfinite(hist.history["loss"]).all()
    out = [np.asarray(o) for o in net([X, C], training=True)]
    assert all(np.isfinite(o).all() for o in out)


# ------------------------------------------------------- the post part (read-outs)
def post_names(net, **kw):
    plan = _run.hoist_plan(net, **kw)
    return [] if plan is None else [n.operation.name for n in plan.post_nodes]


def read_out_network(units=8, readout=1, **kw):
    """The seed network's loop with a read-out of `readout` units on d3, and a
    second read-out mixing d3, the delayed value and the input."""
    x = keras.Input((2,), name="x")
    loop = fbx.Feedback((units,), name="loop")
    h = keras.layers.Dense(units, activation="tanh", name="d1")(
        keras.layers.Concatenate()([x, loop])
    )
    h = keras.layers.Dense(units, activation="tanh", name="d3")(h)
    out = keras.layers.Dense(readout, name="out")(h)
    mix = keras.layers.Dense(3, activation="relu", name="mix")(
        keras.layers.Concatenate(name="cat")([h, loop, x])
    )
    return hoisted_model(x, [out, mix], feedback={"loop": h}, **kw)


def test_read_outs_run_after_the_loop(rng):
    net = read_out_network()
    assert post_names(net) == ["cat", "mix", "out"]
    plan = net._hoist_plan()
    assert [t.name for t in plan.emitted] == [
        net.step_model.get_layer("d3").output.name,
        net.step_model.get_layer("loop").output.name,
    ]
    assert "out" not in [n.operation.name for n in plan.loop_nodes]
    X = seq(3, 7, 2, rng=rng)
    check(net, X)
    check(net, X, training=True)
    check(net, X, initial_state={"loop": rng.normal(size=(3, 8)).astype("float32")})
    truth = {"x": X, "loop": rng.normal(size=(3, 7, 8)).astype("float32")}
    check(net, truth)  # the read-outs see the model's own values, the loop the truth


def test_read_out_holds_its_value_over_masked_steps(rng):
    """As the plain loop: a masked step repeats the output of the last unmasked
    step, zeros before the first one; checked against numpy too."""
    for backwards in (False, True):
        net = read_out_network(go_backwards=backwards)
        X = seq(4, 6, 2, rng=rng)
        mask = np.ones((4, 6), bool)
        mask[0, :2] = mask[1, 3:] = mask[2, 1::2] = False
        mask[3] = False  # nothing unmasked: zeros throughout
        out = check(net, X, mask=mask)
        full = [np.asarray(o) for o in twin(net)(X)]  # the same steps, unmasked
        got = [np.asarray(o) for o in out]
        for b in range(4):
            for t in range(6):
                steps = np.arange(6)[::-1] if backwards else np.arange(6)
                order = list(steps).index(t)  # the step's place in the loop
                before = [s for s in steps[: order + 1] if mask[b, s]]
                for g, f in zip(got, full):
                    if not before:
                        np.testing.assert_array_equal(g[b, order], 0)
                    elif not mask[b, t]:  # the last unmasked step's output
                        held = list(steps).index(before[-1])
                        np.testing.assert_array_equal(g[b, order], g[b, held])
                    elif all(mask[b, steps[: order + 1]]):
                        np.testing.assert_allclose(g[b, order], f[b, order], atol=1e-5)
        assert not np.any(got[0][3])


def test_read_out_layer_runs_once_on_all_steps(rng):
    """Proof of the post part: unrolled over T steps, the read-out is called
    once, on time * batch rows; without hoisting, T times on batch rows."""
    calls = []

    class Counted(keras.layers.Dense):
        def call(self, inputs):
            calls.append(tuple(inputs.shape))
            return super().call(inputs)

    x = keras.Input((3,), name="x")
    prev = fbx.Feedback((4,), name="prev")
    h = keras.layers.Dense(4, activation="tanh", name="rec")(keras.layers.Concatenate()([x, prev]))
    net = hoisted_model(x, Counted(2, name="read")(h), feedback={"prev": h}, unroll=True)
    assert post_names(net) == ["read"]
    X = keras.ops.convert_to_tensor(seq(2, 5, 3, rng=rng))

    def run(model):
        slots = model._initial_slots(2, None, [X])
        return model._run([X], [], {}, None, slots, None, training=False)[0][0]

    calls.clear()
    out = run(net)
    assert calls == [(10, 4)]
    calls.clear()
    ref = run(twin(net))
    assert calls == [(2, 4)] * 5
    assert_same(out, ref)


def test_what_the_loop_needs_is_not_post(rng):
    """An output that is also fed back, what a BatchNormalization reads, and
    outputs of the last step only stay in the loop."""
    x = keras.Input((3,), name="x")
    prev = fbx.Feedback((4,), name="prev")
    h = keras.layers.Dense(4, activation="tanh", name="h")(keras.layers.Concatenate()([x, prev]))
    pre_bn = keras.layers.Dense(5, name="pre_bn")(h)
    bn = keras.layers.BatchNormalization(momentum=0.5, name="bn")(pre_bn)
    after = keras.layers.Dense(6, name="after")(bn)
    net = hoisted_model(x, [h, after], feedback={"prev": h})
    assert post_names(net) == ["after"]
    assert post_names(net, keep_all=False) == []
    X = seq(8, 7, 3, rng=rng) + 1.0
    bn_layer = net.step_model.get_layer("bn")
    start = bn_layer.get_weights()
    out_h, grads_h = outputs_and_grads(net, X, training=True)
    stats = bn_layer.get_weights()
    bn_layer.set_weights(start)
    out_p, grads_p = outputs_and_grads(twin(net), X, training=True)
    assert_same(out_h, out_p)
    assert_same(stats, bn_layer.get_weights())
    for g, p in zip(grads_h, grads_p):
        np.testing.assert_allclose(g, p, rtol=1e-4, atol=ATOL)
    last = hoisted_model(x, [h, after], feedback={"prev": h}, return_sequences=False)
    assert post_names(last) == []


def test_auto_runs_widening_read_outs_after_the_loop(rng):
    """The default, for a loop under XLA: read-outs to more numbers than they
    read (here 8 -> 32 and 3 from 8 + 8 emitted) run after the loop, narrowing
    ones (8 -> 1 and 3) in it. Without XLA, read-outs stay in the loop."""
    wide = read_out_network(readout=32, hoist="auto", loop_jit=True)
    X = seq(3, 7, 2, rng=rng)
    out_h, grads_h = outputs_and_grads(wide, X, training=True)
    assert [key[2] for key in wide._plans.value] == [False, True]  # the run took the post part
    assert post_names(wide, jit=True) == ["cat", "mix", "out"]
    assert post_names(wide) == []
    out_p, grads_p = outputs_and_grads(twin(wide), X, training=True)
    assert_same(out_h, out_p)
    for g, p in zip(grads_h, grads_p):
        np.testing.assert_allclose(g, p, rtol=1e-4, atol=ATOL)
    assert post_names(read_out_network(hoist="auto"), jit=True) == []
    without_xla = read_out_network(readout=32, hoist="auto", loop_jit=False)
    without_xla(X)
    assert [key[2] for key in without_xla._plans.value] == [False]


def test_post_dropout_draws_fresh_masks_per_step(rng):
    x = keras.Input((4,), name="x")
    prev = fbx.Feedback((16,), name="prev")
    h = keras.layers.Dense(16, activation="tanh", name="h")(keras.layers.Concatenate()([x, prev]))
    dropped = keras.layers.Dropout(0.5, name="drop")(keras.layers.Dense(16, name="read")(h))
    net = hoisted_model(x, dropped, feedback={"prev": h})
    assert post_names(net) == ["read", "drop"]
    X = seq(64, 6, 4, rng=rng)
    check(net, X)  # inference: no dropout, identical
    d = np.asarray(net(X, training=True))
    zeros = d == 0
    assert 0.4 < zeros.mean() < 0.6
    assert 0.4 < (zeros[:, 0] != zeros[:, 1]).mean() < 0.6  # independent per step
    kept = np.asarray(net(X, training=False))
    np.testing.assert_allclose(d[~zeros], 2 * kept[~zeros], rtol=1e-5, atol=1e-5)


def test_trace_sees_read_outs_computed_after_the_loop(rng):
    net = read_out_network(readout=2)
    X = seq(2, 5, 2, rng=rng)
    out, mix = (np.asarray(v) for v in net(X))
    df = fbx.trace(net, X, nodes=["out", "mix", "d3"])
    np.testing.assert_allclose(fbx.wide(df, node="out").to_numpy().reshape(2, 5, 2), out, atol=1e-5)
    np.testing.assert_allclose(fbx.wide(df, node="mix").to_numpy().reshape(2, 5, 3), mix, atol=1e-5)


def test_read_outs_after_a_loop_under_xla(rng):
    """With the loop compiled by XLA (`loop_jit=True`), outputs and gradients
    still equal the plain loop's (also under XLA), with a mask too."""
    net = read_out_network(loop_jit=True)
    assert post_names(net) == ["cat", "mix", "out"]
    X = seq(3, 7, 2, rng=rng)
    check(net, X)
    check(net, X, training=True, mask=rng.uniform(size=(3, 7)) > 0.3)
