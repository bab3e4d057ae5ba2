"""What the current Keras backend computes on, in words (for logs, summaries, model cards)."""

import os
import platform


def describe() -> str:
    """E.g. `NVIDIA H100 80GB HBM3 (jax)` or `CPU, 2 cores, AMD EPYC (tensorflow)`."""
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        if device.platform != "cpu":
            return f"{device.device_kind} ({backend})"
    elif backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_logical_devices("GPU")
        if gpus:
            name = tf.config.experimental.get_device_details(
                tf.config.list_physical_devices("GPU")[0]).get("device_name", "GPU")
            return f"{name} ({backend})"
    return f"CPU, {os.cpu_count()} cores, {cpu_model()} ({backend})"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
