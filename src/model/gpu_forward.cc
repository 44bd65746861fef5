// Device forward pass: the same decoder as Model's CPU path (x = embed; per layer x += attn(norm x);
// x += ffn(norm x); logits = head(norm x)), as a sequence of CUDA ops on the model's stream. Activations are
// f32; weight matrices bf16 (cuda::linear rounds activations to bf16 for the tensor cores, so results match
// the CPU path to bf16 precision). Routed experts run as one cuBLAS grouped GEMM per projection for
// prefill-sized batches, which needs the per-expert counts on the host once per MoE layer (or, with
// SY_SM90_EXPERTS=1, as two launches of the Hopper grouped GEMM, gather and SwiGLU fused); decode-sized
// batches (up to gemv_max_tokens) use the grouped GEMV instead (cuda::decode_route for the router GEMV,
// routing and layout in one launch, cuda::grouped_swiglu for gate, up and SiLU reading the tokens through the
// layout, cuda::grouped_linear for down) and never synchronise with the host until the logits are copied
// back, and decode steps replay a captured CUDA graph.
#include "gpu_forward.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <string>
#include <cstring>
#include <map>

#include "switchyard/core/env.h"
#include "switchyard/core/error.h"

#if SY_HAS_CUDA
#include "switchyard/kernels/cuda_memory.h"
#include "switchyard/kernels/cuda_ops.h"
#include "switchyard/kernels/device.h"
#include "switchyard/moe/device_dispatcher.h"
#include "switchyard/parallel/comm.h"
#endif

namespace sy::model_detail {

bool grouped_decode_attention(int setting, bool decode_only, int64_t rows, int64_t longest_keys,
                              int64_t max_keys_alone) {
  if (setting >= 0) return setting > 0;
  if (!decode_only || rows < kGroupedAttentionMinRows) return false;
  return rows > 1 || longest_keys <= max_keys_alone;
}

#if SY_HAS_CUDA

namespace {
// Tokens per pass up to which routed experts run as the grouped GEMV (no host sync, so the pass can be a CUDA
// graph); above it, one cuBLAS grouped GEMM per projection after one host sync per layer (measured on the
// H100 for the Qwen3-30B-A3B layer: GEMV 0.14 ms vs 0.17 ms at 1 token, 1.11 ms vs 0.59 ms at 64 tokens).
// SY_GROUPED_GEMV_MAX_TOKENS overrides it at upload (tests use 0 to run every pass through cuBLAS). Decode
// steps of up to that many sequences are captured as CUDA graphs.
constexpr int64_t kGroupedMaxTokens = 16;
// Grouped-GEMV passes of up to this many tokens fuse the down projection with the combine
// (cuda::grouped_linear_combine reads an expert shared by several tokens once per token).
constexpr int64_t kCombineMaxTokens = 4;
// Whole fresh prompts of at least this many tokens run the tensor-core prefill attention (shorter ones gain
// nothing over the paged kernel). SY_FLASH_PREFILL=0 turns it off at upload.
constexpr int64_t kFlashMinTokens = 64;
}  // namespace

// The device inputs of one pass (all int64 but the int32 block tables).
struct DeviceBatch {
  int64_t n = 0;  // query tokens
  // Every sequence of the pass has one query row (a decode step): no query reads a key another query of the
  // pass writes, so the keys before each query's position are all in the pool before the pass.
  bool decode_only = false;
  // Keys the pass's longest sequence has room for in its pool blocks (blocks x block size): a decode graph's
  // are those of the step that captured it (graphs are keyed by grouped_decode_attention's choice).
  int64_t longest_keys = 0;
  Tensor ids, positions, rows, starts, tables, logit_rows;
  // Query rows [first, second) of sequences whose chunk is a whole fresh prompt (positions 0..len-1) long
  // enough for the tensor-core prefill kernel; every other row runs the paged kernel. Sorted, disjoint.
  std::vector<std::pair<int64_t, int64_t>> fresh_prompts;
  // Set once per pass with them (set_fresh_prompts): the span [fresh_begin, fresh_end) of rows that holds them,
  // the prompts relative to that span (the prefill kernel's ranges), and how many rows they cover.
  int64_t fresh_begin = 0, fresh_end = 0, fresh_rows = 0;
  std::vector<std::pair<int64_t, int64_t>> fresh_in_span;

  void set_fresh_prompts(std::vector<std::pair<int64_t, int64_t>> prompts) {
    std::sort(prompts.begin(), prompts.end());
    fresh_prompts = std::move(prompts);
    fresh_in_span.clear();
    fresh_rows = 0;
    if (fresh_prompts.empty()) return;
    fresh_begin = fresh_prompts.front().first;
    fresh_end = fresh_prompts.back().second;
    for (const auto& [r0, r1] : fresh_prompts) {
      fresh_in_span.emplace_back(r0 - fresh_begin, r1 - fresh_begin);
      fresh_rows += r1 - r0;
    }
  }
  // Calls fn(r0, r1) for each non-empty run of rows outside the fresh prompts, in order.
  template <typename F>
  void for_each_cached_run(F fn) const {
    int64_t done = 0;
    for (const auto& [r0, r1] : fresh_prompts) {
      if (r0 > done) fn(done, r0);
      done = r1;
    }
    if (n > done) fn(done, n);
  }
};

// One captured decode pass: its static device inputs and outputs (kept alive: the graph reads and writes them).
struct DecodeGraph {
  int64_t table_capacity = 0;  // block-table entries per sequence
  DeviceBatch batch;
  Tensor counts, logits;
  cuda::Graph graph;
  // The step's inputs through pinned memory (GpuSwitches::pinned_io): ids, positions and rows as the rows of
  // one (3, n) device tensor (batch.ids etc. are its rows), staged with the block tables in `staging`, two
  // copies a step; the expert counts come back into `counts_host` without a synchronisation of their own.
  Tensor inputs;
  cuda::PinnedBuffer staging, counts_host;
  // A graph captured for sampled steps (forward_batch_sample with device sampling and pinned_io) ends with
  // cuda::sample_rows on the logits: `params` (n, 4) f32 go up in `staging` with the inputs, the tokens
  // (n,) int32 come back into `tokens_host`.
  bool sampled = false;
  Tensor params, tokens;
  cuda::PinnedBuffer tokens_host;
};

// What a replayed decode graph left on its way to the host (downloads queued, not yet synchronised): its
// expert counts, and with a sampled graph the tokens.
struct PendingDownloads {
  const DecodeGraph* graph = nullptr;
};

// The forward pass's own switches, read from the environment at upload and again by reconfigure
// (apply_switches); each initialiser is the default a switch left unset takes.
struct GpuSwitches {
  int64_t gemv_max_tokens = kGroupedMaxTokens;  // passes up to this many tokens run the grouped GEMV path
  bool use_flash = true;                         // fresh prompts through cuda::flash_attention
  // The fused decode kernels, each with a switch back to the separate ops it replaced (SY_FUSED_QKV=0,
  // SY_DECODE_ROUTE=0), so that a device run can A/B them and fall back without a rebuild.
  bool fused_qkv = true;     // GQA: stacked q|k|v GEMM + cuda::qkv_epilogue
  bool decode_route = true;  // MoE decode passes: cuda::decode_route
  // The input RMSNorm folded into the q|k|v GEMV of passes that take the dense GEMV (cuda::rms_norm_linear;
  // SY_FUSED_NORM=0 runs it on its own). The post-attention norm folded into the decode router measured
  // slower (H100, 2026-12-05: 4.22 against 4.12 ms per batch-1 step), so it stays a launch of its own.
  bool fused_norm = true;
  // Grouped-GEMV passes of up to kCombineMaxTokens tokens: the down projection and the weighted combine in one
  // launch (cuda::grouped_linear_combine; SY_FUSED_COMBINE=0: grouped_linear then unpermute).
  bool fused_combine = true;
  // The fused combine reads its routing and issues its first weight loads before waiting for gate|up, which
  // then releases it only after its own wait (grouped_swiglu's release_after_wait, grouped_linear_combine's
  // routing_ready). On by default (H100, 2026-12-06: a Qwen3-30B-A3B batch-1 decode step 3.72 -> 3.59 ms,
  // batch 2 5.28 -> 5.16 ms); SY_EARLY_COMBINE=0 turns it off.
  bool early_combine = true;
  // Decode graphs take their inputs and return their expert counts through pinned memory: two queued copies
  // before a replay instead of one per input and per sequence, and the counts read after the step's one
  // synchronisation (the sampled tokens' or the logits') instead of a synchronisation of their own.
  // SY_PINNED_IO=0: the pageable copies.
  bool pinned_io = true;
  // Decode passes tell the paged attention that their cached keys are ready (AttentionArgs::cached_keys_ready):
  // the grouped kernel reads each block's first two steps of keys and values before the programmatic-launch
  // wait, the per-head kernel each warp's first key row. On by default (H100, 2026-12-06, with the grouped
  // kernel: batch-1 step 0.971-0.987x, batch 4 0.975-0.993x; the per-head kernel alone 0.995-0.997x);
  // SY_PREFETCH_KEYS=0 turns it off.
  bool prefetch_keys = true;
  // Decode passes fold the q|k|v epilogue into the paged attention, per head or grouped
  // (cuda::paged_attention_qkv: one launch fewer per layer). Off by default: measured slower (H100,
  // 2026-12-06: per head, batch-1 step 1.03x, batch 2 1.06x; grouped, batch 1 and 4 1.023x: every block of a
  // cluster forms its group's eight query heads, two per warp one after another); SY_FUSED_ATTENTION=1.
  bool fused_attention = false;
  // Weights pulled into L2 ahead of their GEMV by a decode-pass kernel that reads little itself
  // (cuda::L2Prefetch): the o projection by the per-head paged attention (SY_PREFETCH_O=1), the next layer's
  // q|k|v projection by the decode router (SY_PREFETCH_QKV=1; 2: as evict-last lines, which the MoE block's
  // evict-first expert stream passes by). Off: no gain or a loss on an H100 (2026-12-06: batch-1 step 1.001x
  // with the o prefetch, 1.187x with q|k|v's, 1.177x evict-last).
  bool prefetch_o = false;
  int prefetch_qkv = 0;
  // Prefill-sized MoE passes through the Hopper grouped GEMM (cuda::grouped_swiglu_sm90 / grouped_linear_sm90)
  // instead of cuBLAS's grouped call: on by default where the GPU runs it (1.3-1.6x cuBLAS's grouped call on
  // an H100, docs/benchmarks.md); SY_SM90_EXPERTS=0 turns it off.
  bool sm90_experts = false;
  // Fresh prompts of head dims 128/128 through the Hopper attention kernel (AttentionArgs::sm90): on by default
  // where the GPU runs it (1.5x the FlashAttention-2 kernel); SY_FLASH_SM90=0 turns it off.
  bool flash_sm90 = false;
  // Fresh prompts without windows or sinks through cuDNN's fused attention (AttentionArgs::cudnn) where cuDNN
  // is found: SY_CUDNN_ATTENTION=1.
  bool flash_cudnn = false;
  int key_splits = 0;                            // paged attention key splits (0: chosen from the batch)
  int min_split_keys = 0;                        // keys each split covers at least (AttentionArgs::min_split_keys)
  // Paged attention grouped by key head, one cluster per (query, key head) (AttentionArgs::grouped_decode):
  // -1 (the default) as grouped_decode_attention decides (decode passes, but a lone long sequence);
  // SY_GROUPED_ATTENTION=1 for every pass, prefill chunks included, 0 for none. Passes it takes ignore
  // key_splits and min_split_keys (its clusters split the keys) and the fused attention (SY_FUSED_ATTENTION).
  int grouped_attention = -1;
  int64_t grouped_max_keys_alone = kGroupedAttentionMaxKeysAlone;  // SY_GROUPED_ATTENTION_MAX_KEYS
  bool device_sampling = true;                   // tokens drawn on the GPU (SY_GPU_SAMPLING=0: on the host)
};

// The process-wide kernel settings (cuda_ops.h) that the environment can set, as they stood at one moment:
// reconfigure returns the unset ones to what they were before upload applied the environment.
struct KernelSwitches {
  bool programmatic_launch = false, warp_routing = true, cluster_routing = true;
  bool sm90_warp_specialized = true, sm90_tma = true, sm90_pingpong = false;
  int dense_gemv_max_rows = 2, sm90_tile_n = 0;
  bool chunked_layout = true, sm90_cluster = false;
  int dense_gemv_preload = 1;
  bool combine_bulk = false;
  bool sm90_skip_idle_halves = true;

  static KernelSwitches current() {
    return {cuda::programmatic_launch_enabled(), cuda::warp_routing(), cuda::cluster_routing(),
            cuda::grouped_gemm_sm90_warp_specialized(), cuda::grouped_gemm_sm90_tma(),
            cuda::grouped_gemm_sm90_pingpong(), cuda::dense_gemv_max_rows(), cuda::grouped_gemm_sm90_tile_n(),
            cuda::chunked_dispatch_layout(), cuda::grouped_gemm_sm90_cluster(), cuda::dense_gemv_preload(),
            cuda::grouped_linear_combine_bulk(), cuda::grouped_gemm_sm90_skip_idle_halves()};
  }
  void restore() const {
    cuda::set_programmatic_launch(programmatic_launch);
    cuda::set_warp_routing(warp_routing);
    cuda::set_cluster_routing(cluster_routing);
    cuda::set_grouped_gemm_sm90_warp_specialized(sm90_warp_specialized);
    cuda::set_grouped_gemm_sm90_tma(sm90_tma);
    cuda::set_grouped_gemm_sm90_pingpong(sm90_pingpong);
    cuda::set_dense_gemv_max_rows(dense_gemv_max_rows);
    cuda::set_grouped_gemm_sm90_tile_n(sm90_tile_n);
    cuda::set_chunked_dispatch_layout(chunked_layout);
    cuda::set_grouped_gemm_sm90_cluster(sm90_cluster);
    cuda::set_dense_gemv_preload(dense_gemv_preload);
    cuda::set_grouped_linear_combine_bulk(combine_bulk);
    cuda::set_grouped_gemm_sm90_skip_idle_halves(sm90_skip_idle_halves);
  }
};

struct GpuState : GpuSwitches {
  ModelConfig config;
  ModelWeights w;  // device tensors
  cuda::DeviceRope rope;
  std::vector<std::array<cuda::ExpertWeightTable, 3>> experts;  // [layer] gate, up, down (MoE layers)
  std::vector<std::array<Tensor, 3>> expert_bias;  // [layer] (E, n) f32 gate, up, down biases (gpt-oss)
  // [layer] GQA layers: q, k and v stacked as one (q + k + v rows, hidden) bf16 matrix (the layer's
  // attention.q/k/v are views of it) and their biases as one f32 vector (undefined without biases); MLA
  // layers: undefined.
  std::vector<Tensor> qkv, qkv_bias;
  Tensor router_done;  // (1,) int32: the decode router's finished-blocks counter (zero between launches)
  size_t bytes = 0;
  KernelSwitches uploaded_with;  // the process-wide settings before upload applied the environment
  // Decode steps captured as CUDA graphs, by batch size, for the pool whose address they baked in
  // (SY_CUDA_GRAPHS=0 at upload or set_cuda_graphs: off).
  bool use_graphs = true;
  const void* graph_pool = nullptr;
  // key: 4 * batch size, + 2 for the grouped attention (grouped_decode_attention), + 1 for a sampled graph
  std::map<int64_t, std::unique_ptr<DecodeGraph>> graphs;
  // Expert parallelism (upload with an EP group): this rank's GPU holds only its experts; MoE layers dispatch
  // over NCCL (moe_layer_ep). Passes then run eagerly (dispatch plans synchronise with the host).
  std::unique_ptr<parallel::Comm> ep_comm;
  std::unique_ptr<moe::DeviceTokenDispatcher> dispatcher;
  bool attention_dp = false;  // each rank dispatches all of its own tokens (no shares, no all-gather)
  cuda::PinnedBuffer sample_params;  // sample_logits' per-row settings on their way up
};


void GpuStateDeleter::operator()(GpuState* s) const { delete s; }

namespace {

// Uploads tensors once each (tied embeddings share one device copy).
class Uploader {
 public:
  Tensor matrix(const Tensor& t) { return put(t, DType::kBF16); }
  Tensor vector(const Tensor& t) { return put(t, DType::kF32); }
  size_t bytes = 0;

 private:
  Tensor put(const Tensor& t, DType dtype) {
    if (!t.defined()) return Tensor();
    auto key = std::make_pair(t.raw(), dtype);
    auto it = done_.find(key);
    if (it != done_.end() && it->second.shape() == t.shape()) return it->second;
    Tensor host = t.dtype() == dtype ? t.contiguous() : t.to(dtype);
    Tensor dev = cuda::to_device(host);
    bytes += dev.nbytes();
    done_[key] = dev;
    return dev;
  }
  std::map<std::pair<const void*, DType>, Tensor> done_;
};

moe::GatedMlpWeights upload_mlp(Uploader& up, const moe::GatedMlpWeights& m) {
  return {up.matrix(m.gate), up.matrix(m.up), up.matrix(m.down), up.vector(m.gate_bias), up.vector(m.up_bias),
          up.vector(m.down_bias)};
}

// (E, n) f32 device table of one projection's expert biases (zero rows for experts this process lacks), or
// undefined when the experts have none.
Tensor stack_expert_biases(const std::vector<moe::GatedMlpWeights>& experts, Tensor moe::GatedMlpWeights::*bias) {
  int64_t n = 0;
  for (const auto& e : experts) {
    if ((e.*bias).defined()) n = (e.*bias).numel();
  }
  if (n == 0) return Tensor();
  Tensor host = Tensor::zeros({static_cast<int64_t>(experts.size()), n}, DType::kF32);
  for (size_t e = 0; e < experts.size(); ++e) {
    if (!(experts[e].*bias).defined()) continue;
    Tensor f = (experts[e].*bias).to(DType::kF32);
    std::memcpy(host.f32() + e * n, f.f32(), sizeof(float) * n);
  }
  return cuda::to_device(host);
}

// q, k and v of a GQA layer stacked into one device (q + k + v rows, hidden) bf16 matrix, and their biases into
// one (rows,) f32 vector (zeros for a part without; undefined when none has one).
std::pair<Tensor, Tensor> stack_qkv(const AttentionWeights& a) {
  const Tensor* parts[3] = {&a.q, &a.k, &a.v};
  const Tensor* biases[3] = {&a.q_bias, &a.k_bias, &a.v_bias};
  const int64_t hidden = a.q.size(1), rows = a.q.size(0) + a.k.size(0) + a.v.size(0);
  Tensor w = Tensor::empty({rows, hidden}, DType::kBF16);
  Tensor bias = Tensor::zeros({rows}, DType::kF32);
  bool any_bias = false;
  int64_t r0 = 0;
  for (int i = 0; i < 3; ++i) {
    SY_CHECK(parts[i]->dim() == 2 && parts[i]->size(1) == hidden, "stack_qkv: ", parts[i]->describe());
    const Tensor m = parts[i]->to(DType::kBF16).contiguous();
    std::memcpy(static_cast<char*>(w.raw()) + r0 * hidden * 2, m.raw(), m.nbytes());
    if (biases[i]->defined()) {
      const Tensor b = biases[i]->to(DType::kF32).contiguous();
      SY_CHECK(b.numel() == m.size(0), "stack_qkv: bias ", b.describe(), " for ", m.describe());
      std::memcpy(bias.f32() + r0, b.f32(), b.nbytes());
      any_bias = true;
    }
    r0 += m.size(0);
  }
  return {cuda::to_device(w), any_bias ? cuda::to_device(bias) : Tensor()};
}

Tensor host_i64(const std::vector<int64_t>& v) {
  Tensor t = Tensor::empty({static_cast<int64_t>(v.size())}, DType::kI64);
  if (!v.empty()) std::memcpy(t.raw(), v.data(), v.size() * sizeof(int64_t));
  return cuda::to_device(t);
}

Tensor linear(const Tensor& x, const Tensor& w, const Tensor& b) {
  Tensor y = Tensor::empty({x.size(0), w.size(0)}, DType::kF32, Device::kCuda);
  cuda::linear(x, w, b, y);
  return y;
}

// g = act(g, u): SwiGLU, or gpt-oss's clamped SwiGLU when the config sets a limit.
void activate(const MoeConfig& m, Tensor& g, const Tensor& u) {
  if (m.swiglu_limit > 0) {
    cuda::clamped_swiglu(g, u, static_cast<float>(m.swiglu_alpha), static_cast<float>(m.swiglu_limit), g);
  } else {
    cuda::silu_mul(g, u, g);
  }
}

// act(gate x + b) * (up x + b) on device rows.
Tensor gated_hidden(const Tensor& x, const moe::GatedMlpWeights& w, const MoeConfig& m = {}) {
  Tensor g = linear(x, w.gate, w.gate_bias);
  Tensor u = linear(x, w.up, w.up_bias);
  activate(m, g, u);
  return g;
}

// SwiGLU MLP on device rows: down(silu(gate x) * up x).
Tensor gated_mlp(const Tensor& x, const moe::GatedMlpWeights& w) { return linear(gated_hidden(x, w), w.down, w.down_bias); }

}  // namespace

namespace {

// Adds the routed experts' biases of projection `which` (0 gate, 1 up, 2 down) of layer l, if any.
void add_biases(GpuState& s, int l, int which, Tensor& y, const Tensor& expert, const cuda::DeviceDispatchLayout& layout) {
  const Tensor& bias = s.expert_bias[l][which];
  if (bias.defined()) cuda::add_expert_bias(y, bias, expert, layout);
}

// out += the shared expert of MoE layer l on rows h (f32 or their bf16 rounding: the same GEMM operand;
// sigmoid-gated for Qwen2-MoE), if it has one.
void add_shared_expert(GpuState& s, int l, const Tensor& h, Tensor& out) {
  const MoeWeights& m = s.w.layers[l].moe;
  if (!m.shared.gate.defined()) return;
  Tensor shared = gated_mlp(h, m.shared);
  if (m.shared_gate.defined()) {
    cuda::sigmoid_gate_add(out, shared, linear(h, m.shared_gate, Tensor()));
  } else {
    cuda::add_inplace(out, shared);
  }
}

// The routed experts of MoE layer l under expert parallelism, the CPU's scheme (Model::routed_experts_ep) on
// the device: every rank holds the same rows h (n, hidden) f32 and the same routing; rank r dispatches its
// contiguous share [n r / P, n (r + 1) / P) to the experts' owners over NCCL (bf16 rows), runs the rows its
// own experts received as one cuBLAS grouped GEMM per projection, combines its share and all-gathers the
// shares, so every rank returns all n rows. With attention_dp the rows are this rank's own and all of them
// are dispatched; no all-gather. Returns (n, hidden) f32. load counts the routing of all n rows (as the CPU's
// expert parallelism does), not only what this rank's experts received.
Tensor routed_experts_ep(GpuState& s, int l, const Tensor& h, const Tensor& expert, const Tensor& weight,
                         ExpertLoad& load) {
  const ModelConfig& c = s.config;
  parallel::Comm& comm = *s.ep_comm;
  moe::DeviceTokenDispatcher& d = *s.dispatcher;
  const int ranks = comm.size(), rank = comm.rank();
  const int64_t n = h.size(0), hidden = c.hidden_size;
  std::vector<int64_t> share(ranks);
  for (int r = 0; r < ranks; ++r) share[r] = n * (r + 1) / ranks - n * r / ranks;
  const int64_t begin = s.attention_dp ? 0 : n * rank / ranks, end = s.attention_dp ? n : begin + share[rank];
  Tensor mine = Tensor::empty({end - begin, hidden}, DType::kBF16, Device::kCuda);
  cuda::cast(h.slice(0, begin, end), mine);
  auto handle = d.plan(expert.slice(0, begin, end), weight.slice(0, begin, end));  // collective
  const std::vector<int64_t> per_local = moe::DeviceTokenDispatcher::tokens_per_local_expert(*handle);
  Tensor in = d.dispatch(mine, *handle);  // (rows, hidden) bf16, local expert by local expert
  // Offsets over all experts: empty groups for the experts other ranks own.
  std::vector<int64_t> offsets(c.moe.num_experts + 1, 0);
  for (int e = 0; e < c.moe.num_experts; ++e) {
    const int local = e - d.first_local_expert();
    offsets[e + 1] = offsets[e] + (local >= 0 && local < d.num_local_experts() ? per_local[local] : 0);
  }
  Tensor routed = cuda::to_host(expert);  // (n, top_k) int32; plan() synchronised already
  for (int64_t a = 0; a < routed.numel(); ++a) ++load.tokens[l][routed.i32()[a]];
  const int64_t rows = offsets.back();
  const auto& t = s.experts[l];
  Tensor g = Tensor::empty({rows, t[0].n}, DType::kBF16, Device::kCuda);
  Tensor u = Tensor::empty({rows, t[1].n}, DType::kBF16, Device::kCuda);
  Tensor y = Tensor::empty({rows, hidden}, DType::kBF16, Device::kCuda);
  cuda::grouped_gemm(in, t[0], offsets, g);
  cuda::grouped_gemm(in, t[1], offsets, u);
  activate(c.moe, g, u);
  cuda::grouped_gemm(g, t[2], offsets, y);
  Tensor part = d.combine(y, *handle);  // (share, hidden) f32
  if (s.attention_dp) return part;
  Tensor out = Tensor::empty({n, hidden}, DType::kF32, Device::kCuda);
  for (int64_t& v : share) v *= hidden;
  comm.all_gather_v(part.raw(), part.numel(), out.raw(), share, DType::kF32);
  return out;
}

// Whether MoE layer l can run the Hopper grouped GEMM: n and k multiples of 8, and a GPU and build that run it.
// Like the grouped GEMV, it trusts that every routed expert is held by this process (no EP dispatcher: the
// forward pass never takes it under expert parallelism).
bool sm90_fits(const GpuState& s, int l) {
  const auto& t = s.experts[l];
  return t[0].n % 8 == 0 && t[0].k % 8 == 0 && t[2].n % 8 == 0 && t[2].k % 8 == 0 &&
         cuda::grouped_gemm_sm90_supported();
}

// Routed experts (and the shared expert) of MoE layer l on device rows h (n, hidden) f32, with hb their bf16
// rounding (the GEMM operand), added into out (n, hidden) f32 (the residual stream). `path` picks the expert
// path. With `counts` ((layers, experts) int64 on the device; required by the grouped GEMV) the token counts go
// to counts row l, and the grouped GEMV and the Hopper grouped GEMM run without a host sync; the cuBLAS paths
// copy the offsets to the host once (counting into `load` when there are no device counts) and run as one
// cuBLAS grouped GEMM per projection (or, for reference, one GEMM per expert). Layers the Hopper kernel does
// not cover (n or k not a multiple of 8) take the cuBLAS grouped path.
void moe_layer(GpuState& s, int l, const Tensor& h, const Tensor& hb, Tensor* counts, ExpertLoad& load, Tensor& out,
               ExpertPath path) {
  const ModelConfig& c = s.config;
  const MoeWeights& m = s.w.layers[l].moe;
  const int64_t n = h.size(0), hidden = c.hidden_size;
  Tensor expert = Tensor::empty({n, c.moe.top_k}, DType::kI32, Device::kCuda);
  Tensor weight = Tensor::empty({n, c.moe.top_k}, DType::kF32, Device::kCuda);
  Tensor logits = Tensor::empty({n, c.moe.num_experts}, DType::kF32, Device::kCuda);
  cuda::DeviceDispatchLayout layout;
  // With counts, the layout's per-expert counts are written straight into row l.
  const Tensor counts_row = counts ? counts->select(l) : Tensor();
  const bool gemv = path == ExpertPath::kGroupedGemv;
  SY_CHECK(!gemv || counts || s.dispatcher, "cuda forward: the grouped GEMV expert path needs device counts");
  if (gemv && !s.dispatcher && s.decode_route && cuda::decode_route_fits(n, hidden, c.moe)) {
    // Decode: router GEMV, routing and layout in one launch.
    // The next layer's q|k|v weight into L2 meanwhile, where asked (SY_PREFETCH_QKV=1, 2: evict-last).
    cuda::L2Prefetch next_qkv;
    if (s.prefetch_qkv > 0 && l + 1 < c.num_layers) {
      next_qkv = cuda::L2Prefetch::of(s.qkv[l + 1]);
      next_qkv.keep = s.prefetch_qkv == 2;
    }
    layout = cuda::decode_route(hb, m.router, m.router_bias, m.score_bias, c.moe, logits, expert, weight,
                                s.router_done, counts_row, next_qkv);
  } else {
    cuda::linear(hb, m.router, m.router_bias, logits);
    cuda::route(logits, m.score_bias, c.moe, expert, weight);
    if (s.dispatcher) {
      cuda::add_inplace(out, routed_experts_ep(s, l, h, expert, weight, load));
      add_shared_expert(s, l, hb, out);
      return;
    }
    layout = cuda::make_dispatch_layout(expert, c.moe.num_experts, /*check_ids=*/false, counts_row);
  }
  const int64_t rows = n * c.moe.top_k;
  const auto& t = s.experts[l];
  Tensor expert_out;  // (rows, hidden) f32 or bf16, in dispatch order
  if (gemv) {
    Tensor g = Tensor::empty({rows, t[0].n}, DType::kF32, Device::kCuda);
    const bool fuse_combine = s.fused_combine && n <= kCombineMaxTokens && !s.expert_bias[l][2].defined() &&
                              cuda::grouped_linear_combine_fits(t[2], c.moe.top_k);
    bool routing_ready = false;  // the combine may read the routing before its wait (see GpuState)
    if (!s.expert_bias[l][0].defined() && !s.expert_bias[l][1].defined() && c.moe.swiglu_limit <= 0) {
      // Gate, up and SiLU in one pass, reading each row's token from h through the layout (no permute).
      routing_ready = fuse_combine && s.early_combine;
      cuda::grouped_swiglu(h, t[0], t[1], layout, g, /*release_after_wait=*/routing_ready);
    } else {  // gpt-oss: biases before the clamped activation
      Tensor permuted = Tensor::empty({rows, hidden}, DType::kF32, Device::kCuda);
      cuda::permute(h, layout, permuted);
      Tensor u = Tensor::empty({rows, t[1].n}, DType::kF32, Device::kCuda);
      cuda::grouped_linear(permuted, t[0], layout.offsets, g, n);  // no expert has more rows than tokens
      cuda::grouped_linear(permuted, t[1], layout.offsets, u, n);
      add_biases(s, l, 0, g, expert, layout);
      add_biases(s, l, 1, u, expert, layout);
      activate(c.moe, g, u);
    }
    if (fuse_combine) {
      // Down and the weighted combine into out in one launch (no expert rows written).
      cuda::grouped_linear_combine(g, t[2], layout, expert, weight, out, routing_ready);
      add_shared_expert(s, l, hb, out);
      return;
    }
    expert_out = Tensor::empty({rows, hidden}, DType::kF32, Device::kCuda);
    cuda::grouped_linear(g, t[2], layout.offsets, expert_out, n);
    add_biases(s, l, 2, expert_out, expert, layout);
  } else if (path == ExpertPath::kSm90Grouped && counts && sm90_fits(s, l)) {
    // Gate, up and the activation in one launch that reads each row's token from hb through the layout (no
    // permute), down in a second; expert biases and gpt-oss's clamp applied to the f32 accumulators; bf16
    // from the operands to the combine, as in the cuBLAS path below.
    cuda::SwigluSm90Args act;
    act.gate_bias = s.expert_bias[l][0];
    act.up_bias = s.expert_bias[l][1];
    act.alpha = static_cast<float>(c.moe.swiglu_alpha);
    act.limit = static_cast<float>(c.moe.swiglu_limit);
    Tensor g = Tensor::empty({rows, t[0].n}, DType::kBF16, Device::kCuda);
    cuda::grouped_swiglu_sm90(hb, t[0], t[1], layout, g, act);
    expert_out = Tensor::empty({rows, hidden}, DType::kBF16, Device::kCuda);
    cuda::grouped_linear_sm90(g, t[2], layout.offsets, expert_out, s.expert_bias[l][2]);
  } else {
    Tensor offsets_host = cuda::to_host(layout.offsets);  // one host sync per MoE layer
    const std::vector<int64_t> offsets(offsets_host.i64(), offsets_host.i64() + offsets_host.numel());
    for (int e = 0; e < c.moe.num_experts; ++e) {
      if (!counts) load.tokens[l][e] += offsets[e + 1] - offsets[e];  // else the layout wrote them to counts
      SY_CHECK(offsets[e + 1] == offsets[e] || m.experts[e].gate.defined(), "cuda forward: tokens routed to expert ",
               e, " which is not loaded");
    }
    if (path == ExpertPath::kPerExpert) {
      Tensor permuted = Tensor::empty({rows, hidden}, DType::kF32, Device::kCuda);
      cuda::permute(h, layout, permuted);
      expert_out = Tensor::empty({rows, hidden}, DType::kF32, Device::kCuda);
      for (int e = 0; e < c.moe.num_experts; ++e) {
        const int64_t lo = offsets[e], hi = offsets[e + 1];
        if (hi == lo) continue;
        Tensor out_e = expert_out.slice(0, lo, hi);
        cuda::linear(gated_hidden(permuted.slice(0, lo, hi), m.experts[e], c.moe), m.experts[e].down,
                     m.experts[e].down_bias, out_e);
      }
    } else {
      // bf16 from the permute to the combine: the tensor cores read bf16 anyway, and f32 copies of
      // (tokens * top_k) rows would dominate the memory traffic of large prefills. Experts with biases
      // (gpt-oss) keep their projections' outputs in f32, so that bias, clamp and activation are not applied
      // to already-rounded values (bf16 there measured 2.1e-2 from the CPU logits on the gpt-oss fixture).
      const DType act = s.expert_bias[l][0].defined() ? DType::kF32 : DType::kBF16;
      Tensor permuted = Tensor::empty({rows, hidden}, DType::kBF16, Device::kCuda);
      cuda::permute(hb, layout, permuted);
      Tensor g = Tensor::empty({rows, t[0].n}, act, Device::kCuda);
      Tensor u = Tensor::empty({rows, t[1].n}, act, Device::kCuda);
      expert_out = Tensor::empty({rows, hidden}, act, Device::kCuda);
      cuda::grouped_gemm(permuted, t[0], offsets, g);
      cuda::grouped_gemm(permuted, t[1], offsets, u);
      add_biases(s, l, 0, g, expert, layout);
      add_biases(s, l, 1, u, expert, layout);
      activate(c.moe, g, u);
      cuda::grouped_gemm(g, t[2], offsets, expert_out);
      add_biases(s, l, 2, expert_out, expert, layout);
    }
  }
  cuda::unpermute(expert_out, layout, weight, out);  // adds the weighted expert rows into out
  add_shared_expert(s, l, hb, out);
}

// Reads the forward pass's switches (GpuSwitches) and the process-wide kernel settings from the environment.
// A switch left unset takes its default; a process-wide setting left unset stays as the program set it at
// upload (reapply false: s.uploaded_with records it) or returns to that (reapply true, reconfigure). Bad values,
// and switches this GPU or build cannot honour, throw InvalidArgument / Unsupported with the switch's name.
void apply_switches(GpuState& s, bool reapply) {
  static_cast<GpuSwitches&>(s) = GpuSwitches{};
  // Programmatic dependent launch of the decode chain's kernels (process-wide): on by default on a compute
  // capability 9.0 GPU (measured 3% off a Qwen3-30B-A3B batch-1 step on an H100); SY_PDL=0 turns it off.
  cuda::default_programmatic_launch();
  if (reapply) {
    s.uploaded_with.restore();
  } else {
    s.uploaded_with = KernelSwitches::current();
  }
  s.device_sampling = env_flag("SY_GPU_SAMPLING", s.device_sampling);
  s.gemv_max_tokens = env_int("SY_GROUPED_GEMV_MAX_TOKENS", s.gemv_max_tokens, 0, int64_t{1} << 30);
  s.use_flash = env_flag("SY_FLASH_PREFILL", s.use_flash);
  s.fused_qkv = env_flag("SY_FUSED_QKV", s.fused_qkv);
  s.decode_route = env_flag("SY_DECODE_ROUTE", s.decode_route);
  s.fused_norm = env_flag("SY_FUSED_NORM", s.fused_norm);
  s.fused_combine = env_flag("SY_FUSED_COMBINE", s.fused_combine);
  s.early_combine = env_flag("SY_EARLY_COMBINE", s.early_combine);
  s.pinned_io = env_flag("SY_PINNED_IO", s.pinned_io);
  s.prefetch_keys = env_flag("SY_PREFETCH_KEYS", s.prefetch_keys);
  s.fused_attention = env_flag("SY_FUSED_ATTENTION", s.fused_attention);
  s.prefetch_o = env_flag("SY_PREFETCH_O", s.prefetch_o);
  s.prefetch_qkv = static_cast<int>(env_int("SY_PREFETCH_QKV", s.prefetch_qkv, 0, 2));
  if (env_set("SY_GROUPED_ATTENTION")) s.grouped_attention = env_flag("SY_GROUPED_ATTENTION", false) ? 1 : 0;
  s.grouped_max_keys_alone =
      env_int("SY_GROUPED_ATTENTION_MAX_KEYS", kGroupedAttentionMaxKeysAlone, 0, int64_t{1} << 40);
  s.flash_sm90 = cuda::flash_attention_sm90_supported();
  s.sm90_experts = cuda::grouped_gemm_sm90_supported();
  if (env_set("SY_FLASH_SM90")) {
    s.flash_sm90 = env_flag("SY_FLASH_SM90", false);
    SY_REQUIRE(!s.flash_sm90 || cuda::flash_attention_sm90_supported(), Unsupported, "cuda",
               "SY_FLASH_SM90=1 needs a compute capability 9.0 GPU and a build with sm_90a code; unset it here");
  }
  if (env_set("SY_PDL")) {
    const bool want = env_flag("SY_PDL", true);
    SY_REQUIRE(cuda::set_programmatic_launch(want) == want, Unsupported, "cuda",
               "SY_PDL=1 needs a compute capability 9.0 GPU and a build with sm_90a code; unset it here");
  }
  if (env_set("SY_CUDNN_ATTENTION")) {
    s.flash_cudnn = env_flag("SY_CUDNN_ATTENTION", false);
    std::string why;
    SY_REQUIRE(!s.flash_cudnn || cuda::flash_attention_cudnn_available(&why), Unsupported, "cuda",
               "SY_CUDNN_ATTENTION=1 needs cuDNN 9: ", why, "; unset it here");
  }
  // Process-wide (the kernel's tile width), like the other cuda:: settings below.
  if (const char* env = std::getenv("SY_SM90_TILE_N")) {
    const std::string v = env;
    SY_REQUIRE(v == "0" || v == "128" || v == "256", InvalidArgument, "cuda",
               "SY_SM90_TILE_N must be 128, 256 or 0 (by row count), got '", v, "'");
    cuda::set_grouped_gemm_sm90_tile_n(std::stoi(v));
  }
  // The sm90 grouped GEMM's warp-specialised persistent schedule (on by default; SY_SM90_WS=0: one tile per
  // block), its weight tiles by TMA (on; SY_SM90_TMA=0: cp.async) and its ping-pong form of 128-column tiles
  // (off: split tiles measured faster, batch-64 decode 0.974x; SY_SM90_PINGPONG=1).
  if (env_set("SY_SM90_WS")) cuda::set_grouped_gemm_sm90_warp_specialized(env_flag("SY_SM90_WS", true));
  if (env_set("SY_SM90_TMA")) cuda::set_grouped_gemm_sm90_tma(env_flag("SY_SM90_TMA", true));
  if (env_set("SY_SM90_PINGPONG")) cuda::set_grouped_gemm_sm90_pingpong(env_flag("SY_SM90_PINGPONG", false));
  // Block pairs sharing weight tiles by TMA multicast, for the split-tile TMA form (off: slower on an H100,
  // 2026-12-06, a 16K-token layer 3.56 against 3.21 ms; SY_SM90_CLUSTER=1).
  if (env_set("SY_SM90_CLUSTER")) cuda::set_grouped_gemm_sm90_cluster(env_flag("SY_SM90_CLUSTER", false));
  // Its idle halves skipped (on; SY_SM90_SKIP_HALF=0 multiplies them: a 4096-token layer 1.05x, H100
  // 2026-12-06).
  if (env_set("SY_SM90_SKIP_HALF")) cuda::set_grouped_gemm_sm90_skip_idle_halves(env_flag("SY_SM90_SKIP_HALF", true));
  if (env_set("SY_SM90_EXPERTS")) {
    s.sm90_experts = env_flag("SY_SM90_EXPERTS", false);
    SY_REQUIRE(!s.sm90_experts || cuda::grouped_gemm_sm90_supported(), Unsupported, "cuda",
               "SY_SM90_EXPERTS=1 needs a compute capability 9.0 GPU and a build with sm_90a code; unset it here");
  }
  // Routing in one warp where it applies (on by default; SY_WARP_ROUTE=0 routes with the whole block).
  if (env_set("SY_WARP_ROUTE")) cuda::set_warp_routing(env_flag("SY_WARP_ROUTE", false));
  // The chunked dispatch layout of large passes (on by default: H100 2026-12-06, a 16K-token layer 3.70 ->
  // 3.33 ms; SY_CHUNKED_LAYOUT=0 turns it off).
  if (env_set("SY_CHUNKED_LAYOUT")) cuda::set_chunked_dispatch_layout(env_flag("SY_CHUNKED_LAYOUT", true));
  // The combine of large passes by token rows, the next token's slots read early (on; SY_TOKEN_COMBINE=0).
  if (env_set("SY_TOKEN_COMBINE")) cuda::set_token_combine(env_flag("SY_TOKEN_COMBINE", true));
  // The decode router's cluster finish (on by default; SY_CLUSTER_ROUTE=0 turns it off).
  if (env_set("SY_CLUSTER_ROUTE")) cuda::set_cluster_routing(env_flag("SY_CLUSTER_ROUTE", true));
  // Dense projections of up to SY_DENSE_GEMV rows (0 to 4; 0: always cuBLAS) through our GEMV; process-wide.
  if (env_set("SY_DENSE_GEMV")) cuda::set_dense_gemv_max_rows(static_cast<int>(env_int("SY_DENSE_GEMV", 0, 0, 4)));
  // Weight pieces per lane the GEMV requests before its programmatic-launch wait (1, 2 or 4; process-wide).
  // Whole rows before the wait measured no gain (2: batch-1 step 1.000x) or a loss (4: 1.023x; the o
  // projection's stream then queues ahead of the attention's reads), H100 2026-12-06.
  if (env_set("SY_GEMV_PRELOAD")) {
    const int64_t pieces = env_int("SY_GEMV_PRELOAD", 1, 1, 4);
    SY_REQUIRE(pieces != 3, InvalidArgument, "cuda", "SY_GEMV_PRELOAD must be 1, 2 or 4, got 3");
    cuda::set_dense_gemv_preload(static_cast<int>(pieces));
  }
  // The decode combine's weight rows by bulk copy into shared memory (Hopper; off by default: one wave of
  // blocks, but their weight stream then competes with gate|up's; batch-1 step 1.046x, H100 2026-12-06).
  if (env_set("SY_COMBINE_BULK")) {
    const bool want = env_flag("SY_COMBINE_BULK", false);
    SY_REQUIRE(cuda::set_grouped_linear_combine_bulk(want) == want, Unsupported, "cuda",
               "SY_COMBINE_BULK=1 needs a compute capability 9.0 GPU and a build with sm_90a code; unset it here");
  }
  // Key splits per (query, head) of decode-sized attention (0: chosen from the batch).
  s.key_splits = static_cast<int>(env_int("SY_ATTENTION_KEY_SPLITS", s.key_splits, 0, 1024));
  s.min_split_keys = static_cast<int>(env_int("SY_ATTENTION_MIN_SPLIT_KEYS", s.min_split_keys, 0, 1 << 20));
}

}  // namespace

GpuStatePtr upload(const ModelConfig& config, const ModelWeights& weights, const ops::RopeTable& rope,
                   parallel::Comm* ep, bool int8_dispatch) {
  GpuStatePtr s(new GpuState);
  if (ep) {
    // One GPU per rank: the launcher's node-local rank (Open MPI, MPICH, Slurm) when it says, else the
    // world rank, modulo the visible GPUs. The NCCL communicator selects it for this thread, so every
    // allocation below lands there; it keeps the host communicator's timeout.
    const int devices = static_cast<int>(cuda_devices().size());
    SY_REQUIRE(devices > 0, Unsupported, "cuda", "no CUDA device is visible to rank ", ep->world_rank());
    int local = ep->world_rank();
    for (const char* var : {"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID"}) {
      if (const char* v = std::getenv(var); v && *v) {
        local = std::atoi(v);
        break;
      }
    }
    const int device = local % devices;
    require_cuda_device(device);
    s->ep_comm = parallel::make_nccl_comm(*ep, device, ep->options());
    s->dispatcher = std::make_unique<moe::DeviceTokenDispatcher>(*s->ep_comm, config.moe.num_experts, int8_dispatch);
  } else {
    require_cuda_device();
  }
  load_cublas();  // a missing cuBLAS is reported here, not at the first GEMM
  cuda::prepare_blas();  // the handle too, before any decode step can be captured as a graph
  s->config = config;
  s->rope = cuda::upload_rope(rope);
  s->use_graphs = env_flag("SY_CUDA_GRAPHS", s->use_graphs);
  apply_switches(*s, /*reapply=*/false);
  SY_REQUIRE(!config.attention.mla || config.attention.kv_lora_rank <= 512, Unsupported, "cuda",
             "MLA with kv_lora_rank ", config.attention.kv_lora_rank,
             " (the GPU attends over at most 512 latent values per head); use the CPU");
  Uploader up;
  s->w.embed = up.matrix(weights.embed);
  s->w.final_norm = up.vector(weights.final_norm);
  s->w.lm_head = up.matrix(weights.lm_head);
  for (const LayerWeights& l : weights.layers) {
    LayerWeights d;
    d.input_norm = up.vector(l.input_norm);
    d.post_attention_norm = up.vector(l.post_attention_norm);
    const AttentionWeights& a = l.attention;
    if (a.q.defined() && a.k.defined() && a.v.defined()) {
      auto [qkv, qkv_bias] = stack_qkv(a);
      up.bytes += qkv.nbytes() + (qkv_bias.defined() ? qkv_bias.nbytes() : 0);
      const int64_t rq = a.q.size(0), rk = a.k.size(0);
      d.attention.q = qkv.slice(0, 0, rq);
      d.attention.k = qkv.slice(0, rq, rq + rk);
      d.attention.v = qkv.slice(0, rq + rk, qkv.size(0));
      if (a.q_bias.defined()) d.attention.q_bias = qkv_bias.slice(0, 0, rq);  // views too
      if (a.k_bias.defined()) d.attention.k_bias = qkv_bias.slice(0, rq, rq + rk);
      if (a.v_bias.defined()) d.attention.v_bias = qkv_bias.slice(0, rq + rk, qkv.size(0));
      s->qkv.push_back(qkv);
      s->qkv_bias.push_back(qkv_bias);
    } else {
      d.attention.q = up.matrix(a.q);
      d.attention.k = up.matrix(a.k);
      d.attention.v = up.matrix(a.v);
      d.attention.q_bias = up.vector(a.q_bias);
      d.attention.k_bias = up.vector(a.k_bias);
      d.attention.v_bias = up.vector(a.v_bias);
      s->qkv.emplace_back();
      s->qkv_bias.emplace_back();
    }
    d.attention.o = up.matrix(a.o);
    d.attention.o_bias = up.vector(a.o_bias);
    d.attention.q_norm = up.vector(a.q_norm);
    d.attention.k_norm = up.vector(a.k_norm);
    d.attention.sinks = up.vector(a.sinks);
    d.attention.q_a = up.matrix(a.q_a);
    d.attention.q_a_norm = up.vector(a.q_a_norm);
    d.attention.q_b = up.matrix(a.q_b);
    d.attention.kv_a = up.matrix(a.kv_a);
    d.attention.kv_a_bias = up.vector(a.kv_a_bias);
    d.attention.kv_a_norm = up.vector(a.kv_a_norm);
    d.attention.kv_b = up.matrix(a.kv_b);
    d.is_moe = l.is_moe;
    if (l.is_moe) {
      d.moe.router = up.matrix(l.moe.router);
      d.moe.router_bias = up.vector(l.moe.router_bias);
      d.moe.score_bias = up.vector(l.moe.score_bias);
      for (const moe::GatedMlpWeights& e : l.moe.experts) {
        d.moe.experts.push_back(e.gate.defined() ? upload_mlp(up, e) : moe::GatedMlpWeights{});
      }
      if (l.moe.shared.gate.defined()) d.moe.shared = upload_mlp(up, l.moe.shared);
      d.moe.shared_gate = up.matrix(l.moe.shared_gate);
    } else {
      d.mlp = upload_mlp(up, l.mlp);
    }
    std::array<cuda::ExpertWeightTable, 3> tables;
    std::array<Tensor, 3> biases;
    if (l.is_moe) {
      biases = {stack_expert_biases(l.moe.experts, &moe::GatedMlpWeights::gate_bias),
                stack_expert_biases(l.moe.experts, &moe::GatedMlpWeights::up_bias),
                stack_expert_biases(l.moe.experts, &moe::GatedMlpWeights::down_bias)};
      SY_REQUIRE(!s->dispatcher || !biases[0].defined(), Unsupported, "cuda",
                 "expert parallelism on the GPU does not run experts with biases (gpt-oss) yet; use the CPU");
      std::vector<Tensor> gate, upw, down;
      for (const moe::GatedMlpWeights& e : d.moe.experts) {
        gate.push_back(e.gate);
        upw.push_back(e.up);
        down.push_back(e.down);
      }
      tables = {cuda::make_expert_weight_table(gate), cuda::make_expert_weight_table(upw),
                cuda::make_expert_weight_table(down)};
    }
    s->experts.push_back(std::move(tables));
    s->expert_bias.push_back(std::move(biases));
    s->w.layers.push_back(std::move(d));
  }
  s->bytes = up.bytes;
  s->router_done = Tensor::zeros({1}, DType::kI32, Device::kCuda);
  cuda::synchronize();
  return s;
}

size_t gpu_weight_bytes(const GpuState& state) { return state.bytes; }

const char* expert_path_name(ExpertPath path) {
  switch (path) {
    case ExpertPath::kGroupedGemv: return "grouped GEMV";
    case ExpertPath::kCublasGrouped: return "cuBLAS grouped GEMM";
    case ExpertPath::kPerExpert: return "per-expert cuBLAS";
    case ExpertPath::kSm90Grouped: return "sm90 grouped GEMM";
  }
  return "?";
}

void gpu_moe_layer(GpuState& state, int layer, const Tensor& h, const Tensor& hb, Tensor& out, ExpertPath path) {
  const ModelConfig& c = state.config;
  SY_REQUIRE(layer >= 0 && layer < c.num_layers && c.layer_is_moe[layer], InvalidArgument, "cuda",
             "layer ", layer, " is not a MoE layer");
  SY_REQUIRE(h.device() == Device::kCuda && hb.device() == Device::kCuda && out.device() == Device::kCuda &&
                 h.is_contiguous() && hb.is_contiguous() && out.is_contiguous() &&
                 h.dtype() == DType::kF32 && hb.dtype() == DType::kBF16 && out.dtype() == DType::kF32 &&
                 h.dim() == 2 && h.size(1) == c.hidden_size && hb.shape() == h.shape() && out.shape() == h.shape(),
             InvalidArgument, "cuda", "the MoE layer takes h (n, ", c.hidden_size, ") f32, hb bf16 and out f32 of that shape on the device; got h ",
             h.describe(), " hb ", hb.describe(), " out ", out.describe());
  ExpertLoad load;
  load.tokens.assign(c.num_layers, std::vector<int64_t>(c.moe.num_experts, 0));
  Tensor counts = Tensor::zeros({c.num_layers, c.moe.num_experts}, DType::kI64, Device::kCuda);
  SY_REQUIRE(path != ExpertPath::kSm90Grouped || sm90_fits(state, layer), Unsupported, "cuda",
             "the sm90 grouped GEMM cannot run layer ", layer, " here (needs a compute capability 9.0 GPU, sm_90a code ",
             "and expert matrices with n and k multiples of 8)");
  const bool device_counts = path == ExpertPath::kGroupedGemv || path == ExpertPath::kSm90Grouped;
  moe_layer(state, layer, h, hb, device_counts ? &counts : nullptr, load, out, path);
}

namespace {

// Paged attention of query rows [r0, r1) of `b` (q: (n, heads, dk) f32) over layer l's cache into the same
// rows of out.
void paged_rows(PagedKvPool& pool, int l, const DeviceBatch& b, const cuda::AttentionArgs& args, const Tensor& q,
                int64_t r0, int64_t r1, Tensor& out) {
  if (r1 <= r0) return;
  Tensor rows = out.slice(0, r0, r1);
  cuda::paged_attention(q.slice(0, r0, r1), pool.keys(l), pool.values(l), b.positions.slice(0, r0, r1),
                        b.starts.slice(0, r0, r1), b.tables, pool.block_size(), args, rows);
}

// Rows [r0, r1) of an f32 device tensor as a new bf16 tensor (the prefill kernel's operands).
Tensor bf16_rows(const Tensor& x, int64_t r0, int64_t r1) {
  Shape shape = x.shape();
  shape[0] = r1 - r0;
  Tensor out = Tensor::empty(shape, DType::kBF16, Device::kCuda);
  cuda::cast(x.slice(0, r0, r1), out);
  return out;
}

// Attention of every query row of `b` for layer l into att (n, heads, dv): whole fresh prompts through the
// tensor-core prefill kernel when the layer allows it (head dim 64 or 128 for keys and values; windows and
// sinks included), the rest through the paged kernel in runs of consecutive rows.
void attend(GpuState& s, const DeviceBatch& b, PagedKvPool& pool, int l, const cuda::AttentionArgs& args,
            const Tensor& q3, const Tensor& k3, const Tensor& v3, Tensor& att) {
  const AttentionConfig& a = s.config.attention;
  const int64_t d = a.head_dim;
  const bool flash_ok = s.use_flash && (d == 64 || d == 128) && a.v_head_dim == d && !b.fresh_prompts.empty();
  if (!flash_ok) {
    paged_rows(pool, l, b, args, q3, 0, b.n, att);
    return;
  }
  b.for_each_cached_run([&](int64_t r0, int64_t r1) { paged_rows(pool, l, b, args, q3, r0, r1, att); });
  // Every fresh prompt of the pass in one packed launch, over bf16 copies of the span of rows that holds them.
  const int64_t s0 = b.fresh_begin, s1 = b.fresh_end;
  Tensor qb = bf16_rows(q3, s0, s1), kb = bf16_rows(k3, s0, s1), vb = bf16_rows(v3, s0, s1);
  Tensor att_span = att.slice(0, s0, s1);
  cuda::flash_attention(qb, kb, vb, b.fresh_in_span, args, att_span);
}

// GQA / MHA projections of h (n, hidden) bf16, the normalised rows: optional q/k norms (over the projection
// or per head) and clipping, then RoPE on q and k.
void gqa_qkv(GpuState& s, const AttentionWeights& w, const DeviceBatch& b, const Tensor& h, Tensor& q3, Tensor& k3,
             Tensor& v3) {
  const AttentionConfig& a = s.config.attention;
  const int64_t n = b.n;
  const float eps = static_cast<float>(s.config.rms_norm_eps);
  Tensor q = linear(h, w.q, w.q_bias), k = linear(h, w.k, w.k_bias), v = linear(h, w.v, w.v_bias);
  if (a.qk_norm == QkNorm::kFull) {
    cuda::rms_norm(q, w.q_norm, eps, q);
    cuda::rms_norm(k, w.k_norm, eps, k);
  }
  if (a.clip_qkv > 0) {
    for (Tensor* t : {&q, &k, &v}) cuda::clamp_inplace(*t, static_cast<float>(a.clip_qkv));
  }
  if (a.qk_norm == QkNorm::kPerHead) {
    Tensor qf = q.reshape({n * a.num_heads, a.head_dim}), kf = k.reshape({n * a.num_kv_heads, a.head_dim});
    cuda::rms_norm(qf, w.q_norm, eps, qf);
    cuda::rms_norm(kf, w.k_norm, eps, kf);
  }
  q3 = q.reshape({n, a.num_heads, a.head_dim});
  k3 = k.reshape({n, a.num_kv_heads, a.head_dim});
  v3 = v.reshape({n, a.num_kv_heads, a.v_head_dim});
  cuda::apply_rope(q3, b.positions, s.rope);
  cuda::apply_rope(k3, b.positions, s.rope);
}

// MLA (DeepSeek-V2/V3) attention of layer l in the absorbed form, the CPU's Model::mla_block on the device.
// The pool caches one row per token, [normalised latent (rank) | rotary key (rope)] in bf16, whose first rank
// columns are the values (576 values per token and layer for DeepSeek-V3, not 128 heads x 320). Per head h,
// with kv_b's key rows K_h (nope, rank) and value rows V_h (dv, rank): q_lat_h = K_h^T q_nope_h (one batched
// GEMM over the heads, kv_b read in place), every head attends over the shared rows with the query
// [q_lat_h | roped q_pe_h], and V_h lifts the attended latent to dv (a second batched GEMM). Same scores and
// softmax scale as the expanded form. h: (n, hidden) bf16, the normalised rows. Returns (n, heads * dv) f32.
Tensor mla_attention(GpuState& s, int l, const DeviceBatch& b, PagedKvPool& pool, const cuda::AttentionArgs& args,
                     const Tensor& h) {
  const AttentionConfig& a = s.config.attention;
  const AttentionWeights& w = s.w.layers[l].attention;
  const int64_t n = b.n, heads = a.num_heads, rank = a.kv_lora_rank;
  const int64_t nope = a.qk_nope_head_dim, rope = a.qk_rope_head_dim, dq = nope + rope, dv = a.v_head_dim;
  const int64_t dk = rank + rope;  // the cached row and the absorbed query
  const float eps = 1e-6f;  // q_a_layernorm and kv_a_layernorm use 1e-6 whatever rms_norm_eps says
  Tensor q;  // (n, heads * dq)
  if (w.q_a.defined()) {
    Tensor qa = linear(h, w.q_a, Tensor());
    cuda::rms_norm(qa, w.q_a_norm, eps, qa);
    q = linear(qa, w.q_b, Tensor());
  } else {
    q = linear(h, w.q, Tensor());
  }
  // The cached row of each new token.
  Tensor kv_a = linear(h, w.kv_a, w.kv_a_bias);  // (n, rank + rope)
  Tensor latent = Tensor::empty({n, rank}, DType::kF32, Device::kCuda);
  Tensor k_pe = Tensor::empty({n, rope}, DType::kF32, Device::kCuda);
  cuda::copy_columns(kv_a, 0, latent, 0, rank);
  cuda::copy_columns(kv_a, rank, k_pe, 0, rope);
  cuda::rms_norm(latent, w.kv_a_norm, eps, latent);
  Tensor k_pe3 = k_pe.reshape({n, 1, rope});
  cuda::apply_rope(k_pe3, b.positions, s.rope);
  Tensor row = Tensor::empty({n, dk}, DType::kF32, Device::kCuda);
  cuda::copy_columns(latent, 0, row, 0, rank);
  cuda::copy_columns(k_pe, 0, row, rank, rope);
  cuda::scatter_rows(pool.keys(l), row.reshape({n, 1, dk}), b.rows);  // the values are its first rank columns
  // RoPE on q's rotary columns, through a compact copy (both forms below use it).
  Tensor qf = q.reshape({n * heads, dq});
  Tensor q_pe = Tensor::empty({n * heads, rope}, DType::kF32, Device::kCuda);
  cuda::copy_columns(qf, nope, q_pe, 0, rope);
  Tensor q_pe3 = q_pe.reshape({n, heads, rope});
  cuda::apply_rope(q_pe3, b.positions, s.rope);
  Tensor kv_b = w.kv_b.reshape({heads, nope + dv, rank});
  // Whole fresh prompts take the expanded form on the tensor cores when the head dims allow (DeepSeek's 192 /
  // 128): per-head keys and values from kv_b on the chunk's own latent rows, which is fewer operations per key
  // than the absorbed form's 576 / 512 (the cache still holds only the latent rows). The other rows
  // (continuing chunks, decode) attend over the cache in the absorbed form.
  const bool flash = s.use_flash && !b.fresh_prompts.empty() && dq == 192 && dv == 128;
  Tensor att = Tensor::empty({n, heads, dv}, DType::kF32, Device::kCuda);
  if (!flash || b.fresh_rows < n) {  // some rows attend over the cache: the absorbed form
    // Absorbed queries (n, heads, rank + rope): K_h^T q_nope_h into the first rank columns, the RoPE'd
    // rotary part after them.
    Tensor q_abs = Tensor::empty({n, heads, dk}, DType::kF32, Device::kCuda);
    Tensor q_abs_rows = q_abs.reshape({n * heads, dk});
    cuda::copy_columns(q_pe, 0, q_abs_rows, rank, rope);
    Tensor qb = Tensor::empty({n, heads, dq}, DType::kBF16, Device::kCuda);
    cuda::cast(q.reshape({n, heads, dq}), qb);
    Tensor q_lat = q_abs.slice(2, 0, rank);
    cuda::batched_linear(qb.slice(2, 0, nope), kv_b.slice(1, 0, nope), cuda::BatchedWeight::kInOut, q_lat);
    Tensor att_lat = Tensor::empty({n, heads, rank}, DType::kF32, Device::kCuda);
    if (!flash) {
      paged_rows(pool, l, b, args, q_abs, 0, n, att_lat);
    } else {
      cuda::zero(att_lat.raw(), att_lat.nbytes());  // the fresh rows' latent is not attended (their att is below)
      b.for_each_cached_run([&](int64_t r0, int64_t r1) { paged_rows(pool, l, b, args, q_abs, r0, r1, att_lat); });
    }
    cuda::batched_linear(att_lat, kv_b.slice(1, nope, nope + dv), cuda::BatchedWeight::kOutIn, att);
  }
  if (flash) {
    // Only the span of rows [s0, s1) that holds the fresh prompts is expanded (a pass may also carry decode
    // rows and continuing chunks).
    const int64_t s0 = b.fresh_begin, s1 = b.fresh_end, m = s1 - s0;
    cuda::copy_columns(q_pe, 0, qf, nope, rope);  // q's rotary columns, RoPE'd, back into q
    Tensor kv_up = linear(latent.slice(0, s0, s1), w.kv_b, Tensor()).reshape({m * heads, nope + dv});
    Tensor k = Tensor::empty({m * heads, dq}, DType::kF32, Device::kCuda);
    Tensor v = Tensor::empty({m * heads, dv}, DType::kF32, Device::kCuda);
    cuda::copy_columns(kv_up, 0, k, 0, nope);
    cuda::copy_columns(k_pe.slice(0, s0, s1), 0, k, nope, rope, heads);  // one rotary key shared by every head
    cuda::copy_columns(kv_up, nope, v, 0, dv);
    Tensor qe = bf16_rows(q.reshape({n, heads, dq}), s0, s1);
    Tensor ke = bf16_rows(k.reshape({m, heads, dq}), 0, m), ve = bf16_rows(v.reshape({m, heads, dv}), 0, m);
    Tensor att_span = att.slice(0, s0, s1);
    cuda::flash_attention(qe, ke, ve, b.fresh_in_span, args, att_span);  // overwrites the fresh rows
  }
  return att.reshape({n, heads * dv});
}

// Every layer and the LM head over `b`; returns the logits of b.logit_rows, (k, vocab) f32 on the device.
// Routed experts take `path` (see moe_layer). With `counts` ((layers, experts) int64, zeroed here) their token
// counts land there; without, they are counted into `load` after a host sync per MoE layer. No host
// synchronisation otherwise, so a grouped GEMV pass can be captured whole in a CUDA graph.
Tensor run_layers(GpuState& s, const DeviceBatch& b, PagedKvPool& pool, Tensor* counts, ExpertLoad& load,
                  ExpertPath path) {
  const ModelConfig& c = s.config;
  const AttentionConfig& a = c.attention;
  const int64_t n = b.n, hidden = c.hidden_size;
  const float eps = static_cast<float>(c.rms_norm_eps);
  if (counts) cuda::zero(counts->raw(), counts->nbytes());
  Tensor x = Tensor::empty({n, hidden}, DType::kF32, Device::kCuda);  // residual stream
  cuda::embedding(b.ids, s.w.embed, x, /*check_ids=*/false);          // ids validated by Model::forward_batch
  // Normalised rows: h f32 (the MoE block reads it) and hb, its bf16 rounding, written by the same pass (the
  // operand of the GEMMs that follow: no separate casts; a decode pass's q|k|v GEMV folds the norm in instead).
  Tensor h = Tensor::empty({n, hidden}, DType::kF32, Device::kCuda);
  Tensor hb = Tensor::empty({n, hidden}, DType::kBF16, Device::kCuda);
  Tensor none;
  for (int l = 0; l < c.num_layers; ++l) {
    const LayerWeights& lw = s.w.layers[l];
    const AttentionWeights& w = lw.attention;
    // Passes small enough for the dense GEMV fold the input norm into the stacked q|k|v projection; every
    // other path reads hb.
    const bool fused_qkv = !a.mla && s.fused_qkv && s.qkv[l].defined() && a.qk_norm != QkNorm::kFull;
    const bool norm_in_qkv = fused_qkv && s.fused_norm && n <= cuda::dense_gemv_max_rows();
    if (!norm_in_qkv) cuda::rms_norm_dual(x, lw.input_norm, eps, none, hb);
    cuda::AttentionArgs args;
    args.scale = static_cast<float>(a.softmax_scale);
    args.window = c.layer_sliding_window[l];
    args.sinks = w.sinks;
    args.key_splits = s.key_splits;
    args.min_split_keys = s.min_split_keys;
    // By default only decode passes (what was measured); prefill chunks keep the per-head kernel.
    args.grouped_decode =
        grouped_decode_attention(s.grouped_attention, b.decode_only, n, b.longest_keys, s.grouped_max_keys_alone);
    args.cached_keys_ready = s.prefetch_keys && b.decode_only;
    if (s.prefetch_o && b.decode_only) args.l2_prefetch = cuda::L2Prefetch::of(w.o);
    args.sm90 = s.flash_sm90;
    args.cudnn = s.flash_cudnn;
    Tensor att;  // (n, heads * dv)
    if (a.mla) {
      att = mla_attention(s, l, b, pool, args, hb);
    } else {
      // q3 (n, heads, dk), k3 (n, key heads, dk), v3 (n, key heads, dv): positions applied, cached.
      Tensor q3, k3, v3;
      if (fused_qkv) {
        // One GEMM for q, k and v (the input norm folded in where norm_in_qkv), then one launch for bias, clip,
        // per-head norms, RoPE and the pool writes.
        Tensor qkv = Tensor::empty({n, s.qkv[l].size(0)}, DType::kF32, Device::kCuda);
        if (norm_in_qkv) {
          cuda::rms_norm_linear(x, lw.input_norm, eps, s.qkv[l], Tensor(), qkv);
        } else {
          cuda::linear(hb, s.qkv[l], Tensor(), qkv);
        }
        cuda::QkvEpilogueArgs e;
        e.bias = s.qkv_bias[l];
        e.clip = static_cast<float>(a.clip_qkv);
        e.eps = eps;
        if (a.qk_norm == QkNorm::kPerHead) {
          SY_CHECK(w.q_norm.defined() && w.k_norm.defined(), "cuda forward: layer ", l, " lacks its q/k norms");
          e.q_norm = w.q_norm;
          e.k_norm = w.k_norm;
        }
        if (s.fused_attention && b.decode_only &&
            cuda::paged_attention_qkv_fits(a.num_heads, a.num_kv_heads, a.head_dim, a.v_head_dim, s.rope)) {
          // A decode pass: the epilogue folded into the attention, per head or grouped (no q3/k3/v3; the new
          // keys and values go to the pool from the attention's blocks).
          Tensor att3 = Tensor::empty({n, a.num_heads, a.v_head_dim}, DType::kF32, Device::kCuda);
          cuda::paged_attention_qkv(qkv, e, s.rope, b.rows, pool.keys(l), pool.values(l), b.positions, b.starts,
                                    b.tables, pool.block_size(), args, att3);
          att = att3.reshape({n, int64_t{a.num_heads} * a.v_head_dim});
        } else {
          q3 = Tensor::empty({n, a.num_heads, a.head_dim}, DType::kF32, Device::kCuda);
          k3 = Tensor::empty({n, a.num_kv_heads, a.head_dim}, DType::kF32, Device::kCuda);
          v3 = Tensor::empty({n, a.num_kv_heads, a.v_head_dim}, DType::kF32, Device::kCuda);
          cuda::qkv_epilogue(qkv, e, b.positions, s.rope, b.rows, q3, k3, v3, pool.keys(l), pool.values(l));
        }
      } else {  // OLMoE's q/k norms span the whole projection (or SY_FUSED_QKV=0): the separate ops
        gqa_qkv(s, w, b, hb, q3, k3, v3);
        cuda::scatter_rows(pool.keys(l), k3, b.rows);
        cuda::scatter_rows(pool.values(l), v3, b.rows);
      }
      if (!att.defined()) {  // not already attended with the epilogue folded in
        Tensor att3 = Tensor::empty({n, a.num_heads, a.v_head_dim}, DType::kF32, Device::kCuda);
        attend(s, b, pool, l, args, q3, k3, v3, att3);
        att = att3.reshape({n, int64_t{a.num_heads} * a.v_head_dim});
      }
    }
    cuda::linear_add(att, w.o, w.o_bias, x);  // x += o(att): the residual add in the GEMM
    if (!lw.is_moe) {
      cuda::rms_norm_dual(x, lw.post_attention_norm, eps, none, hb);
      cuda::linear_add(gated_hidden(hb, lw.mlp), lw.mlp.down, lw.mlp.down_bias, x);
      continue;
    }
    cuda::rms_norm_dual(x, lw.post_attention_norm, eps, h, hb);
    moe_layer(s, l, h, hb, counts, load, x, path);
  }
  const int64_t k = b.logit_rows.numel();
  Tensor last = Tensor::empty({k, hidden}, DType::kF32, Device::kCuda);
  Tensor last_b = Tensor::empty({k, hidden}, DType::kBF16, Device::kCuda);
  cuda::gather_rows(x, b.logit_rows, last);
  cuda::rms_norm_dual(last, s.w.final_norm, eps, none, last_b);
  return linear(last_b, s.w.lm_head, Tensor());
}

void add_counts(const ModelConfig& c, const Tensor& counts, ExpertLoad& load) {
  Tensor host = cuda::to_host(counts);
  for (int l = 0; l < c.num_layers; ++l) {
    if (!c.layer_is_moe[l]) continue;
    for (int e = 0; e < c.moe.num_experts; ++e) load.tokens[l][e] += host.i64()[l * c.moe.num_experts + e];
  }
}

// Block tables of the plan flattened, with each query's start in them.
void flatten_tables(const BatchPlan& plan, int64_t n, std::vector<int32_t>& tables, std::vector<int64_t>& starts) {
  starts.assign(n, 0);
  for (const ops::PagedSequence& seq : plan.sequences) {
    const int64_t start = static_cast<int64_t>(tables.size());
    tables.insert(tables.end(), seq.block_table, seq.block_table + seq.num_blocks);
    for (int64_t i = seq.q_begin; i < seq.q_end; ++i) starts[i] = start;
  }
}

// A decode step (every sequence one token, all wanting logits) fits a captured graph of its batch size.
bool is_decode_step(const BatchPlan& plan, int64_t n, int64_t max_batch) {
  if (n == 0 || n > max_batch || plan.sequences.size() != static_cast<size_t>(n)) return false;
  if (plan.logit_rows.size() != static_cast<size_t>(n)) return false;
  for (int64_t i = 0; i < n; ++i) {
    if (plan.logit_rows[i] != i || plan.sequences[i].q_end - plan.sequences[i].q_begin != 1) return false;
  }
  return true;
}

// Replays (capturing on first use) the decode graph of this batch size: static device inputs are refreshed
// with this step's ids, positions, pool rows and block tables, then the whole pass runs as one graph launch.
// Returns the graph's logits buffer on the device (valid until the next replay).
// sample_rows' settings of each row: (temperature, top_k, top_p, uniform draw) into dst (rows.size() x 4).
void sampling_params(const std::vector<RowSampling>& rows, float* dst) {
  for (size_t i = 0; i < rows.size(); ++i) {
    const RowSampling& r = rows[i];
    float* p = dst + i * 4;
    p[0] = r.temperature;
    p[1] = static_cast<float>(std::min(r.top_k, 1 << 24));  // exact in f32; above any vocab sample_rows takes
    p[2] = r.top_p;
    p[3] = static_cast<float>(r.uniform);
    if (p[3] >= 1.f) p[3] = std::nextafter(1.f, 0.f);  // a draw just below 1 must not round up to 1
  }
}

// Adds a replayed graph's counts, downloaded into its pinned buffer, to `load` (after a synchronisation).
void add_counts(const ModelConfig& c, const cuda::PinnedBuffer& counts, ExpertLoad& load) {
  const int64_t* host = static_cast<const int64_t*>(counts.data());
  for (int l = 0; l < c.num_layers; ++l) {
    if (!c.layer_is_moe[l]) continue;
    for (int e = 0; e < c.moe.num_experts; ++e) load.tokens[l][e] += host[l * c.moe.num_experts + e];
  }
}

// pending: where the counts are left to the caller (pinned_io), else null (counted here, one sync). sampling
// (with pending, device sampling and pinned_io): the replayed graph samples too, and its tokens are pending.
Tensor decode_with_graph(GpuState& s, const BatchPlan& plan, PagedKvPool& pool, ExpertLoad& load,
                         PendingDownloads* pending, const std::vector<RowSampling>* sampling = nullptr) {
  const ModelConfig& c = s.config;
  const int64_t n = static_cast<int64_t>(plan.ids.size());
  // Graphs bake in the pool's addresses: a different pool starts over.
  if (s.graph_pool != pool.keys(0).raw()) {
    s.graphs.clear();
    s.graph_pool = pool.keys(0).raw();
  }
  int64_t longest = 0;
  for (const ops::PagedSequence& seq : plan.sequences) longest = std::max<int64_t>(longest, seq.num_blocks);
  const bool sampled = sampling && pending && s.device_sampling && s.pinned_io;
  // A lone sequence past kGroupedAttentionMaxKeysAlone keys gets a graph of its own with the per-head attention.
  const int64_t longest_keys = longest * pool.block_size();
  const bool grouped = grouped_decode_attention(s.grouped_attention, true, n, longest_keys, s.grouped_max_keys_alone);
  const int64_t key = 4 * n + (grouped ? 2 : 0) + (sampled ? 1 : 0);
  auto it = s.graphs.find(key);
  if (it != s.graphs.end() && it->second->table_capacity < longest) s.graphs.erase(it), it = s.graphs.end();
  if (it == s.graphs.end()) {
    auto g = std::make_unique<DecodeGraph>();
    // Room for the longest sequence the pool can hold (capped by the model's context).
    const int64_t per_seq = (c.max_position_embeddings + pool.block_size() - 1) / pool.block_size() + 1;
    g->table_capacity = std::max(longest, std::min<int64_t>(pool.num_blocks(), per_seq));
    g->batch.n = n;
    g->batch.decode_only = true;  // is_decode_step: one query row per sequence
    g->batch.longest_keys = longest_keys;
    g->inputs = Tensor::empty({3, n}, DType::kI64, Device::kCuda);
    g->batch.ids = g->inputs.select(0);
    g->batch.positions = g->inputs.select(1);
    g->batch.rows = g->inputs.select(2);
    std::vector<int64_t> starts(n), iota(n);
    for (int64_t i = 0; i < n; ++i) starts[i] = i * g->table_capacity, iota[i] = i;
    g->batch.starts = host_i64(starts);
    g->batch.logit_rows = host_i64(iota);
    g->batch.tables = Tensor::zeros({n * g->table_capacity}, DType::kI32, Device::kCuda);
    if (c.moe.num_experts > 0) {
      g->counts = Tensor::empty({c.num_layers, c.moe.num_experts}, DType::kI64, Device::kCuda);
      g->counts_host = cuda::PinnedBuffer(g->counts.nbytes());
    }
    g->staging = cuda::PinnedBuffer(sizeof(int64_t) * 3 * n + sizeof(float) * 4 * n +
                                    sizeof(int32_t) * n * g->table_capacity);
    g->sampled = sampled;
    if (sampled) {
      g->params = Tensor::empty({n, 4}, DType::kF32, Device::kCuda);
      g->tokens = Tensor::empty({n}, DType::kI32, Device::kCuda);
      g->tokens_host = cuda::PinnedBuffer(sizeof(int32_t) * n);
    }
    GpuState* state = &s;
    DecodeGraph* graph = g.get();
    graph->graph.capture([state, graph, &pool, &load] {
      graph->logits = run_layers(*state, graph->batch, pool, graph->counts.defined() ? &graph->counts : nullptr, load,
                                 ExpertPath::kGroupedGemv);
      if (graph->sampled) cuda::sample_rows(graph->logits, graph->params, graph->tokens);
    });
    it = s.graphs.emplace(key, std::move(g)).first;
  }
  DecodeGraph& g = *it->second;
  if (!s.pinned_io) {
    cuda::upload(g.batch.ids.raw(), plan.ids.data(), n * sizeof(int64_t));
    cuda::upload(g.batch.positions.raw(), plan.positions.data(), n * sizeof(int64_t));
    cuda::upload(g.batch.rows.raw(), plan.pool_rows.data(), n * sizeof(int64_t));
    for (int64_t i = 0; i < n; ++i) {
      const ops::PagedSequence& seq = plan.sequences[i];
      cuda::upload(g.batch.tables.i32() + i * g.table_capacity, seq.block_table, seq.num_blocks * sizeof(int32_t));
    }
    g.graph.replay();
    if (g.counts.defined()) add_counts(c, g.counts, load);
    return g.logits;
  }
  // The previous step's copies out of `staging` are complete: every step ends with a synchronisation.
  int64_t* inputs = static_cast<int64_t*>(g.staging.data());
  std::copy(plan.ids.begin(), plan.ids.end(), inputs);
  std::copy(plan.positions.begin(), plan.positions.end(), inputs + n);
  std::copy(plan.pool_rows.begin(), plan.pool_rows.end(), inputs + 2 * n);
  // staging: ids, positions, rows (3n int64), the sampling settings (4n f32), the block tables (n x longest).
  const size_t params_at = sizeof(int64_t) * 3 * n, tables_at = params_at + sizeof(float) * 4 * n;
  int32_t* tables = reinterpret_cast<int32_t*>(static_cast<char*>(g.staging.data()) + tables_at);
  for (int64_t i = 0; i < n; ++i) {  // rows of `longest` entries, zero past each sequence's own
    const ops::PagedSequence& seq = plan.sequences[i];
    std::copy(seq.block_table, seq.block_table + seq.num_blocks, tables + i * longest);
    std::fill(tables + i * longest + seq.num_blocks, tables + (i + 1) * longest, 0);
  }
  cuda::upload_async(g.inputs.raw(), g.staging, 0, params_at);
  if (g.sampled) {
    sampling_params(*sampling, reinterpret_cast<float*>(static_cast<char*>(g.staging.data()) + params_at));
    cuda::upload_async(g.params.raw(), g.staging, params_at, tables_at - params_at);
  }
  cuda::upload_rows_async(g.batch.tables.raw(), sizeof(int32_t) * g.table_capacity, g.staging, tables_at,
                          sizeof(int32_t) * longest, sizeof(int32_t) * longest, n);
  g.graph.replay();
  if (g.sampled) {
    cuda::download_async(g.tokens_host, 0, g.tokens.raw(), g.tokens.nbytes());
    pending->graph = &g;
  }
  if (g.counts.defined()) {
    if (pending) {
      cuda::download_async(g.counts_host, 0, g.counts.raw(), g.counts.nbytes());
      pending->graph = &g;
    } else {
      add_counts(c, g.counts, load);
    }
  }
  return g.logits;
}

// The pass's logits rows, (logit_rows.size(), vocab) f32 on the device; (0, vocab) on the host when no
// sequence wants logits.
// pending: as decode_with_graph's (null: every count is in `load` on return).
Tensor device_logits(GpuState& s, const BatchPlan& plan, PagedKvPool& pool, ExpertLoad& load,
                     PendingDownloads* pending = nullptr, const std::vector<RowSampling>* sampling = nullptr) {
  const ModelConfig& c = s.config;
  const int64_t n = static_cast<int64_t>(plan.ids.size());
  if (!plan.logit_rows.empty() && s.use_graphs && !s.dispatcher && is_decode_step(plan, n, s.gemv_max_tokens)) {
    return decode_with_graph(s, plan, pool, load, pending, sampling);
  }
  DeviceBatch b;
  b.n = n;
  b.decode_only = plan.sequences.size() == static_cast<size_t>(n) &&
                  std::all_of(plan.sequences.begin(), plan.sequences.end(),
                              [](const ops::PagedSequence& seq) { return seq.q_end - seq.q_begin == 1; });
  for (const ops::PagedSequence& seq : plan.sequences) {
    b.longest_keys = std::max<int64_t>(b.longest_keys, seq.num_blocks * pool.block_size());
  }
  std::vector<int32_t> tables;
  std::vector<int64_t> starts;
  flatten_tables(plan, n, tables, starts);
  b.ids = host_i64(plan.ids);
  b.positions = host_i64(plan.positions);
  b.rows = host_i64(plan.pool_rows);
  b.starts = host_i64(starts);
  b.logit_rows = host_i64(plan.logit_rows);
  std::vector<std::pair<int64_t, int64_t>> fresh;
  for (const ops::PagedSequence& seq : plan.sequences) {
    if (seq.q_end - seq.q_begin >= kFlashMinTokens && plan.positions[seq.q_begin] == 0) {
      fresh.emplace_back(seq.q_begin, seq.q_end);
    }
  }
  b.set_fresh_prompts(std::move(fresh));
  Tensor tables_host = Tensor::empty({static_cast<int64_t>(tables.size())}, DType::kI32);
  std::memcpy(tables_host.raw(), tables.data(), tables.size() * sizeof(int32_t));
  b.tables = cuda::to_device(tables_host);
  // Small passes: the grouped GEMV; larger ones the Hopper grouped GEMM when enabled (both count the tokens
  // per expert on the device: no host sync per layer), else cuBLAS's grouped call.
  const bool local_moe = c.moe.num_experts > 0 && !s.dispatcher;
  const ExpertPath path = !local_moe                ? ExpertPath::kCublasGrouped  // dense, or experts over NCCL
                          : n <= s.gemv_max_tokens ? ExpertPath::kGroupedGemv
                          : s.sm90_experts         ? ExpertPath::kSm90Grouped
                                                   : ExpertPath::kCublasGrouped;
  const bool device_counts = local_moe && path != ExpertPath::kCublasGrouped;
  Tensor counts = device_counts ? Tensor::empty({c.num_layers, c.moe.num_experts}, DType::kI64, Device::kCuda) : Tensor();
  // Prefill chunks that need no logits still run (they fill the KV cache).
  Tensor logits = run_layers(s, b, pool, device_counts ? &counts : nullptr, load, path);
  if (device_counts) add_counts(c, counts, load);
  if (plan.logit_rows.empty()) return Tensor::empty({0, c.vocab_size}, DType::kF32);
  return logits;
}

// One token per logits row, drawn on the device (cuda::sample_rows) unless SY_GPU_SAMPLING=0; (rows,) int64
// on the host.
Tensor sample_logits(GpuState& s, const Tensor& logits, const std::vector<RowSampling>& rows) {
  const int64_t k = logits.size(0);
  SY_CHECK(static_cast<int64_t>(rows.size()) == k, "sampling settings for ", rows.size(), " rows, logits ", k);
  Tensor out = Tensor::empty({k}, DType::kI64);
  if (k == 0) return out;
  if (!s.device_sampling) {
    const std::vector<int64_t> tokens = sample_host_rows(cuda::to_host(logits), rows);
    std::copy(tokens.begin(), tokens.end(), out.i64());
    return out;
  }
  // The settings go up through pinned memory, queued behind the pass (a pageable copy would wait for the pass
  // to finish before the sampling kernel could even be queued; the previous step's copy is complete: every
  // step ends with a synchronisation).
  const size_t param_bytes = sizeof(float) * 4 * k;
  if (s.sample_params.size() < param_bytes) s.sample_params = cuda::PinnedBuffer(param_bytes);
  Tensor params = Tensor::empty({k, 4}, DType::kF32, Device::kCuda);
  sampling_params(rows, static_cast<float*>(s.sample_params.data()));
  cuda::upload_async(params.raw(), s.sample_params, 0, param_bytes);
  Tensor tokens = Tensor::empty({k}, DType::kI32, Device::kCuda);
  cuda::sample_rows(logits, params, tokens);
  Tensor host = cuda::to_host(tokens);
  for (int64_t i = 0; i < k; ++i) out.i64()[i] = host.i32()[i];
  return out;
}

}  // namespace

void set_cuda_graphs(GpuState& state, bool enabled) {
  state.use_graphs = enabled;
  if (!enabled) state.graphs.clear();
}

void set_attention_data_parallel(GpuState& state, bool enabled) { state.attention_dp = enabled; }

void reconfigure(GpuState& state) {
  cuda::synchronize();  // no captured step may still be running when its graph goes
  state.graphs.clear();  // they baked in the kernels of the old settings
  state.graph_pool = nullptr;
  apply_switches(state, /*reapply=*/true);
}

Tensor gpu_forward_batch(GpuState& s, const BatchPlan& plan, PagedKvPool& pool, ExpertLoad& load,
                         const std::vector<RowSampling>* sampling) {
  SY_REQUIRE(pool.keys(0).device() == Device::kCuda, InvalidArgument, "cuda",
             "the KV pool is on the host; create it with Model::new_pool on a model moved to the GPU");
  PendingDownloads pending;
  Tensor logits = device_logits(s, plan, pool, load, &pending, sampling);
  if (pending.graph && pending.graph->sampled) {  // the graph sampled: one synchronisation for tokens and counts
    const DecodeGraph& g = *pending.graph;
    cuda::synchronize();
    if (g.counts.defined()) add_counts(s.config, g.counts_host, load);
    const int64_t k = g.tokens.numel();
    Tensor out = Tensor::empty({k}, DType::kI64);
    const int32_t* tokens = static_cast<const int32_t*>(g.tokens_host.data());
    for (int64_t i = 0; i < k; ++i) out.i64()[i] = tokens[i];
    return out;
  }
  // Both ends synchronise (the tokens or the logits come back), after which the pending counts have landed.
  Tensor result = sampling                             ? sample_logits(s, logits, *sampling)
                  : logits.device() == Device::kCuda ? cuda::to_host(logits)
                                                     : logits;
  if (pending.graph) {
    if (logits.device() != Device::kCuda) cuda::synchronize();
    add_counts(s.config, pending.graph->counts_host, load);
  }
  return result;
}

#else  // no CUDA in this build

struct GpuState {};
void GpuStateDeleter::operator()(GpuState* s) const { delete s; }

GpuStatePtr upload(const ModelConfig&, const ModelWeights&, const ops::RopeTable&, parallel::Comm*, bool) {
  throw make_error<Unsupported>("cuda", "this build has no CUDA backend (configure with -DSY_CUDA=ON and nvcc)");
}
Tensor gpu_forward_batch(GpuState&, const BatchPlan&, PagedKvPool&, ExpertLoad&, const std::vector<RowSampling>*) {
  throw make_error<Unsupported>("cuda", "this build has no CUDA backend");
}
void set_cuda_graphs(GpuState&, bool) {}
void set_attention_data_parallel(GpuState&, bool) {}
void reconfigure(GpuState&) {}
const char* expert_path_name(ExpertPath) { return "none"; }
void gpu_moe_layer(GpuState&, int, const Tensor&, const Tensor&, Tensor&, ExpertPath) {
  throw make_error<Unsupported>("cuda", "this build has no CUDA backend");
}
size_t gpu_weight_bytes(const GpuState&) { return 0; }

#endif

}  // namespace sy::model_detail
