"""The GPU lease: the plan read from the repository, and the lease job end to end on the CPU."""

import importlib.util
import json
import os
import subprocess
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
                     "INIT_STEP": 0, "INIT_MODEL": "", "VERSION": 1}
    _ship(models, "m", 2, done=400)
    second = lease_plan.plan(tmp_path, models, PROTOCOL)
    assert (second["INIT_STEP"], second["INIT_MODEL"], second["VERSION"]) == (400, str(models / "m"), 3)
    (models / "m" / "card.json").write_text(json.dumps({"version": 3, "training": {
        "iterations": 1000, "schedule_iterations": 1000}}))
    assert lease_plan.plan(tmp_path, models, PROTOCOL)["MODE"] == "search"
    os.makedirs(tmp_path / "runs" / "s")
    (tmp_path / "runs" / "s" / "genotype.json").write_text("{}")
    assert lease_plan.plan(tmp_path, models, PROTOCOL) == {"MODE": "bench"}


def test_plan_refuses_a_shipped_model_on_another_schedule(tmp_path):
    _ship(tmp_path / "saved_models", "m", 1, done=400, schedule=5000)
    with pytest.raises(ValueError, match="m: its card's schedule is 5000 iterations, the protocol's 1000"):
        lease_plan.plan(tmp_path, tmp_path / "saved_models", PROTOCOL)


def test_plan_writes_an_env_file_and_copies_the_model_to_continue(tmp_path):
    models = tmp_path / "saved_models"
    _ship(models, "m", 1, done=400)
    written = lease_plan.write(lease_plan.plan(tmp_path, models, PROTOCOL), tmp_path / "plan")
    assert (tmp_path / "plan" / "init" / "m" / "card.json").is_file()
    env = subprocess.run(["bash", "-c", f"source {tmp_path / 'plan' / 'plan.env'}; echo $INIT_MODEL $INIT_STEP"],
                         capture_output=True, text=True, check=True).stdout.split()
    assert env == [os.path.join("init", "m"), "400"] and written["INIT_MODEL"] == env[0]


def _lease(tmp_path, tag, plan_vars, data, stop_after=None):
    """Runs bench/gpu_lease.sh on the CPU (JAX) for `plan_vars`; returns its WORK folder."""
    plan = tmp_path / f"plan-{tag}"
    written = lease_plan.write(plan_vars, plan)
    work = tmp_path / f"work-{tag}"
    env = {**os.environ, "KERAS_BACKEND": "jax", "PLAN": str(plan), "DATA": str(data), "WORK": str(work),
           "DEADLINE_S": "600", "PRESET": "quick", "VALIDATE_EVERY": "10", "PROFILE": "2,3"}
    if stop_after:
        env["STOP_AFTER"] = str(stop_after)
    subprocess.run(["bash", "bench/gpu_lease.sh"], cwd=REPO_ROOT, env=env, check=True, timeout=900)
    assert (work / "DONE").exists(), (work / "log").read_text()[-2000:]
    return work, plan, written


def _finish(tmp_path, work, plan, data):
    env = {**os.environ, "PLAN": str(plan), "DATA": str(data), "RUNS": str(tmp_path / "runs"),
           "AUTOTUNE": str(tmp_path / "autotune"), "TRAINS": str(tmp_path / "trains"),
           "MODELS": str(tmp_path / "models"), "EVAL_SETS": "Set12", "EVAL_X8": "0"}
    done = subprocess.run(["bash", "bench/lease_finish.sh", str(work / "fetch")], cwd=REPO_ROOT, env=env,
                          timeout=900, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-1500:] + done.stderr[-1500:]


def _assert_same_weights(model, path, genotype):
    reference = build_network(genotype)
    reference.load_weights(path)
    assert len(model.weights) == len(reference.weights)
    for a, b in zip(model.weights, reference.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_two_leases_train_ship_and_continue_from_the_shipped_model(tmp_path, bsds_train_dir, set12_dir):
    """bench/gpu_lease.sh and lease_finish.sh end to end on the CPU (JAX backend), a tiny
    genotype: the first lease stops at 20 of 40 iterations and ships version 1; the plan then
    continues from that shipped model (weights only) and the second lease ships version 2."""
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

    work, plan, _ = _lease(tmp_path, "1", lease_plan.plan(tmp_path, models, protocol), data, stop_after=20)
    fetched = sorted(os.listdir(work / "fetch"))
    assert "small.tgz" in fetched and "last.weights.h5.part-aa" in fetched
    with tarfile.open(work / "fetch" / "small.tgz") as tar:
        names = {os.path.normpath(n) for n in tar.getnames()}
        rows = json.load(tar.extractfile("./validation.json"))
        timing = json.load(tar.extractfile("./timing.json"))
    assert {"log", "genotype.json", "train_summary.json", "validation.json", "timing.json"} <= names
    assert [r["step"] for r in rows] == [10, 20] and timing["first_step_s"] > 0
    # the parts join into model-only weights (no optimizer state) equal to the run's last weights
    joined = tmp_path / "last.weights.h5"
    joined.write_bytes(b"".join((work / "fetch" / p).read_bytes() for p in fetched if p.startswith("last.")))
    fetched_model = build_network(genotype)
    fetched_model.load_weights(joined)
    _assert_same_weights(fetched_model, work / "run" / "last.weights.h5", genotype)
    assert os.path.getsize(joined) < os.path.getsize(work / "run" / "last.weights.h5")

    _finish(tmp_path, work, plan, data)
    _assert_same_weights(load_pretrained("m", root=models), work / "run" / "best.weights.h5", genotype)
    card = model_card("m", root=models)
    assert (card["version"], card["training"]["iterations"], card["training"]["schedule_iterations"]) == (1, 20, 40)
    assert [e["data"] for e in card["evaluation"]] == ["Set12", "Set12"]  # whole image and patches

    second = lease_plan.plan(tmp_path, models, protocol)
    assert (second["INIT_STEP"], second["VERSION"]) == (20, 2)
    work2, plan2, written = _lease(tmp_path, "2", second, data)
    assert written["INIT_MODEL"] == os.path.join("init", "m")
    summary = json.loads((work2 / "run" / "train_summary.json").read_text())
    assert summary["warm_start"]["step"] == 20 and summary["iterations_done"] == 40
    assert [r["step"] for r in json.loads((work2 / "run" / "validation.json").read_text())] == [30, 40]
    _finish(tmp_path, work2, plan2, data)
    card = model_card("m", root=models)
    assert (card["version"], card["training"]["iterations"]) == (2, 40)
    segments = card["training"]["segments"]
    assert [(s["from_step"], s["to_step"]) for s in segments] == [(0, 20), (20, 40)]
    assert card["training"]["wall_seconds"] == pytest.approx(sum(s["wall_seconds"] for s in segments), abs=0.2)
    assert os.listdir(models / "m").count("1") == 0  # version 1 left the tree
    assert lease_plan.plan(tmp_path, models, protocol) == {"MODE": "bench"}
    runs = sorted(os.listdir(tmp_path / "runs"))
    assert len(runs) == 2 and all({"log", "timing.json"} <= set(os.listdir(tmp_path / "runs" / r)) for r in runs)


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
