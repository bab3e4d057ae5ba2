#!/usr/bin/env bash
# The GPU session in one background job (JAX backend, tf.data on the CPU):
#   1. benchmarks of the discrete network (float32 and mixed bfloat16; the supernet's three step
#      programs take ~3 min each to compile, so the search is timed from its own log instead),
#   2. the paper-preset search for grayscale denoising at sigma 50 (BSDS500 train / val),
#   3. training of the found network (BSDS500 train, model selection on Set12),
# sized so that everything ends before DEADLINE_S seconds from its start: the iteration counts of
# the search (at most the paper's 10,000) and of the training are derived from the step times
# measured on an H100 (SEARCH_S, TRAIN_S; see docs/benchmarks.md) and the compile times. Run from the repository root, detached:  setsid bash bench/gpu_protocol.sh &
# Progress: $WORK/log.  Results: $WORK/{bench_*.json,search50/,train50/}.
set -u
DATA=${DATA:-.gpudata}
WORK=${WORK:-/tmp/gpuwork}
DEADLINE_S=${DEADLINE_S:-1380}
START=$(date +%s)
mkdir -p "$WORK"
exec >>"$WORK/log" 2>&1
export KERAS_BACKEND=jax PYTHONUNBUFFERED=1
elapsed() { echo $(( $(date +%s) - START )); }
echo "== start $(date -u +%FT%TZ) on $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null)"

for prec in float32 mixed_bfloat16; do
  timeout 300 python bench/bench.py --only network --batch 32 --steps 30 --precision $prec \
    --json "$WORK/bench_network_${prec}.json" || echo "bench network $prec failed"
  echo "== bench $prec done at $(elapsed)s"
done

# Iteration budgets from the measured step times (plus 20-30 % for data and logging).
read SEARCH_IT TRAIN_IT < <(python - "$DEADLINE_S" "$(elapsed)" "${SEARCH_S:-0.060}" "${TRAIN_S:-0.030}" <<'EOF'
import sys
deadline, used, s, t = (float(a) for a in sys.argv[1:])
left = deadline - used - 420  # compiling the search's two programs (~6 min) and the training's
search_it = int(min(10_000, 0.5 * left / (1.2 * s)) // 100 * 100)
train_it = int((left - 1.2 * s * search_it) / (1.3 * t) // 2000 * 2000)
print(search_it, max(train_it, 2000))
EOF
)
WARMUP=$(( SEARCH_IT / 10 ))
echo "== search $SEARCH_IT iterations (warm-up $WARMUP), train $TRAIN_IT iterations, at $(elapsed)s"

python train_scripts/search.py --task denoise --preset paper --sigma 50 \
  --weights-data "$DATA/BSDS500/train" --arch-data "$DATA/BSDS500/val" \
  --iterations "$SEARCH_IT" --warmup "$WARMUP" --out "$WORK/search50" || echo "search failed"
echo "== search done at $(elapsed)s"

python train_scripts/train.py --task denoise --sigma 50 --genotype "$WORK/search50/genotype.json" \
  --data "$DATA/BSDS500/train" --val-data "$DATA/Set12" --preset paper \
  --iterations "$TRAIN_IT" --validate-every 2000 --out "$WORK/train50" --quiet || echo "train failed"
echo "== train done at $(elapsed)s"
echo "== end"
