"""Fine-stage losses, Eq. 11–13: known values, the properties that motivate them, gradients."""

import numpy as np
import pytest
import tensorflow as tf
from absl import flags

from recon_tf import losses as fl
from recon_tf.losses import define_coarse_loss_flags
from recon_tf.render.detail import displace


def disc_mask(size: int, radius: float) -> np.ndarray:
    """A round UV layout [1, S, S, 1] (with a border, like a real layout)."""
    i, j = np.mgrid[:size, :size]
    c = (size - 1) / 2
    return (((i - c) ** 2 + (j - c) ** 2) <= radius ** 2).astype(np.float32)[None, ..., None]


def checkerboard(size: int) -> np.ndarray:
    i, j = np.mgrid[:size, :size]
    return np.where((i + j) % 2 == 0, 1.0, -1.0).astype(np.float32)


S = 128
MASK = disc_mask(S, 50)


def coarse_albedo(size: int = S) -> np.ndarray:
    """A plausible smooth coarse albedo map [1, S, S, 3] (skin-ish, slowly varying)."""
    i, j = np.mgrid[:size, :size] / size
    base = np.stack([0.6 + 0.1 * np.sin(3 * i), 0.45 + 0.05 * np.cos(2 * j), 0.4 + 0 * i], -1)
    return base.astype(np.float32)[None]


# ------------------------------------------------------------------ Eq. 12
def test_albedo_zero_for_identical_maps():
    c = coarse_albedo()
    assert fl.albedo_loss(c, c, MASK, 4.0, 0.1).numpy().tolist() == [0.0]


def test_albedo_uniform_offset_costs_its_size_even_at_the_layout_border():
    # Mask-normalised blur: a uniform change stays uniform up to the border, so a
    # +0.05 offset costs 0.05 (low band) + 0.1 × 0.05 (sparsity), with no zeros leaking in.
    c = coarse_albedo()
    value = fl.albedo_loss(c + 0.05, c, MASK, 4.0, 0.1).numpy()
    np.testing.assert_allclose(value, [0.055], rtol=1e-4)


def test_albedo_high_frequency_detail_is_cheap_low_frequency_change_is_not():
    c = coarse_albedo()
    inside = MASK[0, ..., 0] > 0
    noise = 0.05 * checkerboard(S)[None, ..., None] * np.ones(3, np.float32)
    j = np.mgrid[:S, :S][1]
    ramp = (0.1 * j / (S - 1)).astype(np.float32)[None, ..., None] * np.ones(3, np.float32)
    scaled = c * 1.1 - c  # global albedo scale, as a brighter light would ask for
    # All three changes have about the same mean L1 size (0.05) inside the layout.
    for change in (noise, ramp, scaled):
        assert np.abs(change[0][inside]).mean() == pytest.approx(0.05, rel=0.15)
    batch = c + np.concatenate([noise, ramp, scaled])
    loss = fl.albedo_loss(batch, np.repeat(c, 3, 0), MASK, 4.0, 0.1).numpy()
    # Noise costs about its sparsity term (0.1 × 0.05); shading-like changes ~0.055.
    assert loss[0] == pytest.approx(0.005, rel=0.3)
    assert loss[1] >= 5 * loss[0] and loss[2] >= 5 * loss[0]
    assert loss[1] == pytest.approx(0.055, rel=0.1)
    # Without the sparsity term high-frequency detail is (almost) free.
    free = fl.albedo_loss(batch, np.repeat(c, 3, 0), MASK, 4.0, 0.0).numpy()
    assert free[0] < 0.05 * free[1]


def test_albedo_ignores_texels_outside_the_layout():
    rng = np.random.default_rng(0)
    c = coarse_albedo()
    d = c + 0.05 * rng.normal(size=c.shape).astype(np.float32)
    outside = np.broadcast_to(MASK == 0, c.shape)
    d2, c2 = d.copy(), c.copy()
    d2[outside] = rng.uniform(-5, 5, size=outside.sum())
    c2[outside] = np.nan
    a = fl.albedo_loss(d, c, MASK, 4.0, 0.1).numpy()
    b = fl.albedo_loss(d2, c2, MASK, 4.0, 0.1).numpy()
    assert np.isfinite(b).all()
    np.testing.assert_allclose(a, b, rtol=1e-6)


def test_albedo_gradient_is_finite_nonzero_and_stays_inside():
    rng = np.random.default_rng(1)
    c = coarse_albedo()
    d = tf.Variable(c + 0.05 * rng.normal(size=c.shape).astype(np.float32))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(fl.albedo_loss(d, c, MASK, 4.0, 0.1))
    g = tape.gradient(loss, d).numpy()
    assert np.isfinite(g).all() and np.abs(g).max() > 0
    assert np.abs(g[np.broadcast_to(MASK == 0, g.shape)]).max() == 0.0


# ------------------------------------------------------------------ Eq. 13
def flat_normals(size: int) -> np.ndarray:
    return np.broadcast_to(np.array([0, 0, 1], np.float32), (1, size, size, 3)).copy()


def test_smoothness_zero_and_constant_displacement():
    n = flat_normals(S)
    zero = np.zeros((1, S, S, 1), np.float32)
    assert fl.smoothness_loss(zero, n, n, MASK, 0.001, 0.001).numpy().tolist() == [0.0]
    const = np.full((1, S, S, 1), -0.05, np.float32)
    np.testing.assert_allclose(fl.smoothness_loss(const, n, n, MASK, 0.001, 0.002).numpy(),
                               [0.002 * 0.05], rtol=1e-6)


def test_smoothness_rough_costs_much_more_than_smooth():
    a = 0.01  # 1 mm in decimetres
    j = np.mgrid[:S, :S][1]
    rough = a * checkerboard(S)
    ramp = (2 * a * j / (S - 1)).astype(np.float32)  # mean |D| = a on the centred disc
    inside = MASK[0, ..., 0] > 0
    assert np.abs(ramp[inside]).mean() == pytest.approx(a, rel=1e-6)
    d = np.stack([rough, ramp])[..., None]
    n = np.repeat(flat_normals(S), 2, 0)
    loss = fl.smoothness_loss(d, n, n, MASK, 0.001, 0.001).numpy()
    # Hand values: checkerboard 4a·S/256 (→, ↓ differ by 2a; diagonals equal).
    np.testing.assert_allclose(loss[0], 4 * a * S / 256 + 0.001 * a, rtol=1e-5)
    assert loss[0] > 20 * loss[1]


def test_smoothness_known_value_and_mask():
    # 2×2 map, D = [[0, 1], [0, 0]]: → pairs {1, 0} mean 0.5, ↓ {0, 1} 0.5, ↘ {0} 0,
    # ↙ {1} 1 → 2.0 × S/256; |D| mean 0.25; one normal differs by ‖(0,1,−1)‖² = 2 → 0.5.
    d = np.array([[0, 1], [0, 0]], np.float32)[None, ..., None]
    coarse = flat_normals(2)
    fine = coarse.copy()
    fine[0, 0, 0] = [0, 1, 0]
    expected = 2.0 * 2 / 256 + 0.1 * 0.5 + 0.2 * 0.25
    value = fl.smoothness_loss(d, fine, coarse, np.ones((1, 2, 2, 1), np.float32), 0.1, 0.2)
    np.testing.assert_allclose(value.numpy(), [expected], rtol=1e-6)
    # The same 2×2 inside a 3×3 map whose last row and column are outside the layout:
    # garbage there changes nothing (only the S/256 scale of the differences).
    d3 = np.full((1, 3, 3, 1), 7.0, np.float32)
    d3[0, 1, 2] = np.nan
    d3[:, :2, :2] = d
    c3, f3 = flat_normals(3), flat_normals(3)
    f3[:, :2, :2] = fine
    f3[0, 2, 2] = [1, 0, 0]
    m3 = np.zeros((1, 3, 3, 1), np.float32)
    m3[:, :2, :2] = 1
    expected3 = 2.0 * 3 / 256 + 0.1 * 0.5 + 0.2 * 0.25
    np.testing.assert_allclose(fl.smoothness_loss(d3, f3, c3, m3, 0.1, 0.2).numpy(),
                               [expected3], rtol=1e-6)


def test_smoothness_gradient_matches_finite_differences_through_displace():
    size = 6
    rng = np.random.default_rng(2)
    i, j = np.mgrid[:size, :size]
    pos = np.stack([j * 0.012, -i * 0.012, 0.05 * np.sin(j / 3.0)], -1)[None]  # ~1.2 mm texels
    normals = np.broadcast_to([0.0, 0.0, 1.0], pos.shape)
    mask = disc_mask(size, 2.6).astype(np.float64)
    pos, normals = tf.constant(pos), tf.constant(normals)

    def loss(d):
        detail = displace(pos, normals, d, mask)[1]
        return tf.reduce_sum(fl.smoothness_loss(d, detail, normals, mask, 1.0, 0.5))

    d0 = tf.constant(0.005 * rng.normal(size=(1, size, size, 1)))
    theoretical, numerical = tf.test.compute_gradient(loss, [d0], delta=1e-7)
    assert np.abs(theoretical[0]).max() > 0.01
    np.testing.assert_allclose(theoretical[0], numerical[0], atol=1e-6, rtol=1e-5)


# ------------------------------------------------------------------ Eq. 11
def test_fine_loss_combines_linearly():
    w = fl.FineLossWeights(pho_weight=2.0, id_weight=3.0, alb_weight=5.0, smo_weight=7.0)
    eye = np.concatenate([np.eye(4), np.ones((1, 4)), 0.5 * np.ones((1, 4))]).astype(np.float32)
    out = fl.fine_loss(w, *eye.T).numpy()
    np.testing.assert_allclose(out, [2, 3, 5, 7, 17, 8.5], rtol=1e-6)


def test_fine_flags_default_to_the_paper_and_override():
    fv = flags.FlagValues()
    fl.define_fine_loss_flags(fv)
    define_coarse_loss_flags(fv)  # the fine flags must not collide with these
    assert "pho_weight" in fv and "fine_pho_weight" in fv
    fv(["prog"])
    w = fl.fine_weights_from_flags(fv)
    assert w == fl.FineLossWeights()
    assert (w.pho_weight, w.id_weight, w.alb_weight, w.smo_weight) == (1.0, 0.8, 1.0, 1.0)
    assert (w.normal_weight, w.disp_weight) == (0.001, 0.001)
    assert (w.alb_detail_weight, w.alb_blur_sigma) == (0.1, 4.0)

    fv = flags.FlagValues()
    fl.define_fine_loss_flags(fv, smo_weight=2.0)
    fv(["prog", "--fine_id_weight=0.5", "--fine_disp_weight=0.01"])
    w = fl.fine_weights_from_flags(fv, pho_weight=3.0, alb_weight=None)
    assert (w.id_weight, w.disp_weight, w.smo_weight, w.pho_weight, w.alb_weight) == \
        (0.5, 0.01, 2.0, 3.0, 1.0)
    assert "paper: 0.8" in fv["fine_id_weight"].help


def test_gaussian_lowpass_is_exact_whatever_the_channel_count():
    """The blur matches a float64 reference for maps of 3, then 1, then 3 channels.

    Batched matmuls broadcasting a rank-2 operand returned NaN or garbage (and
    crashed at 256²) under oneDNN on AVX-512 CPUs once shapes changed between
    calls, which made per-photo fine fitting nondeterministic; this sequence
    failed on such a machine before the blur used plain 2-D products.
    """
    rng = np.random.default_rng(3)
    size, sigma = 64, 3.0
    offsets = np.arange(size)[:, None] - np.arange(size)[None, :]
    gauss = np.exp(-0.5 * (offsets / sigma) ** 2)
    gauss /= gauss[0].sum()
    for batch, channels in [(2, 3), (2, 1), (2, 3), (1, 3), (2, 1)]:
        maps = rng.random((batch, size, size, channels)).astype(np.float32)
        mask = (rng.random((batch, size, size, 1)) > 0.3).astype(np.float32)
        out = fl.gaussian_lowpass(tf.constant(maps), tf.constant(mask), sigma).numpy()

        def blur(x):
            return np.einsum("ij,bjkc,kl->bilc", gauss, x.astype(np.float64), gauss)

        den = blur(mask)
        ref = np.where(den > 0, blur(maps * mask) / np.where(den > 0, den, 1.0), 0.0)
        np.testing.assert_allclose(out, ref, atol=1e-5)
