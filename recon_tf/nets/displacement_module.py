"""The depth displacement module of the fine stage (§3.4.3, Fig. 4).

Two parallel encoder–decoder branches whose last features are fused into a
displacement map in UV:

* bottom branch (``increment_*`` layers): a U-Net over the increment image
  UV(input) − UV(coarse render), encoder ``increment_enc0`` at U and
  ``increment_enc1 … increment_enc{depth}`` at U/2^k, decoder
  ``increment_dec{k}`` (bilinear ×2, concat the encoder skip, conv block)
  back to U;
* top branch: the wavelet transform perception encoder
  (:func:`recon_tf.wavelet.build_wavelet_encoder`, nested as
  ``wavelet_encoder``) on the texture's Haar bands LH, HL, HH, features at
  U/2 … U/2^depth, and its decoder ``wavelet_dec{k}`` (k = depth−1 … 1 with
  the wavelet skips, then ``wavelet_dec0`` up to U without a skip);
* fusion: concat the two full-resolution features → ``fuse`` (3×3 conv block)
  → ``displacement_raw`` (1×1 conv to 1 channel, **zero-initialised** kernel
  and bias) → ``tanh`` → ``scale`` by ``max_displacement``.

Units and sign: the output D is a signed distance along the coarse vertex
normal in model units (decimetres, as in :func:`recon_tf.render.detail.displace`);
positive moves the surface outwards. D = max_displacement · tanh(x), so
|D| < max_displacement (0.05 dm = 5 mm by default). With the zero-initialised
last conv an untrained module outputs exactly 0: the fine geometry starts as
the coarse one. The last conv's kernel gets a gradient on the first step and
both branches from the second step on.

Design choices (ours; the paper gives no layer details): the texture is the
input photo unwrapped into UV (the caller may pass another image of the same
size, e.g. the resized aligned crop); UV maps follow :mod:`recon_tf.render.uv`
(row 0 is v = 1); no normalisation layers (see :mod:`recon_tf.wavelet`).
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


def build_displacement_module(uv_size: int = 256, include_ll: bool = False,
                              use_wavelet: bool = True, base_filters: int = 16, depth: int = 4,
                              max_displacement: float = 0.05,
                              name: str = "displacement_module") -> tf.keras.Model:
    """Build the depth displacement module.

    Args:
      uv_size: U, the UV map side (a multiple of 2^depth; 256 in the fine stage).
      include_ll: let the wavelet encoder see the LL band too (the paper drops it).
      use_wavelet: False for the "w/o wavelet transform perception" ablation
        (a learned stride-2 conv replaces the Haar layer).
      base_filters: width at full and half resolution; deeper levels use
        :func:`recon_tf.wavelet.level_filters`.
      depth: number of downsamplings (scales U/2 … U/2^depth).
      max_displacement: bound on |D| in model units (decimetres), > 0.
      name: the model's name.
    Returns:
      A Keras model with dict inputs
      ``{"increment": float32 [B, U, U, 3] in [−1, 1] (UV(input) − UV(coarse
      render)), "texture": float32 [B, U, U, 3] in [0, 1] (the input unwrapped
      into UV)}`` and output D, float32 ``[B, U, U, 1]`` in
      (−max_displacement, max_displacement), decimetres along the normal,
      + outwards. Untrained, D is exactly 0.
    Raises:
      ValueError: U not a multiple of 2^depth, depth < 1 or max_displacement <= 0.
    """
    check_size(uv_size, depth)
    if max_displacement <= 0:
        raise ValueError(f"max_displacement must be > 0, got {max_displacement}")
    shape = (uv_size, uv_size, 3)
    increment = tf.keras.Input(shape, name="increment")
    texture = tf.keras.Input(shape, name="texture")

    skips = [conv_block(increment, level_filters(base_filters, 0), "increment_enc0")]
    for level in range(1, depth + 1):
        skips.append(conv_block(skips[-1], level_filters(base_filters, level),
                                f"increment_enc{level}", strides=2))
    bottom = skips[depth]
    for level in range(depth - 1, -1, -1):
        bottom = upsample_block(bottom, [skips[level]], level_filters(base_filters, level),
                                f"increment_dec{level}")

    encoder = build_wavelet_encoder(uv_size, 3, include_ll, use_wavelet, base_filters, depth,
                                    name="wavelet_encoder")
    wavelet = [None, *encoder(texture)]  # index k: scale U/2^k
    top = wavelet[depth]
    for level in range(depth - 1, -1, -1):
        extra = [wavelet[level]] if level >= 1 else []
        top = upsample_block(top, extra, level_filters(base_filters, level),
                             f"wavelet_dec{level}")

    x = tf.keras.layers.Concatenate(name="fuse_concat")([bottom, top])
    x = conv_block(x, base_filters, "fuse")
    x = tf.keras.layers.Conv2D(1, 1, kernel_initializer="zeros", bias_initializer="zeros",
                               name="displacement_raw")(x)
    x = tf.keras.layers.Activation("tanh", name="tanh")(x)
    displacement = tf.keras.layers.Rescaling(float(max_displacement), name="scale")(x)
    return tf.keras.Model({"increment": increment, "texture": texture}, displacement, name=name)
