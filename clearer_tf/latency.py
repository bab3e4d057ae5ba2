"""Measured LiteRT latency of the network's parts, for a latency-aware search (L_comp, Eq. 5).

A latency table holds the median LiteRT (TFLite) inference time of every part of the
multi-scale backbone at batch 1 and one input size: the fixed parts (stem, the transition
before each cell, the head) and both candidates of each cell (all columns of a cell have the
same widths, so one measurement serves them all). The predicted latency of a genotype is the
sum of its parts, corrected to what a user ships: the all-parallel and all-fusion networks are
also exported as SavedModels (`export.py`: padding to a multiple of 2**cells, input checks),
converted and timed, and an offset plus a term per fusion column is fitted to them
(`predict_ms`, `calibrate`);
`column_costs` gives L_comp's normalised costs (Eq. 5) and `derive_within_budget` the most
probable genotype within a latency budget.

Each part is converted on its own the way `export.py` converts a network (through a SavedModel,
`clearer_tf.litert`; float32, float16 or int8 dynamic-range), run once on random inputs and
refused unless its output is finite and equal to Keras' within the precision's tolerance, then
timed with `ai_edge_litert`'s interpreter: median of `runs` invocations after `warmup`.
Building a table needs the TensorFlow backend (as export does); reading one needs nothing, and
`load_table` refuses a table that cannot be used (one line: non-finite, zero or negative
timings, missing parts, another supernet, a size that is not a multiple of 2**cells).
To time on a phone instead: `write_part_models` writes the same `.tflite` files, time each
with LiteRT's `benchmark_model` tool and put the medians into the JSON (`parts`, `cells`).
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform

import numpy as np

from clearer_tf import device, files, litert, modules
from clearer_tf.presets import SupernetConfig
from clearer_tf.quiet import quietly

FORMAT = 2  # 1: parts converted with `from_concrete_functions`, NaN output (issue 23)
PRECISIONS = litert.KINDS
CANDIDATES = ("parallel", "fusion")


class LatencyError(ValueError):
    """Bad latency input (table, budget): the CLIs turn it into one line."""


def _require_tensorflow_backend():
    import keras

    if keras.backend.backend() != "tensorflow":
        raise RuntimeError("building a latency table needs KERAS_BACKEND=tensorflow (TFLite conversion); "
                           "pass an existing table (--latency-table) on other backends")


def part_models(config: SupernetConfig, height, width):
    """`{name: keras.Model}` for the fixed parts and `(cell, candidate)` modules at batch 1."""
    import keras

    def inputs(widths, tag):
        return [keras.Input((height // 2**i, width // 2**i, c), batch_size=1, name=f"{tag}_in{i}")
                for i, c in enumerate(widths)]

    models = {}
    image = keras.Input((height, width, config.image_channels), batch_size=1, name="image")
    models["stem"] = keras.Model(image, modules.Stem(config.stem_planes, config.stem_blocks)(image))
    in_widths = [config.stem_planes * modules.Bottleneck.expansion]
    for cell in range(len(config.columns)):
        out_widths = config.widths()[: cell + 2]
        xs = inputs(in_widths, f"t{cell}")
        models[f"transition{cell}"] = keras.Model(xs, modules.TransitionModule(in_widths, out_widths)(xs))
        for kind in CANDIDATES:
            xs = inputs(out_widths, f"c{cell}{kind[0]}")
            models[(cell, kind)] = keras.Model(xs, modules.MODULES[kind](out_widths)(xs))
        in_widths = out_widths
    xs = inputs(in_widths, "head")
    y = modules.FusionModule(in_widths, outputs=1)(xs)[0]
    models["head"] = keras.Model(xs, modules.conv2d(config.image_channels, 1)(y))
    return models


def to_tflite(model, precision="float32") -> bytes:
    """A Keras model with fixed input shapes as a `.tflite` flatbuffer (`litert.keras_to_tflite`)."""
    check_precision(precision)
    return litert.keras_to_tflite(model, precision)


def check_precision(precision):
    if precision not in PRECISIONS:
        raise ValueError(f"--latency-precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")


def part_label(name) -> str:
    return f"cell{name[0]}_{name[1]}" if isinstance(name, tuple) else name


def measure_table(config: SupernetConfig, height=512, width=512, precisions=("float32",), threads=None,
                  runs=20, warmup=3, progress=None, calibrate_on=True, statistic="median", rounds=1) -> dict:
    """Times every part (see the module docstring) in each of `precisions` and returns the
    table as a dict.

    Every part (and, with `calibrate_on`, the all-parallel and all-fusion networks, for
    `calibrate`) is converted and checked against Keras first (the largest discrepancy is kept
    as `max_discrepancy`), then all are timed in turn, `rounds` times over (`runs` invocations
    each, after `warmup`): interleaved rounds spread other work on the machine over all of them.
    `statistic`: the `median` of all runs, or the `min` (least sensitive to other work).
    """
    _require_tensorflow_backend()
    from clearer_tf import genotype

    import ai_edge_litert
    import keras
    import tensorflow as tf

    for precision in precisions:
        check_precision(precision)
    if statistic not in ("median", "min"):
        raise ValueError(f"statistic must be 'median' or 'min', got {statistic!r}")
    if runs < 20 or rounds < 1 or height % config.multiple or width % config.multiple:
        raise ValueError(f"latency table: runs >= 20, rounds >= 1 and a size that is a multiple of "
                         f"{config.multiple} are needed, got runs={runs}, rounds={rounds}, {height}x{width}")
    models = part_models(config, height, width)
    ends = {kind: [[kind] * n for n in config.columns] for kind in CANDIDATES}  # the two ends of the range
    table = {
        "format": FORMAT, "kind": "clearer-latency-table", "size": [height, width], "batch": 1,
        "threads": threads, "runs": runs * rounds, "rounds": rounds, "warmup": warmup, "statistic": statistic,
        "device": device.cpu_model(), "machine": platform.machine(), "cpu_count": os.cpu_count(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__,
                     "ai_edge_litert": getattr(ai_edge_litert, "__version__", "unknown")},
        "supernet": config.to_dict(), "conversion": "saved_model", "precisions": {},
    }
    for precision in precisions:
        runners, worst = {}, 0.0
        for name, model in models.items():
            runners[name], error = litert.checked(to_tflite(model, precision), model, part_label(name), precision,
                                                  threads)
            worst = max(worst, error)
        if calibrate_on:  # the two ends as exported: what a prediction is compared with
            for kind, layout in ends.items():
                runners[f"all {kind}"], _ = exported_runner(genotype.from_config(config, layout), height, width,
                                                            precision, threads)
        timings = litert.time_runners(runners, runs, warmup, rounds)
        parts, cells = {}, [dict() for _ in config.columns]
        for name, timing in timings.items():
            ms = timing[f"{statistic}_ms"]
            if isinstance(name, tuple):
                cells[name[0]][name[1]] = round(ms, 4)
            elif not name.startswith("all "):
                parts[name] = round(ms, 4)
            if progress:
                progress(precision, part_label(name), ms)
        entry = table["precisions"][precision] = {"parts": parts, "cells": cells,
                                                  "max_discrepancy": float(f"{worst:.3g}")}
        if calibrate_on:
            networks = [{"cells": layout, "parts_ms": round(parts_ms(table, layout, precision), 4),
                         "measured_ms": round(timings[f"all {kind}"][f"{statistic}_ms"], 4)}
                        for kind, layout in ends.items()]
            fit = calibrate([n["parts_ms"] for n in networks], [n["measured_ms"] for n in networks],
                            [fusion_columns(n["cells"]) for n in networks])
            entry["calibration"] = {**fit, "networks": networks}
    return table


def exported_runner(genotype, height, width, precision="float32", threads=None, weights=None):
    """`(litert.Runner, discrepancy)` of `genotype` exported as a user ships it
    (`export.export_saved_model`: padding, input checks; `weights`, default random ones) and
    converted as `export.py` converts it, checked against the Keras network at batch 1 of
    `height` x `width` first."""
    import tempfile

    from clearer_tf import export
    from clearer_tf.network import build_network

    network = build_network(genotype)
    with tempfile.TemporaryDirectory(prefix="clearer-latency-") as tmp:
        if weights is None:
            weights = os.path.join(tmp, "random.weights.h5")
            network.save_weights(weights)
        else:
            files.load_weights(network, weights)
        with quietly():
            saved = export.export_saved_model(genotype, weights, tmp, "timed")
        flatbuffer = litert.saved_model_to_tflite(saved, precision)
    shape = (1, height, width, network.inputs[0].shape[-1])
    return litert.checked(flatbuffer, network, f"exported {genotype.short()}", precision, threads, [shape])


def measure_exported(genotype, height, width, precision="float32", threads=None, runs=20, warmup=3,
                     weights=None) -> dict:
    """LiteRT latency of `genotype` exported and converted (`exported_runner`): what
    `predict_ms` predicts. `{"median_ms", "min_ms", "max_ms", "discrepancy"}`."""
    _require_tensorflow_backend()
    runner, error = exported_runner(genotype, height, width, precision, threads, weights)
    return {**litert.time_runner(runner, runs, warmup), "discrepancy": error}


def save_table(table, path):
    files.write_json(path, table)


def load_table(path, config: SupernetConfig | None = None, precision="float32") -> dict:
    """Reads and checks a table (`check_table`); with `config`, its supernet must match."""
    try:
        with open(path, encoding="utf-8") as f:
            table = json.load(f)
    except (OSError, ValueError) as e:  # ValueError: not JSON, or not text at all
        raise LatencyError(f"latency table {path}: cannot read it as JSON ({type(e).__name__}: {e})") from None
    check_table(table, path, config, precision)
    return table


def _positive_ms(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def check_table(table, path, config: SupernetConfig | None = None, precision="float32"):
    """LatencyError (one line naming the file and the entry) unless `table` can be used: a
    clearer table of this `FORMAT`, measured for `config`'s supernet (if given), with a size
    that is a multiple of 2**cells and, for `precision`, every part and every cell's two
    candidates timed as a finite number of milliseconds > 0."""
    def fail(what):
        raise LatencyError(f"latency table {path}: {what}")

    if not isinstance(table, dict) or table.get("kind") != "clearer-latency-table":
        fail(f"not a clearer latency table (format {FORMAT})")
    if table.get("format") == 1:
        fail("format 1 was timed on models converted with from_concrete_functions, whose output was NaN; "
             "measure it again (delete it, or bench/latency_check.py)")
    if table.get("format") != FORMAT:
        fail(f"format {table.get('format')!r}, this version reads format {FORMAT}")
    supernet = table.get("supernet")
    if not isinstance(supernet, dict) or not isinstance(supernet.get("columns"), list) or not supernet["columns"]:
        fail("no supernet (its 'columns')")
    if config is not None:
        expected = json.loads(json.dumps(config.to_dict()))  # tuples as JSON keeps them
        diff = [f"{k}={supernet.get(k)!r}, not {expected[k]!r}" for k in sorted(expected)
                if supernet.get(k) != expected[k]]
        if diff:
            fail(f"measured for another supernet ({'; '.join(diff)})")
    cells = len(supernet["columns"])
    size = table.get("size")
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)):
        fail(f"'size' must be [height, width], got {size!r}")
    if any(v % 2**cells for v in size):
        fail(f"size {size[0]}x{size[1]} is not a multiple of {2**cells} (2**cells, {cells} cells)")
    precisions = table.get("precisions")
    if not isinstance(precisions, dict) or precision not in precisions:
        have = ", ".join(precisions) if isinstance(precisions, dict) else ""
        fail(f"no {precision!r} timings (has {have or 'none'})")
    entry = precisions[precision]
    parts = entry.get("parts") if isinstance(entry, dict) else None
    if not isinstance(parts, dict):
        fail(f"{precision}: no 'parts'")
    for name in ["stem", *(f"transition{i}" for i in range(cells)), "head"]:
        if name not in parts:
            fail(f"{precision}: part {name!r} is missing")
        if not _positive_ms(parts[name]):
            fail(f"{precision}: part {name!r} is {parts[name]!r}, not a finite time > 0 ms")
    timed = entry.get("cells")
    if not isinstance(timed, list) or len(timed) != cells:
        fail(f"{precision}: {len(timed) if isinstance(timed, list) else 'no'} cells timed, the supernet has {cells}")
    for i, cell in enumerate(timed):
        for kind in CANDIDATES:
            value = cell.get(kind) if isinstance(cell, dict) else None
            if not _positive_ms(value):
                fail(f"{precision}: cell {i} {kind!r} is {value!r}, not a finite time > 0 ms")
    fit = entry.get("calibration")
    if fit is not None and not (isinstance(fit, dict) and all(
            isinstance(fit.get(k), (int, float)) and math.isfinite(fit[k]) for k in ("offset", "fusion_ms"))):
        fail(f"{precision}: its calibration needs finite 'offset' and 'fusion_ms'")
    low, _ = range_ms(table, supernet["columns"], precision)
    if not low > 0:
        fail(f"{precision}: its calibration predicts {low:.3g} ms for the fastest genotype, not > 0")


def fixed_ms(table, precision="float32") -> float:
    """Stem + transitions + head: the time every genotype pays."""
    return float(sum(table["precisions"][precision]["parts"].values()))


def calibration(table, precision="float32") -> tuple[float, float]:
    """`(offset_ms, fusion_ms)` of the table's calibration (`calibrate`), `(0, 0)` without one."""
    fit = table["precisions"][precision].get("calibration")
    return (float(fit["offset"]), float(fit["fusion_ms"])) if fit else (0.0, 0.0)


def fusion_columns(cells) -> int:
    return sum(kind == "fusion" for cell in cells for kind in cell)


def calibrate(parts_ms, measured_ms, fusion_counts) -> dict:
    """Least squares `measured = parts + offset + fusion_ms * (fusion columns)` over whole
    networks of known sum of parts and latency (on the all-parallel and all-fusion networks:
    exact, and linear in the number of fusion columns in between).

    Every genotype has the same number of parts, so what the sum of parts times differently
    from a whole exported network (each part's invocation, its inputs and outputs; the export's
    padding and input checks) is nearly one constant, the `offset`. Not quite: on 2 CPU cores
    (quick preset, 256x256) the sum was 4.9 % below the exported all-parallel network and 9.5 %
    below the all-fusion one, so fusion columns differ by their own term, `fusion_ms` per fusion
    column. `max_sum_error` is the largest `|parts / measured - 1|` of the networks.
    """
    x, y = np.asarray(parts_ms, np.float64), np.asarray(measured_ms, np.float64)
    features = np.stack([np.ones_like(x), np.asarray(fusion_counts, np.float64)], axis=1)
    (offset, fusion_ms), *_ = np.linalg.lstsq(features, y - x, rcond=None)
    return {"offset": round(float(offset), 6), "fusion_ms": round(float(fusion_ms), 6),
            "max_sum_error": round(float(np.max(np.abs(x / y - 1))), 4)}


def column_latency(table, columns, precision="float32") -> np.ndarray:
    """`(columns, 2)` latency in ms of (parallel, fusion) for each column, cell by cell."""
    cells = table["precisions"][precision]["cells"]
    return np.array([[cells[cell]["parallel"], cells[cell]["fusion"]]
                     for cell, n in enumerate(columns) for _ in range(n)], np.float64)


def column_costs(table, columns, precision="float32") -> np.ndarray:
    """Eq. 5's C: column latencies normalised by the total over all candidate modules."""
    lat = column_latency(table, columns, precision)
    return lat / lat.sum()


def predicted_columns(table, columns, precision="float32") -> tuple[np.ndarray, float]:
    """`(latency, fixed)`: each column's (parallel, fusion) latency and the fixed time, with the
    calibration in them (a genotype's prediction is `fixed` plus its columns' latencies)."""
    offset, fusion = calibration(table, precision)
    return column_latency(table, columns, precision) + [0.0, fusion], fixed_ms(table, precision) + offset


def range_ms(table, columns, precision="float32") -> tuple[float, float]:
    """Predicted latency of the fastest and of the slowest genotype (the cheaper, the dearer
    candidate in every column)."""
    lat, fixed = predicted_columns(table, columns, precision)
    return fixed + lat.min(axis=1).sum(), fixed + lat.max(axis=1).sum()


def fastest_ms(table, columns, precision="float32") -> float:
    return range_ms(table, columns, precision)[0]


def parts_ms(table, cells, precision="float32") -> float:
    """Sum of a genotype's parts (`cells`: per cell, "parallel"/"fusion" per column)."""
    lat = column_latency(table, [len(c) for c in cells], precision)
    choice = [CANDIDATES.index(kind) for cell in cells for kind in cell]
    return fixed_ms(table, precision) + float(lat[np.arange(len(choice)), choice].sum())


def predict_ms(table, cells, precision="float32") -> float:
    """Predicted latency of a genotype: the sum of its parts, plus the table's calibration."""
    offset, fusion = calibration(table, precision)
    return parts_ms(table, cells, precision) + offset + fusion * fusion_columns(cells)


def choose_within_budget(weights, latency, budget_ms, fixed=0.0, max_columns=24):
    """The choice (0 parallel, 1 fusion per column) with the largest product of softmax
    weights among those whose `fixed + sum of chosen latencies <= budget_ms` (exact:
    all 2^columns choices are enumerated). Returns `(choice, predicted_ms)`."""
    weights, latency = np.asarray(weights, np.float64), np.asarray(latency, np.float64)
    n = len(weights)
    if n > max_columns:
        raise LatencyError(f"latency budget: {n} columns are too many to enumerate (at most {max_columns})")
    choices = (np.arange(2**n)[:, None] >> np.arange(n)[None, :]) & 1  # every genotype
    cols = np.arange(n)[None, :]
    total = fixed + latency[cols, choices].sum(axis=1)
    score = np.log(np.clip(weights, 1e-300, None))[cols, choices].sum(axis=1)
    feasible = total <= budget_ms
    if not feasible.any():
        raise LatencyError(f"latency budget {budget_ms} ms: no genotype fits (the fastest is predicted at "
                         f"{total.min():.2f} ms)")
    best = np.flatnonzero(feasible)[np.argmax(score[feasible])]
    return choices[best].tolist(), float(total[best])


def write_part_models(config: SupernetConfig, out_dir, height=512, width=512, precision="float32"):
    """The `.tflite` file of every part (to time them on another device), each checked against
    Keras first (`litert.checked`); returns the paths."""
    _require_tensorflow_backend()
    paths = []
    for name, model in part_models(config, height, width).items():
        flatbuffer = to_tflite(model, precision)
        litert.checked(flatbuffer, model, part_label(name), precision)
        path = os.path.join(os.fspath(out_dir), f"{part_label(name)}-{precision}.tflite")
        files.write_bytes(path, flatbuffer)
        paths.append(path)
    return paths


def derive_within_budget(weights, columns, table, budget_ms=None, precision="float32"):
    """`(cells, report)`: the argmax genotype, or, when a budget is given and the argmax's
    predicted latency exceeds it, the most probable genotype within it (`choose_within_budget`).
    `report` is what `genotype.json` records (predicted latency, budget, which and why)."""
    weights = np.asarray(weights, np.float64)
    lat, fixed = predicted_columns(table, columns, precision)
    argmax = weights.argmax(axis=1)
    argmax_ms = fixed + float(lat[np.arange(len(argmax)), argmax].sum())
    report = {"latency_precision": precision, "latency_size": table.get("size"),
              "argmax_predicted_latency_ms": round(argmax_ms, 4), "latency_budget_ms": budget_ms}
    choice, predicted, chosen = argmax.tolist(), argmax_ms, "argmax"
    if budget_ms is not None and argmax_ms > budget_ms:
        choice, predicted = choose_within_budget(weights, lat, budget_ms, fixed)
        chosen = (f"most probable within budget: the argmax genotype is predicted at {argmax_ms:.2f} ms "
                  f"> {budget_ms} ms")
    report.update(predicted_latency_ms=round(predicted, 4), chosen=chosen)
    flat = iter(choice)
    return [[CANDIDATES[next(flat)] for _ in range(n)] for n in columns], report


def check_search_options(config):
    """ValueError (one line, naming the flag) for unusable latency options of a `SearchConfig`."""
    if config.latency_precision not in PRECISIONS:
        raise ValueError(f"--latency-precision must be one of {', '.join(PRECISIONS)}, "
                         f"got {config.latency_precision!r}")
    size = tuple(config.latency_size)
    if len(size) != 2 or any(not isinstance(v, int) or v < 8 for v in size):
        raise ValueError(f"--latency-size must be HxW with H, W >= 8, got {config.latency_size!r}")
    if config.latency_threads is not None and config.latency_threads < 1:
        raise ValueError(f"--latency-threads must be >= 1, got {config.latency_threads}")
    if config.latency_budget_ms is not None and not config.latency_budget_ms > 0:
        raise ValueError(f"--latency-budget-ms must be > 0, got {config.latency_budget_ms}")
    if config.latency_table is not None:
        if not os.path.isfile(config.latency_table):
            raise ValueError(f"--latency-table {config.latency_table}: not found")
        load_table(config.latency_table, precision=config.latency_precision)  # its supernet: obtain_table


def uses_latency(config) -> bool:
    return config.cost == "latency" or config.latency_budget_ms is not None


def obtain_table(supernet_config: SupernetConfig, config, out_path) -> dict:
    """The search's latency table: `config.latency_table` if given (checked against the
    supernet), else measured now (TensorFlow backend; on another backend in a subprocess that
    uses it) and written to `out_path`, which a resumed search reads back."""
    import subprocess
    import sys

    path = config.latency_table
    if path is None and os.path.isfile(out_path):  # a resumed run's own table, if taken the same way
        kept = load_table(out_path, supernet_config, config.latency_precision)
        same = kept.get("size") == list(config.latency_size) and kept.get("threads") == config.latency_threads
        path = out_path if same else None
    if path is None:
        import keras

        height, width = config.latency_size
        if keras.backend.backend() == "tensorflow":
            save_table(measure_table(supernet_config, height, width, (config.latency_precision,),
                                     config.latency_threads), out_path)
        else:
            code = ("import json, sys; from clearer_tf import latency; from clearer_tf.presets import SupernetConfig; "
                    "c = SupernetConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in json.loads(sys.argv[1]).items()}); "
                    "latency.save_table(latency.measure_table(c, int(sys.argv[2]), int(sys.argv[3]), (sys.argv[6],), "
                    "threads=json.loads(sys.argv[4])), sys.argv[5])")
            subprocess.run([sys.executable, "-c", code, json.dumps(supernet_config.to_dict()), str(height), str(width),
                            json.dumps(config.latency_threads), os.fspath(out_path), config.latency_precision], check=True,
                           env={**os.environ, "KERAS_BACKEND": "tensorflow"})
        path = out_path
    table = load_table(path, supernet_config, config.latency_precision)
    if os.path.abspath(path) != os.path.abspath(out_path):
        save_table(table, out_path)  # the run folder keeps the table it used
    return table
