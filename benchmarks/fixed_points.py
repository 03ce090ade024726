"""Fixed points of a 64-unit network from 256 starting states: how long the search takes.

Run with `make bench` (or `python benchmarks/fixed_points.py [--quick]`). The
network is an Elman net (`Dense(64, tanh)` over `[x, h]`, `h` fed back) with
random weights of gain 1.5 and its 3 inputs held at a fixed value; the 256
starts are states it visits on 32 random sequences of 50 steps, plus noise.
Two contenders, in this one process, take turns round after round (the order
rotating), each a whole `fbx.fixed_points` call as a user makes it (tracing
included):

- `newton`: the default, Levenberg-Marquardt steps per point;
- `adam`: Adam on q (learning rate 0.01, 5000 steps at most), as FixedPointFinder.

The table shows the median time of a call, how many starts ended below the
tolerance (1e-10) and the distinct points found. `--quick`: 16 units, 32
starts, one round, a smoke test. Results go to benchmarks/results/fixed_points.json.
"""

from __future__ import annotations

import common
import keras
import numpy as np

import fbexplorer as fbx

FULL = {"units": 64, "inputs": 3, "starts": 256, "batch": 32, "steps": 50, "adam_steps": 5000}
QUICK = {"units": 16, "inputs": 3, "starts": 32, "batch": 4, "steps": 10, "adam_steps": 200}
GAIN = 1.5


def network(s):
    keras.utils.set_random_seed(0)
    x = keras.Input((s["inputs"],), name="x")
    loop = fbx.Feedback((s["units"],), name="h")
    dense = keras.layers.Dense(s["units"], activation="tanh", name="d")
    h = dense(keras.layers.Concatenate()([x, loop]))
    net = fbx.FeedbackModel(x, h, feedback={"h": h}, name="elman")
    rng = np.random.default_rng(0)
    fan_in = s["inputs"] + s["units"]
    dense.kernel.assign(
        rng.normal(0, GAIN / np.sqrt(s["units"]), (fan_in, s["units"])).astype("float32")
    )
    return net


def main(argv=None) -> int:
    args = common.parse_args(__doc__.splitlines()[0], rounds=5, reps=1, argv=argv)
    s = QUICK if args.quick else FULL
    net = network(s)
    rng = np.random.default_rng(1)
    data = rng.normal(size=(s["batch"], s["steps"], s["inputs"])).astype("float32")
    held = {"x": np.full(s["inputs"], 0.1, "float32")}
    common.warm_up_tf()

    found = {}

    def contender(method, **kwargs):
        def run():
            fp = fbx.fixed_points(
                net, held, initial=data, n_starts=s["starts"], method=method, **kwargs
            )
            found[method] = fp
            return fp.flat

        return run

    fns = {
        "newton": contender("newton"),
        "adam": contender("adam", iterations=s["adam_steps"]),
    }
    samples = common.interleave(fns, rounds=args.rounds, reps=args.reps)
    rows = []
    for method, times in samples.items():
        fp = found[method]
        rows.append(
            {
                "contender": method,
                "median_s": common.median(times),
                "rounds_s": times,
                "starts": fp.n_starts,
                "converged": fp.n_converged,
                "points": len(fp),
                "stable": int(fp.frame["stable"].sum()),
                "iterations_run": fp.settings["iterations_run"],
            }
        )
    title = (
        f"fixed points: {s['starts']} starts, Elman net of {s['units']} units "
        f"({common.machine()['cpu']}, {common.machine()['cores']} cores)"
    )
    common.print_table(
        title,
        [
            ("method", "contender", ""),
            ("median s", "median_s", ".2f"),
            ("converged", "converged", "d"),
            ("points", "points", "d"),
            ("stable", "stable", "d"),
            ("steps", "iterations_run", "d"),
        ],
        rows,
    )
    newton = rows[0]
    goals = [
        {
            "goal": f"{s['starts']} starts of a {s['units']}-unit net converge in seconds",
            "value": f"{newton['median_s']:.2f} s, {newton['converged']} of {s['starts']} "
            f"below the tolerance",
            "met": bool(newton["median_s"] < 10 and newton["converged"] > 0),
        }
    ]
    common.print_goals(goals)
    common.write_json("fixed_points", {"sizes": s, "results": rows, "goals": goals}, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
