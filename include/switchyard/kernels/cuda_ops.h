// CUDA ops: the device counterparts of switchyard/kernels/ops.h and the MoE router/dispatch, each tested
// against its CPU reference by tests/gpu. Compiled only in CUDA builds (SY_HAS_CUDA). All tensors passed here
// live on Device::kCuda and are contiguous; all work is queued on sy::cuda::stream() (call synchronize() or
// to_host() to wait). Errors in arguments throw sy::InvalidArgument; CUDA/cuBLAS failures throw sy::Error
// naming the call, the error and file:line.
// Not here yet (issue 4): a dedicated MLA decode kernel (the absorbed form runs through batched_linear and
// paged_attention), tensor cores for decode attention, TMA loads and warp specialisation in the grouped GEMM.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "switchyard/core/tensor.h"
#include "switchyard/io/model_config.h"
#include "switchyard/kernels/cuda_memory.h"
#include "switchyard/kernels/ops.h"

namespace sy::cuda {

// Programmatic dependent launch for the kernels of a decode step (rms norms, the q/k/v epilogue, attention and
// its merge, the decode router, the grouped GEMVs, the combine): each may be scheduled while the kernel before
// it runs and waits on the device for its inputs, hiding launch gaps; results are unchanged. Process-wide;
// returns whether it took effect (a compute capability 9.0 GPU with this build's sm_90a code). Off until
// default_programmatic_launch() or this is called.
bool set_programmatic_launch(bool on);
bool programmatic_launch_enabled();
// Turns it on where it exists unless set_programmatic_launch has chosen already (the GPU forward pass calls
// this when a model is uploaded; SY_PDL=0 there chooses off). Must not run inside a stream capture (it may probe
// the device once).
void default_programmatic_launch();

// Device bytes that a later kernel of a decode chain streams (a projection's weight), which a kernel taking
// one (AttentionArgs::l2_prefetch, decode_route) pulls into L2 before its programmatic-launch wait, while it
// reads little from memory itself: a hint, results never change. base 16-byte aligned and bytes a multiple of
// 16 (the kernels' checks raise InvalidArgument otherwise), or base null: none.
struct L2Prefetch {
  const void* base = nullptr;
  int64_t bytes = 0;
  // The lines come in as evict-last (an L2 cache policy): for a range that must outlive a large stream through
  // L2 (evict-first loads) before it is read.
  bool keep = false;
  // A contiguous device tensor's bytes (up to the last whole 16; none for an undefined tensor or one that starts
  // unaligned).
  static L2Prefetch of(const Tensor& t);
};

// Creates the engine's cuBLAS handle (bound to stream()) on the current device now; it is otherwise made at
// the first GEMM, which must not fall inside a CUDA-graph capture.
void prepare_blas();

// y = x W^T + b through cuBLAS (cublasGemmEx, f32 accumulation), or for 1 to dense_gemv_max_rows() rows
// (k a multiple of 8, 16-byte aligned operands) through a weight-streaming GEMV (one pass, bias and residual
// add included; f32 accumulation in another order).
// w: (n, k) bf16 (the checkpoint dtype; f32/f16 weights are converted once at load, not here).
// x: (m, k) f32 or bf16. f32 activations are rounded to bf16 before the products (in a scratch buffer for
// cuBLAS, on load in the GEMV), so both operands are bf16; that rounding is the op's documented error (bf16
// tolerance 2e-2). bias: (n,) f32 or bf16, or undefined. y: (m, n) f32 or bf16 (rounded after the f32 sums).
void linear(const Tensor& x, const Tensor& w, const Tensor& bias, Tensor& y);
// With programmatic launch on, the GEMV reads w before waiting for the previous kernel: w must not be written
// by the kernel queued just before it (weights are constants of a decode chain).
// The most rows linear sends through the GEMV instead of cuBLAS: 0 to 4 (0: always cuBLAS), process-wide;
// default 2 (SY_DENSE_GEMV=N sets N when a model is uploaded to the GPU). Decode graphs already captured keep
// the path they were captured with.
void set_dense_gemv_max_rows(int rows);
int dense_gemv_max_rows();
int64_t dense_gemv_calls();  // linears the GEMV has run so far in this process
// How much of its weights the GEMV requests before its programmatic-launch wait: 1 (default) a lane's first
// 8-weight piece of each row, then one piece in flight while another is used; 2 whole rows of up to 2 pieces
// per lane (k <= 2048: q|k|v, the LM head) before the wait; 4 also rows of up to 4 pieces (k <= 4096: the o
// projection; the RMSNorm-fed form stops at 2). Weights are constants of a decode chain, so a block made
// resident while the kernel before it still runs streams that much meanwhile. Same results; process-wide
// (SY_GEMV_PRELOAD=N at upload). Bad values throw InvalidArgument.
void set_dense_gemv_preload(int pieces);
int dense_gemv_preload();
// y += x W^T + b (the residual add folded into the GEMM: cuBLAS with beta 1). y: (m, n) f32; the rest as linear.
void linear_add(const Tensor& x, const Tensor& w, const Tensor& bias, Tensor& y);
// y = rms_norm(x, norm_w, eps) W^T + b: a projection fed by an RMSNorm. Decode-sized x (where linear takes the
// GEMV) in one pass that folds the norm in: the bf16 operand is x * norm_w rounded and 1/rms(x) scales the f32
// sums (the same bf16 error as rounding the normalised row, another rounding), so the norm's launch goes; larger
// x through rms_norm_dual into a bf16 scratch and linear. x: (m, k) f32; norm_w: (k,) f32 or bf16; eps >= 0;
// w, bias, y as linear.
void rms_norm_linear(const Tensor& x, const Tensor& norm_w, float eps, const Tensor& w, const Tensor& bias,
                     Tensor& y);

// Per-batch products over strided views, one cublasGemmStridedBatchedEx (bf16 operands, f32 accumulation):
// y[:, b, :] = x[:, b, :] W_b^T for w (B, n, k) (kOutIn, linear's layout) or x[:, b, :] W_b for w (B, k, n)
// (kInOut). MLA's absorbed attention maps queries into the latent space and the attended latent back per head
// with slices of kv_b read in place. x: (m, B, k) bf16 with unit last stride (any row and batch strides), or
// f32 contiguous (rounded to bf16 first, as linear does); w: (B, ., .) bf16 with unit last stride; y: (m, B, n)
// f32 or bf16 with unit last stride and non-overlapping rows (a column slice of a wider tensor is written in
// place, the other columns untouched). k must be positive.
enum class BatchedWeight { kOutIn, kInOut };
void batched_linear(const Tensor& x, const Tensor& w, BatchedWeight layout, Tensor& y);

// y[i, :] = x[i, :] / sqrt(mean(x[i, :]^2) + eps) * w.  x, y: (m, d) f32 (y may alias x); w: (d,) f32|bf16.
void rms_norm(const Tensor& x, const Tensor& w, float eps, Tensor& y);
// The same in one pass with its bf16 rounding: yb (m, d) bf16 (the GEMM operand the norm feeds, so no separate
// cast), and y (m, d) f32 unless undefined. yb equals cuda::cast of y bit for bit.
void rms_norm_dual(const Tensor& x, const Tensor& w, float eps, Tensor& y, Tensor& yb);

// Rotates the first rotary_dim features of every head in place, either layout (table.interleaved).
// x: (t, heads, d) f32; positions: (t,) int64 on the device.
void apply_rope(Tensor& x, const Tensor& positions, const ops::RopeTable& table);

// The same with the frequencies already on the device (no host copy per call): the forward pass uploads once.
struct DeviceRope {
  Tensor inv_freq;  // (rotary_dim / 2,) f32 on the device
  int rotary_dim = 0;
  bool interleaved = false;
  float attention_scaling = 1.f;
};
DeviceRope upload_rope(const ops::RopeTable& table);
void apply_rope(Tensor& x, const Tensor& positions, const DeviceRope& rope);

// The GQA projections' epilogue, one launch for what add_bias, clamp_inplace, per-head rms_norm, apply_rope and
// two scatter_rows do (same operations, same order; equal up to f32 rounding): the rows of the fused projection qkv (n, heads*d +
// kv_heads*d + kv_heads*dv) f32 (q | k | v, bias not yet added) become q3 (n, heads, d), k3 (n, kv_heads, d)
// and v3 (n, kv_heads, dv), all f32, with the bias added, clamped to [-clip, clip] when clip > 0, q and k
// RMS-normalised per head by q_norm / k_norm (eps) when given, and RoPE'd at `positions`; k and v also go to
// pool rows `rows` of keys (R, kv_heads, d) and values (R, kv_heads, dv) (f32 or bf16, rounded on store).
// bias: (qkv width,) f32; q_norm, k_norm: (d,) f32; positions, rows: (n,) int64. Under programmatic launch
// positions, rows, the norms and the rotary table are read before the wait on the previous kernel, so they
// must not be outputs of the kernels launched just before it (the forward pass uploads them before a step).
struct QkvEpilogueArgs {
  Tensor bias, q_norm, k_norm;
  float clip = 0.f, eps = 1e-6f;
};
void qkv_epilogue(const Tensor& qkv, const QkvEpilogueArgs& args, const Tensor& positions, const DeviceRope& rope,
                  const Tensor& rows, Tensor& q3, Tensor& k3, Tensor& v3, Tensor& keys, Tensor& values);

// gpt-oss clamped SwiGLU (as ops::clamped_swiglu): g = min(gate, limit); u = clamp(up, -limit, limit);
// out = (u + 1) * g * sigmoid(alpha g). gate, up, out: same shape, all f32 or all bf16 (out may alias gate).
void clamped_swiglu(const Tensor& gate, const Tensor& up, float alpha, float limit, Tensor& out);
// out = silu(gate) * up.  gate, up, out: same shape, all f32 or all bf16 (f32 arithmetic; out may alias gate).
void silu_mul(const Tensor& gate, const Tensor& up, Tensor& out);

// Fused router, one thread block per token, up to 256 experts: softmax or sigmoid scores (or softmax over the
// top-k logits only), score bias for selection only, group-limited top-k (max or top-2-sum group scores),
// renormalisation and scaling; the same decisions as sy::moe::route, ties to the lower expert index.
// logits: (tokens, experts) f32; score_bias: (experts,) f32 or undefined.
// expert: (tokens, top_k) int32, [t, s] = expert of slot s; weight: (tokens, top_k) f32 its combine weight.
void route(const Tensor& logits, const Tensor& score_bias, const MoeConfig& options, Tensor& expert,
           Tensor& weight);
// Routing without group limits or softmax-over-top-k, top-k <= 32 (Qwen, Mixtral, OLMoE) done by one warp per
// token with shuffles instead of the whole block with barriers, in route and decode_route alike, with the same
// choices and weights bit for bit. Process-wide, on by default (H200, 2026-12-05: tests passed; batch-1 decode
// 3.65 -> 3.61 ms, batch 2 5.32 -> 4.97 ms); SY_WARP_ROUTE=0 turns it off at model upload. Graphs keep the
// setting they were captured with.
void set_warp_routing(bool on);
bool warp_routing();
// decode_route's finish on a thread-block cluster where the one-warp routing applies with at most 32 picks: the
// logits meet in one block's shared memory after a cluster barrier instead of a fence, a counter and a read
// back through L2. Same choices, weights and layout bit for bit. Process-wide, on by default (H100, 2026-12-06:
// a Qwen3-30B-A3B batch-1 decode step 3.72 -> 3.58 ms, batch 2 5.28 -> 5.15 ms); SY_CLUSTER_ROUTE=0 turns it
// off at model upload. Graphs keep the setting they were captured with.
void set_cluster_routing(bool on);
bool cluster_routing();

// Row maps of a dispatch, on the device (same meaning as sy::moe::DispatchLayout): rows are grouped by
// expert and, within an expert, ordered by assignment index t * top_k + s (deterministic, no atomics).
struct DeviceDispatchLayout {
  int num_experts = 0;
  int64_t num_tokens = 0;
  int top_k = 0;
  Tensor tokens_per_expert;  // (experts,) int64
  Tensor offsets;            // (experts + 1,) int64: exclusive prefix sums of tokens_per_expert
  Tensor row_assignment;     // (rows,) int64: [r] = t * top_k + s of the assignment in row r
  Tensor assignment_row;     // (tokens * top_k,) int64: inverse of row_assignment
};
// expert: (tokens, top_k) int32 as written by route. With check_ids, ids outside [0, num_experts) raise
// InvalidArgument, at the price of one host synchronisation; without it (ids from cuda::route, which cannot
// produce them) the call stays asynchronous.
// counts_out, when defined ((num_experts,) int64 contiguous on the device, e.g. a row of the forward pass's
// per-layer counts), becomes tokens_per_expert's storage, so no copy is needed to keep the counts.
DeviceDispatchLayout make_dispatch_layout(const Tensor& expert, int num_experts, bool check_ids = true,
                                          const Tensor& counts_out = Tensor());
// How make_dispatch_layout lays out passes of more than 256 assignments, process-wide: true (the default), the
// assignments in chunks of 1024, a block per chunk, three launches (up to 1024 experts; more keep the other
// form); false, a block per expert walks every assignment in order (at 16384 tokens x top-8, 512 serial steps
// per block: 370 us of a 3.7 ms Qwen3-30B-A3B layer on an H100, against 12 us chunked). The same layout either
// way. SY_CHUNKED_LAYOUT=0 turns it off at model upload.
void set_chunked_dispatch_layout(bool on);
bool chunked_dispatch_layout();

// The router of a decode-sized pass in one launch: logits = x router^T (+ router_bias), the routing of route()
// (same decisions on the same logits) and the dispatch layout of make_dispatch_layout, without the three
// launches (cuBLAS GEMM, route, layout) of the general path. Blocks compute the logits (a warp per expert, f32
// accumulation of the bf16 products in another order than cuBLAS: logits equal to rounding), the last block
// to finish routes and lays out every token, one after another. decode_route_fits says which passes it takes
// (1..4 tokens, at most 256 experts and 256 assignments, hidden a multiple of 8). x: (n, hidden) bf16; router: (E, hidden) bf16;
// router_bias: (E,) f32 or undefined; logits: (n, E) f32 scratch (written); expert, weight as route();
// done: (1,) int32 on the device, zero, owned by the caller's stream (the kernel's last block resets it);
// counts_out as make_dispatch_layout; l2_prefetch: bytes its blocks pull into L2 before their wait (L2Prefetch).
bool decode_route_fits(int64_t tokens, int64_t hidden, const MoeConfig& options);
DeviceDispatchLayout decode_route(const Tensor& x, const Tensor& router, const Tensor& router_bias,
                                  const Tensor& score_bias, const MoeConfig& options, Tensor& logits, Tensor& expert,
                                  Tensor& weight, Tensor& done, const Tensor& counts_out = Tensor(),
                                  const L2Prefetch& l2_prefetch = {});

// permuted[r, :] = x[row_assignment[r] / top_k, :].  x: (tokens, hidden) f32|bf16; permuted: (rows, hidden) same.
void permute(const Tensor& x, const DeviceDispatchLayout& layout, Tensor& permuted);
// y[r, :] += bias[e, :] for every permuted row r, e = expert[row_assignment[r]] (expert biases, gpt-oss).
// y: (rows, n) f32|bf16; bias: (E, n) f32; expert: (tokens, top_k) int32 as routed.
void add_expert_bias(Tensor& y, const Tensor& bias, const Tensor& expert, const DeviceDispatchLayout& layout);
// out[t, :] += sum_s weight[t, s] * expert_out[assignment_row[t * top_k + s], :], in slot order (one thread
// owns each output element: deterministic). expert_out: (rows, hidden) f32 or bf16; weight: (tokens, top_k)
// f32; out: (tokens, hidden) f32.
void unpermute(const Tensor& expert_out, const DeviceDispatchLayout& layout, const Tensor& weight, Tensor& out);
// How unpermute combines bf16 expert rows of passes of at least 1024 tokens (top-8 or less), process-wide:
// true (the default), a resident grid of blocks that each walk whole token rows and read the next token's
// slots while the current token's rows load (H100, 2026-12-06: 271 against 371 us at 16384 tokens x top-8 of
// 2048 columns, 2.97 TB/s); false, a block per 1024 columns of a token, which reads its slots' indices before
// their rows. The same sums either way. SY_TOKEN_COMBINE=0 turns it off at model upload.
void set_token_combine(bool on);
bool token_combine();

// Causal prefill attention of t queries against the first kv_len keys of one sequence; the semantics of
// sy::ops::attention (GQA, sliding window, sinks) except packed documents (key_start is not supported yet).
// q: (t, heads, dk) f32; k: (>= kv_len, kv_heads, dk) f32; v: (>= kv_len, kv_heads, dv) f32, dv <= 512;
// positions: (t,) int64 on the device; sinks: (heads,) f32 or undefined; out: (t, heads, dv) f32.
// A correctness-first kernel (one block per query and head, online softmax in f32); not flash-style tiling.
struct AttentionArgs {
  float scale = 1.f;
  int window = 0;
  Tensor sinks;
  // paged_attention: blocks per (query, head) over its keys for decode-sized passes; 0 picks from the batch
  // size (passes with enough (query, head) pairs to fill the GPU always use one).
  int key_splits = 0;
  // paged_attention, split passes: each split covers at least this many keys (0: none), so that a short
  // context runs on fewer blocks (the rest see no key and exit) instead of a key or two per block; the
  // launch shape stays that of key_splits (decode graphs replay it while contexts grow). Results differ from
  // another value only in rounding (where the splits' sums meet). Not read by the grouped form (grouped_decode).
  int min_split_keys = 0;
  // paged_attention: where it applies (bf16 pools, head dims 64 or 128 for keys and values alike, at most 16
  // query heads per key head), a thread-block cluster per (query, key head) computes the group's query heads
  // together, reading each key and value row once for the group, and merges its blocks' key runs through
  // distributed shared memory (one launch; key_splits does not apply). Elsewhere the per-head kernel runs.
  bool grouped_decode = false;
  // paged_attention: every key before each query's position was in the pool before this pass's launches
  // began (a decode pass: each query is its sequence's only new token), so the per-head kernel may read the
  // first of them before its programmatic-launch wait. Leave false when a pass writes keys that other queries
  // of it read (chunked prefill).
  bool cached_keys_ready = false;
  // paged_attention (the per-head kernel; the grouped one ignores it): bytes its blocks pull into L2 before
  // their wait (a decode pass's o projection weight, read next).
  L2Prefetch l2_prefetch;
  // flash_attention: the Hopper kernel (wgmma, 128-query tiles) where it applies: head dims 128/128 on a
  // compute capability 9.0 GPU with this build's sm_90a code; elsewhere the FlashAttention-2 kernel runs.
  bool sm90 = false;
  // flash_attention: cuDNN's fused flash attention (a cuDNN 9 graph, libcudnn opened on first use) where it
  // applies: no window, no sinks, head dims multiples of 8 up to 256, and a cuDNN engine for the shapes;
  // elsewhere (or without cuDNN) the kernels above run. Takes precedence over sm90 where both apply.
  bool cudnn = false;
};
void attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& positions, int64_t kv_len,
               const AttentionArgs& args, Tensor& out);

// Causal prefill attention of one sequence on the tensor cores (FlashAttention-2 style: bf16 mma.sync with
// f32 softmax and accumulation in registers): query i attends to keys [max(0, i - window + 1), i] (window 0: [0, i]), with
// the heads' sinks in the softmax when given (args.scale, window, sinks; key_splits unused). q: (t, heads, dk)
// bf16; k: (t, kv_heads, dk), v: (t, kv_heads, dv) bf16 with heads a multiple of kv_heads; out: (t, heads, dv)
// f32 or bf16 (rounded once; cuDNN writes bf16 directly, our kernels through an f32 scratch); (dk, dv) = (64,
// 64), (128, 128) or (192, 128) (MLA's prefill in the expanded form).
void flash_attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionArgs& args, Tensor& out);
// Packed variable-length sequences in one launch: each [first, second) row range of q, k, v (t rows packed) is
// one sequence whose query i attends its own keys as above; ranges sorted and disjoint; rows outside every
// range are neither read as queries nor written.
void flash_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                     const std::vector<std::pair<int64_t, int64_t>>& sequences, const AttentionArgs& args,
                     Tensor& out);
int64_t flash_attention_calls();       // calls so far in this process (tests check which path ran)
int64_t flash_attention_sm90_calls();  // of which through the Hopper kernel
bool flash_attention_sm90_supported();  // whether args.sm90 can take effect on this device (compute capability 9.0)
int64_t flash_attention_cudnn_calls();  // of which through cuDNN
// Whether args.cudnn can take effect here (cuDNN 9.5+ found: SY_CUDNN_LIBRARY, else libcudnn.so.9 on the
// loader's path or beside the CUDA runtime); the reason when not in *why.
bool flash_attention_cudnn_available(std::string* why = nullptr);
bool flash_attention_cudnn_compiled();  // whether this build found cuDNN's headers (without them: never available)

// Causal attention of the queries of many sequences against a paged KV pool (the batched forward pass):
// k: (blocks*block_size, kv_heads, dk), v: (blocks*block_size, kv_heads, dv <= 512) pools, both f32 or both
// bf16 (f32 accumulation either way), with unit last strides (v may be a column slice of k: MLA's absorbed
// pool); q, out f32 contiguous; query i reads key j
// of its sequence at pool row block_tables[table_start[i] + j / block_size] * block_size + j % block_size.
// positions, table_start: (t,) int64; block_tables: int32, all on the device. The caller validates the
// tables (Model::forward_batch does); no host synchronisation happens here. Few queries (decode) split their
// keys over several blocks and merge the partial softmaxes; the launch shape depends only on q's rows.
void paged_attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& positions,
                     const Tensor& table_start, const Tensor& block_tables, int64_t block_size,
                     const AttentionArgs& args, Tensor& out);
// Whether paged_attention with AttentionArgs::grouped_decode takes the grouped kernel for these operands: q
// (t, heads, d) contiguous, bf16 pool views k, v (rows, kv_heads, d) with 16-byte aligned rows, d 64 or 128
// for keys and values alike, at most 16 query heads per key head.
bool grouped_decode_fits(const Tensor& q, const Tensor& k, const Tensor& v);
// A decode pass's q|k|v epilogue folded into the per-head paged attention (one launch fewer per layer): each
// (query, head, key split) block forms its query head from the fused projection's row qkv as qkv_epilogue
// does (bias, clip, per-head norms, RoPE; the same arithmetic, so the same values), the split holding the
// query's own position forms that token's key and value and attends to them as the pool stores them, and one
// block per (query, key head) writes them to keys/values at pool row rows[i]. No q3/k3/v3 are written.
// Only for passes where every query is its sequence's only new token (AttentionArgs::cached_keys_ready's
// condition; grouped_decode is ignored). qkv: (t, (heads + kv_heads) * d + kv_heads * dv) f32 contiguous;
// out: (t, heads, dv) f32 contiguous; pools (rows, kv_heads, d|dv) f32 or bf16; head dims at most 128. A
// negative position gives NaN rows in out, as paged_attention does, and writes no pool row.
bool paged_attention_qkv_fits(int64_t heads, int64_t kv_heads, int64_t d, int64_t dv, const DeviceRope& rope);
void paged_attention_qkv(const Tensor& qkv, const QkvEpilogueArgs& epilogue, const DeviceRope& rope,
                         const Tensor& rows, Tensor& keys, Tensor& values, const Tensor& positions,
                         const Tensor& table_start, const Tensor& block_tables, int64_t block_size,
                         const AttentionArgs& args, Tensor& out);

// Routed experts in one launch per projection, without host synchronisation (grouped_experts.cu): rows
// [offsets[e], offsets[e+1]) of x go through expert e's weight. x: (rows, k) f32; offsets: (E+1,) int64 on the
// device; y: (rows, n) f32. Weights: a table of E device matrices (n, k) bf16 (undefined for experts this
// process does not hold; they must receive no rows). f32 activations and accumulation; memory-bound design
// for decode-sized groups (each weight row is streamed once per 8 rows of its expert).
struct ExpertWeightTable {
  Tensor pointers;            // (E,) int64 device addresses
  int64_t n = 0, k = 0;
  int num_experts = 0;
  std::vector<Tensor> keep;   // the matrices, kept alive
  Tensor tensor_maps;         // (E * 128,) u8 device TMA descriptors of the matrices (Hopper), or undefined
};
ExpertWeightTable make_expert_weight_table(const std::vector<Tensor>& weights);
// rows_per_expert_bound: no expert has more rows than this (a top-k layout's token count), or 0 when unknown;
// it only sizes the kernel's row chunks (fewer accumulators, more blocks per SM at one row). Any value gives
// the same result, but one below the true counts re-reads the weights once per chunk of rows.
void grouped_linear(const Tensor& x, const ExpertWeightTable& weights, const Tensor& offsets, Tensor& y,
                    int64_t rows_per_expert_bound = 0);
// The SwiGLU hidden of the routed experts in one launch: y = silu(x gate_e^T) * (x up_e^T) on each expert's
// rows, as grouped_linear twice and silu_mul would give it (same arithmetic, x read once). y: (rows, n) f32.
void grouped_swiglu(const Tensor& x, const ExpertWeightTable& gate, const ExpertWeightTable& up,
                    const Tensor& offsets, Tensor& y);
// The same straight from the un-permuted tokens: row r of the groups (dispatch order) reads token
// layout.row_assignment[r] / top_k of x, so no permuted copy is made. x: (tokens, k) f32; y: (tokens * top_k,
// n) f32 in dispatch order (what cuda::unpermute combines). release_after_wait: in a programmatic-launch chain
// the next kernel is released once this one's wait on the previous kernel has returned instead of at entry,
// so everything written before this launch (the routing) is complete before the next kernel starts: what
// grouped_linear_combine's routing_ready needs.
void grouped_swiglu(const Tensor& x, const ExpertWeightTable& gate, const ExpertWeightTable& up,
                    const DeviceDispatchLayout& layout, Tensor& y, bool release_after_wait = false);
// The last projection of the routed experts and the combine in one launch (decode-sized passes): out[t] +=
// sum_s weight[t, s] * (w_e x[assignment_row[t * top_k + s]]) with e = expert[t, s], in slot order: what
// grouped_linear into dispatch-ordered rows followed by unpermute gives, without writing the expert rows. x:
// (tokens * top_k, k) f32 in dispatch order, 16-byte aligned; expert: (tokens, top_k) int32 as routed (a slot
// whose id is outside [0, E) adds nothing); weight: (tokens, top_k) f32; out: (tokens, n) f32. Needs
// grouped_linear_combine_fits (k a multiple of 8, top_k at most 32). Experts shared by several tokens are
// read once per token, so it suits passes of a few tokens. routing_ready: the previous kernel on the stream
// released this one only after its own wait (grouped_swiglu with release_after_wait), so expert and the
// layout were complete at launch: each warp reads its first expert and issues its first weight loads before
// waiting for x. Without that guarantee the reads could see an unfinished routing: leave it false.
bool grouped_linear_combine_fits(const ExpertWeightTable& weights, int top_k);
// Its bulk form (Hopper, rows up to 1536 wide): each warp's weight rows come into shared memory by one bulk
// copy instead of registers, so twice the blocks are resident; same results. Off by default, process-wide
// (SY_COMBINE_BULK=1 at upload); returns whether it is on (false on GPUs and builds without sm_90a).
bool set_grouped_linear_combine_bulk(bool on);
bool grouped_linear_combine_bulk();
void grouped_linear_combine(const Tensor& x, const ExpertWeightTable& weights, const DeviceDispatchLayout& layout,
                            const Tensor& expert, const Tensor& weight, Tensor& out, bool routing_ready = false);
// Routed experts for prefill-sized groups: y[rows of e] = x[rows of e] W_e^T for every expert with rows, as one
// cuBLAS grouped GEMM (cublasGemmGroupedBatchedEx: bf16 operands on the tensor cores, f32 accumulation,
// products rounded to bf16 and widened into y). offsets: (E+1,) on the host (the caller has synchronised once
// to read them). x: (rows, k) f32 or bf16 (f32 is rounded to bf16 first, as cuda::linear does); y: (rows, n)
// f32 or bf16 (bf16 skips the widening pass: the prefill MoE block keeps its activations in bf16). Where
// the library refuses the grouped call, it falls back to one cublasGemmEx per expert (grouped_gemm_is_grouped()
// says which ran last).
void grouped_gemm(const Tensor& x, const ExpertWeightTable& weights, const std::vector<int64_t>& offsets, Tensor& y);
bool grouped_gemm_is_grouped();
// The same on Hopper's warpgroup tensor-core instructions (grouped_gemm_sm90.cu): one launch per projection
// over row counts that stay on the device (`offsets` on the device: no host synchronisation), bf16 operands, f32
// accumulation, bf16 products; n and k multiples of 8, weights 16-byte aligned. grouped_gemm_sm90_supported():
// this GPU (compute capability 9.0) and build (sm_90a code) run them; the calls raise Unsupported otherwise.
bool grouped_gemm_sm90_supported();
// The block tile's width in product columns for every later call in this process: 128, 256 (m64n256 products: A
// read half as often, 128 accumulators per thread, a 4-stage ring), or 0 (the default): 256 for calls of at
// least kGroupedSm90WideRows rows, 128 below (where 256-column tiles leave SMs idle); InvalidArgument otherwise.
constexpr int64_t kGroupedSm90WideRows = 4096;
void set_grouped_gemm_sm90_tile_n(int tile_n);
int grouped_gemm_sm90_tile_n();
// The schedule of every later call in this process: true (the default), persistent warp-specialised blocks
// (grouped_gemm_sm90_ws.cu: a producer warpgroup fills a ring of stages, two consumer warpgroups multiply,
// mbarriers between them); false, every block loads and multiplies one tile. The same products either way.
void set_grouped_gemm_sm90_warp_specialized(bool on);
bool grouped_gemm_sm90_warp_specialized();
// With the warp-specialised schedule: true (the default) loads the weight tiles by TMA (one thread per block,
// from each table's tensor_maps; tables without maps keep cp.async), false by the producer's cp.async.
void set_grouped_gemm_sm90_tma(bool on);
bool grouped_gemm_sm90_tma();
// With the warp-specialised schedule and 128-column tiles (set_grouped_gemm_sm90_tile_n, or calls of fewer than
// kGroupedSm90WideRows rows by default): true gives each consumer warpgroup whole 128 x 128 tiles, alternately
// (ping-pong: one's epilogue overlaps the other's products), false (the default: faster since idle halves are
// skipped) splits each tile between them. 256-column tiles are always split.
void set_grouped_gemm_sm90_pingpong(bool on);
bool grouped_gemm_sm90_pingpong();
// With TMA weight loads and split tiles (not ping-pong), process-wide: true runs the blocks in clusters of two
// that take the same weight tile for two row tiles of one expert and load it once, multicast to both (a third
// less read from L2 per stage at 128 x 256 tiles); false (the default: pairs measured slower on an H100), each
// block alone.
void set_grouped_gemm_sm90_cluster(bool on);
bool grouped_gemm_sm90_cluster();
// With the warp-specialised schedule, process-wide: true (the default) skips the products of idle halves, a
// consumer warpgroup's 64 rows of a tile past the expert's last row (split tiles; an expert's last tile of at
// most 64 rows), and a ping-pong warpgroup's second 64 rows of such a tile (most tiles of a pass of a few
// hundred rows); false multiplies the zero-filled rows as well. The same products either way.
void set_grouped_gemm_sm90_skip_idle_halves(bool on);
bool grouped_gemm_sm90_skip_idle_halves();
// GEMM launches so far in this process by kernel (tests check which one a setting ran): one tile per block, and
// warp-specialised in all, of which with TMA weight loads, of which ping-pong, of which in block pairs.
struct GroupedGemmSm90Launches {
  int64_t one_tile = 0, warp_specialized = 0, tma = 0, pingpong = 0, pairs = 0;
};
GroupedGemmSm90Launches grouped_gemm_sm90_launches();
int64_t grouped_gemm_sm90_calls();  // grouped_*_sm90 launches so far in this process
// y[rows of e] = x[rows of e] W_e^T (+ bias[e]). x: (rows, k) bf16; y: (rows, n) bf16; bias: (E, n) f32 or
// undefined.
void grouped_linear_sm90(const Tensor& x, const ExpertWeightTable& weights, const Tensor& offsets, Tensor& y,
                         const Tensor& bias = Tensor());
// Expert biases (E, n) f32 (undefined: none) and gpt-oss's clamped activation (limit > 0).
struct SwigluSm90Args {
  Tensor gate_bias, up_bias;
  float alpha = 1.702f, limit = 0.f;
};
// h = silu(g) * u with g = x gate_e^T (+ gate bias), u = x up_e^T (+ up bias), or with limit > 0
// (min(g, limit) * sigmoid(alpha min(g, limit))) * (clamp(u, -limit, limit) + 1), as ops::clamped_swiglu;
// row r of the groups (dispatch order) reads token layout.row_assignment[r] / top_k of x (the permute folded
// into the operand loads, the activation into the epilogue, in f32 before the one rounding to bf16).
// x: (tokens, k) bf16; h: (tokens * top_k, n) bf16.
void grouped_swiglu_sm90(const Tensor& x, const ExpertWeightTable& gate, const ExpertWeightTable& up,
                         const DeviceDispatchLayout& layout, Tensor& h, const SwigluSm90Args& args = {});
// dst = src converted between f32 and bf16 (round to nearest even), or copied when the dtypes match.
void cast(const Tensor& src, Tensor& dst);
// Device-to-device copy of equal byte counts (asynchronous, on stream()).
void copy(const Tensor& src, Tensor& dst);

// Glue of the device forward pass (model_ops.cu).
// out[i, :] = table[ids[i], :]. ids: (t,) int64; table: (vocab, d) bf16|f32; out: (t, d) f32. With check_ids,
// an id outside the vocabulary raises InvalidArgument (one host synchronisation); without it (ids validated by
// the caller, as Model::forward_batch does) such rows are zero and the call stays asynchronous.
void embedding(const Tensor& ids, const Tensor& table, Tensor& out, bool check_ids = true);
// y += x (f32, same element count).
void add_inplace(Tensor& y, const Tensor& x);
// x = clamp(x, -c, c) (f32).
void clamp_inplace(Tensor& x, float c);
// out[i, :] += sigmoid(gate[i]) * shared[i, :]. out, shared: (t, d) f32; gate: (t,) or (t, 1) f32.
void sigmoid_gate_add(Tensor& out, const Tensor& shared, const Tensor& gate);
// dst row rows[i] = src row i. dst: (R, ...) f32 or bf16 (rounded on store); src: (n, ...) f32 with the same
// row size; rows: (n,) int64.
void scatter_rows(Tensor& dst, const Tensor& src, const Tensor& rows);
// Column block copy between f32 matrices: dst[r, dst_col + j] = src[r / src_row_div, src_col + j] for every
// dst row r and j < width; src (R, cs), dst (R * src_row_div, cd). Splits and assembles MLA's latent, rotary
// and per-head key parts (src_row_div broadcasts one shared row to every head).
void copy_columns(const Tensor& src, int64_t src_col, Tensor& dst, int64_t dst_col, int64_t width,
                  int64_t src_row_div = 1);
// dst row i = src row rows[i]. src, dst: same dtype, any: rows are copied in 16- or 4-byte words when their
// byte size is a multiple and the buffers are 16-byte aligned, else element by element.
void gather_rows(const Tensor& src, const Tensor& rows, Tensor& dst);

// INT8 payload rows (the expert dispatch's --int8 rows): packed (n, hidden + 4) u8, each row the f32 scale
// amax / 127 then hidden int8, as ops::quantize_row_int8 (bitwise equal for finite rows). x, y: (n, hidden)
// f32 or bf16.
void quantize_rows_int8(const Tensor& x, Tensor& packed);
void dequantize_rows_int8(const Tensor& packed, Tensor& y);

// One token per row, the rule of ops::sample_row (greedy argmax at temperature 0; else top-k, softmax at the
// temperature, top-p cut, then the first token in rank order whose cumulative probability exceeds the draw),
// computed exactly over the row: no sort, integer histograms, deterministic. Probabilities are 2^-40 fixed
// point relative to the top token, so a token below 2^-40 of it is never drawn (the CPU could, rarely), and
// a draw within ~1e-7 of a cumulative boundary may pick the neighbouring token.
// logits: (rows, vocab) f32, vocab < 2^23; params: (rows, 4) f32 = temperature, top_k, top_p, uniform draw in
// [0, 1), already validated (sy::validate_sampling); tokens: (rows,) int32.
void sample_rows(const Tensor& logits, const Tensor& params, Tensor& tokens);

}  // namespace sy::cuda
