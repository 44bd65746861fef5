// Causal prefill attention as a cuDNN operation graph that cuDNN's runtime fusion engine runs as one fused
// flash-attention kernel (on Hopper the same family of kernels PyTorch's scaled_dot_product_attention reaches
// through its cuDNN backend). The graph, built once per shape through the backend (C) API:
//   S = Q K^T (f32) -> S * scale -> padding mask (rows and keys past each sequence's length) -> causal mask
//   -> softmax as max / subtract / exp / sum / divide (P rounded to bf16) -> O = P V (bf16).
// Packed variable-length sequences become one batch entry each: ragged offsets point every entry at its
// first packed row and per-entry lengths bound the GEMMs, so nothing is copied or padded in memory. The
// longest sequence is rounded up to a power of two for the graph's shape, so that prompts of nearby lengths
// share a plan; a single sequence whose length is that power of two uses a plain dense batch of one instead.
// O is written in bf16, into the caller's output when that is bf16, else into a scratch widened afterwards.
// Not here: windows and sinks (the caller's own kernels take those), paged keys, the backward pass.
#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "cudnn_attention.cuh"
#include "cudnn_loader.cuh"
#include "flash_tiles.cuh"
#include "op_common.cuh"
#include "switchyard/core/log.h"
#include "switchyard/kernels/cuda_memory.h"

namespace sy::cuda::detail {

#if SY_HAVE_CUDNN_HEADERS
namespace {

[[noreturn]] void fail(const CudnnApi& api, cudnnStatus_t status, const char* what) {
  char message[1024] = {0};
  api.last_error(message, sizeof message);
  throw make_error<Unsupported>("cudnn", what, ": ", api.error_string(status),
                                message[0] ? std::string(" (") + message + ")" : std::string());
}

// One backend descriptor, destroyed with its owner.
class Desc {
 public:
  Desc(const CudnnApi& api, cudnnBackendDescriptorType_t type) : api_(api) {
    const cudnnStatus_t st = api_.create_descriptor(type, &d_);
    if (st != CUDNN_STATUS_SUCCESS) fail(api_, st, "cudnnBackendCreateDescriptor");
  }
  ~Desc() {
    if (d_) api_.destroy_descriptor(d_);
  }
  Desc(const Desc&) = delete;
  Desc& operator=(const Desc&) = delete;

  cudnnBackendDescriptor_t get() const { return d_; }
  Desc& set(cudnnBackendAttributeName_t name, cudnnBackendAttributeType_t type, int64_t count, const void* values) {
    const cudnnStatus_t st = api_.set_attribute(d_, name, type, count, values);
    if (st != CUDNN_STATUS_SUCCESS) fail(api_, st, "cudnnBackendSetAttribute");
    return *this;
  }
  Desc& set_desc(cudnnBackendAttributeName_t name, cudnnBackendDescriptor_t value) {
    return set(name, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &value);
  }
  void finalize(const char* what) {
    const cudnnStatus_t st = api_.finalize(d_);
    if (st != CUDNN_STATUS_SUCCESS) fail(api_, st, what);
  }

 private:
  const CudnnApi& api_;
  cudnnBackendDescriptor_t d_ = nullptr;
};

// The tensors the caller supplies at execution (non-virtual), by unique id.
enum Uid : int64_t {
  kQ = 1, kK, kV, kO, kSeqQ, kSeqKv, kOffQ, kOffK, kOffV, kOffO, kScale, kFillPadding, kFillCausal,
  kFirstVirtual = 100,
};

// A graph's shape: batch entries, query and key/value heads, head dims, rows per entry.
struct Key {
  int64_t b, heads, kv_heads, dk, dv, s;
  bool dense = false;  // the plan of a dense batch of one (else of ragged entries)
  bool operator<(const Key& o) const {
    return std::tie(b, heads, kv_heads, dk, dv, s, dense) < std::tie(o.b, o.heads, o.kv_heads, o.dk, o.dv, o.s, o.dense);
  }
};

// How the packed rows are described to cuDNN. Versions differ in what their fused engine accepts, so a plan
// tries these in order: ragged entries with int64 offsets, the same with int32 offsets, and (only for one
// sequence exactly s rows long at row 0) a plain dense batch of one without the padding mask.
enum class Layout { kRaggedI64, kRaggedI32, kDense };
const char* layout_name(Layout l) {
  return l == Layout::kRaggedI64 ? "ragged, int64 offsets" : l == Layout::kRaggedI32 ? "ragged, int32 offsets" : "dense";
}

struct Plan {
  std::vector<std::unique_ptr<Desc>> descs;  // every descriptor the plan was built from, alive with it
  Desc* plan = nullptr;
  int64_t workspace_bytes = 0;
  Layout layout = Layout::kRaggedI64;
};

using Dims = std::array<int64_t, 4>;

// Builds the operation graph: each helper creates, fills and finalizes one descriptor and keeps it in the plan.
class GraphBuilder {
 public:
  GraphBuilder(const CudnnApi& api, Plan& plan) : api_(api), plan_(plan) {}

  Desc& make(cudnnBackendDescriptorType_t type) {
    plan_.descs.push_back(std::make_unique<Desc>(api_, type));
    return *plan_.descs.back();
  }

  cudnnBackendDescriptor_t tensor(int64_t uid, cudnnDataType_t type, const Dims& dims, const Dims& strides,
                                  bool is_virtual, bool by_value = false,
                                  cudnnBackendDescriptor_t ragged = nullptr) {
    Desc& t = make(CUDNN_BACKEND_TENSOR_DESCRIPTOR);
    const int64_t alignment = 16;
    t.set(CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &type)
        .set(CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, dims.data())
        .set(CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, strides.data())
        .set(CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid)
        .set(CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &alignment);
    const bool yes = true;
    if (is_virtual) t.set(CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &yes);
    if (by_value) t.set(CUDNN_ATTR_TENSOR_IS_BY_VALUE, CUDNN_TYPE_BOOLEAN, 1, &yes);
    if (ragged) t.set_desc(CUDNN_ATTR_TENSOR_RAGGED_OFFSET_DESC, ragged);
    t.finalize("tensor descriptor");
    return t.get();
  }
  cudnnBackendDescriptor_t virtual_tensor(cudnnDataType_t type, const Dims& dims, const Dims& strides) {
    return tensor(next_uid_++, type, dims, strides, true);
  }
  cudnnBackendDescriptor_t scalar(int64_t uid) {  // a float passed by value at execution
    return tensor(uid, CUDNN_DATA_FLOAT, {1, 1, 1, 1}, {1, 1, 1, 1}, false, true);
  }

  // y = mode(x[, b][, t]) elementwise (broadcasting b), computed in `precision`; axis for GEN_INDEX.
  void pointwise(cudnnPointwiseMode_t mode, cudnnDataType_t precision, cudnnBackendDescriptor_t x,
                 cudnnBackendDescriptor_t b, cudnnBackendDescriptor_t y, cudnnBackendDescriptor_t t = nullptr,
                 int64_t axis = -1) {
    Desc& pw = make(CUDNN_BACKEND_POINTWISE_DESCRIPTOR);
    pw.set(CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode)
        .set(CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &precision);
    if (axis >= 0) pw.set(CUDNN_ATTR_POINTWISE_AXIS, CUDNN_TYPE_INT64, 1, &axis);
    pw.finalize("pointwise descriptor");
    Desc& op = make(CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR);
    const float one = 1.f;
    op.set_desc(CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, pw.get())
        .set_desc(CUDNN_ATTR_OPERATION_POINTWISE_XDESC, x)
        .set_desc(CUDNN_ATTR_OPERATION_POINTWISE_YDESC, y)
        .set(CUDNN_ATTR_OPERATION_POINTWISE_ALPHA1, CUDNN_TYPE_FLOAT, 1, &one)
        .set(CUDNN_ATTR_OPERATION_POINTWISE_ALPHA2, CUDNN_TYPE_FLOAT, 1, &one);
    if (b) op.set_desc(CUDNN_ATTR_OPERATION_POINTWISE_BDESC, b);
    if (t) op.set_desc(CUDNN_ATTR_OPERATION_POINTWISE_TDESC, t);
    op.finalize("pointwise operation");
    ops_.push_back(op.get());
  }

  // y = reduction of x over the dimensions where y has extent 1 (f32).
  void reduction(cudnnReduceTensorOp_t reduce, cudnnBackendDescriptor_t x, cudnnBackendDescriptor_t y) {
    Desc& r = make(CUDNN_BACKEND_REDUCTION_DESCRIPTOR);
    const cudnnDataType_t f32 = CUDNN_DATA_FLOAT;
    r.set(CUDNN_ATTR_REDUCTION_OPERATOR, CUDNN_TYPE_REDUCTION_OPERATOR_TYPE, 1, &reduce)
        .set(CUDNN_ATTR_REDUCTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &f32);
    r.finalize("reduction descriptor");
    Desc& op = make(CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR);
    op.set_desc(CUDNN_ATTR_OPERATION_REDUCTION_XDESC, x)
        .set_desc(CUDNN_ATTR_OPERATION_REDUCTION_YDESC, y)
        .set_desc(CUDNN_ATTR_OPERATION_REDUCTION_DESC, r.get());
    op.finalize("reduction operation");
    ops_.push_back(op.get());
  }

  // c = a b (batched over the first two dimensions, f32 accumulation); the GEMM's m, n or k per batch entry
  // from the given (b, 1, 1, 1) int32 tensors where set.
  void matmul(cudnnBackendDescriptor_t a, cudnnBackendDescriptor_t b, cudnnBackendDescriptor_t c,
              cudnnBackendDescriptor_t m, cudnnBackendDescriptor_t n, cudnnBackendDescriptor_t k) {
    Desc& mm = make(CUDNN_BACKEND_MATMUL_DESCRIPTOR);
    const cudnnDataType_t f32 = CUDNN_DATA_FLOAT;
    const double zero = 0.0;
    mm.set(CUDNN_ATTR_MATMUL_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &f32)
        .set(CUDNN_ATTR_MATMUL_PADDING_VALUE, CUDNN_TYPE_DOUBLE, 1, &zero);
    mm.finalize("matmul descriptor");
    Desc& op = make(CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR);
    op.set_desc(CUDNN_ATTR_OPERATION_MATMUL_ADESC, a)
        .set_desc(CUDNN_ATTR_OPERATION_MATMUL_BDESC, b)
        .set_desc(CUDNN_ATTR_OPERATION_MATMUL_CDESC, c)
        .set_desc(CUDNN_ATTR_OPERATION_MATMUL_DESC, mm.get());
    if (m) op.set_desc(CUDNN_ATTR_OPERATION_MATMUL_GEMM_M_OVERRIDE_DESC, m);
    if (n) op.set_desc(CUDNN_ATTR_OPERATION_MATMUL_GEMM_N_OVERRIDE_DESC, n);
    if (k) op.set_desc(CUDNN_ATTR_OPERATION_MATMUL_GEMM_K_OVERRIDE_DESC, k);
    op.finalize("matmul operation");
    ops_.push_back(op.get());
  }

  const std::vector<cudnnBackendDescriptor_t>& ops() const { return ops_; }

 private:
  const CudnnApi& api_;
  Plan& plan_;
  std::vector<cudnnBackendDescriptor_t> ops_;
  int64_t next_uid_ = kFirstVirtual;
};

// The operations of the attention graph for `key` (uids as in Uid), in execution order.
void add_attention_ops(GraphBuilder& g, const Key& key, Layout layout) {
  const int64_t b = key.b, h = key.heads, hk = key.kv_heads, d = key.dk, dv = key.dv, s = key.s;
  const bool ragged = layout != Layout::kDense;
  const cudnnDataType_t offset_type = layout == Layout::kRaggedI32 ? CUDNN_DATA_INT32 : CUDNN_DATA_INT64;
  auto offsets = [&](int64_t uid) -> cudnnBackendDescriptor_t {
    return ragged ? g.tensor(uid, offset_type, {b + 1, 1, 1, 1}, {1, 1, 1, 1}, false) : nullptr;
  };
  const auto off_q = offsets(kOffQ), off_k = offsets(kOffK), off_v = offsets(kOffV), off_o = offsets(kOffO);
  auto lengths = [&](int64_t uid) -> cudnnBackendDescriptor_t {
    return ragged ? g.tensor(uid, CUDNN_DATA_INT32, {b, 1, 1, 1}, {1, 1, 1, 1}, false) : nullptr;
  };
  const auto seq_q = lengths(kSeqQ), seq_kv = lengths(kSeqKv);
  // Packed rows (token-major, heads interleaved) seen as (b, heads, s, dim); K as its transpose (b, hk, d, s).
  const auto q = g.tensor(kQ, CUDNN_DATA_BFLOAT16, {b, h, s, d}, {s * h * d, d, h * d, 1}, false, false, off_q);
  const auto kt = g.tensor(kK, CUDNN_DATA_BFLOAT16, {b, hk, d, s}, {s * hk * d, d, 1, hk * d}, false, false, off_k);
  const auto v = g.tensor(kV, CUDNN_DATA_BFLOAT16, {b, hk, s, dv}, {s * hk * dv, dv, hk * dv, 1}, false, false, off_v);
  const auto o = g.tensor(kO, CUDNN_DATA_BFLOAT16, {b, h, s, dv}, {s * h * dv, dv, h * dv, 1}, false, false, off_o);
  const Dims sd{b, h, s, s}, ss{h * s * s, s * s, s, 1};  // scores (b, heads, s, s)
  const Dims rd{b, h, s, 1}, rs{h * s, s, 1, 1};          // per-row statistics (b, heads, s, 1)
  const cudnnDataType_t f32 = CUDNN_DATA_FLOAT, i32 = CUDNN_DATA_INT32, boolean = CUDNN_DATA_BOOLEAN;

  const auto scores = g.virtual_tensor(f32, sd, ss);
  g.matmul(q, kt, scores, seq_q, seq_kv, nullptr);
  const auto scaled = g.virtual_tensor(f32, sd, ss);
  g.pointwise(CUDNN_POINTWISE_MUL, f32, scores, g.scalar(kScale), scaled);

  // Padding (ragged entries): keep (row < len) and (column < len) of each entry.
  cudnnBackendDescriptor_t padded = scaled;
  if (ragged) {
    const auto row = g.virtual_tensor(i32, sd, ss), col = g.virtual_tensor(i32, sd, ss);
    g.pointwise(CUDNN_POINTWISE_GEN_INDEX, i32, scaled, nullptr, row, nullptr, 2);
    g.pointwise(CUDNN_POINTWISE_GEN_INDEX, i32, scaled, nullptr, col, nullptr, 3);
    const auto row_in = g.virtual_tensor(boolean, sd, ss), col_in = g.virtual_tensor(boolean, sd, ss);
    g.pointwise(CUDNN_POINTWISE_CMP_LT, boolean, row, seq_q, row_in);
    g.pointwise(CUDNN_POINTWISE_CMP_LT, boolean, col, seq_kv, col_in);
    const auto inside = g.virtual_tensor(boolean, sd, ss);
    g.pointwise(CUDNN_POINTWISE_LOGICAL_AND, boolean, row_in, col_in, inside);
    padded = g.virtual_tensor(f32, sd, ss);
    g.pointwise(CUDNN_POINTWISE_BINARY_SELECT, f32, scaled, g.scalar(kFillPadding), padded, inside);
  }

  // Causal: keep column <= row.
  const auto crow = g.virtual_tensor(i32, sd, ss), ccol = g.virtual_tensor(i32, sd, ss);
  g.pointwise(CUDNN_POINTWISE_GEN_INDEX, f32, padded, nullptr, crow, nullptr, 2);
  g.pointwise(CUDNN_POINTWISE_GEN_INDEX, f32, padded, nullptr, ccol, nullptr, 3);
  const auto keep = g.virtual_tensor(boolean, sd, ss);
  g.pointwise(CUDNN_POINTWISE_CMP_GE, boolean, crow, ccol, keep);
  const auto masked = g.virtual_tensor(f32, sd, ss);
  g.pointwise(CUDNN_POINTWISE_BINARY_SELECT, f32, padded, g.scalar(kFillCausal), masked, keep);

  // Softmax; the log-sum-exp statistic is part of the pattern the fusion engine matches (left virtual).
  const auto row_max = g.virtual_tensor(f32, rd, rs);
  g.reduction(CUDNN_REDUCE_TENSOR_MAX, masked, row_max);
  const auto shifted = g.virtual_tensor(f32, sd, ss);
  g.pointwise(CUDNN_POINTWISE_SUB, f32, masked, row_max, shifted);
  const auto e = g.virtual_tensor(f32, sd, ss);
  g.pointwise(CUDNN_POINTWISE_EXP, f32, shifted, nullptr, e);
  const auto row_sum = g.virtual_tensor(f32, rd, rs);
  g.reduction(CUDNN_REDUCE_TENSOR_ADD, e, row_sum);
  const auto log_sum = g.virtual_tensor(f32, rd, rs), stats = g.virtual_tensor(f32, rd, rs);
  g.pointwise(CUDNN_POINTWISE_LOG, f32, row_sum, nullptr, log_sum);
  g.pointwise(CUDNN_POINTWISE_ADD, f32, row_max, log_sum, stats);
  const auto p = g.virtual_tensor(CUDNN_DATA_BFLOAT16, sd, ss);
  g.pointwise(CUDNN_POINTWISE_DIV, f32, e, row_sum, p);

  g.matmul(p, v, o, seq_q, nullptr, seq_kv);
}

// The graph for `key` with the first engine configuration (heuristics mode A, then the fallback list) that
// finalizes into an execution plan. Throws Unsupported with cuDNN's message when none does.
std::unique_ptr<Plan> build_plan(const CudnnApi& api, cudnnHandle_t handle, const Key& key, Layout layout) {
  auto plan = std::make_unique<Plan>();
  plan->layout = layout;
  GraphBuilder g(api, *plan);
  add_attention_ops(g, key, layout);
  Desc& graph = g.make(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR);
  graph.set(CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle)
      .set(CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, static_cast<int64_t>(g.ops().size()),
           g.ops().data());
  graph.finalize("operation graph");
  const cudnnBackendDescriptor_t graph_desc = graph.get();
  std::string last_error = "no engine configuration";
  for (cudnnBackendHeurMode_t mode : {CUDNN_HEUR_MODE_A, CUDNN_HEUR_MODE_FALLBACK}) {
    Desc& heur = g.make(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR);
    heur.set_desc(CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, graph_desc)
        .set(CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode);
    try {
      heur.finalize("engine heuristics");
    } catch (const Unsupported& e) {
      last_error = e.what();
      continue;
    }
    int64_t count = 0;
    if (api.get_attribute(heur.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &count,
                          nullptr) != CUDNN_STATUS_SUCCESS ||
        count <= 0) {
      continue;
    }
    std::vector<cudnnBackendDescriptor_t> configs;
    for (int64_t i = 0; i < count; ++i) configs.push_back(g.make(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR).get());
    int64_t got = 0;
    if (api.get_attribute(heur.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, count, &got,
                          configs.data()) != CUDNN_STATUS_SUCCESS) {
      continue;
    }
    for (int64_t i = 0; i < got; ++i) {
      Desc& candidate = g.make(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR);
      try {
        candidate.set(CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle)
            .set_desc(CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, configs[i]);
        candidate.finalize("execution plan");
      } catch (const Unsupported& e) {
        last_error = e.what();
        continue;
      }
      int64_t workspace = 0, n = 0;
      if (api.get_attribute(candidate.get(), CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1, &n,
                            &workspace) != CUDNN_STATUS_SUCCESS) {
        continue;
      }
      plan->plan = &candidate;
      plan->workspace_bytes = workspace;
      return plan;
    }
  }
  throw make_error<Unsupported>("cudnn", "no cuDNN engine runs the attention graph (", layout_name(layout), ") for ",
                                key.b, " sequences of up to ", key.s, " rows, ", key.heads, "/", key.kv_heads,
                                " heads, head dims ", key.dk, "/", key.dv, ": ", last_error);
}

struct State {
  std::mutex mutex;
  cudnnHandle_t handle = nullptr;
  bool create_failed = false;
  std::map<Key, std::unique_ptr<Plan>> plans;  // null: cuDNN refused this shape (logged once, not retried)
};
State& state() {
  static State* s = new State;  // never destroyed: cuDNN may already be unloaded at process exit
  return *s;
}

int64_t round_up_pow2(int64_t n) {
  int64_t p = 64;
  while (p < n) p *= 2;
  return p;
}

}  // namespace

bool cudnn_attention_compiled() { return true; }

bool cudnn_attention_available(std::string* why) {
  const CudnnApi* api = cudnn_or_null(why);
  if (!api) return false;
  const size_t v = api->version;
  if (v < 90500 || (v >= 91000 && v < 91002)) {
    if (why) *why = "cuDNN " + std::to_string(v) + " is too old or has known attention bugs (needs 9.5+, not 9.10.0/9.10.1)";
    return false;
  }
  return true;
}

bool cudnn_flash_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                           const std::vector<std::pair<int64_t, int64_t>>& sequences, const AttentionArgs& args,
                           Tensor& out) {
  if (args.window != 0 || args.sinks.defined()) return false;
  const int64_t heads = q.size(1), kv_heads = k.size(1), dk = q.size(2), dv = v.size(2);
  if (dk % 8 != 0 || dv % 8 != 0 || dk > 256 || dv > 256) return false;
  if (!cudnn_attention_available(nullptr)) return false;
  const CudnnApi& api = *cudnn_or_null(nullptr);

  std::vector<std::pair<int64_t, int64_t>> seqs;
  int64_t longest = 0;
  for (const auto& r : sequences) {
    if (r.second > r.first) seqs.push_back(r), longest = std::max(longest, r.second - r.first);
  }
  if (seqs.empty()) return false;  // nothing to attend: the caller's path returns at once
  const int64_t b = static_cast<int64_t>(seqs.size());
  const Key key{b, heads, kv_heads, dk, dv, round_up_pow2(longest)};

  State& st = state();
  std::lock_guard<std::mutex> lock(st.mutex);
  if (st.create_failed) return false;
  if (!st.handle) {
    const cudnnStatus_t s = api.create(&st.handle);
    if (s != CUDNN_STATUS_SUCCESS) {
      st.create_failed = true;  // logged once, not retried per call
      log_warn("cudnn: cudnnCreate failed (", api.error_string(s), "); attention runs on the engine's own kernels");
      return false;
    }
  }
  // The plan of key, built on first use (null, logged once, where cuDNN refuses every layout tried).
  auto find_or_build = [&](const Key& k, std::initializer_list<Layout> layouts) -> const Plan* {
    auto it = st.plans.find(k);
    if (it != st.plans.end()) return it->second.get();
    std::unique_ptr<Plan> plan;
    std::string errors;
    for (Layout layout : layouts) {
      try {
        plan = build_plan(api, st.handle, k, layout);
        break;
      } catch (const Unsupported& e) {
        errors += std::string(errors.empty() ? "" : "; ") + e.what();
      }
    }
    if (!plan) log_warn(errors);
    return st.plans.emplace(k, std::move(plan)).first->second.get();
  };
  // A single sequence of exactly key.s rows at row 0 prefers the dense plan (no padding mask to evaluate).
  const Plan* plan = nullptr;
  if (b == 1 && seqs[0].first == 0 && longest == key.s) {
    Key dense = key;
    dense.dense = true;
    plan = find_or_build(dense, {Layout::kDense});
  }
  if (!plan) plan = find_or_build(key, {Layout::kRaggedI64, Layout::kRaggedI32});
  if (!plan) return false;  // logged once per shape; the engine's own kernels run

  // Per-entry lengths (int32) and ragged offsets in elements (int64 or int32) of q, k, v and o, in one upload.
  const bool ragged = plan->layout != Layout::kDense;
  const bool i32_offsets = plan->layout == Layout::kRaggedI32;
  // One offsets table per tensor, each starting 256-byte aligned (the graph declares 16-byte alignment for
  // every tensor; packed back to back, an even entry count would leave the k and o tables 8-byte aligned).
  const int64_t offset_bytes = i32_offsets ? 4 : 8, table = ((b + 1) * offset_bytes + 255) / 256 * 256;
  std::vector<char> host(static_cast<size_t>(4 * table));
  std::vector<int32_t> lengths(static_cast<size_t>(b));
  const int64_t widths[4] = {heads * dk, kv_heads * dk, kv_heads * dv, heads * dv};
  for (int64_t i = 0; i <= b; ++i) {
    const int64_t row = i < b ? seqs[i].first : seqs[b - 1].second;
    for (int j = 0; j < 4; ++j) {
      const int64_t value = row * widths[j];
      if (i32_offsets && value > INT32_MAX) {  // a plan with int32 offsets cannot address these rows
        log_debug("cudnn: rows past int32 offsets; this call runs on the engine's own attention kernels");
        return false;
      }
      char* at = host.data() + j * table + i * offset_bytes;
      if (i32_offsets) {
        const int32_t v32 = static_cast<int32_t>(value);
        std::memcpy(at, &v32, 4);
      } else {
        std::memcpy(at, &value, 8);
      }
    }
    if (i < b) lengths[static_cast<size_t>(i)] = static_cast<int32_t>(seqs[i].second - seqs[i].first);
  }
  const int64_t lengths_at = 4 * table;
  Tensor meta = Tensor::empty({lengths_at + b * 4}, DType::kU8, Device::kCuda);
  if (ragged) {
    upload(meta.raw(), host.data(), host.size());
    upload(static_cast<char*>(meta.raw()) + lengths_at, lengths.data(), lengths.size() * sizeof(int32_t));
  }
  char* base = static_cast<char*>(meta.raw());

  // bf16 O straight into a bf16 `out`, else into a scratch widened afterwards.
  Tensor o = out.dtype() == DType::kBF16 ? out : Tensor::empty({q.size(0), heads, dv}, DType::kBF16, Device::kCuda);
  Tensor workspace;
  if (plan->workspace_bytes > 0) workspace = Tensor::empty({plan->workspace_bytes}, DType::kU8, Device::kCuda);
  float scale = args.scale;
  float fill = api.version >= 91000 ? -std::numeric_limits<float>::infinity() : std::numeric_limits<float>::lowest();
  float fill_causal = fill;
  std::vector<int64_t> uids = {kQ, kK, kV, kO, kScale, kFillCausal};
  std::vector<void*> pointers = {const_cast<void*>(q.raw()), const_cast<void*>(k.raw()), const_cast<void*>(v.raw()),
                                 o.raw(), &scale, &fill_causal};
  if (ragged) {
    uids.insert(uids.end(), {kSeqQ, kSeqKv, kOffQ, kOffK, kOffV, kOffO, kFillPadding});
    pointers.insert(pointers.end(), {base + lengths_at, base + lengths_at, base, base + table, base + 2 * table,
                                     base + 3 * table, &fill});
  }
  void* workspace_ptr = workspace.defined() ? workspace.raw() : nullptr;
  try {
    Desc pack(api, CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR);
    const int64_t n = static_cast<int64_t>(uids.size());
    pack.set(CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, n, uids.data())
        .set(CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, n, pointers.data())
        .set(CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &workspace_ptr);
    pack.finalize("variant pack");
    cudnnStatus_t s = api.set_stream(st.handle, stream());
    if (s != CUDNN_STATUS_SUCCESS) fail(api, s, "cudnnSetStream");
    s = api.execute(st.handle, plan->plan->get(), pack.get());
    if (s != CUDNN_STATUS_SUCCESS) fail(api, s, "cudnnBackendExecute");
  } catch (const Unsupported& e) {
    // A failure to run a plan that was built is a real error, not a shape to route elsewhere.
    throw make_error<Error>("cudnn", "attention: ", e.what());
  }
  if (out.dtype() != DType::kBF16) cast_sequence_rows(o, out, seqs);
  return true;
}

#else  // built without cuDNN's headers

bool cudnn_attention_compiled() { return false; }
bool cudnn_attention_available(std::string* why) {
  if (why) *why = "this build found no cuDNN headers (cudnn_graph.h)";
  return false;
}
bool cudnn_flash_attention(const Tensor&, const Tensor&, const Tensor&, const std::vector<std::pair<int64_t, int64_t>>&,
                           const AttentionArgs&, Tensor&) {
  return false;
}

#endif

}  // namespace sy::cuda::detail
