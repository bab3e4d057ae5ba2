"""Restoring: bad input is refused (wrong rank or channels, NaN/Inf) or flagged (0-255
scale) by every predictor and serving signature; tiled restoration equals the whole image."""

import warnings

import numpy as np
import pytest
import tensorflow as tf

from clearer_tf import files
from clearer_tf.evaluation import keras_predictor, load_predictor
from clearer_tf.export import export
from clearer_tf.genotype import Genotype
from clearer_tf.inputs import InputRangeWarning, check_images
from clearer_tf.network import build_network
from net_helpers import randomise
from clearer_tf.pretrained import tiled_predict
from clearer_tf.tiling import restore_tiled, tile_starts
from pipelines.noise import GaussianNoise
from pipelines.tasks import load_eval_items

TINY = Genotype.from_string("F / P / F", base_width=4, stem_planes=4, stem_blocks=1)


def realistic_network(seed=0):
    return randomise(build_network(TINY), seed)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("inference")
    weights = root / "net.weights.h5"
    model = realistic_network()
    model.save_weights(weights)
    paths = export(TINY, weights, root / "models", "tiny", 1, tflite=("float32",))
    return model, paths


@pytest.fixture(scope="module")
def image(set12_dir):
    return load_eval_items("denoise", set12_dir, 1)[0][1][:40, :48]


def predictors(exported):
    model, paths = exported
    yield "keras", keras_predictor(model)
    yield "saved_model", load_predictor(paths["saved_model"])[0]
    pytest.importorskip("ai_edge_litert")
    yield "tflite", load_predictor(paths["float32"])[0]


def test_check_images_one_line_errors_and_range_warning():
    with pytest.raises(ValueError, match=r"expected shape \[batch, height, width, 1\], got \[1, 8, 8, 3\]"):
        check_images(np.zeros((1, 8, 8, 3)), 1)
    with pytest.raises(ValueError, match=r"got \[8, 8, 1\]"):
        check_images(np.zeros((8, 8, 1)), 1)
    bad = np.zeros((1, 8, 8, 1))
    bad[0, 3, 4, 0], bad[0, 1, 1, 0] = np.nan, np.inf
    with pytest.raises(ValueError, match=r"2 NaN or Inf value\(s\)"):
        check_images(bad, 1)
    with pytest.warns(InputRangeWarning, match=r"maximum 255 is far above 1"):
        check_images(np.full((1, 8, 8, 1), 255.0), 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_images(np.full((1, 8, 8, 1), 1.8), 1)  # unclipped noisy [0, 1] data: no warning


def test_every_predictor_refuses_wrong_channels_and_non_finite_input(exported, image):
    rgb = np.repeat(image[None], 3, axis=-1)
    nan = image[None].copy()
    nan[0, 5, 5, 0] = np.nan
    for kind, predict in predictors(exported):
        with pytest.raises(ValueError, match=r"expected shape \[batch, height, width, 1\]"):
            predict(rgb)
        with pytest.raises(ValueError, match=r"NaN or Inf"):
            predict(nan)
        with pytest.warns(InputRangeWarning):
            out = predict(image[None] * 255.0)
        assert out.shape == (1, 40, 48, 1), kind


def test_serving_signatures_refuse_wrong_shapes_and_nan(exported, image):
    _, paths = exported
    signatures = tf.saved_model.load(paths["saved_model"]).signatures
    serve, serve_uint8 = signatures["serving_default"], signatures["serving_uint8"]
    batch = np.stack([image, image[::-1]])  # two grayscale images: fine
    assert serve(image=tf.constant(batch))["restored"].shape == (2, 40, 48, 1)
    rgb = np.repeat(batch, 3, axis=-1)  # used to come back as 6 images
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"image must be \[batch, height, width, 1\]"):
        serve(image=tf.constant(rgb))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"image must be \[batch, height, width, 1\]"):
        serve_uint8(image=tf.constant(np.round(rgb * 255).astype(np.uint8)))
    nan = batch.copy()
    nan[1, 0, 0, 0] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"NaN or Inf"):
        serve(image=tf.constant(nan))


def test_tflite_interpreter_fails_on_a_wrong_channel_count(exported, image):
    litert = pytest.importorskip("ai_edge_litert.interpreter")
    _, paths = exported
    interpreter = litert.Interpreter(model_path=paths["float32"])
    index = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(index, [1, 40, 48, 3], strict=False)
    interpreter.allocate_tensors()
    interpreter.set_tensor(index, np.repeat(image[None], 3, axis=-1))
    with pytest.raises(RuntimeError, match="RESHAPE"):  # used to return (3, 40, 48, 1)
        interpreter.invoke()


def test_tile_starts_cover_the_axis():
    assert tile_starts(100, 128, 32) == [0]
    assert tile_starts(256, 128, 64) == [0, 64, 128]
    assert tile_starts(300, 128, 32) == [0, 96, 172]


def test_blending_is_exact_for_a_pixelwise_function(bsds_val_dir):
    clean = load_eval_items("denoise", bsds_val_dir, 1)[0][1][None]  # 481 x 321: not a multiple of 8
    out = restore_tiled(lambda x: np.sqrt(x) + 1.0, clean, tile=64, overlap=16, multiple=8)
    np.testing.assert_allclose(out, np.sqrt(clean) + 1.0, rtol=1e-6)


def psnr64(restored, clean):
    mse = np.mean((np.clip(restored, 0, 1).astype(np.float64) - clean.astype(np.float64)) ** 2)
    return 10 * np.log10(1.0 / mse)


def test_tiled_restoration_equals_whole_image_within_0_01_db(set12_dir, bsds_val_dir):
    model = realistic_network(seed=1)
    whole = keras_predictor(model, tile=0)
    tiled = keras_predictor(model, tile=128, overlap=64)
    items = load_eval_items("denoise", set12_dir, 1)[:2] + load_eval_items("denoise", bsds_val_dir, 1)[:2]
    for name, clean in items:
        noisy = GaussianNoise(50.0).apply_eval(clean, name, 0)[None]
        reference, out = whole(noisy), tiled(noisy)
        assert out.shape == reference.shape
        assert np.abs(out - reference).max() > 0  # really tiled (not a whole-image pass)
        assert abs(psnr64(out[0], clean) - psnr64(reference[0], clean)) < 0.01, name


def test_auto_tiling_above_a_megapixel_and_load_pretrained_path():
    model = realistic_network(seed=2)
    shapes = []

    def spy(images):
        shapes.append(images.shape)
        return images

    keras_like = keras_predictor(model)  # auto
    assert keras_like(np.zeros((1, 40, 48, 1), np.float32)).shape == (1, 40, 48, 1)
    from clearer_tf import tiling

    big = np.full((1, 1100, 1000, 1), 0.5, np.float32)
    tiling.tiled(spy)(big)
    assert shapes and all(s[1] <= tiling.AUTO_TILE and s[2] <= tiling.AUTO_TILE for s in shapes)
    shapes.clear()
    tiling.tiled(spy)(big[:, :1000])  # exactly one megapixel: whole
    assert shapes == [(1, 1000, 1000, 1)]
    restorer = tiled_predict(build_network(TINY), tile=64, overlap=16)
    with pytest.raises(ValueError, match=r"got \[1, 8, 8, 3\]"):
        restorer.predict(np.zeros((1, 8, 8, 3), np.float32))
    assert restorer.predict(np.zeros((1, 130, 70, 1), np.float32)).shape == (1, 130, 70, 1)


def test_keras_metadata_round_trip(tmp_path):
    model = build_network(TINY)
    files.save_model(model, tmp_path / "m.keras", metadata={"training": {"data": {"task": "denoise"}}})
    assert files.keras_metadata(tmp_path / "m.keras") == {"training": {"data": {"task": "denoise"}}}
    assert files.load_model(tmp_path / "m.keras").count_params() == model.count_params()
