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


def test_a_face_filling_the_frame_is_found_by_padding():
    """A tight crop inside the face box (MTCNN misses it as is) is found once padded,
    with its box in the crop's own pixels."""
    try:
        image = load_image(asset_path("images/faces/bald_guys.jpg")).pixels
    except FileNotFoundError as err:
        pytest.skip(str(err))
    detector = FaceDetector()
    x, y, w, h = detector.detect(image)[0].box.astype(int)
    crop = image[y + h // 10:y + h - h // 10, x + w // 10:x + w - w // 10].copy()
    assert FaceDetector(pad_fractions=()).detect(crop) == []
    faces = detector.detect(crop)
    assert len(faces) == 1
    bx, by, bw, bh = faces[0].box
    ch, cw = crop.shape[:2]
    assert 0 <= bx + bw / 2 <= cw and 0 <= by + bh / 2 <= ch  # centred on the crop
    assert 0.8 < bw / (0.8 * w) < 2.0  # the face's size, not the padded frame's
    kp = faces[0].keypoints
    assert np.all((kp > -0.1 * cw) & (kp < 1.1 * np.array([cw, ch])))
