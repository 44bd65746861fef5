// Calibration token file reader (text or .npy); see token_file.h.
#include "switchyard/prune/token_file.h"

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "switchyard/core/error.h"
#include "switchyard/io/npy.h"

namespace sy::prune {

namespace {

std::vector<std::vector<int64_t>> read_npy_ids(const std::string& path) {
  Tensor t = read_npy(path);
  SY_REQUIRE(t.dtype() == DType::kI32 || t.dtype() == DType::kI64, FormatError, "prune", path, " holds ",
             dtype_name(t.dtype()), "; token files in .npy must be int32 or int64");
  SY_REQUIRE(t.dim() == 1 || t.dim() == 2, FormatError, "prune", path, " has shape ", shape_str(t.shape()),
             "; expected (tokens,) or (sequences, tokens)");
  const int64_t rows = t.dim() == 1 ? 1 : t.size(0), cols = t.size(-1);
  std::vector<std::vector<int64_t>> out(rows);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const int64_t i = r * cols + c;
      out[r].push_back(t.dtype() == DType::kI32 ? t.i32()[i] : t.i64()[i]);
    }
  }
  return out;
}

}  // namespace

std::vector<std::vector<int64_t>> read_token_file(const std::string& path) {
  SY_REQUIRE(std::filesystem::is_regular_file(path), IoError, "prune", "token file ", path, " does not exist");
  std::vector<std::vector<int64_t>> out;
  if (std::filesystem::path(path).extension() == ".npy") {
    out = read_npy_ids(path);
  } else {
    std::ifstream in(path);
    SY_REQUIRE(in, IoError, "prune", "cannot open token file ", path);
    std::string line;
    for (int64_t line_no = 1; std::getline(in, line); ++line_no) {
      if (size_t hash = line.find('#'); hash != std::string::npos) line.resize(hash);
      std::vector<int64_t> ids;
      size_t i = 0;
      while (i < line.size()) {
        const char c = line[i];
        if (c == ' ' || c == '\t' || c == ',' || c == '\r') {
          ++i;
          continue;
        }
        size_t end = line.find_first_of(" \t,\r", i);
        if (end == std::string::npos) end = line.size();
        const std::string item = line.substr(i, end - i);
        errno = 0;
        char* stop = nullptr;
        long long v = std::strtoll(item.c_str(), &stop, 10);
        SY_REQUIRE(errno == 0 && stop == item.c_str() + item.size(), FormatError, "prune", path, ":", line_no,
                   ": \"", item, "\" is not a token id; lines hold ids separated by spaces or commas");
        ids.push_back(v);
        i = end;
      }
      if (!ids.empty()) out.push_back(std::move(ids));
    }
  }
  int64_t total = 0;
  for (const auto& s : out) total += static_cast<int64_t>(s.size());
  SY_REQUIRE(total > 0, FormatError, "prune", "token file ", path, " holds no token ids");
  return out;
}

}  // namespace sy::prune
