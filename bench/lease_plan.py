#!/usr/bin/env python
"""What the next GPU lease runs, read from the repository (issue 13's protocol, in order).

    python bench/lease_plan.py                 # prints the plan as shell assignments
    python bench/lease_plan.py --out .gpuplan  # also writes .gpuplan/plan.env and copies the
                                               # shipped model a training continues from

Each step of `PROTOCOL` is done when the repository holds its product: a training step when
`saved_models/<name>/card.json` says the whole schedule ran, a search step when its
`genotype.json` exists. The first step not done is the plan. A training that a shipped
version has started continues from that version's weights (`INIT_MODEL`, `INIT_STEP`: no
optimizer state is kept between leases, train.py re-warms the learning rate) and ships as the
next version.
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


def plan(root=ROOT, models_root=None, protocol=PROTOCOL) -> dict:
    """The first protocol step that the repository has not finished, as shell variables."""
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


def write(plan_vars, out_dir):
    """`out_dir/plan.env`, and the model a training continues from in `out_dir/init/<name>/`
    (`INIT_MODEL` then names it relative to `out_dir`)."""
    shutil.rmtree(out_dir, ignore_errors=True)
    os.makedirs(out_dir)
    if plan_vars.get("INIT_MODEL"):  # relative to out_dir, which travels to the GPU machine
        relative = os.path.join("init", plan_vars["NAME"])
        shutil.copytree(plan_vars["INIT_MODEL"], os.path.join(out_dir, relative))
        plan_vars = {**plan_vars, "INIT_MODEL": relative}
    with open(os.path.join(out_dir, "plan.env"), "w", encoding="utf-8") as f:
        f.write(render(plan_vars))
    return plan_vars


def render(plan_vars) -> str:
    return "".join(f"{k}={shlex.quote(str(v))}\n" for k, v in plan_vars.items())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", metavar="DIR", help="write DIR/plan.env and DIR/init/ (carried to the lease)")
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
