#!/usr/bin/env bash
# On the GPU machine: wait up to $1 seconds for the lease job (bench/gpu_lease.sh) to finish,
# showing its log; once it has, copy what it left for fetching ($WORK/fetch, or fetch2 with
# `--second`) to $OUT.
WORK=${WORK:-/tmp/lease}
end=$(( $(date +%s) + ${1:-500} ))
while [ ! -f "$WORK/DONE" ] && [ "$(date +%s)" -lt "$end" ]; do sleep 10; done
grep '^== ' "$WORK/log" | tail -12
if [ -f "$WORK/DONE" ]; then
  src=fetch; [ "${2:-}" = --second ] && src=fetch2
  cp "$WORK/$src"/* "${OUT:?}"/ 2>/dev/null; ls -la "$OUT"
else
  echo "still running"; tail -3 "$WORK/log"
fi
