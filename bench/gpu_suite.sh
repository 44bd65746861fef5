#!/usr/bin/env bash
# Issue 4/9 device run, on the GPU machine: the gpu test suite (CUDA ops and the device forward pass against
# the CPU path), compute-sanitizer memcheck of the forward-pass tests, the batched-decode benchmark on a
# Qwen3-30B-A3B-shaped model with its PyTorch peer, and the serving benchmark with --device cuda on the
# built-in model. Usage: bench/gpu_suite.sh BIN_DIR LIB_DIR (binaries from scripts/pack-gpu-carry).
set -u
bin=$1 lib=$2
export LD_LIBRARY_PATH="$lib:${LD_LIBRARY_PATH:-}"
export SY_FIXTURES_DIR="$PWD/tests/fixtures" SY_BUILTIN_MODEL="$PWD/models/builtin"
out=${OUT:-/tmp}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
echo "== gpu tests"
"$bin/sy_gpu_tests" --gtest_brief=1 2>&1 | grep -E "compared|Failure|FAILED|Expected|actual|PASSED|SKIPPED \]" | head -n 40
echo "== memcheck (device forward tests)"
if command -v compute-sanitizer >/dev/null; then
  compute-sanitizer --tool memcheck --report-api-errors no --error-exitcode 9 "$bin/sy_gpu_tests" --gtest_brief=1 \
    >"$out/memcheck.log" 2>&1
  echo "memcheck rc=$? $(grep -E 'ERROR SUMMARY' "$out/memcheck.log" | tail -n 1)"
fi
echo "== serve on cuda (built-in model)"
PYTHONUNBUFFERED=1 timeout 120 python3 bench/serve_bench.py --cli "$bin/switchyard" --device cuda \
  --requests 64 --rates 4,16,inf 2>&1 | tail -n 6
echo "== bench_gpu_moe_layer (Qwen3-30B-A3B layer, every expert path)"
timeout 150 "$bin/bench_gpu_moe_layer" --config bench/configs/qwen3_30b_a3b.json --tokens 1,64,4096,16384 2>&1 | tail -n 14
echo "== bench_nccl_dispatch (one rank: the path, not a network)"
NCCL_NVLS_ENABLE=0 timeout 60 "$bin/bench_nccl_dispatch" --iters 10 2>&1 | tail -n 14
echo "== bench_gpu_decode (Qwen3-30B-A3B shape)"
timeout 300 "$bin/bench_gpu_decode" --config bench/configs/qwen3_30b_a3b.json --batches 1,8,32,64 \
  --prompt-len 128 --decode-steps 32 2>&1 | tee "$out/bench_gpu_decode.txt" | tail -n 12
echo "== bench_gpu_decode, 2048-token prompts: key splits chosen per batch vs one block per query and head"
timeout 200 "$bin/bench_gpu_decode" --config bench/configs/qwen3_30b_a3b.json --batches 1,8 --prompt-len 2048 \
  --decode-steps 32 2>&1 | tail -n 4
SY_ATTENTION_KEY_SPLITS=1 timeout 200 "$bin/bench_gpu_decode" --config bench/configs/qwen3_30b_a3b.json \
  --batches 1,8 --prompt-len 2048 --decode-steps 32 2>&1 | tail -n 4
[ "${SY_SKIP_TORCH:-0}" = 1 ] && exit 0
echo "== PyTorch peer"
PYTHONUNBUFFERED=1 timeout 240 python3 bench/torch_moe_decode.py --config bench/configs/qwen3_30b_a3b.json \
  --batches 1,8,32,64 --prompt-len 128 --decode-steps 32 2>&1 | tee "$out/torch_moe_decode.txt" | tail -n 9
