// TAER retrieval and loading a model restricted to the retrieved pattern; see taer.h.
#include "switchyard/prune/taer.h"

#include "switchyard/core/error.h"
#include "switchyard/prune/prefetch.h"
#include "switchyard/prune/pruned_model.h"
#include "switchyard/prune/tcess.h"

namespace sy::prune {

namespace {

// The model in DIR as views (no expert bytes read) and its store, checked against each other.
struct Opened {
  std::unique_ptr<Model> model;
  TaskStore store;
};

Opened open_checked(const std::string& model_dir, const std::string& store_dir, int keep, int experts_per_token) {
  ModelConfig config = ModelConfig::from_file(model_dir);
  check_keep(config, keep, experts_per_token);
  TaskStore store = TaskStore::load(store_dir);
  store.check_model(describe_model(model_dir, config));
  return {Model::load(model_dir), std::move(store)};
}

}  // namespace

RetrievalResult retrieve_task(Model& model, const TaskStore& store, const std::vector<int64_t>& prompt,
                              KeyLayers layers) {
  RetrievalResult r;
  r.prompt_key = retrieval_key(model, prompt, store.options(), layers);
  TaskStore::Match m = store.nearest(r.prompt_key, layers);
  r.task = m.task->name;
  r.distance = m.distance;
  return r;
}

PrunedModel load_pruned_for_prompt(const std::string& model_dir, const std::string& store_dir, int keep,
                                   int experts_per_token, const std::vector<int64_t>& prompt, KeyLayers layers) {
  Opened o = open_checked(model_dir, store_dir, keep, experts_per_token);
  // Read everything but the routed experts up front, so the probe's page faults trigger no read-around.
  prefetch_weights(o.model->weights(), PrefetchOptions{false});
  PrunedModel p;
  p.match = retrieve_task(*o.model, o.store, prompt, layers);
  p.pattern = select_experts(o.model->config(), o.store.task(p.match.task).rankings, keep, experts_per_token);
  p.model = make_pruned_model(*o.model, p.pattern, experts_per_token);
  prefetch_weights(p.model->weights());  // now exactly the kept experts' ranges
  return p;  // the full model's views of dropped experts go away here
}

PrunedModel load_pruned_for_task(const std::string& model_dir, const std::string& store_dir, const std::string& task,
                                 int keep, int experts_per_token) {
  Opened o = open_checked(model_dir, store_dir, keep, experts_per_token);
  PrunedModel p;
  p.match.task = o.store.task(task).name;
  p.pattern = select_experts(o.model->config(), o.store.task(task).rankings, keep, experts_per_token);
  p.model = make_pruned_model(*o.model, p.pattern, experts_per_token);
  prefetch_weights(p.model->weights());
  return p;
}

}  // namespace sy::prune
