"""The JAX path needs no TensorFlow (the GPU machine has none): quick search and quick training
run to the end with `import tensorflow` blocked, batches drawn on the device, TensorBoard
events written by the `tensorboard` package, the profiler trace by `jax.profiler`."""

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT

pytest.importorskip("jax")

BLOCKED = """import runpy, sys
sys.modules["tensorflow"] = None  # `import tensorflow` raises ImportError, as where it is not installed
script, sys.argv = sys.argv[1], sys.argv[1:]
try:
    runpy.run_path(script, run_name="__main__")
finally:
    print("tensorflow imported:", sys.modules.get("tensorflow") is not None)
"""


def run_blocked(*args):
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, "-c", BLOCKED, *args], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "tensorflow imported: False" in done.stdout
    return done.stdout


def scalars(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [e.step for e in events.Tensors(tag)] for tag in events.Tags()["tensors"]}


def test_quick_search_and_training_run_without_tensorflow(tmp_path):
    search, train = tmp_path / "search", tmp_path / "train"
    small = ["--batch-size", "2", "--patch-size", "16"]
    out = run_blocked("train_scripts/search.py", "--task", "denoise", "--preset", "quick", "--iterations", "4",
                      "--warmup", "2", "--log-every", "2", *small, "--out", str(search))
    assert "genotype:" in out
    record = json.loads((search / "run.json").read_text())
    assert record["finished"] and record["config"]["search"]["data_pipeline"] == "auto"
    assert json.loads((search / "genotype.json").read_text())["search"]["batches"] == "device"
    assert {"genotype.json", "alpha_history.csv", "alpha_history.png", "architecture.png"} <= set(os.listdir(search))
    logged = scalars(search / "tensorboard" / "train")
    assert logged["epoch_loss"] == [2, 4] and logged["epoch_arch_loss"] == [4]  # none in the warm-up epoch
    assert any(tag.startswith("softmax/") for tag in logged)

    out = run_blocked("train_scripts/train.py", "--genotype", str(search / "genotype.json"), "--preset", "quick",
                      "--sigma", "50", "--iterations", "4", "--validate-every", "2", *small, "--profile", "1,2",
                      "--out", str(train), "--quiet")
    assert "validation PSNR" in out
    summary = json.loads((train / "train_summary.json").read_text())
    assert summary["finished"] and summary["batches"] == "device"
    assert [row["step"] for row in summary["history"]] == [2, 4]
    assert {"model.keras", "best.weights.h5", "last.weights.h5", "timing.json"} <= set(os.listdir(train))
    assert scalars(train / "tensorboard" / "train")["epoch_val_psnr"] == [2, 4]
    assert list((train / "tensorboard" / "plugins" / "profile").glob("*/*.xplane.pb"))  # jax.profiler's trace
