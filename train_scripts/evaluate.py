#!/usr/bin/env python
"""Evaluate a trained network with the paper's protocols (whole image / 64x64 patches, x8 ensemble).

    python train_scripts/evaluate.py --model-dir runs/train --data data/samples/set12 --ensemble --patches

`--model-dir` is a training folder (genotype.json + best.weights.h5), a .keras file, a
SavedModel (`saved_models/<name>/<version>` or `saved_models/<name>`: newest version) or a
.tflite file; only evaluate SavedModels you trust (a SavedModel graph can read and write
files). Denoising uses the noise level the model records (training summary, SavedModel
metadata, .keras/.tflite metadata, model card) unless --sigma is given; a model that records
none needs --sigma. Images above 1 megapixel are restored in overlapping 512x512 tiles
(--tile, --tile-overlap). Writes per_image.csv, summary.json (protocol spelled out),
comparison.png and, with --save-images, restored/<name>.png into --out (default:
runs/eval/<model name>, never inside the model's folder).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _cli  # noqa: E402  (puts the repo root on sys.path)


def parse_args(argv=None):
    p = _cli.Parser(prog="evaluate.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--model-dir", required=True, metavar="PATH", help="trained model (see above)")
    _cli.add_task_options(p, "test images: clean images (degraded here, deterministically) or, for "
                             "derain, rainy/ + clean/ pairs (default: bundled Set12 sample / Rain100L pairs)")
    p.add_argument("--ensemble", action="store_true", help="x8 rotation/flip self-ensemble")
    p.add_argument("--patches", action="store_true", help="also the 64x64 patch protocol (CLEARER-P)")
    p.add_argument("--patch-size", type=int, default=64, help="patch side (default 64)")
    p.add_argument("--y-channel", action="store_true", help="metrics on the BT.601 Y channel (RGB)")
    p.add_argument("--crop-border", type=int, default=0, help="pixels dropped on each side (default 0)")
    p.add_argument("--seed", type=int, default=0, help="seed of the deterministic degradation (default 0)")
    p.add_argument("--save-images", action="store_true", help="write restored/<name>.png")
    p.add_argument("--sheet", type=int, default=3, metavar="N", help="images on comparison.png (0: none)")
    p.add_argument("--tile", type=_cli.tile, default="auto", metavar="N",
                   help="restore in N x N tiles (0: whole images; default auto: 512 above 1 megapixel)")
    p.add_argument("--tile-overlap", type=int, default=96, metavar="M",
                   help="pixels shared by neighbouring tiles, blended (default 96)")
    p.add_argument("--out", help="output folder (default: runs/eval/<model name>)")
    return p, p.parse_args(argv)


def main(argv=None):
    parser, args = parse_args(argv)
    args.task = args.task or "denoise"
    from clearer_tf.evaluation import (EvalConfig, check_eval_sizes, describe_degradation, evaluate,
                                       load_predictor, write_report)
    from clearer_tf.tiling import check_tiling
    from pipelines.errors import DataError
    from pipelines.noise import GaussianNoise
    from pipelines.tasks import load_eval_items, sample_dir

    try:
        config = EvalConfig(ensemble=args.ensemble, patches=args.patches, patch_size=args.patch_size,
                            y_channel=args.y_channel, crop_border=args.crop_border, seed=args.seed)
        check_tiling(args.tile, args.tile_overlap)
        if not os.path.exists(args.model_dir):
            raise ValueError(f"--model-dir {args.model_dir}: does not exist")
        if args.task != "denoise" and (args.color or args.sigma is not None):
            raise DataError("--sigma and --color are for --task denoise")
        out = args.out or _cli.default_eval_out(args.model_dir)
        _cli.check_writable_dir(out, "--out")
        predict, model_info, channels = load_predictor(args.model_dir, args.tile, args.tile_overlap)
        degradation = None
        if args.task == "denoise":
            sigma = args.sigma if args.sigma is not None else _cli.trained_sigma(model_info["training_data"])
            if sigma is None:
                raise ValueError(f"--sigma: {args.model_dir} records no training noise level; give "
                                 "the one to evaluate at, e.g. --sigma 50")
            degradation = GaussianNoise(sigma)
        if args.color and channels != 3:
            raise DataError(f"--color: the model takes {channels} channel(s), not 3")
        data = args.data or (sample_dir("set12") if args.task == "denoise" else sample_dir("rain100l"))
        items = load_eval_items(args.task, data, channels, layout=args.layout)
        check_eval_sizes(items, config)
        if args.task == "derain" and len(items[0]) == 2:
            from pipelines.rain import RainStreaks
            degradation = RainStreaks()
    except (ValueError, OSError) as e:
        parser.error(str(e))
    model_info = {k: v for k, v in model_info.items() if k != "training_data"}
    result = evaluate(predict, items, degradation, config,
                      description={"model": model_info, "data": str(data), "task": args.task,
                                   "tile": {"tile": args.tile, "overlap": args.tile_overlap}})
    write_report(result, out, save_images=args.save_images, sheet_count=args.sheet)
    m = result.summary["mean"]
    line = f"{len(result.rows)} images, {describe_degradation(degradation)}: PSNR {m['psnr']:.2f} dB, SSIM {m['ssim']:.4f}"
    if config.patches:
        line += f"; patches: PSNR {m['patch_psnr']:.2f} dB, SSIM {m['patch_ssim']:.4f}"
    print(f"{line} (input {m['input_psnr']:.2f} dB{', x8 ensemble' if config.ensemble else ''}); report in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
