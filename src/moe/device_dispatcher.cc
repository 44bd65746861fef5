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
  std::vector<int64_t> recv_counts;      // (ranks,): rows received from each source (source-major buffer)
  Tensor to_expert_major;                // (expert rows,) int64: source-major row of each expert-major row
  Tensor to_source_major;                // (expert rows,) int64: expert-major row of each source-major row
};

DeviceTokenDispatcher::DeviceTokenDispatcher(parallel::Comm& comm, int num_experts, bool int8_payload)
    : comm_(comm), num_experts_(num_experts), int8_(int8_payload) {
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
  // Rows arrive one block per source (that source's rows for this rank's experts, expert by expert); the
  // reorder between that source-major buffer and the expert-major layout is a local gather on the device.
  h->recv_counts.assign(ranks, 0);
  std::vector<int64_t> src_off(static_cast<size_t>(ranks) * num_local_);
  int64_t src_row = 0;
  for (int s = 0; s < ranks; ++s) {
    for (int l = 0; l < num_local_; ++l) {
      src_off[s * num_local_ + l] = src_row;
      src_row += h->recv_per_expert[s * num_local_ + l];
      h->recv_counts[s] += h->recv_per_expert[s * num_local_ + l];
    }
  }
  Tensor to_em = Tensor::empty({row}, DType::kI64), to_sm = Tensor::empty({row}, DType::kI64);
  for (int s = 0; s < ranks; ++s) {
    for (int l = 0; l < num_local_; ++l) {
      const int64_t n = h->recv_per_expert[s * num_local_ + l];
      for (int64_t i = 0; i < n; ++i) {
        to_em.i64()[h->block_row[s * num_local_ + l] + i] = src_off[s * num_local_ + l] + i;
        to_sm.i64()[src_off[s * num_local_ + l] + i] = h->block_row[s * num_local_ + l] + i;
      }
    }
  }
  h->to_expert_major = cuda::to_device(to_em);
  h->to_source_major = cuda::to_device(to_sm);
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
  const int64_t rows = h.layout.row_assignment.numel();
  Tensor permuted = Tensor::empty({rows, hidden}, x.dtype(), Device::kCuda);
  cuda::permute(x, h.layout, permuted);
  // With int8 the rows move as packed bytes (each assignment's row quantised; a token sent to several
  // experts is quantised once per copy, to the same bytes).
  Tensor payload = permuted;
  if (int8_) {
    payload = Tensor::empty({rows, hidden + 4}, DType::kU8, Device::kCuda);
    cuda::quantize_rows_int8(permuted, payload);
  }
  const int64_t width = payload.size(1), es = static_cast<int64_t>(dtype_size(payload.dtype()));
  // One block per destination (its experts' rows are contiguous in the permuted buffer), one per source
  // into a source-major buffer, then the local reorder into expert-major rows.
  Tensor staged = Tensor::empty({h.expert_rows, width}, payload.dtype(), Device::kCuda);
  std::vector<parallel::SendBlock> sends;
  std::vector<parallel::RecvBlock> recvs;
  int64_t recv_row = 0;
  for (int r = 0; r < ranks; ++r) {
    const int64_t r0 = h.send_offsets[r * num_local_], r1 = h.send_offsets[(r + 1) * num_local_];
    if (r1 > r0) sends.push_back({r, static_cast<char*>(payload.raw()) + r0 * width * es, (r1 - r0) * width});
    if (h.recv_counts[r] > 0) {
      recvs.push_back({r, static_cast<char*>(staged.raw()) + recv_row * width * es, h.recv_counts[r] * width});
    }
    recv_row += h.recv_counts[r];
  }
  comm_.exchange(sends, recvs, payload.dtype());
  Tensor ordered = Tensor::empty({h.expert_rows, width}, payload.dtype(), Device::kCuda);
  if (h.expert_rows > 0) cuda::gather_rows(staged, h.to_expert_major, ordered);
  if (!int8_) return ordered;
  Tensor out = Tensor::empty({h.expert_rows, hidden}, x.dtype(), Device::kCuda);
  cuda::dequantize_rows_int8(ordered, out);
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
  // Local reorder to source-major, then one block to each source; each source receives its rows in its own
  // send order, one block per destination.
  Tensor staged = Tensor::empty({h.expert_rows, hidden}, expert_out.dtype(), Device::kCuda);
  if (h.expert_rows > 0) cuda::gather_rows(expert_out, h.to_source_major, staged);
  std::vector<parallel::SendBlock> sends;
  std::vector<parallel::RecvBlock> recvs;
  int64_t send_row = 0;
  for (int r = 0; r < ranks; ++r) {
    if (h.recv_counts[r] > 0) {
      sends.push_back({r, static_cast<const char*>(staged.raw()) + send_row * hidden * es, h.recv_counts[r] * hidden});
    }
    send_row += h.recv_counts[r];
    const int64_t r0 = h.send_offsets[r * num_local_], r1 = h.send_offsets[(r + 1) * num_local_];
    if (r1 > r0) recvs.push_back({r, static_cast<char*>(back.raw()) + r0 * hidden * es, (r1 - r0) * hidden});
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

DeviceTokenDispatcher::DeviceTokenDispatcher(parallel::Comm& comm, int, bool) : comm_(comm), num_experts_(0) {
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
