// TensorFlow custom ops ReconTfRasterize and ReconTfRasterizeGrad.
//
// ReconTfRasterize(clip_vertices[B,V,4] float32, triangles[T,3] int32;
//                  attrs height, width)
//   -> triangle_ids[B,H,W] int32 (-1 = background),
//      barycentrics[B,H,W,3] float32 (perspective-correct, 0 on background),
//      z_ndc[B,H,W] float32 (NDC z/w of the nearest fragment, 1 on background).
// ReconTfRasterizeGrad(clip_vertices, triangles, triangle_ids,
//                      grad_barycentrics[B,H,W,3], grad_z_ndc[B,H,W])
//   -> grad_clip_vertices[B,V,4] float32.
//
// Conventions are documented in rasterize_common.h and rasterizer.py.
// The CPU kernels split the work over TensorFlow's intra-op thread pool:
// vertices are projected once per image, then each (image, band of rows)
// unit loops over all triangles with bounding-box rejection, rasterizes with
// a z-buffer and finally computes barycentrics and z_ndc for its pixels in
// double precision. The gradient visits covered pixels only and accumulates
// in double precision, per image (or per band with a final reduction when
// the batch is smaller than the thread pool).
//
// Compiled with -DGOOGLE_CUDA=1 this file also registers the GPU kernels,
// whose CUDA code lives in rasterize_op_gpu.cu.cc.

#if GOOGLE_CUDA
#define EIGEN_USE_GPU
#endif

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#include "rasterize_common.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/framework/tensor_shape.h"
#include "tensorflow/core/platform/threadpool.h"

#if GOOGLE_CUDA
#include "unsupported/Eigen/CXX11/Tensor"
#endif

namespace recon_tf {
namespace raster {

using ::tensorflow::DEVICE_CPU;
using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Status;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;
using ::tensorflow::shape_inference::DimensionHandle;
using ::tensorflow::shape_inference::InferenceContext;
using ::tensorflow::shape_inference::ShapeHandle;

namespace errors = ::tensorflow::errors;

REGISTER_OP("ReconTfRasterize")
    .Input("clip_vertices: float")
    .Input("triangles: int32")
    .Attr("height: int >= 1")
    .Attr("width: int >= 1")
    .Output("triangle_ids: int32")
    .Output("barycentrics: float")
    .Output("z_ndc: float")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle clip;
      ShapeHandle tris;
      DimensionHandle unused;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 3, &clip));
      TF_RETURN_IF_ERROR(c->WithValue(c->Dim(clip, 2), 4, &unused));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 2, &tris));
      TF_RETURN_IF_ERROR(c->WithValue(c->Dim(tris, 1), 3, &unused));
      int64_t height = 0;
      int64_t width = 0;
      TF_RETURN_IF_ERROR(c->GetAttr("height", &height));
      TF_RETURN_IF_ERROR(c->GetAttr("width", &width));
      const DimensionHandle batch = c->Dim(clip, 0);
      c->set_output(0, c->MakeShape({batch, height, width}));
      c->set_output(1, c->MakeShape({batch, height, width, 3}));
      c->set_output(2, c->MakeShape({batch, height, width}));
      return Status();
    })
    .Doc(R"doc(
Rasterizes triangles given in homogeneous OpenGL clip space (see
recon_tf/render/rasterizer.py for the full contract).
)doc");

REGISTER_OP("ReconTfRasterizeGrad")
    .Input("clip_vertices: float")
    .Input("triangles: int32")
    .Input("triangle_ids: int32")
    .Input("grad_barycentrics: float")
    .Input("grad_z_ndc: float")
    .Output("grad_clip_vertices: float")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle clip;
      DimensionHandle unused;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 3, &clip));
      TF_RETURN_IF_ERROR(c->WithValue(c->Dim(clip, 2), 4, &unused));
      c->set_output(0, clip);
      return Status();
    })
    .Doc(R"doc(
Gradient of ReconTfRasterize's barycentrics and z_ndc w.r.t. clip_vertices.
)doc");

namespace {

struct Sizes {
  int64_t batch = 0;
  int64_t num_vertices = 0;
  int64_t num_triangles = 0;
};

// Checks clip_vertices [B,V,4] and triangles [T,3] and the size limits.
Status CheckGeometry(const Tensor& clip, const Tensor& tris, int64_t height, int64_t width,
                     Sizes* sizes) {
  if (clip.dims() != 3 || clip.dim_size(2) != 4) {
    return errors::InvalidArgument("clip_vertices must have shape [batch, num_vertices, 4], got ",
                                   clip.shape().DebugString());
  }
  if (tris.dims() != 2 || tris.dim_size(1) != 3) {
    return errors::InvalidArgument("triangles must have shape [num_triangles, 3], got ",
                                   tris.shape().DebugString());
  }
  if (height < 1 || width < 1 || height > kMaxImageSide || width > kMaxImageSide) {
    return errors::InvalidArgument("height and width must be in [1, ", kMaxImageSide,
                                   "], got ", height, " x ", width);
  }
  sizes->batch = clip.dim_size(0);
  sizes->num_vertices = clip.dim_size(1);
  sizes->num_triangles = tris.dim_size(0);
  if (sizes->batch * height * width > kMaxTotalPixels) {
    return errors::InvalidArgument("batch * height * width must be at most ", kMaxTotalPixels,
                                   ", got ", sizes->batch, " * ", height, " * ", width);
  }
  if (sizes->num_vertices > std::numeric_limits<int32_t>::max() ||
      sizes->num_triangles > std::numeric_limits<int32_t>::max()) {
    return errors::InvalidArgument("num_vertices and num_triangles must fit in int32");
  }
  return Status();
}

// Checks that every triangle index lies in [0, num_vertices).
Status CheckTriangleIndices(const int32_t* tris, int64_t num_triangles, int64_t num_vertices) {
  const int64_t n = num_triangles * 3;
  int64_t bad = -1;
  for (int64_t i = 0; i < n; ++i) {
    if (static_cast<uint32_t>(tris[i]) >= static_cast<uint64_t>(num_vertices)) {
      bad = i;
      break;
    }
  }
  if (bad >= 0) {
    return errors::InvalidArgument("triangles[", bad / 3, ", ", bad % 3, "] = ", tris[bad],
                                   " is not a vertex index in [0, ", num_vertices, ")");
  }
  return Status();
}

// Number of row bands per image so that batch * bands units keep all
// threads busy (bands == 1 when the batch alone does).
int NumBands(int64_t batch, int height, int num_threads) {
  if (batch >= num_threads) return 1;
  const int64_t want = (static_cast<int64_t>(num_threads) + batch - 1) / batch;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>({want, height, 64})));
}

// Rasterizes rows [row_begin, row_end) of image `b` and fills its outputs.
void RasterizeBand(const float* clip, const ScreenVertex* screen, const int32_t* tris,
                   int64_t num_triangles, int height, int width,
                   int row_begin, int row_end, int32_t* ids, float* bary, float* z_ndc) {
  const int64_t offset = static_cast<int64_t>(row_begin) * width;
  const int64_t count = static_cast<int64_t>(row_end - row_begin) * width;
  int32_t* band_ids = ids + offset;
  float* zbuf = z_ndc + offset;
  std::fill(band_ids, band_ids + count, -1);
  std::fill(zbuf, zbuf + count, std::numeric_limits<float>::infinity());

  for (int64_t t = 0; t < num_triangles; ++t) {
    const int32_t* idx = tris + 3 * t;
    const ScreenVertex v[3] = {screen[idx[0]], screen[idx[1]], screen[idx[2]]};
    TriangleRaster tr;
    if (!SetupTriangle(v, idx, row_begin, row_end, width, &tr)) continue;
    const int32_t id = static_cast<int32_t>(t);
    for (int y = tr.y_begin; y < tr.y_end; ++y) {
      const float py = static_cast<float>(y) + 0.5f;
      float* zrow = z_ndc + static_cast<int64_t>(y) * width;
      int32_t* idrow = ids + static_cast<int64_t>(y) * width;
      for (int x = tr.x_begin; x < tr.x_end; ++x) {
        float z;
        if (ShadeFragment(tr, static_cast<float>(x) + 0.5f, py, &z) && z < zrow[x]) {
          zrow[x] = z;
          idrow[x] = id;
        }
      }
    }
  }

  // Resolve: perspective-correct barycentrics and z_ndc of the winners.
  // Neighbouring pixels mostly share a triangle, so its planes are cached.
  int32_t cached = -1;
  BarycentricPlanes planes;
  for (int y = row_begin; y < row_end; ++y) {
    const double py = PixelNdcY(y, height);
    for (int x = 0; x < width; ++x) {
      const int64_t p = static_cast<int64_t>(y) * width + x;
      float* out_b = bary + 3 * p;
      const int32_t t = ids[p];
      double b[3];
      double z;
      if (t >= 0) {
        if (t != cached) {
          const int32_t* idx = tris + 3 * static_cast<int64_t>(t);
          SetupBarycentricPlanes(clip + 4 * static_cast<int64_t>(idx[0]),
                                 clip + 4 * static_cast<int64_t>(idx[1]),
                                 clip + 4 * static_cast<int64_t>(idx[2]), &planes);
          cached = t;
        }
        if (EvalBarycentrics(planes, PixelNdcX(x, width), py, b, &z)) {
          out_b[0] = static_cast<float>(b[0]);
          out_b[1] = static_cast<float>(b[1]);
          out_b[2] = static_cast<float>(b[2]);
          z_ndc[p] = static_cast<float>(z);
          continue;
        }
        ids[p] = -1;
      }
      out_b[0] = 0.0f;
      out_b[1] = 0.0f;
      out_b[2] = 0.0f;
      z_ndc[p] = 1.0f;
    }
  }
}

// Accumulates the gradient of rows [row_begin, row_end) of one image into
// accum[V*4] (double).
void AccumulateBandGradient(const float* clip, const int32_t* tris, int64_t num_triangles,
                            const int32_t* ids, const float* grad_bary, const float* grad_z_ndc,
                            int height, int width, int row_begin, int row_end, double* accum) {
  for (int y = row_begin; y < row_end; ++y) {
    const double py = PixelNdcY(y, height);
    for (int x = 0; x < width; ++x) {
      const int64_t p = static_cast<int64_t>(y) * width + x;
      const int32_t t = ids[p];
      if (t < 0 || t >= num_triangles) continue;
      const double gb[3] = {grad_bary[3 * p], grad_bary[3 * p + 1], grad_bary[3 * p + 2]};
      const double gd = grad_z_ndc[p];
      if (gb[0] == 0.0 && gb[1] == 0.0 && gb[2] == 0.0 && gd == 0.0) continue;
      const int32_t* idx = tris + 3 * static_cast<int64_t>(t);
      double g[12];
      if (!BarycentricGradient(clip + 4 * static_cast<int64_t>(idx[0]),
                               clip + 4 * static_cast<int64_t>(idx[1]),
                               clip + 4 * static_cast<int64_t>(idx[2]), PixelNdcX(x, width),
                               py, gb, gd, g)) {
        continue;
      }
      for (int k = 0; k < 3; ++k) {
        double* a = accum + 4 * static_cast<int64_t>(idx[k]);
        a[0] += g[4 * k];
        a[1] += g[4 * k + 1];
        a[2] += g[4 * k + 2];
        a[3] += g[4 * k + 3];
      }
    }
  }
}

// Attributes, input checks and output allocation shared by the CPU and GPU forward kernels.
class RasterizeOpBase : public OpKernel {
 public:
  explicit RasterizeOpBase(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("height", &height_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("width", &width_));
    OP_REQUIRES(ctx, height_ <= kMaxImageSide && width_ <= kMaxImageSide,
                errors::InvalidArgument("height and width must be at most ", kMaxImageSide,
                                        ", got ", height_, " x ", width_));
  }

 protected:
  // Validates clip_vertices / triangles, fills the sizes and allocates ids, barycentrics, z_ndc.
  Status PrepareOutputs(OpKernelContext* ctx, Sizes* s, Tensor** ids, Tensor** bary,
                        Tensor** z_ndc) const {
    TF_RETURN_IF_ERROR(CheckGeometry(ctx->input(0), ctx->input(1), height_, width_, s));
    TF_RETURN_IF_ERROR(ctx->allocate_output(0, TensorShape({s->batch, height_, width_}), ids));
    TF_RETURN_IF_ERROR(
        ctx->allocate_output(1, TensorShape({s->batch, height_, width_, 3}), bary));
    return ctx->allocate_output(2, TensorShape({s->batch, height_, width_}), z_ndc);
  }

  int64_t height_ = 0;
  int64_t width_ = 0;
};

class RasterizeCpuOp : public RasterizeOpBase {
 public:
  explicit RasterizeCpuOp(OpKernelConstruction* ctx) : RasterizeOpBase(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& clip_t = ctx->input(0);
    const Tensor& tris_t = ctx->input(1);
    Sizes s;
    Tensor* ids_t = nullptr;
    Tensor* bary_t = nullptr;
    Tensor* z_ndc_t = nullptr;
    OP_REQUIRES_OK(ctx, PrepareOutputs(ctx, &s, &ids_t, &bary_t, &z_ndc_t));
    const int32_t* tris = tris_t.flat<int32_t>().data();
    OP_REQUIRES_OK(ctx, CheckTriangleIndices(tris, s.num_triangles, s.num_vertices));
    if (s.batch == 0) return;

    Tensor screen_t;
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(tensorflow::DT_FLOAT,
                                           TensorShape({s.batch, s.num_vertices, 4}), &screen_t));
    const float* clip = clip_t.flat<float>().data();
    ScreenVertex* screen = reinterpret_cast<ScreenVertex*>(screen_t.flat<float>().data());
    int32_t* ids = ids_t->flat<int32_t>().data();
    float* bary = bary_t->flat<float>().data();
    float* z_ndc = z_ndc_t->flat<float>().data();

    const int height = static_cast<int>(height_);
    const int width = static_cast<int>(width_);
    const int64_t num_vertices = s.num_vertices;
    const int64_t num_triangles = s.num_triangles;
    auto* pool = ctx->device()->tensorflow_cpu_worker_threads()->workers;

    constexpr int64_t kVertexChunk = 8192;
    const int64_t chunks = (num_vertices + kVertexChunk - 1) / kVertexChunk;
    pool->ParallelFor(s.batch * chunks, [&](int64_t begin, int64_t end) {
      for (int64_t unit = begin; unit < end; ++unit) {
        const int64_t b = unit / chunks;
        const int64_t v_end = std::min(num_vertices, (unit % chunks + 1) * kVertexChunk);
        for (int64_t v = (unit % chunks) * kVertexChunk; v < v_end; ++v) {
          const int64_t i = b * num_vertices + v;
          screen[i] = ProjectToScreen(clip + 4 * i, height, width);
        }
      }
    });

    const int bands = NumBands(s.batch, height, pool->NumThreads());
    const int64_t image = static_cast<int64_t>(height) * width;
    pool->ParallelFor(s.batch * bands, [&](int64_t begin, int64_t end) {
      for (int64_t unit = begin; unit < end; ++unit) {
        const int64_t b = unit / bands;
        const int band = static_cast<int>(unit % bands);
        const int row_begin = static_cast<int>(static_cast<int64_t>(height) * band / bands);
        const int row_end = static_cast<int>(static_cast<int64_t>(height) * (band + 1) / bands);
        RasterizeBand(clip + b * num_vertices * 4, screen + b * num_vertices, tris,
                      num_triangles, height, width, row_begin, row_end, ids + b * image,
                      bary + 3 * b * image, z_ndc + b * image);
      }
    });
  }
};

// Checks the gradient op's per-pixel inputs against triangle_ids [B,H,W].
Status CheckGradInputs(const Tensor& clip, const Tensor& ids, const Tensor& grad_bary,
                       const Tensor& grad_z_ndc) {
  if (ids.dims() != 3 || ids.dim_size(0) != clip.dim_size(0)) {
    return errors::InvalidArgument("triangle_ids must have shape [batch, height, width], got ",
                                   ids.shape().DebugString());
  }
  TensorShape bary_shape = ids.shape();
  bary_shape.AddDim(3);
  if (grad_bary.shape() != bary_shape) {
    return errors::InvalidArgument("grad_barycentrics must have shape ", bary_shape.DebugString(),
                                   ", got ", grad_bary.shape().DebugString());
  }
  if (grad_z_ndc.shape() != ids.shape()) {
    return errors::InvalidArgument("grad_z_ndc must have shape ", ids.shape().DebugString(),
                                   ", got ", grad_z_ndc.shape().DebugString());
  }
  return Status();
}

// Validates all inputs of the gradient op (clip, triangles, ids, grad_barycentrics,
// grad_z_ndc) and fills the sizes; shared by the CPU and GPU kernels.
Status CheckGradOpInputs(OpKernelContext* ctx, Sizes* s) {
  const Tensor& ids = ctx->input(2);
  if (ids.dims() != 3) {
    return errors::InvalidArgument("triangle_ids must have shape [batch, height, width], got ",
                                   ids.shape().DebugString());
  }
  TF_RETURN_IF_ERROR(
      CheckGeometry(ctx->input(0), ctx->input(1), ids.dim_size(1), ids.dim_size(2), s));
  return CheckGradInputs(ctx->input(0), ids, ctx->input(3), ctx->input(4));
}

class RasterizeGradCpuOp : public OpKernel {
 public:
  explicit RasterizeGradCpuOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& clip_t = ctx->input(0);
    const Tensor& tris_t = ctx->input(1);
    const Tensor& ids_t = ctx->input(2);
    const Tensor& gbary_t = ctx->input(3);
    const Tensor& gz_ndc_t = ctx->input(4);
    Sizes s;
    OP_REQUIRES_OK(ctx, CheckGradOpInputs(ctx, &s));
    const int32_t* tris = tris_t.flat<int32_t>().data();
    OP_REQUIRES_OK(ctx, CheckTriangleIndices(tris, s.num_triangles, s.num_vertices));

    Tensor* grad_t = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, clip_t.shape(), &grad_t));
    float* grad = grad_t->flat<float>().data();
    const int64_t per_image = s.num_vertices * 4;
    if (s.batch == 0 || per_image == 0) {
      std::fill(grad, grad + s.batch * per_image, 0.0f);
      return;
    }

    const float* clip = clip_t.flat<float>().data();
    const int32_t* ids = ids_t.flat<int32_t>().data();
    const float* gbary = gbary_t.flat<float>().data();
    const float* gz_ndc = gz_ndc_t.flat<float>().data();
    const int height = static_cast<int>(ids_t.dim_size(1));
    const int width = static_cast<int>(ids_t.dim_size(2));
    const int64_t image = static_cast<int64_t>(height) * width;
    const int64_t num_triangles = s.num_triangles;
    auto* pool = ctx->device()->tensorflow_cpu_worker_threads()->workers;
    const int bands = NumBands(s.batch, height, pool->NumThreads());

    if (bands == 1) {
      // One unit per image; each writes only its own grad[b].
      pool->ParallelFor(s.batch, [&](int64_t begin, int64_t end) {
        std::vector<double> accum(per_image);
        for (int64_t b = begin; b < end; ++b) {
          std::fill(accum.begin(), accum.end(), 0.0);
          AccumulateBandGradient(clip + b * per_image, tris, num_triangles, ids + b * image,
                                 gbary + 3 * b * image, gz_ndc + b * image, height, width, 0,
                                 height, accum.data());
          float* out = grad + b * per_image;
          for (int64_t i = 0; i < per_image; ++i) out[i] = static_cast<float>(accum[i]);
        }
      });
      return;
    }

    // Small batch: bands of each image accumulate into separate buffers,
    // then a parallel reduction sums them.
    Tensor accum_t;
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(tensorflow::DT_DOUBLE,
                                           TensorShape({bands, per_image}), &accum_t));
    double* accum = accum_t.flat<double>().data();
    constexpr int64_t kChunk = 16384;
    const int64_t chunks = (per_image + kChunk - 1) / kChunk;
    for (int64_t b = 0; b < s.batch; ++b) {
      pool->ParallelFor(bands, [&](int64_t begin, int64_t end) {
        for (int64_t band = begin; band < end; ++band) {
          double* acc = accum + band * per_image;
          std::fill(acc, acc + per_image, 0.0);
          const int row_begin = static_cast<int>(static_cast<int64_t>(height) * band / bands);
          const int row_end = static_cast<int>(static_cast<int64_t>(height) * (band + 1) / bands);
          AccumulateBandGradient(clip + b * per_image, tris, num_triangles, ids + b * image,
                                 gbary + 3 * b * image, gz_ndc + b * image, height, width,
                                 row_begin, row_end, acc);
        }
      });
      pool->ParallelFor(chunks, [&](int64_t begin, int64_t end) {
        for (int64_t c = begin; c < end; ++c) {
          const int64_t i_end = std::min(per_image, (c + 1) * kChunk);
          float* out = grad + b * per_image;
          for (int64_t i = c * kChunk; i < i_end; ++i) {
            double sum = 0.0;
            for (int band = 0; band < bands; ++band) sum += accum[band * per_image + i];
            out[i] = static_cast<float>(sum);
          }
        }
      });
    }
  }
};

REGISTER_KERNEL_BUILDER(Name("ReconTfRasterize").Device(DEVICE_CPU), RasterizeCpuOp);
REGISTER_KERNEL_BUILDER(Name("ReconTfRasterizeGrad").Device(DEVICE_CPU), RasterizeGradCpuOp);

#if GOOGLE_CUDA

using ::tensorflow::DEVICE_GPU;

class RasterizeGpuOp : public RasterizeOpBase {
 public:
  explicit RasterizeGpuOp(OpKernelConstruction* ctx) : RasterizeOpBase(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& clip_t = ctx->input(0);
    const Tensor& tris_t = ctx->input(1);
    Sizes s;
    Tensor* ids_t = nullptr;
    Tensor* bary_t = nullptr;
    Tensor* z_ndc_t = nullptr;
    OP_REQUIRES_OK(ctx, PrepareOutputs(ctx, &s, &ids_t, &bary_t, &z_ndc_t));
    if (s.batch == 0) return;
    Tensor keys_t;
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(tensorflow::DT_INT64,
                                           TensorShape({s.batch * height_ * width_}), &keys_t));
    void* stream = ctx->eigen_device<Eigen::GpuDevice>().stream();
    const char* err = RasterizeForwardGpu(
        stream, clip_t.flat<float>().data(), tris_t.flat<int32_t>().data(), s.batch,
        s.num_vertices, s.num_triangles, static_cast<int>(height_), static_cast<int>(width_),
        reinterpret_cast<unsigned long long*>(keys_t.flat<int64_t>().data()),
        ids_t->flat<int32_t>().data(), bary_t->flat<float>().data(),
        z_ndc_t->flat<float>().data());
    OP_REQUIRES(ctx, err == nullptr,
                errors::Internal("ReconTfRasterize CUDA launch failed: ", err));
  }
};

class RasterizeGradGpuOp : public OpKernel {
 public:
  explicit RasterizeGradGpuOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& clip_t = ctx->input(0);
    const Tensor& tris_t = ctx->input(1);
    const Tensor& ids_t = ctx->input(2);
    const Tensor& gbary_t = ctx->input(3);
    const Tensor& gz_ndc_t = ctx->input(4);
    Sizes s;
    OP_REQUIRES_OK(ctx, CheckGradOpInputs(ctx, &s));
    Tensor* grad_t = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, clip_t.shape(), &grad_t));
    const int64_t n = s.batch * s.num_vertices * 4;
    if (n == 0) return;
    Tensor accum_t;
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(tensorflow::DT_DOUBLE, TensorShape({n}), &accum_t));
    void* stream = ctx->eigen_device<Eigen::GpuDevice>().stream();
    const char* err = RasterizeBackwardGpu(
        stream, clip_t.flat<float>().data(), tris_t.flat<int32_t>().data(),
        ids_t.flat<int32_t>().data(), gbary_t.flat<float>().data(), gz_ndc_t.flat<float>().data(),
        s.batch, s.num_vertices, s.num_triangles, static_cast<int>(ids_t.dim_size(1)),
        static_cast<int>(ids_t.dim_size(2)), accum_t.flat<double>().data(),
        grad_t->flat<float>().data());
    OP_REQUIRES(ctx, err == nullptr,
                errors::Internal("ReconTfRasterizeGrad CUDA launch failed: ", err));
  }
};

REGISTER_KERNEL_BUILDER(Name("ReconTfRasterize").Device(DEVICE_GPU), RasterizeGpuOp);
REGISTER_KERNEL_BUILDER(Name("ReconTfRasterizeGrad").Device(DEVICE_GPU), RasterizeGradGpuOp);

#endif  // GOOGLE_CUDA

}  // namespace
}  // namespace raster
}  // namespace recon_tf
