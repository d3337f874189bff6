"""UV-space operations for the fine stage (§3.4): attributes → UV maps, and
unwrapping an image into UV (DECA's ``world2uv`` approach).

A UV map is an image [S, S] over the texture square: texel (i, j) covers
u ∈ [j/S, (j+1)/S), v ∈ [1 − (i+1)/S, 1 − i/S) — row 0 is v = 1, the top, as
in a texture image (OBJ's ``map_Kd``). The UV layout is rasterized once
(:func:`rasterize_uv_layout`) with the same op as images: each texel gets a
triangle id and barycentrics. Per-corner UV ids (``tri_uv``) allow seams;
triangle ids index the mesh triangles, so per-vertex attributes are
interpolated with the mesh's vertex ids.

Unwrapping: every texel's mesh point is projected to the image (its screen
position is an attribute interpolated in UV) and the image is sampled there
bilinearly, differentiably in the image and in the positions. A texel is
visible when it lies inside the image, its surface faces the camera and it
is not occluded (its depth matches the rendered depth buffer).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import tensorflow as tf

from recon_tf.face_model import FaceModel


class UVLayout(NamedTuple):
    """A rasterized UV layout (batch-independent).

    Attributes:
      triangle_ids: int32 [1, S, S], mesh triangle per texel, −1 outside the layout.
      barycentrics: float32 [1, S, S, 3].
      mask: float32 [1, S, S, 1], 1 inside the layout.
      triangles: int32 [T, 3], the mesh's vertex ids.
    """

    triangle_ids: tf.Tensor
    barycentrics: tf.Tensor
    mask: tf.Tensor
    triangles: tf.Tensor

    @property
    def size(self) -> int:
        return int(self.triangle_ids.shape[1])


def uv_to_clip(uv: tf.Tensor) -> tf.Tensor:
    """UV points [U, 2] in [0, 1]² → clip coordinates [1, U, 4] (x = 2u − 1, y = 2v − 1)."""
    uv = tf.convert_to_tensor(uv, tf.float32)
    xy = uv * 2.0 - 1.0
    n = tf.shape(uv)[0]
    return tf.concat([xy, tf.zeros([n, 1]), tf.ones([n, 1])], axis=-1)[None]


def rasterize_uv_layout(face_model: FaceModel, size: int = 256, rasterize_fn=None) -> UVLayout:
    """Rasterize the face model's UV layout at ``size`` × ``size`` texels.

    Args:
      face_model: supplies ``uv``, ``tri_uv`` and ``triangles``.
      size: UV map resolution S (configurable; the fine stage uses 256 by default).
      rasterize_fn: rasterizer (default: the custom op).
    """
    if rasterize_fn is None:
        from recon_tf.render.rasterizer import rasterize as rasterize_fn
    ids, bary, _ = rasterize_fn(uv_to_clip(face_model.uv), face_model.tri_uv, size, size)
    mask = tf.cast(ids >= 0, tf.float32)[..., None]
    return UVLayout(ids, bary, mask, face_model.triangles)


def attributes_to_uv(attributes: tf.Tensor, layout: UVLayout) -> tf.Tensor:
    """Interpolate per-vertex attributes into UV maps.

    Args:
      attributes: float32 [B, N, C] (e.g. albedo, positions, normals).
      layout: from :func:`rasterize_uv_layout`.
    Returns:
      float32 [B, S, S, C], zeros outside the layout.
    """
    from recon_tf.render.rasterizer import interpolate

    attributes = tf.convert_to_tensor(attributes, tf.float32)
    b = tf.shape(attributes)[0]
    ids = tf.tile(layout.triangle_ids, [b, 1, 1])
    bary = tf.tile(layout.barycentrics, [b, 1, 1, 1])
    return interpolate(attributes, layout.triangles, ids, bary)


def bilinear_sample(image: tf.Tensor, coords: tf.Tensor) -> tf.Tensor:
    """Sample images at continuous pixel coordinates, bilinearly, differentiably.

    Args:
      image: float32 [B, H, W, C].
      coords: float32 [B, ..., 2], (x right, y down) in pixels with pixel
        (i, j)'s centre at (j + 0.5, i + 0.5); points outside are clamped to
        the border.
    Returns:
      float32 [B, ..., C].
    """
    image = tf.convert_to_tensor(image, tf.float32)
    coords = tf.convert_to_tensor(coords, tf.float32)
    shape = tf.shape(coords)
    b = shape[0]
    flat = tf.reshape(coords, [b, -1, 2])
    h, w = tf.shape(image)[1], tf.shape(image)[2]
    x = tf.clip_by_value(flat[..., 0] - 0.5, 0.0, tf.cast(w - 1, tf.float32))
    y = tf.clip_by_value(flat[..., 1] - 0.5, 0.0, tf.cast(h - 1, tf.float32))
    x0 = tf.floor(x)
    y0 = tf.floor(y)
    fx, fy = (x - x0)[..., None], (y - y0)[..., None]
    x0i, y0i = tf.cast(x0, tf.int32), tf.cast(y0, tf.int32)
    x1i, y1i = tf.minimum(x0i + 1, w - 1), tf.minimum(y0i + 1, h - 1)

    def gather(yi, xi):
        return tf.gather_nd(image, tf.stack([yi, xi], -1), batch_dims=1)

    top = gather(y0i, x0i) * (1 - fx) + gather(y0i, x1i) * fx
    bottom = gather(y1i, x0i) * (1 - fx) + gather(y1i, x1i) * fx
    out = top * (1 - fy) + bottom * fy
    return tf.reshape(out, tf.concat([shape[:-1], tf.shape(image)[-1:]], 0))


def unwrap_image(image: tf.Tensor, screen: tf.Tensor, cam_normals: tf.Tensor,
                 vertex_depth: tf.Tensor, depth_buffer: tf.Tensor, layout: UVLayout,
                 depth_tolerance: float = 0.05) -> tuple[tf.Tensor, tf.Tensor]:
    """Unwrap an image into UV space with a visibility mask (DECA's world2uv).

    Args:
      image: float32 [B, H, W, C] (the input photo, or a render).
      screen: float32 [B, N, 2], vertices projected to pixels.
      cam_normals: float32 [B, N, 3], camera-space vertex normals.
      vertex_depth: float32 [B, N], each vertex's distance in front of the camera.
      depth_buffer: float32 [B, H, W, 1], the rendered depth (0 on background),
        e.g. ``Rendering.depth``.
      layout: from :func:`rasterize_uv_layout`.
      depth_tolerance: occlusion tolerance in model units (decimetres).
    Returns:
      (uv_image float32 [B, S, S, C], visibility float32 [B, S, S, 1] in {0, 1}).
    """
    attrs = tf.concat([screen, cam_normals[..., 2:3], vertex_depth[..., None]], axis=-1)
    uv_attrs = attributes_to_uv(attrs, layout)  # [B, S, S, 4]
    pos = uv_attrs[..., :2]
    uv_image = bilinear_sample(image, pos)
    h = tf.cast(tf.shape(image)[1], tf.float32)
    w = tf.cast(tf.shape(image)[2], tf.float32)
    inside = ((pos[..., 0] >= 0) & (pos[..., 0] <= w) & (pos[..., 1] >= 0) & (pos[..., 1] <= h))
    facing = uv_attrs[..., 2] > 0.0
    rendered = bilinear_sample(depth_buffer, pos)[..., 0]
    unoccluded = (rendered > 0) & (uv_attrs[..., 3] <= rendered + depth_tolerance)
    visible = inside & facing & unoccluded & (layout.mask[..., 0] > 0)
    visibility = tf.cast(visible, tf.float32)[..., None]
    return uv_image * visibility, visibility


def mirror_texels(position_map: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Each texel's left–right mirror texel, for filling unseen maps from the seen side.

    Args:
      position_map: float [U, U, 3], a symmetric shape (e.g. the face model's
        mean) in UV, model frame (x across the face).
      mask: [U, U] or [U, U, 1], nonzero inside the layout.
    Returns:
      int32 [U·U] flat index of the layout texel nearest to the texel's mirror
      image (x → −x), or −1 outside the layout or where none lies within twice
      the median texel spacing (an asymmetric part of the shape).
    """
    from scipy.spatial import cKDTree

    flat_mask = np.asarray(mask).reshape(-1)
    inside = np.flatnonzero(flat_mask > 0.5)
    points = np.asarray(position_map, np.float64).reshape(-1, 3)[inside]
    tree = cKDTree(points)
    spacing = float(np.median(tree.query(points, k=2)[0][:, 1]))
    dist, nearest = tree.query(points * np.array([-1.0, 1.0, 1.0]))
    out = np.full(flat_mask.shape[0], -1, np.int32)
    ok = dist <= 2.0 * spacing
    out[inside[ok]] = inside[nearest[ok]]
    return out
