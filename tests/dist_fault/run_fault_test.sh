#!/usr/bin/env bash
# Runs sy_dist_fault under mpirun and checks that the job fails within TIMEOUT + margin and that surviving
# ranks report it (hang: our CommError "timed out"; kill: our error or mpirun's own report of the dead rank).
#   run_fault_test.sh MPIEXEC BINARY kill|hang NP
set -u
mpiexec="$1" bin="$2" mode="$3" np="$4"
timeout_s=3
margin=20
start=$(date +%s)
out=$(timeout 120 "$mpiexec" --oversubscribe --allow-run-as-root -np "$np" "$bin" "$mode" "$timeout_s" 2>&1)
rc=$?
elapsed=$(( $(date +%s) - start ))
echo "$out"
echo "exit $rc after ${elapsed} s"
[ "$rc" -ne 0 ] || { echo "FAIL: job exited 0"; exit 1; }
[ "$rc" -ne 124 ] || { echo "FAIL: job hung"; exit 1; }
[ "$elapsed" -le $((timeout_s + margin)) ] || { echo "FAIL: took ${elapsed} s"; exit 1; }
if [ "$mode" = hang ]; then
  echo "$out" | grep -q "rank 0: error: \[comm\] all_to_all_v timed out after $timeout_s s" || { echo "FAIL: no timeout error"; exit 1; }
else
  echo "$out" | grep -qE "rank 0: error: \[comm\]|exited on signal 9" || { echo "FAIL: no error report"; exit 1; }
fi
echo PASS
