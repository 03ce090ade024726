"""Long delays: a delay-k edge is one ring buffer; results equal a numpy loop."""

import keras
import numpy as np
import pytest

import fbexplorer as fbx

# h_t = x_t + 0.5 * h_{t-k}: the delayed edge is all the state there is.
HALF = 0.5


def echo(k, **kwargs):
    x = keras.Input((2,), name="x")
    d = fbx.Feedback((2,), name="d", delay=k)
    scaled = keras.layers.Rescaling(HALF, name="half")(d)
    h = keras.layers.Add(name="h")([x, scaled])
    return fbx.FeedbackModel(x, h, feedback={"d": h}, **kwargs)


def numpy_echo(X, k, history=None, mask=None):
    """(outputs, final history (batch, k, 2) oldest first); masked steps hold
    the history and repeat the previous output, per sample."""
    b, steps, n = X.shape
    hist = np.zeros((b, k, n)) if history is None else np.array(history, dtype=float)
    out = np.zeros((b, steps, n))
    prev = np.zeros((b, n))
    for t in range(steps):
        for s in range(b):
            if mask is not None and not mask[s, t]:
                out[s, t] = prev[s]
                continue
            h = X[s, t] + HALF * hist[s, 0]
            hist[s] = np.concatenate([hist[s, 1:], h[None]], 0)
            out[s, t] = prev[s] = h
    return out, hist


def data(rng, b, steps):
    return rng.normal(size=(b, steps, 2)).astype("float32")


def test_delay_5000_over_6000_steps_equals_numpy(rng):
    X = data(rng, 2, 6000)
    net = echo(5000, return_state=True)
    y, states = net(X)
    want, hist = numpy_echo(X, 5000)
    np.testing.assert_allclose(np.asarray(y), want, atol=1e-5)
    np.testing.assert_allclose(np.asarray(states["d"]), hist, atol=1e-5)


def test_history_oldest_first_in_and_out(rng):
    X = data(rng, 3, 11)
    start = rng.normal(size=(3, 4, 2)).astype("float32")
    net = echo(4, return_state=True)
    y, states = net(X, initial_state={"d": start})
    want, hist = numpy_echo(X, 4, history=start)
    np.testing.assert_allclose(np.asarray(y), want, atol=1e-5)
    np.testing.assert_allclose(np.asarray(states["d"]), hist, atol=1e-5)


def test_stateful_chunks_carry_the_whole_history(rng):
    X = data(rng, 2, 23)
    net = echo(9, stateful=True)
    parts = [np.asarray(net(X[:, a:b])) for a, b in ((0, 5), (5, 12), (12, 23))]
    want, hist = numpy_echo(X, 9)
    np.testing.assert_allclose(np.concatenate(parts, 1), want, atol=1e-5)
    np.testing.assert_allclose(net.get_states()["d"], hist, atol=1e-5)
    net.set_states({"d": hist[:, ::-1]})
    np.testing.assert_allclose(net.get_states()["d"], hist[:, ::-1], atol=1e-6)


def test_mask_holds_each_samples_history(rng):
    X = data(rng, 3, 17)
    mask = rng.uniform(size=(3, 17)) > 0.4
    mask[:, 0] = True
    net = echo(5, return_state=True)
    y, states = net(X, mask=mask)
    want, hist = numpy_echo(X, 5, mask=mask)
    np.testing.assert_allclose(np.asarray(y), want, atol=1e-5)
    np.testing.assert_allclose(np.asarray(states["d"]), hist, atol=1e-5)


@pytest.mark.parametrize("options", [{"unroll": True}, {"go_backwards": True}])
def test_unroll_and_go_backwards(rng, options):
    X = data(rng, 2, 9)
    y = np.asarray(echo(4, **options)(X))
    src = X[:, ::-1] if options.get("go_backwards") else X
    np.testing.assert_allclose(y, numpy_echo(src, 4)[0], atol=1e-5)


def test_teacher_forcing_and_trace_read_the_buffer(rng):
    X = data(rng, 2, 12)
    truth = data(rng, 2, 12)
    net = echo(3)
    y = np.asarray(net({"x": X, "d": truth}))
    # The feedback receives truth[t - 3] (zeros before).
    fed = np.concatenate([np.zeros((2, 3, 2)), truth[:, :-3]], 1)
    np.testing.assert_allclose(y, X + HALF * fed, atol=1e-5)
    df = fbx.trace(net, X, nodes=["d"])
    traced = fbx.wide(df).sort_values(["sample", "t"]).filter(like="d").to_numpy()
    out = numpy_echo(X, 3)[0]
    read = np.concatenate([np.zeros((2, 3, 2)), out[:, :-3]], 1)
    np.testing.assert_allclose(traced, read.reshape(-1, 2), atol=1e-5)


@pytest.mark.slow
def test_training_through_a_long_delay(rng):
    """Gradients flow through the ring buffer: the delayed echo's gain is learned."""
    x = keras.Input((1,), name="x")
    d = fbx.Feedback((1,), name="d", delay=20)
    h = keras.layers.Add()([x, keras.layers.Dense(1, use_bias=False, name="gain")(d)])
    net = fbx.FeedbackModel(x, h, feedback={"d": h})
    net.step_model.get_layer("gain").set_weights([np.zeros((1, 1), "float32")])
    X = rng.normal(size=(16, 60, 1)).astype("float32")
    target, _ = numpy_echo(np.repeat(X, 2, -1), 20)
    net.compile(keras.optimizers.Adam(0.05), "mse")
    net.fit(X, target[..., :1], epochs=60, batch_size=16, verbose=0)
    gain = float(net.step_model.get_layer("gain").get_weights()[0][0, 0])
    assert abs(gain - HALF) < 0.05, gain


@pytest.mark.jax
def test_jax_long_delay_equals_numpy():
    assert keras.backend.backend() == "jax"
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2, 300, 2)).astype("float32")
    y, st = echo(250, return_state=True)(X)
    want, hist = numpy_echo(X, 250)
    np.testing.assert_allclose(np.asarray(y), want, atol=1e-5)
    np.testing.assert_allclose(np.asarray(st["d"]), hist, atol=1e-5)
    mask = rng.uniform(size=(2, 300)) > 0.3
    mask[:, 0] = True
    y = echo(7)(X, mask=mask)
    np.testing.assert_allclose(np.asarray(y), numpy_echo(X, 7, mask=mask)[0], atol=1e-5)


def test_under_xla(rng):
    """Both buffer kinds compile with XLA (jit_compile=True), as Keras's own loops do."""
    import tensorflow as tf

    X = data(rng, 3, 25)
    net = echo(7)
    net.compile("sgd", "mse", jit_compile=True)
    np.testing.assert_allclose(net.predict(X, verbose=0), numpy_echo(X, 7)[0], atol=1e-5)
    mask = np.ones((3, 25), bool)
    mask[1, 5:9] = False
    masked = tf.function(lambda a, m: net(a, mask=m), jit_compile=True)
    np.testing.assert_allclose(
        np.asarray(masked(X, mask)), numpy_echo(X, 7, mask=mask)[0], atol=1e-5
    )


# A run goes in segments as long as its shortest delay of at least a quarter of
# the run (`_run.segment_bounds`): an edge whose delay spans a segment reads only
# values written before it, as a per-step sequence, with no buffer in the loop.


def two_delays(short, long, **kwargs):
    """h_t = x_t + 0.5 h_{t-short} + 0.25 h_{t-long}: a ring edge beside a spanning one."""
    x = keras.Input((2,), name="x")
    a = fbx.Feedback((2,), name="a", delay=short)
    b = fbx.Feedback((2,), name="b", delay=long)
    h = keras.layers.Add(name="h")(
        [x, keras.layers.Rescaling(0.5)(a), keras.layers.Rescaling(0.25)(b)]
    )
    return fbx.FeedbackModel(x, h, feedback={"a": h, "b": h}, **kwargs)


def numpy_two_delays(X, short, long, ha, hb):
    b, steps, n = X.shape
    ha, hb = np.array(ha, float), np.array(hb, float)
    out = np.zeros((b, steps, n))
    for t in range(steps):
        h = X[:, t] + 0.5 * ha[:, 0] + 0.25 * hb[:, 0]
        ha = np.concatenate([ha[:, 1:], h[:, None]], 1)
        hb = np.concatenate([hb[:, 1:], h[:, None]], 1)
        out[:, t] = h
    return out, ha, hb


@pytest.mark.parametrize("long", [12, 13, 40, 41, 300])
def test_spanning_edge_beside_a_ring_edge_equals_numpy(rng, long):
    X = data(rng, 3, 40)
    ha = rng.normal(size=(3, 3, 2)).astype("float32")
    hb = rng.normal(size=(3, long, 2)).astype("float32")
    y, states = two_delays(3, long, return_state=True)(X, initial_state={"a": ha, "b": hb})
    want, wa, wb = numpy_two_delays(X, 3, long, ha, hb)
    np.testing.assert_allclose(np.asarray(y), want, atol=1e-5)
    np.testing.assert_allclose(np.asarray(states["a"]), wa, atol=1e-5)
    np.testing.assert_allclose(np.asarray(states["b"]), wb, atol=1e-5)


@pytest.mark.parametrize("loop_jit,delay", [(False, 50), (True, 50), (False, 15), (True, 15)])
def test_spanning_edge_gradients_equal_the_ring_buffers(rng, loop_jit, delay):
    """Gradients through a spanning edge (to the weights and to the initial
    history) equal those through a ring buffer: an all-true mask keeps every
    edge a ring buffer and changes nothing else."""
    import tensorflow as tf

    x = keras.Input((2,), name="x")
    d = fbx.Feedback((3,), name="d", delay=delay)
    h = keras.layers.Dense(3, activation="tanh", name="h")(keras.layers.Concatenate()([x, d]))
    net = fbx.FeedbackModel(x, h, feedback={"d": h}, return_state=True, loop_jit=loop_jit)
    X = tf.constant(data(rng, 2, 40))
    start = tf.Variable(rng.normal(size=(2, delay, 3)).astype("float32"))
    ones = tf.ones((2, 40), bool)

    def grads(mask):
        with tf.GradientTape() as tape:
            y, st = net(X, initial_state={"d": start}, mask=mask)
            loss = tf.reduce_sum(y**2) + tf.reduce_sum(st["d"] ** 3)
        return tape.gradient(loss, [start, *net.trainable_variables]), loss

    spanning, loss = tf.function(lambda: grads(None))()
    ring, ring_loss = tf.function(lambda: grads(ones))()
    np.testing.assert_allclose(float(loss), float(ring_loss), rtol=1e-5)
    for a, b in zip(spanning, ring):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)


def test_stateful_training_learns_through_a_delay_longer_than_each_batch(rng):
    """Batches of 10 steps, delay 20: each batch reads only the carried
    history; the gain on it is learned."""
    x = keras.Input((1,), name="x")
    d = fbx.Feedback((1,), name="d", delay=20)
    h = keras.layers.Add()([x, keras.layers.Dense(1, use_bias=False, name="gain")(d)])
    net = fbx.FeedbackModel(x, h, feedback={"d": h}, stateful=True)
    net.step_model.get_layer("gain").set_weights([np.zeros((1, 1), "float32")])
    X = rng.normal(size=(8, 200, 1)).astype("float32")
    target, _ = numpy_echo(np.repeat(X, 2, -1), 20)
    net.compile(keras.optimizers.Adam(0.05), "mse")
    chunks = [slice(a, a + 10) for a in range(0, 200, 10)]
    for _ in range(8):
        net.reset_states()
        for c in chunks:
            net.train_on_batch(X[:, c], target[:, c, :1])
    gain = float(net.step_model.get_layer("gain").get_weights()[0][0, 0])
    assert abs(gain - HALF) < 0.05, gain


def test_only_edges_shorter_than_the_run_get_a_ring_buffer(rng, monkeypatch):
    from fbexplorer import _run

    made = []

    class Recording(_run.DelayLines):
        def __init__(self, delays, *args, **kwargs):
            made.append(list(delays))
            super().__init__(delays, *args, **kwargs)

    monkeypatch.setattr(_run, "DelayLines", Recording)
    net = two_delays(3, 300)
    net(data(rng, 2, 40))
    net(data(rng, 2, 40), mask=np.ones((2, 40), bool))
    # Under a mask every edge is a ring; one longer than the run gets the
    # run's 40 slots, which hold all it reads.
    assert made == [[3], [3, 40]]
    assert _run.segment_bounds([3, 300], 40, None) == [(0, 40)]
    assert _run.segment_bounds([3, 15], 40, None) == [(0, 15), (15, 30), (30, 40)]
    assert _run.segment_bounds([3, 9], 40, None) == [(0, 40)]  # 9 < 40 / 4: a ring
    assert _run.segment_bounds([3, 15], 40, np.ones((2, 40), bool)) == [(0, 40)]
