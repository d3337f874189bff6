"""Photo → aligned 224² face crop, 68 landmarks, skin mask: the per-image pipeline.

Steps (one module each): :mod:`image_io` (robust decode) → :mod:`detect`
(MTCNN; the largest face is kept, or with ground-truth landmarks the face
they fall in) → :mod:`landmarks` (PFLD by default) → :mod:`align` (5-point
scale + translation onto the face model's projected mean landmarks) →
:mod:`skin_mask` (Eq. 7's V) → a serialized ``tf.train.Example``
(:mod:`recon_tf.data.tfrecord`).

:class:`FacePreprocessor` never raises on a bad input: every failure becomes
a ``"skipped"`` :class:`PreprocessResult` with a reason code.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from recon_tf.preprocess.align import (
    DEFAULT_CAMERA_KIND,
    align_face,
    apply_transform,
    compose,
    invert,
)
from recon_tf.preprocess.detect import FaceBox, FaceDetector
from recon_tf.preprocess.image_io import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_MAX_SIDE,
    DEFAULT_MIN_SIDE,
    DecodedImage,
    ImageDecodeError,
    load_image,
)
from recon_tf.preprocess.landmarks import make_landmarker
from recon_tf.preprocess.skin_mask import skin_mask as compute_skin_mask

KEPT = "kept"
SKIPPED = "skipped"


@dataclasses.dataclass
class PreprocessResult:
    """Outcome for one input.

    Attributes:
      source_path: the input path.
      status: ``"kept"`` or ``"skipped"``.
      reason: why skipped: an :class:`~recon_tf.preprocess.image_io.ImageDecodeError`
        reason, ``"no_face"``, ``"landmarks_failed"``, ``"alignment_failed"``,
        ``"not_an_image_extension"`` or ``"error"``; "" when kept.
      note: human-readable details (e.g. "3 faces detected; kept the largest").
      example: the serialized ``tf.train.Example`` when kept, else None.
      info: JSON-friendly details (face count, box, mask method, skin fraction...).
    """

    source_path: str
    status: str
    reason: str = ""
    note: str = ""
    example: bytes | None = None
    info: dict = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict:
        """The report entry (no example bytes)."""
        out = {"path": self.source_path, "status": self.status}
        if self.reason:
            out["reason"] = self.reason
        if self.note:
            out["note"] = self.note
        out.update(self.info)
        return out


def _skip(path: str, reason: str, note: str, **info) -> PreprocessResult:
    return PreprocessResult(path, SKIPPED, reason, note, None, info)


def _decode_to_original(decoded: DecodedImage) -> np.ndarray:
    """[2, 3] affine from decoded-image pixels to original pixels (centre convention)."""
    h, w = decoded.pixels.shape[:2]
    sx, sy = decoded.original_size[0] / w, decoded.original_size[1] / h
    return np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5]], np.float64)


# IoU above which a detection is taken for the face of a given box (face_on_box);
# MTCNN's and NoW's boxes frame a face differently, so the bar is low.
GIVEN_BOX_IOU = 0.3


def select_face(faces: list[FaceBox], landmarks: np.ndarray | None) -> tuple[FaceBox | None, str]:
    """Choose the face to keep; returns (face, note).

    Without annotation: the largest box. With ground-truth landmarks [68, 2]:
    the box containing most of them; if no box contains at least half of them
    (the detector missed the annotated face), a box made from the landmarks'
    bounding box, so annotated data sets keep the annotated face.
    """
    if landmarks is not None:
        def hits(face: FaceBox) -> int:
            x, y, w, h = face.box
            inside = ((landmarks[:, 0] >= x) & (landmarks[:, 0] <= x + w)
                      & (landmarks[:, 1] >= y) & (landmarks[:, 1] <= y + h))
            return int(inside.sum())
        best = max(faces, key=lambda f: (hits(f), f.area)) if faces else None
        if best is not None and 2 * hits(best) >= len(landmarks):
            note = f"{len(faces)} faces detected; kept the annotated one" if len(faces) > 1 else ""
            return best, note
        lo, hi = landmarks.min(0), landmarks.max(0)
        box = FaceBox(np.r_[lo, hi - lo].astype(np.float32), 0.0,
                      np.zeros((5, 2), np.float32))
        return box, (f"{len(faces)} faces detected, none on the annotation; "
                     "used the annotation's bounding box")
    if not faces:
        return None, ""
    note = f"{len(faces)} faces detected; kept the largest" if len(faces) > 1 else ""
    return max(faces, key=lambda f: f.area), note


def face_on_box(faces: list[FaceBox], box: np.ndarray, min_iou: float = GIVEN_BOX_IOU
                ) -> FaceBox | None:
    """The detected face that overlaps a given face box most (a data set's own box, e.g.
    NoW's ``detected_face``), or None when none overlaps it by IoU ≥ ``min_iou``.

    Args:
      faces: detections of the photo.
      box: float [4] (x, y, w, h) in the same pixels.
    """
    from recon_tf.preprocess.detect import box_iou

    scored = [(box_iou(f.box, np.asarray(box, np.float32)), f) for f in faces]
    best = max(scored, key=lambda t: t[0], default=(0.0, None))
    return best[1] if best[0] >= min_iou else None


class FacePreprocessor:
    """Detect, landmark, align and mask one photo (create one per process).

    Args:
      landmarker: ``"pfld"`` (default), ``"dlib"`` or ``"fan"``.
      image_size: side S of the aligned crop.
      template_3d: float [68, 3] model landmarks for the standard 5 points:
        the face model's ``mean_landmarks_3d()`` (required; see :mod:`align`).
      rotate: also remove in-plane rotation (default False, like Deep3DFace).
      camera_kind: the alignment camera, ``"perspective"`` (default) or
        ``"orthographic"`` (see :func:`align.alignment_camera`).
      image_format: ``"png"`` or ``"jpeg"`` for the stored crop.
      jpeg_quality: JPEG quality.
      min_side, max_side, max_pixels: decode limits (see :mod:`image_io`).
      detect_max_side, min_face_size, min_confidence: MTCNN settings (see :mod:`detect`).
      num_threads: onnxruntime threads for PFLD (0: its default).
      face_verifier: second opinion on MTCNN's unsure faces (``verifier`` of
        :class:`detect.FaceDetector`), e.g. ``FaceMesh().face_score``; None: off.
      mirror_pass: also search the mirrored image (``mirror_pass`` of
        :class:`detect.FaceDetector`; needs ``face_verifier``).
      rotations: angles (degrees) of the turned searches when nothing is found
        upright (``rotations`` of :class:`detect.FaceDetector`; needs
        ``face_verifier``; empty: none).
      face_framer: the frame-filling face check (``framer`` of
        :class:`detect.FaceDetector`), e.g. ``FaceMesh().detect``; None: off.
    """

    def __init__(self, landmarker: str = "pfld", image_size: int = 224,
                 template_3d: np.ndarray | None = None, rotate: bool = False,
                 image_format: str = "png", jpeg_quality: int = 95,
                 min_side: int = DEFAULT_MIN_SIDE, max_side: int = DEFAULT_MAX_SIDE,
                 max_pixels: int = DEFAULT_MAX_PIXELS, detect_max_side: int = 1024,
                 min_face_size: int = 20, min_confidence: float = 0.9, num_threads: int = 0,
                 camera_kind: str = DEFAULT_CAMERA_KIND, face_verifier=None,
                 mirror_pass: bool = False, rotations: tuple[float, ...] = (),
                 face_framer=None):
        if template_3d is None:
            raise ValueError("FacePreprocessor needs template_3d, the face model's "
                             "mean_landmarks_3d() (e.g. of bfm.load_default_face_model())")
        self.image_size = image_size
        self.template_3d = np.asarray(template_3d, np.float32)
        self.rotate = rotate
        self.camera_kind = camera_kind
        self.image_format = image_format
        self.jpeg_quality = jpeg_quality
        self.decode_limits = {"min_side": min_side, "max_side": max_side,
                              "max_pixels": max_pixels}
        self.detector = FaceDetector(min_face_size=min_face_size, min_confidence=min_confidence,
                                     detect_max_side=detect_max_side, verifier=face_verifier,
                                     mirror_pass=mirror_pass, rotations=rotations,
                                     framer=face_framer)
        self.landmarker = make_landmarker(landmarker, num_threads=num_threads)

    def process_file(self, path: str, subject: str = "",
                     gt_landmarks: np.ndarray | None = None) -> PreprocessResult:
        """Process one file; never raises for a bad input.

        Args:
          path: image file.
          subject: identity id stored with the record.
          gt_landmarks: float [68, 2] annotation in original pixels, if any:
            used to pick the annotated face and stored (in crop pixels) as the
            extra tensor ``gt_landmarks``.
        """
        try:
            decoded = load_image(path, **self.decode_limits)
        except ImageDecodeError as err:
            return _skip(path, err.reason, str(err))
        try:
            return self.process_decoded(decoded, path, subject, gt_landmarks)
        except Exception as err:  # a bad input must never stop a long run
            return _skip(path, "error", f"{type(err).__name__}: {err}")

    def process_decoded(self, decoded: DecodedImage, path: str, subject: str = "",
                        gt_landmarks: np.ndarray | None = None) -> PreprocessResult:
        """Process an already decoded image (see :meth:`process_file`)."""
        from recon_tf.data.tfrecord import encode_example

        pixels = decoded.pixels
        to_original = _decode_to_original(decoded)
        to_decoded = invert(to_original)
        gt_decoded = None if gt_landmarks is None else apply_transform(to_decoded, gt_landmarks)
        info = {"size": list(decoded.original_size), "mode": decoded.source_mode}
        if decoded.scale < 1.0:
            info["downscaled_by"] = round(1.0 / decoded.scale, 3)
        faces = self.detector.detect(pixels)
        info["num_faces"] = len(faces)
        face, note = select_face(faces, gt_decoded)
        if face is None:
            return _skip(path, "no_face", "MTCNN found no face", **info)
        info.update(face.to_json())
        points = self.landmarker(pixels, face.box, face.keypoints)
        if not np.all(np.isfinite(points)) or np.ptp(points[:, 0]) < 2 or np.ptp(points[:, 1]) < 2:
            return _skip(path, "landmarks_failed", "degenerate landmarks", **info)
        try:
            aligned = align_face(pixels, points, self.image_size, self.template_3d, self.rotate,
                                 self.camera_kind)
        except ValueError as err:
            return _skip(path, "alignment_failed", str(err), **info)
        mask = compute_skin_mask(aligned.image, aligned.landmarks, aligned.valid)
        info["mask_method"] = mask.method
        info["skin_fraction"] = round(float((mask.mask > 0).mean()), 4)
        transform = compose(aligned.transform, to_decoded)
        extras = {}
        if gt_decoded is not None:
            extras["gt_landmarks"] = apply_transform(aligned.transform, gt_decoded)
        example = encode_example(aligned.image, aligned.landmarks, mask.mask, path, transform,
                                 subject=subject, extras=extras, image_format=self.image_format,
                                 jpeg_quality=self.jpeg_quality)
        return PreprocessResult(path, KEPT, "", note, example, info)


_worker: FacePreprocessor | None = None


def init_worker(preprocessor_kwargs: dict, assets_dir: str | None = None,
                num_threads: int = 1) -> None:
    """Initialise a worker process: thread limits, assets root, one FacePreprocessor.

    Used as a ``ProcessPoolExecutor`` initializer (spawned processes), with
    :func:`process_task` as the mapped function.
    """
    global _worker
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    from recon_tf.assets import set_assets_dir

    if num_threads:
        tf.config.threading.set_intra_op_parallelism_threads(num_threads)
        tf.config.threading.set_inter_op_parallelism_threads(num_threads)
    if assets_dir:
        set_assets_dir(assets_dir)
    _worker = FacePreprocessor(num_threads=num_threads, **preprocessor_kwargs)


def process_task(task: dict) -> PreprocessResult:
    """Process one task dict in a worker process (see :func:`init_worker`, :func:`run_task`)."""
    if _worker is None:
        raise RuntimeError("init_worker() was not called in this process")
    return run_task(_worker, task)


def run_task(preprocessor: FacePreprocessor, task: dict) -> PreprocessResult:
    """Run one task with a given preprocessor (never raises for bad inputs).

    A task is a dict: ``path``; optional ``subject``, ``landmarks`` (float
    [68, 2] annotation or None), and ``skip_reason``/``note`` to report an
    input as skipped without reading it.
    """
    landmarks = task.get("landmarks")
    if landmarks is not None:
        landmarks = np.asarray(landmarks, np.float32)
    if task.get("skip_reason"):
        return _skip(task["path"], task["skip_reason"], task.get("note", ""))
    return preprocessor.process_file(task["path"], task.get("subject", ""), landmarks)
