"""The variational recurrent neural network (VRNN) of Chung et al. (2015)."""

from __future__ import annotations

import keras
from keras import layers

from fbexplorer.graph import Feedback
from fbexplorer.zoo._variational import GaussianKL, GaussianSample, PriorSwitch, VariationalModel

__all__ = ["vrnn"]


def vrnn(
    n_x: int = 2,
    *,
    units: int = 32,
    n_z: int = 4,
    n_features: int = 16,
    n_hidden: int = 32,
    sigma: float = 0.1,
    seed: int | None = None,
    name: str = "vrnn",
) -> VariationalModel:
    """A variational RNN: a VAE at every step, conditioned on a GRU's state.

    Chung, J., Kastner, K., Dinh, L., Goel, K., Courville, A. & Bengio, Y.
    (2015). A recurrent latent variable model for sequential data. NeurIPS
    2015, arXiv:1506.02216.

    Wiring, per step `t` (`h(t-1)` is the feedback edge `h`, delay 1)::

        phi_x(t)        = relu(dense(x(t)))                         # feature extractor for x
        prior:   mp, lp = dense(relu(dense(h(t-1))))                # p(z_t | h_{t-1})
        encoder: mq, lq = dense(relu(dense([phi_x(t), h(t-1)])))    # q(z_t | x_t, h_{t-1})
        z(t)            ~ N(mq, exp(lq))                             # reparameterised
        phi_z(t)        = relu(dense(z(t)))                         # feature extractor for z
        x_hat(t)        = dense(relu(dense([phi_z(t), h(t-1)])))    # decoder mean
        h(t)            = GRU([phi_x(t), phi_z(t)], h(t-1))
        kl(t)           = KL(N(mq, exp(lq)) || N(mp, exp(lp)))

    The outputs are `[x_hat, kl]`; `fit(x, x)` minimises the negative ELBO
    per step: `sum((x - x_hat)^2) / (2 sigma^2) + kl`, averaged over time and
    samples (a Gaussian decoder of fixed `sigma`, constants dropped). At
    inference the posterior gives its mean, so `predict` is deterministic.

    `net.generate(x_prefix, steps)` encodes the prefix, then samples new
    steps from the prior: `z(t) ~ p(z_t | h_{t-1})`, `x(t) = x_hat(t)`, and
    `h(t)` reads `phi_x(x_hat(t))` in place of the data (two `PriorSwitch`
    layers make that choice; `net.prior_sampling()` sets them by hand).

    Args:
        n_x: features of x per step.
        units: the GRU's units (the size of `h`).
        n_z: latent variables per step.
        n_features: size of phi_x and phi_z.
        n_hidden: hidden units of the prior, encoder and decoder.
        sigma: the decoder's fixed standard deviation, in the loss.
        seed: seed of the sampling layers.
        name: the model's name.

    Returns:
        A `VariationalModel` (a `FeedbackModel`) mapping `(batch, time, n_x)`
        to `[x_hat (batch, time, n_x), kl (batch, time, 1)]`.

    Example:
        >>> net = vrnn(n_x=2)
        >>> net.compile("adam")
        >>> x_hat, kl = net(np.zeros((4, 10, 2)))
        >>> new, _ = net.generate(np.zeros((4, 5, 2)), steps=20)
        >>> new.shape
        (4, 20, 2)
    """
    x = keras.Input((n_x,), name="x")
    h_prev = Feedback((units,), name="h")
    phi_x_layer = layers.Dense(n_features, activation="relu", name="phi_x")
    phi_x = phi_x_layer(x)
    z, gaussians = _latent(phi_x, h_prev, n_z, n_hidden, seed)
    phi_z, x_hat = _decode(z, h_prev, n_features, n_hidden, n_x)
    phi_x_used = PriorSwitch(name="phi_x_used")([phi_x, phi_x_layer(x_hat)])
    rnn_in = layers.Concatenate(name="gru_in")([phi_x_used, phi_z])
    h, _ = layers.GRUCell(units, name="gru")(rnn_in, [h_prev])
    kl = GaussianKL(name="kl")(gaussians)
    return VariationalModel(
        x, [x_hat, kl], feedback={"h": h}, reconstruction="gaussian", sigma=sigma, name=name
    )


def _latent(phi_x, h_prev, n_z: int, n_hidden: int, seed):
    """The prior p(z_t | h_{t-1}), the posterior q(z_t | x_t, h_{t-1}) and z(t):
    `(z, [mq, lq, mp, lp])`, z from the posterior in training, the prior where sampling."""
    p = layers.Dense(n_hidden, activation="relu", name="prior")(h_prev)
    mp = layers.Dense(n_z, name="prior_mean")(p)
    lp = layers.Dense(n_z, name="prior_log_var")(p)
    q = layers.Concatenate(name="encoder_in")([phi_x, h_prev])
    q = layers.Dense(n_hidden, activation="relu", name="encoder")(q)
    mq = layers.Dense(n_z, name="posterior_mean")(q)
    lq = layers.Dense(n_z, name="posterior_log_var")(q)
    z_post = GaussianSample(seed=seed, name="z_posterior")([mq, lq])
    z_prior = GaussianSample(at_inference=True, seed=seed, name="z_prior")([mp, lp])
    return PriorSwitch(name="z")([z_post, z_prior]), [mq, lq, mp, lp]


def _decode(z, h_prev, n_features: int, n_hidden: int, n_x: int):
    """z's features and the decoder's mean: `(phi_z, x_hat)`."""
    phi_z = layers.Dense(n_features, activation="relu", name="phi_z")(z)
    d = layers.Concatenate(name="decoder_in")([phi_z, h_prev])
    d = layers.Dense(n_hidden, activation="relu", name="decoder")(d)
    return phi_z, layers.Dense(n_x, name="x_hat")(d)
