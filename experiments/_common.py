"""What the training scripts (``train_coarse.py``, ``train_fine.py``) share.

Each script defines its data and model flags (``data``, ``eval_data``, ``image_size``,
``camera``, ``batch_size``, ``model_dir``, ...), gets the loop, checkpoint, summary and
export flags from :func:`define_loop_flags`, and defines a trainer class
``Trainer(strategy, face_model, train_files, eval_files)`` with ``run() -> last step``;
:func:`main` runs it.
"""

from __future__ import annotations

import sys
import time

from absl import app, flags, logging

FLAGS = flags.FLAGS
EXIT_NON_FINITE = 3


def define_loop_flags(eval_metric: str) -> None:
    """The flags both training scripts share: seed, strategy, checkpoints, summaries,
    held-out evaluation (``eval_metric`` names what it measures), progress, export,
    the default data's size, the face model and the assets root."""
    from recon_tf.training import STRATEGIES

    flags.DEFINE_integer("seed", 0, "Seed of data order and augmentation (-1: none).")
    flags.DEFINE_enum("strategy", "auto", list(STRATEGIES), "Distribution strategy.")
    flags.DEFINE_integer("checkpoint_every", 500, "Steps between checkpoints.")
    flags.DEFINE_integer("keep_checkpoints", 3, "Checkpoints kept.")
    flags.DEFINE_integer("summary_every", 20, "Steps between TensorBoard scalars.")
    flags.DEFINE_integer("image_every", 500, "Steps between TensorBoard image grids.")
    flags.DEFINE_integer("eval_every", 1000,
                         f"Steps between held-out {eval_metric} evaluations.")
    flags.DEFINE_integer("eval_batches", 8, "Batches of the held-out set per evaluation.")
    flags.DEFINE_float("log_every_s", 10.0, "Seconds between progress lines.")
    flags.DEFINE_bool("export", True, "Write <model_dir>/saved_model at the end.")
    flags.DEFINE_integer("default_train_num", 512,
                         "Synthetic faces in the default training set.")
    flags.DEFINE_integer("default_eval_num", 64, "Synthetic faces in the default held-out set.")
    flags.DEFINE_string("face_model", None, "recon_tf face-model .npz (default: ICT-FaceKit).")
    flags.DEFINE_string("assets_dir", None, "Assets root (default: $RECON_TF_ASSETS or "
                        "../shared/assets).")


def training_files(face_model) -> tuple[list[str], list[str]]:
    """(training files, held-out files): the flags' globs, or the default data."""
    from recon_tf.data import default_sets

    try:
        return default_sets.training_files(FLAGS.data, FLAGS.eval_data, face_model,
                                           FLAGS.image_size, FLAGS.camera, FLAGS.face_model,
                                           FLAGS.default_train_num, FLAGS.default_eval_num)
    except (FileNotFoundError, ValueError) as err:
        raise app.UsageError(str(err)) from err


def datasets(strategy, start_step: int, train_files: list[str], eval_files: list[str],
             eval_extra: tuple[str, ...], augment: bool = True, mark=None,
             train_extra: tuple[str, ...] = ()):
    """(distributed training batches, a 4-example preview batch, held-out batches or None).

    ``mark`` maps parsed examples before their strings are dropped (e.g. the
    landmark source); ``eval_extra`` is the truth the held-out set must carry,
    ``train_extra`` the truth the training set must carry.
    """
    from recon_tf.data.pipeline import make_dataset
    from recon_tf.training import strip_strings

    replicas = strategy.num_replicas_in_sync
    if FLAGS.batch_size % replicas:
        raise app.UsageError(f"--batch_size={FLAGS.batch_size} is not a multiple of the "
                             f"{replicas} replicas")
    seed = None if FLAGS.seed < 0 else FLAGS.seed + start_step
    mark = mark or (lambda example: example)

    def make(context):
        ds = make_dataset(train_files, context.get_per_replica_batch_size(FLAGS.batch_size),
                          training=True, image_size=FLAGS.image_size, augment=augment,
                          seed=seed, input_context=context, extra_names=train_extra)
        return ds.map(mark).map(strip_strings)

    train = strategy.distribute_datasets_from_function(make)
    preview = next(iter(make_dataset(train_files, 4, training=False, image_size=FLAGS.image_size,
                                     extra_names=train_extra).map(mark)))
    evals = None
    if eval_files:
        evals = make_dataset(eval_files, 8, training=False, image_size=FLAGS.image_size,
                             extra_names=eval_extra).take(FLAGS.eval_batches)
    return train, preview, evals


def write_scalars(out: dict, rate: float) -> None:
    """The step's loss terms (``loss/<term>``), ``grad_norm`` and images/s, inside a
    ``writer.as_default(step=...)`` block."""
    import tensorflow as tf

    for key, value in out.items():
        tf.summary.scalar(f"loss/{key}" if key != "grad_norm" else key, value)
    tf.summary.scalar("images_per_second", rate)


def export(module, strategy, meta: dict) -> str:
    """Save ``module`` (with its ``serve`` signature) under ``<model_dir>/saved_model``.

    Saving is collective under multi-worker training: the other workers save to
    a temporary directory, deleted at once."""
    import shutil

    from recon_tf import training

    path = training.export_path(FLAGS.model_dir, strategy)
    training.save_module(module, path, meta)
    if training.is_chief(strategy):
        logging.info("exported %s", path)
    else:
        shutil.rmtree(path, ignore_errors=True)
    return path


def main(trainer_cls) -> None:
    """Strategy first (it starts the collective runtime), then face model, data and run;
    a NaN/Inf loss exits with :data:`EXIT_NON_FINITE`."""
    from recon_tf import training

    strategy = training.make_strategy(FLAGS.strategy)
    from bfm import load_default_face_model
    from recon_tf import assets
    from recon_tf.face_model import load_face_model

    if FLAGS.assets_dir:
        assets.set_assets_dir(FLAGS.assets_dir)
    face_model = (load_face_model(FLAGS.face_model) if FLAGS.face_model
                  else load_default_face_model())
    train_files, eval_files = training_files(face_model)
    logging.info("%d training shards, %d held-out shards, %d replicas", len(train_files),
                 len(eval_files), strategy.num_replicas_in_sync)
    start = time.time()
    trainer = trainer_cls(strategy, face_model, train_files, eval_files)
    try:
        step = trainer.run()
    except training.NonFiniteLossError as e:
        logging.error("%s", e)
        sys.exit(EXIT_NON_FINITE)
    logging.info("finished at step %d in %.0f s", step, time.time() - start)
