"""A default albedo model for face models that have none (e.g. ICT-FaceKit).

Our choice, not the paper's (the paper uses BFM's texture PCA): a constant
mean skin albedo plus smooth UV-space basis functions, so that δ ~ N(0, 1)
gives plausible, low-frequency skin-colour variation:

* modes 0-2: global colour, along three orthonormal RGB directions
  (brightness along the mean skin colour, a red-green and a yellow-blue
  chroma axis) with standard deviations 0.10, 0.03, 0.02;
* the remaining modes: separable cosines ``cos(π i u) cos(π j v)`` over the
  vertex UVs (normalised to unit RMS over the vertices), ordered by frequency
  ``i + j``, alternating brightness and red-green chroma, with standard
  deviations ``0.03 / (i + j)`` (brightness) and ``0.012 / (i + j)`` (chroma).

Values are linear RGB in [0, 1]; the mean is ``MEAN_SKIN_ALBEDO``.
"""

from __future__ import annotations

import numpy as np

MEAN_SKIN_ALBEDO = np.array([0.72, 0.53, 0.44], np.float32)
GLOBAL_STDS = (0.10, 0.03, 0.02)
SPATIAL_STDS = (0.03, 0.012)


def colour_axes() -> np.ndarray:
    """Three orthonormal RGB directions [3, 3]: brightness, red-green, yellow-blue."""
    raw = np.array([MEAN_SKIN_ALBEDO, [1.0, -1.0, 0.0], [1.0, 1.0, -2.0]], np.float64)
    axes = []
    for v in raw:
        for a in axes:
            v = v - np.dot(v, a) * a
        axes.append(v / np.linalg.norm(v))
    return np.stack(axes).astype(np.float32)


def default_albedo_model(vertex_uv: np.ndarray, num_modes: int = 80
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Mean albedo and basis for a mesh with per-vertex UVs.

    Args:
      vertex_uv: float32 [N, 2], UVs in [0, 1]².
      num_modes: number of basis modes K (≥ 3).
    Returns:
      (mean_albedo float32 [N, 3], albedo_basis float32 [K, N, 3]), the basis
      pre-scaled by each mode's standard deviation.
    """
    vertex_uv = np.asarray(vertex_uv, np.float64)
    if vertex_uv.ndim != 2 or vertex_uv.shape[1] != 2:
        raise ValueError(f"vertex_uv must be [N, 2], got {vertex_uv.shape}")
    if num_modes < 3:
        raise ValueError(f"num_modes must be >= 3, got {num_modes}")
    n = vertex_uv.shape[0]
    axes = colour_axes()
    modes = [std * np.tile(axes[i], (n, 1)) for i, std in enumerate(GLOBAL_STDS)]
    freq = 1
    while len(modes) < num_modes:
        for i in range(freq + 1):
            j = freq - i
            f = np.cos(np.pi * i * vertex_uv[:, 0]) * np.cos(np.pi * j * vertex_uv[:, 1])
            f = f / max(np.sqrt(np.mean(f ** 2)), 1e-8)
            for axis in (0, 1):
                if len(modes) < num_modes:
                    modes.append(SPATIAL_STDS[axis] / freq * f[:, None] * axes[axis][None, :])
        freq += 1
    mean = np.tile(MEAN_SKIN_ALBEDO, (n, 1))
    return mean.astype(np.float32), np.stack(modes).astype(np.float32)
