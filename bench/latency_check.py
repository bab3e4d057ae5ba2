#!/usr/bin/env python
"""Predicted (sum of the latency table's parts) against measured LiteRT latency of whole networks.

    KERAS_BACKEND=tensorflow python bench/latency_check.py --preset paper --size 512x512 \
        --threads 2 --json docs/runs/latency_check_cpu.json

Measures the latency table of the preset's supernet (`clearer_tf.latency.measure_table`, with
its calibration on the all-parallel and all-fusion networks), then times whole discrete
networks exported as SavedModels (as a user ships them) and converted, at the same size,
threads and precision, after the table: the two ends again, the paper's 8F/4P genotype (paper
preset only) and two random genotypes. Every model is checked against Keras before it is timed.
Prints a Markdown table per precision (sum of parts, calibrated prediction, measured, errors);
the JSON holds the table and rows. `--report FILE` prints the tables of an earlier JSON again.
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PAPER_8F4P = "F P P F / F F F F / P F F P"


def genotypes(config, seed=0):
    import numpy as np

    from clearer_tf.genotype import Genotype, from_config

    def layout(kinds):  # one module per column, cell by cell
        kinds = iter(kinds)
        return [[next(kinds) for _ in range(n)] for n in config.columns]

    total = sum(config.columns)
    rng = np.random.default_rng(seed)
    out = {"all parallel": from_config(config, layout(["parallel"] * total)),
           "all fusion": from_config(config, layout(["fusion"] * total))}
    if tuple(config.columns) == (4, 4, 4):
        out["paper 8F/4P"] = from_config(config, Genotype.from_string(PAPER_8F4P).cells)
    names = {"P": "parallel", "F": "fusion"}
    for i in range(2):
        out[f"random {i + 1}"] = from_config(config, layout(names[k] for k in rng.choice(["P", "F"], size=total)))
    return out


def report(table, rows):
    """Prints, per precision, each genotype's sum of parts, calibrated prediction and measured latency."""
    for precision, entry in table["precisions"].items():
        fit = entry["calibration"]
        h, w = table["size"]
        print(f"\n{precision}, {h}x{w}, threads {table['threads']}, {table['statistic']} of {table['runs']} runs "
              f"({table.get('rounds', 1)} interleaved rounds); calibration: sum of parts {fit['offset']:+.2f} ms "
              f"{fit['fusion_ms']:+.3f} ms per fusion column (fitted on the all-parallel and all-fusion networks, "
              f"whose sums of parts missed by up to {100 * fit['max_sum_error']:.1f} %); largest LiteRT-Keras "
              f"discrepancy of a part {entry['max_discrepancy']:.1e}:\n")
        print("| genotype | sum of parts ms | error | predicted ms | measured ms | error |\n|---|---|---|---|---|---|")
        for r in (r for r in rows if r["precision"] == precision):
            print(f"| {r['genotype']} (`{r['cells']}`) | {r['parts_ms']} | {100 * r['error_parts']:+.1f} % | "
                  f"{r['predicted_ms']} | {r['measured_ms']} | {100 * r['error']:+.1f} % |")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", choices=["paper", "quick"], default="paper")
    p.add_argument("--size", default="512x512", help="HxW (default 512x512)")
    p.add_argument("--threads", type=int, default=None, help="LiteRT threads (default: LiteRT's)")
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds of --runs for the table (default 3)")
    p.add_argument("--precisions", nargs="+", default=["float32", "int8"])
    p.add_argument("--json", metavar="FILE")
    p.add_argument("--report", metavar="FILE", help="print (and complete) the tables of an earlier --json, no timing")
    args = p.parse_args(argv)
    if args.report:
        with open(args.report, encoding="utf-8") as f:
            result = json.load(f)
        report(result["table"], result["rows"])
        return 0
    try:
        height, width = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        p.error(f"--size must be HxW, got {args.size!r}")
    if args.threads is not None and args.threads < 1:
        p.error(f"--threads must be >= 1, got {args.threads}")
    if args.runs < 20 or args.rounds < 1:
        p.error(f"--runs must be >= 20 and --rounds >= 1, got {args.runs} and {args.rounds}")
    if args.json and not os.path.isdir(os.path.dirname(os.path.abspath(args.json))):
        p.error(f"--json {args.json}: its folder does not exist")

    from clearer_tf import latency
    from clearer_tf.presets import get_preset

    def keep(table, rows):  # written after every timing: a long run that is stopped keeps what it measured
        if args.json:
            with open(args.json + ".partial", "w", encoding="utf-8") as f:
                json.dump({"command": " ".join(sys.argv), "table": table, "rows": rows}, f, indent=2)

    def progress(precision, name, ms):
        print(f"{precision} {name}: {ms:.2f} ms", file=sys.stderr, flush=True)

    config = get_preset(args.preset).supernet
    table = latency.measure_table(config, height, width, tuple(args.precisions), args.threads, args.runs,
                                  progress=progress, rounds=args.rounds)
    rows = []
    keep(table, rows)
    for label, genotype in genotypes(config).items():  # the two ends timed again: the calibration's own check
        for precision in args.precisions:
            measured = latency.measure_exported(genotype, height, width, precision, args.threads, args.runs)
            parts, predicted = latency.parts_ms(table, genotype.cells, precision), latency.predict_ms(
                table, genotype.cells, precision)
            rows.append({"genotype": label, "cells": genotype.short(), "precision": precision,
                         "parts_ms": round(parts, 2), "predicted_ms": round(predicted, 2),
                         "measured_ms": round(measured["median_ms"], 2),
                         "error_parts": round(parts / measured["median_ms"] - 1, 4),
                         "error": round(predicted / measured["median_ms"] - 1, 4),
                         "discrepancy": float(f"{measured['discrepancy']:.3g}")})
            progress(precision, label, measured["median_ms"])
            keep(table, rows)
    report(table, rows)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"command": " ".join(sys.argv), "table": table, "rows": rows}, f, indent=2)
        os.remove(args.json + ".partial")
    return 0


if __name__ == "__main__":
    sys.exit(main())
