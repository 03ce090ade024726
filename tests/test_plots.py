"""Plotly figures of traces and of stateful vs stateless comparisons."""

import helpers
import keras
import numpy as np
import pytest

import fbexplorer as fbx

B, T, D = 2, 8, 3


@pytest.fixture
def net():
    x = keras.Input((D,), name="x")
    loop = fbx.Feedback((D,), name="loop")
    h = keras.layers.Dense(D, activation="tanh", name="d1")(
        keras.layers.Concatenate(name="cat")([x, loop])
    )
    y = keras.layers.Dense(2, name="out")(h)
    return fbx.FeedbackModel(x, y, feedback={"loop": h})


@pytest.fixture
def seq(rng):
    return helpers.seq(B, T, D, rng=rng)


def test_plot_trace_one_line_per_unit(net, seq):
    df = fbx.trace(net, seq, nodes=["d1", "out"])
    fig = fbx.plot_trace(df, node="d1")
    assert len(fig.data) == D
    assert [tr.name for tr in fig.data] == ["unit 0", "unit 1", "unit 2"]
    expected = fbx.wide(df, node="d1").loc[0]  # sample 0: t x units
    for u, tr in enumerate(fig.data):
        np.testing.assert_array_equal(tr.x, np.arange(T))
        np.testing.assert_array_equal(tr.y, expected[u].to_numpy())
    assert "d1" in fig.layout.title.text


def test_plot_trace_units_and_samples(net, seq):
    df = fbx.trace(net, seq, nodes="out")
    fig = fbx.plot_trace(df, units=[1], samples=[0, 1])  # the only node by default
    assert len(fig.data) == 2
    assert [tr.meta["sample"] for tr in fig.data] == [0, 1]
    np.testing.assert_array_equal(fig.data[1].y, fbx.wide(df, node="out").loc[1][1].to_numpy())
    with pytest.raises(ValueError, match=r"no node 'd9'.*Nodes: \['out'\]"):
        fbx.plot_trace(df, node="d9")
    with pytest.raises(ValueError, match="unit 7 is not in the frame"):
        fbx.plot_trace(df, units=7)


def test_plot_comparison_lines_and_boundaries(net, seq):
    cmp = fbx.compare_stateful(net, seq, chunks=3, nodes=["d1", "loop"])
    fig = fbx.plot_comparison(cmp, node="d1", sample=1)
    # Stateful, stateless and difference for each unit.
    assert len(fig.data) == 3 * D
    runs = [tr.meta["run"] for tr in fig.data]
    assert runs == ["stateful", "stateless", "difference"] * D
    stateful = fbx.wide(cmp, node="d1", values="stateful").loc[1]
    np.testing.assert_array_equal(fig.data[0].y, stateful[0].to_numpy())
    diff = fbx.wide(cmp, node="d1", values="difference").loc[1]
    np.testing.assert_array_equal(fig.data[2].y, diff[0].to_numpy())
    # A dotted line between chunks of 2, 3 and 3 steps: before steps 2 and 5.
    boundaries = [s.x0 for s in fig.layout.shapes if s.type == "line"]
    assert boundaries == [1.5, 4.5]
    assert all(s.yref == "paper" for s in fig.layout.shapes)
    assert cmp.attrs["boundaries"] == (2, 5)


def test_plot_comparison_defaults_and_errors(net, seq):
    cmp = fbx.compare_stateful(net, seq, chunks=2, nodes="out")
    fig = fbx.plot_comparison(cmp, units=0)
    assert len(fig.data) == 3
    assert [s.x0 for s in fig.layout.shapes] == [3.5]
    with pytest.raises(ValueError, match="expects a frame from fbx.compare_stateful"):
        fbx.plot_comparison(fbx.trace(net, seq))
