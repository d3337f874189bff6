"""R-Net: zero start, learning through head and backbone, bounded expressions, configs."""

import json

import h5py
import numpy as np
import pytest
import tensorflow as tf

from recon_tf import assets
from recon_tf.assets import AssetMissingError
from recon_tf.coeffs import CoeffLayout
from recon_tf.nets import rnet, vggface

LAYOUT = CoeffLayout(6, 5, 4)  # total 6 + 5 + 4 + 6 + 27 = 48
SIZE = 64
TINY_FILTERS = (4, 8, 8, 16, 16)


def _tiny_vgg(seed: int = 0) -> tf.keras.Model:
    """A narrow no-top VGG-Face with random He-scaled weights."""
    model = vggface.build_vgg16(TINY_FILTERS, input_size=SIZE, include_top=False)
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if layer.weights:
            kernel, bias = (w.numpy() for w in layer.weights)
            layer.set_weights([rng.normal(size=kernel.shape) * np.sqrt(2.0 / np.prod(
                kernel.shape[:-1])), rng.normal(size=bias.shape) * 0.1])
    return model


def _write_h5(model: tf.keras.Model, path: str) -> str:
    """keras-vggface's Keras-2 ``save_weights`` layout: ``/conv1_1/conv1_1/kernel:0``."""
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [layer.name.encode() for layer in model.layers[1:]]
        for layer in model.layers[1:]:
            group = f.create_group(layer.name)
            names = [f"{layer.name}/kernel:0", f"{layer.name}/bias:0"] if layer.weights else []
            group.attrs["weight_names"] = np.array([n.encode() for n in names], dtype="S")
            for n, w in zip(names, layer.weights):
                group.create_dataset(n, data=w.numpy())
    return path


@pytest.fixture(scope="module")
def vgg_path(tmp_path_factory):
    return _write_h5(_tiny_vgg(), str(tmp_path_factory.mktemp("vgg") / "tiny_notop_vgg16.h5"))


def _build(backbone: str, vgg_path: str, **kwargs) -> tf.keras.Model:
    return rnet.build_rnet(backbone, LAYOUT, SIZE, vggface_path=vgg_path, **kwargs)


def _images(batch: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, (batch, SIZE, SIZE, 3)).astype(np.float32)


@pytest.mark.parametrize("backbone", rnet.BACKBONES)
def test_untrained_zero_then_learns(backbone, vgg_path):
    model = _build(backbone, vgg_path)
    assert model.output_shape == (None, LAYOUT.total)
    assert rnet.backbone(model).name == "backbone"
    images = tf.constant(_images(3))
    out = model(images, training=False)
    assert out.dtype == tf.float32 and out.shape == (3, LAYOUT.total)
    assert np.all(out.numpy() == 0.0)

    target = tf.constant(np.random.default_rng(1).normal(size=(3, LAYOUT.total)), tf.float32)
    head = model.get_layer("coeffs").kernel
    first = rnet.backbone(model).trainable_weights[0]
    first_before = first.numpy().copy()

    def sgd_step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(images, training=True) - target))
        grads = tape.gradient(loss, model.trainable_weights)
        for var, grad in zip(model.trainable_weights, grads):
            if grad is not None:
                var.assign_sub(0.05 * grad)

    sgd_step()
    assert np.abs(head.numpy()).max() > 0  # the zero head learns at once
    np.testing.assert_array_equal(first.numpy(), first_before)  # zero head: no signal yet
    sgd_step()
    assert np.abs(first.numpy() - first_before).max() > 0  # the backbone learns from step 2
    assert np.abs(model(images, training=False).numpy()).max() > 0


def test_vgg16_loads_weights_and_preprocesses(vgg_path):
    model = _build("vgg16", vgg_path)
    images = _images(2, seed=5)
    feats = rnet.backbone(model)(model.get_layer("preprocess")(images)).numpy()
    bgr = images[..., ::-1] * 255.0 - np.array(vggface.MEAN_BGR, np.float32)
    np.testing.assert_allclose(feats, _tiny_vgg()(bgr).numpy(), rtol=1e-4, atol=1e-4)
    assert np.abs(feats - _tiny_vgg(seed=1)(bgr).numpy()).max() > 1e-2  # the check can fail


def test_bounded_expression_forward_and_gradient():
    layer = rnet.BoundedExpression(2, [0.0, -1.0, 0.0], [1.0, 1.0, 0.5])
    x = tf.Variable([[-5.0, 5.0, -0.5, 2.0, 0.25, 7.0], [3.0, -3.0, 1.5, -2.0, 0.75, -7.0]])
    with tf.GradientTape() as tape:
        y = layer(x)
        loss = tf.reduce_sum(y * tf.reshape(tf.range(12, dtype=tf.float32), [2, 6]))
    np.testing.assert_array_equal(y.numpy(), [[-5.0, 5.0, 0.0, 1.0, 0.25, 7.0],
                                              [3.0, -3.0, 1.0, -1.0, 0.5, -7.0]])
    np.testing.assert_array_equal(tape.gradient(loss, x).numpy(),
                                  np.arange(12, dtype=np.float32).reshape(2, 6))
    clone = rnet.BoundedExpression.from_config(layer.get_config())
    np.testing.assert_array_equal(clone(x).numpy(), y.numpy())
    with pytest.raises(ValueError):
        rnet.BoundedExpression(0, [1.0], [0.0])


def test_build_with_exp_bounds(vgg_path, tmp_path):
    bounds = np.tile(np.array([[0.2, 1.0]], np.float32), (LAYOUT.exp_dim + 3, 1))
    model = _build("small", vgg_path, exp_bounds=bounds)
    out = model(_images(2)).numpy()
    a, b = LAYOUT.offsets["expression"]
    np.testing.assert_array_equal(out[:, a:b], np.float32(0.2))
    assert np.all(np.delete(out, np.s_[a:b], axis=1) == 0.0)
    head = model.get_layer("coeffs")
    rng = np.random.default_rng(2)
    head.set_weights([rng.normal(size=w.shape) for w in head.get_weights()])
    path = str(tmp_path / "rnet.keras")
    model.save(path)
    loaded = tf.keras.models.load_model(path)
    np.testing.assert_allclose(loaded(_images(2)).numpy(), model(_images(2)).numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="exp_bounds"):
        _build("small", vgg_path, exp_bounds=bounds[:2])


def test_missing_weights_files(tmp_path, monkeypatch):
    monkeypatch.setattr(assets, "_override", str(tmp_path))
    with pytest.raises(AssetMissingError, match="rcmalli_vggface_tf_vgg16.h5") as info:
        rnet.build_rnet("vgg16", LAYOUT, SIZE)
    assert "keras-vggface" in str(info.value)
    with pytest.raises(AssetMissingError, match="mine.h5"):
        rnet.build_rnet("vgg16", LAYOUT, SIZE, vggface_path=str(tmp_path / "mine.h5"))
    with pytest.raises(FileNotFoundError, match="imagenet_notop.h5"):
        rnet.build_rnet("resnet50", LAYOUT, SIZE,
                        resnet_weights=str(tmp_path / "imagenet_notop.h5"))


def test_unknown_backbone():
    with pytest.raises(ValueError, match="resnet50") as info:
        rnet.build_rnet("vgg19", LAYOUT)
    assert all(name in str(info.value) for name in rnet.BACKBONES)
    with pytest.raises(ValueError, match="vgg19"):
        rnet.rnet_config("vgg19", LAYOUT, 224)


def test_config_round_trip():
    layout = CoeffLayout(80, 29, 80)
    config = json.loads(json.dumps(rnet.rnet_config("resnet50", layout, 224)))
    assert config == {"backbone": "resnet50", "image_size": 224, "id_dim": 80, "exp_dim": 29,
                      "tex_dim": 80, "total": 222}
    assert rnet.layout_from_config(config) == layout
    with pytest.raises(ValueError, match="total"):
        rnet.layout_from_config({**config, "total": 221})


def test_batchnorm_statistics_track_quickly():
    """Backbones with BatchNorm use BN_MOMENTUM (not 0.999, which lags in short runs); the
    small CPU backbone has no BatchNorm, so inference computes what training did."""
    from recon_tf.coeffs import CoeffLayout
    from recon_tf.nets.rnet import BN_MOMENTUM, backbone, build_rnet

    layout = CoeffLayout(id_dim=4, exp_dim=3, tex_dim=2)
    small = build_rnet("small", layout, 64)
    assert not [layer for layer in backbone(small).layers
                if isinstance(layer, tf.keras.layers.BatchNormalization)]
    head = small.get_layer("coeffs")
    head.kernel.assign(tf.random.normal(head.kernel.shape))
    images = tf.random.uniform([4, 64, 64, 3])
    out = small(images, training=False).numpy()
    np.testing.assert_allclose(small(images, training=True), out, rtol=1e-5, atol=1e-5)
    assert out.std(axis=0).mean() > 1e-3  # different images, different coefficients
    model = build_rnet("resnet50", layout, 64)
    norms = [layer for layer in backbone(model).layers
             if isinstance(layer, tf.keras.layers.BatchNormalization)]
    assert norms and all(layer.momentum == BN_MOMENTUM for layer in norms)
    assert BN_MOMENTUM <= 0.99
    before = [v.numpy().copy() for v in norms[0].non_trainable_variables]
    model(tf.random.uniform([4, 64, 64, 3]), training=True)
    after = [v.numpy() for v in norms[0].non_trainable_variables]
    moved = max(float(np.abs(a - b).max()) for a, b in zip(after, before))
    assert moved > 0.0
