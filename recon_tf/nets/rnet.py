"""R-Net, the coarse stage's coefficient regressor (paper §3.2).

R-Net maps an aligned face crop to the 3DMM coefficients ``{α, β, δ, p, γ}`` in
:class:`recon_tf.coeffs.CoeffLayout` order. The model is a functional chain

    image → ``preprocess`` → ``backbone`` (nested sub-model, globally pooled)
          → ``coeffs`` (Dense) → optional ``bounded_expression``

with one of :data:`BACKBONES`:

* ``"vgg16"``: the paper's VGG-Face based regressor, the convolutional part of
  keras-vggface's VGG16 (conv1_1 … conv5_3, pool1 … pool5, then spatial
  average), weights from the keras-vggface ``.h5`` (see :mod:`recon_tf.nets.vggface`);
* ``"resnet50"``: Keras' ResNet50 without top, average pooled (Deep3DFace's
  choice), optionally loading an ImageNet no-top ``.h5``;
* ``"small"``: a plain CNN for CPU runs (≈1.6 M parameters; five stride-2
  stages of two 3×3 convolutions with LeakyReLU, 32–256 channels, average
  pooled). It has no BatchNorm on purpose: with the small batches and short
  runs of a CPU, Keras' MobileNetV2 (our first choice) predicted one and the
  same face for every image in inference mode after 250–500 steps, because
  its moving BatchNorm statistics lagged the batch statistics training saw;
  without normalisation, training and inference compute the same function.

The head is zero-initialised (kernel and bias), so an untrained R-Net outputs
all zeros: the library's mean face, facing the camera, lit by the ambient term
the lighting code adds itself. Its kernel gets a gradient on the first step
and the backbone from the second on.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from recon_tf.assets import require_file
from recon_tf.coeffs import CoeffLayout
from recon_tf.nets import vggface

# BatchNorm momentum of the backbones that have BatchNorm (ResNet-50's own value; Keras'
# MobileNetV2 uses 0.999, whose moving statistics lag far behind in short runs).
BN_MOMENTUM = 0.99
SMALL_FILTERS = (32, 64, 128, 256, 256)
BACKBONES = ("vgg16", "resnet50", "small")
IMAGENET_MEAN_BGR = (103.939, 116.779, 123.68)
"""Keras 'caffe' preprocessing means, BGR order, for inputs in [0, 255]."""
_PREPROCESS = {"vgg16": "vggface", "resnet50": "caffe", "small": "tf"}


@tf.keras.utils.register_keras_serializable(package="recon_tf")
class _Preprocess(tf.keras.layers.Layer):
    """RGB in [0, 1] → a backbone's input: ``"vggface"`` (BGR in [0, 255] minus
    VGG-Face means), ``"caffe"`` (BGR in [0, 255] minus ImageNet means) or
    ``"tf"`` ([-1, 1])."""

    def __init__(self, mode: str, **kwargs):
        super().__init__(**kwargs)
        if mode not in ("vggface", "caffe", "tf"):
            raise ValueError(f"unknown preprocessing mode {mode!r}")
        self.mode = mode

    def call(self, images):
        if self.mode == "tf":
            return images * 2.0 - 1.0
        mean = vggface.MEAN_BGR if self.mode == "vggface" else IMAGENET_MEAN_BGR
        return tf.reverse(images * 255.0, axis=[-1]) - tf.constant(mean, images.dtype)

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


@tf.keras.utils.register_keras_serializable(package="recon_tf")
class BoundedExpression(tf.keras.layers.Layer):
    """Clip the expression columns β into bounds with a straight-through gradient.

    Forward: columns ``[start, start + len(lower))`` of a float32 ``[B, total]``
    input become ``clip(x, lower, upper)``; others pass unchanged. Backward: the
    gradient is the identity (``x + stop_gradient(clip(x) - x)``). ICT-FaceKit's
    blendshape weights live in [0, 1] and R-Net starts at 0, on the lower
    bound: a plain clip would zero the gradient of every weight pushed below
    it and could stall expressions there for good.

    Args:
      start: first expression column (``layout.offsets["expression"][0]``).
      lower, upper: per-coefficient bounds, length ``exp_dim`` each.
    """

    def __init__(self, start: int, lower, upper, **kwargs):
        super().__init__(**kwargs)
        self.start = int(start)
        self.lower = [float(v) for v in np.ravel(lower)]
        self.upper = [float(v) for v in np.ravel(upper)]
        if len(self.lower) != len(self.upper) or any(
                lo > hi for lo, hi in zip(self.lower, self.upper)):
            raise ValueError("BoundedExpression needs equal-length bounds with lower <= upper")

    def call(self, coeffs):
        end = self.start + len(self.lower)
        exp = coeffs[:, self.start:end]
        clipped = tf.clip_by_value(exp, tf.constant(self.lower, coeffs.dtype),
                                   tf.constant(self.upper, coeffs.dtype))
        exp = exp + tf.stop_gradient(clipped - exp)
        return tf.concat([coeffs[:, :self.start], exp, coeffs[:, end:]], axis=-1)

    def get_config(self):
        return {**super().get_config(), "start": self.start, "lower": self.lower,
                "upper": self.upper}


def _vgg16_backbone(image_size: int, path: str | None) -> tf.keras.Model:
    """VGG-Face's conv part (widths read from the file), weights loaded by layer name."""
    if path is None:
        path = vggface.default_path()
    else:
        require_file(path, "VGG-Face weights (keras-vggface VGG16 .h5)", vggface.SOURCE)
    names = tuple(n for block in vggface.CONV_BLOCKS for n in block)
    weights = vggface.read_h5_layer_weights(path, names)
    missing = [n for n in names if n not in weights]
    if missing:
        raise ValueError(f"{path} is not a keras-vggface VGG16 weights file: "
                         f"layers {missing} are missing")
    filters = tuple(int(weights[block[0]][0].shape[-1]) for block in vggface.CONV_BLOCKS)
    vgg = vggface.build_vgg16(filters, input_size=image_size, include_top=False)
    for name in names:
        vgg.get_layer(name).set_weights(weights[name])
    return tf.keras.Model(vgg.input, vgg.output, name="backbone")


def _small_backbone(shape: tuple[int, int, int]) -> tf.keras.Model:
    """The BatchNorm-free CPU backbone (see the module docstring): [B, S, S, 3] in
    [−1, 1] → [B, SMALL_FILTERS[-1]] average-pooled features."""
    x = inputs = tf.keras.Input(shape)
    for level, filters in enumerate(SMALL_FILTERS):
        for k, strides in enumerate((2, 1)):
            x = tf.keras.layers.Conv2D(filters, 3, strides, padding="same",
                                       kernel_initializer="he_normal",
                                       name=f"block{level}_conv{k}")(x)
            x = tf.keras.layers.LeakyReLU(0.2, name=f"block{level}_act{k}")(x)
    x = tf.keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return tf.keras.Model(inputs, x, name="backbone")


def _build_backbone(backbone: str, image_size: int, vggface_path: str | None,
                    resnet_weights: str | None, pretrained: bool = True) -> tf.keras.Model:
    shape = (image_size, image_size, 3)
    if backbone == "vgg16" and not pretrained:
        vgg = vggface.build_vgg16(input_size=image_size, include_top=False)
        return tf.keras.Model(vgg.input, vgg.output, name="backbone")
    if backbone == "vgg16":
        return _vgg16_backbone(image_size, vggface_path)
    if backbone == "resnet50":
        if not pretrained:
            resnet_weights = None
        if resnet_weights is not None:
            require_file(resnet_weights, "ResNet50 ImageNet no-top weights (.h5)",
                                 "Keras applications: resnet50_weights_tf_dim_ordering_tf_"
                                 "kernels_notop.h5 (https://github.com/keras-team/keras-"
                                 "applications/releases)")
        return tf.keras.applications.ResNet50(include_top=False, weights=resnet_weights,
                                              input_shape=shape, pooling="avg",
                                              name="backbone")
    return _small_backbone(shape)


def build_rnet(backbone: str, layout: CoeffLayout, image_size: int = 224,
               exp_bounds: np.ndarray | None = None, vggface_path: str | None = None,
               resnet_weights: str | None = None, name: str = "rnet",
               pretrained: bool = True) -> tf.keras.Model:
    """Build R-Net.

    Args:
      backbone: one of :data:`BACKBONES`.
      layout: the coefficient layout; the output has ``layout.total`` columns.
      image_size: input side in pixels (≥ 32).
      exp_bounds: optional float32 ``[n_exp_model, 2]`` (low, high) per
        expression coefficient (a face model's ``exp_bounds``); the first
        ``layout.exp_dim`` rows bound β via :class:`BoundedExpression`.
      vggface_path: ``"vgg16"`` only: a keras-vggface VGG16 ``.h5`` (full or
        no-top); default :func:`recon_tf.nets.vggface.default_path`.
      resnet_weights: ``"resnet50"`` only: optional ImageNet no-top ``.h5``.
      name: the model's name.
      pretrained: load the backbone's pretrained weights (VGG-Face, optional
        ImageNet); False builds the same architecture with random weights, for
        restoring a trained R-Net from a checkpoint.

    Returns:
      A Keras model: float32 ``[B, image_size, image_size, 3]`` RGB in [0, 1]
      (the aligned crop) → float32 ``[B, layout.total]`` coefficients in
      :class:`CoeffLayout` order. Preprocessing is inside the model. Untrained,
      it outputs exact zeros (zero head; the mean face facing the camera with
      ambient light), or zeros clipped into ``exp_bounds``.

    Raises:
      ValueError: unknown backbone, or fewer ``exp_bounds`` rows than ``exp_dim``.
      recon_tf.assets.AssetMissingError: a weights file does not exist.
    """
    if backbone not in BACKBONES:
        raise ValueError(f"unknown R-Net backbone {backbone!r}; choose one of {BACKBONES}")
    if exp_bounds is not None:
        exp_bounds = np.asarray(exp_bounds, np.float32)
        if exp_bounds.ndim != 2 or exp_bounds.shape[1] != 2 or len(exp_bounds) < layout.exp_dim:
            raise ValueError(f"exp_bounds must be [n >= {layout.exp_dim}, 2], "
                             f"got {exp_bounds.shape}")
    net = _build_backbone(backbone, image_size, vggface_path, resnet_weights, pretrained)
    for layer in net.layers:  # see BN_MOMENTUM
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            layer.momentum = BN_MOMENTUM
    images = tf.keras.Input((image_size, image_size, 3), name="image")
    x = _Preprocess(_PREPROCESS[backbone], name="preprocess")(images)
    x = net(x)
    coeffs = tf.keras.layers.Dense(layout.total, kernel_initializer="zeros",
                                   bias_initializer="zeros", dtype="float32", name="coeffs")(x)
    if exp_bounds is not None and layout.exp_dim:
        bounds = exp_bounds[:layout.exp_dim]
        coeffs = BoundedExpression(layout.offsets["expression"][0], bounds[:, 0], bounds[:, 1],
                                   name="bounded_expression")(coeffs)
    return tf.keras.Model(images, coeffs, name=name)


def backbone(model: tf.keras.Model) -> tf.keras.Model:
    """The nested backbone sub-model of an R-Net: preprocessed ``[B, S, S, 3]`` →
    pooled float32 ``[B, C]`` features."""
    return model.get_layer("backbone")


def rnet_config(backbone: str, layout: CoeffLayout, image_size: int) -> dict:
    """JSON-serialisable description of an R-Net, for checkpoints.

    Returns:
      ``{"backbone", "image_size", "id_dim", "exp_dim", "tex_dim", "total"}``.
    """
    if backbone not in BACKBONES:
        raise ValueError(f"unknown R-Net backbone {backbone!r}; choose one of {BACKBONES}")
    return {"backbone": backbone, "image_size": int(image_size), "id_dim": layout.id_dim,
            "exp_dim": layout.exp_dim, "tex_dim": layout.tex_dim, "total": layout.total}


def layout_from_config(config: dict) -> CoeffLayout:
    """The :class:`CoeffLayout` a :func:`rnet_config` dict records.

    Raises:
      ValueError: the recorded ``total`` disagrees with the dims.
    """
    layout = CoeffLayout(int(config["id_dim"]), int(config["exp_dim"]), int(config["tex_dim"]))
    if "total" in config and int(config["total"]) != layout.total:
        raise ValueError(f"R-Net config total {config['total']} != {layout.total} for {layout}")
    return layout
