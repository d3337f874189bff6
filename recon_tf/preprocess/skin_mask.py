"""The face-skin mask V of Eq. 7 (1 on face skin, 0 elsewhere).

The paper takes V from 3DDFA-V2 [42] (the visible, rendered face region).
We use a method that needs no extra network and is robust to hair, beards,
glasses' rims and occluders, in three parts:

1. **Geometry (landmarks).** The face region is the polygon through the jaw
   contour (points 0-16) and the eyebrows (17-26) raised towards the forehead
   by ``forehead`` × the inter-ocular distance d, along the chin→eyes
   direction. From it we remove the eyes (36-41, 42-47, grown by 0.12·d), the
   eyebrows (17-21, 22-26, stroked 0.2·d wide) and the mouth (outer lip
   48-59, grown by 0.06·d): regions whose appearance a skin albedo cannot
   explain.
2. **Colour (skin model).** A Gaussian on (Cr, Cb) in YCrCb (OpenCV's
   BT.601 full range) is fitted to the pixels of the nose and both cheeks
   (robustly: median start, two re-fits keeping samples within the 95%
   ellipse, plus a small diagonal prior so grayscale photos do not give a
   singular covariance). A face-region pixel is skin when its Mahalanobis
   distance is below ``max_mahalanobis`` (default 3.0) and its luma Y is not
   far below the cheeks' (Y ≥ median − 3.5·σ_Y: dark hair, beard, shadows
   under occluders are dropped; shading on skin mostly stays). A 3×3 opening
   and a 7×7 closing remove speckle and fill pores and specular spots.

3. **Occluders** (colour photos only). A face mask, a hand or a microphone over
   the nose and cheeks would teach the colour model the occluder's colour: the
   blue of a surgical mask became "skin" and was fitted into the albedo. So each
   sample part (nose, left cheek, right cheek) whose median chroma is not
   skin-like (Cr − Cb < ``SKIN_MIN_CR_MINUS_CB``; skin of every tone is redder
   than it is blue, a white or blue mask is not) is dropped, and a forehead band
   above the brows is sampled in its place when it is skin-like. Parts are
   dropped only when some part (forehead included) is clearly skin-like
   (≥ ``SKIN_CLEAR_CR_MINUS_CB``); otherwise (a colour cast, a desaturated
   print) all three are used as before. Pixels of
   the face region whose chroma lies far from the fitted skin colour
   (Mahalanobis > ``OCCLUDER_MAHALANOBIS``) and that form a connected patch of
   at least ``OCCLUDER_MIN_AREA`` · d² (a surgical mask covers about 1 d², an
   eye's white 0.03 d², a brow 0.1–0.2 d²) are returned as ``occluded``:
   callers keep them out of the brow, lip and eye regions that they add
   to the mask without a colour test. A photo is a colour photo when the
   face region's median |Cr − 128| + |Cb − 128| ≥ 4. **Sunglasses** (colour
   or grayscale) are found by brightness instead: where at least
   ``DARK_LENS_FRACTION`` of each eye's surroundings (the eye grown by 0.1 d)
   is darker than ``DARK_LENS_LUMA`` × the skin's median luma, the dark pixels
   within 0.3 d of the eyes (and a rim of 0.05 d around them) are occluders
   too; an open eye with its lids and lashes is far lighter. Both eyes must be
   dark: a face lit from the side can hide one eye in a deep shadow. Dark brows
   within that reach go with the lenses.

4. **Background** (outside the face: colour photos only; the fit's silhouette term,
   :func:`recon_tf.losses.silhouette_loss`). Pixels outside the face polygon
   (step 1) and outside the nose and mouth (their points' hull grown by 0.15 d,
   which may stand out of the jaw line of a turned head) whose chroma lies
   further than ``BACKGROUND_MAHALANOBIS`` σ from the skin colour, plus every
   region that such pixels cut off from the face (a skin-coloured patch of the
   surroundings that does not touch the face): what a rendered face must not
   cover. Skin-coloured surroundings that touch the face (a neck, a beige wall
   behind it) are not background, so the term acts only where the colour is
   clearly not the face's. An **open mouth**'s inside (the inner-lip polygon, when the
   inner lips stand ``MOUTH_OPEN_GAP`` eye-centre distances apart) is background as well, in
   colour and grayscale photos (:func:`mouth_opening`): the face model has no teeth,
   and the lips' inward curl, rendered over the teeth, hung 0.5–4 photo pixels into
   the opening on smiling photos.

If the colour model cannot be trusted (fewer than ``min_samples`` sample
pixels, or it keeps less than ``min_keep`` of the face region), the
geometric mask alone is returned; :class:`SkinMask` says which was used.
Pixels outside the source image (``valid`` = 0) are never skin.

All inputs/outputs are in the same pixel grid: image uint8 [H, W, 3] RGB,
landmarks float [68, 2] (x right, y down, pixel centres at integers), masks
uint8 [H, W] with values 0/255.
"""

from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np

JAW = list(range(0, 17))
BROWS = list(range(17, 27))
LEFT_BROW, RIGHT_BROW = list(range(17, 22)), list(range(22, 27))
LEFT_EYE, RIGHT_EYE = list(range(36, 42)), list(range(42, 48))
OUTER_LIP = list(range(48, 60))
INNER_LIP = list(range(60, 68))
NOSE = [27, 31, 32, 33, 34, 35]
LEFT_CHEEK = [1, 2, 3, 4, 48, 31, 40, 41]
RIGHT_CHEEK = [15, 14, 13, 12, 54, 35, 47, 46]

_SHIFT = 4  # fixed-point bits for sub-pixel polygon drawing
_CHI2_95_2DOF = 5.991


class SkinMask(NamedTuple):
    """Result of :func:`skin_mask`.

    ``mask``: uint8 [H, W], 0/255. ``method``: ``"colour"`` (geometry ∩ skin
    colour) or ``"geometry"`` (the colour model was not trusted).
    ``occluded``: uint8 [H, W], 0/255, the occluders found (module docstring);
    all 0 for grayscale photos and when the colour model was not trusted.
    ``background``: uint8 [H, W], 0/255, clearly not the face (module docstring,
    part 4); all 0 for grayscale photos and when the colour model was not trusted.
    """

    mask: np.ndarray
    method: str
    occluded: np.ndarray | None = None
    background: np.ndarray | None = None


# Skin of any tone has Cr − Cb above this (OpenCV's full-range YCrCb); occluders
# such as white or blue masks do not (module docstring).
SKIN_MIN_CR_MINUS_CB = 8.0
# ... and parts are dropped only when another part is clearly skin (at least this).
SKIN_CLEAR_CR_MINUS_CB = 15.0
# Occluders: chroma this many σ from the skin model, in patches of at least this
# many squared eye distances.
OCCLUDER_MAHALANOBIS = 9.0
OCCLUDER_MIN_AREA = 0.35
# Sunglasses: an eye's surroundings at least this fraction darker than this × the
# skin's median luma (module docstring).
DARK_LENS_FRACTION = 0.75
DARK_LENS_LUMA = 0.45
# A face region whose median chroma offset from grey is below this is grayscale.
GRAYSCALE_CHROMA = 4.0
# Background: chroma this many σ from the skin model, outside the face (part 4).
BACKGROUND_MAHALANOBIS = 5.0
# The mouth opening (inner-lip polygon, eroded by MOUTH_MARGIN_PX) is background too
# when the inner lips stand this far apart on average (in eye-centre distances).
MOUTH_OPEN_GAP = 0.08
MOUTH_MARGIN_PX = 1


def _pts(points: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(points, np.float64) * (1 << _SHIFT)).astype(np.int32)


def _fill(mask: np.ndarray, points: np.ndarray, value: int = 255) -> None:
    cv2.fillPoly(mask, [_pts(points)], value, lineType=cv2.LINE_8, shift=_SHIFT)


def _stroke(mask: np.ndarray, points: np.ndarray, width: float, closed: bool,
            value: int = 255) -> None:
    thickness = max(1, int(round(width)))
    cv2.polylines(mask, [_pts(points)], closed, value, thickness=thickness,
                  lineType=cv2.LINE_8, shift=_SHIFT)


def _eye_distance(lm: np.ndarray) -> float:
    return float(np.linalg.norm(lm[LEFT_EYE].mean(0) - lm[RIGHT_EYE].mean(0)))


def _upward(lm: np.ndarray) -> np.ndarray:
    """Unit vector [2] from the chin (iBUG 8) towards the eyes' midpoint."""
    up = 0.5 * (lm[LEFT_EYE].mean(0) + lm[RIGHT_EYE].mean(0)) - lm[8]
    return up / max(np.linalg.norm(up), 1e-6)


def face_region(landmarks: np.ndarray, shape: tuple[int, int],
                forehead: float = 0.8) -> np.ndarray:
    """uint8 [H, W] 0/255: the jaw + raised-eyebrow polygon (no exclusions).

    Args:
      landmarks: float [68, 2].
      shape: (H, W) of the output.
      forehead: how far the eyebrows are raised, in inter-ocular distances.
    """
    lm = np.asarray(landmarks, np.float64)
    up = _upward(lm)
    raised = lm[BROWS][::-1] + forehead * _eye_distance(lm) * up
    mask = np.zeros(shape, np.uint8)
    _fill(mask, np.concatenate([lm[JAW], raised]))
    return mask


def excluded_regions(landmarks: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """uint8 [H, W] 0/255: eyes, eyebrows and mouth (grown by fractions of d)."""
    lm = np.asarray(landmarks, np.float64)
    d = _eye_distance(lm)
    mask = np.zeros(shape, np.uint8)
    for eye in (LEFT_EYE, RIGHT_EYE):
        _fill(mask, lm[eye])
        _stroke(mask, lm[eye], 0.24 * d, closed=True)
    for brow in (LEFT_BROW, RIGHT_BROW):
        _stroke(mask, lm[brow], 0.2 * d, closed=False)
    _fill(mask, lm[OUTER_LIP])
    _stroke(mask, lm[OUTER_LIP], 0.12 * d, closed=True)
    return mask


def feature_regions(landmarks: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """uint8 [H, W] 0/255: eyebrows and lips (outer lip polygon minus the inner mouth).

    The facial features a face model's albedo can paint (the eyes cannot: meshes
    have no eyeballs; the open mouth shows teeth or a hole). Per-photo fitting
    adds them to the skin mask so the albedo's lip and brow modes are fitted.
    """
    lm = np.asarray(landmarks, np.float64)
    d = _eye_distance(lm)
    mask = np.zeros(shape, np.uint8)
    for brow in (LEFT_BROW, RIGHT_BROW):
        _stroke(mask, lm[brow], 0.12 * d, closed=False)
    _fill(mask, lm[OUTER_LIP])
    inner = np.zeros(shape, np.uint8)
    _fill(inner, lm[INNER_LIP])
    return cv2.bitwise_and(mask, cv2.bitwise_not(inner))


def detail_regions(landmarks: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """uint8 [H, W] 0/255: eyes, eyebrows and mouth with their surroundings
    (:func:`excluded_regions`), inside the face polygon (:func:`face_region`).

    What the fine stage paints beside the skin: per-photo fine fitting
    (:meth:`recon_tf.fine.FineStage.fit`) reproduces lash lines, brows, the
    eye opening and the lips through the detail albedo, which the coarse
    basis cannot. The skin-colour test of :func:`skin_mask` is not applied
    here (brows, lashes and lips fail it), so only the landmarks bound it:
    hair and background outside the face polygon stay out.
    """
    return cv2.bitwise_and(excluded_regions(landmarks, shape), face_region(landmarks, shape))


def geometric_mask(landmarks: np.ndarray, shape: tuple[int, int],
                   forehead: float = 0.8) -> np.ndarray:
    """uint8 [H, W] 0/255: face region minus eyes, eyebrows and mouth."""
    region = face_region(landmarks, shape, forehead)
    return cv2.bitwise_and(region, cv2.bitwise_not(excluded_regions(landmarks, shape)))


def _sample_parts(landmarks: np.ndarray, shape: tuple[int, int]) -> list[np.ndarray]:
    """bool [H, W] masks of the nose, left cheek and right cheek, then the forehead
    band (the brows raised by 0.15–0.45 d, towards the forehead)."""
    lm = np.asarray(landmarks, np.float64)
    parts = []
    for part in (NOSE, LEFT_CHEEK, RIGHT_CHEEK):
        mask = np.zeros(shape, np.uint8)
        _fill(mask, lm[part])
        parts.append(mask > 0)
    up = _upward(lm)
    d = _eye_distance(lm)
    brows = lm[BROWS]
    band = np.concatenate([brows + 0.15 * d * up, (brows + 0.45 * d * up)[::-1]])
    mask = np.zeros(shape, np.uint8)
    _fill(mask, band)
    parts.append(mask > 0)
    return parts


def _skin_samples(chroma: np.ndarray, parts: list[np.ndarray], region: np.ndarray,
                  colour: bool) -> np.ndarray:
    """bool [H, W]: where the skin colour is sampled (module docstring, 3.)."""
    cheeks_nose = [p & region for p in parts[:3]]
    if not colour:
        return np.logical_or.reduce(cheeks_nose)

    def cr_minus_cb(part: np.ndarray) -> float:
        if part.sum() < 10:
            return -np.inf
        return float(np.median(chroma[..., 0][part] - chroma[..., 1][part]))

    forehead = parts[3] & region
    redness = [cr_minus_cb(p) for p in cheeks_nose + [forehead]]
    if max(redness) < SKIN_CLEAR_CR_MINUS_CB:  # no part is clearly skin: a colour cast
        return np.logical_or.reduce(cheeks_nose)
    kept = [p for p, r in zip(cheeks_nose, redness) if r >= SKIN_MIN_CR_MINUS_CB]
    if len(kept) == len(cheeks_nose):
        return np.logical_or.reduce(cheeks_nose)
    if redness[3] >= SKIN_MIN_CR_MINUS_CB:
        kept.append(forehead)
    return np.logical_or.reduce(kept)


def _dark_lenses(luma: np.ndarray, landmarks: np.ndarray, face: np.ndarray,
                 skin_luma: float) -> np.ndarray:
    """uint8 [H, W] 0/255: the dark pixels around each eye whose surroundings (the
    eye grown by 0.1 d) are at least
    ``DARK_LENS_FRACTION`` darker than ``DARK_LENS_LUMA`` × the skin's median luma,
    for both eyes: sunglasses (module docstring)."""
    lm = np.asarray(landmarks, np.float64)
    d = _eye_distance(lm)
    out = np.zeros(luma.shape, np.uint8)
    dark = luma < DARK_LENS_LUMA * skin_luma
    lenses = np.zeros(luma.shape, np.uint8)
    for eye in (LEFT_EYE, RIGHT_EYE):
        around = np.zeros(luma.shape, np.uint8)
        _fill(around, lm[eye])
        _stroke(around, lm[eye], 0.2 * d, closed=True)
        around = (around > 0) & face
        if around.sum() < 10 or dark[around].mean() < DARK_LENS_FRACTION:
            return out  # both eyes, or none: one eye in a deep shadow is not a lens
        _fill(lenses, lm[eye])
        _stroke(lenses, lm[eye], 0.6 * d, closed=True)  # the lens reaches beyond the eye
    out[(lenses > 0) & face & dark] = 255
    grow = max(1, int(round(0.05 * d)))  # and its soft rim
    return cv2.dilate(out, np.ones((2 * grow + 1, 2 * grow + 1), np.uint8)) & (
        face.astype(np.uint8) * 255)


def _occluders(far: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """uint8 [H, W] 0/255: connected patches of ``far`` of at least
    ``OCCLUDER_MIN_AREA`` · d²."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(far.astype(np.uint8), 8)
    min_area = OCCLUDER_MIN_AREA * _eye_distance(np.asarray(landmarks, np.float64)) ** 2
    big = np.nonzero(stats[1:, cv2.CC_STAT_AREA] >= min_area)[0] + 1
    return np.isin(labels, big).astype(np.uint8) * 255


def _fit_gaussian(samples: np.ndarray, prior_var: float) -> tuple[np.ndarray, np.ndarray]:
    """Robust mean [2] and inverse covariance [2, 2] of float [N, 2] samples."""
    mean = np.median(samples, axis=0)
    keep = samples
    inv = None
    for _ in range(3):
        diff = keep - mean
        cov = diff.T @ diff / max(len(keep) - 1, 1) + prior_var * np.eye(2)
        inv = np.linalg.inv(cov)
        d2 = np.einsum("ni,ij,nj->n", samples - mean, inv, samples - mean)
        inliers = samples[d2 < _CHI2_95_2DOF]
        if len(inliers) < 10:
            break
        keep = inliers
        mean = keep.mean(0)
    return mean, inv


def skin_mask(image: np.ndarray, landmarks: np.ndarray, valid: np.ndarray | None = None,
              forehead: float = 0.8, max_mahalanobis: float = 3.0, luma_sigmas: float = 3.5,
              min_samples: int = 100, min_keep: float = 0.3,
              prior_std: float = 2.0) -> SkinMask:
    """Compute the face-skin mask of an (aligned) face image.

    Args:
      image: uint8 [H, W, 3] RGB.
      landmarks: float [68, 2] in the image's pixels.
      valid: optional uint8 [H, W]; 0 marks padding outside the source photo.
      forehead: forehead height in inter-ocular distances (see the module docstring).
      max_mahalanobis: colour threshold on the (Cr, Cb) Mahalanobis distance.
      luma_sigmas: pixels darker than median − luma_sigmas·σ_Y are not skin.
      min_samples: fewer cheek/nose sample pixels → geometric mask only.
      min_keep: colour mask keeping less than this fraction of the region →
        geometric mask only.
      prior_std: std (in Cr/Cb units, 0-255) added to the colour covariance.
    Returns:
      :class:`SkinMask` with the uint8 [H, W] 0/255 mask.
    """
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB image [H, W, 3], got {image.shape}")
    shape = image.shape[:2]
    face = face_region(landmarks, shape, forehead) > 0
    if valid is not None:
        face &= valid > 0
    region = face & (excluded_regions(landmarks, shape) == 0)  # the geometric mask
    geometry = region.astype(np.uint8) * 255
    none = np.zeros(shape, np.uint8)
    ycrcb = cv2.cvtColor(image, cv2.COLOR_RGB2YCrCb).astype(np.float64)
    chroma = ycrcb[..., 1:]
    colour = bool(face.any()) and float(np.median(
        np.abs(chroma[face] - 128.0).sum(axis=-1))) >= GRAYSCALE_CHROMA
    samples_at = _skin_samples(chroma, _sample_parts(landmarks, shape), region, colour)
    if samples_at.sum() < min_samples:
        return SkinMask(geometry, "geometry", none, none)
    mean, inv = _fit_gaussian(chroma[samples_at], prior_std ** 2)
    diff = chroma - mean
    d2 = np.einsum("hwi,ij,hwj->hw", diff, inv, diff)
    occluded = (_occluders(face & (d2 > OCCLUDER_MAHALANOBIS ** 2), landmarks) if colour
                else none)
    luma = ycrcb[..., 0][samples_at]
    y_med = float(np.median(luma))
    y_sigma = 1.4826 * float(np.median(np.abs(luma - y_med))) + 1.0
    occluded = np.maximum(occluded, _dark_lenses(ycrcb[..., 0], landmarks, face, y_med))
    skin = (d2 < max_mahalanobis ** 2) & (ycrcb[..., 0] >= y_med - luma_sigmas * y_sigma)
    skin = (skin & region).astype(np.uint8) * 255
    skin = cv2.morphologyEx(skin, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    skin = cv2.morphologyEx(skin, cv2.MORPH_CLOSE, np.ones((7, 7), np.uint8))
    skin = cv2.bitwise_and(skin, geometry)
    if (skin > 0).sum() < min_keep * region.sum():
        return SkinMask(geometry, "geometry", none, none)
    background = (_background(d2, landmarks, face, valid) if colour
                  else mouth_opening(landmarks, skin.shape, valid))
    return SkinMask(skin, "colour", occluded, background)


def _background(d2: np.ndarray, landmarks: np.ndarray, face: np.ndarray,
                valid: np.ndarray | None) -> np.ndarray:
    """uint8 [H, W] 0/255: clearly not the face (module docstring, part 4), from the
    squared chroma distance ``d2`` to the skin model and the face polygon ``face``."""
    lm = np.asarray(landmarks, np.float64)
    features = np.zeros(face.shape, np.uint8)
    hull = cv2.convexHull(lm[list(range(27, 36)) + OUTER_LIP].astype(np.float32))[:, 0]
    _fill(features, hull)
    _stroke(features, np.concatenate([hull, hull[:1]]), 0.3 * _eye_distance(lm), closed=True)
    out = (d2 > BACKGROUND_MAHALANOBIS ** 2) & ~face & (features == 0)
    out = cv2.morphologyEx(out.astype(np.uint8) * 255, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    # Skin-coloured islands apart from the face (a hand, a face on a poster, a beige
    # patch) are not the face either: the term would pull vertices towards them.
    _, labels = cv2.connectedComponents((out == 0).astype(np.uint8), connectivity=8)
    face_labels = np.unique(labels[face & (out == 0)])
    out[~np.isin(labels, face_labels) & (labels > 0)] = 255
    out = np.maximum(out, mouth_opening(lm, face.shape))
    if valid is not None:
        out[valid == 0] = 0
    return out


def mouth_opening(landmarks: np.ndarray, shape: tuple[int, int],
                  valid: np.ndarray | None = None) -> np.ndarray:
    """uint8 [H, W] 0/255: the open mouth's inside (teeth, tongue, dark), which the face
    model does not have: the inner-lip polygon (points 60–67) eroded by
    ``MOUTH_MARGIN_PX``, when the upper and lower inner lips (61/67, 62/66, 63/65)
    stand ``MOUTH_OPEN_GAP`` eye-centre distances apart on average; all 0 otherwise, and
    where ``valid`` is 0. Part of the background (module docstring, part 4), on
    grayscale photos too."""
    lm = np.asarray(landmarks, np.float64)
    out = np.zeros(shape, np.uint8)
    gap = np.mean([np.linalg.norm(lm[a] - lm[b]) for a, b in ((61, 67), (62, 66), (63, 65))])
    if gap < MOUTH_OPEN_GAP * _eye_distance(lm):
        return out
    _fill(out, lm[INNER_LIP])
    k = 2 * MOUTH_MARGIN_PX + 1
    out = cv2.erode(out, np.ones((k, k), np.uint8))
    if valid is not None:
        out[valid == 0] = 0
    return out
