"""Subprocess sides of the search tests (each needs a fresh process).

    python tests/search_helpers.py jax-side DIR      # KERAS_BACKEND=jax: a warm-up and two search steps
    python tests/search_helpers.py mirrored          # 2 logical CPUs: one device vs MirroredStrategy
    python tests/search_helpers.py data-parallel     # JAX, 2 host devices: one device vs DataParallel
    python tests/search_helpers.py async-callbacks   # JAX: Keras dispatches our callbacks asynchronously

Each prints one JSON object on the last line of stdout.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SUPERNET = dict(base_width=4, columns=(2,), stem_planes=4, stem_blocks=1)
SEARCH = dict(iterations=10, warmup=1, batch_size=4, patch_size=16, log_every=1, jit_compile=False)


def configs():
    from clearer_tf.presets import SearchConfig, SupernetConfig

    return SupernetConfig(**SUPERNET), SearchConfig(**SEARCH)


def make_search(supernet_config=None, search_config=None, seed=0):
    import keras

    from clearer_tf.search import SupernetSearch
    from clearer_tf.supernet import build_supernet

    defaults = configs()
    supernet_config, search_config = supernet_config or defaults[0], search_config or defaults[1]
    keras.utils.set_random_seed(seed)
    search = SupernetSearch(build_supernet(config=supernet_config), search_config)
    search.compile()
    return search


def alphas(search):
    import numpy as np

    return np.stack([np.asarray(v.numpy()) for v in search.arch_vars]).tolist()


def steps(search, batches):
    """One warm-up iteration, then two search iterations (`train_on_batch`, one step each): their
    metrics, alpha and Adam's step count after the warm-up, and alpha after all."""
    import numpy as np

    out = search.train_on_batch(batches[0], batches[1], return_dict=True)
    warmup = {key: float(value) for key, value in out.items()}
    after_warmup = alphas(search)
    arch_steps = int(np.asarray(search.arch_optimizer.iterations.numpy()))
    metrics = []
    for k in range(1, 3):
        out = search.train_on_batch(batches[2 * k], batches[2 * k + 1], return_dict=True)
        metrics.append({key: float(value) for key, value in out.items()})
    return {"warmup": warmup, "alphas_after_warmup": after_warmup, "arch_steps_after_warmup": arch_steps,
            "metrics": metrics, "alphas": alphas(search),
            "iterations": [int(np.asarray(o.iterations.numpy()))
                           for o in (search.optimizer, search.weight_optimizer, search.arch_optimizer)]}


def jax_side(directory):
    """Loads the TF side's weights and batches, runs `steps` on the JAX backend."""
    import keras
    import numpy as np

    assert keras.backend.backend() == "jax", keras.backend.backend()
    search = make_search()
    search.supernet.load_weights(os.path.join(directory, "supernet.weights.h5"))
    data = np.load(os.path.join(directory, "batches.npy"))
    out = steps(search, [(data[k, 0], data[k, 1]) for k in range(len(data))])
    out["traces"] = search.traces  # jax.jit traced train_step once for warm-up and search
    return out


def dataset(batches):
    import tensorflow as tf

    xw, yw, xa, ya = (tf.constant([b[i] for b in batches]) for i in range(4))
    return tf.data.Dataset.zip((tf.data.Dataset.from_tensor_slices((xw, yw)),
                                tf.data.Dataset.from_tensor_slices((xa, ya))))


def random_batches(n, seed=1, size=4):
    import numpy as np

    rng = np.random.RandomState(seed)
    return [tuple(rng.rand(size, 16, 16, 1).astype("float32") for _ in range(4)) for _ in range(n)]


def fit_values(search, batches):
    """`fit` over `batches` (one epoch per step); every variable and the logs of each step."""
    import numpy as np

    history = search.fit(dataset(batches), epochs=len(batches), steps_per_epoch=1, verbose=0,
                         shuffle=False)
    variables = search.weights + search.optimizer.variables
    return history.history, [np.asarray(v.numpy(), np.float64) for v in variables]


def compare(one, two, moved_from):
    import numpy as np

    (one_logs, one_values), (two_logs, two_values) = one, two
    worst = max(float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-3)) for a, b in zip(one_values, two_values))
    return {"one_device": one_logs, "distributed": two_logs, "max_relative_difference": worst,
            "moved": float(max(np.abs(a - b).max() for a, b in zip(one_values, moved_from)))}


def mirrored():
    """The same three iterations (warm-up, then search) on one device and on 2 mirrored CPUs."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import numpy as np

    from clearer_tf.search import batch_norm_layers

    batches = random_batches(3)
    search = make_search()
    initial = [np.asarray(v.numpy(), np.float64) for v in search.weights + search.optimizer.variables]
    one = fit_values(search, batches)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        search = make_search()
    synced = all(layer.synchronized for layer in batch_norm_layers(search.supernet))
    return dict(compare(one, fit_values(search, batches), initial), replicas=strategy.num_replicas_in_sync,
                synchronized_bn=synced)


def data_parallel():
    """The same three iterations on one JAX CPU device and on 2 (DataParallel)."""
    import jax
    import keras
    import numpy as np

    assert len(jax.devices()) == 2, jax.devices()
    batches = random_batches(3)
    search = make_search()
    initial = [np.asarray(v.numpy(), np.float64) for v in search.weights + search.optimizer.variables]
    one = fit_values(search, batches)
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=jax.devices()))
    two = fit_values(make_search(), batches)
    return dict(compare(one, two, initial), replicas=len(jax.devices()))


def async_callbacks(directory):
    """The callbacks of a search and of a training, as `fit` configures them (JAX backend)."""
    import keras

    from clearer_tf.callbacks import WallClock
    from clearer_tf.presets import TrainConfig
    from clearer_tf.search.run import search_callbacks
    from clearer_tf.training import CheckpointAndLog, ValidationPSNR, training_callbacks

    search = make_search()
    _, config = configs()
    validation = ValidationPSNR.__new__(ValidationPSNR)  # its hooks, without images
    stacks = {"search": search_callbacks(config, os.path.join(directory, "s"), 10),
              "training": training_callbacks(TrainConfig(time_limit=100.0), os.path.join(directory, "t"),
                                             validation, CheckpointAndLog(directory), WallClock(), 0.0)}
    return {name: keras.callbacks.CallbackList(stack, model=search)._async_train for name, stack in stacks.items()}


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "jax-side":
        result = jax_side(sys.argv[2])
    elif mode == "mirrored":
        result = mirrored()
    elif mode == "data-parallel":
        result = data_parallel()
    else:
        result = async_callbacks(sys.argv[2])
    print(json.dumps(result))
