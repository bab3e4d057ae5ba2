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


def test_lease_job_trains_and_leaves_model_only_weights_for_fetching(tmp_path, bsds_train_dir, set12_dir):
    """bench/gpu_lease.sh end to end on the CPU (JAX backend), a tiny genotype, 20 iterations."""
    data = tmp_path / "data"
    (data / "BSDS500").mkdir(parents=True)
    os.symlink(bsds_train_dir, data / "BSDS500" / "train")
    os.symlink(set12_dir, data / "Set12")
    genotype = Genotype.from_string("F / P / F", base_width=4, stem_planes=4, stem_blocks=1)
    genotype.save(tmp_path / "g.json")
    plan = tmp_path / "plan"
    plan.mkdir()
    (plan / "plan.env").write_text(lease_plan.render({
        "MODE": "train", "NAME": "m", "GENOTYPE": tmp_path / "g.json", "SIGMA": 50, "ITERATIONS": 20,
        "INIT_STEP": 0, "INIT_MODEL": "", "VERSION": 1}))
    work = tmp_path / "work"
    env = {**os.environ, "KERAS_BACKEND": "jax", "PLAN": str(plan), "DATA": str(data), "WORK": str(work),
           "DEADLINE_S": "400", "PRESET": "quick", "VALIDATE_EVERY": "10", "PROFILE": "2,3"}
    subprocess.run(["bash", "bench/gpu_lease.sh"], cwd=REPO_ROOT, env=env, check=True, timeout=500)
    assert (work / "DONE").exists(), (work / "log").read_text()[-2000:]

    fetched = sorted(os.listdir(work / "fetch"))
    assert "small.tgz" in fetched and "last.weights.h5.part-aa" in fetched
    with tarfile.open(work / "fetch" / "small.tgz") as tar:
        names = {os.path.normpath(n) for n in tar.getnames()}
        rows = json.load(tar.extractfile("./validation.json"))
        timing = json.load(tar.extractfile("./timing.json"))
    assert {"log", "genotype.json", "train_summary.json", "validation.json", "timing.json"} <= names
    assert [r["step"] for r in rows] == [10, 20] and timing["first_step_s"] > 0

    # the parts join into model-only weights equal to the run's last weights
    joined = tmp_path / "last.weights.h5"
    joined.write_bytes(b"".join((work / "fetch" / p).read_bytes() for p in fetched if p.startswith("last.")))
    fetched_model, run_model = build_network(genotype), build_network(genotype)
    fetched_model.load_weights(joined)
    run_model.load_weights(work / "run" / "last.weights.h5")
    assert len(fetched_model.weights) == len(run_model.weights)
    for a, b in zip(fetched_model.weights, run_model.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert os.path.getsize(joined) < os.path.getsize(work / "run" / "last.weights.h5")  # no optimizer

    # bench/lease_finish.sh turns the fetched files into a shipped model with those weights
    env = {**os.environ, "PLAN": str(plan), "DATA": str(data), "RUNS": str(tmp_path / "runs"),
           "AUTOTUNE": str(tmp_path / "autotune"), "TRAINS": str(tmp_path / "trains"),
           "MODELS": str(tmp_path / "models"), "EVAL_SETS": "Set12"}
    subprocess.run(["bash", "bench/lease_finish.sh", str(work / "fetch")], cwd=REPO_ROOT, env=env, check=True,
                   timeout=500, capture_output=True)
    from clearer_tf.pretrained import load_pretrained, model_card

    shipped, best = load_pretrained("m", root=tmp_path / "models"), build_network(genotype)
    best.load_weights(work / "run" / "best.weights.h5")  # the best validation's, fetched or last
    for a, b in zip(shipped.weights, best.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    card = model_card("m", root=tmp_path / "models")
    assert card["version"] == 1 and card["training"]["iterations"] == 20
    assert {e["data"] for e in card["evaluation"]} == {"Set12"}
    (run_dir,) = os.listdir(tmp_path / "runs")
    assert {"log", "timing.json", "validation.json"} <= set(os.listdir(tmp_path / "runs" / run_dir))


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
