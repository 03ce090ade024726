"""fbx.compare_dynamics and fbx.mds_figure, against references that do not use them:
linear networks x' = A x + B u of known eigenvalues, Wasserstein distances by
scipy's assignment on equal-size sets, distances of points in the plane."""

import sys
import types

import keras
import numpy as np
import pandas as pd
import pytest
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import pdist, squareform

import fbexplorer as fbx
from fbexplorer import dynamics_similarity as ds


def rotation_block(radius, angle):
    c, s = radius * np.cos(angle), radius * np.sin(angle)
    return np.array([[c, -s], [s, c]])


def real_matrix(eigenvalues, basis=None):
    """A real matrix with the given eigenvalues (complex ones as (r e^{ia}, r e^{-ia})
    given once, as r e^{ia}), in a random basis."""
    blocks = [
        rotation_block(abs(v), np.angle(v)) if abs(np.imag(v)) > 0 else np.array([[np.real(v)]])
        for v in eigenvalues
    ]
    n = sum(len(b) for b in blocks)
    d = np.zeros((n, n))
    i = 0
    for b in blocks:
        d[i : i + len(b), i : i + len(b)] = b
        i += len(b)
    p = np.eye(n) if basis is None else basis
    return p @ d @ np.linalg.inv(p)


def spectrum(eigenvalues):
    out = []
    for v in eigenvalues:
        out += [v, np.conj(v)] if abs(np.imag(v)) > 0 else [v]
    return np.array(out, complex)


def simulate(a, samples=6, steps=40, seed=0):
    """`(samples, steps, n)`: x_{t+1} = A x_t from random starts."""
    rng = np.random.default_rng(seed)
    x = np.zeros((samples, steps, len(a)))
    x[:, 0] = rng.normal(size=(samples, len(a)))
    for t in range(steps - 1):
        x[:, t + 1] = x[:, t] @ a.T
    return x


def hand_w2(a, b):
    """W2 between uniform distributions on equal-size sets: the best one-to-one match."""
    cost = np.abs(np.asarray(a)[:, None] - np.asarray(b)[None, :]) ** 2
    rows, cols = linear_sum_assignment(cost)
    return float(np.sqrt(cost[rows, cols].mean()))


SLOW = [0.9 * np.exp(0.3j), 0.5]
FAST = [0.6 * np.exp(1.0j), -0.4]


@pytest.mark.parametrize("n_delays", [1, 4])
def test_same_spectrum_in_other_bases_is_zero_apart(n_delays):
    rng = np.random.default_rng(1)
    a = real_matrix(SLOW, rng.normal(size=(3, 3)))
    b = real_matrix(SLOW, rng.normal(size=(3, 3)))
    assert not np.allclose(a, b)
    d = fbx.compare_dynamics([simulate(a), simulate(b, seed=2)], n_delays=n_delays, rank=3)
    assert d.iloc[0, 1] < 1e-6


def test_other_spectra_are_the_hand_computed_wasserstein_apart():
    rng = np.random.default_rng(2)
    a, b = real_matrix(SLOW, rng.normal(size=(3, 3))), real_matrix(FAST, rng.normal(size=(3, 3)))
    d = fbx.compare_dynamics({"slow": simulate(a), "fast": simulate(b)}, n_delays=2, rank=3)
    expected = hand_w2(spectrum(SLOW), spectrum(FAST))
    assert expected > 0.3
    np.testing.assert_allclose(d.loc["slow", "fast"], expected, rtol=1e-6)
    np.testing.assert_allclose(
        np.sort_complex(ds.dmd_eigenvalues(simulate(a), n_delays=2, rank=3)),
        np.sort_complex(spectrum(SLOW)),
        atol=1e-8,
    )


def test_eigenvalue_distance_of_unequal_sets():
    # a uniform distribution on {p, q} is the one on {p, p, q, q}: zero apart
    assert ds.eigenvalue_distance([0.5, 1j], [0.5, 0.5, 1j, 1j]) < 1e-12
    # one point against two: every unit of mass moves to its point
    got = ds.eigenvalue_distance([0.0], [1.0, 1j])
    assert got == pytest.approx(1.0)


def linear_network(a, b, name):
    """x' = A x + B u as a FeedbackModel: h = rec(loop) + inp(x), h fed back."""
    n, m = b.shape
    x = keras.Input((m,), name="x")
    loop = fbx.Feedback((n,), name="loop")
    rec = keras.layers.Dense(n, use_bias=False, name="rec")
    inp = keras.layers.Dense(n, use_bias=False, name="inp")
    h = keras.layers.Add(name="h")([rec(loop), inp(x)])
    net = fbx.FeedbackModel(x, h, feedback={"loop": h}, name=name)
    rec.set_weights([a.T.astype("float32")])
    inp.set_weights([b.T.astype("float32")])
    return net


def test_models_on_pulses_symmetric_zero_diagonal():
    rng = np.random.default_rng(3)
    b = rng.normal(size=(3, 3))
    nets = {
        "a": linear_network(real_matrix(SLOW, rng.normal(size=(3, 3))), b, "a"),
        "a2": linear_network(real_matrix(SLOW, rng.normal(size=(3, 3))), b, "a2"),
        "f": linear_network(real_matrix(FAST, rng.normal(size=(3, 3))), b, "f"),
    }
    pulses = np.zeros((6, 30, 3), "float32")
    pulses[:, 0] = rng.normal(size=(6, 3))
    # the state `loop` is 0 at t=0 and B u_0 at t=1: the free dynamics start there
    d = fbx.compare_dynamics(nets, pulses, skip=1, n_delays=1, rank=3)
    assert list(d.index) == ["a", "a2", "f"] and list(d.columns) == ["a", "a2", "f"]
    np.testing.assert_array_equal(d.to_numpy(), d.to_numpy().T)
    np.testing.assert_array_equal(np.diag(d.to_numpy()), 0.0)
    assert d.loc["a", "a2"] < 1e-3  # float32 traces
    expected = hand_w2(spectrum(SLOW), spectrum(FAST))
    np.testing.assert_allclose(d.loc["a", "f"], expected, rtol=1e-3)
    # a trace of a model gives what the model gives
    traces = {k: fbx.trace(v, pulses, "loop") for k, v in nets.items()}
    np.testing.assert_allclose(
        fbx.compare_dynamics(traces, skip=1, n_delays=1, rank=3), d, atol=1e-9
    )


def test_classical_mds_recovers_distances_of_points_in_the_plane():
    points = np.random.default_rng(4).normal(size=(7, 2))
    d = squareform(pdist(points))
    coords = fbx.classical_mds(d, 2)
    np.testing.assert_allclose(squareform(pdist(coords)), d, atol=1e-9)


def test_mds_figure_places_and_colours_the_networks():
    points = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0], [3.0, 4.0]])
    names = ["n0", "<b>n1</b>", "n2", "n3"]
    d = pd.DataFrame(squareform(pdist(points)), index=names, columns=names)
    fig = fbx.mds_figure(d, colour=pd.Series([8, 8, 16, 16], index=names, name="units"))
    assert [t.name for t in fig.data] == ["8", "16"]
    xy = np.concatenate([np.c_[t.x, t.y] for t in fig.data])
    np.testing.assert_allclose(squareform(pdist(xy)), d.to_numpy()[[0, 1, 2, 3]][:, [0, 1, 2, 3]],
                               atol=1e-9)  # fmt: skip
    assert "<b>" not in "".join(fig.data[0].text)
    assert fig.layout.legend.title.text == "units"


class FakeFixedPoints:
    """Just what topology reads: `.frame.n_unstable`."""

    def __init__(self, n_unstable):
        self.frame = pd.DataFrame({"n_unstable": n_unstable})

    def __len__(self):
        return len(self.frame)


def links(pairs):
    """A frame as FixedPoints.connections(model) gives: saddle, attractor (NA for none)."""
    return pd.DataFrame(pairs, columns=["saddle", "attractor"]).astype("Int64")


def test_topology_counts_points_and_saddle_connections():
    three = (FakeFixedPoints([0, 0, 1]), links([(2, 0), (2, 1), (2, 1)]))  # a saddle between two
    one_sided = (FakeFixedPoints([0, 0, 1]), links([(2, 0), (2, None)]))
    no_graph = FakeFixedPoints([0, 1, 1, 2])
    assert ds.topology_counts(*three).to_dict() == {
        "points/unstable=0": 2,
        "points/unstable=1": 1,
        "saddles/attractors=2": 1,
    }
    assert ds.topology_counts(*one_sided)["saddles/attractors=1"] == 1
    d = fbx.compare_dynamics([three, one_sided, no_graph], method="topology")
    # |2-1|+|1-2|+|0-1| points, then the saddle columns: |1-0|+|0-1|, |1-0|, |0-1|
    np.testing.assert_array_equal(d.to_numpy(), [[0, 2, 4], [2, 0, 4], [4, 4, 0]])


def test_topology_of_a_model_follows_its_saddles_where_it_can(monkeypatch):
    """Where FixedPoints has `connections(model)`, a model's saddles are followed."""
    seen = []

    def connections(self, model):
        seen.append(model.name)
        return links([(0, None)])

    monkeypatch.setattr(fbx.FixedPoints, "connections", connections, raising=False)
    saddle = linear_network(np.diag([1.5, 0.2]), np.eye(2), "saddle")
    stable = linear_network(np.diag([0.5, 0.2]), np.eye(2), "stable")
    d = fbx.compare_dynamics(
        {"s": saddle, "t": stable}, method="topology", fixed_point_options={"n_starts": 4}
    )
    assert seen == ["saddle"]  # a network without saddles has none to follow
    # points: |0-1| + |1-0|; saddles leading to no point: |1-0|
    assert d.loc["s", "t"] == 3


def bistable_pair(w, name):
    """Two uncoupled units x' = tanh(w x): for w > 1 each has a stable point on either
    side of an unstable 0, so 4 stable points, 4 saddles (one unstable dimension) and a
    source (two); for w < 1, the one stable point 0."""
    x = keras.Input((1,), name="x")
    loop = fbx.Feedback((2,), name="loop")
    dense = keras.layers.Dense(2, activation="tanh", use_bias=False, name="h")
    h = dense(keras.layers.Concatenate()([x, loop]))
    net = fbx.FeedbackModel(x, h, feedback={"loop": h}, name=name)
    dense.set_weights([np.array([[0, 0], [w, 0], [0, w]], "float32")])
    return net


def test_topology_of_models_counts_their_fixed_points(monkeypatch):
    monkeypatch.delattr(fbx.FixedPoints, "connections", raising=False)  # points only
    nets = {"two bits": bistable_pair(2.0, "a"), "one point": bistable_pair(0.5, "b")}
    options = {"n_starts": 64}
    d = fbx.compare_dynamics(nets, method="topology", fixed_point_options=options)
    counts = ds.topology_counts(fbx.fixed_points(nets["two bits"], np.zeros(1), **options))
    assert counts.to_dict() == {
        "points/unstable=0": 4,
        "points/unstable=1": 4,
        "points/unstable=2": 1,
    }
    # |4-1| + |4-0| + |1-0|
    assert d.loc["two bits", "one point"] == 8


def test_dsa_is_called_with_the_traces_and_symmetrised(monkeypatch):
    calls = {}

    class DSA:
        def __init__(self, data, **kwargs):
            calls["shapes"] = [x.shape for x in data]
            calls["kwargs"] = kwargs

        def fit_score(self):
            return np.array([[0.0, 0.2, 0.4], [0.2, 0.0, 0.6], [0.4, 0.6, 0.0]]) + 1e-9 * np.eye(3)

    monkeypatch.setitem(sys.modules, "DSA", types.SimpleNamespace(DSA=DSA))
    data = [simulate(np.eye(2) * 0.5, samples=2, steps=12, seed=s) for s in range(3)]
    d = fbx.compare_dynamics(data, method="dsa", n_delays=3, rank=2, dsa_options={"iters": 5})
    assert calls["shapes"] == [(2, 12, 2)] * 3
    assert calls["kwargs"] == {"n_delays": 3, "rank": 2, "score_method": "angular", "iters": 5}
    np.testing.assert_array_equal(np.diag(d.to_numpy()), 0.0)
    assert d.iloc[1, 2] == pytest.approx(0.6)


def test_dsa_missing_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "DSA", None)  # import DSA raises ImportError
    data = [simulate(np.eye(2) * 0.5, samples=2, steps=12, seed=s) for s in range(2)]
    with pytest.raises(ImportError, match=r"fbexplorer\[dsa\]"):
        fbx.compare_dynamics(data, method="dsa")


def frozen_linear_build(radius, angle):
    """A linear network x' = A x + u whose A has eigenvalues radius e^{+-i angle},
    compiled with a learning rate of 0: training leaves it as built."""
    import keras as k

    net = linear_network(rotation_block(radius, angle), np.eye(2), "frozen")
    net.compile(k.optimizers.SGD(0.0), "mse")
    return net


def test_population_compare_and_mds_figure(tmp_path):
    grid = {"radius": [0.9, 0.5], "angle": [0.3]}
    data = (np.zeros((4, 5, 2), "float32"), np.zeros((4, 5, 2), "float32"))
    pop = fbx.sweep(
        frozen_linear_build, grid, data, seeds=(0,), epochs=1, runner="loop",
        analyses={"fixed_points": {"n_starts": 2}}, store=tmp_path, progress=False,
    )  # fmt: skip
    pulses = np.zeros((4, 20, 2), "float32")
    pulses[:, 0] = np.random.default_rng(5).normal(size=(4, 2))
    d = pop.compare(pulses, skip=1, n_delays=1, rank=2)
    radius = pop.frame["radius"].to_numpy()
    spectra = [spectrum([r * np.exp(0.3j)]) for r in radius]
    expected = np.array([[hand_w2(a, b) for b in spectra] for a in spectra])
    np.testing.assert_allclose(d.to_numpy(), expected, atol=1e-4)
    fig = pop.mds_figure(colour="radius")
    assert sorted(t.name for t in fig.data) == ["0.5", "0.9"]
    assert any("radius=0.5, angle=0.3, seed=0" in s for t in fig.data for s in t.text)
    # the fixed points the sweep stored: one stable point (0) each, the same topology
    top = pop.compare(method="topology")
    np.testing.assert_array_equal(top.to_numpy(), np.zeros((2, 2)))
