#!/usr/bin/env bash
# Here, after a lease (docs/gpu_session.md step 3): turns what the lease brought back into
# repository state, from the repository root:
#
#   bash bench/lease_finish.sh FILES_AT [FILES_AT_2]    (the folders the device tool fetched into)
#
# - puts saved_models/ back (bench/lease_prepare.sh --restore);
# - small.tgz -> docs/runs/<date>-lease-<GPU>/ (log, summaries, timing.json, TensorBoard events);
#   its autotune results -> bench/autotune/<GPU>_jaxlib-<version>.textproto; the profile's op
#   breakdown -> profile_ops.md/.json beside them;
# - a training plan: joins the weights, evaluates on Set12 and BSDS500 val (whole and 64x64
#   patches, and x8 on Set12), and ships the plan's NAME as version VERSION;
# - a search plan: genotype, alpha history and pictures -> the plan's GENOTYPE_OUT folder.
# DATA (default ../shared/datasets) holds Set12 and BSDS500. Prints what to commit. For tests,
# PLAN, RUNS (docs/runs), AUTOTUNE (bench/autotune), TRAINS (runs) and MODELS (saved_models)
# move everything it writes elsewhere; EVAL_SETS and EVAL_X8=0 make the evaluation shorter.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
FETCHED=${1:?usage: bench/lease_finish.sh FILES_AT [FILES_AT_2]}
DATA=${DATA:-../shared/datasets}
PLAN=${PLAN:-.gpuplan} RUNS=${RUNS:-docs/runs} AUTOTUNE=${AUTOTUNE:-bench/autotune}
TRAINS=${TRAINS:-runs} MODELS=${MODELS:-saved_models}
[ -f "$FETCHED/small.tgz" ] || { echo "$FETCHED/small.tgz: not found (nothing fetched?)"; exit 2; }
[ -f "$PLAN/plan.env" ] || { echo "$PLAN/plan.env: not found (the plan this lease ran)"; exit 2; }
bash bench/lease_prepare.sh --restore >/dev/null
source "$PLAN/plan.env"

SMALL=$(mktemp -d)
tar -xzf "$FETCHED/small.tgz" -C "$SMALL"
read -r GPU JAXLIB < <(sed -n '1s/^== start [^ ]* on \(.*\), jaxlib \([^;]*\);.*/\1 \2/p' "$SMALL/log")
RUN="$RUNS/$(date -u +%F)-lease-${GPU:-unknown}-${NAME:-bench}${VERSION:+-v$VERSION}"
mkdir -p "$RUN" "$AUTOTUNE"
if [ -s "$SMALL/autotune.textproto" ]; then
  mv "$SMALL/autotune.textproto" "$AUTOTUNE/${GPU}_jaxlib-${JAXLIB}.textproto"
fi
cp -r "$SMALL"/. "$RUN"/
if [ -f "$FETCHED/profile.tgz" ]; then
  python bench/profile_ops.py "$FETCHED/profile.tgz" --steps 5 --json "$RUN/profile_ops.json" > "$RUN/profile_ops.md" \
    || echo "profile: no breakdown (see $RUN/profile_ops.md)"
fi

if [ "$MODE" = train ]; then
  TRAIN="$TRAINS/lease-train-$NAME-v$VERSION"
  mkdir -p "$TRAIN"
  which=last; ls "$FETCHED"/best.weights.h5.part-* >/dev/null 2>&1 && which=best
  cat "$FETCHED/$which".weights.h5.part-* > "$TRAIN/best.weights.h5"
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
  echo "then update saved_models/README.md and commit $MODELS/$NAME $RUN $AUTOTUNE"
elif [ "$MODE" = search ]; then
  DEST=$(dirname "$GENOTYPE_OUT")
  mkdir -p "$DEST"
  cp "$RUN"/genotype.json "$RUN"/alpha_history.* "$RUN"/architecture.png "$DEST"/ 2>/dev/null || true
  echo "search outputs in $DEST; commit $DEST $RUN $AUTOTUNE"
fi
for f in "${2:-/nonexistent}"/caches.tgz.part-*; do [ -f "$f" ] && echo "caches fetched: $f (not committed)"; done
echo "lease outputs in $RUN"
