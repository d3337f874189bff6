"""Evidence for per-photo fitting: landmark NME and PSNR on annotated photos, vertex
error on held-out synthetic faces; the dense FaceMesh term on and off.

    python experiments/fit_eval.py --num_synthetic=8

Protocol:

* **Annotated photos** (``--photos``, default the three ``images/faces_68pts``
  photos with ground-truth ``.pts``; or ``--photos_dir``, your own folder of
  photos with 68-point ``.pts``/``.mat``/``.t7``/``.ljson`` files): the annotated
  face is selected (the detector box holding most ground-truth points), then
  detected, aligned and fitted exactly as ``tools/reconstruct.py`` does. NME = mean point error /
  outer-eye-corner distance (iBUG 36–45), in %, of ``landmarks68.txt``
  against the ground truth. PSNR = 10 log10(255² / MSE) over the face region
  = the ground-truth landmark hull ∩ ``face_mask.png``, 0–255, input
  resolution, ``render_coarse.png`` against the photo. Rows: the detector's
  own 68 points (PFLD), the mean face (all coefficients 0 at the aligned
  pose), and the fit.
* **Held-out synthetic faces** (seed ``--synthetic_seed``, disjoint from the
  seed the FaceMesh correspondence is learned on): each render is saved as a
  PNG and goes through the same photo pipeline (detector landmarks, not the
  true ones). Vertex error = mean distance (mm) over the front-face vertices
  between the fitted and the true model-space shape after a rigid Procrustes
  alignment (rotation + translation, no scale); the mean face is the baseline.
  Yaw error = fitted minus true yaw (degrees), signed so that negative means
  the fit turned the head less than it is (towards frontal).
* ``--truth_landmarks`` (a diagnostic): the annotation's own 68 points replace
  the detector's in the fit, so the NME shows what the fit adds to perfect points.
* **Large poses** (``--synthetic_yaw=D``): every held-out face is turned to a
  yaw of ±D degrees (alternating sign; its pitch, roll and everything else as
  drawn), so a pose range can be scored on its own; faces the detector misses
  are counted.

Prints Markdown tables (pasted into the README) and writes them to
``--output/fit_eval.md``; each row's outputs go to ``--output/dense_<setting>/<row>/<photo>/``
(``detector/<photo>/landmarks68.txt``: the detector's own points, photo pixels).
"""

from __future__ import annotations

import os
import sys

import numpy as np
from absl import app, flags, logging

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))

import reconstruct  # noqa: E402  (its flags configure the fit)

from recon_tf.metrics import face_region_psnr, rigid_vertex_error_mm  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("photos", ["breakingbad.jpg", "einstein.jpg", "takeo.ppm"],
                  "Photos under <assets>/images/faces_68pts with a .pts beside them "
                  "(ignored with --photos_dir).")
flags.DEFINE_string("photos_dir", "", "Your own annotated photos instead: every image under "
                    "this folder (recursive) with a 68-point .pts/.mat/.t7/.ljson of the same name "
                    "beside it, read as LS3D-W is (e.g. a 300-W or AFLW2000-3D folder).")
flags.DEFINE_integer("limit", 0, "With --photos_dir: at most this many photos (0: all).")
flags.DEFINE_bool("truth_landmarks", False, "Fit the annotation's own 68 points in place of "
                  "the detector's (a diagnostic: what a perfect 2D detector would give; the "
                  "'detector' rows then score the annotation itself).")
flags.DEFINE_integer("num_synthetic", 8, "Held-out synthetic faces.")
flags.DEFINE_integer("synthetic_seed", 1001, "Seed of the held-out synthetic set.")
flags.DEFINE_list("dense_settings", ["on", "off"], "Dense FaceMesh term settings to compare.")
flags.DEFINE_bool("synthetic_boxes", False, "Give each held-out synthetic face its render's "
                  "68-point box, as NoW gives its detected_face boxes (the detection on it "
                  "is kept, or the box stands in where the detector misses the face).")
flags.DEFINE_string("synthetic_variant", "orig", "Alter each held-out synthetic render as "
                    "recon_tf.data.photo_variants does a photo (e.g. mask, sunglasses, blur) "
                    "before it is reconstructed; the truth stays the render's.")
flags.DEFINE_float("synthetic_yaw", 0.0, "Turn every held-out synthetic face to ±this yaw "
                   "(degrees, alternating sign); 0: the yaw the synthetic set draws.")


def annotated_photos() -> list[tuple[str, str, np.ndarray]]:
    """(row name, path, float [68, 2] ground truth) per annotated photo: ``--photos``
    under the assets, or every annotated image under ``--photos_dir``."""
    import itertools

    from recon_tf.assets import asset_path
    from recon_tf.data.readers import read_ls3dw
    from recon_tf.preprocess.landmarks import read_pts

    if not FLAGS.photos_dir:
        paths = [asset_path(os.path.join("images/faces_68pts", n)) for n in FLAGS.photos]
        return [(os.path.basename(p), p, read_pts(os.path.splitext(p)[0] + ".pts"))
                for p in paths]
    records = itertools.islice(read_ls3dw(FLAGS.photos_dir), FLAGS.limit or None)
    return [(os.path.relpath(r.image_path, FLAGS.photos_dir), r.image_path, r.landmarks)
            for r in records]


def with_landmarks(face, points: np.ndarray):
    """``face`` (a prepared face) with its 68 points replaced by ``points`` (float
    [68, 2], original photo pixels), moved into its aligned crop."""
    import dataclasses

    from recon_tf.preprocess.align import apply_transform, invert

    crop = apply_transform(face.crop_transform, apply_transform(invert(face.to_original),
                                                                points))
    return dataclasses.replace(face, landmarks=crop.astype(np.float32))


def eval_photos(recon, out_dir: str) -> list[dict]:
    """Fit the annotated photos, ``--batch_size`` at a time; NME and PSNR per row
    (detector, mean face, fit)."""
    rows, prepared = [], []
    photos = annotated_photos()
    for k, (name, path, gt) in enumerate(photos):
        face = recon.prepare(path, annotation=gt)
        if hasattr(face, "reason"):
            rows.append({"photo": name, "status": face.reason})
        else:
            if FLAGS.truth_landmarks:
                face = with_landmarks(face, gt)
            prepared.append((name, path, gt, face))
        if prepared and (len(prepared) == FLAGS.batch_size or k == len(photos) - 1):
            rows.extend(_score_photos(recon, prepared, out_dir))
            prepared = []
            logging.info("annotated photos: %d of %d", k + 1, len(photos))
    return rows


def _score_photos(recon, prepared: list[tuple], out_dir: str) -> list[dict]:
    """Fit one batch of prepared annotated photos and score each (see eval_photos)."""
    import cv2

    from recon_tf.preprocess.align import apply_transform, invert
    from recon_tf.preprocess.image_io import load_image
    from recon_tf.preprocess.landmarks import nme_outer_eyes

    rows = []
    result = recon.fit([f for *_, f in prepared])
    zeros = np.zeros_like(result.coeffs[0])
    fine = None
    if recon.fine is not None:
        from recon_tf.photo_fine import fine_details, write_fine

        fine = fine_details(recon, [f for *_, f in prepared], result.coeffs)[0]
    for i, (name, path, gt, face) in enumerate(prepared):
        photo = load_image(path).pixels
        detector = apply_transform(face.to_original, apply_transform(
            invert(face.crop_transform), face.landmarks))
        row = {"photo": name, "nme_detector": 100 * nme_outer_eyes(detector, gt)}
        detector_dir = os.path.join(out_dir, "detector", os.path.splitext(name)[0])
        os.makedirs(detector_dir, exist_ok=True)
        np.savetxt(os.path.join(detector_dir, "landmarks68.txt"), detector, fmt="%.3f")
        for label, coeffs in (("mean", zeros), ("fit", result.coeffs[i])):
            target = os.path.join(out_dir, label, os.path.splitext(name)[0])
            recon.write(face, coeffs, target)
            lmk = np.loadtxt(os.path.join(target, "landmarks68.txt"))
            render = cv2.imread(os.path.join(target, "render_coarse.png"))[..., ::-1]
            mask = cv2.imread(os.path.join(target, "face_mask.png"), 0) > 0
            row[f"nme_{label}"] = 100 * nme_outer_eyes(lmk, gt)
            row[f"psnr_{label}"] = face_region_psnr(photo, render, mask, gt)
        if fine is not None:
            write_fine(recon, face, result.coeffs[i], fine, i, target)
            render = cv2.imread(os.path.join(target, "render_fine.png"))[..., ::-1]
            row["psnr_fine"] = face_region_psnr(photo, render, mask, gt)
        rows.append(row)
    return rows


def _yaw_column(layout) -> int:
    """The yaw's column in the flat coefficients (angles are pitch, yaw, roll)."""
    return layout.offsets["angles"][0] + 1


def _held_out_sample(renderer, index: int) -> dict:
    """Held-out synthetic example ``index``, turned to ``--synthetic_yaw`` when set."""
    sample = renderer.sample(FLAGS.synthetic_seed, index)
    if FLAGS.synthetic_yaw:
        yaw = _yaw_column(renderer.face_model.layout)
        sample["coeffs"] = sample["coeffs"].copy()
        sample["coeffs"][yaw] = np.radians(FLAGS.synthetic_yaw) * (1 if index % 2 else -1)
    return sample


def eval_synthetic(recon, out_dir: str) -> tuple[list[tuple], int]:
    """Per detected held-out synthetic face (vertex error mm of the fit, of the mean
    face, yaw error degrees), and how many faces the detector missed."""
    from recon_tf.data.photo_variants import photo_variant
    from recon_tf.data.synthetic import SyntheticRenderer
    from recon_tf.export import save_png

    fm = recon.face_model
    renderer = SyntheticRenderer(fm)
    front = recon.fitter.front_mask.numpy() > 0.5
    mean = np.asarray(fm.arrays["mean_shape"])
    errors, missed = [], 0
    batch = FLAGS.batch_size
    for start in range(0, FLAGS.num_synthetic, batch):
        idx = range(start, min(start + batch, FLAGS.num_synthetic))
        samples = [_held_out_sample(renderer, i) for i in idx]
        rendered = renderer.render(samples)
        faces, truths, yaws = [], [], []
        for i, r, sample in zip(idx, rendered, samples):
            path = os.path.join(out_dir, "synthetic", f"{i:04d}.png")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            image, points = photo_variant(FLAGS.synthetic_variant, r["image"], r["landmarks"])
            save_png(path, image)
            box = None
            if FLAGS.synthetic_boxes:
                lo, hi = points.min(axis=0), points.max(axis=0)
                box = np.r_[lo, hi - lo]
            face = recon.prepare(path, box=box)
            if hasattr(face, "reason"):
                logging.warning("synthetic %d skipped: %s", i, face.reason)
                missed += 1
                continue
            faces.append(face)
            truths.append(r["vertices"])
            yaws.append(float(sample["coeffs"][_yaw_column(fm.layout)]))
        if not faces:
            continue
        result = recon.fit(faces)
        c = fm.layout.split(result.coeffs)
        fitted = fm.shape(c.identity, c.expression).numpy()
        fitted_yaw = c.angles[:, 1].numpy()
        for pred, truth, true_yaw, yaw in zip(fitted, truths, yaws, fitted_yaw):
            errors.append((rigid_vertex_error_mm(pred, truth, front),
                           rigid_vertex_error_mm(mean, truth, front),
                           np.degrees((yaw - true_yaw) * np.sign(true_yaw or 1.0))))
    return errors, missed


def main(argv: list[str]) -> None:
    del argv
    out = FLAGS.output
    lines = []
    for setting in FLAGS.dense_settings:
        FLAGS.dense_landmarks = setting == "on"
        recon = reconstruct.build_reconstructor()
        rows = eval_photos(recon, os.path.join(out, f"dense_{setting}"))
        synth, missed = eval_synthetic(recon, os.path.join(out, f"dense_{setting}"))
        synth = np.array(synth)
        lines.append(f"\n### Dense FaceMesh term {setting} ({recon.method})\n")
        lines.append("| photo | NME detector % | NME mean face % | NME fit % | "
                     "PSNR mean face dB | PSNR fit dB |")
        lines.append("|---|---|---|---|---|---|")
        for r in rows:
            if "nme_fit" not in r:
                lines.append(f"| {r['photo']} | skipped: {r['status']} | | | | |")
                continue
            lines.append(f"| {r['photo']} | {r['nme_detector']:.2f} | {r['nme_mean']:.2f} | "
                         f"{r['nme_fit']:.2f} | {r['psnr_mean']:.2f} | {r['psnr_fit']:.2f} |")
        ok = [r for r in rows if "nme_fit" in r]
        if ok:
            m = {k: np.mean([r[k] for r in ok]) for k in ok[0] if k != "photo"}
            lines.append(f"| **mean** | {m['nme_detector']:.2f} | {m['nme_mean']:.2f} | "
                         f"{m['nme_fit']:.2f} | {m['psnr_mean']:.2f} | {m['psnr_fit']:.2f} |")
        fine = [r["psnr_fine"] for r in ok if "psnr_fine" in r]
        if fine:
            lines.append(f"\nFine render PSNR (same region): {np.mean(fine):.2f} dB "
                         f"({', '.join(f'{v:.2f}' for v in fine)}).")
        if len(synth):
            lines.append(f"\nHeld-out synthetic faces (n = {len(synth)}): vertex error "
                         f"{synth[:, 0].mean():.2f} mm (fit) vs {synth[:, 1].mean():.2f} mm "
                         f"(mean face); fit better on {(synth[:, 0] < synth[:, 1]).sum()} "
                         f"of {len(synth)}; yaw error {synth[:, 2].mean():+.1f}° (mean "
                         f"|error| {np.abs(synth[:, 2]).mean():.1f}°); missed by the detector: "
                         f"{missed}" + (f" (yaw ±{FLAGS.synthetic_yaw:g}°)."
                                         if FLAGS.synthetic_yaw else "."))
            lines.append("Per face (fit / mean face mm, yaw error °): " + ", ".join(
                f"{e:.2f}/{m:.2f} ({y:+.0f})" for e, m, y in synth) + ".")
    text = "\n".join(lines)
    print(text)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "fit_eval.md"), "w") as f:
        f.write(text + "\n")


if __name__ == "__main__":
    FLAGS.set_default("output", "outputs/fit_eval")
    app.run(main)
