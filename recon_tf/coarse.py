"""The learned coarse stage (paper §3.3): R-Net → coefficients → Eq. 6.

:class:`CoarseStage` ties an R-Net (:mod:`recon_tf.nets.rnet`) to the one
Eq. 6 objective that per-photo fitting also uses
(:meth:`recon_tf.fitting.Fitter.objective`): L_pho (Eq. 7) over the skin mask
∩ the rendered front face, L_lmk (Eq. 8), L_id (Eq. 9) and L_reg (Eq. 10).
:func:`make_train_step` builds a distributed training step;
:func:`vertex_errors` scores predictions on held-out synthetic faces;
:class:`CoarseServing` / :func:`export_saved_model` write a SavedModel whose
serving signature maps aligned crops to coefficients, vertices and the 68
landmarks; :func:`load_coarse_model` loads a SavedModel or a training
checkpoint for the main job.

Images are aligned crops (:mod:`recon_tf.preprocess.align`), float32
[B, S, S, 3] RGB in [0, 1]; landmarks are crop pixels (centres at integers).
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from recon_tf.camera import PIXEL_CENTER
from recon_tf.face_model import FaceModel
from recon_tf.fit_data import FitData
from recon_tf.fitting import Fitter
from recon_tf.landmarks import NUM_LANDMARKS
from recon_tf.metrics import rigid_vertex_error_mm
from recon_tf.training import META_FILE, check_meta, read_meta, to_uint8

DM_TO_MM = 100.0
SYNTHETIC_SOURCE = "synthetic/"  # source_path prefix of recon_tf.data.synthetic records
TERMS = ("total", "pho", "lmk", "id", "reg")


def model_meta(face_model: FaceModel, rnet_config: dict, camera_kind: str) -> dict:
    """What a coarse checkpoint or SavedModel holds (``run_meta.json``)."""
    return {"stage": "coarse", "face_model": face_model.name,
            "geometry_hash": face_model.geometry_hash, "camera": camera_kind,
            "rnet": dict(rnet_config)}


class CoarseStage:
    """R-Net + the Eq. 6 objective.

    Args:
      model: R-Net, float32 [B, S, S, 3] in [0, 1] → [B, total] coefficients.
      objective: a :class:`recon_tf.fitting.Fitter` for the same face model
        (its loss weights, identity net, camera and landmark convention are
        used; its optimisation schedule is not).
      landmark_weights: float [68] per-point weights of L_lmk (default 1).
    """

    def __init__(self, model: tf.keras.Model, objective: Fitter,
                 landmark_weights: np.ndarray | None = None):
        self.model = model
        self.objective = objective
        self.face_model = objective.face_model
        self.image_size = objective.image_size
        lw = np.ones(NUM_LANDMARKS, np.float32) if landmark_weights is None else landmark_weights
        self.landmark_weights = tf.constant(np.asarray(lw, np.float32))

    def fit_data(self, batch: dict) -> FitData:
        """A training batch (``image``, ``landmarks`` with integer pixel centres as
        stored, ``mask``, optional ``fixed_jaw``) as :class:`FitData`."""
        images = batch["image"]
        lw = tf.tile(self.landmark_weights[None], [tf.shape(images)[0], 1])
        return FitData(images, batch["landmarks"] + PIXEL_CENTER, batch["mask"], lw,
                       fixed_jaw=batch.get("fixed_jaw"))

    def terms(self, batch: dict, training: bool) -> tuple[tf.Tensor, dict]:
        """(coefficients float32 [B, total], Eq. 6 terms: dict of float32 [B])."""
        coeffs = self.model(batch["image"], training=training)
        data = self.fit_data(batch)
        net = self.objective.identity_net
        id_target = None if net is None else tf.stop_gradient(net(data.images))
        terms = self.objective.objective(self.objective.split(coeffs), data, self.image_size,
                                         True, net is not None, id_target)
        return coeffs, terms

    def preview(self, batch: dict, count: int = 4) -> np.ndarray:
        """A TensorBoard image: one row per example, input | render | overlay.

        The overlay is the render composited over the input with the target
        landmarks in green and the predicted ones in red.

        Returns:
          uint8 [1, count·S, 3·S, 3].
        """
        from recon_tf.training import draw_points, image_row

        images = batch["image"][:count]
        params = self.objective.split(self.model(images, training=False))
        camera = self.objective.camera(self.image_size)
        fixed = batch.get("fixed_jaw")
        _, cam_v, normals, _, lmk = self.objective.geometry(
            params, camera, None if fixed is None else fixed[:count])
        lmk = lmk - PIXEL_CENTER
        rendered, covered = self.objective.render_front(params, camera, cam_v, normals)
        comp = covered * rendered + (1.0 - covered) * images
        rows = []
        for i in range(int(images.shape[0])):
            overlay = draw_points(to_uint8(comp[i]), batch["landmarks"][i].numpy(), (0, 255, 0))
            overlay = draw_points(overlay, lmk[i].numpy(), (255, 0, 0))
            rows.append(image_row(to_uint8(images[i]), to_uint8(rendered[i] * covered[i]),
                                  overlay))
        return np.concatenate(rows, axis=0)[None]


def mark_landmark_source(example: dict) -> dict:
    """Add ``fixed_jaw`` (float32 scalar) to a parsed example: 1 for the synthetic
    set (its 68 points are projected fixed vertices, a 3d source), 0 for
    photos (2D detectors and annotations mark the silhouette), so the jaw
    convention follows each example's landmark source. Map it over the
    dataset before :func:`recon_tf.training.strip_strings`."""
    out = dict(example)
    synthetic = tf.strings.regex_full_match(example["source_path"], SYNTHETIC_SOURCE + ".*")
    out["fixed_jaw"] = tf.cast(synthetic, tf.float32)
    return out


def make_train_step(stage: CoarseStage, optimizer, strategy: tf.distribute.Strategy,
                    global_batch: int, clip_norm: float = 0.0):
    """The distributed R-Net training step
    (:func:`recon_tf.training.make_distributed_step` over Eq. 6): returns the
    global means of ``total``, ``pho``, ``lmk``, ``id``, ``reg`` and ``grad_norm``.
    ``clip_norm`` > 0 clips gradients by global norm (Chen et al. clip;
    Deep3DFace does not, our default)."""
    from recon_tf.training import make_distributed_step

    return make_distributed_step(lambda batch: stage.terms(batch, training=True)[1],
                                 lambda: stage.model.trainable_variables, optimizer, strategy,
                                 global_batch, TERMS, clip_norm)


def vertex_errors(model, face_model: FaceModel, dataset) -> tuple[float, float]:
    """Mean rigid-aligned front-face vertex error (mm) of R-Net and of the mean face.

    Args:
      model: images → coefficients.
      dataset: batches with ``image`` and the synthetic truth ``vertices``
        ([B, N, 3], model units).
    Returns:
      (R-Net's error, the mean face's error), each averaged over examples.
    """
    front = getattr(face_model, "front_mask", None)
    mask = None if front is None else np.asarray(front) > 0.5
    layout = face_model.layout
    mean = face_model.shape(*_zeros_id_exp(layout, 1))[0].numpy()
    ours, base = [], []
    for batch in dataset:
        c = layout.split(model(batch["image"], training=False))
        verts = face_model.shape(c.identity, c.expression).numpy()
        for pred, truth in zip(verts, batch["vertices"].numpy()):
            ours.append(rigid_vertex_error_mm(pred, truth, mask))
            base.append(rigid_vertex_error_mm(mean, truth, mask))
    if not ours:
        raise ValueError("the evaluation set is empty")
    return float(np.mean(ours)), float(np.mean(base))


def _zeros_id_exp(layout, batch: int) -> tuple[tf.Tensor, tf.Tensor]:
    return tf.zeros([batch, layout.id_dim]), tf.zeros([batch, layout.exp_dim])


class CoarseServing(tf.Module):
    """What the SavedModel serves: aligned crops → coefficients, mesh, landmarks.

    Signature ``serving_default``: ``images`` float32 [B, S, S, 3] RGB in
    [0, 1] (aligned crops) → ``coeffs`` float32 [B, total] (CoeffLayout
    order), ``vertices`` float32 [B, N, 3] (the face with its expression in the
    face model's frame, millimetres), ``landmarks68`` float32 [B, 68, 2] (crop
    pixels, centres at integers, the training landmark convention).
    """

    def __init__(self, model: tf.keras.Model, objective: Fitter):
        super().__init__()
        self.model = model
        self._objective = objective
        size = objective.image_size
        self.serve = tf.function(self._serve, input_signature=[
            tf.TensorSpec([None, size, size, 3], tf.float32, name="images")])

    def _serve(self, images: tf.Tensor) -> dict:
        coeffs = self.model(images, training=False)
        params = self._objective.split(coeffs)
        camera = self._objective.camera(self._objective.image_size)
        verts, _, _, _, lmk = self._objective.geometry(params, camera)
        return {"coeffs": coeffs, "vertices": verts * DM_TO_MM,
                "landmarks68": lmk - PIXEL_CENTER}


def export_saved_model(model: tf.keras.Model, objective: Fitter, path: str, meta: dict) -> str:
    """Write a SavedModel (signature of :class:`CoarseServing`) + ``run_meta.json``."""
    from recon_tf.training import save_module

    return save_module(CoarseServing(model, objective), path, meta)


def load_coarse_model(path: str, face_model: FaceModel, camera_kind: str = "perspective"):
    """A trained R-Net as a callable images → coefficients, from a SavedModel
    directory, a training run directory (its latest checkpoint) or a checkpoint prefix.

    The stored ``run_meta.json`` must name this face model (name and geometry
    hash) and camera; otherwise :class:`recon_tf.training.CheckpointMismatchError`.

    Returns:
      (model, meta dict): ``model(images, training=False)`` maps float32
      [B, S, S, 3] in [0, 1] to float32 [B, total] (a Keras R-Net rebuilt from
      the checkpoint, or :class:`LoadedCoarseModel`); both are trackable, so
      the fine stage's SavedModel can embed them.
    Raises:
      FileNotFoundError: nothing loadable at ``path``.
    """
    from recon_tf.nets import rnet

    run_dir = path if os.path.isdir(path) else os.path.dirname(path)
    meta = read_meta(run_dir)
    if meta is None:
        raise FileNotFoundError(f"{path}: no {META_FILE} here; give a SavedModel exported by "
                                "experiments/train_coarse.py, its run directory or a checkpoint")
    expected = {"face_model": face_model.name, "geometry_hash": face_model.geometry_hash,
                "camera": camera_kind}
    check_meta(meta, expected, path)
    config = meta["rnet"]
    if os.path.exists(os.path.join(path, "saved_model.pb")):
        return LoadedCoarseModel(tf.saved_model.load(path)), meta
    prefix = tf.train.latest_checkpoint(path) if os.path.isdir(path) else path
    if prefix is None:
        raise FileNotFoundError(f"{path}: no checkpoint found")
    model = rnet.build_rnet(config["backbone"], rnet.layout_from_config(config),
                            config["image_size"], exp_bounds=face_model.exp_bounds,
                            pretrained=False)
    tf.train.Checkpoint(model=model).restore(prefix).expect_partial()
    return model, meta


class LoadedCoarseModel(tf.Module):
    """A coarse SavedModel called like the Keras R-Net: ``model(images, training=False)``."""

    def __init__(self, loaded):
        super().__init__()
        self.loaded = loaded

    def __call__(self, images, training: bool = False) -> tf.Tensor:
        del training  # a SavedModel is always in inference mode
        serve = self.loaded.signatures["serving_default"]
        return serve(images=tf.convert_to_tensor(images, tf.float32))["coeffs"]
