// Every CUDA op against its CPU reference on random shapes (one token, odd sizes, empty experts, all tokens
// on one expert), through the shared harness (gpu_harness.h) and its stated tolerances.
#include <algorithm>
#include <array>
#include <functional>

#include "gpu_harness.h"
#include "switchyard/kernels/ops.h"
#include "switchyard/moe/dispatch.h"
#include "switchyard/moe/router.h"

namespace sy::test {
namespace {

TEST(GpuOps, LinearBf16WeightsMatchesCpu) {
  SY_SKIP_WITHOUT_GPU();
  struct Case { int64_t m, k, n; bool bias; };
  for (Case c : {Case{1, 64, 48, false}, Case{7, 130, 33, true}, Case{8, 2048, 300, true}, Case{64, 256, 512, true},
                 Case{200, 96, 17, false}}) {
    Tensor x = rand_tensor({c.m, c.k}), w = rand_tensor({c.n, c.k}, 0.2f).to(DType::kBF16);
    Tensor b = c.bias ? rand_tensor({c.n}) : Tensor();
    Tensor ref = Tensor::empty({c.m, c.n}, DType::kF32);
    ops::linear(x, w, b, ref);
    const std::string what = "linear m=" + std::to_string(c.m) + " k=" + std::to_string(c.k) + " n=" + std::to_string(c.n);
    for (DType xd : {DType::kF32, DType::kBF16}) {
      for (DType yd : {DType::kF32, DType::kBF16}) {
        Tensor y = poisoned_device({c.m, c.n}, yd);
        cuda::linear(cuda::to_device(x.to(xd)), cuda::to_device(w), c.bias ? cuda::to_device(b) : Tensor(), y);
        expect_close(what + (xd == DType::kF32 ? " x f32" : " x bf16") + (yd == DType::kF32 ? " y f32" : " y bf16"),
                     y, ref, kBf16Tol);
      }
    }
  }
}

TEST(GpuOps, RmsNormMatchesCpu) {
  SY_SKIP_WITHOUT_GPU();
  for (int64_t m : {1, 5, 300}) {
    for (int64_t d : {64, 2048, 7}) {
      Tensor x = rand_tensor({m, d}, 3.f), w = rand_tensor({d});
      for (DType wd : {DType::kF32, DType::kBF16}) {
        Tensor wt = w.to(wd), ref = Tensor::empty({m, d}, DType::kF32);
        ops::rms_norm(x, wt, 1e-6f, ref);
        Tensor y = poisoned_device({m, d});
        cuda::rms_norm(cuda::to_device(x), cuda::to_device(wt), 1e-6f, y);
        expect_close("rms_norm m=" + std::to_string(m) + " d=" + std::to_string(d), y, ref, kF32Tol);
      }
    }
  }
}

TEST(GpuOps, RopeBothLayoutsMatchCpu) {
  SY_SKIP_WITHOUT_GPU();
  for (bool interleaved : {false, true}) {
    for (double partial : {1.0, 0.5}) {
      RopeConfig rc;
      rc.theta = 1e6;
      rc.interleaved = interleaved;
      rc.partial_rotary_factor = partial;
      const int head_dim = 64;
      ops::RopeTable table = ops::make_rope_table(rc, head_dim, 8192);
      const int64_t t = rand_int(1, 40), heads = 3;
      std::vector<int64_t> pos(t);
      for (auto& p : pos) p = rand_int(0, 8000);
      Tensor x = rand_tensor({t, heads, head_dim}), ref = x.clone();
      ops::apply_rope(ref, pos, table);
      Tensor xd = cuda::to_device(x);
      cuda::apply_rope(xd, cuda::to_device(i64_tensor(pos)), table);
      expect_close(std::string("rope ") + (interleaved ? "interleaved" : "halves") + " partial " +
                       std::to_string(partial), xd, ref, kF32Tol);
    }
  }
}

TEST(GpuOps, SiluMulMatchesCpu) {
  SY_SKIP_WITHOUT_GPU();
  for (int64_t n : {1, 1000, 65537}) {
    Tensor g = rand_tensor({n}, 6.f), u = rand_tensor({n}), ref = Tensor::empty({n}, DType::kF32);
    ops::silu_mul(g, u, ref);
    Tensor out = poisoned_device({n});
    cuda::silu_mul(cuda::to_device(g), cuda::to_device(u), out);
    expect_close("silu_mul n=" + std::to_string(n), out, ref, kF32Tol);
  }
}

struct RouterCase {
  const char* name;
  int experts, top_k, groups, topk_groups;
  ScoreFunction score;
  GroupScore group_score;
  bool bias, norm, softmax_over_topk;
  double scale;
};

TEST(GpuOps, RouterMatchesCpuDecisions) {
  SY_SKIP_WITHOUT_GPU();
  const RouterCase cases[] = {
      {"qwen3 softmax", 128, 8, 1, 1, ScoreFunction::kSoftmax, GroupScore::kMax, false, true, false, 1.0},
      {"mixtral", 8, 2, 1, 1, ScoreFunction::kSoftmax, GroupScore::kMax, false, true, false, 1.0},
      {"deepseek-v2 groups", 64, 6, 8, 3, ScoreFunction::kSoftmax, GroupScore::kMax, false, false, false, 16.0},
      {"deepseek-v3 sigmoid bias", 256, 8, 8, 4, ScoreFunction::kSigmoid, GroupScore::kTop2Sum, true, true, false, 2.5},
      {"gpt-oss topk softmax", 32, 4, 1, 1, ScoreFunction::kSoftmax, GroupScore::kMax, false, false, true, 1.0},
      {"one expert", 1, 1, 1, 1, ScoreFunction::kSigmoid, GroupScore::kMax, false, false, false, 1.0},
  };
  for (const RouterCase& c : cases) {
    MoeConfig o;
    o.num_experts = c.experts;
    o.top_k = c.top_k;
    o.num_groups = c.groups;
    o.topk_groups = c.topk_groups;
    o.score_function = c.score;
    o.group_score = c.group_score;
    o.score_bias = c.bias;
    o.norm_topk_prob = c.norm;
    o.softmax_over_topk = c.softmax_over_topk;
    o.routed_scaling_factor = c.scale;
    for (int64_t t : {1, 33, 500}) {
      Tensor logits = rand_tensor({t, c.experts}, 4.f);
      Tensor bias = c.bias ? rand_tensor({c.experts}, 0.1f) : Tensor();
      moe::Routing ref = moe::route(logits, bias, o);
      Tensor expert = Tensor::empty({t, c.top_k}, DType::kI32, Device::kCuda);
      Tensor weight = poisoned_device({t, c.top_k});
      cuda::route(cuda::to_device(logits), c.bias ? cuda::to_device(bias) : Tensor(), o, expert, weight);
      Tensor eh = cuda::to_host(expert);
      const std::string what = std::string("route ") + c.name + " t=" + std::to_string(t);
      int64_t mismatches = 0;
      for (int64_t i = 0; i < t * c.top_k; ++i) mismatches += eh.i32()[i] != ref.expert[i];
      EXPECT_EQ(mismatches, 0) << what << ": expert choices differ";
      expect_close(what, weight, Tensor::from_vector({t, c.top_k}, ref.weight), kF32Tol);
    }
  }
}

TEST(GpuOps, DispatchPermuteUnpermuteMatchCpu) {
  SY_SKIP_WITHOUT_GPU();
  struct Case { const char* name; int64_t t; int top_k, experts; std::function<int(int64_t, int)> pick; };
  const Case cases[] = {
      {"random", 300, 8, 128, [](int64_t, int) { return static_cast<int>(rand_int(0, 127)); }},
      {"one token", 1, 4, 16, [](int64_t, int s) { return 3 * s + 1; }},
      {"all tokens on expert 5 (slot 0)", 77, 2, 8, [](int64_t i, int s) { return s == 0 ? 5 : static_cast<int>(i % 3); }},
      {"every slot on one expert", 40, 1, 64, [](int64_t, int) { return 63; }},
      {"empty experts (only even ids)", 129, 3, 32, [](int64_t i, int s) { return static_cast<int>(2 * ((i + 5 * s) % 16)); }},
      {"no tokens", 0, 2, 8, [](int64_t, int) { return 0; }},
  };
  for (const Case& c : cases) {
    moe::Routing r = make_routing(c.t, c.top_k, c.experts, c.pick);
    moe::DispatchLayout ref = moe::make_dispatch_layout(r, c.experts);
    Tensor expert = Tensor::empty({c.t, c.top_k}, DType::kI32);
    for (size_t i = 0; i < r.expert.size(); ++i) expert.i32()[i] = r.expert[i];
    cuda::DeviceDispatchLayout l = cuda::make_dispatch_layout(cuda::to_device(expert), c.experts);
    const std::string what = std::string("dispatch ") + c.name;
    auto as_vec = [](const Tensor& d) {
      Tensor h = cuda::to_host(d);
      return std::vector<int64_t>(h.i64(), h.i64() + h.numel());
    };
    EXPECT_EQ(as_vec(l.tokens_per_expert), ref.tokens_per_expert) << what;
    EXPECT_EQ(as_vec(l.offsets), ref.offsets) << what;
    EXPECT_EQ(as_vec(l.row_assignment), ref.row_assignment) << what;
    EXPECT_EQ(as_vec(l.assignment_row), ref.assignment_row) << what;

    const int64_t hidden = 96, rows = ref.num_rows();
    Tensor x = rand_tensor({c.t, hidden});
    Tensor pref = moe::permute_tokens(x, ref);
    Tensor perm = poisoned_device({rows, hidden});
    cuda::permute(cuda::to_device(x), l, perm);
    expect_close(what + " permute", perm, pref, 0.0);
    Tensor permb = poisoned_device({rows, hidden}, DType::kBF16);
    cuda::permute(cuda::to_device(x.to(DType::kBF16)), l, permb);
    expect_close(what + " permute bf16", permb, pref, kBf16Tol);

    Tensor expert_out = rand_tensor({rows, hidden});
    Tensor out_ref = rand_tensor({c.t, hidden});  // combine adds into out
    Tensor out = cuda::to_device(out_ref);
    moe::combine_tokens(expert_out, ref, r, out_ref);
    cuda::unpermute(cuda::to_device(expert_out), l, cuda::to_device(Tensor::from_vector({c.t, c.top_k}, r.weight)), out);
    expect_close(what + " unpermute", out, out_ref, kF32Tol);
  }
}

// The tensor-core prefill kernel against the CPU attention on bf16-rounded inputs: lengths that are not a
// multiple of the 64-row tiles, GQA, one token.
TEST(GpuOps, FlashAttentionMatchesCpu) {
  SY_SKIP_WITHOUT_GPU();
  for (auto [t, heads, kv_heads] : std::vector<std::array<int64_t, 3>>{{200, 4, 2}, {64, 2, 2}, {1, 2, 1}, {129, 8, 1}}) {
    const int64_t d = 128;
    Tensor q = rand_tensor({t, heads, d}).to(DType::kBF16), k = rand_tensor({t, kv_heads, d}).to(DType::kBF16);
    Tensor v = rand_tensor({t, kv_heads, d}).to(DType::kBF16);
    const float scale = 1.f / std::sqrt(static_cast<float>(d));
    std::vector<int64_t> pos(static_cast<size_t>(t));
    for (int64_t i = 0; i < t; ++i) pos[i] = i;
    ops::AttentionOptions o;
    o.scale = scale;
    Tensor ref = Tensor::empty({t, heads, d}, DType::kF32);
    ops::attention(q.to(DType::kF32), k.to(DType::kF32), v.to(DType::kF32), pos, t, o, ref);
    Tensor out = poisoned_device({t, heads, d});
    cuda::flash_attention(cuda::to_device(q), cuda::to_device(k), cuda::to_device(v), scale, out);
    expect_close("flash_attention t=" + std::to_string(t) + " heads=" + std::to_string(heads) + "/" +
                     std::to_string(kv_heads),
                 out, ref, kBf16Tol);
  }
  Tensor bad = cuda::to_device(rand_tensor({4, 2, 64}).to(DType::kBF16));
  Tensor out = poisoned_device({4, 2, 64});
  EXPECT_THROW(cuda::flash_attention(bad, bad, bad, 1.f, out), InvalidArgument);
}

TEST(GpuOps, CausalAttentionMatchesCpu) {
  SY_SKIP_WITHOUT_GPU();
  struct Case { const char* name; int64_t t, prefix, heads, kv_heads, dk, dv; int window; bool sinks; };
  const Case cases[] = {
      {"one token", 1, 0, 4, 4, 64, 64, 0, false},
      {"gqa prefill", 70, 0, 8, 2, 128, 128, 0, false},
      {"window + sinks (gpt-oss)", 90, 10, 4, 1, 64, 64, 16, true},
      {"chunk after cache, mla-like dv", 33, 100, 2, 2, 192, 128, 0, false},
      {"dv 256", 5, 3, 2, 1, 256, 256, 0, true},
  };
  for (const Case& c : cases) {
    const int64_t kv_len = c.prefix + c.t;
    Tensor q = rand_tensor({c.t, c.heads, c.dk}), k = rand_tensor({kv_len, c.kv_heads, c.dk});
    Tensor v = rand_tensor({kv_len, c.kv_heads, c.dv});
    Tensor sinks = c.sinks ? rand_tensor({c.heads}, 2.f) : Tensor();
    std::vector<int64_t> pos(c.t);
    for (int64_t i = 0; i < c.t; ++i) pos[i] = c.prefix + i;
    ops::AttentionOptions opt;
    opt.scale = 1.f / std::sqrt(static_cast<float>(c.dk));
    opt.window = c.window;
    opt.sinks = c.sinks ? &sinks : nullptr;
    Tensor ref = Tensor::empty({c.t, c.heads, c.dv}, DType::kF32);
    ops::attention(q, k, v, pos, kv_len, opt, ref);
    cuda::AttentionArgs args;
    args.scale = opt.scale;
    args.window = c.window;
    if (c.sinks) args.sinks = cuda::to_device(sinks);
    Tensor out = poisoned_device({c.t, c.heads, c.dv});
    cuda::attention(cuda::to_device(q), cuda::to_device(k), cuda::to_device(v), cuda::to_device(i64_tensor(pos)),
                    kv_len, args, out);
    expect_close(std::string("attention ") + c.name, out, ref, kAttentionTol);
  }
}

// The paged kernel against the CPU paged attention: f32 and bf16 pools (the bf16 case on the same bf16-rounded
// keys and values), shuffled block tables, decode rows over long contexts with the key splits the batch size
// picks, forced to one split and to an odd count, a prefill chunk, window + sinks.
TEST(GpuOps, PagedAttentionMatchesCpu) {
  SY_SKIP_WITHOUT_GPU();
  const int64_t bs = 16, heads = 8, kv_heads = 2, dk = 128, dv = 128;
  const std::vector<int64_t> lengths = {1, 37, 700, 130, 260};  // keys per sequence
  const std::vector<int64_t> queries = {1, 1, 1, 1, 5};          // newest rows queried per sequence
  int64_t total_blocks = 0;
  for (int64_t n : lengths) total_blocks += (n + bs - 1) / bs;
  total_blocks += 3;  // blocks nobody reads
  std::vector<int32_t> order(static_cast<size_t>(total_blocks));
  for (int64_t b = 0; b < total_blocks; ++b) order[b] = static_cast<int32_t>((b * 7 + 3) % total_blocks);
  std::vector<int32_t> tables;
  std::vector<int64_t> pos, table_start;
  std::vector<ops::PagedSequence> seqs;
  std::vector<int64_t> seq_table_start;
  int64_t t = 0, next_block = 0;
  for (size_t i = 0; i < lengths.size(); ++i) {
    const int64_t nb = (lengths[i] + bs - 1) / bs, start = static_cast<int64_t>(tables.size());
    for (int64_t b = 0; b < nb; ++b) tables.push_back(order[next_block++]);
    seqs.push_back({t, t + queries[i], nullptr, nb, lengths[i]});
    seq_table_start.push_back(start);
    for (int64_t r = 0; r < queries[i]; ++r) {
      pos.push_back(lengths[i] - queries[i] + r);
      table_start.push_back(start);
    }
    t += queries[i];
  }
  for (size_t i = 0; i < seqs.size(); ++i) seqs[i].block_table = tables.data() + seq_table_start[i];
  Tensor q = rand_tensor({t, heads, dk});
  Tensor sinks = rand_tensor({heads}, 2.f);
  for (DType pool_dtype : {DType::kF32, DType::kBF16}) {
    Tensor k = rand_tensor({total_blocks * bs, kv_heads, dk}).to(pool_dtype);
    Tensor v = rand_tensor({total_blocks * bs, kv_heads, dv}).to(pool_dtype);
    for (int window : {0, 50}) {
      ops::AttentionOptions opt;
      opt.scale = 1.f / std::sqrt(static_cast<float>(dk));
      opt.window = window;
      opt.sinks = window > 0 ? &sinks : nullptr;
      Tensor ref = Tensor::empty({t, heads, dv}, DType::kF32);
      ops::paged_attention(q, k.to(DType::kF32), v.to(DType::kF32), pos, seqs, bs, opt, ref);
      for (int splits : {0, 1, 7}) {
        cuda::AttentionArgs args;
        args.scale = opt.scale;
        args.window = window;
        if (window > 0) args.sinks = cuda::to_device(sinks);
        args.key_splits = splits;
        Tensor out = poisoned_device({t, heads, dv});
        Tensor tab = Tensor::empty({static_cast<int64_t>(tables.size())}, DType::kI32);
        std::copy(tables.begin(), tables.end(), tab.i32());
        cuda::paged_attention(cuda::to_device(q), cuda::to_device(k), cuda::to_device(v),
                              cuda::to_device(i64_tensor(pos)), cuda::to_device(i64_tensor(table_start)),
                              cuda::to_device(tab), bs, args, out);
        expect_close(std::string("paged attention ") + dtype_name(pool_dtype) + " window " + std::to_string(window) +
                         " splits " + std::to_string(splits),
                     out, ref, kAttentionTol);
      }
    }
  }
  // Keys and values of different dtypes are refused.
  Tensor out = poisoned_device({t, heads, dv});
  cuda::AttentionArgs args;
  EXPECT_THROW(cuda::paged_attention(cuda::to_device(q), cuda::to_device(Tensor::zeros({bs, kv_heads, dk}, DType::kBF16)),
                                     cuda::to_device(Tensor::zeros({bs, kv_heads, dv}, DType::kF32)),
                                     cuda::to_device(i64_tensor(pos)), cuda::to_device(i64_tensor(table_start)),
                                     cuda::to_device(Tensor::zeros({1}, DType::kI32)), bs, args, out),
               InvalidArgument);
}

}  // namespace
}  // namespace sy::test
