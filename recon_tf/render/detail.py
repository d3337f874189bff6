"""Detail geometry and per-pixel shading from UV maps (fine stage, §3.4.2-3.4.3).

The fine stage predicts a displacement map D and a detailed albedo map in UV.
This module turns them into images:

* :func:`displace` — detailed positions P' = P + D·N in UV (P, N the coarse
  position and normal maps) and detail normals from P' by central
  differences across texels (DECA's detail-normal construction);
* :func:`pixel_uv` — every pixel's UV coordinate, interpolated from the
  per-corner UVs of the triangle covering it (so seams are respected);
* :func:`sample_uv_map` — bilinear lookup of a UV map at those coordinates;
* :func:`render_detailed` / :func:`shade_uv_maps` — per-pixel Lambertian SH
  shading (Eq. 5) with the detailed albedo and normals.

UV maps follow :mod:`recon_tf.render.uv`: [B, S, S, C], row 0 is v = 1.
"""

from __future__ import annotations

import tensorflow as tf

from recon_tf.camera import rotate_normals
from recon_tf.face_model import FaceModel
from recon_tf.lighting import shade
from recon_tf.render.renderer import Rendering
from recon_tf.render.uv import bilinear_sample


def _normalize(v: tf.Tensor) -> tf.Tensor:
    return tf.math.divide_no_nan(v, tf.norm(v, axis=-1, keepdims=True) + 1e-12)


def displace(position_map: tf.Tensor, normal_map: tf.Tensor, displacement: tf.Tensor,
             uv_mask: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Apply a displacement map along the normals; recompute normals.

    Args:
      position_map: float32 [B, S, S, 3], coarse surface positions (model space).
      normal_map: float32 [B, S, S, 3], coarse unit normals (model space).
      displacement: D, float32 [B, S, S, 1], signed distance along the normal
        (model units, decimetres; + is outwards).
      uv_mask: float32 [B or 1, S, S, 1], 1 inside the UV layout.
    Returns:
      (detail_positions [B, S, S, 3], detail_normals [B, S, S, 3]); the
      normals are unit, oriented like the coarse ones, and equal the coarse
      normals where a texel's neighbours leave the layout.
    """
    pos = position_map + displacement * normal_map
    pad = tf.pad(pos, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="SYMMETRIC")
    mpad = tf.pad(uv_mask, [[0, 0], [1, 1], [1, 1], [0, 0]])
    du = pad[:, 1:-1, 2:] - pad[:, 1:-1, :-2]  # +u: next column
    dv = pad[:, :-2, 1:-1] - pad[:, 2:, 1:-1]  # +v: previous row
    n = _normalize(tf.linalg.cross(du, dv))
    n = n * tf.sign(tf.reduce_sum(n * normal_map, axis=-1, keepdims=True) + 1e-12)
    full = (mpad[:, 1:-1, 2:] * mpad[:, 1:-1, :-2] * mpad[:, :-2, 1:-1] * mpad[:, 2:, 1:-1]
            * uv_mask)
    full = tf.broadcast_to(full, tf.shape(normal_map[..., :1]))
    normals = full * n + (1.0 - full) * normal_map
    return pos, _normalize(normals)


def pixel_uv(face_model: FaceModel, triangle_ids: tf.Tensor, barycentrics: tf.Tensor
             ) -> tf.Tensor:
    """UV coordinate of every pixel, float32 [B, H, W, 2] (zeros on background).

    Args:
      face_model: supplies ``uv`` and the per-corner ``tri_uv``.
      triangle_ids: int32 [B, H, W] from the rasterizer (−1 = background).
      barycentrics: float32 [B, H, W, 3].
    """
    corners = tf.gather(face_model.uv, face_model.tri_uv)  # [T, 3, 2]
    valid = tf.cast(triangle_ids >= 0, tf.float32)[..., None]
    per_pixel = tf.gather(corners, tf.maximum(triangle_ids, 0))  # [B, H, W, 3, 2]
    return tf.reduce_sum(per_pixel * barycentrics[..., None], axis=-2) * valid


def sample_uv_map(uv_map: tf.Tensor, uv: tf.Tensor) -> tf.Tensor:
    """Bilinear lookup of UV maps [B, S, S, C] at UV coordinates [B, ..., 2] → [B, ..., C]."""
    size = tf.cast(tf.shape(uv_map)[1], tf.float32)
    texel = tf.stack([uv[..., 0] * size, (1.0 - uv[..., 1]) * size], axis=-1)
    return bilinear_sample(uv_map, texel)


def render_detailed(face_model: FaceModel, rendering: Rendering, albedo_map: tf.Tensor,
                    normal_map: tf.Tensor, angles: tf.Tensor, light: tf.Tensor) -> tf.Tensor:
    """Per-pixel shading C = t ⊙ Σ γ_b Φ_b(n) (Eq. 5) from UV albedo and normal maps.

    Args:
      face_model: the 3DMM (for UVs).
      rendering: a coarse :class:`Rendering` (supplies coverage and barycentrics).
      albedo_map: float32 [B, S, S, 3], detailed albedo in [0, 1].
      normal_map: float32 [B, S, S, 3], detail normals in model space.
      angles: float32 [B, 3], pose rotation (normals are rotated to camera space).
      light: float32 [B, 27], SH coefficients γ.
    Returns:
      the detailed render, float32 [B, H, W, 3], 0 on background.
    """
    return shade_uv_maps(face_model, rendering.triangle_ids, rendering.barycentrics,
                         albedo_map, normal_map, angles, light)


def shade_uv_maps(face_model: FaceModel, triangle_ids: tf.Tensor, barycentrics: tf.Tensor,
                  albedo_map: tf.Tensor, normal_map: tf.Tensor, angles: tf.Tensor,
                  light: tf.Tensor) -> tf.Tensor:
    """:func:`render_detailed` from the rasterizer's outputs directly.

    Args:
      triangle_ids: int32 [B, H, W] (−1 background); barycentrics: float32
        [B, H, W, 3]; the other arguments as :func:`render_detailed`.
    Returns:
      float32 [B, H, W, 3], 0 on background.
    """
    uv = pixel_uv(face_model, triangle_ids, barycentrics)
    albedo = sample_uv_map(albedo_map, uv)
    normals = _normalize(sample_uv_map(normal_map, uv))
    shape = tf.shape(normals)
    flat_n = rotate_normals(tf.reshape(normals, [shape[0], -1, 3]), angles)
    flat_a = tf.reshape(albedo, [shape[0], -1, 3])
    colors = tf.reshape(shade(flat_a, flat_n, light), shape)
    return colors * tf.cast(triangle_ids >= 0, tf.float32)[..., None]
