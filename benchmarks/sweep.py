"""fbx.sweep on Ray against a plain loop: Ray's overhead per network, and throughput with 1 and 2 workers.

Run with `python benchmarks/sweep.py [--quick]` (not part of `make bench`'s
list, nor of tests/test_benchmarks.py's quick run: Ray's start, tens of seconds
on a loaded 2-core machine, would dominate it). The networks are small
feedback nets (`Dense(units, tanh)` over `[x, loop]`, a linear read-out,
Adam, mean squared error) trained on a running sum; every contender trains
the same networks (same seeds, same data) and computes `evaluate`'s loss:

- `loop`: the plain loop a user writes: for each network set the seed, build,
  `fit`, `evaluate`, save the `.keras` file; in this process, TensorFlow on
  its default threads;
- `ray-1`, `ray-2`: `fbx.sweep` on a local Ray with 1 and 2 CPUs (workers),
  one TensorFlow thread each, every network written to a store as it ends.

For each Ray contender the table gives Ray's start (`ray.init`), the warm-up
(the first network on each worker: a worker's import of TensorFlow and
fbexplorer is paid once), then the timed sweep of `networks` more networks:
seconds per network and networks per minute. Ray's overhead per network is
`ray-1`'s seconds per network minus `loop`'s. A last row times the default
analyses (loss, fixed points, attractor census, gradient flow) per network,
in the loop, for the cost of a full sweep. `--quick`: 2 networks of 4 units,
1 epoch. Results go to benchmarks/results/sweep.json.
"""

from __future__ import annotations

import os
import tempfile
import time

import common
import keras
import numpy as np

import fbexplorer as fbx

FULL = {"units": 16, "networks": 12, "epochs": 5, "samples": 64, "steps": 20}
QUICK = {"units": 4, "networks": 2, "epochs": 1, "samples": 16, "steps": 5}


def make_build(units_default):
    def build(units=units_default):
        x = keras.Input((1,), name="x")
        loop = fbx.Feedback((units,), name="loop")
        h = keras.layers.Dense(units, activation="tanh", name="h")(
            keras.layers.Concatenate()([x, loop])
        )
        net = fbx.FeedbackModel(x, keras.layers.Dense(1, name="out")(h), feedback={"loop": h})
        net.compile("adam", "mse")
        return net

    return build


def data(s):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(s["samples"], s["steps"], 1)).astype("float32")
    return x, np.cumsum(x, axis=1).astype("float32")


def plain_loop(build, xy, seeds, s, store):
    """The loop a user writes; seconds per network."""
    x, y = xy
    start = time.perf_counter()
    for seed in seeds:
        keras.utils.set_random_seed(seed)
        net = build(s["units"])
        net.fit(x, y, epochs=s["epochs"], verbose=0)
        net.evaluate(x, y, verbose=0)
        net.save(os.path.join(store, f"{seed}.keras"))
    return (time.perf_counter() - start) / len(seeds)


def on_ray(workers, build, xy, seeds, s, store):
    """fbx.sweep on a local Ray of `workers` CPUs: start, warm-up and per-network times."""
    import ray

    ray.shutdown()
    start = time.perf_counter()
    ray.init(
        address="local",
        num_cpus=workers,
        object_store_memory=128 * 2**20,
        include_dashboard=False,
        log_to_driver=False,
    )
    started = time.perf_counter() - start
    kw = dict(epochs=s["epochs"], analyses=("loss",), progress=False)
    grid = {"units": [s["units"]]}
    t = time.perf_counter()
    fbx.sweep(build, grid, xy, seeds=range(1000, 1000 + workers), store=f"{store}/warm", **kw)
    warm = time.perf_counter() - t
    t = time.perf_counter()
    pop = fbx.sweep(build, grid, xy, seeds=seeds, store=f"{store}/run", **kw)
    per = (time.perf_counter() - t) / len(seeds)
    assert len(pop) == len(seeds) and pop.failures.empty
    ray.shutdown()
    return {"start_s": started, "warm_up_s": warm, "s_per_network": per, "per_minute": 60 / per}


def analyses_cost(build, xy, s, store):
    """Seconds per network with the default analyses, in the loop (no Ray)."""
    kw = dict(epochs=s["epochs"], runner="loop", progress=False)
    fbx.sweep(build, {"units": [s["units"]]}, xy, seeds=(999,), store=f"{store}/w", **kw)
    t = time.perf_counter()
    seeds = range(min(3, s["networks"]))
    fbx.sweep(build, {"units": [s["units"]]}, xy, seeds=seeds, store=f"{store}/a", **kw)
    return (time.perf_counter() - t) / len(seeds)


def main(argv=None) -> int:
    args = common.parse_args(__doc__.splitlines()[0], rounds=1, reps=1, argv=argv)
    s = QUICK if args.quick else FULL
    build, xy = make_build(s["units"]), data(s)
    seeds = list(range(s["networks"]))
    with tempfile.TemporaryDirectory(prefix="fbx-bench-sweep-") as store:
        plain_loop(build, xy, [999], s, store)  # TensorFlow's first trace, not timed
        loop = plain_loop(build, xy, seeds, s, store)
        rays = {k: on_ray(k, build, xy, seeds, s, f"{store}/ray{k}") for k in (1, 2)}
        full = analyses_cost(build, xy, s, store)
    rows = [{"name": "loop", "per": loop}]
    for k, r in rays.items():
        rows.append({"name": f"ray-{k}", "start": r["start_s"], "warm": r["warm_up_s"],
                     "per": r["s_per_network"]})  # fmt: skip
    rows.append({"name": "loop, all analyses", "per": full})
    for row in rows:
        row["rate"] = 60 / row["per"]
    columns = [("contender", "name", ""), ("Ray start s", "start", ".1f"),
               ("warm-up s", "warm", ".1f"), ("s / network", "per", ".2f"),
               ("networks / min", "rate", ".1f")]  # fmt: skip
    title = f"fbx.sweep: {s['networks']} networks of {s['units']} units, {s['epochs']} epochs"
    common.print_table(title, columns, rows)
    overhead = rays[1]["s_per_network"] - loop
    print(f"Ray's overhead per network (ray-1 - loop): {overhead:+.2f} s")
    print(
        f"speed-up of 2 workers over 1: {rays[1]['s_per_network'] / rays[2]['s_per_network']:.2f}x"
    )
    payload = {"settings": s, "loop_s_per_network": loop, "ray": rays,
               "overhead_s_per_network": overhead, "all_analyses_s_per_network": full}  # fmt: skip
    common.write_json("sweep", payload, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
