// switchyard layout --world W [--tp T --cp C --pp P --etp E1 --ep E2 --order ORDER] [--format json|text]
// Prints every process group of the attention mapping (TP x CP x DP x PP) and the MoE mapping
// (ETP x EP x EDP x PP) as lists of rank lists; see include/switchyard/parallel/layout.h.
#include <cstdio>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "switchyard/parallel/layout.h"

namespace sy::cli {

CommandRunner add_layout_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("layout", "Print the process groups of a parallel layout (Megatron Core order)");
  auto s = std::make_shared<parallel::ParallelSizes>();
  auto format = std::make_shared<std::string>("json");
  cmd->add_option("--world", s->world, "World size (number of ranks)")->required();
  cmd->add_option("--tp", s->tp, "Tensor parallel size (attention, dense)")->capture_default_str();
  cmd->add_option("--cp", s->cp, "Context parallel size")->capture_default_str();
  cmd->add_option("--pp", s->pp, "Pipeline parallel size")->capture_default_str();
  cmd->add_option("--etp", s->etp, "Expert tensor parallel size (0 = same as --tp)")->capture_default_str();
  cmd->add_option("--ep", s->ep, "Expert parallel size")->capture_default_str();
  cmd->add_option("--order", s->order, "Rank order, leftmost fastest")->capture_default_str();
  cmd->add_option("--format", *format, "json or text")->check(CLI::IsMember({"json", "text"}))->capture_default_str();
  return [s, format]() {
    parallel::ParallelLayout layout(*s);
    auto groups = layout.all_groups();
    if (*format == "json") {
      nlohmann::json j = nlohmann::json::object();
      j["world"] = s->world;
      j["order"] = layout.sizes().order;
      j["sizes"] = {{"tp", layout.sizes().tp}, {"cp", layout.sizes().cp}, {"dp", layout.dp()}, {"pp", layout.sizes().pp},
                    {"etp", layout.etp()}, {"ep", layout.sizes().ep}, {"edp", layout.edp()}};
      for (const auto& [name, g] : groups) j[name] = g;
      std::printf("%s\n", j.dump().c_str());
    } else {
      std::printf("world %d  order %s  TP %d CP %d DP %d PP %d | ETP %d EP %d EDP %d\n", s->world,
                  layout.sizes().order.c_str(), layout.sizes().tp, layout.sizes().cp, layout.dp(), layout.sizes().pp,
                  layout.etp(), layout.sizes().ep, layout.edp());
      for (const auto& [name, g] : groups) std::printf("%-10s %s\n", name.c_str(), nlohmann::json(g).dump().c_str());
    }
    return 0;
  };
}

}  // namespace sy::cli
