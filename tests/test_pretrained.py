"""Shipping a trained model (SavedModel + card) and `load_pretrained`; every shipped model's self-check."""

import json
import math
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from clearer_tf import pretrained
from clearer_tf.evaluation import EvalConfig, evaluate, keras_predictor, write_report
from clearer_tf.genotype import Genotype
from clearer_tf.network import build_network
from clearer_tf.presets import TrainConfig
from clearer_tf.shipping import CHECK_TOLERANCE_DB, build_card, render_card, ship
from clearer_tf.training import train_network
from pipelines.noise import GaussianNoise
from pipelines.rain import RainStreaks
from pipelines.tasks import load_eval_items, load_task_data

TINY = Genotype.from_string("F / P / F", base_width=4, stem_planes=4, stem_blocks=1)
SIGMA = 50.0


def numpy_psnr(restored, clean):
    mse = np.mean((np.asarray(restored, np.float64) - np.asarray(clean, np.float64)) ** 2)
    return 10 * math.log10(1.0 / mse)


@pytest.fixture(scope="module")
def shipped(tmp_path_factory, bsds_train_dir, set12_dir):
    """A tiny network trained on real images, evaluated, and shipped into a temporary root."""
    root = tmp_path_factory.mktemp("ship")
    data = load_task_data("denoise", weights_data=bsds_train_dir, arch_data=bsds_train_dir, sigma=SIGMA)
    val = load_eval_items("denoise", set12_dir, 1)[:2]
    config = TrainConfig(iterations=150, batch_size=8, patch_size=32, validate_every=150, jit_compile=False)
    train_dir = root / "train"
    train_network(TINY, data, config, train_dir, val_items=val, verbose=0)
    reference = build_network(TINY)
    reference.load_weights(train_dir / "best.weights.h5")
    test_items = load_eval_items("denoise", set12_dir, 1)[:2]
    result = evaluate(keras_predictor(reference), test_items, GaussianNoise(SIGMA), EvalConfig(patches=True),
                      description={"data": str(set12_dir)})
    write_report(result, root / "eval", sheet_count=0)
    folder = ship(train_dir, "tiny-sigma50", [root / "eval" / "summary.json"], root / "models", version=2,
                  check_item=test_items[0], check_data="Set12", degradation=GaussianNoise(SIGMA))
    return {"root": root / "models", "folder": folder, "reference": reference, "eval": result.summary,
            "train_dir": train_dir, "check_item": test_items[0]}


def test_ship_writes_savedmodel_genotype_and_card(shipped):
    folder = shipped["folder"]
    assert sorted(os.listdir(folder)) == ["2", "README.md", "card.json", "genotype.json"]
    assert os.path.isfile(os.path.join(folder, "2", "saved_model.pb"))
    # The weights are stored once: the values in the checkpoint add up to the network's size.
    reader = tf.train.load_checkpoint(os.path.join(folder, "2", "variables", "variables"))
    stored = sum(int(np.prod(shape)) for key, shape in reader.get_variable_to_shape_map().items()
                 if key != "_CHECKPOINTABLE_OBJECT_GRAPH")
    assert stored == sum(int(np.prod(v.shape)) for v in shipped["reference"].weights)
    assert not [d for d in os.listdir(shipped["root"]) if d.startswith(".")], "temporary folder left"
    card = pretrained.model_card("tiny-sigma50", shipped["root"])
    assert card["genotype"] == "F / P / F" and card["version"] == 2 and card["task"] == "denoise"
    assert card["training"]["iterations"] == 150 and card["training"]["schedule_iterations"] == 150
    assert card["training"]["wall_seconds"] > 0 and "CPU" in card["training"]["device"]
    whole, patches = card["evaluation"]
    assert whole["psnr"] == pytest.approx(shipped["eval"]["mean"]["psnr"])
    assert patches["psnr"] == pytest.approx(shipped["eval"]["mean"]["patch_psnr"])
    assert "CLEARER-P" in patches["protocol"] and whole["degradation"]["sigma"] == SIGMA
    readme = open(os.path.join(folder, "README.md"), encoding="utf-8").read()
    assert f"{whole['psnr']:.2f}" in readme and "load_pretrained('tiny-sigma50')" in readme
    # The stated self-check margin: the measured gain (NumPy PSNR here) minus the tolerance.
    name, clean = shipped["check_item"]
    noisy = GaussianNoise(SIGMA).apply_eval(clean, name, 0)
    restored = np.clip(np.asarray(shipped["reference"].predict_on_batch(noisy[None]))[0], 0, 1)
    gain = numpy_psnr(restored, clean) - numpy_psnr(noisy, clean)
    assert card["check"]["min_gain_db"] == pytest.approx(gain - CHECK_TOLERANCE_DB, abs=0.01)


def test_load_pretrained_has_the_trained_weights_and_matches_the_savedmodel(shipped, set12_dir):
    model = pretrained.load_pretrained("tiny-sigma50", root=shipped["root"])
    reference = shipped["reference"]  # loaded from best.weights.h5, independently of the export
    assert [v.path for v in model.weights] == [v.path for v in reference.weights]
    for got, want in zip(model.weights, reference.weights):
        np.testing.assert_array_equal(got.numpy(), want.numpy())
    image = load_eval_items("denoise", set12_dir, 1)[1][1][:45, :61]  # not a multiple of 8
    served = tf.saved_model.load(os.path.join(shipped["folder"], "2")).signatures["serving_default"]
    expected = served(image=tf.constant(image[None]))["restored"].numpy()
    padded = pretrained.load_pretrained("tiny-sigma50", root=shipped["root"], with_padding=True)
    np.testing.assert_allclose(np.asarray(padded.predict_on_batch(image[None])), expected, atol=1e-5)


def test_load_pretrained_fine_tunes_with_fit(shipped, bsds_train_dir):
    model = pretrained.load_pretrained("tiny-sigma50", root=shipped["root"])
    clean = np.stack([item[1][:32, :32] for item in load_eval_items("denoise", bsds_train_dir, 1)[:4]])
    noisy = clean + np.random.default_rng(0).normal(0, SIGMA / 255, clean.shape).astype(np.float32)
    before = [v.numpy().copy() for v in model.trainable_weights]
    model.compile(keras.optimizers.Adam(1e-3), "mse")
    history = model.fit(noisy, clean, batch_size=2, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][-1])
    assert any(not np.array_equal(b, v.numpy()) for b, v in zip(before, model.trainable_weights))


def test_load_pretrained_errors_name_what_is_wrong(shipped, tmp_path):
    with pytest.raises(ValueError, match=r"no shipped model 'nope' .*known: tiny-sigma50"):
        pretrained.load_pretrained("nope", root=shipped["root"])
    with pytest.raises(ValueError, match="no version 7"):
        pretrained.load_pretrained("tiny-sigma50", version=7, root=shipped["root"])
    assert pretrained.list_pretrained(tmp_path / "missing") == []
    # A genotype that does not fit the stored weights is refused, not silently half-loaded.
    other = tmp_path / "models"
    os.makedirs(other)
    import shutil

    shutil.copytree(shipped["folder"], other / "changed")
    Genotype.from_string("P / P / F", base_width=4, stem_planes=4, stem_blocks=1).save(
        other / "changed" / "genotype.json")
    with pytest.raises(ValueError, match="do not match"):
        pretrained.load_pretrained("changed", root=other)


def test_card_of_a_genotype_not_searched_says_where_it_comes_from(shipped):
    searched = pretrained.model_card("tiny-sigma50", shipped["root"])
    assert searched["search"]["source"] == "search"
    given = Genotype.from_string("F / P / F", search={"source": "the CLEARER paper", "note": "Fig. 3"})
    summary = json.loads((shipped["train_dir"] / "train_summary.json").read_text())
    evaluation = json.loads((shipped["root"].parent / "eval" / "summary.json").read_text())
    evaluation["data"] = os.path.join("somewhere", "BSDS500", "val")
    card = build_card("given", 1, given, summary, [evaluation], searched["check"], note="Trained briefly.")
    text = render_card(card)
    assert card["search"]["source"] == "the CLEARER paper" and card["note"] == "Trained briefly."
    assert "**Note.** Trained briefly." in text and "| BSDS500/val | 2 |" in text
    assert searched["note"] is None and "**Note.**" not in open(os.path.join(shipped["folder"], "README.md")).read()
    assert "not searched by clearer-tf: genotype from the CLEARER paper (Fig. 3)" in text
    assert "None iterations" not in text


def test_ship_cli_rejects_bad_input_in_one_line(tmp_path, run_cli):
    code, line = run_cli("ship", ["--model-dir", str(tmp_path), "--name", "x", "--out", str(tmp_path / "out")])
    assert code == 2 and line.startswith("ship.py: error: --model-dir") and "train_summary.json" in line
    assert not (tmp_path / "out").exists()


# --- every model shipped in the repository -------------------------------------------------
SHIPPED = pretrained.list_pretrained(pretrained.REPO_MODELS)
CHECK_DATA = {"Set12": "set12_dir", "set12": "set12_dir", "rain100l": "rain_dir", "Rain100L-sample": "rain_dir"}


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_beats_its_degraded_input_by_the_stated_margin(name, request):
    card = pretrained.model_card(name, pretrained.REPO_MODELS)
    check = card["check"]
    folder = request.getfixturevalue(CHECK_DATA[check["data"]])
    model = pretrained.load_pretrained(name, root=pretrained.REPO_MODELS, with_padding=True)
    items = {item[0]: item for item in load_eval_items(card["task"], folder, card["image_channels"])}
    item = items[check["image"]]
    if len(item) == 3:
        _, degraded, clean = item
    else:
        stated = dict(check["degradation"])
        kind = stated.pop("type")
        if kind == "gaussian":
            degradation = GaussianNoise(stated["sigma"])
        else:
            assert kind == "rain_streaks", kind
            degradation = RainStreaks(**{k: tuple(v) if isinstance(v, list) else v for k, v in stated.items()})
        clean = item[1]
        degraded = degradation.apply_eval(clean, item[0], check["seed"])
    restored = np.clip(np.asarray(model.predict_on_batch(degraded[None]))[0], 0, 1)
    gain = numpy_psnr(restored, clean) - numpy_psnr(degraded, clean)
    assert gain >= check["min_gain_db"], (name, gain, check)
    with open(os.path.join(pretrained.model_dir(name, pretrained.REPO_MODELS), "card.json")) as f:
        assert json.load(f)["name"] == name
