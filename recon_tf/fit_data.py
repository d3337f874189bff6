"""What a per-photo fit takes and gives: its schedule, its observations and its result.

The containers and helpers of :mod:`recon_tf.fitting` (which holds the
:class:`~recon_tf.fitting.Fitter` itself and explains the schedule's stages):
:class:`FitSchedule` (steps, learning rates, robust reweighting, the
pose-dependent shape prior's gain), :class:`FitData` (B aligned crops with their
landmarks, masks and per-face priors; :func:`make_fit_data` builds it),
:class:`FitResult`, the silhouette term's distance map
(:func:`background_distance`) and :func:`refine_schedule`, the short fit after a
learned prediction.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from recon_tf.landmarks import NUM_LANDMARKS

# k of the pose-dependent shape prior (module docstring; 0 = the plain λ_α and λ_β).
YAW_PRIOR_GAIN = 8.0
# The pose stage's starting yaws, degrees (FitSchedule.yaw_starts; recon_tf.fitting's
# module docstring): its 40 cosine-decayed steps move the yaw by at most ≈ 13°.
YAW_STARTS = (0.0, -30.0, 30.0, -60.0, 60.0)


@dataclasses.dataclass(frozen=True)
class FitSchedule:
    """Steps and learning rates of the fit (see the module docstring).

    Attributes:
      pose_steps: stage-1 steps on the pose alone.
      yaw_starts: yaws (degrees) the pose stage starts from when the fit starts at
        the mean face; each face keeps the pose of the start whose stage-1 objective
        ends lowest (the first wins ties). One start (or none) is a single run from
        the mean face's own yaw, 0. A given start (R-Net's prediction) is not
        restarted.
      landmark_steps: stage-1 steps on pose + expression (+ identity).
      landmark_identity: fit the identity in stage 1 too (else it waits for
        the photometric stage).
      robust_scale_px: after stage 1, every 68-point weight is multiplied by
        1 / (1 + (r / s)²) (Geman–McClure reweighting, r = the point's residual
        in 224-crop pixels, s this scale), so outlying detections count less
        in stage 3; 0 disables.
      robust_dense: reweight the FaceMesh points the same way (ours): at large
        yaw FaceMesh puts points that the fitted face hides (behind the nose, on
        the far cheek) on the visible outline, and those then count less.
      linear_rounds: light/albedo least-squares alternations (0: skip).
      photo_scales: render sizes of the photometric stage, coarse to fine.
      photo_steps: Adam steps at each photometric scale.
      id_min_scale: the identity term is used at scales ≥ this (0: always).
      yaw_prior_gain: k of the pose-dependent shape prior (module
        docstring); 0: the plain λ_α and λ_β at every pose.
      lr_*: Adam learning rates per coefficient group.
    """

    pose_steps: int = 40
    yaw_starts: tuple[float, ...] = YAW_STARTS
    landmark_steps: int = 120
    landmark_identity: bool = True
    robust_scale_px: float = 5.0
    robust_dense: bool = True
    linear_rounds: int = 2
    photo_scales: tuple[int, ...] = (112, 224)
    photo_steps: tuple[int, ...] = (150, 60)
    id_min_scale: int = 224
    yaw_prior_gain: float = YAW_PRIOR_GAIN
    lr_identity: float = 0.05
    lr_expression: float = 0.02
    lr_albedo: float = 0.05
    lr_angles: float = 0.01
    lr_translation: float = 0.01
    lr_light: float = 0.02

    def lr(self, group: str) -> float:
        return getattr(self, f"lr_{group}")


class FitData(NamedTuple):
    """The observations of B faces (aligned crops of side S).

    Attributes:
      images: float32 [B, S, S, 3] RGB in [0, 1].
      landmarks: float32 [B, 68, 2] continuous crop pixels.
      skin_mask: float32 [B, S, S, 1] in [0, 1] (Eq. 7's V before the
        rendered-face product).
      landmark_weights: float32 [B, 68] (0 drops a point).
      dense: float32 [B, P, 2] dense landmarks (continuous crop pixels) or None.
      dense_weights: float32 [B, P] or None.
      fixed_jaw: float32 [B] or None: 1 where the 68 points come from a 3d
        source (fixed jaw vertices whatever the convention, e.g. synthetic truth).
      prior_scale: float32 [B] or None: per-face multiplier of λ_α and λ_β (the
        pose-dependent prior, set by :meth:`Fitter.fit`, times
        ``shape_prior_scale``); None = 1.
      shape_prior_scale: float32 [B] or None: the caller's per-face multiplier of
        λ_α and λ_β (ours: larger for faces whose landmarks are unreliable,
        :class:`recon_tf.reconstruction.PhotoReconstructor`'s
        ``unsure_prior_gain``); None = 1.
      outside: float32 [B, S, S, 1] or None: the silhouette term's D, distance
        (crop pixels) into clearly-background pixels (:func:`background_distance`).
    """

    images: tf.Tensor
    landmarks: tf.Tensor
    skin_mask: tf.Tensor
    landmark_weights: tf.Tensor
    dense: tf.Tensor | None = None
    dense_weights: tf.Tensor | None = None
    fixed_jaw: tf.Tensor | None = None
    prior_scale: tf.Tensor | None = None
    outside: tf.Tensor | None = None
    shape_prior_scale: tf.Tensor | None = None


class FitResult(NamedTuple):
    """Outcome of :meth:`Fitter.fit`.

    Attributes:
      coeffs: float32 numpy [B, total], the fitted coefficients.
      terms: dict name → float32 numpy [B], the final loss terms (``pho``,
        ``lmk``, ``id``, ``reg``, ``dense``, ``total``).
      history: list of (stage name, step, mean total loss) tuples.
      seconds: dict stage → wall-clock seconds.
    """

    coeffs: np.ndarray
    terms: dict
    history: list
    seconds: dict


def background_distance(background: np.ndarray) -> np.ndarray:
    """The silhouette term's D from a background mask uint8 [S, S] (non-zero on
    clearly-background pixels): float32 [S, S], each background pixel's Euclidean
    distance (pixels) to the nearest pixel that is not background, 0 off the
    background."""
    import cv2

    return cv2.distanceTransform((np.asarray(background) > 0).astype(np.uint8), cv2.DIST_L2,
                                 cv2.DIST_MASK_PRECISE).astype(np.float32)


def make_fit_data(images, landmarks, skin_mask, landmark_weights=None, dense=None,
                  dense_weights=None, background=None, shape_prior_scale=None) -> FitData:
    """Build :class:`FitData` from numpy/tensors, filling default weights (uniform
    68-point weights: on held-out synthetic faces and the annotated photos they fit
    better than Deep3DFace's 20× nose and inner mouth,
    :func:`recon_tf.landmarks.deep3d_landmark_weights`). ``background``: uint8
    [B, S, S] clearly-background masks for the silhouette term, or None.
    ``shape_prior_scale``: float [B] per-face λ_α and λ_β multipliers, or None (all 1)."""
    images = tf.convert_to_tensor(images, tf.float32)
    landmarks = tf.convert_to_tensor(landmarks, tf.float32)
    batch = int(images.shape[0])
    skin = tf.convert_to_tensor(skin_mask, tf.float32)
    if skin.shape.rank == 3:
        skin = skin[..., None]
    if landmark_weights is None:  # uniform: better fits than Deep3DFace's weights (README)
        landmark_weights = np.ones((batch, NUM_LANDMARKS), np.float32)
    lw = tf.convert_to_tensor(landmark_weights, tf.float32)
    if dense is not None:
        dense = tf.convert_to_tensor(dense, tf.float32)
        if dense_weights is None:
            dense_weights = np.ones(dense.shape[:2], np.float32)
        dense_weights = tf.convert_to_tensor(dense_weights, tf.float32)
    outside = None
    if background is not None:
        outside = tf.constant(np.stack([background_distance(b) for b in background])[..., None])
    # always a tensor, so that a batch with a scaled face does not retrace the fit's graphs
    base = (tf.ones([batch], tf.float32) if shape_prior_scale is None
            else tf.convert_to_tensor(shape_prior_scale, tf.float32))
    return FitData(images, landmarks, skin, lw, dense, dense_weights, prior_scale=base,
                   outside=outside, shape_prior_scale=base)


def refine_schedule(steps: int, size: int = 224, base: FitSchedule | None = None
                    ) -> FitSchedule:
    """A short fit that starts from a learned prediction (R-Net): no landmark-only
    or linear stages (the prediction already has pose, shape, light and albedo),
    robust reweighting of the 68 points at the prediction, then ``steps``
    photometric Adam steps at render size ``size`` (the crop side). ``steps`` = 0
    keeps the prediction (the fit only evaluates it)."""
    base = base or FitSchedule()
    return dataclasses.replace(base, pose_steps=0, landmark_steps=0, linear_rounds=0,
                               photo_scales=(size,) if steps else (),
                               photo_steps=(steps,) if steps else ())
