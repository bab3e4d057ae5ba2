"""Shared bits of the command-line scripts: one-line errors, repo on sys.path, data options."""

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ info/warning lines
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # oneDNN CPU kernels (see clearer_tf/__init__.py)
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:  # run from a fresh clone without installing
    sys.path.insert(0, REPO_ROOT)


class Parser(argparse.ArgumentParser):
    """argparse with errors on one line: `<prog>: error: <message>`, exit status 2.

    Every script also takes `--compile-cache DIR` / `--no-compile-cache` (JAX's persistent
    compilation cache, `clearer_tf.compile_cache`), applied as the arguments are parsed.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
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
    group.add_argument("--task", choices=TASKS, default="denoise", help="default: denoise")
    group.add_argument("--data", metavar="DIR", help=data_help)
    group.add_argument("--layout", choices=LAYOUTS, default="auto",
                       help="derain folder layout (default: auto: rainy/ + clean/ pairs, else clean images)")
    group.add_argument("--sigma", type=sigma, default=None, metavar="S",
                       help="denoise: noise level on the 0-255 scale, or LOW,HIGH (blind); default 30")
    group.add_argument("--color", action="store_true", help="denoise RGB images (default: grayscale)")
    return group
