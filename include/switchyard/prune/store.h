// TAER pattern store (PreMoe, 2025): one JSON file per store directory, DIR/premoe_store.json, holding the
// model fingerprint, the TCESS options, and per task its key (TCESS at the first MoE layer) and every MoE
// layer's scores and expert ranking (so that any --keep M can be chosen later). Format: docs/premoe.md.
// Saving rewrites the whole file through a temporary and a rename, so a crash never leaves a torn store; a
// checksum over the contents turns any other damage into a clear error. Not safe for concurrent writers.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "switchyard/io/model_config.h"
#include "switchyard/prune/tcess.h"

namespace sy::prune {

// What a store was profiled on.
struct StoreModel {
  std::string fingerprint;  // model_fingerprint(dir)
  std::string model_type;
  int num_layers = 0;
  int num_experts = 0;
  std::vector<int> moe_layers;
};
// Describes the checkpoint in DIR (config already parsed from it).
StoreModel describe_model(const std::string& dir, const ModelConfig& config);

struct StoredTask {
  std::string name;
  int64_t num_tokens = 0;           // calibration tokens profiled
  std::string source;               // where the tokens came from (informational)
  std::vector<double> key;          // (num_experts): TCESS of the first MoE layer
  TaskScores scores;                // every MoE layer, in layer order
  std::vector<std::vector<int>> rankings;  // [i]: rank_experts(scores.layers[i].scores)

  // The task's retrieval key for `layers` (see KeyLayers): `key`, or every layer's scores concatenated.
  std::vector<double> key_for(KeyLayers layers) const;
};

// Builds a task from its scores (key and rankings derived).
StoredTask make_task(const std::string& name, const TaskScores& scores, const std::string& source);

class TaskStore {
 public:
  static constexpr const char* kFileName = "premoe_store.json";
  static constexpr int kVersion = 1;

  // Reads DIR/premoe_store.json. Throws IoError when absent (run `prune profile` first), FormatError when the
  // file is not a valid store (bad JSON, missing fields, wrong lengths, checksum mismatch).
  static TaskStore load(const std::string& dir);
  // load(dir) if the store exists (then checks model and options), else an empty store for them.
  static TaskStore open_or_create(const std::string& dir, const StoreModel& model, const TcessOptions& options);

  const std::string& dir() const { return dir_; }
  const StoreModel& model() const { return model_; }
  const TcessOptions& options() const { return options_; }
  const std::vector<StoredTask>& tasks() const { return tasks_; }  // sorted by name

  // Throws InvalidArgument when the store was profiled on another model (fingerprint) or other TCESS options.
  void check_model(const StoreModel& model) const;
  void check_options(const TcessOptions& options) const;
  // Adds the task or replaces the one with its name. Throws InvalidArgument for a bad name or shape.
  void put(StoredTask task);
  // Throws InvalidArgument naming the known tasks when absent.
  const StoredTask& task(const std::string& name) const;

  struct Match {
    const StoredTask* task = nullptr;
    double distance = 0.0;  // L2
  };
  // Exact nearest stored key by L2 distance (ties: the first by name), keys made of `layers` (the query key
  // must be too: retrieval_key with the same KeyLayers). Throws InvalidArgument if the store is empty.
  Match nearest(const std::vector<double>& key, KeyLayers layers = KeyLayers::kFirst) const;

  // Writes DIR/premoe_store.json atomically (creating DIR). Throws IoError.
  void save() const;

  nlohmann::json to_json() const;  // without the checksum
  static TaskStore from_json(const nlohmann::json& j, const std::string& dir);

 private:
  std::string dir_;
  StoreModel model_;
  TcessOptions options_;
  std::vector<StoredTask> tasks_;
};

}  // namespace sy::prune
