"""The state a FeedbackModel carries from step to step, and from call to call.

Between runs of the loop the state is a list of *histories*, one per delayed
edge (cell states included) in `graph.specs` order: a tensor
`(delay, batch, *shape)`, oldest value first. How the loop holds a history
while it runs (a ring buffer) is `_run`'s business; it takes histories and
hands them back.

This module makes the starting histories of a call (the initial values,
`initial_state=` overrides, or a stateful model's carried values), keeps a
stateful model's histories between calls (`StateStore`), and implements
`reset_states`, `get_states` and `set_states`, which speak the public naming:
`{feedback name: (batch, *shape)}`, or `(batch, delay, *shape)` oldest first
for a delay above 1. On JAX it also lists the histories among the model's
non-trainable variables (`threaded_variables`), which Keras's compiled
`fit` / `predict` / `evaluate` carry from batch to batch and write back.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

__all__ = [
    "StateStore",
    "carried_histories",
    "histories_to_dict",
    "start_histories",
    "take_samples",
]

_KERAS_DEFAULT_BATCH = 32


def in_symbolic_scope() -> bool:
    from keras.src.backend.common.symbolic_scope import in_symbolic_scope

    return in_symbolic_scope()


def executing_eagerly(tensor) -> bool:
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.executing_eagerly()
    if backend == "jax":
        import jax

        return not isinstance(tensor, jax.core.Tracer)
    return True


class StateStore:
    """Holds the stateful model's histories, out of Keras's weight tracking.

    The carried state depends on the batch size, so it is not a weight: it
    is neither saved nor loaded (as a stateful `keras.layers.LSTM`'s states
    are not), and it is created at the first call.
    """

    def __init__(self):
        self.histories = None  # list of keras.Variable, one per delayed edge
        self.batch_size = None


# ------------------------------------------- through compiled functions (JAX)
def threads_state() -> bool:
    """Whether the carried state must ride in the model's non-trainable
    variables to cross a compiled function.

    On JAX, Keras's `fit`, `predict` and `evaluate` run the model as a pure
    function (`stateless_call`) on the values of its `non_trainable_variables`
    and write back what the step assigned to them (as for a Dropout's seed
    or BatchNormalization's statistics). On TensorFlow a compiled function
    assigns the variables themselves.
    """
    return keras.backend.backend() == "jax"


def threaded_variables(net) -> list:
    """The variables a stateful model adds to its `non_trainable_variables`:
    on JAX its carried histories once they exist, else none. They are not
    `weights` (not saved), like the state of a `keras.random.SeedGenerator`."""
    if not (net.stateful and threads_state()) or net._store.histories is None:
        return []
    return list(net._store.histories)


def check_threaded(net):
    """Inside a JAX trace, the carried state must come in through a
    `StatelessScope` that maps it (`stateless_call`, as Keras's loops do):
    a value assigned to the variable there could not leave the trace."""
    from keras.src.backend.common.stateless_scope import get_stateless_scope

    if not net._store.histories:  # no delayed edge: nothing to carry
        return
    scope = get_stateless_scope()
    if scope is None or scope.get_current_value(net._store.histories[0]) is None:
        raise ValueError(
            f"{net._label()} is stateful and was called inside a compiled JAX "
            f"function, which cannot write the carried state back. Use fit, predict "
            f"or evaluate, call the model outside the compiled function, or call "
            f"net.stateless_call(net.trainable_variables, net.non_trainable_variables, "
            f"x), which returns the new state with the non-trainable variables."
        )


# ------------------------------------------------------------ one history
def initial_history(net, spec, batch):
    """The edge's initial value, repeated over its delay: `(delay, batch, *shape)`.

    A cell's state left at `initial="zeros"` starts from the cell's own
    `get_initial_state`, as in `keras.layers.RNN`.
    """
    if spec.name in net._initial:
        w = ops.convert_to_tensor(net._initial[spec.name])
    else:
        start = cell_starts(net).get(spec.name)
        if start is not None:
            layer, index = start
            value = keras.tree.flatten(layer.get_initial_state(batch))[index]
            return ops.cast(value, spec.dtype)[None]
        w = ops.zeros(spec.shape, spec.dtype)
    return ops.broadcast_to(w[None, None], (spec.delay, batch) + spec.shape)


def cell_starts(net) -> dict:
    """`{state name: (cell, index in its flat states)}` for the cells of the
    step graph that define `get_initial_state`, read from the cells' calls."""
    found = net.__dict__.get("_fbx_cell_starts")
    if found is not None:
        return found
    from fbexplorer.graph import _input_layer_name

    by_layer_name = {_input_layer_name(s.name): s.name for s in net.graph.specs if s.kind == "cell"}
    found = {}
    for layer in net.step_model.layers:
        if not (hasattr(layer, "get_initial_state") and hasattr(layer, "state_size")):
            continue
        for node in layer._inbound_nodes:
            args = node.arguments.args
            states = args[1] if len(args) > 1 else node.arguments.kwargs.get("states")
            for index, tensor in enumerate(keras.tree.flatten(states)):
                name = by_layer_name.get(getattr(tensor._keras_history.operation, "name", None))
                if name is not None:
                    found[name] = (layer, index)
    object.__setattr__(net, "_fbx_cell_starts", found)
    return found


def history_from_value(net, spec, value, batch):
    """A user's value for an edge (`initial_state=`, `set_states`) as a history.

    Accepts an unbatched `(*shape)`, a batched `(batch, *shape)` (repeated
    over the delay), or for a delay above 1 the whole history
    `(batch, delay, *shape)`, oldest first.
    """
    value = ops.cast(ops.convert_to_tensor(value), spec.dtype)
    if hasattr(value, "read_value"):  # a tf.Variable (a learned start) stays one
        value = value.read_value()
    shape = tuple(value.shape)
    k = spec.delay
    label = net._label()
    if shape == spec.shape:
        return ops.broadcast_to(value[None, None], (k, batch) + spec.shape)
    if (
        len(shape) > len(spec.shape)
        and isinstance(batch, int)
        and shape[0] is not None
        and shape[0] != batch
    ):
        raise ValueError(
            f"{label}: initial_state['{spec.name}'] has a batch of "
            f"{shape[0]}, but the inputs have a batch of {batch}. Give one value per "
            f"sample, or an unbatched ({', '.join(map(str, spec.shape))}) shared by all."
        )
    if len(shape) == len(spec.shape) + 1 and shape[1:] == spec.shape:
        return value[None] if k == 1 else ops.repeat(value[None], k, axis=0)
    if k > 1 and len(shape) == len(spec.shape) + 2 and shape[1:] == (k,) + spec.shape:
        return ops.moveaxis(value, 1, 0)
    hist = f", or (batch, {k}, {', '.join(map(str, spec.shape))}) for the history" if k > 1 else ""
    raise ValueError(
        f"{label}: initial_state['{spec.name}'] must have shape "
        f"(batch, {', '.join(map(str, spec.shape))}){hist}. Received shape {shape}."
    )


def public_value(spec, history, moveaxis=ops.moveaxis):
    """A history as the public naming has it: `(batch, *shape)` for delay 1,
    else `(batch, delay, *shape)`, oldest first."""
    return history[0] if spec.delay == 1 else moveaxis(history, 0, 1)


def histories_to_dict(net, histories, moveaxis=ops.moveaxis) -> dict:
    return {
        spec.name: public_value(spec, h, moveaxis) for spec, h in zip(net.graph.specs, histories)
    }


def take_samples(histories, index):
    """The histories of the samples `index` only."""
    return [ops.take(ops.convert_to_tensor(h), index, axis=1) for h in histories]


# ------------------------------------------------------- a call's start
def check_names(net, names, what: str, prefix: str):
    unknown = [k for k in names if k not in net.feedback_names]
    if unknown:
        raise ValueError(
            f"{prefix}: {what} names '{unknown[0]}', which is not a feedback of "
            f"{'this model' if prefix == net._label() else f'model {net.name!r}'}. "
            f"Known: {net.feedback_names}."
        )


def start_histories(net, batch, initial_state=None, stored=None):
    """The loop's starting histories: `initial_state` entries first, then
    `stored` histories (a stateful model's carried values) if given, else
    the initial values."""
    overrides = dict(initial_state or {})
    out = []
    for i, spec in enumerate(net.graph.specs):
        if spec.name in overrides:
            out.append(history_from_value(net, spec, overrides[spec.name], batch))
        elif stored is not None:
            out.append(ops.convert_to_tensor(stored[i]))
        else:
            out.append(initial_history(net, spec, batch))
    return out


def call_histories(net, batch, initial_state, tensors):
    """The starting histories of a call (`FeedbackModel.call`, `generate`)."""
    check_names(net, dict(initial_state or {}), "initial_state", net._label())
    stored = None
    if net.stateful and not in_symbolic_scope():
        stored = stateful_histories(net, batch, tensors)
    return start_histories(net, batch, initial_state, stored)


def carried_histories(net):
    """A stateful model's carried histories as numpy arrays, or None before
    its first call (or for a model that is not stateful)."""
    store = net._store
    if not net.stateful or store.histories is None:
        return None
    return [np.asarray(ops.convert_to_numpy(v)) for v in store.histories]


def stateful_histories(net, batch, tensors):
    store = net._store
    label = net._label()
    static = batch if isinstance(batch, int) else None
    if store.histories is None:
        if static is None or not executing_eagerly(tensors[0]):
            raise ValueError(
                f"{label} is stateful and does not know its batch size yet. "
                f"Call it once on a batch, use its own fit/predict/evaluate (they read "
                f"the batch size from the data), or call reset_states(batch_size=B)."
            )
        reset_states(net, batch_size=static)
    elif static is not None and static != store.batch_size:
        raise ValueError(batch_error(net, static))
    if threads_state() and not executing_eagerly(tensors[0]):
        check_threaded(net)
    return store.histories


def keep(net, final):
    """After a call: a stateful model keeps the final histories."""
    if net.stateful and not in_symbolic_scope():
        for var, value in zip(net._store.histories, final):
            var.assign(value)


def batch_error(net, received) -> str:
    size = net._store.batch_size
    return (
        f"{net._label()} is stateful with batch size {size} "
        f"(from its first call), but received a batch of {received}. Feed batches "
        f"of {size}, or call reset_states(batch_size={received}) "
        f"to start over with the new size."
    )


# ---------------------------------------------- reset / get / set states
def reset_states(net, batch_size=None):
    if not net.stateful:
        raise ValueError(
            f"{net._label()} is not stateful: it starts every call from the "
            f"initial values. Build it with stateful=True to carry state."
        )
    store = net._store
    if batch_size is None:
        if store.histories is None:
            return
        batch_size = store.batch_size
    values = [initial_history(net, spec, batch_size) for spec in net.graph.specs]
    if store.histories is not None and store.batch_size == batch_size:
        for var, v in zip(store.histories, values):
            var.assign(v)
        return
    # Named as Keras's stateful RNN names its states (`lstm/rnn_state`):
    # `net/loop_state`, `net/gru_h_state`.
    with keras.name_scope(net.name, caller=net):
        store.histories = [
            keras.Variable(v, trainable=False, name=f"{spec.name.replace('/', '_')}_state")
            for spec, v in zip(net.graph.specs, values)
        ]
    store.batch_size = batch_size


def get_states(net) -> dict:
    values = carried_histories(net)
    if values is None:
        raise ValueError(
            f"{net._label()} has no carried state"
            + ("" if net.stateful else " (it is not stateful)")
            + ": call it on a batch first."
        )
    return histories_to_dict(net, values, moveaxis=np.moveaxis)


def set_states(net, states: dict):
    label = net._label()
    if not net.stateful:
        raise ValueError(f"{label} is not stateful; pass initial_state= at call instead.")
    check_names(net, states, "set_states", label)
    if not states:
        return
    store = net._store
    batch = int(np.shape(next(iter(states.values())))[0])
    if store.histories is None:
        reset_states(net, batch_size=batch)
    elif batch != store.batch_size:
        raise ValueError(batch_error(net, batch))
    for spec, var in zip(net.graph.specs, store.histories):
        if spec.name in states:
            value = np.asarray(states[spec.name])
            if value.ndim == len(spec.shape):
                raise ValueError(
                    f"{label}: set_states['{spec.name}'] needs a batch axis: "
                    f"shape (batch, {', '.join(map(str, spec.shape))})."
                )
            var.assign(history_from_value(net, spec, value, store.batch_size))


# --------------------------------------------- stateful batch sizes (fit)
def prepare_batches(net, x, batch_size, whole=False):
    """Fix (or check) a stateful model's batch size before Keras's loops."""
    if not net.stateful or x is None:
        return
    label = net._label()
    strategy = getattr(net, "distribute_strategy", None)
    replicas = getattr(strategy, "num_replicas_in_sync", 1)
    if replicas > 1:
        raise ValueError(
            f"{label} is stateful, but its distribution strategy runs "
            f"{replicas} replicas, and the carried state is kept for one. Train a "
            f"stateless model under the strategy, or the stateful one on one device."
        )
    n, batched = first_dim(x)
    if n is None:
        return
    # Arrays are cut into batches of `batch_size`; a dataset comes batched.
    size = n if (whole or batched) else min(batch_size or _KERAS_DEFAULT_BATCH, n)
    if net._store.histories is None:
        reset_states(net, batch_size=size)
    if size != net._store.batch_size:
        raise ValueError(batch_error(net, size))
    if n % size:
        raise ValueError(
            f"{label} is stateful with batch size {size}, but {n} samples "
            f"leave a last batch of {n % size}. Use a sample count divisible by "
            f"{size}."
        )


def first_dim(x):
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
