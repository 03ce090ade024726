"""Lyapunov exponents of a feedback network's trajectories, by the QR method.

One step of a FeedbackModel maps its whole state `s` (every delayed edge's
history and every cell's state: `fbexplorer.state_map`) to `F(s, u_t)`. Along
a trajectory, a frame `Q` of `n` orthonormal directions is carried with the
state: each step maps it by the step's Jacobian, `J_t Q`, and orthonormalises
it again, `J_t Q = Q' R` (QR). The exponents are the means of `ln |R_ii|`
over the steps after a transient (Benettin et al. 1980; Shimada & Nagashima
1979): the `n` largest, in natural log per step. State, frame and sums run in
one compiled loop over time (`keras.ops.fori_loop`), every sample at once.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from fbexplorer import recording
from fbexplorer.memory import LYAPUNOV_MATRICES, check_memory
from fbexplorer.state_map import check_has_state, compile_fn, state_layout, state_map

__all__ = ["lyapunov"]


def lyapunov(model, inputs, *, n=None, discard=None, initial_state=None, steps=None, seed=0):
    """The `n` largest Lyapunov exponents of the model's trajectories on `inputs`.

    The model runs on `inputs` as a call would (in inference mode), and
    along each sample's trajectory the per-step Jacobians `dF/ds` of the step
    as a map of the whole state (delay lines and cell states included; by
    autodiff) are multiplied into a frame of `n` orthonormal directions,
    re-orthonormalised by a QR decomposition at every step. After `discard`
    steps of transient (during which the frame aligns too, but nothing is
    counted), the mean of `ln |R_ii|` over the remaining steps is the i-th
    exponent. Driven systems have exponents too: each step's inputs are the
    sample's own.

    Args:
        model: a `FeedbackModel` with at least one delayed edge or cell.
        inputs: data as for a call: a batch of sequences (and constants).
            A model without per-step inputs takes its constants and `steps=`.
        n: how many exponents, from 1 to the state's size (the numbers of
            state, `sum` over the states of `delay x units`). Default: all.
        discard: steps of transient run before the exponents are counted, from
            0 to the length less one. Default: a tenth of the length (rounded
            down).
        initial_state: `{state name: value}` to start from, as for a call
            (`(batch, *shape)` per sample; `(batch, k, *shape)` for a delay-k
            edge). Default: the model's initial values.
        steps: the length, for a model without per-step inputs.
        seed: the seed of the random orthonormal frame the directions start from.

    Returns:
        A numpy array `(samples, n)`, float64: per sample, its exponents in
        natural log per step, largest first. A sample whose state becomes NaN
        or inf gets NaN; a direction the step collapses (a zero singular value,
        as `x' = 0`) gets `-inf`. The estimate's error falls as `1/sqrt(steps)`
        for chaotic trajectories, faster on regular ones.

    Cost: the `n` directions are pushed through each step in forward mode
    (Jacobian-vector products, never the whole Jacobian) and orthonormalised
    by a QR of a `state size x n` matrix per sample and step: a few
    exponents are cheap, the whole spectrum of a large state is not (pass
    `n=`). Memory: about 8 matrices of `state size x n` floats per sample,
    checked against the memory budget (`fbx.set_memory_budget`) before
    anything runs.

    Example:
        >>> lam = fbx.lyapunov(net, X, n=2)   # (samples, 2), largest first
        >>> chaotic = lam[:, 0] > 0           # nearby states part, on these samples
    """
    recording.check_model(model, what="lyapunov")
    check_has_state(model, "lyapunov")
    prep = recording.prepare(
        model, inputs, initial_state=initial_state, steps=steps, what="lyapunov"
    )
    _check_free_run(model, prep)
    layout = state_layout(model)
    n = _checked_n(model, n, layout)
    discard = _checked_discard(discard, prep.length)
    _check_frame_memory(prep.batch, layout.size, n)
    start = np.concatenate(
        [h.reshape(prep.batch, -1) for h in recording.start_histories(model, prep)], axis=1
    ).astype("float32")
    frame, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(layout.size, n)))
    frame = np.broadcast_to(frame.astype("float32"), (prep.batch, layout.size, n))
    seqs = [ops.flip(s, axis=1) if prep.go_backwards else s for s in prep.seqs]
    finite, sums = _compiled(model, layout)(
        ops.convert_to_tensor(start),
        ops.convert_to_tensor(frame),
        [ops.moveaxis(s, 1, 0) for s in seqs],  # time first
        list(prep.consts),
        ops.convert_to_tensor(prep.length, "int32"),
        ops.convert_to_tensor(discard, "int32"),
    )
    exponents = ops.convert_to_numpy(sums).astype("float64") / (prep.length - discard)
    exponents[~ops.convert_to_numpy(finite)] = np.nan  # diverged: no exponents to give
    return -np.sort(-exponents, axis=1)


# ----------------------------------------------------------- the compiled pass
def _tangent_map(step):
    """`(s, held, q) -> (F(s), J q)` for flat states `(P, D)` and frames `(P, D, n)`."""
    if keras.backend.backend() == "jax":
        import jax

        def tangent(s, held, q):
            new, push = jax.linearize(lambda x: step(x, held), s)  # push(v): J_p v_p per point
            return new, jax.vmap(push, in_axes=2, out_axes=2)(q)

        return tangent
    import tensorflow as tf

    def tangent(s, held, q):
        def push(v):  # forward mode, one direction per point: J_p v_p
            with tf.autodiff.ForwardAccumulator(s, v) as acc:
                new = step(s, held)
            return acc.jvp(new)

        moved = tf.vectorized_map(push, tf.transpose(q, (2, 0, 1)))  # (n, P, D)
        return step(s, held), tf.transpose(moved, (1, 2, 0))

    return tangent


def _pass(step):
    """One pass over time, carrying the state, the frame and the sums of `ln |R_ii|`:
    returns whether each sample's last state is finite, and the sums."""
    tangent = _tangent_map(step)

    def run(s, q, seqs, consts, length, discard):
        def body(t, carry):
            s, q, sums = carry
            held = [ops.take(x, t, axis=0) for x in seqs] + list(consts)
            s, moved = tangent(s, held, q)
            q, r = ops.qr(moved)
            logs = ops.log(ops.abs(ops.diagonal(r, axis1=-2, axis2=-1)))
            sums = sums + ops.where(t >= discard, logs, ops.zeros_like(logs))
            return s, q, sums

        sums = ops.zeros(ops.shape(q)[:1] + ops.shape(q)[2:], q.dtype)
        s, _, sums = ops.fori_loop(0, length, body, (s, q, sums))
        return ops.all(ops.isfinite(s), axis=1), sums

    return run


def _compiled(net, layout):
    """The compiled pass for the model, kept on the model on TensorFlow (whose
    compiled functions read the weights when they run; JAX's would keep the
    weights they were traced with)."""
    run = compile_fn(_pass(state_map(net, layout, batched=True)))
    if keras.backend.backend() != "tensorflow":
        return run
    cache = net.__dict__.get("_fbx_lyapunov")
    if cache is None:
        cache = run
        object.__setattr__(net, "_fbx_lyapunov", cache)
    return cache


# -------------------------------------------------------------------- checks
def _checked_n(net, n, layout) -> int:
    if n is None:
        return layout.size
    if not (isinstance(n, (int, np.integer)) and not isinstance(n, bool) and 1 <= n <= layout.size):
        raise ValueError(
            f"fbx.lyapunov: `n` is how many exponents to compute, an integer from 1 to the "
            f"state's size, {layout.size} for model '{net.name}' (its states {layout.names}), "
            f"or None for all. Received: n={n!r}"
        )
    return int(n)


def _checked_discard(discard, length: int) -> int:
    if discard is None:
        return length // 10
    ok = isinstance(discard, (int, np.integer)) and not isinstance(discard, bool)
    if not (ok and 0 <= discard < length):
        raise ValueError(
            f"fbx.lyapunov: `discard` is the number of transient steps run before the "
            f"exponents are counted, an integer from 0 to {length - 1}: the inputs have "
            f"{length} steps and at least one must be counted. Pass longer inputs or a "
            f"smaller discard. Received: discard={discard!r}"
        )
    return int(discard)


def _check_free_run(net, prep):
    """Refuse teacher forcing and masks: they replace or skip the step whose
    Jacobian the exponents are made of."""
    if prep.teachers or prep.mask is not None:
        what = f"ground truth for '{next(iter(prep.teachers))}'" if prep.teachers else "a mask"
        raise ValueError(
            f"fbx.lyapunov: the exponents are those of model '{net.name}' running freely, "
            f"step by step; teacher forcing and masks replace or skip steps. Pass the "
            f"per-step inputs and constants only. Received: {what}."
        )


def _check_frame_memory(samples: int, size: int, n: int):
    """Refuse a pass whose frames and their images would not fit in the memory budget."""
    need = LYAPUNOV_MATRICES * 4 * size * n * samples
    detail = (
        f"{samples:,} samples, each with {LYAPUNOV_MATRICES} matrices of {size:,} x {n:,} "
        f"floats, the state's size by n"
    )
    remedy = "Pass a smaller n=, fewer samples, or a model with a smaller state"
    check_memory("fbx.lyapunov", need, detail, remedy)
