"""Fixed-point de-duplication: the grid against the quadratic scan it replaced.

Run with `python benchmarks/dedupe.py [--quick] [--rounds N]`. `fbx.fixed_points`
merges points closer than `dedupe_tolerance`, the one of lowest q kept. The
quadratic scan compared each point with every point kept so far (4,000
distinct points: 8 million distances in Python); the grid compares it with
the kept points in the neighbouring cells of 3 projections only. Two
measurements, the contenders taking turns round after round in this one
process (medians):

- the de-duplication alone, on the 4,000 states a search of the 64-unit
  Elman net of `fixed_points.py` ends at after one compiled call of 10
  Levenberg-Marquardt steps (nearly all distinct);
- the whole `fbx.fixed_points` call making them (4,000 starts, 10 steps,
  `slow_tolerance=1e9` so that every point is kept), with either dedupe.

Both give the same points (checked). `--quick`: 400 starts, one round.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from fixed_points import FULL, network

import fbexplorer as fbx
from fbexplorer import fixed_point_search


def quadratic(flat, q, tol):
    """The de-duplication before the grid: each point against every kept one."""
    keep = []
    for i in np.argsort(q, kind="stable"):
        if all(np.linalg.norm(flat[i] - flat[j]) > tol for j in keep):
            keep.append(i)
    return np.asarray(sorted(keep), int)


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    starts, rounds = (400, 1) if args.quick else (4000, args.rounds)
    net = network(FULL)
    held = {"x": np.full(FULL["inputs"], 0.5, "float32")}
    settings = dict(n_starts=starts, iterations=10, slow_tolerance=1e9, seed=0)
    fp = fbx.fixed_points(net, held, **dict(settings, dedupe_tolerance=0.0))
    flat, q = fp.flat, fp.frame["q"].to_numpy()
    print(f"{len(flat)} points of {flat.shape[1]} numbers")
    grid = fixed_point_search.dedupe_points
    alone = {"quadratic": [], "grid": []}
    whole = {"quadratic": [], "grid": []}
    for r in range(rounds):
        order = ["quadratic", "grid"] if r % 2 == 0 else ["grid", "quadratic"]
        for name in order:
            fn = quadratic if name == "quadratic" else grid
            seconds, kept = timed(lambda fn=fn: fn(flat, q, 1e-3))
            alone[name].append(seconds)
            alone[name + " kept"] = kept
        for name in order:
            fixed_point_search.dedupe_points = quadratic if name == "quadratic" else grid
            try:
                seconds, result = timed(lambda: fbx.fixed_points(net, held, **settings))
            finally:
                fixed_point_search.dedupe_points = grid
            whole[name].append(seconds)
            whole[name + " points"] = result.flat
    assert np.array_equal(alone["quadratic kept"], alone["grid kept"])
    assert np.array_equal(whole["quadratic points"], whole["grid points"])
    print(f"kept {len(alone['grid kept'])} of {len(flat)}; the same points either way")
    for label, table in (("dedupe alone", alone), ("whole fixed_points call", whole)):
        a, b = statistics.median(table["quadratic"]), statistics.median(table["grid"])
        print(
            f"{label}: quadratic {a:.3f} s, grid {b:.3f} s ({a / b:.0f}x); "
            f"rounds {[round(x, 3) for x in table['quadratic']]} / "
            f"{[round(x, 3) for x in table['grid']]}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
