// Expert-parallel dispatch + combine of GPU-resident tokens over NCCL (moe::DeviceTokenDispatcher), next to
// NCCL moving the same bytes with a plain all-to-all (grouped ncclSend/ncclRecv through Comm::all_to_all_v),
// measured in the same run, and next to the device copy bandwidth. One GPU per rank:
//   mpirun -np N -x NCCL_NVLS_ENABLE=0 bench_nccl_dispatch [--tokens 4096] [--hidden 7168] [--experts 256]
//       [--top-k 8] [--iters 20]
// Without mpirun it runs one rank (every block goes to itself: a check of the path, not of a network).
// Payload bf16 both ways (DeepEP's setting); combine accumulates in f32. Identity experts. Then the same with
// INT8 dispatch rows ([f32 scale | hidden int8], CloudMatrix's setting; combine stays bf16), next to NCCL's
// all-to-all of those bytes.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "switchyard/kernels/device.h"
#include "switchyard/moe/device_dispatcher.h"
#include "switchyard/parallel/comm.h"
#if SY_HAS_CUDA
#include "switchyard/kernels/cuda_memory.h"
#endif

namespace {
double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }
}  // namespace

int main(int argc, char** argv) {
#if SY_HAS_CUDA
  using namespace sy;
  int64_t tokens = 4096, hidden = 7168;
  int experts = 256, top_k = 8, iters = 20;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() { return i + 1 < argc ? std::string(argv[++i]) : std::string(); };
    if (a == "--tokens") tokens = std::stoll(next());
    else if (a == "--hidden") hidden = std::stoll(next());
    else if (a == "--experts") experts = std::stoi(next());
    else if (a == "--top-k") top_k = std::stoi(next());
    else if (a == "--iters") iters = std::stoi(next());
    else {
      std::fprintf(stderr, "bench_nccl_dispatch: unknown flag %s\n", a.c_str());
      return 2;
    }
  }
  try {
    auto world = parallel::world_comm("auto");
    const int p = world->size(), r = world->rank();
    const int devices = static_cast<int>(cuda_devices().size());
    if (devices == 0) throw make_error<Unsupported>("bench", "no CUDA device");
    auto nccl = parallel::make_nccl_comm(*world, r % devices);
    // Routing: top_k distinct experts per token, uniform, seeded per rank; weights 1/top_k.
    std::mt19937_64 g(1234 + r);
    std::vector<int32_t> perm(experts);
    Tensor expert = Tensor::empty({tokens, top_k}, DType::kI32);
    Tensor weight = Tensor::full({tokens, top_k}, 1.f / top_k);
    for (int64_t t = 0; t < tokens; ++t) {
      for (int e = 0; e < experts; ++e) perm[e] = e;
      std::shuffle(perm.begin(), perm.end(), g);
      for (int k = 0; k < top_k; ++k) expert.i32()[t * top_k + k] = perm[k];
    }
    Tensor x = cuda::to_device(Tensor::full({tokens, hidden}, 0.5f).to(DType::kBF16));
    Tensor d_expert = cuda::to_device(expert), d_weight = cuda::to_device(weight);
    moe::DeviceTokenDispatcher d(*nccl, experts), d8(*nccl, experts, /*int8_payload=*/true);
    auto h = d.plan(d_expert, d_weight);
    auto h8 = d8.plan(d_expert, d_weight);
    const std::vector<int64_t> local = moe::DeviceTokenDispatcher::tokens_per_local_expert(*h);
    int64_t recv_rows = 0;
    for (int64_t n : local) recv_rows += n;
    // Peer: the same bytes through a plain all-to-all (rows out to each rank, rows back).
    std::vector<int64_t> send_counts(p, 0), recv_counts(p, 0), send_rows(p, 0), recv_rows_from(p, 0);
    {
      std::vector<int64_t> per_expert(experts, 0);
      for (int64_t a = 0; a < tokens * top_k; ++a) ++per_expert[expert.i32()[a]];
      for (int e = 0; e < experts; ++e) send_rows[e / (experts / p)] += per_expert[e];
      std::vector<int64_t> all = world->all_gather(send_rows);
      for (int s = 0; s < p; ++s) recv_rows_from[s] = all[static_cast<size_t>(s) * p + r];
      for (int s = 0; s < p; ++s) send_counts[s] = send_rows[s] * hidden, recv_counts[s] = recv_rows_from[s] * hidden;
    }
    // The INT8 peer: packed rows out (hidden + 4 bytes each), bf16 rows back.
    std::vector<int64_t> send8(p), recv8(p);
    for (int s = 0; s < p; ++s) send8[s] = send_rows[s] * (hidden + 4), recv8[s] = recv_rows_from[s] * (hidden + 4);
    Tensor a2a_send8 = Tensor::empty({tokens * top_k, hidden + 4}, DType::kU8, Device::kCuda);
    Tensor a2a_recv8 = Tensor::empty({std::max<int64_t>(recv_rows, 1), hidden + 4}, DType::kU8, Device::kCuda);
    Tensor a2a_send = Tensor::empty({tokens * top_k, hidden}, DType::kBF16, Device::kCuda);
    Tensor a2a_recv = Tensor::empty({std::max<int64_t>(recv_rows, 1), hidden}, DType::kBF16, Device::kCuda);
    auto run_ours = [&]() {
      Tensor rows = d.dispatch(x, *h);
      Tensor out = d.combine(rows, *h);
      cuda::synchronize();
    };
    auto run_peer = [&]() {
      nccl->all_to_all_v(a2a_send.raw(), send_counts, a2a_recv.raw(), recv_counts, DType::kBF16);
      nccl->all_to_all_v(a2a_recv.raw(), recv_counts, a2a_send.raw(), send_counts, DType::kBF16);
      cuda::synchronize();
    };
    auto run_ours8 = [&]() {
      Tensor rows = d8.dispatch(x, *h8);
      Tensor out = d8.combine(rows, *h8);
      cuda::synchronize();
    };
    auto run_peer8 = [&]() {
      nccl->all_to_all_v(a2a_send8.raw(), send8, a2a_recv8.raw(), recv8, DType::kU8);
      nccl->all_to_all_v(a2a_recv.raw(), recv_counts, a2a_send.raw(), send_counts, DType::kBF16);
      cuda::synchronize();
    };
    run_ours();
    run_peer();
    run_ours8();
    run_peer8();
    double best_ours = 1e30, best_peer = 1e30, plan_time = 1e30, best_ours8 = 1e30, best_peer8 = 1e30;
    for (int it = 0; it < iters; ++it) {
      world->barrier();
      double t0 = now();
      auto h2 = d.plan(d_expert, d_weight);
      cuda::synchronize();
      double t1 = now();
      run_ours();
      double t2 = now();
      world->barrier();
      double t3 = now();
      run_peer();
      double t4 = now();
      world->barrier();
      double t5 = now();
      run_ours8();
      double t6 = now();
      world->barrier();
      double t7 = now();
      run_peer8();
      double t8 = now();
      plan_time = std::min(plan_time, t1 - t0);
      best_ours = std::min(best_ours, t2 - t1);
      best_peer = std::min(best_peer, t4 - t3);
      best_ours8 = std::min(best_ours8, t6 - t5);
      best_peer8 = std::min(best_peer8, t8 - t7);
    }
    // Max over ranks of each rank's best.
    std::vector<float> times{static_cast<float>(best_ours), static_cast<float>(best_peer),
                             static_cast<float>(plan_time), static_cast<float>(best_ours8),
                             static_cast<float>(best_peer8)};
    world->all_reduce(times, parallel::ReduceOp::kMax);
    const double bytes = 2.0 * static_cast<double>(tokens) * top_k * hidden * 2;  // bf16 rows out and back
    const double bytes8 = static_cast<double>(tokens) * top_k * (hidden + 4 + 2.0 * hidden);  // int8 out, bf16 back
    const double copy_bw = cuda::copy_bandwidth(static_cast<size_t>(1) << 30);
    if (r == 0) {
      std::printf("bench_nccl_dispatch: %d rank(s), %lld tokens/rank, hidden %lld, %d experts, top-%d, bf16\n", p,
                  static_cast<long long>(tokens), static_cast<long long>(hidden), experts, top_k);
      std::printf("  bytes per rank (rows out + back): %.1f MB\n", bytes / 1e6);
      std::printf("  %-34s %9.3f ms %8.1f GB/s\n", "dispatch + combine (ours)", times[0] * 1e3, bytes / times[0] / 1e9);
      std::printf("  %-34s %9.3f ms %8.1f GB/s\n", "NCCL all-to-all, same bytes (peer)", times[1] * 1e3,
                  bytes / times[1] / 1e9);
      std::printf("  %-34s %9.3f ms\n", "plan (row maps + count exchange)", times[2] * 1e3);
      std::printf("  %-34s %8.0f GB/s\n", "device copy bandwidth (reference)", copy_bw / 1e9);
      std::printf("  ours / peer: %.0f%%\n", 100.0 * times[1] / times[0]);
      std::printf("  INT8 dispatch rows, bf16 combine: %.1f MB per rank\n", bytes8 / 1e6);
      std::printf("  %-34s %9.3f ms %8.1f GB/s\n", "dispatch int8 + combine (ours)", times[3] * 1e3,
                  bytes8 / times[3] / 1e9);
      std::printf("  %-34s %9.3f ms %8.1f GB/s\n", "NCCL all-to-all, same bytes (peer)", times[4] * 1e3,
                  bytes8 / times[4] / 1e9);
      std::printf("  int8 ours / peer: %.0f%%\n", 100.0 * times[4] / times[3]);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_nccl_dispatch: %s\n", e.what());
    return 1;
  }
  return 0;
#else
  (void)argc;
  (void)argv;
  std::fprintf(stderr, "bench_nccl_dispatch: this build has no CUDA backend\n");
  return 1;
#endif
}
