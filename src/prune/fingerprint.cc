// Model fingerprint and the FNV-1a hash it uses; see fingerprint.h.
#include "switchyard/prune/fingerprint.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "switchyard/core/error.h"
#include "switchyard/io/safetensors.h"

namespace sy::prune {

uint64_t fnv1a64(const void* data, size_t bytes, uint64_t hash) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < bytes; ++i) {
    hash ^= p[i];
    hash *= 0x100000001b3ull;
  }
  return hash;
}

std::string hex64(uint64_t v) {
  static const char* digits = "0123456789abcdef";
  std::string s(16, '0');
  for (int i = 15; i >= 0; --i, v >>= 4) s[i] = digits[v & 0xf];
  return s;
}

std::string model_fingerprint(const std::string& dir) {
  const std::string path = (std::filesystem::path(dir) / "config.json").string();
  std::ifstream in(path);
  SY_REQUIRE(in, IoError, "prune", "cannot open ", path, " (is --model a Hugging Face model directory?)");
  nlohmann::json config;
  try {
    config = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw make_error<FormatError>("prune", path, " is not valid JSON: ", e.what());
  }
  std::string text = config.dump();  // object keys come out sorted
  uint64_t h = fnv1a64(text.data(), text.size());
  SafetensorsCheckpoint ck(dir);
  for (const std::string& name : ck.names()) {  // sorted
    const SafetensorsEntry& e = ck.entry(name);
    std::string line = name + "|" + dtype_name(e.dtype) + "|" + shape_str(e.shape) + "\n";
    h = fnv1a64(line.data(), line.size(), h);
  }
  return "fnv1a64:" + hex64(h);
}

}  // namespace sy::prune
