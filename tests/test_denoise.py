"""recon_tf.denoise: a photo's noise level, and the Wiener filter fine fitting reads it through."""

import numpy as np
import tensorflow as tf

from recon_tf.denoise import denoise_for_fit, noise_sigma, wiener_denoise


def _smooth_image(size: int = 96) -> np.ndarray:
    """A smooth colour image in [0.2, 0.8]: ramps and a broad blob (no detail)."""
    y, x = np.mgrid[0:size, 0:size] / size
    blob = np.exp(-((x - 0.6) ** 2 + (y - 0.4) ** 2) / 0.08)
    return np.stack([0.3 + 0.3 * x, 0.4 + 0.2 * blob, 0.5 - 0.2 * y + 0.1 * blob], -1)


def test_noise_sigma_reads_the_noise_of_the_masked_pixels():
    clean = _smooth_image()
    rng = np.random.default_rng(0)
    noisy = clean + rng.normal(0.0, 0.02, clean.shape)
    noisy[:, :48] += rng.normal(0.0, 0.05, noisy[:, :48].shape)  # a noisier left half
    images = tf.constant(np.stack([clean, noisy]).astype(np.float32))
    right = np.zeros((2, 96, 96, 1), np.float32)
    right[:, :, 48:] = 1.0
    sigma = noise_sigma(images, tf.constant(right)).numpy()
    assert sigma[0] < 0.001  # smooth shading is not noise
    np.testing.assert_allclose(sigma[1], 0.02, rtol=0.1)  # the mask's half only
    everywhere = noise_sigma(images, tf.ones_like(tf.constant(right))).numpy()[1]
    assert everywhere > 0.03
    assert noise_sigma(images, tf.zeros_like(tf.constant(right))).numpy().tolist() == [0, 0]


def test_wiener_filter_removes_noise_keeps_edges_and_leaves_clean_images_alone():
    clean = _smooth_image()
    clean[:, 60:] -= 0.15  # a sharp edge (a wrinkle's side, a brow)
    noisy = clean + np.random.default_rng(1).normal(0.0, 0.03, clean.shape)
    out = wiener_denoise(tf.constant(noisy[None].astype(np.float32)),
                         tf.constant([0.03])).numpy()[0]
    assert np.mean((out - clean) ** 2) < np.mean((noisy - clean) ** 2) / 3
    step = out[:, 62:66].mean() - out[:, 54:58].mean()  # the edge survives
    assert -0.17 < step < -0.13
    same = wiener_denoise(tf.constant(noisy[None].astype(np.float32)), tf.constant([0.0]))
    np.testing.assert_allclose(same.numpy()[0], noisy, atol=1e-6)
    # The fit's entry point measures the noise itself and stays in [0, 1].
    seen, sigma = denoise_for_fit(tf.constant(noisy[None].astype(np.float32)),
                                  tf.ones([1, 96, 96, 1]))
    assert abs(float(sigma[0]) - 0.03) < 0.006
    assert 0.0 <= seen.numpy().min() and seen.numpy().max() <= 1.0
