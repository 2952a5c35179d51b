// GroupNorm with a per-channel affine (Wu & He, 2018, eqs. 1-3) as an MXNet 1.9 custom-operator library
// (include/mxnet/lib_api.h), CPU, float32. Built by scripts/install.sh, loaded by nn/kernels/__init__.py.
//
//   y[b,c,:] = gamma[c] * (x[b,c,:] - mean[b,g]) * rstd[b,g] + beta[c],   g = c / (C / G)
//   mean, var over the C/G channels of group g and all pixels of sample b; rstd = 1 / sqrt(var + eps)
//
// Why it exists (BENCHMARKS.md): MXNet's own GroupNorm operator reaches a few hundred MB/s on
// CPU and was 40 % of a D6nf32 training step; composing the equations from MXNet operators needs ~16
// passes over memory. This kernel takes two reading passes and one writing pass forward (moments
// accumulated in double), two reading passes and one writing pass backward.
//
// Operator mantis_group_norm(data, gamma, beta; num_groups, eps) -> (out, mean, rstd); mean (shape
// (B, G, 2): the double mean as two floats, hi + lo) and rstd (shape (B, G)) are kept for the backward
// pass and are not differentiated.
#include <algorithm>
#include <cmath>
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

struct Layout {
  int64_t batch, channels, groups, per_group, pixels;
  int64_t rows() const { return batch * channels; }
  int64_t group_of(int64_t row) const { return (row / channels) * groups + (row % channels) / per_group; }
};

Layout layout_of(const Attrs& attrs, const std::vector<int64_t>& shape) {
  Layout l{shape[0], shape[1], std::stoll(attrs.at("num_groups")), 0, 1};
  l.per_group = l.channels / l.groups;
  for (size_t i = 2; i < shape.size(); ++i) l.pixels *= shape[i];
  return l;
}

// A double split into two floats, hi + lo: x - hi is exact in float32 for x within a factor 2 of hi
// (Sterbenz), so centring keeps float32 accuracy even when the mean dwarfs the spread.
struct Split {
  float hi, lo;
  explicit Split(double v) : hi(static_cast<float>(v)), lo(static_cast<float>(v - static_cast<float>(v))) {}
  Split(float hi, float lo) : hi(hi), lo(lo) {}
  double value() const { return static_cast<double>(hi) + lo; }
  float centre(float x) const { return (x - hi) - lo; }
};

// sum and sum of squares of a row, in double: the variance E[x^2] - E[x]^2 taken from them loses nothing
// that matters for float32 data (relative error ~1e-16 (mean^2 + var) / var)
void row_moments(const float* a, int64_t n, double* sum, double* squares) {
  double s = 0.0, q = 0.0;
#pragma omp simd reduction(+ : s, q)
  for (int64_t i = 0; i < n; ++i) {
    s += a[i];
    q += static_cast<double>(a[i]) * a[i];
  }
  *sum = s;
  *squares = q;
}

// per-row values summed over the channels of each group, divided by the group's element count
std::vector<double> group_means(const Layout& l, const std::vector<double>& per_row) {
  std::vector<double> out(l.batch * l.groups, 0.0);
  for (int64_t r = 0; r < l.rows(); ++r) out[l.group_of(r)] += per_row[r];
  for (double& v : out) v /= static_cast<double>(l.per_group * l.pixels);
  return out;
}

MXReturnValue parse_attrs(const Attrs& attrs, int* num_in, int* num_out) {
  if (!attrs.count("num_groups") || !attrs.count("eps")) {
    MX_ERROR_MSG << "mantis_group_norm needs the attributes num_groups and eps";
    return mxnet::ext::MX_FAIL;
  }
  *num_in = 3;
  *num_out = 3;
  return mxnet::ext::MX_SUCCESS;
}

MXReturnValue infer_type(const Attrs&, std::vector<int>* in_types, std::vector<int>* out_types) {
  for (int t : *in_types) {
    if (t != mxnet::ext::kFloat32) {
      MX_ERROR_MSG << "mantis_group_norm supports float32 only";
      return mxnet::ext::MX_FAIL;
    }
  }
  out_types->assign(3, mxnet::ext::kFloat32);
  return mxnet::ext::MX_SUCCESS;
}

MXReturnValue infer_shape(const Attrs& attrs, std::vector<std::vector<unsigned int>>* in_shapes,
                          std::vector<std::vector<unsigned int>>* out_shapes) {
  const std::vector<unsigned int>& data = in_shapes->at(0);
  const unsigned int groups = std::stoul(attrs.at("num_groups"));
  if (data.size() < 2 || groups == 0 || data[1] % groups) {
    MX_ERROR_MSG << "mantis_group_norm: data must be (batch, channels, ...) with channels divisible by num_groups";
    return mxnet::ext::MX_FAIL;
  }
  if (in_shapes->at(1) != std::vector<unsigned int>{data[1]} || in_shapes->at(2) != std::vector<unsigned int>{data[1]}) {
    MX_ERROR_MSG << "mantis_group_norm: gamma and beta must have shape (channels,)";
    return mxnet::ext::MX_FAIL;
  }
  out_shapes->assign({data, {data[0], groups, 2}, {data[0], groups}});
  return mxnet::ext::MX_SUCCESS;
}

// inputs: data, gamma, beta; outputs: out, mean, rstd
MXReturnValue forward(const Attrs& attrs, std::vector<MXTensor>* inputs, std::vector<MXTensor>* outputs,
                      const OpResource&) {
  const Layout l = layout_of(attrs, inputs->at(0).shape);
  const double eps = std::stod(attrs.at("eps"));
  const float* x = inputs->at(0).data<float>();
  const float* gamma = inputs->at(1).data<float>();
  const float* beta = inputs->at(2).data<float>();
  float* y = outputs->at(0).data<float>();
  const int64_t rows = l.rows(), n = l.pixels;

  std::vector<double> sums(rows), squares(rows);
#pragma omp parallel for
  for (int64_t r = 0; r < rows; ++r) row_moments(x + r * n, n, &sums[r], &squares[r]);
  const std::vector<double> mean = group_means(l, sums);
  const std::vector<double> mean_square = group_means(l, squares);

  std::vector<double> rstd(mean.size());
  for (size_t i = 0; i < mean.size(); ++i) {
    rstd[i] = 1.0 / std::sqrt(std::max(mean_square[i] - mean[i] * mean[i], 0.0) + eps);
    const Split m(mean[i]);
    outputs->at(1).data<float>()[2 * i] = m.hi;
    outputs->at(1).data<float>()[2 * i + 1] = m.lo;
    outputs->at(2).data<float>()[i] = static_cast<float>(rstd[i]);
  }
#pragma omp parallel for
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t g = l.group_of(r), c = r % l.channels;
    const Split m(mean[g]);
    const float scale = static_cast<float>(rstd[g] * gamma[c]);
    const float* xr = x + r * n;
    float* yr = y + r * n;
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) yr[i] = m.centre(xr[i]) * scale + beta[c];
  }
  return mxnet::ext::MX_SUCCESS;
}

// inputs: d(out), d(mean), d(rstd), data, gamma, beta, out, mean, rstd; outputs: d(data), d(gamma), d(beta).
// With xhat = (x - mean) * rstd and per-group means over the group's elements <.>:
//   d(beta)[c] = sum dy,  d(gamma)[c] = sum dy * xhat   (over batch and pixels)
//   dx = rstd * (gamma dy - <gamma dy> - xhat <gamma dy xhat>)
MXReturnValue backward(const Attrs& attrs, std::vector<MXTensor>* inputs, std::vector<MXTensor>* outputs,
                       const OpResource&) {
  const Layout l = layout_of(attrs, inputs->at(3).shape);
  const float* dy = inputs->at(0).data<float>();
  const float* x = inputs->at(3).data<float>();
  const float* gamma = inputs->at(4).data<float>();
  const float* mean = inputs->at(7).data<float>();
  const float* rstd = inputs->at(8).data<float>();
  const int64_t rows = l.rows(), n = l.pixels;

  std::vector<double> sum_dy(rows), sum_dy_xhat(rows);
#pragma omp parallel for
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t g = l.group_of(r);
    const float* dyr = dy + r * n;
    const float* xr = x + r * n;
    const double m = Split(mean[2 * g], mean[2 * g + 1]).value();
    double s1 = 0.0, s2 = 0.0;
#pragma omp simd reduction(+ : s1, s2)
    for (int64_t i = 0; i < n; ++i) {
      s1 += dyr[i];
      s2 += dyr[i] * (xr[i] - m);
    }
    sum_dy[r] = s1;
    sum_dy_xhat[r] = s2 * rstd[g];
  }

  float* dgamma = outputs->at(1).data<float>();
  float* dbeta = outputs->at(2).data<float>();
  for (int64_t c = 0; c < l.channels; ++c) {
    double sg = 0.0, sb = 0.0;
    for (int64_t b = 0; b < l.batch; ++b) {
      sg += sum_dy_xhat[b * l.channels + c];
      sb += sum_dy[b * l.channels + c];
    }
    if (dgamma) dgamma[c] = static_cast<float>(sg);
    if (dbeta) dbeta[c] = static_cast<float>(sb);
  }

  std::vector<double> weighted_dy(rows), weighted_dy_xhat(rows);
  for (int64_t r = 0; r < rows; ++r) {
    weighted_dy[r] = gamma[r % l.channels] * sum_dy[r];
    weighted_dy_xhat[r] = gamma[r % l.channels] * sum_dy_xhat[r];
  }
  const std::vector<double> mean_dy = group_means(l, weighted_dy);            // <gamma dy>
  const std::vector<double> mean_dy_xhat = group_means(l, weighted_dy_xhat);  // <gamma dy xhat>

  float* dx = outputs->at(0).data<float>();
  if (!dx) return mxnet::ext::MX_SUCCESS;
#pragma omp parallel for
  for (int64_t r = 0; r < rows; ++r) {
    // dx = a * dy + b * (x - mean) + c, the formula above expanded per row
    const int64_t g = l.group_of(r);
    const double s = rstd[g];
    const Split m(mean[2 * g], mean[2 * g + 1]);
    const float a = static_cast<float>(s * gamma[r % l.channels]);
    const float b = static_cast<float>(-s * s * mean_dy_xhat[g]);
    const float c = static_cast<float>(-s * mean_dy[g]);
    const float* dyr = dy + r * n;
    const float* xr = x + r * n;
    float* dxr = dx + r * n;
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) dxr[i] = a * dyr[i] + b * m.centre(xr[i]) + c;
  }
  return mxnet::ext::MX_SUCCESS;
}

}  // namespace

REGISTER_OP(mantis_group_norm)
    .setParseAttrs(parse_attrs)
    .setInferType(infer_type)
    .setInferShape(infer_shape)
    .setForward(forward, "cpu")
    .setBackward(backward, "cpu");

MXReturnValue initialize(int version) {
  if (version < 10900) {
    MX_ERROR_MSG << "mantis kernels need MXNet >= 1.9, found version code " << version;
    return mxnet::ext::MX_FAIL;
  }
  return mxnet::ext::MX_SUCCESS;
}
