"""The one place that reaches into Keras's private names.

fbexplorer walks and replays Keras functional graphs (the step model, a
probe, a user's graph before it is bound), reads a few private attributes of
layers, and uses four helpers Keras keeps under `keras.src`. Every such access
goes through a small named function of this module, so that a Keras release
that moves one breaks here, in one place, and `tests/test_keras_adapter.py`
names what is missing.

Supported: `keras>=3.10,<4` (`pyproject.toml`). Tested with Keras 3.15.1;
every name below was checked in Keras 3.10.0's source. `PRIVATE_ATTRIBUTES` and
`PRIVATE_MODULES` list everything this module touches; the tests check that
each exists on the installed Keras and that no other module of the package
names any of them.

What each wraps:

- a symbolic tensor's `_keras_history` (`operation, node_index,
  tensor_index`): `has_history`, `operation_of`, `producer`;
- a layer's or operation's `_inbound_nodes` (the nodes of its calls):
  `inbound_nodes`, `first_call`;
- a functional model's `_nodes_by_depth`: `nodes_by_depth`,
  `nodes_in_depth_order`, and
  `replay`, which runs nodes on values as a functional model's call does;
- `Layer._flatten_layers`: `sublayers`;
- `Layer._non_trainable_variables` (its own, not its sublayers'):
  `own_non_trainable_variables`;
- `Layer._seed_generators`: `seed_generators`;
- `Layer._call_context_args` (the context arguments such as `training`
  that its `call` takes): `call_node`;
- `Model._compile_loss` (the loss `compile` made): `compiled_loss`;
- `keras.src.backend.common.symbolic_scope.in_symbolic_scope`:
  `in_symbolic_scope`;
- `keras.src.backend.common.stateless_scope.get_stateless_scope`:
  `current_stateless_scope`;
- `keras.src.backend.common.global_state` (the process-wide counters of
  automatic names): `names_counter`, `set_names_counter`;
- `keras.src.utils.io_utils.ask_to_proceed_with_overwrite`:
  `ask_to_overwrite`.
"""

from __future__ import annotations

import collections
import importlib

import keras

__all__ = [
    "PRIVATE_ATTRIBUTES",
    "PRIVATE_MODULES",
    "ask_to_overwrite",
    "call_node",
    "compiled_loss",
    "current_stateless_scope",
    "first_call",
    "has_history",
    "in_symbolic_scope",
    "inbound_nodes",
    "names_counter",
    "nodes_by_depth",
    "nodes_in_depth_order",
    "operation_of",
    "own_non_trainable_variables",
    "producer",
    "replay",
    "seed_generators",
    "set_names_counter",
    "sublayers",
]

# The private attributes of Keras objects this module reads: (name, the
# objects that have it). tests/test_keras_adapter.py checks each on a small
# model, and that no other module of fbexplorer names one.
PRIVATE_ATTRIBUTES = {
    "_keras_history": "a symbolic tensor (KerasTensor)",
    "_inbound_nodes": "a layer or operation called on symbolic tensors",
    "_nodes_by_depth": "a functional keras.Model",
    "_flatten_layers": "a keras.layers.Layer (a method)",
    "_non_trainable_variables": "a keras.layers.Layer",
    "_seed_generators": "a keras.layers.Layer",
    "_call_context_args": "a keras.layers.Layer",
    "_compile_loss": "a keras.Model",
}

# The `keras.src` modules this module imports, with the names it takes.
PRIVATE_MODULES = {
    "keras.src.backend.common.symbolic_scope": ("in_symbolic_scope",),
    "keras.src.backend.common.stateless_scope": ("get_stateless_scope",),
    "keras.src.backend.common.global_state": ("get_global_attribute", "set_global_attribute"),
    "keras.src.utils.io_utils": ("ask_to_proceed_with_overwrite",),
}


def _private(module: str, name: str):
    """`name` from the private Keras module `module` (one of `PRIVATE_MODULES`)."""
    return getattr(importlib.import_module(module), name)


# ---------------------------------------------------------- symbolic tensors
def has_history(tensor) -> bool:
    """Whether `tensor` is a symbolic tensor made by a Keras layer or
    operation (or a `keras.Input`): whether it has a `_keras_history`."""
    return getattr(tensor, "_keras_history", None) is not None


def operation_of(tensor):
    """The layer or operation that made the symbolic `tensor`
    (`tensor._keras_history.operation`; an `InputLayer` for a `keras.Input`)."""
    return tensor._keras_history.operation


def producer(tensor):
    """The node (one call of a layer or operation) that made the symbolic
    `tensor`: `operation._inbound_nodes[node_index]` of its `_keras_history`."""
    op, node_index, _ = tensor._keras_history
    return op._inbound_nodes[node_index]


def inbound_nodes(op) -> list:
    """The nodes of every call of the layer or operation `op` on symbolic
    tensors, in call order (`op._inbound_nodes`)."""
    return list(op._inbound_nodes)


def first_call(op):
    """The node of `op`'s first call on symbolic tensors, or None if it was
    never called (`op._inbound_nodes[0]`)."""
    nodes = op._inbound_nodes
    return nodes[0] if nodes else None


# ---------------------------------------------------------------- layers
def sublayers(layer, recursive: bool = True) -> list:
    """The layers inside `layer`, not `layer` itself: all of them, nested ones
    included, or with `recursive=False` its direct children
    (`layer._flatten_layers(include_self=False, recursive=...)`)."""
    return list(layer._flatten_layers(include_self=False, recursive=recursive))


def own_non_trainable_variables(layer) -> list:
    """The non-trainable variables `layer` created itself, not those of its
    sublayers (`layer._non_trainable_variables`)."""
    return list(layer._non_trainable_variables)


def seed_generators(layer) -> list:
    """The `keras.random.SeedGenerator`s `layer` tracks (`layer._seed_generators`;
    empty for an operation that is not a layer)."""
    return list(getattr(layer, "_seed_generators", None) or [])


def call_node(op, args, kwargs, training=None):
    """Call `op` (a node's layer or operation) on `args` and `kwargs`, passing
    `training` when its `call` takes it, as Keras's functional models do
    (`op._call_context_args`)."""
    if training is not None and "training" in getattr(op, "_call_context_args", ()):
        kwargs = dict(kwargs, training=training)
    return op(*args, **kwargs)


def compiled_loss(model):
    """The loss `model.compile(loss=...)` made, callable as
    `loss(y_true, y_pred)`, or None before `compile` (`model._compile_loss`)."""
    return getattr(model, "_compile_loss", None)


# ------------------------------------------------------- functional graphs
def nodes_by_depth(model) -> dict:
    """The nodes of the functional `model` by depth, `{depth: [node, ...]}`:
    depth 0 makes the outputs, the deepest holds the inputs
    (`model._nodes_by_depth`)."""
    return model._nodes_by_depth


def nodes_in_depth_order(model) -> list:
    """The nodes of the functional `model` in the order its call runs them:
    deepest first (inputs first), every node after those it reads
    (`model._nodes_by_depth`). Input nodes are included (`node.is_input`)."""
    by_depth = model._nodes_by_depth
    return [node for depth in sorted(by_depth, reverse=True) for node in by_depth[depth]]


def replay(nodes, values: dict, training=None, *, replace=None, store=None) -> dict:
    """Run `nodes` of a functional graph on `values`, as Keras's functional
    models run their own: each node's arguments are filled in from `values`
    (keyed by `id(tensor)`), its layer or operation is called (with
    `training` where it takes it: `call_node`) and its outputs are stored.

    The same layer objects are called, so the same weights are read: nothing
    is rebuilt or copied.

    Args:
        nodes: the nodes to run, each after those whose outputs it reads
            (a slice of `nodes_in_depth_order`; input nodes are skipped).
        values: `{id(tensor): value}` holding every tensor the nodes read
            that no earlier node of `nodes` makes; updated in place.
        training: the training flag, passed to the layers that take it.
        replace: `{id(node): fn}`: run `fn(values)` in place of that node's
            call (its value, or the flat list of its values).
        store: `store(tensor, value)` in place of `values[id(tensor)] = value`
            (to change a value on its way, such as a perturbation).

    Returns:
        `values`.
    """
    replace = replace or {}
    for node in nodes:
        if node.is_input:
            continue
        fn = replace.get(id(node))
        if fn is not None:
            out = fn(values)
        else:
            args, kwargs = node.arguments.fill_in(values)
            out = call_node(node.operation, args, kwargs, training)
        for tensor, value in zip(node.outputs, keras.tree.flatten(out)):
            if store is None:
                values[id(tensor)] = value
            else:
                store(tensor, value)
    return values


# ------------------------------------------------------- keras.src helpers
def in_symbolic_scope() -> bool:
    """Whether Keras is tracing symbolically (building a functional graph or
    computing output specs), where no real value flows."""
    return _private("keras.src.backend.common.symbolic_scope", "in_symbolic_scope")()


def current_stateless_scope():
    """The `keras.StatelessScope` in effect (as in `stateless_call` and
    Keras's JAX trainers), or None."""
    return _private("keras.src.backend.common.stateless_scope", "get_stateless_scope")()


_NAMES_KEY = "object_name_uids"


def names_counter():
    """Keras's process-wide counters of automatic layer names (`dense`,
    `dense_1`, ...): a mapping prefix -> count, made if there is none
    (`global_state`'s `object_name_uids`)."""
    get = _private("keras.src.backend.common.global_state", "get_global_attribute")
    return get(_NAMES_KEY, default=collections.defaultdict(int), set_to_default=True)


def set_names_counter(counter) -> None:
    """Make `counter` (a mapping prefix -> count, as `names_counter` returns)
    Keras's process-wide counters of automatic layer names."""
    _private("keras.src.backend.common.global_state", "set_global_attribute")(_NAMES_KEY, counter)


def ask_to_overwrite(path) -> bool:
    """Ask on the terminal whether to overwrite `path`, as `keras.Model.save`
    does with `overwrite=False`; True to go ahead."""
    return _private("keras.src.utils.io_utils", "ask_to_proceed_with_overwrite")(path)
