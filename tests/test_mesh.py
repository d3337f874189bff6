"""Subdivision, displacement baking, UV sampling and map PNG round trips (recon_tf.mesh)."""

import time

import cv2
import numpy as np
import pytest

from recon_tf.mesh import (
    bake_displacement,
    boundary_loops,
    cap_holes,
    decode_displacement_png,
    decode_normal_map_png,
    encode_displacement_png,
    encode_normal_map_png,
    sample_map,
    subdivide,
    vertex_normals_np,
)

SEAM_SHIFT = 0.5


def _tetrahedron():
    """A closed, outward-oriented tetrahedron; every corner has its own UV point."""
    v = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], np.float64)
    f = np.array([[0, 1, 2], [0, 3, 1], [0, 2, 3], [1, 3, 2]], np.int32)
    uv = np.random.default_rng(0).uniform(size=(12, 2))
    return v, f, uv, np.arange(12, dtype=np.int32).reshape(4, 3)


def _grid(n: int = 4, seam_col: int | None = None):
    """An n×n-vertex planar grid on [0, 1]² (z = 0), CCW from +z, UV = xy.

    With ``seam_col``, vertices of that column get a second UV point shifted
    by SEAM_SHIFT in u, used by the triangles to its right (a UV seam).
    """
    xs = np.linspace(0.0, 1.0, n)
    gx, gy = np.meshgrid(xs, xs)
    v = np.stack([gx.ravel(), gy.ravel(), np.zeros(n * n)], 1)
    tris = []
    for r in range(n - 1):
        for c in range(n - 1):
            a = r * n + c
            tris += [[a, a + 1, a + n + 1], [a, a + n + 1, a + n]]
    f = np.array(tris, np.int64)
    uv = v[:, :2].copy()
    tri_uv = f.copy()
    if seam_col is not None:
        col = np.arange(n) * n + seam_col
        extra = uv[col] + [SEAM_SHIFT, 0.0]
        uv[v[:, 0] > xs[seam_col] + 1e-12, 0] += SEAM_SHIFT
        uv = np.concatenate([uv, extra])
        right = v[f, 0].min(axis=1) >= xs[seam_col] - 1e-12  # triangles right of the seam
        remap = np.arange(n * n)
        remap[col] = n * n + np.arange(n)
        tri_uv[right] = remap[f[right]]
    return v, f, uv, tri_uv


def _edge_counts(f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique undirected edges [E, 2] (sorted ids) and how many triangles use each."""
    e = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
    e = e.astype(np.int64)
    n = int(e.max()) + 1
    keys, counts = np.unique(e[:, 0] * n + e[:, 1], return_counts=True)
    return np.stack([keys // n, keys % n], 1), counts


def _unique_edges(f: np.ndarray) -> np.ndarray:
    return _edge_counts(f)[0]


def _face_normals(v, f):
    n = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    return n / np.linalg.norm(n, axis=1, keepdims=True)


def test_subdivide_counts_and_closed_mesh_stays_closed():
    v, f, uv, tuv = _tetrahedron()
    v2, f2, uv2, tuv2 = subdivide(v, f, uv, tuv)
    assert len(v2) == 4 + 6 and len(f2) == 16
    assert len(uv2) == 12 + 12  # every corner has its own UV point: 12 unique UV edges
    assert f2.dtype == f.dtype and tuv2.shape == f2.shape
    np.testing.assert_array_equal(v2[:4], v)
    # closed and consistently oriented: every directed edge exactly once, its reverse too
    d = np.concatenate([f2[:, [0, 1]], f2[:, [1, 2]], f2[:, [2, 0]]])
    keys = {tuple(e) for e in d}
    assert len(keys) == len(d) and all((b, a) in keys for a, b in keys)
    # each undirected edge shared by exactly two triangles
    assert np.all(_edge_counts(f2)[1] == 2)
    # orientation: children's normals equal their parent's (planar faces)
    parent = np.tile(np.arange(4), 4)
    np.testing.assert_allclose(_face_normals(v2, f2), _face_normals(v, f)[parent], atol=1e-12)
    # every new vertex is the midpoint of a parent edge
    edges = _unique_edges(f)
    np.testing.assert_allclose(v2[4:], 0.5 * (v[edges[:, 0]] + v[edges[:, 1]]), atol=1e-12)
    v3, f3, _, _ = subdivide(v, f, uv, tuv, levels=2)
    assert len(f3) == 64 and len(v3) == 10 + len(_unique_edges(f2))


def test_subdivide_keeps_uv_seam():
    n, seam_col = 4, 2
    v, f, uv, tuv = _grid(n, seam_col)
    v2, f2, uv2, tuv2 = subdivide(v, f, uv, tuv)
    assert len(v2) == len(v) + len(_unique_edges(f))
    assert len(uv2) == len(uv) + len(_unique_edges(tuv))
    assert len(_unique_edges(tuv)) > len(_unique_edges(f))  # the seam edges are doubled
    # UV of every corner is the affine image of its position on its side of the seam
    x_seam = seam_col / (n - 1)
    for vv, ff, uu, tt in ((v2, f2, uv2, tuv2), subdivide(v, f, uv, tuv, levels=2)):
        right = vv[ff, 0].min(axis=1) >= x_seam - 1e-12
        expected = vv[ff][..., :2] + np.where(right, SEAM_SHIFT, 0.0)[:, None, None] * [1, 0]
        np.testing.assert_allclose(uu[tt], expected, atol=1e-12)
    # the seam's new mesh vertices carry two distinct UV points
    on_seam = np.abs(v2[:, 0] - x_seam) < 1e-12
    for vid in np.flatnonzero(on_seam):
        ids = np.unique(tuv2[f2 == vid])
        assert len(ids) == 2 and np.isclose(abs(np.diff(uv2[ids, 0])[0]), SEAM_SHIFT)


def test_subdivide_orientation_planar_grid():
    v, f, uv, tuv = _grid(5)
    v2, f2, _, _ = subdivide(v, f, uv, tuv, levels=2)
    np.testing.assert_allclose(_face_normals(v2, f2), np.tile([0, 0, 1.0], (len(f2), 1)),
                               atol=1e-12)
    np.testing.assert_allclose(vertex_normals_np(v2, f2), np.tile([0, 0, 1.0], (len(v2), 1)),
                               atol=1e-12)


def test_subdivide_ict_two_levels_fast(face_model):
    a = face_model.arrays
    v, f, uv, tuv = a["mean_shape"], a["triangles"], a["uv"], a["tri_uv"]
    start = time.perf_counter()
    v2, f2, uv2, tuv2 = subdivide(v, f, uv, tuv, levels=2)
    elapsed = time.perf_counter() - start
    assert elapsed < 2.0, elapsed
    assert len(f2) == 16 * len(f) and tuv2.shape == f2.shape
    assert f2.max() < len(v2) and tuv2.max() < len(uv2)
    e1 = len(_unique_edges(f))
    v1, f1, _, _ = subdivide(v, f, uv, tuv)
    assert len(v1) == len(v) + e1 and len(v2) == len(v1) + len(_unique_edges(f1))
    # edges shared by two triangles before stay so; boundary edges split in two
    c0, c2 = _edge_counts(f)[1], _edge_counts(f2)[1]
    assert np.sum(c2 == 1) == 4 * np.sum(c0 == 1) and c2.max() <= 2


def _texel_centres(s: int) -> tuple[np.ndarray, np.ndarray]:
    c = (np.arange(s) + 0.5) / s
    return c, 1.0 - c  # u of column j, v of row i


def test_sample_map_exact_bilinear_clamped():
    s = 8
    m = np.random.default_rng(1).normal(size=(s, s, 2))
    u, vv = _texel_centres(s)
    gu, gv = np.meshgrid(u, vv)  # [i, j] → texel (i, j) centre
    pts = np.stack([gu.ravel(), gv.ravel()], 1)
    np.testing.assert_allclose(sample_map(m, pts), m.reshape(-1, 2), atol=1e-12)
    np.testing.assert_allclose(sample_map(m[..., 0], pts), m[..., 0].ravel(), atol=1e-12)
    # halfway between texel (3, 4) and (3, 5), and in the middle of four centres
    mid = sample_map(m, [[(u[4] + u[5]) / 2, vv[3]]])[0]
    np.testing.assert_allclose(mid, (m[3, 4] + m[3, 5]) / 2, atol=1e-12)
    quad = sample_map(m, [[0.7 * u[4] + 0.3 * u[5], 0.25 * vv[3] + 0.75 * vv[4]]])[0]
    ref = 0.25 * (0.7 * m[3, 4] + 0.3 * m[3, 5]) + 0.75 * (0.7 * m[4, 4] + 0.3 * m[4, 5])
    np.testing.assert_allclose(quad, ref, atol=1e-12)
    # outside / beyond the outermost centres: clamped
    out = sample_map(m, [[-0.3, 2.0], [1.5, vv[2]], [0.01, 0.99], [u[6], -4.0]])
    np.testing.assert_allclose(out, [m[0, 0], m[2, -1], m[0, 0], m[-1, 6]], atol=1e-12)


def test_bake_sine_ridge_zero_map_and_sign():
    s, amp = 64, 1.0
    u, _ = _texel_centres(s)
    ridge = np.tile(amp * np.sin(2 * np.pi * u), (s, 1))  # depends on u (column) only
    v, f, uv, tuv = _grid(9)
    vb, fb, uvb, tuvb = bake_displacement(v, f, uv, tuv, ridge, levels=2)
    vs, fs, uvs, tuvs = subdivide(v, f, uv, tuv, levels=2)
    np.testing.assert_array_equal(fb, fs)
    np.testing.assert_array_equal(tuvb, tuvs)
    np.testing.assert_allclose(vb[:, :2], vs[:, :2], atol=1e-12)  # moved along +z only
    x = vs[:, 0]
    inner = (x >= 0.5 / s) & (x <= 1 - 0.5 / s)
    bilinear_err = (1.0 / s) ** 2 / 8 * (2 * np.pi) ** 2 * amp
    np.testing.assert_allclose(vb[inner, 2], amp * np.sin(2 * np.pi * x[inner]),
                               atol=bilinear_err + 1e-9)
    np.testing.assert_allclose(vb[~inner, 2], amp * np.sin(2 * np.pi * x[~inner]),
                               atol=np.pi / s * amp)  # clamped half-texel border
    zero, *_ = bake_displacement(v, f, uv, tuv, np.zeros((s, s)), levels=2)
    np.testing.assert_array_equal(zero, vs)
    # positive = along the outward normal (+z for a CCW grid), with a float32 mesh too
    up, *_ = bake_displacement(v.astype(np.float32), f, uv, tuv, np.full((s, s), 0.25))
    assert up.dtype == np.float32
    np.testing.assert_allclose(up[:, 2], 0.25, atol=1e-6)


def test_bake_closed_mesh_moves_outwards():
    v, f, uv, tuv = _tetrahedron()
    vs, fs, _, _ = subdivide(v, f, uv, tuv, levels=2)
    vb, *_ = bake_displacement(v, f, uv, tuv, np.full((16, 16), 0.1), levels=2)
    assert np.all(np.linalg.norm(vb, axis=1) > np.linalg.norm(vs, axis=1))
    # the original corners move radially by exactly 0.1 (their normal is radial)
    np.testing.assert_allclose(np.linalg.norm(vb[:4], axis=1), np.sqrt(3) + 0.1, atol=1e-12)
    inward, *_ = bake_displacement(v, f, uv, tuv, np.full((16, 16), -0.1), levels=1)
    vs1 = subdivide(v, f, uv, tuv)[0]
    assert np.all(np.linalg.norm(inward, axis=1) < np.linalg.norm(vs1, axis=1))


def test_bake_valid_map_and_seam_mean():
    s = 32
    v, f, uv, tuv = _grid(5)
    valid = np.zeros((s, s))
    valid[:, s // 2:] = 1.0  # only u ≥ 0.5 is valid
    vb, *_ = bake_displacement(v, f, uv, tuv, np.ones((s, s)), levels=1, valid_map=valid)
    x = subdivide(v, f, uv, tuv)[0][:, 0]
    np.testing.assert_allclose(vb[x <= 0.5 - 1.0 / s, 2], 0.0, atol=1e-12)
    np.testing.assert_allclose(vb[x >= 0.5 + 1.0 / s, 2], 1.0, atol=1e-12)
    # a seam vertex averages the samples at its two UV points
    v, f, uv, tuv = _grid(3, seam_col=1)  # seam at x = 0.5, second UVs at u = 1.0
    d = np.zeros((s, s))
    d[:, -1] = 2.0  # u ≥ 1: only UVs right of the seam see it
    vb, *_ = bake_displacement(v, f, uv, tuv, d, levels=0)
    seam = np.isclose(v[:, 0], 0.5)
    np.testing.assert_allclose(vb[seam, 2], 1.0, atol=1e-12)  # mean of 0 and 2
    np.testing.assert_allclose(vb[np.isclose(v[:, 0], 1.0), 2], 2.0, atol=1e-12)
    np.testing.assert_allclose(vb[np.isclose(v[:, 0], 0.0), 2], 0.0, atol=1e-12)


def test_displacement_png_roundtrip(tmp_path):
    d = np.random.default_rng(2).uniform(-2.0, 2.0, size=(64, 64)).astype(np.float32)
    path = str(tmp_path / "maps" / "disp.png")
    meta = encode_displacement_png(d, path)
    assert meta["units"] == "mm" and "65535" in meta["encoding"]
    raw = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    assert raw.dtype == np.uint16 and raw.shape == (64, 64)
    assert raw.min() == 0 and raw.max() == 65535
    back = decode_displacement_png(path, meta)
    assert back.dtype == np.float32 and back.shape == d.shape
    assert np.abs(back - d).max() <= meta["scale"] / 65535 * 1.01
    np.testing.assert_allclose(meta["scale"], d.max() - d.min(), rtol=1e-6)
    const = np.full((8, 8), -0.75)
    meta_c = encode_displacement_png(const, str(tmp_path / "const.png"))
    assert meta_c["scale"] == pytest.approx(1e-6)
    np.testing.assert_allclose(decode_displacement_png(str(tmp_path / "const.png"), meta_c),
                               const, atol=1e-6)
    with pytest.raises(ValueError):
        encode_displacement_png(np.full((4, 4), np.nan), str(tmp_path / "nan.png"))


@pytest.mark.parametrize("bits", [8, 16])
def test_normal_map_png_roundtrip(tmp_path, bits):
    s = 32
    n = np.random.default_rng(3).normal(size=(s, s, 3))
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    mask = np.ones((s, s), bool)
    mask[:, :5] = False
    path = str(tmp_path / f"normals{bits}.png")
    meta = encode_normal_map_png(n * 3.0, path, mask=mask, bits=bits)  # renormalised
    assert meta["bits"] == bits
    raw = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    assert raw.shape == (s, s, 3) and raw.dtype == (np.uint8 if bits == 8 else np.uint16)
    top = 255 if bits == 8 else 65535
    np.testing.assert_array_equal(raw[0, 0], [top, round(top / 2), round(top / 2)])  # BGR: +z
    back = decode_normal_map_png(path)
    assert back.dtype == np.float32 and back.shape == (s, s, 3)
    cos = np.clip(np.sum(back[mask] * n[mask], axis=-1), -1, 1)
    assert np.degrees(np.arccos(cos)).max() < 1.0
    np.testing.assert_allclose(back[~mask], np.tile([0, 0, 1.0], (np.sum(~mask), 1)),
                               atol=1e-2)
    # R = x: a +x normal is red
    encode_normal_map_png(np.tile([1.0, 0, 0], (4, 4, 1)), str(tmp_path / "x.png"))
    rgb = cv2.imread(str(tmp_path / "x.png"))[..., ::-1]
    np.testing.assert_array_equal(rgb[0, 0], [255, 128, 128])


def _grid_with_holes(n: int = 8):
    """The planar grid with two square holes (the triangles of two 2×2-cell blocks removed)."""
    v, f, uv, tri_uv = _grid(n)
    cell = np.arange(len(f)) // 2  # two triangles per cell, row-major cells
    row, col = cell // (n - 1), cell % (n - 1)
    hole = (((row >= 1) & (row <= 2)) | ((row >= 4) & (row <= 5))) & (col >= 2) & (col <= 3)
    return v, f[~hole], uv, tri_uv[~hole]


def test_boundary_loops_find_the_border_then_the_holes():
    v, f, _, _ = _grid_with_holes()
    loops = boundary_loops(f)
    assert [len(loop) for loop in loops] == [28, 8, 8]  # outer border first, two 2×2 holes
    for loop in loops:
        u, w, t, k = loop.T
        assert np.array_equal(f[t, k], u) and np.array_equal(f[t, (k + 1) % 3], w)
    assert boundary_loops(_tetrahedron()[1]) == []


def test_cap_holes_closes_holes_keeps_orientation_ids_and_uvs():
    v, f, uv, tri_uv = _grid_with_holes()
    cv, cf, cuv, ctri_uv = cap_holes(v, f, uv, tri_uv)
    assert np.array_equal(cv[:len(v)], v) and np.array_equal(cf[:len(f)], f)
    assert len(cv) == len(v) + 2 and len(cf) == len(f) + 16
    assert [len(loop) for loop in boundary_loops(cf)] == [28]  # only the outer border is left
    # Consistent orientation: every directed edge occurs once; caps face +z like the grid.
    directed = np.concatenate([cf[:, [0, 1]], cf[:, [1, 2]], cf[:, [2, 0]]])
    assert len(np.unique(directed, axis=0)) == len(directed)
    assert np.all(_face_normals(cv, cf)[len(f):, 2] > 0.99)
    # Hole centres: the middles of the removed blocks; their UVs follow (UV = xy here).
    h = 1.0 / 7.0
    assert np.allclose(np.sort(cv[len(v):, 1]), [2 * h, 5 * h])
    assert np.allclose(cv[len(v):, 0], 3 * h)
    assert np.allclose(cuv[len(uv):], cv[len(v):, :2])
    assert np.allclose(cuv[ctri_uv], cv[cf][..., :2])
    # A mesh without holes comes back unchanged.
    gv, gf = _grid(4)[:2]
    same_v, same_f, no_uv, _ = cap_holes(gv, gf)
    assert np.array_equal(same_v, gv) and np.array_equal(same_f, gf) and no_uv is None


def test_cap_holes_closes_the_ict_eyes_and_mouth(face_model):
    """ICT's face region has four boundary loops: its outer border, two eye openings
    and the mouth; capped, the neutral mesh is a disc whose caps face forwards."""
    v = np.asarray(face_model.arrays["mean_shape"], np.float64)
    f = np.asarray(face_model.arrays["triangles"])
    assert len(boundary_loops(f)) == 4
    cv, cf, _, _ = cap_holes(v, f)
    assert len(cv) == len(v) + 3 and len(boundary_loops(cf)) == 1
    assert np.all(vertex_normals_np(cv, cf)[len(v):, 2] > 0.9)  # z out of the face
