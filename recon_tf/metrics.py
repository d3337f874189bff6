"""Evaluation metrics: image agreement (Tables 1–3), landmark NME, mesh error.

Image metrics (GUIDE §7). Images are 0–255 (uint8 or float) [H, W, 3]
(a [H, W] grey image is accepted too); every metric is computed **per image**
over a boolean region mask [H, W], and tables average the per-image values.

* :func:`rmse`: root of the mean squared difference over the region's pixels
  and all channels, in 0–255 units.
* :func:`psnr`: ``20 log10(peak / RMSE)`` with ``peak = 255``; ``inf`` for
  identical regions.
* :func:`ssim`: Wang et al. 2004 ("Image quality assessment: from error
  visibility to structural similarity"), Gaussian window σ = 1.5 truncated to
  11×11, K1 = 0.01, K2 = 0.03, L = 255, population (co)variances; the SSIM map
  is computed per channel on the whole image (borders reflected), then
  averaged over the region's pixels and the channels. Equal to the ``full``
  map of ``skimage.metrics.structural_similarity(..., gaussian_weights=True,
  sigma=1.5, use_sample_covariance=False, data_range=255, channel_axis=-1)``
  averaged over the same pixels (checked in ``tests/test_metrics.py``).
* Regions (:data:`REGIONS`, :func:`region_mask`): ``"face"`` = the rendered
  face mask, intersected with the annotated landmark hull
  (:func:`landmark_hull_mask`) when one is given; ``"composite"`` = the whole
  image, where the render is composited over the input photo (pixels outside
  the face are the photo's own, so they add zero error). The two give very
  different numbers, so **every table must print the region it used**
  (:func:`describe_region` gives the label).

Other metrics:

* :func:`nme`: landmark error normalised by the outer-eye-corner distance
  (delegates to :func:`recon_tf.preprocess.landmarks.nme_outer_eyes`).
* :func:`rigid_vertex_error_mm`: mean per-vertex distance between a predicted and
  a true mesh (same topology) after rigid Procrustes alignment (rotation +
  translation, no scale), in millimetres. Used on held-out synthetic faces,
  whose true shape is known, by fitting and R-Net evaluation alike.
* :func:`identity_consistency`: for real photos, whose true shape is unknown, how
  much closer the neutral shapes reconstructed from photos of one person are to each
  other than to other people's (``experiments/identity_consistency.py``).
* NoW scan-to-mesh evaluation lives in :mod:`recon_tf.now_eval`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np

DM_TO_MM = 100.0
PEAK = 255.0
REGIONS = ("face", "composite")
# Wang et al. 2004 SSIM constants (L = 255 for 0–255 images).
SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5  # radius int(3.5 * 1.5 + 0.5) = 5: an 11×11 window, like Wang's
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def rigid_align(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Rigidly align ``pred`` onto ``truth`` (Kabsch, no scale, no reflection).

    Args:
      pred, truth: float [N, 3] corresponding points.
    Returns:
      float64 [N, 3], ``pred`` rotated and translated to best match ``truth``
      in the least-squares sense.
    """
    p, t = np.asarray(pred, np.float64), np.asarray(truth, np.float64)
    pm, tm = p.mean(0), t.mean(0)
    u, _, vt = np.linalg.svd((p - pm).T @ (t - tm))
    d = np.sign(np.linalg.det(u @ vt))
    rot = u @ np.diag([1.0, 1.0, d]) @ vt
    return (p - pm) @ rot + tm


def rigid_vertex_error_mm(pred: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None,
                          unit_to_mm: float = DM_TO_MM) -> float:
    """Mean vertex distance (mm) after rigid alignment of ``pred`` onto ``truth``.

    Args:
      pred, truth: float [N, 3] vertices in model units (decimetres for the
        library's face models).
      mask: bool [N] vertices to align and score (e.g. the front-face mask);
        None uses all.
      unit_to_mm: millimetres per model unit.
    Returns:
      the mean Euclidean distance over the masked vertices, in mm.
    """
    pred, truth = np.asarray(pred), np.asarray(truth)
    if mask is not None:
        mask = np.asarray(mask, bool)
        pred, truth = pred[mask], truth[mask]
    aligned = rigid_align(pred, truth)
    return float(np.linalg.norm(aligned - truth, axis=1).mean() * unit_to_mm)


def pairwise_vertex_distances_mm(shapes: np.ndarray, mask: np.ndarray | None = None,
                                 unit_to_mm: float = DM_TO_MM) -> np.ndarray:
    """float64 [F, F]: :func:`rigid_vertex_error_mm` between every two of F shapes
    (float [F, N, 3], same topology), aligning the second onto the first; 0 on the
    diagonal."""
    count = len(shapes)
    out = np.zeros((count, count))
    for i in range(count):
        for j in range(i + 1, count):
            out[i, j] = out[j, i] = rigid_vertex_error_mm(shapes[j], shapes[i], mask, unit_to_mm)
    return out


def identity_consistency(shapes: np.ndarray, identities: list[str],
                         mask: np.ndarray | None = None, unit_to_mm: float = DM_TO_MM
                         ) -> dict[str, float]:
    """How consistently neutral shapes recover identity across photos of one person.

    Every pair of shapes is rigidly aligned and its mean vertex distance taken
    (:func:`pairwise_vertex_distances_mm`); pairs of the same identity are *same* pairs, the
    others *different* pairs. A fit that returned the mean face for every photo
    would be perfectly consistent, so the distances alone say nothing: what
    matters is that same pairs are closer than different pairs.

    Args:
      shapes: float [F, N, 3] neutral shapes (same topology) in model units.
      identities: F labels; equal labels are the same person.
      mask: bool [N] vertices to align and score (e.g. the front face), or None.
      unit_to_mm: millimetres per model unit (1 for shapes already in mm).
    Returns:
      :func:`identity_consistency_of_distances` of the pairwise distances.
    Raises:
      ValueError: fewer than one same and one different pair, or mismatched sizes.
    """
    shapes = np.asarray(shapes)
    if len(shapes) != len(identities):
        raise ValueError(f"{len(shapes)} shapes but {len(identities)} identities")
    return identity_consistency_of_distances(
        pairwise_vertex_distances_mm(shapes, mask, unit_to_mm), identities)


def identity_consistency_of_distances(distances: np.ndarray, identities: list[str]
                                      ) -> dict[str, float]:
    """:func:`identity_consistency`'s scores from a float [F, F] matrix of pairwise
    distances (mm; only the upper triangle is read).

    Returns:
      dict of floats: ``same_mm`` and ``different_mm`` (mean distances of the same
      and different pairs), ``ratio`` (different / same: 1 is no identity at all),
      ``auc`` (the share of (same pair, different pair) combinations whose
      different pair is the farther, ties counted half: 0.5 is chance, 1 a perfect
      separation), ``same_pairs`` and ``different_pairs`` (counts).
    Raises:
      ValueError: fewer than one same and one different pair, or mismatched sizes.
    """
    distances = np.asarray(distances)
    if distances.shape != (len(identities), len(identities)):
        raise ValueError(f"distances of shape {distances.shape} for {len(identities)} "
                         "identities")
    same, different = [], []
    for i in range(len(identities)):
        for j in range(i + 1, len(identities)):
            (same if identities[i] == identities[j] else different).append(distances[i, j])
    if not same or not different:
        raise ValueError(f"need at least one same-person and one different-person pair; "
                         f"got {len(same)} and {len(different)}")
    s, d = np.asarray(same)[:, None], np.asarray(different)[None, :]
    auc = float(np.mean((d > s) + 0.5 * (d == s)))
    return {"same_mm": float(s.mean()), "different_mm": float(d.mean()),
            "ratio": float(d.mean() / max(s.mean(), 1e-12)), "auc": auc,
            "same_pairs": float(len(same)), "different_pairs": float(len(different))}


# --------------------------------------------------------------------------- image metrics


def _pair(photo: np.ndarray, render: np.ndarray, mask: np.ndarray
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validated float64 images [H, W, C] and a bool mask [H, W]."""
    x = np.asarray(photo, np.float64)
    y = np.asarray(render, np.float64)
    if x.shape != y.shape:
        raise ValueError(f"photo {x.shape} and render {y.shape} differ in shape")
    if x.ndim == 2:
        x, y = x[..., None], y[..., None]
    if x.ndim != 3:
        raise ValueError(f"images must be [H, W, C] or [H, W], got {x.shape}")
    m = np.asarray(mask, bool)
    if m.shape != x.shape[:2]:
        raise ValueError(f"mask {m.shape} does not match the image size {x.shape[:2]}")
    return x, y, m


def rmse(photo: np.ndarray, render: np.ndarray, mask: np.ndarray) -> float:
    """Root-mean-square difference over the region, in 0–255 units.

    Args:
      photo, render: uint8 or float [H, W, 3] (or [H, W]) images in 0–255.
      mask: bool [H, W] region; the mean runs over its pixels and all channels.
    Returns:
      RMSE ≥ 0; NaN when the mask is empty.
    """
    x, y, m = _pair(photo, render, mask)
    if not m.any():
        return float("nan")
    return float(np.sqrt(np.mean((x[m] - y[m]) ** 2)))


def psnr(photo: np.ndarray, render: np.ndarray, mask: np.ndarray, peak: float = PEAK) -> float:
    """Peak signal-to-noise ratio ``20 log10(peak / RMSE)`` over the region, in dB.

    Args:
      photo, render: uint8 or float [H, W, 3] (or [H, W]) images in 0–``peak``.
      mask: bool [H, W] region (all channels of its pixels count).
      peak: the maximum pixel value (255 for 0–255 images).
    Returns:
      PSNR in dB; ``inf`` when the region is identical, NaN when it is empty.
    """
    err = rmse(photo, render, mask)
    if math.isnan(err):
        return err
    if err == 0.0:
        return math.inf
    return float(20.0 * np.log10(peak / err))


def ssim_map(photo: np.ndarray, render: np.ndarray, data_range: float = PEAK,
             sigma: float = SSIM_SIGMA) -> np.ndarray:
    """Per-pixel, per-channel SSIM map (Wang et al. 2004) of the whole image.

    Gaussian-weighted local means, population variances and covariance
    (``scipy.ndimage.gaussian_filter``, σ = ``sigma``, truncated at 3.5σ: an
    11×11 window for σ = 1.5, borders reflected), C1 = (0.01 L)², C2 = (0.03 L)².

    Args:
      photo, render: uint8 or float [H, W, C] (or [H, W]) images in 0–``data_range``.
      data_range: L, the dynamic range (255 for 0–255 images).
      sigma: the Gaussian window's standard deviation in pixels.
    Returns:
      float64 [H, W, C] SSIM values in [-1, 1] (1 = structurally identical).
    """
    from scipy.ndimage import gaussian_filter

    x, y, _ = _pair(photo, render, np.ones(np.shape(photo)[:2], bool))
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2

    def blur(a: np.ndarray) -> np.ndarray:
        # sigma 0 along the channel axis: each channel is filtered on its own.
        return gaussian_filter(a, sigma=(sigma, sigma, 0.0), truncate=SSIM_TRUNCATE,
                               mode="reflect")

    mx, my = blur(x), blur(y)
    vx = blur(x * x) - mx * mx
    vy = blur(y * y) - my * my
    vxy = blur(x * y) - mx * my
    num = (2.0 * mx * my + c1) * (2.0 * vxy + c2)
    den = (mx * mx + my * my + c1) * (vx + vy + c2)
    return num / den


def ssim(photo: np.ndarray, render: np.ndarray, mask: np.ndarray) -> float:
    """Mean SSIM over the region's pixels and all channels (see :func:`ssim_map`).

    The map is computed on the whole image (the window sees pixels just
    outside the region), then averaged over ``mask``.

    Args:
      photo, render: uint8 or float [H, W, 3] (or [H, W]) images in 0–255.
      mask: bool [H, W] region.
    Returns:
      SSIM in [-1, 1] (1 for identical images); NaN when the mask is empty.
    """
    _, _, m = _pair(photo, render, mask)
    if not m.any():
        return float("nan")
    return float(ssim_map(photo, render)[m].mean())


def image_metrics(photo: np.ndarray, render: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """PSNR (dB), SSIM and RMSE (0–255) of one image over one region.

    Args:
      photo, render: uint8 or float [H, W, 3] images in 0–255.
      mask: bool [H, W] region (see :func:`region_mask`).
    Returns:
      ``{"psnr": float, "ssim": float, "rmse": float}``.
    """
    return {"psnr": psnr(photo, render, mask), "ssim": ssim(photo, render, mask),
            "rmse": rmse(photo, render, mask)}


def average_metrics(rows: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Per-image metric dicts → their means (tables average per image).

    NaN entries (empty regions) are skipped; an ``inf`` PSNR stays ``inf``.

    Args:
      rows: dicts such as :func:`image_metrics` returns.
    Returns:
      ``{key: mean}`` over the keys of the first row, plus ``"count"`` (images).
    """
    rows = list(rows)
    if not rows:
        return {"count": 0}
    out: dict[str, float] = {}
    for key in rows[0]:
        vals = np.array([float(r[key]) for r in rows], np.float64)
        vals = vals[~np.isnan(vals)]
        out[key] = float(vals.mean()) if vals.size else float("nan")
    out["count"] = len(rows)
    return out


# --------------------------------------------------------------------------- regions


def landmark_hull_mask(landmarks68: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Filled convex hull of 2-D landmarks.

    Args:
      landmarks68: float [K, 2] (x, y) points (usually the 68 annotated ones) in
        pixels, pixel centres at integer coordinates (x right, y down); they
        are rounded to the nearest pixel centre.
      shape: the image shape, (H, W) or (H, W, C).
    Returns:
      bool [H, W], True inside the hull (boundary pixels included).
    """
    import cv2

    h, w = int(shape[0]), int(shape[1])
    pts = np.asarray(landmarks68, np.float64).reshape(-1, 2)
    pts = pts[np.all(np.isfinite(pts), axis=1)]
    canvas = np.zeros((h, w), np.uint8)
    if len(pts):
        hull = cv2.convexHull(np.round(pts).astype(np.int32))
        cv2.fillConvexPoly(canvas, hull, 1)
    return canvas > 0


def region_mask(region: str, face_mask: np.ndarray, hull_mask: np.ndarray | None = None
                ) -> np.ndarray:
    """The evaluation region for image metrics.

    Args:
      region: ``"face"``: the rendered-face mask, ∩ ``hull_mask`` when given;
        ``"composite"``: the whole image (the render composited over the input).
      face_mask: bool [H, W] pixels covered by the rendered face.
      hull_mask: optional bool [H, W], e.g. :func:`landmark_hull_mask` of the
        annotated landmarks (used by ``"face"`` only).
    Returns:
      bool [H, W].
    """
    face_mask = np.asarray(face_mask, bool)
    if region == "face":
        if hull_mask is None:
            return face_mask.copy()
        hull_mask = np.asarray(hull_mask, bool)
        if hull_mask.shape != face_mask.shape:
            raise ValueError(f"hull_mask {hull_mask.shape} != face_mask {face_mask.shape}")
        return face_mask & hull_mask
    if region == "composite":
        return np.ones(face_mask.shape, bool)
    raise ValueError(f"unknown region {region!r}; choose one of {REGIONS}")


def face_region_psnr(photo: np.ndarray, render: np.ndarray, face_mask: np.ndarray,
                     landmarks68: np.ndarray) -> float:
    """PSNR (dB, 0–255) of a render composited over its photo, over the region of the
    README's per-photo targets: the rendered-face mask ∩ the filled hull of 68
    landmarks (:func:`landmark_hull_mask`).

    Args:
      photo, render: uint8 [H, W, 3] (the render composited over the photo).
      face_mask: bool [H, W] pixels the rendered front face covers.
      landmarks68: float [68, 2] pixels, centres at integers: annotated points for
        evaluation, the detector's for the main job's own report.
    Returns:
      PSNR in dB (NaN for an empty region).
    """
    return psnr(photo, render, region_mask("face", face_mask,
                                           landmark_hull_mask(landmarks68, face_mask.shape)))


def describe_region(region: str, with_hull: bool = False) -> str:
    """A one-line label for a table caption: which pixels the metrics used."""
    if region == "face":
        return ("face: rendered-face mask ∩ annotated landmark hull" if with_hull
                else "face: rendered-face mask")
    if region == "composite":
        return "composite: whole image, render composited over the input"
    raise ValueError(f"unknown region {region!r}; choose one of {REGIONS}")


# --------------------------------------------------------------------------- landmarks


def nme(pred: np.ndarray, truth: np.ndarray) -> float:
    """Landmark NME: mean point error / outer-eye-corner distance (iBUG 36–45).

    The definition is :func:`recon_tf.preprocess.landmarks.nme_outer_eyes`
    (called, not duplicated; imported lazily because that module loads
    TensorFlow).

    Args:
      pred, truth: float [68, 2] (x, y) landmarks in pixels.
    Returns:
      the NME as a fraction (multiply by 100 for %).
    """
    from recon_tf.preprocess.landmarks import nme_outer_eyes

    return nme_outer_eyes(pred, truth)
