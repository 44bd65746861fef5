// switchyard convert --model DIR --dtype bf16|f16|f32 --output OUT
// Rewrites a checkpoint's floating-point tensors in another dtype (one model.safetensors) and copies
// config.json, tokenizer.json, tokenizer_config.json and generation_config.json when present.
#include <cstdio>
#include <filesystem>

#include "commands.h"
#include "switchyard/core/error.h"
#include "switchyard/io/safetensors.h"

namespace sy::cli {

CommandRunner add_convert_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("convert", "Convert a checkpoint's weights to another dtype");
  auto model = std::make_shared<std::string>();
  auto dtype = std::make_shared<std::string>();
  auto output = std::make_shared<std::string>();
  cmd->add_option("--model", *model, "Hugging Face model directory")->required();
  cmd->add_option("--dtype", *dtype, "bf16, f16 or f32")->required()->check(CLI::IsMember({"bf16", "f16", "f32"}));
  cmd->add_option("--output", *output, "Output directory (must not exist or be empty)")->required();
  return [=]() {
    namespace fs = std::filesystem;
    const DType dt = dtype_from_name(*dtype);
    SafetensorsCheckpoint ck(*model);
    if (fs::exists(*output) && !fs::is_empty(*output)) {
      throw make_error<InvalidArgument>("convert", "output directory ", *output, " exists and is not empty");
    }
    fs::create_directories(*output);
    std::vector<std::pair<std::string, Tensor>> tensors;
    for (const std::string& name : ck.names()) {
      Tensor t = ck.tensor(name);
      const bool is_float = t.dtype() == DType::kF32 || t.dtype() == DType::kBF16 || t.dtype() == DType::kF16;
      // Router score biases stay f32, as transformers keeps them.
      const bool keep = name.find("e_score_correction_bias") != std::string::npos;
      tensors.emplace_back(name, is_float && !keep ? t.to(dt) : t);
    }
    write_safetensors((fs::path(*output) / "model.safetensors").string(), tensors, {{"format", "pt"}});
    for (const char* f : {"config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json"}) {
      fs::path src = fs::path(*model) / f;
      if (fs::exists(src)) fs::copy_file(src, fs::path(*output) / f, fs::copy_options::overwrite_existing);
    }
    std::fprintf(stderr, "convert: %zu tensors -> %s (%s)\n", tensors.size(), output->c_str(), dtype->c_str());
    return 0;
  };
}

}  // namespace sy::cli
