// Op tests: every CPU kernel against a naive double-precision reference on random shapes, including
// edge shapes (one row, odd sizes that miss the vector width, empty inputs).
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "switchyard/core/error.h"
#include "switchyard/kernels/ops.h"
#include "test_util.h"

namespace sy {
namespace {

Tensor random_tensor(std::mt19937& rng, const Shape& shape, float scale = 1.f) {
  std::normal_distribution<float> dist(0.f, scale);
  Tensor t = Tensor::empty(shape, DType::kF32);
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = dist(rng);
  return t;
}

// Rounds through `dt` so that the reference sees exactly the weights the kernel sees.
Tensor rounded(const Tensor& t, DType dt) { return t.to(dt).to(DType::kF32); }

struct LinearCase {
  int64_t m, k, n;
  DType dtype;
  bool bias;
};

class LinearOp : public ::testing::TestWithParam<LinearCase> {};

TEST_P(LinearOp, MatchesNaiveReference) {
  const LinearCase c = GetParam();
  std::mt19937 rng(static_cast<unsigned>(c.m * 131 + c.k * 7 + c.n));
  Tensor x = random_tensor(rng, {c.m, c.k});
  Tensor w32 = random_tensor(rng, {c.n, c.k}, 0.2f);
  Tensor w = w32.to(c.dtype);
  Tensor wref = rounded(w32, c.dtype);
  Tensor b = c.bias ? random_tensor(rng, {c.n}).to(c.dtype) : Tensor();
  Tensor bref = c.bias ? b.to(DType::kF32) : Tensor();
  Tensor y = ops::linear(x, w, b);
  for (int64_t i = 0; i < c.m; ++i) {
    for (int64_t j = 0; j < c.n; ++j) {
      double ref = c.bias ? bref.f32()[j] : 0.0;
      double mag = std::fabs(ref);
      for (int64_t kk = 0; kk < c.k; ++kk) {
        double p = static_cast<double>(x.f32()[i * c.k + kk]) * wref.f32()[j * c.k + kk];
        ref += p;
        mag += std::fabs(p);
      }
      ASSERT_NEAR(y.f32()[i * c.n + j], ref, 1e-5 * mag + 1e-6) << "row " << i << " col " << j;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, LinearOp,
    ::testing::Values(LinearCase{1, 64, 32, DType::kF32, false}, LinearCase{1, 67, 33, DType::kBF16, true},
                      LinearCase{3, 130, 70, DType::kBF16, false}, LinearCase{8, 256, 129, DType::kF16, true},
                      LinearCase{9, 100, 65, DType::kBF16, false}, LinearCase{33, 257, 200, DType::kBF16, true},
                      LinearCase{17, 48, 300, DType::kF32, true}, LinearCase{5, 1, 7, DType::kF16, false},
                      LinearCase{64, 64, 64, DType::kF16, false},
                      // The fused prefill micro-kernel's edges (9-1024 rows, tiles of 4 rows of x by 5 weight
                      // rows): k below one vector (masked tail only), n not a multiple of 5 (narrower last
                      // tiles), 1-3 trailing rows of x, 128 rows at a real k, its largest m, and the first m
                      // past it (converted sgemm).
                      LinearCase{15, 15, 3, DType::kF16, false}, LinearCase{127, 33, 17, DType::kBF16, true},
                      LinearCase{10, 64, 9, DType::kBF16, false}, LinearCase{128, 2048, 96, DType::kBF16, false},
                      LinearCase{1024, 40, 12, DType::kBF16, true}, LinearCase{1025, 40, 9, DType::kBF16, false}));

TEST(LinearOp, EmptyRowsIsANoOp) {
  Tensor x = Tensor::empty({0, 16}, DType::kF32);
  Tensor w = Tensor::zeros({8, 16}, DType::kBF16);
  Tensor y = ops::linear(x, w);
  EXPECT_EQ(y.size(0), 0);
  EXPECT_EQ(y.size(1), 8);
}

TEST(RmsNormOp, MatchesReference) {
  std::mt19937 rng(3);
  for (int64_t d : {1, 7, 64, 129}) {
    Tensor x = random_tensor(rng, {5, d}, 3.f);
    Tensor w = random_tensor(rng, {d}).to(DType::kBF16);
    Tensor y = Tensor::empty({5, d}, DType::kF32);
    ops::rms_norm(x, w, 1e-5f, y);
    for (int64_t i = 0; i < 5; ++i) {
      double ss = 0;
      for (int64_t j = 0; j < d; ++j) ss += double(x.f32()[i * d + j]) * x.f32()[i * d + j];
      double inv = 1.0 / std::sqrt(ss / d + 1e-5);
      for (int64_t j = 0; j < d; ++j) {
        double ref = w.item(j) * x.f32()[i * d + j] * inv;
        ASSERT_NEAR(y.f32()[i * d + j], ref, 1e-5 * (1 + std::fabs(ref)));
      }
    }
  }
}

TEST(EmbeddingOp, LooksUpRowsAndRejectsOutOfVocab) {
  std::mt19937 rng(4);
  Tensor table = random_tensor(rng, {10, 6}).to(DType::kBF16);
  Tensor out = Tensor::empty({3, 6}, DType::kF32);
  ops::embedding({9, 0, 4}, table, out);
  for (int j = 0; j < 6; ++j) EXPECT_EQ(out.f32()[j], table.item(9 * 6 + j));
  EXPECT_THROW(ops::embedding({10, 0, 1}, table, out), InvalidArgument);
  EXPECT_THROW(ops::embedding({-1, 0, 1}, table, out), InvalidArgument);
}

TEST(RopeOp, HalfAndInterleavedRotateThePairsTheyName) {
  RopeConfig cfg;
  cfg.theta = 10000;
  for (bool interleaved : {false, true}) {
    cfg.interleaved = interleaved;
    ops::RopeTable table = ops::make_rope_table(cfg, 8, 128);
    std::mt19937 rng(5);
    Tensor x = random_tensor(rng, {3, 2, 8});
    Tensor orig = x.clone();
    std::vector<int64_t> pos = {0, 5, 77};
    ops::apply_rope(x, pos, table);
    for (int64_t t = 0; t < 3; ++t) {
      for (int64_t h = 0; h < 2; ++h) {
        for (int f = 0; f < 4; ++f) {
          int i0 = interleaved ? 2 * f : f, i1 = interleaved ? 2 * f + 1 : f + 4;
          double angle = pos[t] * std::pow(10000.0, -2.0 * f / 8);
          const float* o = orig.f32() + (t * 2 + h) * 8;
          const float* r = x.f32() + (t * 2 + h) * 8;
          EXPECT_NEAR(r[i0], o[i0] * std::cos(angle) - o[i1] * std::sin(angle), 1e-4);
          EXPECT_NEAR(r[i1], o[i1] * std::cos(angle) + o[i0] * std::sin(angle), 1e-4);
        }
      }
    }
  }
}

TEST(RopeOp, YarnMatchesPublishedGptOssValues) {
  // Reference values from transformers' yarn rope for gpt-oss (dim 64, theta 150000, factor 32, L0 4096,
  // beta 32/1, truncate false): attention scaling 1 + 0.1 ln 32, inv_freq[1] = 0.6890443, inv_freq[2] = 0.4747820.
  RopeConfig cfg;
  cfg.type = RopeType::kYarn;
  cfg.theta = 150000;
  cfg.factor = 32;
  cfg.original_max_position = 4096;
  cfg.truncate = false;
  ops::RopeTable t = ops::make_rope_table(cfg, 64, 131072);
  EXPECT_NEAR(t.attention_scaling, 1.3465735902799727, 1e-6);
  EXPECT_NEAR(t.inv_freq[0], 1.0, 1e-7);
  EXPECT_NEAR(t.inv_freq[1], 0.6890443, 1e-6);
  EXPECT_NEAR(t.inv_freq[2], 0.4747820, 1e-6);
}

TEST(RopeOp, Llama3MatchesPublishedValues) {
  // Llama-3.1-8B: theta 5e5, d 128, factor 8, low 1, high 4, original context 8192.
  RopeConfig cfg;
  cfg.type = RopeType::kLlama3;
  cfg.theta = 500000;
  cfg.factor = 8;
  cfg.original_max_position = 8192;
  ops::RopeTable t = ops::make_rope_table(cfg, 128, 131072);
  EXPECT_NEAR(t.inv_freq[20], 1.656044088e-2, 1e-8);
  EXPECT_NEAR(t.inv_freq[40], 3.428102355e-5, 1e-10);
  EXPECT_NEAR(t.inv_freq[63], 3.068925878e-7, 1e-12);
}

// Naive attention over explicit positions.
void reference_attention(const Tensor& q, const Tensor& k, const Tensor& v, const std::vector<int64_t>& pos,
                         const ops::AttentionOptions& o, std::vector<double>& out) {
  const int64_t t = q.size(0), h = q.size(1), dk = q.size(2), kvh = k.size(1), dv = v.size(2);
  out.assign(t * h * dv, 0.0);
  for (int64_t i = 0; i < t; ++i) {
    for (int64_t hh = 0; hh < h; ++hh) {
      int64_t kh = hh / (h / kvh);
      std::vector<double> s;
      std::vector<int64_t> js;
      for (int64_t j = 0; j <= pos[i]; ++j) {
        if (o.window > 0 && pos[i] - j >= o.window) continue;
        double d = 0;
        for (int64_t c = 0; c < dk; ++c) d += double(q.f32()[(i * h + hh) * dk + c]) * k.f32()[(j * kvh + kh) * dk + c];
        s.push_back(d * o.scale);
        js.push_back(j);
      }
      double mx = -1e300;
      for (double x : s) mx = std::max(mx, x);
      double sink = o.sinks ? o.sinks->item(hh) : -1e300;
      mx = std::max(mx, sink);
      double den = 0;
      for (double& x : s) den += (x = std::exp(x - mx));
      if (o.sinks) den += std::exp(sink - mx);
      for (size_t a = 0; a < s.size(); ++a) {
        for (int64_t c = 0; c < dv; ++c) out[(i * h + hh) * dv + c] += s[a] / den * v.f32()[(js[a] * kvh + kh) * dv + c];
      }
    }
  }
}

struct AttentionCase {
  int64_t t, heads, kv_heads, dk, dv, past;
  int window;
  bool sinks;
};
class AttentionOp : public ::testing::TestWithParam<AttentionCase> {};

TEST_P(AttentionOp, MatchesNaiveReference) {
  const AttentionCase c = GetParam();
  std::mt19937 rng(static_cast<unsigned>(c.t * 17 + c.heads));
  const int64_t kv_len = c.past + c.t;
  Tensor q = random_tensor(rng, {c.t, c.heads, c.dk});
  Tensor k = random_tensor(rng, {kv_len + 3, c.kv_heads, c.dk});  // extra capacity rows must be ignored
  Tensor v = random_tensor(rng, {kv_len + 3, c.kv_heads, c.dv});
  Tensor sinks = random_tensor(rng, {c.heads});
  std::vector<int64_t> pos(c.t);
  for (int64_t i = 0; i < c.t; ++i) pos[i] = c.past + i;
  ops::AttentionOptions o;
  o.scale = 1.f / std::sqrt(static_cast<float>(c.dk));
  o.window = c.window;
  o.sinks = c.sinks ? &sinks : nullptr;
  Tensor out = Tensor::empty({c.t, c.heads, c.dv}, DType::kF32);
  ops::attention(q, k, v, pos, kv_len, o, out);
  std::vector<double> ref;
  reference_attention(q, k, v, pos, o, ref);
  for (size_t i = 0; i < ref.size(); ++i) ASSERT_NEAR(out.f32()[i], ref[i], 1e-5) << i;
}

INSTANTIATE_TEST_SUITE_P(Shapes, AttentionOp,
                         ::testing::Values(AttentionCase{1, 1, 1, 8, 8, 0, 0, false},
                                           AttentionCase{7, 4, 2, 16, 16, 0, 0, false},
                                           AttentionCase{5, 6, 2, 12, 20, 9, 0, true},
                                           AttentionCase{9, 3, 1, 33, 17, 4, 4, false},
                                           AttentionCase{1, 8, 8, 64, 64, 40, 16, true}));

TEST(ElementwiseOps, SwiGluVariantsMatchTheirFormulas) {
  std::mt19937 rng(6);
  Tensor g = random_tensor(rng, {4, 37}, 4.f), u = random_tensor(rng, {4, 37}, 4.f);
  Tensor out = Tensor::empty({4, 37}, DType::kF32);
  ops::silu_mul(g, u, out);
  for (int64_t i = 0; i < g.numel(); ++i) {
    double gv = g.f32()[i];
    EXPECT_NEAR(out.f32()[i], gv / (1 + std::exp(-gv)) * u.f32()[i], 1e-5 * (1 + std::fabs(out.f32()[i])));
  }
  ops::clamped_swiglu(g, u, 1.702f, 7.f, out);
  for (int64_t i = 0; i < g.numel(); ++i) {
    double gv = std::min<double>(g.f32()[i], 7.0), uv = std::clamp<double>(u.f32()[i], -7.0, 7.0);
    double ref = (uv + 1) * gv / (1 + std::exp(-1.702 * gv));
    EXPECT_NEAR(out.f32()[i], ref, 1e-5 * (1 + std::fabs(ref)));
  }
}

TEST(ElementwiseOps, SoftmaxRowsSumToOneAndKeepOrder) {
  std::mt19937 rng(7);
  Tensor x = random_tensor(rng, {3, 50}, 10.f);
  Tensor ref = x.clone();
  ops::softmax_rows(x);
  for (int r = 0; r < 3; ++r) {
    double sum = 0, mx = -1e30;
    for (int i = 0; i < 50; ++i) mx = std::max<double>(mx, ref.f32()[r * 50 + i]);
    double den = 0;
    for (int i = 0; i < 50; ++i) den += std::exp(ref.f32()[r * 50 + i] - mx);
    for (int i = 0; i < 50; ++i) {
      sum += x.f32()[r * 50 + i];
      EXPECT_NEAR(x.f32()[r * 50 + i], std::exp(ref.f32()[r * 50 + i] - mx) / den, 1e-6);
    }
    EXPECT_NEAR(sum, 1.0, 1e-5);
  }
}

TEST(VectorOps, DotAndAxpyOnOddLengths) {
  std::mt19937 rng(8);
  for (int64_t n : {0, 1, 15, 16, 17, 33, 100}) {
    Tensor a = random_tensor(rng, {std::max<int64_t>(n, 1)}), b = random_tensor(rng, {std::max<int64_t>(n, 1)});
    double ref = 0;
    for (int64_t i = 0; i < n; ++i) ref += double(a.f32()[i]) * b.f32()[i];
    EXPECT_NEAR(ops::dot(a.f32(), b.f32(), n), ref, 1e-4);
    std::vector<float> y(a.f32(), a.f32() + std::max<int64_t>(n, 1));
    ops::axpy(y.data(), 0.5f, b.f32(), n);
    for (int64_t i = 0; i < n; ++i) EXPECT_FLOAT_EQ(y[i], a.f32()[i] + 0.5f * b.f32()[i]);
  }
}

}  // namespace
}  // namespace sy
