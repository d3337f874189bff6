"""Training machinery shared by the coarse (R-Net) and fine stages.

* **Distribution** (:func:`make_strategy`): ``MirroredStrategy`` on one machine
  (every local GPU, or the CPU), ``MultiWorkerMirroredStrategy`` across
  machines when ``TF_CONFIG`` describes a cluster. Batches reach the strategy
  without string tensors (:func:`strip_strings`): paths and subject names stay
  on the host.
* **Checkpoints** (:class:`CheckpointKeeper`): ``tf.train.CheckpointManager``
  in the run directory, plus ``run_meta.json`` that records what the
  checkpoint holds (face model, its geometry hash, coefficient layout,
  backbone). Resuming a run, or loading its model, for another face model or
  layout is refused with :class:`CheckpointMismatchError`. Under multi-worker
  training only the chief writes to the run directory; the other workers save
  into temporary directories (the saves are collective), deleted afterwards.
* **NaN/Inf guard** (:func:`check_finite`): a step whose loss or gradient norm
  is not finite stops the run with :class:`NonFiniteLossError` *before* any
  further checkpoint is written, so the last good checkpoint stays intact.
* **Progress** (:class:`Progress`): absl log lines with step, loss, images/s
  and ETA.
* **Image summaries** (:func:`draw_points`, :func:`image_row`): uint8 grids
  for TensorBoard.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping

import numpy as np
import tensorflow as tf
from absl import logging

META_FILE = "run_meta.json"
STRATEGIES = ("auto", "default", "mirrored", "multi_worker")


class CheckpointMismatchError(ValueError):
    """A checkpoint was made for another face model, layout or network."""


class NonFiniteLossError(FloatingPointError):
    """A training step produced a NaN or Inf loss or gradient."""


# --------------------------------------------------------------- distribution
def make_strategy(kind: str = "auto") -> tf.distribute.Strategy:
    """The distribution strategy for ``kind``.

    ``auto``: ``multi_worker`` when ``TF_CONFIG`` names a cluster with more
    than one task, else ``mirrored``. ``default``: no distribution (the
    default strategy). Create it before any other TensorFlow work: the
    multi-worker strategy must start its collective runtime first.
    """
    if kind not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {kind!r}")
    if kind == "auto":
        cluster = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
        tasks = sum(len(v) for v in cluster.values())
        kind = "multi_worker" if tasks > 1 else "mirrored"
    if kind == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if kind == "mirrored":
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def task_info(strategy: tf.distribute.Strategy) -> tuple[str | None, int]:
    """(task type, task id) of this process; (None, 0) without a cluster."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return None, 0
    return resolver.task_type, int(resolver.task_id or 0)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True for the process that writes checkpoints, summaries and exports."""
    task_type, task_id = task_info(strategy)
    if task_type is None or task_type == "chief":
        return True
    cluster = strategy.cluster_resolver.cluster_spec().as_dict()
    return task_type == "worker" and task_id == 0 and "chief" not in cluster


def strip_strings(batch: Mapping[str, tf.Tensor]) -> dict:
    """``batch`` without its string tensors (paths, subject names): strategies
    cannot split strings across replicas."""
    return {k: v for k, v in batch.items() if v.dtype != tf.string}


# ---------------------------------------------------------------- checkpoints
def write_meta(run_dir: str, meta: Mapping) -> None:
    """Write ``run_meta.json`` (what the run's checkpoints hold)."""
    os.makedirs(run_dir, exist_ok=True)
    tmp = os.path.join(run_dir, META_FILE + ".tmp")
    with open(tmp, "w") as f:
        json.dump(dict(meta), f, indent=2, sort_keys=True)
    os.replace(tmp, os.path.join(run_dir, META_FILE))


def read_meta(run_dir: str) -> dict | None:
    """The run's ``run_meta.json``, or None when it has none."""
    path = os.path.join(run_dir, META_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def check_meta(found: Mapping, expected: Mapping, where: str,
               keys: tuple[str, ...] | None = None) -> None:
    """Refuse a checkpoint whose ``keys`` (default: all expected) differ.

    Raises:
      CheckpointMismatchError: naming every differing key, both values and
        the run directory.
    """
    keys = tuple(expected) if keys is None else keys
    diffs = [f"{k}: checkpoint has {found.get(k)!r}, this run wants {expected.get(k)!r}"
             for k in keys if found.get(k) != expected.get(k)]
    if diffs:
        raise CheckpointMismatchError(
            f"the checkpoint in {where} was made for another setup ({'; '.join(diffs)}). "
            "Use a new --model_dir, or the face model / flags it was trained with.")


class CheckpointKeeper:
    """A ``tf.train.CheckpointManager`` that records and checks ``run_meta.json``.

    Args:
      checkpoint: the ``tf.train.Checkpoint`` to save and restore.
      run_dir: the run directory (checkpoints, meta, TensorBoard logs).
      meta: what the checkpoint holds (JSON-serialisable); on resume the
        stored meta must agree on ``check_keys``.
      strategy: the distribution strategy (only the chief writes ``run_dir``).
      max_to_keep: checkpoints kept.
      check_keys: meta keys that must match to resume (default: all).
    """

    def __init__(self, checkpoint: tf.train.Checkpoint, run_dir: str, meta: Mapping,
                 strategy: tf.distribute.Strategy, max_to_keep: int = 3,
                 check_keys: tuple[str, ...] | None = None):
        self.checkpoint = checkpoint
        self.run_dir = run_dir
        self.chief = is_chief(strategy)
        task_type, task_id = task_info(strategy)
        self.directory = (run_dir if self.chief
                          else os.path.join(run_dir, f"workertemp_{task_type}_{task_id}"))
        stored = read_meta(run_dir)
        if stored is not None:
            check_meta(stored, meta, run_dir, check_keys)
        elif self.chief:
            write_meta(run_dir, meta)
        self.manager = tf.train.CheckpointManager(checkpoint, self.directory, max_to_keep)

    def restore(self) -> str | None:
        """Restore the run's latest checkpoint (the chief's); return its path or None."""
        latest = tf.train.latest_checkpoint(self.run_dir)
        if latest is not None:
            self.checkpoint.restore(latest).expect_partial()
        return latest

    def save(self, step: int) -> str:
        """Save at ``step`` (collective under multi-worker: call on every worker)."""
        path = self.manager.save(checkpoint_number=step)
        if not self.chief:
            shutil.rmtree(self.directory, ignore_errors=True)
        return path


# ------------------------------------------------------------------ guards
def check_finite(step: int, loss: float, grad_norm: float) -> None:
    """Raise :class:`NonFiniteLossError` when ``loss`` or ``grad_norm`` is NaN/Inf."""
    if not (np.isfinite(loss) and np.isfinite(grad_norm)):
        raise NonFiniteLossError(
            f"step {step}: loss {loss}, gradient norm {grad_norm} is not finite; the run "
            "stops here and its last checkpoint (written before this step) is kept. Lower "
            "the learning rate or check the data (e.g. NaN landmarks).")


# ---------------------------------------------------------------- progress
class Progress:
    """Logs ``step/total, loss, images/s, ETA`` at most every ``every_s`` seconds.

    Args:
      total_steps: the run's last step.
      batch_size: global images per step.
      start_step: the step the run (re)starts from.
      every_s: seconds between lines.
    """

    def __init__(self, total_steps: int, batch_size: int, start_step: int = 0,
                 every_s: float = 10.0):
        self.total, self.batch, self.every = total_steps, batch_size, every_s
        self.start_step, self.start = start_step, time.time()
        self.last = 0.0

    def rate(self, step: int) -> float:
        """Images per second since the (re)start."""
        return (step - self.start_step) * self.batch / max(time.time() - self.start, 1e-9)

    def update(self, step: int, loss: float, force: bool = False) -> None:
        now = time.time()
        if not force and now - self.last < self.every:
            return
        self.last = now
        rate = self.rate(step)
        eta = (self.total - step) * self.batch / max(rate, 1e-9)
        logging.info("step %d/%d  loss %.4f  %.2f img/s  ETA %s", step, self.total, loss, rate,
                     time.strftime("%H:%M:%S", time.gmtime(eta)))


# -------------------------------------------------------------------- step
def make_distributed_step(terms_fn: Callable[[dict], dict], variables: Callable[[], list],
                          optimizer, strategy: tf.distribute.Strategy, global_batch: int,
                          keys: tuple[str, ...], clip_norm: float = 0.0) -> Callable:
    """A ``tf.function`` (distributed batch) → dict of float32 scalars.

    Each replica computes ``terms_fn(batch)`` (a dict of float32 [b] per-example
    terms, with ``total``) on its share of the batch; the loss is the mean of
    ``total`` over the *global* batch, and the optimizer sums the replicas'
    gradients of ``variables()``. Returns the global means of ``keys`` and
    ``grad_norm``: the mean over replicas of each replica's gradient norm
    before clipping (the global norm with one replica; with several it is
    only a scale, but a NaN/Inf anywhere shows, which is what the guard
    needs). ``clip_norm`` > 0 clips each replica's gradient by its global
    norm, so with N replicas the effective threshold on the summed gradient
    is up to N × ``clip_norm``. BatchNorm statistics are per replica (Keras
    applications use unsynchronised BatchNorm); the chief's are checkpointed.
    """
    replicas = strategy.num_replicas_in_sync

    def replica_step(batch):
        with tf.GradientTape() as tape:
            terms = terms_fn(batch)
            loss = tf.nn.compute_average_loss(terms["total"], global_batch_size=global_batch)
        trainable = variables()
        grads = tape.gradient(loss, trainable)
        norm = tf.linalg.global_norm(grads)
        if clip_norm > 0:
            grads, _ = tf.clip_by_global_norm(grads, clip_norm, use_norm=norm)
        optimizer.apply_gradients(zip(grads, trainable))
        out = {k: tf.nn.compute_average_loss(terms[k], global_batch_size=global_batch)
               for k in keys}
        out["grad_norm"] = norm / replicas
        return out

    @tf.function
    def step(dist_batch):
        per_replica = strategy.run(replica_step, args=(dist_batch,))
        return {k: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)
                for k, v in per_replica.items()}

    return step


# -------------------------------------------------------------------- loop
def train_loop(train_step: Callable, iterator: Iterator, step_var: tf.Variable,
               total_steps: int, batch_size: int, keeper: CheckpointKeeper,
               checkpoint_every: int, log_every_s: float = 10.0,
               on_step: Callable[[int, dict, float], None] | None = None) -> int:
    """Run ``train_step`` from ``step_var`` to ``total_steps``; return the last step.

    Each step's outputs (a dict of scalars with at least ``total`` and
    ``grad_norm``) pass the NaN/Inf guard before anything else happens: a
    non-finite step raises :class:`NonFiniteLossError` (as does a NaN caught
    by a ``check_numerics`` inside the step) and no checkpoint is written
    after it. Then ``step_var`` advances, progress is logged, ``on_step(step,
    outputs, images_per_second)`` runs (summaries, evaluation) and every
    ``checkpoint_every`` steps (and at the end) a checkpoint is saved.
    """
    step = int(step_var.numpy())
    progress = Progress(total_steps, batch_size, step, log_every_s)
    while step < total_steps:
        try:
            out = {k: float(v) for k, v in train_step(next(iterator)).items()}
        except tf.errors.InvalidArgumentError as err:
            raise NonFiniteLossError(f"step {step + 1}: {err.message}") from err
        step += 1
        check_finite(step, out["total"], out["grad_norm"])
        step_var.assign(step)
        progress.update(step, out["total"], force=step == total_steps)
        if on_step is not None:
            on_step(step, out, progress.rate(step))
        if step % checkpoint_every == 0 or step == total_steps:
            keeper.save(step)
    return step


def export_path(run_dir: str, strategy: tf.distribute.Strategy, name: str = "saved_model"
                ) -> str:
    """Where this process writes an export: ``<run_dir>/<name>`` on the chief, a
    temporary directory elsewhere (exports are collective; delete it after)."""
    if is_chief(strategy):
        return os.path.join(run_dir, name)
    task_type, task_id = task_info(strategy)
    return os.path.join(run_dir, f"{name}_temp_{task_type}_{task_id}")


def save_module(module: tf.Module, path: str, meta: Mapping) -> str:
    """``tf.saved_model.save`` a module with its ``serve`` function as
    ``serving_default``, and ``run_meta.json`` beside it."""
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve})
    with open(os.path.join(path, META_FILE), "w") as f:
        json.dump(dict(meta), f, indent=2, sort_keys=True)
    return path


# --------------------------------------------------------------- summaries
def to_uint8(image) -> np.ndarray:
    """float [0, 1] → uint8 [0, 255]."""
    return np.clip(np.round(np.asarray(image, np.float32) * 255.0), 0, 255).astype(np.uint8)


def draw_points(image: np.ndarray, points: np.ndarray, color: tuple[int, int, int],
                radius: int = 1) -> np.ndarray:
    """Draw square dots on a copy of ``image``.

    Args:
      image: uint8 [H, W, 3].
      points: float [P, 2] (x, y) pixels, centres at integers; NaN points skipped.
      color: RGB 0–255.
      radius: half side of each dot in pixels.
    Returns:
      uint8 [H, W, 3].
    """
    out = np.array(image, copy=True)
    h, w = out.shape[:2]
    for x, y in np.asarray(points, np.float64):
        if not (np.isfinite(x) and np.isfinite(y)):
            continue
        cx, cy = int(round(x)), int(round(y))
        out[max(cy - radius, 0):min(cy + radius + 1, h),
            max(cx - radius, 0):min(cx + radius + 1, w)] = color
    return out


def image_row(*images: np.ndarray) -> np.ndarray:
    """Concatenate same-height uint8 [H, W, 3] images side by side."""
    return np.concatenate(images, axis=1)
