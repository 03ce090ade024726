"""Shared test setup: the Keras backend, a fresh seed per test, hypothesis's
profiles and the `jax` marker's run.

Tiers (markers in pyproject.toml): `make test` runs everything but tests/browser
in two pytest runs, TensorFlow then `KERAS_BACKEND=jax` (the tests marked
`jax`, which the TensorFlow run leaves out); `make test-fast` leaves out the
tests marked `slow` and runs the property tests at the `dev` profile's counts.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, Phase, settings  # noqa: E402

# Hypothesis: `ci` (the default; `make test`) draws each property test's full
# count of examples (tests/test_properties.py gives the counts for `ci`, where
# max_examples is 100); `dev` (`make test-fast`, or --hypothesis-profile=dev)
# draws a tenth of them. Examples are derandomized: every run checks the same ones.
settings.register_profile(
    "ci",
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,  # tests/test_magics_fuzz.py: one shell, capsys
    ],
    phases=[Phase.explicit, Phase.generate, Phase.shrink],
)
settings.register_profile("dev", settings.get_profile("ci"), max_examples=10)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_ignore_collect(collection_path, config):
    """On JAX, skip importing the test files that mark no test `jax` (a quicker start)."""
    if keras.backend.backend() != "jax" or collection_path.suffix != ".py":
        return None
    if not collection_path.name.startswith("test_"):
        return None
    return "mark.jax" not in collection_path.read_text(encoding="utf-8") or None


def pytest_collection_modifyitems(config, items):
    """Tests marked `jax` run only on the JAX backend, all others only on TensorFlow;
    the heavy ones first."""
    on_jax = keras.backend.backend() == "jax"
    keep, drop = [], []
    for item in items:
        (keep if (item.get_closest_marker("jax") is not None) == on_jax else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
    items.sort(key=lambda item: not _heavy(item))


def _heavy(item) -> bool:
    """A test of seconds or minutes: `slow`, or a hypothesis property test. They
    go first, so that pytest-xdist's two workers do not end with one of them
    running a long test alone while the other waits."""
    return item.get_closest_marker("slow") is not None or getattr(
        getattr(item, "obj", None), "is_hypothesis_test", False
    )


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(1234)
    yield
    keras.backend.clear_session()


@pytest.fixture
def rng():
    return np.random.default_rng(0)
