"""docs/errors.md, checked: every misuse it lists gets the message it shows.

The messages are read from the page, so the page and the code cannot drift
apart. Each `### `id`` section of docs/errors.md has a ```text block: an
exception line (`ValueError: ...`), checked by the function of that id in
`MISUSES`, or a line starting with "No error", whose behaviour is checked by
the function of that id in `BEHAVIOURS`.
"""

import os
import pathlib
import re
import stat
import warnings
import zipfile

import keras
import numpy as np
import oracle
import pytest
import tensorflow as tf

import fbexplorer as fbx

PAGE = pathlib.Path(__file__).parent.parent / "docs" / "errors.md"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def catalogue() -> dict:
    """`{id: first line of the section's text block}`, in page order."""
    text = PAGE.read_text()
    entries = {}
    sections = re.split(r"^### `([a-z0-9-]+)`.*$", text, flags=re.M)
    for name, body in zip(sections[1::2], sections[2::2]):
        block = re.search(r"```text\n(.*?)\n```", body, flags=re.S)
        assert block, f"docs/errors.md: section `{name}` has no ```text block"
        entries[name] = " ".join(block.group(1).split())
    return entries


def base(delay=1, **kwargs):
    """The page's running example: x -> h, with h fed back as `loop`."""
    x = keras.Input((5,), name="x")
    loop = fbx.Feedback((5,), name="loop", delay=delay)
    h = keras.layers.Dense(5, name="h")(keras.layers.Concatenate()([x, loop]))
    return fbx.FeedbackModel(x, h, feedback={"loop": h}, name="net", **kwargs)


def seq(batch=2, steps=3, width=5):
    return np.random.default_rng(0).normal(size=(batch, steps, width)).astype("float32")


def memory_budget(size):
    """A context with FBX_MEMORY_BUDGET set, so that messages quote one budget."""
    patch = pytest.MonkeyPatch()
    patch.setenv("FBX_MEMORY_BUDGET", size)
    return patch.context()


# ------------------------------------------------------------------ misuses
def wrong_rank():
    base()(np.zeros((2, 5)))


def wrong_feature_size():
    base()(np.zeros((2, 3, 6)))


def string_input():
    base()(np.full((2, 3, 5), "a"))


def wrong_feature_size_after_predict():
    net = base()
    net.predict(np.zeros((2, 3, 5)), verbose=0)
    net.predict(np.zeros((2, 3, 6)), verbose=0)


def empty_batch():
    with pytest.raises(ValueError, match="0 samples"):
        base()(np.zeros((0, 3, 5)))
    base().predict(np.zeros((0, 3, 5)), verbose=0)


def targets_wrong_length():
    net = base()
    net.compile("sgd", "mse")
    with pytest.raises(ValueError, match="the targets have 4 steps, but the inputs have 3"):
        net.evaluate(np.zeros((2, 3, 5)), np.zeros((2, 4, 5)), verbose=0)
    net.fit(np.zeros((2, 3, 5)), np.zeros((2, 4, 5)), verbose=0)


def not_numeric_input():
    base()(np.full((2, 3, 5), None))


def zero_steps():
    base()(np.zeros((2, 0, 5)))


def different_lengths():
    a = keras.Input((2,), name="a")
    b = keras.Input((2,), name="b")
    net = fbx.FeedbackModel([a, b], keras.layers.Add()([a, b]), name="net")
    net([np.zeros((1, 3, 2)), np.zeros((1, 4, 2))])


def wrong_number_of_inputs():
    base()([np.zeros((2, 3, 5)), np.zeros((2, 3, 5))])


def unknown_input():
    base()({"x": np.zeros((2, 3, 5)), "y": np.zeros((2, 3, 5))})


def mask_wrong_rank():
    base()(np.zeros((2, 3, 5)), mask=np.ones((2, 3, 1), bool))


def mask_wrong_length():
    base()(np.zeros((2, 3, 5)), mask=np.ones((2, 4), bool))


def initial_state_unknown():
    base()(np.zeros((2, 3, 5)), initial_state={"lop": np.zeros((2, 5))})


def initial_state_wrong_shape():
    base()(np.zeros((2, 3, 5)), initial_state={"loop": np.zeros((2, 4))})


def initial_state_wrong_batch():
    base()(np.zeros((2, 3, 5)), initial_state={"loop": np.zeros((3, 5))})


def truth_wrong_length():
    base()({"x": np.zeros((2, 3, 5)), "loop": np.zeros((2, 2, 5))})


def stateful_other_batch():
    net = base(stateful=True)
    net(np.zeros((4, 3, 5)))
    net(np.zeros((6, 3, 5)))


def stateful_partial_last_batch():
    base(stateful=True).predict(np.zeros((10, 3, 5)), batch_size=4, verbose=0)


def stateful_compact_compiled():
    with memory_budget("1GB"):
        net = base(delay=10**9, stateful=True)
        net.compile("sgd", "mse")
        net.fit(np.zeros((2, 3, 5)), np.zeros((2, 3, 5)), shuffle=False, verbose=0)


def stateful_compact_growth():
    with memory_budget("1kB"):
        base(delay=10**9, stateful=True)(np.zeros((2, 30, 5)))


def get_states_over_budget():
    with memory_budget("1GB"):
        net = base(delay=10**9, stateful=True)
        net(np.zeros((2, 3, 5)))
        net.get_states()


def unbound_feedback():
    x = keras.Input((5,), name="x")
    loop = fbx.Feedback((5,), name="loop")
    h = keras.layers.Dense(5, name="h")(keras.layers.Concatenate()([x, loop]))
    fbx.FeedbackModel(x, h, name="net")


def feedback_shape_mismatch():
    x = keras.Input((5,), name="x")
    loop = fbx.Feedback((5,), name="loop")
    h = keras.layers.Dense(5, name="h")(keras.layers.Concatenate()([x, loop]))
    small = keras.layers.Dense(3, name="small")(h)
    fbx.FeedbackModel(x, h, feedback={"loop": small}, name="net")


def bad_delay():
    fbx.Feedback((5,), name="loop", delay=0)


def missing_file():
    fbx.load_model("missing.keras")


def truncated_file():
    base().save("net.keras")
    data = pathlib.Path("net.keras").read_bytes()
    pathlib.Path("net.keras").write_bytes(data[: len(data) // 2])
    fbx.load_model("net.keras")


def corrupted_file():
    base().save("net.keras")
    data = bytearray(pathlib.Path("net.keras").read_bytes())
    with zipfile.ZipFile("net.keras") as zf:
        info = zf.getinfo("model.weights.h5")
    start = info.header_offset + 100  # inside the weights' compressed bytes
    data[start : start + 64] = bytes(b ^ 0xFF for b in data[start : start + 64])
    pathlib.Path("net.keras").write_bytes(bytes(data))
    fbx.load_model("net.keras")


def incomplete_file():
    base().save("net.keras")
    with zipfile.ZipFile("net.keras") as zf:
        kept = {n: zf.read(n) for n in ("config.json", "metadata.json")}
    with zipfile.ZipFile("net.keras", "w") as zf:  # what an interrupted in-place save leaves
        for name, data in kept.items():
            zf.writestr(name, data)
    fbx.load_model("net.keras")


def feedback_unknown_name():
    x = keras.Input((5,), name="x")
    loop = fbx.Feedback((5,), name="loop")
    h = keras.layers.Dense(5, name="h")(keras.layers.Concatenate()([x, loop]))
    fbx.FeedbackModel(x, h, feedback={"loop": h, "lop": h}, name="net")


def feedback_dtype_mismatch():
    x = keras.Input((5,), name="x")
    loop = fbx.Feedback((5,), name="loop")
    h = keras.layers.Dense(5, name="h")(keras.layers.Concatenate()([x, loop]))
    as_int = keras.layers.Activation("linear", dtype="int32", name="as_int")(h)
    fbx.FeedbackModel(x, h, feedback={"loop": as_int}, name="net")


def duplicate_feedback_name():
    x = keras.Input((5,), name="x")
    h = keras.layers.Add()([x, fbx.Feedback((5,), name="loop"), fbx.Feedback((5,), name="loop")])
    fbx.FeedbackModel(x, h, feedback={"loop": h}, name="net")


def undeclared_input():
    x = keras.Input((5,), name="x")
    other = keras.Input((2,), name="other")
    h = keras.layers.Dense(5, name="h")(keras.layers.Concatenate()([x, other]))
    fbx.FeedbackModel(x, h, name="net")


def feedback_listed_as_input():
    x = keras.Input((5,), name="x")
    loop = fbx.Feedback((5,), name="loop")
    h = keras.layers.Dense(5, name="h")(keras.layers.Concatenate()([x, loop]))
    fbx.FeedbackModel([x, loop], h, feedback={"loop": h}, name="net")


def empty_outputs():
    fbx.FeedbackModel(keras.Input((5,), name="x"), [], name="net")


def unknown_shape():
    fbx.Feedback((None,), name="loop")


def bad_initial():
    fbx.Feedback((5,), name="loop", initial="no_such_initializer")


def teacher_forcing_out_of_range():
    base(teacher_forcing=1.5)


def not_a_cell():
    fbx.cell(keras.layers.Dense(3, name="d"))


def delayed_not_a_tensor():
    fbx.delayed(np.zeros(3))


def nested_too_many_slots():
    x = keras.Input((5,), name="x")
    loop = fbx.Feedback((5,), name="loop", delay=10**9)
    h = keras.layers.Dense(5, name="h")(keras.layers.Concatenate()([x, loop]))
    fbx.cell(fbx.FeedbackModel(x, h, feedback={"loop": h}, name="inner"))


def missing_input():
    base()({"loop": np.zeros((2, 3, 5))})


def one_tensor_for_several_inputs():
    a = keras.Input((2,), name="a")
    b = keras.Input((2,), name="b")
    fbx.FeedbackModel([a, b], keras.layers.Add()([a, b]), name="net")(np.zeros((1, 3, 2)))


def truth_wrong_shape():
    base()({"x": np.zeros((2, 3, 5)), "loop": np.zeros((2, 3, 2))})


def constants_only_without_steps():
    img = keras.Input((4,), name="img")
    prev = fbx.Feedback((4,), name="prev")
    h = keras.layers.Add()([img, prev])
    fbx.FeedbackModel([], h, constants=[img], feedback={"prev": h}, name="net")(np.zeros((2, 4)))


def not_stateful():
    base().reset_states()


def generate_unfed_input():
    base().generate(np.zeros((1, 3, 5)), steps=2, feed={})


def generate_unknown_output():
    base().generate(np.zeros((1, 3, 5)), steps=2, feed={"x": "out"})


def return_state_over_budget():
    with memory_budget("1GB"):
        base(delay=10**9, return_state=True)(np.zeros((2, 3, 5)))


def unknown_length_over_budget():
    run = tf.function(base(delay=10**9), input_signature=[tf.TensorSpec((None, None, 5))])
    with memory_budget("1GB"):
        run(np.zeros((2, 3, 5), "float32"))


def fixed_points_unknown_input():
    fbx.fixed_points(base(), {"y": np.zeros(5)})


def fixed_points_wrong_shape():
    fbx.fixed_points(base(), {"x": np.zeros((2, 5))})


def fixed_points_no_state():
    x = keras.Input((5,), name="x")
    plain = fbx.FeedbackModel(x, keras.layers.Dense(5)(x), name="plain")
    fbx.fixed_points(plain, {"x": np.zeros(5)})


def gradient_flow_unknown_node():
    fbx.gradient_flow(base(), np.zeros((2, 3, 5)), nodes=["hh"])


def gradient_flow_not_compiled():
    fbx.gradient_flow(base(), np.zeros((2, 3, 5)), np.zeros((2, 3, 5)))


def whole_state_over_budget():
    with memory_budget("1GB"):
        fbx.gradient_flow(base(delay=10**9), np.zeros((2, 3, 5)))


# ------------------------------------------------------ the notebook layer
def cell_magic(body, line="net --input x:5 --quiet"):
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "fbexplorer")
    return shell.run_cell_magic("fbmodel", line, body)


def fbmodel_invalid_python():
    cell_magic("h1 = Dense(5)(x\n")


def fbmodel_unknown_name():
    cell_magic("h1 = Dnese(5)(x)\n")


def fbmodel_cycle_without_delay():
    cell_magic("h1 = Dense(5)(Concatenate()([x, h3]))\nh2 = Dense(5)(h1)\nh3 = Dense(5)(h2)\n")


def fbmodel_prev_not_a_name():
    cell_magic("h1 = Dense(5)(prev(x + 1))\n")


def fbmodel_prev_unassigned():
    cell_magic("h1 = Dense(5)(Concatenate()([x, prev(h9)]))\n")


def fbmodel_shape_mismatch():
    cell_magic("h1 = Add()([x, prev(h3)])\nh3 = Dense(3)(h1)\n")


def fbmodel_bare_cell():
    cell_magic("h = LSTMCell(8)(x)\n")


def fbmodel_not_a_tensor():
    cell_magic("h = Dense(5)(x)\ny = 3\n")


def fbmodel_nothing_assigned():
    cell_magic("Dense(5)(x)\n")


def fbmodel_bad_input_flag():
    cell_magic("h = Dense(5)(x)\n", line="net --input x")


def fbmodel_constants_without_steps():
    cell_magic("h = Dense(5)(Concatenate()([c, prev(h)]))\n", line="net --constant c:5")


def fbmodel_input_hides_language_name():
    cell_magic("h = Dense(5)(cell)\n", line="net --input cell:5")


def fbmodel_unknown_model():
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "fbexplorer")
    shell.user_ns["X"] = seq()
    shell.run_line_magic("fbtrace", "nothere X")


def fbexplore_callback_with_data():
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "fbexplorer")
    shell.user_ns.update(X=seq(), watch=fbx.TraceCallback(seq()))
    shell.run_line_magic("fbexplore", "watch X")


def fbexplore_fixed_not_fixed_points():
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "fbexplorer")
    shell.user_ns.update(X=seq(), net=base())
    shell.run_line_magic("fbexplore", "net X --fixed X")


def explore_not_a_model():
    fbx.explore(keras.Sequential([keras.layers.Dense(1)]), seq())


def explore_fixed_points_other_model():
    import types

    import pandas as pd

    fps = types.SimpleNamespace(states={"h": np.zeros((1, 5))}, frame=pd.DataFrame({"stable": [1]}))
    fbx.explore(base(), seq(), fixed_points=fps)


def trace_callback_every():
    fbx.TraceCallback(seq(), every=0)


def trace_callback_unused():
    fbx.explore(fbx.TraceCallback(seq()))


def trace_carried_over_budget():
    with memory_budget("1GB"):
        net = base(delay=10**9, stateful=True)
        net(np.zeros((2, 3, 5)))
        fbx.trace(net, seq())


# ------------------------------------------------------ portraits and heatmaps
def fixed_points_of_loop():
    """Fixed points of the state `loop` only, as `fbx.fixed_points` returns them."""
    import types

    import pandas as pd

    return types.SimpleNamespace(
        states={"loop": np.zeros((1, 5), "float32")}, frame=pd.DataFrame({"stable": [True]})
    )


def portrait_unknown_node():
    fbx.portrait(base(), seq(), nodes=["lop"])


def portrait_node_without_fixed_point():
    fbx.portrait(base(), seq(), nodes=["h"], fixed_points=fixed_points_of_loop())


def portrait_bad_dims():
    fbx.portrait(base(), seq(), dims=4)


def portrait_too_few_units():
    fbx.pca_project({"v": np.zeros((2, 10, 1))}, dims=2)


def heatmap_bad_order():
    fbx.plot_heatmap(fbx.trace(base(), seq()), "h", order="size")


MISUSES = {f.__name__.replace("_", "-"): f for f in [
    explore_not_a_model, explore_fixed_points_other_model, trace_callback_every,
    trace_callback_unused,
    fbmodel_invalid_python, fbmodel_unknown_name, fbmodel_cycle_without_delay,
    fbmodel_prev_not_a_name, fbmodel_prev_unassigned, fbmodel_shape_mismatch,
    fbmodel_bare_cell, fbmodel_not_a_tensor, fbmodel_nothing_assigned,
    fbmodel_bad_input_flag, fbmodel_unknown_model, fbmodel_constants_without_steps,
    fbmodel_input_hides_language_name, fbexplore_callback_with_data,
    fbexplore_fixed_not_fixed_points,
    wrong_rank, wrong_feature_size, string_input, not_numeric_input, zero_steps,
    different_lengths, wrong_number_of_inputs, unknown_input, mask_wrong_rank,
    mask_wrong_length, initial_state_unknown, initial_state_wrong_shape,
    initial_state_wrong_batch, truth_wrong_length, stateful_other_batch,
    stateful_partial_last_batch, unbound_feedback, feedback_shape_mismatch, bad_delay,
    missing_file, truncated_file, corrupted_file, incomplete_file, feedback_unknown_name,
    feedback_dtype_mismatch, duplicate_feedback_name, undeclared_input,
    feedback_listed_as_input, empty_outputs, unknown_shape, bad_initial,
    teacher_forcing_out_of_range, not_a_cell, delayed_not_a_tensor, missing_input,
    one_tensor_for_several_inputs, truth_wrong_shape, constants_only_without_steps,
    not_stateful, generate_unfed_input, generate_unknown_output,
    portrait_unknown_node, portrait_node_without_fixed_point, portrait_bad_dims,
    portrait_too_few_units, heatmap_bad_order,
    fixed_points_unknown_input, fixed_points_wrong_shape, fixed_points_no_state,
    gradient_flow_unknown_node, gradient_flow_not_compiled,
    wrong_feature_size_after_predict, empty_batch, targets_wrong_length,
    return_state_over_budget, unknown_length_over_budget, stateful_compact_compiled,
    stateful_compact_growth, get_states_over_budget, whole_state_over_budget,
    trace_carried_over_budget, nested_too_many_slots,
]}  # fmt: skip


# -------------------------------------------------------------- behaviours
def integer_input():
    net = base()
    ints = np.arange(30).reshape(2, 3, 5) % 4
    np.testing.assert_allclose(np.asarray(net(ints)), np.asarray(net(ints.astype("float32"))))


def one_step():
    net = base()
    x = seq(steps=1)
    out = np.asarray(net(x))
    assert out.shape == (2, 1, 5)
    np.testing.assert_allclose(out, np.asarray(oracle.run(net, [x])[0][0]), atol=1e-6)


def batch_of_one():
    net = base()
    x = seq(batch=1, steps=4)
    np.testing.assert_allclose(
        np.asarray(net(x)), np.asarray(oracle.run(net, [x])[0][0]), atol=1e-6
    )


def delay_longer_than_sequence():
    net = base(delay=5, return_state=True)
    x = seq(steps=3)
    out, states = net(x)
    w, b = net.step_model.get_layer("h").get_weights()
    zeros_fed = np.concatenate([x, np.zeros_like(x)], axis=-1) @ w + b
    np.testing.assert_allclose(np.asarray(out), zeros_fed, atol=1e-5)
    hist = np.asarray(states["loop"])  # (batch, 5 slots, 5): 2 initial values, then 3 outputs
    np.testing.assert_allclose(hist[:, :2], 0)
    np.testing.assert_allclose(hist[:, 2:], zeros_fed, atol=1e-5)


def nan_in_input():
    net = base()
    x = seq(steps=5)
    x[0, 2, 1] = np.nan
    out = np.asarray(net(x))
    assert np.isfinite(out[1]).all()  # other samples are untouched
    assert np.isfinite(out[0, :2]).all()  # earlier steps are untouched
    assert np.isnan(out[0, 2:]).all()  # this step and, through the loop, every later one
    mask = np.ones((2, 5), bool)
    mask[0, 2] = False
    assert np.isfinite(np.asarray(net(x, mask=mask))).all()  # a masked NaN is not used
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(net(x, mask=mask))
    kernel = tape.gradient(loss, net.step_model.get_layer("h").kernel)
    assert np.isnan(np.asarray(kernel)).any()  # ... but it reaches the gradients
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(net(np.nan_to_num(x), mask=mask))
    kernel = tape.gradient(loss, net.step_model.get_layer("h").kernel)
    assert np.isfinite(np.asarray(kernel)).all()  # the documented fix


def stateful_fit_shuffled():
    message = catalogue()["stateful-fit-shuffled"].split("UserWarning: ", 1)[1]
    net = base(stateful=True)
    net.compile("sgd", "mse")
    x, y = np.zeros((4, 3, 5)), np.zeros((4, 3, 5))
    with pytest.warns(UserWarning) as record:
        net.fit(x, y, batch_size=2, verbose=0)
    assert message in [str(w.message) for w in record]
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        net.fit(x, y, batch_size=2, shuffle=False, verbose=0)  # no warning


BEHAVIOURS = {f.__name__.replace("_", "-"): f for f in [
    integer_input, one_step, batch_of_one, delay_longer_than_sequence, nan_in_input,
    stateful_fit_shuffled,
]}  # fmt: skip


# ------------------------------------------------------------------- tests
# Entries that need a process of their own, checked where named.
ELSEWHERE = {
    "stateful-several-replicas": "tests/test_distributed.py",
    "stateful-inside-jax-jit": "tests/test_jax.py",
}


def test_page_and_tests_list_the_same_cases():
    entries = catalogue()
    assert set(entries) == set(MISUSES) | set(BEHAVIOURS) | set(ELSEWHERE)
    for name in BEHAVIOURS:
        assert entries[name].startswith("No error"), name
    for name in list(MISUSES) + list(ELSEWHERE):
        assert re.match(r"^[A-Za-z]+Error: ", entries[name]), name


@pytest.mark.parametrize("name", sorted(MISUSES))
def test_misuse_gets_the_documented_message(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    kind, message = catalogue()[name].split(": ", 1)
    with pytest.raises(Exception) as info:
        MISUSES[name]()
    assert type(info.value).__name__ == kind
    got = " ".join(_ANSI.sub("", str(info.value)).split())
    assert message in got


@pytest.mark.parametrize("name", sorted(BEHAVIOURS))
def test_documented_behaviour(name):
    BEHAVIOURS[name]()


# ----------------------------------------------------------- atomic saving
def test_failed_save_leaves_the_existing_file_intact(tmp_path, monkeypatch):
    net = base()
    path = tmp_path / "net.keras"
    net.save(path)
    before = path.read_bytes()
    good = fbx.load_model(path)

    from keras.src.saving import saving_lib

    def fail(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(saving_lib, "_save_state", fail)  # fails inside the archive
    with pytest.raises(RuntimeError, match="disk full"):
        net.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["net.keras"]  # no temporary file left
    x = seq()
    np.testing.assert_allclose(np.asarray(fbx.load_model(path)(x)), np.asarray(good(x)))


def test_keras_alone_writes_in_place(tmp_path, monkeypatch):
    """Why FeedbackModel.save is atomic: keras.Model.save truncates the target first."""
    net = base()
    path = tmp_path / "net.keras"
    net.save(path)
    from keras.src.saving import saving_lib

    monkeypatch.setattr(saving_lib, "_save_state", lambda *a, **k: 1 / 0)
    before = path.read_bytes()
    with pytest.raises(ZeroDivisionError):
        keras.Model.save(net, path)
    monkeypatch.undo()
    assert path.read_bytes() != before
    with pytest.raises(ValueError, match="is not a valid .keras archive"):
        fbx.load_model(path)


def test_save_into_a_read_only_directory_keeps_the_file(tmp_path):
    net = base()
    path = tmp_path / "net.keras"
    net.save(path)
    before = path.read_bytes()
    tmp_path.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        if os.access(tmp_path, os.W_OK):  # root ignores permissions: the save succeeds
            net.save(path)
        else:
            with pytest.raises(PermissionError):
                net.save(path)
            assert path.read_bytes() == before
    finally:
        tmp_path.chmod(stat.S_IRWXU)
    np.testing.assert_allclose(
        np.asarray(fbx.load_model(path)(seq())), np.asarray(net(seq())), atol=1e-6
    )


def test_save_keeps_permissions_and_loads(tmp_path):
    net = base()
    path = tmp_path / "net.keras"
    net.save(path)
    path.chmod(0o640)
    net.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    loaded = keras.saving.load_model(path)  # plain Keras loading still works
    np.testing.assert_allclose(np.asarray(loaded(seq())), np.asarray(net(seq())), atol=1e-6)
