"""Detail meshes from the fine stage: subdivision, displacement baking, map PNGs.

The fine stage predicts a displacement map D in UV (positive = outwards along
the normal). To export that detail as geometry, the coarse mesh is refined by
midpoint subdivision (:func:`subdivide`) and every vertex is moved along its
smooth vertex normal by D sampled at its UV (:func:`bake_displacement`). The
maps themselves are also written as PNGs: displacement as 16-bit greyscale
with an offset/scale (:func:`encode_displacement_png`), normals as an
object-space RGB normal map (:func:`encode_normal_map_png`).

UV maps follow :mod:`recon_tf.render.uv`: texel (i, j) of an [S, S] map covers
u ∈ [j/S, (j+1)/S), v ∈ [1 − (i+1)/S, 1 − i/S) (row 0 is v = 1); its centre is
at ((j + 0.5)/S, 1 − (i + 0.5)/S). Everything here is numpy (no TensorFlow).

Units: positions and displacements share one unit, the caller's; exporters
pass millimetres for both.
"""

from __future__ import annotations

import os

import numpy as np

_PNG_MAX = 65535


def _check_ids(ids: np.ndarray, count: int, name: str) -> np.ndarray:
    ids = np.asarray(ids)
    if ids.ndim != 2 or ids.shape[1] != 3 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"{name} must be integer [T, 3], got {ids.dtype} {ids.shape}")
    if ids.size and (ids.min() < 0 or ids.max() >= count):
        raise ValueError(f"{name} index out of range [0, {count})")
    return ids


def _split_edges(points: np.ndarray, tris: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One midpoint subdivision of an indexed triangle set (positions or UVs).

    Args:
      points: float [P, D].
      tris: int [T, 3].
    Returns:
      (points [P + E, D], tris [4T, 3]): the E unique undirected edges'
      midpoints are appended in sorted-edge order; children keep the parent's
      winding.
    """
    n, t = len(points), len(tris)
    tri64 = tris.astype(np.int64)
    a = tri64[:, [0, 1, 2]].T.ravel()  # edge k of triangle f at k * T + f: (c_k, c_{k+1})
    b = tri64[:, [1, 2, 0]].T.ravel()
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    keys, inverse = np.unique(lo * n + hi, return_inverse=True)
    mids = 0.5 * (points[keys // n] + points[keys % n])
    m = (n + inverse.reshape(3, t)).astype(tri64.dtype)  # m[0]: c0c1, m[1]: c1c2, m[2]: c2c0
    c0, c1, c2 = tri64.T
    children = np.concatenate([
        np.stack([c0, m[0], m[2]], 1),
        np.stack([m[0], c1, m[1]], 1),
        np.stack([m[2], m[1], c2], 1),
        np.stack([m[0], m[1], m[2]], 1),
    ])
    return np.concatenate([points, mids.astype(points.dtype)]), children.astype(tris.dtype)


def subdivide(vertices: np.ndarray, triangles: np.ndarray, uv: np.ndarray,
              tri_uv: np.ndarray, levels: int = 1
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Midpoint (1 → 4) subdivision of a mesh and its UV layout, ``levels`` times.

    Each level adds one vertex per unique mesh edge (shared by the triangles
    on that edge, so closed meshes stay closed) and one UV point per unique
    UV edge (so a seam edge, which has two UV edges, gets two UV midpoints and
    stays a seam). Triangle k of a level's input becomes triangles k, T + k,
    2T + k (its corners' children) and 3T + k (the middle), all with the
    parent's winding. Positions are not smoothed (the surface is unchanged).

    Args:
      vertices: float [N, 3] (any unit).
      triangles: int [T, 3] vertex ids.
      uv: float [U, 2] UV points.
      tri_uv: int [T, 3] per-corner UV ids.
      levels: number of subdivisions (≥ 0); triangles grow 4**levels ×.
    Returns:
      (vertices [N', 3], triangles [T·4**levels, 3], uv [U', 2],
      tri_uv [T·4**levels, 3]); the first N vertices and U UV points are the
      inputs; float and int dtypes follow the inputs.
    """
    vertices = np.asarray(vertices)
    uv = np.asarray(uv)
    if vertices.ndim != 2 or vertices.shape[1] != 3:
        raise ValueError(f"vertices must be [N, 3], got {vertices.shape}")
    if uv.ndim != 2 or uv.shape[1] != 2:
        raise ValueError(f"uv must be [U, 2], got {uv.shape}")
    triangles = _check_ids(triangles, len(vertices), "triangles")
    tri_uv = _check_ids(tri_uv, len(uv), "tri_uv")
    if tri_uv.shape != triangles.shape:
        raise ValueError(f"tri_uv must be {triangles.shape}, got {tri_uv.shape}")
    if levels < 0:
        raise ValueError(f"levels must be >= 0, got {levels}")
    if not np.issubdtype(vertices.dtype, np.floating):
        vertices = vertices.astype(np.float64)
    if not np.issubdtype(uv.dtype, np.floating):
        uv = uv.astype(np.float64)
    vertices, triangles, uv, tri_uv = vertices.copy(), triangles.copy(), uv.copy(), tri_uv.copy()
    for _ in range(levels):
        vertices, triangles = _split_edges(vertices, triangles)
        uv, tri_uv = _split_edges(uv, tri_uv)
    return vertices, triangles, uv, tri_uv


def boundary_loops(triangles: np.ndarray) -> list[np.ndarray]:
    """The boundary of a triangle mesh, loop by loop.

    Args:
      triangles: int [T, 3], consistently oriented.
    Returns:
      one int64 [E, 4] array per loop (connected set of boundary edges), longest
      first: rows (u, v, t, k), the directed edge u → v as it runs in triangle t
      from its corner k to corner (k + 1) mod 3. A closed mesh has none.
    """
    tris = np.asarray(triangles, np.int64)
    corner = np.tile(np.arange(3), len(tris))
    rows = np.repeat(np.arange(len(tris)), 3)
    u, v = tris.ravel(), tris[:, [1, 2, 0]].ravel()
    key = np.minimum(u, v) * (int(tris.max(initial=0)) + 1) + np.maximum(u, v)
    _, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    edges = np.stack([u, v, rows, corner], 1)[counts[inverse] == 1]
    if not len(edges):
        return []
    # Boundary edges that share a vertex belong to one loop (union-find over vertices).
    parent = {int(x): int(x) for x in np.unique(edges[:, :2])}

    def root(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in edges[:, :2]:
        parent[root(int(a))] = root(int(b))
    label = np.array([root(int(a)) for a in edges[:, 0]])
    loops = [edges[label == r] for r in np.unique(label)]
    return sorted(loops, key=len, reverse=True)


def cap_holes(vertices: np.ndarray, triangles: np.ndarray, uv: np.ndarray | None = None,
              face_uv: np.ndarray | None = None) -> tuple:
    """Close the mesh's holes (eye and mouth openings) with a fan to each hole's centroid.

    Every boundary loop but the longest (the mesh's outer border) is a hole. One
    vertex is appended per hole, at the mean of its loop's vertices, and one
    triangle per loop edge u → v joins it as (v, u, centre), so the caps keep
    the mesh's orientation (every shared edge runs once each way). The model's
    vertex ids are unchanged: caps only append. A scan is closed over the eyes
    and a closed mouth, so a scan-to-mesh distance (NoW) must not measure those
    points to the rim of an opening.

    Args:
      vertices: float [N, 3] (or [N, D]).
      triangles: int [T, 3], consistently oriented.
      uv, face_uv: optional float [U, 2] UVs and int [T, 3] per-corner UV ids;
        a cap's centre gets the mean UV of its loop's corners.
    Returns:
      (vertices [N + H, ...], triangles [T + C, 3], uv [U + H, 2] or None,
      face_uv [T + C, 3] or None), H holes, C their loop edges.
    """
    vertices = np.asarray(vertices)
    tris = _check_ids(triangles, len(vertices), "triangles")
    if (uv is None) != (face_uv is None):
        raise ValueError("uv and face_uv must be given together")
    holes = boundary_loops(tris)[1:]
    centres = [vertices[np.unique(h[:, :2])].mean(axis=0) for h in holes]
    ids = len(vertices) + np.repeat(np.arange(len(holes)), [len(h) for h in holes])
    edges = np.concatenate(holes) if holes else np.zeros((0, 4), np.int64)
    caps = np.stack([edges[:, 1], edges[:, 0], ids], 1).astype(tris.dtype)
    new_vertices = np.concatenate([vertices, np.reshape(centres, (-1,) + vertices.shape[1:])])
    new_tris = np.concatenate([tris, caps])
    if uv is None:
        return new_vertices, new_tris, None, None
    uv, face_uv = np.asarray(uv), np.asarray(face_uv)
    t, k = edges[:, 2], edges[:, 3]
    uv_u, uv_v = face_uv[t, k], face_uv[t, (k + 1) % 3]
    uv_centres = [uv[face_uv[h[:, 2], h[:, 3]]].mean(axis=0) for h in holes]
    uv_ids = len(uv) + np.repeat(np.arange(len(holes)), [len(h) for h in holes])
    cap_uv = np.stack([uv_v, uv_u, uv_ids], 1).astype(face_uv.dtype)
    return (new_vertices, new_tris, np.concatenate([uv, np.reshape(uv_centres, (-1, 2))]),
            np.concatenate([face_uv, cap_uv]))


def vertex_normals_np(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals (numpy twin of ``face_model.vertex_normals``).

    Args:
      vertices: float [N, 3].
      triangles: int [T, 3], counter-clockwise seen from outside.
    Returns:
      float64 [N, 3] unit normals pointing outwards; vertices without any
      (non-degenerate) triangle get a zero vector.
    """
    v = np.asarray(vertices, np.float64)
    tris = _check_ids(triangles, len(v), "triangles")
    face_n = np.cross(v[tris[:, 1]] - v[tris[:, 0]], v[tris[:, 2]] - v[tris[:, 0]])
    ids = tris.T.ravel()
    weights = np.tile(face_n, (3, 1))
    summed = np.stack([np.bincount(ids, weights[:, k], minlength=len(v)) for k in range(3)], 1)
    norm = np.linalg.norm(summed, axis=1, keepdims=True)
    return np.divide(summed, norm, out=np.zeros_like(summed), where=norm > 1e-30)


def sample_map(uv_map: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinear lookup of a UV map at UV points, clamped at the borders.

    Texel (i, j) of an [H, W] map holds the value at its centre
    ((j + 0.5)/W, 1 − (i + 0.5)/H); between centres values are bilinear,
    beyond the outermost centres they are the border values.

    Args:
      uv_map: float [H, W] or [H, W, C] (any unit).
      uv: float [P, 2] (or [..., 2]) UV points, v up.
    Returns:
      float64 [P] for a 2-D map, [P, C] for a 3-D one (leading dims of ``uv``).
    """
    m = np.asarray(uv_map, np.float64)
    if m.ndim not in (2, 3):
        raise ValueError(f"uv_map must be [H, W] or [H, W, C], got {m.shape}")
    uv = np.asarray(uv, np.float64)
    if uv.shape[-1] != 2:
        raise ValueError(f"uv must be [..., 2], got {uv.shape}")
    h, w = m.shape[:2]
    x = np.clip(uv[..., 0] * w - 0.5, 0.0, w - 1)
    y = np.clip((1.0 - uv[..., 1]) * h - 0.5, 0.0, h - 1)
    x0 = np.floor(x).astype(np.int64)
    y0 = np.floor(y).astype(np.int64)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx, fy = x - x0, y - y0
    if m.ndim == 3:
        fx, fy = fx[..., None], fy[..., None]
    top = m[y0, x0] * (1 - fx) + m[y0, x1] * fx
    bottom = m[y1, x0] * (1 - fx) + m[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


def bake_displacement(vertices: np.ndarray, triangles: np.ndarray, uv: np.ndarray,
                      tri_uv: np.ndarray, displacement_map: np.ndarray, levels: int = 2,
                      valid_map: np.ndarray | None = None
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Subdivide a mesh and displace its vertices by a UV displacement map.

    Every vertex of the subdivided mesh moves along its smooth (area-weighted)
    vertex normal on the subdivided mesh by the map sampled bilinearly
    (:func:`sample_map`) at its UV. A vertex with several UV points (on a
    seam) uses the mean of the samples at its distinct UV points; vertices in
    no triangle stay put.

    Args:
      vertices: float [N, 3], in the same unit as the map (exporters: mm).
      triangles: int [T, 3], counter-clockwise seen from outside.
      uv: float [U, 2]; tri_uv: int [T, 3] per-corner UV ids.
      displacement_map: float [S, S] signed distance along the normal
        (positive = outwards), same unit as ``vertices`` (exporters: mm).
      levels: subdivision levels before displacing (triangles grow 16× at 2).
      valid_map: optional float/bool [S, S] (or [S, S, 1]) weights in [0, 1];
        the map is multiplied by it before sampling, so texels outside the
        layout or never seen count as zero displacement.
    Returns:
      (vertices [N', 3] displaced, triangles, uv, tri_uv) as from
      :func:`subdivide`; vertices have the input's float dtype.
    """
    disp = np.asarray(displacement_map, np.float64)
    if disp.ndim == 3 and disp.shape[2] == 1:
        disp = disp[..., 0]
    if disp.ndim != 2:
        raise ValueError(f"displacement_map must be [S, S], got {disp.shape}")
    if valid_map is not None:
        valid = np.asarray(valid_map, np.float64).reshape(disp.shape[0], disp.shape[1], -1)
        disp = disp * valid[..., 0]
    disp = np.nan_to_num(disp)
    v, tris, uvs, tuv = subdivide(vertices, triangles, uv, tri_uv, levels)
    normals = vertex_normals_np(v, tris)
    per_uv = sample_map(disp, uvs)  # [U']
    pairs = np.unique(tris.astype(np.int64).ravel() * len(uvs) + tuv.ravel())
    vid, uid = pairs // len(uvs), pairs % len(uvs)
    sums = np.bincount(vid, per_uv[uid], minlength=len(v))
    counts = np.bincount(vid, minlength=len(v))
    d = sums / np.maximum(counts, 1)
    return (v + d[:, None] * normals).astype(v.dtype), tris, uvs, tuv


def _ensure_dir(path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)


def encode_displacement_png(displacement_mm: np.ndarray, path: str) -> dict:
    """Write a displacement map as a 16-bit greyscale PNG with offset and scale.

    value_mm = offset + scale · pixel / 65535, with offset = min and
    scale = max − min (1e-6 for a constant map); round-off ≤ scale / 131070.

    Args:
      displacement_mm: float [S, S] (or [S, S, 1]) in millimetres, finite.
      path: output ``.png`` path (folders are created).
    Returns:
      {"offset": float, "scale": float, "units": "mm", "encoding": ...} —
      keep it beside the PNG (e.g. in a JSON sidecar) to decode.
    """
    import cv2

    d = np.asarray(displacement_mm, np.float64)
    if d.ndim == 3 and d.shape[2] == 1:
        d = d[..., 0]
    if d.ndim != 2 or d.size == 0:
        raise ValueError(f"displacement_mm must be [S, S], got {d.shape}")
    if not np.all(np.isfinite(d)):
        raise ValueError("displacement_mm contains NaN or Inf")
    offset = float(d.min())
    scale = max(float(d.max()) - offset, 1e-6)
    pixels = np.clip(np.rint((d - offset) / scale * _PNG_MAX), 0, _PNG_MAX).astype(np.uint16)
    _ensure_dir(path)
    if not cv2.imwrite(path, pixels):
        raise OSError(f"could not write {path}")
    return {"offset": offset, "scale": scale, "units": "mm",
            "encoding": "value_mm = offset + scale * pixel / 65535"}


def decode_displacement_png(path: str, meta: dict) -> np.ndarray:
    """Read a PNG written by :func:`encode_displacement_png` → float32 [S, S] mm.

    Args:
      path: the PNG.
      meta: the dict :func:`encode_displacement_png` returned (``offset``, ``scale``).
    """
    import cv2

    pixels = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if pixels is None:
        raise OSError(f"could not read {path}")
    if pixels.dtype != np.uint16 or pixels.ndim != 2:
        raise ValueError(f"{path}: expected a 16-bit greyscale PNG, got "
                         f"{pixels.dtype} {pixels.shape}")
    value = float(meta["offset"]) + float(meta["scale"]) * (pixels / _PNG_MAX)
    return value.astype(np.float32)


def encode_normal_map_png(normals: np.ndarray, path: str, mask: np.ndarray | None = None,
                          bits: int = 8) -> dict:
    """Write an object-space normal map as an RGB PNG, colour = (n + 1) / 2.

    R, G, B hold x, y, z of the unit normal in the face model's frame (an
    object-space map, not tangent-space). Texels outside ``mask`` (and
    zero-length normals) are written as +z, colour (0.5, 0.5, 1.0).

    Args:
      normals: float [S, S, 3] normals (renormalised here).
      path: output ``.png`` path (folders are created).
      mask: optional [S, S] or [S, S, 1], > 0.5 (or True) inside the layout.
      bits: 8 (uint8, ≤ 0.3° round-off) or 16 (uint16).
    Returns:
      {"space": "object", "encoding": "rgb = (n + 1) / 2", "bits": bits}.
    """
    import cv2

    n = np.asarray(normals, np.float64)
    if n.ndim != 3 or n.shape[2] != 3:
        raise ValueError(f"normals must be [S, S, 3], got {n.shape}")
    if bits not in (8, 16):
        raise ValueError(f"bits must be 8 or 16, got {bits}")
    n = np.nan_to_num(n)
    norm = np.linalg.norm(n, axis=-1, keepdims=True)
    inside = norm[..., 0] > 1e-12
    if mask is not None:
        inside &= np.asarray(mask, np.float64).reshape(n.shape[:2]) > 0.5
    unit = np.divide(n, norm, out=np.zeros_like(n), where=norm > 1e-12)
    unit = np.where(inside[..., None], unit, np.array([0.0, 0.0, 1.0]))
    top = 255 if bits == 8 else _PNG_MAX
    rgb = np.rint((unit + 1.0) * 0.5 * top).astype(np.uint8 if bits == 8 else np.uint16)
    _ensure_dir(path)
    if not cv2.imwrite(path, np.ascontiguousarray(rgb[..., ::-1])):
        raise OSError(f"could not write {path}")
    return {"space": "object", "encoding": "rgb = (n + 1) / 2", "bits": bits}


def decode_normal_map_png(path: str) -> np.ndarray:
    """Read a normal-map PNG (8- or 16-bit RGB) → unit normals float32 [S, S, 3]."""
    import cv2

    rgb = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if rgb is None:
        raise OSError(f"could not read {path}")
    if rgb.ndim != 3 or rgb.shape[2] < 3 or rgb.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"{path}: expected an RGB PNG, got {rgb.dtype} {rgb.shape}")
    top = 255.0 if rgb.dtype == np.uint8 else float(_PNG_MAX)
    n = rgb[..., 2::-1].astype(np.float64) / top * 2.0 - 1.0
    norm = np.linalg.norm(n, axis=-1, keepdims=True)
    return np.divide(n, norm, out=np.zeros_like(n), where=norm > 1e-12).astype(np.float32)
