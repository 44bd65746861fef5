// TokenDispatcher: plan (counts), dispatch (rows out) and combine (rows back) for the all-to-all and
// all-gather strategies; see token_dispatcher.h. Payload rows are packed as f32, or as int8 with the row's
// f32 scale in front. Both strategies build the expert input in the same order, so experts see identical
// inputs whichever strategy moved them.
#include "switchyard/moe/token_dispatcher.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "switchyard/core/error.h"
#include "switchyard/kernels/ops.h"

namespace sy::moe {

namespace {

// Bytes of one packed row: hidden f32, or a f32 scale followed by hidden int8.
int64_t row_bytes(int64_t hidden, bool int8) { return int8 ? 4 + hidden : hidden * 4; }

void pack_row(const float* x, int64_t hidden, bool int8, uint8_t* dst) {
  if (!int8) {
    std::memcpy(dst, x, static_cast<size_t>(hidden) * 4);
    return;
  }
  ops::quantize_row_int8(x, hidden, dst);
}

void unpack_row(const uint8_t* src, int64_t hidden, bool int8, float* y) {
  if (!int8) {
    std::memcpy(y, src, static_cast<size_t>(hidden) * 4);
    return;
  }
  ops::dequantize_row_int8(src, hidden, y);
}

std::vector<int64_t> prefix(const std::vector<int64_t>& counts) {
  std::vector<int64_t> off(counts.size() + 1, 0);
  for (size_t i = 0; i < counts.size(); ++i) off[i + 1] = off[i] + counts[i];
  return off;
}

std::vector<int64_t> scaled(const std::vector<int64_t>& counts, int64_t factor) {
  std::vector<int64_t> out(counts);
  for (int64_t& c : out) c *= factor;
  return out;
}

}  // namespace

std::vector<int64_t> DispatchHandle::tokens_per_local_expert() const {
  std::vector<int64_t> out;
  for (size_t l = 0; l + 1 < expert_offsets.size(); ++l) out.push_back(expert_offsets[l + 1] - expert_offsets[l]);
  return out;
}

TokenDispatcher::TokenDispatcher(parallel::Comm& comm, int num_experts, const DispatcherOptions& options)
    : comm_(comm), num_experts_(num_experts), options_(options) {
  const int ranks = comm.size();
  SY_REQUIRE(num_experts > 0 && num_experts % ranks == 0, InvalidArgument, "dispatch", num_experts,
             " experts cannot be split evenly over ", ranks, " expert-parallel ranks; choose --ep dividing ",
             num_experts);
  SY_REQUIRE(!options.pad_to_capacity || options.capacity_factor > 0, InvalidArgument, "dispatch",
             "padding to capacity needs a capacity factor > 0");
  num_local_ = num_experts / ranks;
  first_local_ = comm.rank() * num_local_;
}

DispatchHandle TokenDispatcher::plan(const Routing& routing) const {
  const int ranks = comm_.size(), me = comm_.rank();
  DispatchHandle h;
  h.num_tokens = routing.num_tokens;
  h.top_k = routing.top_k;
  h.weight = routing.weight;
  SY_CHECK(static_cast<int64_t>(routing.expert.size()) == routing.num_tokens * routing.top_k, "plan: routing size");
  h.recv_per_expert.assign(static_cast<size_t>(ranks) * num_local_, 0);
  if (options_.strategy == DispatchStrategy::kAllToAll) {
    h.send = make_send_layout(routing.expert.data(), routing.weight.data(), routing.num_tokens, routing.top_k,
                              num_experts_, options_);
    std::vector<int64_t> per_expert(num_experts_);
    for (int e = 0; e < num_experts_; ++e) per_expert[e] = h.send.expert_offsets[e + 1] - h.send.expert_offsets[e];
    // Exchange: rank r receives, from every source s, the counts of r's local experts.
    std::vector<int64_t> each(ranks, num_local_);
    comm_.all_to_all_v(per_expert.data(), each, h.recv_per_expert.data(), each, DType::kI64);
    h.send_counts.assign(ranks, 0);
    for (int e = 0; e < num_experts_; ++e) h.send_counts[e / num_local_] += per_expert[e];
  } else {
    std::vector<int64_t> mine{routing.num_tokens};
    h.tokens_per_rank = comm_.all_gather(mine);
    std::vector<int64_t> slots = scaled(h.tokens_per_rank, routing.top_k);
    const int64_t total = prefix(slots).back();
    h.all_expert.resize(total);
    h.all_weight.resize(total);
    comm_.all_gather_v(routing.expert.data(), routing.num_tokens * routing.top_k, h.all_expert.data(), slots, DType::kI32);
    comm_.all_gather_v(routing.weight.data(), routing.num_tokens * routing.top_k, h.all_weight.data(), slots, DType::kF32);
    const std::vector<int64_t> slot_off = prefix(slots);
    h.rank_layouts.resize(ranks);
    for (int s = 0; s < ranks; ++s) {
      h.rank_layouts[s] = make_send_layout(h.all_expert.data() + slot_off[s], h.all_weight.data() + slot_off[s],
                                           h.tokens_per_rank[s], routing.top_k, num_experts_, options_);
      for (int l = 0; l < num_local_; ++l) {
        const int e = first_local_ + l;
        h.recv_per_expert[s * num_local_ + l] = h.rank_layouts[s].expert_offsets[e + 1] - h.rank_layouts[s].expert_offsets[e];
      }
    }
    h.send = h.rank_layouts[me];
    h.send_counts.assign(ranks, 0);
    for (int e = 0; e < num_experts_; ++e) h.send_counts[e / num_local_] += h.send.expert_offsets[e + 1] - h.send.expert_offsets[e];
  }
  h.recv_counts.assign(ranks, 0);
  std::vector<int64_t> per_local(num_local_, 0);
  for (int s = 0; s < ranks; ++s) {
    for (int l = 0; l < num_local_; ++l) {
      h.recv_counts[s] += h.recv_per_expert[s * num_local_ + l];
      per_local[l] += h.recv_per_expert[s * num_local_ + l];
    }
  }
  h.expert_offsets = prefix(per_local);
  return h;
}

Tensor TokenDispatcher::dispatch(const Tensor& x, const DispatchHandle& h) const {
  SY_CHECK(x.dtype() == DType::kF32 && x.is_contiguous() && x.dim() == 2 && x.size(0) == h.num_tokens,
           "dispatch: x ", x.describe());
  const int ranks = comm_.size();
  const int64_t hidden = x.size(1);
  const bool int8 = options_.int8_payload;
  const int64_t rb = row_bytes(hidden, int8);
  Tensor out = Tensor::empty({h.num_expert_rows(), hidden}, DType::kF32);  // every row is written below
  // dst_row(s, l) = first expert-major row of source s's block for local expert l.
  std::vector<int64_t> dst_row(static_cast<size_t>(ranks) * num_local_);
  for (int l = 0; l < num_local_; ++l) {
    int64_t row = h.expert_offsets[l];
    for (int s = 0; s < ranks; ++s) {
      dst_row[s * num_local_ + l] = row;
      row += h.recv_per_expert[s * num_local_ + l];
    }
  }
  if (options_.strategy == DispatchStrategy::kAllToAll) {
    // Rows bound for other ranks are packed once, in send order, into a staging buffer and move from there
    // straight into their final expert-major place in `out` (one receive block per source and local
    // expert). Rows for this rank's own experts never touch the communicator.
    const int me = comm_.rank();
    const int64_t send_rows = static_cast<int64_t>(h.send.row_assignment.size());
    std::vector<uint8_t>& send = send_bytes_;
    send.resize(static_cast<size_t>(send_rows * rb));
    // int8: each token is quantized once (not once per chosen expert) and its packed row copied per slot.
    std::vector<uint8_t>& quantized = token_bytes_;
    if (int8) {
      quantized.resize(static_cast<size_t>(h.num_tokens * rb));
      for (int64_t t = 0; t < h.num_tokens; ++t) pack_row(x.f32() + t * hidden, hidden, true, quantized.data() + t * rb);
    }
    std::vector<parallel::SendBlock> sends;
    for (int e = 0; e < num_experts_; ++e) {
      const int64_t r0 = h.send.expert_offsets[e], r1 = h.send.expert_offsets[e + 1];
      const int dest = e / num_local_;
      float* own = dest == me ? out.f32() + dst_row[me * num_local_ + (e - first_local_)] * hidden : nullptr;
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t a = h.send.row_assignment[r];
        if (own) {  // own expert: straight into place (int8 rows go through the same rounding as sent ones)
          float* dst = own + (r - r0) * hidden;
          if (a < 0) std::memset(dst, 0, static_cast<size_t>(hidden) * 4);  // padding row
          else if (int8) unpack_row(quantized.data() + (a / h.top_k) * rb, hidden, true, dst);
          else std::memcpy(dst, x.f32() + (a / h.top_k) * hidden, static_cast<size_t>(hidden) * 4);
          continue;
        }
        uint8_t* packed = send.data() + r * rb;
        if (a < 0) std::memset(packed, 0, static_cast<size_t>(rb));  // padding row
        else if (int8) std::memcpy(packed, quantized.data() + (a / h.top_k) * rb, static_cast<size_t>(rb));
        else std::memcpy(packed, x.f32() + (a / h.top_k) * hidden, static_cast<size_t>(rb));
      }
      if (!own && r1 > r0) sends.push_back({dest, send.data() + r0 * rb, (r1 - r0) * rb});
    }
    std::vector<parallel::RecvBlock> recvs;
    std::vector<uint8_t>& recv = recv_bytes_;
    if (int8) recv.resize(static_cast<size_t>(h.num_expert_rows() * rb));  // expert-major, unpacked below
    for (int s = 0; s < ranks; ++s) {
      if (s == me) continue;
      for (int l = 0; l < num_local_; ++l) {
        const int64_t n = h.recv_per_expert[s * num_local_ + l], d = dst_row[s * num_local_ + l];
        if (n == 0) continue;
        void* dst = int8 ? static_cast<void*>(recv.data() + d * rb) : static_cast<void*>(out.f32() + d * hidden);
        recvs.push_back({s, dst, n * rb});
      }
    }
    comm_.exchange(sends, recvs, DType::kU8);
    if (int8) {
      for (int s = 0; s < ranks; ++s) {
        if (s == me) continue;
        for (int l = 0; l < num_local_; ++l) {
          const int64_t n = h.recv_per_expert[s * num_local_ + l], d = dst_row[s * num_local_ + l];
          for (int64_t i = 0; i < n; ++i) unpack_row(recv.data() + (d + i) * rb, hidden, int8, out.f32() + (d + i) * hidden);
        }
      }
    }
    return out;
  }
  // All-gather: every rank's packed tokens, then each rank picks the rows of its experts.
  std::vector<uint8_t>& mine = send_bytes_;
  mine.resize(static_cast<size_t>(h.num_tokens * rb));
  for (int64_t t = 0; t < h.num_tokens; ++t) pack_row(x.f32() + t * hidden, hidden, int8, mine.data() + t * rb);
  const std::vector<int64_t> token_off = prefix(h.tokens_per_rank);
  std::vector<uint8_t>& all = recv_bytes_;
  all.resize(static_cast<size_t>(token_off.back() * rb));
  comm_.all_gather_v(mine.data(), h.num_tokens * rb, all.data(), scaled(h.tokens_per_rank, rb), DType::kU8);
  for (int s = 0; s < ranks; ++s) {
    const SendLayout& sl = h.rank_layouts[s];
    for (int l = 0; l < num_local_; ++l) {
      const int e = first_local_ + l;
      const int64_t d = dst_row[s * num_local_ + l];
      for (int64_t r = sl.expert_offsets[e]; r < sl.expert_offsets[e + 1]; ++r) {
        const int64_t a = sl.row_assignment[r];
        float* dst = out.f32() + (d + r - sl.expert_offsets[e]) * hidden;
        if (a < 0) std::memset(dst, 0, static_cast<size_t>(hidden) * 4);  // padding row
        else unpack_row(all.data() + (token_off[s] + a / h.top_k) * rb, hidden, int8, dst);
      }
    }
  }
  return out;
}

Tensor TokenDispatcher::combine(const Tensor& expert_out, const DispatchHandle& h) const {
  SY_CHECK(expert_out.dtype() == DType::kF32 && expert_out.is_contiguous() && expert_out.dim() == 2 &&
               expert_out.size(0) == h.num_expert_rows(),
           "combine: expert_out ", expert_out.describe());
  const int ranks = comm_.size();
  const int64_t hidden = expert_out.size(1);
  const int k = h.top_k;
  std::vector<int64_t> src_row(static_cast<size_t>(ranks) * num_local_);  // expert-major row of block (s, l)
  for (int l = 0; l < num_local_; ++l) {
    int64_t row = h.expert_offsets[l];
    for (int s = 0; s < ranks; ++s) {
      src_row[s * num_local_ + l] = row;
      row += h.recv_per_expert[s * num_local_ + l];
    }
  }
  if (options_.strategy == DispatchStrategy::kAllToAll) {
    // The reverse exchange straight out of expert_out (one send block per source and local expert) into a
    // buffer in this rank's send order; rows computed by this rank's own experts are read in place.
    const int me = comm_.rank();
    const int64_t back_rows = static_cast<int64_t>(h.send.row_assignment.size());
    std::vector<float>& back = back_rows_;
    back.resize(static_cast<size_t>(back_rows * hidden));
    std::vector<parallel::SendBlock> sends;
    for (int s = 0; s < ranks; ++s) {
      if (s == me) continue;
      for (int l = 0; l < num_local_; ++l) {
        const int64_t n = h.recv_per_expert[s * num_local_ + l];
        if (n > 0) sends.push_back({s, expert_out.f32() + src_row[s * num_local_ + l] * hidden, n * hidden});
      }
    }
    std::vector<parallel::RecvBlock> recvs;
    std::vector<const float*> row_ptr(static_cast<size_t>(back_rows));  // where send-order row r's output is
    for (int e = 0; e < num_experts_; ++e) {
      const int64_t r0 = h.send.expert_offsets[e], r1 = h.send.expert_offsets[e + 1];
      const int dest = e / num_local_;
      const float* base = dest == me ? expert_out.f32() + (src_row[me * num_local_ + (e - first_local_)] - r0) * hidden
                                     : back.data();
      for (int64_t r = r0; r < r1; ++r) row_ptr[r] = base + r * hidden;
      if (dest != me && r1 > r0) recvs.push_back({dest, back.data() + r0 * hidden, (r1 - r0) * hidden});
    }
    comm_.exchange(sends, recvs, DType::kF32);
    Tensor out = Tensor::empty({h.num_tokens, hidden}, DType::kF32);
    for (int64_t t = 0; t < h.num_tokens; ++t) {
      float* y = out.f32() + t * hidden;
      bool first = true;
      for (int s = 0; s < k; ++s) {
        const int64_t r = h.send.assignment_row[t * k + s];
        if (r < 0) continue;
        const float w = h.weight[t * k + s];
        const float* src = row_ptr[r];
        if (first) {
          for (int64_t j = 0; j < hidden; ++j) y[j] = w * src[j];
          first = false;
        } else {
          ops::axpy(y, w, src, hidden);
        }
      }
      if (first) std::memset(y, 0, static_cast<size_t>(hidden) * 4);  // every slot dropped
    }
    return out;
  }
  Tensor out = Tensor::zeros({h.num_tokens, hidden}, DType::kF32);
  // All-gather: weighted partial sums of this rank's experts for every token, then a reduce-scatter.
  int64_t max_tokens = 0;
  for (int64_t n : h.tokens_per_rank) max_tokens = std::max(max_tokens, n);
  std::vector<float> partial(static_cast<size_t>(ranks * max_tokens * hidden), 0.f);
  const std::vector<int64_t> slot_off = prefix(scaled(h.tokens_per_rank, k));
  for (int s = 0; s < ranks; ++s) {
    const SendLayout& sl = h.rank_layouts[s];
    for (int64_t t = 0; t < h.tokens_per_rank[s]; ++t) {
      for (int j = 0; j < k; ++j) {
        const int64_t a = t * k + j;
        const int e = h.all_expert[slot_off[s] + a];
        const int64_t r = sl.assignment_row[a];
        if (r < 0 || e < first_local_ || e >= first_local_ + num_local_) continue;
        const int l = e - first_local_;
        const int64_t er = src_row[s * num_local_ + l] + (r - sl.expert_offsets[e]);
        ops::axpy(partial.data() + (s * max_tokens + t) * hidden, h.all_weight[slot_off[s] + a],
                  expert_out.f32() + er * hidden, hidden);
      }
    }
  }
  std::vector<float> block(static_cast<size_t>(max_tokens * hidden));
  comm_.reduce_scatter(partial.data(), block.data(), max_tokens * hidden, DType::kF32, parallel::ReduceOp::kSum);
  if (h.num_tokens > 0) std::memcpy(out.f32(), block.data(), static_cast<size_t>(h.num_tokens * hidden) * 4);
  return out;
}

}  // namespace sy::moe
