"""The losses of the paper, one function each: the coarse stage's Eq. (6)–(10) and the
fine stage's Eq. (11)–(13).

**Coarse stage**, Eq. (6)–(10):

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
it is a sparsity prior. Per-photo fitting (the main job) uses the same weights
as training but a weaker identity prior, λ_α = ``FIT_ALPHA_WEIGHT`` = 1e-4
(ours, measured 2026-11-27 against 3e-4, README "Identity prior of the fit"):
the median NoW-style error on faces carrying shape the model cannot express
fell by 4 % (3 mm) and 3 % (5 mm), on in-model faces it tied, and the annotated
photos' NME fell 5.82 → 5.64 %; the held-out in-model vertex error rose
1.90 → 1.95 mm and the fine PSNR fell 0.3 dB. Real faces are not drawn from the
model, so the fit follows them more freely. A stronger prior for fitting
(1e-3) was the first default; it lost on the annotated photos.
For bounded blendshapes the fit also takes a weaker expression prior, λ_β =
``FIT_BLENDSHAPE_BETA_WEIGHT`` = 3e-4 (ours, 2026-11-28, README "Expression prior
of the fit"): with 3e-3 an expression the prior holds back goes into the identity.
Neutral shapes fitted to different photographs of one person came out only 8 %
closer to each other than to other people's (AUC 0.67); with 3e-4 23 % (AUC 0.84),
and the trend held over 1e-2 / 3e-3 / 1e-3 / 3e-4 (AUC 0.51 / 0.67 / 0.74 / 0.84).
The synthetic scores, drawn from the model's own expression prior, moved within
their noise (vertex error 1.84 → 1.87 mm, NoW-style median 0.414 → 0.427 mm).
Weaker still, 1e-4 gained a little on real photos (AUC 0.88, +0.05 dB coarse) but
cost faces turned by 50–65° 0.13 mm of vertex error (the pose-dependent prior scales
this weight), so 3e-4 stayed (session 14).

**Fine stage**, Eq. (11)–(13):

    L_fine = λ_pho L_pho + λ_id L_id + λ_alb L_alb + λ_smo L_smo          (Eq. 11)

L_pho and L_id are the coarse stage's Eq. 7 and Eq. 9 (:func:`photometric_loss`,
:func:`identity_loss`) evaluated on the fine render. The text of Eq. 12 (L_alb)
and Eq. 13 (L_smo) is lost from §3.4.4; only their weights survive (§4.1:
λ_pho = 1.0, λ_id = 0.8, λ_alb = 1.0, λ_smo = 1.0, w_n = w_d = 0.001 inside
Eq. 13). Our reconstruction (GUIDE §2, after Chen et al. 2020, ref. [25]):

* Eq. 12, :func:`albedo_loss`: L1 between a Gaussian low-pass of the
  detailed albedo map and the same low-pass of the coarse albedo map, plus a
  sparsity term on the detail (``alb_detail_weight``, ours). The detailed map
  may add high frequencies but not move the coarse map's low frequencies, so
  slowly varying shading cannot migrate into the albedo.
* Eq. 13, :func:`smoothness_loss`: L1 of first-order UV differences of the
  displacement map D (horizontal, vertical and both diagonals, as in Chen's
  ``smooth_uv_loss`` + ``smooth_slope_uv_loss``) + w_n ‖n_fine − n_coarse‖²
  (Chen's ``disp_normal`` term) + w_d |D|. Chen squares the differences and
  D; we use L1 because D is in decimetres (a 1 mm wrinkle is 0.01), where a
  square would shrink the terms ~100× and make the paper's weights moot.

Functions take batches of UV maps ([B, S, S, C], row 0 = v = 1, see
:mod:`recon_tf.render.uv`) with a layout mask [B or 1, S, S, 1] and return one
value per example, float32 [B] (float64 for float64 inputs, for gradient
checks). Weights live in :class:`FineLossWeights`; their absl flags are the
field names prefixed ``fine_`` (``--fine_pho_weight``, ...), so they coexist
with the coarse flags of :func:`define_coarse_loss_flags`.
Spatial scales are expressed at a 256² UV map (``UV_REFERENCE_SIZE``, the
fine stage's default) and rescaled to the actual map size.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from recon_tf.coeffs import Coeffs

REFERENCE_CROP = 224.0
BLENDSHAPE_BETA_WEIGHT = 3e-3
FIT_ALPHA_WEIGHT = 1e-4  # λ_α of per-photo fitting (module docstring)
FIT_BLENDSHAPE_BETA_WEIGHT = 3e-4  # λ_β of fitting bounded blendshapes (docstring)
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
        if bounded_expressions(face_model):
            values["beta_weight"] = BLENDSHAPE_BETA_WEIGHT
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def bounded_expressions(face_model) -> bool:
    """Whether the model's expression coefficients are bounded blendshape weights
    (it carries ``exp_bounds``, e.g. ICT's β ∈ [0, 1]) rather than PCA scores: the
    switch for ``BLENDSHAPE_BETA_WEIGHT`` and ``FIT_BLENDSHAPE_BETA_WEIGHT``."""
    return getattr(face_model, "exp_bounds", None) is not None


FLAG_HELP = {
    "pho_weight": "λ_pho of Eq. 6, photometric loss weight (Deep3DFace: 1.92).",
    "lmk_weight": "λ_lmk of Eq. 6, landmark loss weight, squared 224-crop pixels "
                  "(Deep3DFace: 1.6e-3).",
    "id_weight": "λ_id of Eq. 6, identity loss weight, L_id = 1 - cos (Deep3DFace: 0.2).",
    "alpha_weight": "λ_α of Eq. 10, identity regulariser (default: Deep3DFace's 3e-4 for "
                    "training, 1e-4 for per-photo fitting).",
    "beta_weight": "λ_β of Eq. 10, expression regulariser (default: Deep3DFace 2.4e-4 for "
                   "PCA models, 3e-3 for bounded blendshapes such as ICT in training, "
                   "3e-4 for them in per-photo fitting).",
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
                        alpha_scale: tf.Tensor | None = None,
                        beta_scale: tf.Tensor | None = None) -> tf.Tensor:
    """L_reg (Eq. 10) = λ_α ‖α‖² + λ_β ‖β‖² + λ_δ ‖δ‖², plus λ_γ of Deep3DFace's light term.

    Args:
      coeffs: split coefficients (:meth:`CoeffLayout.split`), float32 [B, ·].
      weights: λ_α = ``alpha_weight``, λ_β = ``beta_weight``,
        λ_δ = ``delta_weight``, and ``gamma_weight`` for
        :func:`light_regularization` (0 gives exactly Eq. 10).
      alpha_scale: optional float32 [B], a per-example multiplier of λ_α (ours,
        fitting only: :class:`recon_tf.fit_data.FitData`'s ``prior_scale``, the
        pose-dependent prior times the prior of faces with unreliable landmarks);
        None = 1.
      beta_scale: optional float32 [B], the same for λ_β; None = 1.
    Returns:
      float32 [B].
    """
    def sq(x: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(tf.square(x), axis=-1)

    alpha = weights.alpha_weight * sq(coeffs.identity)
    if alpha_scale is not None:
        alpha = alpha * tf.convert_to_tensor(alpha_scale, tf.float32)
    beta = weights.beta_weight * sq(coeffs.expression)
    if beta_scale is not None:
        beta = beta * tf.convert_to_tensor(beta_scale, tf.float32)
    reg = alpha + beta + weights.delta_weight * sq(coeffs.albedo)
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


# ===================================================================== fine stage
UV_REFERENCE_SIZE = 256
FLAG_PREFIX = "fine_"


@dataclasses.dataclass(frozen=True)
class FineLossWeights:
    """The weights of Eq. (11) and Eq. (13) (the paper's, §4.1), plus two of ours for Eq. 12.

    Attributes:
      pho_weight: λ_pho of Eq. 11 (paper: 1.0).
      id_weight: λ_id of Eq. 11 (paper: 0.8).
      alb_weight: λ_alb of Eq. 11 (paper: 1.0).
      smo_weight: λ_smo of Eq. 11 (paper: 1.0).
      normal_weight: w_n inside Eq. 13, on ‖n_fine − n_coarse‖² (paper: 0.001).
      disp_weight: w_d inside Eq. 13, on |D| in decimetres (paper: 0.001).
      alb_detail_weight: ours. Weight of the detail sparsity inside Eq. 12,
        mean |A_detail − A_coarse|. 0.1: a detail texel survives only where
        it lowers the photometric error (≈ 1:1 for real detail, shading ≈ 1)
        by more than a tenth of its own size; detail the photo does not ask
        for decays.
      alb_blur_sigma: ours. σ of the Gaussian low-pass of Eq. 12 in texels of
        a 256² UV map (scaled with the map size). 4.0 ≈ 5 mm on the ICT face
        (1 texel ≈ 1.2 mm; mesh edges span 2.3 texels median, 5.3 at the
        90th percentile): the coarse per-vertex albedo holds nothing finer,
        while SH shading of the coarse geometry varies over centimetres, so
        it falls in the protected low band.
    """

    pho_weight: float = 1.0
    id_weight: float = 0.8
    alb_weight: float = 1.0
    smo_weight: float = 1.0
    normal_weight: float = 0.001
    disp_weight: float = 0.001
    alb_detail_weight: float = 0.1
    alb_blur_sigma: float = 4.0


FINE_FLAG_HELP = {
    "pho_weight": "λ_pho of Eq. 11, fine photometric loss weight (paper: 1.0).",
    "id_weight": "λ_id of Eq. 11, fine identity loss weight, L_id = 1 - cos (paper: 0.8).",
    "alb_weight": "λ_alb of Eq. 11, albedo loss weight (paper: 1.0).",
    "smo_weight": "λ_smo of Eq. 11, smoothness loss weight (paper: 1.0).",
    "normal_weight": "w_n inside Eq. 13, on |n_fine - n_coarse|^2 (paper: 0.001).",
    "disp_weight": "w_d inside Eq. 13, on |D| in decimetres (paper: 0.001).",
    "alb_detail_weight": "Sparsity weight of the albedo detail inside Eq. 12 (ours: 0.1).",
    "alb_blur_sigma": "Gaussian sigma of the Eq. 12 low-pass, in texels of a 256^2 UV map, "
                      "scaled with the map size (ours: 4.0).",
}


def define_fine_loss_flags(flag_values=None, **defaults) -> None:
    """Define one absl float flag ``fine_<field>`` per :class:`FineLossWeights` field.

    Flags default to the dataclass defaults (the paper's values, and ours
    for Eq. 12); ``defaults``, keyed by field name (``pho_weight=...``),
    overrides them.
    """
    from absl import flags

    fv = flags.FLAGS if flag_values is None else flag_values  # empty FlagValues is falsy
    for field in dataclasses.fields(FineLossWeights):
        flags.DEFINE_float(FLAG_PREFIX + field.name, defaults.get(field.name, field.default),
                           FINE_FLAG_HELP[field.name], flag_values=fv)


def fine_weights_from_flags(flag_values=None, **overrides) -> FineLossWeights:
    """:class:`FineLossWeights` from the flags of :func:`define_fine_loss_flags`, then
    ``overrides`` keyed by field name (None = keep the flag's value)."""
    from absl import flags

    fv = flags.FLAGS if flag_values is None else flag_values  # empty FlagValues is falsy
    values = {f.name: getattr(fv, FLAG_PREFIX + f.name)
              for f in dataclasses.fields(FineLossWeights)}
    values.update({k: v for k, v in overrides.items() if v is not None})
    return FineLossWeights(**values)


def _dtype(x) -> tf.DType:
    """float64 for float64 inputs (gradient checks), float32 otherwise."""
    dtype = getattr(x, "dtype", None)
    return tf.float64 if dtype in (tf.float64, np.float64) else tf.float32


def _masked_mean(values: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """Σ mask·values / (Σ mask · C) per example, for values [B, S, S, C], mask [B, S, S, 1]."""
    channels = tf.cast(tf.shape(values)[-1], values.dtype)
    values = tf.where(mask > 0, values, tf.zeros_like(values))  # NaN·0 would be NaN
    return tf.math.divide_no_nan(tf.reduce_sum(mask * values, axis=[1, 2, 3]),
                                 tf.reduce_sum(mask, axis=[1, 2, 3]) * channels)


def gaussian_lowpass(maps: tf.Tensor, mask: tf.Tensor, sigma: float) -> tf.Tensor:
    """Mask-normalised separable Gaussian blur: G∗(m·x) / G∗m, 0 where G∗m = 0.

    Only texels inside the mask contribute, with weights renormalised, so the
    layout border does not pull values towards the zeros outside it. The
    blur is two products with a dense [S, S] Gaussian matrix (exact, no
    truncation); on CPU that is ~6× faster than a depthwise convolution
    (256², batch 8: ≈ 0.1 s forward + backward).

    Args:
      maps: x, float [B, S, S, C] with static S.
      mask: m, float [B, S, S, 1] in [0, 1].
      sigma: σ in texels of this map.
    Returns:
      float [B, S, S, C]; linear in ``maps`` for a fixed mask.
    """
    size = int(maps.shape[1])
    offsets = np.arange(size)[:, None] - np.arange(size)[None, :]
    gauss = np.exp(-0.5 * (offsets / max(sigma, 1e-6)) ** 2)
    gauss = tf.constant(gauss / gauss[0].sum(), maps.dtype)  # [S, S], symmetric

    def blur(x: tf.Tensor) -> tf.Tensor:
        # Plain 2-D products only: a batched matmul broadcasting a rank-2 operand
        # corrupts memory under oneDNN on AVX-512 CPUs (README "Known issues").
        shape = tf.shape(x)
        x = tf.reshape(tf.transpose(x, [0, 3, 1, 2]), [-1, size])  # rows of [B, C, S, S]
        x = tf.reshape(tf.matmul(x, gauss), [shape[0], shape[3], size, size])
        x = tf.reshape(tf.transpose(x, [0, 1, 3, 2]), [-1, size])  # now the columns
        x = tf.reshape(tf.matmul(x, gauss), [shape[0], shape[3], size, size])
        return tf.transpose(x, [0, 3, 2, 1])

    return tf.math.divide_no_nan(blur(maps * mask), blur(mask))


# -------------------------------------------------------------------- Eq. 12
def albedo_loss(detail_albedo: tf.Tensor, coarse_albedo: tf.Tensor, uv_mask: tf.Tensor,
                blur_sigma: float = FineLossWeights.alb_blur_sigma,
                detail_weight: float = FineLossWeights.alb_detail_weight) -> tf.Tensor:
    """L_alb (Eq. 12, our definition; the paper's text is lost, see GUIDE §2).

        L_alb = mean_m |G_σ(A_d) − G_σ(A_c)|₁ + w_s · mean_m |A_d − A_c|₁

    G_σ is the mask-normalised Gaussian low-pass (:func:`gaussian_lowpass`),
    A_d the detailed and A_c the coarse albedo map, means over texels inside
    the layout and over channels. The detailed map may add high-frequency
    detail but may not change the coarse map's low frequencies, so slowly
    varying shading (which SH light and the geometry explain) cannot move
    into the albedo; the sparsity term (w_s, ours) keeps the detail where
    the photo needs it. G_σ is linear, so the first term is computed as
    |G_σ(A_d − A_c)|.

    Args:
      detail_albedo: A_d, float32 [B, S, S, 3], the albedo module's output.
      coarse_albedo: A_c, float32 [B, S, S, 3], the coarse (3DMM) albedo map.
      uv_mask: float32 [B or 1, S, S, 1], 1 inside the UV layout.
      blur_sigma: σ in texels of a 256² map (``alb_blur_sigma``); S must be static.
      detail_weight: w_s (``alb_detail_weight``).
    Returns:
      float32 [B]; 0 when A_d = A_c. Texels outside the mask do not matter.
    """
    dtype = _dtype(detail_albedo)
    diff = tf.cast(detail_albedo, dtype) - tf.cast(coarse_albedo, dtype)
    mask = tf.broadcast_to(tf.cast(uv_mask, dtype), tf.shape(diff[..., :1]))
    diff = tf.where(mask > 0, diff, tf.zeros_like(diff)) * mask
    sigma = blur_sigma * int(diff.shape[1]) / UV_REFERENCE_SIZE
    low = _masked_mean(tf.abs(gaussian_lowpass(diff, mask, sigma)), mask)
    return low + detail_weight * _masked_mean(tf.abs(diff), mask)


# -------------------------------------------------------------------- Eq. 13
def smoothness_loss(displacement: tf.Tensor, detail_normals: tf.Tensor,
                    coarse_normals: tf.Tensor, uv_mask: tf.Tensor,
                    normal_weight: float = FineLossWeights.normal_weight,
                    disp_weight: float = FineLossWeights.disp_weight) -> tf.Tensor:
    """L_smo (Eq. 13, our definition after Chen et al. 2020; the paper's text is lost).

        L_smo = Σ_{d ∈ →, ↓, ↘, ↙} mean_{p, p+d ∈ m} (S/256)·|D(p+d) − D(p)|
                + w_n · mean_m ‖n_fine − n_coarse‖²₂ + w_d · mean_m |D|

    The first term is Chen's UV smoothness (first-order differences plus
    the two diagonals), over texel pairs that are both inside the layout,
    scaled by S/256 so that a smooth D costs the same at every UV
    resolution. It is L1 (total variation), not Chen's square: D is in
    decimetres (model units; wrinkles are ~0.01), where squares would be
    ~100× smaller than the photometric loss and the paper's λ_smo moot; L1
    also lets wrinkles keep sharp creases while texel noise stays expensive.
    The normal term is Chen's squared difference (= 2(1 − cos) for unit
    normals), which w_n was set for; the magnitude term is L1 like the first.

    Args:
      displacement: D, float32 [B, S, S, 1] in decimetres (+ outwards).
      detail_normals: float32 [B, S, S, 3], e.g. from
        :func:`recon_tf.render.detail.displace` (gradients reach D through it).
      coarse_normals: float32 [B, S, S, 3], the coarse normal map.
      uv_mask: float32 [B or 1, S, S, 1], 1 inside the UV layout; S static.
      normal_weight: w_n. disp_weight: w_d.
    Returns:
      float32 [B]; 0 for D = 0 with equal normals. Texels outside the mask
      do not matter.
    """
    dtype = _dtype(displacement)
    d = tf.cast(displacement, dtype)
    mask = tf.broadcast_to(tf.cast(uv_mask, dtype), tf.shape(d))
    d = tf.where(mask > 0, d, tf.zeros_like(d)) * mask
    scale = int(d.shape[1]) / UV_REFERENCE_SIZE
    pairs = [((slice(None), slice(1, None)), (slice(None), slice(None, -1))),  # →
             ((slice(1, None), slice(None)), (slice(None, -1), slice(None))),  # ↓
             ((slice(1, None), slice(1, None)), (slice(None, -1), slice(None, -1))),  # ↘
             ((slice(1, None), slice(None, -1)), (slice(None, -1), slice(1, None)))]  # ↙
    grad = 0.0
    for (ra, ca), (rb, cb) in pairs:
        both = mask[:, ra, ca] * mask[:, rb, cb]
        grad += _masked_mean(scale * tf.abs(d[:, ra, ca] - d[:, rb, cb]), both)
    dn = tf.cast(detail_normals, dtype) - tf.cast(coarse_normals, dtype)
    normal = _masked_mean(tf.reduce_sum(tf.square(dn), axis=-1, keepdims=True), mask)
    return grad + normal_weight * normal + disp_weight * _masked_mean(tf.abs(d), mask)


# -------------------------------------------------------------------- Eq. 11
def fine_loss(weights: FineLossWeights, pho: tf.Tensor, identity: tf.Tensor, alb: tf.Tensor,
              smo: tf.Tensor) -> tf.Tensor:
    """L_fine (Eq. 11) = λ_pho L_pho + λ_id L_id + λ_alb L_alb + λ_smo L_smo.

    Args:
      weights: the λs (w_n, w_d and our Eq. 12 weights are applied inside
        :func:`smoothness_loss` and :func:`albedo_loss`).
      pho: L_pho, float32 [B]: :func:`photometric_loss` (Eq. 7) of the
        photo against the fine render.
      identity: L_id, float32 [B]: :func:`identity_loss` (Eq. 9) of the
        photo's and the fine render's recognition features.
      alb: L_alb, float32 [B], from :func:`albedo_loss`.
      smo: L_smo, float32 [B], from :func:`smoothness_loss`.
    Returns:
      float32 [B].
    """
    pho, identity, alb, smo = (tf.convert_to_tensor(x, _dtype(x))
                               for x in (pho, identity, alb, smo))
    return (weights.pho_weight * pho + weights.id_weight * identity
            + weights.alb_weight * alb + weights.smo_weight * smo)
