"""Evaluation metrics.

* :func:`rigid_vertex_error_mm`: mean per-vertex distance between a predicted and
  a true mesh (same topology) after rigid Procrustes alignment (rotation +
  translation, no scale), in millimetres. Used on held-out synthetic faces,
  whose true shape is known, by fitting and R-Net evaluation alike.
"""

from __future__ import annotations

import numpy as np

DM_TO_MM = 100.0


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
