"""docs/errors.md, checked: every misuse it lists gets the message it shows.

The messages are read from the page, so the page and the code cannot drift
apart. Each `### `id`` section of docs/errors.md has a ```text block: an
exception line (`ValueError: ...`), checked by the function of that id in
`MISUSES`, or a line starting with "No error", whose behaviour is checked by
the function of that id in `BEHAVIOURS`.
"""

import contextlib
import inspect
import json
import os
import pathlib
import re
import stat
import sys
import tempfile
import warnings
import zipfile

import keras
import numpy as np
import oracle
import pandas as pd
import pytest
import tensorflow as tf
from helpers import seq

import fbexplorer as fbx
from fbexplorer.dsl import FbModelError

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


@contextlib.contextmanager
def environment_budget(size):
    """A context with FBX_MEMORY_BUDGET set, so that messages quote one budget."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FBX_MEMORY_BUDGET", size)
        yield


@contextlib.contextmanager
def memory_budget(nbytes):
    """The page's examples of refusals set a small memory budget; it is put back after."""
    previous = fbx.set_memory_budget(nbytes)
    try:
        yield
    finally:
        fbx.set_memory_budget(previous)


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
    other = base(stateful=True)  # the documented way out: reset_states(batch_size=...)
    other(np.zeros((4, 3, 5)))
    other.reset_states(batch_size=6)
    assert other(np.zeros((6, 3, 5))).shape == (6, 3, 5)
    net = base(stateful=True)
    net(np.zeros((4, 3, 5)))
    with pytest.raises(ValueError, match=r"batch size 4 .*received a batch of 8"):
        net.predict(np.zeros((8, 3, 5)), batch_size=8, verbose=0)
    net(np.zeros((6, 3, 5)))


def stateful_partial_last_batch():
    base(stateful=True).predict(np.zeros((10, 3, 5)), batch_size=4, verbose=0)


def stateful_compact_compiled():
    with environment_budget("1GB"):
        net = base(delay=10**9, stateful=True)
        net.compile("sgd", "mse")
        net.fit(np.zeros((2, 3, 5)), np.zeros((2, 3, 5)), shuffle=False, verbose=0)


def stateful_compact_growth():
    with environment_budget("1kB"):
        base(delay=10**9, stateful=True)(np.zeros((2, 30, 5)))


def get_states_over_budget():
    with environment_budget("1GB"):
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
    for delay in (-3, 2.5, 2.0, "2", True, None, [1]):
        with pytest.raises(ValueError, match=rf"Received: delay={re.escape(repr(delay))}$"):
            fbx.Feedback((5,), name="loop", delay=delay)
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


def load_edited(change):
    """Save the page's `net` as net.keras, edit its config.json with `change`
    (of the model's config dict), and load it."""
    base().save("net.keras")
    with zipfile.ZipFile("net.keras") as zf:
        files = {n: zf.read(n) for n in zf.namelist()}
    config = json.loads(files["config.json"])
    change(config["config"])
    files["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile("net.keras", "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    fbx.load_model("net.keras")


def saved_bad_delay():
    in_file = r"^The saved FeedbackModel 'net' in 'net.keras': Feedback 'loop': `delay` must"
    with pytest.raises(ValueError, match=in_file + r".* Received: delay=0$"):
        load_edited(lambda c: c["step_graph"]["feedback"][0].update(delay=0))
    with pytest.raises(ValueError, match=r"^The saved FeedbackModel 'net': Feedback 'loop': `d"):
        keras.saving.load_model("net.keras")  # the same file; Keras does not say its name
    load_edited(lambda c: c["step_graph"]["feedback"][0].update(delay=2.5))


def saved_unknown_kind():
    load_edited(lambda c: c["step_graph"]["feedback"][0].update(kind="bogus"))


def saved_names_mismatch():
    load_edited(lambda c: c["step_graph"]["feedback"][0].update(name="lop"))


def saved_bad_option():
    load_edited(lambda c: c.update(stateful="no"))


def saved_bad_layout():
    load_edited(lambda c: c["step_graph"].update(inputs="x"))


def saved_step_model_broken():
    load_edited(lambda c: c["step_graph"]["model"]["config"].update(output_layers=[["zz", 0, 0]]))


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


def delayed_bad_delay():
    h = keras.Input((5,), name="h")
    for delay in (-1, 1.5, "2", True, None, [1]):
        with pytest.raises(ValueError, match="`delay` must be an integer >= 1"):
            fbx.delayed(h, delay=delay)
    fbx.delayed(h, delay=0)


def delayed_delay_given_twice():
    h = keras.Input((5,), name="h")
    with pytest.raises(ValueError, match="`delay` is given twice"):
        fbx.delayed(h, steps=2, delay=2)  # even when they agree
    fbx.delayed(h, delay=1, steps=2)


def bad_shape():
    for shape in ((-3,), (2.5,), ("5",), 5.0):
        with pytest.raises(ValueError, match="`shape` must be a tuple of positive integers"):
            fbx.Feedback(shape, name="loop")
    fbx.Feedback((0,), name="loop")


def bad_flag():
    for flag in ("return_sequences", "return_state", "go_backwards", "unroll"):
        with pytest.raises(ValueError, match=f"`{flag}` must be True or False"):
            base(**{flag: 1})
    base(stateful="no")


def bad_hoist():
    with pytest.raises(ValueError, match="loop_jit must be True, False or 'auto'"):
        base(loop_jit=1)
    base(hoist="yes")


def bad_steps():
    base(steps=0)


def delayed_steps_renamed():
    message = catalogue()["delayed-steps-renamed"].split("DeprecationWarning: ", 1)[1]
    x = keras.Input((5,), name="x")
    with pytest.warns(DeprecationWarning) as record:
        late = fbx.delayed(x, steps=2)
    assert [str(w.message) for w in record] == [message]
    assert record[0].filename == __file__  # the warning points at the caller's line
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        new = fbx.delayed(x, delay=2)  # no warning
    assert "steps" not in inspect.signature(fbx.delayed).parameters  # help() shows delay=
    xs = seq(2, 5, 5)
    want = xs.copy()
    want[:, 2:] += xs[:, :-2]  # x[t] + x[t - 2], zeros before
    for edge in (late, new):
        assert edge._keras_history.operation._fbx_spec.delay == 2
        net = fbx.FeedbackModel(x, keras.layers.Add()([x, edge]))
        np.testing.assert_allclose(np.asarray(net(xs)), want, atol=1e-6)


def nested_delays_too_long():
    x = keras.Input((5,), name="x")
    loop = fbx.Feedback((5,), name="loop", delay=5000)
    h = keras.layers.Dense(5, name="h")(keras.layers.Concatenate()([x, loop]))
    inner = fbx.FeedbackModel(x, h, feedback={"loop": h}, name="inner")
    fbx.cell(inner)


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
    with pytest.raises(ValueError, match="not stateful"):
        base().get_states()
    base().reset_states()


def generate_unfed_input():
    base().generate(np.zeros((1, 3, 5)), steps=2, feed={})


def generate_unknown_output():
    base().generate(np.zeros((1, 3, 5)), steps=2, feed={"x": "out"})


def return_state_over_budget():
    with environment_budget("1GB"):
        base(delay=10**9, return_state=True)(np.zeros((2, 3, 5)))


def unknown_length_over_budget():
    run = tf.function(base(delay=10**9), input_signature=[tf.TensorSpec((None, None, 5))])
    with environment_budget("1GB"):
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


def fixed_points_over_memory_budget():
    with memory_budget(8 * 10**9):
        fbx.fixed_points(base(delay=1000), {"x": np.zeros(5)})


def fixed_points_adam_over_memory_budget():
    with memory_budget(10**8):
        fbx.fixed_points(base(delay=1000), {"x": np.zeros(5)}, method="adam")


def fixed_points_visited_over_memory_budget():
    with memory_budget(10_000):
        fbx.fixed_points(base(), {"x": np.zeros(5)}, initial=np.zeros((64, 100, 5)), n_starts=1)


def fixed_points_jacobians_over_memory_budget():
    with memory_budget(16_000):
        fbx.fixed_points(
            base(),
            {"x": np.zeros(5)},
            n_starts=64,
            method="adam",
            iterations=100,
            slow_tolerance=1e9,
        )


def fixed_points_bad_tolerance():
    fbx.fixed_points(base(), {"x": np.zeros(5)}, tolerance=-1.0)


def fixed_points_bad_iterations():
    fbx.fixed_points(base(), {"x": np.zeros(5)}, iterations=0)


def fixed_points_nan_input():
    fbx.fixed_points(base(), {"x": np.array([0.0, np.nan, 0.0, 0.0, 0.0])})


def fixed_points_nan_weight():
    net = base()
    net.step_model.get_layer("h").kernel.assign(np.full((10, 5), np.nan, "float32"))
    fbx.fixed_points(net, {"x": np.zeros(5)})


def fixed_points_initial_diverges():
    fbx.fixed_points(base(), {"x": np.zeros(5)}, initial=np.full((2, 3, 5), np.nan))


def fixed_points_bad_period():
    fbx.fixed_points(base(), {"x": np.zeros(5)}, period=0)


def fixed_points_bad_point():
    fbx.fixed_points(base(), {"x": np.zeros(5)}, n_starts=4).eigenvectors(3)


def fixed_points_other_model():
    fp = fbx.fixed_points(base(), {"x": np.zeros(5)}, n_starts=4)
    fp.linearisation_error(base(delay=2), 0)


def gradient_flow_targets_wrong_length():
    net = base()
    net.compile("sgd", "mse")
    fbx.gradient_flow(net, np.zeros((2, 3, 5)), np.zeros((2, 4, 5)))


def gradient_flow_targets_wrong_batch():
    net = base()
    net.compile("sgd", "mse")
    fbx.gradient_flow(net, np.zeros((2, 3, 5)), np.zeros((3, 3, 5)))


def gradient_flow_over_memory_budget():
    with memory_budget(1000):
        fbx.gradient_flow(base(), np.zeros((2, 3, 5)))


def whole_state_over_budget():
    with environment_budget("1GB"):
        fbx.gradient_flow(base(delay=10**9), np.zeros((2, 3, 5)))


def attractors_no_state():
    x = keras.Input((5,), name="x")
    plain = fbx.FeedbackModel(x, keras.layers.Dense(5)(x), name="plain")
    fbx.attractors(plain, {"x": np.zeros(5)})


def attractors_bad_starts():
    fbx.attractors(base(), {"x": np.zeros(5)}, starts=0)


def attractors_bad_max_period():
    fbx.attractors(base(), {"x": np.zeros(5)}, max_period=0)


def attractors_initial_states_wrong_shape():
    fbx.attractors(base(), {"x": np.zeros(5)}, initial={"loop": np.zeros((4, 6))})


def attractors_initial_states_different_counts():
    x = keras.Input((5,), name="x")
    a, b = fbx.Feedback((3,), name="a"), fbx.Feedback((3,), name="b")
    h = keras.layers.Dense(3)(keras.layers.Concatenate()([x, a, b]))
    two = fbx.FeedbackModel(x, h, feedback={"a": h, "b": h}, name="two")
    initial = {"a": np.zeros((2, 3)), "b": np.zeros((4, 3))}
    fbx.attractors(two, {"x": np.zeros(5)}, initial=initial)


def attractors_over_memory_budget():
    with memory_budget(10**6):
        fbx.attractors(base(), {"x": np.zeros(5)})


def lyapunov_no_state():
    x = keras.Input((5,), name="x")
    plain = fbx.FeedbackModel(x, keras.layers.Dense(5, name="d")(x), name="plain")
    fbx.lyapunov(plain, np.zeros((2, 3, 5)))


def lyapunov_bad_n():
    fbx.lyapunov(base(), np.zeros((2, 3, 5)), n=6)


def lyapunov_bad_discard():
    fbx.lyapunov(base(), np.zeros((2, 3, 5)), discard=3)


def lyapunov_teacher_forced():
    fbx.lyapunov(base(), {"x": np.zeros((2, 3, 5)), "loop": np.zeros((2, 3, 5))})


def lyapunov_over_memory_budget():
    with memory_budget(10_000):
        fbx.lyapunov(base(delay=10), np.zeros((2, 3, 5)))


def attractors_max_period_unbounded():
    fbx.attractors(base(), {"x": np.zeros(5)}, max_period=100_000)


def looping(net, gain: float):
    """The page's `net` with its step set to `loop' = gain * loop` (x ignored)."""
    kernel = np.zeros((10, 5), "float32")
    kernel[5:] = gain * np.eye(5)
    net.get_layer("h").set_weights([kernel, np.zeros(5, "float32")])
    return net


def attractors_refine_bad_period():
    net = looping(base(), 0.0)
    census = fbx.attractors(net, {"x": np.zeros(5)}, starts=4, steps=10)
    census.refine(net, period=2)


def connections_bad_setting():
    net = looping(base(), 2.0)
    fbx.fixed_points(net, {"x": np.zeros(5)}, n_starts=4).connections(net, nudge=0)


def connections_other_model():
    net = looping(base(), 2.0)
    fbx.fixed_points(net, {"x": np.zeros(5)}, n_starts=4).connections(base(delay=2))


def connections_other_inputs():
    net = looping(base(), 2.0)
    fp = fbx.fixed_points(net, {"x": np.zeros(5)}, n_starts=4)
    u = keras.Input((5,), name="u")
    loop = fbx.Feedback((5,), name="loop")
    h = keras.layers.Dense(5, name="h")(keras.layers.Concatenate()([u, loop]))
    fp.connections(fbx.FeedbackModel(u, h, feedback={"loop": h}, name="other"))


def connections_over_memory_budget():
    net = looping(base(), 2.0)
    fp = fbx.fixed_points(net, {"x": np.zeros(5)}, n_starts=4)
    with memory_budget(1000):
        fp.connections(net)


def continuation_unknown_input():
    fbx.continuation(base(), {}, vary={"y": np.zeros((3, 5))})


def continuation_vary_not_one():
    x, y = keras.Input((5,), name="x"), keras.Input((1,), name="y")
    loop = fbx.Feedback((5,), name="loop")
    h = keras.layers.Dense(5)(keras.layers.Concatenate()([x, y, loop]))
    two_inputs = fbx.FeedbackModel([x, y], h, feedback={"loop": h}, name="two")
    fbx.continuation(two_inputs, {}, vary={"x": np.zeros((3, 5)), "y": np.zeros((3, 1))})


def continuation_values_wrong_shape():
    fbx.continuation(base(), {}, vary={"x": np.zeros((3, 4))})


def continuation_no_state():
    x = keras.Input((5,), name="x")
    plain = fbx.FeedbackModel(x, keras.layers.Dense(5)(x), name="plain")
    fbx.continuation(plain, {}, vary={"x": np.zeros((3, 5))})


def continuation_inputs_not_dict():
    fbx.continuation(base(), np.zeros(5), vary={"x": np.zeros((3, 5))})


def continuation_bad_starts():
    fbx.continuation(base(), {}, vary={"x": np.zeros((3, 5))}, fresh=-1)


def _continuation():
    return fbx.continuation(base(), {}, vary={"x": np.zeros((2, 5))}, n_starts=4)


def continuation_figure_bad_unit():
    _continuation().figure(unit=5)


def continuation_figure_unknown_state():
    _continuation().figure(state="h")


def continuation_figure_unknown_output():
    _continuation().figure(output="y")


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
    cell_magic("h = Dense(5)(x)\ny = 3\n", line="net --input x:5 --output y --quiet")


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


def fbattractors_bad_count():
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "fbexplorer")
    shell.user_ns.update(X=seq(), net=base())
    shell.run_line_magic("fbattractors", "net X[0,0] --starts 0")


def fbexplore_fixed_not_fixed_points():
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "fbexplorer")
    shell.user_ns.update(X=seq(), net=base())
    shell.run_line_magic("fbexplore", "net X --fixed X")


def fbmodel_statement_after_output():
    from IPython.core.interactiveshell import InteractiveShell

    cfg = InteractiveShell.instance().user_ns["cfg"] = {}
    net = cell_magic("h = Dense(5)(x)\ncfg['units'] = 4\nn = 3\n")
    assert cfg == {"units": 4}
    x = seq()
    dense = net.step_model.get_layer("h")
    expected = np.asarray(dense(x.reshape(-1, 5))).reshape(2, 3, 5)  # h at every step
    np.testing.assert_allclose(np.asarray(net(x)), expected, atol=1e-6)


def fbmodel_prev_steps_renamed():
    message = catalogue()["fbmodel-prev-steps-renamed"].split("DeprecationWarning: ", 1)[1]
    body = "s = Add()([x, prev(s, {}=2)])\n"
    with pytest.warns(DeprecationWarning) as record:
        old = cell_magic(body.format("steps"))
    assert [str(w.message) for w in record] == [message]  # once, though the body runs twice
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        new = cell_magic(body.format("delay"))
    assert old.get_config() == new.get_config()  # the same model, names and all
    xs = seq(2, 5, 5)
    want = xs.copy()
    for t in range(2, 5):
        want[:, t] += want[:, t - 2]  # s[t] = x[t] + s[t - 2]
    np.testing.assert_allclose(np.asarray(old(xs)), want, atol=1e-5)


def fbmodel_no_layer_output():
    cell_magic("n = 3\n")


def fbmodel_prev_shape_not_as_given():
    cell_magic("h = Dense(3)(Concatenate()([x, prev(h, shape=(5,))]))\n")


def fbmodel_input_given_twice():
    cell_magic("h = Dense(5)(x)\n", line="net --input x:3 --input x:4 --quiet")


def fbmodel_input_and_constant_same_name():
    cell_magic("h = Dense(5)(x)\n", line="net --input x:3 --constant x:4 --quiet")


def fbmodel_prev_delay_given_twice():
    with pytest.raises(FbModelError, match="`delay` is given twice"):
        cell_magic("s = Add()([x, prev(s, 2, steps=2)])\n")  # a positional delay too
    cell_magic("s = Add()([x, prev(s, delay=1, steps=2)])\n")


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
    _ = fbx.TraceCallback(seq()).frame


def memory_budget_not_bytes():
    fbx.set_memory_budget(-1)


def explore_over_memory_budget():
    with memory_budget(1000):
        fbx.explore(base(), np.zeros((2, 3, 5)))


def trace_over_memory_budget():
    with memory_budget(1000):
        fbx.trace(base(), np.zeros((2, 3, 5)))


def compare_stateful_over_memory_budget():
    with memory_budget(1000):
        fbx.compare_stateful(base(), np.zeros((2, 3, 5)), chunks=2)


def trace_callback_over_memory_budget():
    net = base()
    net.compile("sgd", "mse")
    watch = fbx.TraceCallback(np.zeros((2, 3, 5)))
    with memory_budget(10_000):
        net.fit(np.zeros((2, 3, 5)), np.zeros((2, 3, 5)), epochs=20, callbacks=[watch], verbose=0)


def trained_with_a_trace_callback():
    net = base()
    net.compile("sgd", "mse")
    watch = fbx.TraceCallback(np.zeros((2, 3, 5)))
    net.fit(np.zeros((2, 3, 5)), np.zeros((2, 3, 5)), epochs=2, callbacks=[watch], verbose=0)
    return watch


def explore_recording_over_memory_budget():
    watch = trained_with_a_trace_callback()
    with memory_budget(1000):
        fbx.explore(watch)


def explore_recording_unknown_node():
    fbx.explore(trained_with_a_trace_callback(), nodes=["hh"])


def explore_recording_bad_samples():
    fbx.explore(trained_with_a_trace_callback(), samples=[7])


def trace_callback_bad_search():
    fbx.TraceCallback(seq(), fixed_points=True)


def explore_before_fit():
    watch = fbx.TraceCallback(np.zeros((2, 3, 5)))
    ex = fbx.explore(watch)
    assert "Waiting for the first trace" in ex.note.value
    net = base()
    net.compile("sgd", "mse")
    net.fit(np.zeros((2, 3, 5)), np.zeros((2, 3, 5)), epochs=2, callbacks=[watch], verbose=0)
    assert ex.view.data["epochs"] == [0, 1, 2] and ex.node.value == "loop"


def readme_explorer():
    from helpers import readme_network

    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).uniform(-1, 1, size=(4, 20, 1)).astype("float32")
    return fbx.explore(readme_network(), x)


def save_html_over_budget():
    message = catalogue()["save-html-over-budget"].split("UserWarning: ", 1)[1]
    with tempfile.TemporaryDirectory() as folder, pytest.warns(UserWarning) as record:
        readme_explorer().save_html(os.path.join(folder, "part.html"), max_bytes=60_000)
    assert message in [str(w.message) for w in record]


def save_html_unknown_node():
    readme_explorer().save_html("page.html", nodes=["d9"])


def save_html_bad_samples():
    readme_explorer().save_html("page.html", samples=[7])


def write_image_no_browser():
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BROWSER_PATH", "/opt/none/chromium")
        readme_explorer().figure().write_image("d3.png")


def write_image_failed():
    import kaleido
    import plotly.graph_objects as go

    def fail(*args, **kwargs):
        raise ValueError("Error 525: ReferenceError: kaleido_scopes is not defined\n  at ...")

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BROWSER_PATH", sys.executable)  # "a browser is there"
        patch.setattr(kaleido, "start_sync_server", lambda **k: None)
        patch.setattr(kaleido, "stop_sync_server", lambda **k: None)
        patch.setattr(go.Figure, "write_image", fail)
        readme_explorer().figure().write_image("d3.png")


def trace_carried_over_budget():
    with environment_budget("1GB"):
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


def portrait_no_state():
    x = keras.Input((5,), name="x")
    plain = fbx.FeedbackModel(x, keras.layers.Dense(5, name="d")(x), name="plain")
    fbx.portrait(plain, np.zeros((2, 3, 5)))


def portrait_over_memory_budget():
    with memory_budget(1000):
        fbx.portrait(base(), np.zeros((2, 3, 5)))


def portrait_never_finite():
    fbx.pca_project({"v": np.full((2, 5, 3), np.nan)})


# ----------------------------------------------------------- populations (fbx.sweep)
def sweep_build(units):
    """The sweeps' build: the page's network, compiled."""
    net = base()
    net.compile("adam", "mse")
    return net


SWEEP_DATA = (np.zeros((4, 3, 5), "float32"), np.zeros((4, 3, 5), "float32"))


def sweep_needs_ray():
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, "ray", None)
        fbx.sweep(sweep_build, {"units": [4]}, SWEEP_DATA)


def sweep_build_not_picklable():
    import threading

    lock = threading.Lock()

    def build(units):
        with lock:
            return sweep_build(units)

    fbx.sweep(build, {"units": [4]}, SWEEP_DATA)


def sweep_bad_grid_values():
    fbx.sweep(sweep_build, {"units": []}, SWEEP_DATA)


def sweep_bad_grid_key():
    fbx.sweep(sweep_build, {"loss": ["mse"]}, SWEEP_DATA)


def sweep_bad_data():
    fbx.sweep(sweep_build, {"units": [4]}, SWEEP_DATA[0])


def sweep_unknown_analysis():
    fbx.sweep(sweep_build, {"units": [4]}, SWEEP_DATA, analyses=("lyapunov",))


def sweep_bad_runner():
    fbx.sweep(sweep_build, {"units": [4]}, SWEEP_DATA, runner="dask")


def sweep_damaged_store():
    os.makedirs("store", exist_ok=True)
    pathlib.Path("store/results.parquet").write_bytes(b"not parquet")
    fbx.sweep(sweep_build, {"units": [4]}, SWEEP_DATA, store="store")


def population_bad_index():
    os.makedirs("store", exist_ok=True)
    fbx.Population.load("store").model(5)


def portrait_not_attractors():
    fbx.portrait(base(), seq(), attractors=fixed_points_of_loop())


def explore_targets_unknown_output():
    fbx.explore(base(), seq(), targets={"y": np.zeros((2, 3, 5))})


def _traces():
    """The page's `A`: traces (samples, T, units) of some network."""
    return np.random.default_rng(0).normal(size=(4, 30, 3))


def compare_dynamics_bad_method():
    fbx.compare_dynamics([_traces(), _traces()], method="procrustes")


def compare_dynamics_one_network():
    fbx.compare_dynamics([_traces()])


def compare_dynamics_bad_rank():
    fbx.compare_dynamics([_traces(), _traces()], rank=1.5)


def compare_dynamics_too_short():
    fbx.compare_dynamics([_traces(), _traces()], n_delays=40)


def compare_dynamics_no_inputs():
    fbx.compare_dynamics([base(), base()])


def compare_dynamics_no_state():
    x = keras.Input((5,), name="x")
    plain = fbx.FeedbackModel(x, keras.layers.Dense(5, name="d")(x), name="plain")
    fbx.compare_dynamics([plain, base()], np.zeros((2, 3, 5)))


def compare_dynamics_nan():
    fbx.compare_dynamics([np.full((2, 20, 3), np.nan), _traces()])


def compare_dynamics_no_dynamics():
    fbx.compare_dynamics([np.zeros((4, 30, 3)), _traces()])


def compare_dynamics_not_a_network():
    fbx.compare_dynamics([np.zeros((4, 3)), _traces()])


def compare_dynamics_topology_not_fixed_points():
    fbx.compare_dynamics([_traces(), _traces()], method="topology")


def compare_dynamics_over_memory_budget():
    with memory_budget(1000):
        fbx.compare_dynamics([_traces(), _traces()])


def compare_dynamics_dsa_missing():
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, "DSA", None)  # as if not installed
        fbx.compare_dynamics([_traces(), _traces()], method="dsa")


def compare_dynamics_sweep_missing():
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, "pydmd", None)  # as if not installed
        fbx.compare_dynamics([_traces(), _traces()])


def mds_figure_not_square():
    fbx.mds_figure(np.zeros((3, 3)))


def mds_figure_colour_missing():
    d = fbx.compare_dynamics({"a": _traces(), "b": _traces()})
    fbx.mds_figure(d, colour={"a": 8})


def _population():
    """An empty population over the grid {"units": [...]}: what its figure checks first."""
    from fbexplorer.sweep_store import SweepStore

    return fbx.Population(SweepStore("pop"), grid=["units"])


def population_mds_figure_before_compare():
    _population().mds_figure(colour="units")


def population_mds_figure_unknown_colour():
    _population().mds_figure(colour="size", distances=pd.DataFrame())


MISUSES = {f.__name__.replace("_", "-"): f for f in [
    explore_not_a_model, explore_fixed_points_other_model, trace_callback_every,
    trace_callback_unused, trace_callback_bad_search, save_html_unknown_node,
    save_html_bad_samples, write_image_no_browser, write_image_failed,
    fbmodel_invalid_python, fbmodel_unknown_name, fbmodel_cycle_without_delay,
    fbmodel_prev_not_a_name, fbmodel_prev_unassigned, fbmodel_shape_mismatch,
    fbmodel_bare_cell, fbmodel_not_a_tensor, fbmodel_nothing_assigned,
    fbmodel_bad_input_flag, fbmodel_unknown_model, fbmodel_constants_without_steps,
    fbmodel_input_hides_language_name, fbexplore_callback_with_data,
    fbexplore_fixed_not_fixed_points, fbattractors_bad_count, fbmodel_no_layer_output, fbmodel_prev_shape_not_as_given,
    fbmodel_input_given_twice, fbmodel_input_and_constant_same_name,
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
    delayed_bad_delay, delayed_delay_given_twice, fbmodel_prev_delay_given_twice, bad_shape, bad_flag, bad_hoist, bad_steps, nested_delays_too_long,
    saved_bad_delay, saved_unknown_kind, saved_names_mismatch, saved_bad_option,
    saved_bad_layout, saved_step_model_broken,
    fixed_points_over_memory_budget, fixed_points_adam_over_memory_budget,
    fixed_points_visited_over_memory_budget, fixed_points_jacobians_over_memory_budget,
    fixed_points_bad_tolerance, fixed_points_bad_iterations, fixed_points_nan_input,
    fixed_points_nan_weight, fixed_points_initial_diverges, fixed_points_bad_period,
    fixed_points_bad_point, fixed_points_other_model,
    gradient_flow_targets_wrong_length,
    gradient_flow_targets_wrong_batch, gradient_flow_over_memory_budget,
    memory_budget_not_bytes, explore_over_memory_budget, trace_over_memory_budget,
    compare_stateful_over_memory_budget, trace_callback_over_memory_budget,
    explore_recording_over_memory_budget, explore_recording_unknown_node,
    explore_recording_bad_samples, portrait_no_state, portrait_over_memory_budget,
    portrait_never_finite,
    return_state_over_budget, unknown_length_over_budget, stateful_compact_compiled,
    stateful_compact_growth, get_states_over_budget, whole_state_over_budget,
    trace_carried_over_budget,
    attractors_no_state, attractors_bad_starts, attractors_bad_max_period,
    attractors_initial_states_wrong_shape, attractors_initial_states_different_counts,
    attractors_over_memory_budget,
    lyapunov_no_state, lyapunov_bad_n, lyapunov_bad_discard, lyapunov_teacher_forced,
    lyapunov_over_memory_budget,
    attractors_max_period_unbounded, attractors_refine_bad_period,
    connections_bad_setting, connections_other_model, connections_over_memory_budget,
    connections_other_inputs,
    continuation_unknown_input, continuation_vary_not_one, continuation_values_wrong_shape,
    continuation_no_state, continuation_inputs_not_dict, continuation_bad_starts,
    continuation_figure_bad_unit, continuation_figure_unknown_state,
    continuation_figure_unknown_output,
    sweep_needs_ray, sweep_build_not_picklable, sweep_bad_grid_values, sweep_bad_grid_key,
    sweep_bad_data, sweep_unknown_analysis, sweep_bad_runner, sweep_damaged_store,
    population_bad_index,
    portrait_not_attractors, explore_targets_unknown_output,
    compare_dynamics_bad_method, compare_dynamics_one_network, compare_dynamics_bad_rank,
    compare_dynamics_too_short, compare_dynamics_no_inputs, compare_dynamics_no_state,
    compare_dynamics_nan,
    compare_dynamics_no_dynamics, compare_dynamics_not_a_network,
    compare_dynamics_topology_not_fixed_points, compare_dynamics_over_memory_budget,
    compare_dynamics_dsa_missing, compare_dynamics_sweep_missing, mds_figure_not_square,
    mds_figure_colour_missing, population_mds_figure_before_compare,
    population_mds_figure_unknown_colour,
]}  # fmt: skip


# -------------------------------------------------------------- behaviours
def integer_input():
    net = base()
    ints = np.arange(30).reshape(2, 3, 5) % 4
    np.testing.assert_allclose(np.asarray(net(ints)), np.asarray(net(ints.astype("float32"))))


def one_step():
    net = base()
    x = seq(2, 1, 5)
    out = np.asarray(net(x))
    assert out.shape == (2, 1, 5)
    np.testing.assert_allclose(out, np.asarray(oracle.run(net, [x])[0][0]), atol=1e-6)


def batch_of_one():
    net = base()
    x = seq(1, 4, 5)
    np.testing.assert_allclose(
        np.asarray(net(x)), np.asarray(oracle.run(net, [x])[0][0]), atol=1e-6
    )


def delay_longer_than_sequence():
    net = base(delay=5, return_state=True)
    x = seq()
    out, states = net(x)
    w, b = net.step_model.get_layer("h").get_weights()
    zeros_fed = np.concatenate([x, np.zeros_like(x)], axis=-1) @ w + b
    np.testing.assert_allclose(np.asarray(out), zeros_fed, atol=1e-5)
    hist = np.asarray(states["loop"])  # (batch, 5 slots, 5): 2 initial values, then 3 outputs
    np.testing.assert_allclose(hist[:, :2], 0)
    np.testing.assert_allclose(hist[:, 2:], zeros_fed, atol=1e-5)


def nan_in_input():
    net = base()
    x = seq(2, 5, 5)
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


def explore_stateful_over_memory_budget():
    tooltip = catalogue()["explore-stateful-over-memory-budget"].split("tooltip: ", 1)[1]
    with memory_budget(9000):  # the explorer fits, the stateful view beside it does not
        ex = fbx.explore(base(), np.zeros((2, 3, 5)))
    assert ex.mode.disabled and ex.comparison is None
    assert ex.mode.tooltips[1] == tooltip


def explore_nan():
    message = catalogue()["explore-nan"].split("UserWarning: ", 1)[1]
    x = seq(2, 5, 5)
    x[0, 2, 1] = np.nan
    with pytest.warns(UserWarning) as record:
        ex = fbx.explore(base(), x)
    assert message in [str(w.message) for w in record]
    assert ex.view.data["title"].endswith(
        "(NaN or inf at 2 of 5 steps, from t=3; drawn where finite)"
    )


def portrait_nan():
    message = catalogue()["portrait-nan"].split("UserWarning: ", 1)[1]
    x = seq(2, 5, 5)
    x[0, 2, 1] = np.nan
    with pytest.warns(UserWarning) as record:
        fig = fbx.portrait(base(), x)
    assert message in [str(w.message) for w in record]
    assert np.isnan(fig.data[0].x[3:]).all() and np.isfinite(fig.data[0].x[:3]).all()
    assert np.isfinite(fig.data[1].x).all()  # sample 1 has no NaN


BEHAVIOURS = {f.__name__.replace("_", "-"): f for f in [
    integer_input, one_step, batch_of_one, delay_longer_than_sequence, nan_in_input,
    stateful_fit_shuffled, explore_stateful_over_memory_budget, explore_nan, portrait_nan,
    explore_before_fit, save_html_over_budget,
    stateful_fit_shuffled, fbmodel_statement_after_output, delayed_steps_renamed,
    fbmodel_prev_steps_renamed,
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
