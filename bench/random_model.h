// Synthetic models for the GPU benchmarks: a TensorSource that makes random bf16 tensors for every name a
// loader asks for, and a config.json reader that can cut the layer count.
#pragma once

#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "bench_random.h"
#include "switchyard/core/error.h"
#include "switchyard/model/tensor_source.h"

namespace sy::bench {

// Makes every tensor a loader asks for: norms near 1, everything else N(0, 0.02^2), in bf16.
class RandomSource : public sy::TensorSource {
 public:
  bool contains(const std::string& name) const override { return tensors_.count(name) > 0; }
  sy::Tensor tensor(const std::string& name) const override { return tensors_.at(name); }
  std::vector<std::string> names() const override {
    std::vector<std::string> n;
    for (const auto& [k, v] : tensors_) n.push_back(k);
    return n;
  }
  std::string where() const override { return "random bf16"; }
  bool creates_missing() const override { return true; }
  const std::map<std::string, sy::Tensor>& tensors() const { return tensors_; }
  sy::Tensor create(const std::string& name, const sy::Shape& shape) override {
    const bool norm = name.find("norm") != std::string::npos;
    return tensors_[name] = random_bf16(++seed_, shape, norm ? 0.01f : 0.02f, norm ? 1.f : 0.f);
  }

 private:
  std::map<std::string, sy::Tensor> tensors_;
  uint64_t seed_ = 1;
};


// The config JSON at `path`, with num_hidden_layers replaced when layers > 0.
inline nlohmann::json config_json(const std::string& path, int layers) {
  std::ifstream in(path);
  SY_REQUIRE(in.good(), sy::IoError, "bench", "cannot read ", path);
  nlohmann::json j = nlohmann::json::parse(in);
  if (layers > 0) j["num_hidden_layers"] = layers;
  return j;
}

}  // namespace sy::bench
