// Shared rasterization math for the CPU kernels (rasterize_op.cc) and the
// CUDA kernels (rasterize_op_gpu.cu.cc). Everything here is header-only and
// compiles both as host C++ and as CUDA device code.
//
// Conventions (see recon_tf/render/rasterizer.py for the full contract):
//   * clip_vertices are homogeneous OpenGL clip coordinates (x, y, z, w).
//   * NDC x = x / w maps -1 -> left image border, +1 -> right border.
//   * NDC y = y / w maps +1 -> top border (row 0), -1 -> bottom border.
//   * Pixel (row r, column c) is sampled at its centre (c + 0.5, r + 0.5).
//   * Screen space used for coverage: sx = (x/w + 1) / 2 * width,
//     sy = (1 - y/w) / 2 * height, so pixel centres are at integer + 0.5.
//   * A triangle is skipped when any vertex has w <= kMinClipW or a
//     non-finite screen position, or when its screen-space area is zero.
//   * A fragment is kept when -1 <= z/w <= 1 (NDC depth); the nearest
//     fragment (smallest NDC depth) wins, ties go to the lowest triangle id.

#ifndef RECON_TF_RENDER_KERNELS_RASTERIZE_COMMON_H_
#define RECON_TF_RENDER_KERNELS_RASTERIZE_COMMON_H_

#include <math.h>

#include <cstdint>

#if defined(__CUDACC__)
#define RT_HD __host__ __device__ __forceinline__
#else
#define RT_HD inline
#endif

namespace recon_tf {
namespace raster {

// Vertices with clip w at or below this value are "behind the camera".
constexpr float kMinClipW = 1e-6f;
// Largest accepted image side, and largest accepted batch * height * width.
constexpr int kMaxImageSide = 8192;
constexpr int64_t kMaxTotalPixels = int64_t{1} << 26;

// True for finite floats (inf - inf and nan - nan are nan).
RT_HD bool IsFinite(float v) { return (v - v) == 0.0f; }

RT_HD float Min3(float a, float b, float c) {
  const float m = a < b ? a : b;
  return m < c ? m : c;
}

RT_HD float Max3(float a, float b, float c) {
  const float m = a > b ? a : b;
  return m > c ? m : c;
}

RT_HD float Clamp(float v, float lo, float hi) { return v < lo ? lo : (v > hi ? hi : v); }

// floor / ceil of a float already clamped to int range, without libm calls.
RT_HD int FloorToInt(float v) {
  const int i = static_cast<int>(v);
  return static_cast<float>(i) > v ? i - 1 : i;
}

RT_HD int CeilToInt(float v) {
  const int i = static_cast<int>(v);
  return static_cast<float>(i) < v ? i + 1 : i;
}

// Screen-space vertex: pixel coordinates (x right, y down), NDC depth, and
// w (set to 0 when the vertex is unusable, see ProjectToScreen).
struct ScreenVertex {
  float x;
  float y;
  float z;
  float w;
};

RT_HD ScreenVertex ProjectToScreen(const float* clip, int height, int width) {
  ScreenVertex s;
  const float w = clip[3];
  const float inv_w = 1.0f / w;
  s.x = (clip[0] * inv_w + 1.0f) * 0.5f * static_cast<float>(width);
  s.y = (1.0f - clip[1] * inv_w) * 0.5f * static_cast<float>(height);
  s.z = clip[2] * inv_w;
  const bool ok = w > kMinClipW && IsFinite(s.x) && IsFinite(s.y) && IsFinite(s.z);
  s.w = ok ? w : 0.0f;
  return s;
}

// Per-triangle data for coverage and depth tests.
//
// Edge i is the edge opposite vertex i. Its edge function is evaluated with
// the endpoint of smaller vertex index first ("canonical" order), so the two
// triangles sharing an edge compute bit-identical values of opposite sign;
// together with the inclusive inside test this leaves no cracks.
struct TriangleRaster {
  float ax[3], ay[3];  // canonical first endpoint of each edge
  float dx[3], dy[3];  // canonical second minus first endpoint
  float sign[3];       // +-1: makes the edge function >= 0 inside
  float z[3];          // NDC depth of the vertices
  float inv_area;      // 1 / |signed doubled screen area|
  int x_begin, x_end;  // pixel columns [x_begin, x_end) to visit
  int y_begin, y_end;  // pixel rows [y_begin, y_end) to visit
};

// Sets up triangle (v[0], v[1], v[2]) with vertex indices idx[] for the
// pixel rectangle rows [row_begin, row_end) x columns [0, width). Returns
// false when the triangle is skipped or covers no pixel centre of that
// rectangle's bounding box.
RT_HD bool SetupTriangle(const ScreenVertex* v, const int32_t* idx, int row_begin,
                         int row_end, int width, TriangleRaster* t) {
  if (!(v[0].w > 0.0f && v[1].w > 0.0f && v[2].w > 0.0f)) return false;
  // Pixel centre c + 0.5 lies in [min, max] iff ceil(min - 0.5) <= c <= floor(max - 0.5).
  // Clamping first keeps the float -> int conversions in range.
  const float rlo = static_cast<float>(row_begin) - 1.0f;
  const float rhi = static_cast<float>(row_end) + 1.0f;
  const int y0 = CeilToInt(Clamp(Min3(v[0].y, v[1].y, v[2].y) - 0.5f, rlo, rhi));
  const int y1 = FloorToInt(Clamp(Max3(v[0].y, v[1].y, v[2].y) - 0.5f, rlo, rhi));
  t->y_begin = y0 > row_begin ? y0 : row_begin;
  t->y_end = y1 + 1 < row_end ? y1 + 1 : row_end;
  if (t->y_begin >= t->y_end) return false;
  const float chi = static_cast<float>(width) + 1.0f;
  const int x0 = CeilToInt(Clamp(Min3(v[0].x, v[1].x, v[2].x) - 0.5f, -1.0f, chi));
  const int x1 = FloorToInt(Clamp(Max3(v[0].x, v[1].x, v[2].x) - 0.5f, -1.0f, chi));
  t->x_begin = x0 > 0 ? x0 : 0;
  t->x_end = x1 + 1 < width ? x1 + 1 : width;
  if (t->x_begin >= t->x_end) return false;

  const float area = (v[1].x - v[0].x) * (v[2].y - v[0].y) -
                     (v[1].y - v[0].y) * (v[2].x - v[0].x);
  if (!(area != 0.0f) || !IsFinite(area)) return false;
  const float orient = area > 0.0f ? 1.0f : -1.0f;
  for (int i = 0; i < 3; ++i) {
    const int j = i == 2 ? 0 : i + 1;
    const int k = j == 2 ? 0 : j + 1;
    // Edge function of edge (j -> k) at vertex i equals the signed area.
    const bool swap = idx[j] > idx[k];
    const ScreenVertex& a = swap ? v[k] : v[j];
    const ScreenVertex& b = swap ? v[j] : v[k];
    t->ax[i] = a.x;
    t->ay[i] = a.y;
    t->dx[i] = b.x - a.x;
    t->dy[i] = b.y - a.y;
    t->sign[i] = swap ? -orient : orient;
    t->z[i] = v[i].z;
  }
  t->inv_area = 1.0f / (area * orient);
  return true;
}

// Coverage and depth test at pixel centre (px, py). On success writes the
// NDC depth of the fragment and returns true.
RT_HD bool ShadeFragment(const TriangleRaster& t, float px, float py, float* depth) {
  const float e0 = t.sign[0] * (t.dx[0] * (py - t.ay[0]) - t.dy[0] * (px - t.ax[0]));
  const float e1 = t.sign[1] * (t.dx[1] * (py - t.ay[1]) - t.dy[1] * (px - t.ax[1]));
  const float e2 = t.sign[2] * (t.dx[2] * (py - t.ay[2]) - t.dy[2] * (px - t.ax[2]));
  if (e0 < 0.0f || e1 < 0.0f || e2 < 0.0f) return false;
  // Adding +0 turns -0 into +0 so that equal depths compare equal everywhere.
  const float z = (e0 * t.z[0] + e1 * t.z[1] + e2 * t.z[2]) * t.inv_area + 0.0f;
  if (!(z >= -1.0f && z <= 1.0f)) return false;
  *depth = z;
  return true;
}

// NDC coordinates of the centre of pixel (row, col).
RT_HD double PixelNdcX(int col, int width) {
  return (2.0 * col + 1.0) / static_cast<double>(width) - 1.0;
}

RT_HD double PixelNdcY(int row, int height) {
  return 1.0 - (2.0 * row + 1.0) / static_cast<double>(height);
}

// Perspective-correct barycentrics on the triangle with clip vertices c0, c1,
// c2 (each x, y, z, w), as planes in NDC.
//
// With v_k = (x_k, y_k, w_k) and p = (px, py, 1), the clip-space point
// P = sum_k b_k V_k projects to p iff b is proportional to
// u = (p.(v1 x v2), p.(v2 x v0), p.(v0 x v1)); b = u / sum(u). Each u_i and
// the NDC depth's numerator sum u_k z_k and denominator sum u_k w_k are
// linear in (px, py): value = a * px + b * py + c.
struct BarycentricPlanes {
  double a[5], b[5], c[5];  // u_0, u_1, u_2, depth numerator, depth denominator
};

RT_HD void SetupBarycentricPlanes(const float* c0, const float* c1, const float* c2,
                                  BarycentricPlanes* pl) {
  const float* c[3] = {c0, c1, c2};
  for (int i = 0; i < 3; ++i) {
    const float* p = c[i == 2 ? 0 : i + 1];
    const float* q = c[i == 0 ? 2 : i - 1];
    // v_j x v_k for (i, j, k) cyclic; p = c_j, q = c_k.
    const double xj = p[0], yj = p[1], wj = p[3];
    const double xk = q[0], yk = q[1], wk = q[3];
    pl->a[i] = yj * wk - wj * yk;
    pl->b[i] = wj * xk - xj * wk;
    pl->c[i] = xj * yk - yj * xk;
  }
  for (int r = 3; r < 5; ++r) {
    const int comp = r == 3 ? 2 : 3;  // z for the numerator, w for the denominator
    pl->a[r] = pl->a[0] * c0[comp] + pl->a[1] * c1[comp] + pl->a[2] * c2[comp];
    pl->b[r] = pl->b[0] * c0[comp] + pl->b[1] * c1[comp] + pl->b[2] * c2[comp];
    pl->c[r] = pl->c[0] * c0[comp] + pl->c[1] * c1[comp] + pl->c[2] * c2[comp];
  }
}

// Writes b[3] and the NDC depth (sum b_k z_k) / (sum b_k w_k) at NDC point
// (px, py). Returns false when sum(u) == 0 (degenerate configuration).
RT_HD bool EvalBarycentrics(const BarycentricPlanes& pl, double px, double py, double* b,
                            double* depth) {
  double u[5];
  for (int r = 0; r < 5; ++r) u[r] = pl.a[r] * px + pl.b[r] * py + pl.c[r];
  const double s = u[0] + u[1] + u[2];
  if (s == 0.0 || u[4] == 0.0) return false;
  const double inv_s = 1.0 / s;
  b[0] = u[0] * inv_s;
  b[1] = u[1] * inv_s;
  b[2] = u[2] * inv_s;
  *depth = u[3] / u[4];
  return true;
}

RT_HD bool PerspectiveBarycentrics(const float* c0, const float* c1, const float* c2,
                                   double px, double py, double* b, double* depth) {
  BarycentricPlanes pl;
  SetupBarycentricPlanes(c0, c1, c2, &pl);
  return EvalBarycentrics(pl, px, py, b, depth);
}

// Gradient of a loss w.r.t. the clip vertices of one pixel's triangle, given
// the loss gradient w.r.t. that pixel's barycentrics (gb[3]) and NDC depth
// (gd). Writes g[k * 4 + c] = dLoss / d(clip coordinate c of vertex k).
// Returns false (and leaves g untouched) for a degenerate configuration.
RT_HD bool BarycentricGradient(const float* c0, const float* c1, const float* c2, double px,
                               double py, const double* gb_in, double gd, double* g) {
  const float* c[3] = {c0, c1, c2};
  double v[3][3];  // (x, y, w) per vertex
  for (int k = 0; k < 3; ++k) {
    v[k][0] = c[k][0];
    v[k][1] = c[k][1];
    v[k][2] = c[k][3];
  }
  // q_k = p x v_k; then u_i = p.(v_j x v_k) = v_j.(v_k x p) = -v_j.q_k.
  double q[3][3];
  for (int k = 0; k < 3; ++k) {
    q[k][0] = py * v[k][2] - v[k][1];
    q[k][1] = v[k][0] - px * v[k][2];
    q[k][2] = px * v[k][1] - py * v[k][0];
  }
  double u[3];
  for (int i = 0; i < 3; ++i) {
    const int j = i == 2 ? 0 : i + 1;
    const int k = j == 2 ? 0 : j + 1;
    u[i] = -(v[j][0] * q[k][0] + v[j][1] * q[k][1] + v[j][2] * q[k][2]);
  }
  const double s = u[0] + u[1] + u[2];
  if (s == 0.0) return false;
  const double b[3] = {u[0] / s, u[1] / s, u[2] / s};
  double gb[3] = {gb_in[0], gb_in[1], gb_in[2]};
  double gz[3] = {0.0, 0.0, 0.0};
  double gw[3] = {0.0, 0.0, 0.0};
  if (gd != 0.0) {
    // depth = Z / W with Z = sum b_k z_k, W = sum b_k w_k.
    const double wsum = b[0] * v[0][2] + b[1] * v[1][2] + b[2] * v[2][2];
    const double zsum = b[0] * c0[2] + b[1] * c1[2] + b[2] * c2[2];
    const double depth = zsum / wsum;
    const double scale = gd / wsum;
    for (int k = 0; k < 3; ++k) {
      gb[k] += scale * (c[k][2] - depth * v[k][2]);
      gz[k] = scale * b[k];
      gw[k] = -scale * depth * b[k];
    }
  }
  // b = u / s: dL/du_m = (gb_m - sum_i gb_i b_i) / s.
  const double dot = gb[0] * b[0] + gb[1] * b[1] + gb[2] * b[2];
  const double gu[3] = {(gb[0] - dot) / s, (gb[1] - dot) / s, (gb[2] - dot) / s};
  // du_0/dv_1 = -q_2, du_0/dv_2 = q_1; du_1/dv_2 = -q_0, du_1/dv_0 = q_2;
  // du_2/dv_0 = -q_1, du_2/dv_1 = q_0.
  for (int d = 0; d < 3; ++d) {
    const double g0 = gu[1] * q[2][d] - gu[2] * q[1][d];
    const double g1 = gu[2] * q[0][d] - gu[0] * q[2][d];
    const double g2 = gu[0] * q[1][d] - gu[1] * q[0][d];
    const int col = d == 2 ? 3 : d;
    g[0 * 4 + col] = g0;
    g[1 * 4 + col] = g1;
    g[2 * 4 + col] = g2;
  }
  for (int k = 0; k < 3; ++k) {
    g[k * 4 + 2] = gz[k];
    g[k * 4 + 3] += gw[k];
  }
  return true;
}

// Order-preserving map from float depth to uint32 (for packed GPU keys).
RT_HD uint32_t OrderedDepthBits(uint32_t bits) {
  return (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
}

#if GOOGLE_CUDA
// Host-side launchers implemented in rasterize_op_gpu.cu.cc. `stream` is a
// cudaStream_t. They return nullptr on success, else a CUDA error string.
// All pointers are device pointers; sizes follow the op's tensor shapes.
const char* RasterizeForwardGpu(void* stream, const float* clip, const int32_t* tris,
                                int64_t batch, int64_t num_vertices, int64_t num_triangles,
                                int height, int width, unsigned long long* keys,
                                int32_t* triangle_ids, float* barycentrics, float* depth);

const char* RasterizeBackwardGpu(void* stream, const float* clip, const int32_t* tris,
                                 const int32_t* triangle_ids, const float* grad_barycentrics,
                                 const float* grad_depth, int64_t batch, int64_t num_vertices,
                                 int64_t num_triangles, int height, int width, double* accum,
                                 float* grad_clip);
#endif  // GOOGLE_CUDA

}  // namespace raster
}  // namespace recon_tf

#endif  // RECON_TF_RENDER_KERNELS_RASTERIZE_COMMON_H_
