"""Atomic file writes: write next to the target, then rename, so no reader sees half a file."""

import contextlib
import json
import os
import shutil
import tempfile

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


def save_model(model, path):
    """`model.save` to a temporary `.keras` file, then rename onto `path`."""
    with atomic_path(path, ".keras") as tmp:
        model.save(tmp)


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
