"""Dynamics: fixed points, Jacobians and gradient flow, against closed forms and references."""

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

import fbexplorer as fbx


def linear_delay_net(a, delay):
    """x_t = A x_{t-d} + u_t: a Dense without bias on the delayed value, plus the input."""
    n = a.shape[0]
    u = keras.Input((n,), name="u")
    loop = fbx.Feedback((n,), name="loop", delay=delay)
    dense = keras.layers.Dense(n, use_bias=False, name="A")
    h = keras.layers.Add(name="h")([dense(loop), u])
    net = fbx.FeedbackModel(u, h, feedback={"loop": h}, name="linear")
    dense.kernel.assign(a.T)  # Dense computes v @ kernel
    return net


def elman(units=6, inputs=2, gain=1.6, seed=0):
    x = keras.Input((inputs,), name="x")
    loop = fbx.Feedback((units,), name="h")
    d = keras.layers.Dense(units, activation="tanh", name="d")
    h = d(keras.layers.Concatenate(name="cat")([x, loop]))
    y = keras.layers.Dense(1, name="out")(h)
    net = fbx.FeedbackModel(x, y, feedback={"h": h}, name="elman")
    rng = np.random.default_rng(seed)
    kernel = rng.normal(0, gain / np.sqrt(units), (inputs + units, units)).astype("float32")
    d.kernel.assign(kernel)
    d.bias.assign(rng.normal(0, 0.1, units).astype("float32"))
    return net


def rich_net():
    """An LSTMCell, a constant, and a delay-2 feedback of the cell's output."""
    x = keras.Input((2,), name="x")
    c = keras.Input((3,), name="c")
    back = fbx.Feedback((4,), name="back", delay=2)
    enc = keras.layers.Dense(3, name="enc")(c)
    inp = keras.layers.Concatenate(name="cat")([x, enc, back])
    out = fbx.cell(keras.layers.LSTMCell(4, name="lstm"))(inp)
    y = keras.layers.Dense(4, activation="tanh", name="y")(out)
    return fbx.FeedbackModel(x, y, constants=[c], feedback={"back": y}, name="rich")


# ---------------------------------------------------------------- fixed points
@pytest.mark.parametrize("delay", [1, 3])
def test_linear_delay_loop_matches_closed_form(delay):
    rng = np.random.default_rng(1)
    a = rng.normal(0, 0.4, (3, 3)).astype("float32")
    b = rng.normal(0, 1, 3).astype("float32")
    net = linear_delay_net(a, delay)
    fp = fbx.fixed_points(net, {"u": b}, n_starts=8)
    assert len(fp) == 1
    star = np.linalg.solve(np.eye(3) - a.astype("float64"), b)
    hist = fp.states["loop"][0]
    assert hist.shape == ((3,) if delay == 1 else (delay, 3))
    np.testing.assert_allclose(hist.reshape(delay, 3), np.tile(star, (delay, 1)), atol=1e-4)

    # The augmented Jacobian: shift blocks, and A acting on the oldest slot.
    jac = fp.jacobian(0)
    ref = np.zeros((3 * delay, 3 * delay))
    for j in range(delay - 1):
        ref[3 * j : 3 * j + 3, 3 * (j + 1) : 3 * (j + 2)] = np.eye(3)
    ref[-3:, :3] = a
    np.testing.assert_allclose(jac, ref, atol=1e-5)

    # Its eigenvalues are the d-th roots of eig(A).
    mu = np.linalg.eigvals(a.astype("float64"))
    roots = np.concatenate(
        [
            m ** (1 / delay) * np.exp(2j * np.pi * np.arange(delay) / delay)
            for m in mu.astype(complex)
        ]
    )
    found = fp.eigenvalues[0]
    assert found.shape == (3 * delay,)
    for r in roots:
        assert np.min(np.abs(found - r)) < 1e-4
    rho = np.max(np.abs(mu)) ** (1 / delay)
    assert fp.frame["spectral_radius"][0] == pytest.approx(rho, rel=1e-5)
    assert bool(fp.frame["stable"][0]) == (rho < 1)
    assert fp.frame["n_unstable"][0] == 0


def test_unstable_linear_loop_counts_unstable_directions():
    a = np.diag([1.5, 0.5, -2.0]).astype("float32")
    net = linear_delay_net(a, 2)
    fp = fbx.fixed_points(net, {"u": np.ones(3, "float32")}, n_starts=4)
    assert len(fp) == 1 and not fp.frame["stable"][0]
    assert fp.frame["n_unstable"][0] == 4  # two roots each of 1.5 and -2.0
    assert fp.frame["spectral_radius"][0] == pytest.approx(np.sqrt(2.0), rel=1e-5)


def test_elman_jacobian_is_diag_one_minus_h_squared_times_w():
    net = elman()
    x = np.array([0.3, -0.2], "float32")
    fp = fbx.fixed_points(net, {"x": x}, n_starts=64, seed=1)
    assert len(fp) >= 1
    kernel = net.step_model.get_layer("d").kernel.numpy().astype("float64")
    bias = net.step_model.get_layer("d").bias.numpy()
    w_h = kernel[2:].T  # h_new = tanh(W_x x + W_h h + b)
    for i in range(len(fp)):
        h = fp.states["h"][i].astype("float64")
        np.testing.assert_allclose(np.tanh(x @ kernel[:2] + h @ kernel[2:] + bias), h, atol=1e-5)
        ref = np.diag(1 - h**2) @ w_h
        np.testing.assert_allclose(fp.jacobian(i), ref, atol=1e-5)
        np.testing.assert_allclose(
            np.sort(np.abs(fp.eigenvalues[i])), np.sort(np.abs(np.linalg.eigvals(ref))), atol=1e-4
        )
    # Distinct points only, each below the tolerance.
    assert (fp.frame["q"] < fp.settings["tolerance"]).all()
    flat = fp.flat
    for i in range(len(fp)):
        for j in range(i):
            assert np.linalg.norm(flat[i] - flat[j]) > fp.settings["dedupe_tolerance"]


def assert_points_are_fixed(net, fp, held, steps=30):
    """Every point, fed as initial_state with the input held, stays put (one
    sample per point)."""
    g, n = net.graph, len(fp)
    seqs = {k: np.broadcast_to(held[k], (n, steps) + held[k].shape) for k in g.input_names}
    consts = {k: np.broadcast_to(held[k], (n,) + held[k].shape) for k in g.constant_names}
    df = fbx.trace(net, {**seqs, **consts}, nodes=fp.names, initial_state=fp.states)
    rho = np.maximum(1.0, fp.frame["spectral_radius"].to_numpy())
    # Float rounding grows by at most the spectral radius per step.
    allowed = 1e-5 + 1e-5 * rho[:, None] ** np.arange(1, steps + 1)[None]
    for spec in g.specs:
        point = fp.states[spec.name]
        newest = (point if spec.delay == 1 else point[:, -1]).reshape(n, 1, -1)
        got = fbx.wide(df, node=spec.name).to_numpy().reshape(n, steps, -1)
        assert (np.abs(got - newest).max(axis=2) <= allowed).all(), spec.name


def test_points_of_an_elman_net_are_fixed_under_the_model():
    net = elman(gain=2.0)
    held = {"x": np.array([0.1, 0.0], "float32")}
    X = np.random.default_rng(0).normal(size=(4, 12, 2)).astype("float32")
    fp = fbx.fixed_points(net, held, initial=X, n_starts=48, noise=0.3)
    assert len(fp) >= 2 and fp.settings["initial"] == "visited"
    assert_points_are_fixed(net, fp, held)


def test_points_of_a_cell_with_a_constant_and_a_delay_are_fixed_under_the_model():
    net = rich_net()
    held = {"x": np.array([0.5, -0.5], "float32"), "c": np.array([1.0, 0.0, -1.0], "float32")}
    fp = fbx.fixed_points(net, held, n_starts=32)
    assert fp.names == ["back", "lstm/h", "lstm/c"]
    assert fp.states["back"].shape[1:] == (2, 4)
    assert fp.states["lstm/c"].shape[1:] == (4,)
    assert fp.eigenvalues.shape == (len(fp), 2 * 4 + 4 + 4)
    assert len(fp) >= 1
    assert_points_are_fixed(net, fp, held)


def test_settings_are_reported_and_select_keeps_rows():
    net = elman(gain=2.0)
    fp = fbx.fixed_points(
        net, {"x": np.zeros(2, "float32")}, n_starts=16, tolerance=1e-9, seed=3, noise=0.0
    )
    s = fp.settings
    assert (s["n_starts"], s["tolerance"], s["seed"], s["method"]) == (16, 1e-9, 3, "newton")
    assert {"iterations", "learning_rate", "dedupe_tolerance", "slow_tolerance"} <= set(s)
    stable = fp.select(fp.frame["stable"].to_numpy())
    assert len(stable) == int(fp.frame["stable"].sum())
    assert stable.frame["stable"].all()


def test_slow_points_come_from_a_looser_tolerance():
    net = elman(gain=2.5, seed=2)
    held = {"x": np.zeros(2, "float32")}
    fixed = fbx.fixed_points(net, held, n_starts=64, iterations=30)
    slow = fbx.fixed_points(net, held, n_starts=64, iterations=30, slow_tolerance=1e-2)
    assert len(slow) >= len(fixed)
    assert (slow.frame["q"] < 1e-2).all()
    assert (slow.frame["slow"] == (slow.frame["q"] > 1e-10)).all()


def test_adam_lowers_q():
    net = elman()
    held = {"x": np.zeros(2, "float32")}
    fp = fbx.fixed_points(
        net, held, method="adam", iterations=300, slow_tolerance=1e-3, learning_rate=0.02
    )
    assert len(fp) >= 1 and fp.settings["method"] == "adam"
    assert (fp.frame["q"] < 1e-3).all()


# ---------------------------------------------------------------- gradient flow
def scalar_loop(w):
    x = keras.Input((1,), name="x")
    loop = fbx.Feedback((1,), name="loop")
    dense = keras.layers.Dense(1, use_bias=False, name="w")
    h = keras.layers.Add(name="h")([dense(loop), x])
    net = fbx.FeedbackModel(x, h, feedback={"loop": h}, name="scalar")
    dense.kernel.assign([[w]])
    return net


@pytest.mark.parametrize("w", [0.5, 1.3])
def test_gradient_of_the_last_step_is_a_power_of_w(w):
    T = 12
    net = scalar_loop(w)
    X = np.random.default_rng(0).normal(size=(2, T, 1)).astype("float32")
    df = fbx.gradient_flow(net, X)
    assert list(df.columns) == ["sample", "t", "node", "unit", "gradient"]
    assert list(df["node"].cat.categories) == ["x", "loop", "w", "h"]
    t = np.arange(T)
    for node, power in [("x", T - 1 - t), ("h", T - 1 - t), ("loop", T - t), ("w", T - 1 - t)]:
        for s in (0, 1):
            got = df[(df.node == node) & (df["sample"] == s)].sort_values("t")["gradient"]
            np.testing.assert_allclose(got.to_numpy(), w**power, rtol=1e-5)
    norms = fbx.gradient_norms(df)
    x_norm = norms[norms.node == "x"]["norm"].to_numpy()
    np.testing.assert_allclose(x_norm, np.abs(w) ** (T - 1 - t), rtol=1e-5)
    fig = fbx.plot_gradient_norms(df)
    assert fig.layout.yaxis.type == "log" and len(fig.data) == 4


def test_gradient_flow_equals_a_gradient_tape_reference():
    net = elman(units=5, inputs=3, gain=1.2)
    net.compile(loss="mse")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(4, 7, 3)).astype("float32")
    Y = rng.normal(size=(4, 7, 1)).astype("float32")
    df = fbx.gradient_flow(net, X, Y, nodes=["x", "d", "h"])

    # Reference: the step model, unrolled eagerly under a tape.
    sm = net.step_model
    xs = [tf.constant(X[:, t]) for t in range(7)]
    with tf.GradientTape(persistent=True) as tape:
        for v in xs:
            tape.watch(v)
        h = tf.zeros((4, 5))
        feds, hs, ys = [], [], []
        for t in range(7):
            fed = tf.identity(h)  # the value fed back, apart from the one that made it
            tape.watch(fed)
            feds.append(fed)
            y, h = sm([xs[t], fed])
            hs.append(h)
            ys.append(y)
        loss = keras.losses.MeanSquaredError()(Y, tf.stack(ys, axis=1))
    checks = {"x": xs, "d": hs, "h": feds}
    for node, tensors in checks.items():
        ref = np.stack([tape.gradient(loss, v).numpy() for v in tensors], axis=1)
        got = fbx.wide(df.rename(columns={"gradient": "value"}), node=node).to_numpy()
        np.testing.assert_allclose(got, ref.reshape(-1, ref.shape[-1]), rtol=1e-4, atol=1e-7)


def test_gradient_flow_with_a_loss_and_samples():
    net = elman()
    rng = np.random.default_rng(0)
    X = rng.normal(size=(5, 6, 2)).astype("float32")
    Y = rng.normal(size=(5, 6, 1)).astype("float32")
    picked = fbx.gradient_flow(net, X, Y, loss="mae", nodes="d", samples=[1, 3])
    alone = fbx.gradient_flow(net, X[[1, 3]], Y[[1, 3]], loss="mae", nodes="d")
    assert sorted(picked["sample"].unique()) == [1, 3]
    np.testing.assert_allclose(picked["gradient"], alone["gradient"], rtol=1e-6)
    # A cell's states and a constant are nodes too.
    net = rich_net()
    data = {"x": X[:2, :, :2], "c": rng.normal(size=(2, 3)).astype("float32")}
    df = fbx.gradient_flow(net, data)
    assert {"lstm/h", "lstm/c", "back", "lstm"} <= set(df["node"].astype(str))
    last = df[(df.node == "y") & (df.t == 5)]["gradient"]
    np.testing.assert_allclose(last, 1.0)  # L is the sum of the last outputs


# ---------------------------------------------------------------- bad input
def test_bad_input_gets_one_clear_error():
    net = elman()
    with pytest.raises(ValueError, match="has no input 'y'"):
        fbx.fixed_points(net, {"y": np.zeros(2)})
    with pytest.raises(ValueError, match=r"input 'x' is held at one value of shape \(2,\)"):
        fbx.fixed_points(net, {"x": np.zeros((4, 2))})
    x = keras.Input((2,), name="x")
    plain = fbx.FeedbackModel(x, keras.layers.Dense(2)(x), name="plain")
    with pytest.raises(ValueError, match="has no feedback, so it has no state"):
        fbx.fixed_points(plain, {"x": np.zeros(2)})
    with pytest.raises(ValueError, match="has no node 'nope'"):
        fbx.gradient_flow(net, np.zeros((1, 3, 2), "float32"), nodes=["nope"])
    with pytest.raises(ValueError, match="not compiled with a loss"):
        fbx.gradient_flow(net, np.zeros((1, 3, 2), "float32"), np.zeros((1, 3, 1)))
    with pytest.raises(ValueError, match="column 'gradient' is missing"):
        fbx.gradient_norms(pd.DataFrame({"sample": [], "t": [], "node": []}))
