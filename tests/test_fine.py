"""The fine stage: UV inputs, detailed render, per-photo fine fitting, modules in the loop."""

import numpy as np
import pytest
import tensorflow as tf

from recon_tf.fine import FineStage, build_modules, displacement_error_mm, module_config

UV = 64


@pytest.fixture(scope="module")
def synthetic(face_model):
    """Two synthetic faces (224², truth displacement and albedo maps at UV 64) with their
    true coefficients."""
    from recon_tf.data.synthetic import SyntheticConfig, SyntheticRenderer

    renderer = SyntheticRenderer(face_model, SyntheticConfig(uv_size=UV))
    rendered = renderer.render([renderer.sample(11, i) for i in range(2)])
    images = tf.constant(np.stack([r["image"] for r in rendered]).astype(np.float32) / 255.0)
    skin = tf.constant((np.stack([r["mask"] for r in rendered])[..., None] > 0)
                       .astype(np.float32))
    coeffs = tf.constant(np.stack([r["coeffs"] for r in rendered]))
    truth = np.stack([r["displacement"] for r in rendered])
    albedo_maps = np.stack([r["albedo_map"] for r in rendered])
    return images, skin, coeffs, truth, albedo_maps


@pytest.fixture(scope="module")
def stage(face_model):
    return FineStage(face_model, uv_size=UV)


def test_inputs_line_up_with_the_photo(stage, synthetic):
    images, _, coeffs, *_ = synthetic
    inputs = stage.prepare(coeffs, images)
    vis = inputs.visible.numpy()
    assert 0.2 < vis.mean() < 0.9
    assert inputs.texture.shape == (2, UV, UV, 3) and inputs.increment.shape == (2, UV, UV, 3)
    # With the true coefficients the coarse render explains the photo up to the detail.
    inc = np.abs(inputs.increment.numpy()).sum() / (vis.sum() * 3)
    assert inc < 0.05
    # A wrong pose makes the increment image much larger.
    wrong = coeffs.numpy().copy()
    wrong[:, stage.face_model.layout.offsets["angles"][0] + 1] += 0.15
    bad = stage.prepare(tf.constant(wrong), images)
    assert np.abs(bad.increment.numpy()).sum() / (bad.visible.numpy().sum() * 3) > 1.5 * inc
    assert inputs.coarse_albedo.numpy().min() >= 0 and inputs.coarse_albedo.numpy().max() <= 1
    inside = np.broadcast_to(inputs.uv_mask.numpy()[..., 0] > 0, (2, UV, UV))
    norms = np.linalg.norm(inputs.normal_map.numpy(), axis=-1)[inside]
    np.testing.assert_allclose(norms[norms > 0], 1.0, atol=1e-3)


def test_render_without_detail_matches_the_coarse_render(stage, synthetic):
    images, _, coeffs, *_ = synthetic
    inputs = stage.prepare(coeffs, images)
    out = stage.render(inputs, inputs.coarse_albedo, tf.zeros_like(inputs.visible))
    coarse = stage.coarse
    params = coarse.split(coeffs)
    camera = coarse.camera(224)
    _, cam_v, normals, _, _ = coarse.geometry(params, camera)
    rendered, covered = coarse.render_front(params, camera, cam_v, normals)
    m = (covered * inputs.front).numpy()[..., 0] > 0.5
    diff = np.abs(out.image.numpy() - rendered.numpy())[m]
    assert np.median(diff) < 0.01  # per-pixel vs per-vertex shading of the same face


def test_fine_fitting_lowers_the_loss_and_stays_where_visible(stage, synthetic):
    images, skin, coeffs, truth, _ = synthetic
    inputs = stage.prepare(coeffs, images)
    zero = stage.render(inputs, inputs.coarse_albedo, tf.zeros_like(inputs.visible))
    before = stage.terms(inputs, zero, images, skin)
    out, after = stage.fit(inputs, images, skin, steps=40)
    assert np.all(after["total"] < before["total"].numpy())
    assert np.all(after["pho"] < before["pho"].numpy())
    from recon_tf.fine import FIT_MIN_FACING

    visible = inputs.visible.numpy() > 0.5
    grazing = visible & (inputs.facing.numpy() < FIT_MIN_FACING)  # many texels per pixel
    assert grazing.any() and np.abs(out.displacement.numpy()[grazing]).max() == 0.0
    _check_mirror_fill(stage, out.displacement.numpy(), visible,
                       visible & ~grazing)  # unseen texels: the mirror's D or 0
    assert np.abs(out.displacement.numpy()).max() > 0.0
    _, corr = displacement_error_mm(out.displacement.numpy(), truth,
                                    inputs.visible.numpy() > 0.5)
    assert corr > 0.0  # fitted wrinkles where the true ones are
    only_albedo, _ = stage.fit(inputs, images, skin, steps=5, use_displacement=False)
    assert np.abs(only_albedo.displacement.numpy()).max() == 0.0


def test_occluded_pixels_are_not_seen_and_keep_the_coarse_maps(stage, synthetic):
    """An occluder over the whole lower half of both crops (a face mask's place): its
    texels count as not visible, the unwrapped texture is 0 there, and the fitted maps
    keep the coarse albedo and D = 0 there where their mirror texels are not seen
    either (elsewhere they take the mirror's detail, as any unseen texel does)."""
    images, skin, coeffs, *_ = synthetic
    occluded = np.zeros(images.shape[:3] + (1,), np.float32)
    occluded[:, 130:] = 1.0
    plain = stage.prepare(coeffs, images)
    inputs = stage.prepare(coeffs, images, tf.constant(occluded))
    lost = (plain.visible.numpy() > 0.5) & (inputs.visible.numpy() < 0.5)
    assert lost.sum() > 0.2 * (plain.visible.numpy() > 0.5).sum()  # the lower face
    assert np.all(inputs.visible.numpy() <= plain.visible.numpy())
    texture = inputs.texture.numpy()
    assert np.abs(texture[np.broadcast_to(lost, texture.shape)]).max() == 0.0
    out, _ = stage.fit(inputs, images, skin * (1.0 - occluded), steps=10)
    albedo, coarse = out.albedo_map.numpy(), inputs.coarse_albedo.numpy() * inputs.uv_mask.numpy()
    index = stage.mirror_index().numpy()
    seen = inputs.visible.numpy()[..., 0].reshape(2, -1) > 0.5
    mirror_seen = np.where(index >= 0, seen[:, np.maximum(index, 0)], False).reshape(lost.shape)
    alone = lost & ~mirror_seen  # neither the texel nor its mirror is seen
    assert alone.sum() > 0.5 * lost.sum()
    np.testing.assert_allclose(albedo[np.broadcast_to(alone, albedo.shape)],
                               coarse[np.broadcast_to(alone, coarse.shape)], atol=1e-6)
    assert np.abs(out.displacement.numpy()[alone]).max() == 0.0
    seen = np.broadcast_to(inputs.visible.numpy() > 0.5, albedo.shape)
    assert np.abs(albedo - coarse)[seen].max() > 0.01  # detail where it is seen


def test_texture_detail_recovers_the_true_albedo_detail(stage, synthetic):
    """The fit's start (texture / irradiance − coarse albedo, high-passed) correlates with
    the true albedo detail on visible skin, is 0 outside the mask, and lowers L_pho."""
    images, skin, coeffs, _, albedo_maps = synthetic
    inputs = stage.prepare(coeffs, images)
    mask = inputs.visible * tf.cast(inputs.facing >= 0.5, tf.float32)
    detail = stage.texture_detail(inputs, mask).numpy()
    assert np.abs(detail[np.broadcast_to(mask.numpy() < 0.5, detail.shape)]).max() == 0.0
    from recon_tf.losses import gaussian_lowpass

    true_detail = (albedo_maps - inputs.coarse_albedo.numpy()) * mask.numpy()
    sigma = stage.weights.alb_blur_sigma * UV / 256
    true_high = true_detail - gaussian_lowpass(tf.constant(true_detail, tf.float32), mask,
                                               sigma).numpy()
    m = np.broadcast_to(mask.numpy() > 0.5, detail.shape)
    corr = np.corrcoef(detail[m], true_high[m])[0, 1]
    assert corr > 0.2  # ≈ 0.3: the wrinkles' shading also lands in it until the fit moves it
    zero = stage.render(inputs, inputs.coarse_albedo, tf.zeros_like(inputs.visible))
    start = stage.render(inputs, tf.clip_by_value(inputs.coarse_albedo + detail, 0.0, 1.0)
                         * inputs.uv_mask, tf.zeros_like(inputs.visible))
    assert np.all(stage.terms(inputs, start, images, skin)["pho"].numpy()
                  < stage.terms(inputs, zero, images, skin)["pho"].numpy())


def test_modules_train_in_the_loop(face_model, synthetic):
    """Gradients of the photometric term reach both modules and point downhill (the L1
    priors of Eq. 12-13 have a kink at the zero start, so they are left out here)."""
    from recon_tf.losses import FineLossWeights

    stage = FineStage(face_model, uv_size=UV,
                      weights=FineLossWeights(alb_weight=0.0, smo_weight=0.0))
    images, skin, coeffs, *_ = synthetic
    config = module_config(UV, True, True, True, False, "uv", 8, 3)
    albedo, disp = build_modules(config)
    inputs = stage.prepare(coeffs, images)
    variables = albedo.trainable_variables + disp.trainable_variables

    def loss():
        a, d = stage.predict(inputs, albedo, disp, training=True)
        return tf.reduce_mean(stage.terms(inputs, stage.render(inputs, a, d), images,
                                          skin)["total"])

    for _ in range(2):  # the zero-initialised heads pass gradient back from step 2 on
        with tf.GradientTape() as tape:
            before = loss()
        grads = tape.gradient(before, variables)
        norm = tf.linalg.global_norm(grads)
        assert float(norm) > 0
        for v, g in zip(variables, grads):
            if g is not None:
                v.assign_sub(1e-4 * g / norm)
        assert float(loss()) < float(before)
    nonzero = [g is not None and float(tf.reduce_max(tf.abs(g))) > 0 for g in grads]
    split = len(albedo.trainable_variables)
    # beyond the heads (kernel + bias), the encoders and decoders of both modules learn
    assert sum(nonzero[:split]) > 4 and sum(nonzero[split:]) > 4
    a, d = stage.predict(inputs, albedo, disp)
    assert np.abs(d.numpy()).max() > 0.0
    visible = inputs.visible.numpy() > 0.5
    _check_mirror_fill(stage, d.numpy(), visible, visible)  # unseen: the mirror's D or 0
    coarse = (inputs.coarse_albedo * inputs.uv_mask).numpy()
    _check_mirror_fill(stage, a.numpy() - coarse, visible, visible)  # and its albedo detail


def _check_mirror_fill(stage, maps, visible, source):
    """Texels the camera does not see hold their mirror texel's value where that one is
    in ``source``, and 0 elsewhere (maps float [B, U, U, C]; masks bool [B, U, U, 1])."""
    index = stage.mirror_index().numpy()
    has = index >= 0
    batch = maps.shape[0]
    flat = maps.reshape(batch, -1, maps.shape[-1])
    filled_any = False
    for b in range(batch):
        from_mirror = np.zeros(index.shape, bool)
        from_mirror[has] = source[b].reshape(-1)[index[has]]
        hidden = ~visible[b].reshape(-1) & (stage.layout.mask.numpy().reshape(-1) > 0.5)
        filled = hidden & from_mirror
        filled_any |= bool(filled.any())
        np.testing.assert_allclose(flat[b][filled], flat[b][index[filled]], atol=1e-6)
        assert np.abs(flat[b][hidden & ~from_mirror]).max() <= 1e-6
    assert filled_any  # a turned head hides texels whose mirror is seen


def test_mirror_texels_pair_left_and_right(stage, face_model):
    """Each texel's mirror lies at its mirror image on the mean shape, and the pairing is
    (almost everywhere) its own inverse."""
    from recon_tf.render.uv import attributes_to_uv

    mean = tf.constant(np.asarray(face_model.arrays["mean_shape"], np.float32))
    position = attributes_to_uv(mean[None], stage.layout)[0].numpy().reshape(-1, 3)
    index = stage.mirror_index().numpy()
    inside = stage.layout.mask.numpy().reshape(-1) > 0.5
    assert np.all(index[~inside] == -1)
    has = index >= 0
    assert has.sum() > 0.95 * inside.sum()
    gap = np.linalg.norm(position[index[has]] - position[has] * [-1, 1, 1], axis=1)
    assert np.median(gap) < 1e-3 and gap.max() < 0.1  # dm: exact on ICT's symmetric mean
    assert np.mean(index[index[has]] == np.flatnonzero(has)) > 0.9
    left = has & (position[:, 0] > 0.03)
    assert np.all(position[index[left], 0] < 0)


def test_displacement_error_and_correlation():
    rng = np.random.default_rng(0)
    truth = rng.normal(size=(8, 8, 1)) * 0.01
    mask = np.ones((8, 8, 1), bool)
    err, corr = displacement_error_mm(truth, truth, mask)
    assert err == 0.0 and corr == pytest.approx(1.0)
    err, corr = displacement_error_mm(-truth, truth, mask)
    assert corr == pytest.approx(-1.0)
    assert err == pytest.approx(2 * np.abs(truth).mean() * 100.0)


def test_fine_fit_stops_at_a_nan_with_the_last_good_maps(stage, synthetic):
    images, skin, coeffs, *_ = synthetic
    bad = images.numpy().copy()
    inputs = stage.prepare(coeffs, images)
    ys, xs = np.nonzero(skin.numpy()[0, ..., 0] * inputs.front.numpy()[0, ..., 0])
    bad[0, ys[len(ys) // 2], xs[len(xs) // 2]] = np.nan  # one NaN pixel on the face: L_pho = NaN
    out, _ = stage.fit(inputs, tf.constant(bad), skin, steps=5, init_from_texture=False)
    for t in out:
        assert np.all(np.isfinite(t.numpy()))
    assert np.abs(out.displacement.numpy()).max() == 0.0  # the maps before the NaN step


def test_a_failed_fine_stage_keeps_the_coarse_maps_for_that_face(stage, synthetic, monkeypatch):
    from types import SimpleNamespace

    from recon_tf.photo_fine import FineSettings, fine_details

    images, skin, coeffs, *_ = synthetic
    faces = [SimpleNamespace(crop=(images.numpy()[i] * 255).astype(np.uint8),
                             fine_mask=(skin.numpy()[i, ..., 0] * 255).astype(np.uint8))
             for i in range(2)]
    recon = SimpleNamespace(fine=FineSettings(stage, steps=3))
    fitted, terms = fine_details(recon, faces, coeffs.numpy())
    assert np.all(terms["fell_back"] == 0) and np.abs(fitted.displacement.numpy()).max() > 0

    real_fit = stage.fit

    def nan_for_the_second(*args, **kwargs):
        out, fit_terms = real_fit(*args, **kwargs)
        disp = out.displacement.numpy().copy()
        disp[1] = np.nan
        return out._replace(displacement=tf.constant(disp)), fit_terms

    monkeypatch.setattr(stage, "fit", nan_for_the_second)
    out, terms = fine_details(recon, faces, coeffs.numpy())
    np.testing.assert_array_equal(terms["fell_back"], [0, 1])
    np.testing.assert_allclose(out.displacement.numpy()[0], fitted.displacement.numpy()[0])
    assert np.abs(out.displacement.numpy()[1]).max() == 0.0
    inputs = stage.prepare(coeffs, images)
    np.testing.assert_allclose(out.albedo_map.numpy()[1],
                               (inputs.coarse_albedo * inputs.uv_mask).numpy()[1])
    assert np.all(np.isfinite(terms["total"]))

    def raises(*args, **kwargs):
        raise tf.errors.InvalidArgumentError(None, None, "indices do not index into params")

    monkeypatch.setattr(stage, "fit", raises)
    out, terms = fine_details(recon, faces, coeffs.numpy())
    np.testing.assert_array_equal(terms["fell_back"], [1, 1])
    assert np.abs(out.displacement.numpy()).max() == 0.0


def test_fine_fitting_of_a_noisy_photo_keeps_the_grain_out_of_the_albedo(face_model):
    """The main job's fine fit reads a noisy crop through the Wiener filter at its own
    measured noise (recon_tf.denoise): its albedo map is then closer to the truth than
    a fit to the raw noisy pixels, whose albedo takes the grain (UV 128², where a
    texel is about a pixel, as at the main job's 256²)."""
    from types import SimpleNamespace

    from recon_tf.data.synthetic import SyntheticConfig, SyntheticRenderer
    from recon_tf.photo_fine import FineSettings, fine_details

    renderer = SyntheticRenderer(face_model, SyntheticConfig(uv_size=128))
    rendered = renderer.render([renderer.sample(11, 0)])
    coeffs = np.stack([r["coeffs"] for r in rendered])
    noisy = np.clip(rendered[0]["image"] / 255.0
                    + np.random.default_rng(5).normal(0, 0.03, rendered[0]["image"].shape), 0, 1)
    faces = [SimpleNamespace(crop=np.round(noisy * 255).astype(np.uint8),
                             fine_mask=(rendered[0]["mask"] > 0).astype(np.uint8) * 255)]
    stage = FineStage(face_model, uv_size=128)
    inputs = stage.prepare(tf.constant(coeffs), tf.constant(noisy[None].astype(np.float32)))
    scored = (inputs.visible.numpy()[0, ..., 0] > 0.5) & (inputs.facing.numpy()[0, ..., 0] >= 0.5)
    errors = {}
    for denoise in (True, False):
        recon = SimpleNamespace(fine=FineSettings(stage, steps=40, denoise=denoise))
        out, terms = fine_details(recon, faces, coeffs)
        errors[denoise] = np.abs(out.albedo_map.numpy()[0] - rendered[0]["albedo_map"]).mean(
            -1)[scored].mean()
        assert ("noise_sigma" in terms) == denoise
        if denoise:  # measured on the crop's skin, in 0–255 units
            np.testing.assert_allclose(terms["noise_sigma"], [0.03 * 255], rtol=0.15)
    assert errors[True] < 0.8 * errors[False], errors
