"""Tiled inference: restore a large image tile by tile, in bounded memory.

Tiles of `tile` x `tile` pixels overlap by `overlap` pixels; the last tile of a row or
column is aligned with the (padded) image's edge. The image is reflect-padded to the
network's multiple first and tile offsets are multiples of it, so each tile sees the same
padding and downsampling grid as the whole image; outputs are blended with weights that
ignore the outer quarter of each overlap and ramp linearly over its middle half, so tile
seams do not show.
Memory then grows with the tile, not with the image: the network's activations for one
tile plus two float32 accumulators of the image's size.

`tile="auto"` tiles only images with more than `AUTO_TILE_PIXELS` pixels (tiles of
`AUTO_TILE`); `tile=None` or `0` never tiles.
"""

from __future__ import annotations

import numpy as np

AUTO_TILE = 512
AUTO_TILE_PIXELS = 1024 * 1024
DEFAULT_OVERLAP = 96


def check_tiling(tile, overlap):
    """ValueError (one line) unless `tile` is "auto", None/0 or an int >= 16 with
    0 <= `overlap` <= tile / 2."""
    if tile == "auto" or not tile:
        tile = AUTO_TILE if tile == "auto" else None
    elif not isinstance(tile, (int, np.integer)) or isinstance(tile, bool) or tile < 16:
        raise ValueError(f"--tile must be 0 (no tiles), 'auto' or an integer >= 16, got {tile!r}")
    if not isinstance(overlap, (int, np.integer)) or isinstance(overlap, bool) or overlap < 0 or (
            tile and 2 * overlap > tile):
        raise ValueError(f"--tile-overlap must be an integer from 0 to half the tile "
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
    """Blend weights along one axis: next to an inner tile edge, ~0 over the outer quarter of
    the overlap (pixels that lack context), then linear up to 1 over its middle half."""
    weight = np.ones(length, np.float32)
    if overlap:
        margin = overlap // 4
        ramp = (np.arange(overlap, dtype=np.float32) + 0.5 - margin) / max(overlap - 2 * margin, 1)
        ramp = np.clip(ramp, 1e-6, 1.0)
        if inner_start:
            weight[:overlap] = np.minimum(weight[:overlap], ramp)
        if inner_end:
            weight[-overlap:] = np.minimum(weight[-overlap:], ramp[::-1])
    return weight


def _round_up(value, multiple):
    return -(-value // multiple) * multiple


def restore_tiled(predict, images, tile, overlap=DEFAULT_OVERLAP, multiple=1):
    """`predict` (NHWC -> NHWC) applied tile by tile to `images` and blended.

    The image is first reflect-padded (bottom/right) to a multiple of `multiple`, as the
    network pads a whole image, and tile, overlap and tile offsets are multiples of it, so
    every tile sees the whole image's padding and downsampling grid; the output is cropped
    back.
    """
    n, height, width, _ = images.shape
    tile, overlap = _round_up(tile, multiple), _round_up(overlap, multiple)
    pad_h, pad_w = (-height) % multiple, (-width) % multiple
    if pad_h or pad_w:
        images = np.pad(images, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="reflect")
    full_h, full_w = height + pad_h, width + pad_w
    rows, cols = tile_starts(full_h, tile, overlap), tile_starts(full_w, tile, overlap)
    total = weights = None
    for top in rows:
        th = min(tile, full_h)
        wy = _ramp(th, overlap, top > 0, top + th < full_h)
        for left in cols:
            tw = min(tile, full_w)
            out = np.asarray(predict(np.ascontiguousarray(images[:, top:top + th, left:left + tw])),
                             np.float32)
            if total is None:
                total = np.zeros((n, full_h, full_w, out.shape[-1]), np.float32)
                weights = np.zeros((full_h, full_w, 1), np.float32)
            w = (wy[:, None] * _ramp(tw, overlap, left > 0, left + tw < full_w)[None, :])[..., None]
            total[:, top:top + th, left:left + tw] += out * w
            weights[top:top + th, left:left + tw] += w
    total /= weights
    return total[:, :height, :width]


def tiled(predict, tile="auto", overlap=DEFAULT_OVERLAP, multiple=8):
    """`predict` that restores images above the tile size tile by tile (see the module);
    `multiple`: the network's 2**cells."""
    check_tiling(tile, overlap)

    def run(images):
        side = tile_for(images.shape, tile)
        if side is None:
            return predict(images)
        return restore_tiled(predict, images, side, overlap, multiple)

    return run
