"""`SupernetSearch` on tiny supernets: phases, BatchNorm, optimiser counters, backends."""

import dataclasses
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from clearer_tf import SupernetSearch, build_supernet
from clearer_tf.presets import SearchConfig, SupernetConfig
from clearer_tf.search import batch_norm_layers, validate
import search_helpers

HELPERS = search_helpers.__file__
REPO = os.path.dirname(os.path.dirname(os.path.abspath(HELPERS)))


def snapshot(search):
    bn = batch_norm_layers(search.supernet)
    return {
        "alpha": np.stack([v.numpy() for v in search.arch_vars]).copy(),
        "weights": [np.array(v.numpy()) for v in search.weight_vars],
        "stats": [np.array(v.numpy()) for layer in bn for v in (layer.moving_mean, layer.moving_variance)],
    }


def mse(restored, clean):
    return float(np.mean((np.asarray(restored) - clean) ** 2))


def changed(a, b):
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b))


def step(search, weight_batch, arch_batch):
    """One search iteration through Keras (`train_on_batch`: `((x_w, y_w), (x_a, y_a))`)."""
    return search.train_on_batch(weight_batch, arch_batch, return_dict=True)


@pytest.fixture(scope="module")
def phases():
    """Snapshots around a warm-up iteration, a lone architecture step and a search iteration."""
    search = search_helpers.make_search()  # warm-up: 1 iteration
    rng = np.random.RandomState(0)
    batch = lambda: tuple(rng.rand(4, 16, 16, 1).astype("float32") for _ in range(2))  # noqa: E731
    shots = {"start": snapshot(search)}
    shots["warmup_logs"] = step(search, batch(), batch())
    shots["warmup"] = snapshot(search)
    shots["arch_steps_after_warmup"] = int(search.arch_optimizer.iterations.numpy())
    x, y = batch()
    shots["arch_reference"] = mse(search(x, training=False), y)
    shots["arch_metrics"] = {k: float(v) for k, v in search._arch_update(x, y).items()}  # TF's architecture step
    shots["arch"] = snapshot(search)
    shots["search_logs"] = step(search, batch(), batch())
    shots["search"] = snapshot(search)
    shots["iterations"] = [int(o.iterations.numpy())
                           for o in (search.optimizer, search.weight_optimizer, search.arch_optimizer)]
    return shots


def test_warmup_moves_weights_not_alpha(phases):
    start, warm = phases["start"], phases["warmup"]
    np.testing.assert_array_equal(warm["alpha"], start["alpha"])
    assert changed(warm["weights"], start["weights"]) > 1e-6
    assert changed(warm["stats"], start["stats"]) > 0  # training-mode BN updates its statistics
    assert phases["arch_steps_after_warmup"] == 0  # Adam's state untouched, its counter included
    assert np.isnan(phases["warmup_logs"]["arch_loss"]) and phases["warmup_logs"]["loss"] > 0


def test_architecture_step_moves_alpha_only_and_keeps_batchnorm_statistics(phases):
    warm, arch = phases["warmup"], phases["arch"]
    assert np.abs(arch["alpha"] - warm["alpha"]).max() > 1e-6
    for before, after in zip(warm["stats"], arch["stats"]):
        np.testing.assert_array_equal(after, before)
    for before, after in zip(warm["weights"], arch["weights"]):
        np.testing.assert_array_equal(after, before)


def test_architecture_step_loss_is_l_res_in_inference_mode_plus_lambda_l_arch(phases):
    metrics = phases["arch_metrics"]
    assert metrics["arch_res"] == pytest.approx(phases["arch_reference"], rel=1e-4)
    w = np.exp(phases["warmup"]["alpha"])
    w /= w.sum(axis=1, keepdims=True)
    entropy = -np.mean(w * np.log10(w) + (1 - w) * np.log10(1 - w))
    assert metrics["arch_entropy"] == pytest.approx(entropy, rel=1e-5)
    assert metrics["arch_loss"] == pytest.approx(metrics["arch_res"] + 0.01 * entropy, rel=1e-5)


def test_architecture_step_with_batch_statistics_keeps_moving_statistics():
    supernet_config, search_config = search_helpers.configs()
    search = search_helpers.make_search(search_config=dataclasses.replace(search_config, arch_batchnorm="batch"),
                                        seed=1)
    rng = np.random.RandomState(5)
    x, y = (rng.rand(4, 16, 16, 1).astype("float32") for _ in range(2))
    reference = mse(search.supernet(x, training=True), y)  # batch statistics (this call moves them)
    before = snapshot(search)
    metrics = search._arch_update(x, y)
    after = snapshot(search)
    assert float(metrics["arch_res"]) == pytest.approx(reference, rel=1e-4)
    assert np.abs(after["alpha"] - before["alpha"]).max() > 1e-6
    for a, b in zip(before["stats"] + before["weights"], after["stats"] + after["weights"]):
        np.testing.assert_array_equal(a, b)


def test_after_warmup_both_move_and_each_optimizer_counts_its_steps(phases):
    arch, full = phases["arch"], phases["search"]
    assert np.abs(full["alpha"] - arch["alpha"]).max() > 1e-6
    assert changed(full["weights"], arch["weights"]) > 1e-6
    # search iterations, weight steps, architecture steps (the lone step above and one in fit)
    assert phases["iterations"] == [2, 2, 2]
    assert all(np.isfinite(v) for v in phases["search_logs"].values())


def test_fit_counts_architecture_steps_only_after_warmup_and_logs_per_epoch():
    config = SearchConfig(iterations=6, warmup=4, batch_size=2, patch_size=16, log_every=2, jit_compile=False)
    search = search_helpers.make_search(search_config=config)
    batches = search_helpers.random_batches(6, size=2)
    history = search.fit(search_helpers.dataset(batches), epochs=3, steps_per_epoch=2, verbose=0, shuffle=False)
    assert [int(o.iterations.numpy()) for o in (search.optimizer, search.weight_optimizer,
                                                search.arch_optimizer)] == [6, 6, 2]
    logs = history.history
    assert np.isnan(logs["arch_loss"][:2]).all() and np.isfinite(logs["arch_loss"][2])
    assert len(logs["loss"]) == 3 and np.isfinite(logs["loss"]).all()
    assert isinstance(search.genotype().short(), str)


@pytest.mark.parametrize("verbose", [1, 2])
def test_progress_bar_shows_no_architecture_metric_before_the_first_architecture_step(capsys, verbose):
    from clearer_tf.callbacks import Progress

    config = SearchConfig(iterations=6, warmup=4, batch_size=2, patch_size=16, log_every=2, jit_compile=False)
    search = search_helpers.make_search(search_config=config)
    search.fit(search_helpers.dataset(search_helpers.random_batches(6, size=2)), epochs=3, steps_per_epoch=2,
               verbose=verbose, shuffle=False, callbacks=[Progress()])
    epochs = capsys.readouterr().out.split("Epoch ")[1:]
    assert [e.split("/")[0] for e in epochs] == ["1", "2", "3"]  # one bar: Keras added none of its own
    for text in epochs[:2]:  # warm-up epochs
        assert "nan" not in text and "arch_loss" not in text and "loss:" in text
    assert "arch_loss:" in epochs[2] and "nan" not in epochs[2]


def test_checks_reject_what_the_supernet_or_fit_cannot_run():
    with pytest.raises(ValueError, match="multiple of 4"):
        validate(SupernetConfig(columns=(1, 1)), SearchConfig(patch_size=18))
    validate(SupernetConfig(columns=(1, 1)), SearchConfig(patch_size=20))
    with pytest.raises(ValueError, match="divisible by the 2 replicas"):
        validate(SupernetConfig(), SearchConfig(batch_size=5), replicas=2)
    with pytest.raises(ValueError, match=r"--iterations \(110\) must be a multiple of --log-every \(50\)"):
        validate(SupernetConfig(), SearchConfig(iterations=110, warmup=10))
    with pytest.raises(ValueError, match="--patch-size 17 must be a multiple of 2"):
        SupernetSearch(build_supernet(config=SupernetConfig(**search_helpers.SUPERNET)),
                       SearchConfig(patch_size=17))


def test_contract_of_the_issue_runs_on_tensorflow():
    """The example of the issue: build, compile with both optimisers from the config, fit, genotype."""
    import tensorflow as tf

    supernet = build_supernet(config=SupernetConfig(base_width=4, columns=(2, 1), stem_planes=4, stem_blocks=1))
    search = SupernetSearch(supernet, SearchConfig(iterations=4, warmup=2, batch_size=2, patch_size=16, log_every=2))
    search.compile()
    assert isinstance(search.optimizer, keras.optimizers.MultiOptimizer)
    rng = np.random.RandomState(0)
    images = tf.data.Dataset.from_tensor_slices(rng.rand(8, 16, 16, 1).astype("float32")).repeat()
    pairs = tf.data.Dataset.zip((images, images)).batch(2)
    search.fit(tf.data.Dataset.zip((pairs, pairs)), epochs=2, steps_per_epoch=2, verbose=0, shuffle=False)
    assert [len(cell) for cell in search.genotype().cells] == [2, 1]


@pytest.fixture(scope="module", autouse=True)
def subprocesses(tmp_path_factory):
    """Starts the JAX side first, to overlap the other tests: it gets the weights (a
    `.weights.h5` file) and batches (`.npy`) of a TensorFlow-built supernet."""
    directory = tmp_path_factory.mktemp("backends")
    search = search_helpers.make_search(seed=3)
    data = np.random.RandomState(4).rand(6, 2, 4, 16, 16, 1).astype("float32")  # 6 (degraded, clean)
    np.save(directory / "batches.npy", data)
    search.supernet.save_weights(directory / "supernet.weights.h5")
    procs = {}
    try:
        import jax  # noqa: F401

        env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
        procs["jax"] = launch(["jax-side", str(directory)], env)
    except ImportError:
        pass
    yield {"search": search, "data": data, "procs": procs}
    for proc in procs.values():
        if proc.poll() is None:
            proc.kill()


def launch(args, env):
    return subprocess.Popen([sys.executable, HELPERS, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)


def result(proc):
    out, err = proc.communicate(timeout=500)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def test_tensorflow_and_jax_give_the_same_losses(subprocesses):
    if "jax" not in subprocesses["procs"]:
        pytest.skip("jax is not installed")
    search, data = subprocesses["search"], subprocesses["data"]
    initial = np.stack([v.numpy() for v in search.arch_vars])
    tf_side = search_helpers.steps(search, [(d[0], d[1]) for d in data])
    jax_side = result(subprocesses["procs"]["jax"])
    # Warm-up: the same weight step; alpha and Adam untouched on both (JAX computes the
    # architecture step in the same program and discards it).
    for key in ("loss", "grad_norm", "lr"):
        assert jax_side["warmup"][key] == pytest.approx(tf_side["warmup"][key], rel=1e-4, abs=1e-6), key
    for side in (tf_side, jax_side):
        np.testing.assert_array_equal(side["alphas_after_warmup"], initial)
        assert side["arch_steps_after_warmup"] == 0
        assert side["iterations"] == [3, 3, 2]
    assert jax_side["traces"] == 1  # warm-up and search iterations share one XLA program on JAX
    for tf_metrics, jax_metrics in zip(tf_side["metrics"], jax_side["metrics"]):
        assert set(tf_metrics) == set(jax_metrics)
        for key in ("loss", "arch_loss", "arch_res", "arch_entropy", "arch_psnr", "grad_norm", "lr"):
            assert jax_metrics[key] == pytest.approx(tf_metrics[key], rel=1e-4, abs=1e-6), key
    np.testing.assert_allclose(jax_side["alphas"], tf_side["alphas"], rtol=1e-4, atol=1e-7)
    assert np.abs(np.array(tf_side["alphas"]) - initial).max() > 1e-6  # the steps did something


def test_jit_auto_means_xla_only_with_a_gpu_on_tensorflow():
    import tensorflow as tf

    from clearer_tf.presets import resolve_jit

    assert SearchConfig().jit_compile == "auto"
    assert resolve_jit("auto") is bool(tf.config.list_logical_devices("GPU"))
    assert resolve_jit(True) is True and resolve_jit(False) is False
