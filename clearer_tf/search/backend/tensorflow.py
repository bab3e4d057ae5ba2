"""The search step on TensorFlow: `tf.GradientTape`, stateful optimiser updates.

`train_step(data)` runs per replica inside Keras' `strategy.run`. The forward/backward passes
are stateless (`stateless_call` on the current values), so under a `MirroredStrategy` of GPU
replicas they can be XLA-compiled on their own (TensorFlow cannot compile the whole step
there); on one device Keras compiles the whole step (`jit_compile`). Under a strategy,
BatchNorm is synchronised (`SupernetSearch`), each replica's loss is divided by the replica
count and the gradients are all-reduced before clipping (the global norm of the global batch).

Warm-up: Keras builds two train functions, with and without the architecture step, and
`make_train_function` picks one per step in Python from an iteration count it reads once per
`fit`, so Adam's state is never touched during warm-up (no `tf.cond` around an optimiser,
which `MirroredStrategy` cannot trace).
"""

import functools

import keras
import tensorflow as tf

from clearer_tf.search import optimizers
from clearer_tf.search.objective import clip_and_decay


def replicas_in_sync():
    return tf.distribute.get_strategy().num_replicas_in_sync


class TensorFlowSearchStep:
    def variable_scope(self):
        return self.distribute_strategy.scope()

    def replicas_on_gpus(self):
        return all("GPU" in d.upper() for d in self.distribute_strategy.extended.worker_devices)

    def train_step(self, data, warmup=False):
        (xw, yw), (xa, ya), _ = keras.utils.unpack_x_y_sample_weight(data)
        arch = None if warmup else self._arch_update(xa, ya)
        weight = self._weight_update(xw, yw)
        self.optimizer.iterations.assign_add(1)
        return self.record(weight, arch)

    def make_train_function(self, force=False):
        if force or getattr(self, "_step_functions", None) is None:
            self._step_functions = (
                self._make_function(functools.partial(self.train_step, warmup=True)),
                self._make_function(self.train_step),
            )
        warmup_fn, search_fn = self._step_functions
        iteration = None  # read once per fit, after BackupAndRestore may have restored it

        def train_function(iterator):
            nonlocal iteration
            if iteration is None:
                iteration = int(self.optimizer.iterations.numpy())
            fn = warmup_fn if iteration < self.config.warmup else search_fn
            iteration += 1
            return fn(iterator)

        self.train_function = train_function
        return train_function

    # --- per-replica forward/backward: no variable writes inside ------------------------
    def _grads(self, fn):
        if not self.replica_jit:
            return fn
        compiled = getattr(self, "_compiled", None)
        if compiled is None:
            compiled = self._compiled = {}
        if fn.__name__ not in compiled:
            compiled[fn.__name__] = tf.function(fn, jit_compile=True, autograph=False)
        return compiled[fn.__name__]

    def _weight_grads(self, tvals, stats, x, y):
        weights = [tvals[i] for i in self.weight_pos]
        with tf.GradientTape() as tape:
            tape.watch(weights)
            pred, stats = self.supernet.stateless_call(tvals, stats, x, training=True)
            loss = self.restoration(pred, y)
            scaled = loss / replicas_in_sync()
        return loss, tape.gradient(scaled, weights), stats

    def _arch_grads(self, tvals, stats, x, y):
        alphas = [tvals[i] for i in self.arch_pos]
        with tf.GradientTape() as tape:
            tape.watch(alphas)
            pred, _ = self.supernet.stateless_call(tvals, stats, x, training=self.arch_bn_training)
            total, metrics = self.objective(pred, y, alphas)
            scaled = total / replicas_in_sync()
        return metrics, tape.gradient(scaled, alphas)

    # --- stateful updates (in a replica context under a strategy) -------------------------
    @staticmethod
    def _values(variables):
        return [tf.convert_to_tensor(v.value) for v in variables]

    @staticmethod
    def _all_reduce(grads):
        if replicas_in_sync() == 1:
            return grads
        return tf.distribute.get_replica_context().all_reduce("SUM", grads)

    @staticmethod
    def _for_optimizer(grads):
        # Keras sums the gradients over the replicas once more inside `apply`.
        n = replicas_in_sync()
        return grads if n == 1 else [g / n for g in grads]

    def _weight_update(self, x, y):
        c = self.config
        loss, grads, stats = self._grads(self._weight_grads)(
            self._values(self.trainable_variables), self._values(self.non_trainable_variables), x, y
        )
        for v, value in zip(self.non_trainable_variables, stats):
            v.assign(value)
        grads, norm = clip_and_decay(self._all_reduce(grads), self._values(self.weight_vars), c.grad_clip,
                                     c.weight_decay)
        lr = optimizers.learning_rate(self.weight_optimizer)
        self.weight_optimizer.apply(self._for_optimizer(grads), self.weight_vars)
        return {"loss": loss, "grad_norm": norm, "lr": lr}

    def _arch_update(self, x, y):
        metrics, grads = self._grads(self._arch_grads)(
            self._values(self.trainable_variables), self._values(self.non_trainable_variables), x, y
        )
        grads, _ = clip_and_decay(self._all_reduce(grads), self._values(self.arch_vars), None,
                                  self.config.arch_weight_decay)
        self.arch_optimizer.apply(self._for_optimizer(grads), self.arch_vars)
        return metrics
