"""Several machines: MultiWorkerMirroredStrategy over two worker processes on
loopback gives the weights of training on one device.

The README's multi-machine recipe: the same script in every worker, each with
a `TF_CONFIG` naming all workers (127.0.0.1 ports here) and its own index, and
a custom training loop (`strategy.run`), since Keras 3's `fit` fails under
this strategy (keras-team/keras#20585). A third process trains the same model
on one device. Every process is bounded in time and killed if it overruns.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

# Two worker processes talking over loopback.
pytestmark = pytest.mark.slow

SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import numpy as np
    import tensorflow as tf

    multi = "TF_CONFIG" in os.environ
    if multi:  # created first, before any other TensorFlow op
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    else:
        strategy = tf.distribute.get_strategy()  # the default: one device
    import keras
    import fbexplorer as fbx

    def build():
        keras.utils.set_random_seed(0)
        x = keras.Input((1,), name="x")
        loop = fbx.Feedback((8,), name="loop")
        h1 = keras.layers.Dense(8, activation="tanh")(keras.layers.Concatenate()([x, loop]))
        h3 = keras.layers.Dense(8, activation="tanh")(keras.layers.Dense(8, activation="tanh")(h1))
        return fbx.FeedbackModel(x, keras.layers.Dense(1)(h3), feedback={"loop": h3})

    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, size=(64, 6, 1)).astype("float32")
    Y = (np.cumsum(X, axis=1) / np.arange(1, 7)[None, :, None]).astype("float32")
    GLOBAL_BATCH = 16  # split between the workers
    with strategy.scope():
        net = build()
        opt = keras.optimizers.SGD(0.1)
    if multi:
        assert strategy.num_replicas_in_sync == 2, strategy.num_replicas_in_sync
    start = [w.copy() for w in net.get_weights()]
    data = tf.data.Dataset.from_tensor_slices((X, Y)).batch(GLOBAL_BATCH)
    data = strategy.experimental_distribute_dataset(data)

    @tf.function
    def train_step(x, y):
        def replica_step(x, y):
            with tf.GradientTape() as tape:
                per_sample = tf.reduce_mean(tf.square(net(x, training=True) - y), axis=[1, 2])
                loss = tf.reduce_sum(per_sample) / GLOBAL_BATCH
            grads = tape.gradient(loss, net.trainable_variables)
            opt.apply(grads, net.trainable_variables)  # sums the gradients across workers

        strategy.run(replica_step, args=(x, y))

    for epoch in range(2):
        for x, y in data:
            train_step(x, y)
    task = json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {}).get("index", "single")
    np.savez(os.path.join(sys.argv[1], f"weights-{task}.npz"), *net.get_weights())
    np.savez(os.path.join(sys.argv[1], f"start-{task}.npz"), *start)
    print("TRAINED", task)
    """
)


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def load(path):
    with np.load(path) as f:
        return [f[k] for k in sorted(f.files, key=lambda k: int(k.split("_")[1]))]


def test_multi_worker_mirrored_on_loopback_equals_one_device(tmp_path):
    base = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3")
    workers = [f"127.0.0.1:{p}" for p in free_ports(2)]
    envs = [dict(base)]  # the single-device reference: no TF_CONFIG
    envs[0].pop("TF_CONFIG", None)
    for i in range(2):
        config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}}
        envs.append(dict(base, TF_CONFIG=json.dumps(config)))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SCRIPT, str(tmp_path)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for env in envs
    ]
    try:
        outputs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:  # a worker left waiting for its peer must not outlive the test
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0 and "TRAINED" in out, err[-3000:]
    start = load(tmp_path / "start-single.npz")
    single = load(tmp_path / "weights-single.npz")
    assert max(np.abs(a - s).max() for a, s in zip(single, start)) > 1e-3  # it trained
    for index in (0, 1):
        assert all(
            np.array_equal(a, b) for a, b in zip(start, load(tmp_path / f"start-{index}.npz"))
        )
        multi = load(tmp_path / f"weights-{index}.npz")
        for a, b in zip(single, multi):
            np.testing.assert_allclose(a, b, atol=1e-5)
