"""Keras models and SavedModels as LiteRT (`.tflite`) flatbuffers, checked against Keras, and timed.

One conversion path for every `.tflite` the project makes (export, the latency table's parts,
whole networks; float32, float16, int8): the model is written as a SavedModel
(`keras.export.ExportArchive`, the path `export.py` takes) and its `serving_default` signature
converted with `TFLiteConverter.from_saved_model`. `from_concrete_functions`, used before for
the latency parts, leaves Keras 3 variables as resource tensors and silently gave NaN output.

`checked` runs a converted model on random inputs and refuses one whose output is not finite
or differs from the Keras model beyond the precision's tolerance (`TOLERANCE`), naming it:
nothing is timed before it passed.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time

import numpy as np

from clearer_tf.quiet import quietly

KINDS = ("float32", "float16", "int8")
# max |LiteRT - Keras| / max |Keras| over all outputs. float16 stores weights in half precision
# (about 3 decimal digits), int8 is dynamic-range quantisation (int8 weights, activations
# quantised per tensor on the fly): the quick preset's random-weight parts at 128x128 stayed
# within 1.2e-6, 2.5e-4 and 7.2e-3 (docs/benchmarks.md; tests/test_litert.py, both presets).
TOLERANCE = {"float32": 1e-4, "float16": 1e-2, "int8": 5e-2}


class ConversionError(ValueError):
    """A converted model that is not what Keras computes: one line, naming the model."""


def check_kind(kind):
    if kind not in KINDS:
        raise ValueError(f"precision must be one of {', '.join(KINDS)}, got {kind!r}")


def saved_model_to_tflite(saved_model_dir, kind="float32") -> bytes:
    """The `serving_default` signature of a SavedModel as a `.tflite` flatbuffer.

    kind: `float32`; `float16` (float16 weights, computed in float32 on CPU); `int8`
    (dynamic-range quantisation: int8 weights, activations quantised on the fly).
    """
    import tensorflow as tf

    check_kind(kind)
    converter = tf.lite.TFLiteConverter.from_saved_model(os.fspath(saved_model_dir),
                                                         signature_keys=["serving_default"])
    if kind in ("float16", "int8"):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if kind == "float16":
        converter.target_spec.supported_types = [tf.float16]
    with quietly():  # the converter's C++ log lines, unless --verbose
        return converter.convert()


def input_name(i):
    return f"input_{i:02d}"  # sorted names keep the Keras input order


def output_name(i):
    return f"output_{i:02d}"


def keras_to_tflite(model, kind="float32") -> bytes:
    """A Keras model with fixed input shapes (all inputs float32) as a `.tflite` flatbuffer,
    through a temporary SavedModel. Its inputs and outputs are `input_NN` / `output_NN` in the
    model's order."""
    return keras_to_tflite_kinds(model, (kind,))[kind]


def keras_to_tflite_kinds(model, kinds=KINDS) -> dict:
    """`{kind: flatbuffer}`: `keras_to_tflite` in each of `kinds`, from one SavedModel."""
    import keras
    import tensorflow as tf

    for kind in kinds:
        check_kind(kind)
    specs = [tf.TensorSpec(t.shape, tf.float32, name=input_name(i)) for i, t in enumerate(model.inputs)]

    def serve(*xs):
        ys = model(list(xs) if isinstance(model.input, list) else xs[0], training=False)
        return {output_name(i): y for i, y in enumerate(ys if isinstance(ys, (list, tuple)) else [ys])}

    archive = keras.export.ExportArchive()
    archive.add_endpoint("serving_default", serve, input_signature=specs)
    with tempfile.TemporaryDirectory(prefix="clearer-litert-") as tmp:
        with quietly():
            archive.write_out(tmp, verbose=False)
        return {kind: saved_model_to_tflite(tmp, kind) for kind in kinds}


class Runner:
    """A LiteRT interpreter on one flatbuffer: inputs and outputs of its one signature in the
    order of their names, any input shapes (`resize`)."""

    def __init__(self, flatbuffer: bytes, threads=None):
        from ai_edge_litert.interpreter import Interpreter

        with quietly():  # LiteRT announces its delegate
            self.interpreter = Interpreter(model_content=flatbuffer, num_threads=threads)
        signatures = self.interpreter.get_signature_list()
        if len(signatures) != 1:
            raise ConversionError(f"a .tflite with one signature is expected, got {sorted(signatures)}")
        runner = self.interpreter.get_signature_runner(next(iter(signatures)))
        inputs, outputs = runner.get_input_details(), runner.get_output_details()
        del runner  # a live signature runner makes the interpreter refuse invoke()
        self.inputs = [inputs[k] for k in sorted(inputs)]
        self.outputs = [outputs[k] for k in sorted(outputs)]
        self.shapes = None
        self.invoked = False

    def set_inputs(self, arrays):
        shapes = [tuple(a.shape) for a in arrays]
        if shapes != self.shapes:
            for detail, shape in zip(self.inputs, shapes):
                self.interpreter.resize_tensor_input(detail["index"], list(shape), strict=False)
            self.interpreter.allocate_tensors()
            self.shapes = shapes
        for detail, a in zip(self.inputs, arrays):
            self.interpreter.set_tensor(detail["index"], np.ascontiguousarray(a, np.float32))

    def invoke(self):
        if not self.invoked:
            with quietly():  # the delegate's first-invocation line
                self.interpreter.invoke()
            self.invoked = True
        else:
            self.interpreter.invoke()

    def __call__(self, arrays):
        self.set_inputs(arrays)
        self.invoke()
        return [np.array(self.interpreter.get_tensor(d["index"])) for d in self.outputs]


def random_inputs(shapes, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.random(tuple(shape), dtype=np.float32) for shape in shapes]


def keras_outputs(model, arrays):
    ys = model(list(arrays) if isinstance(model.input, list) else arrays[0], training=False)
    return [np.asarray(y, np.float32) for y in (ys if isinstance(ys, (list, tuple)) else [ys])]


def discrepancy(outputs, expected) -> float:
    """max |outputs - expected| / max |expected| over all outputs (the measure of `TOLERANCE`)."""
    worst = max(float(np.max(np.abs(np.asarray(o, np.float64) - e))) for o, e in zip(outputs, expected))
    scale = max(float(np.max(np.abs(e))) for e in expected)
    return worst / max(scale, 1e-12)


def checked(flatbuffer, model, name, kind="float32", threads=None, shapes=None, seed=0) -> tuple[Runner, float]:
    """`(runner, discrepancy)` for `flatbuffer`, after running it on random inputs in [0, 1)
    (`shapes`, default the Keras model's input shapes) and comparing with the Keras `model`.
    ConversionError naming `name` if the output is
    not finite, has another shape, or differs beyond `TOLERANCE[kind]`. The runner keeps
    those inputs set, ready to time."""
    check_kind(kind)
    shapes = shapes or [tuple(t.shape) for t in model.inputs]
    arrays = random_inputs(shapes, seed)
    runner = Runner(flatbuffer, threads)
    if len(runner.inputs) != len(arrays):
        raise ConversionError(f"{name} ({kind}): the .tflite has {len(runner.inputs)} inputs, the model {len(arrays)}")
    got = runner(arrays)
    bad = sum(int(np.size(o) - np.isfinite(o).sum()) for o in got)
    if bad:
        total = sum(int(np.size(o)) for o in got)
        raise ConversionError(f"{name} ({kind}): the LiteRT output is not finite ({bad} of {total} values "
                              "NaN or Inf); refusing to use it")
    expected = keras_outputs(model, arrays)
    if [o.shape for o in got] != [e.shape for e in expected]:
        raise ConversionError(f"{name} ({kind}): LiteRT output shapes {[o.shape for o in got]} differ from "
                              f"Keras' {[e.shape for e in expected]}")
    error = discrepancy(got, expected)
    if not error <= TOLERANCE[kind]:
        raise ConversionError(f"{name} ({kind}): the LiteRT output differs from Keras by {error:.2e} of its "
                              f"largest value (tolerance {TOLERANCE[kind]:.0e}); refusing to use it")
    return runner, error


def _invocations_ms(runner: Runner, runs, warmup) -> list:
    times = []
    for i in range(warmup + runs):
        start = time.perf_counter()
        runner.invoke()
        if i >= warmup:
            times.append(1e3 * (time.perf_counter() - start))
    return times


def _summary(times) -> dict:
    return {"median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times)}


def time_runner(runner: Runner, runs=20, warmup=3) -> dict:
    """Median, min and max (ms) of `runs` invocations on the inputs set, after `warmup`."""
    return _summary(_invocations_ms(runner, runs, warmup))


def time_runners(runners: dict, runs=20, warmup=3, rounds=1) -> dict:
    """`{name: time_runner summary}` of every runner, timed in turn `rounds` times over
    (`runs` invocations after `warmup` each time; the summary pools all rounds)."""
    times = {name: [] for name in runners}
    for _ in range(rounds):
        for name, runner in runners.items():
            times[name] += _invocations_ms(runner, runs, warmup)
    return {name: _summary(t) for name, t in times.items()}
