"""Export a trained network for TF Serving (SavedModel) and phones (TFLite / LiteRT).

Layout (TF Serving's): `<root>/<name>/<version>/` holds the SavedModel with two signatures

* `serving_default`: `image` float32 [batch, H, W, C] in [0, 1], any H and W (reflect
  padding to a multiple of 2**cells and the crop back happen inside) -> `restored`
  float32, same shape, the raw network output (not clipped);
* `serving_uint8`: `image` uint8 [batch, H, W, C] -> `restored` uint8 (clipped, rounded);

plus `assets.extra/clearer.json` (genotype and export metadata; TF Serving ignores it).
The network's weights are also a variable collection `clearer_weights` (same variables,
stored once, in `network.weights` order; their paths are in `clearer.json`), which is how
`clearer_tf.pretrained.load_pretrained` puts them back into a Keras model.
TFLite files go to `<root>/<name>/tflite/<name>-v<version>-{float32,float16,int8}.tflite`
(`serving_default` converted by `clearer_tf.litert.saved_model_to_tflite`, the project's one
conversion path; int8 is dynamic-range quantisation: int8 weights, float activations).

The export always runs under the TensorFlow backend; a network trained under JAX is
exported by rebuilding it from its genotype and loading its `.weights.h5` file.
Everything is written to a temporary folder first and renamed into place.
"""

from __future__ import annotations

import json
import os

import numpy as np

from clearer_tf import files, litert
from clearer_tf.genotype import Genotype

TFLITE_KINDS = litert.KINDS
WEIGHTS_COLLECTION = "clearer_weights"
TFLITE_METADATA = "clearer"


def _require_tensorflow_backend():
    import keras

    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(
            f"export needs the TensorFlow backend (this process uses {keras.backend.backend()!r}): "
            "run it with KERAS_BACKEND=tensorflow, e.g. `python train_scripts/export.py`, which "
            "sets it; weights trained under JAX load unchanged"
        )


def build_serving_model(genotype, weights):
    """`with_padding(build_network(genotype))` with `weights` (a `.weights.h5` file) loaded."""
    from clearer_tf.network import build_network, with_padding

    network = build_network(genotype)
    files.load_weights(network, weights)
    return with_padding(network, name="clearer_serving")


def export_saved_model(genotype, weights, root="saved_models", name="clearer", version=1,
                       overwrite=False, metadata=None):
    """Writes the SavedModel to `<root>/<name>/<version>/` and returns that path.

    Args:
        genotype: `Genotype`, dict or `genotype.json` path of the trained network.
        weights: its `.weights.h5` file (from any backend).
        root, name, version: TF Serving layout; `version` is a positive integer.
        overwrite: replace an existing version folder (else FileExistsError).
        metadata: extra JSON fields for `assets.extra/clearer.json`.
    """
    _require_tensorflow_backend()
    import keras
    import tensorflow as tf

    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"--version must be a positive integer, got {version!r}")
    genotype = Genotype.coerce(genotype)
    target = os.path.join(os.fspath(root), name, str(version))
    if os.path.exists(target) and not overwrite:
        raise FileExistsError(f"{target} already exists (use another --version or --overwrite)")
    model = build_serving_model(genotype, weights)
    channels = genotype.image_channels

    archive = keras.export.ExportArchive()
    # No archive.track(model): add_endpoint tracks the variables the endpoints use, and the
    # lookup-table walk of track() fails on the modules' tuple-keyed layer dicts.

    def serve_float(image):
        return {"restored": model(checked_input(image, channels), training=False)}

    def serve_uint8(image):
        restored = model(tf.cast(checked_input(image, channels), tf.float32) / 255.0, training=False)
        restored = tf.round(tf.clip_by_value(restored, 0.0, 1.0) * 255.0)
        return {"restored": tf.cast(restored, tf.uint8)}

    archive.add_endpoint("serving_default", serve_float, input_signature=[
        tf.TensorSpec([None, None, None, channels], tf.float32, name="image")])
    archive.add_endpoint("serving_uint8", serve_uint8, input_signature=[
        tf.TensorSpec([None, None, None, channels], tf.uint8, name="image")])
    # The backing tf.Variables, which the endpoints already hold: the checkpoint then stores
    # each value once (Keras variable wrappers would be saved as a second copy).
    archive.add_variable_collection(WEIGHTS_COLLECTION, [v.value for v in model.weights])

    with files.atomic_dir(target, overwrite=overwrite) as tmp:
        archive.write_out(tmp, verbose=False)
        files.write_json(os.path.join(tmp, "assets.extra", "clearer.json"), {
            "genotype": genotype.to_dict(),
            "weights": os.path.basename(os.fspath(weights)),
            WEIGHTS_COLLECTION: [v.path for v in model.weights],
            "signatures": {
                "serving_default": "image float32 [N,H,W,C] in [0,1] -> restored float32 (not clipped)",
                "serving_uint8": "image uint8 [N,H,W,C] -> restored uint8",
            },
            "any_size": f"reflect-padded to a multiple of {2 ** len(genotype.cells)} inside, cropped back",
            **(metadata or {}),
        })
    return target


def checked_input(image, channels):
    """`image` after in-graph checks: rank 4, `channels` channels, finite values (an
    InvalidArgumentError naming the expected shape otherwise; a serving signature would
    else reshape a wrong channel count into more images, or return NaN everywhere)."""
    import tensorflow as tf

    expected = f"image must be [batch, height, width, {channels}]"
    checks = [tf.debugging.assert_rank(image, 4, message=expected),
              tf.debugging.assert_equal(tf.shape(image)[-1], channels, message=expected)]
    if image.dtype.is_floating:
        checks.append(tf.debugging.assert_all_finite(image, "image has NaN or Inf values"))
    with tf.control_dependencies(checks):
        return tf.identity(image)


def training_metadata(summary: dict) -> dict:
    """What `clearer.json` keeps of a `train_summary.json`."""
    return {"training": {k: summary.get(k) for k in ("data", "train_config", "validation")}}


def convert_tflite(saved_model_dir, path, kind="float32"):
    """Converts the `serving_default` signature of a SavedModel to a `.tflite` file.

    kind: `float32`; `float16` (float16 weights, computed in float32 on CPU); `int8`
    (dynamic-range quantisation: int8 weights, activations quantised on the fly).
    """
    if kind not in TFLITE_KINDS:
        raise ValueError(f"--tflite kind must be one of {', '.join(TFLITE_KINDS)}, got {kind!r}")
    model = litert.saved_model_to_tflite(saved_model_dir, kind)
    record = os.path.join(os.fspath(saved_model_dir), "assets.extra", "clearer.json")
    if os.path.isfile(record):
        with open(record, encoding="utf-8") as f:
            model = with_tflite_metadata(model, json.load(f))
    files.write_bytes(path, model)
    return os.fspath(path)


def with_tflite_metadata(model: bytes, record: dict) -> bytes:
    """The TFLite flatbuffer `model` with `record` (genotype, training data) as its
    `TFLITE_METADATA` entry, which interpreters ignore."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    keep = {k: v for k, v in record.items() if k != WEIGHTS_COLLECTION}
    flat = flatbuffer_utils.read_model_from_bytearray(bytearray(model))
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(json.dumps(keep).encode(), np.uint8)
    flat.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = TFLITE_METADATA, len(flat.buffers) - 1
    flat.metadata = [*(flat.metadata or []), entry]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(flat))


def tflite_metadata(path) -> dict:
    """The `TFLITE_METADATA` entry of a `.tflite` file ({} when it has none)."""
    from tensorflow.lite.python import schema_py_generated as schema

    with open(path, "rb") as f:
        data = bytearray(f.read())
    try:
        model = schema.Model.GetRootAs(data, 0)
        for i in range(model.MetadataLength()):
            entry = model.Metadata(i)
            if entry.Name() == TFLITE_METADATA.encode():
                return json.loads(model.Buffers(entry.Buffer()).DataAsNumpy().tobytes())
    except Exception:  # not a flatbuffer we can read: no metadata
        return {}
    return {}


def export(genotype, weights, root="saved_models", name="clearer", version=1, tflite=(),
           overwrite=False, metadata=None) -> dict:
    """SavedModel plus the requested TFLite kinds; returns {"saved_model": path, kind: path}."""
    for kind in tflite:
        if kind not in TFLITE_KINDS:
            raise ValueError(f"--tflite kind must be one of {', '.join(TFLITE_KINDS)}, got {kind!r}")
    out = {"saved_model": export_saved_model(genotype, weights, root, name, version, overwrite, metadata)}
    for kind in tflite:
        path = os.path.join(os.fspath(root), name, "tflite", f"{name}-v{version}-{kind}.tflite")
        out[kind] = convert_tflite(out["saved_model"], path, kind)
    return out


def tflite_predictor(path, num_threads=None, tile="auto", overlap=96):
    """NHWC float32 -> NHWC float32 with the LiteRT interpreter at any input size.

    The input is resized (`resize_tensor_input`) whenever the shape changes, checked and
    tiled above the tile size (`evaluation.guarded`). The returned function has a
    `.channels` attribute and the `.interpreter`.
    """
    from clearer_tf.evaluation import guarded, network_multiple
    from clearer_tf.quiet import quietly

    from ai_edge_litert.interpreter import Interpreter

    with quietly():
        interpreter = Interpreter(model_path=os.fspath(path), num_threads=num_threads)
        interpreter.allocate_tensors()
    (inp,) = interpreter.get_input_details()
    (out,) = interpreter.get_output_details()
    state = {"shape": tuple(inp["shape"])}

    def predict(images):
        images = np.ascontiguousarray(images, np.float32)
        if tuple(images.shape) != state["shape"]:
            interpreter.resize_tensor_input(inp["index"], list(images.shape), strict=False)
            interpreter.allocate_tensors()
            state["shape"] = tuple(images.shape)
        interpreter.set_tensor(inp["index"], images)
        if not state.get("invoked"):  # the delegate announces itself on the first call
            with quietly():
                interpreter.invoke()
            state["invoked"] = True
        else:
            interpreter.invoke()
        return np.array(interpreter.get_tensor(out["index"]))

    checked = guarded(predict, int(inp["shape_signature"][-1]), tile, overlap,
                      network_multiple(tflite_metadata(path)))
    checked.interpreter = interpreter
    return checked
