// Layout parsing and Megatron Core's folding rules: each violation is reported with its rule and a message
// that says what to change; legal layouts derive DP, EDP and the micro-batch count.
#include <gtest/gtest.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "switchyard/core/error.h"
#include "switchyard/plan/cost_model.h"

namespace sy::plan {
namespace {

TrainJob job(int gpus, int seq, int gbs) {
  TrainJob j;
  j.num_gpus = gpus;
  j.seq_len = seq;
  j.global_batch = gbs;
  return j;
}

// The one violation of `text`, checked for its rule and a phrase of its message.
void expect_violation(const PlanModel& m, const TrainJob& j, const std::string& text, const std::string& rule,
                      const std::string& phrase) {
  Layout l = parse_layout(text);
  auto v = check_layout(m, j, l);
  auto it = std::find_if(v.begin(), v.end(), [&](const Violation& x) { return x.rule == rule; });
  ASSERT_NE(it, v.end()) << text << " should violate " << rule;
  EXPECT_EQ(it->message.rfind("[plan] ", 0), 0u) << it->message;
  EXPECT_NE(it->message.find(phrase), std::string::npos) << it->message;
}

TEST(PlanLayout, ParsesAndFormats) {
  Layout l = parse_layout("tp=2,cp=1,pp=8,vpp=4,ep=8,etp=1,mbs=1,recompute=selective");
  EXPECT_EQ(l.tp, 2);
  EXPECT_EQ(l.pp, 8);
  EXPECT_EQ(l.vpp, 4);
  EXPECT_EQ(l.ep, 8);
  EXPECT_EQ(l.recompute, Recompute::kSelective);
  EXPECT_EQ(format_layout(l), "tp=2,cp=1,pp=8,vpp=4,ep=8,etp=1,mbs=1,recompute=selective");
}

TEST(PlanLayout, RejectsBadText) {
  EXPECT_THROW(parse_layout("tp=2,bogus=3"), InvalidArgument);
  EXPECT_THROW(parse_layout("tp=0"), InvalidArgument);
  EXPECT_THROW(parse_layout("tp=two"), InvalidArgument);
  EXPECT_THROW(parse_layout("tp=2,tp=4"), InvalidArgument);
  EXPECT_THROW(parse_layout("recompute=sometimes"), InvalidArgument);
  EXPECT_THROW(parse_layout("tp"), InvalidArgument);
  try {
    parse_layout("ep=8,ecp=2");
    FAIL();
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("attention only"), std::string::npos) << e.what();
  }
}

TEST(PlanLayout, LegalFoldingLayoutDerivesSizes) {
  PlanModel m = model_preset("Mixtral-8x22B");
  TrainJob j = job(128, 4096, 256);
  Layout l = parse_layout("tp=2,cp=2,pp=8,vpp=7,ep=8,etp=1,mbs=1");
  EXPECT_TRUE(check_layout(m, j, l).empty());
  EXPECT_EQ(l.dp, 4);               // 128 / (2 * 2 * 8)
  EXPECT_EQ(l.edp, 2);              // 128 / (1 * 8 * 8): EP spans ranks that attention uses for TP and CP
  EXPECT_EQ(l.num_microbatches, 64);
}

TEST(PlanLayout, EachRuleHasAClearMessage) {
  PlanModel mix = model_preset("Mixtral-8x7B");
  TrainJob j = job(64, 4096, 256);
  expect_violation(mix, j, "tp=3", "attention_mapping", "does not divide 64 GPUs");
  expect_violation(mix, j, "ep=8,etp=8,pp=2", "moe_mapping", "EDP");
  expect_violation(mix, j, "ep=16", "ep_experts", "does not divide the 8 experts");
  expect_violation(mix, j, "tp=64", "tp_heads", "attention heads");
  expect_violation(mix, j, "tp=16,pp=4", "tp_kv_heads", "key/value heads");
  expect_violation(model_preset("Qwen2-57B-A14B"), job(1024, 4096, 1024), "etp=1024", "etp_ffn", "expert width 2560");
  expect_violation(mix, j, "pp=64", "pp_layers", "exceeds the 32 layers");
  expect_violation(mix, j, "vpp=2", "vpp_needs_pp", "vpp>1 needs pp>1");
  expect_violation(mix, job(64, 4095, 256), "cp=2", "cp_seq", "2 x CP");
  expect_violation(mix, job(64, 4096, 100), "mbs=2", "global_batch", "not a multiple");
  expect_violation(mix, job(64, 4096, 16), "pp=4,vpp=2,ep=8", "interleave_microbatches", "multiple of PP");
  expect_violation(mix, j, "tp=2,sp=0", "sp_moe", "sequence parallelism");
  expect_violation(mix, j, "cp=2,ep=8,fold=0", "cp_with_ep", "CP and EP in one mapping");
  expect_violation(mix, j, "tp=2,etp=1,ep=2,fold=0", "fold_etp", "ETP must equal TP");
  expect_violation(mix, j, "dp=3", "dp", "disagrees");
  expect_violation(model_preset("GPT-3-175B"), job(64, 2048, 64), "ep=2", "ep_dense", "dense");
}

TEST(PlanLayout, MemoryOverCapacityIsReportedNotDropped) {
  CostModel cost(model_preset("Mixtral-8x7B"), cluster_preset("dgx-h100"), job(8, 4096, 256));
  Estimate e = cost.evaluate(parse_layout("ep=8,mbs=8"));
  EXPECT_FALSE(e.feasible);
  ASSERT_EQ(e.violations.size(), 1u);
  EXPECT_EQ(e.violations[0].rule, "memory");
  EXPECT_NE(e.violations[0].message.find("GiB per device"), std::string::npos);
  EXPECT_GT(e.step_time_s, 0);  // the estimate is still there for the user to read
}

TEST(PlanLayout, UnevenPipelineBlocks) {
  auto b = pipeline_blocks(61, 16, 2);  // Pangu Ultra MoE: 61 layers over 32 virtual stages
  ASSERT_EQ(b.size(), 32u);
  EXPECT_EQ(b.front().first, 0);
  EXPECT_EQ(b.back().second, 61);
  for (size_t i = 0; i < b.size(); ++i) {
    int n = b[i].second - b[i].first;
    EXPECT_TRUE(n == 1 || n == 2);
    if (i > 0) {
      EXPECT_EQ(b[i].first, b[i - 1].second);
    }
  }
  EXPECT_EQ(b.front().second - b.front().first, 1);  // extra layers avoid the embedding and head stages
}

TEST(PlanCluster, PresetsAndJson) {
  for (const auto& n : cluster_preset_names()) EXPECT_GT(cluster_preset(n).peak_bf16_tflops, 0) << n;
  EXPECT_THROW(cluster_preset("dgx-z9000"), InvalidArgument);
  ClusterSpec c = cluster_from_json(nlohmann::json::parse(R"({"preset":"dgx-h100","inter_gbps":25})"));
  EXPECT_EQ(c.inter_gbps, 25);
  EXPECT_EQ(c.peak_bf16_tflops, 989.4);
  EXPECT_THROW(cluster_from_json(nlohmann::json::parse(R"({"preset":"dgx-h100","intra_gbs":25})")), FormatError);
  EXPECT_THROW(model_preset("GPT-5"), InvalidArgument);
}

}  // namespace
}  // namespace sy::plan
