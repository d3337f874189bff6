"""Camera (Eq. 4) and SH lighting (Eq. 5) against analytic values and tensorflow-graphics."""

import math

import numpy as np
import pytest
import tensorflow as tf

from recon_tf.camera import Camera, rigid_transform, rotation_matrix
from recon_tf.lighting import AMBIENT_INIT, irradiance, real_sh_basis, sh_basis, shade


def test_rotation_analytic():
    r = rotation_matrix(tf.constant([[0.0, math.pi / 2, 0.0]])).numpy()[0]
    # yaw +90°: x axis goes to -z, z axis to +x
    np.testing.assert_allclose(r @ [1, 0, 0], [0, 0, -1], atol=1e-6)
    np.testing.assert_allclose(r @ [0, 0, 1], [1, 0, 0], atol=1e-6)
    rng = np.random.default_rng(0)
    rs = rotation_matrix(rng.uniform(-3, 3, (5, 3)).astype(np.float32)).numpy()
    for m in rs:
        np.testing.assert_allclose(m @ m.T, np.eye(3), atol=1e-5)
        assert abs(np.linalg.det(m) - 1) < 1e-5


def test_rotation_matches_tensorflow_graphics():
    tfg_rot = pytest.importorskip("tensorflow_graphics.geometry.transformation.rotation_matrix_3d")
    angles = np.random.default_rng(1).uniform(-2, 2, (8, 3)).astype(np.float32)
    np.testing.assert_allclose(rotation_matrix(angles).numpy(),
                               tfg_rot.from_euler(angles).numpy(), atol=1e-5)


def test_rigid_transform_and_bad_shapes():
    p = tf.constant([[[1.0, 2.0, 3.0]]])
    out = rigid_transform(p, tf.zeros([1, 3]), tf.constant([[0.5, 0.0, -1.0]])).numpy()
    np.testing.assert_allclose(out, [[[1.5, 2.0, 2.0]]])
    with pytest.raises(ValueError, match=r"\[B, 3\]"):
        rotation_matrix(tf.zeros([2, 2]))
    with pytest.raises(ValueError, match=r"\[B, N, 3\]"):
        rigid_transform(tf.zeros([2, 3]), tf.zeros([2, 3]), tf.zeros([2, 3]))
    with pytest.raises(ValueError, match="camera kind"):
        Camera(kind="fisheye")


def test_perspective_deep3d_projection():
    cam = Camera.deep3d(224)
    pts = tf.constant([[[0.0, 0.0, 0.0], [1.0, 0.5, 0.0], [1.0, 0.5, 2.0]]])
    uv = cam.project(pts).numpy()[0]
    np.testing.assert_allclose(uv[0], [112, 112])
    np.testing.assert_allclose(uv[1], [112 + 101.5, 112 - 50.75], rtol=1e-6)
    np.testing.assert_allclose(uv[2], [112 + 1015 / 8, 112 - 1015 / 16], rtol=1e-6)
    big = Camera.deep3d(448)
    np.testing.assert_allclose(big.project(pts).numpy()[0], 2 * uv, rtol=1e-6)


@pytest.mark.parametrize("kind", ["perspective", "orthographic"])
def test_clip_agrees_with_projection(kind):
    cam = Camera(kind=kind, image_size=(200, 300))
    pts = tf.constant(np.random.default_rng(2).uniform(-1, 1, (2, 50, 3)).astype(np.float32))
    clip = cam.clip(pts).numpy()
    ndc = clip[..., :3] / clip[..., 3:]
    u = (ndc[..., 0] + 1) / 2 * 300
    v = (1 - ndc[..., 1]) / 2 * 200
    np.testing.assert_allclose(np.stack([u, v], -1), cam.project(pts).numpy(), atol=1e-3)
    assert np.all(np.abs(ndc[..., 2]) < 1)  # inside near/far
    # nearer points have smaller ndc z
    order = np.argsort(cam.depth(pts).numpy()[0])
    assert np.all(np.diff(ndc[0, order, 2]) >= -1e-6)


@pytest.mark.parametrize("kind", ["perspective", "orthographic"])
def test_source_camera_maps_the_crop_projection_back_to_the_photo(kind):
    """for_source_image: projecting onto the photo then applying the crop transform
    (pixel-centre convention) gives the crop projection, exactly for one scale and to
    within half a reduced pixel when a reduced decode made x and y scales differ."""
    cam = Camera.deep3d(224, kind=kind)
    pts = tf.constant(np.random.default_rng(3).uniform(-0.8, 0.8, (1, 40, 3)).astype(np.float32))
    crop = cam.project(pts).numpy()[0]

    def through(transform, source):
        photo = source.project(pts).numpy()[0] - 0.5
        return photo @ np.asarray(transform)[:, :2].T + np.asarray(transform)[:, 2] + 0.5

    exact = [[0.31, 0.0, -40.0], [0.0, 0.31, -12.5]]
    np.testing.assert_allclose(through(exact, cam.for_source_image(exact, (900, 700))), crop,
                               atol=1e-3)
    # 8200 x 2000 decoded at 8192 x 1998: the scales differ by 2.4e-5 of themselves
    sx, sy = 0.31 * 8200 / 8192, 0.31 * 2000 / 1998
    reduced = [[sx, 0.0, -40.0], [0.0, sy, -12.5]]
    with pytest.raises(ValueError, match="scale"):
        cam.for_source_image(reduced, (2000, 8200))
    source = cam.for_source_image(reduced, (2000, 8200), max_anisotropy=1.0 / 1998)
    error = np.abs(through(reduced, source) - crop).max()
    assert 0 < error < 0.5 * sx
    with pytest.raises(ValueError, match="scale"):  # a real stretch stays refused
        cam.for_source_image([[0.3, 0.0, 0.0], [0.0, 0.36, 0.0]], (10, 10), 1.0 / 1998)
    with pytest.raises(ValueError, match="scale"):  # and so does a rotation
        cam.for_source_image([[0.3, 0.05, 0.0], [-0.05, 0.3, 0.0]], (10, 10))


def test_orthographic_scale_matches_perspective_at_origin():
    p = tf.constant([[[0.1, 0.1, 0.0]]])
    persp = Camera.deep3d(224).project(p).numpy()
    ortho = Camera.deep3d(224, kind="orthographic").project(p).numpy()
    np.testing.assert_allclose(persp, ortho, rtol=1e-5)


def test_sh_constant_and_linear_terms():
    n = tf.constant([[[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]])
    basis = sh_basis(n).numpy()[0]
    np.testing.assert_allclose(basis[:, 0], math.pi / math.sqrt(4 * math.pi), rtol=1e-6)
    np.testing.assert_allclose(basis[0, 2], 2 * math.pi / 3 * math.sqrt(3 / (4 * math.pi)),
                               rtol=1e-6)
    # zero light → uniform ambient irradiance AMBIENT_INIT * Φ_0
    e = irradiance(n, tf.zeros([1, 27])).numpy()
    np.testing.assert_allclose(e, AMBIENT_INIT * math.pi / math.sqrt(4 * math.pi), rtol=1e-6)


def test_lambertian_irradiance_of_directional_light():
    """A unit directional light along d has L_lm = Y_lm(d); Eq. 5 must then give the
    order-2 clamped-cosine irradiance Σ_l A_l (2l+1)/(4π) P_l(n·d)."""
    rng = np.random.default_rng(4)
    d = rng.normal(size=3)
    d /= np.linalg.norm(d)
    coeff = real_sh_basis(tf.constant(d, tf.float32)).numpy()
    gamma = np.tile(coeff, 3)[None].astype(np.float32)
    gamma[0, [0, 9, 18]] -= AMBIENT_INIT
    normals = rng.normal(size=(1, 30, 3))
    normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
    e = irradiance(normals.astype(np.float32), gamma).numpy()[0]
    c = normals[0] @ d
    want = 0.25 + 0.5 * c + 5.0 / 16.0 * (3 * c * c - 1) / 2
    for ch in range(3):
        np.testing.assert_allclose(e[:, ch], want, atol=1e-5)
    # and it approximates max(cos, 0) within the known order-2 error
    assert np.max(np.abs(want - np.maximum(c, 0))) < 0.1


def test_sh_basis_matches_tensorflow_graphics():
    sh = pytest.importorskip("tensorflow_graphics.math.spherical_harmonics")
    rng = np.random.default_rng(3)
    theta = rng.uniform(0.1, 3.0, 20)
    phi = rng.uniform(-3.0, 3.0, 20)
    n = np.stack([np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), np.cos(theta)], -1)
    ours = real_sh_basis(tf.constant(n, tf.float32)).numpy()
    ls, ms = sh.generate_l_m_permutations(2)
    ls = np.broadcast_to(ls.numpy(), (20, 9))
    ms = np.broadcast_to(ms.numpy(), (20, 9))
    theirs = sh.evaluate_spherical_harmonics(ls, ms, theta[:, None], phi[:, None]).numpy()
    # Same functions up to a fixed sign per basis function (Condon-Shortley phase).
    signs = np.sign(np.sum(ours * theirs, axis=0))
    np.testing.assert_allclose(ours, theirs * signs, atol=1e-4)


def test_shade_is_albedo_times_irradiance_and_differentiable():
    albedo = tf.constant([[[0.5, 0.25, 1.0]]])
    n = tf.constant([[[0.0, 0.0, 1.0]]])
    light = tf.Variable(tf.zeros([1, 27]))
    with tf.GradientTape() as tape:
        c = shade(albedo, n, light)
        loss = tf.reduce_sum(c)
    g = tape.gradient(loss, light).numpy()
    base = AMBIENT_INIT * math.pi / math.sqrt(4 * math.pi)
    np.testing.assert_allclose(c.numpy()[0, 0], np.array([0.5, 0.25, 1.0]) * base, rtol=1e-6)
    assert g[0, 0] == pytest.approx(0.5 * math.pi / math.sqrt(4 * math.pi), rel=1e-5)
    with pytest.raises(ValueError, match=r"\[B, 27\]"):
        shade(albedo, n, tf.zeros([1, 26]))
