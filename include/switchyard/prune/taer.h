// TAER (PreMoe, 2025): task-adaptive expert retrieval. For a prompt, compute the TCESS marker mean over its
// tokens at the first MoE layer (the forward pass stops at that router; KeyLayers::kAll uses every MoE layer
// instead), find the stored task whose key is nearest (exact L2), and build a model holding only that task's top-M experts per layer. The source model
// is opened as memory-mapped views and the used ranges are prefetched exactly (prefetch.h), so experts that
// are not kept are not read from disk (up to page rounding at their edges).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "switchyard/model/model.h"
#include "switchyard/prune/pep.h"
#include "switchyard/prune/store.h"

namespace sy::prune {

struct RetrievalResult {
  std::string task;
  double distance = 0.0;           // L2 between the prompt's key and the task's key
  std::vector<double> prompt_key;  // (num_experts), or (num_moe_layers * num_experts) for KeyLayers::kAll
};

// Nearest task for `prompt` in `store`, using the store's TCESS options. The model must be the store's model.
RetrievalResult retrieve_task(Model& model, const TaskStore& store, const std::vector<int64_t>& prompt,
                              KeyLayers layers = KeyLayers::kFirst);

struct PrunedModel {
  std::unique_ptr<Model> model;
  RetrievalResult match;
  ExpertPattern pattern;
};

// Opens MODEL_DIR, checks STORE_DIR's fingerprint against it, retrieves the prompt's task, and returns the model
// restricted to that task's top-`keep` experts per layer (experts_per_token 0 keeps the model's top-k).
// Throws InvalidArgument (bad keep, other model, empty store), IoError / FormatError (missing or corrupt store).
PrunedModel load_pruned_for_prompt(const std::string& model_dir, const std::string& store_dir, int keep,
                                   int experts_per_token, const std::vector<int64_t>& prompt,
                                   KeyLayers layers = KeyLayers::kFirst);

// Opens MODEL_DIR restricted to a named task's top-`keep` experts (no retrieval).
PrunedModel load_pruned_for_task(const std::string& model_dir, const std::string& store_dir, const std::string& task,
                                 int keep, int experts_per_token);

}  // namespace sy::prune
