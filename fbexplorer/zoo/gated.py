"""The gated-feedback recurrent network of Chung et al. (2015)."""

from __future__ import annotations

import keras
from keras import layers

from fbexplorer.engine import FeedbackModel
from fbexplorer.graph import Feedback

__all__ = ["gated_feedback_rnn"]


def gated_feedback_rnn(
    n_in: int = 1,
    n_out: int = 1,
    *,
    units: int = 16,
    n_layers: int = 3,
    name: str = "gated_feedback_rnn",
) -> FeedbackModel:
    """A gated-feedback RNN: every layer at t-1 feeds every layer at t.

    Chung, J., Gulcehre, C., Cho, K. & Bengio, Y. (2015). Gated feedback
    recurrent neural networks. ICML 2015, arXiv:1502.02367 (the tanh-unit
    GF-RNN of its equations 3-5).

    Wiring, per step `t` and layer `j = 1..L` (`h_0(t) = x(t)`, `h*(t-1)` the
    concatenation of all layers' states at t-1)::

        g_ij(t) = sigmoid(w_ij . h_{j-1}(t) + u_ij . h*(t-1))      # global reset gate, a scalar
        h_j(t)  = tanh(W_j h_{j-1}(t) + sum_i g_ij(t) U_ij h_i(t-1))
        y(t)    = V h_L(t) + c

    Each `h_i(t-1)` is the feedback edge `h{i}` (delay 1), read by every layer:
    the lower layers so receive top-down feedback, gated by the current input.

    Args:
        n_in: input features per step.
        n_out: output features per step.
        units: units per layer.
        n_layers: the number of stacked layers L.
        name: the model's name.

    Returns:
        A `FeedbackModel` mapping `(batch, time, n_in)` to `(batch, time, n_out)`.

    Example:
        >>> net = gated_feedback_rnn(n_in=3, n_out=2, units=8)
        >>> net(np.zeros((4, 10, 3))).shape
        TensorShape([4, 10, 2])
    """
    if n_layers < 1:
        raise ValueError(f"gated_feedback_rnn: n_layers must be >= 1. Received: {n_layers!r}")
    x = keras.Input((n_in,), name="x")
    prev = [Feedback((units,), name=f"h{i + 1}") for i in range(n_layers)]
    h_star = layers.Concatenate(name="h_star")(prev) if n_layers > 1 else prev[0]
    below, states = x, []
    for j in range(1, n_layers + 1):
        terms = [layers.Dense(units, name=f"W{j}")(below)]
        gate_in = layers.Concatenate(name=f"gate_in{j}")([below, h_star])
        for i in range(1, n_layers + 1):
            g = layers.Dense(1, activation="sigmoid", name=f"gate{i}_{j}")(gate_in)
            u = layers.Dense(units, use_bias=False, name=f"U{i}_{j}")(prev[i - 1])
            terms.append(layers.Multiply(name=f"gated{i}_{j}")([g, u]))
        h = layers.Activation("tanh", name=f"h{j}_out")(layers.Add(name=f"sum{j}")(terms))
        states.append(h)
        below = h
    y = layers.Dense(n_out, name="out")(below)
    return FeedbackModel(x, y, feedback={f"h{i + 1}": s for i, s in enumerate(states)}, name=name)
