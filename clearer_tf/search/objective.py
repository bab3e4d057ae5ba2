"""What the two steps of the search minimise, in `keras.ops` (every backend).

* weight step: L_res (`SearchConfig.loss`, MSE by default) on a weight batch, BatchNorm in
  training mode; gradients clipped to a global norm, then coupled L2 weight decay added
  (`clip_and_decay`, as torch's `clip_grad_norm_` + `torch.optim.SGD(weight_decay=...)`).
* architecture step: L = L_res + lambda_1 L_arch + lambda_2 L_comp (paper Eq. 2) on an
  architecture batch (`arch_objective`), gradients to alpha only, coupled decay, no clipping.
"""

from __future__ import annotations

import keras
from keras import ops

from clearer_tf import complexity, latency, losses
from clearer_tf.presets import SearchConfig, SupernetConfig


def validate(supernet_config: SupernetConfig, search_config: SearchConfig, replicas: int = 1):
    """Raises ValueError (one line) for settings the supernet, `fit` or the devices cannot run."""
    c = search_config
    multiple = supernet_config.multiple
    if c.patch_size % multiple:
        raise ValueError(
            f"--patch-size {c.patch_size} must be a multiple of {multiple} "
            f"(2**cells for {supernet_config.num_cells} cells)"
        )
    if c.batch_size % replicas:
        raise ValueError(f"--batch-size {c.batch_size} must be divisible by the {replicas} replicas")
    if c.log_every < 1 or c.iterations % c.log_every:
        raise ValueError(
            f"--iterations ({c.iterations}) must be a multiple of --log-every ({c.log_every}): "
            "one Keras epoch is one log period"
        )
    if c.checkpoint_every < 1 or c.checkpoint_every % c.log_every:
        raise ValueError(
            f"checkpoint_every ({c.checkpoint_every}) must be a multiple of --log-every ({c.log_every})"
        )
    losses.get_restoration_loss(c.loss)
    if c.arch_batchnorm not in ("inference", "batch"):
        raise ValueError(f"arch_batchnorm must be 'inference' or 'batch', got {c.arch_batchnorm!r}")
    if c.cost not in complexity.COST_MEASURES and c.cost != "latency":
        raise ValueError(f"unknown cost measure {c.cost!r}")
    latency.check_search_options(c)


def clip_and_decay(grads, params, clip_norm, decay):
    """torch `clip_grad_norm_(clip_norm)` then coupled L2 decay: g * min(1, c / (|g| + 1e-6)) + decay * p.

    Returns the new gradients and the global norm before clipping.
    """
    norm = ops.sqrt(sum(ops.sum(ops.square(g)) for g in grads))
    scale = 1.0 if clip_norm is None else ops.minimum(1.0, clip_norm / (norm + 1e-6))
    return [g * scale + decay * ops.cast(p, g.dtype) for g, p in zip(grads, params)], norm


def batch_psnr(restored, clean):
    """Mean per-image PSNR (dB) of the clipped output; MSE floored at 1e-10 (<= 100 dB)."""
    restored = ops.clip(ops.cast(restored, "float32"), 0.0, 1.0)
    mse = ops.mean(ops.square(restored - ops.cast(clean, "float32")), axis=(1, 2, 3))
    return ops.mean(-10.0 * ops.log10(ops.maximum(mse, 1e-10)))


class ArchObjective:
    """L = L_res + lambda_1 L_arch + lambda_2 L_comp (Eq. 2) for one supernet.

    Args:
        config: the `SearchConfig` (loss, lambdas, log base).
        costs: `(columns, 2)` normalised candidate costs (`complexity.column_costs`).
    """

    def __init__(self, config: SearchConfig, costs):
        self.config = config
        self.costs = costs
        self.restoration = losses.get_restoration_loss(config.loss)

    def __call__(self, restored, clean, alphas):
        """The total (to differentiate) and its parts, keyed as the search logs them."""
        c = self.config
        weights = ops.softmax(ops.stack(alphas), axis=-1)
        res = self.restoration(restored, clean)
        entropy = losses.arch_loss(weights, c.arch_log_base)
        comp = losses.complexity_loss(weights, self.costs)
        total = res + c.lambda_arch * entropy + c.lambda_comp * comp
        return total, {
            "arch_loss": total,
            "arch_res": res,
            "arch_entropy": entropy,
            "arch_comp": comp,
            "arch_psnr": batch_psnr(restored, clean),
        }


def batch_norm_layers(model):
    return [
        layer
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
