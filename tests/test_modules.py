"""Search-space layers: shapes, channels and parameter counts against hand counts."""

import numpy as np
import pytest

from clearer_tf import modules
from clearer_tf.supernet import MixedColumn
from layer_test import run_layer_test

WIDTHS = [32, 64, 128, 256]


def residual_params(c):
    return 2 * (9 * c * c + 2 * c)  # two bias-free 3x3 convs + two BN (gamma, beta)


def branches(widths, size=16, batch=2, seed=0):
    rng = np.random.RandomState(seed)
    return [rng.rand(batch, size // 2**i, size // 2**i, c).astype("float32") for i, c in enumerate(widths)]


def shapes(widths, size=16, batch=2):
    return [(batch, size // 2**i, size // 2**i, c) for i, c in enumerate(widths)]


@pytest.mark.parametrize("n, expected", [(2, 92_544), (3, 387_968), (4, 1_568_640)])
def test_parallel_module_counts_match_authors(n, expected):
    widths = WIDTHS[:n]
    assert sum(residual_params(c) for c in widths) == expected  # the hand formula itself
    layer = modules.ParallelModule(widths)
    run_layer_test(layer, branches(widths), shapes(widths), expected)


@pytest.mark.parametrize("n, expected", [(2, 20_672), (3, 153_536), (4, 784_512)])
def test_fusion_module_counts_match_authors(n, expected):
    widths = WIDTHS[:n]
    layer = modules.FusionModule(widths)
    run_layer_test(layer, branches(widths), shapes(widths), expected)


def test_fusion_is_sum_of_resampled_branches():
    """With 1x1 kernels = identity and BN at its init, fusion of constants is a known sum."""
    widths = [2, 2]
    layer = modules.FusionModule(widths)
    xs = [np.full((1, 4, 4, 2), 1.0, "float32"), np.full((1, 2, 2, 2), 2.0, "float32")]
    layer(xs)
    up = layer.paths["0_1"].conv.conv
    up.kernel.assign(np.eye(2, dtype="float32")[None, None])
    out0 = np.asarray(layer(xs, training=False)[0])
    # BN in inference at init: (x - 0) / sqrt(1 + eps); upsampled value 2 everywhere
    np.testing.assert_allclose(out0, 1.0 + 2.0 / np.sqrt(1 + modules.BN_EPSILON), rtol=1e-6)


def test_transition_adds_half_resolution_branch():
    layer = modules.TransitionModule([128], [32, 64])
    x = np.random.rand(2, 16, 16, 128).astype("float32")
    expected = (9 * 128 * 32 + 64) + (9 * 128 * 64 + 128)
    run_layer_test(layer, [x], [(2, 16, 16, 32), (2, 8, 8, 64)], expected)


def test_transition_keeps_equal_width_branches_as_identity():
    layer = modules.TransitionModule([32, 64], [32, 64, 128])
    xs = branches([32, 64])
    outs = layer(xs)
    np.testing.assert_array_equal(np.asarray(outs[0]), xs[0])
    np.testing.assert_array_equal(np.asarray(outs[1]), xs[1])
    assert tuple(outs[2].shape) == (2, 4, 4, 128)
    assert sum(int(np.prod(v.shape)) for v in layer.trainable_variables) == 9 * 64 * 128 + 256


@pytest.mark.parametrize("channels", [1, 3])
def test_stem_bottlenecks(channels):
    layer = modules.Stem(32, 2)
    first = channels * 32 + 64 + 9 * 32 * 32 + 64 + 32 * 128 + 256 + channels * 128 + 256
    second = 128 * 32 + 64 + 9 * 32 * 32 + 64 + 32 * 128 + 256
    x = np.random.rand(2, 16, 16, channels).astype("float32")
    run_layer_test(layer, x, (2, 16, 16, 128), first + second)


def test_downsample_two_steps_widths():
    layer = modules.Downsample(32, 128, 2)
    x = np.random.rand(2, 16, 16, 32).astype("float32")
    expected = (9 * 32 * 32 + 64) + (9 * 32 * 128 + 256)
    run_layer_test(layer, x, (2, 4, 4, 128), expected)


def test_conv_kernels_initialised_as_authors():
    layer = modules.ConvBN(64, 3)
    layer.build((None, 8, 8, 64))
    kernel = np.asarray(layer.conv.kernel)
    assert abs(kernel.std() - 1e-3) < 1e-4 and abs(kernel.mean()) < 1e-4
    np.testing.assert_array_equal(np.asarray(layer.bn.gamma), 1.0)
    np.testing.assert_array_equal(np.asarray(layer.bn.beta), 0.0)


def test_mixed_column_round_trip_and_eq1():
    widths = [4, 8]
    layer = MixedColumn(widths)
    xs = branches(widths, size=8)
    run_layer_test(layer, xs, shapes(widths, size=8))
    layer.alpha.assign(np.array([0.3, -0.2], "float32"))
    w = np.exp([0.3, -0.2]) / np.exp([0.3, -0.2]).sum()
    p = layer.parallel(xs, training=False)
    f = layer.fusion(xs, training=False)
    out = layer(xs, training=False)
    for o, pi, fi in zip(out, p, f):
        np.testing.assert_allclose(np.asarray(o), w[0] * np.asarray(pi) + w[1] * np.asarray(fi), atol=1e-6)


def test_mixed_column_authors_variant_feeds_fusion_with_parallel_output():
    widths = [4, 8]
    layer = MixedColumn(widths, fusion_input="parallel")
    xs = branches(widths, size=8)
    layer(xs)
    w = np.asarray(layer.mixing_weights())
    p = layer.parallel(xs, training=False)
    f = layer.fusion(p, training=False)
    for o, pi, fi in zip(layer(xs, training=False), p, f):
        np.testing.assert_allclose(np.asarray(o), w[0] * np.asarray(pi) + w[1] * np.asarray(fi), atol=1e-6)
