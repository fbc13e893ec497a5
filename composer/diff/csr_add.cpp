// The diff's sparse product on a few rows' tokens: out[t, :] += x[t, :] @ delta^T + bias, delta in CSR [F, K]
// with 32-bit indices, in place, on the CPU, float32. See composer/diff/kernel.py for why it exists.
//
// Tokens go in chunks of 16: a chunk of x is laid out transposed (16 lanes per input feature), so each stored
// entry of the delta is one 16-lane multiply-add on a contiguous vector; the chunk's 16 x F result is then added
// to `out` row by row. Chunks are independent (they write different rows of `out`) and split over threads.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

namespace {

constexpr int64_t W = 16;  // tokens per chunk: one AVX-512 register of floats, two AVX2 ones

#if defined(__x86_64__) && defined(__GNUC__)
#define CLONES __attribute__((target_clones("avx512f", "avx2", "default")))  // picked for the CPU at load time
#else
#define CLONES  // other architectures: the compiler's default vector width
#endif

CLONES void chunk(
    float* o, int64_t lo, const float* x, int64_t lx, int64_t n, int64_t K, int64_t F, const int32_t* crow,
    const int32_t* col, const float* val, const float* bias, float* xt, float* yt) {
  for (int64_t k = 0; k < K; ++k) {
    float* dst = xt + k * W;
    for (int64_t t = 0; t < n; ++t) dst[t] = x[t * lx + k];
    for (int64_t t = n; t < W; ++t) dst[t] = 0.f;  // lanes past the chunk stay zero (never denormal garbage)
  }
  for (int64_t i = 0; i < F; ++i) {
    float acc[W];
    const float b = bias != nullptr ? bias[i] : 0.f;
    for (int64_t t = 0; t < W; ++t) acc[t] = b;
    for (int32_t p = crow[i]; p < crow[i + 1]; ++p) {
      const float w = val[p];
      const float* xr = xt + static_cast<int64_t>(col[p]) * W;
      for (int64_t t = 0; t < W; ++t) acc[t] += w * xr[t];
    }
    for (int64_t t = 0; t < W; ++t) yt[i * W + t] = acc[t];
  }
  for (int64_t t = 0; t < n; ++t) {
    float* row = o + t * lo;
    for (int64_t i = 0; i < F; ++i) row[i] += yt[i * W + t];
  }
}

}  // namespace

void csr_add(torch::Tensor out, torch::Tensor x, torch::Tensor crow, torch::Tensor col, torch::Tensor val,
             c10::optional<torch::Tensor> bias, int64_t columns) {
  TORCH_CHECK(out.dim() == 2 && x.dim() == 2 && out.size(0) == x.size(0), "out [T, F] and x [T, K]");
  TORCH_CHECK(out.scalar_type() == at::kFloat && x.scalar_type() == at::kFloat && val.scalar_type() == at::kFloat,
              "float32 only");
  TORCH_CHECK(crow.scalar_type() == at::kInt && col.scalar_type() == at::kInt, "32-bit CSR indices");
  TORCH_CHECK(out.stride(1) == 1 && x.stride(1) == 1 && crow.is_contiguous() && col.is_contiguous() &&
                  val.is_contiguous(),
              "rows with contiguous columns");
  const int64_t T = x.size(0), K = x.size(1), F = crow.size(0) - 1;
  TORCH_CHECK(out.size(1) == F, "out has F columns");
  TORCH_CHECK(columns == K, "x has as many features as the delta has columns");  // its indices stay inside x
  TORCH_CHECK(col.numel() == val.numel() && crow.numel() == F + 1, "a CSR's parts");
  const float* b = nullptr;
  if (bias.has_value()) {
    TORCH_CHECK(bias->is_contiguous() && bias->numel() == F && bias->scalar_type() == at::kFloat, "bias [F]");
    b = bias->data_ptr<float>();
  }
  float* o = out.data_ptr<float>();
  const float* xp = x.data_ptr<float>();
  const int64_t lo = out.stride(0), lx = x.stride(0);
  const int32_t* cr = crow.data_ptr<int32_t>();
  const int32_t* cl = col.data_ptr<int32_t>();
  const float* v = val.data_ptr<float>();
  const int64_t chunks = (T + W - 1) / W;
  auto run = [&](int64_t begin, int64_t end) {
    thread_local std::vector<float> xt, yt;  // per thread: chunks on other threads have their own
    xt.resize(K * W);
    yt.resize(F * W);
    for (int64_t c = begin; c < end; ++c) {
      const int64_t t0 = c * W;
      chunk(o + t0 * lo, lo, xp + t0 * lx, lx, std::min(W, T - t0), K, F, cr, cl, v, b, xt.data(), yt.data());
    }
  };
  if (chunks == 1) {
    run(0, 1);  // no parallel region for one chunk (at::parallel_for would open one)
  } else {
    at::parallel_for(0, chunks, 1, run);
  }
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { m.def("csr_add", &csr_add); }
