"""The Keras adapter (fbexplorer/_keras.py): the one module that names Keras's
private attributes and imports `keras.src`.

- the installed Keras has everything the adapter reads (one assertion that
  names each missing attribute or import, and the supported range);
- the adapter's functions do what Keras does (the model's own call, the
  compiled loss, Keras's scopes);
- no other module of the package names a Keras private attribute or imports
  `keras.src` (a grep, whose patterns are checked on the adapter itself).
"""

import importlib
import re
from pathlib import Path

import keras
import numpy as np
import pytest

from fbexplorer import _keras

PACKAGE = Path(_keras.__file__).parent
SUPPORTED = "keras>=3.10,<4"

# Keras private names the grep looks for besides those the adapter reads
# (_keras.PRIVATE_ATTRIBUTES): names an engine is tempted to reach for.
# Besides these, any private name found on a small Keras model, layer,
# tensor, node or variable (`keras_private_names`) that fbexplorer does not
# define itself.
MORE_KERAS_PRIVATE = (
    "_outbound_nodes",
    "_operations",
    "_layers",
    "_tracker",
    "_functional",
    "_trainable_variables",
    "_build_shapes_dict",
    "_compile_metrics",
    "_loss_tracker",
    "_jax_state",
    "_called",
)


def _probes():
    """A small compiled model and its parts: what the adapter reads from."""
    x = keras.Input((3,), name="x")
    drop = keras.layers.Dropout(0.5, seed=1, name="drop")
    dense = keras.layers.Dense(2, name="dense")
    y = dense(drop(x))
    model = keras.Model(x, y)
    model.compile(loss="mse")
    return {"tensor": y, "layer": dense, "dropout": drop, "model": model, "input": x}


# Where each private attribute is read, on the probes.
WHERE = {
    "_keras_history": "tensor",
    "_inbound_nodes": "layer",
    "_nodes_by_depth": "model",
    "_flatten_layers": "model",
    "_non_trainable_variables": "layer",
    "_seed_generators": "dropout",
    "_call_context_args": "dropout",
    "_compile_loss": "model",
}


def missing_names(probes, attributes=None, modules=None, where=WHERE) -> list:
    """What the installed Keras lacks of what the adapter needs, one line each."""
    attributes = _keras.PRIVATE_ATTRIBUTES if attributes is None else attributes
    modules = _keras.PRIVATE_MODULES if modules is None else modules
    missing = []
    for name, what in attributes.items():
        if not hasattr(probes[where[name]], name):
            missing.append(f"the attribute `{name}` of {what}")
    for module, names in modules.items():
        try:
            found = importlib.import_module(module)
        except ImportError:
            missing.append(f"the module `{module}`")
            continue
        missing += [f"`{name}` in `{module}`" for name in names if not hasattr(found, name)]
    return missing


def missing_message(missing) -> str:
    return (
        f"Keras {keras.__version__} lacks what fbexplorer/_keras.py needs: "
        f"{'; '.join(missing)}. fbexplorer supports {SUPPORTED}; update the adapter "
        f"(fbexplorer/_keras.py) for this Keras, or install a supported one."
    )


def test_installed_keras_has_what_the_adapter_needs():
    missing = missing_names(_probes())
    assert not missing, missing_message(missing)


def test_a_missing_name_is_named():
    probes = _probes()
    attributes = {**_keras.PRIVATE_ATTRIBUTES, "_no_such_attribute": "a keras.layers.Layer"}
    where = {**WHERE, "_no_such_attribute": "layer"}
    modules = {**_keras.PRIVATE_MODULES, "keras.src.no_such_module": ("f",)}
    modules["keras.src.utils.io_utils"] = ("no_such_function",)
    missing = missing_names(probes, attributes, modules, where)
    assert len(missing) == 3, missing  # these three, not the names Keras has
    message = missing_message(missing)
    assert "the attribute `_no_such_attribute` of a keras.layers.Layer" in message
    assert "the module `keras.src.no_such_module`" in message
    assert "`no_such_function` in `keras.src.utils.io_utils`" in message
    assert SUPPORTED in message


def test_the_supported_range_is_pinned_and_stated():
    pyproject = (PACKAGE.parent / "pyproject.toml").read_text()
    assert f'"{SUPPORTED}"' in pyproject
    assert SUPPORTED in _keras.__doc__
    assert SUPPORTED in (PACKAGE.parent / "docs" / "engine.md").read_text()
    major, minor = (int(p) for p in keras.__version__.split(".")[:2])
    assert (3, 10) <= (major, minor) < (4, 0), f"Keras {keras.__version__} is not in {SUPPORTED}"


# ------------------------------------------------------- what it computes
def test_graph_walk_matches_the_model():
    p = _probes()
    node = _keras.producer(p["tensor"])
    assert node.operation is p["layer"] and _keras.operation_of(p["tensor"]) is p["layer"]
    assert _keras.inbound_nodes(p["layer"]) == [node] and _keras.first_call(p["layer"]) is node
    assert _keras.first_call(keras.layers.Dense(1)) is None
    assert _keras.has_history(p["tensor"]) and not _keras.has_history(np.zeros(2))
    order = [n.operation for n in _keras.nodes_in_depth_order(p["model"]) if not n.is_input]
    assert order == [p["dropout"], p["layer"]]
    assert _keras.sublayers(p["model"], recursive=False) == p["model"].layers


def test_replay_computes_what_the_model_computes():
    p = _probes()
    model, x = p["model"], np.random.default_rng(0).normal(size=(4, 3)).astype("float32")
    values = {id(model.inputs[0]): x}
    _keras.replay(_keras.nodes_in_depth_order(model), values)
    np.testing.assert_allclose(values[id(model.outputs[0])], model(x), rtol=1e-6)
    # training reaches the layers that take it: Dropout(0.5) zeroes or doubles
    dense_node = _keras.producer(p["tensor"])
    dropped = dense_node.input_tensors[0]
    values = _keras.replay(_keras.nodes_in_depth_order(model), {id(model.inputs[0]): x}, True)
    d = np.asarray(values[id(dropped)])
    assert np.all((d == 0) | np.isclose(d, 2 * x)) and np.any(d == 0) and np.any(d != 0)
    # a node replaced, and a hook in place of storing
    stored, values = {}, {id(model.inputs[0]): x}

    def store(tensor, value):
        stored[id(tensor)] = values[id(tensor)] = value

    _keras.replay(
        _keras.nodes_in_depth_order(model),
        values,
        replace={id(dense_node): lambda v: np.ones((4, 2))},
        store=store,
    )
    assert set(stored) == {id(dropped), id(p["tensor"])}
    np.testing.assert_array_equal(stored[id(p["tensor"])], np.ones((4, 2)))


def test_layer_state_and_loss():
    p = _probes()
    assert len(_keras.seed_generators(p["dropout"])) == 1
    assert _keras.seed_generators(p["layer"]) == []
    bn = keras.layers.BatchNormalization()
    bn.build((None, 3))
    assert {v.path for v in _keras.own_non_trainable_variables(bn)} == {
        v.path for v in bn.non_trainable_variables
    }
    y, pred = np.ones((2, 2), "float32"), np.zeros((2, 2), "float32")
    np.testing.assert_allclose(
        _keras.compiled_loss(p["model"])(y, pred), keras.losses.MeanSquaredError()(y, pred)
    )


def test_scopes_and_names():
    assert not _keras.in_symbolic_scope() and _keras.current_stateless_scope() is None
    with keras.StatelessScope() as scope:
        assert _keras.current_stateless_scope() is scope
    counter = _keras.names_counter()
    try:
        _keras.set_names_counter({"dense": 41})
        assert keras.layers.Dense(1).name == "dense_41"
    finally:
        _keras.set_names_counter(counter)


# ------------------------------------------------------------- the grep
def _attribute_pattern(names) -> re.Pattern:
    """`obj._name` or a string `"_name"` (getattr, hasattr) for any of `names`."""
    alt = "|".join(sorted(map(re.escape, names)))
    return re.compile(rf"""(?:\.|["'])({alt})\b""")


KERAS_SRC = re.compile(r"""keras\.src\b|from\s+keras\s+import\s+src\b""")


def keras_private_names() -> set:
    """The private names of a small Keras model, layer, cell, tensor, node,
    variable and seed generator, as `dir` lists them."""
    p = _probes()
    objects = [
        p["tensor"],
        p["layer"],
        p["dropout"],
        p["model"],
        keras.layers.LSTMCell(2),
        _keras.producer(p["tensor"]),
        p["layer"].kernel,
        keras.random.SeedGenerator(1),
    ]
    return {n for o in objects for n in dir(o) if n.startswith("_") and not n.startswith("__")}


def _modules():
    return [p for p in sorted(PACKAGE.rglob("*.py")) if p.name != "_keras.py"]


def _own_private_names() -> set:
    """The private names fbexplorer defines itself (functions, methods,
    attributes it assigns), outside the adapter."""
    own = set()
    for path in _modules():
        text = path.read_text()
        own |= set(re.findall(r"\bdef (_[a-z]\w*)", text))
        own |= set(re.findall(r"\.(_[a-z]\w*)\s*(?:=[^=]|,[^=\n]*=[^=])", text))
    return own


def test_the_grep_finds_what_the_adapter_reads():
    """The patterns find every name the adapter lists, in the adapter: so the
    grep below can fail. And the adapter names nothing private it does not list."""
    text = (PACKAGE / "_keras.py").read_text()
    code = re.sub(r'"""[\s\S]*?"""|#.*', "", text)  # not its docstrings' and comments' prose
    listed = set(_keras.PRIVATE_ATTRIBUTES)
    found = set(_attribute_pattern(listed | set(MORE_KERAS_PRIVATE)).findall(code))
    assert found == listed
    used = set(re.findall(r"""(?:\.|["'])(_[a-z][a-z0-9_]*)\b""", code))
    assert used == listed, used ^ listed
    assert {m for m in re.findall(r"keras\.src[\w.]*", code)} == set(_keras.PRIVATE_MODULES)


def test_no_module_but_the_adapter_names_keras_private_names():
    explicit = set(_keras.PRIVATE_ATTRIBUTES) | set(MORE_KERAS_PRIVATE)
    names = explicit | (keras_private_names() - _own_private_names())
    pattern = _attribute_pattern(names)
    found = []
    for path in _modules():
        for number, line in enumerate(path.read_text().splitlines(), 1):
            hits = pattern.findall(line) + KERAS_SRC.findall(line)
            found += [f"{path.relative_to(PACKAGE.parent)}:{number}: {h}" for h in hits]
    assert not found, (
        "Only fbexplorer/_keras.py may name Keras's private attributes or import "
        "keras.src (add a function there and call it). Found:\n" + "\n".join(found)
    )


@pytest.mark.parametrize("name", ["_fbx_spec", "_label", "_flatten_io", "_store"])
def test_our_own_private_names_do_not_trip_the_grep(name):
    names = set(_keras.PRIVATE_ATTRIBUTES) | set(MORE_KERAS_PRIVATE)
    names |= keras_private_names() - _own_private_names()
    assert not _attribute_pattern(names).search(f"net.{name} = 1; getattr(x, '{name}')")
