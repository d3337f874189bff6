"""Photo → prepared faces: decode, detect every face, landmark, align, mask.

:class:`FacePreparer` is the front end of the main job
(:class:`recon_tf.reconstruction.PhotoReconstructor` holds one): it decodes a
photo robustly, detects its faces (MTCNN, with the searches of
:class:`recon_tf.preprocess.detect.FaceDetector`), finds each face's 68
landmarks (PFLD by default) and, when available, 468 dense FaceMesh points,
aligns a crop (Deep3DFace's 5-point scheme) and computes the skin mask V of
Eq. 7. Bad input never raises: it comes back as :class:`Skipped`. Evaluation
may name the face: by its annotated landmarks, or by a face box the data set
gives (NoW's ``detected_face``; :meth:`FacePreparer.prepare`).

The two landmark sources check each other: FaceMesh re-frames its own crop on
its mesh, PFLD reads the detector's box once. When the detector's box is off
the face (a box on the nose and mouth, whose nostrils it took for eyes), PFLD
marks a face inside it and FaceMesh may find the real one (or the reverse).
Where their eyes, nose tips and mouth corners lie more than
``MESH_DISAGREEMENT`` of FaceMesh's eye distance apart (on average), each is
run again on the other's framing: FaceMesh on the box of PFLD's points first
(if it then agrees, PFLD had the face and the new mesh is used), else PFLD on
the box and keypoints of FaceMesh's mesh
(:func:`recon_tf.preprocess.detect.mesh_face`; if it then agrees, FaceMesh had
the face). If neither agrees, PFLD's points are kept and the dense term is left
out for that face: the fit would otherwise split the difference between two
faces. ``info["mesh_disagreement"]`` records the gap and the outcome when the
check fired.

FaceMesh also catches a face the detector accepted **upside down**. MTCNN's
networks expect upright faces, yet they accept some upside-down ones (0.94 on
``takeo.ppm`` turned by 180°), with keypoints placed as if the face were
upright, so PFLD's eye-levelled crop shows the face upside down and its
points are noise (NME 146 %). FaceMesh, levelled the same way, then scores
the face low (0.19 and 0.28 on the survey's upside-down photos, ≥ 0.97 on the
upright ones). Where its score is below ``UPSIDE_DOWN_SCORE``, the face is
read again with its keypoints turned by 180° about the box centre (the
levelled crops then show it upright); the turned reading is kept when
FaceMesh scores it ≥ ``UPSIDE_DOWN_VERIFY`` (the rotated search's 0.9) and
``info["turned"]`` records it. MTCNN may also take some other patch of an
upside-down photo for an upright face, and then its rotated search (which runs
only when nothing is found) never starts. So when FaceMesh finds *none* of a
photo's faces a face, neither as found nor turned, the rotated search runs anyway,
and its faces replace those they overlap.

**A second face FaceMesh finds no face is dropped.** MTCNN accepts the odd patch on
its own (O-Net ≥ 0.9, no second opinion asked): in scikit-image's ``astronaut``
photo, a fold of the space suit's collar at 0.94, which FaceMesh scores 0.0005. A
face other than the largest that MTCNN scored below ``FALSE_FACE_CONFIDENCE`` and
that FaceMesh scores below ``FALSE_FACE_SCORE`` (as found, and turned by 180°) is
left out, listed in the first face's ``info["failed_faces"]`` with reason
``not_a_face``. Every real face of the shared and annotated photos scores ≥ 0.98.
A real face FaceMesh scores so low is turned far (half of the synthetic faces at
65° score < 0.1) and is then fitted with the prior's shape anyway; the largest
face is never dropped, so a photo of one turned face is still reconstructed.

**Nor is a second face that the fit cannot place.** FaceMesh is fooled now and then: in
facetorch's ``test.jpg`` a blurred wicker pattern of 50 px, which MTCNN scores 0.85,
scores 0.95 with FaceMesh (0.82 mirrored at the detection scale), so the verifier keeps
it. The 68 points PFLD reads there fit no face: the fitted L_lmk (squared 224-crop
pixels) came out at 100, against at most 12.2 over 142 real faces of the shared, PyPI
and test photos. So after the fit (:func:`false_fits`), a face other than the largest,
below ``FALSE_FACE_CONFIDENCE`` by MTCNN, whose landmark term exceeds ``FALSE_FIT_LMK``
is reported as ``not_a_face`` instead of written.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from recon_tf.preprocess.align import apply_transform, invert

# PFLD vs FaceMesh: the mean keypoint gap (× FaceMesh's eye distance) above which
# each is re-run on the other's framing (module docstring). Over the 79 faces of the
# shared and annotated photos and 24 synthetic faces at 30–65° yaw: median 0.06, 90th
# percentile 0.10, at most 0.33 (65° yaw); a box on the nose and mouth gave 0.52.
MESH_DISAGREEMENT = 0.35
# FaceMesh scores at least this on a face it is sure of; below, its points are left out
# (no dense term). On the 79 shared faces it scores ≥ 0.98; on synthetic faces turned
# by 65° half score < 0.1.
FACEMESH_SURE = 0.5
# How a face's info["note"] begins when a given face box stood in for a missed detection.
BOX_STOOD_IN = "no detection on the given box"
# FaceMesh scores below this trigger the upside-down reading (module docstring) ...
UPSIDE_DOWN_SCORE = 0.5
# ... which is kept when FaceMesh scores the turned face at least this.
UPSIDE_DOWN_VERIFY = 0.9
# A face other than the largest, accepted by MTCNN alone below this confidence, that
# FaceMesh scores below FALSE_FACE_SCORE, is no face (module docstring).
FALSE_FACE_CONFIDENCE = 0.98
FALSE_FACE_SCORE = 0.01


# ... and such a face whose fit leaves L_lmk (squared 224-crop pixels, the fit's
# ``terms["lmk"]``) above this is no face either (module docstring): RMS ≈ 6.3 px.
FALSE_FIT_LMK = 40.0


def false_fits(infos: list[dict], lmk_terms) -> list[int]:
    """Indices of fitted faces that are no face (module docstring): ``infos`` the
    prepared faces' ``info`` (``face_index``, MTCNN's ``confidence``), ``lmk_terms``
    float [B] their fitted L_lmk. The largest face (index 0) is never one."""
    return [i for i, (info, lmk) in enumerate(zip(infos, np.asarray(lmk_terms, np.float64)))
            if info.get("face_index", 0) > 0
            and info.get("confidence", 1.0) < FALSE_FACE_CONFIDENCE
            and not lmk <= FALSE_FIT_LMK]


def false_face(face, info: dict) -> bool:
    """True for a detection that is no face (module docstring): accepted by MTCNN alone
    (no verifier score) below ``FALSE_FACE_CONFIDENCE``, and scored below
    ``FALSE_FACE_SCORE`` by FaceMesh (``info["facemesh_score"]``; absent without
    FaceMesh: never false)."""
    score = info.get("facemesh_score")
    return (score is not None and "turned" not in info and face.verify_score is None
            and not face.framed
            and face.confidence < FALSE_FACE_CONFIDENCE and score < FALSE_FACE_SCORE)


def read_upside_down(facemesh, landmarker, pixels: np.ndarray, face, score: float):
    """A face that FaceMesh scored ``score`` < ``UPSIDE_DOWN_SCORE`` as found, read
    again with its keypoints turned by 180° about its box centre (module docstring).

    Args:
      facemesh: a :class:`recon_tf.nets.facemesh.FaceMesh`.
      landmarker: the 68-point landmarker, ``landmarker(pixels, box, keypoints)``.
      pixels: uint8 [H, W, 3] the photo searched.
      face: its :class:`recon_tf.preprocess.detect.FaceBox`.
      score: FaceMesh's score of the face as found (eye-levelled by its keypoints).
    Returns:
      (68 points float [68, 2], FaceMesh points [P, 3], FaceMesh score) of the
      turned reading, in ``pixels``' coordinates; None when the face scored
      ≥ ``UPSIDE_DOWN_SCORE`` as found, or FaceMesh does not score the turned
      reading ≥ ``UPSIDE_DOWN_VERIFY``.
    """
    from recon_tf.preprocess.landmarks import eye_roll

    if score >= UPSIDE_DOWN_SCORE:
        return None
    centre = face.box[:2] + 0.5 * face.box[2:]
    keypoints = (2.0 * centre - face.keypoints).astype(np.float32)
    mesh, turned_score = facemesh.detect(pixels, face.box, angle=eye_roll(keypoints))
    if turned_score < UPSIDE_DOWN_VERIFY or not np.all(np.isfinite(mesh)):
        return None
    points = np.asarray(landmarker(pixels, face.box, keypoints))
    if not np.all(np.isfinite(points)):
        return None
    return points, mesh, float(turned_score)


def turned_instead(detector, facemesh, landmarker, pixels: np.ndarray, faces: list) -> list:
    """``faces`` (upright detections of ``pixels``), or, when FaceMesh finds none of
    them a face upright nor turned by 180° (each scores < ``UPSIDE_DOWN_SCORE`` as
    found and :func:`read_upside_down` fails), the detector's rotated search's faces
    in place of those they overlap or hold (module docstring): MTCNN may take a patch
    of an upside-down photo for an upright face, and the rotated search runs only
    when nothing is found.

    Args:
      detector: a :class:`recon_tf.preprocess.detect.FaceDetector`.
      facemesh: a :class:`recon_tf.nets.facemesh.FaceMesh`.
      landmarker: the 68-point landmarker, ``landmarker(pixels, box, keypoints)``.
      pixels: uint8 [H, W, 3] the photo searched.
      faces: its detected :class:`recon_tf.preprocess.detect.FaceBox` list.
    """
    from recon_tf.preprocess.detect import with_replacements
    from recon_tf.preprocess.landmarks import eye_roll

    if any(f.rotation for f in faces):
        return faces
    for face in faces:
        score = facemesh.detect(pixels, face.box, angle=eye_roll(face.keypoints))[1]
        if score >= UPSIDE_DOWN_SCORE or read_upside_down(facemesh, landmarker, pixels, face,
                                                          score) is not None:
            return faces
    return with_replacements(detector.detect_turned(pixels), faces)


@dataclasses.dataclass
class PreparedFace:
    """One detected, landmarked and aligned face of a photo.

    Attributes:
      path: the photo's path.
      pixels: uint8 [H, W, 3] decoded RGB (possibly downscaled from the file).
      original_size: (width, height) of the file's image.
      to_original: float [2, 3], decoded pixels → original pixels.
      crop_transform: float [2, 3], decoded pixels → crop pixels.
      crop: uint8 [S, S, 3] aligned crop.
      landmarks: float32 [68, 2] detector landmarks in crop pixels (centres at integers).
      skin_mask: uint8 [S, S] 0/255, Eq. 7's V (skin, plus brows and lips
        when ``fit_features``).
      fine_mask: uint8 [S, S] 0/255, the fine stage's photometric mask: the
        skin mask plus eyes, brows and mouth with their surroundings
        (:func:`recon_tf.preprocess.skin_mask.detail_regions`).
      dense: float32 [P, 2] FaceMesh points in crop pixels, or None.
      info: JSON-friendly details (box, face count, notes).
      occluded: uint8 [S, S] 0/255, occluders found in the crop (a face mask, a
        hand; :func:`recon_tf.preprocess.skin_mask.skin_mask`), or None.
      background: uint8 [S, S] 0/255, crop pixels that are clearly not the face
        (the fit's silhouette term), or None.
    """

    path: str
    pixels: np.ndarray
    original_size: tuple[int, int]
    to_original: np.ndarray
    crop_transform: np.ndarray
    crop: np.ndarray
    landmarks: np.ndarray
    skin_mask: np.ndarray
    fine_mask: np.ndarray
    dense: np.ndarray | None
    info: dict
    occluded: np.ndarray | None = None
    background: np.ndarray | None = None


@dataclasses.dataclass
class Skipped:
    """A photo that produced no face: ``reason`` is a short code, ``note`` details."""

    path: str
    reason: str
    note: str = ""


class FacePreparer:
    """Photo → :class:`PreparedFace` list (see the module docstring).

    Args:
      preprocessor: a :class:`recon_tf.preprocess.FacePreprocessor` (detector,
        landmarker, decode limits, alignment template and camera).
      facemesh: a :class:`recon_tf.nets.facemesh.FaceMesh`, or None (no dense
        points, no upside-down reading, no PFLD–FaceMesh check).
      fit_features: add the brows and lips to the photometric mask V of the
        fit (the skin mask alone excludes them; the albedo basis has lip and
        brow modes that only a mask with them can fit).
    """

    def __init__(self, preprocessor, facemesh=None, fit_features: bool = True):
        self.preprocessor = preprocessor
        self.facemesh = facemesh
        self.fit_features = fit_features

    def prepare(self, path: str, annotation: np.ndarray | None = None,
                box: np.ndarray | None = None) -> PreparedFace | Skipped:
        """Decode, detect, landmark and align the largest face; never raises for bad input.

        Args:
          path: the photo.
          annotation: optional float [68, 2] ground-truth landmarks (original
            pixels): evaluation picks the annotated face instead of the largest.
          box: optional float [4] (x, y, w, h), original pixels: a face box the
            data set gives (NoW's ``detected_face``). The detection overlapping it
            most is kept (:func:`recon_tf.preprocess.face_on_box`); when none
            does, the box itself, re-framed by FaceMesh where FaceMesh finds a
            face in it (:meth:`face_from_box`). Ignored with an ``annotation``.
        """
        from recon_tf.preprocess import _decode_to_original, face_on_box, select_face

        decoded = self.decode_detect(path)
        if isinstance(decoded, Skipped):
            return decoded
        image, faces = decoded
        to_decoded = invert(_decode_to_original(image))
        box = None if box is None else np.asarray(box, np.float64).ravel()
        if box is not None and (box.size != 4 or not np.all(np.isfinite(box))
                                or min(box[2], box[3]) < 2):
            return Skipped(path, "bad_box", f"the given face box {box.tolist()} is not a "
                           "finite (x, y, w, h) box of at least 2 pixels")
        if annotation is None and box is not None:
            x, y, w, h = box
            corners = apply_transform(to_decoded, np.array([[x, y], [x + w, y + h]]))
            given = np.r_[corners[0], corners[1] - corners[0]].astype(np.float32)
            face = face_on_box(faces, given)
            if face is not None:
                note = "kept the detected face on the given box"
            else:
                face, note = self.face_from_box(image.pixels, given)
            return self.prepare_face(path, decoded, face, {"num_faces": len(faces),
                                                           "note": note})
        gt = None if annotation is None else apply_transform(to_decoded, annotation)
        face, note = select_face(faces, gt)
        if face is None:
            return Skipped(path, "no_face", "MTCNN found no face")
        return self.prepare_face(path, decoded, face, {"num_faces": len(faces), "note": note})

    def face_from_box(self, pixels: np.ndarray, box: np.ndarray):
        """A given face box no detection overlaps, as a face: FaceMesh's framing of it
        (:func:`recon_tf.preprocess.detect.mesh_face`: box and 5 keypoints from its
        mesh) when FaceMesh scores the box a face (≥ ``FACEMESH_SURE``), else the box
        with upright keypoints unknown (zeros), as an annotation's box is used.

        Returns:
          (:class:`recon_tf.preprocess.detect.FaceBox`, note).
        """
        from recon_tf.preprocess.detect import FaceBox, mesh_face

        if self.facemesh is not None:
            try:  # a failing FaceMesh must not cost the face: the box stands in
                mesh, score = self.facemesh.detect(pixels, box, angle=0.0)
            except Exception:  # noqa: BLE001
                mesh, score = None, 0.0
            if score >= FACEMESH_SURE and np.all(np.isfinite(mesh)):
                return mesh_face(mesh, score), f"{BOX_STOOD_IN}; FaceMesh framed it"
        return (FaceBox(np.asarray(box, np.float32), 0.0, np.zeros((5, 2), np.float32)),
                f"{BOX_STOOD_IN}; used the box")

    def prepare_all(self, path: str, max_faces: int = 0) -> list[PreparedFace] | Skipped:
        """Every detected face of a photo, largest first; never raises for bad input.

        Each face's ``info`` holds ``face_index`` (0 = largest) and
        ``num_faces``. A face whose landmarks fail is left out (its index
        stays reserved and is listed in the first face's ``info["failed_faces"]``);
        a photo where every face fails, or none is found, is :class:`Skipped`.

        Args:
          path: the photo.
          max_faces: keep at most this many faces (largest first); 0 keeps all.
        """
        decoded = self.decode_detect(path)
        if isinstance(decoded, Skipped):
            return decoded
        faces = sorted(decoded[1], key=lambda f: -f.area)
        if not faces:
            return Skipped(path, "no_face", "MTCNN found no face")
        if max_faces > 0:
            faces = faces[:max_faces]
        prepared, failed = [], []
        for k, box in enumerate(faces):
            item = self.prepare_face(path, decoded, box, {"num_faces": len(decoded[1]),
                                                             "face_index": k})
            if k > 0 and not isinstance(item, Skipped) and false_face(box, item.info):
                item = Skipped(path, "not_a_face", "MTCNN {:.3f}, FaceMesh {:.4f}".format(
                    box.confidence, item.info["facemesh_score"]))
            if isinstance(item, Skipped):
                failed.append({"face_index": k, "reason": item.reason, "note": item.note})
            else:
                prepared.append(item)
        if not prepared:
            return Skipped(path, failed[0]["reason"], failed[0]["note"])
        if failed:
            prepared[0].info["failed_faces"] = failed
        return prepared

    def read_points(self, pixels: np.ndarray, face, info: dict | None = None
                    ) -> tuple[np.ndarray, np.ndarray | None] | None:
        """One detected face's landmarks: (68 points float [68, 2], FaceMesh points
        [P, 3] or None: no dense term), image pixels; None when the 68 points are
        degenerate.

        PFLD on the detector's box; with FaceMesh, its points, the upside-down reading
        (:func:`read_upside_down`) and the PFLD–FaceMesh check (:meth:`check_with_mesh`).
        Notes go to ``info``."""
        from recon_tf.preprocess.landmarks import eye_roll

        info = {} if info is None else info
        points = self.preprocessor.landmarker(pixels, face.box, face.keypoints)
        if not np.all(np.isfinite(points)) or np.ptp(points[:, 0]) < 2:
            return None
        if self.facemesh is None:
            return points, None
        mesh_points, score = self.facemesh.detect(pixels, face.box,
                                                  angle=eye_roll(face.keypoints))
        info["facemesh_score"] = round(float(score), 4)
        turned = read_upside_down(self.facemesh, self.preprocessor.landmarker, pixels, face,
                                  score)
        if turned is not None:
            points, mesh_points, score = turned
            info["turned"] = [180, round(float(score), 4)]
        if score < FACEMESH_SURE or not np.all(np.isfinite(mesh_points)):
            return points, None
        try:  # a failing re-run must not cost the face
            return self.check_with_mesh(pixels, points, mesh_points, score, info)
        except Exception as err:  # noqa: BLE001
            info["mesh_disagreement"] = [f"check failed: {err}"]
            return points, mesh_points

    def check_with_mesh(self, pixels: np.ndarray, points: np.ndarray, mesh_points: np.ndarray,
                         score: float, info: dict) -> tuple[np.ndarray, np.ndarray | None]:
        """PFLD's 68 points and FaceMesh's mesh checked against each other (module
        docstring). Returns the 68 points and the mesh to use (None: no dense term)."""
        from recon_tf.preprocess.align import five_points
        from recon_tf.preprocess.detect import keypoint_disagreement, mesh_face
        from recon_tf.preprocess.landmarks import eye_roll

        def gap(points68: np.ndarray, mesh: np.ndarray, mesh_score: float) -> float:
            if not (np.all(np.isfinite(points68)) and np.all(np.isfinite(mesh))):
                return np.inf
            return keypoint_disagreement(mesh_face(mesh, mesh_score).keypoints,
                                         five_points(points68))

        before = gap(points, mesh_points, score)
        if before <= MESH_DISAGREEMENT:
            return points, mesh_points
        # FaceMesh on PFLD's framing: if it agrees, PFLD had the face.
        lo, hi = points.min(axis=0), points.max(axis=0)
        keypoints = five_points(points)
        mesh2, score2 = self.facemesh.detect(pixels, np.r_[lo, hi - lo].astype(np.float32),
                                             angle=eye_roll(keypoints))
        if score2 >= FACEMESH_SURE and gap(points, mesh2, score2) <= MESH_DISAGREEMENT:
            info["mesh_disagreement"] = [round(before, 3), "facemesh re-framed"]
            return points, mesh2
        # PFLD on FaceMesh's framing: if it agrees, FaceMesh had the face.
        framed = mesh_face(mesh_points, score)
        again = np.asarray(self.preprocessor.landmarker(pixels, framed.box, framed.keypoints))
        if gap(again, mesh_points, score) <= MESH_DISAGREEMENT:
            info["mesh_disagreement"] = [round(before, 3), "landmarks re-framed"]
            return again, mesh_points
        info["mesh_disagreement"] = [round(before, 3), "dense term left out"]
        return points, None

    def decode_detect(self, path: str):
        """(:class:`recon_tf.preprocess.image_io.DecodedImage`, detected faces)
        or :class:`Skipped`."""
        from recon_tf.preprocess.image_io import ImageDecodeError, load_image

        pre = self.preprocessor
        try:
            decoded = load_image(path, **pre.decode_limits)
        except ImageDecodeError as err:
            return Skipped(path, err.reason, str(err))
        try:
            faces = pre.detector.detect(decoded.pixels)
            if faces and self.facemesh is not None:
                faces = turned_instead(pre.detector, self.facemesh, pre.landmarker,
                                       decoded.pixels, faces)
            return decoded, faces
        except Exception as err:  # a bad input must never stop a long run
            return Skipped(path, "error", f"{type(err).__name__}: {err}")

    def prepare_face(self, path: str, decoded: tuple, face, info: dict) -> PreparedFace | Skipped:
        """Landmark, align and mask one detected face of a decoded photo."""
        from recon_tf.preprocess import _decode_to_original
        from recon_tf.preprocess.align import align_face
        from recon_tf.preprocess.skin_mask import detail_regions, feature_regions, skin_mask

        pre = self.preprocessor
        image = decoded[0]
        pixels = image.pixels
        try:
            info = {**info, **face.to_json()}
            read = self.read_points(pixels, face, info)
            if read is None:
                return Skipped(path, "landmarks_failed", "degenerate landmarks")
            points, mesh_points = read
            aligned = align_face(pixels, points, pre.image_size, pre.template_3d, pre.rotate,
                                 camera_kind=pre.camera_kind)
            mask = skin_mask(aligned.image, aligned.landmarks, aligned.valid)
            fit_mask = mask.mask
            seen = aligned.valid & ~mask.occluded  # no colour test below: keep occluders out
            if self.fit_features:
                features = feature_regions(aligned.landmarks, fit_mask.shape)
                fit_mask = np.maximum(fit_mask, features & seen)
            details = detail_regions(aligned.landmarks, fit_mask.shape) & seen
            if mask.occluded.any():
                info["occluded_fraction"] = round(float((mask.occluded > 0).mean()), 4)
            fine_mask = np.maximum(fit_mask, details)
            info["mask_method"] = mask.method
            dense = (None if mesh_points is None
                     else apply_transform(aligned.transform, mesh_points[:, :2]))
            return PreparedFace(path, pixels, tuple(image.original_size),
                                _decode_to_original(image),
                                aligned.transform.astype(np.float64), aligned.image,
                                aligned.landmarks.astype(np.float32), fit_mask, fine_mask,
                                None if dense is None else dense.astype(np.float32), info,
                                mask.occluded & aligned.valid, mask.background)
        except Exception as err:  # a bad input must never stop a long run
            return Skipped(path, "error", f"{type(err).__name__}: {err}")
