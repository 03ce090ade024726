"""A FeedbackModel behaves as Keras models do: layers, get_layer, output names,
dict losses and metrics, freezing, Bidirectional; checked against Keras itself."""

import zipfile

import h5py
import keras
import numpy as np

import fbexplorer as fbx


def two_outputs(as_dict):
    x = keras.Input((3,), name="x")
    loop = fbx.Feedback((4,), name="loop")
    h = keras.layers.Dense(4, activation="tanh", name="d1")(
        keras.layers.Concatenate(name="cat")([x, loop])
    )
    a = keras.layers.Dense(2, name="out")(h)
    b = keras.layers.Dense(1, name="aux")(h)
    outputs = {"pred": a, "side": b} if as_dict else [a, b]
    return fbx.FeedbackModel(x, outputs, feedback={"loop": h})


def plain_twin(as_dict):
    """A plain Keras functional model with outputs of the same names."""
    x = keras.Input((5, 3), name="x")
    h = keras.layers.Dense(4, activation="tanh", name="d1")(x)
    a = keras.layers.Dense(2, name="out")(h)
    b = keras.layers.Dense(1, name="aux")(h)
    return keras.Model(x, {"pred": a, "side": b} if as_dict else [a, b])


def test_layers_and_get_layer_list_the_step_graph():
    net = two_outputs(as_dict=False)
    names = [layer.name for layer in net.layers]
    assert names == [layer.name for layer in net.step_model.layers]
    assert {"x", "loop", "cat", "d1", "out", "aux"} <= set(names)
    assert net.get_layer("d1") is net.step_model.get_layer("d1")
    assert net.get_layer(index=names.index("out")).name == "out"


def test_output_names_are_the_output_layers_or_the_dict_keys():
    assert two_outputs(False).output_names == plain_twin(False).output_names == ["out", "aux"]
    assert two_outputs(True).output_names == ["pred", "side"]


def _fit_history(model, X, targets, loss, metrics):
    model.compile(keras.optimizers.SGD(0.01), loss=loss, metrics=metrics)
    return model.fit(X, targets, epochs=1, batch_size=4, verbose=0).history


def test_dict_losses_metrics_targets_and_history_keys(rng):
    X = rng.normal(size=(8, 5, 3)).astype("float32")
    Y = {"out": rng.normal(size=(8, 5, 2)), "aux": rng.normal(size=(8, 5, 1))}
    for as_dict, keys in ((False, ("out", "aux")), (True, ("pred", "side"))):
        targets = dict(zip(keys, Y.values()))
        loss = {keys[0]: "mse", keys[1]: "mae"}
        metrics = {keys[0]: ["mae"]}
        ours = _fit_history(two_outputs(as_dict), X, targets, loss, metrics)
        ref = _fit_history(plain_twin(as_dict), X, targets, loss, metrics)
        assert sorted(ours) == sorted(ref)
        assert all(np.isfinite(v[0]) for v in ours.values())


def test_freezing_a_layer_through_get_layer(rng):
    net = two_outputs(as_dict=False)
    net.get_layer("d1").trainable = False
    frozen = [w.copy() for w in net.get_layer("d1").get_weights()]
    other = [w.copy() for w in net.get_layer("out").get_weights()]
    X = rng.normal(size=(8, 5, 3)).astype("float32")
    net.compile(keras.optimizers.SGD(0.1), loss=["mse", "mse"])
    net.fit(X, [np.ones((8, 5, 2)), np.ones((8, 5, 1))], epochs=2, verbose=0)
    for before, after in zip(frozen, net.get_layer("d1").get_weights()):
        np.testing.assert_array_equal(before, after)
    assert any(not np.allclose(b, a) for b, a in zip(other, net.get_layer("out").get_weights()))


def test_saved_files_keep_their_layout(tmp_path):
    """`layers` lists the step graph, yet files store the step model where they
    always have, so files saved by earlier versions still load."""
    net = two_outputs(as_dict=True)
    path = tmp_path / "net.keras"
    net.save(path)
    with zipfile.ZipFile(path) as z:
        z.extract("model.weights.h5", tmp_path)
    names = []
    with h5py.File(tmp_path / "model.weights.h5") as f:
        f.visit(lambda n: names.append(n) if "/vars/" in n else None)
    assert names and all(n.startswith("layers/functional/layers/") for n in names)
    loaded = keras.saving.load_model(path)
    X = np.ones((1, 3, 3), "float32")
    np.testing.assert_allclose(loaded(X)["pred"], net(X)["pred"], atol=1e-6)


def _one_loop():
    x = keras.Input((3,), name="x")
    loop = fbx.Feedback((4,), name="loop", delay=2)
    h = keras.layers.Dense(4, activation="tanh", name="d1")(keras.layers.Concatenate()([x, loop]))
    return fbx.FeedbackModel(x, h, feedback={"loop": h})


def test_bidirectional_is_forward_and_reversed_runs(rng, tmp_path):
    bi = keras.layers.Bidirectional(_one_loop())
    X = rng.normal(size=(2, 6, 3)).astype("float32")
    y = np.asarray(bi(X))
    fw, bw = bi.forward_layer, bi.backward_layer
    assert bw.go_backwards and not fw.go_backwards
    np.testing.assert_allclose(y[..., :4], np.asarray(fw(X)), atol=1e-6)
    # The backward half is a forward run over the reversed inputs, put back in order.
    twin = fbx.FeedbackModel.from_config({**bw.get_config(), "go_backwards": False})
    twin.set_weights(bw.get_weights())
    np.testing.assert_allclose(y[..., 4:], np.asarray(twin(X[:, ::-1]))[:, ::-1], atol=1e-6)

    inp = keras.Input((6, 3))
    model = keras.Model(inp, keras.layers.Dense(1)(bi(inp)))
    model.compile(keras.optimizers.SGD(0.1), "mse")
    model.fit(X, np.zeros((2, 6, 1)), verbose=0)
    model.save(tmp_path / "bi.keras")
    loaded = keras.saving.load_model(tmp_path / "bi.keras")
    np.testing.assert_allclose(np.asarray(loaded(X)), np.asarray(model(X)), atol=1e-6)
