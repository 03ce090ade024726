"""A FeedbackModel call's inputs: parsing and checks.

`parse_call` turns what a user passes to a call (an array, a list, a dict by
name, ground truth for teacher forcing, a mask) into the engine's pieces:
the per-step sequences, the constants, the truths, one combined mask, the
number of steps and the batch size, each checked against the step model with
an error that names the input. `FeedbackModel.call`, `generate` and
`fbx.trace` all start here.
"""

from __future__ import annotations

import dataclasses

import keras
from keras import ops

from fbexplorer.graph import pack

__all__ = ["CallInputs", "batch_of", "check_data", "combine_mask", "output_shape", "parse_call"]


@dataclasses.dataclass
class CallInputs:
    """The parsed inputs of one call.

    Attributes:
        seqs: the per-step input sequences `(batch, time, ...)`, in
            `graph.input_names` order, cast to the step model's dtypes.
        consts: the constants `(batch, ...)`, in `graph.constant_names` order.
        teachers: `{feedback name: ground truth (batch, time, ...)}`.
        mask: one `(batch, time)` boolean mask, or None.
        length: the number of steps (an int, or a scalar tensor when traced
            with an unknown time axis).
        batch: the batch size (an int, or a scalar tensor).
    """

    seqs: list
    consts: list
    teachers: dict
    mask: object
    length: object
    batch: object


def parse_call(net, inputs, mask=None, steps=None) -> CallInputs:
    """Parse and check a call's inputs (see `CallInputs`)."""
    seqs, consts, teachers = unpack(net, inputs)
    length, batch = length_and_batch(net, seqs, consts, steps)
    for name, truth in teachers.items():
        check_teacher(net, name, truth, length)
    mask = check_mask(net, combine_mask(net, mask), length, batch)
    return CallInputs(seqs, consts, teachers, mask, length, batch)


def split_inputs(net, inputs):
    """(the inputs and constants in `graph` order, `{feedback name: truth}`)
    from a list, a dict by name or a single array; checks the structure."""
    g = net.graph
    names = g.input_names + g.constant_names
    fb_names = net.feedback_names
    label = net._label()
    teachers = {}
    if isinstance(inputs, dict):
        unknown = [k for k in inputs if k not in names and k not in fb_names]
        if unknown:
            raise ValueError(
                f"{label}: unknown input '{unknown[0]}'. Expected the "
                f"per-step inputs {g.input_names}, the constants "
                f"{g.constant_names}, or ground truth for a feedback in {fb_names}."
            )
        missing = [n for n in names if n not in inputs]
        if missing:
            raise ValueError(
                f"{label}: input '{missing[0]}' is missing. Expected entries for {names}."
            )
        flat = [inputs[n] for n in names]
        teachers = {k: v for k, v in inputs.items() if k in fb_names and k not in names}
    elif isinstance(inputs, (list, tuple)):
        if len(inputs) != len(names):
            raise ValueError(
                f"{label}: expected {len(names)} inputs {names}, in that "
                f"order. Received {len(inputs)}."
            )
        flat = list(inputs)
    else:
        if len(names) != 1:
            raise ValueError(
                f"{label}: expected {len(names)} inputs {names}, as a list "
                f"or a dict by name. Received a single tensor."
            )
        flat = [inputs]
    return flat, teachers


def unpack(net, inputs):
    """(sequences, constants, truths) from a call's inputs, checked and cast."""
    g = net.graph
    names = g.input_names + g.constant_names
    label = net._label()
    flat, teachers = split_inputs(net, inputs)
    model_inputs = net.step_model.inputs
    converted = []
    for i, (name, value) in enumerate(zip(names, flat)):
        ref = model_inputs[i]
        value = ops.convert_to_tensor(value)
        if keras.backend.standardize_dtype(value.dtype) == "string":
            raise ValueError(
                f"{label}: input '{name}' holds strings; the model expects "
                f"numbers of dtype {ref.dtype}. Encode text as numbers first (for "
                f"example with keras.layers.StringLookup)."
            )
        is_seq = i < len(g.input_names)
        check_input_shape(net, name, tuple(value.shape), tuple(ref.shape[1:]), is_seq)
        converted.append(ops.cast(value, ref.dtype) if value.dtype != ref.dtype else value)
    n_in = len(g.input_names)
    return converted[:n_in], converted[n_in:], teachers


def check_data(net, x, y=None):
    """Check the data of `fit`, `predict`, `evaluate` (and the `*_on_batch`
    methods) against the model before Keras traces anything: Keras compiles
    its step function for loosened shapes, so a later call with another
    feature size would otherwise fail deep inside the loop."""
    if x is None or not all(hasattr(v, "shape") for v in keras.tree.flatten(x)):
        return  # a dataset or a generator: checked by the call itself
    if isinstance(x, dict) or isinstance(x, (list, tuple)) or hasattr(x, "shape"):
        flat, _ = split_inputs(net, x)
    else:
        return
    g = net.graph
    names = g.input_names + g.constant_names
    for i, (name, value) in enumerate(zip(names, flat)):
        ref = net.step_model.inputs[i]
        shape = tuple(value.shape)
        check_input_shape(net, name, shape, tuple(ref.shape[1:]), i < len(g.input_names))
        if shape and shape[0] == 0:
            raise ValueError(empty_batch_message(net, name))
    if y is None or not net.return_sequences or not g.input_names:
        return
    length = tuple(flat[0].shape)[1]
    for target in keras.tree.flatten(y):
        t_shape = tuple(getattr(target, "shape", ()))
        if len(t_shape) >= 2 and t_shape[1] is not None and t_shape[1] != length:
            raise ValueError(
                f"{net._label()}: the targets have {t_shape[1]} steps, but the inputs "
                f"have {length}. The model returns one output per input step "
                f"(return_sequences=True): give targets of shape (batch, {length}, ...), "
                f"or build the model with return_sequences=False for one target per "
                f"sequence."
            )


def empty_batch_message(net, name) -> str:
    return (
        f"{net._label()}: input '{name}' holds 0 samples; there is nothing to run. "
        f"Give at least one sample."
    )


def check_input_shape(net, name, got: tuple, per_sample: tuple, is_seq: bool):
    """Raise if an input of shape `got` does not fit the step input `per_sample`."""
    want = len(per_sample) + (2 if is_seq else 1)
    ok = len(got) == want and all(
        e is None or g_ is None or e == g_ for e, g_ in zip(per_sample, got[2 if is_seq else 1 :])
    )
    if ok:
        return
    kind = "a sequence" if is_seq else "a constant"
    exp = "(batch, time, " if is_seq else "(batch, "
    exp += ", ".join(str(d) for d in per_sample) + ")"
    hint = (
        " Add a time axis: a sequence of one step is x[:, None]."
        if is_seq and len(got) == want - 1
        else ""
    )
    raise ValueError(
        f"{net._label()}: input '{name}' is {kind} of shape {exp}. Received shape {got}.{hint}"
    )


def length_and_batch(net, seqs, consts, steps):
    """(number of steps, batch size), checked: one time axis, at least one step."""
    g = net.graph
    label = net._label()
    if seqs:
        lengths = {s.shape[1] for s in seqs if s.shape[1] is not None}
        if len(lengths) > 1:
            raise ValueError(
                f"{label}: the input sequences have different lengths "
                f"{dict(zip(g.input_names, [s.shape[1] for s in seqs]))}; they "
                f"must share one time axis."
            )
        length = seqs[0].shape[1]
        if length is None:
            length = ops.shape(seqs[0])[1]
        if steps is not None and isinstance(length, int) and steps != length:
            raise ValueError(f"{label}: steps={steps}, but the inputs have {length} steps.")
    else:
        length = steps if steps is not None else net.steps
        if length is None:
            raise ValueError(
                f"{label}: the model has no per-step inputs, so the number "
                f"of steps must be given: call it with steps=N, or build it with "
                f"FeedbackModel(..., steps=N)."
            )
    if isinstance(length, int) and length < 1:
        raise ValueError(f"{label}: the sequences have {length} timesteps; at least 1 is needed.")
    tensors = seqs + consts
    if tensors and tensors[0].shape[0] == 0:
        raise ValueError(empty_batch_message(net, (g.input_names + g.constant_names)[0]))
    if not seqs and not consts:
        raise ValueError(
            f"{label}: the model has no inputs or constants to take the batch size from."
        )
    return length, batch_of(seqs + consts)


def batch_of(tensors):
    """The batch size of the first tensor: an int, or a scalar tensor."""
    b = tensors[0].shape[0]
    return b if b is not None else ops.shape(tensors[0])[0]


def check_teacher(net, name, truth, length):
    spec = net.graph.spec(name)
    got = tuple(truth.shape)
    label = net._label()
    if len(got) != len(spec.shape) + 2 or tuple(got[2:]) != spec.shape:
        raise ValueError(
            f"{label}: ground truth for feedback '{name}' must have shape "
            f"(batch, time, {', '.join(map(str, spec.shape))}). Received shape {got}."
        )
    if isinstance(length, int) and got[1] is not None and got[1] != length:
        raise ValueError(
            f"{label}: ground truth for feedback '{name}' has {got[1]} "
            f"steps, but the inputs have {length}. Give one value per step."
        )


def check_mask(net, mask, length, batch):
    if mask is None:
        return None
    want = (batch, length)
    got = tuple(mask.shape)
    if any(isinstance(w, int) and g is not None and w != g for w, g in zip(want, got)):
        raise ValueError(
            f"{net._label()}: the mask has shape {got}, but the inputs have batch "
            f"{batch} and {length} steps. Give one mask value per sample and step: "
            f"shape ({batch}, {length})."
        )
    return mask


def combine_mask(net, mask):
    """One `(batch, time)` boolean mask from Keras's (possibly nested) masks."""
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
                f"{net._label()}: a mask has shape (batch, time). Received shape {tuple(m.shape)}."
            )
        m = ops.cast(m, "bool")
        combined = m if combined is None else ops.logical_and(combined, m)
    return combined


def output_shape(net, input_shape):
    """`net`'s output shapes (and with `return_state` its states' shapes, by
    name) for inputs of shapes `input_shape` `(batch, time, ...)`: a shape, a
    list of them or a dict by name (`FeedbackModel.compute_output_shape`)."""
    g = net.graph
    shapes = input_shape
    if isinstance(shapes, dict):
        shapes = [shapes[n] for n in g.input_names + g.constant_names if n in shapes]
    elif not (
        isinstance(shapes, (list, tuple)) and shapes and isinstance(shapes[0], (list, tuple))
    ):
        shapes = [shapes]
    first = tuple(shapes[0]) if shapes else (None,)
    batch = first[0]
    lead = (batch, first[1] if g.input_names else net.steps)
    lead = lead if net.return_sequences else (batch,)
    outs = [lead + tuple(t.shape[1:]) for t in net.step_model.outputs[: g.n_outputs]]
    result = pack(outs, g.output_structure)
    if net.return_state:
        states = {s.name: (batch,) + ((s.delay,) if s.delay > 1 else ()) + s.shape for s in g.specs}
        return result, states
    return result
