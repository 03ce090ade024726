"""The benchmarks: each script runs with --quick, and the contenders compute the same thing."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

# The scripts' quick runs take a minute or two: one test runs them all and
# makes every check on their results (test_every_script_runs_quick_and_checks_out).
pytestmark = pytest.mark.slow

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = (
    "fit_predict",
    "lstm",
    "feedback_nets",
    "scaling",
    "roofline",
    "fixed_points",
    "attractors",
    "live",
)
# Import the scripts as modules, then take their folder off the path again: it
# holds a trace.py that would shadow the standard library's `trace`.
sys.path.insert(0, str(BENCH))
try:
    import common
    import feedback_nets
    import fit_predict
    import lstm
    import roofline
finally:
    sys.path.remove(str(BENCH))


def run_quick(out):
    """Every script run with --quick, all at once, each in its own process, writing
    to the folder `out`: `{name: (return code, stdout, json path)}`."""
    procs = {
        name: subprocess.Popen(
            [sys.executable, str(BENCH / f"{name}.py"), "--quick", "--out", str(out)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        for name in SCRIPTS
    }
    # benchmarks/gpu.sh on this CPU, as on a GPU machine without TensorFlow:
    # Keras on JAX, the JAX contenders only.
    env = dict(os.environ, PYTHON=sys.executable, FRAMEWORKS="jax", OUT=str(out / "gpu"))
    procs["gpu"] = subprocess.Popen(
        ["bash", str(BENCH / "gpu.sh"), "--quick", "--workloads", "small"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    runs = {}
    try:
        for name, proc in procs.items():
            stdout, _ = proc.communicate(timeout=600)
            json_name = "gpu/fit_predict" if name == "gpu" else name
            runs[name] = (proc.returncode, stdout, out / f"{json_name}.json")
    finally:  # none outlives the tests: each runs in its own process group, killed whole
        for proc in procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    return runs


def _load(quick_runs, name):
    code, stdout, path = quick_runs[name]
    assert code == 0, stdout[-3000:]
    return stdout, json.loads(path.read_text())


def check_fit_predict_quick_run(quick_runs):
    """Every installed framework's contenders ran, computed the same function
    from the same weights, and were compared with the hand-written JAX scan."""
    stdout, res = _load(quick_runs, "fit_predict")
    installed = {f for f in fit_predict.FRAMEWORKS if fit_predict.available(f)}
    assert set(res["skipped"]) == set(fit_predict.FRAMEWORKS) - installed
    for f in res["skipped"]:
        assert f"skipping the {f} contenders: {f} is not installed" in stdout
    assert res["machine"]["threads"] >= 1 and res["machine"]["cpu"]
    for workload in ("small", "lstm"):
        rows = {r["contender"]: r for r in res["workloads"][workload]["results"]}
        assert {r["framework"] for r in rows.values()} == installed
        assert fit_predict.SCAN in rows and "FeedbackModel (defaults)" in rows
        for r in rows.values():
            assert r["agree"], r["contender"]
            assert r["fit_s"] > 0 and r["predict_s"] > 0
            assert r["fit_x_scan"] == pytest.approx(r["fit_s"] / rows[fit_predict.SCAN]["fit_s"])
    assert [g["goal"] for g in res["workloads"]["small"]["goals"]] == [
        "small net, defaults, fit: at most 1.5x the JAX scan",
        "small net, defaults, predict: at most 2.0x the JAX scan",
    ]
    assert "x scan" in stdout


def check_gpu_script_runs_the_suite_on_jax_without_tensorflow(quick_runs):
    stdout, res = _load(quick_runs, "gpu")
    assert "Keras backend: jax" in stdout and "x scan" in stdout
    rows = res["workloads"]["small"]["results"]
    assert {r["contender"] for r in rows} == {"FeedbackModel on JAX (defaults)", fit_predict.SCAN}
    assert all(r["agree"] for r in rows)
    assert "tensorflow" not in {r["framework"] for r in rows}


def test_fit_predict_contenders_can_disagree():
    """The agreement check is not vacuous: other weights give other predictions."""
    s = fit_predict.QUICK["small"]
    w = fit_predict.weights("small", s)
    scan = fit_predict.scan_contender("small", s, w)[fit_predict.SCAN][1]
    ref = scan()
    w["d1"] = w["d1"] * 0.5
    other = fit_predict.scan_contender("small", s, w)[fit_predict.SCAN][1]()
    assert not np.allclose(ref, other, rtol=1e-3, atol=1e-4)
    x, y = fit_predict.data("small", s)
    assert ref.shape == y.shape == x.shape  # one output per input step


def check_lstm_quick_run(quick_runs):
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


def check_feedback_nets_quick_run(quick_runs):
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


def check_scaling_quick_run(quick_runs):
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


def check_roofline_quick_run(quick_runs):
    _, res = _load(quick_runs, "roofline")
    s = res["sizes"]
    assert res["flops"]["train step"] == 3 * 2 * s["B"] * s["T"] * (s["D"] + s["U"]) * 4 * s["U"]
    matmul = next(r for r in res["results"] if r["what"] == "matmul")
    assert matmul["of_peak"] == pytest.approx(1.0)
    assert matmul["flops"] == 2 * res["matmul_n"] ** 3
    for r in res["results"]:
        assert r["gflops"] == pytest.approx(r["flops"] / r["median_s"] / 1e9)


def check_fixed_points_quick_run(quick_runs):
    stdout, res = _load(quick_runs, "fixed_points")
    rows = {r["contender"]: r for r in res["results"]}
    assert set(rows) == {"newton", "adam"}
    newton = rows["newton"]
    assert newton["starts"] == res["sizes"]["starts"]
    assert 1 <= newton["points"] <= newton["converged"] <= newton["starts"]
    assert newton["median_s"] > 0 and "converge in seconds" in stdout


def check_attractors_quick_run(quick_runs):
    stdout, res = _load(quick_runs, "attractors")
    rows = {r["contender"]: r for r in res["results"]}
    assert set(rows) == {"census", "continuation"}
    census, continuation = rows["census"], rows["continuation"]
    assert 1 <= census["attractors"] <= census["starts"] == res["sizes"]["starts"]
    assert continuation["values"] == res["sizes"]["values"]
    assert continuation["points"] >= continuation["values"]  # a point at every value at least
    assert census["median_s"] > 0 and continuation["median_s"] > 0
    assert "branches" in stdout and "census" in stdout


def check_live_quick_run(quick_runs):
    """Each contender fitted; the recorded ones traced, the live one updated its explorer."""
    stdout, res = _load(quick_runs, "live")
    rows = {r["contender"]: r for r in res["results"]}
    assert list(rows)[0] == "fit" and len(rows) == 4
    assert all(r["epoch_s"] > 0 for r in rows.values())
    assert all(r["trace_s"] > 0 for name, r in rows.items() if name != "fit")
    assert rows["fit + TraceCallback + live explorer"]["update_s"] > 0
    assert rows["fit + TraceCallback(fixed_points=...)"]["census_s"] > 0
    assert "the live explorer's update:" in stdout


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


QUICK_CHECKS = (
    check_fit_predict_quick_run,
    check_gpu_script_runs_the_suite_on_jax_without_tensorflow,
    check_lstm_quick_run,
    check_feedback_nets_quick_run,
    check_scaling_quick_run,
    check_roofline_quick_run,
    check_fixed_points_quick_run,
    check_attractors_quick_run,
    check_live_quick_run,
)


def test_every_script_runs_quick_and_checks_out(tmp_path):
    """The scripts run once, together (one test, so that two workers never run
    them twice); every check runs, and the failures are reported together."""
    runs = run_quick(tmp_path)
    failures = []
    for check in QUICK_CHECKS:
        try:
            check(runs)
        except AssertionError as error:
            failures.append(f"{check.__name__}: {error}")
    assert not failures, "\n\n".join(failures)
