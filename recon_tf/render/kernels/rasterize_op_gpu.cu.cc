// CUDA kernels of ReconTfRasterize / ReconTfRasterizeGrad. Compiled by nvcc
// with -DGOOGLE_CUDA=1; the TensorFlow op wrappers live in rasterize_op.cc
// and call the two launchers below on the op's CUDA stream.
//
// Forward: one thread per (image, triangle) rasterizes its bounding box and
// resolves visibility with a 64-bit atomicMin on (ordered z_ndc bits << 32 |
// triangle id), so the nearest fragment wins and ties go to the lowest id,
// exactly as in the CPU kernel. A per-pixel pass then writes ids,
// perspective-correct barycentrics and z_ndc.
// Backward: one thread per pixel computes the clip-vertex gradient of its
// triangle and accumulates it with double-precision atomicAdd, then a final
// pass converts to float.
//
// Triangles with an index outside [0, num_vertices) are skipped (the CPU
// kernel reports them as an InvalidArgument error instead).

#if GOOGLE_CUDA

#include <cuda_runtime.h>

#include <cstdint>

#include "rasterize_common.h"

namespace recon_tf {
namespace raster {
namespace {

constexpr int kThreads = 256;
constexpr unsigned long long kEmptyKey = 0xFFFFFFFFFFFFFFFFull;

int NumBlocks(int64_t n) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<int>(blocks < 65535 ? (blocks > 0 ? blocks : 1) : 65535);
}

__device__ bool LoadTriangle(const int32_t* tris, int64_t t, int64_t num_vertices, int32_t* idx) {
  for (int k = 0; k < 3; ++k) {
    idx[k] = tris[3 * t + k];
    if (idx[k] < 0 || idx[k] >= num_vertices) return false;
  }
  return true;
}

__global__ void FillKeysKernel(unsigned long long* keys, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    keys[i] = kEmptyKey;
  }
}

__global__ void RasterizeTrianglesKernel(const float* clip, const int32_t* tris, int64_t batch,
                                         int64_t num_vertices, int64_t num_triangles, int height,
                                         int width, unsigned long long* keys) {
  const int64_t total = batch * num_triangles;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int64_t b = i / num_triangles;
    const int64_t t = i - b * num_triangles;
    int32_t idx[3];
    if (!LoadTriangle(tris, t, num_vertices, idx)) continue;
    const float* image_clip = clip + b * num_vertices * 4;
    ScreenVertex v[3];
    for (int k = 0; k < 3; ++k) {
      v[k] = ProjectToScreen(image_clip + 4 * static_cast<int64_t>(idx[k]), height, width);
    }
    TriangleRaster tr;
    if (!SetupTriangle(v, idx, 0, height, width, &tr)) continue;
    unsigned long long* image_keys = keys + b * static_cast<int64_t>(height) * width;
    for (int y = tr.y_begin; y < tr.y_end; ++y) {
      const float py = static_cast<float>(y) + 0.5f;
      for (int x = tr.x_begin; x < tr.x_end; ++x) {
        float z;
        if (!ShadeFragment(tr, static_cast<float>(x) + 0.5f, py, &z)) continue;
        const unsigned long long key =
            (static_cast<unsigned long long>(OrderedDepthBits(__float_as_uint(z))) << 32) |
            static_cast<unsigned long long>(static_cast<uint32_t>(t));
        unsigned long long* slot = image_keys + static_cast<int64_t>(y) * width + x;
        if (*slot > key) atomicMin(slot, key);
      }
    }
  }
}

__global__ void ResolveKernel(const unsigned long long* keys, const float* clip,
                              const int32_t* tris, int64_t batch, int64_t num_vertices,
                              int height, int width, int32_t* ids, float* bary, float* z_ndc) {
  const int64_t image = static_cast<int64_t>(height) * width;
  const int64_t total = batch * image;
  for (int64_t p = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; p < total;
       p += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const unsigned long long key = keys[p];
    int32_t t = -1;
    double b[3] = {0.0, 0.0, 0.0};
    double z = 1.0;
    if (key != kEmptyKey) {
      t = static_cast<int32_t>(key & 0xFFFFFFFFull);
      const int64_t bi = p / image;
      const int64_t pix = p - bi * image;
      const int y = static_cast<int>(pix / width);
      const int x = static_cast<int>(pix - static_cast<int64_t>(y) * width);
      const float* image_clip = clip + bi * num_vertices * 4;
      const int32_t* idx = tris + 3 * static_cast<int64_t>(t);
      if (!PerspectiveBarycentrics(image_clip + 4 * static_cast<int64_t>(idx[0]),
                                   image_clip + 4 * static_cast<int64_t>(idx[1]),
                                   image_clip + 4 * static_cast<int64_t>(idx[2]),
                                   PixelNdcX(x, width), PixelNdcY(y, height), b, &z)) {
        t = -1;
        b[0] = b[1] = b[2] = 0.0;
        z = 1.0;
      }
    }
    ids[p] = t;
    bary[3 * p] = static_cast<float>(b[0]);
    bary[3 * p + 1] = static_cast<float>(b[1]);
    bary[3 * p + 2] = static_cast<float>(b[2]);
    z_ndc[p] = static_cast<float>(z);
  }
}

__global__ void ZeroKernel(double* data, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    data[i] = 0.0;
  }
}

__global__ void GradientKernel(const float* clip, const int32_t* tris, const int32_t* ids,
                               const float* grad_bary, const float* grad_z_ndc, int64_t batch,
                               int64_t num_vertices, int64_t num_triangles, int height,
                               int width, double* accum) {
  const int64_t image = static_cast<int64_t>(height) * width;
  const int64_t total = batch * image;
  for (int64_t p = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; p < total;
       p += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int32_t t = ids[p];
    if (t < 0 || t >= num_triangles) continue;
    const double gb[3] = {grad_bary[3 * p], grad_bary[3 * p + 1], grad_bary[3 * p + 2]};
    const double gd = grad_z_ndc[p];
    if (gb[0] == 0.0 && gb[1] == 0.0 && gb[2] == 0.0 && gd == 0.0) continue;
    int32_t idx[3];
    if (!LoadTriangle(tris, t, num_vertices, idx)) continue;
    const int64_t bi = p / image;
    const int64_t pix = p - bi * image;
    const int y = static_cast<int>(pix / width);
    const int x = static_cast<int>(pix - static_cast<int64_t>(y) * width);
    const float* image_clip = clip + bi * num_vertices * 4;
    double g[12];
    if (!BarycentricGradient(image_clip + 4 * static_cast<int64_t>(idx[0]),
                             image_clip + 4 * static_cast<int64_t>(idx[1]),
                             image_clip + 4 * static_cast<int64_t>(idx[2]), PixelNdcX(x, width),
                             PixelNdcY(y, height), gb, gd, g)) {
      continue;
    }
    double* image_accum = accum + bi * num_vertices * 4;
    for (int k = 0; k < 3; ++k) {
      double* a = image_accum + 4 * static_cast<int64_t>(idx[k]);
      for (int c = 0; c < 4; ++c) {
        if (g[4 * k + c] != 0.0) atomicAdd(a + c, g[4 * k + c]);
      }
    }
  }
}

__global__ void ToFloatKernel(const double* in, float* out, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    out[i] = static_cast<float>(in[i]);
  }
}

// Makes the device owning `stream` current for this thread's runtime calls.
cudaError_t SelectStreamDevice(cudaStream_t stream) {
  int device = 0;
  cudaError_t err = cudaStreamGetDevice(stream, &device);
  if (err != cudaSuccess) return err;
  int current = -1;
  err = cudaGetDevice(&current);
  if (err != cudaSuccess) return err;
  return current == device ? cudaSuccess : cudaSetDevice(device);
}

const char* ErrorString(cudaError_t err) {
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

}  // namespace

const char* RasterizeForwardGpu(void* stream_ptr, const float* clip, const int32_t* tris,
                                int64_t batch, int64_t num_vertices, int64_t num_triangles,
                                int height, int width, unsigned long long* keys,
                                int32_t* triangle_ids, float* barycentrics, float* z_ndc) {
  cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
  cudaError_t err = SelectStreamDevice(stream);
  if (err != cudaSuccess) return ErrorString(err);
  const int64_t pixels = batch * static_cast<int64_t>(height) * width;
  if (pixels == 0) return nullptr;
  FillKeysKernel<<<NumBlocks(pixels), kThreads, 0, stream>>>(keys, pixels);
  if (batch * num_triangles > 0) {
    RasterizeTrianglesKernel<<<NumBlocks(batch * num_triangles), kThreads, 0, stream>>>(
        clip, tris, batch, num_vertices, num_triangles, height, width, keys);
  }
  ResolveKernel<<<NumBlocks(pixels), kThreads, 0, stream>>>(
      keys, clip, tris, batch, num_vertices, height, width, triangle_ids, barycentrics, z_ndc);
  return ErrorString(cudaGetLastError());
}

const char* RasterizeBackwardGpu(void* stream_ptr, const float* clip, const int32_t* tris,
                                 const int32_t* triangle_ids, const float* grad_barycentrics,
                                 const float* grad_z_ndc, int64_t batch, int64_t num_vertices,
                                 int64_t num_triangles, int height, int width, double* accum,
                                 float* grad_clip) {
  cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
  cudaError_t err = SelectStreamDevice(stream);
  if (err != cudaSuccess) return ErrorString(err);
  const int64_t n = batch * num_vertices * 4;
  if (n == 0) return nullptr;
  ZeroKernel<<<NumBlocks(n), kThreads, 0, stream>>>(accum, n);
  const int64_t pixels = batch * static_cast<int64_t>(height) * width;
  if (pixels > 0) {
    GradientKernel<<<NumBlocks(pixels), kThreads, 0, stream>>>(
        clip, tris, triangle_ids, grad_barycentrics, grad_z_ndc, batch, num_vertices,
        num_triangles, height, width, accum);
  }
  ToFloatKernel<<<NumBlocks(n), kThreads, 0, stream>>>(accum, grad_clip, n);
  return ErrorString(cudaGetLastError());
}

}  // namespace raster
}  // namespace recon_tf

#endif  // GOOGLE_CUDA
