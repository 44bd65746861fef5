// Model-shape sweep: shapes around a base MoE model at a fixed total-parameter budget, each given its best
// searched layout. Shape rules (rounding, head counts) are documented in docs/planner.md; not a quality model.
#include "switchyard/plan/sweep.h"

#include <algorithm>
#include <cmath>

#include "switchyard/core/error.h"

namespace sy::plan {

namespace {
int64_t round_to(double v, int64_t q) { return std::max<int64_t>(q, static_cast<int64_t>(std::llround(v / q)) * q); }
}  // namespace

SweepResult sweep_shapes(const PlanModel& base, const ClusterSpec& cluster, const TrainJob& job, const SweepOptions& o) {
  const ModelConfig& b = base.config;
  if (b.moe.num_experts == 0 || b.num_moe_layers() == 0) {
    throw make_error<InvalidArgument>("plan", base.name, " is dense; the shape sweep trades experts against width and "
                                      "depth, so start from a MoE model");
  }
  const double budget = o.param_budget > 0 ? o.param_budget : double(count_params(base).total);
  const int leading_dense = b.num_layers - b.num_moe_layers();
  SweepResult r;
  const size_t total = o.layer_scales.size() * o.hidden_scales.size() * o.expert_scales.size() * o.topk_scales.size();
  size_t done = 0;
  for (double ls : o.layer_scales) {
    for (double hs : o.hidden_scales) {
      for (double es : o.expert_scales) {
        for (double ks : o.topk_scales) {
          if (o.progress) o.progress(double(done++) / total);
          PlanModel m = base;
          ModelConfig& c = m.config;
          c.num_layers = std::max(leading_dense + 1, int(std::lround(b.num_layers * ls)));
          c.layer_is_moe.assign(c.num_layers, true);
          for (int i = 0; i < leading_dense; ++i) c.layer_is_moe[i] = false;
          c.layer_sliding_window.assign(c.num_layers, 0);
          c.hidden_size = round_to(b.hidden_size * hs, 256);
          AttentionConfig& a = c.attention;
          const int group = a.mla ? 8 : a.num_kv_heads;
          a.num_heads = int(round_to(b.attention.num_heads * double(c.hidden_size) / b.hidden_size, group));
          if (a.mla) a.num_kv_heads = a.num_heads;
          c.intermediate_size = round_to(b.intermediate_size * double(c.hidden_size) / b.hidden_size, 128);
          c.moe.num_experts = int(std::max<int64_t>(2, std::llround(b.moe.num_experts * es)));
          c.moe.top_k = std::clamp(int(std::lround(b.moe.top_k * ks)), 1, c.moe.num_experts);
          c.moe.num_groups = c.moe.topk_groups = 1;
          if (b.moe.shared_intermediate > 0) {
            c.moe.shared_intermediate = round_to(b.moe.shared_intermediate * double(c.hidden_size) / b.hidden_size, 128);
          }
          // Expert width that puts the total on budget: total is linear in it.
          c.moe.expert_intermediate = 0;
          const double fixed = double(count_params(m).total);
          const double per_unit = double(c.num_moe_layers()) * c.moe.num_experts * 3.0 * double(c.hidden_size);
          const double fe = (budget - fixed) / per_unit;
          if (fe < 128) continue;
          c.moe.expert_intermediate = round_to(fe, 16);  // keeps the total within ~0.5% of budget
          m.name = detail::concat("L", c.num_layers, "-h", c.hidden_size, "-E", c.moe.num_experts, "-k", c.moe.top_k,
                                  "-fe", c.moe.expert_intermediate);
          ++r.shapes;
          CostModel cost(m, cluster, job);
          SearchOptions so;
          so.top_k = 1;
          SearchResult s = search_layouts(cost, so);
          r.layouts += s.evaluated;
          if (s.best.empty()) continue;
          ShapeResult sr{m, count_params(m), s.best[0]};
          r.best.push_back(std::move(sr));
        }
      }
    }
  }
  std::sort(r.best.begin(), r.best.end(), [](const ShapeResult& x, const ShapeResult& y) {
    return x.best.tokens_per_s_per_gpu > y.best.tokens_per_s_per_gpu;
  });
  if (int(r.best.size()) > o.top_k) r.best.resize(std::max(0, o.top_k));
  if (o.progress) o.progress(1.0);
  return r;
}

}  // namespace sy::plan
