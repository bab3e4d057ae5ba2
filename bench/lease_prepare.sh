#!/usr/bin/env bash
# The CPU side of a GPU lease (docs/gpu_session.md), from the repository root:
#   bash bench/lease_prepare.sh            stage the wheels (once), copy the data, write the plan,
#                                          and set saved_models/ aside so that each call's working
#                                          tree stays small (a call carries 64 MiB in all)
#   bash bench/lease_prepare.sh --restore  put saved_models/ back (always, before committing)
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
if [ "${1:-}" = --restore ]; then
  [ -d .gpuhidden/saved_models ] && rm -rf saved_models && mv .gpuhidden/saved_models saved_models
  git status --short saved_models; exit 0
fi
[ -d .gpu/whl ] || bash ../shared/gpu/stage.sh
rm -rf .gpudata && mkdir -p .gpudata && cp -r ../shared/datasets/BSDS500 ../shared/datasets/Set12 .gpudata/
python bench/lease_plan.py --out .gpuplan
if [ -d saved_models ]; then mkdir -p .gpuhidden && rm -rf .gpuhidden/saved_models && mv saved_models .gpuhidden/; fi
echo "tree that travels: $(git ls-files -co --exclude-standard | xargs -d '\n' du -cb 2>/dev/null | tail -1 | cut -f1) bytes;" \
     "carry: $(du -sh .gpudata .gpuplan | cut -f1 | tr '\n' ' ')"
