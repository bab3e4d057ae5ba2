#!/usr/bin/env python
"""Train the network found by the search with `model.fit` (paper recipe, Sec. 4).

    python train_scripts/train.py --genotype runs/search/genotype.json --preset quick --sigma 50

Patches come from `--data` (default: the bundled BSDS500 sample for denoise, the Rain100L
pairs for derain). Model selection uses `--val-data` (whole images, deterministic noise; default
for grayscale denoising: the bundled Set12 sample); without it, the training folder is split
by image (`--split-fraction`) and the held-out images validate. Writes into `--out`:
best/last weights, model.keras, train_summary.json, validation.json, tensorboard/, backup/.
A killed run started again with the same command resumes from its last validation;
`--stop-after N` ends a run at iteration N of the schedule on purpose (GPU sessions shorter
than the training), `--time-limit S` at the last validation that fits in S seconds, and the
same command with a later N, or none, continues it.
"""

import dataclasses
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _cli  # noqa: E402  (puts the repo root on sys.path)


def parse_args(argv=None):
    from clearer_tf.presets import PRESETS

    p = _cli.Parser(prog="train.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--genotype", required=True, metavar="JSON", help="genotype.json from search.py")
    _cli.add_task_options(p, "training images (default: bundled sample for the task)")
    p.add_argument("--val-data", metavar="DIR",
                   help="validation images, not the test set (default: bundled Set12 sample for "
                        "grayscale denoising, else a held-out split of --data)")
    p.add_argument("--split-fraction", type=float, default=0.8,
                   help="share of --data used for training when validating on a split (default 0.8)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="paper", help="default: paper")
    p.add_argument("--iterations", type=int, help="override the preset")
    p.add_argument("--batch-size", type=int, help="override the preset")
    p.add_argument("--patch-size", type=int, help="override the preset")
    p.add_argument("--validate-every", type=int, help="override the preset (iterations per validation)")
    p.add_argument("--learning-rate", type=float, help="override the preset (initial, cosine to 0)")
    p.add_argument("--seed", type=int, help="override the preset")
    p.add_argument("--stop-after", type=int, metavar="N",
                   help="stop at iteration N of the --iterations schedule and keep the backup; the "
                        "same command with a larger (or no) --stop-after continues it")
    p.add_argument("--time-limit", type=float, metavar="SECONDS",
                   help="stop at the last validation that fits in SECONDS of wall time and keep the "
                        "backup, like --stop-after (a GPU lease of fixed length)")
    p.add_argument("--profile", metavar="FIRST,LAST",
                   type=lambda v: tuple(int(x) for x in v.split(",")),
                   help="trace batches FIRST..LAST with the profiler into --out/tensorboard")
    p.add_argument("--no-jit", action="store_true", help="no XLA (default: XLA with a GPU or on JAX, none with TensorFlow on a CPU)")
    p.add_argument("--out", default="runs/train", help="output folder (default: runs/train)")
    p.add_argument("--resume", action="store_true", default=True,
                   help="continue from --out/backup if a killed run left one (default)")
    p.add_argument("--no-resume", dest="resume", action="store_false", help="start afresh")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p, p.parse_args(argv)


def prepare(parser, args):
    """Everything that can fail on bad input, before any training: config, genotype, data."""
    from clearer_tf.genotype import Genotype, GenotypeError
    from clearer_tf.presets import get_preset
    from clearer_tf.training import check_train_config
    from pipelines.errors import DataError
    from pipelines.tasks import load_eval_items, load_task_data, sample_dir

    overrides = {
        "iterations": args.iterations, "batch_size": args.batch_size,
        "patch_size": args.patch_size, "validate_every": args.validate_every,
        "learning_rate": args.learning_rate, "seed": args.seed, "stop_after": args.stop_after,
        "time_limit": args.time_limit, "profile_batches": args.profile,
        "jit_compile": False if args.no_jit else None,
    }
    config = get_preset(args.preset).train
    config = dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})
    try:
        check_train_config(config)
        genotype = Genotype.coerce(args.genotype)
        args.task, args.color = _cli.task_from_genotype(args.task, args.color, genotype)  # issue 11
        if args.task != "denoise" and (args.color or args.sigma is not None):
            raise DataError("--sigma and --color are for --task denoise")
        sigma = 30.0 if args.sigma is None else args.sigma
        default = ("bsds", "train") if args.task == "denoise" else ("rain100l",)
        data = args.data or sample_dir(*default)
        val_data = args.val_data
        if val_data is None and args.task == "denoise" and not args.color:
            val_data = sample_dir("set12")
        common = dict(sigma=sigma, color=args.color, layout=args.layout, seed=config.seed)
        if val_data is not None:
            task_data = load_task_data(args.task, weights_data=data, arch_data=data, **common)
            val_items = load_eval_items(args.task, val_data, task_data.channels)
        else:
            task_data = load_task_data(args.task, data=data, split_fraction=args.split_fraction, **common)
            val_items = task_data.arch_items
        if genotype.image_channels != task_data.channels:
            raise GenotypeError(
                f"genotype field 'image_channels' is {genotype.image_channels} but --task "
                f"{args.task}{' --color' if args.color else ''} has {task_data.channels} channel(s)")
        _cli.check_train_inputs(task_data, val_items, config.patch_size, genotype, args.out)  # issue 11
    except (ValueError, OSError) as e:  # GenotypeError and DataError are ValueErrors
        parser.error(str(e))
    return genotype, task_data, val_items, config, {"train_data": str(data), "val_data": str(val_data or "split")}


def main(argv=None):
    parser, args = parse_args(argv)
    genotype, task_data, val_items, config, where = prepare(parser, args)
    from clearer_tf.training import train_network

    task_data.description.update(where)
    result = train_network(genotype, task_data, config, args.out, val_items=val_items,
                           resume=args.resume, verbose=0 if args.quiet else 1)
    v = result.summary["validation"]
    print(f"validation PSNR {v['best_psnr']:.2f} dB (best, step {v['best_step']}) vs input "
          f"{v['input_psnr']:.2f} dB; model in {os.path.join(args.out, 'model.keras')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
