"""What many test files share: random sequences, the README's network and
hypothesis example counts (README.md's and docs/*.md's code blocks run in
tests/test_docs_blocks.py). Imported as `helpers` (tests/ is on
the path, as for `oracle` and `random_graphs`)."""

import keras
import numpy as np
from hypothesis import settings

import fbexplorer as fbx

__all__ = ["examples", "readme_network", "seq"]


def seq(*shape, seed=0, rng=None):
    """Standard normal float32 values of `shape` (default (2, 3, 5): batch,
    time, features), from `rng` or else from a generator seeded with `seed`."""
    rng = np.random.default_rng(seed) if rng is None else rng
    return rng.normal(size=shape or (2, 3, 5)).astype("float32")


def readme_network(
    units=8,
    inputs=1,
    outputs=1,
    delay=1,
    activation="tanh",
    model=fbx.FeedbackModel,
    **kwargs,
):
    """The README's network: x -> cat -> d1 -> d2 -> d3 -> out, with d3 fed back
    into d1 through the feedback 'loop' (`delay` steps). `model` builds it from
    (inputs, outputs, feedback=..., **kwargs)."""
    x = keras.Input((inputs,), name="x")
    loop = fbx.Feedback((units,), name="loop", delay=delay)
    h = keras.layers.Concatenate(name="cat")([x, loop])
    for name in ("d1", "d2", "d3"):
        h = keras.layers.Dense(units, activation=activation, name=name)(h)
    y = keras.layers.Dense(outputs, name="out")(h)
    return model(x, y, feedback={"loop": h}, **kwargs)


def examples(n: int):
    """Hypothesis settings for `n` examples under the `ci` profile
    (max_examples=100, `make test`); other profiles scale the count (`dev`,
    `make test-fast`: a tenth). The profiles (tests/conftest.py) derandomize the
    draws and set no deadline."""
    return settings(max_examples=max(1, n * settings.default.max_examples // 100))
