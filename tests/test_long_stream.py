"""A stateful model streams 100,000 steps in chunks, with flat memory and the
same values as a numpy loop over the whole stream."""

import gc

import keras
import numpy as np
import pytest

import fbexplorer as fbx

pytestmark = pytest.mark.slow  # a hundred thousand steps

STEPS, CHUNK, BATCH, UNITS = 100_000, 1_000, 4, 8


def rss_mb() -> float:
    """The process's resident memory now (not its peak), in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def test_hundred_thousand_steps_in_chunks():
    x = keras.Input((1,), name="x")
    loop = fbx.Feedback((UNITS,), name="loop", delay=2)
    h = keras.layers.Dense(UNITS, activation="tanh", name="h")(
        keras.layers.Concatenate()([x, loop])
    )
    y = keras.layers.Dense(1, name="y")(h)
    net = fbx.FeedbackModel(x, y, feedback={"loop": h}, stateful=True)
    w, b = net.step_model.get_layer("h").get_weights()
    w[1:] *= 0.5 / np.linalg.norm(w[1:], 2)  # a contracting loop: rounding errors fade
    net.step_model.get_layer("h").set_weights([w, b])
    wy, by = net.step_model.get_layer("y").get_weights()

    rng = np.random.default_rng(0)
    stream = rng.uniform(-1, 1, size=(BATCH, STEPS, 1)).astype("float32")

    hist = [np.zeros((BATCH, UNITS), "float32")] * 2  # numpy reference over the whole stream
    ref_out = np.empty((BATCH, CHUNK), "float32")
    for t in range(STEPS):
        hn = np.tanh(np.concatenate([stream[:, t], hist[0]], -1) @ w + b)
        hist = [hist[1], hn]
        if t >= STEPS - CHUNK:
            ref_out[:, t - (STEPS - CHUNK)] = (hn @ wy + by)[:, 0]

    memory = []
    for start in range(0, STEPS, CHUNK):
        out = net(stream[:, start : start + CHUNK])
        if start // CHUNK in (10, 99):  # after warm-up, and at the end
            gc.collect()
            memory.append(rss_mb())
    growth = memory[1] - memory[0]
    assert growth < 10, f"memory grew by {growth:.1f} MiB over 89 chunks of {CHUNK} steps"

    np.testing.assert_allclose(np.asarray(out)[..., 0], ref_out, atol=1e-4)
    states = net.get_states()["loop"]  # (batch, 2, units), oldest first
    np.testing.assert_allclose(states, np.stack(hist, axis=1), atol=1e-4)
