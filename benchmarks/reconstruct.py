"""Main-job speed per image: the learned path (ms) and per-photo fitting (s), on CPU.

    python benchmarks/reconstruct.py                              # 2 fitted photos, defaults
    python benchmarks/reconstruct.py --fit_photos=1 --photo_steps=40,15 --fine_steps=25

One process, the main job's configuration: the flags of ``tools/reconstruct.py``
apply (crop size, camera, fitting schedule, ``--fine_steps``, ``--fine_uv_size``,
identity net, ...), and its :func:`build_reconstructor` builds everything.

* **preprocess** (detection excluded from the learned path, timed apart):
  :meth:`recon_tf.reconstruction.PhotoReconstructor.prepare` on one shared photo
  (decode, MTCNN, PFLD 68, FaceMesh 468, alignment, skin mask).
* **learned path**, batch 1, that photo's aligned crop in:

  - *coarse*: R-Net (``--backbone``, default ``small``) forward, coefficients →
    posed mesh (vertices in mm, normals, 68 landmarks) → shaded render of the
    crop (Eq. 5, rasterizer op);
  - *coarse + fine*: the same, plus :meth:`recon_tf.fine.FineStage.prepare`
    (coarse render, UV unwrapping, increment image, coarse maps), the albedo and
    displacement modules (``--module_filters`` / ``--module_depth``, the
    defaults of ``experiments/train_fine.py``), detail normals, the detail
    render and the maps (albedo, displacement in mm, normals).

  Each is one ``tf.function``, timed after a warm-up call (tracing excluded),
  median of ``--steps``. **The weights are untrained** (R-Net's zero head gives
  the mean face facing the camera; the modules keep their random
  initialisation): the work done per image, and so the time, does not depend
  on the weights' values, and no trained weights can ship here.
* **fitting**: ``_time_photos`` of ``benchmarks/fitting.py`` (per stage, one photo at a
  time) on ``--fit_photos`` shared photos after one warm-up photo (tracing
  excluded): the default schedule of ``tools/reconstruct.py`` (coarse fit) and
  the per-photo fine fitting (``--fine_steps``), preparation and writing
  reported apart. Shorter schedules: ``--pose_steps``, ``--landmark_steps``,
  ``--photo_steps``, ``--fine_steps``; ``--fit_photos=0`` skips fitting.

Last line: ``RESULT learned_ms=<x> fit_s=<y>``: x = learned coarse + fine ms per
image, y = fitting s per photo (coarse fit + fine fit; ``nan`` when skipped).
``--photos`` (of ``benchmarks/fitting.py``, imported for its timer) is unused.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable

import numpy as np
from absl import app, flags

HERE = os.path.dirname(os.path.abspath(__file__))
TOOLS = os.path.join(HERE, "..", "tools")
# tools/ first: `reconstruct` must be tools/reconstruct.py, not this file.
sys.path[:0] = [TOOLS, HERE]

import fitting  # noqa: E402  (benchmarks/fitting.py: the per-stage photo timer)
import reconstruct  # noqa: E402  (tools/reconstruct.py: the main job's flags and builders)

FLAGS = flags.FLAGS
flags.DEFINE_string("backbone", "small", "R-Net backbone of the learned path.")
flags.DEFINE_integer("module_filters", 16, "Fine modules: channels of the first level "
                     "(experiments/train_fine.py --base_filters).")
flags.DEFINE_integer("module_depth", 4, "Fine modules: encoder levels "
                     "(experiments/train_fine.py --depth).")
flags.DEFINE_integer("steps", 10, "Timed repetitions of preprocessing and of each learned "
                     "path (after one warm-up call).")
flags.DEFINE_integer("fit_photos", 2, "Shared photos fitted and timed (after one warm-up "
                     "photo); 0 skips fitting.")

# Shared photos (<assets>/images/faces), benchmarks/fitting.py's order: the first
# is the preprocessed / learned-path photo and the fitting warm-up.
PHOTOS = ("obama.jpg", "biden.jpg", "Paul.jpeg", "Chris.jpeg", "Luciano.png", "Bryan.png",
          "obama2.jpg", "Paul2.jpeg")


def median_seconds(fn: Callable, *args, steps: int) -> float:
    """Median wall time of ``fn(*args)`` over ``steps`` calls, after one warm-up call.

    The first output tensor is pulled to numpy so the time covers the whole
    computation.
    """

    def call() -> None:
        out = fn(*args)
        if isinstance(out, dict):
            out = next(iter(out.values()))
        np.asarray(out)

    call()
    times = []
    for _ in range(max(1, steps)):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def learned_paths(recon, rnet, albedo_module, displacement_module) -> tuple[Callable, Callable]:
    """The learned coarse and coarse + fine paths as ``tf.function``s of a crop batch.

    Args:
      recon: a :class:`recon_tf.reconstruction.PhotoReconstructor` with fine
        settings (its fitter and fine stage give the geometry and rendering).
      rnet: images float32 [B, S, S, 3] in [0, 1] → coefficients [B, total].
      albedo_module, displacement_module: the fine modules.
    Returns:
      (coarse, coarse_fine): each maps crops to a dict of output tensors.
    """
    import tensorflow as tf

    from recon_tf.reconstruction import DM_TO_MM

    fitter, stage = recon.fitter, recon.fine.stage
    camera = fitter.camera(fitter.image_size)

    def coarse_outputs(crops: tf.Tensor) -> tuple[tf.Tensor, dict]:
        coeffs = rnet(crops, training=False)
        params = fitter.split(coeffs)
        verts, cam_v, normals, _, lmk = fitter.geometry(params, camera)
        render, covered = fitter.render_front(params, camera, cam_v, normals)
        return coeffs, {"render": render, "vertices_mm": verts * DM_TO_MM,
                        "landmarks68": lmk, "face_mask": covered}

    @tf.function
    def coarse(crops: tf.Tensor) -> dict:
        return coarse_outputs(crops)[1]

    @tf.function
    def coarse_fine(crops: tf.Tensor) -> dict:
        coeffs, outputs = coarse_outputs(crops)
        inputs = stage.prepare(coeffs, crops)
        albedo, displacement = stage.predict(inputs, albedo_module, displacement_module)
        fine = stage.render(inputs, albedo, displacement)
        return {"render_fine": fine.image, **outputs, "albedo_map": fine.albedo_map,
                "displacement_mm": fine.displacement * DM_TO_MM,
                "normal_map": fine.detail_normals}

    return coarse, coarse_fine


def time_learned(recon, photo: str) -> dict[str, float]:
    """Seconds per image: ``preprocess`` of ``photo``, learned ``coarse`` and ``fine``
    (coarse + fine) on its aligned crop, batch 1."""
    import tensorflow as tf

    from recon_tf.fine import build_modules, module_config
    from recon_tf.nets.rnet import build_rnet

    face = recon.prepare(photo)
    if hasattr(face, "reason"):
        raise RuntimeError(f"{photo}: {face.reason} ({face.note})")
    t_prep = median_seconds(recon.prepare, photo, steps=FLAGS.steps)
    fm = recon.face_model
    rnet = build_rnet(FLAGS.backbone, fm.layout, FLAGS.image_size, exp_bounds=fm.exp_bounds)
    albedo, disp = build_modules(module_config(
        FLAGS.fine_uv_size, True, True, True, False, FLAGS.wavelet_source,
        FLAGS.module_filters, FLAGS.module_depth))
    coarse, coarse_fine = learned_paths(recon, rnet, albedo, disp)
    crop = tf.constant(face.crop[None].astype(np.float32) / 255.0)
    return {"preprocess": t_prep,
            "coarse": median_seconds(coarse, crop, steps=FLAGS.steps),
            "fine": median_seconds(coarse_fine, crop, steps=FLAGS.steps)}


def time_fitting(recon, paths: list[str]) -> dict[str, float]:
    """Seconds per photo of each main-job stage (``benchmarks/fitting.py``'s timer),
    one photo at a time, after the first path as a warm-up; also ``warmup``."""
    with tempfile.TemporaryDirectory(prefix="bench_reconstruct_") as out:
        t0 = time.perf_counter()
        fitting._time_photos(recon, paths[:1], out, 1)
        warmup = time.perf_counter() - t0
        timed = fitting._time_photos(recon, paths[1:], out, 1)
    return {**timed, "warmup": warmup}


def main(argv: list[str]) -> None:
    del argv
    from recon_tf.assets import asset_path

    if not os.path.samefile(os.path.dirname(reconstruct.__file__), TOOLS):
        raise RuntimeError(f"imported {reconstruct.__file__}, not tools/reconstruct.py")
    if not FLAGS.fine:
        raise app.UsageError("the learned coarse + fine path needs the fine stage (--fine)")
    if not 0 <= FLAGS.fit_photos < len(PHOTOS):
        raise app.UsageError(f"--fit_photos must be in [0, {len(PHOTOS) - 1}]")
    folder = asset_path("images/faces")
    paths = [os.path.join(folder, n) for n in PHOTOS[:FLAGS.fit_photos + 1]]
    t0 = time.perf_counter()
    recon = reconstruct.build_reconstructor()
    t_load = time.perf_counter() - t0
    learned = time_learned(recon, paths[0])
    fit = time_fitting(recon, paths) if FLAGS.fit_photos else None

    size, uv = FLAGS.image_size, FLAGS.fine_uv_size
    schedule = (f"{FLAGS.pose_steps} pose + {FLAGS.landmark_steps} landmark steps, "
                + " + ".join(f"{s} @ {p} px" for p, s in zip(FLAGS.photo_scales,
                                                              FLAGS.photo_steps))
                + f" photometric, L_id {FLAGS.identity_net}")
    print(f"\nmain job on CPU, {size}² crops, UV {uv}², start-up (load) {t_load:.1f} s, "
          f"learned: median of {FLAGS.steps}, batch 1, untrained weights")
    print("\n| measurement | covers | per image |")
    print("|---|---|---|")
    print(f"| preprocess ({PHOTOS[0]}) | decode, MTCNN, PFLD, FaceMesh, align, skin mask "
          f"(not in the learned times) | {learned['preprocess'] * 1e3:.0f} ms |")
    print(f"| learned coarse | R-Net {FLAGS.backbone}, coefficients → mesh, landmarks, "
          f"render | {learned['coarse'] * 1e3:.0f} ms |")
    print(f"| learned coarse + fine | + UV unwrapping, albedo and displacement modules "
          f"(base {FLAGS.module_filters}, depth {FLAGS.module_depth}), detail render, maps "
          f"| **{learned['fine'] * 1e3:.0f} ms** |")
    fit_s = float("nan")
    if fit is not None:
        fit_s = fit["fit"] + fit["fine"]
        n = f"{FLAGS.fit_photos} photo{'s' if FLAGS.fit_photos > 1 else ''}"
        print(f"| fitting coarse ({n}) | {schedule} | {fit['fit']:.2f} s |")
        print(f"| fitting coarse + fine ({n}) | + fine fitting, {FLAGS.fine_steps} "
              f"steps | **{fit_s:.2f} s** |")
        print(f"| fitting end to end ({n}) | + prepare {fit['prepare']:.2f} s, write "
              f"{fit['write']:.2f} s (all outputs) | {fit_s + fit['prepare'] + fit['write']:.2f}"
              f" s |")
        print(f"\nfitting warm-up photo (tracing): {fit['warmup']:.1f} s")
    print(f"RESULT learned_ms={learned['fine'] * 1e3:.1f} fit_s={fit_s:.2f}")


if __name__ == "__main__":
    app.run(main)
