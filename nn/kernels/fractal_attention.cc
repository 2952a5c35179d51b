// The FracTAL's memory-bound arithmetic (paper Sections 5.1-5.2, eqs 5, 7, 11-16, Listings 1-3) as three
// operators of mantis's MXNet 1.9 custom-operator library (lib_api.h), CPU, float32, forward and
// backward. Composed from MXNet operators it took many passes over memory and kept full-size
// intermediates alive for the backward pass (BENCHMARKS.md); here each operator reads its inputs once
// forward (sums accumulated in double) and keeps nothing but its inputs.
//
// mantis_tanimoto_terms(p, l; over) -> (inner, inner_c, dist): the three sums of the fractal Tanimoto
//
//   inner = sum p l,   inner_c = sum (1 - p)(1 - l),   dist = sum (p - l)^2
//
// over the pixels of each channel (over = "pixels": the channel similarity, eq. 11, and the loss) or over
// the channels of each pixel (over = "channels": the spatial similarity, eq. 12); p and l (B, C, ...) of
// one shape, the sums keep the reduced axes as 1. Backward:
//
//   d p = g_inner l - g_inner_c (1 - l) + 2 g_dist (p - l)
//   d l = g_inner p - g_inner_c (1 - p) - 2 g_dist (p - l)
//
// mantis_attention_weighting(chan, spat, v) -> out: eq. 13's average of the channel-weighted and the
// spatially weighted values, out = 0.5 (chan + spat) v, with chan (B, C, 1, ...), spat (B, 1, ...) and
// v (B, C, ...). Backward: d v = 0.5 (chan + spat) g, d chan = 0.5 sum_pixels g v,
// d spat = 0.5 sum_channels g v.
//
// mantis_scale_by_attention(att, gamma, x) -> out: the attention fusion of eqs 14-16,
// out = x (1 + gamma att), with gamma of shape (1,) and att, x (B, C, ...). Backward:
// d x = g (1 + gamma att), d att = gamma g x, d gamma = sum g x att.
#include <algorithm>
#include <array>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "mxnet/lib_api.h"

using mxnet::ext::MXReturnValue;
using mxnet::ext::MXTensor;
using mxnet::ext::OpResource;
using Attrs = std::unordered_map<std::string, std::string>;
using Shape = std::vector<unsigned int>;

namespace {

// pixels summed per block and thread when summing over the channels (K double accumulators each)
constexpr int64_t kBlock = 256;

// a (B, C, ...) tensor as B C rows of `pixels` elements
struct Layout {
  int64_t batch, channels, pixels;
  int64_t rows() const { return batch * channels; }
};

Layout layout_of(const std::vector<int64_t>& shape) {
  Layout l{shape[0], shape[1], 1};
  for (size_t i = 2; i < shape.size(); ++i) l.pixels *= shape[i];
  return l;
}

Shape over_pixels_shape(Shape shape) {  // (B, C, 1, ...)
  std::fill(shape.begin() + 2, shape.end(), 1u);
  return shape;
}

Shape over_channels_shape(Shape shape) {  // (B, 1, ...)
  shape[1] = 1;
  return shape;
}

bool all_float32(const std::vector<int>& types, const char* op) {
  for (int type : types) {
    if (type != mxnet::ext::kFloat32) {
      MX_ERROR_MSG << op << " supports float32 only";
      return false;
    }
  }
  return true;
}

// out[k][r] = sum over the pixels of row r of terms(element)[k], in double, one row per thread;
// terms maps an element's index to std::array<float, K>
template <int K, typename Terms>
void sum_over_pixels(const Layout& l, float* const (&out)[K], Terms terms) {
#pragma omp parallel for
  for (int64_t r = 0; r < l.rows(); ++r) {
    double acc[K] = {};
#pragma omp simd reduction(+ : acc[:K])
    for (int64_t e = r * l.pixels; e < (r + 1) * l.pixels; ++e) {
      const std::array<float, K> t = terms(e);
#pragma GCC unroll 4
      for (int k = 0; k < K; ++k) acc[k] += t[k];
    }
    for (int k = 0; k < K; ++k) out[k][r] = static_cast<float>(acc[k]);
  }
}

// out[k][b, i] = sum over the channels of terms(element (b, c, i))[k], in double; a block of pixels of one
// sample per thread at a time, channels in the outer loop (rows are read along memory)
template <int K, typename Terms>
void sum_over_channels(const Layout& l, float* const (&out)[K], Terms terms) {
  const int64_t blocks = (l.pixels + kBlock - 1) / kBlock;
#pragma omp parallel for
  for (int64_t job = 0; job < l.batch * blocks; ++job) {
    const int64_t b = job / blocks, begin = (job % blocks) * kBlock;
    const int64_t size = std::min(kBlock, l.pixels - begin);
    double acc[K * kBlock] = {};
    for (int64_t c = 0; c < l.channels; ++c) {
      const int64_t first = (b * l.channels + c) * l.pixels + begin;
#pragma omp simd
      for (int64_t i = 0; i < size; ++i) {
        const std::array<float, K> t = terms(first + i);
#pragma GCC unroll 4
        for (int k = 0; k < K; ++k) acc[k * kBlock + i] += t[k];
      }
    }
    for (int k = 0; k < K; ++k) {
      for (int64_t i = 0; i < size; ++i) out[k][b * l.pixels + begin + i] = static_cast<float>(acc[k * kBlock + i]);
    }
  }
}

// f(e, r, s) for every element e of row r, s its pixel's index in per-pixel (B, pixels) arrays
template <typename F>
void for_each_element(const Layout& l, F f) {
#pragma omp parallel for
  for (int64_t r = 0; r < l.rows(); ++r) {
    const int64_t first = r * l.pixels, sample_first = (r / l.channels) * l.pixels;
#pragma omp simd
    for (int64_t i = 0; i < l.pixels; ++i) f(first + i, r, sample_first + i);
  }
}

// ------------------------------------------------------------------ mantis_tanimoto_terms(p, l; over)

bool terms_over_pixels(const Attrs& attrs) { return attrs.at("over") == "pixels"; }

MXReturnValue terms_parse_attrs(const Attrs& attrs, int* num_in, int* num_out) {
  const auto over = attrs.find("over");
  if (over == attrs.end() || (over->second != "pixels" && over->second != "channels")) {
    MX_ERROR_MSG << "mantis_tanimoto_terms: attribute over must be 'pixels' or 'channels'";
    return mxnet::ext::MX_FAIL;
  }
  *num_in = 2;
  *num_out = 3;
  return mxnet::ext::MX_SUCCESS;
}

MXReturnValue terms_infer_type(const Attrs&, std::vector<int>* in_types, std::vector<int>* out_types) {
  if (!all_float32(*in_types, "mantis_tanimoto_terms")) return mxnet::ext::MX_FAIL;
  out_types->assign(3, mxnet::ext::kFloat32);
  return mxnet::ext::MX_SUCCESS;
}

MXReturnValue terms_infer_shape(const Attrs& attrs, std::vector<Shape>* in_shapes, std::vector<Shape>* out_shapes) {
  const Shape& shape = in_shapes->at(0);
  if (shape.size() < 2 || shape != in_shapes->at(1)) {
    MX_ERROR_MSG << "mantis_tanimoto_terms: p and l need the same shape (B, C, ...)";
    return mxnet::ext::MX_FAIL;
  }
  out_shapes->assign(3, terms_over_pixels(attrs) ? over_pixels_shape(shape) : over_channels_shape(shape));
  return mxnet::ext::MX_SUCCESS;
}

MXReturnValue terms_forward(const Attrs& attrs, std::vector<MXTensor>* inputs, std::vector<MXTensor>* outputs,
                            const OpResource&) {
  const Layout l = layout_of(inputs->at(0).shape);
  const float* p = inputs->at(0).data<float>();
  const float* t = inputs->at(1).data<float>();
  float* const sums[3] = {outputs->at(0).data<float>(), outputs->at(1).data<float>(), outputs->at(2).data<float>()};
  const auto terms = [p, t](int64_t e) {
    const float d = p[e] - t[e];
    return std::array<float, 3>{p[e] * t[e], (1.f - p[e]) * (1.f - t[e]), d * d};
  };
  if (terms_over_pixels(attrs)) {
    sum_over_pixels<3>(l, sums, terms);
  } else {
    sum_over_channels<3>(l, sums, terms);
  }
  return mxnet::ext::MX_SUCCESS;
}

// d p and d l (either null when its input needs no gradient: the loss's labels) from the sums'
// gradients, read at index(r, s) for element (row r, pixel s)
template <typename Index>
void terms_gradients(const Layout& l, Index index, const float* gi, const float* gc, const float* gd, const float* p,
                     const float* t, float* dp, float* dt) {
  if (dp) {
    for_each_element(l, [=](int64_t e, int64_t r, int64_t s) {
      const int64_t k = index(r, s);
      dp[e] = gi[k] * t[e] - gc[k] * (1.f - t[e]) + 2.f * gd[k] * (p[e] - t[e]);
    });
  }
  if (dt) {
    for_each_element(l, [=](int64_t e, int64_t r, int64_t s) {
      const int64_t k = index(r, s);
      dt[e] = gi[k] * p[e] - gc[k] * (1.f - p[e]) - 2.f * gd[k] * (p[e] - t[e]);
    });
  }
}

// inputs: d(inner), d(inner_c), d(dist), p, l, inner, inner_c, dist; outputs: d(p), d(l)
MXReturnValue terms_backward(const Attrs& attrs, std::vector<MXTensor>* inputs, std::vector<MXTensor>* outputs,
                             const OpResource&) {
  const Layout l = layout_of(inputs->at(3).shape);
  const float* g[3] = {inputs->at(0).data<float>(), inputs->at(1).data<float>(), inputs->at(2).data<float>()};
  const float* p = inputs->at(3).data<float>();
  const float* t = inputs->at(4).data<float>();
  float* dp = outputs->at(0).data<float>();
  float* dt = outputs->at(1).data<float>();
  if (terms_over_pixels(attrs)) {
    terms_gradients(l, [](int64_t r, int64_t) { return r; }, g[0], g[1], g[2], p, t, dp, dt);
  } else {
    terms_gradients(l, [](int64_t, int64_t s) { return s; }, g[0], g[1], g[2], p, t, dp, dt);
  }
  return mxnet::ext::MX_SUCCESS;
}

// ------------------------------------------------------------------ mantis_attention_weighting(chan, spat, v)

// attributes and types of the two operators with three float32 inputs and one output
MXReturnValue three_inputs_one_output(const Attrs&, int* num_in, int* num_out) {
  *num_in = 3;
  *num_out = 1;
  return mxnet::ext::MX_SUCCESS;
}

MXReturnValue one_float32_output(const Attrs&, std::vector<int>* in_types, std::vector<int>* out_types) {
  if (!all_float32(*in_types, "mantis_attention_weighting / mantis_scale_by_attention")) return mxnet::ext::MX_FAIL;
  out_types->assign(1, mxnet::ext::kFloat32);
  return mxnet::ext::MX_SUCCESS;
}

MXReturnValue weighting_infer_shape(const Attrs&, std::vector<Shape>* in_shapes, std::vector<Shape>* out_shapes) {
  const Shape& v = in_shapes->at(2);
  if (v.size() < 2 || in_shapes->at(0) != over_pixels_shape(v) || in_shapes->at(1) != over_channels_shape(v)) {
    MX_ERROR_MSG << "mantis_attention_weighting: needs chan (B, C, 1, ...), spat (B, 1, ...) and v (B, C, ...)";
    return mxnet::ext::MX_FAIL;
  }
  out_shapes->assign({v});
  return mxnet::ext::MX_SUCCESS;
}

MXReturnValue weighting_forward(const Attrs&, std::vector<MXTensor>* inputs, std::vector<MXTensor>* outputs,
                                const OpResource&) {
  const Layout l = layout_of(inputs->at(2).shape);
  const float* chan = inputs->at(0).data<float>();
  const float* spat = inputs->at(1).data<float>();
  const float* v = inputs->at(2).data<float>();
  float* out = outputs->at(0).data<float>();
  for_each_element(l, [=](int64_t e, int64_t r, int64_t s) { out[e] = 0.5f * (chan[r] + spat[s]) * v[e]; });
  return mxnet::ext::MX_SUCCESS;
}

// inputs: d(out), chan, spat, v, out; outputs: d(chan), d(spat), d(v)
MXReturnValue weighting_backward(const Attrs&, std::vector<MXTensor>* inputs, std::vector<MXTensor>* outputs,
                                 const OpResource&) {
  const Layout l = layout_of(inputs->at(3).shape);
  const float* g = inputs->at(0).data<float>();
  const float* chan = inputs->at(1).data<float>();
  const float* spat = inputs->at(2).data<float>();
  const float* v = inputs->at(3).data<float>();
  float* const dchan[1] = {outputs->at(0).data<float>()};
  float* const dspat[1] = {outputs->at(1).data<float>()};
  float* dv = outputs->at(2).data<float>();
  const auto half_gv = [g, v](int64_t e) { return std::array<float, 1>{0.5f * g[e] * v[e]}; };
  if (dchan[0]) sum_over_pixels<1>(l, dchan, half_gv);
  if (dspat[0]) sum_over_channels<1>(l, dspat, half_gv);
  if (dv) {
    for_each_element(l, [=](int64_t e, int64_t r, int64_t s) { dv[e] = 0.5f * (chan[r] + spat[s]) * g[e]; });
  }
  return mxnet::ext::MX_SUCCESS;
}

// ------------------------------------------------------------------ mantis_scale_by_attention(att, gamma, x)

MXReturnValue scaling_infer_shape(const Attrs&, std::vector<Shape>* in_shapes, std::vector<Shape>* out_shapes) {
  const Shape& x = in_shapes->at(2);
  if (x.size() < 2 || in_shapes->at(1) != Shape{1} || in_shapes->at(0) != x) {
    MX_ERROR_MSG << "mantis_scale_by_attention: needs att (B, C, ...), gamma (1,) and x of att's shape";
    return mxnet::ext::MX_FAIL;
  }
  out_shapes->assign({x});
  return mxnet::ext::MX_SUCCESS;
}

MXReturnValue scaling_forward(const Attrs&, std::vector<MXTensor>* inputs, std::vector<MXTensor>* outputs,
                              const OpResource&) {
  const Layout l = layout_of(inputs->at(0).shape);
  const float* att = inputs->at(0).data<float>();
  const float gamma = inputs->at(1).data<float>()[0];
  const float* x = inputs->at(2).data<float>();
  float* out = outputs->at(0).data<float>();
  for_each_element(l, [=](int64_t e, int64_t, int64_t) { out[e] = x[e] * (1.f + gamma * att[e]); });
  return mxnet::ext::MX_SUCCESS;
}

// inputs: d(out), att, gamma, x, out; outputs: d(att), d(gamma), d(x)
MXReturnValue scaling_backward(const Attrs&, std::vector<MXTensor>* inputs, std::vector<MXTensor>* outputs,
                               const OpResource&) {
  const Layout l = layout_of(inputs->at(1).shape);
  const float* g = inputs->at(0).data<float>();
  const float* att = inputs->at(1).data<float>();
  const float gamma = inputs->at(2).data<float>()[0];
  const float* x = inputs->at(3).data<float>();
  float* datt = outputs->at(0).data<float>();
  float* dgamma = outputs->at(1).data<float>();
  float* dx = outputs->at(2).data<float>();
  if (dx) for_each_element(l, [=](int64_t e, int64_t, int64_t) { dx[e] = g[e] * (1.f + gamma * att[e]); });
  if (datt) for_each_element(l, [=](int64_t e, int64_t, int64_t) { datt[e] = gamma * g[e] * x[e]; });
  if (dgamma) {
    std::vector<float> per_row(l.rows());
    float* const rows[1] = {per_row.data()};
    sum_over_pixels<1>(l, rows, [=](int64_t e) { return std::array<float, 1>{g[e] * x[e] * att[e]}; });
    double total = 0.0;
    for (float v : per_row) total += v;
    dgamma[0] = static_cast<float>(total);
  }
  return mxnet::ext::MX_SUCCESS;
}

}  // namespace

REGISTER_OP(mantis_tanimoto_terms)
    .setParseAttrs(terms_parse_attrs)
    .setInferType(terms_infer_type)
    .setInferShape(terms_infer_shape)
    .setForward(terms_forward, "cpu")
    .setBackward(terms_backward, "cpu");

REGISTER_OP(mantis_attention_weighting)
    .setParseAttrs(three_inputs_one_output)
    .setInferType(one_float32_output)
    .setInferShape(weighting_infer_shape)
    .setForward(weighting_forward, "cpu")
    .setBackward(weighting_backward, "cpu");

REGISTER_OP(mantis_scale_by_attention)
    .setParseAttrs(three_inputs_one_output)
    .setInferType(one_float32_output)
    .setInferShape(scaling_infer_shape)
    .setForward(scaling_forward, "cpu")
    .setBackward(scaling_backward, "cpu");
