"""SavedModel (TF Serving layout, two signatures) and TFLite export, against the Keras model."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from clearer_tf.export import build_serving_model, export, tflite_predictor
from clearer_tf.genotype import Genotype
from clearer_tf.network import build_network
from net_helpers import randomise
from pipelines.tasks import load_eval_items

TINY = Genotype.from_string("F / P / F", base_width=4, stem_planes=4, stem_blocks=1)


def randomised_weights(path):
    """A network with weights of realistic scale (fresh ones are N(0, 0.001): output ~ 0)."""
    model = randomise(build_network(TINY))
    # Scale the last (linear) conv so the output has an image-like spread (std 0.25).
    x = np.random.default_rng(1).random((1, 64, 64, 1)).astype(np.float32)
    head = model.get_layer("head_conv")
    head.kernel.assign(head.kernel * (0.25 / np.asarray(model(x)).std()))
    model.save_weights(path)
    return model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    weights = str(root / "net.weights.h5")
    randomised_weights(weights)
    paths = export(TINY, weights, root / "saved_models", "tiny", 3, tflite=("float32", "float16", "int8"))
    reference = build_serving_model(TINY, weights)  # Keras, loaded from the same file
    return paths, reference, root


@pytest.fixture(scope="module")
def loaded(exported):
    return tf.saved_model.load(exported[0]["saved_model"])


@pytest.fixture(scope="module")
def image(set12_dir):
    return load_eval_items("denoise", set12_dir, 1)[0][1]


def test_layout_and_atomic_write(exported):
    paths, _, root = exported
    assert paths["saved_model"] == str(root / "saved_models" / "tiny" / "3")
    assert os.path.exists(os.path.join(paths["saved_model"], "saved_model.pb"))
    assert os.path.exists(os.path.join(paths["saved_model"], "assets.extra", "clearer.json"))
    leftovers = [d for d in os.listdir(root / "saved_models" / "tiny") if d.startswith(".")]
    assert not leftovers
    with pytest.raises(FileExistsError):
        export(TINY, str(root / "net.weights.h5"), root / "saved_models", "tiny", 3)


@pytest.mark.parametrize("crop", [(48, 64), (37, 53)])  # the second is not a multiple of 8
def test_saved_model_matches_keras_at_any_size(exported, loaded, image, crop):
    paths, reference, _ = exported
    h, w = crop
    batch = np.stack([image[:h, :w], image[100:100 + h, 60:60 + w]]).astype(np.float32)
    expected = np.asarray(reference.predict_on_batch(batch))
    assert expected.shape == batch.shape and expected.std() > 0.01  # not a trivial output
    restored = loaded.signatures["serving_default"](image=tf.constant(batch))["restored"].numpy()
    assert restored.shape == batch.shape
    assert np.abs(restored - expected).max() <= 1e-5

    as_uint8 = np.round(batch * 255).astype(np.uint8)
    out = loaded.signatures["serving_uint8"](image=tf.constant(as_uint8))["restored"].numpy()
    assert out.dtype == np.uint8 and out.shape == batch.shape
    keras_uint8 = np.asarray(reference.predict_on_batch(as_uint8.astype(np.float32) / 255.0))
    keras_uint8 = np.round(np.clip(keras_uint8, 0, 1) * 255)
    diff = np.abs(out.astype(np.int32) - keras_uint8)
    assert diff.max() <= 1 and (diff == 0).mean() > 0.99


def test_saved_model_cli_lists_both_signatures(exported):
    paths, _, _ = exported
    cli = shutil.which("saved_model_cli")
    command = [cli] if cli else [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]
    out = subprocess.run([*command, "show", "--all", "--dir", paths["saved_model"]],
                         capture_output=True, text=True, check=True,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}).stdout
    for text in ("signature_def['serving_default']", "signature_def['serving_uint8']",
                 "inputs['image']", "outputs['restored']", "DT_UINT8", "shape: (-1, -1, -1, 1)"):
        assert text in out, text


@pytest.mark.parametrize("kind, tolerance", [("float32", 1e-4), ("float16", 1e-2), ("int8", None)])
def test_tflite_runs_at_dynamic_size_with_parity(exported, image, kind, tolerance):
    pytest.importorskip("ai_edge_litert")
    paths, reference, _ = exported
    predict = tflite_predictor(paths[kind])
    assert predict.channels == 1
    for h, w in ((37, 53), (64, 48)):  # resized twice: resize_tensor_input each time
        x = image[None, 20:20 + h, 30:30 + w].astype(np.float32)
        expected = np.asarray(reference.predict_on_batch(x))
        out = predict(x)
        assert out.shape == x.shape and np.isfinite(out).all()
        error = np.abs(out - expected).max()
        if tolerance is not None:
            assert error <= tolerance, (kind, error)
        else:  # int8 dynamic range: runs and stays close to the float model
            assert error < 0.25 * np.abs(expected).max(), error
    assert os.path.getsize(paths["int8"]) < os.path.getsize(paths["float32"])


def test_export_cli_rejects_bad_input_in_one_line(tmp_path, run_cli):
    cases = [
        ([], "give --model-dir, or --weights with --genotype"),
        (["--model-dir", str(tmp_path)], "not an existing .weights.h5 file"),
        (["--weights", str(tmp_path / "w.weights.h5")], "--weights needs --genotype"),
        (["--pretrained", "no-such-model"], "no shipped model 'no-such-model'"),
    ]
    for argv, expected in cases:
        code, line = run_cli("export", [*argv, "--out", str(tmp_path / "out")])
        assert code == 2 and line.startswith("export.py: error: ") and expected in line, line
    assert not (tmp_path / "out").exists()
