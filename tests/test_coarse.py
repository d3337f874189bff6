"""The learned coarse stage's glue: landmark source per example, batch → FitData, refinement."""

import numpy as np
import tensorflow as tf

from recon_tf.camera import PIXEL_CENTER
from recon_tf.coarse import CoarseStage, mark_landmark_source
from recon_tf.fit_data import FitSchedule, refine_schedule
from recon_tf.fitting import Fitter
from recon_tf.landmarks import ContourLandmarks


def _posed(face_model, yaw):
    from recon_tf.camera import rigid_transform, rotate_normals

    batch = len(yaw)
    verts = face_model.shape(tf.zeros([batch, face_model.layout.id_dim]),
                             tf.zeros([batch, face_model.layout.exp_dim]))
    angles = tf.constant([[0.0, y, 0.0] for y in yaw], tf.float32)
    cam_v = rigid_transform(verts, angles, tf.zeros([batch, 3]))
    normals = rotate_normals(face_model.vertex_normals(verts), angles)
    return cam_v, normals


def test_fixed_jaw_selects_the_fixed_vertices_per_example(face_model):
    lmk68 = face_model.arrays["lmk68"]
    contour = ContourLandmarks(face_model.arrays["mean_shape"], lmk68, "2d")
    cam_v, normals = _posed(face_model, [0.7, 0.7])
    camera = tf.constant([0.0, 0.0, 10.0])
    free = contour.vertex_ids(cam_v, normals, camera).numpy()
    mixed = contour.vertex_ids(cam_v, normals, camera, tf.constant([1.0, 0.0])).numpy()
    assert (free[0, :17] != lmk68[:17]).any()  # at 40° yaw the silhouette moved
    np.testing.assert_array_equal(mixed[0], lmk68)
    np.testing.assert_array_equal(mixed[1], free[1])


def test_landmark_source_marks_synthetic_records():
    example = {"source_path": tf.constant("synthetic/seed0/00000001")}
    assert float(mark_landmark_source(example)["fixed_jaw"]) == 1.0
    example = {"source_path": tf.constant("/photos/synthetic/obama.jpg")}
    assert float(mark_landmark_source(example)["fixed_jaw"]) == 0.0


def test_batches_become_fit_data_with_continuous_pixels(face_model):
    stage = CoarseStage(tf.keras.Sequential(), Fitter(face_model, image_size=64))
    landmarks = np.random.default_rng(0).uniform(0, 63, (2, 68, 2)).astype(np.float32)
    batch = {"image": tf.zeros([2, 64, 64, 3]), "landmarks": tf.constant(landmarks),
             "mask": tf.ones([2, 64, 64, 1]), "fixed_jaw": tf.constant([1.0, 0.0])}
    data = stage.fit_data(batch)
    np.testing.assert_allclose(data.landmarks.numpy(), landmarks + PIXEL_CENTER)
    np.testing.assert_array_equal(data.fixed_jaw.numpy(), [1.0, 0.0])
    assert data.landmark_weights.shape == (2, 68)


def test_refine_schedule_starts_from_the_prediction(face_model):
    sched = refine_schedule(7, size=64, base=FitSchedule(robust_scale_px=0.0))
    assert (sched.pose_steps, sched.landmark_steps, sched.linear_rounds) == (0, 0, 0)
    assert sched.photo_scales == (64,) and sched.photo_steps == (7,)
    from recon_tf.fit_data import make_fit_data

    fitter = Fitter(face_model, image_size=64)
    rng = np.random.default_rng(1)
    data = make_fit_data(rng.uniform(0, 1, (1, 64, 64, 3)), rng.uniform(20, 44, (1, 68, 2)),
                         np.ones((1, 64, 64)))
    init = np.zeros((1, face_model.layout.total), np.float32)
    init[0, 0] = 0.5
    kept = fitter.fit(data, init, refine_schedule(0, 64, FitSchedule(robust_scale_px=0.0)))
    np.testing.assert_allclose(kept.coeffs, init, atol=1e-6)
    moved = fitter.fit(data, init, sched)
    assert np.abs(moved.coeffs - init).max() > 1e-4
    assert moved.terms["total"][0] < kept.terms["total"][0]
