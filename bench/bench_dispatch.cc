// Token dispatch + combine throughput on CPU ranks, next to its peer measured in the same run: raw
// MPI_Alltoallv moving exactly the same bytes (the dispatch rows out, the f32 rows back), with no layout,
// packing or combining. Expert computation is left out (identity experts): this measures the dispatcher.
//   mpirun --oversubscribe --allow-run-as-root -np 4 -x SY_NUM_THREADS=1 bench_dispatch \
//       [--tokens 1024] [--hidden 1024] [--experts 32] [--top-k 4] [--iters 20] [--strategy alltoall|allgather]
//       [--capacity-factor 0] [--int8]
// Prints per-iteration times (max over ranks) and the dispatcher's share of the raw all-to-all speed.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "switchyard/moe/token_dispatcher.h"
#include "switchyard/parallel/comm.h"

#if SY_HAS_MPI
#include <mpi.h>

namespace {

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

}  // namespace

int main(int argc, char** argv) {
  int64_t tokens = 1024, hidden = 1024;
  int experts = 32, top_k = 4, iters = 20;
  sy::moe::DispatcherOptions opt;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() { return i + 1 < argc ? std::string(argv[++i]) : std::string(); };
    if (a == "--tokens") tokens = std::stoll(next());
    else if (a == "--hidden") hidden = std::stoll(next());
    else if (a == "--experts") experts = std::stoi(next());
    else if (a == "--top-k") top_k = std::stoi(next());
    else if (a == "--iters") iters = std::stoi(next());
    else if (a == "--strategy") opt.strategy = next() == "allgather" ? sy::moe::DispatchStrategy::kAllGather : sy::moe::DispatchStrategy::kAllToAll;
    else if (a == "--capacity-factor") opt.capacity_factor = std::stod(next());
    else if (a == "--int8") opt.int8_payload = true;
    else {
      std::fprintf(stderr, "bench_dispatch: unknown flag %s\n", a.c_str());
      return 2;
    }
  }
  auto world = sy::parallel::world_comm("mpi");
  const int p = world->size(), r = world->rank();
  // Routing: each token picks top_k distinct experts uniformly at random, with random weights.
  std::mt19937_64 g(1234 + r);
  sy::moe::Routing routing;
  routing.num_tokens = tokens;
  routing.top_k = top_k;
  std::vector<int32_t> perm(experts);
  for (int64_t t = 0; t < tokens; ++t) {
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), g);
    for (int k = 0; k < top_k; ++k) {
      routing.expert.push_back(perm[k]);
      routing.weight.push_back(1.f / top_k);
    }
  }
  sy::Tensor x = sy::Tensor::empty({tokens, hidden}, sy::DType::kF32);
  std::uniform_real_distribution<float> u(-1, 1);
  for (int64_t i = 0; i < x.numel(); ++i) x.f32()[i] = u(g);
  sy::moe::TokenDispatcher d(*world, experts, opt);

  double phase[3] = {0, 0, 0};  // plan, dispatch, combine: this rank's time summed over the timed iterations
  auto run_dispatcher = [&]() {
    double t0 = now();
    sy::moe::DispatchHandle h = d.plan(routing);
    double t1 = now();
    sy::Tensor in = d.dispatch(x, h);
    double t2 = now();
    sy::Tensor out = d.combine(in, h);  // identity experts
    double t3 = now();
    phase[0] += t1 - t0, phase[1] += t2 - t1, phase[2] += t3 - t2;
    return h;
  };
  sy::moe::DispatchHandle h = run_dispatcher();
  // Peer: MPI_Alltoallv of the same bytes, out (dispatch payload) and back (f32 rows).
  const int64_t rb = opt.int8_payload ? 4 + hidden : 4 * hidden;
  std::vector<int> sc(p), sd(p), rc(p), rd(p), bsc(p), bsd(p), brc(p), brd(p);
  int64_t so = 0, ro = 0;
  for (int s = 0; s < p; ++s) {
    sc[s] = static_cast<int>(h.send_counts[s] * rb), sd[s] = static_cast<int>(so), so += sc[s];
    rc[s] = static_cast<int>(h.recv_counts[s] * rb), rd[s] = static_cast<int>(ro), ro += rc[s];
  }
  int64_t bso = 0, bro = 0;
  for (int s = 0; s < p; ++s) {
    bsc[s] = static_cast<int>(h.recv_counts[s] * hidden * 4), bsd[s] = static_cast<int>(bso), bso += bsc[s];
    brc[s] = static_cast<int>(h.send_counts[s] * hidden * 4), brd[s] = static_cast<int>(bro), bro += brc[s];
  }
  std::vector<char> sbuf(so), rbuf(ro), bsbuf(bso), brbuf(bro);
  auto run_raw = [&]() {
    MPI_Alltoallv(sbuf.data(), sc.data(), sd.data(), MPI_BYTE, rbuf.data(), rc.data(), rd.data(), MPI_BYTE, MPI_COMM_WORLD);
    MPI_Alltoallv(bsbuf.data(), bsc.data(), bsd.data(), MPI_BYTE, brbuf.data(), brc.data(), brd.data(), MPI_BYTE,
                  MPI_COMM_WORLD);
  };
  run_raw();
  // Comm::all_to_all_v alone on the same bytes: the cost of the non-blocking, deadline-polled path.
  std::vector<int64_t> sc64(sc.begin(), sc.end()), rc64(rc.begin(), rc.end()), bsc64(bsc.begin(), bsc.end()),
      brc64(brc.begin(), brc.end());
  auto run_comm = [&]() {
    world->all_to_all_v(sbuf.data(), sc64, rbuf.data(), rc64, sy::DType::kU8);
    world->all_to_all_v(bsbuf.data(), bsc64, brbuf.data(), brc64, sy::DType::kU8);
  };
  double best_comm = 1e30;
  for (int it = 0; it < iters; ++it) {
    world->barrier();
    std::vector<double> t{now()};
    run_comm();
    t[0] = now() - t[0];
    MPI_Allreduce(MPI_IN_PLACE, t.data(), 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    best_comm = std::min(best_comm, t[0]);
  }
  // Interleave the two so that both see the same machine load; best of iters, max over ranks.
  double best_disp = 1e30, best_raw = 1e30;
  for (int it = 0; it < iters; ++it) {
    world->barrier();
    double t0 = now();
    run_dispatcher();
    std::vector<double> t{now() - t0};
    world->barrier();
    t0 = now();
    run_raw();
    t.push_back(now() - t0);
    MPI_Allreduce(MPI_IN_PLACE, t.data(), 2, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    best_disp = std::min(best_disp, t[0]);
    best_raw = std::min(best_raw, t[1]);
  }
  double bytes = static_cast<double>(so + bso);  // this rank's bytes out, both directions
  MPI_Allreduce(MPI_IN_PLACE, &bytes, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  if (r == 0) {
    std::printf("bench_dispatch: %d ranks, %lld tokens/rank, hidden %lld, %d experts, top-%d, %s%s%s\n", p,
                static_cast<long long>(tokens), static_cast<long long>(hidden), experts, top_k,
                opt.strategy == sy::moe::DispatchStrategy::kAllGather ? "all-gather" : "all-to-all",
                opt.capacity_factor > 0 ? ", capacity" : ", dropless", opt.int8_payload ? ", int8 payload" : "");
    std::printf("  bytes per rank (out + back, busiest rank): %.1f MB\n", bytes / 1e6);
    std::printf("  dispatch+combine : %8.3f ms  %7.2f GB/s\n", best_disp * 1e3, bytes / best_disp / 1e9);
    std::printf("  raw MPI_Alltoallv: %8.3f ms  %7.2f GB/s  (peer, same bytes, same run)\n", best_raw * 1e3,
                bytes / best_raw / 1e9);
    std::printf("  Comm::all_to_all_v: %7.3f ms  %7.2f GB/s  (same bytes through the Comm interface)\n",
                best_comm * 1e3, bytes / best_comm / 1e9);
    std::printf("  dispatcher / raw : %.0f%%\n", 100.0 * best_raw / best_disp);
    std::printf("  rank 0 mean phases: plan %.3f ms, dispatch %.3f ms, combine %.3f ms\n", phase[0] / (iters + 1) * 1e3,
                phase[1] / (iters + 1) * 1e3, phase[2] / (iters + 1) * 1e3);
  }
  return 0;
}
#else
int main() {
  std::fprintf(stderr, "bench_dispatch: this build has no MPI backend (install libopenmpi-dev, cmake -DSY_MPI=ON)\n");
  return 1;
}
#endif
