// CostModel: step time, MFU and memory of one layout. Layers come in two kinds (dense, MoE), so one estimate
// costs a few dozen GEMM-time lookups whatever the depth; stages then only count layers of each kind.
// Formulas and their sources: docs/planner.md. Not a simulator of individual kernels or of time steps.
#include <algorithm>
#include <cmath>

#include "switchyard/core/error.h"
#include "switchyard/plan/cost_model.h"

namespace sy::plan {

namespace {
constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;
constexpr double kAdamBytesPerParam = 34;  // optimizer step traffic per local fp32 shard element, see docs

// How a process group of `size` ranks with rank stride `stride` lies on nodes of `gpn` devices.
struct Span {
  int n_in = 1, n_out = 1;  // ranks per node, nodes
};
Span span(int stride, int size, int gpn) {
  Span s;
  if (size <= 1) return s;
  s.n_in = stride >= gpn ? 1 : std::min(size, std::max(1, gpn / stride));
  s.n_out = (size + s.n_in - 1) / s.n_in;
  return s;
}

// Per-micro-batch time parts of one layer (or of the head), seconds.
struct Parts {
  double gemm = 0, attn = 0, mem = 0, tp = 0, cp = 0, ep = 0;
  double sum() const { return gemm + attn + mem + tp + cp + ep; }
  Parts& operator+=(const Parts& o) {
    gemm += o.gemm; attn += o.attn; mem += o.mem; tp += o.tp; cp += o.cp; ep += o.ep;
    return *this;
  }
  Parts scaled(double k) const { return {gemm * k, attn * k, mem * k, tp * k, cp * k, ep * k}; }
};
struct KindCost {
  Parts fwd, bwd, rec;  // rec: recomputation added to the backward pass
  double act = 0, act_no_recompute = 0;  // activation bytes per layer per micro-batch
};
}  // namespace

CostModel::CostModel(PlanModel model, ClusterSpec cluster, TrainJob job)
    : model_(std::move(model)), cluster_(std::move(cluster)), job_(job) {
  const ModelConfig& c = model_.config;
  params_ = count_params(model_);
  moe_prefix_.assign(c.num_layers + 1, 0);
  for (int i = 0; i < c.num_layers; ++i) {
    moe_prefix_[i + 1] = moe_prefix_[i] + (c.layer_is_moe[i] ? 1 : 0);
    if (c.layer_is_moe[i] && first_moe_ < 0) first_moe_ = i;
    if (!c.layer_is_moe[i] && first_dense_ < 0) first_dense_ = i;
  }
  const int s = std::max(1, job_.seq_len);
  if (first_dense_ >= 0) dense_flops_ = layer_flops(model_, first_dense_, s);
  if (first_moe_ >= 0) moe_flops_ = layer_flops(model_, first_moe_, s);
  head_flops_ = head_flops(model_, s);
  model_flops_step_ = ::sy::plan::model_flops_per_step(model_, s, std::max(1, job_.global_batch));
  const int n_moe = moe_prefix_[c.num_layers], n_dense = c.num_layers - n_moe;
  exec_flops_per_seq_ = 3 * (n_dense * dense_flops_.total_causal() + n_moe * moe_flops_.total_causal() + head_flops_);
  for (const auto& [d, f] : cluster_.gemm_shape_table) {
    log2_dims_.push_back(std::log2(d));
    factors_.push_back(f);
  }
}

double CostModel::shape_factor(double dim) const {
  if (factors_.empty()) return 1.0;
  if (dim <= 0) return factors_.front();
  double x = std::log2(dim);
  if (x >= log2_dims_.back()) return factors_.back();
  if (x <= log2_dims_.front()) return factors_.front() * std::max(dim / std::exp2(log2_dims_.front()), 1e-3);
  size_t i = 1;
  while (log2_dims_[i] < x) ++i;
  double w = (x - log2_dims_[i - 1]) / (log2_dims_[i] - log2_dims_[i - 1]);
  return factors_[i - 1] + w * (factors_[i] - factors_[i - 1]);
}

double CostModel::gemm_time(double m, double n, double k) const {
  if (m <= 0 || n <= 0 || k <= 0) return 0;
  double eff = cluster_.gemm_efficiency * shape_factor(m) * shape_factor(n) * shape_factor(k);
  return 2 * m * n * k / (cluster_.peak_bf16_tflops * 1e12 * eff);
}

Estimate CostModel::evaluate(Layout layout, bool explain) const {
  Estimate est;
  est.violations = check_layout(model_, job_, layout);
  est.layout = layout;
  if (!est.violations.empty()) return est;
  const Layout& L = est.layout;
  const ModelConfig& c = model_.config;
  const AttentionConfig& a = c.attention;
  const MoeConfig& e = c.moe;
  const ClusterSpec& k = cluster_;
  const int W = job_.num_gpus, gpn = k.gpus_per_node;
  const double s = job_.seq_len, h = double(c.hidden_size), heads = a.num_heads;
  const double t = L.tp, cpn = L.cp;
  const double sp_div = L.sequence_parallel ? t : 1;
  const double Ta = L.mbs * s / cpn;  // tokens of one micro-batch on one CP rank
  const double Tsp = Ta / sp_div;     // tokens after sequence-parallel split
  const double peak = k.peak_bf16_tflops * 1e12;
  const double hbm = k.hbm_tbps * 1e12 * k.hbm_efficiency;
  const double bw_i = k.intra_gbps * 1e9 * k.intra_efficiency, bw_e = k.inter_gbps * 1e9 * k.inter_efficiency;
  const double lat_i = k.intra_latency_us * 1e-6, lat_e = k.inter_latency_us * 1e-6;

  // Ring reduce-scatter or all-gather of a full buffer of S bytes, hierarchical over nodes.
  auto ring = [&](double S, const Span& g) {
    double tt = 0;
    if (g.n_in > 1) tt += (g.n_in - 1.0) / g.n_in * S / bw_i + (g.n_in - 1) * lat_i;
    if (g.n_out > 1) tt += (g.n_out - 1.0) / g.n_out * (S / g.n_in) / bw_e + (g.n_out - 1) * lat_e;
    return tt;
  };
  // All-to-all where each rank sends S bytes in total (its share to itself included).
  auto a2a = [&](double S, const Span& g) {
    double n = double(g.n_in) * g.n_out;
    if (n <= 1) return 0.0;
    double intra = S * (g.n_in - 1) / n, inter = S * (n - g.n_in) / n;
    return std::max(intra / bw_i, inter / bw_e) + (g.n_out > 1 ? lat_e : lat_i);
  };
  const Span tp_g = span(1, L.tp, gpn);
  const Span cp_g = span(L.tp, L.cp, gpn);
  const Span etp_g = span(1, L.etp, gpn);
  const Span ep_g = span(L.etp, L.ep, gpn);
  const Span dp_g = span(L.tp, L.cp * L.dp, gpn);       // distributed optimizer shards over DP x CP
  const Span edp_g = span(L.etp * L.ep, L.edp, gpn);
  const bool pp_inter = W / L.pp >= gpn;
  const double tp_keep = 1 - job_.tp_overlap, ep_keep = 1 - job_.ep_overlap;
  const double tp_coll = L.tp > 1 ? ring(Ta * h * 2, tp_g) * tp_keep : 0;  // one AG or RS of the hidden states
  const double core_bwd_factor = model_.flash_attention ? 2.5 : 2.0;

  // ---- attention block, per micro-batch ----
  Parts attn_f;
  if (a.mla) {
    const double qr = a.q_lora_rank, kvr = a.kv_lora_rank, rope = a.qk_rope_head_dim;
    attn_f.gemm = (qr > 0 ? gemm_time(Ta, qr, h) + gemm_time(Ta, heads * a.head_dim / t, qr)
                          : gemm_time(Ta, heads * a.head_dim / t, h)) +
                  gemm_time(Ta, kvr + rope, h) + gemm_time(Ta, heads * (a.qk_nope_head_dim + a.v_head_dim) / t, kvr) +
                  gemm_time(Ta, h, heads * a.v_head_dim / t);
  } else {
    attn_f.gemm = gemm_time(Ta, (heads + 2.0 * a.num_kv_heads) * a.head_dim / t, h) + gemm_time(Ta, h, heads * a.v_head_dim / t);
  }
  const LayerFlops& any = first_moe_ >= 0 ? moe_flops_ : dense_flops_;
  // Load-balanced causal CP cuts each sequence into 2 x CP chunks: short chunks run fused attention slower.
  const double chunk = L.cp > 1 ? s / (2.0 * L.cp) : s;
  attn_f.attn = any.attn_core_causal * L.mbs / (t * cpn) / (peak * k.attention_efficiency * shape_factor(chunk));
  {
    double qk_elems = (heads + (a.mla ? heads : a.num_kv_heads)) * a.head_dim / t;  // rope on q and k
    double bytes = Tsp * 10 * h + Ta * 4 * qk_elems;
    if (!model_.flash_attention) bytes += Ta * heads / t * s * (4 + (model_.dropout ? 5 : 0));  // softmax (+dropout)
    attn_f.mem = bytes / hbm;
  }
  attn_f.tp = 2 * tp_coll;
  double cp_comm = 0;
  if (L.cp > 1) {
    double kv_dim = a.mla ? heads * (a.head_dim + a.v_head_dim) : 2.0 * a.num_kv_heads * a.head_dim;
    double bytes = (L.cp - 1) * Ta * kv_dim / t * 2;
    double bw = cp_g.n_out > 1 ? bw_e : bw_i;
    cp_comm = bytes / bw + (L.cp - 1) * (cp_g.n_out > 1 ? lat_e : lat_i);
    attn_f.cp = std::max(0.0, cp_comm - attn_f.attn);
  }
  Parts attn_b{2 * attn_f.gemm, core_bwd_factor * attn_f.attn, 2 * attn_f.mem, attn_f.tp,
               std::max(0.0, 2 * cp_comm - core_bwd_factor * attn_f.attn), 0};

  ActivationOptions ao{L.tp, L.cp, L.etp, L.ep, L.sequence_parallel, L.recompute, std::max(1.0, job_.imbalance)};
  ActivationOptions ao_none = ao;
  ao_none.recompute = Recompute::kNone;

  auto finish = [&](KindCost& kc, int layer) {
    if (L.recompute == Recompute::kSelective) kc.rec.attn = attn_f.attn;
    if (L.recompute == Recompute::kFull) kc.rec = kc.fwd;
    kc.act = layer_activation_bytes(model_, layer, job_.seq_len, L.mbs, ao);
    kc.act_no_recompute = layer_activation_bytes(model_, layer, job_.seq_len, L.mbs, ao_none);
  };

  // ---- dense layer ----
  KindCost dense;
  if (first_dense_ >= 0) {
    const double f = double(c.intermediate_size);
    Parts mlp;
    mlp.gemm = gemm_time(Ta, (model_.gated_mlp ? 2 : 1) * f / t, h) + gemm_time(Ta, h, f / t);
    mlp.mem = (Tsp * 10 * h + Ta * (model_.gated_mlp ? 6 : 4) * f / t) / hbm;
    mlp.tp = 2 * tp_coll;
    dense.fwd = attn_f;
    dense.fwd += mlp;
    dense.bwd = attn_b;
    dense.bwd += Parts{2 * mlp.gemm, 0, 2 * mlp.mem, mlp.tp, 0, 0};
    finish(dense, first_dense_);
  }
  // ---- MoE layer ----
  KindCost moe;
  double dispatch_bytes = 0;
  if (first_moe_ >= 0) {
    const double imb = std::max(1.0, job_.imbalance);
    const double fe = double(e.expert_intermediate) / L.etp, fs = double(e.shared_intermediate);
    const double local_experts = double(e.num_experts) / L.ep;
    const double copies = Tsp * e.top_k * L.etp * imb;  // token copies the busiest device computes
    const double m_e = copies / local_experts;
    Parts mo;
    mo.gemm = gemm_time(Tsp, e.num_experts, h) +
              local_experts * (gemm_time(m_e, 2 * fe, h) + gemm_time(m_e, h, fe)) / k.grouped_gemm_efficiency;
    if (fs > 0) mo.gemm += gemm_time(Ta, 2 * fs / t, h) + gemm_time(Ta, h, fs / t);
    mo.mem = (Tsp * (10 * h + 8.0 * e.num_experts + 2 * h * (1 + e.top_k) * 2) + copies * 6 * fe + Ta * 6 * fs / t) / hbm;
    mo.tp = fs > 0 ? 2 * tp_coll : 0;  // the shared expert gathers and scatters like a dense MLP
    const double send = Tsp * e.top_k * h * 2 * imb;
    mo.ep = (2 * a2a(send, ep_g) + (L.etp > 1 ? 2 * ring(send * L.etp, etp_g) : 0)) * ep_keep;
    dispatch_bytes = 3 * send * L.etp;
    moe.fwd = attn_f;
    moe.fwd += mo;
    moe.bwd = attn_b;
    moe.bwd += Parts{2 * mo.gemm, 0, 2 * mo.mem, mo.tp, 0, mo.ep};
    finish(moe, first_moe_);
  }
  // ---- head, embedding, pipeline sends ----
  const double V = double(c.vocab_size);
  Parts head_f{gemm_time(Ta, V / t, h), 0, (Ta * V / t * 4 * 3) / hbm, L.tp > 1 ? tp_coll : 0, 0, 0};
  Parts head_b{2 * head_f.gemm, 0, 2 * head_f.mem, head_f.tp, 0, 0};
  Parts emb{0, 0, Ta * h * 2 * 2 / hbm, L.tp > 1 ? tp_coll : 0, 0, 0};
  // Pipeline sends use the scatter/gather optimisation (each TP rank sends 1/t of the hidden states).
  const double p2p_bytes = Ta / t * h * 2;
  const double p2p = L.pp > 1 ? (pp_inter ? lat_e + p2p_bytes / bw_e : lat_i + p2p_bytes / bw_i) : 0;

  // ---- stages ----
  const auto blocks = pipeline_blocks(c.num_layers, L.pp, L.vpp);
  const int m = L.num_microbatches;
  double t_max = 0, t_sum = 0, exposed_dp = 0, opt_time = 0;
  int slow = 0;
  std::vector<double> stage_t(L.pp);
  std::vector<Parts> stage_parts(L.pp);
  std::vector<double> stage_rec(L.pp);
  double best_mem = -1;
  MemoryBreakdown mem_best;
  int mem_stage = 0;
  for (int i = 0; i < L.pp; ++i) {
    int n_layers = 0, n_moe = 0;
    for (int ch = 0; ch < L.vpp; ++ch) {
      auto [lo, hi] = blocks[ch * L.pp + i];
      n_layers += hi - lo;
      n_moe += moe_prefix_[hi] - moe_prefix_[lo];
    }
    const int n_dense = n_layers - n_moe;
    const bool first = i == 0, last = i == L.pp - 1;
    Parts fwd = dense.fwd.scaled(n_dense), bwd = dense.bwd.scaled(n_dense), rec = dense.rec.scaled(n_dense);
    fwd += moe.fwd.scaled(n_moe);
    bwd += moe.bwd.scaled(n_moe);
    rec += moe.rec.scaled(n_moe);
    if (first) { fwd += emb; bwd += emb; }
    if (last) { fwd += head_f; bwd += head_b; }
    double pp_time = 2 * L.vpp * p2p;
    double ti = fwd.sum() + bwd.sum() + rec.sum() + pp_time;
    Parts all = fwd;
    all += bwd;
    stage_parts[i] = all;
    stage_rec[i] = rec.sum();
    stage_t[i] = ti;
    t_sum += ti;
    if (ti > t_max) { t_max = ti; slow = i; }

    // Parameters on one device of this stage.
    double p_dense = n_layers * double(params_.attention) + n_dense * double(params_.dense_mlp) +
                     n_moe * double(params_.moe_nonexpert);
    if (first) p_dense += double(params_.embedding);
    if (last) p_dense += params_.head > 0 ? double(params_.head) : (L.pp > 1 ? double(params_.embedding) : 0);
    p_dense /= t;
    const double p_exp = n_moe * double(e.num_experts) * double(params_.expert) / (double(L.ep) * L.etp);
    // Gradient reduce-scatter and parameter all-gather (distributed optimizer) or all-reduce.
    double rs = 0, ag = 0;
    if (L.distributed_optimizer) {
      rs = ring(4 * p_dense, dp_g) + ring(4 * p_exp, edp_g);
      ag = ring(2 * p_dense, dp_g) + ring(2 * p_exp, edp_g);
    } else {
      rs = 2 * (ring(4 * p_dense, dp_g) + ring(4 * p_exp, edp_g));
    }
    double rs_exposed = job_.overlap_grad_reduce ? std::max(0.0, rs - bwd.sum()) : rs;
    double ag_exposed = job_.overlap_param_gather && L.distributed_optimizer ? std::max(0.0, ag - fwd.sum()) : ag;
    exposed_dp = std::max(exposed_dp, rs_exposed + ag_exposed);
    const double shard = L.distributed_optimizer ? p_dense / (double(L.dp) * L.cp) + p_exp / L.edp : p_dense + p_exp;
    opt_time = std::max(opt_time, shard * kAdamBytesPerParam / hbm);

    // Memory of one device of this stage.
    MemoryBreakdown mb;
    mb.weights = 2 * (p_dense + p_exp);
    mb.grads = 4 * (p_dense + p_exp);
    mb.optimizer = 12 * shard;
    const double stage_act = n_dense * dense.act + n_moe * moe.act;
    double in_flight;
    if (L.vpp == 1) in_flight = std::min(m, L.pp - i) * stage_act;
    else in_flight = std::min(double(m) * L.vpp, 2.0 * (L.pp - i - 1) + (L.vpp - 1.0) * L.pp + 1) * stage_act / L.vpp;
    if (L.recompute == Recompute::kFull) {
      in_flight += std::max(n_dense > 0 ? dense.act_no_recompute : 0.0, n_moe > 0 ? moe.act_no_recompute : 0.0);
    }
    mb.activations = in_flight;
    if (last) mb.logits = Ta * V / t * 6;
    if (n_moe > 0) mb.dispatch = dispatch_bytes;
    mb.reserved = k.reserved_gib * kGiB;
    if (mb.total() > best_mem) {
      best_mem = mb.total();
      mem_best = mb;
      mem_stage = i;
    }
  }
  const double t_pipe = L.pp > 1 ? m * t_max + (t_sum - t_max) / L.vpp : m * t_max;
  est.step_time_s = t_pipe + exposed_dp + opt_time;

  const Parts& sp_parts = stage_parts[slow];
  TimeBreakdown& tb = est.time;
  tb.gemm = m * sp_parts.gemm;
  tb.attention = m * sp_parts.attn;
  tb.memory_bound = m * sp_parts.mem;
  tb.recompute = m * stage_rec[slow];
  tb.tp_comm = m * sp_parts.tp;
  tb.cp_comm = m * sp_parts.cp;
  tb.ep_comm = m * sp_parts.ep;
  tb.pp_comm = m * 2 * L.vpp * p2p;
  tb.bubble = t_pipe - m * t_max;
  tb.dp_comm = exposed_dp;
  tb.optimizer = opt_time;

  est.memory = mem_best;
  est.memory_stage = mem_stage;
  est.memory_gib_per_gpu = mem_best.total() / kGiB;
  const double devices_peak = double(W) * peak;
  est.mfu = model_flops_step_ / (est.step_time_s * devices_peak);
  double exec = exec_flops_per_seq_ * job_.global_batch;
  const int n_moe_all = moe_prefix_[c.num_layers], n_dense_all = c.num_layers - n_moe_all;
  if (L.recompute == Recompute::kSelective) {
    exec += job_.global_batch * (n_dense_all * dense_flops_.attn_core_causal + n_moe_all * moe_flops_.attn_core_causal);
  } else if (L.recompute == Recompute::kFull) {
    exec += job_.global_batch * (n_dense_all * dense_flops_.total_causal() + n_moe_all * moe_flops_.total_causal());
  }
  est.hfu = exec / (est.step_time_s * devices_peak);
  est.tflops_per_gpu = model_flops_step_ / est.step_time_s / W / 1e12;
  est.tokens_per_s_per_gpu = double(job_.global_batch) * s / est.step_time_s / W;
  if (est.memory_gib_per_gpu > k.hbm_gib && !explain) {
    est.violations.push_back({"memory", ""});
  } else if (est.memory_gib_per_gpu > k.hbm_gib) {
    est.violations.push_back(
        {"memory", detail::concat("[plan] needs ", std::round(est.memory_gib_per_gpu * 10) / 10, " GiB per device (stage ",
                                  mem_stage, ") but ", k.device, " has ", k.hbm_gib,
                                  " GiB; try recompute=selective or full, a larger tp/pp/ep, a smaller mbs, or dist_opt=1")});
  } else {
    est.feasible = true;
  }
  return est;
}

}  // namespace sy::plan
