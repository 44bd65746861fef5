// Fault driver for the dist suite: under mpirun, the last rank "disappears" in the middle of a collective
// sequence, and every other rank must fail with a clear CommError within the timeout instead of hanging.
//   sy_dist_fault kill TIMEOUT_S   the last rank SIGKILLs itself before the second all-to-all
//   sy_dist_fault hang TIMEOUT_S   the last rank stops (SIGSTOP) there: alive but silent
// Surviving ranks print "rank R: error: <message> after T s" and exit 1 (this driver is a CLI, so it may
// exit; the library only throws). run_fault_test.sh checks the message and the elapsed time.
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "switchyard/parallel/comm.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: sy_dist_fault kill|hang TIMEOUT_S\n");
    return 2;
  }
  const bool hang = std::strcmp(argv[1], "hang") == 0;
  sy::parallel::CommOptions options;
  options.timeout_s = std::atof(argv[2]);
  auto world = sy::parallel::world_comm("mpi", options);
  const int p = world->size(), r = world->rank();
  std::vector<int64_t> counts(p, 1024);
  std::vector<float> send(1024 * p, float(r)), recv(1024 * p);
  const auto start = std::chrono::steady_clock::now();
  try {
    world->all_to_all_v(send.data(), counts, recv.data(), counts, sy::DType::kF32);  // everyone is alive
    if (r == p - 1) raise(hang ? SIGSTOP : SIGKILL);
    world->all_to_all_v(send.data(), counts, recv.data(), counts, sy::DType::kF32);
    world->barrier();
  } catch (const sy::Error& e) {
    const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::fprintf(stderr, "rank %d: error: %s after %.1f s\n", r, e.what(), t);
    return 1;
  }
  std::fprintf(stderr, "rank %d: the collective completed although a rank disappeared\n", r);
  return 0;
}
