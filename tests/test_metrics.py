"""PSNR / SSIM against scikit-image and NumPy re-computations on real images."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from clearer_tf.metrics import PSNRMetric, SSIMMetric, psnr, ssim
from pipelines import list_images, read_image


def noisy_copy(clean, sigma, seed):
    rng = np.random.default_rng(seed)
    return np.clip(clean + rng.normal(0.0, sigma / 255.0, clean.shape), 0, 1).astype(np.float32)


def sk_ssim(a, b):
    return structural_similarity(
        np.float64(a), np.float64(b), data_range=1.0, gaussian_weights=True, sigma=1.5,
        use_sample_covariance=False, channel_axis=-1)


def sk_psnr(restored, reference):
    return peak_signal_noise_ratio(np.float64(reference), np.float64(restored), data_range=1.0)


def np_luma(rgb):
    """MATLAB rgb2ycbcr Y channel of [0, 1] RGB, written independently of the library."""
    rgb = np.float64(rgb)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return ((16.0 + 65.481 * r + 128.553 * g + 24.966 * b) / 255.0)[..., None]


def np_psnr(a, b):
    return 10 * np.log10(1.0 / np.mean((np.float64(a) - np.float64(b)) ** 2))


def test_grayscale_matches_skimage_on_set12(set12_dir):
    for i, path in enumerate(list_images(set12_dir)):
        clean = read_image(path, 1)
        noisy = noisy_copy(clean, (15, 30, 50)[i % 3], seed=i)
        assert abs(psnr(noisy[None], clean[None])[0] - sk_psnr(noisy, clean)) < 1e-4
        assert abs(ssim(noisy[None], clean[None])[0] - sk_ssim(noisy, clean)) < 1e-5


def test_rgb_matches_skimage_on_bsds(bsds_val_dir):
    paths = list_images(bsds_val_dir)[:4]
    for i, path in enumerate(paths):
        clean = read_image(path, 3)
        noisy = noisy_copy(clean, 25, seed=i)
        assert abs(psnr(noisy[None], clean[None])[0] - sk_psnr(noisy, clean)) < 1e-4
        assert abs(ssim(noisy[None], clean[None])[0] - sk_ssim(noisy, clean)) < 1e-5


def test_batches_give_per_image_values_and_accept_tensors(set12_dir):
    paths = list_images(set12_dir)[:3]  # all 256x256
    clean = np.stack([read_image(p, 1) for p in paths])
    noisy = np.stack([noisy_copy(c, 10 * (k + 1), seed=k) for k, c in enumerate(clean)])
    expected_p = [sk_psnr(n, c) for n, c in zip(noisy, clean)]
    expected_s = [sk_ssim(n, c) for n, c in zip(noisy, clean)]
    for args in ((noisy, clean), (tf.constant(noisy), tf.constant(clean))):
        p, s = psnr(*args), ssim(*args)
        assert isinstance(p, np.ndarray) and p.shape == (3,) and s.shape == (3,)
        np.testing.assert_allclose(p, expected_p, atol=1e-4)
        np.testing.assert_allclose(s, expected_s, atol=1e-5)
    assert p[0] > p[1] > p[2]  # more noise, lower PSNR


def test_known_values():
    clean = np.full((1, 32, 32, 3), 0.5, np.float32)
    assert np.isclose(psnr(clean + 0.1, clean)[0], 20.0, atol=1e-4)  # MSE 0.01
    assert np.isinf(psnr(clean, clean)[0])
    assert np.isclose(ssim(clean, clean)[0], 1.0, atol=1e-6)
    assert np.isclose(psnr(clean * 255 + 25.5, clean * 255, data_range=255.0)[0], 20.0, atol=1e-4)


def test_y_channel_and_border_crop_match_numpy(bsds_val_dir):
    for i, path in enumerate(list_images(bsds_val_dir)[:3]):
        clean = read_image(path, 3)
        noisy = noisy_copy(clean, 20, seed=i)
        y_noisy, y_clean = np_luma(noisy), np_luma(clean)
        y_psnr = psnr(noisy[None], clean[None], y_channel=True)[0]
        y_ssim = ssim(noisy[None], clean[None], y_channel=True)[0]
        assert abs(y_psnr - np_psnr(y_noisy, y_clean)) < 1e-4
        assert abs(y_ssim - sk_ssim(y_noisy, y_clean)) < 1e-5
        b = 7
        crop = (slice(b, -b), slice(b, -b))
        assert abs(psnr(noisy[None], clean[None], crop_border=b)[0]
                   - np_psnr(noisy[crop], clean[crop])) < 1e-4
        assert abs(ssim(noisy[None], clean[None], crop_border=b)[0]
                   - sk_ssim(noisy[crop], clean[crop])) < 1e-5
        both_p = psnr(noisy[None], clean[None], y_channel=True, crop_border=b)[0]
        assert abs(both_p - np_psnr(y_noisy[crop], y_clean[crop])) < 1e-4
        # The options change the value (the test can fail).
        assert abs(both_p - psnr(noisy[None], clean[None])[0]) > 1e-2


def test_y_channel_is_identity_on_grayscale(set12_dir):
    clean = read_image(list_images(set12_dir)[0], 1)
    noisy = noisy_copy(clean, 30, seed=0)
    assert psnr(noisy[None], clean[None], y_channel=True)[0] == psnr(noisy[None], clean[None])[0]


def test_metric_classes_average_images_and_serialise(set12_dir):
    paths = list_images(set12_dir)[:4]
    clean = np.stack([read_image(p, 1) for p in paths])
    noisy = np.stack([noisy_copy(c, 25, seed=k) for k, c in enumerate(clean)])
    for cls, fn in ((PSNRMetric, psnr), (SSIMMetric, ssim)):
        metric = cls(crop_border=2)
        metric.update_state(clean[:1], noisy[:1])
        metric.update_state(clean[1:], noisy[1:])
        assert np.isclose(float(metric.result()), fn(noisy, clean, crop_border=2).mean(), atol=1e-5)
        clone = cls.from_config(metric.get_config())
        assert clone.get_config() == metric.get_config()
        assert keras.metrics.deserialize(keras.metrics.serialize(metric)).crop_border == 2
        metric.reset_state()
        assert float(metric.result()) == 0.0


def test_metric_classes_in_compile_and_evaluate(set12_dir):
    clean = np.stack([read_image(p, 1) for p in list_images(set12_dir)[:4]])
    noisy = np.stack([noisy_copy(c, 25, seed=k) for k, c in enumerate(clean)])
    inputs = keras.Input((None, None, 1))
    model = keras.Model(inputs, keras.layers.Identity()(inputs))
    model.compile(loss="mse", metrics=[PSNRMetric(), SSIMMetric()])
    result = model.evaluate(noisy, clean, batch_size=2, verbose=0, return_dict=True)
    assert np.isclose(result["psnr"], psnr(noisy, clean).mean(), atol=1e-4)
    assert np.isclose(result["ssim"], ssim(noisy, clean).mean(), atol=1e-5)


JAX_SCRIPT = """
import json, sys
import numpy as np
from clearer_tf.metrics import psnr, ssim
data = np.load(sys.argv[1])
x, y = data["x"], data["y"]
print(json.dumps([float(psnr(x, y)[0]), float(ssim(x, y, y_channel=True)[0])]))
"""


def test_same_values_on_jax_backend(bsds_val_dir, tmp_path):
    pytest.importorskip("jax")
    clean = read_image(list_images(bsds_val_dir)[0], 3)[None]
    noisy = noisy_copy(clean, 25, seed=0)
    np.savez(tmp_path / "pair.npz", x=noisy, y=clean)
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", JAX_SCRIPT, str(tmp_path / "pair.npz")], env=env,
                         capture_output=True, text=True, check=True, cwd=os.getcwd())
    jax_psnr, jax_ssim = json.loads(out.stdout.strip().splitlines()[-1])
    assert abs(jax_psnr - psnr(noisy, clean)[0]) < 1e-4
    assert abs(jax_ssim - ssim(noisy, clean, y_channel=True)[0]) < 1e-5
