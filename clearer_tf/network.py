"""The discrete CLEARER network built from a genotype (trained from scratch)."""

import keras
from keras import layers, ops

from clearer_tf import modules
from clearer_tf.genotype import Genotype
from clearer_tf.supernet import build_backbone, column_name


def build_network(genotype, name="clearer"):
    """A functional `keras.Model` with only the chosen module in each column.

    Args:
        genotype: a `Genotype`, its dict, or a `genotype.json` path.

    Input shape is (None, None, channels); height and width must be multiples
    of 2**cells (wrap with `with_padding` for arbitrary sizes).
    """
    genotype = Genotype.coerce(genotype)
    config = genotype.supernet_config()

    def make_column(widths, cell, column):
        module = modules.MODULES[genotype.cells[cell][column]]
        return module(widths, name=column_name(cell, column))

    return build_backbone(config, make_column, name=name)


@keras.saving.register_keras_serializable(package="clearer_tf")
class PadToMultiple(layers.Layer):
    """Reflect-pads H and W up to a multiple of `multiple` (bottom/right).

    Returns the padded image; `CropLike` crops the restored image back.
    """

    def __init__(self, multiple=8, **kwargs):
        super().__init__(**kwargs)
        self.multiple = multiple

    def call(self, x):
        shape = ops.shape(x)
        m = self.multiple
        pad_h = (m - shape[1] % m) % m
        pad_w = (m - shape[2] % m) % m
        # reflect padding needs pad < size; tile-free two-step for tiny images is not needed
        padded = ops.pad(x, [[0, 0], [0, pad_h], [0, pad_w], [0, 0]], mode="reflect")
        # A pad by computed amounts loses the static channel count in TF graphs; restore it
        # (TFLite convolutions need it). The batch is spelled out, not -1: a wrong channel
        # count must fail here, not turn into more images (also in TFLite, which drops asserts).
        return ops.reshape(padded, (shape[0], shape[1] + pad_h, shape[2] + pad_w, x.shape[-1]))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], None, None, input_shape[3])

    def get_config(self):
        config = super().get_config()
        config.update(multiple=self.multiple)
        return config


@keras.saving.register_keras_serializable(package="clearer_tf")
class CropLike(layers.Layer):
    """Crops the first input to the height and width of the second."""

    def call(self, inputs):
        x, reference = inputs
        shape = ops.shape(reference)
        return x[:, : shape[1], : shape[2], :]

    def compute_output_shape(self, input_shape):
        return input_shape[1][:3] + (input_shape[0][3],)


def with_padding(model, multiple=None, name=None):
    """Wrap `model` so any H x W is accepted: reflect-pad to `multiple`, restore, crop."""
    if multiple is None:
        multiple = 2 ** sum(1 for l in model.layers if l.name.startswith("transition"))
    channels = model.input_shape[-1]
    inputs = keras.Input((None, None, channels), name="image")
    x = PadToMultiple(multiple, name="pad")(inputs)
    y = model(x)
    y = CropLike(name="crop")([y, inputs])
    return keras.Model(inputs, y, name=name or f"{model.name}_any_size")
