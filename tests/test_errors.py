"""Every misuse gets a ValueError that names the feedback or input and the fix."""

import keras
import numpy as np
import pytest

import fbexplorer as fbx


def base(delay=1):
    x = keras.Input((5,), name="x")
    loop = fbx.Feedback((5,), name="loop", delay=delay)
    h = keras.layers.Dense(5, name="h")(keras.layers.Concatenate()([x, loop]))
    return x, loop, h


def test_unbound_feedback():
    x, _, h = base()
    with pytest.raises(
        ValueError,
        match=r"Feedback 'loop' is used by the step graph but not bound.*feedback=\{'loop'",
    ):
        fbx.FeedbackModel(x, h)


def test_feedback_name_without_placeholder():
    x, _, h = base()
    with pytest.raises(ValueError, match=r"feedback names 'lop'.*Placeholders used: \['loop'\]"):
        fbx.FeedbackModel(x, h, feedback={"loop": h, "lop": h})


def test_source_shape_mismatch():
    x, _, h = base()
    small = keras.layers.Dense(3, name="small")(h)
    with pytest.raises(
        ValueError, match=r"Feedback 'loop' expects shape \(5,\).*source 'small' has shape \(3,\)"
    ):
        fbx.FeedbackModel(x, h, feedback={"loop": small})


def test_source_dtype_mismatch():
    x, _, h = base()
    as_int = keras.layers.Activation("linear", dtype="int32", name="as_int")(h)
    with pytest.raises(
        ValueError, match=r"dtype float32, but its source 'as_int' has .*dtype int32"
    ):
        fbx.FeedbackModel(x, h, feedback={"loop": as_int})


@pytest.mark.parametrize("delay", [0, -1, 1.5, "2", True, None, [1]])
def test_bad_delay(delay):
    with pytest.raises(ValueError, match=r"Feedback 'loop': `delay` must be an integer >= 1"):
        fbx.Feedback((5,), name="loop", delay=delay)
    with pytest.raises(ValueError, match=r"fbx.delayed: `delay` must be an integer >= 1"):
        fbx.delayed(keras.Input((2,), name="z"), delay=delay)


def test_bad_initial():
    with pytest.raises(ValueError, match=r"Feedback 'loop': `initial` must be 'zeros', 'learned'"):
        fbx.Feedback((5,), name="loop", initial="no_such_initializer")


def test_input_wrong_rank_and_feature_size():
    x, _, h = base()
    net = fbx.FeedbackModel(x, h, feedback={"loop": h})
    with pytest.raises(
        ValueError,
        match=r"input 'x' is a sequence of shape \(batch, time, 5\). Received shape \(2, 5\). Add a time axis",
    ):
        net(np.zeros((2, 5)))
    with pytest.raises(
        ValueError,
        match=r"input 'x' is a sequence of shape \(batch, time, 5\). Received shape \(2, 4, 6\)",
    ):
        net(np.zeros((2, 4, 6)))


def test_teacher_sequence_wrong_length():
    x, _, h = base()
    net = fbx.FeedbackModel(x, h, feedback={"loop": h})
    with pytest.raises(
        ValueError, match=r"ground truth for feedback 'loop' has 3 steps, but the inputs have 4"
    ):
        net({"x": np.zeros((2, 4, 5)), "loop": np.zeros((2, 3, 5))})
    with pytest.raises(
        ValueError, match=r"ground truth for feedback 'loop' must have shape \(batch, time, 5\)"
    ):
        net({"x": np.zeros((2, 4, 5)), "loop": np.zeros((2, 4, 2))})


def test_stateful_batch_size_change_names_both_sizes():
    x, _, h = base()
    net = fbx.FeedbackModel(x, h, feedback={"loop": h}, stateful=True)
    net(np.zeros((4, 3, 5)))
    with pytest.raises(ValueError, match=r"batch size 4 .*received a batch of 6"):
        net(np.zeros((6, 3, 5)))
    with pytest.raises(ValueError, match=r"batch size 4 .*received a batch of 8"):
        net.predict(np.zeros((8, 3, 5)), batch_size=8, verbose=0)
    with pytest.raises(ValueError, match=r"batch size 4, but 10 samples leave a last batch of 2"):
        net.predict(np.zeros((10, 3, 5)), batch_size=4, verbose=0)
    net.reset_states(batch_size=6)  # the documented way out
    assert net(np.zeros((6, 3, 5))).shape == (6, 3, 5)


def test_unknown_and_missing_inputs():
    x, _, h = base()
    net = fbx.FeedbackModel(x, h, feedback={"loop": h})
    with pytest.raises(
        ValueError, match=r"unknown input 'y'. Expected the per-step inputs \['x'\]"
    ):
        net({"x": np.zeros((1, 2, 5)), "y": np.zeros((1, 2, 5))})
    with pytest.raises(ValueError, match=r"input 'x' is missing"):
        net({"loop": np.zeros((1, 2, 5))})
    with pytest.raises(ValueError, match=r"initial_state names 'lop'.*Known: \['loop'\]"):
        net(np.zeros((1, 2, 5)), initial_state={"lop": np.zeros((1, 5))})
    with pytest.raises(ValueError, match=r"initial_state\['loop'\] must have shape \(batch, 5\)"):
        net(np.zeros((1, 2, 5)), initial_state={"loop": np.zeros((1, 4))})


def test_graph_input_not_declared():
    x, loop, _ = base()
    other = keras.Input((2,), name="other")
    h = keras.layers.Dense(5)(keras.layers.Concatenate()([x, loop, other]))
    with pytest.raises(
        ValueError, match=r"keras.Input 'other', which is in neither `inputs`.*nor `constants`"
    ):
        fbx.FeedbackModel(x, h, feedback={"loop": h})


def test_feedback_listed_as_input():
    x, loop, h = base()
    with pytest.raises(ValueError, match=r"Feedback 'loop' is listed in `inputs`"):
        fbx.FeedbackModel([x, loop], h, feedback={"loop": h})


def test_constants_only_needs_steps():
    img = keras.Input((4,), name="img")
    prev = fbx.Feedback((4,), name="prev")
    h = keras.layers.Add()([img, prev])
    net = fbx.FeedbackModel([], h, constants=[img], feedback={"prev": h})
    with pytest.raises(ValueError, match=r"no per-step inputs.*steps=N"):
        net(np.zeros((2, 4)))


def test_generate_needs_every_input_fed():
    a = keras.Input((2,), name="a")
    b = keras.Input((2,), name="b")
    y = keras.layers.Add(name="y")([a, b])
    net = fbx.FeedbackModel([a, b], y, feedback={})
    with pytest.raises(ValueError, match=r"\['b'\] is not in `feed`"):
        net.generate([np.zeros((1, 2, 2))] * 2, steps=3, feed={"a": "y"})
    with pytest.raises(ValueError, match=r"output 'z', which is not an output. Outputs: \['y'\]"):
        net.generate([np.zeros((1, 2, 2))] * 2, steps=3, feed={"a": "z"})


def test_stateful_methods_on_stateless_model():
    x, _, h = base()
    net = fbx.FeedbackModel(x, h, feedback={"loop": h})
    with pytest.raises(ValueError, match=r"is not stateful"):
        net.reset_states()
    with pytest.raises(ValueError, match=r"not stateful"):
        net.get_states()


def test_zero_length_sequence():
    x, _, h = base()
    net = fbx.FeedbackModel(x, h, feedback={"loop": h})
    with pytest.raises(ValueError, match=r"the sequences have 0 timesteps; at least 1 is needed"):
        net(np.zeros((2, 0, 5)))


def test_two_placeholders_with_one_name():
    x = keras.Input((5,), name="x")
    a = fbx.Feedback((5,), name="loop")
    b = fbx.Feedback((5,), name="loop")
    h = keras.layers.Add()([x, a, b])
    with pytest.raises(ValueError, match=r"two Feedback placeholders are named 'loop'"):
        fbx.FeedbackModel(x, h, feedback={"loop": h})
