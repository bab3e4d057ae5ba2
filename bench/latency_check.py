#!/usr/bin/env python
"""Predicted (sum of the latency table's parts) against measured LiteRT latency of whole networks.

    KERAS_BACKEND=tensorflow python bench/latency_check.py --preset paper --size 512x512 \
        --threads 2 --json docs/runs/latency_check_cpu.json

Measures the latency table of the preset's supernet (`clearer_tf.latency.measure_table`), then
times whole discrete networks at the same size, threads and precision: all-parallel,
all-fusion, the paper's 8F/4P genotype (paper preset only) and two random genotypes. Prints a
Markdown table (predicted, measured, error) per precision; the JSON holds the table and rows.
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PAPER_8F4P = "F P P F / F F F F / P F F P"


def genotypes(config, seed=0):
    import numpy as np

    from clearer_tf.genotype import Genotype

    kw = dict(image_channels=config.image_channels, base_width=config.base_width,
              stem_planes=config.stem_planes, stem_blocks=config.stem_blocks, residual=config.residual)
    shape = " / ".join(" ".join("{}" for _ in range(n)) for n in config.columns)
    rng = np.random.default_rng(seed)
    out = {"all parallel": Genotype.from_string(shape.format(*["P"] * sum(config.columns)), **kw),
           "all fusion": Genotype.from_string(shape.format(*["F"] * sum(config.columns)), **kw)}
    if tuple(config.columns) == (4, 4, 4):
        out["paper 8F/4P"] = Genotype.from_string(PAPER_8F4P, **kw)
    for i in range(2):
        out[f"random {i + 1}"] = Genotype.from_string(
            shape.format(*rng.choice(["P", "F"], size=sum(config.columns))), **kw)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", choices=["paper", "quick"], default="paper")
    p.add_argument("--size", default="512x512", help="HxW (default 512x512)")
    p.add_argument("--threads", type=int, default=None, help="LiteRT threads (default: LiteRT's)")
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--precisions", nargs="+", default=["float32", "int8"])
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args(argv)
    try:
        height, width = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        p.error(f"--size must be HxW, got {args.size!r}")

    from clearer_tf import latency
    from clearer_tf.network import build_network
    from clearer_tf.presets import get_preset

    config = get_preset(args.preset).supernet
    table = latency.measure_table(config, height, width, tuple(args.precisions), args.threads, args.runs)
    rows = []
    for label, genotype in genotypes(config).items():
        model = build_network(genotype)
        for precision in args.precisions:
            measured = latency.measure_network(model, height, width, precision, args.threads, args.runs)
            predicted = latency.predict_ms(table, genotype.cells, precision)
            rows.append({"genotype": label, "cells": genotype.short(), "precision": precision,
                         "predicted_ms": round(predicted, 2), "measured_ms": round(measured["median_ms"], 2),
                         "error": round(predicted / measured["median_ms"] - 1, 4)})
    for precision in args.precisions:
        print(f"\n{precision}, {height}x{width}, threads {args.threads}, median of {args.runs}:\n")
        print("| genotype | predicted ms | measured ms | error |\n|---|---|---|---|")
        for r in rows:
            if r["precision"] == precision:
                print(f"| {r['genotype']} (`{r['cells']}`) | {r['predicted_ms']} | {r['measured_ms']} | "
                      f"{100 * r['error']:+.1f} % |")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"command": " ".join(sys.argv), "table": table, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
