"""Where saddles lead (FixedPoints.connections, fbx.connection_graph), against closed
forms of small maps and free runs of the model itself."""

import itertools

import keras
import numpy as np
import pytest

import fbexplorer as fbx

HELD = {"u": np.zeros(1, "float32")}


def map_net(fn, units=1, name="map"):
    """s' = fn(s), with an input `u` that the map ignores; its output is the state."""
    u = keras.Input((1,), name="u")
    s = fbx.Feedback((units,), name="s")
    h = keras.layers.Lambda(lambda t: fn(t[1]) + 0.0 * t[0], name="f")([u, s])
    return fbx.FeedbackModel(u, h, feedback={"s": h}, name=name)


def diagonal_tanh(gains):
    """s' = tanh(diag(gains) s): each unit on its own."""
    w = np.asarray(gains, "float32")
    return map_net(lambda x: keras.ops.tanh(x * w), units=len(gains), name="diagonal")


def root(w):
    """The positive root of x = tanh(w x) (w > 1), by bisection in float64."""
    lo, hi = 1e-3, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if np.tanh(w * mid) > mid else (lo, mid)
    return lo


def nudged_starts(fp, links, nudge=1e-3):
    """The nudged states, rebuilt from `fp.eigenvectors` (not from the code under test)."""
    starts = []
    for saddle, mode, part, sign in links[["saddle", "mode", "part", "sign"]].itertuples(False):
        _, right, _ = fp.eigenvectors(saddle)
        v = right[:, mode].real if part == "real" else right[:, mode].imag
        starts.append(fp.flat[saddle] + sign * nudge * v / np.linalg.norm(v))
    return np.asarray(starts, "float32")


def assert_free_runs_agree(net, fp, links, tolerance=1e-4):
    """The model itself, run from each nudged state, is within `tolerance` of the
    attractor the row names at the row's step, and not a step earlier (a stable one)."""
    starts = nudged_starts(fp, links)
    n, steps = len(starts), int(links["steps"].max())
    out = np.asarray(net(np.zeros((n, steps, 1), "float32"), initial_state={"s": starts}))
    for k, row in enumerate(links.itertuples()):
        assert row.outcome == "landed"
        gap = np.linalg.norm(out[k] - fp.flat[row.attractor], axis=1)
        assert gap[row.steps - 1] <= tolerance, (row, gap[row.steps - 1])
        if fp.frame["stable"][row.attractor]:
            assert gap[row.steps - 2] > tolerance * 0.999, row


def test_the_saddle_of_tanh_2x_connects_both_stable_points():
    net = map_net(lambda x: keras.ops.tanh(2.0 * x), name="bistable")
    fp = fbx.fixed_points(net, HELD, n_starts=16)
    links = fp.connections(net)
    star = root(2.0)
    saddle = int(np.argmin(np.abs(fp.flat[:, 0])))
    assert fp.frame["n_unstable"][saddle] == 1 and abs(fp.flat[saddle, 0]) < 1e-6
    assert list(links["saddle"]) == [saddle, saddle]
    assert list(links["direction"]) == ["+0", "-0"]
    reached = fp.flat[links["attractor"].to_numpy(int), 0]
    np.testing.assert_allclose(np.sort(reached), [-star, star], atol=1e-6)
    assert fp.frame["stable"][links["attractor"].to_numpy(int)].all()
    np.testing.assert_allclose(links["eigenvalue"].to_numpy().real, 2.0, atol=1e-5)  # tanh'(0) w
    assert_free_runs_agree(net, fp, links)


def test_a_diagonal_pair_links_source_to_saddles_and_saddles_to_corners():
    """s' = tanh(diag(2, 3) s): the 9 points are each unit at 0 or +-its root; a zero
    unit is unstable, and a nudge along it ends with that unit at its root, of the
    nudge's sign, the other unit unchanged (on the axes, y stays exactly 0)."""
    gains = (2.0, 3.0)
    net = diagonal_tanh(gains)
    roots = np.array([root(g) for g in gains])
    grid = np.array(list(itertools.product(*[(-r, 0.0, r) for r in roots])), "float32")
    fp = fbx.fixed_points(net, HELD, initial={"s": grid}, n_starts=9, noise=0.0)
    assert len(fp) == 9
    links = fp.connections(net)
    got, want = set(), set()
    for row in links.itertuples():
        got.add((row.saddle, row.attractor))
    for i, point in enumerate(fp.flat):
        for k in np.flatnonzero(np.abs(point) < 1e-6):  # an unstable unit: both signs
            for sign in (-1, 1):
                target = point.copy()
                target[k] = sign * roots[k]
                want.add((i, int(np.argmin(np.abs(fp.flat - target).max(axis=1)))))
    assert got == want and len(links) == 2 * fp.frame["n_unstable"].sum() == 12
    assert (links["outcome"] == "landed").all()
    assert_free_runs_agree(net, fp, links)
    source = int(np.flatnonzero(fp.frame["n_unstable"] == 2)[0])
    some = fp.connections(net, saddles=[source, -1])  # a stable last point adds no row
    mine = links[links["saddle"] == source].reset_index(drop=True)
    assert (some["saddle"] == source).all() and len(some) == 4
    assert list(some["attractor"]) == list(mine["attractor"])


@pytest.fixture(scope="module")
def diagonal():
    """s' = tanh(diag(2, 3) s), its 9 points (from 64 uniform starts) and their links."""
    net = diagonal_tanh((2.0, 3.0))
    fp = fbx.fixed_points(net, HELD, n_starts=64)
    return net, fp, fp.connections(net)


def test_every_stable_point_survives_a_nudge(diagonal):
    """The model, run from each stable point nudged in 8 random directions, returns."""
    net, fp, _ = diagonal
    stable = np.flatnonzero(fp.frame["stable"])
    assert len(stable) == 4
    d = np.random.default_rng(0).normal(size=(8, 2))
    d *= 0.05 / np.linalg.norm(d, axis=1, keepdims=True)
    for i in stable:
        starts = (fp.flat[i] + d).astype("float32")
        out = np.asarray(net(np.zeros((8, 60, 1), "float32"), initial_state={"s": starts}))
        np.testing.assert_allclose(out[:, -1], np.broadcast_to(fp.flat[i], (8, 2)), atol=1e-5)


def test_a_complex_pair_is_nudged_along_both_parts_and_circles_unsettled():
    """s' = tanh(1.2 R s), R a rotation by 1 radian: the origin's pair of modulus
    1.2 leads to an invariant circle, where no run settles."""
    c, s = np.cos(1.0), np.sin(1.0)
    w = keras.ops.convert_to_tensor(1.2 * np.array([[c, s], [-s, c]], "float32"))
    net = map_net(lambda x: keras.ops.tanh(keras.ops.matmul(x, w)), units=2, name="spiral")
    grid = np.zeros((1, 2), "float32")
    fp = fbx.fixed_points(net, HELD, initial={"s": grid}, n_starts=1, noise=0.0)
    links = fp.connections(net, steps=200)
    assert list(links["direction"]) == ["+0re", "-0re", "+0im", "-0im"]
    np.testing.assert_allclose(np.abs(links["eigenvalue"]), 1.2, atol=1e-5)
    assert (links["outcome"] == "unsettled").all() and links["attractor"].isna().all()
    assert (links["steps"] == 200).all()


def test_a_growing_linear_mode_diverges():
    u = keras.Input((1,), name="u")
    s = fbx.Feedback((2,), name="s")
    dense = keras.layers.Dense(2, use_bias=False, name="A")
    h = keras.layers.Add(name="h")([dense(s), 0.0 * keras.layers.Dense(2, name="B")(u)])
    net = fbx.FeedbackModel(u, h, feedback={"s": h}, name="linear")
    dense.kernel.assign(np.diag([1.5, 0.5]).astype("float32"))
    fp = fbx.fixed_points(net, HELD, initial={"s": np.zeros((1, 2))}, n_starts=1, noise=0.0)
    links = fp.connections(net)
    assert list(links["outcome"]) == ["divergent", "divergent"]
    growth = np.log(1e6 / 1e-3) / np.log(1.5)  # steps for 1e-3 to pass 1e6
    assert (np.abs(links["steps"] - growth) <= 2).all()


def test_a_point_whose_run_settles_on_a_cycle_is_unsettled():
    """The logistic map at r = 3.2: from its unstable point 1 - 1/r, the runs end on
    the 2-cycle, which a period-1 result does not list."""
    net = map_net(lambda x: 3.2 * x * (1.0 - x), name="logistic")
    start = {"s": np.array([[1 - 1 / 3.2]], "float32")}
    fp = fbx.fixed_points(net, HELD, initial=start, n_starts=1, noise=0.0)
    links = fp.connections(net, steps=300)
    assert list(links["outcome"]) == ["unsettled", "unsettled"]
    cycles = fbx.fixed_points(net, HELD, initial=start, n_starts=4, noise=0.1, period=2)
    assert cycles.frame["stable"].all() and len(cycles.connections(net)) == 0  # no saddle


def test_connection_graph_draws_each_link_once_with_escaped_labels(diagonal):
    _, fp, links = diagonal
    dot = fbx.connection_graph(fp, links)
    pairs = {(r.saddle, r.attractor) for r in links.itertuples()}
    assert dot.source.count("->") == len(pairs) == 12
    svg = dot.pipe(format="svg").decode()
    assert svg.count('class="edge"') == 12 and svg.count('class="node"') == 9
    assert "stable" in svg and "unstable" in svg
    hostile = links.copy()  # a frame edited by hand: its text is shown as it is
    hostile["direction"] = ['"];\n<b>x</b> \\N &amp;'] * len(links)
    svg = fbx.connection_graph(fp, hostile).pipe(format="svg").decode()
    assert svg.count('class="edge"') == 12 and "<b>" not in svg
    assert "&quot;];" in svg and "&lt;b&gt;x&lt;/b&gt; \\N &amp;amp;" in svg


def test_connection_graph_names_runs_that_end_nowhere():
    c, s = np.cos(1.0), np.sin(1.0)
    w = keras.ops.convert_to_tensor(1.2 * np.array([[c, s], [-s, c]], "float32"))
    net = map_net(lambda x: keras.ops.tanh(keras.ops.matmul(x, w)), units=2, name="spiral")
    fp = fbx.fixed_points(net, HELD, initial={"s": np.zeros((1, 2))}, n_starts=1, noise=0.0)
    dot = fbx.connection_graph(fp, fp.connections(net, steps=20))
    assert '"point-0" -> unsettled' in dot.source
    assert "+0re, -0re, +0im, -0im" in dot.source


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({"nudge": 0.0}, "`nudge` is the distance of each nudge from the saddle"),
        ({"steps": 0}, "`steps` is the most steps of each run, an integer >= 1"),
        ({"tolerance": float("nan")}, "Received: tolerance=nan"),
        ({"settle_tolerance": True}, "Received: settle_tolerance=True"),
        ({"saddles": [3]}, "`saddles` are points' rows in .frame, integers from -3 to 2"),
        ({"saddles": [0.0]}, "Received: saddles=[0.0]"),
    ],
)
def test_bad_settings_are_refused_at_every_call(kwargs, expected):
    net = map_net(lambda x: keras.ops.tanh(2.0 * x), name="bistable")
    three = {"s": np.array([[-0.9], [0.0], [0.9]], "float32")}
    fp = fbx.fixed_points(net, HELD, initial=three, n_starts=3, noise=0.0)
    assert len(fp) == 3
    for _ in range(2):
        with pytest.raises(ValueError, match="FixedPoints.connections") as info:
            fp.connections(net, **kwargs)
        assert expected in str(info.value)


@pytest.mark.jax
def test_connections_on_jax():
    """`make test`'s JAX run: the closed-form checks above, on JAX."""
    test_the_saddle_of_tanh_2x_connects_both_stable_points()
    test_a_diagonal_pair_links_source_to_saddles_and_saddles_to_corners()


def test_a_run_that_settles_near_a_slow_stable_point_has_landed_there():
    """x' = x + x (1 - x^2) / (2 (1 + 499 x^2)): a fast saddle at 0 (slope 1.5) and
    slow stable points at +-1 (slope 1 - 1/500). The runs move less than
    `settle_tolerance` a step while still 5e-4 away, beyond `tolerance`: settled
    while converging, at most `moved / (1 - 0.998)` from the point."""
    net = map_net(lambda x: x + x * (1 - x * x) / (2 * (1 + 499 * x * x)), name="slow")
    three = {"s": np.array([[-1.0], [0.0], [1.0]], "float32")}
    fp = fbx.fixed_points(net, HELD, initial=three, n_starts=3, noise=0.0)
    np.testing.assert_allclose(fp.frame["spectral_radius"], [0.998, 1.5, 0.998], atol=1e-4)
    links = fp.connections(net, steps=20_000)
    assert list(links["outcome"]) == ["landed", "landed"]
    np.testing.assert_allclose(np.sort(fp.flat[links["attractor"].to_numpy(int), 0]), [-1, 1])
    assert (links["distance"] > 1e-4).all() and (links["distance"] < 7e-4).all()
