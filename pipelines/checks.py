"""Up-front checks of a run's data, so that bad input fails before any work.

Search and training call these before building a model: a patch size that cannot be
cut, an image smaller than the patch, the same images for the weight and the
architecture steps, a validation image the network cannot restore.
"""

from __future__ import annotations

import numpy as np

from pipelines.errors import DataError
from pipelines.items import check_items


def check_patch_size(patch_size, multiple: int = 1) -> int:
    """`patch_size` as int; DataError unless it is a positive multiple of `multiple`."""
    if not isinstance(patch_size, (int, np.integer)) or isinstance(patch_size, bool) or (
            patch_size < 1 or patch_size % multiple):
        kind = f"a positive multiple of {multiple}" if multiple > 1 else "a positive integer"
        raise DataError(f"--patch-size must be {kind}, got {patch_size!r}")
    return int(patch_size)


def check_disjoint(weights_items, arch_items) -> None:
    """DataError if the weight and architecture images share a name (the same folder twice)."""
    shared = {item[0] for item in weights_items} & {item[0] for item in arch_items}
    if shared:
        raise DataError(f"weights and architecture data share {len(shared)} image(s) "
                        f"({', '.join(sorted(shared)[:8])}): give two different folders, or one "
                        "--data folder to split by image")


def check_patches(items, patch_size, what: str) -> None:
    """DataError naming `what` and the image when an image is smaller than the patch."""
    try:
        check_items(items, patch_size)
    except DataError as e:
        raise DataError(f"{what}: {e}") from None


def check_restorable(items, multiple: int, what: str = "--val-data") -> None:
    """DataError when a whole image is smaller than `multiple` (2**cells) on a side: the
    network's reflect padding and its `cells` halvings need at least that."""
    for item in items:
        height, width = np.shape(item[-1])[:2]
        if min(height, width) < multiple:
            raise DataError(f"{what}: image '{item[0]}' is {width}x{height}, smaller than the "
                            f"network's {multiple}x{multiple} (2**cells)")
