"""One network of a sweep, start to end, as a worker runs it.

`train_and_analyse` is what each Ray task (or the in-process loop) runs: set
the seed, build, fit, run the analyses, and hand back a plain dict (the summary
row, the per-network details as JSON, the saved `.keras` archive as bytes, or
the traceback of what failed). Everything that needs Keras, TensorFlow or JAX
is imported here, inside the call, so the driver's loop never pays for it;
the thread settings come first, before any backend starts.

The `build` and `fit` options arrive pickled (cloudpickle) and are unpickled
only after the thread settings, since unpickling a function imports its
modules.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import traceback

__all__ = ["ANALYSES", "cloudpickle_module", "one_thread", "summarise", "train_and_analyse"]

# The analyses a sweep knows by name, and their default settings (small: a
# sweep runs them on every network).
ANALYSES = {
    "loss": {},
    "fixed_points": {"n_starts": 16},
    "attractors": {"starts": 32, "steps": 200},
    "gradient_flow": {"samples": 8},
}


def cloudpickle_module():
    """cloudpickle (pickles functions and closures by value), or Ray's copy of it."""
    try:
        import cloudpickle
    except ImportError:
        from ray import cloudpickle
    return cloudpickle


def one_thread(threads: int | None) -> None:
    """TensorFlow, JAX (XLA) and BLAS on `threads` threads in this process, set
    before their runtimes start (a no-op for those already started)."""
    if threads is None:
        return
    n = str(int(threads))
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = n
    os.environ["TF_NUM_INTRAOP_THREADS"] = n
    os.environ["TF_NUM_INTEROP_THREADS"] = n
    flags = os.environ.get("XLA_FLAGS", "")
    if "intra_op_parallelism_threads" not in flags and threads == 1:
        extra = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        os.environ["XLA_FLAGS"] = f"{flags} {extra}".strip()
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        try:
            tf.config.threading.set_intra_op_parallelism_threads(int(threads))
            tf.config.threading.set_inter_op_parallelism_threads(int(threads))
        except RuntimeError:
            pass  # the runtime already started in this process: set by the first task


def train_and_analyse(job: dict, payload: bytes, data, threads: int | None = 1) -> dict:
    """Train one network and analyse it; never raises for the network's own errors.

    Args:
        job: `{"key", "params", "seed", "epochs", "analyses"}`.
        payload: cloudpickle of `(build, fit_kwargs)`.
        data: `(x, y)`.
        threads: the threads for TensorFlow/JAX/BLAS (None leaves them).

    Returns:
        `{"key", "row", "details", "model", "error", "seconds"}`: `model` the
        `.keras` archive's bytes; `error` a traceback string, or None.
    """
    start = time.perf_counter()
    one_thread(threads)
    out = {"key": job["key"], "row": {}, "details": "{}", "model": None, "error": None}
    try:
        import keras

        build, fit_kwargs = cloudpickle_module().loads(payload)
        keras.utils.set_random_seed(int(job["seed"]))
        model = build(**job["params"])
        x, y = data
        kwargs = {"verbose": 0, **fit_kwargs}
        history = model.fit(x, y, epochs=job["epochs"], **kwargs)
        row, details = summarise(model, x, y, job["analyses"])
        details["history"] = {k: [float(v) for v in vs] for k, vs in history.history.items()}
        out["row"] = row
        out["details"] = json.dumps(details)
        out["model"] = _archive(model)
    except Exception:
        out["error"] = traceback.format_exc()
    out["seconds"] = time.perf_counter() - start
    return out


def summarise(model, x, y, analyses: dict) -> tuple[dict, dict]:
    """The summary row (scalars) and the details (JSON-able) of each analysis."""
    row, details = {}, {}
    for name, settings in analyses.items():
        summary, detail = _ANALYSE[name](model, x, y, dict(settings))
        row.update(summary)
        if detail is not None:
            details[name] = detail
    return row, details


def _loss(model, x, y, settings):
    import numpy as np

    values = model.evaluate(x, y, verbose=0, return_dict=True, **settings)
    return {k: float(np.asarray(v)) for k, v in values.items()}, None


def _held_zeros(model) -> dict:
    """Zeros for every per-step input and constant: the probe held by default."""
    import numpy as np

    names = model.graph.input_names + model.graph.constant_names
    return {
        n: np.zeros(tuple(t.shape[1:]), t.dtype) for n, t in zip(names, model.step_model.inputs)
    }


def _fixed_points(model, x, y, settings):
    from fbexplorer.fixed_point_search import fixed_points

    inputs = settings.pop("inputs", None) or _held_zeros(model)
    fp = fixed_points(model, inputs, **settings)
    frame = fp.frame
    summary = {
        "fixed_points": len(frame),
        "stable_points": int(frame["stable"].sum()) if len(frame) else 0,
    }
    return summary, frame.to_json(orient="split")


def _attractors(model, x, y, settings):
    from fbexplorer.census import attractors

    inputs = settings.pop("inputs", None) or _held_zeros(model)
    census = attractors(model, inputs, **settings)
    kinds = census.frame["kind"].value_counts()
    summary = {
        "attractors": len(census.frame),
        "attractor_kinds": ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())),
    }
    return summary, census.frame.to_json(orient="split")


def _gradient_flow(model, x, y, settings):
    from fbexplorer.bptt import gradient_flow, gradient_norms

    samples = settings.pop("samples", 8)
    samples = list(range(min(int(samples), len(x))))
    norms = gradient_norms(gradient_flow(model, x, y, samples=samples, **settings))
    per_t = norms.groupby("t")["norm"].sum()
    summary = {
        "grad_first": float(per_t.iloc[0]),
        "grad_last": float(per_t.iloc[-1]),
    }
    return summary, norms.to_json(orient="split")


_ANALYSE = {
    "loss": _loss,
    "fixed_points": _fixed_points,
    "attractors": _attractors,
    "gradient_flow": _gradient_flow,
}


def _archive(model) -> bytes:
    """The model's `.keras` archive, as bytes (the driver writes it to the store:
    on a cluster the workers need not see the driver's disk)."""
    with tempfile.TemporaryDirectory(prefix="fbx-sweep-") as tmp:
        path = os.path.join(tmp, "model.keras")
        model.save(path)
        with open(path, "rb") as f:
            return f.read()
