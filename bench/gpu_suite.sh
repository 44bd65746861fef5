#!/usr/bin/env bash
# Issue 4/9 device run, on the GPU machine: the gpu test suite (CUDA ops and the device forward pass against
# the CPU path), compute-sanitizer memcheck of it, the batched-decode benchmark on a Qwen3-30B-A3B-shaped model
# and on a DeepSeek-V2-Lite-shaped one (absorbed MLA), the MoE-layer, prefill-attention and NCCL-dispatch
# benchmarks, the serving benchmark with --device cuda on the built-in model, their PyTorch peers, and with
# SY_NCU=1 an Nsight Compute ranking of a decode step's kernels (bench/ncu_summary.py).
# Usage: bench/gpu_suite.sh BIN_DIR LIB_DIR [SECTIONS] (binaries from scripts/pack-gpu-carry). SECTIONS is a
# comma list of tests, memcheck, serve, layer, layerab, nccl, decode, long, attention, sm90, deepseek, trace, layertrace,
# gemmstalls, ncu, torch (default: all but layertrace, gemmstalls and ncu, which SY_NCU=1 adds); the whole suite takes longer than one 10-minute device call, so
# split it, e.g. "tests,layer,attention", then "decode,sm90", then "memcheck", then
# "long,deepseek,serve,nccl,torch" (calls back to back: an idle machine is handed back within a minute).
# SY_MEMCHECK_FILTER=PATTERN limits memcheck to the gtest filter PATTERN (the whole suite takes minutes).
# SY_DECODE_BASE=PATH adds a baseline bench_gpu_decode (another build's) to the decode section's A/B runs.
# sm90 measures the Hopper kernels (SY_SM90_EXPERTS, SY_FLASH_SM90; default on compute capability 9.0) and
# cuDNN's attention (SY_CUDNN_ATTENTION=1) end to end; the layer and attention sections time them kernel by kernel.
set -u
bin=$1 lib=$2
sections=${3:-tests,memcheck,serve,layer,nccl,decode,long,attention,sm90,deepseek,torch}
[ "${SY_NCU:-0}" = 1 ] && sections="$sections,ncu"
[ "${SY_SKIP_TORCH:-0}" = 1 ] && sections="${sections//torch/}"
want() { [[ ",$sections," == *",$1,"* ]]; }
export LD_LIBRARY_PATH="$lib:${LD_LIBRARY_PATH:-}"
export SY_FIXTURES_DIR="$PWD/tests/fixtures" SY_BUILTIN_MODEL="$PWD/models/builtin"
source "$(dirname "$0")/find_cudnn.sh"  # the cuDNN attention path
out=${OUT:-/tmp}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
if want tests; then
  tests_log="$out/gpu_tests${SY_TESTS:+_$SY_TESTS}.log"
  echo "== gpu tests${SY_TESTS:+ ($SY_TESTS)} (whole log: $tests_log)"
  # The Hopper kernels no device has run yet go first, apart and under a short timeout: a hang there must not
  # take the whole call. SY_TESTS=hopper or SY_TESTS=rest runs one of the two parts (a short call can take the
  # Hopper part first and the rest after the benchmarks); SY_TESTS_TIMEOUT bounds the rest (360 s).
  hopper='*Sm90*:*Hopper*'
  : >"$tests_log"
  if [ "${SY_TESTS:-all}" != rest ]; then
    timeout 150 "$bin/sy_gpu_tests" --gtest_brief=1 --gtest_filter="$hopper" >>"$tests_log" 2>&1
    echo "sy_gpu_tests (Hopper kernels) rc=$?"
  fi
  if [ "${SY_TESTS:-all}" != hopper ]; then
    timeout "${SY_TESTS_TIMEOUT:-360}" "$bin/sy_gpu_tests" --gtest_brief=1 --gtest_filter="-$hopper" \
      >>"$tests_log" 2>&1
    echo "sy_gpu_tests (the rest) rc=$?"
  fi
  # Failures first (with the lines gtest prints under them), then the summary, then the measured errors.
  grep -E -A6 "Failure$|^\[  FAILED  \]" "$tests_log" | head -n 80
  grep -E "^\[  (PASSED  |SKIPPED |FAILED  )\] [0-9]+ test" "$tests_log"
  grep -E "compared|ran |not tested" "$tests_log" | head -n 40
fi
if want memcheck && command -v compute-sanitizer >/dev/null; then
  echo "== memcheck (gpu tests${SY_MEMCHECK_FILTER:+ matching $SY_MEMCHECK_FILTER})"
  compute-sanitizer --tool memcheck --report-api-errors no --error-exitcode 9 "$bin/sy_gpu_tests" --gtest_brief=1 \
    --gtest_filter="${SY_MEMCHECK_FILTER:-*}" >"$out/memcheck.log" 2>&1
  echo "memcheck rc=$? $(grep -E 'ERROR SUMMARY' "$out/memcheck.log" | tail -n 1)"
fi
if want serve; then
  echo "== serve on cuda (built-in model)"
  PYTHONUNBUFFERED=1 timeout 120 python3 bench/serve_bench.py --cli "$bin/switchyard" --device cuda \
    --requests 64 --rates 4,16,inf 2>&1 | tail -n 6
fi
if want layer; then
  echo "== bench_gpu_moe_layer (Qwen3-30B-A3B layer, every expert path, the sm90 grouped GEMM included)"
  # SY_LAYER_TOKENS replaces the token counts (256 and 512 tokens sit either side of kGroupedSm90WideRows).
  timeout 150 "$bin/bench_gpu_moe_layer" --config bench/configs/qwen3_30b_a3b.json \
    --tokens "${SY_LAYER_TOKENS:-1,64,256,512,4096,16384}" 2>&1 | tail -n 90
  echo "-- the default sm90 path of large passes with the old dispatch layout (SY_CHUNKED_LAYOUT=0)"
  SY_CHUNKED_LAYOUT=0 timeout 60 "$bin/bench_gpu_moe_layer" --config bench/configs/qwen3_30b_a3b.json \
    --tokens 4096,16384 --only "128 x 256 tiles, warp-specialised, TMA)" 2>&1 | grep -E "^\| [0-9]|error"
fi
if want layerab; then  # settings of the large-pass layer against each other on one machine, in alternation
  # SY_LAYER_AB: ';'-separated settings, each a space-separated list of VAR=value (empty: the defaults); every
  # setting runs twice, in rounds, on SY_LAYERAB_TOKENS with the path SY_LAYERAB_PATH.
  IFS=';' read -ra layer_settings <<<"${SY_LAYER_AB:-;SY_SM90_SKIP_HALF=0 SY_SM90_EARLY_TILE=0}"
  echo "== layer A/B at ${SY_LAYERAB_TOKENS:-4096,16384} tokens: ${SY_LAYERAB_PATH:-128 x 256 tiles, warp-specialised, TMA)}"
  for round in 1 2; do
    for setting in "${layer_settings[@]}"; do
      echo "-- round $round: ${setting:-defaults}"
      env $setting timeout 60 "$bin/bench_gpu_moe_layer" --config bench/configs/qwen3_30b_a3b.json \
        --tokens "${SY_LAYERAB_TOKENS:-4096,16384}" --only "${SY_LAYERAB_PATH:-128 x 256 tiles, warp-specialised, TMA)}" \
        2>&1 | grep -E "^\| [0-9]|error"
    done
  done
fi
if want nccl; then
  echo "== bench_nccl_dispatch (one rank: the path, not a network)"
  NCCL_NVLS_ENABLE=0 timeout 60 "$bin/bench_nccl_dispatch" --iters 10 2>&1 | tail -n 14
fi
if want decode; then
  echo "== bench_gpu_decode (Qwen3-30B-A3B shape)"
  # The decode chain's switches, one set at a time (SY_DECODE_AB, ';'-separated sets of space-separated
  # NAME=VALUE, replaces the list; SY_DECODE_BATCHES replaces the batch sizes of the main table,
  # SY_DECODE_AB_BATCHES the A/B runs' 1,2): without this session's defaults (the grouped decode attention on
  # every decode pass with its cached keys read before the wait, the pinned inputs and counts of decode graphs),
  # and the forms measured slower (the GEMV's whole rows before its wait, the combine's bulk copies, the q|k|v
  # epilogue folded into decode attention). Other established ones can be listed to see what they still give:
  # SY_PDL=0, SY_DENSE_GEMV=0, SY_FUSED_NORM=0, SY_WARP_ROUTE=0, SY_FUSED_COMBINE=0, SY_CLUSTER_ROUTE=0,
  # SY_EARLY_COMBINE=0. The A/B runs share the main run's process and loaded model (bench_gpu_decode --ab:
  # Model::reconfigure_device), between two default runs; SY_DECODE_AB_PROCESS=1 runs each set in a process of
  # its own instead (a model load each, ~30 s; what builds before --ab need).
  ab_list=${SY_DECODE_AB:-SY_GROUPED_ATTENTION=0 SY_PREFETCH_KEYS=0;SY_PREFETCH_KEYS=0;SY_PINNED_IO=0;SY_GEMV_PRELOAD=2;SY_GEMV_PRELOAD=4;SY_COMBINE_BULK=1;SY_FUSED_ATTENTION=1}
  ab_batches=${SY_DECODE_AB_BATCHES:-1,2}
  in_process=()
  [ "${SY_DECODE_AB_PROCESS:-0}" = 1 ] || in_process=(--ab "$ab_list" --ab-batches "$ab_batches")
  timeout 400 "$bin/bench_gpu_decode" --config bench/configs/qwen3_30b_a3b.json \
    --batches "${SY_DECODE_BATCHES:-1,2,4,8,32,64}" --prompt-len 128 --decode-steps 32 "${in_process[@]}" 2>&1 |
    tee "$out/bench_gpu_decode.txt" | grep -E "^\||copy bandwidth|not measured|error"
  # SY_DECODE_BASE=PATH: another build's bench_gpu_decode (a baseline for changes without a switch), run at
  # the A/B batches before and after the A/B runs, so both sides meet the same machine (SY_DECODE_BASE_AFTER=0:
  # once, for a short call).
  base_run() {
    echo "== the same at batches $ab_batches with the baseline binary $SY_DECODE_BASE ($1)"
    timeout 200 "$SY_DECODE_BASE" --config bench/configs/qwen3_30b_a3b.json --batches "$ab_batches" \
      --prompt-len 128 --decode-steps 32 2>&1 | grep -E "^\| [0-9]"
  }
  [ -n "${SY_DECODE_BASE:-}" ] && base_run before
  if [ "${SY_DECODE_AB_PROCESS:-0}" = 1 ]; then
    IFS=';' read -r -a ab <<<"$ab_list"
    for flags in "${ab[@]}"; do
      echo "== the same at batches $ab_batches with $flags"
      env $flags timeout 200 "$bin/bench_gpu_decode" --config bench/configs/qwen3_30b_a3b.json --batches "$ab_batches" \
        --prompt-len 128 --decode-steps 32 2>&1 | grep -E "^\| [0-9]"
    done
  fi
  [ -n "${SY_DECODE_BASE:-}" ] && [ "${SY_DECODE_BASE_AFTER:-1}" != 0 ] && base_run after
fi
if want long; then
  echo "== bench_gpu_decode, 2048-token prompts: the grouped decode attention (default), then per head with key"
  echo "   splits chosen per batch (SY_GROUPED_ATTENTION=0), then per head with one block per query and head"
  for flags in "" "SY_GROUPED_ATTENTION=0" "SY_GROUPED_ATTENTION=0 SY_ATTENTION_KEY_SPLITS=1"; do
    env $flags timeout 200 "$bin/bench_gpu_decode" --config bench/configs/qwen3_30b_a3b.json --batches 1,8 \
      --prompt-len 2048 --decode-steps 32 2>&1 | tail -n 3
  done
fi
if want attention; then
  echo "== causal prefill attention (cuda::attention, cuda::flash_attention; SDPA under torch)"
  timeout 150 "$bin/bench_gpu_attention" --tokens 16384 --heads 16 --head-dim 128 --iters 5 2>&1 | tail -n 17
  timeout 100 "$bin/bench_gpu_attention" --tokens 8192 --heads 64 --kv-heads 8 --head-dim 64 --iters 3 2>&1 | tail -n 14
fi
if want sm90; then  # the Hopper kernels and cuDNN's attention end to end: prefill of 8 x 2048-token prompts
  echo "== bench_gpu_decode, 8 x 2048-token prompts: without the Hopper kernels (SY_SM90_EXPERTS=0 SY_FLASH_SM90=0),"
  echo "   with them (the default on an H100/H200), and with cuDNN's attention (SY_CUDNN_ATTENTION=1)"
  for flags in "SY_SM90_EXPERTS=0 SY_FLASH_SM90=0" "" "SY_CUDNN_ATTENTION=1"; do
    env $flags timeout 200 "$bin/bench_gpu_decode" --config bench/configs/qwen3_30b_a3b.json --batches 8 \
      --prompt-len 2048 --decode-steps 4 2>&1 | tail -n 2
  done
fi
if want deepseek; then
  echo "== bench_gpu_decode (DeepSeek-V2-Lite shape: MLA in the absorbed form, latent rows cached)"
  timeout 200 "$bin/bench_gpu_decode" --config bench/configs/deepseek_v2_lite.json --batches 1,8,64 --prompt-len 128 \
    --decode-steps 32 2>&1 | tail -n 5
  timeout 200 "$bin/bench_gpu_decode" --config bench/configs/deepseek_v2_lite.json --batches 1,8 --prompt-len 2048 \
    --decode-steps 32 2>&1 | tail -n 4
fi
if want trace; then  # where a decode step's time goes with the kernels overlapping as they do in a real step
  echo "== chain trace: batch-1 decode steps, kernel by kernel (CUPTI; bench/chain_trace_report.py)"
  # SY_TRACE_AB (';'-separated switch sets) traces the same with each set; "" is the default configuration.
  IFS=';' read -r -a trace_ab <<<"${SY_TRACE_AB:-}"
  [ ${#trace_ab[@]} -eq 0 ] && trace_ab=("")
  if [ -f "$lib/libsy_chain_trace.so" ]; then
    for flags in "${trace_ab[@]}"; do
      name=$(echo "${flags:-default}" | tr -c 'A-Za-z0-9_=\n' '_')
      echo "-- ${flags:-default}"
      env $flags CUDA_INJECTION64_PATH="$lib/libsy_chain_trace.so" SY_CHAIN_TRACE_OUT="$out/chain_trace_$name.txt" \
        timeout 200 "$bin/bench_gpu_decode" --config bench/configs/qwen3_30b_a3b.json --batches 1 \
        --prompt-len 128 --decode-steps 16 2>&1 | grep -E "^\| [0-9]|chain trace"
      python3 bench/chain_trace_report.py "$out/chain_trace_$name.txt" | head -n 40
    done
  else
    echo "no $lib/libsy_chain_trace.so (scripts/pack-gpu-carry builds it where the CUPTI headers can be fetched)"
  fi
fi
if want layertrace; then  # where a 16K-token MoE layer's time goes: GEMMs, or routing and layout around them
  echo "== layer trace: one MoE layer at ${SY_LAYERTRACE_TOKENS:-16384} tokens, kernel by kernel (CUPTI)"
  # SY_LAYERTRACE_PATH: the path's name as bench_gpu_moe_layer prints it (--only; default: the sm90 default
  # above kGroupedSm90WideRows rows).
  # Twice: the default path, and the same in block pairs sharing weight tiles (SY_LAYERTRACE_PAIRS_PATH);
  # SY_LAYERTRACE_RUNS=default takes the first only.
  if [ -f "$lib/libsy_chain_trace.so" ]; then
    for run in ${SY_LAYERTRACE_RUNS:-default pairs}; do
      path=${SY_LAYERTRACE_PATH:-128 x 256 tiles, warp-specialised, TMA)}
      [ "$run" = pairs ] && path=${SY_LAYERTRACE_PAIRS_PATH:-128 x 256 tiles, block pairs, TMA)}
      echo "-- $run: $path"
      CUDA_INJECTION64_PATH="$lib/libsy_chain_trace.so" SY_CHAIN_TRACE_OUT="$out/layer_trace_$run.txt" \
        timeout 120 "$bin/bench_gpu_moe_layer" --config bench/configs/qwen3_30b_a3b.json \
        --tokens "${SY_LAYERTRACE_TOKENS:-16384}" --iters 10 --only "$path" 2>&1 | grep -E "^\| [0-9]|chain trace|error"
      python3 bench/chain_trace_report.py "$out/layer_trace_$run.txt" --eager | head -n 24
    done
  else
    echo "no $lib/libsy_chain_trace.so (scripts/pack-gpu-carry builds it where the CUPTI headers can be fetched)"
  fi
fi
if want gemmstalls; then  # where the warps of a 16K-token layer's two sm90 GEMMs wait, by SASS instruction
  echo "== Nsight Compute: stall samples of the default sm90 GEMMs, 16K-token layer (whole CSV: $out/ncu_gemm_source.csv)"
  timeout 200 ncu --clock-control none --kernel-name regex:grouped_gemm_sm90_ws_kernel --launch-skip 6 \
    --launch-count 2 --section SourceCounters --page source --print-source sass --csv \
    "$bin/bench_gpu_moe_layer" --config bench/configs/qwen3_30b_a3b.json --tokens 16384 --iters 1 \
    --only "${SY_LAYERTRACE_PATH:-128 x 256 tiles, warp-specialised, TMA)}" >"$out/ncu_gemm_source.csv" 2>&1
  python3 bench/ncu_hotspots.py "$out/ncu_gemm_source.csv" --top 12
fi
if want ncu; then  # where the time of a decode step goes, kernel by kernel
  echo "== Nsight Compute: kernels of batch-1 decode on a 2-layer cut"
  timeout 150 ncu --clock-control none --cache-control none --metrics gpu__time_duration.sum --print-summary per-kernel \
    "$bin/bench_gpu_decode" --config bench/configs/qwen3_30b_a3b.json --layers 2 --batches 1 --prompt-len 32 \
    --decode-steps 8 >"$out/ncu.log" 2>&1
  python3 bench/ncu_summary.py "$out/ncu.log" --top 25
  echo "== Nsight Compute: where the decode router's warps wait (one launch; whole report: $out/ncu_router.log)"
  timeout 120 ncu --clock-control none --cache-control none --kernel-name regex:decode_router --launch-skip 4 \
    --launch-count 1 --section WarpStateStats --section LaunchStats --section Occupancy --section SourceCounters \
    --metrics sm__cycles_active.max,sm__cycles_elapsed.max \
    "$bin/bench_gpu_decode" --config bench/configs/qwen3_30b_a3b.json --layers 2 --batches 1 --prompt-len 32 \
    --decode-steps 8 >"$out/ncu_router.log" 2>&1
  # sm__cycles_active.max near sm__cycles_elapsed.max: one SM (the routing block) is the launch's time; the
  # source counters name the lines its warps stall on (the build has -lineinfo).
  grep -E "Duration|Stall|Warp Cycles|Achieved Occupancy|Registers|Block Size|Grid Size|sm__cycles|router\.cu:" \
    "$out/ncu_router.log" | head -n 40
fi
if want torch; then
  echo "== PyTorch peers"
  PYTHONUNBUFFERED=1 timeout 60 python3 bench/torch_attention.py --tokens 16384 --heads 16 --head-dim 128 2>&1 | tail -n 3
  PYTHONUNBUFFERED=1 timeout 240 python3 bench/torch_moe_decode.py --config bench/configs/qwen3_30b_a3b.json \
    --batches 1,8,32,64 --prompt-len 128 --decode-steps 32 2>&1 | tee "$out/torch_moe_decode.txt" | tail -n 9
  PYTHONUNBUFFERED=1 timeout 200 python3 bench/torch_moe_decode.py --config bench/configs/deepseek_v2_lite.json \
    --batches 1,8 --prompt-len 128 --decode-steps 32 2>&1 | tail -n 5
fi
