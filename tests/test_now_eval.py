"""NoW evaluation on synthetic scans with known answers (no TensorFlow needed)."""

import ast
import os

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from recon_tf import mesh_distance, now_eval

# Face-like height field (mm): a broad face dome, a nose ridge and tip, two eye sockets.
LMK_XY = np.array([[-45.0, 35.0], [-15.0, 35.0], [15.0, 35.0], [45.0, 35.0],
                   [0.0, 0.0], [-25.0, -30.0], [25.0, -30.0]])


def _height(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    face = 40.0 * np.exp(-(x ** 2 + (y - 5) ** 2) / (2 * 60.0 ** 2))
    nose = 18.0 * np.exp(-(x ** 2) / (2 * 8.0 ** 2) - (y - 12) ** 2 / (2 * 18.0 ** 2))
    eyes = sum(-6.0 * np.exp(-((x - ex) ** 2 + (y - 35) ** 2) / (2 * 10.0 ** 2))
               for ex in (-30.0, 30.0))
    return face + nose + eyes


def _grid_mesh(half: float, step: float):
    n = int(round(2 * half / step)) + 1
    xs = np.linspace(-half, half, n)
    x, y = np.meshgrid(xs, xs)
    verts = np.stack([x, y, _height(x, y)], -1).reshape(-1, 3)
    ids = np.arange(n * n).reshape(n, n)
    a, b, c, d = ids[:-1, :-1], ids[:-1, 1:], ids[1:, :-1], ids[1:, 1:]
    faces = np.concatenate([np.stack([a, b, d], -1).reshape(-1, 3),
                            np.stack([a, d, c], -1).reshape(-1, 3)])
    return verts, faces


def _landmarks() -> np.ndarray:
    return np.column_stack([LMK_XY, _height(LMK_XY[:, 0], LMK_XY[:, 1])])


def _vertex_normals(verts, faces):
    tri = verts[faces]
    fn = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    vn = np.zeros_like(verts)
    for k in range(3):
        np.add.at(vn, faces[:, k], fn)
    return vn / np.linalg.norm(vn, axis=1, keepdims=True)


def _random_rotation(rng):
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    return q


@pytest.fixture(scope="module")
def scan():
    verts, faces = _grid_mesh(120.0, 3.0)
    return verts, faces, _landmarks()


def test_closest_point_satisfies_projection_conditions():
    rng = np.random.default_rng(0)
    p, a, b, c = (rng.normal(size=(4000, 3)) * s for s in (3.0, 1.0, 1.0, 1.0))
    q = mesh_distance.closest_points_on_triangles(p, a, b, c)
    # q is in the triangle (barycentric coordinates ≥ 0) ...
    m = np.stack([b - a, c - a], -1)
    gram = np.einsum("nij,nik->njk", m, m)
    rhs = np.einsum("nij,ni->nj", m, q - a)
    uv = np.linalg.solve(gram, rhs[..., None])[..., 0]
    assert np.all(uv >= -1e-9) and np.all(uv.sum(1) <= 1 + 1e-9)
    # ... and (p − q)·(x − q) ≤ 0 for every vertex x: the projection onto a convex set.
    for x in (a, b, c):
        assert np.all(np.einsum("ni,ni->n", p - q, x - q) <= 1e-9)
    # degenerate triangles (a point, a segment) give the closest point of the segment
    z = np.zeros((1, 3))
    e = np.array([[1.0, 0, 0]])
    q = mesh_distance.closest_points_on_triangles(np.array([[0.5, 2.0, 0]]), z, e, 2 * e)
    np.testing.assert_allclose(q, [[0.5, 0, 0]])


def test_point_to_mesh_distance_equals_brute_force():
    rng = np.random.default_rng(1)
    verts = rng.uniform(-10, 10, size=(300, 3))
    faces = rng.integers(0, 300, size=(400, 3))
    faces[:20] = rng.integers(0, 300, size=(20, 3))
    verts = np.concatenate([verts, [[-60.0, 0, 0], [60.0, 0, 0], [0, 60.0, 5]]])
    faces = np.concatenate([faces, [[300, 301, 302]]])  # one huge triangle
    small = verts[:30] * 0.05  # and many tiny ones
    verts = np.concatenate([verts, small])
    faces = np.concatenate([faces, 303 + rng.integers(0, 30, size=(100, 3))])
    points = rng.uniform(-30, 30, size=(500, 3))
    dist, closest = mesh_distance.point_to_mesh_distance(points, verts, faces)
    tri = verts[faces]
    pp = np.repeat(points[:, None], len(faces), 1)
    corners = (np.broadcast_to(tri[None, :, k], pp.shape) for k in range(3))
    q = mesh_distance.closest_points_on_triangles(pp, *corners)
    brute = np.sqrt(np.min(np.sum((q - pp) ** 2, -1), axis=1))
    np.testing.assert_allclose(dist, brute, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(closest - points, axis=1), dist, atol=1e-9)


def test_mesh_against_itself_is_zero(scan):
    verts, faces, lmk = scan
    err = now_eval.evaluate_scan(verts, faces, lmk, verts, faces, lmk)
    assert err.size > 1000
    assert err.max() < 1e-6


def test_offset_along_normals_gives_the_offset(scan):
    verts, faces, lmk = scan
    d = 2.0
    moved = verts + d * _vertex_normals(verts, faces)
    points, keep = now_eval.crop_scan(verts, lmk)
    dist, _ = mesh_distance.point_to_mesh_distance(points, moved, faces)
    assert np.median(dist) == pytest.approx(d, abs=0.02)
    dev = np.abs(dist - d)  # discretisation only: largest at the curved nose
    assert np.percentile(dev, 95) < 0.05 and dev.max() < 0.3
    # the whole protocol without refinement (identical landmarks: identity similarity)
    err = now_eval.evaluate_scan(moved, faces, lmk, verts, faces, lmk, iterations=0)
    assert err.shape == (keep.sum(),)
    assert now_eval.summarize(err)["median"] == pytest.approx(d, abs=0.02)
    # refinement only lowers the scan-to-mesh error
    refined = now_eval.evaluate_scan(moved, faces, lmk, verts, faces, lmk)
    assert np.mean(refined ** 2) <= np.mean(err ** 2) + 1e-9


@pytest.mark.parametrize("seed", [0, 1])
def test_similarity_and_rigid_refinement_recover_a_moved_copy(scan, seed):
    verts, faces, lmk = scan
    rng = np.random.default_rng(seed)
    pred_v, pred_f = _grid_mesh(110.0, 2.0)  # same surface, different sampling
    rot, t, s = _random_rotation(rng), rng.normal(0, 50, 3), rng.uniform(0.005, 0.02)
    pred_v = now_eval.apply_similarity(pred_v, s, rot, t)  # e.g. metres-ish, any frame
    pred_lmk = now_eval.apply_similarity(lmk + rng.normal(0, 2.0, lmk.shape), s, rot, t)
    coarse = now_eval.evaluate_scan(pred_v, pred_f, pred_lmk, verts, faces, lmk, iterations=0)
    err = now_eval.evaluate_scan(pred_v, pred_f, pred_lmk, verts, faces, lmk)
    assert np.mean(coarse) > 0.3  # the noisy landmarks alone leave an error
    stats = now_eval.summarize(err)
    assert stats["median"] < 0.02 and stats["mean"] < 0.05


def test_similarity_procrustes_recovers_transform():
    rng = np.random.default_rng(3)
    src = rng.normal(size=(7, 3))
    rot, t = _random_rotation(rng), rng.normal(size=3)
    s, r, tt = now_eval.similarity_procrustes(src, now_eval.apply_similarity(src, 2.5, rot, t))
    assert s == pytest.approx(2.5)
    np.testing.assert_allclose(r, rot, atol=1e-10)
    np.testing.assert_allclose(tt, t, atol=1e-10)
    # a mirrored target never yields a reflection
    _, r, _ = now_eval.similarity_procrustes(src, src * np.array([-1.0, 1, 1]))
    assert np.linalg.det(r) == pytest.approx(1.0)


def test_rigid_refine_keeps_scale_unless_asked(scan):
    verts, faces, _ = scan
    points = verts[::7]
    small_rot = Rotation.from_rotvec(np.radians([2.0, -1.5, 1.0])).as_matrix()
    moved = now_eval.apply_similarity(verts, 1.0, small_rot, np.array([1.0, -0.5, 0.8]))
    res = now_eval.rigid_refine(moved, faces, points, iterations=60)
    assert res.scale == 1.0
    assert res.rms[-1] < 0.01 < res.rms[0]
    np.testing.assert_allclose(res.verts, verts, atol=0.05)


def test_crop_scan_sphere(scan):
    verts, _, lmk = scan
    centre, radius = now_eval.now_crop_sphere(lmk)
    bridge = (lmk[1] + lmk[2]) / 2
    np.testing.assert_allclose(centre, lmk[4] + 0.3 * (bridge - lmk[4]))
    assert radius == pytest.approx(1.4 * (np.linalg.norm(lmk[0] - lmk[3])
                                          + np.linalg.norm(bridge - lmk[4])) / 2)
    points, keep = now_eval.crop_scan(verts, lmk)
    assert 0 < keep.sum() < len(verts)
    assert np.all(np.linalg.norm(points - centre, axis=1) <= radius)
    assert np.all(np.linalg.norm(verts[~keep] - centre, axis=1) > radius)


def test_summarize_pools_all_points():
    per_scan = [np.array([1.0, 2.0, 3.0]), np.array([10.0])]
    st = now_eval.summarize(per_scan)
    pooled = np.array([1.0, 2.0, 3.0, 10.0])
    assert st == {"median": 2.5, "mean": pytest.approx(4.0), "std": pytest.approx(pooled.std())}
    x, y = now_eval.cumulative_error(per_scan, max_mm=10.0, num=11)
    assert y[0] == 0.0 and y[1] == 25.0 and y[3] == 75.0 and y[-1] == 100.0


def test_pp_reader_round_trip(tmp_path):
    pts = np.arange(21, dtype=np.float64).reshape(7, 3) * 1.5 - 4.25
    path = str(tmp_path / "scan.pp")
    now_eval.write_pp_landmarks(path, pts)
    np.testing.assert_allclose(now_eval.read_pp_landmarks(path), pts)
    # MeshLab's own layout (header, DocumentData, attributes in another order)
    text = ('<!DOCTYPE PickedPoints>\n<PickedPoints>\n <DocumentData>\n'
            '  <DateTime time="10:00:00" date="2019-01-01"/>\n  <User name="x"/>\n'
            '  <DataFileName name="scan.obj"/>\n  <templateName name=""/>\n'
            ' </DocumentData>\n'
            + "".join(f' <point name="{i}" active="1" y="{p[1]}" x="{p[0]}" z="{p[2]}"/>\n'
                      for i, p in enumerate(pts))
            + '</PickedPoints>\n')
    (tmp_path / "meshlab.pp").write_text(text)
    np.testing.assert_allclose(now_eval.read_pp_landmarks(str(tmp_path / "meshlab.pp")), pts)
    with pytest.raises(ValueError):
        now_eval.read_pp_landmarks(path, expected=5)


def test_obj_reader_and_prediction_files(tmp_path):
    path = tmp_path / "pred.obj"
    path.write_text("v 0 0 0 1 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nvt 0 0\nvn 0 0 1\n"
                    "f 1/1/1 2/1/1 3/1/1 4/1/1\n")
    v, f = now_eval.read_obj_vertices_faces(str(path))
    assert v.shape == (4, 3) and f.tolist() == [[0, 1, 2], [0, 2, 3]]
    lmk = np.arange(21.0).reshape(7, 3)
    (tmp_path / "pred.txt").write_text("\n".join(",".join(map(str, r)) for r in lmk))
    _, _, got = now_eval.read_now_prediction(str(path))
    np.testing.assert_allclose(got, lmk)
    np.save(tmp_path / "pred.npy", lmk + 1)
    np.testing.assert_allclose(now_eval.read_now_prediction(str(path))[2], lmk + 1)


def test_cumulative_curve_png(tmp_path):
    cv2 = pytest.importorskip("cv2")
    pytest.importorskip("matplotlib")
    rng = np.random.default_rng(0)
    path = str(tmp_path / "curves" / "cumulative.png")
    now_eval.cumulative_error_curve({"ours": [rng.gamma(2.0, 0.6, 500)],
                                     "baseline": rng.gamma(2.0, 0.9, 800)}, path, max_mm=10)
    img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    assert img is not None and img.ndim == 3 and img.shape[2] == 3
    assert img.shape[0] > 100 and img.shape[1] > 100 and img.std() > 0


def test_landmark_order_matches_recon_tf_landmarks():
    # Read recon_tf/landmarks.py without importing it (it loads TensorFlow).
    src_path = os.path.join(os.path.dirname(now_eval.__file__), "landmarks.py")
    with open(src_path) as f:
        tree = ast.parse(f.read())
    value = next(ast.literal_eval(node.value) for node in ast.walk(tree)
                 if isinstance(node, ast.Assign)
                 and any(getattr(t, "id", "") == "NOW_FROM_IBUG" for t in node.targets))
    # NoW order: R eye outer, R eye inner, L eye inner, L eye outer, nose bottom, R/L mouth.
    assert value == (36, 39, 42, 45, 33, 48, 54)
    assert len(now_eval.NOW_LANDMARK_NAMES) == 7
