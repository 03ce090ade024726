"""`fbx.sweep`: train and analyse a population of networks, one Ray task each.

The driver (this module) only plans, checks, submits and records: Keras,
TensorFlow and JAX run in the workers (`fbexplorer.sweep_worker`). Each
network is one Ray task on one CPU, with its framework on one thread, so N
cores train N networks at once; a task whose worker dies is retried by Ray.
What finishes is written to the store at once (`fbexplorer.sweep_store`), so
a sweep run again with the same store resumes where it stopped.
"""

from __future__ import annotations

import itertools
import os
import sys
import tempfile
from collections.abc import Mapping

from fbexplorer.population import Population
from fbexplorer.sweep_progress import SweepProgress
from fbexplorer.sweep_store import STATUS_COLUMNS, SweepStore, network_key
from fbexplorer.sweep_worker import ANALYSES, cloudpickle_module, train_and_analyse

__all__ = ["sweep"]

DEFAULT_ANALYSES = ("loss", "fixed_points", "attractors", "gradient_flow")
# Columns the frame keeps for itself: a grid key may not take one of these names.
RESERVED = {*STATUS_COLUMNS, "seed", "grid", "loss"}
RUNNERS = (None, "ray", "loop")
# A local Ray's object store: the data and the archives are small.
OBJECT_STORE_BYTES = 128 * 2**20


def sweep(
    build,
    grid: Mapping,
    data,
    *,
    seeds=(0,),
    epochs: int = 10,
    analyses=DEFAULT_ANALYSES,
    store=None,
    runner=None,
    fit: Mapping | None = None,
    threads: int | None = 1,
    retries: int = 3,
    progress: bool = True,
) -> Population:
    """Train and analyse one network for every combination of `grid` and seed, on Ray.

    For each combination `params` of the grid's values and each seed: set the
    seed (`keras.utils.set_random_seed`), build the model with
    `build(**params)` (a compiled `FeedbackModel`), `fit` it on `data` for
    `epochs`, then run the analyses. Each network is one Ray task; with
    `runner=None`, a Ray already connected is used (a cluster joined with
    `ray.init(address=...)` before the call), else a local one is started
    with this machine's cores. Each network is written to `store` when it
    finishes; calling the same sweep with the same store again resumes it:
    the networks it holds are not trained again.

    Args:
        build: `build(**params) -> compiled FeedbackModel`. It runs in Ray's
            workers, so it must be picklable (cloudpickle: functions, lambdas
            and closures are; a lock, an open file or a live model they hold
            are not) and what it imports importable there.
        grid: `{name: [values]}`: numbers, strings, booleans or None; each
            name becomes a column of the frame and a keyword of `build`.
        data: `(x, y)` as for `fit` (arrays, or dicts of arrays by input name).
        seeds: the seeds; every combination is trained once per seed.
        epochs: the epochs of `fit`.
        analyses: names from `"loss"` (`evaluate`'s loss and metrics on
            `data`), `"fixed_points"` (count and stable count), `"attractors"`
            (the census: count and kinds), `"gradient_flow"` (the gradient's
            norm at the first and last step), or `{name: settings}` to pass
            settings (`inputs=` the held probe, default zeros; `n_starts=`,
            `starts=`, `steps=`, `samples=`...).
        store: a directory (created if missing) for the `.keras` files and
            the Parquet table `results.parquet`; default a new temporary one.
        runner: None or "ray" (Ray, as above); "loop" trains the networks one
            after the other in this process, without Ray.
        fit: more keyword arguments for `fit` (`batch_size`, `callbacks`...).
        threads: the threads of TensorFlow/JAX in each task (None: as is).
        retries: how many times Ray reruns a task whose worker died.
        progress: show a progress bar (ipywidgets in a notebook, one line in a
            terminal) and list the failures at the end.

    Returns:
        A `Population`: `.frame` (a row per network: the grid's columns,
        `seed`, `loss` and metrics, the analyses' summaries), `.model(i)`,
        `.results(i)`, `.failures` (the tracebacks of networks that failed;
        the others are still returned).

    Raises:
        ImportError: Ray (or pyarrow) is not installed: `pip install
            fbexplorer[sweep]`.
        ValueError: a grid, data, seed, epoch count, analysis or runner that
            does not fit, or a `build` that cannot be pickled.

    Example:
        >>> def build(units):
        ...     net = make_net(units)
        ...     net.compile("adam", "mse")
        ...     return net
        >>> pop = fbx.sweep(build, {"units": [4, 8]}, (X, Y), seeds=range(4), epochs=5)
        >>> pop.frame.groupby("units").stable_points.mean()
    """
    ray = _ray_module() if runner in (None, "ray") else None
    grid = _checked_grid(grid)
    chosen = _checked_analyses(analyses)
    jobs = _plan(grid, _checked_seeds(seeds), _checked_epochs(epochs), chosen)
    _check_data(data)
    _check_runner(runner)
    payload = _pickled(build, dict(fit or {}))
    store = SweepStore(store if store is not None else tempfile.mkdtemp(prefix="fbx-sweep-"))
    todo = [job for job in jobs if not store.done(job["key"])]
    bar = SweepProgress(len(jobs), resumed=len(jobs) - len(todo), show=progress)
    record = _recorder(store, list(grid), bar)
    try:
        if ray is None:
            _run_loop(todo, payload, data, record)
        else:
            _run_ray(ray, todo, payload, data, record, bar, threads=threads, retries=retries)
    finally:
        population = Population(store, [job["key"] for job in jobs], grid=list(grid))
        bar.close(population.failures)
    return population


# ------------------------------------------------------------------ running
def _recorder(store: SweepStore, grid: list, bar: SweepProgress):
    """`record(job, out)`: one finished (or failed) network into the store."""
    import json

    def record(job, out):
        failed = out.get("error") is not None
        row = {
            "key": job["key"],
            "status": "failed" if failed else "done",
            **job["params"],
            "seed": job["seed"],
            **out.get("row", {}),
            "seconds": float(out.get("seconds", float("nan"))),
            "error": out.get("error"),
            "details": out.get("details", "{}"),
            "grid": json.dumps(grid),
        }
        store.add(row, None if failed else out.get("model"))
        bar.update(finished=1, failed=int(failed))

    return record


def _run_loop(todo, payload, data, record):
    """The networks one after the other in this process (no Ray)."""
    for job in todo:
        record(job, train_and_analyse(job, payload, data, threads=None))


def _run_ray(ray, todo, payload, data, record, bar, *, threads, retries):
    """One Ray task per network; record each as it finishes."""
    if not todo:
        return
    if not ray.is_initialized():
        _start_local_ray(ray)
    task = ray.remote(train_and_analyse).options(
        num_cpus=1, max_retries=int(retries), retry_exceptions=False
    )
    data_ref, payload_ref = ray.put(data), ray.put(payload)
    pending = {task.remote(job, payload_ref, data_ref, threads): job for job in todo}
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    bar.update(running=min(len(pending), cpus))
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
            for ref in ready:
                job = pending.pop(ref)
                record(job, _result(ray, ref, job))
            bar.update(running=min(len(pending), cpus))
    except BaseException:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise


def _result(ray, ref, job) -> dict:
    """A task's result, or a failure when Ray gave up on it (its worker died
    more than `retries` times)."""
    try:
        return ray.get(ref)
    except Exception as e:  # ray.exceptions.RayError and its kin
        return {"key": job["key"], "error": f"{type(e).__name__}: {e}", "seconds": float("nan")}


def _start_local_ray(ray, attempts: int = 3):
    """A local Ray with this machine's cores, a small object store, quiet logs,
    and this process's import path in its workers. A new one (`address="local"`),
    never a cluster that `ray start` left running on this machine. Ray gives its
    node 30 s to start; on a loaded machine that can pass, and it is tried again."""
    path = os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))
    for attempt in range(attempts):
        try:
            ray.init(
                address="local",
                num_cpus=os.cpu_count(),
                object_store_memory=OBJECT_STORE_BYTES,
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
                runtime_env={"env_vars": {"PYTHONPATH": path}},
            )
            return
        except Exception as e:
            ray.shutdown()
            if attempt == attempts - 1 or "timed out during startup" not in str(e):
                raise


# ------------------------------------------------------------------ planning and checks
def _plan(grid: dict, seeds: list, epochs: int, analyses: dict) -> list[dict]:
    """Every network of the sweep: `{"key", "params", "seed", "epochs", "analyses"}`."""
    names = list(grid)
    jobs = []
    for values in itertools.product(*grid.values()):
        params = dict(zip(names, values))
        for seed in seeds:
            key = network_key(params, seed, epochs, analyses)
            jobs.append(
                {"key": key, "params": params, "seed": seed, "epochs": epochs, "analyses": analyses}
            )
    return jobs


def _ray_module():
    try:
        import ray
    except ImportError:
        raise ImportError(
            "fbx.sweep runs its networks on Ray, which is not installed: install the extra "
            "with `pip install fbexplorer[sweep]` (or pass runner='loop' to train them one "
            "after the other in this process). Received: no module named 'ray'."
        ) from None
    return ray


def _scalar(value):
    """A grid value as a plain Python scalar (numpy's become Python's), or None if
    it is no scalar."""
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        value = value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return _NOT_SCALAR


_NOT_SCALAR = object()


def _checked_grid(grid) -> dict:
    if not isinstance(grid, Mapping) or not grid:
        raise ValueError(
            f"fbx.sweep: grid must be a non-empty dict of lists, {{name: [values]}}, one "
            f"name per keyword of build. Received: grid={grid!r}."
        )
    out = {}
    for name, values in grid.items():
        if not isinstance(name, str) or not name.isidentifier() or name in RESERVED:
            raise ValueError(
                f"fbx.sweep: every key of grid must be a keyword name of build other than "
                f"{sorted(RESERVED)} (the frame's own columns). Received: key {name!r}."
            )
        listed = [values] if isinstance(values, (str, bytes)) else values
        try:
            listed = [_scalar(v) for v in listed]
        except TypeError:
            listed = [_NOT_SCALAR]
        if not listed or any(v is _NOT_SCALAR for v in listed):
            raise ValueError(
                f"fbx.sweep: grid['{name}'] must be a non-empty list of numbers, strings, "
                f"booleans or None (they become a column of the frame). Received: "
                f"grid['{name}']={values!r}."
            )
        out[name] = listed
    return out


def _checked_seeds(seeds) -> list[int]:
    listed = [seeds] if isinstance(seeds, int) else seeds
    try:
        listed = [_scalar(s) for s in listed]
    except TypeError:
        listed = []
    if not listed or any(isinstance(s, bool) or not isinstance(s, int) for s in listed):
        raise ValueError(
            f"fbx.sweep: seeds must be a non-empty list of ints. Received: seeds={seeds!r}."
        )
    return listed


def _checked_epochs(epochs) -> int:
    value = _scalar(epochs)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"fbx.sweep: epochs must be an int >= 1. Received: epochs={epochs!r}.")
    return value


def _checked_analyses(analyses) -> dict:
    if isinstance(analyses, str):
        analyses = (analyses,)
    items = analyses.items() if isinstance(analyses, Mapping) else ((a, {}) for a in analyses)
    out = {}
    for name, settings in items:
        if name not in ANALYSES or not isinstance(settings, Mapping):
            raise ValueError(
                f"fbx.sweep: analyses must name some of {list(ANALYSES)} (or map each to a "
                f"dict of its settings). Received: {name!r}: {settings!r}."
            )
        out[name] = {**ANALYSES[name], **settings}
    return out


def _check_data(data):
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise ValueError(
            f"fbx.sweep: data must be a pair (x, y), as for fit. Received: "
            f"{type(data).__name__}{'' if not hasattr(data, '__len__') else f' of {len(data)}'}."
        )


def _check_runner(runner):
    if not (runner is None or (isinstance(runner, str) and runner in RUNNERS)):
        raise ValueError(
            f"fbx.sweep: runner must be None or 'ray' (Ray: the one connected, else a local "
            f"one), or 'loop' (one after the other, in this process). Received: runner={runner!r}."
        )


def _pickled(build, fit: dict) -> bytes:
    """`(build, fit)` as cloudpickle bytes, checked here, where a failure is clear."""
    if not callable(build):
        raise ValueError(
            f"fbx.sweep: build must be a function build(**params) returning a compiled "
            f"FeedbackModel. Received: build={build!r}."
        )
    try:
        return cloudpickle_module().dumps((build, fit))
    except Exception as e:
        raise ValueError(
            f"fbx.sweep: build (and fit=) must be picklable to run in Ray's workers; "
            f"cloudpickle handles functions, lambdas and closures, not a lock, an open file "
            f"or a live model they refer to: build the model inside build. Received: "
            f"build={getattr(build, '__qualname__', build)!r}; {type(e).__name__}: {e}."
        ) from None
