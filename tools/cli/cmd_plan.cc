// `switchyard plan train`: maps flags to the planner (sy::plan) and prints its answer as a table or JSON.
// No cost logic here: estimates, rules and search all live in src/plan.
#include <chrono>
#include <cstdio>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "commands.h"
#include "switchyard/core/error.h"
#include "switchyard/plan/report.h"
#include "switchyard/plan/search.h"
#include "switchyard/plan/sweep.h"

namespace sy::cli {

namespace {
struct PlanFlags {
  std::string model, cluster, layout, format = "table";
  int gpus = 0, seq = 0, global_batch = 0, top = 5;
  double imbalance = 1.0, ep_overlap = 0.0, tp_overlap = 0.0;
};

// A progress bar on stderr, shown only once a search has run for more than a second.
class ProgressBar {
 public:
  void operator()(double fraction) {
    auto now = std::chrono::steady_clock::now();
    if (now - start_ < std::chrono::seconds(1) && fraction < 1.0) return;
    if (fraction >= 1.0 && !shown_) return;
    int percent = static_cast<int>(fraction * 100);
    if (percent == last_percent_) return;
    last_percent_ = percent;
    int filled = static_cast<int>(fraction * 40);
    std::fprintf(stderr, "\rsearching [%-40s] %3d%%", std::string(filled, '#').c_str(), static_cast<int>(fraction * 100));
    if (fraction >= 1.0) std::fprintf(stderr, "\n");
    shown_ = true;
  }

 private:
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  bool shown_ = false;
  int last_percent_ = -1;
};

int run_plan_train(const PlanFlags& f) {
  if (f.format != "table" && f.format != "json") {
    throw make_error<InvalidArgument>("plan", "--format must be table or json, got \"", f.format, "\"");
  }
  if (f.top <= 0) throw make_error<InvalidArgument>("plan", "--top must be positive");
  if (f.imbalance < 1.0) throw make_error<InvalidArgument>("plan", "--imbalance is busiest-expert load / mean load and must be >= 1");
  if (f.ep_overlap < 0 || f.ep_overlap > 1 || f.tp_overlap < 0 || f.tp_overlap > 1) {
    throw make_error<InvalidArgument>("plan", "--ep-overlap and --tp-overlap are fractions in [0, 1]");
  }
  plan::TrainJob job;
  job.num_gpus = f.gpus;
  job.seq_len = f.seq;
  job.global_batch = f.global_batch;
  job.imbalance = f.imbalance;
  job.ep_overlap = f.ep_overlap;
  job.tp_overlap = f.tp_overlap;
  plan::CostModel cost(plan::load_model(f.model), plan::load_cluster(f.cluster), job);
  const bool json_out = f.format == "json";

  if (!f.layout.empty()) {
    plan::Estimate e = cost.evaluate(plan::parse_layout(f.layout));
    if (json_out) {
      nlohmann::json j = plan::estimate_to_json(e);
      j["model"] = cost.model().name;
      j["cluster"] = cost.cluster().name;
      std::cout << j.dump(2) << "\n";
    } else {
      std::cout << plan::estimate_to_table(e);
    }
    for (const auto& v : e.violations) std::fprintf(stderr, "error: %s (rule: %s)\n", v.message.c_str(), v.rule.c_str());
    return e.violations.empty() ? 0 : 1;
  }

  plan::SearchOptions so;
  so.top_k = f.top;
  auto bar = std::make_shared<ProgressBar>();
  so.progress = [bar](double x) { (*bar)(x); };
  plan::SearchResult r = plan::search_layouts(cost, so);
  if (json_out) {
    nlohmann::json j;
    j["model"] = cost.model().name;
    j["cluster"] = cost.cluster().name;
    j["evaluated"] = r.evaluated;
    j["feasible"] = r.feasible;
    j["search_seconds"] = r.seconds;
    j["best"] = nlohmann::json::array();
    for (const auto& e : r.best) j["best"].push_back(plan::estimate_to_json(e));
    std::cout << j.dump(2) << "\n";
  } else {
    std::cout << plan::estimates_to_table(r.best);
    std::printf("%lld layouts evaluated, %lld feasible, %.2f s\n", r.evaluated, r.feasible, r.seconds);
  }
  if (r.best.empty()) {
    throw make_error<InvalidArgument>("plan", "no layout of ", cost.model().name, " fits ", f.gpus, " x ",
                                      cost.cluster().device, " at seq ", f.seq, " and global batch ", f.global_batch,
                                      "; add GPUs, shorten the sequence or change the batch");
  }
  return 0;
}
int run_plan_sweep(const PlanFlags& f) {
  if (f.format != "table" && f.format != "json") {
    throw make_error<InvalidArgument>("plan", "--format must be table or json, got \"", f.format, "\"");
  }
  plan::TrainJob job;
  job.num_gpus = f.gpus;
  job.seq_len = f.seq;
  job.global_batch = f.global_batch;
  job.imbalance = f.imbalance;
  plan::SweepOptions so;
  so.top_k = f.top;
  auto bar = std::make_shared<ProgressBar>();
  so.progress = [bar](double x) { (*bar)(x); };
  plan::PlanModel base = plan::load_model(f.model);
  plan::SweepResult r = plan::sweep_shapes(base, plan::load_cluster(f.cluster), job, so);
  if (f.format == "json") {
    nlohmann::json j;
    j["base"] = base.name;
    j["shapes"] = r.shapes;
    j["layouts"] = r.layouts;
    j["best"] = nlohmann::json::array();
    for (const auto& s : r.best) {
      nlohmann::json e = plan::estimate_to_json(s.best);
      e["shape"] = s.model.name;
      e["total_params_b"] = s.params.total / 1e9;
      e["active_params_b"] = s.params.active / 1e9;
      j["best"].push_back(e);
    }
    std::cout << j.dump(2) << "\n";
  } else {
    std::printf("%-36s %8s %8s %10s %6s  %s\n", "shape", "total_B", "active_B", "tok/s/GPU", "MFU%", "best layout");
    for (const auto& s : r.best) {
      std::printf("%-36s %8.1f %8.1f %10.0f %6.1f  %s\n", s.model.name.c_str(), s.params.total / 1e9,
                  s.params.active / 1e9, s.best.tokens_per_s_per_gpu, 100 * s.best.mfu,
                  plan::format_layout(s.best.layout).c_str());
    }
    std::printf("%d shapes on budget, %lld layouts estimated\n", r.shapes, r.layouts);
  }
  return r.best.empty() ? 1 : 0;
}
}  // namespace

CommandRunner add_plan_command(CLI::App& app) {
  CLI::App* plan = app.add_subcommand("plan", "Simulate and search training layouts (step time, MFU, memory)");
  plan->require_subcommand(1);
  CLI::App* train = plan->add_subcommand("train", "Evaluate one training layout, or search the best ones");
  auto f = std::make_shared<PlanFlags>();
  train->add_option("--model", f->model, "Preset name, config.json or model directory")->required();
  train->add_option("--cluster", f->cluster, "Cluster preset or JSON file")->required();
  train->add_option("--gpus", f->gpus, "Number of devices")->required()->check(CLI::PositiveNumber);
  train->add_option("--seq", f->seq, "Sequence length")->required()->check(CLI::PositiveNumber);
  train->add_option("--global-batch", f->global_batch, "Sequences per optimizer step")->required()->check(CLI::PositiveNumber);
  train->add_option("--layout", f->layout, "e.g. \"tp=2,cp=1,pp=8,vpp=4,ep=8,etp=1,mbs=1,recompute=selective\"");
  train->add_option("--top", f->top, "How many layouts a search prints")->capture_default_str();
  train->add_option("--format", f->format, "table or json")->capture_default_str();
  train->add_option("--imbalance", f->imbalance, "Routing skew: tokens on the busiest expert / mean")->capture_default_str();
  train->add_option("--ep-overlap", f->ep_overlap, "Fraction of EP all-to-all hidden behind compute")->capture_default_str();
  train->add_option("--tp-overlap", f->tp_overlap, "Fraction of TP collectives hidden behind GEMMs")->capture_default_str();
  CLI::App* sweep = plan->add_subcommand("sweep", "Rank model shapes (layers, hidden, experts, top-k) at the base model's parameter budget");
  sweep->add_option("--model", f->model, "Base MoE preset or config.json")->required();
  sweep->add_option("--cluster", f->cluster, "Cluster preset or JSON file")->required();
  sweep->add_option("--gpus", f->gpus, "Number of devices")->required()->check(CLI::PositiveNumber);
  sweep->add_option("--seq", f->seq, "Sequence length")->required()->check(CLI::PositiveNumber);
  sweep->add_option("--global-batch", f->global_batch, "Sequences per optimizer step")->required()->check(CLI::PositiveNumber);
  sweep->add_option("--top", f->top, "How many shapes to print")->capture_default_str();
  sweep->add_option("--format", f->format, "table or json")->capture_default_str();
  sweep->add_option("--imbalance", f->imbalance, "Routing skew: tokens on the busiest expert / mean")->capture_default_str();
  return [f, train, sweep]() {
    if (train->parsed()) return run_plan_train(*f);
    if (sweep->parsed()) return run_plan_sweep(*f);
    return 2;
  };
}

}  // namespace sy::cli
