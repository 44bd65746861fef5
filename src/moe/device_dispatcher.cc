// DeviceTokenDispatcher (see device_dispatcher.h): device row maps from the CUDA dispatch ops, counts over the
// device communicator, rows moved by Comm::exchange blocks between device buffers.
#include "switchyard/moe/device_dispatcher.h"

#include "switchyard/core/error.h"

#if SY_HAS_CUDA && SY_HAS_NCCL
#include "switchyard/kernels/cuda_ops.h"
#endif

namespace sy::moe {

#if SY_HAS_CUDA && SY_HAS_NCCL

struct DeviceDispatchHandle {
  cuda::DeviceDispatchLayout layout;
  Tensor weight;                         // (tokens, top_k) f32, device
  std::vector<int64_t> send_offsets;     // (experts + 1,): permuted rows [off[e], off[e+1]) go to expert e
  std::vector<int64_t> recv_per_expert;  // (ranks, local experts): rows from rank s for local expert l
  std::vector<int64_t> block_row;        // (ranks, local experts): first expert-major row of block (s, l)
  std::vector<int64_t> per_local;        // (local experts,): rows received per local expert
  int64_t expert_rows = 0;
};

DeviceTokenDispatcher::DeviceTokenDispatcher(parallel::Comm& comm, int num_experts)
    : comm_(comm), num_experts_(num_experts) {
  SY_REQUIRE(comm.device_memory(), InvalidArgument, "dispatch", "the device dispatcher needs a device ",
             "communicator (nccl), not ", comm.backend());
  SY_REQUIRE(num_experts > 0 && num_experts % comm.size() == 0, InvalidArgument, "dispatch", num_experts,
             " experts cannot be split evenly over ", comm.size(), " expert-parallel ranks");
  num_local_ = num_experts / comm.size();
  first_local_ = comm.rank() * num_local_;
}

DeviceTokenDispatcher::~DeviceTokenDispatcher() = default;

std::shared_ptr<DeviceDispatchHandle> DeviceTokenDispatcher::plan(const Tensor& expert, const Tensor& weight) const {
  SY_REQUIRE(expert.device() == Device::kCuda && weight.device() == Device::kCuda && weight.dtype() == DType::kF32 &&
                 weight.shape() == expert.shape(),
             InvalidArgument, "dispatch", "expert ", expert.describe(), " and weight ", weight.describe(),
             " must be device tensors of one shape (weight f32)");
  const int ranks = comm_.size();
  auto h = std::make_shared<DeviceDispatchHandle>();
  h->layout = cuda::make_dispatch_layout(expert, num_experts_);
  h->weight = weight;
  // Rank r receives, from every source s, the counts of r's local experts.
  Tensor recv = Tensor::empty({int64_t{ranks} * num_local_}, DType::kI64, Device::kCuda);
  std::vector<int64_t> each(ranks, num_local_);
  comm_.all_to_all_v(h->layout.tokens_per_expert.raw(), each, recv.raw(), each, DType::kI64);
  Tensor offsets = cuda::to_host(h->layout.offsets), counts = cuda::to_host(recv);
  h->send_offsets.assign(offsets.i64(), offsets.i64() + num_experts_ + 1);
  h->recv_per_expert.assign(counts.i64(), counts.i64() + counts.numel());
  h->block_row.assign(h->recv_per_expert.size(), 0);
  int64_t row = 0;
  h->per_local.assign(num_local_, 0);
  for (int l = 0; l < num_local_; ++l) {
    for (int s = 0; s < ranks; ++s) {
      h->block_row[s * num_local_ + l] = row;
      row += h->recv_per_expert[s * num_local_ + l];
      h->per_local[l] += h->recv_per_expert[s * num_local_ + l];
    }
  }
  h->expert_rows = row;
  return h;
}

std::vector<int64_t> DeviceTokenDispatcher::tokens_per_local_expert(const DeviceDispatchHandle& h) {
  return h.per_local;
}

Tensor DeviceTokenDispatcher::dispatch(const Tensor& x, const DeviceDispatchHandle& h) const {
  SY_REQUIRE(x.device() == Device::kCuda && x.dim() == 2 && x.size(0) == h.layout.num_tokens &&
                 (x.dtype() == DType::kF32 || x.dtype() == DType::kBF16),
             InvalidArgument, "dispatch", "x ", x.describe(), " for ", h.layout.num_tokens, " tokens");
  const int ranks = comm_.size();
  const int64_t hidden = x.size(1);
  Tensor permuted = Tensor::empty({h.layout.row_assignment.numel(), hidden}, x.dtype(), Device::kCuda);
  cuda::permute(x, h.layout, permuted);
  Tensor out = Tensor::empty({h.expert_rows, hidden}, x.dtype(), Device::kCuda);
  const int64_t es = static_cast<int64_t>(dtype_size(x.dtype()));
  std::vector<parallel::SendBlock> sends;
  for (int e = 0; e < num_experts_; ++e) {
    const int64_t n = h.send_offsets[e + 1] - h.send_offsets[e];
    if (n > 0) sends.push_back({e / num_local_, static_cast<char*>(permuted.raw()) + h.send_offsets[e] * hidden * es, n * hidden});
  }
  std::vector<parallel::RecvBlock> recvs;
  for (int s = 0; s < ranks; ++s) {
    for (int l = 0; l < num_local_; ++l) {
      const int64_t n = h.recv_per_expert[s * num_local_ + l];
      if (n > 0) recvs.push_back({s, static_cast<char*>(out.raw()) + h.block_row[s * num_local_ + l] * hidden * es, n * hidden});
    }
  }
  comm_.exchange(sends, recvs, x.dtype());
  return out;
}

Tensor DeviceTokenDispatcher::combine(const Tensor& expert_out, const DeviceDispatchHandle& h) const {
  SY_REQUIRE(expert_out.device() == Device::kCuda && expert_out.dim() == 2 && expert_out.size(0) == h.expert_rows &&
                 (expert_out.dtype() == DType::kF32 || expert_out.dtype() == DType::kBF16),
             InvalidArgument, "combine", "expert_out ", expert_out.describe(), " for ", h.expert_rows, " rows");
  const int ranks = comm_.size();
  const int64_t hidden = expert_out.size(1);
  const int64_t es = static_cast<int64_t>(dtype_size(expert_out.dtype()));
  Tensor back = Tensor::empty({h.layout.row_assignment.numel(), hidden}, expert_out.dtype(), Device::kCuda);
  std::vector<parallel::SendBlock> sends;
  for (int s = 0; s < ranks; ++s) {
    for (int l = 0; l < num_local_; ++l) {
      const int64_t n = h.recv_per_expert[s * num_local_ + l];
      if (n > 0) {
        sends.push_back({s, static_cast<const char*>(expert_out.raw()) + h.block_row[s * num_local_ + l] * hidden * es,
                         n * hidden});
      }
    }
  }
  std::vector<parallel::RecvBlock> recvs;
  for (int e = 0; e < num_experts_; ++e) {
    const int64_t n = h.send_offsets[e + 1] - h.send_offsets[e];
    if (n > 0) recvs.push_back({e / num_local_, static_cast<char*>(back.raw()) + h.send_offsets[e] * hidden * es, n * hidden});
  }
  comm_.exchange(sends, recvs, expert_out.dtype());
  Tensor out = Tensor::zeros({h.layout.num_tokens, hidden}, DType::kF32, Device::kCuda);
  cuda::unpermute(back, h.layout, h.weight, out);
  return out;
}

#else

// Builds without CUDA or NCCL: construction refuses, so no other member is reachable; each refuses as well.
struct DeviceDispatchHandle {};

namespace {
[[noreturn]] void no_device_dispatch() {
  throw make_error<Unsupported>("dispatch", "the device dispatcher needs a CUDA build with NCCL");
}
}  // namespace

DeviceTokenDispatcher::DeviceTokenDispatcher(parallel::Comm& comm, int) : comm_(comm), num_experts_(0) {
  no_device_dispatch();
}
DeviceTokenDispatcher::~DeviceTokenDispatcher() = default;
std::shared_ptr<DeviceDispatchHandle> DeviceTokenDispatcher::plan(const Tensor&, const Tensor&) const {
  no_device_dispatch();
}
std::vector<int64_t> DeviceTokenDispatcher::tokens_per_local_expert(const DeviceDispatchHandle&) {
  no_device_dispatch();
}
Tensor DeviceTokenDispatcher::dispatch(const Tensor&, const DeviceDispatchHandle&) const { no_device_dispatch(); }
Tensor DeviceTokenDispatcher::combine(const Tensor&, const DeviceDispatchHandle&) const { no_device_dispatch(); }

#endif

}  // namespace sy::moe
