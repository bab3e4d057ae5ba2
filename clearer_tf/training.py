"""Training the network found by the search: `model.fit` with the paper's recipe.

Recipe (paper Sec. 4 / authors' code): MSE, Adam, learning rate cosine-decayed from
`learning_rate` to `learning_rate_min` over all iterations, gradients clipped to a
global norm of `grad_clip` (as `torch.nn.utils.clip_grad_norm_`; Keras'
`global_clipnorm`, not the per-variable `clipnorm`), random patches with rotation/flip.

Model selection: every `validate_every` steps (one Keras "epoch") the whole validation
images are restored (reflect-padded to a multiple of 2**cells, `with_padding`) and their
mean PSNR decides the best checkpoint. The validation images are not the test set.

Files in `out_dir`: `best.weights.h5`, `last.weights.h5` (written atomically),
`backup/` (`keras.callbacks.BackupAndRestore`: a killed run resumes where the last
validation left it; deleted when training finishes, kept by a run that stops early at
`stop_after` so that the next run continues the same schedule), `tensorboard/`, `validation.json`
(one row per validation), `genotype.json`, and at the end `model.keras` (the network
with the best weights) and `train_summary.json`.

Runs on the TensorFlow and JAX backends (tf.data feeds both).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
import warnings
from dataclasses import dataclass

import keras
import numpy as np

from clearer_tf import device, files
from clearer_tf.evaluation import degrade_items, keras_predictor
from clearer_tf.genotype import Genotype
from clearer_tf.metrics import PSNRMetric, psnr
from clearer_tf.network import build_network
from clearer_tf.presets import TrainConfig, resolve_jit

VALIDATION_PROTOCOL = (
    "whole images, degraded once with a fixed seed (deterministic noise), reflect-padded "
    "to a multiple of 2**cells and cropped back, restored output clipped to [0, 1], "
    "PSNR with data range 1 on all channels, mean over images"
)


def check_train_config(config: TrainConfig) -> None:
    """Raises ValueError (naming the command-line flag) for an unusable TrainConfig."""
    positive = {
        "iterations": "--iterations",
        "batch_size": "--batch-size",
        "patch_size": "--patch-size",
        "validate_every": "--validate-every",
    }
    for field, flag in positive.items():
        value = getattr(config, field)
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{flag} must be a positive integer, got {value!r}")
    if config.iterations % config.validate_every:
        raise ValueError(
            f"--iterations ({config.iterations}) must be a multiple of --validate-every "
            f"({config.validate_every}): one Keras epoch is one validation period"
        )
    if config.stop_after is not None and (
        not isinstance(config.stop_after, int) or not 0 < config.stop_after <= config.iterations
        or config.stop_after % config.validate_every
    ):
        raise ValueError(
            f"--stop-after must be a multiple of --validate-every ({config.validate_every}) "
            f"between 1 and --iterations ({config.iterations}), got {config.stop_after!r}"
        )
    if config.time_limit is not None and not config.time_limit > 0:
        raise ValueError(f"--time-limit must be > 0 seconds, got {config.time_limit!r}")
    if config.profile_batches is not None and not (
        len(config.profile_batches) == 2 and 0 < config.profile_batches[0] <= config.profile_batches[1]
    ):
        raise ValueError(f"--profile must be FIRST,LAST batches with 0 < FIRST <= LAST, got {config.profile_batches!r}")
    if not config.learning_rate > 0 or not 0 <= config.learning_rate_min <= config.learning_rate:
        raise ValueError(
            f"learning rates must satisfy 0 <= min ({config.learning_rate_min}) <= "
            f"initial ({config.learning_rate}), initial > 0"
        )
    if not config.grad_clip > 0:
        raise ValueError(f"grad_clip must be > 0, got {config.grad_clip}")


def make_optimizer(config: TrainConfig) -> keras.optimizers.Optimizer:
    """Adam, cosine decay `learning_rate` -> `learning_rate_min` over `iterations` steps,
    global-norm gradient clipping at `grad_clip`."""
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=config.learning_rate,
        decay_steps=config.iterations,
        alpha=config.learning_rate_min / config.learning_rate,
    )
    return keras.optimizers.Adam(learning_rate=schedule, global_clipnorm=config.grad_clip)


def compile_network(model, config: TrainConfig):
    """`model.compile` with MSE, `make_optimizer(config)`, PSNR metric and XLA."""
    model.compile(
        optimizer=make_optimizer(config),
        loss="mean_squared_error",
        metrics=[PSNRMetric()],
        jit_compile=resolve_jit(config.jit_compile),
    )
    return model


class ValidationPSNR(keras.callbacks.Callback):
    """Adds `val_psnr` (and `val_input_psnr`) to the epoch logs: whole-image PSNR.

    Args:
        items: `(name, clean)` or `(name, degraded, clean)` float32 HWC images in [0, 1].
        degradation: applied with `apply_eval(clean, name, seed)` to clean-only items.
        seed: seed of the deterministic degradation.
        multiple: padding multiple (default: 2**cells of the model).

    Example:
    >>> cb = ValidationPSNR(load_eval_items("denoise", "data/samples/set12", 1), GaussianNoise(50))
    >>> model.fit(stream, steps_per_epoch=100, epochs=5, callbacks=[cb])
    """

    def __init__(self, items, degradation=None, seed=0, multiple=None):
        super().__init__()
        self.items = degrade_items(items, degradation, seed)
        self.multiple = multiple
        self.input_psnr = float(np.mean([psnr(d[None], c[None])[0] for _, d, c in self.items]))
        self._predict = None

    def restore(self, degraded):
        if self._predict is None:
            self._predict = keras_predictor(self.model, self.multiple)
        return np.clip(self._predict(degraded[None])[0], 0.0, 1.0)

    def evaluate(self):
        return float(np.mean([psnr(self.restore(d)[None], c[None])[0] for _, d, c in self.items]))

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        logs["val_psnr"] = self.evaluate()
        logs["val_input_psnr"] = self.input_psnr


class CheckpointAndLog(keras.callbacks.Callback):
    """After each validation: last weights, best weights (by `val_psnr`), `validation.json`.

    All three are written atomically. `rows` are earlier validations (a resumed run);
    each row's `seconds` is the wall time of training so far, earlier runs included.
    """

    def __init__(self, out_dir, steps_per_epoch, rows=()):
        super().__init__()
        self.out_dir = os.fspath(out_dir)
        self.steps_per_epoch = steps_per_epoch
        self.rows = list(rows)
        self.best = max((r["val_psnr"] for r in self.rows), default=-np.inf)
        self.earlier_seconds = float(self.rows[-1].get("seconds", 0.0)) if self.rows else 0.0
        self.start = time.time()

    def on_train_begin(self, logs=None):
        self.start = time.time()

    @property
    def seconds(self):
        return self.earlier_seconds + time.time() - self.start

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        row = {"epoch": epoch, "step": (epoch + 1) * self.steps_per_epoch,
               "seconds": round(self.seconds, 1)}
        row.update({k: float(v) for k, v in logs.items() if np.ndim(v) == 0})
        row["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        files.save_weights(self.model, os.path.join(self.out_dir, "last.weights.h5"))
        if row.get("val_psnr", -np.inf) > self.best:
            self.best = row["val_psnr"]
            files.save_weights(self.model, os.path.join(self.out_dir, "best.weights.h5"))
            row["best"] = True
        self.rows.append(row)
        files.write_json(os.path.join(self.out_dir, "validation.json"), self.rows)


def process_seconds() -> float:
    """Seconds since this process started (Linux `/proc`; else since this module loaded)."""
    try:
        with open("/proc/self/stat", encoding="ascii") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat", encoding="ascii") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime"))
        return time.time() - (boot + start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, StopIteration):
        return time.time() - _LOADED


_LOADED = time.time()


class StepClock(keras.callbacks.Callback):
    """Time to the first executed step and the steady step time, written to `path` (JSON).

    `first_step_s`: process start to the end of the first step of this run (imports, data,
    compilation included). `step_ms`: mean over `window` steps after `skip` more, in the first
    epoch of this run. Runs on Keras' asynchronous callback thread (the logs it receives are
    already fetched, so the clock reads when each step has finished).
    """

    async_safe = True

    def __init__(self, path, skip=50, window=1000):
        super().__init__()
        self.path, self.skip, self.window = path, skip, window
        self.timing, self._marks, self._epochs = {}, {}, 0

    def on_train_batch_end(self, batch, logs=None):
        if self._epochs or batch not in (0, self.skip, self.skip + self.window):
            return
        self._marks[batch] = time.perf_counter()
        if batch == 0:
            self.timing["first_step_s"] = round(process_seconds(), 2)
        elif batch == self.skip + self.window:
            self.timing["step_ms"] = round(1e3 * (self._marks[batch] - self._marks[self.skip]) / self.window, 3)
            self.timing["step_ms_window"] = self.window

    def on_epoch_end(self, epoch, logs=None):
        if not self._epochs and self.timing:
            self.timing["device"] = device.describe()
            files.write_json(self.path, self.timing)
        self._epochs += 1


class TimeLimit(keras.callbacks.Callback):
    """Stops after the last epoch (validation period) that ends within `seconds` of `start`,
    judging the next epoch's length by the one just ended (the first, which compiles, is the
    longest, so the estimate errs on the safe side only there)."""

    def __init__(self, seconds, start=None):
        super().__init__()
        self.seconds, self.start = seconds, time.time() if start is None else start
        self._last = self.start
        self.stopped = False

    def on_epoch_end(self, epoch, logs=None):
        now = time.time()
        length, self._last = now - self._last, now
        if now + length - self.start > self.seconds:
            self.model.stop_training = self.stopped = True


@dataclass
class TrainResult:
    """`model`: the network with the best weights; `summary`: what `train_summary.json` holds."""

    model: keras.Model
    summary: dict


def _tensorboard(log_dir, profile_batch=0):
    """The TensorBoard callback, or none (with a warning) if `tensorboard` is not installed."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        warnings.warn("tensorboard is not installed: no TensorBoard logs (pip install tensorboard)")
        return []
    return [keras.callbacks.TensorBoard(log_dir, write_graph=False, profile_batch=profile_batch)]


def _backup_epoch(backup_dir) -> int:
    path = os.path.join(backup_dir, "training_metadata.json")
    if not os.path.exists(path):
        return 0
    with open(path, encoding="utf-8") as f:
        return int(json.load(f)["epoch"])


def _earlier_rows(out_dir, initial_epoch):
    path = os.path.join(out_dir, "validation.json")
    if not initial_epoch or not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [r for r in json.load(f) if r["epoch"] < initial_epoch]


def train_network(genotype, task_data, train_config: TrainConfig, out_dir, val_items=None,
                  resume=True, verbose=1, callbacks=()) -> TrainResult:
    """Trains `build_network(genotype)` from scratch with `model.fit` and selects on validation.

    Args:
        genotype: a `Genotype`, its dict or a `genotype.json` path.
        task_data: `pipelines.tasks.TaskData`; training patches come from its
            `weights_items`, degraded by its `degradation` (clean-only items).
        train_config: `TrainConfig` (iterations, batch/patch size, learning rates,
            clipping, `validate_every`, seed, jit_compile).
        out_dir: output folder (see the module docstring for its files).
        val_items: validation images, `(name, clean)` or `(name, degraded, clean)`;
            default `task_data.arch_items` (images held out from training).
        resume: continue from `out_dir/backup` if present; False starts afresh.
        verbose: `model.fit` verbosity (1: progress bar).
        callbacks: extra Keras callbacks.

    Returns:
        `TrainResult(model, summary)`; the model holds the best validation weights.

    Example:
    >>> data = load_task_data("denoise", weights_data="data/samples/bsds/train",
    ...                       arch_data="data/samples/bsds/train", sigma=50)
    >>> val = load_eval_items("denoise", "data/samples/set12", 1)
    >>> result = train_network("genotype.json", data, quick().train, "runs/train", val)
    """
    from pipelines.streams import training_stream  # tf.data; imported late to keep import light
    from pipelines.noise import name_seed

    check_train_config(train_config)
    genotype = Genotype.coerce(genotype)
    if genotype.image_channels != task_data.channels:
        raise ValueError(
            f"genotype field 'image_channels' is {genotype.image_channels} but the "
            f"{task_data.task} data has {task_data.channels} channel(s)"
        )
    if val_items is None:
        val_items = task_data.arch_items
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    backup_dir = os.path.join(out_dir, "backup")
    if not resume:
        shutil.rmtree(backup_dir, ignore_errors=True)
    initial_epoch = _backup_epoch(backup_dir)
    config = train_config
    epochs = (config.stop_after or config.iterations) // config.validate_every
    started = time.time()

    keras.utils.set_random_seed(config.seed)
    model = compile_network(build_network(genotype), config)
    model.optimizer.build(model.trainable_variables)  # no variable creation inside the first trace
    # A resumed run draws fresh patches instead of replaying the first epochs' batches.
    stream_seed = config.seed if not initial_epoch else name_seed("resume", config.seed, initial_epoch) % 2**62
    stream = training_stream(task_data.weights_items, task_data.degradation, config.patch_size,
                             config.batch_size, seed=stream_seed, augment=True)
    validation = ValidationPSNR(val_items, task_data.degradation, seed=0)
    checkpoint = CheckpointAndLog(out_dir, config.validate_every, _earlier_rows(out_dir, initial_epoch))
    genotype.save(os.path.join(out_dir, "genotype.json"))

    start = time.time()
    model.fit(
        stream,
        steps_per_epoch=config.validate_every,
        epochs=epochs,
        shuffle=False,  # the stream shuffles itself (seeded)
        callbacks=[
            validation,  # first: later callbacks see val_psnr in the logs
            checkpoint,
            # kept when stopping early (`stop_after`, `time_limit`): the next run continues from
            # it; removed below once the whole schedule is done
            keras.callbacks.BackupAndRestore(backup_dir, delete_checkpoint=False),
            *_tensorboard(os.path.join(out_dir, "tensorboard"), config.profile_batches or 0),
            StepClock(os.path.join(out_dir, "timing.json")),
            *([TimeLimit(config.time_limit, started)] if config.time_limit else []),
            *callbacks,
        ],
        verbose=verbose,
    )
    seconds = time.time() - start
    rows = checkpoint.rows
    finishes = bool(rows) and rows[-1]["step"] == config.iterations
    if finishes:
        shutil.rmtree(backup_dir, ignore_errors=True)

    best_path = os.path.join(out_dir, "best.weights.h5")
    if os.path.exists(best_path):
        model.load_weights(best_path)
    files.save_model(model, os.path.join(out_dir, "model.keras"))
    best = max(rows, key=lambda r: r.get("val_psnr", -np.inf)) if rows else None
    summary = {
        "genotype": genotype.short(),
        "genotype_file": "genotype.json",
        "parameters": int(sum(np.prod(v.shape) for v in model.trainable_variables)),
        "train_config": dataclasses.asdict(config),
        "data": task_data.description,
        "train_images": [item[0] for item in task_data.weights_items],
        "validation": {
            "images": [item[0] for item in validation.items],
            "protocol": VALIDATION_PROTOCOL,
            "degradation_seed": 0,
            "input_psnr": validation.input_psnr,
            "best_psnr": None if best is None else best["val_psnr"],
            "best_step": None if best is None else best["step"],
            "last_psnr": rows[-1]["val_psnr"] if rows else None,
        },
        "history": rows,
        "resumed_from_step": initial_epoch * config.validate_every,
        "seconds_this_run": round(seconds, 1),
        "wall_seconds": round(checkpoint.seconds, 1),
        "iterations_done": rows[-1]["step"] if rows else 0,
        "finished": finishes,  # False: stopped early (`stop_after`, `time_limit`), `backup/` continues
        "backend": keras.backend.backend(),
        "device": device.describe(),
        "files": {
            "model": "model.keras (best validation weights)",
            "best_weights": "best.weights.h5",
            "last_weights": "last.weights.h5",
            "tensorboard": "tensorboard/",
            "validation_log": "validation.json",
        },
    }
    files.write_json(os.path.join(out_dir, "train_summary.json"), summary)
    return TrainResult(model, summary)
