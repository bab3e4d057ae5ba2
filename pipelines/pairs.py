"""Real (degraded, clean) image pairs: two matched folders, or side-by-side files."""

from __future__ import annotations

import numpy as np

from pipelines.errors import DataError
from pipelines.images import load_images


def _short(names, limit: int = 8) -> str:
    names = sorted(names)
    more = f" ... ({len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def clean_name_for(rainy_name: str, clean_names) -> str | None:
    """The clean partner of a rainy file stem: identical stem, or `rain-NNN` -> `norain-NNN`."""
    if rainy_name in clean_names:
        return rainy_name
    if rainy_name.startswith("rain") and "no" + rainy_name in clean_names:
        return "no" + rainy_name
    return None


def load_pairs(rainy_dir, clean_dir, channels: int = 3) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(rainy stem, degraded, clean) for every matched pair of files in the two folders.

    Every file must have a partner of the same size; otherwise one DataError lists them.
    """
    rainy = dict(load_images(rainy_dir, channels))
    clean = dict(load_images(clean_dir, channels))
    partner = {r: clean_name_for(r, clean) for r in rainy}
    unmatched_rainy = [r for r, c in partner.items() if c is None]
    unmatched_clean = set(clean) - set(partner.values())
    if unmatched_rainy or unmatched_clean:
        raise DataError(
            f"unmatched pairs between {rainy_dir} and {clean_dir}: "
            f"rainy without clean [{_short(unmatched_rainy)}], "
            f"clean without rainy [{_short(unmatched_clean)}]"
        )
    size = lambda a: f"{a.shape[1]}x{a.shape[0]}"  # noqa: E731 (W x H)
    mismatched = [f"{r} {size(rainy[r])} vs {c} {size(clean[c])}"
                  for r, c in partner.items() if rainy[r].shape != clean[c].shape]
    if mismatched:
        raise DataError(
            f"size-mismatched pairs between {rainy_dir} and {clean_dir} (WxH): {_short(mismatched)}"
        )
    return [(r, rainy[r], clean[partner[r]]) for r in sorted(rainy)]


def load_side_by_side(folder, channels: int = 3) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(stem, rainy, clean) from files holding clean on the left half and rainy on the right.

    This is the Rain800 layout; for an odd width the middle column is dropped.
    """
    out = []
    for name, image in load_images(folder, channels):
        width = image.shape[1]
        if width < 2:
            raise DataError(f"{folder}/{name}: width {width} is too small to split into two halves")
        half = width // 2
        out.append((name, image[:, width - half:], image[:, :half]))
    return out
