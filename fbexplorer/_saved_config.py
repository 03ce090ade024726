"""A saved `FeedbackModel`'s config, checked like user input before it is used.

A `.keras` file is untrusted: its config.json can be edited to hold any JSON.
Before a model is built from it, `check_model_config` checks the model's
options, `check_graph_config` the step graph's layout, and `graph_specs` each
delayed edge against the rebuilt step model (its name matches a placeholder,
its delay is a whole number >= 1, its kind is known, its shape, initial value
and source are valid). The edges and options go through the functions that
check them when a model is built in code (`fbexplorer._checks`), so a file
gets the same messages, behind `saved_label`: the saved model's name and,
when `fbx.load_model` reads it, the file's.
"""

from __future__ import annotations

import keras

from fbexplorer import _keras
from fbexplorer._checks import (
    check_edge,
    check_flag,
    check_options,
    check_source,
    input_layer_name,
    is_int,
    short_repr,
)
from fbexplorer.saving import loading_file

__all__ = [
    "check_graph_config",
    "check_model_config",
    "graph_specs",
    "rebuild_step_model",
    "saved_label",
]

GRAPH_KEYS = ("model", "inputs", "constants", "outputs", "feedback")
EDGE_KEYS = ("name", "delay", "initial", "kind", "cell")
_EDITED = "the file was edited or is damaged; save the model again"


def saved_label(class_name: str, name) -> str:
    """How messages name a saved model: "The saved FeedbackModel 'net' in 'net.keras'"."""
    shown = f"'{name}'" if isinstance(name, str) else short_repr(name)
    where = loading_file()
    return f"The saved {class_name} {shown}" + (f" in '{where}'" if where else "")


def _bad(label: str, field: str, expected: str, value) -> ValueError:
    return ValueError(
        f"{label}: `{field}` must be {expected} ({_EDITED}). Received: {field}={short_repr(value)}"
    )


def check_model_config(config, label: str) -> dict:
    """The model's own fields; returns its options (`stateful`, ...), checked.

    A config without `step_graph` is left to the class (a subclass that
    builds its step graph itself, from settings of its own)."""
    if not isinstance(config, dict):
        raise _bad(label, "config", "a dict of the model's settings", config)
    if not isinstance(config.get("name"), str) or not config["name"]:
        raise _bad(label, "name", "a non-empty string", config.get("name"))
    if "trainable" in config:
        check_flag(label, "trainable", config["trainable"])
    if "step_graph" in config and not isinstance(config["step_graph"], dict):
        raise _bad(label, "step_graph", "the step graph's config (a dict)", config["step_graph"])
    return check_options(label, config)


def check_graph_config(config, label: str) -> None:
    """The step graph's layout: its keys, and the types of its name lists."""
    if not isinstance(config, dict):
        raise _bad(label, "step_graph", "the step graph's config (a dict)", config)
    missing = [k for k in GRAPH_KEYS if k not in config]
    if missing:
        raise _bad(label, "step_graph", f"a dict of {', '.join(GRAPH_KEYS)}", sorted(config))
    for field in ("inputs", "constants"):
        names = config[field]
        if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
            raise _bad(label, f"step_graph.{field}", "a list of names (strings)", names)
    edges = config["feedback"]
    if not isinstance(edges, list):
        raise _bad(label, "step_graph.feedback", "a list of delayed edges", edges)
    for i, edge in enumerate(edges):
        if not isinstance(edge, dict) or sorted(edge) != sorted(EDGE_KEYS):
            raise _bad(
                label, f"step_graph.feedback[{i}]", f"a dict of {', '.join(EDGE_KEYS)}", edge
            )
    if not isinstance(config["model"], dict):
        raise _bad(label, "step_graph.model", "the step model's config (a dict)", config["model"])


def rebuild_step_model(config: dict, label: str):
    """The step model from its config. Any error on the way (Keras's, a
    layer's, an internal KeyError or RuntimeError) comes as one ValueError
    that names the saved model, unless it names a saved model already (a
    nested one's)."""
    try:
        model = keras.saving.deserialize_keras_object(config)
    except Exception as err:
        if isinstance(err, ValueError) and str(err).startswith("The saved "):
            raise
        what = "" if isinstance(err, ValueError) else f"{type(err).__name__}: "
        raise ValueError(
            f"{label}: its step model cannot be rebuilt from its config: {what}{err}"
        ) from err
    try:
        ok = isinstance(model, keras.Model) and bool(model.inputs) and bool(model.outputs)
    except (AttributeError, ValueError):
        ok = False
    if not ok:
        raise _bad(label, "step_graph.model", "a functional keras.Model", model)
    return model


def _check_outputs(label: str, structure, n_out: int) -> None:
    kind = structure.get("kind") if isinstance(structure, dict) else None
    if kind == "single":
        ok = n_out == 1 and list(structure) == ["kind"]
    elif kind == "list":
        ok = is_int(structure.get("n")) and structure["n"] == n_out and len(structure) == 2
    elif kind == "dict":
        keys = structure.get("keys")
        ok = (
            isinstance(keys, list)
            and len(keys) == n_out
            and all(isinstance(k, str) or is_int(k) for k in keys)
            and len(set(keys)) == len(keys)
            and len(structure) == 2
        )
    else:
        ok = False
    if not ok or n_out < 1:
        raise _bad(
            label,
            "step_graph.outputs",
            f"how the step model's {n_out} outputs (its outputs less one source per delayed "
            f"edge) are returned: {{'kind': 'single'}} for one, {{'kind': 'list', 'n': "
            f"{n_out}}}, or {{'kind': 'dict', 'keys': [{n_out} unique names]}}",
            structure,
        )


def _check_cell(label: str, model, kind: str, cell) -> None:
    cells = {layer.name for layer in model.layers if hasattr(layer, "state_size")}
    if (kind == "cell") != (cell is not None) or (cell is not None and cell not in cells):
        raise ValueError(
            f"{label}: `cell` must name a cell layer of the step model ({sorted(cells)}) for "
            f"kind='cell', and be None for another kind ({_EDITED}). "
            f"Received: kind={kind!r}, cell={short_repr(cell)}"
        )


def _check_names(label: str, config: dict, model) -> None:
    given = [("input", n) for n in config["inputs"]]
    given += [("constant", n) for n in config["constants"]]
    given += [("feedback", input_layer_name(e["name"])) for e in config["feedback"]]
    counts = {}
    for j, ((role, name), tensor) in enumerate(zip(given, model.inputs)):
        i = counts[role] = counts.get(role, -1) + 1
        actual = _keras.operation_of(tensor).name
        if name != actual:
            raise ValueError(
                f"{label}: {role} {i} is named {short_repr(name)} in its config, but the step "
                f"model's input {j} there is the keras.Input '{actual}'. The names must "
                f"match ({_EDITED})."
            )


def graph_specs(config: dict, model, label: str) -> list[dict]:
    """Each delayed edge of a saved step graph, checked against its step
    model, as `FeedbackSpec` keyword arguments."""
    edges = config["feedback"]
    n_in, n_const = len(config["inputs"]), len(config["constants"])
    if len(model.inputs) != n_in + n_const + len(edges):
        raise ValueError(
            f"{label}: its step model has {len(model.inputs)} inputs, but its config lists "
            f"{n_in} inputs, {n_const} constants and {len(edges)} delayed edges, "
            f"{n_in + n_const + len(edges)} in all ({_EDITED})."
        )
    n_out = len(model.outputs) - len(edges)
    _check_outputs(label, config["outputs"], n_out)
    specs = []
    for edge, tensor in zip(edges, model.inputs[n_in + n_const :]):
        name, delay, shape, initial = check_edge(
            edge["name"],
            edge["delay"],
            tuple(tensor.shape[1:]),
            edge["initial"],
            edge["kind"],
            context=label,
        )
        _check_cell(f"{label}: Feedback '{name}'", model, edge["kind"], edge["cell"])
        dtype = keras.backend.standardize_dtype(tensor.dtype)
        specs.append(
            {"name": name, "shape": shape, "dtype": dtype, "delay": delay}
            | {"initial": initial, "kind": edge["kind"], "cell": edge["cell"]}
        )
    _check_names(label, config, model)
    for spec, source in zip(specs, model.outputs[n_out:]):
        check_source(label, spec["name"], spec["shape"], spec["dtype"], source)
    return specs
