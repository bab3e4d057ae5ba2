"""The command-line scripts as a user runs them (real processes, real files, real images):
the noise level comes from the model, outputs go outside model folders, bad input gets one
line before any work, and nothing else is printed unless --verbose."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from clearer_tf import files
from clearer_tf.export import export, training_metadata
from clearer_tf.genotype import Genotype
from clearer_tf.network import build_network
from pipelines.noise import GaussianNoise

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = Genotype.from_string("F / P / F", base_width=4, stem_planes=4, stem_blocks=1)
SHIPPED = os.path.join(REPO, "saved_models", "denoise-gray-sigma50-interim")


def run(script, *argv, cwd, env=None):
    """`python train_scripts/<script>.py argv` in `cwd`; returns the CompletedProcess."""
    command = [sys.executable, os.path.join(REPO, "train_scripts", f"{script}.py"), *map(str, argv)]
    environment = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "CLEARER_VERBOSE")}
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600,
                          env={**environment, **(env or {})})


def one_line_error(result, script, expected):
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{script}.py: error: "), result.stderr
    assert expected in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def models(tmp_path_factory, set12_dir):
    """A training folder (sigma 50), its SavedModel + TFLite export, copies of its .keras file
    with and without the embedded record, and a data folder of two Set12 images plus a
    dangling link."""
    root = tmp_path_factory.mktemp("cli")
    data = root / "data"
    data.mkdir()
    for name in sorted(os.listdir(set12_dir))[:2]:
        shutil.copy(set12_dir / name, data / name)
    os.symlink(root / "missing.png", data / "gone.png")
    train = root / "train"
    train.mkdir()
    TINY.save(train / "genotype.json")
    model = build_network(TINY)
    model.save_weights(train / "best.weights.h5")
    summary = {"data": {"task": "denoise", "channels": 1, "degradation": GaussianNoise(50.0).describe()}}
    files.write_json(train / "train_summary.json", summary)
    record = training_metadata(summary)
    files.save_model(model, train / "model.keras", metadata=record)
    (root / "copied").mkdir()
    shutil.copy(train / "model.keras", root / "copied" / "model.keras")
    files.save_model(model, root / "bare" / "model.keras")
    paths = export(TINY, train / "best.weights.h5", root / "saved_models", "tiny", 1,
                   tflite=("float32",), metadata=record)
    return {"root": root, "data": data, "train": train, **paths}


def evaluated(result, cwd, name):
    """The summary.json of a successful evaluate.py run into the default folder."""
    assert result.returncode == 0, result.stderr
    out = cwd / "runs" / "eval" / name
    assert f"report in {os.path.join('runs', 'eval', name)}" in result.stdout
    with open(out / "summary.json", encoding="utf-8") as f:
        return json.load(f)


@pytest.mark.parametrize("kind, name", [
    ("train", "train"), ("saved_model", "tiny-v1"), ("float32", "tiny-v1-float32"), ("copied", "model")])
def test_evaluate_uses_the_noise_level_the_model_records(models, kind, name, tmp_path):
    path = models["root"] / "copied" / "model.keras" if kind == "copied" else models[kind]
    if kind == "float32":
        pytest.importorskip("ai_edge_litert")
    result = run("evaluate", "--model-dir", path, "--data", models["data"], "--sheet", "0", cwd=tmp_path)
    summary = evaluated(result, tmp_path, name)
    assert summary["protocol"]["degradation"]["sigma"] == 50.0
    assert "2 images, gaussian sigma 50:" in result.stdout
    # Independent of our code: Gaussian noise of sigma 50/255 (clipped) leaves 14-16 dB;
    # sigma 30, the old default, leaves about 18.6 dB.
    assert 14.0 < summary["mean"]["input_psnr"] < 16.0
    # quiet: the only line on stderr is the warning about the dangling link
    assert result.stderr.strip().splitlines() == [
        f"warning: {models['data']}: skipping 1 broken link(s) (dangling or a loop): gone.png"]


def test_evaluate_shipped_model_reads_its_card_sigma_and_writes_outside_it(set12_dir, tmp_path):
    (tmp_path / "one").mkdir()
    shutil.copy(set12_dir / sorted(os.listdir(set12_dir))[1], tmp_path / "one")
    before = sorted(os.listdir(SHIPPED))
    result = run("evaluate", "--model-dir", SHIPPED, "--data", tmp_path / "one", "--sheet", "0", cwd=tmp_path)
    summary = evaluated(result, tmp_path, "denoise-gray-sigma50-interim")
    assert summary["protocol"]["degradation"]["sigma"] == 50.0 and "gaussian sigma 50" in result.stdout
    assert sorted(os.listdir(SHIPPED)) == before and not os.path.exists(os.path.join(SHIPPED, "1", "eval"))
    assert result.stderr == ""


def test_evaluate_without_a_recorded_noise_level_needs_sigma(models, tmp_path):
    bare = models["root"] / "bare" / "model.keras"
    one_line_error(run("evaluate", "--model-dir", bare, "--data", models["data"], cwd=tmp_path),
                   "evaluate", "records no training noise level; give the one to evaluate at")
    assert not (tmp_path / "runs").exists()


@pytest.mark.filterwarnings("ignore::pipelines.images.BrokenLinkWarning")  # the data folder's link
def test_evaluate_rejects_small_images_bad_files_and_outputs_up_front(models, tmp_path, run_cli):
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    Image.fromarray(np.full((4, 4), 90, np.uint8)).save(tiny / "small.png")
    truncated = tmp_path / "cut.keras"
    truncated.write_bytes((models["train"] / "model.keras").read_bytes()[:2000])
    (tmp_path / "a-file").write_text("in the way")
    cases = [
        (["--model-dir", models["train"], "--data", tiny], "image 'small' is 4x4: smaller than SSIM's 11x11"),
        (["--model-dir", models["train"], "--data", models["data"], "--crop-border", "200"],
         "plus 2 x --crop-border 200"),
        (["--model-dir", truncated, "--sigma", "50"], "cut.keras: not a .keras archive"),
        (["--model-dir", models["train"], "--out", tmp_path / "a-file"], "a file is in the way"),
        (["--model-dir", models["train"], "--out", "/proc/clearer-eval"], "cannot write in /proc"),
        (["--model-dir", models["train"], "--tile", "8"], "--tile must be 0 (no tiles), 'auto' or an integer >= 16"),
        (["--model-dir", models["train"], "--tile", "64", "--tile-overlap", "40"], "--tile-overlap must be"),
    ]
    for argv, expected in cases:
        code, line = run_cli("evaluate", [str(a) for a in argv])
        assert code == 2 and line.startswith("evaluate.py: error: ") and expected in line, line
    one_line_error(run("evaluate", "--model-dir", truncated, "--sigma", "50", cwd=tmp_path), "evaluate",
                   "not a .keras archive")


def test_export_and_ship_refuse_bad_files_and_names(models, tmp_path, run_cli):
    (tmp_path / "notes.weights.h5").write_text("not weights")
    other = Genotype.from_string("P / P / F", base_width=4, stem_planes=4, stem_blocks=1)
    other.save(tmp_path / "other.json")
    (tmp_path / "garbage.json").write_text("{ not json")
    (tmp_path / "wrong.json").write_text('{"mean": {"psnr": "high"}}')
    out = tmp_path / "out"
    one_line_error(run("export", "--weights", tmp_path / "notes.weights.h5", "--genotype",
                       models["train"] / "genotype.json", "--out", out, cwd=tmp_path),
                   "export", "not an HDF5 .weights.h5 file")
    one_line_error(run("export", "--weights", models["train"] / "best.weights.h5", "--genotype",
                       tmp_path / "other.json", "--out", out, cwd=tmp_path),
                   "export", "do not fit the network of this genotype")
    for argv, expected in [
        (["--pretrained", str(tmp_path)], "must be a plain folder name"),
        (["--pretrained", "../saved_models/denoise-gray-sigma50-interim"], "must be a plain folder name"),
    ]:
        code, line = run_cli("export", [*argv, "--out", str(out)])
        assert code == 2 and expected in line, line
    assert not out.exists() and not (tmp_path / "tflite").exists()
    for argv, expected in [
        (["--eval", str(tmp_path / "garbage.json")], "garbage.json: not valid JSON"),
        (["--eval", str(tmp_path / "wrong.json")], "not an evaluate.py summary.json"),
    ]:
        code, line = run_cli("ship", ["--model-dir", str(models["train"]), "--name", "x", *argv,
                                      "--out", str(out)])
        assert code == 2 and expected in line, line
    assert not out.exists()


def test_user_exports_are_ignored_by_git_and_not_listed(models):
    from clearer_tf.pretrained import list_pretrained, load_pretrained

    path = os.path.join("saved_models", "my-model", "1", "saved_model.pb")
    ignored = subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO)
    assert ignored.returncode == 0, "a user export under saved_models/ would show in git status"
    tracked = subprocess.run(["git", "ls-files", "saved_models/denoise-gray-sigma50-interim/card.json"],
                             cwd=REPO, capture_output=True, text=True).stdout
    assert tracked.strip(), "the shipped model is still tracked"
    assert list_pretrained(models["root"] / "saved_models") == []
    with pytest.raises(ValueError, match="must be a plain folder name"):
        load_pretrained(None)


def test_import_and_clis_are_quiet_unless_verbose(models, tmp_path):
    quiet = subprocess.run([sys.executable, "-c", "import clearer_tf, pipelines"], cwd=REPO,
                           capture_output=True, text=True,
                           env={k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"})
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
    result = run("export", "--model-dir", models["train"], "--name", "q", "--out", tmp_path / "m",
                 "--tflite", "float32", cwd=tmp_path)
    assert result.returncode == 0 and result.stderr == "", result.stderr  # no NodeDef/cuInit lines
    verbose = run("export", "--model-dir", models["train"], "--name", "v", "--out", tmp_path / "m",
                  "--verbose", cwd=tmp_path)
    assert verbose.returncode == 0 and "oneDNN" in verbose.stderr, verbose.stderr
