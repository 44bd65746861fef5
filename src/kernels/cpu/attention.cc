// Causal (optionally sliding-window) attention with GQA and optional sink logits, over a contiguous KV cache
// of one sequence (attention) or over the paged KV block pool of many sequences (paged_attention). One
// (query, head) pair per work item: scores, a numerically safe softmax, weighted V sum. Both entry points
// share attend_one, so paged and contiguous results are bitwise equal. This is the CPU reference; it is not
// flash-tiled.
#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu_common.h"
#include "switchyard/core/thread_pool.h"
#include "switchyard/kernels/ops.h"

namespace sy::ops {

namespace {

std::vector<float> sinks_f32(const AttentionOptions& options, int64_t heads) {
  std::vector<float> sinks;
  if (options.sinks) {
    SY_CHECK(options.sinks->numel() == heads, "attention: sinks ", options.sinks->describe());
    sinks.resize(heads);
    cpu::convert_row_to_f32(options.sinks->raw(), options.sinks->dtype(), sinks.data(), heads);
  }
  return sinks;
}

// One query row against keys [lo, hi] (inclusive). key_row(j) / value_row(j) point at key j of this kv head.
template <typename KeyRow, typename ValueRow>
void attend_one(const float* qrow, int64_t dk, int64_t dv, int64_t lo, int64_t hi, float scale, const float* sink,
                KeyRow key_row, ValueRow value_row, std::vector<float>& scores, float* orow) {
  scores.resize(static_cast<size_t>(hi - lo + 1));
  float max_score = -INFINITY;
  for (int64_t j = lo; j <= hi; ++j) {
    float s = dot(qrow, key_row(j), dk) * scale;
    scores[j - lo] = s;
    max_score = std::max(max_score, s);
  }
  if (sink) max_score = std::max(max_score, *sink);
  float denom = 0.f;
  for (float& s : scores) {
    s = std::exp(s - max_score);
    denom += s;
  }
  if (sink) denom += std::exp(*sink - max_score);
  std::fill(orow, orow + dv, 0.f);
  const float inv = 1.f / denom;
  for (int64_t j = lo; j <= hi; ++j) axpy(orow, scores[j - lo] * inv, value_row(j), dv);
}

void check_shapes(const char* op, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                  const std::vector<int64_t>& positions) {
  cpu::require_cpu(op, q);
  cpu::require_f32_contiguous(op, "q", q);
  cpu::require_f32_contiguous(op, "out", out);
  SY_CHECK(q.dim() == 3 && k.dim() == 3 && v.dim() == 3 && out.dim() == 3, op, ": rank-3 tensors expected");
  const int64_t heads = q.size(1), kv_heads = k.size(1);
  SY_CHECK(k.size(2) == q.size(2) && v.size(1) == kv_heads && heads % kv_heads == 0, op, ": q ", q.describe(), " k ",
           k.describe(), " v ", v.describe());
  SY_CHECK(k.strides()[2] == 1 && v.strides()[2] == 1, op, ": key/value rows must be contiguous");
  SY_CHECK(out.size(0) == q.size(0) && out.size(1) == heads && out.size(2) == v.size(2), op, ": out ",
           out.describe());
  SY_CHECK(static_cast<int64_t>(positions.size()) == q.size(0), op, ": positions");
}

// Every (query, head) pair of a call, in parallel. first_key(i) is the lowest key query i may see before the
// window applies; cache_row(i, j) is the cache row holding key j of query i's sequence.
template <typename FirstKey, typename CacheRow>
void attend_all(const Tensor& q, const Tensor& k, const Tensor& v, const std::vector<int64_t>& positions,
                const AttentionOptions& options, Tensor& out, FirstKey first_key, CacheRow cache_row) {
  const int64_t t = q.size(0), heads = q.size(1), dk = q.size(2);
  const int64_t group = heads / k.size(1), dv = v.size(2);
  const std::vector<float> sinks = sinks_f32(options, heads);
  const float* kp = k.f32();
  const float* vp = v.f32();
  const int64_t ks = k.strides()[0], khs = k.strides()[1];
  const int64_t vs = v.strides()[0], vhs = v.strides()[1];
  const float* qp = q.f32();
  float* op = out.f32();
  parallel_for(t * heads, [&](int64_t a, int64_t b) {
    std::vector<float> scores;
    for (int64_t item = a; item < b; ++item) {
      const int64_t i = item / heads, h = item % heads, kh = h / group;
      const int64_t pos = positions[i];
      int64_t lo = options.window > 0 ? std::max<int64_t>(0, pos - options.window + 1) : 0;
      lo = std::max(lo, first_key(i));
      attend_one(
          qp + (i * heads + h) * dk, dk, dv, lo, pos, options.scale, sinks.empty() ? nullptr : &sinks[h],
          [&](int64_t j) { return kp + cache_row(i, j) * ks + kh * khs; },
          [&](int64_t j) { return vp + cache_row(i, j) * vs + kh * vhs; }, scores, op + (i * heads + h) * dv);
    }
  });
}

}  // namespace

void attention(const Tensor& q, const Tensor& k, const Tensor& v, const std::vector<int64_t>& positions,
               int64_t kv_len, const AttentionOptions& options, Tensor& out) {
  check_shapes("attention", q, k, v, out, positions);
  SY_CHECK(k.size(0) >= kv_len && v.size(0) >= kv_len, "attention: cache shorter than kv_len ", kv_len);
  for (int64_t pos : positions) {
    SY_CHECK(pos >= 0 && pos < kv_len, "attention: position ", pos, " outside cache of ", kv_len);
  }
  attend_all(
      q, k, v, positions, options, out,
      [&](int64_t i) { return options.key_start ? (*options.key_start)[i] : int64_t{0}; },
      [](int64_t, int64_t j) { return j; });
}

void paged_attention(const Tensor& q, const Tensor& k, const Tensor& v, const std::vector<int64_t>& positions,
                     const std::vector<PagedSequence>& sequences, int64_t block_size,
                     const AttentionOptions& options, Tensor& out) {
  check_shapes("paged_attention", q, k, v, out, positions);
  SY_CHECK(options.key_start == nullptr, "paged_attention: key_start is not supported");
  SY_CHECK(block_size > 0 && k.size(0) % block_size == 0 && v.size(0) == k.size(0),
           "paged_attention: pool of ", k.size(0), " rows is not whole blocks of ", block_size);
  const int64_t t = q.size(0);
  const int64_t pool_blocks = k.size(0) / block_size;
  // Which sequence owns each query row; validates the block tables once.
  std::vector<int32_t> owner(t, -1);
  for (size_t s = 0; s < sequences.size(); ++s) {
    const PagedSequence& seq = sequences[s];
    SY_CHECK(seq.q_begin >= 0 && seq.q_begin <= seq.q_end && seq.q_end <= t, "paged_attention: query rows [",
             seq.q_begin, ", ", seq.q_end, ") outside ", t);
    SY_CHECK(seq.block_table != nullptr && seq.kv_len <= seq.num_blocks * block_size,
             "paged_attention: ", seq.kv_len, " keys do not fit ", seq.num_blocks, " blocks");
    for (int64_t b = 0; b < seq.num_blocks; ++b) {
      SY_CHECK(seq.block_table[b] >= 0 && seq.block_table[b] < pool_blocks, "paged_attention: block ",
               seq.block_table[b], " outside the pool of ", pool_blocks);
    }
    for (int64_t i = seq.q_begin; i < seq.q_end; ++i) {
      SY_CHECK(owner[i] < 0, "paged_attention: query row ", i, " belongs to two sequences");
      SY_CHECK(positions[i] >= 0 && positions[i] < seq.kv_len, "paged_attention: position ", positions[i],
               " outside the ", seq.kv_len, " cached keys");
      owner[i] = static_cast<int32_t>(s);
    }
  }
  for (int64_t i = 0; i < t; ++i) SY_CHECK(owner[i] >= 0, "paged_attention: query row ", i, " has no sequence");
  attend_all(
      q, k, v, positions, options, out, [](int64_t) { return int64_t{0}; },
      [&](int64_t i, int64_t j) {
        const PagedSequence& seq = sequences[owner[i]];
        return seq.block_table[j / block_size] * block_size + j % block_size;
      });
}

}  // namespace sy::ops
