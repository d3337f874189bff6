"""Rendering API, UV ops and detail shading on the face model (op and reference)."""

import numpy as np
import pytest
import tensorflow as tf

from recon_tf.camera import Camera
from recon_tf.face_model import FaceModel
from recon_tf.render.detail import displace, pixel_uv, render_detailed, sample_uv_map
from recon_tf.render.reference import rasterize_reference
from recon_tf.render.renderer import project_landmarks, render_face
from recon_tf.render.uv import (
    attributes_to_uv,
    bilinear_sample,
    rasterize_uv_layout,
    unwrap_image,
)


def _coeffs(face_model, yaw=0.0, light=None, seed=0):
    rng = np.random.default_rng(seed)
    lay = face_model.layout
    c = np.zeros([1, lay.total], np.float32)
    a, b = lay.offsets["identity"]
    c[0, a:b] = rng.normal(size=b - a) * 0.5
    a, b = lay.offsets["albedo"]
    c[0, a:b] = rng.normal(size=b - a) * 0.5
    a, _ = lay.offsets["angles"]
    c[0, a + 1] = yaw
    if light is not None:
        a, b = lay.offsets["light"]
        c[0, a:b] = light
    return tf.constant(c)


def test_op_render_matches_reference(face_model):
    cam = Camera.deep3d(48)
    coeffs = _coeffs(face_model, yaw=0.3)
    op = render_face(face_model, coeffs, cam)
    ref = render_face(face_model, coeffs, cam, rasterize_fn=rasterize_reference)
    same = (op.triangle_ids.numpy() == ref.triangle_ids.numpy())
    assert same.mean() > 0.99
    diff = np.abs(op.image.numpy() - ref.image.numpy())[0][same[0]]
    assert diff.max() < 1e-3
    assert op.mask.numpy().mean() > 0.3


def test_landmarks_and_depth_are_consistent(face_model):
    cam = Camera.deep3d(224)
    coeffs = _coeffs(face_model, yaw=0.2)
    r = render_face(face_model, coeffs, cam)
    np.testing.assert_allclose(project_landmarks(face_model, coeffs, cam).numpy(),
                               r.landmarks.numpy(), atol=1e-4)
    tip = r.landmarks.numpy()[0, 30]
    row, col = int(tip[1]), int(tip[0])
    assert r.mask.numpy()[0, row, col, 0] == 1
    nose_depth = cam.depth(r.vertices).numpy()[0, face_model.arrays["lmk68"][30]]
    assert abs(r.depth.numpy()[0, row, col, 0] - nose_depth) < 0.02
    # the nose tip is the nearest point of a frontal-ish face
    covered = r.depth.numpy()[0, ..., 0][r.mask.numpy()[0, ..., 0] > 0]
    assert nose_depth <= np.percentile(covered, 2) + 0.02


def test_light_and_albedo_gradients_match_finite_differences(face_model):
    """Light and albedo leave coverage unchanged: the gradient must be exact."""
    cam = Camera.deep3d(32)
    coeffs = _coeffs(face_model, light=np.random.default_rng(1).normal(size=27) * 0.1)
    lay = face_model.layout
    weights = tf.constant(np.random.default_rng(2).uniform(size=(1, 32, 32, 3)), tf.float32)

    def loss(c):
        return tf.reduce_sum(render_face(face_model, c, cam).image * weights)

    with tf.GradientTape() as tape:
        tape.watch(coeffs)
        value = loss(coeffs)
    grad = tape.gradient(value, coeffs).numpy()[0]
    for k in [lay.offsets["albedo"][0], lay.offsets["albedo"][0] + 5, lay.offsets["light"][0],
              lay.offsets["light"][0] + 2, lay.offsets["light"][0] + 13]:
        eps = 1e-2
        e = np.zeros([1, lay.total], np.float32)
        e[0, k] = eps
        fd = (float(loss(coeffs + e)) - float(loss(coeffs - e))) / (2 * eps)
        assert grad[k] == pytest.approx(fd, rel=2e-2, abs=1e-2), k


def test_pose_gradients_fit_a_target(face_model):
    """Analysis by synthesis from a perturbed pose moves the pose back towards the truth."""
    cam = Camera.deep3d(64)
    lay = face_model.layout
    truth = _coeffs(face_model, yaw=0.25, seed=3)
    target = render_face(face_model, truth, cam)
    a, _ = lay.offsets["angles"]
    pose_true = truth.numpy()[0, a:a + 6]
    start = pose_true + np.array([0.05, -0.1, 0.05, 0.04, 0.06, 0.0], np.float32)
    pose = tf.Variable(start[None])
    opt = tf.keras.optimizers.Adam(0.01)

    def loss():
        c = tf.concat([truth[:, :a], pose, truth[:, a + 6:]], axis=1)
        r = render_face(face_model, c, cam)
        return (tf.reduce_mean(tf.square(r.image - target.image))
                + 1e-3 * tf.reduce_mean(tf.square(r.landmarks - target.landmarks)))

    first = float(loss())
    for _ in range(30):
        with tf.GradientTape() as tape:
            value = loss()
        opt.apply_gradients([(tape.gradient(value, pose), pose)])
    assert float(loss()) < 0.3 * first
    err_before = np.abs(start - pose_true)
    err_after = np.abs(pose.numpy()[0] - pose_true)
    assert err_after.sum() < 0.4 * err_before.sum(), (err_before, err_after)


def test_uv_layout_interpolates_uvs(tiny_arrays):
    tiny = FaceModel(tiny_arrays)
    layout = rasterize_uv_layout(tiny, 16)
    assert layout.mask.numpy().mean() > 0.95  # the grid covers the whole UV square
    uv_map = attributes_to_uv(tf.constant(tiny.vertex_uv()[None]), layout).numpy()[0]
    centres = (np.arange(16) + 0.5) / 16
    np.testing.assert_allclose(uv_map[..., 0], np.tile(centres, (16, 1)), atol=1e-4)
    np.testing.assert_allclose(uv_map[..., 1], np.tile(1 - centres[:, None], (1, 16)), atol=1e-4)


def test_uv_layout_of_face_model_respects_seams(face_model):
    layout = rasterize_uv_layout(face_model, 128)
    assert 0.4 < layout.mask.numpy().mean() < 1.0
    # per-corner UVs recovered through pixel_uv equal each texel's centre
    uv = pixel_uv(face_model, layout.triangle_ids, layout.barycentrics).numpy()[0]
    centres = (np.arange(128) + 0.5) / 128
    inside = layout.mask.numpy()[0, ..., 0] > 0
    err_u = np.abs(uv[..., 0] - centres[None, :])[inside]
    err_v = np.abs(uv[..., 1] - (1 - centres[:, None]))[inside]
    assert max(err_u.max(), err_v.max()) < 1e-4


def test_bilinear_sample_exact_on_linear_image_and_differentiable():
    h, w = 6, 9
    ys, xs = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    image = tf.constant(np.stack([xs + 0.5, ys + 0.5], -1)[None], tf.float32)
    coords = tf.constant([[[2.3, 1.7], [0.5, 0.5], [8.5, 5.5], [4.0, 3.25]]], tf.float32)
    np.testing.assert_allclose(bilinear_sample(image, coords).numpy(), coords.numpy(), atol=1e-5)
    with tf.GradientTape() as tape:
        tape.watch(coords)
        y = tf.reduce_sum(bilinear_sample(image, coords)[..., 0])
    g = tape.gradient(y, coords).numpy()
    np.testing.assert_allclose(g[0, [0, 3], 0], 1.0, atol=1e-5)


def test_unwrap_recovers_shading_on_visible_texels(face_model):
    cam = Camera.deep3d(224)
    layout = rasterize_uv_layout(face_model, 64)
    frontal = render_face(face_model, _coeffs(face_model), cam)
    uv_img, vis = unwrap_image(frontal.image, frontal.screen, frontal.normals,
                               cam.depth(frontal.vertices), frontal.depth, layout)
    truth = attributes_to_uv(frontal.colors, layout)
    v = vis.numpy()[0, ..., 0] > 0
    assert v.mean() > 0.3
    err = np.abs(uv_img.numpy()[0] - truth.numpy()[0])[v]
    assert np.median(err) < 0.01
    assert np.all(uv_img.numpy()[0][~v] == 0)
    turned = render_face(face_model, _coeffs(face_model, yaw=1.0), cam)
    _, vis_turned = unwrap_image(turned.image, turned.screen, turned.normals,
                                 cam.depth(turned.vertices), turned.depth, layout)
    left, right = vis_turned.numpy()[0, :, :32].mean(), vis_turned.numpy()[0, :, 32:].mean()
    assert min(left, right) < 0.6 * max(left, right)  # one side is hidden


def test_displacement_normals(face_model):
    layout = rasterize_uv_layout(face_model, 64)
    shape = face_model.mean_shape[None]
    maps = attributes_to_uv(tf.concat([shape, face_model.vertex_normals(shape)], -1), layout)
    pos, nrm = maps[..., :3], maps[..., 3:]
    nrm = nrm / (tf.norm(nrm, axis=-1, keepdims=True) + 1e-9)
    _, flat = displace(pos, nrm, tf.zeros_like(pos[..., :1]), layout.mask)
    inside = layout.mask.numpy()[0, ..., 0] > 0
    cos = np.sum(flat.numpy()[0] * nrm.numpy()[0], -1)[inside]
    assert np.median(cos) > 0.99
    # a groove running along v tilts the normals across it, in opposite directions
    groove = np.zeros([1, 64, 64, 1], np.float32)
    groove[0, :, 30:34, 0] = -0.02
    _, tilted = displace(pos, nrm, tf.constant(groove), layout.mask)
    change = 1 - np.sum(tilted.numpy()[0] * flat.numpy()[0], -1)
    rows = inside[:, 29] & inside[:, 34]
    assert change[rows, 29].mean() > 10 * change[rows, 20].mean() + 1e-4


def test_render_detailed_matches_coarse_without_detail(face_model):
    cam = Camera.deep3d(96)
    coeffs = _coeffs(face_model, light=np.tile([0.1, 0.2, 0.3, 0.1, 0, 0, 0, 0, 0], 3))
    r = render_face(face_model, coeffs, cam)
    layout = rasterize_uv_layout(face_model, 256)
    shape = face_model.shape(*face_model.layout.split(coeffs)[:2])
    maps = attributes_to_uv(tf.concat([r.albedo, face_model.vertex_normals(shape)], -1), layout)
    c = face_model.layout.split(coeffs)
    detailed = render_detailed(face_model, r, maps[..., :3], maps[..., 3:], c.angles, c.light)
    m = r.mask.numpy()[0, ..., 0] > 0
    diff = np.abs(detailed.numpy()[0] - r.image.numpy()[0])[m]
    assert np.median(diff) < 0.01
    # a brighter albedo map brightens the render
    brighter = render_detailed(face_model, r, maps[..., :3] * 1.2, maps[..., 3:], c.angles,
                               c.light)
    assert brighter.numpy()[0][m].mean() > 1.15 * detailed.numpy()[0][m].mean()
    uv = tf.constant([[[0.5, 0.5]]])
    np.testing.assert_allclose(sample_uv_map(maps[..., :3], uv).numpy().shape, [1, 1, 3])
