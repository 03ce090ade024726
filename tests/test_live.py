"""The explorer while a model trains: `fbx.explore(watch)` shown before `fit`
gets each epoch the `TraceCallback` records, as it is recorded (the frames
against `fbx.trace` of the weights of that epoch, Keras's logs against the
`History`, each epoch's fixed points against `fbx.fixed_points` run again
with that epoch's weights)."""

import keras
import numpy as np
import pytest

import fbexplorer as fbx
from fbexplorer.view import decode

ZERO = np.zeros(1, "float32")


def small_net(seed=1):
    keras.utils.set_random_seed(seed)
    x = keras.Input((1,), name="x")
    loop = fbx.Feedback((3,), name="loop")
    h = keras.layers.Dense(3, activation="tanh", name="h")(
        keras.layers.Concatenate(name="cat")([x, loop])
    )
    net = fbx.FeedbackModel(x, keras.layers.Dense(1, name="y")(h), feedback={"loop": h})
    net.compile(keras.optimizers.SGD(0.2), "mse", metrics=["mae"])
    return net


X = np.random.default_rng(2).uniform(-1, 1, (8, 4, 1)).astype("float32")
Y = np.cumsum(X, axis=1)


def sent_runs(ex):
    """(epoch, t, unit) of the chosen node, as the browser receives them."""
    data = ex.view.data
    return decode(data["runs"][0]["values"], (len(data["epochs"]), data["length"], data["units"]))


def test_explorer_before_fit_shows_each_epoch_as_it_is_recorded():
    net = small_net()
    watch = fbx.TraceCallback(X[:2], nodes=["h", "loop"])
    ex = fbx.explore(watch)
    assert ex.children == (ex.note,) and "Waiting for the first trace" in ex.note.value
    weights, seen, indices = [], [], []

    def look(epoch):  # after the explorer's own listener: what the browser has now
        if epoch == 0:  # built at the first trace: watch what the slider sends from now on
            ex.epoch.send_state = lambda key=None: indices.append(key)
        weights.append(net.get_weights())
        assert ex.view.data["node"] == "loop"  # the loop's own signal, where it opens
        seen.append((epoch, list(ex.view.data["epochs"]), sent_runs(ex)))

    watch.listen(look)
    history = net.fit(X, Y, epochs=3, batch_size=8, verbose=0, callbacks=[watch])
    assert [(e, epochs) for e, epochs, _ in seen] == [
        (0, [0]),
        (1, [0, 1]),
        (2, [0, 1, 2]),
        (3, [0, 1, 2, 3]),
    ]
    assert [label for label, _ in ex.epoch.options] == ["0", "1", "2", "3"]
    # The slider grew; its index was never sent (the view follows the newest epoch in the
    # browser, where a move by the user is known before the kernel hears of it).
    assert indices and all("index" not in (k if isinstance(k, set) else {k}) for k in indices)
    probe = keras.models.clone_model(net)
    for (epoch, _, got), w in zip(seen, weights):
        probe.set_weights(w)
        expected = fbx.wide(fbx.trace(probe, X[:2], nodes="loop"), node="loop").loc[0]
        np.testing.assert_allclose(got[epoch], expected.to_numpy(), rtol=1e-5, atol=1e-6)
    training = ex.view.data["panels"]["training"]
    assert training["epochs"] == [1, 2, 3] and training["recorded"] == [0, 1, 2, 3]
    for name in ("loss", "mae"):
        np.testing.assert_allclose(training["metrics"][name], history.history[name], rtol=1e-6)
    assert watch.logs[3]["loss"] == pytest.approx(history.history["loss"][-1])
    assert set(watch.seconds) == {0, 1, 2, 3}


def test_each_recorded_epoch_gets_its_fixed_points_in_the_portrait_plane():
    net = small_net(seed=3)
    initial = net.get_weights()
    search = {"inputs": ZERO, "n_starts": 8, "initial": X[:2]}
    watch = fbx.TraceCallback(
        X[:2], every=2, fixed_points=search, attractors={"inputs": ZERO, "starts": 8, "steps": 50}
    )
    ex = fbx.explore(watch)
    net.fit(X, Y, epochs=2, batch_size=8, verbose=0, callbacks=[watch])
    assert sorted(watch.census) == [0, 2] and set(watch.census[0]) == {
        "fixed_points",
        "attractors",
    }
    probe = keras.models.clone_model(net)
    probe.set_weights(initial)  # epoch 0: the untrained weights
    again = fbx.fixed_points(probe, ZERO, n_starts=8, initial=X[:2])
    first = watch.census[0]["fixed_points"]
    np.testing.assert_allclose(first.states["loop"], again.states["loop"], atol=1e-5)
    portrait = ex.view.data["panels"]["portrait"]
    census = portrait["census"]
    assert len(census) == len(ex.view.data["epochs"]) == 2
    for entry, epoch in zip(census, [0, 2]):
        fp = watch.census[epoch]["fixed_points"]
        points = decode(entry["fixed_points"]["points"], (-1, 2))
        np.testing.assert_allclose(points, ex.projection.transform(fp.states), atol=1e-5)
        assert entry["fixed_points"]["stability"] == list(fp.frame["stability"])
        at = watch.census[epoch]["attractors"]
        assert entry["attractors"]["kind"] == list(at.frame["kind"])
        got = decode(entry["attractors"]["points"], (-1, 2))
        np.testing.assert_allclose(got, ex.projection.transform(at.states), atol=1e-5)
    # Without fixed_points= given, the newest epoch's are the portrait's (drawn at it).
    assert portrait["fixed_epoch"] == 1
    assert portrait["fixed"] == census[1]["fixed_points"]["points"]


def test_search_settings_are_checked_when_the_callback_is_made():
    with pytest.raises(ValueError, match=r"a dict with 'inputs'.*Received: fixed_points=True"):
        fbx.TraceCallback(X, fixed_points=True)
    with pytest.raises(ValueError, match=r"Received: attractors with the keys \['inputs', 'n'\]"):
        fbx.TraceCallback(X, attractors={"inputs": ZERO, "n": 3})


def test_targets_given_before_fit_stay_drawn_as_epochs_arrive():
    net = small_net(seed=4)
    watch = fbx.TraceCallback(X[:2])
    ex = fbx.explore(watch, targets=Y[:2])
    net.fit(X, Y, epochs=2, batch_size=8, verbose=0, callbacks=[watch])
    track = {t["role"]: t for t in ex.view.data["panels"]["track"]}
    assert ex.view.data["epochs"] == [0, 1, 2] and set(track) == {"input", "output", "target"}
    target = decode(track["target"]["values"], (1, 4, 1))[0]
    np.testing.assert_allclose(target, Y[0], rtol=1e-6)
