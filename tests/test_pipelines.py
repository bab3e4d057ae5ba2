"""Pipelines on real images: decoding, noise, rain, pairs, training/search/eval streams."""

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from clearer_tf.metrics import psnr
from pipelines import (
    GaussianNoise,
    RainStreaks,
    dihedral,
    evaluation_stream,
    list_images,
    load_eval_items,
    load_images,
    load_pairs,
    load_side_by_side,
    load_task_data,
    read_image,
    search_streams,
    split_by_image,
    training_stream,
)


def batches(ds, n):
    return [tuple(t.numpy() for t in batch) for batch in ds.take(n)]


# --- images ---------------------------------------------------------------------------------

def test_list_images_sorted_and_filtered(tmp_path):
    for name in ("b.png", "a.JPG", "c.tiff", "d.bmp", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub.png").mkdir()
    assert [p.name for p in list_images(tmp_path)] == ["a.JPG", "b.png", "c.tiff", "d.bmp"]


def test_read_image_luma_like_matlab(bsds_val_dir):
    path = list_images(bsds_val_dir)[0]
    rgb = np.asarray(Image.open(path).convert("RGB")).astype(np.float64)
    expected = np.floor(0.298936021 * rgb[..., 0] + 0.587043074 * rgb[..., 1]
                        + 0.114020904 * rgb[..., 2] + 0.5) / 255.0
    gray = read_image(path, 1)
    assert gray.dtype == np.float32 and gray.shape == rgb.shape[:2] + (1,)
    np.testing.assert_array_equal(gray[..., 0], expected.astype(np.float32))
    colour = read_image(path, 3)
    np.testing.assert_array_equal(colour, (rgb / 255.0).astype(np.float32))


def test_grayscale_file_repeated_for_rgb_and_formats(set12_dir, tmp_path):
    gray = read_image(list_images(set12_dir)[0], 1)
    rgb = read_image(list_images(set12_dir)[0], 3)
    assert rgb.shape[-1] == 3 and all(np.array_equal(rgb[..., [c]], gray) for c in range(3))
    u8 = np.round(gray[..., 0] * 255).astype(np.uint8)
    for ext in ("bmp", "tif", "png"):
        Image.fromarray(u8).save(tmp_path / f"x.{ext}")
        np.testing.assert_array_equal(read_image(tmp_path / f"x.{ext}", 1), gray)


def test_load_images_cached_and_read_only(set12_dir):
    first = load_images(set12_dir, 1)
    second = load_images(set12_dir, 1)
    assert [n for n, _ in first] == sorted(p.stem for p in list_images(set12_dir))
    assert all(a is b for (_, a), (_, b) in zip(first, second))
    assert not first[0][1].flags.writeable


# --- Gaussian noise -------------------------------------------------------------------------


def test_training_noise_std_unclipped(set12_dir):
    clean = tf.constant(np.stack([img for _, img in load_images(set12_dir, 1)[:4]]))
    for sigma in (15.0, 50.0):
        residual = (GaussianNoise(sigma, clip=False).apply(clean) - clean).numpy() * 255
        assert abs(residual.std() / sigma - 1) < 0.02
        assert abs(residual.mean()) < 0.02 * sigma


def test_training_noise_clipped_is_8bit_and_fresh():
    grey = tf.fill([4, 64, 64, 1], 128 / 255)
    noise = GaussianNoise(30.0)
    a, b = noise.apply(grey).numpy(), noise.apply(grey).numpy()
    assert not np.array_equal(a, b)  # fresh noise every call
    assert a.min() >= 0 and a.max() <= 1
    np.testing.assert_allclose(a * 255, np.round(a * 255), atol=1e-3)  # quantised to 8 bits
    assert abs((a - grey.numpy()).std() * 255 / 30 - 1) < 0.05
    s1, s2 = noise.apply(grey, seed=[1, 2]).numpy(), noise.apply(grey, seed=[1, 2]).numpy()
    np.testing.assert_array_equal(s1, s2)
    assert not np.array_equal(s1, noise.apply(grey, seed=[1, 3]).numpy())


def test_blind_sigma_range_per_image():
    grey = tf.fill([16, 96, 96, 1], 0.5)
    residual = (GaussianNoise((5.0, 60.0), clip=False).apply(grey) - grey).numpy() * 255
    stds = residual.std(axis=(1, 2, 3))
    assert stds.min() > 5 * 0.95 and stds.max() < 60 * 1.05
    assert stds.max() - stds.min() > 10  # one level per image, not one per batch


def test_eval_noise_deterministic_by_name_sigma_seed(set12_dir):
    name, clean = load_images(set12_dir, 1)[0]
    noise = GaussianNoise(25.0)
    a = noise.apply_eval(clean, name)
    np.testing.assert_array_equal(a, noise.apply_eval(clean, name))
    assert not np.array_equal(a, noise.apply_eval(clean, "other"))
    assert not np.array_equal(a, noise.apply_eval(clean, name, seed=1))
    assert not np.array_equal(a, GaussianNoise(26.0).apply_eval(clean, name))
    np.testing.assert_allclose(a * 255, np.round(a * 255), atol=1e-3)
    unclipped = GaussianNoise(25.0, clip=False).apply_eval(clean, name)
    assert abs((unclipped - clean).std() * 255 / 25 - 1) < 0.02


def test_eval_noise_identical_across_runs(set12_dir, tmp_path):
    """A second Python process (fresh hash seed) draws exactly the same evaluation noise."""
    import os
    import subprocess
    import sys

    name, clean = load_images(set12_dir, 1)[0]
    noisy = GaussianNoise(30.0).apply_eval(clean, name)
    out = tmp_path / "other_run.npy"
    code = (
        "import sys, numpy as np; from pipelines import GaussianNoise, load_images; "
        f"name, clean = load_images({str(set12_dir)!r}, 1)[0]; "
        f"np.save({str(out)!r}, GaussianNoise(30.0).apply_eval(clean, name))"
    )
    env = dict(os.environ, PYTHONHASHSEED="12345")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    subprocess.run([sys.executable, "-c", code], check=True, cwd=repo, env=env)
    np.testing.assert_array_equal(np.load(out), noisy)
    assert not np.array_equal(noisy, clean)


# --- rain synthesis -------------------------------------------------------------------------

def test_rain_synthesis_seeded_and_light(bsds_val_dir):
    rain = RainStreaks()
    values = []
    for name, clean in load_images(bsds_val_dir, 3)[:4]:
        rainy = rain.synthesize(clean, seed=7)
        np.testing.assert_array_equal(rainy, rain.synthesize(clean, seed=7))
        assert not np.array_equal(rainy, rain.synthesize(clean, seed=8))
        assert rainy.dtype == np.float32 and rainy.shape == clean.shape
        assert rainy.min() >= 0 and rainy.max() <= 1 and (rainy >= clean - 1e-6).all()
        np.testing.assert_array_equal(rain.apply_eval(clean, name), rain.apply_eval(clean, name))
        values.append(psnr(rainy[None], clean[None])[0])
    assert 17 < np.mean(values) < 35  # light rain, as Rain100L (21-33 dB on the sample)


def test_rain_streaks_follow_the_angle():
    def autocorrelation(layer, dy, dx):
        a = layer - layer.mean()
        return (a * np.roll(a, (dy, dx), axis=(0, 1))).mean() / (a * a).mean()

    for angle, along, across in ((0, (10, 0), (0, 10)), (30, (9, 5), (9, -5))):
        rain = RainStreaks(density=0.002, length=40, angle=angle, intensity=1.0, width=0.5)
        layer = rain.streaks(128, 128, seed=0)
        assert autocorrelation(layer, *along) > 0.4 > 0.1 > autocorrelation(layer, *across)


def test_rain_training_op_fresh_and_seedable(bsds_val_dir):
    clean = tf.constant(np.stack([img[:48, :48] for _, img in load_images(bsds_val_dir, 3)[:3]]))
    rain = RainStreaks()
    a, b = rain.apply(clean).numpy(), rain.apply(clean).numpy()
    assert a.shape == tuple(clean.shape) and not np.array_equal(a, b)
    np.testing.assert_array_equal(rain.apply(clean, seed=[3, 4]).numpy(),
                                  rain.apply(clean, seed=[3, 4]).numpy())


# --- pairs ----------------------------------------------------------------------------------

def test_load_pairs_rain100l(rain_dir):
    pairs = load_pairs(rain_dir / "rainy", rain_dir / "clean", 3)
    assert len(pairs) == len(list_images(rain_dir / "rainy"))
    for name, rainy, clean in pairs:
        assert name.startswith("rain-") and rainy.shape == clean.shape
        np.testing.assert_array_equal(clean, read_image(rain_dir / "clean" / f"no{name}.png", 3))
        assert 15 < psnr(rainy[None], clean[None])[0] < 40


def test_same_name_pairs_and_side_by_side(rain_dir, tmp_path):
    name, rainy, clean = load_pairs(rain_dir / "rainy", rain_dir / "clean", 3)[0]
    to_u8 = lambda a: np.round(a * 255).astype(np.uint8)  # noqa: E731
    for sub, img in (("rainy", rainy), ("clean", clean)):
        (tmp_path / "same" / sub).mkdir(parents=True)
        Image.fromarray(to_u8(img)).save(tmp_path / "same" / sub / "pic.png")
    [(n, r, c)] = load_pairs(tmp_path / "same" / "rainy", tmp_path / "same" / "clean", 3)
    assert n == "pic" and np.array_equal(r, rainy) and np.array_equal(c, clean)
    (tmp_path / "sbs").mkdir()
    Image.fromarray(to_u8(np.concatenate([clean, rainy], axis=1))).save(tmp_path / "sbs" / "x.png")
    [(n, r, c)] = load_side_by_side(tmp_path / "sbs", 3)
    assert np.array_equal(r, rainy) and np.array_equal(c, clean)
    [(n, r, c)] = load_eval_items("derain", tmp_path / "sbs", 3, layout="side_by_side")
    assert np.array_equal(c, clean)


# --- training streams -----------------------------------------------------------------------

class Finder:
    """Exact search of patches in 8-bit images (keys of two diagonal pixels, then compare)."""

    def __init__(self, images):
        self.images = images
        self.keys = [self._key(img) for img in images]

    @staticmethod
    def _key(img):
        u = np.round(np.asarray(img, np.float64) * 255).astype(np.int64)
        code = np.zeros(u.shape[:2], np.int64)
        for c in range(u.shape[-1]):
            code = code * 256 + u[..., c]
        return code[:-1, :-1] * 2**24 + code[1:, 1:]

    def locate(self, patch):
        """(index, y, x) of every exact occurrence of `patch`."""
        size, pk = patch.shape[0], self._key(patch[:2, :2])[0, 0]
        hits = []
        for i, (img, key) in enumerate(zip(self.images, self.keys)):
            valid = key[: img.shape[0] - size + 1, : img.shape[1] - size + 1]
            for y, x in np.argwhere(valid == pk):
                if np.array_equal(img[y:y + size, x:x + size], patch):
                    hits.append((i, y, x))
        return hits

    def found(self, patch):
        """Whether `patch`, undoing any of the 8 transforms, is a crop of one of the images."""
        return any(self.locate(np.ascontiguousarray(undo_dihedral(patch, k))) for k in range(8))


def undo_dihedral(patch, k):
    if k >= 4:
        patch = patch[:, ::-1]
    return np.rot90(patch, -(k % 4))


def test_dihedral_gives_eight_distinct_transforms():
    x = tf.reshape(tf.range(9.0), [3, 3, 1])
    outs = {tuple(dihedral(x, tf.constant(k)).numpy().ravel()) for k in range(8)}
    assert len(outs) == 8
    for k in range(8):
        restored = undo_dihedral(dihedral(x, tf.constant(k)).numpy(), k)
        np.testing.assert_array_equal(restored, x.numpy())


def test_derain_patches_aligned_and_augmented_identically(rain_dir):
    pairs = load_pairs(rain_dir / "rainy", rain_dir / "clean", 3)
    rainy_full, clean_full = [p[1] for p in pairs], [p[2] for p in pairs]
    finder = Finder(clean_full)
    size = 24
    [(degraded, clean)] = batches(training_stream(pairs, None, size, 12, seed=5), 1)
    assert degraded.shape == clean.shape == (12, size, size, 3) and degraded.dtype == np.float32
    used = set()
    for d, c in zip(degraded, clean):
        found = [(k, hit) for k in range(8)
                 for hit in finder.locate(np.ascontiguousarray(undo_dihedral(c, k)))]
        assert found, "clean patch not found in any clean image"
        aligned = [(k, (i, y, x)) for k, (i, y, x) in found
                   if np.array_equal(undo_dihedral(d, k), rainy_full[i][y:y + size, x:x + size])]
        assert aligned, "rainy patch is not the same crop/transform of the rainy image"
        k, (i, y, x) = aligned[0]
        used.add(k)
        reference = 10 * np.log10(1 / np.mean((np.float64(rainy_full[i][y:y + size, x:x + size])
                                                - clean_full[i][y:y + size, x:x + size]) ** 2))
        assert abs(psnr(d[None], c[None])[0] - reference) < 1e-3
    assert len(used) > 1  # augmentation really happens


def test_training_stream_seedable(bsds_val_dir):
    items = load_images(bsds_val_dir, 1)[:4]
    noise = GaussianNoise(25.0)
    first = batches(training_stream(items, noise, 16, 8, seed=3), 3)
    again = batches(training_stream(items, noise, 16, 8, seed=3), 3)
    other = batches(training_stream(items, noise, 16, 8, seed=4), 3)
    for (a, b), (c, d) in zip(first, again):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)
    assert not np.array_equal(first[0][1], other[0][1])
    assert not np.array_equal(first[0][1], first[1][1])  # new patches every batch
    noisy, clean = first[0]
    assert noisy.shape == clean.shape == (8, 16, 16, 1)
    assert 15 < (noisy - clean).std() * 255 < 35


def test_training_stream_repeats_and_visits_every_image(bsds_val_dir):
    items = load_images(bsds_val_dir, 1)[:3]
    ds = training_stream(items, GaussianNoise(10.0), 16, 2, seed=0, augment=False)
    clean_patches = np.concatenate([c for _, c in batches(ds, 6)])  # 12 patches > 3 images
    finder = Finder([img for _, img in items])
    sources = {finder.locate(p)[0][0] for p in clean_patches}
    assert sources == {0, 1, 2}


# --- search and evaluation streams -----------------------------------------------------------

def assert_disjoint_sources(weights_ds, arch_ds, weights_items, arch_items):
    weights = Finder([img for _, img in weights_items])
    arch = Finder([img for _, img in arch_items])
    (_, weights_patches), (_, arch_patches) = next(iter(tf.data.Dataset.zip((weights_ds, arch_ds))))
    checked = 0
    for patches, own, other in ((weights_patches, weights, arch), (arch_patches, arch, weights)):
        for patch in patches.numpy():
            if patch.std() < 0.02:
                continue  # flat (e.g. saturated) patches occur in many images
            assert own.found(patch) and not other.found(patch)
            checked += 1
    assert checked >= len(weights_patches)


def test_search_streams_bsds_train_val(bsds_train_dir, bsds_val_dir):
    weights_items = load_images(bsds_train_dir, 1)
    arch_items = load_images(bsds_val_dir, 1)
    assert not {n for n, _ in weights_items} & {n for n, _ in arch_items}
    noise = GaussianNoise(30.0)
    # Patch provenance on a subset keeps the exhaustive search fast.
    w_ds, a_ds = search_streams(weights_items[:6], arch_items[:6], noise, 16, 4, seed=0)
    assert_disjoint_sources(w_ds, a_ds, weights_items[:6], arch_items[:6])
    w_ds, a_ds = search_streams(weights_items, arch_items, noise, 16, 4, seed=0)
    (wx, wy), (ax, ay) = next(iter(tf.data.Dataset.zip((w_ds, a_ds))))
    assert wx.shape == ax.shape == (4, 16, 16, 1)


def test_search_streams_single_folder_split(bsds_val_dir):
    items = load_images(bsds_val_dir, 1)[:10]
    first, second = split_by_image(items, 0.8, seed=1)
    assert len(first) == round(0.8 * len(items)) and len(first) + len(second) == len(items)
    assert {n for n, _ in first}.isdisjoint(n for n, _ in second)
    assert sorted(n for n, _ in first + second) == sorted(n for n, _ in items)
    assert split_by_image(items, 0.8, seed=1) == (first, second)
    assert split_by_image(items, 0.8, seed=2) != (first, second)
    w_ds, a_ds = search_streams(first, second, GaussianNoise(30.0), 16, 4, seed=0)
    assert_disjoint_sources(w_ds, a_ds, first, second)


def test_evaluation_stream_native_size_and_deterministic(set12_dir, rain_dir):
    items = load_images(set12_dir, 1)[:3]
    noise = GaussianNoise(50.0)
    runs = [list(evaluation_stream(items, noise).as_numpy_iterator()) for _ in range(2)]
    for (d1, c1, n1), (d2, c2, n2), (name, clean) in zip(*runs, items):
        assert n1.decode() == name and d1.shape == (1,) + clean.shape
        np.testing.assert_array_equal(d1, d2)
        np.testing.assert_array_equal(d1[0], noise.apply_eval(clean, name))
        np.testing.assert_array_equal(c1[0], clean)
    pairs = load_eval_items("derain", rain_dir, 3)
    degraded, clean, name = next(evaluation_stream(pairs).as_numpy_iterator())
    np.testing.assert_array_equal(degraded[0], pairs[0][1])
    assert name.decode() == pairs[0][0]


# --- tasks ----------------------------------------------------------------------------------

def test_task_defaults_use_bundled_samples():
    denoise = load_task_data("denoise")
    assert denoise.channels == 1 and isinstance(denoise.degradation, GaussianNoise)
    assert (len(denoise.weights_items), len(denoise.arch_items)) == (12, 4)
    assert load_task_data("denoise", color=True, sigma=(10, 50)).weights_items[0][1].shape[-1] == 3
    derain = load_task_data("derain")
    assert derain.channels == 3 and derain.degradation is None
    assert (len(derain.weights_items), len(derain.arch_items)) == (8, 2)
    assert derain.description["layout"] == {"weights": "pairs", "arch": "pairs"}
    assert not set(derain.description["weights_images"]) & set(derain.description["arch_images"])


def test_task_folders(bsds_train_dir, bsds_val_dir, rain_dir):
    data = load_task_data("derain", weights_data=bsds_val_dir, arch_data=rain_dir)
    assert isinstance(data.degradation, RainStreaks) and len(data.arch_items[0]) == 3
    assert data.description["degradation"]["type"] == "rain_streaks"
    data = load_task_data("denoise", data=bsds_val_dir, split_fraction=0.75, seed=3, sigma=15)
    total = len(list_images(bsds_val_dir))
    assert (len(data.weights_items), len(data.arch_items)) == (total * 3 // 4, total // 4)
    assert data.description["degradation"]["sigma"] == 15.0
    w_ds, a_ds = search_streams(data.weights_items, data.arch_items, data.degradation, 16, 2, 0)
    next(iter(tf.data.Dataset.zip((w_ds, a_ds))))
