"""The default albedo basis (bfm/albedo.py): plausible faces, regional modes, and no
trade-off between albedo and SH light at frontal pose (per vertex and in the image)."""

import numpy as np
import pytest
import tensorflow as tf

from bfm.albedo import SKIN_ALBEDO, default_albedo_model
from bfm.regions import vertex_areas
from recon_tf.camera import Camera
from recon_tf.lighting import shade
from recon_tf.render.rasterizer import interpolate
from recon_tf.render.renderer import render_mesh

BAND0 = [0, 9, 18]
BAND1 = [1, 2, 3, 10, 11, 12, 19, 20, 21]


def _residual(delta: np.ndarray, jacobian: np.ndarray, weights: np.ndarray) -> float:
    """|r| / |delta| of the weighted least-squares fit of delta [...] by jacobian [K, ...]."""
    sw = np.sqrt(weights)[..., None]
    a = (jacobian * sw[None]).reshape(len(jacobian), -1).T
    b = (delta * sw).reshape(-1)
    x, *_ = np.linalg.lstsq(a, b, rcond=None)
    return float(np.linalg.norm(b - a @ x) / np.linalg.norm(b))


def _light(indices, rng) -> np.ndarray:
    gamma = np.zeros(27)
    gamma[indices] = rng.normal(size=len(indices)) * 0.2
    return gamma


def test_samples_are_plausible_faces(ict_arrays):
    mean, basis = ict_arrays["mean_albedo"], ict_arrays["albedo_basis"]
    assert basis.shape == (80, len(mean), 3)
    rng = np.random.default_rng(0)
    samples = mean[None] + np.einsum("sk,knc->snc", rng.normal(size=(100, 80)), basis)
    assert np.mean((samples >= 0) & (samples <= 1)) > 0.995
    lmk = ict_arrays["lmk68"]
    np.testing.assert_allclose(mean[lmk[30]], SKIN_ALBEDO, atol=0.02)  # nose tip: skin
    lip, brow, cheek = mean[lmk[51]], mean[lmk[19]], mean[lmk[3]]
    assert lip[0] - lip[1] > cheek[0] - cheek[1] + 0.02  # lips redder
    assert brow.sum() < 0.8 * cheek.sum()  # brows darker
    # a region mode stays in its region: the lip redness mode hardly touches the forehead
    lips_mode = basis[1]
    assert np.abs(lips_mode[lmk[51]]).max() > 10 * np.abs(lips_mode[lmk[24]]).max()


def test_light_and_albedo_do_not_trade_off_per_vertex(ict_arrays, face_model):
    mean = ict_arrays["mean_albedo"].astype(np.float64)
    basis = ict_arrays["albedo_basis"].astype(np.float64)
    weights = vertex_areas(ict_arrays["mean_shape"], ict_arrays["triangles"]) * ict_arrays[
        "front_mask"]
    normals = face_model.vertex_normals(face_model.mean_shape[None])

    def colours(albedo, light):
        return shade(tf.constant(albedo[None], tf.float32), normals,
                     tf.constant(light[None], tf.float32)).numpy()[0].astype(np.float64)

    base = colours(mean, np.zeros(27))
    albedo_jac = np.stack([colours(mean + b, np.zeros(27)) - base for b in basis])
    rng = np.random.default_rng(1)
    for band in (BAND0, BAND1):
        delta = colours(mean, _light(band, rng)) - base
        assert _residual(delta, albedo_jac, weights) > 0.999
    light_jac = np.stack([colours(mean, 0.1 * np.eye(27)[k]) - base for k in range(27)])
    delta = colours(mean + np.einsum("k,knc->nc", rng.normal(size=80), basis), np.zeros(27))
    assert _residual(delta - base, light_jac, weights) > 0.999
    # the check can fail: a global colour mode (the old basis had three) absorbs band-0 light
    red = np.zeros_like(mean)
    red[:, 0] = 0.05 * mean[:, 0]
    with_global = np.concatenate([albedo_jac, [colours(mean + red, np.zeros(27)) - base]])
    gamma = np.zeros(27)
    gamma[0] = 0.2  # red ambient light
    assert _residual(colours(mean, gamma) - base, with_global, weights) < 0.01


def test_light_and_albedo_do_not_trade_off_in_the_rendered_image(ict_arrays, face_model):
    mean, basis = ict_arrays["mean_albedo"], ict_arrays["albedo_basis"]
    camera = Camera.deep3d(160)

    def render(albedos, lights):
        b = len(albedos)
        r = render_mesh(face_model, tf.tile(face_model.mean_shape[None], [b, 1, 1]),
                        tf.constant(np.asarray(albedos, np.float32)), tf.zeros([b, 3]),
                        tf.zeros([b, 3]), tf.constant(np.asarray(lights, np.float32)), camera)
        return r.image.numpy().astype(np.float64), r

    images, r = render(np.concatenate([mean[None], mean[None] + basis]), np.zeros((81, 27)))
    front = interpolate(face_model.front_mask[None, :, None], face_model.triangles,
                        r.triangle_ids[:1], r.barycentrics[:1]).numpy()[0, ..., 0]
    base, albedo_jac = images[0], images[1:] - images[:1]
    rng = np.random.default_rng(2)
    lights = np.stack([_light(BAND0, rng), _light(BAND1, rng)])
    lit, _ = render(np.repeat(mean[None], 2, 0), lights)
    for image in lit:
        assert _residual(image - base, albedo_jac, front) > 0.97
    light_jac, _ = render(np.repeat(mean[None], 27, 0), 0.1 * np.eye(27))
    coloured, _ = render(mean[None] + np.einsum("k,knc->nc", rng.normal(size=80), basis)[None],
                         np.zeros((1, 27)))
    assert _residual(coloured[0] - base, light_jac - base, front) > 0.95


def test_default_albedo_model_rejects_bad_mode_counts(ict_arrays):
    args = (ict_arrays["mean_shape"], ict_arrays["triangles"], ict_arrays["lmk68"],
            ict_arrays["front_mask"])
    with pytest.raises(ValueError, match="num_modes"):
        default_albedo_model(*args, num_modes=0)
    mean, basis = default_albedo_model(*args, num_modes=5)  # region modes only
    assert basis.shape == (5, len(mean), 3)
    np.testing.assert_allclose(basis, ict_arrays["albedo_basis"][:5], atol=1e-6)
