"""The search step on JAX: a stateless `train_step(state, data)` that Keras compiles with `jax.jit`.

`state` is Keras' `(trainable, non_trainable, optimizer, metrics)` value lists; the optimiser
values are both sub-optimisers' states (`optimizers.search_optimizer`). Warm-up and search share
one program: the architecture step is always computed, and its result (alpha, Adam's state with
its step counter) is kept only once the search iteration reaches `warmup` (a traced flag), so
XLA compiles the supernet once (minutes on a GPU) instead of twice. Under
`keras.distribution.DataParallel` (several devices, or several processes) the batch is sharded
and XLA computes the global-batch losses, BatchNorm statistics and gradients.
"""

import contextlib

import jax
import jax.numpy as jnp
import keras
from keras import ops

from clearer_tf.search import optimizers
from clearer_tf.search.objective import clip_and_decay


def replicas_in_sync():
    """Devices the batch is split over (`keras.distribution.DataParallel`), else 1."""
    distribution = keras.distribution.distribution()
    if distribution is None:
        return 1
    mesh = distribution.device_mesh
    return dict(zip(mesh.axis_names, mesh.shape)).get(getattr(distribution, "batch_dim_name", None), 1)


class JaxSearchStep:
    def variable_scope(self):
        return contextlib.nullcontext()

    def replicas_on_gpus(self):
        return False

    def train_step(self, state, data):
        self.traces = getattr(self, "traces", 0) + 1  # runs when jax.jit traces, not per step
        trainable, non_trainable, opt_values, metric_values = state
        (xw, yw), (xa, ya), _ = keras.utils.unpack_x_y_sample_weight(data)
        _, weight_slice, arch_slice = self.optimizer_slices
        opt_values = list(opt_values)
        weights = [trainable[i] for i in self.weight_pos]
        alphas = [trainable[i] for i in self.arch_pos]
        iteration = opt_values[self.iteration_index]

        new_alphas, new_arch_opt, arch = self._arch_step(weights, alphas, non_trainable, opt_values[arch_slice],
                                                         xa, ya)
        update = iteration >= self.config.warmup
        alphas = [jnp.where(update, new, old) for new, old in zip(new_alphas, alphas)]
        opt_values[arch_slice] = [jnp.where(update, new, old) for new, old in zip(new_arch_opt,
                                                                                 opt_values[arch_slice])]
        weights, non_trainable, opt_values[weight_slice], weight = self._weight_step(
            weights, alphas, non_trainable, opt_values[weight_slice], xw, yw)
        opt_values[self.iteration_index] = iteration + 1

        mapping = list(zip(self.metrics_variables, metric_values))
        with keras.StatelessScope(state_mapping=mapping) as scope:
            logs = self.record(weight, arch, ops.cast(update, "float32"))
        metric_values = [scope.get_current_value(v) for v, _ in mapping]
        return logs, (self._tvals(weights, alphas), non_trainable, opt_values, metric_values)

    def _tvals(self, weights, alphas):
        values = [None] * (len(weights) + len(alphas))
        for i, v in zip(self.weight_pos, weights):
            values[i] = v
        for i, v in zip(self.arch_pos, alphas):
            values[i] = v
        return values

    def _weight_step(self, weights, alphas, stats, opt_values, x, y):
        c = self.config

        def loss_fn(weights):
            pred, new_stats = self.supernet.stateless_call(self._tvals(weights, alphas), stats, x, training=True)
            return self.restoration(pred, y), new_stats

        (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(weights)
        grads, norm = clip_and_decay(grads, weights, c.grad_clip, c.weight_decay)
        lr = optimizers.learning_rate(self.weight_optimizer, opt_values)
        weights, opt_values = self.weight_optimizer.stateless_apply(opt_values, grads, weights)
        return weights, stats, opt_values, {"loss": loss, "grad_norm": norm, "lr": lr}

    def _arch_step(self, weights, alphas, stats, opt_values, x, y):
        def objective(alphas):
            pred, _ = self.supernet.stateless_call(self._tvals(weights, alphas), stats, x,
                                                   training=self.arch_bn_training)
            return self.objective(pred, y, alphas)

        (_, metrics), grads = jax.value_and_grad(objective, has_aux=True)(alphas)
        grads, _ = clip_and_decay(grads, alphas, None, self.config.arch_weight_decay)
        alphas, opt_values = self.arch_optimizer.stateless_apply(opt_values, grads, alphas)
        return alphas, opt_values, metrics
