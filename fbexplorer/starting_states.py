"""Starting states for the searches and runs of a feedback network's state.

`fbx.fixed_points` and `fbx.attractors` start from many states at once:
states the model visits on `initial` (a batch of sequences, as for a call),
the states given in `initial` by name (`{state name: (n, *shape)}`, as
`FixedPoints.states` and `Attractors.states` hold them), or, without
`initial`, states drawn uniformly from [-1, 1]; then Gaussian noise is added.
The states are flat vectors in the layout of `fbexplorer.state_map`.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fbexplorer import recording
from fbexplorer.state_map import StateLayout

__all__ = ["given_states", "is_state_dict", "starting_states", "visited_states"]


def starting_states(
    model, initial, layout: StateLayout, rng, n_starts: int, noise: float, *, what: str
) -> np.ndarray:
    """The starting states `(n_starts, D)`: visited on `initial` (or given in it by
    state name, else uniform in [-1, 1]), plus Gaussian noise."""
    if is_state_dict(initial, layout):
        starts = given_states(initial, layout, n_starts, what=what)
    elif initial is not None:
        starts = visited_states(model, initial, layout, rng, n_starts, what=what)
    else:
        starts = rng.uniform(-1.0, 1.0, (n_starts, layout.size)).astype("float32")
    return starts + rng.normal(0.0, noise, starts.shape).astype("float32")


def is_state_dict(initial, layout: StateLayout) -> bool:
    """Whether `initial` names states (every state of the layout, nothing else)
    rather than inputs."""
    return isinstance(initial, Mapping) and set(initial) == set(layout.names)


def given_states(states: Mapping, layout: StateLayout, n_starts: int, *, what: str):
    """`n_starts` states cycled from `{state name: (n, *shape)}`, `(n_starts, D)`."""
    counts = set()
    for name, shape in zip(layout.names, layout.shapes):
        value = np.asarray(states[name])
        if value.ndim < 1 or value.shape[1:] != tuple(shape) or len(value) < 1:
            raise ValueError(
                f"fbx.{what}: initial state '{name}' holds points of shape {tuple(shape)} "
                f"(one per start, as (points, *shape)). Received shape {value.shape}."
            )
        counts.add(len(value))
    if len(counts) != 1:
        raise ValueError(
            f"fbx.{what}: the initial states hold different numbers of points. Received: "
            + ", ".join(f"{n}: {len(np.asarray(states[n]))}" for n in layout.names)
        )
    flat = layout.from_dict(states, counts.pop())
    return np.resize(flat, (n_starts, layout.size)).astype("float32")


def visited_states(
    net, initial, layout: StateLayout, rng, n_starts: int, *, what: str
) -> np.ndarray:
    """`n_starts` full states the model passes through on `initial`, `(n_starts, D)`,
    drawn at random among those whose values are finite."""
    specs = net.graph.specs
    catalogue = recording.catalogue(net)
    names = [s.name for s in specs]
    prep = recording.prepare(net, initial, what=what)
    size = (prep.batch, prep.length, recording.node_units(net, names))
    remedy = "Pass fewer or shorter sequences as initial= (or leave it out)"
    recording.check_size(names, size, what=f"fbx.{what}", kind="trace_arrays", remedy=remedy)
    arrays, _ = recording.run_windows(net, prep, names, bounds=[(0, prep.length)], progress=False)
    length = prep.length
    k_max = max(s.delay for s in specs)
    # The history before step t: a delayed edge's values fed at t .. t+k-1; a
    # cell's state handed on by step t-1.
    times = np.arange(1, length - k_max + 1)
    if times.size == 0:
        raise ValueError(
            f"fbx.{what}: `initial` has {length} steps; the longest delay is {k_max}, "
            f"so at least {k_max + 1} steps are needed to read a whole state from it."
        )
    finite = np.ones((prep.batch, times.size), bool)  # (sample, time) of finite states
    for spec, arr in zip(specs, arrays):
        ok = np.isfinite(arr.reshape(arr.shape[0], arr.shape[1], -1)).all(axis=2)
        if catalogue[spec.name][0] == "state":
            finite &= ok[:, times - 1]
        else:
            window = np.lib.stride_tricks.sliding_window_view(ok, spec.delay, axis=1)
            finite &= window[:, times].all(axis=2)
    candidates = np.flatnonzero(finite.reshape(-1))
    if not candidates.size:
        raise ValueError(
            f"fbx.{what}: the model's state is NaN or inf at every step of `initial` "
            f"({prep.batch} samples x {length} steps): the model diverges there. Pass initial= "
            f"data on which it stays finite, or leave initial out to start from [-1, 1]."
        )
    # As if every visited state were stacked (sample-major) and n_starts drawn.
    if candidates.size == finite.size:
        rows = rng.integers(0, candidates.size, n_starts)
    else:
        rows = candidates[rng.integers(0, candidates.size, n_starts)]
    sample, at = np.divmod(rows, times.size)
    at = times[at]
    parts = []
    for spec, arr in zip(specs, arrays):
        if catalogue[spec.name][0] == "state":
            h = arr[sample, at - 1][:, None]
        else:
            h = np.stack([arr[sample, at + j] for j in range(spec.delay)], axis=1)
        parts.append(h.reshape(n_starts, -1))
    return np.concatenate(parts, axis=1).astype("float32")
