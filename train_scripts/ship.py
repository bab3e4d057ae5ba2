#!/usr/bin/env python
"""Ship a trained network into saved_models/<name>/: SavedModel, genotype.json, model card.

    python train_scripts/ship.py --model-dir runs/train50 --name denoise-gray-sigma50 \\
        --eval runs/train50/eval/summary.json runs/train50/eval-x8/summary.json

`--model-dir` is a finished training folder (train_summary.json, best.weights.h5,
genotype.json); `--eval` are summary.json files of evaluate.py runs on it (they become the
card's results table). The card also states a self-check that the test suite runs on every
shipped model: restore `--check-image` of `--check-data` (default: the bundled Set12 sample's
first image, or the first Rain100L pair for derain) and beat the degraded input. Runs under
the TensorFlow backend whatever KERAS_BACKEND says.
"""

import os
import sys

os.environ["KERAS_BACKEND"] = "tensorflow"  # before anything imports keras
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _cli  # noqa: E402  (puts the repo root on sys.path)


def parse_args(argv=None):
    p = _cli.Parser(prog="ship.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--model-dir", required=True, metavar="DIR", help="finished training folder")
    p.add_argument("--name", required=True, help="folder name under --out, e.g. denoise-gray-sigma50")
    p.add_argument("--version", type=int, default=1, help="SavedModel version (default 1)")
    p.add_argument("--eval", nargs="*", default=[], metavar="JSON", help="evaluate.py summary.json files")
    p.add_argument("--check-data", metavar="DIR", help="folder of the self-check image (default: bundled sample)")
    p.add_argument("--check-image", metavar="NAME", help="its file name without extension (default: the first)")
    p.add_argument("--out", default="saved_models", help="root folder (default: saved_models)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing <out>/<name>/")
    p.add_argument("--note", help="a sentence for the top of the model card (e.g. how the protocol differs)")
    p.add_argument("--continues", metavar="DIR",
                   help="the shipped model a warm-started training (train.py --init-weights) continued "
                        "from: its card's runs and wall time are carried over")
    return p, p.parse_args(argv)


def main(argv=None):
    parser, args = parse_args(argv)
    from pipelines.noise import GaussianNoise
    from pipelines.tasks import load_eval_items, sample_dir

    try:
        summary_path = os.path.join(args.model_dir, "train_summary.json")
        if not os.path.isfile(summary_path):
            raise ValueError(f"--model-dir {args.model_dir}: no train_summary.json (training not finished?)")
        _cli.check_model_name(args.name)
        if args.version < 1:
            raise ValueError(f"--version must be a positive integer, got {args.version}")
        from clearer_tf.shipping import read_evaluation

        for path in args.eval:
            read_evaluation(path)
        if args.continues and not os.path.isfile(os.path.join(args.continues, "card.json")):
            raise ValueError(f"--continues {args.continues}: no card.json (not a shipped model)")
        _cli.check_writable_dir(args.out)
        target = os.path.join(args.out, args.name)
        if os.path.exists(target) and not args.overwrite:
            raise ValueError(f"{target} already exists (--overwrite to replace it)")
        data = _cli.training_data(args.model_dir)
        task = data.get("task", "denoise")
        channels = int(data.get("channels", 1))
        check_dir = args.check_data or (sample_dir("set12") if task == "denoise" else sample_dir("rain100l"))
        items = load_eval_items(task, check_dir, channels)
        if args.check_image is not None:
            items = [item for item in items if item[0] == args.check_image]
            if not items:
                raise ValueError(f"--check-image {args.check_image}: not in {check_dir}")
        degradation, sigma = None, _cli.trained_sigma(data)
        if sigma is not None:
            degradation = GaussianNoise(sigma)
        elif len(items[0]) == 2:
            from pipelines.rain import RainStreaks

            degradation = RainStreaks()
    except (ValueError, OSError, KeyError) as e:
        parser.error(str(e))
    from clearer_tf.shipping import ship

    folder = ship(args.model_dir, args.name, args.eval, args.out, args.version, check_item=items[0],
                  check_data=os.path.basename(os.path.normpath(str(check_dir))),
                  degradation=degradation, overwrite=args.overwrite, note=args.note,
                  continues=args.continues)
    print(f"shipped {folder} ({_cli.size_mb(folder):.1f} MB); model card: {os.path.join(folder, 'README.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
