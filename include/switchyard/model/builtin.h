// The built-in model, so that `switchyard generate` and `scripts/run` work with no download: the trained
// three-domain MoE shipped in models/builtin of the source tree this binary was built from (or the directory
// SY_BUILTIN_MODEL names; SY_BUILTIN_MODEL=synthetic forces the fallback), or, when its weights are absent, a
// tiny Mixtral-shaped MoE with seeded random weights.
#pragma once

#include <memory>
#include <string>

#include "switchyard/model/model.h"

namespace sy {

std::unique_ptr<Model> make_builtin_model();
// The directory of the trained built-in model (config.json, model.safetensors, tokenizer.json), or "" if absent.
std::string builtin_model_dir();
// Weights in `dir` (config.json + model.safetensors) loadable by Model::load and by transformers.
void write_builtin_model(const std::string& dir);

}  // namespace sy
