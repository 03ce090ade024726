"""Closed-loop generation: run over a warm-up sequence, then feed outputs back
as inputs for more steps (`FeedbackModel.generate`)."""

from __future__ import annotations

from keras import ops

from fbexplorer import _carried_state, _run
from fbexplorer._call_inputs import parse_call
from fbexplorer.graph import pack

__all__ = ["generate"]


def feed_indices(net, feed: dict) -> dict:
    """`{input index: output index}` from `{input name: output name or index}`, checked."""
    g = net.graph
    label = net._label()
    out_names = g.output_names
    feed_idx = {}
    for inp, out in dict(feed).items():
        if inp not in g.input_names:
            raise ValueError(
                f"{label}: feed names input '{inp}', which is not a per-step "
                f"input. Per-step inputs: {g.input_names}."
            )
        if isinstance(out, int):
            j = out
        elif out in out_names:
            j = out_names.index(out)
        else:
            raise ValueError(
                f"{label}: feed maps '{inp}' to output '{out}', which is not "
                f"an output. Outputs: {out_names}."
            )
        i = g.input_names.index(inp)
        want = tuple(net.step_model.inputs[i].shape[1:])
        have = tuple(net.step_model.outputs[j].shape[1:])
        if want != have:
            raise ValueError(
                f"{label}: feed maps output '{out_names[j]}' of shape {have} "
                f"to input '{inp}' of shape {want}; the shapes must match."
            )
        feed_idx[i] = j
    unfed = [n for i, n in enumerate(g.input_names) if i not in feed_idx]
    if unfed:
        raise ValueError(
            f"{label}: in closed loop every per-step input needs a source, "
            f"but {unfed} is not in `feed`. Map it to an output: feed={{'{unfed[0]}': ...}}."
        )
    return feed_idx


def generate(net, inputs, steps, feed, initial_state=None):
    """See `FeedbackModel.generate`."""
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"{net._label()}: generate needs steps >= 1. Received: steps={steps!r}")
    feed_idx = feed_indices(net, feed)
    call = parse_call(net, inputs)
    seqs, consts = call.seqs, call.consts
    start = _carried_state.call_histories(net, call.batch, initial_state, seqs + consts)
    run = _run.runner(net, (seqs + consts)[0])
    _, last, final = run(
        seqs, consts, call.teachers, None, start, None if seqs else call.length, training=False
    )
    with net._closed_loop():
        outs, _, _ = run(
            [],
            consts,
            {},
            None,
            final,
            steps,
            training=False,
            feed=feed_idx,
            feed_init=last,
            sequences=True,
        )
    return pack([ops.convert_to_numpy(o) for o in outs], net.graph.output_structure)
