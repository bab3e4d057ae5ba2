"""Measured LiteRT latency of the network's parts, for a latency-aware search (L_comp, Eq. 5).

A latency table holds the median LiteRT (TFLite) inference time of every part of the
multi-scale backbone at batch 1 and one input size: the fixed parts (stem, the transition
before each cell, the head) and both candidates of each cell (all columns of a cell have the
same widths, so one measurement serves them all). The predicted latency of a genotype is the
sum of its parts; the all-parallel and all-fusion networks are also timed whole, and where a
sum misses its network by more than 15 % the prediction becomes `scale * sum + offset` fitted
on those two (`predict_ms`, `calibrate`);
`column_costs` gives L_comp's normalised costs (Eq. 5) and `derive_within_budget` the most
probable genotype within a latency budget.

Each part is converted on its own (`tf.lite.TFLiteConverter`, float32 or int8 dynamic-range)
and timed with `ai_edge_litert`'s interpreter: median of `runs` invocations after `warmup`.
Building a table needs the TensorFlow backend (as export does); reading one needs nothing.
To time on a phone instead: `write_part_models` writes the same `.tflite` files, time each
with LiteRT's `benchmark_model` tool and put the medians into the JSON (`parts`, `cells`).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import time

import numpy as np

from clearer_tf import device, files, modules
from clearer_tf.quiet import quietly
from clearer_tf.presets import SupernetConfig

FORMAT = 1
PRECISIONS = ("float32", "int8")
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
    """A Keras model with fixed input shapes as a `.tflite` flatbuffer."""
    import tensorflow as tf

    if precision not in PRECISIONS:
        raise ValueError(f"--latency-precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    specs = [tf.TensorSpec(t.shape, tf.float32) for t in model.inputs]
    fn = tf.function(lambda *xs: model(list(xs) if len(xs) > 1 else xs[0], training=False))
    converter = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function(*specs)], model)
    if precision == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]  # dynamic range: int8 weights
    with quietly():  # the converter's C++ log lines, unless --verbose
        return converter.convert()


def time_tflite(flatbuffer: bytes, threads=None, runs=20, warmup=3, seed=0):
    """Median and spread (ms) of `runs` LiteRT invocations on random inputs, after `warmup`."""
    from ai_edge_litert.interpreter import Interpreter

    with quietly():  # LiteRT announces its delegate on the first invocation
        interpreter = Interpreter(model_content=flatbuffer, num_threads=threads)
        interpreter.allocate_tensors()
        rng = np.random.default_rng(seed)
        for detail in interpreter.get_input_details():
            interpreter.set_tensor(detail["index"], rng.random(detail["shape"], dtype=np.float32))
        interpreter.invoke()
    times = []
    for i in range(warmup + runs):
        start = time.perf_counter()
        interpreter.invoke()
        if i >= warmup:
            times.append(1e3 * (time.perf_counter() - start))
    return {"median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times)}


def measure_table(config: SupernetConfig, height=512, width=512, precisions=PRECISIONS, threads=None,
                  runs=20, warmup=3, progress=None, calibrate_on=True) -> dict:
    """Times every part (see the module docstring) and returns the table as a dict.

    With `calibrate_on`, the all-parallel and all-fusion networks are also timed whole and
    `measured = scale * sum of parts + offset` is fitted to them (`calibrate`); `predict_ms`
    applies it where a sum of parts is off by more than 15 %.
    """
    _require_tensorflow_backend()
    from clearer_tf import genotype
    from clearer_tf.network import build_network

    import ai_edge_litert
    import keras
    import tensorflow as tf

    if runs < 20 or height % config.multiple or width % config.multiple:
        raise ValueError(f"latency table: runs >= 20 and a size that is a multiple of {config.multiple} "
                         f"are needed, got runs={runs}, {height}x{width}")
    models = part_models(config, height, width)
    table = {
        "format": FORMAT, "kind": "clearer-latency-table", "size": [height, width], "batch": 1,
        "threads": threads, "runs": runs, "warmup": warmup, "statistic": "median",
        "device": device.cpu_model(), "machine": platform.machine(), "cpu_count": os.cpu_count(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__,
                     "ai_edge_litert": getattr(ai_edge_litert, "__version__", "unknown")},
        "supernet": config.to_dict(), "precisions": {},
    }
    for precision in precisions:
        parts, cells = {}, [dict() for _ in config.columns]
        for name, model in models.items():
            ms = time_tflite(to_tflite(model, precision), threads, runs, warmup)["median_ms"]
            if isinstance(name, tuple):
                cells[name[0]][name[1]] = round(ms, 4)
            else:
                parts[name] = round(ms, 4)
            if progress:
                progress(precision, name, ms)
        table["precisions"][precision] = {"parts": parts, "cells": cells}
        if calibrate_on:
            networks = []
            for kind in CANDIDATES:  # all-parallel and all-fusion: the two ends of the range
                layout = [[kind] * n for n in config.columns]
                measured = measure_network(build_network(genotype.from_config(config, layout)), height, width, precision,
                                           threads, runs, warmup)["median_ms"]
                networks.append({"cells": layout, "parts_ms": round(parts_ms(table, layout, precision), 4),
                                 "measured_ms": round(measured, 4)})
                if progress:
                    progress(precision, f"all {kind}", measured)
            fit = calibrate([n["parts_ms"] for n in networks], [n["measured_ms"] for n in networks])
            table["precisions"][precision]["calibration"] = {**fit, "networks": networks}
    return table


def save_table(table, path):
    files.write_json(path, table)


def load_table(path, config: SupernetConfig | None = None, precision="float32") -> dict:
    """Reads and checks a table; with `config`, its supernet must match (ValueError naming it)."""
    try:
        with open(path, encoding="utf-8") as f:
            table = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise LatencyError(f"latency table {path}: cannot read it ({e})") from None
    if not isinstance(table, dict) or table.get("kind") != "clearer-latency-table" or table.get("format") != FORMAT:
        raise LatencyError(f"latency table {path}: not a clearer latency table (format {FORMAT})")
    if precision not in table.get("precisions", {}):
        raise LatencyError(f"latency table {path}: no {precision!r} timings "
                         f"(has {', '.join(table.get('precisions', {})) or 'none'})")
    if config is not None:
        expected = json.loads(json.dumps(config.to_dict()))  # tuples as JSON keeps them
        measured = table.get("supernet", {})
        diff = [f"{k}={measured.get(k)!r}, not {expected[k]!r}" for k in sorted(expected)
                if measured.get(k) != expected[k]]
        if diff:
            raise LatencyError(f"latency table {path}: measured for another supernet ({'; '.join(diff)})")
    return table


def fixed_ms(table, precision="float32") -> float:
    """Stem + transitions + head: the time every genotype pays."""
    return float(sum(table["precisions"][precision]["parts"].values()))


CALIBRATE_ABOVE = 0.15  # a calibration is applied only where a sum of parts misses by more


def calibration(table, precision="float32") -> tuple[float, float]:
    """`(scale, offset)` of the table's calibration where it is applied, else `(1, 0)`."""
    fit = table["precisions"][precision].get("calibration")
    return (float(fit["scale"]), float(fit["offset"])) if fit and fit.get("applied") else (1.0, 0.0)


def calibrate(parts_ms, measured_ms) -> dict:
    """Least-squares `measured = scale * parts + offset` over whole networks whose sum of
    parts (`parts_ms`) and measured latency are known (two or more networks). `applied`: only
    if a sum of parts is off by more than `CALIBRATE_ABOVE` (on a CPU at 256x256 the sums were
    within 10 % and the fit on the two ends made a mixed network worse; docs/benchmarks.md)."""
    x, y = np.asarray(parts_ms, np.float64), np.asarray(measured_ms, np.float64)
    scale, offset = np.polyfit(x, y, 1)
    worst = float(np.max(np.abs(x / y - 1)))
    return {"scale": round(float(scale), 6), "offset": round(float(offset), 4),
            "max_sum_error": round(worst, 4), "applied": worst > CALIBRATE_ABOVE}


def column_latency(table, columns, precision="float32") -> np.ndarray:
    """`(columns, 2)` latency in ms of (parallel, fusion) for each column, cell by cell."""
    cells = table["precisions"][precision]["cells"]
    return np.array([[cells[cell]["parallel"], cells[cell]["fusion"]]
                     for cell, n in enumerate(columns) for _ in range(n)], np.float64)


def column_costs(table, columns, precision="float32") -> np.ndarray:
    """Eq. 5's C: column latencies normalised by the total over all candidate modules."""
    lat = column_latency(table, columns, precision)
    return lat / lat.sum()


def range_ms(table, columns, precision="float32") -> tuple[float, float]:
    """Predicted latency of the fastest and of the slowest genotype (the cheaper, the dearer
    candidate in every column)."""
    scale, offset = calibration(table, precision)
    lat, fixed = column_latency(table, columns, precision), fixed_ms(table, precision)
    return (scale * (fixed + lat.min(axis=1).sum()) + offset, scale * (fixed + lat.max(axis=1).sum()) + offset)


def fastest_ms(table, columns, precision="float32") -> float:
    return range_ms(table, columns, precision)[0]


def parts_ms(table, cells, precision="float32") -> float:
    """Sum of a genotype's parts (`cells`: per cell, "parallel"/"fusion" per column)."""
    lat = column_latency(table, [len(c) for c in cells], precision)
    choice = [CANDIDATES.index(kind) for cell in cells for kind in cell]
    return fixed_ms(table, precision) + float(lat[np.arange(len(choice)), choice].sum())


def predict_ms(table, cells, precision="float32") -> float:
    """Predicted latency of a genotype: the sum of its parts, through the table's calibration."""
    scale, offset = calibration(table, precision)
    return scale * parts_ms(table, cells, precision) + offset


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
    """The `.tflite` file of every part (to time them on another device); returns the paths."""
    _require_tensorflow_backend()
    paths = []
    for name, model in part_models(config, height, width).items():
        label = f"cell{name[0]}_{name[1]}" if isinstance(name, tuple) else name
        path = os.path.join(os.fspath(out_dir), f"{label}-{precision}.tflite")
        files.write_bytes(path, to_tflite(model, precision))
        paths.append(path)
    return paths


def measure_network(model, height, width, precision="float32", threads=None, runs=20, warmup=3) -> dict:
    """LiteRT latency of a whole network (e.g. `build_network(genotype)`) at batch 1."""
    import keras

    _require_tensorflow_backend()
    image = keras.Input((height, width, model.inputs[0].shape[-1]), batch_size=1)
    fixed = keras.Model(image, model(image))
    return time_tflite(to_tflite(fixed, precision), threads, runs, warmup)


def derive_within_budget(weights, columns, table, budget_ms=None, precision="float32"):
    """`(cells, report)`: the argmax genotype, or, when a budget is given and the argmax's
    predicted latency exceeds it, the most probable genotype within it (`choose_within_budget`).
    `report` is what `genotype.json` records (predicted latency, budget, which and why)."""
    weights = np.asarray(weights, np.float64)
    lat, fixed = column_latency(table, columns, precision), fixed_ms(table, precision)
    scale, offset = calibration(table, precision)
    argmax = weights.argmax(axis=1)
    argmax_ms = scale * (fixed + float(lat[np.arange(len(argmax)), argmax].sum())) + offset
    report = {"latency_precision": precision, "latency_size": table.get("size"),
              "argmax_predicted_latency_ms": round(argmax_ms, 4), "latency_budget_ms": budget_ms}
    choice, predicted, chosen = argmax.tolist(), argmax_ms, "argmax"
    if budget_ms is not None and argmax_ms > budget_ms:
        try:  # the budget on the sum of the parts that the calibration maps to budget_ms
            choice, predicted = choose_within_budget(weights, lat, (budget_ms - offset) / scale, fixed)
        except LatencyError:
            raise LatencyError(f"latency budget {budget_ms} ms: no genotype fits (the fastest is predicted at "
                               f"{fastest_ms(table, columns, precision):.2f} ms)") from None
        predicted = scale * predicted + offset
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
    if config.latency_table is not None and not os.path.isfile(config.latency_table):
        raise ValueError(f"--latency-table {config.latency_table}: not found")


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
            save_table(measure_table(supernet_config, height, width, PRECISIONS, config.latency_threads), out_path)
        else:
            code = ("import json, sys; from clearer_tf import latency; from clearer_tf.presets import SupernetConfig; "
                    "c = SupernetConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in json.loads(sys.argv[1]).items()}); "
                    "latency.save_table(latency.measure_table(c, int(sys.argv[2]), int(sys.argv[3]), "
                    "threads=json.loads(sys.argv[4])), sys.argv[5])")
            subprocess.run([sys.executable, "-c", code, json.dumps(supernet_config.to_dict()), str(height), str(width),
                            json.dumps(config.latency_threads), os.fspath(out_path)], check=True,
                           env={**os.environ, "KERAS_BACKEND": "tensorflow"})
        path = out_path
    table = load_table(path, supernet_config, config.latency_precision)
    if os.path.abspath(path) != os.path.abspath(out_path):
        save_table(table, out_path)  # the run folder keeps the table it used
    return table
