// Bilinear x2 resize of the last two axes with aligned corners (the paper's E operation, Listings 6-7),
// forward and backward, as an operator of mantis's MXNet 1.9 custom-operator library (lib_api.h), CPU,
// float32. The same interpolation as MXNet's BilinearResize2D(scale_height=2, scale_width=2) (its default
// align_corners=True): output index i of an axis of n inputs samples position s = i (n - 1) / (2n - 1),
// between inputs floor(s) and floor(s) + 1 with weights 1 - frac(s) and frac(s).
//
// Why it exists (BENCHMARKS.md): MXNet's own operator has a pathologically slow backward with 2 OpenMP
// threads, and its replacement by products with dense (n, 2n) interpolation matrices costs 2 x 2n
// multiply-adds per output element (19 GFLOP per CEECNet D6nf32 forward) where 4 are needed. Here
// every output element reads 4 inputs (forward) and every output gradient is added to 4 input
// gradients (backward, one plane per thread, so no two threads write the same element).
//
// Operator mantis_upsample2x(data) -> out: data (..., H, W), out (..., 2H, 2W).
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

// Where output i of an axis of n inputs samples: inputs `low` and `low + step`, weights 1 - w and w
// (BilinearResize2D's own arithmetic: scale (n - 1) / (2n - 1) in float, step 0 at the last input).
struct Tap {
  int64_t low, step;
  float w;
};

std::vector<Tap> taps(int64_t n) {
  std::vector<Tap> out(2 * n);
  const float scale = n > 1 ? static_cast<float>(n - 1) / static_cast<float>(2 * n - 1) : 0.f;
  for (int64_t i = 0; i < 2 * n; ++i) {
    const float s = scale * static_cast<float>(i);
    const int64_t low = static_cast<int64_t>(s);
    out[i] = {low, low < n - 1 ? 1 : 0, s - static_cast<float>(low)};
  }
  return out;
}

struct Planes {
  int64_t count, h, w;
};

Planes planes_of(const std::vector<int64_t>& shape) {
  Planes p{1, shape[shape.size() - 2], shape[shape.size() - 1]};
  for (size_t i = 0; i + 2 < shape.size(); ++i) p.count *= shape[i];
  return p;
}

MXReturnValue parse_attrs(const Attrs&, int* num_in, int* num_out) {
  *num_in = 1;
  *num_out = 1;
  return mxnet::ext::MX_SUCCESS;
}

MXReturnValue infer_type(const Attrs&, std::vector<int>* in_types, std::vector<int>* out_types) {
  if (in_types->at(0) != mxnet::ext::kFloat32) {
    MX_ERROR_MSG << "mantis_upsample2x supports float32 only";
    return mxnet::ext::MX_FAIL;
  }
  out_types->assign(1, mxnet::ext::kFloat32);
  return mxnet::ext::MX_SUCCESS;
}

MXReturnValue infer_shape(const Attrs&, std::vector<std::vector<unsigned int>>* in_shapes,
                          std::vector<std::vector<unsigned int>>* out_shapes) {
  std::vector<unsigned int> shape = in_shapes->at(0);
  if (shape.size() < 2) {
    MX_ERROR_MSG << "mantis_upsample2x: data needs at least 2 axes (..., H, W)";
    return mxnet::ext::MX_FAIL;
  }
  shape[shape.size() - 2] *= 2;
  shape[shape.size() - 1] *= 2;
  out_shapes->assign({shape});
  return mxnet::ext::MX_SUCCESS;
}

MXReturnValue forward(const Attrs&, std::vector<MXTensor>* inputs, std::vector<MXTensor>* outputs,
                      const OpResource&) {
  const Planes p = planes_of(inputs->at(0).shape);
  const std::vector<Tap> rows = taps(p.h), cols = taps(p.w);
  const float* x = inputs->at(0).data<float>();
  float* y = outputs->at(0).data<float>();
  const int64_t out_w = 2 * p.w;
#pragma omp parallel for collapse(2)
  for (int64_t plane = 0; plane < p.count; ++plane) {
    for (int64_t i = 0; i < 2 * p.h; ++i) {
      const Tap r = rows[i];
      const float* top = x + (plane * p.h + r.low) * p.w;
      const float* bottom = top + r.step * p.w;
      float* out = y + (plane * 2 * p.h + i) * out_w;
      for (int64_t j = 0; j < out_w; ++j) {
        const Tap c = cols[j];
        const float upper = (1.f - c.w) * top[c.low] + c.w * top[c.low + c.step];
        const float lower = (1.f - c.w) * bottom[c.low] + c.w * bottom[c.low + c.step];
        out[j] = (1.f - r.w) * upper + r.w * lower;
      }
    }
  }
  return mxnet::ext::MX_SUCCESS;
}

// inputs: d(out), data, out; outputs: d(data). d(data) is the transposed interpolation of d(out):
// each output row's gradient is first folded onto a row of W inputs, then added to its two input rows.
MXReturnValue backward(const Attrs&, std::vector<MXTensor>* inputs, std::vector<MXTensor>* outputs,
                       const OpResource&) {
  float* dx = outputs->at(0).data<float>();
  if (!dx) return mxnet::ext::MX_SUCCESS;
  const Planes p = planes_of(inputs->at(1).shape);
  const std::vector<Tap> rows = taps(p.h), cols = taps(p.w);
  const float* dy = inputs->at(0).data<float>();
  const int64_t out_w = 2 * p.w;
#pragma omp parallel
  {
    std::vector<float> folded(p.w);
#pragma omp for
    for (int64_t plane = 0; plane < p.count; ++plane) {
      float* d = dx + plane * p.h * p.w;
      std::fill(d, d + p.h * p.w, 0.f);
      for (int64_t i = 0; i < 2 * p.h; ++i) {
        const float* g = dy + (plane * 2 * p.h + i) * out_w;
        std::fill(folded.begin(), folded.end(), 0.f);
        for (int64_t j = 0; j < out_w; ++j) {
          const Tap c = cols[j];
          folded[c.low] += (1.f - c.w) * g[j];
          folded[c.low + c.step] += c.w * g[j];
        }
        const Tap r = rows[i];
        float* top = d + r.low * p.w;
        float* bottom = top + r.step * p.w;
        for (int64_t k = 0; k < p.w; ++k) {
          top[k] += (1.f - r.w) * folded[k];
          bottom[k] += r.w * folded[k];
        }
      }
    }
  }
  return mxnet::ext::MX_SUCCESS;
}

}  // namespace

REGISTER_OP(mantis_upsample2x)
    .setParseAttrs(parse_attrs)
    .setInferType(infer_type)
    .setInferShape(infer_shape)
    .setForward(forward, "cpu")
    .setBackward(backward, "cpu");
