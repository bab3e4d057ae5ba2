"""Atomic file writes: write next to the target, then rename, so no reader sees half a file."""

import json
import os
import shutil
import tempfile

import numpy as np


def _tmp_path(path, suffix=""):
    """A fresh temporary path in the target's folder (same filesystem, so rename is atomic)."""
    path = os.path.abspath(os.fspath(path))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-", suffix=suffix)
    os.close(fd)
    os.remove(tmp)
    return path, tmp


def _default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def write_json(path, data):
    """JSON with indent 2; NumPy scalars and arrays become plain numbers and lists."""
    path, tmp = _tmp_path(path, ".json")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, default=_default)
        f.write("\n")
    os.replace(tmp, path)


def write_bytes(path, data: bytes):
    path, tmp = _tmp_path(path)
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def save_weights(model, path):
    """`model.save_weights` to a temporary `.weights.h5`, then rename onto `path`."""
    path, tmp = _tmp_path(path, ".weights.h5")
    model.save_weights(tmp)
    os.replace(tmp, path)


def save_model(model, path):
    """`model.save` to a temporary `.keras` file, then rename onto `path`."""
    path, tmp = _tmp_path(path, ".keras")
    model.save(tmp)
    os.replace(tmp, path)


def replace_dir(tmp_dir, target, overwrite=False):
    """Move a fully written folder `tmp_dir` to `target` (a rename on the same filesystem)."""
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
