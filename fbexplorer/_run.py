"""One run of a FeedbackModel's step over a sequence, in one compiled loop.

`run(net, seqs, consts, teachers, mask, histories, length, training=...)`
builds the loop's per-step sequences (the inputs, or their hoisted values;
the teacher-forcing truths and coin flips; the mask), its carry (the delayed
values, the outputs of the previous step where needed, and on JAX the step's
non-trainable variables), and the step function, then hands them to
`_loop.time_loop`; after the loop, a hoisting plan's post part (read-outs)
runs on the values the loop emitted. It takes and returns the delayed edges' histories
(`_carried_state`: `(delay, batch, *shape)` each, oldest first, a tensor or a
compact `_history.History`), and makes of each only the entries the run
reads and keeps: a delay longer than the run costs what the run costs.
"""

from __future__ import annotations

import contextlib
import dataclasses

import keras
from keras import ops

from fbexplorer import _keras
from fbexplorer._call_inputs import batch_of
from fbexplorer._carried_state import executing_eagerly
from fbexplorer._delay_lines import DelayLines, expand_to, use_tensor_arrays
from fbexplorer._history import (
    History,
    after_masked,
    check_budget,
    history_batch,
    history_dtype,
    kept,
    window,
)
from fbexplorer._loop import loop_jit_for, time_loop
from fbexplorer.graph import cell_state_shapes

__all__ = ["MAX_SEGMENTS", "compiled", "hoist_plan", "run", "runner", "segment_bounds"]


def dropout_cells(model):
    """The Keras cells in `model` with dropout of their own, with the shapes
    of their dropout masks.

    Returns `(cell, input shape, first state shape)` for each, shapes without
    the batch axis: for a cell called in the step graph, read from its call;
    for a cell inside `StackedRNNCells`, the previous cell's output; inside
    another wrapper (a layer holding `.cell`), the wrapper's input.
    """
    found = []

    def has_dropout(layer):
        rates = (getattr(layer, "dropout", 0), getattr(layer, "recurrent_dropout", 0))
        return hasattr(layer, "get_dropout_mask") and any(
            isinstance(r, (int, float)) and r > 0 for r in rates
        )

    def visit(layer, in_shape):
        if has_dropout(layer):
            state = cell_state_shapes(layer)[0][0]
            found.append((layer, in_shape, tuple(state)))
        if isinstance(getattr(layer, "cells", None), (list, tuple)):  # StackedRNNCells
            for inner in layer.cells:
                visit(inner, in_shape)
                size = getattr(inner, "output_size", None)
                size = size if size is not None else cell_state_shapes(inner)[0][0]
                in_shape = (size,) if isinstance(size, int) else tuple(size)
        elif isinstance(getattr(layer, "cell", None), keras.layers.Layer):
            visit(layer.cell, in_shape)

    for layer in _keras.sublayers(model):
        call = _keras.first_call(layer)
        if call is None or not hasattr(layer, "state_size"):
            continue
        if not (has_dropout(layer) or hasattr(layer, "cells") or hasattr(layer, "cell")):
            continue
        args = call.arguments.args
        inputs = keras.tree.flatten(args[0])[0]
        visit(layer, tuple(inputs.shape[1:]))
    return found


def compile_eager_calls(tensor) -> bool:
    """Whether a direct call should run the loop as a compiled function.

    On TensorFlow an eager `tf.while_loop` runs its body in Python once per
    step; a direct `net(x)` compiles the loop instead, as `predict` does.
    """
    return keras.backend.backend() == "tensorflow" and executing_eagerly(tensor)


def compiled(net):
    """`run` for this model as a cached `tf.function` (TensorFlow only).

    Without autograph: the loop is a `tf.while_loop` already and branches on
    Python values only, as `fit` and `predict` run it (Keras is not
    converted); converting this code took seconds of a first call.
    """
    if net._tf_run is None:
        import tensorflow as tf

        net._tf_run = tf.function(net._run, reduce_retracing=True, autograph=False)
    return net._tf_run


def runner(net, tensor):
    """`run` for a call on `tensor`: compiled for a direct eager call on TF."""
    if compile_eager_calls(tensor):
        return compiled(net)
    return net._run


def post_candidates(net, model, keep_all):
    """The indices of `model`'s outputs that may be computed after the loop:
    the stacked outputs (with `keep_all`) and a probe's extra outputs, never
    the sources of the delayed edges and cell states."""
    n_out, n_main = net.graph.n_outputs, len(net.step_model.outputs)
    return (list(range(n_out)) if keep_all else []) + list(range(n_main, len(model.outputs)))


def hoist_plan(net, model=None, keep_all=None, jit=False):
    """The hoisting plan of the step model (or of a probe on its inputs),
    None when hoisting is off or nothing can be hoisted. `keep_all`: whether
    the run stacks the outputs of every step (default: `return_sequences`),
    which the post part needs; `jit`: whether the loop runs under XLA, which
    `hoist="auto"` asks before it keeps a post part."""
    if not net.hoist:
        return None
    model = net.step_model if model is None else model
    keep_all = net.return_sequences if keep_all is None else bool(keep_all)
    auto_post = net.hoist == "auto" and bool(jit)
    plans = net._plans.value
    key = (id(model), keep_all, auto_post)
    if key not in plans:
        from fbexplorer._hoist import HoistPlan

        g = net.graph
        n = (len(g.input_names), len(g.constant_names))
        if net._per_step is None:  # decided on the step model, kept for probes
            net._per_step = net.hoist is True or not HoistPlan(net.step_model, *n).widens()
        post = post_candidates(net, model, keep_all)
        plan = HoistPlan(model, *n, per_step=net._per_step, post=post)
        if net.hoist == "auto" and plan.post_nodes and not (auto_post and plan.post_pays()):
            plan = HoistPlan(model, *n, per_step=net._per_step)
        plans[key] = (model, plan)
    plan = plans[key][1]
    return plan if plan.hoisted or plan.post_nodes else None


@dataclasses.dataclass
class Layout:
    """Where each value sits in the loop's per-step sequences, its carry and
    what each step stacks.

    Sequences, time-major, in order: `n_seq` inputs (or their hoisted
    values), a truth per edge in `teachers`, the coin flips (`coins`), the
    mask (`masked`), each step's index if unmasked, else -1 (`hold`), then
    one read per spanning edge (`n_direct`).

    Carry: `n_slots` delay-line entries, `n_last` previous outputs (with
    `hold`, the last unmasked step's index last), then on JAX the step's
    non-trainable variables.

    Stacked per step: the outputs `loop_ys` (with `keep_all`), a probe's
    extra outputs, the values the post part reads, the held index (`hold`),
    then each spanning edge's new source value.
    """

    n_seq: int
    teachers: list
    coins: bool
    masked: bool
    hold: bool
    n_direct: int = 0
    n_slots: int = 0
    n_last: int = 0

    def split_sequences(self, xs):
        """`(inputs, truths by name, coin, mask, step index, spanning reads)`
        of one step's sequence values (None for those the run has not)."""
        xs = list(xs)
        pos = self.n_seq
        truths = dict(zip(self.teachers, xs[pos : pos + len(self.teachers)]))
        pos += len(self.teachers)
        coin = xs[pos] if self.coins else None
        pos += int(self.coins)
        m = xs[pos] if self.masked else None
        pos += int(self.masked)
        t_pos = xs[pos] if self.hold else None
        pos += int(self.hold)
        return xs[: self.n_seq], truths, coin, m, t_pos, xs[pos : pos + self.n_direct]

    def split_carry(self, carry):
        """`(delay-line entries, previous outputs, non-trainable variables)`."""
        a, b = self.n_slots, self.n_slots + self.n_last
        return list(carry[:a]), list(carry[a:b]), list(carry[b:])


@dataclasses.dataclass
class Edges:
    """How the run holds its delayed edges: its segments (`segment_bounds`), the
    edges that span a segment (`direct`, read as sequences) and the others
    (`ring`, with `slots` each, in `lines`)."""

    bounds: list
    direct: list
    ring: list
    slots: list
    lines: DelayLines
    direct_specs: list


@dataclasses.dataclass
class Outputs:
    """The step's outputs: `n_out` the model's, then its sources up to
    `n_main`, then a probe's extra ones up to `n_all`; `post` those computed
    after the loop; `loop_ys` the model's outputs the loop computes."""

    n_out: int
    n_main: int
    n_all: int
    post: set
    loop_ys: list
    keep_all: bool
    carry_last: bool


def run(
    net,
    seqs,
    consts,
    teachers,
    mask,
    histories,
    length,
    *,
    training,
    feed=None,
    feed_init=None,
    sequences=None,
    probe=None,
):
    """The time loop. Returns (stacked outputs, last outputs, final histories).

    `feed` maps a per-step input's index to the output index whose previous
    value it takes (closed-loop generation); `feed_init` are the outputs
    "before" the first step.

    `probe` (for tracing) is a functional model on the step model's inputs
    and layers whose outputs are the step model's outputs followed by
    extra tensors; it runs in place of the step model, and every step's
    extra values are stacked after the stacked outputs (which are then
    returned only when `sequences` or `return_sequences` asks for them).
    """
    model = net.step_model if probe is None else probe
    feed = feed or {}
    if length is None:  # read it from the sequences
        length = seqs[0].shape[1]
        if length is None:
            length = ops.shape(seqs[0])[1]
    keep_all = net.return_sequences if sequences is None else sequences
    plan, time_major, loop_consts, post_in, layout = _sequences(
        net, model, seqs, consts, teachers, mask, training, keep_all, length, feed
    )
    batch = batch_of(seqs + consts) if seqs or consts else history_batch(histories[0])
    outs = _outputs(net, model, plan, mask, keep_all, feed)
    # Under XLA (`loop_jit`) the delay lines are tensors: the compiled loop
    # takes and returns plain tensors, and XLA updates them in place.
    jit = loop_jit_for(net.loop_jit, model, plan, training, length)
    edges = _edges(net, histories, length, mask, batch, jit)
    step = _Step(net, model, plan, layout, edges, outs, loop_consts, training, feed)
    carry = edges.lines.initial_carry() + _first_last(net, outs, layout, batch, feed_init)
    layout.n_direct = len(edges.direct)
    layout.n_slots, layout.n_last = edges.lines.n_carry, len(carry) - edges.lines.n_carry
    # Cells with dropout of their own (LSTMCell(dropout=...)) use one mask
    # per sequence, as in keras.layers.RNN: made here, outside the loop.
    with dropout_masks(dropout_cells(net.step_model), batch, training):
        # After the masks: their draws moved the seeds the loop carries (JAX).
        carry += [v.value for v in step.nt_vars]
        ys, final, timelines = _segments(step, time_major, carry, length, batch, histories, jit)
        for var, value in zip(step.nt_vars, layout.split_carry(final)[2]):
            var.assign(value)
    return _finish(step, ys, final, timelines, post_in, histories, mask, length, batch)


def _sequences(net, model, seqs, consts, teachers, mask, training, keep_all, length, feed):
    """The loop's per-step sequences, time-major, and their layout: the
    inputs (or, with a hoisting plan, its per-step values, computed here once
    over all steps), the teacher-forcing truths, the coin flips, the mask.

    Returns `(plan, sequences, the constants the step reads, the values the
    post part reads, Layout)`.
    """
    time_major = [ops.moveaxis(s, 1, 0) for s in seqs]
    plan = None
    if not feed:
        # Under "auto", read-outs run after the loop only when it runs under
        # XLA (decided on the plan without them, which they can only shrink).
        plan = hoist_plan(net, model, keep_all)
        if net.hoist == "auto" and loop_jit_for(net.loop_jit, model, plan, training, length):
            plan = hoist_plan(net, model, keep_all, jit=True)
    post_in, loop_consts = [], list(consts)
    if plan is not None:
        time_major, loop_consts, post_in = plan.precompute(time_major, consts, training)
    n_seq = len(time_major)
    # Under a mask an output holds its value of the last unmasked step: the
    # loop emits that step's index (-1 before any) for the post outputs.
    post = plan.post_outputs if plan is not None else []
    hold = mask is not None and any(i < net.graph.n_outputs for i in post)
    names = [s.name for s in net.graph.specs if s.name in teachers]
    time_major += [ops.moveaxis(teachers[n], 1, 0) for n in names]
    coins = bool(names) and bool(training) and net.teacher_forcing < 1.0
    if coins:
        t_shape = ops.shape(time_major[n_seq])[:2]
        draws = keras.random.uniform(t_shape, seed=net._seed_generator)
        time_major.append(draws < net.teacher_forcing)
    if mask is not None:
        time_major.append(ops.moveaxis(mask, 1, 0))
    if net.go_backwards:
        time_major = [ops.flip(s, axis=0) for s in time_major]
        n = len(plan.post_seq) if plan is not None else 0
        post_in = [ops.flip(s, axis=0) for s in post_in[:n]] + post_in[n:]
    if hold:
        m_tm = time_major[-1]
        steps = ops.cast(ops.arange(ops.shape(m_tm)[0]), "float32")
        time_major.append(ops.where(m_tm, ops.expand_dims(steps, 1), -1.0))
    return (
        plan,
        time_major,
        loop_consts,
        post_in,
        Layout(n_seq, names, coins, mask is not None, hold),
    )


def _outputs(net, model, plan, mask, keep_all, feed) -> Outputs:
    """Which of the step's outputs the loop computes, stacks and carries."""
    n_out = net.graph.n_outputs
    post = set(plan.post_outputs) if plan is not None else set()
    carry_last = bool(mask is not None or not keep_all or feed)
    loop_ys = [i for i in range(n_out) if i not in post]
    n_main = len(net.step_model.outputs)
    return Outputs(n_out, n_main, len(model.outputs), post, loop_ys, keep_all, carry_last)


def _edges(net, histories, length, mask, batch, jit) -> Edges:
    """The segments of the run, and how each delayed edge is held.

    The run goes in at most MAX_SEGMENTS segments. An edge whose delay spans a
    segment reads, in that segment, only values written before it (its history,
    earlier segments' new values), in order: a per-step sequence, its new
    values stacked like outputs, with no buffer in the loop nor in its
    gradient. The others are ring buffers; a ring holds an edge's whole
    history, or under a mask, for an edge longer than the run, its first
    `length` entries (`after_masked`).
    """
    specs = net.graph.specs
    bounds = segment_bounds([s.delay for s in specs], length, mask)
    span = bounds[0][1] if isinstance(length, int) and mask is None else None
    direct = [i for i, s in enumerate(specs) if span and s.delay > 1 and s.delay >= span]
    ring = [i for i in range(len(specs)) if i not in direct]
    direct_specs = [(history_dtype(histories[i]), (None,) + specs[i].shape) for i in direct]
    slots = ring_slots(net, [specs[i] for i in ring], [histories[i] for i in ring], length, batch)
    starts = [
        window(histories[i], specs[i].delay, 0, n, batch, specs[i].shape)
        for i, n in zip(ring, slots)
    ]
    arrays = use_tensor_arrays(unroll=net.unroll, mask=mask) and not jit
    lines = DelayLines(slots, starts, batch, tensor_arrays=arrays)
    return Edges(bounds, direct, ring, slots, lines, direct_specs)


def _first_last(net, outs, layout, batch, feed_init) -> list:
    """The carry's previous outputs before the first step (zeros, or
    closed-loop generation's `feed_init`), and under `hold` the index -1."""
    last0 = []
    if outs.carry_last:
        if feed_init is not None:
            last0 = list(feed_init)
        else:
            step_outputs = net.step_model.outputs
            last0 = [
                ops.zeros((batch,) + tuple(step_outputs[i].shape[1:]), step_outputs[i].dtype)
                for i in outs.loop_ys
            ]
    if layout.hold:
        last0.append(ops.full((batch,), -1.0, "float32"))
    return last0


class _Step:
    """The loop's body: one step of the step model (or of its hoisting
    plan's loop part) on one step's sequence values and the carry."""

    def __init__(self, net, model, plan, layout, edges, outs, loop_consts, training, feed):
        self.net, self.model, self.plan, self.layout = net, model, plan, layout
        self.edges, self.outs, self.loop_consts = edges, outs, loop_consts
        self.training, self.feed = training, feed
        self.n_inputs = len(net.graph.input_names)
        # JAX traces the loop body as a pure function: variables the step
        # changes (dropout seeds, BatchNormalization statistics) ride in the
        # carry and are written back after the loop.
        self.thread = keras.backend.backend() == "jax" and not net.unroll
        self.nt_vars = model.non_trainable_variables if self.thread else []
        self.tr_values = [v.value for v in model.trainable_variables] if self.thread else []

    def out_specs(self) -> list:
        """`(dtype, shape)` of what each step stacks (see `Layout`)."""
        outs, model = self.outs, self.model
        step_outputs = self.net.step_model.outputs
        specs = [
            (step_outputs[i].dtype, (None,) + tuple(step_outputs[i].shape[1:]))
            for i in outs.loop_ys
        ]
        extras = [
            (t.dtype, (None,) + tuple(t.shape[1:]))
            for i, t in enumerate(model.outputs[outs.n_main :])
            if outs.n_main + i not in outs.post
        ]
        emitted = self.plan.emitted if self.plan is not None else []
        emits = [(t.dtype, (None,) + tuple(t.shape[1:])) for t in emitted]
        emits += [("float32", (None,))] if self.layout.hold else []
        return (specs if outs.keep_all else []) + extras + emits + self.edges.direct_specs

    def apply(self, feeds):
        if self.plan is None:
            return self.model(feeds, training=self.training)
        n_seq, n = self.layout.n_seq, len(self.loop_consts)
        return self.plan.step(
            feeds[:n_seq], feeds[n_seq : n_seq + n], feeds[n_seq + n :], self.training
        )

    def call_step(self, feeds, nt_values):
        if not self.thread:
            return self.apply(feeds), []
        model, tr_values = self.model, self.tr_values
        if self.plan is None:
            return model.stateless_call(tr_values, nt_values, feeds, training=self.training)
        mapping = list(zip(model.trainable_variables, tr_values))
        mapping += list(zip(self.nt_vars, nt_values))
        with keras.StatelessScope(state_mapping=mapping) as scope:
            outs = self.apply(feeds)
        return outs, [scope.get_current_value(v) for v in self.nt_vars]

    def __call__(self, xs, carry):
        layout, edges, o = self.layout, self.edges, self.outs
        bufs, last, nt_values = layout.split_carry(carry)
        seq_vals, truths, coin, m, t_pos, reads = layout.split_sequences(xs)
        if self.feed:
            it = iter(seq_vals)
            seq_vals = [
                last[self.feed[i]] if i in self.feed else next(it) for i in range(self.n_inputs)
            ]
        delayed = _merge(edges.lines.read(bufs), reads, edges.ring, edges.direct)
        outs, nt_values = self.call_step(
            list(seq_vals) + list(self.loop_consts) + delayed, nt_values
        )
        outs = list(outs) if isinstance(outs, (list, tuple)) else [outs]
        outs, emits = outs[: o.n_all], outs[o.n_all :]
        ys, sources = [outs[i] for i in o.loop_ys], list(outs[o.n_out : o.n_main])
        extras = [v for v in outs[o.n_main :] if v is not None]
        for i, spec in enumerate(self.net.graph.specs):
            if spec.name in truths:
                truth = ops.cast(truths[spec.name], sources[i].dtype)
                new = sources[i]
                sources[i] = truth if coin is None else ops.where(expand_to(coin, new), truth, new)
        ring = edges.ring
        new_bufs = edges.lines.write(
            bufs, [delayed[i] for i in ring], [sources[i] for i in ring], m
        )
        if m is not None:
            ys = [ops.where(expand_to(m, y), y, p) for y, p in zip(ys, last)]
        new_last = list(ys) if o.carry_last else []
        stacked = (list(ys) if o.keep_all else []) + list(extras) + list(emits)
        if layout.hold:
            held = ops.maximum(last[-1], t_pos)
            new_last.append(held)
            stacked.append(held)
        stacked += [ops.cast(sources[i], d) for i, (d, _) in zip(edges.direct, edges.direct_specs)]
        return stacked, new_bufs + new_last + list(nt_values)


@contextlib.contextmanager
def dropout_masks(cells, batch, training):
    """Within the block, each cell of `dropout_cells` holds one dropout mask
    per sequence (in training; none outside), as in `keras.layers.RNN`; after
    it, even when the loop raised, none: a mask belongs to the graph that
    made it."""
    for cell, in_shape, state_shape in cells:
        cell.reset_dropout_mask()
        cell.reset_recurrent_dropout_mask()
        if training:
            cell.get_dropout_mask(ops.zeros((batch,) + in_shape, cell.compute_dtype))
            cell.get_recurrent_dropout_mask(ops.zeros((batch,) + state_shape, cell.compute_dtype))
    try:
        yield
    finally:
        for cell, _, _ in cells:
            cell.reset_dropout_mask()
            cell.reset_recurrent_dropout_mask()


def _segments(step, time_major, carry, length, batch, histories, jit):
    """The loop over each segment in turn, the carry of one handed to the next.

    Returns `(stacked values, time-major, without the spanning edges' new
    values; the final carry; each spanning edge's timeline)`: its history,
    then each segment's new values.
    """
    net, edges, specs = step.net, step.edges, step.net.graph.specs
    timelines = [[(histories[i], specs[i].delay)] for i in edges.direct]
    out_specs, n_direct, bounds = step.out_specs(), len(edges.direct), edges.bounds
    segments = []
    for start, stop in bounds:
        reads = [
            _window(parts, start, stop, batch, specs[i].shape)
            for i, parts in zip(edges.direct, timelines)
        ]
        ys, carry = time_loop(
            step,
            [s[start:stop] if len(bounds) > 1 else s for s in time_major] + reads,
            carry,
            stop - start if len(bounds) > 1 else length,
            out_specs,
            unroll=net.unroll,
            jit=jit,
            invariants=step.loop_consts,
        )
        for parts, new in zip(timelines, ys[len(ys) - n_direct :]):
            parts.append((new, stop - start))
        segments.append(ys[: len(ys) - n_direct])
    ys = segments[0] if len(segments) == 1 else [ops.concatenate(c, 0) for c in zip(*segments)]
    return list(ys), carry, timelines


def _finish(step, ys, final, timelines, post_in, histories, mask, length, batch):
    """After the loop: the post part's outputs in their places, batch-major
    outputs, the last step's outputs and the final histories."""
    o, layout, edges, specs = step.outs, step.layout, step.edges, step.net.graph.specs
    if o.post:
        args = (step.training, layout.hold, o.keep_all, o.n_out, o.n_main, o.n_all)
        ys = _place_post(step.plan, ys, post_in, *args)
    outputs = [ops.moveaxis(y, 0, 1) for y in ys]
    bufs, last_carry, _ = layout.split_carry(final)
    if o.carry_last:
        loop_last = iter(last_carry[: len(o.loop_ys)])
        last = [next(loop_last) if i not in o.post else outputs[i][:, -1] for i in range(o.n_out)]
    else:
        last = [y[:, -1] for y in outputs[: o.n_out]]
    # A spanning edge's history: the last `delay` values of its timeline,
    # kept as its old tail and the new values.
    spanned = []
    for i, parts in zip(edges.direct, timelines):
        k = specs[i].delay
        spanned.append(kept(histories[i], k, _window(parts, k, k + length, batch, specs[i].shape)))
    rung = edges.lines.to_histories(bufs)
    ring, slots = edges.ring, edges.slots
    if any(n < specs[i].delay for i, n in zip(ring, slots)):  # under a mask only
        buffers, _ = edges.lines.buffers(bufs)
        counts = ops.sum(ops.cast(mask, "int32"), axis=1)  # each sample's unmasked steps
        for j, (i, n) in enumerate(zip(ring, slots)):
            if n < specs[i].delay:
                rung[j] = after_masked(
                    histories[i], specs[i].delay, buffers[j], counts, batch, specs[i].shape
                )
    return outputs, last, _merge(rung, spanned, ring, edges.direct)


def ring_slots(net, specs, histories, length, batch) -> list:
    """The slots of each ring: the delay, or under a mask, for an edge longer
    than the run, the run's length. With a length unknown when traced the
    whole history is made: within the memory budget."""
    if isinstance(length, int):
        return [min(s.delay, length) for s in specs]
    check_budget(
        net._label(),
        "a run whose number of steps is unknown when traced holds",
        [s for s, h in zip(specs, histories) if isinstance(h, History) and h.fill is not None],
        batch,
        "Give the sequences a fixed number of steps, or use a shorter delay.",
    )
    return [s.delay for s in specs]


# A run is cut into at most this many segments, so that edges of delays down to
# a quarter of the run read no buffer; each segment traces the step once more.
MAX_SEGMENTS = 4


def segment_bounds(delays, length, mask) -> list:
    """The `(start, stop)` steps of each segment of a run.

    One segment (the whole run) unless the length is known when traced, there
    is no mask (a masked sample's history moves only at its unmasked steps)
    and some delay k > 1 is at least `length / MAX_SEGMENTS`: then segments of
    the shortest such k, whose edges (and all longer ones) read, within a
    segment, only values written before it.
    """
    if not isinstance(length, int):
        return [(0, length)]
    long = [k for k in delays if k > 1 and k * MAX_SEGMENTS >= length]
    if mask is not None or not long:
        return [(0, length)]
    span = min(min(long), length)
    return [(a, min(a + span, length)) for a in range(0, length, span)]


def _window(parts, start, stop, batch, shape):
    """Steps `start:stop` of a timeline held as consecutive `(part, steps)`,
    time first; the first part is the history (a `History` or a tensor)."""
    out, offset = [], 0
    for j, (part, size) in enumerate(parts):
        lo, hi = max(start - offset, 0), min(stop - offset, size)
        if lo < hi:
            if j == 0:
                out.append(window(part, size, lo, hi, batch, shape))
            else:
                out.append(part[lo:hi] if (lo, hi) != (0, size) else part)
        offset += size
    return out[0] if len(out) == 1 else ops.concatenate(out, axis=0)


def _merge(ring_values, direct_values, ring, direct) -> list:
    """One list in edge order from the ring edges' and the spanning edges' values."""
    out = [None] * (len(ring) + len(direct))
    for i, v in zip(ring, ring_values):
        out[i] = v
    for i, v in zip(direct, direct_values):
        out[i] = v
    return out


def _place_post(plan, ys, post_in, training, hold, keep_all, n_out, n_main, n_all):
    """The loop's stacked values with the post part's outputs in their places.

    `ys`: time-major, the outputs the loop stacked (the stacked outputs when
    `keep_all`, then the extra outputs), the emitted values, and with `hold`
    each step's last unmasked step index.
    """
    n_emit = len(plan.emitted)
    held = ys.pop() if hold else None
    emitted = ys[len(ys) - n_emit :]
    looped = iter(ys[: len(ys) - n_emit])
    computed = dict(zip(plan.post_outputs, plan.postcompute(emitted, post_in, training)))
    if held is not None:
        index = ops.cast(held, "int32")
        seen = index >= 0
        index = ops.maximum(index, 0)
        for i in computed:
            if i < n_out:  # as the loop's outputs: repeated over masked steps, zeros before
                v = computed[i]
                idx = _expand_to_rank(index, v)
                taken = ops.take_along_axis(v, ops.broadcast_to(idx, ops.shape(v)), axis=0)
                computed[i] = ops.where(_expand_to_rank(seen, v), taken, ops.zeros_like(taken))
    wanted = (list(range(n_out)) if keep_all else []) + list(range(n_main, n_all))
    return [computed[i] if i in computed else next(looped) for i in wanted]


def _expand_to_rank(m, ref):
    """A (time, batch) tensor broadcastable against `ref` (time, batch, ...)."""
    for _ in range(len(ref.shape) - 2):
        m = ops.expand_dims(m, -1)
    return m
