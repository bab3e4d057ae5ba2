"""Input pipelines on real image folders (denoising and deraining): tf.data streams
(`pipelines.streams`, imported on first use) and, on JAX, batches drawn on the accelerator
(`pipelines.device`). Loading, items and degradations need no TensorFlow."""

from clearer_tf.quiet import import_tensorflow_quietly

import_tensorflow_quietly()  # quiet start-up lines where TensorFlow is installed (JAX-only: skipped)
# isort: split

from pipelines.errors import DataError
from pipelines.images import IMAGE_EXTENSIONS, clear_cache, list_images, load_images, read_image
from pipelines.items import check_items, split_by_image
from pipelines.noise import GaussianNoise
from pipelines.pairs import load_pairs, load_side_by_side
from pipelines.rain import RainStreaks
from pipelines.tasks import SAMPLES, TaskData, load_eval_items, load_task_data

__all__ = [
    "DataError",
    "GaussianNoise",
    "IMAGE_EXTENSIONS",
    "RainStreaks",
    "SAMPLES",
    "TaskData",
    "check_items",
    "clear_cache",
    "dihedral",
    "evaluation_stream",
    "list_images",
    "load_eval_items",
    "load_images",
    "load_pairs",
    "load_side_by_side",
    "load_task_data",
    "read_image",
    "search_streams",
    "split_by_image",
    "training_stream",
]

_STREAMS = ("dihedral", "evaluation_stream", "search_streams", "training_stream")


def __getattr__(name):
    """The tf.data streams, imported on first use (a JAX-only machine has no TensorFlow)."""
    if name in _STREAMS:
        from pipelines import streams

        return getattr(streams, name)
    raise AttributeError(f"module 'pipelines' has no attribute {name!r}")
