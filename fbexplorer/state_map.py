"""A FeedbackModel's step as a map of its state, `F(s)`, and the autodiff it needs.

The state of a feedback network is the loop's whole carry, named as
`initial_state`, `get_states` and `return_state` name it: every delayed edge
by its name, a delay-k edge as its last k values (oldest first), and every
cell's states (`lstm/h`, `lstm/c`, a nested model's `inner/loop`). One step
of the network, with its inputs held, is a map `F` of that state:

    F(s): feed each edge's oldest value to `net.step_model` (with the inputs
          and constants), drop it from the history, append the new source.

This module builds `F` from the documented pieces only (`net.step_model`,
`net.graph.specs`), not from how the engine stores its loop state:
`StateLayout` (where each state lies in one flat vector per point),
`state_map(net, layout)` (`F` on a batch of flat states), `held_inputs` (one
timestep's inputs, checked), and the backend's `compile_fn`, `grad_fn` and
`jacobian_fn`. `fbexplorer.fixed_point_search` finds the fixed points of `F`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import keras
import numpy as np
from keras import ops

__all__ = [
    "StateLayout",
    "check_has_state",
    "compile_fn",
    "grad_fn",
    "held_inputs",
    "input_jacobian_fn",
    "jacobian_fn",
    "output_map",
    "state_layout",
    "state_map",
]


# ------------------------------------------------------------ backend glue
def _backend() -> str:
    return keras.backend.backend()


def compile_fn(fn):
    if _backend() == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, autograph=False)
    if _backend() == "jax":
        import jax

        return jax.jit(fn)
    return fn


def grad_fn(fn):
    """`s -> d fn(s) / ds` for a scalar function of one tensor."""
    if _backend() == "jax":
        import jax

        return jax.grad(fn)
    if _backend() == "tensorflow":
        import tensorflow as tf

        def grad(s):
            with tf.GradientTape() as tape:
                tape.watch(s)
                y = fn(s)
            return tape.gradient(y, s)

        return grad
    raise ValueError(
        f"fbexplorer.state_map needs the TensorFlow or JAX backend. Received: {_backend()}."
    )


def jacobian_fn(fn):
    """`s -> (fn(s), dfn/ds)` for a per-row map `fn: (P, D) -> (P, D)`; the
    Jacobian is `(P, D, D)`."""
    if _backend() == "jax":
        import jax

        def jac(s):
            def one(x):
                return fn(x[None])[0]

            return fn(s), jax.vmap(jax.jacfwd(one))(s)

        return jac
    import tensorflow as tf

    def jac(s):
        with tf.GradientTape() as tape:
            tape.watch(s)
            y = fn(s)
        return y, tape.batch_jacobian(y, s)

    return jac


def input_jacobian_fn(fn):
    """`u -> d fn(u) / du` for a map of one unbatched tensor `u` to `(P, D)`:
    `(P, D, *u.shape)`."""
    backend = _backend()
    if backend == "jax":
        import jax

        return jax.jacfwd(fn)
    if backend == "tensorflow":
        import tensorflow as tf

        def jac(u):
            with tf.GradientTape() as tape:
                tape.watch(u)
                y = fn(u)
            return tape.jacobian(y, u)

        return jac
    raise ValueError(
        f"fbexplorer.state_map needs the TensorFlow or JAX backend. Received: {backend}."
    )


# ---------------------------------------------------------- the state map
@dataclass
class StateLayout:
    """Where each state lies in the flat state vector (specs order, C order)."""

    names: list
    shapes: list  # per-sample history shapes: (k, *shape), or shape for delay 1
    delays: list
    dtypes: list
    offsets: list = field(default_factory=list)
    sizes: list = field(default_factory=list)

    def __post_init__(self):
        start = 0
        for shape in self.shapes:
            n = int(np.prod(shape, dtype=np.int64))
            self.offsets.append(start)
            self.sizes.append(n)
            start += n
        self.size = start

    def split(self, flat):
        """`(P, D)` -> one `(P, k, *shape)` tensor per state."""
        out = []
        for o, n, shape, k in zip(self.offsets, self.sizes, self.shapes, self.delays):
            full = (k,) + tuple(shape) if k == 1 else tuple(shape)
            out.append(ops.reshape(flat[:, o : o + n], (-1,) + full))
        return out

    def join(self, histories):
        return ops.concatenate([ops.reshape(h, (ops.shape(h)[0], -1)) for h in histories], axis=1)

    def to_dict(self, flat: np.ndarray) -> dict:
        return {
            name: flat[:, o : o + n].reshape((-1,) + tuple(shape))
            for name, o, n, shape in zip(self.names, self.offsets, self.sizes, self.shapes)
        }

    def from_dict(self, states: Mapping, points: int) -> np.ndarray:
        return np.concatenate(
            [np.asarray(states[n], "float32").reshape(points, -1) for n in self.names], axis=1
        )


def state_layout(net) -> StateLayout:
    specs = net.graph.specs
    return StateLayout(
        names=[s.name for s in specs],
        shapes=[tuple(s.shape) if s.delay == 1 else (s.delay,) + tuple(s.shape) for s in specs],
        delays=[s.delay for s in specs],
        dtypes=[s.dtype for s in specs],
    )


def state_map(net, layout: StateLayout, *, batched: bool = False):
    """`F(flat, held)` on flat states `(P, D)`, the inputs and constants `held`
    (in model order): unbatched, held alike for every point; with `batched`,
    `(P, ...)`, one value per point (one step of a driven trajectory each)."""
    sm = net.step_model
    n_out = net.graph.n_outputs

    def step(flat, held):
        points = ops.shape(flat)[0]
        hists = layout.split(flat)
        if batched:
            feeds = list(held)
        else:
            feeds = [ops.broadcast_to(v[None], (points,) + tuple(v.shape)) for v in held]
        feeds += [ops.cast(h[:, 0], d) for h, d in zip(hists, layout.dtypes)]
        outs = sm(feeds, training=False)
        outs = list(outs) if isinstance(outs, (list, tuple)) else [outs]
        sources = outs[n_out:]
        new = [
            ops.concatenate([h[:, 1:], ops.cast(src, flat.dtype)[:, None]], axis=1)
            for h, src in zip(hists, sources)
        ]
        return layout.join(new)

    return step


def output_map(net, layout: StateLayout):
    """`G(flat, held)`: the model's outputs at the step that starts from the flat
    states `(P, D)`, with the inputs and constants `held`: a list of `(P, *shape)`."""
    sm = net.step_model
    n_out = net.graph.n_outputs

    def outputs(flat, held):
        points = ops.shape(flat)[0]
        hists = layout.split(flat)
        feeds = [ops.broadcast_to(v[None], (points,) + tuple(v.shape)) for v in held]
        feeds += [ops.cast(h[:, 0], d) for h, d in zip(hists, layout.dtypes)]
        outs = sm(feeds, training=False)
        outs = list(outs) if isinstance(outs, (list, tuple)) else [outs]
        return outs[:n_out]

    return outputs


# ------------------------------------------------------------ the inputs
def held_inputs(net, inputs, what: str) -> list:
    """One timestep's value per per-step input and constant, checked, in model order."""
    g = net.graph
    names = g.input_names + g.constant_names
    if not isinstance(inputs, Mapping):
        if len(names) != 1:
            raise ValueError(
                f"fbx.{what}: model '{net.name}' has the inputs {names}; give one value for "
                f"each, as a dict by name. Received: {type(inputs).__name__}."
            )
        inputs = {names[0]: inputs}
    unknown = [k for k in inputs if k not in names]
    if unknown:
        raise ValueError(
            f"fbx.{what}: model '{net.name}' has no input '{unknown[0]}'. Expected one "
            f"timestep's value for each of the per-step inputs {g.input_names} and the "
            f"constants {g.constant_names}."
        )
    missing = [n for n in names if n not in inputs]
    if missing:
        raise ValueError(
            f"fbx.{what}: input '{missing[0]}' is missing. Expected one timestep's value "
            f"for each of {names}."
        )
    held = []
    for i, name in enumerate(names):
        ref = net.step_model.inputs[i]
        want = tuple(ref.shape[1:])
        value = np.asarray(inputs[name])
        if value.shape != want:
            raise ValueError(
                f"fbx.{what}: input '{name}' is held at one value of shape {want}, without "
                f"batch or time axes. Received shape {value.shape}."
                + (" Take one step and sample, as in X[0, 0]." if value.ndim > len(want) else "")
            )
        with np.errstate(over="ignore"):  # a value beyond the dtype becomes inf, refused below
            value = value.astype(ref.dtype)
        if np.issubdtype(value.dtype, np.inexact):
            bad = ~np.isfinite(value)
            if bad.any():
                first = tuple(int(i) for i in np.argwhere(bad)[0])
                raise ValueError(
                    f"fbx.{what}: input '{name}' holds NaN or inf ({int(bad.sum())} of "
                    f"{bad.size} values as {value.dtype}, the first at index {first}); the "
                    f"step has no fixed points with it. Hold finite values."
                )
        held.append(ops.convert_to_tensor(value))
    return held


def check_has_state(net, what: str):
    if not net.graph.specs:
        raise ValueError(
            f"fbx.{what}: model '{net.name}' has no feedback, so it has no state: each step "
            f"depends on its inputs only. Expected a FeedbackModel with a Feedback, a "
            f"delayed edge or a cell."
        )
