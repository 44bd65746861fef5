// Shared fakes for the PreMoe unit tests: a pattern-store model description that needs no checkpoint.
#pragma once

#include "switchyard/prune/store.h"

namespace sy::test {

// Two MoE layers (decoder layers 0 and 1) of three experts.
inline prune::StoreModel fake_store_model() {
  prune::StoreModel m;
  m.fingerprint = "fnv1a64:0123456789abcdef";
  m.model_type = "mixtral";
  m.num_layers = 2;
  m.num_experts = 3;
  m.moe_layers = {0, 1};
  return m;
}

}  // namespace sy::test
