"""The bilevel search on tiny supernets: phases, BatchNorm, backends, devices, resume."""

import csv
import dataclasses
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from clearer_tf.genotype import Genotype
from clearer_tf.presets import SearchConfig, SupernetConfig
from clearer_tf.search import BilevelSearch, batch_norm_layers, check_resume, run_info, run_search, validate
from clearer_tf.supernet import build_supernet
import search_helpers

HELPERS = search_helpers.__file__
REPO = os.path.dirname(os.path.dirname(os.path.abspath(HELPERS)))


def snapshot(model, search):
    search.sync()
    bn = batch_norm_layers(model)
    return {
        "alpha": np.stack([v.numpy() for v in search.arch_vars]).copy(),
        "weights": [np.array(v.numpy()) for v in search.weight_vars],
        "stats": [np.array(v.numpy()) for layer in bn for v in (layer.moving_mean, layer.moving_variance)],
    }


def mse(restored, clean):
    return float(np.mean((np.asarray(restored) - clean) ** 2))


def changed(a, b):
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b))


@pytest.fixture(scope="module")
def phases():
    """Snapshots around a warm-up step, a lone architecture step and a full iteration."""
    supernet_config, search_config = search_helpers.configs()
    keras.utils.set_random_seed(0)
    model = build_supernet(config=supernet_config)
    search = BilevelSearch(model, supernet_config, search_config)
    rng = np.random.RandomState(0)
    batch = lambda: tuple(rng.rand(4, 16, 16, 1).astype("float32") for _ in range(2))  # noqa: E731
    shots = {"start": snapshot(model, search)}
    search.step(batch(), batch(), warmup=True)
    shots["warmup"] = snapshot(model, search)
    arch_batch = batch()
    shots["arch_reference"] = mse(model(arch_batch[0], training=False), arch_batch[1])
    shots["arch_metrics"] = {k: float(v) for k, v in search.arch_step(arch_batch).items()}
    shots["arch"] = snapshot(model, search)
    search.step(batch(), batch(), warmup=False)
    shots["search"] = snapshot(model, search)
    shots["iteration"] = search.iteration
    return shots


def test_warmup_moves_weights_not_alpha(phases):
    start, warm = phases["start"], phases["warmup"]
    np.testing.assert_array_equal(warm["alpha"], start["alpha"])
    assert changed(warm["weights"], start["weights"]) > 1e-6
    assert changed(warm["stats"], start["stats"]) > 0  # training-mode BN updates its statistics


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
    config = dataclasses.replace(search_config, arch_batchnorm="batch")
    keras.utils.set_random_seed(1)
    model = build_supernet(config=supernet_config)
    search = BilevelSearch(model, supernet_config, config)
    rng = np.random.RandomState(5)
    x, y = (rng.rand(4, 16, 16, 1).astype("float32") for _ in range(2))
    reference = mse(model(x, training=True), y)  # batch statistics (this call moves them)
    before = snapshot(model, search)
    metrics = search.arch_step((x, y))
    after = snapshot(model, search)
    assert float(metrics["arch_res"]) == pytest.approx(reference, rel=1e-4)
    assert np.abs(after["alpha"] - before["alpha"]).max() > 1e-6
    for a, b in zip(before["stats"] + before["weights"], after["stats"] + after["weights"]):
        np.testing.assert_array_equal(a, b)


def test_after_warmup_both_move(phases):
    arch, full = phases["arch"], phases["search"]
    assert np.abs(full["alpha"] - arch["alpha"]).max() > 1e-6
    assert changed(full["weights"], arch["weights"]) > 1e-6
    assert phases["iteration"] == 2  # step() counts iterations; arch_step() alone does not


def test_patch_size_must_be_a_multiple_of_two_to_the_cells():
    with pytest.raises(ValueError, match="multiple of 4"):
        validate(SupernetConfig(columns=(1, 1)), SearchConfig(patch_size=18))
    validate(SupernetConfig(columns=(1, 1)), SearchConfig(patch_size=20))
    with pytest.raises(ValueError, match="divisible by the 2 replicas"):
        validate(SupernetConfig(), SearchConfig(batch_size=5), replicas=2)


@pytest.fixture(scope="module", autouse=True)
def subprocesses(tmp_path_factory):
    """Starts the JAX side and the 2-CPU MirroredStrategy run first, to overlap the other tests.

    The JAX side gets the weights (a `.weights.h5` file) and batches (`.npy`) of a
    TensorFlow-built supernet; the TensorFlow side runs in `test_tensorflow_and_jax_...`.
    """
    directory = tmp_path_factory.mktemp("backends")
    supernet_config, _ = search_helpers.configs()
    keras.utils.set_random_seed(3)
    model = build_supernet(config=supernet_config)
    data = np.random.RandomState(4).rand(6, 2, 4, 16, 16, 1).astype("float32")  # 6 (degraded, clean)
    np.save(directory / "batches.npy", data)
    model.save_weights(directory / "supernet.weights.h5")
    procs = {}
    try:
        import jax  # noqa: F401

        env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
        procs["jax"] = launch(["jax-side", str(directory)], env)
    except ImportError:
        pass
    procs["mirrored"] = launch(["mirrored"], dict(os.environ, KERAS_BACKEND="tensorflow"))
    yield {"model": model, "data": data, "procs": procs}
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
    supernet_config, search_config = search_helpers.configs()
    model, data = subprocesses["model"], subprocesses["data"]
    search = BilevelSearch(model, supernet_config, search_config)
    initial = np.stack([v.numpy() for v in search.arch_vars])
    tf_side = search_helpers.two_steps(search, [(d[0], d[1]) for d in data])
    jax_side = result(subprocesses["procs"]["jax"])
    # Warm-up: the same weight step; alpha and Adam untouched on both (JAX computes the
    # architecture step in the same program and discards it).
    for key in ("loss", "grad_norm", "lr"):
        assert jax_side["warmup"][key] == pytest.approx(tf_side["warmup"][key], rel=1e-4, abs=1e-6), key
    for side in (tf_side, jax_side):
        np.testing.assert_array_equal(side["alphas_after_warmup"], initial)
        assert side["arch_steps_after_warmup"] == 0
    if jax_side["compiled"]:  # warm-up and search iterations share one XLA program on JAX
        assert jax_side["compiled"].get("search") == 1 and jax_side["compiled"].get("weight") == 0
    for tf_metrics, jax_metrics in zip(tf_side["metrics"], jax_side["metrics"]):
        assert set(tf_metrics) == set(jax_metrics)
        for key in ("loss", "arch_loss", "arch_res", "arch_entropy", "arch_psnr", "grad_norm", "lr"):
            assert jax_metrics[key] == pytest.approx(tf_metrics[key], rel=1e-4, abs=1e-6), key
    np.testing.assert_allclose(jax_side["alphas"], tf_side["alphas"], rtol=1e-4, atol=1e-7)
    assert np.abs(np.array(tf_side["alphas"]) - initial).max() > 1e-6  # the steps did something


def test_mirrored_strategy_on_two_cpus_matches_one_device(subprocesses):
    outcome = result(subprocesses["procs"]["mirrored"])
    assert outcome["replicas"] == 2
    assert outcome["synchronized_bn"]
    assert outcome["moved"] > 1e-6  # the steps did something to compare
    for one, two in zip(outcome["one_device"], outcome["mirrored"]):
        assert set(one) == set(two)
        for key in one:
            assert two[key] == pytest.approx(one[key], rel=1e-4, abs=1e-6), key
    assert outcome["max_relative_difference"] < 1e-4


# --- run_search: outputs, kill and resume ---------------------------------------------------
SMALL = SupernetConfig(**search_helpers.SUPERNET)
SHORT = SearchConfig(iterations=8, warmup=2, batch_size=2, patch_size=16, log_every=3,
                     checkpoint_every=4, jit_compile=False, seed=5)


@pytest.fixture(scope="module")
def task_data(set12_dir):
    from pipelines.tasks import load_task_data

    return load_task_data("denoise", data=set12_dir, sigma=25.0)


class Killed(Exception):
    pass


def read_history(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, task_data):
    out = tmp_path_factory.mktemp("search") / "run"
    genotype = run_search(SMALL, SHORT, task_data, str(out))
    return out, genotype


def test_run_search_writes_every_output(uninterrupted):
    out, genotype = uninterrupted
    for name in ("genotype.json", "architecture.png", "alpha_history.csv", "alpha_history.png",
                 "checkpoint/search.npz"):
        assert (out / name).is_file(), name
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(out / "tensorboard"))
    data = json.loads((out / "genotype.json").read_text())
    assert data["format_version"] == 1 and data["task"] == "denoise" and data["image_channels"] == 1
    assert data["widths"] == [4, 8] and data["columns"] == [2]
    assert data["search"]["iterations"] == 8 and data["search"]["lambda_arch"] == 0.01
    assert data["data"]["degradation"]["sigma"] == 25.0
    assert Genotype.load(out / "genotype.json").cells == genotype.cells
    for weights in (w for cell in data["weights"] for w in cell):
        assert sum(weights) == pytest.approx(1.0, abs=1e-5)
    rows = read_history(out / "alpha_history.csv")
    assert [int(r["iteration"]) for r in rows] == [0, 3, 6, 8]


def test_killed_and_resumed_search_ends_like_an_uninterrupted_one(tmp_path, task_data, uninterrupted,
                                                                  monkeypatch):
    reference, _ = uninterrupted
    out = tmp_path / "run"
    step = BilevelSearch.step

    def dying_step(self, *args, **kwargs):
        if self.iteration == 7:  # after the checkpoint at 4 and the log row at 6
            raise Killed()
        return step(self, *args, **kwargs)

    monkeypatch.setattr(BilevelSearch, "step", dying_step)
    with pytest.raises(Killed):
        run_search(SMALL, SHORT, task_data, str(out))
    monkeypatch.setattr(BilevelSearch, "step", step)
    assert [int(r["iteration"]) for r in read_history(out / "alpha_history.csv")] == [0, 3, 6]

    with pytest.raises(ValueError, match="already holds a search checkpoint"):
        run_search(SMALL, SHORT, task_data, str(out))
    run_search(SMALL, SHORT, task_data, str(out), resume=True)

    expected, got = read_history(reference / "alpha_history.csv"), read_history(out / "alpha_history.csv")
    assert [r["iteration"] for r in got] == [r["iteration"] for r in expected]  # no duplicate rows
    keys = [k for k in expected[0] if "alpha" in k]
    final_expected = np.array([float(expected[-1][k]) for k in keys])
    final_got = np.array([float(got[-1][k]) for k in keys])
    np.testing.assert_allclose(final_got, final_expected, rtol=1e-5, atol=1e-7)
    initial = np.array([float(expected[0][k]) for k in keys])
    assert np.abs(final_expected - initial).max() > 1e-5  # the search moved alpha
    a = json.loads((reference / "genotype.json").read_text())
    b = json.loads((out / "genotype.json").read_text())
    assert a["cells"] == b["cells"]


def test_resume_rejects_a_missing_checkpoint_or_another_configuration(tmp_path, task_data, uninterrupted):
    reference, _ = uninterrupted
    with pytest.raises(ValueError, match="no search checkpoint"):
        check_resume(str(tmp_path), SMALL, SHORT, run_info(task_data))
    other = SearchConfig(**{**SHORT.__dict__, "lambda_arch": 0.1})
    with pytest.raises(ValueError, match=r"search\.lambda_arch is 0\.01 in the checkpoint, 0\.1 now"):
        check_resume(str(reference), SMALL, other, run_info(task_data))
    runtime_only = SearchConfig(**{**SHORT.__dict__, "log_every": 1, "jit_compile": True})
    check_resume(str(reference), SMALL, runtime_only, run_info(task_data))


def test_jit_auto_means_xla_only_with_a_gpu_on_tensorflow():
    import tensorflow as tf

    from clearer_tf.presets import resolve_jit

    assert SearchConfig().jit_compile == "auto"
    assert resolve_jit("auto") is bool(tf.config.list_logical_devices("GPU"))
    assert resolve_jit(True) is True and resolve_jit(False) is False
