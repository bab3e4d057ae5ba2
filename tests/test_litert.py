"""One conversion path to LiteRT, checked against Keras before anything is timed (issue 23)."""

import numpy as np
import pytest

from clearer_tf import latency, litert
from clearer_tf.genotype import from_config
from clearer_tf.network import build_network
from clearer_tf.presets import get_preset

MIXED = {"quick": "F P / P F / F P", "paper": "F P P F / F F F F / P F F P"}  # the paper's 8F/4P


def _layouts(config, preset):
    mixed = iter(k for k in MIXED[preset].replace("/", " ").split())
    names = {"P": "parallel", "F": "fusion"}
    return {"all parallel": [["parallel"] * n for n in config.columns],
            "all fusion": [["fusion"] * n for n in config.columns],
            "mixed": [[names[next(mixed)] for _ in range(n)] for n in config.columns]}


def _fixed(network, size):
    import keras

    image = keras.Input((size, size, network.inputs[0].shape[-1]), batch_size=1)
    return keras.Model(image, network(image))


@pytest.mark.parametrize("preset,size", [("quick", 32), ("paper", 32)])
def test_parts_and_networks_give_finite_litert_output_equal_to_keras_in_every_precision(preset, size):
    config = get_preset(preset).supernet
    models = {latency.part_label(k): m for k, m in latency.part_models(config, size, size).items()}
    for label, cells in _layouts(config, preset).items():
        models[label] = _fixed(build_network(from_config(config, cells)), size)
    worst = {kind: 0.0 for kind in litert.KINDS}
    for name, model in models.items():
        arrays = litert.random_inputs([tuple(t.shape) for t in model.inputs], seed=3)
        expected = [np.asarray(e, np.float64) for e in litert.keras_outputs(model, arrays)]
        for kind, flatbuffer in litert.keras_to_tflite_kinds(model).items():
            runner, error = litert.checked(flatbuffer, model, name, kind, seed=3)
            got = runner(arrays)  # the same inputs as the check: recompute the discrepancy in float64
            assert all(np.isfinite(o).all() for o in got), (name, kind)
            scale = max(np.abs(e).max() for e in expected)
            independent = max(np.abs(o - e).max() for o, e in zip(got, expected)) / scale
            assert independent == pytest.approx(error, rel=1e-6, abs=1e-12) and independent <= litert.TOLERANCE[kind]
            worst[kind] = max(worst[kind], independent)
    assert worst["float32"] < 1e-5  # what "float tolerance" means for float32: rounding only


def test_the_old_conversion_route_is_refused_naming_the_part():
    """`from_concrete_functions` (the latency tables' route before issue 23) gives NaN: refused."""
    import tensorflow as tf

    config = get_preset("quick").supernet
    model = latency.part_models(config, 32, 32)["stem"]
    fn = tf.function(lambda x: model(x, training=False))
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [fn.get_concrete_function(tf.TensorSpec(model.inputs[0].shape, tf.float32))], model)
    with pytest.raises(litert.ConversionError, match=r"^stem \(float32\): the LiteRT output is not finite \("):
        litert.checked(converter.convert(), model, "stem")


def test_a_model_that_computes_something_else_is_refused():
    config = get_preset("quick").supernet
    cells = _layouts(config, "quick")["mixed"]
    a, b = (_fixed(build_network(from_config(config, cells)), 32) for _ in range(2))  # other random weights
    with pytest.raises(litert.ConversionError, match=r"^other \(float32\): the LiteRT output differs from Keras by "):
        litert.checked(litert.keras_to_tflite(a), b, "other")


def test_export_and_the_latency_parts_share_the_conversion(monkeypatch, tmp_path):
    from clearer_tf import export

    seen = []
    real = litert.saved_model_to_tflite
    monkeypatch.setattr(litert, "saved_model_to_tflite", lambda d, kind="float32": seen.append(kind) or real(d, kind))
    config = get_preset("quick").supernet
    latency.to_tflite(latency.part_models(config, 32, 32)["head"], "int8")
    genotype = from_config(config, _layouts(config, "quick")["mixed"])
    network = build_network(genotype)
    network.save_weights(tmp_path / "w.weights.h5")
    export.export(genotype, tmp_path / "w.weights.h5", tmp_path / "models", tflite=("float16",))
    assert seen == ["int8", "float16"]


def test_predicted_whole_network_latency_is_within_15_percent_of_measured():
    """The table's prediction (sum of the parts, calibrated on the two ends) against the whole
    network exported as a SavedModel, converted and timed afterwards, for all-parallel, all-fusion and a mixed genotype (quick preset,
    128x128, 1 thread). The fastest of 3 interleaved rounds of 20 runs, not the median: the
    suite runs on two busy workers (medians of parts and networks timed at different moments
    missed by 55-65 % there). bench/latency_sweep.py does the same on trained networks at
    256x256 on an idle machine, with medians (docs/benchmarks.md)."""
    config = get_preset("quick").supernet
    table = latency.measure_table(config, 128, 128, ("float32",), threads=1, runs=20, rounds=3, statistic="min")
    layouts = _layouts(config, "quick")
    runners = {label: latency.exported_runner(from_config(config, cells), 128, 128, threads=1)[0]
               for label, cells in layouts.items()}  # as exported and converted for users
    measured = litert.time_runners(runners, runs=20, rounds=3)
    errors = {label: latency.predict_ms(table, cells) / measured[label]["min_ms"] - 1 for label, cells in layouts.items()}
    assert all(abs(e) <= 0.15 for e in errors.values()), errors
