"""Stability labels, linearisation and periodic orbits of fixed_points, against closed forms."""

import keras
import numpy as np
import pytest

import fbexplorer as fbx


def linear_net(a, b=None):
    """x' = A x + B u: two Dense layers without bias, on the fed-back state and the input."""
    n = a.shape[0]
    b = np.eye(n, dtype="float32") if b is None else b
    u = keras.Input((b.shape[1],), name="u")
    loop = fbx.Feedback((n,), name="x")
    da = keras.layers.Dense(n, use_bias=False, name="A")
    db = keras.layers.Dense(n, use_bias=False, name="B")
    h = keras.layers.Add(name="h")([da(loop), db(u)])
    net = fbx.FeedbackModel(u, h, feedback={"x": h}, name="linear")
    da.kernel.assign(a.T)  # Dense computes v @ kernel
    db.kernel.assign(b.T)
    return net


def rotation(angle):
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s], [s, c]])


def conjugated(diagonal, angle=0.7):
    """P diag P^T in float32, for an orthogonal P: eigenvalues `diagonal`, up to rounding."""
    p = rotation(angle)
    return (p @ np.diag(diagonal) @ p.T).astype("float32")


# ------------------------------------------------------------------ labels
def test_line_attractor_is_marginal_contraction_stable_expansion_unstable():
    zero = {"u": np.zeros(2, "float32")}
    line = fbx.fixed_points(linear_net(conjugated([1.0, 0.5])), zero, n_starts=16)
    assert len(line) > 1  # a line of points, each of them an exact fixed point
    assert (line.frame["stability"] == "marginal").all()
    assert not line.frame["stable"].any() and (line.frame["n_unstable"] == 0).all()
    assert line.settings["marginal_tolerance"] == 1e-3  # the default
    np.testing.assert_allclose(line.frame["spectral_radius"], 1.0, atol=1e-5)
    # The points lie on the eigenvector of eigenvalue 1.
    direction = rotation(0.7)[:, 0]
    x = line.states["x"]
    np.testing.assert_allclose(x - np.outer(x @ direction, direction), 0, atol=1e-4)

    shrink = fbx.fixed_points(linear_net(conjugated([0.9, -0.5])), zero, n_starts=4)
    grow = fbx.fixed_points(linear_net(conjugated([1.5, 0.3])), zero, n_starts=4)
    assert list(shrink.frame["stability"]) == ["stable"] and shrink.frame["stable"][0]
    assert list(grow.frame["stability"]) == ["unstable"] and not grow.frame["stable"][0]
    assert grow.frame["n_unstable"][0] == 1
    assert "1 stable" in repr(shrink) and "1 unstable" in repr(grow)
    assert set(shrink.frame["stability"].cat.categories) == {"stable", "marginal", "unstable"}


def test_marginal_tolerance_is_the_band_around_one():
    net = linear_net(conjugated([0.95, 0.5]))
    zero = {"u": np.zeros(2, "float32")}
    fp = fbx.fixed_points(net, zero, n_starts=4, marginal_tolerance=0.1)
    assert fp.settings["marginal_tolerance"] == 0.1
    assert list(fp.frame["stability"]) == ["marginal"] and not fp.frame["stable"][0]
    fp = fbx.fixed_points(net, zero, n_starts=4, marginal_tolerance=0.01)
    assert list(fp.frame["stability"]) == ["stable"]


# ------------------------------------------------------------ linearisation
def skewed(values):
    """P diag(values) P^-1 for a P that is not orthogonal: left and right
    eigenvectors differ."""
    p = np.array([[1.0, 0.4, 0.0], [0.0, 1.0, -0.5], [0.3, 0.0, 1.0]])
    return p, (p @ np.diag(values) @ np.linalg.inv(p)).astype("float32")


def test_linear_map_has_closed_form_modes_tau_and_input_jacobian():
    values = np.array([0.9, -0.5, 0.2])
    p, a = skewed(values)
    b = np.array([[1.0, 0.0], [0.5, -1.0], [0.0, 2.0]], "float32")
    u = np.array([0.3, -0.7], "float32")
    fp = fbx.fixed_points(linear_net(a, b), {"u": u}, n_starts=4)
    assert len(fp) == 1
    a64 = a.astype("float64")
    star = np.linalg.solve(np.eye(3) - a64, b.astype("float64") @ u)
    np.testing.assert_allclose(fp.states["x"][0], star, atol=1e-5)

    got, right, left = fp.eigenvectors(0)
    np.testing.assert_allclose(got, values, atol=1e-5)  # by decreasing modulus
    np.testing.assert_allclose(got, fp.eigenvalues[0], atol=1e-6)
    jac = fp.jacobian(0).astype("float64")
    np.testing.assert_allclose(jac @ right, right @ np.diag(got), atol=1e-6)
    np.testing.assert_allclose(left @ jac, np.diag(got) @ left, atol=1e-5)
    np.testing.assert_allclose(left @ right, np.eye(3), atol=1e-9)
    np.testing.assert_allclose(np.linalg.norm(right, axis=0), 1.0)
    # Each right eigenvector is a column of P, each left one a row of P^-1, up to scale.
    inv = np.linalg.inv(p)
    for m in range(3):
        col = p[:, m] / np.linalg.norm(p[:, m])
        assert abs(abs(col @ right[:, m].real) - 1) < 1e-5
        row = inv[m] / np.linalg.norm(inv[m])
        assert abs(abs(row @ left[m].real) / np.linalg.norm(left[m]) - 1) < 1e-5

    assert fp.frame["tau"][0] == pytest.approx(-1 / np.log(0.9), rel=1e-5)
    jacobians = fp.input_jacobian(0)
    assert list(jacobians) == ["u"] and jacobians["u"].shape == (3, 2)
    np.testing.assert_allclose(jacobians["u"], b, atol=1e-6)
    # Kept through select.
    np.testing.assert_allclose(fp.select([0]).input_jacobian(0)["u"], b, atol=1e-6)


def test_tau_is_infinite_at_one_and_negative_above():
    zero = {"u": np.zeros(2, "float32")}
    line = fbx.fixed_points(linear_net(np.diag([1.0, 0.5]).astype("float32")), zero, n_starts=8)
    assert len(line) > 1 and np.isinf(line.frame["tau"]).all()
    grow = fbx.fixed_points(linear_net(np.diag([1.5, 0.3]).astype("float32")), zero, n_starts=4)
    assert grow.frame["tau"][0] == pytest.approx(-1 / np.log(1.5), rel=1e-6)


def elman(units=4, gain=1.5, seed=0):
    x = keras.Input((2,), name="x")
    loop = fbx.Feedback((units,), name="h")
    d = keras.layers.Dense(units, activation="tanh", name="d")
    h = d(keras.layers.Concatenate(name="cat")([x, loop]))
    net = fbx.FeedbackModel(x, h, feedback={"h": h}, name="elman")
    rng = np.random.default_rng(seed)
    d.kernel.assign(rng.normal(0, gain / np.sqrt(units), (2 + units, units)).astype("float32"))
    d.bias.assign(rng.normal(0, 0.3, units).astype("float32"))
    return net


def one_step(net, start, x):
    """The state after one step of the model itself from `start` `(n, units)`, input `x`."""
    seqs = np.broadcast_to(x, (len(start), 1, 2)).astype("float32")
    out = fbx.trace(net, seqs, nodes=["d"], initial_state={"h": start}, as_arrays=True)
    return out["d"][:, 0].astype("float64")  # the new value (node "h" is the one fed in)


def test_linearisation_predicts_the_model_step_for_small_perturbations():
    net = elman()
    x = np.array([0.2, -0.1], "float32")
    fp = fbx.fixed_points(net, {"x": x}, n_starts=16)
    assert len(fp) >= 1
    s, jac, b = fp.states["h"][0], fp.jacobian(0), fp.input_jacobian(0)["x"]
    rng = np.random.default_rng(0)
    errors = {}
    for scale in (1e-2, 1e-3):
        d = rng.normal(size=(6, 4)) * scale
        du = rng.normal(size=2) * scale
        moved = one_step(net, (s + d).astype("float32"), x + du.astype("float32"))
        linear = s + d @ jac.T + b @ du
        errors[scale] = np.abs(moved - linear).max()
        assert errors[scale] < 10 * scale**2 + 1e-5  # second order in the perturbation
        assert np.abs(moved - s - d).max() > 0.1 * scale  # ... while the step itself moved it
    assert errors[1e-2] > 5 * errors[1e-3]


# ----------------------------------------------------------- periodic orbits
class Logistic(keras.layers.Layer):
    """x' = r x (1 - x) + u, with r a constant (non-trainable) weight."""

    def __init__(self, r, **kwargs):
        super().__init__(**kwargs)
        self.r = float(r)

    def build(self, shapes):
        init = keras.initializers.Constant(self.r)
        self.rate = self.add_weight(shape=(), initializer=init, trainable=False, name="r")

    def call(self, inputs):
        x, u = inputs
        return self.rate * x * (1.0 - x) + u


def logistic(r):
    u = keras.Input((1,), name="u")
    loop = fbx.Feedback((1,), name="x")
    y = Logistic(r, name="map")([loop, u])
    return fbx.FeedbackModel(u, y, feedback={"x": y}, name="logistic")


ZERO = {"u": np.zeros(1, "float32")}


def free_run(net, start, steps):
    """`(n, steps)`: the model run freely (u = 0) from the states `start` `(n,)`."""
    n = len(start)
    out = net(np.zeros((n, steps, 1), "float32"), initial_state={"x": start.reshape(n, 1)})
    return np.asarray(out)[:, :, 0].astype("float64")


def assert_orbits_close(net, fp):
    """Each orbit, run freely by the model, visits its states in order and returns."""
    k = fp.period
    for i in range(len(fp)):
        orbit = fp.orbit(i)["x"][:, 0].astype("float64")
        assert orbit.shape == (k,) and orbit[0] == fp.states["x"][i, 0]
        run = free_run(net, orbit[:1].astype("float32"), k)[0]
        np.testing.assert_allclose(run, np.roll(orbit, -1), atol=1e-5)


def test_logistic_fixed_points_and_two_cycle_match_closed_forms():
    r = 3.2
    net = logistic(r)
    fixed = fbx.fixed_points(net, ZERO, n_starts=32)
    np.testing.assert_allclose(np.sort(fixed.states["x"][:, 0]), [0.0, 1 - 1 / r], atol=1e-6)
    assert (fixed.frame["period"] == 1).all() and fixed.orbit(0)["x"].shape == (1, 1)
    slope = np.sort(r * (1 - 2 * fixed.states["x"][:, 0]))
    np.testing.assert_allclose(np.sort(fixed.eigenvalues[:, 0].real), slope, atol=1e-5)
    assert (fixed.frame["stability"] == "unstable").all()

    cycle = fbx.fixed_points(net, ZERO, n_starts=32, period=2)
    assert len(cycle) == 1 and cycle.period == 2  # one orbit, not its two phases
    assert list(cycle.frame["period"]) == [2] and cycle.settings["period"] == 2
    root = np.sqrt((r - 3) * (r + 1))
    expected = np.sort([(r + 1 - root) / (2 * r), (r + 1 + root) / (2 * r)])
    np.testing.assert_allclose(np.sort(cycle.orbit(0)["x"][:, 0]), expected, atol=1e-5)
    multiplier = 4 + 2 * r - r**2
    np.testing.assert_allclose(cycle.eigenvalues[0], [multiplier], atol=1e-4)
    assert list(cycle.frame["stability"]) == ["stable"]
    assert cycle.frame["tau"][0] == pytest.approx(-1 / np.log(multiplier), rel=1e-3)
    # dF^2/du = F'(x1) + 1: the input enters at both steps.
    x0, x1 = cycle.orbit(0)["x"][:, 0].astype("float64")
    np.testing.assert_allclose(cycle.input_jacobian(0)["u"], [[r * (1 - 2 * x1) + 1]], atol=1e-4)
    assert_orbits_close(net, cycle)
    # No 3-cycles exist before r = 1 + sqrt(8); the fixed points are not listed again.
    assert len(fbx.fixed_points(net, ZERO, n_starts=32, period=3)) == 0


def test_logistic_period_four_is_the_attractor_of_a_free_run():
    r = 3.5
    net = logistic(r)
    fp = fbx.fixed_points(net, ZERO, n_starts=64, period=4)
    assert len(fp) == 1 and "1 orbit of period 4" in repr(fp)
    assert_orbits_close(net, fp)
    orbit = np.sort(fp.orbit(0)["x"][:, 0])
    settled = free_run(net, np.array([0.5], "float32"), 400)[0, -4:]
    np.testing.assert_allclose(orbit, np.sort(settled), atol=1e-5)
    multiplier = np.prod(r * (1 - 2 * fp.orbit(0)["x"][:, 0].astype("float64")))
    np.testing.assert_allclose(fp.eigenvalues[0], [multiplier], atol=1e-4)
    assert abs(multiplier) < 1 and fp.frame["stable"][0]
    # The 2-cycle and the fixed points (period 1, 2 divide 4) are not listed again.
    two = fbx.fixed_points(net, ZERO, n_starts=32, period=2).orbit(0)["x"][:, 0]
    assert np.min(np.abs(orbit[:, None] - two[None])) > 0.01


@pytest.mark.parametrize("period", [0, -2, 2.0, True, "2", None])
def test_a_period_that_is_no_positive_integer_is_refused(period):
    with pytest.raises(ValueError, match=r"`period` is .* an integer >= 1\. Received: period="):
        fbx.fixed_points(logistic(3.2), ZERO, period=period)


def test_readout_alignment_is_the_cosine_between_readout_and_mode():
    """y = C x read from the state fed in: the read-out directions are C's rows."""
    values = np.array([0.9, -0.5, 0.2])
    p, a = skewed(values)
    slow = p[:, 0] / np.linalg.norm(p[:, 0])
    c = np.stack([slow, [1.0, 0.0, 0.0]]).astype("float32")  # along mode 0; the first unit
    u = keras.Input((3,), name="u")
    loop = fbx.Feedback((3,), name="x")
    da = keras.layers.Dense(3, use_bias=False, name="A")
    h = keras.layers.Add(name="h")([da(loop), u])
    read = keras.layers.Dense(2, use_bias=False, name="C")
    net = fbx.FeedbackModel(u, read(loop), feedback={"x": h}, name="read")
    da.kernel.assign(a.T)
    read.kernel.assign(c.T)
    fp = fbx.fixed_points(net, {"u": np.ones(3, "float32")}, n_starts=4)
    table = fp.readout_alignment(0, modes=3)
    assert list(table.columns) == ["output", "unit", "mode", "eigenvalue", "alignment"]
    assert len(table) == 2 * 3 and set(table["output"]) == {"C"}
    got = table.pivot(index="unit", columns="mode", values="alignment").to_numpy()
    cols = p / np.linalg.norm(p, axis=0)
    expected = np.abs(c.astype("float64") @ cols) / np.linalg.norm(c, axis=1)[:, None]
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert got[0, 0] == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(table["eigenvalue"].to_numpy()[:3], values, atol=1e-5)


def delayed_tanh(w=2.0):
    """x_t = tanh(w x_{t-2}): a delay-2 edge, so the state is (x_{t-2}, x_{t-1})."""
    u = keras.Input((1,), name="u")
    loop = fbx.Feedback((1,), name="x", delay=2)
    d = keras.layers.Dense(1, activation="tanh", use_bias=False, name="d")
    y = d(keras.layers.Concatenate(name="cat")([loop, u]))
    net = fbx.FeedbackModel(u, y, feedback={"x": y}, name="delayed")
    d.kernel.assign(np.array([[w], [0.0]], "float32"))
    return net


def test_two_cycles_of_a_delay_line_match_closed_forms_and_the_model():
    w, net = 2.0, delayed_tanh()
    star = 0.5  # x* = tanh(w x*), by fixed-point iteration in float64
    for _ in range(200):
        star = np.tanh(w * star)
    fp = fbx.fixed_points(net, ZERO, n_starts=64, period=2)
    # F^2(p, q) = (tanh wp, tanh wq): of least period 2, the three orbits with p != q.
    assert len(fp) == 3 and fp.states["x"].shape == (3, 2, 1)

    def rounded(i):  # the orbit's states, each slot as -1, 0 or 1 (x* = 1)
        return frozenset(tuple(np.rint(h[:, 0] / star).astype(int)) for h in fp.orbit(i)["x"])

    expected = [{(1, -1), (-1, 1)}, {(0, 1), (1, 0)}, {(0, -1), (-1, 0)}]
    assert sorted(map(sorted, map(rounded, range(3)))) == sorted(map(sorted, expected))
    for i in range(len(fp)):
        h = fp.states["x"][i, :, 0].astype("float64")
        assert np.all(np.isclose(np.abs(h), star, atol=1e-5) | np.isclose(h, 0, atol=1e-5))
        assert not np.isclose(h[0], h[1], atol=1e-3)
        slopes = np.sort(w * (1 - np.tanh(w * h) ** 2))[::-1]  # F^2's Jacobian is diagonal
        np.testing.assert_allclose(np.abs(fp.eigenvalues[i]), slopes, atol=1e-4)
        assert fp.frame["stable"][i] == (abs(h[0]) > 0.5 and abs(h[1]) > 0.5)
        # The model itself, started on the orbit, is back after two steps.
        out = np.asarray(net(np.zeros((1, 2, 1), "float32"), initial_state=fp.initial_state(i)))
        np.testing.assert_allclose(out[0, :, 0], h, atol=1e-5)
        assert fp.orbit(i)["x"].shape == (2, 2, 1)
        np.testing.assert_allclose(fp.orbit(i)["x"][1, :, 0], h[::-1], atol=1e-5)


def test_a_stable_cycle_survives_a_nudge():
    net = logistic(3.2)
    fp = fbx.fixed_points(net, ZERO, n_starts=32, period=2)
    orbit = fp.orbit(0)["x"][:, 0]
    nudged = orbit[:1] + np.array([0.01, -0.01, 0.003], "float32")
    run = free_run(net, nudged, 200)  # back on the orbit, in phase: 0.16 shrinks per 2 steps
    np.testing.assert_allclose(run[:, -2:], np.tile(orbit[[1, 0]], (3, 1)), atol=1e-5)


# ------------------------------------------------------------------ drawing
def test_portrait_draws_marginal_and_slow_points_apart():
    zero = {"u": np.zeros(2, "float32")}
    net = linear_net(conjugated([1.0, 0.5]))
    line = fbx.fixed_points(net, zero, n_starts=16)
    seq = np.zeros((2, 5, 2), "float32")
    fig = fbx.portrait(net, seq, fixed_points=line)
    drawn = {trace.name: trace for trace in fig.data[2:]}
    assert list(drawn) == ["marginal fixed points"]
    assert drawn["marginal fixed points"].marker.symbol == "square-open"
    assert list(drawn["marginal fixed points"].customdata) == list(range(len(line)))

    net = elman(gain=2.5)
    held = {"x": np.zeros(2, "float32")}
    fp = fbx.fixed_points(net, held, method="adam", iterations=100, slow_tolerance=1e-2)
    slow = fp.frame["slow"].to_numpy()
    assert slow.any()
    fig = fbx.portrait(net, np.zeros((2, 5, 2), "float32"), fixed_points=fp)
    drawn = {trace.name: trace for trace in fig.data[2:]}
    assert list(drawn["slow points"].customdata) == list(np.flatnonzero(slow))
    assert drawn["slow points"].marker.symbol == "diamond-open"
    listed = sorted(r for trace in drawn.values() for r in trace.customdata)
    assert listed == list(range(len(fp)))  # each point drawn once


def test_linearisation_error_is_second_order_and_catches_a_wrong_jacobian():
    net, other = elman(), elman(seed=1)
    held = {"x": np.array([0.2, -0.1], "float32")}
    fp = fbx.fixed_points(net, held, n_starts=16)
    small, smaller = fp.linearisation_error(net, 0, scale=1e-2), fp.linearisation_error(net, 0)
    assert small.shape == (8,) and small.max() < 0.1 and smaller.max() < 0.01
    assert np.median(small) > 3 * np.median(smaller)  # shrinks with the perturbation
    # The same points, linearised with another network's Jacobians, are far off.
    wrong = fbx.fixed_points(other, held, n_starts=16)
    assert wrong.linearisation_error(net, 0).min() > 0.1
    cycle = fbx.fixed_points(logistic(3.2), ZERO, n_starts=16, period=2)
    assert cycle.linearisation_error(logistic(3.2), 0, scale=1e-4).max() < 1e-2
    with pytest.raises(ValueError, match="Pass the model they were found for"):
        cycle.linearisation_error(net, 0)


@pytest.mark.jax
def test_linearisation_on_jax():
    """`make test`'s JAX run: the closed-form checks above, on JAX."""
    test_linear_map_has_closed_form_modes_tau_and_input_jacobian()
    test_logistic_fixed_points_and_two_cycle_match_closed_forms()
    test_two_cycles_of_a_delay_line_match_closed_forms_and_the_model()
