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

import keras
from keras import ops

from fbexplorer import _keras
from fbexplorer._call_inputs import batch_of
from fbexplorer._carried_state import executing_eagerly
from fbexplorer._delay_lines import DelayLines, _expand_to, use_tensor_arrays
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
from fbexplorer.graph import _state_shapes

__all__ = ["compiled", "run"]


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
            state = _state_shapes(layer)[0][0]
            found.append((layer, in_shape, tuple(state)))
        if isinstance(getattr(layer, "cells", None), (list, tuple)):  # StackedRNNCells
            for inner in layer.cells:
                visit(inner, in_shape)
                size = getattr(inner, "output_size", None)
                size = size if size is not None else _state_shapes(inner)[0][0]
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
    g = net.graph
    specs = g.specs
    n_out = g.n_outputs
    model = net.step_model if probe is None else probe
    n_main = len(net.step_model.outputs)
    n_all = len(model.outputs)  # the step's outputs, then a probe's extra ones
    extra_specs = [(t.dtype, (None,) + tuple(t.shape[1:])) for t in model.outputs[n_main:]]
    feed = feed or {}
    if length is None:  # read it from the sequences
        length = seqs[0].shape[1]
        if length is None:
            length = ops.shape(seqs[0])[1]
    keep_all = net.return_sequences if sequences is None else sequences
    step_outputs = net.step_model.outputs
    out_shapes = [tuple(t.shape[1:]) for t in step_outputs[:n_out]]
    out_dtypes = [t.dtype for t in step_outputs[:n_out]]
    carry_last = bool(mask is not None or not keep_all or feed)

    # Sequences, time-major: inputs, truths, coin flips, mask.
    time_major = [ops.moveaxis(s, 1, 0) for s in seqs]
    # The hoisted part runs here, once over all steps: the loop then reads
    # its per-step values in place of the inputs, and its constants.
    plan = None
    if not feed:
        # Under "auto", read-outs run after the loop only when it runs under
        # XLA (decided on the plan without them, which they can only shrink).
        plan = hoist_plan(net, model, keep_all)
        if net.hoist == "auto" and loop_jit_for(net.loop_jit, model, plan, training, length):
            plan = hoist_plan(net, model, keep_all, jit=True)
    post_in = []
    if plan is not None:
        time_major, loop_consts, post_in = plan.precompute(time_major, consts, training)
        n_seq_in = len(time_major)
    else:
        loop_consts = list(consts)
        n_seq_in = len(seqs)
    # The post part (read-outs) runs after the loop, on the values the loop
    # emits at every step.
    post = set(plan.post_outputs) if plan is not None else set()
    emitted = list(plan.emitted) if plan is not None else []
    loop_ys = [i for i in range(n_out) if i not in post]
    # Under a mask an output holds its value of the last unmasked step: the
    # loop emits that step's index (-1 before any) for the post outputs.
    hold = mask is not None and any(i < n_out for i in post)
    teacher_names = [s.name for s in specs if s.name in teachers]
    time_major += [ops.moveaxis(teachers[n], 1, 0) for n in teacher_names]
    use_coins = bool(teacher_names) and bool(training) and net.teacher_forcing < 1.0
    if use_coins:
        t_shape = ops.shape(time_major[n_seq_in])[:2]
        coins = keras.random.uniform(t_shape, seed=net._seed_generator)
        time_major.append(coins < net.teacher_forcing)
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

    if seqs or consts:
        batch = batch_of(seqs + consts)
    else:
        batch = history_batch(histories[0])
    # Under XLA (`loop_jit`) the delay lines are tensors: the compiled loop
    # takes and returns plain tensors, and XLA updates them in place.
    jit = loop_jit_for(net.loop_jit, model, plan, training, length)
    # The run goes in at most MAX_CHUNKS chunks. An edge whose delay spans a
    # chunk reads, in that chunk, only values written before it (its
    # history, earlier chunks' new values), in order: a per-step sequence,
    # its new values stacked like outputs, with no buffer in the loop nor in
    # its gradient. The others are ring buffers.
    bounds = chunk_bounds([s.delay for s in specs], length, mask)
    span = bounds[0][1] if isinstance(length, int) and mask is None else None
    direct = [i for i, s in enumerate(specs) if span and s.delay > 1 and s.delay >= span]
    ring = [i for i in range(len(specs)) if i not in direct]
    direct_specs = [(history_dtype(histories[i]), (None,) + specs[i].shape) for i in direct]
    # A ring holds an edge's whole history, or under a mask, for an edge
    # longer than the run, its first `length` entries (`after_masked`).
    slots = ring_slots(net, [specs[i] for i in ring], [histories[i] for i in ring], length, batch)
    lines = DelayLines(
        slots,
        [
            window(histories[i], specs[i].delay, 0, n, batch, specs[i].shape)
            for i, n in zip(ring, slots)
        ],
        batch,
        tensor_arrays=use_tensor_arrays(unroll=net.unroll, mask=mask) and not jit,
    )
    n_slots = lines.n_carry  # delayed edges, then write positions
    if carry_last:
        if feed_init is not None:
            last0 = list(feed_init)
        else:
            last0 = [ops.zeros((batch,) + out_shapes[i], out_dtypes[i]) for i in loop_ys]
    else:
        last0 = []
    if hold:
        last0.append(ops.full((batch,), -1.0, "float32"))
    n_last = len(last0)
    # JAX traces the loop body as a pure function: variables the step
    # changes (dropout seeds, BatchNormalization statistics) ride in the
    # carry and are written back after the loop.
    thread = keras.backend.backend() == "jax" and not net.unroll
    nt_vars = model.non_trainable_variables if thread else []
    tr_values = [v.value for v in model.trainable_variables] if thread else []

    def apply(feeds):
        if plan is None:
            return model(feeds, training=training)
        n = len(loop_consts)
        return plan.step(
            feeds[:n_seq_in], feeds[n_seq_in : n_seq_in + n], feeds[n_seq_in + n :], training
        )

    def call_step(feeds, nt_values):
        if not thread:
            return apply(feeds), []
        if plan is None:
            return model.stateless_call(tr_values, nt_values, feeds, training=training)
        mapping = list(zip(model.trainable_variables, tr_values)) + list(zip(nt_vars, nt_values))
        with keras.StatelessScope(state_mapping=mapping) as scope:
            outs = apply(feeds)
        return outs, [scope.get_current_value(v) for v in nt_vars]

    def step(xs, carry):
        bufs, last = carry[:n_slots], carry[n_slots : n_slots + n_last]
        nt_values = carry[n_slots + n_last :]
        xs = list(xs)
        seq_vals = xs[:n_seq_in]
        pos = n_seq_in
        truths = dict(zip(teacher_names, xs[pos : pos + len(teacher_names)]))
        pos += len(teacher_names)
        coin = xs[pos] if use_coins else None
        pos += int(use_coins)
        m = xs[pos] if mask is not None else None
        pos += int(mask is not None)
        t_pos = xs[pos] if hold else None  # this step's index if unmasked, else -1
        pos += int(hold)
        if feed:
            it = iter(seq_vals)
            seq_vals = [last[feed[i]] if i in feed else next(it) for i in range(len(g.input_names))]
        delayed = _merge(lines.read(bufs), xs[pos : pos + len(direct)], ring, direct)
        feeds = list(seq_vals) + list(loop_consts) + delayed
        outs, nt_values = call_step(feeds, nt_values)
        outs = list(outs) if isinstance(outs, (list, tuple)) else [outs]
        outs, emits = outs[:n_all], outs[n_all:]
        ys, sources = [outs[i] for i in loop_ys], list(outs[n_out:n_main])
        extras = [v for v in outs[n_main:] if v is not None]
        for i, spec in enumerate(specs):
            if spec.name in truths:
                new = sources[i]
                truth = ops.cast(truths[spec.name], new.dtype)
                new = truth if coin is None else ops.where(_expand_to(coin, new), truth, new)
                sources[i] = new
        new_bufs = lines.write(bufs, [delayed[i] for i in ring], [sources[i] for i in ring], m)
        if m is not None:
            ys = [ops.where(_expand_to(m, y), y, p) for y, p in zip(ys, last)]
        new_last = list(ys) if carry_last else []
        stacked = (list(ys) if keep_all else []) + list(extras) + list(emits)
        if hold:
            held = ops.maximum(last[-1], t_pos)
            new_last.append(held)
            stacked.append(held)
        stacked += [ops.cast(sources[i], d) for i, (d, _) in zip(direct, direct_specs)]
        return stacked, new_bufs + new_last + list(nt_values)

    # Cells with dropout of their own (LSTMCell(dropout=...)) use one mask
    # per sequence, as in keras.layers.RNN: made here, outside the loop.
    cells = dropout_cells(net.step_model)
    for cell, in_shape, state_shape in cells:
        cell.reset_dropout_mask()
        cell.reset_recurrent_dropout_mask()
        if training:
            cell.get_dropout_mask(ops.zeros((batch,) + in_shape, cell.compute_dtype))
            cell.get_recurrent_dropout_mask(ops.zeros((batch,) + state_shape, cell.compute_dtype))

    specs_out = [(out_dtypes[i], (None,) + out_shapes[i]) for i in loop_ys]
    extra_specs = [e for i, e in enumerate(extra_specs) if n_main + i not in post]
    emit_specs = [(t.dtype, (None,) + tuple(t.shape[1:])) for t in emitted]
    emit_specs += [("float32", (None,))] if hold else []
    carry = lines.initial_carry() + last0 + [v.value for v in nt_vars]
    # Each spanning edge's timeline: its history, then the values written.
    timelines = [[(histories[i], specs[i].delay)] for i in direct]
    shapes = {i: specs[i].shape for i in direct}

    def read(i, parts, start, stop):
        return _window(parts, start, stop, batch, shapes[i])

    chunks = []
    for start, stop in bounds:
        reads = [read(i, parts, start, stop) for i, parts in zip(direct, timelines)]
        ys, carry = time_loop(
            step,
            [s[start:stop] if len(bounds) > 1 else s for s in time_major] + reads,
            carry,
            stop - start if len(bounds) > 1 else length,
            (specs_out if keep_all else []) + extra_specs + emit_specs + direct_specs,
            unroll=net.unroll,
            jit=jit,
            invariants=loop_consts,
        )
        for parts, new in zip(timelines, ys[len(ys) - len(direct) :]):
            parts.append((new, stop - start))
        chunks.append(ys[: len(ys) - len(direct)])
    final = carry
    ys = chunks[0] if len(chunks) == 1 else [ops.concatenate(c, 0) for c in zip(*chunks)]
    for var, value in zip(nt_vars, final[n_slots + n_last :]):
        var.assign(value)
    for cell, _, _ in cells:  # a mask belongs to the graph that made it
        cell.reset_dropout_mask()
        cell.reset_recurrent_dropout_mask()
    ys = list(ys)
    if post:
        ys = _place_post(plan, ys, post_in, training, hold, keep_all, n_out, n_main, n_all)
    outputs = [ops.moveaxis(y, 0, 1) for y in ys]
    if carry_last:
        loop_last = iter(final[n_slots : n_slots + len(loop_ys)])
        last = [next(loop_last) if i not in post else outputs[i][:, -1] for i in range(n_out)]
    else:
        last = [y[:, -1] for y in outputs[:n_out]]
    # A spanning edge's history: the last `delay` values of its timeline,
    # kept as its old tail and the new values.
    spanned = [
        kept(histories[i], specs[i].delay, read(i, parts, specs[i].delay, specs[i].delay + length))
        for i, parts in zip(direct, timelines)
    ]
    rung = lines.to_histories(final[:n_slots])
    if any(n < specs[i].delay for i, n in zip(ring, slots)):  # under a mask only
        buffers, _ = lines.buffers(final[:n_slots])
        counts = ops.sum(ops.cast(mask, "int32"), axis=1)  # each sample's unmasked steps
        for j, (i, n) in enumerate(zip(ring, slots)):
            if n < specs[i].delay:
                rung[j] = after_masked(
                    histories[i], specs[i].delay, buffers[j], counts, batch, specs[i].shape
                )
    return outputs, last, _merge(rung, spanned, ring, direct)


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


# A run is cut into at most this many chunks, so that edges of delays down to
# a quarter of the run read no buffer; each chunk traces the step once more.
MAX_CHUNKS = 4


def chunk_bounds(delays, length, mask) -> list:
    """The `(start, stop)` steps of each chunk of a run.

    One chunk (the whole run) unless the length is known when traced, there
    is no mask (a masked sample's history moves only at its unmasked steps)
    and some delay k > 1 is at least `length / MAX_CHUNKS`: then chunks of
    the shortest such k, whose edges (and all longer ones) read, within a
    chunk, only values written before it.
    """
    if not isinstance(length, int):
        return [(0, length)]
    long = [k for k in delays if k > 1 and k * MAX_CHUNKS >= length]
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
