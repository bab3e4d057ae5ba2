"""PSNR and SSIM for image restoration, on NHWC batches, with Keras metric classes.

Convention of the paper's tables (the authors' code): PSNR on the grayscale (denoising)
or RGB (deraining) image in [0, 1], data range 1, no Y channel, no border crop, averaged
over images. (Their SSIM uses `pytorch_ssim`, an 11x11 Gaussian window with zero padding;
ours follows scikit-image's valid-region SSIM, the common reference.)

* `psnr`: 10 log10(data_range^2 / MSE) per image (MSE over H, W and C).
* `ssim`: Gaussian 11x11 window, sigma 1.5, K1 0.01, K2 0.03, population covariances,
  mean over the valid (unpadded) region and over channels; equal to
  `skimage.metrics.structural_similarity(..., data_range=1, gaussian_weights=True,
  sigma=1.5, use_sample_covariance=False, channel_axis=-1)`.
* `y_channel=True` compares BT.601 luma of RGB inputs, as MATLAB `rgb2ycbcr` on [0, 1]
  data: Y = (16 + 65.481 R + 128.553 G + 24.966 B) / 255 (inputs scaled by data_range).
* `crop_border=b` drops b pixels on each side first.

Only `keras.ops` is used, so everything runs on the TensorFlow and JAX backends.
"""

from __future__ import annotations


import keras
import numpy as np
from keras import ops

WINDOW_SIZE = 11
WINDOW_SIGMA = 1.5
K1, K2 = 0.01, 0.03
Y_WEIGHTS = (65.481, 128.553, 24.966)


def _prepare(images, data_range, y_channel, crop_border):
    images = ops.cast(ops.convert_to_tensor(images), "float32")
    if len(images.shape) == 3:
        images = images[None]
    if len(images.shape) != 4:
        raise ValueError(f"expected NHWC images, got shape {tuple(images.shape)}")
    if y_channel and images.shape[-1] == 3:
        weights = ops.convert_to_tensor(np.array(Y_WEIGHTS, np.float32) / 255.0)
        luma = ops.sum(images / data_range * weights, axis=-1, keepdims=True) + 16.0 / 255.0
        images = luma * data_range
    if crop_border:
        b = int(crop_border)
        images = images[:, b:-b, b:-b, :]
    return images


def _pair(restored, reference, data_range, y_channel, crop_border):
    x = _prepare(restored, data_range, y_channel, crop_border)
    y = _prepare(reference, data_range, y_channel, crop_border)
    if tuple(x.shape[1:]) != tuple(y.shape[1:]):
        raise ValueError(
            f"restored {tuple(x.shape)} and reference {tuple(y.shape)} differ in shape")
    return x, y


def psnr_tensor(restored, reference, data_range=1.0, y_channel=False, crop_border=0):
    """Per-image PSNR in dB as a backend tensor of shape [N] (inf for identical images)."""
    x, y = _pair(restored, reference, data_range, y_channel, crop_border)
    mse = ops.mean(ops.square(x - y), axis=(1, 2, 3))
    return 10.0 * ops.log10(float(data_range) ** 2 / mse)


def _gaussian_window():
    t = np.arange(WINDOW_SIZE) - (WINDOW_SIZE - 1) / 2
    g = np.exp(-0.5 * (t / WINDOW_SIGMA) ** 2)
    return (g / g.sum()).astype(np.float32)


def ssim_tensor(restored, reference, data_range=1.0, y_channel=False, crop_border=0):
    """Per-image SSIM as a backend tensor of shape [N] (mean over valid region and channels)."""
    x, y = _pair(restored, reference, data_range, y_channel, crop_border)
    height, width, channels = x.shape[1], x.shape[2], x.shape[3]
    if height is not None and width is not None and min(height, width) < WINDOW_SIZE:
        raise ValueError(
            f"SSIM needs images of at least {WINDOW_SIZE}x{WINDOW_SIZE}, got {height}x{width}")
    # Variances from mean-centred data: identical maths, less float32 cancellation.
    x_mean = ops.mean(x, axis=(1, 2), keepdims=True)
    y_mean = ops.mean(y, axis=(1, 2), keepdims=True)
    xc, yc = x - x_mean, y - y_mean
    stack = ops.concatenate([xc, yc, xc * xc, yc * yc, xc * yc], axis=-1)
    g = _gaussian_window()
    depth = 5 * channels
    kernel_v = ops.convert_to_tensor(np.tile(g[:, None, None, None], (1, 1, depth, 1)))
    kernel_h = ops.convert_to_tensor(np.tile(g[None, :, None, None], (1, 1, depth, 1)))
    filtered = ops.depthwise_conv(stack, kernel_v, padding="valid")
    filtered = ops.depthwise_conv(filtered, kernel_h, padding="valid")
    mu_xc, mu_yc, e_xx, e_yy, e_xy = ops.split(filtered, 5, axis=-1)
    var_x = e_xx - mu_xc * mu_xc
    var_y = e_yy - mu_yc * mu_yc
    cov = e_xy - mu_xc * mu_yc
    mu_x, mu_y = mu_xc + x_mean, mu_yc + y_mean
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
        (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2))
    return ops.mean(ssim_map, axis=(1, 2, 3))


def psnr(restored, reference, data_range=1.0, y_channel=False, crop_border=0) -> np.ndarray:
    """Per-image PSNR (dB), NumPy array of shape [N], of NHWC batches (NumPy or tensors)."""
    values = psnr_tensor(restored, reference, data_range, y_channel, crop_border)
    return ops.convert_to_numpy(values)


def ssim(restored, reference, data_range=1.0, y_channel=False, crop_border=0) -> np.ndarray:
    """Per-image SSIM, NumPy array of shape [N], of NHWC batches (NumPy or tensors)."""
    values = ssim_tensor(restored, reference, data_range, y_channel, crop_border)
    return ops.convert_to_numpy(values)


class _ImageMetric(keras.metrics.Metric):
    _fn = None

    def __init__(self, data_range=1.0, y_channel=False, crop_border=0, name=None, dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.data_range = float(data_range)
        self.y_channel = bool(y_channel)
        self.crop_border = int(crop_border)
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        values = type(self)._fn(y_pred, y_true, self.data_range, self.y_channel, self.crop_border)
        weights = ops.ones_like(values) if sample_weight is None else ops.reshape(
            ops.cast(sample_weight, values.dtype), (-1,)) * ops.ones_like(values)
        self.total.assign_add(ops.cast(ops.sum(values * weights), self.total.dtype))
        self.count.assign_add(ops.cast(ops.sum(weights), self.count.dtype))

    def result(self):
        return ops.divide_no_nan(self.total, self.count)

    def reset_state(self):
        self.total.assign(0.0)
        self.count.assign(0.0)

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype, "data_range": self.data_range,
                "y_channel": self.y_channel, "crop_border": self.crop_border}


@keras.saving.register_keras_serializable(package="clearer_tf")
class PSNRMetric(_ImageMetric):
    """Mean PSNR (dB) over images, for `model.compile(metrics=[PSNRMetric()])`.

    Args: data_range, y_channel, crop_border as in `psnr`; name (default "psnr"); dtype.
    """

    _fn = staticmethod(psnr_tensor)

    def __init__(self, data_range=1.0, y_channel=False, crop_border=0, name="psnr", dtype=None):
        super().__init__(data_range, y_channel, crop_border, name=name, dtype=dtype)


@keras.saving.register_keras_serializable(package="clearer_tf")
class SSIMMetric(_ImageMetric):
    """Mean SSIM over images, for `model.compile(metrics=[SSIMMetric()])`.

    Args: data_range, y_channel, crop_border as in `ssim`; name (default "ssim"); dtype.
    """

    _fn = staticmethod(ssim_tensor)

    def __init__(self, data_range=1.0, y_channel=False, crop_border=0, name="ssim", dtype=None):
        super().__init__(data_range, y_channel, crop_border, name=name, dtype=dtype)


__all__ = ["psnr", "ssim", "psnr_tensor", "ssim_tensor", "PSNRMetric", "SSIMMetric"]
