// DeviceTokenDispatcher: expert-parallel dispatch and combine of GPU-resident tokens over a device
// communicator (the nccl backend), dropless, all-to-all. Rank r owns experts [r*E/EP, (r+1)*E/EP), as in
// TokenDispatcher. Layout first: the routing is turned into device row maps (cuda::make_dispatch_layout, no
// atomics), the per-expert counts are exchanged (one small all-to-all, one copy back to the host); then rows
// move as one NCCL block per peer (a destination's experts are contiguous in the permuted buffer) into a
// source-major buffer, which one device gather reorders into expert-major rows; combine mirrors it. Measured
// on two H200s: one block per (peer, expert) ran at 28% of NCCL's plain all-to-all of the same bytes, NCCL
// p2p costing per message; the local gathers run at HBM speed, far above NVLink. With int8_payload the
// dispatched rows travel as [f32 scale | hidden int8] (cuda::quantize_rows_int8, bitwise the CPU dispatcher's
// packing; CloudMatrix's INT8 dispatch) and arrive dequantised in the input's dtype; combine stays in the
// expert output's dtype. Only in CUDA builds with NCCL (SY_HAS_CUDA && SY_HAS_NCCL); elsewhere the
// constructor throws Unsupported. Not here: capacity dropping and padding (CPU dispatcher), overlap of the
// transfer with expert GEMMs.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "switchyard/core/tensor.h"
#include "switchyard/parallel/comm.h"

namespace sy::moe {

struct DeviceDispatchHandle;  // row maps and counts of one plan() (opaque: device tensors inside)

class DeviceTokenDispatcher {
 public:
  // comm: the EP group, a device communicator. num_experts must be a multiple of comm.size().
  DeviceTokenDispatcher(parallel::Comm& comm, int num_experts, bool int8_payload = false);
  ~DeviceTokenDispatcher();

  int num_local_experts() const { return num_local_; }
  int first_local_expert() const { return first_local_; }

  // expert: (tokens, top_k) int32 on the device; weight: (tokens, top_k) f32 on the device. Collective.
  std::shared_ptr<DeviceDispatchHandle> plan(const Tensor& expert, const Tensor& weight) const;
  // Rows received for this rank's local experts: tokens_per_local_expert[l] (host), and their prefix sums.
  static std::vector<int64_t> tokens_per_local_expert(const DeviceDispatchHandle& h);
  // x: (tokens, hidden) f32 or bf16 on the device -> (expert rows, hidden) same dtype, local expert by local
  // expert, within an expert source rank by source rank, within a rank in token order (through int8 with
  // int8_payload).
  Tensor dispatch(const Tensor& x, const DeviceDispatchHandle& h) const;
  // expert_out: (expert rows, hidden) f32 or bf16 in dispatch's order -> (tokens, hidden) f32: each token's
  // slots weighted and summed in slot order (deterministic).
  Tensor combine(const Tensor& expert_out, const DeviceDispatchHandle& h) const;

 private:
  parallel::Comm& comm_;
  int num_experts_, num_local_, first_local_;
  bool int8_ = false;
};

}  // namespace sy::moe
