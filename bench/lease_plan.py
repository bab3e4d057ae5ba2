#!/usr/bin/env python
"""What the next GPU lease runs, read from the repository (issue 13's protocol, in order).

    python bench/lease_plan.py                 # prints the plan as shell assignments
    python bench/lease_plan.py --out .lease/plan  # also writes .lease/plan/plan.env and, for a
                                                  # training that continues, init.weights.h5

Each step of `PROTOCOL` is done when the repository holds its product: a training step when
`saved_models/<name>/card.json` says the whole schedule ran, a search step when its
`genotype.json` exists. The first step not done is the plan. A training that a shipped
version has started continues from that version's weights at the step it reached
(`INIT_WEIGHTS`, the network's weights alone, written here so that the GPU machine needs no
TensorFlow; `INIT_STEP`: no optimizer state is kept between leases, train.py re-warms the
learning rate) and ships as the next version (`INIT_MODEL`: its card, for the segments).
"""

import argparse
import json
import os
import shlex
import shutil
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Issue 13, in order. A search's genotype is kept under docs/runs/<run>/.
PROTOCOL = [
    {"kind": "train", "name": "denoise-gray-sigma50", "genotype": "bench/genotypes/paper-l1-0.01.json",
     "sigma": 50, "iterations": 100_000},
    {"kind": "search", "name": "search-denoise-sigma50", "sigma": 50, "iterations": 10_000,
     "genotype_out": "docs/runs/search-denoise-sigma50/genotype.json"},
]


def _card(models_root, name):
    path = os.path.join(models_root, name, "card.json")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


SWEEP_SIZES = (128, 64, 256)
"""Batch sizes whose train-step time the leases measure, one a lease, 128 first (issue 19: batch
128 may replace batch 32 if it costs at most 1.5x); `docs/runs/batch_sweep.json` keeps them."""


def sweep_size(root=ROOT):
    """The first of `SWEEP_SIZES` that `docs/runs/batch_sweep.json` has no time for ('' if none)."""
    path = os.path.join(root, "docs", "runs", "batch_sweep.json")
    measured = set()
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            measured = {row["batch"] for row in json.load(f) if row.get("step_ms")}
    return next((str(b) for b in SWEEP_SIZES if b not in measured), "")


def plan(root=ROOT, models_root=None, protocol=PROTOCOL) -> dict:
    """The first protocol step that the repository has not finished, as shell variables."""
    found = _step(root, models_root, protocol)
    return {**found, "SWEEP": sweep_size(root)} if found["MODE"] != "bench" else {**found, "SWEEP": ",".join(
        map(str, SWEEP_SIZES))}


def _step(root, models_root, protocol) -> dict:
    models_root = models_root or os.path.join(root, "saved_models")
    for step in protocol:
        if step["kind"] == "search":
            if os.path.isfile(os.path.join(root, step["genotype_out"])):
                continue
            return {"MODE": "search", "NAME": step["name"], "SIGMA": step["sigma"],
                    "SEARCH_ITERATIONS": step["iterations"], "GENOTYPE_OUT": step["genotype_out"]}
        card = _card(models_root, step["name"])
        done = card["training"]["iterations"] if card else 0
        if card and card["training"].get("schedule_iterations") != step["iterations"]:
            raise ValueError(f"{step['name']}: its card's schedule is "
                             f"{card['training'].get('schedule_iterations')} iterations, the protocol's "
                             f"{step['iterations']}")
        if done >= step["iterations"]:
            continue
        return {"MODE": "train", "NAME": step["name"], "GENOTYPE": step["genotype"], "SIGMA": step["sigma"],
                "ITERATIONS": step["iterations"], "INIT_STEP": done,
                "INIT_MODEL": os.path.join(models_root, step["name"]) if card else "",
                "VERSION": card["version"] + 1 if card else 1}
    return {"MODE": "bench"}


def write(plan_vars, out_dir, weights=True):
    """`out_dir/plan.env`; for a training that continues a shipped model, its card in
    `out_dir/init/<name>/` (`INIT_MODEL` then names it relative to `out_dir`) and, with `weights`,
    its network weights alone in `out_dir/init.weights.h5` (`INIT_WEIGHTS`)."""
    shutil.rmtree(out_dir, ignore_errors=True)
    os.makedirs(out_dir)
    if plan_vars.get("INIT_MODEL"):  # relative to out_dir, which travels to the GPU machine
        shipped = plan_vars["INIT_MODEL"]
        relative = os.path.join("init", plan_vars["NAME"])
        os.makedirs(os.path.join(out_dir, relative))
        shutil.copy(os.path.join(shipped, "card.json"), os.path.join(out_dir, relative, "card.json"))
        plan_vars = {**plan_vars, "INIT_MODEL": relative}
        if weights:
            sys.path.insert(0, ROOT)
            from clearer_tf.pretrained import load_pretrained

            model = load_pretrained(os.path.basename(os.path.normpath(shipped)),
                                    root=os.path.dirname(os.path.normpath(shipped)))
            model.save_weights(os.path.join(out_dir, "init.weights.h5"))
            plan_vars["INIT_WEIGHTS"] = "init.weights.h5"
    with open(os.path.join(out_dir, "plan.env"), "w", encoding="utf-8") as f:
        f.write(render(plan_vars))
    return plan_vars


def render(plan_vars) -> str:
    return "".join(f"{k}={shlex.quote(str(v))}\n" for k, v in plan_vars.items())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", metavar="DIR",
                   help="write DIR/plan.env, DIR/init/ and DIR/init.weights.h5 (carried to the lease)")
    p.add_argument("--models", metavar="DIR", help="shipped models (default: saved_models/)")
    args = p.parse_args(argv)
    try:
        plan_vars = plan(models_root=args.models)
    except (ValueError, KeyError, OSError) as e:
        p.error(str(e))
    if args.out:
        plan_vars = write(plan_vars, args.out)
    sys.stdout.write(render(plan_vars))
    return 0


if __name__ == "__main__":
    sys.exit(main())
