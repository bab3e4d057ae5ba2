"""Latency table (LiteRT), L_comp with latency costs, and the choice within a latency budget."""

import itertools
import json
import os
import re

import numpy as np
import pytest

from clearer_tf import latency, litert, losses
from clearer_tf.presets import SupernetConfig

TINY = SupernetConfig(base_width=4, columns=(2, 1), stem_planes=4, stem_blocks=1)


def _table(cells, parts, config=TINY):
    return {"format": latency.FORMAT, "kind": "clearer-latency-table", "supernet": config.to_dict(), "size": [64, 64],
            "precisions": {"float32": {"parts": parts, "cells": cells}}}


def test_choice_within_budget_equals_brute_force():
    rng = np.random.default_rng(0)
    for trial in range(20):
        n = int(rng.integers(1, 8))
        weights = rng.dirichlet([1.0, 1.0], size=n)
        lat = rng.uniform(0.5, 5.0, size=(n, 2))
        fixed = float(rng.uniform(0, 3))
        lo, hi = fixed + lat.min(axis=1).sum(), fixed + lat.max(axis=1).sum()
        budget = float(rng.uniform(lo, hi))
        best, best_score = None, -np.inf
        for choice in itertools.product((0, 1), repeat=n):  # independent reference
            total = fixed + sum(lat[i, c] for i, c in enumerate(choice))
            score = np.prod([weights[i, c] for i, c in enumerate(choice)])
            if total <= budget and score > best_score:
                best, best_score = list(choice), score
        choice, predicted = latency.choose_within_budget(weights, lat, budget, fixed)
        assert choice == best, trial
        assert predicted == pytest.approx(fixed + sum(lat[i, c] for i, c in enumerate(best)))


def test_budget_below_the_fastest_genotype_is_refused_with_the_minimum():
    with pytest.raises(ValueError, match=r"latency budget 1.0 ms: no genotype fits \(the fastest is predicted at 3.50 ms\)"):
        latency.choose_within_budget([[0.5, 0.5], [0.5, 0.5]], [[1.0, 2.0], [1.5, 2.0]], 1.0, fixed=1.0)


def test_argmax_is_kept_when_it_fits():
    weights = np.array([[0.7, 0.3], [0.2, 0.8], [0.6, 0.4]])
    choice, _ = latency.choose_within_budget(weights, np.ones((3, 2)), budget_ms=100.0)
    assert choice == weights.argmax(axis=1).tolist()


def test_costs_prediction_and_l_comp_equal_numpy():
    cells = [{"parallel": 2.0, "fusion": 3.0}, {"parallel": 5.0, "fusion": 1.0}]
    parts = {"stem": 1.0, "transition0": 0.5, "transition1": 0.25, "head": 0.125}
    table = _table(cells, parts)
    lat = np.array([[2.0, 3.0], [2.0, 3.0], [5.0, 1.0]])  # cell 0 has two columns
    np.testing.assert_allclose(latency.column_latency(table, TINY.columns), lat)
    costs = latency.column_costs(table, TINY.columns)
    np.testing.assert_allclose(costs, lat / lat.sum())
    assert latency.predict_ms(table, [["fusion", "parallel"], ["fusion"]]) == pytest.approx(1.875 + 3 + 2 + 1)
    w = np.array([[0.3, 0.7], [0.6, 0.4], [0.5, 0.5]], np.float32)
    expected = np.sum(w.astype(np.float64) * lat / lat.sum()) / 3  # Eq. 5
    assert float(losses.complexity_loss(w, costs)) == pytest.approx(expected, rel=1e-6)


def test_measured_table_has_every_part_round_trips_and_guards_its_supernet(tmp_path):
    table = latency.measure_table(TINY, 16, 16, precisions=("float32", "int8"), threads=1, runs=20, warmup=1)
    assert table["format"] == 2 and table["conversion"] == "saved_model"
    for precision in ("float32", "int8"):
        timings = table["precisions"][precision]
        assert set(timings["parts"]) == {"stem", "transition0", "transition1", "head"}
        assert [set(c) for c in timings["cells"]] == [{"parallel", "fusion"}] * 2
        assert all(v > 0 for v in timings["parts"].values())
        assert 0 <= timings["max_discrepancy"] <= litert.TOLERANCE[precision]  # every part checked against Keras
    assert table["size"] == [16, 16] and table["runs"] == 20 and table["threads"] == 1
    for precision in ("float32", "int8"):  # the calibration: both ends of the range timed whole
        fit = table["precisions"][precision]["calibration"]
        assert [n["cells"] for n in fit["networks"]] == [[["parallel"] * 2, ["parallel"]], [["fusion"] * 2, ["fusion"]]]
        ends = np.array([(n["parts_ms"], n["measured_ms"]) for n in fit["networks"]], np.float64)
        assert (ends[:, 1] > 0).all()
        assert fit["offset"] == pytest.approx(ends[0, 1] - ends[0, 0], abs=1e-3)  # all parallel: no fusion column
        assert fit["fusion_ms"] == pytest.approx((ends[1, 1] - ends[1, 0] - fit["offset"]) / 3, abs=1e-3)
        for (_, y), network in zip(ends, fit["networks"]):  # exact on the two ends
            assert latency.predict_ms(table, network["cells"], precision) == pytest.approx(y, abs=3e-3)
    assert {"tensorflow", "keras", "ai_edge_litert"} <= set(table["versions"])

    path = tmp_path / "latency_table.json"
    latency.save_table(table, path)
    assert latency.load_table(path, TINY, "int8") == json.loads(path.read_text())
    other = SupernetConfig(base_width=8, columns=(2, 1), stem_planes=4, stem_blocks=1)
    with pytest.raises(ValueError, match="measured for another supernet .*base_width=4, not 8"):
        latency.load_table(path, other)
    with pytest.raises(ValueError, match="no 'float16' timings"):
        latency.load_table(path, TINY, "float16")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="not a clearer latency table"):
        latency.load_table(tmp_path / "bad.json")

    import keras

    keras.utils.set_random_seed(7)  # the same weights in the parts written and in those rebuilt below
    paths = latency.write_part_models(TINY, tmp_path / "parts", 16, 16)
    assert sorted(os.path.basename(p) for p in paths) == sorted(
        f"{n}-float32.tflite" for n in ["stem", "transition0", "transition1", "head", "cell0_parallel",
                                         "cell0_fusion", "cell1_parallel", "cell1_fusion"])
    keras.utils.set_random_seed(7)
    models = latency.part_models(TINY, 16, 16)
    for path in paths:  # the files are the checked parts: finite and equal to Keras
        name = os.path.basename(path).rsplit("-", 1)[0]
        key = next(k for k in models if latency.part_label(k) == name)
        with open(path, "rb") as f:
            litert.checked(f.read(), models[key], name)


def _valid_table():
    cells = [{"parallel": 1.0, "fusion": 3.0}, {"parallel": 2.0, "fusion": 1.5}]
    return _table(cells, {"stem": 1.0, "transition0": 0.5, "transition1": 0.25, "head": 0.5})


def _broken(edit):
    table = json.loads(json.dumps(_valid_table()))
    edit(table)
    return table


BROKEN_TABLES = {
    "nan": (lambda t: t["precisions"]["float32"]["cells"][1].update(fusion=float("nan")),
            r"cell 1 'fusion' is nan, not a finite time > 0 ms"),
    "inf": (lambda t: t["precisions"]["float32"]["parts"].update(stem=float("inf")),
            r"part 'stem' is inf, not a finite time > 0 ms"),
    "zero": (lambda t: t["precisions"]["float32"]["parts"].update(head=0.0), r"part 'head' is 0.0, not a finite"),
    "negative": (lambda t: t["precisions"]["float32"]["cells"][0].update(parallel=-2.0),
                 r"cell 0 'parallel' is -2.0, not a finite"),
    "text": (lambda t: t["precisions"]["float32"]["cells"][0].update(parallel="1.0"), r"cell 0 'parallel' is '1.0'"),
    "cell count": (lambda t: t["precisions"]["float32"]["cells"].pop(), r"1 cells timed, the supernet has 2"),
    "missing part": (lambda t: t["precisions"]["float32"]["parts"].pop("transition1"),
                     r"part 'transition1' is missing"),
    "missing candidate": (lambda t: t["precisions"]["float32"]["cells"][1].pop("parallel"),
                          r"cell 1 'parallel' is None"),
    "size": (lambda t: t.update(size=[64, 66]), r"size 64x66 is not a multiple of 4 \(2\*\*cells, 2 cells\)"),
    "format 1": (lambda t: t.update(format=1), r"format 1 was timed on models converted with from_concrete_functions"),
    "calibration": (lambda t: t["precisions"]["float32"].update(calibration={"fusion_ms": 1.0, "offset": None}),
                    r"calibration needs finite 'offset' and 'fusion_ms'"),
    "calibrated below zero": (lambda t: t["precisions"]["float32"].update(calibration={"fusion_ms": 0.0,
                                                                                       "offset": -9.0}),
                              r"its calibration predicts -3.25 ms for the fastest genotype, not > 0"),
}


@pytest.mark.parametrize("case", sorted(BROKEN_TABLES))
def test_unusable_tables_are_refused_in_one_line_naming_file_and_entry(tmp_path, case):
    edit, message = BROKEN_TABLES[case]
    path = tmp_path / "table.json"
    path.write_text(json.dumps(_broken(edit)))  # json writes NaN and Infinity, as a careless tool would
    with pytest.raises(latency.LatencyError) as e:
        latency.load_table(path, TINY)
    assert str(e.value).startswith(f"latency table {path}: ") and "\n" not in str(e.value)
    assert re.search(message, str(e.value)), str(e.value)


def test_binary_and_truncated_table_files_are_refused_in_one_line(tmp_path):
    (tmp_path / "table.json").write_bytes(np.random.default_rng(0).bytes(256))
    (tmp_path / "cut.json").write_text(json.dumps(_valid_table())[:40])
    for name in ("table.json", "cut.json"):
        with pytest.raises(latency.LatencyError, match=rf"latency table .*{name}: cannot read it as JSON") as e:
            latency.load_table(tmp_path / name)
        assert "\n" not in str(e.value)
    latency.save_table(_valid_table(), tmp_path / "good.json")
    assert latency.load_table(tmp_path / "good.json", TINY)["size"] == [64, 64]


def test_a_bad_table_is_refused_before_the_search_starts(tmp_path):
    """search.py: one line naming the table and the entry, no run folder."""
    import subprocess
    import sys

    table = _broken(BROKEN_TABLES["nan"][0])
    path = tmp_path / "table.json"
    path.write_text(json.dumps(table))
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, os.path.join(repo, "train_scripts", "search.py"), "--task", "denoise",
                          "--preset", "quick", "--cost", "latency", "--latency-table", str(path),
                          "--out", str(tmp_path / "run")], capture_output=True, text=True, cwd=repo,
                         env={**os.environ, "KERAS_BACKEND": "tensorflow"})
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and f"latency table {path}: float32: cell 1 'fusion' is nan" in lines[0], out.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("bad", [float("nan"), -0.1, float("inf")])
def test_non_finite_or_negative_costs_never_reach_l_comp(bad):
    import run_helpers
    from clearer_tf.search import SupernetSearch
    from clearer_tf.supernet import build_supernet

    supernet, search = run_helpers.search_configs()
    costs = np.full((sum(supernet.columns), 2), 0.25)
    costs[0, 1] = bad
    with pytest.raises(ValueError, match="L_comp costs must be finite and >= 0"):
        SupernetSearch(build_supernet(config=supernet), search, supernet, costs=costs)


def test_derivation_keeps_the_argmax_within_budget_and_replaces_it_above():
    cells = [{"parallel": 1.0, "fusion": 4.0}, {"parallel": 1.0, "fusion": 2.0}]
    table = _table(cells, {"stem": 1.0, "transition0": 0.0, "transition1": 0.0, "head": 0.0})
    weights = [[0.4, 0.6], [0.45, 0.55], [0.3, 0.7]]  # argmax: all fusion = 1 + 4 + 4 + 2 = 11 ms
    cells_out, report = latency.derive_within_budget(weights, TINY.columns, table, budget_ms=20.0)
    assert cells_out == [["fusion", "fusion"], ["fusion"]] and report["chosen"] == "argmax"
    assert report["predicted_latency_ms"] == report["argmax_predicted_latency_ms"] == 11.0
    cells_out, report = latency.derive_within_budget(weights, TINY.columns, table, budget_ms=8.0)
    # within 8 ms: one of the cell-0 columns must turn parallel; the one with the weaker fusion vote
    assert cells_out == [["fusion", "parallel"], ["fusion"]] and report["predicted_latency_ms"] == 8.0
    assert report["chosen"].startswith("most probable within budget: the argmax genotype is predicted at 11.00")


def test_calibration_is_least_squares_in_the_fusion_columns_and_the_budget_applies_to_calibrated_predictions():
    rng = np.random.default_rng(1)
    x, k = rng.uniform(5, 50, size=6), rng.integers(0, 7, size=6)
    y = x - 3.0 - 0.4 * k + rng.normal(0, 0.2, size=6)
    fit = latency.calibrate(x, y, k)
    expected = np.linalg.lstsq(np.stack([np.ones(6), k], axis=1), y - x, rcond=None)[0]  # float64 reference
    assert (fit["offset"], fit["fusion_ms"]) == (pytest.approx(expected[0], abs=1e-4), pytest.approx(expected[1], abs=1e-4))
    assert fit["max_sum_error"] == pytest.approx(float(np.max(np.abs(x / y - 1))), abs=1e-4)
    two = latency.calibrate([30.0, 26.0], [29.0, 23.0], [0, 6])  # the two ends: exact
    assert (two["offset"], two["fusion_ms"]) == (pytest.approx(-1.0), pytest.approx(-2.0 / 6))

    cells = [{"parallel": 1.0, "fusion": 4.0}, {"parallel": 1.0, "fusion": 2.0}]
    table = _table(cells, {"stem": 1.0, "transition0": 0.0, "transition1": 0.0, "head": 0.0})
    table["precisions"]["float32"]["calibration"] = {"offset": 3.0, "fusion_ms": 0.5}
    weights = [[0.4, 0.6], [0.45, 0.55], [0.3, 0.7]]
    layouts = [[[a, b], [c]] for a, b, c in itertools.product(latency.CANDIDATES, repeat=3)]

    def calibrated(c):  # independent: parts + offset + 0.5 ms per fusion column
        return latency.parts_ms(table, c) + 3.0 + 0.5 * sum(kind == "fusion" for cell in c for kind in cell)

    for budget in (12.0, 19.0, 25.0, 100.0):  # brute force on the calibrated predictions
        feasible = [c for c in layouts if calibrated(c) <= budget]
        flat = lambda c: [k for cell in c for k in cell]  # noqa: E731
        best = max(feasible, key=lambda c: np.prod([w[latency.CANDIDATES.index(k)]
                                                    for w, k in zip(weights, flat(c))]))
        cells_out, report = latency.derive_within_budget(weights, TINY.columns, table, budget_ms=budget)
        assert cells_out == best, budget
        assert report["predicted_latency_ms"] == pytest.approx(calibrated(best))
        assert latency.predict_ms(table, best) == pytest.approx(calibrated(best))
        assert report["argmax_predicted_latency_ms"] == pytest.approx(11.0 + 3.0 + 1.5)
    assert latency.fastest_ms(table, TINY.columns) == pytest.approx(4.0 + 3.0)
    with pytest.raises(ValueError, match=r"latency budget 6.0 ms: no genotype fits \(the fastest is predicted at 7.00"):
        latency.derive_within_budget(weights, TINY.columns, table, budget_ms=6.0)


def _tiny_search(tmp_path, table_cells, budget, lambda_comp=0.5):
    import dataclasses

    import run_helpers
    from clearer_tf.search import run_search
    from pipelines.tasks import load_task_data

    supernet, search = run_helpers.search_configs()  # one cell of two columns, 8 iterations
    table = _table(table_cells, {"stem": 1.0, "transition0": 0.5, "head": 0.5}, supernet)
    path = tmp_path / "table.json"
    path.write_text(json.dumps(table))
    search = dataclasses.replace(search, cost="latency", lambda_comp=lambda_comp, latency_table=str(path),
                                 latency_budget_ms=budget)
    data = load_task_data("denoise", data=os.path.join(run_helpers.SAMPLES, "bsds", "train"), sigma=30.0,
                          split_fraction=0.5, seed=search.seed)
    return run_search(supernet, search, data, tmp_path / "run", verbose=0), supernet, table


def test_latency_aware_search_uses_the_table_and_derives_within_budget(tmp_path):
    cells = [{"parallel": 1.0, "fusion": 3.0}]  # two columns: all fusion 8 ms, one fusion 6 ms
    result, supernet, table = _tiny_search(tmp_path, cells, budget=6.5)
    g = json.loads((tmp_path / "run" / "genotype.json").read_text())
    weights = np.array(g["weights"]).reshape(-1, 2)
    expected, predicted = latency.choose_within_budget(weights, latency.column_latency(table, supernet.columns),
                                                       6.5, latency.fixed_ms(table))
    assert [["parallel", "fusion"][c] for c in expected] == g["cells"][0]
    assert g["search"]["predicted_latency_ms"] == pytest.approx(predicted) and predicted <= 6.5
    assert g["search"]["latency_budget_ms"] == 6.5 and g["search"]["cost"] == "latency"
    kept = json.loads((tmp_path / "run" / "latency_table.json").read_text())  # kept with the run
    assert kept == json.loads(json.dumps(table))
    # L_comp used the table's costs (Eq. 5), not parameter counts
    np.testing.assert_allclose(np.asarray(result.search.objective.costs), latency.column_costs(table, supernet.columns),
                               rtol=1e-6)


def test_impossible_budget_is_refused_before_the_search(tmp_path):
    with pytest.raises(latency.LatencyError, match=r"--latency-budget-ms 1.0: no genotype fits \(the fastest is "
                                                   r"predicted at 4.00 ms"):
        _tiny_search(tmp_path, [{"parallel": 1.0, "fusion": 3.0}], budget=1.0)
    assert not (tmp_path / "run" / "run.json").exists()
