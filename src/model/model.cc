// Model loading (family dispatch, shape checks) and the shared pre-norm decoder forward pass:
//   x = embed(ids); per layer: x += attn(norm(x)); x += ffn(norm(x)); logits = head(norm(x)).
// Attention is GQA/MHA (attention_block) or MLA (mla_block); the FFN is a dense gated MLP or the MoE block.
#include "switchyard/model/model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>

#include "arch.h"
#include "gpu_forward.h"
#include "switchyard/core/error.h"
#include "switchyard/core/log.h"
#include "switchyard/io/safetensors.h"
#include "switchyard/moe/dispatch.h"
#include "switchyard/moe/router.h"
#include "switchyard/model/tensor_source.h"
#include "switchyard/moe/token_dispatcher.h"
#include "switchyard/parallel/comm.h"

namespace sy {

using model_detail::WeightSource;

std::unique_ptr<Model> Model::load(const std::string& dir, const LoadOptions& options) {
  namespace fs = std::filesystem;
  if (!fs::is_directory(dir)) {
    throw make_error<IoError>("model", "model directory \"", dir, "\" does not exist or is not a directory");
  }
  ModelConfig cfg = ModelConfig::from_file(dir);
  auto checkpoint = std::make_shared<SafetensorsCheckpoint>(dir);
  std::vector<std::string> unused;
  ModelWeights w = load_model_weights(cfg, CheckpointSource(checkpoint), &unused, options);
  for (const std::string& name : unused) log_warn("[model] tensor \"", name, "\" in ", dir, " is not used");
  return std::make_unique<Model>(std::move(cfg), std::move(w), checkpoint);
}

namespace {
ModelWeights load_with(const ModelConfig& cfg, WeightSource& src, std::vector<std::string>* unused);
}  // namespace

ModelWeights load_model_weights(const ModelConfig& cfg, const TensorSource& source, std::vector<std::string>* unused,
                                const LoadOptions& options) {
  WeightSource src(source);
  src.set_expert_filter(options.load_expert);
  return load_with(cfg, src, unused);
}

ModelWeights load_model_weights(const ModelConfig& cfg, TensorSource& source, std::vector<std::string>* unused,
                                const LoadOptions& options) {
  WeightSource src(source);
  src.set_expert_filter(options.load_expert);
  return load_with(cfg, src, unused);
}

namespace {
ModelWeights load_with(const ModelConfig& cfg, WeightSource& src, std::vector<std::string>* unused) {
  ModelWeights w;
  switch (cfg.arch) {
    case Architecture::kMixtral: w = model_detail::load_mixtral(src, cfg); break;
    case Architecture::kQwen2Moe:
    case Architecture::kQwen3Moe: w = model_detail::load_qwen_moe(src, cfg); break;
    case Architecture::kOlmoe: w = model_detail::load_olmoe(src, cfg); break;
    case Architecture::kDeepseekV2:
    case Architecture::kDeepseekV3: w = model_detail::load_deepseek(src, cfg); break;
    case Architecture::kGptOss: w = model_detail::load_gpt_oss(src, cfg); break;
    case Architecture::kLlama:
    case Architecture::kQwen3: w = model_detail::load_dense(src, cfg); break;
  }
  if (unused) *unused = src.unused();
  return w;
}
// kv_b (heads * (nope + dv), rank) -> per head h the transpose of its key rows [h*(nope+dv), h*(nope+dv)+nope):
// (heads * rank, nope), same dtype, row h*rank + r holding column r of head h's key block.
Tensor transposed_key_up(const Tensor& kv_b, const AttentionConfig& a) {
  const int64_t heads = a.num_heads, rank = a.kv_lora_rank, nope = a.qk_nope_head_dim, dv = a.v_head_dim;
  SY_REQUIRE(kv_b.dim() == 2 && kv_b.size(0) == heads * (nope + dv) && kv_b.size(1) == rank, InvalidArgument,
             "model", "kv_b_proj ", kv_b.describe(), " does not match ", heads, " heads x (", nope, " + ", dv,
             ") by kv_lora_rank ", rank);
  const Tensor src = kv_b.contiguous();
  Tensor t = Tensor::empty({heads * rank, nope}, src.dtype());
  const size_t es = dtype_size(src.dtype());
  const char* in = static_cast<const char*>(src.raw());
  char* out = static_cast<char*>(t.raw());
  for (int64_t h = 0; h < heads; ++h) {
    for (int64_t i = 0; i < nope; ++i) {
      const char* row = in + ((h * (nope + dv) + i) * rank) * es;
      for (int64_t r = 0; r < rank; ++r) std::memcpy(out + ((h * rank + r) * nope + i) * es, row + r * es, es);
    }
  }
  return t;
}

}  // namespace

Model::Model(ModelConfig config, ModelWeights weights, std::shared_ptr<void> keep_alive)
    : config_(std::move(config)), weights_(std::move(weights)), keep_alive_(std::move(keep_alive)) {
  const AttentionConfig& a = config_.attention;
  rope_ = ops::make_rope_table(config_.rope, a.mla ? a.qk_rope_head_dim : a.head_dim, config_.max_position_embeddings);
  prepare_mla();
  reset_expert_load();
}

Model::~Model() = default;

void Model::prepare_mla() {
  mla_key_up_t_.clear();
  if (!config_.attention.mla) return;
  for (const LayerWeights& l : weights_.layers) {
    mla_key_up_t_.push_back(transposed_key_up(l.attention.kv_b, config_.attention));
  }
}

void Model::tp_sum(Tensor& partial) {
  if (!tp_) return;
  SY_CHECK(partial.dtype() == DType::kF32 && partial.is_contiguous(), "tp_sum: ", partial.describe());
  tp_->all_reduce(partial.f32(), partial.numel(), DType::kF32, parallel::ReduceOp::kSum);
}

void Model::reset_expert_load() {
  expert_load_.tokens.assign(config_.num_layers, {});
  for (int i = 0; i < config_.num_layers; ++i) {
    if (config_.layer_is_moe[i]) expert_load_.tokens[i].assign(config_.moe.num_experts, 0);
  }
}

namespace {

// Clamp every element to [-c, c] (OLMoE clip_qkv).
void clamp_inplace(Tensor& t, float c) {
  float* p = t.f32();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = std::clamp(p[i], -c, c);
}

// Copies rows (n, heads, d) into cache rows [start, start + n).
void write_cache(Tensor& cache, const Tensor& rows, int64_t start) {
  const int64_t row = cache.numel() / cache.size(0);
  SY_CHECK(rows.numel() == rows.size(0) * row, "write_cache: ", rows.describe(), " into ", cache.describe());
  std::memcpy(cache.f32() + start * row, rows.f32(), static_cast<size_t>(rows.numel()) * sizeof(float));
}

}  // namespace

// One contiguous cache of one sequence (forward), or paged sequences in a pool (forward_batch).
struct Model::KvTarget {
  KvCache* cache = nullptr;
  PagedKvPool* pool = nullptr;
  std::vector<ops::PagedSequence> sequences;
  std::vector<int64_t> pool_rows;  // pool row of every new token, in batch order
};

// Writes the new keys (n, heads, dk) and values (n, heads, dv) to their cache rows, then attends.
Tensor Model::attend(int layer, const Tensor& q, const Tensor& k, const Tensor& v,
                     const std::vector<int64_t>& positions, KvTarget& kv, const ops::AttentionOptions& options) {
  const int64_t n = q.size(0);
  Tensor out = Tensor::empty({n, q.size(1), v.size(2)}, DType::kF32);
  if (kv.cache) {
    const int64_t start = kv.cache->length();
    write_cache(kv.cache->keys(layer), k, start);
    if (!kv.cache->layout().values_in_keys) write_cache(kv.cache->values(layer), v, start);
    ops::attention(q, kv.cache->keys(layer), kv.cache->values(layer), positions, start + n, options, out);
    return out;
  }
  Tensor& kp = kv.pool->keys(layer);
  Tensor& vp = kv.pool->values(layer);
  const int64_t krow = k.numel() / n, vrow = v.numel() / n;
  const bool values_in_keys = kv.pool->layout().values_in_keys;
  for (int64_t i = 0; i < n; ++i) {
    std::memcpy(kp.f32() + kv.pool_rows[i] * krow, k.f32() + i * krow, sizeof(float) * krow);
    if (!values_in_keys) std::memcpy(vp.f32() + kv.pool_rows[i] * vrow, v.f32() + i * vrow, sizeof(float) * vrow);
  }
  ops::paged_attention(q, kp, vp, positions, kv.sequences, kv.pool->block_size(), options, out);
  return out;
}

Tensor Model::attention_block(int layer, const Tensor& h, const std::vector<int64_t>& positions, KvTarget& kv) {
  const AttentionConfig& a = config_.attention;
  const AttentionWeights& w = weights_.layers[layer].attention;
  const int64_t n = h.size(0);
  Tensor q = ops::linear(h, w.q, w.q_bias);  // (n, heads*head_dim)
  Tensor k = ops::linear(h, w.k, w.k_bias);  // (n, kv_heads*head_dim)
  Tensor v = ops::linear(h, w.v, w.v_bias);  // (n, kv_heads*head_dim)
  const float eps = static_cast<float>(config_.rms_norm_eps);
  if (a.qk_norm == QkNorm::kFull) {  // OLMoE: over the whole projection, before the head split
    ops::rms_norm(q, w.q_norm, eps, q);
    ops::rms_norm(k, w.k_norm, eps, k);
  }
  if (a.clip_qkv > 0) {  // OLMoE clips after the norm
    clamp_inplace(q, static_cast<float>(a.clip_qkv));
    clamp_inplace(k, static_cast<float>(a.clip_qkv));
    clamp_inplace(v, static_cast<float>(a.clip_qkv));
  }
  q = q.reshape({n, a.num_heads, a.head_dim});
  k = k.reshape({n, a.num_kv_heads, a.head_dim});
  v = v.reshape({n, a.num_kv_heads, a.head_dim});
  if (a.qk_norm == QkNorm::kPerHead) {
    Tensor qf = q.reshape({n * a.num_heads, a.head_dim}), kf = k.reshape({n * a.num_kv_heads, a.head_dim});
    ops::rms_norm(qf, w.q_norm, eps, qf);
    ops::rms_norm(kf, w.k_norm, eps, kf);
  }
  ops::apply_rope(q, positions, rope_);
  ops::apply_rope(k, positions, rope_);
  ops::AttentionOptions opt;
  opt.scale = static_cast<float>(a.softmax_scale);
  opt.window = config_.layer_sliding_window[layer];
  opt.sinks = w.sinks.defined() ? &w.sinks : nullptr;
  Tensor out = attend(layer, q, k, v, positions, kv, opt);
  return ops::linear(out.reshape({n, int64_t{a.num_heads} * a.head_dim}), w.o, w.o_bias);
}

// MLA in the absorbed form (DeepSeek-V2/V3). With the latent c = norm(kv_a h)[:rank] and, per head, kv_b's
// key rows K_h (nope, rank) and value rows V_h (dv, rank): q_nope_h . (K_h c) = (K_h^T q_nope_h) . c and
// sum_j p_j V_h c_j = V_h sum_j p_j c_j. So every head attends over one shared cached row per token,
// [c | rotary key], with the query [K_h^T q_nope_h | q_pe_h] and the first rank columns as values; kv_b applies
// once per head after attention. The softmax scale is unchanged (the scores are the same numbers).
Tensor Model::mla_block(int layer, const Tensor& h, const std::vector<int64_t>& positions, KvTarget& kv) {
  const AttentionConfig& a = config_.attention;
  const AttentionWeights& w = weights_.layers[layer].attention;
  const int64_t n = h.size(0), heads = a.num_heads, rank = a.kv_lora_rank;
  const int64_t nope = a.qk_nope_head_dim, rope = a.qk_rope_head_dim, dq = nope + rope, dv = a.v_head_dim;
  const float eps = 1e-6f;  // q_a_layernorm and kv_a_layernorm use 1e-6 whatever rms_norm_eps says
  Tensor q;  // (n, heads*dq)
  if (w.q_a.defined()) {
    Tensor qa = ops::linear(h, w.q_a);
    ops::rms_norm(qa, w.q_a_norm, eps, qa);
    q = ops::linear(qa, w.q_b);
  } else {
    q = ops::linear(h, w.q);
  }
  q = q.reshape({n, heads, dq});
  Tensor q_pe = q.slice(2, nope, dq);
  ops::apply_rope(q_pe, positions, rope_);
  // The cached row of each new token: [normalised latent (rank) | rotary key (rope)].
  Tensor kv_a = ops::linear(h, w.kv_a, w.kv_a_bias);  // (n, rank + rope)
  Tensor latent = kv_a.slice(1, 0, rank).contiguous();
  ops::rms_norm(latent, w.kv_a_norm, eps, latent);
  Tensor k_pe = kv_a.slice(1, rank, rank + rope).contiguous().reshape({n, 1, rope});
  ops::apply_rope(k_pe, positions, rope_);
  Tensor k = Tensor::empty({n, 1, rank + rope}, DType::kF32);
  for (int64_t i = 0; i < n; ++i) {
    std::memcpy(k.f32() + i * (rank + rope), latent.f32() + i * rank, sizeof(float) * rank);
    std::memcpy(k.f32() + i * (rank + rope) + rank, k_pe.f32() + i * rope, sizeof(float) * rope);
  }
  // Absorbed queries (n, heads, rank + rope): [K_h^T q_nope_h | q_pe_h].
  Tensor qa = Tensor::empty({n, heads, rank + rope}, DType::kF32);
  Tensor q_nope_h = Tensor::empty({n, nope}, DType::kF32);
  const Tensor& key_up_t = mla_key_up_t_[layer];  // (heads * rank, nope)
  for (int64_t hd = 0; hd < heads; ++hd) {
    for (int64_t i = 0; i < n; ++i) {
      std::memcpy(q_nope_h.f32() + i * nope, q.f32() + (i * heads + hd) * dq, sizeof(float) * nope);
    }
    Tensor q_lat = ops::linear(q_nope_h, key_up_t.slice(0, hd * rank, (hd + 1) * rank));  // (n, rank)
    for (int64_t i = 0; i < n; ++i) {
      float* dst = qa.f32() + (i * heads + hd) * (rank + rope);
      std::memcpy(dst, q_lat.f32() + i * rank, sizeof(float) * rank);
      std::memcpy(dst + rank, q.f32() + (i * heads + hd) * dq + nope, sizeof(float) * rope);
    }
  }
  ops::AttentionOptions opt;
  opt.scale = static_cast<float>(a.softmax_scale);
  opt.window = config_.layer_sliding_window[layer];
  Tensor out_lat = attend(layer, qa, k, k.slice(2, 0, rank), positions, kv, opt);  // (n, heads, rank)
  // Per head, the value rows of kv_b lift the attended latent to dv.
  Tensor out = Tensor::empty({n, heads, dv}, DType::kF32);
  Tensor lat_h = Tensor::empty({n, rank}, DType::kF32);
  for (int64_t hd = 0; hd < heads; ++hd) {
    for (int64_t i = 0; i < n; ++i) {
      std::memcpy(lat_h.f32() + i * rank, out_lat.f32() + (i * heads + hd) * rank, sizeof(float) * rank);
    }
    const int64_t v0 = hd * (nope + dv) + nope;
    Tensor o_h = ops::linear(lat_h, w.kv_b.slice(0, v0, v0 + dv));  // (n, dv)
    for (int64_t i = 0; i < n; ++i) {
      std::memcpy(out.f32() + (i * heads + hd) * dv, o_h.f32() + i * dv, sizeof(float) * dv);
    }
  }
  return ops::linear(out.reshape({n, heads * dv}), w.o, w.o_bias);
}

Tensor Model::moe_block(int layer, const Tensor& h) {
  const MoeWeights& w = weights_.layers[layer].moe;
  const MoeConfig& m = config_.moe;
  Tensor logits = ops::linear(h, w.router, w.router_bias);  // (n, experts)
  if (router_observer_ && !router_observer_(layer, logits)) return Tensor();  // observer stopped the pass
  moe::Routing routing = moe::route(logits, w.score_bias, m);
  moe::DispatchLayout layout = moe::make_dispatch_layout(routing, m.num_experts);
  std::vector<int64_t>& load = expert_load_.tokens[layer];
  for (int e = 0; e < m.num_experts; ++e) load[e] += layout.tokens_per_expert[e];
  Tensor out;
  if (dispatcher_) {
    out = routed_experts_ep(layer, h, routing);
  } else {
    const moe::ActivationOptions act = moe::activation_for(m);
    Tensor expert_out = moe::run_experts(moe::permute_tokens(h, layout), layout, w.experts, act);
    out = Tensor::zeros(h.shape(), DType::kF32);
    moe::combine_tokens(expert_out, layout, routing, out);
  }
  if (w.shared.gate.defined()) {
    Tensor shared = moe::gated_mlp(h, w.shared, moe::ActivationOptions{});
    tp_sum(shared);
    if (w.shared_gate.defined()) {
      Tensor g = ops::linear(h, w.shared_gate);  // (n, 1)
      const int64_t hidden = h.size(1);
      for (int64_t i = 0; i < h.size(0); ++i) {
        float s = 1.f / (1.f + std::exp(-g.f32()[i]));
        ops::axpy(out.f32() + i * hidden, s, shared.f32() + i * hidden, hidden);
      }
    } else {
      ops::add_inplace(out, shared);
    }
  }
  return out;
}

Tensor Model::run_layers(const std::vector<int64_t>& ids, const std::vector<int64_t>& positions, KvTarget& kv) {
  const int64_t n = static_cast<int64_t>(ids.size()), hidden = config_.hidden_size;
  const float eps = static_cast<float>(config_.rms_norm_eps);
  Tensor x = Tensor::empty({n, hidden}, DType::kF32);  // residual stream
  ops::embedding(ids, weights_.embed, x);
  Tensor h = Tensor::empty({n, hidden}, DType::kF32);
  for (int l = 0; l < config_.num_layers; ++l) {
    const LayerWeights& lw = weights_.layers[l];
    ops::rms_norm(x, lw.input_norm, eps, h);
    Tensor attn = config_.attention.mla ? mla_block(l, h, positions, kv) : attention_block(l, h, positions, kv);
    tp_sum(attn);  // this rank's heads' share of the output projection
    ops::add_inplace(x, attn);
    ops::rms_norm(x, lw.post_attention_norm, eps, h);
    Tensor ffn;
    if (lw.is_moe) {
      ffn = moe_block(l, h);
    } else {
      ffn = moe::gated_mlp(h, lw.mlp, moe::ActivationOptions{});
      tp_sum(ffn);  // this rank's intermediate columns' share
    }
    if (!ffn.defined()) return Tensor();  // stopped by the router observer
    ops::add_inplace(x, ffn);
  }
  return x;
}

// Final norm and LM head over hidden rows (k, hidden) -> logits (k, vocab).
// With tensor parallelism the ranks' logits can differ in the last bit if the all-reduces did not sum in the
// same order everywhere (MPI only recommends it); a max all-reduce makes them identical, so every rank
// samples the same token and the ranks' forward calls stay in step.
Tensor Model::head_logits(const Tensor& last_hidden) {
  Tensor normed = Tensor::empty(last_hidden.shape(), DType::kF32);
  ops::rms_norm(last_hidden, weights_.final_norm, static_cast<float>(config_.rms_norm_eps), normed);
  Tensor logits = ops::linear(normed, weights_.lm_head);
  if (tp_) tp_->all_reduce(logits.f32(), logits.numel(), DType::kF32, parallel::ReduceOp::kMax);
  return logits;
}

namespace {
void check_ids(const std::vector<int64_t>& ids, int64_t vocab) {
  for (int64_t id : ids) {
    SY_REQUIRE(id >= 0 && id < vocab, InvalidArgument, "model", "token id ", id, " is outside the vocabulary [0, ",
               vocab, ")");
  }
}
}  // namespace

Tensor Model::forward(const std::vector<int64_t>& ids, KvCache& cache, bool all_logits) {
  SY_REQUIRE(!gpu_, Unsupported, "model", "forward with a contiguous KvCache runs on the CPU only; on the GPU use "
             "forward_batch with a pool from new_pool");
  const int64_t n = static_cast<int64_t>(ids.size());
  SY_REQUIRE(n > 0, InvalidArgument, "model", "forward needs at least one token");
  const int64_t start = cache.length();
  if (config_.max_position_embeddings > 0 && start + n > config_.max_position_embeddings) {
    log_warn("[model] sequence of ", start + n, " tokens exceeds max_position_embeddings (",
             config_.max_position_embeddings, ")");
  }
  cache.reserve(start + n);
  std::vector<int64_t> positions(n);
  for (int64_t i = 0; i < n; ++i) positions[i] = start + i;
  KvTarget kv;
  kv.cache = &cache;
  Tensor x = run_layers(ids, positions, kv);
  if (!x.defined()) return Tensor();
  cache.set_length(start + n);
  return head_logits(all_logits ? x : x.slice(0, n - 1, n).contiguous());
}

model_detail::BatchPlan Model::plan_batch(const std::vector<BatchSequence>& batch, PagedKvPool& pool) const {
  SY_REQUIRE(!batch.empty(), InvalidArgument, "model", "forward_batch needs at least one sequence");
  const KvLayout want = kv_layout(config_, device());
  SY_CHECK(pool.keys(0).size(1) == want.heads && pool.keys(0).size(2) == want.key_dim &&
               pool.values(0).size(2) == want.value_dim,
           "forward_batch: the pool was built for another model");
  const int64_t bs = pool.block_size();
  model_detail::BatchPlan plan;
  for (const BatchSequence& seq : batch) {
    const int64_t n = static_cast<int64_t>(seq.ids.size());
    SY_REQUIRE(n > 0, InvalidArgument, "model", "forward_batch: a sequence has no new tokens");
    SY_REQUIRE(seq.start >= 0, InvalidArgument, "model", "forward_batch: negative start ", seq.start);
    check_ids(seq.ids, config_.vocab_size);
    const int64_t len = seq.start + n;
    SY_REQUIRE(static_cast<int64_t>(seq.block_table.size()) * bs >= len, InvalidArgument, "model",
               "forward_batch: ", seq.block_table.size(), " blocks of ", bs, " cannot hold ", len, " tokens");
    for (int32_t b : seq.block_table) {
      SY_REQUIRE(b >= 0 && b < pool.num_blocks(), InvalidArgument, "model", "forward_batch: block ", b,
                 " outside the pool of ", pool.num_blocks());
    }
    ops::PagedSequence ps;
    ps.q_begin = static_cast<int64_t>(plan.ids.size());
    ps.q_end = ps.q_begin + n;
    ps.block_table = seq.block_table.data();
    ps.num_blocks = static_cast<int64_t>(seq.block_table.size());
    ps.kv_len = len;
    plan.sequences.push_back(ps);
    for (int64_t i = 0; i < n; ++i) {
      const int64_t p = seq.start + i;
      plan.ids.push_back(seq.ids[i]);
      plan.positions.push_back(p);
      plan.pool_rows.push_back(int64_t{seq.block_table[p / bs]} * bs + p % bs);
    }
    if (seq.want_logits) plan.logit_rows.push_back(ps.q_end - 1);
  }
  return plan;
}

Tensor Model::cpu_batch_logits(model_detail::BatchPlan& plan, PagedKvPool& pool) {
  SY_REQUIRE(pool.keys(0).device() == Device::kCpu, InvalidArgument, "model",
             "forward_batch: the KV pool is on the GPU but the model is on the CPU");
  KvTarget kv;
  kv.pool = &pool;
  kv.sequences = std::move(plan.sequences);
  kv.pool_rows = std::move(plan.pool_rows);
  Tensor x = run_layers(plan.ids, plan.positions, kv);
  if (!x.defined()) return Tensor();
  const int64_t hidden = config_.hidden_size;
  if (plan.logit_rows.empty()) return Tensor::empty({0, config_.vocab_size}, DType::kF32);
  Tensor last = Tensor::empty({static_cast<int64_t>(plan.logit_rows.size()), hidden}, DType::kF32);
  for (size_t r = 0; r < plan.logit_rows.size(); ++r) {
    std::memcpy(last.f32() + r * hidden, x.f32() + plan.logit_rows[r] * hidden, sizeof(float) * hidden);
  }
  return head_logits(last);
}

Tensor Model::forward_batch(const std::vector<BatchSequence>& batch, PagedKvPool& pool) {
  model_detail::BatchPlan plan = plan_batch(batch, pool);
  if (gpu_) return model_detail::gpu_forward_batch(*gpu_, plan, pool, expert_load_);
  return cpu_batch_logits(plan, pool);
}

std::vector<int64_t> Model::forward_batch_sample(const std::vector<BatchSequence>& batch, PagedKvPool& pool,
                                                 const std::vector<RowSampling>& rows) {
  model_detail::BatchPlan plan = plan_batch(batch, pool);
  SY_REQUIRE(rows.size() == plan.logit_rows.size(), InvalidArgument, "model", "forward_batch_sample: ",
             rows.size(), " sampling rows for ", plan.logit_rows.size(), " sequences that want logits");
  if (gpu_) {
    Tensor t = model_detail::gpu_forward_batch(*gpu_, plan, pool, expert_load_, &rows);
    return std::vector<int64_t>(t.i64(), t.i64() + t.numel());
  }
  Tensor logits = cpu_batch_logits(plan, pool);
  SY_REQUIRE(logits.defined(), InvalidArgument, "model",
             "forward_batch_sample: a router observer stopped the pass; there are no logits to sample");
  return sample_host_rows(logits, rows);
}

void Model::to_device(Device device) {
  if (device == Device::kCpu) {
    gpu_.reset();
    return;
  }
  SY_REQUIRE(!tp_, Unsupported, "model", "tensor parallelism is not available on the GPU yet");
  if (dispatcher_) {
    const moe::DispatcherOptions& o = dispatcher_->options();
    SY_REQUIRE(o.strategy == moe::DispatchStrategy::kAllToAll && o.capacity_factor <= 0, Unsupported, "model",
               "expert parallelism on the GPU runs the dropless all-to-all dispatch only (no --dispatch ",
               "allgather or capacity yet)");
  }
  gpu_ = model_detail::upload(config_, weights_, rope_, dispatcher_ ? ep_.get() : nullptr,
                              dispatcher_ && dispatcher_->options().int8_payload);
  if (attention_dp_) model_detail::set_attention_data_parallel(*gpu_, true);
}

void Model::set_cuda_graphs(bool enabled) {
  if (gpu_) model_detail::set_cuda_graphs(*gpu_, enabled);
}

void Model::reconfigure_device() {
  SY_REQUIRE(gpu_ != nullptr, InvalidArgument, "model", "reconfigure_device: the model is not on the GPU");
  model_detail::reconfigure(*gpu_);
}

PagedKvPool Model::new_pool(int64_t num_blocks, int64_t block_size) const {
  return PagedKvPool(config_, num_blocks, block_size, device());
}

}  // namespace sy
