"""MediaPipe FaceMesh: 468 dense 3D face landmarks from a TF.js graph model.

The network (``landmarks/facemesh_tfjs``, Apache-2.0 weights) takes a
192×192 RGB crop in [0, 1] around a face and returns 468 points (x, y in crop
pixels, z a relative depth in the same pixel scale) and a face score.

Coordinates: image points use the pixel-centre convention of OpenCV (pixel
``(row, col)`` is centred at ``(x, y) = (col, row)``). The network's raw x, y
use the edge convention (the crop spans [0, 192]), as MediaPipe's own
projection assumes, so ``0.5`` is subtracted before mapping them back. (A
check with mirrored crops agrees: the raw x of a midline point plus its raw x
in the mirrored crop averaged 191.7 ± 0.2 over 42 faces × 4 jittered crops;
192 is expected for the edge convention, 191 for pixel centres.)

Crops are made with explicit 2×3 affine matrices (image pixels → crop
pixels) and :func:`recon_tf.preprocess.align.warp_affine` (bilinear, Gaussian
pre-blur when shrinking by more than 2×); points are mapped back through the
inverse matrices exactly.

:meth:`FaceMesh.detect` crops a square of side ``1.5 × max(w, h)`` around a
face box, then (``refine=True``) crops again around the mesh's own box
(× 1.5), rotated so that the outer eye corners (MediaPipe indices 33 and 263)
are level, as MediaPipe's tracking does: that is the framing the network was
trained on.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from recon_tf.assets import asset_path
from recon_tf.nets.tfjs import load_graph_model
from recon_tf.preprocess.align import apply_transform, crop_matrix, invert, warp_affine

MODEL_DIR = "landmarks/facemesh_tfjs"
MODEL_JSON = f"{MODEL_DIR}/facemesh.json"
INPUT_SIZE = 192
NUM_POINTS = 468
RIGHT_EYE_OUTER = 33  # the subject's right eye (left in a frontal photo)
LEFT_EYE_OUTER = 263
BOX_SCALE = 1.5
_INPUT = "input_1:0"
_MESH = "Identity_2:0"
_SCORE = "Identity_1:0"
# The network's x, y place the crop's first pixel centre at 0.5 (edge convention).
_RAW_OFFSET = 0.5

Box = Sequence[float]


def box_crop(box: Box, scale: float = BOX_SCALE) -> tuple[np.ndarray, float]:
    """Centre and side of the square crop around a face box.

    Args:
      box: (x, y, w, h) in image pixels, OpenCV-rect style: the box covers
        pixels x … x + w − 1 (so its centre is x + (w − 1)/2).
      scale: enlargement of the longer box side.
    Returns:
      (float64 [2] centre (x, y), side in pixels).
    """
    x, y, w, h = (float(v) for v in box)
    center = np.array([x + (w - 1) / 2.0, y + (h - 1) / 2.0])
    return center, max(w, h) * scale


def mesh_crop(points: np.ndarray, scale: float = BOX_SCALE) -> tuple[np.ndarray, float, float]:
    """Centre, side and angle of the eye-levelled crop around a mesh's own box.

    Args:
      points: float [468, ≥2] mesh points in image pixels.
      scale: enlargement of the longer side of the (rotated) mesh box.
    Returns:
      (float64 [2] centre, side, angle in radians) for :func:`crop_matrix`.
    """
    p = np.asarray(points, np.float64)[:, :2]
    eye = p[LEFT_EYE_OUTER] - p[RIGHT_EYE_OUTER]
    angle = float(np.arctan2(eye[1], eye[0]))
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, s], [-s, c]])  # image → levelled frame
    q = p @ rot.T
    lo, hi = q.min(0), q.max(0)
    center = rot.T @ ((lo + hi) / 2.0)
    return center, float(max(hi - lo)) * scale, angle


def _check_image(image: np.ndarray) -> np.ndarray:
    """RGB uint8 (0–255) stays uint8; anything else → float32 (expected in [0, 1])."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB image [H, W, 3], got shape {image.shape}")
    return image if image.dtype == np.uint8 else image.astype(np.float32)


def _crop(image: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """float32 [192, 192, 3] in [0, 1]: ``image`` resampled through ``matrix``."""
    crop = warp_affine(image, matrix, (INPUT_SIZE, INPUT_SIZE)).astype(np.float32)
    return crop / np.float32(255.0) if image.dtype == np.uint8 else crop


class FaceMesh:
    """MediaPipe FaceMesh landmarker.

    Args:
      path: the model JSON or its directory; default: the shared asset
        ``landmarks/facemesh_tfjs/facemesh.json``.
      batch_size: crops per network call in :meth:`predict_crops`.
      refine_passes: eye-levelled passes run after the box pass when
        ``refine=True`` (on the iBUG photos with ground truth, a second pass
        still lowered the eye/nose/mouth-corner error a little: 7.4 → 5.7 %
        of the eye distance on einstein.jpg, unchanged on the others).
    Raises:
      AssetMissingError: the model files are missing.
    """

    input_size = INPUT_SIZE
    num_points = NUM_POINTS

    def __init__(self, path: str | None = None, batch_size: int = 16, refine_passes: int = 2):
        self.path = path or asset_path(MODEL_JSON)
        self.batch_size = batch_size
        self.refine_passes = refine_passes
        self._net = load_graph_model(self.path, _INPUT, [_MESH, _SCORE])  # cached per path

    def predict_crops(self, crops: np.ndarray | tf.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Run the network on face crops.

        Args:
          crops: float32 [N, 192, 192, 3] RGB in [0, 1].
        Returns:
          (points float32 [N, 468, 3]: x, y in crop pixels, pixel-centre
          convention (first pixel centred at 0), z relative depth in crop
          pixels, smaller = closer to the camera, about zero-mean over the
          mesh;
          scores float32 [N]: face probability in [0, 1]).
        """
        crops = np.asarray(crops, np.float32)
        if crops.ndim != 4 or crops.shape[1:] != (INPUT_SIZE, INPUT_SIZE, 3):
            raise ValueError(f"expected crops [N, {INPUT_SIZE}, {INPUT_SIZE}, 3], "
                             f"got {crops.shape}")
        points, scores = [], []
        for i in range(0, len(crops), self.batch_size):
            out = self._net(crops[i:i + self.batch_size])
            points.append(out[_MESH].numpy().reshape(-1, NUM_POINTS, 3))
            scores.append(out[_SCORE].numpy().reshape(-1))
        if not points:
            return (np.zeros((0, NUM_POINTS, 3), np.float32), np.zeros((0,), np.float32))
        pts = np.concatenate(points)
        pts[..., :2] -= _RAW_OFFSET
        return pts.astype(np.float32), np.concatenate(scores).astype(np.float32)

    def _run(self, images: Sequence[np.ndarray],
             matrices: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Crop every image with its matrix, run the net, map points back to image pixels."""
        crops = np.stack([_crop(img, m) for img, m in zip(images, matrices)])
        points, scores = self.predict_crops(crops)
        out = np.empty_like(points)
        for i, m in enumerate(matrices):
            out[i, :, :2] = apply_transform(invert(m), points[i, :, :2])
            scale = float(np.sqrt(abs(np.linalg.det(np.asarray(m)[:, :2]))))
            out[i, :, 2] = points[i, :, 2] / scale
        return out, scores

    def detect_batch(self, images: Sequence[np.ndarray], boxes: Sequence[Box],
                     refine: bool = True, angles: Sequence[float] | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
        """Landmarks for one face per (image, box) pair, batched through the net.

        Args:
          images: N RGB images, uint8 [H, W, 3] (0–255) or float [H, W, 3] in
            [0, 1]; sizes may differ. The same image may appear several times.
          boxes: N face boxes (x, y, w, h) in pixels of the matching image
            (see :func:`box_crop`).
          refine: run ``refine_passes`` more passes, each on the previous
            mesh's own eye-levelled box.
          angles: per face, the eye line's angle (radians, image y down, e.g.
            :func:`recon_tf.preprocess.landmarks.eye_roll` of the detector's
            keypoints) that levels the first crop; None: upright first crops. A
            head tilted by more than ≈ 45° needs it: the upright first pass
            loses the face, and the refined passes level by that pass's eyes.
        Returns:
          (points float32 [N, 468, 3]: x, y in image pixels (pixel centres at
          integer coordinates), z in the same pixel scale;
          scores float32 [N] in [0, 1] from the last pass).
        """
        if len(images) != len(boxes):
            raise ValueError(f"{len(images)} images but {len(boxes)} boxes")
        if not len(images):
            return np.zeros((0, NUM_POINTS, 3), np.float32), np.zeros((0,), np.float32)
        images = [_check_image(img) for img in images]
        if angles is None:
            angles = [0.0] * len(boxes)
        matrices = []
        for box, angle in zip(boxes, angles):
            center, side = box_crop(box)
            matrices.append(crop_matrix(center, side, float(angle), size=INPUT_SIZE))
        points, scores = self._run(images, matrices)
        for _ in range(self.refine_passes if refine else 0):
            matrices = [crop_matrix(*mesh_crop(p), size=INPUT_SIZE) for p in points]
            points, scores = self._run(images, matrices)
        return points, scores

    def detect(self, image: np.ndarray, box: Box, refine: bool = True,
               angle: float = 0.0) -> tuple[np.ndarray, float]:
        """Landmarks of the face in ``box``.

        Args:
          image: RGB uint8 [H, W, 3] (0–255) or float [H, W, 3] in [0, 1].
          box: (x, y, w, h) face box in image pixels, e.g. from MTCNN.
          refine: run ``refine_passes`` more passes on the mesh's own
            eye-levelled box.
          angle: the first crop's rotation (``angles`` of :meth:`detect_batch`).
        Returns:
          (points float32 [468, 3]: x, y in image pixels (pixel centres at
          integer coordinates, as OpenCV), z in the same pixel scale;
          score: face probability in [0, 1]).
        """
        points, scores = self.detect_batch([image], [box], refine=refine, angles=[angle])
        return points[0], float(scores[0])

    def face_score(self, image: np.ndarray, box: Box) -> float:
        """FaceMesh's face probability in [0, 1] for ``box`` (one pass, no refinement):
        a face detector's second opinion (:class:`recon_tf.preprocess.detect.FaceDetector`).
        On MTCNN's candidates in the shared photos, faces score ≥ 0.998 and non-faces
        ≤ 0.16, but a frontal dog face scores 0.96: it is a check, not a detector."""
        return self.detect(image, box, refine=False)[1]
