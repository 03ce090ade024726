"""The census of attractors and a continuation of a 64-unit network: how long each takes.

Run with `make bench` (or `python benchmarks/attractors.py [--quick]`). The
network is the Elman net of fixed_points.py (`Dense(64, tanh)` over `[x, h]`,
`h` fed back, random weights of gain 1.5) with one input `x`. Two
contenders, in this one process, take turns round after round (the order
rotating), each a whole call as a user makes it, after one untimed call that
compiles it:

- `census`: `fbx.attractors(net, {"x": 0.1}, starts=256)` (1000 steps from 256
  uniform starts, then 32 recorded and classified);
- `continuation`: `fbx.continuation(net, {}, vary={"x": 50 values in [-1, 1]})`
  (64 starts at the first value, then the last value's points and 8 fresh
  starts at each next one).

The table shows the median time of a call and what it found. `--quick`: 8
units, 32 starts, 5 values, one round, a smoke test. Results go to
benchmarks/results/attractors.json.
"""

from __future__ import annotations

import common
import keras
import numpy as np

import fbexplorer as fbx

FULL = {"units": 64, "starts": 256, "steps": 1000, "values": 50}
QUICK = {"units": 8, "starts": 32, "steps": 100, "values": 5}
GAIN = 1.5


def network(s):
    keras.utils.set_random_seed(0)
    x = keras.Input((1,), name="x")
    loop = fbx.Feedback((s["units"],), name="h")
    dense = keras.layers.Dense(s["units"], activation="tanh", name="d")
    h = dense(keras.layers.Concatenate()([x, loop]))
    net = fbx.FeedbackModel(x, h, feedback={"h": h}, name="elman")
    rng = np.random.default_rng(0)
    kernel = rng.normal(0, GAIN / np.sqrt(s["units"]), (1 + s["units"], s["units"]))
    dense.kernel.assign(kernel.astype("float32"))
    return net


def main(argv=None) -> int:
    args = common.parse_args(__doc__.splitlines()[0], rounds=3, reps=1, argv=argv)
    s = QUICK if args.quick else FULL
    net = network(s)
    values = np.linspace(-1.0, 1.0, s["values"], dtype="float32")[:, None]
    common.warm_up_tf()
    found = {}

    def census():
        found["census"] = fbx.attractors(
            net, {"x": np.full(1, 0.1, "float32")}, starts=s["starts"], steps=s["steps"]
        )

    def continuation():
        found["continuation"] = fbx.continuation(net, {}, vary={"x": values})

    fns = {"census": census, "continuation": continuation}
    for fn in fns.values():  # compiles each (kept on the model)
        fn()
    samples = common.interleave(fns, rounds=args.rounds, reps=args.reps)
    rows = [_row(name, times, found[name], s) for name, times in samples.items()]
    title = (
        f"attractors: census of {s['starts']} starts, continuation over {s['values']} "
        f"values, Elman net of {s['units']} units "
        f"({common.machine()['cpu']}, {common.machine()['cores']} cores)"
    )
    common.print_table(
        title,
        [
            ("what", "contender", ""),
            ("median s", "median_s", ".2f"),
            ("found", "found", ""),
        ],
        rows,
    )
    common.write_json("attractors", {"sizes": s, "results": rows}, args.out)
    return 0


def _row(name, times, result, s) -> dict:
    if name == "census":
        kinds = result.frame["kind"].value_counts()
        found = ", ".join(f"{n} {k}" for k, n in kinds.items() if n)
        extra = {"attractors": len(result), "starts": s["starts"]}
    else:
        found = (
            f"{len(result)} points on {result.frame['branch'].nunique()} branches, "
            f"{len(result.bifurcations)} bifurcations"
        )
        extra = {"points": len(result), "values": s["values"]}
    return {
        "contender": name,
        "median_s": common.median(times),
        "rounds_s": times,
        "found": found,
        **extra,
    }


if __name__ == "__main__":
    raise SystemExit(main())
