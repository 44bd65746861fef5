// PreMoe retrieval keys: PreMoe's first-MoE-layer key and the all-layer key (every MoE layer's TCESS,
// concatenated) in the pattern store's nearest-key search. (Kept out of test_premoe_store.cc: in that file
// this test made GCC 12.2 with -march=native (AVX-512) build another test's vector constant {1, 1, 0, 0} as a
// broadcast of 1.0, so the other test failed; the code under test was not involved.)
#include <gtest/gtest.h>

#include <cmath>

#include "switchyard/core/error.h"
#include "switchyard/prune/store.h"
#include "switchyard/prune/tcess.h"
#include "premoe_fakes.h"
#include "test_util.h"

namespace sy {
namespace {

TEST(PremoeStore, AllLayerKeysConcatenateEveryMoeLayer) {
  test::TempDir tmp;
  prune::TaskStore s = prune::TaskStore::open_or_create(tmp.file("store"), test::fake_store_model(), {1, 0.0});
  // Equal first-layer keys; only the second MoE layer tells the tasks apart.
  prune::TaskScores a, b;
  a.num_tokens = b.num_tokens = 4;
  a.layers = {{0, {1.0, 0.0, 0.0}}, {1, {0.0, 2.0, 0.0}}};
  b.layers = {{0, {1.0, 0.0, 0.0}}, {1, {0.0, 0.0, 2.0}}};
  s.put(prune::make_task("alpha", a, "synthetic"));
  s.put(prune::make_task("beta", b, "synthetic"));
  EXPECT_EQ(s.task("beta").key_for(prune::KeyLayers::kFirst), b.layers[0].scores);
  std::vector<double> both = b.layers[0].scores;
  both.insert(both.end(), b.layers[1].scores.begin(), b.layers[1].scores.end());
  EXPECT_EQ(s.task("beta").key_for(prune::KeyLayers::kAll), both);
  const std::vector<double> query = {1.0, 0.0, 0.0, 0.0, 0.5, 1.5};
  prune::TaskStore::Match m = s.nearest(query, prune::KeyLayers::kAll);
  EXPECT_EQ(m.task->name, "beta");
  EXPECT_NEAR(m.distance, std::sqrt(0.25 + 0.25), 1e-12);
  EXPECT_EQ(s.nearest({1.0, 0.0, 0.0}, prune::KeyLayers::kFirst).task->name, "alpha");  // a tie: first by name
  EXPECT_EQ(prune::parse_key_layers("all"), prune::KeyLayers::kAll);
  EXPECT_EQ(prune::parse_key_layers("first"), prune::KeyLayers::kFirst);
  EXPECT_THROW(prune::parse_key_layers("last"), InvalidArgument);
}

}  // namespace
}  // namespace sy
