// Rendering of planner results as JSON and as a text table (what `switchyard plan` prints).
// Formatting only: no estimates are computed here.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "switchyard/plan/cost_model.h"

namespace sy::plan {

nlohmann::json estimate_to_json(const Estimate& e);
std::string estimate_to_table(const Estimate& e);
std::string estimates_to_table(const std::vector<Estimate>& top);

}  // namespace sy::plan
