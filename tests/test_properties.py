"""Random step graphs, compiled by the engine, equal a step-by-step oracle.

Hypothesis draws small graphs (Dense, Add, Multiply, Concatenate, activations,
GRU/SimpleRNN/LSTM cells, forward delays, feedback edges of delay 1 to 3
between any nodes, several inputs, constants and outputs; see
`random_graphs.py`) and call options; `oracle.py` runs the same step model one
timestep at a time in plain Python. Examples are derandomized, so every CI run
checks the same graphs.
"""

import os
import tempfile

import keras
import numpy as np
import oracle
import pytest
import random_graphs
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

tf.get_logger().setLevel("ERROR")  # one trace per random model is expected


def examples(n: int):
    """`n` examples under the `ci` profile (max_examples=100, `make test`); other
    profiles scale the count (`dev`, `make test-fast`: a tenth). The profiles
    (tests/conftest.py) derandomize the draws and set no deadline."""
    return settings(max_examples=max(1, n * settings.default.max_examples // 100))


def fresh():
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)


def data_for(recipe, batch, steps, seed=0):
    rng = np.random.default_rng(seed)
    xs = [rng.normal(size=(batch, steps, d)).astype("float32") for d in recipe["inputs"]]
    cs = [rng.normal(size=(batch, d)).astype("float32") for d in recipe["constants"]]
    return xs, cs


def as_list(value):
    return list(value) if isinstance(value, (list, tuple)) else [value]


def assert_close(got, expected, what, recipe):
    for i, (g, e) in enumerate(zip(as_list(got), as_list(expected))):
        np.testing.assert_allclose(
            np.asarray(g), np.asarray(e), rtol=1e-4, atol=1e-5, err_msg=f"{what} {i}: {recipe}"
        )


def draw_initial_state(data, net, batch, rng):
    """Initial values for a random subset of edges, in each accepted form."""
    state = {}
    for spec in net.graph.specs:
        form = data.draw(st.sampled_from(["none", "batched", "unbatched", "history"]))
        if form == "batched":
            state[spec.name] = rng.normal(size=(batch,) + spec.shape)
        elif form == "unbatched":
            state[spec.name] = rng.normal(size=spec.shape)
        elif form == "history" and spec.delay > 1:
            state[spec.name] = rng.normal(size=(batch, spec.delay) + spec.shape)
    state = {k: v.astype("float32") for k, v in state.items()}
    # The oracle takes every form as (batch, ...) or (batch, k, ...).
    for_oracle = {
        k: np.broadcast_to(v, (batch,) + v.shape) if v.ndim == len(net.graph.spec(k).shape) else v
        for k, v in state.items()
    }
    return state, for_oracle


@examples(130)
@given(
    recipe=random_graphs.recipes(),
    batch=st.integers(1, 3),
    steps=st.integers(1, 5),
    backwards=st.booleans(),
    sequences=st.booleans(),
    unroll=st.booleans(),
    masked=st.booleans(),
    forcing=st.sampled_from([None, 1.0, 0.0]),
    data=st.data(),
)
def test_forward_equals_oracle(
    recipe, batch, steps, backwards, sequences, unroll, masked, forcing, data
):
    """Outputs and final states under every call option: go_backwards,
    return_sequences, unroll, a mask, initial_state and teacher forcing (in
    inference, or in training with a probability of 1 or 0)."""
    fresh()
    net = random_graphs.build(
        recipe,
        go_backwards=backwards,
        return_sequences=sequences,
        unroll=unroll,
        return_state=True,
        teacher_forcing=1.0 if forcing is None else forcing,
    )
    rng = np.random.default_rng(1)
    xs, cs = data_for(recipe, batch, steps)
    mask = rng.random((batch, steps)) < 0.7 if masked else None
    state, state_for_oracle = draw_initial_state(data, net, batch, rng)
    names = net.feedback_names
    forced = data.draw(st.lists(st.sampled_from(names), unique=True, max_size=2)) if names else []
    truths = {
        name: rng.normal(size=(batch, steps) + net.graph.spec(name).shape).astype("float32")
        for name in forced
    }
    feed = dict(zip(net.graph.input_names + net.graph.constant_names, xs + cs), **truths)

    training = forcing is not None
    got, got_states = net(feed, mask=mask, initial_state=state, training=training)

    outs, history = oracle.run(
        net,
        xs,
        cs,
        initial_state=state_for_oracle,
        mask=mask,
        go_backwards=backwards,
        teachers={} if forcing == 0.0 else truths,  # in training, truth with probability 0
        training=training,
    )
    expected = outs if sequences else [o[:, -1] for o in outs]
    assert_close(got, expected, "output", recipe)
    want_states = oracle.final_states(net, history)
    assert sorted(got_states) == sorted(want_states)
    for name in want_states:
        assert_close(got_states[name], want_states[name], f"state {name}", recipe)


@examples(40)
@given(
    recipe=random_graphs.recipes(max_ops=5),
    batch=st.integers(1, 3),
    chunks=st.lists(st.integers(1, 3), min_size=2, max_size=4),
    how=st.lists(st.sampled_from(["call", "masked", "predict"]), min_size=4, max_size=4),
)
def test_stateful_chunks_equal_one_pass(recipe, batch, chunks, how):
    """A stateful model fed the sequence in chunks (direct calls, masked calls or
    predict, mixed) equals the oracle on the whole sequence; get_states equals the
    oracle's histories; reset_states starts over."""
    fresh()
    net = random_graphs.build(recipe, stateful=True)
    xs, cs = data_for(recipe, batch, sum(chunks))
    mask = np.random.default_rng(3).random((batch, sum(chunks))) < 0.7
    got, start = [], 0
    for n, way in zip(chunks, how):
        part = [x[:, start : start + n] for x in xs] + cs
        if way == "predict":
            mask[:, start : start + n] = True
            got.append(as_list(net.predict(part, batch_size=batch, verbose=0)))
        else:
            mask[:, start : start + n] |= way == "call"
            got.append(as_list(net(part, mask=mask[:, start : start + n])))
        start += n
    mask[:, start:] = True
    got = [np.concatenate([np.asarray(g[i]) for g in got], axis=1) for i in range(len(got[0]))]
    outs, history = oracle.run(net, xs, cs, mask=mask)
    # A masked step repeats the previous output; at the start of a call (as in
    # keras.layers.RNN) that is zeros, not the previous call's last output.
    expected = [np.asarray(o).copy() for o in outs]
    bounds = np.cumsum([0] + chunks)
    for o in expected:
        for b in range(batch):
            for first, end in zip(bounds[:-1], bounds[1:]):
                t = first
                while t < end and not mask[b, t]:
                    o[b, t] = 0
                    t += 1
    assert_close(got, expected, "output", recipe)
    states = net.get_states()
    for name, value in oracle.final_states(net, history).items():
        assert_close(states[name], value, f"state {name}", recipe)
    net.reset_states()
    first = as_list(net([x[:, : chunks[0]] for x in xs] + cs))
    outs, _ = oracle.run(net, [x[:, : chunks[0]] for x in xs], cs)
    assert_close(first, outs, "after reset", recipe)


@examples(40)
@given(
    recipe=random_graphs.recipes(max_ops=5),
    batch=st.integers(1, 3),
    steps=st.integers(1, 5),
    masked=st.booleans(),
    backwards=st.booleans(),
    forced=st.booleans(),
)
def test_gradients_equal_oracle(recipe, batch, steps, masked, backwards, forced):
    """Backpropagation through the compiled loop equals backpropagation through
    the oracle's Python loop, for every trainable weight (with a mask,
    go_backwards and teacher forcing of the first edge)."""
    fresh()
    net = random_graphs.build(recipe, go_backwards=backwards)
    rng = np.random.default_rng(2)
    xs, cs = data_for(recipe, batch, steps)
    mask = rng.random((batch, steps)) < 0.7 if masked else None
    spec = net.graph.specs[0]
    truths = {}
    if forced:
        truths[spec.name] = rng.normal(size=(batch, steps) + spec.shape).astype("float32")
    feed = dict(zip(net.graph.input_names + net.graph.constant_names, xs + cs), **truths)
    n_out = net.graph.n_outputs
    shapes = [(batch, steps) + tuple(t.shape[1:]) for t in net.step_model.outputs[:n_out]]
    weights = [tf.constant(rng.normal(size=s), "float32") for s in shapes]

    def loss(outputs):
        return sum(tf.reduce_sum(w * tf.cast(o, "float32")) for w, o in zip(weights, outputs))

    variables = net.trainable_variables
    with tf.GradientTape() as tape:
        value = loss(as_list(net(feed, mask=mask, training=True)))
    got = tape.gradient(value, variables)
    with tf.GradientTape() as tape:
        outs, _ = oracle.run(
            net, xs, cs, mask=mask, training=True, go_backwards=backwards, teachers=truths
        )
        ref_value = loss(outs)
    expected = tape.gradient(ref_value, variables)
    np.testing.assert_allclose(float(value), float(ref_value), rtol=1e-4, atol=1e-4)
    for v, g, e in zip(variables, got, expected):
        g = np.zeros(v.shape) if g is None else np.asarray(g)
        e = np.zeros(v.shape) if e is None else np.asarray(e)
        np.testing.assert_allclose(g, e, rtol=1e-3, atol=1e-4, err_msg=f"{v.path}: {recipe}")


@examples(20)
@given(
    recipe=random_graphs.recipes(max_ops=5),
    batch=st.integers(1, 3),
    steps=st.integers(1, 5),
    backwards=st.booleans(),
)
def test_save_load_equals_oracle(recipe, batch, steps, backwards):
    """A saved and loaded random model equals the oracle of the original."""
    fresh()
    net = random_graphs.build(recipe, go_backwards=backwards)
    xs, cs = data_for(recipe, batch, steps)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "net.keras")
        net.save(path)
        loaded = keras.saving.load_model(path)
    assert loaded.feedback_names == net.feedback_names
    assert [s.delay for s in loaded.graph.specs] == [s.delay for s in net.graph.specs]
    outs, _ = oracle.run(net, xs, cs, go_backwards=backwards)
    assert_close(loaded(xs + cs), outs, "loaded output", recipe)


@examples(15)
@given(
    recipe=random_graphs.recipes(max_ops=5, n_inputs=(1, 1)),
    batch=st.integers(1, 3),
    steps=st.integers(1, 4),
    more=st.integers(1, 4),
)
def test_generate_equals_oracle(recipe, batch, steps, more):
    """Closed-loop generation: after the warm-up, the input takes the previous
    step's `echo` output."""
    fresh()
    net = random_graphs.build(recipe, echo=True)
    xs, cs = data_for(recipe, batch, steps)
    got = net.generate(xs + cs, steps=more, feed={"x0": "echo"})
    outs, history = oracle.run(net, xs, cs)
    last = [o[:, -1:] for o in outs]
    expected = []
    for _ in range(more):
        last, history = oracle.run(net, [last[-1]], cs, history=history)
        expected.append(last)
    expected = [np.concatenate([np.asarray(e[i]) for e in expected], 1) for i in range(len(last))]
    assert_close(got, expected, "generated", recipe)


@examples(15)
@given(
    recipe=random_graphs.recipes(max_ops=5, n_inputs=(0, 0), n_constants=(1, 2)),
    batch=st.integers(1, 3),
    steps=st.integers(1, 5),
)
def test_constants_only_equals_oracle(recipe, batch, steps):
    """A model with no per-step inputs runs for `steps` steps on its constants."""
    fresh()
    net = random_graphs.build(recipe, steps=steps)
    _, cs = data_for(recipe, batch, steps)
    outs, _ = oracle.run(net, [], cs, steps=steps)
    assert_close(net(cs), outs, "output", recipe)


def test_oracle_can_fail():
    """The oracle is not the engine: a wrong delay gives different outputs."""
    fresh()
    recipe = {
        "inputs": [2],
        "constants": [],
        "feedbacks": [(3, 2, "zeros")],
        "ops": [("concat", 0, 1), ("dense", 2, 3, "tanh")],
        "bind": [3],
        "outputs": [3],
    }
    net = random_graphs.build(recipe)
    xs, _ = data_for(recipe, 2, 5)
    outs, _ = oracle.run(net, xs)
    np.testing.assert_allclose(np.asarray(net(xs)[0]), np.asarray(outs[0]), atol=1e-5)
    recipe["feedbacks"] = [(3, 1, "zeros")]
    fresh()
    other = random_graphs.build(recipe)
    other.set_weights(net.get_weights())
    with pytest.raises(AssertionError):
        np.testing.assert_allclose(np.asarray(other(xs)[0]), np.asarray(outs[0]), atol=1e-5)


@examples(12)
@given(
    recipe=random_graphs.recipes(max_ops=5),
    batch=st.integers(1, 3),
    steps=st.integers(1, 5),
    masked=st.booleans(),
    backwards=st.booleans(),
    sequences=st.booleans(),
)
def test_loop_under_xla_equals_oracle(recipe, batch, steps, masked, backwards, sequences):
    """With the time loop forced under XLA (`loop_jit=True`), outputs, final
    states and gradients equal the oracle's. The tests above run the default,
    `loop_jit="auto"`, which leaves loops this short without XLA."""
    fresh()
    net = random_graphs.build(
        recipe,
        go_backwards=backwards,
        return_sequences=sequences,
        return_state=True,
        loop_jit=True,
    )
    rng = np.random.default_rng(4)
    xs, cs = data_for(recipe, batch, steps)
    mask = rng.random((batch, steps)) < 0.7 if masked else None
    outs, history = oracle.run(net, xs, cs, mask=mask, go_backwards=backwards)
    got, got_states = net(xs + cs, mask=mask)
    assert_close(got, outs if sequences else [o[:, -1] for o in outs], "output", recipe)
    for name, value in oracle.final_states(net, history).items():
        assert_close(got_states[name], value, f"state {name}", recipe)
    if not sequences:
        return
    n_out = net.graph.n_outputs
    shapes = [(batch, steps) + tuple(t.shape[1:]) for t in net.step_model.outputs[:n_out]]
    weights = [tf.constant(rng.normal(size=s), "float32") for s in shapes]

    def loss(outputs):
        return sum(tf.reduce_sum(w * tf.cast(o, "float32")) for w, o in zip(weights, outputs))

    variables = net.trainable_variables
    with tf.GradientTape() as tape:
        value = loss(as_list(net(xs + cs, mask=mask, training=True)[0]))
    got = tape.gradient(value, variables)
    with tf.GradientTape() as tape:
        ref, _ = oracle.run(net, xs, cs, mask=mask, training=True, go_backwards=backwards)
        ref_value = loss(ref)
    expected = tape.gradient(ref_value, variables)
    for v, g, e in zip(variables, got, expected):
        g = np.zeros(v.shape) if g is None else np.asarray(g)
        e = np.zeros(v.shape) if e is None else np.asarray(e)
        np.testing.assert_allclose(g, e, rtol=1e-3, atol=1e-4, err_msg=f"{v.path}: {recipe}")
