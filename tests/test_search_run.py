"""`run_search` on the bundled Set12 sample: outputs, SIGKILL and resume, the run-folder guard."""

import csv
import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

from clearer_tf.genotype import Genotype
import run_helpers

HELPER = run_helpers.__file__
REPO = os.path.dirname(os.path.dirname(os.path.abspath(HELPER)))


def run(out, *flags, killed=False):
    proc = subprocess.run([sys.executable, HELPER, "search", str(out), *flags], capture_output=True, text=True,
                          cwd=REPO, timeout=600)
    if killed:
        assert proc.returncode == -9, proc.stderr[-3000:]
    else:
        assert proc.returncode == 0, proc.stderr[-3000:]


def weights(path):
    values = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: values.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return values


def assert_identical(reference, out):
    assert (out / "alpha_history.csv").read_bytes() == (reference / "alpha_history.csv").read_bytes()
    a, b = weights(reference / "final.weights.h5"), weights(out / "final.weights.h5")
    assert a.keys() == b.keys() and len(a) > 100  # model, both optimizers, the iteration counters
    for name in a:
        np.testing.assert_array_equal(b[name], a[name], err_msg=name)
    assert json.loads((out / "genotype.json").read_text())["weights"] == \
        json.loads((reference / "genotype.json").read_text())["weights"]


def temporaries(folder):
    return [os.path.join(d, f) for d, _, fs in os.walk(folder) for f in fs if f.startswith(".tmp-")]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("search") / "run"
    run(out)
    return out


def test_run_search_writes_every_output(uninterrupted):
    out = uninterrupted
    for name in ("genotype.json", "architecture.png", "alpha_history.csv", "alpha_history.png", "run.json"):
        assert (out / name).is_file(), name
    assert not (out / "backup").exists()  # removed once the search has finished
    events = [f for _, _, fs in os.walk(out / "tensorboard") for f in fs if f.startswith("events.out.tfevents")]
    assert events
    data = json.loads((out / "genotype.json").read_text())
    assert data["format_version"] == 1 and data["task"] == "denoise" and data["image_channels"] == 1
    assert data["widths"] == [4, 8] and data["columns"] == [2]
    assert data["search"]["iterations"] == 8 and data["search"]["lambda_arch"] == 0.01
    assert data["data"]["degradation"]["sigma"] == 25.0
    assert Genotype.load(out / "genotype.json").cells == [[("parallel", "fusion")[np.argmax(w)] for w in cell]
                                                           for cell in data["weights"]]
    for w in (w for cell in data["weights"] for w in cell):
        assert sum(w) == pytest.approx(1.0, abs=1e-5)
    with open(out / "alpha_history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["iteration"]) for r in rows] == [0, 2, 4, 6, 8]  # one row per epoch (log period)
    alpha = [[float(r[k]) for k in r if "_alpha_" in k] for r in rows]
    assert alpha[0] == alpha[1]  # warm-up: 2 iterations
    assert np.abs(np.subtract(alpha[-1], alpha[1])).max() > 1e-5
    record = json.loads((out / "run.json").read_text())
    assert record["finished"] is True and record["config"]["search"]["iterations"] == 8


def test_killed_while_writing_a_backup_resumes_to_the_same_result(tmp_path, uninterrupted):
    out = tmp_path / "run"
    run(out, "--die-in-backup", "2", killed=True)  # SIGKILL half-way through the 2nd backup (iteration 4)
    assert temporaries(out / "backup"), "the kill left a half-written temporary file"
    assert json.loads((out / "backup" / "training_metadata.json").read_text())["epoch"] == 1
    run(out, "--resume")
    assert not temporaries(out) and not (out / "backup").exists()
    assert_identical(uninterrupted, out)


def test_killed_between_backups_resumes_to_the_same_result(tmp_path, uninterrupted):
    out = tmp_path / "run"
    run(out, "--die-at", "5", killed=True)  # mid-epoch, after the backup at iteration 4
    with pytest.raises(AssertionError):
        run(out)  # without --resume: refused ("already holds a search")
    run(out, "--resume")
    assert_identical(uninterrupted, out)


@pytest.fixture(scope="module")
def task_data():
    from pipelines.tasks import load_task_data

    return load_task_data("denoise", data=os.path.join(run_helpers.SAMPLES, "set12"), sigma=25.0)


def listing(folder):
    return sorted((os.path.relpath(os.path.join(d, f), folder), os.path.getmtime(os.path.join(d, f)))
                  for d, _, fs in os.walk(folder) for f in fs)


def test_a_finished_search_is_refused_unless_overwrite(uninterrupted, task_data):
    from clearer_tf.search.run import check_run

    supernet, search = run_helpers.search_configs()
    with pytest.raises(ValueError, match="holds a finished search: pass --overwrite"):
        check_run(str(uninterrupted), supernet, search, task_data)
    with pytest.raises(ValueError, match="holds a finished search"):
        check_run(str(uninterrupted), supernet, search, task_data, resume=True)
    assert check_run(str(uninterrupted), supernet, search, task_data, overwrite=True).state == "overwrite"


def test_another_configuration_is_refused_with_the_differences_before_anything_is_written(tmp_path, task_data):
    import dataclasses

    from clearer_tf.search import run_search

    out = tmp_path / "run"
    run(out, "--die-at", "3", killed=True)
    before = listing(out)
    supernet, search = run_helpers.search_configs()
    other = dataclasses.replace(search, lambda_arch=0.1, seed=6)
    with pytest.raises(ValueError, match=r"different configuration: search\.lambda_arch is 0\.01 in the run, "
                                         r"0\.1 now; search\.seed is 5 in the run, 6 now"):
        run_search(supernet, other, task_data, str(out), resume=True)
    from pipelines.tasks import load_task_data

    noisier = load_task_data("denoise", data=os.path.join(run_helpers.SAMPLES, "set12"), sigma=50.0)
    with pytest.raises(ValueError, match=r"data\.degradation\.sigma is 25\.0 in the run, 50\.0 now"):
        run_search(supernet, search, noisier, str(out), resume=True)
    runtime_only = dataclasses.replace(search, checkpoint_every=4, jit_compile=True)
    from clearer_tf.search.run import check_run

    assert check_run(str(out), supernet, runtime_only, task_data, resume=True).state == "resume"
    with pytest.raises(ValueError, match="no search to continue there"):
        check_run(str(tmp_path / "elsewhere"), supernet, search, task_data, resume=True)
    assert listing(out) == before  # nothing written, nothing removed
