"""Fine-stage albedo and displacement modules (§3.4.2-3.4.3)."""

import numpy as np
import pytest
import tensorflow as tf

from recon_tf.nets.albedo_module import build_albedo_module
from recon_tf.nets.displacement_module import build_displacement_module

U, BASE, DEPTH = 32, 8, 3


def _inputs(kind: str, batch: int = 2, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    texture = rng.uniform(0, 1, (batch, U, U, 3)).astype(np.float32)
    if kind == "albedo":
        return {"coarse_albedo": rng.uniform(0, 1, (batch, U, U, 3)).astype(np.float32),
                "texture": texture}
    return {"increment": rng.uniform(-1, 1, (batch, U, U, 3)).astype(np.float32),
            "texture": texture}


def _build(kind: str, **kwargs) -> tf.keras.Model:
    build = build_albedo_module if kind == "albedo" else build_displacement_module
    return build(uv_size=U, base_filters=BASE, depth=DEPTH, **kwargs)


def _randomize_head(model: tf.keras.Model, scale: float, seed: int = 1) -> None:
    head = model.get_layer("residual" if model.name == "albedo_module" else "displacement_raw")
    rng = np.random.default_rng(seed)
    head.set_weights([rng.normal(0, scale, w.shape).astype(np.float32)
                      for w in head.get_weights()])


@pytest.mark.parametrize("use_wavelet", [True, False])
def test_albedo_untrained_is_identity(use_wavelet):
    model = _build("albedo", use_wavelet=use_wavelet)
    x = _inputs("albedo")
    out = model(x)
    assert out.shape == (2, U, U, 3) and out.dtype == tf.float32
    np.testing.assert_array_equal(out.numpy(), x["coarse_albedo"])


@pytest.mark.parametrize("use_wavelet", [True, False])
def test_displacement_untrained_is_zero(use_wavelet):
    model = _build("displacement", use_wavelet=use_wavelet)
    out = model(_inputs("displacement"))
    assert out.shape == (2, U, U, 1) and out.dtype == tf.float32
    np.testing.assert_array_equal(out.numpy(), 0.0)


def test_outputs_stay_in_range():
    albedo = _build("albedo", max_delta=0.5)
    _randomize_head(albedo, 5.0)
    a = albedo(_inputs("albedo")).numpy()
    assert a.min() >= 0.0 and a.max() <= 1.0 and a.min() == 0.0 and a.max() == 1.0
    disp = _build("displacement", max_displacement=0.05)
    _randomize_head(disp, 50.0)
    d = disp(_inputs("displacement")).numpy()
    assert np.abs(d).max() <= 0.05 and np.abs(d).max() > 0.049


def _weights_by_part(model: tf.keras.Model) -> dict:
    encoder = model.get_layer("wavelet_encoder")
    first = "increment_enc0_conv0" if model.name == "displacement_module" else "albedo_enc0_conv0"
    return {"unet": model.get_layer(first).kernel,
            "wavelet_encoder": encoder.get_layer("level1_conv0").kernel,
            "head": model.get_layer("displacement_raw" if model.name == "displacement_module"
                                    else "residual").kernel}


@pytest.mark.parametrize("kind", ["albedo", "displacement"])
def test_training_reaches_both_branches(kind):
    model = _build(kind)
    x = _inputs(kind)
    target = 0.01 if kind == "displacement" else 0.5
    optimizer = tf.keras.optimizers.Adam(1e-3)
    parts = _weights_by_part(model)
    before = {k: v.numpy().copy() for k, v in parts.items()}
    outputs, grads = [model(x).numpy()], []
    for _ in range(2):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x) - target))
        g = tape.gradient(loss, model.trainable_variables)
        assert all(t is not None and np.all(np.isfinite(t.numpy())) for t in g)
        grads.append({v.path: t.numpy() for v, t in zip(model.trainable_variables, g)})
        optimizer.apply_gradients(zip(g, model.trainable_variables))
        outputs.append(model(x).numpy())
    assert np.abs(outputs[1] - outputs[0]).max() > 0
    assert np.abs(grads[0][parts["head"].path]).max() > 0
    for name in ("unet", "wavelet_encoder"):
        var = parts[name]
        assert np.abs(grads[1][var.path]).max() > 0, name
        assert np.abs(var.numpy() - before[name]).max() > 0, name


def test_displacement_fusion_layer_names():
    model = _build("displacement")
    assert [layer.name for layer in model.layers[-3:]] == ["displacement_raw", "tanh", "scale"]
    fuse = model.get_layer("fuse_concat")
    assert fuse.output.shape == (None, U, U, 2 * BASE)


@pytest.mark.parametrize("kind", ["albedo", "displacement"])
def test_save_load_round_trip(kind, tmp_path):
    model = _build(kind, include_ll=True)
    _randomize_head(model, 0.1)
    x = _inputs(kind, seed=3)
    expected = model(x).numpy()
    path = str(tmp_path / f"{kind}.keras")
    model.save(path)
    restored = tf.keras.models.load_model(path)
    np.testing.assert_allclose(restored(x).numpy(), expected, atol=1e-6)
    assert restored.get_layer("wavelet_encoder").get_layer("haar").include_ll


def test_bad_arguments():
    with pytest.raises(ValueError):
        build_albedo_module(uv_size=36, depth=3)
    with pytest.raises(ValueError):
        build_displacement_module(uv_size=32, depth=3, max_displacement=0.0)
