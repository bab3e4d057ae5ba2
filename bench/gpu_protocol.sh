#!/usr/bin/env bash
# The paper protocol on one GPU in one background job (JAX backend, tf.data on the CPU):
#   1. (BENCH=1) benchmarks of the discrete network, float32 and mixed bfloat16;
#   2. the paper-preset search (TASK=denoise: grayscale, SIGMA=50; TASK=derain: RGB, rain
#      synthesised on the clean images), weights on BSDS500 train, architecture on val;
#   3. training of the found network on BSDS500 train; model selection on Set12 (denoise) or
#      on BSDS500 val with synthesised rain (derain);
#   4. evaluation on Set12 (denoise) or the real Rain100L pairs (derain): whole image and 64x64
#      patches, without and with the x8 ensemble;
#   5. $WORK/fetch/: what comes back (genotype, alpha history, logs, summaries, model-only
#      weights split into 15 MB parts), for `train_scripts/ship.py` on the CPU machine.
# Sized so that everything ends before DEADLINE_S seconds from its start: the search takes
# min(10,000, what fits) iterations and the training the rest, from step times measured on an
# H100 (SEARCH_S, TRAIN_S; docs/benchmarks.md) and compile allowances. On JAX the search is one
# XLA program (warm-up included); compiled programs go to a persistent cache ($WORK/jaxcache).
# The training follows the paper's schedule of TRAIN_TOTAL (100,000) iterations; a session that
# cannot finish it stops early (train.py --stop-after) and fetches resume.tar.part-* (genotype,
# validations, best weights, backup with the optimizer state). A later session carries those
# parts to the GPU machine and runs with TRAIN_FROM=<folder of the parts>: no search, the
# training continues the same schedule.
# Run from the repository root, detached:  setsid bash bench/gpu_protocol.sh &
# Progress: $WORK/log.
set -u
DATA=${DATA:-.gpudata}
WORK=${WORK:-/tmp/gpuwork}
DEADLINE_S=${DEADLINE_S:-1380}
TASK=${TASK:-denoise}
SIGMA=${SIGMA:-50}
TRAIN_TOTAL=${TRAIN_TOTAL:-100000}
TRAIN_FROM=${TRAIN_FROM:-}
# For a smoke test on a CPU: PRESET=quick SEARCH_MAX=40 TRAIN_TOTAL=40 VALIDATE_EVERY=20 ...
PRESET=${PRESET:-paper}
SEARCH_MAX=${SEARCH_MAX:-10000}
VALIDATE_EVERY=${VALIDATE_EVERY:-2000}
if [ "$TASK" = denoise ]; then
  TASK_ARGS="--task denoise --sigma $SIGMA"; VAL="$DATA/Set12"; TEST="$DATA/Set12"; RUN=${TASK}${SIGMA}
else
  TASK_ARGS="--task derain"; VAL="$DATA/BSDS500/val"; TEST="$DATA/Rain100L-sample"; RUN=$TASK
fi
START=$(date +%s)
mkdir -p "$WORK/fetch"
exec >>"$WORK/log" 2>&1
export KERAS_BACKEND=${KERAS_BACKEND:-jax} PYTHONUNBUFFERED=1
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-$WORK/jaxcache}
elapsed() { echo $(( $(date +%s) - START )); }
echo "== start $(date -u +%FT%TZ) on $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null)"

if [ "${BENCH:-0}" = 1 ]; then
  for prec in float32 mixed_bfloat16; do
    timeout 300 python bench/bench.py --only network --batch 32 --steps 30 --precision $prec \
      --json "$WORK/fetch/bench_network_${prec}.json" || echo "bench network $prec failed"
    echo "== bench $prec done at $(elapsed)s"
  done
fi

S="$WORK/search-$RUN"; T="$WORK/train-$RUN"
DONE=0
if [ -n "$TRAIN_FROM" ]; then  # continue an earlier session's training: no search
  mkdir -p "$T" && cat "$TRAIN_FROM"/resume.tar.part-* | tar -x -C "$T" || { echo "bad TRAIN_FROM"; exit 1; }
  DONE=$(python -c "import json; print(json.load(open('$T/backup/training_metadata.json'))['epoch'] * $VALIDATE_EVERY)")
  echo "== continuing the training from iteration $DONE"
fi

# Iteration budgets from the measured step times (plus 20-30 % for data and logging).
read SEARCH_IT TRAIN_IT < <(python - "$DEADLINE_S" "$(elapsed)" "${SEARCH_S:-0.060}" "${TRAIN_S:-0.030}" "$DONE" "$TRAIN_TOTAL" "$SEARCH_MAX" "$VALIDATE_EVERY" <<'EOF'
import sys
deadline, used, s, t, done, total, search_max, every = (float(a) for a in sys.argv[1:])
left = deadline - used - (240 if done else 420)  # compiling the search (~3 min), training, evaluation
search_it = 0 if done else int(max(min(search_max, 100), min(search_max, 0.6 * left / (1.2 * s) // 100 * 100)))
train_it = (left - 1.2 * s * search_it) / (1.3 * t) // every * every
print(search_it, int(min(max(train_it, every), total - done)))
EOF
)
STOP=$(( DONE + TRAIN_IT ))
if [ "$SEARCH_IT" -gt 0 ]; then
  WARMUP=$(( SEARCH_IT / 10 ))
  echo "== search $SEARCH_IT iterations (warm-up $WARMUP), then train to $STOP of $TRAIN_TOTAL, at $(elapsed)s"
  python train_scripts/search.py $TASK_ARGS --preset "$PRESET" \
    --weights-data "$DATA/BSDS500/train" --arch-data "$DATA/BSDS500/val" \
    --iterations "$SEARCH_IT" --warmup "$WARMUP" --out "$S" || echo "search failed"
  echo "== search done at $(elapsed)s"
  GENOTYPE="$S/genotype.json"
else
  echo "== train from $DONE to $STOP of $TRAIN_TOTAL, at $(elapsed)s"
  GENOTYPE="$T/genotype.json"
fi

# `timeout` only guards the deadline; a killed run still leaves backup/ at its last validation.
timeout $(( DEADLINE_S - $(elapsed) - 120 )) python train_scripts/train.py $TASK_ARGS \
  --genotype "$GENOTYPE" --data "$DATA/BSDS500/train" --val-data "$VAL" --preset "$PRESET" \
  --iterations "$TRAIN_TOTAL" --stop-after "$STOP" --validate-every "$VALIDATE_EVERY" --out "$T" --quiet \
  || echo "train failed or stopped by the deadline"
echo "== train done at $(elapsed)s"

python train_scripts/evaluate.py --model-dir "$WORK/train-$RUN" $TASK_ARGS --data "$TEST" \
  --patches --sheet 0 --out "$WORK/train-$RUN/eval" || echo "eval failed"
python train_scripts/evaluate.py --model-dir "$WORK/train-$RUN" $TASK_ARGS --data "$TEST" \
  --patches --ensemble --sheet 0 --out "$WORK/train-$RUN/eval-x8" || echo "eval x8 failed"
echo "== evaluation done at $(elapsed)s"

F="$WORK/fetch"
cp "$S/genotype.json" "$S/alpha_history.csv" "$S/alpha_history.png" "$S/architecture.png" "$F/" 2>/dev/null
cp "$T/genotype.json" "$T/train_summary.json" "$T/validation.json" "$F/" 2>/dev/null
cp "$T/eval/summary.json" "$F/eval_summary.json" 2>/dev/null
cp "$T/eval-x8/summary.json" "$F/eval_x8_summary.json" 2>/dev/null
python - "$T" "$F" <<'EOF'
import os, sys
import keras
from clearer_tf.network import build_network
run, out = sys.argv[1:]
model = build_network(os.path.join(run, "genotype.json"))
model.load_weights(os.path.join(run, "best.weights.h5"), skip_mismatch=False)
model.save_weights(os.path.join(out, "best.model.weights.h5"))
EOF
(cd "$F" && split -b 15M best.model.weights.h5 best.model.weights.h5.part- && rm best.model.weights.h5)
if [ -d "$T/backup" ]; then  # not finished: what the next session needs to continue
  tar -c -C "$T" genotype.json validation.json best.weights.h5 backup | split -b 15M - "$F/resume.tar.part-"
fi
ls -la "$F"
echo "== end at $(elapsed)s"
