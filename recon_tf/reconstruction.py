"""Photo in, 3D face out: the per-photo pipeline behind ``tools/reconstruct.py``.

:meth:`PhotoReconstructor.prepare` and :meth:`~PhotoReconstructor.prepare_all`
turn a photo into :class:`recon_tf.photo_faces.PreparedFace` s (decode, detect
every face, 68 and FaceMesh landmarks with their cross-checks, aligned crop,
skin mask V of Eq. 7; :mod:`recon_tf.photo_faces`).

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

import os
import time

import numpy as np
import tensorflow as tf

from recon_tf.camera import PIXEL_CENTER, Camera, rigid_transform, rotation_matrix
from recon_tf.face_model import FaceModel
from recon_tf.fit_data import FitResult, make_fit_data
from recon_tf.fitting import Fitter
from recon_tf.landmarks import JAW, NOW_FROM_IBUG
from recon_tf.photo_faces import FacePreparer, PreparedFace, Skipped
from recon_tf.preprocess.align import apply_transform, compose, invert

__all__ = ["DM_TO_MM", "OUTPUT_FILES", "UNSURE_PRIOR_GAIN", "PhotoReconstructor",
           "PreparedFace", "Skipped", "paste", "read_fitted_faces", "render_psnr", "reproject"]

DM_TO_MM = 100.0
# The fit's λ_α and λ_β multiplier for faces whose FaceMesh points were left out
# (PhotoReconstructor's unsure_prior_gain): on held-out synthetic faces turned by 65°
# (half of them unsure) it took the vertex error from 3.77 to 2.79 mm, by 80° (given
# boxes, 7 of 8 unsure) from 5.02 to 2.51 mm; none of the 82 shared faces is unsure.
UNSURE_PRIOR_GAIN = 100.0
OUTPUT_FILES = ("mesh_coarse.obj", "mesh_coarse.mtl", "albedo_coarse.png", "mesh_neutral.obj",
                "render_coarse.png", "face_mask.png", "landmarks68.txt", "now_landmarks.txt",
                "now_landmarks_neutral.txt", "coeffs.npz")


class PhotoReconstructor:
    """Photo → fitted coarse face (see the module docstring).

    Args:
      face_model: the 3DMM.
      fitter: a :class:`recon_tf.fitting.Fitter` for ``face_model``.
      preprocessor, facemesh, fit_features: the front end's
        (:class:`recon_tf.photo_faces.FacePreparer`, kept as ``self.preparer``);
        the preprocessor's alignment template must be ``face_model``'s.
      uv_size: side of the albedo map in texels.
      landmark_weights: float [68] per-point weights of L_lmk (default: 1;
        Deep3DFace's are :func:`recon_tf.landmarks.deep3d_landmark_weights`).
      predictor: a trained R-Net, ``predictor(crops, training=False)``: aligned
        crops float32 [B, S, S, 3] in [0, 1] → coefficients [B, total]
        (:func:`recon_tf.coarse.load_coarse_model`), or None to fit from the
        mean face.
      refine_steps: with a predictor: photometric fitting steps from its
        prediction (:func:`recon_tf.fit_data.refine_schedule`; 0 keeps it).
      fine: a :class:`FineSettings` to add the fine outputs, or None.
      unsure_prior_gain: multiplier of the fit's λ_α and λ_β for a face whose
        FaceMesh points were left out (FaceMesh unsure of the face, score below
        :data:`recon_tf.photo_faces.FACEMESH_SURE`, or at odds with the 68
        points): its landmarks are then unreliable (near-profile views, heavy
        occlusion), so identity and expression lean on their priors (ours,
        :data:`UNSURE_PRIOR_GAIN`; 1 = off; only with FaceMesh;
        ``info["unsure_prior"]`` records it).
      output_landmark_ids: int [68], the vertices reported as points 17–67 of
        ``landmarks68.txt`` (the face model's calibrated ``lmk68_output``,
        :attr:`recon_tf.face_model.FaceModel.lmk68_output`); the jaw, 0–16, stays
        the fitter's silhouette. None reports the fitter's own points.
    """

    def __init__(self, face_model: FaceModel, fitter: Fitter, preprocessor, facemesh=None,
                 uv_size: int = 512, fit_features: bool = True,
                 landmark_weights: np.ndarray | None = None, predictor=None,
                 refine_steps: int = 0, fine=None,
                 output_landmark_ids: np.ndarray | None = None,
                 unsure_prior_gain: float = UNSURE_PRIOR_GAIN):
        self.face_model = face_model
        self.unsure_prior_gain = float(unsure_prior_gain)
        self.output_landmark_ids = (None if output_landmark_ids is None else
                                    np.asarray(output_landmark_ids, np.int32))
        self.predictor = predictor
        self.refine_steps = int(refine_steps)
        self.fine = fine
        self.fitter = fitter
        self.preparer = FacePreparer(preprocessor, facemesh, fit_features)
        self.uv_size = uv_size
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
    def prepare(self, path: str, annotation: np.ndarray | None = None,
                box: np.ndarray | None = None) -> PreparedFace | Skipped:
        """The largest (or the annotated, or the given box's) face of a photo:
        :meth:`FacePreparer.prepare`."""
        return self.preparer.prepare(path, annotation, box)

    def prepare_all(self, path: str, max_faces: int = 0) -> list[PreparedFace] | Skipped:
        """Every face of a photo, largest first: :meth:`FacePreparer.prepare_all`."""
        return self.preparer.prepare_all(path, max_faces)

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
            np.stack([f.background for f in faces]),
            shape_prior_scale=self.shape_prior_scales(faces))
        if self.predictor is None:
            return self.fitter.fit(data, init)
        from recon_tf.fit_data import refine_schedule

        t0 = time.perf_counter()
        predicted = np.asarray(self.predictor(data.images, training=False), np.float32)
        seconds = time.perf_counter() - t0
        result = self.fitter.fit(data, predicted,
                                 refine_schedule(self.refine_steps, self.fitter.image_size,
                                                 self.fitter.schedule))
        return result._replace(seconds={"predict": seconds, **result.seconds})

    def shape_prior_scales(self, faces: list[PreparedFace]) -> np.ndarray | None:
        """Per-face λ_α and λ_β multipliers: ``unsure_prior_gain`` where FaceMesh ran and its
        points were left out (see the class docstring), else 1; None when all are 1."""
        if self.unsure_prior_gain == 1.0 or self.preparer.facemesh is None:
            return None
        unsure = [f.dense is None for f in faces]
        for face, flag in zip(faces, unsure):
            if flag:
                face.info["unsure_prior"] = self.unsure_prior_gain
        if not any(unsure):
            return None
        return np.where(unsure, self.unsure_prior_gain, 1.0).astype(np.float32)

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


def render_psnr(face: PreparedFace, out_dir: str, fine: bool = True) -> dict:
    """How well a face's written renders explain its photo, for ``summary.json``.

    PSNR (dB, 0–255, photo size) of ``render_coarse.png`` and, with ``fine`` (this
    run wrote the fine outputs), ``render_fine.png`` against the photo, over
    ``face_mask.png`` ∩ the hull of the *detector's* 68 points
    (:func:`recon_tf.metrics.face_region_psnr`): the region of the README's
    per-photo targets, with the detector's points standing in for an annotation.
    A render that explains the face well scores high; it is no accuracy measure
    against ground truth.

    Returns:
      ``{"coarse": dB, "fine": dB (with ``fine``), "region": text}``; a
      stage whose region is empty (or identical to the photo) gets None.
    """
    import cv2

    from recon_tf.metrics import face_region_psnr

    ow, oh = face.original_size
    photo = face.pixels
    if photo.shape[:2] != (oh, ow):  # as the renders were brought to photo size
        photo = cv2.resize(photo, (ow, oh), interpolation=cv2.INTER_LINEAR)
    mask = cv2.imread(os.path.join(out_dir, "face_mask.png"), cv2.IMREAD_GRAYSCALE) > 127
    points = apply_transform(compose(face.to_original, invert(face.crop_transform)),
                             face.landmarks)
    scores = {}
    for stage in ("coarse", "fine") if fine else ("coarse",):
        path = os.path.join(out_dir, f"render_{stage}.png")
        if os.path.isfile(path):
            render = cv2.cvtColor(cv2.imread(path, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
            value = float(face_region_psnr(photo, render, mask, points))
            scores[stage] = round(value, 2) if np.isfinite(value) else None  # JSON has no NaN
    scores["region"] = "face_mask ∩ detected-landmark hull"
    return scores


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
