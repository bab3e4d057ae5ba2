"""Ship a trained network as `saved_models/<name>/`: SavedModel, genotype, model card.

`ship(train_dir, name, evaluations)` exports the best weights of a finished training
folder (`train_summary.json` present) as the TF Serving SavedModel `<name>/<version>/`
(the only copy of the weights), copies `genotype.json`, and writes the model card twice:
`card.json` (data) and `README.md` (for people). The card gathers what a user needs to
trust the numbers: search and training data, iterations, wall time and device (from the
genotype's search record and the training summary), and PSNR/SSIM with their protocol
(from `evaluate.py` summaries). It also states the self-check the test suite runs on every
shipped model: restore one test image and beat the degraded input by `min_gain_db`.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np

from clearer_tf import files
from clearer_tf.genotype import Genotype
from clearer_tf.pretrained import CARD_FILE, GENOTYPE_FILE

CARD_FORMAT = 1
CHECK_TOLERANCE_DB = 0.5
"""The stated self-check margin is the measured gain minus this (other hardware, other
kernels: the restored image may differ in the last bits)."""


def _read_json(path, what):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise ValueError(f"{what} {path}: not found") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{what} {path}: not valid JSON ({e})") from None


def read_evaluation(summary):
    """An `evaluate.py` summary (a dict or its `summary.json` path), checked: ValueError
    naming the file unless it has the mean PSNR, SSIM and input PSNR."""
    data = summary if isinstance(summary, dict) else _read_json(summary, "evaluation summary")
    mean = data.get("mean") if isinstance(data, dict) else None
    if not isinstance(mean, dict) or not all(
            isinstance(mean.get(k), (int, float)) for k in ("psnr", "ssim", "input_psnr")):
        raise ValueError(f"evaluation summary {summary if not isinstance(summary, dict) else '(dict)'}: "
                         "not an evaluate.py summary.json (needs mean psnr, ssim and input_psnr)")
    return data


def _protocol_label(summary) -> str:
    config = summary.get("config", {})
    label = "x8 ensemble" if config.get("ensemble") else "single pass"
    if config.get("y_channel"):
        label += ", Y channel"
    if config.get("crop_border"):
        label += f", border {config['crop_border']}"
    return label


def _set_name(path) -> str:
    """`Set12` for `.../Set12`; `BSDS500/val` for `.../BSDS500/val` (a split name needs its set)."""
    parts = os.path.normpath(str(path)).split(os.sep)
    if parts[-1].lower() in ("train", "val", "test", "clean", "rainy") and len(parts) > 1:
        return "/".join(parts[-2:])
    return parts[-1]


def evaluation_rows(summaries) -> list:
    """One card row per `evaluate.py` summary and protocol (whole image, 64x64 patches)."""
    rows = []
    for summary in summaries:
        mean, config = summary["mean"], summary.get("config", {})
        data = _set_name(summary.get("data", "?"))
        degradation = summary.get("protocol", {}).get("degradation", {})
        base = {"data": data, "images": summary.get("images"), "degradation": degradation,
                "seed": config.get("seed", 0), "input_psnr": mean["input_psnr"]}
        rows.append({**base, "protocol": f"whole image (CLEARER), {_protocol_label(summary)}",
                     "psnr": mean["psnr"], "ssim": mean["ssim"]})
        if "patch_psnr" in mean:
            size = config.get("patch_size", 64)
            rows.append({**base, "protocol": f"{size}x{size} patches (CLEARER-P), {_protocol_label(summary)}",
                         "psnr": mean["patch_psnr"], "ssim": mean["patch_ssim"]})
    return rows


def self_check(model, item, degradation, seed=0) -> dict:
    """PSNR of the degraded and the restored `item` (`(name, clean)` or `(name, degraded, clean)`)."""
    from clearer_tf.evaluation import degrade_items, keras_predictor
    from clearer_tf.metrics import psnr

    (name, degraded, clean), = degrade_items([item], degradation, seed)
    restored = np.clip(keras_predictor(model)(degraded[None])[0], 0.0, 1.0)
    return {"image": name, "input_psnr": float(psnr(degraded[None], clean[None])[0]),
            "psnr": float(psnr(restored[None], clean[None])[0])}


def training_segments(train_summary, version, previous_card=None) -> list:
    """The runs that made the weights, oldest first: the `previous_card`'s (the shipped version
    a warm-started training continued from) and this one (`from_step` -> `to_step`)."""
    warm = train_summary.get("warm_start") or {}
    this = {"version": version, "from_step": warm.get("step", 0), "to_step": train_summary.get("iterations_done"),
            "wall_seconds": train_summary.get("wall_seconds", train_summary.get("seconds_this_run")),
            "device": train_summary.get("device"), "backend": train_summary.get("backend"),
            "rewarmup": warm.get("rewarmup") if warm else None}
    if previous_card is None:
        return [this]
    t = previous_card["training"]
    earlier = t.get("segments") or [{
        "version": previous_card.get("version"), "from_step": 0, "to_step": t.get("iterations"),
        "wall_seconds": t.get("wall_seconds"), "device": t.get("device"), "backend": t.get("backend"),
        "rewarmup": None}]
    if earlier[-1]["to_step"] != this["from_step"]:
        raise ValueError(f"the training continued from step {this['from_step']}, but the earlier version "
                         f"{previous_card.get('version')} ended at step {earlier[-1]['to_step']}")
    return [*earlier, this]


def build_card(name, version, genotype, train_summary, evaluations, check, note=None,
               previous_card=None) -> dict:
    """The model card as data (see `render_card` for the Markdown); `previous_card`: the
    shipped version a warm-started training continued from (its runs are added up)."""
    search = genotype.search or {}
    config = train_summary.get("train_config", {})
    validation = train_summary.get("validation", {})
    segments = training_segments(train_summary, version, previous_card)
    return {
        "format": CARD_FORMAT,
        "name": name,
        "version": version,
        "note": note,
        "task": genotype.task,
        "genotype": genotype.short(),
        "parameters": train_summary.get("parameters"),
        "image_channels": genotype.image_channels,
        "search": {
            "data": _data_summary(genotype.data),
            "iterations": search.get("iterations"),
            "warmup": search.get("warmup"),
            "batch_size": search.get("batch_size"),
            "wall_seconds": search.get("wall_seconds"),
            "device": search.get("device"),
            "backend": search.get("backend"),
            # a genotype not found by our search (e.g. the paper's) says where it comes from
            "source": search.get("source", "search"),
            "note": search.get("note"),
        },
        "training": {
            "data": _data_summary(train_summary.get("data")),
            "images": len(train_summary.get("train_images", [])),
            "iterations": train_summary.get("iterations_done", config.get("iterations")),
            "schedule_iterations": config.get("iterations"),
            "batch_size": config.get("batch_size"),
            "patch_size": config.get("patch_size"),
            "learning_rate": config.get("learning_rate"),
            "wall_seconds": round(sum(seg["wall_seconds"] or 0.0 for seg in segments), 1),
            "segments": segments,
            "device": train_summary.get("device"),
            "backend": train_summary.get("backend"),
            "selection": {"images": validation.get("images"), "best_psnr": validation.get("best_psnr"),
                          "best_step": validation.get("best_step"), "protocol": validation.get("protocol")},
        },
        "evaluation": evaluation_rows(evaluations),
        "check": check,
    }


def _data_summary(data):
    """A data description with image lists replaced by their lengths (`<key>_count`)."""
    if not isinstance(data, dict):
        return data
    out = {}
    for key, value in data.items():
        if isinstance(value, list) and len(value) > 4:
            out[f"{key}_count"] = len(value)
        elif key.endswith("data") and isinstance(value, str) and os.sep in value:
            out[key] = "/".join(os.path.normpath(value).split(os.sep)[-2:])  # no local roots
        else:
            out[key] = value
    return out


def _minutes(seconds):
    return "?" if seconds is None else f"{seconds / 60:.1f} min"


def _search_lines(s):
    if s.get("source", "search") != "search":
        return [f"- not searched by clearer-tf: genotype from {s['source']}"
                + (f" ({s['note']})" if s.get("note") else "")]
    return [f"- data: {json.dumps(s['data'])}",
            f"- {s['iterations']} iterations ({s['warmup']} warm-up), batch {s['batch_size']}; "
            f"{_minutes(s['wall_seconds'])} on {s['device']}"]


def render_card(card) -> str:
    """`README.md` of a shipped model."""
    s, t, c = card["search"], card["training"], card["check"]
    lines = [
        f"# {card['name']} (version {card['version']})", "",
        f"CLEARER network `{card['genotype']}` for {card['task']}, "
        f"{card['image_channels']} channel(s), {card['parameters']:,} parameters.", "",
        *([f"**Note.** {card['note']}", ""] if card.get("note") else []),
        "```python",
        "from clearer_tf.pretrained import load_pretrained",
        f"model = load_pretrained({card['name']!r})            # Keras model, ready for model.fit",
        f"model = load_pretrained({card['name']!r}, with_padding=True)  # any image size",
        "```", "",
        f"TF Serving: `saved_models/{card['name']}/{card['version']}/` (signatures `serving_default`, "
        "`serving_uint8`); TFLite on demand: `python train_scripts/export.py --pretrained "
        f"{card['name']} --tflite float32 float16 int8`.", "",
        "## Search", "",
        *_search_lines(s), "",
        "## Training", "",
        f"- data: {json.dumps(t['data'])} ({t['images']} images)",
        f"- {t['iterations']} iterations (cosine schedule over {t['schedule_iterations']}), batch "
        f"{t['batch_size']} of {t['patch_size']}x{t['patch_size']}, Adam lr {t['learning_rate']}; "
        f"{_minutes(t['wall_seconds'])} on {t['device']}",
        *([f"- in {len(t['segments'])} runs: " + "; ".join(
            f"steps {seg['from_step']}-{seg['to_step']} ({_minutes(seg['wall_seconds'])}, {seg['device']}"
            + (f", weights only, learning rate re-warmed over {seg['rewarmup']} steps" if seg["rewarmup"] else "")
            + ")" for seg in t["segments"])] if len(t.get("segments") or []) > 1 else []),
        f"- model selection: best of the validations on {len(t['selection']['images'] or [])} images "
        f"({t['selection']['best_psnr'] and round(t['selection']['best_psnr'], 2)} dB at step "
        f"{t['selection']['best_step']}); protocol: {t['selection']['protocol']}", "",
        "## Results", "",
        "| test set | images | degradation | protocol | input PSNR | PSNR | SSIM |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in card["evaluation"]:
        d = r["degradation"]
        degradation = f"gaussian sigma {d['sigma']}" if d.get("type") == "gaussian" else d.get("type", "?")
        lines.append(f"| {r['data']} | {r['images']} | {degradation}, seed {r['seed']} | {r['protocol']} | "
                     f"{r['input_psnr']:.2f} | {r['psnr']:.2f} | {r['ssim']:.4f} |")
    lines += [
        "", "PSNR in dB on [0, 1] data, no border crop; SSIM with an 11x11 Gaussian window "
        "(scikit-image's `gaussian_weights=True`). CLEARER-P: mean over non-overlapping 64x64 patches.", "",
        "## Self-check (run by the test suite on every shipped model)", "",
        f"Restore `{c['data']}/{c['image']}` ({c['degradation'].get('type')}, seed {c['seed']}) on the "
        f"CPU: the output must beat the degraded input ({c['input_psnr']:.2f} dB) by at least "
        f"{c['min_gain_db']:.2f} dB (measured at shipping: {c['psnr']:.2f} dB).", "",
    ]
    return "\n".join(lines)


def ship(train_dir, name, evaluations=(), root="saved_models", version=1, check_item=None,
         check_data="Set12", degradation=None, checkpoint="best", overwrite=False, note=None,
         continues=None) -> str:
    """Writes `<root>/<name>/` from a finished training folder; returns that folder.

    Args:
        train_dir: training output (`genotype.json`, `<checkpoint>.weights.h5`,
            `train_summary.json`).
        name: folder name under `root`.
        evaluations: `evaluate.py` `summary.json` paths or dicts (run on the trained model).
        version: SavedModel version.
        check_item: `(name, clean)` or `(name, degraded, clean)` image for the self-check.
        check_data: the name of the set `check_item` comes from (stated in the card).
        degradation: `GaussianNoise` / `RainStreaks` for a clean-only `check_item`.
        overwrite: replace an existing `<root>/<name>/`.
        note: a sentence for the top of the card (e.g. why the protocol differs).
        continues: the shipped model folder a warm-started training continued from (its
            card's runs and wall time are carried over).
    """
    from clearer_tf.export import export_saved_model, training_metadata
    from clearer_tf.network import build_network

    train_dir = os.fspath(train_dir)
    summary = _read_json(os.path.join(train_dir, "train_summary.json"), "training summary")
    genotype_path = os.path.join(train_dir, GENOTYPE_FILE)
    genotype = Genotype.load(genotype_path)
    weights = os.path.join(train_dir, f"{checkpoint}.weights.h5")
    if not os.path.isfile(weights):
        raise ValueError(f"weights {weights}: not found")
    if check_item is None:
        raise ValueError("check_item: give one test image for the self-check")
    evaluations = [read_evaluation(e) for e in evaluations]
    previous = None if continues is None else _read_json(os.path.join(os.fspath(continues), CARD_FILE), "model card")
    training_segments(summary, version, previous)  # refuses a gap before anything is written
    target = os.path.join(os.fspath(root), name)
    if os.path.exists(target) and not overwrite:
        raise FileExistsError(f"{target} already exists (use --overwrite)")

    model = build_network(genotype)
    model.load_weights(weights)
    measured = self_check(model, check_item, degradation)
    gain = measured["psnr"] - measured["input_psnr"]
    check = {"data": check_data, **measured, "seed": 0,
             "degradation": {"type": "real pairs"} if degradation is None else degradation.describe(),
             "min_gain_db": round(gain - CHECK_TOLERANCE_DB, 2)}

    with files.atomic_dir(target, overwrite=overwrite) as tmp:
        export_saved_model(genotype, weights, os.path.dirname(tmp), os.path.basename(tmp), version,
                           metadata=training_metadata(summary))
        shutil.copyfile(genotype_path, os.path.join(tmp, GENOTYPE_FILE))
        card = build_card(name, version, genotype, summary, evaluations, check, note, previous)
        files.write_json(os.path.join(tmp, CARD_FILE), card)
        files.write_bytes(os.path.join(tmp, "README.md"), render_card(card).encode())
    return target
