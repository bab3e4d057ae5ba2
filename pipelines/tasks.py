"""One entry point from (task, folders, sigma, colour) to items + degradation.

A task is data + a degradation + a channel count:

* `denoise`: folders of clean images, `GaussianNoise(sigma)`, grayscale unless `color`.
* `derain`: RGB; a folder with `rainy/` and `clean/` subfolders gives real pairs,
  `layout="side_by_side"` reads Rain800-style files, any other folder of clean images
  gets synthetic `RainStreaks`.

Without folders the bundled samples are used: denoise searches weights on
`data/samples/bsds/train` and the architecture on `data/samples/bsds/val`; derain splits
the 10 real Rain100L pairs in `data/samples/rain100l` by image (8 / 2 with the default
`split_fraction=0.8`).
"""

from __future__ import annotations

import pathlib
from dataclasses import dataclass, field

from pipelines.errors import DataError
from pipelines.images import check_channels, load_images
from pipelines.noise import GaussianNoise
from pipelines.pairs import load_pairs, load_side_by_side
from pipelines.rain import RainStreaks
from pipelines.items import split_by_image

SAMPLES = pathlib.Path(__file__).resolve().parents[1] / "data" / "samples"
TASKS = ("denoise", "derain")
LAYOUTS = ("auto", "pairs", "side_by_side", "clean")


@dataclass
class TaskData:
    """Everything the search/train scripts need about the data of one task."""

    task: str
    channels: int
    degradation: object  # GaussianNoise, RainStreaks, or None when all items are real pairs
    weights_items: list
    arch_items: list
    description: dict = field(default_factory=dict)


def sample_dir(*parts: str) -> pathlib.Path:
    """A folder of the bundled sample data, or a DataError saying it is missing."""
    path = SAMPLES.joinpath(*parts)
    if not path.is_dir():
        raise DataError(f"bundled sample data not found at {path}: use a full checkout of the "
                        "repository (pip install -e .) or pass --data")
    return path


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise DataError(f"--task must be one of {', '.join(TASKS)}, got {task!r}")


def _load_folder(task: str, folder, channels: int, layout: str) -> tuple[list, str]:
    """Items of one folder and their kind: 'clean', 'pairs' or 'side_by_side'."""
    if layout not in LAYOUTS:
        raise DataError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    folder = pathlib.Path(folder)
    if task == "denoise" and layout not in ("auto", "clean"):
        raise DataError(f"layout {layout!r} is for derain; denoise reads folders of clean images")
    if task == "derain" and layout == "auto":
        has_pairs = (folder / "rainy").is_dir() and (folder / "clean").is_dir()
        layout = "pairs" if has_pairs else "clean"
    if layout == "pairs":
        return load_pairs(folder / "rainy", folder / "clean", channels), "pairs"
    if layout == "side_by_side":
        return load_side_by_side(folder, channels), "side_by_side"
    return load_images(folder, channels), "clean"


def load_eval_items(task: str, folder, channels: int, layout: str = "auto") -> list:
    """Evaluation items of a folder: clean images (denoise, derain) or real pairs (derain)."""
    _check_task(task)
    return _load_folder(task, folder, check_channels(channels), layout)[0]


def load_task_data(task: str, *, data=None, weights_data=None, arch_data=None,
                   sigma=30.0, color: bool = False, split_fraction: float = 0.8, seed: int = 0,
                   clip: bool = True, layout: str = "auto", rain: RainStreaks | None = None
                   ) -> TaskData:
    """Loads the search data of `task` (see the module docstring for the folder rules).

    Give `data` (split by image with `split_fraction` and `seed`), or both `weights_data`
    and `arch_data`, or nothing (bundled samples). `rain` overrides the default
    `RainStreaks()` used on clean derain folders.
    """
    _check_task(task)
    if data is not None and (weights_data is not None or arch_data is not None):
        raise DataError("--data cannot be combined with --weights-data/--arch-data: give one "
                        "folder to split, or both --weights-data and --arch-data")
    if (weights_data is None) != (arch_data is None):
        given = "--weights-data" if weights_data is not None else "--arch-data"
        raise DataError(f"--weights-data and --arch-data must be given together (got only {given})")
    if data is None and weights_data is None:
        if task == "denoise":
            weights_data, arch_data = sample_dir("bsds", "train"), sample_dir("bsds", "val")
        else:
            data = sample_dir("rain100l")

    channels = (3 if color else 1) if task == "denoise" else 3
    noise = GaussianNoise(sigma, clip=clip) if task == "denoise" else None
    split = None
    if data is not None:
        items, kind = _load_folder(task, data, channels, layout)
        weights_items, arch_items = split_by_image(items, split_fraction, seed)
        kinds = (kind, kind)
        split = {"fraction": float(split_fraction), "seed": int(seed)}
    else:
        weights_items, weights_kind = _load_folder(task, weights_data, channels, layout)
        arch_items, arch_kind = _load_folder(task, arch_data, channels, layout)
        kinds = (weights_kind, arch_kind)

    if task == "denoise":
        degradation = noise
    else:
        degradation = (rain or RainStreaks()) if "clean" in kinds else None
    description = {
        "task": task,
        "channels": channels,
        "degradation": ({"type": "real_pairs"} if degradation is None
                        else degradation.describe()),
        "data": None if data is None else str(data),
        "weights_data": None if weights_data is None else str(weights_data),
        "arch_data": None if arch_data is None else str(arch_data),
        "layout": {"weights": kinds[0], "arch": kinds[1]},
        "split": split,
        "weights_images": [item[0] for item in weights_items],
        "arch_images": [item[0] for item in arch_items],
    }
    return TaskData(task, channels, degradation, weights_items, arch_items, description)
