"""Altered copies of annotated photos, with their landmarks carried along: how a 2D
front end is surveyed on faces in the wild (``experiments/landmark_survey.py``;
the photos come from :func:`recon_tf.data.readers.read_ls3dw`).

Points are float [N, 2] (x, y) in pixels, centres at integer coordinates (the
``.pts`` convention of :func:`recon_tf.data.readers.read_pts`); 68-point sets
in iBUG order (``flip`` re-indexes them with
:data:`recon_tf.data.pipeline.FLIP_PERMUTATION_68`).

Variants (:data:`VARIANTS`): ``orig``; ``scale<f>`` (area-downscaled by f: small,
blurry faces); ``rot<deg>`` (in-plane rotation about the centre, counter-clockwise
as displayed, canvas grown to fit, borders reflected: tilted heads); ``flip``
(mirrored); ``gray``; ``dark`` (gamma 2.2, × 0.6: underexposed); ``tinyface`` (the
photo a third of its size inside a grey border: a face far from the camera);
``tight`` (cropped to the 68 points' bounding box: a face crop that fills the frame,
from the brows to the chin, as crops made from landmarks come); ``cuteyes`` (all
above the eyes' centre line cut off: a face cut by the photo's top edge, forehead
and brows out of frame); ``cuthalf`` (all left of the nose tip, iBUG 30, cut off:
half a face at the photo's side); ``rot180`` (upside down); ``blur`` (Gaussian, σ = 4 %
of the outer-eye distance: out of focus or moving); ``noise`` (Gaussian, σ = 25 of
255, fixed seed: a high-ISO phone photo); ``jpeg5`` (JPEG quality 5: heavy blocking);
``bright`` (gamma 0.5, × 1.4, clipped: overexposed); ``mask`` (the lower face, jaw
points 2–14 up to the nose bridge's point 29, filled with a flat blue,
:data:`MASK_COLOUR`: a surgical mask); ``sunglasses`` (dark ellipses over both
eyes, 0.6 × 0.4 of the outer-eye distance). In the cut variants the points outside
the frame
keep their coordinates (negative), so the NME still counts all 68.
"""

from __future__ import annotations

import cv2
import numpy as np

from recon_tf.data.pipeline import FLIP_PERMUTATION_68

VARIANTS = ("orig", "scale0.5", "scale0.25", "rot25", "rot45", "rot90", "flip", "gray", "dark",
            "tinyface", "tight", "cuteyes", "cuthalf", "rot180", "blur", "noise", "jpeg5",
            "bright", "mask", "sunglasses")

MASK_COLOUR = (90, 140, 200)  # RGB of the ``mask`` variant


def _rotate(image: np.ndarray, points: np.ndarray, degrees: float) -> tuple[np.ndarray, np.ndarray]:
    """Rotate about the centre (counter-clockwise as displayed), canvas grown to fit."""
    h, w = image.shape[:2]
    m = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), degrees, 1.0)
    c, s = abs(m[0, 0]), abs(m[0, 1])
    nw, nh = int(round(h * s + w * c)), int(round(h * c + w * s))
    m[0, 2] += (nw - w) / 2.0
    m[1, 2] += (nh - h) / 2.0
    out = cv2.warpAffine(image, m, (nw, nh), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REFLECT)
    return out, points @ m[:, :2].T + m[:, 2]


def _scale(image: np.ndarray, points: np.ndarray, factor: float) -> tuple[np.ndarray, np.ndarray]:
    """Area-resample by ``factor``; pixel centres at integers map as (p + ½)·f − ½."""
    h, w = image.shape[:2]
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    out = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    fx, fy = size[0] / w, size[1] / h
    return out, (points + 0.5) * np.array([fx, fy]) - 0.5


def photo_variant(name: str, image: np.ndarray,
                  points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One altered copy (module docstring) of an RGB uint8 [H, W, 3] photo and its
    [68, 2] points: (image uint8 [H', W', 3], points float64 [68, 2]). Raises
    ValueError for an unknown variant name."""
    points = np.asarray(points, np.float64)
    if name == "orig":
        return image, points
    if name.startswith("scale"):
        return _scale(image, points, float(name[len("scale"):]))
    if name.startswith("rot"):
        return _rotate(image, points, float(name[len("rot"):]))
    if name == "flip":
        w = image.shape[1]
        return (np.ascontiguousarray(image[:, ::-1]),
                np.stack([w - 1 - points[FLIP_PERMUTATION_68, 0],
                          points[FLIP_PERMUTATION_68, 1]], 1))
    if name == "gray":
        return np.repeat(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[..., None], 3, -1), points
    if name == "dark":
        return (255.0 * 0.6 * (image / 255.0) ** 2.2).astype(np.uint8), points
    if name == "tinyface":
        h, w = image.shape[:2]
        canvas = cv2.copyMakeBorder(image, h, h, w, w, cv2.BORDER_CONSTANT,
                                    value=(128, 128, 128))
        return _scale(canvas, points + np.array([w, h]), 1.0 / 3.0)
    if name == "tight":
        (x0, y0), (x1, y1) = points.min(axis=0).astype(int), points.max(axis=0).astype(int)
        x0, y0 = max(x0, 0), max(y0, 0)
        return np.ascontiguousarray(image[y0:y1 + 1, x0:x1 + 1]), points - np.array([x0, y0])
    if name == "cuteyes":
        y0 = max(int(round(points[36:48, 1].mean())), 0)
        return np.ascontiguousarray(image[y0:]), points - np.array([0.0, y0])
    if name == "cuthalf":
        x0 = max(int(round(points[30, 0])), 0)
        return np.ascontiguousarray(image[:, x0:]), points - np.array([x0, 0.0])
    if name == "blur":
        sigma = max(0.04 * _eye_distance(points), 1.0)
        return cv2.GaussianBlur(image, (0, 0), sigma), points
    if name == "noise":
        rng = np.random.default_rng(0)
        noisy = image + rng.normal(0.0, 25.0, image.shape)
        return np.clip(noisy, 0, 255).astype(np.uint8), points
    if name == "jpeg5":
        ok, data = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 5])
        return np.ascontiguousarray(cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1]), points
    if name == "bright":
        return np.clip(255.0 * 1.4 * (image / 255.0) ** 0.5, 0, 255).astype(np.uint8), points
    if name == "mask":
        out = image.copy()
        poly = np.concatenate([points[2:15], points[[29]]])
        cv2.fillPoly(out, [np.round(poly).astype(np.int32)], MASK_COLOUR)
        return out, points
    if name == "sunglasses":
        out = image.copy()
        d = _eye_distance(points)
        for eye in (points[36:42], points[42:48]):
            c = eye.mean(axis=0)
            cv2.ellipse(out, (int(c[0]), int(c[1])), (int(0.3 * d), int(0.2 * d)), 0, 0, 360,
                        (15, 15, 20), -1)
        return out, points
    raise ValueError(f"unknown variant {name!r}")


def _eye_distance(points: np.ndarray) -> float:
    """Outer-eye-corner distance (iBUG 36–45) in pixels."""
    return float(np.linalg.norm(points[36] - points[45]))

