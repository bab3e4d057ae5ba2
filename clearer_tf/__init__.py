"""clearer-tf: CLEARER multi-scale architecture search for image restoration (Keras 3)."""

import os

# TensorFlow's oneDNN CPU kernels are off by default on CPUs without AVX-512 VNNI; on an
# AVX2 CPU they make the supernet's weight step 20-30 % faster (docs/benchmarks.md). Only
# takes effect if TensorFlow is not imported yet; an explicit TF_ENABLE_ONEDNN_OPTS wins.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

from clearer_tf.quiet import import_tensorflow_quietly  # noqa: E402

import_tensorflow_quietly()  # no C++ start-up block unless CLEARER_VERBOSE=1

from clearer_tf import schedules  # noqa: E402,F401  (registers Rewarmup: saved models load anywhere)
from clearer_tf.genotype import Genotype  # noqa: E402
from clearer_tf.network import build_network  # noqa: E402
from clearer_tf.pretrained import list_pretrained, load_pretrained  # noqa: E402
from clearer_tf.search import SupernetSearch  # noqa: E402
from clearer_tf.supernet import build_supernet  # noqa: E402

__all__ = ["Genotype", "SupernetSearch", "build_network", "build_supernet", "list_pretrained", "load_pretrained"]
__version__ = "0.1.0"
