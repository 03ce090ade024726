"""The engine against numpy reference loops: delays, inputs, outputs, states."""

import helpers
import keras
import numpy as np
import pytest
from helpers import readme_network

import fbexplorer as fbx

B, T = 3, 8


def dense(layer, v):
    w, b = layer.get_weights()
    return v @ w + b


def seed_network(delay=1, **kwargs):
    """x -> d1 -> d2 -> d3 -> out, with d3 fed back into d1."""
    return readme_network(units=5, inputs=5, outputs=5, delay=delay, **kwargs)


def seed_reference(net, seq, delay=1, history=None):
    """The seed network as a numpy loop; returns (outputs, final history)."""
    layer = net.step_model.get_layer
    hist = list(history) if history is not None else [np.zeros((seq.shape[0], 5))] * delay
    ys = []
    for t in range(seq.shape[1]):
        a = np.tanh(dense(layer("d1"), np.concatenate([seq[:, t], hist[0]], -1)))
        h3 = np.tanh(dense(layer("d3"), np.tanh(dense(layer("d2"), a))))
        ys.append(dense(layer("out"), h3))
        hist = hist[1:] + [h3]
    return np.stack(ys, 1), hist


@pytest.fixture
def seq(rng):
    return helpers.seq(B, T, 5, rng=rng)


def test_seed_network_equals_numpy_loop(seq):
    net = seed_network()
    expected, _ = seed_reference(net, seq)
    np.testing.assert_allclose(np.asarray(net(seq)), expected, atol=1e-5)


def test_feedback_changes_the_result(seq):
    """Guard for the reference: without the loop the outputs differ."""
    net = seed_network()
    layer = net.step_model.get_layer
    ys = []
    for t in range(T):
        a = np.tanh(dense(layer("d1"), np.concatenate([seq[:, t], np.zeros((B, 5))], -1)))
        ys.append(dense(layer("out"), np.tanh(dense(layer("d3"), np.tanh(dense(layer("d2"), a))))))
    assert np.abs(np.asarray(net(seq)) - np.stack(ys, 1)).max() > 1e-3


@pytest.mark.parametrize("delay", [2, 3])
def test_multi_step_delay_equals_numpy_loop(seq, delay):
    net = seed_network(delay=delay)
    expected, _ = seed_reference(net, seq, delay=delay)
    np.testing.assert_allclose(np.asarray(net(seq)), expected, atol=1e-5)
    # The first `delay` steps see only the initial value: the same as no feedback.
    free, _ = seed_reference(net, seq[:, :delay], delay=delay)
    np.testing.assert_allclose(np.asarray(net(seq))[:, :delay], free, atol=1e-5)


def test_forward_path_delay():
    """y_t = x_{t-2} + x_t via fbx.delayed."""
    x = keras.Input((2,), name="x")
    past = fbx.delayed(x, delay=2)
    y = keras.layers.Add()([x, past])
    net = fbx.FeedbackModel(x, y)
    seq = np.arange(2 * 6 * 2, dtype="float32").reshape(2, 6, 2)
    expected = seq.copy()
    expected[:, 2:] += seq[:, :-2]
    np.testing.assert_allclose(np.asarray(net(seq)), expected)


def test_several_feedbacks_inputs_outputs_and_constants(rng):
    """Two inputs (dict by name), a constant, two feedbacks, two outputs."""
    a = keras.Input((3,), name="a")
    b = keras.Input((2,), name="b")
    bias = keras.Input((4,), name="bias")
    f1 = fbx.Feedback((4,), name="f1")
    f2 = fbx.Feedback((1,), name="f2", delay=2)
    h = keras.layers.Dense(4, activation="tanh", name="h")(
        keras.layers.Concatenate()([a, b, f1, f2, bias])
    )
    s = keras.layers.Dense(1, name="s")(h)
    net = fbx.FeedbackModel([a, b], {"h": h, "s": s}, feedback={"f1": h, "f2": s}, constants=[bias])
    A = rng.normal(size=(B, T, 3)).astype("float32")
    Bs = rng.normal(size=(B, T, 2)).astype("float32")
    C = rng.normal(size=(B, 4)).astype("float32")
    out = net({"a": A, "b": Bs, "bias": C})
    assert set(out) == {"h", "s"}
    out_list = net([A, Bs, C])
    np.testing.assert_allclose(np.asarray(out["s"]), np.asarray(out_list["s"]))

    lh, ls = net.step_model.get_layer("h"), net.step_model.get_layer("s")
    f1v, f2h = np.zeros((B, 4)), [np.zeros((B, 1))] * 2
    hs, ss = [], []
    for t in range(T):
        hv = np.tanh(dense(lh, np.concatenate([A[:, t], Bs[:, t], f1v, f2h[0], C], -1)))
        sv = dense(ls, hv)
        hs.append(hv), ss.append(sv)
        f1v, f2h = hv, f2h[1:] + [sv]
    np.testing.assert_allclose(np.asarray(out["h"]), np.stack(hs, 1), atol=1e-5)
    np.testing.assert_allclose(np.asarray(out["s"]), np.stack(ss, 1), atol=1e-5)


def test_constants_only_model_runs_for_given_steps(rng):
    """An image seen for N steps, refined through feedback."""
    img = keras.Input((4,), name="img")
    prev = fbx.Feedback((4,), name="prev")
    h = keras.layers.Dense(4, activation="tanh", name="h")(keras.layers.Add()([img, prev]))
    net = fbx.FeedbackModel([], h, constants=[img], feedback={"prev": h}, steps=3)
    im = rng.normal(size=(B, 4)).astype("float32")
    assert net(im).shape == (B, 3, 4)
    out = np.asarray(net(im, steps=5))
    assert out.shape == (B, 5, 4)
    v, expected = np.zeros((B, 4)), []
    for _ in range(5):
        v = np.tanh(dense(net.step_model.get_layer("h"), im + v))
        expected.append(v)
    np.testing.assert_allclose(out, np.stack(expected, 1), atol=1e-5)


def test_return_sequences_false_and_return_state(seq):
    net = seed_network(return_sequences=False, return_state=True)
    last, states = net(seq)
    expected, hist = seed_reference(net, seq)
    np.testing.assert_allclose(np.asarray(last), expected[:, -1], atol=1e-5)
    np.testing.assert_allclose(np.asarray(states["loop"]), hist[-1], atol=1e-5)


def test_return_state_with_delay_gives_history_oldest_first(seq):
    net = seed_network(delay=2, return_state=True)
    _, states = net(seq)
    _, hist = seed_reference(net, seq, delay=2)
    assert states["loop"].shape == (B, 2, 5)
    np.testing.assert_allclose(np.asarray(states["loop"]), np.stack(hist, 1), atol=1e-5)


def test_initial_state_at_call_continues_a_sequence(seq):
    net = seed_network(delay=2, return_state=True)
    whole, _ = net(seq)
    _, st = net(seq[:, :5])
    rest, _ = net(seq[:, 5:], initial_state={"loop": st["loop"]})
    np.testing.assert_allclose(np.asarray(rest), np.asarray(whole)[:, 5:], atol=1e-5)


def test_initial_values_learned_and_initializer(seq):
    x = keras.Input((5,), name="x")
    loop = fbx.Feedback((5,), name="loop", initial="learned")
    other = fbx.Feedback((5,), name="other", initial=keras.initializers.Constant(0.5))
    h = keras.layers.Dense(5, name="h")(keras.layers.Concatenate()([x, loop, other]))
    net = fbx.FeedbackModel(x, h, feedback={"loop": h, "other": h})
    learned = [w for w in net.trainable_weights if "loop_initial" in w.path]
    fixed = [w for w in net.non_trainable_weights if "other_initial" in w.path]
    assert len(learned) == 1 and len(fixed) == 1
    learned[0].assign(np.full(5, 2.0, "float32"))
    out = np.asarray(net(seq[:, :1]))[:, 0]
    w, b = net.step_model.get_layer("h").get_weights()
    inp = np.concatenate([seq[:, 0], np.full((B, 5), 2.0), np.full((B, 5), 0.5)], -1)
    np.testing.assert_allclose(out, inp @ w + b, atol=1e-5)


def test_learned_initial_value_gets_gradient(seq):
    x = keras.Input((5,), name="x")
    loop = fbx.Feedback((5,), name="loop", initial="learned")
    h = keras.layers.Dense(5, name="h")(keras.layers.Add()([x, loop]))
    net = fbx.FeedbackModel(x, h, feedback={"loop": h})
    net.compile("sgd", "mse")
    net.train_on_batch(seq, np.ones_like(seq))
    init = [w for w in net.trainable_weights if "initial" in w.path][0]
    assert np.abs(np.asarray(init)).max() > 0  # it starts at zeros


def test_go_backwards_equals_reversed_input(seq):
    net = seed_network(go_backwards=True)
    fwd = seed_network()
    fwd.set_weights(net.get_weights())
    np.testing.assert_allclose(np.asarray(net(seq)), np.asarray(fwd(seq[:, ::-1])), atol=1e-5)


def test_unroll_equals_loop(seq):
    net = seed_network(unroll=True)
    loop = seed_network()
    loop.set_weights(net.get_weights())
    np.testing.assert_allclose(np.asarray(net(seq)), np.asarray(loop(seq)), atol=1e-6)


def test_explicit_cell_wiring_with_feedback(rng):
    """LSTMCell called on Feedback placeholders, bound by hand."""
    x = keras.Input((3,), name="x")
    h_prev = fbx.Feedback((4,), name="h")
    c_prev = fbx.Feedback((4,), name="c")
    out, (h, c) = keras.layers.LSTMCell(4, name="lstm")(x, [h_prev, c_prev])
    net = fbx.FeedbackModel(x, out, feedback={"h": h, "c": c})
    ref = keras.layers.LSTM(4, return_sequences=True)
    s = rng.normal(size=(B, T, 3)).astype("float32")
    ref(s)
    ref.set_weights(net.step_model.get_layer("lstm").get_weights())
    np.testing.assert_allclose(np.asarray(net(s)), np.asarray(ref(s)), atol=1e-5)


# ----------------------------------------------------------------- stateful
def test_stateful_chunks_equal_whole_sequence(seq):
    whole = seed_network()
    net = seed_network(stateful=True)
    net.set_weights(whole.get_weights())
    parts = [np.asarray(net(seq[:, i : i + 3])) for i in range(0, T, 3)]
    np.testing.assert_allclose(np.concatenate(parts, 1), np.asarray(whole(seq)), atol=1e-5)
    net.reset_states()
    np.testing.assert_allclose(
        np.asarray(net(seq[:, :3])), np.asarray(whole(seq[:, :3])), atol=1e-5
    )


def test_stateful_nested_cell_and_delay_chunks(rng):
    x = keras.Input((3,), name="x")
    fb = fbx.Feedback((2,), name="fb", delay=2)
    h = fbx.cell(keras.layers.GRUCell(4, name="gru"))(keras.layers.Concatenate()([x, fb]))
    y = keras.layers.Dense(2, name="y")(h)
    s = rng.normal(size=(B, 10, 3)).astype("float32")
    ref = fbx.FeedbackModel(x, y, feedback={"fb": y})
    net = fbx.FeedbackModel(x, y, feedback={"fb": y}, stateful=True)
    parts = [np.asarray(net(s[:, i : i + 4])) for i in (0, 4, 8)]
    np.testing.assert_allclose(np.concatenate(parts, 1), np.asarray(ref(s)), atol=1e-5)
    st = net.get_states()
    assert set(st) == {"fb", "gru/h"} and st["fb"].shape == (B, 2, 2)


def test_stateful_predict_carries_across_batches(seq):
    whole = seed_network()
    net = seed_network(stateful=True)
    net.set_weights(whole.get_weights())
    # predict over the same 3 samples twice: the second call continues the first.
    first = net.predict(seq[:, :4], batch_size=B, verbose=0)
    second = net.predict(seq[:, 4:], batch_size=B, verbose=0)
    np.testing.assert_allclose(
        np.concatenate([first, second], 1), np.asarray(whole(seq)), atol=1e-5
    )


def test_get_set_reset_states(seq):
    net = seed_network(stateful=True)
    net(seq)
    states = net.get_states()
    assert states["loop"].shape == (B, 5) and np.abs(states["loop"]).max() > 0
    after = np.asarray(net(seq[:, :2]))
    net.set_states(states)
    np.testing.assert_allclose(np.asarray(net(seq[:, :2])), after, atol=1e-6)
    net.reset_states()
    np.testing.assert_allclose(net.get_states()["loop"], 0.0)


def test_stateful_fit_evaluate_carry_state(seq):
    net = seed_network(stateful=True)
    net.compile("adam", "mse")
    net.fit(seq, seq, batch_size=B, epochs=1, shuffle=False, verbose=0)
    carried = net.get_states()["loop"]
    assert np.abs(carried).max() > 0
    net.evaluate(seq, seq, batch_size=B, verbose=0)
    assert np.abs(net.get_states()["loop"] - carried).max() > 0


# ------------------------------------------------------------------ masking
def test_explicit_mask_holds_state_and_repeats_output(seq):
    net = seed_network()
    mask = np.ones((B, T), bool)
    mask[0, 2:4] = False
    mask[1, 5:] = False
    got = np.asarray(net(seq, mask=mask))
    layer = net.step_model.get_layer
    for i in range(B):
        hist, prev_y, ys = np.zeros((1, 5)), np.zeros((1, 5)), []
        for t in range(T):
            if mask[i, t]:
                a = np.tanh(dense(layer("d1"), np.concatenate([seq[i : i + 1, t], hist], -1)))
                hist = np.tanh(dense(layer("d3"), np.tanh(dense(layer("d2"), a))))
                prev_y = dense(layer("out"), hist)
            ys.append(prev_y)
        np.testing.assert_allclose(got[i], np.concatenate(ys, 0), atol=1e-5)


def test_masking_layer_upstream(seq):
    net = seed_network(return_sequences=False)
    padded = seq.copy()
    padded[:, 6:] = 0.0
    inp = keras.Input((None, 5))
    outer = keras.Model(inp, net(keras.layers.Masking(0.0)(inp)))
    np.testing.assert_allclose(np.asarray(outer(padded)), np.asarray(net(seq[:, :6])), atol=1e-5)


# ---------------------------------------------------------- teacher forcing
def teacher_net(p=1.0):
    x = keras.Input((1,), name="x")
    y_prev = fbx.Feedback((1,), name="y", delay=2)
    y = keras.layers.Dense(1, name="y_dense")(keras.layers.Concatenate()([x, y_prev]))
    return fbx.FeedbackModel(x, y, feedback={"y": y}, teacher_forcing=p)


def test_teacher_forcing_feeds_truth_t_minus_delay(rng):
    net = teacher_net()
    X = rng.normal(size=(B, T, 1)).astype("float32")
    truth = rng.normal(size=(B, T, 1)).astype("float32")
    got = np.asarray(net({"x": X, "y": truth}))
    w, b = net.step_model.get_layer("y_dense").get_weights()
    prev = np.concatenate([np.zeros((B, 2, 1)), truth[:, :-2]], 1)
    expected = np.concatenate([X, prev], -1) @ w + b
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # Without truth the model uses its own values: no dummy input needed.
    assert np.abs(np.asarray(net(X)) - got).max() > 1e-3


def test_scheduled_sampling_probability(rng):
    X = rng.normal(size=(64, 30, 1)).astype("float32")
    truth = 5.0 + rng.normal(size=(64, 30, 1)).astype("float32")
    inputs = {"x": X, "y": truth}
    for p, lo, hi in [(1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (0.5, 0.4, 0.6)]:
        net = teacher_net(p)
        forced = np.asarray(net(inputs))
        free = np.asarray(net(X))
        net_train = np.asarray(net(inputs, training=True))
        # Fraction of steps (after the first two) that match the forced run.
        same = np.isclose(net_train, forced, atol=1e-5)[:, 2:]
        diff_free = np.isclose(net_train, free, atol=1e-5)[:, 2:]
        assert lo - 1e-9 <= same.mean() <= hi + 1e-9, (p, same.mean())
        if p == 0.0:
            assert diff_free.all()


def test_teacher_forcing_in_fit(rng):
    net = teacher_net(0.5)
    net.compile("adam", "mse")
    X = rng.normal(size=(8, T, 1)).astype("float32")
    truth = rng.normal(size=(8, T, 1)).astype("float32")
    hist = net.fit({"x": X, "y": truth}, truth, epochs=2, verbose=0)
    assert np.isfinite(hist.history["loss"]).all()
    assert net.predict(X, verbose=0).shape == (8, T, 1)


# --------------------------------------------------------------- generation
def test_generate_continues_in_closed_loop(rng):
    x = keras.Input((2,), name="x")
    h_prev = fbx.Feedback((3,), name="h")
    h = keras.layers.Dense(3, activation="tanh", name="h_dense")(
        keras.layers.Concatenate()([x, h_prev])
    )
    y = keras.layers.Dense(2, name="y")(h)
    net = fbx.FeedbackModel(x, y, feedback={"h": h})
    warm = rng.normal(size=(B, 4, 2)).astype("float32")
    gen = net.generate(warm, steps=5, feed={"x": "y"})
    assert gen.shape == (B, 5, 2)

    lh, ly = net.step_model.get_layer("h_dense"), net.step_model.get_layer("y")
    hv = np.zeros((B, 3))
    for t in range(4):
        hv = np.tanh(dense(lh, np.concatenate([warm[:, t], hv], -1)))
        yv = dense(ly, hv)
    expected = []
    for _ in range(5):
        hv = np.tanh(dense(lh, np.concatenate([yv, hv], -1)))
        yv = dense(ly, hv)
        expected.append(yv)
    np.testing.assert_allclose(gen, np.stack(expected, 1), atol=1e-5)


@keras.saving.register_keras_serializable(package="fbexplorer_tests")
class LeakyCell(keras.layers.Layer):
    """A user-written cell of the Keras protocol: a leaky trace and a step counter."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.state_size = [units, (1,)]
        self.output_size = units

    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1], self.units), initializer="ones")

    def call(self, inputs, states):
        trace, count = states
        new = 0.5 * trace + keras.ops.matmul(inputs, self.w)
        return new, [new, count + 1.0]

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def test_any_cell_of_the_keras_protocol(tmp_path):
    x = keras.Input((2,), name="x")
    y = fbx.cell(LeakyCell(3, name="leaky"), state_names=["trace", "count"])(x)
    net = fbx.FeedbackModel(x, y, return_state=True)
    assert net.feedback_names == ["leaky/trace", "leaky/count"]
    out, states = net(np.ones((1, 4, 2), "float32"))
    # trace_t = 0.5 trace_{t-1} + 2: 2, 3, 3.5, 3.75; the counter counts steps.
    np.testing.assert_allclose(np.asarray(out)[0, :, 0], [2.0, 3.0, 3.5, 3.75])
    np.testing.assert_allclose(np.asarray(states["leaky/count"]), [[4.0]])
    net.save(tmp_path / "leaky.keras")
    loaded = keras.saving.load_model(tmp_path / "leaky.keras")
    np.testing.assert_allclose(np.asarray(loaded(np.ones((1, 4, 2)))[0]), np.asarray(out))
    with pytest.raises(ValueError, match=r"the cell has 2 states, but state_names gives 1"):
        fbx.cell(LeakyCell(3), state_names=["only"])(x)


def test_summary_lists_layers_and_delayed_edges():
    net = seed_network(delay=2)
    lines = []
    net.summary(print_fn=lambda line, *a, **k: lines.append(line))
    text = "\n".join(lines)
    assert "d1" in text and "d3" in text
    assert "loop <- d3 at t-2, shape (5,), initial zeros (feedback)" in text


def test_feedback_model_nested_as_a_cell(seq, tmp_path):
    """A whole feedback network as one block of another's step graph."""
    inner = seed_network(delay=2, name="block")
    x = keras.Input((5,), name="x")
    y = fbx.cell(inner)(x)
    outer = fbx.FeedbackModel(x, y)
    assert outer.feedback_names == ["block/loop@0", "block/loop@1"]
    np.testing.assert_allclose(np.asarray(outer(seq)), np.asarray(inner(seq)), atol=1e-5)

    # With a loop of its own around the block: the block's input is x plus
    # the outer output from one step ago.
    x2 = keras.Input((5,), name="x")
    back = fbx.Feedback((5,), name="back")
    z = fbx.cell(inner)(keras.layers.Add()([x2, back]))  # a second use: "block_1/..."
    outer2 = fbx.FeedbackModel(x2, z, feedback={"back": z})
    layer = inner.step_model.get_layer
    hist, prev, expected = [np.zeros((B, 5))] * 2, np.zeros((B, 5)), []
    for t in range(T):
        a = np.tanh(dense(layer("d1"), np.concatenate([seq[:, t] + prev, hist[0]], -1)))
        h3 = np.tanh(dense(layer("d3"), np.tanh(dense(layer("d2"), a))))
        prev = dense(layer("out"), h3)
        hist = hist[1:] + [h3]
        expected.append(prev)
    np.testing.assert_allclose(np.asarray(outer2(seq)), np.stack(expected, 1), atol=1e-5)

    outer2.save(tmp_path / "nested.keras")
    loaded = keras.saving.load_model(tmp_path / "nested.keras")
    np.testing.assert_allclose(np.asarray(loaded(seq)), np.asarray(outer2(seq)), atol=1e-6)


def test_nested_model_with_learned_initial_is_refused():
    x = keras.Input((2,), name="x")
    loop = fbx.Feedback((2,), name="loop", initial="learned")
    h = keras.layers.Add()([x, loop])
    inner = fbx.FeedbackModel(x, h, feedback={"loop": h}, name="inner")
    with pytest.raises(
        ValueError, match=r"fbx.cell\('inner'\): delayed edges \['loop'\] have initial values"
    ):
        fbx.cell(inner)(keras.Input((2,), name="x2"))


def test_convolutional_top_down_feedback_equals_step_by_step(rng):
    """An image seen for 4 steps; conv2's map fed back, upsampled, into conv1."""
    img = keras.Input((8, 8, 1), name="img")
    top = fbx.Feedback((4, 4, 6), name="top")
    down = keras.layers.Conv2DTranspose(4, 3, strides=2, padding="same", name="down")(top)
    c1 = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1")(img)
    c1 = keras.layers.Add()([c1, down])
    c2 = keras.layers.Conv2D(6, 3, strides=2, padding="same", activation="relu", name="conv2")(c1)
    logits = keras.layers.Dense(3, name="head")(keras.layers.GlobalAveragePooling2D()(c2))
    net = fbx.FeedbackModel([], logits, constants=[img], feedback={"top": c2}, steps=4)
    im = rng.normal(size=(2, 8, 8, 1)).astype("float32")
    got = np.asarray(net(im))

    # Oracle: the step model applied one step at a time in Python.
    state, expected = np.zeros((2, 4, 4, 6), "float32"), []
    for _ in range(4):
        y, state = net.step_model([im, state])
        expected.append(np.asarray(y))
        state = np.asarray(state)
    np.testing.assert_allclose(got, np.stack(expected, 1), atol=1e-5)
    assert np.abs(got[:, 0] - got[:, 1]).max() > 1e-4  # the feedback matters


def test_stateful_fit_on_a_dataset_takes_its_batch_size(seq):
    import tensorflow as tf

    X = np.concatenate([seq] * 16)  # 48 samples
    ds = tf.data.Dataset.from_tensor_slices((X, X)).batch(48)
    net = seed_network(stateful=True)
    net.compile("sgd", "mse")
    net.fit(ds, epochs=1, shuffle=False, verbose=0)
    assert net.get_states()["loop"].shape == (48, 5)
