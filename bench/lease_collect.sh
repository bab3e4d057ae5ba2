#!/usr/bin/env bash
# Call 2 of a GPU lease (docs/gpu_session.md), on the GPU machine: waits up to $1 seconds
# (default 600) for bench/lease_job.py to finish, then copies what it left in $WORK/fetch
# (small.tgz, profile.tgz, last.weights.h5 in 15 MB parts) to $OUT. Then call give_back.
WORK=${WORK:-/tmp/lease}
end=$(( $(date +%s) + ${1:-600} ))
while [ ! -f "$WORK/DONE" ] && [ "$(date +%s)" -lt "$end" ]; do sleep 3; done
grep '^== ' "$WORK/log" | tail -12
if [ -f "$WORK/DONE" ]; then
  cp "$WORK/fetch"/* "${OUT:?}"/ && ls -la "$OUT"
else
  echo "job still running (its log below); nothing fetched"; tail -c 2000 "$WORK/log"; exit 1
fi
