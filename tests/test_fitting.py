"""Per-photo fitting on synthetic faces with known truth (batched, from the mean face)."""

import numpy as np
import pytest
import tensorflow as tf

from recon_tf.camera import Camera
from recon_tf.fit_data import YAW_PRIOR_GAIN, FitSchedule, make_fit_data
from recon_tf.fitting import Fitter
from recon_tf.landmarks import ContourLandmarks
from recon_tf.losses import CoarseLossWeights
from recon_tf.render.renderer import render_face


def _truth(face_model, batch=2, seed=0):
    lay = face_model.layout
    rng = np.random.default_rng(seed)
    c = np.zeros((batch, lay.total), np.float32)
    o = lay.offsets
    c[:, slice(*o["identity"])] = rng.normal(scale=0.8, size=(batch, lay.id_dim))
    exp = np.zeros((batch, lay.exp_dim))
    exp[:, :3] = rng.uniform(0.1, 0.5, size=(batch, 3))
    c[:, slice(*o["expression"])] = exp
    c[:, slice(*o["albedo"])] = rng.normal(scale=0.5, size=(batch, lay.tex_dim))
    c[:, slice(*o["angles"])] = [[0.1, 0.35, 0.05], [-0.1, -0.2, 0.0]][:batch]
    c[:, slice(*o["translation"])] = [[0.05, -0.05, 0.2], [0.0, 0.05, -0.2]][:batch]
    c[:, o["light"][0] + 1:o["light"][0] + 4] = 0.15
    return c


def _observe(face_model, coeffs, size=112):
    camera = Camera.deep3d(size)
    r = render_face(face_model, tf.constant(coeffs), camera)
    contour = ContourLandmarks.for_model(face_model)
    ids = contour.vertex_ids(r.vertices, r.normals, tf.constant([0.0, 0.0, 10.0]))
    lmk = tf.gather(r.screen, ids, batch_dims=1).numpy()
    image = (r.image * r.mask + (1 - r.mask) * 0.3).numpy()
    return make_fit_data(image, lmk, r.mask.numpy())


def _vertex_error(face_model, a, b):
    va, _ = face_model.compute(tf.constant(a))
    vb, _ = face_model.compute(tf.constant(b))
    out = []
    for x, y in zip(va.numpy(), vb.numpy()):
        x, y = x - x.mean(0), y - y.mean(0)
        u, _, vt = np.linalg.svd(x.T @ y)
        out.append(np.linalg.norm(x @ (u @ vt) - y, axis=1).mean() * 100)
    return np.array(out)


FAST = FitSchedule(pose_steps=20, landmark_steps=60, photo_scales=(64, 112),
                   photo_steps=(30, 15))


@pytest.fixture(scope="module")
def fitted(face_model):
    truth = _truth(face_model)
    data = _observe(face_model, truth)
    fitter = Fitter(face_model, CoarseLossWeights.for_model(face_model, id_weight=0.0), FAST,
                    image_size=112)
    before = fitter.evaluate(fitter.split(face_model.layout.zeros(2)), data)
    return truth, data, fitter, fitter.fit(data), before


def test_fit_lowers_every_data_term_and_moves_towards_the_truth(face_model, fitted):
    truth, _, _, result, before = fitted
    assert result.coeffs.shape == truth.shape
    assert np.all(result.terms["lmk"] < 0.1 * before["lmk"].numpy())
    assert np.all(result.terms["pho"] < 0.5 * before["pho"].numpy())
    err_fit = _vertex_error(face_model, result.coeffs, truth)
    err_mean = _vertex_error(face_model, np.zeros_like(truth), truth)
    assert np.all(err_fit < 0.8 * err_mean), (err_fit, err_mean)
    lay = face_model.layout
    angles = slice(*lay.offsets["angles"])
    np.testing.assert_allclose(result.coeffs[:, angles], truth[:, angles], atol=0.06)
    assert [h[0] for h in result.history][0] == "pose"
    assert set(result.seconds) == {"landmarks", "linear", "photometric"}


def test_fit_respects_blendshape_bounds(face_model, fitted):
    _, _, fitter, result, _ = fitted
    if fitter.exp_bounds is None:
        pytest.skip("face model without expression bounds")
    exp = face_model.layout.split(result.coeffs).expression.numpy()
    assert exp.min() >= fitter.exp_bounds[:, 0].min() - 1e-6
    assert exp.max() <= fitter.exp_bounds[:, 1].max() + 1e-6


def test_fit_from_the_truth_stays_there(face_model, fitted):
    truth, data, fitter, _, _ = fitted
    short = Fitter(face_model, fitter.weights, FitSchedule(
        pose_steps=0, landmark_steps=10, linear_rounds=0, photo_scales=(112,),
        photo_steps=(10,)), image_size=112)
    result = short.fit(data, init=truth)
    assert np.all(_vertex_error(face_model, result.coeffs, truth) < 1.0)


def test_batched_faces_do_not_interact(face_model, fitted):
    truth, data, fitter, result, _ = fitted
    single = fitter.fit(make_fit_data(data.images[:1], data.landmarks[:1], data.skin_mask[:1]))
    # Alone or beside another face, the fit reaches the same surface (to well under a mm).
    # Rounding alone moves it a little: the batch size changes TensorFlow's reduction
    # order, and on an AVX-512 machine this gap was 0.30 mm with oneDNN, 0.21 mm without.
    assert _vertex_error(face_model, single.coeffs, result.coeffs[:1])[0] < 0.5


def test_reweighting_discounts_an_outlying_detection(face_model, fitted):
    truth, data, fitter, _, _ = fitted
    moved = data.landmarks.numpy().copy()
    moved[0, 40] += [15.0, 0.0]  # 15 px at 112 px = 30 px in a 224 crop
    reweighted = fitter.reweight(fitter.split(truth), data._replace(landmarks=moved), 5.0)
    ratio = (reweighted.landmark_weights / data.landmark_weights).numpy()
    assert ratio[0, 40] < 0.05
    assert np.median(ratio) > 0.9


def test_reweighting_discounts_an_outlying_dense_point_when_asked(face_model):
    """robust_dense: a FaceMesh point far from the fitted face's vertex counts less;
    the others keep their weight; without it the dense weights are untouched."""
    from recon_tf.dense_landmarks import DenseCorrespondence

    truth = _truth(face_model, batch=1)
    ids = np.arange(0, 4000, 40).astype(np.int32)
    corr = DenseCorrespondence(ids, np.ones(len(ids), np.float32),
                               np.zeros(len(ids), np.float32), face_model.name)
    weights = CoarseLossWeights.for_model(face_model, id_weight=0.0, dense_lmk_weight=1e-3)
    fitter = Fitter(face_model, weights, FAST, dense=corr, image_size=112)
    _, _, _, screen, _ = fitter.geometry(fitter.split(truth), fitter.camera(112))
    dense = corr.project(screen).numpy()
    dense[0, 7] += [15.0, 0.0]
    data = _observe(face_model, truth)._replace(dense=tf.constant(dense),
                                                 dense_weights=tf.ones(dense.shape[:2]))
    kept = fitter.reweight(fitter.split(truth), data, 5.0).dense_weights.numpy()
    np.testing.assert_array_equal(kept, 1.0)
    ratio = fitter.reweight(fitter.split(truth), data, 5.0, dense=True).dense_weights.numpy()
    assert ratio[0, 7] < 0.05
    assert np.delete(ratio[0], 7).min() > 0.99


def test_a_head_lying_on_its_side_starts_and_ends_at_its_roll(face_model):
    """The default start takes the roll from the observed eye line (the crops keep the
    photo's in-plane rotation); from it, the pose and landmark stages fit a face
    rolled by 90° (either way) to its true pose."""
    truth = _truth(face_model)
    roll = face_model.layout.offsets["angles"][0] + 2
    truth[:, roll] = [np.pi / 2, -np.pi / 2]
    data = _observe(face_model, truth)
    fitter = Fitter(face_model, CoarseLossWeights.for_model(face_model, id_weight=0.0),
                    FitSchedule(pose_steps=20, landmark_steps=60, photo_scales=(),
                                photo_steps=()), image_size=112)
    start = fitter.mean_face_start(data)
    np.testing.assert_allclose(start[:, roll], truth[:, roll], atol=0.15)
    assert np.count_nonzero(start) == 2  # the mean face, facing the camera, but rolled
    blind = data._replace(landmarks=np.full_like(data.landmarks, np.nan))
    assert not np.any(fitter.mean_face_start(blind))  # no eye line: upright, not NaN
    result = fitter.fit(data)
    angles = slice(*face_model.layout.offsets["angles"])
    np.testing.assert_allclose(result.coeffs[:, angles], truth[:, angles], atol=0.1)


def test_the_pose_stage_restarts_at_other_yaws_and_keeps_the_best(face_model):
    """From the mean face alone, the pose stage's steps cannot turn a head by 50°; with
    the default yaw starts each face keeps the start that fits it best: the turned
    face reaches its yaw, and the near-frontal one keeps exactly the single start's pose."""
    truth = _truth(face_model)
    yaw = face_model.layout.offsets["angles"][0] + 1
    truth[:, yaw] = [-np.radians(50.0), np.radians(5.0)]
    data = _observe(face_model, truth)
    fitter = Fitter(face_model, CoarseLossWeights.for_model(face_model, id_weight=0.0),
                    image_size=112)
    poses = {}
    for starts in ((0.0,), FitSchedule().yaw_starts):
        params = fitter.split(fitter.mean_face_start(data))
        fitter.pose_stage(params, data, FitSchedule().pose_steps, starts)
        poses[len(starts)] = {g: params[g].numpy() for g in ("angles", "translation")}
    single, multi = poses[1], poses[len(FitSchedule().yaw_starts)]
    assert len(FitSchedule().yaw_starts) > 1
    assert abs(single["angles"][0, 1] - truth[0, yaw]) > np.radians(20.0)
    assert abs(multi["angles"][0, 1] - truth[0, yaw]) < np.radians(6.0)
    for g in ("angles", "translation"):
        np.testing.assert_array_equal(multi[g][1], single[g][1])


def test_turned_faces_get_a_tighter_shape_prior(face_model):
    """λ_α and λ_β are scaled by 1 + k sin²(yaw) per face after the pose stage; the
    objective's L_reg carries the scale, and a face turned by 1 rad is fitted with a
    smaller identity than with the plain prior (k = 50 here, so that the landmark stages
    alone, on exact landmarks, show it; the default is ``YAW_PRIOR_GAIN`` = 8)."""
    assert FitSchedule().yaw_prior_gain == YAW_PRIOR_GAIN > 0
    lay = face_model.layout
    truth = _truth(face_model)
    yaw = lay.offsets["angles"][0] + 1
    truth[:, yaw] = [0.05, 1.0]
    data = _observe(face_model, truth)
    weights = CoarseLossWeights.for_model(face_model, id_weight=0.0)
    fitter = Fitter(face_model, weights, FAST, image_size=112)
    params = fitter.split(truth)
    tight = Fitter.pose_prior(params, data, 4.0)
    scale = 1.0 + 4.0 * np.sin(truth[:, yaw]) ** 2
    np.testing.assert_allclose(tight.prior_scale.numpy(), scale, rtol=1e-5)
    assert Fitter.pose_prior(params, data, 0.0) is data
    alpha = np.sum(truth[:, slice(*lay.offsets["identity"])] ** 2, axis=1)
    beta = np.sum(truth[:, slice(*lay.offsets["expression"])] ** 2, axis=1)
    extra = (fitter.objective(params, tight, 112, False, False, None)["reg"]
             - fitter.objective(params, data, 112, False, False, None)["reg"]).numpy()
    np.testing.assert_allclose(
        extra, (scale - 1.0) * (weights.alpha_weight * alpha + weights.beta_weight * beta),
        rtol=1e-3)
    norms = {}
    for gain in (0.0, 50.0):
        fitter = Fitter(face_model, weights,
                        FitSchedule(pose_steps=20, landmark_steps=60, photo_scales=(),
                                    photo_steps=(), yaw_prior_gain=gain), image_size=112)
        coeffs = fitter.fit(data).coeffs
        norms[gain] = np.linalg.norm(coeffs[:, slice(*lay.offsets["identity"])], axis=1)
    assert norms[50.0][1] < 0.92 * norms[0.0][1]  # turned: held closer to the mean face


def test_a_shape_prior_scale_holds_that_face_near_the_mean(face_model):
    """FitData.shape_prior_scale multiplies λ_α and λ_β of its face only (the main job's
    prior for faces with unreliable landmarks), also under the pose prior, and that face
    is fitted with a smaller identity and expression; the other face is untouched."""
    lay = face_model.layout
    truth = _truth(face_model)
    base = _observe(face_model, truth)
    scaled = make_fit_data(base.images, base.landmarks, base.skin_mask,
                           shape_prior_scale=np.array([1.0, 100.0], np.float32))
    np.testing.assert_allclose(scaled.prior_scale.numpy(), [1.0, 100.0])
    weights = CoarseLossWeights.for_model(face_model, id_weight=0.0)
    fitter = Fitter(face_model, weights, FAST, image_size=112)
    params = fitter.split(truth)
    turned = Fitter.pose_prior(params, scaled, 4.0)
    pose = 1.0 + 4.0 * np.sin(truth[:, lay.offsets["angles"][0] + 1]) ** 2
    np.testing.assert_allclose(turned.prior_scale.numpy(), pose * [1.0, 100.0], rtol=1e-5)
    ident, expr = slice(*lay.offsets["identity"]), slice(*lay.offsets["expression"])
    extra = (fitter.objective(params, scaled, 112, False, False, None)["reg"]
             - fitter.objective(params, base, 112, False, False, None)["reg"]).numpy()
    expected = 99.0 * (weights.alpha_weight * np.sum(truth[1, ident] ** 2)
                       + weights.beta_weight * np.sum(truth[1, expr] ** 2))
    np.testing.assert_allclose(extra, [0.0, expected], rtol=1e-3, atol=1e-9)
    schedule = FitSchedule(pose_steps=20, landmark_steps=60, photo_scales=(), photo_steps=())
    fitter = Fitter(face_model, weights, schedule, image_size=112)
    plain, held = fitter.fit(base).coeffs, fitter.fit(scaled).coeffs
    np.testing.assert_allclose(held[0], plain[0], atol=1e-5)  # faces do not interact
    assert np.linalg.norm(held[1, ident]) < 0.5 * np.linalg.norm(plain[1, ident])
    assert np.linalg.norm(held[1, expr]) < np.linalg.norm(plain[1, expr])


def test_silhouette_term_pulls_a_face_off_the_background(face_model):
    """With the photo's background known, the silhouette term alone brings a face
    shifted onto the background back over the face: the pose is what it moves."""
    truth = _truth(face_model, batch=1)
    r = render_face(face_model, tf.constant(truth), Camera.deep3d(112))
    background = ((r.mask.numpy()[..., 0] < 0.5) * 255).astype(np.uint8)
    observed = _observe(face_model, truth)
    data = make_fit_data(observed.images, observed.landmarks, observed.skin_mask,
                         background=background)
    only_sil = CoarseLossWeights(pho_weight=0.0, lmk_weight=0.0, id_weight=0.0,
                                 alpha_weight=0.0, beta_weight=0.0, delta_weight=0.0,
                                 gamma_weight=0.0, sil_weight=1.0)
    pose_only = FitSchedule(pose_steps=80, landmark_steps=0, robust_scale_px=0.0,
                            linear_rounds=0, photo_scales=(), photo_steps=())
    fitter = Fitter(face_model, only_sil, pose_only, image_size=112)
    tx = face_model.layout.offsets["translation"][0]
    start = truth.copy()
    start[:, tx] += 0.15  # 15 mm to the side, over the background
    before = fitter.evaluate(fitter.split(start), data)["sil"].numpy()[0]
    result = fitter.fit(data, start)
    assert before > 1.0
    assert result.terms["sil"][0] < 0.05 * before
    assert abs(result.coeffs[0, tx] - truth[0, tx]) < 0.05
    off = make_fit_data(observed.images, observed.landmarks, observed.skin_mask)
    assert fitter.evaluate(fitter.split(start), off)["sil"].numpy()[0] == 0.0


@pytest.mark.parametrize("kind", ["perspective", "orthographic"])
def test_the_face_window_renders_the_pixels_of_the_whole_photo(face_model, kind):
    """PhotoReconstructor.face_window + paste: rendering only the window the front face
    can cover gives the whole-photo render's mask and colours (the main job's
    render_coarse.png / face_mask.png), and the window is much smaller than the photo."""
    from recon_tf.reconstruction import PhotoReconstructor, paste

    fitter = Fitter(face_model, CoarseLossWeights.for_model(face_model, id_weight=0.0),
                    camera_kind=kind)
    recon = PhotoReconstructor(face_model, fitter, None)
    crop_to_photo = [[0.25, 0.0, -60.0], [0.0, 0.25, -20.0]]  # a face of ~900 px
    camera = fitter.camera(224).for_source_image(crop_to_photo, (1200, 1600))
    coeffs = np.zeros((1, face_model.layout.total), np.float32)
    coeffs[0, face_model.layout.offsets["angles"][0] + 1] = 0.5  # turned: an ear shows
    params = fitter.split(coeffs)
    _, cam_v, normals, screen, _ = fitter.geometry(params, camera)
    full, full_covered = fitter.render_front(params, camera, cam_v, normals)
    window, x0, y0 = recon.face_window(camera, screen[0].numpy())
    assert window.image_size[0] * window.image_size[1] < 0.5 * 1200 * 1600
    part, covered = fitter.render_front(params, window, cam_v, normals)
    photo = np.random.default_rng(0).integers(0, 256, (1200, 1600, 3), np.uint8)
    comp, mask = paste(photo, part[0].numpy(), covered[0, ..., 0].numpy() > 0.5, x0, y0)
    whole = full_covered[0, ..., 0].numpy() > 0.5
    assert whole.sum() > 10000 and np.array_equal(mask, whole)
    expected = np.where(whole[..., None], np.clip(full[0].numpy(), 0, 1) * 255 + 0.5, photo)
    assert np.abs(comp.astype(int) - expected.astype(np.uint8).astype(int)).max() <= 1
    assert np.array_equal(comp[~whole], photo[~whole])


def test_the_jaw_slides_along_the_outline_to_the_detected_points():
    """slide_jaw: each jaw point goes to the outline point nearest its target, within
    its window; the residual left is the target's distance from the outline."""
    from recon_tf.landmarks import blend_landmarks

    screen = np.zeros((2, 68, 2), np.float32)
    screen[:, :17, 0] = np.arange(17)  # the outline: the x axis, point k at x = k
    screen[:, 17:] = np.random.default_rng(0).normal(size=(2, 51, 2))
    targets = screen.copy()
    targets[:, :17] += [0.3, 1.0]  # 0.3 along the outline, 1 px off it
    targets[:, 3] = [10.0, 0.5]  # far along: point 3 may reach point 5 at most
    seg, blend = ContourLandmarks.slide_jaw(tf.constant(screen), tf.constant(targets),
                                            active=tf.constant([True, False]))
    points = tf.constant(screen)
    with tf.GradientTape() as tape:
        tape.watch(points)
        slid = blend_landmarks(points, seg, blend)
        one = slid[0, 7, 0]
    expected = screen[0].copy()
    expected[:17, 0] += 0.3
    expected[16, 0] = 16.0  # the outline ends at point 16
    expected[3, 0] = 5.0
    np.testing.assert_allclose(slid[0].numpy(), expected, atol=1e-5)
    np.testing.assert_array_equal(slid[1].numpy(), screen[1])  # inactive row: vertices
    np.testing.assert_array_equal(seg[0, 17:].numpy(), np.arange(17, 68))
    # The gradient reaches the two vertices of the segment, weighted 1 − blend and blend.
    grad = tape.gradient(one, points)[0, :, 0].numpy()
    np.testing.assert_allclose(grad[[7, 8]], [0.7, 0.3], atol=1e-5)
    assert np.count_nonzero(grad) == 2


def test_a_sliding_jaw_fit_ignores_where_along_the_outline_the_points_sit(face_model):
    """With jaw_slide, jaw targets moved along the fitted face's own outline cost no
    landmark error; without it they do."""
    truth = _truth(face_model, batch=1)
    data = _observe(face_model, truth)
    moved = data.landmarks.numpy().copy()
    jaw = moved[0, :17]
    moved[0, 1:16] = jaw[1:16] + 0.4 * (jaw[2:17] - jaw[1:16])  # 40 % towards the next point
    data = data._replace(landmarks=tf.constant(moved))
    weights = CoarseLossWeights.for_model(face_model, id_weight=0.0)
    params = None
    costs = {}
    for slide in (False, True):
        fitter = Fitter(face_model, weights, FAST, image_size=112, jaw_slide=slide)
        params = fitter.split(truth)
        costs[slide] = float(fitter.objective(params, data, 112, False, False, None)["lmk"][0])
    assert costs[True] < 0.05 * costs[False]


def test_a_second_face_the_fit_cannot_place_is_no_face(face_model):
    """photo_faces.false_fits: 68 points that form no face (a real face's points
    shuffled, as PFLD reads a patterned patch FaceMesh took for a face) leave the fitted
    landmark term far above FALSE_FIT_LMK, a real face's far below it (no reweighting,
    which would let a few shuffled points stand for the rest); only a face other than
    the largest, below MTCNN's FALSE_FACE_CONFIDENCE, is then dropped."""
    from recon_tf.photo_faces import FALSE_FACE_CONFIDENCE, FALSE_FIT_LMK, false_fits

    observed = _observe(face_model, _truth(face_model))
    landmarks = observed.landmarks.numpy().copy()
    landmarks[1] = landmarks[1][np.random.default_rng(0).permutation(68)]
    data = make_fit_data(observed.images, landmarks, observed.skin_mask)
    fitter = Fitter(face_model, CoarseLossWeights.for_model(face_model, id_weight=0.0),
                    FitSchedule(photo_scales=(), photo_steps=(), linear_rounds=0,
                                robust_scale_px=0.0), image_size=112)
    lmk = fitter.fit(data).terms["lmk"]
    assert lmk[0] < FALSE_FIT_LMK / 3 < 3 * FALSE_FIT_LMK < lmk[1]
    low = FALSE_FACE_CONFIDENCE - 0.1
    second = [{"face_index": 2, "confidence": low}, {"face_index": 3, "confidence": low}]
    assert false_fits(second, lmk) == [1]
    assert false_fits([{"face_index": 0, "confidence": low}] * 2, lmk) == []  # the largest
    assert false_fits([{"face_index": 2, "confidence": 0.999}] * 2, lmk) == []
