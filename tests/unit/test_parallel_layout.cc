// ParallelLayout against Megatron Core: every case in tests/fixtures/layout (written by
// tools/make_layout_goldens.py with megatron-core's RankGenerator) must give identical groups, and every
// configuration Megatron rejects must be rejected with an InvalidArgument that names the rule.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "switchyard/core/error.h"
#include "switchyard/parallel/layout.h"
#include "test_util.h"

namespace sy::parallel {
namespace {

std::vector<std::filesystem::path> layout_fixtures() {
  std::vector<std::filesystem::path> out;
  std::filesystem::path root = std::filesystem::path(test::fixtures_dir()) / "layout";
  for (const auto& e : std::filesystem::directory_iterator(root)) {
    if (e.path().extension() == ".json") out.push_back(e.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

TEST(ParallelLayout, MatchesMegatronCoreOnEveryFixture) {
  auto files = layout_fixtures();
  ASSERT_GE(files.size(), 6u);
  int cases = 0, rejected = 0;
  for (const auto& path : files) {
    std::ifstream in(path);
    nlohmann::json j = nlohmann::json::parse(in);
    for (const auto& c : j["cases"]) {
      ParallelSizes s;
      s.world = c["world"];
      s.tp = c["tp"], s.cp = c["cp"], s.pp = c["pp"], s.etp = c["etp"], s.ep = c["ep"];
      s.order = c["order"];
      const std::string what = path.filename().string() + " " + c.dump().substr(0, 90);
      ParallelLayout layout(s);
      EXPECT_EQ(layout.dp(), c["dp_size"].get<int>()) << what;
      EXPECT_EQ(layout.edp(), c["edp_size"].get<int>()) << what;
      auto ours = layout.all_groups();
      for (const auto& [name, groups] : c["groups"].items()) {
        ASSERT_TRUE(ours.count(name)) << name;
        EXPECT_EQ(ours[name], groups.get<RankGroups>()) << name << " in " << what;
      }
      ++cases;
    }
    const std::string order = j["cases"].empty() ? "" : j["cases"][0]["order"].get<std::string>();
    for (const auto& r : j["rejected"]) {
      ParallelSizes s{r[0], r[1], r[2], r[3], r[4], r[5], order};
      EXPECT_THROW(ParallelLayout{s}, InvalidArgument) << r.dump() << " " << order;
      ++rejected;
    }
  }
  EXPECT_GT(cases, 1000);
  EXPECT_GT(rejected, 1000);
}

TEST(ParallelLayout, FoldedExampleFromThePaper) {
  // 8 ranks, attention TP2 x DP4 and MoE ETP1 x EP4 x EDP2, default order tp-cp-ep-dp-pp.
  ParallelLayout l({8, 2, 1, 1, 1, 4, "tp-cp-ep-dp-pp"});
  EXPECT_EQ(l.dp(), 4);
  EXPECT_EQ(l.edp(), 2);
  EXPECT_EQ(l.attention_groups("tp"), (RankGroups{{0, 1}, {2, 3}, {4, 5}, {6, 7}}));
  EXPECT_EQ(l.expert_groups("ep"), (RankGroups{{0, 1, 2, 3}, {4, 5, 6, 7}}));
  EXPECT_EQ(l.expert_groups("dp"), (RankGroups{{0, 4}, {1, 5}, {2, 6}, {3, 7}}));
  EXPECT_EQ(l.group_of("ep", 6), (std::vector<int>{4, 5, 6, 7}));
}

TEST(ParallelLayout, ErrorsNameTheRule) {
  auto message = [](ParallelSizes s) {
    try {
      ParallelLayout l(s);
    } catch (const InvalidArgument& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message({6, 4, 1, 1, 1, 1, "tp-cp-ep-dp-pp"}).find("W % (TP*CP*PP)"), std::string::npos);
  EXPECT_NE(message({8, 1, 1, 1, 1, 3, "tp-cp-ep-dp-pp"}).find("W % (ETP*EP*PP)"), std::string::npos);
  EXPECT_NE(message({8, 1, 1, 1, 1, 2, "tp-dp-pp"}).find("ep = 2 is missing"), std::string::npos);
  EXPECT_NE(message({8, 1, 1, 2, 1, 2, "tp-cp-ep-pp-dp"}).find("EDP must equal DP"), std::string::npos);
  EXPECT_NE(message({8, 1, 1, 1, 1, 1, "tp-xp-dp"}).find("unknown name \"xp\""), std::string::npos);
  EXPECT_NE(message({8, 0, 1, 1, 1, 1, "tp-dp"}).find("tp must be >= 1"), std::string::npos);
}

TEST(ParallelLayout, CliPrintsEveryGroupAsJson) {
  auto r = test::run_cli("layout --world 8 --tp 2 --ep 4 --etp 1 --format json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  nlohmann::json j = nlohmann::json::parse(r.output);
  for (const char* key : {"tp", "cp", "dp", "pp", "tp_cp", "ep", "etp", "edp"}) EXPECT_TRUE(j.contains(key)) << key;
  EXPECT_EQ(j["ep"], nlohmann::json::parse("[[0,1,2,3],[4,5,6,7]]"));
  auto bad = test::run_cli("layout --world 6 --tp 4");
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.output.find("error: [layout] rule W % (TP*CP*PP) == 0 violated"), std::string::npos) << bad.output;
}

}  // namespace
}  // namespace sy::parallel
