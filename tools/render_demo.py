"""Pose, render and export a face from flags (a small demo; the main job is tools/reconstruct.py).

At this stage of the project the job loads the default face model (ICT-FaceKit
face region, from the assets), sets identity / expression / albedo / pose / SH
light coefficients, renders the face with the rasterizer op, and writes:

* ``face.obj`` + ``face.mtl`` + ``face_albedo.png`` (albedo map in UV),
* ``face.ply`` (vertex colours = shaded colours),
* ``render.png`` (shaded render composited on grey) and ``landmarks.png``
  (the render with the 68 projected landmarks),
* ``coeffs.npy`` (the [1, 222] coefficient vector used).

Photo-to-face reconstruction (the coarse and fine networks) grows from here.

Example::

    python tools/reconstruct.py --output_dir=outputs/demo --yaw=0.4 \
        --expression=jawOpen=0.6,mouthSmile_L=0.5 --identity_seed=3
"""

from __future__ import annotations

import os
import time

import numpy as np
from absl import app, flags, logging

FLAGS = flags.FLAGS
flags.DEFINE_string("output_dir", "outputs/demo", "Where to write meshes, maps and renders.")
flags.DEFINE_string("face_model", None,
                    "recon_tf face-model .npz (see bfm/); default: ICT-FaceKit from the assets.")
flags.DEFINE_string("assets_dir", None,
                    "Assets root (default: $RECON_TF_ASSETS or ../shared/assets).")
flags.DEFINE_integer("image_size", 224, "Render size in pixels (square).")
flags.DEFINE_integer("uv_size", 256, "Albedo map size in texels.")
flags.DEFINE_enum("camera", "perspective", ["perspective", "orthographic"],
                  "Projection Π of Eq. 4.")
flags.DEFINE_float("pitch", 0.0, "Rotation about x, radians.")
flags.DEFINE_float("yaw", 0.3, "Rotation about y, radians.")
flags.DEFINE_float("roll", 0.0, "Rotation about z, radians.")
flags.DEFINE_integer("identity_seed", 0, "Seed for random identity α and albedo δ ~ N(0, 1)·scale.")
flags.DEFINE_float("identity_scale", 1.0, "Scale of the random identity coefficients.")
flags.DEFINE_float("albedo_scale", 1.0, "Scale of the random albedo coefficients.")
flags.DEFINE_string("expression", "jawOpen=0.3",
                    "Comma-separated name=weight (ICT blendshape names) or index=weight.")
flags.DEFINE_list("light", ["0", "0.3", "0.4"],
                  "SH band-1 light direction terms (y, z, x) added to every channel.")


def _expression_vector(face_model, spec: str) -> np.ndarray:
    names = [str(n) for n in face_model.arrays.get("exp_names", [])]
    beta = np.zeros(face_model.layout.exp_dim, np.float32)
    for item in filter(None, (s.strip() for s in spec.split(","))):
        key, _, value = item.partition("=")
        if key.isdigit():
            idx = int(key)
        elif key in names:
            idx = names.index(key)
        else:
            known = names[:face_model.layout.exp_dim]
            raise app.UsageError(f"unknown expression {key!r}; known: {known}")
        if idx >= len(beta):
            raise app.UsageError(f"expression {key!r} is mode {idx}, beyond the layout's "
                                 f"{len(beta)} expression coefficients")
        beta[idx] = float(value)
    return beta


def build_coeffs(face_model) -> np.ndarray:
    """The [1, total] coefficient vector described by the flags."""
    layout = face_model.layout
    rng = np.random.default_rng(FLAGS.identity_seed)
    light = np.zeros((3, 9), np.float32)
    light[:, 1:4] = [float(v) for v in FLAGS.light]
    parts = [rng.normal(size=layout.id_dim) * FLAGS.identity_scale,
             _expression_vector(face_model, FLAGS.expression),
             rng.normal(size=layout.tex_dim) * FLAGS.albedo_scale,
             [FLAGS.pitch, FLAGS.yaw, FLAGS.roll], [0.0, 0.0, 0.0], light.reshape(-1)]
    return np.concatenate([np.asarray(p, np.float32) for p in parts])[None]


def main(argv: list[str]) -> None:
    del argv
    import cv2
    import tensorflow as tf

    from bfm import load_default_face_model
    from recon_tf import assets
    from recon_tf.camera import Camera
    from recon_tf.export import save_png, write_obj, write_ply
    from recon_tf.face_model import load_face_model
    from recon_tf.render.renderer import composite, render_face
    from recon_tf.render.uv import attributes_to_uv, rasterize_uv_layout

    if FLAGS.assets_dir:
        assets.set_assets_dir(FLAGS.assets_dir)
    start = time.time()
    face_model = (load_face_model(FLAGS.face_model) if FLAGS.face_model
                  else load_default_face_model())
    logging.info("face model %s: %d vertices, layout %s", face_model.name,
                 face_model.num_vertices, face_model.layout)
    coeffs = tf.constant(build_coeffs(face_model))
    camera = Camera.deep3d(FLAGS.image_size, kind=FLAGS.camera)
    rendering = render_face(face_model, coeffs, camera)
    layout = rasterize_uv_layout(face_model, FLAGS.uv_size)
    albedo_map = attributes_to_uv(rendering.albedo, layout)[0].numpy()

    out = FLAGS.output_dir
    os.makedirs(out, exist_ok=True)
    verts, _ = face_model.compute(coeffs)
    write_obj(os.path.join(out, "face.obj"), verts[0].numpy(), face_model.arrays["triangles"],
              uv=face_model.arrays["uv"], face_uv=face_model.arrays["tri_uv"],
              texture=np.clip(albedo_map, 0, 1))
    write_ply(os.path.join(out, "face.ply"), verts[0].numpy(), face_model.arrays["triangles"],
              colors=np.clip(rendering.colors[0].numpy(), 0, 1))
    image = composite(rendering, tf.fill(tf.shape(rendering.image), 0.5))[0].numpy()
    save_png(os.path.join(out, "render.png"), np.clip(image, 0, 1))
    canvas = np.ascontiguousarray((np.clip(image, 0, 1) * 255).astype(np.uint8))
    for x, y in rendering.landmarks[0].numpy():
        cv2.circle(canvas, (int(x), int(y)), 2, (255, 0, 0), -1)
    save_png(os.path.join(out, "landmarks.png"), canvas)
    np.save(os.path.join(out, "coeffs.npy"), coeffs.numpy())
    coverage = float(tf.reduce_mean(rendering.mask))
    logging.info("wrote %s (face covers %.1f%% of the image) in %.1f s", out, 100 * coverage,
                 time.time() - start)
    print(f"wrote {out}: face.obj face.mtl face_albedo.png face.ply render.png landmarks.png")


if __name__ == "__main__":
    app.run(main)
