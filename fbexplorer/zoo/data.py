"""Small data sets for the zoo's examples and tests; nothing is downloaded.

Example:
    >>> X, Y = narendra_system(64, 50)
    >>> X.shape, Y.shape
    ((64, 50, 1), (64, 50, 1))
"""

from __future__ import annotations

import numpy as np

__all__ = ["digits", "narendra_system", "noisy_sines"]


def digits(test_fraction: float = 0.25, seed: int = 0):
    """scikit-learn's bundled 8x8 digits, scaled to [0, 1], split in two.

    Args:
        test_fraction: the share of the 1,797 images held out.
        seed: the seed of the shuffle.

    Returns:
        `(x_train, y_train, x_test, y_test)`, images `(n, 8, 8, 1)` float32 and
        integer labels `(n,)`.
    """
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.images / 16.0).astype("float32")[..., None]
    y = data.target.astype("int64")
    order = np.random.default_rng(seed).permutation(len(y))
    n_test = int(round(len(y) * test_fraction))
    test, train = order[:n_test], order[n_test:]
    return x[train], y[train], x[test], y[test]


def narendra_system(n: int, steps: int, *, seed: int = 0, washout: int = 20):
    """Input and output sequences of a nonlinear plant with output memory.

    The plant of Narendra & Parthasarathy (1990), example 2:
    `y(t) = y(t-1) y(t-2) (y(t-1) + 2.5) / (1 + y(t-1)^2 + y(t-2)^2) + u(t-1)`,
    driven by inputs `u` uniform in [-1, 1]. The first `washout` steps are
    run and dropped, so sequences start from a typical state.

    Args:
        n: sequences.
        steps: timesteps per sequence.
        seed: the seed of the inputs.
        washout: steps run before the returned ones.

    Returns:
        `(u, y)`, float32 arrays of shape `(n, steps, 1)`.
    """
    rng = np.random.default_rng(seed)
    total = steps + washout
    u = rng.uniform(-1.0, 1.0, size=(n, total))
    y = np.zeros((n, total))
    for t in range(2, total):
        y1, y2 = y[:, t - 1], y[:, t - 2]
        y[:, t] = y1 * y2 * (y1 + 2.5) / (1.0 + y1**2 + y2**2) + u[:, t - 1]
    return (
        u[:, washout:, None].astype("float32"),
        y[:, washout:, None].astype("float32"),
    )


def noisy_sines(n: int, steps: int, *, seed: int = 0, noise: float = 0.05):
    """Two-channel sequences `(sin, cos)` of random frequency, phase and amplitude.

    Args:
        n: sequences.
        steps: timesteps per sequence.
        seed: the seed.
        noise: the standard deviation of added Gaussian noise.

    Returns:
        A float32 array `(n, steps, 2)`.
    """
    rng = np.random.default_rng(seed)
    freq = rng.uniform(0.1, 0.4, size=(n, 1))
    phase = rng.uniform(0, 2 * np.pi, size=(n, 1))
    amp = rng.uniform(0.5, 1.0, size=(n, 1))
    angle = freq * np.arange(steps)[None] + phase
    x = amp[..., None] * np.stack([np.sin(angle), np.cos(angle)], -1)
    return (x + noise * rng.normal(size=x.shape)).astype("float32")
