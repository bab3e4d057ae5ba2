#!/usr/bin/env python
"""The GPU lease's job: one Python process on the JAX backend, no TensorFlow (docs/gpu_session.md).

    python bench/lease_job.py --plan .lease/plan --data .lease/data --work /tmp/lease --deadline-at EPOCH

Runs the plan that `bench/lease_plan.py` wrote (`plan.env`) until `--deadline-at` (epoch
seconds, the lease's end less what the second call needs), then leaves in `WORK/fetch` what the
lease brings back, and touches `WORK/DONE`:

* MODE=train: `train.py`'s own preparation and `train_network`, batches drawn on the device
  (`--data-pipeline device`), stopped by the time limit at any step (the first step's compilation
  left out of the step estimate), then one validation at that step. A continuation warm-starts
  from the model-only weights `INIT_WEIGHTS` that the CPU side prepared. At every validation the
  network's weights alone go to `WORK/safety/` (what the first call returns, in case the second
  never comes). Brings back `last.weights.h5` (model only, in 15 MB parts).
* MODE=search: `search.py`'s preparation and `run_search`, on the device pipeline.
* MODE=bench: only the measurements below.

Always, for the next speed step (`lease.json` in `small.tgz`): the lease's timeline, the step
clock (`timing.json`), step times of the training program at other batch sizes (`--sweep`, while
time is left; 128 first), the kernel counts of the compiled train step (XLA's HLO dump, read with
`bench/hlo_stats.py`), the size of the persistent compilation cache, the XLA flags the machine
accepted, and XLA's autotune results (`autotune.textproto`); a profiler trace of a few steps
(`profile.tgz`). XLA_FLAGS and JAX_COMPILATION_CACHE_DIR are set by `bench/lease_start.sh`.
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STARTED = time.time()
PART_BYTES = 15 * 1024 * 1024
os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path[:0] = [ROOT, os.path.join(ROOT, "train_scripts")]


def log(message):
    print(f"== {message} at {time.time() - STARTED:.0f}s", flush=True)


def read_plan(folder) -> dict:
    """`plan.env` (KEY=value lines, shell-quoted) as a dict."""
    plan = {}
    with open(os.path.join(folder, "plan.env"), encoding="utf-8") as f:
        for line in f:
            if "=" in line:
                key, value = line.rstrip("\n").split("=", 1)
                plan[key] = shlex.split(value)[0] if value else ""
    return plan


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--plan", required=True, help="folder of plan.env (and init.weights.h5)")
    p.add_argument("--data", required=True, help="folder with BSDS500/ and Set12/")
    p.add_argument("--work", required=True, help="the job's folder: run/, safety/, fetch/, DONE")
    p.add_argument("--deadline-at", type=float, required=True, help="epoch seconds when all must be done")
    p.add_argument("--reserve", type=float, default=45.0,
                   help="seconds kept after the training for the last validation, weights and packing")
    p.add_argument("--preset", default="paper")
    p.add_argument("--iterations", type=int, help="override the plan's schedule (a CPU smoke test)")
    p.add_argument("--validate-every", type=int, default=2000)
    p.add_argument("--stop-after", type=int, help="end the training at this step (a CPU smoke test)")
    p.add_argument("--profile", default="1100,1104", help="FIRST,LAST batches to trace (0: none)")
    p.add_argument("--sweep", help="batch sizes to time after the training, in order (none: no sweep; "
                                    "default: the plan's SWEEP, one size a lease)")
    p.add_argument("--sweep-steps", type=int, default=20)
    p.add_argument("--sweep-seconds", type=float, default=100.0,
                   help="kept for the sweep when there is one (a new batch size compiles for a minute or more)")
    return p.parse_args(argv)


def _module(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def safety_weights(genotype, folder):
    """A callback: at each validation the network's weights alone, renamed into
    `folder/last.weights.h5`, and `folder/safety.json` (the step and its PSNR)."""
    import keras

    from clearer_tf import files
    from clearer_tf.network import build_network

    class SafetyWeights(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.twin = build_network(genotype)

        def on_epoch_end(self, epoch, logs=None):
            self.twin.set_weights(self.model.get_weights())
            os.makedirs(folder, exist_ok=True)
            files.save_weights(self.twin, os.path.join(folder, "last.weights.h5"))
            step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
            files.write_json(os.path.join(folder, "safety.json"),
                             {"step": step, "val_psnr": (logs or {}).get("val_psnr"),
                              "at_s": round(time.time() - STARTED, 1)})

    return SafetyWeights()


def train(args, plan, timeline):
    import train as train_cli  # train_scripts/train.py

    from clearer_tf import files
    from clearer_tf.network import build_network
    from clearer_tf.training import train_network

    run = os.path.join(args.work, "run")
    iterations = args.iterations or int(plan["ITERATIONS"])
    limit = args.deadline_at - args.reserve - (args.sweep_seconds if sizes(args.sweep) else 0.0) - time.time()
    argv = ["--task", "denoise", "--sigma", plan["SIGMA"], "--genotype", os.path.join(ROOT, plan["GENOTYPE"]),
            "--data", os.path.join(args.data, "BSDS500", "train"), "--val-data", os.path.join(args.data, "Set12"),
            "--preset", args.preset, "--iterations", str(iterations), "--validate-every", str(args.validate_every),
            "--time-limit", str(max(limit, 1.0)), "--data-pipeline", "device", "--out", run, "--quiet"]
    if args.profile and args.profile != "0":
        argv += ["--profile", args.profile]
    if args.stop_after:
        argv += ["--stop-after", str(args.stop_after)]
    if plan.get("INIT_WEIGHTS"):
        argv += ["--init-weights", os.path.join(args.plan, plan["INIT_WEIGHTS"]), "--init-step", plan["INIT_STEP"]]
    parser, cli_args = train_cli.parse_args(argv)
    genotype, task_data, val_items, config, where, strategy = train_cli.prepare(parser, cli_args)
    task_data.description.update(where)
    log(f"train {plan['GENOTYPE']} from step {config.init_step} of {iterations}, limit {limit:.0f}s")
    timeline["train_start_s"] = round(time.time() - STARTED, 1)
    result = train_network(genotype, task_data, config, run, val_items=val_items, resume=False, overwrite=True,
                           verbose=0, callbacks=[safety_weights(genotype, os.path.join(args.work, "safety"))])
    timeline["train_end_s"] = round(time.time() - STARTED, 1)
    summary = result.summary
    log(f"trained to step {summary['iterations_done']}, validation {summary['history'][-1].get('val_psnr')}")
    model = build_network(genotype)  # the run's files also hold Adam's moments: the network alone
    model.load_weights(os.path.join(run, "last.weights.h5"))
    files.save_weights(model, os.path.join(args.work, "last.weights.h5"))
    split(os.path.join(args.work, "last.weights.h5"), os.path.join(args.work, "fetch"))
    for name in ("genotype", "validation", "train_summary", "timing"):
        if os.path.isfile(os.path.join(run, f"{name}.json")):
            shutil.copy(os.path.join(run, f"{name}.json"), os.path.join(args.work, "small"))
    return genotype, config


def search(args, plan, timeline):
    import search as search_cli  # train_scripts/search.py

    from clearer_tf.search import run_search

    run = os.path.join(args.work, "run")
    argv = ["--task", "denoise", "--sigma", plan["SIGMA"], "--preset", args.preset,
            "--weights-data", os.path.join(args.data, "BSDS500", "train"),
            "--arch-data", os.path.join(args.data, "BSDS500", "val"),
            "--iterations", str(args.iterations or int(plan["SEARCH_ITERATIONS"])),
            "--data-pipeline", "device", "--out", run, "--overwrite"]
    supernet_config, search_config, task_data, strategy, out = search_cli.prepare(search_cli.build_parser().parse_args(argv))
    timeline["search_start_s"] = round(time.time() - STARTED, 1)
    result = run_search(supernet_config, search_config, task_data, out, overwrite=True, verbose=2)
    timeline["search_end_s"] = round(time.time() - STARTED, 1)
    log(f"search done: {result.genotype.short()}")
    for path in glob.glob(os.path.join(run, "*.json")) + glob.glob(os.path.join(run, "alpha_history.*")):
        shutil.copy(path, os.path.join(args.work, "small"))


def sweep(args, genotype, config, deadline):
    """Step time of the training program at other batch sizes (a fresh network each), while time
    is left: compile + first step, then the mean of `--sweep-steps` steps."""
    import dataclasses

    import numpy as np

    from clearer_tf.network import build_network
    from clearer_tf.training import compile_network
    from pipelines.device import DeviceSampler
    from pipelines.images import load_images
    from pipelines.noise import GaussianNoise

    rows = []
    images = load_images(os.path.join(args.data, "BSDS500", "train"), 1)  # decoded once already: cached
    for batch in sizes(args.sweep):
        if time.time() + 30 > deadline:
            rows.append({"batch": batch, "skipped": "no time left"})
            continue
        model = compile_network(build_network(genotype), dataclasses.replace(config, batch_size=batch))
        sampler = DeviceSampler(images, GaussianNoise(50.0), config.patch_size, batch, seed=1)
        start = time.perf_counter()
        model.train_on_batch(*sampler.batch(0))
        first = time.perf_counter() - start
        start = time.perf_counter()
        for step in range(1, args.sweep_steps + 1):
            logs = model.train_on_batch(*sampler.batch(step), return_dict=True)
        float(np.asarray(logs["loss"]))
        ms = 1e3 * (time.perf_counter() - start) / args.sweep_steps
        rows.append({"batch": batch, "compile_and_first_step_s": round(first, 2), "step_ms": round(ms, 3),
                     "samples_per_s": round(1e3 * batch / ms, 1), "steps": args.sweep_steps})
        log(f"batch {batch}: {ms:.2f} ms a step (compile {first:.1f}s)")
    return rows


def sizes(sweep) -> list:
    return [int(b) for b in (sweep or "").split(",") if b.strip().isdigit()]


def hlo_summary(folder):
    """Kernel counts of the first compiled train step in XLA's dump: the training's (the sweep's
    come later); None without one."""
    dumped = sorted(p for p in glob.glob(os.path.join(folder, "*train_step*after_optimizations.txt")))
    if not dumped:
        return None
    path = dumped[0]
    hlo_stats = _module("hlo_stats", os.path.join(ROOT, "bench", "hlo_stats.py"))
    with open(path, encoding="utf-8") as f:
        counts = hlo_stats.hlo_counts(f.read())
    return {"module": os.path.basename(path), **counts}


def split(path, folder):
    """`path` in parts of at most 15 MB (`<name>.part-aa`, ...) in `folder`; removes `path`."""
    os.makedirs(folder, exist_ok=True)
    with open(path, "rb") as f:
        for i, chunk in enumerate(iter(lambda: f.read(PART_BYTES), b"")):
            with open(os.path.join(folder, f"{os.path.basename(path)}.part-a{chr(ord('a') + i)}"), "wb") as out:
                out.write(chunk)
    os.remove(path)


def du(path) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs) if os.path.isdir(path) else 0


def gpu_name() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20).stdout.strip().splitlines()
        return out[0] if out else "no GPU"
    except (OSError, subprocess.SubprocessError):
        return "no GPU"


def main(argv=None):
    args = parse_args(argv)
    for sub in ("fetch", "small", "safety"):
        os.makedirs(os.path.join(args.work, sub), exist_ok=True)
    plan = read_plan(args.plan)
    if args.sweep is None:
        args.sweep = plan.get("SWEEP", "")
    timeline = {}
    lease = {"plan": plan, "gpu": gpu_name(), "xla_flags": os.environ.get("XLA_FLAGS", ""),
             "deadline_in_s": round(args.deadline_at - STARTED, 1), "timeline": timeline}
    log(f"start {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} on {lease['gpu']}; plan {plan}")
    try:
        import jax
        import jaxlib
        import keras

        lease["versions"] = {"jax": jax.__version__, "jaxlib": jaxlib.__version__,
                             "keras": keras.__version__, "python": sys.version.split()[0]}
        lease["tensorflow_imported"] = "tensorflow" in sys.modules and sys.modules["tensorflow"] is not None
        timeline["imports_s"] = round(time.time() - STARTED, 1)
        genotype, config = None, None
        if plan["MODE"] == "train":
            genotype, config = train(args, plan, timeline)
        elif plan["MODE"] == "search":
            search(args, plan, timeline)
        if genotype is None:
            from clearer_tf.genotype import Genotype
            from clearer_tf.presets import get_preset

            genotype = Genotype.coerce(os.path.join(ROOT, "bench", "genotypes", "paper-l1-0.01.json"))
            config = get_preset(args.preset).train
        if sizes(args.sweep):
            lease["batch_sweep"] = sweep(args, genotype, config, args.deadline_at - 10)
    except Exception:  # a failed lease still brings back what it learned
        log("failed")
        traceback.print_exc()
        lease["error"] = traceback.format_exc()[-3000:]
    finally:
        timeline["end_s"] = round(time.time() - STARTED, 1)
        finish(args, lease)


def finish(args, lease):
    work = args.work
    try:
        lease["hlo_train_step"] = hlo_summary(os.path.join(work, "hlo"))
    except Exception as e:  # noqa: BLE001 (evidence only)
        lease["hlo_train_step"] = {"error": repr(e)}
    lease["compilation_cache_bytes"] = du(os.environ.get("JAX_COMPILATION_CACHE_DIR", ""))
    lease["autotune_cache_bytes"] = du(os.path.join(work, "autotune_cache"))
    with open(os.path.join(work, "small", "lease.json"), "w", encoding="utf-8") as f:
        json.dump(lease, f, indent=1, default=str)
    tensorboard = os.path.join(work, "run", "tensorboard")
    if os.path.isdir(tensorboard):
        shutil.copytree(tensorboard, os.path.join(work, "small", "tensorboard"),
                        ignore=shutil.ignore_patterns("plugins"), dirs_exist_ok=True)
        if os.path.isdir(os.path.join(tensorboard, "plugins")):
            with tarfile.open(os.path.join(work, "fetch", "profile.tgz"), "w:gz") as tar:
                tar.add(os.path.join(tensorboard, "plugins"), arcname="plugins")
            if os.path.getsize(os.path.join(work, "fetch", "profile.tgz")) > PART_BYTES:
                os.remove(os.path.join(work, "fetch", "profile.tgz"))  # a call brings back 16 MiB a file
    log("packed")
    sys.stdout.flush()
    log_path = os.path.join(work, "log")
    if os.path.isfile(log_path):
        shutil.copy(log_path, os.path.join(work, "small", "log"))
    with tarfile.open(os.path.join(work, "fetch", "small.tgz"), "w:gz") as tar:
        tar.add(os.path.join(work, "small"), arcname=".")
    open(os.path.join(work, "DONE"), "w").close()


if __name__ == "__main__":
    main()
