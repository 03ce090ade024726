"""Gradient flow: how much a loss depends on each node at each step, by
backpropagation through time.

`gradient_flow` gives `dL/d(node at step t)` for every node `fbx.trace` knows,
in one compiled backward pass through the model's own step (replayed with a
zero perturbation added to every chosen node); `gradient_norms` sums it up
per step and `plot_gradient_norms` draws it, to show vanishing or exploding
gradients.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import keras
import numpy as np
import pandas as pd
from keras import ops

from fbexplorer import _carried_state, _keras, recording
from fbexplorer._call_inputs import check_data
from fbexplorer._loop import time_loop
from fbexplorer.escaping import plotly_text
from fbexplorer.graph import pack

__all__ = ["gradient_flow", "gradient_norms", "plot_gradient_norms"]


# --------------------------------------------------------- gradient flow
def _perturbed_step(sm, targets: dict, training=False):
    """The step model's graph, replayed with `perturbation[i]` added to the
    tensor `targets[i]` (by id): the same layers, so the same weights."""
    nodes = _keras.nodes_in_depth_order(sm)

    def call(feeds, perturbations):
        values = {}

        def put(tensor, value):
            i = targets.get(id(tensor))
            values[id(tensor)] = value if i is None else value + perturbations[i]

        for tensor, value in zip(sm.inputs, feeds):
            put(tensor, value)
        _keras.replay(nodes, values, training, store=put)
        return [values[id(t)] for t in sm.outputs]

    return call


def _checked_targets(model, inputs, targets, samples, batch: int):
    """The targets, checked against the inputs as `fit` checks them, cut to `samples`."""
    check_data(model, inputs, targets)  # fit's message for targets of another length
    for target in keras.tree.flatten(targets):
        got = tuple(np.shape(target))
        if not got or got[0] != batch:
            raise ValueError(
                f"fbx.gradient_flow: the targets must hold one entry per input sample, "
                f"{batch}. Received: targets of shape {got}."
            )
    if samples is None:
        return targets
    index = recording.batch_index(samples, batch, what="gradient_flow")
    return keras.tree.map_structure(lambda v: np.asarray(v)[index], targets)


def _loss_fn(model, targets, loss):
    """`L(y_pred)`, a scalar: the compiled loss, `loss=`, or the last step's sum."""
    if loss is not None:
        fn = keras.losses.get(loss) if isinstance(loss, str) else loss
        if targets is None:
            return lambda y: ops.sum(fn(y))
        return lambda y: ops.mean(fn(targets, y))
    if targets is not None:
        compiled = _keras.compiled_loss(model)
        if compiled is None:
            raise ValueError(
                f"fbx.gradient_flow: targets were given, but model '{model.name}' is not "
                f"compiled with a loss. Call model.compile(loss=...) first, or pass loss=."
            )
        return lambda y: compiled(targets, y)
    return None  # the sum of the outputs at the last step


def gradient_flow(
    model,
    inputs,
    targets=None,
    *,
    loss=None,
    nodes: str | Sequence[str] | None = None,
    samples: int | Sequence[int] | None = None,
) -> pd.DataFrame:
    """How much a loss depends on each node at each step: `dL/d(node at t)`.

    The model runs over `inputs` from its initial values (inference mode),
    with a zero perturbation added to every chosen node at every step; one
    compiled backward pass gives the gradient of `L` with respect to all the
    perturbations at once, which is `dL/d(node at step t)`. How those shrink
    or grow as `t` moves back from the end shows vanishing or exploding
    gradients (`fbx.gradient_norms`, `fbx.plot_gradient_norms`).

    Args:
        model: a `FeedbackModel`.
        inputs: the inputs as for a call (no ground truth for teacher forcing).
        targets: what the outputs should be, as for `fit`: `L` is then the
            model's compiled loss (or `loss`).
        loss: a loss (a Keras loss name or `loss(y_true, y_pred)`), in place
            of the compiled one; without targets, a function `loss(y_pred)`
            returning the value to differentiate.
        nodes: node names as for `fbx.trace` (default: every per-step input,
            delayed value, layer and cell state of a float dtype).
        samples: as for `fbx.trace`: the loss is then over these samples.

    With neither targets nor loss, `L` is the sum of every output at the last
    step (over the samples too, so each sample's gradients are its own).
    Targets are checked as `fit` checks them; a run whose estimated memory
    is above the budget (`fbx.set_memory_budget`) is refused before it starts.

    Returns:
        A DataFrame with columns `sample, t, node, unit, gradient`, laid out
        as `fbx.trace`'s (`unit` flattens a node's features in C order).

    Example:
        >>> g = fbx.gradient_flow(net, X[:8], Y[:8])
        >>> fbx.plot_gradient_norms(fbx.gradient_norms(g))
    """
    what = "gradient_flow"
    recording.check_model(model, what=what)
    names = _float_nodes(model, nodes)
    prep = recording.prepare(model, inputs, samples=samples, what=what)
    if prep.teachers:
        raise ValueError(
            f"fbx.gradient_flow: inputs hold ground truth for {list(prep.teachers)}; "
            f"gradient flow follows the model's own feedback. Leave it out."
        )
    size = (prep.batch, prep.length, recording.node_units(model, names))
    remedy = "Pass samples= or nodes= (or a shorter sequence) to differentiate less"
    recording.check_size(names, size, what="fbx.gradient_flow", kind=what, remedy=remedy)
    if targets is not None:
        targets = _checked_targets(model, inputs, targets, samples, prep.full_batch)
    forward = _forward(model, prep, names, _loss_fn(model, targets, loss))
    catalogue = recording.catalogue(model)
    zeros = [
        ops.zeros((prep.length, prep.batch) + tuple(t.shape[1:]), t.dtype)
        for t in (catalogue[n][1] for n in names)
    ]
    grads = _gradients(forward, list(prep.seqs), list(prep.consts), zeros)
    arrays = [np.moveaxis(ops.convert_to_numpy(gr), 0, 1) for gr in grads]
    return recording.tidy(names, [[a] for a in arrays], prep.index, columns=("gradient",))


def _float_nodes(model, nodes) -> list[str]:
    """The nodes to differentiate: those asked for (all of a float dtype), or every
    float node but the constants."""
    names = recording.resolve_nodes(model, nodes, what="gradient_flow")
    catalogue = recording.catalogue(model)
    if nodes is None:
        return [n for n in names if "float" in str(catalogue[n][1].dtype)]
    bad = [n for n in names if "float" not in str(catalogue[n][1].dtype)]
    if bad:
        raise ValueError(
            f"fbx.gradient_flow: node '{bad[0]}' has dtype {catalogue[bad[0]][1].dtype}; "
            f"gradients exist for float nodes only."
        )
    return names


def _forward(model, prep, names, loss_of):
    """`forward(seqs, consts, perturbations) -> L`: the model's loop from its initial
    values, each step replayed with `perturbations[i][t]` added to node `names[i]`."""
    g = model.graph
    sm = model.step_model
    n_in, n_out = len(g.input_names), g.n_outputs
    catalogue = recording.catalogue(model)
    replay = _perturbed_step(sm, {id(catalogue[n][1]): i for i, n in enumerate(names)})
    out_specs = [(t.dtype, (None,) + tuple(t.shape[1:])) for t in sm.outputs[:n_out]]
    # The initial values (a cell's own get_initial_state included), (batch, k, *shape).
    starts = [ops.moveaxis(h, 0, 1) for h in _carried_state.start_histories(model, prep.batch)]

    def forward(seqs, consts, perturbations):
        time_major = [ops.moveaxis(s, 1, 0) for s in seqs]
        if model.go_backwards:
            time_major = [ops.flip(s, axis=0) for s in time_major]

        def step(xs, carry):
            feeds = list(xs[:n_in]) + list(consts) + [h[:, 0] for h in carry]
            outs = replay(feeds, list(xs[n_in:]))
            new = [
                ops.concatenate([h[:, 1:], ops.cast(src, h.dtype)[:, None]], axis=1)
                for h, src in zip(carry, outs[n_out:])
            ]
            return outs[:n_out], new

        ys, _ = time_loop(step, time_major + list(perturbations), starts, prep.length, out_specs)
        ys = [ops.moveaxis(y, 0, 1) for y in ys]
        if loss_of is None:
            return sum(ops.sum(ops.cast(y[:, -1], "float32")) for y in ys)
        pred = ys if model.return_sequences else [y[:, -1] for y in ys]
        return loss_of(pack(pred, g.output_structure))

    return forward


def _gradients(forward, seqs, consts, zeros):
    """`d forward / d perturbations` at `zeros`, compiled (one per node, (T, batch, ...))."""
    if keras.backend.backend() == "jax":
        import jax

        return jax.jit(jax.grad(lambda p, s, c: forward(s, c, p)))(zeros, seqs, consts)
    import tensorflow as tf

    @functools.partial(tf.function, autograph=False)
    def run(seqs, consts, perturbations):
        with tf.GradientTape() as tape:
            tape.watch(perturbations)
            value = forward(seqs, consts, perturbations)
        return tape.gradient(
            value, perturbations, unconnected_gradients=tf.UnconnectedGradients.ZERO
        )

    return run(seqs, consts, zeros)


def gradient_norms(df: pd.DataFrame) -> pd.DataFrame:
    """The size of the gradient at each step: one row per node and `t`.

    Args:
        df: a frame from `fbx.gradient_flow`.

    Returns:
        A DataFrame with columns `node, t, norm`: the Euclidean norm of
        `dL/d(node at t)` over the node's units, averaged over the samples.
        Against `t`, it shrinks geometrically back from the loss where
        gradients vanish, and grows where they explode.
    """
    missing = [c for c in ("sample", "t", "node", "gradient") if c not in df.columns]
    if missing:
        raise ValueError(
            f"fbx.gradient_norms expects a frame from fbx.gradient_flow; column "
            f"'{missing[0]}' is missing. Columns: {list(df.columns)}."
        )
    sq = df.assign(sq=np.square(df["gradient"].astype("float64")))
    per = np.sqrt(sq.groupby(["node", "sample", "t"], observed=True, sort=False)["sq"].sum())
    out = per.groupby(level=["node", "t"], observed=True, sort=False).mean()
    out = out.rename("norm").reset_index().sort_values(["node", "t"], kind="stable")
    return out.reset_index(drop=True)


def plot_gradient_norms(df: pd.DataFrame, *, title: str | None = None):
    """The gradient norm per step, one line per node, on a log scale.

    Args:
        df: a frame from `fbx.gradient_flow`, or its `fbx.gradient_norms`.
        title: the figure title.

    Returns:
        A `plotly.graph_objects.Figure`: x is the step `t`, y the norm (log).
    """
    import plotly.graph_objects as go

    norms = df if "norm" in df.columns else gradient_norms(df)
    fig = go.Figure()
    for node in pd.unique(norms["node"].astype(object)):
        rows = norms[norms["node"].astype(object) == node]
        fig.add_trace(
            go.Scatter(
                x=rows["t"].to_numpy(),
                y=rows["norm"].to_numpy(),
                mode="lines",
                name=plotly_text(node),
            )
        )
    fig.update_layout(
        title=title or "gradient norm per step",
        xaxis_title="t",
        yaxis_title="|dL/d node|",
        yaxis_type="log",
        template="plotly_white",
    )
    return fig
