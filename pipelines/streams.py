"""tf.data streams: random training patches, disjoint search streams, whole-image evaluation.

Items are a list of `(name, clean)` (clean-only: the degradation is applied on the fly)
or a list of `(name, degraded, clean)` (real pairs: the degradation is not used).
Arrays are float32 HWC in [0, 1].
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from pipelines.errors import DataError
from pipelines.items import arch_seed, check_items, is_8bit, split_by_image  # noqa: F401  (re-exported)
from pipelines.noise import name_seed

AUTOTUNE = tf.data.AUTOTUNE


def _pack(arrays):
    """One flat buffer (uint8 when lossless, else float32), offsets and shapes."""
    flat = np.concatenate([np.asarray(a, np.float32).reshape(-1) for a in arrays])
    if is_8bit([flat]):
        flat = np.round(flat * 255.0).astype(np.uint8)
    sizes = [int(np.prod(np.shape(a))) for a in arrays]
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    shapes = np.array([np.shape(a) for a in arrays], np.int64)
    return tf.constant(flat), tf.constant(offsets), tf.constant(shapes)


def dihedral(image, k):
    """One of the 8 rotations/flips of an HWC tensor: rot90 by k % 4, then a flip if k >= 4."""
    image = tf.image.rot90(image, k % 4)
    return tf.cond(k >= 4, lambda: tf.image.flip_left_right(image), lambda: image)


def training_stream(items, degradation=None, patch_size: int = 64, batch_size: int = 32,
                    seed: int | None = None, augment: bool = True, start: int = 0) -> tf.data.Dataset:
    """Infinite stream of `(degraded, clean)` float32 batches [B, P, P, C].

    Each epoch visits the images in a fresh seeded order; every element is a random
    P x P crop with one of the 8 dihedral transforms, identical on input and target
    (they are concatenated on the channel axis, cropped and augmented once, then split).
    For clean-only items `degradation.apply` runs on each batch. The same seed gives the
    same batches; seed=None draws one at random. `start` skips that many batches cheaply (the
    stream a resumed run continues with: the same batches as `.skip(start)`, none computed).
    """
    if int(patch_size) < 1 or int(batch_size) < 1:
        raise DataError(
            f"--patch-size and --batch-size must be >= 1, got {patch_size}, {batch_size}")
    patch_size, batch_size = int(patch_size), int(batch_size)
    paired, channels = check_items(items, patch_size)
    if not paired and degradation is None:
        raise DataError("clean-only items need a degradation (GaussianNoise or RainStreaks)")
    if seed is None:
        seed = int(np.random.SeedSequence().entropy % 2**62)
    order_seed, crop_seed, degrade_seed = (
        name_seed(key, seed) % 2**62 for key in ("order", "crop", "degrade"))
    stacked = [np.concatenate(item[1:], axis=-1) if paired else item[1] for item in items]
    buffer, offsets, shapes = _pack(stacked)
    depth = 2 * channels if paired else channels
    count = len(items)

    def epoch_order(epoch):
        seed_pair = tf.stack([tf.constant(order_seed, tf.int64), epoch])
        return tf.random.experimental.stateless_shuffle(tf.range(count, dtype=tf.int64), seed_pair)

    def patch(step, index):
        start, shape = offsets[index], shapes[index]
        image = tf.reshape(buffer[start:start + tf.reduce_prod(shape)], shape)
        seeds = tf.random.experimental.stateless_split(
            tf.stack([tf.constant(crop_seed, tf.int64), step]), 2)
        image = tf.image.stateless_random_crop(image, [patch_size, patch_size, depth], seeds[0])
        if image.dtype == tf.uint8:
            image = tf.cast(image, tf.float32) / 255.0
        if augment:
            image = dihedral(image, tf.random.stateless_uniform([], seeds[1], 0, 8, tf.int32))
        image = tf.ensure_shape(image, [patch_size, patch_size, depth])
        if paired:
            return image[..., :channels], image[..., channels:]
        return image

    # Shuffle + repeat as one seeded permutation per epoch: a full-size shuffle buffer that
    # does not depend on TF's global seed.
    first_epoch, offset = divmod(int(start) * batch_size, count)
    ds = tf.data.Dataset.counter(first_epoch).map(epoch_order).unbatch()
    ds = ds.enumerate(first_epoch * count).skip(offset)
    ds = ds.map(patch, num_parallel_calls=AUTOTUNE)
    ds = ds.batch(batch_size, drop_remainder=True)
    if not paired:
        def degrade(step, clean):
            seed_pair = tf.stack([tf.constant(degrade_seed, tf.int64), step])
            return degradation.apply(clean, seed=seed_pair), clean

        ds = ds.enumerate(start=int(start)).map(degrade, num_parallel_calls=AUTOTUNE)
    return ds.prefetch(AUTOTUNE)


def search_streams(weights_items, arch_items, degradation=None, patch_size: int = 64,
                   batch_size: int = 32, seed: int | None = None, start: int = 0):
    """Two training streams over disjoint images for the bilevel search.

    `tf.data.Dataset.zip((weights_ds, arch_ds))` yields one weight batch and one
    architecture batch per step, from batch `start` on. Raises DataError if the two share an
    image name.
    """
    second_seed = arch_seed(weights_items, arch_items, seed)
    weights_ds = training_stream(weights_items, degradation, patch_size, batch_size, seed, start=start)
    arch_ds = training_stream(arch_items, degradation, patch_size, batch_size, second_seed, start=start)
    return weights_ds, arch_ds


def evaluation_stream(items, degradation=None, seed: int = 0) -> tf.data.Dataset:
    """Whole images `(degraded [1,H,W,C], clean [1,H,W,C], name)`, in item order.

    Clean-only items are degraded by `degradation.apply_eval(clean, name, seed)`, so
    every run sees the same inputs.
    """
    paired, channels = check_items(items)
    if not paired and degradation is None:
        raise DataError("clean-only items need a degradation (GaussianNoise or RainStreaks)")

    def generate():
        for item in items:
            name, clean = item[0], np.asarray(item[-1], np.float32)
            degraded = item[1] if paired else degradation.apply_eval(clean, name, seed)
            yield np.asarray(degraded, np.float32)[None], clean[None], name

    spec = tf.TensorSpec([1, None, None, channels], tf.float32)
    return tf.data.Dataset.from_generator(
        generate, output_signature=(spec, spec, tf.TensorSpec([], tf.string)))
