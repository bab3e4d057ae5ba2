"""The two optimisers of the search in one Keras optimiser state.

As the authors' PyTorch code:
* weights: SGD, momentum 0.9, learning rate cosine from `weight_lr` to `weight_lr_min` over the
  search (Keras SGD keeps the learning rate inside the velocity, torch outside; identical at
  constant lr); clipping and coupled weight decay are applied to the gradients first.
* alpha: Adam, lr `arch_lr`, betas (`arch_beta_1`, `arch_beta_2`), coupled weight decay.

Both live in one `keras.optimizers.MultiOptimizer` (alpha -> Adam, everything else -> SGD), so
`model.optimizer.variables` holds both states: the JAX trainer carries them through its
stateless `train_step`, and `save_weights` / `BackupAndRestore` / TensorBoard see both. The
search applies each sub-optimiser on its own (the architecture step comes before the weight
step, on other gradients) and advances the MultiOptimizer's own counter, which so counts
search iterations; SGD's counter counts weight steps, Adam's architecture steps.
"""

from __future__ import annotations

import keras

from clearer_tf.presets import SearchConfig


def weight_schedule(config: SearchConfig):
    return keras.optimizers.schedules.CosineDecay(
        config.weight_lr, config.iterations, alpha=config.weight_lr_min / config.weight_lr
    )


def weight_optimizer(config: SearchConfig):
    return keras.optimizers.SGD(weight_schedule(config), momentum=config.weight_momentum, name="weight_sgd")


def arch_optimizer(config: SearchConfig):
    return keras.optimizers.Adam(
        config.arch_lr, beta_1=config.arch_beta_1, beta_2=config.arch_beta_2, epsilon=1e-8, name="arch_adam"
    )


def search_optimizer(arch_vars, weights=None, arch=None):
    """`MultiOptimizer`: `arch` (Adam) for the variables in `arch_vars`, `weights` (SGD) for the rest."""
    mapping = keras.optimizers.OptimizerMap(weights, {v.path: arch for v in arch_vars})
    return keras.optimizers.MultiOptimizer(mapping, name="search")


def parts(optimizer):
    """(weight optimiser, arch optimiser) of a `search_optimizer`."""
    mapping = optimizer._optimizer_map
    return mapping.default_optimizer, next(iter(mapping.values()))


def slices(optimizer):
    """Index ranges of (own, weight optimiser, arch optimiser) variables in `optimizer.variables`."""
    weights, arch = parts(optimizer)
    position = {id(v): i for i, v in enumerate(optimizer.variables)}

    def span(variables):
        idx = [position[id(v)] for v in variables]
        assert idx == list(range(idx[0], idx[0] + len(idx))), "optimizer variables not contiguous"
        return slice(idx[0], idx[0] + len(idx))

    own = span(optimizer._variables)
    return own, span(weights.variables), span(arch.variables)


def learning_rate(optimizer, values=None):
    """The learning rate `optimizer` applies at its next step.

    `values`: the optimizer's variable values (a stateless step); default: its variables.
    """
    lr = optimizer._learning_rate
    if values is None:
        return optimizer._get_current_learning_rate()
    position = {id(v): i for i, v in enumerate(optimizer.variables)}
    if isinstance(lr, keras.Variable):
        return values[position[id(lr)]]
    return lr(values[position[id(optimizer.iterations)]]) if callable(lr) else lr
