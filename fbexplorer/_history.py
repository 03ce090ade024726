"""A delayed edge's history, held as compactly as what it holds allows.

Between runs an edge of delay k has a history of k values, oldest first:
`(k, batch, *shape)`. Until the model has written k values, the oldest are
all one initial value (`Feedback(initial=...)`, or an `initial_state=` value
per sample): `History(fill, tail)` holds that value once and only the newest
`len(tail)` values, the first `k - len(tail)` being `fill`. A run of T steps
reads the first T values of its history (the value from step t - k, at step
t) and writes T, so an edge whose delay is longer than the run never needs
its whole history: `window` makes the entries a run reads, `kept` the entries
that stay after it (at most the old tail plus T), and only `full`, for the
user (`return_state`, `get_states`) and for callers that take the history as
one array, makes all k, within a memory budget (`check_budget`).

A plain tensor `(k, batch, *shape)` is a history too (`as_history`). The tail
is a tensor whose length may be unknown when traced (a stateful model's
compact history grows from call to call); `fill` has shape `(*shape)` or
`(batch, *shape)`; either is None when empty.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from keras import ops

from fbexplorer.memory import budget_and_source, format_bytes, memory_budget

__all__ = [
    "History",
    "after_masked",
    "as_history",
    "budget_words",
    "check_budget",
    "describe",
    "full",
    "history_batch",
    "history_bytes",
    "history_dtype",
    "kept",
    "over_budget",
    "tail_length",
    "window",
]

# The memory budget for a whole history is the inspection tools' one
# (`fbexplorer.memory`): fbx.set_memory_budget, else FBX_MEMORY_BUDGET (bytes:
# "2e9", "2GB", "512MB"), else half the memory available now.


class History(NamedTuple):
    """`k - len(tail)` copies of `fill`, then `tail` `(m, batch, *shape)`, oldest first."""

    fill: object
    tail: object


def as_history(h) -> History:
    """A history as a `History` (a plain `(k, batch, *shape)` tensor is all tail)."""
    if isinstance(h, History):
        return h
    return History(None, ops.convert_to_tensor(h))


def tail_length(h: History):
    """How many real values the history holds: an int, or a scalar tensor when traced."""
    if h.tail is None:
        return 0
    m = h.tail.shape[0]
    return m if m is not None else ops.shape(h.tail)[0]


def history_batch(h):
    """The batch size of a history: an int, or a scalar tensor."""
    h = as_history(h)
    ref, axis = (h.fill, 0) if h.fill is not None else (h.tail, 1)
    b = ref.shape[axis]
    return b if b is not None else ops.shape(ref)[axis]


def history_dtype(h):
    h = as_history(h)
    return (h.fill if h.fill is not None else h.tail).dtype


def _static(*values) -> bool:
    return all(isinstance(v, (int, np.integer)) for v in values)


# Positions in a history run up to its delay, which may pass int32 (a delay
# read from a file): where the tail's length is known only when run, they
# are int64 tensors, and what is cut from them (counts, slice bounds, at most
# the tail and the run) int32.
def _max(a, b):
    return max(int(a), int(b)) if _static(a, b) else ops.maximum(_wide(a), _wide(b))


def _min(a, b):
    return min(int(a), int(b)) if _static(a, b) else ops.minimum(_wide(a), _wide(b))


def _wide(v):
    return int(v) if _static(v) else ops.cast(v, "int64")


def _narrow(v):
    return int(v) if _static(v) else ops.cast(v, "int32")


def window(h, k: int, lo, hi, batch, shape: tuple):
    """Entries `lo:hi` (0 <= lo < hi <= k) of the history of delay `k`,
    `(hi - lo, batch, *shape)`: the copies of `fill` among them made, the
    tail sliced. `lo` may be a scalar tensor where the tail's length is one."""
    h = as_history(h)
    if h.fill is None:  # the tail is the whole history
        whole = _static(lo, hi) and (lo, hi) == (0, k)
        return h.tail if whole else h.tail[_narrow(lo) : _narrow(hi)]
    m = _wide(tail_length(h))
    width = _narrow(_wide(hi) - _wide(lo))
    before, after = k - _wide(lo), k - _wide(hi)  # entries from lo, from hi, to the end
    parts = []
    n_fill = _narrow(_min(_max(before - m, 0), width))
    if not (_static(n_fill) and n_fill == 0):
        parts.append(ops.broadcast_to(h.fill[None], (n_fill, batch) + tuple(shape)))
    a, b = _narrow(_max(m - before, 0)), _narrow(_max(m - after, 0))
    if h.tail is not None and not (_static(b) and b == 0):
        whole = _static(a, b, m) and (a, b) == (0, m)
        parts.append(h.tail if whole else h.tail[a:b])
    out = parts[0] if len(parts) == 1 else ops.concatenate(parts, axis=0)
    if not _static(m, width):  # the length is hi - lo, though the slices hide it
        out = ops.reshape(out, (width, batch) + tuple(shape))
    return out


def kept(h, k: int, new):
    """The history after a run appended `new` `(T, batch, *shape)`: the last k
    entries of the old history and `new`, held as the old tail and `new`
    (whichever of their last k entries there are) after the same `fill`.

    A plain tensor when it is whole (k entries), else a `History`.
    """
    h = as_history(h)
    m = tail_length(h) if h.fill is not None else k
    z = new if h.tail is None else ops.concatenate([h.tail, ops.cast(new, h.tail.dtype)], axis=0)
    steps = new.shape[0]
    steps = steps if steps is not None else ops.shape(new)[0]
    drop = _wide(m) + _wide(steps) - k
    if _static(drop):
        z = z[drop:] if drop > 0 else z
        if h.fill is None or drop >= 0:
            return z
        return History(h.fill, z)
    return History(h.fill, z[_narrow(_max(drop, 0)) :])


def after_masked(h, k: int, buffer, counts, batch, shape: tuple):
    """The history after a masked run whose steps all read initial entries.

    Under a mask each sample's history moves at its unmasked steps only. A
    run of T < k steps then reads entries 0..T-1 only, so the loop holds a
    ring of T slots (no wrap): `buffer` `(T, batch, *shape)`, whose slot j
    holds sample b's j-th new value for j < `counts[b]` (its unmasked
    steps). Sample b's history becomes its old one from entry `counts[b]`
    on, then its new values: kept as the last min(k, m + T) entries (m: the
    old tail), a gather from the old history's last entries and `buffer`.
    """
    h = as_history(h)
    m = tail_length(h) if h.fill is not None else k
    n = _min(k, _wide(m) + buffer.shape[0])
    old = window(h, k, k - n, k, batch, shape)  # (n, batch, ...)
    n = _narrow(n)
    both = ops.concatenate([old, ops.cast(buffer, old.dtype)], axis=0)  # (n + T, batch, ...)
    flat = ops.reshape(both, (-1,) + tuple(shape))
    rows = ops.arange(batch, dtype="int32")
    b = ops.cast(batch, "int32")
    index = (ops.arange(n, dtype="int32")[:, None] + ops.cast(counts, "int32")[None, :]) * b
    taken = ops.take(flat, ops.reshape(index + rows[None, :], (-1,)), axis=0)
    tail = ops.reshape(taken, (n, batch) + tuple(shape))
    if h.fill is None or (_static(n) and n == k):
        return tail
    return History(h.fill, tail)


def full(h, k: int, batch, shape: tuple):
    """The whole history `(k, batch, *shape)` (check its size with `check_budget` first)."""
    h = as_history(h)
    if h.fill is None or (_static(tail_length(h)) and tail_length(h) == k):
        return h.tail
    return window(h, k, 0, k, batch, shape)


# ----------------------------------------------------------- memory budget
def history_bytes(k: int, batch, shape: tuple, dtype) -> int:
    """The bytes of a whole history `(k, batch, *shape)` (an unknown batch counts as 1)."""
    import keras

    b = batch if isinstance(batch, (int, np.integer)) else 1
    name = keras.backend.standardize_dtype(dtype)
    size = 2 if name == "bfloat16" else np.dtype(name).itemsize
    return int(k) * int(b) * math.prod(int(d) for d in shape) * size


def describe(spec, n: int, batch) -> str:
    """'an array (2, 1000000000, 4) of float32, 32.0 GB': `n` entries of the edge's history."""
    b = batch if isinstance(batch, (int, np.integer)) else "batch"
    dims = ", ".join(str(d) for d in (b, n) + tuple(spec.shape))
    size = format_bytes(history_bytes(n, batch, spec.shape, spec.dtype))
    return f"an array ({dims}) of {spec.dtype}, {size}"


def over_budget(specs, batch, counts=None, share=1.0):
    """The edge whose history is largest, if `counts` entries of each edge's
    history (default: its delay) pass the budget together (or `share` of it); else None."""
    counts = [s.delay for s in specs] if counts is None else list(counts)
    sizes = [history_bytes(n, batch, s.shape, s.dtype) for s, n in zip(specs, counts)]
    if not sizes or sum(sizes) <= memory_budget() * share:
        return None
    i = int(np.argmax(sizes))
    return specs[i], counts[i]


def budget_words() -> str:
    nbytes, source = budget_and_source()
    return f"the memory budget of {format_bytes(nbytes)} ({source})"


def check_budget(label: str, what: str, specs, batch, fix: str):
    """Raise, before they are made, if the whole histories of `specs` pass the
    budget: one line naming the largest, its size, and `fix`. `what` says
    what needs them ("return_state=True returns")."""
    found = over_budget(specs, batch)
    if found is None:
        return
    spec, n = found
    raise ValueError(
        f"{label}: {what} the whole history of feedback '{spec.name}' (delay {spec.delay}), "
        f"{describe(spec, n, batch)}, above {budget_words()}. {fix}"
    )
