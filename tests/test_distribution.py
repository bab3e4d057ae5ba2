"""Data-parallel search and training equal one device: MirroredStrategy (2 logical CPUs), JAX
DataParallel (2 host devices), and two JAX processes (multi-host, `run_search` / `train_network`
as `--distribute multihost` runs them) against one process with the same global batch."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

import search_helpers

HELPERS = search_helpers.__file__
REPO = os.path.dirname(os.path.dirname(os.path.abspath(HELPERS)))


def launch(args, **env):
    return subprocess.Popen([sys.executable, HELPERS, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=dict(os.environ, **env), cwd=REPO)


def result(proc):
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def jax_env(devices=1):
    pytest.importorskip("jax")
    return {"KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu",
            "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}


def assert_equal_runs(outcome):
    assert outcome["moved"] > 1e-6  # the steps did something to compare
    one, two = outcome["one_device"], outcome["distributed"]
    assert set(one) == set(two)
    for key in one:
        np.testing.assert_allclose(two[key], one[key], rtol=1e-4, atol=1e-6, err_msg=key)
    assert np.isnan(one["arch_loss"][0]) and np.isfinite(one["arch_loss"][-1])  # warm-up, then search
    assert outcome["max_relative_difference"] < 1e-4


def test_mirrored_strategy_on_two_cpus_matches_one_device():
    outcome = result(launch(["mirrored"], KERAS_BACKEND="tensorflow"))
    assert outcome["replicas"] == 2 and outcome["synchronized_bn"]
    assert_equal_runs(outcome)


def test_jax_data_parallel_on_two_host_devices_matches_one_device():
    outcome = result(launch(["data-parallel"], **jax_env(devices=2)))
    assert outcome["replicas"] == 2
    assert_equal_runs(outcome)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("kind", ["search", "train"])
def test_search_and_training_run_in_two_jax_processes_like_one_process(tmp_path, kind):
    """`run_search` / `train_network` as `--distribute multihost` runs them: two processes, one
    folder (written by process 0), the same global batches as one process.

    The search (SGD on the weights) ends within 1e-4 of one process. Training uses Adam, whose
    first steps are about lr * sign(gradient): on this tiny network (batch 1 per process, 2x2
    pixels at the coarsest branch) float reorderings of near-zero gradients flip signs and the
    weights drift apart by up to ~15 % in 30 steps, on 2 host devices of one process as well;
    so training is compared on its first-epoch loss (the same data and initial weights)."""
    import h5py

    import run_helpers

    # tf.data batches, on which these tolerances were set: the processes' device batches assemble
    # into exactly the one-process batch (test_device_batches_of_two_processes_are_the_global_batch),
    # but other pixels amplify the float reorderings differently
    env = dict(os.environ, **jax_env(), RUN_HELPERS_PIPELINE="tfdata")
    port = str(free_port())

    def start(out, *flags):
        return subprocess.Popen([sys.executable, run_helpers.__file__, kind, str(out), *flags],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)

    procs = [start(tmp_path / "two", "--multihost", str(i), "2", port) for i in range(2)] + [start(tmp_path / "one")]
    for proc in procs:
        out, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, err[-3000:]
    record = json.loads((tmp_path / "two" / "run.json").read_text())
    assert record["finished"] and not (tmp_path / "two" / "backup").exists()
    if kind == "search":
        with h5py.File(tmp_path / "one" / "final.weights.h5") as a, h5py.File(tmp_path / "two" / "final.weights.h5") as b:
            keys = []
            a.visititems(lambda key, obj: keys.append(key) if isinstance(obj, h5py.Dataset) else None)
            assert len(keys) > 50
            for key in keys:
                np.testing.assert_allclose(b[key][()], a[key][()], rtol=1e-4, atol=1e-5, err_msg=key)
        assert (tmp_path / "two" / "alpha_history.csv").is_file() and (tmp_path / "two" / "genotype.json").is_file()
    else:
        one = json.loads((tmp_path / "one" / "validation.json").read_text())
        two = json.loads((tmp_path / "two" / "validation.json").read_text())
        assert [r["step"] for r in two] == [r["step"] for r in one] == [5, 10, 15, 20, 25, 30]
        assert two[0]["loss"] == pytest.approx(one[0]["loss"], rel=1e-2)
        assert (tmp_path / "two" / "model.keras").is_file() and (tmp_path / "two" / "train_summary.json").is_file()


DEVICE_BATCH = """
import hashlib, json, sys
import numpy as np
process, count, port = map(int, sys.argv[1:4])
from clearer_tf import distribute
if count > 1:
    distribute.setup("multihost", f"127.0.0.1:{port}", count, process)
import keras
from jax.experimental import multihost_utils
from pipelines import batches
from pipelines.tasks import load_task_data
data = load_task_data("denoise", data="data/samples/set12", sigma=25.0)
stream = batches.search_batches("device", data.weights_items, data.arch_items, data.degradation, 16, 4, 5, 0)
firsts = [next(stream) for _ in range(2)]
if count > 1:  # as Keras' JAX trainer assembles a process's batch into the global one
    from keras.src.backend.jax.distribution_lib import distribute_data_input
    distribution = keras.distribution.distribution()
    assert distribution.auto_shard_dataset is False  # Keras would refuse the generator otherwise
    def assemble(x):
        x = distribute_data_input(x, distribution.get_data_layout(x.shape), distribution.batch_dim_name)
        return multihost_utils.process_allgather(x, tiled=True)
    firsts = [[[assemble(x) for x in pair] for pair in step] for step in firsts]
batch = np.asarray([[[np.asarray(x) for x in pair] for pair in step] for step in firsts])
print(json.dumps({"shape": batch.shape, "sha256": hashlib.sha256(batch.tobytes()).hexdigest(), "sum": float(batch.sum())}))
"""


def test_device_batches_of_two_processes_are_the_global_batch():
    """Each process draws its share of every global batch on its device (`--data-pipeline
    device`, multi-host JAX); assembled as Keras does, they are the one-process batches."""
    env = dict(os.environ, **jax_env())
    port = str(free_port())
    procs = [subprocess.Popen([sys.executable, "-c", DEVICE_BATCH, str(i), str(n), port], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
             for i, n in ((0, 2), (1, 2), (0, 1))]
    outs = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        outs.append(json.loads(out.strip().splitlines()[-1]))
    assert outs[2]["shape"] == [2, 2, 2, 4, 16, 16, 1]  # steps, (weights, arch), (x, y), batch, H, W, C
    assert outs[2]["sum"] > 1000.0  # images, not zeros
    assert outs[0] == outs[1] == outs[2]  # the same bytes
