"""Speed and memory of the search and of the discrete network (issue: benchmarks).

Measures, for the current Keras backend (TensorFlow on CPU, JAX on a GPU) and
precision (float32 or mixed_bfloat16), with XLA:
  1. the search iteration (`SupernetSearch`'s one compiled step: architecture step + weight step);
  2. train step of the discrete network (paper genotype F P P F / F F F F / P F F P);
  3. inference per image (batch 1) and images/s at batch 16;
  4. peak memory; 5. derived minutes for 10k search / 100k train iterations.

Usage:
    KERAS_BACKEND=tensorflow python bench/bench.py --batch 8 --steps 10
    KERAS_BACKEND=jax python bench/bench.py --batch 32 --steps 30 --precision mixed_bfloat16
    KERAS_BACKEND=tensorflow python bench/bench.py --only search --batch 8 --no-jit   # CPU
Prints a Markdown table row set and writes JSON with --json.
"""

import argparse
import datetime
import json
import os
import resource
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import clearer_tf  # noqa: E402,F401  first: it sets TF_ENABLE_ONEDNN_OPTS before TensorFlow loads
import keras  # noqa: E402
import numpy as np  # noqa: E402

PAPER_GENOTYPE = "F P P F / F F F F / P F F P"


def sync(tree):
    """Block until device work behind `tree` is done (host copy of one scalar)."""
    leaves = keras.tree.flatten(tree)
    if leaves:
        np.asarray(keras.ops.convert_to_numpy(leaves[-1]))


def first_call_s(fn):
    """Seconds of the first call (trace + compile + one step)."""
    start = time.perf_counter()
    sync(fn())
    return time.perf_counter() - start


def median_time(fn, steps, warmup):
    for _ in range(warmup):
        sync(fn())
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        sync(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def device_name():
    from clearer_tf import device

    return device.describe()


def peak_memory_gib():
    if keras.backend.backend() == "jax":
        import jax

        stats = jax.devices()[0].memory_stats() or {}
        return stats.get("peak_bytes_in_use", 0) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB


def batch(rng, n, size, channels=1):
    x = rng.rand(n, size, size, channels).astype("float32")
    y = np.clip(x + 0.1 * rng.randn(*x.shape), 0, 1).astype("float32")
    return x, y


def bench_search(args, rng):
    """`SupernetSearch`'s compiled steps as `fit` runs them: the search iteration (architecture
    step + weight step) and, on TensorFlow, the warm-up program (the weight step alone; JAX runs
    one program for both)."""
    from clearer_tf.presets import get_preset
    from clearer_tf.search import SupernetSearch
    from clearer_tf.supernet import build_supernet

    preset = get_preset(args.preset)
    preset.search.batch_size = args.batch
    preset.search.jit_compile = not args.no_jit
    search = SupernetSearch(build_supernet(1, config=preset.supernet), preset.search)
    search.compile()
    wb, ab = batch(rng, args.batch, args.size), batch(rng, args.batch, args.size)
    if keras.backend.backend() == "jax":
        import jax

        step = jax.jit(search.train_step, donate_argnums=0)
        state = search._get_jax_state(trainable_variables=True, non_trainable_variables=True,
                                      optimizer_variables=True, metrics_variables=True)

        def iteration(_):
            nonlocal state
            logs, state = step(state, (wb, ab))
            return logs

        programs = {"search_iteration": iteration}
    else:  # the warm-up program is the weight step alone
        search.make_train_function()
        programs = dict(zip(["weight_step", "search_iteration"], search._step_functions))
    out = {}
    for key, fn in programs.items():
        def call(fn=fn):
            return fn(iter([(wb, ab)]))
        out[f"{key}_first_call_s"] = first_call_s(call)
        out[f"{key}_ms"] = 1e3 * median_time(call, args.steps, args.warmup)
    if "weight_step_ms" in out:
        out["arch_step_ms_derived"] = out["search_iteration_ms"] - out["weight_step_ms"]
    out["search_peak_gib"] = peak_memory_gib()
    out["search_10k_min"] = out["search_iteration_ms"] * 10_000 / 6e4
    return out


def _train_step_fn(model, optimizer, jit=True):
    """One MSE/Adam step, compiled with XLA (JAX always), in the backend's own idiom."""
    if keras.backend.backend() == "jax":
        import jax

        def loss_fn(trainable, non_trainable, x, y):
            pred, non_trainable = model.stateless_call(trainable, non_trainable, x, training=True)
            loss = keras.ops.mean(keras.ops.square(keras.ops.cast(pred, "float32") - y))
            return loss, non_trainable

        @jax.jit
        def step(state, x, y):
            trainable, non_trainable, opt_vars = state
            (loss, non_trainable), grads = jax.value_and_grad(loss_fn, has_aux=True)(
                trainable, non_trainable, x, y
            )
            trainable, opt_vars = optimizer.stateless_apply(opt_vars, grads, trainable)
            return (trainable, non_trainable, opt_vars), loss

        optimizer.build(model.trainable_variables)
        state = [
            [v.value for v in model.trainable_variables],
            [v.value for v in model.non_trainable_variables],
            [v.value for v in optimizer.variables],
        ]

        def run(x, y):
            nonlocal state
            state, loss = step(state, x, y)
            return loss

        return run

    import tensorflow as tf

    @tf.function(jit_compile=jit)
    def step(x, y):
        with tf.GradientTape() as tape:
            pred = model(x, training=True)
            loss = tf.reduce_mean(tf.square(tf.cast(pred, tf.float32) - y))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    return step


def _infer_fn(model, jit=True):
    if keras.backend.backend() == "jax":
        import jax

        params = ([v.value for v in model.trainable_variables],
                  [v.value for v in model.non_trainable_variables])

        @jax.jit
        def infer(x):
            return model.stateless_call(params[0], params[1], x, training=False)[0]

        return infer
    import tensorflow as tf

    return tf.function(lambda x: model(x, training=False), jit_compile=jit)


def bench_network(args, rng):
    from clearer_tf import Genotype, build_network
    from clearer_tf.presets import get_preset

    if args.preset == "paper":
        genotype = Genotype.from_string(PAPER_GENOTYPE)
    else:  # smoke test: alternate fusion/parallel over the preset's columns
        net = get_preset(args.preset).supernet
        cells = [["fusion", "parallel"] * n for n in net.columns]
        genotype = Genotype(cells=[c[:n] for c, n in zip(cells, net.columns)],
                            base_width=net.base_width, stem_planes=net.stem_planes,
                            stem_blocks=net.stem_blocks)
    model = build_network(genotype)
    optimizer = keras.optimizers.Adam(1e-3, global_clipnorm=5.0)
    step = _train_step_fn(model, optimizer, jit=not args.no_jit)
    x, y = batch(rng, args.train_batch, args.size)
    out = {"train_step_first_call_s": first_call_s(lambda: step(x, y))}
    out["train_step_ms"] = 1e3 * median_time(lambda: step(x, y), args.steps, args.warmup)
    out["train_peak_gib"] = peak_memory_gib()
    out["train_100k_min"] = out["train_step_ms"] * 100_000 / 6e4
    infer = _infer_fn(model, jit=not args.no_jit)
    one = rng.rand(1, 320, 480, 1).astype("float32")
    out["infer_ms_320x480"] = 1e3 * median_time(lambda: infer(one), args.steps, args.warmup)
    many = rng.rand(16, 320, 480, 1).astype("float32")
    fast = keras.backend.backend() == "jax"  # on the CPU one batch of 16 takes minutes
    t16 = median_time(lambda: infer(many), max(3, args.steps // 3) if fast else 1, 2 if fast else 1)
    out["images_per_s_b16"] = 16 / t16
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=32, help="search batch (paper: 32)")
    p.add_argument("--train-batch", type=int, default=None, help="train batch (default: --batch)")
    p.add_argument("--size", type=int, default=64, help="patch size")
    p.add_argument("--steps", type=int, default=30, help="timed steps (median)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--precision", choices=["float32", "mixed_bfloat16"], default="float32")
    p.add_argument("--preset", choices=["paper", "quick"], default="paper",
                   help="model sizes (quick: a smoke test of this script)")
    p.add_argument("--only", choices=["search", "network"], default=None)
    p.add_argument("--no-jit", action="store_true",
                   help="TensorFlow without XLA (faster on CPUs); JAX always compiles")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args(argv)
    args.train_batch = args.train_batch or args.batch
    keras.mixed_precision.set_global_policy(args.precision)
    keras.utils.set_random_seed(0)
    rng = np.random.RandomState(0)
    result = {
        "command": "python bench/bench.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "backend": keras.backend.backend(),
        "precision": args.precision,
        "device": device_name(),
        "date": datetime.date.today().isoformat(),
        "batch": args.batch,
        "train_batch": args.train_batch,
        "preset": args.preset,
        "xla": keras.backend.backend() == "jax" or not args.no_jit,
        "tf_enable_onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
    }
    if args.only in (None, "search"):
        result.update(bench_search(args, rng))
    if args.only in (None, "network"):
        result.update(bench_network(args, rng))
    for key, value in result.items():
        print(f"| {key} | {value:.2f} |" if isinstance(value, float) else f"| {key} | {value} |")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
