"""Batches drawn on the device (pipelines.device, JAX) against tf.data (pipelines.streams) and
NumPy references: the same distribution (noise, value grid, crops, image order, flips), exact
resume, pairs cropped together, per-process shares, and the pipeline choice."""

import numpy as np
import pytest

from pipelines import GaussianNoise, RainStreaks, load_images
from pipelines.errors import DataError

jax = pytest.importorskip("jax")

from pipelines import batches  # noqa: E402
from pipelines.device import DeviceSampler, dihedral  # noqa: E402


def coordinates(height, width, index=0):
    """A float image whose pixel (y, x) holds a unique value: where a crop came from is readable."""
    y, x = np.mgrid[:height, :width]
    return ((index * height * width + y * width + x) / 1e6).astype(np.float32)[..., None]


def locate(patch, images):
    """(image, y, x, k): the image, crop offset and transform (`dihedral`'s k) that give `patch`."""
    for k in range(8):  # undo rot90 by k % 4 followed by a flip if k >= 4
        raw = np.rot90(np.flip(patch, 1) if k >= 4 else patch, -(k % 4), axes=(0, 1))
        for i, image in enumerate(images):
            p = raw.shape[0]
            for y, x in np.argwhere(image[..., 0] == raw[0, 0, 0]):
                if np.array_equal(image[y:y + p, x:x + p], raw):
                    return i, int(y), int(x), k
    raise AssertionError("patch not found in any image under any of the 8 transforms")


def test_dihedral_is_rot90_then_a_flip():
    image = coordinates(4, 4)
    for k in range(8):
        expected = np.rot90(image, k % 4, axes=(0, 1))
        expected = np.flip(expected, 1) if k >= 4 else expected
        np.testing.assert_array_equal(np.asarray(dihedral(jax.numpy.asarray(image), k)), expected)


@pytest.fixture(scope="module")
def bsds(bsds_train_dir):
    return load_images(bsds_train_dir, 1)


def test_noise_matches_tf_data_and_a_numpy_reference(bsds):
    from pipelines.streams import training_stream

    device = DeviceSampler(bsds, GaussianNoise(50.0), 64, 32, seed=0)
    noisy, clean = (np.concatenate(a) for a in zip(*[map(np.asarray, device.batch(s)) for s in range(6)]))
    stream = training_stream(bsds, GaussianNoise(50.0), 64, 32, seed=0)
    tf_noisy, tf_clean = (np.concatenate(a) for a in zip(*[(x.numpy(), y.numpy()) for x, y in stream.take(6)]))
    rng = np.random.default_rng(0)  # the noise model written out in float64 on the device's clean patches
    reference = np.round(np.clip(clean.astype(np.float64) * 255 + rng.standard_normal(clean.shape) * 50, 0, 255))
    stds = [np.std((n - c) * 255.0) for n, c in ((noisy, clean), (tf_noisy, tf_clean))]
    assert stds[0] == pytest.approx(np.std(reference - clean * 255.0), abs=0.4)
    assert stds[0] == pytest.approx(stds[1], abs=0.8)  # different patches: the clipping differs a little
    assert abs(np.mean((noisy - clean) * 255.0) - np.mean(reference - clean * 255.0)) < 0.3
    for batch in (noisy, clean):  # 8-bit values, as the authors' code makes them
        np.testing.assert_allclose(batch * 255.0, np.round(batch * 255.0), atol=2e-4)
        assert batch.min() >= 0.0 and batch.max() <= 1.0
    unclipped = DeviceSampler(bsds, GaussianNoise(50.0, clip=False), 64, 32, seed=0)
    x, y = map(np.asarray, unclipped.batch(0))
    assert x.min() < 0.0 and np.std((x - y) * 255.0) == pytest.approx(50.0, rel=0.02)


def test_blind_noise_draws_one_level_per_image(bsds):
    x, y = map(np.asarray, DeviceSampler(bsds, GaussianNoise((10.0, 70.0), clip=False), 64, 64, seed=3).batch(0))
    levels = np.std((x - y) * 255.0, axis=(1, 2, 3))
    assert levels.min() == pytest.approx(10.0, abs=4.0) and levels.max() == pytest.approx(70.0, abs=4.0)
    assert np.std(levels) == pytest.approx(60.0 / np.sqrt(12.0), rel=0.3)  # uniform on [10, 70]


def test_each_epoch_visits_every_image_once_and_crops_uniformly():
    images = [coordinates(24, 40, i) for i in range(5)]
    items = [(f"im{i}", a, a) for i, a in enumerate(images)]  # pairs: no degradation
    sampler = DeviceSampler(items, None, 8, 4, seed=7, augment=False)
    found = [locate(np.asarray(sampler.batch(s)[1])[j], images) for s in range(250) for j in range(4)]
    for epoch in range(len(found) // 5):
        assert sorted(f[0] for f in found[5 * epoch:5 * epoch + 5]) == list(range(5))
    orders = {tuple(f[0] for f in found[5 * e:5 * e + 5]) for e in range(20)}
    assert len(orders) > 10  # a fresh permutation per epoch
    ys, xs = np.array([f[1] for f in found]), np.array([f[2] for f in found])
    assert set(ys) == set(range(17)) and set(xs) == set(range(33))  # every offset of a 24x40 image
    assert ys.mean() == pytest.approx(8.0, abs=0.6) and xs.mean() == pytest.approx(16.0, abs=1.2)
    assert {f[3] for f in found} == {0}  # no augmentation asked


def test_flips_are_uniform_and_portrait_images_give_the_same_patches():
    portrait = coordinates(40, 24)  # stored transposed; its patches are still its own patches
    sampler = DeviceSampler([("p", portrait, portrait)], None, 8, 8, seed=1)
    found = [locate(np.asarray(sampler.batch(s)[1])[j], [portrait]) for s in range(100) for j in range(8)]
    counts = np.bincount([f[3] for f in found], minlength=8)
    assert counts.min() > 60 and counts.max() < 140  # 100 expected of each of the 8
    assert {f[1] for f in found} == set(range(33)) and {f[2] for f in found} == set(range(17))


def test_pairs_are_cropped_and_flipped_together(bsds):
    items = [(name, np.clip(a + 0.25, 0, 1), a) for name, a in bsds[:6]]
    x, y = map(np.asarray, DeviceSampler(items, None, 32, 16, seed=2).batch(5))
    np.testing.assert_allclose(x, np.clip(y + 0.25, 0, 1), atol=1e-6)


def test_a_batch_is_a_function_of_seed_and_step(bsds):
    a = DeviceSampler(bsds, GaussianNoise(30.0), 32, 8, seed=4)
    b = DeviceSampler(bsds, GaussianNoise(30.0), 32, 8, seed=4)
    resumed = b.batches(start=3)
    for step, batch in zip(range(3, 6), resumed):
        for u, v in zip(a.batch(step), batch):
            np.testing.assert_array_equal(np.asarray(u), np.asarray(v))
    other = DeviceSampler(bsds, GaussianNoise(30.0), 32, 8, seed=5).batch(3)
    assert not np.array_equal(np.asarray(other[1]), np.asarray(a.batch(3)[1]))
    whole = a.batch(2)
    halves = [next(a.batches(2, process_index=i, process_count=2)) for i in range(2)]
    for k in range(2):
        np.testing.assert_array_equal(np.concatenate([np.asarray(h[k]) for h in halves]), np.asarray(whole[k]))


def test_search_batches_keep_the_two_streams_apart(bsds):
    from pipelines.device import search_batches

    (xw, yw), (xa, ya) = next(search_batches(bsds[:8], bsds[8:], GaussianNoise(30.0), 32, 4, seed=0))
    assert xw.shape == xa.shape == (4, 32, 32, 1)
    with pytest.raises(DataError, match="share 1 image"):
        search_batches(bsds[:8], bsds[7:], GaussianNoise(30.0), 32, 4, seed=0)


def test_the_pipeline_choice(monkeypatch):
    noise, rain = GaussianNoise(30.0), RainStreaks()
    assert batches.resolve("auto", "jax", noise) == "device"
    assert batches.resolve("auto", "jax", None) == "device"  # real pairs
    assert batches.resolve("auto", "jax", rain) == "tfdata"
    assert batches.resolve("auto", "tensorflow", noise) == "tfdata"
    with pytest.raises(DataError, match="--data-pipeline device needs KERAS_BACKEND=jax"):
        batches.resolve("device", "tensorflow", noise)
    with pytest.raises(DataError, match="synthetic rain is drawn by tf.data"):
        batches.resolve("device", "jax", rain)
    with pytest.raises(DataError, match="--data-pipeline must be one of auto, tfdata, device"):
        batches.resolve("gpu", "jax", noise)
    monkeypatch.setattr(batches, "has_tensorflow", lambda: False)
    with pytest.raises(DataError, match="TensorFlow is not installed"):
        batches.resolve("auto", "jax", rain)
    with pytest.raises(DataError, match="on-device batches degrade clean images with Gaussian noise only"):
        DeviceSampler([("a", np.zeros((16, 16, 3), np.float32))], rain, 8, 2)
