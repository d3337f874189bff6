"""Face regions of a mesh from its geometry and its 68 landmark vertices.

Converters use these soft per-vertex masks (float in [0, 1]) to write a face
model's ``front_mask`` and ``skin_mask`` and to build the default albedo
basis (:mod:`bfm.albedo`). Everything is defined on the *mean shape* (x to the
image right, y up, z towards the camera, decimetres) relative to the Multi-PIE
68 landmark vertices, and scales with the inter-ocular distance ``s`` (the
distance between the two eye centres), so the same rules serve any face mesh
with landmarks (ICT-FaceKit, BFM).

* :func:`front_mask`: the front face, forehead to chin, ear to ear: the mesh
  region that the jaw contour (landmarks 0-16, joined by shortest paths on the
  mesh), two side walls from the contour's ends up past the forehead line (in
  front of the ears) and the forehead line ``y = brow top + 0.65·(brow top −
  nose tip y)`` enclose, flood-filled from the nose tip; it fades from 0 at
  that border to 1 at 0.05 dm (5 mm) inside it (geodesic distance). No scalp,
  ears or neck.
* :func:`face_regions`: named soft masks (lips, brows, eyelids, nostrils,
  beard areas, cheeks, forehead, nose), each restricted to the front mask.
  Shapes are drawn in the frontal (x, y) projection, where the front face is
  a height field; nostrils are the vertices hidden from the front near the
  nose base.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse
from scipy.sparse import csgraph

FOREHEAD_FRACTION = 0.65
FRONT_FADE_DM = 0.05


def smoothstep(t: np.ndarray) -> np.ndarray:
    """3t² − 2t³ of t clipped to [0, 1]: 0 below 0, 1 above 1, smooth between."""
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def mesh_graph(vertices: np.ndarray, triangles: np.ndarray) -> scipy.sparse.csr_matrix:
    """Symmetric sparse [N, N] graph of the mesh edges, weighted by edge length."""
    tris = np.asarray(triangles, np.int64)
    edges = np.concatenate([tris[:, [0, 1]], tris[:, [1, 2]], tris[:, [2, 0]]])
    edges = np.unique(np.sort(edges, axis=1), axis=0)
    length = np.linalg.norm(vertices[edges[:, 0]] - vertices[edges[:, 1]], axis=1)
    n = len(vertices)
    rows, cols = np.r_[edges[:, 0], edges[:, 1]], np.r_[edges[:, 1], edges[:, 0]]
    return scipy.sparse.csr_matrix((np.r_[length, length], (rows, cols)), shape=(n, n))


def vertex_areas(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Area per vertex, float64 [N]: a third of the area of every triangle around it."""
    v = np.asarray(vertices, np.float64)
    tris = np.asarray(triangles, np.int64)
    cross = np.cross(v[tris[:, 1]] - v[tris[:, 0]], v[tris[:, 2]] - v[tris[:, 0]])
    area = 0.5 * np.linalg.norm(cross, axis=1)
    out = np.zeros(len(v))
    for k in range(3):
        np.add.at(out, tris[:, k], area / 3.0)
    return out


def _shortest_path(graph: scipy.sparse.csr_matrix, start: int, end: int) -> list[int]:
    _, pred = csgraph.dijkstra(graph, indices=start, return_predecessors=True)
    path = [int(end)]
    while path[-1] != start:
        if pred[path[-1]] < 0:
            raise ValueError(f"vertices {start} and {end} are not connected in the mesh")
        path.append(int(pred[path[-1]]))
    return path[::-1]


def fade_inside(graph: scipy.sparse.csr_matrix, inside: np.ndarray, width: float) -> np.ndarray:
    """Soft version of a boolean vertex set: 0 outside, rising to 1 at geodesic
    distance ``width`` inside its border, float64 [N]."""
    if inside.all() or not inside.any():
        return inside.astype(np.float64)
    dist = csgraph.dijkstra(graph, indices=np.flatnonzero(~inside), min_only=True)
    return np.where(inside, smoothstep(dist / width), 0.0)


def _scale(landmarks: np.ndarray) -> float:
    """Inter-ocular distance s: between the centres of landmarks 36-41 and 42-47."""
    return float(np.linalg.norm(landmarks[36:42].mean(0) - landmarks[42:48].mean(0)))


def front_mask(vertices: np.ndarray, triangles: np.ndarray, lmk68: np.ndarray) -> np.ndarray:
    """The front face (forehead to chin, ear to ear), float32 [N] in [0, 1].

    Args:
      vertices: float [N, 3] mean shape (x right, y up, z towards the camera).
      triangles: int [T, 3].
      lmk68: int [68] Multi-PIE landmark vertex ids (0-16 the jaw contour).
    Returns:
      0 on scalp, ears, neck and the back of the head; 1 on the face, fading
      over ``FRONT_FADE_DM`` inside the border (see the module docstring).
    Raises:
      ValueError: the landmarks do not enclose a region around the nose tip.
    """
    v = np.asarray(vertices, np.float64)
    lmk = np.asarray(lmk68, np.int64)
    lm = v[lmk]
    graph = mesh_graph(v, triangles)
    brow_top = lm[17:27, 1].max()
    forehead_y = brow_top + FOREHEAD_FRACTION * (brow_top - lm[30, 1])
    walls: list[int] = []
    for i in range(16):
        walls += _shortest_path(graph, lmk[i], lmk[i + 1])
    for end in (0, 16):  # in front of the ears, up past the forehead line
        ahead = np.flatnonzero(v[:, 2] > lm[end, 2])
        target = np.array([lm[end, 0], forehead_y + 0.1 * _scale(lm)])
        top = ahead[np.argmin(np.linalg.norm(v[ahead, :2] - target, axis=1))]
        walls += _shortest_path(graph, lmk[end], top)
    allowed = v[:, 1] < forehead_y
    allowed[np.asarray(walls)] = False
    ids = np.flatnonzero(allowed)
    _, label = csgraph.connected_components(graph[ids][:, ids], directed=False)
    seed = np.searchsorted(ids, lmk[30])
    if seed >= len(ids) or ids[seed] != lmk[30]:
        raise ValueError("the nose tip (landmark 30) lies outside the forehead line")
    inside = np.zeros(len(v), bool)
    inside[ids[label == label[seed]]] = True
    if inside.mean() > 0.9:
        raise ValueError("the jaw contour does not close the front face (region leaks)")
    return fade_inside(graph, inside, FRONT_FADE_DM).astype(np.float32)


def _segment_distance(points: np.ndarray, polyline: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance of 2D points [P, 2] to an open polyline [K, 2], and the arc-length
    parameter in [0, 1] of the closest point; float64 [P] each."""
    a, b = polyline[:-1], polyline[1:]
    ab = b - a
    t = np.einsum("pkc,kc->pk", points[:, None] - a[None], ab) / np.maximum(
        np.sum(ab * ab, -1), 1e-12)
    t = np.clip(t, 0.0, 1.0)
    d = np.linalg.norm(points[:, None] - (a[None] + t[..., None] * ab[None]), axis=-1)
    k = np.argmin(d, axis=1)
    seg_len = np.linalg.norm(ab, axis=1)
    cum = np.r_[0.0, np.cumsum(seg_len)]
    arc = (cum[k] + t[np.arange(len(points)), k] * seg_len[k]) / max(cum[-1], 1e-12)
    return d[np.arange(len(points)), k], arc


def _polygon_depth(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Signed distance of 2D points to a closed polygon [K, 2]: > 0 inside."""
    closed = np.concatenate([polygon, polygon[:1]])
    dist, _ = _segment_distance(points, closed)
    x, y = points[:, 0:1], points[:, 1:2]
    x0, y0, x1, y1 = closed[:-1, 0], closed[:-1, 1], closed[1:, 0], closed[1:, 1]
    crosses = (y0 > y) != (y1 > y)
    x_at = x0 + (y - y0) * (x1 - x0) / np.where(y1 == y0, 1e-12, y1 - y0)
    inside = np.sum(crosses & (x < x_at), axis=1) % 2 == 1
    return np.where(inside, dist, -dist)


def _ellipse(points: np.ndarray, centre: np.ndarray, radii: tuple[float, float]) -> np.ndarray:
    """Soft ellipse: 1 at the centre, smoothly 0 at the radii (2D points [P, 2])."""
    r = np.linalg.norm((points - centre) / np.asarray(radii), axis=1)
    return smoothstep(1.0 - r) ** 0.5


def _band(values: np.ndarray, low: float, high: float, soft: float) -> np.ndarray:
    """Soft indicator of low < values < high with ramps of width ``soft``."""
    return smoothstep((values - low) / soft + 0.5) * smoothstep((high - values) / soft + 0.5)


def _hidden_from_front(v: np.ndarray, cell: float, margin: float) -> np.ndarray:
    """Vertices behind another surface of the mesh in the frontal orthographic view."""
    from scipy.ndimage import maximum_filter

    ij = np.floor(v[:, :2] / cell).astype(np.int64)
    ij -= ij.min(0) - 1
    zbuf = np.full(ij.max(0) + 2, -np.inf)
    np.maximum.at(zbuf, (ij[:, 0], ij[:, 1]), v[:, 2])
    zbuf = maximum_filter(zbuf, size=3)
    return v[:, 2] < zbuf[ij[:, 0], ij[:, 1]] - margin


def face_regions(vertices: np.ndarray, triangles: np.ndarray, lmk68: np.ndarray,
                 front: np.ndarray) -> dict[str, np.ndarray]:
    """Named soft region masks, float64 [N] in [0, 1], zero outside ``front``.

    Regions (both sides of the face in one mask unless named ``_l``/``_r``):
    ``lips`` (outer lip contour 48-59), ``mouth_line`` (where the lips meet,
    60-67), ``brows`` (a band under the brow landmarks 17-26, thick at the
    head, thin at the tail), ``brow_halo`` (a wider band around the brows,
    without ``brows``: brow extent), ``lash_line`` (a thin ring around the eye
    openings 36-47, thicker on the upper lid), ``upper_lids`` (between the
    eyes and the brows), ``under_eyes`` (crescents under the eyes),
    ``nostrils`` (hidden from the front near the nose base), ``chin``,
    ``upper_lip`` (between nose and mouth), ``jaw_cheeks`` (the lower
    cheeks along the jaw: the beard areas), ``cheeks`` (cheekbones),
    ``forehead``, ``nose``.

    Args:
      vertices: float [N, 3] mean shape; triangles: int [T, 3]; lmk68: int [68];
      front: float [N], :func:`front_mask`.
    """
    v = np.asarray(vertices, np.float64)
    lm = v[np.asarray(lmk68, np.int64)]
    front = np.asarray(front, np.float64)
    s = _scale(lm)
    p = v[:, :2]
    graph = mesh_graph(v, triangles)
    out: dict[str, np.ndarray] = {}

    out["lips"] = smoothstep(_polygon_depth(p, lm[48:60, :2]) / (0.05 * s) + 0.5)
    d_inner = -_polygon_depth(p, lm[60:68, :2])
    out["mouth_line"] = smoothstep(1.0 - np.abs(d_inner) / (0.05 * s))

    brows, halo = np.zeros(len(v)), np.zeros(len(v))
    for ids in (slice(17, 22), slice(22, 27)):
        line = lm[ids, :2] - [0.0, 0.035 * s]
        if line[0, 0] > line[-1, 0]:
            line = line[::-1]
        dist, arc = _segment_distance(p, line)
        inner_end = np.abs(line[:, 0]).argmin() == 0  # arc 0 at the brow head?
        head = 1.0 - arc if inner_end else arc
        half = (0.035 + 0.045 * head) * s
        brows = np.maximum(brows, smoothstep((half - dist) / (0.04 * s) + 0.5))
        halo = np.maximum(halo, smoothstep((2.0 * half - dist) / (0.08 * s) + 0.5))
    out["brows"], out["brow_halo"] = brows, np.clip(halo - brows, 0.0, 1.0)

    lash, lids, under = np.zeros(len(v)), np.zeros(len(v)), np.zeros(len(v))
    for ids in (slice(36, 42), slice(42, 48)):
        eye = lm[ids, :2]
        centre = eye.mean(0)
        outside = -_polygon_depth(p, eye)
        above = smoothstep((p[:, 1] - centre[1]) / (0.1 * s) + 0.5)
        width = (0.03 + 0.04 * above) * s
        lash = np.maximum(lash, smoothstep(1.0 - np.abs(outside) / width))
        lid = _ellipse(p, centre + [0.0, 0.12 * s], (0.42 * s, 0.2 * s))
        lids = np.maximum(lids, lid * smoothstep(outside / (0.04 * s)))
        side = np.sign(centre[0])
        dark = _ellipse(p, centre + [-0.05 * side * s, -0.17 * s], (0.35 * s, 0.13 * s))
        under = np.maximum(under, dark * smoothstep(outside / (0.04 * s)))
    out["lash_line"] = lash
    out["upper_lids"] = lids * (1.0 - brows)
    out["under_eyes"] = under

    hidden = _hidden_from_front(v, 0.01, 0.03)
    near_base = ((np.abs(v[:, 0] - lm[33, 0]) < 0.45 * s)
                 & (v[:, 1] > lm[33, 1] - 0.05 * s) & (v[:, 1] < lm[30, 1])
                 & (np.linalg.norm(v - lm[33], axis=1) < 0.4 * s))
    out["nostrils"] = fade_inside(graph, hidden & near_base, 0.04)

    mouth_half = 0.5 * abs(lm[54, 0] - lm[48, 0])
    lower_lip = lm[57, 1]
    out["chin"] = (_band(p[:, 1], -np.inf, lower_lip - 0.08 * s, 0.1 * s)
                   * _band(p[:, 0], -1.4 * mouth_half, 1.4 * mouth_half, 0.25 * s))
    out["upper_lip"] = (_band(p[:, 1], lm[51, 1] + 0.03 * s, lm[33, 1] - 0.02 * s, 0.06 * s)
                        * _band(p[:, 0], -1.3 * mouth_half, 1.3 * mouth_half, 0.2 * s)
                        * (1.0 - out["lips"]))
    jaw_line = np.stack([lm[2, :2], lm[48, :2] + [-0.1 * s, 0.1 * s]])
    below_l = np.cross(jaw_line[1] - jaw_line[0], p - jaw_line[0]) < 0
    jaw_line_r = np.stack([lm[54, :2] + [0.1 * s, 0.1 * s], lm[14, :2]])
    below_r = np.cross(jaw_line_r[1] - jaw_line_r[0], p - jaw_line_r[0]) < 0
    lower = (below_l & (p[:, 0] < 0)) | (below_r & (p[:, 0] >= 0))
    out["jaw_cheeks"] = fade_inside(graph, lower & (front > 0), 0.25 * s) * (
        1.0 - np.maximum(out["chin"], out["lips"]))

    cheeks = np.zeros(len(v))
    for eye, corner in ((slice(36, 42), 48), (slice(42, 48), 54)):
        centre = 0.5 * (lm[eye, :2].mean(0) + lm[corner, :2])
        centre[0] += np.sign(centre[0]) * 0.15 * s
        cheeks = np.maximum(cheeks, _ellipse(p, centre, (0.4 * s, 0.35 * s)))
    out["cheeks"] = cheeks
    brow_top = lm[17:27, 1].max()
    out["forehead"] = smoothstep((p[:, 1] - brow_top) / (0.25 * s))
    nose_line = np.stack([lm[27, :2], lm[30, :2], lm[33, :2]])
    dist, arc = _segment_distance(p, nose_line)
    out["nose"] = smoothstep(1.0 - dist / ((0.1 + 0.22 * arc) * s)) * (1.0 - out["nostrils"])
    return {name: np.clip(mask, 0.0, 1.0) * front for name, mask in out.items()}
