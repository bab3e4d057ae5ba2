"""Search losses (paper Eqs. 2-5), `keras.ops` only, so they run on every backend.

    L = L_res + lambda_1 * L_arch + lambda_2 * L_comp                       (Eq. 2)

* `restoration_loss`: L_res, the mean squared error (Eq. 3).
* `arch_loss`: L_arch, the mean binary entropy of the softmax weights (Eq. 4 with the
  sign fixed in the authors' rebuttal). It is largest at w = 0.5, so minimising it
  pushes every column towards a clear choice. The authors' code uses log base 10
  (with lambda_1 = 0.01), which is the default here.
* `complexity_loss`: L_comp, the expected normalised cost of the columns (Eq. 5);
  the costs come from `clearer_tf.complexity.column_costs`.

Restoration losses (`--loss`, `SearchConfig.loss`, `TrainConfig.loss`) are named in
`RESTORATION_LOSSES`: `mse` (the paper), `l1`, `charbonnier` and `log_ssim` (-log10 SSIM, as
HiNAS), or a weighted sum of them such as `mse+0.5*log_ssim` (`parse_loss_spec`). Add one with
`@register_restoration_loss("name")`.
"""

import math
import re

import keras
from keras import ops

from clearer_tf.metrics import ssim_tensor

CHARBONNIER_EPS = 1e-3
SSIM_FLOOR = 1e-6  # log_ssim: SSIM clipped from below so the loss stays finite

RESTORATION_LOSSES = {}


def register_restoration_loss(name):
    """Decorator: make `fn(restored, clean) -> scalar` available as `SearchConfig.loss`."""

    def register(fn):
        RESTORATION_LOSSES[name] = fn
        return fn

    return register


_TERM = re.compile(r"^(?:(\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)\s*\*\s*)?([a-z_0-9]+)$")


def parse_loss_spec(spec):
    """`"mse+0.5*log_ssim"` -> `[(1.0, "mse"), (0.5, "log_ssim")]`; ValueError naming the
    problem for anything else (unknown names, weights <= 0, repeated terms)."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"--loss: expected a name or a sum like 'mse+0.5*log_ssim', got {spec!r}")
    terms = []
    for part in spec.replace(" ", "").split("+"):
        match = _TERM.match(part)
        if not match:
            raise ValueError(f"--loss {spec!r}: cannot read the term {part!r} (expected NAME or WEIGHT*NAME)")
        weight, name = float(match.group(1) or 1.0), match.group(2)
        if name not in RESTORATION_LOSSES:
            raise ValueError(f"--loss {spec!r}: unknown loss {name!r}; known: "
                             f"{', '.join(sorted(RESTORATION_LOSSES))}")
        if not weight > 0 or not math.isfinite(weight):
            raise ValueError(f"--loss {spec!r}: the weight of {name!r} must be > 0, got {weight}")
        if name in [n for _, n in terms]:
            raise ValueError(f"--loss {spec!r}: {name!r} appears twice")
        terms.append((weight, name))
    return terms


def get_restoration_loss(spec):
    """`fn(restored, clean) -> scalar` for a loss name or weighted sum (`parse_loss_spec`)."""
    terms = parse_loss_spec(spec)
    if len(terms) == 1 and terms[0][0] == 1.0:
        return RESTORATION_LOSSES[terms[0][1]]

    def weighted_sum(restored, clean):
        return sum(w * RESTORATION_LOSSES[name](restored, clean) for w, name in terms)

    weighted_sum.__name__ = "+".join(f"{w:g}*{n}" for w, n in terms)
    return weighted_sum


@register_restoration_loss("mse")
def restoration_loss(restored, clean):
    """L_res (Eq. 3): mean squared error over all pixels of the batch (float32)."""
    restored = ops.cast(restored, "float32")
    clean = ops.cast(clean, "float32")
    return ops.mean(ops.square(restored - clean))


@keras.saving.register_keras_serializable(package="clearer_tf")
class RestorationLoss(keras.losses.Loss):
    """A restoration loss spec (`"l1"`, `"mse+0.5*log_ssim"`, ...) as a Keras loss for `compile`.

    Example:
    >>> model.compile(optimizer="adam", loss=RestorationLoss("mse+0.5*log_ssim"))
    """

    def __init__(self, spec="mse", name=None, **kwargs):
        super().__init__(name=name or spec, **kwargs)
        self.spec = spec
        self.fn = get_restoration_loss(spec)

    def call(self, y_true, y_pred):
        return self.fn(y_pred, y_true)

    def get_config(self):
        return {**super().get_config(), "spec": self.spec}


@register_restoration_loss("l1")
def l1_loss(restored, clean):
    """Mean absolute error over all pixels of the batch."""
    return ops.mean(ops.abs(ops.cast(restored, "float32") - ops.cast(clean, "float32")))


@register_restoration_loss("charbonnier")
def charbonnier_loss(restored, clean, eps=CHARBONNIER_EPS):
    """Charbonnier (smooth L1): mean of sqrt((restored - clean)^2 + eps^2), eps = 1e-3."""
    d = ops.cast(restored, "float32") - ops.cast(clean, "float32")
    return ops.mean(ops.sqrt(d * d + eps * eps))


@register_restoration_loss("log_ssim")
def log_ssim_loss(restored, clean):
    """-log10 of the batch's mean SSIM (data range 1; `clearer_tf.metrics.ssim_tensor`,
    scikit-image's Gaussian SSIM), as HiNAS; SSIM is floored at 1e-6."""
    value = ops.mean(ssim_tensor(ops.cast(restored, "float32"), ops.cast(clean, "float32")))
    return -ops.log10(ops.maximum(value, SSIM_FLOOR))


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
