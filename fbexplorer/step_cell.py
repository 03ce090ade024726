"""A FeedbackModel's step as a Keras RNN cell, to nest it in another step graph."""

from __future__ import annotations

import keras

from fbexplorer._checks import short_repr

__all__ = ["MAX_NESTED_SLOTS", "StepCell"]

# A nested model's delay of k is k states of the cell, each a tensor in the
# outer loop's carry, so building and tracing the cell cost time and memory in
# k (a delay of 1,000 measured 4 s to build and 36 s to the first call, on a
# shared 2-core AMD EPYC). Above this many slots in all, `StepCell` refuses, so
# that an edited file cannot hang the load.
MAX_NESTED_SLOTS = 1000


def _check_slots(model) -> None:
    graph = model.graph
    if graph.n_slots > MAX_NESTED_SLOTS:
        delays = {s.name: s.delay for s in graph.specs if s.delay > 1}
        raise ValueError(
            f"fbx.cell('{model.name}'): a nested model carries each step of its delays as "
            f"one state of the cell, at most {MAX_NESTED_SLOTS} in all, but its delays "
            f"{short_repr(delays)} need {graph.n_slots}. Give the long delay to the outer "
            f"model (fbx.delayed or fbx.Feedback there), or shorten it."
        )


@keras.saving.register_keras_serializable(package="fbexplorer")
class StepCell(keras.layers.Layer):
    """One step of a `FeedbackModel`, following the Keras cell protocol.

    `fbx.cell(inner_model)(x)` wraps the model in this cell, so a whole
    feedback network can be one block of a larger one: its delayed values
    become the cell's states and ride in the outer loop. Only the step is
    used: the inner model's `stateful`, `go_backwards` and masking settings do
    not apply, and its delayed values start from zeros.

    Args:
        model: a `FeedbackModel` whose delayed edges all start from zeros, and
            whose delays add up to at most `MAX_NESTED_SLOTS` steps.

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
        _check_slots(model)
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

    @classmethod
    def from_config(cls, config):
        """As Keras's, but the nested model is rebuilt and checked first, so
        that an invalid saved model raises its own one-line ValueError (Keras's
        `from_config` turns any error of the constructor into a TypeError that
        quotes the whole config)."""
        config = dict(config)
        if isinstance(config.get("model"), dict):
            config["model"] = keras.saving.deserialize_keras_object(config["model"])
        if hasattr(config.get("model"), "graph"):
            _check_slots(config["model"])
        return super().from_config(config)
