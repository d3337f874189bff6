"""VGG-Face (Parkhi et al. 2015), the paper's face-recognition network, from keras-vggface weights.

The paper's identity loss (Eq. 9) uses VGG-Face features. Its weights (≈580 MB,
licensed for non-commercial research) are not shipped; users who have the
keras-vggface release files load them here:

* ``rcmalli_vggface_tf_vgg16.h5`` (with the classifier): features are fc7 after
  its ReLU, 4096-D — the penultimate layer, the VGG-Face descriptor;
* ``rcmalli_vggface_tf_notop_vgg16.h5``: features are pool5 averaged over
  space, 512-D.

The architecture is keras-vggface's ``VGG16`` (conv1_1 … conv5_3 3×3 ReLU
convolutions, 2×2 max pools pool1 … pool5, then fc6/fc7 with ReLU), built in
Keras 3 with the same layer names, and weights are read by layer name with
h5py from Keras-2 HDF5 files (``save_weights`` layout, or ``model.save`` with
the ``model_weights`` group). The channel widths, fc size and input side are
read from the file's weight shapes, so a file of the same layout with other
widths (as the tests write) loads the same way.

Preprocessing is keras-vggface's version 1: RGB in [0, 255] → BGR, minus the
per-channel mean (B, G, R) = (93.5940, 104.7624, 129.1863).
"""

from __future__ import annotations

import functools
import math
import os

import h5py
import numpy as np
import tensorflow as tf

from recon_tf.assets import AssetMissingError, asset_path, missing_message, require_file

ASSET = "identity/vggface/rcmalli_vggface_tf_vgg16.h5"
NOTOP_ASSET = "identity/vggface/rcmalli_vggface_tf_notop_vgg16.h5"
SOURCE = ("the keras-vggface v2.0 release files (VGG-Face weights of Parkhi et al., "
          "non-commercial research use): https://github.com/rcmalli/keras-vggface/releases "
          "(rcmalli_vggface_tf_vgg16.h5, or rcmalli_vggface_tf_notop_vgg16.h5)")
MEAN_BGR = (93.5940, 104.7624, 129.1863)
"""keras-vggface version-1 channel means, BGR order, for inputs in [0, 255]."""

CONV_BLOCKS = (("conv1_1", "conv1_2"), ("conv2_1", "conv2_2"),
               ("conv3_1", "conv3_2", "conv3_3"), ("conv4_1", "conv4_2", "conv4_3"),
               ("conv5_1", "conv5_2", "conv5_3"))
FC_LAYERS = ("fc6", "fc7")
VGG16_FILTERS = (64, 128, 256, 512, 512)


def build_vgg16(filters: tuple[int, ...] = VGG16_FILTERS, fc_units: int = 4096,
                input_size: int = 224, include_top: bool = True) -> tf.keras.Model:
    """keras-vggface's VGG16 up to the feature layer, with its layer names.

    Args:
      filters: output channels of the five conv blocks.
      fc_units: width of fc6 and fc7.
      input_size: square input side (a multiple of 32 with ``include_top``).
      include_top: end at fc7 after ReLU; else at spatially averaged pool5.

    Returns:
      A Keras model: float32 [B, input_size, input_size, 3] mean-subtracted BGR
      in [0, 255] units → [B, fc_units] (top) or [B, filters[-1]] (no top).
    """
    layers = tf.keras.layers
    inputs = tf.keras.Input((input_size, input_size, 3), name="bgr_minus_mean")
    x = inputs
    for block, (names, width) in enumerate(zip(CONV_BLOCKS, filters), start=1):
        for name in names:
            x = layers.Conv2D(width, 3, padding="same", activation="relu", name=name)(x)
        x = layers.MaxPooling2D(2, 2, name=f"pool{block}")(x)
    if include_top:
        x = layers.Flatten(name="flatten")(x)
        for name in FC_LAYERS:
            x = layers.Dense(fc_units, activation="relu", name=name)(x)
    else:
        x = layers.GlobalAveragePooling2D(name="pool5_avg")(x)
    return tf.keras.Model(inputs, x, name="vggface_vgg16")


def _decode(name: str | bytes) -> str:
    return name.decode("utf-8") if isinstance(name, bytes) else str(name)


def _datasets(group: h5py.Group) -> list[np.ndarray]:
    """Every dataset under ``group`` (any depth), in h5py's visiting order."""
    found: list[np.ndarray] = []

    def visit(_: str, obj: object) -> None:
        if isinstance(obj, h5py.Dataset):
            found.append(np.asarray(obj))

    group.visititems(visit)
    return found


def read_h5_layer_weights(path: str, layer_names: tuple[str, ...]) -> dict[str, list[np.ndarray]]:
    """Read [kernel, bias] per layer name from a Keras-2 HDF5 weights or model file.

    Handles the ``save_weights`` layout (``/conv1_1/conv1_1/kernel:0``) and the
    ``model.save`` one (the same under ``/model_weights``); weights are ordered
    by the group's ``weight_names`` attribute, else kernel (rank ≥ 2) first.

    Returns:
      ``{layer name: [kernel, bias]}`` for the names present in the file.
    """
    out: dict[str, list[np.ndarray]] = {}
    with h5py.File(path, "r") as f:
        root = f["model_weights"] if "model_weights" in f else f
        for name in layer_names:
            if name not in root or not isinstance(root[name], h5py.Group):
                continue
            group = root[name]
            names = [_decode(n) for n in group.attrs.get("weight_names", [])]
            if names:
                arrays = [np.asarray(group[n]) for n in names]
            else:
                arrays = sorted(_datasets(group), key=lambda a: -a.ndim)
            if arrays:
                out[name] = arrays
    return out


def _config(weights: dict[str, list[np.ndarray]], path: str) -> dict:
    """Architecture (widths, fc size, input side, top or not) implied by the weight shapes."""
    conv_names = [n for block in CONV_BLOCKS for n in block]
    missing = [n for n in conv_names if n not in weights]
    if missing:
        raise ValueError(f"{path} is not a keras-vggface VGG16 weights file: layers {missing} "
                         f"are missing (expected {conv_names + list(FC_LAYERS)})")
    filters = tuple(int(weights[block[0]][0].shape[-1]) for block in CONV_BLOCKS)
    include_top = all(n in weights for n in FC_LAYERS)
    if not include_top:
        return {"filters": filters, "fc_units": 0, "input_size": 224, "include_top": False}
    fc6_in, fc_units = weights["fc6"][0].shape
    side = math.isqrt(fc6_in // filters[-1])
    if side * side * filters[-1] != fc6_in:
        raise ValueError(f"{path}: fc6 kernel {weights['fc6'][0].shape} does not match "
                         f"a square pool5 map of {filters[-1]} channels")
    return {"filters": filters, "fc_units": int(fc_units), "input_size": 32 * side,
            "include_top": True}


@functools.cache
def load_vggface_model(path: str) -> tf.keras.Model:
    """Build keras-vggface's VGG16 and load ``path``'s weights by layer name (cached per path).

    Raises:
      ValueError: the file lacks a layer, or a weight's shape does not match.
    """
    names = tuple(n for block in CONV_BLOCKS for n in block) + FC_LAYERS
    weights = read_h5_layer_weights(path, names)
    model = build_vgg16(**_config(weights, path))
    for layer in model.layers:
        if not layer.weights:
            continue
        arrays = weights[layer.name]
        expected = [tuple(w.shape) for w in layer.weights]
        if [a.shape for a in arrays] != expected:
            raise ValueError(f"{path}: layer {layer.name!r} holds weights of shapes "
                             f"{[a.shape for a in arrays]}, expected {expected} "
                             "(a Theano/channels-first file?)")
        layer.set_weights(arrays)
    model.trainable = False
    return model


def default_path() -> str:
    """The shared VGG-Face weights: the full file if present, else the no-top one.

    Raises:
      AssetMissingError: neither file exists (the message says where to get them).
    """
    for relative in (ASSET, NOTOP_ASSET):
        path = asset_path(relative, must_exist=False)
        if os.path.isfile(path):
            return path
    path = asset_path(ASSET, must_exist=False)
    raise AssetMissingError(missing_message(path, ASSET))


class VGGFace:
    """Frozen VGG-Face: images → L2-normalised identity features.

    Args:
      path: a keras-vggface VGG16 ``.h5``; default :func:`default_path`
        (``identity/vggface/rcmalli_vggface_tf_vgg16.h5`` under the assets root).

    Raises:
      AssetMissingError: the file does not exist.

    Attributes:
      name: ``"vggface"``.
      input_size: 224 for the released files (the input side the file implies).
      feature_dim: 4096 (fc7) with the classifier file, 512 (pool5) without.
    """

    name = "vggface"

    def __init__(self, path: str | None = None):
        if path is None:
            path = default_path()
        else:
            require_file(path, "VGG-Face weights (keras-vggface VGG16 .h5)", SOURCE)
        self.path = os.path.abspath(path)
        self._model = load_vggface_model(self.path)
        self.input_size = int(self._model.input_shape[1])
        self.feature_dim = int(self._model.output_shape[-1])
        self._forward = tf.function(
            self._features, input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)],
            autograph=False)

    def _features(self, images: tf.Tensor) -> tf.Tensor:
        size = self.input_size
        x = tf.image.resize(images, [size, size], method="bilinear") * 255.0
        x = tf.reverse(x, axis=[-1]) - tf.constant(MEAN_BGR, tf.float32)
        features = self._model(x, training=False)
        return tf.math.l2_normalize(features, axis=-1, epsilon=1e-12)

    def __call__(self, images: tf.Tensor) -> tf.Tensor:
        """Identity features of face crops.

        Args:
          images: float32 [B, H, W, 3] RGB in [0, 1], any H, W (resized
            bilinearly to ``input_size``², as keras-vggface's 224² crops).

        Returns:
          float32 [B, feature_dim], unit L2 norm per row; differentiable
          w.r.t. ``images``.
        """
        images = tf.convert_to_tensor(images)
        if images.dtype != tf.float32:
            images = tf.cast(images, tf.float32)
        return self._forward(images)
