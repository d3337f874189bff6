// Standalone driver of the rasterizer's CUDA kernels (no TensorFlow needed).
//
// Built and run by benchmarks/cuda_rasterizer.py on a machine with a GPU:
//   nvcc -O3 -std=c++17 -DGOOGLE_CUDA=1 -I recon_tf/render/kernels \
//     -x cu benchmarks/cuda_rasterizer_main.cu \
//     -x cu recon_tf/render/kernels/rasterize_op_gpu.cu.cc -o cuda_rasterizer_check
//   ./cuda_rasterizer_check <case.bin> <out.bin> [timing iterations]
//
// <case.bin> (little endian): int64 batch, num_vertices, num_triangles,
// height, width; float32 clip[batch, V, 4]; int32 triangles[T, 3]; float32
// grad_barycentrics[batch, H, W, 3]; float32 grad_depth[batch, H, W].
// <out.bin>: int32 triangle_ids[batch, H, W]; float32 barycentrics[batch, H, W, 3];
// float32 depth[batch, H, W]; float32 grad_clip[batch, V, 4].
// Prints one line: "TIMING forward_ms=<median> backward_ms=<median>" for the
// whole batch, measured with CUDA events after one warm-up call.

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "rasterize_common.h"

namespace {

void Check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    std::fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(err));
    std::exit(2);
  }
}

void CheckLaunch(const char* err, const char* what) {
  if (err != nullptr) {
    std::fprintf(stderr, "%s: %s\n", what, err);
    std::exit(2);
  }
}

template <typename T>
void Read(std::FILE* f, std::vector<T>* v, size_t n) {
  v->resize(n);
  if (std::fread(v->data(), sizeof(T), n, f) != n) {
    std::fprintf(stderr, "truncated case file\n");
    std::exit(2);
  }
}

template <typename T>
T* ToDevice(const std::vector<T>& host) {
  T* dev = nullptr;
  Check(cudaMalloc(&dev, std::max<size_t>(1, host.size()) * sizeof(T)), "cudaMalloc");
  Check(cudaMemcpy(dev, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice), "copy in");
  return dev;
}

template <typename T>
T* Alloc(size_t n) {
  T* dev = nullptr;
  Check(cudaMalloc(&dev, std::max<size_t>(1, n) * sizeof(T)), "cudaMalloc");
  return dev;
}

template <typename T>
void Write(std::FILE* f, const T* dev, size_t n) {
  std::vector<T> host(n);
  Check(cudaMemcpy(host.data(), dev, n * sizeof(T), cudaMemcpyDeviceToHost), "copy out");
  std::fwrite(host.data(), sizeof(T), n, f);
}

float Median(std::vector<float> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0f : v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s case.bin out.bin [iterations]\n", argv[0]);
    return 1;
  }
  const int iterations = argc > 3 ? std::atoi(argv[3]) : 20;
  std::FILE* in = std::fopen(argv[1], "rb");
  if (in == nullptr) {
    std::fprintf(stderr, "cannot open %s\n", argv[1]);
    return 1;
  }
  int64_t dims[5];
  if (std::fread(dims, sizeof(int64_t), 5, in) != 5) return 2;
  const int64_t batch = dims[0], nv = dims[1], nt = dims[2];
  const int height = static_cast<int>(dims[3]), width = static_cast<int>(dims[4]);
  const size_t pixels = static_cast<size_t>(batch) * height * width;
  std::vector<float> clip, grad_bary, grad_depth;
  std::vector<int32_t> tris;
  Read(in, &clip, static_cast<size_t>(batch * nv * 4));
  Read(in, &tris, static_cast<size_t>(nt * 3));
  Read(in, &grad_bary, pixels * 3);
  Read(in, &grad_depth, pixels);
  std::fclose(in);

  cudaStream_t stream;
  Check(cudaStreamCreate(&stream), "stream");
  float* d_clip = ToDevice(clip);
  int32_t* d_tris = ToDevice(tris);
  float* d_gbary = ToDevice(grad_bary);
  float* d_gdepth = ToDevice(grad_depth);
  auto* d_keys = Alloc<unsigned long long>(pixels);
  auto* d_ids = Alloc<int32_t>(pixels);
  auto* d_bary = Alloc<float>(pixels * 3);
  auto* d_depth = Alloc<float>(pixels);
  auto* d_accum = Alloc<double>(static_cast<size_t>(batch * nv * 4));
  auto* d_gclip = Alloc<float>(static_cast<size_t>(batch * nv * 4));

  auto forward = [&]() {
    CheckLaunch(recon_tf::raster::RasterizeForwardGpu(stream, d_clip, d_tris, batch, nv, nt,
                                                      height, width, d_keys, d_ids, d_bary,
                                                      d_depth),
                "forward");
  };
  auto backward = [&]() {
    CheckLaunch(recon_tf::raster::RasterizeBackwardGpu(stream, d_clip, d_tris, d_ids, d_gbary,
                                                       d_gdepth, batch, nv, nt, height, width,
                                                       d_accum, d_gclip),
                "backward");
  };
  forward();
  backward();
  Check(cudaStreamSynchronize(stream), "warm-up");

  cudaEvent_t start, stop;
  Check(cudaEventCreate(&start), "event");
  Check(cudaEventCreate(&stop), "event");
  auto time_ms = [&](auto&& call) {
    float ms = 0.0f;
    Check(cudaEventRecord(start, stream), "record");
    call();
    Check(cudaEventRecord(stop, stream), "record");
    Check(cudaEventSynchronize(stop), "sync");
    Check(cudaEventElapsedTime(&ms, start, stop), "elapsed");
    return ms;
  };
  std::vector<float> fwd_ms, bwd_ms;
  for (int i = 0; i < iterations; ++i) {
    fwd_ms.push_back(time_ms(forward));
    bwd_ms.push_back(time_ms(backward));
  }
  // Outputs of one more, untimed call pair.
  forward();
  backward();
  Check(cudaStreamSynchronize(stream), "final");

  std::FILE* out = std::fopen(argv[2], "wb");
  if (out == nullptr) {
    std::fprintf(stderr, "cannot write %s\n", argv[2]);
    return 1;
  }
  Write(out, d_ids, pixels);
  Write(out, d_bary, pixels * 3);
  Write(out, d_depth, pixels);
  Write(out, d_gclip, static_cast<size_t>(batch * nv * 4));
  std::fclose(out);
  std::printf("TIMING forward_ms=%.4f backward_ms=%.4f\n", Median(fwd_ms), Median(bwd_ms));
  return 0;
}
