"""The classic recurrent networks with hidden or output feedback.

Elman (1990) feeds the hidden layer back, Jordan (1986) the output, and NARX
networks (Leontaritis & Billings 1985; Narendra & Parthasarathy 1990;
Lin, Horne, Tino & Giles 1996) the last `dy` outputs and the last `dx` inputs.
"""

from __future__ import annotations

import keras

from fbexplorer.engine import FeedbackModel
from fbexplorer.graph import Feedback, delayed

__all__ = ["elman", "jordan", "narx"]


def elman(
    n_in: int = 1,
    n_hidden: int = 16,
    n_out: int = 1,
    *,
    activation: str = "tanh",
    name: str = "elman",
) -> FeedbackModel:
    """An Elman network: the hidden layer fed back into itself.

    Elman, J. L. (1990). Finding structure in time. Cognitive Science 14(2),
    179-211.

    Wiring, per step `t`::

        h(t) = activation(W [x(t), h(t-1)] + b)     # "context" h(t-1), delay 1
        y(t) = V h(t) + c

    Args:
        n_in: input features per step.
        n_hidden: hidden (and context) units.
        n_out: output features per step.
        activation: the hidden layer's activation.
        name: the model's name.

    Returns:
        A `FeedbackModel` mapping `(batch, time, n_in)` to `(batch, time, n_out)`.
        Feedback: `context` (hidden, delay 1).

    Example:
        >>> net = elman(n_in=3, n_hidden=8, n_out=2)
        >>> net(np.zeros((4, 10, 3))).shape
        TensorShape([4, 10, 2])
    """
    x = keras.Input((n_in,), name="x")
    context = Feedback((n_hidden,), name="context")
    h = keras.layers.Concatenate(name="x_and_context")([x, context])
    h = keras.layers.Dense(n_hidden, activation=activation, name="hidden")(h)
    y = keras.layers.Dense(n_out, name="out")(h)
    return FeedbackModel(x, y, feedback={"context": h}, name=name)


def jordan(
    n_in: int = 1,
    n_hidden: int = 16,
    n_out: int = 1,
    *,
    activation: str = "tanh",
    name: str = "jordan",
) -> FeedbackModel:
    """A Jordan network: the output fed back into the hidden layer.

    Jordan, M. I. (1986). Serial order: a parallel distributed processing
    approach. ICS Report 8604, University of California, San Diego.

    Wiring, per step `t`::

        h(t) = activation(W [x(t), y(t-1)] + b)     # "state" y(t-1), delay 1
        y(t) = V h(t) + c

    Args:
        n_in: input features per step.
        n_hidden: hidden units.
        n_out: output features per step (also the fed-back state).
        activation: the hidden layer's activation.
        name: the model's name.

    Returns:
        A `FeedbackModel` mapping `(batch, time, n_in)` to `(batch, time, n_out)`.
        Feedback: `state` (the output, delay 1).

    Example:
        >>> net = jordan(n_in=3, n_hidden=8, n_out=2)
        >>> net(np.zeros((4, 10, 3))).shape
        TensorShape([4, 10, 2])
    """
    x = keras.Input((n_in,), name="x")
    state = Feedback((n_out,), name="state")
    h = keras.layers.Concatenate(name="x_and_state")([x, state])
    h = keras.layers.Dense(n_hidden, activation=activation, name="hidden")(h)
    y = keras.layers.Dense(n_out, name="out")(h)
    return FeedbackModel(x, y, feedback={"state": y}, name=name)


def narx(
    dx: int = 2,
    dy: int = 2,
    *,
    n_in: int = 1,
    n_out: int = 1,
    n_hidden: int = 16,
    activation: str = "tanh",
    name: str = "narx",
) -> FeedbackModel:
    """A NARX network: nonlinear autoregression with exogenous inputs.

    Leontaritis, I. J. & Billings, S. A. (1985). Input-output parametric
    models for non-linear systems. Int. J. Control 41(2), 303-344;
    Narendra, K. S. & Parthasarathy, K. (1990). Identification and control of
    dynamical systems using neural networks. IEEE Trans. Neural Networks
    1(1), 4-27; Lin, T., Horne, B. G., Tino, P. & Giles, C. L. (1996).
    Learning long-term dependencies in NARX recurrent neural networks.
    IEEE Trans. Neural Networks 7(6), 1329-1338.

    Wiring, per step `t`::

        y(t) = V act(W [x(t), x(t-1), ..., x(t-dx), y(t-1), ..., y(t-dy)] + b) + c

    The input taps are forward-path delays (`fbx.delayed(x, delay=k)`, named
    `x_delay1` .. `x_delay{dx}`); the output taps are feedback edges `y1` ..
    `y{dy}` of delays 1 .. dy, all bound to the output. With `dy=0` the same
    network has no feedback at all (a time-delay network), the baseline
    against which the output feedback is measured. For series-parallel
    (teacher-forced) training, give the target sequence as ground truth for
    each `y{k}`: `net({"x": X, "y1": Y, "y2": Y})`.

    Args:
        dx: input taps beyond `x(t)` (>= 0).
        dy: output taps, the feedback (>= 0).
        n_in: input features per step.
        n_out: output features per step.
        n_hidden: hidden units.
        activation: the hidden layer's activation.
        name: the model's name.

    Returns:
        A `FeedbackModel` mapping `(batch, time, n_in)` to `(batch, time, n_out)`.

    Example:
        >>> net = narx(3, 2)
        >>> net(np.zeros((4, 10, 1))).shape
        TensorShape([4, 10, 1])
    """
    for arg, value in (("dx", dx), ("dy", dy)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(
                f"narx: `{arg}` is a number of taps, an integer >= 0. Received: {arg}={value!r}"
            )
    x = keras.Input((n_in,), name="x")
    taps = [x] + [delayed(x, delay=k, name=f"x_delay{k}") for k in range(1, dx + 1)]
    taps += [Feedback((n_out,), name=f"y{k}", delay=k) for k in range(1, dy + 1)]
    merged = keras.layers.Concatenate(name="taps")(taps) if len(taps) > 1 else x
    h = keras.layers.Dense(n_hidden, activation=activation, name="hidden")(merged)
    y = keras.layers.Dense(n_out, name="out")(h)
    return FeedbackModel(x, y, feedback={f"y{k}": y for k in range(1, dy + 1)}, name=name)
