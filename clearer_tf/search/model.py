"""`SupernetSearch`: the bilevel CLEARER search (paper Sec. 3.3) as a `keras.Model`.

One `fit` step = one search iteration on `((x_w, y_w), (x_a, y_a))`: an architecture step on
the architecture batch (`objective.ArchObjective`, gradients to alpha only, BatchNorm in
inference mode, or with batch statistics if `arch_batchnorm="batch"`; its moving statistics
are never updated by architecture batches), then a weight step on the weight batch (L_res,
gradients to the weights, BatchNorm in training mode, clipping and coupled decay). During the
first `warmup` iterations alpha and Adam's state do not move. First-order, like DARTS.

The step itself is backend code (`backend/tensorflow.py`: `tf.GradientTape`, the warm-up as
two compiled functions chosen in Python; `backend/jax.py`: a stateless `train_step(state, data)`,
one compiled program whose architecture update is discarded during warm-up). Everything else is
Keras: `compile`, `fit`, the callbacks, `save_weights`, distribution strategies.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from clearer_tf import complexity
from clearer_tf.genotype import derive
from clearer_tf.presets import SearchConfig, resolve_jit
from clearer_tf.search import optimizers
from clearer_tf.search.backend import SearchStep, replicas_in_sync
from clearer_tf.search.objective import ArchObjective, batch_norm_layers, validate
from clearer_tf.supernet import arch_variables, mixed_columns, weight_variables

WEIGHT_METRICS = ("loss", "grad_norm", "lr")
ARCH_METRICS = ("arch_loss", "arch_res", "arch_entropy", "arch_comp", "arch_psnr")


class PeriodMean(keras.metrics.Mean):
    """A mean over the steps that updated it; NaN if none did (no architecture step yet)."""

    def result(self):
        return ops.where(self.count > 0, ops.divide_no_nan(self.total, self.count), float("nan"))


class SupernetSearch(SearchStep, keras.Model):
    """The search as a Keras model around a supernet (`build_supernet`).

    Args:
        supernet: the functional supernet; its weights and alpha are this model's variables
            (under a `tf.distribute` strategy, build it and this model in `strategy.scope()`).
        config: `SearchConfig` (losses, lambdas, optimisers, warm-up, schedule length).
        supernet_config: the supernet's `SupernetConfig` (default: the one it was built with).
        costs: `(columns, 2)` normalised candidate costs for L_comp; default
            `complexity.column_costs(supernet, config.cost, patch, patch)`.

    Data: `((x_w, y_w), (x_a, y_a))` per step, degraded/clean NHWC pairs of the weight and the
    architecture stream (`tf.data.Dataset.zip((weight_batches, arch_batches))`). Logs (means over
    each epoch): `loss`, `grad_norm`, `lr` of the weight steps, `arch_loss`, `arch_res`,
    `arch_entropy`, `arch_comp`, `arch_psnr` of the architecture steps (NaN while none ran).

    Example:
    >>> search = SupernetSearch(build_supernet(config=SupernetConfig(base_width=8, columns=(2, 2))),
    ...                         SearchConfig(iterations=40, warmup=20, batch_size=4, patch_size=32))
    >>> search.compile()
    >>> search.fit(tf.data.Dataset.zip((weight_batches, arch_batches)), epochs=4, steps_per_epoch=10)
    >>> search.genotype().short()
    'F P / P F'
    """

    def __init__(self, supernet, config: SearchConfig, supernet_config=None, costs=None, name="supernet_search",
                 **kwargs):
        super().__init__(name=name, **kwargs)
        self.supernet = supernet
        self.config = c = config
        self.supernet_config = supernet_config or supernet.supernet_config
        validate(self.supernet_config, c, replicas_in_sync())
        self.column_names = [column.name for column in mixed_columns(supernet)]
        if costs is None:
            costs = complexity.column_costs(supernet, c.cost, c.patch_size, c.patch_size)
        costs = np.asarray(costs, np.float32)
        if costs.shape != (len(self.arch_vars), 2):
            raise ValueError(f"costs must have shape {(len(self.arch_vars), 2)}, got {costs.shape}")
        if not np.isfinite(costs).all() or (costs < 0).any():  # L_comp (Eq. 5) takes only finite costs >= 0
            raise ValueError(f"L_comp costs must be finite and >= 0, got {costs.tolist()}")
        self.objective = ArchObjective(c, costs)
        self.restoration = self.objective.restoration
        self.arch_bn_training = c.arch_batchnorm == "batch"  # new statistics are dropped
        if replicas_in_sync() > 1 and keras.backend.backend() == "tensorflow":
            for layer in batch_norm_layers(supernet):  # JAX: XLA computes global-batch statistics
                layer.synchronized = True
        self.trackers = {key: PeriodMean(name=key) for key in WEIGHT_METRICS + ARCH_METRICS}
        self.built = True
        # the step functions address the supernet's variable lists by position
        trainable = [id(v) for v in self.trainable_variables]
        if trainable != [id(v) for v in supernet.trainable_variables] or \
                [id(v) for v in self.non_trainable_variables] != [id(v) for v in supernet.non_trainable_variables]:
            raise ValueError("SupernetSearch must hold the supernet's variables only")
        position = {v: i for i, v in enumerate(trainable)}
        self.weight_pos = [position[id(v)] for v in self.weight_vars]
        self.arch_pos = [position[id(v)] for v in self.arch_vars]

    @property
    def arch_vars(self):
        """alpha, one `(2,)` variable per column (a property: Keras would track a list attribute)."""
        return arch_variables(self.supernet)

    @property
    def weight_vars(self):
        return weight_variables(self.supernet)

    def call(self, images, training=False):
        return self.supernet(images, training=training)

    @property
    def metrics(self):
        return list(self.trackers.values())

    def compile(self, weight_optimizer=None, arch_optimizer=None, jit_compile=None, **kwargs):
        """Both optimisers (default: SGD and Adam from the config) in one `MultiOptimizer`.

        `jit_compile` defaults to the config's (`"auto"`: XLA with a GPU; JAX always compiles); under a
        `tf.distribute` strategy of several replicas the model-level XLA is off (TensorFlow
        cannot run it there) and only the per-replica forward/backward is compiled, on GPUs.
        """
        c = self.config
        weight_optimizer = weight_optimizer or optimizers.weight_optimizer(c)
        arch_optimizer = arch_optimizer or optimizers.arch_optimizer(c)
        optimizer = optimizers.search_optimizer(self.arch_vars, weight_optimizer, arch_optimizer)
        jit = resolve_jit(c.jit_compile if jit_compile is None else jit_compile)
        self.replica_jit = False
        if replicas_in_sync() > 1:
            self.replica_jit = jit and self.replicas_on_gpus()
            jit = False
        super().compile(optimizer=optimizer, jit_compile=jit, steps_per_execution=1, **kwargs)
        with self.variable_scope():
            optimizer.build(self.trainable_variables)
        self.optimizer_slices = optimizers.slices(optimizer)
        self.iteration_index = next(i for i, v in enumerate(optimizer.variables) if v is optimizer.iterations)
        self.weight_optimizer, self.arch_optimizer = optimizers.parts(optimizer)
        for sub, variables in ((self.weight_optimizer, self.weight_vars), (self.arch_optimizer, self.arch_vars)):
            if [id(v) for v in sub._trainable_variables] != [id(v) for v in variables]:
                raise ValueError(f"{sub.name} was built on other variables")  # stateless_apply relies on it
        self.train_function = self._step_functions = None  # TensorFlow: traced with the old optimizer

    # --- shared by the backends' train_step ---------------------------------------------
    def record(self, weight_metrics, arch_metrics=None, arch_weight=None):
        """Update the trackers with one step's values; returns their means (the step's logs)."""
        for key, value in weight_metrics.items():
            self.trackers[key].update_state(value)
        for key, value in (arch_metrics or {}).items():
            self.trackers[key].update_state(value, sample_weight=arch_weight)
        return {key: tracker.result() for key, tracker in self.trackers.items()}

    # --- results ------------------------------------------------------------------------
    def mixing_weights(self):
        """(alpha, softmax weights), each a `(columns, 2)` NumPy array."""
        alphas = np.stack([np.asarray(v.numpy(), np.float64) for v in self.arch_vars])
        weights = np.exp(alphas - alphas.max(axis=1, keepdims=True))
        return alphas, weights / weights.sum(axis=1, keepdims=True)

    def genotype(self, **fields):
        """The discrete architecture: argmax of softmax(alpha) in every column (`Genotype`)."""
        return derive(self.supernet, self.supernet_config, **fields)
