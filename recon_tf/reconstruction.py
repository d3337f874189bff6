"""Photo in, 3D face out: the per-photo pipeline behind ``tools/reconstruct.py``.

:meth:`PhotoReconstructor.prepare` decodes a photo robustly, detects the
largest face (MTCNN), finds its 68 landmarks (PFLD by default) and, when
available, 468 dense FaceMesh points, aligns a crop (Deep3DFace's 5-point
scheme) and computes the skin mask V of Eq. 7.

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

:meth:`PhotoReconstructor.fit` fits B prepared faces at once (:mod:`recon_tf.fitting`), and
:meth:`PhotoReconstructor.write` writes one face's outputs:

==========================  ====================================================
file                        content
==========================  ====================================================
``mesh_coarse.obj``         the face with its expression, face-model frame (x to
(+ ``.mtl``,                the subject's left, y up, z out of the face), in
``albedo_coarse.png``)      millimetres, with UVs and the albedo map
``mesh_neutral.obj``        the same identity, neutral expression (NoW scores it),
                            eye and mouth openings closed by
                            :func:`recon_tf.mesh.cap_holes` (one vertex per
                            opening appended; the model's vertex ids kept)
``render_coarse.png``       the front face rendered over the photo, photo size
``face_mask.png``           0/255, the pixels the rendered front face covers
``landmarks68.txt``         68 rows ``x y``, photo pixels (pixel centres at
                            integers), iBUG order, jaw on the silhouette (with
                            the fitter's ``jaw_slide``, each jaw point where the
                            outline is nearest the detected point), points
                            17–67 on the face model's ``lmk68_output`` vertices
                            (where annotators put them on fitted faces), projected
                            from the mesh
``now_landmarks.txt``       7 rows ``x y z`` (mm) on ``mesh_coarse.obj``, NoW
                            order (subject's right first)
``now_landmarks_neutral.txt`` the same 7 vertices on ``mesh_neutral.obj``: with
                            it, the NoW submission pair (mesh + landmarks)
``coeffs.npz``              coefficients by group, camera, pose, crop transform,
                            the 68 landmarks' vertices: point k is
                            (1 − b) · v[landmark_ids[k]] + b · v[landmark_ids_next[k]],
                            b = landmark_blend[k] (non-zero only where a jaw point
                            slides along the outline); detected_landmarks68: the
                            detector's 68 points the fit followed (photo pixels)
==========================  ====================================================

With :class:`recon_tf.photo_fine.FineSettings` (:mod:`recon_tf.photo_fine`) the fine
stage adds ``mesh_fine.obj`` (+ ``.mtl``, ``albedo.png``), ``displacement.npy``
(float32 mm), ``displacement.png`` + ``maps.json`` (16-bit, offset/scale),
``normals.png`` ((n + 1)/2, face-model frame) and ``render_fine.png``.

Re-projecting the mesh onto the photo from ``coeffs.npz`` (perspective):
``X = R v / 100 + t`` (v in mm, X in decimetres), then
``u = cx + focal · X_x / (camera_distance − X_z)``,
``v = cy − focal · X_y / (camera_distance − X_z)`` in continuous pixels; subtract
0.5 for the pixel-centre convention of ``landmarks68.txt``.
"""

from __future__ import annotations

import dataclasses
import os
import time

import numpy as np
import tensorflow as tf

from recon_tf.camera import PIXEL_CENTER, Camera, rigid_transform, rotation_matrix
from recon_tf.face_model import FaceModel
from recon_tf.fitting import FitResult, Fitter, make_fit_data
from recon_tf.landmarks import JAW, NOW_FROM_IBUG
from recon_tf.preprocess.align import apply_transform, compose, invert

DM_TO_MM = 100.0
# PFLD vs FaceMesh: the mean keypoint gap (× FaceMesh's eye distance) above which
# each is re-run on the other's framing (module docstring). Over the 79 faces of the
# shared and annotated photos and 24 synthetic faces at 30–65° yaw: median 0.06, 90th
# percentile 0.10, at most 0.33 (65° yaw); a box on the nose and mouth gave 0.52.
MESH_DISAGREEMENT = 0.35
# FaceMesh scores below this trigger the upside-down reading (module docstring) ...
UPSIDE_DOWN_SCORE = 0.5
# ... which is kept when FaceMesh scores the turned face at least this.
UPSIDE_DOWN_VERIFY = 0.9
OUTPUT_FILES = ("mesh_coarse.obj", "mesh_coarse.mtl", "albedo_coarse.png", "mesh_neutral.obj",
                "render_coarse.png", "face_mask.png", "landmarks68.txt", "now_landmarks.txt",
                "now_landmarks_neutral.txt", "coeffs.npz")


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


class PhotoReconstructor:
    """Photo → fitted coarse face (see the module docstring).

    Args:
      face_model: the 3DMM.
      fitter: a :class:`recon_tf.fitting.Fitter` for ``face_model``.
      preprocessor: a :class:`recon_tf.preprocess.FacePreprocessor` (detector,
        landmarker, decode limits; its template must be ``face_model``'s).
      facemesh: a :class:`recon_tf.nets.facemesh.FaceMesh`, or None.
      uv_size: side of the albedo map in texels.
      landmark_weights: float [68] per-point weights of L_lmk (default: 1;
        Deep3DFace's are :func:`recon_tf.landmarks.deep3d_landmark_weights`).
      fit_features: add the brows and lips to the photometric mask V of the
        fit (the skin mask alone excludes them; the albedo basis has lip and
        brow modes that only a mask with them can fit).
      predictor: a trained R-Net, ``predictor(crops, training=False)``: aligned
        crops float32 [B, S, S, 3] in [0, 1] → coefficients [B, total]
        (:func:`recon_tf.coarse.load_coarse_model`), or None to fit from the
        mean face.
      refine_steps: with a predictor: photometric fitting steps from its
        prediction (:func:`recon_tf.fitting.refine_schedule`; 0 keeps it).
      fine: a :class:`FineSettings` to add the fine outputs, or None.
      output_landmark_ids: int [68], the vertices reported as points 17–67 of
        ``landmarks68.txt`` (the face model's calibrated ``lmk68_output``,
        :attr:`recon_tf.face_model.FaceModel.lmk68_output`); the jaw, 0–16, stays
        the fitter's silhouette. None reports the fitter's own points.
    """

    def __init__(self, face_model: FaceModel, fitter: Fitter, preprocessor, facemesh=None,
                 uv_size: int = 512, fit_features: bool = True,
                 landmark_weights: np.ndarray | None = None, predictor=None,
                 refine_steps: int = 0, fine=None,
                 output_landmark_ids: np.ndarray | None = None):
        self.face_model = face_model
        self.output_landmark_ids = (None if output_landmark_ids is None else
                                    np.asarray(output_landmark_ids, np.int32))
        self.predictor = predictor
        self.refine_steps = int(refine_steps)
        self.fine = fine
        self.fitter = fitter
        self.preprocessor = preprocessor
        self.facemesh = facemesh
        self.uv_size = uv_size
        self.fit_features = fit_features
        self.landmark_weights = landmark_weights
        self._uv_layout = None
        self._window_vertices = None

    @property
    def method(self) -> str:
        """How coefficients are obtained: ``fit``, ``rnet`` or ``rnet+refine<N>``."""
        if self.predictor is None:
            return "fit"
        return "rnet" if self.refine_steps == 0 else f"rnet+refine{self.refine_steps}"

    # ---------------------------------------------------------------- prepare
    def prepare(self, path: str, annotation: np.ndarray | None = None) -> PreparedFace | Skipped:
        """Decode, detect, landmark and align the largest face; never raises for bad input.

        Args:
          path: the photo.
          annotation: optional float [68, 2] ground-truth landmarks (original
            pixels): evaluation picks the annotated face instead of the largest.
        """
        from recon_tf.preprocess import select_face

        decoded = self._decode_detect(path)
        if isinstance(decoded, Skipped):
            return decoded
        from recon_tf.preprocess import _decode_to_original

        image, faces = decoded
        gt = (None if annotation is None
              else apply_transform(invert(_decode_to_original(image)), annotation))
        face, note = select_face(faces, gt)
        if face is None:
            return Skipped(path, "no_face", "MTCNN found no face")
        return self._prepare_face(path, decoded, face, {"num_faces": len(faces), "note": note})

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
        decoded = self._decode_detect(path)
        if isinstance(decoded, Skipped):
            return decoded
        faces = sorted(decoded[1], key=lambda f: -f.area)
        if not faces:
            return Skipped(path, "no_face", "MTCNN found no face")
        if max_faces > 0:
            faces = faces[:max_faces]
        prepared, failed = [], []
        for k, box in enumerate(faces):
            item = self._prepare_face(path, decoded, box, {"num_faces": len(decoded[1]),
                                                             "face_index": k})
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
        (:func:`read_upside_down`) and the PFLD–FaceMesh check (:meth:`_check_with_mesh`).
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
        if score < 0.5 or not np.all(np.isfinite(mesh_points)):
            return points, None
        try:  # a failing re-run must not cost the face
            return self._check_with_mesh(pixels, points, mesh_points, score, info)
        except Exception as err:  # noqa: BLE001
            info["mesh_disagreement"] = [f"check failed: {err}"]
            return points, mesh_points

    def _check_with_mesh(self, pixels: np.ndarray, points: np.ndarray, mesh_points: np.ndarray,
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
        if score2 >= 0.5 and gap(points, mesh2, score2) <= MESH_DISAGREEMENT:
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

    def _decode_detect(self, path: str):
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

    def _prepare_face(self, path: str, decoded: tuple, face, info: dict) -> PreparedFace | Skipped:
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

    # ---------------------------------------------------------------- fit
    def fit(self, faces: list[PreparedFace], init: np.ndarray | None = None) -> FitResult:
        """Fit the coefficients of B prepared faces at once (with a predictor: its
        prediction, refined by ``refine_steps`` fitting steps)."""
        dense = dense_weights = None
        if any(f.dense is not None for f in faces):  # a face without gets weight 0
            points = self.fitter.dense.vertex_ids.shape[0] if self.fitter.dense else 0
            dense = np.stack([f.dense if f.dense is not None else np.zeros((points, 2))
                              for f in faces]) + PIXEL_CENTER
            dense_weights = np.stack([np.full(points, float(f.dense is not None))
                                      for f in faces]).astype(np.float32)
        data = make_fit_data(
            np.stack([f.crop for f in faces]).astype(np.float32) / 255.0,
            np.stack([f.landmarks for f in faces]) + PIXEL_CENTER,
            np.stack([f.skin_mask for f in faces]).astype(np.float32) / 255.0,
            landmark_weights=None if self.landmark_weights is None else
            np.tile(np.asarray(self.landmark_weights, np.float32)[None], [len(faces), 1]),
            dense=dense, dense_weights=dense_weights,
            background=None if any(f.background is None for f in faces) else
            np.stack([f.background for f in faces]))
        if self.predictor is None:
            return self.fitter.fit(data, init)
        from recon_tf.fitting import refine_schedule

        t0 = time.perf_counter()
        predicted = np.asarray(self.predictor(data.images, training=False), np.float32)
        seconds = time.perf_counter() - t0
        result = self.fitter.fit(data, predicted,
                                 refine_schedule(self.refine_steps, self.fitter.image_size,
                                                 self.fitter.schedule))
        return result._replace(seconds={"predict": seconds, **result.seconds})

    # ---------------------------------------------------------------- outputs
    def uv_layout(self):
        if self._uv_layout is None:
            from recon_tf.render.uv import rasterize_uv_layout

            self._uv_layout = rasterize_uv_layout(self.face_model, self.uv_size)
        return self._uv_layout

    def photo_camera(self, face: PreparedFace) -> Camera:
        """The camera that projects the fitted face onto the decoded photo."""
        h, w = face.pixels.shape[:2]
        return self.fitter.camera(self.fitter.image_size).for_source_image(
            face.crop_transform, (h, w))

    def face_window(self, camera: Camera, screen: np.ndarray) -> tuple[Camera, int, int]:
        """Where on the photo the fitted front face can be: the bounding box (2 px of
        margin, clipped to the photo) of the projected vertices of every triangle that
        touches the front face, and the camera that renders just that window
        (:meth:`recon_tf.camera.Camera.window`). Rendering the window instead of the whole
        photo gives the same pixels at a fraction of the time and memory on large photos.

        Args:
          camera: the photo camera (:meth:`photo_camera`).
          screen: float [N, 2] the vertices' pixels under it.
        Returns:
          (window camera, x0, y0): the window's top-left corner in photo pixels.
        """
        if self._window_vertices is None:
            tris = np.asarray(self.face_model.arrays["triangles"])
            touches = (self.fitter.front_mask.numpy() > 0.5)[tris].any(axis=1)
            self._window_vertices = np.unique(tris[touches])
        h, w = camera.image_size
        pts = screen[self._window_vertices]
        pts = pts[np.all(np.isfinite(pts), axis=1)]
        if not len(pts):
            return camera.window(0, 0, 1, 1), 0, 0
        x0, y0 = np.clip(np.floor(pts.min(0)).astype(int) - 2, 0, [w - 1, h - 1])
        x1, y1 = np.clip(np.ceil(pts.max(0)).astype(int) + 3, [x0 + 1, y0 + 1], [w, h])
        return camera.window(int(x0), int(y0), int(x1 - x0), int(y1 - y0)), int(x0), int(y0)

    def render_on_photo(self, face: PreparedFace, coeffs: np.ndarray):
        """Render the fitted face over the decoded photo (only the window it can cover,
        :meth:`face_window`).

        Returns:
          (composite uint8 [H, W, 3], front-face mask bool [H, W],
          landmarks float32 [68, 2] in decoded pixels, pixel centres at integers,
          (their vertex pairs int32 [68, 2], blend float32 [68]): landmark k is
          (1 − blend) · v[pair[k, 0]] + blend · v[pair[k, 1]], projected; the
          jaw's depend on the pose, and blend is 0 unless the jaw slides; points
          17–67 are ``output_landmark_ids``' when given).
        """
        camera = self.photo_camera(face)
        params = self.fitter.split(np.asarray(coeffs, np.float32)[None])
        targets = (apply_transform(invert(face.crop_transform), face.landmarks)
                   + PIXEL_CENTER)[None]
        _, cam_v, normals, screen, lmk = self.fitter.geometry(params, camera, targets=targets)
        ids, segment, blend = self.fitter.landmark_layout(cam_v, normals, screen, camera,
                                                          targets=targets)
        ids = ids[0].numpy()
        if segment is None:
            lmk_ids = np.stack([ids, ids], axis=1), np.zeros(len(ids), np.float32)
        else:
            seg = segment[0].numpy()
            lmk_ids = (np.stack([ids[seg], ids[np.minimum(seg + 1, len(ids) - 1)]], axis=1),
                       np.array(blend[0]))
        lmk, screen = np.array(lmk[0]), screen[0].numpy()
        if self.output_landmark_ids is not None:
            inner = self.output_landmark_ids[len(JAW):]
            lmk[len(JAW):] = screen[inner]
            lmk_ids[0][len(JAW):] = inner[:, None]
            lmk_ids[1][len(JAW):] = 0.0
        window, x0, y0 = self.face_window(camera, screen)
        rendered, covered = self.fitter.render_front(params, window, cam_v, normals)
        comp, mask = paste(face.pixels, rendered[0].numpy(), covered[0, ..., 0].numpy() > 0.5,
                           x0, y0)
        return comp, mask, lmk - PIXEL_CENTER, lmk_ids

    def write(self, face: PreparedFace, coeffs: np.ndarray, out_dir: str) -> dict:
        """Write one face's outputs (see the module docstring) into ``out_dir``.

        Returns:
          a JSON-friendly dict of what was written and the face's numbers.
        """
        import cv2

        from recon_tf.export import save_png, write_obj
        from recon_tf.mesh import cap_holes
        from recon_tf.render.uv import attributes_to_uv

        fm = self.face_model
        os.makedirs(out_dir, exist_ok=True)
        c = fm.layout.split(tf.constant(coeffs[None], tf.float32))
        verts = fm.shape(c.identity, c.expression)[0].numpy() * DM_TO_MM
        neutral = fm.shape(c.identity, tf.zeros_like(c.expression))[0].numpy() * DM_TO_MM
        albedo = fm.albedo(c.albedo)
        albedo_map = np.clip(attributes_to_uv(albedo, self.uv_layout())[0].numpy(), 0.0, 1.0)
        tris, uv, tri_uv = (fm.arrays[k] for k in ("triangles", "uv", "tri_uv"))
        write_obj(os.path.join(out_dir, "mesh_coarse.obj"), verts, tris, uv=uv, face_uv=tri_uv,
                  texture=albedo_map, texture_name="albedo_coarse.png")
        closed, closed_tris, closed_uv, closed_tri_uv = cap_holes(neutral, tris, uv, tri_uv)
        write_obj(os.path.join(out_dir, "mesh_neutral.obj"), closed, closed_tris, uv=closed_uv,
                  face_uv=closed_tri_uv)

        comp, mask, lmk_dec, lmk_ids = self.render_on_photo(face, coeffs)
        ow, oh = face.original_size
        if comp.shape[:2] != (oh, ow):
            comp = cv2.resize(comp, (ow, oh), interpolation=cv2.INTER_LINEAR)
            mask = cv2.resize(mask.astype(np.uint8), (ow, oh),
                              interpolation=cv2.INTER_NEAREST) > 0
        save_png(os.path.join(out_dir, "render_coarse.png"), comp)
        cv2.imwrite(os.path.join(out_dir, "face_mask.png"), mask.astype(np.uint8) * 255)
        lmk_orig = apply_transform(face.to_original, lmk_dec)
        np.savetxt(os.path.join(out_dir, "landmarks68.txt"), lmk_orig, fmt="%.3f")
        now_ids = fm.arrays["lmk68"][list(NOW_FROM_IBUG)]
        np.savetxt(os.path.join(out_dir, "now_landmarks.txt"), verts[now_ids], fmt="%.4f")
        np.savetxt(os.path.join(out_dir, "now_landmarks_neutral.txt"), neutral[now_ids],
                   fmt="%.4f")
        self._write_coeffs(os.path.join(out_dir, "coeffs.npz"), face, coeffs, lmk_ids)
        return {"landmarks68": lmk_orig}

    def _write_coeffs(self, path: str, face: PreparedFace, coeffs: np.ndarray,
                      landmark_ids: tuple[np.ndarray, np.ndarray]) -> None:
        fm = self.face_model
        c = fm.layout.split(tf.constant(coeffs[None], tf.float32))
        to_crop = compose(face.crop_transform, invert(face.to_original))  # original → crop
        ow, oh = face.original_size
        # A photo decoded at a reduced size has whole-pixel sides: x and y scales may
        # differ by up to a pixel over its shorter side (Camera.for_source_image).
        camera = self.fitter.camera(self.fitter.image_size).for_source_image(
            to_crop, (oh, ow), max_anisotropy=1.0 / min(face.pixels.shape[:2]))
        rot = rotation_matrix(c.angles)[0].numpy()
        tmp = path + ".tmp.npz"
        np.savez(tmp, identity=c.identity[0].numpy(), expression=c.expression[0].numpy(),
                 albedo=c.albedo[0].numpy(), angles=c.angles[0].numpy(),
                 translation=c.translation[0].numpy(), light=c.light[0].numpy(),
                 coeffs=np.asarray(coeffs, np.float32), rotation=rot,
                 camera_kind=camera.kind, focal=camera.focal, ortho_scale=camera.ortho_scale,
                 principal_point=np.asarray(camera.center, np.float64),
                 camera_distance=camera.distance, image_size=np.array([oh, ow]),
                 crop_transform=to_crop.astype(np.float64), crop_size=self.fitter.image_size,
                 landmark_ids=np.asarray(landmark_ids[0][:, 0], np.int32),
                 landmark_ids_next=np.asarray(landmark_ids[0][:, 1], np.int32),
                 landmark_blend=np.asarray(landmark_ids[1], np.float32),
                 detected_landmarks68=apply_transform(compose(
                     face.to_original, invert(face.crop_transform)), face.landmarks),
                 face_model=fm.name, units="translation in decimetres; mesh files in mm")
        os.replace(tmp, path)


def paste(photo: np.ndarray, render: np.ndarray, covered: np.ndarray, x0: int, y0: int
          ) -> tuple[np.ndarray, np.ndarray]:
    """Composite a window's render over a photo.

    Args:
      photo: uint8 [H, W, 3].
      render: float [h, w, 3] in [0, 1] (clipped here), the window's render.
      covered: bool [h, w], the window's pixels the render replaces.
      x0, y0: the window's top-left corner in the photo.
    Returns:
      (uint8 [H, W, 3] composite, bool [H, W] mask of the replaced pixels).
    """
    h, w = covered.shape
    comp = photo.copy()
    mask = np.zeros(photo.shape[:2], bool)
    mask[y0:y0 + h, x0:x0 + w] = covered
    pixels = np.clip(np.nan_to_num(render[covered].astype(np.float64)) * 255.0 + 0.5, 0, 255)
    comp[y0:y0 + h, x0:x0 + w][covered] = pixels.astype(np.uint8)
    return comp, mask


def read_fitted_faces(root: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Every fitted face under a main-job output folder (each ``coeffs.npz`` with
    its ``mesh_coarse.obj``), projected back onto its photo.

    Returns:
      (screens float [F, N, 2]: each face's vertices on its photo (:func:`reproject`),
      detected float [F, 68, 2]: the detector's points (``detected_landmarks68``),
      photos: F photo names, the first folder under ``root``).
    Raises:
      FileNotFoundError: no fitted face under ``root``.
      ValueError: a ``coeffs.npz`` without ``detected_landmarks68`` (an older
        main job wrote it: run it again).
    """
    from recon_tf.export import read_obj

    screens, detected, photos = [], [], []
    for folder, _, files in sorted(os.walk(root)):
        if "coeffs.npz" not in files or "mesh_coarse.obj" not in files:
            continue
        path = os.path.join(folder, "coeffs.npz")
        with np.load(path) as d:
            if "detected_landmarks68" not in d.files:
                raise ValueError(f"{path} has no detected_landmarks68: an older "
                                 "tools/reconstruct.py wrote it; run it again")
            detected.append(np.asarray(d["detected_landmarks68"], np.float64))
        screens.append(reproject(path, read_obj(os.path.join(folder, "mesh_coarse.obj")).vertices))
        photos.append(os.path.relpath(folder, root).split(os.sep)[0])
    if not screens:
        raise FileNotFoundError(f"no coeffs.npz + mesh_coarse.obj under {root}: run "
                                "tools/reconstruct.py --output=<it> first")
    return np.stack(screens), np.stack(detected), photos


def reproject(coeffs_npz: str, vertices_mm: np.ndarray) -> np.ndarray:
    """Project mesh vertices (mm, face-model frame) onto the photo with ``coeffs.npz``.

    Returns:
      float [N, 2] photo pixels, pixel centres at integers (as ``landmarks68.txt``).
    """
    with np.load(coeffs_npz) as d:
        camera = Camera(kind=str(d["camera_kind"]), image_size=tuple(int(v) for v in
                                                                     d["image_size"]),
                        focal=float(d["focal"]), ortho_scale=float(d["ortho_scale"]),
                        distance=float(d["camera_distance"]),
                        principal_point=tuple(float(v) for v in d["principal_point"]))
        angles, translation = d["angles"][None], d["translation"][None]
    pts = tf.constant(np.asarray(vertices_mm, np.float32)[None] / DM_TO_MM)
    cam = rigid_transform(pts, tf.constant(angles, tf.float32),
                          tf.constant(translation, tf.float32))
    return camera.project(cam)[0].numpy() - PIXEL_CENTER
