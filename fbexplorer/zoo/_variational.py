"""Layers and a model class shared by the variational zoo models (VRNN, DRAW).

A loss added with `add_loss` inside the step graph would be created inside
the compiled time loop and cannot leave it, so the step graph returns its KL
term as an output instead, and `VariationalModel.compute_loss` adds it to the
reconstruction loss.
"""

from __future__ import annotations

import contextlib

import keras
from keras import ops

from fbexplorer import _keras
from fbexplorer.engine import FeedbackModel

__all__ = ["GaussianKL", "GaussianSample", "PriorSwitch", "VariationalModel"]

_PACKAGE = "fbexplorer.zoo"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class GaussianSample(keras.layers.Layer):
    """A sample of N(mean, exp(log_var)) by reparameterisation.

    Args:
        at_inference: also sample outside training (else return the mean).
        seed: the seed of the layer's random stream.

    Call arguments:
        inputs: `[mean, log_var]`, tensors of one shape; or one tensor, whose
            shape a standard normal sample then takes.
        training: training mode.
    """

    def __init__(self, at_inference: bool = False, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.at_inference = bool(at_inference)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=None):
        if isinstance(inputs, (list, tuple)):
            mean, log_var = inputs
        else:
            mean = ops.zeros_like(inputs)
            log_var = mean
        if not (training or self.at_inference):
            return mean
        eps = keras.random.normal(ops.shape(mean), dtype=mean.dtype, seed=self.seed_generator)
        return mean + ops.exp(0.5 * log_var) * eps

    def compute_output_shape(self, input_shape):
        return input_shape[0] if isinstance(input_shape, list) else input_shape

    def get_config(self):
        return {**super().get_config(), "at_inference": self.at_inference, "seed": self.seed}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class GaussianKL(keras.layers.Layer):
    """KL(N(mq, exp(lq)) || N(mp, exp(lp))), summed over features: shape (batch, 1).

    Call arguments:
        inputs: `[mq, lq, mp, lp]` (posterior mean and log variance, prior
            mean and log variance), or `[mq, lq]` for a standard normal prior.
    """

    def call(self, inputs):
        if len(inputs) == 2:
            mq, lq = inputs
            mp, lp = ops.zeros_like(mq), ops.zeros_like(lq)
        else:
            mq, lq, mp, lp = inputs
        kl = 0.5 * (lp - lq + (ops.exp(lq) + ops.square(mq - mp)) / ops.exp(lp) - 1.0)
        return ops.sum(kl, axis=-1, keepdims=True)

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], 1)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class PriorSwitch(keras.layers.Layer):
    """Selects `inputs[0]` (inference from data) or `inputs[1]` (sampling from the prior).

    The choice is a non-trainable flag, read when the step runs, so that one
    compiled model both trains on data and generates; `VariationalModel.prior_sampling()`
    sets every switch of a model.
    """

    def build(self, input_shape):
        self.use_prior = self.add_weight(
            shape=(), initializer="zeros", trainable=False, name="use_prior"
        )

    def call(self, inputs):
        data, prior = inputs
        return ops.where(self.use_prior > 0.5, ops.cast(prior, data.dtype), data)

    def compute_output_shape(self, input_shape):
        return input_shape[0]


@keras.saving.register_keras_serializable(package=_PACKAGE)
class VariationalModel(FeedbackModel):
    """A `FeedbackModel` whose outputs are `[reconstruction, kl]`, trained on -ELBO.

    `fit(x, x)` minimises, per sample, the reconstruction loss plus the KL
    terms summed over time, divided by the number of steps:
    `gaussian`: `sum((x - x_hat)^2) / (2 sigma^2)` per step, `bernoulli`: binary
    cross-entropy summed over features (x_hat are probabilities).
    With `final_only=True` only the last step's reconstruction counts (DRAW).

    Args:
        reconstruction: `"gaussian"` (fixed `sigma`) or `"bernoulli"`.
        sigma: the decoder's standard deviation for `"gaussian"`.
        final_only: compare only the last step's reconstruction with the target.
        **kwargs: as for `FeedbackModel`.
    """

    def __init__(
        self,
        *args,
        reconstruction: str = "gaussian",
        sigma: float = 0.1,
        final_only: bool = False,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        if reconstruction not in ("gaussian", "bernoulli"):
            raise ValueError(
                f"{self._label()}: reconstruction is 'gaussian' or 'bernoulli'. "
                f"Received: reconstruction={reconstruction!r}"
            )
        self.reconstruction = reconstruction
        self.sigma = float(sigma)
        self.final_only = bool(final_only)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        x_hat, kl = y_pred[0], y_pred[1]
        if self.final_only and self.return_sequences:
            x_hat = x_hat[:, -1]
        y = ops.cast(ops.reshape(y, ops.shape(x_hat)), x_hat.dtype)
        if self.reconstruction == "gaussian":
            err = ops.square(y - x_hat) / (2.0 * self.sigma**2)
        else:
            p = ops.clip(x_hat, 1e-6, 1.0 - 1e-6)
            err = -(y * ops.log(p) + (1.0 - y) * ops.log(1.0 - p))
        steps = ops.cast(ops.shape(kl)[1], x_hat.dtype) if self.return_sequences else 1.0
        recon = ops.sum(ops.reshape(err, (ops.shape(err)[0], -1)), axis=-1)
        total = ops.mean(recon / (1.0 if self.final_only else steps))
        total = total + ops.mean(ops.sum(ops.reshape(kl, (ops.shape(kl)[0], -1)), -1) / steps)
        for extra in self.losses:
            total = total + ops.cast(extra, total.dtype)
        return total

    @contextlib.contextmanager
    def prior_sampling(self):
        """Within this block, every `PriorSwitch` takes the prior's branch."""
        switches = [
            layer for layer in _keras.sublayers(self.step_model) if isinstance(layer, PriorSwitch)
        ]
        for s in switches:
            s.use_prior.assign(1.0)
        try:
            yield self
        finally:
            for s in switches:
                s.use_prior.assign(0.0)

    def generate(self, inputs, steps: int, feed: dict | None = None, *, initial_state=None):
        """Condition on `inputs`, then sample `steps` steps from the prior.

        The warm-up over `inputs` infers the latent from the data (the
        encoder); the continuation draws it from the prior and feeds each
        step's reconstruction back as the next input.

        Args:
            inputs: the warm-up sequences `(batch, time, ...)`, at least one step.
            steps: how many steps to generate.
            feed: `{input name: output name}`; default: every per-step input
                takes the reconstruction.
            initial_state: as for a call.

        Returns:
            `[reconstruction (batch, steps, ...), kl (batch, steps, 1)]`, numpy.
        """
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"{self._label()}: generate needs steps >= 1. Received: {steps!r}")
        if feed is None:
            feed = {name: 0 for name in self.graph.input_names}
        unknown = [k for k in feed if k not in self.graph.input_names]
        if unknown or len(feed) != len(self.graph.input_names):
            raise ValueError(
                f"{self._label()}: feed must map every per-step input "
                f"{self.graph.input_names} to an output, such as "
                f"feed={{'{self.graph.input_names[0]}': 0}} (the reconstruction), or be "
                f"left out. Received: feed={feed!r}"
            )
        return super().generate(inputs, steps, feed, initial_state=initial_state)

    def _closed_loop(self):
        # Only the continuation samples the prior; the warm-up encodes the data.
        return self.prior_sampling()

    def get_config(self):
        return {
            **super().get_config(),
            "reconstruction": self.reconstruction,
            "sigma": self.sigma,
            "final_only": self.final_only,
        }
