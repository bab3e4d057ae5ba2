"""Search a CLEARER architecture (the bilevel search of the paper, Sec. 3.3): `SupernetSearch.fit`.

    python train_scripts/search.py --task denoise --preset quick
    python train_scripts/search.py --task derain                  # paper protocol
    python train_scripts/search.py --task denoise --resume runs/search-denoise-20250101-120000

Writes run.json, genotype.json, architecture.png, alpha_history.csv/.png and tensorboard/ into
the run directory (--out, default runs/search-<task>-<timestamp>), and backup/ while it runs.
--resume continues a killed search from its last backup; give the same options.
"""

import dataclasses
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _cli  # noqa: E402  (puts the repo root on sys.path, quiets TensorFlow's C++ logs)


def build_parser():
    _import_quietly()
    from clearer_tf import distribute

    p = _cli.Parser(prog="search.py", description="CLEARER architecture search (bilevel, differentiable).")
    p.add_argument("--task", required=True, choices=["denoise", "derain"])
    p.add_argument("--preset", default="paper", choices=["paper", "quick"],
                   help="paper: 3x4 columns, widths 32-256, 10k iterations; quick: a few minutes on a CPU")
    data = p.add_argument_group("data (default: the bundled samples)")
    data.add_argument("--data", help="one folder, split by image into weight/architecture sets")
    data.add_argument("--weights-data", help="folder for the weight steps (with --arch-data)")
    data.add_argument("--arch-data", help="folder for the architecture steps (with --weights-data)")
    data.add_argument("--sigma", type=float, default=30.0, help="denoise: noise level on 0-255 (30)")
    data.add_argument("--color", action="store_true", help="denoise: RGB instead of grayscale")
    search = p.add_argument_group("search (default: the preset's value)")
    search.add_argument("--iterations", type=int)
    search.add_argument("--warmup", type=int, help="weight-only iterations first")
    search.add_argument("--batch-size", type=int)
    search.add_argument("--patch-size", type=int, help="a multiple of 8 (2**cells)")
    search.add_argument("--lambda-arch", type=float, help="weight of L_arch (0.01)")
    search.add_argument("--lambda-comp", type=float, help="weight of L_comp (0)")
    search.add_argument("--cost", choices=["params", "flops", "latency"],
                        help="cost measure of L_comp (latency: measured with LiteRT, see --latency-*)")
    search.add_argument("--loss", metavar="SPEC",
                        help="L_res: mse (default), l1, charbonnier, log_ssim, or a sum like mse+0.5*log_ssim")
    lat = p.add_argument_group("latency (--cost latency, --latency-budget-ms)")
    lat.add_argument("--latency-table", metavar="JSON", help="a measured table (default: measure one now)")
    lat.add_argument("--latency-size", type=_cli.size, metavar="HxW", help="input size of the timings (512x512)")
    lat.add_argument("--latency-threads", type=int, metavar="N", help="LiteRT threads (default: LiteRT's)")
    lat.add_argument("--latency-precision", choices=["float32", "float16", "int8"],
                     help="the precision timed and used (float32)")
    lat.add_argument("--latency-budget-ms", type=float, metavar="B",
                     help="the genotype's predicted latency must be <= B ms (the most probable one within it)")
    search.add_argument("--arch-batchnorm", choices=["inference", "batch"],
                        help="BatchNorm in the architecture step: moving (inference, default) or "
                             "batch statistics; moving statistics are never updated there")
    search.add_argument("--seed", type=int)
    search.add_argument("--log-every", type=int,
                        help="iterations per log row / Keras epoch (a divisor of --iterations; quick 25, paper 50)")
    net = p.add_argument_group("supernet")
    net.add_argument("--fusion-input", choices=["x", "parallel"],
                     help="x: Eq. 1 of the paper; parallel: as the authors' code")
    net.add_argument("--residual", action="store_true", default=None,
                     help="predict clean = input - output")
    distribute.add_arguments(p)
    run = p.add_argument_group("run")
    _cli.add_pipeline_option(run)
    run.add_argument("--no-jit", dest="jit_compile", action="store_false", default=None,
                     help="no XLA (default: XLA with a GPU or on JAX, none with TensorFlow on a CPU)")
    run.add_argument("--out", help="run directory (default runs/search-<task>-<timestamp>)")
    run.add_argument("--resume", metavar="RUN_DIR", help="continue the search in RUN_DIR")
    run.add_argument("--overwrite", action="store_true",
                     help="start afresh in --out even if it holds a search (finished or not)")
    return p


def _import_quietly():
    """Imports Keras and clearer_tf with TensorFlow's C++ start-up lines silenced (where
    TensorFlow is installed: the JAX backend runs without it); Python errors still surface."""
    from clearer_tf.quiet import import_tensorflow_quietly

    import_tensorflow_quietly()
    import keras  # noqa: F401

    import clearer_tf  # noqa: F401


def _overrides(args, names):
    return {n: getattr(args, n) for n in names if getattr(args, n) is not None}


def prepare(args):
    """Configs, data, devices and run directory; raises ValueError/DataError on bad input.

    Nothing is written: a run folder that cannot take this search is refused here.
    """
    from clearer_tf.presets import get_preset
    from clearer_tf.search import run as search_run
    from clearer_tf.search import validate
    from pipelines.tasks import load_task_data

    preset = get_preset(args.preset)
    search_config = dataclasses.replace(
        preset.search,
        **_overrides(args, ["iterations", "warmup", "batch_size", "patch_size", "log_every",
                            "lambda_arch", "lambda_comp", "cost", "seed", "jit_compile", "data_pipeline",
                            "arch_batchnorm", "loss", "latency_table", "latency_size", "latency_threads",
                            "latency_precision", "latency_budget_ms"]),
    )
    supernet_config = dataclasses.replace(preset.supernet, **_overrides(args, ["fusion_input", "residual"]))
    validate(supernet_config, search_config)
    if args.resume and args.out and os.path.abspath(args.out) != os.path.abspath(args.resume):
        raise ValueError("--out and --resume name different folders (a resumed run stays in its folder)")
    if args.resume and args.overwrite:
        raise ValueError("--resume continues a search, --overwrite starts afresh: give one")
    out = args.resume or args.out or os.path.join(
        "runs", f"search-{args.task}-{time.strftime('%Y%m%d-%H%M%S')}")
    if args.resume:
        _cli.check_backup(args.resume)  # issue 11
    task_data = load_task_data(
        args.task, data=args.data, weights_data=args.weights_data, arch_data=args.arch_data,
        sigma=args.sigma, color=args.color, seed=search_config.seed,
    )
    _cli.check_search_inputs(task_data, search_config.patch_size, out, 2 ** len(supernet_config.columns))  # issue 11
    _cli.check_pipeline(search_config, task_data)
    supernet_config = dataclasses.replace(supernet_config, image_channels=task_data.channels)
    search_run.check_run(out, supernet_config, search_config, task_data, bool(args.resume), args.overwrite)
    from clearer_tf import distribute

    strategy = distribute.from_arguments(args)
    replicas = strategy.num_replicas_in_sync if strategy is not None else search_run.replicas_in_sync()
    validate(supernet_config, search_config, replicas)
    return supernet_config, search_config, task_data, strategy, out


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    from pipelines.errors import DataError

    try:
        supernet_config, search_config, task_data, strategy, out = prepare(args)
    except (ValueError, DataError) as e:
        parser.error(str(e))
    from clearer_tf.callbacks import is_first_process
    from clearer_tf.search import run_search

    first = is_first_process()
    if first:
        print(f"search: {args.task}, preset {args.preset}, {search_config.iterations} iterations "
              f"({search_config.warmup} warm-up), batch {search_config.batch_size} of "
              f"{search_config.patch_size}x{search_config.patch_size}, one epoch = "
              f"{search_config.log_every} iterations -> {out}")
    from clearer_tf.latency import LatencyError

    try:
        result = run_search(supernet_config, search_config, task_data, out, resume=bool(args.resume),
                            overwrite=args.overwrite, strategy=strategy)
    except LatencyError as e:  # a latency table or budget that cannot be used: one line
        parser.error(str(e))
    if first:
        print(f"genotype: {result.genotype.short()}")
        if "predicted_latency_ms" in (result.genotype.search or {}):
            g = result.genotype.search
            print(f"predicted LiteRT latency {g['predicted_latency_ms']:.2f} ms ({g['latency_precision']}, "
                  f"{g['latency_size'][0]}x{g['latency_size'][1]}); {g['chosen']}")
        print(f"wrote {os.path.join(out, 'genotype.json')}, architecture.png, alpha_history.csv/.png, "
              f"tensorboard/, run.json")
    return result.genotype


if __name__ == "__main__":
    main()
