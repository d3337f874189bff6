"""Pure-TensorFlow reference rasterizer, for tests and benchmarks.

:func:`rasterize_reference` has the signature, outputs and conventions of
:func:`recon_tf.render.rasterizer.rasterize` (see that module's docstring),
written for clarity rather than speed:

1. Every triangle is projected to screen space and every pixel centre inside
   its bounding box becomes a candidate fragment (a flat, vectorised list of
   ``(image, triangle, pixel)``), so memory grows with the summed bounding-box
   areas: fine for test meshes and face meshes, not for many huge triangles.
2. Coverage uses float64 edge functions of float32 screen positions;
   fragments outside ``-1 <= z/w <= 1`` are dropped; per pixel the smallest
   ``z_ndc = z/w`` wins (ties: lowest triangle id) via ``tf.math.unsorted_segment_min``.
3. Barycentrics and ``z_ndc`` of the winners are recomputed from the clip
   vertices with differentiable TF ops (in float64), so ``tf.GradientTape`` gives their
   derivatives w.r.t. ``clip_vertices`` (coverage itself is not differentiable).

Accepts float32 or float64 ``clip_vertices`` (outputs use the same dtype).
"""

from __future__ import annotations

import tensorflow as tf

MIN_CLIP_W = 1e-6


def _edge(ax, ay, bx, by, px, py):
    return (bx - ax) * (py - ay) - (by - ay) * (px - ax)


def rasterize_reference(clip_vertices: tf.Tensor, triangles: tf.Tensor, height: int,
                        width: int) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Reference rasterization with the same contract as ``rasterizer.rasterize``.

    Args:
      clip_vertices: float32/float64 ``[B, V, 4]`` OpenGL clip coordinates.
      triangles: int32 ``[T, 3]`` vertex indices in ``[0, V)``.
      height, width: image size in pixels (Python ints >= 1).

    Returns:
      ``(triangle_ids int32 [B, H, W] (-1 background), barycentrics [B, H, W, 3]
      (perspective-correct, zeros on background), z_ndc [B, H, W] (NDC z/w in
      [-1, 1], 1 on background))``; barycentrics and z_ndc have
      ``clip_vertices``'s dtype.
    """
    clip = tf.convert_to_tensor(clip_vertices, dtype_hint=tf.float32)
    tris = tf.convert_to_tensor(triangles, dtype=tf.int32)
    dtype = clip.dtype
    batch = tf.shape(clip)[0]
    num_tris = tf.shape(tris)[0]
    num_pixels = batch * height * width

    # Screen space (x right, y down, pixel centres at integer + 0.5), float32
    # like the op, then float64 for the edge functions.
    c = tf.cast(tf.stop_gradient(clip), tf.float32)
    w = c[..., 3]
    sx = (c[..., 0] / w + 1.0) * 0.5 * width
    sy = (1.0 - c[..., 1] / w) * 0.5 * height
    sz = c[..., 2] / w
    screen = tf.stack([sx, sy, sz], axis=-1)
    valid_vertex = (w > MIN_CLIP_W) & tf.reduce_all(tf.math.is_finite(screen), axis=-1)
    tri_screen = tf.cast(tf.gather(screen, tris, axis=1), tf.float64)  # [B, T, 3, 3]
    tri_valid = tf.reduce_all(tf.gather(valid_vertex, tris, axis=1), axis=-1)  # [B, T]
    tri_screen = tf.where(tri_valid[..., None, None], tri_screen, tf.zeros_like(tri_screen))

    # Bounding boxes in pixel indices: centre c + 0.5 in [lo, hi].
    lo = tri_screen[..., :2]
    x_lo = tf.maximum(tf.math.ceil(tf.reduce_min(lo[..., 0], -1) - 0.5), 0.0)
    x_hi = tf.minimum(tf.math.floor(tf.reduce_max(lo[..., 0], -1) - 0.5), width - 1.0)
    y_lo = tf.maximum(tf.math.ceil(tf.reduce_min(lo[..., 1], -1) - 0.5), 0.0)
    y_hi = tf.minimum(tf.math.floor(tf.reduce_max(lo[..., 1], -1) - 0.5), height - 1.0)
    nx = tf.cast(tf.maximum(x_hi - x_lo + 1.0, 0.0), tf.int64)
    ny = tf.cast(tf.maximum(y_hi - y_lo + 1.0, 0.0), tf.int64)
    counts = tf.reshape(tf.where(tri_valid, nx * ny, tf.zeros_like(nx)), [-1])  # [B*T]

    # One candidate fragment per (triangle, pixel in its bounding box).
    owner = tf.repeat(tf.range(tf.size(counts, out_type=tf.int64)), counts)
    starts = tf.cumsum(counts, exclusive=True)
    local = tf.range(tf.reduce_sum(counts)) - tf.gather(starts, owner)
    flat_nx = tf.reshape(nx, [-1])
    fx = tf.gather(tf.reshape(x_lo, [-1]), owner) + tf.cast(local % tf.gather(flat_nx, owner),
                                                             tf.float64)
    fy = tf.gather(tf.reshape(y_lo, [-1]), owner) + tf.cast(local // tf.gather(flat_nx, owner),
                                                            tf.float64)
    v = tf.gather(tf.reshape(tri_screen, [-1, 3, 3]), owner)  # [N, 3, 3]
    px, py = fx + 0.5, fy + 0.5
    e0 = _edge(v[:, 1, 0], v[:, 1, 1], v[:, 2, 0], v[:, 2, 1], px, py)
    e1 = _edge(v[:, 2, 0], v[:, 2, 1], v[:, 0, 0], v[:, 0, 1], px, py)
    e2 = _edge(v[:, 0, 0], v[:, 0, 1], v[:, 1, 0], v[:, 1, 1], px, py)
    area = _edge(v[:, 0, 0], v[:, 0, 1], v[:, 1, 0], v[:, 1, 1], v[:, 2, 0], v[:, 2, 1])
    sign = tf.where(area < 0.0, -tf.ones_like(area), tf.ones_like(area))
    e0, e1, e2 = e0 * sign, e1 * sign, e2 * sign
    esum = e0 + e1 + e2
    inside = (area != 0.0) & (e0 >= 0.0) & (e1 >= 0.0) & (e2 >= 0.0) & (esum > 0.0)
    safe_sum = tf.where(inside, esum, tf.ones_like(esum))
    z = (e0 * v[:, 0, 2] + e1 * v[:, 1, 2] + e2 * v[:, 2, 2]) / safe_sum
    keep = inside & (z >= -1.0) & (z <= 1.0)

    tri_of = tf.gather(owner, tf.where(keep)[:, 0])
    image_of = tri_of // tf.cast(num_tris, tf.int64)
    tri_id = tf.cast(tri_of % tf.cast(num_tris, tf.int64), tf.int32)
    pixel = (image_of * height * width + tf.cast(tf.boolean_mask(fy, keep), tf.int64) * width
             + tf.cast(tf.boolean_mask(fx, keep), tf.int64))
    z_kept = tf.boolean_mask(z, keep)
    z_min = tf.math.unsorted_segment_min(z_kept, pixel, num_pixels)
    big = tf.int32.max
    winner_candidates = tf.where(z_kept == tf.gather(z_min, pixel), tri_id, big)
    winner = tf.math.unsorted_segment_min(winner_candidates, pixel, num_pixels)
    ids = tf.reshape(tf.where(winner == big, -1, winner), [batch, height, width])

    # Differentiable perspective-correct barycentrics of the winners.
    covered = ids >= 0
    corner_ids = tf.gather(tris, tf.maximum(ids, 0))  # [B, H, W, 3]
    # float64 internally (the cross products cancel heavily for small triangles).
    corners = tf.cast(tf.gather(clip, corner_ids, batch_dims=1), tf.float64)  # [B,H,W,3,4]
    cols = tf.range(width, dtype=tf.float64)
    rows = tf.range(height, dtype=tf.float64)
    ndc_x = (2.0 * cols + 1.0) / width - 1.0
    ndc_y = 1.0 - (2.0 * rows + 1.0) / height
    p = tf.stack([tf.broadcast_to(ndc_x[None, :], [height, width]),
                  tf.broadcast_to(ndc_y[:, None], [height, width]),
                  tf.ones([height, width], tf.float64)], axis=-1)  # [H, W, 3]
    xyw = tf.gather(corners, [0, 1, 3], axis=-1)  # [B, H, W, 3, 3]
    v0, v1, v2 = xyw[..., 0, :], xyw[..., 1, :], xyw[..., 2, :]
    u = tf.stack([tf.reduce_sum(p * tf.linalg.cross(v1, v2), -1),
                  tf.reduce_sum(p * tf.linalg.cross(v2, v0), -1),
                  tf.reduce_sum(p * tf.linalg.cross(v0, v1), -1)], axis=-1)
    u_sum = tf.reduce_sum(u, -1, keepdims=True)
    u_sum = tf.where(covered[..., None] & (u_sum != 0.0), u_sum, tf.ones_like(u_sum))
    bary = u / u_sum
    w_sum = tf.reduce_sum(bary * corners[..., 3], -1)
    w_sum = tf.where(covered & (w_sum != 0.0), w_sum, tf.ones_like(w_sum))
    z_ndc = tf.reduce_sum(bary * corners[..., 2], -1) / w_sum
    bary = tf.where(covered[..., None], bary, tf.zeros_like(bary))
    z_ndc = tf.where(covered, z_ndc, tf.ones_like(z_ndc))
    return ids, tf.cast(bary, dtype), tf.cast(z_ndc, dtype)
