"""Tests of the rasterizer op (recon_tf.render.rasterizer).

The op is compared with the pure-TF reference (recon_tf.render.reference), with
analytic expectations (orientation, perspective-correct interpolation, z_ndc
order, clipping, skipped triangles) and, for the gradient kernel, with central
finite differences and with autodiff through the reference.
"""

import os
import tempfile

import numpy as np
import pytest
import tensorflow as tf

from recon_tf.render import build_op
from recon_tf.render.rasterizer import MAX_IMAGE_SIDE, MAX_TOTAL_PIXELS, interpolate, rasterize
from recon_tf.render.reference import rasterize_reference

EDGE_TOL = 1e-3  # a barycentric below this marks a pixel centre on a triangle edge


def random_mesh(rng, batch, num_vertices, num_triangles, spread=1.2):
    """Random overlapping triangles: clip [B,V,4] float32 with w in [1,3], tris [T,3]."""
    w = rng.uniform(1.0, 3.0, (batch, num_vertices, 1))
    xyz = rng.uniform(-spread, spread, (batch, num_vertices, 3)) * w
    clip = np.concatenate([xyz, w], -1).astype(np.float32)
    tris = rng.integers(0, num_vertices, (num_triangles, 3)).astype(np.int32)
    return clip, tris


def grid_mesh(rng, n=7, extent=0.75, batch=1):
    """Smooth non-overlapping perspective grid: clip [B,n*n,4] float64, tris [2(n-1)^2,3]."""
    u, v = np.meshgrid(np.linspace(-extent, extent, n), np.linspace(-extent, extent, n))
    out = []
    for _ in range(batch):
        x = u + rng.uniform(-0.02, 0.02, u.shape)
        y = v + rng.uniform(-0.02, 0.02, v.shape)
        w = 1.5 + 0.4 * x - 0.3 * y
        z = 0.2 + 0.3 * x * y
        out.append(np.stack([x * w, y * w, z * w, w], -1).reshape(-1, 4))
    i = np.arange(n - 1)
    a = (i[:, None] * n + i[None, :]).reshape(-1)
    tris = np.concatenate([np.stack([a, a + 1, a + n], -1), np.stack([a + 1, a + n + 1, a + n],
                                                                     -1)])
    return np.stack(out), tris.astype(np.int32)


def run(fn, clip, tris, height, width):
    return [t.numpy() for t in fn(tf.constant(clip), tf.constant(tris), height, width)]


def assert_matches_reference(clip, tris, height, width, max_mismatch=0.01):
    ids, bary, z_ndc = run(rasterize, clip, tris, height, width)
    rids, rbary, rz_ndc = run(rasterize_reference, clip, tris, height, width)
    assert ids.shape == (clip.shape[0], height, width) and ids.dtype == np.int32
    assert bary.shape == (clip.shape[0], height, width, 3) and bary.dtype == np.float32
    assert z_ndc.shape == ids.shape and z_ndc.dtype == np.float32
    same = ids == rids
    # Disagreements are allowed only at triangle edges, z-clip borders or z_ndc ties.
    edge = (bary.min(-1) < EDGE_TOL) | (np.abs(z_ndc) > 1 - 1e-5)
    redge = (rbary.min(-1) < EDGE_TOL) | (np.abs(rz_ndc) > 1 - 1e-5)
    tie = np.abs(z_ndc - rz_ndc) < 1e-5
    both = (ids >= 0) & (rids >= 0)
    allowed = np.where(both, tie | edge | redge, np.where(ids >= 0, edge, redge))
    bad = ~same & ~allowed
    assert not bad.any(), f"{bad.sum()} pixels differ, e.g. {np.argwhere(bad)[:5]}"
    assert (~same).mean() <= max_mismatch
    np.testing.assert_allclose(bary[same], rbary[same], atol=3e-5)
    np.testing.assert_allclose(z_ndc[same], rz_ndc[same], atol=3e-5)
    background = ids < 0
    assert (bary[background] == 0).all() and (z_ndc[background] == 1).all()
    covered = ~background
    np.testing.assert_allclose(bary[covered].sum(-1), 1.0, atol=1e-5)
    assert (bary[covered] > -1e-5).all() and (z_ndc[covered] >= -1).all()
    return ids, bary, z_ndc


@pytest.mark.parametrize("batch,height,width", [(1, 48, 64), (3, 33, 17)])
def test_matches_reference_random_mesh(batch, height, width):
    rng = np.random.default_rng(batch)
    clip, tris = random_mesh(rng, batch, 80, 150)
    ids, _, _ = assert_matches_reference(clip, tris, height, width)
    assert (ids >= 0).mean() > 0.5 and len(np.unique(ids)) > 50


def test_batch_16_matches_reference_and_single_images():
    rng = np.random.default_rng(16)
    clip, tris = random_mesh(rng, 16, 40, 60)
    ids, bary, z_ndc = assert_matches_reference(clip, tris, 24, 20)
    for b in (0, 7, 15):
        single = run(rasterize, clip[b:b + 1], tris, 24, 20)
        np.testing.assert_array_equal(single[0][0], ids[b])
        np.testing.assert_array_equal(single[1][0], bary[b])
        np.testing.assert_array_equal(single[2][0], z_ndc[b])
    assert len({ids[b].tobytes() for b in range(16)}) == 16


@pytest.mark.parametrize("height,width", [(1, 1), (1, 7), (7, 1), (5, 3), (1024, 1024)])
def test_image_sizes_match_reference(height, width):
    rng = np.random.default_rng(height * 31 + width)
    if height == 1024:
        # Small triangles keep the reference's candidate-fragment list short.
        centres = rng.uniform(-0.9, 0.9, (1, 40, 1, 2))
        ndc = centres + rng.uniform(-0.08, 0.08, (1, 40, 3, 2))
        z = rng.uniform(-0.9, 0.9, (1, 40, 3, 1))
        clip = np.concatenate([ndc, z, np.ones_like(z)], -1).reshape(1, 120, 4) * 2.0
        clip = clip.astype(np.float32)
        tris = np.arange(120, dtype=np.int32).reshape(40, 3)
    elif height * width == 1:
        clip, tris = random_mesh(rng, 2, 30, 60, spread=0.9)
    else:
        clip, tris = random_mesh(rng, 1, 30, 40, spread=1.1)
    ids, _, _ = assert_matches_reference(clip, tris, height, width)
    if height * width > 1:
        assert (ids >= 0).any()


def test_orientation_and_pixel_centres():
    # Upper-left triangle: NDC (-1, 1), (0, 1), (-1, 0) -> rows and columns < half.
    clip = np.array([[[-1, 1, 0, 1], [0, 1, 0, 1], [-1, 0, 0, 1]]], np.float32) * 2.0
    tris = np.array([[0, 1, 2]], np.int32)
    height, width = 10, 16
    ids = run(rasterize, clip, tris, height, width)[0][0]
    rows, cols = np.mgrid[0:height, 0:width]
    # Screen: x in [0, 8], y in [0, 5], hypotenuse x / 8 + y / 5 <= 1 at pixel centres.
    expected = ((cols + 0.5) / 8 + (rows + 0.5) / 5) <= 1
    np.testing.assert_array_equal(ids >= 0, expected)
    assert ids[0, 0] == 0 and ids[-1, -1] == -1 and ids[0, -1] == -1 and ids[-1, 0] == -1


def test_perspective_correct_barycentrics_and_z_ndc():
    rng = np.random.default_rng(3)
    ndc = np.array([[-0.9, -0.8], [0.95, -0.9], [0.1, 0.9], [0.9, 0.85]])
    w = np.array([0.7, 2.5, 1.3, 4.0])
    vertex_z = np.array([-0.5, 0.6, 0.1, 0.9])
    clip = np.concatenate([ndc * w[:, None], (vertex_z * w)[:, None], w[:, None]], -1)[None]
    clip = (clip + rng.normal(0, 1e-3, clip.shape)).astype(np.float32)
    tris = np.array([[0, 1, 2], [1, 3, 2]], np.int32)
    height, width = 31, 37
    ids, bary, z_ndc = run(rasterize, clip, tris, height, width)
    covered = ids[0] >= 0
    assert covered.mean() > 0.5
    corners = clip[0][tris[ids[0][covered]]].astype(np.float64)  # [N, 3, 4]
    point = np.einsum("nk,nkc->nc", bary[0][covered].astype(np.float64), corners)
    rows, cols = np.nonzero(covered)
    np.testing.assert_allclose(point[:, 0] / point[:, 3], (2 * cols + 1) / width - 1, atol=1e-5)
    np.testing.assert_allclose(point[:, 1] / point[:, 3], 1 - (2 * rows + 1) / height, atol=1e-5)
    np.testing.assert_allclose(z_ndc[0][covered], point[:, 2] / point[:, 3], atol=1e-5)
    # Not affine in screen space: the perspective weights differ from NDC-linear ones.
    assert np.abs(bary[0][covered] - bary[0][covered].mean(0)).max() > 0.1


def test_nearest_fragment_wins_and_ties_go_to_lowest_id():
    quad = np.array([[-1, -1], [1, -1], [-1, 1], [1, 1]], np.float64) * 1.5
    def layer(z):
        return np.concatenate([quad, np.full((4, 1), z), np.ones((4, 1))], -1)
    clip = np.concatenate([layer(0.5), layer(-0.2), layer(-0.2)])[None].astype(np.float32)
    tris = np.array([[0, 1, 2], [1, 3, 2], [4, 5, 6], [5, 7, 6], [8, 9, 10], [9, 11, 10]],
                    np.int32)
    ids, _, z_ndc = run(rasterize, clip, tris, 8, 8)
    assert set(np.unique(ids)) == {2, 3}  # the z = -0.2 layer, first copy
    np.testing.assert_allclose(z_ndc, -0.2, atol=1e-6)
    ids_rev, _, _ = run(rasterize, clip, tris[::-1].copy(), 8, 8)
    assert set(np.unique(ids_rev)) == {0, 1}  # reversed order: ids 0, 1 hold the copy


def test_z_ndc_clipping():
    # One triangle entirely beyond the far plane, one crossing both planes.
    clip = np.array([[[-1, -1, 1.5, 1], [1, -1, 1.2, 1], [0, 1, 1.1, 1],
                      [-1, -1, -2.0, 1], [1, -1, -2.0, 1], [0, 1, 2.0, 1]]], np.float32)
    tris = np.array([[0, 1, 2], [3, 4, 5]], np.int32)
    ids, _, z_ndc = assert_matches_reference(clip, tris, 40, 40)
    assert not (ids == 0).any()
    assert (ids == 1).any() and (z_ndc >= -1).all() and (z_ndc <= 1).all()
    rows = np.nonzero((ids == 1).any(1)[0])[0]
    assert 0 < rows.min() and rows.max() < 39  # clipped at both ends, not at the image border


def test_degenerate_triangles_are_skipped():
    clip = np.array([[[-1, -1, 0, 1], [1, -1, 0, 1], [0, 1, 0, 1], [0.5, 0.5, 0, 1],
                      [np.nan, 0, 0, 1]]], np.float32)
    # Repeated indices (0-2), a NaN vertex (4); triangles 3 and 5 are valid.
    tris = np.array([[0, 0, 1], [2, 2, 2], [0, 1, 1], [0, 3, 2], [0, 4, 1], [0, 1, 2]], np.int32)
    ids, bary, z_ndc = run(rasterize, clip, tris, 16, 16)
    assert set(np.unique(ids)) == {-1, 3, 5}
    assert np.isfinite(bary).all() and np.isfinite(z_ndc).all()
    collinear = np.array([[[-1, -1, 0, 1], [0, 0, 0, 1], [1, 1, 0, 1]]], np.float32)
    ids, bary, z_ndc = run(rasterize, collinear, np.array([[0, 1, 2]], np.int32), 16, 16)
    assert (ids == -1).all() and (bary == 0).all() and (z_ndc == 1).all()


def _crack_prone_edges(rng, size, wanted=4):
    """Edges (a, b) in NDC and pixel centres p on them where the naive float32 edge
    functions of a -> b and b -> a are both negative: a rasterizer that evaluates a
    shared edge in each triangle's own vertex order leaves p uncovered (a crack)."""
    n = 20000

    def to_screen(ndc):  # the kernel's float32 arithmetic for w = 1
        one, half = np.float32(1), np.float32(0.5)
        return np.stack([(ndc[:, 0] + one) * half * np.float32(size),
                         (one - ndc[:, 1]) * half * np.float32(size)], -1)

    ndc_a = rng.uniform(-0.9, 0.9, (n, 2)).astype(np.float32)
    a = to_screen(ndc_a)
    p = (np.floor(rng.uniform(0.1, 0.9, (n, 2)) * size) + 0.5).astype(np.float32)
    # b continues the segment a -> p, so p lies on a -> b up to float rounding.
    b_screen = a + (p - a).astype(np.float64) * rng.uniform(1.5, 3.0, (n, 1))
    ndc_b = np.stack([b_screen[:, 0] / (size / 2) - 1, 1 - b_screen[:, 1] / (size / 2)],
                     -1).astype(np.float32)
    b = to_screen(ndc_b)
    e_ab = (b[:, 0] - a[:, 0]) * (p[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (p[:, 0] - a[:, 0])
    e_ba = (a[:, 0] - b[:, 0]) * (p[:, 1] - b[:, 1]) - (a[:, 1] - b[:, 1]) * (p[:, 0] - b[:, 0])
    hit = np.nonzero((e_ab < 0) & (e_ba < 0) & (np.abs(ndc_b) < 1).all(1))[0]
    assert len(hit) >= wanted
    return [(ndc_a[i], ndc_b[i], a[i], b[i], p[i]) for i in hit[:wanted]]


def test_shared_edges_leave_no_cracks():
    """Pixel centres on a shared edge belong to at least one of the two triangles."""
    size = 1024
    clips, pixels = [], []
    for ndc_a, ndc_b, a, b, p in _crack_prone_edges(np.random.default_rng(4), size):
        # Third vertices 20 px either side of the edge (a -> b positive on c's side).
        normal = np.array([-(b - a)[1], (b - a)[0]]) / np.hypot(*(b - a)) * 20 / (size / 2)
        mid = 0.5 * (ndc_a.astype(np.float64) + ndc_b)
        ndc_normal = np.array([normal[0], -normal[1]])  # screen y points down
        ndc = np.stack([ndc_a, ndc_b, mid + ndc_normal, mid - ndc_normal])
        clips.append(np.concatenate([ndc, np.zeros((4, 1)), np.ones((4, 1))], -1))
        pixels.append((p - 0.5).astype(int))
    clip = np.stack(clips).astype(np.float32)
    tris = np.array([[0, 1, 2], [1, 0, 3]], np.int32)  # edge a -> b, then b -> a
    ids = run(rasterize, clip, tris, size, size)[0]
    for i, (col, row) in enumerate(pixels):
        assert ids[i, row, col] >= 0, f"crack at pixel {(row, col)} of image {i}"


@pytest.mark.parametrize("bad_w", [-1.0, 0.0, 1e-7])
def test_triangles_behind_camera_are_skipped(bad_w):
    front = [[-1, -1, 0, 1], [1, -1, 0, 1], [0, 1, 0, 1]]
    clip = np.array([front + [[-1, -1, 0, 1], [1, -1, 0, 1], [0, bad_w, 0, bad_w]]],
                    np.float32)
    clip[0, 3:5, 2] = -0.5  # would cover triangle 1 (z = 0) where both overlap
    tris = np.array([[3, 4, 5], [0, 1, 2]], np.int32)
    ids, _, _ = assert_matches_reference(clip, tris, 16, 16)
    assert set(np.unique(ids)) == {-1, 1}
    all_behind = clip.copy()
    all_behind[0, :, 3] = -1.0
    ids, bary, z_ndc = run(rasterize, all_behind, tris, 16, 16)
    assert (ids == -1).all() and (bary == 0).all() and (z_ndc == 1).all()


def test_empty_images():
    rng = np.random.default_rng(5)
    clip, tris = random_mesh(rng, 2, 20, 30)
    clip[..., 0] = 1.5 * clip[..., 3]  # everything right of the view
    for c, t in ((clip, tris), (clip, np.zeros((0, 3), np.int32)),
                 (np.zeros((0, 20, 4), np.float32), tris)):
        ids, bary, z_ndc = run(rasterize, c, t, 9, 11)
        assert ids.shape == (c.shape[0], 9, 11) and bary.shape == (c.shape[0], 9, 11, 3)
        assert (ids == -1).all() and (bary == 0).all() and (z_ndc == 1).all()
        for num_vertices in (c.shape[1], 0):
            attrs = np.full((c.shape[0], num_vertices, 2), np.inf, np.float32)
            image = interpolate(attrs, t[:0] if num_vertices == 0 else t, ids, bary)
            assert image.shape == (c.shape[0], 9, 11, 2) and (image.numpy() == 0).all()


def test_band_split_matches_whole_images():
    """Batch 1 splits images into row bands (forward and gradient); batch 8 does not."""
    rng = np.random.default_rng(8)
    clip, tris = random_mesh(rng, 8, 60, 120)
    weights = tf.constant(rng.normal(size=(8, 50, 30, 3)), tf.float32)

    def forward_and_grad(c, w):
        c = tf.constant(c)
        with tf.GradientTape() as tape:
            tape.watch(c)
            ids, bary, z_ndc = rasterize(c, tris, 50, 30)
            loss = tf.reduce_sum(bary * w) + tf.reduce_sum(z_ndc)
        return ids.numpy(), bary.numpy(), tape.gradient(loss, c).numpy()

    ids, bary, grad = forward_and_grad(clip, weights)
    assert np.abs(grad).max() > 1.0
    for b in (0, 5):
        ids1, bary1, grad1 = forward_and_grad(clip[b:b + 1], weights[b:b + 1])
        np.testing.assert_array_equal(ids1[0], ids[b])
        np.testing.assert_array_equal(bary1[0], bary[b])
        np.testing.assert_allclose(grad1[0], grad[b], rtol=1e-6, atol=1e-6)


def _fd_setup():
    rng = np.random.default_rng(11)
    clip, tris = grid_mesh(rng, batch=2)
    height, width = 40, 36
    ids, bary, _ = run(rasterize, clip.astype(np.float32), tris, height, width)
    stable = (ids >= 0) & (bary.min(-1) > 0.05)  # well inside a triangle
    assert stable.mean() > 0.4
    attrs = rng.normal(size=(2, clip.shape[1], 3))
    w_img = rng.normal(size=(2, height, width, 3)) * stable[..., None]
    w_z_ndc = rng.normal(size=(2, height, width)) * stable
    return clip, tris, height, width, attrs, w_img, w_z_ndc, ids, stable


def _loss(raster_fn, clip, tris, height, width, attrs, w_img, w_z_ndc):
    ids, bary, z_ndc = raster_fn(clip, tris, height, width)
    image = interpolate(tf.constant(attrs), tris, ids, tf.cast(bary, tf.float64))
    return (tf.reduce_sum(image * w_img)
            + tf.reduce_sum(tf.cast(z_ndc, tf.float64) * w_z_ndc)), ids


def test_gradient_matches_finite_differences():
    clip, tris, height, width, attrs, w_img, w_z_ndc, ids0, stable = _fd_setup()
    clip32 = tf.constant(clip.astype(np.float32))
    with tf.GradientTape() as tape:
        tape.watch(clip32)
        loss, _ = _loss(rasterize, clip32, tris, height, width, attrs, w_img, w_z_ndc)
    grad = tape.gradient(loss, clip32).numpy()
    rng = np.random.default_rng(0)
    h = 2e-3
    picks = [(b, rng.integers(clip.shape[1]), c) for b in (0, 1) for c in range(4)
             for _ in range(3)]
    fd, an = [], []
    for b, v, c in picks:
        values = []
        for sign in (1.0, -1.0):
            moved = clip.copy()
            moved[b, v, c] += sign * h
            value, ids = _loss(rasterize, tf.constant(moved.astype(np.float32)), tris, height,
                               width, attrs, w_img, w_z_ndc)
            np.testing.assert_array_equal(ids.numpy()[stable], ids0[stable])
            values.append(float(value))
        fd.append((values[0] - values[1]) / (2 * h))
        an.append(grad[b, v, c])
    fd, an = np.array(fd), np.array(an)
    assert np.abs(an).max() > 1.0
    np.testing.assert_allclose(an, fd, rtol=2e-2, atol=2e-2 * np.abs(fd).max())


def test_gradient_matches_reference_autodiff():
    rng = np.random.default_rng(21)
    clip, tris = random_mesh(rng, 3, 60, 100)
    height, width = 32, 40
    ids, _, _ = run(rasterize, clip, tris, height, width)
    rids, _, _ = run(rasterize_reference, clip, tris, height, width)
    same = ids == rids  # gradients agree where the visible triangle agrees
    w_bary = rng.normal(size=(3, height, width, 3)) * same[..., None]
    w_z_ndc = rng.normal(size=(3, height, width)) * same

    def grad_of(raster_fn, c):
        with tf.GradientTape() as tape:
            tape.watch(c)
            _, bary, z_ndc = raster_fn(c, tris, height, width)
            loss = (tf.reduce_sum(tf.cast(bary, tf.float64) * w_bary)
                    + tf.reduce_sum(tf.cast(z_ndc, tf.float64) * w_z_ndc))
        return tape.gradient(loss, c).numpy()

    g_op = grad_of(rasterize, tf.constant(clip))
    g_ref = grad_of(rasterize_reference, tf.constant(clip.astype(np.float64)))
    assert np.abs(g_ref).max() > 1.0
    np.testing.assert_allclose(g_op, g_ref, rtol=1e-4, atol=1e-4 * np.abs(g_ref).max())
    used = np.zeros(clip.shape[:2], bool)
    for b in range(3):
        used[b, tris[np.unique(ids[b][ids[b] >= 0])].ravel()] = True
    assert (g_op[~used] == 0).all()


def test_interpolate_values_and_attribute_gradient():
    rng = np.random.default_rng(2)
    clip, tris = random_mesh(rng, 2, 30, 40)
    attrs = tf.constant(rng.normal(size=(2, 30, 5)), tf.float32)
    ids, bary, _ = rasterize(clip, tris, 20, 24)
    with tf.GradientTape() as tape:
        tape.watch(attrs)
        image = interpolate(attrs, tris, ids, bary)
        loss = tf.reduce_sum(image)
    ids, bary, image = ids.numpy(), bary.numpy(), image.numpy()
    assert image.shape == (2, 20, 24, 5)
    expected = np.zeros_like(image)
    grad_expected = np.zeros((2, 30))
    for b, r, c in np.argwhere(ids >= 0):
        corners = tris[ids[b, r, c]]
        expected[b, r, c] = bary[b, r, c] @ attrs.numpy()[b, corners]
        np.add.at(grad_expected[b], corners, bary[b, r, c])
    np.testing.assert_allclose(image, expected, atol=1e-5)
    assert (image[ids < 0] == 0).all()
    grad = tape.gradient(loss, attrs).numpy()
    np.testing.assert_allclose(grad, np.repeat(grad_expected[..., None], 5, -1), atol=1e-4)


def test_unknown_batch_in_tf_function():
    spec = tf.TensorSpec([None, None, 4], tf.float32)

    @tf.function(input_signature=[spec])
    def fn(clip):
        ids, bary, z_ndc = rasterize(clip, tf.constant([[0, 1, 2]]), 6, 5)
        assert ids.shape.as_list() == [None, 6, 5] and bary.shape.as_list() == [None, 6, 5, 3]
        return ids, z_ndc

    clip = np.array([[[-1, -1, 0, 1], [1, -1, 0, 1], [0, 1, 0, 1]]] * 2, np.float32)
    ids, z_ndc = fn(clip)
    assert ids.shape == (2, 6, 5) and (ids.numpy() >= 0).any()
    with pytest.raises(tf.errors.InvalidArgumentError, match="batch \\* height \\* width"):
        tf.function(lambda c: rasterize(c, tf.constant([[0, 1, 2]]), 8192, 8192),
                    input_signature=[spec])(clip)


def test_invalid_arguments_raise_clear_errors():
    clip = np.zeros((1, 3, 4), np.float32)
    tris = np.array([[0, 1, 2]], np.int32)
    clip_shape = r"clip_vertices .*\[batch, num_vertices, 4\]"
    cases = [
        ((np.zeros((3, 4), np.float32), tris, 4, 4), clip_shape),
        ((np.zeros((1, 3, 3), np.float32), tris, 4, 4), clip_shape),
        ((clip.astype(np.float64), tris, 4, 4), "clip_vertices must be float32"),
        ((tf.constant(clip, tf.float64), tris, 4, 4), "clip_vertices must be float32"),
        ((clip, tris.astype(np.int64), 4, 4), "triangles must be int32"),
        ((clip, tris.astype(np.float32), 4, 4), "triangles must be int32"),
        ((clip, np.array([0, 1, 2], np.int32), 4, 4), r"triangles .*\[num_triangles, 3\]"),
        ((clip, np.array([[0, 1, 2, 0]], np.int32), 4, 4), r"triangles .*\[num_triangles, 3\]"),
        ((clip, tris, 0, 4), r"height must be in \[1, 8192\], got 0"),
        ((clip, tris, 4, -2), r"width must be in \[1, 8192\], got -2"),
        ((clip, tris, MAX_IMAGE_SIDE + 1, 4), "height must be in"),
        ((clip, tris, 4.0, 4), "height must be a Python int"),
        ((np.zeros((2, 3, 4), np.float32), tris, 8192, 8192), "exceeds the limit"),
    ]
    for args, pattern in cases:
        with pytest.raises(ValueError, match=pattern):
            rasterize(*args)
    assert 2 * 8192 * 8192 > MAX_TOTAL_PIXELS
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"triangles\[0, 2\] = 3"):
        rasterize(clip, np.array([[0, 1, 3]], np.int32), 4, 4)
    ids = tf.zeros((1, 4, 4), tf.int32)
    bary = tf.zeros((1, 4, 4, 3))
    attrs = tf.zeros((1, 3, 2))
    with pytest.raises(ValueError, match="attributes must be a float tensor"):
        interpolate(tf.zeros((3, 2)), tris, ids, bary)
    with pytest.raises(ValueError, match=r"barycentrics must be float \[batch, height, width, 3\]"):
        interpolate(attrs, tris, ids, tf.zeros((1, 4, 4, 2)))
    with pytest.raises(ValueError, match="must share"):
        interpolate(attrs, tris, ids, tf.zeros((1, 4, 5, 3)))
    with pytest.raises(ValueError, match="same batch size"):
        interpolate(tf.zeros((2, 3, 2)), tris, ids, bary)


def test_cuda_source_compiles():
    nvcc = build_op.find_nvcc()
    if nvcc is None:
        pytest.skip("nvcc not found")
    arch = build_op.cuda_archs(nvcc)[-1]
    with tempfile.TemporaryDirectory() as tmp:
        obj = build_op.compile_cuda_object(os.path.join(tmp, "rasterize_op_gpu.cu.o"), nvcc,
                                           archs=[arch])
        assert os.path.getsize(obj) > 10000
