"""Spherical-harmonics illumination, Eq. (5): C(γ | t_i, n_i) = t_i ⊙ Σ_b γ_b Φ_b(n_i).

Lambertian surface under distant light, B = 3 SH bands (9 basis functions)
per colour channel, γ ∈ R^27 laid out ``[r0..r8, g0..g8, b0..b8]``.

Φ_b(n) are the real SH basis functions Y_lm multiplied by the Lambertian
convolution constants A_0 = π, A_1 = 2π/3, A_2 = π/4 (Ramamoorthi & Hanrahan,
"An efficient representation for irradiance environment maps"). Deep3DFace
uses the same basis with other band constants (a_1 = 2π/√3, a_2 = 2π/√8);
that only rescales γ of bands 1 and 2, so the model is the same up to a
reparametrisation of γ. With n = (x, y, z):

    Φ_0 = π · 1/√(4π)
    Φ_1 = −(2π/3) √(3/(4π)) y,  Φ_2 = (2π/3) √(3/(4π)) z,  Φ_3 = −(2π/3) √(3/(4π)) x
    Φ_4 = (π/4) · ½√(15/π) xy,  Φ_5 = −(π/4) · ½√(15/π) yz,
    Φ_6 = (π/4) · ¼√(5/π) (3z² − 1),
    Φ_7 = −(π/4) · ½√(15/π) xz, Φ_8 = (π/4) · ¼√(15/π) (x² − y²)

(the order and signs of the Condon–Shortley real SH Y_{1,−1}, Y_{1,0}, Y_{1,1},
Y_{2,−2} … Y_{2,2}).

Colour space: albedo, shaded colours and photos are all sRGB-encoded values in
[0, 1] (the photos' own pixel values, like BFM's texture and Deep3DFace);
shading multiplies them directly, with no linearisation or gamma anywhere
(see :mod:`recon_tf.face_model`).

Initial ambient offset (Deep3DFace's choice, kept here): the network's light
output γ̂ is zero-centred, so :func:`shade` adds ``AMBIENT_INIT = 0.8`` to the
first coefficient of every channel, γ_0 = γ̂_0 + 0.8: zero coefficients then
give a uniformly lit face of 0.8·π/√(4π) ≈ 0.71 × albedo rather than black.
"""

from __future__ import annotations

import math

import tensorflow as tf

NUM_SH = 9
AMBIENT_INIT = 0.8

_A0, _A1, _A2 = math.pi, 2.0 * math.pi / 3.0, math.pi / 4.0
_C0 = 1.0 / math.sqrt(4.0 * math.pi)
_C1 = math.sqrt(3.0 / (4.0 * math.pi))
_C2 = 0.5 * math.sqrt(15.0 / math.pi)
_C20 = 0.25 * math.sqrt(5.0 / math.pi)
_C22 = 0.25 * math.sqrt(15.0 / math.pi)


def real_sh_basis(normals: tf.Tensor) -> tf.Tensor:
    """Real SH Y_lm (Condon–Shortley), l ≤ 2, order (0,0), (1,−1), (1,0), (1,1), (2,−2) … (2,2).

    Args:
      normals: float32 [..., 3], unit vectors.
    Returns:
      float32 [..., 9].
    """
    normals = tf.convert_to_tensor(normals, tf.float32)
    x, y, z = normals[..., 0], normals[..., 1], normals[..., 2]
    return tf.stack([
        tf.fill(tf.shape(x), _C0),
        -_C1 * y, _C1 * z, -_C1 * x,
        _C2 * x * y, -_C2 * y * z, _C20 * (3.0 * z * z - 1.0), -_C2 * x * z,
        _C22 * (x * x - y * y),
    ], axis=-1)


def sh_basis(normals: tf.Tensor) -> tf.Tensor:
    """Φ_b(n) of Eq. (5): real SH times the Lambertian constants A_l.

    Args:
      normals: float32 [..., 3], unit vectors.
    Returns:
      float32 [..., 9].
    """
    a = tf.constant([_A0, _A1, _A1, _A1, _A2, _A2, _A2, _A2, _A2], tf.float32)
    return real_sh_basis(normals) * a


def irradiance(normals: tf.Tensor, light: tf.Tensor, ambient_init: float = AMBIENT_INIT
               ) -> tf.Tensor:
    """Σ_b γ_b Φ_b(n), per colour channel.

    Args:
      normals: float32 [B, N, 3] unit normals in camera space.
      light: γ, float32 [B, 27] (``[r0..r8, g0..g8, b0..b8]``).
      ambient_init: added to γ_0 of each channel (see module docstring).
    Returns:
      float32 [B, N, 3], non-negative for physically plausible γ (not clipped).
    """
    light = tf.convert_to_tensor(light, tf.float32)
    if light.shape.rank != 2 or light.shape[-1] != 3 * NUM_SH:
        raise ValueError(f"light must have shape [B, 27], got {light.shape}")
    gamma = tf.reshape(light, [-1, 3, NUM_SH])
    gamma = gamma + tf.constant([ambient_init] + [0.0] * (NUM_SH - 1), tf.float32)
    basis = sh_basis(normals)  # [B, N, 9]
    return tf.einsum("bnk,bck->bnc", basis, gamma)


def shade(albedo: tf.Tensor, normals: tf.Tensor, light: tf.Tensor,
          ambient_init: float = AMBIENT_INIT) -> tf.Tensor:
    """C(γ | t_i, n_i) = t_i ⊙ Σ_b γ_b Φ_b(n_i)  (Eq. 5).

    Args:
      albedo: t, float32 [B, N, 3] in [0, 1], sRGB-encoded like the photos.
      normals: n, float32 [B, N, 3] unit normals in camera space.
      light: γ, float32 [B, 27].
      ambient_init: added to γ_0 (Deep3DFace: 0.8).
    Returns:
      shaded colours, float32 [B, N, 3], the photos' sRGB-encoded space (not clipped).
    """
    return tf.convert_to_tensor(albedo, tf.float32) * irradiance(normals, light, ambient_init)
