"""TensorFlow without its C++ start-up block (a `--verbose` / `CLEARER_VERBOSE=1` shows it).

TensorFlow writes its oneDNN, CUDA and CPU-feature lines to file descriptor 2 while it is
imported, before its log level applies, so they are silenced by pointing that descriptor
at a temporary file during the import (replayed if the import fails). Afterwards
`TF_CPP_MIN_LOG_LEVEL=3` (unless set by the user) keeps later C++ lines (cuInit, TFLite's
`NodeDef mentions attribute Truncate`) quiet; Python errors are unaffected.
"""

import contextlib
import importlib.util
import os
import sys
import tempfile

VERBOSE_ENV = "CLEARER_VERBOSE"


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


@contextlib.contextmanager
def silenced_fd2():
    """Sends fd 2 to a temporary file inside the block; replays it if the block raises."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            os.write(2, sink.read())
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def quietly():
    """`silenced_fd2()` unless verbose (e.g. LiteRT's `Created TensorFlow Lite XNNPACK
    delegate` line)."""
    return contextlib.nullcontext() if verbose() else silenced_fd2()


def import_tensorflow_quietly():
    """Imports TensorFlow (and Keras) once, without the start-up block unless verbose."""
    if verbose():
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0")
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" in sys.modules:
        return
    with silenced_fd2():
        try:
            import tensorflow as tf
        except ImportError:  # e.g. a JAX-only environment: Keras decides what to do
            return
        tf.config.list_physical_devices("GPU")  # "failed call to cuInit" without a GPU


def has_tensorflow() -> bool:
    """Whether TensorFlow can be imported (a JAX-only machine has none; tests block it)."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"] is not None
    try:
        return importlib.util.find_spec("tensorflow") is not None
    except (ImportError, ValueError):
        return False
