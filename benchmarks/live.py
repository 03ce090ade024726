"""What recording costs an epoch: `fit` alone, with a TraceCallback, with a live explorer.

Run with `python benchmarks/live.py [--quick] [--rounds N] [--epochs N] [--out DIR]`.
The README's network (x -> d1 -> d2 -> d3 -> out, d3 fed back into d1, 8 units)
fits 64 sequences of T=100 (batch 16), the probe is 4 of them; TensorFlow on
the CPU. Contenders, each a `fit` of `--epochs` epochs on the same model (its
weights reset first), interleaved over `--rounds` rounds:

- `fit`: no callback;
- `fit + TraceCallback`: every node traced after every epoch;
- `fit + TraceCallback + live explorer`: the same with `fbx.explore(watch)` made
  before `fit`, updated at each recorded epoch (its frames, as the kernel
  would send them, serialised to JSON);
- `fit + TraceCallback(fixed_points=...)`: and each epoch's fixed points
  (`n_starts=32`), the census a live portrait shows.

Reported per epoch (median over rounds): the time, the time over `fit`'s,
and, measured inside the same fits, the trace and the explorer's update.
The claim checked: the explorer adds less to an epoch than the trace itself
costs. Written to benchmarks/results/live.json (`--out DIR` for another folder).
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

HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]  # trace.py there
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import fbexplorer as fbx  # noqa: E402


def network(units):
    x = keras.Input((1,), name="x")
    loop = fbx.Feedback((units,), name="loop")
    h = keras.layers.Concatenate(name="cat")([x, loop])
    for name in ("d1", "d2", "d3"):
        h = keras.layers.Dense(units, activation="tanh", name=name)(h)
    y = keras.layers.Dense(1, name="out")(h)
    net = fbx.FeedbackModel(x, y, feedback={"loop": h})
    net.compile("adam", "mse")
    return net


def one_fit(net, weights, X, Y, epochs, batch, kind, probe):
    """Seconds per epoch of one fit, and (trace s, update s) per recorded epoch."""
    net.set_weights(weights)
    callbacks, updates = [], []
    if kind != "fit":
        search = {"inputs": np.zeros(1, "float32"), "n_starts": 32, "initial": probe}
        watch = fbx.TraceCallback(probe, fixed_points=search if kind == "census" else None)
        callbacks.append(watch)
        if kind == "live":  # listeners run in order: start, the explorer's, stop
            began = []
            watch.listen(lambda epoch: began.append(time.perf_counter()))
            ex = fbx.explore(watch)

            def stop(epoch):
                json.dumps(ex.view.data)  # what the kernel sends
                updates.append(time.perf_counter() - began[-1])

            watch.listen(stop)
    start = time.perf_counter()
    net.fit(X, Y, epochs=epochs, batch_size=batch, verbose=0, callbacks=callbacks)
    per_epoch = (time.perf_counter() - start) / epochs
    traces = [s[0] for s in watch.seconds.values()] if callbacks else []
    census = [s[1] for s in watch.seconds.values()] if callbacks else []
    return per_epoch, traces, census, updates


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=HERE / "results", help="results folder")
    args = parser.parse_args(argv)
    if args.quick:
        n, steps, batch, rounds, epochs = 8, 10, 4, 1, 2
    else:
        n, steps, batch, rounds, epochs = 64, 100, 16, args.rounds, args.epochs
    keras.utils.set_random_seed(0)
    net = network(8)
    X = np.random.default_rng(0).uniform(-1, 1, (n, steps, 1)).astype("float32")
    Y = np.cumsum(X, axis=1) / np.arange(1, steps + 1)[None, :, None]
    probe = X[:4]
    weights = net.get_weights()
    kinds = {
        "fit": "fit",
        "trace": "fit + TraceCallback",
        "live": "fit + TraceCallback + live explorer",
        "census": "fit + TraceCallback(fixed_points=...)",
    }
    for kind in kinds:  # warm-up: compile fit, the trace loop and the search
        one_fit(net, weights, X, Y, 1, batch, kind, probe)
    got = {k: {"epoch": [], "trace": [], "census": [], "update": []} for k in kinds}
    for r in range(rounds):
        order = list(kinds)[r % len(kinds) :] + list(kinds)[: r % len(kinds)]
        for kind in order:
            epoch, traces, census, updates = one_fit(net, weights, X, Y, epochs, batch, kind, probe)
            got[kind]["epoch"].append(epoch)
            got[kind]["trace"] += traces
            got[kind]["census"] += census
            got[kind]["update"] += updates
    base = statistics.median(got["fit"]["epoch"])
    median = lambda xs: statistics.median(xs) if xs else 0.0  # noqa: E731
    results = [
        {
            "contender": label,
            "epoch_s": median(got[k]["epoch"]),
            "ratio_to_fit": median(got[k]["epoch"]) / base,
            "added_s": median(got[k]["epoch"]) - base,
            "trace_s": median(got[k]["trace"]),
            "census_s": median(got[k]["census"]),
            "update_s": median(got[k]["update"]),
        }
        for k, label in kinds.items()
    ]
    print(
        f"one epoch of fit, {n} sequences of T={steps} (batch {batch}), probe of 4; README "
        f"network; TensorFlow CPU; median of {rounds} rounds x {epochs} epochs"
    )
    print(
        f"{'contender':40} {'epoch ms':>9} {'x fit':>6} {'added':>8} {'trace':>7} "
        f"{'search':>7} {'update':>7}"
    )
    for r in results:
        print(
            f"{r['contender']:40} {1000 * r['epoch_s']:9.1f} {r['ratio_to_fit']:6.2f} "
            f"{1000 * r['added_s']:8.1f} {1000 * r['trace_s']:7.1f} {1000 * r['census_s']:7.1f} "
            f"{1000 * r['update_s']:7.1f}"
        )
    live = results[2]
    print(
        f"the live explorer's update: {1000 * live['update_s']:.1f} ms an epoch, the trace "
        f"{1000 * live['trace_s']:.1f} ms"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "live.json").write_text(
        json.dumps(
            {
                "machine": f"{os.cpu_count()} CPU cores, {platform.machine()}, "
                f"{platform.processor() or 'unknown CPU'}",
                "python": sys.version.split()[0],
                "keras": keras.__version__,
                "quick": args.quick,
                "sizes": {"sequences": n, "T": steps, "batch": batch, "probe": 4},
                "results": results,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
