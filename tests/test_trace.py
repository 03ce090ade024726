"""Trajectories: trace values against numpy loops and Keras layers, stateful vs stateless."""

import importlib

import helpers
import keras
import numpy as np
import pandas as pd
import pytest
from helpers import readme_network

import fbexplorer as fbx

trace_module = importlib.import_module("fbexplorer.tracing")

B, T, D = 3, 9, 5


def dense(layer, v):
    w, b = layer.get_weights()
    return v @ w + b


def seed_network(**kwargs):
    """x -> d1 -> d2 -> d3 -> out, with d3 fed back into d1."""
    return readme_network(units=D, inputs=D, outputs=2, **kwargs)


def seed_reference(net, seq, loop0=None):
    """Every node of the seed network, step by step in numpy: {node: (B, T, units)}."""
    layer = net.step_model.get_layer
    loop = np.zeros((seq.shape[0], D)) if loop0 is None else loop0
    rec = {k: [] for k in ["x", "loop", "cat", "d1", "d2", "d3", "out"]}
    for t in range(seq.shape[1]):
        cat = np.concatenate([seq[:, t], loop], -1)
        d1 = np.tanh(dense(layer("d1"), cat))
        d2 = np.tanh(dense(layer("d2"), d1))
        d3 = np.tanh(dense(layer("d3"), d2))
        out = dense(layer("out"), d3)
        for k, v in zip(rec, [seq[:, t], loop, cat, d1, d2, d3, out]):
            rec[k].append(v)
        loop = d3
    return {k: np.stack(v, 1) for k, v in rec.items()}


def as_array(df, node):
    """(samples, T, units) of one node from a tidy frame, via fbx.wide."""
    w = fbx.wide(df, node=node)
    samples = w.index.get_level_values("sample").unique()
    return w.to_numpy().reshape(len(samples), -1, w.shape[1])


@pytest.fixture
def seq(rng):
    return helpers.seq(B, T, D, rng=rng)


def test_seed_network_every_node_equals_numpy_loop(seq):
    net = seed_network()
    df = fbx.trace(net, seq)
    assert list(df.columns) == ["sample", "t", "node", "unit", "value"]
    assert list(df["node"].cat.categories) == ["x", "loop", "cat", "d1", "d2", "d3", "out"]
    ref = seed_reference(net, seq)
    for node, expected in ref.items():
        np.testing.assert_allclose(as_array(df, node), expected, atol=1e-5, err_msg=node)
    # One row per sample, step, node and unit: nothing else.
    assert len(df) == B * T * sum(v.shape[2] for v in ref.values())
    assert not df.duplicated(["sample", "t", "node", "unit"]).any()


def test_trace_equals_the_models_own_outputs_and_leaves_the_model_alone(seq, tmp_path):
    net = seed_network()
    n_weights, n_layers = len(net.weights), len(net.step_model.layers)
    out = as_array(fbx.trace(net, seq, nodes="out"), "out")
    np.testing.assert_array_equal(out, np.asarray(net(seq)))
    # The probe shares the step's layers but is not part of the model.
    assert (len(net.weights), len(net.step_model.layers)) == (n_weights, n_layers)
    net.save(tmp_path / "net.keras")
    again = keras.saving.load_model(tmp_path / "net.keras")
    np.testing.assert_allclose(as_array(fbx.trace(again, seq, nodes="out"), "out"), out, atol=1e-6)


def test_lstm_states_equal_keras_lstm(rng):
    x = keras.Input((D,), name="x")
    h = fbx.cell(keras.layers.LSTMCell(4, name="lstm"))(x)
    net = fbx.FeedbackModel(x, keras.layers.Dense(1, name="head")(h))
    seq = rng.normal(size=(B, T, D)).astype("float32")
    ref = keras.layers.LSTM(4, return_sequences=True, return_state=True)
    ref.build((None, T, D))
    ref.cell.set_weights(net.step_model.get_layer("lstm").get_weights())
    seq_h, last_h, last_c = (np.asarray(v) for v in ref(seq))
    df = fbx.trace(net, seq, nodes=["lstm", "lstm/h", "lstm/c"])
    np.testing.assert_allclose(as_array(df, "lstm/h"), seq_h, atol=1e-5)
    np.testing.assert_allclose(as_array(df, "lstm"), seq_h, atol=1e-5)
    np.testing.assert_allclose(as_array(df, "lstm/h")[:, -1], last_h, atol=1e-5)
    np.testing.assert_allclose(as_array(df, "lstm/c")[:, -1], last_c, atol=1e-5)
    # The cell state changes over time (the check above is not vacuous).
    assert np.abs(np.diff(as_array(df, "lstm/c"), axis=1)).max() > 1e-3


def test_nested_model_states(seq):
    inner = seed_network(name="inner")
    x = keras.Input((D,), name="x")
    y = fbx.cell(inner)(x)
    net = fbx.FeedbackModel(x, keras.layers.Dense(1, name="head")(y))
    df = fbx.trace(net, seq, nodes=["inner", "inner/loop"])
    ref = seed_reference(inner, seq)
    # The state the nested block hands on from step t: its d3 at t.
    np.testing.assert_allclose(as_array(df, "inner/loop"), ref["d3"], atol=1e-5)
    np.testing.assert_allclose(as_array(df, "inner"), ref["out"], atol=1e-5)


def test_samples_and_nodes_bound_the_frame(seq):
    net = seed_network()
    full = fbx.trace(net, seq)
    two = fbx.trace(net, seq, samples=2, nodes=["d1", "loop"])
    assert set(two["sample"]) == {0, 1}
    assert list(two["node"].cat.categories) == ["d1", "loop"]
    assert len(two) == 2 * T * 2 * D
    picked = fbx.trace(net, seq, samples=[2, 0], nodes="d3")
    assert set(picked["sample"]) == {0, 2}
    key = ["sample", "t", "node", "unit"]
    merged = picked.assign(node=picked.node.astype(str)).merge(
        full.assign(node=full.node.astype(str)), on=key, suffixes=("", "_full")
    )
    assert len(merged) == len(picked)
    np.testing.assert_allclose(merged["value"], merged["value_full"], atol=1e-6)


def test_spatial_nodes_are_flattened_into_units(rng):
    x = keras.Input((4, 4, 1), name="img")
    top = fbx.Feedback((4, 4, 2), name="top")
    c = keras.layers.Conv2D(2, 3, padding="same", activation="tanh", name="conv")(
        keras.layers.Concatenate(name="cat")([x, top])
    )
    net = fbx.FeedbackModel(x, c, feedback={"top": c})
    seq = rng.normal(size=(2, 5, 4, 4, 1)).astype("float32")
    df = fbx.trace(net, seq, nodes=["conv", "top"])
    assert sorted(df[df.node == "conv"]["unit"].unique()) == list(range(32))
    out = np.asarray(net(seq))
    np.testing.assert_allclose(as_array(df, "conv"), out.reshape(2, 5, 32), atol=1e-5)
    np.testing.assert_allclose(as_array(df, "top")[:, 1:], out.reshape(2, 5, 32)[:, :-1], atol=1e-5)
    assert fbx.wide(df, node="conv").shape == (2 * 5, 32)
    assert fbx.wide(df).columns.nlevels == 2


def test_stateful_trace_starts_from_the_carried_state_and_leaves_it(seq):
    net = seed_network(stateful=True)
    net(seq[:, :4])
    before = net.get_states()["loop"].copy()
    df = fbx.trace(net, seq[:, 4:])
    np.testing.assert_array_equal(net.get_states()["loop"], before)
    np.testing.assert_allclose(as_array(df, "loop")[:, 0], before, atol=1e-6)
    expected = np.asarray(net(seq[:, 4:]))  # this call carries on from the same state
    np.testing.assert_allclose(as_array(df, "out"), expected, atol=1e-5)
    with pytest.raises(ValueError, match="batch of 3, but the inputs have 2"):
        fbx.trace(net, seq[:2])


def test_initial_state_and_samples(seq):
    net = seed_network()
    loop0 = np.arange(B * D, dtype="float32").reshape(B, D) / 10
    df = fbx.trace(net, seq, samples=[1], initial_state={"loop": loop0})
    ref = seed_reference(net, seq[1:2], loop0=loop0[1:2])
    np.testing.assert_allclose(as_array(df, "d3"), ref["d3"], atol=1e-5)


def test_long_sequences_run_in_passes_with_the_same_values(seq, monkeypatch, capsys):
    for backwards in (False, True):
        net = seed_network(go_backwards=backwards)
        whole = fbx.trace(net, seq, nodes=["d3", "loop"])
        assert "window" not in capsys.readouterr().err  # no progress bar for short runs
        monkeypatch.setattr(trace_module, "WINDOW_STEPS", 4)
        parts = fbx.trace(net, seq, nodes=["d3", "loop"])
        assert "3/3" in capsys.readouterr().err  # a progress bar over 3 windows
        monkeypatch.setattr(trace_module, "WINDOW_STEPS", 2000)
        pd.testing.assert_frame_equal(whole, parts)
        expected = np.asarray(net(seq))  # processing order, as go_backwards returns it
        layer = net.step_model.get_layer("out")
        np.testing.assert_allclose(dense(layer, as_array(parts, "d3")), expected, atol=1e-5)


def test_masked_steps_record_the_step_and_hold_the_state(seq):
    net = seed_network()
    mask = np.ones((B, T), bool)
    mask[0, 3] = False
    df = fbx.trace(net, seq, mask=mask, nodes=["loop", "d3"])
    loop, d3 = as_array(df, "loop"), as_array(df, "d3")
    # After the masked step the loop still holds d3 from step 2.
    np.testing.assert_array_equal(loop[0, 4], loop[0, 3])
    np.testing.assert_allclose(loop[0, 4], d3[0, 2], atol=1e-6)
    # The masked step itself is recorded as computed, and differs from the held value.
    assert np.abs(d3[0, 3] - d3[0, 2]).max() > 1e-3
    np.testing.assert_allclose(loop[1, 4], d3[1, 3], atol=1e-6)


def test_one_compiled_pass_not_a_python_loop(rng):
    calls = []

    def spy(v):
        calls.append(1)
        return v

    x = keras.Input((D,), name="x")
    loop = fbx.Feedback((D,), name="loop")
    h = keras.layers.Dense(D, activation="tanh", name="d")(keras.layers.Concatenate()([x, loop]))
    h = keras.layers.Lambda(spy, name="spy")(h)
    net = fbx.FeedbackModel(x, h, feedback={"loop": h})
    calls.clear()
    fbx.trace(net, rng.normal(size=(2, 60, D)).astype("float32"))
    first = len(calls)
    fbx.trace(net, rng.normal(size=(2, 60, D)).astype("float32"))
    assert first < 6  # traced a few times, not once per step (60)
    assert len(calls) == first  # the compiled pass is cached


def test_compare_stateful_feedback_network(seq):
    net = seed_network()
    cmp = fbx.compare_stateful(net, seq, chunks=3)
    assert list(cmp.columns) == [
        "sample",
        "t",
        "chunk",
        "node",
        "unit",
        "stateful",
        "stateless",
        "difference",
    ]
    assert cmp.attrs["boundaries"] == (3, 6)
    first = cmp[cmp.chunk == 0]
    assert (first["difference"] == 0).all()
    later = cmp[(cmp.chunk > 0) & (cmp.node == "d3")]
    assert later["difference"].abs().max() > 1e-3
    # The loop differs right at the boundary: stateless restarts it from zeros.
    at_boundary = cmp[(cmp.t == 3) & (cmp.node == "loop")]
    assert (at_boundary["stateless"] == 0).all()
    assert at_boundary["difference"].abs().max() > 1e-3
    # References: stateful is one run over the whole sequence; stateless, each
    # chunk run on its own.
    ref = seed_reference(net, seq)
    stateful = fbx.wide(cmp, node="d3", values="stateful").to_numpy().reshape(B, T, D)
    np.testing.assert_allclose(stateful, ref["d3"], atol=1e-5)
    chunk2 = seed_reference(net, seq[:, 6:])
    stateless = fbx.wide(cmp, node="d3", values="stateless").to_numpy().reshape(B, T, D)
    np.testing.assert_allclose(stateless[:, 6:], chunk2["d3"], atol=1e-5)
    summary = fbx.chunk_summary(cmp)
    assert list(summary.index) == [0, 1, 2]
    assert summary.loc[0, "max_abs_difference"] == 0
    assert summary.loc[1, "max_abs_difference"] > 1e-3
    assert list(summary["start"]) == [0, 3, 6]
    assert list(summary["stop"]) == [2, 5, 8]


def test_compare_stateful_is_zero_without_feedback(seq):
    x = keras.Input((D,), name="x")
    h = keras.layers.Dense(3, activation="tanh", name="d")(x)
    net = fbx.FeedbackModel(x, h)
    cmp = fbx.compare_stateful(net, seq, chunks=4)
    assert (cmp["difference"] == 0).all()
    assert cmp["stateful"].abs().max() > 1e-3  # not trivially zero


def test_compare_joins_runs_side_by_side(seq):
    a, b = seed_network(), seed_network()
    runs = {"a": fbx.trace(a, seq, nodes=["d1", "out"]), "b": fbx.trace(b, seq, nodes="out")}
    both = fbx.compare(runs)
    assert list(both.columns) == ["sample", "t", "node", "unit", "a", "b"]
    assert len(both) == len(runs["a"])
    out = both[both.node == "out"]
    np.testing.assert_allclose(out["b"].to_numpy().reshape(B, T, 2), np.asarray(b(seq)), atol=1e-5)
    assert both.loc[both.node == "d1", "b"].isna().all()
    assert (out["a"] - out["b"]).abs().max() > 1e-3  # different weights


def test_errors_name_the_fix(seq):
    net = seed_network()
    with pytest.raises(ValueError, match=r"no node 'd9'.*Known nodes: \['x', 'loop', 'cat'"):
        fbx.trace(net, seq, nodes=["d9"])
    with pytest.raises(ValueError, match="sequence has 9 steps"):
        fbx.compare_stateful(net, seq, chunks=10)
    with pytest.raises(ValueError, match="sequence length 9"):
        fbx.compare_stateful(net, seq, chunks=2.5)
    with pytest.raises(ValueError, match="batch has 3"):
        fbx.trace(net, seq, samples=5)
    with pytest.raises(ValueError, match="out of range for a batch of 3"):
        fbx.trace(net, seq, samples=[0, 3])
    with pytest.raises(ValueError, match="not a feedback.*Known: \\['loop'\\]"):
        fbx.trace(net, seq, initial_state={"lop": np.zeros((B, D))})
    with pytest.raises(ValueError, match="expects a FeedbackModel"):
        fbx.trace(keras.Sequential([keras.layers.Dense(1)]), seq)
    with pytest.raises(ValueError, match="run 'x' is not a trace frame"):
        fbx.compare({"x": pd.DataFrame({"a": [1]})})
