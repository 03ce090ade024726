"""Feedback networks that no Keras recurrent layer expresses, against the ways that can.

Two networks:
  d1 -> d2 -> d3 -> d1   the README's network: x -> d1 -> d2 -> d3 -> out, with
                         d3 fed back into d1 at the next step (batch 64, T=100,
                         1 input, 8 units)
  conv top-down          an image seen for 8 steps: conv1 -> conv2 (stride 2),
                         conv2's map fed back, upsampled by a transposed
                         convolution, into conv1; a classifier head on conv2 at
                         every step (batch 32, 16x16x3 images, 8 and 16 channels)

Contenders, each built from the same step function and the same kind of layers:
  FeedbackModel            fbexplorer (hoist="auto", the default: the conv
                           net's encoder of its constant image runs once)
  FeedbackModel, hoist=False
                           the same with everything in the loop
  RNN(hand-written cell)   keras.layers.RNN over a Layer that owns the layers
                           and runs one step (the image repeated over time)
  static unroll            a functional model applying the layers T times
  eager loop               a Python loop over t under tf.GradientTape

Training step (MSE, SGD) and inference, with and without jit_compile; ratios
are times relative to the FeedbackModel at the same jit setting (above 1:
slower than fbexplorer).

Run: python benchmarks/feedback_nets.py [--quick]
"""

from __future__ import annotations

import common
import keras
import numpy as np
from keras import ops

import fbexplorer as fbx

FBX, HAND, STATIC, EAGER = (
    "FeedbackModel",
    "RNN(hand-written cell)",
    "static unroll",
    "eager loop",
)


def zeros_state(ref, shape):
    """Zeros of `(batch, *shape)`, the batch taken from `ref` (works on symbolic tensors)."""
    per_sample = ops.sum(ops.zeros_like(ref), axis=tuple(range(1, len(ref.shape))))
    base = ops.reshape(per_sample, (-1,) + (1,) * len(shape))
    return ops.tile(base, (1,) + tuple(shape))


class LoopNet:
    """The d1 -> d2 -> d3 -> d1 network of the README.

    Args:
        sizes: A dict with B (batch), T (steps), D (inputs), W (units).
    """

    title = "d1 -> d2 -> d3 -> d1"

    def __init__(self, sizes):
        self.s = sizes
        self.state_shape = (sizes["W"],)
        self.output_size = sizes["D"]

    def layers(self):
        W, D = self.s["W"], self.s["D"]
        L = {n: keras.layers.Dense(W, activation="tanh", name=n) for n in ("d1", "d2", "d3")}
        L["out"] = keras.layers.Dense(D, name="out")
        L["d1"].build((None, D + W))
        L["d2"].build((None, W))
        L["d3"].build((None, W))
        L["out"].build((None, W))
        return L

    @staticmethod
    def step(L, x, loop):
        """One step: `(output, new state)`."""
        h3 = L["d3"](L["d2"](L["d1"](ops.concatenate([x, loop], axis=-1))))
        return L["out"](h3), h3

    def feedback_model(self, L, hoist="auto"):
        x = keras.Input((self.s["D"],), name="x")
        loop = fbx.Feedback(self.state_shape, name="loop")
        y, h3 = self.step(L, x, loop)
        return fbx.FeedbackModel(x, y, feedback={"loop": h3}, hoist=hoist)

    def sequence_input(self):
        return keras.Input((self.s["T"], self.s["D"]))

    def per_step(self, x, t):
        return x[:, t]

    def rnn_input(self, x):
        return x

    def data(self):
        import tensorflow as tf

        s = self.s
        rng = np.random.default_rng(0)
        x = rng.uniform(-1, 1, size=(s["B"], s["T"], s["D"])).astype("float32")
        y = np.cumsum(x, axis=1) / np.arange(1, s["T"] + 1)[None, :, None]
        return tf.constant(x), tf.constant(y.astype("float32"))


class ConvNet:
    """A convolutional net with top-down feedback, an image seen for several steps.

    Args:
        sizes: A dict with B (batch), T (steps), H (image side), C (channels),
            F1 and F2 (channels of conv1 and conv2), K (classes).
    """

    title = "conv top-down"

    def __init__(self, sizes):
        self.s = sizes
        self.state_shape = (sizes["H"] // 2, sizes["H"] // 2, sizes["F2"])
        self.output_size = sizes["K"]

    def layers(self):
        s = self.s
        L = {
            "down": keras.layers.Conv2DTranspose(
                s["F1"], 3, strides=2, padding="same", name="down"
            ),
            "conv1": keras.layers.Conv2D(
                s["F1"], 3, padding="same", activation="relu", name="conv1"
            ),
            "conv2": keras.layers.Conv2D(
                s["F2"], 3, strides=2, padding="same", activation="relu", name="conv2"
            ),
            "head": keras.layers.Dense(s["K"], name="head"),
        }
        L["down"].build((None,) + self.state_shape)
        L["conv1"].build((None, s["H"], s["H"], s["C"]))
        L["conv2"].build((None, s["H"], s["H"], s["F1"]))
        L["head"].build((None, s["F2"]))
        return L

    @staticmethod
    def step(L, img, top):
        """One step: `(logits, new top-down state)`."""
        c1 = L["conv1"](img) + L["down"](top)
        c2 = L["conv2"](c1)
        return L["head"](ops.mean(c2, axis=(1, 2))), c2

    def feedback_model(self, L, hoist="auto"):
        s = self.s
        img = keras.Input((s["H"], s["H"], s["C"]), name="img")
        top = fbx.Feedback(self.state_shape, name="top")
        y, c2 = self.step(L, img, top)
        return fbx.FeedbackModel(
            [], y, constants=[img], feedback={"top": c2}, steps=s["T"], hoist=hoist
        )

    def sequence_input(self):
        s = self.s
        return keras.Input((s["H"], s["H"], s["C"]))

    def per_step(self, img, t):
        return img

    def rnn_input(self, img):
        return ops.repeat(ops.expand_dims(img, 1), self.s["T"], axis=1)

    def data(self):
        import tensorflow as tf

        s = self.s
        rng = np.random.default_rng(0)
        x = rng.normal(size=(s["B"], s["H"], s["H"], s["C"])).astype("float32")
        y = np.zeros((s["B"], s["T"], s["K"]), "float32")
        return tf.constant(x), tf.constant(y)


class StepFnCell(keras.layers.Layer):
    """A hand-written cell for `keras.layers.RNN` that runs a net's step function.

    Args:
        net: A `LoopNet` or `ConvNet`.
        layers: The net's layers (built), owned by this cell.

    Example:
        >>> net = LoopNet({"B": 2, "T": 3, "D": 1, "W": 4})
        >>> rnn = keras.layers.RNN(StepFnCell(net, net.layers()), return_sequences=True)
        >>> tuple(rnn(np.zeros((2, 3, 1), "float32")).shape)
        (2, 3, 1)
    """

    def __init__(self, net, layers, **kwargs):
        super().__init__(**kwargs)
        self.net = net
        self.layers_by_name = layers
        self.state_size = [net.state_shape[0] if len(net.state_shape) == 1 else net.state_shape]
        self.output_size = net.output_size

    def build(self, input_shape):
        self.built = True  # the layers are built already

    def get_initial_state(self, batch_size=None):
        return [ops.zeros((batch_size,) + tuple(self.net.state_shape), self.compute_dtype)]

    def call(self, inputs, states, training=None):
        y, new = self.net.step(self.layers_by_name, inputs, states[0])
        return y, [new]


def contenders(net) -> list[common.Contender]:
    """The five contenders for one net."""
    T = net.s["T"]

    def variables(L):
        return [v for layer in L.values() for v in layer.trainable_variables]

    def fbx_model(hoist="auto"):
        return common.keras_forward(net.feedback_model(net.layers(), hoist=hoist))

    def hand_cell():
        L = net.layers()
        rnn = keras.layers.RNN(StepFnCell(net, L), return_sequences=True)

        def forward(x, training):
            return rnn(net.rnn_input(x), training=training)

        return forward, variables(L)

    def static_unroll():
        L = net.layers()
        x = net.sequence_input()
        state = zeros_state(net.per_step(x, 0), net.state_shape)
        ys = []
        for t in range(T):
            y, state = net.step(L, net.per_step(x, t), state)
            ys.append(y)
        return common.keras_forward(keras.Model(x, ops.stack(ys, axis=1)))

    def eager_loop():
        L = net.layers()

        def forward(x, training):
            state = ops.zeros((x.shape[0],) + net.state_shape)
            ys = []
            for t in range(T):
                y, state = net.step(L, net.per_step(x, t), state)
                ys.append(y)
            return ops.stack(ys, axis=1)

        return forward, variables(L)

    return [
        common.Contender(FBX, fbx_model),
        common.Contender(f"{FBX}, hoist=False", lambda: fbx_model(hoist=False)),
        common.Contender(HAND, hand_cell),
        common.Contender(STATIC, static_unroll),
        common.Contender(EAGER, eager_loop, eager=True),
    ]


SIZES = {
    "loop": {"B": 64, "T": 100, "D": 1, "W": 8},
    "conv": {"B": 32, "T": 8, "H": 16, "C": 3, "F1": 8, "F2": 16, "K": 10},
}
QUICK = {
    "loop": {"B": 4, "T": 5, "D": 1, "W": 4},
    "conv": {"B": 2, "T": 3, "H": 8, "C": 1, "F1": 4, "F2": 6, "K": 3},
}
COLUMNS = [
    ("contender", "contender", ""),
    ("jit", "jit", ""),
    ("train ms", "train_ms", ".2f"),
    ("x fbx", "train_x_fbx", ".2f"),
    ("infer ms", "infer_ms", ".2f"),
    ("x fbx", "infer_x_fbx", ".2f"),
    ("build s", "build_s", ".2f"),
    ("1st step s", "first_step_s", ".2f"),
    ("1st fit s", "first_fit_s", ".2f"),
]


def add_ratios(rows) -> None:
    """Adds each row's time relative to the FeedbackModel (same jit; eager vs no jit)."""
    by = {(r["contender"], r["jit"]): r for r in rows}
    for r in rows:
        ref = by.get((FBX, False if r["jit"] is None else r["jit"]), {})
        r["train_x_fbx"] = common.ratio(r["train_s"], ref.get("train_s"))
        r["infer_x_fbx"] = common.ratio(r["infer_s"], ref.get("infer_s"))


def main(argv=None):
    args = common.parse_args(__doc__.splitlines()[0], argv=argv)
    sizes = QUICK if args.quick else SIZES
    results = {}
    for key, cls in (("loop", LoopNet), ("conv", ConvNet)):
        net = cls(sizes[key])
        x, y = net.data()
        rows = common.measure(contenders(net), x, y, args)
        add_ratios(rows)
        title = (
            f"{net.title}: {net.s}; TensorFlow CPU; median of {args.rounds} rounds x "
            f"{args.reps} calls. x fbx: time relative to the FeedbackModel (above 1: slower)"
        )
        common.print_table(title, COLUMNS, common.for_table(rows))
        print()
        results[key] = {"title": net.title, "sizes": net.s, "results": rows}
    common.write_json(
        "feedback_nets",
        {"rounds": args.rounds, "reps": args.reps, "nets": results},
        args.out,
    )


if __name__ == "__main__":
    main()
