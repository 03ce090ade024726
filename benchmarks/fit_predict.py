"""Training and inference through fit/predict, against what a researcher would write instead.

Two workloads, each trained with Adam (lr 1e-3) on the mean squared error,
32 batches per call (one `fit` epoch, one `predict` call):

  small   the README's d1 -> d2 -> d3 -> d1 net: 3 x Dense(8, tanh), d3 fed
          back into d1, a Dense(1) read-out; batch 64, T=100, 1 input
  lstm    an LSTM of 128 units on 32 inputs; batch 64, T=100

Contenders, by framework (each framework runs in its own worker process, since
Keras's backend is chosen once per process; the parent interleaves their
rounds, so only one process computes at a time):

  tensorflow  FeedbackModel through Keras's fit/predict: the defaults
              (compile() with an optimizer and a loss, nothing else;
              loop_jit="auto"), loop_jit=False (the time loop without XLA),
              compile(jit_compile=True), compile(steps_per_execution=32);
              for the LSTM also fbx.cell(LSTMCell) and keras.layers.LSTM
  jax         FeedbackModel on Keras's JAX backend through fit/predict, and a
              hand-written jax.lax.scan under jax.jit(value_and_grad) with an
              inline Adam, called once per batch from a Python loop
  torch       an eager PyTorch loop over t (nn.Linear layers; nn.LSTMCell),
              and the fused nn.LSTM

Every contender starts from the same weights (drawn once by the parent) and
its first prediction is checked against the others' (`agree` in the JSON): the
contenders compute one function. Threads: every worker is pinned to the same
cores (`--threads`, default all), TensorFlow's intra- and inter-op pools and
PyTorch's `set_num_threads` are set to that number, and XLA's CPU client
(JAX, TensorFlow's XLA) uses the cores of that set.

Timing: each call is `fit` (or `predict`) over the 32 batches, results
awaited; rounds interleave every (contender, call) across the processes,
rotating the order; medians over rounds. `x scan` is a time divided by the
hand-written JAX scan's (above 1: slower). A framework that is not installed
is skipped, and the table says so.

Run: python benchmarks/fit_predict.py [--quick] [--frameworks tensorflow,jax,torch]
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import cpu

FRAMEWORKS = ("tensorflow", "jax", "torch")
SIZES = {
    "small": {"B": 64, "T": 100, "D": 1, "W": 8, "batches": 32},
    "lstm": {"B": 64, "T": 100, "D": 32, "U": 128, "batches": 32},
}
# --quick: tiny sizes, and only the default FeedbackModel among TensorFlow's
# contenders (each costs seconds to build and trace).
QUICK = {
    "small": {"B": 4, "T": 5, "D": 1, "W": 4, "batches": 2, "quick": True},
    "lstm": {"B": 4, "T": 5, "D": 3, "U": 5, "batches": 2, "quick": True},
}
LR = 1e-3
SCAN = "JAX lax.scan (hand-written)"
FIT, PREDICT = "fit", "predict"

# ------------------------------------------------------------------ shared data


def weights(workload: str, s: dict) -> dict:
    """The initial weights every contender starts from (numpy arrays)."""
    import numpy as np

    rng = np.random.default_rng(0)

    def glorot(n_in, n_out):
        lim = np.sqrt(6 / (n_in + n_out))
        return rng.uniform(-lim, lim, size=(n_in, n_out)).astype("float32")

    if workload == "small":
        D, W = s["D"], s["W"]
        return {
            "d1": glorot(D + W, W),
            "b1": rng.normal(0, 0.1, W).astype("float32"),
            "d2": glorot(W, W),
            "b2": rng.normal(0, 0.1, W).astype("float32"),
            "d3": glorot(W, W),
            "b3": rng.normal(0, 0.1, W).astype("float32"),
            "out": glorot(W, D),
            "bo": np.zeros(D, "float32"),
        }
    D, U = s["D"], s["U"]
    return {
        "kernel": glorot(D, 4 * U),
        "recurrent": glorot(U, 4 * U),
        "bias": rng.normal(0, 0.1, 4 * U).astype("float32"),
    }


def data(workload: str, s: dict):
    """`(x, y)`: `batches * B` sequences and their targets (numpy)."""
    import numpy as np

    rng = np.random.default_rng(1)
    n = s["batches"] * s["B"]
    x = rng.uniform(-1, 1, size=(n, s["T"], s["D"])).astype("float32")
    if workload == "small":
        y = np.cumsum(x, axis=1) / np.arange(1, s["T"] + 1)[None, :, None]
    else:
        y = rng.normal(0, 0.1, size=(n, s["T"], s["U"]))
    return x, y.astype("float32")


# --------------------------------------------------------------- keras workers


def keras_contenders(workload, s, w, backend):
    """`{name: (fit(), predict())}` for the Keras models on this backend."""
    import keras
    from keras import ops

    import fbexplorer as fbx

    x, y = data(workload, s)
    B = s["B"]

    def small_fbx(**kw):
        D, W = s["D"], s["W"]
        inp = keras.Input((D,), name="x")
        loop = fbx.Feedback((W,), name="loop")
        d1 = keras.layers.Dense(W, activation="tanh", name="d1")
        d2 = keras.layers.Dense(W, activation="tanh", name="d2")
        d3 = keras.layers.Dense(W, activation="tanh", name="d3")
        out = keras.layers.Dense(D, name="out")
        h3 = d3(d2(d1(keras.layers.Concatenate()([inp, loop]))))
        net = fbx.FeedbackModel(inp, out(h3), feedback={"loop": h3}, **kw)
        for layer, k, b in (
            (d1, "d1", "b1"),
            (d2, "d2", "b2"),
            (d3, "d3", "b3"),
            (out, "out", "bo"),
        ):
            layer.set_weights([w[k], w[b]])
        return net

    def lstm_dense(**kw):
        D, U = s["D"], s["U"]
        inp = keras.Input((D,), name="x")
        h_prev = fbx.Feedback((U,), name="h")
        c_prev = fbx.Feedback((U,), name="c")
        dx = keras.layers.Dense(4 * U, name="wx")
        dh = keras.layers.Dense(4 * U, use_bias=False, name="wh")
        z = dx(inp) + dh(h_prev)
        i, f, g, o = ops.split(z, 4, axis=-1)
        c = ops.sigmoid(f) * c_prev + ops.sigmoid(i) * ops.tanh(g)
        h = ops.sigmoid(o) * ops.tanh(c)
        net = fbx.FeedbackModel(inp, h, feedback={"h": h, "c": c}, **kw)
        dx.set_weights([w["kernel"], w["bias"]])
        dh.set_weights([w["recurrent"]])
        return net

    def lstm_cell():
        inp = keras.Input((s["D"],), name="x")
        cell = keras.layers.LSTMCell(s["U"], name="lstm")
        net = fbx.FeedbackModel(inp, fbx.cell(cell)(inp))
        cell.set_weights([w["kernel"], w["recurrent"], w["bias"]])
        return net

    def keras_lstm():
        inp = keras.Input((s["T"], s["D"]))
        layer = keras.layers.LSTM(s["U"], return_sequences=True)
        net = keras.Model(inp, layer(inp))
        layer.set_weights([w["kernel"], w["recurrent"], w["bias"]])
        return net

    build = small_fbx if workload == "small" else lstm_dense
    models = {"FeedbackModel (defaults)": (build, {}, {})}
    if backend == "tensorflow" and not s.get("quick"):
        models["FeedbackModel, loop_jit=False"] = (build, {"loop_jit": False}, {})
        models["FeedbackModel, loop_jit=True"] = (build, {"loop_jit": True}, {})
        models["FeedbackModel, compile(jit_compile=True)"] = (
            build,
            {"loop_jit": False},
            {"jit_compile": True},
        )
        models["FeedbackModel, steps_per_execution=32"] = (
            build,
            {},
            {"steps_per_execution": s["batches"]},
        )
        if workload == "lstm":
            models["fbx.cell(LSTMCell)"] = (lambda **kw: lstm_cell(), {}, {})
            models["keras.layers.LSTM"] = (lambda **kw: keras_lstm(), {}, {})
    elif backend != "tensorflow":
        models = {"FeedbackModel on JAX (defaults)": models["FeedbackModel (defaults)"]}

    out = {}
    for name, (make, kw, compile_kw) in models.items():
        net = make(**kw)
        net.compile(keras.optimizers.Adam(LR), "mse", **compile_kw)

        def fit(net=net):
            net.fit(x, y, batch_size=B, epochs=1, shuffle=False, verbose=0)

        def predict(net=net):
            return net.predict(x, batch_size=B, verbose=0)

        out[name] = (fit, predict)
    return out


# ------------------------------------------------------------------ jax scan


def scan_contender(workload, s, w):
    """The hand-written `lax.scan`, `jax.jit(value_and_grad)`, inline Adam."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    x, y = data(workload, s)
    B, nb = s["B"], s["batches"]
    xs = [jnp.asarray(x[i * B : (i + 1) * B]) for i in range(nb)]
    ys = [jnp.asarray(y[i * B : (i + 1) * B]) for i in range(nb)]
    params = {k: jnp.asarray(v) for k, v in w.items()}

    if workload == "small":
        W = s["W"]

        def forward(p, xb):
            def step(h, xt):
                h1 = jnp.tanh(jnp.concatenate([xt, h], -1) @ p["d1"] + p["b1"])
                h3 = jnp.tanh(jnp.tanh(h1 @ p["d2"] + p["b2"]) @ p["d3"] + p["b3"])
                return h3, h3 @ p["out"] + p["bo"]

            _, out = jax.lax.scan(step, jnp.zeros((xb.shape[0], W)), jnp.swapaxes(xb, 0, 1))
            return jnp.swapaxes(out, 0, 1)

    else:
        U = s["U"]

        def forward(p, xb):
            def step(carry, xt):
                h, c = carry
                z = xt @ p["kernel"] + h @ p["recurrent"] + p["bias"]
                i, f, g, o = jnp.split(z, 4, axis=-1)
                c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
                h = jax.nn.sigmoid(o) * jnp.tanh(c)
                return (h, c), h

            zeros = jnp.zeros((xb.shape[0], U))
            _, out = jax.lax.scan(step, (zeros, zeros), jnp.swapaxes(xb, 0, 1))
            return jnp.swapaxes(out, 0, 1)

    def loss(p, xb, yb):
        return jnp.mean(jnp.square(forward(p, xb) - yb))

    b1, b2, eps = 0.9, 0.999, 1e-7  # Keras's Adam defaults

    @jax.jit
    def train_step(p, state, xb, yb):
        m, v, t = state
        value, g = jax.value_and_grad(loss)(p, xb, yb)
        t = t + 1
        m = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, m, g)
        v = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, v, g)
        lr = LR * jnp.sqrt(1 - b2**t) / (1 - b1**t)
        p = jax.tree.map(lambda p, m, v: p - lr * m / (jnp.sqrt(v) + eps), p, m, v)
        return p, (m, v, t), value

    infer = jax.jit(forward)
    zeros = jax.tree.map(jnp.zeros_like, params)
    box = {"p": params, "state": (zeros, zeros, jnp.asarray(0.0))}

    def fit():
        value = None
        for xb, yb in zip(xs, ys):
            box["p"], box["state"], value = train_step(box["p"], box["state"], xb, yb)
        value.block_until_ready()

    def predict():
        outs = [infer(box["p"], xb) for xb in xs]
        return np.concatenate([np.asarray(o) for o in outs])

    return {SCAN: (fit, predict)}


# --------------------------------------------------------------------- torch


def torch_contenders(workload, s, w):
    """Eager PyTorch loops over t, and the fused nn.LSTM."""
    import numpy as np
    import torch

    x, y = data(workload, s)
    B, nb = s["B"], s["batches"]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    xs = [torch.from_numpy(x[i * B : (i + 1) * B]).to(device) for i in range(nb)]
    ys = [torch.from_numpy(y[i * B : (i + 1) * B]).to(device) for i in range(nb)]
    t_ = torch.from_numpy

    def linear(kernel, bias):
        layer = torch.nn.Linear(*kernel.shape, bias=bias is not None)
        with torch.no_grad():
            layer.weight.copy_(t_(kernel.T.copy()))
            if bias is not None:
                layer.bias.copy_(t_(bias))
        return layer

    class SmallNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.d1 = linear(w["d1"], w["b1"])
            self.d2 = linear(w["d2"], w["b2"])
            self.d3 = linear(w["d3"], w["b3"])
            self.out = linear(w["out"], w["bo"])

        def forward(self, xb):
            h = xb.new_zeros((xb.shape[0], s["W"]))
            outs = []
            for t in range(xb.shape[1]):
                h1 = torch.tanh(self.d1(torch.cat([xb[:, t], h], -1)))
                h = torch.tanh(self.d3(torch.tanh(self.d2(h1))))
                outs.append(self.out(h))
            return torch.stack(outs, 1)

    def lstm_params(module, suffix=""):
        with torch.no_grad():
            getattr(module, "weight_ih" + suffix).copy_(t_(w["kernel"].T.copy()))
            getattr(module, "weight_hh" + suffix).copy_(t_(w["recurrent"].T.copy()))
            getattr(module, "bias_ih" + suffix).copy_(t_(w["bias"]))
            getattr(module, "bias_hh" + suffix).zero_()
        return module

    class CellLoop(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.cell = lstm_params(torch.nn.LSTMCell(s["D"], s["U"]))

        def forward(self, xb):
            h = c = xb.new_zeros((xb.shape[0], s["U"]))
            outs = []
            for t in range(xb.shape[1]):
                h, c = self.cell(xb[:, t], (h, c))
                outs.append(h)
            return torch.stack(outs, 1)

    class Fused(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = lstm_params(torch.nn.LSTM(s["D"], s["U"], batch_first=True), "_l0")

        def forward(self, xb):
            return self.lstm(xb)[0]

    if workload == "small":
        models = {"PyTorch eager loop": SmallNet()}
    else:
        models = {
            "PyTorch eager loop (nn.LSTMCell)": CellLoop(),
            "PyTorch nn.LSTM (fused)": Fused(),
        }

    out = {}
    for name, model in models.items():
        model.to(device)
        opt = torch.optim.Adam(model.parameters(), lr=LR, eps=1e-7)

        def fit(model=model, opt=opt):
            for xb, yb in zip(xs, ys):
                opt.zero_grad()
                loss = torch.mean(torch.square(model(xb) - yb))
                loss.backward()
                opt.step()
            if device == "cuda":
                torch.cuda.synchronize()

        def predict(model=model):
            with torch.no_grad():
                return np.concatenate([model(xb).cpu().numpy() for xb in xs])

        out[name] = (fit, predict)
    return out


# -------------------------------------------------------------------- worker


def set_threads(framework: str, n: int) -> None:
    """Pins this process to `n` cores and sizes the framework's thread pools."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:n])
    if framework == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(n)
        tf.config.threading.set_inter_op_parallelism_threads(n)
    elif framework == "torch":
        import torch

        torch.set_num_threads(n)


def worker(framework: str, workload: str, sizes: dict, threads: int) -> None:
    """Serves one framework's contenders: build, then time calls on request.

    Reads JSON commands from stdin, one a line, and answers on stdout:
    `{"cmd": "time", "name": ..., "call": "fit"|"predict", "reps": n}` ->
    seconds per call.
    """
    import numpy as np

    out = sys.stdout
    sys.stdout = sys.stderr  # library chatter must not reach the protocol
    set_threads(framework, threads)
    w = weights(workload, sizes)
    if framework == "tensorflow":
        import tensorflow as tf

        tf.get_logger().setLevel("ERROR")
    builders = {
        "tensorflow": lambda: keras_contenders(workload, sizes, w, "tensorflow"),
        "jax": lambda: {
            **keras_contenders(workload, sizes, w, "jax"),
            **scan_contender(workload, sizes, w),
        },
        "torch": lambda: torch_contenders(workload, sizes, w),
    }
    ready, first = {}, {}
    for name, (fit, predict) in builders[framework]().items():
        # The prediction before any training: every contender's must agree.
        first[name] = np.asarray(predict())[: sizes["B"]].tolist()
        t0 = time.perf_counter()
        fit()
        ready[name] = {"first_fit_s": time.perf_counter() - t0}
        predict()
        ready[name]["fns"] = {FIT: fit, PREDICT: predict}
    info = {
        n: {"first_fit_s": r["first_fit_s"], "first_predict": first[n]} for n, r in ready.items()
    }
    print(json.dumps({"ready": info}), file=out, flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "quit":
            break
        fn = ready[cmd["name"]]["fns"][cmd["call"]]
        t0 = time.perf_counter()
        for _ in range(cmd["reps"]):
            fn()
        print(json.dumps({"s": (time.perf_counter() - t0) / cmd["reps"]}), file=out, flush=True)


# -------------------------------------------------------------------- parent


def available(framework: str) -> bool:
    return importlib.util.find_spec(framework) is not None


class Worker:
    """A worker process for one framework and workload."""

    def __init__(self, framework, workload, sizes, threads):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        env["KERAS_BACKEND"] = "jax" if framework == "jax" else "tensorflow"
        root = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        args = [sys.executable, __file__, "--worker", framework, workload, json.dumps(sizes)]
        self.proc = subprocess.Popen(
            args + [str(threads)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True
        )
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            raise RuntimeError(f"the {framework} worker for {workload} failed to start")
        self.info = json.loads(line)["ready"]

    def time(self, name, call, reps):
        self.proc.stdin.write(json.dumps({"cmd": "time", "name": name, "call": call, "reps": reps}))
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())["s"]

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


def run_workload(workload, sizes, frameworks, args):
    """Starts the workers one after another, then times every contender interleaved."""
    import numpy as np

    workers = {}
    try:
        for fw in frameworks:
            print(f"  {workload}: building the {fw} contenders", flush=True)
            workers[fw] = Worker(fw, workload, sizes, args.threads)
        keys = [
            (fw, name, call)
            for fw, wk in workers.items()
            for name in wk.info
            for call in (FIT, PREDICT)
        ]
        samples = {k: [] for k in keys}
        for k in keys:  # one untimed call each
            workers[k[0]].time(k[1], k[2], 1)
        for r in range(args.rounds):
            shift = r % len(keys)
            for k in keys[shift:] + keys[:shift]:
                samples[k].append(workers[k[0]].time(k[1], k[2], args.reps))
    finally:
        for wk in workers.values():
            wk.close()
    rows = []
    ref_pred = None
    for fw, wk in workers.items():
        for name, info in wk.info.items():
            pred = np.asarray(info["first_predict"])
            if ref_pred is None:
                ref_pred = pred
            rows.append(
                {
                    "contender": name,
                    "framework": fw,
                    "first_fit_s": info["first_fit_s"],
                    "fit_s": median(samples[(fw, name, FIT)]),
                    "predict_s": median(samples[(fw, name, PREDICT)]),
                    "fit_s_rounds": samples[(fw, name, FIT)],
                    "predict_s_rounds": samples[(fw, name, PREDICT)],
                    "agree": bool(np.allclose(pred, ref_pred, rtol=1e-3, atol=1e-4)),
                }
            )
    scan = next((r for r in rows if r["contender"] == SCAN), {})
    steps = sizes["batches"] * sizes["T"]
    for r in rows:
        r["fit_us_per_step"] = 1e6 * r["fit_s"] / steps
        r["predict_us_per_step"] = 1e6 * r["predict_s"] / steps
        r["fit_x_scan"] = ratio(r["fit_s"], scan.get("fit_s"))
        r["predict_x_scan"] = ratio(r["predict_s"], scan.get("predict_s"))
    return rows


def median(xs):
    import statistics

    return statistics.median(xs) if xs else float("nan")


def ratio(a, b):
    return float("nan") if not a or not b else a / b


COLUMNS = [
    ("contender", "contender", ""),
    ("fit ms", "fit_ms", ".1f"),
    ("us/step", "fit_us_per_step", ".1f"),
    ("x scan", "fit_x_scan", ".2f"),
    ("predict ms", "predict_ms", ".1f"),
    ("us/step", "predict_us_per_step", ".1f"),
    ("x scan", "predict_x_scan", ".2f"),
    ("1st fit s", "first_fit_s", ".2f"),
    ("agree", "agree", ""),
]


def goals(rows) -> list[dict]:
    """The small net's goals (defaults within 1.5x / 2x of the scan)."""
    by = {r["contender"]: r for r in rows}
    r = by.get("FeedbackModel (defaults)")
    if r is None or SCAN not in by:
        return []
    out = []
    for key, limit in (("fit_x_scan", 1.5), ("predict_x_scan", 2.0)):
        v = r[key]
        out.append(
            {
                "goal": f"small net, defaults, {key.split('_')[0]}: at most {limit}x the JAX scan",
                "value": f"{v:.2f}x",
                "met": bool(v <= limit),
            }
        )
    return out


def machine_info(threads: int) -> dict:
    import platform

    info = {
        "cpu": cpu.cpu_model(),
        "cores": os.cpu_count(),
        "threads": threads,
        "python": platform.python_version(),
    }
    try:  # the GPUs, where there are any
        smi = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        info["gpus"] = [g.strip() for g in smi.stdout.splitlines() if g.strip()]
    except (OSError, subprocess.TimeoutExpired):
        info["gpus"] = []
    for pkg in ("tensorflow", "keras", "jax", "torch", "numpy"):
        if available(pkg):
            from importlib.metadata import PackageNotFoundError, version

            try:
                info[pkg] = version(
                    pkg if pkg != "tensorflow" or _has_dist("tensorflow") else "tensorflow-cpu"
                )
            except PackageNotFoundError:
                info[pkg] = "?"
    return info


def _has_dist(name):
    from importlib.metadata import PackageNotFoundError, version

    try:
        version(name)
        return True
    except PackageNotFoundError:
        return False


def main(argv=None):
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes and one round (a smoke test)")
    p.add_argument("--rounds", type=int, default=None, help="rounds (default 7)")
    p.add_argument(
        "--reps", type=int, default=None, help="calls per contender per round (default 2)"
    )
    p.add_argument(
        "--threads", type=int, default=None, help="cores for every framework (default all)"
    )
    p.add_argument("--frameworks", default=",".join(FRAMEWORKS), help="comma-separated subset")
    p.add_argument("--workloads", default="small,lstm", help="comma-separated subset")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = p.parse_args(argv)
    args.rounds = args.rounds or (1 if args.quick else 7)
    args.reps = args.reps or (1 if args.quick else 2)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    args.threads = args.threads or cores
    if args.rounds < 1 or args.reps < 1 or not 1 <= args.threads <= cores:
        raise ValueError(
            f"--rounds and --reps must be at least 1 and --threads between 1 and {cores}. "
            f"Received: rounds={args.rounds}, reps={args.reps}, threads={args.threads}"
        )
    wanted = [f for f in args.frameworks.split(",") if f]
    unknown = [f for f in wanted if f not in FRAMEWORKS]
    if unknown:
        raise ValueError(f"--frameworks: expected some of {FRAMEWORKS}. Received: {unknown}")
    skipped = {f: f"{f} is not installed" for f in wanted if not available(f)}
    if "jax" in wanted and "jax" not in skipped and not available("keras"):
        skipped["jax"] = "keras is not installed"
    frameworks = [f for f in wanted if f not in skipped]
    for f, why in skipped.items():
        print(f"skipping the {f} contenders: {why}", flush=True)
    sizes = QUICK if args.quick else SIZES
    results = {}
    for workload in [w for w in args.workloads.split(",") if w]:
        if workload not in sizes:
            raise ValueError(f"--workloads: expected some of {list(sizes)}. Received: {workload!r}")
        s = sizes[workload]
        rows = run_workload(workload, s, frameworks, args)
        table = [
            {**r, "fit_ms": 1000 * r["fit_s"], "predict_ms": 1000 * r["predict_s"]} for r in rows
        ]
        title = (
            f"{workload}: {s}; {args.threads} threads each; fit/predict = {s['batches']} batches "
            f"a call; median of {args.rounds} rounds x {args.reps} calls; x scan: time relative "
            f"to the hand-written JAX lax.scan (above 1: slower)"
        )
        print_table(title, table)
        checks = goals(rows) if workload == "small" else []
        for g in checks:
            print(f"  goal: {g['goal']}: {g['value']} ({'met' if g['met'] else 'MISSED'})")
        print()
        results[workload] = {"sizes": s, "results": rows, "goals": checks}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "fit_predict.json"
    payload = {
        "machine": machine_info(args.threads),
        "rounds": args.rounds,
        "reps": args.reps,
        "skipped": skipped,
        "workloads": results,
    }
    path.write_text(json.dumps(payload, indent=1, default=float))
    print(f"wrote {path}")


def print_table(title, rows):
    def cell(v, spec):
        if v is None or (isinstance(v, float) and v != v):
            return "-"
        return str(v) if isinstance(v, bool) or spec == "" else format(v, spec)

    cells = [[cell(r.get(k), spec) for _, k, spec in COLUMNS] for r in rows]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, (h, _, _) in enumerate(COLUMNS)]

    def line(vals):
        return " ".join(
            v.ljust(w) if spec == "" else v.rjust(w)
            for v, w, (_, _, spec) in zip(vals, widths, COLUMNS)
        ).rstrip()

    print(title)
    print(line([h for h, _, _ in COLUMNS]))
    for c in cells:
        print(line(c))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3], json.loads(sys.argv[4]), int(sys.argv[5]))
    else:
        main()
