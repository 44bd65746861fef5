// Pruned checkpoint writer: renames and slices the expert tensors of each MoE layer; see pruned_checkpoint.h.
#include "switchyard/prune/pruned_checkpoint.h"

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "io/atomic_file.h"
#include "switchyard/core/error.h"
#include "switchyard/io/safetensors.h"
#include "switchyard/prune/pruned_model.h"

namespace sy::prune {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// Per-layer tensors sliced along dimension 0 by expert: routers, their biases, fused expert tensors.
const char* const kSlicedSuffixes[] = {"gate.weight", "gate.bias", "gate.e_score_correction_bias",
                                       "router.weight", "router.bias", "experts.gate_up_proj",
                                       "experts.down_proj", "experts.gate_up_proj_bias", "experts.down_proj_bias",
                                       "experts.gate_up_proj.weight", "experts.down_proj.weight"};

// What to do with one tensor of the source checkpoint.
struct Action {
  enum Kind { kCopy, kSlice, kRename, kDrop } kind = kCopy;
  std::string name;  // output name (kRename)
  int layer = -1;
};

bool starts_with(const std::string& s, const std::string& p) { return s.compare(0, p.size(), p) == 0; }

// Decides from the hub/transformers naming scheme: model.layers.L.{mlp,block_sparse_moe}.<rest>.
Action classify(const std::string& name, const ModelConfig& config, const ExpertPattern& pattern) {
  const std::string layers = "model.layers.";
  if (!starts_with(name, layers)) return {};
  size_t dot = name.find('.', layers.size());
  if (dot == std::string::npos) return {};
  int layer = -1;
  try {
    layer = std::stoi(name.substr(layers.size(), dot - layers.size()));
  } catch (const std::exception&) {
    return {};
  }
  if (layer < 0 || layer >= config.num_layers || !config.layer_is_moe[layer]) return {};
  std::string rest = name.substr(dot + 1);
  std::string block;
  for (const char* b : {"mlp.", "block_sparse_moe."}) {
    if (starts_with(rest, b)) block = b;
  }
  if (block.empty()) return {};
  rest = rest.substr(block.size());
  for (const char* s : kSlicedSuffixes) {
    if (rest == s) return {Action::kSlice, name, layer};
  }
  if (!starts_with(rest, "experts.")) return {};  // shared experts, shared_expert_gate, ...
  std::string tail = rest.substr(8);
  size_t d = tail.find('.');
  const std::string index = tail.substr(0, d);
  if (d == std::string::npos || index.empty() || index.find_first_not_of("0123456789") != std::string::npos) {
    throw make_error<Unsupported>("prune", "expert tensor \"", name,
                                  "\" has a layout prune build does not know (expected experts.E.* or fused "
                                  "experts.gate_up_proj / experts.down_proj)");
  }
  const int e = std::stoi(index);
  const std::vector<int>& kept = pattern.kept[layer];
  auto it = std::find(kept.begin(), kept.end(), e);
  if (it == kept.end()) return {Action::kDrop, "", layer};
  std::string out = layers + std::to_string(layer) + "." + block + "experts." +
                    std::to_string(it - kept.begin()) + tail.substr(d);
  return {Action::kRename, out, layer};
}

void write_text(const fs::path& path, const std::string& text) {
  io_detail::AtomicFile f(path.string(), "prune");
  f.write(text.data(), text.size());
  f.commit();
}

// Top-level files worth carrying over: tokenizer and generation settings (never weights or model outputs).
bool is_companion_file(const fs::path& p) {
  const std::string n = p.filename().string();
  static const char* const kNames[] = {"generation_config.json", "special_tokens_map.json", "vocab.json",
                                       "merges.txt", "added_tokens.json", "chat_template.jinja",
                                       "chat_template.json"};
  for (const char* k : kNames) {
    if (n == k) return true;
  }
  return n.rfind("tokenizer", 0) == 0;  // tokenizer.json, tokenizer_config.json, tokenizer.model
}

}  // namespace

json pruned_config_json(const json& config, int keep, int experts_per_token) {
  json c = config;
  bool found = false;
  for (const char* key : {"num_local_experts", "num_experts", "n_routed_experts"}) {
    if (c.contains(key) && c[key].is_number_integer()) {
      c[key] = keep;
      found = true;
    }
  }
  SY_REQUIRE(found, FormatError, "prune", "config.json names no expert count (num_local_experts, num_experts or ",
             "n_routed_experts); is this a Mixture-of-Experts checkpoint?");
  if (experts_per_token > 0) c["num_experts_per_tok"] = experts_per_token;
  if (c.contains("n_group") && c["n_group"].is_number_integer()) c["n_group"] = 1;
  if (c.contains("topk_group") && c["topk_group"].is_number_integer()) c["topk_group"] = 1;
  if (c.contains("topk_method") && c["topk_method"] == "group_limited_greedy") c["topk_method"] = "greedy";
  return c;
}

void write_pruned_checkpoint(const std::string& model_dir, const ModelConfig& config, const ExpertPattern& pattern,
                             const PrunedCheckpointOptions& options, const std::string& out_dir) {
  const int keep = pattern.keep();
  check_keep(config, keep, options.experts_per_token);
  SY_CHECK(pattern.kept.size() == static_cast<size_t>(config.num_layers), "pattern of ", pattern.kept.size());
  std::error_code ec;
  SY_REQUIRE(!fs::exists(out_dir) || (fs::is_directory(out_dir) && fs::is_empty(out_dir)), InvalidArgument,
             "prune", "--output ", out_dir, " already exists and is not an empty directory; choose a new path");
  SY_REQUIRE(!fs::exists(out_dir) || !fs::equivalent(out_dir, model_dir, ec), InvalidArgument, "prune",
             "--output must differ from --model");

  // config.json
  const fs::path config_path = fs::path(model_dir) / "config.json";
  std::ifstream in(config_path);
  SY_REQUIRE(in, IoError, "prune", "cannot open ", config_path.string());
  json config_json;
  try {
    config_json = json::parse(in);
  } catch (const json::exception& e) {
    throw make_error<FormatError>("prune", config_path.string(), " is not valid JSON: ", e.what());
  }
  json out_config = pruned_config_json(config_json, keep, options.experts_per_token);

  // Tensors: copy, slice by expert, rename or drop.
  SafetensorsCheckpoint ck(model_dir);
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const std::string& name : ck.names()) {
    Action a = classify(name, config, pattern);
    switch (a.kind) {
      case Action::kCopy: tensors.emplace_back(name, ck.tensor(name)); break;
      case Action::kDrop: break;
      case Action::kRename: tensors.emplace_back(a.name, ck.tensor(name)); break;
      case Action::kSlice: {
        Tensor t = ck.tensor(name);
        SY_REQUIRE(t.dim() >= 1 && t.size(0) == config.moe.num_experts, FormatError, "prune", "tensor \"", name,
                   "\" has shape ", shape_str(t.shape()), " but the layer has ", config.moe.num_experts, " experts");
        tensors.emplace_back(name, gather_rows(t, pattern.kept[a.layer]));
        break;
      }
    }
  }

  // Build in a sibling temporary directory, then rename it into place.
  const fs::path out = fs::absolute(out_dir).lexically_normal();
  const fs::path tmp = out.parent_path() / (out.filename().string() + ".tmp." + std::to_string(::getpid()));
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp, ec);
  SY_REQUIRE(!ec, IoError, "prune", "cannot create ", tmp.string(), ": ", ec.message());
  try {
    write_safetensors((tmp / "model.safetensors").string(), tensors, {{"format", "pt"}});
    write_text(tmp / "config.json", out_config.dump(2) + "\n");
    json kept = json::array();
    for (const std::vector<int>& k : pattern.kept) kept.push_back(k.empty() ? json(nullptr) : json(k));
    json provenance = {{"format", "switchyard-premoe-pruned"},
                       {"version", 1},
                       {"source", fs::absolute(model_dir).lexically_normal().string()},
                       {"source_fingerprint", options.source_fingerprint},
                       {"task", options.task},
                       {"keep", keep},
                       {"experts_per_token", options.experts_per_token > 0 ? options.experts_per_token : config.moe.top_k},
                       {"kept_experts", kept}};
    write_text(tmp / "premoe.json", provenance.dump(1) + "\n");
    for (const fs::directory_entry& e : fs::directory_iterator(model_dir)) {
      if (e.is_regular_file() && is_companion_file(e.path())) fs::copy_file(e.path(), tmp / e.path().filename());
    }
    if (fs::exists(out)) fs::remove(out);  // an empty directory (checked above)
    fs::rename(tmp, out);
  } catch (const fs::filesystem_error& e) {
    fs::remove_all(tmp, ec);
    throw make_error<IoError>("prune", "writing ", out_dir, " failed: ", e.what());
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
}

}  // namespace sy::prune
