"""Item lists (no TensorFlow): `(name, clean)` or `(name, degraded, clean)` float32 HWC arrays in
[0, 1], their checks, and the by-image split of one folder into two disjoint sets."""

from __future__ import annotations

import numpy as np

from pipelines.errors import DataError
from pipelines.noise import name_seed


def check_items(items, patch_size: int | None = None) -> tuple[bool, int]:
    """Validates an item list; returns (paired, channels)."""
    if not items:
        raise DataError("no images: the item list is empty")
    lengths = {len(item) for item in items}
    if not lengths <= {2, 3} or len(lengths) != 1:
        raise DataError("items must all be (name, clean) or all be (name, degraded, clean)")
    paired = lengths == {3}
    channels = set()
    names = set()
    for item in items:
        name, arrays = item[0], item[1:]
        if name in names:
            raise DataError(f"image name '{name}' appears twice in the item list")
        names.add(name)
        for a in arrays:
            if np.ndim(a) != 3:
                raise DataError(f"image '{name}' must be HxWxC, got shape {np.shape(a)}")
            channels.add(np.shape(a)[-1])
        if paired and np.shape(arrays[0]) != np.shape(arrays[1]):
            raise DataError(f"image '{name}': degraded {np.shape(arrays[0])} and clean "
                            f"{np.shape(arrays[1])} differ in size")
        height, width = np.shape(arrays[-1])[:2]
        if patch_size is not None and min(height, width) < patch_size:
            raise DataError(f"image '{name}' is {width}x{height}, smaller than "
                            f"--patch-size {patch_size}")
    if len(channels) != 1:
        raise DataError(f"items mix channel counts {sorted(channels)}")
    return paired, channels.pop()


def split_by_image(items, fraction: float = 0.8, seed: int = 0) -> tuple[list, list]:
    """Splits items into two disjoint lists by image; `fraction` of them go to the first."""
    if not 0.0 < float(fraction) < 1.0:
        raise DataError(f"--split-fraction must be in (0, 1), got {fraction!r}")
    check_items(items)
    if len(items) < 2:
        raise DataError(f"cannot split {len(items)} image(s) into two non-empty sets")
    first_count = min(max(int(round(fraction * len(items))), 1), len(items) - 1)
    order = np.random.default_rng(name_seed("split", seed)).permutation(len(items))
    chosen = set(order[:first_count].tolist())
    first = [item for i, item in enumerate(items) if i in chosen]
    second = [item for i, item in enumerate(items) if i not in chosen]
    return first, second


def is_8bit(arrays) -> bool:
    """Whether float arrays hold exactly 8-bit values in [0, 1] (then stored as uint8, losslessly)."""
    arrays = [np.asarray(a, np.float32) for a in arrays]
    return all(a.min() >= 0.0 and a.max() <= 1.0 and np.array_equal(np.round(a * 255.0) / np.float32(255.0), a)
               for a in arrays)


def arch_seed(weights_items, arch_items, seed):
    """The architecture stream's seed of a search (None for None); DataError if the weight and
    architecture items share an image name."""
    shared = {item[0] for item in weights_items} & {item[0] for item in arch_items}
    if shared:
        raise DataError(f"weights and architecture data share {len(shared)} image(s): "
                        f"{', '.join(sorted(shared)[:8])}")
    return None if seed is None else name_seed("arch", seed) % 2**62
