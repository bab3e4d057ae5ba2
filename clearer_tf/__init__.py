"""clearer-tf: CLEARER multi-scale architecture search for image restoration (Keras 3)."""

from clearer_tf.genotype import Genotype
from clearer_tf.network import build_network
from clearer_tf.supernet import build_supernet

__all__ = ["Genotype", "build_network", "build_supernet"]
__version__ = "0.1.0"
