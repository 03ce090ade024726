"""Writes `saved_0_1.keras` and `saved_0_1.npz`: a model saved by fbexplorer 0.1.0
before its modules were renamed and split, with its inputs and outputs.

tests/test_saving.py loads the file with the current code and checks the
outputs, so a later move that breaks old files fails there. Run once, from the
repository root, with the version being recorded: `python tests/data/make_saved_models.py`.
"""

from pathlib import Path

import keras
import numpy as np

import fbexplorer as fbx

HERE = Path(__file__).parent


def build():
    x = keras.Input((3,), name="x")
    img = keras.Input((2,), name="img")
    fb = fbx.Feedback((2,), name="fb", delay=3, initial="learned")
    fixed = fbx.Feedback((4,), name="fixed", initial=keras.initializers.RandomNormal(seed=3))
    h = fbx.cell(keras.layers.LSTMCell(4, name="lstm"), initial="learned")(
        keras.layers.Concatenate()([x, fb, img])
    )
    past = fbx.delayed(h, steps=2)
    inner_x = keras.Input((4,), name="inner_x")
    inner_fb = fbx.Feedback((3,), name="inner_fb")
    inner_y = keras.layers.Dense(3, activation="tanh", name="inner_d")(
        keras.layers.Concatenate()([inner_x, inner_fb])
    )
    inner = fbx.FeedbackModel(inner_x, inner_y, feedback={"inner_fb": inner_y}, name="inner")
    g = fbx.cell(inner)(h)
    y = keras.layers.Dense(2, name="y")(keras.layers.Concatenate()([h, past, fixed, g]))
    return fbx.FeedbackModel(
        x,
        y,
        feedback={"fb": y, "fixed": h},
        constants=[img],
        teacher_forcing=0.25,
        name="saved_0_1",
    )


def main():
    keras.utils.set_random_seed(7)
    rng = np.random.default_rng(7)
    net = build()
    for w in net.trainable_weights:  # the learned initial values non-zero too
        w.assign(np.asarray(rng.normal(size=w.shape), "float32"))
    X = rng.normal(size=(2, 7, 3)).astype("float32")
    C = rng.normal(size=(2, 2)).astype("float32")
    net.save(HERE / "saved_0_1.keras")
    np.savez(HERE / "saved_0_1.npz", x=X, img=C, y=np.asarray(net([X, C])))


if __name__ == "__main__":
    main()
