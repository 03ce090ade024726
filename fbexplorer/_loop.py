"""A compiled time loop for each Keras backend.

`time_loop(step, sequences, carry, length)` runs `step(xs, carry) -> (ys,
new_carry)` for `length` steps, where `xs` is the t-th slice of each
time-major sequence, and returns `(stacked ys, final carry)`. On TensorFlow it
is a `tf.while_loop` over `TensorArray`s, on JAX a `lax.scan`: the step is
traced once, and no Python runs per timestep. `unroll=True` traces the step
`length` times instead (for short sequences).

Keras's own `backend.rnn` is not used: it calls the step once more outside
the loop to learn output shapes (which updates BatchNormalization statistics
and consumes dropout seeds a second time), and it cannot unroll a step with
several outputs under a mask.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from fbexplorer import _keras

__all__ = [
    "AUTO_JIT_MAX_WEIGHTS",
    "AUTO_JIT_MIN_STEPS",
    "draws_or_updates",
    "loop_jit_for",
    "loop_weights",
    "time_loop",
]


def time_loop(
    step, sequences, carry, length, out_specs, *, unroll=False, jit=False, invariants=None
):
    """Run `step` over time.

    Args:
        step: `step(xs, carry) -> (ys, new_carry)`, lists of tensors.
        sequences: list of time-major tensors `(time, batch, ...)`.
        carry: list of tensors, the loop state.
        length: number of steps (an int, or a scalar tensor on TensorFlow).
        out_specs: `(dtype, shape)` of each y, the batch axis may be None.
        unroll: trace the step once per timestep instead of looping.
        jit: on TensorFlow, compile the loop (and its gradient) with XLA, as a
            function nested in the caller's, whatever the caller's own
            `jit_compile`. Needs a length known at trace time (an int); the
            other backends ignore it (JAX compiles everything with XLA).
        invariants: with `jit`, the list (the same object) of tensors that the
            step reads from its closure, so that gradients reach them.

    Returns:
        `(ys, carry)`: each y stacked along a new leading time axis.
    """
    if unroll:
        return _unrolled(step, sequences, carry, length)
    backend = keras.backend.backend()
    if backend == "tensorflow":
        if jit and isinstance(length, int):
            return _xla_loop(step, sequences, carry, length, out_specs, invariants)
        return _tf_loop(step, sequences, carry, length, out_specs)
    if backend == "jax":
        return _jax_loop(step, sequences, carry, length)
    return _unrolled(step, sequences, carry, length)


def _unrolled(step, sequences, carry, length):
    if not isinstance(length, int):
        raise ValueError(
            "unroll=True needs a sequence length known when the model is traced. "
            f"Received a dynamic length: {length!r}. Give keras.Input a fixed "
            "time length or use unroll=False."
        )
    all_ys = None
    for t in range(length):
        ys, carry = step([s[t] for s in sequences], carry)
        if all_ys is None:
            all_ys = [[] for _ in ys]
        for acc, y in zip(all_ys, ys):
            acc.append(y)
    if all_ys is None:
        raise ValueError("the sequence has 0 timesteps; at least 1 is needed.")
    return [ops.stack(acc, axis=0) for acc in all_ys], list(carry)


def _tf_loop(step, sequences, carry, length, out_specs):
    import tensorflow as tf

    size = length
    in_tas = [
        tf.TensorArray(s.dtype, size=size, element_shape=s.shape[1:]).unstack(s) for s in sequences
    ]
    # A TensorArray in the carry (a delay line's ring buffer) passes as it is.
    carry = [c if isinstance(c, tf.TensorArray) else tf.convert_to_tensor(c) for c in carry]
    out_tas = [tf.TensorArray(dtype, size=size, element_shape=shape) for dtype, shape in out_specs]

    def body(t, out_tas, *carry):
        xs = [ta.read(t) for ta in in_tas]
        ys, new_carry = step(xs, list(carry))
        out_tas = [ta.write(t, y) for ta, y in zip(out_tas, ys)]
        new_carry = [
            n if isinstance(c, tf.TensorArray) else tf.ensure_shape(tf.cast(n, c.dtype), c.shape)
            for n, c in zip(new_carry, carry)
        ]
        return (t + 1, out_tas, *new_carry)

    result = tf.while_loop(
        lambda t, *_: t < size,
        body,
        (tf.constant(0, "int32"), out_tas, *carry),
        maximum_iterations=size,
        swap_memory=True,
    )
    ys = [ta.stack() for ta in result[1]]
    return ys, list(result[2:])


def _xla_loop(step, sequences, carry, length, out_specs, invariants):
    """`_tf_loop` compiled by XLA, as a function nested in the caller's.

    XLA fuses the step's small ops and runs the loop without TensorFlow's
    per-op, per-step dispatch. A gradient cannot take the loop's saved
    per-step values across the XLA boundary (TensorFlow keeps them in
    TensorLists), so the gradient is a second XLA function that runs the loop
    again and backpropagates through it: exact for a step that computes the
    same values when run twice (no random draws or state updates in training;
    `loop_jit_for` checks that).

    `invariants` is the list of tensors the step reads from its closure (the
    same list object): while the loop is traced its items are replaced by the
    compiled function's own inputs, so that gradients reach them. A step that
    closes over any other tensor of the caller's graph runs the plain loop.
    """
    import tensorflow as tf

    invariants = invariants if invariants is not None else []
    outer = list(invariants)
    n_seq, n_carry, n_out = len(sequences), len(carry), len(out_specs)

    def loop(flat):
        invariants[:] = flat[n_seq + n_carry :]
        try:
            ys, final = _tf_loop(
                step, list(flat[:n_seq]), list(flat[n_seq : n_seq + n_carry]), length, out_specs
            )
        finally:
            invariants[:] = outer
        return list(ys) + list(final)

    forward = tf.function(loop, jit_compile=True, autograph=False)
    flat_in = [tf.convert_to_tensor(v) for v in list(sequences) + list(carry) + outer]
    concrete = forward.get_concrete_function(flat_in)
    if _closes_over_graph_tensors(concrete):
        return _tf_loop(step, sequences, carry, length, out_specs)
    diff = [i for i, v in enumerate(flat_in) if v.dtype.is_floating]

    @tf.custom_gradient
    def run(*flat):
        # The weights the loop reads are captured by the compiled function,
        # out of custom_gradient's sight: read them here, so that it passes
        # them to `grad` as `variables`.
        for v in concrete.trainable_variables:
            v.read_value()
        outs = forward(list(flat))

        def grad(*dys, variables=None):
            variables = list(variables or [])
            dys = [tf.zeros_like(o) if d is None else d for d, o in zip(dys, outs)]

            def backward(flat, dys):
                with tf.GradientTape() as tape:
                    watched = [flat[i] for i in diff]
                    tape.watch(watched)
                    again = loop(flat)
                pairs = [(o, d) for o, d in zip(again, dys) if o.dtype.is_floating]
                return tape.gradient(
                    [o for o, _ in pairs],
                    watched + variables,
                    output_gradients=[d for _, d in pairs],
                    unconnected_gradients="zero",
                )

            grads = tf.function(backward, jit_compile=True, autograph=False)(list(flat), dys)
            per_input = [None] * len(flat)
            for i, g in zip(diff, grads[: len(diff)]):
                per_input[i] = g
            return per_input, grads[len(diff) :]

        return outs, grad

    outs = run(*flat_in)
    outs = list(outs) if isinstance(outs, (list, tuple)) else [outs]
    return outs[:n_out], outs[n_out : n_out + n_carry]


def _closes_over_graph_tensors(concrete) -> bool:
    """Whether a traced loop reads float tensors of the caller's graph that
    are not among its inputs (gradients would not reach them)."""
    import tensorflow as tf

    return any(
        t.dtype != tf.resource and t.dtype.is_floating and tf.is_symbolic_tensor(t)
        for t in concrete.graph.external_captures
    )


def _jax_loop(step, sequences, carry, length):
    import jax

    def body(carry, xs):
        ys, new_carry = step(list(xs), list(carry))
        new_carry = [n.astype(c.dtype) for n, c in zip(new_carry, carry)]
        return new_carry, ys

    final, ys = jax.lax.scan(body, list(carry), list(sequences), length=length)
    return list(ys), list(final)


# "auto" compiles the loop with XLA when the step's loop part holds at most
# this many weights: per-step work small enough that TensorFlow's dispatch of
# each op at each step dominates (benchmarks/fit_predict.py: a 3 x Dense(8)
# step, about 220 weights, trains 2.8x and infers 1.7x faster through
# fit/predict), while for LSTM-sized steps XLA's CPU matmuls and gradient
# lose (an LSTM of 128 units, 82k weights, trained 1.85x slower under
# compile(jit_compile=True)). The threshold lies between the two; it was not
# tuned on sizes in between.
AUTO_JIT_MAX_WEIGHTS = 16384
# ... and when the sequence has at least this many steps: compiling costs
# about a second, which short sequences do not win back.
AUTO_JIT_MIN_STEPS = 32


def loop_weights(model, plan=None) -> int:
    """How many weights the loop part of the step uses (all the step's
    weights without a hoisting plan, else those of the nodes left in the loop)."""
    if plan is not None:
        ops_ = [n.operation for n in plan.loop_nodes]
    else:
        ops_ = _keras.sublayers(model, recursive=False)
    seen, total = set(), 0
    for op in ops_:
        for v in getattr(op, "weights", []):
            if id(v) not in seen:
                seen.add(id(v))
                total += int(np.prod(v.shape))
    return total


_RANDOM_OR_STATEFUL = (
    "Dropout",
    "SpatialDropout1D",
    "SpatialDropout2D",
    "SpatialDropout3D",
    "GaussianNoise",
    "GaussianDropout",
    "AlphaDropout",
    "BatchNormalization",
)


def draws_or_updates(model, plan=None) -> bool:
    """Whether the loop part may draw random numbers or update variables in
    training (Dropout, noise layers, BatchNormalization, a cell with dropout,
    any other layer with a seed generator or a non-trainable weight): run
    twice, it would not compute the same values."""
    if plan is not None:
        tops = [n.operation for n in plan.loop_nodes if isinstance(n.operation, keras.Layer)]
    else:
        tops = _keras.sublayers(model, recursive=False)
    for top in tops:
        for layer in [top, *_keras.sublayers(top)]:
            if any(type(c).__name__ in _RANDOM_OR_STATEFUL for c in type(layer).__mro__):
                return True
            rates = (getattr(layer, "dropout", 0), getattr(layer, "recurrent_dropout", 0))
            if any(isinstance(r, (int, float)) and r > 0 for r in rates):
                return True
            is_cell = hasattr(layer, "state_size")
            generators = _keras.seed_generators(layer)
            if generators and not is_cell:
                return True
            seeds = {id(g.state) for g in generators}
            if any(id(v) not in seeds for v in _keras.own_non_trainable_variables(layer)):
                return True
    return False


def loop_jit_for(setting, model, plan=None, training=None, length=None) -> bool:
    """Whether to compile the time loop with XLA (`time_loop(jit=...)`).

    `setting` is the model's `loop_jit`. False: never. True: always, except
    in training a loop part that draws random numbers or updates statistics
    (`draws_or_updates`): its gradient runs the loop a second time, which
    would draw other numbers. "auto": as True, for a step of at most
    `AUTO_JIT_MAX_WEIGHTS` weights in its loop part run over a `length` of at
    least `AUTO_JIT_MIN_STEPS` steps (known when traced). Only TensorFlow
    reads the answer.
    """
    if keras.backend.backend() != "tensorflow" or not setting:
        return False
    if setting == "auto" and (
        not isinstance(length, int)
        or length < AUTO_JIT_MIN_STEPS
        or loop_weights(model, plan) > AUTO_JIT_MAX_WEIGHTS
    ):
        return False
    return not (training and draws_or_updates(model, plan))
