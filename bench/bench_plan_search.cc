// Layout-search throughput of the planner on one core: layouts estimated per second for a few jobs, next to
// the 100,000 layouts/s the planner issue asks for (the limit this benchmark is measured against).
// Not a measure of prediction accuracy: see tests/unit/test_plan_validation.cc for that.
#include <cstdio>

#include "switchyard/plan/search.h"

int main() {
  using namespace sy::plan;
  struct Job { const char* model; const char* cluster; int gpus, seq, gbs; };
  const Job jobs[] = {{"Mixtral-8x22B", "dgx-h100", 128, 4096, 256},
                      {"Qwen3-235B-A22B", "dgx-h200", 256, 4096, 1024},
                      {"DeepSeek-V3", "dgx-h800", 2048, 4096, 15360},
                      {"Pangu-Ultra-MoE-718B", "ascend-910b", 6144, 8192, 1536},
                      {"GPT-3-175B", "selene-a100", 1024, 2048, 1536}};
  std::printf("%-22s %-12s %6s %10s %10s %9s %12s\n", "model", "cluster", "gpus", "evaluated", "feasible", "seconds",
              "layouts/s");
  long long total = 0;
  double seconds = 0;
  for (const Job& j : jobs) {
    TrainJob job;
    job.num_gpus = j.gpus;
    job.seq_len = j.seq;
    job.global_batch = j.gbs;
    CostModel cost(model_preset(j.model), cluster_preset(j.cluster), job);
    SearchOptions o;
    o.top_k = 5;
    SearchResult best_run;
    for (int rep = 0; rep < 3; ++rep) {  // best of three against scheduling noise on a shared machine
      SearchResult r = search_layouts(cost, o);
      if (rep == 0 || r.seconds < best_run.seconds) best_run = r;
    }
    std::printf("%-22s %-12s %6d %10lld %10lld %9.3f %12.0f\n", j.model, j.cluster, j.gpus, best_run.evaluated,
                best_run.feasible, best_run.seconds, best_run.evaluated / best_run.seconds);
    total += best_run.evaluated;
    seconds += best_run.seconds;
  }
  std::printf("overall: %.0f layouts/s on one core (target >= 100000 layouts/s)\n", total / seconds);
  return 0;
}
