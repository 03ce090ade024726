"""Stability labels, linearisation and periodic orbits of fixed_points, against closed forms."""

import keras
import numpy as np

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
    assert fbx.fixed_points(net, zero, n_starts=4).settings["marginal_tolerance"] == 1e-3
