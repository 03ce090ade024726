"""The census of attractors (fbx.attractors), against closed forms, numpy iterations of
the same maps, and free runs of the model itself."""

import re

import keras
import numpy as np
import pytest

import fbexplorer as fbx

HELD = {"u": np.zeros(1, "float32")}


def map_net(fn, units=1, delay=1, name="map"):
    """s' = fn(s), with an input `u` that the map ignores; returns its state."""
    u = keras.Input((1,), name="u")
    s = fbx.Feedback((units,), name="s", delay=delay)
    h = keras.layers.Lambda(lambda t: fn(t[1]) + 0.0 * t[0], name="f")([u, s])
    return fbx.FeedbackModel(u, h, feedback={"s": h}, return_state=True, name=name)


def linear_net(a, b):
    """s' = A s + b u."""
    n = len(a)
    u = keras.Input((1,), name="u")
    s = fbx.Feedback((n,), name="s")
    dense_a = keras.layers.Dense(n, use_bias=False, name="A")
    dense_b = keras.layers.Dense(n, use_bias=False, name="B")
    h = keras.layers.Add(name="h")([dense_a(s), dense_b(u)])
    net = fbx.FeedbackModel(u, h, feedback={"s": h}, return_state=True, name="linear")
    dense_a.kernel.assign(np.asarray(a, "float32").T)
    dense_b.kernel.assign(np.asarray(b, "float32")[None])
    return net


def rotated(diagonal, seed=0):
    """Q diag Q^T for a random rotation Q: the eigenvalues `diagonal`, and Q."""
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(len(diagonal),) * 2))
    return q @ np.diag(diagonal) @ q.T, q


def logistic(r):
    return map_net(lambda x: r * x * (1.0 - x), name="logistic")


def unit_interval(n=64, seed=1):
    """Starting states inside (0, 1), where the logistic map stays."""
    return {"s": np.random.default_rng(seed).uniform(0.01, 0.99, (n, 1)).astype("float32")}


def flat_orbit(census, i):
    orbit = census.orbit(i)
    return np.concatenate([orbit[n].reshape(len(orbit[n]), -1) for n in census.names], axis=1)


def assert_free_runs_end_there(net, census, held, steps):
    """The model itself, called from each start with the inputs held, ends on the
    attractor the census lists for that start: a fixed point or a state of its cycle;
    on a continuum, the run's own endpoint."""
    n = len(census.labels)
    x = np.broadcast_to(held["u"], (n, steps) + held["u"].shape).astype("float32")
    _, states = net(x, initial_state=census.starts)
    end = np.concatenate([np.asarray(states[k]).reshape(n, -1) for k in census.names], axis=1)
    endpoints = np.concatenate([census.endpoints[k].reshape(n, -1) for k in census.names], axis=1)
    for i, kind in enumerate(census.frame["kind"]):
        mine = end[census.labels == i]
        if kind in ("fixed", "cycle"):
            orbit = flat_orbit(census, i)
            gap = np.abs(mine[:, None] - orbit[None]).max(axis=2).min(axis=1)
            assert (gap <= 1e-4).all(), (kind, gap.max())
        elif kind == "continuum":
            assert np.abs(mine - endpoints[census.labels == i]).max() <= 1e-4


# ------------------------------------------------------------ fixed points
def test_a_linear_contraction_has_one_fixed_attractor():
    a, _ = rotated([0.5, -0.3, 0.2])
    b = np.array([1.0, -2.0, 0.5])
    held = {"u": np.array([0.7], "float32")}
    net = linear_net(a, b)
    census = fbx.attractors(net, held, starts=32, steps=100)
    assert list(census.frame["kind"]) == ["fixed"] and census.frame["share"][0] == 1.0
    star = np.linalg.solve(np.eye(3) - a, b * 0.7)  # s = A s + b u
    np.testing.assert_allclose(census.states["s"][0], star, atol=1e-5)
    assert census.frame["max_lyapunov"][0] == pytest.approx(np.log(0.5), abs=1e-3)
    assert_free_runs_end_there(net, census, held, 100 + 2 * 16)


def root_of_x_equals_tanh_2x():
    """The positive root of x = tanh(2 x), by bisection in float64."""
    lo, hi = 0.5, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if np.tanh(2 * mid) > mid else (lo, mid)
    return lo


def test_tanh_with_gain_two_has_two_stable_points_of_half_the_starts_each():
    net = map_net(lambda x: keras.ops.tanh(2.0 * x), name="bistable")
    census = fbx.attractors(net, HELD, starts=256, steps=200)
    star = root_of_x_equals_tanh_2x()
    assert list(census.frame["kind"]) == ["fixed", "fixed"]
    np.testing.assert_allclose(np.sort(census.states["s"][:, 0]), [-star, star], atol=1e-6)
    np.testing.assert_allclose(census.frame["share"], 0.5, atol=0.1)
    assert census.frame["share"].sum() == pytest.approx(1.0)
    slope = 2.0 * (1.0 - star**2)  # d tanh(2x)/dx at the points
    np.testing.assert_allclose(census.frame["max_lyapunov"], np.log(slope), atol=1e-3)
    assert_free_runs_end_there(net, census, HELD, 200 + 2 * 16)


def test_refine_finds_the_exact_points_from_the_census():
    net = map_net(lambda x: keras.ops.tanh(2.0 * x), name="bistable")
    census = fbx.attractors(net, HELD, starts=16, steps=20, tolerance=1e-2)
    fp = census.refine(net)
    star = root_of_x_equals_tanh_2x()
    np.testing.assert_allclose(np.sort(fp.states["s"][:, 0]), [-star, star], atol=1e-6)
    assert fp.frame["stable"].all() and fp.n_starts == 2


def test_refine_with_a_period_gives_the_exact_cycle_and_its_multiplier():
    r = 3.2
    net = logistic(r)
    census = fbx.attractors(
        net, HELD, initial=unit_interval(16), steps=30, tolerance=1e-2, noise=0.0
    )
    assert census.periods() == [2]
    cycle = census.refine(net, period=2)
    closed = ((r + 1) + np.array([-1, 1]) * np.sqrt((r - 3) * (r + 1))) / (2 * r)
    assert len(cycle) == 1 and cycle.period == 2 and cycle.n_starts == 1
    np.testing.assert_allclose(np.sort(cycle.orbit(0)["s"][:, 0]), closed, atol=1e-6)
    assert cycle.eigenvalues[0, 0].real == pytest.approx(4 + 2 * r - r**2, abs=1e-4)
    assert cycle.frame["stability"][0] == "stable"


def test_refine_all_gives_the_points_and_the_cycles_of_a_delay_line():
    """s_t = tanh(2 s_{t-2}): fixed points (x, x), and the 2-cycle (x*, -x*) ->
    (-x*, x*), whose two-step map is tanh(2 .) on each slot: multipliers 2 (1 - x*^2)."""
    net = map_net(lambda x: keras.ops.tanh(2.0 * x), delay=2, name="delayed")
    census = fbx.attractors(net, HELD, starts=32, steps=60)
    refined = census.refine_all(net)
    assert list(refined) == census.periods() == [1, 2]
    star = root_of_x_equals_tanh_2x()
    points, cycles = refined[1], refined[2]
    stable = points.states["s"][points.frame["stable"].to_numpy(), :, 0]
    np.testing.assert_allclose(np.sort(stable[:, 0]), [-star, star], atol=1e-6)
    np.testing.assert_allclose(stable[:, 0], stable[:, 1], atol=1e-6)
    assert len(cycles) == 1 and cycles.period == 2
    orbit = cycles.orbit(0)["s"][:, :, 0]  # (2 states, 2 slots)
    np.testing.assert_allclose(np.abs(orbit), star, atol=1e-6)
    np.testing.assert_allclose(orbit[0], -orbit[0, ::-1], atol=1e-6)
    np.testing.assert_allclose(orbit[1], orbit[0, ::-1], atol=1e-6)
    np.testing.assert_allclose(cycles.eigenvalues[0].real, 2 * (1 - star**2), atol=1e-4)


@pytest.mark.parametrize("period", [3, 0, 2.0, "2"])
def test_refine_of_a_period_the_census_does_not_list_is_refused(period):
    census = fbx.attractors(logistic(3.2), HELD, initial=unit_interval(8), steps=30)
    for _ in range(2):
        with pytest.raises(ValueError, match=r"the census lists, \[2\]. Received: period="):
            census.refine(logistic(3.2), period=period)


# ------------------------------------------------------------------ cycles
def test_logistic_map_at_3_2_has_the_closed_form_two_cycle():
    r = 3.2
    net = logistic(r)
    census = fbx.attractors(net, HELD, initial=unit_interval(), steps=300, noise=0.0)
    assert list(census.frame["kind"]) == ["cycle"] and census.frame["period"][0] == 2
    closed = ((r + 1) + np.array([-1, 1]) * np.sqrt((r - 3) * (r + 1))) / (2 * r)
    np.testing.assert_allclose(np.sort(census.orbit(0)["s"][:, 0]), closed, atol=1e-5)
    multiplier = 4 + 2 * r - r**2  # of the two-step map, per step its log halved
    assert census.frame["max_lyapunov"][0] == pytest.approx(np.log(abs(multiplier)) / 2, abs=1e-3)
    assert census.settings["initial"] == "states"
    assert_free_runs_end_there(net, census, HELD, 300 + 2 * 16)


def test_logistic_map_at_3_5_has_period_four():
    r = 3.5
    x = 0.3
    for _ in range(2000):  # the reference: the same map in float64
        x = r * x * (1 - x)
    cycle = []
    for _ in range(4):
        x = r * x * (1 - x)
        cycle.append(x)
    census = fbx.attractors(logistic(r), HELD, initial=unit_interval(), steps=300, noise=0.0)
    assert list(census.frame["kind"]) == ["cycle"] and census.frame["period"][0] == 4
    np.testing.assert_allclose(np.sort(census.orbit(0)["s"][:, 0]), np.sort(cycle), atol=1e-5)


def test_a_delay_two_feedback_has_two_points_and_a_two_cycle():
    """s_t = tanh(2 s_{t-2}): each of the two slots settles on +-x* alone, so equal
    signs are fixed points and opposite signs a cycle of period 2."""
    net = map_net(lambda x: keras.ops.tanh(2.0 * x), delay=2, name="delayed")
    census = fbx.attractors(net, HELD, starts=256, steps=200)
    frame = census.frame
    assert sorted(frame["kind"]) == ["cycle", "fixed", "fixed"]
    star = root_of_x_equals_tanh_2x()
    assert census.states["s"].shape == (3, 2, 1)
    for i, kind in enumerate(frame["kind"]):
        history = census.states["s"][i, :, 0]
        np.testing.assert_allclose(np.abs(history), star, atol=1e-6)
        assert (history[0] == history[1]) == (kind == "fixed")
    np.testing.assert_allclose(frame["share"][frame["kind"] == "cycle"], 0.5, atol=0.1)
    per_step = np.log(2.0 * (1.0 - star**2)) / 2  # two steps make one step of tanh(2x)
    np.testing.assert_allclose(frame["max_lyapunov"], per_step, atol=1e-3)
    assert_free_runs_end_there(net, census, HELD, 200 + 2 * 16)


# ----------------------------------------------------------------- continua
@pytest.mark.parametrize("dimension", [1, 2])
def test_an_exact_line_or_plane_attractor_is_one_continuum(dimension):
    """Eigenvalue 1 along `dimension` directions, 0.5 along the other: every start
    ends on its own point of that line or plane."""
    a, q = rotated([1.0] * dimension + [0.5])
    net = linear_net(a, np.zeros(dimension + 1))
    census = fbx.attractors(net, HELD, starts=256, steps=100)
    assert list(census.frame["kind"]) == ["continuum"]
    assert census.frame["dimension"][0] == dimension and census.frame["share"][0] == 1.0
    ends = census.endpoints["s"]
    np.testing.assert_allclose(ends @ q[:, -1], 0.0, atol=1e-5)  # on the line / plane
    rank = np.linalg.matrix_rank(ends - ends.mean(axis=0), tol=1e-3)
    assert rank == dimension
    assert abs(census.frame["max_lyapunov"][0]) < 1e-3
    assert_free_runs_end_there(net, census, HELD, 100 + 2 * 16)


# ------------------------------------------------------- chaos, divergence
def test_logistic_map_at_4_is_irregular_with_exponent_ln_2():
    census = fbx.attractors(logistic(4.0), HELD, initial=unit_interval(), steps=1000, noise=0.0)
    first = census.frame.iloc[0]
    assert first["kind"] == "irregular" and first["share"] >= 0.9
    assert first["max_lyapunov"] == pytest.approx(np.log(2.0), abs=0.05)
    assert census.frame["share"].sum() == pytest.approx(1.0)


def test_census_exponent_agrees_with_lyapunov_on_the_same_runs():
    """Two estimates of one exponent: the census's two nearby runs (Benettin) and
    fbx.lyapunov's QR method on the model's Jacobians, from the same starts."""
    net = logistic(4.0)
    start = unit_interval(16)
    census = fbx.attractors(net, HELD, initial=start, starts=16, steps=600, noise=0.0)
    assert census.frame["kind"][0] == "irregular" and census.frame["share"][0] >= 0.9
    qr = fbx.lyapunov(net, np.zeros((16, 600, 1), "float32"), initial_state=start)
    chaotic = qr[census.labels == 0, 0]  # float32 rounding may send a run onto 0
    assert census.frame["max_lyapunov"][0] == pytest.approx(np.mean(chaotic), abs=0.03)
    assert np.mean(chaotic) == pytest.approx(np.log(2.0), abs=0.03)


def test_a_max_period_whose_search_would_not_end_is_refused():
    """The period search grows as max_period squared: refused before anything runs,
    with the largest max_period that fits, which runs."""
    with pytest.raises(ValueError, match=r"Pass max_period=(\d+) or less") as info:
        fbx.attractors(logistic(3.2), HELD, starts=4, max_period=10**6)
    fits = int(re.search(r"max_period=(\d+) or less", str(info.value)).group(1))
    assert fits * (2 * fits + 1) * 4 <= 10**11 < (fits + 1) * (2 * fits + 3) * 4
    with pytest.raises(ValueError, match="max_period"):
        fbx.attractors(logistic(3.2), HELD, starts=4, max_period=10**6)


def test_a_growing_linear_map_is_divergent():
    net = linear_net(np.diag([1.5, 0.2]), np.zeros(2))
    census = fbx.attractors(net, HELD, starts=8, steps=60)
    assert list(census.frame["kind"]) == ["divergent"] and census.frame["share"][0] == 1.0
    assert census.frame["max_lyapunov"][0] == pytest.approx(np.log(1.5), abs=1e-3)


# -------------------------------------------------------- cells, constants
def test_runs_of_a_cell_with_a_constant_and_a_delay_end_where_the_census_says():
    x = keras.Input((1,), name="u")
    c = keras.Input((2,), name="c")
    back = fbx.Feedback((3,), name="back", delay=2)
    inp = keras.layers.Concatenate(name="cat")([x, keras.layers.Dense(2, name="enc")(c), back])
    out = fbx.cell(keras.layers.GRUCell(3, name="gru"))(inp)
    y = keras.layers.Dense(3, activation="tanh", name="y")(out)
    net = fbx.FeedbackModel(
        x, y, constants=[c], feedback={"back": y}, return_state=True, name="rich"
    )
    held = {"u": np.array([0.5], "float32"), "c": np.array([1.0, -1.0], "float32")}
    census = fbx.attractors(net, held, starts=16, steps=150, max_period=4)
    assert census.names == ["back", "gru/h"]
    assert census.states["back"].shape[1:] == (2, 3)
    assert census.frame["share"].sum() == pytest.approx(1.0)
    assert set(census.frame["kind"]) <= {"fixed", "cycle"}
    n = len(census.labels)
    x_seq = np.full((n, 150 + 8, 1), 0.5, "float32")
    const = np.broadcast_to(held["c"], (n, 2))
    _, states = net({"u": x_seq, "c": const}, initial_state=census.starts)
    end = np.concatenate([np.asarray(states[k]).reshape(n, -1) for k in census.names], axis=1)
    for i in range(len(census)):
        orbit = flat_orbit(census, i)
        gap = np.abs(end[census.labels == i][:, None] - orbit[None]).max(axis=2).min(axis=1)
        assert (gap <= 1e-4).all()


def test_a_slow_line_is_a_continuum_of_slow_points_with_slow_tolerance():
    """Eigenvalue 0.9999 along a line: the runs drift too slowly to settle within
    `tolerance`, so they are irregular with a negative exponent, unless the slow
    points count (`slow_tolerance`): then the line is one continuum."""
    a, q = rotated([0.9999, 0.5])
    net = linear_net(a, np.zeros(2))
    unsettled = fbx.attractors(net, HELD, starts=64, steps=100)
    first = unsettled.frame.iloc[0]  # runs near 0 move less than `tolerance`, and settle
    assert first["kind"] == "irregular" and first["share"] > 0.5
    assert first["max_lyapunov"] == pytest.approx(np.log(0.9999), abs=1e-4)
    assert (unsettled.frame["kind"] == "irregular").sum() == 1
    census = fbx.attractors(net, HELD, starts=64, steps=100, slow_tolerance=1e-3)
    assert list(census.frame["kind"]) == ["continuum"] and census.frame["dimension"][0] == 1
    np.testing.assert_allclose(census.endpoints["s"] @ q[:, -1], 0.0, atol=1e-5)


def test_starts_visited_on_data_end_where_free_runs_of_the_model_end():
    x = keras.Input((1,), name="u")
    loop = fbx.Feedback((4,), name="h")
    d = keras.layers.Dense(4, activation="tanh", name="d")
    h = d(keras.layers.Concatenate(name="cat")([x, loop]))
    net = fbx.FeedbackModel(x, h, feedback={"h": h}, return_state=True, name="elman")
    rng = np.random.default_rng(3)
    d.kernel.assign(rng.normal(0, 0.9, (5, 4)).astype("float32"))
    data = rng.normal(size=(3, 10, 1)).astype("float32")
    held = {"u": np.array([0.2], "float32")}
    census = fbx.attractors(net, held, initial=data, starts=16, steps=200, max_period=4)
    assert census.settings["initial"] == "visited"
    assert set(census.frame["kind"]) <= {"fixed", "cycle"}
    assert_free_runs_end_there(net, census, held, 200 + 2 * 4)


@pytest.mark.jax
def test_census_on_jax():
    """`make test`'s JAX run: the closed-form checks above, on JAX."""
    test_tanh_with_gain_two_has_two_stable_points_of_half_the_starts_each()
    test_logistic_map_at_3_2_has_the_closed_form_two_cycle()
    test_a_delay_two_feedback_has_two_points_and_a_two_cycle()
    test_refine_with_a_period_gives_the_exact_cycle_and_its_multiplier()
