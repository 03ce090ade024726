"""Side-by-side timings: an LSTM as a feedback graph vs Keras's own LSTM.

Run with `make bench`. Each contender is built and warmed up in this one
process; then the contenders take turns, round after round, and the median
time of each is reported, with its ratio to `keras.layers.LSTM`. Results are
printed as a table and written to benchmarks/results/lstm.json.

Setting: batch 64, T=100, 32 inputs, 128 units, TensorFlow on the CPU.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

import fbexplorer as fbx  # noqa: E402

B, T, D, U = 64, 100, 32, 128
ROUNDS = int(os.environ.get("BENCH_ROUNDS", 7))
REPS = int(os.environ.get("BENCH_REPS", 5))


def keras_lstm():
    x = keras.Input((T, D))
    return keras.Model(x, keras.layers.LSTM(U, return_sequences=True)(x))


def fbx_cell_lstm():
    x = keras.Input((D,), name="x")
    return fbx.FeedbackModel(x, fbx.cell(keras.layers.LSTMCell(U, name="lstm"))(x))


def fbx_graph_lstm():
    x = keras.Input((D,), name="x")
    h_prev = fbx.Feedback((U,), name="h")
    c_prev = fbx.Feedback((U,), name="c")
    z = keras.layers.Dense(4 * U)(x) + keras.layers.Dense(4 * U, use_bias=False)(h_prev)
    i, f, g, o = ops.split(z, 4, axis=-1)
    c = ops.sigmoid(f) * c_prev + ops.sigmoid(i) * ops.tanh(g)
    h = ops.sigmoid(o) * ops.tanh(c)
    return fbx.FeedbackModel(x, h, feedback={"h": h, "c": c})


CONTENDERS = {
    "keras.layers.LSTM": keras_lstm,
    "fbx.cell(LSTMCell)": fbx_cell_lstm,
    "LSTM as Dense + Feedback": fbx_graph_lstm,
}


def make_fns(model, jit):
    import tensorflow as tf

    opt = keras.optimizers.SGD(0.01)
    opt.build(model.trainable_variables)
    X = tf.constant(np.random.default_rng(0).normal(size=(B, T, D)).astype("float32"))
    Y = tf.constant(np.zeros((B, T, U), "float32"))

    @tf.function(jit_compile=jit)
    def train_step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(X, training=True) - Y))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply(grads, model.trainable_variables)
        return loss

    @tf.function(jit_compile=jit)
    def infer():
        return model(X, training=False)

    return {"train step": train_step, "inference": infer}


def timed(fn):
    start = time.perf_counter()
    for _ in range(REPS):
        out = fn()
    np.asarray(out)  # wait for the result
    return (time.perf_counter() - start) / REPS


def main():
    results = []
    for jit in (False, True):
        fns = {}
        for name, build in CONTENDERS.items():
            keras.utils.set_random_seed(0)
            model = build()
            fns[name] = make_fns(model, jit)
            for fn in fns[name].values():
                fn()  # trace and compile
        samples = {(n, k): [] for n in fns for k in ("train step", "inference")}
        for _ in range(ROUNDS):
            for name in fns:
                for kind in ("train step", "inference"):
                    samples[(name, kind)].append(timed(fns[name][kind]))
        for (name, kind), times in samples.items():
            base = statistics.median(samples[("keras.layers.LSTM", kind)])
            med = statistics.median(times)
            results.append(
                {
                    "contender": name,
                    "what": kind,
                    "jit_compile": jit,
                    "median_s": med,
                    "ratio_to_keras_lstm": med / base,
                }
            )
    print(
        f"LSTM, batch {B}, T={T}, {D} inputs, {U} units; TensorFlow CPU; "
        f"median of {ROUNDS} rounds x {REPS} reps"
    )
    print(f"{'contender':28} {'what':11} {'jit':5} {'ms':>9} {'x keras LSTM':>13}")
    for r in results:
        print(
            f"{r['contender']:28} {r['what']:11} {str(r['jit_compile']):5} "
            f"{1000 * r['median_s']:9.2f} {r['ratio_to_keras_lstm']:13.2f}"
        )
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "lstm.json").write_text(
        json.dumps(
            {
                "machine": f"{os.cpu_count()} CPU cores",
                "python": sys.version.split()[0],
                "results": results,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
