// PreMoe building blocks without a reference model: TCESS markers, PEP ranking and selection, the pattern
// store (round trip, replace, nearest key, checksum), calibration token files, and the router observer.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>

#include "switchyard/core/error.h"
#include "switchyard/io/npy.h"
#include "switchyard/prune/pep.h"
#include "switchyard/prune/pruned_checkpoint.h"
#include "switchyard/prune/store.h"
#include "switchyard/prune/tcess.h"
#include "switchyard/prune/token_file.h"
#include "premoe_fakes.h"
#include "test_util.h"

#include <nlohmann/json.hpp>

namespace sy {
namespace {

using prune::TcessOptions;

TEST(PremoeTcess, MarkersKeepTopKLogitsOnly) {
  // Two tokens, four experts: [t, e] = raw logit.
  const float z[] = {0.5f, 2.0f, -1.0f, 1.0f,  //
                     3.0f, 3.0f, 0.0f, -2.0f};
  std::vector<double> sum(4, 0.0);
  prune::accumulate_markers(z, 2, 4, TcessOptions{1, 0.0}, sum.data());
  EXPECT_EQ(sum, (std::vector<double>{3.0, 2.0, 0.0, 0.0}));  // the tie 3.0/3.0 goes to expert 0
  std::fill(sum.begin(), sum.end(), 0.0);
  prune::accumulate_markers(z, 2, 4, TcessOptions{2, 0.0}, sum.data());
  EXPECT_EQ(sum, (std::vector<double>{3.0, 5.0, 0.0, 1.0}));
}

TEST(PremoeTcess, ThresholdUsesSoftmaxOverAllExperts) {
  const float z[] = {0.0f, 0.0f, 0.0f, 0.0f};  // each expert has probability 0.25
  std::vector<double> sum(4, 0.0);
  prune::accumulate_markers(z, 1, 4, TcessOptions{2, 0.2}, sum.data());
  EXPECT_EQ(sum, (std::vector<double>{0.0, 0.0, 0.0, 0.0}));  // marked, but logits are 0
  const float y[] = {1.0f, 1.0f, 1.0f, 1.0f};
  prune::accumulate_markers(y, 1, 4, TcessOptions{2, 0.2}, sum.data());
  EXPECT_EQ(sum, (std::vector<double>{1.0, 1.0, 0.0, 0.0}));
  std::fill(sum.begin(), sum.end(), 0.0);
  prune::accumulate_markers(y, 1, 4, TcessOptions{2, 0.3}, sum.data());  // 0.25 <= 0.3: nothing marked
  EXPECT_EQ(sum, (std::vector<double>{0.0, 0.0, 0.0, 0.0}));
}

TEST(PremoeTcess, OptionsAreValidated) {
  EXPECT_THROW(prune::validate_tcess_options({0, 0.0}, 4), InvalidArgument);
  EXPECT_THROW(prune::validate_tcess_options({5, 0.0}, 4), InvalidArgument);
  EXPECT_THROW(prune::validate_tcess_options({1, 1.0}, 4), InvalidArgument);
  EXPECT_NO_THROW(prune::validate_tcess_options({4, 0.5}, 4));
}

TEST(PremoePep, RankingIsStableAndSelectionAscending) {
  EXPECT_EQ(prune::rank_experts({0.0, 2.0, 0.0, 3.0, -1.0}), (std::vector<int>{3, 1, 0, 2, 4}));
  ModelConfig cfg;
  cfg.model_type = "test";
  cfg.num_layers = 3;
  cfg.layer_is_moe = {false, true, true};
  cfg.moe.num_experts = 5;
  cfg.moe.top_k = 2;
  prune::ExpertPattern p = prune::select_experts(cfg, {{3, 1, 0, 2, 4}, {4, 0, 1, 2, 3}}, 3);
  EXPECT_EQ(p.kept, (std::vector<std::vector<int>>{{}, {0, 1, 3}, {0, 1, 4}}));
  EXPECT_EQ(p.keep(), 3);
  EXPECT_THROW(prune::check_keep(cfg, 6), InvalidArgument);     // more than the experts
  EXPECT_THROW(prune::check_keep(cfg, 1), InvalidArgument);     // fewer than top-k
  EXPECT_NO_THROW(prune::check_keep(cfg, 1, 1));                // top-k lowered to 1
  EXPECT_THROW(prune::check_keep(cfg, 3, 3), InvalidArgument);  // top-k cannot grow
}

TEST(PremoePep, PrunedConfigJsonRewritesExpertCountAndGroups) {
  nlohmann::json c = {{"model_type", "deepseek_v2"}, {"n_routed_experts", 8}, {"num_experts_per_tok", 2},
                      {"n_group", 4}, {"topk_group", 2}, {"topk_method", "group_limited_greedy"}};
  nlohmann::json p = prune::pruned_config_json(c, 4, 1);
  EXPECT_EQ(p["n_routed_experts"], 4);
  EXPECT_EQ(p["num_experts_per_tok"], 1);
  EXPECT_EQ(p["n_group"], 1);
  EXPECT_EQ(p["topk_group"], 1);
  EXPECT_EQ(p["topk_method"], "greedy");
  EXPECT_THROW(prune::pruned_config_json({{"model_type", "llama"}}, 4, 0), FormatError);
}

prune::StoredTask fake_task(const std::string& name, std::vector<double> key) {
  prune::TaskScores s;
  s.num_tokens = 4;
  s.layers = {{0, key}, {1, {0.5, 0.25, 0.125}}};
  return prune::make_task(name, s, "synthetic");
}

TEST(PremoeStore, RoundTripReplaceAndNearest) {
  test::TempDir tmp;
  const std::string dir = tmp.file("store");
  prune::TaskStore s = prune::TaskStore::open_or_create(dir, test::fake_store_model(), {1, 0.0});
  s.put(fake_task("math", {1.0, 0.0, 0.0}));
  s.put(fake_task("code", {0.0, 1.0, 0.0}));
  s.put(fake_task("math", {0.9, 0.1, 0.0}));  // replaces
  s.save();
  prune::TaskStore t = prune::TaskStore::load(dir);
  ASSERT_EQ(t.tasks().size(), 2u);
  EXPECT_EQ(t.tasks()[0].name, "code");  // sorted by name
  EXPECT_EQ(t.task("math").key, (std::vector<double>{0.9, 0.1, 0.0}));
  EXPECT_EQ(t.task("math").rankings[1], (std::vector<int>{0, 1, 2}));
  prune::TaskStore::Match m = t.nearest({0.8, 0.0, 0.1});
  EXPECT_EQ(m.task->name, "math");
  EXPECT_NEAR(m.distance, std::sqrt(0.01 + 0.01 + 0.01), 1e-12);
  EXPECT_EQ(t.nearest({0.1, 0.7, 0.0}).task->name, "code");
  EXPECT_THROW(t.task("poetry"), InvalidArgument);
  prune::StoreModel other = test::fake_store_model();
  other.fingerprint = "fnv1a64:fedcba9876543210";
  EXPECT_THROW(t.check_model(other), InvalidArgument);
  EXPECT_THROW(t.check_options({2, 0.0}), InvalidArgument);
  EXPECT_THROW(prune::TaskStore::open_or_create(dir, other, {1, 0.0}), InvalidArgument);
  // No temporary files are left next to the store.
  int files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) files += e.is_regular_file();
  EXPECT_EQ(files, 1);
}

TEST(PremoeStore, DamageIsReported) {
  test::TempDir tmp;
  const std::string dir = tmp.file("store"), file = dir + "/premoe_store.json";
  EXPECT_THROW(prune::TaskStore::load(dir), IoError);
  prune::TaskStore s = prune::TaskStore::open_or_create(dir, test::fake_store_model(), {1, 0.0});
  s.put(fake_task("math", {1.0, 0.0, 0.0}));
  s.save();
  std::string text;
  {
    std::ifstream in(file);
    text.assign(std::istreambuf_iterator<char>(in), {});
  }
  auto write = [&](const std::string& t) {
    std::ofstream out(file, std::ios::trunc);
    out << t;
  };
  write(text.substr(0, text.size() / 2));  // torn write
  EXPECT_THROW(prune::TaskStore::load(dir), FormatError);
  std::string flipped = text;
  flipped.replace(flipped.find("0.125"), 5, "0.126");  // a changed number: only the checksum sees it
  write(flipped);
  try {
    prune::TaskStore::load(dir);
    FAIL() << "expected FormatError";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("checksum"), std::string::npos) << e.what();
  }
  write("[1, 2, 3]");
  EXPECT_THROW(prune::TaskStore::load(dir), FormatError);
}

TEST(PremoeTokenFile, TextAndNpy) {
  test::TempDir tmp;
  {
    std::ofstream out(tmp.file("ids.txt"));
    out << "# calibration\n1 2,3\n\n  4\t5 # tail\n";
  }
  auto seqs = prune::read_token_file(tmp.file("ids.txt"));
  EXPECT_EQ(seqs, (std::vector<std::vector<int64_t>>{{1, 2, 3}, {4, 5}}));
  {
    std::ofstream out(tmp.file("bad.txt"));
    out << "1 2 x3\n";
  }
  EXPECT_THROW(prune::read_token_file(tmp.file("bad.txt")), FormatError);
  {
    std::ofstream out(tmp.file("empty.txt"));
    out << "# nothing\n";
  }
  EXPECT_THROW(prune::read_token_file(tmp.file("empty.txt")), FormatError);
  EXPECT_THROW(prune::read_token_file(tmp.file("missing.txt")), IoError);
  Tensor t = Tensor::empty({2, 3}, DType::kI64);
  for (int i = 0; i < 6; ++i) t.i64()[i] = 10 + i;
  write_npy(tmp.file("ids.npy"), t);
  EXPECT_EQ(prune::read_token_file(tmp.file("ids.npy")), (std::vector<std::vector<int64_t>>{{10, 11, 12}, {13, 14, 15}}));
  write_npy(tmp.file("f.npy"), Tensor::zeros({3}, DType::kF32));
  EXPECT_THROW(prune::read_token_file(tmp.file("f.npy")), FormatError);
}

TEST(PremoeObserver, SeesRawLogitsAndCanStop) {
  auto model = Model::load(test::fixtures_dir() + "/golden/qwen2_moe");  // layer 0 dense, 1-2 MoE
  std::vector<int> seen;
  model->set_router_observer([&](int layer, const Tensor& logits) {
    EXPECT_EQ(logits.size(0), 3);
    EXPECT_EQ(logits.size(1), 6);
    seen.push_back(layer);
    return true;
  });
  KvCache cache = model->new_cache(8);
  EXPECT_TRUE(model->forward({1, 2, 3}, cache, false).defined());
  EXPECT_EQ(seen, (std::vector<int>{1, 2}));
  EXPECT_EQ(cache.length(), 3);
  seen.clear();
  model->set_router_observer([&](int layer, const Tensor&) {
    seen.push_back(layer);
    return false;
  });
  EXPECT_FALSE(model->forward({4, 5}, cache, false).defined());
  EXPECT_EQ(seen, (std::vector<int>{1}));
  EXPECT_EQ(cache.length(), 3);  // a stopped pass appends nothing
  model->set_router_observer(nullptr);
}

}  // namespace
}  // namespace sy
