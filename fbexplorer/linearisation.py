"""The linearisation of a step map at its fixed points: labels, time constants, modes.

Near a fixed point `s*` of the step `F`, `F(s* + d) ~ s* + J d + B du` with
`J = dF/ds` and `B = dF/du` (`u` a held input). This module reads `J`'s
spectrum (`stability_labels`, `time_constants`), splits `J` into its modes
(`eigen_decomposition`: right and left eigenvectors, the left ones the
selection vectors of Mante et al. 2013), chains per-step Jacobians along an
orbit (`chain`, `chain_inputs`); the Jacobians themselves come from the
backend's autodiff in `fbexplorer.state_map`. `fbexplorer.fixed_point_search`
uses them for `FixedPoints`.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "MARGINAL_TOLERANCE",
    "chain",
    "chain_inputs",
    "eigen_decomposition",
    "stability_labels",
    "time_constants",
]

# |largest eigenvalue| within this of 1 is "marginal": float rounding alone
# cannot decide whether a line attractor's eigenvalue 1 is inside or outside.
MARGINAL_TOLERANCE = 1e-3


def stability_labels(radius, tolerance: float = MARGINAL_TOLERANCE) -> np.ndarray:
    """`"stable"`, `"unstable"` or `"marginal"` per spectral radius: marginal
    within `tolerance` of 1, else stable below 1 and unstable above."""
    radius = np.asarray(radius, "float64")
    labels = np.where(radius < 1.0, "stable", "unstable").astype(object)
    labels[np.abs(radius - 1.0) <= tolerance] = "marginal"
    return labels


def time_constants(radius) -> np.ndarray:
    """`-1 / ln |lambda_max|` per spectral radius, in steps: how many steps the
    slowest mode takes to shrink by a factor e (inf at radius 1, 0 at radius 0).
    Above 1 it is negative: `|tau|` steps is then the time in which the
    fastest-growing mode grows by a factor e."""
    radius = np.asarray(radius, "float64")
    with np.errstate(divide="ignore"):
        log = np.log(radius)
        return np.where(log == 0.0, np.inf, -1.0 / np.where(log == 0.0, 1.0, log))


def eigen_decomposition(jacobian):
    """`(values, right, left)` of a square matrix, by decreasing modulus.

    `J @ right = right @ diag(values)` (columns are right eigenvectors, unit
    norm), `left @ J = diag(values) @ left` (rows are left eigenvectors) and
    `left @ right = I`: `left` is `right`'s inverse, so `left[i] @ d` is the
    coordinate of a perturbation `d` along mode `i`. For a defective `J` (a
    Jordan block) `right` is near singular and `left` large.
    """
    values, right = np.linalg.eig(np.asarray(jacobian, "float64"))
    order = np.argsort(-np.abs(values), kind="stable")
    values, right = values[order], right[:, order]
    return values, right, np.linalg.inv(right)


def chain(jacobians) -> np.ndarray:
    """The Jacobian of `k` steps from those of each: `J_{k-1} ... J_1 J_0` for
    `jacobians` `(points, k, D, D)` (step 0 first); `(points, D, D)`."""
    jacobians = np.asarray(jacobians)
    out = jacobians[:, 0]
    for j in range(1, jacobians.shape[1]):
        out = jacobians[:, j] @ out
    return out


def chain_inputs(jacobians, inputs) -> np.ndarray:
    """`dF^k/du` for an input held at every one of `k` steps, from each step's
    `jacobians` `(points, k, D, D)` and `inputs` `(points, k, D, *shape)`
    (`dF/du` at each step): `sum_j J_{k-1} ... J_{j+1} B_j`; `(points, D, *shape)`."""
    inputs = np.asarray(inputs)
    points, k, size = inputs.shape[:3]
    flat = inputs.reshape(points, k, size, -1)
    out = flat[:, 0]
    for j in range(1, k):
        out = jacobians[:, j] @ out + flat[:, j]
    return out.reshape((points, size) + inputs.shape[3:])
