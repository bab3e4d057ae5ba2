#!/usr/bin/env python
"""Quick trainings fed by tf.data and by batches drawn on the device reach the same validation
PSNR (issue 18): the same genotype, schedule and seeds, only `--data-pipeline` differs.

    KERAS_BACKEND=jax JAX_PLATFORMS=cpu python bench/pipeline_parity.py --train-data ../shared/datasets/BSDS500/train \
        --json docs/runs/pipeline_parity_cpu.json

Each run is `train_scripts/train.py --preset quick` (600 iterations, batch 8 of 32x32, sigma 50,
validation on the bundled Set12 sample) in its own process on the JAX backend.
"""

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GENOTYPE = "F P / F F / F P"  # a quick-preset genotype (widths 8-64)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train-data", default=os.path.join(ROOT, "data", "samples", "bsds", "train"))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--sigma", default="50")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    sys.path.insert(0, ROOT)
    from clearer_tf.genotype import Genotype

    work = tempfile.mkdtemp(prefix="parity-")
    genotype = os.path.join(work, "genotype.json")
    Genotype.from_string(GENOTYPE, base_width=8, stem_planes=8, stem_blocks=1).save(genotype)
    env = dict(os.environ, KERAS_BACKEND="jax")
    runs = []
    for seed in args.seeds.split(","):
        for pipeline in ("tfdata", "device"):
            out = os.path.join(work, f"{pipeline}-{seed}")
            subprocess.run([sys.executable, os.path.join(ROOT, "train_scripts", "train.py"), "--genotype", genotype,
                            "--preset", "quick", "--sigma", args.sigma, "--data", args.train_data, "--seed", seed,
                            "--data-pipeline", pipeline, "--out", out, "--quiet"], check=True, env=env,
                           stdout=subprocess.DEVNULL)
            with open(os.path.join(out, "train_summary.json"), encoding="utf-8") as f:
                summary = json.load(f)
            v = summary["validation"]
            runs.append({"pipeline": pipeline, "seed": int(seed), "best_psnr": round(v["best_psnr"], 3),
                         "last_psnr": round(v["last_psnr"], 3), "input_psnr": round(v["input_psnr"], 3),
                         "wall_seconds": summary["wall_seconds"], "device": summary["device"]})
            print(json.dumps(runs[-1]), flush=True)
    result = {"command": " ".join(["python", "bench/pipeline_parity.py", *(argv or sys.argv[1:])]),
              "date": datetime.date.today().isoformat(), "genotype": GENOTYPE, "runs": runs}
    for pipeline in ("tfdata", "device"):
        last = [r["last_psnr"] for r in runs if r["pipeline"] == pipeline]
        result[pipeline] = {"mean_last_psnr": round(statistics.mean(last), 3), "min": min(last), "max": max(last)}
    print(json.dumps({k: result[k] for k in ("tfdata", "device")}))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
