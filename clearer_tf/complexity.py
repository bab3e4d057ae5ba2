"""Cost of each column's candidates, for L_comp (paper Eq. 5).

`column_costs(model, measure)` returns a `(columns, 2)` array (parallel, fusion),
divided by the total over all candidate modules of the supernet, as in the paper.

Measures are looked up by name in `COST_MEASURES`; a measure is
`fn(module, input_shapes) -> float`, where `input_shapes` are the NHWC shapes of the
column's branches (batch 1). Add one (e.g. a measured latency table keyed by module
type and widths) with `@register_cost_measure("latency")`.
"""

import numpy as np

from clearer_tf import modules
from clearer_tf.supernet import mixed_columns

COST_MEASURES = {}


def register_cost_measure(name):
    """Decorator: make `fn(module, input_shapes) -> float` available as a cost measure."""

    def register(fn):
        COST_MEASURES[name] = fn
        return fn

    return register


@register_cost_measure("params")
def parameter_count(module, input_shapes):
    """Trainable parameters of the module (conv kernels + BN gamma/beta)."""
    return float(sum(int(np.prod(w.shape)) for w in module.trainable_weights))


@register_cost_measure("flops")
def multiply_adds(module, input_shapes):
    """Multiply-adds of the module's convolutions at the given input sizes (analytic).

    BN, ReLU, additions and upsampling are not counted.
    """
    return float(_macs(module, input_shapes)[0])


def _macs(layer, shape):
    """(multiply-adds, output shape) of `layer` on input `shape` (a list for multi-branch)."""
    if isinstance(layer, modules.ConvBN):
        out = layer.compute_output_shape(shape)
        return out[1] * out[2] * layer.kernel_size**2 * shape[-1] * layer.filters, out
    if isinstance(layer, (modules.ResidualUnit, modules.Upsample, modules.Downsample)):
        parts = {
            modules.ResidualUnit: lambda unit: [unit.conv1, unit.conv2],
            modules.Upsample: lambda up: [up.conv],
            modules.Downsample: lambda down: down.convs,
        }[type(layer)](layer)
        total, out = 0, shape
        for part in parts:
            macs, out = _macs(part, out)
            total += macs
        return total, layer.compute_output_shape(shape)
    if isinstance(layer, modules.ParallelModule):
        return sum(_macs(unit, s)[0] for unit, s in zip(layer.units, shape)), list(shape)
    if isinstance(layer, modules.FusionModule):
        # paths["i_j"] maps input branch j to output branch i
        total = sum(_macs(path, shape[int(key.split("_")[1])])[0] for key, path in layer.paths.items())
        return total, layer.compute_output_shape(shape)
    raise NotImplementedError(f"flops: no multiply-add rule for {type(layer).__name__}")


def column_costs(model, measure="params", height=64, width=64):
    """Normalised `(columns, 2)` costs [C_parallel, C_fusion] of the supernet's columns.

    Args:
        model: the supernet (`build_supernet`).
        measure: a name in `COST_MEASURES` ("params" or "flops").
        height, width: full-resolution input size (used by size-dependent measures).
    """
    if measure not in COST_MEASURES:
        raise ValueError(f"unknown cost measure {measure!r}; known: {', '.join(sorted(COST_MEASURES))}")
    fn = COST_MEASURES[measure]
    rows = []
    for column in mixed_columns(model):
        shapes = [(1, height // 2**i, width // 2**i, c) for i, c in enumerate(column.widths)]
        rows.append([fn(column.parallel, shapes), fn(column.fusion, shapes)])
    costs = np.asarray(rows, dtype=np.float64)
    return costs / costs.sum()
