"""Train R-Net, the coarse stage (paper §3.3), with the Eq. 6 losses.

    python experiments/train_coarse.py --model_dir=runs/coarse            # default data
    python experiments/train_coarse.py --data='/data/celeba_tfr/shard-*.tfrecord' \\
        --eval_data='data/synthetic_eval/*.tfrecord' --backbone=vgg16 --model_dir=runs/vgg

Data: TFRecords from ``tools/preprocess.py`` (aligned crops + 68 landmarks +
skin mask) or ``tools/make_synthetic.py``. With no ``--data``, the default
set is built once under ``$RECON_TF_CACHE/default_data``: a synthetic set
(seed 0) plus the shared photos preprocessed, so a fresh clone trains with no
download; held-out evaluation uses a synthetic set of another seed.

Distribution: ``--strategy=auto`` uses ``MultiWorkerMirroredStrategy`` when
``TF_CONFIG`` describes a cluster (one process per machine; each reads every
N-th shard) and ``MirroredStrategy`` otherwise (all local GPUs, or the CPU).
``--batch_size`` is the global batch.

Run directory (``--model_dir``): checkpoints (``tf.train.CheckpointManager``,
every ``--checkpoint_every`` steps), ``run_meta.json`` (face model, layout,
backbone: resuming with another is refused), TensorBoard logs (scalars per
loss term, learning rate, images/s, held-out vertex error; image grids
input | render | overlay with target (green) and predicted (red) landmarks),
and at the end ``saved_model/`` (signature: aligned crop → coefficients,
vertices, 68 landmarks). Re-running the same command resumes from the last
checkpoint (e.g. after a SIGKILL). A NaN/Inf loss or gradient stops the run
with exit code 3, before any further checkpoint is written.

Defaults: Deep3DFace's training recipe where the paper gives none (GUIDE §2):
batch 16, Adam lr 1e-4 decayed to 2e-5, the loss weights of
``recon_tf.losses.CoarseLossWeights``. The paper's backbone is VGG-Face based
(``--backbone=vgg16``, needs the VGG-Face weights); the default ``resnet50``
(Deep3DFace's) needs no download.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import _common  # noqa: E402  (experiments/_common.py: what the training scripts share)

from recon_tf.losses import define_coarse_loss_flags  # noqa: E402
from recon_tf.nets.rnet import BACKBONES  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("model_dir", "runs/coarse", "Run directory: checkpoints, TensorBoard "
                    "logs, run_meta.json, saved_model/.")
flags.DEFINE_list("data", [], "Training TFRecord globs (default: the default data set, built "
                  "on first use: synthetic faces + the shared photos).")
flags.DEFINE_list("eval_data", [], "Held-out TFRecord globs with synthetic truth "
                  "'vertices' (default: a synthetic set of another seed).")
flags.DEFINE_enum("backbone", "resnet50", list(BACKBONES),
                  "R-Net backbone: vgg16 (the paper's, VGG-Face weights), resnet50 "
                  "(Deep3DFace's) or small (a BatchNorm-free CNN for CPU runs).")
flags.DEFINE_string("vggface_path", None, "VGG-Face .h5 for --backbone=vgg16 (default: "
                    "<assets>/identity/vggface/).")
flags.DEFINE_string("resnet_weights", None, "Optional ImageNet no-top .h5 for resnet50.")
flags.DEFINE_integer("image_size", 224, "Side of the aligned crops.")
flags.DEFINE_enum("camera", "perspective", ["perspective", "orthographic"],
                  "Projection the crops were aligned for.")
flags.DEFINE_integer("batch_size", 16, "Global batch size (Deep3DFace: 16 per GPU step).")
flags.DEFINE_integer("steps", 100000, "Last training step.")
flags.DEFINE_float("learning_rate", 1e-4, "Adam learning rate (Deep3DFace: 1e-4).")
flags.DEFINE_integer("lr_decay_step", 60000, "Step at which the rate drops to "
                     "--learning_rate_late.")
flags.DEFINE_float("learning_rate_late", 2e-5, "Rate after --lr_decay_step (Deep3DFace: 2e-5).")
flags.DEFINE_float("clip_norm", 0.0, "Clip gradients by global norm (0: off, as Deep3DFace).")
flags.DEFINE_enum("identity_net", "faceres", ["faceres", "mobilefacenet", "vggface", "none"],
                  "Frozen face-recognition net of L_id (none drops L_id).")
flags.DEFINE_enum("landmark_convention", "2d", ["2d", "3d"],
                  "Jaw contour: 2d silhouette (PFLD/iBUG data) or fixed 3d vertices (FAN).")
flags.DEFINE_bool("augment", True, "Flip and colour-jitter training crops.")
_common.define_loop_flags("vertex-error")
define_coarse_loss_flags()



def build_objective(face_model):
    """The Eq. 6 objective (a Fitter used for its loss only)."""
    from recon_tf.fitting import Fitter
    from recon_tf.losses import weights_from_flags
    from recon_tf.nets.identity import make_identity_net

    overrides = {} if FLAGS.identity_net != "none" else {"id_weight": 0.0}
    weights = weights_from_flags(face_model, **overrides)
    identity = (make_identity_net(FLAGS.identity_net)
                if FLAGS.identity_net != "none" else None)
    return Fitter(face_model, weights, identity_net=identity, image_size=FLAGS.image_size,
                  camera_kind=FLAGS.camera, landmark_convention=FLAGS.landmark_convention)


def learning_rate(step):
    """Deep3DFace's piecewise-constant rate (``--learning_rate`` then ``_late``)."""
    import tensorflow as tf

    return tf.where(step < FLAGS.lr_decay_step, FLAGS.learning_rate, FLAGS.learning_rate_late)


class Trainer:
    """One training run (see the module docstring); ``run`` returns the last step."""

    def __init__(self, strategy, face_model, train_files, eval_files):
        import tensorflow as tf

        from recon_tf import coarse, training
        from recon_tf.nets import rnet

        self.tf, self.strategy, self.face_model = tf, strategy, face_model
        self.chief = training.is_chief(strategy)
        self.objective = build_objective(face_model)
        config = rnet.rnet_config(FLAGS.backbone, face_model.layout, FLAGS.image_size)
        self.meta = coarse.model_meta(face_model, config, FLAGS.camera)
        with strategy.scope():
            self.model = rnet.build_rnet(FLAGS.backbone, face_model.layout, FLAGS.image_size,
                                         exp_bounds=face_model.exp_bounds,
                                         vggface_path=FLAGS.vggface_path,
                                         resnet_weights=FLAGS.resnet_weights)
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
            self.optimizer = tf.keras.optimizers.Adam(
                learning_rate=lambda: learning_rate(self.step))
            self.optimizer.build(self.model.trainable_variables)
        self.stage = coarse.CoarseStage(self.model, self.objective)
        checkpoint = tf.train.Checkpoint(model=self.model, optimizer=self.optimizer,
                                         step=self.step)
        self.keeper = training.CheckpointKeeper(checkpoint, FLAGS.model_dir, self.meta, strategy,
                                                FLAGS.keep_checkpoints)
        restored = self.keeper.restore()
        if restored:
            logging.info("resumed from %s (step %d)", restored, int(self.step.numpy()))
        self.train_files, self.eval_files = train_files, eval_files
        self.train_step = coarse.make_train_step(self.stage, self.optimizer, strategy,
                                                 FLAGS.batch_size, FLAGS.clip_norm)
        log_dir = os.path.join(FLAGS.model_dir, "train")
        self.writer = (tf.summary.create_file_writer(log_dir) if self.chief
                       else tf.summary.create_noop_writer())

    def _summaries(self, step: int, out: dict, rate: float, preview, evals) -> None:
        tf = self.tf
        from recon_tf import coarse

        with self.writer.as_default(step=step):
            if step % FLAGS.summary_every == 0:
                _common.write_scalars(out, rate)
                tf.summary.scalar("learning_rate", learning_rate(self.step))
            if FLAGS.image_every and step % FLAGS.image_every == 0 and self.chief:
                tf.summary.image("input_render_overlay", self.stage.preview(preview))
            if evals is not None and FLAGS.eval_every and step % FLAGS.eval_every == 0:
                ours, mean = coarse.vertex_errors(self.model, self.face_model, evals)
                tf.summary.scalar("eval/vertex_error_mm", ours)
                tf.summary.scalar("eval/mean_face_vertex_error_mm", mean)
                logging.info("step %d: held-out vertex error %.3f mm (mean face %.3f mm)",
                             step, ours, mean)

    def run(self) -> int:
        from recon_tf import coarse, training
        from recon_tf.coarse import mark_landmark_source

        train, preview, evals = _common.datasets(
            self.strategy, int(self.step.numpy()), self.train_files, self.eval_files,
            ("vertices",), FLAGS.augment, mark_landmark_source)
        step = training.train_loop(
            self.train_step, iter(train), self.step, FLAGS.steps, FLAGS.batch_size,
            self.keeper, FLAGS.checkpoint_every, FLAGS.log_every_s,
            lambda step, out, rate: self._summaries(step, out, rate, preview, evals))
        if evals is not None:
            ours, mean = coarse.vertex_errors(self.model, self.face_model, evals)
            logging.info("final held-out vertex error %.3f mm (mean face %.3f mm)", ours, mean)
        if FLAGS.export:
            self.export()
        self.writer.flush()
        return step

    def export(self) -> str:
        from recon_tf.coarse import CoarseServing

        return _common.export(CoarseServing(self.model, self.objective), self.strategy,
                              self.meta)


def main(argv: list[str]) -> None:
    del argv
    _common.main(Trainer)


if __name__ == "__main__":
    app.run(main)
