"""The delayed edges inside the loop: each a ring buffer, at constant cost per step.

Outside the loop an edge of delay k is its history `(k, batch, *shape)`,
oldest first (`_carried_state`). Inside, it is one ring buffer and a write
position: at step t the placeholder reads the slot written k steps ago and
the step's new source value overwrites it. Reading and writing one slot costs
the same for any k, and the loop carries one buffer per edge, not k tensors,
so neither tracing nor an inference step grows with the delay; the buffer
takes k x the state's size. A delay of 1 is a plain tensor.

Edges of long delays (at least a quarter of the run) never get here:
`_run` cuts the run into segments no longer than their delay, and such an edge
reads, within a segment, only values written before it, as a per-step
sequence. Under a mask they do, and an edge longer than the run (k > T)
gets a ring of T slots only, holding the T oldest entries of its history:
a masked sample's position moves at its unmasked steps, so no position
reaches T, the ring never wraps, and the reads are those of the k-slot
ring (`_history.after_masked` makes the history from `buffers`). That keeps their gradient out of the loop: the gradient of a
buffer carried through `tf.while_loop` grows with k at every step (TensorList
bookkeeping without XLA, dense buffer gradients under it).

Two buffer kinds, chosen per run:

- on TensorFlow's compiled loop without a mask, a `tf.TensorArray` of k
  elements and one step counter: a `TensorArray` write replaces one element
  and copies nothing (a tensor updated in place inside `tf.while_loop` is
  copied whole at every step);
- otherwise (JAX, where `lax.scan` updates its carry in place; `unroll`; a
  mask), a tensor `(k * batch, *shape)` with one write position per sample,
  so that a masked sample holds its history while the others move on. (On
  TensorFlow without XLA a masked run therefore copies the buffer once per
  step: cheap for short delays.)

Between runs the buffers are turned back into histories, oldest first, so a
stateful model, `return_state`, `get_states` and `fbx.trace` see the public
shapes whatever the buffer.
"""

from __future__ import annotations

import keras
from keras import ops

__all__ = ["DelayLines", "expand_to", "use_tensor_arrays"]


class DelayLines:
    """The loop carry of every delayed edge.

    Args:
        delays: each edge's delay.
        histories: each edge's history `(delay, batch, *shape)`, oldest first.
        batch: the batch size (an int or a scalar tensor).
        tensor_arrays: use `tf.TensorArray` buffers (TensorFlow's loop, no mask).
    """

    def __init__(self, delays, histories, batch, *, tensor_arrays: bool):
        self.delays = list(delays)
        self.histories = list(histories)
        self.tensor_arrays = tensor_arrays
        self.has_ring = any(k > 1 for k in self.delays)
        self.rows = ops.arange(batch, dtype="int32") if self.has_ring else None
        self.batch = batch

    @property
    def n_carry(self) -> int:
        return len(self.delays) + int(self.has_ring)

    def initial_carry(self) -> list:
        """One carry entry per edge, then the write position(s) if any ring."""
        carry = []
        for k, h in zip(self.delays, self.histories):
            h = ops.convert_to_tensor(h)
            if k == 1:
                carry.append(h[0])
            elif self.tensor_arrays:
                import tensorflow as tf

                ta = tf.TensorArray(
                    h.dtype, size=k, element_shape=h.shape[1:], clear_after_read=False
                )
                carry.append(ta.unstack(h))
            else:
                carry.append(ops.reshape(h, (-1,) + tuple(h.shape[2:])))
        if self.has_ring:
            shape = () if self.tensor_arrays else (self.batch,)
            carry.append(ops.zeros(shape, "int32"))
        return carry

    def _index(self, k, position):
        """Rows of the flat buffer that hold each sample's oldest value."""
        return (position % k) * ops.cast(self.batch, "int32") + self.rows

    def read(self, carry) -> list:
        """The value each placeholder receives at this step."""
        position = carry[-1] if self.has_ring else None
        out = []
        for k, buf in zip(self.delays, carry):
            if k == 1:
                out.append(buf)
            elif self.tensor_arrays:
                out.append(buf.read(position % k))
            else:
                out.append(ops.take(buf, self._index(k, position), axis=0))
        return out

    def write(self, carry, read, new_values, mask=None) -> list:
        """The carry after one step: each edge's new source value replaces the
        value just read; under `mask` (batch,), masked samples hold theirs."""
        position = carry[-1] if self.has_ring else None
        out = []
        for k, buf, old, new in zip(self.delays, carry, read, new_values):
            if mask is not None:
                new = ops.where(expand_to(mask, new), new, old)
            if k == 1:
                out.append(new)
            elif self.tensor_arrays:
                out.append(buf.write(position % k, new))
            else:
                index = self._index(k, position)[:, None]
                out.append(ops.scatter_update(buf, index, ops.cast(new, buf.dtype)))
        if self.has_ring:
            step = 1 if mask is None else ops.cast(mask, "int32")
            out.append(position + step)
        return out

    def buffers(self, carry):
        """(each edge's buffer `(slots, batch, *shape)` as it lies, slot j the
        value written at position j; the write position(s))."""
        position = carry[-1] if self.has_ring else None
        out = []
        for k, buf in zip(self.delays, carry):
            if k == 1:
                out.append(buf[None])
            elif self.tensor_arrays:
                out.append(buf.stack())
            else:
                out.append(ops.reshape(buf, (k, -1) + tuple(buf.shape[1:])))
        return out, position

    def to_histories(self, carry) -> list:
        """Each edge's history `(delay, batch, *shape)`, oldest first."""
        position = carry[-1] if self.has_ring else None
        out = []
        for k, buf in zip(self.delays, carry):
            if k == 1:
                out.append(buf[None])
                continue
            if self.tensor_arrays:
                order = (ops.arange(k, dtype="int32") + position) % k
                out.append(ops.take(buf.stack(), order, axis=0))
                continue
            order = (ops.arange(k, dtype="int32")[:, None] + position[None, :]) % k
            index = order * ops.cast(self.batch, "int32") + self.rows[None, :]
            flat = ops.take(buf, ops.reshape(index, (-1,)), axis=0)
            out.append(ops.reshape(flat, (k, -1) + tuple(buf.shape[1:])))
        return out


def expand_to(m, ref):
    """A (batch,) boolean mask broadcastable against `ref`."""
    return ops.reshape(m, (-1,) + (1,) * (len(ref.shape) - 1))


def use_tensor_arrays(*, unroll: bool, mask) -> bool:
    return keras.backend.backend() == "tensorflow" and not unroll and mask is None
