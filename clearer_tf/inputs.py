"""Checks on the images handed to a restorer, before any work.

Rank and channel count must match the network, values must be finite; values far above 1
(an image on the 0-255 scale) are restored but warned about, since the networks expect
[0, 1] and would silently return garbage.
"""

from __future__ import annotations

import warnings

import numpy as np

RANGE_WARNING_ABOVE = 3.0
"""A float input whose maximum exceeds this looks like 0-255 data (noisy [0, 1] images,
even unclipped at sigma 75, stay below about 2.2)."""


class InputRangeWarning(UserWarning):
    """A float image far outside [0, 1]: probably on the 0-255 scale."""


def check_images(images, channels, what="image") -> np.ndarray:
    """`images` as a float32 NHWC array; ValueError (one line) on a wrong rank, channel count
    or non-finite values, an `InputRangeWarning` when the maximum is far above 1."""
    images = np.asarray(images)
    if images.ndim != 4 or (channels is not None and images.shape[-1] != channels):
        expected = f"[batch, height, width, {channels if channels is not None else 'C'}]"
        raise ValueError(f"{what}: expected shape {expected}, got {list(images.shape)}")
    if images.dtype.kind not in "fiub":
        raise ValueError(f"{what}: expected a numeric array, got dtype {images.dtype}")
    images = images.astype(np.float32, copy=False)
    finite = np.isfinite(images)
    if not finite.all():
        bad = int(images.size - np.count_nonzero(finite))
        raise ValueError(f"{what}: {bad} NaN or Inf value(s); restoring them would make the "
                         "whole output NaN")
    peak = float(images.max()) if images.size else 0.0
    if peak > RANGE_WARNING_ABOVE:
        warnings.warn(f"{what}: maximum {peak:g} is far above 1; the network expects values in "
                      "[0, 1] (divide 8-bit images by 255)", InputRangeWarning, stacklevel=3)
    return images
