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
half a face at the photo's side). In the cut variants the points outside the frame
keep their coordinates (negative), so the NME still counts all 68.
"""

from __future__ import annotations

import cv2
import numpy as np

from recon_tf.data.pipeline import FLIP_PERMUTATION_68

VARIANTS = ("orig", "scale0.5", "scale0.25", "rot25", "rot45", "rot90", "flip", "gray", "dark",
            "tinyface", "tight", "cuteyes", "cuthalf")


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
    raise ValueError(f"unknown variant {name!r}")

