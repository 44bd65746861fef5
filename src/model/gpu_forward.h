// The device half of Model: weights uploaded to the CUDA device (matrices in bf16, vectors in f32) and the
// batched forward pass over a device PagedKvPool, built from the ops in switchyard/kernels/cuda_ops.h.
// MLA (DeepSeek) runs in the absorbed form and caches the latent rows, as the CPU does.
// In builds without CUDA, upload() throws Unsupported and nothing else is reachable.
#pragma once

#include <memory>
#include <vector>

#include "switchyard/kernels/ops.h"
#include "switchyard/model/model.h"
#include "switchyard/model/sampling.h"

namespace sy::model_detail {

// The host-side plan of one forward_batch call (validated by Model::forward_batch).
struct BatchPlan {
  std::vector<int64_t> ids, positions, pool_rows, logit_rows;
  std::vector<ops::PagedSequence> sequences;  // block_table pointers into the caller's BatchSequence tables
};

using GpuStatePtr = std::unique_ptr<GpuState, GpuStateDeleter>;

// Uploads `weights`. With `ep` (the expert-parallel group on the host, e.g. MPI; one process per GPU), this
// rank's GPU is its node-local rank % visible GPUs, an NCCL communicator is made over the group, and MoE layers
// dispatch their tokens to the experts' owners (weights hold only this rank's experts; every rank runs the
// same sequences, as Model's CPU expert parallelism does, unless set_attention_data_parallel; int8_dispatch
// sends the rows as INT8). Throws
// Unsupported (no CUDA build, no Hopper device, no NCCL for `ep`, or a family not on the GPU yet).
GpuStatePtr upload(const ModelConfig& config, const ModelWeights& weights, const ops::RopeTable& rope,
                   parallel::Comm* ep = nullptr, bool int8_dispatch = false);
// Runs the plan; returns logits (logit_rows.size(), vocab) f32 on the host, or with `sampling` (one entry per
// logits row) the sampled tokens (logit_rows.size(),) int64 on the host: drawn on the GPU by
// cuda::sample_rows, so the logits never leave the device (SY_GPU_SAMPLING=0 at upload: copied back and drawn
// by ops::sample_row). Adds routed-token counts to `load`. Decode steps (one token per sequence, up to 256
// sequences) run as a CUDA graph captured per batch size on first use (same kernels, same results as the
// eager pass; the env SY_CUDA_GRAPHS=0 or set_cuda_graphs turns it off).
Tensor gpu_forward_batch(GpuState& state, const BatchPlan& plan, PagedKvPool& pool, ExpertLoad& load,
                         const std::vector<RowSampling>* sampling = nullptr);
void set_cuda_graphs(GpuState& state, bool enabled);
// Reads the switches again from the environment, as upload did (switches now unset take their defaults, and
// process-wide kernel settings now unset return to what they were before upload), and drops the captured decode
// graphs: A/B runs of one loaded model in one process (bench_gpu_decode --ab).
void reconfigure(GpuState& state);
// Under expert parallelism: each rank dispatches all of its own tokens (Model::set_attention_data_parallel)
// instead of a share of tokens every rank holds.
void set_attention_data_parallel(GpuState& state, bool enabled);
// How routed experts run: the grouped GEMV kernel (decode sizes, no host sync), one cuBLAS grouped GEMM
// (prefill sizes, one host sync per layer for the row counts), one cuBLAS GEMM per expert (the reference), or
// the Hopper grouped GEMM (prefill sizes: gather and SwiGLU fused; SY_SM90_EXPERTS=1 in the forward pass).
enum class ExpertPath { kGroupedGemv, kCublasGrouped, kPerExpert, kSm90Grouped };
const char* expert_path_name(ExpertPath path);
// The MoE part of one layer alone (routed experts plus the shared expert) on device rows h (n, hidden) f32 and
// hb, their bf16 rounding, added into out (n, hidden) f32, as the forward pass runs it (the norm before it
// writes h and hb in one pass; out is the residual stream): for benchmarks of the layer
// (bench/bench_gpu_moe_layer.cc).
void gpu_moe_layer(GpuState& state, int layer, const Tensor& h, const Tensor& hb, Tensor& out, ExpertPath path);
// Bytes of device memory the uploaded weights take.
size_t gpu_weight_bytes(const GpuState& state);
// Decode passes of at least this many query rows run the paged attention grouped by key head by default.
// Qwen3-30B-A3B decode steps on an H100 (2026-12-06), grouped against per head: batch 1 1.016x, 2 0.999x,
// 4 0.944x, 8 0.90x, 64 0.87x; with its first two steps of cached keys read before the programmatic-launch wait
// (prefetch_keys, later the same day), batch 1 0.971-0.987x, 4 0.975-0.993x of the per-head kernel.
constexpr int64_t kGroupedAttentionMinRows = 1;
// Whether a pass's paged attention runs grouped by key head (cuda::AttentionArgs::grouped_decode; one cluster
// of 8 blocks per query and key head): `setting` 1 or 0 forces it (SY_GROUPED_ATTENTION), -1 (the default)
// takes decode passes, except a lone sequence (rows == 1) whose longest_keys (blocks x block size) exceed
// max_keys_alone (kGroupedAttentionMaxKeysAlone unless SY_GROUPED_ATTENTION_MAX_KEYS says): its key heads x 8
// blocks are too few for a long context, where the per-head kernel's key splits fill the GPU. Qwen3-30B-A3B
// batch-1 steps on an H100 (2026-12-06), grouped against per head: 128-token prompts (up to 160 keys) 0.981x,
// 512 1.010x, 1024 1.047x, 2048 1.10x; the limit sits between the first two.
constexpr int64_t kGroupedAttentionMaxKeysAlone = 384;
bool grouped_decode_attention(int setting, bool decode_only, int64_t rows, int64_t longest_keys,
                              int64_t max_keys_alone = kGroupedAttentionMaxKeysAlone);

}  // namespace sy::model_detail
