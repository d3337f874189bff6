"""MTCNN keypoints come back as (x, y) pairs in the documented order."""

import numpy as np
import pytest

from recon_tf.assets import asset_path
from recon_tf.preprocess.detect import FaceDetector
from recon_tf.preprocess.image_io import load_image


def test_keypoints_are_xy_pairs_inside_the_box():
    try:
        image = load_image(asset_path("images/faces/obama.jpg")).pixels
    except FileNotFoundError as err:
        pytest.skip(str(err))
    face = FaceDetector().detect(image)[0]
    x, y, w, h = face.box
    kp = face.keypoints
    assert np.all((kp[:, 0] > x) & (kp[:, 0] < x + w) & (kp[:, 1] > y) & (kp[:, 1] < y + h))
    left_eye, right_eye, nose, mouth_left, mouth_right = kp
    assert left_eye[0] < right_eye[0] and mouth_left[0] < mouth_right[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(mouth_left[1], mouth_right[1])
