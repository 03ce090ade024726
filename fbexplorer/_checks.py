"""Checks of the settings a feedback model is made of, from code or from a file.

A delayed edge's fields (name, delay, shape, initial value, kind) and a
`FeedbackModel`'s options are checked here, by the same functions whether they
come from `fbx.Feedback(...)` / `fbx.delayed(...)` / `fbx.cell(...)` /
`fbx.FeedbackModel(...)` or from a saved model's config: a file gets the
messages code gets, behind the name of the saved model (see
`fbexplorer._saved_config`).
"""

from __future__ import annotations

import math
import numbers
import reprlib

import keras
import numpy as np

from fbexplorer import _keras

__all__ = [
    "KINDS",
    "check_choice",
    "check_delay",
    "check_edge",
    "check_flag",
    "check_initial",
    "check_options",
    "check_shape",
    "check_steps",
    "check_source",
    "check_teacher_forcing",
    "input_layer_name",
    "is_int",
    "short_repr",
]

KINDS = ("feedback", "delayed", "cell")
FLAGS = ("return_sequences", "return_state", "stateful", "go_backwards", "unroll")


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxtuple = 3, 8, 8, 8
_REPR.maxstring = _REPR.maxother = 80


def short_repr(value) -> str:
    """`repr(value)`, cut short for a huge value (a file may hold anything)."""
    return _REPR.repr(value)


def input_layer_name(name: str) -> str:
    """The name of a placeholder's `keras.Input` layer: Keras forbids "/" in
    layer names, and cell states are named "lstm/h"."""
    return name.replace("/", "__")


def _prefix(context) -> str:
    return f"{context}: " if context else ""


def is_int(value) -> bool:
    """A whole number (a Python or numpy int), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def check_delay(label: str, value, field: str = "delay") -> int:
    """`value` as a delay: a whole number of steps >= 1 (not a bool, float or
    string). No upper bound: a long delay costs what the run needs."""
    if not is_int(value) or value < 1:
        raise ValueError(
            f"{label}: `{field}` must be an integer >= 1 (the value from `{field}` steps "
            f"ago). Received: {field}={short_repr(value)}"
        )
    return int(value)


def check_shape(label: str, shape) -> tuple:
    """A delayed value's per-sample shape: every dimension a known positive int."""
    dims = (shape,) if is_int(shape) else shape
    try:
        dims = tuple(dims)
    except TypeError:
        dims = None
    if dims is not None and any(d is None for d in dims):
        raise ValueError(
            f"{label}: every dimension of `shape` must be known, since the engine keeps "
            f"the value between steps. Received: shape={short_repr(dims)}"
        )
    if dims is None or not all(is_int(d) and d >= 1 for d in dims):
        raise ValueError(
            f"{label}: `shape` must be a tuple of positive integers (the per-sample "
            f"shape, such as (5,)). Received: shape={short_repr(shape)}"
        )
    return tuple(int(d) for d in dims)


def check_initial(label: str, initial):
    """'zeros', 'learned', or a Keras initializer (an instance, a name, a config)."""
    if isinstance(initial, str) and initial in ("zeros", "learned"):
        return initial
    found = None
    if initial is not None and not isinstance(initial, bool):
        try:
            found = keras.initializers.get(initial)
        except (ValueError, TypeError):
            found = None
    if found is None or isinstance(found, keras.Operation) or not callable(found):
        raise ValueError(
            f"{label}: `initial` must be 'zeros', 'learned' or a Keras "
            f"initializer (such as 'ones' or keras.initializers.RandomNormal()). "
            f"Received: initial={short_repr(initial)}"
        )
    return found


def check_edge(name, delay, shape, initial, kind, *, context: str | None = None):
    """The fields of one delayed edge, checked; returns them as the engine keeps
    them: `(name, delay, shape, initial)`.

    Args:
        name, delay, shape, initial, kind: as for `FeedbackSpec`.
        context: what holds the edge, put before each message (the saved
            model, when loading); None for an edge being built in code.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(
            f"{_prefix(context)}Feedback needs a non-empty string `name`. Received: name={short_repr(name)}"
        )
    label = f"{_prefix(context)}Feedback '{name}'"
    if kind not in KINDS:
        raise ValueError(
            f"{label}: `kind` must be one of {', '.join(repr(k) for k in KINDS)}. "
            f"Received: kind={short_repr(kind)}"
        )
    delay = check_delay(label, delay)
    shape = check_shape(label, shape)
    return name, delay, shape, check_initial(label, initial)


def check_source(label: str, name: str, shape: tuple, dtype: str, source) -> None:
    """A delayed edge's source tensor has the placeholder's shape and dtype."""
    src_shape = tuple(source.shape[1:])
    src_dtype = keras.backend.standardize_dtype(source.dtype)
    if src_shape != tuple(shape) or src_dtype != dtype:
        raise ValueError(
            f"{label}: Feedback '{name}' expects shape {tuple(shape)} and dtype {dtype}, "
            f"but its source '{_keras.operation_of(source).name}' has shape "
            f"{src_shape} and dtype {src_dtype}. Make the source match (for example with "
            f"a Dense or Reshape layer), or declare "
            f"fbx.Feedback({src_shape}, name='{name}', dtype='{src_dtype}')."
        )


def check_flag(label: str, field: str, value) -> bool:
    """A True/False setting (a numpy bool is one too; 0, 1 or 'no' are not)."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(
            f"{label}: `{field}` must be True or False. Received: {field}={short_repr(value)}"
        )
    return bool(value)


def check_choice(label: str, field: str, value):
    """A True / False / 'auto' setting (`hoist`, `loop_jit`)."""
    if isinstance(value, str) and value == "auto":
        return value
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(
            f"{label}: {field} must be True, False or 'auto'. Received: {field}={short_repr(value)}"
        )
    return bool(value)


def check_teacher_forcing(label: str, value) -> float:
    """A probability in [0, 1] (a number, not a string or a bool)."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
    if not ok or not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise ValueError(
            f"{label}: `teacher_forcing` is a probability in [0, 1]. "
            f"Received: teacher_forcing={short_repr(value)}"
        )
    return float(value)


def check_steps(label: str, value) -> int | None:
    """None, or a positive whole number of steps."""
    if value is None:
        return None
    if not is_int(value) or value < 1:
        raise ValueError(
            f"{label}: `steps` must be a positive integer. Received: steps={short_repr(value)}"
        )
    return int(value)


def check_options(label: str, options: dict) -> dict:
    """A `FeedbackModel`'s options (`return_sequences` ... `loop_jit`), checked
    and normalised; keys not given are left out."""
    out = {}
    for field in FLAGS:
        if field in options:
            out[field] = check_flag(label, field, options[field])
    if "teacher_forcing" in options:
        out["teacher_forcing"] = check_teacher_forcing(label, options["teacher_forcing"])
    if "steps" in options:
        out["steps"] = check_steps(label, options["steps"])
    for field in ("hoist", "loop_jit"):
        if field in options:
            out[field] = check_choice(label, field, options[field])
    return out
