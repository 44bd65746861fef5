// PreMoe against transformers (fixtures from tools/make_premoe_goldens.py in tests/fixtures/premoe):
// TCESS from our router-logit observer equals the direct computation from transformers' router logits within
// 1e-5 (fp32 logits agree to ~1e-6); a checkpoint written by `prune build` and the in-memory pruned runtime both
// give transformers' logits on the Python-pruned checkpoint within 1e-4 relative (the fp32 golden tolerance).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "switchyard/io/npy.h"
#include "switchyard/model/model.h"
#include "switchyard/prune/taer.h"
#include "switchyard/prune/tcess.h"
#include "test_util.h"

namespace sy {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string premoe_dir() { return test::fixtures_dir() + "/premoe"; }
std::string golden_dir(const std::string& name) { return test::fixtures_dir() + "/golden/" + name; }

json read_json(const std::string& path) {
  std::ifstream in(path);
  return json::parse(in);
}

std::vector<std::string> fixture_names() {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(premoe_dir())) {
    if (e.path().extension() == ".json") out.push_back(e.path().stem().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<std::vector<int64_t>> sequences(const json& fixture, const json& c) {
  if (c["sequences"] == "prompt") return {fixture["prompt_ids"].get<std::vector<int64_t>>()};
  return fixture["sequences"].get<std::vector<std::vector<int64_t>>>();
}

std::string ids_text(const std::vector<int64_t>& ids) {
  std::string s;
  for (int64_t id : ids) {
    if (!s.empty()) s += ',';
    s += std::to_string(id);
  }
  return s;
}

std::vector<float> prompt_logits(Model& model, const std::vector<int64_t>& ids) {
  KvCache cache = model.new_cache(static_cast<int64_t>(ids.size()));
  return model.forward(ids, cache, true).to_f32_vector();
}

class PremoeReference : public ::testing::TestWithParam<std::string> {};

TEST_P(PremoeReference, TcessMatchesTransformersRouterLogits) {
  const json fx = read_json(premoe_dir() + "/" + GetParam() + ".json");
  auto model = Model::load(golden_dir(GetParam()));
  int checked = 0;
  for (const json& c : fx["cases"]) {
    const double gap = c["min_topk_gap"].is_null() ? 1.0 : c["min_topk_gap"].get<double>();
    const double thr_gap = c["min_threshold_gap"].is_null() ? 1.0 : c["min_threshold_gap"].get<double>();
    if (gap < 1e-5 || thr_gap < 1e-5) continue;  // a selection too close to call at fp32 accuracy
    prune::TcessOptions opt{c["top_k"].get<int>(), c["threshold"].get<double>()};
    prune::TaskScores s = prune::compute_tcess(*model, sequences(fx, c), opt);
    ASSERT_EQ(s.num_tokens, c["num_tokens"].get<int64_t>());
    ASSERT_EQ(s.layers.size(), c["layers"].size());
    for (size_t i = 0; i < s.layers.size(); ++i) {
      const json& ref = c["layers"][i];
      EXPECT_EQ(s.layers[i].layer, ref["layer"].get<int>());
      std::vector<double> want = ref["scores"].get<std::vector<double>>();
      ASSERT_EQ(s.layers[i].scores.size(), want.size());
      for (size_t e = 0; e < want.size(); ++e) {
        EXPECT_NEAR(s.layers[i].scores[e], want[e], 1e-5)
            << GetParam() << " k=" << opt.top_k << " r=" << opt.threshold << " layer " << ref["layer"] << " e " << e;
      }
    }
    ++checked;
  }
  EXPECT_GE(checked, 6);
}

TEST_P(PremoeReference, FirstLayerKeyIsFirstLayerScores) {
  const json fx = read_json(premoe_dir() + "/" + GetParam() + ".json");
  auto model = Model::load(golden_dir(GetParam()));
  const std::vector<int64_t> ids = fx["prompt_ids"].get<std::vector<int64_t>>();
  prune::TaskScores full = prune::compute_tcess(*model, {ids}, {});
  std::vector<double> key = prune::first_layer_scores(*model, ids, {});
  ASSERT_EQ(key.size(), full.layers.front().scores.size());
  for (size_t e = 0; e < key.size(); ++e) EXPECT_DOUBLE_EQ(key[e], full.layers.front().scores[e]);
  // The observer is removed again: a plain forward gives the golden logits.
  std::vector<float> got = prompt_logits(*model, ids);
  Tensor want = read_npy(golden_dir(GetParam()) + "/logits.npy");
  EXPECT_LT(test::relative_error(got, want.to_f32_vector()), 1e-4);
}

TEST_P(PremoeReference, AllLayerKeyIsEveryLayersScores) {
  const json fx = read_json(premoe_dir() + "/" + GetParam() + ".json");
  auto model = Model::load(golden_dir(GetParam()));
  const std::vector<int64_t> ids = fx["prompt_ids"].get<std::vector<int64_t>>();
  prune::TaskScores full = prune::compute_tcess(*model, {ids}, {2, 0.0});
  std::vector<double> want;
  for (const prune::LayerScores& ls : full.layers) want.insert(want.end(), ls.scores.begin(), ls.scores.end());
  // The key's pass stops at the last MoE router; it must not change any layer's scores.
  EXPECT_EQ(prune::retrieval_key(*model, ids, {2, 0.0}, prune::KeyLayers::kAll), want);
  EXPECT_EQ(prune::retrieval_key(*model, ids, {2, 0.0}, prune::KeyLayers::kFirst), full.layers.front().scores);
  std::vector<float> got = prompt_logits(*model, ids);
  Tensor golden = read_npy(golden_dir(GetParam()) + "/logits.npy");
  EXPECT_LT(test::relative_error(got, golden.to_f32_vector()), 1e-4);
}

TEST_P(PremoeReference, PrunedCheckpointMatchesTransformers) {
  const json fx = read_json(premoe_dir() + "/" + GetParam() + ".json");
  if (fx["pruned"].empty()) GTEST_SKIP() << "no pruned reference for " << GetParam();
  const std::string src = golden_dir(GetParam());
  const std::vector<int64_t> prompt = fx["prompt_ids"].get<std::vector<int64_t>>();
  test::TempDir tmp;
  {
    std::ofstream data(tmp.file("calib.txt"));
    for (const json& s : fx["sequences"]) data << ids_text(s.get<std::vector<int64_t>>()) << "\n";
  }
  const std::string store = tmp.file("store");
  test::CommandResult r = test::run_cli("prune profile --model " + src + " --task calib --data " +
                                        tmp.file("calib.txt") + " --store " + store);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const json& p : fx["pruned"]) {
    const int keep = p["keep"].get<int>(), ept = p["experts_per_token"].get<int>();
    const std::string out = tmp.file("pruned_" + std::to_string(keep) + "_" + std::to_string(ept));
    r = test::run_cli("prune build --model " + src + " --store " + store + " --task calib --keep " +
                      std::to_string(keep) + (ept ? " --experts-per-token " + std::to_string(ept) : "") +
                      " --output " + out);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    // Same experts as the Python reference chose.
    const json written = read_json(out + "/premoe.json");
    EXPECT_EQ(written["kept_experts"], p["kept_experts"]) << GetParam();
    const std::vector<float> want = read_npy(premoe_dir() + "/" + p["logits"].get<std::string>()).to_f32_vector();
    // The written checkpoint, loaded by switchyard.
    auto pruned = Model::load(out);
    EXPECT_EQ(pruned->config().moe.num_experts, keep);
    const double rel_ckpt = test::relative_error(prompt_logits(*pruned, prompt), want);
    EXPECT_LT(rel_ckpt, 1e-4) << GetParam() << " keep " << keep << " k " << ept;
    // The in-memory pruned runtime over the original checkpoint.
    prune::PrunedModel lazy = prune::load_pruned_for_task(src, store, "calib", keep, ept);
    EXPECT_EQ(lazy.model->config().moe.num_experts, keep);
    for (size_t l = 0; l < lazy.model->weights().layers.size(); ++l) {
      if (lazy.model->weights().layers[l].is_moe) {
        EXPECT_EQ(static_cast<int>(lazy.model->weights().layers[l].moe.experts.size()), keep);
      }
    }
    const double rel_lazy = test::relative_error(prompt_logits(*lazy.model, prompt), want);
    EXPECT_LT(rel_lazy, 1e-4) << GetParam() << " keep " << keep << " k " << ept;
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, PremoeReference, ::testing::ValuesIn(fixture_names()),
                         [](const ::testing::TestParamInfo<std::string>& i) { return i.param; });

TEST(PremoeReferenceCli, ScoresCommandMatchesTransformers) {
  const json fx = read_json(premoe_dir() + "/qwen2_moe.json");
  for (int k : {1, 2}) {
    const json* ref = nullptr;
    for (const json& c : fx["cases"]) {
      if (c["sequences"] == "prompt" && c["top_k"] == k && c["threshold"] == 0.0) ref = &c;
    }
    ASSERT_NE(ref, nullptr);
    test::CommandResult r = test::run_cli("prune scores --model " + golden_dir("qwen2_moe") + " --prompt-ids " +
                                          ids_text(fx["prompt_ids"].get<std::vector<int64_t>>()) + " --top-k " +
                                          std::to_string(k) + " --format json");
    ASSERT_EQ(r.exit_code, 0) << r.output;
    const json got = json::parse(r.output);
    ASSERT_EQ(got["layers"].size(), (*ref)["layers"].size());
    for (size_t i = 0; i < got["layers"].size(); ++i) {
      EXPECT_EQ(got["layers"][i]["layer"], (*ref)["layers"][i]["layer"]);
      std::vector<double> a = got["layers"][i]["scores"], b = (*ref)["layers"][i]["scores"];
      ASSERT_EQ(a.size(), b.size());
      for (size_t e = 0; e < a.size(); ++e) EXPECT_NEAR(a[e], b[e], 1e-5);
    }
  }
}

TEST(PremoeReferenceCli, GenerateWithStoreEqualsPrunedCheckpoint) {
  const json fx = read_json(premoe_dir() + "/deepseek_v3.json");
  const std::string src = golden_dir("deepseek_v3"), prompt = ids_text(fx["prompt_ids"].get<std::vector<int64_t>>());
  test::TempDir tmp;
  {
    std::ofstream a(tmp.file("a.txt")), b(tmp.file("b.txt"));
    a << prompt << "\n";
    b << "1 2 3 4 5 6 7 8 9 10 11 12\n";
  }
  const std::string store = tmp.file("store");
  ASSERT_EQ(test::run_cli("prune profile --model " + src + " --task a --data " + tmp.file("a.txt") + " --store " + store).exit_code, 0);
  ASSERT_EQ(test::run_cli("prune profile --model " + src + " --task b --data " + tmp.file("b.txt") + " --store " + store).exit_code, 0);
  test::CommandResult built = test::run_cli("prune build --model " + src + " --store " + store +
                                            " --task a --keep 4 --output " + tmp.file("out"));
  ASSERT_EQ(built.exit_code, 0) << built.output;
  test::CommandResult gen = test::run_cli("generate --model " + src + " --premoe-store " + store +
                                          " --keep 4 --max-new-tokens 6 --format json --prompt-ids " + prompt);
  ASSERT_EQ(gen.exit_code, 0) << gen.output;
  EXPECT_NE(gen.output.find("matched task \"a\""), std::string::npos) << gen.output;
  // The all-layer key retrieves the same task for the profiled prompt itself (distance 0).
  test::CommandResult all = test::run_cli("prune match --model " + src + " --store " + store +
                                          " --key-layers all --prompt-ids " + prompt);
  ASSERT_EQ(all.exit_code, 0) << all.output;
  const json matched = json::parse(all.output);
  EXPECT_EQ(matched["task"], "a");
  EXPECT_EQ(matched["distance"], 0.0);
  EXPECT_EQ(matched["key_layers"], "all");
  EXPECT_GT(matched["retrieval_ms"].get<double>(), 0.0);
  test::CommandResult ref = test::run_cli("generate --model " + tmp.file("out") +
                                          " --max-new-tokens 6 --format json --prompt-ids " + prompt);
  ASSERT_EQ(ref.exit_code, 0) << ref.output;
  EXPECT_NE(gen.output.find(ref.output.substr(0, ref.output.find('\n'))), std::string::npos)
      << gen.output << "\nvs\n" << ref.output;
}

}  // namespace
}  // namespace sy
