"""DRAW without attention (Gregor et al. 2015): an image drawn on a canvas step by step."""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers

from fbexplorer.graph import Feedback, cell
from fbexplorer.zoo._variational import GaussianKL, GaussianSample, PriorSwitch, VariationalModel

__all__ = ["draw_generator"]


def draw_generator(
    image_shape: Sequence[int] = (8, 8, 1),
    *,
    steps: int = 8,
    enc_units: int = 32,
    dec_units: int = 32,
    n_z: int = 4,
    seed: int | None = None,
    name: str = "draw_generator",
) -> VariationalModel:
    """DRAW without attention: a recurrent VAE that writes onto a canvas.

    Gregor, K., Danihelka, I., Graves, A., Rezende, D. J. & Wierstra, D.
    (2015). DRAW: a recurrent neural network for image generation. ICML 2015,
    arXiv:1502.04623 (the model without attention, its section 3.1 read and
    write operations on the whole image).

    Wiring, per step `t` (the image `x` is a constant; feedback edges in
    quotes, all of delay 1)::

        x_err(t)    = x - sigmoid(c(t-1))                             # "canvas"
        h_enc(t)    = LSTM_enc([x, x_err(t), h_dec(t-1)], h_enc(t-1)) # "dec_h"; fbx.cell states
        z(t)        ~ N(mean(h_enc(t)), exp(log_var(h_enc(t))))
        h_dec(t)    = LSTM_dec(z(t), (h_dec(t-1), c_dec(t-1)))        # "dec_h", "dec_c"
        c(t)        = c(t-1) + dense(h_dec(t))                        # the canvas
        outputs       sigmoid(c(t)) as an image, KL(q(z_t) || N(0, I))

    So the canvas feeds back into the encoder and itself, and the decoder's
    state feeds back into the encoder. `fit(images, images)` minimises the
    binary cross-entropy of the final canvas plus the KL terms (per step).
    To generate, draw `z` from the prior: `with net.prior_sampling():
    net(any_images)` (the images are then not read).

    Args:
        image_shape: `(height, width, channels)`, values in [0, 1].
        steps: drawing steps (`steps=` at call overrides it).
        enc_units: units of the encoder LSTM.
        dec_units: units of the decoder LSTM.
        n_z: latent variables per step.
        seed: seed of the sampling layers.
        name: the model's name.

    Returns:
        A `VariationalModel` taking images `(batch, *image_shape)` and returning
        `[canvas (batch, steps, *image_shape), kl (batch, steps, 1)]`.

    Example:
        >>> net = draw_generator(steps=4)
        >>> canvas, kl = net(np.zeros((2, 8, 8, 1)))
        >>> canvas.shape
        TensorShape([2, 4, 8, 8, 1])
    """
    shape = tuple(image_shape)
    size = 1
    for d in shape:
        size *= d
    img = keras.Input(shape, name="x")
    canvas_prev = Feedback((size,), name="canvas")
    dec_h_prev = Feedback((dec_units,), name="dec_h")
    dec_c_prev = Feedback((dec_units,), name="dec_c")
    z, mean, log_var = _encode(img, canvas_prev, dec_h_prev, enc_units, n_z, seed)
    picture, canvas, h_dec, c_dec = _decode_and_write(
        z, canvas_prev, dec_h_prev, dec_c_prev, dec_units, shape
    )
    kl = GaussianKL(name="kl")([mean, log_var])
    return VariationalModel(
        [],
        [picture, kl],
        constants=[img],
        feedback={"canvas": canvas, "dec_h": h_dec, "dec_c": c_dec},
        steps=steps,
        reconstruction="bernoulli",
        final_only=True,
        name=name,
    )


def _encode(img, canvas_prev, dec_h_prev, enc_units: int, n_z: int, seed):
    """Read the image and its error against the canvas: `(z, mean, log_var)`,
    `z` from the posterior in training, from the prior where sampling it."""
    flat = layers.Flatten(name="x_flat")(img)
    drawn = layers.Activation("sigmoid", name="canvas_image_prev")(canvas_prev)
    err = layers.Subtract(name="x_err")([flat, drawn])
    enc_in = layers.Concatenate(name="encoder_in")([flat, err, dec_h_prev])
    h_enc = cell(layers.LSTMCell(enc_units, name="encoder"))(enc_in)
    mean = layers.Dense(n_z, name="z_mean")(h_enc)
    log_var = layers.Dense(n_z, name="z_log_var")(h_enc)
    z_post = GaussianSample(seed=seed, name="z_posterior")([mean, log_var])
    z_prior = GaussianSample(at_inference=True, seed=seed, name="z_prior")(mean)
    return PriorSwitch(name="z")([z_post, z_prior]), mean, log_var


def _decode_and_write(z, canvas_prev, dec_h_prev, dec_c_prev, dec_units: int, shape):
    """The decoder's step and its write onto the canvas: `(picture, canvas, h_dec, c_dec)`."""
    h_dec, (_, c_dec) = layers.LSTMCell(dec_units, name="decoder")(z, [dec_h_prev, dec_c_prev])
    size = canvas_prev.shape[-1]
    canvas = layers.Add(name="canvas_sum")([canvas_prev, layers.Dense(size, name="write")(h_dec)])
    picture = layers.Reshape(shape, name="picture")(
        layers.Activation("sigmoid", name="canvas_image")(canvas)
    )
    return picture, canvas, h_dec, c_dec
