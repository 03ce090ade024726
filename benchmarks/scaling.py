"""Scaling: time, peak memory and first-fit time against T and the number of feedback edges.

Two sweeps:
  T       the LSTM as Dense + Feedback (fbexplorer) and keras.layers.LSTM,
          batch 16, 32 inputs, 64 units, T = 10, 100, 1000, 10000
  edges   8 Dense layers of 64 units (tanh) on 32 inputs, batch 16, T=100; the
          first k layers (k = 1, 2, 4, 8) each take their own output of the
          previous step as an extra input (k feedback edges); the others are
          plain Dense layers
  delay   one Dense(64, tanh) layer on 32 inputs and its own output from k
          steps ago, batch 16, T=200, k = 1, 10, 100, 1000, 10000: a delay-k
          edge is one ring buffer (k = 10) or, at least a quarter of the run
          long, a sequence read in segments (k >= 100), so neither training nor
          inference per step nor the first fit should grow with k; the
          history holds k x the state (16 x 64 floats = 4 KiB per step of
          delay)
  longT   the delay net at long runs: batch 4, T = 2,000 and 20,000, k = 1,
          T/2, T and 5T (an edge longer than the run reads only initial
          values; it should cost what k = T costs, and about what k = 1
          costs)

Times (training step and inference, medians of interleaved rounds) are taken
in this one process; at large T a round makes fewer calls (reps * 100 / T, at
least one). Peak memory and first-fit time are taken in a fresh subprocess per
point: it imports everything, pays TensorFlow's one-time costs, makes the
input data, records its resident-set high-water mark
(`resource.getrusage(RUSAGE_SELF).ru_maxrss`, the whole process: Python,
TensorFlow, the data), then builds the model, makes the first training step
(first fit) and two more, and records the high-water mark again. The
difference, "MiB over base", is what the model and its training step cost;
"KiB per step/edge" is how much it grew from the previous point per added
step (T sweep), per added edge (edges sweep) or per added step of delay
(delay sweep): constant along the T sweep means memory linear in T.

The longT sweep's value is `T:k`; it has no memory slope.

Run: python benchmarks/scaling.py [--quick] [--jit] [--sweeps T,edges,delay,longT]
"""

from __future__ import annotations

import json
import subprocess
import sys

import common
import keras
from keras import ops

import fbexplorer as fbx

T_SIZES = {"B": 16, "D": 32, "U": 64}
T_VALUES = (10, 100, 1000, 10000)
EDGE_SIZES = {"B": 16, "T": 100, "D": 32, "W": 64, "L": 8}
EDGE_VALUES = (1, 2, 4, 8)
QUICK_T_SIZES = {"B": 2, "D": 3, "U": 4}
QUICK_T_VALUES = (4, 8)
QUICK_EDGE_SIZES = {"B": 2, "T": 4, "D": 3, "W": 4, "L": 2}
QUICK_EDGE_VALUES = (1, 2)
DELAY_SIZES = {"B": 16, "T": 200, "D": 32, "W": 64}
DELAY_VALUES = (1, 10, 100, 1000, 10000)
QUICK_DELAY_SIZES = {"B": 2, "T": 8, "D": 3, "W": 4}
QUICK_DELAY_VALUES = (1, 100)
LONG_T_SIZES = {"B": 4, "D": 32, "W": 64}
LONG_T_VALUES = tuple(f"{t}:{k}" for t in (2000, 20000) for k in (1, t // 2, t, 5 * t))
QUICK_LONG_T_VALUES = ("8:1", "8:40")
FBX_LSTM, KERAS_LSTM, EDGES = "LSTM as Dense + Feedback", "keras.layers.LSTM", "k-edge net"
DELAY = "delay-k net"


def edges_contender(s, k) -> common.Contender:
    """The net of `s["L"]` Dense layers whose first `k` are fed back into themselves."""
    if not 1 <= k <= s["L"]:
        raise ValueError(f"edges: k must be in 1..{s['L']} (the layers). Received: k={k}")

    def build():
        x = keras.Input((s["D"],), name="x")
        h, feedback = x, {}
        for j in range(s["L"]):
            dense = keras.layers.Dense(s["W"], activation="tanh", name=f"d{j}")
            if j < k:
                loop = fbx.Feedback((s["W"],), name=f"f{j}")
                h = dense(ops.concatenate([h, loop], axis=-1))
                feedback[f"f{j}"] = h
            else:
                h = dense(h)
        y = keras.layers.Dense(s["D"], name="out")(h)
        return common.keras_forward(fbx.FeedbackModel(x, y, feedback=feedback))

    return common.Contender(EDGES, build)


def delay_contender(s, k) -> common.Contender:
    """One Dense layer fed its own output from `k` steps ago."""

    def build():
        x = keras.Input((s["D"],), name="x")
        loop = fbx.Feedback((s["W"],), name="loop", delay=k)
        h = keras.layers.Dense(s["W"], activation="tanh", name="d")(
            ops.concatenate([x, loop], axis=-1)
        )
        y = keras.layers.Dense(s["D"], name="out")(h)
        return common.keras_forward(fbx.FeedbackModel(x, y, feedback={"loop": h}))

    return common.Contender(DELAY, build)


def long_t(value) -> tuple[int, int]:
    """`(T, k)` from a longT sweep value `"T:k"`."""
    steps, k = (int(v) for v in value.split(":"))
    return steps, k


def sweep_steps(sweep, value, quick) -> int:
    if sweep == "longT":
        return long_t(value)[0]
    if sweep == "T":
        return value
    if sweep == "delay":
        return (QUICK_DELAY_SIZES if quick else DELAY_SIZES)["T"]
    return (QUICK_EDGE_SIZES if quick else EDGE_SIZES)["T"]


def point(sweep, value, contender, quick):
    """The contender, input and target of one point of a sweep."""
    import lstm
    import numpy as np
    import tensorflow as tf

    if sweep == "T":
        s = dict(QUICK_T_SIZES if quick else T_SIZES, T=value)
        cand = {c.name: c for c in lstm.contenders(s)}[contender]
        x, y = lstm.data(s)
        return cand, x, y
    if sweep == "delay":
        s = QUICK_DELAY_SIZES if quick else DELAY_SIZES
        cand = delay_contender(s, value)
    elif sweep == "longT":
        steps, k = long_t(value)
        s = dict(QUICK_DELAY_SIZES if quick else LONG_T_SIZES, T=steps)
        cand = delay_contender(s, k)
    else:
        s = QUICK_EDGE_SIZES if quick else EDGE_SIZES
        cand = edges_contender(s, value)
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(s["B"], s["T"], s["D"])).astype("float32"))
    return cand, x, tf.zeros_like(x)


def child(spec: dict) -> dict:
    """Runs one memory point (in its own process) and returns its measurements."""
    common.warm_up_tf()
    cand, x, y = point(spec["sweep"], spec["value"], spec["contender"], spec["quick"])
    base = common.peak_rss_mib()
    fns, first = common.first_fit(cand, x, y, spec["jit"])
    for _ in range(2):
        common.sync(fns[common.TRAIN]())
    peak = common.peak_rss_mib()
    return {"base_mib": base, "peak_mib": peak, "fresh_first_fit_s": first["first_fit_s"]}


def memory_points(points, jit, quick) -> dict:
    """Runs `child` for each point in a subprocess (all at once with `quick`)."""

    def start(p):
        spec = {"sweep": p[0], "value": p[1], "contender": p[2], "jit": jit, "quick": quick}
        print(f"  memory: {p}", flush=True)
        return subprocess.Popen(
            [sys.executable, __file__, "--child", json.dumps(spec)],
            stdout=subprocess.PIPE,
            text=True,
        )

    out = {}
    if quick:
        procs = {p: start(p) for p in points}
    else:
        procs = {}
    for p in points:
        proc = procs.get(p) or start(p)
        stdout, _ = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"memory point {p} failed (exit {proc.returncode})")
        line = [ln for ln in stdout.splitlines() if ln.startswith("RESULT ")][-1]
        out[p] = json.loads(line[len("RESULT ") :])
    return out


def add_slopes(rows) -> None:
    """Adds the memory added per extra step (T sweep) or per extra edge (edges sweep).

    Measured between a point and the previous point of the same sweep and
    contender: `(delta - previous delta) / (value - previous value)`, in KiB.
    Constant along the T sweep means memory linear in T.
    """
    last = {}
    for r in rows:
        key = (r["sweep"], r["contender"])
        prev = last.get(key)
        if r["sweep"] == "longT":
            continue
        if prev is not None and "delta_mib" in r and "delta_mib" in prev:
            r["kib_per_unit"] = (
                1024 * (r["delta_mib"] - prev["delta_mib"]) / (r["value"] - prev["value"])
            )
        last[key] = r


COLUMNS = [
    ("sweep", "sweep", ""),
    ("value", "value", ""),
    ("contender", "contender", ""),
    ("train ms", "train_ms", ".2f"),
    ("ms/step", "train_ms_per_step", ".4f"),
    ("infer ms", "infer_ms", ".2f"),
    ("peak MiB", "peak_mib", ".0f"),
    ("MiB over base", "delta_mib", ".1f"),
    ("KiB per step/edge/delay", "kib_per_unit", ".2f"),
    ("1st fit s", "fresh_first_fit_s", ".2f"),
]


def main(argv=None):
    if argv is None and len(sys.argv) == 3 and sys.argv[1] == "--child":
        print("RESULT " + json.dumps(child(json.loads(sys.argv[2]))), flush=True)
        return

    def extra(p):
        p.add_argument("--jit", action="store_true", help="compile with jit_compile=True (XLA)")
        p.add_argument(
            "--sweeps",
            default="T,edges,delay",
            help="comma-separated sweeps to run (T, edges, delay, longT; default: T,edges,delay)",
        )

    args = common.parse_args(__doc__.splitlines()[0], argv=argv, extra=extra)
    t_values = QUICK_T_VALUES if args.quick else T_VALUES
    edge_values = QUICK_EDGE_VALUES if args.quick else EDGE_VALUES
    points = [("T", t, c) for t in t_values for c in (FBX_LSTM, KERAS_LSTM)]
    points += [("edges", k, EDGES) for k in edge_values]
    delay_values = QUICK_DELAY_VALUES if args.quick else DELAY_VALUES
    points += [("delay", k, DELAY) for k in delay_values]
    points += [("longT", v, DELAY) for v in (QUICK_LONG_T_VALUES if args.quick else LONG_T_VALUES)]
    sweeps = {name.strip() for name in args.sweeps.split(",")}
    unknown = sweeps - {"T", "edges", "delay", "longT"}
    if unknown:
        raise SystemExit(
            f"--sweeps: unknown sweep(s) {sorted(unknown)}; use T, edges, delay, longT"
        )
    points = [p for p in points if p[0] in sweeps]
    mem_points = points[:1] if args.quick else points  # a smoke test: one subprocess
    memory = memory_points(mem_points, args.jit, args.quick)

    common.warm_up_tf()
    fns, rows, reps = {}, [], {}
    for p in points:
        cand, x, y = point(*p, args.quick)
        print(f"  first fit: {p}", flush=True)
        fns[p], first = common.first_fit(cand, x, y, args.jit)
        steps = sweep_steps(p[0], p[1], args.quick)
        rows.append({"sweep": p[0], "value": p[1], "contender": p[2], "T": steps, **first})
        for kind in (common.TRAIN, common.INFER):
            reps[p + (kind,)] = max(1, round(args.reps * 100 / steps))
    timed = {p + (kind,): f for p, pair in fns.items() for kind, f in pair.items()}
    samples = common.interleave(timed, args.rounds, reps)
    for r in rows:
        p = (r["sweep"], r["value"], r["contender"])
        r["train_s"] = common.median(samples[p + (common.TRAIN,)])
        r["infer_s"] = common.median(samples[p + (common.INFER,)])
        r["train_ms"], r["infer_ms"] = 1000 * r["train_s"], 1000 * r["infer_s"]
        r["train_ms_per_step"] = r["train_ms"] / r["T"]
        if p in memory:
            m = memory[p]
            r.update(m, delta_mib=m["peak_mib"] - m["base_mib"])
    add_slopes(rows)
    title = (
        f"Scaling, jit_compile={args.jit}; T sweep {T_SIZES if not args.quick else QUICK_T_SIZES}, "
        f"edges sweep {EDGE_SIZES if not args.quick else QUICK_EDGE_SIZES}, "
        f"delay sweep {DELAY_SIZES if not args.quick else QUICK_DELAY_SIZES}, "
        f"longT sweep {LONG_T_SIZES if not args.quick else QUICK_DELAY_SIZES}; median of "
        f"{args.rounds} rounds. Memory and first fit: one fresh process per point, "
        f"ru_maxrss (peak resident set of the whole process)"
    )
    common.print_table(title, COLUMNS, rows)
    common.write_json(
        "scaling",
        {
            "jit_compile": args.jit,
            "rounds": args.rounds,
            "reps_at_T100": args.reps,
            "memory_measure": "ru_maxrss of a fresh subprocess per point, MiB",
            "results": rows,
        },
        args.out,
    )


if __name__ == "__main__":
    main()
