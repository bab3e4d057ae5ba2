"""Subprocess sides of the search tests (each needs a fresh process).

    python tests/search_helpers.py jax-side DIR   # KERAS_BACKEND=jax: two search steps
    python tests/search_helpers.py mirrored       # 2 logical CPUs: one device vs MirroredStrategy

Both print one JSON object on the last line of stdout.
"""

import contextlib
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SUPERNET = dict(base_width=4, columns=(2,), stem_planes=4, stem_blocks=1)
SEARCH = dict(iterations=10, warmup=1, batch_size=4, patch_size=16, jit_compile=False)


def configs():
    from clearer_tf.presets import SearchConfig, SupernetConfig

    return SupernetConfig(**SUPERNET), SearchConfig(**SEARCH)


def two_steps(search, batches):
    """One warm-up iteration, then two full iterations (arch + weight step); their
    metrics, alpha and the architecture optimizer's step count after the warm-up, and
    alpha after all."""
    import numpy as np

    def alphas():
        search.sync()
        return np.stack([np.asarray(v.numpy()) for v in search.arch_vars]).tolist()

    out = search.step(batches[0], batches[1], warmup=True)
    warmup = {key: float(value) for key, value in out.items()}
    after_warmup = alphas()
    arch_steps = int(np.asarray(search.arch_optimizer.iterations.numpy()))
    metrics = []
    for k in range(1, 3):
        out = search.step(batches[2 * k], batches[2 * k + 1], warmup=False)
        metrics.append({key: float(value) for key, value in out.items()})
    return {"warmup": warmup, "alphas_after_warmup": after_warmup,
            "arch_steps_after_warmup": arch_steps, "metrics": metrics, "alphas": alphas()}


def jax_side(directory):
    """Loads the TF side's weights and batches, runs `two_steps` on the JAX backend."""
    import keras
    import numpy as np

    from clearer_tf.search import BilevelSearch
    from clearer_tf.supernet import build_supernet

    assert keras.backend.backend() == "jax", keras.backend.backend()
    supernet_config, search_config = configs()
    model = build_supernet(config=supernet_config)
    model.load_weights(os.path.join(directory, "supernet.weights.h5"))
    data = np.load(os.path.join(directory, "batches.npy"))
    batches = [(data[k, 0], data[k, 1]) for k in range(len(data))]
    search = BilevelSearch(model, supernet_config, search_config)
    out = two_steps(search, batches)
    # XLA programs compiled for warm-up + search iterations (one, if the warm-up reuses it).
    out["compiled"] = {name: fn._cache_size() for name, fn in search._steps.fns.items()
                       if hasattr(fn, "_cache_size")}
    return out


def mirrored():
    """The same two iterations on one device and on 2 mirrored CPUs (global batch 4)."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    import numpy as np

    from clearer_tf.search import BilevelSearch
    from clearer_tf.supernet import build_supernet

    supernet_config, search_config = configs()
    rng = np.random.RandomState(1)
    batches = [tuple(rng.rand(4, 16, 16, 1).astype("float32") for _ in range(2)) for _ in range(4)]

    def run(strategy):
        keras.utils.set_random_seed(0)
        with strategy.scope() if strategy is not None else contextlib.nullcontext():
            model = build_supernet(config=supernet_config)
        search = BilevelSearch(model, supernet_config, search_config, strategy=strategy)
        metrics = []
        for k in range(2):
            out = search.step(batches[2 * k], batches[2 * k + 1], warmup=False)
            metrics.append({key: float(value) for key, value in out.items()})
        variables = model.weights + search.weight_optimizer.variables + search.arch_optimizer.variables
        synced = all(layer.synchronized for layer in _batch_norms(model))
        return metrics, [np.asarray(v.numpy(), np.float64) for v in variables], synced

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    one_metrics, one_values, _ = run(None)
    two_metrics, two_values, synced = run(strategy)
    worst = max(
        float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-3)) for a, b in zip(one_values, two_values)
    )
    return {
        "replicas": strategy.num_replicas_in_sync,
        "synchronized_bn": synced,
        "one_device": one_metrics,
        "mirrored": two_metrics,
        "max_relative_difference": worst,
        "moved": float(max(np.abs(a - b).max() for a, b in zip(one_values, _initial_values()))),
    }


def _batch_norms(model):
    from clearer_tf.search import batch_norm_layers

    return batch_norm_layers(model)


def _initial_values():
    import keras
    import numpy as np

    from clearer_tf.supernet import build_supernet

    supernet_config, _ = configs()
    keras.utils.set_random_seed(0)
    model = build_supernet(config=supernet_config)
    # optimizer slots start at zero; compare the model weights only
    return [np.asarray(v.numpy(), np.float64) for v in model.weights]


if __name__ == "__main__":
    mode = sys.argv[1]
    result = jax_side(sys.argv[2]) if mode == "jax-side" else mirrored()
    print(json.dumps(result))
