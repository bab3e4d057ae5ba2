#!/usr/bin/env bash
# The CPU side of a GPU lease, before call 1 (docs/gpu_session.md), from the repository root:
#   bash bench/lease_prepare.sh            .lease/ = wheels (Keras, namex, optree), data, plan (and
#                                          the model-only weights a training continues from), and
#                                          saved_models/ set aside: a call carries 64 MiB in all,
#                                          the working tree included
#   bash bench/lease_prepare.sh --restore  put saved_models/ back (always, before committing)
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
if [ "${1:-}" = --restore ]; then
  if [ -d .gpuhidden/saved_models ]; then rm -rf saved_models && mv .gpuhidden/saved_models saved_models; fi
  git status --short saved_models; exit 0
fi
mkdir -p .lease/wheels
if ! ls .lease/wheels/keras-*.whl >/dev/null 2>&1; then  # the GPU machine has JAX, no Keras, no index
  KERAS=$(python -c "import importlib.metadata as m; print(m.version('keras'))")
  python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .lease/wheels "keras==$KERAS" namex optree
fi
python bench/lease_plan.py --out .lease/plan >/dev/null
MODE=$(sed -n 's/^MODE=//p' .lease/plan/plan.env)
rm -rf .lease/data && mkdir -p .lease/data/BSDS500
cp -r ../shared/datasets/BSDS500/train .lease/data/BSDS500/
if [ "$MODE" = search ]; then cp -r ../shared/datasets/BSDS500/val .lease/data/BSDS500/; else cp -r ../shared/datasets/Set12 .lease/data/; fi
if [ -d saved_models ]; then mkdir -p .gpuhidden && rm -rf .gpuhidden/saved_models && mv saved_models .gpuhidden/; fi
tree=$( (git ls-files -co --exclude-standard | xargs -d "\n" du -cb 2>/dev/null || true) | tail -1 | cut -f1)
carry=$(du -sb .lease | cut -f1)
echo "plan: $(tr '\n' ' ' < .lease/plan/plan.env)"
echo "call 1 sends $(( (tree + carry) / 1048576 )) MiB (tree $(( tree / 1048576 )), .lease $(( carry / 1048576 )))"
if [ $(( tree + carry )) -gt $(( 62 * 1048576 )) ]; then
  echo "too much for one call (64 MiB with the transfer's own overhead): shrink the tree"; exit 2
fi
