// SafetensorsCheckpoint: finds the .safetensors files of a model directory (index.json shards, a single
// model.safetensors, or every *.safetensors file) and maps each tensor name to the file that holds it.
// Not a weight loader: name translation and shape checks per architecture live in model/.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "switchyard/core/error.h"
#include "switchyard/io/safetensors.h"

namespace sy {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr const char* kComponent = "checkpoint";
constexpr const char* kIndexName = "model.safetensors.index.json";

json read_index(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  SY_REQUIRE(in, IoError, kComponent, "cannot read ", path.string(), "; check its permissions");
  std::stringstream ss;
  ss << in.rdbuf();
  SY_REQUIRE(!in.bad(), IoError, kComponent, "error while reading ", path.string());
  try {
    return json::parse(ss.str());
  } catch (const json::exception& e) {
    throw make_error<FormatError>(kComponent, path.string(), " is not valid JSON (", e.what(),
                                  "); re-download it or delete it to load every *.safetensors file");
  }
}

// A shard name from the index must stay inside the model directory.
void check_shard_name(const std::string& shard, const fs::path& index_path) {
  fs::path p(shard);
  bool ok = !shard.empty() && p.is_relative();
  for (const auto& part : p) {
    if (part == "..") ok = false;
  }
  SY_REQUIRE(ok, FormatError, kComponent, index_path.string(), " names shard \"", shard,
             "\", which is not a file name inside the model directory");
}

}  // namespace

SafetensorsCheckpoint::SafetensorsCheckpoint(const std::string& dir) : dir_(dir) {
  std::error_code ec;
  const fs::path root(dir);
  SY_REQUIRE(fs::exists(root, ec), IoError, kComponent, "model directory ", dir,
             " does not exist; pass the folder that holds config.json and the *.safetensors files");
  SY_REQUIRE(fs::is_directory(root, ec), IoError, kComponent, dir,
             " is not a directory; pass the folder that holds config.json and the *.safetensors files");

  const fs::path index_path = root / kIndexName;
  if (fs::exists(index_path, ec)) {
    json index = read_index(index_path);
    SY_REQUIRE(index.is_object(), FormatError, kComponent, index_path.string(), " must be a JSON object");
    auto wm = index.find("weight_map");
    SY_REQUIRE(wm != index.end() && wm->is_object(), FormatError, kComponent, index_path.string(),
               " has no \"weight_map\" object; re-download it or delete it to load every *.safetensors file");
    // Shards in sorted order, each opened once.
    std::map<std::string, size_t> shard_index;
    for (const auto& [name, shard] : wm->items()) {
      SY_REQUIRE(shard.is_string(), FormatError, kComponent, index_path.string(), ": weight_map entry \"", name,
                 "\" must be a file name string, got ", shard.type_name());
      check_shard_name(shard.get_ref<const std::string&>(), index_path);
      shard_index.emplace(shard.get<std::string>(), 0);
    }
    for (auto& [shard, idx] : shard_index) {
      const fs::path shard_path = root / shard;
      SY_REQUIRE(fs::exists(shard_path, ec), IoError, kComponent, index_path.string(), " names shard ", shard,
                 ", which does not exist in ", dir, "; the download is incomplete");
      idx = files_.size();
      files_.push_back(std::make_unique<SafetensorsFile>(shard_path.string()));
    }
    for (const auto& [name, shard] : wm->items()) {
      size_t idx = shard_index.at(shard.get<std::string>());
      SY_REQUIRE(files_[idx]->contains(name), FormatError, kComponent, index_path.string(), " lists tensor \"",
                 name, "\" in shard ", shard.get<std::string>(),
                 ", but that shard does not contain it; the checkpoint is inconsistent");
    }
  } else if (fs::exists(root / "model.safetensors", ec)) {
    files_.push_back(std::make_unique<SafetensorsFile>((root / "model.safetensors").string()));
  } else {
    std::vector<fs::path> found;
    for (const auto& de : fs::directory_iterator(root, ec)) {
      if (de.path().extension() == ".safetensors" && de.is_regular_file(ec)) found.push_back(de.path());
    }
    SY_REQUIRE(ec.value() == 0, IoError, kComponent, "cannot list ", dir, ": ", ec.message());
    SY_REQUIRE(!found.empty(), IoError, kComponent, "no .safetensors files found in ", dir,
               "; download the model weights (for example with `huggingface-cli download`)");
    std::sort(found.begin(), found.end());
    for (const auto& p : found) files_.push_back(std::make_unique<SafetensorsFile>(p.string()));
  }

  // Every tensor of every file, each in exactly one file.
  for (size_t i = 0; i < files_.size(); ++i) {
    for (const SafetensorsEntry& e : files_[i]->header().entries) {
      auto [it, inserted] = owner_.emplace(e.name, i);
      SY_REQUIRE(inserted, FormatError, kComponent, "tensor \"", e.name, "\" appears in both ",
                 files_[it->second]->path(), " and ", files_[i]->path(), "; remove the stale file from ", dir);
    }
  }
}

bool SafetensorsCheckpoint::contains(const std::string& name) const { return owner_.count(name) != 0; }

const SafetensorsEntry& SafetensorsCheckpoint::entry(const std::string& name) const {
  auto it = owner_.find(name);
  if (it == owner_.end()) {
    throw make_error<FormatError>(kComponent, "tensor \"", name, "\" not found in ", dir_, " (", owner_.size(),
                                  " tensors in ", files_.size(),
                                  " files); the checkpoint does not match the model architecture");
  }
  return files_[it->second]->entry(name);
}

Tensor SafetensorsCheckpoint::tensor(const std::string& name) const {
  entry(name);  // throws the checkpoint-level message when absent
  return files_[owner_.at(name)]->tensor(name);
}

std::vector<std::string> SafetensorsCheckpoint::names() const {
  std::vector<std::string> out;
  out.reserve(owner_.size());
  for (const auto& [name, i] : owner_) out.push_back(name);
  return out;
}

}  // namespace sy
