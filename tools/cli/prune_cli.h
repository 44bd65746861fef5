// PreMoe pieces of the CLI shared between `switchyard prune` (cmd_prune.cc) and `switchyard generate`.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "switchyard/model/model.h"
#include "switchyard/prune/tcess.h"

namespace sy::cli {

// generate --premoe-store: retrieves the prompt's task from STORE, reports the match on stderr, and returns
// MODEL_DIR restricted to that task's top-`keep` experts; the key is made of `key_layers`. Throws
// InvalidArgument for a missing flag.
std::unique_ptr<Model> load_premoe_model(const std::string& model_dir, const std::string& store_dir, int keep,
                                         int experts_per_token, const std::vector<int64_t>& prompt,
                                         prune::KeyLayers key_layers);

}  // namespace sy::cli
