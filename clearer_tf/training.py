"""Training the network found by the search: `model.fit` with the paper's recipe.

Recipe (paper Sec. 4 / authors' code): MSE, Adam, learning rate cosine-decayed from
`learning_rate` to `learning_rate_min` over all iterations, gradients clipped to a
global norm of `grad_clip` (as `torch.nn.utils.clip_grad_norm_`; Keras'
`global_clipnorm`, not the per-variable `clipnorm`), random patches with rotation/flip.

Model selection: every `validate_every` steps (one Keras "epoch") the whole validation
images are restored (reflect-padded to a multiple of 2**cells, `with_padding`) and their
mean PSNR decides the best checkpoint. The validation images are not the test set.

Files in `out_dir`: `run.json` (the configuration; finished or not: a different
configuration, or a finished run without `overwrite`, is refused before anything is written),
`best.weights.h5`, `last.weights.h5` (written atomically), `backup/` (`callbacks.Backup`: a killed
run resumes at its last validation and ends exactly as an uninterrupted one; deleted when
training finishes, kept by a run that stops early at `stop_after` or `time_limit` so that the
next run continues the same schedule), `tensorboard/`, `timing.json` (time to the first step,
steady step time), `validation.json` (one row per validation), `genotype.json`, and at the end
`model.keras` (the network with the best weights) and `train_summary.json`.

Warm start (`init_weights`, `init_step`, `rewarmup`): the network's weights from a file (no
optimizer state), the schedule entered at iteration `init_step` with the learning rate ramped
from 0 over `rewarmup` iterations (`schedules.Rewarmup`).

Runs on the TensorFlow and JAX backends (tf.data feeds both).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from dataclasses import dataclass

import keras
import numpy as np

from clearer_tf import device, files, losses
from clearer_tf.callbacks import (Backup, RunRecord, StepClock, StopAtStep, TensorBoard, TimeLimit, WallClock, barrier,
                                  is_first_process, jsonable, process_seconds, read_backup, save_model, save_weights)
from clearer_tf.evaluation import degrade_items, keras_predictor
from clearer_tf.genotype import Genotype
from clearer_tf.metrics import PSNRMetric, psnr
from clearer_tf.network import build_network
from clearer_tf.presets import TrainConfig, resolve_jit
from clearer_tf.schedules import Rewarmup

RUNTIME_FIELDS = ("stop_after", "time_limit", "profile_batches", "jit_compile", "init_weights")
"""TrainConfig fields that may differ when a run is continued (`init_weights`: where the file lies)."""
DATA_PATH_FIELDS = ("data", "weights_data", "arch_data", "train_data", "val_data")
__all__ = ["CheckpointAndLog", "StepClock", "TimeLimit", "TrainResult", "ValidationPSNR", "check_train_config",
           "compile_network", "make_optimizer", "process_seconds", "train_network"]

VALIDATION_PROTOCOL = (
    "whole images, degraded once with a fixed seed (deterministic noise), reflect-padded "
    "to a multiple of 2**cells and cropped back, restored output clipped to [0, 1], "
    "PSNR with data range 1 on all channels, mean over images"
)


def check_train_config(config: TrainConfig) -> None:
    """Raises ValueError (naming the command-line flag) for an unusable TrainConfig."""
    losses.parse_loss_spec(config.loss)
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
    offset = config.init_step % config.validate_every if isinstance(config.init_step, int) else 0
    if config.stop_after is not None and (
        not isinstance(config.stop_after, int) or not 0 < config.stop_after <= config.iterations
        or (config.stop_after != config.iterations and (config.stop_after - offset) % config.validate_every)
    ):
        raise ValueError(
            f"--stop-after must be a multiple of --validate-every ({config.validate_every})"
            f"{f' after --init-step {config.init_step}' if offset else ''} "
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
    if config.init_weights is None and config.init_step:
        raise ValueError("--init-step needs --init-weights")
    if not isinstance(config.init_step, int) or not 0 <= config.init_step < config.iterations:
        raise ValueError(
            f"--init-step must be an integer between 0 and --iterations ({config.iterations}), "
            f"got {config.init_step!r}"
        )
    if config.stop_after is not None and config.stop_after <= config.init_step:
        raise ValueError(f"--stop-after ({config.stop_after}) must be after --init-step ({config.init_step})")
    if not isinstance(config.rewarmup, int) or config.rewarmup < 0:
        raise ValueError(f"--rewarmup must be an integer >= 0, got {config.rewarmup!r}")
    if config.init_weights is not None and not os.path.isfile(config.init_weights):
        raise ValueError(f"--init-weights {config.init_weights}: file not found")


def make_optimizer(config: TrainConfig) -> keras.optimizers.Optimizer:
    """Adam, cosine decay `learning_rate` -> `learning_rate_min` over `iterations` steps,
    global-norm gradient clipping at `grad_clip`; a warm start (`init_weights`) ramps the
    learning rate up again over `rewarmup` steps after `init_step`."""
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=config.learning_rate,
        decay_steps=config.iterations,
        alpha=config.learning_rate_min / config.learning_rate,
    )
    if config.init_weights is not None and config.rewarmup:
        schedule = Rewarmup(schedule, config.init_step, config.rewarmup)
    return keras.optimizers.Adam(learning_rate=schedule, global_clipnorm=config.grad_clip)


def compile_network(model, config: TrainConfig):
    """`model.compile` with the loss (MSE, the paper's, unless `config.loss` says otherwise),
    `make_optimizer(config)`, PSNR metric and XLA."""
    model.compile(
        optimizer=make_optimizer(config),
        loss="mean_squared_error" if config.loss == "mse" else losses.RestorationLoss(config.loss),
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
            self._predict = keras_predictor(self._local or self.model, self.multiple)
        return np.clip(self._predict(degraded[None])[0], 0.0, 1.0)

    _local = None

    def evaluate(self):
        distribution = keras.distribution.distribution() if keras.backend.backend() == "jax" else None
        if distribution is not None:
            # One image does not split over the devices: restore it with a local copy of the
            # network (every process computes the same PSNR).
            if self._local is None:
                keras.distribution.set_distribution(None)
                try:
                    self._local = keras.models.clone_model(self.model)
                finally:
                    keras.distribution.set_distribution(distribution)
            self._local.set_weights([np.asarray(w) for w in self.model.get_weights()])
        return float(np.mean([psnr(self.restore(d)[None], c[None])[0] for _, d, c in self.items]))

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        logs["val_psnr"] = self.evaluate()
        logs["val_input_psnr"] = self.input_psnr


class CheckpointAndLog(keras.callbacks.Callback):
    """After each validation: last weights, best weights (by `val_psnr`), `validation.json`.

    All three are written atomically. `rows` are earlier validations (a resumed run); each
    row's `seconds` is the wall time of training so far (`clock`, earlier runs included).
    """

    def __init__(self, out_dir, rows=(), clock=None, write=True):
        super().__init__()
        self.out_dir, self.write = os.fspath(out_dir), write
        self.rows = list(rows)
        self.best = max((r["val_psnr"] for r in self.rows), default=-np.inf)
        self.clock = clock or WallClock(float(self.rows[-1].get("seconds", 0.0)) if self.rows else 0.0)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        row = {"epoch": epoch, "step": optimizer_step(self.model),
               "seconds": round(self.clock.seconds, 1)}
        row.update({k: float(v) for k, v in logs.items() if np.ndim(v) == 0})
        row["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        save_weights(self.model, os.path.join(self.out_dir, "last.weights.h5"), self.write)
        if row.get("val_psnr", -np.inf) > self.best:
            self.best = row["val_psnr"]
            save_weights(self.model, os.path.join(self.out_dir, "best.weights.h5"), self.write)
            row["best"] = True
        self.rows.append(row)
        if self.write:  # not on the other processes of a multi-process run
            files.write_json(os.path.join(self.out_dir, "validation.json"), self.rows)


@dataclass
class TrainResult:
    """`model`: the network with the best weights; `summary`: what `train_summary.json` holds."""

    model: keras.Model
    summary: dict


def _earlier_rows(out_dir, initial_epoch):
    path = os.path.join(out_dir, "validation.json")
    if not initial_epoch or not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [r for r in json.load(f) if r["epoch"] < initial_epoch]


def train_run_config(genotype, task_data, config: TrainConfig, val_items) -> dict:
    """What a continued training must share with the run it continues (`run.json`)."""
    g = genotype.to_dict()
    return jsonable({
        "train": {k: v for k, v in dataclasses.asdict(config).items() if k not in RUNTIME_FIELDS},
        "genotype": {k: g[k] for k in ("cells", "image_channels", "base_width", "stem_planes", "stem_blocks",
                                       "residual")},
        "task": task_data.task,
        "data": {k: v for k, v in dict(task_data.description).items() if k not in DATA_PATH_FIELDS},
        "validation_images": [item[0] for item in val_items],
    })


def train_network(genotype, task_data, train_config: TrainConfig, out_dir, val_items=None,
                  resume=True, overwrite=False, verbose=1, callbacks=(), strategy=None) -> TrainResult:
    """Trains `build_network(genotype)` with `model.fit` and selects on validation.

    Args:
        genotype: a `Genotype`, its dict or a `genotype.json` path.
        task_data: `pipelines.tasks.TaskData`; training patches come from its
            `weights_items`, degraded by its `degradation` (clean-only items).
        train_config: `TrainConfig` (iterations, batch/patch size, learning rates,
            clipping, `validate_every`, seed, jit_compile, stop/time limits, warm start).
        out_dir: output folder (see the module docstring for its files).
        val_items: validation images, `(name, clean)` or `(name, degraded, clean)`;
            default `task_data.arch_items` (images held out from training).
        resume: continue an unfinished run in `out_dir` (same configuration required);
            False starts afresh.
        overwrite: start afresh even if `out_dir` holds a finished run.
        verbose: `model.fit` verbosity (1: progress bar).
        callbacks: extra Keras callbacks.
        strategy: a `tf.distribute.MirroredStrategy` (TensorFlow); on JAX set a
            `keras.distribution` before calling instead.

    Returns:
        `TrainResult(model, summary)`; the model holds the best validation weights.

    Example:
    >>> data = load_task_data("denoise", weights_data="data/samples/bsds/train",
    ...                       arch_data="data/samples/bsds/train", sigma=50)
    >>> val = load_eval_items("denoise", "data/samples/set12", 1)
    >>> result = train_network("genotype.json", data, quick().train, "runs/train", val)
    """
    from pipelines import batches

    started = time.time()
    config = train_config
    check_train_config(config)
    pipeline = batches.resolve(config.data_pipeline, keras.backend.backend(), task_data.degradation)
    genotype = Genotype.coerce(genotype)
    if genotype.image_channels != task_data.channels:
        raise ValueError(
            f"genotype field 'image_channels' is {genotype.image_channels} but the "
            f"{task_data.task} data has {task_data.channels} channel(s)"
        )
    if val_items is None:
        val_items = task_data.arch_items
    out_dir = os.fspath(out_dir)
    record = RunRecord(out_dir, train_run_config(genotype, task_data, config, val_items), what="training")
    state = record.check(overwrite, resume)  # refuses before anything is written
    first = is_first_process()
    barrier("run folder checked")  # multi-process: every process checked before the first writes
    if first:
        record.start(fresh=state != "resume")
    barrier("run folder ready")
    backup_dir = os.path.join(out_dir, "backup")
    backup = read_backup(backup_dir)
    # Epoch e (one validation period) ends at step offset + (e + 1) * validate_every: a warm start
    # between two boundaries shifts them; a schedule that ends inside an epoch stops there.
    offset = config.init_step % config.validate_every
    start_epoch = config.init_step // config.validate_every
    initial_epoch = backup["epoch"] if backup else start_epoch
    end = config.stop_after or config.iterations
    epochs = -(-(end - offset) // config.validate_every)

    keras.utils.set_random_seed(config.seed)
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        network = build_network(genotype)
        if config.init_weights is not None and backup is None:
            network.load_weights(config.init_weights)  # not compiled yet: the file's optimizer state is ignored
        model = compile_network(network, config)
        model.optimizer.build(model.trainable_variables)  # no variable creation inside the first trace
    if config.init_weights is not None and backup is None:
        model.optimizer.iterations.assign(config.init_step)
    # The batches an uninterrupted run would see from here (resumed runs end bit-identical).
    stream = batches.training_batches(pipeline, task_data.weights_items, task_data.degradation,
                                      config.patch_size, config.batch_size, seed=config.seed,
                                      start=offset + initial_epoch * config.validate_every)
    validation = ValidationPSNR(val_items, task_data.degradation, seed=0)
    clock = WallClock()
    checkpoint = CheckpointAndLog(out_dir, _earlier_rows(out_dir, initial_epoch), clock, first)
    if first:
        genotype.save(os.path.join(out_dir, "genotype.json"))

    model.fit(
        stream,
        steps_per_epoch=config.validate_every,
        epochs=epochs,
        initial_epoch=start_epoch,  # Backup's restored epoch wins
        shuffle=False,  # the stream shuffles itself (seeded)
        callbacks=training_callbacks(config, out_dir, validation, checkpoint, clock, started, first,
                                     stop_at=end if (end - offset) % config.validate_every else None)
        + list(callbacks),
        verbose=verbose if first else 0,
    )
    rows = checkpoint.rows
    finishes = bool(rows) and rows[-1]["step"] == config.iterations

    best_path = os.path.join(out_dir, "best.weights.h5")
    if os.path.exists(best_path):
        model.load_weights(best_path)
    # the degradation travels with a copied model.keras (evaluate.py reads its noise level)
    save_model(model, os.path.join(out_dir, "model.keras"), first, metadata=jsonable(
        {"training": {"data": dict(task_data.description), "train_config": dataclasses.asdict(config)}}))
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
        "resumed_from_step": offset + initial_epoch * config.validate_every if backup else 0,
        "warm_start": None if config.init_weights is None else {
            "weights": config.init_weights, "step": config.init_step, "rewarmup": config.rewarmup},
        "seconds_this_run": round(time.time() - started, 1),
        "wall_seconds": round(clock.seconds, 1),
        "iterations_done": rows[-1]["step"] if rows else 0,
        "finished": finishes,  # False: stopped early (`stop_after`, `time_limit`), `backup/` continues
        "backend": keras.backend.backend(),
        "batches": pipeline,  # where the training batches were made (`data_pipeline` resolved)
        "device": device.describe(),
        "files": {
            "model": "model.keras (best validation weights)",
            "best_weights": "best.weights.h5",
            "last_weights": "last.weights.h5",
            "tensorboard": "tensorboard/",
            "validation_log": "validation.json",
        },
    }
    if first:
        files.write_json(os.path.join(out_dir, "train_summary.json"), summary)
        if finishes:
            record.finish(iterations_done=config.iterations)
    barrier("training written")  # the other processes of a multi-process run wait for the first
    return TrainResult(model, summary)


def training_callbacks(config, out_dir, validation, checkpoint, clock, started, write=True, stop_at=None):
    """The callbacks of a training run, in order: validation (later ones see `val_psnr`),
    checkpoints and `validation.json`, backup, wall clock, TensorBoard, step clock, and the
    stops: `TimeLimit` (at any step), `StopAtStep` (a schedule that ends inside an epoch)."""
    stoppers = []
    if config.time_limit:
        stoppers.append(TimeLimit(config.time_limit, started))
    if stop_at is not None:
        stoppers.append(StopAtStep(stop_at, config.init_step % config.validate_every))
    stack = [validation, checkpoint]
    # kept when stopping early (`stop_after`, `time_limit`): the next run continues from it;
    # removed with `run.json` marked finished once the whole schedule is done
    stack += [Backup(os.path.join(out_dir, "backup"), clock=clock, write=write, stoppers=stoppers), clock]
    if write:
        stack += TensorBoard.create(os.path.join(out_dir, "tensorboard"), profile_batch=config.profile_batches or 0,
                                    step=optimizer_step)
        stack.append(StepClock(os.path.join(out_dir, "timing.json")))
    return stack + stoppers


def optimizer_step(model):
    """The schedule's step at an epoch end: the optimizer's counter (a warm start's offset and
    an epoch cut short included)."""
    return int(keras.ops.convert_to_numpy(model.optimizer.iterations))
