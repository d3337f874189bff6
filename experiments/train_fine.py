"""Train the fine stage (paper §3.4): the albedo and depth displacement modules, Eq. 11–13.

    python experiments/train_fine.py --coarse_model=runs/coarse --model_dir=runs/fine
    python experiments/train_fine.py --coarse_model=runs/coarse --use_wavelet=false \\
        --model_dir=runs/fine_no_wavelet                       # a Table 5 ablation

The coarse stage is frozen: R-Net loaded from ``--coarse_model`` (a
``train_coarse.py`` run directory, checkpoint or SavedModel) predicts each
crop's coefficients; :class:`recon_tf.fine.FineStage` unwraps the input and
the coarse render into UV; the wavelet-perception albedo module (§3.4.2) and
the dual-branch depth displacement module (§3.4.3) predict the detailed
albedo map and the displacement map, rendered with detail normals under the
coarse SH light and trained with Eq. 11 (λ_pho 1.0, λ_id 0.8, λ_alb 1.0,
λ_smo 1.0; w_n = w_d = 0.001 in Eq. 13). Table 5 switches: ``--use_wavelet``,
``--use_displacement``, ``--use_albedo``.

Data, distribution, checkpoints (with ``run_meta.json``: resuming for another
face model or module configuration is refused), resume after a kill, the
NaN/Inf guard (exit code 3), progress and TensorBoard work as in
``train_coarse.py``. TensorBoard adds image grids (input | coarse shading |
fine render over the input | detail normals | displacement) and, on the
held-out synthetic set, the displacement error against the truth and against
the training set's mean displacement map (mm) and the correlation with the
truth. At the end, ``saved_model/`` (signature: aligned crop → coefficients,
albedo map, displacement in mm, normal map).

``--coarse_model=truth`` (ours, not the paper's): the coarse coefficients are the
synthetic records' true ones, so the modules learn detail on a correct coarse face
instead of learning to make up for a coarse network's errors. Only training records
that carry ``coeffs`` are used (on the default data: the synthetic set, not the
photos), without augmentation (a flip or crop would break the coefficients). There is
no coarse network to export, so no SavedModel is written; the main job takes the
modules from the run directory (``tools/reconstruct.py --fine_model=<model_dir>``) and
applies them to the coefficients it fits, which is what such modules are for.

Defaults where the paper is silent (its §4.1 is cut): batch 8, Adam 1e-4, UV
maps 256², the wavelet encoder reading the input unwrapped into UV.
"""

from __future__ import annotations

import os
import sys

import numpy as np
from absl import app, flags, logging

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import _common  # noqa: E402  (experiments/_common.py: what the training scripts share)

from recon_tf.losses import define_fine_loss_flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("model_dir", "runs/fine", "Run directory: checkpoints, TensorBoard logs, "
                    "run_meta.json, saved_model/.")
flags.DEFINE_string("coarse_model", "runs/coarse", "The frozen coarse stage: a "
                    "train_coarse.py run directory, checkpoint or SavedModel; or 'truth': "
                    "the true coefficients of synthetic training records (module docstring).")
flags.DEFINE_list("data", [], "Training TFRecord globs (default: the default data set).")
flags.DEFINE_list("eval_data", [], "Held-out TFRecord globs with the synthetic truth "
                  "'displacement' (default: the default held-out synthetic set).")
flags.DEFINE_integer("image_size", 224, "Side of the aligned crops.")
flags.DEFINE_enum("camera", "perspective", ["perspective", "orthographic"],
                  "Projection the crops were aligned for.")
flags.DEFINE_integer("uv_size", 256, "Side of the UV maps the modules predict.")
flags.DEFINE_bool("use_wavelet", True, "Table 5: the Haar wavelet perception encoder (false: a "
                  "learned stride-2 convolution in its place).")
flags.DEFINE_bool("use_albedo", True, "Table 5: the albedo module (false: the coarse albedo).")
flags.DEFINE_bool("use_displacement", True, "Table 5: the depth displacement module (false: "
                  "no displacement).")
flags.DEFINE_bool("include_ll", False, "Feed the wavelet's LL band too (the paper drops it).")
flags.DEFINE_enum("wavelet_source", "uv", ["uv", "crop"], "What the wavelet encoder reads: the "
                  "input unwrapped into UV (ours) or the aligned crop.")
flags.DEFINE_integer("base_filters", 16, "Channels of the modules' first level (README: "
                     "16 keeps learned inference under 300 ms on 2 CPU cores).")
flags.DEFINE_integer("depth", 4, "Encoder levels of the modules.")
flags.DEFINE_integer("batch_size", 8, "Global batch size.")
flags.DEFINE_integer("steps", 50000, "Last training step.")
flags.DEFINE_float("learning_rate", 1e-4, "Adam learning rate.")
flags.DEFINE_float("clip_norm", 0.0, "Clip gradients by global norm (0: off).")
flags.DEFINE_enum("identity_net", "faceres", ["faceres", "mobilefacenet", "vggface", "none"],
                  "Frozen face-recognition net of L_id (none drops L_id).")
_common.define_loop_flags("displacement")
define_fine_loss_flags()

TERMS = ("total", "pho", "id", "alb", "smo")
TRUTH = "truth"  # --coarse_model: the synthetic records' own coefficients
PREVIEW_DISPLACEMENT_DM = 0.01  # ±1 mm spans black to white in the preview


def mean_displacement(files: list[str], size: int, limit: int = 256) -> np.ndarray | None:
    """The training set's mean truth displacement map ([size, size, 1], dm), or None."""
    import tensorflow as tf

    from recon_tf.data.tfrecord import list_extra_names, parse_example

    synthetic = [f for f in files if "displacement" in list_extra_names(f)]
    if not synthetic:
        return None
    ds = tf.data.TFRecordDataset(synthetic).take(limit).map(
        lambda s: parse_example(s, None, ("displacement",))["displacement"])
    maps = [tf.image.resize(d, [size, size]).numpy() for d in ds]
    return np.mean(maps, axis=0)


def truth_files(files: list[str]) -> list[str]:
    """The training files whose records carry the true coefficients (``coeffs``)."""
    from recon_tf.data.tfrecord import list_extra_names

    kept = [f for f in files if "coeffs" in list_extra_names(f)]
    if not kept:
        raise app.UsageError("--coarse_model=truth needs training records with true "
                             "coefficients (the synthetic set, tools/make_synthetic.py)")
    return kept


class FineTrainer:
    """One fine-stage run; ``run`` returns the last step."""

    def __init__(self, strategy, face_model, train_files, eval_files):
        import tensorflow as tf

        from recon_tf import coarse, fine, training
        from recon_tf.losses import fine_weights_from_flags
        from recon_tf.nets.identity import make_identity_net

        if not (FLAGS.use_albedo or FLAGS.use_displacement):
            raise app.UsageError("nothing to train: --use_albedo and --use_displacement are "
                                 "both false (evaluate that ablation with fitting instead)")
        self.tf, self.strategy, self.face_model = tf, strategy, face_model
        self.chief = training.is_chief(strategy)
        self.coarse_model, coarse_meta = None, {"rnet": "truth"}
        if FLAGS.coarse_model == TRUTH:
            train_files = truth_files(train_files)
        else:
            try:
                self.coarse_model, coarse_meta = coarse.load_coarse_model(
                    FLAGS.coarse_model, face_model, FLAGS.camera)
            except FileNotFoundError as err:
                raise app.UsageError(f"{err}. Train the coarse stage first (experiments/"
                                     "train_coarse.py) or pass --coarse_model") from err
        identity = (make_identity_net(FLAGS.identity_net)
                    if FLAGS.identity_net != "none" else None)
        weights = fine_weights_from_flags(
            **({} if identity is not None else {"id_weight": 0.0}))
        self.stage = fine.FineStage(face_model, FLAGS.uv_size, FLAGS.image_size, FLAGS.camera,
                                    weights, identity, FLAGS.wavelet_source)
        config = fine.module_config(FLAGS.uv_size, FLAGS.use_wavelet, FLAGS.use_albedo,
                                    FLAGS.use_displacement, FLAGS.include_ll,
                                    FLAGS.wavelet_source, FLAGS.base_filters, FLAGS.depth)
        self.meta = {"stage": "fine", "face_model": face_model.name,
                     "geometry_hash": face_model.geometry_hash, "camera": FLAGS.camera,
                     "fine": config, "coarse": coarse_meta.get("rnet")}
        with strategy.scope():
            self.albedo, self.disp = fine.build_modules(config)
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
            self.optimizer = tf.keras.optimizers.Adam(FLAGS.learning_rate)
            self.optimizer.build(self.variables())
        checkpoint = fine.module_checkpoint(self.albedo, self.disp, optimizer=self.optimizer,
                                            step=self.step)
        self.keeper = training.CheckpointKeeper(checkpoint, FLAGS.model_dir, self.meta, strategy,
                                                FLAGS.keep_checkpoints)
        restored = self.keeper.restore()
        if restored:
            logging.info("resumed from %s (step %d)", restored, int(self.step.numpy()))
        self.train_files, self.eval_files = train_files, eval_files
        self.train_step = training.make_distributed_step(
            lambda batch: self.forward(batch, True)[1], self.variables, self.optimizer,
            strategy, FLAGS.batch_size, TERMS, FLAGS.clip_norm)
        self.writer = (tf.summary.create_file_writer(os.path.join(FLAGS.model_dir, "train"))
                       if self.chief else tf.summary.create_noop_writer())
        self.mean_disp = mean_displacement(train_files, FLAGS.uv_size)

    def variables(self) -> list:
        modules = [m for m in (self.albedo, self.disp) if m is not None]
        return [v for m in modules for v in m.trainable_variables]

    def forward(self, batch: dict, training: bool):
        """(inputs, Eq. 11 terms, outputs) of a batch."""
        images = batch["image"]
        if self.coarse_model is None:  # --coarse_model=truth
            coeffs = batch["coeffs"]
        else:
            coeffs = self.tf.stop_gradient(self.coarse_model(images, training=False))
        inputs = self.stage.prepare(coeffs, images)
        albedo, disp = self.stage.predict(inputs, self.albedo, self.disp, training=training)
        outputs = self.stage.render(inputs, albedo, disp)
        terms = self.stage.terms(inputs, outputs, images, batch["mask"],
                                 self.stage.id_target(images))
        return inputs, terms, outputs

    def preview(self, batch: dict) -> np.ndarray:
        """uint8 [1, 4·S, 5·S, 3]: input | coarse shading | fine render | normals | displacement."""
        from recon_tf.training import image_row, to_uint8

        tf = self.tf
        inputs, _, out = self.forward({k: v[:4] for k, v in batch.items()}, False)
        coarse = self.stage.render(inputs, inputs.coarse_albedo,
                                   tf.zeros_like(inputs.visible)).image
        size = [FLAGS.image_size] * 2
        normals = tf.image.resize((out.detail_normals + 1.0) / 2.0 * inputs.uv_mask, size)
        disp = tf.clip_by_value(out.displacement / PREVIEW_DISPLACEMENT_DM * 0.5 + 0.5, 0, 1)
        disp = tf.image.resize(tf.tile(disp * inputs.uv_mask, [1, 1, 1, 3]), size)
        front = inputs.front
        fine = front * out.image + (1.0 - front) * batch["image"][:4]
        rows = [image_row(*(to_uint8(x[i]) for x in (batch["image"], coarse, fine, normals,
                                                      disp)))
                for i in range(int(front.shape[0]))]
        return np.concatenate(rows, axis=0)[None]

    def evaluate(self, evals) -> dict:
        """Held-out displacement error (mm) and correlation vs the truth, and the
        error of the training set's mean displacement map."""
        from recon_tf.fine import displacement_error_mm

        tf = self.tf
        ours, base, corr = [], [], []
        for batch in evals:
            inputs, _, out = self.forward(batch, False)
            truth = batch["displacement"]
            pred = tf.image.resize(out.displacement, truth.shape[1:3]).numpy()
            mask = tf.image.resize(inputs.visible, truth.shape[1:3]).numpy() > 0.5
            for i in range(pred.shape[0]):
                err, c = displacement_error_mm(pred[i], truth[i].numpy(), mask[i])
                ours.append(err)
                corr.append(c)
                if self.mean_disp is not None:
                    mean = tf.image.resize(self.mean_disp, truth.shape[1:3]).numpy()
                    base.append(displacement_error_mm(mean, truth[i].numpy(), mask[i])[0])
        return {"displacement_error_mm": float(np.mean(ours)),
                "displacement_correlation": float(np.mean(corr)),
                "mean_map_error_mm": float(np.mean(base)) if base else float("nan")}

    def _summaries(self, step: int, out: dict, rate: float, preview, evals) -> None:
        tf = self.tf
        with self.writer.as_default(step=step):
            if step % FLAGS.summary_every == 0:
                _common.write_scalars(out, rate)
            if FLAGS.image_every and step % FLAGS.image_every == 0 and self.chief:
                tf.summary.image("input_coarse_fine_normals_displacement", self.preview(preview))
            if evals is not None and FLAGS.eval_every and step % FLAGS.eval_every == 0:
                result = self.evaluate(evals)
                for key, value in result.items():
                    tf.summary.scalar(f"eval/{key}", value)
                logging.info("step %d: held-out %s", step, result)

    def run(self) -> int:
        from recon_tf import training

        truth = self.coarse_model is None
        train, preview, evals = _common.datasets(
            self.strategy, int(self.step.numpy()), self.train_files, self.eval_files,
            ("displacement", "coeffs") if truth else ("displacement",),
            augment=not truth, train_extra=("coeffs",) if truth else ())
        step = training.train_loop(
            self.train_step, iter(train), self.step, FLAGS.steps, FLAGS.batch_size,
            self.keeper, FLAGS.checkpoint_every, FLAGS.log_every_s,
            lambda step, out, rate: self._summaries(step, out, rate, preview, evals))
        if evals is not None:
            logging.info("final held-out %s", self.evaluate(evals))
        if FLAGS.export and self.coarse_model is not None:
            self.export()
        elif FLAGS.export:
            logging.info("no SavedModel with --coarse_model=truth (no coarse network); "
                         "use the modules with tools/reconstruct.py --fine_model=%s",
                         FLAGS.model_dir)
        self.writer.flush()
        return step

    def export(self) -> str:
        from recon_tf.fine import FineServing

        return _common.export(FineServing(self.coarse_model, self.stage, self.albedo,
                                          self.disp), self.strategy, self.meta)


def main(argv: list[str]) -> None:
    del argv
    _common.main(FineTrainer)


if __name__ == "__main__":
    app.run(main)
