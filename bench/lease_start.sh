#!/usr/bin/env bash
# Call 1 of a GPU lease (docs/gpu_session.md), on the GPU machine from the repository root:
#
#   bash bench/lease_start.sh DEADLINE_AT [RETURN_AFTER_S]
#
# installs the wheels carried in .lease/wheels (Keras, namex, optree: the machine has JAX but no
# Keras), snapshots the tree (later calls re-send it), checks which XLA flags this jaxlib accepts,
# starts bench/lease_job.py detached (it must be done by DEADLINE_AT, epoch seconds), waits
# RETURN_AFTER_S seconds from this script's start (default 560: under the 10-minute command
# limit) or until the job is done, and copies to $OUT the safety weights of the last validation
# (15 MB parts) and a log. Call 2 (bench/lease_collect.sh) must follow within the machine's idle
# release (30 s). LEASE_IN (default .lease), WORK (/tmp/lease), LEASE_PYTHON (python3) and
# LEASE_ARGS (more lease_job.py flags) are for the CPU smoke test.
set -u
DEADLINE_AT=${1:?usage: bench/lease_start.sh DEADLINE_AT [RETURN_AFTER_S]}
RETURN_AFTER=${2:-560}
T0=$(date +%s)
if [ "$DEADLINE_AT" -gt $(( T0 + 860 )) ]; then DEADLINE_AT=$(( T0 + 860 )); fi  # a lease is 15 minutes
IN=$(cd "${LEASE_IN:-.lease}" && pwd)
WORK=${WORK:-/tmp/lease}
PY=${LEASE_PYTHON:-python3}
OUT=${OUT:?OUT: the folder whose files come back}
rm -rf "$WORK" && mkdir -p "$WORK/small" "$WORK/fetch" "$WORK/safety"
say() { echo "== $* at $(( $(date +%s) - T0 ))s" | tee -a "$WORK/start.log"; }

if ls "$IN"/wheels/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$IN"/wheels/*.whl \
    || say "wheel install failed"
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export KERAS_BACKEND=jax PYTHONUNBUFFERED=1 JAX_COMPILATION_CACHE_DIR="$WORK/jaxcache"
$PY -c "import keras, jax; print('keras', keras.__version__, 'jax', jax.__version__, jax.devices()[0].device_kind)" \
  2>&1 | tail -1 | tee -a "$WORK/start.log"
say "installed"

SNAP=${SNAP:-/tmp/snap}
rm -rf "$SNAP" && mkdir -p "$SNAP" && cp -r . "$SNAP"/

# XLA flags: each kept only if this jaxlib accepts it (an unknown flag aborts the process)
GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 | tr -c 'A-Za-z0-9.\n-' _)
JAXLIB=$($PY -c "import jaxlib; print(jaxlib.__version__)" 2>/dev/null)
KEPT="bench/autotune/${GPU:-none}_jaxlib-${JAXLIB}.textproto"
WANTED=("--xla_gpu_dump_autotune_results_to=$WORK/small/autotune.textproto"
        "--xla_gpu_per_fusion_autotune_cache_dir=$WORK/autotune_cache"
        "--xla_enable_command_buffers_during_profiling=true"
        "--xla_dump_to=$WORK/hlo" "--xla_dump_hlo_as_text" "--xla_dump_hlo_module_re=.*train.*")
[ -f "$KEPT" ] && WANTED+=("--xla_gpu_load_autotune_results_from=$SNAP/$KEPT")
accepts() { XLA_FLAGS="$1" $PY -c "import jax.numpy as j; j.ones(8).sum().block_until_ready()" >/dev/null 2>&1; }
FLAGS="${WANTED[*]}"
if ! accepts "$FLAGS"; then  # one process per flag only when the set is refused (each start costs seconds)
  FLAGS=""
  for flag in "${WANTED[@]}"; do
    if accepts "$flag"; then FLAGS="$FLAGS $flag"; else say "XLA rejects $flag"; fi
  done
fi
export XLA_FLAGS="${FLAGS# }${XLA_FLAGS_EXTRA:+ $XLA_FLAGS_EXTRA}"
say "flags checked ($XLA_FLAGS)"

(cd "$SNAP" && setsid nohup $PY bench/lease_job.py --plan "$IN/plan" --data "$IN/data" --work "$WORK" \
   --deadline-at "$DEADLINE_AT" ${LEASE_ARGS:-} > "$WORK/log" 2>&1 < /dev/null &)
say "job started"

while [ ! -f "$WORK/DONE" ] && [ $(( $(date +%s) - T0 )) -lt "$RETURN_AFTER" ]; do sleep 5; done
grep '^== ' "$WORK/log" | tail -8
cp "$WORK/start.log" "$OUT/"
tail -c 3000 "$WORK/log" > "$OUT/log-call1.txt"
if [ -f "$WORK/DONE" ]; then  # all of it now: no call 2 needed, give_back
  cp "$WORK/fetch"/* "$OUT"/
  echo "job done: everything fetched"
else  # the weights of the last validation, in case call 2 never comes
  if [ -f "$WORK/safety/last.weights.h5" ]; then
    cp "$WORK/safety/safety.json" "$OUT/"
    split -b 15M "$WORK/safety/last.weights.h5" "$OUT/safety.weights.h5.part-"
  fi
  echo "job running: call bench/lease_collect.sh now (the machine goes back after 30 s idle)"
fi
