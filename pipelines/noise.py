"""Additive white Gaussian noise on the 0-255 scale (denoising degradation)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from pipelines.errors import DataError


def name_seed(*parts) -> int:
    """A 64-bit seed from any values, stable across processes (unlike `hash()`)."""
    text = "|".join(repr(p) for p in parts).encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little")


@dataclass
class GaussianNoise:
    """noisy = clean + N(0, sigma^2) on the 0-255 scale.

    Args:
        sigma: noise level in (0, 255]; a `(low, high)` pair draws one level per image
            uniformly (blind denoising).
        clip: True (default) clips to [0, 255] and rounds to 8 bits, as the authors'
            code does (they truncate with `astype(uint8)`; we round, which is unbiased);
            False keeps the unclipped float noise.

    Example:
        >>> noise = GaussianNoise(30.0)
        >>> noisy = noise.apply(clean_batch)          # fresh noise, tf op
        >>> noisy_np = noise.apply_eval(clean, "01")  # deterministic per (name, sigma, seed)
    """

    sigma: float | tuple = 30.0
    clip: bool = True

    def __post_init__(self):
        if isinstance(self.sigma, (tuple, list)):
            if len(self.sigma) != 2:
                raise DataError(f"--sigma range must be (low, high), got {self.sigma!r}")
            low, high = (self._check(s) for s in self.sigma)
            if low > high:
                raise DataError(f"--sigma range must have low <= high, got {self.sigma!r}")
            self.sigma = (low, high)
        else:
            self.sigma = self._check(self.sigma)

    @staticmethod
    def _check(sigma) -> float:
        try:
            value = float(sigma)
        except (TypeError, ValueError):
            raise DataError(f"--sigma must be a number in (0, 255], got {sigma!r}") from None
        if not 0.0 < value <= 255.0:
            raise DataError(f"--sigma must be in (0, 255] (0-255 scale), got {sigma!r}")
        return value

    @property
    def blind(self) -> bool:
        return isinstance(self.sigma, tuple)

    def _finish(self, noisy255):
        import tensorflow as tf

        if self.clip:
            noisy255 = tf.round(tf.clip_by_value(noisy255, 0.0, 255.0))
        return noisy255 / 255.0

    def apply(self, clean, seed=None):
        """Noisy version of a float [B, H, W, C] batch in [0, 1] (tf op, traceable).

        seed=None draws fresh noise from TF's global generator on every call; a seed
        (int or shape-[2] int tensor) makes it a stateless function of that seed, so
        callers pass a new seed per call (the streams pass (seed, batch index)).
        """
        import tensorflow as tf  # the tf.data streams' degradation; JAX's is pipelines.device

        clean = tf.convert_to_tensor(clean, tf.float32)
        shape = tf.shape(clean)
        sigma_shape = tf.stack([shape[0], 1, 1, 1])
        if seed is None:
            noise = tf.random.normal(shape)
            sigma = (tf.random.uniform(sigma_shape, *self.sigma) if self.blind
                     else tf.constant(self.sigma))
        else:
            seed = tf.cast(seed, tf.int64)
            if seed.shape.rank == 0:
                seed = tf.stack([seed, tf.constant(0, tf.int64)])
            noise_seed, sigma_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
            noise = tf.random.stateless_normal(shape, noise_seed)
            sigma = (tf.random.stateless_uniform(sigma_shape, sigma_seed, *self.sigma)
                     if self.blind else tf.constant(self.sigma))
        return self._finish(clean * 255.0 + noise * sigma)

    def eval_sigma(self, name: str, seed: int = 0) -> float:
        """The noise level used for image `name` at evaluation."""
        if not self.blind:
            return self.sigma
        rng = np.random.default_rng(name_seed("sigma", name, self.sigma, seed))
        return float(rng.uniform(*self.sigma))

    def apply_eval(self, clean: np.ndarray, name: str, seed: int = 0) -> np.ndarray:
        """Deterministic noisy image (NumPy, float32) for image `name`: same every run."""
        rng = np.random.default_rng(name_seed("gaussian", name, self.sigma, seed))
        noise = rng.standard_normal(np.shape(clean)) * self.eval_sigma(name, seed)
        noisy255 = np.asarray(clean, np.float64) * 255.0 + noise
        if self.clip:
            noisy255 = np.round(np.clip(noisy255, 0.0, 255.0))
        return (noisy255 / 255.0).astype(np.float32)

    def describe(self) -> dict:
        return {
            "type": "gaussian",
            "sigma": list(self.sigma) if self.blind else self.sigma,
            "scale": "0-255",
            "clip": self.clip,
        }
