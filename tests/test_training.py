"""Training a genotype's network with `model.fit` on real images; resume; the CLI's errors."""

import dataclasses
import json
import math

import keras
import numpy as np
import pytest

from clearer_tf.genotype import Genotype
from clearer_tf.presets import TrainConfig
from clearer_tf.training import TimeLimit, check_train_config, make_optimizer, process_seconds, train_network
from pipelines.noise import GaussianNoise
from pipelines.tasks import load_eval_items, load_task_data

TINY = Genotype.from_string("F / P / F", base_width=4, stem_planes=4, stem_blocks=1)
SIGMA = 50.0


class Interrupt(Exception):
    pass


class InterruptAfterFirstValidation(keras.callbacks.Callback):
    """Simulates a killed run: raises after the first epoch's checkpoint and backup."""

    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            raise Interrupt()


def numpy_psnr(restored, clean):
    mse = np.mean((np.asarray(restored, np.float64) - np.asarray(clean, np.float64)) ** 2)
    return 10 * math.log10(1.0 / mse)


def test_fit_on_real_images_beats_noisy_input_and_resumes(tmp_path, bsds_train_dir, set12_dir):
    data = load_task_data("denoise", weights_data=bsds_train_dir, arch_data=bsds_train_dir, sigma=SIGMA)
    val = load_eval_items("denoise", set12_dir, 1)[:4]
    config = TrainConfig(iterations=200, batch_size=8, patch_size=32, validate_every=100,
                         jit_compile=False)
    out = tmp_path / "run"

    with pytest.raises(Interrupt):
        train_network(TINY, data, config, out, val_items=val, verbose=0,
                      callbacks=[InterruptAfterFirstValidation()])
    assert (out / "backup" / "latest.weights.h5").exists()
    assert (out / "best.weights.h5").exists() and (out / "last.weights.h5").exists()
    assert len(json.loads((out / "validation.json").read_text())) == 1
    assert not list(out.glob(".tmp-*")), "temporary files left behind"

    result = train_network(TINY, data, config, out, val_items=val, verbose=0)
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["resumed_from_step"] == 100
    assert [row["step"] for row in summary["history"]] == [100, 200]
    # The optimizer step came back with the weights: the cosine schedule ends at 0 at step 200
    # (a restart without optimizer state would stop half-way, at lr 0.005).
    assert summary["history"][-1]["learning_rate"] == pytest.approx(0.0, abs=1e-7)
    assert not (out / "backup").exists(), "BackupAndRestore deletes its backup when training finishes"

    # Independent check of the reported validation PSNR: reload model.keras, restore the same
    # deterministic noisy images, NumPy PSNR.
    model = keras.models.load_model(out / "model.keras")
    noise = GaussianNoise(SIGMA)
    restored_psnr, input_psnr = [], []
    for name, clean in val:
        noisy = noise.apply_eval(clean, name, 0)
        restored = np.clip(np.asarray(model.predict_on_batch(noisy[None]))[0], 0, 1)
        restored_psnr.append(numpy_psnr(restored, clean))
        input_psnr.append(numpy_psnr(noisy, clean))
    validation = summary["validation"]
    assert validation["best_psnr"] == pytest.approx(np.mean(restored_psnr), abs=1e-3)
    assert validation["input_psnr"] == pytest.approx(np.mean(input_psnr), abs=1e-3)
    assert validation["best_psnr"] > validation["input_psnr"] + 2.0, validation
    assert result.summary["validation"]["best_psnr"] == validation["best_psnr"]
    assert summary["genotype"] == "F / P / F"
    assert Genotype.load(out / "genotype.json").cells == TINY.cells


def test_stop_after_keeps_the_backup_and_a_later_run_finishes_the_schedule(tmp_path, bsds_train_dir, set12_dir):
    data = load_task_data("denoise", weights_data=bsds_train_dir, arch_data=bsds_train_dir, sigma=SIGMA)
    val = load_eval_items("denoise", set12_dir, 1)[:1]
    config = TrainConfig(iterations=30, batch_size=4, patch_size=32, validate_every=10, jit_compile=False,
                         stop_after=10)
    out = tmp_path / "run"
    first = train_network(TINY, data, config, out, val_items=val, verbose=0).summary
    assert first["iterations_done"] == 10 and first["finished"] is False
    assert json.loads((out / "backup" / "training_metadata.json").read_text())["epoch"] == 1
    # cosine decay from 0.01 to 0 over 30 steps, read after step 10 (NumPy reference)
    assert first["history"][-1]["learning_rate"] == pytest.approx(0.005 * (1 + np.cos(np.pi * 10 / 30)))

    second = train_network(TINY, data, dataclasses.replace(config, stop_after=20), out, val_items=val,
                           verbose=0).summary
    assert second["resumed_from_step"] == 10 and second["iterations_done"] == 20
    assert second["history"][-1]["learning_rate"] == pytest.approx(0.005 * (1 + np.cos(np.pi * 20 / 30)))

    last = train_network(TINY, data, dataclasses.replace(config, stop_after=None), out, val_items=val,
                         verbose=0).summary
    assert [row["step"] for row in last["history"]] == [10, 20, 30] and last["finished"] is True
    assert last["history"][-1]["learning_rate"] == pytest.approx(0.0, abs=1e-7)
    assert last["wall_seconds"] >= last["history"][1]["seconds"] > last["history"][0]["seconds"] > 0
    assert not (out / "backup").exists()


def test_time_limit_stops_at_the_last_validation_that_fits_and_keeps_the_backup(tmp_path, bsds_train_dir, set12_dir):
    data = load_task_data("denoise", weights_data=bsds_train_dir, arch_data=bsds_train_dir, sigma=SIGMA)
    val = load_eval_items("denoise", set12_dir, 1)[:1]
    config = TrainConfig(iterations=30, batch_size=4, patch_size=32, validate_every=10, jit_compile=False,
                         time_limit=1e-3)  # any first epoch outlasts it: one validation, then stop
    out = tmp_path / "run"
    summary = train_network(TINY, data, config, out, val_items=val, verbose=0).summary
    assert summary["iterations_done"] == 10 and summary["finished"] is False
    assert json.loads((out / "backup" / "training_metadata.json").read_text())["epoch"] == 1
    timing = json.loads((out / "timing.json").read_text())
    assert 0 < timing["first_step_s"] < process_seconds()  # the step ran inside this process
    # without a limit the same command finishes the schedule and removes the backup
    done = train_network(TINY, data, dataclasses.replace(config, time_limit=None), out, val_items=val,
                         verbose=0).summary
    assert done["iterations_done"] == 30 and done["finished"] is True and not (out / "backup").exists()


def test_time_limit_judges_the_next_epoch_by_the_last_one():
    import time

    model = keras.Sequential([keras.layers.Dense(1)])
    for epoch_s, stops in ((60.0, True), (30.0, False)):  # limit 100 s: next epoch ends near 120 / 60
        model.stop_training = False
        cb = TimeLimit(100.0, start=time.time() - epoch_s)
        cb.set_model(model)
        cb.on_epoch_end(0)
        assert model.stop_training is stops and cb.stopped is stops


def test_process_seconds_agrees_with_ps():
    import os
    import subprocess

    etimes = float(subprocess.run(["ps", "-o", "etimes=", "-p", str(os.getpid())], capture_output=True,
                                  text=True, check=True).stdout)
    assert abs(process_seconds() - etimes) < 2.0


def test_optimizer_is_adam_with_cosine_decay_and_global_clipping():
    config = TrainConfig(iterations=1000)
    optimizer = make_optimizer(config)
    assert isinstance(optimizer, keras.optimizers.Adam)
    assert optimizer.global_clipnorm == 5.0 and optimizer.clipnorm is None
    schedule = optimizer._learning_rate
    for step in (0, 250, 500, 1000):
        expected = 0.005 * (1 + math.cos(math.pi * step / 1000))  # 0.01 -> 0 (paper)
        assert float(schedule(step)) == pytest.approx(expected, abs=1e-7)
    # torch clip_grad_norm_ semantics: all gradients scaled together to global norm 5.
    grads = [np.full((3,), 4.0, np.float32), np.full((4,), 6.0, np.float32)]
    norm = math.sqrt(3 * 16 + 4 * 36)
    clipped = optimizer._clip_gradients([keras.ops.convert_to_tensor(g) for g in grads])
    for g, c in zip(grads, clipped):
        np.testing.assert_allclose(np.asarray(c), g * 5.0 / norm, rtol=1e-5)


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(iterations=1000, validate_every=300), "--iterations (1000) must be a multiple"),
        (dict(batch_size=0), "--batch-size must be a positive integer"),
        (dict(learning_rate_min=0.1), "learning rates"),
        (dict(iterations=1000, validate_every=100, stop_after=150), "--stop-after must be a multiple"),
        (dict(iterations=1000, validate_every=100, stop_after=2000), "--stop-after must be a multiple"),
        (dict(time_limit=0), "--time-limit must be > 0"),
        (dict(profile_batches=(5, 2)), "--profile must be FIRST,LAST"),
        (dict(profile_batches=(0, 2)), "--profile must be FIRST,LAST"),
    ],
)
def test_bad_train_config_is_rejected(changes, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_train_config(TrainConfig(**changes))


@pytest.mark.parametrize(
    "mutate, extra, expected",
    [
        (lambda d: d["cells"][0].__setitem__(0, "conv"), [], "'cells[0][0]'"),
        (lambda d: d.__setitem__("format_version", 7), [], "'format_version'"),
        (lambda d: d.__setitem__("columns", [2, 1, 1]), [], "'columns'"),
        (lambda d: None, ["--color"], "'image_channels'"),
        (lambda d: None, ["--iterations", "10", "--validate-every", "3"], "--iterations (10)"),
        (lambda d: None, ["--data", "/nonexistent/folder"], "/nonexistent/folder"),
        (lambda d: None, ["--sigma", "-5"], "--sigma"),
        (lambda d: None, ["--stop-after", "250"], "--stop-after must be a multiple"),
    ],
)
def test_cli_rejects_bad_input_in_one_line_before_training(tmp_path, run_cli, mutate, extra, expected):
    data = json.loads(json.dumps(TINY.to_dict()))  # a deep copy
    mutate(data)
    path = tmp_path / "genotype.json"
    path.write_text(json.dumps(data))
    out = tmp_path / "out"
    code, line = run_cli("train", ["--genotype", str(path), "--preset", "quick", "--out", str(out), *extra])
    assert code == 2
    assert line.startswith("train.py: error: ") and expected in line, line
    assert not out.exists(), "nothing may be written on bad input"
