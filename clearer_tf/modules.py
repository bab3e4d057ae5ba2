"""CLEARER's search-space building blocks as Keras 3 layers (`keras.ops` only).

Definitions follow the authors' released code (the paper's supplement differs
where noted). Multi-branch layers take and return a list of NHWC tensors,
branch 0 at full resolution, branch i at 1/2**i with `widths[i]` channels.
"""

import keras
from keras import layers, ops

register = keras.saving.register_keras_serializable(package="clearer_tf")

BN_MOMENTUM = 0.9  # = torch momentum 0.1
BN_EPSILON = 1e-5  # torch default


def conv_initializer():
    """Every conv kernel ~ N(0, 0.001**2), as the authors' `init_weights`."""
    return keras.initializers.RandomNormal(mean=0.0, stddev=0.001)


def conv2d(filters, kernel_size, strides=1, name=None):
    """Bias-free conv. Stride 2 pads 1 pixel on every side (torch `padding=1`)."""
    return layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="valid" if strides > 1 else "same",
        use_bias=False,
        kernel_initializer=conv_initializer(),
        name=name,
    )


def batch_norm(name=None):
    return BatchNorm(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name)


@register
class BatchNorm(layers.BatchNormalization):
    """`keras.layers.BatchNormalization` whose moving variance is updated as PyTorch's.

    Training normalises with the biased batch variance (Keras' two-pass `moments`, as
    PyTorch), but the moving variance is updated with the unbiased one, times
    `n / (n - 1)` for `n` values per channel (batch x H x W, all replicas when
    synchronised), as `torch.nn.BatchNorm2d` and so the authors' code do. Keras' own
    layer updates it with the biased variance (`unbiased_moving_variance=False`).

    Args:
        unbiased_moving_variance: PyTorch's update (default) or Keras' (False).
        **kwargs: `keras.layers.BatchNormalization` arguments.

    Example:
    >>> bn = BatchNorm(momentum=0.9, epsilon=1e-5)
    >>> y = bn(x, training=True)  # moving_variance <- 0.9 v + 0.1 var(x, ddof=1)
    """

    def __init__(self, unbiased_moving_variance=True, **kwargs):
        super().__init__(**kwargs)
        self.unbiased_moving_variance = bool(unbiased_moving_variance)

    def call(self, inputs, training=None, mask=None):
        keras_update = not (training and self.trainable) or not self.unbiased_moving_variance
        if keras_update or mask is not None or self.renorm:
            return super().call(inputs, training=training, mask=mask)
        x = ops.cast(inputs, keras.backend.result_type(inputs.dtype, "float32"))
        mean, variance = self._moments(x, None)
        n = self._replicas()
        for axis in self._reduction_axes:
            n = n * ops.shape(x)[axis]
        n = ops.cast(n, x.dtype)
        m = self.momentum
        self.moving_mean.assign(ops.cast(self.moving_mean, x.dtype) * m + mean * (1.0 - m))
        unbiased = variance * (n / ops.maximum(n - 1.0, 1.0))
        self.moving_variance.assign(ops.cast(self.moving_variance, x.dtype) * m + unbiased * (1.0 - m))
        outputs = ops.batch_normalization(
            x,
            mean,
            variance,
            axis=self.axis,
            offset=ops.cast(self.beta, x.dtype) if self.center else None,
            scale=ops.cast(self.gamma, x.dtype) if self.scale else None,
            epsilon=self.epsilon,
        )
        return ops.cast(outputs, self.compute_dtype)

    def _replicas(self):
        """Replicas whose batches a synchronised layer pools (TensorFlow's distribution API)."""
        if not self.synchronized or keras.backend.backend() != "tensorflow":
            return 1
        import tensorflow as tf

        context = tf.distribute.get_replica_context()
        return context.num_replicas_in_sync if context is not None else 1

    def get_config(self):
        config = super().get_config()
        config.update(unbiased_moving_variance=self.unbiased_moving_variance)
        return config


def _pad1(x):
    return ops.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])


@register
class ConvBN(layers.Layer):
    """conv (no bias) -> BN -> optional ReLU; stride 2 uses torch-style symmetric padding.

    Args:
        filters: output channels.
        kernel_size: 1 or 3.
        strides: 1 or 2.
        relu: apply ReLU after BN.
    """

    def __init__(self, filters, kernel_size=3, strides=1, relu=True, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.kernel_size = kernel_size
        self.strides = strides
        self.relu = relu
        self.conv = conv2d(filters, kernel_size, strides, name="conv")
        self.bn = batch_norm(name="bn")

    def build(self, input_shape):
        shape = list(input_shape)
        if self.strides > 1:
            shape[1] = None if shape[1] is None else shape[1] + 2
            shape[2] = None if shape[2] is None else shape[2] + 2
        self.conv.build(tuple(shape))
        self.bn.build(self.conv.compute_output_shape(tuple(shape)))

    def call(self, x, training=None):
        if self.strides > 1:
            x = _pad1(x)
        x = self.bn(self.conv(x), training=training)
        return ops.relu(x) if self.relu else x

    def compute_output_shape(self, input_shape):
        n, h, w, _ = input_shape
        s = self.strides
        h = None if h is None else (h + s - 1) // s
        w = None if w is None else (w + s - 1) // s
        return (n, h, w, self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            strides=self.strides,
            relu=self.relu,
        )
        return config


@register
class ResidualUnit(layers.Layer):
    """Basic residual unit: 3x3 conv-BN-ReLU-3x3 conv-BN, + identity, ReLU.

    Args:
        channels: input and output channels.
    """

    def __init__(self, channels, **kwargs):
        super().__init__(**kwargs)
        self.channels = channels
        self.conv1 = ConvBN(channels, 3, relu=True, name="conv_bn1")
        self.conv2 = ConvBN(channels, 3, relu=False, name="conv_bn2")

    def build(self, input_shape):
        self.conv1.build(input_shape)
        self.conv2.build(input_shape)

    def call(self, x, training=None):
        y = self.conv2(self.conv1(x, training=training), training=training)
        return ops.relu(x + y)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(channels=self.channels)
        return config


@register
class Bottleneck(layers.Layer):
    """Stem bottleneck: 1x1-3x3-1x1 convs with BN/ReLU, expansion 4, projection shortcut.

    Args:
        planes: bottleneck width; the output has `4 * planes` channels.
        project: use a 1x1 conv + BN shortcut (needed when channels change).
    """

    expansion = 4

    def __init__(self, planes, project=False, **kwargs):
        super().__init__(**kwargs)
        self.planes = planes
        self.project = project
        out = planes * self.expansion
        self.conv1 = ConvBN(planes, 1, name="conv_bn1")
        self.conv2 = ConvBN(planes, 3, name="conv_bn2")
        self.conv3 = ConvBN(out, 1, relu=False, name="conv_bn3")
        self.shortcut = ConvBN(out, 1, relu=False, name="shortcut") if project else None

    def build(self, input_shape):
        mid = tuple(input_shape[:-1]) + (self.planes,)
        self.conv1.build(input_shape)
        self.conv2.build(mid)
        self.conv3.build(mid)
        if self.shortcut is not None:
            self.shortcut.build(input_shape)

    def call(self, x, training=None):
        y = self.conv1(x, training=training)
        y = self.conv2(y, training=training)
        y = self.conv3(y, training=training)
        shortcut = x if self.shortcut is None else self.shortcut(x, training=training)
        return ops.relu(y + shortcut)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.planes * self.expansion,)

    def get_config(self):
        config = super().get_config()
        config.update(planes=self.planes, project=self.project)
        return config


@register
class Stem(layers.Layer):
    """Full-resolution stem ("two parallel modules" in the paper): bottleneck blocks.

    Args:
        planes: bottleneck width (output `4 * planes` channels).
        blocks: number of bottleneck blocks; the first has a projection shortcut.
    """

    def __init__(self, planes=32, blocks=2, **kwargs):
        super().__init__(**kwargs)
        self.planes = planes
        self.blocks = blocks
        self.units = [
            Bottleneck(planes, project=(i == 0), name=f"bottleneck{i}") for i in range(blocks)
        ]

    def build(self, input_shape):
        shape = input_shape
        for unit in self.units:
            unit.build(shape)
            shape = unit.compute_output_shape(shape)

    def call(self, x, training=None):
        for unit in self.units:
            x = unit(x, training=training)
        return x

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.planes * Bottleneck.expansion,)

    def get_config(self):
        config = super().get_config()
        config.update(planes=self.planes, blocks=self.blocks)
        return config


def _scaled(shape, factor, channels):
    n, h, w, _ = shape
    h = None if h is None else h // factor
    w = None if w is None else w // factor
    return (n, h, w, channels)


@register
class MultiBranchLayer(layers.Layer):
    """Base for layers over a list of resolution branches with `widths[i]` channels."""

    def __init__(self, widths, **kwargs):
        super().__init__(**kwargs)
        self.widths = [int(w) for w in widths]

    def get_config(self):
        config = super().get_config()
        config.update(widths=list(self.widths))
        return config


@register
class ParallelModule(MultiBranchLayer):
    """Parallel module: one residual unit per branch; resolutions and widths kept.

    Args:
        widths: channels of each branch, full resolution first.
    """

    def __init__(self, widths, **kwargs):
        super().__init__(widths, **kwargs)
        self.units = [ResidualUnit(c, name=f"branch{i}") for i, c in enumerate(self.widths)]

    def build(self, input_shape):
        for unit, shape in zip(self.units, input_shape):
            unit.build(shape)

    def call(self, xs, training=None):
        return [unit(x, training=training) for unit, x in zip(self.units, xs)]

    def compute_output_shape(self, input_shape):
        return list(input_shape)


@register
class Downsample(layers.Layer):
    """(steps) stride-2 3x3 conv-BN; ReLU between them, not after the last.

    Intermediate convs keep `in_channels`; the last one outputs `filters`.
    """

    def __init__(self, in_channels, filters, steps, **kwargs):
        super().__init__(**kwargs)
        self.in_channels = in_channels
        self.filters = filters
        self.steps = steps
        self.convs = [
            ConvBN(
                filters if k == steps - 1 else in_channels,
                3,
                strides=2,
                relu=k < steps - 1,
                name=f"down{k}",
            )
            for k in range(steps)
        ]

    def build(self, input_shape):
        shape = input_shape
        for conv in self.convs:
            conv.build(shape)
            shape = conv.compute_output_shape(shape)

    def call(self, x, training=None):
        for conv in self.convs:
            x = conv(x, training=training)
        return x

    def compute_output_shape(self, input_shape):
        return _scaled(input_shape, 2**self.steps, self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(in_channels=self.in_channels, filters=self.filters, steps=self.steps)
        return config


@register
class Upsample(layers.Layer):
    """1x1 conv-BN then nearest-neighbour upsampling by `factor` in one step."""

    def __init__(self, filters, factor, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.factor = factor
        self.conv = ConvBN(filters, 1, relu=False, name="conv_bn")

    def build(self, input_shape):
        self.conv.build(input_shape)

    def call(self, x, training=None):
        x = self.conv(x, training=training)
        f = self.factor
        x = ops.repeat(x, f, axis=1)
        return ops.repeat(x, f, axis=2)

    def compute_output_shape(self, input_shape):
        n, h, w, _ = input_shape
        f = self.factor
        return (n, None if h is None else h * f, None if w is None else w * f, self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, factor=self.factor)
        return config


@register
class FusionModule(MultiBranchLayer):
    """Fusion module: out_i = ReLU(sum_j T_ij(x_j)) (paper Sec. 3.1, authors' code).

    T_ii is the identity; a lower-resolution branch (j > i) goes through 1x1
    conv-BN and nearest upsampling by 2**(j-i); a higher-resolution branch
    (j < i) through (i-j) stride-2 3x3 conv-BNs.

    Args:
        widths: channels of the input branches, full resolution first.
        outputs: number of output branches (default all); the supernet's
            head fuses to the full-resolution branch only (`outputs=1`).
    """

    def __init__(self, widths, outputs=None, **kwargs):
        super().__init__(widths, **kwargs)
        self.outputs = len(self.widths) if outputs is None else int(outputs)
        w = self.widths
        self.paths = {}  # "i_j": the path from branch j to output i
        for i in range(self.outputs):
            for j in range(len(w)):
                if j > i:
                    self.paths[f"{i}_{j}"] = Upsample(w[i], 2 ** (j - i), name=f"up_{j}_to_{i}")
                elif j < i:
                    self.paths[f"{i}_{j}"] = Downsample(w[j], w[i], i - j, name=f"down_{j}_to_{i}")

    def build(self, input_shape):
        for key, path in self.paths.items():
            path.build(input_shape[int(key.split("_")[1])])

    def call(self, xs, training=None):
        outs = []
        for i in range(self.outputs):
            total = xs[i]
            for j in range(len(xs)):
                if j != i:
                    total = total + self.paths[f"{i}_{j}"](xs[j], training=training)
            outs.append(ops.relu(total))
        return outs

    def compute_output_shape(self, input_shape):
        return [input_shape[i] for i in range(self.outputs)]

    def get_config(self):
        config = super().get_config()
        config.update(outputs=self.outputs)
        return config


@register
class TransitionModule(layers.Layer):
    """Transition: keep the branches, add a half-resolution one from the lowest.

    Kept branch i is the identity if its width is unchanged, else 3x3
    conv-BN-ReLU; the new branch is a stride-2 3x3 conv-BN-ReLU of the last
    (lowest-resolution) input branch.

    Args:
        in_widths: channels of the input branches.
        out_widths: channels of the output branches (`len(in_widths) + 1`).
    """

    def __init__(self, in_widths, out_widths, **kwargs):
        super().__init__(**kwargs)
        self.in_widths = [int(w) for w in in_widths]
        self.out_widths = [int(w) for w in out_widths]
        if len(self.out_widths) != len(self.in_widths) + 1:
            raise ValueError(
                f"TransitionModule: out_widths {self.out_widths} must have one more branch "
                f"than in_widths {self.in_widths}"
            )
        self.adapters = [
            None if cin == cout else ConvBN(cout, 3, name=f"adapt{i}")
            for i, (cin, cout) in enumerate(zip(self.in_widths, self.out_widths))
        ]
        self.new_branch = ConvBN(self.out_widths[-1], 3, strides=2, name="new_branch")

    def build(self, input_shape):
        for adapter, shape in zip(self.adapters, input_shape):
            if adapter is not None:
                adapter.build(shape)
        self.new_branch.build(input_shape[-1])

    def call(self, xs, training=None):
        outs = [
            x if adapter is None else adapter(x, training=training)
            for adapter, x in zip(self.adapters, xs)
        ]
        outs.append(self.new_branch(xs[-1], training=training))
        return outs

    def compute_output_shape(self, input_shape):
        shapes = [
            tuple(s[:-1]) + (c,) for s, c in zip(input_shape, self.out_widths[:-1])
        ]
        shapes.append(_scaled(input_shape[-1], 2, self.out_widths[-1]))
        return shapes

    def get_config(self):
        config = super().get_config()
        config.update(in_widths=list(self.in_widths), out_widths=list(self.out_widths))
        return config


MODULES = {"parallel": ParallelModule, "fusion": FusionModule}
"""Candidate operations of a column, by genotype name (extend to add operators)."""
