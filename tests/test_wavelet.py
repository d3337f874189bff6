"""Haar wavelet (§3.4.1): exactness, band conventions, layer and encoder."""

import numpy as np
import pytest
import tensorflow as tf

from recon_tf import wavelet
from recon_tf.wavelet import HaarWavelet, haar_dwt, haar_idwt, wavelet_features

L = np.array([1.0, 1.0]) / np.sqrt(2.0)
H = np.array([-1.0, 1.0]) / np.sqrt(2.0)


def _energies(x: np.ndarray) -> dict:
    bands = haar_dwt(tf.constant(x, tf.float32))
    return {name: float(np.sum(np.square(band.numpy())))
            for name, band in zip(("ll", "lh", "hl", "hh"), bands)}


def _pattern(kind: str, size: int = 8, channels: int = 2) -> np.ndarray:
    i, j = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    values = {"rows": (-1.0) ** i, "cols": (-1.0) ** j, "checker": (-1.0) ** (i + j),
              "constant": np.full((size, size), 0.7)}[kind]
    return np.repeat(values[None, ..., None], channels, axis=-1).astype(np.float32)


def test_inverse_is_exact_and_energy_preserved():
    x = np.random.default_rng(0).uniform(-1, 1, (2, 8, 12, 5)).astype(np.float32)
    bands = haar_dwt(tf.constant(x))
    for band in bands:
        assert band.shape == (2, 4, 6, 5) and band.dtype == tf.float32
    np.testing.assert_allclose(haar_idwt(bands).numpy(), x, atol=1e-5)
    np.testing.assert_allclose(sum(_energies(x).values()), np.sum(x.astype(np.float64) ** 2),
                               rtol=1e-5)


@pytest.mark.parametrize("kind, band", [("rows", "lh"), ("cols", "hl"), ("checker", "hh"),
                                        ("constant", "ll")])
def test_patterns_land_in_their_band(kind, band):
    x = _pattern(kind)
    energies = _energies(x)
    total = float(np.sum(x.astype(np.float64) ** 2))
    np.testing.assert_allclose(energies[band], total, rtol=1e-5)
    for other, e in energies.items():
        if other != band:
            assert e < 1e-8 * total, (kind, other, e)


def test_horizontal_edge_is_lh_with_sign():
    x = np.zeros((1, 4, 4, 1), np.float32)
    x[:, 1::2] = 1.0  # each block: top row 0, bottom row 1 (brighter going down)
    bands = haar_dwt(tf.constant(x))
    np.testing.assert_allclose(bands.lh.numpy(), 1.0, atol=1e-6)
    np.testing.assert_allclose(bands.hl.numpy(), 0.0, atol=1e-6)


def test_block_values_match_hand_computation():
    block = np.array([[1.0, 2.0], [3.0, 7.0]])  # [[a, b], [c, d]]: rows y, columns x
    bands = haar_dwt(tf.constant(block[None, :, :, None], tf.float32))
    got = {name: float(t.numpy().squeeze()) for name, t in bands._asdict().items()}
    # Band PQ: P along x (columns), Q along y (rows): kernel[r, s] = Q[r] * P[s].
    kernels = {"ll": np.outer(L, L), "lh": np.outer(H, L), "hl": np.outer(L, H),
               "hh": np.outer(H, H)}
    by_hand = {"ll": (1 + 2 + 3 + 7) / 2, "lh": (3 + 7 - 1 - 2) / 2, "hl": (2 + 7 - 1 - 3) / 2,
               "hh": (1 - 2 - 3 + 7) / 2}
    for name, kernel in kernels.items():
        assert got[name] == pytest.approx(by_hand[name], abs=1e-6), name
        assert got[name] == pytest.approx(float(np.sum(kernel * block)), abs=1e-6), name


def test_wavelet_features_channels_and_order():
    x = tf.random.uniform((2, 6, 4, 3), seed=1)
    bands = haar_dwt(x)
    high = wavelet_features(x)
    full = wavelet_features(x, include_ll=True)
    assert high.shape == (2, 3, 2, 9) and full.shape == (2, 3, 2, 12)
    np.testing.assert_array_equal(high.numpy(), tf.concat(bands[1:], -1).numpy())
    np.testing.assert_array_equal(full.numpy(), tf.concat(bands, -1).numpy())


def test_odd_sizes_raise():
    with pytest.raises(ValueError, match="even"):
        haar_dwt(tf.zeros((1, 5, 4, 3)))
    with pytest.raises(ValueError, match="even"):
        wavelet_features(tf.zeros((1, 4, 7, 1)))
    with pytest.raises(ValueError, match="even"):
        HaarWavelet()(tf.keras.Input((9, 8, 3)))
    with pytest.raises(ValueError):
        wavelet.build_wavelet_encoder(36, depth=3)
    dynamic = tf.function(haar_dwt, input_signature=[tf.TensorSpec([None, None, None, 3])])
    with pytest.raises(tf.errors.InvalidArgumentError, match="even"):
        dynamic(tf.zeros((1, 6, 5, 3)))
    assert dynamic(tf.zeros((1, 6, 4, 3))).hh.shape == (1, 3, 2, 3)


def test_gradients_flow_through_layer():
    layer = HaarWavelet(include_ll=True)
    x = tf.Variable(tf.random.uniform((2, 8, 8, 3), seed=2))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(layer(x)) * tf.range(12, dtype=tf.float32))
    grad = tape.gradient(loss, x)
    assert grad is not None
    assert np.all(np.isfinite(grad.numpy())) and np.any(grad.numpy() != 0)


def test_layer_config_round_trip():
    layer = HaarWavelet(include_ll=True, name="haar_x")
    config = layer.get_config()
    clone = HaarWavelet.from_config(config)
    assert clone.include_ll and clone.name == "haar_x"
    restored = tf.keras.layers.deserialize(tf.keras.layers.serialize(layer))
    assert isinstance(restored, HaarWavelet) and restored.include_ll
    x = tf.random.uniform((1, 4, 4, 2), seed=3)
    np.testing.assert_array_equal(restored(x).numpy(), layer(x).numpy())


@pytest.mark.parametrize("use_wavelet", [True, False])
@pytest.mark.parametrize("include_ll", [False, True])
def test_encoder_shapes(use_wavelet, include_ll):
    encoder = wavelet.build_wavelet_encoder(32, channels=3, include_ll=include_ll,
                                            use_wavelet=use_wavelet, base_filters=8, depth=4)
    outputs = encoder(tf.random.uniform((2, 32, 32, 3), seed=4))
    expected = [(2, 16, 16, 8), (2, 8, 8, 16), (2, 4, 4, 32), (2, 2, 2, 32)]
    assert [tuple(o.shape) for o in outputs] == expected
    names = {layer.name for layer in encoder.layers}
    first = encoder.get_layer("haar" if use_wavelet else "learned_downsample")
    assert ("haar" in names) == use_wavelet and ("learned_downsample" in names) != use_wavelet
    assert first.output.shape == (None, 16, 16, 12 if include_ll else 9)
    assert len(first.trainable_weights) == (0 if use_wavelet else 2)
