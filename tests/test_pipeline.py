"""TFRecord schema round trips and the tf.data pipeline (flip, jitter, batching)."""

import glob
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from recon_tf.data import pipeline, tfrecord

SIZE = 32


def _example(seed=0, size=SIZE, extras=None, image_format="png"):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    landmarks = rng.uniform(0, size - 1, (68, 2)).astype(np.float32)
    mask = (rng.random((size, size)) > 0.5).astype(np.uint8) * 255
    transform = np.array([[0.5, 0.0, -3.0], [0.0, 0.5, 7.0]], np.float32)
    serialized = tfrecord.encode_example(image, landmarks, mask, f"photos/{seed}.jpg", transform,
                                         subject=f"id{seed}", extras=extras,
                                         image_format=image_format)
    return serialized, dict(image=image, landmarks=landmarks, mask=mask, transform=transform)


def _write_shards(folder, count=2, per_shard=5, extras=False):
    os.makedirs(folder, exist_ok=True)
    for s in range(count):
        records = []
        for i in range(per_shard):
            seed = s * per_shard + i
            extra = {"coeffs": np.full([6], seed, np.float32)} if extras else None
            records.append(_example(seed, extras=extra)[0])
        tfrecord.write_tfrecord(os.path.join(folder, f"shard-{s:05d}-of-{count:05d}.tfrecord"),
                                records)
    return os.path.join(folder, "shard-*.tfrecord")


# ---------------------------------------------------------------- schema


def test_encode_parse_round_trip_png():
    serialized, truth = _example(3)
    ex = tfrecord.parse_example(tf.constant(serialized), image_size=SIZE)
    assert ex["image"].dtype == tf.float32 and ex["image"].shape == (SIZE, SIZE, 3)
    np.testing.assert_allclose(ex["image"].numpy() * 255, truth["image"], atol=1e-3)
    np.testing.assert_array_equal(ex["mask"].numpy()[..., 0], truth["mask"] / 255)
    np.testing.assert_allclose(ex["landmarks"].numpy(), truth["landmarks"])
    np.testing.assert_allclose(ex["transform"].numpy(), truth["transform"])
    assert ex["source_path"].numpy() == b"photos/3.jpg" and ex["subject"].numpy() == b"id3"


def test_jpeg_and_extras_round_trip(tmp_path):
    smooth = np.tile(np.linspace(0, 255, SIZE, dtype=np.uint8)[None, :, None], (SIZE, 1, 3))
    extras = {"coeffs": np.arange(222, dtype=np.float32),
              "albedo_map": np.random.default_rng(0).random((8, 8, 3)).astype(np.float32)}
    serialized = tfrecord.encode_example(smooth, np.zeros((68, 2)), np.zeros((SIZE, SIZE)),
                                         "x", np.eye(2, 3), extras=extras, image_format="jpeg")
    ex = tfrecord.parse_example(tf.constant(serialized), extra_names=["coeffs", "albedo_map"],
                                extra_shapes={"coeffs": [222]})
    assert np.abs(ex["image"].numpy() * 255 - smooth).max() < 8
    np.testing.assert_array_equal(ex["coeffs"].numpy(), extras["coeffs"])
    assert ex["coeffs"].shape == (222,)
    np.testing.assert_array_equal(ex["albedo_map"].numpy(), extras["albedo_map"])
    path = str(tmp_path / "one.tfrecord")
    tfrecord.write_tfrecord(path, [serialized])
    assert tfrecord.list_extra_names(path) == ["coeffs", "albedo_map"]
    assert not glob.glob(str(tmp_path / "*.tmp"))


@pytest.mark.parametrize("kwargs, message", [
    (dict(landmarks=np.zeros((5, 2))), "landmarks"),
    (dict(mask=np.zeros((4, 4))), "mask"),
    (dict(transform=np.eye(3)), "transform"),
    (dict(extras={"image": np.zeros(3)}), "invalid extra"),
    (dict(extras={"a/b": np.zeros(3)}), "invalid extra"),
    (dict(image_format="gif"), "image_format"),
])
def test_encode_example_validates(kwargs, message):
    args = dict(image=np.zeros((SIZE, SIZE, 3), np.uint8), landmarks=np.zeros((68, 2)),
                mask=np.zeros((SIZE, SIZE)), source_path="x", transform=np.eye(2, 3))
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        tfrecord.encode_example(**args)


# ---------------------------------------------------------------- augmentation


def test_flip_permutation_is_a_mirror_involution():
    perm = pipeline.FLIP_PERMUTATION_68
    assert sorted(perm.tolist()) == list(range(68))
    np.testing.assert_array_equal(perm[perm], np.arange(68))
    pairs = {0: 16, 8: 8, 17: 26, 30: 30, 31: 35, 36: 45, 39: 42, 40: 47, 48: 54, 51: 51,
             57: 57, 60: 64, 62: 62, 66: 66}
    for a, b in pairs.items():
        assert perm[a] == b


def test_flip_maps_a_symmetric_face_onto_itself(face_model):
    from recon_tf.preprocess.align import project_template

    lm = project_template(face_model.mean_landmarks_3d())  # symmetric about x = 112
    ex = {"image": tf.zeros([224, 224, 3]), "mask": tf.zeros([224, 224, 1]),
          "landmarks": tf.constant(lm - [0.5, 0.0]), "transform": tf.constant(np.eye(2, 3))}
    flipped = pipeline.flip_example(ex)["landmarks"].numpy()
    assert np.abs(flipped - (lm - [0.5, 0.0])).max() < 1.0


def test_flip_moves_pixels_landmarks_and_transform_consistently():
    serialized, truth = _example(1)
    ex = tfrecord.parse_example(tf.constant(serialized), image_size=SIZE)
    ex["landmarks"] = tf.constant(np.round(truth["landmarks"]))  # on pixel centres
    flipped = pipeline.flip_example(ex)
    perm = pipeline.FLIP_PERMUTATION_68
    image, fimage = ex["image"].numpy(), flipped["image"].numpy()
    for i in (0, 36, 48, 30):
        x, y = ex["landmarks"].numpy()[perm[i]].astype(int)
        fx, fy = flipped["landmarks"].numpy()[i].astype(int)
        assert (fx, fy) == (SIZE - 1 - x, y)
        np.testing.assert_array_equal(fimage[fy, fx], image[y, x])
    np.testing.assert_array_equal(flipped["mask"].numpy()[:, ::-1], ex["mask"].numpy())
    src = np.array([[10.0, 20.0], [30.0, 5.0]])
    t, ft = ex["transform"].numpy(), flipped["transform"].numpy()
    crop = src @ t[:, :2].T + t[:, 2]
    np.testing.assert_allclose(src @ ft[:, :2].T + ft[:, 2],
                               np.stack([SIZE - 1 - crop[:, 0], crop[:, 1]], 1), atol=1e-5)
    twice = pipeline.flip_example(flipped)
    for key in ("image", "mask", "landmarks", "transform"):
        np.testing.assert_allclose(twice[key].numpy(), ex[key].numpy(), atol=1e-5)


def test_color_jitter_is_clipped_seeded_and_changes_the_image():
    image = tf.random.stateless_uniform([SIZE, SIZE, 3], [1, 2])
    a = pipeline.color_jitter(image, tf.constant([3, 4], tf.int64), 0.5, 0.5, 0.5)
    b = pipeline.color_jitter(image, tf.constant([3, 4], tf.int64), 0.5, 0.5, 0.5)
    c = pipeline.color_jitter(image, tf.constant([5, 6], tf.int64), 0.5, 0.5, 0.5)
    assert float(tf.reduce_min(a)) >= 0.0 and float(tf.reduce_max(a)) <= 1.0
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert np.abs(a.numpy() - image.numpy()).mean() > 0.01
    assert np.abs(a.numpy() - c.numpy()).mean() > 0.001


def test_augment_leaves_geometry_consistent():
    serialized, _ = _example(2)
    ex = tfrecord.parse_example(tf.constant(serialized), image_size=SIZE)
    flips = 0
    for s in range(12):
        out = pipeline.augment_example(ex, tf.constant([s, 7], tf.int64), flip_prob=0.5,
                                       brightness=0.0, contrast=0.0, saturation=0.0)
        flipped = not np.allclose(out["landmarks"].numpy(), ex["landmarks"].numpy())
        flips += flipped
        expected = pipeline.flip_example(ex) if flipped else ex
        for key in ("image", "mask", "landmarks", "transform"):
            np.testing.assert_allclose(out[key].numpy(), expected[key].numpy(), atol=1e-6)
    assert 0 < flips < 12


# ---------------------------------------------------------------- make_dataset


def test_make_dataset_eval_reads_everything_in_order(tmp_path):
    pattern = _write_shards(str(tmp_path))
    ds = pipeline.make_dataset(pattern, batch_size=4, training=False, image_size=SIZE)
    batches = list(ds)
    assert [int(b["image"].shape[0]) for b in batches] == [4, 4, 2]
    paths = [p.decode() for b in batches for p in b["source_path"].numpy()]
    assert paths == [f"photos/{i}.jpg" for i in range(10)]
    first = batches[0]
    assert first["image"].shape == (4, SIZE, SIZE, 3) and first["mask"].shape == (4, SIZE, SIZE, 1)
    assert first["landmarks"].shape == (4, 68, 2) and first["transform"].shape == (4, 2, 3)
    _, truth = _example(0)
    np.testing.assert_allclose(first["image"][0].numpy() * 255, truth["image"], atol=1e-3)


def test_make_dataset_training_shuffles_repeats_augments(tmp_path):
    pattern = _write_shards(str(tmp_path))
    ds = pipeline.make_dataset(pattern, batch_size=4, training=True, image_size=SIZE, seed=0)
    assert ds.element_spec["image"].shape == (4, SIZE, SIZE, 3)
    batches = list(ds.take(6))  # 24 examples from 10: repeats
    paths = [p.decode() for b in batches for p in b["source_path"].numpy()]
    assert len(paths) == 24 and len(set(paths)) == 10
    assert paths[:10] != [f"photos/{i}.jpg" for i in range(10)]
    again = [p.decode() for b in pipeline.make_dataset(
        pattern, batch_size=4, training=True, image_size=SIZE, seed=0).take(6)
        for p in b["source_path"].numpy()]
    assert again == paths
    for b in batches:
        assert 0.0 <= float(tf.reduce_min(b["image"])) and float(tf.reduce_max(b["image"])) <= 1.0


def test_make_dataset_extras_and_errors(tmp_path):
    pattern = _write_shards(str(tmp_path), extras=True)
    with pytest.raises(ValueError, match="flip_prob=0"):
        pipeline.make_dataset(pattern, 2, training=True, extra_names=["coeffs"])
    ds = pipeline.make_dataset(pattern, 5, training=True, image_size=SIZE, flip_prob=0.0,
                               extra_names=["coeffs"], extra_shapes={"coeffs": [6]}, seed=1)
    batch = next(iter(ds))
    assert batch["coeffs"].shape == (5, 6)
    seeds = [int(p.decode().split("/")[1][:-4]) for p in batch["source_path"].numpy()]
    np.testing.assert_array_equal(batch["coeffs"].numpy()[:, 0], seeds)
    with pytest.raises(FileNotFoundError, match="preprocess.py"):
        pipeline.make_dataset(str(tmp_path / "nothing-*.tfrecord"), 2, training=False)


def test_make_dataset_shards_files_per_input_pipeline(tmp_path):
    pattern = _write_shards(str(tmp_path), count=2)
    context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=1)
    ds = pipeline.make_dataset(pattern, 5, training=False, image_size=SIZE,
                               input_context=context)
    paths = [p.decode() for b in ds for p in b["source_path"].numpy()]
    assert paths == [f"photos/{i}.jpg" for i in range(5, 10)]


def test_check_alignment_refuses_other_model_or_camera():
    from recon_tf.camera import Camera

    cam = Camera.deep3d(224)
    manifest = {"dataset": "folder", **tfrecord.alignment_record("ict_facekit", "ab" * 20, cam)}
    manifest = json.loads(json.dumps(manifest))  # as read back from manifest.json
    tfrecord.check_alignment(manifest, "ict_facekit", "ab" * 20, Camera.deep3d(224))
    cases = [
        (("bfm_deep3d", "ab" * 20, cam), "face model 'ict_facekit'"),
        (("ict_facekit", "cd" * 20, cam), "hash abababababab"),
        (("ict_facekit", "ab" * 20, Camera.deep3d(256)), "image_size"),
        (("ict_facekit", "ab" * 20, Camera.deep3d(224, "orthographic")), "camera kind"),
        (("ict_facekit", "ab" * 20, Camera(focal=1200.0)), "camera focal"),
    ]
    for args, message in cases:
        with pytest.raises(ValueError, match=message):
            tfrecord.check_alignment(manifest, *args)
    with pytest.raises(ValueError, match="older tools/preprocess.py"):
        tfrecord.check_alignment({"dataset": "folder"}, "ict_facekit", "ab" * 20, cam)


def test_training_data_is_checked_folder_by_folder(tmp_path, caplog):
    """`default_sets.check_data`: photos aligned for this model pass, for another
    model or by an older preprocess (no record) are refused; a synthetic set of
    another model is refused; a folder without manifest is only warned about."""
    from types import SimpleNamespace

    from recon_tf.camera import Camera
    from recon_tf.data.default_sets import check_data

    cam = Camera.deep3d(224)
    model = SimpleNamespace(name="ict_facekit", geometry_hash="ab" * 20)
    manifests = {
        "photos": {"dataset": "folder", **tfrecord.alignment_record("ict_facekit", "ab" * 20,
                                                                     cam)},
        "photos_other": {"dataset": "folder", **tfrecord.alignment_record("bfm", "cd" * 20,
                                                                           cam)},
        "photos_old": {"dataset": "folder"},
        "synthetic": {"num": 4, "seed": 0, "face_model": "ict_facekit"},
        "synthetic_other": {"num": 4, "seed": 0, "face_model": "bfm_deep3d"},
        "no_manifest": None,
    }
    for name, manifest in manifests.items():
        os.makedirs(tmp_path / name)
        (tmp_path / name / "shard-0.tfrecord").write_bytes(b"")
        if manifest is not None:
            (tmp_path / name / "manifest.json").write_text(json.dumps(manifest))

    def files(name):
        return [str(tmp_path / name / "*.tfrecord")]

    ok = files("photos") + files("synthetic") + files("no_manifest")
    assert len(check_data(ok, model, cam)) == 3
    assert "no_manifest has no manifest.json" in caplog.text
    for name, message in (("photos_other", "face model 'bfm'"),
                          ("photos_old", "older tools/preprocess.py"),
                          ("synthetic_other", "rendered with face model 'bfm_deep3d'")):
        with pytest.raises(ValueError, match=message) as err:
            check_data(files("photos") + files(name), model, cam)
        assert name in str(err.value)
