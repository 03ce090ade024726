"""The model zoo: every constructor builds, runs, draws, saves and trains;
the wiring matches numpy references; three models learn their tasks."""

import re

import keras
import numpy as np
import pytest

import fbexplorer as fbx
from fbexplorer import zoo
from fbexplorer.zoo import data

SEQ = "seq"
IMG = "img"

# name -> (kind, small kwargs, other kwargs, expected output shapes for batch 2, T=5)
CASES = {
    "elman": (SEQ, dict(n_in=2, n_hidden=4, n_out=3), dict(n_in=3, n_hidden=7, n_out=1)),
    "jordan": (SEQ, dict(n_in=2, n_hidden=4, n_out=3), dict(n_in=3, n_hidden=7, n_out=1)),
    "narx": (SEQ, dict(dx=1, dy=2, n_in=2, n_out=3), dict(dx=3, dy=1, n_in=3, n_out=1)),
    "gated_feedback_rnn": (
        SEQ,
        dict(n_in=2, n_out=3, units=4, n_layers=2),
        dict(n_in=3, n_out=1, units=5, n_layers=3),
    ),
    "vrnn": (SEQ, dict(n_x=2, units=6, n_z=2), dict(n_x=3, units=8, n_z=3)),
    "draw_generator": (
        IMG,
        dict(image_shape=(8, 8, 1), steps=3, enc_units=8, dec_units=8),
        dict(image_shape=(4, 6, 2), steps=2, enc_units=5, dec_units=6, n_z=3),
    ),
    "lenet5_feedback": (
        IMG,
        dict(input_shape=(8, 8, 1), steps=3, filters=(3, 4, 8), n_dense=8),
        dict(input_shape=(12, 16, 3), n_classes=4, steps=2, filters=(2, 3, 5), n_dense=6),
    ),
    "blt": (
        IMG,
        dict(steps=3, filters=(4, 4)),
        dict(input_shape=(12, 16, 3), n_classes=4, steps=2, filters=(3, 5, 6)),
    ),
    "bl": (
        IMG,
        dict(steps=3, filters=(4, 4)),
        dict(input_shape=(12, 16, 3), n_classes=4, steps=2, filters=(3, 5, 6)),
    ),
    "bt": (
        IMG,
        dict(steps=3, filters=(4, 4)),
        dict(input_shape=(12, 16, 3), n_classes=4, steps=2, filters=(3, 5, 6)),
    ),
    "cornet_r": (
        IMG,
        dict(steps=3, filters=(2, 3, 4, 4)),
        dict(input_shape=(16, 16, 3), n_classes=4, steps=2, filters=(3, 4, 5), strides=(2, 2, 2)),
    ),
    "cornet_rt": (
        IMG,
        dict(steps=3, filters=(2, 3, 4, 4)),
        dict(input_shape=(16, 16, 3), n_classes=4, steps=2, filters=(3, 4, 5), strides=(2, 2, 2)),
    ),
}


def _data(kind, net, rng, batch=2, time=5):
    """Inputs and targets that fit `net` (targets shaped like its first output)."""
    x_in = net.step_model.inputs[0]
    shape = tuple(x_in.shape[1:])
    if kind == SEQ:
        x = rng.normal(size=(batch, time) + shape).astype("float32")
    else:
        x = rng.uniform(size=(batch,) + shape).astype("float32")
    out = net.step_model.outputs[0]
    if isinstance(net, zoo.VariationalModel):
        y = x
    elif out.shape[-1] is not None and net.graph.constant_names:  # classifiers
        y = rng.integers(0, out.shape[-1], size=(batch, net.steps))
    else:
        y = rng.normal(size=(batch, time) + tuple(out.shape[1:])).astype("float32")
    return x, y


def _expected_shapes(kind, net, batch=2, time=5):
    steps = time if kind == SEQ else net.steps
    return [
        (batch, steps) + tuple(t.shape[1:]) for t in net.step_model.outputs[: net.graph.n_outputs]
    ]


def _first(out):
    return out[0] if isinstance(out, (list, tuple)) else out


def test_the_package_exports_every_constructor():
    for name in CASES:
        assert callable(getattr(zoo, name)), name
        assert getattr(zoo, name).__doc__ and "Wiring" in getattr(zoo, name).__doc__, name


@pytest.mark.parametrize("size", [1, 2])
@pytest.mark.parametrize("name", sorted(CASES))
def test_builds_and_runs_at_two_sizes(name, size, rng):
    kind, small, other = CASES[name]
    net = getattr(zoo, name)(**(small if size == 1 else other))
    x, _ = _data(kind, net, rng)
    out = net(x)
    outs = list(out) if isinstance(out, (list, tuple)) else [out]
    assert [tuple(o.shape) for o in outs] == _expected_shapes(kind, net)
    assert all(np.isfinite(np.asarray(o)).all() for o in outs)


@pytest.mark.parametrize("name", sorted(CASES))
def test_draws_saves_loads_and_trains(name, rng, tmp_path):
    kind, small, _ = CASES[name]
    net = getattr(zoo, name)(**small)
    x, y = _data(kind, net, rng)

    # Drawn: every delayed edge (other than cell states) is a dashed edge.
    source = fbx.draw(net).source
    tips = re.findall(r'style=dashed tooltip="?([^"\]]*)"?\]', source)
    drawn = {name for tip in tips for name in tip.split(", ")}
    assert {s.name for s in net.graph.specs if s.kind != "cell"} <= drawn
    assert "t=1" in fbx.draw(net, unroll=2, collapse=True).source

    # Saved and loaded: the same outputs, with no custom_objects.
    before = _first(net(x))
    net.save(tmp_path / f"{name}.keras")
    loaded = keras.saving.load_model(tmp_path / f"{name}.keras")
    assert type(loaded) is type(net)
    assert loaded.feedback_names == net.feedback_names
    np.testing.assert_allclose(np.asarray(_first(loaded(x))), np.asarray(before), atol=1e-5)

    # One training step: a finite loss.
    if isinstance(net, zoo.VariationalModel):
        net.compile(keras.optimizers.Adam(1e-3))
    elif net.graph.constant_names:
        net.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    else:
        net.compile(keras.optimizers.Adam(1e-3), "mse")
    loss = net.train_on_batch(x, y)
    assert np.isfinite(loss)


# ------------------------------------------------------------------ wiring
def _dense(layer, v):
    w, b = layer.get_weights()
    return v @ w + b


def test_elman_and_jordan_equal_numpy_loops(rng):
    x = rng.normal(size=(3, 6, 2)).astype("float32")
    for name in ("elman", "jordan"):
        net = getattr(zoo, name)(n_in=2, n_hidden=5, n_out=3)
        layer = net.step_model.get_layer
        fed = np.zeros((3, 5 if name == "elman" else 3))
        expected = []
        for t in range(6):
            h = np.tanh(_dense(layer("hidden"), np.concatenate([x[:, t], fed], -1)))
            y = _dense(layer("out"), h)
            fed = h if name == "elman" else y
            expected.append(y)
        np.testing.assert_allclose(np.asarray(net(x)), np.stack(expected, 1), atol=1e-5)


def test_narx_taps_equal_a_numpy_loop(rng):
    dx, dy, T = 3, 2, 8
    x = rng.normal(size=(2, T, 1)).astype("float32")
    net = zoo.narx(dx, dy, n_hidden=6)
    layer = net.step_model.get_layer
    ys = []
    for t in range(T):
        xs = [x[:, t - k] if t - k >= 0 else np.zeros((2, 1)) for k in range(dx + 1)]
        yp = [ys[t - k] if t - k >= 0 else np.zeros((2, 1)) for k in range(1, dy + 1)]
        h = np.tanh(_dense(layer("hidden"), np.concatenate(xs + yp, -1)))
        ys.append(_dense(layer("out"), h))
    np.testing.assert_allclose(np.asarray(net(x)), np.stack(ys, 1), atol=1e-5)
    assert [s.delay for s in net.graph.specs if s.kind == "feedback"] == [1, 2]
    with pytest.raises(ValueError, match="`dy` is a number of taps"):
        zoo.narx(2, -1)


def test_gated_feedback_rnn_equals_the_papers_equations(rng):
    L, U, T = 3, 4, 5
    x = rng.normal(size=(2, T, 2)).astype("float32")
    net = zoo.gated_feedback_rnn(n_in=2, n_out=1, units=U, n_layers=L)
    layer = net.step_model.get_layer
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    prev = [np.zeros((2, U)) for _ in range(L)]
    expected = []
    for t in range(T):
        h_star, below, new = np.concatenate(prev, -1), x[:, t], []
        for j in range(1, L + 1):
            total = _dense(layer(f"W{j}"), below)
            for i in range(1, L + 1):
                g = sig(_dense(layer(f"gate{i}_{j}"), np.concatenate([below, h_star], -1)))
                total += g * (prev[i - 1] @ layer(f"U{i}_{j}").get_weights()[0])
            below = np.tanh(total)
            new.append(below)
        prev = new
        expected.append(_dense(layer("out"), below))
    np.testing.assert_allclose(np.asarray(net(x)), np.stack(expected, 1), atol=1e-5)


@pytest.mark.parametrize("name", ["lenet5_feedback", "blt", "bl", "bt", "cornet_r", "cornet_rt"])
def test_vision_nets_equal_their_step_model_applied_step_by_step(name, rng):
    net = getattr(zoo, name)(steps=5)  # default sizes: no dead ReLU layer
    img = rng.uniform(size=(2, 8, 8, 1)).astype("float32")
    slots = [np.zeros((2,) + s.shape, "float32") for s in net.graph.specs]
    expected = []
    for _ in range(net.steps):
        y, *slots = net.step_model([img] + slots)
        expected.append(np.asarray(y))
        slots = [np.asarray(s) for s in slots]
    got = np.asarray(net(img))
    np.testing.assert_allclose(got, np.stack(expected, 1), atol=1e-5)
    assert np.abs(got[:, 0] - got[:, -1]).max() > 1e-6  # the feedback changes the answer


def test_cornet_rt_delays_the_forward_path_and_cornet_r_does_not(rng):
    a, b = rng.uniform(size=(2, 1, 8, 8, 1)).astype("float32")
    rt = zoo.cornet_rt(steps=5)
    pa, pb = np.asarray(rt(a)), np.asarray(rt(b))
    # The image reaches IT after V1, V2 and V4: three steps late.
    np.testing.assert_allclose(pa[:, :3], pb[:, :3], atol=1e-6)
    assert np.abs(pa[:, 3] - pb[:, 3]).max() > 1e-6
    r = zoo.cornet_r(steps=2)
    assert np.abs(np.asarray(r(a))[:, 0] - np.asarray(r(b))[:, 0]).max() > 1e-6


def test_gaussian_kl_equals_the_closed_form(rng):
    mq, lq, mp, lp = rng.normal(size=(4, 3, 5)).astype("float32")
    got = np.asarray(zoo.GaussianKL()([mq, lq, mp, lp]))
    vq, vp = np.exp(lq), np.exp(lp)
    ref = 0.5 * np.sum(np.log(vp / vq) + (vq + (mq - mp) ** 2) / vp - 1, -1, keepdims=True)
    np.testing.assert_allclose(got, ref, rtol=1e-5)
    np.testing.assert_allclose(
        np.asarray(zoo.GaussianKL()([mq, lq])),
        0.5 * np.sum(np.exp(lq) + mq**2 - 1 - lq, -1, keepdims=True),
        rtol=1e-5,
    )


def test_vrnn_generates_from_the_prior(rng):
    net = zoo.vrnn(n_x=2, units=8, seed=3)
    prefix = rng.normal(size=(3, 4, 2)).astype("float32")
    x_hat, kl = net.generate(prefix, steps=6)
    assert x_hat.shape == (3, 6, 2) and kl.shape == (3, 6, 1)
    with pytest.raises(ValueError, match=r"feed must map every per-step input \['x'\]"):
        net.generate(prefix, steps=2, feed={"y": 0})
    # Sampled: two runs differ; and the switches are back on the data afterwards.
    again, _ = net.generate(prefix, steps=6)
    assert np.abs(x_hat - again).max() > 1e-6
    switches = [net.step_model.get_layer(n) for n in ("z", "phi_x_used")]
    assert all(float(s.use_prior.numpy()) == 0.0 for s in switches)
    np.testing.assert_allclose(np.asarray(net(prefix)[0]), np.asarray(net(prefix)[0]))

    # The first generated step equals the decoder applied to a prior sample:
    # with the prior's variance forced to zero, the sample is the prior mean.
    layer = net.step_model.get_layer
    w, b = layer("prior_log_var").get_weights()
    layer("prior_log_var").set_weights([w * 0, b * 0 - 80.0])
    x_hat, _ = net.generate(prefix, steps=1)
    stepwise = net.step_model
    h = np.zeros((3, 8), "float32")
    for t in range(4):
        out = stepwise([prefix[:, t], h])
        h, last = np.asarray(out[-1]), np.asarray(out[0])
    with net.prior_sampling():
        first = np.asarray(stepwise([last, h])[0])
    np.testing.assert_allclose(x_hat[:, 0], first, atol=1e-4)


# ---------------------------------------------------------------- learning
@pytest.mark.slow
def test_lenet5_feedback_learns_digits():
    x_train, y_train, x_test, y_test = data.digits()
    net = zoo.lenet5_feedback(steps=3)
    net.compile(keras.optimizers.Adam(2e-3), "sparse_categorical_crossentropy")
    net.fit(x_train, np.repeat(y_train[:, None], 3, 1), batch_size=32, epochs=15, verbose=0)
    accuracy = (net.predict(x_test, verbose=0).argmax(-1) == y_test[:, None]).mean(0)
    assert accuracy[-1] > 0.90, accuracy


@pytest.mark.slow
def test_narx_beats_the_same_network_without_feedback():
    u, y = data.narendra_system(512, 40, seed=0)
    u_test, y_test = data.narendra_system(128, 100, seed=1)
    errors = {}
    for dy in (2, 0):
        keras.utils.set_random_seed(0)
        net = zoo.narx(3, dy, n_hidden=16)
        net.compile(keras.optimizers.Adam(1e-2), "mse")
        # Series-parallel training: the feedback taps receive the true outputs;
        # the test runs in closed loop on the model's own outputs.
        truths = {f"y{k}": y for k in range(1, dy + 1)}
        net.fit({"x": u, **truths}, y, batch_size=32, epochs=20, verbose=0)
        pred = net.predict(u_test, verbose=0)
        errors[dy] = float(np.mean((pred - y_test)[:, 20:] ** 2))
    assert errors[2] < 0.5 * errors[0], errors


@pytest.mark.slow
def test_vrnn_loss_falls_by_half():
    x = data.noisy_sines(128, 30, seed=0)
    net = zoo.vrnn(seed=0)
    net.compile(keras.optimizers.Adam(3e-3))
    first = net.evaluate(x, x, verbose=0)
    net.fit(x, x, batch_size=32, epochs=4, verbose=0)
    last = net.evaluate(x, x, verbose=0)
    assert np.isfinite(first) and last < 0.5 * first, (first, last)
