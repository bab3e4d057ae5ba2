"""The GPU lease: the plan read from the repository, and the lease job end to end on the CPU."""

import importlib.util
import json
import os
import subprocess
import sys
import tarfile

import numpy as np
import pytest

from clearer_tf.genotype import Genotype
from clearer_tf.network import build_network
from conftest import REPO_ROOT

spec = importlib.util.spec_from_file_location("lease_plan", REPO_ROOT / "bench" / "lease_plan.py")
lease_plan = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lease_plan)

PROTOCOL = [
    {"kind": "train", "name": "m", "genotype": "g.json", "sigma": 50, "iterations": 1000},
    {"kind": "search", "name": "s", "sigma": 50, "iterations": 100, "genotype_out": "runs/s/genotype.json"},
]


def _ship(models, name, version, done, schedule=1000):
    os.makedirs(models / name / str(version))
    card = {"version": version, "training": {"iterations": done, "schedule_iterations": schedule}}
    (models / name / "card.json").write_text(json.dumps(card))


def test_plan_follows_the_protocol_from_the_repository_state(tmp_path):
    models = tmp_path / "saved_models"
    first = lease_plan.plan(tmp_path, models, PROTOCOL)
    assert first == {"MODE": "train", "NAME": "m", "GENOTYPE": "g.json", "SIGMA": 50, "ITERATIONS": 1000,
                     "INIT_STEP": 0, "INIT_MODEL": "", "VERSION": 1, "SWEEP": "128"}
    _ship(models, "m", 2, done=400)
    second = lease_plan.plan(tmp_path, models, PROTOCOL)
    assert (second["INIT_STEP"], second["INIT_MODEL"], second["VERSION"]) == (400, str(models / "m"), 3)
    (models / "m" / "card.json").write_text(json.dumps({"version": 3, "training": {
        "iterations": 1000, "schedule_iterations": 1000}}))
    assert lease_plan.plan(tmp_path, models, PROTOCOL)["MODE"] == "search"
    os.makedirs(tmp_path / "runs" / "s")
    (tmp_path / "runs" / "s" / "genotype.json").write_text("{}")
    assert lease_plan.plan(tmp_path, models, PROTOCOL) == {"MODE": "bench", "SWEEP": "128,64,256"}


def test_plan_times_one_batch_size_a_lease_until_all_are_measured(tmp_path):
    assert lease_plan.sweep_size(tmp_path) == "128"
    (tmp_path / "docs" / "runs").mkdir(parents=True)
    rows = [{"batch": 128, "step_ms": 61.0}, {"batch": 64, "skipped": "no time left"}]
    (tmp_path / "docs" / "runs" / "batch_sweep.json").write_text(json.dumps(rows))
    assert lease_plan.sweep_size(tmp_path) == "64"
    rows += [{"batch": 64, "step_ms": 35.0}, {"batch": 256, "step_ms": 110.0}]
    (tmp_path / "docs" / "runs" / "batch_sweep.json").write_text(json.dumps(rows))
    assert lease_plan.sweep_size(tmp_path) == ""


def test_plan_refuses_a_shipped_model_on_another_schedule(tmp_path):
    _ship(tmp_path / "saved_models", "m", 1, done=400, schedule=5000)
    with pytest.raises(ValueError, match="m: its card's schedule is 5000 iterations, the protocol's 1000"):
        lease_plan.plan(tmp_path, tmp_path / "saved_models", PROTOCOL)


def test_plan_writes_an_env_file_and_copies_the_model_to_continue(tmp_path):
    models = tmp_path / "saved_models"
    _ship(models, "m", 1, done=400)
    written = lease_plan.write(lease_plan.plan(tmp_path, models, PROTOCOL), tmp_path / "plan", weights=False)
    assert (tmp_path / "plan" / "init" / "m" / "card.json").is_file()
    env = subprocess.run(["bash", "-c", f"source {tmp_path / 'plan' / 'plan.env'}; echo $INIT_MODEL $INIT_STEP"],
                         capture_output=True, text=True, check=True).stdout.split()
    assert env == [os.path.join("init", "m"), "400"] and written["INIT_MODEL"] == env[0]


NO_TENSORFLOW = """import runpy, sys
sys.modules["tensorflow"] = None  # the GPU machine has none: the job must not need it
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _lease(tmp_path, tag, plan_vars, data, deadline_in, job_args, return_after):
    """The two calls of a lease on the CPU (JAX, TensorFlow blocked): bench/lease_start.sh, then
    bench/lease_collect.sh; returns (WORK, the plan folder, the written plan, call 1's and call 2's $OUT)."""
    import time

    lease_in = tmp_path / f"in-{tag}"
    written = lease_plan.write(plan_vars, lease_in / "plan")
    (lease_in / "data").symlink_to(data)
    python = tmp_path / "python-without-tensorflow"
    python.write_text(f"#!/bin/sh\nexec {sys.executable} -c '{NO_TENSORFLOW}' \"$@\"\n")
    python.chmod(0o755)
    work, first, second = (tmp_path / f"{name}-{tag}" for name in ("work", "call1", "call2"))
    first.mkdir(), second.mkdir()
    env = {**os.environ, "LEASE_IN": str(lease_in), "WORK": str(work), "SNAP": str(tmp_path / f"snap-{tag}"),
           "LEASE_PYTHON": str(python), "LEASE_ARGS": job_args, "JAX_PLATFORMS": "cpu"}
    call1 = subprocess.run(["bash", "bench/lease_start.sh", str(int(time.time() + deadline_in)), str(return_after)],
                           cwd=REPO_ROOT, env={**env, "OUT": str(first)}, timeout=900, capture_output=True, text=True)
    assert call1.returncode == 0 and "job " in call1.stdout, call1.stdout[-2000:] + call1.stderr[-2000:]
    assert ("job done" in call1.stdout) == (return_after > 60), call1.stdout[-2000:]
    call2 = subprocess.run(["bash", "bench/lease_collect.sh", "60"], cwd=REPO_ROOT, env={**env, "OUT": str(second)},
                           timeout=120, capture_output=True, text=True)
    assert call2.returncode == 0, call2.stdout[-2000:] + (work / "log").read_text()[-3000:]
    return work, lease_in / "plan", written, first, second


def _finish(tmp_path, plan, data, second, first):
    env = {**os.environ, "PLAN": str(plan), "DATA": str(data), "RUNS": str(tmp_path / "runs"),
           "AUTOTUNE": str(tmp_path / "autotune"), "TRAINS": str(tmp_path / "trains"),
           "MODELS": str(tmp_path / "models"), "EVAL_SETS": "Set12", "EVAL_X8": "0"}
    done = subprocess.run(["bash", "bench/lease_finish.sh", str(second), str(first)], cwd=REPO_ROOT, env=env,
                          timeout=900, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-1500:] + done.stderr[-1500:]


def _join(folder, prefix, out):
    parts = sorted(p for p in os.listdir(folder) if p.startswith(prefix))
    assert parts, os.listdir(folder)
    out.write_bytes(b"".join((folder / p).read_bytes() for p in parts))
    return out


def _assert_same_weights(model, path, genotype):
    reference = build_network(genotype)
    reference.load_weights(path)
    assert len(model.weights) == len(reference.weights)
    for a, b in zip(model.weights, reference.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_two_leases_train_ship_and_continue_from_the_shipped_model(tmp_path, bsds_train_dir, set12_dir):
    """The two-call lease end to end on the CPU (JAX backend, TensorFlow blocked), a tiny
    genotype. Lease 1's time runs out at once: it stops at the first step it can refuse (when the
    callback thread has timed two steps: a few steps in, as the main thread runs ahead),
    validates there and ships version 1 at that step S. The plan then continues from that
    model's weights at S; lease 2 validates every 10 steps after it, ends on the 40-step
    schedule, times two batch sizes, and ships version 2."""
    from clearer_tf.pretrained import load_pretrained, model_card

    data = tmp_path / "data"
    (data / "BSDS500").mkdir(parents=True)
    os.symlink(bsds_train_dir, data / "BSDS500" / "train")
    os.symlink(set12_dir, data / "Set12")
    genotype = Genotype.from_string("F / P / F", base_width=4, stem_planes=4, stem_blocks=1)
    genotype.save(tmp_path / "g.json")
    protocol = [{"kind": "train", "name": "m", "genotype": str(tmp_path / "g.json"), "sigma": 50,
                 "iterations": 40}]
    models = tmp_path / "models"
    common = "--preset quick --validate-every 10 --sweep-steps 2 --profile 0"

    # lease 1: 60 s to the deadline, 59 kept for after the training: the time limit is 1 s
    work, plan, _, first, second = _lease(tmp_path, "1", lease_plan.plan(tmp_path, models, protocol), data, 60,
                                          f"{common} --reserve 59 --sweep none", return_after=600)
    rows = json.loads((work / "run" / "validation.json").read_text())
    stop = rows[-1]["step"]
    assert 2 < stop < 40 and "val_psnr" in rows[-1] and [r["step"] for r in rows[:-1]] == list(range(10, stop, 10))
    assert sorted(os.listdir(second)) == ["last.weights.h5.part-aa", "small.tgz"]
    with tarfile.open(second / "small.tgz") as tar:
        names = {os.path.normpath(n) for n in tar.getnames()}
        lease = json.load(tar.extractfile("./lease.json"))
    assert {"log", "lease.json", "genotype.json", "train_summary.json", "validation.json"} <= names
    assert lease["tensorflow_imported"] is False and "error" not in lease, lease.get("error")
    assert lease["timeline"]["train_start_s"] < lease["timeline"]["train_end_s"] <= lease["timeline"]["end_s"]
    # the job ended within call 1, which brought everything back; the safety weights of the last
    # validation (what call 1 returns while the job still runs) are the network's, model only
    assert {"small.tgz", "last.weights.h5.part-aa", "start.log"} <= set(os.listdir(first))
    assert json.loads((work / "safety" / "safety.json").read_text())["step"] == stop
    fetched = build_network(genotype)
    fetched.load_weights(_join(second, "last.weights.h5.part-", tmp_path / "last.weights.h5"))
    _assert_same_weights(fetched, work / "run" / "last.weights.h5", genotype)
    _assert_same_weights(fetched, work / "safety" / "last.weights.h5", genotype)
    assert os.path.getsize(tmp_path / "last.weights.h5") < os.path.getsize(work / "run" / "last.weights.h5")

    _finish(tmp_path, plan, data, second, first)
    _assert_same_weights(load_pretrained("m", root=models), work / "run" / "last.weights.h5", genotype)
    card = model_card("m", root=models)
    assert (card["version"], card["training"]["iterations"], card["training"]["schedule_iterations"]) == (1, stop, 40)

    second_plan = lease_plan.plan(tmp_path, models, protocol)
    assert (second_plan["INIT_STEP"], second_plan["VERSION"]) == (stop, 2)
    work2, plan2, written, first2, second2 = _lease(tmp_path, "2", second_plan, data, 600,
                                                    f"{common} --reserve 0 --sweep 4,8", return_after=2)
    assert "small.tgz" not in os.listdir(first2) and "small.tgz" in os.listdir(second2)  # call 2 fetched it
    assert written["INIT_MODEL"] == os.path.join("init", "m") and written["INIT_WEIGHTS"] == "init.weights.h5"
    summary = json.loads((work2 / "run" / "train_summary.json").read_text())
    assert summary["warm_start"]["step"] == stop and summary["iterations_done"] == 40 and summary["finished"]
    assert [r["step"] for r in summary["history"]] == [*range(stop + 10, 40, 10), 40]
    lease = json.loads((work2 / "small" / "lease.json").read_text())
    assert [row["batch"] for row in lease["batch_sweep"]] == [4, 8]
    assert all(row["step_ms"] > 0 for row in lease["batch_sweep"])
    _finish(tmp_path, plan2, data, second2, first2)
    card = model_card("m", root=models)
    assert (card["version"], card["training"]["iterations"]) == (2, 40)
    assert [(s["from_step"], s["to_step"]) for s in card["training"]["segments"]] == [(0, stop), (stop, 40)]
    assert os.listdir(models / "m").count("1") == 0  # version 1 left the tree
    assert lease_plan.plan(tmp_path, models, protocol)["MODE"] == "bench"
    runs = sorted(p for p in os.listdir(tmp_path / "runs") if (tmp_path / "runs" / p).is_dir())
    assert len(runs) == 2 and all("lease.json" in os.listdir(tmp_path / "runs" / r) for r in runs)
    kept = json.loads((tmp_path / "runs" / "batch_sweep.json").read_text())  # what the next plan reads
    assert [(row["batch"], row["source"]) for row in kept] == [(4, "train_on_batch"), (8, "train_on_batch")]


def test_profile_breakdown_counts_the_ops_of_a_traced_jax_program(tmp_path):
    """bench/profile_ops.py on a real (CPU) trace: two convolutions per call, three calls."""
    code = f"""
import jax, jax.numpy as jnp
@jax.jit
def f(x, w):
    dn = ("NHWC", "HWIO", "NHWC")
    y = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=dn)
    return jax.lax.conv_general_dilated(jnp.tanh(y), w, (1, 1), "SAME", dimension_numbers=dn).sum()
x, w = jnp.ones((2, 16, 16, 4)), jnp.ones((3, 3, 4, 4))
f(x, w).block_until_ready()
jax.profiler.start_trace({str(tmp_path)!r})
for _ in range(3):
    f(x, w).block_until_ready()
jax.profiler.stop_trace()
"""
    subprocess.run(["python", "-c", code], check=True, timeout=300, capture_output=True)
    out = tmp_path / "ops.json"
    subprocess.run(["python", "bench/profile_ops.py", str(tmp_path), "--steps", "3", "--json", str(out)],
                   cwd=REPO_ROOT, check=True, timeout=300, capture_output=True)
    result = json.loads(out.read_text())
    convs = [o for o in result["ops"] if "conv" in o["op"]]
    assert sum(o["calls_per_step"] for o in convs) == 2
    assert result["categories"]["convolution"]["ms"] > 0
    assert sum(c["share"] for c in result["categories"].values()) == pytest.approx(1.0, abs=1e-3)
