"""Face model (Eq. 1-3), coefficient layout, normals, landmarks, bad input."""

import os

import numpy as np
import pytest
import tensorflow as tf

from recon_tf.coeffs import CoeffLayout
from recon_tf.face_model import (
    FaceModel,
    FaceModelFormatError,
    geometry_hash,
    load_face_model,
    load_face_model_arrays,
    save_face_model,
    vertex_normals,
    vertex_uv,
)


def test_paper_layout_is_222_and_splits_in_order():
    layout = CoeffLayout()
    assert layout.total == 222
    x = tf.range(222, dtype=tf.float32)[None]
    c = layout.split(x)
    assert c.identity.shape[-1] == 80 and c.expression.shape[-1] == 29
    assert c.albedo.shape[-1] == 80 and c.light.shape[-1] == 27
    assert float(c.angles[0, 0]) == 189.0 and float(c.translation[0, 0]) == 192.0
    np.testing.assert_array_equal(layout.join(c).numpy(), x.numpy())


def test_layout_adapts_to_model_modes(face_model, tiny_arrays):
    assert face_model.layout == CoeffLayout(80, 29, 80)
    tiny = FaceModel(tiny_arrays)
    assert (tiny.layout.id_dim, tiny.layout.exp_dim, tiny.layout.tex_dim) == (5, 4, 6)
    assert tiny.layout.total == 5 + 4 + 6 + 6 + 27
    with pytest.raises(ValueError, match="identity"):
        FaceModel(tiny_arrays, CoeffLayout(10, 4, 6))


def test_split_rejects_wrong_width():
    with pytest.raises(ValueError, match=r"\[B, 222\]"):
        CoeffLayout().split(tf.zeros([2, 221]))


def test_shape_is_linear_eq1(tiny_arrays):
    fm = FaceModel(tiny_arrays)
    rng = np.random.default_rng(1)
    a = rng.normal(size=(3, 5)).astype(np.float32)
    b = rng.normal(size=(3, 4)).astype(np.float32)
    got = fm.shape(a, b).numpy()
    want = (tiny_arrays["mean_shape"][None]
            + np.einsum("bk,knc->bnc", a, tiny_arrays["id_basis"])
            + np.einsum("bk,knc->bnc", b, tiny_arrays["exp_basis"]))
    np.testing.assert_allclose(got, want, atol=1e-5)
    d = rng.normal(size=(3, 6)).astype(np.float32)
    want_t = tiny_arrays["mean_albedo"][None] + np.einsum("bk,knc->bnc", d,
                                                          tiny_arrays["albedo_basis"])
    np.testing.assert_allclose(fm.albedo(d).numpy(), want_t, atol=1e-5)


def test_compute_zero_coeffs_is_mean_face(face_model):
    verts, albedo = face_model.compute(face_model.layout.zeros(2))
    np.testing.assert_allclose(verts[1].numpy(), face_model.mean_shape.numpy(), atol=1e-6)
    assert albedo.shape == (2, face_model.num_vertices, 3)
    assert np.all((albedo.numpy() > 0) & (albedo.numpy() < 1))


def test_shape_gradient_matches_basis(face_model):
    alpha = tf.Variable(tf.zeros([1, 80]))
    with tf.GradientTape() as tape:
        verts = face_model.shape(alpha, tf.zeros([1, 29]))
        y = tf.reduce_sum(verts[0, 100])
    g = tape.gradient(y, alpha).numpy()[0]
    want = face_model.arrays["id_basis"][:80, 100].sum(-1)
    np.testing.assert_allclose(g, want, rtol=1e-4, atol=1e-7)


def test_normals_of_plane_and_sphere():
    # a flat CCW quad in the xy plane faces +z
    verts = tf.constant([[[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]]], tf.float32)
    tris = tf.constant([[0, 1, 2], [0, 2, 3]], tf.int32)
    np.testing.assert_allclose(vertex_normals(verts, tris).numpy()[0],
                               np.tile([0, 0, 1], (4, 1)), atol=1e-6)
    # icosphere-like: normals of a convex mesh point along the position
    phi = (1 + 5 ** 0.5) / 2
    v = np.array([[-1, phi, 0], [1, phi, 0], [-1, -phi, 0], [1, -phi, 0], [0, -1, phi],
                  [0, 1, phi], [0, -1, -phi], [0, 1, -phi], [phi, 0, -1], [phi, 0, 1],
                  [-phi, 0, -1], [-phi, 0, 1]], np.float32)
    f = np.array([[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9],
                  [5, 11, 4], [11, 10, 2], [10, 7, 6], [7, 1, 8], [3, 9, 4], [3, 4, 2],
                  [3, 2, 6], [3, 6, 8], [3, 8, 9], [4, 9, 5], [2, 4, 11], [6, 2, 10],
                  [8, 6, 7], [9, 8, 1]], np.int32)
    n = vertex_normals(v[None], f).numpy()[0]
    np.testing.assert_allclose(n, v / np.linalg.norm(v, axis=1, keepdims=True), atol=1e-5)


def test_face_normals_point_towards_camera(face_model):
    n = face_model.vertex_normals(face_model.mean_shape[None]).numpy()[0]
    tip = face_model.arrays["lmk68"][30]
    assert n[tip, 2] > 0.9
    assert np.allclose(np.linalg.norm(n, axis=1), 1.0, atol=1e-4)


def test_landmarks_gather(face_model):
    verts = face_model.mean_shape[None]
    lm = face_model.landmarks(verts).numpy()[0]
    np.testing.assert_allclose(lm, face_model.mean_landmarks_3d())
    assert lm[36, 0] < 0 < lm[45, 0]  # right eye corner left in the image
    assert lm[8, 1] < lm[30, 1] < lm[27, 1]  # chin below nose tip below nose bridge


def test_ict_units_are_decimetres_and_centred(face_model):
    m = face_model.mean_shape.numpy()
    width = np.ptp(m[:, 0])
    assert 1.4 < width < 2.2, width
    np.testing.assert_allclose(m.mean(0), 0, atol=1e-5)


def test_save_load_roundtrip(tmp_path, tiny_arrays):
    path = str(tmp_path / "m.npz")
    save_face_model(path, tiny_arrays)
    back = load_face_model_arrays(path)
    for k, v in tiny_arrays.items():
        if k == "name":
            assert back[k] == v
        else:
            np.testing.assert_array_equal(back[k], v)
    assert load_face_model(path).num_vertices == 16
    assert sorted(os.listdir(tmp_path)) == ["m.npz"]  # no temporary file left


def test_optional_keys_roundtrip_and_default_for_old_files(tmp_path, tiny_arrays):
    old = FaceModel(tiny_arrays)  # a file written before the optional keys existed
    np.testing.assert_array_equal(old.front_mask.numpy(), np.ones(16))
    assert old.exp_bounds is None and old.exp_names == []
    assert old.albedo_provenance == "unknown"
    np.testing.assert_array_equal(old.lmk68_output, tiny_arrays["lmk68"])
    extra = dict(tiny_arrays, front_mask=np.linspace(0, 1, 16, dtype=np.float32),
                 exp_bounds=np.tile([[0.0, 1.0]], (4, 1)).astype(np.float32),
                 exp_names=np.array(["jawOpen", "a_L", "a_R", "b"]),
                 albedo_provenance="made by hand",
                 lmk68_output=(np.arange(68) * 7 % 16).astype(np.int64))
    path = str(tmp_path / "m.npz")
    save_face_model(path, extra)
    fm = load_face_model(path, CoeffLayout(5, 3, 6))
    np.testing.assert_allclose(fm.front_mask.numpy(), extra["front_mask"])
    np.testing.assert_array_equal(fm.exp_bounds.numpy(), [[0, 1]] * 3)  # cut to the layout
    assert fm.exp_names == ["jawOpen", "a_L", "a_R", "b"]
    assert fm.albedo_provenance == "made by hand"
    np.testing.assert_array_equal(fm.lmk68_output, extra["lmk68_output"])
    assert fm.lmk68_output.dtype == np.int32
    with pytest.raises(FaceModelFormatError, match="'lmk68_output' must hold vertex ids"):
        FaceModel(dict(extra, lmk68_output=np.full(68, 16)))
    with pytest.raises(FaceModelFormatError, match="'lmk68_output' has shape"):
        FaceModel(dict(extra, lmk68_output=np.zeros(67, np.int32)))
    with pytest.raises(FaceModelFormatError, match="'exp_bounds' has shape"):
        FaceModel(dict(extra, exp_bounds=np.zeros((3, 2), np.float32)))
    with pytest.raises(FaceModelFormatError, match="low <= high"):
        FaceModel(dict(extra, exp_bounds=np.tile([[1.0, 0.0]], (4, 1))))
    with pytest.raises(FaceModelFormatError, match="'front_mask' has shape"):
        FaceModel(dict(extra, front_mask=np.ones(15, np.float32)))


def test_geometry_hash_follows_geometry_only(tiny_arrays):
    base = geometry_hash(tiny_arrays)
    assert base == FaceModel(tiny_arrays).geometry_hash and len(base) == 40
    other_albedo = dict(tiny_arrays, albedo_basis=tiny_arrays["albedo_basis"] * 2)
    assert geometry_hash(other_albedo) == base
    moved = dict(tiny_arrays, mean_shape=tiny_arrays["mean_shape"] + 0.01)
    assert geometry_hash(moved) != base
    relabelled = dict(tiny_arrays, lmk68=np.roll(tiny_arrays["lmk68"], 1))
    assert geometry_hash(relabelled) != base


def test_vertex_uv_averages_corner_uvs():
    tris = np.array([[0, 1, 2], [0, 2, 3]])
    tri_uv = np.array([[0, 1, 2], [4, 2, 3]])  # vertex 0 has two UVs (a seam)
    uv = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.5, 0.0]])
    got = vertex_uv(tris, tri_uv, uv, 5)
    np.testing.assert_allclose(got, [[0.25, 0], [1, 0], [1, 1], [0, 1], [0, 0]])
    assert got.dtype == np.float32


def test_bad_inputs_raise_clear_errors(tmp_path, tiny_arrays, face_model):
    with pytest.raises(ValueError, match=r"identity coefficients must have shape \[B, 80\]"):
        face_model.shape(tf.zeros([1, 79]), tf.zeros([1, 29]))
    with pytest.raises(FileNotFoundError, match="Missing face-model file"):
        load_face_model(str(tmp_path / "absent.npz"))
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"not a zip file at all")
    with pytest.raises(FaceModelFormatError, match="cannot read"):
        load_face_model(str(corrupt))
    bad = dict(tiny_arrays, triangles=np.array([[0, 1, 99]], np.int32),
               tri_uv=np.array([[0, 1, 2]], np.int32))
    with pytest.raises(FaceModelFormatError, match="'triangles' indexes out of range"):
        FaceModel(bad)
    nan = dict(tiny_arrays, mean_shape=np.full_like(tiny_arrays["mean_shape"], np.nan))
    with pytest.raises(FaceModelFormatError, match="NaN"):
        save_face_model(str(tmp_path / "nan.npz"), nan)
    missing = {k: v for k, v in tiny_arrays.items() if k != "lmk68"}
    with pytest.raises(FaceModelFormatError, match="lmk68"):
        FaceModel(missing)


def test_load_face_model_needs_a_recon_tf_file(tmp_path):
    with pytest.raises(ValueError, match=r"bfm.load_default_face_model\(\)"):
        load_face_model(None)
    ict_style = tmp_path / "ict.npz"
    np.savez(ict_style, mean=np.zeros((3, 3)), tris=np.zeros((1, 3), np.int32))
    with pytest.raises(FaceModelFormatError, match="python -m bfm.convert --source=ict"):
        load_face_model(str(ict_style))


def test_nan_coefficients_are_rejected(face_model):
    c = np.zeros([1, 222], np.float32)
    c[0, 5] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError, match="NaN or Inf"):
        face_model.compute(c)
