"""The default albedo basis for face models that have none (e.g. ICT-FaceKit).

Our choice, not the paper's (the paper uses BFM's texture PCA). Hand-designed,
not learned from data: a regional mean albedo plus 80 modes, pre-scaled so
that δ ~ N(0, 1) gives plausible faces. Values are sRGB-encoded display
values in [0, 1], the space of the photos (as BFM's texture, whose values are
photo pixel values); no transfer function is applied anywhere.

Mean albedo: the skin colour ``SKIN_ALBEDO`` (0.72, 0.53, 0.44), with darker
brows (−35 %), lash lines (−25 %), nostrils (−30 %), the lip line (−30 %)
and reddish lips (−10 %, +0.05 along red−green), on the masks of
:func:`bfm.regions.face_regions` (``MEAN_SHADE``, ``MEAN_LIP_REDNESS``).

Modes, in this order (``REGION_MODES``, then smooth modes):

1. *Region modes* (21): a soft region mask times a colour direction, with a
   standard deviation per mode: lips (brightness 12 %, redness 0.035),
   brows (darkness 30 %, extent 15 %, red−green 0.02 for auburn vs ash),
   lash lines (20 %), upper lids (8 %, red−green 0.02), under-eye circles
   (8 %, yellow−blue 0.02), nostrils (30 %), beard and stubble on chin,
   upper lip and jaw/lower cheeks (15 %, 15 %, 12 %, and a shared
   yellow−blue 0.015), cheek redness (0.03) and brightness (5 %), forehead
   (6 %, red−green 0.02), nose redness (0.03), lip line (20 %).
   "Brightness x %" scales the mean albedo locally (direction T̄); chroma
   modes add along the unit red−green (1, −1, 0)/√2 or yellow−blue
   (1, 1, −2)/√6 axis. The mesh has no eyeballs (ICT's eyes are holes), so
   eye whites and irises are not painted; the eye modes shade the lids.
2. *Smooth modes*: low-frequency eigenfunctions of the mesh's cotangent
   Laplacian (mass = vertex area × (front mask + 0.1), so they vary mostly
   over the front face and have no UV seams), normalised to unit RMS over
   the front face; per frequency k = 1, 2, ... a brightness mode (std
   5 %/√k of T̄), a red−green mode (0.012/√k) and, for k ≤ 10, a
   yellow−blue mode (0.008/√k); the constant function is left out.

With δ ~ N(0, 1), 99.9 % of sampled albedo values lie in [0, 1].

No global colour modes: per-channel SH ambient light (γ_0 of each channel)
holds the global brightness and colour. Every mode is then orthogonalised,
per colour channel c and with the inner product Σ_i w_i a_i b_i (w = vertex
area × front mask), against the nine functions T̄_c(x)·Φ_b(n(x)), where n
are the mean shape's normals at frontal pose and Φ_b the SH basis of
:mod:`recon_tf.lighting`: the colour change that any band-0..2 light change
makes on the mean face at frontal pose. So at frontal pose a light change
cannot be reproduced by the albedo basis, nor an albedo change by the light
(tests/test_albedo.py measures it). Smooth modes that lose more than half of
their norm to this projection are dropped and the next frequency fills in.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse
import scipy.sparse.linalg

from bfm.regions import face_regions, front_mask, vertex_areas

SKIN_ALBEDO = np.array([0.72, 0.53, 0.44], np.float64)
PROVENANCE = (
    "recon_tf default albedo basis v2 (bfm/albedo.py): hand-designed, not learned; regional "
    "mean skin albedo; 21 landmark-relative region modes (lips, brows, lash lines, eyelids, "
    "under-eyes, nostrils, beard, cheeks, forehead, nose) + low-frequency mesh harmonics; no "
    "global colour modes; every mode orthogonal (area-weighted over the front mask) to the "
    "9 SH functions of the mean shape's frontal normals times the mean albedo, per channel; "
    "sRGB-encoded display values in [0, 1]")

# (region, colour direction, standard deviation): "shade" scales the mean albedo
# (relative brightness), "rg" / "yb" add along the red-green / yellow-blue axes.
REGION_MODES: tuple[tuple[str, str, float], ...] = (
    ("lips", "shade", 0.12), ("lips", "rg", 0.035),
    ("brows", "shade", 0.30), ("brow_halo", "shade", 0.15), ("brows", "rg", 0.02),
    ("lash_line", "shade", 0.20),
    ("upper_lids", "shade", 0.08), ("upper_lids", "rg", 0.02),
    ("under_eyes", "shade", 0.08), ("under_eyes", "yb", 0.02),
    ("nostrils", "shade", 0.30),
    ("chin", "shade", 0.15), ("upper_lip", "shade", 0.15), ("jaw_cheeks", "shade", 0.12),
    ("beard", "yb", 0.015),
    ("cheeks", "rg", 0.03), ("cheeks", "shade", 0.05),
    ("forehead", "shade", 0.06), ("forehead", "rg", 0.02),
    ("nose", "rg", 0.03),
    ("mouth_line", "shade", 0.20),
)
# Mean albedo: relative darkening per region, and redness of the lips.
MEAN_SHADE = {"brows": 0.35, "lash_line": 0.25, "nostrils": 0.30, "mouth_line": 0.30,
              "lips": 0.10}
MEAN_LIP_REDNESS = 0.05
SMOOTH_STDS = {"shade": 0.05, "rg": 0.012, "yb": 0.008}
SMOOTH_YB_MAX_FREQUENCY = 10
HARMONIC_FRONT_FLOOR = 0.1
MIN_KEPT_NORM = 0.5


def colour_axes() -> np.ndarray:
    """Three orthonormal RGB directions [3, 3]: brightness (along the skin
    colour), red−green and yellow−blue."""
    raw = np.array([SKIN_ALBEDO, [1.0, -1.0, 0.0], [1.0, 1.0, -2.0]], np.float64)
    axes = []
    for v in raw:
        for a in axes:
            v = v - np.dot(v, a) * a
        axes.append(v / np.linalg.norm(v))
    return np.stack(axes).astype(np.float32)


def _direction(kind: str, mean: np.ndarray) -> np.ndarray:
    """Per-vertex colour direction [N, 3] of a mode kind."""
    if kind == "shade":
        return mean
    axis = {"rg": np.array([1.0, -1.0, 0.0]) / np.sqrt(2.0),
            "yb": np.array([1.0, 1.0, -2.0]) / np.sqrt(6.0)}[kind]
    return np.broadcast_to(axis, mean.shape)


def regional_mean(regions: dict[str, np.ndarray], n: int) -> np.ndarray:
    """The mean albedo T̄, float64 [N, 3]: skin with darker/redder regions."""
    shade = np.ones(n)
    for name, amount in MEAN_SHADE.items():
        shade *= 1.0 - amount * regions[name]
    mean = SKIN_ALBEDO[None] * shade[:, None]
    return mean + MEAN_LIP_REDNESS * regions["lips"][:, None] * _direction("rg", mean)


def cotangent_laplacian(vertices: np.ndarray, triangles: np.ndarray) -> scipy.sparse.csr_matrix:
    """The cotangent Laplacian [N, N] (positive semi-definite; edge weights ≥ 0)."""
    v = np.asarray(vertices, np.float64)
    tris = np.asarray(triangles, np.int64)
    rows, cols, vals = [], [], []
    for a, b, c in ((0, 1, 2), (1, 2, 0), (2, 0, 1)):
        u = v[tris[:, b]] - v[tris[:, a]]
        w = v[tris[:, c]] - v[tris[:, a]]
        cot = np.sum(u * w, 1) / np.maximum(np.linalg.norm(np.cross(u, w), axis=1), 1e-12)
        rows += [tris[:, b], tris[:, c]]
        cols += [tris[:, c], tris[:, b]]
        vals += [0.5 * cot, 0.5 * cot]
    n = len(v)
    weights = scipy.sparse.csr_matrix((np.concatenate(vals),
                                       (np.concatenate(rows), np.concatenate(cols))), (n, n))
    weights.data = np.maximum(weights.data, 1e-8)
    return (scipy.sparse.diags(np.asarray(weights.sum(1)).ravel()) - weights).tocsr()


def smooth_functions(vertices: np.ndarray, triangles: np.ndarray, front: np.ndarray,
                     count: int) -> np.ndarray:
    """The ``count`` lowest non-constant Laplacian eigenfunctions, float64 [count, N].

    Generalised problem L φ = λ M φ with M = diag(area · (front + 0.1)); each
    φ is scaled to unit RMS over the front face (weights area · front).
    """
    area = vertex_areas(vertices, triangles)
    lap = cotangent_laplacian(vertices, triangles)
    mass = scipy.sparse.diags(area * (front + HARMONIC_FRONT_FLOOR))
    rng = np.random.default_rng(0)  # a fixed start vector: reproducible conversions
    start = rng.normal(size=len(area))
    vals, vecs = scipy.sparse.linalg.eigsh(lap, k=count + 1, M=mass, sigma=-1e-6, which="LM",
                                           v0=start)
    order = np.argsort(vals)[1:]  # drop the constant function
    funcs = vecs[:, order].T
    w = area * front
    rms = np.sqrt((funcs ** 2) @ w / w.sum())
    funcs = funcs / rms[:, None]
    # A deterministic sign: positive where the function is largest in magnitude.
    return funcs * np.sign(funcs[np.arange(count), np.abs(funcs).argmax(1)])[:, None]


def light_subspace(mean: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """T̄_c(x)·Φ_b(n(x)), float64 [3, N, 9]: per colour channel, the colour change
    of the mean face under each of the 9 SH light functions (Eq. 5)."""
    import tensorflow as tf

    from recon_tf.lighting import sh_basis

    phi = sh_basis(tf.constant(normals, tf.float32)).numpy().astype(np.float64)  # [N, 9]
    return np.stack([mean[:, c:c + 1] * phi for c in range(3)])


def remove_light(modes: np.ndarray, light: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Project modes [K, N, 3] off the light subspace [3, N, 9], per channel,
    under the inner product Σ_i w_i a_i b_i; returns float64 [K, N, 3]."""
    out = np.array(modes, np.float64)
    for c in range(3):
        a = light[c]
        gram = a.T @ (weights[:, None] * a)
        coef = np.linalg.solve(gram, a.T @ (weights[:, None] * out[:, :, c].T))  # [9, K]
        out[:, :, c] -= (a @ coef).T
    return out


def _weighted_norm(modes: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return np.sqrt(np.einsum("knc,n->k", modes ** 2, weights))


def default_albedo_model(vertices: np.ndarray, triangles: np.ndarray, lmk68: np.ndarray,
                         front: np.ndarray | None = None, num_modes: int = 80
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Mean albedo and basis of a face mesh (see the module docstring).

    Args:
      vertices: float [N, 3] mean shape (decimetres, x right, y up, z to camera).
      triangles: int [T, 3]; lmk68: int [68] landmark vertex ids.
      front: float [N] front mask (default: :func:`bfm.regions.front_mask`).
      num_modes: number of modes K ≥ 1.
    Returns:
      (mean_albedo float32 [N, 3] in [0, 1], albedo_basis float32 [K, N, 3]),
      the basis pre-scaled so that δ ~ N(0, 1).
    """
    import tensorflow as tf

    from recon_tf.face_model import vertex_normals

    if num_modes < 1:
        raise ValueError(f"num_modes must be >= 1, got {num_modes}")
    v = np.asarray(vertices, np.float64)
    n = len(v)
    if front is None:
        front = front_mask(v, triangles, lmk68)
    front = np.asarray(front, np.float64)
    regions = face_regions(v, triangles, lmk68, front)
    regions["beard"] = np.maximum.reduce([regions["chin"], regions["upper_lip"],
                                          regions["jaw_cheeks"]])
    mean = regional_mean(regions, n)
    normals = vertex_normals(tf.constant(v[None], tf.float32),
                             tf.constant(np.asarray(triangles), tf.int32)).numpy()[0]
    light = light_subspace(mean, normals.astype(np.float64))
    weights = vertex_areas(v, triangles) * front
    modes = [std * regions[name][:, None] * _direction(kind, mean)
             for name, kind, std in REGION_MODES]
    region_part = remove_light(np.stack(modes), light, weights)[:num_modes]
    needed = num_modes - len(region_part)
    smooth: list[np.ndarray] = []
    count = needed // 2 + 8  # harmonics to compute: 2-3 modes each, a few dropped
    while needed > 0:
        smooth = _smooth_modes(v, triangles, front, mean, light, weights,
                               min(count, n - 2), needed)
        if len(smooth) >= needed or count >= n - 2:
            break
        count *= 2
    basis = np.concatenate([region_part] + ([np.stack(smooth)] if smooth else []))
    if len(basis) < num_modes:
        raise ValueError(f"the mesh supports only {len(basis)} albedo modes, asked {num_modes}")
    return mean.astype(np.float32), basis.astype(np.float32)


def _smooth_modes(v: np.ndarray, triangles: np.ndarray, front: np.ndarray, mean: np.ndarray,
                  light: np.ndarray, weights: np.ndarray, count: int, needed: int
                  ) -> list[np.ndarray]:
    """Up to ``needed`` smooth modes from the ``count`` lowest harmonics, light removed."""
    funcs = smooth_functions(v, triangles, front, count)
    kept: list[np.ndarray] = []
    for k, f in enumerate(funcs, start=1):
        kinds = ("shade", "rg", "yb") if k <= SMOOTH_YB_MAX_FREQUENCY else ("shade", "rg")
        raw = np.stack([SMOOTH_STDS[kind] / np.sqrt(k) * f[:, None] * _direction(kind, mean)
                        for kind in kinds])
        clean = remove_light(raw, light, weights)
        ratio = _weighted_norm(clean, weights) / np.maximum(_weighted_norm(raw, weights), 1e-12)
        kept += [m for m, r in zip(clean, ratio) if r >= MIN_KEPT_NORM]
        if len(kept) >= needed:
            break
    return kept[:needed]
