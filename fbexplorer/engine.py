"""FeedbackModel: a step graph run over time in one compiled loop.

The class is the public face; each concern lives in its own module:

- `_call_inputs`: parsing and checking a call's inputs;
- `_run`: one run of the step over a sequence (the loop body and carry);
- `_loop`: the backend's compiled loop primitive;
- `_hoist`: the parts of the step computed once, outside the loop;
- `_carried_state`: the delayed values' histories, the stateful store,
  `reset_states` / `get_states` / `set_states`;
- `_generation`: closed-loop generation.
"""

from __future__ import annotations

import contextlib

import keras

from fbexplorer import _carried_state, _generation, _run
from fbexplorer._call_inputs import combine_mask, output_shape, parse_call
from fbexplorer._checks import check_options
from fbexplorer._fit_loops import CheckedLoops
from fbexplorer._saved_config import check_model_config, saved_label
from fbexplorer.graph import StepGraph, pack

__all__ = ["FeedbackModel"]


class _Holder:
    """Keeps a layer out of Keras's tracking (a cell that owns this model)."""

    def __init__(self, value):
        self.value = value


@keras.saving.register_keras_serializable(package="fbexplorer")
class FeedbackModel(CheckedLoops, keras.Model):
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
            Read-outs that feed no delayed edge and no cell state run once
            after the loop, over all timesteps (with `return_sequences`).
            `"auto"` (default): the constants' part always, the per-step part
            only where it does not widen what the loop reads per step (an
            input projection to an LSTM's 4 * units gates does, and measured
            slower), the read-outs only for a loop under XLA (`loop_jit`) and
            where the loop emits no more numbers per step for them than they
            output. `False`: the plain loop. The results are those of the
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
            overhead dominates (a 3 x Dense(8) net trains and infers faster
            under XLA); an LSTM-sized step stays without (XLA measured
            slower; the figures are in docs/performance.md). `True`: always; `False`:
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

    Like a functional model, `layers` lists the step graph's layers and
    `get_layer(name)` finds them; `output_names` are the output layers' names
    (or the dict keys), for losses and metrics by name.
    `keras.layers.Bidirectional(net)` wraps a single-output model.

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
            step_graph = StepGraph.from_config(step_graph, label=self._label())
        options = check_options(
            self._label(),
            dict(
                return_sequences=return_sequences,
                return_state=return_state,
                stateful=stateful,
                go_backwards=go_backwards,
                unroll=unroll,
                teacher_forcing=teacher_forcing,
                steps=steps,
                hoist=hoist,
                loop_jit=loop_jit,
            ),
        )
        self._graph = step_graph
        self.step_model = step_graph.model
        for option, value in options.items():  # return_sequences ... loop_jit
            setattr(self, option, value)
        self._initial = _carried_state.add_initial_weights(self, step_graph.specs)
        self._seed_generator = keras.random.SeedGenerator(name="teacher_forcing_seed")
        self._store = _carried_state.StateStore()
        self._plans = _Holder({})  # id(model) -> (model, its HoistPlan)
        self._per_step = None  # hoist per-step work too; decided on the step model
        self._tf_run = None
        self._cell = None
        # As a functional model's: the output layers' names, or the dict keys,
        # so that compile/fit take losses, metrics and targets by output name.
        self.output_names = list(step_graph.output_names)
        self._saving_walk = False
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

    @property
    def layers(self) -> list:
        """The step graph's layers, in the order of a functional model's
        `layers` (its `keras.Input`s and `Feedback` placeholders included), so
        `get_layer(name)` finds any of them."""
        if self._saving_walk:
            # Keras's saving walks `layers` right after this model's own
            # variables: there it sees the step model, as files have always
            # stored it (`layers/functional/...`), so files saved before load.
            self._saving_walk = False
            return [self.step_model]
        return self.step_model.layers

    def save_own_variables(self, store):
        super().save_own_variables(store)
        self._saving_walk = True

    def load_own_variables(self, store):
        super().load_own_variables(store)
        self._saving_walk = True

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
        c = parse_call(self, inputs, mask, steps)
        if self.return_state:  # before the run: the whole histories it would return
            _carried_state.check_returned_states(self, c.batch)
        tensors = c.seqs + c.consts
        start = _carried_state.call_histories(self, c.batch, initial_state, tensors, c.length)
        run = _run.runner(self, (c.seqs + c.consts)[0])
        # With sequences, the run reads the length from them (inside a compiled
        # function, so that a new length needs no new trace).
        run_length = None if c.seqs else c.length
        outputs, last, final = run(
            c.seqs, c.consts, c.teachers, c.mask, start, run_length, training=training
        )
        _carried_state.keep(self, final)
        result = pack(outputs if self.return_sequences else last, self._graph.output_structure)
        if self.return_state:
            return result, _carried_state.histories_to_dict(self, final)
        return result

    def _run(self, *args, **kwargs):
        """`fbexplorer._run.run` for this model (see there)."""
        return _run.run(self, *args, **kwargs)

    def _hoist_plan(self, model=None):
        """The hoisting plan of the step model (or of a probe on its inputs),
        None when hoisting is off or nothing can be hoisted."""
        return _run.hoist_plan(self, model)

    def _initial_slots(self, batch, initial_state, tensors):
        """The starting histories of a call (see `_carried_state`)."""
        return _carried_state.call_histories(self, batch, initial_state, tensors)

    # --------------------------------------------------------------- states
    def reset_states(self, batch_size: int | None = None):
        """Reset the stateful model's carried values to their initial values.

        Args:
            batch_size: the batch size to carry from now on (default: keep the
                current one). Needed before the first call only when the model
                is compiled inside another function.
        """
        _carried_state.reset_states(self, batch_size)

    def get_states(self) -> dict:
        """The stateful model's carried values, `{feedback name: numpy array}`.

        Each is `(batch, *shape)`, or `(batch, delay, *shape)` (oldest first)
        for a delay above 1.
        """
        return _carried_state.get_states(self)

    def set_states(self, states: dict):
        """Set carried values by name, as `get_states` returns them.

        Names left out keep their value. Before the first call, this also
        fixes the batch size.
        """
        _carried_state.set_states(self, states)

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
        return _generation.generate(self, inputs, steps, feed, initial_state)

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

    def compute_output_shape(self, input_shape):
        """Output shapes from the inputs' `(batch, time, ...)` (needed by
        wrappers such as `keras.layers.Bidirectional` on symbolic inputs)."""
        return output_shape(self, input_shape)

    @property
    def variables(self):
        """Every variable of the model, as for any Keras layer; on JAX, a
        stateful model's carried histories too.

        Keras's JAX `fit`, `predict` and `evaluate` carry from batch to batch,
        and write back, exactly the `non_trainable_variables`: that is how
        the carried state crosses their compiled functions. The histories are
        not `weights` (they are neither saved nor loaded), as a Keras
        `SeedGenerator`'s state is not.
        """
        return super().variables + _carried_state.threaded_variables(self)

    @property
    def states(self):
        """A stateful model's carried histories (variables), else None, as
        Keras's RNN layers have it (wrappers such as `Bidirectional` read it)."""
        if not self.stateful or self._store.histories is None:
            return None
        return list(self._store.histories)

    def compute_mask(self, inputs, mask=None):
        if mask is None or not self.return_sequences:
            return None
        combined = combine_mask(self, mask)
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
        """The model from `get_config`'s dict, checked like user input (a
        `.keras` file may have been edited): a bad setting raises one
        ValueError that names the saved model (and the file, under
        `fbx.load_model`), as the same setting would in code."""
        label = saved_label(cls.__name__, config.get("name") if isinstance(config, dict) else None)
        config = {**config, **check_model_config(config, label)}
        if "step_graph" in config:
            config["step_graph"] = StepGraph.from_config(config["step_graph"], label=label)
        try:
            return cls(**config)
        except ValueError as err:
            raise ValueError(f"{label}: {err}") from err
