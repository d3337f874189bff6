"""Camera model, Eq. (4): v = Π(f R M_i + t).

Pose p = {R, t}: R from three Euler angles (pitch about x, yaw about y, roll
about z, radians), ``R = R_z(roll) R_y(yaw) R_x(pitch)`` (Deep3DFace's order,
the same as tensorflow-graphics' ``rotation_matrix_3d.from_euler``); t in
model units (decimetres). Camera space = ``R M_i + t`` (model space: x to
image right, y up, z towards the camera).

Two projections Π, chosen by ``--camera``:

* ``perspective`` (default; Deep3DFace): a pinhole at (0, 0, ``distance``)
  looking down −z, focal 1015 px and principal point 112 for a 224² image
  (both scale with image size), camera distance 10 dm.
* ``orthographic``: the paper's scaled orthographic Π with a fixed scale
  factor f (pixels per model unit; default ``1015 / 10`` so a face at the
  origin has the same size under both).

Image coordinates are continuous pixels, x right, y down, with pixel (i, j)
covering [j, j+1) × [i, i+1) (its centre at (j + 0.5, i + 0.5)); landmarks
read from data (OpenCV / ``.pts`` convention, centres at integers) are
compared after adding ``PIXEL_CENTER`` = 0.5. The
rasterizer takes homogeneous clip coordinates (OpenGL: visible where
−w ≤ x, y, z ≤ w; NDC y = +1 is the top row), made by :meth:`clip`.
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

DEEP3D_FOCAL = 1015.0
# Projected coordinates are continuous (pixel 0 spans [0, 1)); landmark files and
# OpenCV put pixel centres at integers. data_landmarks + PIXEL_CENTER = projected.
PIXEL_CENTER = 0.5
DEEP3D_IMAGE_SIZE = 224
DEEP3D_CAMERA_DISTANCE = 10.0


def rotation_matrix(angles: tf.Tensor) -> tf.Tensor:
    """Rotation matrices from Euler angles.

    Args:
      angles: float32 [B, 3] (pitch, yaw, roll) in radians.
    Returns:
      float32 [B, 3, 3], ``R = R_z(roll) @ R_y(yaw) @ R_x(pitch)``.
    """
    angles = tf.convert_to_tensor(angles, tf.float32)
    if angles.shape.rank != 2 or angles.shape[-1] != 3:
        raise ValueError(f"angles must have shape [B, 3], got {angles.shape}")
    x, y, z = angles[:, 0], angles[:, 1], angles[:, 2]
    one, zero = tf.ones_like(x), tf.zeros_like(x)

    def mat(rows):
        return tf.stack([tf.stack(r, axis=-1) for r in rows], axis=-2)

    rx = mat([[one, zero, zero], [zero, tf.cos(x), -tf.sin(x)], [zero, tf.sin(x), tf.cos(x)]])
    ry = mat([[tf.cos(y), zero, tf.sin(y)], [zero, one, zero], [-tf.sin(y), zero, tf.cos(y)]])
    rz = mat([[tf.cos(z), -tf.sin(z), zero], [tf.sin(z), tf.cos(z), zero], [zero, zero, one]])
    return rz @ ry @ rx


def rigid_transform(points: tf.Tensor, angles: tf.Tensor, translation: tf.Tensor) -> tf.Tensor:
    """Camera-space points ``R M_i + t``.

    Args:
      points: float32 [B, N, 3] model-space points.
      angles: float32 [B, 3] Euler angles (radians).
      translation: float32 [B, 3].
    Returns:
      float32 [B, N, 3].
    """
    points = tf.convert_to_tensor(points, tf.float32)
    translation = tf.convert_to_tensor(translation, tf.float32)
    if points.shape.rank != 3 or points.shape[-1] != 3:
        raise ValueError(f"points must have shape [B, N, 3], got {points.shape}")
    rot = rotation_matrix(angles)
    return tf.linalg.matmul(points, rot, transpose_b=True) + translation[:, None, :]


def rotate_normals(normals: tf.Tensor, angles: tf.Tensor) -> tf.Tensor:
    """Rotate model-space normals [B, N, 3] into camera space (``R n``)."""
    return tf.linalg.matmul(tf.convert_to_tensor(normals, tf.float32),
                            rotation_matrix(angles), transpose_b=True)


@dataclasses.dataclass(frozen=True)
class Camera:
    """Projection Π of camera-space points to pixels and to clip space.

    Attributes:
      kind: ``"perspective"`` or ``"orthographic"``.
      image_size: (height, width) in pixels.
      focal: perspective focal length in pixels (at ``image_size``).
      distance: camera z position in model units (perspective), or the depth
        offset used for z-buffering (orthographic).
      ortho_scale: orthographic scale f, pixels per model unit.
      near, far: clip planes, distances in front of the camera.
      principal_point: (cx, cy) in pixels (continuous convention), or None
        for the image centre. A camera for an uncropped photo has its
        principal point wherever the aligned crop's centre maps to
        (:meth:`for_source_image`).
    """

    kind: str = "perspective"
    image_size: tuple[int, int] = (DEEP3D_IMAGE_SIZE, DEEP3D_IMAGE_SIZE)
    focal: float = DEEP3D_FOCAL
    distance: float = DEEP3D_CAMERA_DISTANCE
    ortho_scale: float = DEEP3D_FOCAL / DEEP3D_CAMERA_DISTANCE
    near: float = 1.0
    far: float = 50.0
    principal_point: tuple[float, float] | None = None

    def __post_init__(self):
        if self.kind not in ("perspective", "orthographic"):
            raise ValueError(f"camera kind must be 'perspective' or 'orthographic', "
                             f"got {self.kind!r}")
        if min(self.image_size) < 1:
            raise ValueError(f"image_size must be positive, got {self.image_size}")
        if not 0 < self.near < self.far:
            raise ValueError(f"need 0 < near < far, got {self.near}, {self.far}")

    @classmethod
    def deep3d(cls, image_size: int = DEEP3D_IMAGE_SIZE, kind: str = "perspective") -> Camera:
        """Deep3DFace's camera, focal and orthographic scale scaled to ``image_size``."""
        s = image_size / DEEP3D_IMAGE_SIZE
        return cls(kind=kind, image_size=(image_size, image_size), focal=DEEP3D_FOCAL * s,
                   ortho_scale=DEEP3D_FOCAL * s / DEEP3D_CAMERA_DISTANCE)

    @property
    def center(self) -> tuple[float, float]:
        """Principal point (cx, cy) in pixels (default: the image centre)."""
        if self.principal_point is not None:
            return float(self.principal_point[0]), float(self.principal_point[1])
        return self.image_size[1] / 2.0, self.image_size[0] / 2.0

    def for_source_image(self, crop_transform, source_size: tuple[int, int],
                         max_anisotropy: float = 1e-6) -> Camera:
        """The camera that images the same 3D scene onto the uncropped photo.

        Args:
          crop_transform: float [2, 3] affine, source pixels → crop pixels
            (pixel centres at integers), a scale + translation
            ``[[sx, 0, tx], [0, sy, ty]]`` with sx = sy as :mod:`recon_tf.preprocess.align`
            makes by default (a rotation is rejected: render in the crop and
            warp instead).
          source_size: (height, width) of the photo in pixels.
          max_anisotropy: largest accepted |sy − sx| / sx. A photo decoded at a
            reduced size (a side over the decoder's ``max_side``) has sides rounded
            to whole pixels, so its x and y scales differ by up to about one pixel
            over the shorter side; the caller passes that bound. The camera then
            uses the mean scale for the focal length and each axis's own scale
            for the principal point, so its projection is off by at most about
            half a reduced pixel at the photo's edges.
        Returns:
          a camera with focal / s (or orthographic scale / s), the principal
          point mapped back to the photo and ``image_size = source_size``:
          projecting with it gives the crop projection mapped through the
          inverse transform (exactly when sx = sy).
        Raises:
          ValueError: a rotation or shear, a non-positive scale, or x and y
            scales further apart than ``max_anisotropy``.
        """
        a = [[float(v) for v in row] for row in crop_transform]
        sx, sy = a[0][0], a[1][1]
        if sx <= 0 or abs(a[0][1]) > 1e-6 * sx or abs(a[1][0]) > 1e-6 * sx or \
                abs(sy - sx) > max(max_anisotropy, 1e-6) * sx:
            raise ValueError(f"crop_transform must be scale + translation, got {a}")
        s = 0.5 * (sx + sy)
        cx, cy = self.center
        # Continuous crop coords u_c = s (u_s - 0.5) + t + 0.5 (centres at integers + 0.5).
        ux = (cx - PIXEL_CENTER - a[0][2]) / sx + PIXEL_CENTER
        uy = (cy - PIXEL_CENTER - a[1][2]) / sy + PIXEL_CENTER
        return dataclasses.replace(
            self, image_size=(int(source_size[0]), int(source_size[1])), focal=self.focal / s,
            ortho_scale=self.ortho_scale / s, principal_point=(ux, uy))

    def window(self, x0: int, y0: int, width: int, height: int) -> Camera:
        """The camera that renders only the pixels ``[y0, y0 + height) × [x0, x0 + width)``
        of this one's image, pixel for pixel (the principal point shifted by the window's
        corner)."""
        cx, cy = self.center
        return dataclasses.replace(self, image_size=(int(height), int(width)),
                                   principal_point=(cx - x0, cy - y0))

    def depth(self, points: tf.Tensor) -> tf.Tensor:
        """Distance in front of the camera, float32 [B, N] (positive = visible)."""
        return self.distance - points[..., 2]

    def project(self, points: tf.Tensor) -> tf.Tensor:
        """Π: camera-space points [B, N, 3] → pixel coordinates [B, N, 2] (x right, y down)."""
        points = tf.convert_to_tensor(points, tf.float32)
        cx, cy = self.center
        if self.kind == "perspective":
            scale = self.focal / self.depth(points)
        else:
            scale = tf.fill(tf.shape(points)[:-1], tf.constant(self.ortho_scale, tf.float32))
        return tf.stack([cx + scale * points[..., 0], cy - scale * points[..., 1]], axis=-1)

    def clip(self, points: tf.Tensor) -> tf.Tensor:
        """Camera-space points [B, N, 3] → homogeneous clip coordinates [B, N, 4].

        x_ndc = 2 u / W − 1 and y_ndc = 1 − 2 v / H for the pixel (u, v) that
        :meth:`project` gives; z_ndc maps depth ``near`` → −1, ``far`` → +1.
        """
        points = tf.convert_to_tensor(points, tf.float32)
        h, w = self.image_size
        cx, cy = self.center
        d = self.depth(points)
        n, f = self.near, self.far
        if self.kind == "perspective":
            x = (2.0 * self.focal / w) * points[..., 0] + (2.0 * cx / w - 1.0) * d
            y = (2.0 * self.focal / h) * points[..., 1] + (1.0 - 2.0 * cy / h) * d
            z = (f + n) / (f - n) * d - 2.0 * f * n / (f - n)
            return tf.stack([x, y, z, d], axis=-1)
        x = (2.0 * self.ortho_scale / w) * points[..., 0] + (2.0 * cx / w - 1.0)
        y = (2.0 * self.ortho_scale / h) * points[..., 1] + (1.0 - 2.0 * cy / h)
        z = (2.0 * d - (f + n)) / (f - n)
        return tf.stack([x, y, z, tf.ones_like(d)], axis=-1)
