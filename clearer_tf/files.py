"""Atomic file writes: write next to the target, then rename, so no reader sees half a file."""

import contextlib
import json
import os
import shutil
import tempfile
import zipfile

import numpy as np


@contextlib.contextmanager
def atomic_path(path, suffix=""):
    """Yields a fresh temporary path beside `path`; renames it onto `path` if the block succeeds.

    The temporary file is in the target's folder (same filesystem, so the rename is atomic)
    and is removed if the block raises, so no reader ever sees half a file.
    """
    path = os.path.abspath(os.fspath(path))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-", suffix=suffix)
    os.close(fd)
    os.remove(tmp)  # writers create it themselves, with the usual (umask) permissions
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def write_json(path, data):
    """JSON with indent 2; NumPy scalars and arrays become plain numbers and lists."""
    with atomic_path(path, ".json") as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, default=_default)
        f.write("\n")


def write_bytes(path, data: bytes):
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def save_weights(model, path):
    """`model.save_weights` to a temporary `.weights.h5`, then rename onto `path`."""
    with atomic_path(path, ".weights.h5") as tmp:
        model.save_weights(tmp)


KERAS_METADATA = "clearer.json"
"""Our entry in a `.keras` archive (Keras ignores it): the training data record, so that
a copied `model.keras` still says which degradation it was trained for."""


def save_model(model, path, metadata=None):
    """`model.save` to a temporary `.keras` file (with `metadata` as its `clearer.json`
    entry), then rename onto `path`."""
    with atomic_path(path, ".keras") as tmp:
        model.save(tmp)
        if metadata is not None:
            with zipfile.ZipFile(tmp, "a") as archive:
                archive.writestr(KERAS_METADATA, json.dumps(metadata, default=_default))


def keras_metadata(path) -> dict:
    """The `clearer.json` entry of a `.keras` file ({} if it has none or is no archive)."""
    try:
        with zipfile.ZipFile(path) as archive:
            if KERAS_METADATA in archive.namelist():
                return json.loads(archive.read(KERAS_METADATA))
    except (zipfile.BadZipFile, OSError, ValueError):
        pass
    return {}


def _one_line(error):
    return " ".join(str(error).split())[:300]


def load_model(path):
    """`keras.models.load_model` with the custom layers registered; ValueError naming the
    file (one line) when it is not a readable `.keras` archive of this network."""
    import keras

    import clearer_tf.network  # noqa: F401  registers the custom layers

    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: not a .keras archive (truncated or another format)")
    try:
        return keras.models.load_model(path)
    except Exception as e:  # Keras raises ValueError, KeyError, TypeError, OSError, ...
        raise ValueError(f"{path}: cannot be loaded as a Keras model ({type(e).__name__}: "
                         f"{_one_line(e)})") from None


def load_weights(model, path):
    """`model.load_weights` of a `.weights.h5` file; ValueError naming the file (one line)
    when it is no HDF5 file or does not fit the network."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        if f.read(8) != b"\x89HDF\r\n\x1a\n":
            raise ValueError(f"weights {path}: not an HDF5 .weights.h5 file")
    try:
        model.load_weights(path)
    except Exception as e:  # h5py/Keras: ValueError, KeyError, OSError, ...
        raise ValueError(f"weights {path}: do not fit the network of this genotype "
                         f"({type(e).__name__}: {_one_line(e)})") from None


@contextlib.contextmanager
def atomic_dir(target, overwrite=False):
    """Yields a fresh temporary folder beside `target`; moves it onto `target`
    (`replace_dir`) if the block succeeds, removes it if the block raises."""
    target = os.path.abspath(os.fspath(target))
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".tmp-{os.path.basename(target)}-", dir=parent)
    try:
        yield tmp
        replace_dir(tmp, target, overwrite=overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace_dir(tmp_dir, target, overwrite=False):
    """Move a fully written folder `tmp_dir` to `target` (a rename on the same filesystem).

    `tmp_dir` (from `tempfile.mkdtemp`, mode 0700) gets the usual folder permissions first,
    so that e.g. a TF Serving container running as another user can read the model.
    """
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_dir, 0o777 & ~umask)
    if os.path.exists(target):
        if not overwrite:
            shutil.rmtree(tmp_dir, ignore_errors=True)
            raise FileExistsError(f"{target} already exists (pass overwrite=True / --overwrite)")
        old = f"{target}.old-{os.getpid()}"
        os.rename(target, old)
        os.rename(tmp_dir, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp_dir, target)
