"""Fine stage speed: images/s of a training step, and ms per image of learned inference.

    python benchmarks/fine_step.py                 # batch 8 train step, batch 1 inference

In one process, on synthetic faces rendered on the fly (no data set needed):

* ``train``: one ``experiments/train_fine.py`` step (frozen R-Net forward,
  :meth:`recon_tf.fine.FineStage.prepare`, both modules, detail render, Eq.
  11 with L_id, backward, Adam), ``--batch_size`` crops;
* ``infer``: learned coarse + fine inference for one aligned crop (R-Net,
  UV unwrapping, both modules, detail normals and render; detection
  excluded), the small backbone as the issue's target asks.

Both are ``tf.function``s timed after a warm-up (tracing excluded), median of
``--steps``. Last line: ``RESULT fine_img_per_s=<x> fine_infer_ms=<y>``.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

FLAGS = flags.FLAGS
flags.DEFINE_integer("batch_size", 8, "Crops per training step.")
flags.DEFINE_integer("image_size", 224, "Crop side.")
flags.DEFINE_integer("uv_size", 256, "UV map side.")
flags.DEFINE_string("backbone", "small", "R-Net backbone of the frozen coarse stage.")
flags.DEFINE_enum("identity_net", "faceres", ["faceres", "mobilefacenet", "none"],
                  "Identity net of L_id in the training step.")
flags.DEFINE_integer("base_filters", 16, "Modules' first-level width (train_fine.py's flag).")
flags.DEFINE_integer("depth", 4, "Modules' encoder levels (train_fine.py's flag).")
flags.DEFINE_integer("steps", 5, "Timed repetitions (after one warm-up).")


def _median_time(fn, *args) -> float:
    fn(*args)
    times = []
    for _ in range(FLAGS.steps):
        t0 = time.perf_counter()
        out = fn(*args)
        np.asarray(next(iter(out.values())) if isinstance(out, dict) else out)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main(argv: list[str]) -> None:
    del argv
    import tensorflow as tf

    from bfm import load_default_face_model
    from recon_tf.data.synthetic import SyntheticConfig, SyntheticRenderer
    from recon_tf.fine import FineStage, build_modules, module_config
    from recon_tf.losses import FineLossWeights
    from recon_tf.nets.identity import make_identity_net
    from recon_tf.nets.rnet import build_rnet

    fm = load_default_face_model()
    renderer = SyntheticRenderer(fm, SyntheticConfig(image_size=FLAGS.image_size,
                                                     supersample=1))
    rendered = renderer.render([renderer.sample(0, i) for i in range(FLAGS.batch_size)])
    images = tf.constant(np.stack([r["image"] for r in rendered]).astype(np.float32) / 255)
    skin = tf.constant((np.stack([r["mask"] for r in rendered])[..., None] > 0)
                       .astype(np.float32))
    rnet = build_rnet(FLAGS.backbone, fm.layout, FLAGS.image_size, exp_bounds=fm.exp_bounds)
    identity = None if FLAGS.identity_net == "none" else make_identity_net(FLAGS.identity_net)
    stage = FineStage(fm, FLAGS.uv_size, FLAGS.image_size,
                      weights=FineLossWeights(id_weight=0.8 if identity else 0.0),
                      identity_net=identity)
    albedo, disp = build_modules(module_config(FLAGS.uv_size, True, True, True, False, "uv",
                                               FLAGS.base_filters, FLAGS.depth))
    variables = albedo.trainable_variables + disp.trainable_variables
    optimizer = tf.keras.optimizers.Adam(1e-4)

    @tf.function
    def train_step(batch, mask):
        coeffs = tf.stop_gradient(rnet(batch, training=False))
        inputs = stage.prepare(coeffs, batch)
        id_target = stage.id_target(batch)
        with tf.GradientTape() as tape:
            a, d = stage.predict(inputs, albedo, disp, training=True)
            terms = stage.terms(inputs, stage.render(inputs, a, d), batch, mask, id_target)
            loss = tf.reduce_mean(terms["total"])
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return terms

    @tf.function
    def infer(crop):
        inputs = stage.prepare(rnet(crop, training=False), crop)
        a, d = stage.predict(inputs, albedo, disp)
        out = stage.render(inputs, a, d)
        return {"image": out.image, "albedo": out.albedo_map, "normals": out.detail_normals}

    t_train = _median_time(train_step, images, skin)
    t_infer = _median_time(infer, images[:1])
    b = FLAGS.batch_size
    print(f"\nfine stage, {FLAGS.image_size}² crops, UV {FLAGS.uv_size}², R-Net "
          f"{FLAGS.backbone}, L_id {FLAGS.identity_net}, median of {FLAGS.steps}")
    print(f"{'what':40s} {'ms':>8s} {'img/s':>7s}")
    print(f"{'train step (batch %d)' % b:40s} {t_train * 1e3:8.0f} {b / t_train:7.2f}")
    print(f"{'learned inference coarse + fine (batch 1)':40s} {t_infer * 1e3:8.0f} "
          f"{1 / t_infer:7.2f}")
    print(f"RESULT fine_img_per_s={b / t_train:.3f} fine_infer_ms={t_infer * 1e3:.1f}")


if __name__ == "__main__":
    app.run(main)
