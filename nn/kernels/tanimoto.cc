// The three sums of the fractal Tanimoto similarity (paper eqs 5 and 7, Listing 1) in one pass, forward
// and backward, as an operator of mantis's MXNet 1.9 custom-operator library (lib_api.h), CPU, float32:
//
//   inner = sum p l,   inner_c = sum (1 - p)(1 - l),   dist = sum (p - l)^2
//
// over the pixels of each channel (over = "pixels": the FracTAL's channel similarity, eq. 11, and the
// loss) or over the channels of each pixel (over = "channels": its spatial similarity, eq. 12).
//
// Why it exists (BENCHMARKS.md): composed from MXNet operators the sums take ten passes over memory
// forward and keep five full-size intermediates (1 - p, 1 - l, p - l, the per-pixel products) alive for
// the backward pass. Here the forward reads p and l once (sums accumulated in double) and the backward
// reads them once more and writes both gradients:
//
//   d p = g_inner l - g_inner_c (1 - l) + 2 g_dist (p - l)
//   d l = g_inner p - g_inner_c (1 - p) - 2 g_dist (p - l)
//
// Operator mantis_tanimoto_terms(p, l; over) -> (inner, inner_c, dist): p and l (B, C, ...) of the same
// shape; the sums keep the reduced axes as 1 ((B, C, 1, ...) over pixels, (B, 1, ...) over channels).
#include <algorithm>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "mxnet/lib_api.h"

using mxnet::ext::MXReturnValue;
using mxnet::ext::MXTensor;
using mxnet::ext::OpResource;
using Attrs = std::unordered_map<std::string, std::string>;

namespace {

// pixels summed per block and thread when summing over the channels (3 double accumulators each)
constexpr int64_t kBlock = 512;

struct Layout {
  int64_t batch, channels, pixels;
};

Layout layout_of(const std::vector<int64_t>& shape) {
  Layout l{shape[0], shape[1], 1};
  for (size_t i = 2; i < shape.size(); ++i) l.pixels *= shape[i];
  return l;
}

bool over_pixels(const Attrs& attrs) { return attrs.at("over") == "pixels"; }

MXReturnValue parse_attrs(const Attrs& attrs, int* num_in, int* num_out) {
  const auto over = attrs.find("over");
  if (over == attrs.end() || (over->second != "pixels" && over->second != "channels")) {
    MX_ERROR_MSG << "mantis_tanimoto_terms: attribute over must be 'pixels' or 'channels'";
    return mxnet::ext::MX_FAIL;
  }
  *num_in = 2;
  *num_out = 3;
  return mxnet::ext::MX_SUCCESS;
}

MXReturnValue infer_type(const Attrs&, std::vector<int>* in_types, std::vector<int>* out_types) {
  if (in_types->at(0) != mxnet::ext::kFloat32 || in_types->at(1) != mxnet::ext::kFloat32) {
    MX_ERROR_MSG << "mantis_tanimoto_terms supports float32 only";
    return mxnet::ext::MX_FAIL;
  }
  out_types->assign(3, mxnet::ext::kFloat32);
  return mxnet::ext::MX_SUCCESS;
}

MXReturnValue infer_shape(const Attrs& attrs, std::vector<std::vector<unsigned int>>* in_shapes,
                          std::vector<std::vector<unsigned int>>* out_shapes) {
  const std::vector<unsigned int>& shape = in_shapes->at(0);
  if (shape.size() < 2 || shape != in_shapes->at(1)) {
    MX_ERROR_MSG << "mantis_tanimoto_terms: p and l need the same shape (B, C, ...)";
    return mxnet::ext::MX_FAIL;
  }
  std::vector<unsigned int> sums = shape;
  if (over_pixels(attrs)) {
    std::fill(sums.begin() + 2, sums.end(), 1u);
  } else {
    sums[1] = 1;
  }
  out_shapes->assign(3, sums);
  return mxnet::ext::MX_SUCCESS;
}

// sums over the pixels of each (sample, channel) row
void forward_over_pixels(const Layout& l, const float* p, const float* t, float* inner, float* inner_c,
                         float* dist) {
  const int64_t rows = l.batch * l.channels, n = l.pixels;
#pragma omp parallel for
  for (int64_t r = 0; r < rows; ++r) {
    const float* pr = p + r * n;
    const float* tr = t + r * n;
    double s = 0.0, sc = 0.0, sd = 0.0;
#pragma omp simd reduction(+ : s, sc, sd)
    for (int64_t i = 0; i < n; ++i) {
      const float d = pr[i] - tr[i];
      s += pr[i] * tr[i];
      sc += (1.f - pr[i]) * (1.f - tr[i]);
      sd += d * d;
    }
    inner[r] = static_cast<float>(s);
    inner_c[r] = static_cast<float>(sc);
    dist[r] = static_cast<float>(sd);
  }
}

// sums over the channels of each (sample, pixel), a block of pixels per thread at a time
void forward_over_channels(const Layout& l, const float* p, const float* t, float* inner, float* inner_c,
                           float* dist) {
  const int64_t blocks = (l.pixels + kBlock - 1) / kBlock;
#pragma omp parallel for
  for (int64_t job = 0; job < l.batch * blocks; ++job) {
    const int64_t b = job / blocks, begin = (job % blocks) * kBlock;
    const int64_t size = std::min(kBlock, l.pixels - begin);
    double s[kBlock] = {}, sc[kBlock] = {}, sd[kBlock] = {};
    for (int64_t c = 0; c < l.channels; ++c) {
      const int64_t offset = (b * l.channels + c) * l.pixels + begin;
      const float* pr = p + offset;
      const float* tr = t + offset;
#pragma omp simd
      for (int64_t i = 0; i < size; ++i) {
        const float d = pr[i] - tr[i];
        s[i] += pr[i] * tr[i];
        sc[i] += (1.f - pr[i]) * (1.f - tr[i]);
        sd[i] += d * d;
      }
    }
    const int64_t out = b * l.pixels + begin;
    for (int64_t i = 0; i < size; ++i) {
      inner[out + i] = static_cast<float>(s[i]);
      inner_c[out + i] = static_cast<float>(sc[i]);
      dist[out + i] = static_cast<float>(sd[i]);
    }
  }
}

MXReturnValue forward(const Attrs& attrs, std::vector<MXTensor>* inputs, std::vector<MXTensor>* outputs,
                      const OpResource&) {
  const Layout l = layout_of(inputs->at(0).shape);
  const float* p = inputs->at(0).data<float>();
  const float* t = inputs->at(1).data<float>();
  float* sums[3] = {outputs->at(0).data<float>(), outputs->at(1).data<float>(), outputs->at(2).data<float>()};
  (over_pixels(attrs) ? forward_over_pixels : forward_over_channels)(l, p, t, sums[0], sums[1], sums[2]);
  return mxnet::ext::MX_SUCCESS;
}

// The gradients of one (sample, channel) row of n pixels from the sums' gradients g (already offset
// to the row's entries): the same triple for every pixel (Stride 0, sums over pixels) or one per pixel
// (Stride 1, sums over channels). dp or dt is null when its input needs no gradient.
template <int64_t Stride>
void backward_row(const float* g_inner, const float* g_inner_c, const float* g_dist, const float* p,
                  const float* t, float* dp, float* dt, int64_t n) {
  if (dp) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
      const int64_t k = Stride * i;
      dp[i] = g_inner[k] * t[i] - g_inner_c[k] * (1.f - t[i]) + 2.f * g_dist[k] * (p[i] - t[i]);
    }
  }
  if (dt) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
      const int64_t k = Stride * i;
      dt[i] = g_inner[k] * p[i] - g_inner_c[k] * (1.f - p[i]) - 2.f * g_dist[k] * (p[i] - t[i]);
    }
  }
}

// inputs: d(inner), d(inner_c), d(dist), p, l, inner, inner_c, dist; outputs: d(p), d(l)
MXReturnValue backward(const Attrs& attrs, std::vector<MXTensor>* inputs, std::vector<MXTensor>* outputs,
                       const OpResource&) {
  const Layout l = layout_of(inputs->at(3).shape);
  const float* g[3] = {inputs->at(0).data<float>(), inputs->at(1).data<float>(), inputs->at(2).data<float>()};
  const float* p = inputs->at(3).data<float>();
  const float* t = inputs->at(4).data<float>();
  float* dp = outputs->at(0).data<float>();
  float* dt = outputs->at(1).data<float>();
  const bool pixels = over_pixels(attrs);
  const int64_t rows = l.batch * l.channels, n = l.pixels;
#pragma omp parallel for
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t k = pixels ? r : (r / l.channels) * n;  // the row's first entry of the sums
    float* dpr = dp ? dp + r * n : nullptr;
    float* dtr = dt ? dt + r * n : nullptr;
    (pixels ? backward_row<0> : backward_row<1>)(g[0] + k, g[1] + k, g[2] + k, p + r * n, t + r * n, dpr, dtr, n);
  }
  return mxnet::ext::MX_SUCCESS;
}

}  // namespace

REGISTER_OP(mantis_tanimoto_terms)
    .setParseAttrs(parse_attrs)
    .setInferType(infer_type)
    .setInferShape(infer_shape)
    .setForward(forward, "cpu")
    .setBackward(backward, "cpu");
