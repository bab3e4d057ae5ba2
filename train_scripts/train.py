#!/usr/bin/env python
"""Train the network found by the search with `model.fit` (paper recipe, Sec. 4).

    python train_scripts/train.py --genotype runs/search/genotype.json --preset quick --sigma 50

Patches come from `--data` (default: the bundled BSDS500 sample for denoise, the Rain100L
pairs for derain). Model selection uses `--val-data` (whole images, deterministic noise; default
for grayscale denoising: the bundled Set12 sample); without it, the training folder is split
by image (`--split-fraction`) and the held-out images validate. Writes into `--out`:
best/last weights, model.keras, train_summary.json, validation.json, tensorboard/, backup/.
A killed run started again with the same command resumes from its last validation and ends
as an uninterrupted one would; another configuration in the same --out is refused, and so is a
finished run unless --overwrite. `--stop-after N` ends a run at iteration N of the schedule on
purpose (GPU sessions shorter than the training), `--time-limit S` at the last validation that
fits in S seconds, and the same command with a later N, or none, continues it.
`--init-weights FILE --init-step N` starts from a network's weights alone (no optimizer state)
at iteration N of the schedule, the learning rate ramped up again over `--rewarmup` iterations.
"""

import dataclasses
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _cli  # noqa: E402  (puts the repo root on sys.path)


def parse_args(argv=None):
    from clearer_tf import distribute
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
    p.add_argument("--loss", metavar="SPEC",
                   help="mse (default, the paper), l1, charbonnier, log_ssim, or a sum like mse+0.5*log_ssim")
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
    p.add_argument("--init-weights", metavar="FILE",
                   help="warm start: the network's weights (a .weights.h5 of this genotype), no optimizer state")
    p.add_argument("--init-step", type=int, metavar="N",
                   help="warm start at iteration N of the schedule (a multiple of --validate-every; default 0)")
    p.add_argument("--rewarmup", type=int, metavar="W",
                   help="warm start: ramp the learning rate from 0 over W iterations (default 500)")
    _cli.add_pipeline_option(p)
    p.add_argument("--no-jit", action="store_true", help="no XLA (default: XLA with a GPU or on JAX, none with TensorFlow on a CPU)")
    p.add_argument("--out", default="runs/train", help="output folder (default: runs/train)")
    p.add_argument("--resume", action="store_true", default=True,
                   help="continue from --out/backup if a killed run left one (default)")
    p.add_argument("--no-resume", dest="resume", action="store_false",
                   help="start afresh, discarding an unfinished run in --out")
    p.add_argument("--overwrite", action="store_true",
                   help="start afresh even if --out holds a finished run")
    distribute.add_arguments(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p, p.parse_args(argv)


def prepare(parser, args):
    """Everything that can fail on bad input, before any training: config, genotype, data."""
    from clearer_tf import distribute
    from clearer_tf.callbacks import RunRecord
    from clearer_tf.genotype import Genotype, GenotypeError
    from clearer_tf.presets import get_preset
    from clearer_tf.training import check_train_config, train_run_config
    from pipelines.errors import DataError
    from pipelines.tasks import load_eval_items, load_task_data, sample_dir

    overrides = {
        "iterations": args.iterations, "batch_size": args.batch_size,
        "patch_size": args.patch_size, "validate_every": args.validate_every,
        "learning_rate": args.learning_rate, "loss": args.loss, "seed": args.seed, "stop_after": args.stop_after,
        "time_limit": args.time_limit, "profile_batches": args.profile,
        "jit_compile": False if args.no_jit else None, "init_weights": args.init_weights,
        "init_step": args.init_step, "rewarmup": args.rewarmup, "data_pipeline": args.data_pipeline,
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
        _cli.check_pipeline(config, task_data)
        if args.resume and not args.overwrite:
            _cli.check_backup(args.out, "--out")
        record = RunRecord(args.out, train_run_config(genotype, task_data, config, val_items), what="training")
        record.check(args.overwrite, args.resume)  # nothing is written before this
        strategy = distribute.from_arguments(args)
    except (ValueError, OSError) as e:  # GenotypeError and DataError are ValueErrors
        parser.error(str(e))
    where = {"train_data": str(data), "val_data": str(val_data or "split")}
    return genotype, task_data, val_items, config, where, strategy


def main(argv=None):
    parser, args = parse_args(argv)
    genotype, task_data, val_items, config, where, strategy = prepare(parser, args)
    from clearer_tf.training import train_network

    task_data.description.update(where)
    result = train_network(genotype, task_data, config, args.out, val_items=val_items, resume=args.resume,
                           overwrite=args.overwrite, verbose=0 if args.quiet else 1, strategy=strategy)
    v = result.summary["validation"]
    print(f"validation PSNR {v['best_psnr']:.2f} dB (best, step {v['best_step']}) vs input "
          f"{v['input_psnr']:.2f} dB; model in {os.path.join(args.out, 'model.keras')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
