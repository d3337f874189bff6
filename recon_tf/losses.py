"""Losses of the coarse stage, Eq. (6)–(10) of the paper, one function each.

    L_coarse = λ_pho L_pho + λ_lmk L_lmk + λ_id L_id + L_reg              (Eq. 6)

Every function takes batches and returns one value per example, float32
[B], so that R-Net training (mean over the batch) and per-photo fitting
(sum over independent faces) use the same code. Weights live in
:class:`CoarseLossWeights` (one home each, named as in the paper) and are
exposed as absl flags by :func:`define_coarse_loss_flags`.

Defaults where the paper gives no number (it gives none for the coarse stage)
are Deep3DFace's (GUIDE §2): λ_pho = 1.92, λ_lmk = 1.6e-3, λ_id = 0.2,
λ_α = 3e-4, λ_β = 0.8·3e-4, λ_δ = 1.7e-2·3e-4, with images in [0, 1] and
landmarks in pixels of the 224² aligned crop. Those regularisers assume PCA
coefficients ~ N(0, 1). Models whose expression coefficients are bounded
blendshape weights (ICT-FaceKit's β ∈ [0, 1]) get λ_β = ``BLENDSHAPE_BETA_WEIGHT``
= 3e-3 instead (:meth:`CoarseLossWeights.for_model`): a weight of 1 is a full
blendshape, not one standard deviation, and a zero-mean Gaussian prior on
it is a sparsity prior. Per-photo fitting uses the same weights as
training: a stronger identity prior for fitting (λ_α = 1e-3) was an earlier
default; re-measured on 2026-11-26 it tied on held-out synthetic faces
(vertex error 1.75 vs 1.76 mm) and lost on the annotated photos (NME 6.34 vs
6.07 %, coarse PSNR 21.52 vs 21.94 dB), see the README.
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from recon_tf.coeffs import Coeffs

REFERENCE_CROP = 224.0
BLENDSHAPE_BETA_WEIGHT = 3e-3
EPS = 1e-8


@dataclasses.dataclass(frozen=True)
class CoarseLossWeights:
    """The weights of Eq. (6) and Eq. (10), plus two documented extensions.

    Attributes:
      pho_weight: λ_pho of Eq. 6 (Deep3DFace: 1.92).
      lmk_weight: λ_lmk of Eq. 6, for squared pixel errors in a 224² crop
        (Deep3DFace: 1.6e-3).
      id_weight: λ_id of Eq. 6, for L_id = 1 − cos (Deep3DFace: 0.2).
      alpha_weight: λ_α of Eq. 10 (Deep3DFace: 3e-4).
      beta_weight: λ_β of Eq. 10 (Deep3DFace: 2.4e-4; bounded blendshapes:
        ``BLENDSHAPE_BETA_WEIGHT``).
      delta_weight: λ_δ of Eq. 10 (Deep3DFace: 5.1e-6).
      dense_lmk_weight: weight of the dense-landmark term (468 FaceMesh
        points, same form as Eq. 8); ours, not the paper's. 0 disables it.
      gamma_weight: Deep3DFace's light regulariser (squared deviation of each
        channel's SH coefficients from their mean over channels, i.e. a
        preference for white light); not in Eq. 10; Deep3DFace: 10.
      sil_weight: weight of the silhouette term (:func:`silhouette_loss`); ours,
        not the paper's; per-photo fitting only (it needs the photo's background
        map, which training records do not carry). 0 disables it.
    """

    pho_weight: float = 1.92
    lmk_weight: float = 1.6e-3
    id_weight: float = 0.2
    alpha_weight: float = 3e-4
    beta_weight: float = 0.8 * 3e-4
    delta_weight: float = 1.7e-2 * 3e-4
    dense_lmk_weight: float = 0.0
    gamma_weight: float = 10.0
    sil_weight: float = 5e-2

    @classmethod
    def for_model(cls, face_model, **overrides) -> CoarseLossWeights:
        """Defaults for a face model (bounded blendshapes change λ_β), then explicit
        overrides (None = default). Training and per-photo fitting share them."""
        values = {}
        if getattr(face_model, "exp_bounds", None) is not None:
            values["beta_weight"] = BLENDSHAPE_BETA_WEIGHT
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


FLAG_HELP = {
    "pho_weight": "λ_pho of Eq. 6, photometric loss weight (Deep3DFace: 1.92).",
    "lmk_weight": "λ_lmk of Eq. 6, landmark loss weight, squared 224-crop pixels "
                  "(Deep3DFace: 1.6e-3).",
    "id_weight": "λ_id of Eq. 6, identity loss weight, L_id = 1 - cos (Deep3DFace: 0.2).",
    "alpha_weight": "λ_α of Eq. 10, identity regulariser (Deep3DFace: 3e-4).",
    "beta_weight": "λ_β of Eq. 10, expression regulariser (default: Deep3DFace 2.4e-4 for "
                   "PCA models, 3e-3 for bounded blendshapes such as ICT).",
    "delta_weight": "λ_δ of Eq. 10, albedo regulariser (Deep3DFace: 5.1e-6).",
    "dense_lmk_weight": "Weight of the dense 468-point landmark term (ours; 0 = off).",
    "gamma_weight": "Weight of Deep3DFace's white-light regulariser (not in Eq. 10).",
    "sil_weight": "Weight of the silhouette term of per-photo fitting: the rendered face "
                  "must not cover clearly-background pixels (ours; 0 = off).",
}


def define_coarse_loss_flags(flag_values=None, **defaults) -> None:
    """Define one absl float flag per :class:`CoarseLossWeights` field.

    Flags default to None, which means "the documented default for the face
    model" (:meth:`CoarseLossWeights.for_model`); ``defaults`` overrides that.
    """
    from absl import flags

    fv = flags.FLAGS if flag_values is None else flag_values
    for field in dataclasses.fields(CoarseLossWeights):
        flags.DEFINE_float(field.name, defaults.get(field.name), FLAG_HELP[field.name],
                           flag_values=fv)


def weights_from_flags(face_model, flag_values=None, **overrides) -> CoarseLossWeights:
    """:class:`CoarseLossWeights` from the flags of :func:`define_coarse_loss_flags`."""
    from absl import flags

    fv = flags.FLAGS if flag_values is None else flag_values
    values = {f.name: getattr(fv, f.name) for f in dataclasses.fields(CoarseLossWeights)}
    values.update(overrides)
    return CoarseLossWeights.for_model(face_model, **values)


# --------------------------------------------------------------------- Eq. 7
def photometric_loss(image: tf.Tensor, rendered: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """L_pho (Eq. 7): masked per-pixel L2 norm of the colour difference.

        L_pho = Σ_(i,j) ‖V(i,j) (I(i,j) − I_R(i,j))‖₂ / Σ_(i,j) V(i,j)

    Args:
      image: I, float32 [B, H, W, 3] in [0, 1].
      rendered: I_R, float32 [B, H, W, 3].
      mask: V, float32 [B, H, W, 1] in [0, 1]: the skin mask times the
        rendered-face coverage (the caller forms the product).
    Returns:
      float32 [B]; 0 for an example whose mask is empty. The norm is
      sqrt(Σ_c d² + 1e-8), so its gradient stays finite at d = 0.
    """
    diff = tf.convert_to_tensor(image, tf.float32) - tf.convert_to_tensor(rendered, tf.float32)
    norm = tf.sqrt(tf.reduce_sum(tf.square(diff), axis=-1, keepdims=True) + EPS)
    mask = tf.convert_to_tensor(mask, tf.float32)
    return tf.math.divide_no_nan(tf.reduce_sum(mask * norm, axis=[1, 2, 3]),
                                 tf.reduce_sum(mask, axis=[1, 2, 3]))


# --------------------------------------------------------------------- Eq. 8
def landmark_loss(predicted: tf.Tensor, target: tf.Tensor, weights: tf.Tensor | None = None,
                  image_size: float = REFERENCE_CROP) -> tf.Tensor:
    """L_lmk (Eq. 8): mean squared distance of N landmarks.

        L_lmk = (1/N) Σ_i w_i ‖q_i − q_i^R‖²₂

    Args:
      predicted: q^R, float32 [B, N, 2], projected model landmarks in
        continuous pixels (pixel (i, j) centred at (j + 0.5, i + 0.5), see
        :mod:`recon_tf.camera`).
      target: q, float32 [B, N, 2] in the same convention (landmark files add
        ``camera.PIXEL_CENTER``).
      weights: optional float32 [N] or [B, N] per-landmark weights w_i
        (default 1; Deep3DFace: 20 on nose and inner mouth, see
        :func:`recon_tf.landmarks.deep3d_landmark_weights`; 0 drops a point).
      image_size: side of the image the pixels refer to. Errors are rescaled
        to a 224² crop, so λ_lmk means the same at every resolution.
    Returns:
      float32 [B].
    """
    predicted = tf.convert_to_tensor(predicted, tf.float32)
    target = tf.convert_to_tensor(target, tf.float32)
    scale = REFERENCE_CROP / float(image_size)
    sq = tf.reduce_sum(tf.square((predicted - target) * scale), axis=-1)  # [B, N]
    if weights is not None:
        weights = tf.convert_to_tensor(weights, tf.float32)
        sq = sq * (weights[None] if weights.shape.rank == 1 else weights)
    return tf.reduce_mean(sq, axis=-1)


SIL_HUBER_PX = 8.0  # silhouette term: quadratic up to this distance (224-crop pixels)


def silhouette_loss(points: tf.Tensor, weights: tf.Tensor, distance: tf.Tensor,
                    image_size: float = REFERENCE_CROP) -> tf.Tensor:
    """Silhouette term (ours, not the paper's): visible face vertices must not land on
    pixels that are clearly background.

        L_sil = Σ_v w_v ρ(D(π(v))) / Σ_v w_v,   ρ(d) = d² (d ≤ c), 2 c d − c² (d > c)

    D is the distance (pixels) from a pixel to the nearest pixel that is not
    background (0 off the background; :mod:`recon_tf.preprocess.skin_mask`, part 4),
    sampled bilinearly, so the gradient pulls a vertex that spills over the background
    back towards the face. L_pho (Eq. 7) cannot: it only sees the skin mask, and a
    face rendered over the background costs it nothing. Distances are rescaled to a
    224² crop as in :func:`landmark_loss`; beyond c = ``SIL_HUBER_PX`` (224-crop
    pixels) the penalty grows linearly (Huber), so a vertex far out on a wrongly
    labelled background cannot drag the shape.

    Args:
      points: float32 [B, N, 2] projected vertices, continuous pixels of ``distance``.
      weights: float32 [B, N] w_v ≥ 0 (the caller's choice of vertices: the
        camera-facing front-face ones).
      distance: float32 [B, H, W, 1] D.
      image_size: side of the image the pixels refer to.
    Returns:
      float32 [B]; 0 where all weights are 0.
    """
    from recon_tf.render.uv import bilinear_sample

    d = bilinear_sample(distance, points)[..., 0] * (REFERENCE_CROP / float(image_size))
    c = SIL_HUBER_PX
    rho = tf.where(d <= c, tf.square(d), 2.0 * c * d - c * c)
    weights = tf.convert_to_tensor(weights, tf.float32)
    return tf.math.divide_no_nan(tf.reduce_sum(weights * rho, axis=-1),
                                 tf.reduce_sum(weights, axis=-1))


# --------------------------------------------------------------------- Eq. 9
def identity_loss(features_input: tf.Tensor, features_rendered: tf.Tensor) -> tf.Tensor:
    """L_id (Eq. 9) on L2-normalised features: cosine distance.

        L_id = 1 − ⟨Φ̂(I), Φ̂(I_R)⟩ = ½ ‖Φ̂(I) − Φ̂(I_R)‖²₂,   Φ̂ = Φ / ‖Φ‖

    Eq. 9 writes ‖Φ(I) − Φ(I_R)‖²; normalising first (as Deep3DFace and
    DECA do) makes λ_id mean the same for every network (faceres 1024-D,
    MobileFaceNet 128-D, VGG-Face 4096-D) and keeps the loss in [0, 2].

    Args:
      features_input: Φ(I), float32 [B, D] (normalised here again, harmlessly).
      features_rendered: Φ(I_R), float32 [B, D]; gradients flow through it.
    Returns:
      float32 [B] in [0, 2].
    """
    a = tf.math.l2_normalize(tf.convert_to_tensor(features_input, tf.float32), axis=-1)
    b = tf.math.l2_normalize(tf.convert_to_tensor(features_rendered, tf.float32), axis=-1)
    return 1.0 - tf.reduce_sum(a * b, axis=-1)


# -------------------------------------------------------------------- Eq. 10
def regularization_loss(coeffs: Coeffs, weights: CoarseLossWeights,
                        alpha_scale: tf.Tensor | None = None) -> tf.Tensor:
    """L_reg (Eq. 10) = λ_α ‖α‖² + λ_β ‖β‖² + λ_δ ‖δ‖², plus λ_γ of Deep3DFace's light term.

    Args:
      coeffs: split coefficients (:meth:`CoeffLayout.split`), float32 [B, ·].
      weights: λ_α = ``alpha_weight``, λ_β = ``beta_weight``,
        λ_δ = ``delta_weight``, and ``gamma_weight`` for
        :func:`light_regularization` (0 gives exactly Eq. 10).
      alpha_scale: optional float32 [B], a per-example multiplier of λ_α (ours,
        fitting only: the pose-dependent identity prior of
        :class:`recon_tf.fitting.FitSchedule`); None = 1.
    Returns:
      float32 [B].
    """
    def sq(x: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(tf.square(x), axis=-1)

    alpha = weights.alpha_weight * sq(coeffs.identity)
    if alpha_scale is not None:
        alpha = alpha * tf.convert_to_tensor(alpha_scale, tf.float32)
    reg = (alpha + weights.beta_weight * sq(coeffs.expression)
           + weights.delta_weight * sq(coeffs.albedo))
    if weights.gamma_weight:
        reg += weights.gamma_weight * light_regularization(coeffs.light)
    return reg


def light_regularization(light: tf.Tensor) -> tf.Tensor:
    """Deep3DFace's white-light prior: mean squared deviation of each channel's
    9 SH coefficients from their mean over the 3 channels.

    Args:
      light: γ, float32 [B, 27] laid out [r0..r8, g0..g8, b0..b8].
    Returns:
      float32 [B].
    """
    gamma = tf.reshape(tf.convert_to_tensor(light, tf.float32), [-1, 3, 9])
    mean = tf.reduce_mean(gamma, axis=1, keepdims=True)
    return tf.reduce_mean(tf.square(gamma - mean), axis=[1, 2])


# --------------------------------------------------------------------- Eq. 6
def coarse_loss(weights: CoarseLossWeights, pho: tf.Tensor, lmk: tf.Tensor, identity: tf.Tensor,
                reg: tf.Tensor, dense_lmk: tf.Tensor | None = None,
                sil: tf.Tensor | None = None) -> tf.Tensor:
    """L_coarse (Eq. 6) = λ_pho L_pho + λ_lmk L_lmk + λ_id L_id + L_reg (+ the dense
    and silhouette terms, ours).

    Args:
      weights: the λs.
      pho, lmk, identity, reg: float32 [B] from the functions above (pass
        zeros for a term that is not computed).
      dense_lmk: float32 [B] dense-landmark term (weighted by
        ``dense_lmk_weight``), or None.
      sil: float32 [B] silhouette term (weighted by ``sil_weight``), or None.
    Returns:
      float32 [B].
    """
    total = (weights.pho_weight * pho + weights.lmk_weight * lmk + weights.id_weight * identity
             + reg)
    if dense_lmk is not None:
        total += weights.dense_lmk_weight * dense_lmk
    if sil is not None:
        total += weights.sil_weight * sil
    return total
