"""Training on two devices gives the weights of training on one: TensorFlow's
MirroredStrategy over two logical CPUs, and JAX's keras.distribution.DataParallel
over two host devices.

Devices must be split before the backend initialises, so each check runs in a
subprocess.
"""

import os
import subprocess
import sys
import textwrap

import pytest
from test_error_catalogue import catalogue

# Each test starts a Python process of its own (two CPU devices, a fresh backend).
pytestmark = pytest.mark.slow

SCRIPT = textwrap.dedent(
    """
    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
    )
    import keras
    import fbexplorer as fbx

    def build():
        keras.utils.set_random_seed(0)
        x = keras.Input((3,), name="x")
        loop = fbx.Feedback((4,), name="loop", delay=2, initial="learned")
        h = keras.layers.Dense(4, activation="tanh", name="h")(
            keras.layers.Concatenate()([x, loop])
        )
        c = fbx.cell(keras.layers.GRUCell(4, name="gru"))(h)
        y = keras.layers.Dense(2, name="y")(c)
        net = fbx.FeedbackModel(x, y, feedback={"loop": h})
        net.compile(keras.optimizers.SGD(0.1), "mse")
        return net

    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 6, 3)).astype("float32")
    Y = rng.normal(size=(64, 6, 2)).astype("float32")

    one = build()
    start = [w.copy() for w in one.get_weights()]
    one.fit(X, Y, batch_size=16, epochs=2, shuffle=False, verbose=0)

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert strategy.num_replicas_in_sync == 2
    with strategy.scope():
        two = build()
    two.set_weights(start)
    two.fit(X, Y, batch_size=16, epochs=2, shuffle=False, verbose=0)

    moved = max(np.abs(a - s).max() for a, s in zip(one.get_weights(), start))
    assert moved > 1e-3, moved  # training changed the weights
    for a, b, v in zip(one.get_weights(), two.get_weights(), one.weights):
        np.testing.assert_allclose(a, b, atol=1e-5, err_msg=v.path)
    np.testing.assert_allclose(two.predict(X, verbose=0), one.predict(X, verbose=0), atol=1e-5)

    with strategy.scope():
        x = keras.Input((3,), name="x")
        loop = fbx.Feedback((4,), name="loop")
        h = keras.layers.Dense(4, name="h")(keras.layers.Concatenate()([x, loop]))
        stateful = fbx.FeedbackModel(x, h, feedback={"loop": h}, stateful=True, name="net")
        stateful.compile("sgd", "mse")
    try:
        stateful.fit(X[:16], Y[:16, :, :1].repeat(4, -1), batch_size=8, verbose=0)
    except ValueError as err:
        print("STATEFUL:", " ".join(str(err).split()))
    print("MIRRORED OK", len(start), "weights, largest change", moved)
    """
)


def test_mirrored_strategy_on_two_cpus_equals_one_device():
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0 and "MIRRORED OK" in proc.stdout, proc.stderr[-3000:]
    # A stateful model under a strategy of several replicas gets the documented error.
    documented = catalogue()["stateful-several-replicas"].split(": ", 1)[1]
    assert f"STATEFUL: {documented}" in proc.stdout, proc.stdout


JAX_SCRIPT = textwrap.dedent(
    """
    import jax
    import keras
    import numpy as np
    import fbexplorer as fbx

    assert keras.backend.backend() == "jax" and len(jax.devices()) == 2

    def build():
        keras.utils.set_random_seed(0)
        x = keras.Input((3,), name="x")
        loop = fbx.Feedback((4,), name="loop", delay=2)
        h = keras.layers.Dense(4, activation="tanh", name="h")(
            keras.layers.Concatenate()([x, loop])
        )
        y = keras.layers.Dense(2, name="y")(fbx.cell(keras.layers.GRUCell(4, name="gru"))(h))
        net = fbx.FeedbackModel(x, y, feedback={"loop": h})
        net.compile(keras.optimizers.SGD(0.1), "mse")
        return net

    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 6, 3)).astype("float32")
    Y = rng.normal(size=(64, 6, 2)).astype("float32")
    one = build()
    start = [w.copy() for w in one.get_weights()]
    one.fit(X, Y, batch_size=16, epochs=2, shuffle=False, verbose=0)

    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=jax.devices()))
    two = build()
    assert two.weights[0].value.sharding.mesh.shape["batch"] == 2
    two.set_weights(start)
    two.fit(X, Y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    assert max(np.abs(a - s).max() for a, s in zip(one.get_weights(), start)) > 1e-3
    for a, b in zip(one.get_weights(), two.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-5)
    print("DATA PARALLEL OK")
    """
)


def test_jax_data_parallel_on_two_cpus_equals_one_device():
    env = dict(
        os.environ,
        KERAS_BACKEND="jax",
        TF_CPP_MIN_LOG_LEVEL="3",
        XLA_FLAGS="--xla_force_host_platform_device_count=2",
    )
    proc = subprocess.run(
        [sys.executable, "-c", JAX_SCRIPT], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0 and "DATA PARALLEL OK" in proc.stdout, proc.stderr[-3000:]
