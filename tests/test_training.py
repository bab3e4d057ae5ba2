"""Training a genotype's network with `model.fit` on real images; resume; the CLI's errors."""

import dataclasses
import json
import math

import keras
import numpy as np
import pytest

from clearer_tf.genotype import Genotype
from clearer_tf.presets import TrainConfig
from clearer_tf.callbacks import TimeLimit, process_seconds
from clearer_tf.training import check_train_config, make_optimizer, train_network
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
    assert len(list((out / "backup").glob("state-*.weights.h5"))) == 1
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
    assert not (out / "backup").exists(), "the backup is deleted when training finishes"
    assert json.loads((out / "run.json").read_text())["finished"] is True

    # Independent check of the reported validation PSNR: reload model.keras, restore the same
    # deterministic noisy images, NumPy PSNR.
    model = keras.models.load_model(out / "model.keras")
    from clearer_tf.files import keras_metadata  # the noise level travels with a copied model.keras

    assert keras_metadata(out / "model.keras")["training"]["data"]["degradation"]["sigma"] == SIGMA
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


def test_time_limit_stops_at_any_step_validates_and_keeps_the_last_whole_epochs_backup(
        tmp_path, bsds_train_dir, set12_dir):
    data = load_task_data("denoise", weights_data=bsds_train_dir, arch_data=bsds_train_dir, sigma=SIGMA)
    val = load_eval_items("denoise", set12_dir, 1)[:1]
    config = TrainConfig(iterations=15, batch_size=2, patch_size=16, validate_every=5, jit_compile=False)
    out = tmp_path / "run"
    # a first run that stops by itself at step 5 (a whole epoch, backed up)
    train_network(TINY, data, dataclasses.replace(config, stop_after=5), out, val_items=val, verbose=0)
    assert json.loads((out / "backup" / "training_metadata.json").read_text())["epoch"] == 1
    # a limit that every step outlasts: the first step of the run (compiling) does not count, the
    # second gives the step time, and the third, the first that can be refused, is the last: the
    # run stops inside the epoch at step 8
    summary = train_network(TINY, data, dataclasses.replace(config, time_limit=1e-3), out, val_items=val,
                            verbose=0).summary
    assert summary["iterations_done"] == 8 and summary["finished"] is False
    assert summary["history"][-1]["step"] == 8 and "val_psnr" in summary["history"][-1]
    assert json.loads((out / "backup" / "training_metadata.json").read_text())["epoch"] == 1  # not the cut epoch
    timing = json.loads((out / "timing.json").read_text())
    assert 0 < timing["first_step_s"] < process_seconds()  # the step ran inside this process
    # without a limit the same command redoes the cut epoch from the backup and finishes
    done = train_network(TINY, data, dataclasses.replace(config, time_limit=None), out, val_items=val,
                         verbose=0).summary
    assert done["resumed_from_step"] == 5 and [r["step"] for r in done["history"]] == [5, 10, 15]
    assert done["iterations_done"] == 15 and done["finished"] is True and not (out / "backup").exists()


@pytest.mark.parametrize("run_ahead", [False, True])
def test_time_limit_leaves_the_first_step_out_and_counts_the_queued_steps(monkeypatch, run_ahead):
    """The first step ends at 60 s (compiling), then a step takes 5 s; limit 100 s: step 8,
    ending at 100 s, is the last. With asynchronous dispatch the main thread begins steps long
    before they finish; the steps still queued count, and the decision is the same."""
    from clearer_tf import callbacks as cb_module

    model = keras.Sequential([keras.layers.Dense(1)])
    now = [1000.0]
    monkeypatch.setattr(cb_module.time, "time", lambda: now[0])
    cb = TimeLimit(100.0, start=1000.0)
    cb.set_model(model)
    cb.set_params({"steps": 50})
    model.stop_training = False
    ends = {0: 1060.0, **{b: 1060.0 + 5.0 * b for b in range(1, 50)}}
    finished = 0
    for batch in range(50):
        cb.on_train_batch_begin(batch)
        if model.stop_training:
            last = batch
            break
        # synchronous: this step finishes now; ahead: only the steps up to batch - 6 have finished
        while finished <= (batch - 6 if run_ahead else batch):
            now[0] = ends[finished]
            cb.on_train_batch_end(finished)
            finished += 1
    assert last == 8 and cb.stopped and cb.partial  # inside the 50-step epoch


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


# --- resume done right: SIGKILL, run-folder guard, warm start --------------------------------
def run_helper(out, *flags, killed=False):
    import os
    import subprocess
    import sys

    import run_helpers

    repo = os.path.dirname(os.path.dirname(os.path.abspath(run_helpers.__file__)))
    proc = subprocess.run([sys.executable, run_helpers.__file__, "train", str(out), *flags], capture_output=True,
                          text=True, cwd=repo, timeout=600)
    assert proc.returncode == (-9 if killed else 0), proc.stderr[-3000:]


def h5_values(path):
    import h5py

    values = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: values.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return values


def without_seconds(rows):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


def test_training_killed_in_a_backup_write_or_between_backups_ends_bit_identical(tmp_path):
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    run_helper(reference)
    run_helper(killed, "--die-in-backup", "3", killed=True)  # half-way through the 3rd backup (step 15)
    assert [p.name for p in (killed / "backup").iterdir() if p.name.startswith(".tmp-")]
    assert json.loads((killed / "backup" / "training_metadata.json").read_text())["epoch"] == 2
    run_helper(killed, "--die-at", "22", killed=True)  # resumed at step 10, killed again mid-epoch after 20
    run_helper(killed)
    assert not (killed / "backup").exists() and not list(killed.glob(".tmp-*"))
    for name in ("last.weights.h5", "best.weights.h5"):
        a, b = h5_values(reference / name), h5_values(killed / name)
        assert a.keys() == b.keys() and a
        for key in a:
            np.testing.assert_array_equal(b[key], a[key], err_msg=f"{name}: {key}")
    assert without_seconds(json.loads((killed / "validation.json").read_text())) == \
        without_seconds(json.loads((reference / "validation.json").read_text()))
    summary = json.loads((killed / "train_summary.json").read_text())
    assert summary["resumed_from_step"] == 20 and summary["finished"] is True


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, bsds_train_dir, set12_dir):
    data = load_task_data("denoise", weights_data=bsds_train_dir, arch_data=bsds_train_dir, sigma=SIGMA)
    val = load_eval_items("denoise", set12_dir, 1)[:1]
    config = TrainConfig(iterations=10, batch_size=2, patch_size=16, validate_every=5, jit_compile=False)
    out = tmp_path_factory.mktemp("train") / "run"
    train_network(TINY, data, config, out, val_items=val, verbose=0)
    return {"data": data, "val": val, "config": config, "out": out}


def listing(folder):
    import os

    return sorted((os.path.relpath(os.path.join(d, f), folder), os.path.getmtime(os.path.join(d, f)))
                  for d, _, fs in os.walk(folder) for f in fs)


def test_a_finished_training_is_refused_unless_overwrite(small_run):
    out, before = small_run["out"], listing(small_run["out"])
    with pytest.raises(ValueError, match="holds a finished training: pass --overwrite"):
        train_network(TINY, small_run["data"], small_run["config"], out, val_items=small_run["val"], verbose=0)
    assert listing(out) == before  # best weights and all untouched
    summary = train_network(TINY, small_run["data"], small_run["config"], out, val_items=small_run["val"],
                            verbose=0, overwrite=True).summary
    assert summary["finished"] and summary["resumed_from_step"] == 0


def test_another_configuration_is_refused_with_the_differences_before_anything_is_written(tmp_path, small_run):
    out = tmp_path / "run"
    config = dataclasses.replace(small_run["config"], stop_after=5)
    train_network(TINY, small_run["data"], config, out, val_items=small_run["val"], verbose=0)
    before = listing(out)
    noisier = load_task_data("denoise", weights_data=small_run["data"].description["weights_data"],
                             arch_data=small_run["data"].description["arch_data"], sigma=25.0)
    other = Genotype.from_string("P / P / F", base_width=4, stem_planes=4, stem_blocks=1)
    cases = [
        (TINY, noisier, config, r"data\.degradation\.sigma is 50\.0 in the run, 25\.0 now"),
        (TINY, small_run["data"], dataclasses.replace(config, iterations=20),
         r"train\.iterations is 10 in the run, 20 now"),
        (other, small_run["data"], config, r"genotype\.cells differs"),
    ]
    for genotype, data, changed, message in cases:
        with pytest.raises(ValueError, match=r"different configuration: .*" + message):
            train_network(genotype, data, changed, out, val_items=small_run["val"], verbose=0)
    assert listing(out) == before  # genotype.json, validation.json, backup: nothing written
    # runtime-only fields (stop_after, time_limit, profiling, XLA) may change: it continues
    done = train_network(TINY, small_run["data"], dataclasses.replace(config, stop_after=None), out,
                         val_items=small_run["val"], verbose=0).summary
    assert done["resumed_from_step"] == 5 and done["finished"]


def test_stray_temporary_files_of_a_kill_are_removed(tmp_path, small_run):
    out = tmp_path / "run"
    config = dataclasses.replace(small_run["config"], stop_after=5)
    train_network(TINY, small_run["data"], config, out, val_items=small_run["val"], verbose=0)
    for stray in (out / ".tmp-abc.json", out / "backup" / ".tmp-xyz.weights.h5",
                  out / "backup" / "state-000009.weights.h5"):
        stray.write_bytes(b"half a file")
    train_network(TINY, small_run["data"], dataclasses.replace(config, stop_after=None), out,
                  val_items=small_run["val"], verbose=0)
    assert not list(out.rglob(".tmp-*")) and not (out / "backup").exists()


def test_warm_start_from_weights_continues_the_schedule_with_a_ramp(tmp_path, small_run):
    import math

    source = small_run["out"] / "last.weights.h5"
    config = TrainConfig(iterations=40, batch_size=2, patch_size=16, validate_every=5, jit_compile=False,
                         init_weights=str(source), init_step=20, rewarmup=8)

    class Capture(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.start_weights = [np.array(v.numpy()) for v in self.model.weights]
            self.start_iteration = int(self.model.optimizer.iterations.numpy())
            self.lr = {}

        def on_epoch_end(self, epoch, logs=None):
            step = int(self.model.optimizer.iterations.numpy())
            for s in (step - 4, step - 2, step):  # the schedule the optimizer applies, at a few steps
                self.lr[s] = float(self.model.optimizer._learning_rate(s))

    capture = Capture()
    summary = train_network(TINY, small_run["data"], config, tmp_path / "run", val_items=small_run["val"],
                            verbose=0, callbacks=[capture]).summary
    # the network's weights are the file's (its optimizer state, also in the file, is not used)
    layers = [v for k, v in sorted(h5_values(source).items()) if k.startswith("layers/")]
    assert sorted(map(np.ndarray.tobytes, layers)) == sorted(map(np.ndarray.tobytes, capture.start_weights))
    assert capture.start_iteration == 20
    assert [row["step"] for row in summary["history"]] == [25, 30, 35, 40]
    for step, lr in capture.lr.items():
        cosine = 0.005 * (1 + math.cos(math.pi * step / 40))  # 0.01 -> 0 over 40 iterations
        assert lr == pytest.approx(cosine * min(1.0, (step - 20) / 8), abs=1e-7), step
    assert summary["history"][0]["learning_rate"] == pytest.approx(
        0.005 * (1 + math.cos(math.pi * 25 / 40)) * 5 / 8, abs=1e-7)
    assert summary["warm_start"] == {"weights": str(source), "step": 20, "rewarmup": 8}
    assert summary["train_config"]["init_step"] == 20
    rows = json.loads((tmp_path / "run" / "validation.json").read_text())
    assert rows[0]["step"] == 25 and rows[0]["epoch"] == 4


def test_warm_start_between_two_validations_shifts_them_and_ends_on_the_schedule(tmp_path, small_run):
    """A lease stops at any step; the next one starts there: validations every 5 steps after
    step 22, the last one cut short at the end of the 40-step schedule."""
    source = small_run["out"] / "last.weights.h5"
    config = TrainConfig(iterations=40, batch_size=2, patch_size=16, validate_every=5, jit_compile=False,
                         init_weights=str(source), init_step=22, rewarmup=4)
    summary = train_network(TINY, small_run["data"], config, tmp_path / "run", val_items=small_run["val"],
                            verbose=0).summary
    assert [row["step"] for row in summary["history"]] == [27, 32, 37, 40]
    assert summary["finished"] is True and summary["iterations_done"] == 40
    assert summary["history"][-1]["learning_rate"] == pytest.approx(0.0, abs=1e-7)


def test_warm_start_checks():
    with pytest.raises(ValueError, match="--init-step needs --init-weights"):
        check_train_config(TrainConfig(init_step=1000))
    with pytest.raises(ValueError, match="--init-step must be an integer between 0 and --iterations"):
        check_train_config(TrainConfig(init_weights=__file__, init_step=100_000))
    check_train_config(TrainConfig(init_weights=__file__, init_step=1500))  # any step: a lease stops anywhere
    with pytest.raises(ValueError, match="file not found"):
        check_train_config(TrainConfig(init_weights="/nonexistent.weights.h5"))
