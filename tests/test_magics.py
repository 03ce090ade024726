"""The IPython layer: %%fbmodel and the line magics, through a real InteractiveShell."""

import keras
import numpy as np
import pandas as pd
import pytest
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


def seq(*shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


# -- building ------------------------------------------------------------------


def test_loading_twice_is_harmless(ip):
    ip.run_line_magic("load_ext", "fbexplorer")
    ip.run_line_magic("reload_ext", "fbexplorer")
    assert ip.find_cell_magic("fbmodel") is not None
    for magic in ("fbdraw", "fbtrace", "fbcompare", "fbexplore", "fbfixed", "fbgrad"):
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


def test_prev_with_steps_two(ip):
    model = fbmodel(ip, "acc2 --input x:2 --quiet", "s = Add()([x, prev(s, steps=2)])\n")
    X = seq(2, 7, 2)
    want = X.copy()
    for t in range(2, 7):
        want[:, t] += want[:, t - 2]
    np.testing.assert_allclose(model(X), want, atol=1e-5)
    assert [(s.name, s.delay) for s in model.graph.specs] == [("s_prev2", 2)]


def test_prev_of_an_input_is_a_forward_delay(ip):
    model = fbmodel(ip, "lag --input x:2 --quiet", "h = Add()([x, prev(x, steps=2)])\n")
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
    assert "prev(var, steps=1" in out and "Example" in out and "--input" in out


# -- errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "body, expected",
    [
        ("h1 = Dnese(5)(x)\n", "line 2: name 'Dnese' is not defined"),
        ("h1 = Dense(5)(x\n", "line 2: invalid Python"),
        ("a = Dense(5)(x)\nb = Dense(5)(c)\nc = Dense(5)(b)\n", "line 3: 'c' is used before"),
        ("a = Dense(5)(prev(x + 1))\n", "line 2: prev() takes the name of a variable"),
        ("a = Dense(5)(Concatenate()([x, prev(h9)]))\n", "line 2: prev(h9): 'h9' is never"),
        ("a = Dense(5)(x)\ny = 3\n", "line 3: 'y' is int"),
        ("import math\n", "the cell assigns no variable"),
        ("h = Add()([x, prev(h)])\nh2 = Dense(3)(h)\nh = h2\n", "Inputs have incompatible"),
        ("a = Dense(5)(prev(a, steps=0))\n", "steps must be an int >= 1"),
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
        ("net --input x:5 --input x:3", "input and constant names must differ"),
        ("net --input 'x:5", "No closing quotation"),
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


@pytest.mark.parametrize(
    "magic, line, error, expected",
    [
        ("fbfixed", "tnet {'y':0}", FbModelError, "has no input 'y'"),
        ("fbgrad", "tnet X --nodes zz", FbModelError, "has no node 'zz'"),
        ("fbgrad", "tnet Q", UsageError, "DATA 'Q' could not be evaluated"),
        ("fbdraw", "nothere", UsageError, "no model named 'nothere'"),
        ("fbdraw", "X", UsageError, "'X' is a ndarray, not a FeedbackModel"),
        ("fbtrace", "tnet Y", UsageError, "DATA 'Y' could not be evaluated"),
        ("fbtrace", "tnet X --nodes zz", FbModelError, "zz"),
        ("fbcompare", "tnet X", UsageError, "--chunks"),
        ("fbexplore", "tnet", UsageError, "data"),
    ],
)
def test_line_magic_errors(ip, capsys, traced, magic, line, error, expected):
    with pytest.raises(error, match=None) as info:
        ip.run_line_magic(magic, line)
    assert expected in str(info.value)
    lines = rendered(ip, capsys, f"%{magic} {line}")
    assert len(lines) == 1 and expected in lines[0], lines


def test_readme_cell_builds_the_readme_network(ip):
    import pathlib
    import re

    text = (pathlib.Path(__file__).parents[1] / "README.md").read_text()
    cell = re.search(r"## In Jupyter.*?```python\n(%%fbmodel.*?)```", text, re.S).group(1)
    line, body = cell.split("\n", 1)
    model = fbmodel(ip, line.removeprefix("%%fbmodel ") + " --quiet", body)
    names = {layer.name for layer in model.graph.model.layers}
    assert {"d1", "d2", "d3"} <= names
    assert [(s.name, s.delay) for s in model.graph.specs] == [("d3_prev", 1)]
