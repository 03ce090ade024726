"""A FeedbackModel's step as a Keras RNN cell, to nest it in another step graph."""

from __future__ import annotations

import keras

__all__ = ["StepCell"]

# The most delay slots a nested model may have: each is a state of the outer loop.
MAX_SLOTS = 10_000


@keras.saving.register_keras_serializable(package="fbexplorer")
class StepCell(keras.layers.Layer):
    """One step of a `FeedbackModel`, following the Keras cell protocol.

    `fbx.cell(inner_model)(x)` wraps the model in this cell, so a whole
    feedback network can be one block of a larger one: its delayed values
    become the cell's states and ride in the outer loop. Only the step is
    used: the inner model's `stateful`, `go_backwards` and masking settings do
    not apply, and its delayed values start from zeros.

    Args:
        model: a `FeedbackModel` whose delayed edges all start from zeros.

    Call arguments:
        inputs: the inner model's per-step inputs, then its constants: a
            tensor, or a list in that order.
        states: one tensor per delay slot (a delay of k has k slots, oldest
            first), as listed in `state_names`.
    """

    def __init__(self, model, **kwargs):
        if isinstance(model, dict):
            model = keras.saving.deserialize_keras_object(model)
        kwargs.setdefault("name", model.name)
        super().__init__(**kwargs)
        graph = model.graph
        starts = [
            s.name for s in graph.specs if not (isinstance(s.initial, str) and s.initial == "zeros")
        ]
        if starts:
            raise ValueError(
                f"fbx.cell('{model.name}'): delayed edges {starts} have initial values "
                f"other than zeros, which a nested step cannot carry over. Build the "
                f"inner model with initial='zeros' for them."
            )
        slots = sum(s.delay for s in graph.specs)
        if slots > MAX_SLOTS:  # one state per slot: a delay of 1e9 would be 1e9 states
            raise ValueError(
                f"fbx.cell('{model.name}'): a nested model carries each delay slot as a "
                f"state of its own, and its delays add up to {slots} slots, above "
                f"{MAX_SLOTS}. Give the nested model shorter delays, or run it as a model "
                f"of its own, whose loop holds a delay of any length."
            )
        self.model = model
        self._graph = graph
        self.state_size = [s.shape for s in graph.specs for _ in range(s.delay)]
        self.state_names = [
            s.name if s.delay == 1 else f"{s.name}@{j}" for s in graph.specs for j in range(s.delay)
        ]
        self.built = True

    def call(self, inputs, states, training=None):
        graph = self._graph
        inputs = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        expected = len(graph.input_names) + len(graph.constant_names)
        if len(inputs) != expected:
            raise ValueError(
                f"Nested model '{self.model.name}' takes {expected} inputs per step "
                f"{graph.input_names + graph.constant_names}. Received {len(inputs)}."
            )
        states = list(states)
        outs = self.model.step_model(inputs + graph.oldest(states), training=training)
        outs = list(outs) if isinstance(outs, (list, tuple)) else [outs]
        ys, sources = outs[: graph.n_outputs], outs[graph.n_outputs :]
        output = ys[0] if len(ys) == 1 else ys
        return output, graph.shift(states, sources)

    def get_config(self):
        return {
            **super().get_config(),
            "model": keras.saving.serialize_keras_object(self.model),
        }
