"""Hoisting: the parts of the step graph that need no loop run once, outside it.

Every tensor of the step model is one of three kinds:

- *const*: depends on constants only (an image's encoder): computed once,
  on `(batch, ...)`, and handed to every step;
- *seq*: depends on per-step inputs (and constants), not on a delayed value or
  a cell state (an input projection): computed once over all timesteps, on the
  inputs reshaped from `(time, batch, ...)` to `(time * batch, ...)`, and fed
  to the loop as a per-step sequence;
- *loop*: depends on a delayed value or a cell state, or comes from a layer
  that must see one step at a time (a cell, BatchNormalization, whose
  statistics are per step): computed in the loop.

One rewrite splits a `Dense` over a `Concatenate` of hoisted and loop parts
(`Dense(Concatenate([x, prev_h]))`): `x @ W_x + b` is hoisted, the loop computes
only `prev_h @ W_h`, with the same kernel variable, sliced.

The mirror, on the output side: a *post* part of loop tensors that only
outputs stacked over all steps need (read-outs), nothing the next step reads
(no delayed edge's source, no cell state, nothing a BatchNormalization or
another layer that must stay in the loop reads). The loop emits, at every
step, the loop tensors the post part reads; after it, the post part runs once
on them reshaped to `(time * batch, ...)`.

The plan replays the step model's own nodes (its layers and `keras.ops`
calls, with their weights), so nothing is copied and saving is unchanged.
"""

from __future__ import annotations

import functools

import keras
import numpy as np
from keras import ops

from fbexplorer._keras import nodes_in_depth_order, producer, replay, sublayers

__all__ = ["HoistPlan", "hoistable"]

SEQ, CONST, LOOP = "seq", "const", "loop"


def _touches_batch_axis(op, rank) -> bool:
    """Whether a `keras.ops` operation reduces, scans or reshapes over the batch axis."""
    for name in ("axis", "axes"):
        axis = getattr(op, name, None)
        axes = [axis] if isinstance(axis, int) else axis
        if isinstance(axes, (tuple, list)) and any(
            isinstance(a, int) and (a == 0 or (rank and a == -rank)) for a in axes
        ):
            return True
    newshape = getattr(op, "newshape", None)
    if isinstance(newshape, (tuple, list)) and newshape and newshape[0] not in (-1, None):
        return True
    return False


def _keeps_batch_axis(node) -> bool:
    """Whether every tensor of the node has the (unknown) batch size first."""
    tensors = list(node.input_tensors) + list(node.outputs)
    return all(len(t.shape) >= 1 and t.shape[0] is None for t in tensors)


def hoistable(node) -> bool:
    """Whether running `node` once on `(time * batch, ...)` equals running it per step.

    Not hoisted: RNN cells and layers (their states), BatchNormalization (its
    statistics are taken per step), stateful layers, nested models holding
    any of these, layers marked `_fbx_hoist = False`, and operations whose
    inputs or outputs do not keep the batch axis first, or that work along it
    (`keras.ops.mean(x, axis=0)`, `keras.ops.cumsum(x, axis=0)`).
    """
    op = node.operation
    if not _keeps_batch_axis(node):
        return False
    if not isinstance(op, keras.layers.Layer):
        rank = len(node.input_tensors[0].shape) if node.input_tensors else 0
        return not _touches_batch_axis(op, rank)
    for layer in [op, *sublayers(op)]:
        if (
            isinstance(layer, (keras.layers.BatchNormalization, keras.layers.RNN))
            or hasattr(layer, "state_size")
            or getattr(layer, "stateful", False)
            or getattr(layer, "_fbx_hoist", True) is False
            or type(layer).__name__ == "FeedbackModel"
        ):
            return False
    return True


def _split_dense(node, kind, nodes_in_model):
    """For `Dense(Concatenate([...]))` mixing hoisted and loop parts: the parts.

    Returns `[(tensor, first row, last row)]` for the Concatenate's inputs, or
    None when the rewrite does not apply.
    """
    dense = node.operation
    if type(dense) is not keras.layers.Dense or len(node.input_tensors) != 1:
        return None
    if getattr(dense, "_fbx_hoist", True) is False or getattr(dense, "lora_enabled", False):
        return None
    if dense.quantization_mode is not None:
        return None
    if dense.dtype_policy.compute_dtype != dense.dtype_policy.variable_dtype:
        return None
    if node.arguments.kwargs or len(node.input_tensors[0].shape) != 2:
        return None
    cat = producer(node.input_tensors[0])
    if id(cat) not in nodes_in_model or type(cat.operation) is not keras.layers.Concatenate:
        return None
    if cat.operation.axis not in (-1, 1) or cat.arguments.kwargs:
        return None
    parts = cat.input_tensors
    kinds = {kind[id(t)] for t in parts}
    if LOOP not in kinds or kinds == {LOOP}:
        return None
    if any(len(t.shape) != 2 or t.shape[-1] is None for t in parts):
        return None
    out, start = [], 0
    for t in parts:
        out.append((t, start, start + int(t.shape[-1])))
        start += int(t.shape[-1])
    return out


class _Split:
    """A Dense over a Concatenate, cut into its hoisted and loop halves."""

    def __init__(self, node, parts, kind):
        self.node = node
        self.dense = node.operation
        self.hoisted = [p for p in parts if kind[id(p[0])] != LOOP]
        self.looped = [p for p in parts if kind[id(p[0])] == LOOP]
        self.kind = SEQ if any(kind[id(p[0])] == SEQ for p in self.hoisted) else CONST
        # The hoisted half's value: a tensor of its own, keyed by this object.
        self.key = id(self)

    def partial(self, values):
        """`sum(part @ W[rows]) + b` over the hoisted parts."""
        kernel = self.dense.kernel
        z = None
        for t, a, b in self.hoisted:
            x = ops.cast(values[id(t)], self.dense.compute_dtype)
            term = ops.matmul(x, kernel[a:b])
            z = term if z is None else z + term
        if self.dense.use_bias:
            z = z + self.dense.bias
        return z

    def loop_kernels(self):
        """The kernel's rows for the loop parts, sliced once outside the loop."""
        kernel = self.dense.kernel
        return [kernel[a:b] for _, a, b in self.looped]

    def finish(self, partial, kernels, values):
        """The Dense's output from the hoisted half and the loop parts."""
        z = partial
        for (t, _, _), w in zip(self.looped, kernels):
            x = ops.cast(values[id(t)], self.dense.compute_dtype)
            z = z + ops.matmul(x, w)
        if self.dense.activation is not None:
            z = self.dense.activation(z)
        return z


def _classify(nodes, kind, per_step):
    """Each node's kind (`kind`, by output tensor id, filled in; the inputs'
    given), in depth order. Returns `(pre nodes, loop nodes, {id(node):
    _Split})` for the Dense layers over a Concatenate the loop splits."""
    pre, loop, splits = [], [], {}
    in_model = {id(n) for n in nodes}
    for node in nodes:
        ks = {kind[id(t)] for t in node.input_tensors}
        if LOOP in ks or (SEQ in ks and not per_step) or not hoistable(node):
            k = LOOP
            # Without per-step hoisting, a split hoists only constant parts.
            seen = kind if per_step else {i: LOOP if v == SEQ else v for i, v in kind.items()}
            parts = _split_dense(node, seen, in_model)
            if parts is not None:
                splits[id(node)] = _Split(node, parts, seen)
        else:
            k = SEQ if SEQ in ks else CONST
        for t in node.outputs:
            kind[id(t)] = k
        (loop if k == LOOP else pre).append(node)
    return pre, loop, splits


class _Walk:
    """Walks back through the loop nodes, from tensors to the nodes they need."""

    def __init__(self, loop, splits):
        self.producer = {id(t): n for n in loop for t in n.outputs}
        self.splits = splits

    def back(self, tensors, through, whole=False) -> set:
        """The ids of the loop nodes that `tensors` need, through nodes
        `through` accepts (a split Dense needs only its loop parts, unless
        `whole`)."""
        producer = self.producer
        found, stack = set(), [producer[id(t)] for t in tensors if id(t) in producer]
        while stack:
            node = stack.pop()
            if id(node) in found or not through(node):
                continue
            found.add(id(node))
            split = None if whole else self.splits.get(id(node))
            deps = [p[0] for p in split.looped] if split else node.input_tensors
            stack += [producer[id(t)] for t in deps if id(t) in producer]
        return found


def _finish(split, kernels, values):
    """A split Dense's output in the loop (`replay`'s stand-in for its call)."""
    return split.finish(values[split.key], kernels, values)


class HoistPlan:
    """How one step model splits into a hoisted part and a loop part.

    Args:
        model: the step model (inputs: per-step inputs, constants,
            placeholders; any outputs).
        n_inputs: the number of per-step inputs.
        n_constants: the number of constants.
        per_step: hoist the per-step part too (else only the constants').
        post: the indices of the outputs that may be computed after the loop
            (those stacked over all steps; never a delayed edge's source).

    Attributes:
        hoisted: the layer and op names computed before the loop (empty when
            nothing can be; with no post part either, the engine then runs
            the step model as is).
        post_nodes: the nodes computed after the loop, in depth order.
        post_outputs: the indices of the outputs they compute.
        emitted: the loop tensors the post part reads, emitted by every step.
        post_seq, post_const: the pre part's per-step values and the
            constants the post part reads.
    """

    def __init__(self, model, n_inputs: int, n_constants: int, per_step: bool = True, post=()):
        self.model = model
        inputs = model.inputs
        self.seq_inputs = inputs[:n_inputs]
        self.const_inputs = inputs[n_inputs : n_inputs + n_constants]
        self.placeholders = inputs[n_inputs + n_constants :]
        nodes = [n for n in nodes_in_depth_order(model) if n.operation and not n.is_input]
        kind = {}
        for i, t in enumerate(inputs):
            kind[id(t)] = SEQ if i < n_inputs else CONST if i < n_inputs + n_constants else LOOP
        pre, loop, splits = _classify(nodes, kind, per_step)
        self.kind, self.pre_nodes = kind, pre
        walk = _Walk(loop, splits)
        post_ids = self._find_post(nodes, loop, walk, set(post))
        needed = walk.back(
            [t for i, t in enumerate(model.outputs) if i not in set(self.post_outputs)]
            + self.emitted,
            lambda n: id(n) not in post_ids,
        )
        self.loop_nodes = [n for n in loop if id(n) in needed]
        self.splits = [splits[id(n)] for n in self.loop_nodes if id(n) in splits]
        self.split_of = {id(s.node): s for s in self.splits}
        self.seq_splits = [s for s in self.splits if s.kind == SEQ]
        self.const_splits = [s for s in self.splits if s.kind == CONST]
        self._find_bounds()
        self.hoisted = [n.operation.name for n in pre] + [s.dense.name for s in self.splits]

    def _find_post(self, nodes, loop, walk, post) -> set:
        """The post part: loop nodes that only outputs computed after the loop
        need (read-outs); nothing the next step reads depends on them. Sets
        `post_nodes`, `post_outputs` and what the post part reads (`emitted`,
        `post_seq`, `post_const`); returns the post nodes' ids."""
        model, kind = self.model, self.kind
        stay_outputs = [t for i, t in enumerate(model.outputs) if i not in post]
        post_outputs = [t for i, t in enumerate(model.outputs) if i in post]
        required = walk.back(stay_outputs, lambda n: True)
        candidates = walk.back(post_outputs, lambda n: id(n) not in required, whole=True)
        # A node that must see one step at a time keeps itself and what it
        # reads in the loop.
        pinned = [t for n in loop if id(n) in candidates and not hoistable(n) for t in n.outputs]
        required |= walk.back(pinned, lambda n: True)
        post_ids = candidates - required
        self.post_nodes = [n for n in nodes if id(n) in post_ids]
        # Outputs the post part computes (the others come out of the loop).
        made_post = {id(t) for n in self.post_nodes for t in n.outputs}
        self.post_outputs = [i for i, t in enumerate(model.outputs) if id(t) in made_post]
        # What the post part reads: the loop's tensors, emitted by every step;
        # the pre part's per-step values, on `(time * batch, ...)`; constants.
        reads = {}
        for node in self.post_nodes:
            reads.update({id(t): t for t in node.input_tensors if id(t) not in made_post})
        self.emitted = [t for t in reads.values() if kind[id(t)] == LOOP]
        self.post_seq = [t for t in reads.values() if kind[id(t)] == SEQ]
        self.post_const = [t for t in reads.values() if kind[id(t)] == CONST]
        return post_ids

    def _find_bounds(self):
        """The boundaries: hoisted values that the loop reads or that are
        outputs (`seq_bounds`, `const_bounds`), and the constants that
        hoisted per-step work reads, tiled over time (`tiled`)."""
        kind, post_set = self.kind, set(self.post_outputs)
        read = []
        for node in self.loop_nodes:
            split = self.split_of.get(id(node))
            read += [p[0] for p in split.looped] if split else node.input_tensors
        read += [t for i, t in enumerate(self.model.outputs) if i not in post_set]
        seen, self.seq_bounds, self.const_bounds = set(), [], []
        for t in read:
            if id(t) in seen or kind[id(t)] == LOOP:
                continue
            seen.add(id(t))
            (self.seq_bounds if kind[id(t)] == SEQ else self.const_bounds).append(t)
        tiled = set()
        for node in self.pre_nodes:
            if kind[id(node.outputs[0])] == SEQ:
                tiled |= {id(t) for t in node.input_tensors if kind[id(t)] == CONST}
        for s in self.seq_splits:
            tiled |= {id(p[0]) for p in s.hoisted if kind[id(p[0])] == CONST}
        self.tiled = tiled

    def widens(self) -> bool:
        """Whether the loop reads more numbers per step from the hoisted
        per-step part than the raw inputs hold (an input projection to 4 * units
        gates does): batching such a part saves no work, and the wider loop
        input costs more than it saves (measured slower for an LSTM:
        docs/performance.md, Hoisting)."""

        def width(t):
            return int(np.prod([d or 1 for d in t.shape[1:]]))

        read = sum(width(t) for t in self.seq_bounds)
        read += sum(int(s.dense.units) for s in self.seq_splits)
        return read > sum(width(t) for t in self.seq_inputs)

    def post_pays(self) -> bool:
        """Whether the post part costs no more per step than it saves, for a
        loop under XLA: the loop emits, per step, no more numbers for it
        than its outputs hold (a read-out that widens, a decoder). A
        narrowing read-out (128 units to 10) would make the loop stack its
        wider input instead: more memory, and an LSTM-sized one measured
        slower to train. (Without XLA a widening one measured slower too:
        the engine asks only for a loop under XLA; see docs/engine.md.)"""

        def width(t):
            return int(np.prod([d or 1 for d in t.shape[1:]]))

        emitted = sum(width(t) for t in self.emitted)
        return emitted <= sum(width(self.model.outputs[i]) for i in self.post_outputs)

    # ----------------------------------------------------------- outside
    def precompute(self, seqs, consts, training):
        """The hoisted part, run once.

        Args:
            seqs: the per-step inputs, time-major `(time, batch, ...)`.
            consts: the constants `(batch, ...)`.
            training: the training flag.

        Returns:
            `(sequences, constants, post)`: the per-step values the loop reads,
            time-major, the constant values it reads (then the kernel rows of
            each split Dense's loop parts), and the values the post part reads
            from outside the loop (`post_seq` time-major, then `post_const`).
        """
        kind = self.kind
        const_vals = {id(t): v for t, v in zip(self.const_inputs, consts)}
        seq_vals = {}
        length = batch = None
        for t, v in zip(self.seq_inputs, seqs):
            if length is None:
                shape = ops.shape(v)
                length, batch = shape[0], shape[1]
            seq_vals[id(t)] = ops.reshape(v, (-1,) + tuple(ops.shape(v)[2:]))

        def tile(key):
            if key not in seq_vals:
                v = const_vals[key]
                reps = (length,) + (1,) * (len(v.shape) - 1)
                seq_vals[key] = ops.tile(v, reps)
            return seq_vals[key]

        # The constants' part first (it reads constants only), then the
        # per-step part, which reads constants tiled over time.
        replay([n for n in self.pre_nodes if kind[id(n.outputs[0])] == CONST], const_vals, training)
        for s in self.const_splits:
            const_vals[s.key] = s.partial(const_vals)
        for key in self.tiled:
            tile(key)
        replay([n for n in self.pre_nodes if kind[id(n.outputs[0])] != CONST], seq_vals, training)
        for s in self.seq_splits:
            seq_vals[s.key] = s.partial(seq_vals)

        def unflatten(v):
            return ops.reshape(v, (length, batch) + tuple(ops.shape(v)[1:]))

        seq_out = [unflatten(seq_vals[id(t)]) for t in self.seq_bounds]
        seq_out += [unflatten(seq_vals[s.key]) for s in self.seq_splits]
        const_out = [const_vals[id(t)] for t in self.const_bounds]
        const_out += [const_vals[s.key] for s in self.const_splits]
        for s in self.splits:
            const_out += s.loop_kernels()
        post_in = [unflatten(seq_vals[id(t)]) for t in self.post_seq]
        post_in += [const_vals[id(t)] for t in self.post_const]
        return seq_out, const_out, post_in

    def postcompute(self, emitted, post_in, training):
        """The post part, run once after the loop.

        Args:
            emitted: the values of `emitted` at every step, time-major
                `(time, batch, ...)`, as the loop stacked them.
            post_in: the third value `precompute` returned (its per-step
                values in the loop's order of steps).
            training: the training flag.

        Returns:
            the outputs `post_outputs` names, time-major.
        """
        shape = ops.shape(emitted[0])
        length, batch = shape[0], shape[1]
        values = {}
        for t, v in zip(self.emitted, emitted):
            values[id(t)] = ops.reshape(v, (-1,) + tuple(ops.shape(v)[2:]))
        n = len(self.post_seq)
        for t, v in zip(self.post_seq, post_in[:n]):
            values[id(t)] = ops.reshape(v, (-1,) + tuple(ops.shape(v)[2:]))
        for t, v in zip(self.post_const, post_in[n:]):
            values[id(t)] = ops.tile(v, (length,) + (1,) * (len(v.shape) - 1))
        replay(self.post_nodes, values, training)
        outputs = [values[id(self.model.outputs[i])] for i in self.post_outputs]
        return [ops.reshape(v, (length, batch) + tuple(ops.shape(v)[1:])) for v in outputs]

    # -------------------------------------------------------------- inside
    def step(self, seq_vals, const_vals, placeholders, training):
        """One step of the loop part: the step model's outputs, as a list
        (None for those of the post part), then the values of `emitted`."""
        values = {}
        n = len(self.seq_bounds)
        for t, v in zip(self.seq_bounds, seq_vals[:n]):
            values[id(t)] = v
        for s, v in zip(self.seq_splits, seq_vals[n:]):
            values[s.key] = v
        n = len(self.const_bounds)
        for t, v in zip(self.const_bounds, const_vals[:n]):
            values[id(t)] = v
        n_splits = len(self.const_splits)
        for s, v in zip(self.const_splits, const_vals[n : n + n_splits]):
            values[s.key] = v
        kernels, pos = {}, n + n_splits
        for s in self.splits:
            kernels[id(s)] = const_vals[pos : pos + len(s.looped)]
            pos += len(s.looped)
        for t, v in zip(self.placeholders, placeholders):
            values[id(t)] = v
        replace = {id(s.node): functools.partial(_finish, s, kernels[id(s)]) for s in self.splits}
        replay(self.loop_nodes, values, training, replace=replace)
        post = set(self.post_outputs)
        outs = [None if i in post else values[id(t)] for i, t in enumerate(self.model.outputs)]
        return outs + [values[id(t)] for t in self.emitted]
