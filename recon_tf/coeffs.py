"""The 3DMM coefficient layout (paper §3.2): the one place that knows it.

R-Net regresses ``{α, β, δ, p, γ}``: identity 80, expression 29, albedo 80,
pose 6 (3 Euler angles in radians + 3 translation), SH light 27 (3 bands × RGB)
= 222 by default. Dimensions adapt to what a face model provides (ICT-FaceKit
has 100 identity and 53 expression modes; BFM 199 identity): use
:meth:`CoeffLayout.for_model` to clip the paper's dims to the model's.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import tensorflow as tf

POSE_DIM = 6
LIGHT_DIM = 27


class Coeffs(NamedTuple):
    """Split coefficients; every field is float32 ``[B, dim]``.

    Fields: ``identity`` α, ``expression`` β, ``albedo`` δ, ``angles``
    (pitch, yaw, roll in radians, ``[B, 3]``), ``translation`` (``[B, 3]``, in
    model units), ``light`` γ (``[B, 27]``, 9 SH coefficients per RGB channel,
    laid out ``[r0..r8, g0..g8, b0..b8]``).
    """

    identity: tf.Tensor
    expression: tf.Tensor
    albedo: tf.Tensor
    angles: tf.Tensor
    translation: tf.Tensor
    light: tf.Tensor


@dataclasses.dataclass(frozen=True)
class CoeffLayout:
    """Sizes of each coefficient group; ``total`` is R-Net's output width.

    Attributes:
      id_dim: |α|, identity coefficients (paper: 80).
      exp_dim: |β|, expression coefficients (paper: 29).
      tex_dim: |δ|, albedo coefficients (paper: 80).
    """

    id_dim: int = 80
    exp_dim: int = 29
    tex_dim: int = 80

    pose_dim: int = dataclasses.field(default=POSE_DIM, init=False)
    light_dim: int = dataclasses.field(default=LIGHT_DIM, init=False)

    def __post_init__(self):
        for name in ("id_dim", "exp_dim", "tex_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"CoeffLayout.{name} must be a non-negative int, got {value!r}")

    @property
    def total(self) -> int:
        """Number of coefficients (222 for the paper's layout)."""
        return self.id_dim + self.exp_dim + self.tex_dim + self.pose_dim + self.light_dim

    @property
    def offsets(self) -> dict[str, tuple[int, int]]:
        """``{group: (start, end)}`` column ranges in the flat vector."""
        sizes = [("identity", self.id_dim), ("expression", self.exp_dim),
                 ("albedo", self.tex_dim), ("angles", 3), ("translation", 3),
                 ("light", self.light_dim)]
        out, start = {}, 0
        for name, size in sizes:
            out[name] = (start, start + size)
            start += size
        return out

    @classmethod
    def for_model(cls, n_id: int, n_exp: int, n_tex: int,
                  id_dim: int = 80, exp_dim: int = 29, tex_dim: int = 80) -> CoeffLayout:
        """The requested dims, clipped to the number of modes a model has."""
        return cls(min(id_dim, n_id), min(exp_dim, n_exp), min(tex_dim, n_tex))

    def split(self, coeffs: tf.Tensor) -> Coeffs:
        """Split ``[B, total]`` float32 coefficients into a :class:`Coeffs`.

        Raises:
          ValueError: wrong shape. tf.errors.InvalidArgumentError: NaN or Inf
          values (so a diverging network stops with a clear message).
        """
        coeffs = tf.convert_to_tensor(coeffs, tf.float32)
        if coeffs.shape.rank != 2 or (coeffs.shape[-1] is not None
                                      and coeffs.shape[-1] != self.total):
            raise ValueError(
                f"coefficients must have shape [B, {self.total}] for {self}, "
                f"got {coeffs.shape}")
        coeffs = tf.debugging.assert_all_finite(
            coeffs, "3DMM coefficients contain NaN or Inf")
        parts = {k: coeffs[:, a:b] for k, (a, b) in self.offsets.items()}
        return Coeffs(**parts)

    def join(self, parts: Coeffs) -> tf.Tensor:
        """Inverse of :meth:`split`: concatenate groups into ``[B, total]``."""
        return tf.concat([tf.convert_to_tensor(p, tf.float32) for p in parts], axis=-1)

    def zeros(self, batch: int) -> tf.Tensor:
        """All-zero coefficients ``[batch, total]`` (mean face, zero pose/light)."""
        return tf.zeros([batch, self.total], tf.float32)
