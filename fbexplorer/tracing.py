"""Per-timestep trajectories of a FeedbackModel, as tidy pandas DataFrames.

`trace` records the value of chosen nodes of the step graph at every step, in
one compiled pass of the model's own loop: a *probe* model, built on the step
model's tensors and so sharing its layers, runs in place of the step model and
returns the extra tensors, which the loop stacks over time. `compare_stateful`
runs a sequence in chunks twice, carrying the state across chunks and resetting
it at each, and lines the two up; `compare` joins traces of several runs.

Node names:
    - per-step inputs and constants by their `keras.Input` name (`"x"`);
    - layers and `keras.ops` calls of the step graph by name (`"d1"`); a
      layer called twice in one step gives `"name"` and `"name#1"`, a layer
      with several outputs `"name[0]"`, `"name[1]"`;
    - delayed edges by their feedback name (`"loop"`): the value the
      placeholder receives at step t, its source's value from step t - delay;
    - cell states by their state name (`"lstm/h"`, `"lstm/c"`, a nested
      model's `"inner/loop"`): the state the cell hands on from step t to
      step t + 1, as `keras.layers.LSTM(return_sequences=True)` reports `h`;
      the cell's layer name (`"lstm"`) gives its output. (A cell called
      directly with explicit `Feedback` states is an ordinary layer with
      several outputs: `"lstm[0]"` is its output, `"lstm[1]"` ... its new
      states.)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from fbexplorer import recording

__all__ = [
    "WINDOW_STEPS",
    "chunk_bounds",
    "chunk_summary",
    "compare",
    "compare_stateful",
    "trace",
    "wide",
]

KEYS = ["sample", "t", "node", "unit"]
# Sequences longer than this run in windows of this many steps, one compiled
# pass each (the state carried between them), with a progress bar.
WINDOW_STEPS = 2000


# ------------------------------------------------------------------ public
def trace(
    model,
    inputs,
    nodes: str | Sequence[str] | None = None,
    *,
    samples: int | Sequence[int] | None = None,
    initial_state: Mapping | None = None,
    mask=None,
    steps: int | None = None,
    progress: bool | None = None,
    as_arrays: bool = False,
) -> pd.DataFrame | dict[str, np.ndarray]:
    """Record chosen nodes of a FeedbackModel at every timestep.

    The model runs its own compiled loop once over the sequence (long
    sequences in windows of `WINDOW_STEPS` steps, the state carried between
    them, with a progress bar), with a probe model sharing the step model's
    layers in place of the step model, so the values are exactly those the
    model computes, in inference mode (`training=False`).

    A stateful model's carried state is the starting point, but tracing
    does not change it: a trace is an observation. A trace whose estimated
    memory is above the budget (`fbx.set_memory_budget`) is refused before
    the model runs, with one line saying what to pass. Masked steps are recorded
    as the step computed them (from the held delayed values and states); the
    loop then discards that step's new states, so the delayed values and
    states recorded at the next step are the held ones. For a model with
    `go_backwards=True`, `t` counts steps in processing order (t=0 is the
    last input step).

    Args:
        model: a `FeedbackModel`.
        inputs: the inputs as for a call: an array, a list, or a dict by name
            (a dict entry named after a feedback is its ground truth).
        nodes: node names (see `fbexplorer.tracing` module docs), a single
            name, or None for every per-step input, delayed value, layer and
            cell state (constants only when named).
        samples: the number of leading samples to trace, or a list of sample
            indices; the `sample` column keeps the original indices.
        initial_state: `{feedback name: value}`, as for a call.
        mask: `(batch, time)` booleans, as for a call.
        steps: the number of steps for a model without per-step inputs.
        progress: show a progress bar (default: when the sequence is longer
            than `WINDOW_STEPS`).
        as_arrays: return `{node: array}` instead of the tidy frame.

    Returns:
        A DataFrame with columns `sample, t, node, unit, value`, one row per
        sample, step, node and unit. `unit` indexes the node's features
        flattened in C order (a `(4, 4, 2)` map has units 0 to 31); `node` is
        categorical, in the order the nodes were asked for; `sample`, `t`
        and `unit` are int32, `value` keeps the node's dtype. `fbx.wide(df)`
        pivots the units into columns.

        With `as_arrays=True`, a dict `{node: numpy array (samples, T,
        *shape)}` in the order the nodes were asked for: spatial maps keep
        their shape (a `(4, 4, 2)` map gives `(samples, T, 4, 4, 2)`). Row
        `i` is the `i`-th traced sample (`samples[i]` for a list).

    Example:
        >>> df = fbx.trace(net, seq, nodes=["d1", "loop"], samples=2)
        >>> df[df.node == "loop"].groupby("t").value.mean()
        >>> fbx.trace(net, seq, nodes="loop", as_arrays=True)["loop"].shape  # (batch, T, 5)
    """
    recording.check_model(model)
    names = recording.resolve_nodes(model, nodes)
    prep = recording.prepare(
        model,
        inputs,
        samples=samples,
        initial_state=initial_state,
        mask=mask,
        steps=steps,
        carried=True,
    )
    remedy = "Pass samples= or nodes=" + ("" if as_arrays else " (or as_arrays=True)")
    remedy += " to record less"
    size = (prep.batch, prep.length, recording.node_units(model, names))
    kind = "trace_arrays" if as_arrays else "trace"
    recording.check_size(names, size, what="fbx.trace", kind=kind, remedy=remedy)
    bounds = recording.window_bounds(prep.length, WINDOW_STEPS)
    arrays, _ = recording.run_windows(model, prep, names, bounds=bounds, progress=progress)
    if as_arrays:
        return dict(zip(names, arrays))
    return recording.tidy(names, [[a] for a in arrays], prep.index)


def chunk_bounds(length: int, chunks) -> list[tuple[int, int]]:
    if isinstance(chunks, bool) or not isinstance(chunks, (int, np.integer)):
        raise ValueError(
            f"fbx.compare_stateful: `chunks` is the number of chunks, an integer from 1 to "
            f"the sequence length {length}. Received: chunks={chunks!r}"
        )
    if not 1 <= chunks <= length:
        raise ValueError(
            f"fbx.compare_stateful: chunks={chunks}, but the sequence has {length} steps; "
            f"use 1 to {length} chunks."
        )
    edges = [math.floor(i * length / chunks) for i in range(chunks + 1)]
    return list(zip(edges[:-1], edges[1:]))


def compare_stateful(
    model,
    inputs,
    chunks: int,
    nodes: str | Sequence[str] | None = None,
    *,
    samples: int | Sequence[int] | None = None,
    initial_state: Mapping | None = None,
    mask=None,
    progress: bool | None = None,
) -> pd.DataFrame:
    """Stateful against stateless runs of the same sequence, cut into chunks.

    The sequence is cut into `chunks` chunks of (nearly) equal length. The
    stateful run carries every delayed value and cell state from one chunk
    into the next (as `stateful=True` does across calls); the stateless run
    starts every chunk afresh. Both start from the same values: the initial
    values (or `initial_state`), never a stateful model's carried state,
    which is left unchanged. The first chunk therefore agrees exactly;
    after a boundary, a network with feedback diverges where its memory
    of the earlier chunks matters.

    Args:
        model: a `FeedbackModel` (stateful or not: the weights are what count).
        inputs: the inputs as for a call.
        chunks: the number of chunks, 1 to the sequence length.
        nodes: node names as for `trace` (default: all but constants).
        samples: as for `trace`.
        initial_state: `{feedback name: value}`: where both runs start, and
            where the stateless run restarts at every chunk.
        mask: `(batch, time)` booleans, as for a call.
        progress: show a progress bar over the chunks (default: for
            sequences longer than twice `WINDOW_STEPS`).

    Returns:
        A DataFrame with columns `sample, t, chunk, node, unit, stateful,
        stateless, difference` (`stateful - stateless`). `chunk` counts from
        0; `df.attrs["boundaries"]` holds the first step of every chunk after
        the first. `fbx.chunk_summary(df)` sums it up per chunk.

    Example:
        >>> cmp = fbx.compare_stateful(net, seq, chunks=4, nodes="d3")
        >>> fbx.chunk_summary(cmp)
    """
    what = "compare_stateful"
    recording.check_model(model, what=what)
    names = recording.resolve_nodes(model, nodes, what=what)
    prep = recording.prepare(
        model, inputs, samples=samples, initial_state=initial_state, mask=mask, what=what
    )
    bounds = chunk_bounds(prep.length, chunks)
    size = (prep.batch, prep.length, recording.node_units(model, names))
    remedy = "Pass samples= or nodes= to compare less"
    recording.check_size(names, size, what="fbx.compare_stateful", kind=what, remedy=remedy)
    show = (prep.length > 2 * WINDOW_STEPS) if progress is None else bool(progress)
    runs = _run_both(model, prep, names, bounds, show)
    groups = [[a, b, a - b] for a, b in zip(runs["stateful"], runs["stateless"])]
    df = recording.tidy(names, groups, prep.index, columns=("stateful", "stateless", "difference"))
    starts = np.array([s for s, _ in bounds])
    df.insert(2, "chunk", np.searchsorted(starts, df["t"].to_numpy(), side="right") - 1)
    df.attrs["boundaries"] = tuple(int(s) for s in starts[1:])
    return df


def _run_both(model, prep, names, bounds, show: bool) -> dict:
    """`{"stateful": arrays, "stateless": arrays}`, one array `(batch, T, ...)` per
    node: every chunk run from the previous chunk's final state, and from the start."""
    order = [("stateful", b) for b in bounds] + [("stateless", b) for b in bounds]
    if show:
        from tqdm.auto import tqdm

        order = tqdm(order, desc=f"compare {model.name}", unit="chunk")
    results = {"stateful": [], "stateless": []}
    carried = prep.slots
    for kind, (start, stop) in order:
        slots = carried if kind == "stateful" else prep.slots
        inner = [
            (start + a, start + b) for a, b in recording.window_bounds(stop - start, WINDOW_STEPS)
        ]
        arrays, final = recording.run_windows(
            model, prep, names, bounds=inner, slots=slots, progress=False
        )
        if kind == "stateful":
            carried = final
        results[kind].append(arrays)
    return {
        kind: [np.concatenate([r[i] for r in runs], axis=1) for i in range(len(names))]
        for kind, runs in results.items()
    }


def chunk_summary(cmp: pd.DataFrame) -> pd.DataFrame:
    """Per chunk: where it lies and how far the stateful run left the stateless one.

    Args:
        cmp: a frame from `compare_stateful` (or a subset of its rows).

    Returns:
        A DataFrame indexed by `chunk` with columns `start`, `stop` (the
        chunk's first and last step), `max_abs_difference`,
        `mean_abs_difference`, and `node_of_max` (the node where the largest
        difference occurs; missing where the runs agree exactly).

    Example:
        >>> fbx.chunk_summary(fbx.compare_stateful(net, seq, chunks=3))
    """
    missing = [c for c in ("chunk", "t", "node", "difference") if c not in cmp.columns]
    if missing:
        raise ValueError(
            f"fbx.chunk_summary expects a frame from fbx.compare_stateful; column "
            f"'{missing[0]}' is missing. Columns: {list(cmp.columns)}."
        )
    work = cmp.assign(abs_difference=cmp["difference"].abs())
    by = work.groupby("chunk", sort=True)
    out = pd.DataFrame(
        {
            "start": by["t"].min(),
            "stop": by["t"].max(),
            "max_abs_difference": by["abs_difference"].max(),
            "mean_abs_difference": by["abs_difference"].mean(),
        }
    )
    worst = work.loc[by["abs_difference"].idxmax(), ["chunk", "node"]].set_index("chunk")
    out["node_of_max"] = worst["node"].astype(object).where(out["max_abs_difference"] > 0)
    return out


def compare(runs: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Join traces of several models or settings side by side.

    Args:
        runs: `{run name: trace frame}`, each from `fbx.trace` (columns
            `sample, t, node, unit, value`).

    Returns:
        A DataFrame with columns `sample, t, node, unit` and one value column
        per run, in the order given. Rows present in only some runs (other
        nodes, samples or lengths) hold NaN for the others.

    Example:
        >>> both = fbx.compare({"before": fbx.trace(net, seq), "after": fbx.trace(net2, seq)})
        >>> (both["after"] - both["before"]).abs().groupby(both["node"]).max()
    """
    if not isinstance(runs, Mapping) or not runs:
        raise ValueError(
            "fbx.compare expects a non-empty dict {run name: trace frame}. "
            f"Received: {type(runs).__name__}"
        )
    columns, order = [], []
    for name, df in runs.items():
        missing = [c for c in KEYS + ["value"] if c not in getattr(df, "columns", [])]
        if missing:
            raise ValueError(
                f"fbx.compare: run '{name}' is not a trace frame: column '{missing[0]}' is "
                f"missing. Pass frames from fbx.trace."
            )
        series = df.assign(node=df["node"].astype(object)).set_index(KEYS)["value"]
        if not series.index.is_unique:
            raise ValueError(
                f"fbx.compare: run '{name}' has several rows for one (sample, t, node, unit). "
                f"Pass one trace per run."
            )
        columns.append(series.rename(str(name)))
        order += [n for n in df["node"].astype(object).unique() if n not in order]
    joined = pd.concat(columns, axis=1, join="outer").reset_index()
    joined["node"] = pd.Categorical(joined["node"], categories=recording.name_index(order))
    return joined.sort_values(KEYS, kind="stable").reset_index(drop=True)


def wide(df: pd.DataFrame, node: str | None = None, values: str = "value") -> pd.DataFrame:
    """Pivot a trace (or comparison) so that units become columns.

    Args:
        df: a frame with columns `sample, t, node, unit` and `values`.
        node: keep only this node; its units become the columns. Without it
            the columns are `(node, unit)` pairs.
        values: the column to spread (`"value"` for a trace; `"stateful"`,
            `"stateless"` or `"difference"` for `compare_stateful`).

    Returns:
        A DataFrame indexed by `(sample, t)`.

    Example:
        >>> fbx.wide(fbx.trace(net, seq), node="d1").loc[0]  # sample 0: t x units
    """
    if values not in df.columns:
        raise ValueError(
            f"fbx.wide: no column '{values}'. Columns: {list(df.columns)}; pass values=."
        )
    if node is not None:
        nodes = list(pd.unique(df["node"].astype(object)))
        if node not in nodes:
            raise ValueError(f"fbx.wide: no node '{node}' in the frame. Nodes: {nodes}.")
        sub = df[df["node"] == node]
        return sub.pivot(index=["sample", "t"], columns="unit", values=values)
    out = df.pivot(index=["sample", "t"], columns=["node", "unit"], values=values)
    return out
