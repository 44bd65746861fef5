#!/usr/bin/env bash
# Issue 10 device run, on a machine with 2+ GPUs: the dist test suite (the device dispatcher and GPU
# expert-parallel tests need one GPU per rank), expert-parallel generation on the GPUs against one GPU, the
# NCCL dispatch benchmark next to NCCL's own all-to-all, and (with SY_DECODE=1; minutes of random weight
# init) Qwen3-30B-A3B-shaped decode with EP over all GPUs against one GPU; one rank per GPU under Open MPI,
# NVLink multicast off. Binaries from `scripts/pack-gpu-carry --mpi` (gpucarry/mpi.tar.xz, built here with
# SY_MPI=ON; the device's Open MPI and NCCL are used). Usage: bench/multi_gpu_suite.sh BIN_DIR LIB_DIR [RANKS]
set -u
bin=$1 lib=$2
ranks=${3:-$(nvidia-smi --query-gpu=name --format=csv,noheader | wc -l)}
export LD_LIBRARY_PATH="$lib:${LD_LIBRARY_PATH:-}" SY_FIXTURES_DIR="$PWD/tests/fixtures" NCCL_NVLS_ENABLE=0
mpi="mpirun --allow-run-as-root --oversubscribe -np $ranks -x LD_LIBRARY_PATH -x SY_FIXTURES_DIR -x NCCL_NVLS_ENABLE"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
echo "== dist tests on $ranks GPUs"
timeout 300 $mpi -x SY_NUM_THREADS=4 "$bin/sy_dist_tests" --gtest_brief=1 2>&1 |
  grep -E "PASSED|FAILED|Failure|SKIPPED|Skipped" | sort | uniq -c | head -n 20
echo "== NCCL dispatch + combine vs NCCL all-to-all, $ranks ranks"
timeout 200 $mpi "$bin/bench_nccl_dispatch" --iters 10 2>&1 | tail -n 14
echo "== generate --device cuda --ep $ranks against one GPU (qwen3_moe fixture, 12 greedy tokens)"
# The one-GPU run takes the cuBLAS expert path (as expert parallelism does), not the f32 grouped GEMV.
fx=tests/fixtures/golden/qwen3_moe
args="generate --model $fx --device cuda --prompt-ids 1,5,9,2,7 --max-new-tokens 12 --ignore-eos --format json"
one=$(SY_GROUPED_GEMV_MAX_TOKENS=0 timeout 60 "$bin/switchyard" $args 2>&1 | tail -n 1)
ep=$(timeout 120 $mpi "$bin/switchyard" $args --ep "$ranks" 2>&1 | tail -n 1)
echo "one GPU:   $one"
echo "$ranks GPUs EP: $ep"
case "$one" in *'"ids"'*) [ "$one" = "$ep" ] && echo "same tokens" || echo "tokens differ" ;; *) echo "no result" ;; esac
[ "${SY_DECODE:-0}" = 1 ] || exit 0
echo "== decode, Qwen3-30B-A3B shape: one GPU, then EP over $ranks GPUs with data-parallel attention"
timeout 280 "$bin/bench_gpu_decode" --config bench/configs/qwen3_30b_a3b.json --batches 1,64,256 \
  --prompt-len 32 --decode-steps 32 2>&1 | tail -n 5
timeout 280 $mpi "$bin/bench_gpu_decode" --config bench/configs/qwen3_30b_a3b.json --batches 1,64,256 \
  --prompt-len 32 --decode-steps 32 --ep 2>&1 | tail -n 6
