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

import functools
import math
from collections.abc import Mapping, Sequence

import keras
import numpy as np
import pandas as pd
from keras import ops

from fbexplorer import _carried_state, _run
from fbexplorer._call_inputs import parse_call
from fbexplorer._keras import nodes_by_depth, operation_of
from fbexplorer.graph import _state_shapes
from fbexplorer.memory import PER_VALUE, check_memory, values_detail

__all__ = ["chunk_summary", "compare", "compare_stateful", "trace", "wide"]

KEYS = ["sample", "t", "node", "unit"]
# Sequences longer than this run as several compiled passes (the state
# carried between them) with a progress bar.
CHUNK_STEPS = 2000


class _Probes:
    """Probe models and their compiled runs, cached per model and node list.

    A plain object, so Keras does not track the probes as sublayers.
    """

    def __init__(self):
        self.catalog = None
        self.runs = {}


def _probes(net) -> _Probes:
    cache = net.__dict__.get("_fbx_probes")
    if cache is None:
        cache = _Probes()
        object.__setattr__(net, "_fbx_probes", cache)
    return cache


def _check_model(net, what: str = "trace"):
    from fbexplorer.engine import FeedbackModel

    if not isinstance(net, FeedbackModel):
        raise ValueError(
            f"fbx.{what} expects a FeedbackModel. Received: {type(net).__name__}. Build one "
            f"with fbx.FeedbackModel(inputs, outputs, feedback=...)."
        )


def _catalog(net) -> dict:
    """Every traceable node: `{name: (kind, symbolic tensor)}`, in graph order.

    Kinds: "input", "constant", "delayed", "layer", "state".
    """
    cache = _probes(net)
    if cache.catalog is not None:
        return cache.catalog
    g = net.graph
    sm = net.step_model
    n_in, n_const, n_out = len(g.input_names), len(g.constant_names), g.n_outputs
    found = {}
    for i, name in enumerate(g.input_names):
        found[name] = ("input", sm.inputs[i])
    placeholders = set()
    for i, spec in enumerate(g.specs):
        tensor = sm.inputs[n_in + n_const + i]
        placeholders.add(id(operation_of(tensor)))
        if spec.kind != "cell":
            found[spec.name] = ("delayed", tensor)
    constant_ops = {id(operation_of(sm.inputs[n_in + j])) for j in range(n_const)}
    cells = {spec.cell for spec in g.specs if spec.kind == "cell"}
    calls = {}
    for depth in sorted(nodes_by_depth(sm), reverse=True):
        for node in nodes_by_depth(sm)[depth]:
            op = node.operation
            if node.is_input or id(op) in placeholders or id(op) in constant_ops:
                continue
            outs = list(node.output_tensors)
            if op.name in cells and hasattr(op, "state_size"):  # states come by state name
                n_states = len(_state_shapes(op)[0])
                outs = outs[: len(outs) - n_states] or outs[:1]
            k = calls.get(id(op), 0)
            calls[id(op)] = k + 1
            base = op.name if k == 0 else f"{op.name}#{k}"
            if len(outs) == 1:
                found[base] = ("layer", outs[0])
            else:
                for i, tensor in enumerate(outs):
                    found[f"{base}[{i}]"] = ("layer", tensor)
    for i, spec in enumerate(g.specs):
        if spec.kind == "cell":
            found[spec.name] = ("state", sm.outputs[n_out + i])
    # Constants last: requested by name only, as they repeat at every step.
    for j, name in enumerate(g.constant_names):
        found[name] = ("constant", sm.inputs[n_in + j])
    cache.catalog = found
    return found


def resolve_nodes(net, nodes, what: str = "trace") -> list[str]:
    catalog = _catalog(net)
    if nodes is None:
        return [n for n, (kind, _) in catalog.items() if kind != "constant"]
    if isinstance(nodes, str):
        nodes = [nodes]
    nodes = list(dict.fromkeys(nodes))
    if not nodes:
        raise ValueError(f"fbx.{what}: `nodes` is empty. Name at least one node, or pass None.")
    unknown = [n for n in nodes if n not in catalog]
    if unknown:
        raise ValueError(
            f"fbx.{what}: model '{net.name}' has no node '{unknown[0]}'. Known nodes: "
            f"{list(catalog)}."
        )
    return nodes


def node_units(net, names) -> int:
    """The number of values the nodes `names` hold at one step of one sample."""
    catalog = _catalog(net)
    return sum(int(np.prod(catalog[n][1].shape[1:], dtype=np.int64)) for n in names)


def planned_size(net, inputs, names, samples=None, steps=None, what="trace"):
    """`(samples, steps, units)` a trace of `names` on `inputs` records, found
    from the inputs' shapes without running the model."""
    call = parse_call(net, inputs, None, steps)
    if not isinstance(call.batch, int) or not isinstance(call.length, int):
        raise ValueError(f"fbx.{what} needs concrete arrays (a known batch size and length).")
    count = len(_batch_index(samples, call.batch, what))
    return count, call.length, node_units(net, names)


def check_size(what: str, kind: str, net, names, size, remedy: str, extra: float = 0.0):
    """Refuse, before it starts, a recording of `size` = (samples, steps, units)
    values of `names` whose estimate (`PER_VALUE[kind]` bytes each, plus
    `extra` bytes) is above the memory budget."""
    samples, steps, units = size
    need = PER_VALUE[kind] * samples * steps * units + extra
    detail = values_detail(samples, steps, units, len(names))
    check_memory(what, need, detail, remedy)
    return need


def _compiled(net, names: tuple):
    """(a run function, the probe) for these node names, made once per model."""
    cache = _probes(net)
    if names not in cache.runs:
        catalog = _catalog(net)
        sm = net.step_model
        extras = [catalog[n][1] for n in names]
        probe = keras.Model(sm.inputs, list(sm.outputs) + extras, name=f"{sm.name}_probe")
        run = functools.partial(_run.run, net, training=False, sequences=False, probe=probe)
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            # No autograph, as `_run.compiled`: it changed nothing in the graph
            # but cost most of a model's first trace.
            run = tf.function(run, reduce_retracing=True, autograph=False)
        cache.runs[names] = run
    return cache.runs[names]


# ------------------------------------------------------------- preparation
def _batch_index(samples, batch: int, what: str) -> np.ndarray:
    if samples is None:
        return np.arange(batch)
    if isinstance(samples, (int, np.integer)) and not isinstance(samples, bool):
        if not 1 <= samples <= batch:
            raise ValueError(
                f"fbx.{what}: samples={samples} asks for the first {samples} samples, but the "
                f"batch has {batch}. Give 1 to {batch}, or a list of sample indices."
            )
        return np.arange(int(samples))
    index = np.asarray(samples)
    if index.ndim != 1 or index.size == 0 or not np.issubdtype(index.dtype, np.integer):
        raise ValueError(
            f"fbx.{what}: `samples` is a number of samples or a list of sample indices. "
            f"Received: samples={samples!r}"
        )
    bad = index[(index < 0) | (index >= batch)]
    if bad.size:
        raise ValueError(
            f"fbx.{what}: sample index {int(bad[0])} is out of range for a batch of {batch}."
        )
    return index


class _Prepared:
    """Inputs parsed as `FeedbackModel.call` does, cut down to the chosen samples."""

    def __init__(self, net, inputs, samples, initial_state, mask, steps, carried, what):
        call = parse_call(net, inputs, mask, steps)
        length, batch = call.length, call.batch
        if not isinstance(batch, int) or not isinstance(length, int):
            raise ValueError(f"fbx.{what} needs concrete arrays (a known batch size and length).")
        seqs, consts, teachers, mask = call.seqs, call.consts, call.teachers, call.mask
        self.index = _batch_index(samples, batch, what)
        take = None if samples is None else self.index

        def cut(v):
            return v if take is None else ops.take(v, take, axis=0)

        self.seqs = [cut(s) for s in seqs]
        self.consts = [cut(c) for c in consts]
        self.teachers = {k: cut(ops.convert_to_tensor(v)) for k, v in teachers.items()}
        self.mask = None if mask is None else cut(mask)
        self.length = length
        self.full_batch = batch  # the inputs' batch, before `samples` cut it
        self.batch = len(self.index)
        self.slots = _start_histories(net, batch, self.index, take, initial_state, carried, what)

    def window(self, net, start: int, stop: int):
        """The arguments of the loop for processing steps [start, stop)."""
        if net.go_backwards:  # the loop reverses each window; take them from the end
            start, stop = self.length - stop, self.length - start
        seqs = [s[:, start:stop] for s in self.seqs]
        teachers = {k: v[:, start:stop] for k, v in self.teachers.items()}
        mask = None if self.mask is None else self.mask[:, start:stop]
        return seqs, teachers, mask, (None if seqs else stop - start)


def _start_histories(net, batch, index, take, initial_state, carried, what):
    """The loop's starting histories for the chosen samples.

    `initial_state` entries first; else, with `carried`, a stateful model's
    carried values (read, not changed); else the initial values.
    """
    overrides = dict(initial_state or {})
    _carried_state.check_names(net, overrides, "initial_state", f"fbx.{what}")
    stored = _carried_state.carried_histories(net) if carried else None
    if stored:
        size = stored[0].shape[1]  # histories are (delay, batch, ...)
        if size != batch:
            raise ValueError(
                f"fbx.{what}: model '{net.name}' is stateful and carries state for a batch "
                f"of {size}, but the inputs have {batch} samples. Trace "
                f"a batch of {size}, pass initial_state=, or call "
                f"reset_states(batch_size={batch}) first."
            )
        stored = _carried_state.take_samples(stored, index)
    for spec in net.graph.specs:
        value = overrides.get(spec.name)
        if value is not None and take is not None and np.ndim(value) > len(spec.shape):
            overrides[spec.name] = np.asarray(value)[take]
    return _carried_state.start_histories(net, len(index), overrides, stored, compact=True)


def _bounds(length: int, size: int) -> list[tuple[int, int]]:
    return [(s, min(s + size, length)) for s in range(0, length, size)]


def _run_windows(net, prep, names, bounds, slots, progress):
    """Run the probe over consecutive windows, carrying the slots; returns
    (one numpy array (batch, steps, ...) per node, final slots)."""
    run = _compiled(net, tuple(names))
    pieces = [[] for _ in names]
    show = (len(bounds) > 1) if progress is None else bool(progress)
    if show:
        from tqdm.auto import tqdm

        bounds = tqdm(bounds, desc=f"trace {net.name}", unit="chunk")
    for start, stop in bounds:
        seqs, teachers, mask, length = prep.window(net, start, stop)
        outs, _, slots = run(seqs, prep.consts, teachers, mask, list(slots), length)
        for acc, out in zip(pieces, outs):
            acc.append(ops.convert_to_numpy(out))
    arrays = [p[0] if len(p) == 1 else np.concatenate(p, axis=1) for p in pieces]
    return arrays, slots


def _tidy(names, arrays, sample_ids, columns=("value",)) -> pd.DataFrame:
    """Long format: one row per (node, sample, t, unit), in that order.

    `arrays` holds one list of same-shaped arrays (batch, time, ...) per node;
    each becomes one of `columns`. The frame is filled in place, column by
    column, with as few copies as pandas allows (traces get large).
    """
    shapes = []
    for group in arrays:
        s, t = group[0].shape[:2]
        shapes.append((s, t, int(np.prod(group[0].shape[2:], dtype=np.int64))))
    total = sum(s * t * u for s, t, u in shapes)
    index_type = np.int32 if max(total, 1) < 2**31 else np.int64
    keys = np.empty((3, total), index_type)  # sample, t, unit: one block for pandas
    codes = np.empty(total, np.int8 if len(names) < 128 else np.int32)
    dtypes = [np.result_type(*[g[i].dtype for g in arrays]) for i in range(len(columns))]
    values = [np.empty(total, d) for d in dtypes]
    ids = np.asarray(sample_ids, index_type)
    off = 0
    for code, (group, (s, t, u)) in enumerate(zip(arrays, shapes)):
        n = s * t * u
        keys[0, off : off + n].reshape(s, t * u)[:] = ids[:, None]
        keys[1, off : off + n].reshape(s, t, u)[:] = np.arange(t, dtype=index_type)[None, :, None]
        keys[2, off : off + n].reshape(s * t, u)[:] = np.arange(u, dtype=index_type)
        codes[off : off + n] = code
        for out, arr in zip(values, group):
            out[off : off + n] = np.asarray(arr).reshape(-1)
        off += n
    df = pd.DataFrame(keys.T, columns=["sample", "t", "unit"], copy=False)
    df.insert(2, "node", pd.Categorical.from_codes(codes, categories=list(names)))
    for c, v in zip(columns, values):
        df[c] = v
    return df


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
    sequences in passes of `CHUNK_STEPS` steps, the state carried between
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
            than `CHUNK_STEPS`).
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
    _check_model(model)
    names = resolve_nodes(model, nodes)
    prep = _Prepared(model, inputs, samples, initial_state, mask, steps, True, "trace")
    remedy = "Pass samples= or nodes=" + ("" if as_arrays else " (or as_arrays=True)")
    remedy += " to record less"
    size = (prep.batch, prep.length, node_units(model, names))
    check_size("fbx.trace", "trace_arrays" if as_arrays else "trace", model, names, size, remedy)
    bounds = _bounds(prep.length, CHUNK_STEPS)
    arrays, _ = _run_windows(model, prep, names, bounds, prep.slots, progress)
    if as_arrays:
        return dict(zip(names, arrays))
    return _tidy(names, [[a] for a in arrays], prep.index)


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
            sequences longer than twice `CHUNK_STEPS`).

    Returns:
        A DataFrame with columns `sample, t, chunk, node, unit, stateful,
        stateless, difference` (`stateful - stateless`). `chunk` counts from
        0; `df.attrs["boundaries"]` holds the first step of every chunk after
        the first. `fbx.chunk_summary(df)` sums it up per chunk.

    Example:
        >>> cmp = fbx.compare_stateful(net, seq, chunks=4, nodes="d3")
        >>> fbx.chunk_summary(cmp)
    """
    _check_model(model, "compare_stateful")
    names = resolve_nodes(model, nodes, "compare_stateful")
    prep = _Prepared(model, inputs, samples, initial_state, mask, None, False, "compare_stateful")
    bounds = chunk_bounds(prep.length, chunks)
    size = (prep.batch, prep.length, node_units(model, names))
    remedy = "Pass samples= or nodes= to compare less"
    check_size("fbx.compare_stateful", "compare_stateful", model, names, size, remedy)
    show = (prep.length > 2 * CHUNK_STEPS) if progress is None else bool(progress)
    order = [("stateful", b) for b in bounds] + [("stateless", b) for b in bounds]
    if show:
        from tqdm.auto import tqdm

        order = tqdm(order, desc=f"compare {model.name}", unit="chunk")
    results = {"stateful": [], "stateless": []}
    carried = prep.slots
    for kind, (start, stop) in order:
        slots = carried if kind == "stateful" else prep.slots
        inner = _bounds(stop - start, CHUNK_STEPS)
        inner = [(start + a, start + b) for a, b in inner]
        arrays, final = _run_windows(model, prep, names, inner, slots, progress=False)
        if kind == "stateful":
            carried = final
        results[kind].append(arrays)
    joined = {
        kind: [np.concatenate([r[i] for r in runs], axis=1) for i in range(len(names))]
        for kind, runs in results.items()
    }
    groups = [
        [
            joined["stateful"][i],
            joined["stateless"][i],
            joined["stateful"][i] - joined["stateless"][i],
        ]
        for i in range(len(names))
    ]
    df = _tidy(names, groups, prep.index, columns=("stateful", "stateless", "difference"))
    starts = np.array([s for s, _ in bounds])
    df.insert(2, "chunk", np.searchsorted(starts, df["t"].to_numpy(), side="right") - 1)
    df.attrs["boundaries"] = tuple(int(s) for s in starts[1:])
    return df


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
    out["node_of_max"] = worst["node"].astype(str).where(out["max_abs_difference"] > 0)
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
        series = df.assign(node=df["node"].astype(str)).set_index(KEYS)["value"]
        if not series.index.is_unique:
            raise ValueError(
                f"fbx.compare: run '{name}' has several rows for one (sample, t, node, unit). "
                f"Pass one trace per run."
            )
        columns.append(series.rename(str(name)))
        order += [n for n in df["node"].astype(str).unique() if n not in order]
    joined = pd.concat(columns, axis=1, join="outer").reset_index()
    joined["node"] = pd.Categorical(joined["node"], categories=order)
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
        nodes = list(pd.unique(df["node"].astype(str)))
        if node not in nodes:
            raise ValueError(f"fbx.wide: no node '{node}' in the frame. Nodes: {nodes}.")
        sub = df[df["node"] == node]
        return sub.pivot(index=["sample", "t"], columns="unit", values=values)
    out = df.pivot(index=["sample", "t"], columns=["node", "unit"], values=values)
    return out
