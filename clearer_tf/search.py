"""The bilevel CLEARER search (paper Sec. 3.3, authors' code; first-order like DARTS).

One iteration = an architecture step on a batch of the architecture stream
(L = L_res + lambda_1 L_arch + lambda_2 L_comp, gradients to alpha only, BatchNorm
in inference mode, or with batch statistics if `arch_batchnorm="batch"`; its moving
statistics are never updated by architecture batches), then a weight step on a
batch of the weight stream (L_res only, gradients to the weights, BatchNorm in
training mode). During the first `warmup` iterations alpha does not move: on
TensorFlow only the weight step runs (the phase switch is plain Python, two compiled
step functions); on JAX the iteration is one program whose architecture update is
discarded during warm-up (one XLA compilation instead of two).

Optimisers, as the authors' PyTorch code:
* weights: SGD, momentum 0.9, gradients clipped to global norm 5, then coupled L2
  weight decay 3e-4 added to the gradient (`clip_grad_norm_` + `torch.optim.SGD`);
  learning rate cosine from 0.025 to 0.001 over the search.
  (Keras SGD keeps lr inside the velocity, torch outside; identical at constant lr.)
* alpha: Adam, lr 3e-4, betas (0.5, 0.999), coupled weight decay 1e-3.

Backends:
* TensorFlow: `tf.GradientTape`; on one device each step is one XLA program
  (`SearchConfig.jit_compile`). Under `tf.distribute.MirroredStrategy` BatchNorm is
  synchronised, each replica's loss is divided by the replica count and the
  gradients are all-reduced; XLA is applied to the per-replica forward/backward
  function only, and only on GPU replicas (on CPU replicas TF cannot all-reduce
  inside XLA, so they run without it). `jit_compile="auto"` (the default) means XLA
  with a GPU, none on a CPU, where it is slower.
* JAX: stateless steps (`model.stateless_call`, `optimizer.stateless_apply`) under
  `jax.jit` with donated buffers; the state lives in pytrees and is written back to
  the Keras variables only by `sync()` (log steps, checkpoints, the end).

`run_search` wires data streams, logging (Progbar, TensorBoard, an alpha-history CSV),
checkpoints/resume and the outputs (genotype.json and two pictures) around it.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import os
import sys
import time
import warnings

import keras
import numpy as np
from keras import ops

from clearer_tf import complexity, device, files, losses
from clearer_tf.genotype import derive
from clearer_tf.presets import SearchConfig, SupernetConfig, resolve_jit
from clearer_tf.supernet import arch_variables, build_supernet, mixed_columns, weight_variables

CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_FILE = "search.npz"
CHECKPOINT_FORMAT = 1
RUNTIME_FIELDS = ("log_every", "checkpoint_every", "jit_compile")
"""SearchConfig fields that do not change the result; they may differ on resume."""
DATA_PATH_FIELDS = ("data", "weights_data", "arch_data")
"""Folder paths in a data description; resume compares the images, not where they lie."""


def validate(supernet_config: SupernetConfig, search_config: SearchConfig, replicas: int = 1):
    """Raises ValueError (one line) for settings the supernet or the devices cannot run."""
    multiple = supernet_config.multiple
    if search_config.patch_size % multiple:
        raise ValueError(
            f"--patch-size {search_config.patch_size} must be a multiple of {multiple} "
            f"(2**cells for {supernet_config.num_cells} cells)"
        )
    if search_config.batch_size % replicas:
        raise ValueError(
            f"--batch-size {search_config.batch_size} must be divisible by the {replicas} replicas"
        )
    losses.get_restoration_loss(search_config.loss)
    if search_config.arch_batchnorm not in ("inference", "batch"):
        raise ValueError(
            f"arch_batchnorm must be 'inference' or 'batch', got {search_config.arch_batchnorm!r}"
        )
    if search_config.cost not in complexity.COST_MEASURES:
        raise ValueError(f"unknown cost measure {search_config.cost!r}")


def clip_and_decay(grads, params, clip_norm, decay):
    """torch `clip_grad_norm_(clip_norm)` then coupled L2 decay: g * min(1, c / (|g| + 1e-6)) + decay * p.

    Returns the new gradients and the global norm before clipping.
    """
    norm = ops.sqrt(sum(ops.sum(ops.square(g)) for g in grads))
    scale = 1.0 if clip_norm is None else ops.minimum(1.0, clip_norm / (norm + 1e-6))
    return [g * scale + decay * ops.cast(p, g.dtype) for g, p in zip(grads, params)], norm


def batch_norm_layers(model):
    return [
        layer
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if isinstance(layer, keras.layers.BatchNormalization)
    ]


class BilevelSearch:
    """Architecture and weight steps of the CLEARER search on one supernet.

    Args:
        model: the supernet (`build_supernet`), built under `strategy.scope()` if any.
        supernet_config: its `SupernetConfig`.
        search_config: the `SearchConfig` (optimisers, losses, lambdas, schedule).
        costs: `(columns, 2)` normalised candidate costs for L_comp; default
            `complexity.column_costs(model, search_config.cost, patch, patch)`.
        strategy: an optional `tf.distribute.MirroredStrategy` (TensorFlow backend).

    Batches are `(degraded, clean)` NHWC pairs (NumPy, tensors, or per-replica values
    from `strategy.experimental_distribute_dataset`). The step methods return dicts of
    scalar tensors without waiting for the device; call `sync()` before reading the
    Keras variables on the JAX backend.

    Example:
    >>> search = BilevelSearch(model, supernet_config, search_config)
    >>> metrics = search.step(weight_batch, arch_batch, warmup=search.iteration < 500)
    """

    def __init__(self, model, supernet_config, search_config, costs=None, strategy=None):
        self.model = model
        self.supernet_config = supernet_config
        self.config = c = search_config
        self.strategy = strategy
        self.replicas = strategy.num_replicas_in_sync if strategy is not None else 1
        self.backend = keras.backend.backend()
        if strategy is not None and self.backend != "tensorflow":
            raise ValueError("a tf.distribute strategy needs KERAS_BACKEND=tensorflow")
        validate(supernet_config, search_config, self.replicas)
        self.arch_vars = arch_variables(model)
        self.weight_vars = weight_variables(model)
        self.column_names = [column.name for column in mixed_columns(model)]
        if costs is None:
            costs = complexity.column_costs(model, c.cost, c.patch_size, c.patch_size)
        self.costs = np.asarray(costs, np.float32)
        if self.costs.shape != (len(self.arch_vars), 2):
            raise ValueError(f"costs must have shape {(len(self.arch_vars), 2)}, got {self.costs.shape}")
        self.loss_fn = losses.get_restoration_loss(c.loss)
        self.arch_bn_training = c.arch_batchnorm == "batch"  # new statistics are dropped
        self.weight_schedule = keras.optimizers.schedules.CosineDecay(
            c.weight_lr, c.iterations, alpha=c.weight_lr_min / c.weight_lr
        )
        with self._scope():
            if self.replicas > 1:
                for layer in batch_norm_layers(model):
                    layer.synchronized = True
            self.weight_optimizer = keras.optimizers.SGD(
                self.weight_schedule, momentum=c.weight_momentum, name="weight_sgd"
            )
            self.arch_optimizer = keras.optimizers.Adam(
                c.arch_lr, beta_1=c.arch_beta_1, beta_2=c.arch_beta_2, epsilon=1e-8, name="arch_adam"
            )
            self.weight_optimizer.build(self.weight_vars)
            self.arch_optimizer.build(self.arch_vars)
        self.iteration = 0
        self.seconds = 0.0  # wall time of the search so far (run_search keeps it; checkpointed)
        self._steps = _JaxSteps(self) if self.backend == "jax" else _TensorFlowSteps(self)

    def _scope(self):
        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()

    # --- the objective of the architecture step ---------------------------------------
    def arch_objective(self, restored, clean, alphas):
        """L = L_res + lambda_1 L_arch + lambda_2 L_comp (Eq. 2) and its parts."""
        c = self.config
        weights = ops.softmax(ops.stack(alphas), axis=-1)
        res = self.loss_fn(restored, clean)
        entropy = losses.arch_loss(weights, c.arch_log_base)
        comp = losses.complexity_loss(weights, self.costs)
        total = res + c.lambda_arch * entropy + c.lambda_comp * comp
        return total, {
            "arch_loss": total,
            "arch_res": res,
            "arch_entropy": entropy,
            "arch_comp": comp,
            "arch_psnr": self.batch_psnr(restored, clean),
        }

    @staticmethod
    def batch_psnr(restored, clean):
        """Mean per-image PSNR (dB) of the clipped output; MSE floored at 1e-10 (<= 100 dB)."""
        restored = ops.clip(ops.cast(restored, "float32"), 0.0, 1.0)
        mse = ops.mean(ops.square(restored - ops.cast(clean, "float32")), axis=(1, 2, 3))
        return ops.mean(-10.0 * ops.log10(ops.maximum(mse, 1e-10)))

    # --- public steps -------------------------------------------------------------------
    def weight_step(self, batch):
        """One weight step (L_res, SGD); returns {"loss", "grad_norm", "lr"}."""
        return self._steps.run("weight", batch)

    def arch_step(self, batch):
        """One architecture step (L, Adam on alpha, BN moving statistics untouched)."""
        return self._steps.run("arch", batch)

    def step(self, weight_batch, arch_batch, warmup: bool):
        """One search iteration: (arch step unless `warmup`) then weight step."""
        metrics = self._steps.iteration(weight_batch, arch_batch, warmup)
        self.iteration += 1
        return metrics

    def evaluate(self, batch):
        """L_res and PSNR on a batch, BN in inference mode, nothing updated."""
        return self._steps.run("eval", batch)

    def sync(self):
        """Write the step state back to the Keras variables (JAX; no-op on TensorFlow)."""
        self._steps.sync()

    def mixing_weights(self):
        """(alpha, softmax weights), each a `(columns, 2)` NumPy array (call `sync()` first)."""
        alphas = np.stack([np.asarray(v.numpy(), np.float64) for v in self.arch_vars])
        weights = np.exp(alphas - alphas.max(axis=1, keepdims=True))
        return alphas, weights / weights.sum(axis=1, keepdims=True)

    # --- checkpoints --------------------------------------------------------------------
    def _variable_groups(self):
        return {
            "model": self.model.weights,
            "weight_optimizer": self.weight_optimizer.variables,
            "arch_optimizer": self.arch_optimizer.variables,
        }

    def save_checkpoint(self, directory, info=None):
        """All weights (alpha, BN statistics included), both optimizers and the iteration.

        One file, `directory/search.npz`, written to a temporary name and renamed.
        `info` (a JSON-able dict, e.g. task and data) is stored with the configuration.
        """
        self.sync()
        arrays, names = {}, {}
        for group, variables in self._variable_groups().items():
            names[group] = [v.path for v in variables]
            for i, v in enumerate(variables):
                arrays[f"{group}/{i:05d}"] = np.asarray(v.numpy())
        meta = {
            "format": CHECKPOINT_FORMAT,
            "iteration": self.iteration,
            "seconds": round(self.seconds, 1),
            "backend": self.backend,
            "config": run_config(self.supernet_config, self.config, info),
            "variables": names,
        }
        arrays["__meta__"] = np.array(json.dumps(meta))
        with files.atomic_path(os.path.join(directory, CHECKPOINT_FILE), ".npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)

    def restore_checkpoint(self, directory):
        """Loads `save_checkpoint`'s file; returns its metadata."""
        path = os.path.join(directory, CHECKPOINT_FILE)
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["__meta__"]))
            for group, variables in self._variable_groups().items():
                stored = meta["variables"][group]
                if len(stored) != len(variables):
                    raise ValueError(
                        f"checkpoint {path}: {len(stored)} {group} variables, this search has "
                        f"{len(variables)} (different configuration?)"
                    )
                for i, v in enumerate(variables):
                    value = data[f"{group}/{i:05d}"]
                    if tuple(value.shape) != tuple(v.shape):
                        raise ValueError(
                            f"checkpoint {path}: {stored[i]} has shape {value.shape}, "
                            f"{v.path} needs {tuple(v.shape)}"
                        )
                    v.assign(value)
        self.iteration = int(meta["iteration"])
        self.seconds = float(meta.get("seconds", 0.0))
        self._steps.load()
        return meta


class _TensorFlowSteps:
    """Compiled TF steps: the whole step in XLA on one device, per-replica XLA on GPUs."""

    def __init__(self, search):
        import tensorflow as tf

        self.tf = tf
        self.s = search
        self.trainable = list(search.model.trainable_variables)
        self.non_trainable = list(search.model.non_trainable_variables)
        position = {id(v): i for i, v in enumerate(self.trainable)}
        self.weight_pos = [position[id(v)] for v in search.weight_vars]
        self.arch_pos = [position[id(v)] for v in search.arch_vars]
        strategy = search.strategy
        jit = resolve_jit(search.config.jit_compile)
        if strategy is None:
            self._build(outer_jit=jit, inner_jit=False)
        else:
            devices = strategy.extended.worker_devices
            self._build(outer_jit=False, inner_jit=jit and all("GPU" in d.upper() for d in devices))
        self._first_call = set()

    def _build(self, outer_jit, inner_jit):
        tf = self.tf
        self.inner_jit = inner_jit

        def inner(fn):  # per-replica forward/backward: no variable writes, may be XLA-compiled
            return tf.function(fn, jit_compile=True, autograph=False) if inner_jit else fn

        self.weight_grads = inner(self._weight_grads)
        self.arch_grads = inner(self._arch_grads)
        bodies = {
            "weight": self._weight_update,
            "arch": self._arch_update,
            "search": lambda wb, ab: {**self._arch_update(ab), **self._weight_update(wb)},
            "eval": self._evaluate,
        }
        strategy = self.s.strategy
        if strategy is None:
            self.fns = {
                k: tf.function(fn, jit_compile=outer_jit, autograph=False) for k, fn in bodies.items()
            }
            return

        def distributed(body):
            def fn(*batches):
                out = strategy.run(body, args=batches)
                return {k: strategy.reduce("MEAN", v, axis=None) for k, v in out.items()}

            return tf.function(fn, autograph=False)

        self.fns = {k: distributed(fn) for k, fn in bodies.items()}

    # --- per-replica pieces: no variable writes inside, so they may be XLA-compiled; on GPU
    # replicas TF runs the synchronised-BatchNorm all-reduce inside XLA as a collective -------
    def _weight_grads(self, tvals, stats, x, y):
        weights = [tvals[i] for i in self.weight_pos]
        with self.tf.GradientTape() as tape:
            tape.watch(weights)
            pred, stats = self.s.model.stateless_call(tvals, stats, x, training=True)
            loss = self.s.loss_fn(pred, y)
            scaled = loss / self.s.replicas
        return loss, tape.gradient(scaled, weights), stats

    def _arch_grads(self, tvals, stats, x, y):
        alphas = [tvals[i] for i in self.arch_pos]
        with self.tf.GradientTape() as tape:
            tape.watch(alphas)
            pred, _ = self.s.model.stateless_call(tvals, stats, x, training=self.s.arch_bn_training)
            total, metrics = self.s.arch_objective(pred, y, alphas)
            scaled = total / self.s.replicas
        return metrics, tape.gradient(scaled, alphas)

    # --- stateful updates (in a replica context under a strategy) -------------------------
    def _values(self, variables):
        return [self.tf.convert_to_tensor(v.value) for v in variables]

    def _all_reduce(self, grads):
        if self.s.replicas == 1:
            return grads
        return self.tf.distribute.get_replica_context().all_reduce("SUM", grads)

    def _for_optimizer(self, grads):
        # Keras sums the gradients over replicas once more inside `apply`.
        return grads if self.s.replicas == 1 else [g / self.s.replicas for g in grads]

    def _weight_update(self, batch):
        s, c = self.s, self.s.config
        x, y = batch
        loss, grads, stats = self.weight_grads(
            self._values(self.trainable), self._values(self.non_trainable), x, y
        )
        for v, value in zip(self.non_trainable, stats):
            v.assign(value)
        grads, norm = clip_and_decay(
            self._all_reduce(grads), self._values(s.weight_vars), c.grad_clip, c.weight_decay
        )
        lr = s.weight_schedule(s.weight_optimizer.iterations)
        s.weight_optimizer.apply(self._for_optimizer(grads), s.weight_vars)
        return {"loss": loss, "grad_norm": norm, "lr": lr}

    def _arch_update(self, batch):
        s, c = self.s, self.s.config
        x, y = batch
        metrics, grads = self.arch_grads(
            self._values(self.trainable), self._values(self.non_trainable), x, y
        )
        grads, _ = clip_and_decay(
            self._all_reduce(grads), self._values(s.arch_vars), None, c.arch_weight_decay
        )
        s.arch_optimizer.apply(self._for_optimizer(grads), s.arch_vars)
        return metrics

    def _evaluate(self, batch):
        x, y = batch
        pred = self.s.model(x, training=False)
        return {"arch_res": self.s.loss_fn(pred, y), "arch_psnr": self.s.batch_psnr(pred, y)}

    # --- calling --------------------------------------------------------------------------
    def _distribute(self, batch):
        tf, strategy, n = self.tf, self.s.strategy, self.s.replicas
        if isinstance(batch[0], tf.distribute.DistributedValues):
            return tuple(batch)
        if batch[0].shape[0] % n:
            raise ValueError(f"batch of {batch[0].shape[0]} does not split over {n} replicas")
        size = batch[0].shape[0] // n

        def split(t):
            t = tf.convert_to_tensor(t)
            return strategy.experimental_distribute_values_from_function(
                lambda ctx: t[ctx.replica_id_in_sync_group * size : (ctx.replica_id_in_sync_group + 1) * size]
            )

        return tuple(split(t) for t in batch)

    def run(self, name, *batches):
        tf = self.tf
        if self.s.strategy is None:
            return self.fns[name](*(tuple(tf.convert_to_tensor(t) for t in b) for b in batches))
        batches = tuple(self._distribute(b) for b in batches)
        if not self.inner_jit or name in self._first_call:
            return self.fns[name](*batches)
        try:
            out = self.fns[name](*batches)
        except Exception as e:  # XLA inside replicas is version-sensitive: fall back, once
            warnings.warn(
                f"XLA inside MirroredStrategy replicas failed ({type(e).__name__}: "
                f"{str(e).splitlines()[0][:200]}); continuing without XLA"
            )
            self._build(outer_jit=False, inner_jit=False)
            out = self.fns[name](*batches)
        self._first_call.add(name)
        return out

    def iteration(self, weight_batch, arch_batch, warmup):
        if warmup:
            return self.run("weight", weight_batch)
        return self.run("search", weight_batch, arch_batch)

    def sync(self):
        pass

    def load(self):
        pass


class _JaxSteps:
    """Stateless jitted JAX steps; the state lives in pytrees between `load()` and `sync()`."""

    def __init__(self, search):
        import jax

        self.jax = jax
        self.s = search
        trainable = list(search.model.trainable_variables)
        self.n_trainable = len(trainable)
        position = {id(v): i for i, v in enumerate(trainable)}
        self.weight_pos = [position[id(v)] for v in search.weight_vars]
        self.arch_pos = [position[id(v)] for v in search.arch_vars]
        opt = search.weight_optimizer
        self.iteration_pos = next(i for i, v in enumerate(opt.variables) if v is opt.iterations)
        self.groups = {
            "weights": search.weight_vars,
            "alphas": search.arch_vars,
            "stats": list(search.model.non_trainable_variables),
            "weight_opt": list(search.weight_optimizer.variables),
            "arch_opt": list(search.arch_optimizer.variables),
        }
        self.load()

        def search_fn(state, weight_batch, arch_batch, update_arch=True):
            # One program for warm-up and search: during warm-up (`update_arch` False, a
            # traced flag) the architecture step is computed but alpha and Adam's state are
            # kept, so XLA compiles the supernet once (minutes on a GPU) instead of twice.
            new, arch_metrics = self._arch(state, arch_batch)
            for key in ("alphas", "arch_opt"):
                new[key] = [jax.numpy.where(update_arch, a, b) for a, b in zip(new[key], state[key])]
            state, weight_metrics = self._weight(new, weight_batch)
            return state, {**arch_metrics, **weight_metrics}

        self.fns = {
            "weight": jax.jit(self._weight, donate_argnums=0),
            "arch": jax.jit(self._arch, donate_argnums=0),
            "search": jax.jit(search_fn, donate_argnums=0),
            "eval": jax.jit(self._evaluate),
        }

    def _trainable(self, weights, alphas):
        values = [None] * self.n_trainable
        for i, v in zip(self.weight_pos, weights):
            values[i] = v
        for i, v in zip(self.arch_pos, alphas):
            values[i] = v
        return values

    def _weight(self, state, batch):
        s, c = self.s, self.s.config
        x, y = batch

        def loss_fn(weights):
            tvals = self._trainable(weights, state["alphas"])
            pred, stats = s.model.stateless_call(tvals, state["stats"], x, training=True)
            return s.loss_fn(pred, y), stats

        (loss, stats), grads = self.jax.value_and_grad(loss_fn, has_aux=True)(state["weights"])
        grads, norm = clip_and_decay(grads, state["weights"], c.grad_clip, c.weight_decay)
        lr = s.weight_schedule(state["weight_opt"][self.iteration_pos])
        weights, weight_opt = s.weight_optimizer.stateless_apply(state["weight_opt"], grads, state["weights"])
        state = dict(state, weights=weights, stats=stats, weight_opt=weight_opt)
        return state, {"loss": loss, "grad_norm": norm, "lr": lr}

    def _arch(self, state, batch):
        s, c = self.s, self.s.config
        x, y = batch

        def objective(alphas):
            tvals = self._trainable(state["weights"], alphas)
            pred, _ = s.model.stateless_call(tvals, state["stats"], x, training=s.arch_bn_training)
            return s.arch_objective(pred, y, alphas)

        (_, metrics), grads = self.jax.value_and_grad(objective, has_aux=True)(state["alphas"])
        grads, _ = clip_and_decay(grads, state["alphas"], None, c.arch_weight_decay)
        alphas, arch_opt = s.arch_optimizer.stateless_apply(state["arch_opt"], grads, state["alphas"])
        return dict(state, alphas=alphas, arch_opt=arch_opt), metrics

    def _evaluate(self, state, batch):
        s = self.s
        x, y = batch
        tvals = self._trainable(state["weights"], state["alphas"])
        pred, _ = s.model.stateless_call(tvals, state["stats"], x, training=False)
        return {"arch_res": s.loss_fn(pred, y), "arch_psnr": s.batch_psnr(pred, y)}

    def run(self, name, *batches, **flags):
        batches = tuple(tuple(np.asarray(t) for t in b) for b in batches)
        if name == "eval":
            return self.fns[name](self.state, *batches)
        self.state, metrics = self.fns[name](self.state, *batches, **flags)
        return metrics

    def iteration(self, weight_batch, arch_batch, warmup):
        return self.run("search", weight_batch, arch_batch, update_arch=np.asarray(not warmup))

    def load(self):
        """Copy the Keras variables into the state (copies: the steps donate their buffers)."""
        jnp = self.jax.numpy
        self.state = {k: [jnp.array(v.value, copy=True) for v in vs] for k, vs in self.groups.items()}

    def sync(self):
        jnp = self.jax.numpy
        for key, variables in self.groups.items():
            for v, value in zip(variables, self.state[key]):
                v.assign(jnp.array(value, copy=True))


# --- run configuration and resume checks ------------------------------------------------
def _jsonable(value):
    return json.loads(json.dumps(value, default=str))


def run_config(supernet_config, search_config, info=None) -> dict:
    """What a checkpoint must share with a resumed run (runtime-only fields left out)."""
    search = {k: v for k, v in dataclasses.asdict(search_config).items() if k not in RUNTIME_FIELDS}
    return _jsonable({"supernet": supernet_config.to_dict(), "search": search, **(info or {})})


def run_info(task_data) -> dict:
    """Task and data description as stored in checkpoints (folder paths left out)."""
    description = {k: v for k, v in dict(task_data.description).items() if k not in DATA_PATH_FIELDS}
    return {"task": task_data.task, "data": description}


def _differences(stored, current, prefix=""):
    if isinstance(stored, dict) and isinstance(current, dict):
        out = []
        for key in list(stored) + [k for k in current if k not in stored]:
            out += _differences(stored.get(key), current.get(key), f"{prefix}{key}.")
        return out
    if stored == current:
        return []
    name = prefix[:-1]
    if isinstance(stored, list) or isinstance(current, list):
        return [f"{name} differs"]
    return [f"{name} is {stored!r} in the checkpoint, {current!r} now"]


def checkpoint_path(run_dir):
    return os.path.join(run_dir, CHECKPOINT_DIR, CHECKPOINT_FILE)


def read_checkpoint_meta(run_dir) -> dict:
    with np.load(checkpoint_path(run_dir), allow_pickle=False) as data:
        return json.loads(str(data["__meta__"]))


def check_resume(run_dir, supernet_config, search_config, info=None) -> dict:
    """Raises ValueError unless `run_dir` holds a checkpoint of this configuration."""
    path = checkpoint_path(run_dir)
    if not os.path.isfile(path):
        raise ValueError(f"--resume {run_dir}: no search checkpoint there ({path} not found)")
    try:
        meta = read_checkpoint_meta(run_dir)
    except Exception as e:
        raise ValueError(f"--resume {run_dir}: unreadable checkpoint {path} ({type(e).__name__})") from None
    diffs = _differences(meta.get("config"), run_config(supernet_config, search_config, info))
    if diffs:
        raise ValueError(
            f"--resume {run_dir}: the checkpoint is from a different configuration: "
            + "; ".join(diffs[:3])
            + ("; ..." if len(diffs) > 3 else "")
        )
    return meta


# --- alpha history CSV -----------------------------------------------------------------
class AlphaHistory:
    """`alpha_history.csv`: one row per log step.

    Columns: `iteration`, then per column `<cell>_<col>_parallel` and `..._fusion`
    (softmax weights), then `..._alpha_p` and `..._alpha_f` (raw alpha).
    """

    def __init__(self, path, column_names):
        self.path = path
        self.header = ["iteration"]
        self.header += [f"{n}_{m}" for n in column_names for m in ("parallel", "fusion")]
        self.header += [f"{n}_alpha_{m}" for n in column_names for m in ("p", "f")]

    def start(self, iteration):
        """Keep the rows up to `iteration` (a resumed checkpoint), drop later ones."""
        rows = []
        if iteration > 0 and os.path.isfile(self.path):
            with open(self.path, newline="", encoding="utf-8") as f:
                reader = csv.reader(f)
                if next(reader, None) == self.header:
                    rows = [r for r in reader if r and int(r[0]) <= iteration]
        with files.atomic_path(self.path, ".csv") as tmp:
            with open(tmp, "w", newline="", encoding="utf-8") as f:
                writer = csv.writer(f)
                writer.writerow(self.header)
                writer.writerows(rows)
        return len(rows)

    def append(self, iteration, alphas, weights):
        row = [iteration] + [f"{w:.8g}" for w in weights.ravel()] + [f"{a:.8g}" for a in alphas.ravel()]
        with open(self.path, "a", newline="", encoding="utf-8") as f:
            csv.writer(f).writerow(row)


# --- the whole search ----------------------------------------------------------------------
_TENSORBOARD_TAGS = {
    "loss": "loss/weights_res",
    "grad_norm": "grad_norm/weights",
    "lr": "lr/weights",
    "arch_loss": "loss/arch_total",
    "arch_res": "loss/arch_res",
    "arch_entropy": "loss/arch_entropy",
    "arch_comp": "loss/arch_comp",
    "arch_psnr": "psnr/arch_batches",
}


def run_search(supernet_config, search_config, task_data, out_dir, resume=False, strategy=None):
    """Searches an architecture for `task_data` and writes the run directory.

    Writes `out_dir/`: `genotype.json`, `architecture.png`, `alpha_history.csv` and
    `alpha_history.png`, `tensorboard/`, `checkpoint/search.npz` (every
    `checkpoint_every` iterations and at the end). `resume=True` continues from the
    checkpoint in `out_dir` (same configuration required). Deterministic for a seed:
    a killed and resumed search ends where an uninterrupted one does.

    Returns the `Genotype`.
    """
    import tensorflow as tf  # tf.data and tf.summary, on every backend

    from pipelines.streams import search_streams

    c = search_config
    replicas = strategy.num_replicas_in_sync if strategy is not None else 1
    validate(supernet_config, c, replicas)
    if supernet_config.image_channels != task_data.channels:
        raise ValueError(
            f"the supernet has {supernet_config.image_channels} image channels, "
            f"the {task_data.task} data {task_data.channels}"
        )
    info = run_info(task_data)
    ckpt_dir = os.path.join(out_dir, CHECKPOINT_DIR)
    if resume:
        check_resume(out_dir, supernet_config, c, info)
    elif os.path.isfile(checkpoint_path(out_dir)):
        raise ValueError(
            f"{out_dir} already holds a search checkpoint: resume it or choose another output folder"
        )
    os.makedirs(out_dir, exist_ok=True)

    keras.utils.set_random_seed(c.seed)
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        model = build_supernet(config=supernet_config)
    search = BilevelSearch(model, supernet_config, c, strategy=strategy)
    if resume:
        search.restore_checkpoint(ckpt_dir)

    weights_ds, arch_ds = search_streams(
        task_data.weights_items, task_data.arch_items, task_data.degradation,
        c.patch_size, c.batch_size, c.seed,
    )
    # Both streams advance one batch per iteration (warm-up included), so a resumed
    # search skips exactly `iteration` batches of each.
    weights_ds, arch_ds = weights_ds.skip(search.iteration), arch_ds.skip(search.iteration)
    if strategy is not None:
        weights_ds = strategy.experimental_distribute_dataset(weights_ds)
        arch_ds = strategy.experimental_distribute_dataset(arch_ds)
    batches = zip(iter(weights_ds), iter(arch_ds))

    history = AlphaHistory(os.path.join(out_dir, "alpha_history.csv"), search.column_names)
    writer = tf.summary.create_file_writer(os.path.join(out_dir, "tensorboard"))
    # A live bar on a terminal; one plain line per log step in a log file.
    progbar = keras.utils.Progbar(c.iterations, stateful_metrics=list(_TENSORBOARD_TAGS)) \
        if sys.stdout.isatty() else None
    if history.start(search.iteration) == 0:
        _log(search, {}, writer, history, None, quiet=True)

    sums, counts = {}, {}
    earlier_seconds, start = search.seconds, time.time()
    while search.iteration < c.iterations:
        weight_batch, arch_batch = next(batches)
        warmup = search.iteration < c.warmup
        metrics = search.step(weight_batch, arch_batch, warmup=warmup)
        for key, value in metrics.items():  # device-side sums: no host sync per step
            sums[key] = sums[key] + value if key in sums else value
            counts[key] = counts.get(key, 0) + 1
        it = search.iteration
        if it % c.log_every == 0 or it == c.iterations:
            values = {k: float(sums[k]) / counts[k] for k in sums}
            if warmup and "arch_psnr" not in values:  # report the architecture batch anyway
                values.update({k: float(v) for k, v in search.evaluate(arch_batch).items()})
            _log(search, values, writer, history, progbar)
            sums, counts = {}, {}
        if it % c.checkpoint_every == 0 or it == c.iterations:
            search.seconds = earlier_seconds + time.time() - start
            search.save_checkpoint(ckpt_dir, info)
    writer.close()
    search.sync()

    search_info = dict(dataclasses.asdict(c), fusion_input=supernet_config.fusion_input,
                       backend=search.backend, replicas=replicas, device=device.describe(),
                       wall_seconds=round(search.seconds, 1))
    genotype = derive(model, supernet_config, task=task_data.task, search=search_info,
                      data=_jsonable(dict(task_data.description)))
    genotype.save(os.path.join(out_dir, "genotype.json"))
    from clearer_tf import plots

    plots.plot_architecture(genotype, os.path.join(out_dir, "architecture.png"))
    plots.plot_alpha_history(history.path, os.path.join(out_dir, "alpha_history.png"))
    return genotype


def _log(search, values, writer, history, progbar, quiet=False):
    """TensorBoard scalars, a CSV row and the progress bar at `search.iteration`."""
    import tensorflow as tf

    search.sync()
    step = search.iteration
    alphas, weights = search.mixing_weights()
    with writer.as_default(step=step):
        for key, value in values.items():
            tf.summary.scalar(_TENSORBOARD_TAGS.get(key, key), value)
        tf.summary.scalar("lr/arch", search.config.arch_lr)
        for name, alpha, weight in zip(search.column_names, alphas, weights):
            for k, module in enumerate(("parallel", "fusion")):
                tf.summary.scalar(f"alpha/{name}/{module}", alpha[k])
                tf.summary.scalar(f"softmax/{name}/{module}", weight[k])
    writer.flush()
    history.append(step, alphas, weights)
    shown = [(k, values[k]) for k in ("loss", "arch_loss", "arch_psnr", "lr") if k in values]
    if progbar is not None:
        progbar.update(step, values=shown)
    elif not quiet:
        phase = "warm-up" if step <= search.config.warmup else "search"
        text = " - ".join(f"{k}: {v:.4g}" for k, v in shown)
        print(f"iteration {step}/{search.config.iterations} ({phase}) - {text}", flush=True)
