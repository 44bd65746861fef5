// `switchyard train` through the CLI: JSON logs, checkpoints loadable by `generate`, bit-exact resume after
// kill -9 at arbitrary moments (mid-step or mid-save), auxiliary losses, and bad input.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <cmath>
#include <map>
#include <sstream>

#include "test_util.h"

namespace sy {
namespace {

namespace fs = std::filesystem;

std::string model_dir() { return test::fixtures_dir() + "/golden/mixtral"; }

// Loss lines (as printed, so comparisons are exact) keyed by step.
std::map<int64_t, std::string> losses_of(const std::string& output) {
  std::map<int64_t, std::string> out;
  std::istringstream in(output);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] != '{') continue;
    nlohmann::json j = nlohmann::json::parse(line);
    out[j["step"].get<int64_t>()] = j["loss"].dump() + " " + j["grad_norm"].dump();
  }
  return out;
}

std::string train_args(const std::string& data, int steps) {
  return "train --model " + model_dir() + " --data-ids " + data + " --steps " + std::to_string(steps) +
         " --batch-size 1 --seq-len 8 --lr 1e-3 --log-format json";
}

// data.npy of the 20-step AdamW fixture holds 20 x 2 rows of 9 ids: 40 steps at batch 1.
std::string fixture_ids() { return test::fixtures_dir() + "/train/adamw_mixtral/data.npy"; }

TEST(TrainCli, JsonLogAndCheckpointLoadableByGenerate) {
  test::TempDir tmp;
  auto r = test::run_cli(train_args(fixture_ids(), 3) + " --save " + tmp.file("ck") + " 2>/dev/null");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto losses = losses_of(r.output);
  EXPECT_EQ(losses.size(), 3u);
  nlohmann::json first = nlohmann::json::parse(r.output.substr(0, r.output.find('\n')));
  for (const char* key : {"step", "loss", "aux_loss", "grad_norm", "lr", "tokens_per_s", "expert_load"}) {
    EXPECT_TRUE(first.contains(key)) << key;
  }
  std::ifstream latest(tmp.file("ck/latest"));
  std::string name;
  latest >> name;
  EXPECT_EQ(name, "step-3");
  auto g = test::run_cli("generate --model " + tmp.file("ck/step-3") + " --prompt-ids 1,2,3 --max-new-tokens 3 --format json");
  EXPECT_EQ(g.exit_code, 0) << g.output;
}

TEST(TrainCli, ResumeAfterKillReproducesTheUninterruptedRun) {
  const int steps = 40;
  test::TempDir tmp;
  auto full = test::run_cli(train_args(fixture_ids(), steps) + " 2>/dev/null");
  ASSERT_EQ(full.exit_code, 0) << full.output;
  auto reference = losses_of(full.output);
  ASSERT_EQ(reference.size(), static_cast<size_t>(steps));
  for (const char* delay : {"0.05", "0.2", "0.4"}) {
    std::string ck = tmp.file(std::string("ck-") + delay);
    // Checkpoint every step so that the kill lands in a step or in a save, wherever it falls.
    std::string cmd = "sh -c '" + test::cli_path() + " " + train_args(fixture_ids(), steps) + " --save " + ck +
                      " --save-every 1 >/dev/null 2>&1 & pid=$!; sleep " + delay + "; kill -9 $pid 2>/dev/null; wait'";
    ASSERT_EQ(std::system(cmd.c_str()) == -1, false);
    if (!fs::exists(ck + "/latest")) continue;  // killed before the first checkpoint
    auto resumed = test::run_cli(train_args(fixture_ids(), steps) + " --save " + ck + " --resume " + ck + " 2>/dev/null");
    ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
    for (const auto& [step, line] : losses_of(resumed.output)) EXPECT_EQ(line, reference.at(step)) << "step " << step;
  }
}

TEST(TrainCli, LeftoverPartialSaveIsIgnored) {
  test::TempDir tmp;
  std::string ck = tmp.file("ck");
  auto a = test::run_cli(train_args(fixture_ids(), 2) + " --save " + ck + " 2>/dev/null");
  ASSERT_EQ(a.exit_code, 0) << a.output;
  // What a crash in the middle of writing step 3 leaves behind: a temporary folder with truncated files.
  fs::create_directories(ck + "/.tmp-step-3-999");
  std::ofstream(ck + "/.tmp-step-3-999/model.safetensors") << "trunc";
  auto b = test::run_cli(train_args(fixture_ids(), 4) + " --save " + ck + " --resume " + ck + " 2>/dev/null");
  ASSERT_EQ(b.exit_code, 0) << b.output;
  auto losses = losses_of(b.output);
  EXPECT_EQ(losses.begin()->first, 3);
}

// Recompute modes change memory, not numbers: the logged losses and gradient norms are identical and the
// activations held for backward shrink.
TEST(TrainCli, RecomputeModesGiveIdenticalLossesWithLessMemory) {
  std::map<int64_t, std::string> reference;
  int64_t previous_saved = 0;
  for (const char* mode : {"none", "selective", "full"}) {
    auto r = test::run_cli(train_args(fixture_ids(), 3) + " --recompute " + mode + " 2>/dev/null");
    ASSERT_EQ(r.exit_code, 0) << r.output;
    auto losses = losses_of(r.output);
    if (reference.empty()) reference = losses;
    EXPECT_EQ(losses, reference) << mode;
    nlohmann::json first = nlohmann::json::parse(r.output.substr(0, r.output.find('\n')));
    const int64_t saved = first["saved_activation_bytes"].get<int64_t>();
    EXPECT_GT(saved, 0) << mode;
    EXPECT_GE(first["peak_activation_bytes"].get<int64_t>(), saved) << mode;
    if (previous_saved > 0) EXPECT_LT(saved, previous_saved) << mode;
    previous_saved = saved;
  }
}

// gpt-oss trains in the per-expert layout and saves the fused Hugging Face layout: the checkpoint loads in
// `generate`, and resuming from it reproduces the uninterrupted run.
TEST(TrainCli, GptOssCheckpointRoundTripsAndResumes) {
  test::TempDir tmp;
  const std::string args = "train --model " + test::fixtures_dir() + "/golden/gpt_oss --data-ids " + fixture_ids() +
                           " --batch-size 1 --seq-len 8 --lr 1e-3 --log-format json";
  auto full = test::run_cli(args + " --steps 3 2>/dev/null");
  ASSERT_EQ(full.exit_code, 0) << full.output;
  auto first = test::run_cli(args + " --steps 1 --save " + tmp.file("ck") + " 2>/dev/null");
  ASSERT_EQ(first.exit_code, 0) << first.output;
  auto rest = test::run_cli(args + " --steps 3 --resume " + tmp.file("ck") + " 2>/dev/null");
  ASSERT_EQ(rest.exit_code, 0) << rest.output;
  auto reference = losses_of(full.output), resumed = losses_of(rest.output);
  ASSERT_EQ(resumed.size(), 2u);
  for (const auto& [step, line] : resumed) EXPECT_EQ(line, reference.at(step)) << "step " << step;
  auto inspect = test::run_cli("inspect --model " + tmp.file("ck/step-1") + " --format json");
  ASSERT_EQ(inspect.exit_code, 0) << inspect.output;
  auto g = test::run_cli("generate --model " + tmp.file("ck/step-1") + " --prompt-ids 1,2,3 --max-new-tokens 3 --format json");
  EXPECT_EQ(g.exit_code, 0) << g.output;
  // The saved file holds the fused tensors transformers expects, not the trainer's per-expert ones.
  std::ifstream f(tmp.file("ck/step-1/model.safetensors"), std::ios::binary);
  std::string header(8192, '\0');
  f.read(header.data(), static_cast<std::streamsize>(header.size()));
  EXPECT_NE(header.find("mlp.experts.gate_up_proj\""), std::string::npos);
  EXPECT_EQ(header.find("experts.0.gate_proj"), std::string::npos);
}

TEST(TrainCli, AuxiliaryLossesAreReportedAndWeighted) {
  auto r = test::run_cli(train_args(fixture_ids(), 2) + " --aux-loss-coef 0.01 --z-loss-coef 0.001 2>/dev/null");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  nlohmann::json j = nlohmann::json::parse(r.output.substr(0, r.output.find('\n')));
  EXPECT_GT(j["aux_loss"].get<double>(), 0.0);
  EXPECT_GT(j["z_loss"].get<double>(), 0.0);
}

TEST(TrainCli, BadInputIsAClearError) {
  test::TempDir tmp;
  auto r = test::run_cli(train_args(fixture_ids(), 1000));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("needs"), std::string::npos) << r.output;
  r = test::run_cli("train --data-ids " + fixture_ids() + " --steps 1");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("--model"), std::string::npos) << r.output;
  r = test::run_cli(train_args(fixture_ids(), 1) + " --weight-decay=-1");
  EXPECT_EQ(r.exit_code, 1);
  r = test::run_cli(train_args(fixture_ids(), 1) + " --recompute some");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("--recompute"), std::string::npos) << r.output;
  r = test::run_cli(train_args(fixture_ids(), 1) + " --resume " + tmp.file("nothing"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("no checkpoint"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace sy

#include "switchyard/train/trainable_model.h"

namespace sy {
namespace {

// Two documents packed into one row with a boundary give the same loss and gradients as two separate rows.
TEST(TrainPacking, PackedDocumentsEqualSeparateSequences) {
  std::vector<int64_t> a = {5, 9, 17, 3, 44}, b = {8, 2, 61, 7};
  std::vector<int64_t> ta = {9, 17, 3, 44, 1}, tb = {2, 61, 7, 30};
  auto separate = train::TrainableModel::from_dir(model_dir());
  auto packed = train::TrainableModel::from_dir(model_dir());
  train::StepStats s1 = separate->forward_backward({a, b}, {ta, tb}, {});
  std::vector<int64_t> ab = a, tab = ta;
  ab.insert(ab.end(), b.begin(), b.end());
  tab.insert(tab.end(), tb.begin(), tb.end());
  std::vector<std::vector<int64_t>> starts = {{static_cast<int64_t>(a.size())}};
  train::StepStats s2 = packed->forward_backward({ab}, {tab}, {}, &starts);
  EXPECT_NEAR(s1.loss, s2.loss, 1e-6);
  for (auto& [name, g] : separate->grads()) {
    double err = test::relative_error(packed->grads().at(name).to_f32_vector(), g.to_f32_vector());
    EXPECT_LT(err, 1e-5) << name;
  }
  // Without the boundary the second document sees the first: a different loss.
  auto leaky = train::TrainableModel::from_dir(model_dir());
  EXPECT_GT(std::fabs(leaky->forward_backward({ab}, {tab}, {}).loss - s1.loss), 1e-4);
}

}  // namespace
}  // namespace sy

namespace sy {
namespace {

TEST(TrainCli, DataPrepareThenTrainOnPackedDocuments) {
  test::TempDir tmp;
  for (int d = 0; d < 6; ++d) {
    std::ofstream(tmp.file("doc" + std::to_string(d) + ".txt")) << "document " << d << " says hello world " << d * 7 << "\n";
  }
  std::string tokenizer = test::fixtures_dir() + "/tokenizers/nfd_whitespace/tokenizer.json";
  std::string inputs;
  for (int d = 0; d < 6; ++d) inputs += " " + tmp.file("doc" + std::to_string(d) + ".txt");
  auto p = test::run_cli("data prepare --tokenizer " + tokenizer + " --input" + inputs + " --output " + tmp.file("d.npy") +
                         " --eos-id 0");
  ASSERT_EQ(p.exit_code, 0) << p.output;
  // The built-in model's weights have a 512-token vocabulary, enough for this 501-token tokenizer.
  auto t = test::run_cli("train --model " + model_dir() + " --data " + tmp.file("d.npy") +
                         " --eos-id 0 --steps 2 --batch-size 1 --seq-len 8 --log-format json 2>/dev/null");
  // The mixtral fixture has a 128-token vocabulary: ids beyond it are reported, not crashed on.
  if (t.exit_code != 0) EXPECT_NE(t.output.find("outside the vocabulary"), std::string::npos) << t.output;
  auto bad = test::run_cli("data prepare --tokenizer " + tokenizer + " --input " + tmp.file("missing.txt") +
                           " --output " + tmp.file("x.npy") + " --eos-id 0");
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.output.find("cannot read"), std::string::npos) << bad.output;
}

}  // namespace
}  // namespace sy
