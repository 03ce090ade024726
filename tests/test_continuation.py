"""fbx.continuation: fixed points followed along an input's values, against the closed
forms of one- and two-unit maps, and free runs of the model itself."""

import keras
import numpy as np
import pytest

import fbexplorer as fbx


def map_net(fn, units=1, name="map"):
    """s' = fn(s, u), with `u` a per-step input of one number."""
    u = keras.Input((1,), name="u")
    s = fbx.Feedback((units,), name="s")
    h = keras.layers.Lambda(lambda t: fn(t[1], t[0]), name="f")([u, s])
    return fbx.FeedbackModel(u, h, feedback={"s": h}, return_state=True, name=name)


def tanh_net(w=2.0):
    return map_net(lambda x, u: keras.ops.tanh(w * x + u), name="tanh")


def rotation(angle):
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s], [s, c]], "float32")


def events(c, kind):
    return c.bifurcations[c.bifurcations["kind"] == kind]


@pytest.fixture(scope="module")
def folds():
    """x' = tanh(2 x + u), u from -0.8 to 0.8."""
    net = tanh_net()
    return net, fbx.continuation(net, {}, vary={"u": np.linspace(-0.8, 0.8, 17)})


def test_the_folds_of_tanh_at_the_closed_form(folds):
    _, c = folds
    w = 2.0
    x_f = np.sqrt(1 - 1 / w)
    u_f = np.arctanh(x_f) - w * x_f  # -0.533: the fold below, +0.533 above
    fold = events(c, "fold")
    assert len(fold) == 2 and len(c.bifurcations) == 2
    # interpolated to well within the grid step of 0.1
    np.testing.assert_allclose(sorted(fold["value"]), [u_f, -u_f], atol=0.02)
    assert list(fold["event"]) == ["appears", "ends"]
    # three branches: the lower stable one, the upper, and the saddle between them
    assert c.frame["branch"].nunique() == 3
    between = c.frame[(c.frame["value"] > -0.5) & (c.frame["value"] < 0.5)]
    assert (between.groupby("step").size() == 3).all()
    assert (between.groupby("step")["stable"].sum() == 2).all()
    outside = c.frame[np.abs(c.frame["value"]) > 0.55]
    assert (outside.groupby("step").size() == 1).all() and outside["stable"].all()


def test_every_listed_point_is_a_fixed_point_of_the_model(folds):
    net, c = folds
    n = len(c)
    x = np.broadcast_to(c.frame["value"].to_numpy("float32")[:, None, None], (n, 5, 1))
    _, states = net(x, initial_state={"s": c.states["s"]})
    np.testing.assert_allclose(np.asarray(states["s"]), c.states["s"], atol=1e-5)
    # and the state of each row solves x = tanh(2 x + u) (independently of the model)
    s = c.states["s"][:, 0].astype("float64")
    np.testing.assert_allclose(np.tanh(2 * s + c.frame["value"]), s, atol=1e-5)
    # a stable point survives a nudge; an unstable one leaves
    nudged = {"s": c.states["s"] + 1e-3}
    _, after = net(np.broadcast_to(x[:, :1], (n, 200, 1)), initial_state=nudged)
    back = np.abs(np.asarray(after["s"]) - c.states["s"])[:, 0] < 1e-3
    np.testing.assert_array_equal(back, c.frame["stable"].to_numpy())


def test_a_branch_is_one_point_followed(folds):
    _, c = folds
    for _, rows in c.frame.groupby("branch"):
        assert np.all(np.diff(rows["step"]) == 1)  # one point per value, no gap
        assert np.abs(np.diff(c.states["s"][rows.index, 0])).max() < 0.5


def test_a_branch_found_late_is_followed_back_to_the_first_value(folds):
    """The first search starts at the upper point only; the fresh starts at the next
    value find the other two, and the searches back find them at the first value."""
    net, _ = folds
    first = {"s": np.array([[0.95]], "float32")}
    c = fbx.continuation(net, {}, vary={"u": np.linspace(0.0, 0.4, 5)}, initial=first, n_starts=1)
    assert len(c.points[0][0]) == 1 and len(c.points[0]) == 2  # one, then two more
    assert (c.frame.groupby("branch")["step"].apply(list) == [list(range(5))] * 3).all()
    assert len(c.bifurcations) == 0  # nothing appears: three points between the folds
    s = c.states["s"][:, 0].astype("float64")
    np.testing.assert_allclose(np.tanh(2 * s + c.frame["value"]), s, atol=1e-5)


def test_the_logistic_map_doubles_its_period_at_three():
    net = map_net(lambda x, r: r * x * (1 - x), name="logistic")
    c = fbx.continuation(net, {}, vary={"u": np.linspace(2.6, 3.4, 5)})
    (event,) = events(c, "period-doubling").itertuples()
    assert event.value == pytest.approx(3.0, abs=1e-3)  # |2 - r| crosses 1 at r = 3
    assert event.multiplier.real == pytest.approx(-1.2, abs=1e-3)  # 2 - r at 3.2
    inner = c.frame[c.frame["branch"] == event.branch]
    np.testing.assert_allclose(c.states["s"][inner.index, 0], 1 - 1 / inner["value"], atol=1e-5)
    assert len(c.bifurcations) == 1  # the branch x = 0 stays unstable


def test_a_rotation_that_grows_past_one_is_a_hopf_point():
    r = rotation(0.5)
    net = map_net(lambda x, rho: rho * keras.ops.matmul(x, r.T), units=2, name="rotation")
    c = fbx.continuation(net, {}, vary={"u": [[0.7], [0.9], [1.1], [1.3]]})
    (event,) = c.bifurcations.itertuples()
    assert event.kind == "hopf" and event.value == pytest.approx(1.0, abs=1e-4)
    assert abs(event.multiplier) == pytest.approx(1.1, abs=1e-4)
    assert np.angle(event.multiplier) == pytest.approx(0.5, abs=1e-4)  # rho e^{0.5 i}
    assert list(c.frame["stability"]) == ["stable", "stable", "unstable", "unstable"]


def test_the_pitchfork_of_tanh_gx_at_one_is_a_branch():
    net = map_net(lambda x, g: keras.ops.tanh(g * x), name="pitchfork")
    c = fbx.continuation(net, {}, vary={"u": np.linspace(0.7, 1.5, 5)})
    assert set(c.bifurcations["kind"]) == {"branch"}
    # the origin loses its stability at g = 1 (its multiplier g crosses +1) ...
    change = c.bifurcations[c.bifurcations["event"] == "stability"]
    assert list(change["value"]) == pytest.approx([1.0], abs=1e-4)
    # ... and two stable branches +-x, x = tanh(g x), appear between the values around it
    born = c.bifurcations[c.bifurcations["event"] == "appears"]
    assert len(born) == 2 and (np.abs(born["value"] - 1.0) <= 0.2).all()
    last = c.frame[c.frame["step"] == 4]
    x = np.sort(c.states["s"][last.index, 0])
    np.testing.assert_allclose(np.tanh(1.5 * x), x, atol=1e-5)
    assert x[0] < -0.5 and abs(x[1]) < 1e-5 and x[2] > 0.5


def test_held_inputs_other_than_the_varied_one():
    """x' = tanh(2 x + u + v): v held at 0.3 moves the folds by -0.3."""
    u, v = keras.Input((1,), name="u"), keras.Input((1,), name="v")
    s = fbx.Feedback((1,), name="s")
    h = keras.layers.Lambda(lambda t: keras.ops.tanh(2.0 * t[2] + t[0] + t[1]))([u, v, s])
    net = fbx.FeedbackModel([u, v], h, feedback={"s": h}, name="two")
    c = fbx.continuation(
        net, {"v": np.array([0.3], "float32")}, vary={"u": np.linspace(-1.1, 0.5, 17)}
    )
    u_f = np.arctanh(np.sqrt(0.5)) - 2 * np.sqrt(0.5)
    np.testing.assert_allclose(
        sorted(events(c, "fold")["value"]), [u_f - 0.3, -u_f - 0.3], atol=0.02
    )
    assert "v" in c.points[0][0].inputs and c.input == "u"


def test_figure_draws_stable_solid_unstable_dashed(folds):
    _, c = folds
    fig = c.figure()
    lines = [t for t in fig.data if t.name in ("stable", "unstable")]
    assert {t.line.dash for t in lines if t.name == "stable"} == {"solid"}
    assert {t.line.dash for t in lines if t.name == "unstable"} == {"dash"}
    marks = next(t for t in fig.data if t.name == "bifurcations")
    assert list(marks.text) == ["fold", "fold"]
    by_output = c.figure(output=list(c.outputs)[0])
    assert len(by_output.data) == len(fig.data)
    with pytest.raises(ValueError, match="`unit` indexes the 1 numbers of 's'"):
        c.figure(unit=3)


@pytest.mark.jax
def test_continuation_on_jax():
    net = tanh_net()
    c = fbx.continuation(net, {}, vary={"u": np.linspace(-0.8, 0.8, 17)})
    u_f = np.arctanh(np.sqrt(0.5)) - 2 * np.sqrt(0.5)
    np.testing.assert_allclose(sorted(events(c, "fold")["value"]), [u_f, -u_f], atol=0.02)
    assert "_fbx_search" not in net.__dict__ or keras.backend.backend() == "tensorflow"
