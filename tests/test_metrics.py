"""Image metrics (PSNR, RMSE, SSIM), region masks and the landmark hull."""

import math

import numpy as np
import pytest

from recon_tf import metrics


def _images(seed: int = 0, size: tuple[int, int] = (48, 64)):
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[:h, :w]
    base = np.stack([128 + 60 * np.sin(xx / 7.0), 100 + 50 * np.cos(yy / 5.0),
                     90 + 0.8 * xx + 0.5 * yy], -1)
    photo = np.clip(base + rng.normal(0, 8, base.shape), 0, 255)
    render = np.clip(base + rng.normal(0, 15, base.shape), 0, 255)
    return photo, render


def test_identical_images_give_zero_rmse_and_infinite_psnr():
    photo, _ = _images()
    mask = np.ones(photo.shape[:2], bool)
    assert metrics.rmse(photo, photo, mask) == 0.0
    assert metrics.psnr(photo, photo, mask) == math.inf
    assert metrics.ssim(photo, photo, mask) == pytest.approx(1.0, abs=1e-12)


def test_constant_offset_gives_exact_rmse_and_psnr():
    photo = np.full((20, 30, 3), 100, np.uint8)
    render = photo.astype(np.float64) + 5.0
    mask = np.zeros((20, 30), bool)
    mask[5:15, 10:20] = True
    assert metrics.rmse(photo, render, mask) == pytest.approx(5.0)
    assert metrics.psnr(photo, render, mask) == pytest.approx(20 * np.log10(255.0 / 5.0))
    # uint8 inputs are not wrapped around: render below photo by 5 gives the same.
    assert metrics.rmse(photo, (photo - 5).astype(np.uint8), mask) == pytest.approx(5.0)


def test_mask_restricts_the_region():
    photo, render = _images(1)
    mask = np.zeros(photo.shape[:2], bool)
    mask[10:30, 20:50] = True
    before = metrics.image_metrics(photo, render, mask)
    changed = render.copy()
    changed[~mask] = 0.0  # garbage outside the region
    rmse_after = metrics.rmse(photo, changed, mask)
    psnr_after = metrics.psnr(photo, changed, mask)
    assert rmse_after == pytest.approx(before["rmse"], rel=1e-12)
    assert psnr_after == pytest.approx(before["psnr"], rel=1e-12)
    # the whole image does see the change
    full = np.ones_like(mask)
    assert metrics.rmse(photo, changed, full) > metrics.rmse(photo, render, full)
    assert math.isnan(metrics.psnr(photo, render, np.zeros_like(mask)))


def test_ssim_decreases_with_noise():
    photo, _ = _images(2)
    rng = np.random.default_rng(3)
    mask = np.ones(photo.shape[:2], bool)
    values = [metrics.ssim(photo, np.clip(photo + rng.normal(0, s, photo.shape), 0, 255), mask)
              for s in (2.0, 10.0, 40.0)]
    assert 1.0 > values[0] > values[1] > values[2]


@pytest.mark.parametrize("dtype", [np.float64, np.uint8])
def test_ssim_matches_scikit_image_over_mask(dtype):
    skm = pytest.importorskip("skimage.metrics")
    photo, render = _images(4)
    photo, render = photo.astype(dtype), render.astype(dtype)
    mask = np.zeros(photo.shape[:2], bool)
    mask[3:40, 8:60] = True
    _, smap = skm.structural_similarity(
        photo.astype(np.float64), render.astype(np.float64), gaussian_weights=True, sigma=1.5,
        use_sample_covariance=False, data_range=255, channel_axis=-1, full=True)
    ours = metrics.ssim(photo, render, mask)
    assert ours == pytest.approx(float(smap[mask].mean()), abs=1e-6)
    np.testing.assert_allclose(metrics.ssim_map(photo, render), smap, atol=1e-9)


def test_image_metrics_keys_and_average():
    photo, render = _images(5)
    mask = np.ones(photo.shape[:2], bool)
    row = metrics.image_metrics(photo, render, mask)
    assert set(row) == {"psnr", "ssim", "rmse"}
    assert all(isinstance(v, float) for v in row.values())
    avg = metrics.average_metrics([row, {"psnr": float("nan"), "ssim": 0.5, "rmse": 1.0}])
    assert avg["psnr"] == pytest.approx(row["psnr"])
    assert avg["ssim"] == pytest.approx((row["ssim"] + 0.5) / 2)
    assert avg["count"] == 2


def test_landmark_hull_covers_a_known_square():
    pts = np.array([[10, 5], [20, 5], [20, 15], [10, 15], [15, 10], [12, 7]], np.float64)
    hull = metrics.landmark_hull_mask(pts, (30, 40, 3))
    expected = np.zeros((30, 40), bool)
    expected[5:16, 10:21] = True  # pixel centres 10..20 × 5..15, boundary included
    np.testing.assert_array_equal(hull, expected)


def test_region_mask():
    face = np.zeros((8, 8), bool)
    face[2:6, 2:6] = True
    hull = np.zeros((8, 8), bool)
    hull[:, :4] = True
    np.testing.assert_array_equal(metrics.region_mask("face", face), face)
    np.testing.assert_array_equal(metrics.region_mask("face", face, hull), face & hull)
    assert metrics.region_mask("composite", face).all()
    assert "composite" in metrics.describe_region("composite")
    assert "hull" in metrics.describe_region("face", with_hull=True)
    with pytest.raises(ValueError):
        metrics.region_mask("eyes", face)
    assert metrics.REGIONS == ("face", "composite")


def test_nme_is_the_outer_eye_normalised_error():
    truth = np.zeros((68, 2))
    truth[36] = [0.0, 0.0]
    truth[45] = [100.0, 0.0]
    pred = truth + np.array([3.0, 4.0])  # every point off by 5 px
    assert metrics.nme(pred, truth) == pytest.approx(0.05)


def _identity_shapes(rng, people: int, photos: int, spread: float, noise: float):
    """Random point clouds [people·photos, 40, 3]: one base shape per person plus
    per-photo noise, each copy rigidly moved (rotation about z, translation)."""
    base = rng.normal(0, 1, (40, 3))
    shapes, who = [], []
    for p in range(people):
        person = base + rng.normal(0, spread, base.shape)
        for _ in range(photos):
            a = rng.uniform(-1, 1)
            rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
            shapes.append((person + rng.normal(0, noise, base.shape)) @ rot.T
                          + rng.normal(0, 5, 3))
            who.append(f"p{p}")
    return np.stack(shapes), who


def test_identity_consistency_separates_people_and_ignores_pose():
    rng = np.random.default_rng(0)
    shapes, who = _identity_shapes(rng, people=4, photos=3, spread=0.2, noise=0.02)
    out = metrics.identity_consistency(shapes, who, unit_to_mm=1.0)
    assert out["same_pairs"] == 4 * 3 and out["different_pairs"] == 66 - 12
    assert out["auc"] == 1.0 and out["ratio"] > 5  # rigid motion does not count
    assert out["same_mm"] < 0.05 < out["different_mm"]
    # the mask keeps only the listed points: one point's error dominates when alone
    mask = np.zeros(40, bool)
    mask[:3] = True
    masked = metrics.identity_consistency(shapes, who, mask, unit_to_mm=1.0)
    assert masked["same_mm"] != pytest.approx(out["same_mm"])


def test_identity_consistency_is_chance_without_identity():
    """The mean face for every photo (or noise unrelated to the person) scores chance."""
    rng = np.random.default_rng(1)
    same_face = np.repeat(rng.normal(0, 1, (1, 30, 3)), 6, axis=0)
    out = metrics.identity_consistency(same_face, ["a", "a", "b", "b", "c", "c"],
                                       unit_to_mm=1.0)
    assert out["auc"] == 0.5 and out["same_mm"] < 1e-9
    shapes, who = _identity_shapes(rng, people=3, photos=4, spread=0.0, noise=0.1)
    assert 0.3 < metrics.identity_consistency(shapes, who, unit_to_mm=1.0)["auc"] < 0.7
    with pytest.raises(ValueError, match="same-person"):
        metrics.identity_consistency(shapes[:3], ["a", "b", "c"])
    with pytest.raises(ValueError, match="identities"):
        metrics.identity_consistency(shapes[:3], ["a", "a"])


def test_identity_consistency_of_a_known_distance_matrix():
    """Same pairs 1 and 3 mm, different pairs 2, 3, 4, 5 mm: 6.5 of 8 combinations have
    the different pair farther (the tie at 3 mm counts half)."""
    d = np.zeros((4, 4))
    for (i, j), v in {(0, 1): 1.0, (2, 3): 3.0, (0, 2): 2.0, (0, 3): 4.0, (1, 2): 5.0,
                      (1, 3): 3.0}.items():
        d[i, j] = v
    out = metrics.identity_consistency_of_distances(d, ["a", "a", "b", "b"])
    assert out["auc"] == 6.5 / 8 and (out["same_mm"], out["different_mm"]) == (2.0, 3.5)
    assert out["ratio"] == 1.75 and (out["same_pairs"], out["different_pairs"]) == (2, 4)
    with pytest.raises(ValueError, match="shape"):
        metrics.identity_consistency_of_distances(d[:3], ["a", "a", "b", "b"])
