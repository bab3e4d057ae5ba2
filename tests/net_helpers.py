"""A network with weights of realistic scale (fresh ones are N(0, 0.001): output ~ 0, so any
comparison of two restorations would pass)."""

import numpy as np


def randomise(model, seed=0):
    """He-scaled conv kernels, plausible BatchNorm statistics; returns `model`."""
    rng = np.random.default_rng(seed)
    for v in model.weights:
        shape, name = tuple(v.shape), v.path
        if "moving_variance" in name:
            value = rng.uniform(0.5, 1.5, shape)
        elif "moving_mean" in name or "beta" in name:
            value = rng.normal(0, 0.1, shape)
        elif "gamma" in name:
            value = rng.uniform(0.8, 1.2, shape)
        else:  # conv kernels: He-like scale
            value = rng.normal(0, np.sqrt(2.0 / np.prod(shape[:-1])), shape)
        v.assign(value.astype(np.float32))
    return model
