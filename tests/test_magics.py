"""The IPython layer: %%fbmodel and the line magics, through a real InteractiveShell."""

import types

import keras
import numpy as np
import pandas as pd
import pytest
from helpers import seq
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

import fbexplorer as fbx
from fbexplorer.dsl import FbModelError

SEED_CELL = """
h1 = Dense(5, activation="tanh")(Concatenate()([x, prev(h3)]))
h2 = Dense(5, activation="tanh")(h1)
h3 = Dense(5, activation="tanh")(h2)
"""


@pytest.fixture(scope="module")
def ip():
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "fbexplorer")
    return shell


def fbmodel(ip, line, body):
    return ip.run_cell_magic("fbmodel", line, body)


def rendered(ip, capsys, cell: str) -> list[str]:
    """What a notebook user sees when `cell` fails: the non-empty output lines."""
    capsys.readouterr()
    result = ip.run_cell(cell)
    assert not result.success
    captured = capsys.readouterr()
    return [line for line in (captured.out + captured.err).splitlines() if line.strip()]


# -- building ------------------------------------------------------------------


def test_loading_twice_is_harmless(ip):
    ip.run_line_magic("load_ext", "fbexplorer")
    ip.run_line_magic("reload_ext", "fbexplorer")
    assert ip.find_cell_magic("fbmodel") is not None
    for magic in "fbdraw fbtrace fbcompare fbexplore fbfixed fbattractors fbgrad".split():
        assert ip.find_line_magic(magic) is not None


def test_fbmodel_equals_the_python_api(ip):
    model = fbmodel(ip, "net --input x:5 --quiet", SEED_CELL)
    assert ip.user_ns["net"] is model
    assert isinstance(model, fbx.FeedbackModel) and model.name == "net"

    x = keras.Input((5,), name="x")
    loop = fbx.Feedback((5,), name="loop")
    h1 = keras.layers.Dense(5, activation="tanh")(keras.layers.Concatenate()([x, loop]))
    h2 = keras.layers.Dense(5, activation="tanh")(h1)
    h3 = keras.layers.Dense(5, activation="tanh")(h2)
    api = fbx.FeedbackModel(inputs=x, outputs=h3, feedback={"loop": h3})

    assert [w.shape for w in model.get_weights()] == [w.shape for w in api.get_weights()]
    api.set_weights(model.get_weights())
    X = seq(3, 7, 5)
    np.testing.assert_allclose(model(X), api(X), atol=1e-6)
    assert [(s.name, s.delay) for s in model.graph.specs] == [("h3_prev", 1)]


def test_layers_are_named_after_their_variables(ip):
    model = fbmodel(ip, "net --input x:5 --quiet", SEED_CELL)
    names = {layer.name for layer in model.graph.model.layers}
    assert {"h1", "h2", "h3"} <= names


def test_prev_of_a_later_line_is_a_running_sum(ip):
    model = fbmodel(ip, "acc --input x:3 --quiet", "s = Add()([x, prev(s)])\n")
    X = seq(2, 6, 3)
    np.testing.assert_allclose(model(X), np.cumsum(X, axis=1), atol=1e-5)


def test_prev_with_delay_two(ip):
    model = fbmodel(ip, "acc2 --input x:2 --quiet", "s = Add()([x, prev(s, delay=2)])\n")
    X = seq(2, 7, 2)
    want = X.copy()
    for t in range(2, 7):
        want[:, t] += want[:, t - 2]
    np.testing.assert_allclose(model(X), want, atol=1e-5)
    assert [(s.name, s.delay) for s in model.graph.specs] == [("s_prev2", 2)]


def test_prev_of_an_input_is_a_forward_delay(ip):
    model = fbmodel(ip, "lag --input x:2 --quiet", "h = Add()([x, prev(x, delay=2)])\n")
    X = seq(2, 5, 2)
    want = X.copy()
    want[:, 2:] += X[:, :-2]
    np.testing.assert_allclose(model(X), want, atol=1e-6)


def test_prev_of_an_earlier_line(ip):
    body = "a = Dense(3, use_bias=False)(x)\nb = Add()([a, prev(a)])\n"
    model = fbmodel(ip, "diff --input x:4 --quiet", body)
    X = seq(2, 5, 4)
    kernel = model.graph.model.get_layer("a").kernel.numpy()
    a = X @ kernel
    want = a.copy()
    want[:, 1:] += a[:, :-1]
    np.testing.assert_allclose(model(X), want, atol=1e-5)


def test_prev_shape_is_inferred_through_convolutions(ip):
    body = (
        "c1 = Conv2D(4, 3, padding='same')(Concatenate()([img, prev(c2)]))\n"
        "c2 = Conv2D(6, 3, padding='same', activation='relu')(c1)\n"
        "y = Dense(2)(GlobalAveragePooling2D()(c2))\n"
    )
    model = fbmodel(ip, "conv --input img:8,8,1 --quiet", body)
    (spec,) = model.graph.specs
    assert tuple(spec.shape) == (8, 8, 6)
    assert model(seq(2, 3, 8, 8, 1)).shape == (2, 3, 2)


def test_explicit_shape_outputs_constants_initial_and_stateful(ip):
    ip.user_ns["units"] = 4
    body = (
        "h = Dense(units, activation='tanh')(Concatenate()([x, ctx, prev(h, shape=(units,), "
        "initial='learned')]))\n"
        "y = Dense(1)(h)\n"
        "z = Dense(2)(h)\n"
    )
    model = fbmodel(ip, "many --input x:3 --constant ctx:2 --output y,z --stateful --quiet", body)
    assert model.stateful
    (spec,) = model.graph.specs
    assert spec.initial == "learned" and tuple(spec.shape) == (4,)
    y, z = model([seq(4, 5, 3), seq(4, 2)])
    assert y.shape == (4, 5, 1) and z.shape == (4, 5, 2)


def test_outputs_default_to_the_last_variable_assigned(ip):
    model = fbmodel(ip, "last --input x:3 --quiet", "a = Dense(2)(x)\nb = Dense(6)(a)\n")
    assert model(seq(1, 2, 3)).shape == (1, 2, 6)


def test_plain_python_after_the_output_runs_and_the_output_is_the_layers(ip):
    """`cfg['units'] = 4` after the output changes a dict and binds no variable; `n = 3`
    binds one that holds no layer output: the output is still the last layer output, h."""
    ip.user_ns["cfg"] = cfg = {}
    ip.user_ns["box"] = box = types.SimpleNamespace()
    body = "h = Dense(4)(x)\ncfg['units'] = 4\nbox.size = 2\nn, (m, *rest) = 3, (4, 5)\n"
    model = fbmodel(ip, "plain --input x:3 --quiet", body)
    assert cfg == {"units": 4} and box.size == 2
    x = seq(2, 5, 3)
    dense = model.step_model.get_layer("h")
    expected = np.asarray(dense(x.reshape(-1, 3))).reshape(2, 5, 4)  # Dense at every step
    np.testing.assert_allclose(np.asarray(model(x)), expected, atol=1e-6)
    # The variables unpacked are the cell's: --output may name them (and is refused here).
    with pytest.raises(FbModelError, match="line 5: 'rest' is list"):
        fbmodel(ip, "plain2 --input x:3 --output rest --quiet", body)


def test_steps_for_a_constants_only_model(ip):
    body = "h = Dense(3, activation='tanh')(Concatenate()([c, prev(h)]))\n"
    model = fbmodel(ip, "cnet --constant c:2 --steps 4 --quiet", body)
    C = seq(2, 2)
    layer = model.graph.model.get_layer("h")
    kernel, bias = (np.asarray(w) for w in layer.get_weights())
    h, want = np.zeros((2, 3), "float32"), []
    for _ in range(6):  # numpy loop: h_t = tanh([c, h_{t-1}] W + b)
        h = np.tanh(np.concatenate([C, h], axis=1) @ kernel + bias)
        want.append(h)
    want = np.stack(want, axis=1)
    np.testing.assert_allclose(model(C), want[:, :4], atol=1e-5)
    np.testing.assert_allclose(model(C, steps=6), want, atol=1e-5)


def test_inline_layers_and_cells_are_named_after_their_variables(ip):
    body = (
        "h = cell(LSTMCell(4))(Concatenate()([x, prev(g)]))\ngru = GRUCell(2)\ng = cell(gru)(h)\n"
    )
    model = fbmodel(ip, "named --input x:3 --quiet", body)
    assert [s.name for s in model.graph.specs] == ["g_prev", "h/h", "h/c", "gru/h"]
    assert isinstance(model.graph.model.get_layer("h"), keras.layers.LSTMCell)
    assert isinstance(model.graph.model.get_layer("gru"), keras.layers.GRUCell)

    # The same states as fbx.cell gives a cell of that name in Python.
    x = keras.Input((3,), name="x")
    h = fbx.cell(keras.layers.LSTMCell(4, name="h"))(x)
    api = fbx.FeedbackModel(x, h)
    assert [s.name for s in api.graph.specs] == ["h/h", "h/c"]


RERUN_CELL = """
h = Dense(4, activation="tanh")(Concatenate()([x, prev(y)]))
z = ops.tanh(cell(GRUCell(3))(Dense(3)(h)))
y = Dense(2)(cell(LSTMCell(2))(Concatenate()([z, prev(x, delay=2)])))
"""


def test_rerunning_a_cell_gives_the_same_names(ip):
    def names(model):
        return [op.name for op in model.graph.model.operations], [s.name for s in model.graph.specs]

    first = fbmodel(ip, "again --input x:3 --quiet", RERUN_CELL)
    keras.layers.GRUCell(3), keras.layers.Dense(3), keras.layers.LSTMCell(2)  # made outside
    second = fbmodel(ip, "again --input x:3 --quiet", RERUN_CELL)
    assert names(second) == names(first)
    layers, states = names(first)
    assert {"gru_cell", "lstm_cell", "dense", "concatenate", "tanh"} <= set(layers)
    assert set(states) == {"y_prev", "x_prev2", "gru_cell/h", "lstm_cell/h", "lstm_cell/c"}

    # Names taken from the first model still work on the second.
    X = seq(2, 5, 3)
    start = {"gru_cell/h": seq(2, 3, seed=1), "lstm_cell/c": seq(2, 2, seed=2)}
    second.set_weights(first.get_weights())
    np.testing.assert_allclose(
        second(X, initial_state=start), first(X, initial_state=start), atol=1e-6
    )
    want = fbx.trace(first, X, nodes=["gru_cell", "lstm_cell/c"])
    pd.testing.assert_frame_equal(fbx.trace(second, X, nodes=["gru_cell", "lstm_cell/c"]), want)


def test_delayed_default_names_are_stable_on_reruns(ip, monkeypatch):
    monkeypatch.setitem(ip.user_ns, "fbx", fbx)
    body = "h = Dense(2)(x)\ny = Add()([fbx.delayed(h), fbx.delayed(h, delay=1)])\n"
    for _ in range(2):
        model = fbmodel(ip, "dl --input x:2 --quiet", body)
        assert [s.name for s in model.graph.specs] == ["h_delay1", "h_delay1_1"]
    # Outside the cell, default names stay unique process-wide, as before.
    x = keras.Input((2,), name="x")
    h = keras.layers.Dense(2, name="h")(x)
    api = fbx.FeedbackModel(x, keras.layers.Add()([h, fbx.delayed(h)]))
    assert api.graph.specs[0].name not in {"h_delay1", "h_delay1_1"}


def test_a_notebook_cell_layer_keeps_its_state_names_on_reruns(ip):
    ip.user_ns["shared"] = keras.layers.GRUCell(3, name="shared")
    for _ in range(2):
        model = fbmodel(ip, "usesh --input x:3 --quiet", "h = cell(shared)(x)\n")
        assert [s.name for s in model.graph.specs] == ["shared/h"]


def test_automatic_names_do_not_clash_with_other_layers(ip):
    # A notebook layer and a layer named on a later line hold the names that
    # the cell's unnamed layers would get first.
    ip.user_ns["enc"] = keras.layers.Dense(3, name="dense")
    body = (
        "a = ops.tanh(Dense(3)(enc(x)))\n"
        "concatenate = Dense(3)(Concatenate()([a, x]))\n"
        "b = Dense(2)(concatenate)\n"
    )
    for _ in range(2):
        model = fbmodel(ip, "clash --input x:3 --quiet", body)
        names = [layer.name for layer in model.graph.model.layers]
        assert len(names) == len(set(names)), names
        assert {"dense", "dense_1", "concatenate", "concatenate_1"} <= set(names)
        assert model.graph.model.get_layer("dense") is ip.user_ns["enc"]


def test_the_languages_names_win_over_the_notebooks(ip, monkeypatch):
    notebook = dict(cell="a notebook value", prev=None, ops=0, Dense=1, units=4)
    for name, value in notebook.items():
        monkeypatch.setitem(ip.user_ns, name, value)
    body = "h = cell(LSTMCell(units))(x)\ny = Dense(2)(ops.tanh(Add()([h, prev(h)])))\n"
    model = fbmodel(ip, "shadow --input x:3 --quiet", body)
    assert [s.name for s in model.graph.specs] == ["h_prev", "h/h", "h/c"]
    assert model(seq(2, 4, 3)).shape == (2, 4, 2)
    assert ip.user_ns["cell"] == "a notebook value" and ip.user_ns["Dense"] == 1


def test_fbmodel_draws_the_model(ip, monkeypatch):
    shown = []
    monkeypatch.setattr("fbexplorer.magics.display", shown.append)
    fbmodel(ip, "net --input x:5", SEED_CELL)
    fbmodel(ip, "net --input x:5 --unroll 3", SEED_CELL)
    fbmodel(ip, "net --input x:5 --quiet", SEED_CELL)
    assert len(shown) == 2
    assert "h3_prev" in shown[0].source and "cluster" not in shown[0].source
    assert "cluster" in shown[1].source


def test_help_text_has_an_example(ip, capsys):
    ip.run_cell("%%fbmodel?")
    out = capsys.readouterr().out
    assert "prev(var, delay=1" in out and "Example" in out and "--input" in out
    text = " ".join(out.split())
    assert "--steps N" in text and "states are h/h and h/c" in text
    assert "running the cell again gives the same names" in text


# -- errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "body, expected",
    [
        ("h1 = Dnese(5)(x)\n", "line 2: name 'Dnese' is not defined"),
        ("h1 = Dense(5)(x\n", "line 2: invalid Python"),
        ("a = Dense(5)(x)\nb = Dense(5)(c)\nc = Dense(5)(b)\n", "line 3: 'c' is used before"),
        ("a = Dense(5)(prev(x + 1))\n", "line 2: prev() takes the name of a variable"),
        ("a = Dense(5)(Concatenate()([x, prev(h9)]))\n", "line 2: prev(h9): 'h9' is never"),
        ("y = 3\na = Dense(5)(Concatenate()([x, prev(y)]))\n", "line 2: 'y' is int"),
        ("n = 3\n", "line 2: no variable the cell assigns is the output of a layer ('n' is int"),
        ("cfg['k'] = 1\na = Dense(5)(prev(cfg))\n", "prev(cfg): 'cfg' is never assigned"),
        (
            "h = Dense(3)(Concatenate()([x, prev(h, shape=(5,))]))\n",
            "line 2: prev(h, shape=(5,)): the given shape (5,) does not match the shape (3,)",
        ),
        (
            "h = Dense(3)(Concatenate()([x, prev(x, shape=(4,))]))\n",
            "line 2: prev(x, shape=(4,)): the given shape (4,) does not match the shape (5,) of "
            "input 'x'",
        ),
        (
            "h = Dense(3)(Concatenate()([x, prev(h, shape=(3,), dtype='int32')]))\n",
            "the given dtype int32 does not match the dtype float32 that 'h' has",
        ),
        ("import math\n", "the cell assigns no variable"),
        ("h = Add()([x, prev(h)])\nh2 = Dense(3)(h)\nh = h2\n", "Inputs have incompatible"),
        ("a = Dense(5)(prev(a, delay=0))\n", "delay must be an int >= 1"),
        ("h = LSTMCell(3)(x)\n", "as in cell(LSTMCell(8))(x)"),
        ("return x\n", "line 2: invalid Python: 'return' outside function"),
        ("h = \x00\n", "line 2: invalid Python"),
    ],
)
def test_cell_mistakes_are_one_line(ip, capsys, body, expected):
    ip.user_ns["net"] = sentinel = object()
    lines = rendered(ip, capsys, "%%fbmodel net --input x:5 --quiet\n" + body)
    assert len(lines) == 1, lines
    assert lines[0].startswith("FbModelError: ")
    assert expected in lines[0]
    assert ip.user_ns["net"] is sentinel
    with pytest.raises(FbModelError):
        fbmodel(ip, "net --input x:5 --quiet", body)


@pytest.mark.parametrize(
    "line, expected",
    [
        ("net --input x:5 --bogus", "unrecognized arguments: --bogus"),
        ("net --input x5", "--input x5: write NAME:SHAPE"),
        ("net --input x:0", "--input x:0: write NAME:SHAPE"),
        ("net --constant c:a,b --input x:5", "--constant c:a,b"),
        ("net --input x:5 --unroll 3 --quiet", "give one of them"),
        ("net --input x:5 --unroll 0", "--unroll 0"),
        ("net", "declare the inputs"),
        ("1net --input x:5", "NAME must be a Python variable name"),
        ("net --input x:5 --output 'y z'", "--output"),
        ("net --input x:5 --output q", "--output q: the cell assigns no variable 'q'"),
        ("net --input x:5 --input x:3", "--input x is given twice, as x:5 and x:3"),
        ("net --constant c:2 --constant c:2 --steps 3", "--constant c is given twice"),
        ("net --input x:5 --constant x:5", "'x' is given both as --input x:5 and as --constant"),
        ("net --input 'x:5", "No closing quotation"),
        ("net --constant c:5", "give --steps N, as in %%fbmodel net --constant c:5 --steps"),
        ("net --constant c:5 --steps 0", "--steps 0: give a number of steps >= 1"),
        ("net --input x:5 --steps 3", "--steps 3 is for a model with only --constant"),
        ("net --input cell:5", "input 'cell' would hide the cell language's own 'cell'"),
    ],
)
def test_bad_flags(ip, capsys, line, expected):
    ip.user_ns["net"] = sentinel = object()
    lines = rendered(ip, capsys, f"%%fbmodel {line}\nh = Dense(5)(x)\n")
    assert len(lines) == 1 and expected in lines[0], lines
    assert ip.user_ns["net"] is sentinel


def test_a_failed_cell_keeps_the_previous_model(ip, capsys):
    good = fbmodel(ip, "keep --input x:5 --quiet", SEED_CELL)
    rendered(ip, capsys, "%%fbmodel keep --input x:5\nh = Dense(5)(nope)\n")
    assert ip.user_ns["keep"] is good


# -- line magics ------------------------------------------------------------------


@pytest.fixture
def traced(ip):
    model = fbmodel(ip, "tnet --input x:5 --quiet", SEED_CELL)
    ip.user_ns["X"] = seq(2, 6, 5)
    return model


def test_fbdraw(ip, traced):
    cyclic = ip.run_line_magic("fbdraw", "tnet")
    unrolled = ip.run_line_magic("fbdraw", "tnet --unroll 2")
    assert cyclic.source == fbx.draw(traced).source
    assert unrolled.source == fbx.draw(traced, unroll=2).source


def test_fbtrace_matches_trace_and_binds(ip, traced):
    df = ip.run_line_magic("fbtrace", "tnet X[:1] --nodes h1,h3_prev -o df")
    want = fbx.trace(traced, ip.user_ns["X"][:1], nodes=["h1", "h3_prev"])
    pd.testing.assert_frame_equal(df, want)
    assert ip.user_ns["df"] is df


NODES_CELL = """
d = Dense(3, activation="tanh", name="d")
a = d(Concatenate()([x, prev(b)]))
b = d(Concatenate()([cell(LSTMCell(3))(ops.tanh(a)), x]))
y = Add()([b, prev(x, delay=2)])
"""


def test_fbtrace_nodes_takes_every_name_trace_takes(ip):
    model = fbmodel(ip, "every --input x:3 --quiet", NODES_CELL)
    X = ip.user_ns["X3"] = seq(2, 4, 3)
    every = list(fbx.trace(model, X)["node"].cat.categories)
    states = [s.name for s in model.graph.specs if s.kind == "cell"]
    assert len(states) == 2 and all("/" in s for s in states)
    assert {"d#1", "b_prev", "x_prev2", *states} <= set(every)
    for node in every:
        df = ip.run_line_magic("fbtrace", f"every X3 --nodes {node}")
        pd.testing.assert_frame_equal(df, fbx.trace(model, X, nodes=[node]))
    df = ip.run_line_magic("fbtrace", f"every X3 --nodes '{', '.join(every)}'")
    pd.testing.assert_frame_equal(df, fbx.trace(model, X, nodes=every))
    df = ip.run_line_magic("fbcompare", "every X3 --chunks 2 --nodes lstm_cell/c,d#1")
    pd.testing.assert_frame_equal(
        df, fbx.compare_stateful(model, X, chunks=2, nodes=["lstm_cell/c", "d#1"])
    )


def test_fbcompare_matches_compare_stateful(ip, traced):
    df = ip.run_line_magic("fbcompare", "tnet X --chunks 3 -o cmp")
    pd.testing.assert_frame_equal(df, fbx.compare_stateful(traced, ip.user_ns["X"], chunks=3))
    assert ip.user_ns["cmp"] is df


def test_fbfixed_matches_fixed_points_and_binds(ip, traced):
    ip.user_ns["held"] = {"x": np.full(5, 0.2, "float32")}
    fp = ip.run_line_magic("fbfixed", "tnet held --initial X -o fp")
    want = fbx.fixed_points(traced, ip.user_ns["held"], initial=ip.user_ns["X"])
    assert ip.user_ns["fp"] is fp and len(fp) == len(want) >= 1
    pd.testing.assert_frame_equal(fp.frame, want.frame)
    np.testing.assert_array_equal(fp.flat, want.flat)


def test_fbattractors_matches_attractors_and_binds(ip, traced):
    ip.user_ns["held"] = {"x": np.full(5, 0.2, "float32")}
    frame = ip.run_line_magic(
        "fbattractors", "tnet held --initial X --starts 16 --steps 40 --max-period 4 -o census"
    )
    want = fbx.attractors(
        traced, ip.user_ns["held"], initial=ip.user_ns["X"], starts=16, steps=40, max_period=4
    )
    census = ip.user_ns["census"]
    assert isinstance(census, fbx.Attractors) and frame is census.frame
    pd.testing.assert_frame_equal(frame, want.frame)
    np.testing.assert_array_equal(census.labels, want.labels)
    assert census.settings == want.settings
    ip.user_ns["start"] = census.states  # states by name, as --initial takes them too
    again = ip.run_line_magic("fbattractors", "tnet held --initial start --starts 4 --steps 5")
    want = fbx.attractors(traced, ip.user_ns["held"], initial=census.states, starts=4, steps=5)
    pd.testing.assert_frame_equal(again, want.frame)


def test_fbgrad_matches_gradient_flow_and_binds(ip, traced, monkeypatch):
    import fbexplorer.magics

    shown = []
    monkeypatch.setattr(fbexplorer.magics, "display", shown.append)
    monkeypatch.setitem(ip.user_ns, "target", seq(2, 6, 5, seed=1))
    traced.compile(loss="mse")
    df = ip.run_line_magic("fbgrad", "tnet X target --nodes h1,h3_prev --plot -o g")
    want = fbx.gradient_flow(traced, ip.user_ns["X"], ip.user_ns["target"], nodes=["h1", "h3_prev"])
    pd.testing.assert_frame_equal(df, want)
    assert ip.user_ns["g"] is df
    assert len(shown) == 1 and shown[0].layout.yaxis.type == "log"


def test_fbexplore_matches_explore_and_binds(ip, traced):
    ex = ip.run_line_magic("fbexplore", "tnet X --nodes h1,h3_prev --chunks 3 --window 2 -o ex")
    want = fbx.explore(traced, ip.user_ns["X"], nodes=["h1", "h3_prev"], chunks=3, window=2)
    assert ip.user_ns["ex"] is ex and isinstance(ex, fbx.Explorer)
    pd.testing.assert_frame_equal(ex.frame, want.frame)
    assert (ex.chunks, ex.window, ex.epoch) == (3, 2, None)
    assert ex.view.data == want.view.data


def test_fbexplore_takes_a_trace_callback_and_fixed_points(ip, traced):
    X = ip.user_ns["X"]
    watch = ip.user_ns["watch"] = fbx.TraceCallback(X[:1])
    traced.compile("sgd", "mse")
    traced.fit(X, X, epochs=2, verbose=0, callbacks=[watch])
    held = {"x": np.full(5, 0.2, "float32")}
    fp = ip.user_ns["fp"] = fbx.fixed_points(traced, held, initial=X, n_starts=4)
    ex = ip.run_line_magic("fbexplore", "watch --fixed fp --window 2")
    want = fbx.explore(watch, fixed_points=fp, window=2)
    assert [label for label, _ in ex.epoch.options] == ["0", "1", "2"]  # the epoch slider
    assert ex.fixed_points is fp and ex.window == 2
    pd.testing.assert_frame_equal(ex.frame, want.frame)
    assert ex.view.data == want.view.data and "fixed" in ex.view.data["panels"]["portrait"]
    ex = ip.run_line_magic("fbexplore", "tnet X[:1] --fixed fp")
    assert ex.view.data == fbx.explore(traced, X[:1], fixed_points=fp).view.data
    assert ex.fixed_points is fp and ex.epoch is None


@pytest.mark.parametrize(
    "line, error, expected",
    [
        ("unfit X", UsageError, "'unfit' is a TraceCallback, which shows the inputs and nodes "
         "it traced during fit, in one run; drop DATA, as in %fbexplore unfit"),
        ("unfit --nodes h1", UsageError, "drop --nodes"),
        ("unfit --chunks 2", UsageError, "drop --chunks"),
    ],
)  # fmt: skip
def test_fbexplore_callback_errors(ip, capsys, traced, line, error, expected):
    ip.user_ns["unfit"] = fbx.TraceCallback(ip.user_ns["X"])
    with pytest.raises(error) as info:
        ip.run_line_magic("fbexplore", line)
    assert expected in str(info.value)
    lines = rendered(ip, capsys, f"%fbexplore {line}")
    assert len(lines) == 1 and expected in lines[0], lines


def test_fbexplore_callback_before_fit_waits_for_its_first_trace(ip):
    ip.user_ns["unfit"] = fbx.TraceCallback(ip.user_ns["X"])
    ex = ip.run_line_magic("fbexplore", "unfit")
    assert "Waiting for the first trace" in ex.note.value


@pytest.mark.parametrize(
    "magic, line, error, expected",
    [
        ("fbfixed", "tnet {'y':0}", FbModelError, "has no input 'y'"),
        ("fbattractors", "tnet {'y':0}", FbModelError, "%fbattractors: fbx.attractors: model"),
        ("fbattractors", "tnet X --starts 0", UsageError, "--starts 0: give a whole number >= 1"),
        ("fbattractors", "tnet X --max-period -2", UsageError, "--max-period -2: give a whole"),
        ("fbattractors", "tnet X --steps x", UsageError, "argument --steps: invalid int value"),
        ("fbattractors", "tnet {'x':X[0,0]} --initial Q", UsageError, "--initial 'Q' could not"),
        ("fbattractors", "nothere X", UsageError, "no model named 'nothere'"),
        ("fbgrad", "tnet X --nodes zz", FbModelError, "has no node 'zz'"),
        ("fbgrad", "tnet Q", UsageError, "DATA 'Q' could not be evaluated"),
        ("fbdraw", "nothere", UsageError, "no model named 'nothere'"),
        ("fbdraw", "X", UsageError, "'X' is a ndarray, not a FeedbackModel"),
        ("fbtrace", "tnet Y", UsageError, "DATA 'Y' could not be evaluated"),
        ("fbtrace", "tnet X --nodes zz", FbModelError, "zz"),
        ("fbtrace", "tnet X --nodes h1/h", FbModelError, "has no node 'h1/h'. Known nodes"),
        ("fbtrace", "tnet X --nodes ,", UsageError, "--nodes ',': give node names"),
        ("fbcompare", "tnet X --chunks 2 --nodes zz", FbModelError, "no node 'zz'"),
        ("fbcompare", "tnet X", UsageError, "--chunks"),
        ("fbexplore", "tnet", UsageError, "give the data to trace 'tnet' on, as in %fbexplore"),
        ("fbexplore", "X", UsageError, "'X' is a ndarray, not a FeedbackModel or a fbx.Trace"),
        ("fbexplore", "nothere X", UsageError, "no model named 'nothere'"),
        ("fbexplore", "tnet X --nodes zz", FbModelError, "no node 'zz'"),
        ("fbexplore", "tnet X --window 0", UsageError, "--window 0: give a number of steps"),
        ("fbexplore", "tnet X --fixed nofp", UsageError, "--fixed 'nofp' could not be evaluated"),
        ("fbexplore", "tnet X --fixed X", UsageError, "--fixed X is a ndarray, not a fbx.Fixed"),
    ],
)
def test_line_magic_errors(ip, capsys, traced, magic, line, error, expected):
    with pytest.raises(error, match=None) as info:
        ip.run_line_magic(magic, line)
    assert expected in str(info.value)
    lines = rendered(ip, capsys, f"%{magic} {line}")
    assert len(lines) == 1 and expected in lines[0], lines
