"""Image folders: sorted listing, decoding to float32 [0, 1], a per-folder cache."""

from __future__ import annotations

import pathlib
import warnings

import numpy as np
from PIL import Image

from pipelines.errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
# MATLAB rgb2gray (ITU-R BT.601 luma) weights.
LUMA_WEIGHTS = (0.298936021, 0.587043074, 0.114020904)

_CACHE: dict = {}


def check_channels(channels, argument: str = "channels") -> int:
    """Returns `channels` as int, or raises DataError unless it is 1 or 3."""
    if channels not in (1, 3) or isinstance(channels, bool):
        raise DataError(f"{argument} must be 1 (grayscale) or 3 (RGB), got {channels!r}")
    return int(channels)


class BrokenLinkWarning(UserWarning):
    """A data folder holds image links that lead nowhere (skipped)."""


def _resolves(path) -> bool:
    try:
        return path.exists()
    except OSError:  # a symlink loop (ELOOP) on some Python versions
        return False


def list_images(folder) -> list[pathlib.Path]:
    """Image files (png/jpg/jpeg/bmp/tif/tiff) in `folder`, sorted by name; not recursive."""
    folder = pathlib.Path(folder)
    if not folder.exists():
        raise DataError(f"{folder}: folder does not exist")
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder")
    entries = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    broken = [p.name for p in entries if p.is_symlink() and not _resolves(p)]
    if broken:
        warnings.warn(f"{folder}: skipping {len(broken)} broken link(s) (dangling or a loop): "
                      f"{', '.join(broken[:8])}{' ...' if len(broken) > 8 else ''}",
                      BrokenLinkWarning, stacklevel=2)
    files = [p for p in entries if p.is_file()]
    if not files:
        raise DataError(f"{folder}: no images ({'/'.join(e[1:] for e in IMAGE_EXTENSIONS)}) found")
    return files


def rgb_to_luma(rgb_uint8: np.ndarray) -> np.ndarray:
    """MATLAB `rgb2gray` on uint8 data: BT.601 weights, rounded half away from zero."""
    r, g, b = (rgb_uint8[..., i].astype(np.float64) for i in range(3))
    luma = LUMA_WEIGHTS[0] * r + LUMA_WEIGHTS[1] * g + LUMA_WEIGHTS[2] * b
    return np.floor(luma + 0.5).clip(0, 255).astype(np.uint8)


def read_image(path, channels: int) -> np.ndarray:
    """Decodes one image file to float32 (H, W, channels) in [0, 1].

    channels=1 gives MATLAB-style rounded luma of colour files; channels=3 gives RGB
    (grayscale files are repeated). 16-bit grayscale files are scaled by 1/65535.
    """
    channels = check_channels(channels)
    path = pathlib.Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                gray = np.asarray(im, dtype=np.float64) / 65535.0
                out = gray[..., None].astype(np.float32)
                return np.repeat(out, channels, axis=-1)
            if im.mode in ("1", "L", "LA"):
                out = np.asarray(im.convert("L"))[..., None]
            else:
                rgb = np.asarray(im.convert("RGB"))
                out = rgb_to_luma(rgb)[..., None] if channels == 1 else rgb
    except FileNotFoundError:
        raise DataError(f"{path}: file does not exist") from None
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, ... on bad files
        raise DataError(f"{path}: cannot decode image ({type(e).__name__}: {e})") from None
    if out.shape[-1] != channels:
        out = np.repeat(out, channels, axis=-1)
    return out.astype(np.float32) / 255.0


def load_images(folder, channels: int) -> list[tuple[str, np.ndarray]]:
    """All images of `folder` as (file stem, float32 HWC array), sorted by file name.

    Decoded once per (folder, channels) and cached (re-read if the files change); the
    cached arrays are read-only, copy before modifying them in place.
    """
    channels = check_channels(channels)
    files = list_images(folder)
    key = (str(pathlib.Path(folder).resolve()), channels)
    stats = [p.stat() for p in files]
    signature = tuple((p.name, st.st_size, st.st_mtime_ns) for p, st in zip(files, stats))
    if key not in _CACHE or _CACHE[key][0] != signature:  # re-read when files changed
        stems = [p.stem for p in files]
        duplicates = sorted({s for s in stems if stems.count(s) > 1})
        if duplicates:
            raise DataError(f"{folder}: several files share the name(s) {duplicates}")
        items = []
        for p in files:
            image = read_image(p, channels)
            image.flags.writeable = False
            items.append((p.stem, image))
        _CACHE[key] = (signature, items)
    return list(_CACHE[key][1])


def clear_cache() -> None:
    """Forgets every decoded folder (e.g. after files changed on disk)."""
    _CACHE.clear()
