"""Haar wavelet transform and the wavelet transform perception encoder (§3.4.1).

Transform. One level of the orthonormal 2-D Haar transform with the paper's
filters L = [1, 1]/√2 (low-pass) and H = [−1, 1]/√2 (high-pass), applied to
each channel of each non-overlapping 2×2 block. Writing a block as

    [[a, b],     row 2i     (y: rows, down; x: columns, right)
     [c, d]]     row 2i + 1

band ``PQ`` is filter P along x (horizontally, across columns) and Q along y
(vertically, across rows); its 2×2 kernel is ``K[r, s] = Q[r]·P[s]``:

    LL = ½[[ 1,  1], [ 1,  1]] → (a + b + c + d)/2   low x, low y (smooth part)
    LH = ½[[−1, −1], [ 1,  1]] → (c + d − a − b)/2   low x, high y
    HL = ½[[−1,  1], [−1,  1]] → (b + d − a − c)/2   high x, low y
    HH = ½[[ 1, −1], [−1,  1]] → (a − b − c + d)/2   high x, high y (diagonal)

So a pattern that varies along y (horizontal stripes or edges) lands in LH,
one that varies along x (vertical stripes) in HL, a checkerboard in HH and a
constant in LL only. The four kernels are orthonormal: the transform is
exactly invertible (:func:`haar_idwt`) and preserves energy (Parseval).
Implementation: ``space_to_depth`` / ``depth_to_space`` with block 2 plus sums,
for any channel count, differentiable.

Sizes: height and width must be even. Odd sizes raise ``ValueError`` (when
the shape is static; a runtime assertion otherwise). No padding is done: UV
maps and crops here are powers of two, and with silent padding the inverse
would return a larger image than the one transformed.

Encoder. :func:`build_wavelet_encoder` is the "wavelet transform perception
encoder" of Figs. 3–4: the Haar layer (LL dropped, as in the paper, unless
``include_ll``) then strided 3×3 conv blocks, giving multi-scale features at
S/2, S/4, …, S/2^depth for the decoders of the fine modules. It transforms
whatever image it is given. In our design the fine modules feed it the input
photo *unwrapped into UV* (:func:`recon_tf.render.uv.unwrap_image`), so its
features line up texel-for-texel with the UV maps the decoders predict; the
paper does not say which image it transforms, and a caller may pass the
aligned crop instead (resampled to the same size). ``use_wavelet=False`` (the
Table 5 "w/o wavelet transform perception" ablation) replaces the Haar layer
with a learned 2×2 stride-2 convolution with the same output channels, so the
rest of the network is identical.

The conv blocks (:func:`conv_block`, :func:`level_filters`) are shared with
:mod:`recon_tf.nets.albedo_module` and :mod:`recon_tf.nets.displacement_module`:
3×3 convs, He-normal init, LeakyReLU(0.2), no normalisation layers (a
sample's output does not depend on the rest of its batch, and training and
inference behave the same).
"""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf

_LEAK = 0.2


class WaveletBands(NamedTuple):
    """One Haar level: four float32 ``[B, H/2, W/2, C]`` bands (see module docstring).

    For inputs in [0, 1]: LL ∈ [0, 2], LH, HL, HH ∈ [−1, 1].
    """

    ll: tf.Tensor
    lh: tf.Tensor
    hl: tf.Tensor
    hh: tf.Tensor


def _check_even_shape(shape) -> None:
    shape = tuple(shape)
    if len(shape) != 4:
        raise ValueError(f"Haar transform needs [B, H, W, C] images, got shape {shape}")
    odd = [(n, d) for n, d in zip(("height", "width"), shape[1:3]) if d is not None and d % 2]
    if odd:
        raise ValueError("Haar transform needs even height and width (no padding is done); "
                         f"got {' and '.join(f'{n} {d}' for n, d in odd)} in shape {shape}")


def _check_even(images: tf.Tensor) -> tf.Tensor:
    if images.shape.rank is not None:
        _check_even_shape(images.shape)
    if images.shape.rank is None or None in images.shape[1:3]:
        hw = tf.shape(images)[1:3]
        check = tf.debugging.assert_equal(hw % 2, tf.zeros_like(hw),
                                          message="Haar transform needs even height and width")
        with tf.control_dependencies([check]):  # before the transform's own shape error
            return tf.identity(images)
    return images


def haar_dwt(images: tf.Tensor) -> WaveletBands:
    """One-level 2-D Haar transform.

    Args:
      images: float ``[B, H, W, C]``, H and W even (e.g. RGB in [0, 1]).
    Returns:
      :class:`WaveletBands` ``(ll, lh, hl, hh)``, each ``[B, H/2, W/2, C]``,
      same dtype.
    Raises:
      ValueError: not rank 4, or odd H or W.
    """
    images = _check_even(tf.convert_to_tensor(images))
    a, b, c, d = tf.split(tf.nn.space_to_depth(images, 2), 4, axis=-1)
    return WaveletBands(ll=(a + b + c + d) * 0.5, lh=(c + d - a - b) * 0.5,
                        hl=(b + d - a - c) * 0.5, hh=(a - b - c + d) * 0.5)


def haar_idwt(bands: WaveletBands) -> tf.Tensor:
    """Inverse of :func:`haar_dwt` (exact up to float rounding).

    Args:
      bands: ``(ll, lh, hl, hh)``, each float ``[B, h, w, C]``.
    Returns:
      images ``[B, 2h, 2w, C]``.
    """
    ll, lh, hl, hh = (tf.convert_to_tensor(t) for t in bands)
    a = (ll - lh - hl + hh) * 0.5
    b = (ll - lh + hl - hh) * 0.5
    c = (ll + lh - hl - hh) * 0.5
    d = (ll + lh + hl + hh) * 0.5
    return tf.nn.depth_to_space(tf.concat([a, b, c, d], axis=-1), 2)


def wavelet_features(images: tf.Tensor, include_ll: bool = False) -> tf.Tensor:
    """The bands concatenated on channels: ``[LH, HL, HH]`` or ``[LL, LH, HL, HH]``.

    Args:
      images: float ``[B, H, W, C]``, H and W even.
      include_ll: also return LL first (the paper drops it; for study).
    Returns:
      ``[B, H/2, W/2, 3C]`` (or ``4C``); channel ``k·C + c`` is band k of channel c.
    """
    bands = haar_dwt(images)
    parts = ([bands.ll] if include_ll else []) + [bands.lh, bands.hl, bands.hh]
    return tf.concat(parts, axis=-1)


@tf.keras.utils.register_keras_serializable(package="recon_tf")
class HaarWavelet(tf.keras.layers.Layer):
    """Keras layer for :func:`wavelet_features` (no weights).

    ``[B, H, W, C]`` → ``[B, H/2, W/2, 3C]`` (``4C`` with ``include_ll``).
    """

    def __init__(self, include_ll: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.include_ll = bool(include_ll)

    def call(self, images):
        return wavelet_features(images, self.include_ll)

    def compute_output_shape(self, input_shape):
        _check_even_shape(input_shape)
        b, h, w, c = input_shape
        half = [None if d is None else d // 2 for d in (h, w)]
        return (b, *half, None if c is None else c * (4 if self.include_ll else 3))

    def get_config(self):
        return {**super().get_config(), "include_ll": self.include_ll}


def level_filters(base_filters: int, level: int) -> int:
    """Channels of the features at scale S/2^level: ``base·2^(level−1)``, from
    ``base`` at levels 0–1 up to a cap of ``4·base``."""
    return int(base_filters) * 2 ** min(max(level - 1, 0), 2)


def conv_block(x: tf.Tensor, filters: int, name: str, strides: int = 1) -> tf.Tensor:
    """Two 3×3 convs (the first with ``strides``), each + LeakyReLU(0.2).

    ``[B, h, w, c]`` → ``[B, h/strides, w/strides, filters]`` (Keras functional).
    """
    for i, s in enumerate((strides, 1)):
        x = tf.keras.layers.Conv2D(filters, 3, strides=s, padding="same",
                                   kernel_initializer="he_normal", name=f"{name}_conv{i}")(x)
        x = tf.keras.layers.LeakyReLU(_LEAK, name=f"{name}_act{i}")(x)
    return x


def upsample_block(x: tf.Tensor, skips: list[tf.Tensor], filters: int, name: str
                   ) -> tf.Tensor:
    """Bilinear ×2 upsampling, concatenation with ``skips`` (same size), :func:`conv_block`.

    ``[B, h, w, c]`` → ``[B, 2h, 2w, filters]`` (Keras functional).
    """
    x = tf.keras.layers.UpSampling2D(2, interpolation="bilinear", name=f"{name}_up")(x)
    if skips:
        x = tf.keras.layers.Concatenate(name=f"{name}_concat")([x, *skips])
    return conv_block(x, filters, name)


def check_size(size: int, depth: int) -> None:
    """Raise ``ValueError`` unless ``depth ≥ 1`` and ``size`` is a multiple of 2^depth."""
    if depth < 1 or size < 2 ** depth or size % 2 ** depth:
        raise ValueError(f"size {size} must be a positive multiple of 2**depth = {2 ** depth} "
                         f"(depth {depth} >= 1)")


def build_wavelet_encoder(input_size: int, channels: int = 3, include_ll: bool = False,
                          use_wavelet: bool = True, base_filters: int = 16, depth: int = 4,
                          name: str = "wavelet_encoder") -> tf.keras.Model:
    """The wavelet transform perception encoder (Figs. 3–4).

    Layers: ``haar`` (:class:`HaarWavelet`; or, with ``use_wavelet=False``,
    ``learned_downsample``: a trainable 2×2 stride-2 conv with the same 3C/4C
    output channels), then ``level1`` (:func:`conv_block` at S/2) and
    ``level2 … level{depth}`` (stride-2 conv blocks).

    Args:
      input_size: S, the image side (a multiple of 2^depth).
      channels: C, the image channels.
      include_ll: keep the LL band (the paper drops it).
      use_wavelet: False for the "w/o wavelet transform perception" ablation.
      base_filters: width at S/2; level k has :func:`level_filters` channels.
      depth: number of scales.
      name: the model's name.
    Returns:
      A Keras model: float32 ``[B, S, S, C]`` in [0, 1] (by our design the
      input photo unwrapped into UV) → list of ``depth`` float32 feature maps,
      item ``k − 1`` is ``[B, S/2^k, S/2^k, level_filters(base_filters, k)]``.
    Raises:
      ValueError: S not a multiple of 2^depth, or depth < 1.
    """
    check_size(input_size, depth)
    image = tf.keras.Input((input_size, input_size, channels), name="image")
    if use_wavelet:
        x = HaarWavelet(include_ll, name="haar")(image)
    else:
        x = tf.keras.layers.Conv2D(channels * (4 if include_ll else 3), 2, strides=2,
                                   kernel_initializer="he_normal",
                                   name="learned_downsample")(image)
    features = [conv_block(x, level_filters(base_filters, 1), "level1")]
    for level in range(2, depth + 1):
        features.append(conv_block(features[-1], level_filters(base_filters, level),
                                   f"level{level}", strides=2))
    return tf.keras.Model(image, features, name=name)
