"""Trace arrays, unit heatmaps and phase portraits against independent references."""

import re
import types

import keras
import numpy as np
import pandas as pd
import pytest
from sklearn.decomposition import PCA

import fbexplorer as fbx

B, T, N = 3, 12, 4


def lstm_loop_net():
    """x -> Dense -> LSTM cell -> Dense, the last fed back: states `loop`, `lstm/h`, `lstm/c`."""
    x = keras.Input((2,), name="x")
    loop = fbx.Feedback((N,), name="loop")
    h = keras.layers.Dense(N, activation="tanh", name="d1")(
        keras.layers.Concatenate(name="cat")([x, loop])
    )
    c = fbx.cell(keras.layers.LSTMCell(3, name="lstm"))(h)
    y = keras.layers.Dense(N, activation="tanh", name="d2")(c)
    return fbx.FeedbackModel(x, y, feedback={"loop": y})


def linear_net(delay, w_loop, w_x, bias):
    """h_t = x_t W_x + h_{t-delay} W_loop + b: with x held at 0 its fixed point is b (I - W_loop)^-1."""
    n = len(bias)
    x = keras.Input((w_x.shape[0],), name="x")
    loop = fbx.Feedback((n,), name="loop", delay=delay)
    dense = keras.layers.Dense(n, name="h")
    h = dense(keras.layers.Concatenate(name="cat")([x, loop]))
    net = fbx.FeedbackModel(x, h, feedback={"loop": h}, name="linear")
    dense.set_weights([np.concatenate([w_x, w_loop]).astype("float32"), bias.astype("float32")])
    return net


def fixed_points_of(states, stable):
    """A stand-in with the contract of fbx.fixed_points's result."""
    return types.SimpleNamespace(states=states, frame=pd.DataFrame({"stable": stable}))


def same_up_to_sign(a, b, atol):
    """Columns of `a` equal those of `b`, each possibly negated."""
    for k in range(a.shape[-1]):
        sign = np.sign(np.sum(a[..., k] * b[..., k]))
        np.testing.assert_allclose(a[..., k], sign * b[..., k], atol=atol)


# ------------------------------------------------------------- trace arrays
def test_as_arrays_equal_the_tidy_frame_reshaped(rng):
    net = lstm_loop_net()
    seq = rng.normal(size=(B, T, 2)).astype("float32")
    df = fbx.trace(net, seq, samples=[2, 0])
    arrays = fbx.trace(net, seq, samples=[2, 0], as_arrays=True)
    assert list(arrays) == list(df["node"].cat.categories)
    assert {"loop", "lstm/h", "lstm/c", "d1", "lstm", "d2", "x"} <= set(arrays)
    for node, a in arrays.items():
        assert isinstance(a, np.ndarray)
        wide = fbx.wide(df, node=node)
        for row, sample in enumerate([2, 0]):  # rows follow the samples asked for
            np.testing.assert_array_equal(a[row], wide.loc[sample].to_numpy())
    np.testing.assert_allclose(arrays["d2"], np.asarray(net(seq))[[2, 0]], atol=1e-6)


def test_as_arrays_keep_the_shape_of_spatial_maps(rng):
    x = keras.Input((4, 4, 1), name="img")
    top = fbx.Feedback((4, 4, 2), name="top")
    c = keras.layers.Conv2D(2, 3, padding="same", activation="tanh", name="conv")(
        keras.layers.Concatenate(name="cat")([x, top])
    )
    net = fbx.FeedbackModel(x, c, feedback={"top": c})
    seq = rng.normal(size=(2, 5, 4, 4, 1)).astype("float32")
    arrays = fbx.trace(net, seq, nodes=["conv", "top"], as_arrays=True)
    out = np.asarray(net(seq))
    assert arrays["conv"].shape == (2, 5, 4, 4, 2)
    np.testing.assert_allclose(arrays["conv"], out, atol=1e-5)
    np.testing.assert_allclose(arrays["top"][:, 1:], out[:, :-1], atol=1e-5)
    np.testing.assert_array_equal(arrays["top"][:, 0], 0)
    flat = fbx.wide(fbx.trace(net, seq, nodes="conv"), node="conv").to_numpy()
    np.testing.assert_array_equal(arrays["conv"].reshape(10, 32), flat)


# ---------------------------------------------------------------------- PCA
def test_pca_equals_sklearn_up_to_sign(rng):
    # Two nodes, one spatial, with most variance in a few directions.
    latent = rng.normal(size=(5, 20, 3)) * [3.0, 1.5, 0.5]
    mix = rng.normal(size=(3, 14))
    data = latent @ mix + 0.05 * rng.normal(size=(5, 20, 14)) + 2.0
    arrays = {"a": data[..., :6], "b": data[..., 6:].reshape(5, 20, 2, 2, 2)}
    for dims in (2, 3):
        coords, pca = fbx.pca_project(arrays, dims)
        ref = PCA(n_components=dims, svd_solver="full").fit(data.reshape(-1, 14))
        assert coords.shape == (5, 20, dims)
        same_up_to_sign(coords.reshape(-1, dims), ref.transform(data.reshape(-1, 14)), 1e-8)
        same_up_to_sign(pca.components.T, ref.components_.T, 1e-10)
        np.testing.assert_allclose(pca.mean, ref.mean_)
        np.testing.assert_allclose(pca.explained_variance, ref.explained_variance_)
        np.testing.assert_allclose(pca.explained_variance_ratio, ref.explained_variance_ratio_)
        np.testing.assert_allclose(pca.components @ pca.components.T, np.eye(dims), atol=1e-12)
        # Projecting the same values again gives the same coordinates.
        np.testing.assert_allclose(pca.transform(arrays), coords, atol=1e-12)
        assert pca.nodes == ("a", "b") and pca.shapes == ((6,), (2, 2, 2))
    # `nodes` picks and orders the nodes; a lone node is its own data.
    coords, pca = fbx.pca_project(arrays, 2, nodes=["b"])
    ref = PCA(2).fit(data[..., 6:].reshape(-1, 8))
    same_up_to_sign(coords.reshape(-1, 2), ref.transform(data[..., 6:].reshape(-1, 8)), 1e-8)


def test_explained_variance_of_a_known_plane(rng):
    # Points on a plane spanned by two known directions, variances 4 and 1.
    basis = np.linalg.qr(rng.normal(size=(6, 2)))[0].T
    z = rng.normal(size=(4000, 2))
    z = (z - z.mean(0)) @ np.linalg.inv(np.linalg.cholesky(np.cov(z.T)).T) * [2.0, 1.0]
    coords, pca = fbx.pca_project({"s": (z @ basis).reshape(40, 100, 6)}, 3)
    np.testing.assert_allclose(pca.explained_variance[:2], [4.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(pca.explained_variance_ratio, [0.8, 0.2, 0.0], atol=1e-9)
    np.testing.assert_allclose(np.abs(pca.components[:2] @ basis.T), np.eye(2), atol=1e-9)


# ----------------------------------------------------------------- heatmaps
def test_heatmap_puts_identical_units_side_by_side(rng):
    x = keras.Input((3,), name="x")
    loop = fbx.Feedback((8,), name="loop")
    dense = keras.layers.Dense(8, activation="tanh", name="d1")
    h = dense(keras.layers.Concatenate()([x, loop]))
    net = fbx.FeedbackModel(x, h, feedback={"loop": h})
    kernel, bias = dense.get_weights()
    kernel[:, 6] = kernel[:, 1]  # units 1 and 6 compute the same thing
    bias[6] = bias[1] = 0.1
    dense.set_weights([kernel, bias])
    seq = rng.normal(size=(2, 30, 3)).astype("float32")
    df = fbx.trace(net, seq, nodes=["d1", "loop"])
    fig = fbx.plot_heatmap(df, "d1", sample=1)
    order = fig.data[0].meta["order"]
    assert sorted(order) == list(range(8))
    assert abs(order.index(1) - order.index(6)) == 1
    assert list(fig.data[0].y) == [str(u) for u in order]
    # The rows are the units' time courses in that order: the frame, transposed.
    expected = fbx.wide(df, node="d1").loc[1].to_numpy().T
    np.testing.assert_array_equal(np.asarray(fig.data[0].z), expected[order])
    np.testing.assert_array_equal(fig.data[0].x, np.arange(30))
    # The same from the arrays; the index order and an explicit order.
    arrays = fbx.trace(net, seq, nodes=["d1"], as_arrays=True)
    same = fbx.plot_heatmap(arrays, "d1", sample=1)
    assert same.data[0].meta["order"] == order
    np.testing.assert_allclose(np.asarray(same.data[0].z), expected[order])
    plain = fbx.plot_heatmap(arrays, order="index")
    assert plain.data[0].meta == {"node": "d1", "sample": 0, "order": list(range(8))}
    picked = fbx.plot_heatmap(arrays, order=[5, 2])
    np.testing.assert_allclose(np.asarray(picked.data[0].z), arrays["d1"][0][:, [5, 2]].T)


def test_similarity_order_chains_correlated_units(rng):
    base = rng.normal(size=(4, 50))
    # Units: 0..3 independent; 4 = 2 * unit 0 + 1, 5 = unit 3, 6 constant, 7 = unit 2 + noise.
    units = np.vstack([base, 2 * base[0] + 1, base[3], np.full(50, 0.3), base[2]])
    units[7] += 0.01 * rng.normal(size=50)
    order = fbx.similarity_order(units).tolist()
    assert sorted(order) == list(range(8))
    for a, b in [(0, 4), (3, 5), (2, 7)]:
        assert abs(order.index(a) - order.index(b)) == 1, (a, b, order)
    assert order[-1] == 6  # a unit that never changes comes last


# ---------------------------------------------------------------- portraits
def test_portrait_lines_are_the_projected_trajectories(rng):
    net = lstm_loop_net()
    seq = rng.normal(size=(B, T, 2)).astype("float32")
    fig = fbx.portrait(net, seq)  # every state: loop, lstm/h, lstm/c
    arrays = fbx.trace(net, seq, nodes=["loop", "lstm/h", "lstm/c"], as_arrays=True)
    data = np.concatenate([arrays[n] for n in arrays], axis=-1).reshape(-1, N + 6)
    ref = PCA(2).fit_transform(data).reshape(B, T, 2)
    assert fig.layout.meta["nodes"] == ["loop", "lstm/h", "lstm/c"]
    assert [tr.name for tr in fig.data] == [f"sample {i}" for i in range(B)]
    got = np.stack([np.stack([tr.x, tr.y], -1) for tr in fig.data])
    same_up_to_sign(got, ref, 1e-5)
    # Coloured by time, one colour bar.
    assert list(fig.data[0].marker.color) == list(range(T))
    assert [bool(tr.marker.showscale) for tr in fig.data] == [True, False, False]
    assert fig.layout.xaxis.title.text.startswith("PC1 (")
    # A frame, the arrays, and the model with samples= give the same lines.
    df = fbx.trace(net, seq)
    for source in (df, arrays):
        again = fbx.portrait(source, nodes=["loop", "lstm/h", "lstm/c"], samples=[2, 1])
        assert [tr.name for tr in again.data] == ["sample 2", "sample 1"]
    by_model = fbx.portrait(net, seq, nodes="lstm/h", samples=[2, 1], dims=3)
    by_frame = fbx.portrait(df, nodes="lstm/h", samples=[2, 1], dims=3)
    for a, b in zip(by_model.data, by_frame.data):
        assert a.name == b.name and a.type == "scatter3d"
        np.testing.assert_allclose(np.stack([a.x, a.y, a.z]), np.stack([b.x, b.y, b.z]), atol=1e-5)
    assert list(by_model.data[0].line.color) == list(range(T))


@pytest.mark.parametrize("dims", [2, 3])
def test_fixed_points_land_on_the_projected_closed_form(rng, dims):
    n, delay = 4, 2
    w_loop = rng.normal(size=(n, n))
    w_loop *= 0.6 / np.max(np.abs(np.linalg.eigvals(w_loop)))  # rho = 0.6: a stable point
    bias = rng.normal(size=n)
    net = linear_net(delay, w_loop, rng.normal(size=(2, n)), bias)
    star = bias @ np.linalg.inv(np.eye(n) - w_loop)  # x held at 0
    seq = np.zeros((3, 80, 2), "float32")
    start = {"loop": rng.normal(size=(3, delay, n)).astype("float32") * 3}
    arrays = fbx.trace(net, seq, nodes=["loop"], initial_state=start, as_arrays=True)
    away = star + np.array([1.0, -1.0, 0.5, 0.0])  # a made-up unstable point
    history = np.stack([np.repeat(star[None], delay, 0), np.repeat(away[None], delay, 0)])
    history[1, 0] = 0  # only the newest entry of a delay line counts
    fps = fixed_points_of({"loop": history}, [True, False])
    fig = fbx.portrait(arrays, fixed_points=fps, dims=dims)
    stable, unstable = fig.data[-2], fig.data[-1]
    assert (stable.name, unstable.name) == ("stable fixed points", "unstable fixed points")
    assert stable.marker.symbol == "circle" and unstable.marker.symbol == "circle-open"
    assert list(stable.customdata) == [0] and list(unstable.customdata) == [1]
    axes = "xyz"[:dims]
    ref = PCA(dims).fit(arrays["loop"].reshape(-1, n))
    point = np.array([[getattr(stable, a)[0] for a in axes]])
    same_up_to_sign(point, ref.transform(star[None]), 1e-4)
    hollow = np.array([[getattr(unstable, a)[0] for a in axes]])
    same_up_to_sign(hollow, ref.transform(away[None]), 1e-4)
    # Every trajectory ends on the stable point: the loop converges to it.
    for line in fig.data[:3]:
        end = np.array([getattr(line, a)[-1] for a in axes])
        np.testing.assert_allclose(end, point[0], atol=1e-3)


def test_fixed_points_of_several_states_and_a_projection_reused(rng):
    net = lstm_loop_net()
    seq = rng.normal(size=(2, T, 2)).astype("float32")
    states = {
        "loop": rng.normal(size=(3, N)),
        "lstm/h": rng.normal(size=(3, 3)),
        "lstm/c": rng.normal(size=(3, 3)),
    }
    fps = fixed_points_of(states, [False, True, False])
    fig = fbx.portrait(net, seq, fixed_points=fps, nodes=["lstm/h", "loop"])
    arrays = fbx.trace(net, seq, nodes=["lstm/h", "loop"], as_arrays=True)
    _, pca = fbx.pca_project(arrays, 2)
    expected = pca.transform({"lstm/h": states["lstm/h"], "loop": states["loop"]})
    hollow = fig.data[-1]
    assert hollow.name == "unstable fixed points" and list(hollow.customdata) == [0, 2]
    np.testing.assert_allclose(np.stack([hollow.x, hollow.y], -1), expected[[0, 2]], atol=1e-6)
    # Another run drawn on this projection's axes.
    other = fbx.portrait(net, 2 * seq, nodes=["lstm/h", "loop"], projection=pca)
    moved = fbx.trace(net, 2 * seq, nodes=["lstm/h", "loop"], as_arrays=True)
    np.testing.assert_allclose(
        np.stack([other.data[1].x, other.data[1].y], -1), pca.transform(moved)[1], atol=1e-9
    )


# ------------------------------------------------------------------- errors
def test_bad_input_gets_one_clear_error(rng):
    net = lstm_loop_net()
    seq = rng.normal(size=(2, T, 2)).astype("float32")
    arrays = fbx.trace(net, seq, nodes=["loop", "lstm/h"], as_arrays=True)
    with pytest.raises(ValueError, match=r"fbx.portrait: model '.*' has no node 'lop'"):
        fbx.portrait(net, seq, nodes=["lop"])
    with pytest.raises(ValueError, match=r"no node 'lop' in the trace. Nodes: \['loop', 'lstm/h'"):
        fbx.portrait(arrays, nodes="lop")
    fps = fixed_points_of({"loop": np.zeros((1, N))}, [True])
    with pytest.raises(
        ValueError,
        match=re.escape("node 'lstm/h' has no state in the fixed points. States: ['loop']"),
    ):
        fbx.portrait(arrays, nodes=["loop", "lstm/h"], fixed_points=fps)
    with pytest.raises(ValueError, match=re.escape("expected dims=2 or dims=3. Received: dims=4")):
        fbx.portrait(arrays, dims=4)
    with pytest.raises(ValueError, match=re.escape("expected dims=2 or dims=3. Received: dims=1")):
        fbx.pca_project(arrays, 1)
    one = {"s": rng.normal(size=(2, T, 1))}
    with pytest.raises(ValueError, match=re.escape("have 1 unit in all, fewer than dims=2")):
        fbx.portrait(one)
    with pytest.raises(ValueError, match=re.escape("have 2 units in all, fewer than dims=3")):
        fbx.pca_project({"s": rng.normal(size=(2, T, 2))}, 3)
    wrong = fixed_points_of({"loop": np.zeros((1, N + 1))}, [True])
    with pytest.raises(ValueError, match=r"state 'loop' has shape \(1, 5\)"):
        fbx.portrait(arrays, nodes="loop", fixed_points=wrong)
    with pytest.raises(ValueError, match=r"sample 7 is not in the trace. Samples: \[0, 1\]"):
        fbx.plot_heatmap(arrays, "loop", sample=7)
    with pytest.raises(ValueError, match="order is 'similarity', 'index', None or a list"):
        fbx.plot_heatmap(arrays, order="size")
    with pytest.raises(ValueError, match="order lists unit indices 0 to 3"):
        fbx.plot_heatmap(arrays, "loop", order=[4])
    with pytest.raises(ValueError, match="expects a trace"):
        fbx.plot_heatmap(np.zeros((2, 3)))


# ------------------------------------------------------------ dynamics drawn
def saddle_net(rng):
    """h_t = h_{t-1} W + b with the step's Jacobian W^T of eigenvalues 1.5 and 0.4, 0.3: a saddle."""
    basis = np.linalg.qr(rng.normal(size=(3, 3)))[0]
    jac = basis @ np.diag([1.5, 0.4, 0.3]) @ np.linalg.inv(basis)
    net = linear_net(1, jac.T, rng.normal(size=(2, 3)), rng.normal(size=3))
    return net, basis[:, 0]


def test_a_saddle_is_drawn_with_its_unstable_direction_and_hover(rng):
    from fbexplorer.portrait_marks import portrait_marks

    net, unstable = saddle_net(rng)
    seq = rng.normal(size=(2, 10, 2)).astype("float32") * 0.1
    fps = fbx.fixed_points(net, {"x": np.zeros(2, "float32")}, n_starts=4)
    arrays = fbx.trace(net, seq, nodes=["loop"], as_arrays=True)
    _, pca = fbx.pca_project(arrays, 2)
    marks = portrait_marks(fps, pca)
    assert marks.kinds == ["unstable"] and marks.info[0]["stability"] == "unstable"
    np.testing.assert_allclose(marks.info[0]["spectral_radius"], 1.5, rtol=1e-4)
    np.testing.assert_allclose(marks.info[0]["tau"], -1 / np.log(1.5), rtol=1e-4)
    expected = pca.components @ unstable
    ((row, start, d),) = marks.arrows
    np.testing.assert_allclose(abs(d @ expected) / np.linalg.norm(expected), 1, atol=1e-5)
    np.testing.assert_allclose(start, pca.transform(fps.states)[0], atol=1e-6)
    fig = fbx.portrait(arrays, fixed_points=fps)
    names = [d.name for d in fig.data]
    assert "unstable directions" in names
    hover = fig.data[names.index("unstable fixed points")].hovertext[0]
    assert "unstable" in hover and "spectral radius 1.5" in hover and "tau -2.466 steps" in hover


def test_cycles_closed_slow_and_marginal_points_and_attractors(rng):
    from fbexplorer.portrait_marks import portrait_marks

    arrays = {"loop": rng.normal(size=(2, 9, 3))}
    _, pca = fbx.pca_project(arrays, 2)
    orbit = rng.normal(size=(2, 3))
    fps = types.SimpleNamespace(
        states={"loop": np.stack([orbit[0], orbit[1], orbit[0] * 0])},
        frame=pd.DataFrame(
            {
                "stable": [True, False, False],
                "stability": ["stable", "marginal", "unstable"],
                "slow": [False, False, True],
                "tau": [2.0, np.inf, -1.0],
            }
        ),
        period=2,
        orbit=lambda i: {"loop": orbit},
    )
    marks = portrait_marks(fps, pca)
    assert marks.kinds == ["stable", "marginal", "slow"]
    assert marks.info[1]["tau"] == "inf"
    np.testing.assert_allclose(marks.orbits[0][1], pca.transform({"loop": orbit}))
    census = types.SimpleNamespace(
        states={"loop": np.stack([orbit[0], np.full(3, np.nan)])},
        frame=pd.DataFrame(
            {"kind": ["cycle", "divergent"], "period": [2, pd.NA], "share": [0.7, 0.3]}
        ),
        orbit=lambda i: {"loop": orbit},
    )
    fig = fbx.portrait(arrays, fixed_points=fps, attractors=census)
    by_name = {d.name: d for d in fig.data}
    cycle = by_name["orbit 0 (period 2)"]
    assert len(cycle.x) == 3 and cycle.x[0] == cycle.x[-1]  # closed
    assert list(by_name["marginal fixed points"].customdata) == [1]
    assert by_name["slow points"].marker.symbol == "diamond-open"
    crosses = by_name["attractors"]
    assert list(crosses.customdata) == [0] and "share 0.7" in crosses.hovertext[0]
    assert "attractor 0: cycle of period 2" in by_name
    with pytest.raises(ValueError, match=r"attractors must be a result of fbx\.attractors"):
        fbx.portrait(arrays, attractors=fps)
