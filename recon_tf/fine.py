"""The fine stage (paper §3.4): coarse face → UV inputs → detail maps → detailed render.

Data flow for B aligned crops with their coarse coefficients (from R-Net or
fitting; the coarse stage is frozen here):

1. :meth:`FineStage.prepare` renders the coarse face and unwraps, into UV
   (``uv_size``² texels, :mod:`recon_tf.render.uv`): the input (``texture``)
   and the coarse render, with a visibility mask (inside the image, facing
   the camera, unoccluded); the **increment image** UV(input) − UV(coarse
   render) of §3.4.3 (0 where not visible); the coarse albedo map; the coarse
   position and normal maps (model space).
2. The modules (or per-photo fitting, :meth:`FineStage.fit`) give a detailed
   albedo map (§3.4.2) and a displacement map D (§3.4.3, decimetres along the
   coarse normals, positive outward).
3. :meth:`FineStage.render` displaces the surface in UV, takes detail normals
   from it (:func:`recon_tf.render.detail.displace`) and shades every pixel of
   the coarse rasterization with the detailed albedo and normals under the
   same SH light (Eq. 5). The fine render covers the front face only (the
   same mask convention as the coarse render).
4. :meth:`FineStage.terms` evaluates Eq. 11–13 (:mod:`recon_tf.losses`).

What the wavelet perception encoder reads (the paper does not say): by
default the input **unwrapped into UV** (``wavelet_source="uv"``), so that
every branch works in UV space and its features line up with the maps it
predicts; ``"crop"`` feeds it the aligned crop resized to ``uv_size``.

Ablations (Table 5): without the albedo module the detailed albedo is the
coarse albedo map; without the displacement module D = 0.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import tensorflow as tf

from recon_tf import losses
from recon_tf.camera import rotate_normals
from recon_tf.face_model import FaceModel
from recon_tf.fitting import Fitter
from recon_tf.lighting import irradiance, shade
from recon_tf.render.detail import displace, shade_uv_maps
from recon_tf.render.uv import (
    attributes_to_uv,
    bilinear_sample,
    mirror_texels,
    rasterize_uv_layout,
    unwrap_image,
)

WAVELET_SOURCES = ("uv", "crop")
FIT_MIN_FACING = 0.25  # per-photo fine fitting: texels within ≈ 75° of facing the camera


class FineInputs(NamedTuple):
    """What the fine modules and losses read (all without gradient to the coarse stage).

    Attributes:
      texture: float32 [B, U, U, 3] the input unwrapped into UV, in [0, 1], 0
        where not visible.
      visible: float32 [B, U, U, 1] in {0, 1}.
      increment: float32 [B, U, U, 3] UV(input) − UV(coarse render), in [−1, 1].
      coarse_albedo: float32 [B, U, U, 3] in [0, 1].
      position_map, normal_map: float32 [B, U, U, 3], coarse surface and unit
        normals, model space (decimetres).
      uv_mask: float32 [1, U, U, 1], the UV layout.
      module_texture: what the wavelet encoder reads ([B, U, U, 3]).
      triangle_ids: int32 [B, S, S]; barycentrics: float32 [B, S, S, 3]: the
        coarse rasterization of the crop.
      front: float32 [B, S, S, 1], pixels covered by the front face.
      angles: float32 [B, 3]; light: float32 [B, 27].
      facing: float32 [B, U, U, 1], camera-space n_z of the coarse surface (1:
        facing the camera, 0: grazing).
      texel_pixels: float32 [B, U, U, 2], where each texel lands in the crop
        (x, y pixel-edge coordinates), or None.
    """

    texture: tf.Tensor
    visible: tf.Tensor
    increment: tf.Tensor
    coarse_albedo: tf.Tensor
    position_map: tf.Tensor
    normal_map: tf.Tensor
    uv_mask: tf.Tensor
    module_texture: tf.Tensor
    triangle_ids: tf.Tensor
    barycentrics: tf.Tensor
    front: tf.Tensor
    angles: tf.Tensor
    light: tf.Tensor
    facing: tf.Tensor
    texel_pixels: tf.Tensor | None = None


class FineOutputs(NamedTuple):
    """A detailed face: maps in UV and its render.

    Attributes:
      albedo_map: float32 [B, U, U, 3] in [0, 1].
      displacement: float32 [B, U, U, 1], decimetres, + outward.
      detail_normals: float32 [B, U, U, 3], unit, model space.
      image: float32 [B, S, S, 3], the fine render clipped to [0, 1] as a
        camera records it (0 off the face).
    """

    albedo_map: tf.Tensor
    displacement: tf.Tensor
    detail_normals: tf.Tensor
    image: tf.Tensor


class FineStage:
    """Fine-stage geometry, rendering and losses around a frozen coarse stage.

    Args:
      face_model: the 3DMM.
      uv_size: side U of the UV maps (default 256).
      image_size: side S of the aligned crops.
      camera_kind: the crops' projection.
      weights: Eq. 11–13 weights (default :class:`recon_tf.losses.FineLossWeights`).
      identity_net: frozen face-recognition net for L_id, or None.
      wavelet_source: ``"uv"`` or ``"crop"`` (module docstring).
    """

    def __init__(self, face_model: FaceModel, uv_size: int = 256, image_size: int = 224,
                 camera_kind: str = "perspective", weights=None, identity_net=None,
                 wavelet_source: str = "uv"):
        if wavelet_source not in WAVELET_SOURCES:
            raise ValueError(f"wavelet_source must be one of {WAVELET_SOURCES}")
        self.face_model = face_model
        self.uv_size = int(uv_size)
        self.image_size = int(image_size)
        self.weights = weights or losses.FineLossWeights()
        self.identity_net = identity_net if self.weights.id_weight > 0 else None
        self.wavelet_source = wavelet_source
        self.coarse = Fitter(face_model, image_size=image_size, camera_kind=camera_kind)
        self.layout = rasterize_uv_layout(face_model, self.uv_size)
        self._mirror = None

    def mirror_index(self) -> tf.Tensor:
        """int32 [U·U]: each texel's left–right mirror texel on the mean shape (−1: none;
        :func:`recon_tf.render.uv.mirror_texels`)."""
        if self._mirror is None:
            with tf.init_scope():  # eager even when first asked for inside a tf.function
                mean = tf.constant(np.asarray(self.face_model.arrays["mean_shape"],
                                              np.float32))
                position = attributes_to_uv(mean[None], self.layout)[0].numpy()
                self._mirror = tf.constant(mirror_texels(position,
                                                         self.layout.mask[0].numpy()))
        return self._mirror

    def mirror_fill(self, value: tf.Tensor, source: tf.Tensor, target: tf.Tensor
                    ) -> tf.Tensor:
        """Copy ``value`` from each texel's mirror texel where the texel is in ``target``
        and its mirror in ``source``; elsewhere ``value`` is unchanged.

        Args:
          value: float32 [B, U, U, C].
          source, target: float32 [B, U, U, 1] in {0, 1}.
        """
        index = self.mirror_index()
        shape = tf.shape(value)
        flat = tf.reshape(value, [shape[0], -1, shape[3]])
        safe = tf.maximum(index, 0)
        has = tf.cast(index >= 0, tf.float32)[None, :, None]
        mirrored_source = tf.gather(tf.reshape(source, [shape[0], -1, 1]), safe, axis=1) * has
        take = tf.reshape(target, [shape[0], -1, 1]) * mirrored_source
        out = flat * (1.0 - take) + tf.gather(flat, safe, axis=1) * take
        return tf.reshape(out, shape)

    # ------------------------------------------------------------ inputs
    def prepare(self, coeffs: tf.Tensor, images: tf.Tensor,
                occluded: tf.Tensor | None = None) -> FineInputs:
        """UV inputs of B crops (float32 [B, S, S, 3] in [0, 1]) and their coarse
        coefficients (float32 [B, total]). ``occluded``: optional float32
        [B, S, S, 1] in {0, 1}, occluders found in the crops (a face mask, a
        hand: :func:`recon_tf.preprocess.skin_mask.skin_mask`); their texels count
        as not visible, so the maps take the mirror or coarse fallback there
        (:meth:`predict`, :meth:`fit`)."""
        from recon_tf.render.rasterizer import interpolate, rasterize

        fm, coarse = self.face_model, self.coarse
        params = coarse.split(tf.stop_gradient(coeffs))
        camera = coarse.camera(self.image_size)
        verts, cam_v, normals, screen, _ = coarse.geometry(params, camera)
        albedo = fm.albedo(params["albedo"])
        colors = shade(albedo, normals, params["light"])
        size = self.image_size
        ids, bary, _ = rasterize(camera.clip(cam_v), fm.triangles, size, size)
        depth_v = camera.depth(cam_v)
        front_v = tf.tile(coarse.front_mask[None, :, None], [tf.shape(cam_v)[0], 1, 1])
        pix = interpolate(tf.concat([colors, depth_v[..., None], front_v], -1), fm.triangles,
                          ids, bary)
        covered = tf.cast(ids >= 0, tf.float32)[..., None]
        front = covered * tf.cast(pix[..., 4:5] > 0.5, tf.float32)
        texture, visible = unwrap_image(images, screen, normals, depth_v, pix[..., 3:4],
                                        self.layout)
        rendered_uv, _ = unwrap_image(pix[..., :3] * covered, screen, normals, depth_v,
                                      pix[..., 3:4], self.layout)
        if occluded is not None:
            hidden, _ = unwrap_image(occluded, screen, normals, depth_v, pix[..., 3:4],
                                     self.layout)
            visible = visible * tf.cast(hidden < 0.5, tf.float32)
            texture = texture * visible
        increment = tf.clip_by_value((texture - rendered_uv) * visible, -1.0, 1.0)
        model_normals = fm.vertex_normals(verts)
        maps = attributes_to_uv(tf.concat([albedo, verts, model_normals, normals[..., 2:3],
                                           screen], -1), self.layout)
        normal_map = tf.math.l2_normalize(maps[..., 6:9], axis=-1)
        module_texture = texture
        if self.wavelet_source == "crop":
            module_texture = tf.image.resize(images, [self.uv_size, self.uv_size], "area")
        return FineInputs(texture, visible, increment, tf.clip_by_value(maps[..., :3], 0, 1),
                          maps[..., 3:6], normal_map, self.layout.mask, module_texture, ids,
                          bary, front, params["angles"], params["light"], maps[..., 9:10],
                          maps[..., 10:12])

    # ------------------------------------------------------------ outputs
    def predict(self, inputs: FineInputs, albedo_module=None, displacement_module=None,
                training: bool = False) -> tuple[tf.Tensor, tf.Tensor]:
        """(detailed albedo map, displacement) from the modules; a missing module
        gives the coarse albedo map / D = 0 (the Table 5 ablations).

        Where the input is not visible (occluded, turned away, outside the
        photo) nothing was observed: there the maps take their mirror texel's
        detail when that one was seen (:meth:`mirror_fill`; the albedo as the
        coarse albedo plus the mirror's detail over its coarse albedo), else
        the coarse albedo and D = 0. No background or occluder is baked in.
        """
        hidden = 1.0 - inputs.visible
        albedo = inputs.coarse_albedo
        if albedo_module is not None:
            detail = albedo_module({"coarse_albedo": inputs.coarse_albedo,
                                    "texture": inputs.module_texture}, training=training)
            detail = self.mirror_fill((detail - inputs.coarse_albedo) * inputs.visible,
                                      inputs.visible, hidden)
            albedo = tf.clip_by_value(inputs.coarse_albedo + detail, 0.0, 1.0)
        disp = tf.zeros_like(inputs.visible)
        if displacement_module is not None:
            disp = displacement_module({"increment": inputs.increment,
                                        "texture": inputs.module_texture}, training=training)
            disp = self.mirror_fill(disp * inputs.visible, inputs.visible, hidden)
        return albedo * inputs.uv_mask, disp * inputs.uv_mask

    def render(self, inputs: FineInputs, albedo_map: tf.Tensor, displacement: tf.Tensor
               ) -> FineOutputs:
        """Detail normals from D and the per-pixel detailed render of the crops."""
        _, normals = displace(inputs.position_map, inputs.normal_map, displacement,
                              inputs.uv_mask)
        image = shade_uv_maps(self.face_model, inputs.triangle_ids, inputs.barycentrics,
                              albedo_map, normals, inputs.angles, inputs.light)
        # A camera saturates: over-exposed shading is compared as the photo records it
        # (no gradient there), so detail is not invented to darken it.
        return FineOutputs(albedo_map, displacement, normals, tf.clip_by_value(image, 0.0, 1.0))

    def terms(self, inputs: FineInputs, outputs: FineOutputs, images: tf.Tensor,
              skin_mask: tf.Tensor, id_target: tf.Tensor | None = None) -> dict:
        """Eq. 11–13 per example: dict of float32 [B] (``pho``, ``id``, ``alb``,
        ``smo``, ``total``). L_pho is Eq. 7 on the fine render over skin ∩ front
        face; L_id is Eq. 9 on the fine render composited over the input."""
        w = self.weights
        mask = skin_mask * inputs.front
        pho = losses.photometric_loss(images, outputs.image, mask)
        ident = tf.zeros_like(pho)
        if self.identity_net is not None and id_target is not None:
            comp = inputs.front * outputs.image + (1.0 - inputs.front) * images
            ident = losses.identity_loss(id_target, self.identity_net(comp))
        alb = losses.albedo_loss(outputs.albedo_map, inputs.coarse_albedo, inputs.uv_mask,
                                 w.alb_blur_sigma, w.alb_detail_weight)
        smo = losses.smoothness_loss(outputs.displacement, outputs.detail_normals,
                                     inputs.normal_map, inputs.uv_mask, w.normal_weight,
                                     w.disp_weight)
        total = losses.fine_loss(w, pho, ident, alb, smo)
        return {"pho": pho, "id": ident, "alb": alb, "smo": smo, "total": total}

    def texture_detail(self, inputs: FineInputs, mask: tf.Tensor, limit: float = 0.25
                       ) -> tf.Tensor:
        """The photo's albedo detail over the coarse albedo, for starting a fit.

        Per texel, the albedo that reproduces the unwrapped photo under the
        coarse normals and SH light is texture / irradiance (Eq. 5 solved for
        the albedo). Its difference from the coarse albedo is kept only inside
        ``mask`` (float32 [B, U, U, 1]: visible skin) and only above the
        low-pass of L_alb (Eq. 12: the detail may not change the coarse map's
        low frequencies), clipped to ±``limit``. Returns float32 [B, U, U, 3].
        """
        shape = tf.shape(inputs.normal_map)
        normals = rotate_normals(tf.reshape(inputs.normal_map, [shape[0], -1, 3]), inputs.angles)
        irr = tf.reshape(irradiance(normals, inputs.light), tf.shape(inputs.texture))
        target = inputs.texture / tf.maximum(irr, 0.05)
        raw = (target - inputs.coarse_albedo) * mask
        sigma = self.weights.alb_blur_sigma * self.uv_size / losses.UV_REFERENCE_SIZE
        high = raw - losses.gaussian_lowpass(raw, mask, sigma)
        return tf.clip_by_value(high, -limit, limit) * mask * inputs.uv_mask

    def id_target(self, images: tf.Tensor) -> tf.Tensor | None:
        """Frozen identity features of the inputs (None without an identity net)."""
        if self.identity_net is None:
            return None
        return tf.stop_gradient(self.identity_net(images))

    # ------------------------------------------------------------ per-photo fitting
    def fit(self, inputs: FineInputs, images: tf.Tensor, skin_mask: tf.Tensor,
            steps: int = 100, lr_displacement: float = 2e-5, lr_albedo: float = 2e-4,
            use_albedo: bool = True, use_displacement: bool = True,
            min_facing: float = FIT_MIN_FACING, init_from_texture: bool = True
            ) -> tuple[FineOutputs, dict]:
        """Per-photo fine fitting: optimise D and an albedo detail map directly.

        For when no trained modules are at hand. Starting from D = 0 and the
        coarse albedo plus, with ``init_from_texture``, the high-frequency part
        of the photo's own albedo (:meth:`texture_detail`, skin texels only),
        gradient descent with momentum (on each map's gradient
        divided by its RMS, so weakly constrained texels move little, unlike
        per-texel Adam) minimises Eq. 11 over a displacement map and an
        additive albedo detail. Both are multiplied by a fit mask: texels where
        the unwrapped input is visible and the surface faces the camera
        (n_z ≥ ``min_facing``; at grazing angles many texels share a pixel and
        the detail is not observed). After the fit, texels the camera does not
        see at all take their mirror texel's detail and D where that one was
        fitted (:meth:`mirror_fill`), else keep the coarse albedo and D = 0;
        texels seen at grazing angles keep the coarse maps (the render is
        unchanged by the fill). A step whose Eq. 11 total is NaN or Inf for
        any face ends the fit with the maps of the step before.

        Returns:
          (the fitted :class:`FineOutputs`, final Eq. 11 terms as numpy [B]).
        """
        batch = int(images.shape[0])
        shape = [batch, self.uv_size, self.uv_size]
        fit_mask = inputs.visible * tf.cast(inputs.facing >= min_facing, tf.float32)
        disp = tf.Variable(tf.zeros(shape + [1]))
        start = tf.zeros(shape + [3])
        if init_from_texture and use_albedo and inputs.texel_pixels is not None:
            skin_uv = bilinear_sample(skin_mask, inputs.texel_pixels)
            start = self.texture_detail(inputs, fit_mask * tf.cast(skin_uv > 0.5, tf.float32))
        detail = tf.Variable(start)
        groups = ([(disp, tf.keras.optimizers.SGD(lr_displacement, momentum=0.9))]
                  if use_displacement else []) + (
            [(detail, tf.keras.optimizers.SGD(lr_albedo, momentum=0.9))] if use_albedo else [])
        variables = [v for v, _ in groups]
        id_target = self.id_target(images)

        def outputs() -> FineOutputs:
            albedo = tf.clip_by_value(inputs.coarse_albedo + detail * fit_mask, 0.0, 1.0)
            return self.render(inputs, albedo * inputs.uv_mask, disp * fit_mask)

        @tf.function
        def step():
            with tf.GradientTape() as tape:
                terms = self.terms(inputs, outputs(), images, skin_mask, id_target)
                total = tf.reduce_sum(terms["total"])
            grads = tape.gradient(total, variables)
            for grad, (var, optimizer) in zip(grads, groups):
                rms = tf.sqrt(tf.reduce_mean(tf.square(grad), axis=[1, 2, 3], keepdims=True))
                optimizer.apply_gradients([(grad / (rms + 1e-12), var)])
            return terms

        for _ in range(steps if variables else 0):
            last = [v.read_value() for v in variables]
            total = step()["total"]
            if not np.all(np.isfinite(total.numpy())):  # keep the last good maps
                for var, value in zip(variables, last):
                    var.assign(value)
                break
        filled = self.mirror_fill(tf.concat([disp * fit_mask, detail * fit_mask, fit_mask], -1),
                                  fit_mask, 1.0 - inputs.visible)
        disp.assign(filled[..., :1])
        detail.assign(filled[..., 1:4])
        fit_mask = filled[..., 4:]  # the fitted texels and those filled from their mirror
        final = outputs()
        terms = self.terms(inputs, final, images, skin_mask, id_target)
        return final, {k: v.numpy() for k, v in terms.items()}


def displacement_error_mm(predicted: np.ndarray, truth: np.ndarray, mask: np.ndarray
                          ) -> tuple[float, float]:
    """(mean absolute error in mm, Pearson correlation) of displacement maps over ``mask``.

    Args:
      predicted, truth: float [..., U, U, 1] or [..., U, U] in decimetres.
      mask: float or bool, broadcastable: texels to score.
    """
    m = np.broadcast_to(np.asarray(mask, bool), np.shape(truth))
    p = np.asarray(predicted, np.float64)[m] * 100.0
    t = np.asarray(truth, np.float64)[m] * 100.0
    corr = float(np.corrcoef(p, t)[0, 1]) if p.std() > 0 and t.std() > 0 else 0.0
    return float(np.abs(p - t).mean()), corr


# ---------------------------------------------------------------- modules on disk
def module_config(uv_size: int, use_wavelet: bool, use_albedo: bool, use_displacement: bool,
                  include_ll: bool, wavelet_source: str, base_filters: int, depth: int) -> dict:
    """What a fine checkpoint holds (``run_meta.json["fine"]``)."""
    return {"uv_size": int(uv_size), "use_wavelet": bool(use_wavelet),
            "use_albedo": bool(use_albedo), "use_displacement": bool(use_displacement),
            "include_ll": bool(include_ll), "wavelet_source": wavelet_source,
            "base_filters": int(base_filters), "depth": int(depth)}


def build_modules(config: dict) -> tuple:
    """(albedo module or None, displacement module or None) for a :func:`module_config`."""
    from recon_tf.nets.albedo_module import build_albedo_module
    from recon_tf.nets.displacement_module import build_displacement_module

    common = {"uv_size": config["uv_size"], "include_ll": config["include_ll"],
              "use_wavelet": config["use_wavelet"], "base_filters": config["base_filters"],
              "depth": config["depth"]}
    albedo = build_albedo_module(**common) if config["use_albedo"] else None
    disp = build_displacement_module(**common) if config["use_displacement"] else None
    return albedo, disp


def module_checkpoint(albedo_module, displacement_module, **extra) -> tf.train.Checkpoint:
    """The checkpoint layout of fine runs (absent modules are left out)."""
    objects = {k: v for k, v in (("albedo_module", albedo_module),
                                 ("displacement_module", displacement_module)) if v is not None}
    return tf.train.Checkpoint(**objects, **extra)


def load_fine_modules(path: str, face_model: FaceModel, uv_size: int) -> tuple:
    """Trained fine modules from a ``train_fine.py`` run directory or checkpoint prefix.

    Returns:
      (albedo module or None, displacement module or None, module config).
    Raises:
      FileNotFoundError: no ``run_meta.json`` or checkpoint.
      recon_tf.training.CheckpointMismatchError: another face model or UV size.
    """
    import os

    from recon_tf.training import check_meta, read_meta

    run_dir = path if os.path.isdir(path) else os.path.dirname(path)
    meta = read_meta(run_dir)
    if meta is None or meta.get("stage") != "fine":
        raise FileNotFoundError(f"{path}: not a fine-stage run (no run_meta.json with "
                                "stage 'fine'); train one with experiments/train_fine.py")
    check_meta(meta, {"face_model": face_model.name, "geometry_hash": face_model.geometry_hash},
               path)
    if meta["fine"]["uv_size"] != uv_size:
        raise ValueError(f"{path} predicts {meta['fine']['uv_size']}² UV maps; pass "
                         f"--fine_uv_size={meta['fine']['uv_size']}")
    prefix = tf.train.latest_checkpoint(path) if os.path.isdir(path) else path
    if prefix is None:
        raise FileNotFoundError(f"{path}: no checkpoint found")
    albedo, disp = build_modules(meta["fine"])
    module_checkpoint(albedo, disp).restore(prefix).expect_partial()
    return albedo, disp, meta["fine"]


class FineServing(tf.Module):
    """The fine SavedModel: aligned crops → coarse coefficients and detail maps.

    Signature ``serving_default``: ``images`` float32 [B, S, S, 3] in [0, 1] →
    ``coeffs`` [B, total], ``albedo_map`` [B, U, U, 3] in [0, 1],
    ``displacement_mm`` [B, U, U, 1] (mm along the coarse normals, + outward),
    ``normal_map`` [B, U, U, 3] (unit detail normals, face-model frame).
    """

    def __init__(self, coarse_model, stage: FineStage, albedo_module, displacement_module):
        super().__init__()
        self.coarse_model = coarse_model
        self.albedo_module = albedo_module
        self.displacement_module = displacement_module
        self._stage = stage
        size = stage.image_size
        self.serve = tf.function(self._serve, input_signature=[
            tf.TensorSpec([None, size, size, 3], tf.float32, name="images")])

    def _serve(self, images: tf.Tensor) -> dict:
        coeffs = self.coarse_model(images, training=False)
        inputs = self._stage.prepare(coeffs, images)
        albedo, disp = self._stage.predict(inputs, self.albedo_module, self.displacement_module)
        out = self._stage.render(inputs, albedo, disp)
        return {"coeffs": coeffs, "albedo_map": out.albedo_map,
                "displacement_mm": out.displacement * 100.0, "normal_map": out.detail_normals}


def load_fine_saved_model(path: str):
    """Load a fine SavedModel (``train_fine.py``'s ``saved_model/``).

    Its graph renders with the rasterizer op, so the op library is loaded
    (registered) first; a plain ``tf.saved_model.load`` in a fresh process
    fails with "Op type not registered 'ReconTfRasterize'".
    """
    from recon_tf.render.rasterizer import op_library_path

    op_library_path()
    return tf.saved_model.load(path)
