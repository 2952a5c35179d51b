// The maxima of a grid of equal blocks of a feature map (the pooling of PSPPooling's views, paper Section
// 6.2), forward and backward, as an operator of mantis's MXNet 1.9 custom-operator library (lib_api.h),
// CPU, float32:
//
//   out[b, c, i, j] = max of x[b, c, i H/n .. (i+1) H/n - 1, j W/n .. (j+1) W/n - 1]
//
// Backward as MXNet's max reduction: every element equal to its block's maximum receives the block's
// gradient (ties share it in full), every other element none.
//
// Why it exists (BENCHMARKS.md): MXNet 1.9.1's max over axes of the (B C, n, H/n, n, W/n) view and its
// backward run generic broadcast kernels, 9 % of a FracTAL ResNet D6nf32 training step.
//
// Operator mantis_grid_max(x; cells) -> out: x (B, C, H, W) with H and W divisible by cells = n, out
// (B, C, n, n).
#include <algorithm>
#include <cstdint>
#include <limits>
#include <string>
#include <unordered_map>
#include <vector>

#include "mxnet/lib_api.h"

using mxnet::ext::MXReturnValue;
using mxnet::ext::MXTensor;
using mxnet::ext::OpResource;
using Attrs = std::unordered_map<std::string, std::string>;

namespace {

// (B C) planes of h x w, a grid of cells x cells blocks of bh x bw each
struct Grid {
  int64_t planes, h, w, cells, bh, bw;
};

Grid grid_of(const Attrs& attrs, const std::vector<int64_t>& shape) {
  const int64_t cells = std::stoll(attrs.at("cells"));
  return {shape[0] * shape[1], shape[2], shape[3], cells, shape[2] / cells, shape[3] / cells};
}

MXReturnValue parse_attrs(const Attrs& attrs, int* num_in, int* num_out) {
  const auto cells = attrs.find("cells");
  if (cells == attrs.end() || std::stoll(cells->second) < 1) {
    MX_ERROR_MSG << "mantis_grid_max: attribute cells must be an integer >= 1";
    return mxnet::ext::MX_FAIL;
  }
  *num_in = 1;
  *num_out = 1;
  return mxnet::ext::MX_SUCCESS;
}

MXReturnValue infer_type(const Attrs&, std::vector<int>* in_types, std::vector<int>* out_types) {
  if (in_types->at(0) != mxnet::ext::kFloat32) {
    MX_ERROR_MSG << "mantis_grid_max supports float32 only";
    return mxnet::ext::MX_FAIL;
  }
  out_types->assign(1, mxnet::ext::kFloat32);
  return mxnet::ext::MX_SUCCESS;
}

MXReturnValue infer_shape(const Attrs& attrs, std::vector<std::vector<unsigned int>>* in_shapes,
                          std::vector<std::vector<unsigned int>>* out_shapes) {
  const std::vector<unsigned int>& shape = in_shapes->at(0);
  const unsigned int cells = std::stoul(attrs.at("cells"));
  if (shape.size() != 4 || shape[2] % cells || shape[3] % cells) {
    MX_ERROR_MSG << "mantis_grid_max: x must be (B, C, H, W) with H and W divisible by cells = " << cells;
    return mxnet::ext::MX_FAIL;
  }
  out_shapes->assign({{shape[0], shape[1], cells, cells}});
  return mxnet::ext::MX_SUCCESS;
}

MXReturnValue forward(const Attrs& attrs, std::vector<MXTensor>* inputs, std::vector<MXTensor>* outputs,
                      const OpResource&) {
  const Grid g = grid_of(attrs, inputs->at(0).shape);
  const float* x = inputs->at(0).data<float>();
  float* out = outputs->at(0).data<float>();
#pragma omp parallel for
  for (int64_t p = 0; p < g.planes; ++p) {
    float* peaks = out + p * g.cells * g.cells;
    std::fill(peaks, peaks + g.cells * g.cells, -std::numeric_limits<float>::infinity());
    for (int64_t r = 0; r < g.h; ++r) {
      const float* row = x + (p * g.h + r) * g.w;
      float* cell_peaks = peaks + (r / g.bh) * g.cells;
      for (int64_t j = 0; j < g.cells; ++j) {
        float m = cell_peaks[j];
        for (int64_t k = j * g.bw; k < (j + 1) * g.bw; ++k) m = std::max(m, row[k]);
        cell_peaks[j] = m;
      }
    }
  }
  return mxnet::ext::MX_SUCCESS;
}

// inputs: d(out), x, out; outputs: d(x)
MXReturnValue backward(const Attrs& attrs, std::vector<MXTensor>* inputs, std::vector<MXTensor>* outputs,
                       const OpResource&) {
  float* dx = outputs->at(0).data<float>();
  if (!dx) return mxnet::ext::MX_SUCCESS;
  const Grid g = grid_of(attrs, inputs->at(1).shape);
  const float* dout = inputs->at(0).data<float>();
  const float* x = inputs->at(1).data<float>();
  const float* out = inputs->at(2).data<float>();
#pragma omp parallel for
  for (int64_t p = 0; p < g.planes; ++p) {
    for (int64_t r = 0; r < g.h; ++r) {
      const int64_t offset = (p * g.h + r) * g.w, cell_row = (p * g.cells + r / g.bh) * g.cells;
      for (int64_t k = 0; k < g.w; ++k) {
        const int64_t cell = cell_row + k / g.bw;
        dx[offset + k] = x[offset + k] == out[cell] ? dout[cell] : 0.f;
      }
    }
  }
  return mxnet::ext::MX_SUCCESS;
}

}  // namespace

REGISTER_OP(mantis_grid_max)
    .setParseAttrs(parse_attrs)
    .setInferType(infer_type)
    .setInferShape(infer_shape)
    .setForward(forward, "cpu")
    .setBackward(backward, "cpu");
