"""A step-by-step reference for any FeedbackModel: its step model, one timestep at a time.

The oracle knows nothing of the engine's loop: it calls `net.step_model` once per
timestep in plain Python and keeps, per delayed edge, a Python list of the
source's past values (oldest first). It follows the documented contract only:

- step model inputs: per-step inputs, constants, one placeholder per edge in
  `net.graph.specs` order; outputs: the user's outputs, then one source per edge;
- an edge of delay k feeds the source's value from k steps ago (the initial
  value for the first k steps);
- a masked step holds every edge and repeats the previous output (zeros before
  the first unmasked step);
- ground truth for an edge replaces that edge's new source value;
- `go_backwards` reads the sequences from the last step to the first and
  returns the outputs in that order.

It runs eagerly with `keras.ops`, so under `tf.GradientTape` its gradients are
an independent check of backpropagation through the engine's loop.
"""

from __future__ import annotations

import numpy as np
from keras import ops


def initial_history(net, batch: int, initial_state: dict | None = None) -> dict:
    """`{edge name: [value t-k, ..., value t-1]}` before the first step."""
    history = {}
    for spec in net.graph.specs:
        value = (initial_state or {}).get(spec.name)
        if value is None:
            if isinstance(spec.initial, str) and spec.initial == "zeros":
                one = np.zeros((batch,) + spec.shape, "float32")
            elif isinstance(spec.initial, str):
                raise ValueError(f"the oracle cannot know the initial value of '{spec.name}'")
            else:  # a deterministic initializer such as "ones"
                one = np.broadcast_to(
                    np.asarray(spec.initial(spec.shape, "float32")), (batch,) + spec.shape
                )
            history[spec.name] = [one] * spec.delay
            continue
        value = np.asarray(value, "float32")
        if value.ndim == len(spec.shape) + 2:  # (batch, k, ...) history, oldest first
            history[spec.name] = [value[:, i] for i in range(spec.delay)]
        else:
            history[spec.name] = [value] * spec.delay
    return history


def run(
    net,
    inputs: list,
    constants: list | None = None,
    *,
    initial_state: dict | None = None,
    history: dict | None = None,
    mask=None,
    go_backwards: bool = False,
    teachers: dict | None = None,
    training: bool = False,
    steps: int | None = None,
):
    """Run `net`'s step model over the sequences, one step at a time.

    Args:
        net: a `FeedbackModel`.
        inputs: the per-step input sequences `(batch, time, ...)`, in order.
        constants: the constants `(batch, ...)`, in order.
        initial_state: as for a call of `net` (ignored when `history` is given).
        history: the edges' histories to start from, as `initial_history`
            returns them (for continuing a stateful run).
        mask: `(batch, time)` booleans, or None.
        go_backwards: process the time axis in reverse.
        teachers: `{edge name: ground truth (batch, time, ...)}`.
        training: passed to the step model.
        steps: the number of steps when there are no per-step inputs.

    Returns:
        `(outputs, history)`: the list of per-step outputs stacked to
        `(batch, time, ...)` in processing order, and the final histories.

    Example:
        >>> outs, hist = run(net, [X])
    """
    constants = list(constants or [])
    specs = net.graph.specs
    n_out = net.graph.n_outputs
    batch = int(np.shape((list(inputs) + constants)[0])[0])
    if inputs:
        steps = int(np.shape(inputs[0])[1])
    if history is None:
        history = initial_history(net, batch, initial_state)
    history = {k: list(v) for k, v in history.items()}
    teachers = teachers or {}
    order = range(steps - 1, -1, -1) if go_backwards else range(steps)
    last = None
    outputs = []
    for t in order:
        feeds = [x[:, t] for x in inputs] + constants + [history[s.name][0] for s in specs]
        feeds = [ops.convert_to_tensor(f) for f in feeds]
        result = net.step_model(feeds, training=training)
        result = list(result) if isinstance(result, (list, tuple)) else [result]
        ys, sources = result[:n_out], result[n_out:]
        if last is None:
            last = [ops.zeros_like(y) for y in ys]
        keep = None if mask is None else np.asarray(mask)[:, t]
        for spec, new in zip(specs, sources):
            if spec.name in teachers:
                new = ops.convert_to_tensor(teachers[spec.name][:, t])
            old = history[spec.name]
            shifted = old[1:] + [new]
            if keep is not None:
                shifted = [_where(keep, n, o) for n, o in zip(shifted, old)]
            history[spec.name] = shifted
        if keep is not None:
            ys = [_where(keep, y, p) for y, p in zip(ys, last)]
        last = ys
        outputs.append(ys)
    stacked = [ops.stack([o[i] for o in outputs], axis=1) for i in range(n_out)]
    return stacked, history


def _where(keep, new, old):
    keep = np.reshape(keep, (-1,) + (1,) * (len(new.shape) - 1))
    return ops.where(keep, new, ops.cast(old, new.dtype))


def final_states(net, history: dict) -> dict:
    """The histories as `return_state` and `get_states` give them."""
    out = {}
    for spec in net.graph.specs:
        vals = [np.asarray(v) for v in history[spec.name]]
        out[spec.name] = vals[0] if spec.delay == 1 else np.stack(vals, axis=1)
    return out
