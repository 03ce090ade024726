"""The step graph: one timestep as a Keras functional model, plus delayed edges.

A feedback network is a *step graph* (the computation of one timestep, built
with ordinary Keras layers) and a set of *delayed edges*: "this placeholder, at
step t, holds the value that source tensor had at step t - k". This module
creates the placeholders (`Feedback`, `delayed`, `cell`), finds them in a
graph, checks the bindings, and packs everything into a `StepGraph` that the
engine runs in its time loop.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import keras

from fbexplorer import _keras, _saved_config
from fbexplorer._checks import check_delay, check_edge, check_source, input_layer_name
from fbexplorer._renamed import renamed_keyword

__all__ = [
    "Feedback",
    "FeedbackSpec",
    "StepGraph",
    "cell",
    "cell_state_shapes",
    "delayed",
    "pack",
]

_uid = itertools.count(1)
_used_names: set = set()  # default names given by `delayed`, kept unique


@dataclasses.dataclass
class FeedbackSpec:
    """One delayed edge: a placeholder and what it is bound to.

    Attributes:
        name: the public name (`"loop"`, `"lstm/h"`), used in `feedback=`,
            `initial_state=`, `get_states()` and teacher forcing.
        shape: the per-sample shape (no batch axis).
        dtype: the placeholder's dtype.
        delay: the source's value from `delay` steps ago is fed.
        initial: `"zeros"`, `"learned"`, or a Keras initializer.
        kind: `"feedback"` (bound by the user), `"delayed"` (from
            `fbx.delayed`) or `"cell"` (the state of a Keras RNN cell).
        cell: for `kind == "cell"`, the name of the cell layer.
    """

    name: str
    shape: tuple
    dtype: str
    delay: int = 1
    initial: Any = "zeros"
    kind: str = "feedback"
    cell: str | None = None

    def config(self) -> dict:
        initial = self.initial
        if not isinstance(initial, str):
            initial = keras.saving.serialize_keras_object(initial)
        return {
            "name": self.name,
            "delay": self.delay,
            "initial": initial,
            "kind": self.kind,
            "cell": self.cell,
        }


def _make_placeholder(name, shape, *, delay, initial, dtype, kind, cell_name=None, source=None):
    name, delay, shape, initial = check_edge(name, delay, shape, initial, kind)
    tensor = keras.Input(shape, name=input_layer_name(name), dtype=dtype)
    spec = FeedbackSpec(
        name=name,
        shape=shape,
        dtype=tensor.dtype,
        delay=delay,
        initial=initial,
        kind=kind,
        cell=cell_name,
    )
    layer = _keras.operation_of(tensor)
    layer._fbx_spec = spec
    layer._fbx_source = source
    return tensor


def Feedback(shape, *, name: str, delay: int = 1, initial="zeros", dtype=None):
    """A placeholder for a value fed back from later in the step graph.

    Use it like `keras.Input`: any Keras layer or `keras.ops` call accepts it.
    Bind it to its source in `FeedbackModel(..., feedback={name: source})`;
    at step `t` it then holds the source's value from step `t - delay` (the
    initial value for the first `delay` steps).

    Args:
        shape: per-sample shape, without batch or time axis, e.g. `(5,)`
            (an int `n` means `(n,)`).
        name: the feedback's name, unique in its model.
        delay: how many steps back the value comes from (>= 1).
        initial: `"zeros"`, `"learned"` (a trainable initial value) or any
            Keras initializer (a fixed initial value drawn once).
        dtype: the dtype (default: Keras's float type).

    Example:
        >>> loop = Feedback((5,), name="loop")
    """
    return _make_placeholder(
        name, shape, delay=delay, initial=initial, dtype=dtype, kind="feedback"
    )


@renamed_keyword("steps", "delay", "fbx.delayed")
def delayed(tensor, *, delay: int = 1, name: str | None = None, initial="zeros"):
    """The value `tensor` had `delay` timesteps ago (a forward-path delay).

    The delayed edge is bound automatically; nothing goes into `feedback=`.

    Args:
        tensor: a symbolic tensor of the step graph.
        delay: the delay in timesteps (>= 1). `steps=`, its old name, still
            works, with a DeprecationWarning.
        name: the edge's name (default: `"<layer>_delay<delay>"`).
        initial: the value before the first `delay` steps, as for `Feedback`.
    """
    if not _keras.has_history(tensor):
        raise ValueError(
            "fbx.delayed expects a symbolic tensor of the step graph (the output "
            f"of a Keras layer or keras.Input). Received: {tensor!r}"
        )
    delay = check_delay("fbx.delayed", delay)
    if name is None:
        base = f"{_keras.operation_of(tensor).name}_delay{delay}"
        name = base if base not in _used_names else f"{base}_{next(_uid)}"
    _used_names.add(name)
    return _make_placeholder(
        name,
        tensor.shape[1:],
        delay=delay,
        initial=initial,
        dtype=tensor.dtype,
        kind="delayed",
        source=tensor,
    )


def _state_structure(size):
    """Keras's `state_size` as nested lists whose leaves are shapes.

    An int is one state; a list (or a top-level tuple) holds one entry per
    state, or, nested, per sub-cell (StackedRNNCells); a tuple or TensorShape
    below the top level is one state's shape.
    """
    if isinstance(size, int):
        return (size,)
    if isinstance(size, list):
        return [_state_structure(s) for s in size]
    return tuple(size)


def cell_state_shapes(layer) -> tuple[list, list]:
    """(the flat list of state shapes, the nested structure to call with)."""
    size = layer.state_size
    structure = (
        [_state_structure(s) for s in size]
        if isinstance(size, (list, tuple))
        else [_state_structure(size)]
    )
    flat = []

    def walk(node):
        if isinstance(node, list):
            for n in node:
                walk(n)
        else:
            flat.append(node)

    walk(structure)
    return flat, structure


def _pack_states(structure, flat):
    it = iter(flat)

    def build(node):
        return [build(n) for n in node] if isinstance(node, list) else next(it)

    return build(structure)


def _state_names(layer, n: int) -> tuple:
    if getattr(layer, "state_names", None):
        return tuple(layer.state_names)
    if n == 1:
        return ("h",)
    if isinstance(layer, keras.layers.LSTMCell):
        return ("h", "c")
    return tuple(f"state{i}" for i in range(n))


def cell(layer, *, initial="zeros", state_names=None):
    """Use a Keras RNN cell inside the step graph; its states ride in the loop.

    `fbx.cell(keras.layers.LSTMCell(8, name="lstm"))(x)` returns the cell's
    output for this step. Its states (`lstm/h`, `lstm/c`) become delayed
    edges of delay 1 that the engine carries, resets, saves and traces; you
    declare none of them.

    Args:
        layer: a cell of the Keras protocol: `call(inputs, states)` returning
            `(output, new_states)`, and a `state_size` attribute; or a
            `FeedbackModel`, whose step then runs as one block of this graph
            (see `StepCell`).
        initial: the initial value of every state, as for `Feedback`. With
            the default `"zeros"`, a cell that defines `get_initial_state`
            starts from what that returns (as in `keras.layers.RNN`; zeros
            for Keras's own cells).
        state_names: names of the states (default: `h` for one state, `h, c`
            for an LSTMCell, else `state0, state1, ...`).

    Returns:
        A function of the cell's input tensor (and call keywords) that
        returns the cell's output tensor.
    """
    if hasattr(layer, "as_cell"):  # a FeedbackModel nested in a larger loop
        layer = layer.as_cell()
    if not hasattr(layer, "state_size") or not callable(layer):
        raise ValueError(
            "fbx.cell expects a Keras RNN cell (a layer with `state_size` and "
            f"`call(inputs, states)`, such as keras.layers.LSTMCell). Received: {layer!r}"
        )

    def apply(inputs, **kwargs):
        shapes, structure = cell_state_shapes(layer)
        unknown = [s for s in shapes if any(not isinstance(d, int) or d < 1 for d in s)]
        if unknown:
            raise ValueError(
                f"fbx.cell('{layer.name}'): the engine carries each state of a cell as "
                f"a tensor of fixed shape, read from the cell's `state_size`, but "
                f"{type(layer).__name__} declares state_size={layer.state_size!r} "
                f"(a state shape it decides only while running, as ConvLSTMCell does). "
                f"Use a cell with a fixed state_size, or write the recurrence with "
                f"fbx.Feedback placeholders of the state's shape."
            )
        names = tuple(state_names) if state_names else _state_names(layer, len(shapes))
        if len(names) != len(shapes):
            raise ValueError(
                f"fbx.cell('{layer.name}'): the cell has {len(shapes)} states, but "
                f"state_names gives {len(names)}: {list(names)}."
            )
        calls = getattr(layer, "_fbx_calls", 0)
        layer._fbx_calls = calls + 1
        prefix = layer.name if calls == 0 else f"{layer.name}_{calls}"
        dtype = keras.backend.standardize_dtype(layer.compute_dtype)
        states = [
            _make_placeholder(
                f"{prefix}/{n}",
                shape,
                delay=1,
                initial=initial,
                dtype=dtype,
                kind="cell",
                cell_name=layer.name,
            )
            for n, shape in zip(names, shapes)
        ]
        output, new_states = layer(inputs, _pack_states(structure, states), **kwargs)
        new_states = keras.tree.flatten(new_states)
        for placeholder, new in zip(states, new_states):
            _keras.operation_of(placeholder)._fbx_source = new
        return output

    return apply


def _spec_of(layer) -> FeedbackSpec | None:
    return getattr(layer, "_fbx_spec", None)


def _is_input_tensor(tensor) -> bool:
    if not _keras.has_history(tensor):
        return False
    return _keras.operation_of(tensor) is not None and _keras.producer(tensor).is_input


def _tensor_name(tensor) -> str:
    return _keras.operation_of(tensor).name


def _reached_inputs(tensors) -> list:
    """The Input layers that `tensors` depend on, in a deterministic order."""
    found, seen_nodes = [], set()
    stack = list(reversed(tensors))
    while stack:
        tensor = stack.pop()
        op, node = _keras.operation_of(tensor), _keras.producer(tensor)
        if id(node) in seen_nodes:
            continue
        seen_nodes.add(id(node))
        if node.is_input:
            found.append(op)
        else:
            stack.extend(reversed(node.input_tensors))
    return found


def _check_given(label, flat_inputs, flat_consts, feedback) -> None:
    """Inputs and constants are `keras.Input`s (not placeholders); each
    `feedback` source is a symbolic tensor."""
    for kind, group in (("inputs", flat_inputs), ("constants", flat_consts)):
        for t in group:
            if not _is_input_tensor(t):
                raise ValueError(
                    f"{label}: every entry of `{kind}` must be a keras.Input. Received: {t!r}"
                )
            if _spec_of(_keras.operation_of(t)) is not None:
                raise ValueError(
                    f"{label}: Feedback '{_spec_of(_keras.operation_of(t)).name}' "
                    f"is listed in `{kind}`. Feedback placeholders are bound with "
                    f"feedback={{name: source}}, not passed as {kind}."
                )
    for key, src in feedback.items():
        if not _keras.has_history(src):
            raise ValueError(
                f"{label}: feedback '{key}' must be bound to a symbolic tensor of "
                f"the step graph. Received: {src!r}"
            )


def _walk_placeholders(flat_outputs, feedback):
    """The input layers the outputs and sources reach: `(placeholders,
    plain keras.Inputs, {name: source} of the automatically bound edges)`.

    The sources of automatically bound edges may reach further placeholders,
    so the walk repeats until nothing new appears.
    """
    placeholders, plain_inputs, sources = [], [], {}
    frontier = list(flat_outputs) + list(feedback.values())
    seen_layers = set()
    while frontier:
        reached = _reached_inputs(frontier)
        frontier = []
        for layer in reached:
            if id(layer) in seen_layers:
                continue
            seen_layers.add(id(layer))
            spec = _spec_of(layer)
            if spec is None:
                plain_inputs.append(layer)
                continue
            placeholders.append(layer)
            if spec.kind != "feedback":
                src = layer._fbx_source
                sources[spec.name] = src
                frontier.append(src)
    return placeholders, plain_inputs, sources


def _placeholders_by_name(label, placeholders) -> dict:
    """`{edge name: placeholder layer}`, refusing two of one name."""
    by_name = {}
    for layer in placeholders:
        spec = _spec_of(layer)
        if spec.name in by_name:
            raise ValueError(
                f"{label}: two Feedback placeholders are named '{spec.name}'. "
                f"Give each a unique name."
            )
        by_name[spec.name] = layer
    return by_name


def _bind(label, feedback, by_name, sources) -> None:
    """Each name in `feedback` names a used `Feedback`, each used `Feedback`
    is in it; adds their sources to `sources` and checks every source's
    shape and dtype against its placeholder."""
    for key in feedback:
        if key not in by_name:
            used = sorted(n for n, lay in by_name.items() if _spec_of(lay).kind == "feedback")
            raise ValueError(
                f"{label}: feedback names '{key}', but no Feedback placeholder of "
                f"that name is used by the step graph. Placeholders used: {used}. "
                f"Fix the name, or use fbx.Feedback(..., name='{key}') in the graph."
            )
        if _spec_of(by_name[key]).kind != "feedback":
            raise ValueError(
                f"{label}: '{key}' is bound automatically (it comes from "
                f"fbx.{_spec_of(by_name[key]).kind}); remove it from `feedback`."
            )
    for n, layer in by_name.items():
        spec = _spec_of(layer)
        if spec.kind == "feedback":
            if n not in feedback:
                raise ValueError(
                    f"{label}: Feedback '{n}' is used by the step graph but not "
                    f"bound. Add feedback={{'{n}': <source tensor>}} to say which "
                    f"tensor it feeds back."
                )
            sources[n] = feedback[n]
        check_source(label, n, spec.shape, spec.dtype, sources[n])


def _check_plain_inputs(label, plain_inputs, given) -> None:
    """Every `keras.Input` the graph uses is among the inputs or constants."""
    known = {id(_keras.operation_of(t)) for t in given}
    for layer in plain_inputs:
        if id(layer) not in known:
            raise ValueError(
                f"{label}: the step graph uses keras.Input '{layer.name}', which is "
                f"in neither `inputs` (a sequence, one value per step) nor "
                f"`constants` (the same value at every step). Add it to one of them."
            )


def _flatten_io(value, what: str):
    """(flat list, structure) for a single tensor, a list or a dict of tensors."""
    if isinstance(value, dict):
        return list(value.values()), {"kind": "dict", "keys": list(value.keys())}
    if isinstance(value, (list, tuple)):
        return list(value), {"kind": "list", "n": len(value)}
    if value is None:
        return [], {"kind": "list", "n": 0}
    return [value], {"kind": "single"}


def pack(flat, structure):
    """Inverse of `_flatten_io`."""
    kind = structure["kind"]
    if kind == "dict":
        return dict(zip(structure["keys"], flat))
    if kind == "list":
        return list(flat)
    return flat[0]


class StepGraph:
    """The step graph of a feedback model, ready for the engine.

    Attributes:
        model: a functional `keras.Model` for one timestep. Its inputs are the
            per-step inputs, then the constants, then one placeholder per
            delayed edge; its outputs are the user's outputs, then one source
            per delayed edge.
        input_names, constant_names: names of the per-step inputs and constants.
        output_structure: how the user's outputs are packed.
        specs: the delayed edges, in the order of the model's placeholders.
    """

    def __init__(self, model, input_names, constant_names, output_structure, specs):
        self.model = model
        self.input_names = list(input_names)
        self.constant_names = list(constant_names)
        self.output_structure = output_structure
        self.specs = list(specs)

    @property
    def n_outputs(self) -> int:
        return len(self.model.outputs) - len(self.specs)

    @property
    def output_names(self) -> list[str]:
        if self.output_structure["kind"] == "dict":
            return [str(k) for k in self.output_structure["keys"]]
        return [_tensor_name(t) for t in self.model.outputs[: self.n_outputs]]

    @property
    def slot_ranges(self) -> list[slice]:
        """Where each edge's slots lie in the flat list of loop slots.

        An edge of delay k has k slots, oldest first: the step reads the
        oldest, and the new source value is appended after the loop step.
        """
        ranges, start = [], 0
        for spec in self.specs:
            ranges.append(slice(start, start + spec.delay))
            start += spec.delay
        return ranges

    @property
    def n_slots(self) -> int:
        return sum(spec.delay for spec in self.specs)

    def oldest(self, slots) -> list:
        """The value each placeholder receives at this step."""
        return [slots[r.start] for r in self.slot_ranges]

    def shift(self, slots, new_values) -> list:
        """The slots after one step: each edge drops its oldest value and
        appends its new source value."""
        out = []
        for r, new in zip(self.slot_ranges, new_values):
            out += list(slots[r.start + 1 : r.stop]) + [new]
        return out

    @property
    def source_names(self) -> list[str]:
        """The name of the layer producing each delayed edge's source."""
        return [_tensor_name(t) for t in self.model.outputs[self.n_outputs :]]

    def describe(self) -> str:
        """One line per delayed edge: name, source, delay, shape, initial value."""
        lines = [f"Delayed edges ({len(self.specs)}):"]
        for spec, src in zip(self.specs, self.source_names):
            initial = spec.initial if isinstance(spec.initial, str) else type(spec.initial).__name__
            lines.append(
                f"  {spec.name} <- {src} at t-{spec.delay}, shape {spec.shape}, "
                f"initial {initial} ({spec.kind})"
            )
        return "\n".join(lines)

    def spec(self, name: str) -> FeedbackSpec:
        for s in self.specs:
            if s.name == name:
                return s
        raise KeyError(name)

    # ------------------------------------------------------------------ build
    @classmethod
    def from_tensors(cls, inputs, outputs, feedback, constants=None, name=None):
        """The step graph of the tensors a `FeedbackModel` is built from, each
        checked: the inputs and constants (`keras.Input`s), every placeholder
        the outputs reach bound once, every `keras.Input` used listed."""
        label = f"FeedbackModel '{name}'" if name else "FeedbackModel"
        flat_inputs, _ = _flatten_io(inputs, "inputs")
        flat_consts, _ = _flatten_io(constants, "constants")
        flat_outputs, out_structure = _flatten_io(outputs, "outputs")
        if not flat_outputs:
            raise ValueError(f"{label}: `outputs` is empty. Pass the tensor(s) to return.")
        feedback = dict(feedback or {})
        _check_given(label, flat_inputs, flat_consts, feedback)
        placeholders, plain_inputs, sources = _walk_placeholders(flat_outputs, feedback)
        by_name = _placeholders_by_name(label, placeholders)
        _bind(label, feedback, by_name, sources)
        _check_plain_inputs(label, plain_inputs, flat_inputs + flat_consts)
        # Order: explicitly bound edges in `feedback` order, then the rest as found.
        order = [n for n in feedback] + [n for n in by_name if n not in feedback]
        specs = [_spec_of(by_name[n]) for n in order]
        ph_tensors = [by_name[n].output for n in order]
        model = keras.Model(
            inputs=flat_inputs + flat_consts + ph_tensors,
            outputs=flat_outputs + [sources[n] for n in order],
            name=f"{name}_step" if name else None,
        )
        return cls(
            model,
            [_keras.operation_of(t).name for t in flat_inputs],
            [_keras.operation_of(t).name for t in flat_consts],
            out_structure,
            specs,
        )

    # ---------------------------------------------------------- serialization
    def get_config(self) -> dict:
        return {
            "model": keras.saving.serialize_keras_object(self.model),
            "inputs": self.input_names,
            "constants": self.constant_names,
            "outputs": self.output_structure,
            "feedback": [s.config() for s in self.specs],
        }

    @classmethod
    def from_config(cls, config, label: str = "The saved step graph") -> StepGraph:
        """The step graph from `get_config`'s dict, checked like user input
        (the dict may come from an edited file): a delay that is no whole
        number >= 1, an unknown kind, names that do not match the step model
        and the like raise a ValueError that starts with `label`."""
        _saved_config.check_graph_config(config, label)
        model = _saved_config.rebuild_step_model(config["model"], label)
        specs = [FeedbackSpec(**kw) for kw in _saved_config.graph_specs(config, model, label)]
        return cls(model, config["inputs"], config["constants"], config["outputs"], specs)
