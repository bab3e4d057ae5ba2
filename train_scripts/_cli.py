"""Shared bits of the command-line scripts: one-line errors, repo on sys.path, data options,
quiet TensorFlow (`--verbose` shows its C++ start-up block), one-line warnings."""

import argparse
import json
import os
import sys
import tempfile
import warnings

if "--verbose" in sys.argv[1:]:  # decided before anything imports TensorFlow
    os.environ["CLEARER_VERBOSE"] = "1"
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # oneDNN CPU kernels (see clearer_tf/__init__.py)
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:  # run from a fresh clone without installing
    sys.path.insert(0, REPO_ROOT)
warnings.formatwarning = lambda message, category, *args, **kwargs: f"warning: {message}\n"


class Parser(argparse.ArgumentParser):
    """argparse with errors on one line: `<prog>: error: <message>`, exit status 2, a
    `--verbose` flag (TensorFlow's C++ log lines), and `--compile-cache DIR` /
    `--no-compile-cache` (JAX's persistent compilation cache, `clearer_tf.compile_cache`),
    applied as the arguments are parsed.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.add_argument("--verbose", action="store_true",
                          help="show TensorFlow's start-up and C++ log lines")
        group = self.add_argument_group("JAX compilation cache (KERAS_BACKEND=jax only)")
        group = group.add_mutually_exclusive_group()
        group.add_argument("--compile-cache", metavar="DIR", default=None,
                           help="default: $JAX_COMPILATION_CACHE_DIR, else $CLEARER_JAX_CACHE, "
                                "else ~/.cache/clearer-tf/jax")
        group.add_argument("--no-compile-cache", action="store_true", help="compile from scratch")

    def parse_known_args(self, args=None, namespace=None):
        args, rest = super().parse_known_args(args, namespace)
        if keras_backend() == "jax":  # else no import here: TensorFlow's log lines would come first
            from clearer_tf import compile_cache

            compile_cache.enable(args.compile_cache, enabled=not args.no_compile_cache)
        return args, rest

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {' '.join(str(message).split())}\n")


def keras_backend():
    """`KERAS_BACKEND`, else `~/.keras/keras.json`'s backend, without importing Keras."""
    if "keras" in sys.modules:
        return sys.modules["keras"].backend.backend()
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    try:
        with open(os.path.join(home, "keras.json"), encoding="utf-8") as f:
            return json.load(f).get("backend", "tensorflow")
    except (OSError, ValueError):
        return "tensorflow"


def sigma(text):
    """`50` or a blind range `10,70` (0-255 scale)."""
    try:
        parts = [float(p) for p in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or LOW,HIGH, got {text!r}") from None
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2:
        return tuple(parts)
    raise argparse.ArgumentTypeError(f"expected a number or LOW,HIGH, got {text!r}")


def size(text):
    """`HxW`, e.g. `512x512`, as a tuple of ints."""
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW such as 512x512, got {text!r}") from None
    return height, width


def tile(text):
    """`--tile`: `auto` or a non-negative integer (0: no tiles)."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto or an integer, got {text!r}") from None


def check_writable_dir(path, argument="--out"):
    """ValueError (one line) unless `path` is, or can be made, a writable folder: no file
    in the way, the nearest existing folder accepts a new file. Creates nothing."""
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{argument} {path}: a file is in the way (need a folder)")
    existing = path
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ValueError(f"{argument} {path}: {existing} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".write-test-")
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise ValueError(f"{argument} {path}: cannot write in {existing} ({e.strerror})") from None


def default_eval_out(model_path):
    """`runs/eval/<model name>`: outside every model folder (a SavedModel version folder is
    TF Serving's, a shipped folder is tracked by git)."""
    path = os.path.normpath(os.path.abspath(model_path))
    name = os.path.basename(path)
    if name.isdigit():  # saved_models/<name>/<version>
        name = f"{os.path.basename(os.path.dirname(path))}-v{name}"
    for suffix in (".keras", ".tflite"):
        name = name[: -len(suffix)] if name.endswith(suffix) else name
    return os.path.join("runs", "eval", name)


def check_search_inputs(task_data, patch_size, out, multiple=8):
    """search.py, before any work: patch size, images at least a patch, weight and
    architecture images disjoint, `out` writable. DataError/ValueError on one line."""
    from pipelines.checks import check_disjoint, check_patch_size, check_patches

    patch_size = check_patch_size(patch_size, multiple)
    check_patches(task_data.weights_items, patch_size, "weights data")
    check_patches(task_data.arch_items, patch_size, "architecture data")
    check_disjoint(task_data.weights_items, task_data.arch_items)
    check_writable_dir(out)


def check_train_inputs(task_data, val_items, patch_size, genotype, out):
    """train.py, before any work: patch size (a multiple of 2**cells), training images at
    least a patch, validation images restorable by the network, `out` writable."""
    from pipelines.checks import check_patch_size, check_patches, check_restorable

    multiple = 2 ** len(genotype.cells)
    patch_size = check_patch_size(patch_size, multiple)
    check_patches(task_data.weights_items, patch_size, "training data")
    check_restorable(val_items, multiple)
    check_writable_dir(out)


def check_backup(run_dir, argument="--resume"):
    """ValueError (one line) unless the backup a resume would read from `run_dir/backup/`
    (if there is one) is readable: a damaged file would end in an h5py traceback after
    start-up. `callbacks.Backup` never leaves one, but disks fill and files get copied."""
    import h5py

    from clearer_tf.callbacks import read_backup

    backup = os.path.join(os.fspath(run_dir), "backup")
    try:
        meta = read_backup(backup)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{argument}: backup {backup}/training_metadata.json is damaged ({e}); "
                         "pass --overwrite to start afresh") from None
    if meta is None:
        return
    path = os.path.join(backup, meta["weights"])
    try:
        with h5py.File(path, "r") as f:
            f.visit(lambda name: None)
    except (OSError, ValueError) as e:
        raise ValueError(f"{argument}: backup {path} is damaged ({e}); pass --overwrite to start "
                         "afresh") from None


def task_from_genotype(task, color, genotype):
    """(task, color) for train.py: an omitted --task is the genotype's, with its channels."""
    if task is not None:
        return task, color
    return genotype.task, color or (genotype.task == "denoise" and genotype.image_channels == 3)


def check_model_name(name):
    """ValueError unless `name` can be a folder of the serving layout."""
    if not name or os.sep in name or name.startswith("."):
        raise ValueError(f"--name must be a plain folder name, got {name!r}")


def size_mb(path):
    """Size of a file, or of all files under a folder, in MB."""
    if not os.path.isdir(path):
        return os.path.getsize(path) / 1e6
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs) / 1e6


def training_data(model_dir):
    """The `data` record of a training folder's `train_summary.json` ({} if there is none)."""
    path = os.path.join(model_dir, "train_summary.json")
    if not (os.path.isdir(model_dir) and os.path.exists(path)):
        return {}
    import json

    with open(path, encoding="utf-8") as f:
        return json.load(f).get("data", {})


def trained_sigma(data):
    """The Gaussian noise level of a training `data` record (a tuple for blind ranges), or None."""
    degradation = data.get("degradation") or {}
    if degradation.get("type") != "gaussian":
        return None
    sigma = degradation["sigma"]
    return tuple(sigma) if isinstance(sigma, list) else sigma


def add_task_options(parser, data_help):
    from pipelines.tasks import LAYOUTS, TASKS

    group = parser.add_argument_group("task and data")
    group.add_argument("--task", choices=TASKS, default=None,
                       help="default: denoise (train.py: the genotype's task)")
    group.add_argument("--data", metavar="DIR", help=data_help)
    group.add_argument("--layout", choices=LAYOUTS, default="auto",
                       help="derain folder layout (default: auto: rainy/ + clean/ pairs, else clean images)")
    group.add_argument("--sigma", type=sigma, default=None, metavar="S",
                       help="denoise: noise level on the 0-255 scale, or LOW,HIGH (blind); default 30")
    group.add_argument("--color", action="store_true", help="denoise RGB images (default: grayscale)")
    return group


def add_pipeline_option(parser):
    """`--data-pipeline` of search.py and train.py (`pipelines.batches`)."""
    parser.add_argument("--data-pipeline", choices=["auto", "tfdata", "device"], default=None,
                        help="where training batches are made: tfdata (tf.data on the CPU), device (JAX: drawn on "
                             "the accelerator, no TensorFlow needed) or auto (default: device on JAX unless the "
                             "data is synthetic rain, else tfdata)")


def check_pipeline(config, task_data):
    """A DataError (one line, before any work) unless `config.data_pipeline` can run on this
    backend with this data. The run records the choice as given (`auto` stays `auto`)."""
    import keras

    from pipelines import batches

    batches.resolve(config.data_pipeline, keras.backend.backend(), task_data.degradation)
