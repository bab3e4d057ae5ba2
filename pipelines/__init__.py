"""tf.data input pipelines on real image folders (denoising and deraining)."""

from clearer_tf.quiet import import_tensorflow_quietly

import_tensorflow_quietly()  # before pipelines.noise imports TensorFlow
# isort: split

from pipelines.errors import DataError
from pipelines.images import IMAGE_EXTENSIONS, clear_cache, list_images, load_images, read_image
from pipelines.noise import GaussianNoise
from pipelines.pairs import load_pairs, load_side_by_side
from pipelines.rain import RainStreaks
from pipelines.streams import (
    dihedral,
    evaluation_stream,
    search_streams,
    split_by_image,
    training_stream,
)
from pipelines.tasks import SAMPLES, TaskData, load_eval_items, load_task_data

__all__ = [
    "DataError",
    "GaussianNoise",
    "IMAGE_EXTENSIONS",
    "RainStreaks",
    "SAMPLES",
    "TaskData",
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
