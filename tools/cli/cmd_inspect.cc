// switchyard inspect [--model DIR] [--format text|json]: architecture, layer and expert counts, total and
// active parameters, and bytes by dtype.
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>

#include "cli_util.h"
#include "commands.h"
#include "switchyard/io/safetensors.h"

namespace sy::cli {

namespace {

// Bytes by dtype over every distinct tensor in the checkpoint (or the in-memory weights of the built-in model).
std::map<std::string, int64_t> bytes_by_dtype(const std::string& dir) {
  std::map<std::string, int64_t> out;
  SafetensorsCheckpoint ck(dir);
  for (const std::string& name : ck.names()) {
    const SafetensorsEntry& e = ck.entry(name);
    out[dtype_name(e.dtype)] += static_cast<int64_t>(e.end - e.begin);
  }
  return out;
}

}  // namespace

CommandRunner add_inspect_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("inspect", "Describe a model: architecture, experts, parameters, bytes by dtype");
  auto model_dir = std::make_shared<std::string>();
  auto format = std::make_shared<std::string>("text");
  cmd->add_option("--model", *model_dir, "Hugging Face model directory (default: the built-in model)");
  cmd->add_option("--format", *format, "text or json")->check(CLI::IsMember({"text", "json"}))->capture_default_str();
  return [=]() {
    auto model = load_model_or_builtin(*model_dir);
    const ModelConfig& c = model->config();
    std::map<std::string, int64_t> bytes;
    if (!model_dir->empty()) bytes = bytes_by_dtype(*model_dir);
    nlohmann::json j = {
        {"architecture", architecture_name(c.arch)},
        {"model_type", c.model_type},
        {"layers", c.num_layers},
        {"moe_layers", c.num_moe_layers()},
        {"dense_layers", c.num_layers - c.num_moe_layers()},
        {"experts", c.moe.num_experts},
        {"experts_per_token", c.moe.top_k},
        {"shared_experts", c.moe.num_shared_experts},
        {"hidden_size", c.hidden_size},
        {"vocab_size", c.vocab_size},
        {"attention", c.attention.mla ? "mla" : (c.attention.num_kv_heads == c.attention.num_heads ? "mha" : "gqa")},
        {"heads", c.attention.num_heads},
        {"kv_heads", c.attention.num_kv_heads},
        {"total_params", c.total_params()},
        {"active_params", c.active_params()},
        {"bytes_by_dtype", bytes},
    };
    if (*format == "json") {
      std::printf("%s\n", j.dump(2).c_str());
      return 0;
    }
    std::printf("architecture     %s (model_type %s)\n", architecture_name(c.arch), c.model_type.c_str());
    std::printf("layers           %d (%d MoE, %d dense)\n", c.num_layers, c.num_moe_layers(), c.num_layers - c.num_moe_layers());
    std::printf("experts          %d routed, top-%d, %d shared\n", c.moe.num_experts, c.moe.top_k, c.moe.num_shared_experts);
    std::printf("attention        %s, %d heads, %d kv heads\n", j["attention"].get<std::string>().c_str(),
                c.attention.num_heads, c.attention.num_kv_heads);
    std::printf("hidden / vocab   %lld / %lld\n", static_cast<long long>(c.hidden_size), static_cast<long long>(c.vocab_size));
    std::printf("parameters       %.4g total, %.4g active per token\n", static_cast<double>(c.total_params()),
                static_cast<double>(c.active_params()));
    for (const auto& [dt, b] : bytes) std::printf("bytes (%s)%*s%lld\n", dt.c_str(), static_cast<int>(8 - dt.size()), "", static_cast<long long>(b));
    return 0;
  };
}

}  // namespace sy::cli
