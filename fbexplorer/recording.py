"""Recording a FeedbackModel's nodes over windows of steps: the floor under the analysis tools.

Every analysis tool that reads a running model (`fbx.trace`, `fbx.compare_stateful`,
`fbx.fixed_points` for its starts, `fbx.gradient_flow`, `fbx.portrait`, `fbx.explore`,
`fbx.TraceCallback`) goes through these public names:

- `catalogue(net)`: every node that can be recorded, `{name: (kind, symbolic tensor)}`,
  and `resolve_nodes` / `node_units` on it (node names as `fbexplorer.tracing` documents);
- `prepare(net, inputs, ...)`: a call's inputs parsed and checked as `FeedbackModel.call`
  does, cut to the chosen samples, with the histories the loop starts from (a `Prepared`);
- `run_windows(net, prepared, names, bounds=...)`: the model's own compiled loop over
  consecutive windows of steps, with a probe model (sharing the step model's layers)
  returning the chosen nodes, the state carried from one window to the next;
- `tidy(names, arrays, sample_ids)`: the long frame `sample, t, node, unit, <columns>`,
  and `trace_nodes` / `node_arrays` to read such a frame (or its dict of arrays) back;
- `planned_size` and `check_size`: a recording's size found from the inputs' shapes, and
  its memory checked against the budget, before anything runs.

The probe models and their compiled runs are cached on the model (`net._fbx_probes`).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import keras
import numpy as np
import pandas as pd
from keras import ops

from fbexplorer import _carried_state, _keras, _run
from fbexplorer._call_inputs import parse_call
from fbexplorer._history import full
from fbexplorer.graph import cell_state_shapes
from fbexplorer.memory import PER_VALUE, check_memory, values_detail

__all__ = [
    "Prepared",
    "batch_index",
    "catalogue",
    "check_columns",
    "check_model",
    "check_size",
    "name_index",
    "node_arrays",
    "node_units",
    "planned_size",
    "prepare",
    "resolve_nodes",
    "run_windows",
    "start_histories",
    "tidy",
    "trace_nodes",
    "window_bounds",
]


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


def check_model(net, *, what: str = "trace"):
    """Refuse anything but a FeedbackModel, in the words of `fbx.<what>`."""
    from fbexplorer.engine import FeedbackModel

    if not isinstance(net, FeedbackModel):
        raise ValueError(
            f"fbx.{what} expects a FeedbackModel. Received: {type(net).__name__}. Build one "
            f"with fbx.FeedbackModel(inputs, outputs, feedback=...)."
        )


# --------------------------------------------------------------- the nodes
def catalogue(net) -> dict:
    """Every node that can be recorded: `{name: (kind, symbolic tensor)}`, in graph order.

    Kinds: "input", "constant", "delayed", "layer", "state". The tensors are the step
    model's; constants come last (recorded by name only, as they repeat at every step).
    Made once per model.
    """
    cache = _probes(net)
    if cache.catalog is None:
        cache.catalog = _build_catalogue(net)
    return cache.catalog


def _build_catalogue(net) -> dict:
    g = net.graph
    sm = net.step_model
    n_in, n_const, n_out = len(g.input_names), len(g.constant_names), g.n_outputs
    found = {}
    for i, name in enumerate(g.input_names):
        found[name] = ("input", sm.inputs[i])
    placeholders = set()
    for i, spec in enumerate(g.specs):
        tensor = sm.inputs[n_in + n_const + i]
        placeholders.add(id(_keras.operation_of(tensor)))
        if spec.kind != "cell":
            found[spec.name] = ("delayed", tensor)
    constant_ops = {id(_keras.operation_of(sm.inputs[n_in + j])) for j in range(n_const)}
    skip = placeholders | constant_ops
    cells = {spec.cell for spec in g.specs if spec.kind == "cell"}
    found.update(_layer_nodes(sm, skip, cells))
    for i, spec in enumerate(g.specs):
        if spec.kind == "cell":
            found[spec.name] = ("state", sm.outputs[n_out + i])
    for j, name in enumerate(g.constant_names):
        found[name] = ("constant", sm.inputs[n_in + j])
    return found


def _layer_nodes(sm, skip: set, cells: set) -> dict:
    """The step model's layer and op calls, deepest first: `"name"`, `"name#1"` for a
    second call, `"name[i]"` for each output of a call with several."""
    found, calls = {}, {}
    for depth in sorted(_keras.nodes_by_depth(sm), reverse=True):
        for node in _keras.nodes_by_depth(sm)[depth]:
            op = node.operation
            if node.is_input or id(op) in skip:
                continue
            outs = list(node.output_tensors)
            if op.name in cells and hasattr(op, "state_size"):  # states come by state name
                n_states = len(cell_state_shapes(op)[0])
                outs = outs[: len(outs) - n_states] or outs[:1]
            k = calls.get(id(op), 0)
            calls[id(op)] = k + 1
            base = op.name if k == 0 else f"{op.name}#{k}"
            if len(outs) == 1:
                found[base] = ("layer", outs[0])
            else:
                for i, tensor in enumerate(outs):
                    found[f"{base}[{i}]"] = ("layer", tensor)
    return found


def resolve_nodes(net, nodes, *, what: str = "trace") -> list[str]:
    """The node names asked for, checked against the catalogue, duplicates dropped.

    `nodes` is a name, a list of names, or None for every node but the constants.
    """
    known = catalogue(net)
    if nodes is None:
        return [n for n, (kind, _) in known.items() if kind != "constant"]
    if isinstance(nodes, str):
        nodes = [nodes]
    nodes = list(dict.fromkeys(nodes))
    if not nodes:
        raise ValueError(f"fbx.{what}: `nodes` is empty. Name at least one node, or pass None.")
    unknown = [n for n in nodes if n not in known]
    if unknown:
        raise ValueError(
            f"fbx.{what}: model '{net.name}' has no node '{unknown[0]}'. Known nodes: "
            f"{list(known)}."
        )
    return nodes


def node_units(net, names) -> int:
    """The number of values the nodes `names` hold at one step of one sample."""
    known = catalogue(net)
    return sum(int(np.prod(known[n][1].shape[1:], dtype=np.int64)) for n in names)


# ------------------------------------------------------------------- sizes
def batch_index(samples, batch: int, *, what: str) -> np.ndarray:
    """The sample indices `samples` picks from a batch of `batch`: None for all, a count
    of leading samples, or a list of indices (checked, in the words of `fbx.<what>`)."""
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


def planned_size(net, inputs, names, *, samples=None, steps=None, what="trace"):
    """`(samples, steps, units)` a recording of `names` on `inputs` holds, found
    from the inputs' shapes without running the model."""
    call = parse_call(net, inputs, None, steps)
    if not isinstance(call.batch, int) or not isinstance(call.length, int):
        raise ValueError(f"fbx.{what} needs concrete arrays (a known batch size and length).")
    count = len(batch_index(samples, call.batch, what=what))
    return count, call.length, node_units(net, names)


def check_size(names, size, *, what: str, kind: str, remedy: str, extra: float = 0.0):
    """Refuse, before it starts, a recording of `size` = (samples, steps, units)
    values of `names` whose estimate (`PER_VALUE[kind]` bytes each, plus
    `extra` bytes) is above the memory budget; `what` names the caller
    (`"fbx.trace"`), `remedy` says what to pass. Returns the estimate."""
    samples, steps, units = size
    need = PER_VALUE[kind] * samples * steps * units + extra
    detail = values_detail(samples, steps, units, len(names))
    check_memory(what, need, detail, remedy)
    return need


# ------------------------------------------------------------- preparation
@dataclass(frozen=True, eq=False)
class Prepared:
    """A call's inputs, parsed and checked as `FeedbackModel.call` does, cut down
    to the chosen samples, and the histories the loop starts from. Made by `prepare`.

    Attributes:
        index: the chosen samples' indices in the inputs' batch.
        seqs, consts: the per-step inputs `(batch, T, ...)` and constants, cut.
        teachers: `{feedback name: ground truth (batch, T, ...)}`, cut.
        mask: `(batch, T)` booleans, cut, or None.
        length: the number of steps.
        full_batch: the inputs' batch, before `samples` cut it.
        batch: the number of chosen samples.
        slots: the starting histories, one per delayed edge in `graph.specs` order.
        go_backwards: whether the loop reverses each window (the model's setting).
    """

    index: np.ndarray
    seqs: list
    consts: list
    teachers: dict
    mask: object
    length: int
    full_batch: int
    batch: int
    slots: list
    go_backwards: bool = False

    def window(self, start: int, stop: int):
        """The loop's `(seqs, teachers, mask, length)` for processing steps [start, stop)."""
        if self.go_backwards:  # the loop reverses each window; take them from the end
            start, stop = self.length - stop, self.length - start
        seqs = [s[:, start:stop] for s in self.seqs]
        teachers = {k: v[:, start:stop] for k, v in self.teachers.items()}
        mask = None if self.mask is None else self.mask[:, start:stop]
        return seqs, teachers, mask, (None if seqs else stop - start)


def prepare(
    net,
    inputs,
    *,
    samples=None,
    initial_state: Mapping | None = None,
    mask=None,
    steps: int | None = None,
    carried: bool = False,
    what: str = "trace",
) -> Prepared:
    """Parse `inputs` as a call does and cut them to `samples`.

    The loop starts from `initial_state` entries; else, with `carried=True`, from a
    stateful model's carried values (read, not changed); else from the initial values.
    `steps` is the length for a model without per-step inputs; `what` names the caller
    in messages (`fbx.<what>`).
    """
    call = parse_call(net, inputs, mask, steps)
    length, batch = call.length, call.batch
    if not isinstance(batch, int) or not isinstance(length, int):
        raise ValueError(f"fbx.{what} needs concrete arrays (a known batch size and length).")
    index = batch_index(samples, batch, what=what)
    take = None if samples is None else index

    def cut(v):
        return v if take is None else ops.take(v, take, axis=0)

    return Prepared(
        index=index,
        seqs=[cut(s) for s in call.seqs],
        consts=[cut(c) for c in call.consts],
        teachers={k: cut(ops.convert_to_tensor(v)) for k, v in call.teachers.items()},
        mask=None if call.mask is None else cut(call.mask),
        length=length,
        full_batch=batch,
        batch=len(index),
        slots=_start_histories(net, batch, index, take, initial_state, carried, what),
        go_backwards=bool(net.go_backwards),
    )


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


def start_histories(net, prepared: Prepared) -> list:
    """The histories the loop starts from, whole, as numpy arrays: one
    `(batch, delay, *shape)` per delayed edge and cell state in `graph.specs`
    order, oldest first (the value fed at the first step first), as
    `initial_state` takes a delay-k edge's history."""
    out = []
    for spec, h in zip(net.graph.specs, prepared.slots):
        whole = full(h, spec.delay, prepared.batch, tuple(spec.shape))  # (delay, batch, ...)
        out.append(np.moveaxis(ops.convert_to_numpy(whole), 0, 1))
    return out


# ----------------------------------------------------------------- windows
def window_bounds(length: int, size: int) -> list[tuple[int, int]]:
    """`[(start, stop), ...]`: `length` steps in consecutive windows of at most `size`."""
    return [(s, min(s + size, length)) for s in range(0, length, size)]


def _compiled(net, names: tuple):
    """The compiled run of the probe for these node names, made once per model."""
    cache = _probes(net)
    if names not in cache.runs:
        known = catalogue(net)
        sm = net.step_model
        extras = [known[n][1] for n in names]
        probe = keras.Model(sm.inputs, list(sm.outputs) + extras, name=f"{sm.name}_probe")
        run = functools.partial(_run.run, net, training=False, sequences=False, probe=probe)
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            # No autograph, as `_run.compiled`: it changed nothing in the graph
            # but cost most of a model's first trace.
            run = tf.function(run, reduce_retracing=True, autograph=False)
        cache.runs[names] = run
    return cache.runs[names]


def run_windows(
    net,
    prepared: Prepared,
    names: Sequence[str],
    *,
    bounds: Sequence[tuple[int, int]],
    slots: list | None = None,
    progress: bool | None = None,
):
    """Record `names` over consecutive windows `bounds`, carrying the state between them.

    Each window is one compiled pass of the model's loop (inference mode), starting
    from `slots` (default: `prepared.slots`) for the first. `progress`: a progress bar
    over the windows (default: when there are several).

    Returns:
        `(arrays, slots)`: one numpy array `(batch, steps, *shape)` per node, the
        windows joined along time, and the histories after the last window.
    """
    run = _compiled(net, tuple(names))
    slots = prepared.slots if slots is None else slots
    pieces = [[] for _ in names]
    show = (len(bounds) > 1) if progress is None else bool(progress)
    if show:
        from tqdm.auto import tqdm

        bounds = tqdm(bounds, desc=f"trace {net.name}", unit="window")
    for start, stop in bounds:
        seqs, teachers, mask, length = prepared.window(start, stop)
        outs, _, slots = run(seqs, prepared.consts, teachers, mask, list(slots), length)
        for acc, out in zip(pieces, outs):
            acc.append(ops.convert_to_numpy(out))
    arrays = [p[0] if len(p) == 1 else np.concatenate(p, axis=1) for p in pieces]
    return arrays, slots


# -------------------------------------------------------------- the frame
def tidy(names, arrays, sample_ids, *, columns=("value",)) -> pd.DataFrame:
    """Long format: one row per (node, sample, t, unit), in that order.

    `arrays` holds one list of same-shaped arrays (batch, time, ...) per node;
    each becomes one of `columns`. The frame is filled in place, column by
    column, with as few copies as pandas allows (traces get large). `sample`,
    `t` and `unit` are int32 (int64 past 2**31 rows), `node` is categorical in
    the order of `names`.
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
    df.insert(2, "node", pd.Categorical.from_codes(codes, categories=name_index(names)))
    for c, v in zip(columns, values):
        df[c] = v
    return df


def name_index(names) -> pd.Index:
    """Names as a pandas index of Python strings. Where pyarrow is installed,
    pandas 3 stores strings as UTF-8 by default, which refuses names that Python
    (and Keras) accept, such as one with a lone surrogate: object storage keeps
    every name."""
    return pd.Index(list(names), dtype=object)


def check_columns(df, columns, *, what: str, source: str):
    """Refuse a frame without `columns`: it did not come from `fbx.<source>`."""
    missing = [c for c in columns if c not in getattr(df, "columns", [])]
    if missing:
        raise ValueError(
            f"fbx.{what} expects a frame from fbx.{source}; column '{missing[0]}' is missing."
        )


def trace_nodes(trace, *, what: str) -> list[str]:
    """The node names of a trace frame or of a `trace(..., as_arrays=True)` dict."""
    if isinstance(trace, Mapping):
        return [str(n) for n in trace]
    if isinstance(trace, pd.DataFrame):
        check_columns(trace, ["sample", "t", "node", "unit", "value"], what=what, source="trace")
        return [str(n) for n in pd.unique(trace["node"].astype(object))]
    raise ValueError(
        f"fbx.{what} expects a trace: a frame from fbx.trace or its as_arrays=True dict "
        f"{{node: array (samples, T, ...)}}. Received: {type(trace).__name__}"
    )


def node_arrays(trace, nodes: Sequence[str], *, what: str) -> tuple[dict, np.ndarray]:
    """`({node: array (samples, T, *shape)}, sample ids)` from a trace frame or dict.

    A dict's arrays are taken as they are (sample ids 0, 1, ...; checked to
    share the sample and time axes); a frame's rows become arrays
    `(samples, T, units)`, samples in increasing id order.
    """
    known = trace_nodes(trace, what=what)
    missing = [n for n in nodes if n not in known]
    if missing:
        raise ValueError(f"fbx.{what}: no node '{missing[0]}' in the trace. Nodes: {known}.")
    if isinstance(trace, Mapping):
        out, ids = _dict_arrays(trace, nodes, what)
    else:
        out, ids = _frame_arrays(trace, nodes, what)
    lead = {a.shape[:2] for a in out.values()}
    if len(lead) > 1:
        raise ValueError(
            f"fbx.{what}: the nodes {list(nodes)} have other (samples, T): {sorted(lead)}. "
            f"Trace them together."
        )
    return out, ids


def _dict_arrays(trace, nodes, what):
    out = {}
    for n in nodes:
        a = np.asarray(trace[n])
        if a.ndim < 2:
            raise ValueError(
                f"fbx.{what}: the trace's array for node '{n}' must be (samples, T, ...), "
                f"as fbx.trace(..., as_arrays=True) returns. Received shape {a.shape}."
            )
        out[n] = a
    ids = np.arange(next(iter(out.values())).shape[0]) if out else np.arange(0)
    return out, ids


def _frame_arrays(trace, nodes, what):
    out, ids = {}, None
    for n in nodes:
        sub = trace[trace["node"].astype(object) == n].sort_values(["sample", "t", "unit"])
        sample_ids = np.unique(sub["sample"].to_numpy())
        s, t, u = len(sample_ids), sub["t"].nunique(), sub["unit"].nunique()
        if len(sub) != s * t * u:
            raise ValueError(
                f"fbx.{what}: node '{n}' does not have every (sample, t, unit) of the "
                f"trace once. Pass a frame from fbx.trace."
            )
        if ids is not None and not np.array_equal(ids, sample_ids):
            raise ValueError(f"fbx.{what}: the nodes {list(nodes)} have other samples.")
        ids = sample_ids
        out[n] = sub["value"].to_numpy().reshape(s, t, u)
    return out, ids
