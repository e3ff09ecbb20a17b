"""One worker of a MultiWorkerMirroredStrategy run on localhost (loopback ports only).

Usage: multiworker.py PORT0 PORT1 INDEX OUT.npy — or `single OUT.npy` for the
one-worker reference on the same global batch. Run by tests/test_distribute.py.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
if sys.argv[1] != "single":
    port0, port1, index = sys.argv[1], sys.argv[2], int(sys.argv[3])
    os.environ["TF_CONFIG"] = json.dumps(
        {
            "cluster": {"worker": [f"localhost:{port0}", f"localhost:{port1}"]},
            "task": {"type": "worker", "index": index},
        }
    )
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_reg  # noqa: E402

rng = np.random.default_rng(0)
x = rng.normal(size=(64, 6)).astype("float32")
y = (x[:, :2] @ np.array([[1.5], [-2.0]]) + 0.1 * rng.normal(size=(64, 1))).astype("float32")

if sys.argv[1] == "single":
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
else:
    strategy = tf.distribute.MultiWorkerMirroredStrategy()

dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(64).repeat()  # global batch 64

# Keras 3.15's `fit` fails under MultiWorkerMirroredStrategy even for a plain model without
# keras_reg (_maybe_symbolic_build reduces a PerReplica batch eagerly: "Attempt to convert a
# value (PerReplica...)", then a metrics reduction fails). So this drives the documented
# custom training loop: per-replica loss scaled by 1/replicas, penalties included.
with strategy.scope():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(1, kernel_regularizer=keras_reg.L1(0.2))]
    )
    optimizer = keras_reg.Proximal(keras.optimizers.Adam(0.05))
    optimizer.build(model.trainable_variables)
replicas = strategy.num_replicas_in_sync


@tf.function
def train_step(batch):
    def replica_step(xb, yb):
        with tf.GradientTape() as tape:
            local = tf.reduce_mean(tf.square(model(xb, training=True) - yb))
            penalty = tf.add_n(model.losses)
            loss = (local + penalty) / replicas
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply(grads, model.trainable_variables)
        return local + penalty

    per_replica = strategy.run(replica_step, args=batch)
    return strategy.reduce("MEAN", per_replica, axis=None)


iterator = iter(strategy.experimental_distribute_dataset(dataset))
losses = [float(train_step(next(iterator))) for _ in range(40)]
np.save(sys.argv[-1], np.concatenate([model.layers[0].kernel.numpy().ravel(), losses]))
print("replicas", replicas)
