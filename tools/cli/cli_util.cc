// Shared CLI helpers; see cli_util.h.
#include "cli_util.h"

#include <cerrno>
#include <cstdlib>

#include "switchyard/core/error.h"
#include "switchyard/model/builtin.h"

namespace sy::cli {

std::vector<int64_t> parse_id_list(const std::string& text, const char* flag) {
  std::vector<int64_t> ids;
  size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && text[i] == ' ') ++i;
    size_t end = text.find(',', i);
    if (end == std::string::npos) end = text.size();
    std::string item = text.substr(i, end - i);
    while (!item.empty() && item.back() == ' ') item.pop_back();
    if (item.empty()) {
      throw make_error<InvalidArgument>("cli", flag, " has an empty entry in \"", text, "\"; expected e.g. 1,2,3");
    }
    errno = 0;
    char* stop = nullptr;
    long long v = std::strtoll(item.c_str(), &stop, 10);
    if (errno != 0 || stop != item.c_str() + item.size()) {
      throw make_error<InvalidArgument>("cli", flag, " entry \"", item, "\" is not an integer token id");
    }
    ids.push_back(v);
    i = end + 1;
    if (end == text.size()) break;
  }
  if (ids.empty()) throw make_error<InvalidArgument>("cli", flag, " is empty; give token ids like 1,2,3");
  return ids;
}

std::unique_ptr<Model> load_model_or_builtin(const std::string& dir) {
  return dir.empty() ? make_builtin_model() : Model::load(dir);
}

std::string resolve_model_dir(const std::string& dir) { return dir.empty() ? builtin_model_dir() : dir;
}

void check_ids_in_vocab(const std::vector<int64_t>& ids, int64_t vocab, const char* flag) {
  for (int64_t id : ids) {
    if (id < 0 || id >= vocab) {
      throw make_error<InvalidArgument>("cli", flag, " id ", id, " is outside the model's vocabulary [0, ", vocab, ")");
    }
  }
}

}  // namespace sy::cli
