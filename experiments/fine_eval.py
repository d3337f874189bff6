"""Fine-stage evidence on held-out synthetic faces with known wrinkle displacement.

    python experiments/fine_eval.py                          # per-photo fine fitting
    python experiments/fine_eval.py --fine_model=runs/fine   # trained modules

Each held-out synthetic face (seed ``--synthetic_seed``, procedural wrinkles
and pores in its displacement map, albedo detail, random light and pose) is
refined from its *true* coarse coefficients, so the fine stage is measured on
its own. Scores, over the texels where the face is visible and facing the
camera (n_z ≥ 0.5):

* displacement error (mm, mean absolute) of the result, of a zero map and of
  the training set's mean displacement map (seed 0, ``--mean_samples`` maps);
* Pearson correlation of the result with the true displacement;
* PSNR (0–255) of the coarse and the fine render over the rendered front
  face ∩ the skin mask;
* albedo error: mean absolute difference (0–255) of the fine and of the
  coarse albedo map from the true albedo map, over the scored texels;
* relighting: every face rendered under a new random light (seed
  ``--relight_seed``) from the truth (true albedo map and displacement),
  from the fine result and from the coarse face; PSNR of fine and coarse
  against the truth. Detail that went into geometry and albedo survives a
  new light; a copy of the photo's shading would not.

Writes ``<output>/fine_eval.md`` and prints it.
"""

from __future__ import annotations

import os
import sys

import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

FLAGS = flags.FLAGS
flags.DEFINE_integer("num_synthetic", 16, "Held-out synthetic faces.")
flags.DEFINE_integer("synthetic_seed", 1001, "Seed of the held-out faces.")
flags.DEFINE_integer("mean_samples", 64, "Training displacement maps (seed 0) in the mean map.")
flags.DEFINE_integer("uv_size", 128, "UV size of the truth and the fine stage.")
flags.DEFINE_integer("image_size", 224, "Side of the synthetic crops (a --fine_model trained "
                     "on smaller crops is scored on crops of its own size).")
flags.DEFINE_integer("fine_steps", 100, "Per-photo fine-fitting steps (no --fine_model).")
flags.DEFINE_string("fine_model", None, "A train_fine.py run directory (else fitting).")
flags.DEFINE_integer("batch_size", 4, "Faces refined together.")
flags.DEFINE_string("output", "outputs/fine_eval", "Output directory.")
flags.DEFINE_string("figure", None, "Also write input | coarse | fine | detail normals | true "
                    "normals | shaded fine geometry of the first face to this PNG.")
flags.DEFINE_float("noise_sigma", 0.0, "Gaussian noise (standard deviation, [0, 1] pixel "
                   "units) added to the inputs: a noisy photo. PSNRs are against the noisy "
                   "input; the albedo, displacement and relit scores against the truth.")
flags.DEFINE_bool("fine_denoise", True, "Fine fitting reads the input through "
                  "recon_tf.denoise.denoise_for_fit, as the main job does by default.")
flags.DEFINE_integer("relight_seed", 77, "Seed of the new lights for the relighting test.")


def psnr(image: np.ndarray, render: np.ndarray, mask: np.ndarray) -> float:
    """PSNR (dB, peak 255) of [0, 1] images over ``mask`` (:func:`recon_tf.metrics.psnr`)."""
    from recon_tf.metrics import psnr as psnr_255

    return psnr_255(255.0 * np.asarray(image), 255.0 * np.asarray(render), mask)


def write_figure(path: str, fm, image, coarse, fine, normals, truth_normals, vertices) -> None:
    """input | coarse render | fine render | detail normals | true normals | fine geometry.

    Images float [S, S, 3] in [0, 1]; normal maps float [U, U, 3] unit vectors in
    UV; ``vertices`` [N, 3] the face's coarse shape for the shaded views.
    """
    import cv2

    from recon_tf.gallery import geometry_views
    from recon_tf.mesh import encode_normal_map_png

    size = image.shape[0]
    panels = [np.clip(np.asarray(x) * 255.0 + 0.5, 0, 255).astype(np.uint8)
              for x in (image, coarse, fine)]
    for n in (normals, truth_normals):
        tmp = path + ".normals.png"
        encode_normal_map_png(np.asarray(n), tmp)
        uv = cv2.imread(tmp, cv2.IMREAD_COLOR)[..., ::-1]
        os.remove(tmp)
        panels.append(cv2.resize(uv, (size, size), interpolation=cv2.INTER_AREA))
    panels.append(geometry_views(fm, vertices, np.asarray(normals), yaws_deg=(30.0,),
                                 size=size))
    cv2.imwrite(path, np.concatenate(panels, 1)[..., ::-1])


def albedo_error(albedo, truth, mask: np.ndarray) -> float:
    """Mean absolute difference (0–255) of albedo maps over ``mask`` texels."""
    diff = np.abs(np.asarray(albedo, np.float64) - np.asarray(truth, np.float64))
    return float(diff[np.broadcast_to(mask, diff.shape)].mean() * 255.0)


def main(argv: list[str]) -> None:
    del argv
    import tensorflow as tf

    from bfm import load_default_face_model
    from recon_tf.data.synthetic import SyntheticConfig, SyntheticRenderer
    from recon_tf.denoise import denoise_for_fit
    from recon_tf.fine import FineStage, displacement_error_mm, load_fine_modules
    from recon_tf.losses import FineLossWeights

    fm = load_default_face_model()
    renderer = SyntheticRenderer(fm, SyntheticConfig(image_size=FLAGS.image_size,
                                                     uv_size=FLAGS.uv_size))
    mean_map = np.mean([renderer.sample(0, i)["displacement"]
                        for i in range(FLAGS.mean_samples)], axis=0)[..., None]
    stage = FineStage(fm, FLAGS.uv_size, FLAGS.image_size,
                      weights=FineLossWeights(id_weight=0.0))
    modules = (None, None)
    if FLAGS.fine_model:
        modules = load_fine_modules(FLAGS.fine_model, fm, FLAGS.uv_size)[:2]
    rows, noise = [], []
    for start in range(0, FLAGS.num_synthetic, FLAGS.batch_size):
        idx = range(start, min(start + FLAGS.batch_size, FLAGS.num_synthetic))
        rendered = renderer.render([renderer.sample(FLAGS.synthetic_seed, i) for i in idx])
        images = np.stack([r["image"] for r in rendered]).astype(np.float32) / 255
        if FLAGS.noise_sigma > 0:  # a noisy photo (seeded per batch)
            images = np.clip(images + np.random.default_rng(start).normal(
                0.0, FLAGS.noise_sigma, images.shape), 0.0, 1.0).astype(np.float32)
        images = tf.constant(images)
        skin = tf.constant((np.stack([r["mask"] for r in rendered])[..., None] > 0)
                           .astype(np.float32))
        seen = images  # what the fine stage reads (the main job's choice, see --fine_denoise)
        if FLAGS.fine_denoise and not FLAGS.fine_model:
            seen, sigma = denoise_for_fit(images, skin)
            noise += list(sigma.numpy())
        inputs = stage.prepare(tf.constant(np.stack([r["coeffs"] for r in rendered])), seen)
        coarse = stage.render(inputs, inputs.coarse_albedo, tf.zeros_like(inputs.visible))
        if FLAGS.fine_model:
            albedo, disp = stage.predict(inputs, *modules)
            fine = stage.render(inputs, albedo, disp)
        else:
            fine, _ = stage.fit(inputs, seen, skin, FLAGS.fine_steps)
        scored = (inputs.visible.numpy() > 0.5) & (inputs.facing.numpy() >= 0.5)
        face = (inputs.front * skin).numpy()[..., 0] > 0.5
        new_light = tf.constant([renderer.sample(FLAGS.relight_seed, 10_000 + start + j)
                                 ["coeffs"][fm.layout.offsets["light"][0]:]
                                 for j in range(len(rendered))], tf.float32)
        relit = inputs._replace(light=new_light)
        true_albedo = tf.constant(np.stack([r["albedo_map"] for r in rendered]))
        true_disp = tf.constant(np.stack([r["displacement"] for r in rendered]))
        relit_truth = stage.render(relit, true_albedo, true_disp).image.numpy()
        if FLAGS.figure and start == 0:
            c = fm.layout.split(tf.constant(rendered[0]["coeffs"][None], tf.float32))
            write_figure(FLAGS.figure, fm, images[0].numpy(), coarse.image[0].numpy(),
                         fine.image[0].numpy(), fine.detail_normals[0].numpy(),
                         stage.render(inputs, true_albedo, true_disp).detail_normals[0].numpy(),
                         fm.shape(c.identity, c.expression)[0].numpy())
        relit_fine = stage.render(relit, fine.albedo_map, fine.displacement).image.numpy()
        relit_coarse = stage.render(relit, inputs.coarse_albedo,
                                    tf.zeros_like(inputs.visible)).image.numpy()
        for j, r in enumerate(rendered):
            truth = r["displacement"]
            err, corr = displacement_error_mm(fine.displacement[j].numpy(), truth, scored[j])
            rows.append({
                "err": err, "corr": corr,
                "zero": displacement_error_mm(np.zeros_like(truth), truth, scored[j])[0],
                "mean_map": displacement_error_mm(mean_map, truth, scored[j])[0],
                "psnr_coarse": psnr(images[j].numpy(), coarse.image[j].numpy(), face[j]),
                "psnr_fine": psnr(images[j].numpy(), fine.image[j].numpy(), face[j]),
                "albedo_coarse": albedo_error(inputs.coarse_albedo[j], r["albedo_map"],
                                              scored[j]),
                "albedo_fine": albedo_error(fine.albedo_map[j], r["albedo_map"], scored[j]),
                "relit_coarse": psnr(relit_truth[j], relit_coarse[j], face[j]),
                "relit_fine": psnr(relit_truth[j], relit_fine[j], face[j])})
    m = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    method = f"trained modules ({FLAGS.fine_model})" if FLAGS.fine_model else (
        f"per-photo fine fitting, {FLAGS.fine_steps} steps, "
        + (f"on the Wiener-filtered input (measured noise σ {255 * np.mean(noise):.2f} of "
           "255)" if FLAGS.fine_denoise else "on the input as it is"))
    if FLAGS.noise_sigma > 0:
        method += f"; inputs with Gaussian noise σ = {255 * FLAGS.noise_sigma:.2f} of 255"
    text = "\n".join([
        f"Fine stage on {len(rows)} held-out synthetic faces (seed {FLAGS.synthetic_seed}, "
        f"true coarse coefficients, UV {FLAGS.uv_size}²): {method}.", "",
        "| displacement error mm: result | zero map | training mean map | correlation "
        "with truth | PSNR coarse dB | PSNR fine dB |", "|---|---|---|---|---|---|",
        f"| {m['err']:.4f} | {m['zero']:.4f} | {m['mean_map']:.4f} | {m['corr']:.3f} | "
        f"{m['psnr_coarse']:.2f} | {m['psnr_fine']:.2f} |", "",
        f"Positive correlation on {sum(r['corr'] > 0 for r in rows)} of {len(rows)} faces; "
        f"error below the mean map on {sum(r['err'] < r['mean_map'] for r in rows)}.", "",
        "| albedo error vs truth (0–255): coarse | fine | relit under a new light, PSNR vs "
        "relit truth: coarse | fine |", "|---|---|---|---|",
        f"| {m['albedo_coarse']:.2f} | {m['albedo_fine']:.2f} | {m['relit_coarse']:.2f} | "
        f"{m['relit_fine']:.2f} |", "",
        f"Fine albedo closer to the truth on "
        f"{sum(r['albedo_fine'] < r['albedo_coarse'] for r in rows)} of {len(rows)}; "
        f"relit fine closer on "
        f"{sum(r['relit_fine'] > r['relit_coarse'] for r in rows)} of {len(rows)}."])
    print(text)
    os.makedirs(FLAGS.output, exist_ok=True)
    with open(os.path.join(FLAGS.output, "fine_eval.md"), "w") as f:
        f.write(text + "\n")


if __name__ == "__main__":
    app.run(main)
