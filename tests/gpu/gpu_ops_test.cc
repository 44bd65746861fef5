// Every CUDA op against its CPU reference on random shapes (one token, odd sizes, empty experts, all tokens
// on one expert), through the shared harness (gpu_harness.h) and its stated tolerances.
#include <algorithm>
#include <array>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <numeric>
#include <set>
#include <tuple>
#include <vector>

#include "gpu_harness.h"
#include "switchyard/kernels/ops.h"
#include "switchyard/moe/dispatch.h"
#include "switchyard/moe/router.h"

namespace sy::test {
namespace {

// The dense GEMV's process-wide switches (its row threshold, programmatic launch), restored whatever happens.
struct GemvSwitchesRestore {
  int rows = cuda::dense_gemv_max_rows();
  int preload = cuda::dense_gemv_preload();
  bool pdl = cuda::programmatic_launch_enabled();
  ~GemvSwitchesRestore() {
    cuda::set_dense_gemv_max_rows(rows);
    cuda::set_dense_gemv_preload(preload);
    cuda::set_programmatic_launch(pdl);
  }
};

// Programmatic launch off, and on where this GPU grants it (the caller sets each in turn).
std::vector<bool> programmatic_launch_modes() {
  std::vector<bool> modes{false};
  if (cuda::set_programmatic_launch(true)) modes.push_back(true);
  return modes;
}

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

// rms_norm_linear against the CPU's rms_norm then linear: decode-sized x through the GEMV with the norm folded
// in (the call counter shows it), larger x (and GEMV off) through rms_norm_dual and linear; norm weights f32 and
// bf16, with and without bias, k past one block step and ragged past it, programmatic launch on and off, every
// preload setting of the GEMV (set_dense_gemv_preload). Bad arguments are refused. The shortest rows (k = 8)
// get 16 outputs: with 3, one output's cancellation put the cuBLAS path's bf16 result 2.2e-2 from the CPU
// (H100, 2026-12-05).
TEST(GpuOps, RmsNormLinearMatchesCpu) {
  SY_SKIP_WITHOUT_GPU();
  GemvSwitchesRestore restore;
  const std::vector<bool> pdl_modes = programmatic_launch_modes();
  struct Case { int64_t m, k, n; };
  for (int preload : {1, 2, 4}) {
    cuda::set_dense_gemv_preload(preload);
    for (bool pdl : pdl_modes) {
      cuda::set_programmatic_launch(pdl);
      for (Case c : {Case{1, 2048, 37}, Case{2, 4104, 300}, Case{4, 64, 9}, Case{1, 8, 16}, Case{5, 256, 20}}) {
        // Rows of different scales (a kernel that mixed up the rows' norms would be off by far more than the
        // tolerance), and an eps as large as mean(x^2) of the first row next to a negligible one.
        Tensor x = rand_tensor({c.m, c.k}, 4.f), g = rand_tensor({c.k});
        for (int64_t r = 0; r < c.m; ++r) {
          for (int64_t i = 0; i < c.k; ++i) x.f32()[r * c.k + i] *= static_cast<float>(1 + 3 * r);
        }
        Tensor w = rand_tensor({c.n, c.k}, 0.2f).to(DType::kBF16);
        for (float eps : {1e-6f, 5.f}) {
          Tensor xn = Tensor::empty({c.m, c.k}, DType::kF32);
          ops::rms_norm(x, g, eps, xn);
          for (bool with_bias : {false, true}) {
            Tensor b = with_bias ? rand_tensor({c.n}, 0.05f) : Tensor(), ref = Tensor::empty({c.m, c.n}, DType::kF32);
            ops::linear(xn, w, b, ref);
            for (int rows : {4, 0}) {
              cuda::set_dense_gemv_max_rows(rows);
              for (DType gd : {DType::kF32, DType::kBF16}) {
                for (DType yd : {DType::kF32, DType::kBF16}) {
                  const std::string what =
                      std::string("rms_norm_linear ") + (rows ? "gemv preload " + std::to_string(preload) : "cublas") +
                      (pdl ? " pdl" : "") + " m=" +
                      std::to_string(c.m) + " k=" + std::to_string(c.k) + " n=" + std::to_string(c.n) +
                      (with_bias ? " bias" : "") + (gd == DType::kF32 ? " g f32" : " g bf16") +
                      (yd == DType::kF32 ? " y f32" : " y bf16");
                  Tensor y = poisoned_device({c.m, c.n}, yd);
                  const int64_t before = cuda::dense_gemv_calls();
                  cuda::rms_norm_linear(cuda::to_device(x), cuda::to_device(gd == DType::kF32 ? g : g.to(gd)), eps,
                                        cuda::to_device(w), with_bias ? cuda::to_device(b) : Tensor(), y);
                  EXPECT_EQ(cuda::dense_gemv_calls() - before, c.m <= rows ? 1 : 0) << what << ": the path taken";
                  expect_close(what + " eps " + std::to_string(eps), y, ref, kBf16Tol);
                }
              }
            }
          }
        }
      }
    }
  }
  cuda::set_dense_gemv_max_rows(2);
  const Tensor x = cuda::to_device(rand_tensor({1, 64})), g = cuda::to_device(rand_tensor({64}));
  const Tensor w = cuda::to_device(rand_tensor({8, 64}).to(DType::kBF16));
  Tensor y = poisoned_device({1, 8});
  EXPECT_THROW(cuda::rms_norm_linear(cuda::to_device(rand_tensor({1, 64}).to(DType::kBF16)), g, 1e-6f, w, Tensor(), y),
               InvalidArgument);  // x must be f32
  EXPECT_THROW(cuda::rms_norm_linear(x, cuda::to_device(rand_tensor({63})), 1e-6f, w, Tensor(), y), InvalidArgument);
  EXPECT_THROW(cuda::rms_norm_linear(x, g, -1.f, w, Tensor(), y), InvalidArgument);
  EXPECT_THROW(cuda::rms_norm_linear(x, rand_tensor({64}), 1e-6f, w, Tensor(), y), InvalidArgument);  // host weight
  Tensor y_wrong = poisoned_device({1, 9});
  EXPECT_THROW(cuda::rms_norm_linear(x, g, 1e-6f, w, Tensor(), y_wrong), InvalidArgument);
}

// Decode-sized linears (up to dense_gemv_max_rows() rows, k a multiple of 8, 16-byte aligned) go through the
// weight-streaming GEMV, the rest through cuBLAS: both against the CPU for every x/y/bias dtype, plain and
// accumulating, k past one block step (1024) and ragged past it, with programmatic launch on (the GEMV's
// weight loads before its wait) and off, for every preload setting (set_dense_gemv_preload: whole rows of up
// to 2 or 4 pieces per lane before the wait; k = 8200 is past both and streams). The GEMV's call counter shows
// which path ran; a misaligned x falls back to cuBLAS; the threshold's bounds are checked. Bias and accumulated values are kept small next to the
// products, so a dropped product is outside the tolerance. Every case has several outputs: the relative error
// of a single output that cancels to near zero is noise (a one-output case failed that way, 2026-12-05).
TEST(GpuOps, LinearGemvAndCublasMatchCpu) {
  SY_SKIP_WITHOUT_GPU();
  GemvSwitchesRestore restore;
  const std::vector<bool> pdl_modes = programmatic_launch_modes();
  struct Case { int64_t m, k, n; };
  for (int preload : {1, 2, 4}) {
    cuda::set_dense_gemv_preload(preload);
    for (bool pdl : pdl_modes) {
      cuda::set_programmatic_launch(pdl);
      for (Case c : {Case{1, 8, 4}, Case{2, 2048, 37}, Case{3, 4104, 300}, Case{4, 24, 9}, Case{1, 12, 5},
                     Case{5, 64, 20}, Case{1, 8200, 6}}) {
        Tensor x = rand_tensor({c.m, c.k}), w = rand_tensor({c.n, c.k}, 0.2f).to(DType::kBF16);
        Tensor y0 = rand_tensor({c.m, c.n}, 0.1f);
        for (DType bd : {DType::kF32, DType::kBF16}) {
          Tensor b = rand_tensor({c.n}, 0.05f).to(bd), ref = Tensor::empty({c.m, c.n}, DType::kF32);
          ops::linear(x, w, b.to(DType::kF32), ref);
          for (int rows : {4, 0}) {  // the GEMV where it fits, then cuBLAS only
            cuda::set_dense_gemv_max_rows(rows);
            const bool gemv = c.m <= rows && c.k % 8 == 0;
            const std::string what = std::string(rows ? "gemv preload " + std::to_string(preload) : "cublas") +
                                     (pdl ? " pdl" : "") + " m=" +
                                     std::to_string(c.m) + " k=" + std::to_string(c.k) + " n=" + std::to_string(c.n) +
                                     (bd == DType::kF32 ? " bias f32" : " bias bf16");
            for (DType xd : {DType::kF32, DType::kBF16}) {
              for (DType yd : {DType::kF32, DType::kBF16}) {
                Tensor y = poisoned_device({c.m, c.n}, yd);
                const int64_t before = cuda::dense_gemv_calls();
                cuda::linear(cuda::to_device(x.to(xd)), cuda::to_device(w), cuda::to_device(b), y);
                EXPECT_EQ(cuda::dense_gemv_calls() - before, gemv ? 1 : 0) << what << ": the path taken";
                expect_close(what + (xd == DType::kF32 ? " x f32" : " x bf16") +
                                 (yd == DType::kF32 ? " y f32" : " y bf16"),
                             y, ref, kBf16Tol);
              }
              Tensor acc = cuda::to_device(y0), acc_ref = ref.clone();
              for (int64_t i = 0; i < acc_ref.numel(); ++i) acc_ref.f32()[i] += y0.f32()[i];
              cuda::linear_add(cuda::to_device(x.to(xd)), cuda::to_device(w), cuda::to_device(b), acc);
              expect_close(what + " accumulate", acc, acc_ref, kBf16Tol);
            }
          }
        }
      }
    }
  }
  // x starting 4 bytes past a 16-byte boundary: cuBLAS, with the same values.
  cuda::set_dense_gemv_max_rows(2);
  const int64_t k = 64, n = 12;
  Tensor x = rand_tensor({1, k}), w = rand_tensor({n, k}, 0.2f).to(DType::kBF16);
  Tensor ref = Tensor::empty({1, n}, DType::kF32);
  ops::linear(x, w, Tensor(), ref);
  Tensor flat = Tensor::empty({k + 1}, DType::kF32);
  std::memcpy(flat.f32() + 1, x.f32(), sizeof(float) * k);
  Tensor shifted = cuda::to_device(flat).slice(0, 1, k + 1).reshape({1, k}), y = poisoned_device({1, n});
  const int64_t before = cuda::dense_gemv_calls();
  cuda::linear(shifted, cuda::to_device(w), Tensor(), y);
  EXPECT_EQ(cuda::dense_gemv_calls(), before) << "a misaligned x takes cuBLAS";
  expect_close("linear, misaligned x", y, ref, kBf16Tol);
  EXPECT_THROW(cuda::set_dense_gemv_max_rows(5), InvalidArgument);
  EXPECT_THROW(cuda::set_dense_gemv_max_rows(-1), InvalidArgument);
  EXPECT_EQ(cuda::dense_gemv_max_rows(), 2);
  for (int bad : {0, 3, 5, -1}) EXPECT_THROW(cuda::set_dense_gemv_preload(bad), InvalidArgument) << bad;
}

// y += x W^T + b through cuBLAS's beta: the linear's result added to what y held, for f32 and bf16 x.
TEST(GpuOps, LinearAddAccumulatesIntoY) {
  SY_SKIP_WITHOUT_GPU();
  for (bool bias : {false, true}) {
    const int64_t m = 5, k = 96, n = 40;
    Tensor x = rand_tensor({m, k}), w = rand_tensor({n, k}, 0.2f).to(DType::kBF16), y0 = rand_tensor({m, n}, 3.f);
    Tensor b = bias ? rand_tensor({n}) : Tensor();
    Tensor ref = Tensor::empty({m, n}, DType::kF32);
    ops::linear(x, w, b, ref);
    for (int64_t i = 0; i < ref.numel(); ++i) ref.f32()[i] += y0.f32()[i];
    for (DType xd : {DType::kF32, DType::kBF16}) {
      Tensor y = cuda::to_device(y0);
      cuda::linear_add(cuda::to_device(x.to(xd)), cuda::to_device(w), bias ? cuda::to_device(b) : Tensor(), y);
      expect_close(std::string("linear_add") + (bias ? " bias" : "") + (xd == DType::kF32 ? " x f32" : " x bf16"), y,
                   ref, kBf16Tol);
    }
  }
  Tensor yb = cuda::to_device(rand_tensor({2, 4}).to(DType::kBF16));  // accumulating into bf16 is refused
  EXPECT_THROW(cuda::linear_add(cuda::to_device(rand_tensor({2, 8})), cuda::to_device(rand_tensor({4, 8}).to(DType::kBF16)),
                                Tensor(), yb),
               InvalidArgument);
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
        // The one-pass f32 + bf16 form: the same f32 rows, and bf16 rows equal to casting them.
        Tensor y2 = poisoned_device({m, d}), yb = poisoned_device({m, d}, DType::kBF16), none;
        cuda::rms_norm_dual(cuda::to_device(x), cuda::to_device(wt), 1e-6f, y2, yb);
        EXPECT_EQ(cuda::to_host(y2).to_f32_vector(), cuda::to_host(y).to_f32_vector());
        Tensor cast = poisoned_device({m, d}, DType::kBF16), yb_only = poisoned_device({m, d}, DType::kBF16);
        cuda::cast(y, cast);
        cuda::rms_norm_dual(cuda::to_device(x), cuda::to_device(wt), 1e-6f, none, yb_only);
        EXPECT_EQ(cuda::to_host(yb).to_f32_vector(), cuda::to_host(cast).to_f32_vector());
        EXPECT_EQ(cuda::to_host(yb_only).to_f32_vector(), cuda::to_host(cast).to_f32_vector());
      }
    }
  }
}

// f32 -> bf16 casts round as the CPU does: eight elements per thread where both ends are 16-byte aligned, the
// tail and misaligned views (a slice one element in) one by one.
TEST(GpuOps, CastToBf16MatchesCpuRounding) {
  SY_SKIP_WITHOUT_GPU();
  for (int64_t n : {int64_t{1}, int64_t{7}, int64_t{8}, int64_t{9}, int64_t{4097}, (int64_t{1} << 20) + 3}) {
    Tensor x = rand_tensor({n + 1}, 5.f);
    for (int64_t src_skip : {0, 1}) {
      for (int64_t dst_skip : {0, 1}) {
        Tensor ref = x.slice(0, src_skip, src_skip + n).to(DType::kBF16);
        Tensor dst = poisoned_device({n + 1}, DType::kBF16);
        Tensor view = dst.slice(0, dst_skip, dst_skip + n);
        cuda::cast(cuda::to_device(x).slice(0, src_skip, src_skip + n), view);
        const std::string what = std::to_string(n) + " elements, source offset " + std::to_string(src_skip) +
                                 ", destination offset " + std::to_string(dst_skip);
        EXPECT_EQ(cuda::to_host(view).to_f32_vector(), ref.to_f32_vector()) << what;
        const std::vector<float> all = cuda::to_host(dst).to_f32_vector();
        EXPECT_TRUE(std::isnan(all[dst_skip == 0 ? n : 0])) << what << ": the element outside the view was written";
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

// The fused GQA epilogue against the CPU ops in the order the separate device ops ran (bias, clip, per-head
// RMSNorm of q and k, RoPE), and the pool rows it writes (f32 and bf16 pools; rows it does not name stay as
// they were): both RoPE layouts, partial rotary, with and without bias, clip and norms, GQA and dv != d.
TEST(GpuOps, QkvEpilogueMatchesCpuOps) {
  SY_SKIP_WITHOUT_GPU();
  struct Case { int64_t n, heads, kv_heads, d, dv; bool interleaved; double partial; bool bias, clip, norm; };
  for (Case c : {Case{1, 4, 2, 64, 64, false, 1.0, false, false, true}, Case{7, 6, 2, 128, 128, true, 1.0, true, false, false},
                 Case{5, 2, 1, 64, 32, false, 0.5, true, true, true}, Case{33, 8, 8, 32, 32, true, 0.5, false, true, true}}) {
    RopeConfig rc;
    rc.theta = 1e4;
    rc.interleaved = c.interleaved;
    rc.partial_rotary_factor = c.partial;
    const ops::RopeTable table = ops::make_rope_table(rc, static_cast<int>(c.d), 4096);
    const int64_t qc = c.heads * c.d, kc = c.kv_heads * c.d, vc = c.kv_heads * c.dv, width = qc + kc + vc;
    const float eps = 1e-6f, clip = c.clip ? 1.5f : 0.f;
    Tensor qkv = rand_tensor({c.n, width}, 2.f), bias = rand_tensor({width}, 0.5f);
    Tensor q_norm = rand_tensor({c.d}, 0.5f), k_norm = rand_tensor({c.d}, 0.5f);
    std::vector<int64_t> pos(c.n), rows(c.n);
    const int64_t pool_rows = 3 * c.n + 4;
    for (int64_t i = 0; i < c.n; ++i) pos[i] = rand_int(0, 4000), rows[i] = 3 * i + 1;  // distinct, some skipped
    // CPU: the columns of q, k, v with bias and clip, then norms and RoPE.
    auto part = [&](int64_t col0, int64_t cols, int64_t heads, int64_t dim) {
      Tensor t = Tensor::empty({c.n, heads, dim}, DType::kF32);
      for (int64_t i = 0; i < c.n; ++i) {
        for (int64_t j = 0; j < cols; ++j) {
          float v = qkv.f32()[i * width + col0 + j] + (c.bias ? bias.f32()[col0 + j] : 0.f);
          if (c.clip) v = std::min(std::max(v, -clip), clip);
          t.f32()[i * cols + j] = v;
        }
      }
      return t;
    };
    Tensor q = part(0, qc, c.heads, c.d), k = part(qc, kc, c.kv_heads, c.d), v = part(qc + kc, vc, c.kv_heads, c.dv);
    if (c.norm) {
      Tensor qf = q.reshape({c.n * c.heads, c.d}), kf = k.reshape({c.n * c.kv_heads, c.d});
      ops::rms_norm(qf, q_norm, eps, qf);
      ops::rms_norm(kf, k_norm, eps, kf);
    }
    ops::apply_rope(q, pos, table);
    ops::apply_rope(k, pos, table);
    for (DType pool_dtype : {DType::kF32, DType::kBF16}) {
      Tensor keys0 = rand_tensor({pool_rows, c.kv_heads, c.d}).to(pool_dtype);
      Tensor values0 = rand_tensor({pool_rows, c.kv_heads, c.dv}).to(pool_dtype);
      Tensor want_keys = keys0.to(DType::kF32), want_values = values0.to(DType::kF32);
      for (int64_t i = 0; i < c.n; ++i) {
        std::copy(k.f32() + i * kc, k.f32() + (i + 1) * kc, want_keys.f32() + rows[i] * kc);
        std::copy(v.f32() + i * vc, v.f32() + (i + 1) * vc, want_values.f32() + rows[i] * vc);
      }
      cuda::QkvEpilogueArgs e;
      if (c.bias) e.bias = cuda::to_device(bias);
      if (c.norm) e.q_norm = cuda::to_device(q_norm), e.k_norm = cuda::to_device(k_norm);
      e.clip = clip;
      e.eps = eps;
      Tensor q3 = poisoned_device({c.n, c.heads, c.d}), k3 = poisoned_device({c.n, c.kv_heads, c.d});
      Tensor v3 = poisoned_device({c.n, c.kv_heads, c.dv});
      Tensor keys = cuda::to_device(keys0), values = cuda::to_device(values0);
      cuda::qkv_epilogue(cuda::to_device(qkv), e, cuda::to_device(i64_tensor(pos)), cuda::upload_rope(table),
                         cuda::to_device(i64_tensor(rows)), q3, k3, v3, keys, values);
      const std::string what = "qkv_epilogue n=" + std::to_string(c.n) + " d=" + std::to_string(c.d) +
                               (c.interleaved ? " interleaved" : "") + (c.bias ? " bias" : "") +
                               (c.clip ? " clip" : "") + (c.norm ? " norm" : "") + " " + dtype_name(pool_dtype);
      expect_close(what + " q", q3, q, kF32Tol);
      expect_close(what + " k", k3, k, kF32Tol);
      expect_close(what + " v", v3, v, kF32Tol);
      const double pool_tol = pool_dtype == DType::kBF16 ? kBf16Tol : kF32Tol;
      expect_close(what + " keys", cuda::to_host(keys).to(DType::kF32), want_keys, pool_tol);
      expect_close(what + " values", cuda::to_host(values).to(DType::kF32), want_values, pool_tol);
    }
  }
  // A fused row width that does not match the heads is refused.
  Tensor q3 = poisoned_device({1, 2, 8}), k3 = poisoned_device({1, 1, 8}), v3 = poisoned_device({1, 1, 8});
  Tensor keys = poisoned_device({4, 1, 8}), values = poisoned_device({4, 1, 8});
  RopeConfig rc;
  EXPECT_THROW(cuda::qkv_epilogue(cuda::to_device(rand_tensor({1, 33})), cuda::QkvEpilogueArgs{},
                                  cuda::to_device(i64_tensor({0})), cuda::upload_rope(ops::make_rope_table(rc, 8, 16)),
                                  cuda::to_device(i64_tensor({0})), q3, k3, v3, keys, values),
               InvalidArgument);
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

const RouterCase kRouterCases[] = {
      {"qwen3 softmax", 128, 8, 1, 1, ScoreFunction::kSoftmax, GroupScore::kMax, false, true, false, 1.0},
      {"mixtral", 8, 2, 1, 1, ScoreFunction::kSoftmax, GroupScore::kMax, false, true, false, 1.0},
      {"deepseek-v2 groups", 64, 6, 8, 3, ScoreFunction::kSoftmax, GroupScore::kMax, false, false, false, 16.0},
      {"deepseek-v3 sigmoid bias", 256, 8, 8, 4, ScoreFunction::kSigmoid, GroupScore::kTop2Sum, true, true, false, 2.5},
      {"gpt-oss topk softmax", 32, 4, 1, 1, ScoreFunction::kSoftmax, GroupScore::kMax, false, false, true, 1.0},
      {"one expert", 1, 1, 1, 1, ScoreFunction::kSigmoid, GroupScore::kMax, false, false, false, 1.0},
      {"qwen2-moe 60 experts (a part-filled warp)", 60, 4, 1, 1, ScoreFunction::kSoftmax, GroupScore::kMax, false,
       false, false, 1.0},
      // For the one-warp form: a score bias without groups, sigmoid with renormalisation, 32 picks, every expert.
      {"sigmoid bias, no groups", 256, 8, 1, 1, ScoreFunction::kSigmoid, GroupScore::kMax, true, true, false, 2.5},
      {"top 32 of 64", 64, 32, 1, 1, ScoreFunction::kSoftmax, GroupScore::kMax, false, true, false, 1.5},
      {"all 20 of 20", 20, 20, 1, 1, ScoreFunction::kSigmoid, GroupScore::kMax, false, true, false, 1.0},
      {"top 32 of 200", 200, 32, 1, 1, ScoreFunction::kSoftmax, GroupScore::kMax, false, false, false, 1.0},
};

MoeConfig router_config(const RouterCase& c) {
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
  return o;
}

// Restores the process-wide warp-routing switch when a test that flips it ends, however it ends.
struct WarpRoutingRestore {
  bool was = cuda::warp_routing(), cluster_was = cuda::cluster_routing();
  ~WarpRoutingRestore() {
    cuda::set_warp_routing(was);
    cuda::set_cluster_routing(cluster_was);
  }
};

// Both routing forms (the block's and, where it applies, one warp's) against the CPU's decisions, and against
// each other bit for bit (the warp form sums the softmax in the block's order).
TEST(GpuOps, RouterMatchesCpuDecisions) {
  SY_SKIP_WITHOUT_GPU();
  WarpRoutingRestore restore;
  for (const RouterCase& c : kRouterCases) {
    const MoeConfig o = router_config(c);
    for (int64_t t : {1, 33, 500}) {
      Tensor logits = rand_tensor({t, c.experts}, 4.f);
      Tensor bias = c.bias ? rand_tensor({c.experts}, 0.1f) : Tensor();
      moe::Routing ref = moe::route(logits, bias, o);
      std::vector<float> block_expert, block_weight;
      for (bool warp : {false, true}) {
        cuda::set_warp_routing(warp);
        Tensor expert = Tensor::empty({t, c.top_k}, DType::kI32, Device::kCuda);
        Tensor weight = poisoned_device({t, c.top_k});
        cuda::route(cuda::to_device(logits), c.bias ? cuda::to_device(bias) : Tensor(), o, expert, weight);
        Tensor eh = cuda::to_host(expert);
        const std::string what = std::string("route ") + c.name + " t=" + std::to_string(t) + (warp ? " (warp)" : "");
        int64_t mismatches = 0;
        for (int64_t i = 0; i < t * c.top_k; ++i) mismatches += eh.i32()[i] != ref.expert[i];
        EXPECT_EQ(mismatches, 0) << what << ": expert choices differ";
        expect_close(what, weight, Tensor::from_vector({t, c.top_k}, ref.weight), kF32Tol);
        if (!warp) {
          block_expert = eh.to_f32_vector();
          block_weight = cuda::to_host(weight).to_f32_vector();
        } else {
          EXPECT_EQ(eh.to_f32_vector(), block_expert) << what << ": the two forms choose differently";
          EXPECT_EQ(cuda::to_host(weight).to_f32_vector(), block_weight) << what << ": the two forms weigh differently";
        }
      }
    }
  }
}

// The decode router (GEMV, routing and layout in one launch) against the general path on the same inputs
// (cuda::linear, cuda::route, cuda::make_dispatch_layout) and the CPU routing. Inputs are multiples of 1/16 in
// [-1/8, 1/8] (exact in bf16, products and sums exact in f32), so both paths see bitwise equal logits and
// must agree exactly, ties included. Called twice: the finished-blocks counter must reset itself. Every form:
// block routing, one-warp routing finished by the last block, and the cluster finish (where it applies). The
// second call also pulls a 3 MB stand-in for the next layer's weight into L2 (L2Prefetch: no result changes;
// evict-last lines in the warp form).
TEST(GpuOps, DecodeRouteEqualsRouteAndLayout) {
  SY_SKIP_WITHOUT_GPU();
  auto grid_tensor = [](const Shape& shape) {  // multiples of 1/16 in [-1/8, 1/8]
    Tensor x = Tensor::empty(shape, DType::kF32);
    for (int64_t i = 0; i < x.numel(); ++i) x.f32()[i] = static_cast<float>(rand_int(-2, 2)) / 16.f;
    return x;
  };
  Tensor done = cuda::to_device(Tensor::zeros({1}, DType::kI32));
  const Tensor next_weight = cuda::to_device(Tensor::zeros({1536, 1024}, DType::kBF16));
  WarpRoutingRestore restore;
  for (int form = 0; form < 3; ++form) {  // block, warp, warp on a cluster (the same routing in both paths)
    const bool warp = form >= 1;
    cuda::set_warp_routing(warp);
    cuda::set_cluster_routing(form == 2);
    for (const RouterCase& c : kRouterCases) {
      const MoeConfig o = router_config(c);
      for (int64_t t : {1, 3, 4}) {
        const int64_t hidden = c.experts >= 128 ? 2048 : 256;
        ASSERT_TRUE(cuda::decode_route_fits(t, hidden, o)) << c.name;
        Tensor x = grid_tensor({t, hidden}), w = grid_tensor({c.experts, hidden});
        Tensor rbias = c.softmax_over_topk ? grid_tensor({c.experts}) : Tensor();  // gpt-oss's router has a bias
        Tensor sbias = c.bias ? rand_tensor({c.experts}, 0.1f) : Tensor();
        const Tensor xd = cuda::to_device(x.to(DType::kBF16)), wd = cuda::to_device(w.to(DType::kBF16));
        const Tensor rb = rbias.defined() ? cuda::to_device(rbias) : Tensor();
        const Tensor sb = sbias.defined() ? cuda::to_device(sbias) : Tensor();
        // General path.
        Tensor ref_logits = Tensor::empty({t, c.experts}, DType::kF32, Device::kCuda);
        cuda::linear(xd, wd, rb, ref_logits);
        Tensor ref_expert = Tensor::empty({t, c.top_k}, DType::kI32, Device::kCuda);
        Tensor ref_weight = Tensor::empty({t, c.top_k}, DType::kF32, Device::kCuda);
        cuda::route(ref_logits, sb, o, ref_expert, ref_weight);
        cuda::DeviceDispatchLayout ref = cuda::make_dispatch_layout(ref_expert, c.experts);
        const moe::Routing cpu = moe::route(cuda::to_host(ref_logits), sbias, o);
        const std::string what =
            std::string("decode_route ") + c.name + " t=" + std::to_string(t) + (form == 2 ? " (cluster)" : warp ? " (warp)" : "");
        for (int call = 0; call < 2; ++call) {  // the second call writes the counts into a row of a table
          Tensor logits = poisoned_device({t, c.experts}), weight = poisoned_device({t, c.top_k});
          Tensor expert = Tensor::empty({t, c.top_k}, DType::kI32, Device::kCuda);
          Tensor table = cuda::to_device(Tensor::zeros({2, c.experts}, DType::kI64));
          cuda::L2Prefetch prefetch;
          if (call == 1) {
            prefetch = cuda::L2Prefetch::of(next_weight);
            prefetch.keep = form == 1;  // as evict-last lines
          }
          cuda::DeviceDispatchLayout l = cuda::decode_route(xd, wd, rb, sb, o, logits, expert, weight, done,
                                                            call == 1 ? table.select(1) : Tensor(), prefetch);
          if (call == 1) {
            EXPECT_EQ(l.tokens_per_expert.raw(), table.select(1).raw()) << what;
          }
          expect_close(what + " logits", logits, cuda::to_host(ref_logits), 0.0);
          EXPECT_EQ(cuda::to_host(expert).to_f32_vector(), cuda::to_host(ref_expert).to_f32_vector()) << what;
          EXPECT_EQ(cuda::to_host(weight).to_f32_vector(), cuda::to_host(ref_weight).to_f32_vector()) << what;
          Tensor eh = cuda::to_host(expert);
          if (!c.bias) {  // a random score bias can make near-ties that the two backends' expf round apart
            for (int64_t i = 0; i < t * c.top_k; ++i) ASSERT_EQ(eh.i32()[i], cpu.expert[i]) << what << " vs the CPU";
          }
          for (const auto& [got, want] : {std::pair{&l.tokens_per_expert, &ref.tokens_per_expert},
                                          std::pair{&l.offsets, &ref.offsets},
                                          std::pair{&l.row_assignment, &ref.row_assignment},
                                          std::pair{&l.assignment_row, &ref.assignment_row}}) {
            EXPECT_EQ(cuda::to_host(*got).to_f32_vector(), cuda::to_host(*want).to_f32_vector()) << what << " layout";
          }
          EXPECT_EQ(cuda::to_host(done).i32()[0], 0) << what << ": the counter resets";
        }
      }
    }
  }
  // Passes it does not take are refused.
  MoeConfig o = router_config(kRouterCases[0]);
  EXPECT_FALSE(cuda::decode_route_fits(5, 2048, o));
  EXPECT_FALSE(cuda::decode_route_fits(1, 2047, o));
  Tensor x = cuda::to_device(rand_tensor({5, 256}).to(DType::kBF16)), w = cuda::to_device(rand_tensor({128, 256}).to(DType::kBF16));
  Tensor logits = poisoned_device({5, 128}), weight = poisoned_device({5, 8});
  Tensor expert = Tensor::empty({5, 8}, DType::kI32, Device::kCuda);
  EXPECT_THROW(cuda::decode_route(x, w, Tensor(), Tensor(), o, logits, expert, weight, done), InvalidArgument);
  // Rows that are not 16-byte aligned (a view one element in) are refused, not read misaligned.
  Tensor x1 = cuda::to_device(rand_tensor({1, 257}).to(DType::kBF16)).slice(1, 1, 257);
  Tensor l1 = poisoned_device({1, 128}), w1 = poisoned_device({1, 8});
  Tensor e1 = Tensor::empty({1, 8}, DType::kI32, Device::kCuda);
  EXPECT_THROW(cuda::decode_route(x1, w, Tensor(), Tensor(), o, l1, e1, w1, done), InvalidArgument);
  // So is a prefetch range that does not start 16-byte aligned or span a multiple of 16 bytes.
  Tensor x2 = cuda::to_device(rand_tensor({1, 256}).to(DType::kBF16));
  const char* base = static_cast<const char*>(next_weight.raw());
  for (const cuda::L2Prefetch& bad : {cuda::L2Prefetch{base + 8, 64}, cuda::L2Prefetch{base, 40}}) {
    EXPECT_THROW(cuda::decode_route(x2, w, Tensor(), Tensor(), o, l1, e1, w1, done, Tensor(), bad), InvalidArgument);
  }
}

// L2Prefetch::of: a device tensor's whole 16-byte units; none for an undefined tensor or an unaligned view; a
// host tensor is refused.
TEST(GpuOps, L2PrefetchOfATensor) {
  SY_SKIP_WITHOUT_GPU();
  const Tensor w = cuda::to_device(Tensor::zeros({3, 13}, DType::kBF16));  // 78 bytes
  const cuda::L2Prefetch whole = cuda::L2Prefetch::of(w);
  EXPECT_EQ(whole.base, w.raw());
  EXPECT_EQ(whole.bytes, 64);
  EXPECT_EQ(cuda::L2Prefetch::of(Tensor()).base, nullptr);
  EXPECT_EQ(cuda::L2Prefetch::of(w.reshape({39}).slice(0, 1, 39)).base, nullptr);
  EXPECT_THROW(cuda::L2Prefetch::of(Tensor::zeros({4, 8}, DType::kBF16)), InvalidArgument);
}

// chunked: make_dispatch_layout's chunked form of passes over 256 assignments (set_chunked_dispatch_layout).
void check_dispatch(bool chunked) {
  struct Restore {
    bool was = cuda::chunked_dispatch_layout();
    ~Restore() { cuda::set_chunked_dispatch_layout(was); }
  } restore;
  cuda::set_chunked_dispatch_layout(chunked);
  struct Case { const char* name; int64_t t; int top_k, experts; std::function<int(int64_t, int)> pick; };
  const Case cases[] = {
      {"random", 300, 8, 128, [](int64_t, int) { return static_cast<int>(rand_int(0, 127)); }},
      {"one token", 1, 4, 16, [](int64_t, int s) { return 3 * s + 1; }},
      {"all tokens on expert 5 (slot 0)", 77, 2, 8, [](int64_t i, int s) { return s == 0 ? 5 : static_cast<int>(i % 3); }},
      {"every slot on one expert", 40, 1, 64, [](int64_t, int) { return 63; }},
      {"empty experts (only even ids)", 129, 3, 32, [](int64_t i, int s) { return static_cast<int>(2 * ((i + 5 * s) % 16)); }},
      {"no tokens", 0, 2, 8, [](int64_t, int) { return 0; }},
      {"decode batch 16, top-8 of 128", 16, 8, 128, [](int64_t, int) { return static_cast<int>(rand_int(0, 127)); }},
      {"256 assignments (largest single-block layout)", 32, 8, 256,
       [](int64_t, int) { return static_cast<int>(rand_int(0, 255)); }},
      {"257 assignments (two-kernel layout)", 257, 1, 256, [](int64_t, int) { return static_cast<int>(rand_int(0, 255)); }},
      {"1000 experts, single block", 3, 8, 1000, [](int64_t, int) { return static_cast<int>(rand_int(0, 999)); }},
      {"4096 tokens, top-8 of 128 (32 chunks)", 4096, 8, 128, [](int64_t, int) { return static_cast<int>(rand_int(0, 127)); }},
      {"1300 tokens, top-8 of 60 (a part chunk last)", 1300, 8, 60, [](int64_t, int) { return static_cast<int>(rand_int(0, 59)); }},
      {"3000 tokens all on expert 2 (one expert over many chunks)", 3000, 1, 4, [](int64_t, int) { return 2; }},
      {"2000 tokens, top-2 of 1000 experts", 2000, 2, 1000, [](int64_t, int) { return static_cast<int>(rand_int(0, 999)); }},
      {"600 tokens, top-1 of 1500 experts (over the chunked form's limit)", 600, 1, 1500,
       [](int64_t, int) { return static_cast<int>(rand_int(0, 1499)); }},
      {"50 tokens, top-10 of 40 (the combine's slot loads in two rounds)", 50, 10, 40,
       [](int64_t i, int s) { return static_cast<int>((i + 4 * s) % 40); }},
  };
  for (const Case& c : cases) {
    moe::Routing r = make_routing(c.t, c.top_k, c.experts, c.pick);
    moe::DispatchLayout ref = moe::make_dispatch_layout(r, c.experts);
    Tensor expert = Tensor::empty({c.t, c.top_k}, DType::kI32);
    for (size_t i = 0; i < r.expert.size(); ++i) expert.i32()[i] = r.expert[i];
    cuda::DeviceDispatchLayout l = cuda::make_dispatch_layout(cuda::to_device(expert), c.experts);
    const std::string what = std::string("dispatch ") + c.name + (chunked ? " (chunked)" : "");
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
    const Tensor weight = cuda::to_device(Tensor::from_vector({c.t, c.top_k}, r.weight));
    cuda::unpermute(cuda::to_device(expert_out), l, weight, out);
    expect_close(what + " unpermute", out, out_ref, kF32Tol);
    // bf16 expert rows (the prefill paths' form; eight columns per thread), and a width that is not a multiple
    // of 8 (the one-column kernel).
    const Tensor expert_bf16 = expert_out.to(DType::kBF16);
    Tensor out_bf16_ref = rand_tensor({c.t, hidden});
    Tensor out_bf16 = cuda::to_device(out_bf16_ref);
    moe::combine_tokens(expert_bf16.to(DType::kF32), ref, r, out_bf16_ref);
    cuda::unpermute(cuda::to_device(expert_bf16), l, weight, out_bf16);
    expect_close(what + " unpermute bf16", out_bf16, out_bf16_ref, kF32Tol);
    const int64_t narrow = 13;
    Tensor expert_narrow = rand_tensor({rows, narrow});
    Tensor out_narrow_ref = rand_tensor({c.t, narrow});
    Tensor out_narrow = cuda::to_device(out_narrow_ref);
    moe::combine_tokens(expert_narrow, ref, r, out_narrow_ref);
    cuda::unpermute(cuda::to_device(expert_narrow), l, weight, out_narrow);
    expect_close(what + " unpermute, 13 columns", out_narrow, out_narrow_ref, kF32Tol);
  }
  // Counts written into a given buffer (a row of a larger table), by either layout kernel.
  for (int64_t t : {3, 400}) {
    Tensor expert = Tensor::empty({t, 4}, DType::kI32);
    for (int64_t i = 0; i < t * 4; ++i) expert.i32()[i] = static_cast<int32_t>((i * 5) % 9);
    Tensor table = cuda::to_device(Tensor::full({3, 9}, -1.0f, DType::kI64));
    cuda::DeviceDispatchLayout l = cuda::make_dispatch_layout(cuda::to_device(expert), 9, true, table.select(1));
    Tensor host = cuda::to_host(table);
    int64_t total = 0;
    for (int e = 0; e < 9; ++e) {
      EXPECT_EQ(host.i64()[e], -1) << "row 0 untouched";
      EXPECT_EQ(host.i64()[18 + e], -1) << "row 2 untouched";
      total += host.i64()[9 + e];
    }
    EXPECT_EQ(total, t * 4);
    EXPECT_EQ(l.tokens_per_expert.raw(), table.select(1).raw());
  }
  // A wide row (more 8-column groups than a block's threads) through the combine, against the CPU.
  {
    const int64_t t = 5, hidden = 1040;
    const int top_k = 3;
    moe::Routing r = make_routing(t, top_k, 6, [](int64_t i, int s) { return static_cast<int>((i + 2 * s) % 6); });
    moe::DispatchLayout ref = moe::make_dispatch_layout(r, 6);
    Tensor expert = Tensor::empty({t, top_k}, DType::kI32);
    for (size_t i = 0; i < r.expert.size(); ++i) expert.i32()[i] = r.expert[i];
    cuda::DeviceDispatchLayout l = cuda::make_dispatch_layout(cuda::to_device(expert), 6);
    Tensor expert_out = rand_tensor({t * top_k, hidden}).to(DType::kBF16);
    Tensor out_ref = rand_tensor({t, hidden});
    Tensor out = cuda::to_device(out_ref);
    moe::combine_tokens(expert_out.to(DType::kF32), ref, r, out_ref);
    cuda::unpermute(cuda::to_device(expert_out), l, cuda::to_device(Tensor::from_vector({t, top_k}, r.weight)), out);
    expect_close("unpermute, 1040 columns", out, out_ref, kF32Tol);
    // Rows that are a strided view are refused, not misread.
    Tensor wide = poisoned_device({t * top_k, 2 * hidden});
    EXPECT_THROW(cuda::unpermute(wide.slice(1, 0, hidden), l, cuda::to_device(Tensor::from_vector({t, top_k}, r.weight)),
                                 out),
                 InvalidArgument);
  }
  // An expert id out of range is refused with check_ids, by either layout kernel.
  for (int64_t t : {3, 400}) {
    Tensor expert = Tensor::zeros({t, 4}, DType::kI32);
    expert.i32()[t * 4 - 1] = 9;
    EXPECT_THROW(cuda::make_dispatch_layout(cuda::to_device(expert), 9), InvalidArgument) << t << " tokens";
  }
}

TEST(GpuOps, DispatchPermuteUnpermuteMatchCpu) {
  SY_SKIP_WITHOUT_GPU();
  check_dispatch(false);
}

// The token-row combine of large passes (cuda::set_token_combine) gives unpermute8_kernel's sums bit for bit
// and the CPU's combine_tokens: a Qwen3-30B-A3B-wide row (2048 columns, one group per thread), a row of more
// groups than a block's 1024 threads (8200 columns), and one of fewer groups than its threads (320 columns:
// threads without a group still read the next token's slots); top-8, top-3, and more tokens than resident
// blocks so that every block walks several tokens.
TEST(GpuOps, TokenCombineEqualsBlockPerRowCombine) {
  SY_SKIP_WITHOUT_GPU();
  const bool before = cuda::token_combine();
  struct Case {
    int64_t tokens, hidden;
    int top_k, experts;
  };
  for (const Case& c : std::vector<Case>{{1100, 2048, 8, 128}, {1024, 8200, 3, 16}, {5000, 320, 8, 64}}) {
    moe::Routing r = make_routing(c.tokens, c.top_k, c.experts, [&](int64_t i, int s) {
      return static_cast<int>((i * 7 + s * 13 + i / 5) % c.experts);
    });
    moe::DispatchLayout ref = moe::make_dispatch_layout(r, c.experts);
    Tensor expert = Tensor::empty({c.tokens, c.top_k}, DType::kI32);
    for (size_t i = 0; i < r.expert.size(); ++i) expert.i32()[i] = r.expert[i];
    cuda::DeviceDispatchLayout l = cuda::make_dispatch_layout(cuda::to_device(expert), c.experts);
    const Tensor expert_out = rand_tensor({ref.num_rows(), c.hidden}).to(DType::kBF16);
    const Tensor residual = rand_tensor({c.tokens, c.hidden});
    Tensor out_ref = residual.clone();
    moe::combine_tokens(expert_out.to(DType::kF32), ref, r, out_ref);
    const Tensor rows = cuda::to_device(expert_out);
    const Tensor weight = cuda::to_device(Tensor::from_vector({c.tokens, c.top_k}, r.weight));
    Tensor by_block = cuda::to_device(residual), by_token = cuda::to_device(residual);
    cuda::set_token_combine(false);
    cuda::unpermute(rows, l, weight, by_block);
    cuda::set_token_combine(true);
    cuda::unpermute(rows, l, weight, by_token);
    cuda::set_token_combine(before);
    const std::string what = std::to_string(c.tokens) + " tokens x top-" + std::to_string(c.top_k) + ", " +
                             std::to_string(c.hidden) + " columns";
    const Tensor a = cuda::to_host(by_block), b = cuda::to_host(by_token);
    EXPECT_EQ(std::memcmp(a.raw(), b.raw(), a.nbytes()), 0) << what << ": the two combines differ";
    expect_close("token combine, " + what, by_token, out_ref, kF32Tol);
  }
}

// The same through the chunked layout (the default; SY_CHUNKED_LAYOUT=0 is the other): the same rows, bit for bit.
TEST(GpuOps, ChunkedDispatchLayoutMatchesCpu) {
  SY_SKIP_WITHOUT_GPU();
  check_dispatch(true);
}

// The tensor-core prefill kernels against the CPU attention on bf16-rounded inputs: lengths that are not a
// multiple of the 64- or 128-row tiles, GQA, one token, windows, sinks, packed sequences. sm90: args.sm90,
// which runs the wgmma kernel for head dims 128/128 (checked by its call counter) and the FA2 kernel for the
// others; else the FlashAttention-2 kernel throughout.
// cudnn: args.cudnn, which runs cuDNN's fused attention where the case has no window and no sinks (checked
// by its call counter) and the kernels above elsewhere.
void check_flash_attention(bool sm90, bool cudnn = false) {
  const std::string kernel = cudnn ? " (cuDNN where no window or sinks)" : sm90 ? " (sm90 where d=128)" : "";
  // (t, heads, kv_heads, head dim, window, sinks): windows shorter than a tile, spanning tiles, and longer
  // than the sequence; sinks with and without a window (gpt-oss: head dim 64, window 128, sinks).
  // dv 0: the same as d; (192, 128) is MLA's expanded prefill.
  struct Case { int64_t t, heads, kv_heads, d; int window; bool sinks; int64_t dv = 0; };
  for (Case c : {Case{200, 4, 2, 128, 0, false}, Case{64, 2, 2, 128, 0, false}, Case{1, 2, 1, 128, 0, false},
                 Case{129, 8, 1, 128, 0, false}, Case{300, 8, 2, 64, 128, true}, Case{200, 4, 4, 64, 0, false},
                 Case{190, 4, 1, 128, 37, false}, Case{70, 2, 1, 64, 500, true}, Case{257, 4, 2, 128, 64, true},
                 Case{5, 2, 2, 64, 1, true}, Case{200, 4, 4, 192, 0, false, 128}, Case{65, 2, 2, 192, 0, false, 128}}) {
    const int64_t dv = c.dv > 0 ? c.dv : c.d;
    Tensor q = rand_tensor({c.t, c.heads, c.d}).to(DType::kBF16), k = rand_tensor({c.t, c.kv_heads, c.d}).to(DType::kBF16);
    Tensor v = rand_tensor({c.t, c.kv_heads, dv}).to(DType::kBF16);
    Tensor sinks = rand_tensor({c.heads}, 3.f);
    const float scale = 1.f / std::sqrt(static_cast<float>(c.d));
    std::vector<int64_t> pos(static_cast<size_t>(c.t));
    for (int64_t i = 0; i < c.t; ++i) pos[i] = i;
    ops::AttentionOptions o;
    o.scale = scale;
    o.window = c.window;
    o.sinks = c.sinks ? &sinks : nullptr;
    Tensor ref = Tensor::empty({c.t, c.heads, dv}, DType::kF32);
    ops::attention(q.to(DType::kF32), k.to(DType::kF32), v.to(DType::kF32), pos, c.t, o, ref);
    cuda::AttentionArgs args;
    args.scale = scale;
    args.window = c.window;
    args.sm90 = sm90;
    args.cudnn = cudnn;
    if (c.sinks) args.sinks = cuda::to_device(sinks);
    Tensor out = poisoned_device({c.t, c.heads, dv});
    const int64_t sm90_calls = cuda::flash_attention_sm90_calls(), cudnn_calls = cuda::flash_attention_cudnn_calls();
    cuda::flash_attention(cuda::to_device(q), cuda::to_device(k), cuda::to_device(v), args, out);
    const bool via_cudnn = cudnn && c.window == 0 && !c.sinks;
    EXPECT_EQ(cuda::flash_attention_cudnn_calls() - cudnn_calls, via_cudnn ? 1 : 0);
    if (!cudnn) {
      EXPECT_EQ(cuda::flash_attention_sm90_calls() - sm90_calls, sm90 && c.d == 128 && dv == 128 ? 1 : 0);
    }
    expect_close("flash_attention t=" + std::to_string(c.t) + " heads=" + std::to_string(c.heads) + "/" +
                     std::to_string(c.kv_heads) + " d=" + std::to_string(c.d) + "/" + std::to_string(dv) + " window=" +
                     std::to_string(c.window) + (c.sinks ? " sinks" : "") + kernel,
                 out, ref, kBf16Tol);
  }
  // Packed sequences in one launch: each range against its own sequence alone; rows in no range stay poisoned.
  // (q.k dim, v dim, window, sinks); 192/128 is MLA's expanded prefill, here with GQA and sequences past row 0.
  for (auto [d, dv, window, with_sinks] : std::vector<std::tuple<int64_t, int64_t, int, bool>>{
           {128, 128, 0, false}, {64, 64, 40, true}, {192, 128, 0, false}}) {
    // Five sequences here; the bf16-output test below packs two and four (even counts: the cuDNN offset
    // tables' alignment).
    const std::vector<std::pair<int64_t, int64_t>> ranges = {{0, 70}, {70, 71}, {75, 205}, {205, 269}, {300, 301}};
    const int64_t t = 310, heads = 4, kv_heads = 2;
    Tensor q = rand_tensor({t, heads, d}).to(DType::kBF16), k = rand_tensor({t, kv_heads, d}).to(DType::kBF16);
    Tensor v = rand_tensor({t, kv_heads, dv}).to(DType::kBF16);
    Tensor sinks = rand_tensor({heads}, 3.f);
    cuda::AttentionArgs args;
    args.scale = 1.f / std::sqrt(static_cast<float>(d));
    args.window = window;
    args.sm90 = sm90;
    args.cudnn = cudnn;
    if (with_sinks) args.sinks = cuda::to_device(sinks);
    Tensor out = poisoned_device({t, heads, dv});
    const int64_t calls = cuda::flash_attention_calls(), cudnn_calls = cuda::flash_attention_cudnn_calls();
    cuda::flash_attention(cuda::to_device(q), cuda::to_device(k), cuda::to_device(v), ranges, args, out);
    EXPECT_EQ(cuda::flash_attention_calls(), calls + 1) << "one launch for every sequence";
    EXPECT_EQ(cuda::flash_attention_cudnn_calls() - cudnn_calls, cudnn && window == 0 && !with_sinks ? 1 : 0);
    Tensor got = cuda::to_host(out);
    std::vector<bool> covered(static_cast<size_t>(t), false);
    for (const auto& [r0, r1] : ranges) {
      const int64_t n = r1 - r0;
      std::vector<int64_t> pos(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) pos[i] = i, covered[r0 + i] = true;
      ops::AttentionOptions o;
      o.scale = args.scale;
      o.window = window;
      o.sinks = with_sinks ? &sinks : nullptr;
      Tensor ref = Tensor::empty({n, heads, dv}, DType::kF32);
      ops::attention(q.slice(0, r0, r1).contiguous().to(DType::kF32), k.slice(0, r0, r1).contiguous().to(DType::kF32),
                     v.slice(0, r0, r1).contiguous().to(DType::kF32), pos, n, o, ref);
      expect_close("packed flash_attention rows [" + std::to_string(r0) + ", " + std::to_string(r1) + ") d=" +
                       std::to_string(d) + kernel,
                   got.slice(0, r0, r1).contiguous(), ref, kBf16Tol);
    }
    for (int64_t i = 0; i < t; ++i) {
      if (covered[i]) continue;
      Tensor row = got.slice(0, i, i + 1).contiguous();
      EXPECT_TRUE(std::isnan(row.f32()[0]) && std::isnan(row.f32()[row.numel() - 1])) << "row " << i << " written";
    }
  }
}

TEST(GpuOps, FlashAttentionMatchesCpu) {
  SY_SKIP_WITHOUT_GPU();
  check_flash_attention(false);
  cuda::AttentionArgs args;
  args.scale = 1.f;
  // Overlapping or out-of-range sequences are refused.
  Tensor x2 = cuda::to_device(rand_tensor({8, 2, 64}).to(DType::kBF16));
  Tensor out2 = poisoned_device({8, 2, 64});
  EXPECT_THROW(cuda::flash_attention(x2, x2, x2, {{0, 5}, {4, 8}}, args, out2), InvalidArgument);
  EXPECT_THROW(cuda::flash_attention(x2, x2, x2, {{0, 9}}, args, out2), InvalidArgument);
  Tensor bad = cuda::to_device(rand_tensor({4, 2, 96}).to(DType::kBF16));  // head dim 96
  Tensor out = poisoned_device({4, 2, 96});
  EXPECT_THROW(cuda::flash_attention(bad, bad, bad, args, out), InvalidArgument);
  Tensor x = cuda::to_device(rand_tensor({4, 2, 64}).to(DType::kBF16));
  Tensor out64 = poisoned_device({4, 2, 64});
  args.sinks = cuda::to_device(rand_tensor({3}));  // 3 sinks for 2 heads
  EXPECT_THROW(cuda::flash_attention(x, x, x, args, out64), InvalidArgument);
  args.sinks = Tensor();
  args.window = -1;
  EXPECT_THROW(cuda::flash_attention(x, x, x, args, out64), InvalidArgument);
}

// The same cases through the wgmma kernel (its own test, so that gpu_suite.sh can run the unproven Hopper
// kernels apart under a shorter timeout).
TEST(GpuOps, FlashAttentionSm90MatchesCpu) {
  SY_SKIP_WITHOUT_GPU();
  if (!cuda::flash_attention_sm90_supported()) GTEST_SKIP() << "not a compute capability 9.0 GPU with sm_90a code";
  check_flash_attention(true);
}

// The same cases with args.cudnn: cuDNN's fused attention takes those without windows or sinks (single and
// packed sequences, GQA, head dims 64, 128 and MLA's 192/128); skipped where cuDNN is not found.
TEST(GpuOps, FlashAttentionCudnnMatchesCpu) {
  SY_SKIP_WITHOUT_GPU();
  std::string why;
  if (!cuda::flash_attention_cudnn_available(&why)) GTEST_SKIP() << "cuDNN not used here: " << why;
  check_flash_attention(false, true);
}

// The cuDNN loader reports a library it cannot open (with the path it tried) and leaves attention to our
// kernels; no GPU needed. In a fresh process (threadsafe death-test style re-runs the binary), since the
// loader's answer is kept for the process's life.
TEST(CudnnLoader, MissingLibraryIsReportedWithItsPath) {
  // Nothing here may load cuDNN before the death statement: the threadsafe style re-runs this function.
  if (!cuda::flash_attention_cudnn_compiled()) GTEST_SKIP() << "this build found no cuDNN headers";
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        setenv("SY_CUDNN_LIBRARY", "/nonexistent/libcudnn.so.9", 1);
        std::string why;
        const bool available = cuda::flash_attention_cudnn_available(&why);
        std::fprintf(stderr, "reason: %s\n", why.c_str());
        std::exit(available ? 1 : 0);
      },
      ::testing::ExitedWithCode(0), "reason: SY_CUDNN_LIBRARY=/nonexistent/libcudnn.so.9: ");
}

// A bf16 `out` holds the f32 result rounded once, through each path (our kernels via an f32 scratch, cuDNN
// directly); rows outside every sequence stay poisoned.
TEST(GpuOps, FlashAttentionBf16OutEqualsRoundedF32Out) {
  SY_SKIP_WITHOUT_GPU();
  const int64_t t = 210, heads = 4, kv_heads = 2, d = 128;
  Tensor q = cuda::to_device(rand_tensor({t, heads, d}).to(DType::kBF16));
  Tensor k = cuda::to_device(rand_tensor({t, kv_heads, d}).to(DType::kBF16));
  Tensor v = cuda::to_device(rand_tensor({t, kv_heads, d}).to(DType::kBF16));
  std::vector<std::pair<const char*, cuda::AttentionArgs>> paths;
  cuda::AttentionArgs fa2;
  fa2.scale = 1.f / std::sqrt(static_cast<float>(d));
  paths.push_back({"FlashAttention-2", fa2});
  if (cuda::flash_attention_sm90_supported()) {
    cuda::AttentionArgs a = fa2;
    a.sm90 = true;
    paths.push_back({"sm90", a});
  }
  if (cuda::flash_attention_cudnn_available()) {
    cuda::AttentionArgs a = fa2;
    a.cudnn = true;
    paths.push_back({"cuDNN", a});
  }
  // Three, two and four packed sequences (cuDNN's per-sequence tables with odd and even counts).
  using Ranges = std::vector<std::pair<int64_t, int64_t>>;
  for (const Ranges& ranges : {Ranges{{0, 100}, {100, 130}, {140, 200}}, Ranges{{0, 100}, {140, 200}},
                               Ranges{{0, 64}, {64, 65}, {70, 130}, {140, 200}}}) {
    for (const auto& [name, args] : paths) {
      const std::string what = std::string(name) + ", " + std::to_string(ranges.size()) + " sequences";
      Tensor out32 = poisoned_device({t, heads, d}), out16 = poisoned_device({t, heads, d}, DType::kBF16);
      cuda::flash_attention(q, k, v, ranges, args, out32);
      cuda::flash_attention(q, k, v, ranges, args, out16);
      Tensor want = cuda::to_host(out32).to(DType::kBF16).to(DType::kF32);
      Tensor got = cuda::to_host(out16).to(DType::kF32);
      for (int64_t i = 0; i < t; ++i) {
        bool inside = false;
        for (const auto& [r0, r1] : ranges) inside = inside || (i >= r0 && i < r1);
        Tensor a = got.slice(0, i, i + 1).contiguous(), b = want.slice(0, i, i + 1).contiguous();
        if (!inside) {
          EXPECT_TRUE(std::isnan(a.f32()[0])) << what << ": row " << i << " written";
          continue;
        }
        for (int64_t j = 0; j < a.numel(); ++j) {
          ASSERT_EQ(a.f32()[j], b.f32()[j]) << what << ": row " << i << " element " << j;
        }
      }
    }
  }
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

// Paged attention inputs of a batch: sequence i holds lengths[i] keys in blocks of bs scattered over the pool
// (plus a few blocks nobody reads) and queries its newest queries[i] rows.
struct PagedBatch {
  int64_t bs = 0, total_blocks = 0, t = 0;
  std::vector<int32_t> tables;
  std::vector<int64_t> pos, table_start, seq_table_start;
  std::vector<ops::PagedSequence> seqs;  // block_table points into tables

  PagedBatch(int64_t block_size, const std::vector<int64_t>& lengths, const std::vector<int64_t>& queries)
      : bs(block_size) {
    for (int64_t n : lengths) total_blocks += (n + bs - 1) / bs;
    total_blocks += 3;  // blocks nobody reads
    // A shuffle of the physical blocks: b -> (b * stride + 3) mod total is one for a stride coprime to the total
    // (7 alone was not whenever 7 divided it, and then sequences shared blocks).
    int64_t stride = 7;
    while (std::gcd(stride, total_blocks) != 1) ++stride;
    std::vector<int32_t> order(static_cast<size_t>(total_blocks));
    for (int64_t b = 0; b < total_blocks; ++b) order[b] = static_cast<int32_t>((b * stride + 3) % total_blocks);
    int64_t next_block = 0;
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
  }
  PagedBatch(const PagedBatch&) = delete;

  // cuda::paged_attention of device q against device pools k, v (views allowed) into out.
  void run_gpu(const Tensor& q, const Tensor& k, const Tensor& v, const cuda::AttentionArgs& args, Tensor& out) const {
    Tensor tab = Tensor::empty({static_cast<int64_t>(tables.size())}, DType::kI32);
    std::copy(tables.begin(), tables.end(), tab.i32());
    cuda::paged_attention(q, k, v, cuda::to_device(i64_tensor(pos)), cuda::to_device(i64_tensor(table_start)),
                          cuda::to_device(tab), bs, args, out);
  }
};

// The paged kernel against the CPU paged attention: f32 and bf16 pools (the bf16 case on the same bf16-rounded
// keys and values), shuffled block tables, decode rows over long contexts with the key splits the batch size
// picks, forced to one split and to an odd count, a prefill chunk, window + sinks; head dims 128 (the kernel's
// 4-per-lane form) and 192 (8 per lane). With cached_keys_ready (every key is in the pool before the launch
// here) each warp's first key row is read before the programmatic-launch wait: the same result bit for bit; and
// with a 3 MB stand-in for the o projection pulled into L2 (l2_prefetch) too.
TEST(GpuOps, PagedAttentionMatchesCpu) {
  SY_SKIP_WITHOUT_GPU();
  const int64_t bs = 16, heads = 8, kv_heads = 2;
  const Tensor o_weight = cuda::to_device(Tensor::zeros({1536, 1024}, DType::kBF16));
  const PagedBatch batch(bs, {1, 37, 700, 130, 260}, {1, 1, 1, 1, 5});
  const int64_t t = batch.t, total_blocks = batch.total_blocks;
  Tensor sinks = rand_tensor({heads}, 2.f);
  for (int64_t d : {128, 192}) {
    const int64_t dk = d, dv = d;
    Tensor q = rand_tensor({t, heads, dk});
    for (DType pool_dtype : {DType::kF32, DType::kBF16}) {
      Tensor k = rand_tensor({total_blocks * bs, kv_heads, dk}).to(pool_dtype);
      Tensor v = rand_tensor({total_blocks * bs, kv_heads, dv}).to(pool_dtype);
      for (int window : {0, 50}) {
        ops::AttentionOptions opt;
        opt.scale = 1.f / std::sqrt(static_cast<float>(dk));
        opt.window = window;
        opt.sinks = window > 0 ? &sinks : nullptr;
        Tensor ref = Tensor::empty({t, heads, dv}, DType::kF32);
        ops::paged_attention(q, k.to(DType::kF32), v.to(DType::kF32), batch.pos, batch.seqs, bs, opt, ref);
        for (int splits : {0, 1, 7}) {
          cuda::AttentionArgs args;
          args.scale = opt.scale;
          args.window = window;
          if (window > 0) args.sinks = cuda::to_device(sinks);
          args.key_splits = splits;
          const std::string what = std::string("paged attention d ") + std::to_string(d) + " " +
                                   dtype_name(pool_dtype) + " window " + std::to_string(window) + " splits " +
                                   std::to_string(splits);
          Tensor out = poisoned_device({t, heads, dv});
          batch.run_gpu(cuda::to_device(q), cuda::to_device(k), cuda::to_device(v), args, out);
          expect_close(what, out, ref, kAttentionTol);
          args.cached_keys_ready = true;
          Tensor early = poisoned_device({t, heads, dv});
          batch.run_gpu(cuda::to_device(q), cuda::to_device(k), cuda::to_device(v), args, early);
          expect_close(what + " (cached keys ready)", early, cuda::to_host(out), 0.0);
          args.l2_prefetch = cuda::L2Prefetch::of(o_weight);
          Tensor warmed = poisoned_device({t, heads, dv});
          batch.run_gpu(cuda::to_device(q), cuda::to_device(k), cuda::to_device(v), args, warmed);
          expect_close(what + " (L2 prefetch)", warmed, cuda::to_host(out), 0.0);
          if (splits == 7 && window == 0) {  // a negative minimum is refused
            cuda::AttentionArgs negative = args;
            negative.min_split_keys = -1;
            Tensor unused = poisoned_device({t, heads, dv});
            EXPECT_THROW(batch.run_gpu(cuda::to_device(q), cuda::to_device(k), cuda::to_device(v), negative, unused),
                         InvalidArgument);
          }
          // Splits of at least 16 and of at least 1000 keys (most splits, or all but the first, see none).
          for (int min_keys : {16, 1000}) {
            cuda::AttentionArgs wide = args;
            wide.min_split_keys = min_keys;
            Tensor fewer = poisoned_device({t, heads, dv});
            batch.run_gpu(cuda::to_device(q), cuda::to_device(k), cuda::to_device(v), wide, fewer);
            expect_close(what + " (splits of at least " + std::to_string(min_keys) + " keys)", fewer, ref,
                         kAttentionTol);
          }
        }
      }
    }
  }
  const int64_t dk = 128, dv = 128;
  const Tensor q = rand_tensor({t, heads, dk});
  const std::vector<int64_t>& pos = batch.pos;
  const std::vector<int64_t>& table_start = batch.table_start;
  // Keys and values of different dtypes are refused.
  Tensor out = poisoned_device({t, heads, dv});
  cuda::AttentionArgs args;
  EXPECT_THROW(cuda::paged_attention(cuda::to_device(q), cuda::to_device(Tensor::zeros({bs, kv_heads, dk}, DType::kBF16)),
                                     cuda::to_device(Tensor::zeros({bs, kv_heads, dv}, DType::kF32)),
                                     cuda::to_device(i64_tensor(pos)), cuda::to_device(i64_tensor(table_start)),
                                     cuda::to_device(Tensor::zeros({1}, DType::kI32)), bs, args, out),
               InvalidArgument);
  // So is a prefetch range that does not start 16-byte aligned.
  args.l2_prefetch = {static_cast<const char*>(o_weight.raw()) + 4, 64};
  Tensor k16 = cuda::to_device(Tensor::zeros({total_blocks * bs, kv_heads, dk}, DType::kBF16));
  EXPECT_THROW(batch.run_gpu(cuda::to_device(q), k16, k16, args, out), InvalidArgument);
}

// The epilogue folded into a decode pass's attention (paged_attention_qkv) against qkv_epilogue followed by
// paged_attention on the same inputs: the same arithmetic, so the same outputs and pool rows bit for bit.
// Every query is its sequence's only new token (a decode pass); norms, bias, clip, interleaved and partial
// rotary, windows with sinks, f32 and bf16 pools, the key splits the batch picks, one split, an odd count, and
// the grouped decode kernel's fused form (grouped_decode) against the epilogue then the grouped kernel.
TEST(GpuOps, PagedAttentionQkvEqualsEpilogueThenAttention) {
  SY_SKIP_WITHOUT_GPU();
  struct Case { int64_t heads, kv_heads, d, dv; bool interleaved; double partial; bool bias, clip, norm; int window; };
  const int64_t bs = 16;
  const PagedBatch batch(bs, {1, 37, 300, 130}, {1, 1, 1, 1});
  const int64_t t = batch.t;
  std::vector<int64_t> rows(t);
  for (int64_t i = 0; i < t; ++i) {  // the pool row of each query's own key
    const int64_t p = batch.pos[i];
    rows[i] = int64_t{batch.tables[batch.table_start[i] + p / bs]} * bs + p % bs;
  }
  // Each query's own row is its own (no other query reads it as a cached key): the batch's blocks are distinct.
  ASSERT_EQ(std::set<int32_t>(batch.tables.begin(), batch.tables.end()).size(), batch.tables.size());
  Tensor tab = Tensor::empty({static_cast<int64_t>(batch.tables.size())}, DType::kI32);
  std::copy(batch.tables.begin(), batch.tables.end(), tab.i32());
  const Tensor pos_d = cuda::to_device(i64_tensor(batch.pos)), start_d = cuda::to_device(i64_tensor(batch.table_start));
  const Tensor tab_d = cuda::to_device(tab), rows_d = cuda::to_device(i64_tensor(rows));
  for (Case c : {Case{8, 2, 128, 128, false, 1.0, false, false, true, 0}, Case{4, 4, 64, 64, true, 1.0, true, false, false, 0},
                 Case{6, 2, 64, 32, false, 0.5, true, true, true, 0}, Case{8, 2, 64, 64, false, 1.0, true, false, false, 50}}) {
    RopeConfig rc;
    rc.theta = 1e4;
    rc.interleaved = c.interleaved;
    rc.partial_rotary_factor = c.partial;
    const cuda::DeviceRope rope = cuda::upload_rope(ops::make_rope_table(rc, static_cast<int>(c.d), 4096));
    const int64_t width = (c.heads + c.kv_heads) * c.d + c.kv_heads * c.dv;
    const Tensor qkv = cuda::to_device(rand_tensor({t, width}, 2.f));
    cuda::QkvEpilogueArgs e;
    if (c.bias) e.bias = cuda::to_device(rand_tensor({width}, 0.5f));
    if (c.norm) e.q_norm = cuda::to_device(rand_tensor({c.d}, 0.5f)), e.k_norm = cuda::to_device(rand_tensor({c.d}, 0.5f));
    e.clip = c.clip ? 1.5f : 0.f;
    ASSERT_TRUE(cuda::paged_attention_qkv_fits(c.heads, c.kv_heads, c.d, c.dv, rope));
    for (DType pool_dtype : {DType::kF32, DType::kBF16}) {
      const Tensor keys0 = rand_tensor({batch.total_blocks * bs, c.kv_heads, c.d}).to(pool_dtype);
      const Tensor values0 = rand_tensor({batch.total_blocks * bs, c.kv_heads, c.dv}).to(pool_dtype);
      // -7: seven splits of at least 24 keys each (min_split_keys; the later splits of short contexts see none).
      // 100: the grouped decode kernel (one cluster per query and key head; it takes bf16 pools whose key and
      // value dims match, the others run per head).
      for (int splits : {0, 1, 7, -7, 100}) {
        cuda::AttentionArgs args;
        args.grouped_decode = splits == 100;
        args.scale = 1.f / std::sqrt(static_cast<float>(c.d));
        args.window = c.window;
        if (c.window > 0) args.sinks = cuda::to_device(rand_tensor({c.heads}, 2.f));
        args.key_splits = splits < 0 ? -splits : splits % 100;
        args.min_split_keys = splits < 0 ? 24 : 0;
        // Two launches: the epilogue, then the attention over the pool it wrote.
        Tensor keys_a = cuda::to_device(keys0), values_a = cuda::to_device(values0);
        Tensor q3 = poisoned_device({t, c.heads, c.d}), k3 = poisoned_device({t, c.kv_heads, c.d});
        Tensor v3 = poisoned_device({t, c.kv_heads, c.dv}), want = poisoned_device({t, c.heads, c.dv});
        cuda::qkv_epilogue(qkv, e, pos_d, rope, rows_d, q3, k3, v3, keys_a, values_a);
        cuda::paged_attention(q3, keys_a, values_a, pos_d, start_d, tab_d, bs, args, want);
        // One launch (and the merge).
        Tensor keys_b = cuda::to_device(keys0), values_b = cuda::to_device(values0);
        Tensor got = poisoned_device({t, c.heads, c.dv});
        cuda::paged_attention_qkv(qkv, e, rope, rows_d, keys_b, values_b, pos_d, start_d, tab_d, bs, args, got);
        const std::string what = "paged_attention_qkv heads " + std::to_string(c.heads) + "/" +
                                 std::to_string(c.kv_heads) + " d " + std::to_string(c.d) + "/" + std::to_string(c.dv) +
                                 (c.window ? " window+sinks" : "") + " " + dtype_name(pool_dtype) +
                                 (args.grouped_decode ? " grouped" : "") + " splits " +
                                 std::to_string(args.key_splits) + " of at least " +
                                 std::to_string(args.min_split_keys) + " keys";
        expect_close(what, got, cuda::to_host(want), 0.0);
        expect_close(what + " keys", cuda::to_host(keys_b).to(DType::kF32), cuda::to_host(keys_a).to(DType::kF32), 0.0);
        expect_close(what + " values", cuda::to_host(values_b).to(DType::kF32), cuda::to_host(values_a).to(DType::kF32),
                     0.0);
      }
    }
  }
  // Head dims above 128 and a row width that does not match the heads are refused.
  RopeConfig rc;
  const cuda::DeviceRope rope = cuda::upload_rope(ops::make_rope_table(rc, 192, 64));
  EXPECT_FALSE(cuda::paged_attention_qkv_fits(2, 1, 192, 192, rope));
  Tensor keys = poisoned_device({bs, 1, 192}), values = poisoned_device({bs, 1, 192});
  Tensor out = poisoned_device({1, 2, 192});
  const Tensor one = cuda::to_device(i64_tensor({0}));
  EXPECT_THROW(cuda::paged_attention_qkv(cuda::to_device(rand_tensor({1, 4 * 192})), cuda::QkvEpilogueArgs{}, rope, one,
                                         keys, values, one, one, cuda::to_device(Tensor::zeros({1}, DType::kI32)), bs,
                                         cuda::AttentionArgs{}, out),
               InvalidArgument);
  const cuda::DeviceRope rope64 = cuda::upload_rope(ops::make_rope_table(rc, 64, 64));
  Tensor keys64 = poisoned_device({bs, 1, 64}), values64 = poisoned_device({bs, 1, 64});
  Tensor out64 = poisoned_device({1, 2, 64});
  EXPECT_THROW(cuda::paged_attention_qkv(cuda::to_device(rand_tensor({1, 4 * 64 + 1})), cuda::QkvEpilogueArgs{}, rope64,
                                         one, keys64, values64, one, one, cuda::to_device(Tensor::zeros({1}, DType::kI32)),
                                         bs, cuda::AttentionArgs{}, out64),
               InvalidArgument);
}

// The grouped decode kernel (AttentionArgs::grouped_decode: a thread-block cluster per (query, key head))
// against the CPU paged attention on bf16 pools: groups of 1, 3, 4, 8 and 16 query heads per key head (one,
// two and four heads per warp, idle warps), head dims 64 and 128, one key to 700 (fewer keys than the
// cluster's blocks, several steps per block, part-filled last steps), window + sinks, and a prefill chunk of
// five queries, with the first step's keys read before the programmatic-launch wait (cached_keys_ready) and
// after it. Passes it does not take (f32 pools) run the per-head kernel with the same answer.
TEST(GpuOps, GroupedDecodeAttentionMatchesCpu) {
  SY_SKIP_WITHOUT_GPU();
  struct Case { int64_t heads, kv_heads, d; };
  const PagedBatch batch(16, {1, 37, 700, 130, 260}, {1, 1, 1, 1, 5});
  const int64_t rows = batch.total_blocks * batch.bs;
  for (Case c : {Case{8, 8, 128}, Case{8, 2, 128}, Case{32, 4, 128}, Case{16, 1, 64}, Case{12, 4, 64}}) {
    Tensor q = rand_tensor({batch.t, c.heads, c.d}), sinks = rand_tensor({c.heads}, 2.f);
    const Tensor k = rand_tensor({rows, c.kv_heads, c.d}).to(DType::kBF16);
    const Tensor v = rand_tensor({rows, c.kv_heads, c.d}).to(DType::kBF16);
    const Tensor qd = cuda::to_device(q);
    for (DType pool : {DType::kBF16, DType::kF32}) {
      const Tensor kd = cuda::to_device(k.to(pool)), vd = cuda::to_device(v.to(pool));
      EXPECT_EQ(cuda::grouped_decode_fits(qd, kd, vd), pool == DType::kBF16);
      for (int window : {0, 50}) {
        ops::AttentionOptions opt;
        opt.scale = 1.f / std::sqrt(static_cast<float>(c.d));
        opt.window = window;
        opt.sinks = window > 0 ? &sinks : nullptr;
        Tensor ref = Tensor::empty({batch.t, c.heads, c.d}, DType::kF32);
        ops::paged_attention(q, k.to(DType::kF32), v.to(DType::kF32), batch.pos, batch.seqs, batch.bs, opt, ref);
        for (bool ready : {false, true}) {  // every key is in the pool before the launch: both are right
          cuda::AttentionArgs args;
          args.scale = opt.scale;
          args.window = window;
          if (window > 0) args.sinks = cuda::to_device(sinks);
          args.grouped_decode = true;
          args.cached_keys_ready = ready;
          Tensor out = poisoned_device({batch.t, c.heads, c.d});
          batch.run_gpu(qd, kd, vd, args, out);
          expect_close("grouped decode attention " + std::to_string(c.heads) + "/" + std::to_string(c.kv_heads) +
                           " heads d=" + std::to_string(c.d) + " " + dtype_name(pool) + " window " +
                           std::to_string(window) + (ready ? " cached keys ready" : ""),
                       out, ref, kAttentionTol);
        }
      }
    }
  }
}

// MLA's absorbed form: one shared key row per token (kv_heads 1, dk = rank + rope = 576) whose first 512
// columns are the values (a strided view of the keys, dv 512: the 16-per-lane accumulator), 16 query heads.
TEST(GpuOps, PagedAttentionAbsorbedMlaShapeMatchesCpu) {
  SY_SKIP_WITHOUT_GPU();
  const int64_t bs = 16, heads = 16, rank = 512, rope = 64, dk = rank + rope;
  const PagedBatch batch(bs, {1, 300, 45, 129}, {1, 1, 9, 1});
  // Peaked softmaxes (scores of a few units), so that a kernel dropping the 64 rotary columns from the scores
  // is far outside the tolerance.
  Tensor q = rand_tensor({batch.t, heads, dk});
  for (DType pool_dtype : {DType::kF32, DType::kBF16}) {
    Tensor k = rand_tensor({batch.total_blocks * bs, 1, dk}).to(pool_dtype);
    ops::AttentionOptions opt;
    opt.scale = 0.25f;
    Tensor ref = Tensor::empty({batch.t, heads, rank}, DType::kF32);
    Tensor k32 = k.to(DType::kF32);
    ops::paged_attention(q, k32, k32.slice(2, 0, rank), batch.pos, batch.seqs, bs, opt, ref);
    for (int splits : {0, 1, 5}) {
      cuda::AttentionArgs args;
      args.scale = opt.scale;
      args.key_splits = splits;
      Tensor kd = cuda::to_device(k), out = poisoned_device({batch.t, heads, rank});
      batch.run_gpu(cuda::to_device(q), kd, kd.slice(2, 0, rank), args, out);
      expect_close(std::string("absorbed MLA paged attention ") + dtype_name(pool_dtype) + " splits " +
                       std::to_string(splits),
                   out, ref, kAttentionTol);
    }
  }
  // More than 512 value dims per head are refused.
  Tensor kd = cuda::to_device(Tensor::zeros({batch.total_blocks * bs, 1, 600}, DType::kBF16));
  Tensor out = poisoned_device({batch.t, heads, 520});
  cuda::AttentionArgs args;
  EXPECT_THROW(batch.run_gpu(cuda::to_device(rand_tensor({batch.t, heads, 600})), kd, kd.slice(2, 0, 520), args, out),
               InvalidArgument);
}

// Per-head products over strided views (MLA's absorbed projections) against ops::linear head by head: both
// weight layouts, f32 and bf16 inputs, outputs written into a column slice of a wider tensor (the columns
// outside it keep their poison).
TEST(GpuOps, BatchedLinearMatchesCpuPerBatch) {
  SY_SKIP_WITHOUT_GPU();
  struct Case { int64_t m, batches, k, n; };
  for (Case c : {Case{1, 16, 128, 512}, Case{5, 3, 64, 33}, Case{70, 2, 512, 128}, Case{1, 1, 7, 4}}) {
    const int64_t x_extra = 9, y_extra = 64;
    Tensor x_wide = rand_tensor({c.m, c.batches, c.k + x_extra});
    Tensor x = x_wide.slice(2, 0, c.k).contiguous();
    for (cuda::BatchedWeight layout : {cuda::BatchedWeight::kOutIn, cuda::BatchedWeight::kInOut}) {
      const bool out_in = layout == cuda::BatchedWeight::kOutIn;
      // Weights as a slice of a taller stack (kv_b's key or value rows), read in place.
      const int64_t rows = out_in ? c.n : c.k, cols = out_in ? c.k : c.n;
      Tensor w_tall = rand_tensor({c.batches, rows + 5, cols}, 0.2f).to(DType::kBF16);
      Tensor w = w_tall.slice(1, 5, 5 + rows);
      Tensor ref = Tensor::empty({c.m, c.batches, c.n}, DType::kF32);
      for (int64_t b = 0; b < c.batches; ++b) {
        Tensor wb = w.select(b).contiguous();  // (rows, cols)
        if (!out_in) {  // (k, n) -> (n, k) for ops::linear (bf16 values moved, not rounded)
          Tensor wf = wb.to(DType::kF32), wt = Tensor::empty({c.n, c.k}, DType::kF32);
          for (int64_t i = 0; i < c.k; ++i) {
            for (int64_t j = 0; j < c.n; ++j) wt.f32()[j * c.k + i] = wf.f32()[i * c.n + j];
          }
          wb = wt.to(DType::kBF16);
        }
        Tensor yb = Tensor::empty({c.m, c.n}, DType::kF32);
        ops::linear(x.slice(1, b, b + 1).contiguous().reshape({c.m, c.k}), wb, Tensor(), yb);
        for (int64_t i = 0; i < c.m; ++i) {
          std::copy(yb.f32() + i * c.n, yb.f32() + (i + 1) * c.n, ref.f32() + (i * c.batches + b) * c.n);
        }
      }
      const std::string what = std::string("batched_linear ") + (out_in ? "(B, n, k)" : "(B, k, n)") + " m=" +
                               std::to_string(c.m) + " B=" + std::to_string(c.batches) + " k=" +
                               std::to_string(c.k) + " n=" + std::to_string(c.n);
      for (bool x_view : {false, true}) {
        Tensor xd = x_view ? cuda::to_device(x_wide.to(DType::kBF16)).slice(2, 0, c.k) : cuda::to_device(x);
        Tensor y_wide = poisoned_device({c.m, c.batches, c.n + y_extra});
        Tensor y = y_wide.slice(2, 0, c.n);
        cuda::batched_linear(xd, cuda::to_device(w_tall).slice(1, 5, 5 + rows), layout, y);
        Tensor got = cuda::to_host(y_wide);
        expect_close(what + (x_view ? " x bf16 view" : " x f32"), got.slice(2, 0, c.n).contiguous(), ref, kBf16Tol);
        std::vector<float> rest = got.slice(2, c.n, c.n + y_extra).contiguous().to_f32_vector();
        EXPECT_TRUE(std::all_of(rest.begin(), rest.end(), [](float v) { return std::isnan(v); }))
            << what << ": wrote outside the output view";
      }
    }
  }
  // Bad shapes and layouts are refused.
  Tensor x = cuda::to_device(rand_tensor({2, 3, 8})), w = cuda::to_device(rand_tensor({3, 4, 8}).to(DType::kBF16));
  Tensor y = poisoned_device({2, 3, 4});
  EXPECT_NO_THROW(cuda::batched_linear(x, w, cuda::BatchedWeight::kOutIn, y));
  EXPECT_THROW(cuda::batched_linear(x, w, cuda::BatchedWeight::kInOut, y), InvalidArgument);  // w is (B, n, k)
  Tensor y_bad = poisoned_device({2, 2, 4});
  EXPECT_THROW(cuda::batched_linear(x, w, cuda::BatchedWeight::kOutIn, y_bad), InvalidArgument);
  Tensor x_view = cuda::to_device(rand_tensor({2, 3, 10})).slice(2, 0, 8);  // f32 views are not rounded in place
  EXPECT_THROW(cuda::batched_linear(x_view, w, cuda::BatchedWeight::kOutIn, y), InvalidArgument);
  Tensor x_empty = cuda::to_device(Tensor::zeros({2, 3, 0}, DType::kF32));
  Tensor w_empty = cuda::to_device(Tensor::zeros({3, 4, 0}, DType::kBF16));
  EXPECT_THROW(cuda::batched_linear(x_empty, w_empty, cuda::BatchedWeight::kOutIn, y), InvalidArgument);
}

}  // namespace
}  // namespace sy::test
