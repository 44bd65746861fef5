// Exhaustive enumeration of folding layouts (TP, CP, PP, VPP, EP, ETP, micro-batch, recompute) for one job.
// The enumerator only proposes sizes that divide what they must, so nearly every proposal is legal and the
// rate is bound by the cost model. Not a heuristic optimiser: every candidate is estimated.
#include "switchyard/plan/search.h"

#include <algorithm>
#include <chrono>

namespace sy::plan {

namespace {
std::vector<int> divisors_up_to(int n, int limit) {
  std::vector<int> out;
  for (int d = 1; d <= std::min(n, limit); ++d) {
    if (n % d == 0) out.push_back(d);
  }
  return out;
}
std::vector<int> powers_of_two_up_to(int limit) {
  std::vector<int> out;
  for (int p = 1; p <= limit; p *= 2) out.push_back(p);
  return out;
}
}  // namespace

SearchResult search_layouts(const CostModel& cost, const SearchOptions& o) {
  auto t0 = std::chrono::steady_clock::now();
  SearchResult r;
  const PlanModel& model = cost.model();
  const ModelConfig& c = model.config;
  const TrainJob& job = cost.job();
  const int W = job.num_gpus;
  if (W <= 0) return r;
  const bool moe = c.moe.num_experts > 0 && c.num_moe_layers() > 0;
  const int gpn = cost.cluster().gpus_per_node;
  const int max_tp = o.max_tp > 0 ? o.max_tp : gpn;
  const auto tps = powers_of_two_up_to(std::min(max_tp, W));
  const auto cps = powers_of_two_up_to(std::min(o.max_cp, W));
  const auto mbss = powers_of_two_up_to(o.max_mbs);
  const std::vector<int> eps = moe ? divisors_up_to(c.moe.num_experts, W) : std::vector<int>{1};
  const std::vector<int> etps = moe ? powers_of_two_up_to(std::min(max_tp, W)) : std::vector<int>{1};

  auto better = [](const Estimate& a, const Estimate& b) { return a.step_time_s < b.step_time_s; };
  std::vector<Estimate>& best = r.best;
  const int k = std::max(1, o.top_k);
  long long outer = 0, outer_total = (long long)tps.size() * cps.size();
  for (int tp : tps) {
    if (c.attention.num_heads % tp != 0 || (!c.attention.mla && c.attention.num_kv_heads % tp != 0)) { outer += cps.size(); continue; }
    for (int cp : cps) {
      ++outer;
      if (o.progress) o.progress(double(outer) / outer_total);
      if (W % (tp * cp) != 0) continue;
      if (cp > 1 && job.seq_len % (2 * cp) != 0) continue;
      if (tp > 1 && (job.seq_len / cp) % tp != 0) continue;
      for (int pp : divisors_up_to(W / (tp * cp), c.num_layers)) {
        const int dp = W / (tp * cp * pp);
        for (int vpp = 1; vpp * pp <= c.num_layers; ++vpp) {
          if (vpp > 1 && (pp == 1 || (c.num_layers / pp) % vpp != 0)) continue;
          for (int ep : eps) {
            for (int etp : etps) {
              if ((W / pp) % (ep * etp) != 0) continue;
              if (moe && c.moe.expert_intermediate % etp != 0) continue;
              for (int mbs : mbss) {
                if (job.global_batch % (mbs * dp) != 0) continue;
                const int m = job.global_batch / (mbs * dp);
                if (vpp > 1 && m % pp != 0) continue;
                for (Recompute rc : o.recompute) {
                  Layout l;
                  l.tp = tp; l.cp = cp; l.pp = pp; l.vpp = vpp; l.ep = ep; l.etp = etp; l.mbs = mbs;
                  l.recompute = rc;
                  Estimate e = cost.evaluate(l, /*explain=*/false);
                  ++r.evaluated;
                  if (!e.feasible) continue;
                  ++r.feasible;
                  if ((int)best.size() < k) {
                    best.push_back(std::move(e));
                    std::push_heap(best.begin(), best.end(), better);
                  } else if (e.step_time_s < best.front().step_time_s) {
                    std::pop_heap(best.begin(), best.end(), better);
                    best.back() = std::move(e);
                    std::push_heap(best.begin(), best.end(), better);
                  }
                }
              }
            }
          }
        }
      }
    }
  }
  std::sort_heap(best.begin(), best.end(), better);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (o.progress) o.progress(1.0);
  return r;
}

}  // namespace sy::plan
