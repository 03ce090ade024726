"""fbx.lyapunov against closed forms: the logistic and Hénon maps, linear maps,
a delay line. Runs on the backend KERAS_BACKEND names (TensorFlow by default;
`KERAS_BACKEND=jax pytest tests/test_lyapunov.py` for JAX)."""

import keras
import numpy as np
import pytest

import fbexplorer as fbx

LN2 = float(np.log(2.0))


def logistic(delay=1, r=4.0):
    """`x_t = r x_{t-delay} (1 - x_{t-delay}) + u_t`: with u = 0, the logistic map
    (each of `delay` interleaved copies of it)."""
    u = keras.Input((1,), name="u")
    x = fbx.Feedback((1,), name="x", delay=delay)
    y = keras.layers.Lambda(lambda v: r * v[0] * (1.0 - v[0]) + v[1], name="f")([x, u])
    return fbx.FeedbackModel(u, y, feedback={"x": y}, name="logistic")


def henon(a=1.4, b=0.3):
    """`(x, y)' = (1 - a x^2 + y, b x)`, a model without per-step inputs (a constant c = 0)."""
    c = keras.Input((1,), name="c")
    x = fbx.Feedback((1,), name="x")
    y = fbx.Feedback((1,), name="y")
    new_x = keras.layers.Lambda(lambda v: 1.0 - a * v[0] ** 2 + v[1] + v[2], name="fx")([x, y, c])
    new_y = keras.layers.Lambda(lambda v: b * v, name="fy")(x)
    return fbx.FeedbackModel([], new_x, constants=[c], feedback={"x": new_x, "y": new_y})


def linear(A, delay=1):
    """`h_t = A h_{t-delay} + u_t`: its Jacobian is A (a shift of the history for a delay)."""
    d = A.shape[0]
    u = keras.Input((d,), name="u")
    h = fbx.Feedback((d,), name="h", delay=delay)
    dense = keras.layers.Dense(d, use_bias=False, name="A")
    y = keras.layers.Add(name="y")([dense(h), u])
    net = fbx.FeedbackModel(u, y, feedback={"h": y}, name="linear")
    dense.kernel.assign(A.T.astype("float32"))  # Dense computes h @ kernel
    return net


def starts(samples, low, high, shape=(1,), seed=1):
    return np.random.default_rng(seed).uniform(low, high, (samples,) + shape).astype("float32")


# ------------------------------------------------------------ the logistic map
def test_logistic_map_at_r4_has_exponent_ln2():
    """At r = 4 the logistic map is conjugate to the tent map (x = sin^2(pi y / 2)),
    whose every step stretches by 2: the sum of ln|f'(x_t)| over N steps is
    N ln 2 plus ln h'(y_N) - ln h'(y_0) of the conjugacy, so a trajectory's
    estimate is off by O(1/N) (about 0.01 for N = 450, unless it ends near
    x = 0 or 1). In float32 a trajectory that lands on x = 1 falls onto the
    fixed point 0 (exponent ln 4; about 1e-4 per step), hence the median."""
    T, discard = 500, 50
    lam = fbx.lyapunov(
        logistic(),
        np.zeros((16, T, 1), "float32"),
        initial_state={"x": starts(16, 0.1, 0.9)},
        discard=discard,
    )
    assert lam.shape == (16, 1) and lam.dtype == np.float64
    assert abs(np.median(lam[:, 0]) - LN2) < 0.02


def test_logistic_exponent_is_the_mean_log_derivative_along_the_traced_run():
    """In one dimension the exponent is the mean of ln|f'(x_t)| = ln|4 (1 - 2 x_t)|
    over the counted steps: checked per sample on the model's own trajectory."""
    T, discard = 200, 30
    x0 = starts(4, 0.1, 0.9)
    X = np.zeros((4, T, 1), "float32")
    net = logistic()
    lam = fbx.lyapunov(net, X, initial_state={"x": x0}, discard=discard)
    fed = fbx.trace(net, X, initial_state={"x": x0}, nodes=["x"], as_arrays=True)["x"][..., 0]
    expected = np.log(np.abs(4.0 * (1.0 - 2.0 * fed[:, discard:].astype("float64")))).mean(1)
    np.testing.assert_allclose(lam[:, 0], expected, atol=1e-4)


def test_default_discard_is_a_tenth_of_the_length():
    T = 100
    x0 = starts(2, 0.1, 0.9)
    net, X = logistic(), np.zeros((2, T, 1), "float32")
    fed = fbx.trace(net, X, initial_state={"x": x0}, nodes=["x"], as_arrays=True)["x"][..., 0]
    expected = np.log(np.abs(4.0 * (1.0 - 2.0 * fed[:, T // 10 :].astype("float64")))).mean(1)
    lam = fbx.lyapunov(net, X, initial_state={"x": x0})
    np.testing.assert_allclose(lam[:, 0], expected, atol=1e-4)


# ----------------------------------------------------------------- Hénon map
def test_henon_map_exponents():
    """Largest 0.41922 (Sprott 2003, Chaos and Time-Series Analysis). Over 900
    counted steps a trajectory's estimate spreads by 0.0125 (sd, from 200 runs
    of a float64 numpy QR loop), the mean of 8 by 0.0044: 0.025 is 5.6 sd. The
    two sum to ln|det J| = ln b at every step, so to float rounding."""
    start = starts(8, -0.1, 0.1)
    lam = fbx.lyapunov(
        henon(),
        {"c": np.zeros((8, 1), "float32")},
        steps=1000,
        discard=100,
        initial_state={"x": start, "y": 0.3 * start},
    )
    assert lam.shape == (8, 2)
    assert abs(lam[:, 0].mean() - 0.41922) < 0.025
    np.testing.assert_allclose(lam.sum(axis=1), np.log(0.3), atol=1e-4)
    assert (lam[:, 1] < lam[:, 0]).all()
    only = fbx.lyapunov(
        henon(),
        {"c": np.zeros((8, 1), "float32")},
        steps=1000,
        discard=100,
        n=1,
        initial_state={"x": start, "y": 0.3 * start},
    )
    np.testing.assert_allclose(only[:, 0], lam[:, 0], atol=1e-4)


# --------------------------------------------------------------- linear maps
def test_linear_map_exponents_are_log_moduli_of_its_eigenvalues():
    """A non-normal A with eigenvalues 1.1, -0.8, 0.5: the QR iteration aligns the
    frame with A's Schur vectors at the rate of the eigenvalue ratios (0.73 per
    step), so after 50 discarded steps the estimates are exact to float error."""
    rng = np.random.default_rng(3)
    V = rng.normal(size=(3, 3))
    A = V @ np.diag([1.1, -0.8, 0.5]) @ np.linalg.inv(V)
    X = rng.normal(size=(3, 150, 3)).astype("float32")  # driven: J is A all the same
    lam = fbx.lyapunov(linear(A), X, discard=50)
    expected = np.sort(np.log(np.abs(np.linalg.eigvals(A))))[::-1]
    assert lam.shape == (3, 3)
    np.testing.assert_allclose(lam, np.broadcast_to(expected, (3, 3)), atol=2e-3)
    two = fbx.lyapunov(linear(A), X, discard=50, n=2)
    np.testing.assert_allclose(two, lam[:, :2], atol=2e-3)


# --------------------------------------------------------------- delay lines
def test_delay_line_is_state():
    """`h_t = w h_{t-2} + u_t`: the state is the two-step history, the map shifts it
    (`J = [[0, 1], [w, 0]]`, `J^2 = w I`), so both exponents are ln|w| / 2 exactly
    over an even number of counted steps; a delay-1 view would give ln|w|."""
    w = 0.25
    X = np.random.default_rng(0).normal(size=(2, 40, 1)).astype("float32")
    lam = fbx.lyapunov(linear(np.array([[w]]), delay=2), X, discard=10)
    assert lam.shape == (2, 2)
    np.testing.assert_allclose(lam, np.log(w) / 2, atol=1e-5)


def test_delayed_logistic_map_is_two_interleaved_copies():
    """`x_t = f(x_{t-2})`: two logistic maps taking turns, each stretched by 2 every
    other step: both exponents ln 2 / 2 (median over samples, as above)."""
    T = 600
    x0 = starts(12, 0.1, 0.9, shape=(2, 1))
    lam = fbx.lyapunov(
        logistic(delay=2), np.zeros((12, T, 1), "float32"), initial_state={"x": x0}, discard=60
    )
    assert lam.shape == (12, 2)
    assert abs(np.median(lam[:, 0]) - LN2 / 2) < 0.02
    assert abs(np.median(lam.sum(axis=1)) - LN2) < 0.02


# --------------------------------------------------------------- bad input
@pytest.mark.parametrize("n", [0, 3, 1.5, True])
def test_n_out_of_range(n):
    with pytest.raises(
        ValueError, match=r"`n` is how many exponents.*from 1 to the state's size, 2"
    ):
        fbx.lyapunov(linear(np.eye(1), delay=2), np.zeros((2, 5, 1), "float32"), n=n)


@pytest.mark.parametrize("discard", [5, 6, -1, 2.0])
def test_discard_out_of_range(discard):
    with pytest.raises(ValueError, match=r"`discard` .* an integer from 0 to 4"):
        fbx.lyapunov(linear(np.eye(1)), np.zeros((2, 5, 1), "float32"), discard=discard)


# ------------------------------------------------- cells, driven runs, direction
def qr_exponents(jacobians, discard):
    """The QR method in float64 numpy: `jacobians` (T, D, D) of one trajectory."""
    frame = np.linalg.qr(np.random.default_rng(5).normal(size=jacobians.shape[1:]))[0]
    total = np.zeros(jacobians.shape[1])
    for t, jac in enumerate(jacobians):
        frame, r = np.linalg.qr(jac @ frame)
        total += np.log(np.abs(np.diag(r))) * (t >= discard)
    return np.sort(total / (len(jacobians) - discard))[::-1]


def test_cell_state_against_a_numpy_qr_loop_on_the_traced_run():
    """A driven SimpleRNNCell, `h' = tanh(x W + h U + b)`: its Jacobian is
    `diag(1 - h'^2) U^T`, from the traced states; the numpy loop starts from
    another frame, which 30 discarded steps align."""
    x = keras.Input((2,), name="x")
    rnn = keras.layers.SimpleRNNCell(4, name="rnn")
    net = fbx.FeedbackModel(x, fbx.cell(rnn)(x), feedback={}, name="cellnet")
    rng = np.random.default_rng(0)
    U = rng.normal(size=(4, 4)) * 1.25
    rnn.recurrent_kernel.assign(U.astype("float32"))
    X = rng.normal(size=(3, 80, 2)).astype("float32") * 0.5
    h0 = {"rnn/h": rng.uniform(-0.5, 0.5, (3, 4)).astype("float32")}
    lam = fbx.lyapunov(net, X, discard=30, initial_state=h0)
    h = fbx.trace(net, X, initial_state=h0, nodes=["rnn"], as_arrays=True)["rnn"]
    jacobians = (1.0 - h.astype("float64") ** 2)[..., :, None] * U.T  # (3, 80, 4, 4)
    expected = np.stack([qr_exponents(j, 30) for j in jacobians])
    np.testing.assert_allclose(lam, expected, atol=1e-4)


def test_go_backwards_runs_the_inputs_from_the_end():
    """A driven logistic map (u moves the orbit): a model that reads its inputs
    backwards has the exponents of the forward model on the reversed inputs."""
    rng = np.random.default_rng(2)
    X = rng.uniform(-0.02, 0.02, (3, 60, 1)).astype("float32")
    x0 = {"x": starts(3, 0.2, 0.8)}

    def model(**options):
        u = keras.Input((1,), name="u")
        x = fbx.Feedback((1,), name="x")
        y = keras.layers.Lambda(lambda v: 3.9 * v[0] * (1.0 - v[0]) + v[1], name="f")([x, u])
        return fbx.FeedbackModel(u, y, feedback={"x": y}, **options)

    back = fbx.lyapunov(model(go_backwards=True), X, initial_state=x0, discard=5)
    forward = fbx.lyapunov(model(), X[:, ::-1], initial_state=x0, discard=5)
    other = fbx.lyapunov(model(), X, initial_state=x0, discard=5)
    np.testing.assert_allclose(back, forward, atol=1e-5)
    assert np.abs(back - other).max() > 1e-3  # the direction matters here


def test_new_weights_are_read_at_every_call():
    """`h' = a h + u`: the exponent is ln|a|, also after the weight changes (the
    compiled pass, kept on the model on TensorFlow, reads the weights as it runs)."""
    net, X = linear(np.array([[0.5]])), np.ones((2, 20, 1), "float32")
    np.testing.assert_allclose(fbx.lyapunov(net, X), np.log(0.5), atol=1e-6)
    net.get_layer("A").kernel.assign([[-2.0]])
    np.testing.assert_allclose(fbx.lyapunov(net, X), np.log(2.0), atol=1e-6)


def test_a_diverging_sample_gets_nan_and_leaves_the_others_alone():
    """x0 = 2 runs off to -inf under the logistic map; 0.3 and 0.7 share their
    orbit after one step (f(0.3) = f(0.7)), so they share their exponents."""
    x0 = np.array([[0.3], [2.0], [0.7]], "float32")
    lam = fbx.lyapunov(logistic(), np.zeros((3, 200, 1), "float32"), initial_state={"x": x0})
    assert np.isnan(lam[1]).all() and np.isfinite(lam[[0, 2]]).all()
    np.testing.assert_allclose(lam[0], lam[2], atol=1e-5)


@pytest.mark.jax
def test_lyapunov_on_jax():
    """`make test`'s JAX run: the closed-form checks above, on JAX."""
    test_logistic_map_at_r4_has_exponent_ln2()
    test_linear_map_exponents_are_log_moduli_of_its_eigenvalues()
    test_delay_line_is_state()
