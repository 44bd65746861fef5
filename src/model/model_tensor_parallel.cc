// Tensor-parallel attention and dense MLPs of Model (Megatron-style column/row split): Model::set_tensor_parallel
// keeps this rank's heads and intermediate columns of every layer and drops the rest; the forward pass sums
// each block's partial output over the ranks (Model::tp_sum). See model.h for the contract.
#include <string>

#include "switchyard/core/error.h"
#include "switchyard/model/model.h"
#include "switchyard/parallel/comm.h"

namespace sy {

namespace {

// Rows [r0, r1) of a matrix or entries of a vector, copied into storage of their own (a view would keep the
// whole original tensor alive).
Tensor rows(const Tensor& t, int64_t r0, int64_t r1) { return t.defined() ? t.slice(0, r0, r1).clone() : t; }
// Columns [c0, c1) of a matrix, copied.
Tensor cols(const Tensor& t, int64_t c0, int64_t c1) { return t.defined() ? t.slice(1, c0, c1).clone() : t; }

void require_divides(int64_t what, int ranks, const char* name) {
  SY_REQUIRE(what % ranks == 0, InvalidArgument, "model", "tensor parallelism over ", ranks, " ranks needs ", name,
             " (", what, ") divisible by ", ranks, "; choose --tp dividing it");
}

// Gate/up rows and down columns [r*I/T, (r+1)*I/T); the down bias stays on rank 0 (summed once).
moe::GatedMlpWeights shard_mlp(const moe::GatedMlpWeights& m, int ranks, int rank, const char* what) {
  if (!m.gate.defined()) return m;
  const int64_t width = m.gate.size(0);
  require_divides(width, ranks, what);
  const int64_t i0 = width / ranks * rank, i1 = width / ranks * (rank + 1);
  moe::GatedMlpWeights out;
  out.gate = rows(m.gate, i0, i1);
  out.up = rows(m.up, i0, i1);
  out.down = cols(m.down, i0, i1);
  out.gate_bias = rows(m.gate_bias, i0, i1);
  out.up_bias = rows(m.up_bias, i0, i1);
  out.down_bias = rank == 0 ? m.down_bias : Tensor();
  return out;
}

}  // namespace

void Model::set_tensor_parallel(std::shared_ptr<parallel::Comm> tp) {
  SY_REQUIRE(!attention_dp_, InvalidArgument, "model",
             "tensor parallelism and data-parallel attention cannot share ranks: tensor parallelism splits the "
             "attention of the same tokens over them");
  SY_REQUIRE(tp != nullptr, InvalidArgument, "model", "tensor parallelism needs a communicator");
  SY_REQUIRE(!tp_, InvalidArgument, "model", "tensor parallelism is already set");
  SY_REQUIRE(!gpu_, Unsupported, "model", "tensor parallelism is not available on the GPU yet");
  const int ranks = tp->size(), rank = tp->rank();
  if (ranks == 1) return;
  AttentionConfig& a = config_.attention;
  SY_REQUIRE(a.qk_norm != QkNorm::kFull, Unsupported, "model", "tensor parallelism with a q/k RMSNorm over the ",
             "whole projection (OLMoE) is not supported: every rank would need every head");
  require_divides(a.num_heads, ranks, "the attention heads");
  // Fewer key/value heads than ranks: each key/value head is replicated on the ranks whose query heads use it
  // (as Megatron does), which needs the ranks to be a multiple of the key/value heads.
  const bool replicate_kv = !a.mla && a.num_kv_heads < ranks;
  if (!a.mla) {
    SY_REQUIRE(replicate_kv ? ranks % a.num_kv_heads == 0 : a.num_kv_heads % ranks == 0, InvalidArgument, "model",
               "tensor parallelism over ", ranks, " ranks needs the key/value heads (", a.num_kv_heads,
               ") to be a multiple or a divisor of ", ranks);
  }
  // Check every width before changing anything, so a refusal leaves the model whole.
  for (const LayerWeights& l : weights_.layers) {
    if (!l.is_moe) require_divides(l.mlp.gate.size(0), ranks, "the dense MLP width");
    if (l.is_moe && l.moe.shared.gate.defined()) {
      require_divides(l.moe.shared.gate.size(0), ranks, "the shared expert width");
    }
  }
  const int64_t heads = a.num_heads / ranks, h0 = heads * rank;
  for (LayerWeights& l : weights_.layers) {
    AttentionWeights& w = l.attention;
    if (a.mla) {
      const int64_t dq = int64_t{a.qk_nope_head_dim} + a.qk_rope_head_dim;  // q rows per head
      const int64_t up = int64_t{a.qk_nope_head_dim} + a.v_head_dim;        // kv_b rows per head
      if (w.q_b.defined()) {
        w.q_b = rows(w.q_b, h0 * dq, (h0 + heads) * dq);
      } else {
        w.q = rows(w.q, h0 * dq, (h0 + heads) * dq);
      }
      w.kv_b = rows(w.kv_b, h0 * up, (h0 + heads) * up);
      w.o = cols(w.o, h0 * a.v_head_dim, (h0 + heads) * a.v_head_dim);
    } else {
      // Local key/value heads: a contiguous share, or the one head this rank's query heads share.
      const int64_t kv = replicate_kv ? 1 : a.num_kv_heads / ranks;
      const int64_t k0 = replicate_kv ? h0 / (a.num_heads / a.num_kv_heads) : kv * rank, d = a.head_dim;
      w.q = rows(w.q, h0 * d, (h0 + heads) * d);
      w.q_bias = rows(w.q_bias, h0 * d, (h0 + heads) * d);
      w.k = rows(w.k, k0 * d, (k0 + kv) * d);
      w.k_bias = rows(w.k_bias, k0 * d, (k0 + kv) * d);
      w.v = rows(w.v, k0 * a.v_head_dim, (k0 + kv) * a.v_head_dim);
      w.v_bias = rows(w.v_bias, k0 * a.v_head_dim, (k0 + kv) * a.v_head_dim);
      w.o = cols(w.o, h0 * a.v_head_dim, (h0 + heads) * a.v_head_dim);
      w.sinks = rows(w.sinks, h0, h0 + heads);
    }
    if (rank != 0) w.o_bias = Tensor();
    if (l.is_moe) {
      l.moe.shared = shard_mlp(l.moe.shared, ranks, rank, "the shared expert width");
    } else {
      l.mlp = shard_mlp(l.mlp, ranks, rank, "the dense MLP width");
    }
  }
  a.num_heads = static_cast<int>(heads);
  if (!a.mla) a.num_kv_heads = replicate_kv ? 1 : a.num_kv_heads / ranks;
  prepare_mla();
  tp_ = std::move(tp);
}

}  // namespace sy
