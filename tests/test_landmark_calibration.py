"""Output landmarks: the re-choice of the vertices reported as points 17–67."""

import numpy as np

from recon_tf.data.pipeline import FLIP_PERMUTATION_68
from recon_tf.landmarks import LANDMARK_GROUPS, calibrate_output_landmarks, vertex_mirror


def _symmetric_grid(step=1.0, half=12):
    """A symmetric surface patch: a grid in x, y (mm) with a bump in z."""
    xs = np.arange(-half, half + 1) * step
    x, y = np.meshgrid(xs, xs)
    z = 5.0 - 0.02 * (x ** 2 + y ** 2)
    return np.stack([x.ravel(), y.ravel(), z.ravel()], axis=1)


def _vertex_at(mean, x, y):
    return int(np.argmin(np.linalg.norm(mean[:, :2] - [x, y], axis=1)))


def _landmarks(mean):
    """68 vertex ids laid out symmetrically: point k and its mirror at ±x."""
    rng = np.random.default_rng(0)
    ids = np.zeros(68, np.int64)
    for k in range(68):
        m = FLIP_PERMUTATION_68[k]
        if m < k:
            continue
        x = 0.0 if m == k else float(rng.integers(2, 10))
        y = float(rng.integers(-10, 11))
        ids[k] = _vertex_at(mean, -x, y)
        ids[m] = _vertex_at(mean, x, y)
    ids[36], ids[45] = _vertex_at(mean, -9, 3), _vertex_at(mean, 9, 3)
    return ids


def _project(mean, faces=12, seed=1):
    """Each face: a random similarity view of the patch (pixels)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(faces):
        a = rng.uniform(-0.3, 0.3)
        rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        out.append(rng.uniform(3, 6) * mean[:, :2] @ rot.T + rng.uniform(50, 150, 2))
    return np.stack(out)


def test_vertex_mirror_is_an_involution_onto_the_mirrored_point():
    mean = _symmetric_grid()
    mirror = vertex_mirror(mean)
    np.testing.assert_array_equal(mirror[mirror], np.arange(len(mean)))
    np.testing.assert_allclose(mean[mirror] * [-1, 1, 1], mean, atol=1e-9)


def test_calibration_finds_where_the_detector_puts_each_point():
    """The detector marks a pair's points 2 mm below (and a midline point 1 mm
    above) the model's vertices on every face: those vertices are chosen, the
    pair symmetric; points not asked for keep their vertex."""
    mean = _symmetric_grid()
    lmk = _landmarks(mean)
    screens = _project(mean)
    truth = lmk.copy()
    for k in (19, 24):  # brow pair
        truth[k] = _vertex_at(mean, mean[lmk[k], 0], mean[lmk[k], 1] - 2)
    truth[51] = _vertex_at(mean, 0, mean[lmk[51], 1] + 1)  # upper lip, on the midline
    rng = np.random.default_rng(2)
    detected = screens[:, truth] + rng.normal(0, 0.3, (len(screens), 68, 2))
    points = (19, 51)
    ids = calibrate_output_landmarks(screens, detected, mean, lmk, np.ones(len(mean), bool),
                                     points, radius=4.0)
    for k in (19, 24, 51):
        assert ids[k] == truth[k], k
    assert ids[24] == vertex_mirror(mean)[ids[19]]
    untouched = [k for k in range(68) if k not in (19, 24, 51)]
    np.testing.assert_array_equal(ids[untouched], lmk[untouched])


def test_calibration_keeps_to_the_radius_and_the_allowed_vertices():
    mean = _symmetric_grid()
    lmk = _landmarks(mean)
    screens = _project(mean)
    far = lmk.copy()
    for k in (19, 24):
        far[k] = _vertex_at(mean, mean[lmk[k], 0], mean[lmk[k], 1] - 6)
    detected = screens[:, far]
    ids = calibrate_output_landmarks(screens, detected, mean, lmk, np.ones(len(mean), bool),
                                     (19,), radius=3.0)
    assert np.linalg.norm(mean[ids[19]] - mean[lmk[19]]) < 3.0
    assert ids[19] != lmk[19]  # moved towards the detector as far as allowed
    allowed = np.zeros(len(mean), bool)
    allowed[lmk[[19, 24]]] = True
    ids = calibrate_output_landmarks(screens, detected, mean, lmk, allowed, (19,), radius=3.0)
    np.testing.assert_array_equal(ids, lmk)


def test_landmark_groups_cover_points_17_to_67_once():
    points = sorted(p for g in LANDMARK_GROUPS.values() for p in g)
    assert points == list(range(17, 68))


def test_ict_output_landmarks_are_symmetric_near_lmk68_and_on_the_front_face(face_model):
    model = face_model
    out, lmk = model.lmk68_output, np.asarray(model.arrays["lmk68"])
    assert np.any(out != lmk)
    np.testing.assert_array_equal(out[:17], lmk[:17])  # the jaw follows the silhouette
    mean = np.asarray(model.arrays["mean_shape"]) * 100.0
    assert np.linalg.norm(mean[out] - mean[lmk], axis=1).max() < 6.0
    assert np.all(model.front_mask.numpy()[out[17:]] > 0.5)
    mirror = vertex_mirror(mean)
    np.testing.assert_array_equal(mirror[out[17:]], out[FLIP_PERMUTATION_68[17:]])
