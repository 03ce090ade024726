"""Timing machinery shared by the benchmark scripts.

Every script builds its contenders in one process, warms them up, then times
them in rounds: in each round every contender runs `reps` times in a row, and
the order of the contenders rotates from round to round, so that none is
always the one that runs after another (caches, CPU frequency). The median of
the per-round times is reported, a table is printed, and the results go to
`benchmarks/results/<name>.json` with a description of the machine.

A contender is a `forward(x, training)` function and the variables it trains.
`step_fns` turns one into a training step (mean squared error, SGD) and an
inference call, compiled with `tf.function` (optionally `jit_compile=True`),
or left as plain eager Python for the eager-loop contenders.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cpu

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402

RESULTS = Path(__file__).parent / "results"
TRAIN, INFER = "train step", "inference"
_WARM: list = []  # non-empty once warm_up_tf has run


@dataclass(eq=False)
class Contender:
    """One way of computing the same thing.

    Args:
        name: Shown in the tables and the JSON.
        build: Returns `(forward, variables)`: `forward(x, training)` maps the
            input batch to the output batch; `variables` are trained by SGD.
        jit: Whether the contender can run under `jit_compile=True`.
        eager: Whether it runs as plain eager Python (no `tf.function`).
    """

    name: str
    build: Callable
    jit: bool = True
    eager: bool = False

    def modes(self, jits):
        """The `jit_compile` settings this contender takes part in (None: eager)."""
        if self.eager:
            return [None]
        return [j for j in jits if j is False or self.jit]


def parse_args(description: str, rounds: int = 7, reps: int = 5, argv=None, extra=None):
    """Command-line options common to every benchmark.

    Args:
        description: The script's one-line description (for `--help`).
        rounds: Default number of interleaved rounds.
        reps: Default number of calls per contender per round.
        argv: Arguments to parse instead of `sys.argv[1:]`.
        extra: Optional `f(parser)` that adds the script's own options.

    Returns:
        The parsed `argparse.Namespace` (`quick`, `rounds`, `reps`, `out`, ...).

    Example:
        >>> parse_args("demo", argv=["--quick"]).rounds
        1
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes and one round (a smoke test)"
    )
    parser.add_argument("--rounds", type=int, default=None, help=f"rounds (default {rounds})")
    parser.add_argument(
        "--reps", type=int, default=None, help=f"calls per contender per round (default {reps})"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=RESULTS,
        help="folder for the JSON results (default: %(default)s)",
    )
    if extra is not None:
        extra(parser)
    args = parser.parse_args(argv)
    if args.rounds is None:
        args.rounds = 1 if args.quick else rounds
    if args.reps is None:
        args.reps = 1 if args.quick else reps
    if args.rounds < 1 or args.reps < 1:
        raise ValueError(
            f"--rounds and --reps must be at least 1. Received: rounds={args.rounds}, "
            f"reps={args.reps}"
        )
    return args


def sync(out):
    """Waits for `out` (any nest of tensors) to be computed."""
    for t in keras.tree.flatten(out):
        np.asarray(t)
    return out


def time_call(fn: Callable, reps: int = 1) -> float:
    """Mean wall time of `fn()` over `reps` calls, in seconds (results awaited)."""
    start = time.perf_counter()
    for _ in range(reps):
        out = fn()
    sync(out)
    return (time.perf_counter() - start) / reps


def interleave(fns: dict, rounds: int, reps) -> dict:
    """Times every function in `fns`, interleaved over rounds.

    Args:
        fns: `{key: fn}`, each `fn()` already warmed up (traced and compiled).
        rounds: Number of rounds; each round times every function once.
        reps: Calls per function per round (the round's time is their mean),
            an int or `{key: int}`.

    Returns:
        `{key: [seconds per call, one per round]}`.

    Example:
        >>> samples = interleave({"a": lambda: 1, "b": lambda: 2}, rounds=3, reps=2)
        >>> len(samples["a"])
        3
    """
    keys = list(fns)
    samples = {k: [] for k in keys}
    for k in keys:  # one untimed call each: the first calls after compiling run slower
        sync(fns[k]())
    for r in range(rounds):
        shift = r % len(keys) if keys else 0
        for k in keys[shift:] + keys[:shift]:
            n = reps[k] if isinstance(reps, dict) else reps
            samples[k].append(time_call(fns[k], n))
    return samples


def median(times) -> float:
    """The median of a list of seconds (NaN for an empty list)."""
    return statistics.median(times) if times else float("nan")


def ratio(a: float, b: float) -> float:
    """`a / b`, NaN where either is missing or `b` is zero."""
    if a is None or b is None or b == 0 or a != a or b != b:
        return float("nan")
    return a / b


def warm_up_tf() -> None:
    """Pays TensorFlow's one-time start-up costs before anything is timed.

    The first traced function, the first gradient and the first XLA
    compilation in a process each cost extra once; without this, whichever
    contender came first would carry them in its first-fit time. Runs once
    per process.
    """
    import tensorflow as tf

    if _WARM:
        return
    _WARM.append(True)

    tf.get_logger().setLevel("ERROR")  # each contender's new tf.function is no retracing
    layer = keras.layers.Dense(4)
    x = tf.ones((2, 3))
    layer(x)
    for jit in (False, True):

        @tf.function(jit_compile=jit)
        def f():
            with tf.GradientTape() as tape:
                y = tf.reduce_sum(layer(x))
            return tape.gradient(y, layer.trainable_variables)

        sync(f())


def step_fns(forward: Callable, variables, x, y, jit) -> dict:
    """A training step and an inference call for one contender.

    Args:
        forward: `forward(x, training)` returning the output batch.
        variables: The variables the training step updates (SGD, lr 0.01).
        x: The input batch (a tensor, or a nest of tensors).
        y: The target batch; the loss is the mean squared error.
        jit: `False` or `True`: compile with `tf.function(jit_compile=jit)`;
            `None`: plain eager Python (the eager-loop contenders).

    Returns:
        `{"train step": fn, "inference": fn}`, each called with no arguments.

    Example:
        >>> import tensorflow as tf
        >>> d = keras.layers.Dense(2)
        >>> d.build((None, 3))
        >>> fns = step_fns(lambda x, t: d(x), d.trainable_variables, tf.ones((4, 3)), tf.zeros((4, 2)), False)
        >>> tuple(fns["inference"]().shape)
        (4, 2)
    """
    import tensorflow as tf

    variables = list(variables)
    if not variables:
        raise ValueError("step_fns: `variables` is empty; build the contender's layers first.")
    opt = keras.optimizers.SGD(0.01)
    opt.build(variables)

    def train_step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(forward(x, True) - y))
        grads = tape.gradient(loss, variables)
        opt.apply(grads, variables)
        return loss

    def infer():
        return forward(x, False)

    if jit is None:
        return {TRAIN: train_step, INFER: infer}
    return {
        TRAIN: tf.function(train_step, jit_compile=jit),
        INFER: tf.function(infer, jit_compile=jit),
    }


def first_fit(contender: Contender, x, y, jit) -> tuple[dict, dict]:
    """Builds a contender and makes its first training step, timed.

    Args:
        contender: The contender.
        x: The input batch.
        y: The target batch.
        jit: As in `step_fns`.

    Returns:
        `(fns, times)`: the warmed-up `step_fns` (inference called once too),
        and `{"build_s", "first_step_s", "first_fit_s"}`: building the model,
        the first training step (tracing, compiling and running it), and
        their sum.
    """
    keras.utils.set_random_seed(0)
    t0 = time.perf_counter()
    forward, variables = contender.build()
    t1 = time.perf_counter()
    fns = step_fns(forward, variables, x, y, jit)
    sync(fns[TRAIN]())
    t2 = time.perf_counter()
    sync(fns[INFER]())
    return fns, {"build_s": t1 - t0, "first_step_s": t2 - t1, "first_fit_s": t2 - t0}


def measure(cands, x, y, args, jits=(False, True), skip=()):
    """Builds, first-fits and times `cands`; one row per (contender, jit).

    Args:
        cands: The contenders.
        x: The input batch.
        y: The target batch.
        args: Parsed options (`rounds`, `reps`).
        jits: The jit_compile settings to run.
        skip: `(name, jit)` pairs left out. With `args.quick`, only the first
            contender runs under XLA.

    Returns:
        A list of dicts: contender, jit, build/first step/first fit seconds,
        median seconds per train step and per inference call.
    """
    warm_up_tf()
    fns, rows = {}, []
    runs = [(c, m) for jit in jits for c in cands for m in c.modes([jit])]
    for cand, mode in dict.fromkeys(runs):
        if (cand.name, mode) in skip:
            continue
        if args.quick and mode is True and cand is not cands[0]:
            continue  # a smoke test: one XLA compilation is enough
        print(f"  first fit: {cand.name}, jit={mode}", flush=True)
        fns[(cand.name, mode)], first = first_fit(cand, x, y, mode)
        rows.append({"contender": cand.name, "jit": mode, **first})
    timed = {
        (name, mode, kind): f for (name, mode), pair in fns.items() for kind, f in pair.items()
    }
    samples = interleave(timed, args.rounds, args.reps)
    for r in rows:
        for kind, key in ((TRAIN, "train_s"), (INFER, "infer_s")):
            r[key] = median(samples[(r["contender"], r["jit"], kind)])
            r[key + "_rounds"] = samples[(r["contender"], r["jit"], kind)]
    return rows


def for_table(rows):
    """Rows with milliseconds and a printable jit column."""
    return [
        {
            **r,
            "jit": "eager" if r["jit"] is None else str(r["jit"]),
            "train_ms": 1000 * r["train_s"],
            "infer_ms": 1000 * r["infer_s"],
        }
        for r in rows
    ]


def keras_forward(model) -> tuple[Callable, list]:
    """`(forward, variables)` for a Keras model."""
    return (lambda x, training: model(x, training=training)), model.trainable_variables


def peak_rss_mib() -> float:
    """This process's resident-set high-water mark (`ru_maxrss`), in MiB."""
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / (1024 * 1024) if sys.platform == "darwin" else kib / 1024


def machine() -> dict:
    """The machine and software the numbers were measured with."""
    import tensorflow as tf

    return {
        "cpu": cpu.cpu_model(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
    }


def fmt(value, spec: str) -> str:
    """`format(value, spec)`, with '-' for None or NaN."""
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    if isinstance(value, bool):
        return str(value)
    return format(value, spec)


def print_table(title: str, columns, rows) -> None:
    """Prints rows as an aligned text table.

    Args:
        title: A line printed above the table.
        columns: `(header, key, spec)` triples; `spec` is a format spec, e.g.
            `".2f"`, or `""` for text.
        rows: Dicts holding the keys.

    Example:
        >>> print_table("t", [("name", "n", ""), ("ms", "ms", ".1f")], [{"n": "a", "ms": 1.25}])
        t
        name  ms
        a    1.2
    """
    cells = [[fmt(r.get(key), spec) for _, key, spec in columns] for r in rows]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, (h, _, _) in enumerate(columns)]
    print(title)

    def line(values):
        parts = [
            v.ljust(w) if spec == "" else v.rjust(w)
            for v, w, (_, _, spec) in zip(values, widths, columns)
        ]
        return " ".join(parts).rstrip()

    print(line([h for h, _, _ in columns]))
    for c in cells:
        print(line(c))


def print_goals(goals) -> None:
    """Prints goal checks: dicts with `goal`, `value` (text) and `met` (bool or None)."""
    print("goals:")
    for g in goals:
        verdict = {True: "met", False: "MISSED", None: "n/a"}[g["met"]]
        print(f"  {g['goal']}: {g['value']} ({verdict})")


def write_json(name: str, payload: dict, out: Path = RESULTS) -> Path:
    """Writes `payload` plus the machine description to `out/<name>.json`.

    Args:
        name: The file's stem.
        payload: JSON-serializable results.
        out: The folder (created if missing).

    Returns:
        The path written.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=1, default=float))
    print(f"wrote {path}")
    return path
