"""Benchmark of the rasterizer op against the pure-TF reference.

Meshes (both placed 60 cm in front of a perspective camera, scaled so their
width spans 95% of the image like a face crop, one random small head pose per
batch image):

* ``ict``: the ICT-FaceKit face region (9,409 vertices, 18,460 triangles) from
  ``$RECON_TF_ASSETS/face_models/ict_facekit/ict_face_region_9409.npz``
  (``--assets_dir``, default ``../shared/assets``); skipped with a note when
  the file is missing.
* ``synthetic``: a face-sized ellipsoid cap on an N x N vertex grid (default
  N = 188: 35,344 vertices, 69,938 triangles, like BFM's 70k-triangle face).

Modes, timed with ``tf.function`` after warm-up, reported in ms per image:

* ``fwd``: ``rasterize`` only.
* ``fwd+bwd``: ``rasterize``, loss = sum(barycentrics * R1) + sum(z_ndc * R2)
  with fixed random R1, R2, and its gradient w.r.t. the clip vertices: the
  rasterizer's own forward and backward kernels.
* ``fwd+bwd+interp``: like ``fwd+bwd`` but the loss is over
  ``interpolate(vertex colours)``, gradients w.r.t. clip vertices and colours
  (adds the TF gather / scatter cost of attribute interpolation).

The reference (``recon_tf.render.reference``) runs the same modes in the same
process with ``--reference_batch`` images (default: the full batch); the
speedup is reference ms/image divided by op ms/image. The last line is
``RESULT ms_per_image_fwd_bwd_70k=<op fwd+bwd, synthetic mesh>
speedup_vs_reference=<reference / op, same mesh and mode>``.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np
import tensorflow as tf
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from recon_tf.render.rasterizer import interpolate, rasterize  # noqa: E402
from recon_tf.render.reference import rasterize_reference  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("batch", 8, "Images per rasterize call.")
flags.DEFINE_integer("height", 224, "Image height in pixels.")
flags.DEFINE_integer("width", 224, "Image width in pixels.")
flags.DEFINE_integer("iters", 20, "Timed iterations per measurement (median is reported).")
flags.DEFINE_integer("warmup", 3, "Untimed iterations before timing (tracing, caches).")
flags.DEFINE_integer("grid", 188, "Synthetic mesh grid side N: 2 (N-1)^2 triangles.")
flags.DEFINE_integer("reference_batch", 0,
                     "Images per reference call (0 = same as --batch); reported per image.")
flags.DEFINE_integer("reference_iters", 5, "Timed iterations for the reference.")
flags.DEFINE_bool("reference", True, "Also time the pure-TF reference rasterizer.")
flags.DEFINE_string("assets_dir", os.environ.get("RECON_TF_ASSETS", "../shared/assets"),
                    "Assets root holding face_models/ict_facekit/ict_face_region_9409.npz.")
flags.DEFINE_integer("seed", 0, "Random seed for poses and loss weights.")


def ellipsoid_cap(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Face-sized ellipsoid cap on an n x n grid: (vertices [n*n,3] cm, triangles [T,3])."""
    u, v = np.meshgrid(np.linspace(-1.0, 1.0, n), np.linspace(-1.0, 1.0, n))
    r2 = np.minimum(0.55 * (u**2 + v**2), 0.99)
    verts = np.stack([8.0 * u, 10.0 * v, 9.0 * np.sqrt(1.0 - r2)], -1).reshape(-1, 3)
    i = np.arange(n - 1)
    a = (i[:, None] * n + i[None, :]).reshape(-1)
    quads = np.stack([a, a + 1, a + n, a + n + 1], -1)
    tris = np.concatenate([quads[:, [0, 2, 1]], quads[:, [1, 2, 3]]], 0)
    return verts.astype(np.float32), tris.astype(np.int32)


def perspective_clip(verts: np.ndarray, batch: int, aspect: float, rng: np.random.Generator,
                     fill: float = 0.95) -> np.ndarray:
    """Poses ``verts`` [V,3] (cm, +z towards the camera) in front of an OpenGL camera.

    Returns float32 clip coordinates [batch, V, 4]; the mesh width spans ``fill`` of
    the image width; each image gets a random yaw and pitch in [-12, 12] degrees.
    """
    centred = verts - 0.5 * (verts.min(0) + verts.max(0))
    distance, near, far = 60.0, 10.0, 200.0
    # Fit the width (like a face crop: a tall head or neck may leave the frame).
    half_width = np.abs(centred[:, 0]).max()
    focal = fill * aspect * (distance - centred[:, 2].max()) / half_width
    out = []
    for _ in range(batch):
        yaw, pitch = np.deg2rad(rng.uniform(-12.0, 12.0, 2))
        ry = np.array([[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0], [-np.sin(yaw), 0, np.cos(yaw)]])
        rx = np.array([[1, 0, 0], [0, np.cos(pitch), -np.sin(pitch)],
                       [0, np.sin(pitch), np.cos(pitch)]])
        eye = centred @ (rx @ ry).T - np.array([0.0, 0.0, distance])
        x_e, y_e, z_e = eye[:, 0], eye[:, 1], eye[:, 2]
        clip = np.stack([focal / aspect * x_e, focal * y_e,
                         (far + near) / (near - far) * z_e + 2 * far * near / (near - far), -z_e],
                        -1)
        out.append(clip)
    return np.stack(out).astype(np.float32)


def make_steps(raster_fn, tris: tf.Tensor, height: int, width: int, weights: dict):
    """tf.functions for the three modes of ``raster_fn`` (op or reference)."""

    @tf.function
    def fwd(clip):
        return raster_fn(clip, tris, height, width)

    @tf.function
    def fwd_bwd(clip):
        with tf.GradientTape() as tape:
            tape.watch(clip)
            _, bary, z_ndc = raster_fn(clip, tris, height, width)
            n = tf.shape(clip)[0]
            loss = (tf.reduce_sum(bary * weights["bary"][:n])
                    + tf.reduce_sum(z_ndc * weights["z_ndc"][:n]))
        return tape.gradient(loss, clip)

    @tf.function
    def fwd_bwd_interp(clip, colors):
        with tf.GradientTape() as tape:
            tape.watch([clip, colors])
            ids, bary, _ = raster_fn(clip, tris, height, width)
            image = interpolate(colors, tris, ids, bary)
            n = tf.shape(clip)[0]
            loss = tf.reduce_sum(image * weights["image"][:n])
        return tape.gradient(loss, [clip, colors])

    return {"fwd": fwd, "fwd+bwd": fwd_bwd, "fwd+bwd+interp": fwd_bwd_interp}


def time_ms(fn, args, warmup: int, iters: int) -> float:
    """Median wall time of ``fn(*args)`` in ms (results forced to host)."""
    for _ in range(warmup):
        tf.nest.map_structure(lambda t: t.numpy(), fn(*args))
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        tf.nest.map_structure(lambda t: t.numpy(), fn(*args))
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def load_meshes(assets_dir: str, grid: int) -> dict:
    meshes = {}
    path = os.path.join(assets_dir, "face_models", "ict_facekit", "ict_face_region_9409.npz")
    if os.path.exists(path):
        data = np.load(path)
        meshes["ict"] = (data["mean"].astype(np.float32), data["tris"].astype(np.int32))
    else:
        print(f"note: {path} not found, skipping the ICT mesh")
    meshes["synthetic"] = ellipsoid_cap(grid)
    return meshes


def main(argv: list[str]) -> None:
    del argv
    rng = np.random.default_rng(FLAGS.seed)
    batch, height, width = FLAGS.batch, FLAGS.height, FLAGS.width
    ref_batch = FLAGS.reference_batch or batch
    print(f"TensorFlow {tf.__version__}, intra-op threads "
          f"{tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count()}, "
          f"GPU: {bool(tf.config.list_physical_devices('GPU'))}")
    print(f"batch {batch} (reference {ref_batch}), {height}x{width}, median of {FLAGS.iters} "
          f"(reference {FLAGS.reference_iters}) iterations, ms per image")
    n_max = max(batch, ref_batch)
    weights = {
        "bary": tf.constant(rng.normal(size=(n_max, height, width, 3)), tf.float32),
        "z_ndc": tf.constant(rng.normal(size=(n_max, height, width)), tf.float32),
        "image": tf.constant(rng.normal(size=(n_max, height, width, 3)), tf.float32),
    }
    rows = []
    result = {}
    for name, (verts, tris_np) in load_meshes(FLAGS.assets_dir, FLAGS.grid).items():
        clip = tf.constant(perspective_clip(verts, n_max, width / height, rng))
        colors = tf.constant(rng.uniform(size=(n_max, verts.shape[0], 3)), tf.float32)
        tris = tf.constant(tris_np)
        ids = rasterize(clip[:1], tris, height, width)[0]
        coverage = float(tf.reduce_mean(tf.cast(ids >= 0, tf.float32)))
        op_steps = make_steps(rasterize, tris, height, width, weights)
        ref_steps = make_steps(rasterize_reference, tris, height, width, weights)
        for mode, step in op_steps.items():
            args = (clip[:batch],) if mode != "fwd+bwd+interp" else (clip[:batch],
                                                                     colors[:batch])
            op_ms = time_ms(step, args, FLAGS.warmup, FLAGS.iters) / batch
            ref_ms = float("nan")
            if FLAGS.reference:
                ref_args = tuple(a[:ref_batch] for a in args)
                ref_ms = time_ms(ref_steps[mode], ref_args, 1,
                                 FLAGS.reference_iters) / ref_batch
            rows.append((name, tris_np.shape[0], f"{coverage:.0%}", mode, op_ms, ref_ms))
            result[(name, mode)] = (op_ms, ref_ms)

    header = (f"{'mesh':<10} {'triangles':>9} {'covered':>7} {'mode':<15} {'op ms/img':>10} "
              f"{'ref ms/img':>11} {'speedup':>8}")
    print(header)
    print("-" * len(header))
    for name, n_tris, cov, mode, op_ms, ref_ms in rows:
        print(f"{name:<10} {n_tris:>9} {cov:>7} {mode:<15} {op_ms:>10.3f} {ref_ms:>11.2f} "
              f"{ref_ms / op_ms:>7.1f}x")
    op_ms, ref_ms = result[("synthetic", "fwd+bwd")]
    print(f"RESULT ms_per_image_fwd_bwd_70k={op_ms:.3f} speedup_vs_reference={ref_ms / op_ms:.1f}")


if __name__ == "__main__":
    app.run(main)
