// ClusterSpec: what the planner knows about the machines: per-device peak compute, memory and bandwidths,
// plus the few calibration constants (achievable fractions) the cost model applies to them.
// Pure data with presets and a JSON loader; it never probes real hardware.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace sy::plan {

struct ClusterSpec {
  std::string name;
  std::string device;           // e.g. "H100 SXM5 80GB"
  int gpus_per_node = 8;        // devices that share the fast intra-node fabric (NVLink / HCCS / UB)
  double peak_bf16_tflops = 0;  // dense, no sparsity
  double peak_fp8_tflops = 0;   // dense, no sparsity (0 = none)
  double hbm_gib = 0;           // usable device memory
  double hbm_tbps = 0;          // HBM bandwidth, TB/s
  double intra_gbps = 0;        // intra-node bandwidth per device, one direction, GB/s
  double inter_gbps = 0;        // inter-node (NIC) bandwidth per device, one direction, GB/s
  double intra_latency_us = 0;  // per collective step
  double inter_latency_us = 0;
  // Calibration (fractions of the peaks above that real kernels reach); see docs/planner.md.
  double gemm_efficiency = 0.75;       // large bf16 GEMM / peak
  double grouped_gemm_efficiency = 1.0; // routed-expert grouped GEMM relative to a dense GEMM of the same shape
  double attention_efficiency = 0.5;   // fused (flash) attention / peak, at query chunks >= 1024 tokens
  double hbm_efficiency = 0.7;         // memory-bound kernels / HBM peak
  double intra_efficiency = 0.8;       // achieved bus bandwidth / link peak, intra-node
  double inter_efficiency = 0.8;       // achieved bus bandwidth / link peak, inter-node
  double reserved_gib = 3.0;           // context, communicator buffers, workspace, fragmentation
  // GEMM shape table: (dimension, factor) pairs, ascending; a GEMM (M, N, K) runs at
  // gemm_efficiency * f(M) * f(N) * f(K), f interpolated in log2(dimension), 1 past the last entry.
  std::vector<std::pair<double, double>> gemm_shape_table;
  std::string source;  // where the figures come from (see docs/planner.md)
};

// Built-in presets: dgx-h100, dgx-h200, dgx-h800, selene-a100, ascend-910b, ascend-910c.
std::vector<std::string> cluster_preset_names();
ClusterSpec cluster_preset(const std::string& name);  // throws InvalidArgument naming the presets
// Parses a JSON description; unknown keys are rejected so that typos do not silently fall back.
ClusterSpec cluster_from_json(const nlohmann::json& j);
// A preset name, or a path to a JSON file ({"preset": NAME, ...overrides} is allowed).
ClusterSpec load_cluster(const std::string& name_or_path);
nlohmann::json cluster_to_json(const ClusterSpec& c);

// The default GEMM shape table (see docs/planner.md, "GEMM efficiency").
std::vector<std::pair<double, double>> default_gemm_shape_table();

}  // namespace sy::plan
