"""A photo's noise level, and the Wiener filter that per-photo fine fitting reads it through.

Per-photo fine fitting (:meth:`recon_tf.fine.FineStage.fit`) explains every pixel of
the face with albedo detail and displacement, sensor noise and film grain included:
on held-out synthetic faces with Gaussian noise of σ = 0.01 (2.6 of 255, the level
:func:`noise_sigma` reads on many real face crops) its albedo map moved *away* from
the true one (mean absolute error 2.82 against the coarse map's 2.31, 1.47 without
noise). So the main job fits the fine stage to the photo seen through
:func:`wiener_denoise`, a local adaptive Wiener filter whose noise variance is the
photo's own (:func:`noise_sigma`): where the photo is flat it is smoothed, where it
holds detail (local variance well above the noise's) it is kept. On a clean image
the measured noise is ≈ 0 and the filter changes nearly nothing. The choice is
ours (the paper trains modules on clean-enough data and does not say); the
measurements are in the README ("Noisy photos").
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

# Immerkær's kernel: the difference of two 3×3 Laplacians, blind to constant,
# linear and (nearly) to smooth quadratic intensity.
_NOISE_KERNEL = ((1.0, -2.0, 1.0), (-2.0, 4.0, -2.0), (1.0, -2.0, 1.0))


def noise_sigma(images: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """The additive noise level of each image over ``mask`` (Immerkær's estimator).

    Immerkær (1996), "Fast noise variance estimation": for white Gaussian noise
    of standard deviation σ the mean absolute response to the 3×3 kernel
    [[1, −2, 1], [−2, 4, −2], [1, −2, 1]] is 6σ/√(π/2), so that mean times
    √(π/2)/6 estimates σ. Measured per colour channel and averaged, over the
    pixels whose whole 3×3 neighbourhood lies in ``mask`` (the mask's edge is
    not noise). Real detail (pores, stubble, JPEG blocks) adds to it, so it is
    an upper bound on the noise.

    Args:
      images: float32 [B, H, W, C], values in [0, 1].
      mask: float32 [B, H, W, 1] in {0, 1}: the pixels to measure (the face's skin).

    Returns:
      float32 [B]: σ in the images' units; 0 where the mask has no inner pixel.
    """
    channels = int(images.shape[-1])
    kernel = tf.tile(tf.constant(_NOISE_KERNEL)[:, :, None, None], [1, 1, channels, 1])
    response = tf.abs(tf.nn.depthwise_conv2d(images, kernel, [1, 1, 1, 1], "SAME"))
    inner = -tf.nn.max_pool2d(-mask, 3, 1, "SAME")  # all 3×3 neighbours inside
    count = tf.reduce_sum(inner, axis=[1, 2, 3]) * channels
    mean = tf.reduce_sum(response * inner, axis=[1, 2, 3]) / tf.maximum(count, 1.0)
    return tf.where(count > 0, mean * float(np.sqrt(np.pi / 2.0) / 6.0), 0.0)


def wiener_denoise(images: tf.Tensor, sigma: tf.Tensor, size: int = 3) -> tf.Tensor:
    """Local adaptive Wiener filter (Lee 1980; as ``scipy.signal.wiener``).

    Per pixel and channel, with μ and v the mean and variance of its ``size``²
    neighbourhood (image borders: the neighbours that exist) and ν = σ² the
    noise variance: x̂ = μ + max(v − ν, 0) / max(v, ν) · (x − μ). Flat regions
    (v ≤ ν) become their local mean; detail (v ≫ ν) is kept. With σ = 0 the
    output is the input.

    Args:
      images: float32 [B, H, W, C].
      sigma: float32 [B]: each image's noise standard deviation (:func:`noise_sigma`).
      size: odd neighbourhood side.

    Returns:
      float32 [B, H, W, C].
    """
    mean = tf.nn.avg_pool2d(images, size, 1, "SAME")
    var = tf.nn.relu(tf.nn.avg_pool2d(tf.square(images), size, 1, "SAME") - tf.square(mean))
    noise = tf.square(tf.reshape(tf.cast(sigma, images.dtype), [-1, 1, 1, 1]))
    gain = tf.nn.relu(var - noise) / tf.maximum(tf.maximum(var, noise), 1e-12)
    return mean + gain * (images - mean)


def denoise_for_fit(images: tf.Tensor, mask: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """The photos as per-photo fine fitting reads them: each through
    :func:`wiener_denoise` with its own :func:`noise_sigma` over ``mask``.

    Args:
      images: float32 [B, H, W, 3] in [0, 1] (the aligned crops).
      mask: float32 [B, H, W, 1] in {0, 1} (the faces' skin).

    Returns:
      (float32 [B, H, W, 3] in [0, 1], the noise σ per image float32 [B]).
    """
    sigma = noise_sigma(images, mask)
    return tf.clip_by_value(wiener_denoise(images, sigma), 0.0, 1.0), sigma
