#!/usr/bin/env bash
# One GPU lease as one detached job (JAX backend, tf.data on the CPU): runs until DEADLINE_S
# seconds after its start, then leaves in $WORK/fetch what the lease must bring back.
#
#   setsid bash bench/gpu_lease.sh &        (from a snapshot of the repository root)
#
# What it runs now: issue 13 step 0, the paper's genotype (bench/genotypes/paper-l1-0.01.json)
# on the paper's 100,000-iteration schedule at sigma 50, for as much of it as the lease holds
# (train.py --time-limit), with the step clock (timing.json: first executed step, steady step
# time) and a profiler trace of a few steps. Around it, for issue 10:
#   - JAX's persistent compilation cache ($WORK/jaxcache);
#   - XLA's autotune results: loaded from bench/autotune/<GPU>_jaxlib-<version>.textproto when
#     the repository has that file, and always dumped to fetch/autotune.textproto;
# Progress: $WORK/log.  Fetch: $WORK/fetch (weights split into 15 MB parts, small files in
# small.tgz).  docs/gpu_session.md is the runbook around it.
set -u
DATA=${DATA:-.gpudata}
WORK=${WORK:-/tmp/lease}
DEADLINE_S=${DEADLINE_S:-600}
SIGMA=${SIGMA:-50}
GENOTYPE=${GENOTYPE:-bench/genotypes/paper-l1-0.01.json}
PRESET=${PRESET:-paper}
ITERATIONS=${ITERATIONS:-100000}
VALIDATE_EVERY=${VALIDATE_EVERY:-2000}
PROFILE=${PROFILE:-1100,1104}
START=$(date +%s)
mkdir -p "$WORK/fetch"
exec >>"$WORK/log" 2>&1
export KERAS_BACKEND=${KERAS_BACKEND:-jax} PYTHONUNBUFFERED=1
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-$WORK/jaxcache}
elapsed() { echo $(( $(date +%s) - START )); }
GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 | tr -c 'A-Za-z0-9.\n-' _)
JAXLIB=$(python -c "import jaxlib; print(jaxlib.__version__)")
echo "== start $(date -u +%FT%TZ) on ${GPU:-no GPU}, jaxlib $JAXLIB"

# XLA autotune results: load the kept ones, dump the union for the next lease.
KEPT="bench/autotune/${GPU}_jaxlib-${JAXLIB}.textproto"
FLAGS="--xla_gpu_dump_autotune_results_to=$WORK/fetch/autotune.textproto"
FLAGS="$FLAGS --xla_gpu_per_fusion_autotune_cache_dir=$WORK/autotune_cache"
[ -f "$KEPT" ] && FLAGS="$FLAGS --xla_gpu_load_autotune_results_from=$PWD/$KEPT" && echo "== loading $KEPT"
if ! XLA_FLAGS="$FLAGS" python -c "import jax.numpy as j; j.ones(8).sum().block_until_ready()"; then
  echo "== XLA rejects the autotune flags: running without them"; FLAGS=""
fi
export XLA_FLAGS="$FLAGS${XLA_FLAGS_EXTRA:+ $XLA_FLAGS_EXTRA}"

T="$WORK/train"
LIMIT=$(( DEADLINE_S - $(elapsed) - 60 ))  # model.keras, summary and packing after the stop
echo "== train $GENOTYPE, sigma $SIGMA, $ITERATIONS-iteration schedule, time limit ${LIMIT}s, at $(elapsed)s"
timeout $(( DEADLINE_S - $(elapsed) - 20 )) python train_scripts/train.py --task denoise --sigma "$SIGMA" \
  --genotype "$GENOTYPE" --data "$DATA/BSDS500/train" --val-data "$DATA/Set12" --preset "$PRESET" \
  --iterations "$ITERATIONS" --validate-every "$VALIDATE_EVERY" --time-limit "$LIMIT" \
  --profile "$PROFILE" --out "$T" --quiet || echo "== train failed or killed at the deadline"
echo "== train done at $(elapsed)s"

F="$WORK/fetch"
cat "$T/timing.json" 2>/dev/null; tail -c 600 "$T/validation.json" 2>/dev/null; echo
python - "$T" "$F" <<'EOF'  # model-only weights (the run's files also hold Adam's moments)
import json, os, sys
from clearer_tf.network import build_network
run, out = sys.argv[1:]
rows = json.load(open(os.path.join(run, "validation.json")))
best = max(rows, key=lambda r: r["val_psnr"])
for name in ["last"] + (["best"] if best is not rows[-1] else []):
    model = build_network(os.path.join(run, "genotype.json"))
    model.load_weights(os.path.join(run, f"{name}.weights.h5"))
    model.save_weights(os.path.join(out, f"{name}.weights.h5"))
EOF
(cd "$F" && for w in *.weights.h5; do split -b 15M "$w" "$w.part-" && rm "$w"; done)
mkdir -p "$WORK/small"
cp "$T"/{genotype,validation,train_summary,timing}.json "$WORK/small/" 2>/dev/null
cp -r "$T/tensorboard" "$WORK/small/" 2>/dev/null && rm -rf "$WORK/small/tensorboard/plugins"
[ -f "$F/autotune.textproto" ] && mv "$F/autotune.textproto" "$WORK/small/"
tar -czf "$F/profile.tgz" -C "$T/tensorboard" plugins 2>/dev/null || rm -f "$F/profile.tgz"
tar -czf "$WORK/caches.tgz" -C "$WORK" jaxcache autotune_cache 2>/dev/null
mkdir -p "$WORK/fetch2" && split -b 15M "$WORK/caches.tgz" "$WORK/fetch2/caches.tgz.part-"
ls -la "$F" "$WORK/fetch2"; du -sh "$WORK/jaxcache" "$WORK/autotune_cache" 2>/dev/null
echo "== end at $(elapsed)s"
cp "$WORK/log" "$WORK/small/log"
tar -czf "$F/small.tgz" -C "$WORK/small" .
touch "$WORK/DONE"
