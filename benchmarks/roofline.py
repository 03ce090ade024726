"""The roofline: how close each LSTM contender comes to the machine's matmul rate.

FLOPs are counted analytically, matmuls only (the gates' elementwise work is
small beside them): the forward pass of an LSTM multiplies, at each of T steps,
a (B, D + U) batch by a (D + U, 4U) kernel, 2 * B * T * (D + U) * 4U FLOPs;
the backward pass costs about twice that (gradients with respect to the
inputs and to the weights), so a training step is about 3x the forward FLOPs.
The limit is the measured rate of one large float32 matmul (tf.matmul of two
N x N matrices, 2 N^3 FLOPs, compiled, median of interleaved rounds), taken in
the same rounds as the contenders. Each contender's rate = its FLOPs / its
median time; "of peak" = that rate / the matmul rate.

Contenders: those of lstm.py (batch 64, T=100, 32 inputs, 128 units),
without jit_compile (with --jit, under XLA instead). The static unroll is
left out unless --static (its first fit is slow; lstm.py times it).

Run: python benchmarks/roofline.py [--quick] [--jit] [--static]
"""

from __future__ import annotations

import common
import lstm

MATMUL_N, QUICK_MATMUL_N = 2048, 64
MATMUL = "tf.matmul N x N"


def lstm_flops(B: int, T: int, D: int, U: int) -> dict:
    """Matmul FLOPs of an LSTM's forward pass and training step.

    Args:
        B: Batch size.
        T: Timesteps.
        D: Inputs.
        U: Units.

    Returns:
        `{"inference": forward FLOPs, "train step": 3x forward}`.

    Example:
        >>> lstm_flops(1, 1, 1, 1)["inference"]
        16
    """
    forward = 2 * B * T * (D + U) * 4 * U
    return {common.INFER: forward, common.TRAIN: 3 * forward}


def matmul_fn(n: int):
    """A compiled `n x n` float32 matmul; returns `(fn, flops per call)`."""
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    a = tf.constant(rng.normal(size=(n, n)).astype("float32"))
    b = tf.constant(rng.normal(size=(n, n)).astype("float32"))
    return tf.function(lambda: tf.matmul(a, b)), 2 * n**3


COLUMNS = [
    ("contender", "contender", ""),
    ("what", "what", ""),
    ("jit", "jit", ""),
    ("ms", "ms", ".2f"),
    ("GFLOP", "gflop", ".3f"),
    ("GFLOP/s", "gflops", ".2f"),
    ("of peak", "of_peak", ".3f"),
]


def main(argv=None):
    def extra(p):
        p.add_argument("--jit", action="store_true", help="the contenders under XLA")
        p.add_argument("--static", action="store_true", help="include the static unroll")

    args = common.parse_args(__doc__.splitlines()[0], argv=argv, extra=extra)
    s = lstm.QUICK if args.quick else lstm.SIZES
    n = QUICK_MATMUL_N if args.quick else MATMUL_N
    x, y = lstm.data(s)
    cands = [c for c in lstm.contenders(s) if args.static or c.name != lstm.STATIC]
    common.warm_up_tf()
    fns = {}
    for cand in cands:
        for mode in cand.modes([args.jit]):
            print(f"  first fit: {cand.name}, jit={mode}", flush=True)
            pair, _ = common.first_fit(cand, x, y, mode)
            for kind, f in pair.items():
                fns[(cand.name, mode, kind)] = f
    mm, mm_flops = matmul_fn(n)
    common.sync(mm())
    fns[(MATMUL, False, "matmul")] = mm
    samples = common.interleave(fns, args.rounds, args.reps)

    peak = mm_flops / common.median(samples[(MATMUL, False, "matmul")])
    flops = lstm_flops(s["B"], s["T"], s["D"], s["U"])
    rows = []
    for (name, mode, kind), times in samples.items():
        t = common.median(times)
        f = mm_flops if kind == "matmul" else flops[kind]
        rows.append(
            {
                "contender": name if kind != "matmul" else f"tf.matmul {n} x {n}",
                "what": kind,
                "jit": "eager" if mode is None else str(mode),
                "median_s": t,
                "ms": 1000 * t,
                "flops": f,
                "gflop": f / 1e9,
                "gflops": f / t / 1e9,
                "of_peak": f / t / peak,
                "rounds_s": times,
            }
        )
    title = (
        f"Roofline: LSTM batch {s['B']}, T={s['T']}, {s['D']} inputs, {s['U']} units "
        f"(matmul FLOPs: forward 2*B*T*(D+U)*4U, train step 3x forward); limit: "
        f"tf.matmul {n} x {n} at {peak / 1e9:.1f} GFLOP/s; median of {args.rounds} rounds"
    )
    common.print_table(title, COLUMNS, rows)
    common.write_json(
        "roofline",
        {
            "sizes": s,
            "matmul_n": n,
            "matmul_gflops": peak / 1e9,
            "flops": flops,
            "rounds": args.rounds,
            "reps": args.reps,
            "results": rows,
        },
        args.out,
    )


if __name__ == "__main__":
    main()
