"""Search and training check their input before any work (one line, exit status 2), and
genotype files are validated field by field (types and sane ranges)."""

import importlib.util
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from PIL import Image

from clearer_tf.genotype import Genotype, GenotypeError
from pipelines import DataError, load_images
from pipelines.checks import check_disjoint, check_patch_size, check_patches, check_restorable

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOOD = Genotype.from_string("F P / F F / P F", base_width=8, stem_planes=8, stem_blocks=1).to_dict()


def genotype_file(tmp_path, text, name="genotype.json"):
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def changed(**fields):
    return json.dumps({**GOOD, **fields})


@pytest.mark.parametrize("text, message", [
    (changed(columns=None), "field 'columns': must be a list of integers, got None"),
    (changed(widths=5), "field 'widths': must be a list of integers, got 5"),
    ("[" * 100000 + "]" * 100000, "nested too deeply"),
    (changed(image_channels=True), "field 'image_channels': must be 1 or 3, got True"),
    (changed(base_width=True), "field 'base_width': must be an integer from 1 to 512, got True"),
    (changed(residual="yes"), "field 'residual': must be true or false, got 'yes'"),
    (changed(weights=[[["a", "b"]] * 2] * 3), "field 'weights': must hold a (w_parallel, w_fusion) pair of numbers"),
    (changed(stem_blocks=1e9), "field 'stem_blocks': must be an integer from 1 to 16, got 1000000000.0"),
    (changed(stem_blocks=10**9), "field 'stem_blocks': must be an integer from 1 to 16"),
    (changed(base_width=10**12), "field 'base_width': must be an integer from 1 to 512"),
    (changed(cells=[["fusion"]] * 40, widths=None, columns=None), "40 cells, at most 6"),
    (changed(cells=[[1, 2]]), "field 'cells[0][0]': unknown module 1"),
    (changed(task="deblur"), "field 'task': must be one of denoise, derain"),
    (b'{"format_version": 1, "cells": [["fusion"]], "data": {"note": "caf\xe9"}}', "not UTF-8 text"),
])
def test_bad_genotype_files_fail_with_one_line_naming_file_and_field(tmp_path, text, message):
    path = genotype_file(tmp_path, text)
    with pytest.raises(GenotypeError) as info:
        Genotype.load(path)
    line = str(info.value)
    assert "\n" not in line and line.startswith(f"genotype file {path}: ") and message in line, line


def test_good_genotype_still_loads(tmp_path):
    assert Genotype.load(genotype_file(tmp_path, json.dumps(GOOD))).short() == "F P / F F / P F"


def save(folder, name, size, value=120):
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(size, value, np.uint8)).save(folder / name)


def test_check_functions(tmp_path, bsds_val_dir):
    for bad in (0, -8, 12, True, 8.0):
        with pytest.raises(DataError, match="--patch-size must be a positive multiple of 8"):
            check_patch_size(bad, 8)
    assert check_patch_size(32, 8) == 32
    items = load_images(bsds_val_dir, 1)[:2]
    with pytest.raises(DataError, match=rf"share 2 image\(s\) \({items[0][0]}, {items[1][0]}\)"):
        check_disjoint(items, items)
    save(tmp_path / "small", "a.png", (40, 50))
    with pytest.raises(DataError, match=r"training data: image 'a' is 50x40, smaller than --patch-size 64"):
        check_patches(load_images(tmp_path / "small", 1), 64, "training data")
    save(tmp_path / "tiny", "t.png", (4, 4))
    with pytest.raises(DataError, match=r"--val-data: image 't' is 4x4, smaller than the network's 8x8"):
        check_restorable(load_images(tmp_path / "tiny", 1), 8)


def module(script):
    spec = importlib.util.spec_from_file_location(f"{script}_cli_checks", os.path.join(REPO, "train_scripts", f"{script}.py"))
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return loaded


def test_train_takes_task_and_channels_from_a_derain_genotype(tmp_path):
    genotype = Genotype.from_string("F / P / F", base_width=4, stem_planes=4, stem_blocks=1,
                                    image_channels=3, task="derain")
    genotype.save(tmp_path / "g.json")
    train = module("train")
    parser, args = train.parse_args(["--genotype", str(tmp_path / "g.json"), "--preset", "quick",
                                     "--out", str(tmp_path / "out")])
    _, task_data, val_items, *_ = train.prepare(parser, args)  # (genotype, data, val, config, ...)
    assert (args.task, task_data.task, task_data.channels) == ("derain", "derain", 3)
    assert val_items and np.shape(val_items[0][-1])[-1] == 3


def one_line(result, script, expected):
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{script}.py: error: ") and expected in lines[0], lines


def test_train_and_search_refuse_bad_runs_before_any_work(tmp_path, bsds_val_dir, run_cli):
    genotype = tmp_path / "g.json"
    Genotype.from_string("F / P / F", base_width=4, stem_planes=4, stem_blocks=1).save(genotype)
    save(tmp_path / "small", "a.png", (40, 50))
    save(tmp_path / "small", "b.png", (48, 48))
    save(tmp_path / "tiny", "t.png", (4, 4))
    (tmp_path / "a-file").write_text("in the way")
    train = ["--genotype", str(genotype), "--preset", "quick"]
    for argv, expected in [
        ([*train, "--data", str(tmp_path / "small"), "--patch-size", "64", "--out", str(tmp_path / "o1")],
         "training data: image 'a' is 50x40, smaller than --patch-size 64"),
        ([*train, "--patch-size", "12", "--out", str(tmp_path / "o2")], "--patch-size must be a positive multiple of 8"),
        ([*train, "--val-data", str(tmp_path / "tiny"), "--out", str(tmp_path / "o3")],
         "--val-data: image 't' is 4x4, smaller than the network's 8x8"),
        ([*train, "--out", str(tmp_path / "a-file")], "a file is in the way"),
        ([*train, "--out", str(tmp_path / "a-file" / "sub")], "is a file, not a folder"),
    ]:
        code, line = run_cli("train", argv)
        assert code == 2 and line.startswith("train.py: error: ") and expected in line, line
    search = ["--task", "denoise", "--preset", "quick"]
    for argv, expected in [
        ([*search, "--patch-size", "0"], "--patch-size must be a positive multiple of 8"),
        ([*search, "--patch-size", "-8"], "--patch-size must be a positive multiple of 8"),
        ([*search, "--data", str(tmp_path / "small"), "--patch-size", "64"], "image 'a' is 50x40, smaller than --patch-size 64"),
        ([*search, "--out", "/proc/clearer-search"], "cannot write in /proc"),
    ]:
        code, line = run_cli("search", [*argv, *(["--out", str(tmp_path / "s")] if "--out" not in argv else [])])
        assert code == 2 and line.startswith("search.py: error: ") and expected in line, line
    assert not any((tmp_path / name).exists() for name in ("o1", "o2", "o3", "s"))
    # a backup cut short (a full disk, a bad copy): one line, before any work
    backup = tmp_path / "old" / "backup"
    backup.mkdir(parents=True)
    keras.Sequential([keras.Input((3,)), keras.layers.Dense(4)]).save_weights(backup / "state-000001.weights.h5")
    state = backup / "state-000001.weights.h5"
    state.write_bytes(state.read_bytes()[:-200])
    (backup / "training_metadata.json").write_text('{"epoch": 1, "batch": 0, "weights": "state-000001.weights.h5"}')
    code, line = run_cli("search", [*search, "--resume", str(tmp_path / "old")])
    assert code == 2 and line.startswith("search.py: error: --resume: backup") and "is damaged" in line, line
    code, line = run_cli("train", [*train, "--out", str(tmp_path / "old")])
    assert code == 2 and line.startswith("train.py: error: --out: backup") and "is damaged" in line, line
    # The same folder for both kinds of step, as a real process: one line, no traceback.
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "train_scripts", "search.py"), *search, "--weights-data",
         str(bsds_val_dir), "--arch-data", str(bsds_val_dir), "--out", str(tmp_path / "s")],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)
    one_line(result, "search", "weights and architecture data share")
    assert not (tmp_path / "s").exists()
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "train_scripts", "train.py"), *train, "--val-data",
         str(tmp_path / "tiny"), "--out", str(tmp_path / "o4")],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)
    one_line(result, "train", "smaller than the network's 8x8")
    assert not (tmp_path / "o4").exists()
