"""Evaluation protocols against independent NumPy / scikit-image computations."""

import csv
import json

import keras
import numpy as np
import pytest
from PIL import Image

from clearer_tf.evaluation import (
    EvalConfig,
    dihedral,
    evaluate,
    inverse_dihedral,
    keras_predictor,
    restore,
    write_report,
)
from pipelines.noise import GaussianNoise
from pipelines.tasks import load_eval_items

skimage_metrics = pytest.importorskip("skimage.metrics")
skimage_color = pytest.importorskip("skimage.color")


def fixed_conv(kernel, channels=1):
    """A Keras model applying a fixed 3x3 depthwise kernel (zero padding)."""
    inputs = keras.Input((None, None, channels))
    layer = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False)
    outputs = layer(inputs)
    layer.set_weights([np.repeat(np.asarray(kernel, np.float32)[:, :, None, None], channels, axis=2)])
    return keras.Model(inputs, outputs)


SMOOTH = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]]) / 16.0  # symmetric under all 8 transforms
SKEWED = np.array([[0, 0, 0], [0, 0.5, 0.5], [0, 0, 0]])  # averages with the right neighbour


def np_psnr(x, y):
    return 10 * np.log10(1.0 / np.mean((x.astype(np.float64) - y.astype(np.float64)) ** 2))


def sk_ssim(x, y):
    return skimage_metrics.structural_similarity(
        x, y, data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
        channel_axis=-1)


def np_patches(image, size):
    out = []
    for top in range(0, image.shape[0] - size + 1, size):
        for left in range(0, image.shape[1] - size + 1, size):
            out.append(image[top:top + size, left:left + size])
    return out


def test_whole_and_patch_metrics_match_numpy_and_skimage(tmp_path, set12_dir):
    items = load_eval_items("denoise", set12_dir, 1)[:3]
    model = fixed_conv(SMOOTH)
    noise = GaussianNoise(25.0)
    result = evaluate(keras_predictor(model), items, noise, EvalConfig(patches=True))
    summary = write_report(result, tmp_path, save_images=True, sheet_count=2)

    all_patch_psnr, all_patch_ssim = [], []
    for (name, clean), row, (_, degraded, restored, _) in zip(items, result.rows, result.images):
        # same inputs (deterministic noise) and the same restoration, computed independently
        np.testing.assert_array_equal(degraded, noise.apply_eval(clean, name, 0))
        expected = np.clip(np.asarray(model(degraded[None]))[0], 0, 1)
        np.testing.assert_allclose(restored, expected, atol=1e-6)
        assert row["psnr"] == pytest.approx(np_psnr(restored, clean), abs=1e-3)
        assert row["input_psnr"] == pytest.approx(np_psnr(degraded, clean), abs=1e-3)
        assert row["ssim"] == pytest.approx(sk_ssim(restored, clean), abs=1e-4)
        r_patches, c_patches = np_patches(restored, 64), np_patches(clean, 64)
        assert row["patches"] == len(r_patches) == (clean.shape[0] // 64) * (clean.shape[1] // 64)
        p = [np_psnr(a, b) for a, b in zip(r_patches, c_patches)]
        s = [sk_ssim(a, b) for a, b in zip(r_patches, c_patches)]
        assert row["patch_psnr"] == pytest.approx(np.mean(p), abs=1e-3)
        assert row["patch_ssim"] == pytest.approx(np.mean(s), abs=1e-4)
        all_patch_psnr += p
        all_patch_ssim += s
        assert row["psnr"] > row["input_psnr"] + 3  # the smoothing kernel does denoise

        saved = np.asarray(Image.open(tmp_path / "restored" / f"{name}.png"))
        np.testing.assert_array_equal(saved, np.round(restored[..., 0] * 255).astype(np.uint8))

    mean = summary["mean"]
    assert mean["psnr"] == pytest.approx(np.mean([r["psnr"] for r in result.rows]))
    assert mean["patch_psnr"] == pytest.approx(np.mean(all_patch_psnr), abs=1e-3)
    assert mean["patch_ssim"] == pytest.approx(np.mean(all_patch_ssim), abs=1e-4)
    assert mean["patches"] == len(all_patch_psnr)

    with open(tmp_path / "per_image.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == [name for name, _ in items]
    assert {"name", "psnr", "ssim", "patch_psnr", "patch_ssim", "runtime_s"} <= set(rows[0])
    assert float(rows[0]["psnr"]) == pytest.approx(result.rows[0]["psnr"], abs=1e-5)
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert "64x64" in on_disk["protocol"]["patches"] and on_disk["protocol"]["self_ensemble"] == "none"
    assert on_disk["protocol"]["degradation"]["sigma"] == 25.0
    sheet = Image.open(tmp_path / "comparison.png")
    assert sheet.format == "PNG" and sheet.size[0] > sheet.size[1] > 0


def test_rgb_y_channel_and_border_crop_match_skimage(bsds_val_dir):
    items = [(name, clean[:160, :200]) for name, clean in load_eval_items("denoise", bsds_val_dir, 3)[:2]]
    model = fixed_conv(SMOOTH, channels=3)
    config = EvalConfig(patches=True, y_channel=True, crop_border=4)
    result = evaluate(keras_predictor(model), items, GaussianNoise(30.0), config)
    for (_, clean), row, (_, _, restored, _) in zip(items, result.rows, result.images):
        y_r = skimage_color.rgb2ycbcr(restored.astype(np.float64))[..., :1] / 255.0
        y_c = skimage_color.rgb2ycbcr(clean.astype(np.float64))[..., :1] / 255.0
        y_r, y_c = y_r[4:-4, 4:-4], y_c[4:-4, 4:-4]
        assert row["psnr"] == pytest.approx(np_psnr(y_r, y_c), abs=1e-3)
        assert row["ssim"] == pytest.approx(sk_ssim(y_r, y_c), abs=1e-4)
        p = [np_psnr(a, b) for a, b in zip(np_patches(y_r, 64), np_patches(y_c, 64))]
        assert row["patches"] == len(p) == 2 * 3  # 152 x 192 after the crop
        assert row["patch_psnr"] == pytest.approx(np.mean(p), abs=1e-3)


def test_the_eight_transforms_are_distinct_and_inverted():
    x = np.random.default_rng(0).random((1, 5, 7, 2)).astype(np.float32)
    seen = [dihedral(x, k) for k in range(8)]
    expected = [np.rot90(x, k, axes=(1, 2)) for k in range(4)]
    expected += [np.rot90(x, k, axes=(1, 2))[:, :, ::-1] for k in range(4)]
    for k in range(8):
        np.testing.assert_array_equal(seen[k], expected[k])
        np.testing.assert_array_equal(inverse_dihedral(seen[k], k), x)
    assert len({a.tobytes() + bytes(a.shape) for a in seen}) == 8


def test_ensemble_equals_plain_for_identity_and_equivariant_models(set12_dir):
    name, clean = load_eval_items("denoise", set12_dir, 1)[0]
    noisy = GaussianNoise(50.0).apply_eval(clean, name, 0)[None, :200, :136]  # not square

    inputs = keras.Input((None, None, 1))
    identity = keras_predictor(keras.Model(inputs, inputs))
    calls = []

    def recording(images):
        calls.append(images.copy())
        return identity(images)

    out = restore(recording, noisy, ensemble=True)
    np.testing.assert_array_equal(out, noisy)
    assert len(calls) == 8
    for k, seen in enumerate(calls):  # each transform restored, then inverted
        np.testing.assert_array_equal(seen, dihedral(noisy, k))

    equivariant = keras_predictor(fixed_conv(SMOOTH))
    np.testing.assert_allclose(restore(equivariant, noisy, True), restore(equivariant, noisy, False),
                               atol=1e-6)
    # Sanity check that the comparison can fail: a direction-dependent model differs.
    skewed = keras_predictor(fixed_conv(SKEWED))
    assert np.abs(restore(skewed, noisy, True) - restore(skewed, noisy, False)).max() > 0.05

    items = [(name, clean[:200, :136])]
    plain = evaluate(equivariant, items, GaussianNoise(50.0), EvalConfig(patches=True))
    ensemble = evaluate(equivariant, items, GaussianNoise(50.0), EvalConfig(patches=True, ensemble=True))
    assert ensemble.rows[0]["psnr"] == pytest.approx(plain.rows[0]["psnr"], abs=1e-4)
    assert ensemble.rows[0]["patch_psnr"] == pytest.approx(plain.rows[0]["patch_psnr"], abs=1e-4)
    assert "x8" in ensemble.summary["protocol"]["self_ensemble"]
