// Calibration token files for `switchyard prune profile --data FILE`.
//   *.npy: int32 or int64, 1-D (one sequence) or 2-D (one sequence per row).
//   anything else: text; each non-empty line is one sequence of token ids separated by spaces, tabs and/or
//   commas; '#' starts a comment that runs to the end of the line.
// Each sequence is run from an empty KV cache. Not a tokenizer: ids only.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace sy::prune {

// Throws IoError (cannot read) or FormatError (bad id, wrong dtype or rank, no tokens) naming file and line.
std::vector<std::vector<int64_t>> read_token_file(const std::string& path);

}  // namespace sy::prune
