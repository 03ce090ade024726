"""The cost of tracing every node, relative to a plain `predict` on the same data.

Run with `make bench` (or `python benchmarks/trace.py [--quick]`). For each
model, `net.predict(X)` and `fbx.trace(net, X)` (every node, into a
DataFrame) are built and warmed up in this one process, then take turns,
round after round, the order rotating; the median time of each is reported
with its ratio to `predict` and to a direct call `net(X)` (the same compiled
loop without Keras's predict machinery). `fbx.trace(net, X, nodes="out")`
shows what tracing costs without the extra nodes. Results are printed as a table and
written to benchmarks/results/trace.json (`--out DIR` for another folder).

Models: the README's network (x -> d1 -> d2 -> d3 -> out, d3 fed back into d1,
8 units) and an LSTM cell (32 inputs, 128 units) with a Dense head; batch 64,
T=100, TensorFlow on the CPU. `--quick` runs tiny sizes once (a smoke test).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

# This file is named like the standard library's `trace`; keep its folder off
# the import path so that nothing imports it by mistake.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import fbexplorer as fbx  # noqa: E402


def seed_network(units):
    x = keras.Input((1,), name="x")
    loop = fbx.Feedback((units,), name="loop")
    h1 = keras.layers.Dense(units, activation="tanh", name="d1")(
        keras.layers.Concatenate(name="cat")([x, loop])
    )
    h2 = keras.layers.Dense(units, activation="tanh", name="d2")(h1)
    h3 = keras.layers.Dense(units, activation="tanh", name="d3")(h2)
    y = keras.layers.Dense(1, name="out")(h3)
    return fbx.FeedbackModel(inputs=x, outputs=y, feedback={"loop": h3}), 1


def lstm_network(units, inputs=32):
    x = keras.Input((inputs,), name="x")
    h = fbx.cell(keras.layers.LSTMCell(units, name="lstm"))(x)
    y = keras.layers.Dense(1, name="out")(h)
    return fbx.FeedbackModel(x, y), inputs


def timed(fn, reps):
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - start) / reps


def bench_model(name, build, units, batch, steps, rounds, reps):
    keras.utils.set_random_seed(0)
    net, width = build(units)
    X = np.random.default_rng(0).normal(size=(batch, steps, width)).astype("float32")
    contenders = {
        "predict": lambda: net.predict(X, batch_size=batch, verbose=0),
        "direct call net(X)": lambda: np.asarray(net(X)),
        "trace, every node": lambda: fbx.trace(net, X),
        "trace, output only": lambda: fbx.trace(net, X, nodes="out"),
    }
    rows = len(fbx.trace(net, X))  # also warms the compiled pass
    for fn in contenders.values():
        fn()
    names = list(contenders)
    times = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for n in order:
            times[n].append(timed(contenders[n], reps))
    base = statistics.median(times["predict"])
    call = statistics.median(times["direct call net(X)"])
    return [
        {
            "model": name,
            "contender": n,
            "batch": batch,
            "T": steps,
            "trace_rows": rows if n == "trace, every node" else None,
            "median_s": statistics.median(t),
            "ratio_to_predict": statistics.median(t) / base,
            "ratio_to_call": statistics.median(t) / call,
        }
        for n, t in times.items()
    ]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE / "results", help="results folder")
    args = parser.parse_args(argv)
    if args.quick:
        batch, steps, rounds, reps, sizes = 4, 10, 1, 1, {"seed": 8, "lstm": 8}
    else:
        batch, steps, rounds, reps = 64, 100, args.rounds, args.reps
        sizes = {"seed": 8, "lstm": 128}
    results = []
    results += bench_model(
        "d1 -> d2 -> d3 -> d1 (8 units)", seed_network, sizes["seed"], batch, steps, rounds, reps
    )
    results += bench_model(
        f"LSTMCell ({sizes['lstm']} units)", lstm_network, sizes["lstm"], batch, steps, rounds, reps
    )
    print(
        f"trace vs predict, batch {batch}, T={steps}; TensorFlow CPU; median of "
        f"{rounds} rounds x {reps} reps"
    )
    print(f"{'model':32} {'contender':20} {'ms':>9} {'x predict':>10} {'x call':>7}")
    for r in results:
        print(
            f"{r['model']:32} {r['contender']:20} {1000 * r['median_s']:9.2f} "
            f"{r['ratio_to_predict']:10.2f} {r['ratio_to_call']:7.2f}"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "trace.json").write_text(
        json.dumps(
            {
                "machine": f"{os.cpu_count()} CPU cores, {platform.machine()}",
                "python": sys.version.split()[0],
                "keras": keras.__version__,
                "quick": args.quick,
                "results": results,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
