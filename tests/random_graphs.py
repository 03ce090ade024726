"""Random step graphs for the property tests: a recipe (plain data) and its builder.

A recipe is drawn by hypothesis and printed when a property fails, so a failing
graph can be rebuilt by hand. Nodes are numbered in the order they are made:
the per-step inputs, the constants, the `Feedback` placeholders, then one node
per operation.
"""

from __future__ import annotations

import keras
from hypothesis import strategies as st

import fbexplorer as fbx

ACTIVATIONS = ["tanh", "sigmoid", "relu", "linear"]
CELLS = {
    "gru": keras.layers.GRUCell,
    "rnn": keras.layers.SimpleRNNCell,
    "lstm": keras.layers.LSTMCell,
}
CELL_OPS = ("cell", "shared", "nested", "stacked")
OPS = [
    "dense",
    "dense",
    "add",
    "mul",
    "concat",
    "act",
    "cell",
    "delay",
    "shared",
    "nested",
    "stacked",
]


@st.composite
def recipes(draw, max_ops: int = 6, cells: bool = True, n_inputs=(1, 2), n_constants=(0, 1)):
    """A random step graph: inputs, constants, feedbacks, operations, outputs."""
    inputs = draw(st.lists(st.integers(1, 4), min_size=n_inputs[0], max_size=n_inputs[1]))
    constants = draw(st.lists(st.integers(1, 3), min_size=n_constants[0], max_size=n_constants[1]))
    feedbacks = draw(
        st.lists(
            st.tuples(st.integers(2, 4), st.integers(1, 3), st.sampled_from(["zeros", "ones"])),
            min_size=1,
            max_size=3,
        )
    )
    n_leaves = len(inputs) + len(constants) + len(feedbacks)
    ops_ = []
    n_ops = draw(st.integers(1, max_ops))
    for i in range(n_ops):
        pool = n_leaves + i
        kind = draw(st.sampled_from(OPS if cells else [k for k in OPS if k not in CELL_OPS]))
        # Favour the newest node, so that chains (and consumed delays) form.
        a = draw(st.one_of(st.just(pool - 1), st.integers(0, pool - 1)))
        b = draw(st.integers(0, pool - 1))
        if kind == "dense":
            ops_.append(("dense", a, draw(st.integers(2, 4)), draw(st.sampled_from(ACTIVATIONS))))
        elif kind in ("add", "mul", "concat"):
            ops_.append((kind, a, b))
        elif kind == "act":
            ops_.append(("act", a, draw(st.sampled_from(["tanh", "sigmoid"]))))
        elif kind in ("cell", "stacked"):
            ops_.append((kind, a, draw(st.sampled_from(sorted(CELLS))), draw(st.integers(2, 4))))
        elif kind == "shared":
            ops_.append(("shared", a))
        elif kind == "nested":
            ops_.append(("nested", a, draw(st.integers(2, 3)), draw(st.integers(1, 2))))
        else:
            ops_.append(("delay", a, draw(st.integers(1, 3))))
    computed = list(range(n_leaves, n_leaves + n_ops))
    bind = [draw(st.sampled_from(computed)) for _ in feedbacks]
    extra = draw(st.lists(st.sampled_from(computed), max_size=1))
    outputs = [computed[-1]] + [o for o in extra if o != computed[-1]]
    return {
        "inputs": inputs,
        "constants": constants,
        "feedbacks": feedbacks,
        "ops": ops_,
        "bind": bind,
        "outputs": outputs,
    }


def _width(t) -> int:
    return int(t.shape[-1])


def _match(t, width: int):
    """`t` itself, or a Dense projection of it to `width` units."""
    return t if _width(t) == width else keras.layers.Dense(width)(t)


def _inner_model(width: int, units: int, delay: int):
    """x -> tanh(Dense([x, loop])), fed back with `delay`: a block to nest."""
    x = keras.Input((width,))
    loop = fbx.Feedback((units,), name="inner", delay=delay)
    h = keras.layers.Dense(units, activation="tanh")(keras.layers.Concatenate()([x, loop]))
    return fbx.FeedbackModel(x, h, feedback={"inner": h})


def build(recipe: dict, echo: bool = False, **model_kwargs):
    """The FeedbackModel a recipe describes.

    Every input, constant and feedback placeholder ends up used: any left
    unused by the operations joins an extra output. `echo=True` adds an output
    `echo` of the first input's shape, to feed back in closed-loop generation.
    """
    nodes = []
    inputs = [keras.Input((d,), name=f"x{i}") for i, d in enumerate(recipe["inputs"])]
    constants = [keras.Input((d,), name=f"c{i}") for i, d in enumerate(recipe["constants"])]
    initial = {"zeros": "zeros", "ones": keras.initializers.Ones()}
    placeholders = [
        fbx.Feedback((w,), name=f"fb{i}", delay=k, initial=initial[init])
        for i, (w, k, init) in enumerate(recipe["feedbacks"])
    ]
    nodes += inputs + constants + placeholders
    leaves = len(nodes)
    deps = [{i} for i in range(leaves)]  # the leaves each node depends on
    cells = []  # (cell layer, its input width), for reuse
    for op in recipe["ops"]:
        kind, a = op[0], op[1]
        x = nodes[a]
        deps.append(deps[a] | (deps[op[2]] if kind in ("add", "mul", "concat") else set()))
        if kind == "dense":
            y = keras.layers.Dense(op[2], activation=op[3])(x)
        elif kind in ("add", "mul"):
            other = _match(nodes[op[2]], _width(x))
            layer = keras.layers.Add() if kind == "add" else keras.layers.Multiply()
            y = layer([x, other])
        elif kind == "concat":
            y = keras.layers.Concatenate()([x, nodes[op[2]]])
        elif kind == "act":
            y = keras.layers.Activation(op[2])(x)
        elif kind == "cell":
            layer = CELLS[op[2]](op[3])
            y = fbx.cell(layer)(x)
            cells.append((layer, _width(x)))
        elif kind == "stacked":
            layer = keras.layers.StackedRNNCells([CELLS[op[2]](op[3]), CELLS[op[2]](2)])
            y = fbx.cell(layer)(x)
        elif kind == "shared":  # a second use of an earlier cell: shared weights
            if cells:
                layer, width = cells[-1]
                y = fbx.cell(layer)(_match(x, width))
            else:
                y = fbx.cell(keras.layers.SimpleRNNCell(2))(x)
        elif kind == "nested":  # a small feedback model as one block of this one
            y = fbx.cell(_inner_model(_width(x), op[2], op[3]))(x)
        else:
            y = fbx.delayed(x, delay=op[2])
        nodes.append(y)
    reached = set().union(*(deps[i] for i in recipe["outputs"] + recipe["bind"]))
    outputs = [nodes[i] for i in recipe["outputs"]]
    unused = [nodes[i] for i in range(leaves) if i not in reached]
    if unused:
        outputs.append(keras.layers.Dense(2)(keras.layers.Concatenate()([outputs[0]] + unused)))
    if echo:
        outputs.append(keras.layers.Dense(recipe["inputs"][0], name="echo")(outputs[0]))
    feedback = {
        f"fb{i}": _match(nodes[src], _width(ph))
        for i, (ph, src) in enumerate(zip(placeholders, recipe["bind"]))
    }
    return fbx.FeedbackModel(
        inputs, outputs, feedback=feedback, constants=constants or None, **model_kwargs
    )
