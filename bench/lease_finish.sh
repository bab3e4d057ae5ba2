#!/usr/bin/env bash
# Here, after a lease (docs/gpu_session.md): turns what the two calls brought back into
# repository state, from the repository root:
#
#   bash bench/lease_finish.sh CALL2_FILES_AT [CALL1_FILES_AT]
#
# - puts saved_models/ back (bench/lease_prepare.sh --restore);
# - small.tgz -> docs/runs/<date>-lease-<GPU>-<name>/ (log, lease.json with the timeline, batch
#   sweep and kernel counts, summaries, timing.json, TensorBoard events); its autotune results
#   -> bench/autotune/<GPU>_jaxlib-<version>.textproto; the profile's op breakdown beside them;
# - a training plan: joins the model-only weights (call 2's last.weights.h5, else call 1's
#   safety weights), evaluates on Set12 and BSDS500 val (whole and 64x64 patches, and x8 on
#   Set12), and ships the plan's NAME as version VERSION (the card counts the segments);
# - a search plan: genotype, alpha history and pictures -> the plan's GENOTYPE_OUT folder.
# DATA (default ../shared/datasets) holds Set12 and BSDS500. Prints what to commit. For tests,
# PLAN (.lease/plan), RUNS (docs/runs), AUTOTUNE (bench/autotune), TRAINS (runs) and MODELS
# (saved_models) move everything it writes elsewhere; EVAL_SETS and EVAL_X8=0 shorten the evaluation.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
FETCHED=${1:?usage: bench/lease_finish.sh CALL2_FILES_AT [CALL1_FILES_AT]}
FIRST=${2:-}
DATA=${DATA:-../shared/datasets}
PLAN=${PLAN:-.lease/plan} RUNS=${RUNS:-docs/runs} AUTOTUNE=${AUTOTUNE:-bench/autotune}
TRAINS=${TRAINS:-runs} MODELS=${MODELS:-saved_models}
[ -f "$FETCHED/small.tgz" ] || { echo "$FETCHED/small.tgz: not found (call 2 brought nothing back?)"; exit 2; }
[ -f "$PLAN/plan.env" ] || { echo "$PLAN/plan.env: not found (the plan this lease ran)"; exit 2; }
bash bench/lease_prepare.sh --restore >/dev/null
source "$PLAN/plan.env"

SMALL=$(mktemp -d)
tar -xzf "$FETCHED/small.tgz" -C "$SMALL"
python - "$SMALL/lease.json" > "$SMALL/gpu.txt" <<'PY'
import json, re, sys
lease = json.load(open(sys.argv[1]))
print(re.sub(r"[^A-Za-z0-9.-]", "_", lease.get("gpu", "unknown")), lease.get("versions", {}).get("jaxlib", "unknown"))
PY
read -r GPU JAXLIB < "$SMALL/gpu.txt" && rm "$SMALL/gpu.txt"
RUN="$RUNS/$(date -u +%F)-lease-${GPU}-${NAME:-bench}${VERSION:+-v$VERSION}"
mkdir -p "$RUN" "$AUTOTUNE"
if [ -s "$SMALL/autotune.textproto" ]; then
  mv "$SMALL/autotune.textproto" "$AUTOTUNE/${GPU}_jaxlib-${JAXLIB}.textproto"
fi
cp -r "$SMALL"/. "$RUN"/
python - "$RUN" "$RUNS/batch_sweep.json" <<'PY'  # the batch sweep, kept across leases (bench/lease_plan.py reads it)
import json, os, sys, time
run, path = sys.argv[1:]
lease = json.load(open(os.path.join(run, "lease.json")))
rows = json.load(open(path)) if os.path.isfile(path) else []
common = {"gpu": lease.get("gpu"), "jaxlib": lease.get("versions", {}).get("jaxlib"), "date": time.strftime("%Y-%m-%d"),
          "lease": os.path.basename(run)}
timing = os.path.join(run, "timing.json")
if os.path.isfile(timing) and json.load(open(timing)).get("step_ms"):
    batch = lease.get("plan", {}).get("BATCH", 32)
    rows.append({"batch": int(batch), "step_ms": json.load(open(timing))["step_ms"], "source": "training (fit)", **common})
rows += [{**row, "source": "train_on_batch", **common} for row in lease.get("batch_sweep") or []]
if rows:
    with open(path, "w") as f:
        json.dump(rows, f, indent=1)
PY
if [ -f "$FETCHED/profile.tgz" ]; then
  python bench/profile_ops.py "$FETCHED/profile.tgz" --steps 5 --json "$RUN/profile_ops.json" > "$RUN/profile_ops.md" \
    || echo "profile: no breakdown (see $RUN/profile_ops.md)"
fi

if [ "$MODE" = train ]; then
  TRAIN="$TRAINS/lease-train-$NAME-v$VERSION"
  mkdir -p "$TRAIN"
  if ls "$FETCHED"/last.weights.h5.part-* >/dev/null 2>&1; then
    cat "$FETCHED"/last.weights.h5.part-* > "$TRAIN/best.weights.h5"
  else
    echo "call 2 brought no weights: the job failed (see $RUN/log)${FIRST:+; the safety weights of call 1 are in $FIRST}"
    exit 2
  fi
  cp "$RUN"/{genotype,train_summary,validation}.json "$TRAIN/"
  for set in ${EVAL_SETS:-Set12 BSDS500/val}; do
    out="$TRAIN/eval-$(basename "$set")"
    python train_scripts/evaluate.py --model-dir "$TRAIN" --task denoise --sigma "$SIGMA" --data "$DATA/$set" \
      --patches --sheet 0 --out "$out"
  done
  if [ "${EVAL_X8:-1}" = 1 ]; then
    python train_scripts/evaluate.py --model-dir "$TRAIN" --task denoise --sigma "$SIGMA" --data "$DATA/Set12" \
      --patches --ensemble --sheet 0 --out "$TRAIN/eval-Set12-x8"
  fi
  CONTINUES=(); [ -n "${INIT_MODEL:-}" ] && CONTINUES=(--continues "$PLAN/$INIT_MODEL")
  python train_scripts/ship.py --model-dir "$TRAIN" --name "$NAME" --version "$VERSION" --overwrite \
    --eval "$TRAIN"/eval-*/summary.json --check-data "$DATA/Set12" --out "$MODELS" "${CONTINUES[@]}"
  echo "shipped $MODELS/$NAME/$VERSION; run: python -m pytest -q tests/test_pretrained.py"
  echo "then update saved_models/README.md and commit $MODELS/$NAME $RUN $RUNS/batch_sweep.json $AUTOTUNE"
elif [ "$MODE" = search ]; then
  DEST=$(dirname "$GENOTYPE_OUT")
  mkdir -p "$DEST"
  cp "$RUN"/genotype.json "$RUN"/alpha_history.* "$DEST"/ 2>/dev/null || true
  python - "$DEST" <<'PY' || echo "pictures: not drawn"
import sys
from clearer_tf import plots
plots.plot_architecture(sys.argv[1] + "/genotype.json", sys.argv[1] + "/architecture.png")
plots.plot_alpha_history(sys.argv[1] + "/alpha_history.csv", sys.argv[1] + "/alpha_history.png")
PY
  echo "search outputs in $DEST; commit $DEST $RUN $AUTOTUNE"
fi
echo "lease outputs in $RUN"
