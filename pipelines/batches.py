"""Which input pipeline feeds `fit` (`--data-pipeline`): tf.data or batches drawn on the device.

* `tfdata`: `pipelines.streams` (TensorFlow's tf.data, on the CPU, for either backend);
* `device`: `pipelines.device` (JAX only: the images on the accelerator, each batch one compiled
  program; no TensorFlow needed);
* `auto` (default): `device` on JAX unless the degradation is synthetic rain (drawn in NumPy by
  tf.data), else `tfdata`.

Both give the same distribution of batches (tests/test_device_pipeline.py), not the same
pixels. `run.json` keeps the choice as given, so a resume on the same backend makes the same
one; `train_summary.json` and `genotype.json` record the one used (`batches`).
"""

from __future__ import annotations

from clearer_tf.quiet import has_tensorflow
from pipelines.errors import DataError
from pipelines.rain import RainStreaks

PIPELINES = ("auto", "tfdata", "device")


def resolve(choice: str, backend: str, degradation=None) -> str:
    """`tfdata` or `device` for `choice` on `backend`; DataError (one line) when it cannot run."""
    if choice not in PIPELINES:
        raise DataError(f"--data-pipeline must be one of {', '.join(PIPELINES)}, got {choice!r}")
    rain = isinstance(degradation, RainStreaks)
    if choice == "auto":
        choice = "device" if backend == "jax" and not rain else "tfdata"
    if choice == "device":
        if backend != "jax":
            raise DataError(f"--data-pipeline device needs KERAS_BACKEND=jax (the backend is {backend})")
        if rain:
            raise DataError("--data-pipeline device: synthetic rain is drawn by tf.data (--data-pipeline tfdata); "
                            "on the device: Gaussian noise or real pairs")
    elif not has_tensorflow():
        why = "synthetic rain is drawn by tf.data" if rain else "--data-pipeline tfdata"
        raise DataError(f"{why}, which needs TensorFlow, and TensorFlow is not installed"
                        + ("" if rain else " (use --data-pipeline device on JAX)"))
    return choice


def training_batches(pipeline, items, degradation=None, patch_size=64, batch_size=32, seed=None, start=0):
    """`fit`'s input for a training: a tf.data stream or a generator of device batches, from batch `start`."""
    if pipeline == "device":
        from pipelines import device

        _no_auto_shard()
        return device.training_batches(items, degradation, patch_size, batch_size, seed, start=start)
    from pipelines import streams

    return streams.training_stream(items, degradation, patch_size, batch_size, seed=seed, start=start)


def search_batches(pipeline, weights_items, arch_items, degradation=None, patch_size=64, batch_size=32,
                   seed=None, start=0):
    """`fit`'s input for a search: `((x_w, y_w), (x_a, y_a))` per step, from step `start`."""
    if pipeline == "device":
        from pipelines import device

        _no_auto_shard()
        return device.search_batches(weights_items, arch_items, degradation, patch_size, batch_size, seed, start)
    import tensorflow as tf

    from pipelines import streams

    return tf.data.Dataset.zip(streams.search_streams(weights_items, arch_items, degradation, patch_size,
                                                      batch_size, seed, start=start))


def _no_auto_shard():
    """Device batches are already each process's share of the global batch (multi-host JAX):
    Keras must not shard them again (it refuses a generator while `auto_shard_dataset` is on)."""
    import keras

    distribution = keras.distribution.distribution()
    if distribution is not None and getattr(distribution, "auto_shard_dataset", False):
        distribution.auto_shard_dataset = False
