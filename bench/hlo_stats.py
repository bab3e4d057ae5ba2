"""Op counts of the JAX step programs, from lowering and XLA:CPU compilation only (no execution).

Programs (paper preset, batch 32 of 1x64x64, float32):
  train_step: Keras' compiled train step of the discrete 8F/4P network (`training.compile_network`:
      MSE, Adam with global-norm clipping, PSNR metric), as `train.py` runs it;
  search_iteration: the supernet search iteration (architecture step + weight step, one program).

For each: the lowered StableHLO (what Keras/JAX emit, backend-independent) and the HLO that XLA:CPU
compiles it to (after fusion and layout assignment; a GPU compiles differently). Counts:
convolutions, transposes, copies, converts, reductions, all-reduces, custom calls, host callbacks
and transfers, fusions (kernels) and top-level instructions.

Usage:
    KERAS_BACKEND=jax JAX_PLATFORMS=cpu python bench/hlo_stats.py --json docs/runs/hlo_stats_cpu.json
"""

import argparse
import collections
import datetime
import json
import os
import re
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

from bench import PAPER_GENOTYPE  # noqa: E402  (bench/bench.py)

STABLEHLO_OP = re.compile(r"\b(?:stablehlo|mhlo|chlo|func)\.([a-z_]+)")
HLO_HEADER = re.compile(r"^(ENTRY\s+)?%?([\w.\-]+)\s+\(")
HLO_INSTRUCTION = re.compile(r"^\s+(?:ROOT\s+)?%?[\w.\-]+ = (\S+|\(.*?\)) ([a-z][a-z0-9\-_]*)\(")
CALLED = re.compile(r"calls=%?([\w.\-]+)")
CALLBACK = re.compile(r"callback", re.IGNORECASE)
SHAPE = re.compile(r"(bf16|f16|f32|f64|s32|u32|pred|s8|u8)\[([\d,]*)\]")
BYTES = {"bf16": 2, "f16": 2, "f32": 4, "f64": 8, "s32": 4, "u32": 4, "pred": 1, "s8": 1, "u8": 1}
KEYS = ["convolution", "transpose", "copy", "convert", "reduce", "fusion", "all-reduce", "custom-call",
        "infeed", "outfeed", "send", "recv", "dot"]
FREE = {"parameter", "constant", "bitcast", "tuple", "get-tuple-element"}  # no kernel, no traffic


def stablehlo_counts(text):
    """Op name -> count in lowered StableHLO text (`stablehlo.convolution` -> `convolution`)."""
    counts = collections.Counter(STABLEHLO_OP.findall(text))
    callbacks = [line for line in text.splitlines() if "custom_call" in line and CALLBACK.search(line)]
    return {"ops": dict(counts.most_common()), "host_callbacks": len(callbacks)}


def parse_hlo(text):
    """{computation: [(opcode, result type, line)]} and the name of the entry computation."""
    computations, current, entry = {}, None, None
    for line in text.splitlines():
        head = HLO_HEADER.match(line)
        if head and line.rstrip().endswith("{"):
            current = computations.setdefault(head.group(2), [])
            entry = head.group(2) if head.group(1) else entry
            continue
        match = HLO_INSTRUCTION.match(line)
        if match and current is not None:
            current.append((match.group(2), match.group(1), line))
    return computations, entry


def nbytes(result_type):
    dtype, dims = SHAPE.search(result_type).groups()
    return BYTES[dtype] * int(np.prod([int(d) for d in dims.split(",") if d] or [1]))


def source(line):
    """Which part of the step a kernel comes from, by its JAX `op_name` metadata."""
    match = re.search(r'op_name="([^"]+)"', line)
    if not match:
        return "no metadata (layout copies, library fusions)"
    name = match.group(1)
    if re.search(r"(^|/)(adam|weight_sgd|arch_adam|sgd)/", name):
        return "optimizer"
    part = "backward" if "transpose(" in name else "forward"
    for key, label in (("/bn/", "batchnorm"), ("conv_general_dilated", "convolution")):
        if key in name:
            return f"{label} {part}"
    return f"other {part}"


def hlo_counts(text):
    """Counts of XLA-compiled HLO: every instruction, and the kernels of the entry computation
    (top-level instructions; a fusion is one kernel) by what they contain, with bytes written."""
    computations, entry = parse_hlo(text)
    everything = collections.Counter(op for ops in computations.values() for op, _, _ in ops)
    kernels, written = collections.Counter(), collections.Counter()
    by_source, source_bytes = collections.Counter(), collections.Counter()
    for op, result_type, line in computations[entry]:
        if op in FREE:
            continue
        by_source[source(line)] += 1
        source_bytes[source(line)] += nbytes(result_type)
        inner = {op}
        if op == "fusion":
            inner = {o for o, _, _ in computations[CALLED.search(line).group(1)]} - FREE
        kind = ("convolution" if "convolution" in inner else
                "transpose/copy" if inner & {"transpose", "copy"} else
                "reduce" if "reduce" in inner else
                "elementwise" if op == "fusion" else op)
        kernels[kind] += 1
        written[kind] += nbytes(result_type)
    converts = collections.Counter(  # compiled HLO prints the result type only
        SHAPE.search(result_type).group(1)
        for ops in computations.values() for op, result_type, _ in ops if op == "convert")
    callbacks = sum(1 for ops in computations.values() for op, _, line in ops
                    if op == "custom-call" and CALLBACK.search(line))
    return {
        "instructions": {k: everything.get(k, 0) for k in KEYS},
        "kernels": dict(kernels.most_common()),
        "kernel_output_mb": {k: round(v / 1e6, 2) for k, v in written.most_common()},
        "kernels_by_source": dict(by_source.most_common()),
        "kernel_output_mb_by_source": {k: round(v / 1e6, 2) for k, v in source_bytes.most_common()},
        "converts_to": dict(converts),
        "host_callbacks": callbacks,
        "conv_dim_labels": dict(collections.Counter(re.findall(r"dim_labels=([\w>\-]+)", text))),
    }


def inspect_program(name, jitted, *args, args_=None, **kwargs):
    start = time.perf_counter()
    lowered = jitted.lower(*args, **kwargs)
    out = {"lower_s": time.perf_counter() - start, "stablehlo": stablehlo_counts(lowered.as_text())}
    if not args_.no_compile:
        start = time.perf_counter()
        compiled = lowered.compile()
        out["compile_s"] = time.perf_counter() - start
        text = compiled.as_text()
        out["compiled_hlo"] = hlo_counts(text)
        if args_.save_hlo:
            os.makedirs(args_.save_hlo, exist_ok=True)
            with open(os.path.join(args_.save_hlo, f"{name}.hlo.txt"), "w", encoding="utf-8") as f:
                f.write(text)
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        out["gflop"] = float(cost.get("flops", 0.0)) / 1e9
        out["bytes_accessed_gb"] = float(cost.get("bytes accessed", 0.0)) / 1e9
    print(f"{name}: {json.dumps(out)[:400]}...", flush=True)
    return out


def spec(shape, dtype="float32"):
    return jax.ShapeDtypeStruct(shape, np.dtype(dtype))


def train_step(args):
    """Keras' jitted train step of the discrete network, as `training.train_network` compiles it."""
    from clearer_tf import Genotype, build_network
    from clearer_tf.presets import TrainConfig
    from clearer_tf.training import compile_network

    model = build_network(Genotype.from_string(PAPER_GENOTYPE))
    compile_network(model, TrainConfig())
    x = spec((args.batch, args.size, args.size, 1))
    model._symbolic_build(data_batch=(x, x))  # what fit() does first: metrics, loss, optimizer
    model.optimizer.build(model.trainable_variables)
    state = model._get_jax_state(trainable_variables=True, non_trainable_variables=True,
                                 optimizer_variables=True, metrics_variables=True)
    return inspect_program("train_step", jax.jit(model.train_step, donate_argnums=0), state, (x, x), args_=args)


def search_iteration(args):
    """The JAX search-iteration program (architecture step + weight step) of the paper preset,
    `SupernetSearch.train_step` as `fit` compiles it."""
    from clearer_tf.presets import get_preset
    from clearer_tf.search import SupernetSearch
    from clearer_tf.supernet import build_supernet

    preset = get_preset("paper")
    preset.search.batch_size = args.batch
    search = SupernetSearch(build_supernet(1, config=preset.supernet), preset.search)
    search.compile()
    state = search._get_jax_state(trainable_variables=True, non_trainable_variables=True,
                                  optimizer_variables=True, metrics_variables=True)
    x = spec((args.batch, args.size, args.size, 1))
    return inspect_program("search_iteration", jax.jit(search.train_step, donate_argnums=0), state,
                           ((x, x), (x, x)), args_=args)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--only", choices=["train_step", "search_iteration"], default=None)
    p.add_argument("--no-compile", action="store_true", help="StableHLO counts only")
    p.add_argument("--save-hlo", metavar="DIR", default=None, help="also write the compiled HLO texts")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args(argv)
    if keras.backend.backend() != "jax":
        p.error("needs KERAS_BACKEND=jax")
    result = {
        "command": "python bench/hlo_stats.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": datetime.date.today().isoformat(),
        "jax": jax.__version__,
        "keras": keras.__version__,
        "platform": jax.devices()[0].platform,
        "batch": args.batch,
        "size": args.size,
    }
    for name, fn in (("train_step", train_step), ("search_iteration", search_iteration)):
        if args.only in (None, name):
            result[name] = fn(args)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
