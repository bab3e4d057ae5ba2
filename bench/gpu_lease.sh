#!/usr/bin/env bash
# One GPU lease as one detached job (JAX backend, tf.data on the CPU): runs the plan that
# bench/lease_plan.py made from the repository until DEADLINE_S seconds after its start, then
# leaves in $WORK/fetch what the lease must bring back (touches $WORK/DONE when it has).
#
#   PLAN=<dir of plan.env> DATA=<BSDS500 and Set12> DEADLINE_S=<s> setsid bash bench/gpu_lease.sh &
#   (or DEADLINE_AT=<epoch seconds>: the lease's end as computed before the wheel install)
#
# Plans (docs/gpu_session.md is the runbook around this script):
#   MODE=train   train GENOTYPE at SIGMA on the ITERATIONS schedule (paper recipe, Set12 selects),
#                from scratch, or from the shipped model INIT_MODEL at step INIT_STEP; stops at the
#                last validation that fits (train.py --time-limit). Brings back the model-only
#                weights (15 MB parts) for ship.py on the CPU machine.
#   MODE=search  the paper-preset search at SIGMA (weights on BSDS500 train, architecture on val).
#   MODE=bench   only the measurements below.
# Always, for issue 10: the step clock (timing.json: first executed step, steady step time), a
# profiler trace of a few steps (profile.tgz), JAX's persistent compilation cache, and XLA's
# autotune results: loaded from bench/autotune/<GPU>_jaxlib-<version>.textproto when the
# repository has that file, dumped for the next lease in any case (small.tgz).
# For a CPU smoke test: PRESET=quick ITERATIONS_OVERRIDE=120 VALIDATE_EVERY=60, and STOP_AFTER=N
# to end the training at step N as a short lease would (see tests/test_lease.py).
set -u
PLAN=${PLAN:-.gpuplan}
DATA=${DATA:-.gpudata}
WORK=${WORK:-/tmp/lease}
DEADLINE_S=${DEADLINE_S:-600}
PRESET=${PRESET:-paper}
VALIDATE_EVERY=${VALIDATE_EVERY:-2000}
PROFILE=${PROFILE:-1100,1104}
START=$(date +%s)
# DEADLINE_AT (epoch seconds, taken before the wheel install) wins over DEADLINE_S
[ -n "${DEADLINE_AT:-}" ] && DEADLINE_S=$(( DEADLINE_AT - START ))
rm -f "$WORK/DONE"; mkdir -p "$WORK/fetch" "$WORK/small"
exec >>"$WORK/log" 2>&1
elapsed() { echo $(( $(date +%s) - START )); }
[ -f "$PLAN/plan.env" ] || { echo "== no $PLAN/plan.env (run bench/lease_plan.py --out $PLAN)"; touch "$WORK/DONE"; exit 1; }
source "$PLAN/plan.env"
ITERATIONS=${ITERATIONS_OVERRIDE:-${ITERATIONS:-0}}
export KERAS_BACKEND=${KERAS_BACKEND:-jax} PYTHONUNBUFFERED=1
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-$WORK/jaxcache}
GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 | tr -c 'A-Za-z0-9.\n-' _)
JAXLIB=$(python -c "import jaxlib; print(jaxlib.__version__)")
echo "== start $(date -u +%FT%TZ) on ${GPU:-no GPU}, jaxlib $JAXLIB; plan: $(tr '\n' ' ' < "$PLAN/plan.env")"

# XLA autotune results: load the kept ones, dump the union for the next lease.
KEPT="bench/autotune/${GPU}_jaxlib-${JAXLIB}.textproto"
FLAGS="--xla_gpu_dump_autotune_results_to=$WORK/small/autotune.textproto"
FLAGS="$FLAGS --xla_gpu_per_fusion_autotune_cache_dir=$WORK/autotune_cache"
[ -f "$KEPT" ] && FLAGS="$FLAGS --xla_gpu_load_autotune_results_from=$PWD/$KEPT" && echo "== loading $KEPT"
if ! XLA_FLAGS="$FLAGS" python -c "import jax.numpy as j; j.ones(8).sum().block_until_ready()"; then
  echo "== XLA rejects the autotune flags: running without them"; FLAGS=""
fi
export XLA_FLAGS="$FLAGS${XLA_FLAGS_EXTRA:+ $XLA_FLAGS_EXTRA}"
HARD=$(( DEADLINE_S - $(elapsed) - 20 ))  # `timeout` only guards the deadline
T="$WORK/run"

if [ "$MODE" = train ]; then
  INIT=()
  if [ -n "${INIT_MODEL:-}" ]; then
    python - "$PLAN/$INIT_MODEL" "$WORK/init.weights.h5" <<'EOF' || { echo "== cannot read $INIT_MODEL"; touch "$WORK/DONE"; exit 1; }
import os, sys
from clearer_tf.pretrained import load_pretrained
folder, out = sys.argv[1:]
load_pretrained(os.path.basename(folder), root=os.path.dirname(folder)).save_weights(out)
EOF
    INIT=(--init-weights "$WORK/init.weights.h5" --init-step "$INIT_STEP")
  fi
  LIMIT=$(( DEADLINE_S - $(elapsed) - 60 ))  # model.keras, summary and packing after the stop
  echo "== train $GENOTYPE from step ${INIT_STEP:-0} of $ITERATIONS, sigma $SIGMA, limit ${LIMIT}s, at $(elapsed)s"
  timeout "$HARD" python train_scripts/train.py --task denoise --sigma "$SIGMA" --genotype "$GENOTYPE" \
    --data "$DATA/BSDS500/train" --val-data "$DATA/Set12" --preset "$PRESET" --iterations "$ITERATIONS" \
    --validate-every "$VALIDATE_EVERY" --time-limit "$LIMIT" --profile "$PROFILE" "${INIT[@]}" \
    ${STOP_AFTER:+--stop-after "$STOP_AFTER"} \
    --out "$T" --quiet || echo "== train failed or killed at the deadline"
  echo "== train done at $(elapsed)s"
  cat "$T/timing.json" 2>/dev/null; tail -c 400 "$T/validation.json" 2>/dev/null; echo
  python - "$T" "$WORK/fetch" <<'EOF'  # model-only weights (the run's files also hold Adam's moments)
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
  (cd "$WORK/fetch" && for w in *.weights.h5; do split -b 15M "$w" "$w.part-" && rm "$w"; done)
  cp "$T"/{genotype,validation,train_summary,timing}.json "$WORK/small/" 2>/dev/null
elif [ "$MODE" = search ]; then
  N=${SEARCH_ITERATIONS_OVERRIDE:-$SEARCH_ITERATIONS}
  echo "== search $N iterations at sigma $SIGMA, at $(elapsed)s"
  timeout "$HARD" python train_scripts/search.py --task denoise --sigma "$SIGMA" --preset "$PRESET" \
    --weights-data "$DATA/BSDS500/train" --arch-data "$DATA/BSDS500/val" --iterations "$N" \
    --out "$T" || echo "== search failed or killed at the deadline"
  echo "== search done at $(elapsed)s"
  cp "$T"/genotype.json "$T"/alpha_history.* "$T"/architecture.png "$T"/*.json "$WORK/small/" 2>/dev/null
fi

if [ -d "$T/tensorboard" ]; then
  cp -r "$T/tensorboard" "$WORK/small/" && rm -rf "$WORK/small/tensorboard/plugins"
  tar -czf "$WORK/fetch/profile.tgz" -C "$T/tensorboard" plugins 2>/dev/null || rm -f "$WORK/fetch/profile.tgz"
fi
tar -czf "$WORK/caches.tgz" -C "$WORK" jaxcache autotune_cache 2>/dev/null
mkdir -p "$WORK/fetch2" && split -b 15M "$WORK/caches.tgz" "$WORK/fetch2/caches.tgz.part-"
ls -la "$WORK/fetch" "$WORK/fetch2"
echo "== end at $(elapsed)s"
cp "$WORK/log" "$WORK/small/log"
tar -czf "$WORK/fetch/small.tgz" -C "$WORK/small" .
touch "$WORK/DONE"
