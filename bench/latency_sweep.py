#!/usr/bin/env python
"""PSNR against measured LiteRT latency: latency-aware searches, each found network trained.

    KERAS_BACKEND=tensorflow python bench/latency_sweep.py --out runs/latency-sweep --threads 2 \
        --lambdas 0 0.1 1 3 10 --budgets 0.25 0.5 --train-iterations 2000 --validate-every 250 \
        --train-data ../shared/datasets/BSDS500/train --seeds 0 1 2 \
        --json docs/runs/latency_sweep_cpu.json --plot docs/latency_sweep.png

On the quick preset (grayscale denoising, sigma 50, the bundled samples), with one latency table
measured first (`--size`, `--threads`, float32):
  - searches with `--cost latency` and each `--lambdas` value (L_comp's weight, Eq. 2);
  - searches with `--lambda-comp 0` and a budget (`--latency-budget-ms`) at each `--budgets`
    fraction of the way from the fastest to the slowest predicted genotype (calibrated);
  - all-parallel and all-fusion genotypes as the two ends of the range.
Every distinct genotype is trained with `train.py --preset quick` once per `--seeds` value (on
`--train-data`, default the bundled 12 images; `--train-iterations`, `--train-patch-size`), and
its validation PSNR (best validation, bundled Set12 sample: 4 images; mean over seeds, bars from
the lowest to the highest) is plotted against its measured LiteRT latency: the seed-0 network
exported as a SavedModel (`export.export_saved_model`, as a user ships it), converted to float32
as `export.py` converts it, checked against the Keras network (finite, within tolerance), then
timed: all networks in turn, `--rounds` times over (median of all `--runs` x `--rounds`). The seeds show how much of a PSNR difference is noise. The scripts run as a user
runs them (subprocesses of the CLIs); finished searches and trainings in `--out` are reused, and
`--replot JSON --plot PNG` only redraws the picture.
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


def compact(labels):
    """'lambda_comp 0', 'lambda_comp 3', 'budget 0.5 (764.5 ms)' -> 'lambda_comp 0, 3; budget 0.5 (764.5 ms)'."""
    groups = {}
    for label in labels:
        name, _, value = label.partition(" ")
        groups.setdefault(name, []).append(value)
    return "; ".join(f"{name} {', '.join(values)}" for name, values in groups.items())


def plot(result, path):
    """Validation PSNR (mean over seeds, bars: lowest to highest) against measured latency."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = result["rows"]
    x = np.array([r["measured_ms"] for r in rows])
    y = np.array([r["val_psnr"] for r in rows])
    spread = np.array([[r["val_psnr"] - min(r["val_psnr_per_seed"]), max(r["val_psnr_per_seed"]) - r["val_psnr"]]
                       for r in rows]).T
    fig, ax = plt.subplots(figsize=(7.2, 4.4))
    ax.errorbar(x, y, yerr=spread, fmt="o", capsize=3, label="trained networks (mean, lowest..highest seed)")
    ax.scatter([r["predicted_ms"] for r in rows], y, marker="x", color="0.5", s=18,
               label="the same, at the table's predicted latency")
    for r in rows:
        ax.annotate(f"{r['genotype']}\n{compact(r['settings'])}", (r["measured_ms"], r["val_psnr"]),
                    fontsize=6, xytext=(5, 3), textcoords="offset points")
    (height, width), threads = result["size"], result["threads"] or "default"
    ax.set_xlim(x.min() - 0.05 * np.ptp(x), x.max() + 0.3 * np.ptp(x))
    ax.set_xlabel(f"LiteRT latency of the exported SavedModel, float32, batch 1, {height}x{width}, "
                  f"{threads} threads (ms)")
    ax.set_ylabel(f"validation PSNR (dB), sigma {result['sigma']:g}, {len(result['seeds'])} seeds")
    ax.set_title(f"quick preset, {result['device']}, {result['date']}: latency-aware searches, each network "
                 f"trained {result['train_iterations']} iterations\non {result['train_patch_size']}px patches of "
                 f"{result.get('train_data', 'the bundled sample')}, validated on the bundled Set12 sample (4 images)",
                 fontsize=8)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=130)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/latency-sweep")
    p.add_argument("--size", default="512x512", help="HxW of the latency table and measurements")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds of --runs for the table's parts")
    p.add_argument("--sigma", type=float, default=50.0)
    p.add_argument("--lambdas", type=float, nargs="+", default=[0.0, 0.1, 1.0, 3.0, 10.0])
    p.add_argument("--budgets", type=float, nargs="+", default=[0.25, 0.5],
                   help="fractions of the predicted range (fastest .. slowest genotype)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                   help="train every genotype once per seed")
    p.add_argument("--train-iterations", type=int, default=None, help="default: the quick preset's")
    p.add_argument("--validate-every", type=int, default=None, help="default: the quick preset's")
    p.add_argument("--train-patch-size", type=int, default=None, help="default: the quick preset's")
    p.add_argument("--train-data", metavar="DIR", help="training images (default: the bundled sample, 12 images)")
    p.add_argument("--json", metavar="FILE")
    p.add_argument("--plot", metavar="PNG")
    p.add_argument("--replot", metavar="JSON", help="only draw --plot from a JSON this script wrote")
    args = p.parse_args(argv)
    if args.replot:
        if not args.plot:
            p.error("--replot needs --plot PNG")
        with open(args.replot, encoding="utf-8") as f:
            plot(json.load(f), args.plot)
        return 0
    height, width = (int(v) for v in args.size.lower().split("x"))

    import numpy as np

    from clearer_tf import Genotype, latency
    from clearer_tf.genotype import from_config
    from clearer_tf.presets import get_preset

    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    config = get_preset("quick").supernet
    table_path = os.path.join(out, "latency_table.json")
    if not os.path.isfile(table_path):
        latency.save_table(latency.measure_table(config, height, width, ("float32",), args.threads, args.runs,
                                                 rounds=args.rounds), table_path)
    table = latency.load_table(table_path, config)
    if list(table["size"]) != [height, width] or table.get("threads") != args.threads:
        sys.exit(f"{table_path}: measured at {table['size']} with {table.get('threads')} threads, "
                 f"not {[height, width]} with {args.threads}; use another --out")
    fastest, slowest = latency.range_ms(table, config.columns)
    common = ["--task", "denoise", "--preset", "quick", "--sigma", str(args.sigma)]
    size = ["--latency-size", f"{height}x{width}", "--latency-table", table_path]
    if args.threads:
        size += ["--latency-threads", str(args.threads)]

    settings = [(f"lambda_comp {lam:g}", f"lambda{lam:g}", ["--cost", "latency", "--lambda-comp", str(lam)])
                for lam in args.lambdas]
    budgets_ms = [(b, fastest + b * (slowest - fastest)) for b in args.budgets]
    settings += [(f"budget {b:g} ({ms:.1f} ms)", f"budget{b:g}",
                  ["--lambda-comp", "0", "--latency-budget-ms", f"{ms:.3f}"]) for b, ms in budgets_ms]
    genotypes = {}  # short string -> (genotype, [labels])
    for label, slug, flags in settings:
        folder = os.path.join(out, f"search-{slug}")
        if not os.path.isfile(os.path.join(folder, "genotype.json")):
            cli("train_scripts/search.py", *common, *size, *flags, "--out", folder, "--overwrite")
        genotype = Genotype.load(os.path.join(folder, "genotype.json"))
        genotypes.setdefault(genotype.short(), (genotype, []))[1].append(label)
    for label, kind in (("all parallel", "parallel"), ("all fusion", "fusion")):
        genotype = from_config(config, [[kind] * n for n in config.columns])
        genotypes.setdefault(genotype.short(), (genotype, []))[1].append(label)

    rows, runners = [], {}
    preset_train = get_preset("quick").train
    iterations = args.train_iterations or preset_train.iterations
    patch = args.train_patch_size or preset_train.patch_size
    train_flags = ["--iterations", str(iterations), "--patch-size", str(patch)]
    suffix = f"-it{iterations}" + (f"-p{patch}" if patch != preset_train.patch_size else "")  # folder name
    if args.validate_every:
        train_flags += ["--validate-every", str(args.validate_every)]
    if args.train_data:
        train_flags += ["--data", os.path.abspath(args.train_data)]
        suffix += "-" + "-".join(os.path.abspath(args.train_data).split(os.sep)[-2:])
    for short, (genotype, labels) in genotypes.items():
        name = f"train-{short.replace(' / ', '_').replace(' ', '')}{suffix}"
        psnrs = []
        for seed in args.seeds:
            folder = os.path.join(out, f"{name}-seed{seed}")
            os.makedirs(folder, exist_ok=True)
            genotype.save(os.path.join(folder, "input_genotype.json"))
            if not os.path.isfile(os.path.join(folder, "train_summary.json")):
                cli("train_scripts/train.py", "--genotype", os.path.join(folder, "input_genotype.json"),
                    *common[2:], *train_flags, "--seed", str(seed), "--out", folder, "--overwrite")
            with open(os.path.join(folder, "train_summary.json"), encoding="utf-8") as f:
                validation = json.load(f)["validation"]
            psnrs.append(round(validation["best_psnr"], 3))
        weights = os.path.join(out, f"{name}-seed{args.seeds[0]}", "best.weights.h5")
        runners[short], discrepancy = latency.exported_runner(genotype, height, width, "float32", args.threads,
                                                              weights)
        rows.append({"genotype": short, "settings": labels, "val_psnr_per_seed": psnrs,
                     "val_psnr": round(float(np.mean(psnrs)), 3),
                     "input_psnr": round(validation["input_psnr"], 3),
                     "parts_ms": round(latency.parts_ms(table, genotype.cells), 3),
                     "predicted_ms": round(latency.predict_ms(table, genotype.cells), 3),
                     "litert_discrepancy": float(f"{discrepancy:.3g}"),
                     "measured_from": f"{name}-seed{args.seeds[0]}/best.weights.h5, exported and converted"})
    # all networks timed in turn, --rounds times over: a slower or faster moment of the machine
    # falls on all of them, not on one
    from clearer_tf import litert

    timings = litert.time_runners(runners, args.runs, 3, args.rounds)
    for row in rows:
        measured = timings[row["genotype"]]
        row.update(measured_ms=round(measured["median_ms"], 3),
                   measured_spread_ms=[round(measured["min_ms"], 3), round(measured["max_ms"], 3)])
        print(f"| `{row['genotype']}` | {', '.join(row['settings'])} | {row['predicted_ms']} | {row['measured_ms']} | "
              f"{100 * (row['predicted_ms'] / row['measured_ms'] - 1):+.1f} % | "
              f"{row['val_psnr']} ({', '.join(map(str, row['val_psnr_per_seed']))}) |", flush=True)

    result = {"command": "python bench/latency_sweep.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "date": datetime.date.today().isoformat(), "device": table["device"], "threads": args.threads,
              "size": [height, width], "sigma": args.sigma, "seeds": args.seeds,
              "train_iterations": iterations, "train_patch_size": patch,
              "train_data": args.train_data or "bundled sample (12 images)",
              "predicted_range_ms": [round(fastest, 3), round(slowest, 3)],
              "calibration": table["precisions"]["float32"].get("calibration"), "rows": rows}
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
    if args.plot:
        plot(result, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
