// TAER pattern store: JSON (de)serialisation with validation, checksum, atomic save, nearest-key lookup.
#include "switchyard/prune/store.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "io/atomic_file.h"
#include "switchyard/core/error.h"
#include "switchyard/prune/fingerprint.h"
#include "switchyard/prune/pep.h"

namespace sy::prune {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr const char* kFormat = "switchyard-premoe-store";

std::string store_path(const std::string& dir) { return (fs::path(dir) / TaskStore::kFileName).string(); }

// Thrown for any structural problem in a store file.
[[noreturn]] void corrupt(const std::string& dir, const std::string& what) {
  throw make_error<FormatError>("prune", "pattern store ", store_path(dir), " is damaged: ", what,
                                "; delete it and run `switchyard prune profile` again");
}

const json& field(const json& j, const char* key, const std::string& dir) {
  if (!j.is_object() || !j.contains(key)) corrupt(dir, std::string("missing \"") + key + "\"");
  return j[key];
}

int64_t int_field(const json& j, const char* key, const std::string& dir) {
  const json& v = field(j, key, dir);
  if (!v.is_number_integer()) corrupt(dir, std::string("\"") + key + "\" is not an integer");
  return v.get<int64_t>();
}

std::string string_field(const json& j, const char* key, const std::string& dir) {
  const json& v = field(j, key, dir);
  if (!v.is_string()) corrupt(dir, std::string("\"") + key + "\" is not a string");
  return v.get<std::string>();
}

std::vector<double> doubles(const json& v, size_t n, const std::string& dir, const std::string& what) {
  if (!v.is_array() || v.size() != n) corrupt(dir, what + " must be a list of " + std::to_string(n) + " numbers");
  std::vector<double> out;
  for (const json& x : v) {
    if (!x.is_number() || !std::isfinite(x.get<double>())) corrupt(dir, what + " holds a non-finite or non-number");
    out.push_back(x.get<double>());
  }
  return out;
}

std::vector<int> permutation(const json& v, int n, const std::string& dir, const std::string& what) {
  if (!v.is_array() || static_cast<int>(v.size()) != n) corrupt(dir, what + " must list " + std::to_string(n) + " experts");
  std::vector<int> out;
  std::vector<bool> seen(n, false);
  for (const json& x : v) {
    if (!x.is_number_integer()) corrupt(dir, what + " holds a non-integer");
    int64_t e = x.get<int64_t>();
    if (e < 0 || e >= n || seen[e]) corrupt(dir, what + " is not a permutation of 0.." + std::to_string(n - 1));
    seen[e] = true;
    out.push_back(static_cast<int>(e));
  }
  return out;
}

std::string checksum_of(const json& body) {
  std::string text = body.dump();
  return "fnv1a64:" + hex64(fnv1a64(text.data(), text.size()));
}

void check_task_name(const std::string& name) {
  SY_REQUIRE(!name.empty() && name.size() <= 128, InvalidArgument, "prune",
             "task name must be 1 to 128 characters, got \"", name, "\"");
  for (char c : name) {
    SY_REQUIRE(c >= 0x20 && c < 0x7f, InvalidArgument, "prune", "task name \"", name,
               "\" may only hold printable ASCII characters");
  }
}

}  // namespace

StoreModel describe_model(const std::string& dir, const ModelConfig& config) {
  StoreModel m;
  m.fingerprint = model_fingerprint(dir);
  m.model_type = config.model_type;
  m.num_layers = config.num_layers;
  m.num_experts = config.moe.num_experts;
  for (int l = 0; l < config.num_layers; ++l) {
    if (config.layer_is_moe[l]) m.moe_layers.push_back(l);
  }
  SY_REQUIRE(!m.moe_layers.empty() && m.num_experts > 0, InvalidArgument, "prune", "model in ", dir,
             " has no MoE layer; expert pruning needs a Mixture-of-Experts model");
  return m;
}

StoredTask make_task(const std::string& name, const TaskScores& scores, const std::string& source) {
  check_task_name(name);
  SY_CHECK(!scores.layers.empty(), "make_task without layers");
  StoredTask t;
  t.name = name;
  t.num_tokens = scores.num_tokens;
  t.source = source;
  t.key = scores.layers.front().scores;
  t.scores = scores;
  for (const LayerScores& ls : scores.layers) t.rankings.push_back(rank_experts(ls.scores));
  return t;
}

json TaskStore::to_json() const {
  json tasks = json::array();
  for (const StoredTask& t : tasks_) {
    json layers = json::array();
    for (size_t i = 0; i < t.scores.layers.size(); ++i) {
      layers.push_back({{"layer", t.scores.layers[i].layer},
                        {"scores", t.scores.layers[i].scores},
                        {"ranking", t.rankings[i]}});
    }
    tasks.push_back({{"name", t.name}, {"num_tokens", t.num_tokens}, {"source", t.source}, {"key", t.key},
                     {"layers", layers}});
  }
  return {{"format", kFormat},
          {"version", kVersion},
          {"model",
           {{"fingerprint", model_.fingerprint},
            {"model_type", model_.model_type},
            {"num_layers", model_.num_layers},
            {"num_experts", model_.num_experts},
            {"moe_layers", model_.moe_layers}}},
          {"tcess", {{"top_k", options_.top_k}, {"threshold", options_.threshold}}},
          {"tasks", tasks}};
}

TaskStore TaskStore::from_json(const json& j, const std::string& dir) {
  if (!j.is_object()) corrupt(dir, "the file does not hold a JSON object");
  if (!j.contains("format") || j["format"] != kFormat) corrupt(dir, "\"format\" is not \"" + std::string(kFormat) + "\"");
  const int64_t version = int_field(j, "version", dir);
  SY_REQUIRE(version == kVersion, Unsupported, "prune", "pattern store ", store_path(dir), " has version ", version,
             "; this switchyard reads version ", kVersion);
  TaskStore s;
  s.dir_ = dir;
  const json& m = field(j, "model", dir);
  s.model_.fingerprint = string_field(m, "fingerprint", dir);
  s.model_.model_type = string_field(m, "model_type", dir);
  s.model_.num_layers = static_cast<int>(int_field(m, "num_layers", dir));
  s.model_.num_experts = static_cast<int>(int_field(m, "num_experts", dir));
  if (s.model_.num_layers <= 0 || s.model_.num_experts <= 0) corrupt(dir, "layer or expert count is not positive");
  const json& moe_layers = field(m, "moe_layers", dir);
  if (!moe_layers.is_array() || moe_layers.empty()) corrupt(dir, "\"moe_layers\" must be a non-empty list");
  for (const json& l : moe_layers) {
    if (!l.is_number_integer() || l.get<int>() < 0 || l.get<int>() >= s.model_.num_layers) {
      corrupt(dir, "\"moe_layers\" holds a bad layer index");
    }
    s.model_.moe_layers.push_back(l.get<int>());
  }
  const json& tc = field(j, "tcess", dir);
  s.options_.top_k = static_cast<int>(int_field(tc, "top_k", dir));
  const json& thr = field(tc, "threshold", dir);
  if (!thr.is_number()) corrupt(dir, "\"threshold\" is not a number");
  s.options_.threshold = thr.get<double>();
  if (s.options_.top_k < 1 || s.options_.top_k > s.model_.num_experts || s.options_.threshold < 0 ||
      s.options_.threshold >= 1) {
    corrupt(dir, "TCESS options are out of range");
  }
  const json& tasks = field(j, "tasks", dir);
  if (!tasks.is_array()) corrupt(dir, "\"tasks\" is not a list");
  const int e = s.model_.num_experts;
  for (const json& tj : tasks) {
    StoredTask t;
    t.name = string_field(tj, "name", dir);
    t.num_tokens = int_field(tj, "num_tokens", dir);
    t.source = string_field(tj, "source", dir);
    const std::string what = "task \"" + t.name + "\"";
    if (t.num_tokens <= 0) corrupt(dir, what + " has no tokens");
    t.key = doubles(field(tj, "key", dir), e, dir, what + " key");
    const json& layers = field(tj, "layers", dir);
    if (!layers.is_array() || layers.size() != s.model_.moe_layers.size()) {
      corrupt(dir, what + " must have one entry per MoE layer");
    }
    for (size_t i = 0; i < layers.size(); ++i) {
      LayerScores ls;
      ls.layer = static_cast<int>(int_field(layers[i], "layer", dir));
      if (ls.layer != s.model_.moe_layers[i]) corrupt(dir, what + " lists layers out of order");
      ls.scores = doubles(field(layers[i], "scores", dir), e, dir, what + " scores");
      t.rankings.push_back(permutation(field(layers[i], "ranking", dir), e, dir, what + " ranking"));
      t.scores.layers.push_back(std::move(ls));
    }
    t.scores.num_tokens = t.num_tokens;
    if (!s.tasks_.empty() && !(s.tasks_.back().name < t.name)) corrupt(dir, "task names are not sorted and unique");
    s.tasks_.push_back(std::move(t));
  }
  return s;
}

TaskStore TaskStore::load(const std::string& dir) {
  const std::string path = store_path(dir);
  SY_REQUIRE(fs::is_regular_file(path), IoError, "prune", "no pattern store at ", path,
             "; create one with `switchyard prune profile --store ", dir, " ...`");
  std::ifstream in(path, std::ios::binary);
  SY_REQUIRE(in, IoError, "prune", "cannot open ", path);
  json j;
  try {
    j = json::parse(in);
  } catch (const json::exception& e) {
    corrupt(dir, std::string("not valid JSON (") + e.what() + ")");
  }
  if (!j.is_object() || !j.contains("checksum") || !j["checksum"].is_string()) corrupt(dir, "missing \"checksum\"");
  const std::string stored = j["checksum"].get<std::string>();
  j.erase("checksum");
  if (checksum_of(j) != stored) corrupt(dir, "checksum mismatch (the contents were changed or damaged)");
  return from_json(j, dir);
}

TaskStore TaskStore::open_or_create(const std::string& dir, const StoreModel& model, const TcessOptions& options) {
  if (fs::exists(store_path(dir))) {
    TaskStore s = load(dir);
    s.check_model(model);
    s.check_options(options);
    return s;
  }
  TaskStore s;
  s.dir_ = dir;
  s.model_ = model;
  s.options_ = options;
  return s;
}

void TaskStore::check_model(const StoreModel& model) const {
  SY_REQUIRE(model.fingerprint == model_.fingerprint, InvalidArgument, "prune", "pattern store ", store_path(dir_),
             " was profiled on a different model (", model_.model_type, ", fingerprint ", model_.fingerprint,
             ") than --model (", model.model_type, ", fingerprint ", model.fingerprint,
             "); use the store made for this model or profile this model into a new --store directory");
  SY_CHECK(model.num_experts == model_.num_experts && model.moe_layers == model_.moe_layers, "fingerprint collision");
}

void TaskStore::check_options(const TcessOptions& options) const {
  SY_REQUIRE(options.top_k == options_.top_k && options.threshold == options_.threshold, InvalidArgument, "prune",
             "pattern store ", store_path(dir_), " holds tasks profiled with --top-k ", options_.top_k,
             " --threshold ", options_.threshold, "; profile with the same options or into a new --store directory");
}

void TaskStore::put(StoredTask task) {
  check_task_name(task.name);
  SY_CHECK(static_cast<int>(task.key.size()) == model_.num_experts &&
               task.scores.layers.size() == model_.moe_layers.size() && task.rankings.size() == task.scores.layers.size(),
           "task shape does not match the store");
  auto it = std::lower_bound(tasks_.begin(), tasks_.end(), task.name,
                             [](const StoredTask& t, const std::string& n) { return t.name < n; });
  if (it != tasks_.end() && it->name == task.name) {
    *it = std::move(task);
  } else {
    tasks_.insert(it, std::move(task));
  }
}

const StoredTask& TaskStore::task(const std::string& name) const {
  for (const StoredTask& t : tasks_) {
    if (t.name == name) return t;
  }
  std::string names;
  for (const StoredTask& t : tasks_) names += (names.empty() ? "" : ", ") + t.name;
  throw make_error<InvalidArgument>("prune", "task \"", name, "\" is not in pattern store ", store_path(dir_),
                                    names.empty() ? std::string(" (the store is empty)") : " (tasks: " + names + ")",
                                    "; profile it first with `switchyard prune profile --task ", name, " ...`");
}

std::vector<double> StoredTask::key_for(KeyLayers layers) const {
  if (layers == KeyLayers::kFirst) return key;
  std::vector<double> all;
  for (const LayerScores& ls : scores.layers) all.insert(all.end(), ls.scores.begin(), ls.scores.end());
  return all;
}

TaskStore::Match TaskStore::nearest(const std::vector<double>& key, KeyLayers layers) const {
  SY_REQUIRE(!tasks_.empty(), InvalidArgument, "prune", "pattern store ", store_path(dir_),
             " has no tasks; add one with `switchyard prune profile`");
  const size_t layer_count = layers == KeyLayers::kFirst ? 1 : model_.moe_layers.size();
  SY_CHECK(key.size() == layer_count * model_.num_experts, "key of ", key.size());
  Match best;
  double best_sq = 0.0;
  for (const StoredTask& t : tasks_) {
    const std::vector<double> task_key = t.key_for(layers);
    double sq = 0.0;
    for (size_t i = 0; i < key.size(); ++i) {
      const double d = key[i] - task_key[i];
      sq += d * d;
    }
    if (!best.task || sq < best_sq) {
      best.task = &t;
      best_sq = sq;
    }
  }
  best.distance = std::sqrt(best_sq);
  return best;
}

void TaskStore::save() const {
  std::error_code ec;
  fs::create_directories(dir_, ec);
  SY_REQUIRE(!ec && fs::is_directory(dir_), IoError, "prune", "cannot create store directory ", dir_, ": ",
             ec.message());
  json j = to_json();
  j["checksum"] = checksum_of(j);
  const std::string text = j.dump(1) + "\n";
  io_detail::AtomicFile file(store_path(dir_), "prune");
  file.write(text.data(), text.size());
  file.commit();
}

}  // namespace sy::prune
