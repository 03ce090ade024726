"""The state a FeedbackModel carries from step to step, and from call to call.

Between runs of the loop the state is a list of *histories*, one per delayed
edge (cell states included) in `graph.specs` order: `(delay, batch, *shape)`,
oldest value first, held as a tensor or, while its oldest entries are still
copies of the initial value, as a `_history.History` (that value once, then
the real values): a call's starting histories are (`compact=True`), so a
delay longer than the run costs what the run reads and writes, not the
delay. How the loop holds a history while it runs (a ring buffer, a
sequence) is `_run`'s business; it takes histories and hands them back.

This module makes the starting histories of a call (the initial values,
`initial_state=` overrides, or a stateful model's carried values), keeps a
stateful model's histories between calls (`StateStore`), and implements
`reset_states`, `get_states` and `set_states`, which speak the public naming:
`{feedback name: (batch, *shape)}`, or `(batch, delay, *shape)` oldest first
for a delay above 1: those whole arrays are made within a memory budget
(`_history.check_budget`), and a stateful model whose whole history would
pass it carries that edge compactly, from direct calls only. On JAX it also lists the histories among the model's
non-trainable variables (`threaded_variables`), which Keras's compiled
`fit` / `predict` / `evaluate` carry from batch to batch and write back.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from fbexplorer import _keras
from fbexplorer._history import (
    History,
    as_history,
    budget_words,
    check_budget,
    describe,
    full,
    history_batch,
    history_bytes,
    over_budget,
    tail_length,
)

__all__ = [
    "StateStore",
    "add_initial_weights",
    "call_histories",
    "carried_histories",
    "check_names",
    "check_returned_states",
    "executing_eagerly",
    "first_dim",
    "get_states",
    "histories_to_dict",
    "keep",
    "prepare_batches",
    "reset_states",
    "set_states",
    "start_histories",
    "take_samples",
    "threaded_variables",
]

_KERAS_DEFAULT_BATCH = 32


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

    Each edge's entry is a `keras.Variable` holding its whole history, or,
    where that would pass the memory budget (`reset_states`), a `History`
    of tensors that grows by each call's steps until it is whole: such a
    compact history changes shape, so only direct calls carry it
    (`compact_edges`).
    """

    def __init__(self):
        self.histories = None  # one keras.Variable or History per delayed edge
        self.batch_size = None


def compact_edges(net) -> list:
    """The names of the edges a stateful model carries compactly."""
    store = net._store
    if store.histories is None:
        return []
    return [
        s.name
        for s, h in zip(net.graph.specs, store.histories)
        if not isinstance(h, keras.Variable)
    ]


def store_variables(net) -> list:
    """The stateful store's variables (the edges carried whole)."""
    return [h for h in net._store.histories or [] if isinstance(h, keras.Variable)]


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
    if not (net.stateful and threads_state()):
        return []
    return store_variables(net)


def check_threaded(net):
    """Inside a JAX trace, the carried state must come in through a
    `StatelessScope` that maps it (`stateless_call`, as Keras's loops do):
    a value assigned to the variable there could not leave the trace."""
    variables = store_variables(net)
    if not variables:  # no delayed edge: nothing to carry
        return
    scope = _keras.current_stateless_scope()
    if scope is None or scope.get_current_value(variables[0]) is None:
        raise ValueError(
            f"{net._label()} is stateful and was called inside a compiled JAX "
            f"function, which cannot write the carried state back. Use fit, predict "
            f"or evaluate, call the model outside the compiled function, or call "
            f"net.stateless_call(net.trainable_variables, net.non_trainable_variables, "
            f"x), which returns the new state with the non-trainable variables."
        )


# ------------------------------------------------------------ one history
def add_initial_weights(net, specs) -> dict:
    """`{edge name: weight}` for the edges whose initial value is not zeros:
    a trainable weight for `"learned"` (starting at zeros), else a fixed one
    drawn once from the initializer, added to `net` (so saved with it)."""
    weights = {}
    for spec in specs:
        if isinstance(spec.initial, str) and spec.initial == "zeros":
            continue
        learned = isinstance(spec.initial, str) and spec.initial == "learned"
        weights[spec.name] = net.add_weight(
            shape=spec.shape,
            initializer="zeros" if learned else spec.initial,
            dtype=spec.dtype,
            trainable=learned,
            name=f"{spec.name.replace('/', '_')}_initial",
        )
    return weights


def initial_fill(net, spec, batch):
    """The edge's initial value for each sample, `(batch, *shape)`: every
    entry of its starting history is this value (k copies, not k draws).

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
            return ops.cast(value, spec.dtype)
        w = ops.zeros(spec.shape, spec.dtype)
    return ops.broadcast_to(w[None], (batch,) + spec.shape)


def initial_history(net, spec, batch, compact=False):
    """The edge's initial value, repeated over its delay: `(delay, batch, *shape)`,
    or with `compact` a `History` holding the value once."""
    fill = initial_fill(net, spec, batch)
    if compact:
        return History(fill, None)
    return ops.broadcast_to(fill[None], (spec.delay, batch) + spec.shape)


def cell_starts(net) -> dict:
    """`{state name: (cell, index in its flat states)}` for the cells of the
    step graph that define `get_initial_state`, read from the cells' calls."""
    found = net.__dict__.get("_fbx_cell_starts")
    if found is not None:
        return found
    from fbexplorer._checks import input_layer_name

    by_layer_name = {input_layer_name(s.name): s.name for s in net.graph.specs if s.kind == "cell"}
    found = {}
    for layer in net.step_model.layers:
        if not (hasattr(layer, "get_initial_state") and hasattr(layer, "state_size")):
            continue
        for node in _keras.inbound_nodes(layer):
            args = node.arguments.args
            states = args[1] if len(args) > 1 else node.arguments.kwargs.get("states")
            for index, tensor in enumerate(keras.tree.flatten(states)):
                name = by_layer_name.get(getattr(_keras.operation_of(tensor), "name", None))
                if name is not None:
                    found[name] = (layer, index)
    object.__setattr__(net, "_fbx_cell_starts", found)
    return found


def history_from_value(net, spec, value, batch, compact=False):
    """A user's value for an edge (`initial_state=`, `set_states`) as a history.

    Accepts an unbatched `(*shape)`, a batched `(batch, *shape)` (repeated
    over the delay: with `compact`, held once in a `History`), or for a
    delay above 1 the whole history `(batch, delay, *shape)`, oldest first.
    """
    value = ops.cast(ops.convert_to_tensor(value), spec.dtype)
    if hasattr(value, "read_value"):  # a tf.Variable (a learned start) stays one
        value = value.read_value()
    shape = tuple(value.shape)
    k = spec.delay
    label = net._label()
    if shape == spec.shape:
        if compact:
            return History(ops.broadcast_to(value[None], (batch,) + spec.shape), None)
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
        if compact and k > 1:
            return History(value, None)
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


def histories_to_dict(net, histories, moveaxis=ops.moveaxis, batch=None) -> dict:
    """`{feedback name: public value}`, each history made whole (see
    `check_returned_states` for the budget)."""
    out = {}
    for spec, h in zip(net.graph.specs, histories):
        if isinstance(h, History):
            b = batch if batch is not None else history_batch(h)
            h = full(h, spec.delay, b, spec.shape)
        out[spec.name] = public_value(spec, h, moveaxis)
    return out


def check_returned_states(net, batch):
    """Before a call of a model built with `return_state=True`: its whole
    histories, which the call returns, must fit the memory budget."""
    check_budget(
        net._label(),
        "return_state=True returns",
        net.graph.specs,
        batch,
        "Use a shorter delay, or build the model with return_state=False (a "
        "call then keeps only what its steps read and write).",
    )


def take_samples(histories, index):
    """The histories of the samples `index` only."""
    out = []
    for h in histories:
        if isinstance(h, History):  # its fill is (batch, *shape)
            fill, tail = h
            out.append(
                History(
                    None if fill is None else ops.take(fill, index, axis=0),
                    None if tail is None else ops.take(tail, index, axis=1),
                )
            )
        else:
            out.append(ops.take(ops.convert_to_tensor(h), index, axis=1))
    return out


# ------------------------------------------------------- a call's start
def check_names(net, names, what: str, prefix: str):
    unknown = [k for k in names if k not in net.feedback_names]
    if unknown:
        raise ValueError(
            f"{prefix}: {what} names '{unknown[0]}', which is not a feedback of "
            f"{'this model' if prefix == net._label() else f'model {net.name!r}'}. "
            f"Known: {net.feedback_names}."
        )


def start_histories(net, batch, initial_state=None, stored=None, compact=False):
    """The loop's starting histories: `initial_state` entries first, then
    `stored` histories (a stateful model's carried values) if given, else
    the initial values.

    With `compact`, as `History`s where they start with copies of one value
    (what `_run.run` takes); else whole `(delay, batch, *shape)` tensors
    (for callers that take the history as state), within the memory budget.
    """
    if not compact:
        check_budget(
            net._label(),
            "a run from the whole state (every delayed value) needs",
            net.graph.specs,
            batch,
            "Use a shorter delay.",
        )
    overrides = dict(initial_state or {})
    out = []
    for i, spec in enumerate(net.graph.specs):
        if spec.name in overrides:
            h = history_from_value(net, spec, overrides[spec.name], batch, compact)
        elif stored is not None:
            h = stored[i] if isinstance(stored[i], History) else ops.convert_to_tensor(stored[i])
        else:
            h = initial_history(net, spec, batch, compact)
        if not compact and isinstance(h, History):
            h = full(h, spec.delay, batch, spec.shape)
        out.append(h)
    return out


def call_histories(net, batch, initial_state, tensors, length=None):
    """The starting histories of a call (`FeedbackModel.call`, `generate`),
    compact; `length`, the call's steps, lets a compact carried history check
    what it will grow to."""
    check_names(net, dict(initial_state or {}), "initial_state", net._label())
    stored = None
    if net.stateful and not _keras.in_symbolic_scope():
        stored = stateful_histories(net, batch, tensors, length)
    return start_histories(net, batch, initial_state, stored, compact=True)


def carried_histories(
    net,
    what="tracing from the carried state needs",
    fix="Pass initial_state= to trace from given values, or use a shorter delay.",
):
    """A stateful model's carried histories as numpy arrays, or None before
    its first call (or for a model that is not stateful); whole, within the
    memory budget (`what` says who asks, `fix` what to do instead)."""
    store = net._store
    if not net.stateful or store.histories is None:
        return None
    specs = net.graph.specs
    compact = [s for s, h in zip(specs, store.histories) if isinstance(h, History)]
    check_budget(net._label(), what, compact, store.batch_size, fix)
    out = []
    for spec, h in zip(specs, store.histories):
        if isinstance(h, History):
            h = full(h, spec.delay, store.batch_size, spec.shape)
        out.append(np.asarray(ops.convert_to_numpy(h)))
    return out


def compact_message(net, name) -> str:
    """Why a stateful model's compact history cannot ride in a compiled step."""
    spec = net.graph.spec(name)
    whole = describe(spec, spec.delay, net._store.batch_size)
    return (
        f"{net._label()} is stateful and carries feedback '{name}' (delay {spec.delay}) "
        f"compactly, since its whole history, {whole}, is above {budget_words()}: a "
        f"compiled step (fit, predict, evaluate, tf.function, jax.jit) cannot carry it, "
        f"as it grows from call to call. Call the model directly, net(x), to continue "
        f"the stream, or use a shorter delay."
    )


def check_compact_growth(net, length):
    """Before a direct call of `length` steps: the compact histories will
    hold up to `length` more values; refuse if that passes the budget."""
    store = net._store
    specs, counts = [], []
    for spec, h in zip(net.graph.specs, store.histories):
        if isinstance(h, History):
            specs.append(spec)
            counts.append(min(spec.delay, tail_length(h) + int(length)))
    found = over_budget(specs, store.batch_size, counts)
    if found is not None:
        spec, n = found
        raise ValueError(
            f"{net._label()} is stateful and carries feedback '{spec.name}' "
            f"(delay {spec.delay}) compactly, as the values written since the last reset: "
            f"after this call that would be {describe(spec, n, store.batch_size)}, above "
            f"{budget_words()}. Call reset_states() to start over, or use a shorter delay."
        )


def stateful_histories(net, batch, tensors, length=None):
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
    compact = compact_edges(net)
    if compact and not executing_eagerly(tensors[0]):
        raise ValueError(compact_message(net, compact[0]))
    if compact and isinstance(length, int):
        check_compact_growth(net, length)
    if threads_state() and not executing_eagerly(tensors[0]):
        check_threaded(net)
    return store.histories


def keep(net, final):
    """After a call: a stateful model keeps the final histories (a compact
    one as it comes, a variable's made whole)."""
    if not net.stateful or _keras.in_symbolic_scope():
        return
    store = net._store
    for i, (spec, entry, value) in enumerate(zip(net.graph.specs, store.histories, final)):
        if isinstance(entry, keras.Variable):
            if isinstance(value, History):
                value = full(value, spec.delay, store.batch_size, spec.shape)
            entry.assign(value)
        else:
            store.histories[i] = as_history(value)


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
    specs = net.graph.specs
    if store.histories is not None and store.batch_size == batch_size:
        for i, (spec, entry) in enumerate(zip(specs, store.histories)):
            if isinstance(entry, keras.Variable):
                entry.assign(initial_history(net, spec, batch_size))
            else:
                store.histories[i] = initial_history(net, spec, batch_size, compact=True)
        return
    compact = compact_choice(specs, batch_size)
    # Named as Keras's stateful RNN names its states (`lstm/rnn_state`):
    # `net/loop_state`, `net/gru_h_state`.
    with keras.name_scope(net.name, caller=net):
        store.histories = [
            initial_history(net, spec, batch_size, compact=True)
            if spec.name in compact
            else keras.Variable(
                initial_history(net, spec, batch_size),
                trainable=False,
                name=f"{spec.name.replace('/', '_')}_state",
            )
            for spec in specs
        ]
    store.batch_size = batch_size


# A stateful model holds its carried histories for as long as it lives, beside
# everything else: as whole arrays they may take at most this share of the
# memory budget (a delay of 1e9 at batch 2 is 8 GB of initial values, within
# half of a 24 GB machine's free memory but not what a 10-step run needs).
STATE_SHARE = 0.25


def compact_choice(specs, batch) -> set:
    """The edges a stateful model carries compactly: none while the whole
    histories fit `STATE_SHARE` of the memory budget together, else the
    largest until the rest fit."""
    chosen = set()
    rest = list(specs)
    while rest and over_budget(rest, batch, share=STATE_SHARE) is not None:
        largest = max(rest, key=lambda s: history_bytes(s.delay, batch, s.shape, s.dtype))
        if largest.delay == 1:
            break
        chosen.add(largest.name)
        rest.remove(largest)
    return chosen


def get_states(net) -> dict:
    values = carried_histories(
        net,
        "get_states returns",
        "Use a shorter delay, or leave the state in the model: its calls carry it "
        "compactly without get_states.",
    )
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
    for i, (spec, entry) in enumerate(zip(net.graph.specs, store.histories)):
        if spec.name in states:
            value = np.asarray(states[spec.name])
            if value.ndim == len(spec.shape):
                raise ValueError(
                    f"{label}: set_states['{spec.name}'] needs a batch axis: "
                    f"shape (batch, {', '.join(map(str, spec.shape))})."
                )
            if isinstance(entry, keras.Variable):
                entry.assign(history_from_value(net, spec, value, store.batch_size))
            else:
                history = history_from_value(net, spec, value, store.batch_size, compact=True)
                store.histories[i] = as_history(history)


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
    compact = compact_edges(net)
    if compact:
        raise ValueError(compact_message(net, compact[0]))
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
