"""A `.keras` file is checked like user input when it loads.

One small model is saved once per module; each test rewrites its config.json
(the zip's model description, which anyone can edit) and checks that
`keras.saving.load_model` fails there, with the message that building the same
thing in code gets, behind the saved model's name (and the file's, under
`fbx.load_model`).
"""

import json
import math
import zipfile

import keras
import numpy as np
import pytest

import fbexplorer as fbx
from fbexplorer.step_cell import MAX_NESTED_SLOTS

SAVED = "The saved FeedbackModel 'net'"


def build(delay=2, **options):
    """x and a constant c; `loop` (delay 2) fed back from h; `dl`, h delayed by 3
    from ones; an LSTM cell; two outputs."""
    x = keras.Input((3,), name="x")
    c = keras.Input((2,), name="c")
    loop = fbx.Feedback((4,), name="loop", delay=delay)
    h = keras.layers.Dense(4, name="h")(keras.layers.Concatenate()([x, c, loop]))
    dl = fbx.delayed(h, delay=3, name="dl", initial="ones")
    cell_out = fbx.cell(keras.layers.LSTMCell(2, name="lstm"))(h)
    y = keras.layers.Dense(2, name="y")(keras.layers.Concatenate()([cell_out, dl]))
    return fbx.FeedbackModel(x, [y, h], constants=[c], feedback={"loop": h}, name="net", **options)


X = np.random.default_rng(0).normal(size=(2, 5, 3)).astype("float32")
C = np.random.default_rng(1).normal(size=(2, 2)).astype("float32")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """(path of the saved model, its outputs on [X, C])."""
    net = build()
    path = tmp_path_factory.mktemp("saved") / "net.keras"
    net.save(path)
    return path, [np.asarray(o) for o in net([X, C])]


def edit(saved, tmp_path, change):
    """A copy of the saved file whose config (a dict) `change` edited in place."""
    source = saved[0]
    with zipfile.ZipFile(source) as zf:
        files = {n: zf.read(n) for n in zf.namelist()}
    config = json.loads(files["config.json"])
    change(config["config"])
    files["config.json"] = json.dumps(config).encode()
    path = tmp_path / "edited.keras"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def load_error(path) -> str:
    with pytest.raises(ValueError) as info:
        keras.saving.load_model(path)
    return str(info.value)


def code_error(make) -> str:
    with pytest.raises(ValueError) as info:
        make()
    return str(info.value)


def edge(config, name):
    return next(e for e in config["step_graph"]["feedback"] if e["name"] == name)


def layer(config, name):
    return next(x for x in config["step_graph"]["model"]["config"]["layers"] if x["name"] == name)


# ------------------------------------------------------------ a good file
def test_a_good_file_loads_and_computes_the_same(saved, tmp_path):
    path, expected = saved
    for loaded in (keras.saving.load_model(path), fbx.load_model(path)):
        assert [s.delay for s in loaded.graph.specs] == [2, 1, 1, 3]
        assert [s.kind for s in loaded.graph.specs] == ["feedback", "cell", "cell", "delayed"]
        for got, want in zip(loaded([X, C]), expected):
            np.testing.assert_allclose(np.asarray(got), want, atol=1e-6)
    # An edit that is valid loads too: a longer delay changes what the loop feeds.
    longer = keras.saving.load_model(
        edit(saved, tmp_path, lambda c: edge(c, "loop").update(delay=5))
    )
    assert longer.graph.spec("loop").delay == 5
    reference = build(delay=5)
    reference.set_weights(longer.get_weights())
    for got, want in zip(longer([X, C]), reference([X, C])):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-6)


# ----------------------------------------------------------------- delays
BAD_DELAYS = [0, -3, 2.5, "2", None, True, False, [2], {"k": 2}, 2.0, math.inf]


def test_a_bad_delay_fails_at_load_with_the_message_code_gets(saved, tmp_path):
    for delay in BAD_DELAYS:
        path = edit(saved, tmp_path, lambda c, d=delay: edge(c, "loop").update(delay=d))
        in_code = code_error(lambda d=delay: fbx.Feedback((4,), name="loop", delay=d))
        assert in_code.startswith("Feedback 'loop': `delay` must be an integer >= 1"), delay
        assert load_error(path) == f"{SAVED}: {in_code}", delay


def test_a_bad_delay_of_a_delayed_edge_names_that_edge_and_the_file(saved, tmp_path):
    path = edit(saved, tmp_path, lambda c: edge(c, "dl").update(delay=0))
    message = (
        "Feedback 'dl': `delay` must be an integer >= 1 (the value from `delay` steps ago). "
        "Received: delay=0"
    )
    assert load_error(path) == f"{SAVED}: {message}"
    with pytest.raises(ValueError) as info:
        fbx.load_model(path)
    assert str(info.value) == f"{SAVED} in '{path}': {message}"


def test_a_huge_whole_delay_loads_as_an_int(saved, tmp_path):
    for huge in (10**9, 10**30):
        path = edit(saved, tmp_path, lambda c, k=huge: edge(c, "loop").update(delay=k))
        loaded = keras.saving.load_model(path)
        delay = loaded.graph.spec("loop").delay
        assert type(delay) is int and delay == huge
    path = edit(saved, tmp_path, lambda c: edge(c, "loop").update(delay=1e9))
    assert "Received: delay=1000000000.0" in load_error(path)


# -------------------------------------------------------- kinds and names
def test_an_unknown_kind_fails_at_load(saved, tmp_path):
    path = edit(saved, tmp_path, lambda c: edge(c, "loop").update(kind="bogus"))
    assert load_error(path) == (
        f"{SAVED}: Feedback 'loop': `kind` must be one of 'feedback', 'delayed', 'cell'. "
        f"Received: kind='bogus'"
    )


def test_a_cell_edge_must_name_a_cell_layer(saved, tmp_path):
    for change in [
        lambda c: edge(c, "loop").update(kind="cell"),  # a cell edge with no cell
        lambda c: edge(c, "lstm/h").update(cell="nope"),
        lambda c: edge(c, "lstm/h").update(kind="feedback"),  # ... that names a cell
    ]:
        message = load_error(edit(saved, tmp_path, change))
        assert message.startswith(SAVED + ": Feedback '")
        assert "`cell` must name a cell layer of the step model (['lstm'])" in message


def test_a_feedback_name_must_be_its_placeholder(saved, tmp_path):
    for name in ["other", "h", "lstm/c", 5, "", None]:
        message = load_error(
            edit(saved, tmp_path, lambda c, n=name: edge(c, "loop").update(name=n))
        )
        if isinstance(name, str) and name:
            assert message == (
                f"{SAVED}: feedback 0 is named '{name.replace('/', '__')}' in its config, but "
                f"the step model's input 2 there is the keras.Input 'loop'. The names must "
                f"match (the file was edited or is damaged; save the model again)."
            )
        else:
            in_code = code_error(lambda n=name: fbx.Feedback((4,), name=n))
            assert message == f"{SAVED}: {in_code}"


def test_input_constant_and_edge_names_must_match_the_step_model(saved, tmp_path):
    for change, expected in [
        (lambda g: g.update(inputs=["y"]), "input 0 is named 'y' in its config"),
        (lambda g: g.update(constants=["x"]), "constant 0 is named 'x' in its config"),
        (lambda g: g.update(inputs=["c"], constants=["x"]), "input 0 is named 'c'"),
        (
            lambda g: g["feedback"].pop(),
            "its step model has 6 inputs, but its config lists 1 inputs, 1 constants and "
            "3 delayed edges, 5 in all",
        ),
        (
            lambda g: g["feedback"].reverse(),
            "feedback 0 is named 'dl' in its config, but the step model's input 2",
        ),
    ]:
        message = load_error(edit(saved, tmp_path, lambda c, f=change: f(c["step_graph"])))
        assert message.startswith(SAVED + ": ") and expected in message, expected


# ------------------------------------------------------- shapes, initial
def test_a_placeholder_shape_is_checked_as_in_code(saved, tmp_path):
    unknown = edit(
        saved, tmp_path, lambda c: layer(c, "loop")["config"].update(batch_shape=[None, None])
    )
    in_code = code_error(lambda: fbx.Feedback((None,), name="loop"))
    assert load_error(unknown) == f"{SAVED}: {in_code}"
    as_int = edit(saved, tmp_path, lambda c: layer(c, "dl")["config"].update(dtype="int32"))
    assert load_error(as_int) == (
        f"{SAVED}: Feedback 'dl' expects shape (4,) and dtype int32, but its source 'h' has "
        f"shape (4,) and dtype float32. Make the source match (for example with a Dense or "
        f"Reshape layer), or declare fbx.Feedback((4,), name='dl', dtype='float32')."
    )
    wider = edit(
        saved, tmp_path, lambda c: layer(c, "loop")["config"].update(batch_shape=[None, 7])
    )
    message = load_error(wider)
    assert message.startswith(f"{SAVED}: its step model cannot be rebuilt from its config: ")
    assert "expected axis -1 of input shape to have value 9" in message


DENSE = {"module": "keras.layers", "class_name": "Dense", "config": {"units": 2}}


def test_a_bad_initial_value_fails_at_load_as_in_code(saved, tmp_path):
    for initial in ["bogus", "glorot", None, 3, True, DENSE, {"class_name": "X"}]:
        path = edit(saved, tmp_path, lambda c, i=initial: edge(c, "dl").update(initial=i))
        in_code = code_error(lambda i=initial: fbx.Feedback((4,), name="dl", initial=i))
        assert in_code.startswith("Feedback 'dl': `initial` must be 'zeros', 'learned' or a")
        assert load_error(path) == f"{SAVED}: {in_code}", initial


def test_an_initializer_by_name_or_config_still_loads(saved, tmp_path):
    for initial in ("ones", {"module": "keras.initializers", "class_name": "Constant",
                             "config": {"value": 2.0}, "registered_name": None}):  # fmt: skip
        path = edit(saved, tmp_path, lambda c, i=initial: edge(c, "dl").update(initial=i))
        loaded = keras.saving.load_model(path)
        assert isinstance(loaded.graph.spec("dl").initial, keras.initializers.Initializer)


# ----------------------------------------------------------- the options
BAD_OPTIONS = [
    ("return_sequences", "no"),
    ("return_sequences", 1),
    ("return_state", None),
    ("stateful", "False"),
    ("go_backwards", [True]),
    ("unroll", 0),
    ("teacher_forcing", 1.5),
    ("teacher_forcing", -0.1),
    ("teacher_forcing", "0.5"),
    ("teacher_forcing", True),
    ("teacher_forcing", math.nan),
    ("teacher_forcing", None),
    ("steps", 0),
    ("steps", 2.5),
    ("steps", True),
    ("steps", "3"),
    ("hoist", "yes"),
    ("hoist", 1),
    ("loop_jit", "always"),
    ("loop_jit", None),
]


def test_a_bad_option_fails_at_load_as_in_code(saved, tmp_path):
    for field, value in BAD_OPTIONS:
        in_code = code_error(lambda f=field, v=value: build(**{f: v}))
        assert in_code.startswith("FeedbackModel 'net': ")
        assert f"Received: {field}=" in in_code, (field, value)
        path = edit(saved, tmp_path, lambda c, f=field, v=value: c.update({f: v}))
        assert load_error(path) == SAVED + in_code[len("FeedbackModel 'net'") :], (field, value)


def test_good_options_load_as_saved(saved, tmp_path):
    options = dict(return_sequences=False, stateful=True, go_backwards=True, unroll=True,
                   teacher_forcing=0.25, steps=4, hoist=False, loop_jit=True)  # fmt: skip
    loaded = keras.saving.load_model(edit(saved, tmp_path, lambda c: c.update(options)))
    assert {k: getattr(loaded, k) for k in options} == options
    assert type(loaded.teacher_forcing) is float and type(loaded.steps) is int


def test_model_level_fields(saved, tmp_path):
    for change, expected in [
        (lambda c: c.update(foo=1), "Unrecognized keyword arguments passed to FeedbackModel"),
        (lambda c: c.update(trainable="yes"), "`trainable` must be True or False"),
        (lambda c: c.update(step_graph=[]), "`step_graph` must be the step graph's config"),
        (lambda c: c.pop("step_graph"), ": FeedbackModel 'net': `outputs` is required"),
    ]:
        assert expected in load_error(edit(saved, tmp_path, change))
    message = load_error(edit(saved, tmp_path, lambda c: c.update(name=["net"])))
    assert message.startswith("The saved FeedbackModel ['net']: `name` must be a non-empty")


# ------------------------------------------------------ the config's layout
def test_a_config_of_the_wrong_layout_fails_at_load(saved, tmp_path):
    for change, field in [
        (lambda g: g.update(inputs="x"), "step_graph.inputs"),
        (lambda g: g.update(constants=[2]), "step_graph.constants"),
        (lambda g: g.update(feedback={"loop": 1}), "step_graph.feedback"),
        (lambda g: g["feedback"][0].pop("delay"), "step_graph.feedback[0]"),
        (lambda g: g["feedback"][0].update(extra=1), "step_graph.feedback[0]"),
        (lambda g: g.pop("outputs"), "step_graph"),
        (lambda g: g.update(outputs={"kind": "single"}), "step_graph.outputs"),
        (lambda g: g.update(outputs={"kind": "list", "n": 3}), "step_graph.outputs"),
        (lambda g: g.update(outputs={"kind": "list", "n": True}), "step_graph.outputs"),
        (lambda g: g.update(outputs={"kind": "dict", "keys": ["a", "a"]}), "step_graph.outputs"),
        (lambda g: g.update(outputs={"kind": "tuple"}), "step_graph.outputs"),
        (lambda g: g.update(model="functional"), "step_graph.model"),
    ]:
        message = load_error(edit(saved, tmp_path, lambda c, f=change: f(c["step_graph"])))
        assert message.startswith(f"{SAVED}: `{field}` must be "), message
        assert "(the file was edited or is damaged; save the model again)" in message


def test_outputs_as_a_dict_of_names_load(saved, tmp_path):
    path = edit(
        saved,
        tmp_path,
        lambda c: c["step_graph"].update(outputs={"kind": "dict", "keys": ["a", "b"]}),
    )
    loaded = keras.saving.load_model(path)
    out = loaded([X, C])
    np.testing.assert_allclose(np.asarray(out["a"]), saved[1][0], atol=1e-6)


def test_a_step_model_that_is_no_model_or_cannot_be_rebuilt(saved, tmp_path):
    dense = edit(saved, tmp_path, lambda c: c["step_graph"].update(model=layer(c, "h")))
    assert load_error(dense).startswith(
        f"{SAVED}: `step_graph.model` must be a functional keras.Model"
    )
    dangling = edit(
        saved,
        tmp_path,
        lambda c: c["step_graph"]["model"]["config"].update(output_layers=[["zz", 0, 0]]),
    )
    assert load_error(dangling) == (
        f"{SAVED}: its step model cannot be rebuilt from its config: "
        f"RuntimeError: Internal error: could not find layer zz."
    )


# ---------------------------------------------------------- nested models
def nested(delay):
    x = keras.Input((2,), name="x")
    loop = fbx.Feedback((2,), name="loop", delay=delay)
    h = keras.layers.Add(name="add")([x, loop])
    inner = fbx.FeedbackModel(x, h, feedback={"loop": h}, name="inner")
    x2 = keras.Input((2,), name="x2")
    return fbx.FeedbackModel(x2, fbx.cell(inner)(x2), name="outer")


def test_a_nested_model_is_checked_too(tmp_path):
    outer = nested(delay=2)
    path = tmp_path / "outer.keras"
    outer.save(path)
    seq = np.random.default_rng(2).normal(size=(1, 4, 2)).astype("float32")
    np.testing.assert_allclose(
        np.asarray(keras.saving.load_model(path)(seq)), np.asarray(outer(seq)), atol=1e-6
    )

    def inner_edge(config):
        cell = next(
            x for x in config["step_graph"]["model"]["config"]["layers"] if x["name"] == "inner"
        )
        return cell["config"]["model"]["config"]["step_graph"]["feedback"][0]

    for delay in (0, 2.5):
        bad = edit((path,), tmp_path, lambda c, d=delay: inner_edge(c).update(delay=d))
        assert load_error(bad) == (
            f"The saved FeedbackModel 'inner': Feedback 'loop': `delay` must be an integer >= 1 "
            f"(the value from `delay` steps ago). Received: delay={delay}"
        )
    # A nested delay is one state per step: a huge one is refused before it is built.
    huge = edit((path,), tmp_path, lambda c: inner_edge(c).update(delay=10**9))
    message = load_error(huge)
    assert message.startswith("The saved FeedbackModel 'outer': its step model cannot be rebuilt")
    assert f"at most {MAX_NESTED_SLOTS} in all, but its delays {{'loop': 1000000000}}" in message


# -------------------------------------------------------- checks in code
def test_a_bad_shape_in_code():
    for shape in [(0,), (-3,), (2.5,), ("5",), (True,), 5.0, None, "ab"]:
        with pytest.raises(ValueError, match=r"^Feedback 'loop': `shape` must be a tuple of pos"):
            fbx.Feedback(shape, name="loop")


def test_numpy_whole_numbers_are_whole_numbers():
    loop = fbx.Feedback((np.int64(4),), name="loop", delay=np.int64(3))
    spec = loop._keras_history.operation._fbx_spec
    assert spec.shape == (4,) and spec.delay == 3 and type(spec.delay) is int
    net = build(steps=np.int32(4), teacher_forcing=np.float32(0.5), stateful=np.bool_(True))
    assert type(net.steps) is int and type(net.stateful) is bool and net.teacher_forcing == 0.5


def test_delayed_delay_checked_before_naming():
    h = keras.Input((2,), name="zz")
    for delay in (0, 1.5, "2", True):
        with pytest.raises(ValueError, match=r"^fbx.delayed: `delay` must be an integer >= 1"):
            fbx.delayed(h, delay=delay)
    assert fbx.delayed(h, delay=2)._keras_history.operation.name == "zz_delay2"


def test_a_nested_model_with_too_long_delays_is_refused_in_code():
    with pytest.raises(ValueError, match=r"^fbx.cell\('inner'\): a nested model carries each step"):
        nested(delay=MAX_NESTED_SLOTS + 1)


@keras.saving.register_keras_serializable(package="test_load_validation")
class RunningSum(fbx.FeedbackModel):
    """A subclass that builds its step graph from a setting of its own."""

    def __init__(self, units=2, **kwargs):
        x = keras.Input((units,), name="x")
        loop = fbx.Feedback((units,), name="loop")
        total = keras.layers.Add(name="total")([x, loop])
        super().__init__(x, total, feedback={"loop": total}, **kwargs)
        self.units = units

    def get_config(self):
        return {"units": self.units, "name": self.name, "stateful": self.stateful}


def test_a_subclass_without_a_saved_step_graph_loads_and_is_checked(tmp_path):
    path = tmp_path / "sum.keras"
    RunningSum(units=3, name="sum").save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is RunningSum and loaded.units == 3
    seq = np.random.default_rng(3).normal(size=(2, 4, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(loaded(seq)), np.cumsum(seq, axis=1), atol=1e-6)
    bad = edit((path,), tmp_path, lambda c: c.update(stateful="no"))
    assert load_error(bad) == (
        "The saved RunningSum 'sum': `stateful` must be True or False. Received: stateful='no'"
    )
