"""Comparing dynamics: DSA's spectral comparison against full DSA (dsa-metric), and their cost.

Run with `python benchmarks/dynamics_similarity.py [--quick]`. A family of
linear systems `x' = A x`: `--spectra` spectra (each a pair of complex
eigenvalues and a real one, random), each in `--bases` random orthonormal
bases (full DSA's Procrustes allows orthogonal changes of basis), each
traced from 8 random starts for 60 steps. `fbx.compare_dynamics` compares
them by the spectral method (Hankel DMD through PyDMD, eigenvalues by a
2-Wasserstein distance through POT) and, where the package `dsa-metric`
(with PyTorch: `make bench-torch`, then `pip install dsa-metric`) is
installed, by full DSA (Procrustes over vector fields, angular score).

Reported for each method: its time, and how well it separates the spectra:
the largest distance between two systems of one spectrum (in other bases,
the same dynamics: it should be near 0) against the smallest between
systems of different spectra; and, with both, the Spearman correlation of
the two methods' distances between systems of different spectra. Without
dsa-metric, the full-DSA leg is reported as skipped.
`--quick`: 3 spectra x 2 bases.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from scipy.stats import spearmanr

import fbexplorer as fbx


def system(rng, eigenvalues, n=3):
    """A real 3 x 3 matrix of the eigenvalues (r e^{+-ia}, c) in a random orthonormal
    basis: full DSA's Procrustes is over orthogonal changes of basis (the spectral
    comparison would accept any basis)."""
    (r, a), c = eigenvalues
    block = np.array([[r * np.cos(a), -r * np.sin(a), 0], [r * np.sin(a), r * np.cos(a), 0],
                      [0, 0, c]])  # fmt: skip
    p, _ = np.linalg.qr(rng.normal(size=(n, n)))
    return p @ block @ p.T


def traces(rng, a, samples=8, steps=60):
    x = np.zeros((samples, steps, len(a)))
    x[:, 0] = rng.normal(size=(samples, len(a)))
    for t in range(steps - 1):
        x[:, t + 1] = x[:, t] @ a.T
    return x


def separation(d, labels):
    same = labels[:, None] == labels[None, :]
    other = ~np.eye(len(labels), dtype=bool)
    return float(d[same & other].max()), float(d[~same].min())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--spectra", type=int, default=6)
    parser.add_argument("--bases", type=int, default=4)
    args = parser.parse_args()
    spectra, bases = (3, 2) if args.quick else (args.spectra, args.bases)
    rng = np.random.default_rng(0)
    chosen = [((rng.uniform(0.5, 0.95), rng.uniform(0.2, 1.5)), rng.uniform(-0.8, 0.8))
              for _ in range(spectra)]  # fmt: skip
    data = [traces(rng, system(rng, e)) for e in chosen for _ in range(bases)]
    labels = np.repeat(np.arange(spectra), bases)
    report, results = {}, {}
    for method, options in (("spectral", {}), ("dsa", {})):
        start = time.perf_counter()
        try:
            d = fbx.compare_dynamics(data, method=method, n_delays=2, rank=3, **options)
        except ImportError as e:
            report[method] = {"skipped": str(e)}
            continue
        seconds = time.perf_counter() - start
        within, between = separation(d.to_numpy(), labels)
        results[method] = d.to_numpy()
        report[method] = {"seconds": seconds, "within_max": within, "between_min": between}
    if len(results) == 2:
        cross = labels[:, None] != labels[None, :]
        rho = spearmanr(results["spectral"][cross], results["dsa"][cross]).statistic
        report["spearman_between_spectra"] = float(rho)
    print(f"{spectra} spectra x {bases} bases = {len(data)} systems")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
