"""Delays longer than the run: the run makes only the history entries it
reads and keeps, whatever the delay, with the values of a numpy loop."""

import os
import resource
import subprocess
import sys
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf

import fbexplorer as fbx
from fbexplorer._history import History

T, B = 8, 3
HUGE = 10**9
DELAYS = [T - 1, T, T + 1, 5 * T, HUGE]


def echo(k, initial="zeros", **kwargs):
    """h_t = x_t + 0.5 d_t, d the value of h k steps ago."""
    x = keras.Input((2,), name="x")
    d = fbx.Feedback((2,), name="d", delay=k, initial=initial)
    h = keras.layers.Add(name="h")([x, keras.layers.Rescaling(0.5)(d)])
    return fbx.FeedbackModel(x, h, feedback={"d": h}, **kwargs)


def two_delays(short, long, **kwargs):
    """h_t = x_t + 0.5 a_t + 0.25 b_t: a ring edge beside a long one (a segmented run)."""
    x = keras.Input((2,), name="x")
    a = fbx.Feedback((2,), name="a", delay=short)
    b = fbx.Feedback((2,), name="b", delay=long)
    h = keras.layers.Add(name="h")(
        [x, keras.layers.Rescaling(0.5)(a), keras.layers.Rescaling(0.25)(b)]
    )
    return fbx.FeedbackModel(x, h, feedback={"a": h, "b": h}, **kwargs)


def reference(X, edges, mask=None):
    """The numpy loop. `edges`: `(delay, gain, start)`, start None (zeros),
    `(batch, n)` (that value k times) or `(batch, k, n)` (a whole history).
    A sample's edge reads entry p of its history at its p-th unmasked step:
    the start's entry p while p < k, else the (p - k)-th value it wrote.
    Returns (outputs, each sample's new values)."""
    b, steps, n = X.shape
    out = np.zeros((b, steps, n))
    news = [[] for _ in range(b)]

    def entry(start, s, p):
        if start is None:
            return np.zeros(n)
        return start[s] if start.ndim == 2 else start[s, p]

    for s in range(b):
        prev = np.zeros(n)
        for t in range(steps):
            if mask is not None and not mask[s, t]:
                out[s, t] = prev
                continue
            p = len(news[s])
            h = X[s, t].astype(float)
            for k, gain, start in edges:
                h = h + gain * (entry(start, s, p) if p < k else news[s][p - k])
            news[s].append(h)
            out[s, t] = prev = h
    return out, news


def whole_history(k, start, news, n=2):
    """Each sample's history after the run: the last k of its start and new values."""
    out = []
    for s, new in enumerate(news):
        if start is None:
            first = np.zeros((k, n))
        elif start.ndim == 2:
            first = np.repeat(start[s][None], k, 0)
        else:
            first = start[s]
        out.append(np.concatenate([first, np.reshape(new, (-1, n))], 0)[-k:])
    return np.stack(out)


def data(rng, steps=T):
    return rng.normal(size=(B, steps, 2)).astype("float32")


def a_mask(rng, steps=T):
    mask = rng.uniform(size=(B, steps)) > 0.35
    mask[0, :2] = False  # a sample that starts late
    mask[1] = True
    return mask


def close(a, b):
    np.testing.assert_allclose(np.asarray(a), b, atol=1e-5)


def virtual_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")


@pytest.fixture
def capped():
    """The process's address space capped 4 GB above its size for the test,
    so that code making a delay of 1e9's whole history (24 GB here) fails
    fast instead of taking the machine."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = virtual_bytes() + 4 * 2**30
    resource.setrlimit(
        resource.RLIMIT_AS, (cap if hard == resource.RLIM_INFINITY else min(cap, hard), hard)
    )
    yield
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


# ------------------------------------------------------- outputs against numpy
@pytest.mark.parametrize("k", DELAYS)
def test_delays_around_the_run_length_equal_numpy(rng, k, capped):
    X, mask = data(rng), a_mask(rng)
    start = rng.normal(size=(B, 2)).astype("float32")
    net = echo(k)
    close(net(X), reference(X, [(k, 0.5, None)])[0])
    close(net(X, mask=mask), reference(X, [(k, 0.5, None)], mask)[0])
    close(net.predict(X, verbose=0), reference(X, [(k, 0.5, None)])[0])
    given = reference(X, [(k, 0.5, start)], mask)[0]
    close(net(X, mask=mask, initial_state={"d": start}), given)


@pytest.mark.parametrize("k", [T - 1, T + 1, 5 * T])
def test_final_history_of_a_delay_near_the_run_equals_numpy(rng, k):
    X, mask = data(rng), a_mask(rng)
    start = rng.normal(size=(B, k, 2)).astype("float32")
    net = echo(k, return_state=True)
    for m in (None, mask):
        y, states = net(X, mask=m, initial_state={"d": start})
        want, news = reference(X, [(k, 0.5, start)], m)
        close(y, want)
        close(states["d"], whole_history(k, start, news))


@pytest.mark.parametrize("options", [{"go_backwards": True}, {"unroll": True}])
@pytest.mark.parametrize("k", [T + 1, HUGE])
def test_go_backwards_and_unroll(rng, k, options, capped):
    X, mask = data(rng), a_mask(rng)
    net = echo(k, **options)
    flip = options.get("go_backwards", False)
    src, m = (X[:, ::-1], mask[:, ::-1]) if flip else (X, mask)
    close(net(X), reference(src, [(k, 0.5, None)])[0])
    close(net(X, mask=mask), reference(src, [(k, 0.5, None)], m)[0])


@pytest.mark.parametrize("long", [T + 3, HUGE])
def test_a_segmented_run_beside_a_delay_longer_than_the_run(rng, long, capped):
    """Delay 3 is at least a quarter of the 12 steps: the run goes in segments of 3,
    and the long edge reads its history segment by segment."""
    from fbexplorer import _run

    X = data(rng, 12)
    start = rng.normal(size=(B, 2)).astype("float32")
    assert len(_run.segment_bounds([3, long], 12, None)) == 4
    net = two_delays(3, long)
    want = reference(X, [(3, 0.5, None), (long, 0.25, start)])[0]
    close(net(X, initial_state={"b": start}), want)


# ------------------------------------------------------------- initial values
@pytest.mark.parametrize("k", [T + 1, HUGE])
def test_learned_and_drawn_initial_values_are_k_copies_of_one_value(rng, k, capped):
    """`initial="learned"` or an initializer gives one value, read at every
    step before t = k; the learned one gets the gradient of all those reads."""
    X = tf.constant(data(rng))
    learned = echo(k, initial="learned")
    v = rng.normal(size=(2,)).astype("float32")
    learned.set_weights([v])
    start = np.repeat(v[None], B, 0)
    with tf.GradientTape() as tape:
        y = learned(X)
        loss = tf.reduce_sum(y**2)
    close(y, reference(X.numpy(), [(k, 0.5, start)])[0])
    grad = tape.gradient(loss, learned.trainable_variables[0])
    close(grad, (2 * 0.5 * y.numpy()).sum(axis=(0, 1)))  # dy_t/dv = 0.5 at every step
    drawn = echo(k, initial=keras.initializers.RandomNormal(seed=3))
    w = np.asarray(drawn.get_weights()[0])
    close(drawn(X), reference(X.numpy(), [(k, 0.5, np.repeat(w[None], B, 0))])[0])


def test_training_with_a_delay_longer_than_the_run(rng, capped):
    X = data(rng)
    target = reference(X, [(HUGE, 0.5, None)])[0]
    net = echo(HUGE, initial="learned")
    net.compile("sgd", "mse")
    net.fit(X, target, epochs=2, batch_size=B, verbose=0)
    assert np.isfinite(net.get_weights()[0]).all()


# ------------------------------------------------------------------- stateful
def test_stateful_continuation_equals_one_call_over_both(rng):
    """k = 25 over two calls of 10 steps: the second call reads the first's values."""
    X = data(rng, 20)
    net = echo(25, stateful=True)
    parts = [net(X[:, :10]), net(X[:, 10:])]
    want, news = reference(X, [(25, 0.5, None)])
    close(np.concatenate([np.asarray(p) for p in parts], 1), want)
    close(net.get_states()["d"], whole_history(25, None, news))


@pytest.mark.parametrize("k", [HUGE, 10**12])
def test_stateful_huge_delay_carries_only_what_it_wrote(rng, k, capped):
    """Every call reads initial values; the carried history holds the 40
    values written (the last call masked, so each sample holds its own),
    then the initial value again (set_states, reset_states). From the third
    call on the compiled loop sees a history of a length unknown when traced,
    past int32 for k = 1e12."""
    X = data(rng, 40)
    mask = np.ones((B, 40), bool)
    mask[:, 31:] = a_mask(rng, 9)  # not the first step of a call: it repeats no output
    net = echo(k, stateful=True)
    parts = [net(X[:, a : a + 10], mask=mask[:, a : a + 10]) for a in range(0, 40, 10)]
    want, news = reference(X, [(k, 0.5, None)], mask)
    close(np.concatenate([np.asarray(p) for p in parts], 1), want)
    carried = net._store.histories[0]
    assert isinstance(carried, History) and tuple(carried.tail.shape) == (40, B, 2)
    close(np.moveaxis(np.asarray(carried.tail), 0, 1), whole_history(40, None, news))
    start = rng.normal(size=(B, 2)).astype("float32")
    net.set_states({"d": start})
    close(net(X[:, :10]), reference(X[:, :10], [(k, 0.5, start)])[0])
    net.reset_states()
    close(net(X[:, :10]), want[:, :10])


def test_trace_reads_a_huge_delay_as_the_call_does(rng, capped):
    X = data(rng)
    net = echo(HUGE)
    traced = fbx.trace(net, X, nodes=["h"], as_arrays=True)["h"]
    close(traced, reference(X, [(HUGE, 0.5, None)])[0])


def test_an_edited_file_with_delay_1e9_loads_and_runs_as_delay_10(rng, tmp_path, capped):
    X = data(rng)
    path, edited = tmp_path / "net.keras", tmp_path / "edited.keras"
    echo(10).save(path)
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(edited, "w") as dst:
        for item in src.infolist():
            data_ = src.read(item.filename)
            if item.filename == "config.json":
                data_ = data_.replace(b'"delay": 10,', b'"delay": 1000000000,')
            dst.writestr(item, data_)
    net = fbx.load_model(edited)
    assert net.graph.specs[0].delay == HUGE
    close(net.predict(X, verbose=0), reference(X, [(HUGE, 0.5, None)])[0])


# --------------------------------------------------------------------- memory
# Run in a fresh process whose address space is capped a few GB above what
# the same calls at delay 10 took: code that made the delay's whole history
# (8 GB for a delay of 1e9, batch 2, one float) fails fast there instead of
# taking the machine. The peak resident memory must not grow by more than
# 200 MB from the delay-10 calls to the delay-1e9 ones.
MEMORY_SCRIPT = """
import resource, sys
import numpy as np, keras
import fbexplorer as fbx

def model(k, **kw):
    keras.utils.set_random_seed(0)
    x = keras.Input((3,), name="x")
    d = fbx.Feedback((1,), name="d", delay=k, initial=kw.pop("initial", "zeros"))
    h = keras.layers.Dense(1, activation="tanh", name="h")(keras.layers.Concatenate()([x, d]))
    return fbx.FeedbackModel(x, h, feedback={"d": h}, **kw)

def segmented(k):
    keras.utils.set_random_seed(0)
    x = keras.Input((3,), name="x")
    a = fbx.Feedback((1,), name="a", delay=3)
    b = fbx.Feedback((1,), name="b", delay=k)
    h = keras.layers.Dense(1, name="h")(keras.layers.Concatenate()([x, a, b]))
    return fbx.FeedbackModel(x, h, feedback={"a": h, "b": h})

X = np.random.default_rng(0).normal(size=(2, 10, 3)).astype("float32")
Y = np.zeros((2, 10, 1), "float32")
mask = np.ones((2, 10), bool)
mask[0, :3] = False

def run_all(k):
    net = model(k)
    outs = [np.asarray(net(X)), np.asarray(net(X, mask=mask)), net.predict(X, verbose=0)]
    # Both delays read only initial values (zeros) in 10 steps: one Dense on [x, 0].
    w, b = net.step_model.get_layer("h").get_weights()
    zeros = np.concatenate([X, np.zeros((2, 10, 1), "float32")], -1)
    np.testing.assert_allclose(outs[0], np.tanh(zeros @ w + b), atol=1e-5)
    net.compile("sgd", "mse")
    net.fit(X, Y, epochs=1, batch_size=2, verbose=0)
    learned = model(k, initial="learned")
    learned.compile("sgd", "mse")
    learned.fit(X, Y, epochs=1, batch_size=2, verbose=0)
    outs.append(np.asarray(learned(X, mask=mask)))
    outs.append(np.asarray(segmented(k)(X)))
    stateful = model(k, stateful=True)
    outs += [np.asarray(stateful(X)), np.asarray(stateful(X))]
    return outs

def peak_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

def virtual_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024


short = run_all(10)
base = peak_mib()
cap = virtual_bytes() + 3 * 2**30
hard = resource.getrlimit(resource.RLIMIT_AS)[1]
resource.setrlimit(resource.RLIMIT_AS, (cap if hard == resource.RLIM_INFINITY else min(cap, hard), hard))
long = run_all(10**9)
growth = peak_mib() - base
# Delays 10 and 1e9 read only initial values in 10 steps: the same outputs,
# but for the stateful model's second call (delay 10 reads the first call's values).
for a, b in list(zip(short, long))[:-1]:
    np.testing.assert_allclose(a, b, atol=1e-6)
print("GROWTH", growth)
assert growth < 200, f"peak memory grew by {growth:.0f} MiB"
print("OK")
"""


def run_script(script, backend, timeout=600):
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    env["PYTHONPATH"] = os.pathsep.join(
        [os.path.dirname(os.path.dirname(os.path.abspath(__file__))), env.get("PYTHONPATH", "")]
    )
    return subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_a_delay_of_1e9_costs_what_delay_10_costs(backend):
    done = run_script(MEMORY_SCRIPT, backend)
    assert done.returncode == 0 and "OK" in done.stdout, (done.stdout + done.stderr)[-3000:]


@pytest.mark.jax
def test_jax_delays_longer_than_the_run_equal_numpy():
    assert keras.backend.backend() == "jax"
    rng = np.random.default_rng(0)
    X, mask = data(rng), a_mask(rng)
    for k in (T + 1, 10**9):
        net = echo(k)
        for m in (None, mask):
            np.testing.assert_allclose(
                np.asarray(net(X, mask=m)), reference(X, [(k, 0.5, None)], m)[0], atol=1e-5
            )
    start = rng.normal(size=(B, T + 1, 2)).astype("float32")
    y, st = echo(T + 1, return_state=True)(X, mask=mask, initial_state={"d": start})
    want, news = reference(X, [(T + 1, 0.5, start)], mask)
    np.testing.assert_allclose(np.asarray(st["d"]), whole_history(T + 1, start, news), atol=1e-5)
    X2 = data(rng, 20)
    net = echo(10**9, stateful=True)
    parts = [np.asarray(net(X2[:, :10])), np.asarray(net(X2[:, 10:]))]
    want = reference(X2, [(10**9, 0.5, None)])[0]
    np.testing.assert_allclose(np.concatenate(parts, 1), want, atol=1e-5)
