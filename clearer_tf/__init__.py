"""clearer-tf: CLEARER multi-scale architecture search for image restoration (Keras 3)."""

import os

# TensorFlow's oneDNN CPU kernels are off by default on CPUs without AVX-512 VNNI; on an
# AVX2 CPU they make the supernet's weight step 20-30 % faster (docs/benchmarks.md). Only
# takes effect if TensorFlow is not imported yet; an explicit TF_ENABLE_ONEDNN_OPTS wins.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

from clearer_tf import schedules  # noqa: F401  (registers Rewarmup: saved models load anywhere)
from clearer_tf.genotype import Genotype
from clearer_tf.network import build_network
from clearer_tf.pretrained import list_pretrained, load_pretrained
from clearer_tf.search import SupernetSearch
from clearer_tf.supernet import build_supernet

__all__ = ["Genotype", "SupernetSearch", "build_network", "build_supernet", "list_pretrained", "load_pretrained"]
__version__ = "0.1.0"
