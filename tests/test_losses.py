"""Search losses (Eqs. 3-5) and column costs against NumPy and hand counts."""

import math
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from clearer_tf import complexity, losses, modules
from clearer_tf.supernet import build_supernet, mixed_columns

TINY = dict(base_width=4, columns=(2, 1), stem_planes=4, stem_blocks=1)


def softmax(a):
    e = np.exp(a - a.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_restoration_loss_is_mse():
    rng = np.random.RandomState(0)
    x, y = rng.rand(2, 8, 8, 3), rng.rand(2, 8, 8, 3)
    got = float(losses.restoration_loss(x.astype("float32"), y.astype("float32")))
    assert got == pytest.approx(np.mean((x - y) ** 2), rel=1e-5)


@pytest.mark.parametrize("base", [10.0, math.e, 2.0])
def test_arch_loss_equals_numpy(base):
    w = softmax(np.random.RandomState(1).randn(12, 2))
    expected = -np.mean(w * np.log(w) + (1 - w) * np.log(1 - w)) / np.log(base)
    assert float(losses.arch_loss(w.astype("float32"), log_base=base)) == pytest.approx(expected, rel=1e-5)


def test_arch_loss_default_base_10_is_largest_at_one_half():
    half = np.full((3, 2), 0.5, np.float32)
    assert float(losses.arch_loss(half)) == pytest.approx(np.log10(2.0), rel=1e-6)
    decided = np.array([[0.99, 0.01]] * 3, np.float32)
    assert float(losses.arch_loss(decided)) < float(losses.arch_loss(half))
    # clipped: exact 0/1 weights stay finite
    assert np.isfinite(float(losses.arch_loss(np.array([[1.0, 0.0]], np.float32))))


def test_arch_loss_gradient_pushes_softmax_weights_away_from_one_half():
    alpha = tf.Variable(np.random.RandomState(2).randn(6, 2).astype("float32") * 0.1)
    before = softmax(alpha.numpy())
    with tf.GradientTape() as tape:
        loss = losses.arch_loss(keras.ops.softmax(alpha, axis=-1))
    alpha.assign_sub(0.5 * tape.gradient(loss, alpha))
    after = softmax(alpha.numpy())
    assert np.all(np.abs(after - 0.5) > np.abs(before - 0.5))


def test_complexity_loss_equals_numpy():
    rng = np.random.RandomState(3)
    w = softmax(rng.randn(5, 2))
    costs = rng.rand(5, 2)
    costs /= costs.sum()
    expected = np.sum(w[:, 0] * costs[:, 0] + w[:, 1] * costs[:, 1]) / 5
    got = float(losses.complexity_loss(w.astype("float32"), costs))
    assert got == pytest.approx(expected, rel=1e-5)


def test_restoration_loss_registry():
    assert losses.get_restoration_loss("mse") is losses.restoration_loss
    with pytest.raises(ValueError, match="unknown loss 'psnr'"):
        losses.get_restoration_loss("psnr")


# --- costs ---------------------------------------------------------------------------------
def bn(c):
    return 2 * c


def parallel_params(widths):
    return sum(2 * (9 * c * c + bn(c)) for c in widths)


def fusion_params(widths):
    total = 0
    for i, ci in enumerate(widths):
        for j, cj in enumerate(widths):
            if j > i:  # 1x1 conv + BN, then upsampling
                total += cj * ci + bn(ci)
            elif j < i:  # (i - j) stride-2 3x3 convs; width c_j until the last
                total += (i - j - 1) * (9 * cj * cj + bn(cj)) + 9 * cj * ci + bn(ci)
    return total


def parallel_macs(widths, h, w):
    return sum(2 * (h >> i) * (w >> i) * 9 * c * c for i, c in enumerate(widths))


def fusion_macs(widths, h, w):
    total = 0
    for i, ci in enumerate(widths):
        for j, cj in enumerate(widths):
            if j > i:
                total += (h >> j) * (w >> j) * cj * ci
            elif j < i:
                for step in range(1, i - j + 1):
                    out = ci if step == i - j else cj
                    total += (h >> (j + step)) * (w >> (j + step)) * 9 * cj * out
    return total


def test_hand_counts_match_the_authors_numbers():
    # the PyTorch counts, so the hand formulas below are trustworthy
    assert [parallel_params([32, 64, 128, 256][:n]) for n in (2, 3, 4)] == [92_544, 387_968, 1_568_640]
    assert [fusion_params([32, 64, 128, 256][:n]) for n in (2, 3, 4)] == [20_672, 153_536, 784_512]
    fusion = modules.FusionModule([32, 64, 128])
    shapes = [(1, 8, 8, 32), (1, 4, 4, 64), (1, 2, 2, 128)]
    fusion.build(shapes)
    assert complexity.parameter_count(fusion, shapes) == 153_536


@pytest.fixture(scope="module")
def tiny_supernet():
    keras.utils.set_random_seed(0)
    return build_supernet(image_channels=1, **TINY)


def test_param_costs_equal_hand_count(tiny_supernet):
    rows = [[parallel_params(c.widths), fusion_params(c.widths)] for c in mixed_columns(tiny_supernet)]
    expected = np.array(rows, float) / np.sum(rows)
    got = complexity.column_costs(tiny_supernet, "params")
    assert got.shape == (3, 2)
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_flop_costs_equal_hand_count(tiny_supernet):
    h, w = 32, 16  # not square, to catch swapped axes
    rows = [[parallel_macs(c.widths, h, w), fusion_macs(c.widths, h, w)] for c in mixed_columns(tiny_supernet)]
    expected = np.array(rows, float) / np.sum(rows)
    got = complexity.column_costs(tiny_supernet, "flops", height=h, width=w)
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert not np.allclose(got, complexity.column_costs(tiny_supernet, "params"))


def test_cost_measures_are_pluggable(tiny_supernet):
    complexity.register_cost_measure("unit")(lambda module, shapes: 1.0)
    try:
        np.testing.assert_allclose(complexity.column_costs(tiny_supernet, "unit"), np.full((3, 2), 1 / 6))
    finally:
        del complexity.COST_MEASURES["unit"]
    with pytest.raises(ValueError, match="unknown cost measure"):
        complexity.column_costs(tiny_supernet, "latency")


def _pair(seed=0, shape=(2, 24, 20, 1)):
    rng = np.random.default_rng(seed)
    clean = rng.random(shape)
    return np.clip(clean + 0.1 * rng.standard_normal(shape), 0, 1), clean


def test_l1_and_charbonnier_equal_numpy_float64():
    x, y = _pair()
    assert float(losses.l1_loss(x.astype("float32"), y.astype("float32"))) == pytest.approx(
        np.mean(np.abs(x - y)), rel=1e-5)
    expected = np.mean(np.sqrt((x - y) ** 2 + 1e-6))
    assert float(losses.charbonnier_loss(x.astype("float32"), y.astype("float32"))) == pytest.approx(
        expected, rel=1e-5)


def test_log_ssim_equals_scikit_image():
    from skimage.metrics import structural_similarity

    x, y = _pair(1, (3, 32, 28, 1))
    ssims = [structural_similarity(a[..., 0], b[..., 0], data_range=1.0, gaussian_weights=True, sigma=1.5,
                                   use_sample_covariance=False) for a, b in zip(x, y)]
    got = float(losses.log_ssim_loss(x.astype("float32"), y.astype("float32")))
    assert got == pytest.approx(-np.log10(np.mean(ssims)), rel=1e-4)


def test_weighted_sum_of_losses_equals_numpy():
    from skimage.metrics import structural_similarity

    x, y = _pair(2, (2, 32, 32, 1))
    fn = losses.get_restoration_loss("mse + 0.5*log_ssim + 2e-1*l1")
    ssim = np.mean([structural_similarity(a[..., 0], b[..., 0], data_range=1.0, gaussian_weights=True,
                                          sigma=1.5, use_sample_covariance=False) for a, b in zip(x, y)])
    expected = np.mean((x - y) ** 2) + 0.5 * -np.log10(ssim) + 0.2 * np.mean(np.abs(x - y))
    assert float(fn(x.astype("float32"), y.astype("float32"))) == pytest.approx(expected, rel=1e-4)
    assert losses.parse_loss_spec("mse+0.5*log_ssim") == [(1.0, "mse"), (0.5, "log_ssim")]


@pytest.mark.parametrize("spec, message", [
    ("", "expected a name or a sum"),
    ("mse+", "cannot read the term ''"),
    ("0*mse", "the weight of 'mse' must be > 0"),
    ("mse+mse", "'mse' appears twice"),
    ("mse+0.5*ssim", "unknown loss 'ssim'"),
    ("-1*l1", "cannot read the term"),
])
def test_bad_loss_specs_are_refused_in_one_line(spec, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        losses.parse_loss_spec(spec)


def test_log_ssim_gradient_is_finite_and_improves_ssim():
    x, y = _pair(3, (1, 32, 32, 1))
    restored = keras.Variable(x.astype("float32"))
    with tf.GradientTape() as tape:
        before = losses.log_ssim_loss(restored, y.astype("float32"))
    grad = tape.gradient(before, restored)
    assert np.all(np.isfinite(np.asarray(grad)))
    restored.assign_sub(0.5 * grad)
    assert float(losses.log_ssim_loss(restored, y.astype("float32"))) < float(before)


def test_restoration_loss_for_compile_equals_numpy_and_round_trips(tmp_path):
    from clearer_tf.genotype import Genotype
    from clearer_tf.network import build_network
    from clearer_tf.presets import TrainConfig
    from clearer_tf.training import check_train_config, compile_network

    x, y = _pair(4, (2, 16, 16, 1))
    loss = losses.RestorationLoss("mse+0.5*l1")
    expected = np.mean((x - y) ** 2) + 0.5 * np.mean(np.abs(x - y))
    assert float(loss(y.astype("float32"), x.astype("float32"))) == pytest.approx(expected, rel=1e-5)
    model = build_network(Genotype.from_string("F / P / F", base_width=4, stem_planes=4, stem_blocks=1))
    compile_network(model, TrainConfig(loss="mse+0.5*l1", jit_compile=False))
    assert isinstance(model.loss, losses.RestorationLoss) and model.loss.spec == "mse+0.5*l1"
    model.save(tmp_path / "m.keras")
    assert keras.saving.load_model(tmp_path / "m.keras").loss.spec == "mse+0.5*l1"
    with pytest.raises(ValueError, match="unknown loss 'ssim'"):
        check_train_config(TrainConfig(loss="ssim"))
    assert compile_network(build_network(Genotype.from_string("F / P / F", base_width=4, stem_planes=4,
                                                              stem_blocks=1)), TrainConfig()).loss == "mean_squared_error"
