"""Face detection with MTCNN (the ``mtcnn`` package, which ships its weights).

Coordinates are image pixels of the array given to :meth:`FaceDetector.detect`
(x to the right, y down; box edges as MTCNN reports them). Large images are
downscaled for detection only (longer side ≤ ``detect_max_side``), and the
boxes are mapped back to full resolution: MTCNN's cost grows with the pixel
count, while faces that matter for a 224² crop stay detectable.

MTCNN's middle network (R-Net) is its weak link on unusual faces: on the
shared ``einstein.jpg`` (head tilted back, wild hair) it scores the face
0.01–0.08 and drops it, while the last network (O-Net) scores the same face
0.83 when it gets to see it. With a ``verifier`` (a second opinion such as
FaceMesh's face score, :meth:`recon_tf.nets.facemesh.FaceMesh.face_score`),
every R-Net proposal goes on to O-Net; boxes O-Net scores ≥ ``min_confidence``
are kept as before, and those between ``candidate_confidence`` and it are kept
only when the verifier scores them ≥ ``verify_threshold``. On the 24 shared
photos this adds Einstein and nothing else: of 19 candidates checked, the other
18 score ≤ 0.03 with FaceMesh, and the faces MTCNN accepts alone ≥ 0.998. The
lower bound matters: a frontal dog face (O-Net 0.40) scores 0.96 with FaceMesh
(README, "Preprocessing and data").

MTCNN is not mirror-symmetric either: it finds Einstein in ``einstein.jpg`` but
not in its mirror image, nor in a darkened copy, where the mirrored image finds
him. With ``mirror_pass`` (needs a verifier) the mirrored image is searched too;
a face found only there (no box of the first pass overlaps it by IoU ≥ 0.3) is
kept when the verifier, run on the unmirrored image, scores it ≥
``verify_threshold``, whatever O-Net said. On the shared photos and 27 altered
copies of the annotated ones (``experiments/landmark_survey.py``'s variants) the
mirrored pass added 6 boxes: Einstein twice (FaceMesh 0.9995, 0.9996), a 14-px
face in a shrunk copy (0.46, dropped) and three background patches (≤ 0.011,
dropped). It doubles the detection time (≈ +0.6 s per photo on 2 cores).

MTCNN has no rotated search either: a face rolled by more than ≈ 40° is missed
(Einstein's photo turned by 45°). With ``rotations`` (needs a verifier), a photo
in which nothing is found upright, padded or mirrored is searched again turned
by each angle (``tools/reconstruct.py``: ±45°, ±90°), on a canvas large enough
to keep every pixel; a face found at several angles is kept at the one MTCNN is
most confident of. A face found so is kept only when the verifier, run on the
turned image where the face stands upright, scores it ≥ 0.9 (``ROTATED_VERIFY``,
stricter than upright: in ``dogs.jpg`` two dog faces turned by ±90° reach MTCNN
0.85 / 0.64 and FaceMesh 0.70 / 0.57, while the magazine cover's face lying on
its side there scores 0.998 / 1.0, and the survey's photos turned by 90° all
pass). Its box is mapped back as the same-size box around the turned-back
centre (width and height swapped when turned by more than 45°), its keypoints
are turned back (the landmarkers level their crops by the eye keypoints, so
they see the face upright), and ``FaceBox.rotation`` records the angle. Photos
with a face found upright pay nothing; a photo with no face pays the extra
searches (≈ +1.2 s for a 640×480 photo on 2 cores).

MTCNN also fails on a face that fills the frame (a tight crop with the brows or
chin cut off, as face crops from other tools come): padding does not always help,
and it may report a part of the face as a small face instead (an eye behind the
glasses of ``breakingbad.jpg`` cropped to its landmarks). With a ``framer`` (a
dense landmark model run on a box, e.g. FaceMesh's
:meth:`recon_tf.nets.facemesh.FaceMesh.detect`), the whole frame is checked once:
when the framer scores it a face (≥ ``FRAME_VERIFY``), its points span at least
``FRAME_MIN_EXTENT`` of the frame's width and height, and no face found so far
shares ``FRAME_OVERLAP`` of the smaller box with theirs (a part of a face, below,
does not count), that face is added
(``FaceBox.framed``; its box is the points' bounding box shrunk by
``FRAME_BOX_SCALE`` about its centre, about MTCNN's framing; its keypoints are the
points' eye centres, nose tip and mouth corners). On the shared photos the check
changes nothing (FaceMesh on the whole frame scores ≤ 0.14, except on single
portraits, whose MTCNN box it overlaps); it finds the faces of tight crops of the
annotated photos that MTCNN misses. The overlap is measured on the smaller box, not
as IoU: on a portrait cut at the eyes (``Paul.jpeg``), FaceMesh on the whole frame
put a face 0.999-sure half a face too low, sharing IoU 0.30 with MTCNN's box; the
main job then reconstructed that ghost as the photo's largest face. It costs one
FaceMesh call per photo.

Whatever the search, a face found inside a larger one (its box ≥
``INSIDE_FRACTION`` inside the other's, less than a quarter of its area) is
dropped: it is a part of that face.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import cv2
import numpy as np

# Two boxes of one photo, found by different searches (mirrored, turned), overlapping
# this much are the same face.
SAME_FACE_IOU = 0.3
# The smallest face the padded retries look for, as a share of the unpadded image's
# longer side (FaceDetector.detect).
PADDED_MIN_FACE = 0.1
# The verifier's score a face found only in a turned photo needs (module docstring).
ROTATED_VERIFY = 0.9
# The frame-filling face check (module docstring): the framer's lowest score, the least
# share of the frame's width and height its points span, the scale from their bounding
# box to an MTCNN-like box, the share of the smaller box that a face found so far must
# share with it to stand for it, and how much of a smaller face's box inside it drops
# that face.
FRAME_VERIFY = 0.9
FRAME_MIN_EXTENT = 0.5
FRAME_BOX_SCALE = 0.8
FRAME_OVERLAP = 0.3
INSIDE_FRACTION = 0.8
# FaceMesh points of the keypoints: each eye's corners (subject's right eye first, on
# the image's left in a photo), the nose tip, the mouth corners.
FRAME_EYES = ((33, 133), (362, 263))
FRAME_NOSE = 1
FRAME_MOUTH = (61, 291)


@dataclasses.dataclass
class FaceBox:
    """One detected face.

    Attributes:
      box: float32 [4] = (x, y, w, h) in pixels, top-left corner + size.
      confidence: MTCNN's score in [0, 1].
      keypoints: float32 [5, 2] (x, y): left eye, right eye (as MTCNN names
        them: the eye on the image's left, then the one on the right), nose,
        mouth left, mouth right.
      verify_score: the verifier's score in [0, 1] when MTCNN's confidence was
        below ``min_confidence`` or the face was found only in the mirrored
        image, and the verifier kept the face; else None.
      mirrored: found only in the mirrored image (module docstring).
      rotation: degrees (counter-clockwise, OpenCV's convention) the image was
        turned to find the face; 0 for faces found upright (module docstring).
      framed: found by the frame-filling face check, not by MTCNN (module
        docstring; ``confidence`` is then 0 and ``verify_score`` the framer's).
    """

    box: np.ndarray
    confidence: float
    keypoints: np.ndarray
    verify_score: float | None = None
    mirrored: bool = False
    rotation: float = 0.0
    framed: bool = False

    @property
    def area(self) -> float:
        return float(self.box[2] * self.box[3])

    def to_json(self) -> dict:
        """A JSON-friendly summary (box rounded to 0.1 px)."""
        out = {"box": [round(float(v), 1) for v in self.box],
               "confidence": round(float(self.confidence), 4)}
        if self.verify_score is not None:
            out["verify_score"] = round(float(self.verify_score), 4)
        if self.mirrored:
            out["mirrored"] = True
        if self.rotation:
            out["rotation"] = round(float(self.rotation), 1)
        if self.framed:
            out["framed"] = True
        return out


class FaceDetector:
    """MTCNN wrapper; create one per process (it holds TF models).

    Args:
      min_face_size: smallest face side (pixels at detection scale) searched.
      min_confidence: faces scoring lower are dropped.
      detect_max_side: images are downscaled so their longer side is at most
        this for detection (0: never).
      device: TF device string for MTCNN, e.g. ``"CPU:0"``.
      pad_fractions: paddings tried, in turn, when nothing is found (see
        :meth:`detect`; empty: no retry).
      verifier: ``verifier(image, box) -> score in [0, 1]`` for the faces MTCNN
        is unsure of (module docstring), with ``image`` the RGB uint8 array
        searched and ``box`` float32 (x, y, w, h) in its pixels; None: MTCNN's
        own thresholds only.
      candidate_confidence: lowest O-Net score sent to the verifier.
      verify_threshold: lowest verifier score that keeps such a face.
      mirror_pass: also search the mirrored image (module docstring; needs a
        verifier).
      rotations: angles in degrees (counter-clockwise) searched in turn when
        nothing is found otherwise (module docstring; needs a verifier; empty:
        no rotated search).
      framer: ``framer(image, box) -> (points float [P, ≥ 2] in image pixels,
        score in [0, 1])``, a dense landmark model with FaceMesh's point order
        (:meth:`recon_tf.nets.facemesh.FaceMesh.detect`), for the frame-filling
        face check (module docstring); None: no check.
    """

    def __init__(self, min_face_size: int = 20, min_confidence: float = 0.9,
                 detect_max_side: int = 1024, device: str = "CPU:0",
                 pad_fractions: tuple[float, ...] = (0.25, 0.5),
                 verifier: Callable[[np.ndarray, np.ndarray], float] | None = None,
                 candidate_confidence: float = 0.6, verify_threshold: float = 0.5,
                 mirror_pass: bool = False, rotations: tuple[float, ...] = (),
                 framer: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, float]]
                 | None = None):
        from mtcnn import MTCNN

        if mirror_pass and verifier is None:
            raise ValueError("mirror_pass needs a verifier: the faces found only in the "
                             "mirrored image are kept on its word")
        if rotations and verifier is None:
            raise ValueError("rotations need a verifier: the faces found only in a turned "
                             "image are kept on its word")
        self.mirror_pass = mirror_pass
        self.rotations = tuple(float(a) for a in rotations)
        self.verifier = verifier
        self.framer = framer
        self.candidate_confidence = candidate_confidence
        self.verify_threshold = verify_threshold
        self.pad_fractions = tuple(pad_fractions)
        self.min_face_size = min_face_size
        self.min_confidence = min_confidence
        self.detect_max_side = detect_max_side
        self._mtcnn = MTCNN(device=device)

    def detect(self, image: np.ndarray) -> list[FaceBox]:
        """Detect faces in an RGB uint8 [H, W, 3] image.

        A face that fills the frame (a tight crop, as users and data sets such as
        CelebA's aligned images bring) is often missed by MTCNN, whose networks
        saw faces with context around them. When nothing is found, the image is
        padded on every side with its mean colour by each of ``pad_fractions``
        of its longer side in turn, and the first padding that finds faces
        gives them (boxes in the original image's pixels, possibly reaching
        outside it). These retries look only for faces at least
        ``PADDED_MIN_FACE`` of the image's longer side (the padded canvas is
        shrunk accordingly), which makes them several times cheaper. With a
        ``framer``, a face filling the frame is then looked for; when still
        nothing is found, the ``rotations`` are searched. Faces inside larger
        faces are dropped (module docstring).

        Returns:
          The faces scoring ≥ ``min_confidence`` (or kept on the verifier's or the
          framer's word), largest box first.
        """
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected uint8 [H, W, 3], got {image.dtype} {image.shape}")
        small, scale = self._downscaled(image)
        pad, faces = 0, self._detect_both(small)
        for fraction in self.pad_fractions if not faces else ():
            pad = int(round(fraction * max(small.shape[:2])))
            faces = self._detect_padded(small, pad)
            if faces:
                break
        offset = np.float32(pad)
        faces = [dataclasses.replace(f, box=f.box - np.array([offset, offset, 0, 0], np.float32),
                                     keypoints=f.keypoints - offset) for f in faces]
        if self.framer is not None:
            faces = self._with_frame_face(small, faces)
        if not faces and self.rotations:
            faces = self._detect_turned(small)
        faces = [f for f in faces if not any(_inside(f.box, g.box) for g in faces)]
        return _at_full_size(faces, scale)

    def detect_turned(self, image: np.ndarray) -> list[FaceBox]:
        """Only the rotated search (``rotations``, module docstring) of an RGB uint8
        [H, W, 3] image, whatever is found upright: for a caller that learned the
        upright faces are not faces (:mod:`recon_tf.reconstruction`'s upside-down
        check). Faces in its pixels, largest first; [] without ``rotations``."""
        if not self.rotations:
            return []
        small, scale = self._downscaled(image)
        return _at_full_size(self._detect_turned(small), scale)

    def _downscaled(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        """(``image`` with its longer side ≤ ``detect_max_side``, the scale applied)."""
        h, w = image.shape[:2]
        if not self.detect_max_side or max(h, w) <= self.detect_max_side:
            return image, 1.0
        scale = self.detect_max_side / float(max(h, w))
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        return cv2.resize(image, size, interpolation=cv2.INTER_AREA), size[0] / float(w)

    def _with_frame_face(self, image: np.ndarray, faces: list[FaceBox]) -> list[FaceBox]:
        """``faces`` plus the face that fills the frame, if the framer finds one that
        none of them is (module docstring)."""
        h, w = image.shape[:2]
        points, score = self.framer(image, np.array([0, 0, w, h], np.float32))
        points = np.asarray(points, np.float64)[:, :2]
        if score < FRAME_VERIFY or not np.all(np.isfinite(points)):
            return faces
        lo, hi = points.min(axis=0), points.max(axis=0)
        if np.any(hi - lo < FRAME_MIN_EXTENT * np.array([w, h])):
            return faces
        framed = mesh_face(points, score)
        if any(_intersection(framed.box, f.box) >= FRAME_OVERLAP
               * min(framed.area, f.area) and not _inside(f.box, framed.box) for f in faces):
            return faces
        return [framed] + faces

    def _detect_padded(self, image: np.ndarray, pad: int) -> list[FaceBox]:
        """:meth:`_detect_both` on ``image`` padded by ``pad`` pixels of its mean colour
        on every side (boxes in the padded canvas's pixels). The canvas is shrunk so
        that a face of ``PADDED_MIN_FACE`` of ``image``'s longer side is MTCNN's
        smallest: these retries look for faces that fill the frame, and skipping the
        finest pyramid scales makes them several times cheaper. With a verifier,
        every face they find must pass it, whatever MTCNN's confidence (at the
        shrunk scale MTCNN called a face lying on its side a face, 0.901, and the
        rotated search that finds it did not start)."""
        colour = [int(v) for v in image.reshape(-1, 3).mean(axis=0)]
        canvas = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_CONSTANT,
                                    value=colour)
        shrink = min(1.0, self.min_face_size / (PADDED_MIN_FACE * max(image.shape[:2])))
        h, w = canvas.shape[:2]
        size = (max(1, round(w * shrink)), max(1, round(h * shrink)))
        if shrink < 1.0:
            canvas = cv2.resize(canvas, size, interpolation=cv2.INTER_AREA)
        faces = self._detect_both(canvas)
        if self.verifier is not None:  # a fallback search: every face needs the verifier
            faces = [f if f.verify_score is not None else
                     dataclasses.replace(f, verify_score=float(self.verifier(canvas, f.box)))
                     for f in faces]
            faces = [f for f in faces if f.verify_score >= self.verify_threshold]
        ratio = np.float32([size[0] / w, size[1] / h])
        return [dataclasses.replace(f, box=f.box / np.concatenate([ratio, ratio]),
                                    keypoints=f.keypoints / ratio) for f in faces]

    def _detect_both(self, image: np.ndarray) -> list[FaceBox]:
        """:meth:`_detect`, plus the verified faces found only in the mirrored image
        when ``mirror_pass`` (module docstring)."""
        faces = self._detect(image)
        if not self.mirror_pass:
            return faces
        width = image.shape[1]
        for face in self._detect(np.ascontiguousarray(image[:, ::-1])):
            x, y, w, h = (float(v) for v in face.box)
            box = np.array([width - x - w, y, w, h], np.float32)
            if any(box_iou(box, f.box) >= SAME_FACE_IOU for f in faces):
                continue
            score = float(self.verifier(image, box))
            if score < self.verify_threshold:
                continue
            keypoints = face.keypoints[[1, 0, 2, 4, 3]].copy()  # image-left first again
            keypoints[:, 0] = width - 1 - keypoints[:, 0]
            faces.append(FaceBox(box, face.confidence, keypoints, score, mirrored=True))
        return faces

    def _detect_turned(self, image: np.ndarray) -> list[FaceBox]:
        """Every angle of ``rotations`` searched; where several angles find the same
        face (IoU ≥ ``SAME_FACE_IOU`` of the mapped-back boxes), the one with MTCNN's
        highest confidence is kept: the angle at which the face stood most upright."""
        found = [f for angle in self.rotations for f in self._detect_rotated(image, angle)]
        faces: list[FaceBox] = []
        for face in sorted(found, key=lambda f: f.confidence, reverse=True):
            if all(box_iou(face.box, f.box) < SAME_FACE_IOU for f in faces):
                faces.append(face)
        return faces

    def _detect_rotated(self, image: np.ndarray, angle: float) -> list[FaceBox]:
        """The verified faces of ``image`` turned by ``angle`` degrees, mapped back to
        ``image``'s pixels (module docstring)."""
        h, w = image.shape[:2]
        turn = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), angle, 1.0)
        cos, sin = abs(turn[0, 0]), abs(turn[0, 1])
        size = (int(np.ceil(w * cos + h * sin)), int(np.ceil(w * sin + h * cos)))
        turn[:, 2] += ((size[0] - 1) / 2.0 - (w - 1) / 2.0, (size[1] - 1) / 2.0 - (h - 1) / 2.0)
        colour = [int(v) for v in image.reshape(-1, 3).mean(axis=0)]
        turned = cv2.warpAffine(image, turn, size, flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=colour)
        back = cv2.invertAffineTransform(turn).astype(np.float32)
        faces = []
        for face in self._detect(turned):
            score = face.verify_score
            if score is None:
                score = float(self.verifier(turned, face.box))
            if score < max(self.verify_threshold, ROTATED_VERIFY):
                continue
            centre = face.box[:2] + face.box[2:] / 2
            centre = back[:, :2] @ centre + back[:, 2]
            keypoints = face.keypoints @ back[:, :2].T + back[:, 2]
            extent = face.box[2:][::-1] if sin > cos else face.box[2:]  # on its side: h × w
            box = np.concatenate([centre - extent / 2, extent]).astype(np.float32)
            faces.append(FaceBox(box, face.confidence, keypoints.astype(np.float32), score,
                                 rotation=angle))
        return faces

    def _detect(self, image: np.ndarray) -> list[FaceBox]:
        """MTCNN on ``image`` as is: the faces it keeps (module docstring), in its pixels."""
        options = {}
        if self.verifier is not None:  # every R-Net proposal reaches O-Net
            options = {"threshold_rnet": 0.0,
                       "threshold_onet": min(self.candidate_confidence, self.min_confidence)}
        rows = self._mtcnn.detect_faces(image, box_format="xyxy", output_type="numpy",
                                        min_face_size=self.min_face_size, **options)
        faces = []
        for row in np.asarray(rows, np.float64).reshape(-1, 16):
            x1, y1, x2, y2, conf = row[1:6]
            if x2 <= x1 or y2 <= y1:
                continue
            box = np.array([x1, y1, x2 - x1, y2 - y1], np.float32)
            verify_score = None
            if conf < self.min_confidence:
                if self.verifier is None or conf < self.candidate_confidence:
                    continue
                verify_score = float(self.verifier(image, box))
                if verify_score < self.verify_threshold:
                    continue
            faces.append(FaceBox(box, float(conf), row[6:16].reshape(2, 5).T.astype(np.float32),
                                 verify_score))
        return faces


def _at_full_size(faces: list[FaceBox], scale: float) -> list[FaceBox]:
    """Faces found in an image downscaled by ``scale``, in the full image's pixels,
    largest first."""
    faces = [dataclasses.replace(f, box=f.box / np.float32(scale),
                                 keypoints=f.keypoints / np.float32(scale)) for f in faces]
    return sorted(faces, key=lambda f: f.area, reverse=True)


def with_replacements(found: list[FaceBox], others: list[FaceBox],
                      iou: float = 0.3) -> list[FaceBox]:
    """``found`` plus those of ``others`` that neither overlap one of ``found`` (IoU ≥
    ``iou``) nor lie inside one (:data:`INSIDE_FRACTION`), largest box first."""
    kept = [f for f in others
            if all(box_iou(f.box, g.box) < iou and not _inside(f.box, g.box) for g in found)]
    return sorted(found + kept, key=lambda f: f.area, reverse=True)


def _intersection(a: np.ndarray, b: np.ndarray) -> float:
    """The area two (x, y, w, h) boxes share."""
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    return max(0.0, float(x2 - x1)) * max(0.0, float(y2 - y1))


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    inter = _intersection(a, b)
    union = float(a[2] * a[3] + b[2] * b[3]) - inter
    return inter / union if union > 0 else 0.0


def _area(box: np.ndarray) -> float:
    """The area of an (x, y, w, h) box."""
    return float(box[2] * box[3])


def _inside(small: np.ndarray, large: np.ndarray) -> bool:
    """Whether box ``small`` lies at least ``INSIDE_FRACTION`` inside box ``large`` and
    covers less than a quarter of it ((x, y, w, h) boxes)."""
    area = _area(small)
    return area > 0 and _intersection(small, large) >= INSIDE_FRACTION * area \
        and area < 0.25 * _area(large)


def mesh_face(points: np.ndarray, score: float) -> FaceBox:
    """The face a dense FaceMesh mesh marks, as a detection: box = the points' bounding
    box × ``FRAME_BOX_SCALE`` about its centre (about MTCNN's framing), keypoints =
    its eye centres, nose tip and mouth corners, ``verify_score`` = ``score``,
    ``framed`` set, confidence 0.

    Args:
      points: float [468, ≥2] FaceMesh points in image pixels.
      score: FaceMesh's face score in [0, 1].
    """
    points = np.asarray(points, np.float64)[:, :2]
    lo, hi = points.min(axis=0), points.max(axis=0)
    size = (hi - lo) * FRAME_BOX_SCALE
    box = np.concatenate([(lo + hi - size) / 2.0, size]).astype(np.float32)
    keypoints = np.stack([points[list(FRAME_EYES[0])].mean(0),
                          points[list(FRAME_EYES[1])].mean(0), points[FRAME_NOSE],
                          points[FRAME_MOUTH[0]], points[FRAME_MOUTH[1]]])
    return FaceBox(box, 0.0, keypoints.astype(np.float32), float(score), framed=True)


def keypoint_disagreement(keypoints: np.ndarray, other: np.ndarray) -> float:
    """Mean distance between two sets of 5 keypoints (eyes, nose, mouth corners, in
    :class:`FaceBox` order), as a fraction of the first set's eye distance."""
    keypoints, other = np.asarray(keypoints, np.float64), np.asarray(other, np.float64)
    eyes = float(np.linalg.norm(keypoints[1] - keypoints[0]))
    return float(np.linalg.norm(keypoints - other, axis=1).mean()) / max(eyes, 1e-6)


def largest_face(faces: list[FaceBox]) -> FaceBox | None:
    """The face with the largest box area, or ``None`` for an empty list."""
    return max(faces, key=lambda f: f.area) if faces else None
