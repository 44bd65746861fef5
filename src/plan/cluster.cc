// Cluster presets (public spec-sheet figures, cited in docs/planner.md) and the JSON cluster description.
// Not a hardware probe: the numbers are what vendors publish plus documented calibration fractions.
#include "switchyard/plan/cluster.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "switchyard/core/error.h"

namespace sy::plan {

using nlohmann::json;

namespace {
constexpr const char* kComponent = "plan";
// The one MoE-specific calibration constant (docs/planner.md, "Calibration"): expert grouped GEMMs reach this
// fraction of a dense GEMM of the same shape. Fitted on Mixtral-8x7B (the one MoE result that publishes its
// layout); every other MoE row of the validation table is held out.
constexpr double kGroupedGemm = 0.8;

ClusterSpec nvidia_base() {
  ClusterSpec c;
  c.gpus_per_node = 8;
  c.intra_latency_us = 5;
  c.inter_latency_us = 10;
  c.gemm_shape_table = default_gemm_shape_table();
  return c;
}

ClusterSpec make_h100_like(const std::string& name) {
  ClusterSpec c = nvidia_base();
  c.name = name;
  c.device = "H100 SXM5 80GB";
  c.peak_bf16_tflops = 989.4;  // dense BF16 tensor core (datasheet 1979 is with sparsity)
  c.peak_fp8_tflops = 1978.9;
  c.hbm_gib = 79.6;            // 81559 MiB as reported by nvidia-smi
  c.hbm_tbps = 3.35;
  c.intra_gbps = 450;          // NVLink 4: 900 GB/s bidirectional per GPU
  c.inter_gbps = 50;           // 8 x ConnectX-7 400 Gb/s per node, one per GPU
  c.gemm_efficiency = 0.72;
  c.grouped_gemm_efficiency = kGroupedGemm;
  c.attention_efficiency = 0.45;
  c.hbm_efficiency = 0.7;
  c.intra_efficiency = 0.8;
  c.inter_efficiency = 0.85;
  c.reserved_gib = 3.0;
  c.source = "NVIDIA H100 Tensor Core GPU datasheet; NVIDIA DGX H100 user guide";
  return c;
}
}  // namespace

std::vector<std::pair<double, double>> default_gemm_shape_table() {
  // Relative throughput of a GEMM whose smallest relevant dimension is `dim` (tile under-fill and wave
  // quantisation); 1.0 from 1024 up. Calibratable per cluster through "gemm_shape_table".
  return {{16, 0.18}, {32, 0.32}, {64, 0.52}, {128, 0.72}, {256, 0.86}, {512, 0.94}, {1024, 1.0}};
}

std::vector<std::string> cluster_preset_names() {
  return {"dgx-h100", "dgx-h200", "dgx-h800", "selene-a100", "ascend-910b", "ascend-910c"};
}

ClusterSpec cluster_preset(const std::string& name) {
  if (name == "dgx-h100" || name == "h100") return make_h100_like("dgx-h100");
  if (name == "dgx-h200" || name == "h200") {
    ClusterSpec c = make_h100_like("dgx-h200");
    c.device = "H200 SXM 141GB";
    c.hbm_gib = 140.4;  // 143771 MiB
    c.hbm_tbps = 4.8;
    c.source = "NVIDIA H200 Tensor Core GPU datasheet; NVIDIA DGX H200 datasheet";
    return c;
  }
  if (name == "dgx-h800" || name == "h800") {
    ClusterSpec c = make_h100_like("dgx-h800");
    c.device = "H800 SXM5 80GB";
    c.intra_gbps = 200;  // NVLink 400 GB/s bidirectional (export variant)
    c.inter_gbps = 50;   // 8 x 400 Gb/s InfiniBand per node (DeepSeek-V3 report, section 3.1)
    c.source = "NVIDIA H800 product brief; DeepSeek-V3 technical report (arXiv 2412.19437) section 3";
    return c;
  }
  if (name == "selene-a100" || name == "a100" || name == "dgx-a100") {
    ClusterSpec c = nvidia_base();
    c.name = "selene-a100";
    c.device = "A100 SXM4 80GB";
    c.peak_bf16_tflops = 312;
    c.peak_fp8_tflops = 0;
    c.hbm_gib = 79.2;
    c.hbm_tbps = 2.039;
    c.intra_gbps = 300;  // NVLink 3: 600 GB/s bidirectional per GPU
    c.inter_gbps = 25;   // 8 x HDR 200 Gb/s per DGX A100 node (Selene)
    c.gemm_efficiency = 0.72;
    c.grouped_gemm_efficiency = kGroupedGemm;
    c.attention_efficiency = 0.45;
    c.hbm_efficiency = 0.7;
    c.intra_efficiency = 0.8;
    c.inter_efficiency = 0.85;
    c.reserved_gib = 3.0;
    c.source = "NVIDIA A100 datasheet; DGX A100 user guide; Selene (Top500, DGX SuperPOD, HDR InfiniBand)";
    return c;
  }
  if (name == "ascend-910b" || name == "910b") {
    ClusterSpec c;
    c.name = "ascend-910b";
    c.device = "Ascend 910B (Atlas 800T A2)";
    c.gpus_per_node = 8;
    c.peak_bf16_tflops = 313;  // public figures range 280-376 by SKU; see docs/planner.md
    c.hbm_gib = 61.0;          // 64 GB HBM2e, usable
    c.hbm_tbps = 1.6;
    c.intra_gbps = 196;        // HCCS 392 GB/s per NPU, bidirectional
    c.inter_gbps = 25;         // 200 Gb/s RoCE per NPU
    c.intra_latency_us = 8;
    c.inter_latency_us = 15;
    c.gemm_efficiency = 0.72;
    c.grouped_gemm_efficiency = kGroupedGemm;
    c.attention_efficiency = 0.45;
    c.hbm_efficiency = 0.7;
    c.intra_efficiency = 0.8;
    c.inter_efficiency = 0.85;
    c.reserved_gib = 4.0;
    c.gemm_shape_table = default_gemm_shape_table();
    c.source = "Huawei Atlas 800T A2 training server specifications; public Ascend 910B figures";
    return c;
  }
  if (name == "ascend-910c" || name == "910c" || name == "cloudmatrix384") {
    ClusterSpec c;
    c.name = "ascend-910c";
    c.device = "Ascend 910C die (CloudMatrix384 supernode)";
    c.gpus_per_node = 768;     // 384 chips x 2 dies share the UB fabric
    c.peak_bf16_tflops = 376;  // per die (about 752 per chip)
    c.hbm_gib = 61.0;          // 64 GB per die
    c.hbm_tbps = 1.6;
    c.intra_gbps = 196;        // UB, per die, one direction
    c.inter_gbps = 25;         // RDMA plane, per die
    c.intra_latency_us = 8;
    c.inter_latency_us = 15;
    c.gemm_efficiency = 0.72;
    c.grouped_gemm_efficiency = kGroupedGemm;
    c.attention_efficiency = 0.45;
    c.hbm_efficiency = 0.7;
    c.intra_efficiency = 0.8;
    c.inter_efficiency = 0.85;
    c.reserved_gib = 4.0;
    c.gemm_shape_table = default_gemm_shape_table();
    c.source = "CloudMatrix-Infer (arXiv 2506.12708) section 3: CloudMatrix384 and Ascend 910C";
    return c;
  }
  std::string names;
  for (const auto& n : cluster_preset_names()) names += (names.empty() ? "" : ", ") + n;
  throw make_error<InvalidArgument>(kComponent, "unknown cluster \"", name, "\"; use one of ", names,
                                    " or a JSON file (see docs/planner.md)");
}

ClusterSpec cluster_from_json(const json& j) {
  if (!j.is_object()) throw make_error<FormatError>(kComponent, "a cluster description must be a JSON object");
  ClusterSpec c = j.contains("preset") ? cluster_preset(j.at("preset").get<std::string>()) : ClusterSpec{};
  if (!j.contains("preset")) c.gemm_shape_table = default_gemm_shape_table();
  static const std::set<std::string> known = {
      "preset", "name", "device", "gpus_per_node", "peak_bf16_tflops", "peak_fp8_tflops", "hbm_gib", "hbm_tbps",
      "intra_gbps", "inter_gbps", "intra_latency_us", "inter_latency_us", "gemm_efficiency", "grouped_gemm_efficiency",
      "attention_efficiency", "hbm_efficiency", "intra_efficiency", "inter_efficiency", "reserved_gib",
      "gemm_shape_table", "source"};
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (!known.count(it.key())) {
      throw make_error<FormatError>(kComponent, "unknown cluster key \"", it.key(), "\" (see docs/planner.md)");
    }
  }
  try {
    auto num = [&](const char* key, double& out) {
      if (j.contains(key)) out = j.at(key).get<double>();
    };
    if (j.contains("name")) c.name = j.at("name").get<std::string>();
    if (j.contains("device")) c.device = j.at("device").get<std::string>();
    if (j.contains("source")) c.source = j.at("source").get<std::string>();
    if (j.contains("gpus_per_node")) c.gpus_per_node = j.at("gpus_per_node").get<int>();
    num("peak_bf16_tflops", c.peak_bf16_tflops);
    num("peak_fp8_tflops", c.peak_fp8_tflops);
    num("hbm_gib", c.hbm_gib);
    num("hbm_tbps", c.hbm_tbps);
    num("intra_gbps", c.intra_gbps);
    num("inter_gbps", c.inter_gbps);
    num("intra_latency_us", c.intra_latency_us);
    num("inter_latency_us", c.inter_latency_us);
    num("gemm_efficiency", c.gemm_efficiency);
    num("grouped_gemm_efficiency", c.grouped_gemm_efficiency);
    num("attention_efficiency", c.attention_efficiency);
    num("hbm_efficiency", c.hbm_efficiency);
    num("intra_efficiency", c.intra_efficiency);
    num("inter_efficiency", c.inter_efficiency);
    num("reserved_gib", c.reserved_gib);
    if (j.contains("gemm_shape_table")) {
      c.gemm_shape_table.clear();
      for (const json& row : j.at("gemm_shape_table")) {
        c.gemm_shape_table.emplace_back(row.at(0).get<double>(), row.at(1).get<double>());
      }
    }
  } catch (const json::exception& e) {
    throw make_error<FormatError>(kComponent, "cluster description: ", e.what());
  }
  auto positive = [&](double v, const char* key) {
    if (!(v > 0)) throw make_error<FormatError>(kComponent, "cluster \"", key, "\" must be positive, got ", v);
  };
  if (c.gpus_per_node <= 0) throw make_error<FormatError>(kComponent, "cluster \"gpus_per_node\" must be positive");
  positive(c.peak_bf16_tflops, "peak_bf16_tflops");
  positive(c.hbm_gib, "hbm_gib");
  positive(c.hbm_tbps, "hbm_tbps");
  positive(c.intra_gbps, "intra_gbps");
  positive(c.inter_gbps, "inter_gbps");
  for (double e : {c.gemm_efficiency, c.grouped_gemm_efficiency, c.attention_efficiency, c.hbm_efficiency, c.intra_efficiency, c.inter_efficiency}) {
    if (!(e > 0 && e <= 1)) throw make_error<FormatError>(kComponent, "cluster efficiencies must lie in (0, 1]");
  }
  for (size_t i = 0; i < c.gemm_shape_table.size(); ++i) {
    if (c.gemm_shape_table[i].first <= 0 || (i > 0 && c.gemm_shape_table[i].first <= c.gemm_shape_table[i - 1].first)) {
      throw make_error<FormatError>(kComponent, "\"gemm_shape_table\" must list [dimension, factor] rows with increasing positive dimensions");
    }
  }
  return c;
}

ClusterSpec load_cluster(const std::string& name_or_path) {
  namespace fs = std::filesystem;
  if (!fs::exists(name_or_path) || fs::is_directory(name_or_path)) return cluster_preset(name_or_path);
  std::ifstream in(name_or_path);
  if (!in) throw make_error<IoError>(kComponent, "cannot open cluster file ", name_or_path);
  json j;
  try {
    j = json::parse(in);
  } catch (const json::exception& e) {
    throw make_error<FormatError>(kComponent, name_or_path, " is not valid JSON: ", e.what());
  }
  return cluster_from_json(j);
}

json cluster_to_json(const ClusterSpec& c) {
  json table = json::array();
  for (const auto& [d, f] : c.gemm_shape_table) table.push_back({d, f});
  return {{"name", c.name}, {"device", c.device}, {"gpus_per_node", c.gpus_per_node},
          {"peak_bf16_tflops", c.peak_bf16_tflops}, {"peak_fp8_tflops", c.peak_fp8_tflops},
          {"hbm_gib", c.hbm_gib}, {"hbm_tbps", c.hbm_tbps}, {"intra_gbps", c.intra_gbps},
          {"inter_gbps", c.inter_gbps}, {"intra_latency_us", c.intra_latency_us},
          {"inter_latency_us", c.inter_latency_us}, {"gemm_efficiency", c.gemm_efficiency}, {"grouped_gemm_efficiency", c.grouped_gemm_efficiency},
          {"attention_efficiency", c.attention_efficiency}, {"hbm_efficiency", c.hbm_efficiency},
          {"intra_efficiency", c.intra_efficiency}, {"inter_efficiency", c.inter_efficiency},
          {"reserved_gib", c.reserved_gib}, {"gemm_shape_table", table}, {"source", c.source}};
}

}  // namespace sy::plan
