"""The CLEARER supernet: mixed columns (Eq. 1) inside the multi-scale backbone.

`build_backbone` wires stem -> S x (transition, cell of columns) -> fusion to
full resolution -> 1x1 conv; the supernet fills every column with a
`MixedColumn`, the discrete network (`network.py`) with the chosen module.
"""

import keras
from keras import layers, ops

from clearer_tf import modules
from clearer_tf.presets import SupernetConfig

CANDIDATES = ("parallel", "fusion")
"""Column candidates, in the order of the last axis of alpha."""

ALPHA_STDDEV = 1e-3


@keras.saving.register_keras_serializable(package="clearer_tf")
class MixedColumn(modules.MultiBranchLayer):
    """A searchable column: y = w_p P(x) + w_f F(x), (w_p, w_f) = softmax(alpha) (Eq. 1).

    Args:
        widths: channels of the branches, full resolution first.
        fusion_input: `"x"` (Eq. 1) or `"parallel"`: F is applied to P(x),
            as in the authors' code.

    Example:
    >>> col = MixedColumn([32, 64])
    >>> ys = col([keras.ops.ones((1, 8, 8, 32)), keras.ops.ones((1, 4, 4, 64))])
    """

    def __init__(self, widths, fusion_input="x", **kwargs):
        super().__init__(widths, **kwargs)
        self.fusion_input = fusion_input
        self.parallel = modules.ParallelModule(self.widths, name="parallel")
        self.fusion = modules.FusionModule(self.widths, name="fusion")

    def build(self, input_shape):
        self.alpha = self.add_weight(
            shape=(len(CANDIDATES),),
            initializer=keras.initializers.RandomNormal(stddev=ALPHA_STDDEV),
            name="alpha",
        )
        self.parallel.build(input_shape)
        self.fusion.build(input_shape)

    def mixing_weights(self):
        return ops.softmax(self.alpha)

    def call(self, xs, training=None):
        w = ops.softmax(self.alpha)
        p = self.parallel(xs, training=training)
        f = self.fusion(p if self.fusion_input == "parallel" else xs, training=training)
        return [w[0] * pi + w[1] * fi for pi, fi in zip(p, f)]

    def compute_output_shape(self, input_shape):
        return list(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(fusion_input=self.fusion_input)
        return config


@keras.saving.register_keras_serializable(package="clearer_tf")
class SizeCheck(layers.Layer):
    """Identity that rejects statically known heights/widths not divisible by `multiple`."""

    def __init__(self, multiple, **kwargs):
        super().__init__(**kwargs)
        self.multiple = multiple

    def call(self, x):
        for axis, what in ((1, "height"), (2, "width")):
            size = x.shape[axis]
            if isinstance(size, int) and size % self.multiple:  # JAX symbolic dims are not ints
                raise ValueError(
                    f"input {what} {size} is not a multiple of {self.multiple} (2**cells); "
                    "pad the image (clearer_tf.network.PadToMultiple) or crop it"
                )
        return x

    def get_config(self):
        config = super().get_config()
        config.update(multiple=self.multiple)
        return config


def column_name(cell, column):
    return f"cell{cell}_col{column}"


def build_backbone(config: SupernetConfig, make_column, name):
    """Functional multi-scale network; `make_column(widths, cell, column)` fills each column."""
    widths = config.widths()
    inputs = keras.Input((None, None, config.image_channels), name="image")
    x = SizeCheck(config.multiple, name="size_check")(inputs)
    x = modules.Stem(config.stem_planes, config.stem_blocks, name="stem")(x)
    xs, in_widths = [x], [config.stem_planes * modules.Bottleneck.expansion]
    for cell, n_columns in enumerate(config.columns):
        out_widths = widths[: cell + 2]
        xs = modules.TransitionModule(in_widths, out_widths, name=f"transition{cell}")(xs)
        for column in range(n_columns):
            xs = make_column(out_widths, cell, column)(xs)
        in_widths = out_widths
    y = modules.FusionModule(in_widths, outputs=1, name="head_fusion")(xs)[0]
    y = modules.conv2d(config.image_channels, 1, name="head_conv")(y)
    if config.residual:
        y = layers.Subtract(name="residual")([inputs, y])
    return keras.Model(inputs, y, name=name)


def build_supernet(image_channels=1, config: SupernetConfig | None = None, **options):
    """The CLEARER supernet as a `keras.Model` (every column a `MixedColumn`).

    Args:
        image_channels: 1 or 3.
        config: a full `SupernetConfig`; `options` override its fields
            (`base_width`, `columns`, `residual`, `fusion_input`, ...).
    """
    fields = config.to_dict() if config is not None else {}
    fields.update(options)
    fields["image_channels"] = image_channels if config is None else fields.get(
        "image_channels", image_channels
    )
    config = SupernetConfig(**fields)

    def make_column(widths, cell, column):
        return MixedColumn(widths, fusion_input=config.fusion_input, name=column_name(cell, column))

    model = build_backbone(config, make_column, name="clearer_supernet")
    model.supernet_config = config  # what SupernetSearch and the genotype derivation read
    return model


def mixed_columns(model):
    """The supernet's `MixedColumn` layers in order (cell by cell, column by column)."""
    return [layer for layer in model.layers if isinstance(layer, MixedColumn)]


def arch_variables(model):
    """The architecture parameters alpha, one (2,) variable per column."""
    return [col.alpha for col in mixed_columns(model)]


def weight_variables(model):
    """Trainable network weights, alpha excluded."""
    arch = {id(v) for v in arch_variables(model)}
    return [v for v in model.trainable_variables if id(v) not in arch]


def mixing_weights(model):
    """softmax(alpha) as a (columns, 2) tensor."""
    return ops.stack([col.mixing_weights() for col in mixed_columns(model)])
