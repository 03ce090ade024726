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
from keras import ops


def time_loop(step, sequences, carry, length, out_specs, *, unroll=False):
    """Run `step` over time.

    Args:
        step: `step(xs, carry) -> (ys, new_carry)`, lists of tensors.
        sequences: list of time-major tensors `(time, batch, ...)`.
        carry: list of tensors, the loop state.
        length: number of steps (an int, or a scalar tensor on TensorFlow).
        out_specs: `(dtype, shape)` of each y, the batch axis may be None.
        unroll: trace the step once per timestep instead of looping.

    Returns:
        `(ys, carry)`: each y stacked along a new leading time axis.
    """
    if unroll:
        return _unrolled(step, sequences, carry, length)
    backend = keras.backend.backend()
    if backend == "tensorflow":
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


def _jax_loop(step, sequences, carry, length):
    import jax

    def body(carry, xs):
        ys, new_carry = step(list(xs), list(carry))
        new_carry = [n.astype(c.dtype) for n, c in zip(new_carry, carry)]
        return new_carry, ys

    final, ys = jax.lax.scan(body, list(carry), list(sequences), length=length)
    return list(ys), list(final)
