#!/usr/bin/env bash
# CPU prefill/decode at batch 1 next to llama.cpp in one sitting, alternating engines (the VM's memory bandwidth
# drifts, so only runs close in time compare), with the fused prefill micro-kernel on and off
# (SY_FUSED_PREFILL_GEMM). Usage: bench/cpu_vs_llama_cpp.sh CHECKPOINT_DIR GGUF PYTHON
#   CHECKPOINT_DIR: e.g. from `build/bench/bench_decode --make-olmoe DIR`; GGUF: `tools/olmoe_to_gguf.py DIR OUT`;
#   PYTHON: an interpreter with llama-cpp-python (CMAKE_ARGS="-DGGML_NATIVE=ON" pip install llama-cpp-python).
set -euo pipefail
[ $# -eq 3 ] || { echo "usage: $0 CHECKPOINT_DIR GGUF PYTHON" >&2; exit 2; }
model=$1 gguf=$2 python=$3
cd "$(dirname "$0")/.."
switchyard() {
  echo "== switchyard SY_FUSED_PREFILL_GEMM=$1"
  SY_FUSED_PREFILL_GEMM=$1 SY_NUM_THREADS=2 build/bench/bench_decode --model "$model" --threads 2 --prompt-len 128 \
    --decode-tokens 64 --repeats 3 | grep -E "prefill tok/s|decode tok/s|copy bandwidth|paired: decode"
}
llama_cpp() {
  echo "== llama.cpp"
  "$python" bench/llama_cpp_decode.py "$gguf" --threads 2 --prompt-len 128 --decode-tokens 64 --repeats 3 | tail -n 4
}
date
switchyard 1; llama_cpp; switchyard 0; switchyard 1; llama_cpp; switchyard 0
date
