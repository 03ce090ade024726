"""Regenerate the README's drawings of the d1 -> d2 -> d3 -> d1 network.

Run from the repository root: `python docs/make_figures.py` (needs Graphviz's
`dot`). Writes docs/cyclic.svg and docs/unrolled.svg.
"""

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402

import fbexplorer as fbx  # noqa: E402

DOCS = Path(__file__).resolve().parent


def seed_network():
    """The README's example: x -> d1 -> d2 -> d3 -> out, d3 fed back into d1."""
    x = keras.Input((1,), name="x")
    loop = fbx.Feedback((8,), name="loop")
    h1 = keras.layers.Dense(8, activation="tanh", name="d1")(keras.layers.Concatenate()([x, loop]))
    h2 = keras.layers.Dense(8, activation="tanh", name="d2")(h1)
    h3 = keras.layers.Dense(8, activation="tanh", name="d3")(h2)
    y = keras.layers.Dense(1, name="out")(h3)
    return fbx.FeedbackModel(inputs=x, outputs=y, feedback={"loop": h3})


def main():
    net = seed_network()
    (DOCS / "cyclic.svg").write_bytes(fbx.draw(net).pipe(format="svg"))
    (DOCS / "unrolled.svg").write_bytes(fbx.draw(net, unroll=3).pipe(format="svg"))


if __name__ == "__main__":
    main()
