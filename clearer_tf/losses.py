"""Search losses (paper Eqs. 2-5), `keras.ops` only, so they run on every backend.

    L = L_res + lambda_1 * L_arch + lambda_2 * L_comp                       (Eq. 2)

* `restoration_loss`: L_res, the mean squared error (Eq. 3).
* `arch_loss`: L_arch, the mean binary entropy of the softmax weights (Eq. 4 with the
  sign fixed in the authors' rebuttal). It is largest at w = 0.5, so minimising it
  pushes every column towards a clear choice. The authors' code uses log base 10
  (with lambda_1 = 0.01), which is the default here.
* `complexity_loss`: L_comp, the expected normalised cost of the columns (Eq. 5);
  the costs come from `clearer_tf.complexity.column_costs`.

Restoration losses are looked up by name (`SearchConfig.loss`) in
`RESTORATION_LOSSES`; add one with `@register_restoration_loss("name")`.
"""

import math

from keras import ops

RESTORATION_LOSSES = {}


def register_restoration_loss(name):
    """Decorator: make `fn(restored, clean) -> scalar` available as `SearchConfig.loss`."""

    def register(fn):
        RESTORATION_LOSSES[name] = fn
        return fn

    return register


def get_restoration_loss(name):
    if name not in RESTORATION_LOSSES:
        raise ValueError(f"unknown loss {name!r}; known: {', '.join(sorted(RESTORATION_LOSSES))}")
    return RESTORATION_LOSSES[name]


@register_restoration_loss("mse")
def restoration_loss(restored, clean):
    """L_res (Eq. 3): mean squared error over all pixels of the batch (float32)."""
    restored = ops.cast(restored, "float32")
    clean = ops.cast(clean, "float32")
    return ops.mean(ops.square(restored - clean))


def arch_loss(weights, log_base=10.0, eps=1e-6):
    """L_arch (Eq. 4, sign fixed): -(1/N) sum [w log w + (1 - w) log(1 - w)].

    Args:
        weights: softmax weights of any shape (here `(columns, 2)`); N is their count.
        log_base: base of the logarithm (10 as in the authors' code; `math.e` for nats).
        eps: weights are clipped to [eps, 1 - eps] so the loss and its gradient stay finite.
    """
    w = ops.clip(ops.cast(weights, "float32"), eps, 1.0 - eps)
    entropy = w * ops.log(w) + (1.0 - w) * ops.log(1.0 - w)
    return -ops.mean(entropy) / math.log(log_base)


def complexity_loss(weights, costs):
    """L_comp (Eq. 5): (1/columns) sum_columns (w_p C_p + w_f C_f).

    Args:
        weights: `(columns, 2)` softmax weights (parallel, fusion).
        costs: `(columns, 2)` normalised costs of the candidates (same order).
    """
    weights = ops.cast(weights, "float32")
    costs = ops.cast(ops.convert_to_tensor(costs), "float32")
    return ops.sum(weights * costs) / weights.shape[0]
