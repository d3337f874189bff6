"""MobileFaceNet (InsightFace_PyTorch, MIT) as a differentiable TF feature extractor for L_id.

The network is read from the shared ONNX asset
``identity/mobilefacenet_onnx/mobilefacenet.onnx`` and evaluated with
:mod:`recon_tf.nets.onnx_tf`, so gradients flow to the input image (Eq. 9).

Input conventions, checked on the shared photos with ArcFace-style 5-point
alignment to 112×112: RGB scaled to [−1, 1] separates identities best
(Obama vs Obama 0.74, different people mean 0.04, at most 0.29); BGR is
slightly worse, [0, 1] or [0, 255] inputs much worse. The ONNX input is NCHW;
images are fed as NHWC (the evaluator keeps NHWC internally). The graph's
output is not normalised; :class:`MobileFaceNet` L2-normalises it.
"""

from __future__ import annotations

import os

import tensorflow as tf

from recon_tf.assets import asset_path, require_file
from recon_tf.nets.onnx_tf import OnnxModel, load_onnx_model

ASSET = "identity/mobilefacenet_onnx/mobilefacenet.onnx"
SOURCE = "InsightFace_PyTorch MobileFaceNet exported to ONNX (MIT)"


class MobileFaceNet:
    """Frozen MobileFaceNet: images → L2-normalised 128-D identity features.

    Args:
      path: the ``.onnx`` file; default: the shared asset :data:`ASSET`
        (:class:`recon_tf.assets.AssetMissingError` if absent).

    Attributes:
      name: ``"mobilefacenet"``.
      input_size: 112 (the network's square input side, pixels).
      feature_dim: 128.
    """

    name = "mobilefacenet"

    def __init__(self, path: str | None = None):
        if path is None:
            path = asset_path(ASSET)
        else:
            require_file(path, "MobileFaceNet ONNX model", SOURCE)
        self.path = os.path.abspath(path)
        self._model: OnnxModel = load_onnx_model(self.path)
        if len(self._model.input_names) != 1:
            raise ValueError(f"{path}: expected one graph input, got {self._model.input_names}")
        shape = self._model.input_shapes[self._model.input_names[0]]
        self.input_size = int(shape[2]) if len(shape) == 4 and shape[2] else 112
        self.feature_dim = 128
        self._forward = tf.function(
            self._features, input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)],
            autograph=False)

    def _features(self, images: tf.Tensor) -> tf.Tensor:
        size = self.input_size
        x = tf.image.resize(images, [size, size], method="bilinear")
        x = x * 2.0 - 1.0
        features = self._model(x, nhwc_inputs=True)[0]
        features = tf.reshape(features, [-1, self.feature_dim])
        return tf.math.l2_normalize(features, axis=-1, epsilon=1e-12)

    def __call__(self, images: tf.Tensor) -> tf.Tensor:
        """Identity features of face crops.

        Args:
          images: float32 [B, H, W, 3] RGB in [0, 1], any H, W (resized
            bilinearly to 112×112; best with faces aligned as for ArcFace).

        Returns:
          float32 [B, 128], unit L2 norm per row; differentiable w.r.t. ``images``.
        """
        images = tf.convert_to_tensor(images)
        if images.dtype != tf.float32:
            images = tf.cast(images, tf.float32)
        return self._forward(images)
