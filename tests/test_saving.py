"""`.keras` save/load with no custom_objects gives identical outputs."""

from pathlib import Path

import keras
import numpy as np

import fbexplorer as fbx


def roundtrip(net, tmp_path):
    path = tmp_path / "net.keras"
    net.save(path)
    return keras.saving.load_model(path)


def test_save_load_everything(tmp_path, rng):
    x = keras.Input((3,), name="x")
    img = keras.Input((2,), name="img")
    fb = fbx.Feedback((2,), name="fb", delay=3, initial="learned")
    fixed = fbx.Feedback((4,), name="fixed", initial=keras.initializers.RandomNormal(seed=3))
    h = fbx.cell(keras.layers.LSTMCell(4, name="lstm"), initial="learned")(
        keras.layers.Concatenate()([x, fb, img])
    )
    past = fbx.delayed(h, delay=2)
    y = keras.layers.Dense(2, name="y")(keras.layers.Concatenate()([h, past, fixed]))
    net = fbx.FeedbackModel(
        x,
        y,
        feedback={"fb": y, "fixed": h},
        constants=[img],
        teacher_forcing=0.25,
        go_backwards=True,
    )
    for w in net.trainable_weights:  # make the learned initial values non-zero
        w.assign(np.asarray(rng.normal(size=w.shape), "float32"))
    X = rng.normal(size=(2, 7, 3)).astype("float32")
    C = rng.normal(size=(2, 2)).astype("float32")
    truth = rng.normal(size=(2, 7, 2)).astype("float32")

    loaded = roundtrip(net, tmp_path)
    assert type(loaded) is fbx.FeedbackModel
    assert loaded.feedback_names == net.feedback_names
    assert [s.delay for s in loaded.graph.specs] == [3, 1, 1, 1, 2]
    assert loaded.teacher_forcing == 0.25 and loaded.go_backwards
    for inputs in ([X, C], {"x": X, "img": C, "fb": truth}):
        np.testing.assert_allclose(np.asarray(loaded(inputs)), np.asarray(net(inputs)), atol=1e-6)


def test_save_load_compiled_and_trained(tmp_path, rng):
    x = keras.Input((1,), name="x")
    total = fbx.Feedback((1,), name="total")
    y = keras.layers.Dense(1)(keras.layers.Concatenate()([x, total]))
    net = fbx.FeedbackModel(x, y, feedback={"total": y}, stateful=True, return_sequences=False)
    net.compile("adam", "mse")
    X = rng.normal(size=(4, 5, 1)).astype("float32")
    net.fit(X, X[:, -1], batch_size=4, epochs=2, verbose=0)
    loaded = roundtrip(net, tmp_path)
    assert loaded.stateful and not loaded.return_sequences
    net.reset_states()
    np.testing.assert_allclose(
        loaded.predict(X, batch_size=4, verbose=0),
        net.predict(X, batch_size=4, verbose=0),
        atol=1e-6,
    )
    loaded.fit(X, X[:, -1], batch_size=4, epochs=1, verbose=0)


def test_a_file_saved_by_version_0_1_still_loads():
    """tests/data/saved_0_1.keras was written before the modules were renamed and
    split (tests/data/make_saved_models.py): it loads and computes what it did."""
    data = Path(__file__).parent / "data"
    loaded = keras.saving.load_model(data / "saved_0_1.keras")
    saved = np.load(data / "saved_0_1.npz")
    assert type(loaded) is fbx.FeedbackModel
    assert [s.delay for s in loaded.graph.specs][:2] == [3, 1]
    np.testing.assert_allclose(
        np.asarray(loaded([saved["x"], saved["img"]])), saved["y"], atol=1e-5
    )
