"""Dense landmarks for the fit: MediaPipe FaceMesh's 468 points on the face model.

FaceMesh (:mod:`recon_tf.nets.facemesh`) marks 468 points that sit on fixed
places of the face surface. Which vertex of *our* face model each one is, is
learned from the synthetic set (:mod:`recon_tf.data.synthetic`), whose renders
come with exact geometry: FaceMesh runs on ``num_faces`` synthetic renders
(random identity, expression, albedo, light; moderate poses); each detected
point is looked up in the render's triangle-id and barycentric buffers, which
gives the surface point it fell on, expressed on the *mean shape* (same
topology). The per-point median of those canonical positions is snapped to
the nearest mean-shape vertex. The spread (median distance of the samples to
their median, mm) measures how consistently FaceMesh finds that point; the
point's weight in the fit is ``1 / (1 + (spread / SPREAD_SCALE_MM)²)``.

The correspondence is cached per face model in :func:`recon_tf.assets.cache_dir`
(a few seconds to learn). The dense term has the form of Eq. 8 over the 468
points, weighted by ``dense_lmk_weight`` (:mod:`recon_tf.losses`).
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import tensorflow as tf

from recon_tf.camera import PIXEL_CENTER
from recon_tf.face_model import FaceModel, geometry_hash

NUM_POINTS = 468
SPREAD_SCALE_MM = 2.0
DEFAULT_DENSE_WEIGHT = 1.6e-3
CORRESPONDENCE_VERSION = 1


@dataclasses.dataclass
class DenseCorrespondence:
    """FaceMesh point → face-model vertex.

    Attributes:
      vertex_ids: int32 [P] vertex per FaceMesh point.
      weights: float32 [P] in (0, 1], reliability of each point.
      spread_mm: float32 [P] median deviation of the samples (mm).
      face_model: name of the face model it was learned for.
    """

    vertex_ids: np.ndarray
    weights: np.ndarray
    spread_mm: np.ndarray
    face_model: str

    def project(self, screen: tf.Tensor) -> tf.Tensor:
        """Dense model landmarks in pixels, float32 [B, P, 2], from vertex pixels [B, N, 2]."""
        return tf.gather(screen, self.vertex_ids, axis=1)

    def save(self, path: str) -> None:
        tmp = path + ".tmp.npz"
        np.savez(tmp, vertex_ids=self.vertex_ids, weights=self.weights,
                 spread_mm=self.spread_mm, face_model=self.face_model,
                 version=CORRESPONDENCE_VERSION)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str) -> DenseCorrespondence:
        with np.load(path) as d:
            if int(d["version"]) != CORRESPONDENCE_VERSION:
                raise ValueError(f"{path}: correspondence version {int(d['version'])}, "
                                 f"expected {CORRESPONDENCE_VERSION}")
            return cls(d["vertex_ids"].astype(np.int32), d["weights"].astype(np.float32),
                       d["spread_mm"].astype(np.float32), str(d["face_model"]))


def learn_correspondence(face_model: FaceModel, detect, num_faces: int = 96, seed: int = 7,
                         batch: int = 8, image_size: int = 256) -> DenseCorrespondence:
    """Learn a landmark detector's point → vertex correspondence from synthetic renders
    (see the module docstring).

    Args:
      face_model: the 3DMM.
      detect: ``detect(image uint8 [H, W, 3], box (x, y, w, h)) -> (points [P, ≥2]
        in image pixels, centres at integers; score)``, e.g. ``FaceMesh.detect``;
        None (or a score < 0.5) skips the render.
      num_faces: synthetic renders used.
      seed: synthetic-set seed (use one disjoint from any evaluation split).
      batch: renders per batch.
      image_size: render side in pixels.
    """
    from recon_tf.camera import Camera
    from recon_tf.data.synthetic import SyntheticConfig, SyntheticRenderer
    from recon_tf.render.renderer import render_face

    config = SyntheticConfig(image_size=image_size, yaw=0.45, pitch=0.2, roll=0.1,
                             translation_z=0.3)
    renderer = SyntheticRenderer(face_model, config)
    camera = Camera.deep3d(image_size)
    mean = np.asarray(face_model.arrays["mean_shape"], np.float64)
    tris = np.asarray(face_model.arrays["triangles"])
    samples: list[np.ndarray] = []
    for start in range(0, num_faces, batch):
        drawn = [renderer.sample(seed, i) for i in range(start, min(start + batch, num_faces))]
        rendered = renderer.render(drawn)
        coeffs = tf.constant(np.stack([d["coeffs"] for d in drawn]))
        r = render_face(face_model, coeffs, camera)
        ids, bary = r.triangle_ids.numpy(), r.barycentrics.numpy()
        for k, out in enumerate(rendered):
            lmk = out["landmarks"]
            lo, hi = lmk.min(0), lmk.max(0)
            found = detect(out["image"], np.r_[lo, hi - lo])
            if found is None or found[1] < 0.5:
                continue
            points = np.asarray(found[0], np.float64)
            px = np.floor(points[:, :2] + PIXEL_CENTER).astype(int)
            inside = np.all((px >= 0) & (px < image_size), axis=1)
            px = np.clip(px, 0, image_size - 1)
            tid = ids[k, px[:, 1], px[:, 0]]
            w = bary[k, px[:, 1], px[:, 0]]
            canon = np.einsum("pk,pkc->pc", w, mean[tris[np.maximum(tid, 0)]])
            canon[(tid < 0) | ~inside] = np.nan
            samples.append(canon)
    if len(samples) < 8:
        raise RuntimeError(f"the detector found only {len(samples)} of {num_faces} "
                           "synthetic faces")
    stack = np.stack(samples)  # [F, P, 3]
    median = np.nanmedian(stack, axis=0)
    spread = np.nanmedian(np.linalg.norm(stack - median[None], axis=-1), axis=0) * 100.0
    valid = np.all(np.isfinite(median), axis=1)
    median[~valid] = 0.0
    d2 = ((median[:, None, :] - mean[None]) ** 2).sum(-1)
    vertex_ids = np.argmin(d2, axis=1).astype(np.int32)
    weights = np.where(valid, 1.0 / (1.0 + (np.nan_to_num(spread, nan=1e3) / SPREAD_SCALE_MM)
                                     ** 2), 0.0).astype(np.float32)
    return DenseCorrespondence(vertex_ids, weights, np.nan_to_num(spread, nan=-1.0)
                               .astype(np.float32), face_model.name)


def load_correspondence(face_model: FaceModel, facemesh, cache: str | None = None
                        ) -> DenseCorrespondence:
    """The cached FaceMesh correspondence for ``face_model``, learned on first use."""
    return cached_correspondence(face_model, "facemesh", facemesh.detect, cache)


def detector_landmark_ids(face_model: FaceModel, preprocessor, cache: str | None = None
                          ) -> np.ndarray:
    """The 68 landmark vertex ids in the 2D detector's own convention.

    The face model's ``lmk68`` are where its authors put the iBUG points; a
    detector (PFLD by default) has its own habits (e.g. where on the brow a
    brow point sits). Points 17–67 are re-learned like the FaceMesh points:
    MTCNN + the detector on synthetic renders, each point looked up on the
    rendered surface, median, nearest vertex. The jaw (0–16) keeps the model's
    vertices (its 2D convention is the pose-dependent contour of
    :mod:`recon_tf.landmarks`). Points found too inconsistently (spread over
    ``2 * SPREAD_SCALE_MM``) keep the model's vertex.

    Args:
      preprocessor: a :class:`recon_tf.preprocess.FacePreprocessor` (its
        ``detector`` and ``landmarker``).
    Returns:
      int32 [68].
    """
    def detect(image: np.ndarray, box: np.ndarray):
        del box
        faces = preprocessor.detector.detect(image)
        if not faces:
            return None
        return preprocessor.landmarker(image, faces[0].box, faces[0].keypoints), 1.0

    tag = getattr(preprocessor.landmarker, "cache_tag", None)
    name = f"detector_{tag or getattr(preprocessor, 'landmarker_name', 'pfld')}"
    corr = cached_correspondence(face_model, name, detect, cache)
    ids = np.asarray(face_model.arrays["lmk68"], np.int32).copy()
    keep = np.arange(68) >= 17
    keep &= (corr.spread_mm >= 0) & (corr.spread_mm < 2 * SPREAD_SCALE_MM)
    ids[keep] = corr.vertex_ids[keep]
    return ids


def cached_correspondence(face_model: FaceModel, name: str, detect, cache: str | None = None
                          ) -> DenseCorrespondence:
    """A detector's correspondence for ``face_model`` from the cache, learned on first use."""
    from absl import logging

    from recon_tf.assets import cache_dir

    path = os.path.join(cache or cache_dir(),
                        f"{name}_{face_model.name}_{geometry_hash(face_model.arrays)[:12]}"
                        f"_v{CORRESPONDENCE_VERSION}.npz")
    if os.path.exists(path):
        try:
            return DenseCorrespondence.load(path)
        except (ValueError, OSError, KeyError) as err:
            logging.warning("re-learning the FaceMesh correspondence: %s", err)
    logging.info("learning the %s → %s correspondence from synthetic renders "
                 "(once; cached in %s)", name, face_model.name, path)
    corr = learn_correspondence(face_model, detect)
    corr.save(path)
    return corr
