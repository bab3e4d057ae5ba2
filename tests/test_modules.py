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


# BatchNorm against a float64 NumPy reference -------------------------------------------


def bn_reference(x, gamma, beta, w, eps=modules.BN_EPSILON):
    """Float64 train-mode BN (biased variance) of NHWC `x`; gradients of sum(w * y)."""
    x, w = x.astype(np.float64), w.astype(np.float64)
    axes = (0, 1, 2)
    mean, var = x.mean(axes), x.var(axes)
    xhat = (x - mean) / np.sqrt(var + eps)
    y = gamma * xhat + beta
    dx = gamma / np.sqrt(var + eps) * (w - w.mean(axes) - xhat * (w * xhat).mean(axes))
    return y, {"x": dx, "gamma": (w * xhat).sum(axes), "beta": w.sum(axes)}


def bn_train_call(layer, x, w):
    """Train-mode output of `layer` and the gradients of sum(w * y) w.r.t. x, gamma, beta."""
    import keras

    if keras.backend.backend() == "jax":
        import jax

        def loss(x, gamma, beta):
            y, _ = layer.stateless_call([gamma, beta], [v.value for v in layer.non_trainable_variables],
                                        x, training=True)
            return (y * w).sum(), y

        grads, y = jax.grad(loss, argnums=(0, 1, 2), has_aux=True)(x, layer.gamma.value, layer.beta.value)
    else:
        import tensorflow as tf

        x = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(y * w)
        grads = tape.gradient(loss, [x, layer.gamma, layer.beta])
    return np.asarray(y), dict(zip(("x", "gamma", "beta"), (np.asarray(g) for g in grads)))


@pytest.mark.parametrize("offset", [0.0, 100.0])
def test_batchnorm_train_outputs_and_gradients_match_float64(offset):
    """Mean 100x the standard deviation included: a one-pass E[x^2]-E[x]^2 fails this."""
    rng = np.random.RandomState(0)
    x = (offset + rng.randn(4, 8, 8, 3)).astype("float32")
    w = rng.randn(*x.shape).astype("float32")
    layer = modules.batch_norm()
    layer.build(x.shape)
    gamma, beta = rng.uniform(0.5, 2.0, 3).astype("float32"), rng.randn(3).astype("float32")
    layer.gamma.assign(gamma)
    layer.beta.assign(beta)
    y, grads = bn_train_call(layer, x, w)
    y_ref, grads_ref = bn_reference(x, gamma, beta, w)
    np.testing.assert_allclose(y, y_ref, rtol=1e-4, atol=1e-4)
    for key, ref in grads_ref.items():
        scale = np.abs(ref).max()
        np.testing.assert_allclose(grads[key], ref, atol=1e-4 * scale, err_msg=key)


@pytest.mark.parametrize("unbiased", [True, False])
def test_batchnorm_moving_statistics_match_pytorch_update(unbiased):
    """torch: running_var <- (1 - 0.1) v + 0.1 var(ddof=1) (n = batch x H x W); Keras: ddof=0."""
    rng = np.random.RandomState(1)
    batches = [(3.0 + 2.0 * rng.randn(2, 5, 3, 4)).astype("float32") for _ in range(3)]
    layer = modules.BatchNorm(momentum=modules.BN_MOMENTUM, epsilon=modules.BN_EPSILON,
                              unbiased_moving_variance=unbiased)
    mean, var = np.zeros(4), np.ones(4)
    for x in batches:
        layer(x, training=True)
        x64 = x.astype(np.float64)
        mean = 0.9 * mean + 0.1 * x64.mean((0, 1, 2))
        var = 0.9 * var + 0.1 * x64.var((0, 1, 2), ddof=1 if unbiased else 0)
    np.testing.assert_allclose(np.asarray(layer.moving_mean), mean, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(layer.moving_variance), var, rtol=1e-5)
    # inference uses the moving statistics
    x = batches[0]
    expected = (x - mean) / np.sqrt(var + modules.BN_EPSILON)
    np.testing.assert_allclose(np.asarray(layer(x, training=False)), expected, rtol=1e-4, atol=1e-5)


def test_batchnorm_round_trip_keeps_update_rule():
    x = np.random.RandomState(2).rand(2, 4, 4, 3).astype("float32")
    run_layer_test(modules.BatchNorm(unbiased_moving_variance=False), x, x.shape, 6)
    layer = modules.batch_norm()
    run_layer_test(layer, x, x.shape, 6)
    assert layer.get_config()["unbiased_moving_variance"] is True
