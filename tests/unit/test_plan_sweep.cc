// Model-shape sweep: every shape stays on the parameter budget, results are ranked by throughput, and a
// dense base model is refused with a clear message.
#include <gtest/gtest.h>

#include "switchyard/core/error.h"
#include "switchyard/plan/sweep.h"

namespace sy::plan {
namespace {

TEST(PlanSweep, ShapesStayOnBudgetAndAreRanked) {
  TrainJob job;
  job.num_gpus = 64;
  job.seq_len = 4096;
  job.global_batch = 256;
  SweepOptions o;
  o.top_k = 50;
  o.layer_scales = {0.75, 1.0};
  o.expert_scales = {1.0, 2.0};
  PlanModel base = model_preset("Qwen2-57B-A14B");
  SweepResult r = sweep_shapes(base, cluster_preset("dgx-h100"), job, o);
  ASSERT_GT(r.shapes, 4);
  ASSERT_FALSE(r.best.empty());
  const double budget = double(count_params(base).total);
  for (size_t i = 0; i < r.best.size(); ++i) {
    EXPECT_NEAR(r.best[i].params.total / budget, 1.0, 0.01) << r.best[i].model.name;
    EXPECT_TRUE(r.best[i].best.feasible);
    if (i > 0) {
      EXPECT_GE(r.best[i - 1].best.tokens_per_s_per_gpu, r.best[i].best.tokens_per_s_per_gpu);
    }
  }
}

TEST(PlanSweep, DenseBaseIsRefused) {
  TrainJob job;
  job.num_gpus = 64;
  job.seq_len = 2048;
  job.global_batch = 64;
  EXPECT_THROW(sweep_shapes(model_preset("GPT-3-175B"), cluster_preset("selene-a100"), job, SweepOptions{}), InvalidArgument);
}

}  // namespace
}  // namespace sy::plan
