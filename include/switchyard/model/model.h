// Model: a loaded checkpoint (config + weights) and its forward pass on the CPU.
// `Model::load` reads config.json and the safetensors files of a Hugging Face model directory, maps the
// hub tensor names of the model's family, and checks every shape against the config.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "switchyard/core/tensor.h"
#include "switchyard/io/model_config.h"
#include "switchyard/model/kv_cache.h"
#include "switchyard/model/paged_kv_pool.h"
#include "switchyard/model/sampling.h"
#include "switchyard/model/weights.h"
#include "switchyard/kernels/ops.h"
#include "switchyard/moe/router.h"

namespace sy {

class SafetensorsCheckpoint;
namespace parallel { class Comm; }
namespace moe { class TokenDispatcher; struct DispatcherOptions; }
namespace model_detail {
struct GpuState;   // the weights on the CUDA device (src/model/gpu_forward.h)
struct BatchPlan;  // one forward_batch call, validated (src/model/gpu_forward.h)
struct GpuStateDeleter {
  void operator()(GpuState* state) const;
};
}  // namespace model_detail

struct LoadOptions {
  // Routed experts to load (the same on every layer); empty loads all. Expert parallelism loads only the
  // experts of this rank; an expert that is not loaded must never receive tokens.
  std::function<bool(int64_t expert)> load_expert;
};
class TensorSource;

// Builds the weights of `config`'s family from hub-named tensors, checking every shape. Names present in
// `source` but not used are appended to `unused` when given.
ModelWeights load_model_weights(const ModelConfig& config, const TensorSource& source,
                                std::vector<std::string>* unused = nullptr, const LoadOptions& options = {});
// The same with a source that may create the tensors it lacks (CreatingSource: a fresh parameter set).
ModelWeights load_model_weights(const ModelConfig& config, TensorSource& source,
                                std::vector<std::string>* unused = nullptr, const LoadOptions& options = {});

// Per-layer expert load observed by forward passes (tokens routed to each expert).
struct ExpertLoad {
  std::vector<std::vector<int64_t>> tokens;  // [layer][expert]; empty vectors for dense layers
};

// Sees each MoE layer's raw router logits during forward: logits (tokens, experts) f32 is the router's linear
// output (a router bias included), before softmax/sigmoid and without any selection score bias. Return true to
// go on; false stops the forward pass right after this router (used to probe the first MoE layer cheaply).
using RouterObserver = std::function<bool(int layer, const Tensor& logits)>;

class Model {
 public:
  // Loads DIR (config.json + *.safetensors). Throws IoError / FormatError / Unsupported.
  static std::unique_ptr<Model> load(const std::string& dir, const LoadOptions& options = {});
  // Wraps weights that were built in memory (tests, the built-in model).
  Model(ModelConfig config, ModelWeights weights, std::shared_ptr<void> keep_alive = nullptr);
  ~Model();

  const ModelConfig& config() const { return config_; }
  const ModelWeights& weights() const { return weights_; }
  KvCache new_cache(int64_t capacity) const { return KvCache(config_, capacity); }

  // Runs `ids` after the tokens already in `cache` and appends them to it. Returns logits (n, vocab) f32 for
  // every new token when all_logits, else (1, vocab) for the last one. Throws InvalidArgument for ids
  // outside the vocabulary.
  // If a router observer stopped the pass, returns an undefined tensor and leaves the cache length unchanged.
  Tensor forward(const std::vector<int64_t>& ids, KvCache& cache, bool all_logits);

  // Runs many sequences in one pass (continuous batching): their new tokens are concatenated for every
  // token-parallel op (projections, norms, the MoE block, so each expert's weights are read once per step),
  // and each sequence attends to its own paged keys. Writes the new keys/values into the pool. Returns
  // logits (k, vocab) f32 for the last new token of the k sequences with want_logits, in batch order.
  // Results equal `forward` on each sequence alone up to float reordering in the batched GEMMs.
  // Throws InvalidArgument for an empty batch or sequence, ids outside the vocabulary, or a block table that
  // does not cover the sequence.
  Tensor forward_batch(const std::vector<BatchSequence>& batch, PagedKvPool& pool);
  // forward_batch, then one token for each sequence with want_logits, drawn with rows[i] (in the same order;
  // Sampler::next_row gives them). On the GPU the logits stay on the device and only the tokens come back
  // (cuda::sample_rows); on the CPU, ops::sample_row on the logits. Throws InvalidArgument when rows does
  // not have one entry per logits row, or as forward_batch.
  std::vector<int64_t> forward_batch_sample(const std::vector<BatchSequence>& batch, PagedKvPool& pool,
                                            const std::vector<RowSampling>& rows);

  // Moves forward_batch to `device`. Device::kCuda uploads the weights to GPU 0 (matrices bf16, vectors
  // f32; results then match the CPU path to bf16 precision) and needs a device pool (new_pool). With expert
  // parallelism set, each rank takes GPU node-local rank % visible GPUs, uploads only its experts and dispatches
  // over NCCL (dropless all-to-all only). Throws Unsupported without a CUDA build or Hopper GPU, without NCCL
  // under expert parallelism, and with tensor parallelism (CPU only so far).
  // On the GPU, `forward` (contiguous KvCache) is not available; generate() uses forward_batch there.
  void to_device(Device device);
  Device device() const { return gpu_ ? Device::kCuda : Device::kCpu; }
  // On the GPU, decode steps (one token per sequence) replay a CUDA graph captured per batch size (on by
  // default; SY_CUDA_GRAPHS=0 turns it off at load). Same kernels, same results; off runs them one by one.
  void set_cuda_graphs(bool enabled);
  // On the GPU: reads the SY_* switches of the forward pass again from the environment, as to_device did
  // (unset ones back to their defaults; docs/design.md lists them), and drops the captured decode graphs, so
  // that one loaded model can be measured under several settings (bench_gpu_decode --ab). Throws what
  // to_device throws for a bad or unsupported setting; InvalidArgument when the model is not on the GPU.
  void reconfigure_device();
  // A KV block pool on the model's device.
  PagedKvPool new_pool(int64_t num_blocks, int64_t block_size) const;

  // Expert parallelism: the MoE blocks shard their tokens over `ep` (attention stays replicated: every rank
  // runs the same sequence), dispatch them to the ranks owning their experts, and all-gather the outputs.
  // Rank r must hold experts [r*E/EP, (r+1)*E/EP) (expert_range); every rank runs the same forward calls.
  void set_expert_parallel(std::shared_ptr<parallel::Comm> ep, const moe::DispatcherOptions& options);
  // Data-parallel attention with expert parallelism (after set_expert_parallel): every rank runs its own
  // sequences and each MoE block dispatches all of this rank's tokens (no shares, no all-gather), so the
  // ranks' batches add up, as a serving deployment with attention DP and MoE EP does. Ranks must still make
  // the same number of forward calls (the dispatch is collective), each with at least one token.
  void set_attention_data_parallel(bool enabled);
  // [first, last) experts owned by `rank` of `ranks`. Throws InvalidArgument unless ranks divides experts.
  static std::pair<int64_t, int64_t> expert_range(int num_experts, int ranks, int rank);
  // Tensor parallelism (Megatron style) over `tp` for attention and the dense MLPs (dense layers and shared
  // experts): rank r keeps heads [r*H/T, (r+1)*H/T) (q/k/v rows, o columns, sinks; MLA's q and kv_b rows),
  // intermediate columns [r*I/T, (r+1)*I/T) (gate/up rows, down columns), and output biases on rank 0 only;
  // each block's partial output is summed with one all-reduce. Embeddings, norms, the router, routed experts
  // (unless expert parallelism shards them over the same ranks) and the LM head stay replicated, and every
  // rank runs the same forward calls. config() then reports the local head counts. With fewer key/value heads
  // than ranks, each is replicated on the ranks whose query heads use it. Throws InvalidArgument when T does not
  // divide the heads or an intermediate width, or the key/value heads neither divide nor are divided by T, and
  // Unsupported for a q/k norm over the whole projection (OLMoE), which would need the whole projection.
  void set_tensor_parallel(std::shared_ptr<parallel::Comm> tp);
  // Installs (or, with an empty function, removes) the router observer.
  void set_router_observer(RouterObserver observer) { router_observer_ = std::move(observer); }

  // Router statistics since the last reset.
  const ExpertLoad& expert_load() const { return expert_load_; }
  void reset_expert_load();

 private:
  struct KvTarget;  // where a forward call's keys and values go (model.cc)
  Tensor run_layers(const std::vector<int64_t>& ids, const std::vector<int64_t>& positions, KvTarget& kv);
  Tensor attention_block(int layer, const Tensor& h, const std::vector<int64_t>& positions, KvTarget& kv);
  Tensor mla_block(int layer, const Tensor& h, const std::vector<int64_t>& positions, KvTarget& kv);
  Tensor attend(int layer, const Tensor& q, const Tensor& k, const Tensor& v, const std::vector<int64_t>& positions,
                KvTarget& kv, const ops::AttentionOptions& options);
  Tensor head_logits(const Tensor& last_hidden);
  // Validates a forward_batch call and lays out its tokens, pool rows and logits rows.
  model_detail::BatchPlan plan_batch(const std::vector<BatchSequence>& batch, PagedKvPool& pool) const;
  // forward_batch's pass on the CPU: logits (plan.logit_rows.size(), vocab).
  Tensor cpu_batch_logits(model_detail::BatchPlan& plan, PagedKvPool& pool);
  Tensor moe_block(int layer, const Tensor& h);
  Tensor routed_experts_ep(int layer, const Tensor& h, const moe::Routing& routing);

  ModelConfig config_;
  ModelWeights weights_;
  std::shared_ptr<void> keep_alive_;  // the checkpoint whose memory maps the weights view
  ops::RopeTable rope_;
  // MLA, per layer: kv_b's key rows regrouped per head and transposed, (heads * kv_rank, qk_nope) in kv_b's
  // dtype, so q_nope folds into the latent space with one linear per head (the absorbed form).
  std::vector<Tensor> mla_key_up_t_;
  void prepare_mla();  // (re)builds mla_key_up_t_ from weights_
  std::shared_ptr<parallel::Comm> tp_;
  void tp_sum(Tensor& partial);  // all-reduce over tp_ (no-op without it)
  ExpertLoad expert_load_;
  std::shared_ptr<parallel::Comm> ep_;
  std::shared_ptr<moe::TokenDispatcher> dispatcher_;
  bool attention_dp_ = false;  // set_attention_data_parallel
  RouterObserver router_observer_;
  std::unique_ptr<model_detail::GpuState, model_detail::GpuStateDeleter> gpu_;
};

}  // namespace sy
