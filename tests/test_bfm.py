"""Face-model converters: ICT npz and OBJ directory, BFM 2009 + expression bases,
Deep3DFace's BFM_model_front.mat, the default albedo basis, and their errors.
BFM files are not distributed: the tests write tiny files in the same formats."""

import json
import os
import struct

import numpy as np
import pytest
import scipy.io

from bfm.bfm2009 import convert_bfm2009, read_exp_pca_bin
from bfm.deep3d import convert_deep3d
from bfm.ict import convert_obj_dir, load_ict_npz, order_expressions
from recon_tf.assets import AssetMissingError, asset_path
from recon_tf.face_model import FaceModel, FaceModelFormatError

N_BFM, N_TRIM = 12, 10  # tiny "BFM": 12 vertices, expressions on the first 10


def _tiny_bfm(tmp_path, rng):
    mu = rng.normal(size=(3 * N_BFM, 1)) * 1e5
    tris = np.array([[1, 2, 3], [2, 3, 4], [5, 6, 7], [9, 10, 11], [10, 11, 12]])
    scipy.io.savemat(tmp_path / "01_MorphableModel.mat", {
        "shapeMU": mu, "shapePC": rng.normal(size=(3 * N_BFM, 7)),
        "shapeEV": np.arange(1, 8, dtype=float)[:, None] * 1e3,
        "texMU": rng.uniform(0, 255, size=(3 * N_BFM, 1)),
        "texPC": rng.normal(size=(3 * N_BFM, 6)), "texEV": np.ones((6, 1)) * 10.0,
        "tl": tris.astype(float)})
    return mu, tris


def _write_exp_pca(path, mean, comps):
    with open(path, "wb") as f:
        f.write(struct.pack("<i", len(comps)))
        f.write(mean.astype("<f4").tobytes())
        f.write(comps.astype("<f4").tobytes())


def test_bfm2009_with_exp_pca_bin(tmp_path):
    rng = np.random.default_rng(0)
    mu, _ = _tiny_bfm(tmp_path, rng)
    exp_mean = rng.normal(size=3 * N_TRIM) * 100
    comps = rng.normal(size=(4, 3 * N_TRIM)) * 100
    _write_exp_pca(tmp_path / "Exp_Pca.bin", exp_mean, comps)
    np.savetxt(tmp_path / "std_exp.txt", [1.0, 2.0, 3.0, 4.0])
    scipy.io.savemat(tmp_path / "BFM_exp_idx.mat",
                     {"trimIndex": np.arange(1, N_TRIM + 1)[:, None].astype(float)})
    np.savetxt(tmp_path / "kp.txt", (np.arange(68) % N_TRIM) + 1, fmt="%d")
    m = convert_bfm2009(str(tmp_path / "01_MorphableModel.mat"),
                        exp_pca_bin=str(tmp_path / "Exp_Pca.bin"),
                        exp_std_txt=str(tmp_path / "std_exp.txt"),
                        exp_idx_mat=str(tmp_path / "BFM_exp_idx.mat"),
                        keypoints=str(tmp_path / "kp.txt"), n_id=5, n_tex=3)
    assert m["mean_shape"].shape == (N_TRIM, 3)
    want_mean = (mu.reshape(-1, 3)[:N_TRIM] + exp_mean.reshape(-1, 3)) * 1e-5
    np.testing.assert_allclose(m["mean_shape"], want_mean - want_mean.mean(0), rtol=1e-4,
                               atol=1e-6)
    np.testing.assert_allclose(m["exp_basis"][2], comps[2].reshape(-1, 3) * 3e-5, rtol=1e-5)
    assert m["id_basis"].shape == (5, N_TRIM, 3) and m["albedo_basis"].shape == (3, N_TRIM, 3)
    # triangles touching vertices 11/12 (outside the trimmed set) are dropped
    np.testing.assert_array_equal(m["triangles"], [[0, 1, 2], [1, 2, 3], [4, 5, 6]])
    assert m["lmk68"][0] == 0
    assert np.all((m["uv"] >= 0) & (m["uv"] <= 1))
    fm = FaceModel(m)  # valid and usable
    assert np.all(fm.front_mask.numpy() == 1) and fm.exp_bounds is None  # PCA: unbounded
    assert "BFM 2009 texture PCA" in fm.albedo_provenance


def test_bfm2009_with_3ddfa_expression(tmp_path):
    rng = np.random.default_rng(1)
    _tiny_bfm(tmp_path, rng)
    w = rng.normal(size=(3 * N_BFM, 29))
    sigma = np.linspace(1, 2, 29)[:, None]
    scipy.io.savemat(tmp_path / "Model_Expression.mat",
                     {"mu_exp": np.zeros((3 * N_BFM, 1)), "w_exp": w, "sigma_exp": sigma})
    scipy.io.savemat(tmp_path / "info.mat", {"keypoints": np.arange(1, 69)[None] % N_BFM + 1})
    m = convert_bfm2009(str(tmp_path / "01_MorphableModel.mat"),
                        ddfa_expression_mat=str(tmp_path / "Model_Expression.mat"),
                        keypoints=str(tmp_path / "info.mat"), n_id=7, n_tex=6)
    assert m["exp_basis"].shape == (29, N_BFM, 3)
    np.testing.assert_allclose(m["exp_basis"][28], w[:, 28].reshape(-1, 3) * 2.0 * 1e-5,
                               rtol=1e-5)
    assert FaceModel(m).layout.exp_dim == 29


def test_bfm2009_errors(tmp_path):
    with pytest.raises(AssetMissingError, match="faces.dmi.unibas.ch"):
        convert_bfm2009(str(tmp_path / "01_MorphableModel.mat"),
                        exp_pca_bin=str(tmp_path / "Exp_Pca.bin"))
    rng = np.random.default_rng(2)
    _tiny_bfm(tmp_path, rng)
    with pytest.raises(AssetMissingError, match="Exp_Pca.bin"):
        convert_bfm2009(str(tmp_path / "01_MorphableModel.mat"),
                        exp_pca_bin=str(tmp_path / "Exp_Pca.bin"))
    _write_exp_pca(tmp_path / "Exp_Pca.bin", np.zeros(3 * N_TRIM), np.zeros((2, 3 * N_TRIM)))
    with pytest.raises(FaceModelFormatError, match="BFM_exp_idx.mat"):
        convert_bfm2009(str(tmp_path / "01_MorphableModel.mat"),
                        exp_pca_bin=str(tmp_path / "Exp_Pca.bin"))
    (tmp_path / "trunc.bin").write_bytes(struct.pack("<i", 3) + b"\0" * 10)
    with pytest.raises(FaceModelFormatError, match="do not hold"):
        read_exp_pca_bin(str(tmp_path / "trunc.bin"))
    (tmp_path / "bad.mat").write_bytes(b"garbage" * 20)
    with pytest.raises(FaceModelFormatError, match="cannot read"):
        convert_bfm2009(str(tmp_path / "bad.mat"), exp_pca_bin=str(tmp_path / "Exp_Pca.bin"))
    with pytest.raises(ValueError, match="exactly one"):
        convert_bfm2009(str(tmp_path / "01_MorphableModel.mat"))


def test_deep3d_front_mat(tmp_path):
    rng = np.random.default_rng(3)
    n = 9
    scipy.io.savemat(tmp_path / "BFM_model_front.mat", {
        "meanshape": rng.normal(size=(1, 3 * n)), "idBase": rng.normal(size=(3 * n, 80)),
        "exBase": rng.normal(size=(3 * n, 64)), "meantex": np.full((1, 3 * n), 127.5),
        "texBase": rng.normal(size=(3 * n, 80)), "tri": np.array([[1, 2, 3], [4, 5, 6]]),
        "keypoints": (np.arange(68) % n + 1)[None], "skinmask": np.ones((1, n)),
        "frontmask2_idx": np.array([[1, 2, 3, 4, 5]])})
    m = convert_deep3d(str(tmp_path / "BFM_model_front.mat"))
    np.testing.assert_allclose(m["mean_albedo"], 0.5)
    np.testing.assert_array_equal(m["front_mask"], [1, 1, 1, 1, 1, 0, 0, 0, 0])
    assert "Deep3DFace" in m["albedo_provenance"]
    fm = FaceModel(m)
    assert (fm.layout.id_dim, fm.layout.exp_dim, fm.layout.tex_dim) == (80, 29, 80)
    scipy.io.savemat(tmp_path / "incomplete.mat", {"meanshape": np.zeros((1, 3))})
    with pytest.raises(FaceModelFormatError, match="lacks keys"):
        convert_deep3d(str(tmp_path / "incomplete.mat"))


def test_deep3d_front_mat_v73(tmp_path):
    """MATLAB v7.3 files are HDF5 with a 'MATLAB 7.3' header and transposed arrays."""
    h5py = pytest.importorskip("h5py")
    rng = np.random.default_rng(6)
    n = 7
    arrays = {"meanshape": rng.normal(size=(1, 3 * n)), "idBase": rng.normal(size=(3 * n, 80)),
              "exBase": rng.normal(size=(3 * n, 64)), "meantex": np.full((1, 3 * n), 51.0),
              "texBase": rng.normal(size=(3 * n, 80)), "tri": np.array([[1.0, 2.0, 3.0]]),
              "keypoints": (np.arange(68) % n + 1)[None].astype(float)}
    path = tmp_path / "BFM_model_front.mat"
    with h5py.File(path, "w", userblock_size=512) as f:
        for k, v in arrays.items():
            f[k] = v.T
    with open(path, "r+b") as f:
        f.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: test HDF5 schema 1.00 .")
    m = convert_deep3d(str(path))
    np.testing.assert_allclose(m["mean_albedo"], 0.2)
    want = arrays["idBase"].T.reshape(80, n, 3)
    np.testing.assert_allclose(m["id_basis"], want, rtol=1e-6)


def test_ict_npz_matches_obj_converter():
    raw = asset_path("face_models/ict_facekit/raw")
    from_npz = load_ict_npz(asset_path("face_models/ict_facekit/ict_face_region_9409.npz"))
    from_obj = convert_obj_dir(raw)
    # the raw folder holds 2 identity and 2 expression OBJs
    assert from_obj["id_basis"].shape == (2, 9409, 3)
    np.testing.assert_allclose(from_obj["mean_shape"], from_npz["mean_shape"], atol=1e-5)
    np.testing.assert_allclose(from_obj["id_basis"], from_npz["id_basis"][:2], atol=1e-6)
    names = list(from_npz["exp_names"])
    for k, name in enumerate(from_obj["exp_names"]):
        np.testing.assert_allclose(from_obj["exp_basis"][k],
                                   from_npz["exp_basis"][names.index(name)], atol=1e-6)
    # the OBJ has one triangle face in the region besides the quads; the npz kept quads only
    nt = len(from_npz["triangles"])
    np.testing.assert_array_equal(from_obj["triangles"][:nt], from_npz["triangles"])
    np.testing.assert_allclose(from_obj["uv"][from_obj["tri_uv"][:nt]],
                               from_npz["uv"][from_npz["tri_uv"]], atol=1e-6)
    np.testing.assert_array_equal(from_obj["lmk68"], from_npz["lmk68"])
    np.testing.assert_array_equal(from_obj["jawline"], from_npz["jawline"])
    assert names[:3] == ["jawOpen", "mouthSmile_L", "mouthSmile_R"]


def test_ict_obj_dir_errors(tmp_path):
    with pytest.raises(AssetMissingError, match="ICT-FaceKit"):
        convert_obj_dir(str(tmp_path))
    raw = asset_path("face_models/ict_facekit/raw")
    os.symlink(os.path.join(raw, "generic_neutral_mesh.obj"), tmp_path / "generic_neutral_mesh.obj")
    with open(tmp_path / "vertex_indices.json", "w") as f:
        json.dump({"expressions": [], "idx_to_landmark_verts": list(range(68))}, f)
    with pytest.raises(FaceModelFormatError, match="identity"):
        convert_obj_dir(str(tmp_path))


def test_expression_order_keeps_mirror_pairs_together():
    names = ["jawOpen", "blink_L", "blink_R", "look_L", "look_R", "jawLeft", "jawRight",
             "pucker", "smile_L", "smile_R"]
    reach = np.array([9.0, 2.0, 8.0, 7.0, 1.0, 6.0, 0.5, 3.0, 0.1, 0.2])
    # pairs rank by their larger member: blink (8) > look (7) > jaw L/R (6) > pucker (3)
    order = order_expressions(names, reach, primary=4)
    got = [names[i] for i in order]
    # 4 slots: jawOpen, blink pair = 3; the look pair does not fit, pucker fills slot 4
    assert got == ["jawOpen", "blink_L", "blink_R", "pucker", "look_L", "look_R", "jawLeft",
                   "jawRight", "smile_L", "smile_R"]
    assert sorted(order) == list(range(len(names)))
    # only pairs left for an odd slot: the pair is split there (no single to fill it)
    pairs_only = names[1:5]
    got = [pairs_only[i] for i in order_expressions(pairs_only, reach[1:5], primary=3)]
    assert got == ["blink_L", "blink_R", "look_L", "look_R"]
    # preferred units come first (a pair by its base name), then the rest by reach
    order = order_expressions(names, reach, primary=4, preferred=("smile", "pucker"))
    assert [names[i] for i in order][:5] == ["smile_L", "smile_R", "pucker", "jawOpen",
                                             "blink_L"]


def test_ict_first_29_expressions_hold_whole_pairs(ict_arrays):
    names = [str(n) for n in ict_arrays["exp_names"]]
    assert len(names) == 53 and names[0] == "jawOpen"
    first = set(names[:29])
    for name in names:
        for left, right in (("_L", "_R"), ("Left", "Right")):
            if name.endswith(left):
                twin = name[:-len(left)] + right
                assert (name in first) == (twin in first), (name, twin)
                assert names.index(twin) == names.index(name) + 1
    assert "eyeLookDown_L" in names[:29] or "eyeLookDown_R" not in names[:29]
    for action in ("browDown_L", "browInnerUp_R", "eyeBlink_L", "eyeSquint_R", "mouthSmile_L",
                   "mouthFrown_R", "mouthPress_L"):  # what photos show is in the 29
        assert action in first, action
    np.testing.assert_array_equal(ict_arrays["exp_bounds"], np.tile([[0.0, 1.0]], (53, 1)))


def test_ict_masks_and_provenance(ict_arrays):
    front, skin = ict_arrays["front_mask"], ict_arrays["skin_mask"]
    lmk = ict_arrays["lmk68"]
    assert front.min() >= 0 and front.max() <= 1 and np.all(skin <= front + 1e-6)
    assert np.all(front[lmk[27:36]] == 1)  # nose
    assert np.all(skin[lmk[27:31]] == 1) and np.all(skin[lmk[19:25]] < 0.5)  # brows are not skin
    v = ict_arrays["mean_shape"]
    assert front[v[:, 1] > v[:, 1].max() - 0.2].max() == 0  # scalp
    assert front[v[:, 1] < v[lmk[8], 1] - 0.1].max() == 0  # neck below the chin
    assert front[v[:, 2] < v[lmk[0], 2] - 0.1].max() == 0  # ears and the back of the head
    assert 0.4 < float((front > 0.5).mean()) < 0.8  # the face holds most ICT vertices
    assert "orthogonal" in ict_arrays["albedo_provenance"]


def test_default_face_model_is_converted_once_and_cached(tmp_path, monkeypatch, ict_arrays):
    import bfm.ict
    from bfm import default, default_face_model_path, load_default_face_model

    calls = []
    monkeypatch.setattr(bfm.ict, "load_ict_npz", lambda path: calls.append(path) or ict_arrays)
    monkeypatch.setenv(default.CACHE_ENV_VAR, str(tmp_path / "cache"))
    path = default_face_model_path()
    assert calls == [asset_path(default.ICT_ASSET)]
    assert os.path.dirname(path) == str(tmp_path / "cache")
    assert os.path.basename(path).startswith(f"ict_facekit-v{default.CONVERTER_VERSION}-")
    assert default_face_model_path() == path and len(calls) == 1  # reused, not converted
    model = load_default_face_model()
    assert model.name == "ict_facekit" and model.layout.exp_dim == 29
    assert model.exp_bounds.shape == (29, 2)
    # the key follows the source's size and time stamp, and the converter's version
    src = tmp_path / "src.npz"
    src.write_bytes(b"0" * 10)
    key = default.cache_key(str(src))
    os.utime(src, ns=(0, 10 ** 9))
    assert default.cache_key(str(src)) != key
    key = default.cache_key(str(src))
    monkeypatch.setattr(default, "CONVERTER_VERSION", default.CONVERTER_VERSION + 1)
    assert default.cache_key(str(src)) != key
    new_path = default_face_model_path()
    assert new_path != path and len(calls) == 2
    assert sorted(os.listdir(tmp_path / "cache")) == sorted(
        [os.path.basename(path), os.path.basename(new_path)])
    monkeypatch.setenv("RECON_TF_ASSETS", str(tmp_path / "nowhere"))
    with pytest.raises(AssetMissingError, match="ICT-FaceKit"):
        default_face_model_path()
