"""Losses of Eq. 6–10: known values, gradients that reach the right coefficients."""

import numpy as np
import pytest
import tensorflow as tf

from recon_tf import losses
from recon_tf.camera import Camera
from recon_tf.landmarks import ContourLandmarks, contour_candidates
from recon_tf.render.renderer import project_landmarks, render_face


def test_photometric_known_value_and_mask():
    image = np.zeros((1, 4, 4, 3), np.float32)
    rendered = np.zeros_like(image)
    rendered[0, 0, 0] = [0.3, 0.4, 0.0]  # norm 0.5
    rendered[0, 1, 1] = [1.0, 0.0, 0.0]  # norm 1, masked out
    mask = np.zeros((1, 4, 4, 1), np.float32)
    mask[0, :2, 0] = 1.0  # two pixels: (0,0) error 0.5, (1,0) error 0
    value = losses.photometric_loss(image, rendered, mask).numpy()
    np.testing.assert_allclose(value, [0.25], atol=1e-4)
    assert losses.photometric_loss(image, rendered, np.zeros_like(mask)).numpy()[0] == 0.0


def test_landmark_known_value_weights_and_scale():
    pred = np.zeros((2, 3, 2), np.float32)
    target = np.zeros_like(pred)
    target[0, 0] = [3.0, 4.0]  # 25 px²
    target[1, 1] = [1.0, 0.0]
    np.testing.assert_allclose(losses.landmark_loss(pred, target).numpy(), [25 / 3, 1 / 3],
                               rtol=1e-6)
    w = np.array([2.0, 0.0, 1.0], np.float32)
    np.testing.assert_allclose(losses.landmark_loss(pred, target, w).numpy(), [50 / 3, 0.0],
                               rtol=1e-6)
    # The same error at half the resolution is twice as many 224-crop pixels.
    np.testing.assert_allclose(losses.landmark_loss(pred, target, image_size=112).numpy(),
                               [100 / 3, 4 / 3], rtol=1e-6)


def test_silhouette_known_value_and_its_gradient_points_back_to_the_face():
    from recon_tf.fit_data import background_distance

    background = np.zeros((20, 20), np.uint8)
    background[:, 10:] = 255  # columns 10-19 are background
    distance = background_distance(background)
    np.testing.assert_allclose(distance[4, 9:14], [0, 1, 2, 3, 4], atol=1e-4)
    outside = tf.constant(distance[None, ..., None])
    # Pixel centres of (4, 12), (4, 5) and (4, 18): 3 px out, inside, 9 px out.
    points = tf.Variable([[[12.5, 4.5], [5.5, 4.5], [18.5, 4.5]]])
    with tf.GradientTape() as tape:
        value = losses.silhouette_loss(points, tf.ones([1, 3]), outside, image_size=224)
    c = losses.SIL_HUBER_PX  # 9 px is beyond it: linear there
    np.testing.assert_allclose(value.numpy(), [(3.0 ** 2 + 0 + 2 * c * 9 - c * c) / 3],
                               rtol=1e-5)
    grad = tape.gradient(value, points).numpy()[0]
    assert grad[0, 0] > 0 and abs(grad[0, 1]) < 1e-6  # descent moves it left, to the face
    np.testing.assert_allclose(grad[1], 0.0)  # inside the face: no pull
    np.testing.assert_allclose(grad[2, 0], 2 * c / 3, rtol=1e-4)  # capped pull
    half = losses.silhouette_loss(points, tf.ones([1, 3]), outside, image_size=448)
    np.testing.assert_allclose(half.numpy(), [(1.5 ** 2 + 0 + 4.5 ** 2) / 3], rtol=1e-5)
    none = losses.silhouette_loss(points, tf.zeros([1, 3]), outside, image_size=224)
    assert none.numpy()[0] == 0.0


def test_identity_is_half_squared_distance_of_unit_features():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2, 4, 16)).astype(np.float32)
    value = losses.identity_loss(a, b).numpy()
    an = a / np.linalg.norm(a, axis=1, keepdims=True)
    bn = b / np.linalg.norm(b, axis=1, keepdims=True)
    np.testing.assert_allclose(value, 0.5 * ((an - bn) ** 2).sum(1), rtol=1e-5)
    np.testing.assert_allclose(losses.identity_loss(a, 3.0 * a).numpy(), 0.0, atol=1e-6)


def test_regularization_known_value(face_model):
    lay = face_model.layout
    coeffs = np.zeros((1, lay.total), np.float32)
    o = lay.offsets
    coeffs[0, o["identity"][0]] = 2.0
    coeffs[0, o["expression"][0]] = 1.0
    coeffs[0, o["albedo"][0]:o["albedo"][0] + 2] = 1.0
    w = losses.CoarseLossWeights(alpha_weight=1.0, beta_weight=10.0, delta_weight=100.0,
                                 gamma_weight=0.0)
    value = losses.regularization_loss(lay.split(coeffs), w).numpy()
    np.testing.assert_allclose(value, [4.0 + 10.0 + 200.0], rtol=1e-6)
    # A per-example λ_α multiplier scales the identity part only.
    scaled = losses.regularization_loss(lay.split(coeffs), w, tf.constant([3.0])).numpy()
    np.testing.assert_allclose(scaled, [3 * 4.0 + 10.0 + 200.0], rtol=1e-6)
    # ... and a per-example λ_β multiplier the expression part only.
    both = losses.regularization_loss(lay.split(coeffs), w, tf.constant([3.0]),
                                      tf.constant([5.0])).numpy()
    np.testing.assert_allclose(both, [3 * 4.0 + 5 * 10.0 + 200.0], rtol=1e-6)
    # White light costs nothing; coloured light does.
    light = np.zeros((1, 27), np.float32)
    light[0, [0, 9, 18]] = 0.5
    assert losses.light_regularization(light).numpy()[0] == 0.0
    light[0, 0] = 1.0
    assert losses.light_regularization(light).numpy()[0] > 0.0


def test_blendshape_models_get_their_own_beta_default(face_model):
    class Bounded:
        exp_bounds = np.zeros((3, 2))

    assert losses.CoarseLossWeights.for_model(Bounded()).beta_weight == \
        losses.BLENDSHAPE_BETA_WEIGHT
    assert losses.CoarseLossWeights.for_model(object()).beta_weight == pytest.approx(2.4e-4)
    assert losses.CoarseLossWeights.for_model(object(), id_weight=0.5).id_weight == 0.5
    assert losses.CoarseLossWeights.for_model(object()).alpha_weight == pytest.approx(3e-4)
    assert losses.CoarseLossWeights.for_model(object(), alpha_weight=None).alpha_weight == \
        pytest.approx(3e-4)  # None = the documented default (unset flag)


def _grad_norms(face_model, loss_fn):
    lay = face_model.layout
    rng = np.random.default_rng(3)
    coeffs = tf.Variable(rng.normal(scale=0.3, size=(1, lay.total)).astype(np.float32))
    with tf.GradientTape() as tape:
        value = tf.reduce_sum(loss_fn(coeffs))
    grad = tape.gradient(value, coeffs).numpy()[0]
    return {k: float(np.abs(grad[a:b]).max()) for k, (a, b) in lay.offsets.items()}


def test_photometric_gradient_reaches_shape_albedo_pose_light(face_model):
    camera = Camera.deep3d(64)
    target = np.full((1, 64, 64, 3), 0.4, np.float32)

    def loss(coeffs):
        r = render_face(face_model, coeffs, camera)
        return losses.photometric_loss(target, r.image, r.mask)

    g = _grad_norms(face_model, loss)
    for group in ("identity", "albedo", "angles", "translation", "light"):
        assert g[group] > 0, group


def test_landmark_gradient_reaches_geometry_not_albedo_or_light(face_model):
    camera = Camera.deep3d(224)
    target = np.full((1, 68, 2), 112.0, np.float32)

    def loss(coeffs):
        return losses.landmark_loss(project_landmarks(face_model, coeffs, camera), target)

    g = _grad_norms(face_model, loss)
    for group in ("identity", "expression", "angles", "translation"):
        assert g[group] > 0, group
    assert g["albedo"] == 0 and g["light"] == 0


def test_regularization_gradient_only_on_alpha_beta_delta(face_model):
    w = losses.CoarseLossWeights(gamma_weight=0.0)
    g = _grad_norms(face_model,
                    lambda c: losses.regularization_loss(face_model.layout.split(c), w))
    assert g["identity"] > 0 and g["expression"] > 0 and g["albedo"] > 0
    assert g["angles"] == 0 and g["translation"] == 0 and g["light"] == 0


def test_photometric_gradient_matches_finite_differences(face_model):
    """d L_pho / d light by autodiff vs central differences (light enters smoothly)."""
    camera = Camera.deep3d(48)
    lay = face_model.layout
    rng = np.random.default_rng(5)
    target = rng.uniform(0.2, 0.8, size=(1, 48, 48, 3)).astype(np.float32)
    base = np.zeros((1, lay.total), np.float32)

    def value(c):
        r = render_face(face_model, tf.constant(c), camera)
        return float(losses.photometric_loss(target, r.image, r.mask)[0])

    c = tf.Variable(base)
    with tf.GradientTape() as tape:
        r = render_face(face_model, c, camera)
        v = losses.photometric_loss(target, r.image, r.mask)[0]
    grad = tape.gradient(v, c).numpy()[0]
    start = lay.offsets["light"][0]
    for k in (start, start + 2, start + 9 + 1):
        e = np.zeros_like(base)
        e[0, k] = 1e-2
        fd = (value(base + e) - value(base - e)) / 2e-2
        assert grad[k] == pytest.approx(fd, rel=2e-2, abs=1e-4)


def test_contour_candidates_start_at_fixed_vertex(face_model):
    ids, valid = contour_candidates(face_model.arrays["mean_shape"], face_model.arrays["lmk68"])
    assert ids.shape[0] == 17
    np.testing.assert_array_equal(ids[:, 0], face_model.arrays["lmk68"][:17])
    assert valid[8].sum() == 1  # the chin is fixed
    assert valid[[2, 14]].sum(axis=1).min() >= 5  # the cheeks have strips
    jaw = face_model.arrays["jawline"]
    assert (jaw >= 0).sum() >= 10 and jaw[8] == -1
    with_jaw, valid_jaw = contour_candidates(face_model.arrays["mean_shape"],
                                             face_model.arrays["lmk68"], jawline=jaw)
    for k in np.nonzero(jaw >= 0)[0]:  # the strip runs back to the jawline vertex
        assert jaw[k] in with_jaw[k][valid_jaw[k]]
        assert valid_jaw[k].sum() > valid[k].sum()
    np.testing.assert_array_equal(with_jaw[jaw < 0][:, :ids.shape[1]][valid[jaw < 0]],
                                  ids[jaw < 0][valid[jaw < 0]])


def test_contour_is_fixed_when_frontal_and_slides_on_the_far_side(face_model):
    contour = ContourLandmarks.for_model(face_model)
    lay = face_model.layout
    cam = tf.constant([0.0, 0.0, 10.0])
    lmk68 = face_model.arrays["lmk68"]

    def ids_at(yaw):
        coeffs = np.zeros((1, lay.total), np.float32)
        coeffs[0, lay.offsets["angles"][0] + 1] = yaw
        c = lay.split(coeffs)
        from recon_tf.camera import rigid_transform, rotate_normals

        v = face_model.shape(c.identity, c.expression)
        cv = rigid_transform(v, c.angles, c.translation)
        n = rotate_normals(face_model.vertex_normals(v), c.angles)
        return contour.vertex_ids(cv, n, cam).numpy()[0], cv.numpy()[0]

    ids0, verts0 = ids_at(0.0)
    px = verts0[:, :2] * 1015.0 / (10.0 - verts0[:, 2:3])  # pixels of a 224² crop
    shift = np.linalg.norm(px[ids0[:17]] - px[lmk68[:17]], axis=1)
    # frontal: on (or beside) the fixed jaw line in the image (points 0 and 16 may take
    # the jawline vertex 5 mm lower on the same outline)
    assert shift.max() < 6.0, shift
    np.testing.assert_array_equal(ids0[17:], lmk68[17:])
    ids1, verts = ids_at(0.7)  # head turned: subject's left (x > 0) goes away
    far = [12, 13, 14]
    moved = [k for k in far if ids1[k] != lmk68[k]]
    assert moved, "far-side contour points must leave the fixed vertices"
    mean = face_model.arrays["mean_shape"]
    for k in moved:  # ... towards the midline, i.e. inwards on the face
        assert abs(mean[ids1[k], 0]) < abs(mean[lmk68[k], 0])
    near = [2, 3, 4]  # subject's right turns towards the camera: back towards the jawline
    px1 = verts[:, :2] * 1015.0 / (10.0 - verts[:, 2:3])
    assert all(mean[ids1[k], 2] < mean[lmk68[k], 2] for k in near), ids1[near]
    assert all(px1[ids1[k], 0] < px1[lmk68[k], 0] for k in near)  # further out in the image
    fixed3d = ContourLandmarks.for_model(face_model, "3d")
    v = tf.zeros([1, face_model.num_vertices, 3])
    np.testing.assert_array_equal(fixed3d.vertex_ids(v, v, cam).numpy()[0], lmk68)


def _tiny_identity_net(size):
    """A frozen stand-in recognition network: conv → pool → dense, fixed random weights."""
    inputs = tf.keras.Input((size, size, 3))
    x = tf.keras.layers.Conv2D(8, 5, strides=2, activation="tanh",
                               kernel_initializer=tf.keras.initializers.GlorotUniform(1))(inputs)
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    x = tf.keras.layers.Dense(16, kernel_initializer=tf.keras.initializers.GlorotUniform(2))(x)
    net = tf.keras.Model(inputs, x)
    net.trainable = False
    return net


def test_identity_gradient_flows_through_the_render_to_the_coefficients(face_model):
    """L_id (Eq. 9) of the rendered face composited over the input reaches shape,
    albedo, pose and light, and d L_id / d light
    matches central differences."""
    size = 48
    camera = Camera.deep3d(size)
    net = _tiny_identity_net(size)
    rng = np.random.default_rng(7)
    photo = rng.uniform(0.2, 0.8, size=(1, size, size, 3)).astype(np.float32)
    target = net(photo)

    def loss(coeffs):
        r = render_face(face_model, coeffs, camera)
        comp = r.mask * r.image + (1.0 - r.mask) * photo
        return losses.identity_loss(target, net(comp))

    g = _grad_norms(face_model, loss)
    for group in ("identity", "albedo", "angles", "translation", "light"):
        assert g[group] > 0, group
    base = np.zeros((1, face_model.layout.total), np.float32)
    c = tf.Variable(base)
    with tf.GradientTape() as tape:
        v = loss(c)[0]
    grad = tape.gradient(v, c).numpy()[0]
    start = face_model.layout.offsets["light"][0]
    for k in (start, start + 3, start + 9 + 2):
        e = np.zeros_like(base)
        e[0, k] = 1e-2
        fd = (float(loss(tf.constant(base + e))[0]) - float(loss(tf.constant(base - e))[0])) / 2e-2
        assert grad[k] == pytest.approx(fd, rel=3e-2, abs=1e-5)
    assert np.abs(grad[start:start + 27]).max() > 1e-4  # the check is not on zeros
