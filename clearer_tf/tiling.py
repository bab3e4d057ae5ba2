"""Tiled inference: restore a large image tile by tile, in bounded memory.

Tiles of `tile` x `tile` pixels overlap by `overlap` pixels; the last tile of a row or
column is aligned with the image's edge. Each tile is restored on its own (reflect-padded
inside the network, as a whole image is) and the outputs are blended with weights that ramp
linearly over the `overlap` pixels next to an inner tile edge, so tile seams do not show.
Memory then grows with the tile, not with the image: the network's activations for one
tile plus two float32 accumulators of the image's size.

`tile="auto"` tiles only images with more than `AUTO_TILE_PIXELS` pixels (tiles of
`AUTO_TILE`); `tile=None` or `0` never tiles.
"""

from __future__ import annotations

import numpy as np

AUTO_TILE = 512
AUTO_TILE_PIXELS = 1024 * 1024
DEFAULT_OVERLAP = 32


def check_tiling(tile, overlap):
    """ValueError (one line) unless `tile` is "auto", None/0 or an int >= 16 with
    0 <= `overlap` < tile / 2."""
    if tile == "auto" or not tile:
        tile = AUTO_TILE if tile == "auto" else None
    elif not isinstance(tile, (int, np.integer)) or isinstance(tile, bool) or tile < 16:
        raise ValueError(f"--tile must be 0 (no tiles), 'auto' or an integer >= 16, got {tile!r}")
    if not isinstance(overlap, (int, np.integer)) or isinstance(overlap, bool) or overlap < 0 or (
            tile and 2 * overlap >= tile):
        raise ValueError(f"--tile-overlap must be an integer >= 0 and below half the tile "
                         f"({tile}), got {overlap!r}")


def tile_for(shape, tile):
    """The tile side used for an NHWC `shape` (None: restore whole)."""
    if tile == "auto":
        return AUTO_TILE if shape[1] * shape[2] > AUTO_TILE_PIXELS else None
    return int(tile) if tile and (shape[1] > tile or shape[2] > tile) else None


def tile_starts(size, tile, overlap):
    """Start offsets along one axis: a stride of `tile - overlap`, the last tile at the end."""
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile, tile - overlap))
    return starts + [size - tile]


def _ramp(length, overlap, inner_start, inner_end):
    weight = np.ones(length, np.float32)
    if overlap:
        ramp = (np.arange(overlap, dtype=np.float32) + 0.5) / overlap
        if inner_start:
            weight[:overlap] = np.minimum(weight[:overlap], ramp)
        if inner_end:
            weight[-overlap:] = np.minimum(weight[-overlap:], ramp[::-1])
    return weight


def restore_tiled(predict, images, tile, overlap=DEFAULT_OVERLAP):
    """`predict` (NHWC -> NHWC) applied tile by tile to `images` and blended."""
    n, height, width, _ = images.shape
    rows, cols = tile_starts(height, tile, overlap), tile_starts(width, tile, overlap)
    total = weights = None
    for top in rows:
        th = min(tile, height)
        wy = _ramp(th, overlap, top > 0, top + th < height)
        for left in cols:
            tw = min(tile, width)
            out = np.asarray(predict(np.ascontiguousarray(images[:, top:top + th, left:left + tw])),
                             np.float32)
            if total is None:
                total = np.zeros((n, height, width, out.shape[-1]), np.float32)
                weights = np.zeros((height, width, 1), np.float32)
            w = (wy[:, None] * _ramp(tw, overlap, left > 0, left + tw < width)[None, :])[..., None]
            total[:, top:top + th, left:left + tw] += out * w
            weights[top:top + th, left:left + tw] += w
    total /= weights
    return total


def tiled(predict, tile="auto", overlap=DEFAULT_OVERLAP):
    """`predict` that restores images above the tile size tile by tile (see the module)."""
    check_tiling(tile, overlap)

    def run(images):
        side = tile_for(images.shape, tile)
        if side is None:
            return predict(images)
        return restore_tiled(predict, images, side, overlap)

    return run
