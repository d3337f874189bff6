"""5-point alignment and crop to the network's input (Deep3DFace's scheme).

Coordinates: image pixels, x to the right, y down, pixel centres at integer
coordinates. Affine transforms are float [2, 3] matrices ``A`` acting on
column vectors ``[x, y, 1]``: ``dst = A[:, :2] @ src + A[:, 2]``.

The five points are taken from the 68 Multi-PIE landmarks: the centre of the
eye on the image's left (points 36-41), the centre of the other eye (42-47),
the nose tip (30) and the mouth corners (48, 54).

The *standard* five points are the face model's mean 68 landmarks (decimetres;
x right, y up, z towards the camera) projected at zero pose with the
renderer's camera, ``recon_tf.camera.Camera.deep3d(image_size, kind)``
(perspective by default: camera at z = 10, focal 1015 px and principal point
at the image centre for 224², scaled with ``image_size``; or the scaled
orthographic camera). Projections are continuous coordinates (pixel 0 spans
[0, 1)); the standard points subtract ``PIXEL_CENTER`` = 0.5 to be in this
module's pixel-centre convention. So the mean face rendered with zero pose
and the same camera lands exactly on the aligned face. The template is the
face model's (``FaceModel.mean_landmarks_3d()``): the library has no default
model, callers pass it (``tools/preprocess.py`` records which model and
camera in its manifest).

Choice: like Deep3DFace, the default transform is **scale + translation only,
no in-plane rotation** (least squares over the 5 points). Head roll then stays
in the image for R-Net's pose to explain, the aligned images keep the natural
roll distribution the pose prior sees, and no interpolation blur is added by
rotation. ``rotate=True`` estimates a full similarity (Umeyama) instead.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import cv2
import numpy as np

from recon_tf.camera import PIXEL_CENTER, Camera

DEFAULT_IMAGE_SIZE = 224
DEFAULT_CAMERA_KIND = "perspective"

LEFT_EYE = tuple(range(36, 42))
RIGHT_EYE = tuple(range(42, 48))
NOSE_TIP = 30
MOUTH_LEFT = 48
MOUTH_RIGHT = 54


@dataclasses.dataclass
class AlignedFace:
    """An aligned crop.

    Attributes:
      image: uint8 [S, S, 3] RGB crop.
      landmarks: float32 [68, 2] landmarks in crop pixels.
      transform: float32 [2, 3] affine from source-image pixels to crop pixels.
      valid: uint8 [S, S], 255 where the crop pixel comes from inside the
        source image, 0 where it is padding.
    """

    image: np.ndarray
    landmarks: np.ndarray
    transform: np.ndarray
    valid: np.ndarray


def five_points(landmarks68: np.ndarray) -> np.ndarray:
    """float32 [5, 2]: left-eye centre, right-eye centre, nose tip, mouth corners."""
    lm = np.asarray(landmarks68, np.float64).reshape(68, -1)[:, :2]
    return np.stack([lm[list(LEFT_EYE)].mean(0), lm[list(RIGHT_EYE)].mean(0), lm[NOSE_TIP],
                     lm[MOUTH_LEFT], lm[MOUTH_RIGHT]]).astype(np.float32)


def alignment_camera(image_size: int = DEFAULT_IMAGE_SIZE,
                     camera_kind: str = DEFAULT_CAMERA_KIND) -> Camera:
    """The camera crops are aligned to: ``Camera.deep3d(image_size, camera_kind)``."""
    return Camera.deep3d(image_size, camera_kind)


def project_template(template_3d: np.ndarray, image_size: int = DEFAULT_IMAGE_SIZE,
                     camera_kind: str = DEFAULT_CAMERA_KIND) -> np.ndarray:
    """Project model landmarks at zero pose with :func:`alignment_camera`.

    Args:
      template_3d: float [N, 3] points (dm; x right, y up, z to the camera).
      image_size: crop side in pixels.
      camera_kind: ``"perspective"`` or ``"orthographic"``.
    Returns:
      float32 [N, 2] in the camera's continuous coordinates (pixel centres at
      +0.5), as :meth:`recon_tf.camera.Camera.project` gives.
    Raises:
      ValueError: a point at or behind the perspective camera.
    """
    import tensorflow as tf

    camera = alignment_camera(image_size, camera_kind)
    pts = np.asarray(template_3d, np.float32).reshape(-1, 3)
    if camera.kind == "perspective" and np.any(pts[:, 2] >= camera.distance):
        raise ValueError("template points must lie in front of the camera "
                         f"(z < {camera.distance})")
    return camera.project(tf.constant(pts[None])).numpy()[0].astype(np.float32)


def standard_points(template_3d: np.ndarray, image_size: int = DEFAULT_IMAGE_SIZE,
                    camera_kind: str = DEFAULT_CAMERA_KIND) -> np.ndarray:
    """The standard five points, float32 [5, 2], in pixels of an ``image_size``² crop.

    Args:
      template_3d: float [68, 3] model landmarks (``FaceModel.mean_landmarks_3d()``).
      image_size: crop side in pixels.
      camera_kind: the alignment camera's kind (see :func:`alignment_camera`).
    """
    return five_points(project_template(template_3d, image_size, camera_kind) - PIXEL_CENTER)


def estimate_transform(src: np.ndarray, dst: np.ndarray, rotate: bool = False) -> np.ndarray:
    """Least-squares transform mapping ``src`` points onto ``dst`` points.

    Args:
      src, dst: float [N, 2], N ≥ 2.
      rotate: False: isotropic scale + translation (least squares, the scale
        floored at the similarity's scale × cos 45° for points rolled further;
        see the code); True: similarity (Umeyama).
    Returns:
      float64 [2, 3] affine.
    """
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    ms, md = src.mean(0), dst.mean(0)
    a, b = src - ms, dst - md
    var = float(np.sum(a * a))
    if var <= 1e-12:
        raise ValueError("source points are degenerate (all coincide)")
    if rotate:
        u, sig, vt = np.linalg.svd(b.T @ a)
        d = np.diag([1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
        rot = u @ d @ vt
        scale = float(np.trace(np.diag(sig) @ d)) / var
        linear = scale * rot
    else:
        # Least squares gives |s| cos θ for points rolled by θ: it shrinks the face of a
        # tilted head and turns negative past 90°. Below 45° it is kept as is
        # (Deep3DFace); beyond, the similarity's scale × cos 45° stands in, so a
        # face lying on its side is framed like one tilted by 45°.
        similarity = float(np.hypot(np.sum(a * b), np.sum(a[:, 0] * b[:, 1]
                                                            - a[:, 1] * b[:, 0]))) / var
        scale = max(float(np.sum(a * b)) / var, similarity * np.sqrt(0.5))
        linear = scale * np.eye(2)
    if scale <= 0:
        raise ValueError("degenerate alignment (non-positive scale)")
    return np.concatenate([linear, (md - linear @ ms)[:, None]], 1)


def apply_transform(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a [2, 3] affine to float [N, 2] points → float32 [N, 2]."""
    m = np.asarray(matrix, np.float64)
    p = np.asarray(points, np.float64)
    return (p @ m[:, :2].T + m[:, 2]).astype(np.float32)


def compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The affine ``outer ∘ inner`` (apply ``inner`` first), float64 [2, 3]."""
    o = np.vstack([np.asarray(outer, np.float64), [0.0, 0.0, 1.0]])
    i = np.vstack([np.asarray(inner, np.float64), [0.0, 0.0, 1.0]])
    return (o @ i)[:2]


def invert(matrix: np.ndarray) -> np.ndarray:
    """The inverse of a [2, 3] affine, float64 [2, 3]."""
    return cv2.invertAffineTransform(np.asarray(matrix, np.float64))


def crop_matrix(center: Sequence[float], side: float, angle: float = 0.0, *,
                size: int) -> np.ndarray:
    """The 2×3 affine from image pixels to a ``size``² crop (pixel-centre coordinates).

    Args:
      center: (x, y) crop centre in image pixels.
      side: crop side in image pixels (the crop covers ``side`` pixels).
      angle: rotation of the crop in radians: the crop's x axis points along
        ``(cos angle, sin angle)`` in the image (y down), so a face whose eye
        line has that direction comes out level.
      size: crop side in crop pixels.
    Returns:
      float64 [2, 3] ``M`` with ``crop = M @ [x, y, 1]``.
    """
    s = size / float(side)
    c, si = np.cos(angle), np.sin(angle)
    rot = s * np.array([[c, si], [-si, c]])
    half = (size - 1) / 2.0
    t = np.array([half, half]) - rot @ np.asarray(center, np.float64)
    return np.concatenate([rot, t[:, None]], 1)


def warp_affine(image: np.ndarray, matrix: np.ndarray, size: tuple[int, int],
                border_value: int = 0) -> np.ndarray:
    """Resample ``image`` so that output(A·p) = image(p); anti-aliased.

    Args:
      image: uint8 [H, W, C] or [H, W].
      matrix: [2, 3] affine from image pixels to output pixels.
      size: output (width, height).
      border_value: value outside the source.
    Returns:
      uint8 [height, width, C] (or [height, width]).

    When the transform shrinks by more than 2×, only the source region that
    maps into the output is Gaussian-blurred (σ = (1/s − 1)/2) before bilinear
    sampling, so a large photo costs little and does not alias.
    """
    m = np.asarray(matrix, np.float64)
    scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
    if scale < 0.5:
        w, h = size
        corners = np.array([[-1, -1], [w, -1], [-1, h], [w, h]], np.float64)
        src_corners = apply_transform(invert(m), corners)
        margin = 2.0 / scale
        x0 = max(int(np.floor(src_corners[:, 0].min() - margin)), 0)
        y0 = max(int(np.floor(src_corners[:, 1].min() - margin)), 0)
        x1 = min(int(np.ceil(src_corners[:, 0].max() + margin)), image.shape[1])
        y1 = min(int(np.ceil(src_corners[:, 1].max() + margin)), image.shape[0])
        if x1 <= x0 or y1 <= y0:
            shape = (size[1], size[0]) + image.shape[2:]
            return np.full(shape, border_value, image.dtype)
        image = cv2.GaussianBlur(image[y0:y1, x0:x1], (0, 0), 0.5 * (1.0 / scale - 1.0))
        m = compose(m, np.array([[1.0, 0.0, x0], [0.0, 1.0, y0]]))
    channels = image.shape[2] if image.ndim == 3 else 1
    return cv2.warpAffine(image, m, size, flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(border_value,) * channels)


def valid_region(matrix: np.ndarray, source_size: tuple[int, int],
                 size: tuple[int, int]) -> np.ndarray:
    """uint8 [height, width] mask: 255 where an output pixel maps inside the source.

    Args:
      matrix: [2, 3] affine from source pixels to output pixels.
      source_size: source (width, height).
      size: output (width, height).
    """
    w, h = size
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    src = apply_transform(invert(matrix), np.stack([xs.ravel(), ys.ravel()], 1))
    inside = ((src[:, 0] >= -0.5) & (src[:, 0] <= source_size[0] - 0.5)
              & (src[:, 1] >= -0.5) & (src[:, 1] <= source_size[1] - 0.5))
    return (inside.reshape(h, w) * 255).astype(np.uint8)


def align_face(image: np.ndarray, landmarks68: np.ndarray, image_size: int,
               template_3d: np.ndarray, rotate: bool = False,
               camera_kind: str = DEFAULT_CAMERA_KIND) -> AlignedFace:
    """Align and crop a face so its five points match the standard five points.

    Args:
      image: uint8 [H, W, 3] RGB.
      landmarks68: float [68, 2] in ``image`` pixels.
      image_size: output side S in pixels.
      template_3d: float [68, 3] the face model's mean landmarks.
      rotate: also remove in-plane rotation (default False, see module docstring).
      camera_kind: the alignment camera's kind (see :func:`alignment_camera`).
    Returns:
      An :class:`AlignedFace`; its transform maps ``image`` pixels to crop pixels.
    """
    dst = standard_points(template_3d, image_size, camera_kind)
    matrix = estimate_transform(five_points(landmarks68), dst, rotate=rotate)
    size = (image_size, image_size)
    crop = warp_affine(image, matrix, size)
    valid = valid_region(matrix, (image.shape[1], image.shape[0]), size)
    return AlignedFace(crop, apply_transform(matrix, landmarks68),
                       matrix.astype(np.float32), valid)
