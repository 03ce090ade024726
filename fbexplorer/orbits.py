"""Periodic orbits of a step map: least periods, and one point per orbit.

A search for states with `F^k(s) = s` finds every phase of a `k`-cycle, and
the fixed points and shorter cycles too (a point of period `d` with `d | k`
returns after `k` steps as well). `distinct_orbits` keeps the points of
least period `k` and one point per orbit, from the phases `s, F(s), ...,
F^k(s)` of each; `fbexplorer.fixed_point_search` uses it for `period=k`.
"""

from __future__ import annotations

import numpy as np

__all__ = ["distinct_orbits"]


def distinct_orbits(phases, q, tolerance: float) -> np.ndarray:
    """Indices of the points of least period `k` that start distinct orbits.

    `phases` `(n, k + 1, D)` holds each point's orbit `s, F(s), ..., F^k(s)`;
    `q` `(n,)` its residual. A point is of smaller period when `F^d(s)` lies
    within `tolerance` (Euclidean) of `s` for a divisor `d < k` of `k`. In
    order of increasing `q`, a point is kept unless it lies within
    `tolerance` of a phase of a kept orbit. Returns the kept indices, sorted.
    """
    phases = np.asarray(phases, "float64")
    n, k = phases.shape[0], phases.shape[1] - 1
    start = phases[:, 0]
    least = np.ones(n, bool)
    for d in range(1, k):
        if k % d == 0:
            least &= np.linalg.norm(phases[:, d] - start, axis=1) > tolerance
    kept, seen = [], []
    for i in np.argsort(q, kind="stable"):
        if not least[i]:
            continue
        if seen and np.min(np.linalg.norm(np.concatenate(seen) - start[i], axis=1)) <= tolerance:
            continue
        kept.append(i)
        seen.append(phases[i, :k])
    return np.asarray(sorted(kept), int)
