// JSON and text-table rendering of planner estimates; nothing is computed here beyond unit conversion.
#include "switchyard/plan/report.h"

#include <cstdio>
#include <nlohmann/json.hpp>
#include <sstream>

namespace sy::plan {

using nlohmann::json;

namespace {
constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;
double r4(double v) { return std::round(v * 1e4) / 1e4; }

json layout_json(const Layout& l) {
  return {{"tp", l.tp}, {"cp", l.cp}, {"dp", l.dp}, {"pp", l.pp}, {"vpp", l.vpp}, {"ep", l.ep}, {"etp", l.etp},
          {"edp", l.edp}, {"mbs", l.mbs}, {"num_microbatches", l.num_microbatches},
          {"recompute", recompute_name(l.recompute)}, {"distributed_optimizer", l.distributed_optimizer},
          {"sequence_parallel", l.sequence_parallel}, {"fold", l.fold}, {"string", format_layout(l)}};
}
}  // namespace

json estimate_to_json(const Estimate& e) {
  json j;
  j["layout"] = layout_json(e.layout);
  j["feasible"] = e.feasible;
  json v = json::array();
  for (const auto& x : e.violations) v.push_back({{"rule", x.rule}, {"message", x.message}});
  j["violations"] = v;
  if (e.step_time_s <= 0) return j;
  j["step_time_s"] = r4(e.step_time_s);
  j["mfu"] = r4(e.mfu);
  j["hfu"] = r4(e.hfu);
  j["tflops_per_gpu"] = std::round(e.tflops_per_gpu * 10) / 10;
  j["tokens_per_s_per_gpu"] = std::round(e.tokens_per_s_per_gpu * 10) / 10;
  j["memory_gib_per_gpu"] = std::round(e.memory_gib_per_gpu * 100) / 100;
  const TimeBreakdown& t = e.time;
  j["time_breakdown_s"] = {{"gemm", r4(t.gemm)}, {"attention", r4(t.attention)}, {"memory_bound", r4(t.memory_bound)},
                           {"recompute", r4(t.recompute)}, {"tp_comm", r4(t.tp_comm)}, {"cp_comm", r4(t.cp_comm)},
                           {"ep_comm", r4(t.ep_comm)}, {"pp_comm", r4(t.pp_comm)}, {"bubble", r4(t.bubble)},
                           {"dp_comm_exposed", r4(t.dp_comm)}, {"optimizer", r4(t.optimizer)}};
  const MemoryBreakdown& m = e.memory;
  auto g = [](double b) { return std::round(b / kGiB * 100) / 100; };
  j["memory_breakdown_gib"] = {{"stage", e.memory_stage}, {"weights", g(m.weights)}, {"grads", g(m.grads)},
                               {"optimizer", g(m.optimizer)}, {"activations", g(m.activations)},
                               {"logits", g(m.logits)}, {"dispatch", g(m.dispatch)}, {"reserved", g(m.reserved)}};
  return j;
}

std::string estimate_to_table(const Estimate& e) {
  std::ostringstream os;
  char buf[256];
  os << "layout  " << format_layout(e.layout) << "  (dp=" << e.layout.dp << ", edp=" << e.layout.edp
     << ", micro-batches=" << e.layout.num_microbatches << ")\n";
  for (const auto& v : e.violations) os << "violated  " << v.rule << ": " << v.message << "\n";
  if (e.step_time_s <= 0) return os.str();
  std::snprintf(buf, sizeof buf, "step %.3f s   MFU %.1f%%   %.1f TFLOP/s/GPU   %.0f tokens/s/GPU   memory %.1f GiB/GPU\n",
                e.step_time_s, 100 * e.mfu, e.tflops_per_gpu, e.tokens_per_s_per_gpu, e.memory_gib_per_gpu);
  os << buf;
  const TimeBreakdown& t = e.time;
  std::snprintf(buf, sizeof buf,
                "time  gemm %.3f  attention %.3f  memory-bound %.3f  recompute %.3f  tp %.3f  cp %.3f  ep %.3f  pp %.3f  "
                "bubble %.3f  dp %.3f  optimizer %.3f\n",
                t.gemm, t.attention, t.memory_bound, t.recompute, t.tp_comm, t.cp_comm, t.ep_comm, t.pp_comm, t.bubble,
                t.dp_comm, t.optimizer);
  os << buf;
  const MemoryBreakdown& m = e.memory;
  std::snprintf(buf, sizeof buf,
                "memory (stage %d, GiB)  weights %.1f  grads %.1f  optimizer %.1f  activations %.1f  logits %.1f  dispatch %.1f  "
                "reserved %.1f\n",
                e.memory_stage, m.weights / kGiB, m.grads / kGiB, m.optimizer / kGiB, m.activations / kGiB,
                m.logits / kGiB, m.dispatch / kGiB, m.reserved / kGiB);
  os << buf;
  return os.str();
}

std::string estimates_to_table(const std::vector<Estimate>& top) {
  std::ostringstream os;
  char buf[320];
  std::snprintf(buf, sizeof buf, "%4s %-64s %9s %6s %9s %10s %8s\n", "rank", "layout", "step_s", "MFU%", "TFLOP/s",
                "tok/s/GPU", "mem_GiB");
  os << buf;
  for (size_t i = 0; i < top.size(); ++i) {
    const Estimate& e = top[i];
    std::snprintf(buf, sizeof buf, "%4zu %-64s %9.3f %6.1f %9.1f %10.0f %8.1f\n", i + 1, format_layout(e.layout).c_str(),
                  e.step_time_s, 100 * e.mfu, e.tflops_per_gpu, e.tokens_per_s_per_gpu, e.memory_gib_per_gpu);
    os << buf;
  }
  return os.str();
}

}  // namespace sy::plan
