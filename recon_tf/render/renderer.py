"""Differentiable rendering of a 3DMM face: I_R = R(M(α, β, δ), p, C(γ)) (§3.2).

The pipeline, each step an ordinary TF op except the rasterizer:

1. vertices and albedo from the face model (Eq. 1-3);
2. camera-space vertices ``R M + t`` and rotated normals (Eq. 4);
3. per-vertex SH shading (Eq. 5) — Gouraud shading, as Deep3DFace;
4. rasterization (the custom op) → triangle ids, barycentrics;
5. attributes interpolated per pixel (``rasterizer.interpolate``), so
   gradients reach shape, albedo, pose and light through colours and through
   the barycentrics' gradient w.r.t. vertex positions.

Outputs are a flat :class:`Rendering` (no nested dicts).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import tensorflow as tf

from recon_tf.camera import Camera, rigid_transform, rotate_normals
from recon_tf.face_model import FaceModel
from recon_tf.lighting import shade


class Rendering(NamedTuple):
    """Everything a coarse render produces (B batch, H×W image, N vertices).

    Attributes:
      image: I_R, float32 [B, H, W, 3], shaded colour in the photos' sRGB-encoded
        [0, 1] space (unclipped); 0 on background.
      mask: float32 [B, H, W, 1], 1 where a face triangle covers the pixel.
      depth: float32 [B, H, W, 1], camera distance: how far the surface lies
        in front of the camera along its axis (``Camera.depth``, model units,
        decimetres); 0 on background. (The rasterizer's third output is
        ``z_ndc``, the normalised device z/w, not a distance.)
      landmarks: float32 [B, 68, 2], projected 68 landmarks in pixels
        (x right, y down).
      vertices: float32 [B, N, 3], camera-space vertices ``R S + t``.
      normals: float32 [B, N, 3], camera-space unit vertex normals.
      albedo: float32 [B, N, 3], per-vertex albedo T.
      colors: float32 [B, N, 3], per-vertex shaded colours C.
      screen: float32 [B, N, 2], every vertex projected to pixels.
      triangle_ids: int32 [B, H, W], −1 on background.
      barycentrics: float32 [B, H, W, 3].
    """

    image: tf.Tensor
    mask: tf.Tensor
    depth: tf.Tensor
    landmarks: tf.Tensor
    vertices: tf.Tensor
    normals: tf.Tensor
    albedo: tf.Tensor
    colors: tf.Tensor
    screen: tf.Tensor
    triangle_ids: tf.Tensor
    barycentrics: tf.Tensor


RasterizeFn = Callable[[tf.Tensor, tf.Tensor, int, int], tuple[tf.Tensor, tf.Tensor, tf.Tensor]]


def _default_rasterize() -> RasterizeFn:
    from recon_tf.render.rasterizer import rasterize

    return rasterize


def render_face(face_model: FaceModel, coeffs: tf.Tensor, camera: Camera,
                rasterize_fn: RasterizeFn | None = None) -> Rendering:
    """Render faces from flat coefficients.

    Args:
      face_model: the 3DMM.
      coeffs: float32 [B, face_model.layout.total].
      camera: projection and image size.
      rasterize_fn: rasterizer (default: the custom op); the pure-TF
        reference has the same signature.
    Returns:
      a :class:`Rendering`.
    """
    c = face_model.layout.split(coeffs)
    vertices = face_model.shape(c.identity, c.expression)
    albedo = face_model.albedo(c.albedo)
    return render_mesh(face_model, vertices, albedo, c.angles, c.translation, c.light, camera,
                       rasterize_fn)


def render_mesh(face_model: FaceModel, vertices: tf.Tensor, albedo: tf.Tensor,
                angles: tf.Tensor, translation: tf.Tensor, light: tf.Tensor, camera: Camera,
                rasterize_fn: RasterizeFn | None = None) -> Rendering:
    """Render model-space geometry and albedo with pose and SH light.

    Args:
      face_model: supplies triangles and landmark ids.
      vertices: float32 [B, N, 3] model-space shape S.
      albedo: float32 [B, N, 3] per-vertex albedo T.
      angles, translation: float32 [B, 3] pose.
      light: float32 [B, 27] SH coefficients γ.
      camera: projection and image size.
      rasterize_fn: rasterizer (default: the custom op).
    """
    from recon_tf.render.rasterizer import interpolate

    rasterize_fn = rasterize_fn or _default_rasterize()
    cam_vertices = rigid_transform(vertices, angles, translation)
    normals = rotate_normals(face_model.vertex_normals(vertices), angles)
    colors = shade(albedo, normals, light)
    h, w = camera.image_size
    ids, bary, _ = rasterize_fn(camera.clip(cam_vertices), face_model.triangles, h, w)
    mask = tf.cast(ids >= 0, tf.float32)[..., None]
    attrs = tf.concat([colors, camera.depth(cam_vertices)[..., None]], axis=-1)
    pixels = interpolate(attrs, face_model.triangles, ids, bary)
    screen = camera.project(cam_vertices)
    return Rendering(
        image=pixels[..., :3], mask=mask, depth=pixels[..., 3:4],
        landmarks=tf.gather(screen, face_model.lmk68, axis=1),
        vertices=cam_vertices, normals=normals, albedo=albedo, colors=colors, screen=screen,
        triangle_ids=ids, barycentrics=bary)


def project_landmarks(face_model: FaceModel, coeffs: tf.Tensor, camera: Camera) -> tf.Tensor:
    """The 68 landmarks projected to pixels, float32 [B, 68, 2], without rasterizing."""
    c = face_model.layout.split(coeffs)
    lmk = face_model.landmarks(face_model.shape(c.identity, c.expression))
    return camera.project(rigid_transform(lmk, c.angles, c.translation))


def composite(rendering: Rendering, background: tf.Tensor) -> tf.Tensor:
    """Render over a background image: mask·I_R + (1 − mask)·background, [B, H, W, 3]."""
    return rendering.mask * rendering.image + (1.0 - rendering.mask) * background
