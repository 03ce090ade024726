"""The dynamics drawn on a portrait: fixed points by kind, cycles, saddles' arrows, attractors.

`portrait_marks` projects a `fbx.fixed_points` result (and a `fbx.attractors`
census) into a portrait's `Projection` and returns plain arrays that both
`fbx.portrait` (plotly) and the explorer's portrait tab (`explorer.js`) draw:
each point's kind ("stable", "unstable", "marginal" or "slow") and what a
hover shows of it (stability, spectral radius, time constant `tau`, period,
how the outputs read its slowest mode), periodic orbits as closed polygons,
and a saddle's unstable directions (its eigenvectors of modulus above 1)
projected into the plane, for short arrows. Stand-ins with only `.states`
and `.frame["stable"]` get points and kinds; the rest is drawn where the
result has it (`frame` columns, `orbit`, `eigenvectors`, `readout_alignment`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from fbexplorer.linearisation import MARGINAL_TOLERANCE
from fbexplorer.portraits import Projection, fixed_point_values

__all__ = ["KINDS", "PortraitMarks", "attractor_marks", "portrait_marks"]

KINDS = ("stable", "unstable", "marginal", "slow")  # a fixed point's kind, as drawn
MAX_DETAILED = 200  # points beyond this many get no arrows, orbits or read-outs


@dataclass
class PortraitMarks:
    """What a portrait draws of the dynamics, in its projection's coordinates.

    Attributes:
        points: `(points, dims)` fixed (and slow) points.
        kinds: each point's kind, one of `KINDS`.
        info: per point, `{name: value}` of what a hover shows (row, stability,
            spectral_radius, tau, period, q, readout), numbers as floats.
        orbits: `[(point row, (period, dims))]`, the orbits of period > 1, in order.
        arrows: `[(point row, (dims,) start, (dims,) unit direction)]`, the
            unstable directions of each saddle (an unstable point with a stable
            mode too), projected; both senses are unstable.
        attractors: `{"points" (A, dims), "kinds", "info", "orbits"}` of a
            census, or None.
    """

    points: np.ndarray
    kinds: list = field(default_factory=list)
    info: list = field(default_factory=list)
    orbits: list = field(default_factory=list)
    arrows: list = field(default_factory=list)
    attractors: dict | None = None

    def to_json(self) -> dict:
        """The marks as `explorer.js` reads them (plain lists, 2 dims; NaN as None)."""
        points = np.zeros((0, 2)) if self.points is None else self.points
        out = {
            "points": _listed(points[:, :2]),
            "kinds": list(self.kinds),
            "info": self.info,
            "orbits": [[row, _listed(o[:, :2])] for row, o in self.orbits],
            "arrows": [[row, _listed(s[:2]), _listed(d[:2])] for row, s, d in self.arrows],
        }
        if self.attractors is not None:
            a = self.attractors
            out["attractors"] = {
                "points": _listed(a["points"][:, :2]),
                "kinds": a["kinds"],
                "info": a["info"],
                "orbits": [[row, _listed(o[:, :2])] for row, o in a["orbits"]],
            }
        return out


def _listed(a) -> list:
    """Plain lists of floats (6 decimals), None where not finite (JSON has no NaN)."""
    a = np.asarray(a, "float64")
    return np.where(np.isfinite(a), np.round(a, 6), None).tolist()


def _number(v):
    """A float for JSON: None where not finite (inf tau reads "inf" in `info_text`)."""
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else ("inf" if math.isinf(v) and v > 0 else None)


def point_kinds(frame, stable) -> np.ndarray:
    """Each point's kind: "slow" where `frame.slow` says so, else "marginal" where
    `frame.stability` says so, else "stable" or "unstable" by `stable`."""
    kinds = np.where(np.asarray(stable, bool), "stable", "unstable").astype(object)
    if "stability" in frame:
        kinds[np.asarray(frame["stability"]) == "marginal"] = "marginal"
    if "slow" in frame:
        kinds[np.asarray(frame["slow"], dtype=bool)] = "slow"
    return kinds


def _newest(values: Mapping, nodes, shapes) -> dict:
    """`{node: (n, *shape)}` from `(n, *shape)` or a delay line's `(n, k, *shape)` (newest last)."""
    out = {}
    for n, shape in zip(nodes, shapes):
        a = np.asarray(values[n], "float64")
        out[n] = a[:, -1] if a.shape[1:] != tuple(shape) else a
    return out


def _shapes(projection: Projection) -> list:
    return [tuple(s) for s in projection.shapes]


def _split(fixed_points, vector: np.ndarray) -> dict:
    """A flat state vector (the order of `fixed_points.flat`) as `{name: (1, ...)}`."""
    out, start = {}, 0
    for name in fixed_points.names:
        shape = np.shape(fixed_points.states[name])[1:]
        size = int(np.prod(shape, dtype=np.int64))
        out[name] = vector[start : start + size].reshape((1,) + shape)
        start += size
    return out


def _direction(fixed_points, projection, vector) -> np.ndarray | None:
    """A flat direction projected into the plane (no mean), unit length; None if it
    projects to nothing."""
    parts = _newest(_split(fixed_points, vector), projection.nodes, _shapes(projection))
    flat = np.concatenate([parts[n].reshape(-1) for n in projection.nodes])
    d = projection.components @ flat
    norm = np.linalg.norm(d)
    return d / norm if norm > 1e-9 else None


def _readout(fixed_points, i: int) -> str | None:
    """Which output unit reads point i's slowest mode best, and how well (cosine)."""
    if not hasattr(fixed_points, "readout_alignment"):
        return None
    table = fixed_points.readout_alignment(i, modes=1)
    table = table[np.isfinite(table["alignment"].to_numpy(dtype="float64"))]
    if table.empty:
        return None
    best = table.loc[table["alignment"].idxmax()]
    return (
        f"{best['output']}[{int(best['unit'])}] reads the slowest mode at {best['alignment']:.2f}"
    )


def _info(frame, row: int, kind: str) -> dict:
    info = {"row": int(row), "kind": kind}
    for column in ("stability", "spectral_radius", "tau", "period", "q", "n_unstable"):
        if column in frame:
            value = frame[column].iloc[row]
            info[column] = str(value) if column == "stability" else _number(value)
    return info


def portrait_marks(fixed_points, projection: Projection, what: str = "portrait") -> PortraitMarks:
    """The fixed points of `fixed_points` in `projection`'s space, with their kinds,
    hover text, orbits (period > 1) and saddles' unstable directions."""
    nodes, shapes = list(projection.nodes), _shapes(projection)
    values, stable = fixed_point_values(fixed_points, nodes, shapes, what)
    frame = fixed_points.frame
    dims = projection.dims
    points = projection.transform(values) if len(stable) else np.zeros((0, dims))
    kinds = point_kinds(frame, stable)
    marks = PortraitMarks(points, [str(k) for k in kinds])
    margin = getattr(fixed_points, "settings", {}).get("marginal_tolerance", MARGINAL_TOLERANCE)
    for i, kind in enumerate(marks.kinds):
        info = _info(frame, i, kind)
        if i < MAX_DETAILED:
            info["readout"] = _readout(fixed_points, i)
            _add_orbit(marks, fixed_points, projection, i)
            if kind == "unstable" and hasattr(fixed_points, "eigenvectors"):
                _add_arrows(marks, fixed_points, projection, i, margin)
        marks.info.append(info)
    return marks


def _add_orbit(marks, fixed_points, projection, i: int):
    period = getattr(fixed_points, "period", 1)
    if period > 1 and hasattr(fixed_points, "orbit"):
        orbit = _newest(fixed_points.orbit(i), projection.nodes, _shapes(projection))
        marks.orbits.append((i, projection.transform(orbit)))


def _add_arrows(marks, fixed_points, projection, i: int, margin: float):
    """A saddle's unstable directions: eigenvectors of modulus above 1 + margin, where
    some mode is stable too (a point unstable in every direction is a repeller)."""
    values, right, _ = fixed_points.eigenvectors(i)
    moduli = np.abs(values)
    if not (moduli < 1 - margin).any():
        return
    seen = []
    for m in np.flatnonzero(moduli > 1 + margin):
        d = _direction(fixed_points, projection, np.real(right[:, m]))
        if d is None or any(abs(float(d @ s)) > 0.999 for s in seen):
            continue  # a complex pair's second vector, or the same line
        seen.append(d)
        marks.arrows.append((i, marks.points[i], d))


def attractor_marks(attractors, projection: Projection, what: str = "portrait") -> dict:
    """A census (`fbx.attractors`) in `projection`'s space: one point per attractor
    (its kind: fixed, cycle, continuum, irregular), cycles as closed orbits.
    Divergent ones are left out (their state is not finite)."""
    nodes, shapes = list(projection.nodes), _shapes(projection)
    frame = attractors.frame
    states = getattr(attractors, "states", None)
    if not isinstance(states, Mapping) or "kind" not in frame:
        raise ValueError(
            f"fbx.{what}: attractors must be a result of fbx.attractors (with `.states` "
            f"and `.frame['kind']`). Received: {type(attractors).__name__}"
        )
    missing = [n for n in nodes if n not in states]
    if missing:
        raise ValueError(
            f"fbx.{what}: node '{missing[0]}' has no state in the attractors. States: "
            f"{list(states)}. Draw the attractors of the same model's states."
        )
    kinds = [str(k) for k in frame["kind"]]
    points = projection.transform(_newest(states, nodes, shapes)) if kinds else np.zeros((0, 2))
    keep = [i for i, k in enumerate(kinds) if k != "divergent" and np.isfinite(points[i]).all()]
    out = {"points": points[keep], "kinds": [kinds[i] for i in keep], "info": [], "orbits": []}
    for i in keep:
        info = {"row": int(i), "kind": kinds[i]}
        for column in ("period", "share", "max_lyapunov", "dimension"):
            if column in frame:
                info[column] = _number(frame[column].iloc[i])
        out["info"].append(info)
        period = info.get("period") or 1
        if kinds[i] == "cycle" and period > 1 and hasattr(attractors, "orbit"):
            orbit = _newest(attractors.orbit(i), nodes, shapes)
            out["orbits"].append((int(i), projection.transform(orbit)))
    return out
