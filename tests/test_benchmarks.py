"""The benchmarks: each script runs with --quick, and the contenders compute the same thing."""

import json
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = ("lstm", "feedback_nets", "scaling", "roofline")
# Import the scripts as modules, then take their folder off the path again: it
# holds a trace.py that would shadow the standard library's `trace`.
sys.path.insert(0, str(BENCH))
try:
    import common
    import feedback_nets
    import lstm
    import roofline
finally:
    sys.path.remove(str(BENCH))


@pytest.fixture(scope="module")
def quick_runs(tmp_path_factory):
    """Every script run with --quick, all at once, each in its own process."""
    out = tmp_path_factory.mktemp("bench")
    procs = {
        name: subprocess.Popen(
            [sys.executable, str(BENCH / f"{name}.py"), "--quick", "--out", str(out)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name in SCRIPTS
    }
    runs = {}
    for name, proc in procs.items():
        stdout, _ = proc.communicate(timeout=300)
        runs[name] = (proc.returncode, stdout, out / f"{name}.json")
    return runs


def _load(quick_runs, name):
    code, stdout, path = quick_runs[name]
    assert code == 0, stdout[-3000:]
    return stdout, json.loads(path.read_text())


def test_lstm_quick_run(quick_runs):
    stdout, res = _load(quick_runs, "lstm")
    rows = {(r["contender"], r["jit"]): r for r in res["results"]}
    names = [c.name for c in lstm.contenders(lstm.QUICK)]
    assert {n for n, _ in rows} == set(names)
    assert (lstm.EAGER, None) in rows and (lstm.FBX[0], True) in rows
    keras_row = rows[(lstm.KERAS_LSTM, False)]
    for r in res["results"]:
        assert r["train_s"] > 0 and r["infer_s"] > 0
        assert r["first_fit_s"] == pytest.approx(r["build_s"] + r["first_step_s"])
    fbx_row = rows[(lstm.FBX[0], False)]
    assert fbx_row["train_x_keras"] == pytest.approx(fbx_row["train_s"] / keras_row["train_s"])
    assert any("train step >= 10x faster than the eager loop" in g["goal"] for g in res["goals"])
    assert "x LSTM" in stdout and "goals:" in stdout
    assert res["machine"]["cores"] >= 1


def test_feedback_nets_quick_run(quick_runs):
    _, res = _load(quick_runs, "feedback_nets")
    for key in ("loop", "conv"):
        rows = res["nets"][key]["results"]
        assert {r["contender"] for r in rows} == {
            feedback_nets.FBX,
            f"{feedback_nets.FBX}, hoist=False",
            feedback_nets.HAND,
            feedback_nets.STATIC,
            feedback_nets.EAGER,
        }
        ref = next(r for r in rows if r["contender"] == feedback_nets.FBX and r["jit"] is False)
        assert ref["train_x_fbx"] == pytest.approx(1.0)


def test_scaling_quick_run(quick_runs):
    _, res = _load(quick_runs, "scaling")
    rows = res["results"]
    assert [(r["sweep"], r["value"]) for r in rows] == [
        ("T", 4),
        ("T", 4),
        ("T", 8),
        ("T", 8),
        ("edges", 1),
        ("edges", 2),
        ("delay", 1),
        ("delay", 100),
    ]
    measured = [r for r in rows if "peak_mib" in r]
    assert len(measured) == 1
    assert measured[0]["peak_mib"] >= measured[0]["base_mib"] > 50  # TensorFlow is loaded


def test_roofline_quick_run(quick_runs):
    _, res = _load(quick_runs, "roofline")
    s = res["sizes"]
    assert res["flops"]["train step"] == 3 * 2 * s["B"] * s["T"] * (s["D"] + s["U"]) * 4 * s["U"]
    matmul = next(r for r in res["results"] if r["what"] == "matmul")
    assert matmul["of_peak"] == pytest.approx(1.0)
    assert matmul["flops"] == 2 * res["matmul_n"] ** 3
    for r in res["results"]:
        assert r["gflops"] == pytest.approx(r["flops"] / r["median_s"] / 1e9)


def test_lstm_flops_by_hand():
    # B=2, T=3, D=4, U=5: each step multiplies (2, 9) by (9, 20): 2 * 2 * 9 * 20 FLOPs.
    assert roofline.lstm_flops(2, 3, 4, 5) == {"inference": 2160, "train step": 6480}


def _forwards(contenders, x):
    out = {}
    for c in contenders:
        keras.utils.set_random_seed(0)  # as common.first_fit does: the same initial weights
        forward, variables = c.build()
        out[c.name] = (np.asarray(forward(x, False)), variables)
    return out


def test_lstm_contenders_compute_the_same_lstm():
    s = lstm.QUICK
    x, _ = lstm.data(s)
    out = _forwards(lstm.contenders(s), x)
    # The Dense-based contenders share their initial weights.
    ref = out[lstm.EAGER][0]
    assert ref.shape == (s["B"], s["T"], s["U"])
    for name in (lstm.FBX[0], lstm.FBX[1], *lstm.UNHOISTED.values(), lstm.STATIC):
        np.testing.assert_allclose(out[name][0], ref, atol=1e-5)
    # The hand-written cell given Keras's LSTM weights (same layout, same gate order).
    got = _hand_lstm(out[lstm.KERAS_LSTM][1], s, x)
    np.testing.assert_allclose(got, out[lstm.KERAS_LSTM][0], atol=1e-5)


def _hand_lstm(variables, s, x):
    """The hand-written cell's LSTM with the given kernel, recurrent kernel and bias."""
    cell = lstm.HandLSTMCell(s["U"])
    layer = keras.layers.RNN(cell, return_sequences=True)
    layer.build((None, s["T"], s["D"]))
    for src, dst in zip(variables, cell.trainable_variables):
        dst.assign(src)
    return np.asarray(layer(x))


@pytest.mark.parametrize("net_cls", [feedback_nets.LoopNet, feedback_nets.ConvNet])
def test_feedback_net_contenders_agree(net_cls):
    net = net_cls(feedback_nets.QUICK["loop" if net_cls is feedback_nets.LoopNet else "conv"])
    x, _ = net.data()
    out = _forwards(feedback_nets.contenders(net), x)
    ref = out[feedback_nets.EAGER][0]
    assert ref.shape == (net.s["B"], net.s["T"], net.output_size)
    for name, (y, _) in out.items():
        np.testing.assert_allclose(y, ref, atol=1e-5, err_msg=name)
    assert np.abs(ref[:, 0] - ref[:, 1]).max() > 1e-4  # the feedback matters


def test_interleave_rotates_the_order():
    calls = []
    fns = {k: (lambda k=k: calls.append(k)) for k in "abc"}
    samples = common.interleave(fns, rounds=3, reps=1)
    assert calls == list("abc") + list("abc") + list("bca") + list("cab")
    assert all(len(v) == 3 for v in samples.values())


def test_run_py_runs_every_script():
    sys.path.insert(0, str(BENCH))
    try:
        import run
    finally:
        sys.path.remove(str(BENCH))
    assert set(run.SCRIPTS) == {f"{name}.py" for name in SCRIPTS}
    assert all((BENCH / name).is_file() for name in run.SCRIPTS)
