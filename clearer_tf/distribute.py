"""Data-parallel search and training over several devices or machines (`--distribute`).

* `mirrored` (TensorFlow): `tf.distribute.MirroredStrategy` over the local GPUs; BatchNorm is
  synchronised, the model is built in the strategy's scope, Keras splits every batch.
* `data-parallel` (JAX): `keras.distribution.DataParallel` over the local devices.
* `multihost` (JAX): several processes, on one machine or many, each with its devices:
  `keras.distribution.initialize` (coordinator address, process count, this process's id;
  flags or the `KERAS_DISTRIBUTION_*` variables), then `DataParallel` over all processes'
  devices. Every process runs the same command; each reads its share of every global batch
  (`distribution.distribute_dataset`), and only process 0 writes files.

(`tf.distribute.MultiWorkerMirroredStrategy` does not work with `fit` in Keras 3.15 / TF 2.21:
Keras' symbolic build reduces the first distributed batch and fails; hence JAX across hosts.)
"""

from __future__ import annotations

import keras

KINDS = ("none", "mirrored", "data-parallel", "multihost")


def setup(kind="none", coordinator=None, num_processes=None, process_id=None):
    """Configures `kind`; returns the `tf.distribute` strategy for `mirrored`, else None.

    Call before any computation (for `multihost`, before JAX touches a device).
    Raises ValueError (one line) for a kind the backend cannot run.
    """
    if kind not in KINDS:
        raise ValueError(f"--distribute must be one of {', '.join(KINDS)}, got {kind!r}")
    backend = keras.backend.backend()
    if kind == "none":
        return None
    if kind == "mirrored":
        if backend != "tensorflow":
            raise ValueError("--distribute mirrored needs KERAS_BACKEND=tensorflow")
        import tensorflow as tf

        return tf.distribute.MirroredStrategy()
    if backend != "jax":
        raise ValueError(f"--distribute {kind} needs KERAS_BACKEND=jax")
    if kind == "multihost":
        keras.distribution.initialize(job_addresses=coordinator, num_processes=num_processes, process_id=process_id)
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=keras.distribution.list_devices()))
    return None


def add_arguments(parser):
    """The `--distribute` options of search.py and train.py."""
    group = parser.add_argument_group("devices")
    group.add_argument("--distribute", choices=KINDS, default="none",
                       help="mirrored: tf.distribute.MirroredStrategy over the local GPUs (TensorFlow); "
                            "data-parallel: keras.distribution.DataParallel over the local devices (JAX); "
                            "multihost: data parallel over several JAX processes (run the same command in each)")
    group.add_argument("--coordinator", metavar="HOST:PORT",
                       help="multihost: address of process 0 (or KERAS_DISTRIBUTION_JOB_ADDRESSES)")
    group.add_argument("--num-processes", type=int, metavar="N",
                       help="multihost: number of processes (or KERAS_DISTRIBUTION_NUM_PROCESSES)")
    group.add_argument("--process-id", type=int, metavar="I",
                       help="multihost: this process, 0..N-1 (or KERAS_DISTRIBUTION_PROCESS_ID)")
    return group


def from_arguments(args):
    return setup(args.distribute, args.coordinator, args.num_processes, args.process_id)
