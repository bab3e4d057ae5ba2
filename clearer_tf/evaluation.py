"""Evaluation with the paper's protocols, on whole images or on 64x64 patches.

* Whole image ("CLEARER"): each test image is degraded once with a fixed seed
  (deterministic noise), restored at full size (reflect-padded to a multiple of 2**cells
  and cropped back), clipped to [0, 1] and compared with the clean image.
* Patches ("CLEARER-P"): the same restored and clean images are cut into
  non-overlapping `patch_size` x `patch_size` patches (grid from the top-left corner,
  incomplete border patches dropped); PSNR/SSIM are averaged over all patches.
* x8 self-ensemble (optional, either protocol): the degraded image is restored under
  each of the 8 rotations/flips, each result is transformed back, and the 8 are averaged.

Metrics are `clearer_tf.metrics.psnr` / `ssim` (data range 1; optional BT.601 Y channel
and border crop). `predict` is any function NHWC float32 -> NHWC float32 of the same
size: `keras_predictor(model)`, `saved_model_predictor(path)`, or
`clearer_tf.export.tflite_predictor(path)`; `load_predictor` picks one from a path.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import re
import time
from dataclasses import dataclass

import numpy as np

from clearer_tf import files
from clearer_tf.inputs import check_images
from clearer_tf.metrics import psnr, ssim
from clearer_tf.tiling import DEFAULT_OVERLAP, tiled

PATCH_SIZE = 64
SSIM_WINDOW = 11
TRANSFORMS = 8


@dataclass
class EvalConfig:
    """How to evaluate.

    Args:
        ensemble: x8 rotation/flip self-ensemble.
        patches: also compute the patch protocol (CLEARER-P).
        patch_size: side of the non-overlapping patches.
        y_channel: compare the BT.601 luma of RGB images.
        crop_border: pixels dropped on each side before the metrics (both protocols;
            patches are cut from the cropped image).
        seed: seed of the deterministic degradation.
    """

    ensemble: bool = False
    patches: bool = False
    patch_size: int = PATCH_SIZE
    y_channel: bool = False
    crop_border: int = 0
    seed: int = 0

    def __post_init__(self):
        if not isinstance(self.patch_size, int) or self.patch_size < 11:
            raise ValueError(f"--patch-size must be an integer >= 11 (SSIM window), got {self.patch_size!r}")
        if not isinstance(self.crop_border, int) or self.crop_border < 0:
            raise ValueError(f"--crop-border must be a non-negative integer, got {self.crop_border!r}")

    def describe(self, degradation=None) -> dict:
        protocol = {
            "whole_image": "CLEARER: whole image restored at full size (reflect-padded to a "
                           "multiple of 2**cells inside the model, cropped back), output clipped "
                           "to [0, 1]; PSNR/SSIM per image, mean over images",
            "patches": None,
            "self_ensemble": (
                "x8: restore each of the 8 rotations/flips (rot90 by k, then a left-right flip "
                "for k >= 4), invert each, average" if self.ensemble else "none"
            ),
            "degradation": {"type": "real pairs"} if degradation is None else degradation.describe(),
            "degradation_seed": self.seed,
            "metrics": {
                "data_range": 1.0,
                "channels": "BT.601 Y (MATLAB rgb2ycbcr)" if self.y_channel else "all channels",
                "crop_border": self.crop_border,
                "psnr": "10 log10(1 / MSE), MSE over H, W, C",
                "ssim": "Gaussian 11x11 window, sigma 1.5, K1 0.01, K2 0.03, valid region "
                        "(= skimage structural_similarity, gaussian_weights=True, "
                        "use_sample_covariance=False)",
            },
        }
        if self.patches:
            protocol["patches"] = (
                f"CLEARER-P: non-overlapping {self.patch_size}x{self.patch_size} patches cut "
                "from the whole-image restoration and the clean image (after the border crop), "
                "grid from the top-left corner, incomplete border patches dropped; summary = "
                "mean over all patches of all images, per-image rows = mean over that image's patches"
            )
        return protocol


# --- the 8 transforms ------------------------------------------------------------------
def dihedral(images, k):
    """Transform k of 8 of an NHWC array: rot90 (counter-clockwise) by k % 4, then a
    left-right flip if k >= 4 (the order of `pipelines.streams.dihedral`)."""
    out = np.rot90(images, k % 4, axes=(1, 2))
    return out[:, :, ::-1] if k >= 4 else out


def inverse_dihedral(images, k):
    """Undo `dihedral(., k)`."""
    out = images[:, :, ::-1] if k >= 4 else images
    return np.rot90(out, -(k % 4), axes=(1, 2))


def restore(predict, degraded, ensemble=False):
    """Restored NHWC float32 of `degraded`; with `ensemble` the mean over the 8 transforms."""
    degraded = np.asarray(degraded, np.float32)
    if not ensemble:
        return np.asarray(predict(degraded), np.float32)
    total = np.zeros(degraded.shape, np.float64)
    for k in range(TRANSFORMS):
        out = np.asarray(predict(np.ascontiguousarray(dihedral(degraded, k))), np.float32)
        total += inverse_dihedral(out, k)
    return (total / TRANSFORMS).astype(np.float32)


# --- predictors ------------------------------------------------------------------------
def guarded(fn, channels, tile="auto", overlap=DEFAULT_OVERLAP, multiple=8):
    """`fn` (NHWC float32 -> NHWC float32) behind the input checks of `clearer_tf.inputs`
    and tiled above the tile size (`clearer_tf.tiling`; `multiple`: the network's 2**cells);
    `.channels` is set."""
    run = tiled(fn, tile, overlap, multiple)

    def predict(images):
        return run(check_images(images, channels))

    predict.channels = channels
    return predict


def keras_predictor(model, multiple=None, tile="auto", overlap=DEFAULT_OVERLAP):
    """NHWC -> NHWC with a Keras model at any size (wrapped with `with_padding` unless it
    already pads); checked input, tiles above the tile size (`guarded`)."""
    from clearer_tf.network import PadToMultiple, with_padding

    if not any(isinstance(layer, PadToMultiple) for layer in model.layers):
        model = with_padding(model, multiple)
    multiple = next(layer.multiple for layer in model.layers if isinstance(layer, PadToMultiple))

    def predict(images):
        return np.asarray(model.predict_on_batch(images), np.float32)

    return guarded(predict, model.input_shape[-1], tile, overlap, multiple)


def saved_model_predictor(path, signature="serving_default", tile="auto", overlap=DEFAULT_OVERLAP):
    """NHWC float32 -> NHWC float32 through a SavedModel signature (`image` -> `restored`);
    checked input, tiles above the tile size (`guarded`)."""
    import tensorflow as tf

    loaded = tf.saved_model.load(os.fspath(path))
    fn = loaded.signatures[signature]

    def predict(images):
        return fn(image=tf.constant(images, tf.float32))["restored"].numpy()

    record = _json_file(os.path.join(os.fspath(path), "assets.extra", "clearer.json")) or {}
    guarded_predict = guarded(predict, int(fn.structured_input_signature[1]["image"].shape[-1]),
                              tile, overlap, network_multiple(record))
    guarded_predict.loaded = loaded  # keep the trackable alive
    return guarded_predict


def _json_file(path):
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def network_multiple(record) -> int:
    """2**cells of the genotype in an export record (clearer.json), else 8 (3 cells)."""
    cells = (record.get("genotype") or {}).get("cells")
    return 2 ** len(cells) if isinstance(cells, list) and cells else 8


def _saved_model_training(saved_model_dir):
    record = _json_file(os.path.join(saved_model_dir, "assets.extra", "clearer.json")) or {}
    return (record.get("training") or {}).get("data") or {}


def _summary_data(folder):
    return (_json_file(os.path.join(folder, "train_summary.json")) or {}).get("data") or {}


def _tflite_training(path):
    from clearer_tf.export import tflite_metadata

    data = (tflite_metadata(path).get("training") or {}).get("data")
    if data:
        return data
    match = re.search(r"-v(\d+)-[a-z0-9]+\.tflite$", os.path.basename(path))  # <name>/tflite/
    if match:
        return _saved_model_training(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(path))),
                                                  match.group(1)))
    return {}


def _keras_training(path):
    data = (files.keras_metadata(path).get("training") or {}).get("data")
    return data or _summary_data(os.path.dirname(os.path.abspath(path)))


def load_predictor(path, tile="auto", overlap=DEFAULT_OVERLAP):
    """(predict, description, channels) for a training out dir, a `.keras` file, a
    SavedModel (a version folder or its `saved_models/<name>` parent) or a `.tflite` file.

    `description["training_data"]` is the training data record the model carries (task,
    channels, degradation; {} where none is recorded). Raises ValueError naming `path`
    when it is none of these.
    """
    path = os.fspath(path)
    if path.endswith(".tflite") and os.path.isfile(path):
        from clearer_tf.export import tflite_predictor

        predict = tflite_predictor(path, tile=tile, overlap=overlap)
        info = {"kind": "tflite", "path": path, "training_data": _tflite_training(path)}
        return predict, info, predict.channels
    if os.path.isdir(path) and not os.path.exists(os.path.join(path, "saved_model.pb")):
        from clearer_tf.pretrained import saved_model_version

        try:
            path = saved_model_version(path)  # saved_models/<name>: its newest version
        except ValueError:
            pass
    if os.path.exists(os.path.join(path, "saved_model.pb")):
        predict = saved_model_predictor(path, tile=tile, overlap=overlap)
        info = {"kind": "saved_model", "path": path, "training_data": _saved_model_training(path)}
        return predict, info, predict.channels
    if os.path.isdir(path) and os.path.exists(os.path.join(path, "genotype.json")):
        from clearer_tf.network import build_network

        weights = os.path.join(path, "best.weights.h5")
        if not os.path.exists(weights):
            raise ValueError(f"{path}: training folder without best.weights.h5 (training not run yet?)")
        model = build_network(os.path.join(path, "genotype.json"))
        files.load_weights(model, weights)
        info = {"kind": "training_dir", "path": path, "weights": weights,
                "training_data": _summary_data(path)}
        return keras_predictor(model, tile=tile, overlap=overlap), info, model.input_shape[-1]
    keras_file = os.path.join(path, "model.keras") if os.path.isdir(path) else path
    if keras_file.endswith(".keras") and os.path.isfile(keras_file):
        model = files.load_model(keras_file)
        info = {"kind": "keras", "path": keras_file, "training_data": _keras_training(keras_file)}
        return keras_predictor(model, tile=tile, overlap=overlap), info, model.input_shape[-1]
    raise ValueError(
        f"--model-dir {path}: not a training folder (genotype.json + best.weights.h5), a "
        ".keras file, a SavedModel folder or a .tflite file"
    )


# --- metrics ---------------------------------------------------------------------------
def _crop(image, border):
    return image[border:image.shape[0] - border, border:image.shape[1] - border] if border else image


def cut_patches(image, size):
    """Non-overlapping size x size patches of an HWC image (top-left grid), as NHWC."""
    rows, cols = image.shape[0] // size, image.shape[1] // size
    if not rows or not cols:
        return np.zeros((0, size, size, image.shape[2]), image.dtype)
    grid = image[: rows * size, : cols * size].reshape(rows, size, cols, size, image.shape[2])
    return grid.transpose(0, 2, 1, 3, 4).reshape(rows * cols, size, size, image.shape[2])


def image_metrics(restored, clean, config: EvalConfig):
    """Whole-image and (optionally) per-patch PSNR/SSIM of one HWC image pair."""
    y, b = config.y_channel, config.crop_border
    out = {
        "psnr": float(psnr(restored[None], clean[None], y_channel=y, crop_border=b)[0]),
        "ssim": float(ssim(restored[None], clean[None], y_channel=y, crop_border=b)[0]),
    }
    if config.patches:
        r = cut_patches(_crop(restored, b), config.patch_size)
        c = cut_patches(_crop(clean, b), config.patch_size)
        out["patch_psnr_values"] = psnr(r, c, y_channel=y) if len(r) else np.zeros(0)
        out["patch_ssim_values"] = ssim(r, c, y_channel=y) if len(r) else np.zeros(0)
    return out


def check_eval_sizes(items, config: EvalConfig):
    """ValueError (one line, naming the image) if an image is too small for SSIM's 11x11
    window after the border crop, checked before any restoration."""
    need = SSIM_WINDOW + 2 * config.crop_border
    for item in items:
        height, width = np.shape(item[-1])[:2]
        if min(height, width) < need:
            raise ValueError(
                f"image '{item[0]}' is {width}x{height}: smaller than SSIM's {SSIM_WINDOW}x{SSIM_WINDOW} "
                f"window plus 2 x --crop-border {config.crop_border} ({need}x{need})")


def describe_degradation(degradation) -> str:
    """`gaussian sigma 50`, `gaussian sigma 10-70`, `synthetic rain` or `real pairs`."""
    if degradation is None:
        return "real pairs"
    described = degradation.describe()
    if described.get("type") == "gaussian":
        sigma = described["sigma"]
        return f"gaussian sigma {'-'.join(f'{s:g}' for s in sigma) if isinstance(sigma, (list, tuple)) else f'{sigma:g}'}"
    return f"synthetic {described.get('type', 'degradation')}"


def degrade_items(items, degradation=None, seed=0):
    """`(name, degraded, clean)` triples; clean-only items get the deterministic
    `degradation.apply_eval(clean, name, seed)`."""
    out = []
    for item in items:
        name, clean = item[0], np.asarray(item[-1], np.float32)
        if len(item) == 3:
            degraded = np.asarray(item[1], np.float32)
        elif degradation is None:
            raise ValueError(f"image '{name}' has no degraded partner and no degradation was given")
        else:
            degraded = degradation.apply_eval(clean, name, seed)
        out.append((name, degraded, clean))
    return out


@dataclass
class EvalResult:
    """`rows`: one dict per image; `summary`: means and the protocol; `images`: (name,
    degraded, restored, clean) arrays for saving and the comparison sheet."""

    rows: list
    summary: dict
    images: list


def evaluate(predict, items, degradation=None, config: EvalConfig | None = None,
             description: dict | None = None) -> EvalResult:
    """Restores and scores every item.

    Args:
        predict: NHWC float32 -> NHWC float32 (see the module docstring).
        items: `(name, clean)` (degraded here, deterministically) or `(name, degraded, clean)`.
        degradation: `GaussianNoise` / `RainStreaks` for clean-only items.
        config: `EvalConfig`.
        description: extra fields for the summary (model, data folder, ...).

    Example:
    >>> predict, info, channels = load_predictor("runs/train")
    >>> items = load_eval_items("denoise", "data/samples/set12", channels)
    >>> result = evaluate(predict, items, GaussianNoise(50), EvalConfig(ensemble=True, patches=True))
    >>> write_report(result, "runs/eval", save_images=True)
    """
    config = config or EvalConfig()
    check_eval_sizes(items, config)
    rows, images, all_patch_psnr, all_patch_ssim = [], [], [], []
    warmed = set()
    for name, degraded, clean in degrade_items(items, degradation, config.seed):
        if degraded.shape not in warmed:  # compile / trace outside the timed call
            restore(predict, degraded[None], config.ensemble)
            warmed.add(degraded.shape)
        start = time.perf_counter()
        restored = restore(predict, degraded[None], config.ensemble)[0]
        runtime = time.perf_counter() - start
        restored = np.clip(restored, 0.0, 1.0)
        if restored.shape != clean.shape:
            raise ValueError(f"image '{name}': restored shape {restored.shape} != clean {clean.shape}")
        m = image_metrics(restored, clean, config)
        row = {
            "name": name,
            "height": clean.shape[0],
            "width": clean.shape[1],
            "input_psnr": float(psnr(degraded[None], clean[None], y_channel=config.y_channel,
                                     crop_border=config.crop_border)[0]),
            "psnr": m["psnr"],
            "ssim": m["ssim"],
        }
        if config.patches:
            row["patches"] = len(m["patch_psnr_values"])
            row["patch_psnr"] = float(np.mean(m["patch_psnr_values"])) if row["patches"] else float("nan")
            row["patch_ssim"] = float(np.mean(m["patch_ssim_values"])) if row["patches"] else float("nan")
            all_patch_psnr.extend(m["patch_psnr_values"].tolist())
            all_patch_ssim.extend(m["patch_ssim_values"].tolist())
        row["runtime_s"] = runtime
        rows.append(row)
        images.append((name, degraded, restored, clean))

    mean = {key: float(np.mean([r[key] for r in rows]))
            for key in ("input_psnr", "psnr", "ssim", "runtime_s")}
    if config.patches:
        mean["patch_psnr"] = float(np.mean(all_patch_psnr)) if all_patch_psnr else float("nan")
        mean["patch_ssim"] = float(np.mean(all_patch_ssim)) if all_patch_ssim else float("nan")
        mean["patches"] = len(all_patch_psnr)
    summary = {
        "protocol": config.describe(degradation),
        "config": dataclasses.asdict(config),
        "images": len(rows),
        "mean": mean,
        "runtime": "seconds per image for the restoration only (all 8 passes with the "
                   "ensemble), after one untimed warm-up call per image size",
    }
    summary.update(description or {})
    return EvalResult(rows, summary, images)


# --- reports ---------------------------------------------------------------------------
def _to_uint8(image):
    return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def save_png(path, image):
    """HWC float [0, 1] -> 8-bit PNG, written atomically."""
    from PIL import Image

    array = _to_uint8(image)
    array = array[..., 0] if array.shape[-1] == 1 else array
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    files.write_bytes(path, buffer.getvalue())


def comparison_sheet(result: EvalResult, path, count=3):
    """PNG grid: one row per image, degraded | restored | ground truth, PSNR in the titles."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen = list(zip(result.images, result.rows))[:count]
    if not chosen:
        return None
    fig, axes = plt.subplots(len(chosen), 3, figsize=(12, 4 * len(chosen)), squeeze=False)
    for i, ((name, degraded, restored, clean), row) in enumerate(chosen):
        panels = ((degraded, f"{name}: degraded, {row['input_psnr']:.2f} dB"),
                  (restored, f"restored, {row['psnr']:.2f} dB"),
                  (clean, "ground truth"))
        for ax, (image, title) in zip(axes[i], panels):
            image = np.clip(image, 0.0, 1.0)
            ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=1)
            ax.set_title(title)
            ax.axis("off")
    fig.tight_layout()
    path = os.path.abspath(os.fspath(path))
    tmp = os.path.join(os.path.dirname(path), f".tmp-{os.getpid()}-{os.path.basename(path)}")
    fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    os.replace(tmp, path)
    return path


def write_report(result: EvalResult, out_dir, save_images=False, sheet_count=3):
    """Writes `per_image.csv`, `summary.json`, `comparison.png` and, on request,
    `restored/<name>.png` into `out_dir`; returns the summary."""
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    columns = list(result.rows[0]) if result.rows else ["name"]
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in result.rows:
        writer.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in row.items()})
    files.write_bytes(os.path.join(out_dir, "per_image.csv"), text.getvalue().encode())
    if save_images:
        for name, _, restored, _ in result.images:
            save_png(os.path.join(out_dir, "restored", f"{name}.png"), restored)
    if sheet_count:
        comparison_sheet(result, os.path.join(out_dir, "comparison.png"), sheet_count)
    summary = dict(result.summary)
    summary["files"] = {
        "per_image": "per_image.csv",
        "comparison_sheet": "comparison.png" if sheet_count and result.rows else None,
        "restored_images": "restored/" if save_images else None,
    }
    files.write_json(os.path.join(out_dir, "summary.json"), summary)
    return summary
