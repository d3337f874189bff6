"""The main job's fine stage (§3.4): detail maps for fitted photo faces, and their files.

:func:`fine_details` adds detail to B coarse faces fitted by
:class:`recon_tf.reconstruction.PhotoReconstructor`: from trained modules
(``experiments/train_fine.py``) when :class:`FineSettings` holds them, else by
per-photo fine fitting (:meth:`recon_tf.fine.FineStage.fit`). A face whose fine
stage fails keeps the coarse albedo and D = 0. :func:`write_fine` writes one
face's fine files (:data:`FINE_OUTPUT_FILES`): ``mesh_fine.obj`` (+ ``.mtl``,
``albedo.png``), ``displacement.npy`` (float32 mm), ``displacement.png`` +
``maps.json`` (16-bit, offset/scale), ``normals.png`` ((n + 1)/2, face-model
frame) and ``render_fine.png``.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import tensorflow as tf
from absl import logging

from recon_tf.denoise import denoise_for_fit
from recon_tf.reconstruction import DM_TO_MM, PhotoReconstructor, PreparedFace, paste

FINE_OUTPUT_FILES = ("mesh_fine.obj", "mesh_fine.mtl", "albedo.png", "displacement.npy",
                     "displacement.png", "maps.json", "normals.png", "render_fine.png")


@dataclasses.dataclass
class FineSettings:
    """How the main job adds detail (§3.4) to each coarse face.

    Attributes:
      stage: a :class:`recon_tf.fine.FineStage` (its ``image_size`` must be the
        crops').
      albedo_module, displacement_module: trained modules
        (``experiments/train_fine.py``), or None to fit the detail per photo
        (:meth:`recon_tf.fine.FineStage.fit`, ``steps`` momentum steps on RMS-normalised
        gradients).
      steps: per-photo fine-fitting steps.
      subdivisions: midpoint subdivisions of ``mesh_fine.obj`` before the
        displacement is baked in (each ×4 triangles).
      denoise: per-photo fine fitting reads each crop through
        :func:`recon_tf.denoise.denoise_for_fit` (a Wiener filter at the crop's
        own noise level); trained modules read the crop as it is.
    """

    stage: object
    albedo_module: object = None
    displacement_module: object = None
    steps: int = 100
    subdivisions: int = 2
    denoise: bool = True


def fine_details(recon: PhotoReconstructor, faces: list[PreparedFace], coeffs: np.ndarray):
    """Detail maps for B fitted faces: from the trained modules when given, else
    per-photo fine fitting. Returns (:class:`recon_tf.fine.FineOutputs` as
    tensors, dict of Eq. 11 terms as numpy [B]).

    A face whose fine stage fails (an error, or NaN/Inf in its maps) keeps the
    coarse albedo and D = 0, so its fine files are still written and the run goes
    on; ``terms["fell_back"]`` is 1 for such a face (0 otherwise) and a warning
    names the cause. With ``FineSettings.denoise`` (fitting only) the fit reads
    the Wiener-filtered crops and ``terms["noise_sigma"]`` holds each crop's
    measured noise (0–255 units).
    """
    fine = recon.fine
    images = tf.constant(np.stack([f.crop for f in faces]).astype(np.float32) / 255.0)
    mask = tf.constant(np.stack([f.fine_mask for f in faces]).astype(np.float32)[..., None]
                       / 255.0)
    occluded = [getattr(f, "occluded", None) for f in faces]
    occluded = None if not any(o is not None and o.any() for o in occluded) else tf.constant(
        np.stack([o if o is not None else np.zeros(f.fine_mask.shape, np.uint8)
                  for o, f in zip(occluded, faces)]).astype(np.float32)[..., None] / 255.0)
    fitting = fine.albedo_module is None and fine.displacement_module is None
    seen, noise = images, None
    if fitting and fine.denoise:
        seen, noise = denoise_for_fit(images, mask)
    inputs = fine.stage.prepare(tf.constant(np.asarray(coeffs, np.float32)), seen, occluded)
    id_target, terms = fine.stage.id_target(images), None
    try:
        if fitting:
            outputs, terms = fine.stage.fit(inputs, seen, mask, fine.steps)
        else:
            albedo, disp = fine.stage.predict(inputs, fine.albedo_module,
                                              fine.displacement_module)
            outputs = fine.stage.render(inputs, albedo, disp)
        failed = ~np.stack([np.isfinite(np.reshape(t.numpy(), [len(faces), -1])).all(1)
                            for t in outputs]).all(0)
        cause = "NaN or Inf in the fine maps"
    except (tf.errors.OpError, ValueError, FloatingPointError) as err:
        outputs, failed, cause = None, np.ones(len(faces), bool), f"{type(err).__name__}: {err}"
    if failed.any():
        logging.warning("fine stage fell back to the coarse maps for %d of %d faces (%s)",
                        int(failed.sum()), len(faces), cause.splitlines()[0][:300])
        plain = fine.stage.render(inputs, inputs.coarse_albedo * inputs.uv_mask,
                                  tf.zeros_like(inputs.visible))
        keep = tf.constant(failed)
        outputs = plain if outputs is None else type(plain)(*[
            tf.where(tf.reshape(keep, [-1] + [1] * (len(p.shape) - 1)), p, o)
            for p, o in zip(plain, outputs)])
    if terms is None or failed.any():  # the fit's own final terms otherwise
        terms = {k: v.numpy() for k, v in
                 fine.stage.terms(inputs, outputs, images, mask, id_target).items()}
    terms["fell_back"] = failed.astype(np.float32)
    if noise is not None:
        terms["noise_sigma"] = noise.numpy() * 255.0
    return outputs, terms


def write_fine(recon: PhotoReconstructor, face: PreparedFace, coeffs: np.ndarray,
               outputs, index: int, out_dir: str) -> dict:
    """Write one face's fine outputs (:data:`FINE_OUTPUT_FILES`) into ``out_dir``."""
    import json

    import cv2

    from recon_tf.export import save_png, write_obj
    from recon_tf.mesh import bake_displacement, encode_displacement_png, encode_normal_map_png
    from recon_tf.render.detail import shade_uv_maps
    from recon_tf.render.rasterizer import interpolate, rasterize

    fm, fitter = recon.face_model, recon.fitter
    uv_mask = recon.fine.stage.layout.mask[0, ..., 0].numpy()
    albedo_map = np.clip(outputs.albedo_map[index].numpy(), 0.0, 1.0)
    disp_mm = outputs.displacement[index, ..., 0].numpy() * DM_TO_MM
    normals = outputs.detail_normals[index].numpy()
    c = fm.layout.split(tf.constant(coeffs[None], tf.float32))
    verts = fm.shape(c.identity, c.expression)[0].numpy() * DM_TO_MM
    tris, uv, tri_uv = (fm.arrays[k] for k in ("triangles", "uv", "tri_uv"))
    mesh = bake_displacement(verts, tris, uv, tri_uv, disp_mm, recon.fine.subdivisions,
                             valid_map=uv_mask)
    write_obj(os.path.join(out_dir, "mesh_fine.obj"), mesh[0], mesh[1], uv=mesh[2],
              face_uv=mesh[3], texture=albedo_map, texture_name="albedo.png")
    np.save(os.path.join(out_dir, "displacement.npy"), disp_mm.astype(np.float32))
    disp_meta = encode_displacement_png(disp_mm, os.path.join(out_dir, "displacement.png"))
    encode_normal_map_png(normals, os.path.join(out_dir, "normals.png"), mask=uv_mask > 0.5)
    with open(os.path.join(out_dir, "maps.json"), "w") as f:
        json.dump({"uv_size": int(uv_mask.shape[0]), "displacement": disp_meta,
                   "normals": "(n + 1) / 2 per channel (R = x, G = y, B = z), face-model "
                              "frame, outside the UV layout +z",
                   "uv_convention": "row 0 is v = 1 (OBJ texture orientation)"}, f, indent=2)
    camera = recon.photo_camera(face)
    params = fitter.split(np.asarray(coeffs, np.float32)[None])
    _, cam_v, _, screen, _ = fitter.geometry(params, camera)
    window, x0, y0 = recon.face_window(camera, screen[0].numpy())
    h, w = window.image_size
    ids, bary, _ = rasterize(window.clip(cam_v), fm.triangles, h, w)
    front = interpolate(fitter.front_mask[None, :, None], fm.triangles, ids, bary)
    covered = ((ids[0] >= 0).numpy() & (front[0, ..., 0].numpy() > 0.5))
    image = shade_uv_maps(fm, ids, bary, outputs.albedo_map[index:index + 1],
                          outputs.detail_normals[index:index + 1], params["angles"],
                          params["light"])[0].numpy()
    comp, _ = paste(face.pixels, image, covered, x0, y0)
    ow, oh = face.original_size
    if comp.shape[:2] != (oh, ow):
        comp = cv2.resize(comp, (ow, oh), interpolation=cv2.INTER_LINEAR)
    save_png(os.path.join(out_dir, "render_fine.png"), comp)
    return {"displacement_mm": {"min": float(disp_mm.min()), "max": float(disp_mm.max())}}
