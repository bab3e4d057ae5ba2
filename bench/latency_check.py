#!/usr/bin/env python
"""Predicted (sum of the latency table's parts) against measured LiteRT latency of whole networks.

    KERAS_BACKEND=tensorflow python bench/latency_check.py --preset paper --size 512x512 \
        --threads 2 --json docs/runs/latency_check_cpu.json

Measures the latency table of the preset's supernet (`clearer_tf.latency.measure_table`, with
its calibration on the all-parallel and all-fusion networks), then times whole discrete
networks at the same size, threads and precision: the paper's 8F/4P genotype (paper preset
only) and two random genotypes. Prints a Markdown table per precision (sum of parts, calibrated
prediction, measured, errors); the JSON holds the table and rows. `--report FILE` prints the
tables of an earlier JSON again (and fits the calibration if the file predates it).
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
    """Adds the calibrated prediction to each row (the table's calibration, or one fitted now on
    the all-parallel and all-fusion rows, as `latency.measure_table` does) and prints the tables."""
    from clearer_tf import latency

    for precision, entry in table["precisions"].items():
        mine = [r for r in rows if r["precision"] == precision]
        ends = [r for r in mine if r["genotype"] in ("all parallel", "all fusion")]
        fit = latency.calibrate([r["parts_ms"] for r in ends], [r["measured_ms"] for r in ends])
        entry["calibration"] = {**entry.get("calibration", {}), **fit}  # the current rule on the same timings
        entry["calibration"].setdefault("networks", [{"cells": r["cells"], "parts_ms": r["parts_ms"],
                                                      "measured_ms": r["measured_ms"]} for r in ends])
        scale, offset = fit["scale"], fit["offset"]
        for r in mine:
            r["predicted_ms"] = round(scale * r["parts_ms"] + offset, 2)
            r["error_parts"] = round(r["parts_ms"] / r["measured_ms"] - 1, 4)
            r["error"] = round(r["predicted_ms"] / r["measured_ms"] - 1, 4)
        h, w = table["size"]
        print(f"\n{precision}, {h}x{w}, threads {table['threads']}, median of {table['runs']}; "
              f"calibration measured = {scale:.4f} x parts + {offset:.2f} ms (fitted on the all-parallel and "
              f"all-fusion networks; {'applied' if fit['applied'] else 'not applied'}: the sums miss those two by "
              f"at most {100 * fit['max_sum_error']:.1f} %):\n")
        print("| genotype | sum of parts ms | error | calibrated ms | measured ms | error |\n|---|---|---|---|---|---|")
        for r in mine:
            print(f"| {r['genotype']} (`{r['cells']}`) | {r['parts_ms']} | {100 * r['error_parts']:+.1f} % | "
                  f"{r['predicted_ms']} | {r['measured_ms']} | {100 * r['error']:+.1f} % |")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", choices=["paper", "quick"], default="paper")
    p.add_argument("--size", default="512x512", help="HxW (default 512x512)")
    p.add_argument("--threads", type=int, default=None, help="LiteRT threads (default: LiteRT's)")
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--precisions", nargs="+", default=["float32", "int8"])
    p.add_argument("--json", metavar="FILE")
    p.add_argument("--report", metavar="FILE", help="print (and complete) the tables of an earlier --json, no timing")
    args = p.parse_args(argv)
    if args.report:
        with open(args.report, encoding="utf-8") as f:
            result = json.load(f)
        for r in result["rows"]:  # files written before the calibration: "predicted_ms" was the sum of parts
            r.setdefault("parts_ms", r["predicted_ms"])
        report(result["table"], result["rows"])
        with open(args.report, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
        return 0
    try:
        height, width = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        p.error(f"--size must be HxW, got {args.size!r}")

    from clearer_tf import latency
    from clearer_tf.network import build_network
    from clearer_tf.presets import get_preset

    def keep(table, rows):  # written after every timing: a long run that is stopped keeps what it measured
        if args.json:
            with open(args.json + ".partial", "w", encoding="utf-8") as f:
                json.dump({"command": " ".join(sys.argv), "table": table, "rows": rows}, f, indent=2)

    def progress(precision, name, ms):
        print(f"{precision} {name}: {ms:.2f} ms", file=sys.stderr, flush=True)

    config = get_preset(args.preset).supernet
    table = latency.measure_table(config, height, width, tuple(args.precisions), args.threads, args.runs,
                                  progress=progress)
    rows = []
    keep(table, rows)
    known = {precision: {tuple(map(tuple, n["cells"])): n["measured_ms"]  # the calibration's own timings
                         for n in table["precisions"][precision]["calibration"]["networks"]}
             for precision in args.precisions}
    for label, genotype in genotypes(config).items():
        for precision in args.precisions:
            measured = known[precision].get(tuple(map(tuple, genotype.cells)))
            if measured is None:
                measured = latency.measure_network(build_network(genotype), height, width, precision, args.threads,
                                                   args.runs)["median_ms"]
            rows.append({"genotype": label, "cells": genotype.short(), "precision": precision,
                         "parts_ms": round(latency.parts_ms(table, genotype.cells, precision), 2),
                         "measured_ms": round(measured, 2)})
            progress(precision, label, measured)
            keep(table, rows)
    report(table, rows)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"command": " ".join(sys.argv), "table": table, "rows": rows}, f, indent=2)
        os.remove(args.json + ".partial")
    return 0


if __name__ == "__main__":
    sys.exit(main())
