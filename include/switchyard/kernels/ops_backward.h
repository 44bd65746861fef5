// Backward passes of the ops in ops.h, for training. All tensors are f32 and contiguous. Gradients named
// `d*` with "accumulate" in the comment are added to (+=); the others are overwritten.
// Each has a finite-difference test in tests/ops.
#pragma once

#include <vector>

#include "switchyard/kernels/ops.h"

namespace sy::ops {

// y = x W^T + b.  dx (m, k) overwritten when defined; dw (n, k) and db (n,) accumulate when defined.
void linear_backward(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx, Tensor* dw, Tensor* db);

// y = rms_norm(x) * w.  dx (m, d) overwritten; dw (d,) accumulates.
void rms_norm_backward(const Tensor& x, const Tensor& w, float eps, const Tensor& dy, Tensor& dx, Tensor& dw);

// The transpose of apply_rope (rotation by the negative angle), in place on the gradient.
void apply_rope_backward(Tensor& dx, const std::vector<int64_t>& positions, const RopeTable& table);

// Gradients of attention(q, k, v) for keys [0, kv_len). dq (t, heads, dk) overwritten; dk, dv
// (>= kv_len, kv_heads, d) accumulate; dsinks (heads,) accumulates when options.sinks is set.
void attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const std::vector<int64_t>& positions,
                        int64_t kv_len, const AttentionOptions& options, const Tensor& dout, Tensor& dq, Tensor& dk,
                        Tensor& dv, Tensor* dsinks);

// out = silu(gate) * up.  dgate, dup overwritten.
void silu_mul_backward(const Tensor& gate, const Tensor& up, const Tensor& dout, Tensor& dgate, Tensor& dup);
void clamped_swiglu_backward(const Tensor& gate, const Tensor& up, float alpha, float limit, const Tensor& dout,
                             Tensor& dgate, Tensor& dup);

// dtable[ids[i], :] += dout[i, :].
void embedding_backward(const std::vector<int64_t>& ids, const Tensor& dout, Tensor& dtable);

// Mean cross-entropy of logits (n, vocab) against targets (n,), over `total` targets (n may be a slice of
// them). Returns the summed (not averaged) loss of these rows; writes dlogits = (softmax - onehot) / total.
double cross_entropy(const Tensor& logits, const std::vector<int64_t>& targets, int64_t total, Tensor& dlogits);

}  // namespace sy::ops
