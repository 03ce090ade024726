"""fbx.sweep on Ray: a local sweep and its frame, resuming from the store, a worker
killed mid-training, the same weights as a sequential run, and a two-node Ray
cluster on loopback.

Ray starts once for the file and worker (the module fixture `local`: the first
sweep starts it, as a user's would; `ray_started` for the tests that need no
first sweep); the cluster test starts its own two nodes with their own
ports and temporary directory and stops only those. The networks are tiny (4
units, 2 epochs, 16 samples): what costs here is Ray's start and each worker's
import of TensorFlow.
"""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import keras
import numpy as np
import pandas as pd
import pytest
import ray  # the [sweep] extra, which `make test` installs

import fbexplorer as fbx
from fbexplorer.sweep_worker import cloudpickle_module

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ray")]

# The functions below travel to Ray's workers by value, not by this module's name.
cloudpickle_module().register_pickle_by_value(sys.modules[__name__])

EPOCHS = 2
rng = np.random.default_rng(0)
X = rng.normal(size=(16, 5, 1)).astype("float32")
Y = np.cumsum(X, axis=1).astype("float32")


def net(units):
    """x -> [x, loop] -> h (tanh) -> out, with h fed back: a compiled FeedbackModel."""
    x = keras.Input((1,), name="x")
    loop = fbx.Feedback((units,), name="loop")
    h = keras.layers.Dense(units, activation="tanh", name="h")(
        keras.layers.Concatenate()([x, loop])
    )
    model = fbx.FeedbackModel(x, keras.layers.Dense(1, name="out")(h), feedback={"loop": h})
    model.compile("adam", "mse", metrics=["mae"])
    return model


def counting(log):
    """`build` that appends a line to the file `log` at each network it builds."""

    def build(units):
        with open(log, "a") as f:
            f.write(f"{units}\n")
        if units == 0:
            raise ValueError("no units")
        return net(units)

    return build


def trainings(log) -> int:
    return len(open(log).read().split()) if os.path.exists(log) else 0


def die_once(marker, pids):
    """Kill this process (a worker, mid-training) if `marker` exists, removing it first."""
    try:
        os.remove(marker)
    except FileNotFoundError:
        return
    with open(pids, "a") as f:
        f.write(f"{os.getpid()}\n")
    os._exit(1)


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    """A first sweep, which starts a local Ray (shared by the file), and its log;
    Ray is shut down after the file."""

    ray.shutdown()
    tmp = tmp_path_factory.mktemp("sweep")
    log = str(tmp / "log")
    grid = {"units": [4, 0]}
    pop = fbx.sweep(counting(log), grid, (X, Y), seeds=(0, 1), epochs=EPOCHS, store=tmp / "s")
    yield pop, log, tmp
    ray.shutdown()


@pytest.fixture(scope="module")
def ray_started(tmp_path_factory):
    """A local Ray for the tests that need one but not `local`'s first sweep,
    started as any sweep starts it: by a sweep of one small network. (pytest 9.2
    ignores xdist_group, so the file's tests may run on both workers, each with
    a Ray of its own.)"""
    if not ray.is_initialized():
        fbx.sweep(net, {"units": [4]}, (X, Y), epochs=1, analyses=("loss",),
                  store=tmp_path_factory.mktemp("warm"), progress=False)  # fmt: skip
    yield


def test_local_sweep_frame_and_failures(local):

    pop, log, _ = local
    assert ray.is_initialized() and ray.cluster_resources()["CPU"] == os.cpu_count()
    assert trainings(log) == 4 and len(pop) == 2 and len(pop.failures) == 2
    frame = pop.frame
    assert list(frame.columns[:2]) == ["units", "seed"]
    assert sorted(zip(frame.units, frame.seed)) == [(4, 0), (4, 1)]
    for column in ("loss", "mae", "fixed_points", "stable_points", "attractors"):
        assert column in frame.columns
    assert (frame.fixed_points >= frame.stable_points).all()
    assert frame.attractor_kinds.str.len().gt(0).all()
    assert (frame.grad_last > 0).all()
    # the failures: the grid's values, the seed and the traceback; nothing else lost
    assert sorted(pop.failures.seed) == [0, 1] and (pop.failures.units == 0).all()
    assert pop.failures.error.str.contains("ValueError: no units").all()
    # the loss in the frame is the loaded model's on the data (an independent evaluate)
    model = pop.model(0)
    assert model.evaluate(X, Y, verbose=0, return_dict=True)["loss"] == pytest.approx(
        frame.loss[0], rel=1e-5
    )
    results = pop.results(0)
    assert results["history"]["loss"] and len(results["history"]["loss"]) == EPOCHS
    assert len(results["fixed_points"]) == frame.fixed_points[0]
    assert len(results["attractors"]) == frame.attractors[0]
    assert set(results["gradient_flow"].columns) >= {"node", "t", "norm"}
    # the store, read again: the same frame
    again = fbx.Population.load(pop.store)
    pd.testing.assert_frame_equal(
        again.frame.sort_values("key").reset_index(drop=True),
        frame.sort_values("key").reset_index(drop=True),
    )


def test_same_weights_as_a_sequential_run(ray_started, tmp_path):
    pop = fbx.sweep(net, {"units": [4]}, (X, Y), seeds=(0, 1), epochs=EPOCHS,
                    analyses=("loss",), store=tmp_path, progress=False)  # fmt: skip
    assert len(pop) == 2 and pop.failures.empty
    for i, row in pop.frame.iterrows():
        keras.utils.set_random_seed(int(row.seed))
        model = net(int(row.units))
        model.fit(X, Y, epochs=EPOCHS, verbose=0)
        for got, want in zip(pop.model(i).get_weights(), model.get_weights()):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_resume_from_the_store(ray_started, tmp_path):
    log, store = str(tmp_path / "log"), tmp_path / "store"
    kw = dict(epochs=EPOCHS, analyses=("loss",), store=store, progress=False)
    first = fbx.sweep(counting(log), {"units": [4]}, (X, Y), seeds=(0,), **kw)
    assert trainings(log) == 1 and len(first) == 1
    again = fbx.sweep(counting(log), {"units": [4]}, (X, Y), seeds=(0, 1), **kw)
    assert trainings(log) == 2 and len(again) == 2  # only seed 1 trained
    same = fbx.sweep(counting(log), {"units": [4]}, (X, Y), seeds=(0, 1), **kw)
    assert trainings(log) == 2
    pd.testing.assert_frame_equal(same.frame, again.frame)
    assert first.frame.loss[0] == again.frame.set_index("seed").loss[0]


def test_a_killed_worker_is_retried(ray_started, tmp_path):
    marker, pids, log = tmp_path / "kill", tmp_path / "pids", str(tmp_path / "log")
    marker.write_text("")
    die = keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: die_once(marker, pids))
    pop = fbx.sweep(
        counting(log),
        {"units": [4]},
        (X, Y),
        seeds=(0, 1),
        epochs=EPOCHS,
        analyses=("loss",),
        fit={"callbacks": [die]},
        store=tmp_path / "store",
        progress=False,
    )
    killed = open(pids).read().split()
    assert not marker.exists() and len(killed) == 1 and int(killed[0]) != os.getpid()
    assert trainings(log) == 3  # one network built twice: killed, then retried
    assert len(pop) == 2 and pop.failures.empty


def test_progress_line_and_failures_listed(tmp_path, capsys):
    fbx.sweep(
        counting(str(tmp_path / "log")),
        {"units": [0]},
        (X, Y),
        epochs=1,
        analyses=("loss",),
        store=tmp_path / "store",
        runner="loop",
    )
    err = capsys.readouterr().err
    assert "fbx.sweep" in err and "failed 1" in err and "1/1" in err
    assert "1 of 1 networks failed" in err and "ValueError: no units" in err


def test_runner_loop_matches_ray(local, tmp_path):
    pop, _, _ = local
    loop = fbx.sweep(
        net, {"units": [4]}, (X, Y), epochs=EPOCHS, store=tmp_path, runner="loop", progress=False
    )
    ray_row = pop.frame[pop.frame.seed == 0].iloc[0]
    assert loop.frame.loss[0] == pytest.approx(ray_row.loss, rel=1e-5)
    assert loop.frame.fixed_points[0] == ray_row.fixed_points


# ------------------------------------------------------------------ two nodes on loopback
def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _ray_node(args, env, log):
    """`ray start --block ...` in a session of its own: the node's processes end
    with this one's process group."""
    ray_cli = os.path.join(os.path.dirname(sys.executable), "ray")
    return subprocess.Popen(
        [ray_cli, "start", "--block", "--num-cpus=1",
         "--disable-usage-stats", "--object-store-memory=80000000",
         *args],
        env=env,
        stdout=open(log, "w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip


def _stop(nodes):
    """End the nodes' process groups (these and no other Ray processes)."""
    for node in reversed(nodes):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(node.pid, signal.SIGTERM)
    for node in nodes:
        try:
            node.wait(timeout=3)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.pid, signal.SIGKILL)
            node.wait()


def _wait_for(condition, what, node, log, timeout=90):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if node.poll() is not None:
            raise RuntimeError(f"{what}: ray start ended:\n{open(log).read()[-2000:]}")
        if condition():
            return
        time.sleep(0.3)
    raise TimeoutError(f"{what} after {timeout} s:\n{open(log).read()[-2000:]}")


def _agent_ports(ports):
    listen, grpc, runtime_env = ports
    return [f"--dashboard-agent-listen-port={listen}", f"--dashboard-agent-grpc-port={grpc}",
            f"--runtime-env-agent-port={runtime_env}"]  # fmt: skip


def _start_node(args, env, log, nodes, attempts=3):
    """Start a node and wait until it runs; again if it timed out starting (Ray
    gives a raylet 30 s to register, which a loaded machine can exceed)."""
    for attempt in range(attempts):
        node = _ray_node(args, env, log)
        nodes.append(node)
        try:
            _wait_for(lambda: "Ray runtime started" in log.read_text(), "a node", node, log)
            return
        except RuntimeError:
            if attempt == attempts - 1 or "timed out during startup" not in log.read_text():
                raise
            _stop([nodes.pop()])


@pytest.fixture
def loopback_cluster(tmp_path, monkeypatch):
    """A head and a worker node on this machine (one CPU each), joined at
    127.0.0.1, with ports and a temporary directory of their own, token
    authentication off (this machine only);
    stopped (their two process groups, nothing else) after the test."""

    ray.shutdown()
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    port, client, *agents = _free_ports(8)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    address, logs = f"127.0.0.1:{port}", [tmp_path / "head.log", tmp_path / "worker.log"]
    # Ray's socket paths must stay under 108 bytes: a short folder, not tmp_path.
    temp = tempfile.mkdtemp(prefix="fbxray-", dir="/tmp")
    nodes = []
    try:
        # Every port of each node given: the defaults of the two would collide, and a
        # raylet waiting for its agents to report theirs can time out on a busy machine.
        head = ["--head", "--include-dashboard=false", f"--port={port}",
                f"--ray-client-server-port={client}", *_agent_ports(agents[:3]),
                f"--temp-dir={temp}"]  # fmt: skip
        _start_node(head, env, logs[0], nodes)
        worker = [f"--address={address}", *_agent_ports(agents[3:])]
        _start_node(worker, env, logs[1], nodes)
        ray.init(address=address, log_to_driver=False)
        alive = lambda: len([n for n in ray.nodes() if n["Alive"]]) == 2  # noqa: E731
        _wait_for(alive, "the worker node", nodes[-1], logs[1])
        yield address
    finally:
        ray.shutdown()
        _stop(nodes)
        shutil.rmtree(temp, ignore_errors=True)


def test_two_node_cluster_on_loopback(loopback_cluster, tmp_path):

    assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    seen = tmp_path / "nodes"
    seen.mkdir()

    def build(units):
        import ray

        (seen / ray.get_runtime_context().get_node_id()).touch()
        return net(units)

    pop = fbx.sweep(
        build, {"units": [4, 3]}, (X, Y), epochs=EPOCHS, analyses=("loss",),
        store=tmp_path / "store", progress=False,
    )  # fmt: skip
    assert len(pop) == 2 and pop.failures.empty, list(pop.failures.error)
    assert len(os.listdir(seen)) == 2  # one network on each node
    assert ray.cluster_resources()["CPU"] == 2
