"""An LSTM six ways: as a feedback graph, and as the alternatives users have.

Contenders (all the same LSTM: batch 64, T=100, 32 inputs, 128 units):
  LSTM as Dense + Feedback   fbexplorer: the gates written with Dense layers
                             (Dense(x) + Dense(h)), h and c fed back;
                             hoist=True: x's projection hoisted out of the loop
  LSTM as Dense(Concatenate) + Feedback
                             the same with one Dense over [x, h]: the engine
                             splits its kernel and hoists x's half
  ..., hoist=False           both again with everything in the loop, to show
                             what hoisting gains; for these models the same as
                             the default hoist="auto" (the projection widens
                             what the loop reads, so auto keeps it there)
  fbx.cell(LSTMCell)         fbexplorer: Keras's LSTMCell inside the step graph
  keras.layers.LSTM          Keras's own layer
  RNN(hand-written cell)     keras.layers.RNN over a small Layer with a kernel,
                             a recurrent kernel and a bias
  static unroll              a functional model applying the same layers T times
  eager loop                 a Python loop over t under tf.GradientTape

Each runs a training step (MSE, SGD) and inference, compiled with
tf.function, with and without jit_compile (XLA); the eager loop runs once,
uncompiled. First fit = building the model + the first training step (trace,
compile, run). Ratios are against keras.layers.LSTM and the hand-written cell
at the same jit setting (below 1: faster), and speed-ups over the eager loop.

The static unroll under XLA is left out unless --static-jit: compiling
T copies of the step with XLA takes minutes at T=100.

Run: python benchmarks/lstm.py [--quick] [--static-jit]
"""

from __future__ import annotations

import common
import keras
from keras import ops

import fbexplorer as fbx

SIZES = {"B": 64, "T": 100, "D": 32, "U": 128}
QUICK = {"B": 4, "T": 6, "D": 3, "U": 5}
FBX = (
    "LSTM as Dense + Feedback",
    "LSTM as Dense(Concatenate) + Feedback",
    "fbx.cell(LSTMCell)",
)
UNHOISTED = {name: f"{name}, hoist=False" for name in FBX[:2]}
KERAS_LSTM, HAND, STATIC, EAGER = (
    "keras.layers.LSTM",
    "RNN(hand-written cell)",
    "static unroll",
    "eager loop",
)


def lstm_update(z, c_prev):
    """The LSTM's gates from the pre-activations `z` (order i, f, g, o)."""
    i, f, g, o = ops.split(z, 4, axis=-1)
    c = ops.sigmoid(f) * c_prev + ops.sigmoid(i) * ops.tanh(g)
    return ops.sigmoid(o) * ops.tanh(c), c


class HandLSTMCell(keras.layers.Layer):
    """A hand-written LSTM cell for `keras.layers.RNN`.

    Args:
        units: Number of units.

    Example:
        >>> import numpy as np
        >>> layer = keras.layers.RNN(HandLSTMCell(8), return_sequences=True)
        >>> tuple(layer(np.zeros((2, 5, 3), "float32")).shape)
        (2, 5, 8)
    """

    def __init__(self, units: int, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.state_size = [units, units]
        self.output_size = units

    def build(self, input_shape):
        u = self.units
        self.kernel = self.add_weight(shape=(input_shape[-1], 4 * u), name="kernel")
        self.recurrent_kernel = self.add_weight(
            shape=(u, 4 * u), initializer="orthogonal", name="recurrent_kernel"
        )
        self.bias = self.add_weight(shape=(4 * u,), initializer="zeros", name="bias")

    def call(self, inputs, states, training=None):
        h, c = states
        z = ops.matmul(inputs, self.kernel) + ops.matmul(h, self.recurrent_kernel) + self.bias
        h, c = lstm_update(z, c)
        return h, [h, c]


def _projections(s):
    """The input and recurrent projections, built."""
    dx = keras.layers.Dense(4 * s["U"], name="wx")
    dh = keras.layers.Dense(4 * s["U"], use_bias=False, name="wh")
    dx.build((None, s["D"]))
    dh.build((None, s["U"]))
    return dx, dh


def contenders(s) -> list[common.Contender]:
    """The contenders for sizes `s` (a dict with B, T, D, U)."""
    T, D, U = s["T"], s["D"], s["U"]

    def fbx_graph(hoist=True):
        x = keras.Input((D,), name="x")
        h_prev = fbx.Feedback((U,), name="h")
        c_prev = fbx.Feedback((U,), name="c")
        dx, dh = _projections(s)
        h, c = lstm_update(dx(x) + dh(h_prev), c_prev)
        return common.keras_forward(fbx.FeedbackModel(x, h, feedback={"h": h, "c": c}, hoist=hoist))

    def fbx_concat(hoist=True):
        x = keras.Input((D,), name="x")
        h_prev = fbx.Feedback((U,), name="h")
        c_prev = fbx.Feedback((U,), name="c")
        dx, dh = _projections(s)  # the same initial weights, stacked into one kernel
        gates = keras.layers.Dense(4 * U, name="gates")
        gates.build((None, D + U))
        gates.set_weights([ops.concatenate([dx.kernel, dh.kernel], 0), dx.bias])
        h, c = lstm_update(gates(keras.layers.Concatenate()([x, h_prev])), c_prev)
        return common.keras_forward(fbx.FeedbackModel(x, h, feedback={"h": h, "c": c}, hoist=hoist))

    def fbx_cell():
        x = keras.Input((D,), name="x")
        return common.keras_forward(
            fbx.FeedbackModel(x, fbx.cell(keras.layers.LSTMCell(U, name="lstm"))(x))
        )

    def keras_lstm():
        x = keras.Input((T, D))
        return common.keras_forward(keras.Model(x, keras.layers.LSTM(U, return_sequences=True)(x)))

    def hand_cell():
        x = keras.Input((T, D))
        layer = keras.layers.RNN(HandLSTMCell(U), return_sequences=True)
        return common.keras_forward(keras.Model(x, layer(x)))

    def static_unroll():
        x = keras.Input((T, D))
        dx, dh = _projections(s)
        hs = []
        h, c = lstm_update(dx(x[:, 0]), 0.0)
        hs.append(h)
        for t in range(1, T):
            h, c = lstm_update(dx(x[:, t]) + dh(h), c)
            hs.append(h)
        return common.keras_forward(keras.Model(x, ops.stack(hs, axis=1)))

    def eager_loop():
        dx, dh = _projections(s)

        def forward(x, training):
            h = c = ops.zeros((x.shape[0], U))
            hs = []
            for t in range(x.shape[1]):
                h, c = lstm_update(dx(x[:, t]) + dh(h), c)
                hs.append(h)
            return ops.stack(hs, axis=1)

        return forward, dx.trainable_variables + dh.trainable_variables

    return [
        common.Contender(FBX[0], fbx_graph),
        common.Contender(UNHOISTED[FBX[0]], lambda: fbx_graph(hoist=False)),
        common.Contender(FBX[1], fbx_concat),
        common.Contender(UNHOISTED[FBX[1]], lambda: fbx_concat(hoist=False)),
        common.Contender(FBX[2], fbx_cell),
        common.Contender(KERAS_LSTM, keras_lstm),
        common.Contender(HAND, hand_cell),
        common.Contender(STATIC, static_unroll),
        common.Contender(EAGER, eager_loop, eager=True),
    ]


def data(s):
    """The input and target batches for sizes `s`."""
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(s["B"], s["T"], s["D"])).astype("float32"))
    y = tf.constant(np.zeros((s["B"], s["T"], s["U"]), "float32"))
    return x, y


def add_ratios(rows) -> None:
    """Adds ratios to keras.layers.LSTM, the hand-written cell and the eager loop."""
    by = {(r["contender"], r["jit"]): r for r in rows}
    eager = by.get((EAGER, None), {})
    for r in rows:
        base_jit = False if r["jit"] is None else r["jit"]
        for ref, tag in ((KERAS_LSTM, "keras"), (HAND, "hand")):
            ref_row = by.get((ref, base_jit), {})
            r[f"train_x_{tag}"] = common.ratio(r["train_s"], ref_row.get("train_s"))
            r[f"infer_x_{tag}"] = common.ratio(r["infer_s"], ref_row.get("infer_s"))
        r["speedup_vs_eager"] = common.ratio(eager.get("train_s"), r["train_s"])
        plain = by.get((UNHOISTED.get(r["contender"]), r["jit"]), {})
        r["train_x_unhoisted"] = common.ratio(r["train_s"], plain.get("train_s"))
        r["infer_x_unhoisted"] = common.ratio(r["infer_s"], plain.get("infer_s"))


def goals(rows, T) -> list[dict]:
    """Checks the engine's speed goals against the measured rows."""
    out = []
    for r in rows:
        if r["contender"] not in FBX:
            continue
        tag = f"{r['contender']}, jit={r['jit']}"
        for key, ref in (("train_x_keras", KERAS_LSTM), ("train_x_hand", HAND)):
            v = r[key]
            out.append(
                {
                    "goal": f"{tag}: train step <= 0.8x {ref}",
                    "value": f"{v:.2f}x",
                    "met": None if v != v else bool(v <= 0.8),
                }
            )
        v = r["speedup_vs_eager"]
        out.append(
            {
                "goal": f"{tag}: train step >= 10x faster than the eager loop",
                "value": f"{v:.1f}x",
                "met": None if v != v else bool(v >= 10),
            }
        )
        out.append(
            {
                "goal": f"{tag}: first fit at T={T} within 2 s",
                "value": f"{r['first_fit_s']:.2f} s",
                "met": bool(r["first_fit_s"] <= 2.0),
            }
        )
    if not any(r["contender"] == STATIC and r["jit"] is True for r in rows):
        out.append(
            {
                "goal": "static unroll, jit=True: first fit",
                "value": "not measured (minutes at T=100; --static-jit includes it)",
                "met": None,
            }
        )
    for r in rows:
        if r["contender"] == STATIC:
            out.append(
                {
                    "goal": f"static unroll, jit={r['jit']}: first fit (expected over 10 s)",
                    "value": f"{r['first_fit_s']:.2f} s",
                    "met": None,
                }
            )
    return out


COLUMNS = [
    ("contender", "contender", ""),
    ("jit", "jit", ""),
    ("train ms", "train_ms", ".2f"),
    ("x LSTM", "train_x_keras", ".2f"),
    ("x hand", "train_x_hand", ".2f"),
    ("vs eager", "speedup_vs_eager", ".1f"),
    ("x unhoisted", "train_x_unhoisted", ".2f"),
    ("infer ms", "infer_ms", ".2f"),
    ("x LSTM", "infer_x_keras", ".2f"),
    ("x unhoisted", "infer_x_unhoisted", ".2f"),
    ("build s", "build_s", ".2f"),
    ("1st step s", "first_step_s", ".2f"),
    ("1st fit s", "first_fit_s", ".2f"),
]


def main(argv=None):
    def extra(p):
        p.add_argument(
            "--static-jit",
            action="store_true",
            help="include the static unroll under XLA (its compilation takes minutes)",
        )

    args = common.parse_args(__doc__.splitlines()[0], argv=argv, extra=extra)
    s = QUICK if args.quick else SIZES
    x, y = data(s)
    skip = set() if args.static_jit else {(STATIC, True)}
    rows = common.measure(contenders(s), x, y, args, skip=skip)
    add_ratios(rows)
    title = (
        f"LSTM, batch {s['B']}, T={s['T']}, {s['D']} inputs, {s['U']} units; TensorFlow CPU; "
        f"median of {args.rounds} rounds x {args.reps} calls. x LSTM / x hand: time relative "
        f"to keras.layers.LSTM / the hand-written cell (lower is faster); vs eager: speed-up "
        f"over the eager loop; x unhoisted: time relative to the same model with hoist=False"
    )
    common.print_table(title, COLUMNS, common.for_table(rows))
    checks = goals(rows, s["T"])
    common.print_goals(checks)
    common.write_json(
        "lstm",
        {"sizes": s, "rounds": args.rounds, "reps": args.reps, "results": rows, "goals": checks},
        args.out,
    )


if __name__ == "__main__":
    main()
