// Helpers shared by the CLI commands: id-list parsing, model loading (or the built-in model), JSON output.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "switchyard/model/model.h"

namespace sy::cli {

// "1,2,3" -> {1, 2, 3}; spaces allowed; throws InvalidArgument naming the flag for anything else.
std::vector<int64_t> parse_id_list(const std::string& text, const char* flag);
// Model::load(dir), or the built-in model when dir is empty.
std::unique_ptr<Model> load_model_or_builtin(const std::string& dir);
// The directory a --model value stands for: itself, or the trained built-in model's ("" if there is none).
std::string resolve_model_dir(const std::string& dir);
// Throws InvalidArgument when an id is outside [0, vocab).
void check_ids_in_vocab(const std::vector<int64_t>& ids, int64_t vocab, const char* flag);

}  // namespace sy::cli
