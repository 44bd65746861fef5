#!/usr/bin/env bash
# Builds the chain-trace injection library (bench/chain_trace_injection.cpp) against CUPTI 13 headers: the
# CUDA toolkit here ships libcupti without its headers, so they come from NVIDIA's nvidia-cuda-cupti wheel
# (PyPI, a build-time download for this profiling tool only; the engine never uses it).
# Usage: bench/chain_trace.sh OUT_DIR  -> OUT_DIR/libsy_chain_trace.so
# Then, on the GPU machine: CUDA_INJECTION64_PATH=OUT_DIR/libsy_chain_trace.so SY_CHAIN_TRACE_OUT=trace.txt
#   PROGRAM ...; python3 bench/chain_trace_report.py trace.txt (gpu_suite.sh's trace section does both).
set -euo pipefail
out=${1:?usage: bench/chain_trace.sh OUT_DIR}
root="$(cd "$(dirname "$0")/.." && pwd)"
cuda=${CUDA_HOME:-/usr/local/cuda}
headers="$root/build-dev/cupti-13.0"
if [ ! -f "$headers/include/cupti_activity.h" ]; then
  tmp="$(mktemp -d)"
  python3 -m pip download --quiet --no-deps --dest "$tmp" "nvidia-cuda-cupti==13.0.*"
  mkdir -p "$headers"
  python3 -c "import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); [z.extract(n, sys.argv[2]) for n in z.namelist() if '/include/' in n]" \
    "$(ls "$tmp"/nvidia_cuda_cupti-*.whl)" "$tmp/x"
  cp -r "$tmp"/x/nvidia/cu13/include "$headers/"
  rm -rf "$tmp"
fi
mkdir -p "$out"
g++ -O2 -std=c++17 -shared -fPIC -Wall -Wextra -I "$headers/include" "$root/bench/chain_trace_injection.cpp" \
  -o "$out/libsy_chain_trace.so" -L "$cuda/lib64" -lcupti
echo "$out/libsy_chain_trace.so"
