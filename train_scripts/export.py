#!/usr/bin/env python
"""Export a trained network: TF Serving SavedModel (+ TFLite float32/float16/int8).

    python train_scripts/export.py --model-dir runs/train --name clearer-denoise --version 1 --tflite
    python train_scripts/export.py --pretrained denoise-gray-sigma50-interim --tflite int8   # a shipped model

Writes `<out>/<name>/<version>/` (signatures `serving_default`: float32 image in [0, 1],
any size -> `restored`; `serving_uint8`: uint8 -> uint8) and, with --tflite,
`<out>/<name>/tflite/<name>-v<version>-<kind>.tflite`. Runs under the TensorFlow backend
whatever KERAS_BACKEND says: weights trained under JAX load unchanged.
"""

import json
import os
import sys

os.environ["KERAS_BACKEND"] = "tensorflow"  # before anything imports keras
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _cli  # noqa: E402  (puts the repo root on sys.path)

KINDS = ("float32", "float16", "int8")


def parse_args(argv=None):
    p = _cli.Parser(prog="export.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--model-dir", metavar="DIR", help="training folder (genotype.json + weights)")
    p.add_argument("--pretrained", metavar="NAME",
                   help="a shipped model (saved_models/NAME): only convert its SavedModel to TFLite, "
                        "into saved_models/NAME/tflite/")
    p.add_argument("--checkpoint", choices=("best", "last"), default="best",
                   help="which weights of --model-dir (default: best)")
    p.add_argument("--weights", metavar="H5", help="a .weights.h5 file (with --genotype)")
    p.add_argument("--genotype", metavar="JSON", help="genotype.json (default: <model-dir>/genotype.json)")
    p.add_argument("--name", default="clearer", help="model name in the serving layout (default: clearer)")
    p.add_argument("--version", type=int, default=1, help="positive integer (default 1)")
    p.add_argument("--out", default="saved_models", help="root folder (default: saved_models)")
    p.add_argument("--tflite", nargs="*", choices=KINDS, metavar="KIND",
                   help=f"also TFLite files: any of {', '.join(KINDS)} (no value: all three)")
    p.add_argument("--sigma", type=_cli.sigma, metavar="S",
                   help="noise level the weights were trained for, recorded in the export (default: "
                        "the training summary's; evaluate.py reads it)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing version")
    return p, p.parse_args(argv)


def main(argv=None):
    parser, args = parse_args(argv)
    from clearer_tf.genotype import Genotype

    if args.pretrained is not None:
        return convert_pretrained(parser, args)
    try:
        if (args.model_dir is None) == (args.weights is None):
            raise ValueError("give --model-dir, or --weights with --genotype")
        if args.weights is not None and args.genotype is None:
            raise ValueError("--weights needs --genotype")
        weights = args.weights or os.path.join(args.model_dir, f"{args.checkpoint}.weights.h5")
        genotype_path = args.genotype or os.path.join(args.model_dir, "genotype.json")
        if not weights.endswith(".weights.h5") or not os.path.isfile(weights):
            raise ValueError(f"weights {weights}: not an existing .weights.h5 file")
        genotype = Genotype.coerce(genotype_path)
        if args.version < 1:
            raise ValueError(f"--version must be a positive integer, got {args.version}")
        _cli.check_model_name(args.name)
        _cli.check_writable_dir(args.out)
        target = os.path.join(args.out, args.name, str(args.version))
        if os.path.exists(target) and not args.overwrite:
            raise ValueError(f"{target} already exists (another --version, or --overwrite)")
    except (ValueError, OSError) as e:
        parser.error(str(e))
    from clearer_tf.export import export, training_metadata

    metadata = {}
    summary = os.path.join(args.model_dir or "", "train_summary.json")
    if args.model_dir and os.path.exists(summary):
        with open(summary, encoding="utf-8") as f:
            metadata = training_metadata(json.load(f))
    if args.sigma is not None:
        from pipelines.noise import GaussianNoise

        data = {**(metadata.get("training", {}).get("data") or {}), "task": genotype.task,
                "degradation": GaussianNoise(args.sigma).describe()}
        metadata = {"training": {**metadata.get("training", {}), "data": data}}
    tflite = KINDS if args.tflite == [] else tuple(args.tflite or ())
    try:  # weights that are no HDF5 file or do not fit the genotype: nothing is written
        paths = export(genotype, weights, args.out, args.name, args.version, tflite,
                       overwrite=args.overwrite, metadata=metadata)
    except ValueError as e:
        parser.error(str(e))
    for kind, path in paths.items():
        print(f"{kind}: {path} ({_cli.size_mb(path):.2f} MB)")
    return 0


def convert_pretrained(parser, args):
    from clearer_tf import pretrained
    from clearer_tf.export import convert_tflite

    try:
        if args.model_dir or args.weights:
            raise ValueError("--pretrained cannot be combined with --model-dir or --weights")
        folder = pretrained.model_dir(args.pretrained)
        saved_model = pretrained.saved_model_version(folder)
    except ValueError as e:
        parser.error(str(e))
    version = os.path.basename(saved_model)
    for kind in KINDS if not args.tflite else args.tflite:
        path = convert_tflite(saved_model, os.path.join(folder, "tflite", f"{args.pretrained}-v{version}-{kind}.tflite"), kind)
        print(f"{kind}: {path} ({_cli.size_mb(path):.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
