// GoogleTest entry point of the dist suite, run under mpirun: every rank runs every test on the world
// communicator (dist_world()); rank 0 prints the per-test listing, the others only their failures. A failure on any rank makes that
// rank, and so mpirun, exit non-zero.
#include <gtest/gtest.h>

#include "dist_util.h"

namespace sy::test {
std::shared_ptr<parallel::Comm>& dist_world() {
  static std::shared_ptr<parallel::Comm> world;
  return world;
}
}  // namespace sy::test

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  sy::parallel::CommOptions options;
  options.timeout_s = 60;
  sy::test::dist_world() = sy::parallel::world_comm("auto", options);
  if (sy::test::dist_world()->rank() != 0) ::testing::GTEST_FLAG(brief) = true;  // other ranks: failures only
  int rc = RUN_ALL_TESTS();
  // Every rank's verdict decides: a rank that passed still fails the job when a peer failed.
  std::vector<int32_t> failed{rc != 0 ? 1 : 0};
  sy::test::dist_world()->all_reduce(failed, sy::parallel::ReduceOp::kMax);
  return failed[0] ? 1 : 0;
}
