"""Latency table (LiteRT), L_comp with latency costs, and the choice within a latency budget."""

import itertools
import json
import os

import numpy as np
import pytest

from clearer_tf import latency, losses
from clearer_tf.presets import SupernetConfig

TINY = SupernetConfig(base_width=4, columns=(2, 1), stem_planes=4, stem_blocks=1)


def _table(cells, parts, config=TINY):
    return {"format": 1, "kind": "clearer-latency-table", "supernet": config.to_dict(),
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
    for precision in ("float32", "int8"):
        timings = table["precisions"][precision]
        assert set(timings["parts"]) == {"stem", "transition0", "transition1", "head"}
        assert [set(c) for c in timings["cells"]] == [{"parallel", "fusion"}] * 2
        assert all(v > 0 for v in timings["parts"].values())
    assert table["size"] == [16, 16] and table["runs"] == 20 and table["threads"] == 1
    for precision in ("float32", "int8"):  # the calibration: both ends of the range timed whole
        fit = table["precisions"][precision]["calibration"]
        assert [n["cells"] for n in fit["networks"]] == [[["parallel"] * 2, ["parallel"]], [["fusion"] * 2, ["fusion"]]]
        ends = [(n["parts_ms"], n["measured_ms"]) for n in fit["networks"]]
        assert all(m > 0 for _, m in ends)
        scale, offset = np.linalg.solve([[x, 1.0] for x, _ in ends], [y for _, y in ends])  # two points: exact
        assert (fit["scale"], fit["offset"]) == (pytest.approx(scale, rel=1e-4), pytest.approx(offset, abs=1e-3))
        worst = max(abs(x / y - 1) for x, y in ends)
        assert fit["max_sum_error"] == pytest.approx(worst, abs=1e-4) and fit["applied"] == (worst > 0.15)
        for (x, y), network in zip(ends, fit["networks"]):  # applied: the two ends exactly; else the sums
            assert latency.predict_ms(table, network["cells"], precision) == pytest.approx(
                y if fit["applied"] else x, abs=2e-3)
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

    paths = latency.write_part_models(TINY, tmp_path / "parts", 16, 16)
    assert sorted(os.path.basename(p) for p in paths) == sorted(
        f"{n}-float32.tflite" for n in ["stem", "transition0", "transition1", "head", "cell0_parallel",
                                         "cell0_fusion", "cell1_parallel", "cell1_fusion"])


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


def test_calibration_is_least_squares_and_the_budget_applies_to_calibrated_predictions():
    rng = np.random.default_rng(1)
    x = rng.uniform(5, 50, size=6)
    y = 1.3 * x + 4.0 + rng.normal(0, 0.5, size=6)
    fit = latency.calibrate(x, y)
    expected = np.linalg.lstsq(np.stack([x, np.ones_like(x)], axis=1), y, rcond=None)[0]  # float64 reference
    assert (fit["scale"], fit["offset"]) == (pytest.approx(expected[0], rel=1e-5), pytest.approx(expected[1], abs=1e-3))
    assert fit["applied"] and not latency.calibrate([100.0, 200.0], [105.0, 190.0])["applied"]  # within 15 %

    cells = [{"parallel": 1.0, "fusion": 4.0}, {"parallel": 1.0, "fusion": 2.0}]
    table = _table(cells, {"stem": 1.0, "transition0": 0.0, "transition1": 0.0, "head": 0.0})
    table["precisions"]["float32"]["calibration"] = {"scale": 2.0, "offset": 3.0, "applied": True}
    weights = [[0.4, 0.6], [0.45, 0.55], [0.3, 0.7]]
    layouts = [[[a, b], [c]] for a, b, c in itertools.product(latency.CANDIDATES, repeat=3)]
    for budget in (12.0, 19.0, 25.0, 100.0):  # brute force on the calibrated predictions
        feasible = [c for c in layouts if 2.0 * latency.parts_ms(table, c) + 3.0 <= budget]
        flat = lambda c: [k for cell in c for k in cell]  # noqa: E731
        best = max(feasible, key=lambda c: np.prod([w[latency.CANDIDATES.index(k)]
                                                    for w, k in zip(weights, flat(c))]))
        cells_out, report = latency.derive_within_budget(weights, TINY.columns, table, budget_ms=budget)
        assert cells_out == best, budget
        assert report["predicted_latency_ms"] == pytest.approx(2.0 * latency.parts_ms(table, best) + 3.0)
        assert report["argmax_predicted_latency_ms"] == pytest.approx(2.0 * 11.0 + 3.0)
    assert latency.fastest_ms(table, TINY.columns) == pytest.approx(2.0 * 4.0 + 3.0)
    with pytest.raises(ValueError, match=r"latency budget 10.0 ms: no genotype fits \(the fastest is predicted at 11.00"):
        latency.derive_within_budget(weights, TINY.columns, table, budget_ms=10.0)


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
