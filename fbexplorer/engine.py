"""FeedbackModel: a step graph run over time in one compiled loop."""

from __future__ import annotations

import contextlib

import keras
import numpy as np
from keras import ops

from fbexplorer._loop import check_loop_jit, loop_jit_for, time_loop
from fbexplorer.graph import StepGraph, pack

__all__ = ["FeedbackModel"]

_KERAS_DEFAULT_BATCH = 32


def _in_symbolic_scope() -> bool:
    from keras.src.backend.common.symbolic_scope import in_symbolic_scope

    return in_symbolic_scope()


def _executing_eagerly(tensor) -> bool:
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.executing_eagerly()
    if backend == "jax":
        import jax

        return not isinstance(tensor, jax.core.Tracer)
    return True


def _expand_to(m, ref):
    """A (batch,) boolean mask broadcastable against `ref`."""
    return ops.reshape(m, (-1,) + (1,) * (len(ref.shape) - 1))


def _dropout_cells(model):
    """The Keras cells in `model` with dropout of their own.

    Returns `(cell, input shape, first state shape)` for each, shapes without
    the batch axis, read from the cell's call in the step graph.
    """
    found = []
    for layer in model._flatten_layers(include_self=False, recursive=True):
        rates = (getattr(layer, "dropout", 0), getattr(layer, "recurrent_dropout", 0))
        if not hasattr(layer, "get_dropout_mask") or not any(
            isinstance(r, (int, float)) and r > 0 for r in rates
        ):
            continue
        args = layer._inbound_nodes[0].arguments.args
        inputs = keras.tree.flatten(args[0])[0]
        state = keras.tree.flatten(args[1])[0]
        found.append((layer, tuple(inputs.shape[1:]), tuple(state.shape[1:])))
    return found


def _compile_eager_calls(tensor) -> bool:
    """Whether a direct call should run the loop as a compiled function.

    On TensorFlow an eager `tf.while_loop` runs its body in Python once per
    step; a direct `net(x)` compiles the loop instead, as `predict` does.
    """
    return keras.backend.backend() == "tensorflow" and _executing_eagerly(tensor)


class _Holder:
    """Keeps a layer out of Keras's tracking (a cell that owns this model)."""

    def __init__(self, value):
        self.value = value


class _StateStore:
    """Holds the stateful model's carried values, out of Keras's weight tracking.

    The carried state depends on the batch size, so it is not a weight: it
    is neither saved nor loaded, and it is created at the first call.
    """

    def __init__(self):
        self.slots = None  # list of keras.Variable, one per delay slot
        self.batch_size = None


@keras.saving.register_keras_serializable(package="fbexplorer")
class FeedbackModel(keras.Model):
    """A Keras model that runs a step graph over time, with feedback edges.

    The step graph is built with ordinary Keras layers on `keras.Input`s (one
    timestep of each input sequence), constants (the same at every step) and
    `fbx.Feedback` placeholders. `feedback={name: source}` binds each
    placeholder to the tensor whose earlier value it receives. The model
    then maps sequences `(batch, time, ...)` to sequences, in one compiled
    loop over time, carrying every delayed value and the states of any Keras
    RNN cell used through `fbx.cell`.

    Args:
        inputs: a `keras.Input`, a list of them, or a dict: the per-step inputs.
            At call they are given by position or by their `keras.Input` name.
        outputs: a tensor, a list or a dict of tensors of the step graph.
        feedback: `{feedback name: source tensor}` for every `fbx.Feedback`
            used in the graph (edges from `fbx.delayed` and `fbx.cell` are
            bound automatically).
        constants: `keras.Input`s without a time axis, fed unchanged at every
            step (an image seen for several steps, an encoder's memory).
        return_sequences: return every step's outputs (else the last step's).
        return_state: also return the final delayed values and cell states,
            as a dict by name: the call returns `(outputs, states)`.
        stateful: carry every delayed value and cell state across calls and
            batches (`fit`, `predict`, `evaluate`); see `reset_states`.
        go_backwards: process the sequences in reverse order and return the
            outputs in that (reversed) order, as Keras's RNN layers do.
        unroll: trace the step once per timestep instead of a loop (short,
            fixed-length sequences only).
        teacher_forcing: in training, the probability, per sample and step,
            that a feedback given ground truth receives the truth rather than
            the model's own value (scheduled sampling). Outside training, truth
            given is always used.
        steps: the number of steps when the model has no per-step inputs (all
            constants); `steps=` at call overrides it.
        hoist: run the parts of the step that depend on no delayed value or
            cell state outside the loop, once per call, as one batched
            computation; the loop keeps the rest. `True`: everything that can
            be (encoders of the constants, computed once; input projections
            and per-step encoders, computed once over all timesteps).
            `"auto"` (default): the constants' part always, the per-step part
            only where it does not widen what the loop reads per step (an
            input projection to an LSTM's 4 * units gates does, and measured
            slower). `False`: the plain loop. The results are those of the
            plain loop (up to float rounding; a hoisted Dropout draws other,
            equally distributed masks). Turn it off for a step with layers
            that mix the samples of a batch in a way the engine cannot see
            (see docs/engine.md for what stays in the loop).
        loop_jit: on TensorFlow, compile the time loop (and its gradient)
            with XLA, nested in Keras's train/predict functions and direct
            calls, whatever `compile(jit_compile=...)` says. `"auto"`
            (default): for a small step (at most
            `fbexplorer._loop.AUTO_JIT_MAX_WEIGHTS` weights in the loop) over
            at least `AUTO_JIT_MIN_STEPS` steps, where TensorFlow's per-step
            overhead dominates (a 3 x Dense(8) net measured 1.8x faster to
            train and 1.9x to infer); an LSTM-sized step stays without (XLA
            measured slower). `True`: always; `False`:
            never. Either way the results are the plain loop's; in training,
            a loop with random draws or statistics updates (Dropout,
            BatchNormalization) runs without XLA. Other backends ignore it.
        name: the model's name.

    Call arguments:
        inputs: the sequences (and constants) by position, or a dict by name.
            A dict entry named after a feedback is its ground truth
            `(batch, time, *shape)`: the feedback then receives
            `truth[t - delay]` (teacher forcing).
        initial_state: `{feedback name: value}`, each `(batch, *shape)`, an
            unbatched `(*shape)`, or, for `delay=k > 1`, the whole history
            `(batch, k, *shape)`, oldest first.
        mask: `(batch, time)` booleans; masked steps hold every delayed value
            and cell state, and repeat the previous output (Keras's default).
        training: training mode for Dropout, BatchNormalization and teacher
            forcing.
        steps: number of steps for a model whose inputs are all constants.

    Example:
        >>> x = keras.Input((5,), name="x")
        >>> loop = fbx.Feedback((5,), name="loop")
        >>> h = keras.layers.Dense(5)(keras.layers.Concatenate()([x, loop]))
        >>> net = fbx.FeedbackModel(x, h, feedback={"loop": h})
        >>> net(np.zeros((2, 7, 5))).shape
        TensorShape([2, 7, 5])
    """

    def __init__(
        self,
        inputs=None,
        outputs=None,
        *,
        feedback=None,
        constants=None,
        return_sequences: bool = True,
        return_state: bool = False,
        stateful: bool = False,
        go_backwards: bool = False,
        unroll: bool = False,
        teacher_forcing: float = 1.0,
        steps: int | None = None,
        hoist: bool | str = "auto",
        loop_jit: bool | str = "auto",
        name: str | None = None,
        step_graph=None,
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        if step_graph is None:
            if outputs is None:
                raise ValueError(
                    f"FeedbackModel '{self.name}': `outputs` is required: the "
                    f"tensor(s) of the step graph to return at each step."
                )
            step_graph = StepGraph.from_tensors(
                inputs, outputs, feedback, constants, name=self.name
            )
        elif isinstance(step_graph, dict):
            step_graph = StepGraph.from_config(step_graph)
        if not 0.0 <= float(teacher_forcing) <= 1.0:
            raise ValueError(
                f"FeedbackModel '{self.name}': `teacher_forcing` is a probability "
                f"in [0, 1]. Received: teacher_forcing={teacher_forcing!r}"
            )
        if steps is not None and (not isinstance(steps, int) or steps < 1):
            raise ValueError(
                f"FeedbackModel '{self.name}': `steps` must be a positive integer. "
                f"Received: steps={steps!r}"
            )
        self._graph = step_graph
        self.step_model = step_graph.model
        self.return_sequences = bool(return_sequences)
        self.return_state = bool(return_state)
        self.stateful = bool(stateful)
        self.go_backwards = bool(go_backwards)
        self.unroll = bool(unroll)
        self.teacher_forcing = float(teacher_forcing)
        self.steps = steps
        self._initial = {}
        for spec in step_graph.specs:
            if isinstance(spec.initial, str) and spec.initial == "zeros":
                continue
            learned = isinstance(spec.initial, str) and spec.initial == "learned"
            self._initial[spec.name] = self.add_weight(
                shape=spec.shape,
                initializer="zeros" if learned else spec.initial,
                dtype=spec.dtype,
                trainable=learned,
                name=f"{spec.name.replace('/', '_')}_initial",
            )
        self._seed_generator = keras.random.SeedGenerator(name="teacher_forcing_seed")
        self._store = _StateStore()
        if hoist not in (True, False, "auto"):
            raise ValueError(
                f"FeedbackModel '{self.name}': hoist must be True, False or 'auto'. "
                f"Received: hoist={hoist!r}"
            )
        self.hoist = hoist if hoist == "auto" else bool(hoist)
        self.loop_jit = check_loop_jit(loop_jit, self._label())
        self._plans = _Holder({})  # id(model) -> (model, its HoistPlan)
        self._per_step = None  # hoist per-step work too; decided on the step model
        self._tf_run = None
        self._cell = None
        self.built = True

    # ------------------------------------------------------------ properties
    @property
    def graph(self) -> StepGraph:
        """The `StepGraph`: the step model and its delayed edges."""
        return self._graph

    @property
    def feedback_names(self) -> list[str]:
        """Names of every delayed edge and cell state, in loop order."""
        return [s.name for s in self._graph.specs]

    def as_cell(self):
        """This model's step as a Keras RNN cell (`StepCell`), for nesting.

        The same cell every time, so that two uses share one layer.
        """
        from fbexplorer.step_cell import StepCell

        if self._cell is None:
            self._cell = _Holder(StepCell(self))
        return self._cell.value

    def _label(self) -> str:
        return f"FeedbackModel '{self.name}'"

    # ------------------------------------------------------------------ call
    def call(self, inputs, initial_state=None, mask=None, training=None, steps=None):
        g = self._graph
        seqs, consts, teachers = self._unpack(inputs)
        length, batch = self._length_and_batch(seqs, consts, steps)
        for name, truth in teachers.items():
            self._check_teacher(name, truth, seqs, length)
        mask = self._check_mask(self._combine_mask(mask), length, batch)
        slots = self._initial_slots(batch, initial_state, seqs + consts)
        run = self._compiled_run() if _compile_eager_calls((seqs + consts)[0]) else self._run
        # With sequences, _run reads the length from them (inside a compiled
        # function, so that a new length needs no new trace).
        run_length = None if seqs else length
        outputs, last, final = run(
            seqs, consts, teachers, mask, slots, run_length, training=training
        )
        if self.stateful and not _in_symbolic_scope():
            for var, value in zip(self._store.slots, final):
                var.assign(value)
        result = outputs if self.return_sequences else last
        result = pack(result, g.output_structure)
        if self.return_state:
            return result, self._slots_to_dict(final)
        return result

    def _hoist_plan(self, model=None):
        """The hoisting plan of the step model (or of a probe on its inputs),
        None when hoisting is off or nothing can be hoisted."""
        if not self.hoist:
            return None
        model = self.step_model if model is None else model
        plans = self._plans.value
        if id(model) not in plans:
            from fbexplorer._hoist import HoistPlan

            g = self._graph
            n = (len(g.input_names), len(g.constant_names))
            if self._per_step is None:  # decided on the step model, kept for probes
                full = HoistPlan(self.step_model, *n)
                self._per_step = self.hoist is True or not full.widens()
                if self._per_step:
                    plans[id(self.step_model)] = (self.step_model, full)
            if id(model) not in plans:
                plans[id(model)] = (model, HoistPlan(model, *n, per_step=self._per_step))
        plan = plans[id(model)][1]
        return plan if plan.hoisted else None

    def _compiled_run(self):
        if self._tf_run is None:
            import tensorflow as tf

            self._tf_run = tf.function(self._run, reduce_retracing=True)
        return self._tf_run

    def _run(
        self,
        seqs,
        consts,
        teachers,
        mask,
        slots,
        length,
        *,
        training,
        feed=None,
        feed_init=None,
        sequences=None,
        probe=None,
    ):
        """The time loop. Returns (stacked outputs, last outputs, final slots).

        `feed` maps a per-step input's index to the output index whose previous
        value it takes (closed-loop generation); `feed_init` are the outputs
        "before" the first step.

        `probe` (for tracing) is a functional model on the step model's inputs
        and layers whose outputs are the step model's outputs followed by
        extra tensors; it runs in place of the step model, and every step's
        extra values are stacked after the stacked outputs (which are then
        returned only when `sequences` or `return_sequences` asks for them).
        """
        g = self._graph
        specs = g.specs
        n_out = g.n_outputs
        model = self.step_model if probe is None else probe
        n_main = len(self.step_model.outputs)
        extra_specs = [(t.dtype, (None,) + tuple(t.shape[1:])) for t in model.outputs[n_main:]]
        feed = feed or {}
        if length is None:  # read it from the sequences
            length = seqs[0].shape[1]
            if length is None:
                length = ops.shape(seqs[0])[1]
        keep_all = self.return_sequences if sequences is None else sequences
        step_outputs = self.step_model.outputs
        out_shapes = [tuple(t.shape[1:]) for t in step_outputs[:n_out]]
        out_dtypes = [t.dtype for t in step_outputs[:n_out]]
        carry_last = bool(mask is not None or not keep_all or feed)

        # Sequences, time-major: inputs, truths, coin flips, mask.
        time_major = [ops.moveaxis(s, 1, 0) for s in seqs]
        # The hoisted part runs here, once over all steps: the loop then reads
        # its per-step values in place of the inputs, and its constants.
        plan = None if feed else self._hoist_plan(model)
        if plan is not None:
            time_major, loop_consts = plan.precompute(time_major, consts, training)
            n_seq_in = len(time_major)
        else:
            loop_consts = list(consts)
            n_seq_in = len(seqs)
        teacher_names = [s.name for s in specs if s.name in teachers]
        time_major += [ops.moveaxis(teachers[n], 1, 0) for n in teacher_names]
        use_coins = bool(teacher_names) and bool(training) and self.teacher_forcing < 1.0
        if use_coins:
            t_shape = ops.shape(time_major[n_seq_in])[:2]
            coins = keras.random.uniform(t_shape, seed=self._seed_generator)
            time_major.append(coins < self.teacher_forcing)
        if mask is not None:
            time_major.append(ops.moveaxis(mask, 1, 0))
        if self.go_backwards:
            time_major = [ops.flip(s, axis=0) for s in time_major]

        n_slots = g.n_slots
        if carry_last:
            if feed_init is not None:
                last0 = list(feed_init)
            else:
                batch = ops.shape(slots[0])[0] if slots else self._batch_of(seqs + consts)
                last0 = [ops.zeros((batch,) + s, d) for s, d in zip(out_shapes, out_dtypes)]
        else:
            last0 = []
        n_last = len(last0)
        # JAX traces the loop body as a pure function: variables the step
        # changes (dropout seeds, BatchNormalization statistics) ride in the
        # carry and are written back after the loop.
        thread = keras.backend.backend() == "jax" and not self.unroll
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
            mapping = list(zip(model.trainable_variables, tr_values)) + list(
                zip(nt_vars, nt_values)
            )
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
            if feed:
                it = iter(seq_vals)
                seq_vals = [
                    last[feed[i]] if i in feed else next(it) for i in range(len(g.input_names))
                ]
            feeds = list(seq_vals) + list(loop_consts) + g.oldest(bufs)
            outs, nt_values = call_step(feeds, nt_values)
            outs = list(outs) if isinstance(outs, (list, tuple)) else [outs]
            ys, sources, extras = outs[:n_out], list(outs[n_out:n_main]), outs[n_main:]
            for i, spec in enumerate(specs):
                if spec.name in truths:
                    new = sources[i]
                    truth = ops.cast(truths[spec.name], new.dtype)
                    new = truth if coin is None else ops.where(_expand_to(coin, new), truth, new)
                    sources[i] = new
            new_bufs = g.shift(bufs, sources)
            if m is not None:
                new_bufs = [ops.where(_expand_to(m, b), n, b) for n, b in zip(new_bufs, bufs)]
                ys = [ops.where(_expand_to(m, y), y, p) for y, p in zip(ys, last)]
            new_last = list(ys) if carry_last else []
            stacked = (list(ys) if keep_all else []) + list(extras)
            return stacked, new_bufs + new_last + list(nt_values)

        # Cells with dropout of their own (LSTMCell(dropout=...)) use one mask
        # per sequence, as in keras.layers.RNN: made here, outside the loop.
        cells = _dropout_cells(self.step_model)
        for cell, in_shape, state_shape in cells:
            cell.reset_dropout_mask()
            cell.reset_recurrent_dropout_mask()
            if training:
                batch = self._batch_of((seqs + consts + list(slots))[:1])
                cell.get_dropout_mask(ops.zeros((batch,) + in_shape, cell.compute_dtype))
                cell.get_recurrent_dropout_mask(
                    ops.zeros((batch,) + state_shape, cell.compute_dtype)
                )

        specs_out = [(d, (None,) + s) for d, s in zip(out_dtypes, out_shapes)]
        ys, final = time_loop(
            step,
            time_major,
            list(slots) + last0 + [v.value for v in nt_vars],
            length,
            (specs_out if keep_all else []) + extra_specs,
            unroll=self.unroll,
            jit=loop_jit_for(self.loop_jit, model, plan, training, length),
            invariants=loop_consts,
        )
        for var, value in zip(nt_vars, final[n_slots + n_last :]):
            var.assign(value)
        for cell, _, _ in cells:  # a mask belongs to the graph that made it
            cell.reset_dropout_mask()
            cell.reset_recurrent_dropout_mask()
        outputs = [ops.moveaxis(y, 0, 1) for y in ys]
        if carry_last:
            last = final[n_slots : n_slots + n_last]
        else:
            last = [y[:, -1] for y in outputs[:n_out]]
        return outputs, last, final[:n_slots]

    # ------------------------------------------------------------ input prep
    def _unpack(self, inputs):
        g = self._graph
        names = g.input_names + g.constant_names
        fb_names = self.feedback_names
        teachers = {}
        if isinstance(inputs, dict):
            unknown = [k for k in inputs if k not in names and k not in fb_names]
            if unknown:
                raise ValueError(
                    f"{self._label()}: unknown input '{unknown[0]}'. Expected the "
                    f"per-step inputs {g.input_names}, the constants "
                    f"{g.constant_names}, or ground truth for a feedback in {fb_names}."
                )
            missing = [n for n in names if n not in inputs]
            if missing:
                raise ValueError(
                    f"{self._label()}: input '{missing[0]}' is missing. Expected "
                    f"entries for {names}."
                )
            flat = [inputs[n] for n in names]
            teachers = {k: v for k, v in inputs.items() if k in fb_names and k not in names}
        elif isinstance(inputs, (list, tuple)):
            if len(inputs) != len(names):
                raise ValueError(
                    f"{self._label()}: expected {len(names)} inputs {names}, in that "
                    f"order. Received {len(inputs)}."
                )
            flat = list(inputs)
        else:
            if len(names) != 1:
                raise ValueError(
                    f"{self._label()}: expected {len(names)} inputs {names}, as a list "
                    f"or a dict by name. Received a single tensor."
                )
            flat = [inputs]
        model_inputs = self.step_model.inputs
        converted = []
        for i, (name, value) in enumerate(zip(names, flat)):
            ref = model_inputs[i]
            value = ops.convert_to_tensor(value)
            if keras.backend.standardize_dtype(value.dtype) == "string":
                raise ValueError(
                    f"{self._label()}: input '{name}' holds strings; the model expects "
                    f"numbers of dtype {ref.dtype}. Encode text as numbers first (for "
                    f"example with keras.layers.StringLookup)."
                )
            is_seq = i < len(g.input_names)
            want = (len(ref.shape) + 1) if is_seq else len(ref.shape)
            got = tuple(value.shape)
            ok = len(got) == want and all(
                e is None or g_ is None or e == g_
                for e, g_ in zip(tuple(ref.shape[1:]), got[2 if is_seq else 1 :])
            )
            if not ok:
                kind = "a sequence" if is_seq else "a constant"
                exp = "(batch, time, " if is_seq else "(batch, "
                exp += ", ".join(str(d) for d in ref.shape[1:]) + ")"
                hint = (
                    " Add a time axis: a sequence of one step is x[:, None]."
                    if is_seq and len(got) == want - 1
                    else ""
                )
                raise ValueError(
                    f"{self._label()}: input '{name}' is {kind} of shape {exp}. "
                    f"Received shape {got}.{hint}"
                )
            converted.append(ops.cast(value, ref.dtype) if value.dtype != ref.dtype else value)
        n_in = len(g.input_names)
        return converted[:n_in], converted[n_in:], teachers

    def _length_and_batch(self, seqs, consts, steps):
        g = self._graph
        if seqs:
            lengths = {s.shape[1] for s in seqs if s.shape[1] is not None}
            if len(lengths) > 1:
                raise ValueError(
                    f"{self._label()}: the input sequences have different lengths "
                    f"{dict(zip(g.input_names, [s.shape[1] for s in seqs]))}; they "
                    f"must share one time axis."
                )
            length = seqs[0].shape[1]
            if length is None:
                length = ops.shape(seqs[0])[1]
            if steps is not None and isinstance(length, int) and steps != length:
                raise ValueError(
                    f"{self._label()}: steps={steps}, but the inputs have {length} steps."
                )
        else:
            length = steps if steps is not None else self.steps
            if length is None:
                raise ValueError(
                    f"{self._label()}: the model has no per-step inputs, so the number "
                    f"of steps must be given: call it with steps=N, or build it with "
                    f"FeedbackModel(..., steps=N)."
                )
        if isinstance(length, int) and length < 1:
            raise ValueError(
                f"{self._label()}: the sequences have {length} timesteps; at least 1 is needed."
            )
        if not seqs and not consts:
            raise ValueError(
                f"{self._label()}: the model has no inputs or constants to take the "
                f"batch size from."
            )
        return length, self._batch_of(seqs + consts)

    @staticmethod
    def _batch_of(tensors):
        b = tensors[0].shape[0]
        return b if b is not None else ops.shape(tensors[0])[0]

    def _check_teacher(self, name, truth, seqs, length):
        spec = self._graph.spec(name)
        got = tuple(truth.shape)
        if len(got) != len(spec.shape) + 2 or tuple(got[2:]) != spec.shape:
            raise ValueError(
                f"{self._label()}: ground truth for feedback '{name}' must have shape "
                f"(batch, time, {', '.join(map(str, spec.shape))}). Received shape {got}."
            )
        if isinstance(length, int) and got[1] is not None and got[1] != length:
            raise ValueError(
                f"{self._label()}: ground truth for feedback '{name}' has {got[1]} "
                f"steps, but the inputs have {length}. Give one value per step."
            )

    def _check_mask(self, mask, length, batch):
        if mask is None:
            return None
        want = (batch, length)
        got = tuple(mask.shape)
        if any(isinstance(w, int) and g is not None and w != g for w, g in zip(want, got)):
            raise ValueError(
                f"{self._label()}: the mask has shape {got}, but the inputs have batch "
                f"{batch} and {length} steps. Give one mask value per sample and step: "
                f"shape ({batch}, {length})."
            )
        return mask

    def _combine_mask(self, mask):
        if mask is None:
            return None
        masks = [m for m in keras.tree.flatten(mask) if m is not None]
        if not masks:
            return None
        combined = None
        for m in masks:
            m = ops.convert_to_tensor(m)
            if len(m.shape) != 2:
                raise ValueError(
                    f"{self._label()}: a mask has shape (batch, time). Received "
                    f"shape {tuple(m.shape)}."
                )
            m = ops.cast(m, "bool")
            combined = m if combined is None else ops.logical_and(combined, m)
        return combined

    # --------------------------------------------------------------- states
    def _initial_value(self, spec, batch):
        if spec.name in self._initial:
            w = ops.convert_to_tensor(self._initial[spec.name])
            return ops.broadcast_to(w[None], (batch,) + spec.shape)
        return ops.zeros((batch,) + spec.shape, spec.dtype)

    def _slots_from_value(self, spec, value, batch):
        value = ops.cast(ops.convert_to_tensor(value), spec.dtype)
        shape = tuple(value.shape)
        k = spec.delay
        if shape == spec.shape:
            return [ops.broadcast_to(value[None], (batch,) + spec.shape)] * k
        if (
            len(shape) > len(spec.shape)
            and isinstance(batch, int)
            and shape[0] is not None
            and shape[0] != batch
        ):
            raise ValueError(
                f"{self._label()}: initial_state['{spec.name}'] has a batch of "
                f"{shape[0]}, but the inputs have a batch of {batch}. Give one value per "
                f"sample, or an unbatched ({', '.join(map(str, spec.shape))}) shared by all."
            )
        if len(shape) == len(spec.shape) + 1 and shape[1:] == spec.shape:
            return [value] * k
        if k > 1 and len(shape) == len(spec.shape) + 2 and shape[1:] == (k,) + spec.shape:
            return [value[:, i] for i in range(k)]
        hist = (
            f", or (batch, {k}, {', '.join(map(str, spec.shape))}) for the history" if k > 1 else ""
        )
        raise ValueError(
            f"{self._label()}: initial_state['{spec.name}'] must have shape "
            f"(batch, {', '.join(map(str, spec.shape))}){hist}. Received shape {shape}."
        )

    def _initial_slots(self, batch, initial_state, tensors):
        overrides = dict(initial_state or {})
        unknown = [k for k in overrides if k not in self.feedback_names]
        if unknown:
            raise ValueError(
                f"{self._label()}: initial_state names '{unknown[0]}', which is not a "
                f"feedback of this model. Known: {self.feedback_names}."
            )
        stored = None
        if self.stateful and not _in_symbolic_scope():
            stored = self._stateful_slots(batch, tensors)
        slots = []
        for spec, r in zip(self._graph.specs, self._graph.slot_ranges):
            if spec.name in overrides:
                slots += self._slots_from_value(spec, overrides[spec.name], batch)
            elif stored is not None:
                slots += [ops.convert_to_tensor(v) for v in stored[r]]
            else:
                slots += [self._initial_value(spec, batch)] * spec.delay
        return slots

    def _stateful_slots(self, batch, tensors):
        store = self._store
        static = batch if isinstance(batch, int) else None
        if store.slots is None:
            if static is None or not _executing_eagerly(tensors[0]):
                raise ValueError(
                    f"{self._label()} is stateful and does not know its batch size yet. "
                    f"Call it once on a batch, use its own fit/predict/evaluate (they read "
                    f"the batch size from the data), or call reset_states(batch_size=B)."
                )
            self.reset_states(batch_size=static)
        elif static is not None and static != store.batch_size:
            raise ValueError(self._batch_error(static))
        if keras.backend.backend() != "tensorflow" and not _executing_eagerly(tensors[0]):
            # JAX's compiled functions cannot write the carried state back.
            raise ValueError(
                f"{self._label()}: carrying state through a compiled function (fit, "
                f"predict, evaluate) needs the TensorFlow backend. On "
                f"{keras.backend.backend()}, call the model directly on each chunk "
                f"(net(chunk)), which carries the state, or pass initial_state= at call."
            )
        return store.slots

    def _batch_error(self, received) -> str:
        return (
            f"{self._label()} is stateful with batch size {self._store.batch_size} "
            f"(from its first call), but received a batch of {received}. Feed batches "
            f"of {self._store.batch_size}, or call reset_states(batch_size={received}) "
            f"to start over with the new size."
        )

    def _slots_to_dict(self, slots, stack=ops.stack):
        out = {}
        for spec, r in zip(self._graph.specs, self._graph.slot_ranges):
            vals = slots[r]
            out[spec.name] = vals[0] if spec.delay == 1 else stack(vals, axis=1)
        return out

    def reset_states(self, batch_size: int | None = None):
        """Reset the stateful model's carried values to their initial values.

        Args:
            batch_size: the batch size to carry from now on (default: keep the
                current one). Needed before the first call only when the model
                is compiled inside another function.
        """
        if not self.stateful:
            raise ValueError(
                f"{self._label()} is not stateful: it starts every call from the "
                f"initial values. Build it with stateful=True to carry state."
            )
        store = self._store
        if batch_size is None:
            if store.slots is None:
                return
            batch_size = store.batch_size
        values = []
        for spec in self._graph.specs:
            values += [self._initial_value(spec, batch_size)] * spec.delay
        if store.slots is not None and store.batch_size == batch_size:
            for var, v in zip(store.slots, values):
                var.assign(v)
            return
        store.slots = [
            keras.Variable(v, trainable=False, name=f"state_{i}") for i, v in enumerate(values)
        ]
        store.batch_size = batch_size

    def get_states(self) -> dict:
        """The stateful model's carried values, `{feedback name: numpy array}`.

        Each is `(batch, *shape)`, or `(batch, delay, *shape)` (oldest first)
        for a delay above 1.
        """
        if not self.stateful or self._store.slots is None:
            raise ValueError(
                f"{self._label()} has no carried state"
                + ("" if self.stateful else " (it is not stateful)")
                + ": call it on a batch first."
            )
        values = [np.asarray(v.numpy()) for v in self._store.slots]
        return self._slots_to_dict(values, stack=np.stack)

    def set_states(self, states: dict):
        """Set carried values by name, as `get_states` returns them.

        Names left out keep their value. Before the first call, this also
        fixes the batch size.
        """
        if not self.stateful:
            raise ValueError(
                f"{self._label()} is not stateful; pass initial_state= at call instead."
            )
        unknown = [k for k in states if k not in self.feedback_names]
        if unknown:
            raise ValueError(
                f"{self._label()}: set_states names '{unknown[0]}', which is not a "
                f"feedback of this model. Known: {self.feedback_names}."
            )
        if not states:
            return
        batch = int(np.shape(next(iter(states.values())))[0])
        if self._store.slots is None:
            self.reset_states(batch_size=batch)
        elif batch != self._store.batch_size:
            raise ValueError(self._batch_error(batch))
        for spec, r in zip(self._graph.specs, self._graph.slot_ranges):
            if spec.name in states:
                value = np.asarray(states[spec.name])
                if value.ndim == len(spec.shape):
                    raise ValueError(
                        f"{self._label()}: set_states['{spec.name}'] needs a batch axis: "
                        f"shape (batch, {', '.join(map(str, spec.shape))})."
                    )
                new = self._slots_from_value(spec, value, self._store.batch_size)
                for var, v in zip(self._store.slots[r], new):
                    var.assign(v)

    # -------------------------------------------------- stateful batch sizes
    def _prepare_batches(self, x, batch_size, whole=False):
        """Fix (or check) a stateful model's batch size before Keras's loops."""
        if not self.stateful or x is None:
            return
        strategy = getattr(self, "distribute_strategy", None)
        replicas = getattr(strategy, "num_replicas_in_sync", 1)
        if replicas > 1:
            raise ValueError(
                f"{self._label()} is stateful, but its distribution strategy runs "
                f"{replicas} replicas, and the carried state is kept for one. Train a "
                f"stateless model under the strategy, or the stateful one on one device."
            )
        n, batched = self._first_dim(x)
        if n is None:
            return
        # Arrays are cut into batches of `batch_size`; a dataset comes batched.
        size = n if (whole or batched) else min(batch_size or _KERAS_DEFAULT_BATCH, n)
        if self._store.slots is None:
            self.reset_states(batch_size=size)
        if size != self._store.batch_size:
            raise ValueError(self._batch_error(size))
        if n % size:
            raise ValueError(
                f"{self._label()} is stateful with batch size {size}, but {n} samples "
                f"leave a last batch of {n % size}. Use a sample count divisible by "
                f"{size}."
            )

    @staticmethod
    def _first_dim(x):
        """(leading size of `x`, whether `x` is a batched dataset), or (None, _)."""
        try:
            import tensorflow as tf

            if isinstance(x, tf.data.Dataset):
                leaf = keras.tree.flatten(next(iter(x)))[0]
                return int(leaf.shape[0]), True
        except ImportError:
            pass
        leaves = keras.tree.flatten(x)
        if not leaves or not hasattr(leaves[0], "shape"):
            return None, False
        return int(leaves[0].shape[0]), False

    def fit(self, x=None, y=None, batch_size=None, *args, **kwargs):
        self._prepare_batches(x, batch_size)
        return super().fit(x, y, batch_size, *args, **kwargs)

    def predict(self, x, batch_size=None, *args, **kwargs):
        self._prepare_batches(x, batch_size)
        return super().predict(x, batch_size, *args, **kwargs)

    def evaluate(self, x=None, y=None, batch_size=None, *args, **kwargs):
        self._prepare_batches(x, batch_size)
        return super().evaluate(x, y, batch_size, *args, **kwargs)

    def train_on_batch(self, x, y=None, *args, **kwargs):
        self._prepare_batches(x, None, whole=True)
        return super().train_on_batch(x, y, *args, **kwargs)

    def test_on_batch(self, x, y=None, *args, **kwargs):
        self._prepare_batches(x, None, whole=True)
        return super().test_on_batch(x, y, *args, **kwargs)

    def predict_on_batch(self, x):
        self._prepare_batches(x, None, whole=True)
        return super().predict_on_batch(x)

    # ------------------------------------------------------------ generation
    def generate(self, inputs, steps: int, feed: dict, *, initial_state=None):
        """Run over `inputs`, then continue `steps` more steps in closed loop.

        Every per-step input must be fed: in the continuation, input `name`
        takes the previous step's value of output `feed[name]`.

        Args:
            inputs: the warm-up sequences (and constants), as for a call.
            steps: how many steps to generate after the inputs end.
            feed: `{input name: output name}` (output names as in
                `graph.output_names`, or an output's index).
            initial_state: as for a call.

        Returns:
            The generated outputs, `(batch, steps, ...)` each, packed like the
            model's outputs, as numpy arrays.
        """
        g = self._graph
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(
                f"{self._label()}: generate needs steps >= 1. Received: steps={steps!r}"
            )
        out_names = g.output_names
        feed_idx = {}
        for inp, out in dict(feed).items():
            if inp not in g.input_names:
                raise ValueError(
                    f"{self._label()}: feed names input '{inp}', which is not a per-step "
                    f"input. Per-step inputs: {g.input_names}."
                )
            if isinstance(out, int):
                j = out
            elif out in out_names:
                j = out_names.index(out)
            else:
                raise ValueError(
                    f"{self._label()}: feed maps '{inp}' to output '{out}', which is not "
                    f"an output. Outputs: {out_names}."
                )
            i = g.input_names.index(inp)
            want = tuple(self.step_model.inputs[i].shape[1:])
            have = tuple(self.step_model.outputs[j].shape[1:])
            if want != have:
                raise ValueError(
                    f"{self._label()}: feed maps output '{out_names[j]}' of shape {have} "
                    f"to input '{inp}' of shape {want}; the shapes must match."
                )
            feed_idx[i] = j
        unfed = [n for i, n in enumerate(g.input_names) if i not in feed_idx]
        if unfed:
            raise ValueError(
                f"{self._label()}: in closed loop every per-step input needs a source, "
                f"but {unfed} is not in `feed`. Map it to an output: feed={{'{unfed[0]}': ...}}."
            )
        seqs, consts, teachers = self._unpack(inputs)
        length, batch = self._length_and_batch(seqs, consts, None)
        slots = self._initial_slots(batch, initial_state, seqs + consts)

        run = self._compiled_run() if _compile_eager_calls((seqs + consts)[0]) else self._run
        _, last, final = run(
            seqs, consts, teachers, None, slots, None if seqs else length, training=False
        )
        with self._closed_loop():
            outs, _, _ = run(
                [],
                consts,
                {},
                None,
                final,
                steps,
                training=False,
                feed=feed_idx,
                feed_init=last,
                sequences=True,
            )
        return pack([ops.convert_to_numpy(o) for o in outs], g.output_structure)

    def _closed_loop(self):
        """A context for the closed-loop part of `generate` (subclasses switch
        layers there, such as a variational model sampling from its prior)."""
        return contextlib.nullcontext()

    # -------------------------------------------------------------- keras API
    def save(self, filepath, overwrite=True, zipped=None, **kwargs):
        """`keras.Model.save`, atomic for a local `.keras` file.

        The archive is written to a temporary file in the same directory and
        moved over `filepath` only when complete: a save that fails halfway
        leaves an existing file untouched.
        """
        from fbexplorer.saving import save_atomically

        return save_atomically(super().save, filepath, overwrite=overwrite, zipped=zipped, **kwargs)

    def summary(self, *args, **kwargs):
        """The step model's layers (one timestep), then the delayed edges."""
        self.step_model.summary(*args, **kwargs)
        (kwargs.get("print_fn") or print)(self._graph.describe())

    def compute_mask(self, inputs, mask=None):
        if mask is None or not self.return_sequences:
            return None
        combined = self._combine_mask(mask)
        n = self._graph.n_outputs
        masks = pack([combined] * n, self._graph.output_structure)
        if self.return_state:
            return masks, {name: None for name in self.feedback_names}
        return masks

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "step_graph": self._graph.get_config(),
            "return_sequences": self.return_sequences,
            "return_state": self.return_state,
            "stateful": self.stateful,
            "go_backwards": self.go_backwards,
            "unroll": self.unroll,
            "teacher_forcing": self.teacher_forcing,
            "steps": self.steps,
            "hoist": self.hoist,
            "loop_jit": self.loop_jit,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
