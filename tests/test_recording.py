"""The recording layer (fbexplorer/recording.py) against numpy loops, and the package's
imports: no module reads another module's private name."""

import ast
import pathlib

import keras
import numpy as np
import pandas as pd
import pytest

import fbexplorer as fbx
from fbexplorer import recording
from fbexplorer.memory import PER_VALUE

B, T, D = 3, 7, 4


@pytest.fixture(scope="module")
def net():
    """x -> h = tanh(W [x, loop] + b), h fed back: one node per kind."""
    x = keras.Input((D,), name="x")
    loop = fbx.Feedback((D,), name="loop")
    h = keras.layers.Dense(D, activation="tanh", name="h")(
        keras.layers.Concatenate(name="cat")([x, loop])
    )
    return fbx.FeedbackModel(x, h, feedback={"loop": h}, name="rec")


def reference(net, seq):
    """`{"loop": (B, T, D), "h": (B, T, D)}` step by step in numpy."""
    w, b = net.step_model.get_layer("h").get_weights()
    loop = np.zeros((seq.shape[0], D))
    loops, hs = [], []
    for t in range(seq.shape[1]):
        h = np.tanh(np.concatenate([seq[:, t], loop], -1) @ w + b)
        loops.append(loop)
        hs.append(h)
        loop = h
    return {"loop": np.stack(loops, 1), "h": np.stack(hs, 1)}


@pytest.fixture(scope="module")
def seq():
    return np.random.default_rng(1).normal(size=(B, T, D)).astype("float32")


def test_the_catalogue_names_each_node_by_kind_and_resolve_nodes_checks_names(net):
    kinds = {name: kind for name, (kind, _) in recording.catalogue(net).items()}
    assert kinds == {"x": "input", "loop": "delayed", "cat": "layer", "h": "layer"}
    assert recording.resolve_nodes(net, None) == list(kinds)
    assert recording.resolve_nodes(net, ["h", "h", "x"]) == ["h", "x"]
    assert recording.node_units(net, ["cat", "h"]) == 2 * D + D
    with pytest.raises(ValueError, match="fbx.portrait: model 'rec' has no node 'nope'"):
        recording.resolve_nodes(net, "nope", what="portrait")


def test_prepare_takes_keywords_only_and_cuts_the_chosen_samples(net, seq):
    with pytest.raises(TypeError):
        recording.prepare(net, seq, [2, 0])
    prep = recording.prepare(net, seq, samples=[2, 0])
    assert (prep.batch, prep.full_batch, prep.length) == (2, B, T)
    np.testing.assert_array_equal(prep.index, [2, 0])
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(prep.seqs[0]), seq[[2, 0]])
    seqs, _, mask, length = prep.window(2, 5)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(seqs[0]), seq[[2, 0], 2:5])
    assert mask is None and length is None


def test_windows_tile_the_steps_in_order():
    for length, size in [(10, 4), (8, 4), (1, 3), (5, 5)]:
        bounds = recording.window_bounds(length, size)
        steps = [t for start, stop in bounds for t in range(start, stop)]
        assert steps == list(range(length))
        assert all(0 < stop - start <= size for start, stop in bounds)


def test_run_windows_carries_the_state_across_windows_as_one_run_would(net, seq):
    want = reference(net, seq)
    prep = recording.prepare(net, seq)
    names = ["loop", "h"]
    bounds = recording.window_bounds(T, 3)
    arrays, slots = recording.run_windows(net, prep, names, bounds=bounds, progress=False)
    for name, got in zip(names, arrays):
        np.testing.assert_allclose(got, want[name], rtol=1e-5, atol=1e-6)
    # The first window's final state starts the rest: the second half again, alone.
    _, after = recording.run_windows(net, prep, names, bounds=[(0, 3)], progress=False)
    rest, _ = recording.run_windows(net, prep, names, bounds=[(3, T)], slots=after)
    np.testing.assert_allclose(rest[1], want["h"][:, 3:], rtol=1e-5, atol=1e-6)


def test_tidy_lays_out_rows_as_a_loop_would_and_node_arrays_reads_them_back():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(2, 3, 2, 2)).astype("float32")  # a (2, 2) map per step
    b = rng.normal(size=(2, 3, 1)).astype("float32")
    ids = [5, 9]
    df = recording.tidy(["a", "b"], [[a], [b]], ids)
    rows = [
        (ids[s], t, name, u, float(arr[s, t].reshape(-1)[u]))
        for name, arr in (("a", a), ("b", b))
        for s in range(2)
        for t in range(3)
        for u in range(arr[0, 0].size)
    ]
    want = pd.DataFrame(rows, columns=["sample", "t", "node", "unit", "value"])
    got = df.assign(node=df["node"].astype(str), value=df["value"].astype(float))
    pd.testing.assert_frame_equal(got, want, check_dtype=False)
    assert list(df["node"].cat.categories) == ["a", "b"] and df["t"].dtype == np.int32
    arrays, got_ids = recording.node_arrays(df, ["a", "b"], what="test")
    np.testing.assert_array_equal(arrays["a"], a.reshape(2, 3, 4))
    np.testing.assert_array_equal(arrays["b"], b)
    np.testing.assert_array_equal(got_ids, ids)


def test_check_size_refuses_before_anything_runs(net, seq):
    size = recording.planned_size(net, seq, ["h"], samples=2)
    assert size == (2, T, D)
    previous = fbx.set_memory_budget(10**6)
    try:
        need = recording.check_size(["h"], size, what="fbx.trace", kind="trace", remedy="-")
        assert need == PER_VALUE["trace"] * 2 * T * D
        with pytest.raises(ValueError, match="fbx.trace would need .* Pass less") as error:
            recording.check_size(
                ["h"], (10, 10**4, D), what="fbx.trace", kind="trace", remedy="Pass less"
            )
        assert "\n" not in str(error.value)
    finally:
        fbx.set_memory_budget(previous)


def test_no_module_imports_another_modules_private_name():
    package = pathlib.Path(fbx.__file__).parent
    found = set()
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom) or not (node.module or "").startswith(
                "fbexplorer."
            ):
                continue
            source = node.module.split(".")[-1]
            for alias in node.names:
                if alias.name.startswith("_"):
                    found.add((path.stem, source, alias.name))
    assert not found, sorted(found)
