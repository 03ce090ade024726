"""Convolutional networks with recurrent and top-down feedback.

Each model sees one image for `steps` timesteps (the image is a constant of
the loop) and classifies it at every step, so that the accuracy can be read
per timestep. Defaults fit 8x8 images (scikit-learn's `load_digits`).
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers

from fbexplorer.engine import FeedbackModel
from fbexplorer.graph import Feedback, delayed

__all__ = ["bl", "blt", "bt", "cornet_r", "cornet_rt", "lenet5_feedback"]


def _check_image(fn: str, input_shape, divisor: int) -> tuple:
    shape = tuple(input_shape)
    if len(shape) != 3 or shape[0] % divisor or shape[1] % divisor:
        raise ValueError(
            f"{fn}: `input_shape` is (height, width, channels) with height and width "
            f"divisible by {divisor}. Received: input_shape={input_shape!r}"
        )
    return shape


def _classifier(feedback, img, features, n_classes, steps, return_sequences, name):
    probs = layers.Dense(n_classes, activation="softmax", name="probs")(features)
    return FeedbackModel(
        [],
        probs,
        constants=[img],
        feedback=feedback,
        steps=steps,
        return_sequences=return_sequences,
        name=name,
    )


def lenet5_feedback(
    input_shape: Sequence[int] = (8, 8, 1),
    n_classes: int = 10,
    *,
    steps: int = 4,
    filters: Sequence[int] = (6, 16, 120),
    n_dense: int = 84,
    return_sequences: bool = True,
    name: str = "lenet5_feedback",
) -> FeedbackModel:
    """LeNet-5 with top-down feedback, seeing one image for `steps` steps.

    LeCun, Y., Bottou, L., Bengio, Y. & Haffner, P. (1998). Gradient-based
    learning applied to document recognition. Proc. IEEE 86(11), 2278-2324;
    feedback as in the LeNet-5 example of FeedbackNets.jl (Jarvers, C. &
    Neumann, H., 2019), where transposed convolutions carry conv2's and the
    top conv's maps back to the layer below and merge them by addition.

    Wiring, per step `t` (the image `img` is a constant)::

        c1(t)  = relu(conv1(img)) + relu(convT_a(c2(t-1)))      # feedback "conv2", delay 1
        c2(t)  = relu(conv2(pool(c1(t))))
        m2(t)  = c2(t) + relu(convT_b(c3(t-1)))                 # feedback "top", delay 1
        c3(t)  = relu(conv3(pool(m2(t))))                       # 1x1 map, as LeNet's C5
        p(t)   = softmax(dense(relu(dense(flatten(c3(t))))))

    For the default 8x8 input the convolutions are 3x3 ("same"); conv3's
    kernel spans the whole pooled map (height/4), as C5 does in LeNet-5.

    Args:
        input_shape: `(height, width, channels)`, height and width divisible by 4.
        n_classes: classes of the softmax output.
        steps: timesteps per image (the constructor's default; `steps=` at
            call overrides it).
        filters: feature maps of conv1, conv2 and conv3.
        n_dense: units of the hidden dense layer.
        return_sequences: one prediction per step `(batch, steps, n_classes)`,
            else the last step's `(batch, n_classes)`.
        name: the model's name.

    Returns:
        A `FeedbackModel` taking images `(batch, *input_shape)`.

    Example:
        >>> net = lenet5_feedback(steps=3)
        >>> net(np.zeros((2, 8, 8, 1))).shape
        TensorShape([2, 3, 10])
    """
    h, w, _ = _check_image("lenet5_feedback", input_shape, 4)
    f1, f2, f3 = filters
    img = keras.Input((h, w, input_shape[2]), name="img")
    fb_conv2 = Feedback((h // 2, w // 2, f2), name="conv2")
    fb_top = Feedback((1, 1, f3), name="top")

    c1 = layers.Conv2D(f1, 3, padding="same", activation="relu", name="conv1")(img)
    down1 = layers.Conv2DTranspose(f1, 2, strides=2, activation="relu", name="down_conv2")(fb_conv2)
    c1 = layers.Add(name="merge1")([c1, down1])
    c2 = layers.Conv2D(f2, 3, padding="same", activation="relu", name="conv2_out")(
        layers.MaxPooling2D(name="pool1")(c1)
    )
    down2 = layers.Conv2DTranspose(f2, (h // 2, w // 2), activation="relu", name="down_top")(fb_top)
    m2 = layers.Add(name="merge2")([c2, down2])
    c3 = layers.Conv2D(f3, (h // 4, w // 4), activation="relu", name="conv3")(
        layers.MaxPooling2D(name="pool2")(m2)
    )
    d = layers.Dense(n_dense, activation="relu", name="dense")(layers.Flatten(name="flat")(c3))
    return _classifier({"conv2": c2, "top": c3}, img, d, n_classes, steps, return_sequences, name)


def _spoerer(fn, lateral, top_down, input_shape, n_classes, steps, filters, return_sequences, name):
    h, w, c = _check_image(fn, input_shape, 2 ** (len(filters) - 1))
    img = keras.Input((h, w, c), name="img")
    n = len(filters)
    shapes = []
    for i, f in enumerate(filters):
        shapes.append((h // 2**i, w // 2**i, f))
    fbs = [Feedback(s, name=f"layer{i + 1}") for i, s in enumerate(shapes)]
    outs, below = [], img
    for i, f in enumerate(filters):
        if i > 0:
            below = layers.MaxPooling2D(name=f"pool{i}")(below)
        terms = [layers.Conv2D(f, 3, padding="same", name=f"bottom_up{i + 1}")(below)]
        if lateral:
            terms.append(
                layers.Conv2D(f, 3, padding="same", use_bias=False, name=f"lateral{i + 1}")(fbs[i])
            )
        if top_down and i + 1 < n:
            terms.append(
                layers.Conv2DTranspose(
                    f, 3, strides=2, padding="same", use_bias=False, name=f"top_down{i + 1}"
                )(fbs[i + 1])
            )
        z = layers.Add(name=f"sum{i + 1}")(terms) if len(terms) > 1 else terms[0]
        below = layers.ReLU(name=f"layer{i + 1}_out")(z)
        outs.append(below)
    used = {f"layer{i + 1}": outs[i] for i in range(n) if lateral or (top_down and i > 0)}
    features = layers.GlobalAveragePooling2D(name="readout_pool")(outs[-1])
    return _classifier(used, img, features, n_classes, steps, return_sequences, name)


_SPOERER_DOC = """{title}

    Spoerer, C. J., McClure, P. & Kriegeskorte, N. (2017). Recurrent
    convolutional neural networks: a better model of biological object
    recognition. Frontiers in Psychology 8, 1551.

    Wiring, per step `t` and layer `l` (the image `img` is a constant,
    `h_0 = img`, a 2x2 max-pool between layers)::

{wiring}

    The readout averages the last layer over space and applies a softmax
    at every step. The paper's local response normalisation is left out.

    Args:
        input_shape: `(height, width, channels)`, divisible by 2 per pooling.
        n_classes: classes of the softmax output.
        steps: timesteps per image (`steps=` at call overrides it).
        filters: feature maps per layer (the number of layers is its length).
        return_sequences: one prediction per step, else the last step's.
        name: the model's name.

    Returns:
        A `FeedbackModel` taking images `(batch, *input_shape)`; its feedback
        edges are named `layer1`, `layer2`, ... (delay 1).

    Example:
        >>> net = {fn}(steps=3)
        >>> net(np.zeros((2, 8, 8, 1))).shape
        TensorShape([2, 3, 10])
"""


def blt(
    input_shape: Sequence[int] = (8, 8, 1),
    n_classes: int = 10,
    *,
    steps: int = 4,
    filters: Sequence[int] = (16, 16),
    return_sequences: bool = True,
    name: str = "blt",
) -> FeedbackModel:
    return _spoerer(
        "blt", True, True, input_shape, n_classes, steps, filters, return_sequences, name
    )


def bl(
    input_shape: Sequence[int] = (8, 8, 1),
    n_classes: int = 10,
    *,
    steps: int = 4,
    filters: Sequence[int] = (16, 16),
    return_sequences: bool = True,
    name: str = "bl",
) -> FeedbackModel:
    return _spoerer(
        "bl", True, False, input_shape, n_classes, steps, filters, return_sequences, name
    )


def bt(
    input_shape: Sequence[int] = (8, 8, 1),
    n_classes: int = 10,
    *,
    steps: int = 4,
    filters: Sequence[int] = (16, 16),
    return_sequences: bool = True,
    name: str = "bt",
) -> FeedbackModel:
    return _spoerer(
        "bt", False, True, input_shape, n_classes, steps, filters, return_sequences, name
    )


_B = "        b_l(t) = conv_b(pool(h_{l-1}(t)))                    # bottom-up, same step"
_L = "        l_l(t) = conv_l(h_l(t-1))                            # lateral, delay 1"
_T = "        d_l(t) = convT_t(h_{l+1}(t-1))   (not the top layer)  # top-down, delay 1"
blt.__doc__ = _SPOERER_DOC.format(
    title="BLT: bottom-up, lateral and top-down connections.",
    fn="blt",
    wiring="\n".join([_B, _L, _T, "        h_l(t) = relu(b_l(t) + l_l(t) + d_l(t))"]),
)
bl.__doc__ = _SPOERER_DOC.format(
    title="BL: bottom-up and lateral (within-layer) recurrent connections.",
    fn="bl",
    wiring="\n".join([_B, _L, "        h_l(t) = relu(b_l(t) + l_l(t))"]),
)
bt.__doc__ = _SPOERER_DOC.format(
    title="BT: bottom-up and top-down connections.",
    fn="bt",
    wiring="\n".join([_B, _T, "        h_l(t) = relu(b_l(t) + d_l(t))"]),
)


def _cornet(
    fn, delayed_forward, input_shape, n_classes, steps, filters, strides, return_sequences, name
):
    if len(filters) != len(strides):
        raise ValueError(
            f"{fn}: `filters` and `strides` give one entry per area. Received "
            f"{len(filters)} filters and {len(strides)} strides."
        )
    h, w, c = tuple(input_shape)
    img = keras.Input((h, w, c), name="img")
    areas = (
        ["V1", "V2", "V4", "IT"]
        if len(filters) == 4
        else [f"area{i + 1}" for i in range(len(filters))]
    )
    feedback, below = {}, img
    for area, f, s in zip(areas, filters, strides):
        h, w = -(-h // s), -(-w // s)
        if delayed_forward and below is not img:
            below = delayed(below, delay=1, name=f"{area}_input")
        inp = layers.Conv2D(
            f, 3, strides=s, padding="same", activation="relu", name=f"{area}_conv_input"
        )(below)
        state = Feedback((h, w, f), name=f"{area}_state")
        skip = layers.Add(name=f"{area}_skip")([inp, state])
        out = layers.Conv2D(f, 3, padding="same", activation="relu", name=f"{area}_conv1")(skip)
        feedback[f"{area}_state"] = out
        below = out
    features = layers.GlobalAveragePooling2D(name="decoder_pool")(below)
    return _classifier(feedback, img, features, n_classes, steps, return_sequences, name)


_CORNET_DOC = """{title}

    Kubilius, J., Schrimpf, M., Nayebi, A., Bear, D., Yamins, D. L. K. &
    DiCarlo, J. J. (2018). CORnet: modeling the core object recognition
    pathway of the primate ventral stream. arXiv:1808.02436.

    Wiring, per step `t` and area `a` (four areas V1, V2, V4 and IT, each a
    CORblock-R: a strided input convolution, then a convolution of the input
    plus the area's own state)::

        inp_a(t)   = relu(conv_input_a({source}))
        state_a(t) = relu(conv1_a(inp_a(t) + state_a(t-1)))     # "<area>_state", delay 1

    {forward}
    The decoder averages IT over space and applies a softmax at every step.
    The paper's batch normalisation is left out to keep the default small.

    Args:
        input_shape: `(height, width, channels)` of the image.
        n_classes: classes of the softmax output.
        steps: timesteps per image (`steps=` at call overrides it).
        filters: feature maps per area (four areas are named V1..IT, another
            count area1, area2, ...).
        strides: the input convolution's stride per area.
        return_sequences: one prediction per step, else the last step's.
        name: the model's name.

    Returns:
        A `FeedbackModel` taking images `(batch, *input_shape)`.

    Example:
        >>> net = {fn}(steps=3)
        >>> net(np.zeros((2, 8, 8, 1))).shape
        TensorShape([2, 3, 10])
"""


def cornet_r(
    input_shape: Sequence[int] = (8, 8, 1),
    n_classes: int = 10,
    *,
    steps: int = 4,
    filters: Sequence[int] = (8, 16, 32, 32),
    strides: Sequence[int] = (1, 2, 2, 2),
    return_sequences: bool = True,
    name: str = "cornet_r",
) -> FeedbackModel:
    return _cornet(
        "cornet_r", False, input_shape, n_classes, steps, filters, strides, return_sequences, name
    )


def cornet_rt(
    input_shape: Sequence[int] = (8, 8, 1),
    n_classes: int = 10,
    *,
    steps: int = 4,
    filters: Sequence[int] = (8, 16, 32, 32),
    strides: Sequence[int] = (1, 2, 2, 2),
    return_sequences: bool = True,
    name: str = "cornet_rt",
) -> FeedbackModel:
    return _cornet(
        "cornet_rt", True, input_shape, n_classes, steps, filters, strides, return_sequences, name
    )


cornet_r.__doc__ = _CORNET_DOC.format(
    title="CORnet-R: recurrence within areas, the forward path within one step.",
    fn="cornet_r",
    source="state_{a-1}(t)  (the image for V1)",
    forward=(
        "The forward path is immediate: an image reaches IT in the first step\n"
        '    (the "model-unrolled" reading of CORnet-R).\n'
    ),
)
cornet_rt.__doc__ = _CORNET_DOC.format(
    title="CORnet-RT: recurrence within areas, a one-step delay between areas.",
    fn="cornet_rt",
    source="state_{a-1}(t-1)  (the image for V1)",
    forward=(
        "Each area reads the area below one step late (`fbx.delayed`, edges\n"
        '    "V2_input", "V4_input", "IT_input"): the "biologically unrolled"\n'
        "    network, in which an image takes four steps to reach IT (zeros before).\n"
    ),
)
