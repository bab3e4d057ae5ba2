"""Training batches drawn on the accelerator (JAX backend): no tf.data, no TensorFlow.

The decoded images live on the device once (uint8 when that is lossless, float32 otherwise),
and each batch is one compiled program of the batch index: the same rules as
`pipelines.streams.training_stream` (a seeded permutation of the images per epoch, one random
P x P crop per element with one of the 8 rotations/flips, identical on input and target, and
for clean-only items `GaussianNoise` on the 0-255 scale, clipped and rounded), with JAX's
random numbers keyed by (seed, batch index). A batch is a pure function of its index, so a
resumed run continues with exactly the batches an uninterrupted run would have seen.

Portrait images are stored transposed (one landscape array, less padding). With the 8
rotations/flips drawn uniformly, a crop of the transposed image followed by a uniform random
transform has the same distribution as a crop of the original followed by one.
"""

from __future__ import annotations

import numpy as np

from pipelines.errors import DataError
from pipelines.items import arch_seed, check_items, is_8bit
from pipelines.noise import GaussianNoise, name_seed


def _seed32(*parts) -> int:
    return name_seed(*parts) % 2**31


def _pack(arrays, transpose: bool):
    """One zero-padded [N, H, W, D] array (uint8 when lossless, else float32) and the sizes."""
    arrays = [np.asarray(a, np.float32) for a in arrays]
    if transpose:
        arrays = [a.transpose(1, 0, 2) if a.shape[0] > a.shape[1] else a for a in arrays]
    height = max(a.shape[0] for a in arrays)
    width = max(a.shape[1] for a in arrays)
    lossless = is_8bit(arrays)
    dtype = np.uint8 if lossless else np.float32
    packed = np.zeros((len(arrays), height, width, arrays[0].shape[-1]), dtype)
    for i, a in enumerate(arrays):
        packed[i, :a.shape[0], :a.shape[1]] = np.round(a * 255.0) if lossless else a
    sizes = np.array([a.shape[:2] for a in arrays], np.int32)
    return packed, sizes


def dihedral(image, k):
    """One of the 8 rotations/flips of an HWC array: rot90 by k % 4, then a left-right flip if
    k >= 4 (the order of `pipelines.streams.dihedral`); `k` may be traced."""
    import jax
    import jax.numpy as jnp

    branches = [lambda x, r=r, f=f: (jnp.flip(jnp.rot90(x, r), 1) if f else jnp.rot90(x, r))
                for f in (False, True) for r in range(4)]
    return jax.lax.switch(k, branches, image)


class DeviceSampler:
    """Random training batches `(degraded, clean)`, float32 [B, P, P, C], made on the device.

    Args:
        items: `(name, clean)` (degraded here by `degradation`) or `(name, degraded, clean)`.
        degradation: `GaussianNoise` for clean-only items (synthetic rain is drawn by tf.data).
        patch_size, batch_size, seed, augment: as `training_stream`.

    Example:
        >>> sampler = DeviceSampler(load_images("data/samples/bsds/train", 1), GaussianNoise(50), 64, 32, seed=0)
        >>> noisy, clean = sampler.batch(0)               # jax arrays on the default device
        >>> model.fit(sampler.batches(), steps_per_epoch=100, epochs=5)
    """

    def __init__(self, items, degradation=None, patch_size: int = 64, batch_size: int = 32,
                 seed: int | None = None, augment: bool = True):
        import jax
        import jax.numpy as jnp

        if int(patch_size) < 1 or int(batch_size) < 1:
            raise DataError(f"--patch-size and --batch-size must be >= 1, got {patch_size}, {batch_size}")
        self.patch_size, self.batch_size, self.augment = int(patch_size), int(batch_size), bool(augment)
        self.paired, self.channels = check_items(items, self.patch_size)
        if not self.paired and not isinstance(degradation, GaussianNoise):
            raise DataError("on-device batches degrade clean images with Gaussian noise only (synthetic rain "
                            f"is drawn by tf.data: --data-pipeline tfdata); got {type(degradation).__name__}")
        self.degradation = None if self.paired else degradation
        if seed is None:
            seed = int(np.random.SeedSequence().entropy % 2**62)
        self.seed = int(seed)
        stacked = [np.concatenate(item[1:], axis=-1) if self.paired else item[1] for item in items]
        images, sizes = _pack(stacked, transpose=self.augment)
        self.count = len(items)
        self.images, self.sizes = jnp.asarray(images), jnp.asarray(sizes)
        self.keys = {name: jax.random.key(_seed32(name, self.seed)) for name in ("order", "crop", "degrade")}
        self._batch = jax.jit(self._make_batch)

    def _crop(self, step_key, index):
        import jax
        import jax.numpy as jnp

        p, depth = self.patch_size, self.images.shape[-1]
        height, width = self.sizes[index, 0], self.sizes[index, 1]
        crop_key, flip_key = jax.random.split(step_key)
        y_key, x_key = jax.random.split(crop_key)
        y = jax.random.randint(y_key, (), 0, height - p + 1)
        x = jax.random.randint(x_key, (), 0, width - p + 1)
        patch = jax.lax.dynamic_slice(self.images[index], (y, x, 0), (p, p, depth))
        patch = patch.astype(jnp.float32) / 255.0 if patch.dtype == jnp.uint8 else patch
        if self.augment:
            patch = dihedral(patch, jax.random.randint(flip_key, (), 0, 8))
        return patch

    def _make_batch(self, step):
        import jax
        import jax.numpy as jnp

        element = step * self.batch_size + jnp.arange(self.batch_size)  # running element index
        epoch, position = element // self.count, element % self.count

        def image_of(e, pos):  # a seeded permutation of the images per epoch
            return jax.random.permutation(jax.random.fold_in(self.keys["order"], e), self.count)[pos]

        index = jax.vmap(image_of)(epoch, position)
        keys = jax.vmap(lambda i: jax.random.fold_in(self.keys["crop"], i))(element)
        patches = jax.vmap(self._crop)(keys, index)
        if self.paired:
            return patches[..., :self.channels], patches[..., self.channels:]
        return self._degrade(jax.random.fold_in(self.keys["degrade"], step), patches), patches

    def _degrade(self, key, clean):
        """`GaussianNoise.apply` on the device: clean * 255 + sigma * N(0, 1), clipped and rounded."""
        import jax
        import jax.numpy as jnp

        noise = self.degradation
        noise_key, sigma_key = jax.random.split(key)
        if noise.blind:
            sigma = jax.random.uniform(sigma_key, (clean.shape[0], 1, 1, 1), minval=noise.sigma[0],
                                       maxval=noise.sigma[1])
        else:
            sigma = jnp.float32(noise.sigma)
        noisy255 = clean * 255.0 + jax.random.normal(noise_key, clean.shape) * sigma
        if noise.clip:
            noisy255 = jnp.round(jnp.clip(noisy255, 0.0, 255.0))
        return noisy255 / 255.0

    def batch(self, step: int):
        """Batch number `step` (the same arrays for the same seed and step)."""
        return self._batch(np.int32(step))

    def batches(self, start: int = 0, process_index: int = 0, process_count: int = 1):
        """Batches `start`, `start + 1`, ... forever; with several processes (multi-host JAX),
        each yields its contiguous share of every global batch (Keras' per-process batch)."""
        if self.batch_size % process_count:
            raise DataError(f"--batch-size {self.batch_size} does not split over {process_count} processes")
        share = self.batch_size // process_count
        step = int(start)
        while True:
            batch = self.batch(step)
            if process_count > 1:
                batch = tuple(b[process_index * share:(process_index + 1) * share] for b in batch)
            yield batch
            step += 1


def process_share():
    """(this process's index, the number of processes) of the JAX run."""
    import jax

    return jax.process_index(), jax.process_count()


def training_batches(items, degradation=None, patch_size=64, batch_size=32, seed=None, augment=True, start=0):
    """The on-device counterpart of `training_stream`: a generator of batches from `start`."""
    sampler = DeviceSampler(items, degradation, patch_size, batch_size, seed, augment)
    return sampler.batches(start, *process_share())


def search_batches(weights_items, arch_items, degradation=None, patch_size=64, batch_size=32, seed=None, start=0):
    """The on-device counterpart of zipped `search_streams`: `((x_w, y_w), (x_a, y_a))` per step,
    the two over disjoint images (the architecture stream seeded as `search_streams` seeds it)."""
    second_seed = arch_seed(weights_items, arch_items, seed)
    weights = training_batches(weights_items, degradation, patch_size, batch_size, seed, start=start)
    arch = training_batches(arch_items, degradation, patch_size, batch_size, second_seed, start=start)
    return (pair for pair in zip(weights, arch))  # a generator, as `fit` takes it
