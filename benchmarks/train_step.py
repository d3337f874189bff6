"""Images/s of one coarse (R-Net) training step, and the share spent outside the backbone.

    python benchmarks/train_step.py                       # resnet50 and small, batch 8, 224²
    python benchmarks/train_step.py --backbones=resnet50 --steps=5

For each backbone, in one process and on the same batch (synthetic faces
rendered on the fly, so no data set is needed), three ``tf.function`` steps
are timed after a warm-up (tracing excluded):

* ``full``: the real training step of ``experiments/train_coarse.py``
  (:func:`recon_tf.coarse.make_train_step`: R-Net forward, rendering, the
  Eq. 6 losses incl. L_id through the frozen face-recognition net, backward,
  Adam update);
* ``backbone``: the same R-Net forward/backward/update with a trivial loss
  on its output (what the step would cost if rendering and losses were free);
* ``no_id``: the full step without L_id (shows the identity net's share).

``non_backbone_share = (full − backbone) / full``: rendering + losses
(+ their backward). Steps alternate between variants so that CPU speed
drift (×2 over minutes on shared machines) affects all alike. Last line:
``RESULT coarse_img_per_s=<x> non_backbone_share=<y>`` for resnet50 (or the
first backbone given).
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

FLAGS = flags.FLAGS
flags.DEFINE_list("backbones", ["resnet50", "small"], "R-Net backbones to time.")
flags.DEFINE_integer("batch_size", 8, "Images per step.")
flags.DEFINE_integer("image_size", 224, "Crop side.")
flags.DEFINE_integer("steps", 6, "Timed steps per variant (after one warm-up each).")
flags.DEFINE_enum("identity_net", "faceres", ["faceres", "mobilefacenet", "none"],
                  "Identity net of L_id in the full step.")


def _batch(face_model, size: int, batch: int) -> dict:
    """Synthetic faces (image, landmarks, skin mask) rendered on the fly."""
    import tensorflow as tf

    from recon_tf.data.synthetic import SyntheticConfig, SyntheticRenderer

    renderer = SyntheticRenderer(face_model, SyntheticConfig(image_size=size, supersample=1))
    rendered = renderer.render([renderer.sample(0, i) for i in range(batch)])
    images = np.stack([r["image"] for r in rendered]).astype(np.float32) / 255.0
    return {"image": tf.constant(images),
            "landmarks": tf.constant(np.stack([r["landmarks"] for r in rendered]), tf.float32),
            "mask": tf.constant((np.stack([r["mask"] for r in rendered])[..., None] > 0)
                                .astype(np.float32))}


def _steps(backbone: str, face_model, identity):
    """(full, no_id, backbone-only) step functions for one backbone."""
    import tensorflow as tf

    from recon_tf.coarse import CoarseStage, make_train_step
    from recon_tf.fitting import Fitter
    from recon_tf.losses import CoarseLossWeights
    from recon_tf.nets.rnet import build_rnet

    strategy = tf.distribute.get_strategy()
    model = build_rnet(backbone, face_model.layout, FLAGS.image_size,
                       exp_bounds=face_model.exp_bounds)
    optimizer = tf.keras.optimizers.Adam(1e-4)
    weights = CoarseLossWeights.for_model(face_model)
    stages = {}
    for name, net in (("full", identity), ("no_id", None)):
        objective = Fitter(face_model, weights, identity_net=net, image_size=FLAGS.image_size)
        stages[name] = make_train_step(CoarseStage(model, objective), optimizer, strategy,
                                       FLAGS.batch_size)

    @tf.function
    def backbone_only(batch):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(batch["image"], training=True) - 0.01))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    stages["backbone"] = backbone_only
    return stages


def _time(stages: dict, batch: dict) -> dict:
    for fn in stages.values():  # warm-up: tracing
        fn(batch)
    times = {k: [] for k in stages}
    for _ in range(FLAGS.steps):
        for name, fn in stages.items():
            t0 = time.perf_counter()
            out = fn(batch)
            float(out["total"] if isinstance(out, dict) else out)  # wait for the result
            times[name].append(time.perf_counter() - t0)
    return {k: float(np.median(v)) for k, v in times.items()}


def main(argv: list[str]) -> None:
    del argv
    from bfm import load_default_face_model
    from recon_tf.nets.identity import make_identity_net

    face_model = load_default_face_model()
    identity = None if FLAGS.identity_net == "none" else make_identity_net(FLAGS.identity_net)
    batch = _batch(face_model, FLAGS.image_size, FLAGS.batch_size)
    rows = []
    for backbone in FLAGS.backbones:
        t = _time(_steps(backbone, face_model, identity), batch)
        share = (t["full"] - t["backbone"]) / t["full"]
        id_share = (t["full"] - t["no_id"]) / t["full"]
        rows.append((backbone, t, share, id_share))
    b = FLAGS.batch_size
    print(f"\ncoarse train step, batch {b}, {FLAGS.image_size}², identity net "
          f"{FLAGS.identity_net}, median of {FLAGS.steps} steps")
    print(f"{'backbone':10s} {'full ms':>9s} {'img/s':>7s} {'backbone ms':>12s} "
          f"{'no-L_id ms':>11s} {'non-backbone':>13s} {'L_id share':>11s}")
    for name, t, share, id_share in rows:
        print(f"{name:10s} {t['full'] * 1e3:9.0f} {b / t['full']:7.2f} "
              f"{t['backbone'] * 1e3:12.0f} {t['no_id'] * 1e3:11.0f} {share:13.3f} "
              f"{id_share:11.3f}")
    name, t, share, _ = rows[0]
    print(f"RESULT coarse_img_per_s={b / t['full']:.3f} non_backbone_share={share:.3f}")


if __name__ == "__main__":
    app.run(main)
