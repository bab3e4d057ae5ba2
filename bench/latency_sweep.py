#!/usr/bin/env python
"""PSNR against measured LiteRT latency: latency-aware searches, each found network trained.

    KERAS_BACKEND=tensorflow python bench/latency_sweep.py --out runs/latency-sweep --threads 2 \
        --json docs/runs/latency_sweep_cpu.json --plot docs/latency_sweep.png

On the quick preset (grayscale denoising, sigma 50, the bundled samples), with one latency table
measured first (`--size`, `--threads`, float32):
  - searches with `--cost latency` and each `--lambdas` value (L_comp's weight, Eq. 2);
  - searches with `--lambda-comp 0` and a budget (`--latency-budget-ms`) at each `--budgets`
    fraction of the way from the fastest to the slowest predicted genotype (calibrated);
  - all-parallel and all-fusion genotypes as the two ends of the range.
Every distinct genotype is trained with `train.py --preset quick` (same seed), and its validation
PSNR (best, bundled Set12 sample) is plotted against its measured LiteRT latency (whole network,
median of `--runs`). The scripts run as a user runs them (subprocesses of the CLIs).
"""

import argparse
import datetime
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli(*args):
    subprocess.run([sys.executable, *args], check=True, cwd=REPO,
                   env={**os.environ, "KERAS_BACKEND": "tensorflow"})


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/latency-sweep")
    p.add_argument("--size", default="512x512", help="HxW of the latency table and measurements")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--sigma", type=float, default=50.0)
    p.add_argument("--lambdas", type=float, nargs="+", default=[0.0, 0.1, 1.0])
    p.add_argument("--budgets", type=float, nargs="+", default=[0.5],
                   help="fractions of the predicted range (fastest .. slowest genotype)")
    p.add_argument("--json", metavar="FILE")
    p.add_argument("--plot", metavar="PNG")
    args = p.parse_args(argv)
    height, width = (int(v) for v in args.size.lower().split("x"))

    import numpy as np

    from clearer_tf import Genotype, latency
    from clearer_tf.genotype import from_config
    from clearer_tf.network import build_network
    from clearer_tf.presets import get_preset

    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    config = get_preset("quick").supernet
    table_path = os.path.join(out, "latency_table.json")
    if not os.path.isfile(table_path):
        latency.save_table(latency.measure_table(config, height, width, ("float32",), args.threads, args.runs),
                           table_path)
    table = latency.load_table(table_path, config)
    fastest, slowest = latency.range_ms(table, config.columns)
    common = ["--task", "denoise", "--preset", "quick", "--sigma", str(args.sigma)]
    size = ["--latency-size", f"{height}x{width}", "--latency-table", table_path]
    if args.threads:
        size += ["--latency-threads", str(args.threads)]

    settings = [(f"lambda_comp {lam:g}", ["--cost", "latency", "--lambda-comp", str(lam)]) for lam in args.lambdas]
    settings += [(f"budget {b:g} ({fastest + b * (slowest - fastest):.1f} ms)",
                  ["--lambda-comp", "0", "--latency-budget-ms", f"{fastest + b * (slowest - fastest):.3f}"])
                 for b in args.budgets]
    genotypes = {}  # short string -> (genotype, [labels])
    for i, (label, flags) in enumerate(settings):
        folder = os.path.join(out, f"search-{i}")
        if not os.path.isfile(os.path.join(folder, "genotype.json")):
            cli("train_scripts/search.py", *common, *size, *flags, "--out", folder, "--overwrite")
        genotype = Genotype.load(os.path.join(folder, "genotype.json"))
        genotypes.setdefault(genotype.short(), (genotype, []))[1].append(label)
    for label, kind in (("all parallel", "parallel"), ("all fusion", "fusion")):
        genotype = from_config(config, [[kind] * n for n in config.columns])
        genotypes.setdefault(genotype.short(), (genotype, []))[1].append(label)

    rows = []
    for short, (genotype, labels) in genotypes.items():
        folder = os.path.join(out, "train-" + short.replace(" / ", "_").replace(" ", ""))
        os.makedirs(folder, exist_ok=True)
        genotype.save(os.path.join(folder, "input_genotype.json"))
        if not os.path.isfile(os.path.join(folder, "train_summary.json")):
            cli("train_scripts/train.py", "--genotype", os.path.join(folder, "input_genotype.json"), *common[2:],
                "--out", folder, "--overwrite")
        with open(os.path.join(folder, "train_summary.json"), encoding="utf-8") as f:
            validation = json.load(f)["validation"]
        measured = latency.measure_network(build_network(genotype), height, width, "float32", args.threads, args.runs)
        rows.append({"genotype": short, "settings": labels, "val_psnr": round(validation["best_psnr"], 3),
                     "input_psnr": round(validation["input_psnr"], 3),
                     "predicted_ms": round(latency.predict_ms(table, genotype.cells), 3),
                     "measured_ms": round(measured["median_ms"], 3)})
        print(f"| `{short}` | {', '.join(labels)} | {rows[-1]['predicted_ms']} | {rows[-1]['measured_ms']} | "
              f"{rows[-1]['val_psnr']} |", flush=True)

    result = {"command": "python bench/latency_sweep.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "date": datetime.date.today().isoformat(), "device": table["device"], "threads": args.threads,
              "size": [height, width], "predicted_range_ms": [round(fastest, 3), round(slowest, 3)], "rows": rows}
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        x = np.array([r["measured_ms"] for r in rows])
        y = np.array([r["val_psnr"] for r in rows])
        ax.scatter(x, y)
        for r in rows:
            ax.annotate(f"{r['genotype']}\n{'; '.join(r['settings'])}", (r["measured_ms"], r["val_psnr"]),
                        fontsize=6, xytext=(4, 2), textcoords="offset points")
        ax.set_xlabel(f"measured LiteRT latency, float32, {height}x{width}, {args.threads or 'default'} threads (ms)")
        ax.set_ylabel("validation PSNR (dB), sigma 50")
        ax.set_title("quick preset: latency-aware searches, networks trained 600 iterations", fontsize=9)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=130)
    return 0


if __name__ == "__main__":
    sys.exit(main())
