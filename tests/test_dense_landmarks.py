"""Detector → face-model correspondences learned from synthetic renders."""

import numpy as np
import pytest

from recon_tf.dense_landmarks import DenseCorrespondence, learn_correspondence


@pytest.fixture(scope="module")
def facemesh():
    from recon_tf.assets import AssetMissingError
    from recon_tf.nets.facemesh import FaceMesh

    try:
        return FaceMesh()
    except AssetMissingError as err:
        pytest.skip(str(err))


def _dist_mm(face_model, a, b):
    mean = face_model.arrays["mean_shape"]
    return float(np.linalg.norm(mean[a] - mean[b]) * 100.0)


def test_facemesh_points_land_on_the_right_places(face_model, facemesh, tmp_path):
    corr = learn_correspondence(face_model, facemesh.detect, num_faces=16)
    assert corr.vertex_ids.shape == (468,) and corr.weights.shape == (468,)
    assert np.all((corr.weights >= 0) & (corr.weights <= 1))
    lmk = face_model.arrays["lmk68"]
    # FaceMesh nose tip (1) ~ iBUG 30; inner eye corners (133, 362) ~ iBUG 39, 42;
    # mouth corners (61, 291) ~ iBUG 48, 54 (MediaPipe indices; subject's right first).
    for fm_id, ibug in ((1, 30), (133, 39), (362, 42), (61, 48), (291, 54)):
        assert _dist_mm(face_model, corr.vertex_ids[fm_id], lmk[ibug]) < 10.0, (fm_id, ibug)
    # Points FaceMesh finds consistently weigh more than the jaw outline.
    assert corr.weights[[1, 133, 362]].min() > np.median(corr.weights[[234, 454, 152]])
    path = str(tmp_path / "c.npz")
    corr.save(path)
    again = DenseCorrespondence.load(path)
    np.testing.assert_array_equal(again.vertex_ids, corr.vertex_ids)


def test_a_detector_that_sees_nothing_fails_clearly(face_model):
    with pytest.raises(RuntimeError, match="found only 0"):
        learn_correspondence(face_model, lambda image, box: None, num_faces=8)


def test_detector_convention_cache_is_keyed_by_what_the_points_mean(face_model, monkeypatch):
    """A cache learned from another landmarker version (e.g. PFLD without its
    second pass) must not be reused: the key carries the landmarker's tag."""
    import types

    from recon_tf import dense_landmarks

    names = []
    corr = DenseCorrespondence(np.arange(68, dtype=np.int32), np.ones(68, np.float32),
                               np.full(68, 1.0, np.float32), face_model.name)

    def fake_cache(fm, name, detect, cache=None):
        names.append(name)
        return corr

    monkeypatch.setattr(dense_landmarks, "cached_correspondence", fake_cache)
    for tag in ("pfld-crop2-mirror", "pfld"):
        pre = types.SimpleNamespace(landmarker=types.SimpleNamespace(cache_tag=tag),
                                    detector=None)
        ids = dense_landmarks.detector_landmark_ids(face_model, pre)
        np.testing.assert_array_equal(ids[:17], face_model.arrays["lmk68"][:17])  # jaw kept
        np.testing.assert_array_equal(ids[17:], np.arange(17, 68))
    assert names == ["detector_pfld-crop2-mirror", "detector_pfld"]
