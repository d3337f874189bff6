"""Data-set readers on tiny fixtures in their published layouts."""

import os
import struct

import numpy as np
import pytest
from scipy.io import savemat

from recon_tf.data import readers


def _touch(path, data=b"\xff\xd8\xff fake jpeg"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return path


def _points(seed=0):
    return np.random.default_rng(seed).uniform(0, 200, (68, 2)).astype(np.float32)


# ---------------------------------------------------------------- folder


def test_read_folder(tmp_path):
    _touch(tmp_path / "b.jpg")
    _touch(tmp_path / "sub" / "a.PNG")
    _touch(tmp_path / "notes.txt")
    _touch(tmp_path / ".hidden.jpg")
    paths = [r.image_path for r in readers.read_folder(str(tmp_path))]
    assert paths == [str(tmp_path / "b.jpg"), str(tmp_path / "sub" / "a.PNG")]
    everything = [os.path.basename(r.image_path)
                  for r in readers.read_folder(str(tmp_path), images_only=False)]
    assert everything == ["b.jpg", "notes.txt", "a.PNG"]
    flat = [r.image_path for r in readers.read_folder(str(tmp_path), recursive=False)]
    assert flat == [str(tmp_path / "b.jpg")]
    with pytest.raises(FileNotFoundError, match="input folder not found"):
        list(readers.read_folder(str(tmp_path / "missing")))


# ---------------------------------------------------------------- CelebA


def _celeba(root, drive_layout=False):
    images = root / ("Img/img_align_celeba" if drive_layout else "img_align_celeba")
    lines = []
    for i, code in enumerate([0, 0, 1, 2, 2, 0], start=1):
        _touch(images / f"{i:06d}.jpg")
        lines.append(f"{i:06d}.jpg {code}")
    split_file = root / ("Eval/list_eval_partition.txt" if drive_layout
                         else "list_eval_partition.txt")
    os.makedirs(split_file.parent, exist_ok=True)
    split_file.write_text("\n".join(lines) + "\n")
    return images


def test_read_celeba_test_split_and_identities(tmp_path):
    images = _celeba(tmp_path)
    (tmp_path / "identity_CelebA.txt").write_text("000004.jpg 17\n000005.jpg 3\n")
    records = readers.read_dataset("celeba", str(tmp_path))
    assert [r.image_path for r in records] == [str(images / "000004.jpg"),
                                               str(images / "000005.jpg")]
    assert [r.subject for r in records] == ["17", "3"] and records[0].split == "test"
    assert len(readers.read_dataset("celeba", str(tmp_path), split="train")) == 3
    assert len(readers.read_dataset("celeba", str(tmp_path), split="all")) == 6
    with pytest.raises(ValueError):
        readers.read_dataset("celeba", str(tmp_path), split="bogus")


def test_read_celeba_drive_and_kaggle_layouts(tmp_path):
    _celeba(tmp_path / "drive", drive_layout=True)
    assert len(readers.read_dataset("celeba", str(tmp_path / "drive"))) == 2
    kaggle = tmp_path / "kaggle"
    _touch(kaggle / "img_align_celeba" / "img_align_celeba" / "000001.jpg")
    (kaggle / "list_eval_partition.csv").write_text("image_id,partition\n000001.jpg,2\n")
    records = readers.read_dataset("celeba", str(kaggle))
    assert records[0].image_path.endswith("img_align_celeba/img_align_celeba/000001.jpg")


def test_read_celeba_missing_files_name_them(tmp_path):
    with pytest.raises(readers.DatasetNotFoundError, match="img_align_celeba.*CelebA.html"):
        readers.read_dataset("celeba", str(tmp_path))
    _touch(tmp_path / "img_align_celeba" / "000001.jpg")
    with pytest.raises(readers.DatasetNotFoundError, match="list_eval_partition.txt"):
        readers.read_dataset("celeba", str(tmp_path))


# ---------------------------------------------------------------- LFW


def test_read_lfw(tmp_path):
    _touch(tmp_path / "lfw" / "Aaron_Eckhart" / "Aaron_Eckhart_0001.jpg")
    _touch(tmp_path / "lfw" / "George_W_Bush" / "George_W_Bush_0002.jpg")
    _touch(tmp_path / "lfw" / "George_W_Bush" / "George_W_Bush_0001.jpg")
    _touch(tmp_path / "lfw" / "George_W_Bush" / "Thumbs.db")
    _touch(tmp_path / "lfw" / "George_W_Bush" / "someone_else_0001.jpg")
    records = readers.read_dataset("lfw", str(tmp_path))
    assert [os.path.basename(r.image_path) for r in records] == [
        "Aaron_Eckhart_0001.jpg", "George_W_Bush_0001.jpg", "George_W_Bush_0002.jpg"]
    assert [r.subject for r in records] == ["Aaron_Eckhart", "George_W_Bush", "George_W_Bush"]
    assert len(readers.read_dataset("lfw", str(tmp_path / "lfw"))) == 3
    with pytest.raises(readers.DatasetNotFoundError, match="vis-www.cs.umass.edu/lfw"):
        readers.read_dataset("lfw", str(tmp_path / "empty"))


# ---------------------------------------------------------------- LS3D-W


def _t7_string(text):
    data = text.encode("ascii")
    return struct.pack("<i", len(data)) + data


def _t7_tensor(array, transpose_storage=False):
    """Bytes of torch7's binary serialization of a FloatTensor (written from the spec)."""
    array = np.asarray(array, np.float32)
    if transpose_storage:  # a [68, 2] view of a [2, 68] storage (non-contiguous strides)
        storage, strides = array.T.ravel(), (1, array.shape[0])
    else:
        storage, strides = array.ravel(), (array.shape[1], 1)
    out = struct.pack("<ii", 4, 1) + _t7_string("V 1") + _t7_string("torch.FloatTensor")
    out += struct.pack("<i", 2) + struct.pack("<2q", *array.shape) + struct.pack("<2q", *strides)
    out += struct.pack("<q", 1)
    out += struct.pack("<ii", 4, 2) + _t7_string("V 1") + _t7_string("torch.FloatStorage")
    out += struct.pack("<q", storage.size) + storage.astype("<f4").tobytes()
    return out


def test_read_t7_tensor(tmp_path):
    pts = _points(1)
    for transposed in (False, True):
        path = tmp_path / f"x{int(transposed)}.t7"
        path.write_bytes(_t7_tensor(pts, transposed))
        np.testing.assert_allclose(readers.read_t7_tensor(str(path)), pts)
    (tmp_path / "bad.t7").write_bytes(_t7_tensor(pts)[:40])
    with pytest.raises(ValueError, match="truncated"):
        readers.read_t7_tensor(str(tmp_path / "bad.t7"))


def test_read_ls3dw(tmp_path):
    root = tmp_path / "LS3D-W"
    p_pts, p_mat, p_mat2, p_t7 = _points(0), _points(1), _points(2), _points(3)
    _touch(root / "300W-Testset-3D" / "a.jpg")
    (root / "300W-Testset-3D" / "a.pts").write_text(
        "version: 1\nn_points: 68\n{\n" + "\n".join(f"{x} {y}" for x, y in p_pts + 1) + "\n}\n")
    _touch(root / "AFLW2000-3D-Reannotated" / "b.png")
    savemat(root / "AFLW2000-3D-Reannotated" / "b.mat",
            {"pt3d_68": np.concatenate([p_mat.T, np.ones((1, 68))])})
    _touch(root / "AFLW2000-3D-Reannotated" / "c.jpg")
    savemat(root / "AFLW2000-3D-Reannotated" / "c.mat", {"pts": p_mat2})
    _touch(root / "300VW-3D" / "CatA" / "114" / "0001.jpg")
    (root / "300VW-3D" / "CatA" / "114" / "0001.t7").write_bytes(_t7_tensor(p_t7))
    _touch(root / "300VW-3D" / "CatA" / "114" / "0002.jpg")  # no annotation: skipped
    records = readers.read_dataset("ls3d", str(root))
    assert [os.path.basename(r.image_path) for r in records] == ["0001.jpg", "a.jpg", "b.png",
                                                                 "c.jpg"]
    for record, truth in zip(records, [p_t7, p_pts, p_mat, p_mat2], strict=True):
        assert record.landmarks.shape == (68, 2) and record.landmarks.dtype == np.float32
        np.testing.assert_allclose(record.landmarks, truth, atol=1e-4)
    assert records[0].split == "300VW-3D" and records[0].annotation_path.endswith("0001.t7")
    unannotated = list(readers.read_ls3dw(str(root), require_annotation=False))
    assert len(unannotated) == 5 and unannotated[1].landmarks is None


def test_read_ls3dw_errors(tmp_path):
    with pytest.raises(readers.DatasetNotFoundError, match="adrianbulat.com"):
        readers.read_dataset("ls3d", str(tmp_path / "nothing"))
    _touch(tmp_path / "x.jpg")
    with pytest.raises(readers.DatasetNotFoundError, match="annotations"):
        readers.read_dataset("ls3d", str(tmp_path))
    savemat(tmp_path / "y.mat", {"other": np.zeros((68, 2))})
    with pytest.raises(ValueError, match="pt3d_68"):
        readers.read_landmark_file(str(tmp_path / "y.mat"))
    savemat(tmp_path / "z.mat", {"pts": np.zeros((5, 2))})
    with pytest.raises(ValueError, match="expected 68 points"):
        readers.read_landmark_file(str(tmp_path / "z.mat"))


# ---------------------------------------------------------------- NoW


def _now(root):
    base = root / "final_release_version"
    rel = ["FaMoS_180424_03335_TA/multiview_neutral/IMG_0101.jpg",
           "FaMoS_180424_03335_TA/selfie/IMG_0200.jpg",
           "FaMoS_180426_03336_TA/multiview_expressions/IMG_0005.jpg"]
    for r in rel:
        _touch(base / "iphone_pictures" / r)
    (base / "imagepathsvalidation.txt").write_text("\n".join(rel) + "\n")
    _touch(base / "scans" / "FaMoS_180424_03335_TA" / "natural_head_rotation.000001.obj",
           b"v 0 0 0\n")
    _touch(base / "scans_lmks_onlypp" / "FaMoS_180424_03335_TA"
           / "natural_head_rotation.000001_picked_points.pp", b"<PickedPoints/>")
    return base


def test_read_now(tmp_path):
    base = _now(tmp_path)
    records = readers.read_dataset("now", str(tmp_path))
    assert len(records) == 3
    first = records[0]
    assert first.image_path == str(base / "iphone_pictures" / "FaMoS_180424_03335_TA"
                                   / "multiview_neutral" / "IMG_0101.jpg")
    assert first.subject == "FaMoS_180424_03335_TA" and first.split == "validation"
    assert first.extra["expression"] == "multiview_neutral"
    assert first.extra["scan_path"].endswith("natural_head_rotation.000001.obj")
    assert first.extra["scan_landmarks_path"].endswith("_picked_points.pp")
    assert records[2].extra["scan_path"] == ""  # no scan for this subject
    assert len(readers.read_dataset("now", str(base))) == 3
    assert all(r.face_box is None for r in records)  # no detected_face folder
    with pytest.raises(readers.DatasetNotFoundError, match="imagepathstest.txt.*now.is.tue"):
        readers.read_dataset("now", str(tmp_path), split="test")


def test_unknown_dataset():
    with pytest.raises(ValueError, match="unknown data set"):
        readers.read_dataset("imagenet", "/tmp")


def test_read_now_face_boxes(tmp_path):
    """NoW's detected_face/<image>.npy: a pickled {left, top, right, bottom} dict (or a
    plain array) becomes Record.face_box (x, y, w, h); a bad file gives None."""
    base = _now(tmp_path)
    boxes = base / "detected_face"
    (boxes / "FaMoS_180424_03335_TA" / "multiview_neutral").mkdir(parents=True)
    (boxes / "FaMoS_180424_03335_TA" / "selfie").mkdir(parents=True)
    np.save(boxes / "FaMoS_180424_03335_TA" / "multiview_neutral" / "IMG_0101.npy",
            {"left": 100.5, "top": 220.0, "right": 900.5, "bottom": 1300.0}, allow_pickle=True)
    np.save(boxes / "FaMoS_180424_03335_TA" / "selfie" / "IMG_0200.npy",
            np.array([10.0, 20.0, 50.0, 80.0]))
    records = readers.read_dataset("now", str(tmp_path))
    np.testing.assert_allclose(records[0].face_box, [100.5, 220.0, 800.0, 1080.0])
    assert records[0].face_box.dtype == np.float32
    np.testing.assert_allclose(records[1].face_box, [10.0, 20.0, 40.0, 60.0])
    assert records[2].face_box is None  # no file for this image
    bad = tmp_path / "bad.npy"
    bad.write_bytes(b"not an npy file")
    assert readers.read_now_face_box(str(bad)) is None
    np.save(bad.with_name("empty.npy"), {"left": 5.0, "top": 5.0, "right": 5.0, "bottom": 9.0},
            allow_pickle=True)
    assert readers.read_now_face_box(str(bad.with_name("empty.npy"))) is None  # zero width
    np.save(bad.with_name("keys.npy"), {"x": 1.0}, allow_pickle=True)
    assert readers.read_now_face_box(str(bad.with_name("keys.npy"))) is None


def test_read_ljson_matches_pts_and_is_found_beside_its_photo(tmp_path):
    """menpo's .ljson (points as (y, x), 0-based) reads as the same points as a .pts
    (x, y, 1-based) of them, whichever group comes first; v2 reads too."""
    import json

    pts = _points(4)
    (tmp_path / "a.pts").write_text(
        "version: 1\nn_points: 68\n{\n" + "\n".join(f"{x} {y}" for x, y in pts + 1) + "\n}\n")
    yx = pts[:, ::-1].tolist()
    (tmp_path / "b.ljson").write_text(json.dumps({"version": 3, "groups": {
        "pupils": {"landmarks": {"points": [[1.0, 2.0], [3.0, 4.0]], "connectivity": []}},
        "LJSON": {"landmarks": {"points": yx, "connectivity": []}, "labels": []}}}))
    (tmp_path / "c.ljson").write_text(json.dumps({"version": 2, "landmarks": {"points": yx}}))
    from_pts = readers.read_landmark_file(str(tmp_path / "a.pts"))
    for name in ("b.ljson", "c.ljson"):
        got = readers.read_landmark_file(str(tmp_path / name))
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, from_pts, atol=1e-4)
    _touch(tmp_path / "b.jpg")
    _touch(tmp_path / "tongue.jpg")  # another scheme (menpo's 19 points): skipped
    (tmp_path / "tongue.pts").write_text("version: 1\nn_points: 2\n{\n1 2\n3 4\n}\n")
    records = list(readers.read_ls3dw(str(tmp_path)))
    assert [r.annotation_path.endswith("b.ljson") for r in records] == [True]
    np.testing.assert_allclose(records[0].landmarks, pts, atol=1e-4)
    (tmp_path / "v1.ljson").write_text(json.dumps({"version": 1, "groups": []}))
    with pytest.raises(ValueError, match="version 1"):
        readers.read_landmark_file(str(tmp_path / "v1.ljson"))
    (tmp_path / "few.ljson").write_text(json.dumps({"version": 2,
                                                    "landmarks": {"points": yx[:5]}}))
    with pytest.raises(ValueError, match="no group of 68"):
        readers.read_landmark_file(str(tmp_path / "few.ljson"))
    (tmp_path / "bad.ljson").write_text("{not json")
    with pytest.raises(ValueError, match="not a menpo"):
        readers.read_landmark_file(str(tmp_path / "bad.ljson"))
