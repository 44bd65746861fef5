// The built-in model: a tiny Mixtral-shaped MoE with deterministic pseudo-random weights, so that
// `switchyard generate` and `scripts/run` work with no download. It produces token ids, not sense.
#pragma once

#include <memory>

#include "switchyard/model/model.h"

namespace sy {

std::unique_ptr<Model> make_builtin_model();
// Weights in `dir` (config.json + model.safetensors) loadable by Model::load and by transformers.
void write_builtin_model(const std::string& dir);

}  // namespace sy
