// Finite-difference checks of every backward kernel: for a random output weighting R and a random input
// direction V, the analytic directional derivative <grad, V> must match (L(x + hV) - L(x - hV)) / 2h with
// L = <f(x), R>, computed in f32 with central differences (tolerance 2e-2 relative to the magnitudes).
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <random>

#include "switchyard/kernels/ops_backward.h"
#include "switchyard/moe/router.h"

namespace sy {
namespace {

Tensor randn(std::mt19937& rng, const Shape& shape, float scale = 1.f) {
  std::normal_distribution<float> d(0.f, scale);
  Tensor t = Tensor::empty(shape, DType::kF32);
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = d(rng);
  return t;
}

double inner(const Tensor& a, const Tensor& b) {
  double s = 0;
  for (int64_t i = 0; i < a.numel(); ++i) s += double(a.f32()[i]) * b.f32()[i];
  return s;
}

// Checks <analytic, v> against the central difference of loss(x) along v.
void check_direction(Tensor x, const Tensor& analytic, const std::function<double(const Tensor&)>& loss, std::mt19937& rng,
                     const char* what, double h = 1e-2) {
  Tensor v = randn(rng, x.shape());
  Tensor xp = x.clone(), xm = x.clone();
  for (int64_t i = 0; i < x.numel(); ++i) {
    xp.f32()[i] += static_cast<float>(h) * v.f32()[i];
    xm.f32()[i] -= static_cast<float>(h) * v.f32()[i];
  }
  const double fd = (loss(xp) - loss(xm)) / (2 * h);
  const double an = inner(analytic, v);
  EXPECT_NEAR(an, fd, 2e-2 * (std::fabs(fd) + std::fabs(an)) + 1e-3) << what;
}

TEST(BackwardOps, Linear) {
  std::mt19937 rng(1);
  Tensor x = randn(rng, {5, 7}), w = randn(rng, {6, 7}, 0.5f), b = randn(rng, {6}), r = randn(rng, {5, 6});
  Tensor dx = Tensor::empty({5, 7}, DType::kF32), dw = Tensor::zeros({6, 7}, DType::kF32), db = Tensor::zeros({6}, DType::kF32);
  ops::linear_backward(x, w, r, &dx, &dw, &db);
  check_direction(x, dx, [&](const Tensor& xx) { return inner(ops::linear(xx, w, b), r); }, rng, "dx");
  check_direction(w, dw, [&](const Tensor& ww) { return inner(ops::linear(x, ww, b), r); }, rng, "dw");
  check_direction(b, db, [&](const Tensor& bb) { return inner(ops::linear(x, w, bb), r); }, rng, "db");
}

TEST(BackwardOps, RmsNorm) {
  std::mt19937 rng(2);
  Tensor x = randn(rng, {4, 9}, 2.f), w = randn(rng, {9}), r = randn(rng, {4, 9});
  Tensor dx = Tensor::empty({4, 9}, DType::kF32), dw = Tensor::zeros({9}, DType::kF32);
  ops::rms_norm_backward(x, w, 1e-5f, r, dx, dw);
  auto f = [&](const Tensor& xx, const Tensor& ww) {
    Tensor y = Tensor::empty(xx.shape(), DType::kF32);
    ops::rms_norm(xx, ww, 1e-5f, y);
    return inner(y, r);
  };
  check_direction(x, dx, [&](const Tensor& xx) { return f(xx, w); }, rng, "dx");
  check_direction(w, dw, [&](const Tensor& ww) { return f(x, ww); }, rng, "dw");
}

TEST(BackwardOps, RopeBothLayouts) {
  for (bool interleaved : {false, true}) {
    std::mt19937 rng(3);
    RopeConfig rc;
    rc.interleaved = interleaved;
    ops::RopeTable table = ops::make_rope_table(rc, 8, 64);
    std::vector<int64_t> pos = {0, 3, 17};
    Tensor x = randn(rng, {3, 2, 8}), r = randn(rng, {3, 2, 8});
    Tensor dx = r.clone();
    ops::apply_rope_backward(dx, pos, table);
    check_direction(x, dx, [&](const Tensor& xx) {
      Tensor y = xx.clone();
      ops::apply_rope(y, pos, table);
      return inner(y, r);
    }, rng, "rope");
  }
}

TEST(BackwardOps, AttentionWithWindowAndSinks) {
  std::mt19937 rng(4);
  const int64_t t = 6, heads = 4, kvh = 2, d = 8;
  Tensor q = randn(rng, {t, heads, d}), k = randn(rng, {t, kvh, d}), v = randn(rng, {t, kvh, d});
  Tensor sinks = randn(rng, {heads}), r = randn(rng, {t, heads, d});
  std::vector<int64_t> pos = {0, 1, 2, 3, 4, 5};
  ops::AttentionOptions o;
  o.scale = 0.35f;
  o.window = 3;
  o.sinks = &sinks;
  Tensor dq = Tensor::empty(q.shape(), DType::kF32), dk = Tensor::zeros(k.shape(), DType::kF32);
  Tensor dv = Tensor::zeros(v.shape(), DType::kF32), ds = Tensor::zeros({heads}, DType::kF32);
  ops::attention_backward(q, k, v, pos, t, o, r, dq, dk, dv, &ds);
  auto f = [&](const Tensor& qq, const Tensor& kk, const Tensor& vv, const Tensor& ss) {
    ops::AttentionOptions oo = o;
    oo.sinks = &ss;
    Tensor out = Tensor::empty({t, heads, d}, DType::kF32);
    ops::attention(qq, kk, vv, pos, t, oo, out);
    return inner(out, r);
  };
  check_direction(q, dq, [&](const Tensor& x) { return f(x, k, v, sinks); }, rng, "dq");
  check_direction(k, dk, [&](const Tensor& x) { return f(q, x, v, sinks); }, rng, "dk");
  check_direction(v, dv, [&](const Tensor& x) { return f(q, k, x, sinks); }, rng, "dv");
  check_direction(sinks, ds, [&](const Tensor& x) { return f(q, k, v, x); }, rng, "dsinks");
}

TEST(BackwardOps, SwiGluVariants) {
  std::mt19937 rng(5);
  Tensor g = randn(rng, {3, 11}, 2.f), u = randn(rng, {3, 11}, 2.f), r = randn(rng, {3, 11});
  Tensor dg = Tensor::empty(g.shape(), DType::kF32), du = Tensor::empty(u.shape(), DType::kF32);
  ops::silu_mul_backward(g, u, r, dg, du);
  auto silu = [&](const Tensor& gg, const Tensor& uu) {
    Tensor o = Tensor::empty(gg.shape(), DType::kF32);
    ops::silu_mul(gg, uu, o);
    return inner(o, r);
  };
  check_direction(g, dg, [&](const Tensor& x) { return silu(x, u); }, rng, "silu dg");
  check_direction(u, du, [&](const Tensor& x) { return silu(g, x); }, rng, "silu du");
  ops::clamped_swiglu_backward(g, u, 1.702f, 1.5f, r, dg, du);
  auto clamped = [&](const Tensor& gg, const Tensor& uu) {
    Tensor o = Tensor::empty(gg.shape(), DType::kF32);
    ops::clamped_swiglu(gg, uu, 1.702f, 1.5f, o);
    return inner(o, r);
  };
  check_direction(g, dg, [&](const Tensor& x) { return clamped(x, u); }, rng, "clamped dg", 1e-3);
  check_direction(u, du, [&](const Tensor& x) { return clamped(g, x); }, rng, "clamped du", 1e-3);
}

TEST(BackwardOps, CrossEntropy) {
  std::mt19937 rng(6);
  Tensor z = randn(rng, {4, 10}, 2.f);
  std::vector<int64_t> tgt = {3, 0, 9, 3};
  Tensor dz = Tensor::empty(z.shape(), DType::kF32);
  ops::cross_entropy(z, tgt, 4, dz);
  check_direction(z, dz, [&](const Tensor& zz) {
    Tensor scratch = Tensor::empty(zz.shape(), DType::kF32);
    return ops::cross_entropy(zz, tgt, 4, scratch) / 4;
  }, rng, "ce");
}

TEST(BackwardOps, RouterWeightsAllVariants) {
  // Selection is held fixed; logits far from ties so that +-h does not change it.
  for (int variant = 0; variant < 4; ++variant) {
    std::mt19937 rng(7 + variant);
    MoeConfig m;
    m.num_experts = 6;
    m.top_k = 2;
    m.routed_scaling_factor = 1.5;
    m.norm_topk_prob = variant != 1;
    m.score_function = variant == 2 ? ScoreFunction::kSigmoid : ScoreFunction::kSoftmax;
    m.softmax_over_topk = variant == 3;
    Tensor z = Tensor::from_vector({2, 6}, {3.f, 0.1f, 1.9f, -1.f, 0.5f, -2.f, -0.5f, 2.5f, 0.f, 1.2f, -3.f, 0.3f});
    moe::Routing r0 = moe::route(z, Tensor(), m);
    std::vector<float> gw = {0.7f, -1.1f, 0.4f, 2.0f};
    Tensor dz = moe::route_backward(z, m, r0, gw);
    check_direction(z, dz, [&](const Tensor& zz) {
      moe::Routing r = moe::route(zz, Tensor(), m);
      EXPECT_EQ(r.expert, r0.expert);
      double s = 0;
      for (size_t i = 0; i < gw.size(); ++i) s += double(gw[i]) * r.weight[i];
      return s;
    }, rng, "router", 1e-3);
  }
}

}  // namespace
}  // namespace sy

namespace sy {
namespace {

TEST(BackwardOps, BalanceProbabilities) {
  for (auto fn : {ScoreFunction::kSoftmax, ScoreFunction::kSigmoid}) {
    std::mt19937 rng(11);
    MoeConfig m;
    m.num_experts = 5;
    m.top_k = 2;
    m.score_function = fn;
    Tensor z = randn(rng, {3, 5}), r = randn(rng, {3, 5});
    Tensor dz = Tensor::zeros({3, 5}, DType::kF32);
    moe::balance_probabilities_backward(z, m, r, dz);
    check_direction(z, dz, [&](const Tensor& zz) { return inner(moe::balance_probabilities(zz, m), r); }, rng, "balance");
  }
}

}  // namespace
}  // namespace sy
