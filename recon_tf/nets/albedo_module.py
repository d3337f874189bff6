"""The albedo module of the fine stage (§3.4.2, Fig. 3).

An encoder–decoder (U-Net) over the coarse albedo map refines it into a
detailed albedo map; the wavelet transform perception encoder
(:func:`recon_tf.wavelet.build_wavelet_encoder`, nested as ``wavelet_encoder``)
reads the high-frequency Haar bands (LH, HL, HH) of the input photo and feeds
its features to the decoder at every scale, as the paper says ("feed them to
the top decoder").

Layout, with U the UV side and ``depth`` scales:

* ``albedo_in``: the coarse albedo mapped from [0, 1] to [−1, 1];
* ``albedo_enc0`` at U, ``albedo_enc1 … albedo_enc{depth}`` at U/2^k
  (stride-2 conv blocks);
* ``bottleneck`` at U/2^depth: concat(albedo_enc{depth}, wavelet level depth);
* ``albedo_dec{k}`` for k = depth−1 … 0: bilinear ×2, concat(albedo_enc{k},
  wavelet level k for k ≥ 1), conv block;
* ``residual``: 3×3 conv to 3 channels, **zero-initialised** (kernel and
  bias);
* output = clip(coarse_albedo + max_delta · tanh(residual), 0, 1)
  (``tanh``, ``scale``, ``add``, ``clip`` layers; the clip is a ReLU with
  ``max_value=1``).

Design choices (ours; the paper gives no layer details):

* the output is a bounded residual on the coarse albedo, so the module can
  only add detail up to ±``max_delta`` per channel; with the zero-initialised
  last conv an untrained module returns the coarse albedo exactly (for coarse
  values in [0, 1]) and training starts from the coarse solution;
* the wavelet branch reads ``texture`` = the input photo unwrapped into UV
  (:func:`recon_tf.render.uv.unwrap_image`), so its features align with the
  albedo map texel-for-texel. The caller may pass another image of the same
  size (e.g. the resized aligned crop) instead;
* UV maps follow :mod:`recon_tf.render.uv` (row 0 is v = 1); the network is
  convolutional and does not depend on it;
* no normalisation layers (see :mod:`recon_tf.wavelet`).
"""

from __future__ import annotations

import tensorflow as tf

from recon_tf.wavelet import (
    build_wavelet_encoder,
    check_size,
    conv_block,
    level_filters,
    upsample_block,
)


def build_albedo_module(uv_size: int = 256, include_ll: bool = False, use_wavelet: bool = True,
                        base_filters: int = 16, depth: int = 4, max_delta: float = 0.5,
                        name: str = "albedo_module") -> tf.keras.Model:
    """Build the albedo module.

    Args:
      uv_size: U, the UV map side (a multiple of 2^depth; 256 in the fine stage).
      include_ll: let the wavelet encoder see the LL band too (the paper drops it).
      use_wavelet: False for the "w/o wavelet transform perception" ablation
        (a learned stride-2 conv replaces the Haar layer).
      base_filters: width at full and half resolution; deeper levels use
        :func:`recon_tf.wavelet.level_filters`.
      depth: number of downsamplings (scales U/2 … U/2^depth).
      max_delta: the largest change of an albedo value, > 0.
      name: the model's name.
    Returns:
      A Keras model with dict inputs
      ``{"coarse_albedo": float32 [B, U, U, 3] in [0, 1] (coarse albedo in UV),
      "texture": float32 [B, U, U, 3] in [0, 1] (the input unwrapped into UV)}``
      and output the detailed albedo, float32 ``[B, U, U, 3]`` in [0, 1].
      Untrained, the output equals ``coarse_albedo`` exactly.
    Raises:
      ValueError: U not a multiple of 2^depth, depth < 1 or max_delta <= 0.
    """
    check_size(uv_size, depth)
    if max_delta <= 0:
        raise ValueError(f"max_delta must be > 0, got {max_delta}")
    shape = (uv_size, uv_size, 3)
    coarse = tf.keras.Input(shape, name="coarse_albedo")
    texture = tf.keras.Input(shape, name="texture")
    encoder = build_wavelet_encoder(uv_size, 3, include_ll, use_wavelet, base_filters, depth,
                                    name="wavelet_encoder")
    wavelet = [None, *encoder(texture)]  # index k: scale U/2^k

    x = tf.keras.layers.Rescaling(2.0, offset=-1.0, name="albedo_in")(coarse)
    skips = [conv_block(x, level_filters(base_filters, 0), "albedo_enc0")]
    for level in range(1, depth + 1):
        skips.append(conv_block(skips[-1], level_filters(base_filters, level),
                                f"albedo_enc{level}", strides=2))
    x = tf.keras.layers.Concatenate(name="bottleneck_concat")([skips[depth], wavelet[depth]])
    x = conv_block(x, level_filters(base_filters, depth), "bottleneck")
    for level in range(depth - 1, -1, -1):
        extra = [wavelet[level]] if level >= 1 else []
        x = upsample_block(x, [skips[level], *extra], level_filters(base_filters, level),
                           f"albedo_dec{level}")
    residual = tf.keras.layers.Conv2D(3, 3, padding="same", kernel_initializer="zeros",
                                      bias_initializer="zeros", name="residual")(x)
    delta = tf.keras.layers.Activation("tanh", name="tanh")(residual)
    delta = tf.keras.layers.Rescaling(float(max_delta), name="scale")(delta)
    albedo = tf.keras.layers.Add(name="add")([coarse, delta])
    albedo = tf.keras.layers.ReLU(max_value=1.0, name="clip")(albedo)
    return tf.keras.Model({"coarse_albedo": coarse, "texture": texture}, albedo, name=name)
